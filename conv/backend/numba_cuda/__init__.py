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
`_Call.launch` launches it: on PyTorch's current stream for PyTorch tensors, CuPy's for CuPy arrays,
numba's default stream otherwise (`_Call` also says where buffers come from).

Runs on a real GPU, or on the CPU in Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1, set before
numba is imported): that is how CI tests the kernels without a GPU.
"""
from __future__ import annotations

import contextlib
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


def plan_workspace(spec: ConvSpec, algorithm: str, x, config: str = "") -> tuple[int, Chunks | None, str]:
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

class _Call:
    """Where one call's kernels run and where its buffers come from, by the input's kind: PyTorch
    tensors on PyTorch's current stream with buffers from PyTorch's caching allocator (the
    output a native tensor), CuPy arrays on CuPy's current stream with buffers from CuPy's pool
    (the output a CuPy array), everything else on numba's default stream with numba's
    allocations. Then a PyTorch or CuPy caller needs no synchronisation, as with its own
    library's ops, and a CUDA graph capture on a PyTorch side stream sees only launches on that
    stream and allocations from its private pool (conv/_gpu_arrays.py says more)."""

    def __init__(self, kind: str, device_index: int):
        from numba import cuda
        self.kind, self.device_index = kind, device_index
        ptr = None
        if kind == _arrays.TORCH_CUDA:
            import torch
            ptr = torch.cuda.current_stream(device_index).cuda_stream
        elif kind == _arrays.CUPY:
            ptr = _gpu_arrays.import_cupy().cuda.get_current_stream().ptr
        if ptr is None:
            self.stream = 0                                 # numba's default stream
        elif ptr in (0, 1):                                 # CUDA's legacy default stream
            self.stream = cuda.legacy_default_stream()
        elif ptr == 2:                                      # cudaStreamPerThread
            self.stream = cuda.per_thread_default_stream()
        else:
            self.stream = cuda.external_stream(ptr)

    @property
    def own_stream(self) -> bool:
        """Whether the kernels run on the stream of the caller's library (no sync needed)."""
        return self.kind in (_arrays.TORCH_CUDA, _arrays.CUPY)

    def empty(self, shape, dtype, poison: bool = False):
        """(numba device view, the array to hand back: a tensor, a CuPy array or the view)."""
        from numba import cuda
        dtype = np.dtype(dtype)
        fill = _gpu_arrays.poison_value(dtype) if poison and _gpu_arrays.poison_enabled() \
            else None
        if self.kind == _arrays.TORCH_CUDA:
            owner = _gpu_arrays.torch_empty(shape, dtype, self.device_index)
            if fill is not None:
                owner.fill_(fill)
            return cuda.as_cuda_array(owner, sync=False), owner
        if self.kind == _arrays.CUPY:
            owner = _gpu_arrays.import_cupy().empty(shape, dtype=dtype)
            if fill is not None:
                owner.fill(fill)
            return cuda.as_cuda_array(owner, sync=False), owner
        if fill is not None:
            view = cuda.to_device(np.full(shape, fill, dtype=dtype), stream=self.stream)
        else:
            view = cuda.device_array(shape, dtype=dtype, stream=self.stream)
        return view, view

    def workspace(self, elements: int, dtype):
        """The column buffer: from the caller's library's pool on its stream, or this thread's
        reused numba buffer (safe there: one thread's calls run in order on numba's default
        stream)."""
        if self.own_stream:
            return self.empty((max(1, elements),), dtype)[0]
        return _workspace(elements, dtype)

    def launch(self, step: Launch) -> None:
        _launch_on_numba(step, self.stream)


def _launch_on_numba(step: Launch, stream=0) -> None:
    """Who launches: numba, on `stream` (a call's: _Call.stream)."""
    step.kernel[step.grid, step.block, stream](*step.args)


def _device_4d(a, shape4, call: _Call, kind: str | None = None):
    """A 4-D numba device view of input/weight `a` (read only; copies only when it must)."""
    if isinstance(a, np.ndarray):              # reshape on the host, one transfer
        return _gpu_arrays.to_numba(np.reshape(a, shape4), _arrays.NUMPY)
    d = _gpu_arrays.to_numba(a, kind, sync=not call.own_stream)
    if d.ndim == 4:
        return d                               # kernels index with strides: no copy
    if not d.is_c_contiguous():
        from conv.kernels.numba_cuda import copy as copies
        dense = call.empty(d.shape, d.dtype)[0]
        if dense.size:
            kernel = copies.copy_2d if d.ndim == 2 else copies.copy_3d
            call.launch(_launch(kernel, (_blocks(dense.size, copies.BLOCK),), copies.BLOCK,
                                d, dense))
        d = dense
    return d.reshape(shape4)


def _wait_for_torch(call: _Call, *arrays) -> None:
    """PyTorch exports __cuda_array_interface__ without its stream: where our kernels run on
    another stream than PyTorch's current one (a tensor passed with a CuPy input, say), finish
    the work queued there for these tensors before our kernels read them."""
    if call.kind == _arrays.TORCH_CUDA:
        return                                 # same stream: ordered, nothing to wait for
    for a in arrays:
        if a is not None and _arrays.array_kind(a) == _arrays.TORCH_CUDA:
            import torch
            torch.cuda.current_stream(a.device).synchronize()


# Reused between calls (issue: a fresh allocation and a host-to-device copy per call cost more
# than small convolutions): per device and dtype, the 1-element constants the kernels only read
# (the accumulator's zero, the bias stand-in); per thread, device and dtype, the im2col column
# workspace of calls on numba's default stream, grown to the largest call so far (at most the
# workspace cap). Per thread because two threads' calls may run at once; the kernels of one
# thread's calls run in order on numba's default stream, so a call's columns are never
# overwritten while the previous call reads them. (Calls on a PyTorch or CuPy stream draw their
# columns from that library's stream-ordered pool instead: _Call.workspace.)
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


def _prepare(plan, x, weight, bias, call: _Call, out) -> Operands:
    from conv.kernels.numba_cuda.common import ACCUMULATOR
    spec = plan.spec
    acc_dtype, widen = ACCUMULATOR[spec.dtype]
    _wait_for_torch(call, x, weight, bias)
    xd = _device_4d(x, (spec.n, spec.c, spec.h, spec.w), call, plan.kind)
    wd = _device_4d(weight, (spec.k, spec.c_per_group, spec.r, spec.s), call)
    has_bias = bias is not None
    bd = (_gpu_arrays.to_numba(bias, sync=not call.own_stream) if has_bias
          else _constant("bias stand-in", spec.dtype))
    acc = _constant("accumulator zero", acc_dtype)
    cols = (call.workspace(plan.workspace_bytes // acc_dtype.itemsize, acc_dtype)
            if plan.algorithm == "im2col" else None)
    return Operands(xd, wd, bd, has_bias, out, acc, widen, cols)


def _on_device(index: int | None):
    """numba's context of CUDA device `index` for the block (None: the current one). Entering
    it never makes a context on another device (numba would default to device 0's)."""
    from numba import cuda
    return contextlib.nullcontext() if index is None else cuda.gpus[index]


def run(plan, x, weight, bias):
    """The convolution on the input's device (`_Call` says on which stream, from which pool);
    returns the input's kind of array."""
    from numba import cuda
    spec = plan.spec
    with _on_device(_gpu_arrays.input_device(x)):
        call = _Call(plan.kind, _device_id())
        out, result = call.empty(spec.output_shape_4d, spec.dtype, poison=True)
        if not spec.is_empty:
            ops = _prepare(plan, x, weight, bias, call, out)
            for step in launches(plan, ops):
                call.launch(step)
        if not call.own_stream and plan.kind not in (_arrays.NUMBA_CUDA, _arrays.NUMPY):
            # The kernels ran on numba's default stream; a caller with another array kind
            # may read the result from a non-blocking stream that does not wait for it.
            cuda.default_stream().synchronize()
        if call.own_stream:
            return result.reshape(spec.output_shape)
        return _gpu_arrays.from_numba(out.reshape(spec.output_shape), x, plan.kind)
