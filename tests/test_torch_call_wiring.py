"""The CuPy backend's own `run()` for PyTorch CUDA tensors, executed on the CPU emulator with
stand-ins for the CuPy and PyTorch calls it makes (this machine has neither a GPU nor CuPy): the
call enters PyTorch's current stream (CuPy's Stream.from_external of it), installs an allocator
that draws from PyTorch's caching allocator on that stream for every CuPy allocation, writes into
a tensor it got from torch.empty on the input's device, synchronises nothing, returns that very
tensor reshaped, and computes the right numbers (the kernels run on the emulator, through the
launches run() makes). It checks our wiring against the APIs as we call them; that the real
CuPy and PyTorch behave as the stand-ins do is tests/test_gpu_torch_streams.py's, on a GPU.
"""
from __future__ import annotations

import contextlib
import dataclasses
import sys
import types

import numpy as np
import pytest

from conv import _arrays, _gpu_arrays, emulator
from conv.backend import cupy as cupy_backend
from tests._emulated import poison_outputs  # noqa: F401 (autouse: outputs start as NaN)
from tests._fake_torch import FakeTensor
from tests._helpers import assert_output_matches_reference, make_operands

_OK, _WHY = emulator.availability()
pytestmark = [pytest.mark.emulated,
              pytest.mark.skipif(not _OK, reason=f"CPU emulator not usable: {_WHY}")]

STREAM_PTR = 0x5EED


class Recorder:
    def __init__(self):
        self.events = []


def _fakes(rec: Recorder):
    """(fake cupy, fake torch): the calls run() makes, recorded; arrays are NumPy's."""
    torch_stream = types.SimpleNamespace(cuda_stream=STREAM_PTR, __cuda_stream__=lambda: (0, 1))

    @contextlib.contextmanager
    def entered(what):
        rec.events.append(("enter", what))
        yield
        rec.events.append(("exit", what))

    class Stream:
        @staticmethod
        def from_external(obj):
            assert obj is torch_stream, "not PyTorch's current stream"
            return entered("torch stream")

    class PythonFunctionAllocator:
        def __init__(self, malloc, free):
            self.malloc_func, self.free_func = malloc, free

        def malloc(self, size):
            return ("pointer", size)

    def using_allocator(fn):
        owner = fn.__self__
        rec.events.append(("allocator", owner.malloc_func(256, 0)))   # draws from torch's cache
        return entered("allocator")

    runtime = types.SimpleNamespace(getDevice=lambda: 0, setDevice=lambda i: rec.events.append(
        ("setDevice", i)), memGetInfo=lambda: (8 << 30, 16 << 30))
    cupy = types.SimpleNamespace(
        cuda=types.SimpleNamespace(runtime=runtime, Stream=Stream, using_allocator=using_allocator,
                                   memory=types.SimpleNamespace(
                                       PythonFunctionAllocator=PythonFunctionAllocator)),
        from_dlpack=lambda t: t.data, empty=np.empty, ascontiguousarray=np.ascontiguousarray,
        get_default_memory_pool=lambda: types.SimpleNamespace(free_bytes=lambda: 0))

    def caching_allocator_alloc(size, device, stream):
        assert stream == STREAM_PTR, "allocated on another stream than the call's"
        rec.events.append(("torch alloc", size))
        return 1 << 20

    def torch_empty(shape, dtype, device):
        rec.events.append(("torch.empty", tuple(shape), dtype, device))
        return FakeTensor(np.empty(shape, np.dtype(dtype.replace("torch.", ""))), 0)

    torch = types.SimpleNamespace(
        Tensor=FakeTensor, empty=torch_empty,
        **{name.split(".")[1]: name for name in _arrays._TORCH_TO_NUMPY},   # torch.float32 ...
        cuda=types.SimpleNamespace(
            current_stream=lambda index: torch_stream,
            caching_allocator_alloc=caching_allocator_alloc,
            caching_allocator_delete=lambda ptr: rec.events.append(("torch free", ptr)),
            is_current_stream_capturing=lambda: False, is_initialized=lambda: True,
            synchronize=lambda *a: pytest.fail("synchronised")),
        _C=types.SimpleNamespace())
    return cupy, torch


@pytest.mark.parametrize("algorithm", ["direct", "im2col", "implicit_gemm", "depthwise"])
def test_run_for_torch_tensors(monkeypatch, algorithm):
    rec = Recorder()
    cupy, torch = _fakes(rec)
    depthwise = algorithm == "depthwise"
    x, w, b = make_operands(("wiring", algorithm), (2, 4, 9, 10), (8, 1 if depthwise else 4, 3, 3),
                            "float32", bias=True)
    kwargs = {"padding": 1, "groups": 4 if depthwise else 1}
    plan = dataclasses.replace(emulator.plan("conv2d", x, w, b, algorithm=algorithm, **kwargs),
                               kind=_arrays.TORCH_CUDA)
    monkeypatch.setattr(_gpu_arrays, "import_cupy", lambda: cupy)
    monkeypatch.setitem(sys.modules, "torch", torch)
    # Who launches: the emulator, on the launches run() computed (CuPy's RawModule stands here).
    monkeypatch.setattr(cupy_backend, "_launch_on_cupy", lambda step: (
        rec.events.append(("launch", getattr(step, "entry", "host step"))), emulator.execute(step)))
    xt, wt, bt = FakeTensor(x), FakeTensor(w), FakeTensor(b)
    before = [a.copy() for a in (x, w, b)]
    out = cupy_backend.run(plan, xt, wt, bt)

    kinds = [e[0] for e in rec.events]
    assert isinstance(out, FakeTensor) and out.shape == plan.spec.output_shape
    empties = [e for e in rec.events if e[0] == "torch.empty"]
    assert empties == [("torch.empty", plan.spec.output_shape_4d, "torch.float32", "cuda:0")]
    # Entered PyTorch's stream, then the allocator; every launch inside both; left in order.
    first_launch, last_launch = kinds.index("launch"), len(kinds) - 1 - kinds[::-1].index("launch")
    assert kinds.index("enter") < first_launch and rec.events[kinds.index("enter")][1] == \
        "torch stream"
    assert ("enter", "allocator") in rec.events[:first_launch]
    assert rec.events[last_launch + 1:] == [("exit", "allocator"), ("exit", "torch stream")]
    assert ("torch alloc", 256) in rec.events        # the allocator draws from PyTorch's cache
    assert "setDevice" not in kinds                  # the input's device was current already
    assert_output_matches_reference("conv2d", out.data, x, w, b, **kwargs)
    for a, saved in zip((x, w, b), before):
        np.testing.assert_array_equal(a, saved)


def test_run_switches_to_the_input_device_and_back_only_with_a_context(monkeypatch):
    """A tensor on cuda:1 with device 0 current and without a context: run() switches to 1 and
    does not switch back (which would create a context on 0)."""
    rec = Recorder()
    cupy, torch = _fakes(rec)
    # An unbatched conv1d: the (1, K, 1, L) tensor run() fills must come back as (K, L).
    x, w, b = make_operands("wiring-device", (3, 20), (4, 3, 3), "float32", bias=True)
    plan = dataclasses.replace(emulator.plan("conv1d", x, w, b, algorithm="direct"),
                               kind=_arrays.TORCH_CUDA)
    monkeypatch.setattr(_gpu_arrays, "import_cupy", lambda: cupy)
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setattr(cupy_backend, "_launch_on_cupy", emulator.execute)
    monkeypatch.setattr(_gpu_arrays, "_primary_context_active", lambda index: False)
    current = {"device": 0}
    cupy.cuda.runtime.getDevice = lambda: current["device"]

    def set_device(i):
        rec.events.append(("setDevice", i))
        current["device"] = i
    cupy.cuda.runtime.setDevice = set_device
    out = cupy_backend.run(plan, FakeTensor(x, 1), FakeTensor(w, 1), FakeTensor(b, 1))
    assert [e for e in rec.events if e[0] == "setDevice"] == [("setDevice", 1)]
    assert [e[3] for e in rec.events if e[0] == "torch.empty"] == ["cuda:1"]
    assert out.shape == (4, 18)
    assert_output_matches_reference("conv1d", out.data, x, w, b)
