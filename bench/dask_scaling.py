"""conv on Dask arrays: scaling from 1 to 2 worker processes, and the overhead of Dask on one chunk.

    python3 -m conv.bench.dask_scaling [--json PATH] [--repeats N]

Every worker and this process run single-threaded (NUMBA_NUM_THREADS=1, OMP/OPENBLAS 1), so 1 vs 2
workers compares one core with two. Times: median of `repeats` runs after one warm-up run (which
also compiles numba's kernels in each worker), from submitting the graph to having the result
reduced to a scalar on the client (y.sum(), so no 100 MB result crosses the wire). fp32.
FLOPs per case: 2 * N * K * P * Q * C/groups * R * S.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

CASES = {
    # name: (x shape, x chunks, w shape, kwargs)
    # About a second of single-core work each, so that the scheduler's fixed cost per compute
    # (about 0.1 s for a small graph on dask.distributed) is a small part of it.
    "large batch": ((256, 32, 56, 56), (16, 32, 56, 56), (32, 32, 3, 3), dict(padding=1)),
    "large image": ((1, 16, 2048, 2048), (1, 16, 512, 512), (16, 16, 3, 3), dict(padding=1)),
}
ONE_CHUNK = ((4, 32, 56, 56), (32, 32, 3, 3), dict(padding=1))


def _median(fn, repeats: int) -> float:
    fn()                                    # warm-up: compiles, loads, fills caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> None:
    import dask.array as da
    import distributed

    import conv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    results = {"host": platform.node(), "cpu_count": os.cpu_count(), "date": time.strftime(
        "%Y-%m-%dT%H:%M:%S"), "repeats": args.repeats, "precision": "fp32", "cases": {}}
    env = {v: "1" for v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    for name, (xs, chunks, ws, kwargs) in CASES.items():
        x = rng.standard_normal(xs, dtype=np.float32)
        w = (rng.standard_normal(ws, dtype=np.float32) / np.sqrt(np.prod(ws[1:]))).astype(np.float32)
        in_memory = _median(lambda: float(conv.conv2d(x, w, **kwargs).sum()), args.repeats)
        row = {"x": xs, "chunks": chunks, "w": ws, "kwargs": kwargs, "in_memory_s": in_memory}
        for workers in (1, 2):
            with distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                          processes=True, dashboard_address=None,
                                          env=env) as cluster, distributed.Client(cluster) as c:
                xd = da.from_array(x, chunks=chunks).persist()  # the input on the workers
                distributed.wait(xd)
                y = conv.conv2d(xd, w, **kwargs).sum()
                row[f"workers_{workers}_s"] = _median(lambda: float(c.compute(y).result()),
                                                      args.repeats)
        row["speedup_2_over_1"] = row["workers_1_s"] / row["workers_2_s"]
        results["cases"][name] = row
        print(f"{name}: in memory {in_memory * 1e3:.0f} ms, 1 worker "
              f"{row['workers_1_s'] * 1e3:.0f} ms, 2 workers {row['workers_2_s'] * 1e3:.0f} ms "
              f"(x{row['speedup_2_over_1']:.2f})", flush=True)
    xs, ws, kwargs = ONE_CHUNK
    x = rng.standard_normal(xs, dtype=np.float32)
    w = rng.standard_normal(ws, dtype=np.float32)
    xd = da.from_array(x, chunks=xs)
    in_memory = _median(lambda: conv.conv2d(x, w, **kwargs), args.repeats * 4)
    lazy = _median(lambda: conv.conv2d(xd, w, **kwargs).compute(scheduler="sync"),
                   args.repeats * 4)
    results["one_chunk"] = {"x": xs, "w": ws, "in_memory_s": in_memory, "dask_sync_s": lazy,
                            "overhead_s": lazy - in_memory}
    print(f"one chunk {xs}: in memory {in_memory * 1e3:.2f} ms, Dask (sync scheduler, graph "
          f"built each call) {lazy * 1e3:.2f} ms: overhead {(lazy - in_memory) * 1e3:.2f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
