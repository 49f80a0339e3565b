"""The fast CPU path (default for NumPy input).

Three algorithms:
  "implicit": float16/32/64 only. A register-tiled implicit GEMM (conv/_cpu_implicit.py): the
            input in its stride-phase layout, read where it lies (no im2col buffer) by a SIMD
            micro-kernel that numba builds with LLVM for the host's vector width. The default
            for floating point.
  "im2col": pad, then build the column matrix cols[g, (c, r, s), (n, p, q)] of every group from
            one strided view (converting to the compute dtype as it copies) and multiply by
            W[g, k, (c, r, s)] with BLAS (one batched matmul). 1x1 stride-1 unpadded convs skip
            im2col (plain GEMM). The default for integer and complex inputs.
  "direct": numba-parallel loops over (n, k) output planes (conv/_cpu_direct.py): the padded
            input split into its stride phases, then one long unit-stride axpy per (channel, tap).
            The default for unstrided depthwise convs.
Memory: every algorithm allocates at most the output plus the workspace limit
(`conv.set_workspace_limit(nbytes, "cpu")`, env CONV_CPU_WORKSPACE_BYTES, default 64 MiB) plus a
few KiB: a call whose copies (padded or converted input, phase layout, column buffer,
compute-dtype output) would exceed it runs as chunks of itself (see "chunking" below).
Accumulation: float16 in float32, float32 in float32 (as PyTorch's CPU path), float64 and complex
in their own precision, integers exactly in int64 (wrapping on the cast back, as PyTorch).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import NamedTuple

import numpy as np

from . import _arrays
from ._padding import as_4d, gather_padded, pad_input, source_index, weight_4d
from ._spec import ConvSpec
from ._workspace import ScratchBuffers, WorkspaceLimit

ALGORITHMS = ("implicit", "im2col", "direct")
ACCEPTS = (_arrays.NUMPY,)

# Cap on each call's workspace (bytes): conv.set_workspace_limit(nbytes, "cpu"), default 64 MiB.
_limit = WorkspaceLimit("CONV_CPU_WORKSPACE_BYTES", 64 << 20)
set_workspace_limit = _limit.set
workspace_limit = _limit.get


_scratch = ScratchBuffers(_limit)
_IMPLICIT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def availability() -> tuple[bool, str]:
    return True, "NumPy/BLAS and numba on the host"


def compute_dtype(dtype: np.dtype) -> np.dtype:
    if dtype == np.float16:
        return np.dtype(np.float32)
    if dtype.kind in "iu":
        return np.dtype(np.int64)
    return dtype


def choose_algorithm(spec: ConvSpec) -> tuple[str, str]:
    """Rule from the benchmark runner's CPU measurements (bench/ suites resnet50, sweep, grouped,
    textcnn, wavenet, longkernel, audio) and A/B timings of the grouped shapes: the implicit GEMM
    wins for every floating-point conv (ResNeXt's 4-channel groups: 1.3-4x the direct loops;
    strided depthwise: 1.5x) but unstrided depthwise ones, where the direct loops are 5-10%
    faster (the implicit GEMM's tile of output channels holds one row there). Integers and
    complex use im2col (exact int64 / complex GEMM)."""
    if spec.dtype.kind in "iuc":
        return "im2col", "integer and complex inputs use im2col (exact int64 / complex GEMM)"
    if spec.k_per_group == 1 and spec.stride == (1, 1):
        return "direct", (f"one output channel per group ({spec.c_per_group} input channel(s) "
                          f"each, as in a depthwise conv) and unstrided: the implicit GEMM's tiles "
                          f"of output channels would hold one row")
    return "implicit", "floating point: the register-tiled implicit GEMM"


def check_supported(spec: ConvSpec, algorithm: str) -> None:
    """Refuse what `algorithm` cannot compute (called while resolving, so conv.explain refuses
    exactly what the call would)."""
    if algorithm == "implicit" and compute_dtype(spec.dtype) not in _IMPLICIT_DTYPES:
        raise TypeError(f"cpu algorithm 'implicit' computes floating-point inputs only "
                        f"(float16, float32, float64), got {spec.dtype}; use 'im2col' or 'direct'")


def run(x, weight, bias, spec: ConvSpec, algorithm: str) -> np.ndarray:
    check_supported(spec, algorithm)
    # inf/nan/overflow propagate silently, as in PyTorch (no RuntimeWarning, no FloatingPointError
    # under a caller's np.errstate(all="raise")).
    with np.errstate(all="ignore"):
        return _run(x, weight, bias, spec, algorithm)


def _run(x, weight, bias, spec: ConvSpec, algorithm: str) -> np.ndarray:
    n, k, p, q = spec.output_shape_4d
    cdt = compute_dtype(spec.dtype)
    if not n * k * p * q:
        return _new_output((n, k, p, q), spec.dtype).reshape(spec.output_shape)
    x4, w4 = as_4d(x, spec), weight_4d(weight, spec)
    b = None if bias is None else bias.astype(cdt, copy=False)
    if _fits(spec, algorithm, x4.dtype, x4.flags.c_contiguous, numba_threads(), _limit.nbytes):
        # The fast path: the whole call at once, its workspace within the limit.
        out = _new_output((n, k, p, q), cdt)
        _compute(x4, w4.astype(cdt, copy=False), b, out, spec, algorithm)
        return out.astype(spec.dtype, copy=False).reshape(spec.output_shape)
    out = _new_output((n, k, p, q), spec.dtype)
    _run_chunked(x4, w4, b, out, spec, algorithm)
    return out.reshape(spec.output_shape)


def _new_output(shape: tuple, dtype: np.dtype) -> np.ndarray:
    # Every algorithm writes every element of the output and of each chunk's buffers (all come
    # from here); tests replace this with a NaN-filled allocation to prove it.
    return np.empty(shape, dtype)


def numba_threads() -> int:
    # numba.get_num_threads() starts numba's threads, which fixes the threading layer: our choice
    # of layer (conv/_threads.py) must be made first.
    from ._threads import num_threads
    return num_threads()


def _compute(x4: np.ndarray, w: np.ndarray, b, out: np.ndarray, spec: ConvSpec,
             algorithm: str) -> None:
    """out (N, K, P, Q), in the compute dtype, = the conv of x4 (any dtype: each algorithm converts
    what it copies) by w (compute dtype) plus b (or None), all of spec at once."""
    with _plain_memory_errors():
        if algorithm == "implicit":
            from ._cpu_implicit import conv2d_implicit
            conv2d_implicit(x4, w, b, out, spec, _scratch)       # adds the bias itself
            return
        if algorithm == "direct":
            _direct(x4, w, out, spec)
        else:
            _im2col_gemm(pad_input(x4, spec), w, out, spec)
    if b is not None:
        out += b[None, :, None, None]


@contextlib.contextmanager
def _plain_memory_errors():
    """numba reports an allocation failure inside a compiled function as SystemError (the
    MemoryError is its cause): give the caller the MemoryError."""
    try:
        yield
    except SystemError as error:
        cause = error.__cause__ or error.__context__
        if isinstance(cause, MemoryError):
            raise MemoryError(str(cause)) from None
        if isinstance(cause, ValueError) and "array is too big" in str(cause):
            raise MemoryError(str(cause)) from None
        raise


# --- workspace: what each algorithm allocates beyond the input and the output -----------------
#
# Estimates (upper bounds up to a few KiB of per-task buffers and index maps) of the bytes an
# algorithm allocates for a call: padded/converted copies of the input, the phase layout, the
# column buffer and GEMM results, per-task buffers of the numba loops (one per thread alive at a
# time), and the compute-dtype output when it is not the output's dtype.

def _algorithm_workspace(spec: ConvSpec, algorithm: str, x_dtype: np.dtype, contiguous: bool,
                         threads: int, borders: bool = False, in_place: bool = False) -> int:
    """Bytes `_compute` allocates for spec on an input of x_dtype (contiguous or not). borders:
    the zero padding is there although spec.pad is zero (the chunk estimates pass spec.h/w as
    the padded size)."""
    cdt = compute_dtype(spec.dtype)
    ci, xi = cdt.itemsize, np.dtype(x_dtype).itemsize
    top, bottom, left, right = spec.pad
    hp, wp = spec.h + top + bottom, spec.w + left + right
    padded = borders or any(spec.pad)
    padded_elements = spec.n * spec.c * hp * wp
    convert = np.dtype(x_dtype) != cdt
    if algorithm == "im2col":
        ws = padded_elements * xi if padded else 0
        if spec.r == spec.s == 1 and (spec.p, spec.q) == (spec.h, spec.w) and not padded:
            # Pointwise: matmul casts (or reshape copies) the input, then writes into the output.
            return ws + (padded_elements * ci if convert or not contiguous else 0)
        image_cols = spec.groups * spec.c_per_group * spec.r * spec.s * spec.p * spec.q * ci
        if spec.n == 1 or spec.p * spec.q >= 1024:
            return ws + image_cols                 # image by image, the GEMM writes in place
        return ws + spec.n * (image_cols + spec.k * spec.p * spec.q * ci)
    # implicit and direct: non-zero padding modes pad first (PhaseLayout.source).
    from ._cpu_direct import layout_extent
    ws = padded_elements * xi if padded and spec.padding_mode != "zeros" else 0
    source_copy = padded_elements * ci if convert else 0
    if algorithm == "direct":
        layout, channel = layout_extent(spec, hp, wp, True)
        wph = -(-wp // spec.stride[1])
        per_task = threads * (4096 + wph) * ci
        if spec.k_per_group == 1:
            # Each task phase-splits its own channels of the (converted) source.
            return ws + source_copy + per_task + threads * spec.c_per_group * channel * ci
        return ws + layout * ci + per_task
    from ._cpu_implicit import _deinterleave, tile_columns
    if in_place:
        return 0
    layout, channel = layout_extent(spec, hp, wp, not _deinterleave(spec))
    slack = 4 * tile_columns(cdt) * ci + 4096
    if spec.groups > 1 and spec.n * spec.groups >= 4 * threads:
        # One task per (image, group) lays out its group in its own buffer.
        return ws + source_copy + threads * (spec.c_per_group * channel * ci + slack)
    return ws + layout * ci + slack


@functools.lru_cache(maxsize=1024)
def _fits(spec: ConvSpec, algorithm: str, x_dtype: np.dtype, contiguous: bool, threads: int,
          limit: int) -> bool:
    """Whether the whole call's workspace is within the limit (then it runs unchunked)."""
    cdt = compute_dtype(spec.dtype)
    ws = 0
    if cdt != spec.dtype:       # the compute-dtype output and weight, cast at the end
        ws += (spec.n * spec.k * spec.p * spec.q
               + spec.k * spec.c_per_group * spec.r * spec.s) * cdt.itemsize
    in_place = False
    if algorithm == "implicit" and x_dtype == cdt and contiguous:
        from ._cpu_direct import layout_extent
        from ._cpu_implicit import _deinterleave, _plan, tile_columns
        top, bottom, left, right = spec.pad
        layout, _ = layout_extent(spec, spec.h + top + bottom, spec.w + left + right,
                                     not _deinterleave(spec))
        # In place needs the layout to BE the input, so of its size: only then is the plan
        # (int64 offsets, which an absurd padding or dilation would overflow) worth building.
        if layout == spec.n * spec.c * spec.h * spec.w:
            in_place = _plan(spec, tile_columns(cdt), threads).in_place
    ws += _algorithm_workspace(spec, algorithm, x_dtype, contiguous, threads, in_place=in_place)
    return ws <= limit


# --- chunking: the same algorithm on pieces of the call ------------------------------------------
#
# A call whose workspace exceeds the limit is split into chunks of images, then of output rows,
# then of output columns, and, when one output with the whole kernel does not fit (huge dilation),
# into pieces of the kernel (rows, then columns) summed in a chunk-sized buffer. Each piece reads
# only the part of the input its outputs read: a view with the zero padding that falls inside it,
# or, for the other padding modes and for strides longer than the dilated kernel (where the
# outputs' windows do not touch), a copy gathered through index maps, its windows side by side
# (stride = the window). Integer and float16 inputs are converted per piece; each chunk's result
# goes into the output directly when the output slice is the chunk's whole images and dtype, else
# through a chunk-sized compute-dtype buffer cast into the output.

class _Chunks(NamedTuple):
    images: int
    rows: int
    cols: int
    kernel_rows: int
    kernel_cols: int


def _axis_extent(outputs: int, taps: int, stride: int, dilation: int) -> tuple[int, int, bool]:
    """(input elements a piece reads along one axis, its stride, windows side by side?) for
    `outputs` outputs and `taps` kernel taps."""
    window = (taps - 1) * dilation + 1
    if outputs > 1 and stride > window:
        return outputs * window, window, True
    return (outputs - 1) * stride + window, stride, False


def _chunk_workspace(spec: ConvSpec, algorithm: str, x_dtype: np.dtype, threads: int,
                     chunks: _Chunks) -> int:
    nb, pb, qb, rb, sb = chunks
    cdt = compute_dtype(spec.dtype)
    rows, stride_h, side_h = _axis_extent(pb, rb, spec.stride[0], spec.dilation[0])
    cols, stride_w, side_w = _axis_extent(qb, sb, spec.stride[1], spec.dilation[1])
    gathered = side_h or side_w or (spec.padding_mode != "zeros" and any(spec.pad))
    piece = dataclasses.replace(spec, n=nb, h=rows, w=cols, r=rb, s=sb, stride=(stride_h, stride_w),
                                pad=(0, 0, 0, 0), padding_mode="zeros", p=pb, q=qb)
    # The gathered copy (plus gather_padded's one-image temporary), or a view.
    ws = nb * spec.c * rows * cols * np.dtype(x_dtype).itemsize * (nb + 1) // nb if gathered else 0
    ws += _algorithm_workspace(piece, algorithm, x_dtype, False, threads,
                               borders=not gathered and any(spec.pad))
    split_kernel = rb < spec.r or sb < spec.s
    ws += nb * spec.k * pb * qb * cdt.itemsize * (2 if split_kernel else 1)
    ws += spec.k * spec.c_per_group * rb * sb * cdt.itemsize
    return ws


def _largest(size: int, fits) -> int:
    """The largest m in [1, size] with fits(m) (fits is monotone), or 1."""
    lo, hi = 1, size
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _even(size: int, most: int) -> int:
    """Chunk length at most `most` that splits size into equal chunks (the last one shorter by
    less than one chunk count), so the pieces' specs, and their cached layouts, repeat."""
    count = -(-size // most)
    return -(-size // count)


@functools.lru_cache(maxsize=256)
def _chunk_plan(spec: ConvSpec, algorithm: str, x_dtype: np.dtype, threads: int,
                limit: int) -> _Chunks:
    n, _, p, q = spec.output_shape_4d
    r, s = spec.r, spec.s

    def fits(*chunks) -> bool:
        return _chunk_workspace(spec, algorithm, x_dtype, threads, _Chunks(*chunks)) <= limit

    if fits(1, p, q, r, s):
        return _Chunks(_even(n, _largest(n, lambda m: fits(m, p, q, r, s))), p, q, r, s)
    if fits(1, 1, q, r, s):
        return _Chunks(1, _even(p, _largest(p, lambda m: fits(1, m, q, r, s))), q, r, s)
    if fits(1, 1, 1, r, s):
        return _Chunks(1, 1, _even(q, _largest(q, lambda m: fits(1, 1, m, r, s))), r, s)
    # One output with the whole kernel does not fit (a huge dilation): split the kernel, then
    # widen the chunk of outputs again.
    rb = _largest(r, lambda m: fits(1, 1, 1, m, s))
    sb = s if fits(1, 1, 1, rb, s) else _largest(s, lambda m: fits(1, 1, 1, 1, m))
    rb, sb = _even(r, rb), _even(s, sb)
    qb = _even(q, _largest(q, lambda m: fits(1, 1, m, rb, sb)))
    pb = _even(p, _largest(p, lambda m: fits(1, m, q, rb, sb))) if qb == q else 1
    return _Chunks(1, pb, qb, rb, sb)


def _axis_piece(first: int, end: int, tap_first: int, tap_end: int, stride: int, dilation: int,
                pad_lo: int) -> tuple[np.ndarray | None, int, int, int]:
    """Along one axis, the input coordinates (0 = first input element, negative or past the end
    in the padding) that outputs [first, end) read with taps [tap_first, tap_end): (None, start,
    stop, stride) for one run start..stop-1, or (coordinates, 0, 0, stride) for windows side by
    side, stride then being the window."""
    outputs = end - first
    length, piece_stride, side_by_side = _axis_extent(outputs, tap_end - tap_first, stride,
                                                      dilation)
    start = first * stride + tap_first * dilation - pad_lo
    if not side_by_side:
        return None, start, start + length, piece_stride
    window = piece_stride
    coords = (np.arange(outputs, dtype=np.int64)[:, None] * stride
              + np.arange(window, dtype=np.int64)[None, :]).reshape(-1) + start
    return coords, 0, 0, piece_stride


def _run_chunked(x4: np.ndarray, w4: np.ndarray, b, out: np.ndarray, spec: ConvSpec,
                 algorithm: str) -> None:
    n, k, p, q = out.shape
    cdt = compute_dtype(spec.dtype)
    nb, pb, qb, rb, sb = _chunk_plan(spec, algorithm, x4.dtype, numba_threads(), _limit.nbytes)
    split_kernel = rb < spec.r or sb < spec.s
    whole_weight = None if split_kernel else w4.astype(cdt, copy=False)
    for n0 in range(0, n, nb):
        n1 = min(n, n0 + nb)
        for p0 in range(0, p, pb):
            p1 = min(p, p0 + pb)
            for q0 in range(0, q, qb):
                q1 = min(q, q0 + qb)
                in_place = (p1 - p0, q1 - q0) == (p, q) and out.dtype == cdt
                target = out[n0:n1] if in_place else _new_output((n1 - n0, k, p1 - p0, q1 - q0),
                                                                 cdt)
                partial = None
                for r0 in range(0, spec.r, rb):
                    r1 = min(spec.r, r0 + rb)
                    for s0 in range(0, spec.s, sb):
                        s1 = min(spec.s, s0 + sb)
                        if r0 == s0 == 0:
                            dst = target
                        else:
                            if partial is None:
                                partial = _new_output(target.shape, cdt)
                            dst = partial
                        weight = whole_weight if whole_weight is not None else \
                            w4[:, :, r0:r1, s0:s1].astype(cdt)
                        _compute_piece(x4[n0:n1], weight, dst, spec, algorithm,
                                       (p0, p1, r0, r1), (q0, q1, s0, s1))
                        if dst is partial:
                            target += partial
                if b is not None:
                    target += b[None, :, None, None]
                if not in_place:
                    out[n0:n1, :, p0:p1, q0:q1] = target     # casts into the output dtype


def _compute_piece(x4: np.ndarray, w: np.ndarray, dst: np.ndarray, spec: ConvSpec, algorithm: str,
                   row_part: tuple, col_part: tuple) -> None:
    """dst = the outputs rows [p0, p1) x columns [q0, q1) of the images of x4 get from kernel rows
    [r0, r1) and columns [s0, s1): the same algorithm on a spec of just that piece."""
    (p0, p1, r0, r1), (q0, q1, s0, s1) = row_part, col_part
    top, _, left, _ = spec.pad
    h, width = spec.h, spec.w
    row_coords, row_start, row_stop, stride_h = _axis_piece(p0, p1, r0, r1, spec.stride[0],
                                                            spec.dilation[0], top)
    col_coords, col_start, col_stop, stride_w = _axis_piece(q0, q1, s0, s1, spec.stride[1],
                                                            spec.dilation[1], left)
    reads_padding = (row_start < 0 or row_stop > h or col_start < 0 or col_stop > width)
    if row_coords is not None or col_coords is not None or (
            spec.padding_mode != "zeros" and reads_padding):
        if row_coords is None:
            row_coords = np.arange(row_start, row_stop, dtype=np.int64)
        if col_coords is None:
            col_coords = np.arange(col_start, col_stop, dtype=np.int64)
        xc = gather_padded(x4, source_index(row_coords, h, spec.padding_mode),
                           source_index(col_coords, width, spec.padding_mode))
        pad = (0, 0, 0, 0)
    else:
        lo_h, hi_h = max(row_start, 0), min(row_stop, h)
        lo_w, hi_w = max(col_start, 0), min(col_stop, width)
        if hi_h <= lo_h or hi_w <= lo_w:
            dst[...] = 0                        # the piece reads zero padding only
            return
        xc = x4[:, :, lo_h:hi_h, lo_w:hi_w]
        pad = (lo_h - row_start, row_stop - hi_h, lo_w - col_start, col_stop - hi_w)
    piece = dataclasses.replace(
        spec, n=xc.shape[0], h=xc.shape[2], w=xc.shape[3], r=r1 - r0, s=s1 - s0,
        stride=(stride_h, stride_w), pad=pad, padding_mode="zeros", p=p1 - p0, q=q1 - q0,
        has_bias=False, batched=True)
    _compute(xc, w, None, dst, piece, algorithm)


def _tap_view(xc: np.ndarray, spec: ConvSpec, p0: int, p1: int) -> np.ndarray:
    """Strided view (nb, G, cg, r, s, p1-p0, q) of what each tap sees for output rows [p0, p1)."""
    nb, c, hp, wp = xc.shape
    sn, sc, sh, sw = xc.strides
    (st_h, st_w), (d_h, d_w) = spec.stride, spec.dilation
    cg = spec.c_per_group
    base = xc[:, :, p0 * st_h:, :]
    return np.lib.stride_tricks.as_strided(
        base, shape=(nb, spec.groups, cg, spec.r, spec.s, p1 - p0, spec.q),
        strides=(sn, sc * cg, sc, sh * d_h, sw * d_w, sh * st_h, sw * st_w), writeable=False)


def _im2col_gemm(xp: np.ndarray, w: np.ndarray, out: np.ndarray, spec: ConvSpec) -> None:
    """All groups at once: cols[g, (c, r, s), (n, p, q)] from one strided view of the padded input
    xp (its own dtype: the copy into the column buffer converts it to out.dtype), then one batched
    matmul W[g] @ cols[g] (numpy hands each group's GEMM to BLAS). The caller has sized the call so
    that its column buffer fits the workspace limit."""
    n, _, p, q = out.shape
    groups, cg, kg = spec.groups, spec.c_per_group, spec.k_per_group
    crs = cg * spec.r * spec.s
    wmat = np.ascontiguousarray(w.reshape(groups, kg, crs))
    # (p, q) == (h, w), not stride == (1, 1): a stride that reads nothing different is recorded
    # as 1 (make_spec), and then the output can still be shorter than the input.
    if spec.r == spec.s == 1 and (spec.p, spec.q) == (spec.h, spec.w) and not any(spec.pad):
        # Pointwise: (G, kg, cg) @ (n, G, cg, h*w), no column buffer at all.
        xg = xp.reshape(n, groups, cg, p * q)
        np.matmul(wmat, xg, out=out.reshape(n, groups, kg, p * q))
        return
    # One image already makes a wide GEMM: go image by image, writing results in place.
    images_per_chunk = 1 if p * q >= 1024 else n
    for n0 in range(0, n, images_per_chunk):
        n1 = min(n, n0 + images_per_chunk)
        nb = n1 - n0
        view = _tap_view(xp[n0:n1], spec, 0, p)                    # (nb, G, cg, r, s, p, q)
        if nb == 1:
            # One image: the GEMM writes straight into its (K, P*Q) output plane.
            cols = _scratch.get("cols", (groups, crs, p * q), out.dtype)
            cols.reshape(groups, cg, spec.r, spec.s, p, q)[...] = view[0]
            np.matmul(wmat, cols, out=out[n0].reshape(groups, kg, p * q))
            continue
        # One GEMM per group over all the images: wide even when p*q is small.
        cols = _scratch.get("cols", (groups, crs, nb, p, q), out.dtype)
        cols.reshape(groups, cg, spec.r, spec.s, nb, p, q)[...] = view.transpose(
            1, 2, 3, 4, 0, 5, 6)
        res = np.matmul(wmat, cols.reshape(groups, crs, nb * p * q))   # (G, kg, nb*p*q)
        out[n0:n1] = res.reshape(groups * kg, nb, p, q).transpose(1, 0, 2, 3)


def _direct(x4: np.ndarray, w: np.ndarray, out: np.ndarray, spec: ConvSpec) -> None:
    import numba

    from ._cpu_direct import direct_conv2d, direct_conv2d_exclusive, phase_layout
    layout = phase_layout(spec)
    w = np.ascontiguousarray(w)
    if spec.k_per_group == 1:
        # Each output plane reads channels no other plane reads: phase-split them per task.
        x4, top, left = layout.source(x4)
        direct_conv2d_exclusive(x4.astype(out.dtype, copy=False), layout.taps, w, out,
                                layout.row_phase_array, layout.col_phase_array, *spec.stride,
                                top, left, layout.hph, layout.wph,
                                min(spec.n * spec.k, 8 * numba.get_num_threads()))
        return
    phases = _scratch.get("phases", layout.shape, out.dtype)
    layout.fill(x4, phases)
    direct_conv2d(phases, layout.taps, w, out, spec.groups)
