"""The CuPy backend: hand-written CUDA C kernels (kernels/cuda/*.cu) compiled with ``cupy.RawModule``.

Algorithms (rows in conv/registry.py, which also holds the auto rule):
  "direct"         conv2d_direct.cu version 1: each thread computes KB output channels of one
                   output position in registers (KB = 1 depthwise specialisation, 4 or 8).
  "direct_naive"   conv2d_direct.cu version 0: one thread per output, the baseline.
  "im2col"         im2col.cu writes a column workspace, then gemm.cu version 1 (shared-memory
                   tiles, register blocking, bias fused). Pointwise (1x1, unpadded) convolutions
                   skip the workspace: the GEMM reads the input in place.
  "im2col_naive"   the same with gemm.cu version 0 (one thread per output).
  "im2col_cublas"  the same columns multiplied by ``cupy.matmul`` (cuBLAS): the vendor baseline.
  "implicit_gemm"  implicit_gemm.cu: the GEMM on tensor cores (mma.sync) with the input tiles
                   gathered on the fly (no workspace), float16, bfloat16 and float32 only; float32 runs
                   3xTF32 (near fp32 accuracy) unless the plan asks for "tf32".
  "depthwise"      depthwise.cu: groups == C (any channel multiplier), every dtype; a block stages
                   the input patch of an output tile of one (n, k) plane in shared memory, each
                   thread slides a register window along q. Not picked by "auto" yet (unmeasured).
Workspace: the column buffer, capped (`conv.set_workspace_limit(nbytes, "cupy")`, env
CONV_CUPY_WORKSPACE_BYTES, default 1/8 of the device's free memory counting CuPy's pool, at most
1 GiB) and chunked by conv/_workspace.py's policy: whole images, then bands of output rows of
one image (one row runs even when it alone exceeds the cap).

How a call runs: `_prepare` (the launch helper) makes the operands: zero-copy device views of the
caller's arrays, the output (poisoned when tests ask), the workspace. `launches(plan, ops)` says
what to launch, as data (`Launch`: source, entry point, compile options, grid, block, arguments;
`HostStep` for the one step that is not our kernel, cuBLAS's matmul). `_launch_on_cupy` is who
launches them: on CuPy's current stream. Another executor (a CPU emulator of the kernels) can run
the very launches `launches` computed.

Tile configurations (`configs(spec, algorithm)`, by name; the autotuner times each through
`make_plan(..., config=name)`): "direct" runs "kb1", "kb4" or "kb8" (KB output channels per
thread, each an entry point of the one direct module); "im2col" runs the GEMM tile "128x128x8"
(float16/bfloat16/float32 only: 4-byte accumulators) or "64x64x16" (every dtype), each tile its own
module (-D options); "implicit_gemm" runs "128x64x16" or "64x64x16" (sources.IGEMM_TILE_CONFIGS,
each its own module), and on small grids with long reductions their split-K forms "<tile>/k2" and
"<tile>/k4" (sources.igemm_configs: fp32 partial sums in a workspace, then splitk_sum.cu);
"depthwise" runs "1x1024", "1x256", "8x64" or "4x32"
(sources.DEPTHWISE_CONFIGS, entry points of one module; only the tiles whose shared buffer holds the
spec's patch). Plan.config "" is the default: the smallest KB that holds a group's
channels (8 for more), sources.GEMM_TILES's tile for the dtype, sources.IGEMM_TILE, depthwise's first fitting tile. The
tables live in sources.py.

Every kernel is compiled per (device, source, dtype, GEMM tile) with the options of
sources.module_options; the first compile (or load from CuPy's disk cache) of each is timed in
`compile_times()`. This module imports CuPy only when a GPU path runs.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ... import _arrays, _gpu_arrays
from ..._dtypes import accumulator_dtype
from ..._padding import PADDING_MODES
from ..._spec import ConvSpec
from ..._workspace import Chunks, WorkspaceLimit, plan_column_chunks
from .sources import (
    DEPTHWISE_CONFIGS,
    DIRECT_CONFIGS,
    DIRECT_KBS,
    GEMM_TILE_CONFIGS,
    GEMM_TILES,
    IGEMM_PRECISIONS,
    IGEMM_TILE_CONFIGS,
    igemm_config,
    igemm_configs,
    depthwise_configs,
    dtype_name,
    gemm_tiles,
    kernel_source,
    module_label,
    module_options,
)

_BLOCK = 256                    # threads per block of the 1-D kernels (their __launch_bounds__)
_MAX_GRID_X, _MAX_GRID_Y, _MAX_GRID_Z = _gpu_arrays.GRID_LIMITS


def availability() -> tuple[bool, str]:
    return _gpu_arrays.cupy_availability()


# ---------------------------------------------------------------------------------------------
# Workspace

_free_seen: dict = {}           # device -> free bytes it last reported (for calls in a capture)


def _default_limit() -> int:
    """1/8 of the current device's free memory, counting what CuPy's pool and PyTorch's cache
    hold unused (PyTorch inputs draw their workspace from that cache), within [1 MiB, 1 GiB]. In
    a CUDA graph capture the device is not asked (the last answer, else the largest cap)."""
    try:
        cupy = _gpu_arrays.import_cupy()
        device = cupy.cuda.runtime.getDevice()
    except Exception:           # no device to ask (the CPU emulator): the cap's largest value
        return 1 << 30
    if _gpu_arrays.capturing(_arrays.TORCH_CUDA) or _gpu_arrays.capturing(
            _arrays.CUPY):
        free = _free_seen.get(device, 8 << 30)
    else:
        free, _ = cupy.cuda.runtime.memGetInfo()
        free += cupy.get_default_memory_pool().free_bytes()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        _free_seen[device] = free
    return int(max(1 << 20, min(1 << 30, free // 8)))


_limit = WorkspaceLimit("CONV_CUPY_WORKSPACE_BYTES", _default_limit)
set_workspace_limit = _limit.set
workspace_limit = _limit.get


def _limit_for(x) -> int:
    """The cap for a call on x: the default asks x's device (the current one for NumPy input)."""
    try:
        with _gpu_arrays.on_device(_gpu_arrays.input_device(x)):
            return _limit.get()
    except ImportError:         # no CuPy (a host array planned for the CPU emulator)
        return _limit.get()


def _is_pointwise(spec: ConvSpec) -> bool:
    return spec.r == 1 and spec.s == 1 and not any(spec.pad)


def _column_bytes(spec: ConvSpec, chunk: Chunks) -> int:
    return spec.c * spec.r * spec.s * chunk.images * chunk.rows * spec.q * spec.dtype.itemsize


def _splitk_bytes(spec: ConvSpec, splits: int) -> int:
    """implicit_gemm's split-K workspace: `splits` fp32 copies of the output (0 unsplit)."""
    n, k, p, q = spec.output_shape_4d
    return splits * n * k * p * q * 4 if splits > 1 else 0


def plan_workspace(spec: ConvSpec, algorithm: str, x,
                   config: str = "") -> tuple[int, Chunks | None, str]:
    if algorithm == "implicit_gemm":
        splits = igemm_config(config)[1]
        nbytes = 0 if spec.is_empty else _splitk_bytes(spec, splits)
        cap = _limit_for(x) if nbytes else 0
        if nbytes > cap:
            raise ValueError(f"cupy implicit_gemm configuration {config!r} needs {nbytes} bytes "
                             f"of split-K workspace, more than the cap ({cap}): use the unsplit "
                             f"tile {igemm_config(config)[0]!r}")
        return nbytes, None, (f"split-K in {splits}: {nbytes} bytes of fp32 partial sums"
                              if nbytes else "")
    if not algorithm.startswith("im2col") or spec.is_empty or (
            _is_pointwise(spec) and algorithm != "im2col_cublas"):
        return 0, None, ""
    return plan_column_chunks(spec, lambda c: _column_bytes(spec, c), _limit_for(x))


# ---------------------------------------------------------------------------------------------
# Tile configurations (what the autotuner chooses among, by name; sources.py holds the tables)

def configs(spec: ConvSpec, algorithm: str) -> tuple[str, ...]:
    """The tile configurations `algorithm` can run spec with, by name: direct's output channels
    per thread ("kb1", "kb4", "kb8", any of them for any spec), im2col's GEMM tiles for the
    dtype ("128x128x8" where the accumulator is 4 bytes, "64x64x16" for every dtype),
    implicit_gemm's tensor-core tiles ("128x64x16", "64x64x16"), depthwise's output tiles whose
    shared buffer holds spec's patch (the preferred first); () for the algorithms with one
    configuration."""
    if algorithm == "direct":
        return tuple(DIRECT_CONFIGS)
    if algorithm == "im2col":
        return gemm_tiles(spec.dtype)
    if algorithm == "implicit_gemm":
        cap = _limit.get()                  # asked once (the default asks the device)
        return tuple(c for c in igemm_configs(spec)
                     if _splitk_bytes(spec, igemm_config(c)[1]) <= cap)
    if algorithm == "depthwise":
        return depthwise_configs(spec)
    return ()


def _direct_kb(spec: ConvSpec, config: str) -> int:
    """Output channels per thread of direct version 1: the named config, or by default the
    smallest KB that holds a group's channels (KB = 1 for depthwise), at most the largest."""
    if config:
        return DIRECT_CONFIGS[config]
    return next(v for v in DIRECT_KBS if v >= min(spec.k_per_group, DIRECT_KBS[-1]))


# ---------------------------------------------------------------------------------------------
# What to launch

@dataclass(frozen=True)
class Launch:
    """One launch of entry point `entry` of kernels/cuda/<source> compiled with `options`."""

    source: str
    entry: str
    options: tuple[str, ...]
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    args: tuple


@dataclass(frozen=True)
class HostStep:
    """A step that is not one of our kernels (the cuBLAS baseline's matmul and bias add)."""

    what: str
    run: Callable[[], None]


@dataclass
class Operands:
    """Device views of one call: x/w/b in the caller's layout with 4-D element strides, the
    weights as a (K, cg*R*S) matrix, the freshly allocated contiguous (N, K, P, Q) output and the
    column workspace (or None)."""

    x: object
    xs: tuple                    # element strides of x as (n, c, h, w)
    w: object
    ws: tuple                    # element strides of w as (k, c, r, s)
    wmat: object                 # row-major (K, cg*R*S)
    b: object                    # bias, or None
    bs: int                      # element stride of the bias
    out: object
    cols: object                 # the column workspace, or None
    xp: object                   # the array module of these arrays: cupy (or numpy, emulated)


def _i64(*values) -> tuple:
    return tuple(np.int64(v) for v in values)


def _kernel_launch(source: str, kernel: str, dtype, args: tuple, *, total: int | None = None,
                   grid: tuple | None = None, block: tuple = (_BLOCK, 1, 1),
                   tile: str = "") -> Launch:
    """<kernel>_<dtype> from `source` (gemm.cu: the module of GEMM tile `tile`, "" the default),
    either over `total` work items (a 1-D grid of _BLOCK threads, the kernels' grid-stride loops
    cover the rest) or on an explicit `grid`."""
    if total is not None:
        grid = (max(1, min(_MAX_GRID_X, math.ceil(total / _BLOCK))), 1, 1)
    return Launch(source, f"{kernel}_{dtype_name(dtype)}", module_options(source, dtype, tile),
                  tuple(grid), tuple(block), args)


def _direct(ops: Operands, spec: ConvSpec, naive: bool, config: str = "") -> list:
    n, k, p, q = spec.output_shape_4d
    kg = spec.k_per_group
    top, _, left, _ = spec.pad
    args = (ops.x, ops.w, ops.b if ops.b is not None else ops.out, ops.out) + _i64(
        n, spec.c, spec.h, spec.w, k, p, q, spec.r, spec.s, *ops.xs, *ops.ws, ops.bs, spec.groups,
        spec.stride[0], spec.stride[1], spec.dilation[0], spec.dilation[1], top, left,
        PADDING_MODES[spec.padding_mode], ops.b is not None)
    if naive:
        return [_kernel_launch("conv2d_direct.cu", "conv2d_direct_naive", spec.dtype, args,
                               total=n * k * p * q)]
    kb = _direct_kb(spec, config)
    total = n * spec.groups * (-(-kg // kb)) * p * q
    return [_kernel_launch("conv2d_direct.cu", f"conv2d_direct_kb{kb}", spec.dtype, args,
                           total=total)]


def _gemm(variant: str, spec: ConvSpec, ops: Operands, bmat, out, ncols: int, rows: int,
          b_strides: tuple, config: str = "") -> list:
    """out[n, g*kg + m, p, q] = sum_i wmat[g*kg + m, i] * B_g[i, (n, p, q)] + bias, all groups,
    for `ncols` columns (n, p, q) with `rows` output rows per image (P, or a band's length; out
    then points at the band's first row).

    b_strides = (b_g, b_row, b_n, b_p, b_q): where B_g's element (i, j = (n, p, q)) lies.
    config: the tiled GEMM's tile by name ("": the dtype's default); grid, block and the
    module's -D options all come from that one tile.
    """
    kg, groups = spec.k_per_group, spec.groups
    crs = spec.c_per_group * spec.r * spec.s
    k = spec.output_shape_4d[1]
    pq = spec.p * spec.q
    bias = ops.b if ops.b is not None else out
    steps = []
    for g0 in range(0, groups, _MAX_GRID_Z):
        gz = min(_MAX_GRID_Z, groups - g0)
        args = (ops.wmat, bmat, bias, out) + _i64(kg, ncols, crs, rows * spec.q, spec.q,
                                                   *b_strides, k * pq, pq, ops.bs,
                                                   ops.b is not None, g0)
        if variant == "naive":
            steps.append(_kernel_launch("gemm.cu", "gemm_naive", spec.dtype, args,
                                        grid=(math.ceil(ncols / 32), math.ceil(kg / 8), gz),
                                        block=(32, 8, 1)))
        else:
            name = config or GEMM_TILES[spec.dtype]
            tile = GEMM_TILE_CONFIGS[name]
            steps.append(_kernel_launch("gemm.cu", "gemm_tiled", spec.dtype, args,
                                        grid=(math.ceil(ncols / tile.bn),
                                              math.ceil(kg / tile.bm), gz),
                                        block=(tile.threads, 1, 1), tile=name))
    return steps


def _cublas_gemm(spec: ConvSpec, ops: Operands, cols, out, nb: int, rows: int) -> HostStep:
    """The comparison variant: the same columns multiplied by cupy.matmul (cuBLAS), for nb images
    of `rows` output rows each (out: their (nb, K, rows, Q) slice of the output)."""
    def run() -> None:
        xp = ops.xp
        groups, kg = spec.groups, spec.k_per_group
        crs = spec.c_per_group * spec.r * spec.s
        ncols = nb * rows * spec.q
        a = ops.wmat.reshape(groups, kg, crs)
        b = cols[:groups * crs * ncols].reshape(groups, crs, ncols)
        if spec.dtype.kind in "iu":            # exact int64 products and sums, as the kernels
            a, b = a.astype(np.int64), b.astype(np.int64)
        res = xp.matmul(a, b)                  # (groups, kg, nb*rows*Q)
        res = res.reshape(groups, kg, nb, rows, spec.q).transpose(2, 0, 1, 3, 4).reshape(
            out.shape)
        if ops.b is not None:
            acc = np.promote_types(accumulator_dtype(spec.dtype), res.dtype)
            res = res.astype(acc) + ops.b.astype(acc)[None, :, None, None]
        out[...] = res.astype(spec.dtype)      # integers wrap on the cast, as PyTorch
    return HostStep(f"matmul (cuBLAS) of {nb} image(s) x {rows} row(s) of columns", run)


def _im2col(ops: Operands, plan, variant: str) -> list:
    spec = plan.spec
    n, _, p, q = spec.output_shape_4d
    if ops.cols is None and variant != "cublas":
        # 1x1 unpadded: the input is the column matrix (channel rows, (n, p, q) columns).
        xs_n, xs_c, xs_h, xs_w = ops.xs
        sh, sw = spec.stride
        return _gemm(variant, spec, ops, ops.x, ops.out, n * p * q, p,
                     (spec.c_per_group * xs_c, xs_c, xs_n, xs_h * sh, xs_w * sw), plan.config)
    chunks = plan.chunks or Chunks(n, p, q, spec.r, spec.s)
    top, _, left, _ = spec.pad
    crs = spec.c_per_group * spec.r * spec.s
    steps = []
    for n0 in range(0, n, chunks.images):
        nb = min(n, n0 + chunks.images) - n0
        for p0 in range(0, p, chunks.rows):
            rows = min(p, p0 + chunks.rows) - p0
            ncols = nb * rows * q
            x = ops.x[n0:n0 + nb] if spec.batched else ops.x
            out = ops.out[n0:n0 + nb, :, p0:p0 + rows]
            # A band of output rows is the im2col of P = rows outputs whose first row is p0:
            # the same input, its top padding moved up by p0 strides (coordinates stay exact,
            # so every padding mode reads what the whole call would).
            steps.append(_kernel_launch(
                "im2col.cu", "im2col", spec.dtype,
                (x, ops.cols) + _i64(nb, spec.c, spec.h, spec.w, rows, q, spec.r, spec.s,
                                     *ops.xs, spec.stride[0], spec.stride[1], spec.dilation[0],
                                     spec.dilation[1], top - p0 * spec.stride[0], left,
                                     PADDING_MODES[spec.padding_mode]),
                total=spec.c * ncols))
            if variant == "cublas":
                steps.append(_cublas_gemm(spec, ops, ops.cols, out, nb, rows))
            else:
                steps.extend(_gemm(variant, spec, ops, ops.cols, out, ncols, rows,
                                   (crs * ncols, ncols, rows * q, q, 1), plan.config))
    return steps


def precision(spec: ConvSpec, algorithm: str, allow_tf32: bool) -> str:
    """The arithmetic `algorithm` runs spec in (conv/plan.py's hook; Plan.precision):
    implicit_gemm's "tf32" for float32 where allow_tf32, else "3xtf32", and "f16" for float16;
    "" for the other algorithms (the dtype's own arithmetic)."""
    if algorithm != "implicit_gemm" or spec.dtype not in IGEMM_PRECISIONS:
        return ""
    if spec.dtype == np.float32:
        return "tf32" if allow_tf32 else "3xtf32"
    return IGEMM_PRECISIONS[spec.dtype][0]


def implicit_gemm_precision(plan) -> str:
    """The precision implicit_gemm runs `plan` in: plan.precision ("tf32" or "3xtf32" for
    float32, "f16" for float16), or where the plan has none the dtype's default
    (sources.IGEMM_PRECISIONS: "3xtf32" for float32, "f16" for float16)."""
    choices = IGEMM_PRECISIONS[plan.spec.dtype]
    precision = plan.precision or choices[0]
    if precision not in choices:
        raise ValueError(f"implicit_gemm has no precision {precision!r} for {plan.spec.dtype}; "
                         f"it has {list(choices)}")
    return precision


def _implicit_gemm(ops: Operands, plan) -> list:
    """One launch per at most 65535 (group, split) pairs (grid z): a block per BM x BN tile of
    (m, j), the columns j = (n, p, q) of all images at once; the input read in place through its
    strides. Split-K ("<tile>/k<splits>"): each split writes fp32 partial sums to the workspace,
    then splitk_sum.cu adds them up with the bias, in split order."""
    spec = plan.spec
    n, k, p, q = spec.output_shape_4d
    kg, groups = spec.k_per_group, spec.groups
    crs = spec.c_per_group * spec.r * spec.s
    ncols = n * p * q
    name, splits = igemm_config(plan.config)
    tile = IGEMM_TILE_CONFIGS[name]
    if splits > 1 and (ops.cols is None or ops.cols.size < splits * n * k * p * q):
        raise ValueError(f"implicit_gemm {plan.config!r}: no split-K workspace in the plan")
    if math.ceil(ncols / tile.bn) > _MAX_GRID_X:
        raise ValueError(f"implicit_gemm: {ncols} output columns need more than {_MAX_GRID_X} "
                         f"blocks of {tile.bn}")
    entry = f"implicit_gemm_{implicit_gemm_precision(plan)}" + ("_splitk" if splits > 1 else "")
    top, _, left, _ = spec.pad
    bias = ops.b if ops.b is not None else ops.out
    steps = []
    part = ops.cols if splits > 1 else ops.out      # (never written unsplit)
    per_launch = _MAX_GRID_Z // splits
    for g0 in range(0, groups, per_launch):
        gz = min(per_launch, groups - g0)
        args = (ops.x, ops.wmat, bias, ops.out) + _i64(
            kg, spec.c_per_group, ncols, crs, spec.h, spec.w, p, q, spec.r, spec.s, *ops.xs,
            spec.stride[0], spec.stride[1], spec.dilation[0], spec.dilation[1], top, left,
            PADDING_MODES[spec.padding_mode], k * p * q, p * q, ops.bs, ops.b is not None, g0,
            splits) + (part,) + _i64(n * k * p * q)
        steps.append(_kernel_launch("implicit_gemm.cu", entry, spec.dtype, args,
                                    grid=(math.ceil(ncols / tile.bn), math.ceil(kg / tile.bm),
                                          gz * splits),
                                    block=(tile.threads, 1, 1), tile=name))
    if splits > 1:
        total = n * k * p * q
        steps.append(_kernel_launch(
            "splitk_sum.cu", "splitk_sum", spec.dtype,
            (ops.cols, bias, ops.out) + _i64(total, splits, k, p * q, ops.bs, ops.b is not None),
            total=total))
    return steps


def _depthwise(ops: Operands, plan) -> list:
    """depthwise.cu on the tile plan.config names, or the first that fits (a smaller tile where a
    large dilation or stride overflows the preferred one's shared buffer; a ValueError where none
    fits, which the registry's refusal already raises at planning). One launch per at most 65535
    (n, k) planes (grid z): blocks over the output columns (x) and rows (y) of each plane."""
    spec = plan.spec
    n, k, p, q = spec.output_shape_4d
    fitting = depthwise_configs(spec)
    if not fitting:
        raise ValueError(depthwise_refusal_message(spec))
    tile = DEPTHWISE_CONFIGS[plan.config or fitting[0]]
    grid_x, grid_y = math.ceil(q / tile.tile_q), math.ceil(p / tile.tile_p)
    if grid_x > _MAX_GRID_X or grid_y > _MAX_GRID_Y:
        raise ValueError(f"depthwise: {p} x {q} outputs per plane need more than "
                         f"{_MAX_GRID_X} x {_MAX_GRID_Y} blocks of {tile.name}")
    top, _, left, _ = spec.pad
    ws_k, _, ws_r, ws_s = ops.ws
    bias = ops.b if ops.b is not None else ops.out
    planes = n * k
    steps = []
    for plane0 in range(0, planes, _MAX_GRID_Z):
        gz = min(_MAX_GRID_Z, planes - plane0)
        args = (ops.x, ops.w, bias, ops.out) + _i64(
            k, spec.k_per_group, spec.h, spec.w, p, q, spec.r, spec.s, *ops.xs, ws_k, ws_r, ws_s,
            ops.bs, spec.stride[0], spec.stride[1], spec.dilation[0], spec.dilation[1], top, left,
            PADDING_MODES[spec.padding_mode], ops.b is not None, plane0)
        steps.append(_kernel_launch("depthwise.cu", f"depthwise_{tile.name}", spec.dtype, args,
                                    grid=(grid_x, grid_y, gz), block=(tile.threads, 1, 1)))
    return steps


def depthwise_refusal_message(spec: ConvSpec) -> str:
    """Why depthwise cannot run spec, or "" where it can (conv/registry.py's spec_refusal)."""
    if spec.groups != spec.c:
        return (f"cupy algorithm 'depthwise' computes depthwise convolutions only (groups == C, "
                f"any channel multiplier K/C); this call has groups={spec.groups}, C={spec.c}: "
                f"use algorithm 'direct' or 'implicit_gemm'")
    if not spec.is_empty and not depthwise_configs(spec):
        smallest = min(t.shared_elements(spec) * spec.dtype.itemsize
                       for t in DEPTHWISE_CONFIGS.values())
        return (f"cupy algorithm 'depthwise': the input patch of even its smallest tile needs "
                f"{smallest} bytes of shared memory for this stride/dilation/kernel "
                f"({spec.dtype}), more than its buffer holds: use algorithm 'direct'")
    return ""


_LAUNCHES = {
    "direct": lambda ops, plan: _direct(ops, plan.spec, naive=False, config=plan.config),
    "direct_naive": lambda ops, plan: _direct(ops, plan.spec, naive=True),
    "im2col": lambda ops, plan: _im2col(ops, plan, "tiled"),
    "im2col_naive": lambda ops, plan: _im2col(ops, plan, "naive"),
    "im2col_cublas": lambda ops, plan: _im2col(ops, plan, "cublas"),
    "implicit_gemm": _implicit_gemm,
    "depthwise": _depthwise,
}


def launches(plan, ops: Operands) -> list:
    """Every step of `plan` on `ops`, in order: Launch records (and HostSteps). plan.config, where
    set, names the tile configuration (`configs`); "" runs the backend's default."""
    if plan.config and plan.config not in configs(plan.spec, plan.algorithm):
        raise ValueError(f"cupy algorithm {plan.algorithm!r} has no tile configuration "
                         f"{plan.config!r} for this call; expected one of "
                         f"{list(configs(plan.spec, plan.algorithm))}")
    return _LAUNCHES[plan.algorithm](ops, plan)


# ---------------------------------------------------------------------------------------------
# The launch helper: operands; and who launches

def _element_strides(a, xp):
    """(array, element strides); a copy only when a byte stride is not a whole element."""
    item = a.itemsize
    if any(s % item for s in a.strides):
        a = xp.ascontiguousarray(a)
    return a, tuple(s // item for s in a.strides)


def _as_4d_strides(strides: tuple, batched: bool, op: str) -> tuple:
    """Element strides of an input/weight as 4-D (n, c, h, w): unbatched -> n stride 0, conv1d ->
    h (or r) stride 0; the size-1 axes are never stepped along."""
    st = list(strides)
    if not batched:
        st.insert(0, 0)
    if op == "conv1d":
        st.insert(2, 0)
    return tuple(st)


def _new_device_array(size_or_shape, dtype, xp):
    a = xp.empty(size_or_shape, dtype=dtype)
    if _gpu_arrays.poison_enabled():        # unwritten elements then fail the tests
        a.fill(_gpu_arrays.poison_value(dtype))
    return a


def _prepare(plan, input, weight, bias, xp=None, out=None) -> Operands:
    """Zero-copy device views of the caller's arrays (never modified), the output (`out`, a
    contiguous (N, K, P, Q) array the caller allocated, or a new one) and the workspace
    plan.workspace_bytes says. xp=numpy: NumPy arrays stand for device memory (the CPU emulator
    of the kernels, conv/emulator/)."""
    spec = plan.spec
    if xp is None:
        xp = _gpu_arrays.import_cupy()
        device = _gpu_arrays.to_cupy
    else:
        def device(a, kind=None):
            return a
    x, xs = _element_strides(device(input, plan.kind), xp)
    w, ws = _element_strides(device(weight), xp)
    b, bs = (None, (0,)) if bias is None else _element_strides(device(bias), xp)
    wmat = xp.ascontiguousarray(w).reshape(spec.k, -1)      # a copy only for odd views
    if out is None:
        out = _new_device_array(spec.output_shape_4d, spec.dtype, xp)
    if plan.algorithm == "implicit_gemm":   # split-K's fp32 partial sums
        cols = (_new_device_array(plan.workspace_bytes // 4, np.float32, xp)
                if plan.workspace_bytes else None)
    else:
        cols = (_new_device_array(plan.workspace_bytes // spec.dtype.itemsize, spec.dtype, xp)
                if plan.workspace_bytes else None)
    return Operands(x, _as_4d_strides(xs, spec.batched, spec.op), w,
                    _as_4d_strides(ws, True, spec.op), wmat, b, bs[0], out, cols, xp)


_modules: dict = {}             # (device, source, options) -> cupy.RawModule
_functions: dict = {}           # (device, source, options, entry) -> kernel
_compile_times: dict[str, float] = {}


def compile_times() -> dict[str, float]:
    """Seconds the first use of each specialisation took ("source[dtype]", or
    "gemm.cu[dtype,tile]" for a GEMM tile other than the dtype's default -> seconds): NVRTC
    compile plus module load, or only the load where CuPy's disk cache already had it."""
    return dict(_compile_times)


def _kernel(source: str, entry: str, options: tuple):
    cupy = _gpu_arrays.import_cupy()
    device = cupy.cuda.Device().id
    fkey = (device, source, options, entry)
    fn = _functions.get(fkey)
    if fn is None:
        mkey = (device, source, options)
        start = time.perf_counter()
        module = _modules.get(mkey)
        first = module is None
        if first:
            module = cupy.RawModule(code=kernel_source(source), options=options)
            _modules[mkey] = module
        fn = module.get_function(entry)          # compiles (or loads) on first use
        if first:
            _compile_times.setdefault(module_label(source, options), time.perf_counter() - start)
        _functions[fkey] = fn
    return fn


def _launch_on_cupy(step) -> None:
    """Who launches: CuPy, on its current stream (it raises on a failed launch)."""
    if isinstance(step, HostStep):
        step.run()
        return
    _kernel(step.source, step.entry, step.options)(step.grid, step.block, step.args)


def run(plan, input, weight, bias):
    """The convolution on the input's CUDA device (the current one for NumPy input), on the
    stream of the caller's library (`_gpu_arrays.cupy_call`: PyTorch's current stream and
    caching allocator for PyTorch tensors, CuPy's current stream and pool otherwise); returns
    the input's kind of array (a native tensor for PyTorch), shape spec.output_shape, dtype
    spec.dtype. Nothing synchronises: the result is ready in stream order."""
    spec = plan.spec
    torch_kind = plan.kind == _arrays.TORCH_CUDA
    with _gpu_arrays.cupy_call(plan.kind, _gpu_arrays.input_device(input)):
        cupy = _gpu_arrays.import_cupy()
        result = None
        if torch_kind:                     # PyTorch's own tensor, viewed by the kernels
            result = _gpu_arrays.torch_empty(spec.output_shape_4d, spec.dtype,
                                             cupy.cuda.runtime.getDevice())
        if spec.is_empty:                  # nothing to compute: no conversion, no launch
            out = cupy.empty(spec.output_shape, dtype=spec.dtype)
        else:
            out = None
            if result is not None:
                out = _gpu_arrays.to_cupy(result, plan.kind)
                if _gpu_arrays.poison_enabled():
                    out.fill(_gpu_arrays.poison_value(spec.dtype))
            ops = _prepare(plan, input, weight, bias, out=out)
            for step in launches(plan, ops):
                _launch_on_cupy(step)
            out = ops.out.reshape(spec.output_shape)
    if result is not None:
        return result.reshape(spec.output_shape)
    return _gpu_arrays.from_cupy(out, plan.kind)
