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
TIMEOUT_S = 900          # the suite takes about 3 minutes on 2 busy cores, half in 2 shards


@pytest.mark.cudasim
def test_numba_kernels_pass_in_the_cuda_simulator():
    if importlib.util.find_spec("numba") is None or importlib.util.find_spec("numba_cuda") is None:
        pytest.skip("numba-cuda is not installed: the numba.cuda kernels cannot be simulated")
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        pytest.skip("this process already runs the simulator: tests/cudasim is collected directly")
    # Shards side by side, one per core (the simulator runs one Python thread at a time): the
    # suite's ~110 tests then take about half the time (tests/cudasim/conftest.py shards them).
    shards = max(1, min(2, os.cpu_count() or 1))
    procs = []
    for i in range(shards):
        env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", CONV_CUDASIM_SHARD=f"{i}/{shards}")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "pytest", "tests/cudasim", "-q", "-p", "no:cacheprovider"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    total = 0
    for i, proc in enumerate(procs):
        try:
            stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        lines = [line for line in stdout.splitlines() if line.strip()]
        summary = lines[-1] if lines else "(no output)"
        print(f"tests/cudasim shard {i + 1}/{shards} in the simulator: {summary}")
        assert proc.returncode == 0, (f"simulator suite shard {i + 1}/{shards} failed "
                                      f"({summary}):\n{stdout[-6000:]}\n{stderr[-2000:]}")
        passed = re.search(r"(\d+) passed", summary)
        assert passed and int(passed.group(1)) > 0, f"simulator shard ran no tests: {summary}"
        total += int(passed.group(1))
    print(f"tests/cudasim: {total} passed in {shards} shard(s)")
