"""Timers: warm up, then time many repetitions and keep the median with the 20th/80th percentiles.

CPU: time.perf_counter around each call; the number of repetitions comes from a time budget
(at least ``min_reps``, at most ``max_reps``). The runner times a case's implementations in
interleaved rounds and pools each one's samples (Timing.pooled), so a slow spell of a shared
machine falls on all of them rather than on whichever was being timed.
GPU: CuPy's CUDA events recorded on the current stream around each call, with the L2 cache flushed
between repetitions by writing a buffer twice the device's L2 size (the flush is outside the events).
PyTorch's kernels run on the legacy default stream, which the events order against as well.
Interference (the end of this file): how busy the machine was around the timings (load average,
the CPU time other processes and the hypervisor took, the spread between a row's rounds) and the
thresholds past which a row or a whole run is marked unreliable.
Nothing here imports a GPU library at import time.
"""
from __future__ import annotations

import dataclasses
import os
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
    # Seconds time_cpu waited for the process's thread pools to go idle first (None: they still
    # spun after IDLE_MAX_S, or nobody waited).
    idle_wait_s: float | None = None

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


# Thread pools that spin after their work: OpenBLAS's workers spin for 2^28 TSC cycles (its
# THREAD_TIMEOUT default; 117 ms at 2.3 GHz) after each BLAS call before they sleep, and on a
# 2-core machine a spinning worker holds one of the two cores. Measured (2-core Xeon VM, float32,
# 64 x 56 x 56 3x3, 60 calls after 0.1 s of something else, 6 interleaved repeats): winograd
# 0.96-1.01 ms a call after 512^2 numpy matmuls, 0.54-0.57 after pure-Python work, 0.52-0.54
# after itself; the implicit GEMM 1.55-1.65 against 0.91-0.95; with OPENBLAS_THREAD_TIMEOUT=4
# (no spinning) 0.56-0.58 after either. So a row timed after one that called BLAS (im2col, fft's
# products) ran at one core's speed through its warm-up and most of its timing: a process's
# pools are waited out before each row (`wait_for_idle_pools`), by its own CPU time, not by a
# fixed delay. Idle: the process used less than IDLE_SHARE of one CPU over an IDLE_WINDOW_S
# window (the waiting thread sleeps); at most IDLE_MAX_S.
IDLE_WINDOW_S = 0.005
IDLE_SHARE = 0.1
IDLE_MAX_S = 1.0


def wait_for_idle_pools(max_s: float = IDLE_MAX_S) -> float | None:
    """Sleep until this process's other threads stop using CPU (spinning thread pools gone to
    sleep): seconds waited, None when they still spun after max_s."""
    t0 = time.perf_counter()
    while True:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        time.sleep(IDLE_WINDOW_S)
        wall1 = time.perf_counter()
        if time.process_time() - cpu0 < IDLE_SHARE * (wall1 - wall0):
            return wall1 - t0
        if wall1 - t0 >= max_s:
            return None


def time_cpu(fn, *, budget_s: float = 0.5, min_reps: int = 5, max_reps: int = 100,
             warmup: int = 1, warmup_s: float = 0.1) -> Timing:
    """Median of repeated fn() calls after untimed warm-up ones (the caller already made the first).

    First the process's thread pools of whatever ran before are waited out
    (`wait_for_idle_pools`: OpenBLAS's pthreads spin for about 0.1 s after their work), so no row
    is timed against another's spinning threads; then warm-up runs at least `warmup` calls and
    `warmup_s` seconds, which also estimate one call's time and so set the repetitions. (PyTorch,
    in a worker process of its own, is waited out by the runner before its rounds; the runner's
    OMP_WAIT_POLICY=PASSIVE keeps the OpenMP pools from spinning at all.)
    """
    idle_s = wait_for_idle_pools()
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
    return dataclasses.replace(Timing.from_samples(samples), idle_wait_s=idle_s)


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


# ------------------------------------------------------------------------------------- interference
# A shared machine makes CPU timings lie: a run on a busy 2-core VM printed 2.86x where a quiet
# rerun a minute later gave 1.39x. The runner measures how busy the machine was and marks rows, and
# the whole run, unreliable past these thresholds. The direct measure is the CPU time others took
# (/proc/stat's busy time of the CPUs we may use, minus this process's own CPU time: other
# processes, and in a VM the hypervisor's steal). The load average lags a minute and counts tasks
# that use no CPU (one VM here sat at 1.0 for minutes while others took 0% of its CPUs), so it
# decides only where /proc/stat is missing; it is recorded either way.
#
# Evidence (2-core AMD EPYC VM shared with other sessions, conv-bench --quick, 251 timed rows per
# run, 2 rounds per row; readings per case):
#   quiet (others took 0.3% of the CPUs over the run, no case above 8%): round spread > 1.3 in 19%
#     of rows, > 1.5 in 8%, > 2 in 1%; geomean (auto) 1.21x;
#   bursts of another session (3.6% over the run; a quarter of the cases above 10%, 5% above 25%):
#     rows of cases under 5% others: > 1.5 in 6%; of cases at 5-25%: > 1.5 in 24%; geomean 1.28x;
#   a one-thread CPU hog beside the run (others 42%, every case 25-50%): > 1.5 in 21%, > 2 in 9%,
#     geomean 1.15x; another session's test workers (others 49%): > 1.5 in 27%.
#   Committed full runs (bench/results/cpu/*.json, 4 rounds, pooled p80/p20 only): the run that
#     started at load 0.31 had p80/p20 > 1.5 in 2% of rows, those starting at 1.0-1.6 in 11-16%.
# So: others above 10% over a run, or 25% during a case, is interference (quiet runs stay under 4%
# and 8%); a row's rounds more than 1.5x apart happen in 6-8% of rows on a quiet machine and
# 21-27% on a busy one: each such row is flagged, and the run when more than 15% of its rows are
# (the quiet run: 8%, the bursty one 12%, both busy ones 100% with the per-case readings).
#
# Share of the CPUs' time others took, over the whole run and during one case's timing rounds.
OTHERS_SHARE_RUN = 0.10
OTHERS_SHARE_CASE = 0.25
# Per row: the slowest round's median over the fastest round's median (rounds are interleaved
# with the case's other rows, so a slow spell shows up as rounds that disagree).
ROUND_SPREAD = 1.5
# The run as a whole is unreliable when more than this share of its timed rows is flagged.
NOISY_ROWS_SHARE = 0.15
# 1-min load average per CPU at the start (decides only where others' CPU time cannot be read):
# above it something else ran in the last minute. The committed runs started at 0.16-0.25 per CPU
# (p80/p20 > 1.5 in 2-10% of rows) or at 0.5-0.8 (11-16%).
START_LOAD_PER_CPU = 0.5
# ... at the end. Our own threads count here (one pool of cpu_count threads at a time, with
# OMP_WAIT_POLICY=PASSIVE): committed runs alone end at up to 1.1 per CPU.
END_LOAD_PER_CPU = 1.5
# --wait-quiet: this many consecutive samples (of poll_s each) with others under OTHERS_SHARE_RUN.
QUIET_SAMPLES = 3


def load_average() -> list[float] | None:
    """1-, 5- and 15-minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _allowed_cpus() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _busy_seconds(cpus: set[int] | None) -> tuple[float, int] | None:
    """(busy seconds summed over `cpus` since boot, how many CPUs) from /proc/stat: user + nice +
    system + irq + softirq + steal (guest time is inside user); None where there is no /proc."""
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
        tick = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    busy, count = 0, 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        f = [int(v) for v in rest.split()]
        busy += f[0] + f[1] + f[2] + f[5] + f[6] + (f[7] if len(f) > 7 else 0)
        count += 1
    return (busy / tick, count) if count else None


def _process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (/proc/PID/stat's utime and stime; 0
    where it cannot be read: no /proc, or the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()   # after "(comm)", which may hold spaces
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


@dataclass(frozen=True)
class CpuUse:
    """A snapshot of how much CPU time the CPUs this process may run on, and this process, have
    used; two of them give the share others took in between (``others_share``)."""

    wall_s: float
    busy_s: float | None     # every process on the allowed CPUs (None without /proc/stat)
    own_s: float             # this process, all of its threads (os.times), and `also`'s
    cpus: int

    @classmethod
    def now(cls, also=()) -> CpuUse:
        """`also`: pids of processes working for this one (the runner's PyTorch worker), whose
        CPU time is ours, not interference."""
        allowed = _allowed_cpus()
        busy = _busy_seconds(allowed)
        t = os.times()
        own = t.user + t.system + sum(_process_cpu_seconds(pid) for pid in also)
        return cls(time.perf_counter(), None if busy is None else busy[0], own,
                   busy[1] if busy else (len(allowed) if allowed else os.cpu_count() or 1))

    def others_share(self, later: CpuUse) -> float | None:
        """(busy - ours) / (wall * cpus) between self and later, in [0, 1]; None when unknown or
        the interval is too short for the clock ticks (10 ms) to say anything."""
        wall = later.wall_s - self.wall_s
        if self.busy_s is None or later.busy_s is None or wall < 0.05:
            return None
        others = (later.busy_s - self.busy_s) - (later.own_s - self.own_s)
        return min(1.0, max(0.0, others / (wall * self.cpus)))


def others_share_now(seconds: float = 1.0) -> float | None:
    """Share of the CPUs others use right now, sampled over `seconds` (this process sleeps)."""
    before = CpuUse.now()
    time.sleep(seconds)
    return before.others_share(CpuUse.now())


def is_quiet(load: list[float] | None, share: float | None, cpus: int) -> bool:
    """Quiet: others' share at most OTHERS_SHARE_RUN; where it cannot be read, the 1-min load at
    most START_LOAD_PER_CPU per CPU (an unknown load does not count against it)."""
    if share is not None:
        return share <= OTHERS_SHARE_RUN
    return load is None or load[0] <= START_LOAD_PER_CPU * cpus


def wait_quiet(max_s: float, poll_s: float = 2.0, say=None) -> dict:
    """Wait up to max_s seconds for a quiet machine: QUIET_SAMPLES samples of poll_s in a row that
    are quiet (is_quiet; other sessions come in bursts). Returns {"quiet", "waited_s", "load",
    "others_share"} as last seen; say(text) reports each busy sample."""
    cpus = os.cpu_count() or 1
    t0 = time.perf_counter()
    streak = 0
    while True:
        share = others_share_now(poll_s)
        load = load_average()
        waited = time.perf_counter() - t0
        streak = streak + 1 if is_quiet(load, share, cpus) else 0
        quiet = streak >= QUIET_SAMPLES
        if quiet or waited >= max_s:
            return {"quiet": quiet, "waited_s": round(waited, 1), "load": load,
                    "others_share": share}
        if say is not None and not streak:
            say(f"waiting for a quiet machine: others using {_pct(share)} of the CPUs, 1-min "
                f"load {load[0] if load else '?'} on {cpus} CPUs ({waited:.0f}/{max_s:.0f} s)")


def _pct(share: float | None) -> str:
    return "?" if share is None else f"{100 * share:.0f}%"


def round_spread(rounds: list) -> float | None:
    """Slowest round's median / fastest round's median for one row (None with fewer than 2)."""
    medians = [t.median_ms for t in rounds if t.reps and t.median_ms > 0]
    if len(medians) < 2:
        return None
    return max(medians) / min(medians)


def row_interference(spread: float | None, case_others: float | None) -> str | None:
    """Why a row's time cannot be trusted (None when nothing was seen)."""
    why = []
    if spread is not None and spread > ROUND_SPREAD:
        why.append(f"rounds {spread:.2f}x apart (> {ROUND_SPREAD})")
    if case_others is not None and case_others > OTHERS_SHARE_CASE:
        why.append(f"others took {_pct(case_others)} of the CPUs during the case "
                   f"(> {_pct(OTHERS_SHARE_CASE)})")
    return "; ".join(why) or None


def assess_run(rows: list[dict], load_start, load_end, others_share: float | None,
               cpus: int | None = None) -> dict:
    """The run's interference verdict: {"unreliable", "reasons", the readings, the thresholds}."""
    cpus = cpus or os.cpu_count() or 1
    reasons = []
    if others_share is None:          # no /proc/stat: the load average is all there is
        if load_start and load_start[0] > START_LOAD_PER_CPU * cpus:
            reasons.append(f"1-min load {load_start[0]:.2f} on {cpus} CPUs at the start "
                           f"(> {START_LOAD_PER_CPU} per CPU)")
        if load_end and load_end[0] > END_LOAD_PER_CPU * cpus:
            reasons.append(f"1-min load {load_end[0]:.2f} on {cpus} CPUs at the end "
                           f"(> {END_LOAD_PER_CPU} per CPU, ours included)")
    elif others_share > OTHERS_SHARE_RUN:
        reasons.append(f"other processes took {_pct(others_share)} of the CPUs' time during the "
                       f"run (> {_pct(OTHERS_SHARE_RUN)})")
    timed = [r for r in rows if r.get("median_ms")]
    noisy = [r for r in timed if r.get("unreliable")]
    if timed and len(noisy) > NOISY_ROWS_SHARE * len(timed):
        reasons.append(f"{len(noisy)} of {len(timed)} timed rows flagged (rounds > "
                       f"{ROUND_SPREAD}x apart or others > {_pct(OTHERS_SHARE_CASE)} of the CPUs "
                       f"during the case; > {_pct(NOISY_ROWS_SHARE)} of rows)")
    return {"unreliable": bool(reasons), "reasons": reasons, "cpus": cpus,
            "load_start": load_start, "load_end": load_end, "others_share": others_share,
            "noisy_rows": len(noisy), "timed_rows": len(timed),
            "thresholds": {"start_load_per_cpu": START_LOAD_PER_CPU,
                           "end_load_per_cpu": END_LOAD_PER_CPU,
                           "others_share_run": OTHERS_SHARE_RUN,
                           "others_share_case": OTHERS_SHARE_CASE,
                           "round_spread": ROUND_SPREAD, "noisy_rows_share": NOISY_ROWS_SHARE}}
