"""The algorithm registry: every backend, every algorithm, and each backend's rule for "auto", as
data. A new algorithm is a kernel file plus one ALGORITHMS row (and, if auto should pick it, one
AUTO_RULES row); conv/plan.py reads nothing else to decide what a call runs.

Versions: per (backend, family), 0 is the simplest kernel of the family (one thread per output on
the GPU backends) or, where the algorithm is a vendor library's, that baseline; higher numbers are
tuned kernels. The same family and version mean the same kind of kernel on every backend:
direct v0 = one thread per output, direct v1 = outputs blocked in registers (CuPy) or a
shared-memory tile (numba); im2col v0 = a one-thread-per-output GEMM, v1 = a tiled GEMM. The CPU
backend has one version of each family (0).

Auto rules: for each backend an ordered table; the first row whose condition holds for the spec
picks the algorithm. Each row names what measured it (a benchmark results file under
bench/results/) or says that it was not measured and why.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import _arrays
from ._spec import SUPPORTED_DTYPES, ConvSpec

_FLOATS = tuple(np.dtype(t) for t in (np.float16, np.float32, np.float64))
_INEXACT = _FLOATS + tuple(np.dtype(t) for t in (np.complex64, np.complex128))


@dataclass(frozen=True)
class Backend:
    name: str
    module: str                 # imported only when first asked for (CPU users never import CuPy)
    kinds: tuple[str, ...]      # array kinds (conv._arrays) it takes as input
    summary: str

    def load(self):
        return importlib.import_module(self.module)


@dataclass(frozen=True)
class Algorithm:
    backend: str
    name: str                   # what `algorithm=` takes
    family: str                 # "direct", "im2col", "implicit", "im2col_cublas"
    version: int                # see the module docstring
    dtypes: tuple[np.dtype, ...]
    kernel: str                 # where its kernel lives, from the repository root
    summary: str

    def refusal(self, spec: ConvSpec) -> TypeError | None:
        """The TypeError a call of spec with this algorithm raises, or None."""
        if spec.dtype in self.dtypes:
            return None
        names = ", ".join(d.name for d in self.dtypes)
        return TypeError(f"{self.backend} algorithm {self.name!r} has no kernels for dtype "
                         f"{spec.dtype} (supported: {names})")


@dataclass(frozen=True)
class AutoRule:
    when: Callable[[ConvSpec], bool]
    algorithm: str
    reason: Callable[[ConvSpec], str]
    measured: str               # the benchmark run that measured it, or why none did


_HOST = (_arrays.NUMPY,)
_GPU = (_arrays.NUMPY, _arrays.CUPY, _arrays.TORCH_CUDA, _arrays.NUMBA_CUDA, _arrays.CUDA_OTHER)

BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("reference", "conv.backend.reference", _HOST,
            "plain NumPy loops in float64/complex128/int64: the oracle, not fast"),
    Backend("cpu", "conv.backend.cpu", _HOST, "numba/LLVM and BLAS on the host"),
    Backend("cupy", "conv.backend.cupy", _GPU, "CUDA C kernels (kernels/cuda/) through CuPy"),
    Backend("numba", "conv.backend.numba_cuda", _GPU,
            "numba.cuda kernels (kernels/numba_cuda/)"),
)}
# Order in which "auto" tries GPU backends for arrays that live on a CUDA device.
GPU_PRIORITY = ("cupy", "numba")

ALGORITHMS: tuple[Algorithm, ...] = (
    Algorithm("reference", "direct", "direct", 0, SUPPORTED_DTYPES, "conv/backend/reference.py",
              "a sum over taps of shifted slices, accumulated in the widest dtype of the kind"),
    Algorithm("cpu", "implicit", "implicit", 0, _FLOATS, "conv/backend/cpu/implicit.py",
              "register-tiled implicit GEMM: an LLVM SIMD micro-kernel reading the phase layout"),
    Algorithm("cpu", "im2col", "im2col", 0, SUPPORTED_DTYPES, "conv/backend/cpu/im2col.py",
              "column matrix, then one batched BLAS matmul (exact int64 for integers)"),
    Algorithm("cpu", "direct", "direct", 0, SUPPORTED_DTYPES, "conv/backend/cpu/direct.py",
              "numba-parallel unit-stride axpys over the phase layout, a task per output plane"),
    Algorithm("cupy", "direct_naive", "direct", 0, SUPPORTED_DTYPES,
              "kernels/cuda/conv2d_direct.cu", "one thread per output"),
    Algorithm("cupy", "direct", "direct", 1, SUPPORTED_DTYPES, "kernels/cuda/conv2d_direct.cu",
              "a thread per output position and 1, 4 or 8 output channels in registers"),
    Algorithm("cupy", "im2col_naive", "im2col", 0, SUPPORTED_DTYPES,
              "kernels/cuda/im2col.cu + kernels/cuda/gemm.cu", "columns, then a "
              "one-thread-per-output GEMM"),
    Algorithm("cupy", "im2col", "im2col", 1, SUPPORTED_DTYPES,
              "kernels/cuda/im2col.cu + kernels/cuda/gemm.cu",
              "columns, then a shared-memory tiled GEMM with the bias fused"),
    Algorithm("cupy", "im2col_cublas", "im2col_cublas", 0, SUPPORTED_DTYPES,
              "kernels/cuda/im2col.cu + cupy.matmul", "columns multiplied by cuBLAS: the vendor "
              "baseline, for comparison"),
    Algorithm("numba", "direct_naive", "direct", 0, _INEXACT, "kernels/numba_cuda/direct.py",
              "one thread per output"),
    Algorithm("numba", "direct", "direct", 1, _INEXACT, "kernels/numba_cuda/direct.py",
              "a block stages an input patch in shared memory for a tile of outputs"),
    Algorithm("numba", "im2col", "im2col", 1, _INEXACT,
              "kernels/numba_cuda/im2col.py + kernels/numba_cuda/gemm.py",
              "columns, then a shared-memory tiled GEMM"),
)

_CPU_BENCH = "bench/results/cpu/2026-12-01-cpu-2core-avx2.json"
_GPU_UNMEASURED = ("not measured: no GPU has run this code yet; written from the kernels' "
                   "structure (the autotuning issue replaces it with measured tables)")


def _reduction(spec: ConvSpec) -> int:
    return spec.c_per_group * spec.r * spec.s


def _numba_gemm_tile() -> int:
    # The tile's one home is the kernel (imported only once the numba backend is in use).
    from conv.kernels.numba_cuda import gemm
    return gemm.BM


AUTO_RULES: dict[str, tuple[AutoRule, ...]] = {
    "reference": (
        AutoRule(lambda s: True, "direct", lambda s: "the reference has one algorithm",
                 "not a speed choice"),
    ),
    "cpu": (
        AutoRule(lambda s: s.dtype.kind in "iuc", "im2col",
                 lambda s: "integer and complex inputs use im2col (exact int64 / complex GEMM)",
                 "not a speed choice: 'implicit' has no integer or complex kernel, and BLAS "
                 "computes complex GEMMs"),
        AutoRule(lambda s: s.k_per_group == 1 and s.stride == (1, 1), "direct",
                 lambda s: (("depthwise (groups = C)" if s.is_depthwise else
                             f"one output channel per group ({s.c_per_group} input channels "
                             f"each)") + " and unstrided: the implicit GEMM's tiles of output "
                            "channels would hold one row"),
                 f"{_CPU_BENCH}: grouped/mbv2_dw3x3_32_112 and mbv2_dw3x3_384_14, direct 0.43 "
                 f"and 0.32 ms vs implicit 0.65 and 0.39 ms (strided mbv2_dw3x3_144_56_s2: "
                 f"implicit faster, 0.52 vs 0.63 ms)"),
        AutoRule(lambda s: True, "implicit",
                 lambda s: "floating point: the register-tiled implicit GEMM",
                 f"{_CPU_BENCH}: geomean over 64 fp32 cases, implicit 0.88x PyTorch, im2col "
                 f"0.65x, direct 0.38x"),
    ),
    "cupy": (
        AutoRule(lambda s: s.dtype.kind in "iu", "direct",
                 lambda s: ("integer inputs use the direct kernel: exact int64 sums, and 64-bit "
                            "multiply-adds gain nothing from GEMM tiles"), _GPU_UNMEASURED),
        AutoRule(lambda s: s.dtype.kind == "c", "direct",
                 lambda s: "complex inputs use the direct kernel (complex GEMM tiles are not "
                           "tuned)", _GPU_UNMEASURED),
        AutoRule(lambda s: s.is_depthwise, "direct",
                 lambda s: (f"depthwise (groups = C = {s.c}): each output reads one channel, "
                            f"the direct kernel's depthwise specialisation fits"), _GPU_UNMEASURED),
        AutoRule(lambda s: _reduction(s) <= 16 and s.k_per_group <= 4, "direct",
                 lambda s: (f"each output sums only {_reduction(s)} products per group "
                            f"({s.k_per_group} outputs per group): GEMM tiles would be mostly "
                            f"empty"), _GPU_UNMEASURED),
        AutoRule(lambda s: True, "im2col",
                 lambda s: (f"dense: {s.k_per_group} output channels x {_reduction(s)} products "
                            f"per group suit the tiled GEMM (im2col + gemm)"), _GPU_UNMEASURED),
    ),
    "numba": (
        AutoRule(lambda s: min(s.k_per_group, _reduction(s)) >= _numba_gemm_tile(), "im2col",
                 lambda s: (f"{s.k_per_group} output channels per group and a reduction of "
                            f"{_reduction(s)} fill the GEMM's {_numba_gemm_tile()}-wide tiles"),
                 _GPU_UNMEASURED),
        AutoRule(lambda s: True, "direct",
                 lambda s: (f"{s.k_per_group} output channels per group x reduction "
                            f"{_reduction(s)} would leave the GEMM's {_numba_gemm_tile()}-wide "
                            f"tiles mostly empty; the shared-memory direct kernel reuses each "
                            f"staged input instead"), _GPU_UNMEASURED),
    ),
}


def algorithms(backend: str) -> tuple[Algorithm, ...]:
    """The rows of `backend`, in the order its algorithms are listed to users."""
    return tuple(a for a in ALGORITHMS if a.backend == backend)


def algorithm(backend: str, name: str) -> Algorithm:
    for row in ALGORITHMS:
        if row.backend == backend and row.name == name:
            return row
    names = [a.name for a in algorithms(backend)]
    raise ValueError(f"backend {backend!r} has no algorithm {name!r}; expected 'auto' or one of "
                     f"{names}")


def auto_algorithm(backend: str, spec: ConvSpec) -> tuple[Algorithm, str]:
    """(row, reason) of the algorithm `backend` runs for spec under algorithm="auto"."""
    for rule in AUTO_RULES[backend]:
        if rule.when(spec):
            return algorithm(backend, rule.algorithm), rule.reason(spec)
    raise AssertionError(f"the auto rules of {backend!r} end without a catch-all row")
