"""Device helpers shared by the numba.cuda kernels (direct.py, im2col.py, gemm.py).

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

from conv._dtypes import ACCUMULATOR as _ACCUMULATOR
from conv._padding import PADDING_MODES

# The numbers the kernels branch on: conv/_padding.py's table (numba freezes them as constants).
ZEROS, REFLECT, REPLICATE, CIRCULAR = (PADDING_MODES[m] for m in
                                       ("zeros", "reflect", "replicate", "circular"))


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


# Accumulator dtype per input dtype (conv/_dtypes.py's table, floating point and complex only),
# and the widen function (by name) that reaches it.
ACCUMULATOR = {dt: (acc, "keep" if acc == dt else "to_float32")
               for dt, acc in _ACCUMULATOR.items() if dt.kind in "fc"}
assert all(acc == dt or acc == np.float32 for dt, (acc, _) in ACCUMULATOR.items())
# Not here: integers. PyTorch has no CUDA integer convolution, and the simulator cannot mirror the
# GPU's wrapping store; integer inputs run on the CPU backend. The backend refuses them by name.
WIDEN = {"keep": keep, "to_float32": to_float32}


def build_families(factory) -> dict:
    """{widen name: kernel} for a kernel factory taking a widen device function."""
    return {name: factory(fn) for name, fn in WIDEN.items()}
