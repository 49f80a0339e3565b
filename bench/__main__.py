"""conv-bench: verify and time every backend and algorithm against PyTorch, over the suites.

    conv-bench --quick                       # CPU smoke run, under a minute on 2 cores
    conv-bench --suite resnet50 --suite sweep --json out.json --csv out.csv --plot out.png
    conv-bench --device gpu --run-tests      # GPU run: writes bench/results/gpu/<date>-<device>.json
    conv-bench --write-dispatch-tables bench/results/cpu/2026-12-01-cpu-2core-avx2.json
                                             # regenerate conv/dispatch_tables/ (what auto reads)
    python -m bench --help
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from . import evidence, metrics, report, runner, suites


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="conv-bench", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=("suites: " + ", ".join(suites.SUITES) + "\nratio = torch time / our time "
                "(> 1: we are faster); rows that disagree with the reference are WRONG, never "
                "timed."))
    p.add_argument("--quick", action="store_true",
                   help="small subset and short timing budget (CPU: under a minute)")
    p.add_argument("--suite", action="append", default=[], choices=list(suites.SUITES),
                   metavar="NAME", help="suite to run (repeatable; default: all)")
    p.add_argument("--backend", action="append", default=[], metavar="NAME",
                   help="backend or backend:algorithm to run (repeatable; default: all usable), "
                        "e.g. cpu, cpu:direct, cupy, numba:direct")
    p.add_argument("--device", choices=("cpu", "gpu", "auto"), default="auto",
                   help="auto: the GPU when CuPy sees one and a GPU backend is usable, else the CPU")
    p.add_argument("--precision", action="append", default=[], choices=runner.PRECISIONS,
                   help="precision rows (repeatable; default: fp32 on CPU, fp32 tf32 fp16 on GPU)")
    p.add_argument("--repeats", type=int, default=None,
                   help="most timed repetitions per row (default: 30 quick / 100 full, x2 on GPU)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of timing per row (default 0.12 quick, 0.5 full)")
    p.add_argument("--no-torch", action="store_true", help="do not compare with PyTorch")
    p.add_argument("--json", metavar="PATH", help="write results (rows, geomeans, versions) as JSON")
    p.add_argument("--csv", metavar="PATH", help="write the rows as CSV")
    p.add_argument("--plot", metavar="PATH", help="write a PNG of the speed ratios")
    p.add_argument("--evidence", action=argparse.BooleanOptionalAction, default=None,
                   help="write the evidence file (default: on for GPU runs -> bench/results/gpu/; "
                        "on the CPU it goes to bench/results/local/)")
    p.add_argument("--run-tests", action="store_true",
                   help="also run the test suite on this machine and record its counts")
    p.add_argument("--omp-passive", action="store_true",
                   help="set OMP_WAIT_POLICY=PASSIVE (unless already set) before PyTorch and "
                        "numba's OpenMP load: their two OpenMP pools can starve each other on a "
                        "small or busy machine (a PyTorch conv seen 300x slower after a numba "
                        "parallel call on 2 busy cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--write-dispatch-tables", nargs="+", metavar="RESULTS.json",
                   help="run nothing: regenerate the dispatch tables algorithm='auto' reads from "
                        "these results files (CPU rows -> cpu.json, GPU rows -> cupy.json / "
                        "numba.json) and print a leave-one-out check (bench/dispatch_tables.py)")
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


def thread_info() -> dict:
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
    torch = runner.import_torch()
    if torch is not None:
        info["torch"] = torch.get_num_threads()
    try:
        from threadpoolctl import threadpool_info
        info["blas"] = {f"{p['internal_api']}": p["num_threads"] for p in threadpool_info()}
        info["blas_kernels"] = sorted({str(p.get("architecture")) for p in threadpool_info()
                                       if p.get("internal_api") == "openblas"})
    except Exception:
        pass
    return info


def _load():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


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
        parser.error("--out goes with --write-dispatch-tables")
    if args.omp_passive:            # before any OpenMP runtime loads (torch is imported lazily)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    started = time.perf_counter()
    load_before = _load()
    device, device_why = resolve_device(args.device)
    notes = [f"device {device}: {device_why}"]

    precisions = tuple(dict.fromkeys(args.precision)) or (
        ("fp32", "tf32", "fp16") if device == "gpu" else ("fp32",))
    if device == "cpu" and "tf32" in precisions:
        precisions = tuple(p for p in precisions if p != "tf32")
        notes.append("tf32: no such mode on the CPU, rows skipped")
    if not precisions:
        raise SystemExit("conv-bench: no precision left to run")

    impls, more = runner.discover(device, args.backend)
    notes += more
    torch = None if args.no_torch else runner.import_torch()
    use_torch = torch is not None and (device == "cpu" or runner.torch_cuda_usable(torch))
    if not args.no_torch and not use_torch:
        notes.append("PyTorch (with CUDA, on a GPU run) not installed: verified against the NumPy "
                     "reference, no ratios")
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
        peaks = metrics.cpu_peaks(use_torch)

    cases = suites.build(args.suite, device, args.quick)
    settings = runner.Settings(device=device, precisions=precisions, quick=args.quick,
                               max_reps=args.repeats, use_torch=use_torch, budget_s=args.budget)
    bar = _progress(len(cases) * len(precisions), args.no_progress)
    run = runner.Runner(settings, impls, peaks, progress=bar)
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

    result = evidence.describe_run(device_name, device)
    result.update(
        threads=thread_info(), peaks=peaks,
        settings={"quick": args.quick, "suites": args.suite or list(suites.SUITES),
                  "backends": [i.label for i in impls] + (["torch"] if use_torch else []),
                  "precisions": list(precisions), "repeats": args.repeats,
                  "budget_s": settings.budget, "argv": sys.argv[1:] if argv is None else argv},
        notes=notes, tests=None, rows=rows, geomeans=runner.geomeans(rows),
        auto_versus_best=runner.auto_versus_best(rows))
    if args.run_tests:
        print("running the test suite ...", file=sys.stderr)
        result["tests"] = evidence.run_tests()
    result["wall_s"] = time.perf_counter() - started
    result["load_average"] = {"start": load_before, "end": _load()}
    if load_before and os.cpu_count() and load_before[0] > 0.5 * os.cpu_count():
        notes.append(f"the machine was busy at the start (1-min load {load_before[0]:.1f} on "
                     f"{os.cpu_count()} CPUs): CPU timings are noisy")

    print(report.header(result))
    print()
    print(report.table(result))
    if result["tests"] is not None:
        print(f"\ntests: {result['tests'].get('summary') or result['tests']}")

    written = []
    if args.json:
        written.append(report.write_json(result, args.json))
    if args.csv:
        written.append(report.write_csv(rows, args.csv))
    if args.plot:
        written.append(report.write_plot(result, args.plot))
    if args.evidence or (args.evidence is None and device == "gpu"):
        path = evidence.evidence_path(device_name, device)
        written.append(report.write_json(result, path))
        written.append(report.write_plot(result, path.with_suffix(".png")))
    for path in written:
        if path is not None:
            print(f"wrote {path}")

    wrong = sum(r["status"] == "WRONG" for r in rows)
    errors = sum(r["status"] == "ERROR" for r in rows)
    print(f"\n{len(rows)} rows, {wrong} WRONG, {errors} ERROR, {result['wall_s']:.1f} s")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
