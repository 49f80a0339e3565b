"""cpu:fft against cpu:implicit (and any other CPU algorithm named) on long kernels: the
crossover. Not a test, not the benchmark runner (conv-bench measures against PyTorch); the
numbers decide where fft is worth it, and the dispatch table is regenerated from conv-bench runs
that include cpu:fft rows.

    python scripts/fft_crossover.py [--budget 2.0] [--algorithms fft,implicit] [--only conv1d]

Cases: the longkernel suite's two (bench/suites.py, CPU: (1, 16, 8000) x (16, 16, k), k = 63, 127,
padding 'same', bias), then conv1d (1, 16, 8000) and conv2d (1, 16, 128, 128) with k (x k) for k
in 3, 9, 31, 63, 127, 255, padding 'same', float32. Timing: each algorithm is called once
untimed, then in rounds that alternate the algorithms, each round giving each one an untimed
call (the switch from another algorithm costs the next call) and then timed calls; rounds go on
until every algorithm has --budget seconds of timed calls and --runs calls at least (slow cases
get --min-runs). The machine is shared and noisy: medians and minima are printed.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import conv
import conv.backend.cpu


def cases(only: str | None):
    out = [("longkernel k63", "conv1d", (1, 16, 8000), (16, 16, 63), True),
           ("longkernel k127", "conv1d", (1, 16, 8000), (16, 16, 127), True)]
    for k in (3, 9, 31, 63, 127, 255):
        out.append((f"conv1d k{k}", "conv1d", (1, 16, 8000), (16, 16, k), False))
    for k in (3, 9, 31, 63, 127, 255):
        out.append((f"conv2d k{k}x{k}", "conv2d", (1, 16, 128, 128), (16, 16, k, k), False))
    return [c for c in out if only is None or c[1] == only]


def time_case(op, x, w, b, algorithms, budget, runs, min_runs, per_round=3):
    fn = getattr(conv, op)
    calls = {a: (lambda a=a: fn(x, w, b, padding="same", algorithm=a)) for a in algorithms}
    first = {}
    for a, call in calls.items():
        start = time.perf_counter()
        call()                                      # untimed: compiles, fills caches
        first[a] = time.perf_counter() - start
    times = {a: [] for a in algorithms}
    # A call slower than the budget gets min_runs timed calls, not `runs`.
    want = {a: (min_runs if first[a] * runs > 4 * budget else runs) for a in algorithms}
    while any(len(times[a]) < want[a] or sum(times[a]) < budget and first[a] < budget
              for a in algorithms):
        for a, call in calls.items():
            if len(times[a]) >= want[a] and (sum(times[a]) >= budget or first[a] >= budget):
                continue
            call()                                  # the switch
            for _ in range(per_round if first[a] < budget / 10 else 1):
                start = time.perf_counter()
                call()
                times[a].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--algorithms", default="fft,implicit")
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of timed calls each")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--min-runs", type=int, default=3)
    parser.add_argument("--only", choices=["conv1d", "conv2d"])
    args = parser.parse_args()
    algorithms = args.algorithms.split(",")
    rng = np.random.default_rng(0)
    print(f"threads {conv.backend.cpu.numba_threads()}; medians (min) in ms; "
          f"speedup = {algorithms[-1]} / {algorithms[0]} (medians)")
    for name, op, xs, ws, bias in cases(args.only):
        x = rng.standard_normal(xs).astype(np.float32)
        w = rng.standard_normal(ws).astype(np.float32)
        b = rng.standard_normal(ws[0]).astype(np.float32) if bias else None
        times = time_case(op, x, w, b, algorithms, args.budget, args.runs, args.min_runs)
        med = {a: statistics.median(t) * 1e3 for a, t in times.items()}
        cells = "  ".join(f"{a} {med[a]:9.2f} ({min(times[a]) * 1e3:8.2f}, n={len(times[a])})"
                          for a in algorithms)
        plan = conv.explain(op, x, w, b, padding="same", algorithm="fft")
        print(f"{name:16s} {cells}  speedup {med[algorithms[-1]] / med[algorithms[0]]:6.2f}x"
              f"  [{plan.reason.split('; ')[-1]}]", flush=True)


if __name__ == "__main__":
    main()
