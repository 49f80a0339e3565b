"""Device helpers shared by the numba.cuda kernels (numba_direct, numba_im2col, numba_gemm).

Padding is index arithmetic, never a padded copy: `source_index` maps a padded coordinate
i in [-lo, size + hi) to the unpadded coordinate it reads, or -1 where padding_mode="zeros" gives 0.
ConvSpec guarantees reflect pads < size and circular pads <= size, so one fold/wrap suffices.

Accumulation: every kernel family is built by a factory around a `widen` device function that
converts one loaded value to the accumulator's type (float16 -> float32, else the value itself);
within a family numba's type dispatch compiles one specialisation per dtype.
"""
from __future__ import annotations

import numpy as np
from numba import cuda, float32

# padding_mode -> the integer the kernels branch on.
ZEROS, REFLECT, REPLICATE, CIRCULAR = 0, 1, 2, 3
MODE_CODES = {"zeros": ZEROS, "reflect": REFLECT, "replicate": REPLICATE, "circular": CIRCULAR}


@cuda.jit(device=True, inline=True)
def source_index(i, size, mode):
    """Unpadded coordinate read by padded coordinate i (range [-size, 2*size)); -1 means zero."""
    if i >= 0 and i < size:
        return i
    if mode == ZEROS:
        return -1
    if mode == REFLECT:                       # edge not repeated: -1 -> 1, size -> size - 2
        return -i if i < 0 else 2 * (size - 1) - i
    if mode == REPLICATE:
        return 0 if i < 0 else size - 1
    return i + size if i < 0 else i - size    # CIRCULAR


@cuda.jit(device=True, inline=True)
def keep(v):
    return v


@cuda.jit(device=True, inline=True)
def to_float32(v):
    return float32(v)


# Accumulator dtype per input dtype, and the widen function (by name) that reaches it.
ACCUMULATOR = {
    np.dtype(np.float16): (np.dtype(np.float32), "to_float32"),
    np.dtype(np.float32): (np.dtype(np.float32), "keep"),
    np.dtype(np.float64): (np.dtype(np.float64), "keep"),
    np.dtype(np.complex64): (np.dtype(np.complex64), "keep"),
    np.dtype(np.complex128): (np.dtype(np.complex128), "keep"),
}
# Not here: integers. PyTorch has no CUDA integer convolution, and the simulator cannot mirror the
# GPU's wrapping store; integer inputs run on the CPU backend. The backend refuses them by name.
WIDEN = {"keep": keep, "to_float32": to_float32}


def build_families(factory) -> dict:
    """{widen name: kernel} for a kernel factory taking a widen device function."""
    return {name: factory(fn) for name, fn in WIDEN.items()}
