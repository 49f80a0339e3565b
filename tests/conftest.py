import importlib.util
import os
import warnings
import zlib

import numpy as np
import pytest


# The simulator tests run in their own pytest process (tests/test_numba_cudasim_suite.py sets
# NUMBA_ENABLE_CUDASIM=1 there); this process does not collect them.
collect_ignore = [] if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else ["cudasim"]


def torch_or_skip():
    if importlib.util.find_spec("torch") is None:
        pytest.skip("PyTorch is not installed: the differential tests against it do not run")
    import torch
    return torch


@pytest.fixture
def rng(request):
    # Fresh data per test, reproducible per test id across processes (crc32: hash() of a str is
    # salted per process).
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)


@pytest.fixture(autouse=True)
def _quiet_same_padding_warning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using padding='same' with even kernel")
        yield
