"""Implicit-GEMM convolution on the host: an explicit SIMD micro-kernel, no im2col buffer
(algorithm "implicit", version 0, the only one).

Why: numpy's BLAS (OpenBLAS here, held to its AVX2 kernels by OPENBLAS_CORETYPE=Haswell) reached
about half of what PyTorch's oneDNN gets from the same cores, and im2col adds a copy of the input
per tap. This path builds its own register-tiled kernel with LLVM (through numba, already a
dependency) for the target's widest vectors, and reads the input where it lies.

The layout is PhaseLayout's (layout.py): the padded input split into its stride phases
(N, C, PH, Hph, row_len), and each output plane seen on the "wide grid" of P rows of Wph columns,
flat index j = p*Wph + q, where tap t of channel c reads the layout at flat offset
    c*(PH*Hph*row_len) + tap_offset[t] + cs*j     (cs = 1: unit stride, any stride/dilation)
So per (image n, group g) the convolution is the GEMM
    C[m, j] = sum_kk W[g*kg + m, kk] * X[n, g*cg ..][red_off[kk] + cs*j],   kk = c*R*S + t,
whose right-hand matrix is never built: the kernel loads its rows straight from the layout.
Stride-2 convs with few output channels per group keep their columns whole (cs = 2, row_len =
2*Wph) and each tile is deinterleaved as it is packed (below), saving the column-phase copy.
An unpadded stride-1 input is its own layout (read in place); otherwise the layout is a copy,
either one for the whole input or, with many (image, group) pairs, one per task for its group
(_implicit_gemm_grouped), made in parallel and in cache.

Who computes what: one prange task per (image, group, block of tiles of NR wide columns, block of
MR-row panels of output channels), or per block of (image, group) pairs. For each tile (packed first
where the plan says) and each panel the micro-kernel keeps the MR x NR accumulator tile in vector
registers for the whole reduction: per kk it loads NV vectors of X, broadcasts MR weights and issues
MR*NV fused multiply-adds, then stores the tile once into a task-local buffer, from which the valid
runs (q < Q) of each output row are copied out with the bias (or, where every wide column is an
output, conv1d and kernels one column wide, a whole tile goes straight into the output rows with
the bias: stores_into_output). Rows past kg use a narrower kernel (mr < MR); a plane's last
tile, where fewer than NR wide columns remain, runs its whole panels on nv < NV vectors of
columns (_narrow_tile: bitwise the same results; in one process, old and new alternating, 2-core
AMD EPYC Zen 4, AVX-512, float32, batch 1: 1.06x on a 1x1 conv at 14 x 14, 1.07x on ResNeXt's
grouped 3x3 at 14 x 14, 1.03x on the 256-channel 3x3 there, 1.00-1.01x at 7 x 7, 28 x 28 and on
conv1d); the other wide columns q >= Q and past L are computed and dropped; reads past the layout's
end land in zero slack.

Packing. Unpacked, a tile's crs rows lie a channel (or tap) apart in the layout and each spans
two or three cache lines, so past a few hundred rows the tile no longer stays in L1 and every
panel reads it again from L2 through scattered lines; with col_stride 2 every panel would also
repeat the deinterleaving shuffles. Where packs() says so and a task runs two or more panels,
the task first copies each tile (_pack_columns: the micro-kernel's loads, deinterleaved) into
one contiguous crs x NR block (its own buffer, at most PACK_MAX_BYTES) and its panels run the
micro-kernel on that; with col_stride 2 it always does, one panel or more, so the micro-kernel
only reads unit-stride rows (and columns are deinterleaved only where that block fits the
bound: _deinterleave). Measured by a timing script, not the benchmark runner (in one process,
packed and unpacked plans of the benchmark's CPU cases alternating call by call, medians; 2-core
AMD EPYC Zen 3, AVX2, float32; the runner's full runs after it: bench/results/cpu/2026-12-02-*):
deinterleaving cases 1.09-1.30x (the ResNet-50 stem, stride-2 3x3 over 32 channels), conv1d
stride 2 over 64 channels 1.04-1.48x, tiles of 48-192 KiB 1.02-1.29x (1x1 over 512-2048
channels, 3x3 over 64, wav2vec's k3 over 512), smaller tiles 0.91-1.02x, larger 0.88-1.02x,
hence the bounds; a depthwise stride-2 3x3 (one panel, packed only to deinterleave) 0.93x.
Results are bitwise the same (the same products summed in the same order). The AVX-512 kernel
packs only to deinterleave: packing every tile of 2+ panels measured 0.91-0.97x (slower) on
all 12 cases of a timing script (2-core AMD EPYC Zen 4, packed and unpacked plans alternating in
one process: 3x3 layers of 32-512 channels at 7-56 pixels, 1x1 layers of 128-1024 channels,
conv1d of 64-512 channels), bitwise the same results.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..._spec import ConvSpec
from ..._threads import serialised_if_needed
from ..._workspace import ScratchBuffers
from .layout import PhaseLayout, fill_planes, phase_layout


def _target_features() -> str:
    """The CPU features numba compiles for: NUMBA_CPU_NAME/NUMBA_CPU_FEATURES when set (a portable
    cache, or the tests of the AVX2 variant), else the host's."""
    from numba.core import config
    if config.CPU_NAME and config.CPU_NAME != "host":
        return config.CPU_FEATURES or ""
    return llvm.get_host_cpu_features().flatten()


# One vector register: 512 bits where the target has AVX-512, else 256 (LLVM splits them further
# where needed). MR*NV accumulators + NV loaded vectors + a broadcast fit in the 32 (AVX-512) or
# 16 (AVX2) vector registers; 6 x 4 measured fastest of 8x2, 14x2, 6x4, 4x4, 8x3, 6x3, 5x4, 4x6,
# 3x8 and 5x5 on the benchmark's dense layers (AMD EPYC, AVX-512).
_VECTOR_BYTES = 64 if "+avx512f" in _target_features() else 32
MR, NV = (6, 4) if _VECTOR_BYTES == 64 else (4, 3)     # output channels x vectors of columns
PANELS = 16                # most MR-row panels per task: its tiles stay in L1
# ... but at most SHORT_PANELS where the reduction is short (crs <= SHORT_REDUCTION): a tile of
# a few dozen rows is cheap to read again for another task, while a task's output rows are
# written as that many concurrent streams of short runs (one per tile), which outran the store
# prefetchers: K=512 outputs of conv1d over 1 channel, 10 taps, 15991 samples took 5.40 ms in
# tasks of 15 panels (90 rows), 2.57 in tasks of 4. A timing script (2-core Xeon, AVX-512,
# float32, in one process, the two settings alternating, medians of 6 rounds; results bitwise
# the same), tasks of 4 panels against 16: 1.11-2.11x on seven conv1d/conv2d cases with crs
# 3-64 (wav2vec's first layer, 1 -> 512 channels, k10 stride 5: 1.17x), 0.99x at crs 72 and
# 0.84x on the 7x7 stem (crs 147), hence the bound.
SHORT_REDUCTION = 64
SHORT_PANELS = 4
# Packed tiles (crs x nr elements) of this many bytes are packed on the AVX2 kernel (module
# docstring, "Packing"): below, the unpacked rows stay in L1; above, the packed tile leaves L2.
PACK_MIN_BYTES = 48 << 10
PACK_MAX_BYTES = 192 << 10
TASK_FMAS = 16384          # vector FMAs worth a task of their own (about 5 us)


def lanes(dtype: np.dtype) -> int:
    return _VECTOR_BYTES // np.dtype(dtype).itemsize


def tile_columns(dtype: np.dtype) -> int:
    """NR: wide columns per micro-tile."""
    return NV * lanes(dtype)


def _load_columns(builder, xrow, col_stride: int, vec, nv: int = NV) -> list:
    """The nv vectors of nv*lanes wide columns from xrow: x[xrow + col_stride*j]; with
    col_stride 2 each is two unaligned loads and one shuffle keeping their even lanes."""
    width = vec.count
    i64 = ir.IntType(64)
    even = ir.Constant(ir.VectorType(ir.IntType(32), width), list(range(0, 2 * width, 2)))
    vectors = []
    for v in range(nv):
        parts = []
        for u in range(col_stride):
            load = builder.load(builder.bitcast(
                builder.gep(xrow, [ir.Constant(i64, (v * col_stride + u) * width)]),
                vec.as_pointer()))
            load.align = 4              # unaligned: wide columns start anywhere
            parts.append(load)
        vectors.append(parts[0] if col_stride == 1 else
                       builder.shuffle_vector(parts[0], parts[1], even))
    return vectors


def _vector_type(context, elem_type):
    return ir.VectorType(context.get_data_type(elem_type),
                         _VECTOR_BYTES * 8 // elem_type.bitwidth)


def _micro_kernel_codegen(rows: int, vectors: int, biased: bool):
    """The code of _micro_kernel (biased False) or of _micro_kernel_biased (the row's bias added
    to each sum as it is stored)."""

    def codegen(context, builder, signature, args):
        w, w_off, ldw, x, x_off, red_off, crs, c, c_off, ldc = args[2:12]
        elem_type = signature.args[2].dtype
        vec = _vector_type(context, elem_type)
        width = vec.count
        vptr = vec.as_pointer()
        i64 = ir.IntType(64)
        data = [context.make_array(signature.args[i])(context, builder, args[i]).data
                for i in (2, 5, 7, 9)]
        wbase = builder.gep(data[0], [w_off])
        xbase = builder.gep(data[1], [x_off])
        cbase = builder.gep(data[3], [c_off])
        fmuladd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vec, [vec, vec, vec]),
            f"llvm.fmuladd.v{width}f{elem_type.bitwidth}")
        splat_mask = ir.Constant(ir.VectorType(ir.IntType(32), width), [0] * width)

        def splat(value):
            return builder.shuffle_vector(
                builder.insert_element(ir.Constant(vec, None), value,
                                       ir.Constant(ir.IntType(32), 0)),
                ir.Constant(vec, None), splat_mask)

        crows = [builder.gep(cbase, [builder.mul(ir.Constant(i64, i), ldc)]) for i in range(rows)]
        cptrs = [[builder.bitcast(builder.gep(crows[i], [ir.Constant(i64, v * width)]), vptr)
                  for v in range(vectors)] for i in range(rows)]
        zero = ir.Constant(vec, [0.0] * width)
        acc = [[cgutils.alloca_once_value(builder, zero) for _ in range(vectors)]
               for _ in range(rows)]
        wrow = [builder.gep(wbase, [builder.mul(ir.Constant(i64, i), ldw)]) for i in range(rows)]
        with cgutils.for_range(builder, crs) as loop:
            kk = loop.index
            xv = _load_columns(builder, builder.gep(xbase, [builder.load(
                builder.gep(data[2], [kk]))]), 1, vec, vectors)
            for i in range(rows):
                wv = splat(builder.load(builder.gep(wrow[i], [kk])))
                for v in range(vectors):
                    builder.store(builder.call(fmuladd, [wv, xv[v], builder.load(acc[i][v])]),
                                  acc[i][v])
        if biased:
            b, b_off = args[12:14]
            bbase = builder.gep(context.make_array(signature.args[12])(context, builder, b).data,
                                [b_off])
        for i in range(rows):
            if biased:
                # Added after the sum, as the copy out of the task's buffer does: the same
                # rounding, so both routes give bitwise the same outputs.
                bv = splat(builder.load(builder.gep(bbase, [ir.Constant(i64, i)])))
            for v in range(vectors):
                value = builder.load(acc[i][v])
                if biased:
                    value = builder.fadd(value, bv)
                store = builder.store(value, cptrs[i][v])
                store.align = 4
        return context.get_dummy_value()

    return codegen


@intrinsic
def _micro_kernel(typingctx, mr, nv, w, w_off, ldw, x, x_off, red_off, crs, c, c_off, ldc):
    """c[c_off + i*ldc + j] = sum_kk w[w_off + i*ldw + kk] * x[x_off + red_off[kk] + j]
    for i < mr, j < nv*lanes, kk < crs; mr and nv (vectors of columns, NV for a whole tile) are
    literals. Accumulators live in registers (allocas that LLVM promotes); llvm.fmuladd fuses
    where the host has FMA."""
    if not isinstance(mr, types.IntegerLiteral) or not isinstance(nv, types.IntegerLiteral):
        return None
    sig = types.void(mr, nv, w, w_off, ldw, x, x_off, red_off, crs, c, c_off, ldc)
    return sig, _micro_kernel_codegen(mr.literal_value, nv.literal_value, False)


@intrinsic
def _micro_kernel_biased(typingctx, mr, nv, w, w_off, ldw, x, x_off, red_off, crs, c, c_off, ldc,
                         b, b_off):
    """_micro_kernel plus each row's bias, added as the tile is stored, so that it can be stored
    straight into the output: c[c_off + i*ldc + j] = sum + b[b_off + i]."""
    if not isinstance(mr, types.IntegerLiteral) or not isinstance(nv, types.IntegerLiteral):
        return None
    sig = types.void(mr, nv, w, w_off, ldw, x, x_off, red_off, crs, c, c_off, ldc, b, b_off)
    return sig, _micro_kernel_codegen(mr.literal_value, nv.literal_value, True)


@intrinsic
def _pack_columns(typingctx, cs, x, x_off, red_off, crs, dst):
    """dst[kk*NR + j] = x[x_off + red_off[kk] + cs*j] for kk < crs, j < NR = NV*lanes: one tile's
    rows copied contiguous, and deinterleaved when cs == 2 (a literal, 1 or 2), so that its
    panels read one sequential block (module docstring, "Packing")."""
    if not isinstance(cs, types.IntegerLiteral):
        return None
    col_stride = cs.literal_value
    assert col_stride in (1, 2)
    sig = types.void(cs, x, x_off, red_off, crs, dst)

    def codegen(context, builder, signature, args):
        _, x, x_off, red_off, crs, dst = args
        vec = _vector_type(context, signature.args[1].dtype)
        i64 = ir.IntType(64)
        data = [context.make_array(signature.args[i])(context, builder, args[i]).data
                for i in (1, 3, 5)]
        xbase = builder.gep(data[0], [x_off])
        with cgutils.for_range(builder, crs) as loop:
            kk = loop.index
            xrow = builder.gep(xbase, [builder.load(builder.gep(data[1], [kk]))])
            drow = builder.gep(data[2], [builder.mul(kk, ir.Constant(i64, NV * vec.count))])
            for v, value in enumerate(_load_columns(builder, xrow, col_stride, vec)):
                store = builder.store(value, builder.bitcast(
                    builder.gep(drow, [ir.Constant(i64, v * vec.count)]), vec.as_pointer()))
                store.align = 4
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(inline="always")
def _pack(cs, x, x_off, red_off, crs, dst):
    if cs == 1:
        _pack_columns(1, x, x_off, red_off, crs, dst)
    else:
        _pack_columns(2, x, x_off, red_off, crs, dst)


@numba.njit(inline="always")
def _tile(mr, w, w_off, ldw, x, x_off, red_off, crs, c, c_off, ldc):
    # One branch per literal row count: each call site compiles its own kernels.
    if mr == 6:
        _micro_kernel(6, NV, w, w_off, ldw, x, x_off, red_off, crs, c, c_off, ldc)
    elif mr == 5:
        _micro_kernel(5, NV, w, w_off, ldw, x, x_off, red_off, crs, c, c_off, ldc)
    elif mr == 4:
        _micro_kernel(4, NV, w, w_off, ldw, x, x_off, red_off, crs, c, c_off, ldc)
    elif mr == 3:
        _micro_kernel(3, NV, w, w_off, ldw, x, x_off, red_off, crs, c, c_off, ldc)
    elif mr == 2:
        _micro_kernel(2, NV, w, w_off, ldw, x, x_off, red_off, crs, c, c_off, ldc)
    else:
        _micro_kernel(1, NV, w, w_off, ldw, x, x_off, red_off, crs, c, c_off, ldc)


@numba.njit(inline="always")
def _tile_into(mr, w, w_off, ldw, x, x_off, red_off, crs, c, c_off, ldc, b, b_off):
    """_tile's whole tile (NV vectors of columns) plus the rows' biases, stored straight into
    the output (_run_tiles: where the tile's columns are all outputs)."""
    if mr == 6:
        _micro_kernel_biased(6, NV, w, w_off, ldw, x, x_off, red_off, crs, c, c_off, ldc, b, b_off)
    elif mr == 5:
        _micro_kernel_biased(5, NV, w, w_off, ldw, x, x_off, red_off, crs, c, c_off, ldc, b, b_off)
    elif mr == 4:
        _micro_kernel_biased(4, NV, w, w_off, ldw, x, x_off, red_off, crs, c, c_off, ldc, b, b_off)
    elif mr == 3:
        _micro_kernel_biased(3, NV, w, w_off, ldw, x, x_off, red_off, crs, c, c_off, ldc, b, b_off)
    elif mr == 2:
        _micro_kernel_biased(2, NV, w, w_off, ldw, x, x_off, red_off, crs, c, c_off, ldc, b, b_off)
    else:
        _micro_kernel_biased(1, NV, w, w_off, ldw, x, x_off, red_off, crs, c, c_off, ldc, b, b_off)


@numba.njit(inline="always")
def _narrow_tile(nv, w, w_off, ldw, x, x_off, red_off, crs, c, c_off, ldc):
    """A whole panel (MR rows) of nv < NV vectors of columns: a tile's last columns where fewer
    than NR remain (NV is 4 or 3)."""
    if nv == 1:
        _micro_kernel(MR, 1, w, w_off, ldw, x, x_off, red_off, crs, c, c_off, ldc)
    elif nv == 2:
        _micro_kernel(MR, 2, w, w_off, ldw, x, x_off, red_off, crs, c, c_off, ldc)
    else:
        _micro_kernel(MR, 3, w, w_off, ldw, x, x_off, red_off, crs, c, c_off, ldc)


@numba.njit(inline="always")
def _any_tile(mr, nv, w, w_off, ldw, x, x_off, red_off, crs, c, c_off, ldc):
    """_tile, or _narrow_tile where a whole panel needs fewer than NV vectors of columns."""
    if nv < NV and mr == MR:
        _narrow_tile(nv, w, w_off, ldw, x, x_off, red_off, crs, c, c_off, ldc)
    else:
        _tile(mr, w, w_off, ldw, x, x_off, red_off, crs, c, c_off, ldc)


@numba.njit(inline="always", boundscheck=False)
def _run_tiles(x, x_base, red_off, col_stride, w, bias, g, kg, img, out_flat, k, p_out, q_out,
               wph, nr, tile_lo, tile_hi, first, last, tiles, pack, into_output):
    """Tiles [tile_lo, tile_hi) x panels [first, last) of group g of image img, reading the
    layout x from x_base: the kernel into `tiles`, then each tile's valid runs (q < Q) plus the
    bias into the output rows (wide columns q >= Q are dropped)."""
    crs = red_off.shape[0]
    length = (p_out - 1) * wph + q_out
    # Packed: every tile where it deinterleaves (col_stride 2: the micro-kernel reads unit-stride
    # rows only), else where the plan says and the task runs several panels (one panel would
    # read its packed tile once).
    packed = col_stride == 2 or (pack and last - first >= 2)
    if packed:
        # One packed tile (crs x nr) and its offsets kk*nr.
        block = np.empty(crs * nr, x.dtype)
        block_off = np.empty(crs, np.int64)
        for kk in range(crs):           # a loop, not arange * nr: parfors would take that
            block_off[kk] = kk * nr
    lane = nr // NV
    plane = p_out * q_out
    for tile in range(tile_lo, tile_hi):
        j0 = tile * nr
        j_end = min(j0 + nr, length)
        nv = (j_end - j0 + lane - 1) // lane        # vectors holding valid columns
        x_off = x_base + col_stride * j0
        if into_output and j_end - j0 == nr:
            if packed:
                _pack(col_stride, x, x_off, red_off, crs, block)
                for panel in range(first, last):
                    k0 = g * kg + panel * MR
                    _tile_into(min(MR, kg - panel * MR), w, k0 * crs, crs, block, 0, block_off,
                               crs, out_flat, (img * k + k0) * plane + j0, plane, bias, k0)
            else:
                for panel in range(first, last):
                    k0 = g * kg + panel * MR
                    _tile_into(min(MR, kg - panel * MR), w, k0 * crs, crs, x, x_off, red_off,
                               crs, out_flat, (img * k + k0) * plane + j0, plane, bias, k0)
            continue
        # Two call sites of _tile, not one on a chosen source: a read-only input and the task's
        # block are different numba types, which one variable cannot hold.
        if packed:
            _pack(col_stride, x, x_off, red_off, crs, block)
            for panel in range(first, last):
                k0 = g * kg + panel * MR
                _any_tile(min(MR, kg - panel * MR), nv, w, k0 * crs, crs, block, 0, block_off,
                          crs, tiles, (panel - first) * MR * nr, nr)
        else:
            for panel in range(first, last):
                k0 = g * kg + panel * MR
                _any_tile(min(MR, kg - panel * MR), nv, w, k0 * crs, crs, x, x_off, red_off,
                          crs, tiles, (panel - first) * MR * nr, nr)
        for panel in range(first, last):
            k0 = g * kg + panel * MR
            mr = min(MR, kg - panel * MR)
            j = j0
            while j < j_end:
                p = j // wph
                q = j - p * wph
                if q >= q_out:
                    j = (p + 1) * wph
                    continue
                run = min(q_out - q, j_end - j)
                for i in range(mr):
                    b = bias[k0 + i]
                    # Slices, then a plain range loop: no wraparound checks, so it vectorises.
                    start = ((img * k + k0 + i) * p_out + p) * q_out + q
                    dst = out_flat[start:start + run]
                    t0 = ((panel - first) * MR + i) * nr + j - j0
                    src = tiles[t0:t0 + run]
                    for e in range(run):
                        dst[e] = src[e] + b
                j += run


@numba.njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def _implicit_gemm_kernel(x, image_stride, group_stride, red_off, col_stride, w, bias, groups,
                          out, wph, panels_per_task, tiles_per_task, nr, pack, into_output):
    """out (N, K, P, Q) + bias[k] from the whole layout x (module docstring). One task per
    (image, group, block of tiles, block of panels)."""
    n_images, k, p_out, q_out = out.shape
    kg = k // groups
    ntiles = ((p_out - 1) * wph + q_out + nr - 1) // nr
    n_tile_blocks = (ntiles + tiles_per_task - 1) // tiles_per_task
    n_panels = (kg + MR - 1) // MR
    n_blocks = (n_panels + panels_per_task - 1) // panels_per_task
    out_flat = out.reshape(out.size)
    for task in numba.prange(n_images * groups * n_tile_blocks * n_blocks):
        block = task % n_blocks
        rest = task // n_blocks
        tile_block = rest % n_tile_blocks
        rest //= n_tile_blocks
        g = rest % groups
        img = rest // groups
        first = block * panels_per_task
        last = min(n_panels, first + panels_per_task)
        tiles = np.empty((last - first) * MR * nr, out.dtype)
        _run_tiles(x, img * image_stride + g * group_stride, red_off, col_stride, w, bias, g, kg,
                   img, out_flat, k, p_out, q_out, wph, nr, tile_block * tiles_per_task,
                   min(ntiles, (tile_block + 1) * tiles_per_task), first, last, tiles, pack,
                   into_output)


@numba.njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def _implicit_gemm_grouped_kernel(x4, red_off, col_stride, w, bias, groups, out, row_phases,
                                  col_phases, stride_h, col_step, top, left, hph, row_len, wph,
                                  nr, n_blocks, pack, into_output):
    """out (N, K, P, Q) + bias[k] with one task per (image, group): the task lays out its own
    group's channels of the unpadded x4 (N, C, H, W) in a task-local buffer (fill_planes) and
    runs all of the group's tiles on it, so the copy runs in parallel and stays in cache."""
    n_images, k, p_out, q_out = out.shape
    kg = k // groups
    cg = x4.shape[1] // groups
    ntiles = ((p_out - 1) * wph + q_out + nr - 1) // nr
    n_panels = (kg + MR - 1) // MR
    plane_len = row_phases.shape[0] * col_phases.shape[0] * hph * row_len
    # The zero slack after the planes takes the reads of the last tile's columns past L.
    slack = red_off.max() + col_stride * ntiles * nr + 1 - cg * plane_len
    out_flat = out.reshape(out.size)
    # Blocks of (image, group) pairs per task: buffers are allocated once per block.
    pairs = n_images * groups
    per_block = (pairs + n_blocks - 1) // n_blocks
    for block in numba.prange(n_blocks):
        buf = np.empty(cg * plane_len + max(slack, 0), out.dtype)
        buf[cg * plane_len:] = 0
        tiles = np.empty(n_panels * MR * nr, out.dtype)
        for pair in range(block * per_block, min(pairs, (block + 1) * per_block)):
            g = pair % groups
            img = pair // groups
            fill_planes(x4, img, g * cg, cg, buf, row_phases, col_phases, stride_h, col_step, top,
                        left, hph, row_len)
            _run_tiles(buf, 0, red_off, col_stride, w, bias, g, kg, img, out_flat, k, p_out,
                       q_out, wph, nr, 0, ntiles, 0, n_panels, tiles, pack, into_output)


# Serialised where the threading layer needs it (conv/_threads.py).
_implicit_gemm = serialised_if_needed(_implicit_gemm_kernel)
_implicit_gemm_grouped = serialised_if_needed(_implicit_gemm_grouped_kernel)


def _deinterleave(spec: ConvSpec) -> bool:
    """Keep stride-2 columns whole and deinterleave them per tile, instead of copying both
    column phases, when few output channels share each input element (<= 64 per group): then
    the copy costs about as much as the GEMM. With more, the kernel's doubled loads cost more
    (A/B timings in one process, when every panel deinterleaved its own loads: 32-64 channels
    10-20% faster, 128-1024 channels 4-50% slower; 1x1 convs read one phase, so they always
    split). Since tiles are deinterleaved once as they are packed, one case was re-timed:
    wav2vec's k3 stride 2 over 512 channels, 1.05x deinterleaved, within noise; kept). Not
    where the packed tile would exceed PACK_MAX_BYTES (crs over 2048 on AVX2)."""
    (_, stride_w), (_, dil_w) = spec.stride, spec.dilation
    both_phases = stride_w == 2 and spec.s > 1 and dil_w % 2 == 1
    # Deinterleaved tiles are always packed: their block (packed_tile_bytes) is a per-task
    # buffer, held to PACK_MAX_BYTES like every packed tile.
    fits = packed_tile_bytes(spec.c_per_group * spec.r * spec.s) <= PACK_MAX_BYTES
    return both_phases and spec.k_per_group <= 64 and fits


def layout_is_input(spec: ConvSpec, layout: PhaseLayout) -> bool:
    """Whether the phase layout of `spec`, element for element, IS the raw input (N, C, H, W) in
    C order, so that a C-contiguous input of the compute dtype can be read in place.

    Proof. The layout holds, for phase (a, b) (a in row_phases, b in col_phases), at (n, c, i, j)
    with i < hph, j < row_len, the padded input at row i*sh + a and column j*col_step + b, i.e.
    x[n, c, i*sh + a - top, j*col_step + b - left] when that is inside x, else zero (zero padding)
    or a value of the materialised padding (other modes, which source() pads first). It equals
    x[n, c, i, j] for every element, in the same flat order, iff
      (1) there is one phase: the phase lists always contain 0 (the tap r = 0, s = 0), so they
          are exactly [0] and [0]: a = b = 0;
      (2) no padding is materialised first: padding_mode is 'zeros' or every pad is 0;
      (3) rows: hph == H and the row map i -> i*sh - top is the identity on [0, H): top == 0,
          and sh == 1 unless H == 1 (one row: only i = 0 is mapped);
      (4) columns likewise: row_len == W, left == 0, and col_step == 1 unless W == 1.
    (3) and (4) give a bijection of the layout onto x with no zero element, so nothing outside x
    is ever stored; the layout's strides are then (C*H*W, H*W, H*W, W, 1), x's C order. Comparing
    shapes alone (as an earlier rule did) misses (3)/(4): a stride-2 plane padded to twice its
    width has the input's size but holds every other column of the padded row.
    Checked exhaustively over small shapes in tests/test_cpu_implicit.py."""
    top, _, left, _ = spec.pad
    one_phase = layout.row_phases == [0] and layout.col_phases == [0]
    nothing_materialised = spec.padding_mode == "zeros" or not any(spec.pad)
    rows = layout.hph == spec.h and top == 0 and (layout.sh == 1 or spec.h == 1)
    cols = layout.row_len == spec.w and left == 0 and (layout.col_step == 1 or spec.w == 1)
    return one_phase and nothing_materialised and rows and cols


def last_element_read(spec: ConvSpec, channel_stride: int, red_off: np.ndarray, col_stride: int,
                      ntiles: int, nr: int) -> int:
    """The flat index, from the layout's start, of the last element any micro-kernel load touches.

    The last (image, group) starts at base = ((N-1)*C + (G-1)*C/G) * channel_stride; its last tile
    starts at wide column j0 = (ntiles-1)*NR, at x_off = base + col_stride*j0. For reduction row
    kk the micro-kernel (or the packing, _pack_columns, with the same loads) loads NV*col_stride
    vectors of `lanes` elements each from
    x_off + red_off[kk] + (v*col_stride + u)*lanes (v < NV, u < col_stride): the span
    [x_off + red_off[kk], x_off + red_off[kk] + col_stride*NR). So the last element is
    base + red_off.max() + col_stride*ntiles*NR - 1. (With col_stride 2, the deinterleaving
    kernel's second load ends one element after col_stride*(ntiles*NR - 1), the last element it
    keeps: an earlier formula stopped there and read one element past the caller's array.)"""
    base = ((spec.n - 1) * spec.c + (spec.groups - 1) * spec.c_per_group) * channel_stride
    return base + int(red_off.max()) + col_stride * ntiles * nr - 1


class _Plan(NamedTuple):
    """What conv2d_implicit derives from the spec alone (cached: it costs more than a small conv)."""
    layout: PhaseLayout
    col_stride: int
    channel_stride: int
    red_off: np.ndarray             # read-only
    total: int                      # elements of the layout
    last_read: int                  # the last element any tile reads (may pass total)
    in_place: bool                  # the layout is the input itself (if C-contiguous, same dtype)
    panels_per_task: int
    tiles_per_task: int
    grouped: bool                   # one task per (image, group), each laying out its own input
    pack: bool                      # tasks of 2+ panels pack each tile first (packs())
    into_output: bool               # whole tiles stored straight into the output rows


def packs(crs: int, col_stride: int) -> bool:
    """Whether tasks pack each tile (module docstring, "Packing"): always to deinterleave
    (col_stride 2, any task); otherwise, in tasks of two or more panels, on the AVX2 kernel when
    the packed tile (crs x nr) is PACK_MIN_BYTES to PACK_MAX_BYTES. The AVX-512 kernel packs
    only to deinterleave (packing measured slower there: module docstring)."""
    if col_stride == 2:
        return True
    tile = packed_tile_bytes(crs)
    return _VECTOR_BYTES == 32 and PACK_MIN_BYTES <= tile <= PACK_MAX_BYTES


def packed_tile_bytes(crs: int) -> int:
    """Bytes of one packed tile (crs x nr elements: nr elements of any dtype are NV vectors); a
    packing task also holds crs int64 offsets."""
    return crs * NV * _VECTOR_BYTES


def stores_into_output(spec: ConvSpec, layout: PhaseLayout) -> bool:
    """Whether every wide column of a plane is an output: one output row (conv1d), or output
    rows as long as the wide grid's (wph == Q: kernels one column wide, as 1x1 convs, at any
    stride and padding: ceil(Wp / sw) both ways). Then wide column j is the plane's output
    element j, and a tile of NR whole columns is stored by the micro-kernel straight into its
    output rows with the bias (_tile_into) instead of into the task's buffer and copied out; the
    bias is added after the sum either way, so the results are bitwise the same. In one process,
    the two ways alternating (2-core Xeon, AVX-512, float32, medians of 6 rounds): 1.07-1.26x on
    conv1d (wav2vec's two first layers, TextCNN, WaveNet, depthwise) and 1x1 layers at 56 x 56,
    1.00-1.03x on 1x1 layers of 256-1024 channels."""
    return spec.p == 1 or layout.wph == spec.q


@functools.lru_cache(maxsize=256)
def _plan(spec: ConvSpec, nr: int, threads: int) -> _Plan:
    layout = phase_layout(spec, split_columns=not _deinterleave(spec))
    col_stride = layout.sw // layout.col_step            # 2 when the kernel deinterleaves
    channel_stride = layout.n_phases * layout.hph * layout.row_len
    length = (spec.p - 1) * layout.wph + spec.q                  # wide columns of one plane
    ntiles = -(-length // nr)
    red_off = (np.arange(spec.c_per_group, dtype=np.int64)[:, None] * channel_stride
               + layout.taps[None, :]).reshape(-1)
    red_off.flags.writeable = False
    total = spec.n * spec.c * channel_stride
    last_read = last_element_read(spec, channel_stride, red_off, col_stride, ntiles, nr)
    in_place = layout_is_input(spec, layout) and last_read < total
    # Tasks: at most PANELS panels each (their tiles stay in L1), then as many tiles as keep
    # about TASK_FMAS vector FMAs per task (a depthwise tile is a few dozen: one per task would
    # be all overhead), but 4 tasks per thread where the conv is big enough for that.
    n_panels = -(-spec.k_per_group // MR)
    crs = len(red_off)
    panel_blocks = -(-n_panels // (PANELS if crs > SHORT_REDUCTION else SHORT_PANELS))
    panels_per_task = -(-n_panels // panel_blocks)
    tile_fmas = spec.c_per_group * spec.r * spec.s * NV * min(MR, spec.k_per_group) * panels_per_task
    tiles_per_task = max(1, min(ntiles, TASK_FMAS // tile_fmas))
    while tiles_per_task > 1 and spec.n * spec.groups * -(-ntiles // tiles_per_task) \
            * panel_blocks < 4 * threads:
        tiles_per_task //= 2
    tile_tasks = spec.n * spec.groups * -(-ntiles // tiles_per_task)
    if tile_tasks * panel_blocks < 4 * threads:
        # Few tiles (small images, batch 1): split the panels further instead.
        splits = max(panel_blocks, min(n_panels, -(-4 * threads // tile_tasks)))
        panels_per_task = -(-n_panels // splits)
    # With enough (image, group) pairs for every thread, each task lays out its own group's
    # channels (in parallel, in cache) instead of one serial copy of the whole input first.
    grouped = spec.groups > 1 and spec.n * spec.groups >= 4 * threads
    pack = packs(len(red_off), col_stride)
    return _Plan(layout, col_stride, channel_stride, red_off, total, last_read, in_place,
                 panels_per_task, tiles_per_task, grouped, pack,
                 stores_into_output(spec, layout))


def conv2d_implicit(x4: np.ndarray, w: np.ndarray, bias, out: np.ndarray, spec: ConvSpec,
                    scratch: ScratchBuffers) -> None:
    """out (N, K, P, Q) = the convolution of x4 (N, C, H, W) by w (K, C/G, R, S) plus bias (K,)
    or None; out.dtype is float32 or float64 (x4, w and bias are converted to it)."""
    dtype = out.dtype
    plan = _plan(spec, tile_columns(dtype), numba.get_num_threads())
    wflat = np.ascontiguousarray(w, dtype=dtype).reshape(-1)
    bias = np.zeros(spec.k, dtype) if bias is None else np.ascontiguousarray(bias, dtype=dtype)
    layout = plan.layout
    if plan.grouped and not (plan.in_place and x4.dtype == dtype and x4.flags.c_contiguous):
        x4, top, left = layout.source(x4)
        _implicit_gemm_grouped(
            x4.astype(dtype, copy=False), plan.red_off, plan.col_stride, wflat, bias,
            spec.groups, out, layout.row_phase_array, layout.col_phase_array, layout.sh,
            layout.col_step, top, left, layout.hph, layout.row_len, layout.wph, tile_columns(dtype),
            min(spec.n * spec.groups, 8 * numba.get_num_threads()), plan.pack,
            plan.into_output)
        return
    if plan.in_place and x4.dtype == dtype and x4.flags.c_contiguous:
        flat = x4.reshape(-1)               # read the input where it lies
    else:
        # A copy in the layout, plus zero slack for the reads past L of the last tile.
        flat = scratch.get("phases", (max(plan.total, plan.last_read + 1),), dtype)
        flat[plan.total:] = 0
        plan.layout.fill(x4, flat[:plan.total].reshape(plan.layout.shape))
    _implicit_gemm(flat, spec.c * plan.channel_stride, spec.c_per_group * plan.channel_stride,
                   plan.red_off, plan.col_stride, wflat, bias, spec.groups, out, plan.layout.wph,
                   plan.panels_per_task, plan.tiles_per_task, tile_columns(dtype), plan.pack,
                   plan.into_output)
