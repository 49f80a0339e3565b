"""conv-bench's numbers and summaries: %peak is a share of a defined CPU peak (cores x clock x
lanes x FMA units x 2) and stays at or below 100; without PyTorch there is still a summary; the
plot keeps its legend off the bars, marks the auto pick and labels ticks 0.1x / 1x / 10x."""
from __future__ import annotations

import pytest
from conv.bench import __main__ as cli
from conv.bench import metrics, report, runner

# ------------------------------------------------------------------------------ the defined peak
SMT_CPUINFO = [  # 4 logical CPUs on 2 cores (SMT), 3.0 GHz current clock
    {"processor": str(i), "physical id": "0", "core id": str(i // 2), "cpu MHz": "3000.000"}
    for i in range(4)]


def test_cores_count_physical_cores_once():
    assert metrics.cpu_cores(allowed=[0, 1, 2, 3], blocks=SMT_CPUINFO)[0] == 2
    assert metrics.cpu_cores(allowed=[0, 2], blocks=SMT_CPUINFO)[0] == 2
    assert metrics.cpu_cores(allowed=[0, 1], blocks=SMT_CPUINFO)[0] == 1
    assert metrics.cpu_cores(allowed=[0, 1, 2], blocks=[])[0] == 3     # no core ids


def test_vector_width_from_llvm_features():
    assert metrics.cpu_vector({"avx512f": True, "avx2": True, "fma": True})[:2] == (512, True)
    assert metrics.cpu_vector({"avx512f": False, "avx2": True, "fma": True})[:2] == (256, True)
    assert metrics.cpu_vector({"avx": True})[:2] == (256, False)
    assert metrics.cpu_vector({"sse2": True})[:2] == (128, False)
    assert metrics.cpu_vector({"neon": True})[:2] == (128, True)
    bits, _, where = metrics.cpu_vector()             # this host, through numba's LLVM
    assert bits in (128, 256, 512) and "LLVM" in where


def test_the_clock_from_cpuinfo_is_not_a_maximum():
    hz, where, is_max = metrics.cpu_clock(allowed=[0, 1], blocks=SMT_CPUINFO)
    if is_max:                                   # this machine has cpufreq: it wins
        assert "cpufreq" in where
    else:
        assert hz == 3.0e9 and "cpu MHz" in where


def _defined(clock_is_max: bool) -> dict:
    # 2 cores x 2.5 GHz x 8 lanes x 2 FMA x 2 = 160 GFLOP/s
    return metrics.cpu_defined_peak(cores=(2, "test"), clock=(2.5e9, "test", clock_is_max),
                                    vector=(256, True, "test"))


def test_defined_peak_formula():
    d = _defined(True)
    assert d["peak"] == 2 * 2.5e9 * 8 * metrics.FMA_UNITS_PER_CORE * 2
    assert d["fma_units_source"].startswith("assumed")
    no_fma = metrics.cpu_defined_peak(cores=(1, ""), clock=(1e9, "", True),
                                      vector=(256, False, ""))
    assert no_fma["peak"] == 1e9 * 8 * 2         # a multiply and an add unit


def _peaks(monkeypatch, defined: dict, gemm: float) -> dict:
    monkeypatch.setattr(metrics, "measure_cpu_gemm_peak", lambda: gemm)
    monkeypatch.setattr(metrics, "measure_implicit_gemm_peak", lambda: gemm / 2)
    monkeypatch.setattr(metrics, "measure_cpu_bandwidth", lambda: 1e10)
    return metrics.cpu_peaks(use_torch=False, defined=defined)


def _row(gflops: float, case: str = "c") -> dict:
    return {"suite": "s", "case": case, "impl": "cpu:implicit", "precision": "fp32",
            "status": "ok", "gflops": gflops, "peak_share": None}


def test_peak_share_at_most_100_with_the_defined_peak(monkeypatch):
    # The measured GEMM (100 GFLOP/s) is the second, labelled number; %peak is of the defined one.
    peaks = _peaks(monkeypatch, _defined(clock_is_max=False), gemm=100e9)
    assert peaks["basis"] == "defined" and peaks["fp32"] == pytest.approx(160e9)
    assert peaks["gemm_measured"] == 100e9
    rows = [_row(150.0, "fast"), _row(40.0, "slow")]
    assert metrics.settle_cpu_peak(peaks, rows) == []
    assert [r["peak_share"] for r in rows] == pytest.approx([150 / 160, 40 / 160])


def test_a_clock_read_below_the_boost_is_raised_to_explain_the_rates(monkeypatch):
    # A VM's 'cpu MHz' is its nominal clock: a GEMM at 200 and a row at 230 GFLOP/s need more.
    peaks = _peaks(monkeypatch, _defined(clock_is_max=False), gemm=200e9)
    assert peaks["fp32"] == pytest.approx(200e9)
    assert "raised from 2.50 to 3.12 GHz" in peaks["defined"]["clock_source"]
    rows = [_row(230.0, "fastest"), _row(50.0)]
    notes = metrics.settle_cpu_peak(peaks, rows)
    assert peaks["fp32"] == pytest.approx(230e9) and "s/fastest cpu:implicit" in notes[0]
    assert max(r["peak_share"] for r in rows) <= 1.0 + 1e-12
    head = report.header({"device": "cpu", "device_kind": "cpu", "peaks": peaks,
                          "settings": {"precisions": ["fp32"]}})
    assert "defined = 2 cores x 3.59 GHz x 8 fp32 lanes (256-bit) x 2 FMA units x 2 FLOP" in head
    assert "%peak is a share of it" in head and "measured best-of GEMM: 200 GFLOP/s" in head


def test_a_maximum_clock_is_kept_and_a_row_above_it_is_said(monkeypatch):
    peaks = _peaks(monkeypatch, _defined(clock_is_max=True), gemm=100e9)
    rows = [_row(170.0)]
    notes = metrics.settle_cpu_peak(peaks, rows)
    assert peaks["fp32"] == pytest.approx(160e9)
    assert notes and "1 rows above 100% of the defined peak" in notes[0]


def test_fewer_flop_algorithms_get_no_peak_share_and_do_not_move_the_peak(monkeypatch):
    # An FFT's GFLOP/s is direct FLOPs / time: past any peak, and no evidence about the clock.
    peaks = _peaks(monkeypatch, _defined(clock_is_max=False), gemm=100e9)
    fft = dict(_row(900.0, "long"), backend="cpu", algorithm="fft")
    auto_fft = dict(_row(880.0, "long"), backend="cpu", algorithm="auto", picked="fft")
    rows = [fft, auto_fft, dict(_row(120.0), backend="cpu", algorithm="implicit")]
    assert metrics.settle_cpu_peak(peaks, rows) == []
    assert peaks["fp32"] == pytest.approx(160e9)
    assert fft["peak_share"] is None and auto_fft["peak_share"] is None
    assert rows[2]["peak_share"] == pytest.approx(120 / 160)


# ------------------------------------------------------------------------------ without PyTorch
def _noratio_rows() -> list[dict]:
    rows = []
    for case, times in (("a", {"reference:direct": 10.0, "cpu:implicit": 1.0, "cpu:direct": 2.0}),
                        ("b", {"reference:direct": 40.0, "cpu:implicit": 5.0, "cpu:direct": 4.0}),
                        ("big", {"cpu:implicit": 3.0, "cpu:direct": 6.0})):
        for impl, ms in times.items():
            backend, algorithm = impl.split(":")
            row = dict.fromkeys(report.CSV_FIELDS)
            row.update(suite="sweep", case=case, impl=impl, backend=backend, algorithm=algorithm,
                       precision="fp32", status="ok", note="", median_ms=ms)
            rows.append(row)
    return rows


def test_summary_without_pytorch():
    rows = _noratio_rows()
    result = {"device": "cpu", "device_kind": "cpu", "rows": rows, "notes": [], "geomeans": [],
              "fastest": runner.fastest_per_case(rows),
              "geomeans_vs_reference": runner.geomeans_vs_reference(rows)}
    fastest = {f["case"]: (f["fastest"], f["runner_up"]) for f in result["fastest"]}
    assert fastest == {"a": ("cpu:implicit", "cpu:direct"), "b": ("cpu:direct", "cpu:implicit"),
                       "big": ("cpu:implicit", "cpu:direct")}
    vs = {(g["suite"], g["impl"]): g for g in result["geomeans_vs_reference"]}
    assert vs[("all", "cpu:implicit")]["geomean_speedup"] == pytest.approx((10 * 8) ** 0.5)
    assert vs[("all", "cpu:implicit")]["cases"] == 2          # "big": no reference timed
    text = report.table(result)
    assert "== fastest implementation per case (no PyTorch ratios)" in text
    assert "fastest in: cpu:implicit 2, cpu:direct 1" in text
    assert "== geomean of (NumPy reference time / our time)" in text


def test_the_note_says_what_was_compared():
    args = cli.build_parser().parse_args([])
    note = cli.torch_note(args, None, use_torch=False)
    assert note.startswith("PyTorch not installed: verified against the NumPy reference")
    assert "CUDA" not in note and "fastest implementation per case" in note
    args = cli.build_parser().parse_args(["--no-torch"])
    assert cli.torch_note(args, None, use_torch=False).startswith("--no-torch:")
    assert cli.torch_note(args, object(), use_torch=True) is None


# ---------------------------------------------------------------------------------- the plot
def _plot_result() -> dict:
    rows = []
    for case, ratios in (("a", (0.3, 2.0)), ("b", (1.5, 12.0)), ("c", (0.08, 0.9))):
        for j, (impl, ratio) in enumerate(zip(("cpu:direct", "cpu:implicit"), ratios)):
            rows.append({"suite": "sweep", "case": case, "impl": impl, "backend": "cpu",
                         "precision": "fp32", "ratio": ratio, "auto": j == 1,
                         "unreliable": None})
    return {"device": "cpu", "rows": rows}


def test_plot_legend_off_the_bars_auto_marked_ticks_as_ratios(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt
    result = _plot_result()
    fig = report.plot_figure(result)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        (legend,) = fig.legends
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), "legend over a panel"
        labels = [t.get_text() for t in legend.get_texts()]
        assert labels == ["cpu:direct", "cpu:implicit", "algorithm='auto' picks this"]
        (ax,) = fig.axes
        stars = [c for c in ax.collections if c.get_offsets().shape[0]]
        assert len(stars) == 1 and stars[0].get_offsets().shape[0] == 3   # one per case
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        assert {"0.1x", "1x", "10x"} <= set(ticks)
    finally:
        plt.close(fig)
    path = report.write_plot(result, tmp_path / "p.png")
    assert path.stat().st_size > 1000


# ------------------------------------------------------------------------ auto against the best
def test_auto_versus_best_scores_the_pick_by_the_picked_algorithms_own_row():
    rows = []
    for case, times, picked in (("a", {"implicit": 1.0, "im2col": 2.0, "autotune": 1.8}, "im2col"),
                                ("b", {"implicit": 4.0, "im2col": 3.0, "autotune": 2.5}, "im2col")):
        for algorithm, ms in times.items():
            row = dict.fromkeys(report.CSV_FIELDS)
            row.update(suite="sweep", case=case, impl=f"cpu:{algorithm}", backend="cpu",
                       algorithm=algorithm, precision="fp32", status="ok", note="", median_ms=ms,
                       first_ms=ms * 100 if algorithm == "autotune" else ms)
            if algorithm == "autotune":
                row["picked"] = picked
            rows.append(row)
    (entry,) = runner.auto_versus_best(rows)
    assert entry["mode"] == "autotune" and entry["cases"] == 2
    # The auto row's own times: a 1/1.8, b 3/2.5 (faster than the best row: noise)
    assert entry["geomean_best_over_auto"] == pytest.approx((1 / 1.8 * 3 / 2.5) ** 0.5)
    # The pick scored by its own row: a picked im2col (2.0 against 1.0), b picked the best
    assert entry["geomean_best_over_picked"] == pytest.approx((0.5 * 1.0) ** 0.5)
    assert entry["picked_within_10pct"] == 1 and entry["picked_cases"] == 2
    text = report.table({"device": "cpu", "device_kind": "cpu", "rows": rows, "notes": [],
                         "geomeans": [], "auto_versus_best": [entry]})
    assert "picked row" in text and "0.707" in text


def test_cpu_target_notes_say_what_the_environment_chose(monkeypatch):
    from bench import runner
    for var in ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(var, raising=False)
    assert runner.cpu_target_notes() == []
    monkeypatch.setenv("NUMBA_CPU_NAME", "haswell")
    monkeypatch.setenv("NUMBA_CPU_FEATURES", "+avx2,+fma")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    ours, theirs = runner.cpu_target_notes()
    # The kernels' vector width is fixed when conv.backend.cpu.implicit is imported: this
    # process's, whatever the variables say now.
    assert ours.startswith("our CPU kernels compiled for NUMBA_CPU_NAME=haswell "
                           "(NUMBA_CPU_FEATURES=+avx2,+fma): ") and "-bit vectors" in ours
    assert theirs == "PyTorch's oneDNN held to ONEDNN_MAX_CPU_ISA=AVX2"
