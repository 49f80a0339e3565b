"""The numba.cuda backend: the CuPy backend's convolutions, with kernels written in Python.

Kernels live in kernels/numba_*.py (each opens with its thread-to-output map); this module only
prepares arrays and launches them. Argument checking and output shapes come from conv._spec, array
interop from conv._gpu_arrays, shared with the CuPy backend.

Algorithms:
  "direct"        kernels/numba_direct.py version 2: a block stages one input patch in shared memory
                  and computes a tile of outputs for 4 output channels (falls back to version 1
                  when the patch would not fit in shared memory).
  "im2col"        kernels/numba_im2col.py + kernels/numba_gemm.py: unfold a chunk of the batch into
                  a column buffer (capped by `set_workspace_limit`), then a tiled shared-memory GEMM
                  per group writes the output directly (bias fused).
  "direct_naive"  kernels/numba_direct.py version 1: one thread per output, no shared memory; the
                  baseline the other two are checked and timed against.
Padding modes are index arithmetic inside the kernels; no padded copy of the input is made.
Accumulation: float16 in float32, float32/complex64 in their own precision, float64/complex128 in
theirs. Integer inputs are refused with a TypeError (as PyTorch has no CUDA integer convolution).

Runs on a real GPU, or on the CPU in Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1, set before
numba is imported): that is how CI tests the kernels without a GPU.
"""
from __future__ import annotations


import numpy as np

from . import _arrays, _gpu_arrays
from ._kernel_sources import import_kernel_module
from ._spec import ConvSpec
from ._workspace import WorkspaceLimit

ALGORITHMS = ("direct", "im2col", "direct_naive")
ACCEPTS = (_arrays.NUMPY, _arrays.NUMBA_CUDA, _arrays.CUPY, _arrays.TORCH_CUDA, _arrays.CUDA_OTHER)

_DEFAULT_WORKSPACE = 256 << 20
# Cap (bytes) on the im2col column buffer; the batch, then the output rows, are chunked to fit.
# Default 256 MiB (environment: CONV_NUMBA_WORKSPACE_BYTES). At least one output row of one image
# is always unfolded at once.
_limit = WorkspaceLimit("CONV_NUMBA_WORKSPACE_BYTES", _DEFAULT_WORKSPACE)
set_workspace_limit = _limit.set
workspace_limit = _limit.get

_GRID_LIMITS = (2 ** 31 - 1, 65535, 65535)     # gridDim x, y, z
_GEMM_TILE = 16                                 # numba_gemm.BM/BN/BK, for the auto rule


def availability() -> tuple[bool, str]:
    try:
        import numba
        from numba import cuda
    except ImportError as exc:
        return False, f"numba-cuda not installed ({exc})"
    try:
        usable = cuda.is_available()
    except Exception as exc:  # a broken driver install can raise instead of answering
        return False, f"numba cannot initialise CUDA ({type(exc).__name__}: {exc})"
    if not usable:
        return False, ("no CUDA driver/GPU usable by numba "
                       "(set NUMBA_ENABLE_CUDASIM=1 before importing numba for the simulator)")
    if numba.config.ENABLE_CUDASIM:
        return True, ("Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1): kernels run on the CPU, "
                      "slowly")
    try:
        # A driver alone is not enough: kernels are compiled at run time by NVVM (libnvvm ships
        # with the CUDA toolkit, or with `pip install numba-cuda[cu13]`, not with the driver).
        from numba.cuda.cudadrv.nvvm import NVVM
        NVVM()
    except Exception as exc:
        return False, (f"numba-cuda cannot load NVVM to compile kernels ({type(exc).__name__}: "
                       f"{exc}); install numba-cuda[cu13] or a CUDA toolkit")
    return True, f"numba-cuda on {cuda.get_current_device().name}"


def accumulator(dtype: np.dtype) -> tuple[np.dtype, str]:
    """(accumulator dtype, widen function name) for `dtype`; TypeError naming it if unsupported."""
    common = import_kernel_module("numba_common")
    try:
        return common.ACCUMULATOR[np.dtype(dtype)]
    except KeyError:
        supported = ", ".join(str(d) for d in common.ACCUMULATOR)
        raise TypeError(f"the numba backend has no kernels for dtype {np.dtype(dtype)} "
                        f"(supported: {supported})") from None


def choose_algorithm(spec: ConvSpec) -> tuple[str, str]:
    crs = spec.c_per_group * spec.r * spec.s
    if spec.k_per_group >= _GEMM_TILE and crs >= _GEMM_TILE:
        return "im2col", (f"{spec.k_per_group} output channels per group and a reduction of {crs} "
                          f"fill the {_GEMM_TILE}x{_GEMM_TILE} GEMM tiles")
    return "direct", (f"{spec.k_per_group} output channels per group x reduction {crs} would leave "
                      f"{_GEMM_TILE}x{_GEMM_TILE} GEMM tiles mostly empty; the shared-memory "
                      f"direct kernel reuses each staged input instead")


def check_supported(spec: ConvSpec, algorithm: str) -> None:
    """Refuse a dtype the kernels lack (called while resolving: conv.explain refuses it too)."""
    accumulator(spec.dtype)


def run(x, weight, bias, spec: ConvSpec, algorithm: str):
    acc_dtype, widen = accumulator(spec.dtype)          # unsupported dtype: TypeError, nothing done
    if algorithm not in ALGORITHMS:
        raise ValueError(f"backend 'numba' has no algorithm {algorithm!r}; expected one of "
                         f"{list(ALGORITHMS)}")
    from numba import cuda

    out = _new_output(spec.output_shape_4d, spec.dtype)
    if not spec.is_empty:
        _wait_for_torch(x, weight, bias)
        xd = _device_4d(x, (spec.n, spec.c, spec.h, spec.w))
        wd = _device_4d(weight, (spec.k, spec.c_per_group, spec.r, spec.s))
        has_bias = bias is not None
        bd = _gpu_arrays.to_numba(bias) if has_bias else cuda.device_array(1, dtype=spec.dtype)
        acc = cuda.to_device(np.zeros(1, dtype=acc_dtype))
        if algorithm == "im2col":
            _run_im2col(xd, wd, bd, out, acc, spec, widen, has_bias)
        else:
            _run_direct(xd, wd, bd, out, acc, spec, widen, has_bias, tiled=algorithm == "direct")
    if _arrays.array_kind(x) not in (_arrays.NUMBA_CUDA, _arrays.NUMPY):
        # The kernels ran on numba's default stream; a CuPy or PyTorch caller may read the result
        # from a non-blocking stream that does not wait for it.
        cuda.default_stream().synchronize()
    return _gpu_arrays.from_numba(out.reshape(spec.output_shape), like=x)


# ---- housekeeping ------------------------------------------------------------------------------

def _wait_for_torch(*arrays) -> None:
    """PyTorch exports __cuda_array_interface__ without its stream: finish the work queued on its
    current stream for these tensors before our kernels read them."""
    for a in arrays:
        if a is not None and _arrays.array_kind(a) == _arrays.TORCH_CUDA:
            import torch
            torch.cuda.current_stream(a.device).synchronize()

def _launch(kernel, blocks, threads, *args) -> None:
    """The one launch: grid clamped to the hardware limits (the kernels grid-stride past them)."""
    grid = tuple(max(1, min(int(b), limit)) for b, limit in zip(blocks, _GRID_LIMITS))
    kernel[grid, threads](*args)


def _blocks(total: int, threads: int) -> int:
    return (total + threads - 1) // threads


def _new_output(shape4, dtype):
    from numba import cuda
    if _gpu_arrays.poison_enabled():          # unwritten elements then fail the tests
        return cuda.to_device(np.full(shape4, _gpu_arrays.poison_value(dtype), dtype=dtype))
    return cuda.device_array(shape4, dtype=dtype)


def _device_4d(a, shape4):
    """A 4-D numba device view of input/weight `a` (read only; copies only when it must)."""
    if isinstance(a, np.ndarray):              # reshape on the host, one transfer
        return _gpu_arrays.to_numba(np.reshape(a, shape4))
    d = _gpu_arrays.to_numba(a)
    if d.ndim == 4:
        return d                               # kernels index with strides: no copy
    if not d.is_c_contiguous():
        from numba import cuda
        copies = import_kernel_module("numba_copy")
        dense = cuda.device_array(d.shape, dtype=d.dtype)
        if dense.size:
            kernel = copies.copy_2d if d.ndim == 2 else copies.copy_3d
            _launch(kernel, (_blocks(dense.size, copies.BLOCK),), copies.BLOCK, d, dense)
        d = dense
    return d.reshape(shape4)


def _mode(spec: ConvSpec) -> int:
    return import_kernel_module("numba_common").MODE_CODES[spec.padding_mode]


# ---- algorithms --------------------------------------------------------------------------------

def _run_direct(xd, wd, bd, out, acc, spec: ConvSpec, widen, has_bias, tiled: bool) -> None:
    mod = import_kernel_module("numba_direct")
    geometry = (spec.groups, spec.stride[0], spec.stride[1], spec.dilation[0], spec.dilation[1],
                spec.pad[0], spec.pad[2], _mode(spec), has_bias)
    n, k, p, q = spec.output_shape_4d
    block = mod.BLOCK_1D if p == 1 else mod.BLOCK_2D
    if tiled and mod.patch_elements(spec, block) <= mod.PATCH:
        tq, tp = block
        tiles = _blocks(p, tp) * _blocks(q, tq)
        k_tiles = spec.groups * _blocks(spec.k_per_group, mod.KT)
        _launch(mod.DIRECT_TILED[widen], (tiles, k_tiles, n), block, xd, wd, bd, out, acc,
                *geometry)
    else:
        _launch(mod.DIRECT_NAIVE[widen], (_blocks(n * k * p * q, mod.BLOCK_NAIVE),),
                mod.BLOCK_NAIVE, xd, wd, bd, out, acc, *geometry)


def _run_im2col(xd, wd, bd, out, acc, spec: ConvSpec, widen, has_bias) -> None:
    from numba import cuda
    unfold, gemm = import_kernel_module("numba_im2col"), import_kernel_module("numba_gemm")
    n, _, p, q = spec.output_shape_4d
    groups, kg = spec.groups, spec.k_per_group
    crs = spec.c_per_group * spec.r * spec.s
    row_bytes = groups * crs * q * acc.dtype.itemsize        # cols of one output row, one image
    if row_bytes * p <= _limit.nbytes:                    # whole images per chunk
        nb, pb = min(n, _limit.nbytes // (row_bytes * p)), p
    else:                                                    # one image in bands of rows
        nb, pb = 1, max(1, min(p, _limit.nbytes // row_bytes))
    if _blocks(kg, gemm.BM) > _GRID_LIMITS[1]:
        raise ValueError(f"{kg} output channels per group exceed one GEMM launch")
    buffer = cuda.device_array(groups * crs * nb * pb * q, dtype=acc.dtype)
    geometry = (spec.stride[0], spec.stride[1], spec.dilation[0], spec.dilation[1], spec.pad[0],
                spec.pad[2], _mode(spec))
    for n0 in range(0, n, nb):
        nc = min(nb, n - n0)
        for p0 in range(0, p, pb):
            pc = min(pb, p - p0)
            j = nc * pc * q
            cols = buffer[:groups * crs * j].reshape(groups, crs, j)
            _launch(unfold.IM2COL[widen], (_blocks(cols.size, unfold.BLOCK),), unfold.BLOCK,
                    xd, cols, n0, p0, pc, q, spec.r, spec.s, *geometry)
            _launch(gemm.GEMM_TILED[widen], (_blocks(j, gemm.BN), _blocks(kg, gemm.BM), groups),
                    (gemm.BN, gemm.BM), wd, cols, bd, out, acc, n0, p0, pc, has_bias)
