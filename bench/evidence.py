"""Evidence files: what ran, where, on which code, with which results.

A GPU run writes ``<results>/gpu/<date>-<device>.json`` (and the plot next to it, same stem,
``.png``); a CPU run asked for it (``--evidence``) writes ``<results>/local/`` with the same
shape. ``<results>`` is the checkout's ``bench/results/`` (``local/`` is gitignored) when this
runner runs from a checkout, else ``./bench-results/`` under the current directory (never the
installed package's folder); ``--evidence-dir DIR`` puts the file in DIR instead.

    device, device_kind, date, host, versions{python, conv, numpy, numba, llvmlite, torch, cupy,
    numba-cuda, cuda_driver, cuda_runtime, cudnn, blas...}, install{...}, commit, commit_source,
    dirty, kernels_digest, tests{passed, failed, skipped, errors, tests, summary, returncode} or
    null, threads, peaks, settings, notes, interference, rows[...], geomeans[...], wall_s
"""
from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

import numpy as np

# In a checkout (and an editable install) this file is bench/evidence.py beside pyproject.toml and
# tests/; an installed wheel has neither (conv/bench/ inside site-packages).
BENCH_DIR = pathlib.Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent      # the repository in a checkout (dispatch_tables names files by it)


def checkout_root(bench_dir: pathlib.Path | None = None) -> pathlib.Path | None:
    """The repository this runner runs from (bench/.. with pyproject.toml, conv/ and tests/), or
    None for an installed copy (site-packages/conv/bench: no tests, no results folder)."""
    root = (BENCH_DIR if bench_dir is None else pathlib.Path(bench_dir)).parent
    if ((root / "pyproject.toml").is_file() and (root / "tests").is_dir()
            and (root / "conv" / "__init__.py").is_file()):
        return root
    return None


def results_dir(bench_dir: pathlib.Path | None = None) -> pathlib.Path:
    """bench/results/ in a checkout, else ./bench-results/ (looked up when called, so a change of
    directory counts)."""
    root = checkout_root(bench_dir)
    return root / "bench" / "results" if root else pathlib.Path.cwd() / "bench-results"


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def install_info() -> dict:
    """How conv is installed (importlib.metadata: version, PEP 610 direct_url.json), where it
    imports from, and whether this runner runs from a checkout."""
    import conv
    info = {"conv_location": str(pathlib.Path(conv.__file__).resolve().parent),
            "bench_location": str(BENCH_DIR), "checkout": None, "distribution": None,
            "editable": None, "url": None, "vcs_commit": None}
    root = checkout_root()
    if root is not None:
        info["checkout"] = str(root)
    # Every "conv" distribution on the path (a checkout's conv.egg-info can come before the
    # installed dist-info): the first that says how pip installed it (PEP 610), else the first.
    dists = list(importlib.metadata.distributions(name="conv"))
    if not dists:
        return info
    dist = next((d for d in dists if d.read_text("direct_url.json")), dists[0])
    info["distribution"] = dist.version
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "null")
    except (ValueError, OSError):
        direct = None
    if direct:
        info["url"] = direct.get("url")
        info["editable"] = bool(direct.get("dir_info", {}).get("editable"))
        info["vcs_commit"] = direct.get("vcs_info", {}).get("commit_id")
    return info


def cpu_name() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def gpu_name() -> str:
    import cupy
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


_CUPY_DISTS = ("cupy-cuda13x", "cupy-cuda12x", "cupy-cuda11x", "cupy")


def versions() -> dict:
    """Versions of everything that shapes the numbers, from the installed distributions' metadata
    (importlib.metadata: nothing is imported to ask); CUDA, cuDNN and BLAS details from the
    modules the run already imported."""
    out = {"python": platform.python_version(), "conv": _dist_version("conv"),
           "numpy": _dist_version("numpy"), "numba": _dist_version("numba"),
           "llvmlite": _dist_version("llvmlite"), "numba-cuda": _dist_version("numba-cuda"),
           "tbb": _dist_version("tbb"), "threadpoolctl": _dist_version("threadpoolctl"),
           "platform": platform.platform(), "cpu": cpu_name(), "torch": _dist_version("torch"),
           "cudnn": None, "cupy": None, "cuda_driver": None, "cuda_runtime": None}
    if out["conv"] is None:                 # a checkout run without installing (python -m bench)
        import conv
        out["conv"] = f"{conv.__version__} (not installed)"
    for name in _CUPY_DISTS:
        if _dist_version(name):
            out["cupy"] = f"{_dist_version(name)} ({name})"
            break
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            out["torch_cuda"] = torch.version.cuda
            if torch.backends.cudnn.is_available():
                out["cudnn"] = torch.backends.cudnn.version()
        except Exception:
            pass
    cupy = sys.modules.get("cupy")
    if cupy is not None:
        try:
            out["cuda_driver"] = cupy.cuda.runtime.driverGetVersion()
            out["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
        except Exception:
            pass
    try:
        blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
        out["blas"] = f"{blas.get('name')} {blas.get('version')}".strip()
    except Exception:
        pass
    return out


def _git(root: pathlib.Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30,
                          check=True).stdout.strip()


def git_commit(root: pathlib.Path | None) -> tuple[str | None, bool | None]:
    """(HEAD commit, whether tracked files differ from it) of the checkout at `root`; (None, None)
    when root is None or not the top of a git work tree (an enclosing repository, say a project
    with the virtual environment inside it, is not this code's checkout).

    Untracked files (the results being written, say) do not make a run dirty.
    """
    if root is None:
        return None, None
    try:
        if pathlib.Path(_git(root, "rev-parse", "--show-toplevel")).resolve() != root.resolve():
            return None, None
        head = _git(root, "rev-parse", "HEAD")
        return head, bool(_git(root, "status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None, None


def code_commit(install: dict) -> tuple[str | None, bool | None, str | None]:
    """(commit, dirty, where it came from) of the code that runs: this runner's checkout; else a
    pip install's VCS commit (direct_url.json); else the local folder pip installed from, when it
    is a conv checkout (its HEAD now: it may have moved on since the install); else nothing."""
    root = checkout_root()
    if root is not None:
        commit, dirty = git_commit(root)
        return commit, dirty, "checkout" if commit else None
    if install.get("vcs_commit"):
        return install["vcs_commit"], None, "installed from version control (direct_url.json)"
    url = install.get("url") or ""
    if url.startswith("file://"):
        source = pathlib.Path(url[len("file://"):])
        if checkout_root(source / "bench") is not None:
            commit, dirty = git_commit(source)
            if commit:
                return commit, dirty, (f"the folder pip installed from ({source}), its HEAD at "
                                       "run time")
    return None, None, None


def kernels_digest() -> str | None:
    try:
        import conv
        return conv.kernels_digest()
    except Exception:
        return None


_SUMMARY_LINE = re.compile(r"\d+ (passed|failed|skipped|errors?|xfailed|xpassed|deselected)")


class TestsUnavailable(RuntimeError):
    """--run-tests where there are no tests to run (an installed copy of the runner)."""


def tests_unavailable_reason(bench_dir: pathlib.Path | None = None) -> str | None:
    """Why --run-tests cannot run here, None when it can: the tests ship with the repository, not
    with the wheel, so an installed conv.bench has none."""
    if checkout_root(bench_dir) is not None:
        return None
    where = BENCH_DIR if bench_dir is None else pathlib.Path(bench_dir)
    return (f"--run-tests needs the repository's tests/, and this conv-bench is an installed copy "
            f"({where}): the tests are not in the wheel. Run it from a checkout instead: "
            f"git clone the repository, `python -m pip install -e '.[test,bench]'` in it, then "
            f"`conv-bench --run-tests` (or `python -m bench --run-tests` from its root).")


def parse_junit(path) -> dict:
    """Counts from a pytest --junitxml file: {tests, passed, failed, errors, skipped}."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    counts = {"tests": 0, "failed": 0, "errors": 0, "skipped": 0}
    for suite in suites:
        counts["tests"] += int(suite.get("tests", 0))
        counts["failed"] += int(suite.get("failures", 0))
        counts["errors"] += int(suite.get("errors", 0))
        counts["skipped"] += int(suite.get("skipped", 0))
    counts["passed"] = counts["tests"] - counts["failed"] - counts["errors"] - counts["skipped"]
    return counts


def _summary_line(text: str) -> str:
    """pytest's final line ("3 failed, 120 passed, 4 skipped in 9.1s"), for people to read."""
    for line in reversed([ln for ln in (text or "").splitlines() if ln.strip()]):
        if _SUMMARY_LINE.search(line):
            return line.strip("= ").strip()
    return ""


def run_tests(timeout_s: int = 3600, root: pathlib.Path | None = None) -> dict:
    """Run the checkout's test suite in a subprocess; counts from its --junitxml report.

    Raises TestsUnavailable outside a checkout. "ok" is False unless pytest exited 0 with at
    least one test passed.
    """
    root = root or checkout_root()
    if root is None:
        raise TestsUnavailable(tests_unavailable_reason())
    with tempfile.TemporaryDirectory(prefix="conv-bench-tests-") as tmp:
        junit = pathlib.Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider",
               f"--junitxml={junit}"]
        out = {"tests": None, "passed": None, "failed": None, "errors": None, "skipped": None,
               "command": " ".join(["python", *cmd[1:-1], "--junitxml=..."]), "cwd": str(root)}
        try:
            proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False,
                                  timeout=timeout_s, env=dict(os.environ))
            stdout, stderr, out["returncode"] = proc.stdout, proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            stdout = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) \
                else (exc.stdout or "")
            stderr, out["returncode"], out["timed_out"] = "", None, True
        if junit.is_file():
            try:
                out.update(parse_junit(junit))
            except ET.ParseError as exc:
                out["error"] = f"unreadable junit report: {exc}"
        else:
            out["error"] = ("pytest wrote no junit report: " + (stderr or stdout)[-500:]).strip()
    out["summary"] = _summary_line(stdout) or out.get("error", "")
    out["ok"] = bool(out["returncode"] == 0 and out["passed"])
    return out


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def evidence_path(device_name: str, device_kind: str, date: str | None = None,
                  out_dir=None) -> pathlib.Path:
    """<results>/gpu/<date>-<device>.json or <results>/local/<date>-<device>.json (results_dir),
    or out_dir/<date>-<device>.json when given (--evidence-dir)."""
    date = date or datetime.date.today().isoformat()
    folder = (pathlib.Path(out_dir) if out_dir is not None
              else results_dir() / ("gpu" if device_kind == "gpu" else "local"))
    return folder / f"{date}-{slug(device_name)}.json"


def describe_run(device_name: str, device_kind: str) -> dict:
    """The identifying part of a results object (everything but rows, geomeans, tests)."""
    install = install_info()
    commit, dirty, source = code_commit(install)
    return {"device": device_name, "device_kind": device_kind,
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "host": platform.node(), "versions": versions(), "install": install,
            "commit": commit, "commit_source": source, "dirty": dirty,
            "kernels_digest": kernels_digest()}
