"""FFT convolution of conv1d with the transforms in SIMD lanes across channels: fft.py's
overlap-save tiles (its docstring has the tiling, padding, precision and inf/nan handling), for
real float32 and float64 inputs without groups. Where it runs, fft.py's plan says "lanes".

Why: fft.py transforms each tile's channels one line at a time through scipy.fft (pocketfft),
about 0.4 us for a line of 270 points here, and multiplies the spectra with one small complex
matmul per frequency; on the long-kernel conv1d (1 x 16 x 8000, kernel 63) its transforms and
matmuls took 1.3 ms, against PyTorch's 6.9 ms. Here one transform does a whole vector of
channels at once, in straight-line vector code, and the frequency-domain products are one real
GEMM per frequency on implicit.py's micro-kernel. The benchmark runner's runs (2-core Zen 4,
float32, PyTorch in its own process with the same threads) measured that case at 0.615 ms with
radix-2 passes (bench/results/cpu/2026-12-03-cpu-2core-zen4-avx512-fftlanes-run1) and 0.503 ms
with the radix-4 ones (...-dilated-run1), against PyTorch's 6.6 and 6.1 ms; kernel 127: 0.582
and 0.449 ms against 12.0 and 11.8.

Transforms. A tile's L real points (L a power of two) of channel c are the L/2 complex points
    z[m, c] = x[2m] + i x[2m+1]                               m < M = L/2
transformed by a complex FFT of length M (`_cfft`: Stockham passes of radix 4, `_butterfly4`,
and one of radix 2, `_butterfly`, where log2 M is odd; each call one vector of channels), then
split into the real input's spectrum (`_real_spectrum`):
    2X[f] = (Z[f] + conj Z[M-f]) - i e^(-2 pi i f/L) (Z[f] - conj Z[M-f])     f in [0, M]
(Z[M] = Z[0]). The inverse runs the same way backwards (`_real_spectrum` again, then the complex
FFT with conjugate twiddles): Z'[f] = (Y[f] + conj Y[M-f]) + i e^(2 pi i f/L) (Y[f] - conj
Y[M-f]), whose inverse transform holds y[2m] + i y[2m+1]. The factors 1/2 and 1/M of both
sides are folded into the weights (their spectrum divided by 2L).

Layouts (elements; Cv, Kv: the input and output channels rounded up to whole vectors, the extra
lanes zero): the transform buffers hold a row per point, [re of Cv lanes | im of Cv lanes]; the
block's spectra xs[t, f, 2Cv] likewise, and the products ys[t, f, 2Kv]. The frequency-domain
product Y[f] = W[f] X[f] (K x C complex) is, in real numbers,
    [Yr | Yi] = [Xr | Xi] @ [[Wr^T, Wi^T], [-Wi^T, Wr^T]]       (rows: tiles; 2Cv x 2Kv)
one GEMM per frequency with the block's tiles as rows, `wmix[f]` its right-hand side.

Who computes what: `_conv_kernel`, one task per (image, block of `block` tiles, a multiple of
implicit.MR). The task gathers each tile's span of every channel (zero outside the source:
'zeros' padding by index arithmetic; the other modes read fft.py's padded copy; a source with
inf or nan is first copied with them read as zero, and fft.py adds their terms exactly);
transforms it into its rows of xs; runs the GEMMs of every frequency over its tiles (MR-row panels x NR columns, the last
columns narrower); and turns each tile's products back into the outputs it keeps
(overlap-save: circular index D - 1 + i*stride for the tile's i-th output), written to
out[n, k, p]. Its buffers (a, b, xs, ys) are its own; wmix is shared and read by every task.

Precision: the transforms and products run in the input's dtype, as fft.py's; its bound holds.
scripts/fft_accuracy.py (float32 and float64, 2026-12-03, its conv1d cases on this engine)
measured at most 0.067 of the tests' tolerance in float32 (one channel, 3 taps, 16384 points)
and 0.004 in float64, as fft.py's docstring gives for the pocketfft batches (0.068 and 0.004).

Not here (fft.py's pocketfft path runs them): conv2d, groups, complex dtypes, float16 (its
tiles are float32 in fft.py; numba has no float16 arithmetic on the host).
"""
from __future__ import annotations

import functools
import threading

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ..._threads import serialised_if_needed
from .implicit import MR, NV, _any_tile, _vector_type, lanes
from .winograd_lanes import _transpose_block, _vector_io

# --------------------------------------------------------------------------- vector intrinsics


class _Complex:
    """Vectors of complex lanes in LLVM IR, stored [re | im] (the imaginary parts `half`
    elements after the real ones): the intrinsics' arithmetic, written once."""

    def __init__(self, context, builder, elem):
        self.builder = builder
        self.vec, _, self._load, self._store = _vector_io(context, builder, elem)

    def load(self, base, at, half):
        return (self._load(base, at), self._load(base, self.builder.add(at, half)))

    def store(self, value, base, at, half):
        self._store(value[0], base, at)
        self._store(value[1], base, self.builder.add(at, half))

    def splat(self, re, im):
        """The scalar re + i im in every lane."""
        b, vec = self.builder, self.vec
        mask = ir.Constant(ir.VectorType(ir.IntType(32), vec.count), [0] * vec.count)
        lanes_of = [b.shuffle_vector(b.insert_element(ir.Constant(vec, None), v,
                                                      ir.Constant(ir.IntType(32), 0)),
                                     ir.Constant(vec, None), mask) for v in (re, im)]
        return tuple(lanes_of)

    def add(self, a, c):
        return (self.builder.fadd(a[0], c[0]), self.builder.fadd(a[1], c[1]))

    def sub(self, a, c):
        return (self.builder.fsub(a[0], c[0]), self.builder.fsub(a[1], c[1]))

    def conj_add(self, a, c):
        """a + conj c"""
        return (self.builder.fadd(a[0], c[0]), self.builder.fsub(a[1], c[1]))

    def conj_sub(self, a, c):
        """a - conj c"""
        return (self.builder.fsub(a[0], c[0]), self.builder.fadd(a[1], c[1]))

    def times(self, w, v):
        b = self.builder
        return (b.fsub(b.fmul(w[0], v[0]), b.fmul(w[1], v[1])),
                b.fadd(b.fmul(w[0], v[1]), b.fmul(w[1], v[0])))

    def add_i(self, a, c, sign):
        """a + sign * i * c, sign +1 or -1"""
        b = self.builder
        if sign > 0:
            return (b.fsub(a[0], c[1]), b.fadd(a[1], c[0]))
        return (b.fadd(a[0], c[1]), b.fsub(a[1], c[0]))


def _operands(context, builder, signature, args):
    """Each argument as LLVM values (arrays as their data pointers, integers as i64, floats as
    the arrays' element type), and the _Complex arithmetic of that element type."""
    arrays = [t for t in signature.args if isinstance(t, types.Array)]
    elem = arrays[0].dtype
    values = []
    for t, v in zip(signature.args, args):
        if isinstance(t, types.Array):
            values.append(context.make_array(t)(context, builder, v).data)
        elif isinstance(t, types.Integer):
            values.append(context.cast(builder, v, t, types.int64))
        else:
            values.append(context.cast(builder, v, t, elem))
    return values, _Complex(context, builder, elem)


def _checked(*args):
    """The signature's arguments are arrays of one float dtype, integers and floats."""
    arrays = [a for a in args if isinstance(a, types.Array)]
    return bool(arrays) and all(a.dtype == arrays[0].dtype for a in arrays) and \
        isinstance(arrays[0].dtype, types.Float)


@intrinsic
def _butterfly(typingctx, src, i0, i1, dst, o0, o1, half, wr, wi):
    """For l < lanes, with a = src[i0+l] + i src[i0+half+l] and b likewise at i1:
    dst[o0+l] + i dst[o0+half+l] = a + b, dst[o1+l] + i dst[o1+half+l] = (wr + i wi)(a - b)."""
    if not _checked(src, dst):
        return None
    sig = types.void(src, i0, i1, dst, o0, o1, half, wr, wi)

    def codegen(context, builder, signature, args):
        (s, i0, i1, d, o0, o1, half, wr, wi), cx = _operands(context, builder, signature, args)
        a, b = cx.load(s, i0, half), cx.load(s, i1, half)
        cx.store(cx.add(a, b), d, o0, half)
        cx.store(cx.times(cx.splat(wr, wi), cx.sub(a, b)), d, o1, half)
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def _butterfly4(typingctx, inverse, src, i0, qs, dst, o0, os, half, wr, wi, w2r, w2i, w3r, w3i):
    """Two radix-2 Stockham passes fused (module docstring, "Transforms"): for l < lanes, with
    x_q = src[i0 + q*qs + l] + i src[i0 + q*qs + half + l] (q < 4), A = x0 - x2, B = x1 - x3,
    s = x0 + x2 + x1 + x3, t = x0 + x2 - x1 - x3, and w, w2, w3 = w^1, w^2, w^3:
    dst at o0 + r*os (r < 4, [re | im] as src) = s, w (A -+ iB), w2 t, w3 (A +- iB), the upper
    signs forward, the lower ones for the inverse (conjugate twiddles). inverse: a literal."""
    if not isinstance(inverse, types.IntegerLiteral) or not _checked(src, dst):
        return None
    sign = 1 if inverse.literal_value else -1       # of the i in w (A -+ iB)
    sig = types.void(inverse, src, i0, qs, dst, o0, os, half, wr, wi, w2r, w2i, w3r, w3i)

    def codegen(context, builder, signature, args):
        (_, s, i0, qs, d, o0, os, half, *w), cx = _operands(context, builder, signature, args)
        i64 = ir.IntType(64)
        x = [cx.load(s, builder.add(i0, builder.mul(ir.Constant(i64, q), qs)), half)
             for q in range(4)]
        e, f = cx.add(x[0], x[2]), cx.add(x[1], x[3])
        a, b = cx.sub(x[0], x[2]), cx.sub(x[1], x[3])
        w1, w2, w3 = (cx.splat(w[2 * i], w[2 * i + 1]) for i in range(3))
        outputs = (cx.add(e, f), cx.times(w1, cx.add_i(a, b, sign)), cx.times(w2, cx.sub(e, f)),
                   cx.times(w3, cx.add_i(a, b, -sign)))
        for r, value in enumerate(outputs):
            cx.store(value, d, builder.add(o0, builder.mul(ir.Constant(i64, r), os)), half)
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def _real_spectrum(typingctx, inverse, z, u, v, dst, o, half, wr, wi):
    """The real input's spectrum from the half-length one, or back (module docstring,
    "Transforms"): for l < lanes, with U = z[u+l] + i z[u+half+l], V likewise at v, and
    w = wr + i wi, dst[o+l] + i dst[o+half+l] = (U + conj V) -+ i w (U - conj V): the upper sign
    forward (U = Z[f], V = Z[M-f], w = e^(-2 pi i f/L): 2X[f]), the lower one for the inverse
    (U = Y[f], V = Y[M-f], w = e^(2 pi i f/L): Z'[f]). inverse: a literal."""
    if not isinstance(inverse, types.IntegerLiteral) or not _checked(z, dst):
        return None
    sign = 1 if inverse.literal_value else -1
    sig = types.void(inverse, z, u, v, dst, o, half, wr, wi)

    def codegen(context, builder, signature, args):
        (_, z, u, v, d, o, half, wr, wi), cx = _operands(context, builder, signature, args)
        big_u, big_v = cx.load(z, u, half), cx.load(z, v, half)
        q = cx.times(cx.splat(wr, wi), cx.conj_sub(big_u, big_v))
        cx.store(cx.add_i(cx.conj_add(big_u, big_v), q, sign), d, o, half)
        return context.get_dummy_value()
    return sig, codegen


# --------------------------------------------------------------------------- transforms

@numba.njit(inline="always")
def _pass4(inverse, src, i0, qs, dst, o0, os, half, wr, wi, w2r, w2i, w3r, w3i):
    # One branch per literal direction: each compiles its own intrinsic.
    if inverse:
        _butterfly4(1, src, i0, qs, dst, o0, os, half, wr, wi, w2r, w2i, w3r, w3i)
    else:
        _butterfly4(0, src, i0, qs, dst, o0, os, half, wr, wi, w2r, w2i, w3r, w3i)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _cfft(a, b, points, half, lane, tw_r, tw_i, length, inverse):
    """The complex FFT (inverse: with conjugate twiddles, unscaled) of length `points` (a power
    of two) of the rows of a ([re | im], `half` lanes each): Stockham passes between a and b,
    natural order out, radix 4 (two radix-2 passes fused, `_butterfly4`) and one radix-2 pass
    where log2(points) is odd. tw_r + i tw_i = e^(-2 pi i j/length), length = 2*points. True
    when the result is in b."""
    row = 2 * half
    l = points // 2             # the radix-2 passes' (l, m): l*m = points/2
    m = 1
    in_b = False
    while l >= 2:
        src, dst = (b, a) if in_b else (a, b)
        step = length // (2 * l)
        for j in range(l // 2):
            wr, wi = tw_r[j * step], tw_i[j * step]
            w2r, w2i = tw_r[2 * j * step], tw_i[2 * j * step]
            if inverse:
                wi, w2i = -wi, -w2i
            w3r, w3i = wr * w2r - wi * w2i, wr * w2i + wi * w2r
            for k in range(m):
                i0 = (k + j * m) * row
                o0 = (k + 4 * j * m) * row
                for v in range(0, half, lane):
                    _pass4(inverse, src, i0 + v, (l // 2) * m * row, dst, o0 + v, m * row, half,
                           wr, wi, w2r, w2i, w3r, w3i)
        in_b = not in_b
        l //= 4
        m *= 4
    if l == 1:
        src, dst = (b, a) if in_b else (a, b)
        for k in range(m):
            i0 = k * row
            for v in range(0, half, lane):
                _butterfly(src, i0 + v, i0 + m * row + v, dst, i0 + v, i0 + m * row + v, half,
                           tw_r[0], tw_i[0])
        in_b = not in_b
    return in_b


@numba.njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def _conv_kernel(x, sx_n, sx_c, src_off, wmix, red_off, tw_r, tw_i, length, span, stride,
                 per_tile, n_tiles, block, cv, kv, lane, out, so_n, so_k):
    """out[n, k, p] (x (N, C, W) the source, out (N, K, P), both contiguous along their last
    axis; sx_n, sx_c, so_n, so_k their other strides in elements) for every tile of every
    image: the module docstring's tasks. span: the dilated kernel's span D."""
    n_img, channels, width = x.shape
    k_count, p_count = out.shape[1], out.shape[2]
    points = length // 2
    freqs = points + 1
    step = per_tile * stride
    blocks = (n_tiles + block - 1) // block
    rows = 2 * max(cv, kv)
    dt = wmix.dtype
    for task in numba.prange(n_img * blocks):
        n = task // blocks
        t0 = (task % blocks) * block
        nt = min(n_tiles, t0 + block) - t0
        a = np.empty(points * rows, dt)
        b = np.empty(points * rows, dt)
        xs = np.empty(block * freqs * 2 * cv, dt)
        ys = np.empty(block * freqs * 2 * kv, dt)
        xs[nt * freqs * 2 * cv:] = 0            # the panels' rows past the last tile
        for t in range(nt):
            base = (t0 + t) * step - src_off    # source index of the tile's first point
            # a[j*cv + c] = x[n, c, base + j] (rows [re | im] of z: point j = 2m + part is
            # a[(2m + part)*cv + c]), zero outside [0, width): the tile transposed, whole
            # lanes x lanes blocks in registers.
            a[:points * 2 * cv] = 0
            j_lo = max(0, -base)
            j_hi = min(length, width - base)
            full_c = channels - channels % lane
            for c0 in range(0, full_c, lane):
                j = j_lo
                while j + lane <= j_hi:
                    _transpose_block(x, n * sx_n + c0 * sx_c + base + j, sx_c, a, j * cv + c0, cv)
                    j += lane
                for jj in range(j, j_hi):
                    for c in range(c0, c0 + lane):
                        a[jj * cv + c] = x[n, c, base + jj]
            for c in range(full_c, channels):
                for jj in range(j_lo, j_hi):
                    a[jj * cv + c] = x[n, c, base + jj]
            in_b = _cfft(a, b, points, cv, lane, tw_r, tw_i, length, False)
            z = b if in_b else a
            for f in range(freqs):
                u = (f % points) * 2 * cv
                v = ((points - f) % points) * 2 * cv
                o = (t * freqs + f) * 2 * cv
                for e in range(0, cv, lane):
                    _real_spectrum(0, z, u + e, v + e, xs, o + e, cv, tw_r[f], tw_i[f])
        # Y[t, f] = X[t, f] @ wmix[f] for the block's tiles (MR-row panels).
        ldx, ldy = freqs * 2 * cv, freqs * 2 * kv
        for f in range(freqs):
            for j0 in range(0, 2 * kv, NV * lane):
                nv = min(NV, (2 * kv - j0) // lane)
                for p0 in range(0, nt, MR):
                    _any_tile(MR, nv, xs, (p0 * freqs + f) * 2 * cv, ldx, wmix,
                              f * 2 * cv * 2 * kv + j0, red_off, 2 * cv, ys,
                              (p0 * freqs + f) * 2 * kv + j0, ldy)
        for t in range(nt):
            for f in range(points):
                u = (t * freqs + f) * 2 * kv
                v = (t * freqs + points - f) * 2 * kv
                for e in range(0, kv, lane):
                    _real_spectrum(1, ys, u + e, v + e, a, f * 2 * kv + e, kv, tw_r[f],
                                   -tw_i[f])
            in_b = _cfft(a, b, points, kv, lane, tw_r, tw_i, length, True)
            z = b if in_b else a
            p0 = (t0 + t) * per_tile
            count = min(per_tile, p_count - p0)
            # out[n, k, p0 + i] = z[(span - 1 + i*stride)*kv + k] (the circular index of output
            # i; rows [re | im] hold point j at j*kv): stride 1 in lanes x lanes blocks.
            full_k = k_count - k_count % lane if stride == 1 else 0
            for k0 in range(0, full_k, lane):
                i = 0
                while i + lane <= count:
                    _transpose_block(z, (span - 1 + i) * kv + k0, kv, out,
                                     n * so_n + k0 * so_k + p0 + i, so_k)
                    i += lane
                for ii in range(i, count):
                    for k in range(k0, k0 + lane):
                        out[n, k, p0 + ii] = z[(span - 1 + ii) * kv + k]
            for k in range(full_k, k_count):
                for i in range(count):
                    out[n, k, p0 + i] = z[(span - 1 + i * stride) * kv + k]


_conv = serialised_if_needed(_conv_kernel)


# --------------------------------------------------------------------------- the host side

@functools.lru_cache(maxsize=64)
def twiddles(length: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """(cos, -sin) of 2 pi j/length for j in [0, length/2]: e^(-2 pi i j/length), computed in
    float64 and rounded once."""
    j = np.arange(length // 2 + 1)
    return (np.cos(2 * np.pi * j / length).astype(dtype),
            (-np.sin(2 * np.pi * j / length)).astype(dtype))


def padded_channels(channels: int, dtype: np.dtype) -> int:
    lane = lanes(dtype)
    return -(-channels // lane) * lane


def mixing_weights(spectrum: np.ndarray, length: int, cv: int, kv: int) -> np.ndarray:
    """wmix (F, 2Cv, 2Kv): the real form of the complex products (module docstring) of
    spectrum (1, F, K, C), fft.py's weight spectrum, divided by 2*length."""
    _, freqs, k, c = spectrum.shape
    dtype = spectrum.real.dtype
    w = spectrum[0].transpose(0, 2, 1) / (2 * length)           # (F, C, K)
    wmix = np.zeros((freqs, 2 * cv, 2 * kv), dtype)
    wmix[:, :c, :k] = w.real
    wmix[:, :c, kv:kv + k] = w.imag
    wmix[:, cv:cv + c, :k] = -w.imag
    wmix[:, cv:cv + c, kv:kv + k] = w.real
    return wmix


def mixing_bytes(length: int, cv: int, kv: int, dtype: np.dtype) -> int:
    """wmix's size."""
    return (length // 2 + 1) * 4 * cv * kv * np.dtype(dtype).itemsize


def task_bytes(length: int, cv: int, kv: int, dtype: np.dtype) -> int:
    """One task's own buffers: two transform buffers and a block's spectra and products."""
    points, freqs = length // 2, length // 2 + 1
    return (2 * points * 2 * max(cv, kv) + MR * freqs * 2 * (cv + kv)) * np.dtype(dtype).itemsize


# The last wmix each thread made and the spectrum it came from, kept only with fft.py's kept
# spectrum of equal weights (its identity is the key) and, as that, within a quarter of the cap.
_last_mix = threading.local()


@functools.lru_cache(maxsize=64)
def _reduction_offsets(cv: int, kv: int) -> np.ndarray:
    """The micro-kernel's offsets of wmix[f]'s rows (red_off)."""
    return np.arange(2 * cv, dtype=np.int64) * (2 * kv)


def conv1d(src: np.ndarray, src_off: int, spectrum: np.ndarray, length: int, span: int,
           stride: int, per_tile: int, n_tiles: int, out: np.ndarray, keep: bool) -> bool:
    """out (N, K, P) = the conv1d of src (N, C, W: the input, or its padded copy with src_off
    0) by the weights whose fft.py spectrum is `spectrum` (1, F, K, C), through tiles of
    `length` points holding per_tile outputs each; inf and nan in src read as zero (from a copy
    without them). True when src held any: fft.py then adds their terms exactly. keep: whether
    the thread keeps this call's wmix for the next (else it drops the one it kept)."""
    dtype = out.dtype
    bad = not np.isfinite(src.sum())    # inf and nan reach the sum (or a finite one overflows)
    if bad:
        finite = np.isfinite(src)
        bad = not finite.all()
        if bad:
            src = np.where(finite, src, src.dtype.type(0))
        del finite
    cv, kv = padded_channels(src.shape[1], dtype), padded_channels(out.shape[1], dtype)
    last = getattr(_last_mix, "entry", None)
    if last is not None and last[0] is spectrum and last[1] == length:
        wmix = last[2]
    else:
        _last_mix.entry = None
        wmix = mixing_weights(spectrum, length, cv, kv)
        if keep:
            _last_mix.entry = (spectrum, length, wmix)
    tw_r, tw_i = twiddles(int(length), np.dtype(dtype))
    size = src.dtype.itemsize
    if src.strides[2] != size or src.strides[0] % size or src.strides[1] % size:
        src = np.ascontiguousarray(src)         # (the source's copy in the plan's workspace)
    assert out.strides[2] == size and not out.strides[0] % size and not out.strides[1] % size
    _conv(src, src.strides[0] // size, src.strides[1] // size, int(src_off), wmix,
          _reduction_offsets(cv, kv), tw_r, tw_i, int(length), int(span), int(stride),
          int(per_tile), int(n_tiles), MR, cv, kv, lanes(dtype), out, out.strides[0] // size,
          out.strides[1] // size)
    return bad
