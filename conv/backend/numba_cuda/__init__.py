"""The numba.cuda backend: the CuPy backend's convolutions, with kernels written in Python.

Kernels live in kernels/numba_cuda/*.py (each opens with its thread-to-output map); this module
prepares arrays, says what to launch and launches it. Argument checking and output shapes come
from conv._spec, array interop from conv._gpu_arrays, shared with the CuPy backend.

Algorithms (rows in conv/registry.py, with the auto rule):
  "direct"        kernels/numba_cuda/direct.py version 1: a block stages one input patch in shared
                  memory and computes a tile of outputs for 4 output channels (version 0 runs
                  when the patch would not fit in shared memory; the plan's reason says so).
  "im2col"        kernels/numba_cuda/im2col.py + gemm.py: unfold a chunk into a column buffer,
                  then a tiled shared-memory GEMM per group writes the output (bias fused).
  "direct_naive"  kernels/numba_cuda/direct.py version 0: one thread per output, the baseline.
Workspace: the im2col column buffer, capped (`conv.set_workspace_limit(nbytes, "numba")`, env
CONV_NUMBA_WORKSPACE_BYTES, default 256 MiB), chunked by conv/_workspace.py's policy (whole
images, then bands of output rows of one image; one row runs even when it alone exceeds the cap).
Padding modes are index arithmetic inside the kernels; no padded copy of the input is made.
Accumulation: conv/_dtypes.py. Integer inputs are refused while planning (the registry's dtypes:
PyTorch has no CUDA integer convolution, and the simulator cannot mirror the GPU's wrapping store).

How a call runs: `_prepare` makes the operands (device views, output, accumulator probe, column
buffer), `launches(plan, ops)` says what to launch (`Launch`: kernel, grid, block, arguments) and
`_launch_on_numba` launches it on numba's default stream.

Runs on a real GPU, or on the CPU in Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1, set before
numba is imported): that is how CI tests the kernels without a GPU.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ... import _arrays, _gpu_arrays
from ..._dtypes import accumulator_dtype
from ..._padding import PADDING_MODES
from ..._spec import ConvSpec
from ..._workspace import Chunks, WorkspaceLimit, plan_column_chunks

_limit = WorkspaceLimit("CONV_NUMBA_WORKSPACE_BYTES", 256 << 20)
set_workspace_limit = _limit.set
workspace_limit = _limit.get

_GRID_LIMITS = _gpu_arrays.GRID_LIMITS


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


def _column_bytes(spec: ConvSpec, chunk: Chunks) -> int:
    crs = spec.c_per_group * spec.r * spec.s
    return (spec.groups * crs * chunk.images * chunk.rows * spec.q
            * accumulator_dtype(spec.dtype).itemsize)


def plan_workspace(spec: ConvSpec, algorithm: str, x) -> tuple[int, Chunks | None, str]:
    if spec.is_empty:
        return 0, None, ""
    if runs_version(spec, algorithm) == 0:
        return 0, None, ("the input patch exceeds the shared-memory tile: runs version 0 "
                         "(one thread per output)")
    if algorithm != "im2col":
        return 0, None, ""
    from conv.kernels.numba_cuda import gemm
    if -(-spec.k_per_group // gemm.BM) > _GRID_LIMITS[1]:
        raise ValueError(f"{spec.k_per_group} output channels per group exceed one GEMM launch")
    return plan_column_chunks(spec, lambda c: _column_bytes(spec, c), _limit.get())


def runs_version(spec: ConvSpec, algorithm: str) -> int | None:
    """0 where "direct" (version 1) runs version 0 instead: its input patch would not fit in
    shared memory (launches() makes the same test)."""
    if algorithm != "direct" or spec.is_empty:
        return None
    from conv.kernels.numba_cuda import direct
    return 0 if direct.patch_elements(spec, _direct_block(spec)) > direct.PATCH else None


def _direct_block(spec: ConvSpec) -> tuple[int, int]:
    from conv.kernels.numba_cuda import direct
    return direct.BLOCK_1D if spec.output_shape_4d[2] == 1 else direct.BLOCK_2D


# ---- what to launch ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Launch:
    """One launch: kernel[grid, block](*args), grid already clamped to the hardware limits (the
    kernels grid-stride past them)."""

    kernel: object
    grid: tuple
    block: object
    args: tuple


@dataclass
class Operands:
    x: object                    # 4-D device views (read only)
    w: object
    b: object                    # the bias, or a 1-element dummy when has_bias is False
    has_bias: bool
    out: object                  # (N, K, P, Q)
    acc: object                  # 1-element array of the accumulator dtype (types the kernels)
    widen: str                   # name of the widen function (kernels/numba_cuda/common.py)
    cols: object                 # the column buffer, or None


def _blocks(total: int, threads: int) -> int:
    return (total + threads - 1) // threads


def _launch(kernel, blocks, threads, *args) -> Launch:
    grid = tuple(max(1, min(int(b), limit)) for b, limit in zip(blocks, _GRID_LIMITS))
    return Launch(kernel, grid, threads, args)


def _mode(spec: ConvSpec) -> int:
    return PADDING_MODES[spec.padding_mode]


def _direct(ops: Operands, plan, tiled: bool) -> list:
    from conv.kernels.numba_cuda import direct as mod
    spec = plan.spec
    geometry = (spec.groups, spec.stride[0], spec.stride[1], spec.dilation[0], spec.dilation[1],
                spec.pad[0], spec.pad[2], _mode(spec), ops.has_bias)
    n, k, p, q = spec.output_shape_4d
    block = _direct_block(spec)
    args = (ops.x, ops.w, ops.b, ops.out, ops.acc) + geometry
    if tiled and mod.patch_elements(spec, block) <= mod.PATCH:
        tq, tp = block
        tiles = _blocks(p, tp) * _blocks(q, tq)
        k_tiles = spec.groups * _blocks(spec.k_per_group, mod.KT)
        return [_launch(mod.DIRECT_TILED[ops.widen], (tiles, k_tiles, n), block, *args)]
    return [_launch(mod.DIRECT_NAIVE[ops.widen], (_blocks(n * k * p * q, mod.BLOCK_NAIVE),),
                    mod.BLOCK_NAIVE, *args)]


def _im2col(ops: Operands, plan) -> list:
    from conv.kernels.numba_cuda import gemm
    from conv.kernels.numba_cuda import im2col as unfold
    spec = plan.spec
    n, _, p, q = spec.output_shape_4d
    groups, kg = spec.groups, spec.k_per_group
    crs = spec.c_per_group * spec.r * spec.s
    chunks = plan.chunks or Chunks(n, p, q, spec.r, spec.s)
    geometry = (spec.stride[0], spec.stride[1], spec.dilation[0], spec.dilation[1], spec.pad[0],
                spec.pad[2], _mode(spec))
    steps = []
    for n0 in range(0, n, chunks.images):
        nc = min(chunks.images, n - n0)
        for p0 in range(0, p, chunks.rows):
            pc = min(chunks.rows, p - p0)
            j = nc * pc * q
            cols = ops.cols[:groups * crs * j].reshape(groups, crs, j)
            steps.append(_launch(unfold.IM2COL[ops.widen], (_blocks(cols.size, unfold.BLOCK),),
                                 unfold.BLOCK, ops.x, cols, n0, p0, pc, q, spec.r, spec.s,
                                 *geometry))
            steps.append(_launch(gemm.GEMM_TILED[ops.widen],
                                 (_blocks(j, gemm.BN), _blocks(kg, gemm.BM), groups),
                                 (gemm.BN, gemm.BM), ops.w, cols, ops.b, ops.out, ops.acc, n0, p0,
                                 pc, ops.has_bias))
    return steps


def launches(plan, ops: Operands) -> list:
    """Every launch of `plan` on `ops`, in order."""
    if plan.algorithm == "im2col":
        return _im2col(ops, plan)
    return _direct(ops, plan, tiled=plan.algorithm == "direct")


# ---- the launch helper: operands; and who launches ---------------------------------------------

def _new_output(shape4, dtype):
    from numba import cuda
    if _gpu_arrays.poison_enabled():          # unwritten elements then fail the tests
        return cuda.to_device(np.full(shape4, _gpu_arrays.poison_value(dtype), dtype=dtype))
    return cuda.device_array(shape4, dtype=dtype)


def _device_4d(a, shape4, kind: str | None = None):
    """A 4-D numba device view of input/weight `a` (read only; copies only when it must)."""
    if isinstance(a, np.ndarray):              # reshape on the host, one transfer
        return _gpu_arrays.to_numba(np.reshape(a, shape4), _arrays.NUMPY)
    d = _gpu_arrays.to_numba(a, kind)
    if d.ndim == 4:
        return d                               # kernels index with strides: no copy
    if not d.is_c_contiguous():
        from numba import cuda

        from conv.kernels.numba_cuda import copy as copies
        dense = cuda.device_array(d.shape, dtype=d.dtype)
        if dense.size:
            kernel = copies.copy_2d if d.ndim == 2 else copies.copy_3d
            _launch_on_numba(_launch(kernel, (_blocks(dense.size, copies.BLOCK),), copies.BLOCK,
                                     d, dense))
        d = dense
    return d.reshape(shape4)


def _wait_for_torch(*arrays) -> None:
    """PyTorch exports __cuda_array_interface__ without its stream: finish the work queued on its
    current stream for these tensors before our kernels read them."""
    for a in arrays:
        if a is not None and _arrays.array_kind(a) == _arrays.TORCH_CUDA:
            import torch
            torch.cuda.current_stream(a.device).synchronize()


# Reused between calls (issue: a fresh allocation and a host-to-device copy per call cost more
# than small convolutions): per device and dtype, the 1-element constants the kernels only read
# (the accumulator's zero, the bias stand-in); per thread, device and dtype, the im2col column
# workspace, grown to the largest call so far (at most the workspace cap). Per thread because two
# threads' calls may run at once; the kernels of one thread's calls run in order on numba's
# default stream, so a call's columns are never overwritten while the previous call reads them.
_constants: dict = {}
_constants_lock = threading.Lock()
_workspaces = threading.local()


def _device_id() -> int:
    from numba import cuda
    return getattr(cuda.get_current_device(), "id", 0)     # the simulator's device has no id


def _constant(kind: str, dtype):
    from numba import cuda
    key = (_device_id(), kind, np.dtype(dtype))
    with _constants_lock:
        a = _constants.get(key)
        if a is None:
            a = _constants[key] = cuda.to_device(np.zeros(1, dtype=dtype))
    return a


def _workspace(elements: int, dtype):
    """A device array of at least `elements` of dtype, this thread's (reused across calls)."""
    from numba import cuda
    cache = getattr(_workspaces, "buffers", None)
    if cache is None:
        cache = _workspaces.buffers = {}
    key = (_device_id(), np.dtype(dtype))
    buf = cache.get(key)
    if buf is None or buf.size < elements:
        cache.pop(key, None)                  # the old one goes before the larger one comes
        buf = cache[key] = cuda.device_array(max(1, elements), dtype=dtype)
    return buf


def free_workspace() -> None:
    """Drop this thread's cached im2col workspaces (the device memory returns to numba)."""
    _workspaces.buffers = {}


def _prepare(plan, x, weight, bias) -> Operands:
    from conv.kernels.numba_cuda.common import ACCUMULATOR
    spec = plan.spec
    acc_dtype, widen = ACCUMULATOR[spec.dtype]
    _wait_for_torch(x, weight, bias)
    xd = _device_4d(x, (spec.n, spec.c, spec.h, spec.w), plan.kind)
    wd = _device_4d(weight, (spec.k, spec.c_per_group, spec.r, spec.s))
    has_bias = bias is not None
    bd = _gpu_arrays.to_numba(bias) if has_bias else _constant("bias stand-in", spec.dtype)
    acc = _constant("accumulator zero", acc_dtype)
    cols = (_workspace(plan.workspace_bytes // acc_dtype.itemsize, acc_dtype)
            if plan.algorithm == "im2col" else None)
    return Operands(xd, wd, bd, has_bias, _new_output(spec.output_shape_4d, spec.dtype), acc,
                    widen, cols)


def _launch_on_numba(step: Launch) -> None:
    """Who launches: numba, on its default stream."""
    step.kernel[step.grid, step.block](*step.args)


def run(plan, x, weight, bias):
    from numba import cuda
    spec = plan.spec
    if spec.is_empty:
        out = _new_output(spec.output_shape_4d, spec.dtype)
    else:
        ops = _prepare(plan, x, weight, bias)
        for step in launches(plan, ops):
            _launch_on_numba(step)
        out = ops.out
    if plan.kind not in (_arrays.NUMBA_CUDA, _arrays.NUMPY):
        # The kernels ran on numba's default stream; a CuPy or PyTorch caller may read the result
        # from a non-blocking stream that does not wait for it.
        cuda.default_stream().synchronize()
    return _gpu_arrays.from_numba(out.reshape(spec.output_shape), x, plan.kind)
