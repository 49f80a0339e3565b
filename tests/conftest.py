import importlib.util
import os
import warnings

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
    # Fresh data per test, reproducible per test id across processes: the Generator that
    # tests/_helpers.make_operands draws from, seeded with zlib.crc32 of the node id (hash() of a
    # str is salted per process).
    from tests._helpers import operand_rng
    return operand_rng(request.node.nodeid)


@pytest.fixture(autouse=True)
def _quiet_same_padding_warning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using padding='same' with even kernel")
        yield


def pytest_terminal_summary(terminalreporter):
    """Reports that tests record as properties named *_table (the NVRTC/ptxas resource table),
    printed once at the end: a test's own prints do not reach the terminal from an xdist worker."""
    for report in terminalreporter.stats.get("passed", []):
        for name, value in getattr(report, "user_properties", ()):
            if name.endswith("_table") and report.when == "call":
                terminalreporter.write_line("")
                terminalreporter.write_line(str(value))
