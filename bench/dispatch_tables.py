"""Dispatch tables from benchmark results: what `algorithm="auto"` reads (conv/dispatch.py).

    conv-bench --write-dispatch-tables bench/results/cpu/2026-12-01-cpu-2core-settle.json
    conv-bench --write-dispatch-tables GPU_RESULTS.json --out /tmp/tables

Each results file's rows become entries of its backends' tables: CPU rows -> cpu.json, GPU rows
-> cupy.json and numba.json (PyTorch's rows and the NumPy reference's never). A row counts when its
status is ok and it has a median; its (suite, case) is looked up in bench.suites (the full suites
of the run's device, or the --quick ones when the recorded arguments say the run was quick) to
compute the case's features, and a row whose case no longer exists, or no longer has the recorded
arguments, is skipped with a note. "tf32" rows are skipped: they time calls with allow_tf32=True,
and the tables serve the default (TF32 off, float32-accurate). One run per table: two results files with rows of the same backend
are refused (times from different runs are not comparable).

The tables are deterministic in their inputs (no time stamp), so regenerating from the same
results file reproduces the committed table byte for byte (tests/test_dispatch_tables.py).

After writing, a leave-one-out check is printed per table and precision: each case's choice
predicted from the other cases, how often that choice is within 10% of the case's fastest
algorithm, and the geometric mean of fastest / predicted time (1.0: always the fastest).
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import sys

import numpy as np

from conv import dispatch, registry
from conv._spec import make_spec

from . import suites
from .evidence import REPO_ROOT

EXCLUDED_BACKENDS = ("reference", "torch")
DEFAULT_OUT = dispatch.PACKAGE_TABLES
NEAR = 1.10                     # "within 10% of the fastest"


def _repo_path(path: pathlib.Path) -> str:
    """The results file as the table names it: relative to the repository when inside it."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return resolved.as_posix()


def _spec(case: suites.Case):
    """The ConvSpec of a case (shapes only: zero-strided stand-ins, no memory)."""
    x = np.broadcast_to(np.zeros((), np.float32), case.x_shape)
    w = np.broadcast_to(np.zeros((), np.float32), case.w_shape)
    return make_spec(case.op, x, w, None, case.stride, case.padding, case.dilation, case.groups,
                     case.padding_mode)


def _case_index(device: str) -> dict:
    """(suite, name) -> [full Case, quick Case] for the device's suites."""
    index: dict = {}
    for quick in (False, True):
        for case in suites.build([], device, quick):
            index.setdefault((case.suite, case.name), []).append(case)
    return index


def _sig(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


def tables_from_results(paths, notes: list[str]) -> dict[str, dict]:
    """backend -> table, from the results files at `paths`; what was skipped goes to `notes`."""
    tables: dict[str, dict] = {}
    for path in map(pathlib.Path, paths):
        data = json.loads(path.read_text())
        name = _repo_path(path)
        device = data.get("device_kind", "cpu")
        index = _case_index(device)
        per_backend: dict[str, dict] = {}
        missing: dict = {}
        for row in data["rows"]:
            backend = row["backend"]
            if backend in EXCLUDED_BACKENDS:
                continue
            if row["status"] != "ok" or not row.get("median_ms"):
                continue
            if row["algorithm"] not in {a.name for a in registry.algorithms(backend)}:
                continue                # the runner's auto/autotune rows: not an algorithm
            if row["precision"] == "tf32":
                continue
            label = f"{row['suite']}/{row['case']}"
            case = next((c for c in index.get((row["suite"], row["case"]), ())
                         if c.describe() == row["args"]), None)
            if case is None:
                why = ("no longer in bench/suites.py" if (row["suite"], row["case"]) not in index
                       else f"its arguments changed since the run (recorded: {row['args']})")
                missing.setdefault(label, why)
                continue
            entries = per_backend.setdefault(backend, {})
            entry = entries.get((label, row["precision"]))
            if entry is None:
                entry = entries[(label, row["precision"])] = {
                    "case": label, "args": row["args"], "precision": row["precision"],
                    "features": [round(v, 6) for v in dispatch.features(_spec(case))],
                    "median_ms": {}}
            if row["algorithm"] in entry["median_ms"]:
                notes.append(f"{name}: {label} {row['precision']} {row['impl']} appears twice; "
                             f"the first row is kept")
                continue
            entry["median_ms"][row["algorithm"]] = _sig(row["median_ms"])
        for label, why in missing.items():
            notes.append(f"{name}: skipped {label}: {why}")
        if sum(r["precision"] == "tf32" for r in data["rows"]):
            notes.append(f"{name}: tf32 rows skipped (calls with allow_tf32=True; the tables "
                         f"serve the default, TF32 off)")
        for backend, entries in per_backend.items():
            if backend in tables:
                raise ValueError(f"{backend}: rows in {tables[backend]['source']['results']} and "
                                 f"in {name}; a table comes from one run (times from different "
                                 f"runs are not comparable): pass one results file per backend")
            cases = list(entries.values())
            tables[backend] = {
                "schema": dispatch.SCHEMA,
                "backend": backend,
                "generated_by": f"conv-bench --write-dispatch-tables {name}",
                "source": {"results": name, "commit": data.get("commit"),
                           "dirty": data.get("dirty"), "date": data.get("date"),
                           "device": data.get("device"), "kernels_digest":
                           data.get("kernels_digest"),
                           "precisions": list(dict.fromkeys(e["precision"] for e in cases))},
                "features": list(dispatch.FEATURES),
                "cases": cases,
            }
    return tables


def dumps(table: dict) -> str:
    """The table as JSON text: the header indented, one line per case."""
    def field(key, value, indent):
        if isinstance(value, dict):
            inner = ",\n".join(field(k, v, indent + "  ") for k, v in value.items())
            return f"{indent}{json.dumps(key)}: {{\n{inner}\n{indent}}}"
        return f"{indent}{json.dumps(key)}: {json.dumps(value)}"

    head = [field(k, v, "  ") for k, v in table.items() if k != "cases"]
    cases = ",\n".join(f"    {json.dumps(e)}" for e in table["cases"])
    return "{\n" + ",\n".join(head) + ',\n  "cases": [\n' + cases + "\n  ]\n}\n"


def write_tables(tables: dict[str, dict], out: str | os.PathLike) -> list[pathlib.Path]:
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for backend, table in tables.items():
        path = out / f"{backend}.json"
        path.write_text(dumps(table))
        written.append(path)
    dispatch.clear_cache()
    return written


def leave_one_out(table: dict) -> list[dict]:
    """Per precision: each case predicted from the others (conv.dispatch.nearest, every algorithm
    measured at the case eligible). Returns one summary per precision: cases, how many predictions
    were within 10% of the fastest, the geometric mean of fastest / predicted, the same for each
    algorithm always chosen, and the misses."""
    out = []
    for precision in table["source"]["precisions"]:
        entries = [e for e in table["cases"] if e["precision"] == precision]
        if len(entries) < 2:
            continue
        hits, logs, misses = 0, [], []
        always: dict[str, list[float]] = {}
        for i, entry in enumerate(entries):
            times = entry["median_ms"]
            best = min(times.values())
            found = dispatch.nearest(entries[:i] + entries[i + 1:], entry["features"],
                                     tuple(times))
            if found is None:
                continue
            tied, distance, ranked, _ = found
            predicted = times[ranked[0]]
            hits += predicted <= NEAR * best
            logs.append(math.log(best / predicted))
            if predicted > NEAR * best:
                fastest = min(times, key=times.get)
                misses.append(f"{entry['case']}: {ranked[0]} {predicted:.3g} ms (from "
                              f"{', '.join(e['case'] for e in tied)}, distance {distance:.2f}) "
                              f"vs {fastest} {best:.3g} ms")
            for algo, ms in times.items():
                always.setdefault(algo, []).append(math.log(best / ms))
        out.append({"precision": precision, "cases": len(logs), "within_10pct": hits,
                    "geomean_best_over_predicted": math.exp(sum(logs) / len(logs)),
                    "always": {a: math.exp(sum(v) / len(v)) for a, v in always.items()
                               if len(v) == len(logs)},
                    "misses": misses})
    return out


def main(paths, out=None, stream=None) -> int:
    """conv-bench --write-dispatch-tables: write the tables, print notes and the check."""
    stream = sys.stdout if stream is None else stream
    notes: list[str] = []
    try:
        tables = tables_from_results(paths, notes)
    except (OSError, ValueError, KeyError) as exc:
        print(f"conv-bench: cannot make dispatch tables: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"note: {note}", file=stream)
    if not tables:
        print("conv-bench: no timed rows of our backends in the results given", file=sys.stderr)
        return 2
    for path in write_tables(tables, DEFAULT_OUT if out is None else out):
        print(f"wrote {path}", file=stream)
    for backend, table in tables.items():
        src = table["source"]
        print(f"\n{backend}: {len(table['cases'])} entries from {src['results']} ({src['device']}, "
              f"commit {str(src['commit'])[:10]}, {src['date']})", file=stream)
        for check in leave_one_out(table):
            alts = ", ".join(f"always {a} {g:.3f}" for a, g in check["always"].items())
            print(f"  leave-one-out, {check['precision']}: predicted within 10% of the fastest "
                  f"in {check['within_10pct']}/{check['cases']} cases; geomean fastest/predicted "
                  f"{check['geomean_best_over_predicted']:.3f} ({alts})", file=stream)
            for miss in check["misses"]:
                print(f"    miss: {miss}", file=stream)
    return 0
