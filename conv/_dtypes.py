"""Accumulation: the one table of which dtype each input dtype is summed in, on every backend.

float16 and bfloat16 sum in float32 (as PyTorch's CPU and CUDA paths), float32, float64 and the complex
dtypes in their own precision, integers exactly in int64 (wrapping on the cast back, as PyTorch's
CPU path). The host backends compute in `accumulator_dtype`; the CUDA C kernels get the same table
as `CONV_ACC_<dtype>` macros (`cuda_defines`, pasted before common.cuh by
conv/backend/cupy/sources.py); the numba.cuda kernels read ACCUMULATOR
(kernels/numba_cuda/common.py). The reference (conv/backend/reference.py) is the oracle and sums
wider still: float64, complex128, int64.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

# bfloat16 on the host: ml_dtypes' NumPy dtype (what JAX and CuPy use too). Its kind is "V", not
# "f": ask is_floating, never dtype.kind, whether a dtype is a real floating-point one.
BFLOAT16 = np.dtype(ml_dtypes.bfloat16)

ACCUMULATOR: dict[np.dtype, np.dtype] = {
    np.dtype(np.float16): np.dtype(np.float32),
    BFLOAT16: np.dtype(np.float32),
    np.dtype(np.float32): np.dtype(np.float32),
    np.dtype(np.float64): np.dtype(np.float64),
    np.dtype(np.complex64): np.dtype(np.complex64),
    np.dtype(np.complex128): np.dtype(np.complex128),
    **{np.dtype(t): np.dtype(np.int64) for t in (np.int8, np.int16, np.int32, np.int64, np.uint8)},
}

# The CUDA C type of each accumulator dtype (common.cuh's conv_complex<F> for complex).
_CUDA_TYPES = {"float32": "float", "float64": "double", "complex64": "conv_complex<float>",
               "complex128": "conv_complex<double>", "int64": "long long"}


def is_floating(dtype) -> bool:
    """Whether `dtype` is a real floating-point dtype (float16, bfloat16, float32, float64)."""
    dtype = np.dtype(dtype)
    return dtype.kind == "f" or dtype == BFLOAT16


def accumulator_dtype(dtype) -> np.dtype:
    """The dtype a conv of `dtype` inputs sums in."""
    return ACCUMULATOR[np.dtype(dtype)]


def cuda_defines() -> str:
    """`#define CONV_ACC_<dtype> <C type>` for every input dtype: the table above, in C."""
    return "".join(f"#define CONV_ACC_{dt.name} {_CUDA_TYPES[acc.name]}\n"
                   for dt, acc in ACCUMULATOR.items())
