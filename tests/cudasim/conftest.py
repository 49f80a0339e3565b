"""The numba.cuda kernels in Numba's CUDA simulator: only in a process started with
NUMBA_ENABLE_CUDASIM=1 (tests/test_numba_cudasim_suite.py starts one), so that the simulator never
replaces real CUDA in the main test process. Elsewhere every test here skips, saying so."""
from __future__ import annotations

import os
import zlib

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


def pytest_collection_modifyitems(config, items):
    """CONV_CUDASIM_SHARD="i/n": run every n-th test from the i-th (tests/test_numba_cudasim_suite.py
    runs the shards side by side, one process per core: the simulator runs one thread at a time).
    A test's shard is a hash of its id: by position, one algorithm's parametrisations would all
    land in one shard (measured: 49 s against 96 s)."""
    shard = os.environ.get("CONV_CUDASIM_SHARD")
    if not shard:
        return
    i, n = (int(v) for v in shard.split("/"))
    mine = [zlib.crc32(item.nodeid.encode()) % n == i for item in items]
    config.hook.pytest_deselected(items=[item for item, m in zip(items, mine) if not m])
    kept = [item for item, m in zip(items, mine) if m]
    items[:] = kept
