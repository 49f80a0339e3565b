"""Emulated kernels under AddressSanitizer, in a process that preloads its runtime
(conv.emulator.asan_environment(); tests/test_emulated_cupy.py starts it):

    python -m tests._emulator_asan grid           # a subset of the GPU grid: exit 0 when it passes
    python -m tests._emulator_asan oob-tile-load  # gemm.cu without its B-tile bounds check: ASan
                                                  # must stop the process (exit code 86)
    python -m tests._emulator_asan oob-shared     # a store one past a __shared__ array: likewise
"""
from __future__ import annotations

import sys

import numpy as np

from conv import _gpu_arrays, emulator, registry
from tests._cases import CASES
from tests._helpers import (
    assert_output_matches_reference,
    make_operands,
    refused_by_pytorch,
)

# Every algorithm on these cases, in three dtypes: plain, pointwise, strided, dilated, 'same',
# grouped, depthwise, every padding mode and conv1d, each once (indices into tests/_cases.py).
GRID_CASES = (0, 2, 3, 9, 11, 14, 15)
DTYPES = ("float32", "float16", "complex128")


def _run(case, algorithm, dtype, schedule) -> None:
    op, xs, ws, bias, kwargs = case
    x, w, b = make_operands(("asan", case, dtype), xs, ws, dtype, bias=bias)
    plan = emulator.plan(op, x, w, b, algorithm=algorithm, **kwargs)
    out = emulator.run(plan, x, w, b, schedule=schedule, seed=1, asan=True)
    assert_output_matches_reference(op, out, x, w, b, where=str(plan), **kwargs)


def _refused_shape(case, algorithm: str) -> bool:
    """Whether the registry row refuses the case's shape (depthwise: groups != C)."""
    from conv._spec import make_spec
    op, xs, ws, bias, kw = case
    x, w, b = make_operands(("asan", case, "float64"), xs, ws, "float64", bias=bias)
    spec = make_spec(op, x, w, b, kw.get("stride", 1), kw.get("padding", 0),
                     kw.get("dilation", 1), kw.get("groups", 1), kw.get("padding_mode", "zeros"))
    return registry.algorithm("cupy", algorithm).refusal(spec) is not None


def grid() -> None:
    count = 0
    cases = [CASES[i] for i in GRID_CASES] + [c for c in CASES if c[4].get("padding_mode")
                                               not in (None, "zeros")][:3] + \
            [c for c in CASES if c[0] == "conv1d"][:2]
    for case in cases:
        for algorithm in (a.name for a in registry.algorithms("cupy")):
            for i, dtype in enumerate(DTYPES):
                if refused_by_pytorch(dtype, case[4]) or np.dtype(dtype) not in \
                        registry.algorithm("cupy", algorithm).dtypes or \
                        _refused_shape(case, algorithm):        # depthwise: groups == C only
                    continue
                _run(case, algorithm, dtype, tuple(emulator.SCHEDULES)[(count + i) % 3])
                count += 1
    print(f"{count} cases passed under AddressSanitizer")


def oob_tile_load() -> None:
    from conv.backend.cupy.sources import read_source
    text = read_source("gemm.cu")
    old = ("Bs[i][b_j] = (b_in && gi < CRS) ? Traits<T>::load(Bg[gi * b_row + b_off]) : "
           "Traits<T>::zero();")
    assert old in text
    mutated = text.replace(old, "Bs[i][b_j] = Traits<T>::load(Bg[gi * b_row + b_off]);")
    x, w, b = make_operands("emulated-mutation", (2, 4, 9, 10), (20, 4, 3, 3), "float32",
                            bias=True)
    with emulator.replaced_source("gemm.cu", mutated):
        plan = emulator.plan("conv2d", x, w, b, algorithm="im2col", padding=1)
        emulator.run(plan, x, w, b, asan=True)
    print("the out-of-bounds load went unnoticed")


def oob_shared() -> None:
    text = r'''
extern "C" __global__ void shifted_store(float *out) {
    __shared__ float tile[32];
    tile[threadIdx.x + 1] = 1.0f;          // thread 31 writes one past the end
    __syncthreads();
    out[threadIdx.x] = tile[threadIdx.x];
}
'''
    from conv.backend.cupy.sources import module_options
    with emulator.replaced_source("im2col.cu", text):
        m = emulator.module("im2col.cu", module_options("im2col.cu", np.float32), asan=True)
    m.launch("shifted_store", (1, 1, 1), (32, 1, 1), (np.zeros(32, np.float32),))
    print("the out-of-bounds store went unnoticed")


if __name__ == "__main__":
    _gpu_arrays.set_poison_outputs(True)
    {"grid": grid, "oob-tile-load": oob_tile_load, "oob-shared": oob_shared}[sys.argv[1]]()
