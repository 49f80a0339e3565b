"""FFT convolution on the host (algorithm "fft", version 0, the only one): overlap-save tiles along
both spatial axes, the reduction over input channels done in the frequency domain.

Map. The stride-1 output of the dilated kernel, y1[n, k, i, j], is computed tile by tile; a tile
holds mh x mw outputs of the strided output, (p, q) in [th*mh, th*mh + mh) x [tw*mw, tw*mw + mw),
tile (th, tw) in [0, ceil(P/mh)) x [0, ceil(Q/mw)). Its input is the span of the padded input it
reads, rows [th*mh*sh, th*mh*sh + (mh-1)*sh + Dh) (Dh = (R-1)*dh + 1, likewise columns),
zero-filled to the FFT lengths Lh x Lw. Per batch of tiles (a box of images x tile rows x tile
columns, sized under the workspace cap):
    X[g, f, c, t]  = FFT2(tile t of channel g*Cg + c)              f in [0, F), F = Lh*(Lw//2+1)
    Y[g, f, k, t]  = W[g, f] @ X[g, f]     (Kg x Cg) @ (Cg x T): one batched complex matmul
    y1 tile        = IFFT2(Y); its circular outputs Dh-1 + i*sh, Dw-1 + j*sw (i < mh, j < mw)
                     are the linear ones (overlap-save) and are written to out[n, k, p, q].
W is the FFT2 of the flipped kernel dilated with zeros (taps (R-1-r)*dh, (S-1-s)*dw), zero-filled
to Lh x Lw: a circular convolution with the flipped kernel is the correlation PyTorch computes,
for real and complex weights alike. It is made once per call, in blocks of output channels, and
kept for the next call with equal weights (`_weight_spectrum`). conv1d is the case H = R = 1
(Lh = 1: 1-D transforms only). Real inputs use real transforms (rfftn/irfftn), complex ones c2c.

Stride: the tile computes the stride-1 correlation and keeps every sh-th row and sw-th column.
That wastes the stride-1 work between the kept outputs (about a factor sh*sw of the transforms
once tiles hold several outputs; tiles placed at each output when the stride exceeds the tile),
so auto should not pick fft for large strides; the measured dispatch table decides.

Tile lengths: for each axis the FFT length L runs over the 5-smooth numbers from D up to the
whole output's span (thinned geometrically), mh = min(P, (Lh - Dh)//sh + 1); a cost model of the
transforms ((C + K) transforms of L log L per tile), the frequency-domain matmuls (K*Cg complex
multiply-adds per frequency and tile, plus a per-frequency call overhead per batch) and the
weight transform picks the pair, among those whose workspace fits the cap (else the smallest;
the chunk planner then splits the call). Constants: measured on the 2-core development machine
(see `_COST`); within about 1.3x of the best length measured on the cases below.

Speed (scripts/fft_crossover.py, 2-core AMD EPYC, float32, medians against cpu:implicit, with
the pocketfft batches below for conv1d too): conv1d (1, 16, 8000) x (16, 16, k) 'same': 0.2x at
k = 3, 0.6x at 31, 1.1x at 63, 1.7x at 127, 2.9x at 255 (fft takes 1.1-2 ms at any k; the
crossover is near k = 60); conv2d (1, 16, 128, 128) k x k: 0.14x at 3x3, 1.3x at 9x9, 4x at
31x31, 7x at 63x63, 13x at 127x127. conv1d of real float32/float64 without groups now runs on
fft_lanes.py (LANES), 2.7-5.5x faster than the implicit GEMM on the runner's long-kernel cases
(its docstring has the runs).

Padding: 'zeros' is never materialised: each tile copies the part of its span that lies inside
the input (as_strided views, converting to the transform dtype as it copies) into a zeroed
buffer. The other modes pad the input first (conv/_padding.padded_copy, a copy counted in the
workspace, as im2col's).

Precision: float16 and float32 are transformed in float32 (complex64), float64 in float64,
complex64 / complex128 in their own precision; float16 rounds once, from the float32 result.
The error of an FFT convolution is relative to the norms of the whole tile, not to each output:
about eps * log2(L) * sqrt(sum of squared products) per output, where the tests' tolerance is
RTOL[dtype] * sqrt(Cg*R*S) * max|ref| (tests/_helpers.py). Measured against the float64
reference on fresh standard-normal data (scripts/fft_accuracy.py: 493 cases, kernel lengths
3..255, channels 1..256, input lengths up to 64k, conv1d and conv2d, groups, dilation, stride),
the largest error was 0.068 of that tolerance in float32 and 0.064 in complex64 (the
other algorithms: 0.03), 0.12 in float16 (its output rounding, as direct's), 0.004 in float64 and
0.003 in complex128. The worst cases are the shortest reductions (one channel, 3 taps), where
the tolerance is tightest; kernels of 63 taps or more stay below 0.02. So float32 transforms
keep float32 within its tolerance with a 15x margin, and float64 transforms (twice the time)
are not needed. Accepted bound: the tests' default tolerance of every dtype, asserted by
tests/test_cpu_fft.py over a grid of its own (float32 and complex64 under 0.25 of it there).
Data whose outputs are small next to the tile's other values (a few large elements among small
ones) get an error relative to the large ones: the limit of every FFT convolution.

Non-finite values: an inf or nan in the transform would spread over its whole tile. Each batch
checks its tiles; the non-finite input elements and weight taps are left out of the transforms
(zeroed) and their products added exactly afterwards (`_add_non_finite_terms`), so inf and nan
appear where the direct sum has them (inf * 0 padding = nan, as PyTorch's native kernels).

Memory: the weight spectrum (K*Cg*F complex; 1.25x that while it is made), plus per batch the
tile buffer, the input spectra, the matmul's result and the inverse transform (`_tile_bytes`);
`FftPlan.workspace` is what chunks.py reports (conv.explain shows it with the tiles), and a call
over the cap runs as chunks of itself (conv/backend/cpu/__init__.py:_run_chunked). Between
calls each thread keeps its last weight spectrum (when it fits a quarter of the cap; on
fft_lanes, with its mixing form, twice its size, when both fit) and the tile buffers
(ScratchBuffers). A call with non-finite values also allocates their index lists
and one output plane of products at a time.

Transforms: scipy.fft with workers = the backend's thread count where SciPy imports, numpy.fft
otherwise (SciPy is not a dependency); conv1d of real float32/float64 without groups on
fft_lanes.py's own transforms, in SIMD lanes across channels (its docstring), where its plan
(_lanes_plan: power-of-two tiles, its own cost model) fits the cap. It shares this file's
weight spectrum, source (the padded copy), overlap-save geometry and exact inf/nan terms.
"""
from __future__ import annotations

import bisect
import functools
import threading
from dataclasses import dataclass

import numba
import numpy as np

from ..._dtypes import accumulator_dtype as compute_dtype
from ..._padding import padded_copy
from ..._spec import ConvSpec
from ..._threads import num_threads
from ..._workspace import ScratchBuffers
from .implicit import MR

# The transform's real dtype per compute dtype (float16 computes in float32: conv/_dtypes.py).
TRANSFORM_DTYPE = {
    np.dtype(np.float32): np.dtype(np.float32),
    np.dtype(np.float64): np.dtype(np.float64),
    np.dtype(np.complex64): np.dtype(np.complex64),
    np.dtype(np.complex128): np.dtype(np.complex128),
}

# The most a batch of tiles takes (bytes; also at most a quarter of the workspace cap): larger
# batches make the per-frequency matmuls wider, but past this the buffers leave the caches.
BATCH_BYTES = 16 << 20

# Cost model, seconds (fitted to the fastest of repeated timings on the 2-core development
# machine, scipy.fft with workers=2 and OpenBLAS): per point*log2(points) of one real transform (a
# complex one counts twice), per 1-D line transformed, per complex multiply-add of the
# frequency-domain matmuls, per matmul call (one per frequency, group and batch), per element
# copied into or out of a tile (zeroing and the finiteness check included), per batch (the
# Python around its transforms).
_COST = {
    4: dict(fft=0.25e-9, line=40e-9, mac=0.2e-9, call=0.1e-6, copy=0.7e-9, batch=40e-6),
    8: dict(fft=0.47e-9, line=45e-9, mac=0.35e-9, call=0.15e-6, copy=0.9e-9, batch=40e-6),
}
# A weight spectrum larger than this is made in blocks (_weight_blocks).
WEIGHT_BLOCK_BYTES = 4 << 20
_MAX_CANDIDATES = 40        # FFT lengths tried per axis


# conv1d of real float32 and float64 inputs without groups runs on fft_lanes.py (its docstring
# says why) where its plan fits the cap; tests set this False to run those on pocketfft too.
LANES = True
# fft_lanes' cost model, seconds (fitted with non-negative least squares to 33 timings of its
# kernel on the 2-core development machine, float32, C and K 1..64, kernels 31..255, L 128..4096;
# within 0.63-1.48x of each, and its pick within 1.0-1.11x of the fastest L measured on five of the
# six shapes, 1.33x on the sixth): per lane-channel x M log2 M of a transform, per real
# multiply-add of the products, per byte of the mixing weights read by each task once they
# outgrow L2 (1 MiB), per round of tasks.
_LANES_COST = dict(fft=9.5e-11, mac=3.8e-11, byte=2.1e-12, round=8.7e-6)
_LANES_MAX_LENGTH = 1 << 16


@dataclass(frozen=True)
class FftPlan:
    lengths: tuple[int, int]        # FFT lengths (Lh, Lw)
    per_tile: tuple[int, int]       # strided outputs per tile (mh, mw)
    tiles: tuple[int, int]          # tiles per image (ceil(P/mh), ceil(Q/mw))
    batch: tuple[int, int, int]     # a batch's box of (images, tile rows, tile columns)
    workspace: int                  # bytes allocated beyond the output
    engine: str = "pocketfft"       # "pocketfft" (this file's batches) or "lanes" (fft_lanes.py)


# --------------------------------------------------------------------------- planning

@functools.cache
def _smooth_numbers(limit: int) -> tuple[int, ...]:
    """The 5-smooth numbers (2^a 3^b 5^c) up to limit, sorted: the lengths FFTs are fast at."""
    out = []
    p2 = 1
    while p2 <= limit:
        p3 = p2
        while p3 <= limit:
            p5 = p3
            while p5 <= limit:
                out.append(p5)
                p5 *= 5
            p3 *= 3
        p2 *= 2
    return tuple(sorted(out))


def _next_smooth(n: int) -> int:
    bound = 1 << max(1, (n - 1).bit_length())          # a power of two >= n is 5-smooth
    numbers = _smooth_numbers(bound)
    return numbers[bisect.bisect_left(numbers, n)]


def _candidates(taps_span: int, outputs: int, stride: int) -> list[int]:
    """FFT lengths worth trying along one axis: from the dilated kernel's span D to the span of
    all outputs (at most 2**48: no buffer holds more), 5-smooth, at most _MAX_CANDIDATES of them
    (geometrically thinned). Python ints: absurd strides and dilations make them huge."""
    lo = _next_smooth(taps_span)
    hi = max(lo, _next_smooth(min((outputs - 1) * stride + taps_span, 1 << 48)))
    numbers = _smooth_numbers(1 << max(1, (hi - 1).bit_length()))
    lengths = numbers[bisect.bisect_left(numbers, lo):bisect.bisect_right(numbers, hi)]
    if len(lengths) > _MAX_CANDIDATES:
        keep = np.unique(np.round(np.geomspace(1, len(lengths), _MAX_CANDIDATES)).astype(int) - 1)
        lengths = [lengths[i] for i in keep]
    return list(lengths)


def _geometry(spec: ConvSpec) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """Per axis (h, w): (dilated kernel span D, stride, outputs, taps)."""
    dh = (spec.r - 1) * spec.dilation[0] + 1
    dw = (spec.s - 1) * spec.dilation[1] + 1
    return (dh, spec.stride[0], spec.p, spec.r), (dw, spec.stride[1], spec.q, spec.s)


def _per_tile(length: int, span: int, stride: int, outputs: int) -> int:
    return min(outputs, (length - span) // stride + 1)


def _tile_bytes(spec: ConvSpec, lh, lw):
    """Peak bytes one tile adds to a batch (lh, lw ints or arrays of them): its buffer, then its
    spectra and their product, then the product, the inverse's temporary and its output."""
    tdt = TRANSFORM_DTYPE[compute_dtype(spec.dtype)]
    real = tdt.kind == "f"
    rs = tdt.itemsize if real else tdt.itemsize // 2
    cs = 2 * rs
    points = lh * lw
    freqs = lh * (lw // 2 + 1) if real else points
    buf = spec.c * points * tdt.itemsize
    spectra = spec.c * freqs * cs
    product = spec.k * freqs * cs
    temp = product * (lh > 1) if real else 0        # irfftn's c2c pass before its c2r pass
    inverse = spec.k * points * (rs if real else cs)
    maximum = np.maximum if isinstance(points, np.ndarray) else max
    return buf + maximum(spectra + product, product + temp + inverse)


def _fixed_bytes(spec: ConvSpec, x_dtype: np.dtype, lh, lw):
    """(bytes held through the batches, peak while the weight spectrum is made)."""
    tdt = TRANSFORM_DTYPE[compute_dtype(spec.dtype)]
    real = tdt.kind == "f"
    cs = tdt.itemsize * 2 if real else tdt.itemsize
    points = lh * lw
    freqs = lh * (lw // 2 + 1) if real else points
    kcg = spec.k * spec.c_per_group
    spectrum = kcg * freqs * cs
    padded = 0
    if spec.padding_mode != "zeros" and any(spec.pad):
        top, bottom, left, right = spec.pad
        padded = spec.n * spec.c * (spec.h + top + bottom) * (spec.w + left + right) * \
            np.dtype(x_dtype).itemsize
    # The spectrum, and the copy of the weights it is kept with (_weight_spectrum).
    held = padded + spectrum + kcg * spec.r * spec.s * compute_dtype(spec.dtype).itemsize
    # Made in blocks (_weight_blocks): the block's buffer and its transform.
    gb, kb = _weight_blocks(spec, tdt, lh, lw)
    block = gb * kb * spec.c_per_group
    return held, held + block * (points * tdt.itemsize + freqs * cs)


def _weight_blocks(spec: ConvSpec, tdt: np.dtype, lh, lw) -> tuple[int, int]:
    """(groups, output channels per group) of a block of the weight spectrum made at once:
    everything when the spectrum is small (one transform call), else about 1/8 of it (a peak of
    about 1.25x the spectrum, not 2x). lh, lw may be arrays (the planner's candidates)."""
    kg, groups, cg = spec.k_per_group, spec.groups, spec.c_per_group
    freqs = lh * (lw // 2 + 1) if tdt.kind == "f" else lh * lw
    small = spec.k * cg * freqs * (2 * tdt.itemsize if tdt.kind == "f" else tdt.itemsize) \
        <= WEIGHT_BLOCK_BYTES
    if not isinstance(small, np.ndarray):
        small = bool(small)
        return (groups, kg if small else -(-kg // 8)) if kg >= 8 else \
            (groups if small else -(-groups // 8), kg)
    if kg >= 8:
        return groups, np.where(small, kg, -(-kg // 8))
    return np.where(small, groups, -(-groups // 8)), kg


def _batch_box(n: int, th: int, tw: int, most: int) -> tuple[int, int, int]:
    """The largest box of (images, tile rows, tile columns), whole rows of tiles first, holding
    at most `most` tiles (one at least), its lengths splitting their axes evenly."""
    def even(size: int, length: int) -> int:
        count = -(-size // max(1, length))
        return -(-size // count)
    if most >= th * tw:
        return even(n, most // (th * tw)), th, tw
    if most >= tw:
        return 1, even(th, most // tw), tw
    return 1, 1, even(tw, most)


def _workspace_of(spec, x_dtype, limit, lh, lw, th, tw):
    """(workspace bytes, batch box) of one pair of FFT lengths."""
    held, peak_weight = _fixed_bytes(spec, x_dtype, lh, lw)
    tile = int(_tile_bytes(spec, lh, lw))
    budget = min(BATCH_BYTES, limit // 4, max(0, limit - held))
    box = _batch_box(spec.n, th, tw, max(1, budget // max(1, tile)))
    batch = box[0] * box[1] * box[2] * tile
    return int(max(peak_weight, held + batch)), box


def plan(spec: ConvSpec, x_dtype: np.dtype, limit: int) -> FftPlan:
    """Tile lengths, batching and workspace of spec on an input of x_dtype under the cap `limit`:
    fft_lanes' where it runs (_lanes_plan), else the cheapest pair of FFT lengths (cost model
    above) whose workspace fits, else the one with the smallest workspace."""
    return _plan(spec, np.dtype(x_dtype), int(limit), bool(LANES), num_threads())


plan.cache_clear = lambda: _plan.cache_clear()


@functools.lru_cache(maxsize=1024)
def _plan(spec: ConvSpec, x_dtype: np.dtype, limit: int, lanes: bool, threads: int) -> FftPlan:
    if lanes and _runs_on_lanes(spec, x_dtype):
        lanes_plan = _lanes_plan(spec, limit, threads)
        if lanes_plan is not None:
            return lanes_plan
    (dh, sh, p, _), (dw, sw, q, _) = _geometry(spec)
    tdt = TRANSFORM_DTYPE[compute_dtype(spec.dtype)]
    real = tdt.kind == "f"
    cost = _COST[tdt.itemsize if real else tdt.itemsize // 2]
    # The cost model in float64 (sizes of absurd calls overflow int64; their plans never run
    # unchunked), the chosen plan in Python ints.
    cands_h, cands_w = _candidates(dh, p, sh), _candidates(dw, q, sw)
    lh = np.array(cands_h, dtype=np.float64)[:, None]
    lw = np.array(cands_w, dtype=np.float64)[None, :]
    mh = np.minimum(p, (lh - dh) // sh + 1)
    mw = np.minimum(q, (lw - dw) // sw + 1)
    th, tw = -(-p // mh), -(-q // mw)
    tiles = spec.n * th * tw
    points = (lh * lw).astype(np.float64)
    freqs = lh * (lw // 2 + 1) if real else lh * lw
    lines = np.where(lh > 1, lh + (lw // 2 + 1 if real else lw), 1)
    transform = (cost["fft"] * (1.0 if real else 2.0) * points * np.log2(np.maximum(points, 2.0))
                 + cost["line"] * lines)
    tile_bytes = _tile_bytes(spec, lh, lw)
    batches = np.ceil(tiles * tile_bytes / min(BATCH_BYTES, max(1, limit // 4)))
    kcg = spec.k * spec.c_per_group
    total = (tiles * (spec.c + spec.k) * transform              # forward and inverse transforms
             + cost["mac"] * tiles * freqs * kcg                # the frequency-domain matmuls
             + cost["call"] * freqs * spec.groups * batches     # one matmul call per frequency
             + kcg * (transform + cost["copy"] * points)        # the weight's transforms
             + cost["copy"] * tiles * (2 * spec.c * points + spec.k * mh * mw)
             + cost["batch"] * batches)
    # The cheapest whose workspace fits (with one tile per batch at least), else the smallest.
    held, peak_weight = _fixed_bytes(spec, x_dtype, lh, lw)
    least = np.maximum(peak_weight, held + tile_bytes)
    fits = least <= limit
    flat = int(np.argmin(np.where(fits, total, np.inf)) if fits.any() else np.argmin(least))
    i, j = np.unravel_index(flat, total.shape)
    a, b = cands_h[i], cands_w[j]
    per_h, per_w = min(p, (a - dh) // sh + 1), min(q, (b - dw) // sw + 1)
    tiles_h, tiles_w = -(-p // per_h), -(-q // per_w)
    ws, box = _workspace_of(spec, x_dtype, limit, a, b, tiles_h, tiles_w)
    return FftPlan((a, b), (per_h, per_w), (tiles_h, tiles_w), box, ws)


def _runs_on_lanes(spec: ConvSpec, x_dtype: np.dtype) -> bool:
    """fft_lanes' scope: conv1d, real float32 or float64 (the input's own dtype: float16 tiles
    are made in float32 here), no groups."""
    tdt = TRANSFORM_DTYPE[compute_dtype(spec.dtype)]
    return (spec.op == "conv1d" and spec.groups == 1 and tdt.kind == "f"
            and np.dtype(x_dtype) == tdt)


def _lanes_plan(spec: ConvSpec, limit: int, threads: int) -> FftPlan | None:
    """fft_lanes' tiles: the power-of-two length L (8 .. 2^16, at least the kernel's span) of
    the least modelled time (_LANES_COST) whose workspace fits the cap; None when none fits."""
    from . import fft_lanes
    dw, sw, q, _ = _geometry(spec)[1]
    tdt = TRANSFORM_DTYPE[compute_dtype(spec.dtype)]
    size = tdt.itemsize
    cv, kv = fft_lanes.padded_channels(spec.c, tdt), fft_lanes.padded_channels(spec.k, tdt)
    cost = _LANES_COST
    best = None
    length = max(8, 1 << (dw - 1).bit_length())
    whole = (q - 1) * sw + dw                   # the span of every output: one tile
    source = spec.n * spec.c * (spec.w + spec.pad[2] + spec.pad[3])
    while length <= _LANES_MAX_LENGTH:
        per = _per_tile(length, dw, sw, q)
        tiles = -(-q // per)
        points, freqs = length // 2, length // 2 + 1
        tasks = spec.n * -(-tiles // MR)
        rounds = -(-tasks // max(1, threads))
        mix_bytes = fft_lanes.mixing_bytes(length, cv, kv, tdt)
        seconds = rounds * (cost["fft"] * MR * (cv + kv) * points * np.log2(max(points, 2))
                            + cost["mac"] * MR * freqs * 4 * cv * kv
                            + cost["byte"] * mix_bytes * (mix_bytes > (1 << 20))
                            + cost["round"])
        # Held: the spectrum fft_conv makes (1.25x while it is made), the copy of the weights
        # kept with it, the mixing weights and the padded source; per task its own buffers; and
        # where the source holds inf or nan, its copy without them and their mask.
        _, peak_weight = _fixed_bytes(spec, tdt, 1, length)
        workspace = (peak_weight + mix_bytes + source * (size + 1)
                     + numba.config.NUMBA_NUM_THREADS * fft_lanes.task_bytes(length, cv, kv, tdt))
        if workspace <= limit and (best is None or seconds < best[0]):
            best = (seconds, length, per, tiles, workspace)
        if length >= whole:
            break
        length *= 2
    if best is None:
        return None
    _, length, per, tiles, workspace = best
    return FftPlan((1, length), (1, per), (1, tiles), (1, 1, MR), int(workspace), "lanes")


def describe(spec: ConvSpec, x_dtype: np.dtype, limit: int) -> str:
    """The plan in words, for conv.explain."""
    fp = plan(spec, np.dtype(x_dtype), int(limit))
    (lh, lw), (mh, mw), (th, tw) = fp.lengths, fp.per_tile, fp.tiles
    size = f"{lw}" if lh == 1 else f"{lh}x{lw}"
    outputs = f"{mw}" if lh == 1 else f"{mh}x{mw}"
    batch = fp.batch[0] * fp.batch[1] * fp.batch[2]
    tdt = TRANSFORM_DTYPE[compute_dtype(spec.dtype)]
    if fp.engine == "lanes":
        return (f"FFT tiles of {size} ({tdt.name}), {outputs} outputs each, {th * tw} per image, "
                f"{batch} per task, transforms in vectors across channels")
    return (f"FFT tiles of {size} ({tdt.name}), {outputs} outputs each, {th * tw} per image, "
            f"{batch} per batch")


def workspace(spec: ConvSpec, x_dtype: np.dtype, limit: int) -> int:
    """Bytes fft_conv allocates for spec beyond its output (chunks.py's estimate)."""
    if spec.is_empty:
        return 0
    return plan(spec, np.dtype(x_dtype), int(limit)).workspace


# --------------------------------------------------------------------------- transforms

_use_scipy: bool | None = None      # None: decided on first use (tests set it to force numpy.fft)


def _transforms(threads: int):
    """(module, extra keyword arguments) of the FFT implementation: scipy.fft with its workers
    where SciPy imports, numpy.fft otherwise."""
    global _use_scipy
    if _use_scipy is None:
        try:
            import scipy.fft
            _use_scipy = True
        except ImportError:
            _use_scipy = False
    if _use_scipy:
        import scipy.fft
        return scipy.fft, {"workers": max(1, int(threads))}
    return np.fft, {}


# --------------------------------------------------------------------------- the convolution

def _identity(a: np.ndarray, **_) -> np.ndarray:
    return a


def _split_view(a: np.ndarray, shape: tuple) -> np.ndarray:
    """a with some axes split (never a copy: assigning to it writes a)."""
    view = a.view()
    view.shape = shape
    return view


def _runs(first: int, count: int, step: int, span: int, src_offset: int, src_size: int):
    """Along one axis, tiles first..first+count-1 starting at padded coordinate t*step: runs
    (t0, t1, lo, hi) of consecutive tiles whose span offsets [lo, hi) lie inside the source
    (source index = padded coordinate - src_offset), empty parts left out. The tiles wholly
    inside make one run; those that cross an end of the source (fewer than span/step + 1 at
    each end) one run each."""
    end = first + count
    # Tiles from `touch0` on end past the source's start; tiles before `touch1` start before
    # its end; those from `inner0` on start inside it, those before `inner1` end inside it.
    touch0 = max(first, (src_offset - span) // step + 1)
    touch1 = min(end, max(0, -(-(src_offset + src_size) // step)))
    inner0 = max(touch0, -(-src_offset // step))
    inner1 = min(touch1, (src_offset + src_size - span) // step + 1)

    def edge(t):
        start = t * step
        return (t, t + 1, min(span, max(0, src_offset - start)),
                min(span, max(0, src_offset + src_size - start)))

    if inner1 <= inner0:        # no tile wholly inside: every touching tile is an edge
        return [run for run in map(edge, range(touch0, touch1)) if run[3] > run[2]]
    return ([run for run in map(edge, range(touch0, inner0)) if run[3] > run[2]]
            + [(inner0, inner1, 0, span)]
            + [run for run in map(edge, range(inner1, touch1)) if run[3] > run[2]])


def fft_conv(x4: np.ndarray, w: np.ndarray, out: np.ndarray, spec: ConvSpec,
             scratch: ScratchBuffers, threads: int, limit: int) -> None:
    """out (N, K, P, Q), in the compute dtype, = the conv of x4 (any dtype) by w (compute dtype),
    without bias, all of spec at once: the module docstring's map."""
    fp = plan(spec, np.dtype(x4.dtype), int(limit))
    fft, kwargs = _transforms(threads)
    tdt = TRANSFORM_DTYPE[out.dtype]
    if fp.engine == "lanes":
        _lanes_conv(x4, w, out, spec, fp, tdt, fft, kwargs, scratch, limit)
        return
    real = tdt.kind == "f"
    forward, inverse = (fft.rfftn, fft.irfftn) if real else (fft.fftn, fft.ifftn)
    if fp.lengths == (1, 1):
        # Transforms of length 1 are the identity (a one-tap piece of a chunked call, one output
        # per tile): the frequency-domain product is the direct one.
        forward = inverse = _identity
    (dh, sh, p, _), (dw, sw, q, _) = _geometry(spec)
    (lh, lw), (mh, mw), (th, tw), (nb, bh, bw) = fp.lengths, fp.per_tile, fp.tiles, fp.batch
    axes = (1, 2) if lh > 1 else (2,)
    shape = (lh, lw) if lh > 1 else (lw,)
    groups, cg, kg = spec.groups, spec.c_per_group, spec.k_per_group
    n_img = spec.n
    freqs = lh * (lw // 2 + 1) if real else lh * lw

    bad_taps = ~np.isfinite(w)
    any_bad_taps = bool(bad_taps.any())
    spectrum = _weight_spectrum(w, bad_taps if any_bad_taps else None, spec, fp, tdt, forward,
                                kwargs, scratch, limit)

    # The source the tiles copy from: the input itself ('zeros': padding never materialised) or
    # its padded copy (the other modes).
    if spec.padding_mode == "zeros" or not any(spec.pad):
        src, off_h, off_w = x4, spec.pad[0], spec.pad[2]
    else:
        src, off_h, off_w = padded_copy(x4, spec), 0, 0
    step_h, step_w = mh * sh, mw * sw
    span_h, span_w = (mh - 1) * sh + dh, (mw - 1) * sw + dw
    sn, sc, srow, scol = src.strides
    bad_input = False

    for n0 in range(0, n_img, nb):
        n1 = min(n_img, n0 + nb)
        for th0 in range(0, th, bh):
            th1 = min(th, th0 + bh)
            for tw0 in range(0, tw, bw):
                tw1 = min(tw, tw0 + bw)
                count = (n1 - n0) * (th1 - th0) * (tw1 - tw0)
                buf = scratch.get("fft_tiles", (groups, lh, lw, cg, n1 - n0, th1 - th0,
                                                tw1 - tw0), tdt)
                buf[...] = 0
                for a0, a1, lo_h, hi_h in _runs(th0, th1 - th0, step_h, span_h, off_h,
                                                src.shape[2]):
                    row0 = a0 * step_h + lo_h - off_h
                    for b0, b1, lo_w, hi_w in _runs(tw0, tw1 - tw0, step_w, span_w, off_w,
                                                    src.shape[3]):
                        col0 = b0 * step_w + lo_w - off_w
                        view = np.lib.stride_tricks.as_strided(
                            src[n0:n1, :, row0:, col0:],
                            shape=(n1 - n0, groups, cg, a1 - a0, b1 - b0, hi_h - lo_h,
                                   hi_w - lo_w),
                            # (a run of one tile: no step, which may be past int64 in bytes)
                            strides=(sn, sc * cg, sc, srow * step_h if a1 - a0 > 1 else 0,
                                     scol * step_w if b1 - b0 > 1 else 0, srow, scol),
                            writeable=False)
                        buf[:, lo_h:hi_h, lo_w:hi_w, :, :, a0 - th0:a1 - th0, b0 - tw0:b1 - tw0] = \
                            view.transpose(1, 5, 6, 2, 0, 3, 4)
                if not np.isfinite(buf.sum()):
                    bad = ~np.isfinite(buf)
                    if bad.any():
                        buf[bad] = 0        # their products are added exactly afterwards
                        bad_input = True
                    del bad
                spectra = forward(buf, s=shape, axes=axes, **kwargs).reshape(
                    groups, freqs, cg, count)
                # Into a kept buffer: a fresh one per batch would be page-faulted in each time.
                product = scratch.get("fft_product", (groups, freqs, kg, count), spectra.dtype)
                if cg == 1:
                    np.multiply(spectrum, spectra, out=product)     # (G, F, Kg, 1) * (G, F, 1, T)
                else:
                    np.matmul(spectrum, spectra, out=product)       # (G, F, Kg, Cg) @ (G, F, Cg, T)
                del spectra
                product = product.reshape(groups, lh, freqs // lh, kg, n1 - n0, th1 - th0,
                                          tw1 - tw0)
                tiles_out = inverse(product, s=shape, axes=axes, **kwargs)
                del product
                # The linear (overlap-save) outputs, every sh-th row and sw-th column.
                kept = tiles_out[:, dh - 1:dh - 1 + (mh - 1) * sh + 1:sh,
                                 dw - 1:dw - 1 + (mw - 1) * sw + 1:sw]
                _scatter(out[n0:n1, :, th0 * mh:min(p, th1 * mh), tw0 * mw:min(q, tw1 * mw)],
                         kept, mh, mw)
                del tiles_out, kept
    if bad_input or any_bad_taps:
        _add_non_finite_terms(src, (off_h, off_w), w, bad_taps, bad_input, out, spec)


def _lanes_conv(x4, w, out, spec, fp, tdt, fft, kwargs, scratch, limit) -> None:
    """fft_conv on fft_lanes.py (fp.engine "lanes"): the same spectrum of the weights, the same
    source, the same exact terms of inf and nan."""
    from . import fft_lanes
    bad_taps = ~np.isfinite(w)
    any_bad_taps = bool(bad_taps.any())
    spectrum = _weight_spectrum(w, bad_taps if any_bad_taps else None, spec, fp, tdt,
                                fft.rfftn, kwargs, scratch, limit)
    if spec.padding_mode == "zeros" or not any(spec.pad):
        src, offset = x4, spec.pad[2]
    else:
        src, offset = padded_copy(x4, spec), 0
    dw, sw, _, _ = _geometry(spec)[1]
    # Its mixing form of the weights is kept with the spectrum this file keeps, within the same
    # quarter of the cap.
    kept = getattr(_last_weights, "entry", None)
    mixing = fft_lanes.mixing_bytes(fp.lengths[1], fft_lanes.padded_channels(spec.c, tdt),
                                    fft_lanes.padded_channels(spec.k, tdt), tdt)
    keep = kept is not None and kept[2] is spectrum and \
        spectrum.nbytes + w.nbytes + mixing <= limit // 4
    bad_input = fft_lanes.conv1d(src[:, :, 0], offset, spectrum, fp.lengths[1], dw, sw,
                                 fp.per_tile[1], fp.tiles[1], out[:, :, 0], keep)
    if bad_input or any_bad_taps:
        _add_non_finite_terms(src, (0, offset), w, bad_taps, bad_input, out, spec)


# The last weight spectrum each thread made, with the weights it was made from: a layer called
# again with the same weights (inference, a chunked call's pieces, autotuning's repeated calls)
# skips its K*Cg transforms. Kept while it fits a quarter of the workspace cap.
_last_weights = threading.local()


def _weight_spectrum(w, bad_taps, spec, fp, tdt, forward, kwargs, scratch, limit) -> np.ndarray:
    """W[g, f, k, c]: the spectrum of the flipped kernel dilated with zeros, non-finite taps
    (bad_taps, or None) left out; made in blocks of output channels or groups
    (_weight_blocks), so that its peak is about 1.25x its size."""
    (lh, lw) = fp.lengths
    key = (spec.groups, spec.dilation, fp.lengths, tdt, w.shape, w.dtype)
    last = getattr(_last_weights, "entry", None)
    if last is not None and last[0] == key and np.array_equal(last[1], w):
        return last[2]
    _last_weights.entry = None
    groups, cg, kg, r, s = spec.groups, spec.c_per_group, spec.k_per_group, spec.r, spec.s
    dh, dw = (r - 1) * spec.dilation[0] + 1, (s - 1) * spec.dilation[1] + 1
    axes, shape = ((1, 2), (lh, lw)) if lh > 1 else ((2,), (lw,))
    freqs = lh * (lw // 2 + 1) if tdt.kind == "f" else lh * lw
    flipped = w if bad_taps is None else np.where(bad_taps, 0, w)
    flipped = flipped.reshape(groups, kg, cg, r, s)[:, :, :, ::-1, ::-1].transpose(0, 3, 4, 1, 2)
    # (length-1 transforms are the identity: the "spectrum" is the real kernel itself)
    spectrum = np.empty((groups, freqs, kg, cg),
                        tdt if fp.lengths == (1, 1) else np.result_type(tdt, np.complex64))
    gb, kb = (int(v) for v in _weight_blocks(spec, tdt, lh, lw))
    for g0 in range(0, groups, gb):
        for k0 in range(0, kg, kb):
            block = flipped[g0:g0 + gb, :, :, k0:k0 + kb]
            wbuf = scratch.get("fft_weight", (block.shape[0], lh, lw) + block.shape[3:], tdt)
            wbuf[...] = 0
            wbuf[:, 0:dh:spec.dilation[0], 0:dw:spec.dilation[1]] = block
            spectrum[g0:g0 + gb, :, k0:k0 + kb] = forward(wbuf, s=shape, axes=axes,
                                                          **kwargs).reshape(
                block.shape[0], freqs, block.shape[3], cg)
            del wbuf
    if bad_taps is None and spectrum.nbytes + w.nbytes <= limit // 4:
        _last_weights.entry = (key, w.copy(), spectrum)
    return spectrum


def _scatter(dst: np.ndarray, kept: np.ndarray, mh: int, mw: int) -> None:
    """dst (nb, K, ph, pw) = the batch's outputs kept (G, mh, mw, Kg, nb, bh, bw): tile (a, b)'s
    output (i, j) goes to dst[..., a*mh + i, b*mw + j] where that is inside dst."""
    nb, _, ph, pw = dst.shape
    groups, kg = kept.shape[0], kept.shape[3]
    full_h, rest_h = divmod(ph, mh)
    full_w, rest_w = divmod(pw, mw)
    parts_h = ([(0, full_h, mh)] if full_h else []) + ([(full_h, full_h + 1, rest_h)]
                                                       if rest_h else [])
    parts_w = ([(0, full_w, mw)] if full_w else []) + ([(full_w, full_w + 1, rest_w)]
                                                       if rest_w else [])
    for a0, a1, rows in parts_h:
        for b0, b1, cols in parts_w:
            region = dst[:, :, a0 * mh:a0 * mh + (a1 - a0) * rows,
                         b0 * mw:b0 * mw + (b1 - b0) * cols]
            target = _split_view(region, (nb, groups, kg, a1 - a0, rows, b1 - b0, cols))
            target[...] = kept[:, :rows, :cols, :, :, a0:a1, b0:b1].transpose(4, 0, 3, 5, 1, 6, 2)


# --------------------------------------------------------------------------- inf and nan

def _add_non_finite_terms(src, offsets, w, bad_taps, bad_input, out, spec) -> None:
    """out += the products the transforms left out, computed exactly (IEEE: inf * 0 = nan):
    each non-finite element of the source (the input, or its padded copy) times the finite
    weight taps that meet it, and each non-finite weight tap times every padded-input element it
    meets (zero padding and non-finite elements included). Allocates index lists of the
    non-finite elements and one output plane's worth of products at a time."""
    (_, sh, p, r), (_, sw, q, s) = _geometry(spec)
    dil_h, dil_w = spec.dilation
    cg, kg = spec.c_per_group, spec.k_per_group
    off_h, off_w = offsets
    if bad_input:
        # Non-finite elements of the source, at padded coordinates (u, v), channel by channel.
        for n in range(spec.n):
            for c in range(spec.c):
                rows, cols = np.nonzero(~np.isfinite(src[n, c]))
                if not len(rows):
                    continue
                values = src[n, c][rows, cols].astype(out.dtype)
                u, v = rows + off_h, cols + off_w
                g = c // cg
                wk = w[g * kg:(g + 1) * kg, c - g * cg]                 # (Kg, R, S)
                # Non-finite taps meet these elements in the loop over taps below.
                finite_k = ~bad_taps[g * kg:(g + 1) * kg, c - g * cg]
                for tap_r in range(r):
                    if tap_r * dil_h > u.max():             # (also: no int64 overflow below)
                        break
                    pr = u - tap_r * dil_h                  # output row * stride, if it is one
                    ok_r = (pr >= 0) & (pr % sh == 0) & (pr // sh < p)
                    if not ok_r.any():
                        continue
                    for tap_s in range(s):
                        if tap_s * dil_w > v.max():
                            break
                        qs = v - tap_s * dil_w
                        ok = ok_r & (qs >= 0) & (qs % sw == 0) & (qs // sw < q)
                        ks = g * kg + np.flatnonzero(finite_k[:, tap_r, tap_s])
                        if ok.any() and len(ks):
                            np.add.at(out[n], (ks[:, None], (pr[ok] // sh)[None, :],
                                               (qs[ok] // sw)[None, :]),
                                      wk[ks - g * kg, tap_r, tap_s][:, None] * values[ok][None, :])
    for k, c_local, tap_r, tap_s in zip(*np.nonzero(bad_taps)):
        # The tap meets source element (p*sh + tap_r*dil_h - off_h, ...) of output (p, q), or
        # the zero padding where that is outside the source: value * 0 (nan) there.
        c = (k // kg) * cg + c_local
        value = w[k, c_local, tap_r, tap_s]
        p0, p1, i0 = _inside(p, sh, tap_r * dil_h - off_h, src.shape[2])
        q0, q1, j0 = _inside(q, sw, tap_s * dil_w - off_w, src.shape[3])
        plane = out[:, k]
        zero_term = value * out.dtype.type(0)
        plane[:, :p0] += zero_term
        plane[:, p1:] += zero_term
        plane[:, p0:p1, :q0] += zero_term
        plane[:, p0:p1, q1:] += zero_term
        if p1 > p0 and q1 > q0:
            plane[:, p0:p1, q0:q1] += value * src[:, c, i0:i0 + (p1 - p0 - 1) * sh + 1:sh,
                                                  j0:j0 + (q1 - q0 - 1) * sw + 1:sw]


def _inside(outputs: int, stride: int, shift: int, size: int) -> tuple[int, int, int]:
    """Along one axis, the outputs [o0, o1) whose source index o*stride + shift is in [0, size),
    and the source index of o0."""
    o0 = min(outputs, max(0, -(shift // stride)))
    o1 = min(outputs, max(o0, -(-(size - shift) // stride)))
    return o0, o1, o0 * stride + shift
