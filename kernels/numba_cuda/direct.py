"""numba.cuda direct convolution:
    out[n, k, p, q] = sum over c, r, s of x[n, c, h, w] * wgt[k, c - g*Cg, r, s]  (+ bias[k])
with h = p*stride_h - top + r*dil_h, w = q*stride_w - left + s*dil_w mapped through the padding
mode (common.source_index), c over the input channels of k's group g.

Coordinates and ranges: n in [0, N) image, k in [0, K) output channel, g = k // Kg its group,
c in [g*Cg, (g+1)*Cg) input channel (cl = c - g*Cg in [0, Cg)), h in [0, H) / w in [0, W) input
row / column, p in [0, P) / q in [0, Q) output row / column, r in [0, R) / s in [0, S) kernel tap.
All arrays are 4-D (N, C, H, W), (K, Cg, R, S), (N, K, P, Q); conv1d has H = R = P = 1. Inputs
may be strided; `acc` is a 1-element array holding the accumulator's zero (and giving its dtype).

version 0  direct_naive: one thread per output (n, k, p, q). Flat index over N*K*P*Q with q fastest
           (neighbouring threads read neighbouring input columns), grid-stride loop; each thread
           loops over cl, r, s reading x and wgt from global memory. The baseline.
version 1  direct_tiled: a block of (TQ, TP) threads = blockDim (x, y) owns a TP x TQ tile of output
           positions (p, q) and KT consecutive output channels k0 .. k0+KT-1 of one group, for one
           image n.  blockIdx.x in [0, tiles_p * tiles_q) picks the tile (q tiles fastest);
           blockIdx.y (grid-stride) in [0, G * ceil(Kg / KT)) picks (g, k0); blockIdx.z
           (grid-stride) picks n. For each input channel cl the block stages the patch of input
           its tile reads in shared memory: (TP-1)*stride_h + (R-1)*dil_h + 1 rows by
           (TQ-1)*stride_w + (S-1)*dil_w + 1 columns, padding resolved and values widened while
           loading (patch positions past the last row/column any output reads are left zero).
           Each thread then accumulates its (p, q) for all KT channels in registers, so a staged
           value serves up to R*S*KT multiply-adds instead of one global read each.
           The host picks (TQ, TP) = (16, 8), or (128, 1) when P == 1 (conv1d), and falls back to
           version 0 when the patch exceeds PATCH elements.
"""
from __future__ import annotations

from conv.kernels.numba_cuda import common as _common
from numba import cuda

build_families, source_index = _common.build_families, _common.source_index

KT = 4            # output channels per thread in version 1
PATCH = 2048      # shared-memory patch capacity (elements of the accumulator type)
BLOCK_2D = (16, 8)    # (TQ, TP) threads for version 1
BLOCK_1D = (128, 1)   # ... when P == 1
BLOCK_NAIVE = 128


def patch_elements(spec, block) -> int:
    """Shared-memory elements version 1 needs for `spec` with block (TQ, TP)."""
    tq, tp = block
    rows = (tp - 1) * spec.stride[0] + (spec.r - 1) * spec.dilation[0] + 1
    cols = (tq - 1) * spec.stride[1] + (spec.s - 1) * spec.dilation[1] + 1
    return rows * cols


def _naive(widen):
    @cuda.jit
    def direct_naive(x, wgt, bias, out, acc, groups, sh, sw, dh, dw, top, left, mode, has_bias):
        N, K, P, Q = out.shape
        H, W = x.shape[2], x.shape[3]
        Cg, R, S = wgt.shape[1], wgt.shape[2], wgt.shape[3]
        Kg = K // groups
        for idx in range(cuda.grid(1), N * K * P * Q, cuda.gridsize(1)):   # range [0, N*K*P*Q)
            q = idx % Q
            t = idx // Q
            p = t % P
            t //= P
            k = t % K
            n = t // K
            c0 = (k // Kg) * Cg                       # first input channel of k's group
            total = acc[0]
            for cl in range(Cg):
                for r in range(R):
                    h = source_index(p * sh - top + r * dh, H, mode)
                    if h < 0:                         # zero padding row
                        continue
                    for s in range(S):
                        w = source_index(q * sw - left + s * dw, W, mode)
                        if w >= 0:
                            total += widen(x[n, c0 + cl, h, w]) * widen(wgt[k, cl, r, s])
            if has_bias:
                total += widen(bias[k])
            out[n, k, p, q] = total
    return direct_naive


def _tiled(widen):
    @cuda.jit
    def direct_tiled(x, wgt, bias, out, acc, groups, sh, sw, dh, dw, top, left, mode, has_bias):
        patch = cuda.shared.array(PATCH, dtype=acc.dtype)
        sums = cuda.local.array(KT, dtype=acc.dtype)
        N, K, P, Q = out.shape
        H, W = x.shape[2], x.shape[3]
        Cg, R, S = wgt.shape[1], wgt.shape[2], wgt.shape[3]
        Kg = K // groups
        TQ, TP = cuda.blockDim.x, cuda.blockDim.y
        tq, tp = cuda.threadIdx.x, cuda.threadIdx.y           # range [0, TQ), [0, TP)
        tid = tp * TQ + tq                                    # range [0, TP*TQ)
        tiles_q = (Q + TQ - 1) // TQ
        p0 = (cuda.blockIdx.x // tiles_q) * TP                # tile origin; bounds checked below
        q0 = (cuda.blockIdx.x % tiles_q) * TQ
        p, q = p0 + tp, q0 + tq                               # may lie past P/Q in partial tiles
        active = p < P and q < Q                              # ... such threads still load + sync
        rows = (TP - 1) * sh + (R - 1) * dh + 1               # patch extent (rows x cols)
        cols = (TQ - 1) * sw + (S - 1) * dw + 1
        h0, w0 = p0 * sh - top, q0 * sw - left                # padded origin of the patch
        h_end = (P - 1) * sh + (R - 1) * dh - top             # last row / column any output reads:
        w_end = (Q - 1) * sw + (S - 1) * dw - left            # partial tiles' patches reach past it
        k_tiles = (Kg + KT - 1) // KT
        for gk in range(cuda.blockIdx.y, groups * k_tiles, cuda.gridDim.y):
            g = gk // k_tiles
            k0 = g * Kg + (gk % k_tiles) * KT                 # first output channel of this block
            kn = min(KT, (g + 1) * Kg - k0)                   # channels left in the group
            for n in range(cuda.blockIdx.z, N, cuda.gridDim.z):
                for j in range(KT):
                    sums[j] = acc[0]
                for cl in range(Cg):
                    c = g * Cg + cl
                    for e in range(tid, rows * cols, TP * TQ):
                        h = h0 + e // cols
                        w = w0 + e % cols
                        if h <= h_end and w <= w_end:                 # else read by no output
                            h = source_index(h, H, mode)
                            w = source_index(w, W, mode)
                        else:
                            h = -1
                        if h >= 0 and w >= 0:
                            patch[e] = widen(x[n, c, h, w])
                        else:
                            patch[e] = acc[0]
                    cuda.syncthreads()
                    if active:
                        for r in range(R):
                            row = (tp * sh + r * dh) * cols + tq * sw
                            for s in range(S):
                                v = patch[row + s * dw]
                                for j in range(kn):
                                    sums[j] += v * widen(wgt[k0 + j, cl, r, s])
                    cuda.syncthreads()                        # patch is overwritten next
                if active:
                    for j in range(kn):
                        total = sums[j]
                        if has_bias:
                            total += widen(bias[k0 + j])
                        out[n, k0 + j, p, q] = total
    return direct_tiled


DIRECT_NAIVE = build_families(_naive)
DIRECT_TILED = build_families(_tiled)
