"""The numba.cuda backend on real CUDA.

* test_kernels_compile_to_ptx: every kernel, every dtype, compiled for a real GPU target (PTX) by
  numba's NVVM: needs libNVVM (the CUDA toolkit or the nvidia-cuda-nvcc wheel), not a GPU. The
  simulator (tests/cudasim) runs the kernels' Python; this checks that numba can type and lower them
  for the device.
* everything marked `gpu`: the full shared grid (tests/_cases.py) for every algorithm on hardware,
  with poisoned outputs, plus CuPy / PyTorch interop where installed. Skipped with a reason unless
  numba sees a real GPU (never the simulator).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

import conv
from conv import _arrays, _gpu_arrays, registry
from conv.backend import numba_cuda as _numba_backend
from tests._cases import CASE_IDS, CASES
from tests._helpers import assert_matches_reference, make_operands

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
ALGORITHMS = tuple(a.name for a in registry.algorithms("numba"))


def _numba_cuda():
    return pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")


@pytest.fixture
def gpu():
    """numba.cuda with a real GPU, outputs poisoned; skips (saying why) everywhere else."""
    cuda = _numba_cuda()
    if SIMULATED:
        pytest.skip("NUMBA_ENABLE_CUDASIM=1: the simulator is not a GPU (see tests/cudasim)")
    if not cuda.is_available():
        pytest.skip("no CUDA GPU usable by numba: " + _numba_backend.availability()[1])
    before = _gpu_arrays.poison_enabled()
    _gpu_arrays.set_poison_outputs(True)
    yield cuda
    _gpu_arrays.set_poison_outputs(before)


# ---- compiled for the device, no GPU needed -----------------------------------------------------

def _signatures():
    """(kernel, argument types) for every kernel family and the dtypes it serves."""
    from conv.kernels.numba_cuda import common, copy, direct, gemm, im2col
    from numba import from_dtype, types
    i64, flag = types.int64, types.boolean
    for dtype, (acc_dtype, widen) in common.ACCUMULATOR.items():
        dt, acc = from_dtype(dtype), from_dtype(acc_dtype)
        x4, out4 = types.Array(dt, 4, "A"), types.Array(dt, 4, "C")
        bias, acc1 = types.Array(dt, 1, "A"), types.Array(acc, 1, "C")
        cols = types.Array(acc, 3, "C")
        conv_args = (x4, x4, bias, out4, acc1) + (i64,) * 8 + (flag,)
        yield f"direct_naive-{dtype}", direct.DIRECT_NAIVE[widen], conv_args
        yield f"direct_tiled-{dtype}", direct.DIRECT_TILED[widen], conv_args
        yield f"im2col-{dtype}", im2col.IM2COL[widen], (x4, cols) + (i64,) * 13
        yield f"gemm_tiled-{dtype}", gemm.GEMM_TILED[widen], (x4, cols, bias, out4, acc1,
                                                              i64, i64, i64, flag)
        yield f"copy_2d-{dtype}", copy.copy_2d, (types.Array(dt, 2, "A"), types.Array(dt, 2, "C"))
        yield f"copy_3d-{dtype}", copy.copy_3d, (types.Array(dt, 3, "A"), types.Array(dt, 3, "C"))


def test_kernels_compile_to_ptx():
    cuda = _numba_cuda()
    if SIMULATED:
        pytest.skip("the simulator does not compile kernels")
    compiled = []
    for name, kernel, args in _signatures():
        try:
            ptx, _ = cuda.compile_ptx(kernel.py_func, args, cc=(7, 5))
        except Exception as exc:
            if "NVVM" in str(exc) or "nvvm" in str(exc):
                pytest.skip(f"libNVVM is not available to numba ({type(exc).__name__}: {exc})")
            raise AssertionError(f"{name} does not compile for the device: {exc}") from exc
        assert ".entry" in ptx, name
        compiled.append(name)
    print(f"compiled {len(compiled)} kernel specialisations to PTX")


# ---- on a GPU ------------------------------------------------------------------------------------

def _arrays_for(op, xs, ws, bias, dtype="float32", seed=0):
    return make_operands(("numba", op, xs, ws, bias, dtype, seed), xs, ws, dtype, bias=bias)


@pytest.mark.gpu
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("op, xs, ws, bias, kw", CASES, ids=CASE_IDS)
def test_grid_numpy_in_numpy_out(gpu, op, xs, ws, bias, kw, algorithm):
    x, w, b = _arrays_for(op, xs, ws, bias)
    assert_matches_reference(op, x, w, b, backend="numba", algorithm=algorithm, **kw)


@pytest.mark.gpu
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("op, xs, ws, bias, kw", CASES, ids=CASE_IDS)
def test_grid_device_in_device_out(gpu, op, xs, ws, bias, kw, algorithm):
    x, w, b = _arrays_for(op, xs, ws, bias)
    dev = [None if a is None else gpu.to_device(a) for a in (x, w, b)]
    out = getattr(conv, op)(*dev, backend="numba", algorithm=algorithm, **kw)
    assert _arrays.array_kind(out) == _arrays.NUMBA_CUDA
    assert_matches_reference(op, *dev, backend="numba", algorithm=algorithm, x_host=x, w_host=w,
                             b_host=b, **kw)
    for d, host in zip(dev, (x, w, b)):
        if d is not None:
            np.testing.assert_array_equal(d.copy_to_host(), host)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "float64", "complex64", "complex128"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_dtypes(gpu, dtype, algorithm):
    for op, xs, ws, bias, kw in CASES[::4]:
        x, w, b = _arrays_for(op, xs, ws, bias, dtype)
        assert_matches_reference(op, x, w, b, backend="numba", algorithm=algorithm, **kw)


@pytest.mark.gpu
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_cupy_interop(gpu, algorithm):
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
    x, w, b = _arrays_for("conv2d", (2, 3, 9, 10), (4, 3, 3, 3), True)
    dx = cupy.asarray(x[:, :, ::-1].copy())[:, :, ::-1]    # a negative-stride view of x
    out = conv.conv2d(dx, cupy.asarray(w), cupy.asarray(b), padding=1, backend="numba",
                      algorithm=algorithm)
    assert isinstance(out, cupy.ndarray)
    assert_matches_reference("conv2d", dx, cupy.asarray(w), cupy.asarray(b), backend="numba",
                             algorithm=algorithm, x_host=x, w_host=w, b_host=b, padding=1)


@pytest.mark.gpu
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_torch_interop(gpu, algorithm):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA device")
    x, w, b = _arrays_for("conv1d", (2, 3, 17), (4, 3, 3), True)
    tx, tw, tb = (torch.from_numpy(a).cuda() for a in (x, w, b))
    out = conv.conv1d(tx, tw, tb, padding=1, padding_mode="circular", backend="numba",
                      algorithm=algorithm)
    assert isinstance(out, torch.Tensor) and out.is_cuda
    # Against the float64 reference, not cuDNN: its float32 convs may use TF32 (PyTorch's default).
    assert_matches_reference("conv1d", tx, tw, tb, backend="numba", algorithm=algorithm,
                             x_host=x, w_host=w, b_host=b, padding=1, padding_mode="circular")
    # A tensor that requires grad (an nn.Parameter, say) is read through a detached view.
    tw.requires_grad_(True)
    again = conv.conv1d(tx, tw, tb, padding=1, padding_mode="circular", backend="numba",
                        algorithm=algorithm)
    torch.testing.assert_close(again, out, rtol=0, atol=0)
