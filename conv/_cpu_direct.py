"""numba-parallel direct convolution on the host.

One task per output plane (n, k), plane in [0, N*K).

The padded input xp (N, C, Hp, Wp) arrives split into its stride phases
    phases[n, c, a*stride_w + b, i, j] = xp[n, c, i*stride_h + a, j*stride_w + b]
(for stride 1 that is xp itself, no copy). Tap (r, s) reads input row p*stride_h + r*dil_h =
(p + i0)*stride_h + a with a = (r*dil_h) % stride_h, i0 = (r*dil_h) // stride_h (and likewise
b, j0 for columns), so in phase (a, b) output (p, q) reads element (p + i0, q + j0): a stride-1
access. On the "wide" grid of P rows of Wph columns, output (p, q) and its input sit at flat offsets
p*Wph + q and p*Wph + q + (i0*Wph + j0), so each (channel, tap) is ONE unit-stride axpy of length
L = (P-1)*Wph + Q, which LLVM vectorises; the extra Wph - Q columns of each row are cropped at the
end. The last element read, (P-1+i0)*Wph + Q-1+j0, stays inside the phase plane.
"""
from __future__ import annotations

import numba
import numpy as np


def split_phases(xp: np.ndarray, stride_h: int, stride_w: int) -> np.ndarray:
    """(N, C, stride_h*stride_w, Hph, Wph) stride phases of xp (zero-filled where a phase is short)."""
    n, c, hp, wp = xp.shape
    if stride_h == stride_w == 1:
        return xp[:, :, None]
    hph, wph = -(-hp // stride_h), -(-wp // stride_w)
    phases = np.zeros((n, c, stride_h * stride_w, hph, wph), xp.dtype)
    for a in range(stride_h):
        for b in range(stride_w):
            part = xp[:, :, a::stride_h, b::stride_w]
            phases[:, :, a * stride_w + b, :part.shape[2], :part.shape[3]] = part
    return phases


def tap_offsets(r_taps, s_taps, stride_h, stride_w, dil_h, dil_w, hph, wph) -> np.ndarray:
    """For tap t = r*S + s: its flat offset in a channel's phases (PH, Hph, Wph) viewed as 1-D,
    phase (a*stride_w + b) * Hph*Wph plus i0*Wph + j0 inside the phase plane."""
    offsets = np.empty(r_taps * s_taps, np.int64)
    for r in range(r_taps):
        a, i0 = (r * dil_h) % stride_h, (r * dil_h) // stride_h
        for s in range(s_taps):
            b, j0 = (s * dil_w) % stride_w, (s * dil_w) // stride_w
            offsets[r * s_taps + s] = (a * stride_w + b) * hph * wph + i0 * wph + j0
    return offsets


@numba.njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def direct_conv2d(phases, tap_offset, w, out, groups):
    n, k, p_out, q_out = out.shape
    n_phases, hph, wph = phases.shape[2], phases.shape[3], phases.shape[4]
    kg = k // groups
    cg = w.shape[1]
    s_taps = w.shape[3]
    taps = w.shape[2] * s_taps
    length = (p_out - 1) * wph + q_out
    for plane in numba.prange(n * k):            # plane in [0, N*K)
        img = plane // k
        kk = plane % k
        c0 = (kk // kg) * cg                      # first input channel of kk's group
        acc = np.zeros(length, dtype=out.dtype)
        for c in range(cg):
            flat = phases[img, c0 + c].reshape(n_phases * hph * wph)
            for t in range(taps):
                wv = w[kk, c, t // s_taps, t % s_taps]
                off = tap_offset[t]
                # Slice first, then a plain range loop: indices numba knows are non-negative,
                # so no wraparound checks and the loop vectorises.
                src = flat[off:off + length]
                for i in range(length):
                    acc[i] += wv * src[i]
        for p in range(p_out):
            row = acc[p * wph:p * wph + q_out]
            dst = out[img, kk, p]
            for q in range(q_out):
                dst[q] = row[q]
