"""PyTorch CUDA tensors on both GPU backends: the call runs on PyTorch's current stream, draws every
buffer from PyTorch's caching allocator, returns a native tensor, can be captured into a CUDA graph
on a side stream, and an input on device 1 leaves device 0 without a context. Marked `gpu`:
skipped (with the reason) without PyTorch's CUDA build and a GPU; `.ci/gpu` runs it.

How ordering is tested without timing: on a side stream, `torch.cuda._sleep` keeps the GPU busy,
then the input is overwritten with new values, then conv is called. Launched on that stream, the
kernels read the new values; launched on any other stream they would run during the sleep and
read the old ones (the two inputs differ everywhere, so the comparison cannot pass by chance).
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import conv
from conv import _gpu_arrays, autotune, registry
from conv.plan import backend_availability
from tests._emulated import poison_outputs  # noqa: F401 (autouse: outputs start as NaN)
from tests._helpers import assert_output_matches_reference, make_operands

pytestmark = [pytest.mark.gpu]

torch = pytest.importorskip("torch", reason="PyTorch is not installed")
if not torch.cuda.is_available():
    pytest.skip("PyTorch has no CUDA device here", allow_module_level=True)

BACKENDS = [b for b in ("cupy", "numba") if backend_availability(b)[0]]
# Every algorithm of both backends (depthwise needs groups == C: its own case below).
ALGORITHMS = [(b, a.name) for b in BACKENDS for a in registry.algorithms(b)
              if a.name != "depthwise"]
SLEEP_CYCLES = 200_000_000          # ~0.1 s of GPU spinning at ~2 GHz: longer than our launches


def _operands(seed, dtype="float32", depthwise=False):
    c, k = (16, 16) if depthwise else (16, 24)
    x, w, b = make_operands(("torch-streams", seed, dtype), (2, c, 33, 31),
                            (k, 1 if depthwise else c, 3, 3), dtype, bias=True)
    kwargs = {"padding": 1, "groups": c if depthwise else 1}
    return x, w, b, kwargs


def _cuda(*arrays):
    return tuple(None if a is None else torch.from_numpy(a).cuda() for a in arrays)


@pytest.mark.parametrize("backend,algorithm", ALGORITHMS)
def test_runs_on_the_current_torch_stream(backend, algorithm):
    x, w, b, kwargs = _operands(0)
    x_new = make_operands(("torch-streams", "new"), x.shape)[0]
    xt, wt, bt = _cuda(x, w, b)
    new = torch.from_numpy(x_new).cuda()
    conv.conv2d(xt, wt, bt, backend=backend, algorithm=algorithm, **kwargs)   # compile first
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(SLEEP_CYCLES)
        xt.copy_(new)                       # queued behind the sleep
        out = conv.conv2d(xt, wt, bt, backend=backend, algorithm=algorithm, **kwargs)
        host = out.cpu()                    # on the side stream: waits for it
    assert isinstance(out, torch.Tensor) and out.device == xt.device
    assert_output_matches_reference("conv2d", host.numpy(), x_new, w, b, **kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_output_and_workspace_come_from_torch(backend):
    cupy = _gpu_arrays.import_cupy() if backend == "cupy" else None
    x, w, b, kwargs = _operands(1)
    xt, wt, bt = _cuda(x, w, b)
    conv.conv2d(xt, wt, bt, backend=backend, algorithm="im2col", **kwargs)
    torch.cuda.synchronize()
    pool_before = cupy.get_default_memory_pool().used_bytes() if cupy else None
    allocated = torch.cuda.memory_allocated()
    out = conv.conv2d(xt, wt, bt, backend=backend, algorithm="im2col", **kwargs)
    # The output is PyTorch's: counted by its allocator, and record_stream works on it.
    assert torch.cuda.memory_allocated() - allocated >= out.numel() * out.element_size()
    out.record_stream(torch.cuda.current_stream())
    plan = conv.explain("conv2d", xt, wt, bt, backend=backend, algorithm="im2col", **kwargs)
    assert plan.workspace_bytes > 0
    if cupy is not None:                    # nothing was drawn from CuPy's pool
        assert cupy.get_default_memory_pool().used_bytes() == pool_before
    torch.cuda.synchronize()
    assert_output_matches_reference("conv2d", out.cpu().numpy(), x, w, b, **kwargs)


def test_del_input_after_the_call_is_safe():
    """The input is freed right after the call, and its memory is at once reused (same stream,
    same size) and overwritten while the GPU is still asleep: the kernels, ordered on that
    stream, read it before the reuse does."""
    for backend, algorithm in ALGORITHMS:
        x, w, b, kwargs = _operands(2)
        wt, bt = _cuda(w, b)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            xt = torch.from_numpy(x).to("cuda", non_blocking=False)
            conv.conv2d(xt, wt, bt, backend=backend, algorithm=algorithm, **kwargs)
            torch.cuda._sleep(SLEEP_CYCLES)
            out = conv.conv2d(xt, wt, bt, backend=backend, algorithm=algorithm, **kwargs)
            del xt
            reuse = torch.empty(x.shape, dtype=torch.float32, device="cuda")
            reuse.fill_(float("nan"))
            host = out.cpu()
        assert_output_matches_reference("conv2d", host.numpy(), x, w, b,
                                        where=f"{backend}/{algorithm}", **kwargs)


@pytest.mark.parametrize("backend,algorithm",
                         ALGORITHMS + [("cupy", "depthwise")] if "cupy" in BACKENDS else ALGORITHMS)
def test_cuda_graph_capture_on_a_side_stream(backend, algorithm):
    x, w, b, kwargs = _operands(3, depthwise=algorithm == "depthwise")
    x2 = make_operands(("torch-streams", "replay"), x.shape)[0]
    xt, wt, bt = _cuda(x, w, b)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):           # warm up (compile, plan, constants) off the capture
        for _ in range(2):
            conv.conv2d(xt, wt, bt, backend=backend, algorithm=algorithm, **kwargs)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = conv.conv2d(xt, wt, bt, backend=backend, algorithm=algorithm, **kwargs)
    graph.replay()
    torch.cuda.synchronize()
    assert_output_matches_reference("conv2d", out.cpu().numpy(), x, w, b, **kwargs)
    xt.copy_(torch.from_numpy(x2))
    graph.replay()
    torch.cuda.synchronize()
    assert_output_matches_reference("conv2d", out.cpu().numpy(), x2, w, b,
                                    where=f"{backend}/{algorithm} replay", **kwargs)


def test_autotune_in_a_capture_uses_the_rule(tmp_path, monkeypatch):
    monkeypatch.setenv("CONV_CACHE_DIR", str(tmp_path))
    autotune.clear_memory()
    autotune.set_autotune(True)
    try:
        x, w, b, kwargs = _operands(4)
        xt, wt, bt = _cuda(x, w, b)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for algorithm in ("direct", "im2col", "implicit_gemm"):   # compile what the rule picks
                conv.conv2d(xt, wt, bt, backend="cupy", algorithm=algorithm, **kwargs)
        torch.cuda.current_stream().wait_stream(side)
        skipped = autotune.stats["skipped_in_capture"]
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = conv.conv2d(xt, wt, bt, backend="cupy", **kwargs)
        assert autotune.stats["skipped_in_capture"] == skipped + 1
        graph.replay()
        torch.cuda.synchronize()
        assert_output_matches_reference("conv2d", out.cpu().numpy(), x, w, b, **kwargs)
    finally:
        autotune.set_autotune(None)
        autotune.clear_memory()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@pytest.mark.parametrize("backend", BACKENDS)
def test_input_on_device_1_makes_no_context_on_device_0(backend):
    """In a fresh process (this one has contexts everywhere by now): tensors on cuda:1, the
    current device left at 0, one call; device 0 must still have no primary context."""
    script = textwrap.dedent(f"""
        import numpy as np, torch, conv
        x = torch.randn(2, 8, 17, 17, device="cuda:1")
        w = torch.randn(8, 8, 3, 3, device="cuda:1")
        assert not torch._C._cuda_hasPrimaryContext(0), "context on 0 before the call"
        for algorithm in ("direct", "im2col"):
            y = conv.conv2d(x, w, padding=1, backend={backend!r}, algorithm=algorithm)
            assert y.device == x.device, y.device
            ref = torch.nn.functional.conv2d(x.double(), w.double(), padding=1)
            assert torch.allclose(y.double(), ref, rtol=1e-4, atol=1e-3)
        torch.cuda.synchronize(1)
        print("context on device 0:", torch._C._cuda_hasPrimaryContext(0))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "CUDA_MODULE_LOADING": "LAZY"}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "context on device 0: False" in done.stdout, done.stdout
