"""Winograd F(m x m, 3x3) and F(m, 3) with the transforms in SIMD lanes across channels:
winograd.py's channels-last pipeline, used for every conv without groups in float32 and float64
(and float16, computed in float32) whose U fits the cap (winograd.py's docstring has the
algorithm, the matrices and the accuracy; this file how the work is laid out). conv1d is the
same with tiles of one row: patches of alpha elements, alpha points, B^T d and A^T M.

Why: winograd.py's point-major pipeline (V (points, C, T)) runs its transforms in scalar float64
code, load/store-bound at about 0.4 ns an output; its call stayed level with the implicit GEMM on
the dense ResNet-50 layers. Here each transform works on whole vectors of `lanes` channels,
loaded and stored contiguously (straight-line LLVM code from the intrinsics below), and the point
GEMMs are the transposed products, which read and write those layouts as they lie:
    V[t, e, c]  = (B^T d B)[e] of tile t's patch of channel c     (T, points, Cv)
    M[t, e, k]  = sum_c V[t, e, c] * U[e, c, k]                    (T, points, Kp)
    out tile    = A^T M[t, :, k] A
U[e, c, k] is winograd.py's U transposed, its columns padded with zeros to Kp (a multiple of the
micro-kernel's NR columns); Cv = C rounded up to whole vectors (V's extra channels are zero and
never read: the GEMM's reduction stops at C).

Who computes what:
- `_input_transform_kernel`: one task per (image, row of tiles, block of channel vectors) of the
  batch. The task gathers the alpha padded input rows its tiles read (through winograd.py's
  index maps: every padding mode, never materialised) into a channels-last band (alpha, width,
  span): lanes x lanes blocks of (channels x columns of the rows' longest run of consecutive
  input columns) transposed in registers (`_transpose_block`), the rest element by element.
  It counts the band's inf and nan (a branch-free count, vectorised); then `_input_tile`
  transforms each tile's alpha x alpha patch of one channel vector into V[t, :, c..c+lanes].
  A batch whose bands held any is transformed again from a copy with them read as zero, and
  winograd.py adds their terms exactly.
- `_gemm_kernel`: one task per (point, NR-column tile of output channels, block of MR-row panels
  of tiles): implicit.py's micro-kernel with U's tile (C x NR) as its right-hand rows, reused
  across the task's panels, and MR tiles' rows of V as the broadcast operand.
- `_output_transform_kernel`: one task per (image, row of tiles, block of output-channel
  vectors): `_output_tile` turns M[t, :, k..k+lanes] into the tile's m x m outputs of those
  channels in a row buffer (m, tiles*m, span), transposed back (lanes x lanes blocks in
  registers, the rest element by element) into out[n, k, p, q] (valid p < P, q < Q, k < K).

Fused (`_fused_kernel`, where U is at most winograd.FUSED_U_BYTES): one parallel kernel for the
whole conv, one task per (image, row of tiles, run of fused_tiles() tiles): the task's band and
transforms, the point GEMMs of its tiles (every point and column tile, U's tile reused across
its MR-row panels) and its output transforms, with its V and M (at most FUSED_BYTES together) in
task-local buffers that stay in L2. Every task reads all of U (from L3 where it is small), where
the batches above stream V and M through memory between three parallel kernels. Measured in the
same script (implicit / batches / fused, ms): 64 x 56 x 56 -> 64 2.43 / 1.21 / 0.69 (another
run: 1.52 / 1.58 / 0.93), 128 x 28 x 28 -> 128 1.35 / 0.83 / 0.83, 2 x 32 x 56 x 56 -> 32
0.85 / 0.78 / 0.65, 8 x 64 x 56 x 56 -> 64 11.5 / 6.8 / 5.6, conv1d 2 x 64 x 2048 -> 64 0.77 /
0.81 / 0.58, TextCNN 3.02 / 2.97 / 2.37, 1 x 512 x 1600 -> 512 13.7 / 10.3 / 9.9; with U of
16.7 MB (512 x 7 x 7 -> 512, F(2x2)) the fused kernel took 8.3 ms against the batches' 5.5.

Precision: the transforms run in the compute dtype's lanes (float32 for float32), not in float64
as the point-major pipeline's: scripts/winograd_accuracy.py measured float32 F(4x4) at most 0.19
of the tests' tolerance (0.17 with float64 transforms; C = 3 .. 512), because the error is
dominated by V and U rounded to float32, which both pipelines do. F(2x2) stayed at 0.013.

Speed (a timing script, not the benchmark runner: float32, batch 1 unless said, 2-core AMD EPYC
Zen 4 with AVX-512, the pipelines and the implicit GEMM alternating in blocks of calls in one
process, medians; the machine's speed drifted by up to 2x over minutes, the ratios less):
    64 x 56 x 56 -> 64       implicit 1.42 ms, point-major 1.72, channels-last 0.90
    128 x 28 x 28 -> 128     1.41, 1.21, 0.81
    256 x 14 x 14 -> 256     1.66, 1.93, 1.71   (U 9.4 MB and the weights' check 2.4 MB x 2 a
                                                 call, against the implicit GEMM's 2.4 MB)
    512 x 7 x 7 -> 512       1.76, 6.75, 4.87
    2 x 32 x 56 x 56 -> 32   0.81, 1.30, 0.93   (K = 32: half of each NR = 64 column tile)
conv1d (the same script, implicit / point-major / channels-last): 2 x 64 x 2048 -> 64 1.17 /
2.03 / 1.44 ms, TextCNN's 16 x 300 x 128 -> 100 2.80 / 4.00 / 3.40, 1 x 512 x 1600 -> 512 13.0 /
13.7 / 10.3, 8 x 256 x 1000 -> 256 17.6 / 16.2 / 11.5 (a slow spell of the machine: the first
case took 0.63 ms in the implicit GEMM earlier that hour).
The dispatch table decides which runs (conv/dispatch_tables/cpu.json, from the runner).
"""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ..._threads import serialised_if_needed
from .implicit import MR, _any_tile, _vector_type, lanes, tile_columns

# Lavin & Gray's B^T and A^T, their one definition (winograd.py has G and the weight transform; the
# intrinsics below need these as Python numbers at compile time).
BT = {
    2: ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
    4: ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
        (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1)),
}
AT = {
    2: ((1, 1, 1, 0), (0, 1, -1, -1)),
    4: ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1)),
}
FUSED_BYTES = 256 << 10   # V and M of one fused task: with U's tile and the band, within L2
PANELS = 16            # MR-row panels per GEMM task (the broadcast rows of V stream through)
TRANSFORM_TASKS = 8    # transform tasks per thread, at least (blocks of channel vectors)


def _combine(builder, row, values, wide):
    """sum_j row[j] * values[j] for a row of small integers: adds and subtracts, a multiply
    only where |row[j]| > 1."""
    acc = None
    for coefficient, value in zip(row, values):
        if coefficient == 0:
            continue
        term = value if abs(coefficient) == 1 else builder.fmul(
            ir.Constant(wide, [float(abs(coefficient))] * wide.count), value)
        if acc is None:
            acc = term if coefficient > 0 else builder.fsub(
                ir.Constant(wide, [0.0] * wide.count), term)
        else:
            acc = builder.fadd(acc, term) if coefficient > 0 else builder.fsub(acc, term)
    return acc if acc is not None else ir.Constant(wide, [0.0] * wide.count)


def _sandwich(builder, left, right, element, wide, emit):
    """emit(i, j, (left @ D @ right^T)[i, j]) for every i, j, where element(a, b) returns D[a, b]
    as a wide vector (a load: called again for every output row that needs it, so that only
    one row's values are live: fewer registers than the whole patch, no spills)."""
    for i, row in enumerate(left):
        down = [_combine(builder, row, [element(a, b) if row[a] else None
                                        for a in range(len(row))], wide)
                for b in range(len(right[0]))]
        for j, weights in enumerate(right):
            emit(i, j, _combine(builder, weights, down, wide))


def _vector_io(context, builder, elem_type):
    """(vec, i64, load(ptr, offset), store(value, ptr, offset)): unaligned vectors of the
    element type."""
    vec = _vector_type(context, elem_type)
    i64 = ir.IntType(64)

    def load(base, offset):
        value = builder.load(builder.bitcast(builder.gep(base, [offset]), vec.as_pointer()))
        value.align = 4
        return value

    def store(value, base, offset):
        instr = builder.store(value, builder.bitcast(builder.gep(base, [offset]),
                                                     vec.as_pointer()))
        instr.align = 4
    return vec, i64, load, store


def _left(matrix, dims):
    """The matrix applied down a tile's rows: itself (2-D), or the 1 x 1 identity (1-D: a tile is
    one row)."""
    return matrix if dims == 2 else ((1,),)


@intrinsic
def _input_tile(typingctx, m, dims, src, src_off, row_stride, col_stride, dst, dst_off,
                dst_stride):
    """dst[dst_off + (i*alpha + j)*dst_stride + l] = (B^T d B)[i, j] for l < lanes, where
    d[i, j] = src[src_off + i*row_stride + j*col_stride + l]: one tile's patch of one vector
    of channels, transformed in lanes of its dtype (dims 1: d is one row, the result B^T d,
    dst[dst_off + j*dst_stride + l]). m (2 or 4) and dims (1 or 2) are literals."""
    if not isinstance(m, types.IntegerLiteral) or not isinstance(dims, types.IntegerLiteral):
        return None
    bt = BT[m.literal_value]
    left = _left(bt, dims.literal_value)
    alpha = len(bt)
    sig = types.void(m, dims, src, src_off, row_stride, col_stride, dst, dst_off, dst_stride)

    def codegen(context, builder, signature, args):
        _, _, src, src_off, row_stride, col_stride, dst, dst_off, dst_stride = args
        wide, i64, load, store = _vector_io(context, builder, signature.args[2].dtype)
        sdata = context.make_array(signature.args[2])(context, builder, src).data
        ddata = context.make_array(signature.args[6])(context, builder, dst).data
        def element(i, j):
            return load(sdata, builder.add(src_off, builder.add(
                builder.mul(ir.Constant(i64, i), row_stride),
                builder.mul(ir.Constant(i64, j), col_stride))))

        def emit(i, j, value):
            store(value, ddata, builder.add(dst_off, builder.mul(
                ir.Constant(i64, i * alpha + j), dst_stride)))
        _sandwich(builder, left, bt, element, wide, emit)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _output_tile(typingctx, m, dims, src, src_off, src_stride, dst, dst_off, row_stride,
                 col_stride):
    """dst[dst_off + i*row_stride + j*col_stride + l] = (A^T M A)[i, j] for i, j < m, l < lanes,
    where M[a, b] = src[src_off + (a*alpha + b)*src_stride + l]: one tile's outputs of one
    vector of output channels, in lanes of its dtype (dims 1: M is one row, the result A^T M,
    i = 0). m (2 or 4) and dims (1 or 2) are literals."""
    if not isinstance(m, types.IntegerLiteral) or not isinstance(dims, types.IntegerLiteral):
        return None
    at = AT[m.literal_value]
    left = _left(at, dims.literal_value)
    alpha = len(at[0])
    sig = types.void(m, dims, src, src_off, src_stride, dst, dst_off, row_stride, col_stride)

    def codegen(context, builder, signature, args):
        _, _, src, src_off, src_stride, dst, dst_off, row_stride, col_stride = args
        wide, i64, load, store = _vector_io(context, builder, signature.args[2].dtype)
        sdata = context.make_array(signature.args[2])(context, builder, src).data
        ddata = context.make_array(signature.args[5])(context, builder, dst).data
        def element(a, b):
            return load(sdata, builder.add(src_off, builder.mul(
                ir.Constant(i64, a * alpha + b), src_stride)))

        def emit(i, j, value):
            store(value, ddata, builder.add(dst_off, builder.add(
                builder.mul(ir.Constant(i64, i), row_stride),
                builder.mul(ir.Constant(i64, j), col_stride))))
        _sandwich(builder, left, at, element, wide, emit)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _transpose_block(typingctx, src, src_off, src_stride, dst, dst_off, dst_stride):
    """dst[dst_off + j*dst_stride + l] = src[src_off + l*src_stride + j] for j, l < lanes: a
    square block moved from rows (channels) to columns in registers (log2(lanes) rounds of
    shuffles, each swapping the off-diagonal blocks of one size)."""
    sig = types.void(src, src_off, src_stride, dst, dst_off, dst_stride)

    def codegen(context, builder, signature, args):
        src, src_off, src_stride, dst, dst_off, dst_stride = args
        vec = _vector_type(context, signature.args[0].dtype)
        n = vec.count
        i64, i32 = ir.IntType(64), ir.IntType(32)
        sdata = context.make_array(signature.args[0])(context, builder, src).data
        ddata = context.make_array(signature.args[3])(context, builder, dst).data
        rows = []
        for lane in range(n):
            value = builder.load(builder.bitcast(builder.gep(sdata, [builder.add(
                src_off, builder.mul(ir.Constant(i64, lane), src_stride))]), vec.as_pointer()))
            value.align = 4
            rows.append(value)
        k = 1
        while k < n:
            low = ir.Constant(ir.VectorType(i32, n), [j if j & k == 0 else n + j - k
                                                      for j in range(n)])
            high = ir.Constant(ir.VectorType(i32, n), [j + k if j & k == 0 else n + j
                                                       for j in range(n)])
            new = list(rows)
            for i in range(n):
                if i & k == 0:
                    new[i] = builder.shuffle_vector(rows[i], rows[i + k], low)
                    new[i + k] = builder.shuffle_vector(rows[i], rows[i + k], high)
            rows = new
            k *= 2
        for j, value in enumerate(rows):
            store = builder.store(value, builder.bitcast(builder.gep(ddata, [builder.add(
                dst_off, builder.mul(ir.Constant(i64, j), dst_stride))]), vec.as_pointer()))
            store.align = 4
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(inline="always")
def _input_tile_m(m, two_d, src, src_off, row_stride, col_stride, dst, dst_off, dst_stride):
    if two_d:
        if m == 4:
            _input_tile(4, 2, src, src_off, row_stride, col_stride, dst, dst_off, dst_stride)
        else:
            _input_tile(2, 2, src, src_off, row_stride, col_stride, dst, dst_off, dst_stride)
    elif m == 4:
        _input_tile(4, 1, src, src_off, row_stride, col_stride, dst, dst_off, dst_stride)
    else:
        _input_tile(2, 1, src, src_off, row_stride, col_stride, dst, dst_off, dst_stride)


@numba.njit(inline="always")
def _output_tile_m(m, two_d, src, src_off, src_stride, dst, dst_off, row_stride, col_stride):
    if two_d:
        if m == 4:
            _output_tile(4, 2, src, src_off, src_stride, dst, dst_off, row_stride, col_stride)
        else:
            _output_tile(2, 2, src, src_off, src_stride, dst, dst_off, row_stride, col_stride)
    elif m == 4:
        _output_tile(4, 1, src, src_off, src_stride, dst, dst_off, row_stride, col_stride)
    else:
        _output_tile(2, 1, src, src_off, src_stride, dst, dst_off, row_stride, col_stride)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _transform_in(x, rows, cols, m, two_d, n, row0, col0, nt, run_lo, run_hi, lane, c_lo, c_hi,
                  v, t0, cv):
    """One task's input side: the band of the row of tiles starting at padded row row0, padded
    column col0, nt tiles wide, channels [c_lo, c_hi) of image n (module docstring), and its
    tiles' transforms into v[t0 + b, :, c_lo:c_hi]. Returns how many of the band's elements
    were inf or nan (then v is not to be used). cols[j] for j in [run_lo, run_hi) are
    consecutive input columns (copied as a run), the others are read through the map."""
    alpha = m + 2
    points = alpha * alpha if two_d else alpha
    band_rows = alpha if two_d else 1                   # input rows a row of tiles reads
    channels = x.shape[1]
    width = nt * m + 2
    span = c_hi - c_lo
    j_lo = min(max(run_lo - col0, 0), width)            # the run, within this band
    j_hi = max(min(run_hi - col0, width), j_lo)
    run_src = cols[col0 + j_lo] if j_hi > j_lo else 0
    flat = x.reshape(x.size)
    row_size = x.shape[3]
    plane_size = x.shape[2] * row_size
    band = np.zeros(band_rows * width * span, v.dtype)   # (rows, width, span); zeros stay
    # Whole lanes x lanes blocks (channels x run columns) transposed in registers, the rest
    # element by element.
    c_full = c_lo + (min(c_hi, channels) - c_lo) // lane * lane
    j_full = j_lo + (j_hi - j_lo) // lane * lane
    for i in range(band_rows):
        src_row = rows[row0 + i]
        if src_row < 0:
            continue
        for c in range(c_lo, c_full, lane):
            src0 = (n * channels + c) * plane_size + src_row * row_size + run_src
            for j in range(j_lo, j_full, lane):
                _transpose_block(flat, src0 + j - j_lo, plane_size, band,
                                 (i * width + j) * span + c - c_lo, span)
        for c in range(c_lo, min(c_hi, channels)):
            plane = x[n, c, src_row]
            dst = band[i * width * span + c - c_lo:]
            for j in range(j_full if c < c_full else j_lo, j_hi):
                dst[j * span] = plane[run_src + j - j_lo]
            for j in range(j_lo):
                src_col = cols[col0 + j]
                if src_col >= 0:
                    dst[j * span] = plane[src_col]
            for j in range(j_hi, width):
                src_col = cols[col0 + j]
                if src_col >= 0:
                    dst[j * span] = plane[src_col]
    non_finite = 0
    for i in range(band.shape[0]):
        non_finite += (band[i] - band[i]) != 0.0         # inf or nan; no branch: vectorised
    for b in range(nt):
        for off in range(0, span, lane):
            _input_tile_m(m, two_d, band, b * m * span + off, width * span, span, v,
                          (t0 + b) * points * cv + c_lo + off, cv)
    return non_finite


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _transform_out(mm, t0, nt, kp, m, two_d, k_lo, k_hi, lane, out, n, p0, q0):
    """One task's output side: out[n, k, p0 + i, q0 + j] for k in [k_lo, k_hi) (whole vectors:
    those past K are dropped), valid p < P, q < Q, from mm[t0 + b, :, k] of its nt tiles (in a
    row buffer, then transposed back: module docstring)."""
    alpha = m + 2
    points = alpha * alpha if two_d else alpha
    out_rows = m if two_d else 1                        # output rows of a row of tiles
    k_count, p_count, q_count = out.shape[1], out.shape[2], out.shape[3]
    width = nt * m
    span = k_hi - k_lo
    flat = out.reshape(out.size)
    plane_size = p_count * q_count
    rowbuf = np.empty(out_rows * width * span, out.dtype)     # (out_rows, width, span)
    for b in range(nt):
        for off in range(0, span, lane):
            _output_tile_m(m, two_d, mm, (t0 + b) * points * kp + k_lo + off, kp, rowbuf,
                           b * m * span + off, width * span, span)
    q_run = min(width, q_count - q0)
    # Whole lanes x lanes blocks (columns x output channels) transposed in registers, the rest
    # element by element.
    k_full = k_lo + (min(k_hi, k_count) - k_lo) // lane * lane
    q_full = q_run // lane * lane
    for i in range(min(out_rows, p_count - p0)):
        for k in range(k_lo, k_full, lane):
            dst0 = ((n * k_count + k) * p_count + p0 + i) * q_count + q0
            for j in range(0, q_full, lane):
                _transpose_block(rowbuf, (i * width + j) * span + k - k_lo, span, flat,
                                 dst0 + j, plane_size)
        for k in range(k_lo, min(k_hi, k_count)):
            dst = out[n, k, p0 + i]
            base = i * width * span + k - k_lo
            for j in range(q_full if k < k_full else 0, q_run):
                dst[q0 + j] = rowbuf[base + j * span]


@numba.njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def _input_transform_kernel(x, rows, cols, m, two_d, n0, nb, th0, bh, tw0, bw, run_lo, run_hi,
                            lane, cv_block, v, bad):
    """v[t, e, c] (flat, (T, points, Cv)) for the batch's tiles (module docstring); bad[task]
    = True where the task's band held an inf or nan (then its V is not to be used: run_batch
    redoes the batch on a copy with those read as zero). x (N, C, H, W) in the compute dtype,
    C-contiguous. One task per (image, row of tiles, block of cv_block channel vectors)."""
    points = (m + 2) * (m + 2) if two_d else m + 2
    cv = v.shape[0] // (nb * bh * bw * points)          # Cv: channels padded to whole vectors
    blocks = (cv // lane + cv_block - 1) // cv_block
    for task in numba.prange(nb * bh * blocks):
        block = task % blocks
        rest = task // blocks
        tile_row = rest % bh
        image = rest // bh
        c_lo = block * cv_block * lane
        row0 = (th0 + tile_row) * m if two_d else th0 + tile_row
        if _transform_in(x, rows, cols, m, two_d, n0 + image, row0, tw0 * m, bw, run_lo, run_hi,
                         lane, c_lo, min(cv, c_lo + cv_block * lane), v,
                         (image * bh + tile_row) * bw, cv):
            bad[task] = True


@numba.njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def _gemm_kernel(v, u, mm, points, tiles, channels, cv, kp, k_count, red_off, nr, lane,
                 panels_per_task):
    """mm[t, e, k] = sum_{c < channels} v[t, e, c] * u[e, c, k] for t < tiles, k < kp (all flat;
    past k_count only as far as whole vectors, or whole tiles in panels of fewer than MR rows):
    one task per (point, nr-column tile of k, block of panels_per_task MR-row panels of t)."""
    n_ktiles = kp // nr
    n_panels = (tiles + MR - 1) // MR
    n_blocks = (n_panels + panels_per_task - 1) // panels_per_task
    for task in numba.prange(points * n_ktiles * n_blocks):
        block = task % n_blocks
        rest = task // n_blocks
        ktile = rest % n_ktiles
        e = rest // n_ktiles
        k0 = ktile * nr
        nv = (min(nr, k_count - k0) + lane - 1) // lane     # vectors holding output channels
        for panel in range(block * panels_per_task, min(n_panels, (block + 1) * panels_per_task)):
            t0 = panel * MR
            _any_tile(min(MR, tiles - t0), nv, v, (t0 * points + e) * cv, points * cv, u,
                      e * channels * kp + k0, red_off, channels, mm,
                      (t0 * points + e) * kp + k0, points * kp)


@numba.njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def _output_transform_kernel(mm, m, two_d, n0, nb, th0, bh, tw0, bw, lane, kv_block, out):
    """out[n, k, p, q] for the batch's tiles, from mm (flat, (T, points, Kp)): valid p < P,
    q < Q, k < K only (module docstring). One task per (image, row of tiles, block of kv_block
    output-channel vectors)."""
    points = (m + 2) * (m + 2) if two_d else m + 2
    kp = mm.shape[0] // (nb * bh * bw * points)
    vectors = (out.shape[1] + lane - 1) // lane
    blocks = (vectors + kv_block - 1) // kv_block
    for task in numba.prange(nb * bh * blocks):
        block = task % blocks
        rest = task // blocks
        tile_row = rest % bh
        image = rest // bh
        k_lo = block * kv_block * lane
        p0 = (th0 + tile_row) * m if two_d else th0 + tile_row
        _transform_out(mm, (image * bh + tile_row) * bw, bw, kp, m, two_d, k_lo,
                       min(vectors * lane, k_lo + kv_block * lane), lane, out, n0 + image, p0,
                       tw0 * m)


@numba.njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def _fused_kernel(x, rows, cols, m, two_d, n_images, tile_rows, tile_cols, per_task, run_lo,
                  run_hi, lane, u, cv, kp, red_off, nr, out, bad):
    """The whole conv, one task per (image, row of tiles, run of per_task tiles): its tiles'
    V and M in task-local buffers (in L2), U read by every task (module docstring, "Fused")."""
    points = (m + 2) * (m + 2) if two_d else m + 2
    channels, k_count = x.shape[1], out.shape[1]
    runs = (tile_cols + per_task - 1) // per_task
    n_ktiles = kp // nr
    for task in numba.prange(n_images * tile_rows * runs):
        run = task % runs
        rest = task // runs
        tile_row = rest % tile_rows
        image = rest // tile_rows
        b0 = run * per_task
        nt = min(tile_cols, b0 + per_task) - b0
        v = np.empty(nt * points * cv, out.dtype)
        mm = np.empty(nt * points * kp, out.dtype)
        row0 = tile_row * m if two_d else tile_row
        if _transform_in(x, rows, cols, m, two_d, image, row0, b0 * m, nt, run_lo, run_hi, lane,
                         0, cv, v, 0, cv):
            bad[task] = True
            continue                    # run_conv redoes the call from a finite copy
        for e in range(points):
            for ktile in range(n_ktiles):
                k0 = ktile * nr
                nv = (min(nr, k_count - k0) + lane - 1) // lane
                for t0 in range(0, nt, MR):
                    _any_tile(min(MR, nt - t0), nv, v, (t0 * points + e) * cv, points * cv, u,
                              e * channels * kp + k0, red_off, channels, mm,
                              (t0 * points + e) * kp + k0, points * kp)
        _transform_out(mm, 0, nt, kp, m, two_d, 0, (k_count + lane - 1) // lane * lane, lane,
                       out, image, row0 if two_d else tile_row, b0 * m)


_input_transform = serialised_if_needed(_input_transform_kernel)
_gemm = serialised_if_needed(_gemm_kernel)
_output_transform = serialised_if_needed(_output_transform_kernel)
_fused = serialised_if_needed(_fused_kernel)


def padded_sizes(channels: int, k: int, dtype: np.dtype) -> tuple[int, int]:
    """(Cv, Kp): the channels rounded up to whole vectors, the output channels to whole NR-column
    tiles of the micro-kernel."""
    lane, nr = lanes(dtype), tile_columns(dtype)
    return -(-channels // lane) * lane, -(-k // nr) * nr


def transposed_weights(u: np.ndarray, kp: int) -> np.ndarray:
    """U (points, K, C) of winograd.py as (points, C, Kp), zero past K."""
    points, k, c = u.shape
    ut = np.zeros((points, c, kp), u.dtype)
    ut[:, :, :k] = u.transpose(0, 2, 1)
    return ut


def consecutive_run(window: np.ndarray) -> tuple[int, int]:
    """[j_lo, j_hi): the longest run of window (an index map, -1 for a zero) holding consecutive
    input columns; (0, 0) when there is none."""
    best, start = (0, 0), 0
    for j in range(1, len(window) + 1):
        if j == len(window) or window[j] < 0 or window[j - 1] < 0 or window[j] != window[j - 1] + 1:
            if window[start] >= 0 and j - start > best[1] - best[0]:
                best = (start, j)
            start = j
    return best


def _vectors_per_task(vectors: int, bands: int, threads: int) -> int:
    """Vectors of channels per transform task: TRANSFORM_TASKS tasks per thread where there
    are enough, whole bands otherwise; blocks of equal size."""
    blocks = max(1, min(vectors, -(-TRANSFORM_TASKS * threads // bands)))
    return -(-vectors // blocks)


def run_batch(x, rows, cols, run, m, two_d, ut, out, box, origin, threads, scratch) -> bool:
    """The batch of tiles images [n0, n0 + nb) x tile rows [th0, th0 + bh) x tile columns
    [tw0, tw0 + bw) (box (nb, bh, bw), origin (n0, th0, tw0)) into out, without bias; run:
    consecutive_run of cols. Returns whether an input element it read was not finite (read as
    zero)."""
    dtype = out.dtype
    lane, nr = lanes(dtype), tile_columns(dtype)
    nb, bh, bw = box
    n0, th0, tw0 = origin
    points = (m + 2) ** 2 if two_d else m + 2
    channels, k = x.shape[1], out.shape[1]
    cv, kp = padded_sizes(channels, k, dtype)
    tiles = nb * bh * bw
    v = scratch.get("winograd_lanes_v", (tiles * points * cv,), dtype)
    mm = scratch.get("winograd_lanes_m", (tiles * points * kp,), dtype)
    bands = nb * bh
    cv_block = _vectors_per_task(cv // lane, bands, threads)
    j_lo, j_hi = run
    bad = np.zeros(bands * -(-(cv // lane) // cv_block), np.bool_)
    _input_transform(x, rows, cols, m, two_d, n0, nb, th0, bh, tw0, bw, j_lo, j_hi, lane,
                     cv_block, v, bad)
    found = bool(bad.any())
    if found:
        # inf or nan in the batch's patches: its V again, from a copy with them read as zero
        # (winograd.py adds their terms exactly).
        x = np.where(np.isfinite(x), x, 0).astype(x.dtype)
        _input_transform(x, rows, cols, m, two_d, n0, nb, th0, bh, tw0, bw, j_lo, j_hi, lane,
                         cv_block, v, bad)
    red_off = np.arange(channels, dtype=np.int64) * kp
    # GEMM tasks: (point, column tile) pairs, then blocks of panels until 4 tasks per thread.
    n_panels = -(-tiles // MR)
    splits = -(-4 * threads // (points * (kp // nr)))
    panels_per_task = max(1, min(PANELS, -(-n_panels // splits)))
    _gemm(v, ut.reshape(-1), mm, points, tiles, channels, cv, kp, k, red_off, nr, lane,
          panels_per_task)
    kv_block = _vectors_per_task(-(-k // lane), bands, threads)
    _output_transform(mm, m, two_d, n0, nb, th0, bh, tw0, bw, lane, kv_block, out)
    return found


def fused_tiles(tile_cols: int, points: int, cv: int, kp: int, size: int, tasks_elsewhere: int,
                threads: int) -> int:
    """Tiles per task of _fused_kernel: its V and M within FUSED_BYTES, at least MR, and cut
    until there are 4 tasks per thread where the rows of tiles (tasks_elsewhere) are few."""
    per_task = max(MR, min(tile_cols, FUSED_BYTES // (points * (cv + kp) * size)))
    while per_task > MR and tasks_elsewhere * -(-tile_cols // per_task) < 4 * threads:
        per_task = max(MR, per_task // 2)
    return per_task


def run_fused(x, rows, cols, run, m, two_d, ut, out, tiles, threads) -> bool:
    """The whole conv into out, without bias, by _fused_kernel (tiles: (tile rows, tile columns)
    per image); returns whether an input element was not finite (read as zero)."""
    dtype = out.dtype
    lane, nr = lanes(dtype), tile_columns(dtype)
    points = (m + 2) ** 2 if two_d else m + 2
    channels, k = x.shape[1], out.shape[1]
    cv, kp = padded_sizes(channels, k, dtype)
    th, tw = tiles
    per_task = fused_tiles(tw, points, cv, kp, dtype.itemsize, x.shape[0] * th, threads)
    red_off = np.arange(channels, dtype=np.int64) * kp
    bad = np.zeros(x.shape[0] * th * -(-tw // per_task), np.bool_)
    args = (rows, cols, m, two_d, x.shape[0], th, tw, per_task, run[0], run[1], lane,
            ut.reshape(-1), cv, kp, red_off, nr, out, bad)
    _fused(x, *args)
    if not bad.any():
        return False
    # inf or nan in some patches: the whole conv again, from a copy with them read as zero
    # (winograd.py adds their terms exactly).
    _fused(np.where(np.isfinite(x), x, 0).astype(x.dtype), *args)
    return True
