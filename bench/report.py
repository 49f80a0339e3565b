"""Output: an aligned plain-text table, JSON, CSV, and a PNG of the speed ratios (matplotlib, Agg)."""
from __future__ import annotations

import csv
import json
import math
import pathlib

CSV_FIELDS = ("suite", "case", "op", "args", "impl", "backend", "algorithm", "precision", "status",
              "median_ms", "p20_ms", "p80_ms", "reps", "first_ms", "compile_ms", "flops", "bytes",
              "gflops", "gbps", "peak_share", "bw_share", "torch_ms", "ratio", "auto", "max_err",
              "tol", "reference", "round_spread", "others_cpu", "unreliable", "ratio_unreliable",
              "idle_wait_ms", "note")


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
    noisy = f"  [noisy: {r['unreliable']}]" if r.get("unreliable") else ""
    return (f"{r['suite']}/{r['case']} {r['impl']} {r['precision']}: "
            f"{_fmt(r['median_ms'], '.3f')} ms ({_rate(r)}{ratio})"
            + (" auto" if r.get("auto") else "") + noisy)


def _unreliable(result: dict) -> dict | None:
    inter = result.get("interference")
    return inter if inter and inter.get("unreliable") else None


def _spread(r: dict) -> str:
    """The row's round spread, with "!" past the threshold."""
    from .timing import ROUND_SPREAD
    spread = r.get("round_spread")
    if spread is None:
        return "-"
    return f"{spread:.2f}" + ("!" if spread > ROUND_SPREAD else "")


def _others(r: dict) -> str:
    """Others' share of the CPUs while the row's case was timed, with "!" past the threshold."""
    from .timing import OTHERS_SHARE_CASE
    share = r.get("others_cpu")
    if share is None:
        return "-"
    return f"{100 * share:.0f}%" + ("!" if share > OTHERS_SHARE_CASE else "")


def table(result: dict) -> str:
    """The rows as an aligned text table (one block per suite), then the summaries: geomean
    ratios against PyTorch, or without PyTorch the fastest implementation per case and geomeans
    against the NumPy reference; and auto against the best single algorithm."""
    rows = result["rows"]
    lines = []
    head = ["case", "impl", "prec", "median ms", "p20-p80 ms", "rounds", "others", "achieved",
            "%peak", "x torch", "first ms", "status"]
    right = {3, 4, 5, 6, 7, 8, 9, 10}
    noisy_rows = 0
    for suite in dict.fromkeys(r["suite"] for r in rows):
        body = [head]
        for r in (r for r in rows if r["suite"] == suite):
            ok = r["status"] == "ok"
            status = r["status"] if ok else f"{r['status']}: {r['note'][:60]}"
            if ok and r.get("auto"):
                status += " (auto)"
            if ok and r.get("unreliable"):
                status += " noisy"
                noisy_rows += 1
            body.append([
                r["case"], r["impl"], r["precision"],
                _fmt(r["median_ms"], ".3f") if ok else r["status"],
                f"{_fmt(r['p20_ms'], '.3f')}-{_fmt(r['p80_ms'], '.3f')}" if ok else "",
                _spread(r) if ok else "",
                _others(r) if ok else "",
                _rate(r),
                _fmt(None if r["peak_share"] is None else 100 * r["peak_share"], ".1f"),
                _fmt(r["ratio"], ".2f"),
                _fmt(r["first_ms"], ".1f"),
                status,
            ])
        lines.append(f"== {suite}")
        lines.extend(_align(body, right))
        lines.append("")
    if noisy_rows:
        t = (result.get("interference") or {}).get("thresholds", {})
        lines.append(f"rounds: slowest round's median / fastest's; others: share of the CPUs "
                     f"other processes took while the case was timed; noisy ({noisy_rows} rows): "
                     f"rounds more than {t.get('round_spread', '?')}x apart, or others above "
                     f"{100 * t.get('others_share_case', float('nan')):.0f}%")
        lines.append("")
    bad = _unreliable(result)
    if result.get("geomeans"):
        title = "== geomean of (torch time / our time), > 1 means we are faster"
        if bad:
            title += "  -- UNRELIABLE (interference: see the first line)"
        lines.append(title)
        body = [["suite", "prec", "impl", "geomean", "cases", "noisy"]]
        for g in result["geomeans"]:
            body.append([g["suite"], g["precision"], g["impl"], _fmt(g["geomean_ratio"], ".3f"),
                         str(g["cases"]), str(g.get("unreliable", "-"))])
        lines.extend(_align(body, {3, 4, 5}))
    else:
        lines.extend(_summary_without_ratios(result, bad))
    if result.get("auto_versus_best"):
        lines.append("")
        lines.append('== algorithm="auto" against the best single algorithm of its backend, per '
                     'case (best time / auto time; 1 = it picked the best; "picked row": best '
                     'time / the picked algorithm\'s own row, the pick without the auto row\'s '
                     'own noise)')
        body = [["backend", "prec", "mode", "geomean", "within 10%", "picked row",
                 "within 10%", "worst (case: picked, best)",
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
                         f"{a['within_10pct']}/{a['cases']}",
                         _fmt(a.get("geomean_best_over_picked"), ".3f"),
                         (f"{a['picked_within_10pct']}/{a['picked_cases']}"
                          if a.get("picked_cases") else "-"), worst, tuning])
        lines.extend(_align(body, {3, 4, 5, 6}))
    return "\n".join(lines)


def _summary_without_ratios(result: dict, bad: dict | None) -> list[str]:
    """No PyTorch ratios: the fastest implementation per case, and geomeans of our speed over the
    NumPy reference where it was timed."""
    lines = []
    mark = "  -- UNRELIABLE (interference: see the first line)" if bad else ""
    fastest = result.get("fastest") or []
    if fastest:
        lines.append("== fastest implementation per case (no PyTorch ratios)" + mark)
        body = [["case", "prec", "fastest", "median ms", "runner-up", "x faster"]]
        for f in fastest:
            body.append([f"{f['suite']}/{f['case']}", f["precision"], f["fastest"],
                         _fmt(f["median_ms"], ".3f"), f["runner_up"] or "-",
                         _fmt(f["margin"], ".2f") + (" noisy" if f.get("unreliable") else "")])
        lines.extend(_align(body, {3, 5}))
        wins: dict = {}
        for f in fastest:
            wins[f["fastest"]] = wins.get(f["fastest"], 0) + 1
        lines.append("fastest in: " + ", ".join(f"{impl} {n}" for impl, n in
                                                sorted(wins.items(), key=lambda kv: -kv[1])))
    vs_ref = result.get("geomeans_vs_reference") or []
    if vs_ref:
        lines.append("")
        lines.append("== geomean of (NumPy reference time / our time) over the cases where "
                     "reference:direct was timed, > 1 means faster than the reference" + mark)
        body = [["suite", "prec", "impl", "geomean", "cases", "noisy"]]
        for g in vs_ref:
            body.append([g["suite"], g["precision"], g["impl"], _fmt(g["geomean_speedup"], ".2f"),
                         str(g["cases"]), str(g["unreliable"])])
        lines.extend(_align(body, {3, 4, 5}))
    return lines


def _peak_lines(result: dict) -> list[str]:
    peaks = result.get("peaks") or {}
    if not peaks:
        return []
    precisions = result.get("settings", {}).get("precisions")
    bandwidth = f"bandwidth {peaks.get('bandwidth', 0) / 1e9:.0f} GB/s (measured)"
    defined = peaks.get("defined")
    if peaks.get("basis") == "defined" and defined:
        from .metrics import defined_peak_text
        lines = [(f"peak: fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, defined = "
                  f"{defined_peak_text(defined)}; %peak is a share of it; {bandwidth}"),
                 f"  cores: {defined['cores_source']}; clock: {defined['clock_source']}",
                 f"  vector: {defined['vector_source']}; FMA units: {defined['fma_units_source']}"]
        if peaks.get("gemm_measured"):
            lines.append(f"  measured best-of GEMM: {peaks['gemm_measured'] / 1e9:.0f} GFLOP/s = "
                         f"{100 * peaks['gemm_measured'] / peaks['fp32']:.0f}% of the defined "
                         f"peak ({peaks.get('gemm_how', '')})")
        return lines
    flops = ", ".join(f"{k} {peaks[k] / 1e9:.0f} GFLOP/s" for k in ("fp32", "tf32", "fp16", "bf16")
                      if peaks.get(k) and (precisions is None or k in precisions))
    basis = peaks.get("basis") or "measured"
    return [(f"peak ({basis}; %peak is a share of it): {flops}; {bandwidth} "
             f"[{peaks.get('how', '')}]")]


def _interference_line(result: dict) -> str | None:
    inter = result.get("interference")
    if not inter:
        return None
    load = inter.get("load_start"), inter.get("load_end")
    others = inter.get("others_share")
    seen = (f"1-min load {load[0][0] if load[0] else '?'} -> {load[1][0] if load[1] else '?'} on "
            f"{inter['cpus']} CPUs (ours included; it decides only where others' CPU time is "
            f"unknown); other processes took "
            f"{'?' if others is None else f'{100 * others:.0f}%'} of the CPUs' time; "
            f"{inter['noisy_rows']} of {inter['timed_rows']} timed rows noisy")
    if inter.get("waited_s"):
        seen += f"; waited {inter['waited_s']:.0f} s for a quiet machine first"
    if inter["unreliable"]:
        return f"interference: {seen}"
    return f"interference: none past the thresholds ({seen})"


def _torch_process_line(result: dict) -> str | None:
    """Where PyTorch ran (settings.torch_process): its own worker process, or this one."""
    where = result.get("settings", {}).get("torch_process") or {}
    if where.get("mode") == "worker":
        pids = ", ".join(map(str, where.get("worker_pids") or [])) or "none started"
        return (f"processes: PyTorch and our implementations ran in separate processes: PyTorch "
                f"in a worker (pid {pids}; {where.get('start_method')}), ours in the runner (pid "
                f"{where.get('runner_pid')}, torch imported there: "
                f"{'yes' if where.get('torch_imported_in_runner') else 'no'}); one timed at a time")
    if where.get("mode") == "in-process":
        return (f"processes: PyTorch ran in the runner's own process (pid {where.get('runner_pid')}"
                f", --torch-in-process or a GPU run), beside our implementations")
    return None


def _idle_wait_line(result: dict) -> str | None:
    """How long the CPU rounds waited for the process's spinning thread pools (timing.py's
    wait_for_idle_pools), over the rows that recorded it."""
    waits = [w for r in result.get("rows", []) for w in (r.get("idle_wait_ms") or [])]
    if not waits:
        return None
    known = sorted(w for w in waits if w is not None)
    long = sum(1 for w in known if w >= 50)
    gave_up = len(waits) - len(known)
    text = (f"pools: each CPU round first waited for the timing process's spinning thread pools "
            f"to go idle (OpenBLAS's workers spin about 0.1 s after a call): {long} of "
            f"{len(waits)} rounds waited 50 ms or more"
            + (f", longest {known[-1]:.0f} ms" if known else ""))
    if gave_up:
        text += f"; {gave_up} still spinning after the limit (timed anyway)"
    return text


def header(result: dict) -> str:
    """A few lines saying where and how the numbers were taken, and whether they can be trusted."""
    parts = []
    bad = _unreliable(result)
    if bad:
        parts.append("UNRELIABLE: the machine was not quiet during this run: "
                     + "; ".join(bad["reasons"])
                     + ". The ratios below may be far off: rerun on a quiet machine "
                       "(conv-bench --wait-quiet 600 waits for one).")
    parts.append(f"device: {result['device']} ({result['device_kind']})")
    parts.extend(_peak_lines(result))
    threads = result.get("threads", {})
    if threads:
        parts.append("threads: " + ", ".join(f"{k} {v}" for k, v in threads.items()))
    for line in (_torch_process_line(result), _idle_wait_line(result)):
        if line:
            parts.append(line)
    line = _interference_line(result)
    if line:
        parts.append(line)
    for note in result.get("notes", []):
        parts.append(f"note: {note}")
    return "\n".join(parts)


# Version of the results files' layout (rows, geomeans, versions, threads, peaks, ...): raised
# whenever a field changes meaning or goes away, so that readers of old files can tell.
# 2: peaks.fp32 and rows' peak_share are against the defined CPU peak (peaks.basis says which),
#    no longer the best measured GEMM; rows gain round_ms/round_spread/others_cpu/unreliable and
#    the "auto"/"autotune" implementations; results gain interference and auto_versus_best.
# 3: each CPU round first waits for the process's spinning thread pools to go idle (timing.py's
#    wait_for_idle_pools: before, a row timed after one that called OpenBLAS ran on one core for
#    about 0.1 s); rows gain idle_wait_ms (that wait per round).
SCHEMA_VERSION = 3


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


def _ratio_ticks(lo: float, hi: float) -> list[float]:
    """Tick positions for a log axis of ratios: every decade (0.1x, 1x, 10x), and 2x / 5x steps
    too when the axis spans three decades or less."""
    steps = (1, 2, 5) if hi / lo <= 1000 else (1,)
    ticks = []
    for exp in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1):
        ticks += [m * 10.0 ** exp for m in steps if lo <= m * 10.0 ** exp <= hi]
    return ticks or [1.0]


def _tick_label(value: float, _pos=None) -> str:
    return f"{value:g}x"


def plot_figure(result: dict):
    """The figure write_plot saves (None when nothing was timed against PyTorch): bars of torch
    time / our time per case and implementation, one panel per precision, log scale from parity;
    the legend below the panels, off the bars; a star on the implementation algorithm='auto'
    picks; hatched, faded bars where the ratio is noisy; a red title when the run is unreliable."""
    import textwrap

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: I001  (after use("Agg"))
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

    rows = [r for r in result["rows"] if r.get("ratio") and r["backend"] != "torch"]
    if not rows:
        return None
    precisions = list(dict.fromkeys(r["precision"] for r in rows))
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    cases = list(dict.fromkeys(f"{r['suite']}/{r['case']}" for r in rows))
    ncol = min(len(impls) + 1, 4 * len(precisions))
    legend_rows = math.ceil((len(impls) + 2) / ncol)
    bad = _unreliable(result)
    title_lines = 0
    if bad:
        title = "UNRELIABLE: " + "; ".join(bad["reasons"])
        title = "\n".join(textwrap.wrap(title, width=75 * len(precisions)))
        title_lines = title.count("\n") + 1
    plot_h = max(3.0, 0.22 * len(cases) * max(1, min(len(impls), 3)) / 1.5)
    legend_h = 0.2 * legend_rows + 0.7           # inches: the legend and the x label
    title_h = 0.4 + 0.18 * title_lines           # the panels' titles and the red one
    height = plot_h + legend_h + title_h
    fig, axes = plt.subplots(1, len(precisions), figsize=(7 * len(precisions), height),
                             sharey=True, squeeze=False)
    bar = 0.8 / len(impls)
    colors = plt.get_cmap("tab10")
    ratios = [r["ratio"] for r in rows]
    lo, hi = min(min(ratios), 1.0) / 1.25, max(max(ratios), 1.0) * 1.25
    ticks = _ratio_ticks(lo, hi)
    any_noisy = any_auto = False
    for ax, precision in zip(axes[0], precisions):
        for j, impl in enumerate(impls):
            mine = {f"{r['suite']}/{r['case']}": r for r in rows
                    if r["impl"] == impl and r["precision"] == precision}
            at = [(i + (j - (len(impls) - 1) / 2) * bar, mine[c]) for i, c in enumerate(cases)
                  if c in mine]
            if not at:
                continue
            for noisy in (False, True):
                part = [(y, r) for y, r in at if bool(_noisy(r)) == noisy]
                if not part:
                    continue
                any_noisy |= noisy
                # Bars grow from parity: rightwards when we are faster, leftwards when slower.
                ax.barh([y for y, _ in part], [r["ratio"] - 1.0 for _, r in part], height=bar,
                        left=1.0, color=colors(j % 10), alpha=0.45 if noisy else 1.0,
                        hatch="///" if noisy else None, edgecolor="0.3" if noisy else None,
                        linewidth=0)
            picked = [(y, r) for y, r in at if r.get("auto")]
            if picked:
                any_auto = True
                ax.scatter([r["ratio"] for _, r in picked], [y for y, _ in picked], marker="*",
                           s=70, color="black", zorder=3)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(_tick_label))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("torch time / our time  (> 1x: we are faster)")
        ax.set_title(f"{result['device']} - {precision}", fontsize=10)
        ax.grid(axis="x", which="major", alpha=0.3)
    axes[0][0].set_yticks(range(len(cases)))
    axes[0][0].set_yticklabels(cases, fontsize=7)
    axes[0][0].set_ylim(len(cases) - 0.5, -0.5)          # first case on top, no empty margin
    handles = [Patch(color=colors(j % 10), label=impl) for j, impl in enumerate(impls)]
    if any_auto:
        handles.append(Line2D([], [], marker="*", color="black", linestyle="none", markersize=9,
                              label="algorithm='auto' picks this"))
    if any_noisy:
        handles.append(Patch(facecolor="0.85", hatch="///", edgecolor="0.3",
                             label="noisy (interference seen)"))
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    if bad:
        fig.suptitle(title, color="red", fontsize=9, fontweight="bold")
    # tight_layout leaves room for the suptitle itself; the rect keeps the legend's strip free.
    fig.tight_layout(rect=(0.0, (0.2 * legend_rows + 0.1) / height, 1.0, 1.0))
    return fig


def _noisy(row: dict) -> str | None:
    return row.get("unreliable") or row.get("ratio_unreliable")


def write_plot(result: dict, path) -> pathlib.Path | None:
    """plot_figure saved as a PNG. Returns None when nothing was timed against PyTorch, or
    without matplotlib (said on stderr: it comes with the [bench] extra)."""
    try:
        fig = plot_figure(result)
    except ImportError as exc:
        import sys
        print(f"conv-bench: no plot ({exc}; pip install 'conv[bench]' brings matplotlib)",
              file=sys.stderr)
        return None
    if fig is None:
        return None
    import matplotlib.pyplot as plt
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
