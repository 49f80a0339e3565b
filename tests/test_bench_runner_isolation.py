"""conv-bench on the CPU times PyTorch in a worker process of its own (issue 14): the runner never
imports torch, the worker computes the reference and the torch rows, a worker that dies makes that
case's torch row an ERROR row and the next case gets a new worker; --torch-in-process keeps the
old single-process way. Each test is one small conv-bench run in a subprocess, as a user runs it."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch", reason="the PyTorch worker needs PyTorch (CI has the CPU wheel)")

# Two tiny conv1d cases of the quick sweep, our cpu:implicit only: a few seconds per run.
CASES = ["--suite", "sweep", "--case", "conv1d_s1_p0_d1", "--case", "conv1d_s2_p0_d1",
         "--backend", "cpu:implicit"]
FIRST, SECOND = "conv1d_s1_p0_d1", "conv1d_s2_p0_d1"

def _bench(tmp_path, *args, env=None) -> dict:
    """conv-bench --quick on CASES with `args`; its results JSON (the run must succeed)."""
    out = tmp_path / "results.json"
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run(
        [sys.executable, "-m", "conv.bench", "--quick", "--no-progress", "--budget", "0.02",
         *CASES, *args, "--json", str(out)],
        check=False, cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    result["stdout"] = proc.stdout
    return result


def _row(result: dict, case: str, impl: str) -> dict:
    (row,) = [r for r in result["rows"] if r["case"] == case and r["impl"] == impl]
    return row


def test_worker_times_torch_and_a_crash_is_an_error_row_not_a_failed_run(tmp_path):
    # The first case's worker exits in the middle of its timing rounds, as a crash would.
    result = _bench(tmp_path, env={"CONV_BENCH_TORCH_WORKER_EXIT": f"time_round:{FIRST}"})
    where = result["settings"]["torch_process"]
    assert where["mode"] == "worker" and where["start_method"] == "spawn"
    assert where["torch_imported_in_runner"] is False
    runner_pid = where["runner_pid"]
    # One worker for the first case (it died), a new one for the second.
    assert len(where["worker_pids"]) == 2 and runner_pid not in where["worker_pids"]
    assert len(set(where["worker_pids"])) == 2

    crashed = _row(result, FIRST, "torch")
    assert crashed["status"] == "ERROR" and "died" in crashed["note"], crashed
    assert crashed["median_ms"] is None
    ours = _row(result, FIRST, "cpu:implicit")
    assert ours["status"] == "ok" and ours["median_ms"] and ours["ratio"] is None
    # The reference had been computed in the worker before it died.
    assert f"worker process (pid {where['worker_pids'][0]})" in ours["reference"]

    torch_row = _row(result, SECOND, "torch")
    assert torch_row["status"] == "ok" and torch_row["median_ms"] > 0, torch_row
    assert torch_row["max_err"] <= torch_row["tol"]
    assert f"worker pid {where['worker_pids'][1]}" in torch_row["note"]
    ours = _row(result, SECOND, "cpu:implicit")
    assert ours["status"] == "ok"
    assert ours["reference"].startswith("torch float64 (CPU), in the worker process (pid "
                                        f"{where['worker_pids'][1]})")
    assert ours["ratio"] == pytest.approx(torch_row["median_ms"] / ours["median_ms"])
    assert "separate processes" in result["stdout"]
    assert "torch imported there: no" in result["stdout"]


def test_torch_in_process_keeps_the_old_way(tmp_path):
    result = _bench(tmp_path, "--torch-in-process")
    where = result["settings"]["torch_process"]
    assert where["mode"] == "in-process" and where["torch_imported_in_runner"] is True
    assert where["worker_pids"] == []
    for case in (FIRST, SECOND):
        torch_row = _row(result, case, "torch")
        ours = _row(result, case, "cpu:implicit")
        assert torch_row["status"] == "ok" and ours["status"] == "ok"
        assert ours["reference"] == "torch float64 (CPU)"
        assert ours["ratio"] == pytest.approx(torch_row["median_ms"] / ours["median_ms"])
    assert "in the runner's own process" in result["stdout"]
