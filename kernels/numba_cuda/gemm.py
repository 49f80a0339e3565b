"""numba.cuda tiled shared-memory GEMM for im2col convolution, writing straight into the output.

Per group g:  out[n0 + nl, g*Kg + m, p0 + pl, q] = sum_i  wgt[g*Kg + m, i] * cols[g, i, j]  (+ bias)
    m in [0, Kg) output channel within the group     (GEMM row)
    i in [0, Cg*R*S) reduction index = (cl*R + r)*S + s, read from wgt (K, Cg, R, S) as (cl, r, s)
    j in [0, nb*pb*Q) = (nl*pb + pl)*Q + q            (GEMM column; see im2col.py)
cols (G, Cg*R*S, J) is in the accumulator's dtype; `acc` is a 1-element array holding its zero.

version 1  gemm_tiled: a (BN, BM) = (16, 16) thread block computes a BM x BN tile of one group's
           product, one output per thread: threadIdx.x -> j (column, coalesced cols reads and output
           writes), threadIdx.y -> m. blockIdx.x in [0, ceil(J/BN)), blockIdx.y in [0, ceil(Kg/BM)),
           blockIdx.z (grid-stride) in [0, G). The reduction walks i in steps of BK = 16: the block
           stages wgt[m tile, i tile] and cols[i tile, j tile] in shared memory (zero-filled past
           Kg, Cg*R*S and J so partial tiles need no branches in the inner loop), syncs, and every
           thread does BK multiply-adds from shared memory. Threads past Kg or J load and sync but
           do not write.
"""
from __future__ import annotations

from conv.kernels.numba_cuda import common as _common
from numba import cuda

build_families = _common.build_families

BM = BN = BK = 16


def _gemm(widen):
    @cuda.jit
    def gemm_tiled(wgt, cols, bias, out, acc, n0, p0, pb, has_bias):
        w_tile = cuda.shared.array((BM, BK), dtype=acc.dtype)
        c_tile = cuda.shared.array((BK, BN), dtype=acc.dtype)
        G, CRS, J = cols.shape
        Kg = out.shape[1] // G
        Q = out.shape[3]
        R, S = wgt.shape[2], wgt.shape[3]
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y          # range [0, BN), [0, BM)
        j = cuda.blockIdx.x * BN + tx                         # GEMM column, may be >= J
        m = cuda.blockIdx.y * BM + ty                         # GEMM row, may be >= Kg
        for g in range(cuda.blockIdx.z, G, cuda.gridDim.z):
            k = g * Kg + m
            total = acc[0]
            for i0 in range(0, CRS, BK):
                i = i0 + tx                                   # this thread's wgt column
                if m < Kg and i < CRS:
                    s = i % S
                    r = (i // S) % R
                    w_tile[ty, tx] = widen(wgt[k, i // (R * S), r, s])
                else:
                    w_tile[ty, tx] = acc[0]
                i = i0 + ty                                   # this thread's cols row
                if i < CRS and j < J:
                    c_tile[ty, tx] = cols[g, i, j]
                else:
                    c_tile[ty, tx] = acc[0]
                cuda.syncthreads()
                for kk in range(BK):
                    total += w_tile[ty, kk] * c_tile[kk, tx]
                cuda.syncthreads()                            # tiles are overwritten next
            if m < Kg and j < J:
                if has_bias:
                    total += widen(bias[k])
                q = j % Q
                t = j // Q
                out[n0 + t // pb, k, p0 + t % pb, q] = total
    return gemm_tiled


GEMM_TILED = build_families(_gemm)
