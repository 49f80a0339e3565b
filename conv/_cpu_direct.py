"""numba-parallel direct convolution on the host.

One task per output plane (n, k), plane in [0, N*K). For each output row p it keeps a row
accumulator acc[0:Q] (in L1), and for each input channel c of k's group and tap (r, s) adds
w[k, c, r, s] * x[n, c, h, w] over the q range whose input column w = q*stride_w - pad_left + s*dil_w
lies inside the image: zero padding is resolved by clipping that range (no padded copy); the other
padding modes arrive pre-padded with pad_top = pad_left = 0. The q ranges depend only on s, so they
are computed once per call. The inner loop is an axpy over slices, which LLVM vectorises.
"""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _column_ranges(s_taps, q_out, w_in, stride_w, dil_w, pad_left):
    """For each tap s: [q_lo, q_hi) with 0 <= q*stride_w + off < w_in, and off = s*dil_w - pad_left."""
    ranges = np.zeros((s_taps, 3), dtype=np.int64)
    for s in range(s_taps):
        off = s * dil_w - pad_left
        q_lo = 0 if off >= 0 else (-off + stride_w - 1) // stride_w
        q_hi = min(q_out, (w_in - 1 - off) // stride_w + 1) if w_in - 1 - off >= 0 else 0
        ranges[s, 0], ranges[s, 1], ranges[s, 2] = q_lo, max(q_lo, q_hi), off
    return ranges


@numba.njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def direct_conv2d(x, w, out, groups, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left):
    n, k, p_out, q_out = out.shape
    h_in, w_in = x.shape[2], x.shape[3]
    kg = k // groups
    cg = w.shape[1]
    r_taps, s_taps = w.shape[2], w.shape[3]
    cols = _column_ranges(s_taps, q_out, w_in, stride_w, dil_w, pad_left)
    for plane in numba.prange(n * k):            # plane in [0, N*K)
        img = plane // k
        kk = plane % k
        c0 = (kk // kg) * cg                      # first input channel of kk's group
        acc = np.empty(q_out, dtype=out.dtype)
        for p in range(p_out):
            acc[:] = 0
            for r in range(r_taps):
                h = p * stride_h - pad_top + r * dil_h
                if h < 0 or h >= h_in:
                    continue
                for c in range(cg):
                    row = x[img, c0 + c, h]
                    for s in range(s_taps):
                        q_lo, q_hi, off = cols[s, 0], cols[s, 1], cols[s, 2]
                        wv = w[kk, c, r, s]
                        # Slices first, then a plain range loop: indices numba knows are
                        # non-negative, so no wraparound checks and the loop vectorises.
                        # (The two branches keep separate names: one variable holding both
                        # slices would be typed any-layout, and the unit-stride loop would not
                        # vectorise.)
                        dst = acc[q_lo:q_hi]
                        if stride_w == 1:
                            src_unit = row[q_lo + off:q_hi + off]
                            for i in range(q_hi - q_lo):
                                dst[i] += wv * src_unit[i]
                        else:
                            src_strided = row[q_lo * stride_w + off:(q_hi - 1) * stride_w + off + 1:
                                              stride_w]
                            for i in range(q_hi - q_lo):
                                dst[i] += wv * src_strided[i]
            out[img, kk, p] = acc


@numba.njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def direct_conv2d_wide(xp, w, out, groups, dil_h, dil_w):
    """Stride-1 variant on a padded input xp (N, C, Hp, Wp): one task per output plane (n, k).

    Output (p, q) and input (p + r*dil_h, q + s*dil_w) sit at flat offsets p*Wp + q and
    p*Wp + q + (r*dil_h*Wp + s*dil_w) of their planes, so on the "wide" grid of P rows of Wp
    columns each tap is ONE unit-stride axpy of length L = (P-1)*Wp + Q (instead of P short ones);
    the Wp - Q extra columns of each row are cropped at the end. Never reads past the plane:
    the last element read is (P-1 + (R-1)*dil_h)*Wp + Q-1 + (S-1)*dil_w = Hp*Wp - 1.
    """
    n, k, p_out, q_out = out.shape
    hp, wp = xp.shape[2], xp.shape[3]
    kg = k // groups
    cg = w.shape[1]
    r_taps, s_taps = w.shape[2], w.shape[3]
    length = (p_out - 1) * wp + q_out
    for plane in numba.prange(n * k):            # plane in [0, N*K)
        img = plane // k
        kk = plane % k
        c0 = (kk // kg) * cg
        acc = np.zeros(length, dtype=out.dtype)
        for c in range(cg):
            flat = xp[img, c0 + c].reshape(hp * wp)
            for r in range(r_taps):
                for s in range(s_taps):
                    wv = w[kk, c, r, s]
                    off = r * dil_h * wp + s * dil_w
                    src = flat[off:off + length]
                    for i in range(length):
                        acc[i] += wv * src[i]
        for p in range(p_out):
            row = acc[p * wp:p * wp + q_out]
            dst = out[img, kk, p]
            for q in range(q_out):
                dst[q] = row[q]
