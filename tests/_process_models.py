"""Scenarios run in a child process by tests/test_cpu_process_models.py (each needs a process of
its own: the threading layer is fixed at a process's first parallel launch, and a failure mode
is the child aborting or hanging). `python -m tests._process_models SCENARIO` prints "ok ..."."""
from __future__ import annotations

import multiprocessing
import sys
import threading
import time

import numpy as np


def _operands():
    # Imported here: a scenario may change numba's setup (_hide_tbb) before conv is imported.
    from tests._helpers import make_operands
    x, w, _ = make_operands("process-models", (8, 3, 32, 32), (16, 3, 3, 3), "float32")
    return x, w


def _conv_sum(seed: int = 0) -> float:
    import conv
    x, w = _operands()
    return float(conv.conv2d(x + seed, w, padding=1).astype(np.float64).sum())


def _expected(seed: int = 0) -> float:
    import conv
    x, w = _operands()
    return float(conv.conv2d(x + seed, w, padding=1, backend="reference").astype(np.float64).sum())


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-4 * max(1.0, abs(b))


def pool(method: str) -> str:
    """The parent runs conv first (its threads exist), then a pool of `method` runs conv."""
    import numba
    first = _conv_sum(0)
    assert _close(first, _expected(0))
    with multiprocessing.get_context(method).Pool(2) as workers:
        got = workers.map(_conv_sum, range(4), chunksize=1)
    want = [_expected(s) for s in range(4)]
    assert all(_close(g, e) for g, e in zip(got, want)), (got, want)
    return f"{method} pool after a parallel conv, layer {numba.threading_layer()}"


def threads(count: int = 8, calls: int = 25) -> str:
    """`count` Python threads calling conv at once, with different data each."""
    import numba
    results, errors = {}, []

    def worker(seed):
        try:
            results[seed] = [_conv_sum(seed) for _ in range(calls)]
        except BaseException as exc:        # reported below: the test must see it
            errors.append(repr(exc))

    pool_ = [threading.Thread(target=worker, args=(s,)) for s in range(count)]
    for t in pool_:
        t.start()
    for t in pool_:
        t.join()
    assert not errors, errors
    for seed, values in results.items():
        want = _expected(seed)
        assert all(_close(v, want) for v in values), (seed, values[:3], want)
    return f"{count} threads x {calls} calls, layer {numba.threading_layer()}"


def _spin(seconds: float) -> None:
    end = time.time() + seconds
    while time.time() < end:
        pass


def oversubscribed(calls: int = 200) -> str:
    """Every core busy with another process while conv runs; prints the median call time
    (information only: timed assertions do not belong in tests)."""
    import os

    import numba
    _conv_sum(0)                                   # compile before the load starts
    spinners = [multiprocessing.get_context("spawn").Process(target=_spin, args=(120,))
                for _ in range(os.cpu_count() or 2)]
    for s in spinners:
        s.start()
    try:
        time.sleep(0.5)
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            value = _conv_sum(0)
            times.append(time.perf_counter() - t0)
        assert _close(value, _expected(0))
    finally:
        for s in spinners:
            s.terminate()
    return (f"{calls} calls with {len(spinners)} busy processes, median "
            f"{1e3 * float(np.median(times)):.2f} ms, layer {numba.threading_layer()}")


def layer() -> str:
    import numba
    _conv_sum(0)
    return f"layer {numba.threading_layer()}"


def _hide_tbb() -> None:
    """Make numba find no usable TBB (as on a host without its wheels), before any launch."""
    import numba.np.ufunc.parallel as parallel

    def unavailable():
        raise ImportError("TBB hidden by the test")
    parallel._check_tbb_version_compatible = unavailable


def no_tbb_threads() -> str:
    """Without TBB our priority picks workqueue (fork-safe), and concurrent calls take turns."""
    _hide_tbb()
    return threads()


def no_tbb_fork_pool() -> str:
    _hide_tbb()
    return pool("fork")


if __name__ == "__main__":
    scenario, *args = sys.argv[1:]
    if scenario == "pool":
        print("ok", pool(args[0]), flush=True)
    else:
        print("ok", globals()[scenario](), flush=True)
