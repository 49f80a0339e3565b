"""Output: an aligned plain-text table, JSON, CSV, and a PNG of the speed ratios (matplotlib, Agg)."""
from __future__ import annotations

import csv
import json
import math
import pathlib

CSV_FIELDS = ("suite", "case", "op", "args", "impl", "backend", "algorithm", "precision", "status",
              "median_ms", "p20_ms", "p80_ms", "reps", "first_ms", "compile_ms", "flops", "bytes",
              "gflops", "gbps", "peak_share", "bw_share", "torch_ms", "ratio", "auto", "max_err",
              "tol", "reference", "note")


def _fmt(value, spec: str, missing: str = "-") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return missing
    return format(value, spec)


def _align(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(r)]
        lines.append("  ".join(cells).rstrip())
    return lines


def _rate(row: dict) -> str:
    g = row.get("gflops")
    if g is None:
        return "-"
    return f"{g / 1e3:.2f} TFLOP/s" if g >= 1e3 else f"{g:.1f} GFLOP/s"


def row_line(r: dict) -> str:
    """One row as a line, printed as soon as its case finishes (also when output is piped)."""
    if r["status"] != "ok":
        return f"{r['suite']}/{r['case']} {r['impl']} {r['precision']}: {r['status']} {r['note'][:80]}"
    ratio = "" if r.get("ratio") is None else f", x{r['ratio']:.2f} torch"
    return (f"{r['suite']}/{r['case']} {r['impl']} {r['precision']}: "
            f"{_fmt(r['median_ms'], '.3f')} ms ({_rate(r)}{ratio})" + (" auto" if r.get("auto")
                                                                      else ""))


def table(result: dict) -> str:
    """The rows as an aligned text table (one block per suite), then the geomean ratios."""
    rows = result["rows"]
    lines = []
    head = ["case", "impl", "prec", "median ms", "p20-p80 ms", "achieved", "%peak", "x torch",
            "first ms", "status"]
    right = {3, 4, 5, 6, 7, 8}
    for suite in dict.fromkeys(r["suite"] for r in rows):
        body = [head]
        for r in (r for r in rows if r["suite"] == suite):
            ok = r["status"] == "ok"
            status = r["status"] if ok else f"{r['status']}: {r['note'][:60]}"
            if ok and r.get("auto"):
                status += " (auto)"
            body.append([
                r["case"], r["impl"], r["precision"],
                _fmt(r["median_ms"], ".3f") if ok else r["status"],
                f"{_fmt(r['p20_ms'], '.3f')}-{_fmt(r['p80_ms'], '.3f')}" if ok else "",
                _rate(r),
                _fmt(None if r["peak_share"] is None else 100 * r["peak_share"], ".1f"),
                _fmt(r["ratio"], ".2f"),
                _fmt(r["first_ms"], ".1f"),
                status,
            ])
        lines.append(f"== {suite}")
        lines.extend(_align(body, right))
        lines.append("")
    if result.get("geomeans"):
        lines.append("== geomean of (torch time / our time), > 1 means we are faster")
        body = [["suite", "prec", "impl", "geomean", "cases"]]
        for g in result["geomeans"]:
            body.append([g["suite"], g["precision"], g["impl"], _fmt(g["geomean_ratio"], ".3f"),
                         str(g["cases"])])
        lines.extend(_align(body, {3, 4}))
    if result.get("auto_versus_best"):
        lines.append("")
        lines.append('== algorithm="auto" against the best single algorithm of its backend, per '
                     'case (best time / auto time; 1 = it picked the best)')
        body = [["backend", "prec", "mode", "geomean", "within 10%", "worst (case: picked, best)",
                 "tuning call ms (median, max; x best)"]]
        for a in result["auto_versus_best"]:
            w = a.get("worst") or {}
            worst = (f"{_fmt(w.get('share'), '.2f')} ({w.get('case')}: {w.get('picked')}, "
                     f"{w.get('best')})") if w else "-"
            tuning = "-"
            if a.get("first_call_ms_median") is not None:
                tuning = (f"{a['first_call_ms_median']:.1f}, {a['first_call_ms_max']:.1f}; "
                          f"x{a['first_call_over_best_median']:.0f}")
            body.append([a["backend"], a["precision"], a["mode"],
                         _fmt(a["geomean_best_over_auto"], ".3f"),
                         f"{a['within_10pct']}/{a['cases']}", worst, tuning])
        lines.extend(_align(body, {3, 4}))
    return "\n".join(lines)


def header(result: dict) -> str:
    """A few lines saying where and how the numbers were taken."""
    peaks = result.get("peaks", {})
    parts = [f"device: {result['device']} ({result['device_kind']})"]
    if peaks:
        flops = ", ".join(f"{k} {peaks[k] / 1e9:.0f} GFLOP/s" for k in ("fp32", "tf32", "fp16")
                          if peaks.get(k) and k in result.get("settings", {}).get("precisions", [k]))
        parts.append(f"peaks: {flops}; bandwidth {peaks.get('bandwidth', 0) / 1e9:.0f} GB/s "
                     f"[{peaks.get('how', '')}]")
    threads = result.get("threads", {})
    if threads:
        parts.append("threads: " + ", ".join(f"{k} {v}" for k, v in threads.items()))
    for note in result.get("notes", []):
        parts.append(f"note: {note}")
    return "\n".join(parts)


# Version of the results files' layout (rows, geomeans, versions, threads, peaks, ...): raised
# whenever a field changes meaning or goes away, so that readers of old files can tell.
SCHEMA_VERSION = 1


def write_json(result: dict, path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    result = {"schema_version": SCHEMA_VERSION, **result}
    path.write_text(json.dumps(result, indent=1, default=_json_default) + "\n")
    return path


def _json_default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (tuple, set)):
        return list(obj)
    return str(obj)


def write_csv(rows: list[dict], path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_FIELDS})
    return path


def write_plot(result: dict, path) -> pathlib.Path | None:
    """Bar chart of torch time / our time per case and implementation, one panel per precision
    (log scale, 1 = parity). Returns None when nothing was timed against PyTorch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r.get("ratio") and r["backend"] != "torch"]
    if not rows:
        return None
    precisions = list(dict.fromkeys(r["precision"] for r in rows))
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    cases = list(dict.fromkeys(f"{r['suite']}/{r['case']}" for r in rows))
    height = max(4.0, 0.22 * len(cases) * max(1, min(len(impls), 3)) / 1.5 + 1.5)
    fig, axes = plt.subplots(1, len(precisions), figsize=(7 * len(precisions), height),
                             sharey=True, squeeze=False)
    bar = 0.8 / len(impls)
    colors = plt.get_cmap("tab10")
    for ax, precision in zip(axes[0], precisions):
        for j, impl in enumerate(impls):
            ratio = {f"{r['suite']}/{r['case']}": r["ratio"] for r in rows
                     if r["impl"] == impl and r["precision"] == precision}
            ys = [i + (j - (len(impls) - 1) / 2) * bar for i, c in enumerate(cases) if c in ratio]
            xs = [ratio[c] for c in cases if c in ratio]
            if xs:
                # Bars grow from parity: rightwards when we are faster, leftwards when slower.
                ax.barh(ys, [x - 1.0 for x in xs], height=bar, left=1.0, color=colors(j % 10),
                        label=impl)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("torch time / our time  (> 1: we are faster)")
        ax.set_title(f"{result['device']} - {precision}", fontsize=10)
        ax.grid(axis="x", which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    axes[0][0].set_yticks(range(len(cases)))
    axes[0][0].set_yticklabels(cases, fontsize=7)
    axes[0][0].set_ylim(len(cases) - 0.5, -0.5)          # first case on top, no empty margin
    fig.tight_layout()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
