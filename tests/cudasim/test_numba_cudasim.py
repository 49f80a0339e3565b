"""numba.cuda kernels against the NumPy reference, in Numba's CUDA simulator (see conftest.py).

The simulator runs every CUDA thread as a Python thread, so this is a reduced grid of tiny shapes (a
few hundred outputs per case) that still touches every parameter, padding mode, groups form, tile
edge and dtype; tests/test_gpu_numba.py runs the full shared grid on a real GPU. Outputs are
poisoned (NaN) before each launch, so an output no thread writes fails.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import conv
from conv import _arrays
from conv.backend import numba_cuda as numba_backend
from tests._cases import pytest_id
from tests._fake_torch import FakeTensor
from tests._helpers import (
    assert_matches_reference,
    assert_output_matches_reference,
    make_operands,
    to_host,
)

pytestmark = pytest.mark.cudasim

ALGORITHMS = ("direct", "im2col")


def _c(op, x, w, bias=True, **kw):
    return pytest.param(op, x, w, bias, kw, id=pytest_id(op, x, w, bias, kw))


# Every parameter and padding mode at least once; odd sizes leave partial tiles: the direct kernel's
# 8 x 16 output tiles and 4 output channels per thread, the GEMM's 16 x 16 x 16 tiles.
SIM_CASES = [
    _c("conv2d", (2, 3, 5, 7), (4, 3, 3, 3)),
    _c("conv2d", (1, 2, 11, 19), (6, 2, 3, 3), bias=False),           # 2 x 2 tiles, 6 = 4 + 2 k
    _c("conv2d", (1, 3, 7, 9), (17, 3, 3, 2), padding=1),             # GEMM: 17 rows, 18 reduction
    _c("conv2d", (2, 2, 7, 8), (3, 2, 3, 2), stride=(2, 3)),
    _c("conv2d", (1, 2, 6, 7), (3, 2, 3, 3), padding=(2, 0)),
    _c("conv2d", (1, 2, 9, 9), (3, 2, 3, 2), dilation=(3, 1), padding=2, stride=2),
    _c("conv2d", (1, 2, 6, 7), (3, 2, 4, 2), padding="same"),         # asymmetric 'same'
    _c("conv2d", (1, 2, 6, 7), (3, 2, 3, 3), padding="valid"),
    _c("conv2d", (1, 4, 6, 7), (4, 2, 3, 3), groups=2),
    _c("conv2d", (1, 4, 6, 7), (4, 1, 3, 3), groups=4, padding=1),    # depthwise
    _c("conv2d", (1, 2, 6, 7), (6, 1, 3, 3), groups=2, stride=2),     # channel multiplier 3
    _c("conv2d", (1, 2, 5, 6), (3, 2, 3, 3), padding=(1, 2), padding_mode="reflect"),
    _c("conv2d", (1, 2, 5, 6), (3, 2, 3, 3), padding=2, padding_mode="replicate"),
    _c("conv2d", (1, 2, 5, 6), (3, 2, 3, 3), padding=(3, 1), padding_mode="circular"),
    _c("conv2d", (1, 2, 5, 6), (2, 2, 3, 3), padding=(5, 6), padding_mode="circular"),  # = size
    _c("conv2d", (1, 4, 6, 7), (4, 2, 3, 3), padding=1, stride=2, dilation=2, groups=2,
       padding_mode="replicate"),
    _c("conv2d", (2, 5, 6), (3, 2, 3, 3), padding=1, padding_mode="reflect"),   # unbatched
    _c("conv2d", (0, 2, 5, 6), (3, 2, 3, 3)),                                   # empty batch
    _c("conv2d", (2, 0, 5, 6), (3, 0, 3, 3)),                                   # zero channels
    _c("conv1d", (2, 3, 19), (4, 3, 3)),
    _c("conv1d", (1, 2, 150), (3, 2, 5), stride=3, dilation=2, padding=4),      # 2 x 128 tiles
    _c("conv1d", (2, 3, 17), (4, 3, 4), padding="same", bias=False),
    _c("conv1d", (1, 4, 17), (4, 1, 5), groups=4, padding=2),                   # depthwise
    _c("conv1d", (1, 2, 13), (2, 2, 3), padding=2, padding_mode="reflect"),
    _c("conv1d", (1, 2, 13), (2, 2, 3), padding=4, padding_mode="replicate"),
    _c("conv1d", (1, 2, 13), (2, 2, 3), padding=13, padding_mode="circular"),
    _c("conv1d", (3, 17), (4, 3, 3), padding=1),                                # unbatched
    _c("conv1d", (0, 3, 17), (4, 3, 3)),
]

DTYPES = ["float16", "float32", "float64", "complex64", "complex128"]
REFUSED = ["int8", "int16", "int32", "int64", "uint8"]


def _arrays_for(op, xs, ws, bias, dtype="float32", seed=0):
    return make_operands(("cudasim", op, xs, ws, bias, dtype, seed), xs, ws, dtype, bias=bias)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("op, xs, ws, bias, kw", SIM_CASES)
def test_matches_reference(op, xs, ws, bias, kw, algorithm):
    x, w, b = _arrays_for(op, xs, ws, bias)
    assert_matches_reference(op, x, w, b, backend="numba", algorithm=algorithm, **kw)


@pytest.mark.parametrize("op, xs, ws, bias, kw", [SIM_CASES[i] for i in (0, 6, 15, 21, 23)])
def test_naive_baseline_matches_reference(op, xs, ws, bias, kw):
    x, w, b = _arrays_for(op, xs, ws, bias)
    assert_matches_reference(op, x, w, b, backend="numba", algorithm="direct_naive", **kw)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes(dtype, algorithm):
    x, w, b = _arrays_for("conv2d", (1, 2, 5, 6), (3, 2, 3, 3), True, dtype)
    assert_matches_reference("conv2d", x, w, b, backend="numba", algorithm=algorithm, padding=1,
                             padding_mode="reflect")


@pytest.mark.parametrize("dtype", REFUSED)
def test_integer_dtypes_are_refused_by_name(dtype):
    x, w, b = _arrays_for("conv2d", (1, 2, 5, 6), (3, 2, 3, 3), True, dtype)
    with pytest.raises(TypeError, match=f"dtype {dtype}"):
        conv.conv2d(x, w, b, backend="numba")


def test_unsupported_dtype_is_refused_while_planning(monkeypatch):
    # Refused by the plan (so conv.explain refuses it too), before any launch.
    monkeypatch.setattr(numba_backend, "_launch_on_numba", lambda *a: pytest.fail("launched"))
    x, w, b = _arrays_for("conv2d", (1, 2, 5, 6), (3, 2, 3, 3), True)
    spec = dataclasses.replace(conv._spec.make_spec("conv2d", x, w, b, 1, 0, 1, 1),
                               dtype=np.dtype(np.int16))
    for algorithm in ALGORITHMS + ("direct_naive",):
        with pytest.raises(TypeError, match="dtype int16"):
            conv.plan.make_plan(spec, x, w, b, "numba", algorithm)


def test_patch_too_large_for_shared_memory_falls_back_to_naive():
    # 128 threads x stride 17 needs a 2160-column patch (> PATCH): version 0 runs instead.
    x, w, b = _arrays_for("conv1d", (1, 1, 2200), (2, 1, 3), True)
    plan = conv.explain("conv1d", x, w, b, backend="numba", algorithm="direct", stride=17)
    assert plan.version == 0 and "runs version 0" in plan.reason     # explain says what runs
    assert conv.explain("conv1d", x, w, b, backend="numba", algorithm="direct").version == 1
    assert_matches_reference("conv1d", x, w, b, backend="numba", algorithm="direct", stride=17)


# x (2, 3, 8, 8) * w (4, 3, 3, 3): P = Q = 6; one output row of one image unfolds to 3*3*3 x 6
# float32 columns = 648 bytes. Each chunk is one im2col launch + one GEMM launch.
@pytest.mark.parametrize("limit, launches", [(648 * 6, 2 * 2),          # one image per chunk
                                             (648 * 2 + 5, 2 * 3 * 2),  # bands of 2 rows
                                             (100, 2 * 6 * 2)])         # less than a row: 1 row
def test_im2col_workspace_is_capped_by_chunking(monkeypatch, limit, launches):
    x, w, b = _arrays_for("conv2d", (2, 3, 8, 8), (4, 3, 3, 3), True)
    calls = []
    real = numba_backend._launch_on_numba
    monkeypatch.setattr(numba_backend, "_launch_on_numba", lambda s, stream=0: (calls.append(s), real(s, stream)))
    numba_backend.set_workspace_limit(limit)
    try:
        plan = conv.explain("conv2d", x, w, b, backend="numba", algorithm="im2col")
        assert_matches_reference("conv2d", x, w, b, backend="numba", algorithm="im2col")
    finally:
        numba_backend.set_workspace_limit(None)
    assert len(calls) == launches
    assert plan.chunks is not None and plan.chunks.count(plan.spec) * 2 == launches
    assert plan.workspace_bytes <= max(limit, 648)      # one row runs even above the cap


@pytest.mark.parametrize("op, xs, ws", [("conv2d", (0, 2, 5, 6), (3, 2, 3, 3)),
                                        ("conv2d", (2, 0, 5, 6), (3, 0, 3, 3)),
                                        ("conv1d", (0, 3, 17), (4, 3, 3))])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_empty_output_launches_nothing(monkeypatch, op, xs, ws, algorithm):
    monkeypatch.setattr(numba_backend, "_launch_on_numba", lambda *a: pytest.fail("launched"))
    x, w, b = _arrays_for(op, xs, ws, True)
    out = getattr(conv, op)(*_to_device(x, w, b), backend="numba", algorithm=algorithm)
    expected = conv._spec.make_spec(op, x, w, b, 1, 0, 1, 1).output_shape
    assert _arrays.array_kind(out) == _arrays.NUMBA_CUDA and out.shape == expected


@pytest.mark.parametrize("op, xs, ws, kw", [
    ("conv2d", (2, 3, 5, 7), (4, 3, 3, 3), {"padding": 1}),
    ("conv2d", (3, 5, 7), (4, 3, 3, 3), {}),                    # unbatched: a reshaped view
    ("conv1d", (2, 3, 19), (4, 3, 3), {"padding_mode": "circular", "padding": 2}),
    ("conv1d", (3, 19), (4, 3, 3), {}),
])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_device_array_in_device_array_out(op, xs, ws, kw, algorithm):
    x, w, b = _arrays_for(op, xs, ws, True)
    dx, dw, db = _to_device(x, w, b)
    out = getattr(conv, op)(dx, dw, db, backend="numba", algorithm=algorithm, **kw)
    assert _arrays.array_kind(out) == _arrays.NUMBA_CUDA, type(out)
    assert conv.explain(op, dx, dw, db, **kw).backend == "numba"     # auto picks numba for it
    assert_matches_reference(op, dx, dw, db, backend="numba", algorithm=algorithm, x_host=x,
                             w_host=w, b_host=b, **kw)
    for dev, host in ((dx, x), (dw, w), (db, b)):                    # inputs never modified
        np.testing.assert_array_equal(dev.copy_to_host(), host)


def _to_device(*arrays):
    """Simulator device copies, or a skip where conv._arrays cannot tell they are device arrays."""
    from numba import cuda
    out = [cuda.to_device(a) for a in arrays]
    if _arrays.array_kind(out[0]) != _arrays.NUMBA_CUDA:
        pytest.skip("conv._arrays does not recognise the simulator's device arrays "
                    "(FakeCUDAArray has no __cuda_array_interface__)")
    return out


def _strided(a: np.ndarray) -> np.ndarray:
    """A view of `a` with the same values, reversed in its last axis and spread out in memory."""
    spread = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    spread[..., ::2] = a[..., ::-1]
    return spread[..., -2::-2]


@pytest.mark.parametrize("op, xs, ws", [("conv2d", (2, 3, 5, 7), (4, 3, 3, 3)),
                                        ("conv2d", (3, 5, 7), (4, 3, 3, 3)),
                                        ("conv1d", (2, 3, 19), (4, 3, 3)),
                                        ("conv1d", (3, 19), (4, 3, 3))])
@pytest.mark.parametrize("on_device", [False, True], ids=["numpy", "numba"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_strided_inputs_read_correctly_and_left_untouched(op, xs, ws, on_device, algorithm):
    x, w, b = _arrays_for(op, xs, ws, True)
    xv, wv, bv = _strided(x), _strided(w), _strided(b)
    assert not xv.flags.c_contiguous and xv.strides[-1] < 0
    kw = {"padding": 1, "padding_mode": "reflect"}
    if on_device:       # the same views of device copies of the spread-out arrays
        args = [d[..., -2::-2] for d in _to_device(xv.base, wv.base, bv.base)]
        assert not args[0].is_c_contiguous()
        keep = [a.copy_to_host() for a in args]
    else:
        args = [xv, wv, bv]
        keep = [a.copy() for a in args]
    assert_matches_reference(op, *args, backend="numba", algorithm=algorithm, x_host=x, w_host=w,
                             b_host=b, **kw)
    for a, before in zip(args, keep):
        np.testing.assert_array_equal(to_host(a), before)


def test_auto_rule_picks_im2col_for_dense_and_direct_for_depthwise():
    dense = _arrays_for("conv2d", (1, 4, 5, 5), (16, 4, 3, 3), False)
    depthwise = _arrays_for("conv2d", (1, 4, 5, 5), (4, 1, 3, 3), False)
    assert conv.explain("conv2d", *dense, backend="numba").algorithm == "im2col"
    assert conv.explain("conv2d", *depthwise, groups=4, backend="numba").algorithm == "direct"
    assert_matches_reference("conv2d", *dense, backend="numba")


def test_availability_reports_the_simulator():
    ok, why = numba_backend.availability()
    assert ok and "simulator" in why
    assert conv.backends()["numba"][0]


def test_workspace_and_constants_are_reused_per_thread(monkeypatch):
    # The column buffer and the 1-element constants come back on the next call (no allocation or
    # host-to-device copy per call); another thread gets its own columns; results stay right.
    import threading
    x, w, b = _arrays_for("conv2d", (2, 3, 8, 8), (4, 3, 3, 3), True)
    seen = []
    real = numba_backend._prepare
    monkeypatch.setattr(numba_backend, "_prepare",
                        lambda *a: (seen.append(real(*a)), seen[-1])[1])
    numba_backend.free_workspace()
    for _ in range(2):
        assert_matches_reference("conv2d", x, w, None, backend="numba", algorithm="im2col")
    first, second = seen
    assert second.cols is first.cols and second.acc is first.acc and second.b is first.b
    other = []
    thread = threading.Thread(target=lambda: other.append(
        conv.conv2d(x, w, backend="numba", algorithm="im2col")))
    thread.start()
    thread.join()
    assert len(seen) == 3 and seen[2].cols is not first.cols and seen[2].acc is first.acc
    np.testing.assert_allclose(to_host(other[0]), to_host(conv.conv2d(x, w, backend="numba",
                                                                      algorithm="im2col")))
    numba_backend.free_workspace()
    assert_matches_reference("conv2d", x, w, b, backend="numba", algorithm="im2col")
    assert seen[-1].cols is not first.cols                  # freed, then a new one


# ---- PyTorch CUDA tensors: the call's stream and buffers (stand-ins for PyTorch) -------------------

@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_torch_tensors_run_on_torch_stream_with_torch_buffers(monkeypatch, algorithm):
    """numba's _Call for PyTorch tensors: kernels launched on (numba's view of) PyTorch's current
    stream, output and columns from torch.empty on the input's device, nothing synchronised, the
    output tensor itself returned (reshaped). PyTorch and numba's external_stream /
    as_cuda_array (absent from the simulator) are stand-ins; the kernels are the simulator's."""
    import sys
    import types

    from numba import cuda
    events = []
    side = cuda.stream()
    monkeypatch.setattr(cuda, "external_stream", lambda ptr: (events.append(("stream", ptr)),
                                                              side)[1], raising=False)
    monkeypatch.setattr(cuda, "as_cuda_array",
                        lambda obj, sync=True: (events.append(("view", sync)), obj.data)[1],
                        raising=False)

    def empty(shape, dtype, device):
        events.append(("torch.empty", tuple(shape), device))
        return FakeTensor(cuda.device_array(shape, dtype=np.dtype(dtype.replace("torch.", ""))))
    torch = types.SimpleNamespace(
        Tensor=FakeTensor, empty=empty,
        cuda=types.SimpleNamespace(current_stream=lambda i: types.SimpleNamespace(
            cuda_stream=0x5EED, synchronize=lambda: pytest.fail("synchronised"))),
        **{name.split(".")[1]: name for name in _arrays._TORCH_TO_NUMPY})
    monkeypatch.setitem(sys.modules, "torch", torch)
    launched = []
    real = numba_backend._launch_on_numba
    monkeypatch.setattr(numba_backend, "_launch_on_numba",
                        lambda s, stream=0: (launched.append(stream), real(s, stream)))
    x, w, b = make_operands(("sim-torch", algorithm), (2, 3, 7, 8), (5, 3, 3, 3), "float32",
                            bias=True)
    xt, wt, bt = (FakeTensor(cuda.to_device(a)) for a in (x, w, b))
    plan = conv.explain("conv2d", x, w, b, backend="numba", algorithm=algorithm, padding=1)
    plan = dataclasses.replace(plan, kind=_arrays.TORCH_CUDA)
    out = numba_backend.run(plan, xt, wt, bt)
    assert isinstance(out, FakeTensor) and out.shape == plan.spec.output_shape
    assert launched and all(s is side for s in launched)
    assert events[0] == ("stream", 0x5EED)
    empties = [e for e in events if e[0] == "torch.empty"]
    assert empties[0] == ("torch.empty", plan.spec.output_shape_4d, "cuda:0")
    assert len(empties) == (2 if algorithm == "im2col" else 1)     # + the column workspace
    assert all(sync is False for kind, sync in [e for e in events if e[0] == "view"])
    np.testing.assert_array_equal(to_host(xt.data), x)
    assert_output_matches_reference("conv2d", out.data.copy_to_host(), x, w, b, padding=1)
