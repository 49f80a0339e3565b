"""conv-bench on a busy machine: rows whose rounds disagree or whose case ran beside other
processes are flagged, and so are the run's summary, header and plot, with the numbers; OpenMP's
passive wait policy is the default, recorded with the results."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

import pytest
from conv.bench import __main__ as cli
from conv.bench import report, runner, suites, timing
from conv.bench.timing import CpuUse, Timing


def _timing(ms: float, reps: int = 5) -> Timing:
    return Timing.from_samples([ms] * reps)


class _FakeUse:
    """CpuUse.now() stand-in: successive snapshots in which others took `share` of 2 CPUs."""

    def __init__(self, share: float):
        self.share, self.t = share, 0.0

    def now(self):
        self.t += 1.0
        return CpuUse(wall_s=self.t, busy_s=self.t * 2 * self.share, own_s=0.0, cpus=2)


# ------------------------------------------------------------------------------ the readings
def test_others_share_is_busy_time_minus_ours_over_the_cpus():
    a = CpuUse(wall_s=10.0, busy_s=100.0, own_s=5.0, cpus=2)
    b = CpuUse(wall_s=12.0, busy_s=103.0, own_s=6.5, cpus=2)   # 3 s busy, 1.5 s of it ours
    assert a.others_share(b) == pytest.approx(1.5 / 4)
    assert a.others_share(CpuUse(10.01, 100.0, 5.0, 2)) is None   # too short to tell
    assert CpuUse(0.0, None, 0.0, 2).others_share(b) is None      # no /proc/stat


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="no /proc/stat on this OS")
def test_a_real_cpu_hog_is_seen_as_others():
    # One busy-looping process on one of our CPUs: others take at least most of one CPU's share.
    cpus = CpuUse.now().cpus
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)                           # past its start-up
        share = timing.others_share_now(0.7)
    finally:
        hog.kill()
        hog.wait()
    assert share is not None and share >= 0.6 / cpus, share


def test_round_spread_and_the_row_verdict():
    assert timing.round_spread([_timing(1.0)]) is None
    assert timing.round_spread([_timing(1.0), _timing(1.5)]) == pytest.approx(1.5)
    assert timing.row_interference(1.1, 0.02) is None
    why = timing.row_interference(1.6, 0.4)
    assert "rounds 1.60x apart" in why and "others took 40% of the CPUs" in why


# -------------------------------------------------------------------------- flagged rows
def _timed_rounds(monkeypatch, durations_ms: list[float], share: float) -> dict:
    """A Runner timing one row whose calls take durations_ms[round] ms, beside others using share."""
    settings = runner.Settings(device="cpu", precisions=("fp32",), quick=True, budget_s=0.004,
                               use_torch=False)
    run = runner.Runner(settings, [], {"fp32": 1e12, "bandwidth": 1e11})
    run.torch = None
    monkeypatch.setattr(runner, "CpuUse", _FakeUse(share))
    calls = {"n": 0}
    per_round = {}

    def fn():
        calls["n"] += 1
        time.sleep(durations_ms[min(len(per_round), len(durations_ms) - 1)] / 1e3)

    real_time = run._time

    def one_round(f, slow=False):
        t = real_time(f, slow=slow)
        per_round[len(per_round)] = t
        return t

    monkeypatch.setattr(run, "_time", one_round)
    row = {"flops": 1e6, "bytes": 1e3, "precision": "fp32", "gflops": None, "gbps": None,
           "peak_share": None, "bw_share": None, "median_ms": None}
    run._time_rounds([(row, fn, False, contextlib.nullcontext)])
    return row


def test_a_row_whose_rounds_disagree_is_flagged(monkeypatch):
    row = _timed_rounds(monkeypatch, [1.0, 3.0], share=0.0)
    assert row["round_spread"] > 2.0 and len(row["round_ms"]) == 2
    assert row["others_cpu"] == 0.0
    assert "rounds" in row["unreliable"] and "apart" in row["unreliable"]


def test_a_row_timed_beside_other_processes_is_flagged(monkeypatch):
    row = _timed_rounds(monkeypatch, [1.0, 1.0], share=0.6)
    assert row["round_spread"] < timing.ROUND_SPREAD
    assert row["others_cpu"] == pytest.approx(0.6)
    assert "others took 60% of the CPUs" in row["unreliable"]


def test_a_steady_row_on_a_quiet_machine_is_not_flagged(monkeypatch):
    row = _timed_rounds(monkeypatch, [1.0, 1.0], share=0.01)
    assert row["unreliable"] is None


# ----------------------------------------------------------------------- the run's verdict
def _rows(noisy: int, total: int) -> list[dict]:
    rows = []
    for i in range(total):
        row = dict.fromkeys(report.CSV_FIELDS)
        row.update(suite="s", case=f"c{i}", impl="cpu:implicit", backend="cpu",
                   algorithm="implicit", precision="fp32", status="ok", note="", median_ms=1.0,
                   ratio=2.0, auto=True, round_spread=1.6 if i < noisy else 1.1,
                   unreliable="rounds 1.60x apart (> 1.5)" if i < noisy else None)
        rows.append(row)
    return rows


def test_the_run_verdict_says_why_with_the_numbers():
    quiet = timing.assess_run(_rows(2, 20), [0.2, 0.3, 0.3], [1.9, 1.0, 0.5], 0.03, cpus=2)
    assert not quiet["unreliable"] and quiet["reasons"] == [] and quiet["noisy_rows"] == 2
    busy = timing.assess_run(_rows(5, 20), [1.6, 1.8, 1.8], [3.4, 2.2, 1.9], 0.42, cpus=2)
    assert busy["unreliable"]
    text = " | ".join(busy["reasons"])
    assert "other processes took 42% of the CPUs' time during the run (> 10%)" in text
    assert "5 of 20 timed rows flagged" in text
    # A high load with others' CPU time read as low: the load lags (and counts tasks using no
    # CPU), so the direct reading decides ...
    lagging = timing.assess_run(_rows(0, 20), [1.6, 1.8, 1.8], [3.4, 2.2, 1.9], 0.01, cpus=2)
    assert not lagging["unreliable"] and lagging["load_start"] == [1.6, 1.8, 1.8]
    # ... and where it cannot be read (no /proc/stat), the load average does.
    blind = timing.assess_run(_rows(0, 20), [1.6, 1.8, 1.8], [3.4, 2.2, 1.9], None, cpus=2)
    text = " | ".join(blind["reasons"])
    assert "1-min load 1.60 on 2 CPUs at the start (> 0.5 per CPU)" in text
    assert "1-min load 3.40 on 2 CPUs at the end" in text


def test_header_table_and_plot_are_marked_unreliable(tmp_path):
    pytest.importorskip("matplotlib")
    rows = _rows(5, 20)
    result = {"device": "cpu", "device_kind": "cpu", "rows": rows, "notes": [],
              "geomeans": runner.geomeans(rows),
              "interference": timing.assess_run(rows, [1.6, 1.8, 1.8], None, 0.42, cpus=2)}
    head = report.header(result)
    assert head.startswith("UNRELIABLE: ") and "other processes took 42%" in head
    table = report.table(result)
    assert "geomean of (torch time / our time)" in table and "UNRELIABLE" in table
    assert "noisy (5 rows)" in table
    all_row = next(g for g in result["geomeans"] if g["suite"] == "all" and g["impl"] == "best")
    assert all_row["unreliable"] == 5
    fig = report.plot_figure(result)
    try:
        assert fig._suptitle is not None and fig._suptitle.get_text().startswith("UNRELIABLE")
        labels = [t.get_text() for t in fig.legends[0].get_texts()]
        assert "noisy (interference seen)" in labels
    finally:
        import matplotlib.pyplot as plt
        plt.close(fig)


def test_a_busy_run_end_to_end_is_flagged(monkeypatch, capsys):
    # The whole runner on one small case, with the readings of a busy machine (others taking 60%
    # of the CPUs, a high load): its output says so, with the numbers.
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    busy = _FakeUse(0.6)
    monkeypatch.setattr(timing, "CpuUse", busy)
    monkeypatch.setattr(runner, "CpuUse", busy)
    cpus = os.cpu_count()
    monkeypatch.setattr(timing, "load_average", lambda: [2.0 * cpus, 1.5 * cpus, cpus])
    monkeypatch.setattr(cli.metrics, "cpu_peaks", lambda use_torch: {
        "fp32": 1e11, "fp16": 1e11, "bandwidth": 1e10, "basis": "measured GEMM", "how": "stub"})
    monkeypatch.setattr(suites, "build", lambda *a: suites.sweep("cpu", quick=True)[:1])
    code = cli.main(["--device", "cpu", "--backend", "cpu:implicit", "--no-torch",
                     "--no-progress", "--budget", "0.01"])
    out = capsys.readouterr().out
    assert code == 0
    (head,) = [line for line in out.splitlines() if line.startswith("UNRELIABLE")]
    assert head.startswith("UNRELIABLE: the machine was not quiet during this run: other "
                           "processes took 60% of the CPUs' time during the run (> 10%)"), head
    assert "1 of 1 timed rows flagged" in head
    assert "noisy" in out and "others took 60% of the CPUs during the case" in out
    assert f"1-min load {2.0 * cpus} -> {2.0 * cpus} on {cpus} CPUs" in out
    assert out.rstrip().endswith("(UNRELIABLE: interference, see the top)")
    # The passive wait policy is the default, and the run says so.
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"


# ------------------------------------------------------------------------- OpenMP and waiting
def test_passive_wait_policy_is_the_default_with_a_way_out(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    done = cli.set_omp_wait_policy(active=False)
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" == done["value"]
    assert done["source"].startswith("set by conv-bench")
    monkeypatch.delenv("OMP_WAIT_POLICY")
    done = cli.set_omp_wait_policy(active=True)
    assert "OMP_WAIT_POLICY" not in os.environ and done["value"] is None
    assert "--omp-active" in done["source"]
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")      # the user's own setting wins
    assert cli.set_omp_wait_policy(active=False)["source"] == "from the environment"
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    args = cli.build_parser().parse_args(["--omp-passive"])    # the old flag is still accepted
    assert args.omp_passive and not args.omp_active
    text = cli.build_parser().format_help()
    assert "--omp-active" in text and "--omp-passive" not in text
    assert "--wait-quiet SECONDS" in text and "at most 10% of the CPUs" in text


def test_wait_quiet_waits_while_busy_then_goes(monkeypatch):
    # Other sessions come in bursts: quiet means QUIET_SAMPLES quiet samples in a row.
    shares = iter([0.8, 0.01, 0.5, 0.02, 0.0, 0.03, 0.9])
    monkeypatch.setattr(timing, "others_share_now", lambda seconds: next(shares))
    monkeypatch.setattr(timing, "load_average", lambda: [5.0, 5.0, 5.0])   # lagging: ignored
    said = []
    got = timing.wait_quiet(60, poll_s=0.0, say=said.append)
    assert timing.QUIET_SAMPLES == 3
    assert got["quiet"] and got["others_share"] == 0.03 and len(said) == 2
    assert "others using 80% of the CPUs" in said[0]
    monkeypatch.setattr(timing, "others_share_now", lambda seconds: 0.9)
    got = timing.wait_quiet(0.0, poll_s=0.0)
    assert not got["quiet"]                     # gave up: the run goes ahead, marked


# ---------------------------------------------------------------- spinning pools between rows
@contextlib.contextmanager
def _spinning_thread(seconds: float | None):
    """A thread of this process that busy-loops (as OpenBLAS's idle workers do after a call) for
    `seconds`, or until the block ends (None)."""
    import threading
    stop = threading.Event()

    def spin():
        end = time.perf_counter() + (seconds if seconds is not None else 1e9)
        while not stop.is_set() and time.perf_counter() < end:
            pass
    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def test_the_wait_for_idle_pools_lasts_while_a_thread_spins():
    assert timing.wait_for_idle_pools() is not None               # nothing spins: no real wait
    with _spinning_thread(0.25):
        waited = timing.wait_for_idle_pools()
    assert waited is not None and waited >= 0.2
    with _spinning_thread(None):                                  # spins past the limit
        assert timing.wait_for_idle_pools(max_s=0.1) is None


def test_each_cpu_round_waits_for_the_pools_first_and_records_it(monkeypatch):
    calls = []
    with _spinning_thread(0.2):
        got = timing.time_cpu(lambda: calls.append(time.perf_counter()), budget_s=0.01,
                              min_reps=2, max_reps=3, warmup_s=0.0)
    assert got.idle_wait_s is not None and got.idle_wait_s >= 0.15
    row = _timed_rounds(monkeypatch, [1.0, 1.0], share=0.0)       # nothing spins: one window each
    assert len(row["idle_wait_ms"]) == 2
    assert all(0 < ms < 1e3 * timing.IDLE_MAX_S for ms in row["idle_wait_ms"])
    assert "idle_wait_ms" in report.CSV_FIELDS
    line = report._idle_wait_line({"rows": [{"idle_wait_ms": [5.1, 122.4]},
                                            {"idle_wait_ms": [None, 10.2]}, {}]})
    assert "1 of 4 rounds waited 50 ms or more, longest 122 ms" in line
    assert "1 still spinning after the limit" in line
