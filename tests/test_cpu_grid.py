"""Every backend on the host (reference, cpu:implicit, cpu:im2col, cpu:direct, cpu:fft) against the float64
reference, over the shared grid and every dtype."""
import re

import numpy as np
import pytest

import conv
import conv.backend.cpu
from tests._cases import CASE_IDS, CASES
from tests._helpers import (
    CPU_ALGORITHMS,
    FLOAT_AND_COMPLEX,
    HOST_ALGORITHMS,
    algorithm_refusal,
    assert_matches_reference,
    make_operands,
    refused_by_algorithm,
    refused_by_pytorch,
)

DTYPES = FLOAT_AND_COMPLEX + ["int32", "int64", "int8", "uint8", "int16"]


def _arrays(rng, case, dtype):
    op, xs, ws, has_bias, kwargs = case
    x, w, b = make_operands(rng, xs, ws, dtype, bias=has_bias)
    return op, x, w, b, kwargs


@pytest.mark.parametrize("backend,algorithm", HOST_ALGORITHMS, ids=[f"{b}:{a}" for b, a in HOST_ALGORITHMS])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_grid(case, dtype, backend, algorithm, rng):
    op, x, w, b, kwargs = _arrays(rng, case, dtype)
    if refused_by_pytorch(dtype, kwargs):
        with pytest.raises(TypeError, match="slow_conv_dilated"):
            getattr(conv, op)(x, w, b, backend=backend, algorithm=algorithm, **kwargs)
        return
    if refused_by_algorithm(algorithm, dtype):
        with pytest.raises(TypeError, match=re.escape(algorithm_refusal(algorithm, dtype))):
            getattr(conv, op)(x, w, b, backend=backend, algorithm=algorithm, **kwargs)
        return
    assert_matches_reference(op, x, w, b, backend=backend, algorithm=algorithm, **kwargs)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_auto_backend_is_cpu_and_correct(case, rng):
    op, x, w, b, kwargs = _arrays(rng, case, "float32")
    plan = conv.explain(op, x, w, b, **kwargs)
    assert plan.backend == "cpu" and plan.algorithm in CPU_ALGORITHMS and plan.reason
    assert_matches_reference(op, x, w, b, backend="auto", **kwargs)


def test_reference_matches_hand_computed():
    # A case small enough to check by hand: guards the oracle itself.
    x = np.arange(1.0, 6.0).reshape(1, 1, 5)             # [1 2 3 4 5]
    w = np.array([[[1.0, 10.0]]])
    y = conv.conv1d(x, w, np.array([0.5]), stride=2, padding=1, backend="reference")
    # padded [0 1 2 3 4 5 0], windows at 0, 2, 4: 0+10, 2+30, 4+50 (+ bias 0.5)
    np.testing.assert_array_equal(y, [[[10.5, 32.5, 54.5]]])
    yr = conv.conv1d(x, w, None, padding=2, padding_mode="reflect", backend="reference")
    # reflect-padded [3 2 1 2 3 4 5 4 3]
    np.testing.assert_array_equal(yr, [[[23, 12, 21, 32, 43, 54, 45, 34]]])
    yc = conv.conv1d(x, w, None, padding=1, padding_mode="circular", backend="reference")
    np.testing.assert_array_equal(yc, [[[15, 21, 32, 43, 54, 15]]])    # [5 1 2 3 4 5 1]
    yp = conv.conv1d(x, w, None, padding=1, padding_mode="replicate", backend="reference")
    np.testing.assert_array_equal(yp, [[[11, 21, 32, 43, 54, 55]]])    # [1 1 2 3 4 5 5]


def test_integer_overflow_wraps_like_pytorch():
    # PyTorch computes int8 conv exactly and wraps on the way back: 100*100 + 100*100 = 20000 -> 32.
    x = np.full((1, 1, 2), 100, np.int8)
    for backend in ("cpu", "reference"):
        assert conv.conv1d(x, x, backend=backend).tolist() == [[[32]]]


def test_float16_accumulates_in_float32(rng):
    # A long reduction in pure float16 would lose ~3 digits; float32 accumulation keeps the error
    # at float16 output rounding.
    x, w, _ = make_operands(rng, (1, 512, 4, 4), (2, 512, 3, 3), "float16")
    ref = conv.conv2d(x.astype(np.float64), w.astype(np.float64), backend="reference")
    for algorithm in CPU_ALGORITHMS:
        out = conv.conv2d(x, w, backend="cpu", algorithm=algorithm).astype(np.float64)
        assert np.abs(out - ref).max() <= 2e-3 * np.abs(ref).max()


@pytest.mark.parametrize("limit", [1, 4096, 1 << 20])
def test_workspace_limit_chunks_without_changing_results(limit, rng):
    _cpu = conv.backend.cpu
    x, w, _ = make_operands(rng, (3, 4, 12, 13), (5, 4, 3, 3), "float32")
    old = _cpu.workspace_limit()
    try:
        _cpu.set_workspace_limit(limit)
        assert_matches_reference("conv2d", x, w, None, backend="cpu", algorithm="im2col",
                                 padding=1, stride=(1, 2))
    finally:
        _cpu.set_workspace_limit(old)
    with pytest.raises(ValueError):
        _cpu.set_workspace_limit(0)
    conv.set_workspace_limit(1234, "cpu")
    assert _cpu.workspace_limit() == 1234
    _cpu.set_workspace_limit(old)
    with pytest.raises(ValueError, match="has no workspace"):
        conv.set_workspace_limit(1, "reference")


# One output channel per group: cpu:direct phase-splits each task's own input planes.
EXCLUSIVE_GROUP_CASES = [
    ((2, 6, 9, 11), (6, 1, 3, 3), {"groups": 6, "stride": 2, "padding": 1}),
    ((1, 4, 10, 13), (4, 1, 3, 2), {"groups": 4, "stride": (2, 3), "dilation": (1, 2),
                                    "padding": (2, 1)}),
    ((2, 6, 7, 8), (3, 2, 3, 3), {"groups": 3, "padding": 1, "padding_mode": "reflect"}),
    ((1, 3, 9, 9), (3, 1, 5, 5), {"groups": 3, "padding": "same", "dilation": 2}),
    ((2, 4, 6, 7), (4, 1, 2, 3), {"groups": 4, "padding": 2, "padding_mode": "circular",
                                  "stride": 2}),
    ((3, 5, 23), (5, 1, 4), {"groups": 5, "stride": 3, "padding": 1}),
]


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "int64", "float16"])
@pytest.mark.parametrize("case", range(len(EXCLUSIVE_GROUP_CASES)))
def test_direct_with_one_output_channel_per_group(case, dtype, rng, monkeypatch):
    monkeypatch.setattr(conv.backend.cpu, "_new_output",
                        lambda shape, dt: np.full(shape, 7, dt))  # poison
    xs, ws, kwargs = EXCLUSIVE_GROUP_CASES[case]
    op = "conv1d" if len(xs) == 3 else "conv2d"
    x, w, b = make_operands(rng, xs, ws, dtype, bias=True)
    assert_matches_reference(op, x, w, b, backend="cpu", algorithm="direct", **kwargs)
