"""Runs tests/cudasim (the numba.cuda kernels in Numba's CUDA simulator) in a child process.

The simulator must be switched on before numba is imported and would then replace real CUDA for
everything in that process, so the main test process never enables it: it starts
`python -m pytest tests/cudasim` with NUMBA_ENABLE_CUDASIM=1 and checks that it passed.
"""
from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
TIMEOUT_S = 900          # the suite takes about 2 minutes on a 2-core CI machine


@pytest.mark.cudasim
def test_numba_kernels_pass_in_the_cuda_simulator():
    if importlib.util.find_spec("numba") is None or importlib.util.find_spec("numba_cuda") is None:
        pytest.skip("numba-cuda is not installed: the numba.cuda kernels cannot be simulated")
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        pytest.skip("this process already runs the simulator: tests/cudasim is collected directly")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "tests/cudasim", "-q",
                           "-p", "no:cacheprovider"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    summary = lines[-1] if lines else "(no output)"
    print(f"tests/cudasim in the simulator: {summary}")
    assert proc.returncode == 0, (f"simulator suite failed ({summary}):\n{proc.stdout[-6000:]}\n"
                                  f"{proc.stderr[-2000:]}")
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) > 0, f"simulator suite ran no tests: {summary}"
