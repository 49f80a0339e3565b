"""Dispatch tables (conv/dispatch.py, bench/dispatch_tables.py): the committed CPU table is what its
named results file regenerates, generation from small synthetic results files (CPU and GPU; a
GPU backend then reads its table from a temporary folder), nearest-case lookup on hand-made specs,
eligibility, and reasons that name the run."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from bench import __main__ as bench_main
from bench import dispatch_tables, suites
from conv import dispatch, registry
from conv._spec import make_spec

ROOT = pathlib.Path(__file__).resolve().parent.parent
CPU_TABLE = ROOT / "conv" / "dispatch_tables" / "cpu.json"
CPU_RUN = "bench/results/cpu/2026-12-03-cpu-2core-xeon-avx512-into-run1.json"
CPU_DEVICE = "Intel(R) Xeon(R) Processor"


def spec(x_shape, w_shape, dtype="float32", **kwargs):
    op = "conv1d" if len(x_shape) == 3 else "conv2d"
    x, w = np.zeros(x_shape, dtype), np.zeros(w_shape, dtype)
    return make_spec(op, x, w, None, kwargs.get("stride", 1), kwargs.get("padding", 0),
                     kwargs.get("dilation", 1), kwargs.get("groups", 1))


def _case(device: str, label: str) -> suites.Case:
    return next(c for c in suites.build([], device, False) if c.label == label)


def _row(case: suites.Case, impl: str, ms: float | None, precision="fp32", status="ok",
         args=None) -> dict:
    backend, _, algorithm = impl.partition(":")
    return {"suite": case.suite, "case": case.name, "op": case.op,
            "args": case.describe() if args is None else args, "impl": impl,
            "backend": backend, "algorithm": algorithm, "precision": precision,
            "status": status, "median_ms": ms}


def _results(tmp_path, name: str, device: str, rows: list[dict]) -> pathlib.Path:
    path = tmp_path / name
    path.write_text(json.dumps({
        "device": "Synthetic GPU" if device == "gpu" else "Synthetic CPU", "device_kind": device,
        "date": "2030-01-02T03:04:05", "commit": "0" * 40, "dirty": False,
        "kernels_digest": "ab" * 32, "rows": rows}))
    return path


@pytest.fixture
def tables_folder(tmp_path):
    """dispatch reads tables from a fresh temporary folder for the test, then from the package's
    again."""
    folder = tmp_path / "tables"
    folder.mkdir()
    previous = dispatch.set_tables_dir(folder)
    dispatch.clear_cache()
    yield folder
    dispatch.set_tables_dir(previous)
    dispatch.clear_cache()


# --------------------------------------------------------------------------- the committed table

def test_regenerating_from_the_named_run_reproduces_the_committed_table():
    committed = json.loads(CPU_TABLE.read_text())
    assert committed["source"]["results"] == CPU_RUN
    notes = []
    tables = dispatch_tables.tables_from_results([ROOT / CPU_RUN], notes)
    assert set(tables) == {"cpu"} and notes == []
    assert dispatch_tables.dumps(tables["cpu"]) == CPU_TABLE.read_text()


def test_the_committed_table_names_its_run():
    table = json.loads(CPU_TABLE.read_text())
    run = json.loads((ROOT / CPU_RUN).read_text())
    assert table["schema"] == dispatch.SCHEMA and table["backend"] == "cpu"
    assert table["features"] == list(dispatch.FEATURES)
    src = table["source"]
    assert (src["commit"], src["date"], src["device"], src["kernels_digest"], src["precisions"]) \
        == (run["commit"], run["date"], run["device"], run["kernels_digest"], ["fp32"])
    # Every fp32 case the run timed, each with the algorithms timed on it: winograd only on the
    # stride-1 3x3 (3-tap) ones it computes (16 undilated, 6 dilated).
    cases = {f"{r['suite']}/{r['case']}" for r in run["rows"] if r["backend"] == "cpu"}
    assert [e["case"] for e in table["cases"]] == list(dict.fromkeys(
        f"{r['suite']}/{r['case']}" for r in run["rows"] if r["backend"] == "cpu"))
    assert len(cases) == 64
    assert all({"implicit", "im2col", "direct", "fft"} <= set(e["median_ms"])
               <= {"implicit", "im2col", "direct", "fft", "winograd"} for e in table["cases"])
    assert sum("winograd" in e["median_ms"] for e in table["cases"]) == 22


def test_the_cpu_floating_point_choice_reads_the_table():
    # The hand-typed CPU rows (k_per_group == 1 and unstrided -> direct, else implicit) are gone:
    # every floating-point and complex choice is the table's.
    for s in (spec((1, 32, 112, 112), (32, 1, 3, 3), groups=32, padding=1),
              spec((1, 64, 56, 56), (256, 64, 1, 1)),
              spec((2, 64, 300), (100, 64, 3), "float64"),
              spec((1, 8, 20, 20), (8, 8, 3, 3), "complex128", padding=1)):
        row, reason = registry.auto_algorithm("cpu", s)
        assert reason.startswith(f"dispatch table ({CPU_RUN}, {CPU_DEVICE}, fp32)"), reason
        assert (row.name, reason) == dispatch.lookup("cpu", s, registry.eligible("cpu", s))


# -------------------------------------------------------------------------- nearest-case lookup

def test_a_measured_case_gets_its_own_fastest_algorithm_and_the_reason_names_it():
    # grouped/mbv2_dw3x3_32_112 itself: implicit 0.298 ms < direct 0.423 ms < im2col 1.74 ms < ...
    s = spec((1, 32, 112, 112), (32, 1, 3, 3), groups=32, padding=1)
    row, reason = registry.auto_algorithm("cpu", s)
    assert row.name == "implicit"
    assert reason == (f"dispatch table ({CPU_RUN}, {CPU_DEVICE}, fp32): nearest measured case "
                      f"grouped/mbv2_dw3x3_32_112 (distance 0.00), implicit 0.298 ms < direct "
                      f"0.423 ms < im2col 1.74 ms < winograd 2.2 ms < fft 4.93 ms")


@pytest.mark.parametrize("shapes, kwargs, case, algorithm", [
    # A pointwise conv near ResNet-50's 1x1 layers: the implicit GEMM 0.497 ms, im2col's one
    # BLAS GEMM 0.499 there.
    (((1, 64, 48, 48), (256, 64, 1, 1)), {}, "resnet50/s1_1x1_64_256", "implicit"),
    # A dense 3x3 near ResNet-50 stage 2's: Winograd measured 1.44 ms there, the implicit GEMM
    # 1.57: past the margin that near-ties need (dispatch.TRANSFORM_MARGIN).
    (((1, 128, 24, 24), (128, 128, 3, 3)), dict(padding=1), "resnet50/s2_3x3_128", "winograd"),
    # 32 channels of 56 x 56, unpadded: the implicit GEMM 0.521 ms, Winograd 0.713 there (in
    # other runs Winograd was first by less than the margin: a near-tie, which goes to the
    # exact-sum algorithm either way).
    (((2, 32, 56, 56), (32, 32, 3, 3)), {}, "sweep/conv2d_s1_p0_d1", "implicit"),
    # The same with stride 2, which Winograd does not compute: the fastest it leaves, implicit.
    (((1, 128, 24, 24), (128, 128, 3, 3)), dict(padding=1, stride=2), "resnet50/s3_3x3_256",
     "implicit"),
    # Depthwise 3x3 at 14x14 with many channels: MobileNet's last stage, direct.
    (((1, 256, 14, 14), (256, 1, 3, 3)), dict(groups=256, padding=1),
     "grouped/mbv2_dw3x3_384_14", "direct"),
    # A long-kernel conv1d: FFT.
    (((1, 16, 6000), (16, 16, 101)), dict(padding=50), "longkernel/k127", "fft"),
])
def test_nearest_measured_case_on_hand_made_specs(shapes, kwargs, case, algorithm):
    s = spec(*shapes, **kwargs)
    row, reason = registry.auto_algorithm("cpu", s)
    assert row.name == algorithm and f"nearest measured case {case} (" in reason, reason


def test_nearest_is_by_the_documented_distance(tables_folder):
    # Two entries; a spec one doubling of output channels from A and three from B takes A's
    # fastest, and a spec at B's point B's.
    a = spec((1, 16, 32, 32), (16, 16, 3, 3), padding=1)
    b = spec((1, 16, 32, 32), (128, 16, 3, 3), padding=1)
    table = {"schema": dispatch.SCHEMA, "backend": "cpu", "features": list(dispatch.FEATURES),
             "source": {"results": "hand-made.json", "device": "nowhere", "precisions": ["fp32"]},
             "cases": [
                 {"case": "t/a", "precision": "fp32", "features": list(dispatch.features(a)),
                  "median_ms": {"implicit": 2.0, "im2col": 1.0, "direct": 3.0}},
                 {"case": "t/b", "precision": "fp32", "features": list(dispatch.features(b)),
                  "median_ms": {"implicit": 1.0, "im2col": 2.0, "direct": 3.0}}]}
    (tables_folder / "cpu.json").write_text(json.dumps(table))
    near_a = spec((1, 16, 32, 32), (32, 16, 3, 3), padding=1)
    assert dispatch.features(near_a)[0] == dispatch.features(a)[0] + 1
    eligible = ("implicit", "im2col", "direct")
    algo, reason = dispatch.lookup("cpu", near_a, eligible)
    assert algo == "im2col" and "nearest measured case t/a (distance 1.00)" in reason, reason
    assert dispatch.lookup("cpu", b, eligible)[0] == "implicit"
    # Only eligible algorithms are chosen, and the reason says which were left out.
    algo, reason = dispatch.lookup("cpu", spec((1, 16, 32, 32), (16, 16, 3, 3), "int32"),
                                   ("im2col", "direct"))
    assert algo == "im2col" and "int32 was not measured" in reason
    assert "(implicit measured too, not eligible: no kernels for int32)" in reason
    algo, _ = dispatch.lookup("cpu", b, ("direct",))
    assert algo == "direct"


def test_cases_at_the_same_distance_are_pooled(tables_folder):
    a = spec((1, 16, 32, 32), (16, 16, 3, 3), padding=1)
    point = list(dispatch.features(a))
    table = {"schema": dispatch.SCHEMA, "backend": "cpu", "features": list(dispatch.FEATURES),
             "source": {"results": "pooled.json", "device": "nowhere", "precisions": ["fp32"]},
             "cases": [{"case": "t/p1", "precision": "fp32", "features": point,
                        "median_ms": {"implicit": 1.0, "im2col": 0.9}},
                       {"case": "t/psame", "precision": "fp32", "features": point,
                        "median_ms": {"implicit": 1.0, "im2col": 4.0}}]}
    (tables_folder / "cpu.json").write_text(json.dumps(table))
    algo, reason = dispatch.lookup("cpu", a, ("implicit", "im2col"))
    # im2col: geomean(0.9, 4.0) = 1.9 ms > implicit 1.0 ms.
    assert algo == "implicit" and "nearest measured cases t/p1, t/psame" in reason, reason
    assert "implicit 1 ms < im2col 1.9 ms" in reason


def test_near_ties_go_to_the_exact_sum_algorithms(tables_folder):
    # Winograd or FFT first by less than TRANSFORM_MARGIN: the fastest other algorithm is taken,
    # and the reason says why; by more, the transform algorithm is.
    a = spec((1, 16, 32, 32), (16, 16, 3, 3), padding=1)
    point = list(dispatch.features(a))
    eligible = ("implicit", "im2col", "winograd", "fft")
    edge = 1 + dispatch.TRANSFORM_MARGIN
    for transform in ("winograd", "fft"):
        for implicit_ms, expected in ((edge * 0.999, "implicit"), (edge * 1.001, transform)):
            table = {"schema": dispatch.SCHEMA, "backend": "cpu",
                     "features": list(dispatch.FEATURES),
                     "source": {"results": f"tie-{transform}-{implicit_ms}.json",
                                "device": "nowhere", "precisions": ["fp32"]},
                     "cases": [{"case": "t/tie", "precision": "fp32", "features": point,
                                "median_ms": {"implicit": implicit_ms, "im2col": 3.0,
                                              transform: 1.0}}]}
            (tables_folder / "cpu.json").write_text(json.dumps(table))
            dispatch.clear_cache()
            algo, reason = dispatch.lookup("cpu", a, eligible)
            assert algo == expected, (transform, implicit_ms, reason)
            assert (f"{transform} 1 ms < implicit" in reason) and \
                (("near-ties go to the exact-sum algorithms" in reason) == (expected == "implicit"))


def test_lookups_are_cached_per_spec():
    s = spec((1, 64, 28, 28), (64, 64, 3, 3), padding=1)
    eligible = registry.eligible("cpu", s)
    first = dispatch.lookup("cpu", s, eligible)
    hits = dispatch._lookup.cache_info().hits
    assert dispatch.lookup("cpu", s, eligible) is first
    assert dispatch._lookup.cache_info().hits == hits + 1


# ---------------------------------------------------------------------------------- eligibility

@pytest.mark.parametrize("dtype", ["int8", "int32", "int64", "uint8", "complex64", "complex128"])
def test_integers_and_complex_never_get_implicit(dtype):
    # Over every case of the full CPU suites, at that dtype: the table (complex) or the integer
    # rule never chooses an algorithm without kernels for the dtype.
    for case in suites.build([], "cpu", False):
        s = dataclasses.replace(dispatch_tables._spec(case), dtype=np.dtype(dtype))
        row, reason = registry.auto_algorithm("cpu", s)
        assert row.name != "implicit" and row.refusal(s) is None, (case.label, reason)
        assert "implicit" not in registry.eligible("cpu", s)
        if dtype.startswith("complex"):
            assert f"{dtype} was not measured, the choice comes from the fp32 " in reason


def test_int32_lookup_in_the_table_never_gets_implicit():
    for case in suites.build([], "cpu", False):
        s = dataclasses.replace(dispatch_tables._spec(case), dtype=np.dtype("int32"))
        algo, reason = dispatch.lookup("cpu", s, registry.eligible("cpu", s))
        assert algo in ("im2col", "direct") and "int32 was not measured" in reason, reason


# ------------------------------------------------------------------------ generation, synthetic

def _cpu_rows():
    dw = _case("cpu", "grouped/mbv2_dw3x3_32_112")
    pw = _case("cpu", "resnet50/s1_1x1_64_64")
    dense = _case("cpu", "resnet50/s1_3x3_64")
    rows = []
    for case, times in ((dw, (0.6, 4.0, 0.4)), (pw, (0.5, 0.3, 1.0)), (dense, (3.0, 5.0, 9.0))):
        for impl, ms in zip(("cpu:implicit", "cpu:im2col", "cpu:direct"), times):
            rows.append(_row(case, impl, ms))
        rows.append(_row(case, "torch", 0.1))                      # never in a table
    rows.append(_row(dw, "reference:direct", 0.01))                # never in a table
    rows.append(_row(dense, "cpu:direct", None, status="WRONG"))   # a second, WRONG, row
    rows.append(_row(dense, "cpu:auto", 0.01))         # the runner's auto rows: not algorithms
    rows.append(_row(dense, "cpu:autotune", 0.01))
    gone = suites.Case("gone", "old_case", "conv2d", (1, 2, 5, 5), (2, 2, 3, 3))
    rows.append(_row(gone, "cpu:im2col", 1.0))
    rows.append(_row(_case("cpu", "resnet50/conv1"), "cpu:im2col", 1.0,
                     args="x1x3x230x230 w64x3x7x7 stride=2 padding=3"))
    return rows


def test_generation_from_a_synthetic_cpu_run(tmp_path, capsys):
    path = _results(tmp_path, "cpu-run.json", "cpu", _cpu_rows())
    out = tmp_path / "out"
    assert bench_main.main(["--write-dispatch-tables", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "skipped gone/old_case: no longer in bench/suites.py" in printed
    assert "skipped resnet50/conv1: its arguments changed since the run" in printed
    assert "leave-one-out, fp32: predicted within 10% of the fastest in " in printed
    assert sorted(p.name for p in out.iterdir()) == ["cpu.json"]
    table = json.loads((out / "cpu.json").read_text())
    assert table["source"] == {"results": path.resolve().as_posix(), "commit": "0" * 40,
                               "dirty": False, "date": "2030-01-02T03:04:05",
                               "device": "Synthetic CPU", "kernels_digest": "ab" * 32,
                               "precisions": ["fp32"]}
    assert [(e["case"], e["median_ms"]) for e in table["cases"]] == [
        ("grouped/mbv2_dw3x3_32_112", {"implicit": 0.6, "im2col": 4.0, "direct": 0.4}),
        ("resnet50/s1_1x1_64_64", {"implicit": 0.5, "im2col": 0.3, "direct": 1.0}),
        ("resnet50/s1_3x3_64", {"implicit": 3.0, "im2col": 5.0, "direct": 9.0})]
    case = _case("cpu", "resnet50/s1_3x3_64")
    assert table["cases"][2]["features"] == [round(v, 6) for v in
                                             dispatch.features(dispatch_tables._spec(case))]


def test_leave_one_out_figures():
    # Three cases: the two 3x3 ones predict each other right, the pointwise one is predicted from
    # the nearer 3x3 (implicit, 0.5 ms where im2col took 0.3).
    base = [6.0, 6.0, 3.17, 11.6, 0, 0, 0, 1, 0]
    table = {"source": {"precisions": ["fp32"]}, "cases": [
        {"case": "a", "precision": "fp32", "features": base,
         "median_ms": {"implicit": 3.0, "im2col": 5.0}},
        {"case": "b", "precision": "fp32", "features": base[:3] + [12.6] + base[4:],
         "median_ms": {"implicit": 6.0, "im2col": 9.0}},
        {"case": "c", "precision": "fp32", "features": [6.0, 6.0, 0.0] + base[3:],
         "median_ms": {"implicit": 0.5, "im2col": 0.3}}]}
    (check,) = dispatch_tables.leave_one_out(table)
    assert (check["cases"], check["within_10pct"]) == (3, 2)
    assert math.isclose(check["geomean_best_over_predicted"], (0.3 / 0.5) ** (1 / 3))
    assert check["misses"] == ["c: implicit 0.5 ms (from a, distance 3.17) vs im2col 0.3 ms"]


def test_two_runs_for_one_backend_are_refused(tmp_path, capsys):
    one = _results(tmp_path, "one.json", "cpu", _cpu_rows())
    two = _results(tmp_path, "two.json", "cpu", _cpu_rows())
    assert dispatch_tables.main([one, two], out=tmp_path / "out") == 2
    assert "a table comes from one run" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _gpu_rows():
    dw = _case("gpu", "grouped/mbv2_dw3x3_32_112")
    dense = _case("gpu", "resnet50/s1_3x3_64")
    rows = []
    # (case, precision, {impl: ms}): at fp16 the dense case's fastest differs from fp32's.
    for case, precision, times in (
            (dw, "fp32", {"cupy:direct": 0.1, "cupy:im2col": 0.5, "numba:direct": 0.3,
                          "numba:im2col": 0.9}),
            (dense, "fp32", {"cupy:direct": 2.0, "cupy:im2col": 1.0, "numba:direct": 3.0,
                             "numba:im2col": 2.5}),
            (dense, "tf32", {"cupy:direct": 2.0, "cupy:im2col": 1.0}),
            (dense, "fp16", {"cupy:direct": 0.7, "cupy:im2col": 0.8})):
        rows += [_row(case, impl, ms, precision) for impl, ms in times.items()]
        rows.append(_row(case, "torch", 0.05, precision))
    return rows


def test_a_gpu_backend_switches_to_its_table_once_one_exists(tmp_path, tables_folder, capsys):
    dense = spec((32, 64, 56, 56), (64, 64, 3, 3), padding=1)
    half = spec((32, 64, 56, 56), (64, 64, 3, 3), "float16", padding=1)
    depthwise = spec((32, 32, 112, 112), (32, 1, 3, 3), groups=32, padding=1)
    ints = spec((32, 64, 56, 56), (64, 64, 3, 3), "int32", padding=1)
    # No table yet: the GPU rules, which say they were not measured.
    row, reason = registry.auto_algorithm("cupy", depthwise)
    assert row.name == "direct" and reason.startswith("depthwise")
    assert "dispatch table" not in registry.auto_algorithm("numba", dense)[1]

    path = _results(tmp_path, "gpu-run.json", "gpu", _gpu_rows())
    assert dispatch_tables.main([path], out=tables_folder) == 0
    assert "tf32 rows skipped" in capsys.readouterr().out
    assert sorted(p.name for p in tables_folder.iterdir()) == ["cupy.json", "numba.json"]
    dispatch.clear_cache()
    cupy_table = json.loads((tables_folder / "cupy.json").read_text())
    assert cupy_table["source"]["precisions"] == ["fp32", "fp16"]
    where = f"dispatch table ({path.resolve().as_posix()}, Synthetic GPU, "

    row, reason = registry.auto_algorithm("cupy", dense)
    assert row.name == "im2col" and reason.startswith(where + "fp32): nearest measured case "
                                                      "resnet50/s1_3x3_64 (distance 0.00)")
    row, reason = registry.auto_algorithm("cupy", half)     # the fp16 measurements
    assert row.name == "direct" and reason.startswith(where + "fp16)"), reason
    row, reason = registry.auto_algorithm("cupy", depthwise)
    assert row.name == "direct" and reason.startswith(where + "fp32)"), reason
    row, reason = registry.auto_algorithm("numba", dense)
    assert row.name == "im2col" and reason.startswith(where + "fp32)"), reason
    # Integer inputs keep their (unmeasured) rule: the table measured floating point.
    row, reason = registry.auto_algorithm("cupy", ints)
    assert row.name == "direct" and "dispatch table" not in reason


def test_without_the_cpu_table_the_fallback_rows_say_so(tables_folder):
    row, reason = registry.auto_algorithm("cpu", spec((1, 8, 9, 9), (8, 8, 3, 3)))
    assert row.name == "implicit" and "no dispatch table found" in reason
    row, reason = registry.auto_algorithm("cpu", spec((1, 8, 9, 9), (8, 8, 3, 3), "complex64"))
    assert row.name == "im2col" and "no dispatch table found" in reason


def test_the_environment_variable_points_at_another_folder(tmp_path):
    code = ("import numpy as np, conv; x = np.zeros((1, 8, 9, 9), np.float32); "
            "print(conv.explain('conv2d', x, np.zeros((8, 8, 3, 3), np.float32)).reason)")
    env = dict(os.environ, CONV_DISPATCH_TABLES=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=ROOT, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    assert "no dispatch table found" in out.stdout


def test_a_table_of_other_features_is_refused_with_the_command_to_regenerate(tables_folder):
    table = json.loads(CPU_TABLE.read_text())
    table["features"] = table["features"][:-1]
    (tables_folder / "cpu.json").write_text(json.dumps(table))
    with pytest.raises(ValueError, match="regenerate it .conv-bench --write-dispatch-tables "
                                         "bench/results/cpu/"):
        registry.auto_algorithm("cpu", spec((1, 8, 9, 9), (8, 8, 3, 3)))


def test_out_without_write_dispatch_tables_is_an_error(capsys):
    with pytest.raises(SystemExit):
        bench_main.main(["--out", "/tmp/x"])
    assert "--out goes with --write-dispatch-tables" in capsys.readouterr().err


def test_an_algorithm_left_out_for_the_shape_is_said_so():
    # Stride 2: winograd, timed at the nearest case, computes stride-1 only.
    s = spec((1, 128, 24, 24), (128, 128, 3, 3), padding=1, stride=2)
    _, reason = registry.auto_algorithm("cpu", s)
    assert "(winograd measured too, not eligible: does not compute this shape)" in reason, reason
