"""Timers: warm up, then time many repetitions and keep the median with the 20th/80th percentiles.

CPU: time.perf_counter around each call; the number of repetitions comes from a time budget
(at least ``min_reps``, at most ``max_reps``). The runner times a case's implementations in
interleaved rounds and pools each one's samples (Timing.pooled), so a slow spell of a shared
machine falls on all of them rather than on whichever was being timed.
GPU: CuPy's CUDA events recorded on the current stream around each call, with the L2 cache flushed
between repetitions by writing a buffer twice the device's L2 size (the flush is outside the events).
PyTorch's kernels run on the legacy default stream, which the events order against as well.
Nothing here imports a GPU library at import time.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np


@dataclass
class Timing:
    """Milliseconds per call over `reps` timed repetitions."""

    median_ms: float
    p20_ms: float
    p80_ms: float
    reps: int
    samples_ms: tuple = ()

    @classmethod
    def from_samples(cls, samples_ms) -> "Timing":
        s = np.asarray(samples_ms, dtype=np.float64)
        p20, med, p80 = np.percentile(s, [20, 50, 80])
        return cls(float(med), float(p20), float(p80), int(s.size), tuple(s.tolist()))

    @classmethod
    def pooled(cls, timings: list) -> "Timing":
        """One Timing over the samples of several (the rounds of one row)."""
        return cls.from_samples([v for t in timings for v in t.samples_ms])


def _reps_for(estimate_s: float, budget_s: float, min_reps: int, max_reps: int) -> int:
    if estimate_s <= 0:
        return max_reps
    return int(max(min_reps, min(max_reps, budget_s / estimate_s)))


def time_cpu(fn, *, budget_s: float = 0.5, min_reps: int = 5, max_reps: int = 100,
             warmup: int = 1, warmup_s: float = 0.1) -> Timing:
    """Median of repeated fn() calls after untimed warm-up ones (the caller already made the first).

    Warm-up runs at least `warmup` calls and `warmup_s` seconds: the thread pools of whatever ran
    before (PyTorch's OpenMP, numba's OpenMP, OpenBLAS's pthreads, which spin-wait after their
    work) go idle before timing starts, so neither side is timed against the other's spinning
    threads. The warm-up calls also estimate one call's time, which sets the repetitions.
    """
    t0 = time.perf_counter()
    calls = 0
    while calls < max(1, warmup) or time.perf_counter() - t0 < warmup_s:
        fn()
        calls += 1
    estimate = (time.perf_counter() - t0) / calls
    reps = _reps_for(estimate, budget_s, min_reps, max_reps)
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return Timing.from_samples(samples)


class GpuTimer:
    """CUDA-event timing (CuPy events on the current stream) with an L2 flush between repetitions."""

    def __init__(self):
        import cupy
        self._cupy = cupy
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        self.l2_bytes = int(props.get("l2CacheSize", 0)) or (50 << 20)
        # Twice the L2 size: writing it evicts whatever the previous repetition left there.
        self._flush_buf = cupy.empty(2 * self.l2_bytes // 4 + 1, dtype=cupy.float32)

    def synchronize(self) -> None:
        self._cupy.cuda.Device().synchronize()

    def flush_l2(self) -> None:
        """Write 2x L2 bytes so the next call starts with its operands out of L2."""
        self._flush_buf.fill(0)

    def first_call_ms(self, fn) -> tuple[float, object]:
        """Wall time of one synchronised call (includes any compilation), and its result."""
        self.synchronize()
        t0 = time.perf_counter()
        out = fn()
        self.synchronize()
        return (time.perf_counter() - t0) * 1e3, out

    def time(self, fn, *, budget_s: float = 0.5, min_reps: int = 10, max_reps: int = 200,
             warmup: int = 3) -> Timing:
        """Median of event-timed fn() calls, each preceded by an (untimed) L2 flush."""
        cupy = self._cupy
        for _ in range(max(1, warmup)):
            fn()
        self.synchronize()
        t0 = time.perf_counter()
        fn()
        self.synchronize()
        reps = _reps_for(time.perf_counter() - t0, budget_s, min_reps, max_reps)
        pairs = []
        for _ in range(reps):
            self.flush_l2()
            start, end = cupy.cuda.Event(), cupy.cuda.Event()
            start.record()
            fn()
            end.record()
            pairs.append((start, end))
        self.synchronize()
        return Timing.from_samples([cupy.cuda.get_elapsed_time(s, e) for s, e in pairs])
