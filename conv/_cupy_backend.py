"""The CuPy backend: hand-written CUDA C kernels (kernels/*.cu) compiled with ``cupy.RawModule``.

Algorithms (``conv.conv2d(..., backend="cupy", algorithm=...)``):
  "direct"         conv2d_direct.cu version 1: each thread computes KB output channels of one
                   output position in registers (KB = 1 depthwise specialisation, 4 or 8). Default
                   for depthwise, few channels, complex and integer inputs.
  "direct_naive"   conv2d_direct.cu version 0: one thread per output, the baseline.
  "im2col"         im2col.cu writes a column workspace (capped: `set_workspace_limit`), then
                   gemm.cu version 1 (shared-memory tiles, register blocking, bias fused).
                   Pointwise (1x1, unpadded) convolutions skip the workspace: the GEMM reads the
                   input in place. Default for dense real convolutions.
  "im2col_naive"   the same with gemm.cu version 0 (one thread per output).
  "im2col_cublas"  the same columns multiplied by ``cupy.matmul`` (cuBLAS): the vendor baseline,
                   for comparison only.
`choose_algorithm` is the rule for algorithm="auto".

Every kernel is compiled per (device, source, dtype) with the options of `module_options`; the
first compile (or load from CuPy's disk cache) of each is timed in `compile_times()`.
`specialisations()` lists every (source, entry point, options) the dispatcher can ask for; CI
compiles all of them with NVRTC (tests/test_nvrtc_compile.py).

This module imports CuPy only when a GPU path runs; importing it on a machine without CuPy works.
"""
from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass

import numpy as np

from . import _arrays, _gpu_arrays
from ._kernel_sources import read_source
from ._spec import SUPPORTED_DTYPES, ConvSpec

ALGORITHMS = ("direct", "direct_naive", "im2col", "im2col_naive", "im2col_cublas")
ACCEPTS = (_arrays.NUMPY, _arrays.CUPY, _arrays.TORCH_CUDA, _arrays.NUMBA_CUDA, _arrays.CUDA_OTHER)

SOURCES = ("conv2d_direct.cu", "im2col.cu", "gemm.cu")
# Options handed to cupy.RawModule (CuPy adds -ftz=true itself; conv._nvrtc adds it in CI).
BASE_OPTIONS = ("--std=c++17",)
# Padding mode -> the number common.cuh's CONV_PAD_* macros give it.
_PAD_MODES = {"zeros": 0, "reflect": 1, "replicate": 2, "circular": 3}
# GEMM tiles (BM, BN, BK, TM, TN) per dtype: 128x128 with 8x8 outputs per thread where the
# accumulator is 4 bytes, 64x64 with 4x4 for 8- and 16-byte accumulators (registers, shared memory).
_GEMM_TILE_SMALL_ACC = (128, 128, 8, 8, 8)
_GEMM_TILE_WIDE_ACC = (64, 64, 16, 4, 4)
GEMM_TILES = {dt: (_GEMM_TILE_SMALL_ACC if dt in (np.dtype(np.float16), np.dtype(np.float32))
                   else _GEMM_TILE_WIDE_ACC) for dt in SUPPORTED_DTYPES}
DIRECT_KBS = (1, 4, 8)          # output channels per thread of direct version 1
_BLOCK = 256                    # threads per block of the 1-D kernels (their __launch_bounds__)
_MAX_GRID_X = 2 ** 31 - 1
_MAX_GRID_Z = 65535
_INCLUDE = re.compile(r'^#include "([\w.]+\.cuh)"[ \t]*$', re.MULTILINE)


def dtype_name(dtype) -> str:
    """The suffix of the entry points for `dtype` ("float32", "complex64", "int8", ...)."""
    return np.dtype(dtype).name


# ---------------------------------------------------------------------------------------------
# Sources and specialisations (no CuPy needed)

def kernel_source(name: str) -> str:
    """The self-contained text of kernels/<name>: each ``#include "x.cuh"`` replaced by that file.

    CuPy and NVRTC both compile this very text, and CuPy's kernel cache hashes all of it (a change
    to common.cuh recompiles every module).
    """
    text = read_source(name)

    def paste(match: re.Match) -> str:
        header = read_source(match.group(1)).replace("#pragma once\n", "")
        next_line = text.count("\n", 0, match.start()) + 2     # the line after the #include
        return f'#line 1 "{match.group(1)}"\n{header}\n#line {next_line} "{name}"'

    return _INCLUDE.sub(paste, text)


def module_options(source: str, dtype) -> tuple[str, ...]:
    """The compile options of the module built from `source` for `dtype`."""
    dt = np.dtype(dtype)
    opts = BASE_OPTIONS + (f"-DCONV_WANT_{dtype_name(dt)}",)
    if source == "gemm.cu":
        bm, bn, bk, tm, tn = GEMM_TILES[dt]
        opts += (f"-DCONV_GEMM_BM={bm}", f"-DCONV_GEMM_BN={bn}", f"-DCONV_GEMM_BK={bk}",
                 f"-DCONV_GEMM_TM={tm}", f"-DCONV_GEMM_TN={tn}")
    return opts


def entry_points(source: str, dtype) -> tuple[str, ...]:
    """Every entry point of the module built from `source` for `dtype`."""
    name = dtype_name(dtype)
    if source == "conv2d_direct.cu":
        return (f"conv2d_direct_naive_{name}",) + tuple(f"conv2d_direct_kb{kb}_{name}"
                                                      for kb in DIRECT_KBS)
    if source == "im2col.cu":
        return (f"im2col_{name}",)
    if source == "gemm.cu":
        return (f"gemm_naive_{name}", f"gemm_tiled_{name}")
    raise ValueError(f"unknown kernel source {source!r}")


def specialisations() -> list[tuple[str, str, tuple[str, ...]]]:
    """Every (source file, entry point, compile options) this backend can launch."""
    return [(source, entry, module_options(source, dt))
            for source in SOURCES for dt in SUPPORTED_DTYPES
            for entry in entry_points(source, dt)]


# ---------------------------------------------------------------------------------------------
# Availability, workspace, algorithm choice

def availability() -> tuple[bool, str]:
    return _gpu_arrays.cupy_availability()


_ENV_WORKSPACE = "CONV_CUPY_WORKSPACE_BYTES"
_workspace_limit: int | None = int(os.environ[_ENV_WORKSPACE]) if os.environ.get(_ENV_WORKSPACE) else None


def set_workspace_limit(nbytes: int | None) -> None:
    """Cap (bytes) on the im2col column workspace; None restores the default (1/8 of the device's
    free memory, counting CuPy's pool, at most 1 GiB). The batch is chunked to fit; when one image
    alone does not fit, the direct kernel runs instead (it needs no workspace)."""
    global _workspace_limit
    if nbytes is not None and nbytes <= 0:
        raise ValueError("workspace limit must be positive")
    _workspace_limit = None if nbytes is None else int(nbytes)


def workspace_limit() -> int:
    """The column-workspace cap in bytes on the current device."""
    if _workspace_limit is not None:
        return _workspace_limit
    cupy = _gpu_arrays.import_cupy()
    free, _ = cupy.cuda.runtime.memGetInfo()
    free += cupy.get_default_memory_pool().free_bytes()
    return int(max(1 << 20, min(1 << 30, free // 8)))


def _column_bytes_per_image(spec: ConvSpec) -> int:
    return spec.c * spec.r * spec.s * spec.p * spec.q * spec.dtype.itemsize


def _is_pointwise(spec: ConvSpec) -> bool:
    return spec.r == 1 and spec.s == 1 and not any(spec.pad)


def choose_algorithm(spec: ConvSpec) -> tuple[str, str]:
    """algorithm="auto": direct where a GEMM would be mostly overhead or brings nothing, im2col
    (tiled GEMM) for dense real convolutions."""
    if spec.dtype.kind in "iu":
        return "direct", ("integer inputs use the direct kernel: exact int64 sums, and 64-bit "
                          "multiply-adds gain nothing from GEMM tiles")
    if spec.dtype.kind == "c":
        return "direct", "complex inputs use the direct kernel (complex GEMM tiles are not tuned)"
    if spec.is_depthwise:
        return "direct", (f"depthwise (groups = C = {spec.c}): each output reads one channel, "
                          f"the direct kernel's depthwise specialisation fits")
    reduction = spec.c_per_group * spec.r * spec.s
    if reduction <= 16 and spec.k_per_group <= 4:
        return "direct", (f"each output sums only {reduction} products per group "
                          f"({spec.k_per_group} outputs per group): GEMM tiles would be mostly empty")
    if _is_pointwise(spec):
        return "im2col", "pointwise 1x1 convolution: one tiled GEMM over the input, no workspace"
    try:
        limit = workspace_limit()
    except Exception:               # no device to ask: run() decides again
        limit = None
    if limit is not None and _column_bytes_per_image(spec) > limit:
        return "direct", (f"one image's columns ({_column_bytes_per_image(spec)} bytes) exceed the "
                          f"im2col workspace limit ({limit} bytes)")
    return "im2col", (f"dense: {spec.k_per_group} output channels x {reduction} products per group "
                      f"suit the tiled GEMM (im2col + gemm)")


# ---------------------------------------------------------------------------------------------
# Compiled modules

_modules: dict = {}             # (device, source, options) -> cupy.RawModule
_functions: dict = {}           # (device, source, options, entry) -> kernel
_compile_times: dict[str, float] = {}
_last_plan: dict = {}


def compile_times() -> dict[str, float]:
    """Seconds the first use of each specialisation took ("source[dtype]" -> seconds): NVRTC
    compile plus module load, or only the load where CuPy's disk cache already had it."""
    return dict(_compile_times)


def last_plan() -> dict:
    """What the last run() did: algorithm, kernels launched, batch chunks, fallbacks (for tests)."""
    return dict(_last_plan)


def _kernel(source: str, entry: str, dtype):
    cupy = _gpu_arrays.import_cupy()
    device = cupy.cuda.Device().id
    options = module_options(source, dtype)
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
            _compile_times.setdefault(f"{source}[{dtype_name(dtype)}]", time.perf_counter() - start)
        _functions[fkey] = fn
    return fn


# ---------------------------------------------------------------------------------------------
# The launch helper and the operands it prepares

@dataclass
class _Operands:
    """Device views of one call: x/w/b in the caller's layout with 4-D element strides, and the
    freshly allocated contiguous (N, K, P, Q) output."""

    x: object
    xs: tuple                    # element strides of x as (n, c, h, w)
    w: object
    ws: tuple                    # element strides of w as (k, c, r, s)
    b: object                    # bias, or None
    bs: int                      # element stride of the bias
    out: object


def _element_strides(a):
    """(array, element strides); a copy only when a byte stride is not a whole element."""
    item = a.itemsize
    if any(s % item for s in a.strides):
        a = _gpu_arrays.import_cupy().ascontiguousarray(a)
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


def _prepare(input, weight, bias, spec: ConvSpec) -> _Operands:
    """Zero-copy device views of the caller's arrays (never modified) and a poisoned-if-asked,
    contiguous output."""
    cupy = _gpu_arrays.import_cupy()
    x, xs = _element_strides(_gpu_arrays.to_cupy(input))
    w, ws = _element_strides(_gpu_arrays.to_cupy(weight))
    b, bs = (None, 0) if bias is None else _element_strides(_gpu_arrays.to_cupy(bias))
    out = cupy.empty(spec.output_shape_4d, dtype=spec.dtype)
    if _gpu_arrays.poison_enabled():
        out.fill(_gpu_arrays.poison_value(spec.dtype))
    return _Operands(x, _as_4d_strides(xs, spec.batched, spec.op), w,
                     _as_4d_strides(ws, True, spec.op), b, bs[0] if b is not None else 0, out)


def _i64(*values) -> tuple:
    return tuple(np.int64(v) for v in values)


def _launch(source: str, kernel: str, dtype, args: tuple, *, total: int | None = None,
            grid: tuple | None = None, block: tuple = (_BLOCK, 1, 1)) -> None:
    """Launch <kernel>_<dtype> from `source` on CuPy's current stream: either over `total` work
    items (1-D grid of _BLOCK threads, the kernels' grid-stride loops cover the rest) or on an
    explicit `grid`. CuPy raises on a failed launch."""
    if total is not None:
        grid = (max(1, min(_MAX_GRID_X, math.ceil(total / _BLOCK))), 1, 1)
    fn = _kernel(source, f"{kernel}_{dtype_name(dtype)}", dtype)
    fn(grid, block, args)
    _last_plan.setdefault("kernels", []).append(f"{kernel}_{dtype_name(dtype)}")


# ---------------------------------------------------------------------------------------------
# Algorithms

def _direct(ops: _Operands, spec: ConvSpec, naive: bool) -> None:
    n, k, p, q = spec.output_shape_4d
    kg = spec.k_per_group
    top, _, left, _ = spec.pad
    args = (ops.x, ops.w, ops.b if ops.b is not None else ops.out, ops.out) + _i64(
        n, spec.c, spec.h, spec.w, k, p, q, spec.r, spec.s, *ops.xs, *ops.ws, ops.bs, spec.groups,
        spec.stride[0], spec.stride[1], spec.dilation[0], spec.dilation[1], top, left,
        _PAD_MODES[spec.padding_mode], ops.b is not None)
    if naive:
        _launch("conv2d_direct.cu", "conv2d_direct_naive", spec.dtype, args, total=n * k * p * q)
        return
    kb = next(v for v in DIRECT_KBS if v >= min(kg, DIRECT_KBS[-1]))
    total = n * spec.groups * (-(-kg // kb)) * p * q
    _launch("conv2d_direct.cu", f"conv2d_direct_kb{kb}", spec.dtype, args, total=total)


def _gemm(variant: str, spec: ConvSpec, wmat, bmat, ops: _Operands, out, ncols: int,
          b_strides: tuple) -> None:
    """out[n, g*kg + m, p, q] = sum_i wmat[g*kg + m, i] * B_g[i, (n, p, q)] + bias, all groups.

    b_strides = (b_g, b_row, b_n, b_p, b_q): where B_g's element (i, j = (n, p, q)) lies.
    """
    kg, groups = spec.k_per_group, spec.groups
    crs = spec.c_per_group * spec.r * spec.s
    pq = spec.p * spec.q
    k = spec.output_shape_4d[1]
    bias = ops.b if ops.b is not None else out
    for g0 in range(0, groups, _MAX_GRID_Z):
        gz = min(_MAX_GRID_Z, groups - g0)
        args = (wmat, bmat, bias, out) + _i64(kg, ncols, crs, pq, spec.q, *b_strides, k * pq,
                                               ops.bs, ops.b is not None, g0)
        if variant == "naive":
            _launch("gemm.cu", "gemm_naive", spec.dtype, args,
                    grid=(math.ceil(ncols / 32), math.ceil(kg / 8), gz), block=(32, 8, 1))
        else:
            bm, bn, _, tm, tn = GEMM_TILES[spec.dtype]
            _launch("gemm.cu", "gemm_tiled", spec.dtype, args,
                    grid=(math.ceil(ncols / bn), math.ceil(kg / bm), gz),
                    block=((bm // tm) * (bn // tn), 1, 1))


def _cublas_gemm(spec: ConvSpec, wmat, cols, ops: _Operands, out, nb: int) -> None:
    """The comparison variant: the same columns multiplied by cupy.matmul (cuBLAS)."""
    cupy = _gpu_arrays.import_cupy()
    groups, kg = spec.groups, spec.k_per_group
    crs = spec.c_per_group * spec.r * spec.s
    ncols = nb * spec.p * spec.q
    a = wmat.reshape(groups, kg, crs)
    b = cols[:groups * crs * ncols].reshape(groups, crs, ncols)
    if spec.dtype.kind in "iu":            # exact int64 products and sums, as the kernels
        a, b = a.astype(np.int64), b.astype(np.int64)
    res = cupy.matmul(a, b)                # (groups, kg, nb*P*Q)
    res = res.reshape(groups, kg, nb, spec.p, spec.q).transpose(2, 0, 1, 3, 4).reshape(out.shape)
    if ops.b is not None:
        acc = np.dtype(np.float32) if spec.dtype == np.float16 else res.dtype
        res = res.astype(acc) + ops.b.astype(acc)[None, :, None, None]
    out[...] = res.astype(spec.dtype)      # integers wrap on the cast, as PyTorch


def _im2col(ops: _Operands, spec: ConvSpec, variant: str) -> None:
    cupy = _gpu_arrays.import_cupy()
    n = spec.n
    wmat = cupy.ascontiguousarray(ops.w)   # (K, cg*R*S) row-major; a copy only for odd views
    pq = spec.p * spec.q
    if _is_pointwise(spec) and variant != "cublas":
        # 1x1 unpadded: the input is the column matrix (channel rows, (n, p, q) columns).
        xs_n, xs_c, xs_h, xs_w = ops.xs
        sh, sw = spec.stride
        _gemm(variant, spec, wmat, ops.x, ops, ops.out, n * pq,
              (spec.c_per_group * xs_c, xs_c, xs_n, xs_h * sh, xs_w * sw))
        _last_plan.update(chunks=1, workspace_bytes=0)
        return
    per_image = _column_bytes_per_image(spec)
    nb = min(n, workspace_limit() // per_image)
    if nb == 0:
        _last_plan["fallback"] = (f"one image's columns ({per_image} bytes) exceed the workspace "
                                  f"limit; ran the direct kernel")
        _direct(ops, spec, naive=False)
        return
    crs_all = spec.c * spec.r * spec.s
    cols = cupy.empty(nb * crs_all * pq, dtype=spec.dtype)
    if _gpu_arrays.poison_enabled():
        cols.fill(_gpu_arrays.poison_value(spec.dtype))
    top, _, left, _ = spec.pad
    chunks = 0
    for n0 in range(0, n, nb):
        n1 = min(n, n0 + nb)
        ncols = (n1 - n0) * pq
        x = ops.x[n0:n1] if spec.batched else ops.x
        out = ops.out[n0:n1]
        _launch("im2col.cu", "im2col", spec.dtype,
                (x, cols) + _i64(n1 - n0, spec.c, spec.h, spec.w, spec.p, spec.q, spec.r, spec.s,
                                 *ops.xs, spec.stride[0], spec.stride[1], spec.dilation[0],
                                 spec.dilation[1], top, left, _PAD_MODES[spec.padding_mode]),
                total=spec.c * ncols)
        if variant == "cublas":
            _cublas_gemm(spec, wmat, cols, ops, out, n1 - n0)
        else:
            crs = spec.c_per_group * spec.r * spec.s
            _gemm(variant, spec, wmat, cols, ops, out, ncols, (crs * ncols, ncols, pq, spec.q, 1))
        chunks += 1
    _last_plan.update(chunks=chunks, workspace_bytes=int(cols.nbytes))


_RUNNERS = {
    "direct": lambda ops, spec: _direct(ops, spec, naive=False),
    "direct_naive": lambda ops, spec: _direct(ops, spec, naive=True),
    "im2col": lambda ops, spec: _im2col(ops, spec, "tiled"),
    "im2col_naive": lambda ops, spec: _im2col(ops, spec, "naive"),
    "im2col_cublas": lambda ops, spec: _im2col(ops, spec, "cublas"),
}


def run(input, weight, bias, spec: ConvSpec, algorithm: str):
    """The convolution on the input's CUDA device (the current one for NumPy input), on CuPy's
    current stream; returns the input's kind of array, shape spec.output_shape, dtype spec.dtype."""
    if algorithm not in _RUNNERS:
        raise ValueError(f"backend 'cupy' has no algorithm {algorithm!r}; expected one of "
                         f"{list(ALGORITHMS)}")
    cupy = _gpu_arrays.import_cupy()
    _last_plan.clear()
    _last_plan["algorithm"] = algorithm
    with cupy.cuda.Device(_gpu_arrays.input_device(input)):
        if spec.is_empty:                  # nothing to compute: no conversion, no launch
            out = cupy.empty(spec.output_shape, dtype=spec.dtype)
        else:
            ops = _prepare(input, weight, bias, spec)
            _RUNNERS[algorithm](ops, spec)
            out = ops.out.reshape(spec.output_shape)
    return _gpu_arrays.from_cupy(out, like=input)
