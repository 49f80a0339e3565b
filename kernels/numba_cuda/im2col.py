"""numba.cuda im2col: unfold a chunk of images into the column matrix of a GEMM (gemm.py).

cols[g, i, j] = x[n, g*Cg + cl, h, w] with
    i = (cl*R + r)*S + s          range [0, Cg*R*S)   (the weight's own memory order)
    j = (nl*pb + pl)*Q + q         range [0, nb*pb*Q)  images n = n0 + nl, output rows p = p0 + pl
    h = p*stride_h - top + r*dil_h,  w = q*stride_w - left + s*dil_w  through the padding mode
(common.source_index; a zero-padded position stores 0). cols has the accumulator's dtype:
values are widened once here (float16 -> float32), not in the GEMM loop.

Coordinates: n in [0, N), g in [0, G), cl in [0, Cg), h in [0, H), w in [0, W), p in [0, P),
q in [0, Q), r in [0, R), s in [0, S); x is (N, C, H, W), possibly strided.

version 0  im2col: one thread per element of cols (g, i, j), flat index with j fastest so a warp
           writes one contiguous run of cols and reads neighbouring input columns; grid-stride loop.
           The batch chunk [n0, n0+nb) and row band [p0, p0+pb) are chosen by the host so that cols
           stays under the workspace limit.
"""
from __future__ import annotations

from conv.kernels.numba_cuda import common as _common
from numba import cuda

build_families, source_index = _common.build_families, _common.source_index

BLOCK = 256


def _im2col(widen):
    @cuda.jit
    def im2col(x, cols, n0, p0, pb, Q, R, S, sh, sw, dh, dw, top, left, mode):
        G, CRS, J = cols.shape
        H, W = x.shape[2], x.shape[3]
        Cg = CRS // (R * S)
        for idx in range(cuda.grid(1), G * CRS * J, cuda.gridsize(1)):   # range [0, G*CRS*J)
            j = idx % J
            t = idx // J
            i = t % CRS
            g = t // CRS
            q = j % Q
            t = j // Q
            p = p0 + t % pb
            n = n0 + t // pb
            s = i % S
            t = i // S
            r = t % R
            cl = t // R
            h = source_index(p * sh - top + r * dh, H, mode)
            w = source_index(q * sw - left + s * dw, W, mode)
            if h >= 0 and w >= 0:
                cols[g, i, j] = widen(x[n, g * Cg + cl, h, w])
            else:
                cols[g, i, j] = 0
    return im2col


IM2COL = build_families(_im2col)
