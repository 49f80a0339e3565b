"""The benchmark runner's results files carry the version of their layout."""
from __future__ import annotations

import json

from conv.bench import report


def test_results_files_carry_a_schema_version(tmp_path):
    path = report.write_json({"rows": [], "geomeans": []}, tmp_path / "r.json")
    data = json.loads(path.read_text())
    assert data["schema_version"] == report.SCHEMA_VERSION == 1
    assert data["rows"] == [] and list(data)[0] == "schema_version"
