"""conv-bench: verify and time every backend and algorithm against PyTorch, over the suites.

    conv-bench --quick                       # CPU smoke run, about 100 s on 2 cores
    conv-bench --suite resnet50 --suite sweep --json out.json --csv out.csv --plot out.png
    conv-bench --device gpu --run-tests      # GPU run: writes bench/results/gpu/<date>-<device>.json
    conv-bench --wait-quiet 600 --quick      # first wait (up to 10 min) for a quiet machine
    conv-bench --write-dispatch-tables bench/results/cpu/2026-12-01-cpu-2core-settle.json
                                             # regenerate conv/dispatch_tables/ (what auto reads)
    python -m bench --help
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import pathlib
import sys
import time

from . import evidence, metrics, report, runner, suites, timing


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="conv-bench", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=("suites: " + ", ".join(suites.SUITES) + "\nratio = torch time / our time "
                "(> 1: we are faster); rows that disagree with the reference are WRONG, never "
                "timed."))
    p.add_argument("--quick", action="store_true",
                   help="small subset and short timing budget (CPU: about 100 s on 2 cores)")
    p.add_argument("--suite", action="append", default=[], choices=list(suites.SUITES),
                   metavar="NAME", help="suite to run (repeatable; default: all)")
    p.add_argument("--backend", action="append", default=[], metavar="NAME",
                   help="backend or backend:algorithm to run (repeatable; default: all usable), "
                        "e.g. cpu, cpu:direct, cupy, numba:direct")
    p.add_argument("--device", choices=("cpu", "gpu", "auto"), default="auto",
                   help="auto: the GPU when CuPy sees one and a GPU backend is usable, else the CPU")
    p.add_argument("--precision", action="append", default=[], choices=runner.PRECISIONS,
                   help="precision rows (repeatable; default: fp32 on CPU, fp32 tf32 fp16 bf16 on GPU)")
    p.add_argument("--repeats", type=int, default=None,
                   help="most timed repetitions per row (default: 30 quick / 100 full, x2 on GPU)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of timing per row (default 0.12 quick, 0.5 full)")
    p.add_argument("--no-torch", action="store_true", help="do not compare with PyTorch")
    p.add_argument("--torch-in-process", action="store_true",
                   help="CPU runs: import and time PyTorch in the runner's own process (the old "
                        "way, for comparison). By default it runs in a worker process of its own, "
                        "so its OpenMP pool and numba's never share a process (issue 14)")
    p.add_argument("--case", action="append", default=[], metavar="TEXT",
                   help="only the cases whose suite/name contains TEXT (repeatable)")
    p.add_argument("--json", metavar="PATH", help="write results (rows, geomeans, versions) as JSON")
    p.add_argument("--csv", metavar="PATH", help="write the rows as CSV")
    p.add_argument("--plot", metavar="PATH", help="write a PNG of the speed ratios")
    p.add_argument("--evidence", action=argparse.BooleanOptionalAction, default=None,
                   help="write the evidence file (default: on for GPU runs -> bench/results/gpu/ "
                        "of a checkout, ./bench-results/gpu/ of an installed copy; a CPU run "
                        "asked for it goes to .../local/; --evidence-dir DIR: to DIR)")
    p.add_argument("--run-tests", action="store_true",
                   help="also run the test suite on this machine and record its counts (needs a "
                        "checkout: the tests are not in the wheel)")
    p.add_argument("--omp-active", action="store_true",
                   help="leave OMP_WAIT_POLICY alone (the OpenMP runtimes spin after their work). "
                        "By default conv-bench sets OMP_WAIT_POLICY=PASSIVE (unless already set) "
                        "before PyTorch's and numba's OpenMP load: their two pools spinning can "
                        "starve each other on a small or busy machine (a PyTorch conv seen 300x "
                        "slower after a numba parallel call on 2 busy cores)")
    p.add_argument("--omp-passive", action="store_true", help=argparse.SUPPRESS)  # now the default
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="before starting, wait up to SECONDS for a quiet machine: other processes "
                        f"using at most {100 * timing.OTHERS_SHARE_RUN:.0f}%% of the CPUs for "
                        f"{timing.QUIET_SAMPLES} samples of 2 s in a row (where that cannot be "
                        f"read: a 1-min load of at most {timing.START_LOAD_PER_CPU} per CPU); the "
                        "run goes ahead either way, marked unreliable if it stays busy")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--write-dispatch-tables", nargs="+", metavar="RESULTS.json",
                   help="run nothing: regenerate the dispatch tables algorithm='auto' reads from "
                        "these results files (CPU rows -> cpu.json, GPU rows -> cupy.json / "
                        "numba.json) and print a leave-one-out check (bench/dispatch_tables.py)")
    p.add_argument("--evidence-dir", metavar="DIR", default=None,
                   help="the folder of the evidence file (implies --evidence); never the "
                        "installed package's folder by default")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="with --write-dispatch-tables: the folder to write (default: the "
                        "package's conv/dispatch_tables/)")
    return p


def resolve_device(requested: str) -> tuple[str, str]:
    """('cpu' | 'gpu', why)."""
    if requested == "cpu":
        return "cpu", "asked for"
    ok, why = runner.gpu_usable()
    if requested == "gpu":
        if not ok:
            raise SystemExit(f"conv-bench: --device gpu but no GPU run is possible: {why}")
        return "gpu", why
    if ok and runner.discover("gpu")[0]:
        return "gpu", why
    return "cpu", f"no usable GPU backend ({why})"


def thread_info(worker_threads: int | None = None) -> dict:
    # OPENBLAS_CORETYPE decides which GEMM kernels numpy's OpenBLAS runs (e.g. "Haswell" forces
    # AVX2 on an AVX-512 CPU): the CPU path's speed depends on it, so every result records it.
    info = {"cpu_count": os.cpu_count(), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            "numba_threading_layer": os.environ.get("NUMBA_THREADING_LAYER")}
    try:
        import numba

        from conv import _threads
        info["numba"] = numba.get_num_threads()
        info["numba_layer_used"] = _threads.layer()      # None until a parallel kernel has run
    except Exception:
        pass
    torch = sys.modules.get("torch")         # only when the run used it (--no-torch: not loaded)
    if torch is not None:
        info["torch"] = torch.get_num_threads()
    elif worker_threads is not None:         # PyTorch ran in the worker process
        info["torch"] = worker_threads
    try:
        from threadpoolctl import threadpool_info
        info["blas"] = {f"{p['internal_api']}": p["num_threads"] for p in threadpool_info()}
        info["blas_kernels"] = sorted({str(p.get("architecture")) for p in threadpool_info()
                                       if p.get("internal_api") == "openblas"})
    except Exception:
        pass
    return info


def _openmp_loaded() -> bool | None:
    """Whether an OpenMP runtime is already mapped into this process (Linux), None if unknown."""
    try:
        maps = pathlib.Path("/proc/self/maps").read_text()
    except OSError:
        return None
    return any(name in maps for name in ("libgomp", "libiomp", "libomp"))


def set_omp_wait_policy(active: bool) -> dict:
    """OMP_WAIT_POLICY=PASSIVE unless the environment already says or `active` (--omp-active);
    what was done is recorded with the results (effective only if no OpenMP was loaded yet)."""
    before = os.environ.get("OMP_WAIT_POLICY")
    loaded = _openmp_loaded()
    if before is not None:
        source = "from the environment"
    elif active:
        source = "unset (--omp-active: the runtimes' default, spinning)"
    else:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        source = "set by conv-bench (the default; --omp-active leaves it unset)"
    return {"value": os.environ.get("OMP_WAIT_POLICY"), "source": source,
            "openmp_loaded_before": loaded}


def torch_note(args, torch, use_torch: bool) -> str | None:
    """What the run compared with when it is not PyTorch (None when it is)."""
    if use_torch:
        return None
    summary = ("summary: the fastest implementation per case, and geomeans against the NumPy "
               "reference where it was timed")
    if args.no_torch:
        return f"--no-torch: verified against the NumPy reference, no ratios; {summary}"
    if torch is None:
        return f"PyTorch not installed: verified against the NumPy reference, no ratios; {summary}"
    return (f"PyTorch {torch.__version__} has no usable CUDA for this GPU run: verified against "
            f"the NumPy reference, no ratios; {summary}")


def cpu_peaks(use_torch: bool, worker) -> dict:
    """metrics.cpu_peaks, with torch.matmul's GEMM rate measured in the PyTorch worker when there
    is one (metrics measures it by importing torch, which this process must not)."""
    if worker is None:
        return metrics.cpu_peaks(use_torch)
    def measure_in_worker():
        try:
            return worker.call("gemm_peak")
        except runner.WorkerError:
            return None
    return metrics.cpu_peaks(True, torch_gemm_peak=measure_in_worker)


def _progress(total: int, disable: bool):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="case", file=sys.stderr, dynamic_ncols=True,
                disable=disable or not sys.stderr.isatty())


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.write_dispatch_tables:
        from . import dispatch_tables
        return dispatch_tables.main(args.write_dispatch_tables, args.out)
    if args.out is not None:
        parser.error("--out goes with --write-dispatch-tables (the evidence file's folder: "
                     "--evidence-dir)")
    if args.run_tests:                  # refuse before any timing, not after it
        why = evidence.tests_unavailable_reason()
        if why:
            print(f"conv-bench: {why}", file=sys.stderr)
            return 2
    omp = set_omp_wait_policy(args.omp_active)    # before any OpenMP runtime loads (torch lazily)
    started = time.perf_counter()
    waited = None
    if args.wait_quiet > 0:
        waited = timing.wait_quiet(args.wait_quiet,
                                   say=lambda text: print(text, file=sys.stderr, flush=True))
    load_before = timing.load_average()
    use_before = timing.CpuUse.now()
    device, device_why = resolve_device(args.device)
    notes = [f"device {device}: {device_why}"]
    if waited is not None:
        notes.append(f"waited {waited['waited_s']:.0f} s for a quiet machine: "
                     + ("quiet" if waited["quiet"] else "still busy, went ahead"))

    precisions = tuple(dict.fromkeys(args.precision)) or (
        ("fp32", "tf32", "fp16", "bf16") if device == "gpu" else ("fp32",))
    if device == "cpu" and "tf32" in precisions:
        precisions = tuple(p for p in precisions if p != "tf32")
        notes.append("tf32: no such mode on the CPU, rows skipped")
    if not precisions:
        raise SystemExit("conv-bench: no precision left to run")

    impls, more = runner.discover(device, args.backend)
    notes += more
    isolated = device == "cpu" and not args.torch_in_process and not args.no_torch
    worker = None
    if isolated:
        # PyTorch is not imported here: a worker process imports it (runner.TorchWorker).
        torch = None
        if importlib.util.find_spec("torch") is not None:
            try:
                worker = runner.TorchWorker()
            except runner.WorkerError as exc:
                notes.append(f"PyTorch worker did not start: {exc}")
        use_torch = worker is not None
    else:
        torch = None if args.no_torch else runner.import_torch()
        use_torch = torch is not None and (device == "cpu" or runner.torch_cuda_usable(torch))
    note = torch_note(args, torch, use_torch)
    if note:
        notes.append(note)
    if not impls and not use_torch:
        raise SystemExit("conv-bench: nothing to run (no usable backend matches --backend)")
    if device == "cpu" and any(i.backend == "reference" for i in impls):
        notes.append(f"reference:direct timed only up to {runner.REFERENCE_MAX_FLOPS:.0e} FLOPs")

    if device == "gpu":
        import cupy  # noqa: F401  (gpu_usable() said it imports)
        device_name = evidence.gpu_name()
        peaks = metrics.gpu_peaks()
    else:
        device_name = evidence.cpu_name()
        peaks = cpu_peaks(use_torch, worker)

    cases = suites.build(args.suite, device, args.quick)
    if args.case:
        cases = [c for c in cases if any(text in c.label for text in args.case)]
        if not cases:
            raise SystemExit("conv-bench: no case matches --case")
    settings = runner.Settings(device=device, precisions=precisions, quick=args.quick,
                               max_reps=args.repeats, use_torch=use_torch, budget_s=args.budget,
                               torch_in_process=args.torch_in_process)
    bar = _progress(len(cases) * len(precisions), args.no_progress)
    run = runner.Runner(settings, impls, peaks, progress=bar, worker=worker)
    def show(rows: list[dict]) -> None:
        # Each row as its case finishes, above the progress bar; flushed, so a pipe sees it too.
        for r in rows:
            line = report.row_line(r)
            if bar is not None:
                bar.write(line, file=sys.stdout)
            else:
                print(line, flush=True)
        sys.stdout.flush()

    try:
        rows = run.run(cases, on_rows=show)
    finally:
        if bar is not None:
            bar.close()
    use_after = timing.CpuUse.now()
    # The PyTorch workers' CPU time is the run's own, not other processes'.
    use_after = dataclasses.replace(use_after, own_s=use_after.own_s + run.worker_cpu_s)
    others = use_before.others_share(use_after)
    load_after = timing.load_average()
    if device == "cpu":
        notes += metrics.settle_cpu_peak(peaks, rows)

    result = evidence.describe_run(device_name, device)
    result.update(
        threads=thread_info(worker.threads if worker is not None else None), peaks=peaks,
        settings={"quick": args.quick, "suites": args.suite or list(suites.SUITES),
                  "backends": [i.label for i in impls] + (["torch"] if use_torch else []),
                  "precisions": list(precisions), "repeats": args.repeats,
                  "budget_s": settings.budget, "rounds": run.rounds, "omp_wait_policy": omp,
                  "wait_quiet_s": args.wait_quiet, "torch_process": run.torch_process(),
                  "cases": [c.label for c in cases] if args.case else None,
                  "argv": sys.argv[1:] if argv is None else argv},
        notes=notes, tests=None, rows=rows, geomeans=runner.geomeans(rows),
        fastest=runner.fastest_per_case(rows),
        geomeans_vs_reference=runner.geomeans_vs_reference(rows),
        auto_versus_best=runner.auto_versus_best(rows))
    result["interference"] = timing.assess_run(rows, load_before, load_after, others)
    if waited is not None:
        result["interference"]["waited_s"] = waited["waited_s"]
    result["load_average"] = {"start": load_before, "end": load_after}
    if args.run_tests:
        print("running the test suite ...", file=sys.stderr)
        result["tests"] = evidence.run_tests()
    result["wall_s"] = time.perf_counter() - started

    print(report.header(result))
    print()
    print(report.table(result))
    tests = result["tests"]
    if tests is not None:
        print(f"\ntests: passed {tests['passed']}, failed {tests['failed']}, errors "
              f"{tests['errors']}, skipped {tests['skipped']} ({tests['summary']})")

    written = []
    if args.json:
        written.append(report.write_json(result, args.json))
    if args.csv:
        written.append(report.write_csv(rows, args.csv))
    if args.plot:
        written.append(report.write_plot(result, args.plot))
    if args.evidence or (args.evidence is None and (device == "gpu" or args.evidence_dir)):
        path = evidence.evidence_path(device_name, device, out_dir=args.evidence_dir)
        written.append(report.write_json(result, path))
        written.append(report.write_plot(result, path.with_suffix(".png")))
    for path in written:
        if path is not None:
            print(f"wrote {path}")

    wrong = sum(r["status"] == "WRONG" for r in rows)
    errors = sum(r["status"] == "ERROR" for r in rows)
    print(f"\n{len(rows)} rows, {wrong} WRONG, {errors} ERROR, {result['wall_s']:.1f} s"
          + ("  (UNRELIABLE: interference, see the top)" if result["interference"]["unreliable"]
             else ""))
    tests_bad = tests is not None and not tests["ok"]
    if tests_bad:
        print("the test suite did not pass (see tests: above)", file=sys.stderr)
    return 1 if wrong or tests_bad else 0


if __name__ == "__main__":
    sys.exit(main())
