"""Fixtures of the emulated-kernel tests (test_emulated_cupy.py, test_emulated_implicit_gemm.py):
imported into a test module, `poison_outputs` applies to every test there."""
from __future__ import annotations

import zlib

import pytest

from conv import _gpu_arrays, emulator

SCHEDULES = tuple(emulator.SCHEDULES)


@pytest.fixture(autouse=True)
def poison_outputs():
    """Every output starts as NaN (integers: a sentinel): an element no thread wrote fails."""
    before = _gpu_arrays.poison_enabled()
    _gpu_arrays.set_poison_outputs(True)
    yield
    _gpu_arrays.set_poison_outputs(before)


@pytest.fixture
def schedule(request) -> tuple[str, int]:
    """(schedule, seed) of this test, from a stable hash of its id."""
    h = zlib.crc32(request.node.nodeid.encode())
    return SCHEDULES[h % 3], h
