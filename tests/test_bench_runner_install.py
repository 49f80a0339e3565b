"""conv-bench outside a checkout (a non-editable install: conv/bench inside site-packages):
--run-tests refuses before timing anything, evidence goes under the current directory (or
--evidence-dir), never into the package; the commit comes from a checkout only; test counts come
from pytest's --junitxml report."""
from __future__ import annotations

import pathlib
import textwrap

import pytest
from conv.bench import __main__ as cli
from conv.bench import evidence


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """The runner as a wheel installs it: .../site-packages/conv/bench, no tests beside it."""
    bench = tmp_path / "site-packages" / "conv" / "bench"
    bench.mkdir(parents=True)
    (bench.parent / "__init__.py").write_text("")
    monkeypatch.setattr(evidence, "BENCH_DIR", bench)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return bench


def test_the_checkout_is_recognised():
    root = evidence.checkout_root()
    assert root is not None and (root / "tests").is_dir()
    assert evidence.tests_unavailable_reason() is None


def test_run_tests_refuses_clearly_outside_a_checkout(installed, capsys):
    assert evidence.checkout_root() is None
    why = evidence.tests_unavailable_reason()
    assert "the tests are not in the wheel" in why and str(installed) in why
    with pytest.raises(evidence.TestsUnavailable):
        evidence.run_tests()
    # The command line refuses at once (exit 2), before any peak or case is measured.
    assert cli.main(["--run-tests", "--no-torch"]) == 2
    captured = capsys.readouterr()
    assert "--run-tests needs the repository's tests/" in captured.err and captured.out == ""


def test_evidence_goes_to_the_current_directory_or_evidence_dir(installed, tmp_path):
    path = evidence.evidence_path("AMD EPYC", "cpu", date="2026-01-02")
    assert path == pathlib.Path.cwd() / "bench-results" / "local" / "2026-01-02-amd-epyc.json"
    assert installed not in path.parents and installed.parent not in path.parents
    gpu = evidence.evidence_path("NVIDIA H200", "gpu", date="2026-01-02")
    assert gpu.parent == pathlib.Path.cwd() / "bench-results" / "gpu"
    out = evidence.evidence_path("NVIDIA H200", "gpu", date="2026-01-02", out_dir=tmp_path / "o")
    assert out == tmp_path / "o" / "2026-01-02-nvidia-h200.json"


def test_no_commit_from_an_enclosing_repository(installed):
    # site-packages inside some git work tree (a venv in a project) is not this code's checkout.
    assert evidence.git_commit(None) == (None, None)
    assert evidence.code_commit({"url": None, "vcs_commit": None}) == (None, None, None)
    assert evidence.code_commit({"vcs_commit": "abc123"})[::2] == (
        "abc123", "installed from version control (direct_url.json)")


def test_the_commit_comes_from_the_checkout():
    commit, dirty, source = evidence.code_commit(evidence.install_info())
    if commit is None:
        pytest.skip("no git here")
    assert source == "checkout" and len(commit) == 40 and dirty in (True, False)


def test_counts_come_from_the_junit_report(tmp_path):
    report = tmp_path / "junit.xml"
    report.write_text(textwrap.dedent("""\
        <?xml version="1.0" encoding="utf-8"?>
        <testsuites><testsuite name="pytest" errors="1" failures="2" skipped="3" tests="10"
        time="1.0"></testsuite></testsuites>"""))
    assert evidence.parse_junit(report) == {"tests": 10, "passed": 4, "failed": 2, "errors": 1,
                                            "skipped": 3}


def test_run_tests_reads_junit_and_fails_when_nothing_passed(tmp_path):
    # A stand-in checkout whose suite has one passing and one failing test (a second of pytest).
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text(
        "def test_ok():\n    pass\n\ndef test_bad():\n    assert False\n")
    got = evidence.run_tests(timeout_s=120, root=tmp_path)
    assert (got["tests"], got["passed"], got["failed"]) == (2, 1, 1)
    assert got["returncode"] == 1 and got["ok"] is False
    assert "1 failed, 1 passed" in got["summary"]


def test_evidence_dir_option():
    args = cli.build_parser().parse_args(["--evidence-dir", "some/where"])
    assert args.evidence_dir == "some/where" and args.evidence is None


def test_run_tests_after_a_real_non_editable_install(tmp_path):
    # `pip install .` as a wheel lays it out: build the wheel, unpack it (a pure-Python wheel
    # unpacked is installed), run its conv-bench from elsewhere.
    import shutil
    import subprocess
    import sys
    import zipfile
    root = pathlib.Path(__file__).resolve().parent.parent
    tree = tmp_path / "src"
    shutil.copytree(root, tree, ignore=shutil.ignore_patterns(
        "build", "dist", "*.egg-info", "__pycache__", ".git", ".hypothesis", "results", "tests",
        ".benchmarks", ".pytest_cache", ".ruff_cache"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-q", "-w", str(tmp_path / "w"), str(tree)],
                          capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode:
        pytest.skip(f"cannot build a wheel here: {proc.stderr[-300:]}")
    (wheel,) = (tmp_path / "w").glob("conv-*.whl")
    site = tmp_path / "site-packages"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "elsewhere"
    work.mkdir()
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import conv.bench.__main__ as m; "
            "assert m.__file__.startswith(sys.argv[1]), m.__file__; "
            "sys.exit(m.main(['--run-tests', '--no-torch']))")
    proc = subprocess.run([sys.executable, "-c", code, str(site)], cwd=work, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "the tests are not in the wheel" in proc.stderr and proc.stdout == ""
    assert list(work.iterdir()) == [] and not (site / "conv" / "bench" / "results").exists()
