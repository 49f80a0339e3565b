"""The formulas behind every number the runner reports, and the measured peaks they are shared of.

Work and traffic of one convolution (output (N, K, P, Q), weight (K, C/groups, R, S)):

    FLOPs = 2 * N * K * P * Q * (C/groups) * R * S      one multiply and one add per tap
    bytes = (input + weight + output elements) * itemsize   each tensor through memory once

Peaks are measured on the machine of the run, never taken from a data sheet:

    CPU:  "measured GEMM peak"  best float32 np.matmul rate over a few large squares (or our
          cpu:implicit kernel's on a 1x1 conv of that size, or torch.matmul's when PyTorch is
          compared with, whichever is faster: it is the same machine),
          "measured copy bandwidth"  best np.copyto rate (read + write) over a 64 MiB buffer.
    GPU:  fp32 / fp16 from cupy.matmul (TF32 off unless CUPY_TF32=1), tf32 from torch.matmul with
          allow_tf32=True when PyTorch with CUDA is present, bandwidth from a device-to-device copy.
"""
from __future__ import annotations

import math
import statistics
import time

import numpy as np

from conv._spec import ConvSpec

# Bytes per element of each precision label (TF32 is stored as float32).
ITEMSIZE = {"fp32": 4, "tf32": 4, "fp16": 2}


def conv_flops(spec: ConvSpec) -> int:
    """FLOPs of one convolution: 2 * N * K * P * Q * (C/groups) * R * S (a multiply-add is two).

    Real arithmetic (complex rows count complex multiply-adds); conv1d is the 2-D formula with P = R = 1.
    """
    return 2 * spec.n * spec.k * spec.p * spec.q * spec.c_per_group * spec.r * spec.s


def conv_bytes(spec: ConvSpec, itemsize: int | None = None) -> int:
    """Fewest bytes through memory: (input + weight + output elements) * itemsize, each once.

    The bias (K elements) is left out as negligible.
    ``itemsize`` defaults to the spec's dtype (pass 2 for an fp16 row built from a float32 spec).
    """
    size = spec.dtype.itemsize if itemsize is None else itemsize
    elements = (spec.n * spec.c * spec.h * spec.w
                + spec.k * spec.c_per_group * spec.r * spec.s
                + spec.n * spec.k * spec.p * spec.q)
    return elements * size


def rate(amount: float, seconds: float) -> float:
    """amount / seconds, NaN when the time is not positive."""
    return amount / seconds if seconds and seconds > 0 else float("nan")


def geomean(values) -> float:
    """Geometric mean of the positive finite values, NaN when there are none."""
    kept = [v for v in values if v and v > 0 and math.isfinite(v)]
    return statistics.geometric_mean(kept) if kept else float("nan")


# ----------------------------------------------------------------------------------------- CPU peaks
def measure_cpu_gemm_peak(sizes=(1024, 1536), reps: int = 3) -> float:
    """Measured GEMM peak of this CPU in FLOP/s: the best float32 np.matmul rate over `sizes`.

    Uses the same BLAS and thread count as the im2col path, so it is the ceiling that path can reach.
    """
    best = 0.0
    rng = np.random.default_rng(0)
    for n in sizes:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        out = np.empty((n, n), dtype=np.float32)
        np.matmul(a, b, out=out)                       # warm-up: threads up, pages touched
        for _ in range(reps):
            t0 = time.perf_counter()
            np.matmul(a, b, out=out)
            best = max(best, 2.0 * n ** 3 / (time.perf_counter() - t0))
    return best


def measure_cpu_bandwidth(nbytes: int = 64 << 20, reps: int = 5) -> float:
    """Measured copy bandwidth of this CPU in bytes/s: best np.copyto rate, counting read + write."""
    src = np.ones(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = max(best, 2.0 * nbytes / (time.perf_counter() - t0))
    return best


def measure_torch_cpu_gemm_peak(n: int = 1536, reps: int = 3) -> float | None:
    """Best float32 torch.matmul rate on the CPU in FLOP/s (None without PyTorch).

    PyTorch's CPU convolutions (oneDNN) can run faster than NumPy's BLAS, so the ceiling a share of
    peak is taken of is the better of the two measured GEMMs.
    """
    try:
        import torch
    except Exception:
        return None
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = max(best, 2.0 * n ** 3 / (time.perf_counter() - t0))
    return best


def measure_implicit_gemm_peak(n: int = 1024, reps: int = 3) -> float:
    """Best float32 rate of our own register-tiled kernel on the CPU in FLOP/s: cpu:implicit on a
    1x1 conv that is an n x n x n GEMM (C = K = n, 32x32 pixels). Its AVX-512 micro-kernel can
    outrun the BLAS numpy ships, so it is a candidate for the ceiling too."""
    import conv
    side = int(round(n ** 0.5))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, n, side, side), dtype=np.float32)
    w = rng.standard_normal((n, n, 1, 1), dtype=np.float32)
    conv.conv2d(x, w, backend="cpu", algorithm="implicit")        # warm-up (and compile)
    best = 0.0
    for _ in range(reps):
        t0 = time.perf_counter()
        conv.conv2d(x, w, backend="cpu", algorithm="implicit")
        best = max(best, 2.0 * n * n * side * side / (time.perf_counter() - t0))
    return best


def cpu_peaks(use_torch: bool = True) -> dict:
    """{"fp32": FLOP/s, "fp16": FLOP/s, "bandwidth": bytes/s, "how": ...} for this CPU.

    "measured GEMM peak": the best float32 GEMM rate of np.matmul, of our cpu:implicit kernel on a
    1x1 conv of the same size, and of torch.matmul when PyTorch is used. fp16 rows on the CPU
    compute in float32, so they share the float32 peak.
    """
    numpy_gemm = measure_cpu_gemm_peak()
    implicit_gemm = measure_implicit_gemm_peak()
    torch_gemm = measure_torch_cpu_gemm_peak() if use_torch else None
    gemm = max(numpy_gemm, implicit_gemm, torch_gemm or 0.0)
    how = (f"measured GEMM peak: best of float32 np.matmul ({numpy_gemm / 1e9:.0f} GFLOP/s), "
           f"cpu:implicit as a 1x1 conv ({implicit_gemm / 1e9:.0f} GFLOP/s)")
    if torch_gemm:
        how += f" and torch.matmul ({torch_gemm / 1e9:.0f} GFLOP/s)"
    how += " at 1024^2/1536^2; measured copy bandwidth: np.copyto 64 MiB, read + write"
    return {"fp32": gemm, "fp16": gemm, "bandwidth": measure_cpu_bandwidth(), "how": how,
            "numpy_gemm": numpy_gemm, "implicit_gemm": implicit_gemm, "torch_gemm": torch_gemm}


# ----------------------------------------------------------------------------------------- GPU peaks
def _gpu_best_rate(fn, work: float, reps: int) -> float:
    """Best work/second of fn() timed with CUDA events on CuPy's current stream."""
    import cupy
    fn()
    cupy.cuda.get_current_stream().synchronize()
    best = 0.0
    for _ in range(reps):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        ms = cupy.cuda.get_elapsed_time(start, end)
        best = max(best, work / (ms * 1e-3))
    return best


def _torch_tf32_peak(n: int, reps: int) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        a = torch.randn(n, n, device="cuda")
        b = torch.randn(n, n, device="cuda")
        torch.matmul(a, b)
        torch.cuda.synchronize()
        best = 0.0
        for _ in range(reps):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            torch.matmul(a, b)
            end.record()
            end.synchronize()
            best = max(best, 2.0 * n ** 3 / (start.elapsed_time(end) * 1e-3))
        return best
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def gpu_peaks(n: int = 8192, reps: int = 10) -> dict:
    """Measured peaks of the current CUDA device: FLOP/s per precision and copy bytes/s."""
    import cupy
    peaks: dict = {}
    for label, dtype in (("fp32", cupy.float32), ("fp16", cupy.float16)):
        a = cupy.random.standard_normal((n, n), dtype=cupy.float32).astype(dtype)
        b = cupy.random.standard_normal((n, n), dtype=cupy.float32).astype(dtype)
        out = cupy.empty((n, n), dtype=dtype)
        peaks[label] = _gpu_best_rate(lambda: cupy.matmul(a, b, out=out), 2.0 * n ** 3, reps)
        del a, b, out
    tf32 = _torch_tf32_peak(n, reps)
    peaks["tf32"] = tf32 if tf32 is not None else peaks["fp32"]
    nbytes = 1 << 30
    src = cupy.ones(nbytes // 4, dtype=cupy.float32)
    dst = cupy.empty_like(src)
    peaks["bandwidth"] = _gpu_best_rate(lambda: cupy.copyto(dst, src), 2.0 * nbytes, reps)
    del src, dst
    cupy.get_default_memory_pool().free_all_blocks()
    peaks["how"] = ("measured: cupy.matmul %d^2 for fp32/fp16 (CUPY_TF32 unset), %s for tf32, "
                    "device-to-device copy of 1 GiB (read + write) for bandwidth"
                    % (n, "torch.matmul allow_tf32" if tf32 is not None else "fp32 value (no torch)"))
    return peaks
