"""The benchmark runner's results files carry the version of their layout."""
from __future__ import annotations

import json

from conv.bench import report


def test_results_files_carry_a_schema_version(tmp_path):
    path = report.write_json({"rows": [], "geomeans": []}, tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert data["schema_version"] == report.SCHEMA_VERSION == 3
    assert data["rows"] == [] and list(data)[0] == "schema_version"


def test_rows_are_printed_as_their_cases_finish_also_into_a_pipe():
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-m", "conv.bench", "--quick", "--suite", "sweep",
                             "--backend", "cpu:implicit", "--no-torch", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        first = proc.stdout.readline()
        # The first case's row arrives while the other cases are still being timed.
        assert first.startswith("sweep/") and "cpu:implicit fp32:" in first, first
        assert proc.poll() is None
        rest = proc.stdout.read()
    finally:
        proc.kill() if proc.poll() is None else None
        proc.wait()
    assert rest.count("sweep/") >= 10
