"""numba-parallel direct convolution on the host: one task per output plane (n, k), looping over
the group's input channels c and taps (r, s), with a contiguous inner loop over q."""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(parallel=True, fastmath=False, cache=True, nogil=True)
def direct_conv2d(xp, w, out, groups, stride_h, stride_w, dil_h, dil_w):
    n, k, p, q = out.shape
    kg = k // groups
    cg = w.shape[1]
    r_taps, s_taps = w.shape[2], w.shape[3]
    for plane in numba.prange(n * k):          # plane in [0, n*k)
        img = plane // k
        kk = plane % k
        c0 = (kk // kg) * cg                    # first input channel of kk's group
        acc = np.zeros((p, q), dtype=out.dtype)
        for c in range(cg):
            for r in range(r_taps):
                for s in range(s_taps):
                    wv = w[kk, c, r, s]
                    h_off = r * dil_h
                    w_off = s * dil_w
                    for pp in range(p):
                        row = xp[img, c0 + c, pp * stride_h + h_off]
                        for qq in range(q):
                            acc[pp, qq] += wv * row[qq * stride_w + w_off]
        out[img, kk] = acc
