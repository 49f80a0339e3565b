"""numba.cuda strided -> contiguous copies, for the rare input the backend cannot view as 4-D.

A conv1d input (N, C, L) / (C, L) or an unbatched conv2d input (C, H, W) that is a non-contiguous
device array cannot be reshaped to (N, C, H, W) without a copy; these make that copy on the device
(the caller's array is only read).

version 0  copy_2d / copy_3d: one thread per element of dst, flat index in dst's C order (last
           coordinate fastest, so writes coalesce), grid-stride loop; src may have any strides.
"""
from __future__ import annotations

from numba import cuda

BLOCK = 256


@cuda.jit
def copy_2d(src, dst):
    A, B = dst.shape
    for idx in range(cuda.grid(1), A * B, cuda.gridsize(1)):    # range [0, A*B)
        dst[idx // B, idx % B] = src[idx // B, idx % B]


@cuda.jit
def copy_3d(src, dst):
    A, B, L = dst.shape
    for idx in range(cuda.grid(1), A * B * L, cuda.gridsize(1)):    # range [0, A*B*L)
        a = idx // (B * L)
        b = (idx // L) % B
        dst[a, b, idx % L] = src[a, b, idx % L]
