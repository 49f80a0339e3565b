"""CI entry of the differential fuzz against PyTorch (tests/fuzz_torch.py says what is checked).

A few hundred valid and invalid calls, derandomized and without an example database, so every CI
run checks the same calls; CONV_FUZZ_EXAMPLES=N runs N per test instead (e.g. 20000). For a long
run that counts every outcome: python3 -m tests.fuzz_torch --valid 10000 --invalid 3000.
"""
from __future__ import annotations

import ctypes
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from tests._helpers import operand_rng
from tests.conftest import torch_or_skip
from tests.fuzz_torch import (
    OK,
    Arr,
    Call,
    Outcome,
    check,
    invalid_calls,
    materialise,
    run_isolated,
    valid_calls,
)

pytestmark = pytest.mark.torch

EXAMPLES = int(os.environ.get("CONV_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=EXAMPLES or 300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.data_too_large])


@FUZZ
@given(call=valid_calls())
def test_valid_calls_compute_what_pytorch_computes(call: Call) -> None:
    torch_or_skip()
    outcome = check(call)
    assert outcome.kind == OK, f"{outcome}\n{call!r}"


@FUZZ
@given(call=invalid_calls())
def test_invalid_calls_are_refused_in_pytorchs_words(call: Call) -> None:
    torch_or_skip()
    outcome = check(call)
    assert outcome.kind == OK, f"{outcome}\n{call!r}"


# The harness itself: the check must be able to fail, and the CLI must count a crash.

X, W = Arr((1, 2, 9), "float32"), Arr((3, 2, 3), "float32")


def test_check_reports_wrong_values(monkeypatch) -> None:
    torch_or_skip()
    import conv
    real = conv.conv1d
    monkeypatch.setattr(conv, "conv1d", lambda *a, **k: real(*a, **k) * np.float32(1.001))
    assert check(Call("conv1d", X, W)).kind == "wrong_values"


def test_check_reports_unwritten_elements(monkeypatch) -> None:
    # A kernel that leaves its (poisoned) output alone is caught: the NaN counts as wrong.
    torch_or_skip()
    import conv.backend.cpu.direct
    monkeypatch.setattr(conv.backend.cpu.direct, "direct_conv", lambda *args: None)
    assert check(Call("conv1d", X, W, algorithm="direct")).kind == "wrong_values"


def test_check_reports_a_modified_input(monkeypatch) -> None:
    torch_or_skip()
    import conv
    real = conv.conv1d

    def scribbling(x, w, *args, **kwargs):
        out = real(x, w, *args, **kwargs)
        x.base[0] += 1                 # the buffer behind a sliced view
        return out

    monkeypatch.setattr(conv, "conv1d", scribbling)
    assert check(Call("conv1d", Arr((1, 2, 9), "float32", "slice"), W)).kind == "input_modified"


def test_check_reports_a_refusal_torch_does_not_make(monkeypatch) -> None:
    torch_or_skip()
    import conv

    def refusing(*args, **kwargs):
        raise ValueError("no")

    monkeypatch.setattr(conv, "conv1d", refusing)
    assert check(Call("conv1d", X, W)).kind == "accepted_by_torch_only"
    assert check(Call("conv1d", X, W, stride=0)).kind == "message_differs"


@pytest.mark.parametrize("layout", ["negative", "slice", "transposed", "fortran", "broadcast",
                                    "readonly", "bigendian", "unaligned"])
def test_layouts_hold_the_values_they_claim(layout: str) -> None:
    contiguous, _ = materialise(Arr((2, 3, 4), "float64"), operand_rng(5))
    arr, _ = materialise(Arr((2, 3, 4), "float64", layout), operand_rng(5))
    assert arr.shape == (2, 3, 4)
    if layout != "broadcast":          # broadcast draws a smaller array
        np.testing.assert_array_equal(arr, contiguous)
    expected_flag = {"negative": lambda a: min(a.strides) < 0,
                     "slice": lambda a: not a.flags.c_contiguous and not a.flags.f_contiguous,
                     "transposed": lambda a: not a.flags.c_contiguous,
                     "fortran": lambda a: a.flags.f_contiguous and not a.flags.c_contiguous,
                     "broadcast": lambda a: 0 in a.strides,
                     "readonly": lambda a: not a.flags.writeable,
                     "bigendian": lambda a: a.dtype.byteorder == ">",
                     "unaligned": lambda a: not a.flags.aligned}[layout]
    assert expected_flag(arr)


class Segfault:
    """Kills any process but the one that made it as soon as it is asked for a missing attribute
    (conv and PyTorch probe their arguments' attributes); in its maker it is inert, so it can be
    pickled to a child."""

    def __init__(self) -> None:
        self.maker = os.getpid()

    def __getattr__(self, name):
        maker = self.__dict__.get("maker")
        if maker is None or maker == os.getpid():
            raise AttributeError(name)
        ctypes.string_at(0)             # a read of address 0: SIGSEGV


def test_cli_counts_a_crash_and_goes_on() -> None:
    torch_or_skip()
    calls = [Call("conv1d", X, W), Call("conv1d", Segfault(), W), Call("conv1d", X, W, seed=1)]
    outcomes = run_isolated(calls, batch=3, timeout_s=120)
    assert [o.kind for o in outcomes] == [OK, "crashed", OK], outcomes
    assert isinstance(outcomes[1], Outcome) and "died" in outcomes[1].detail
