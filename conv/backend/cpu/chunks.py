"""The CPU backend's workspace estimates and chunk planner: how many bytes each algorithm allocates
for a call, and how a call whose workspace exceeds the limit is cut into pieces that fit (the
pieces are computed by conv/backend/cpu/__init__.py:_run_chunked)."""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from ..._dtypes import accumulator_dtype as compute_dtype
from ..._spec import ConvSpec
from ..._workspace import Chunks, plan_chunks

# --- workspace: what each algorithm allocates beyond the input and the output -----------------
#
# Estimates (upper bounds up to a few KiB of per-task buffers and index maps) of the bytes an
# algorithm allocates for a call: padded/converted copies of the input, the phase layout, the
# column buffer and GEMM results, per-task buffers of the numba loops (one per thread alive at a
# time), and the compute-dtype output when it is not the output's dtype.

def _algorithm_workspace(spec: ConvSpec, algorithm: str, x_dtype: np.dtype, contiguous: bool,
                         threads: int, borders: bool = False, in_place: bool = False,
                         limit: int = 0) -> int:
    """Bytes `_compute` allocates for spec on an input of x_dtype (contiguous or not). borders:
    the zero padding is there although spec.pad is zero (the chunk estimates pass spec.h/w as
    the padded size). limit: the cap, which sizes fft's batches of tiles."""
    if algorithm == "fft":
        # Zero padding is never materialised (borders cost nothing); its own estimate.
        from .fft import workspace
        return workspace(spec, x_dtype, limit)
    if algorithm == "winograd":
        # Padding of every mode is read through index maps (never materialised); its own
        # estimate (input copy when not contiguous/compute dtype, U, batches of V and M).
        from .winograd import workspace
        return workspace(spec, x_dtype, contiguous, limit)
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
    from .layout import layout_extent
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
    from .implicit import _deinterleave, packed_tile_bytes, packs, tile_columns
    deinterleave = _deinterleave(spec)
    crs = spec.c_per_group * spec.r * spec.s
    # Each packing task's block (at most PACK_MAX_BYTES) and offsets, one per live thread.
    packing = threads * (packed_tile_bytes(crs) + 8 * crs) if packs(crs, 2 if deinterleave
                                                                      else 1) else 0
    if in_place:
        return packing
    layout, channel = layout_extent(spec, hp, wp, not deinterleave)
    slack = 4 * tile_columns(cdt) * ci + 4096
    if spec.groups > 1 and spec.n * spec.groups >= 4 * threads:
        # One task per (image, group) lays out its group in its own buffer.
        return ws + source_copy + packing + threads * (spec.c_per_group * channel * ci + slack)
    return ws + layout * ci + slack + packing


@functools.lru_cache(maxsize=1024)
def plan_workspace(spec: ConvSpec, algorithm: str, x_dtype: np.dtype, contiguous: bool,
                   threads: int, limit: int) -> tuple[int, Chunks | None]:
    """(workspace bytes, chunks) of a call: chunks None when the whole call's workspace is within
    the limit (it runs at once), else the chunking (conv/_workspace.py's policy) and the
    workspace of one chunk."""
    whole = _whole_workspace(spec, algorithm, x_dtype, contiguous, threads, limit)
    if whole <= limit:
        return whole, None
    n, _, p, q = spec.output_shape_4d
    chunks = plan_chunks(Chunks(n, p, q, spec.r, spec.s),
                         lambda c: _chunk_workspace(spec, algorithm, x_dtype, threads, c,
                                                    limit) <= limit,
                         split_columns_and_kernel=True)
    if algorithm == "winograd" and (chunks.kernel_rows, chunks.kernel_cols) != (spec.r, spec.s):
        # Winograd's transforms are those of the whole 3x3 (3-tap) kernel: a piece of it would
        # be a spec it refuses. Its smallest chunk keeps the kernel (one output), over the cap.
        chunks = Chunks(1, 1, 1, spec.r, spec.s)
    return _chunk_workspace(spec, algorithm, x_dtype, threads, chunks, limit), chunks


def _whole_workspace(spec: ConvSpec, algorithm: str, x_dtype: np.dtype, contiguous: bool,
                     threads: int, limit: int = 0) -> int:
    """Bytes the whole call at once allocates beyond its output."""
    cdt = compute_dtype(spec.dtype)
    ws = 0
    if cdt != spec.dtype:       # the compute-dtype output and weight, cast at the end
        ws += (spec.n * spec.k * spec.p * spec.q
               + spec.k * spec.c_per_group * spec.r * spec.s) * cdt.itemsize
    in_place = False
    if algorithm == "implicit" and x_dtype == cdt and contiguous:
        from .implicit import _deinterleave, _plan, tile_columns
        from .layout import layout_extent
        top, bottom, left, right = spec.pad
        layout, _ = layout_extent(spec, spec.h + top + bottom, spec.w + left + right,
                                     not _deinterleave(spec))
        # In place needs the layout to BE the input, so of its size: only then is the plan
        # (int64 offsets, which an absurd padding or dilation would overflow) worth building.
        if layout == spec.n * spec.c * spec.h * spec.w:
            in_place = _plan(spec, tile_columns(cdt), threads).in_place
    ws += _algorithm_workspace(spec, algorithm, x_dtype, contiguous, threads, in_place=in_place,
                               limit=limit)
    return ws


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

def _axis_extent(outputs: int, taps: int, stride: int, dilation: int) -> tuple[int, int, bool]:
    """(input elements a piece reads along one axis, its stride, windows side by side?) for
    `outputs` outputs and `taps` kernel taps."""
    window = (taps - 1) * dilation + 1
    if outputs > 1 and stride > window:
        return outputs * window, window, True
    return (outputs - 1) * stride + window, stride, False


def _chunk_workspace(spec: ConvSpec, algorithm: str, x_dtype: np.dtype, threads: int,
                     chunks: Chunks, limit: int = 0) -> int:
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
                               borders=not gathered and any(spec.pad), limit=limit)
    split_kernel = rb < spec.r or sb < spec.s
    ws += nb * spec.k * pb * qb * cdt.itemsize * (2 if split_kernel else 1)
    ws += spec.k * spec.c_per_group * rb * sb * cdt.itemsize
    return ws


def axis_piece(first: int, end: int, tap_first: int, tap_end: int, stride: int, dilation: int,
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
