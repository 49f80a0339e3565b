"""The numba.cuda kernels in Numba's CUDA simulator: only in a process started with
NUMBA_ENABLE_CUDASIM=1 (tests/test_numba_cudasim_suite.py starts one), so that the simulator never
replaces real CUDA in the main test process. Elsewhere every test here skips, saying so."""
from __future__ import annotations

import os

import pytest

from conv import _gpu_arrays

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


@pytest.fixture(autouse=True)
def _simulator_only():
    if not SIMULATOR:
        pytest.skip("simulator tests run in their own process with NUMBA_ENABLE_CUDASIM=1 "
                    "(see tests/test_numba_cudasim_suite.py)")
    pytest.importorskip("numba.cuda", reason="numba-cuda is not installed")


@pytest.fixture(autouse=True)
def _poisoned_outputs(_simulator_only):
    """Every GPU output starts as NaN (integers: a sentinel): an element no thread wrote fails."""
    before = _gpu_arrays.poison_enabled()
    _gpu_arrays.set_poison_outputs(True)
    yield
    _gpu_arrays.set_poison_outputs(before)
