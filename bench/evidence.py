"""Evidence files: what ran, where, on which code, with which results.

A GPU run writes ``bench/results/gpu/<date>-<device>.json`` (and the plot next to it, same stem,
``.png``); a CPU run asked for it (``--evidence``) writes ``bench/results/local/`` (gitignored) with
the same shape:

    device, device_kind, date, host, versions{python, numpy, numba, torch, cupy, numba-cuda,
    cuda_driver, cuda_runtime, cudnn, blas...}, commit, dirty, kernels_digest,
    tests{passed, failed, skipped, errors, summary, returncode} or null, threads, peaks, settings,
    notes, rows[...], geomeans[...], wall_s
"""
from __future__ import annotations

import datetime
import importlib.metadata
import os
import pathlib
import platform
import re
import subprocess
import sys

import numpy as np

# In a checkout (and an editable install) this file is bench/evidence.py beside pyproject.toml and
# results go to the repository's bench/results/; an installed wheel has no results folder (they
# are not shipped), so evidence goes to ./bench-results/ under the current directory.
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
_IN_CHECKOUT = (REPO_ROOT / "pyproject.toml").is_file()
RESULTS_DIR = (pathlib.Path(__file__).resolve().parent / "results" if _IN_CHECKOUT
               else pathlib.Path.cwd() / "bench-results")


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


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


def versions() -> dict:
    """Versions of everything that shapes the numbers; GPU entries only when importable."""
    import numba
    out = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
           "numba-cuda": _dist_version("numba-cuda"), "platform": platform.platform(),
           "cpu": cpu_name(), "torch": None, "cudnn": None, "cupy": None, "cuda_driver": None,
           "cuda_runtime": None}
    try:
        import torch
        out["torch"] = torch.__version__
        out["torch_cuda"] = torch.version.cuda
        if torch.backends.cudnn.is_available():
            out["cudnn"] = torch.backends.cudnn.version()
    except Exception:
        pass
    cupy = sys.modules.get("cupy")
    if cupy is None:
        try:
            import cupy
        except Exception:
            cupy = None
    if cupy is not None:
        out["cupy"] = cupy.__version__
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


def git_commit() -> tuple[str | None, bool | None]:
    """(HEAD commit, whether tracked files differ from it), (None, None) outside a git checkout.

    Untracked files (the results being written, say) do not make a run dirty.
    """
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=30, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=30, check=True).stdout
        return head, bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def kernels_digest() -> str | None:
    try:
        import conv
        return conv.kernels_digest()
    except Exception:
        return None


_SUMMARY_COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)")


def parse_pytest_summary(text: str) -> dict:
    """Counts from pytest's final summary line ("3 failed, 120 passed, 4 skipped in 9.1s")."""
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    summary = ""
    for line in reversed(lines):
        if _SUMMARY_COUNT.search(line) and (" in " in line or line.startswith("=")):
            summary = line.strip("= ").strip()
            break
    for number, word in _SUMMARY_COUNT.findall(summary):
        key = "errors" if word.startswith("error") else word
        counts[key] = counts.get(key, 0) + int(number)
    counts["summary"] = summary
    return counts


def run_tests(timeout_s: int = 3600) -> dict:
    """Run the test suite on this machine in a subprocess and return its counts."""
    cmd = [sys.executable, "-m", "pytest", "tests", "-q", "-p", "no:cacheprovider"]
    try:
        proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=timeout_s, env=dict(os.environ))
    except subprocess.TimeoutExpired as exc:
        out = parse_pytest_summary((exc.stdout or b"").decode(errors="replace")
                                   if isinstance(exc.stdout, bytes) else (exc.stdout or ""))
        out.update(returncode=None, command=" ".join(cmd[1:]), timed_out=True)
        return out
    out = parse_pytest_summary(proc.stdout)
    out.update(returncode=proc.returncode, command=" ".join(cmd[1:]))
    return out


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "device"


def evidence_path(device_name: str, device_kind: str, date: str | None = None) -> pathlib.Path:
    """bench/results/gpu/<date>-<device>.json, or bench/results/local/<date>-<device>.json."""
    date = date or datetime.date.today().isoformat()
    folder = RESULTS_DIR / ("gpu" if device_kind == "gpu" else "local")
    return folder / f"{date}-{slug(device_name)}.json"


def describe_run(device_name: str, device_kind: str) -> dict:
    """The identifying part of a results object (everything but rows, geomeans, tests)."""
    commit, dirty = git_commit()
    return {"device": device_name, "device_kind": device_kind,
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "host": platform.node(), "versions": versions(), "commit": commit, "dirty": dirty,
            "kernels_digest": kernels_digest()}
