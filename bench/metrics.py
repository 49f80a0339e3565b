"""The formulas behind every number the runner reports, and the peaks they are shared of.

Work and traffic of one convolution (output (N, K, P, Q), weight (K, C/groups, R, S)):

    FLOPs = 2 * N * K * P * Q * (C/groups) * R * S      one multiply and one add per tap
    bytes = (input + weight + output elements) * itemsize   each tensor through memory once

Peaks:

    CPU:  "defined peak" (what %peak is a share of)
              cores x clock x fp32 lanes x FMA units per core x 2 FLOP per FMA
          cores: physical cores among the CPUs this process may use (/proc/cpuinfo core ids);
          clock: cpufreq's cpuinfo_max_freq (/sys), else the highest "cpu MHz" of /proc/cpuinfo
          (a VM's nominal clock: when a measured rate needs a faster clock, the least clock that
          explains it is used and the header says so); lanes: the vector width of numba's LLVM
          host features (+avx512f: 512 bits, +avx/+avx2: 256, else 128); FMA units per core:
          FMA_UNITS_PER_CORE, an assumption, stated in the results.
          "measured best-of GEMM" (a second, labelled number): the best float32 rate of
          np.matmul, of our cpu:implicit kernel on a 1x1 conv of the same size, and of
          torch.matmul when PyTorch is compared with;
          "measured copy bandwidth": best np.copyto rate (read + write) over a 64 MiB buffer.
    GPU:  measured: fp32 / fp16 from cupy.matmul (TF32 off unless CUPY_TF32=1), tf32 from
          torch.matmul with allow_tf32=True when PyTorch with CUDA is present, bandwidth from a
          device-to-device copy.
"""
from __future__ import annotations

import math
import os
import pathlib
import statistics
import time

import numpy as np

from conv._spec import ConvSpec

# Bytes per element of each precision label (TF32 is stored as float32).
ITEMSIZE = {"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2}


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


# Algorithm families that do fewer arithmetic operations than the direct count (an FFT's
# pointwise products): their GFLOP/s is "effective" (direct FLOPs / time) and can pass any peak, so
# they get no %peak and do not bound the defined peak.
FEWER_FLOP_FAMILIES = ("fft", "winograd")


def counts_direct_flops(row: dict) -> bool:
    """Whether the row's implementation does the direct FLOP count (see FEWER_FLOP_FAMILIES);
    an auto row by the algorithm it picked."""
    from conv import registry
    backend = row.get("backend")
    name = (row.get("picked") or "").split("[")[0] or row.get("algorithm")
    if backend not in registry.BACKENDS:
        return True                                   # PyTorch: direct or implicit GEMM
    family = next((a.family for a in registry.algorithms(backend) if a.name == name), name)
    return family not in FEWER_FLOP_FAMILIES


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


# --------------------------------------------------------------------------- the defined CPU peak
# FMA units per core that can each start one full-width fused multiply-add per cycle: an
# assumption (nothing a program can read tells it). Two is right for Intel cores since Haswell,
# Xeons with two AVX-512 units, AMD Zen 1-4 at 256 bits and Zen 5 at 512; it is an upper bound
# elsewhere (Xeon Silver/Bronze have one 512-bit unit; Zen 4 reports AVX-512 but runs it on its
# 256-bit units, so there the defined peak is twice what it can reach). An upper bound keeps
# %peak at or below 100 as long as the clock and the cores are right.
FMA_UNITS_PER_CORE = 2


def _allowed_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def _cpuinfo_blocks() -> list[dict]:
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    blocks = []
    for block in text.strip().split("\n\n"):
        entry = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            entry[key.strip()] = value.strip()
        if "processor" in entry:
            blocks.append(entry)
    return blocks


def cpu_cores(allowed=None, blocks=None) -> tuple[int, str]:
    """(physical cores among the allowed CPUs, where that came from): SMT siblings share their
    core's FMA units, so they count once."""
    allowed = _allowed_cpus() if allowed is None else list(allowed)
    blocks = _cpuinfo_blocks() if blocks is None else blocks
    ids = {(b.get("physical id"), b["core id"]) for b in blocks
           if "core id" in b and int(b["processor"]) in allowed}
    if ids:
        return len(ids), (f"{len(ids)} physical cores among the {len(allowed)} CPUs this process "
                          "may use (/proc/cpuinfo core ids)")
    return len(allowed), f"{len(allowed)} CPUs this process may use (no core ids: SMT not seen)"


def cpu_clock(allowed=None, blocks=None) -> tuple[float | None, str, bool]:
    """(clock in Hz, where it came from, whether it is the maximum clock): cpufreq's
    cpuinfo_max_freq, else the highest 'cpu MHz' of /proc/cpuinfo (not a maximum: a boost clock
    above it is not seen), else None."""
    allowed = _allowed_cpus() if allowed is None else list(allowed)
    khz = []
    for cpu in allowed:
        try:
            khz.append(int(pathlib.Path(
                f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/cpuinfo_max_freq").read_text()))
        except (OSError, ValueError):
            pass
    if khz:
        return max(khz) * 1e3, "cpufreq cpuinfo_max_freq (/sys)", True
    blocks = _cpuinfo_blocks() if blocks is None else blocks
    mhz = []
    for b in blocks:
        try:
            if int(b["processor"]) in allowed and "cpu MHz" in b:
                mhz.append(float(b["cpu MHz"]))
        except ValueError:
            pass
    if mhz:
        where = ("/proc/cpuinfo 'cpu MHz' (no cpufreq here, e.g. a VM: the nominal or current "
                 "clock, a boost above it not seen)")
        return max(mhz) * 1e6, where, False
    return None, "no clock found (no cpufreq, no 'cpu MHz')", False


def cpu_vector(features: dict | None = None) -> tuple[int, bool, str]:
    """(vector bits, whether there is FMA, where that came from) from the host CPU features of
    numba's LLVM (llvmlite.binding.get_host_cpu_features)."""
    name = None
    if features is None:
        try:
            import llvmlite.binding as llvm
            features = dict(llvm.get_host_cpu_features())
            name = llvm.get_host_cpu_name()
        except Exception as exc:                        # no LLVM host query: plain SSE2 / NEON
            return 128, False, f"no LLVM host features ({type(exc).__name__}): 128 bits assumed"
    on = {k for k, v in features.items() if v}
    if "avx512f" in on:
        bits, isa = 512, "avx512f"
    elif "avx2" in on or "avx" in on:
        bits, isa = 256, "avx2" if "avx2" in on else "avx"
    else:
        bits, isa = 128, "neon" if "neon" in on else ("sse2" if "sse2" in on else "scalar x4")
    fma = bool(on & {"fma", "fma4", "neon", "sve"})
    where = "LLVM host features" + (f" ({name})" if name else "")
    return bits, fma, f"{where}: +{isa}{', +fma' if fma and 'fma' in on else ''}"


def cpu_defined_peak(cores=None, clock=None, vector=None) -> dict:
    """The CPU's fp32 peak from its parts: cores x clock x lanes x FMA units x 2 (each part as
    (value, where it came from[, ...]) as cpu_cores / cpu_clock / cpu_vector return it)."""
    cores, cores_src = cores or cpu_cores()
    clock_hz, clock_src, clock_is_max = clock or cpu_clock()
    bits, fma, vector_src = vector or cpu_vector()
    lanes = bits // 32
    # Without FMA a core has a multiply and an add unit: the same 2 FLOP per lane per cycle as one
    # FMA unit.
    units = FMA_UNITS_PER_CORE if fma else 1
    per_cycle = lanes * units * 2
    return {"peak": None if clock_hz is None else cores * clock_hz * per_cycle,
            "cores": cores, "cores_source": cores_src, "clock_hz": clock_hz,
            "clock_source": clock_src, "clock_is_max": clock_is_max, "vector_bits": bits,
            "lanes_fp32": lanes, "fma": fma, "vector_source": vector_src, "fma_units": units,
            "fma_units_source": (f"assumed (FMA_UNITS_PER_CORE = {FMA_UNITS_PER_CORE})" if fma
                                 else "no FMA: a multiply and an add unit"),
            "flops_per_cycle_per_core": per_cycle}


def defined_peak_text(d: dict) -> str:
    return (f"{d['cores']} cores x {d['clock_hz'] / 1e9:.2f} GHz x {d['lanes_fp32']} fp32 lanes "
            f"({d['vector_bits']}-bit) x {d['fma_units']} FMA units x 2 FLOP")


def raise_clock_to(defined: dict, rate: float, what: str) -> bool:
    """When the clock was not read as a maximum and `rate` (FLOP/s, measured: `what`) needs a
    faster one, use the least clock that explains it (noted in clock_source). True if raised."""
    if defined.get("peak") is None or defined["clock_is_max"] or rate <= defined["peak"]:
        return False
    needed = rate / (defined["cores"] * defined["flops_per_cycle_per_core"])
    defined.setdefault("clock_read_hz", defined["clock_hz"])
    defined["clock_hz"] = needed
    defined["peak"] = rate
    defined["clock_raised_by"] = what
    defined["clock_source"] = (defined["clock_source"].split("; raised")[0] +
                               f"; raised from {defined['clock_read_hz'] / 1e9:.2f} to "
                               f"{needed / 1e9:.2f} GHz, the least clock {what} "
                               f"({rate / 1e9:.0f} GFLOP/s) needs")
    return True


def _peak_how(defined: dict | None, gemm: float, gemm_how: str, bandwidth_how: str) -> str:
    if defined is None or defined.get("peak") is None:
        return f"fp32 peak = measured best-of GEMM ({gemm_how}); {bandwidth_how}"
    how = (f"fp32 peak defined = {defined_peak_text(defined)} = {defined['peak'] / 1e9:.0f} GFLOP/s "
           f"[cores: {defined['cores_source']}; clock: {defined['clock_source']}; vector: "
           f"{defined['vector_source']}; FMA units: {defined['fma_units_source']}]; measured "
           f"best-of GEMM {gemm / 1e9:.0f} GFLOP/s = {100 * gemm / defined['peak']:.0f}% of it "
           f"({gemm_how}); {bandwidth_how}")
    if gemm > defined["peak"]:
        how += ("; the measured GEMM exceeds the defined peak although the clock is the maximum: "
                "an assumption (FMA units, cores) is wrong here")
    return how


def settle_cpu_peak(peaks: dict, rows: list[dict]) -> list[str]:
    """After a CPU run: if a verified row ran faster than the defined peak and the clock was not
    read as a maximum, raise the clock to the least one that explains it (as raise_clock_to) and
    recompute every row's peak_share. Returns notes on what was changed or is still above."""
    defined = peaks.get("defined")
    if not defined or peaks.get("basis") != "defined" or not peaks.get("fp32"):
        return []
    timed = [r for r in rows if r.get("gflops") and r.get("status") == "ok"
             and counts_direct_flops(r)]
    notes = []
    if timed:
        fastest = max(timed, key=lambda r: r["gflops"])
        what = f"{fastest['suite']}/{fastest['case']} {fastest['impl']}"
        if raise_clock_to(defined, fastest["gflops"] * 1e9, what):
            peaks["fp32"] = peaks["fp16"] = peaks["bf16"] = defined["peak"]
            peaks["how"] = _peak_how(defined, peaks["gemm_measured"], peaks["gemm_how"],
                                     peaks["bandwidth_how"])
            notes.append(f"defined peak: {what} ran at {fastest['gflops']:.0f} GFLOP/s, above "
                         f"the peak at the clock read, so the clock was raised to "
                         f"{defined['clock_hz'] / 1e9:.2f} GHz (the least that explains it)")
    for r in rows:
        if r.get("gflops") and counts_direct_flops(r):
            r["peak_share"] = r["gflops"] * 1e9 / (peaks.get(r["precision"]) or peaks["fp32"])
    above = sum((r.get("peak_share") or 0) > 1.0 for r in rows)
    if above:
        notes.append(f"{above} rows above 100% of the defined peak (the clock is cpufreq's "
                     "maximum: the FMA-units assumption or the core count is wrong here)")
    return notes


def cpu_peaks(use_torch: bool = True, defined: dict | None = None,
              torch_gemm_peak=None) -> dict:
    """{"fp32": FLOP/s, "fp16": FLOP/s, "bandwidth": bytes/s, "basis", "how", "defined": {...},
    "gemm_measured": FLOP/s, ...} for this CPU.

    fp32 is the defined peak (cpu_defined_peak) when its clock is known, else ("basis": "measured
    GEMM") the measured best-of GEMM: the best float32 rate of np.matmul, of our cpu:implicit
    kernel on a 1x1 conv of the same size, and of torch.matmul when PyTorch is used
    (torch_gemm_peak: a function measuring it elsewhere, e.g. in the runner's PyTorch worker
    process, instead of importing torch here). fp16 and bf16 rows on the CPU compute in float32,
    so they share the float32 peak.
    """
    numpy_gemm = measure_cpu_gemm_peak()
    implicit_gemm = measure_implicit_gemm_peak()
    torch_gemm = ((torch_gemm_peak or measure_torch_cpu_gemm_peak)() if use_torch else None)
    gemm = max(numpy_gemm, implicit_gemm, torch_gemm or 0.0)
    gemm_how = (f"float32 np.matmul {numpy_gemm / 1e9:.0f} GFLOP/s, cpu:implicit as a 1x1 conv "
                f"{implicit_gemm / 1e9:.0f} GFLOP/s")
    if torch_gemm:
        gemm_how += f", torch.matmul {torch_gemm / 1e9:.0f} GFLOP/s"
    gemm_how += " at 1024^2/1536^2"
    bandwidth_how = "bandwidth measured: np.copyto 64 MiB, read + write"
    defined = cpu_defined_peak() if defined is None else defined
    if defined.get("peak") is not None:
        raise_clock_to(defined, gemm, "the measured best-of GEMM")
        basis, peak = "defined", defined["peak"]
    else:
        basis, peak = "measured GEMM", gemm
    return {"fp32": peak, "fp16": peak, "bf16": peak, "bandwidth": measure_cpu_bandwidth(),
            "basis": basis,
            "how": _peak_how(defined, gemm, gemm_how, bandwidth_how), "defined": defined,
            "gemm_measured": gemm, "gemm_how": gemm_how, "bandwidth_how": bandwidth_how,
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


def _torch_matmul_peak(n: int, reps: int, precision: str) -> float | None:
    """Best rate of torch.matmul n^2 on the GPU in `precision`: "tf32" (float32 with
    allow_tf32) or "bf16"; None without PyTorch's CUDA build."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    try:
        a = torch.randn(n, n, device="cuda", dtype=dtype)
        b = torch.randn(n, n, device="cuda", dtype=dtype)
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
    tf32 = _torch_matmul_peak(n, reps, "tf32")
    peaks["tf32"] = tf32 if tf32 is not None else peaks["fp32"]
    bf16 = _torch_matmul_peak(n, reps, "bf16")
    peaks["bf16"] = bf16 if bf16 is not None else peaks["fp16"]
    nbytes = 1 << 30
    src = cupy.ones(nbytes // 4, dtype=cupy.float32)
    dst = cupy.empty_like(src)
    peaks["bandwidth"] = _gpu_best_rate(lambda: cupy.copyto(dst, src), 2.0 * nbytes, reps)
    del src, dst
    cupy.get_default_memory_pool().free_all_blocks()
    peaks["basis"] = "measured"
    peaks["how"] = ("measured: cupy.matmul %d^2 for fp32/fp16 (CUPY_TF32 unset), %s for tf32, "
                    "%s for bf16, device-to-device copy of 1 GiB (read + write) for bandwidth"
                    % (n, "torch.matmul allow_tf32" if tf32 is not None else "fp32 value (no torch)",
                       "torch.matmul bfloat16" if bf16 is not None else "fp16 value (no torch)"))
    return peaks
