"""The benchmark runner's "bf16" precision: its inputs are bfloat16, its check accepts one rounding
to bfloat16 and rejects more, implementations without bfloat16 kernels get no row, and PyTorch's
CPU tensors are views of the same bfloat16 data (no timing here: timed assertions do not belong in
tests)."""
from __future__ import annotations

import numpy as np
import pytest

from conv._dtypes import BFLOAT16
from conv._spec import make_spec
from conv.bench import runner
from conv.bench.suites import Case
from conv.backend.reference import conv_reference

CASE = Case("test", "dense", "conv2d", (2, 8, 10, 10), (16, 8, 3, 3), padding=1, bias=True)


def _spec(x, w, b):
    return make_spec("conv2d", x, w, b, 1, 1, 1, 1, "zeros")


def test_inputs_are_bfloat16_and_random():
    x, w, b, base = runner.host_inputs(CASE, "bf16")
    assert x.dtype == w.dtype == b.dtype == BFLOAT16 and base is x
    assert np.unique(x.astype(np.float32)).size > 100


def test_check_takes_one_rounding_and_refuses_truncation():
    x, w, b, _ = runner.host_inputs(CASE, "bf16")
    ref = conv_reference(x, w, b, _spec(x, w, b))
    reduction = 8 * 9
    rounded = ref.astype(np.float32).astype(BFLOAT16)
    assert runner.check(rounded, ref, "bf16", reduction)[0]
    # Truncating to bfloat16 (up to a whole ulp off) exceeds half an ulp of max|ref| somewhere.
    truncated = (ref.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).view(BFLOAT16)
    ok, _, _, message = runner.check(truncated, ref, "bf16", reduction)
    assert not ok and "elements off" in message


def test_implementations_without_bfloat16_kernels_have_no_row():
    x, w, b, _ = runner.host_inputs(CASE, "bf16")
    spec = _spec(x, w, b)
    x16, w16, b16, _ = runner.host_inputs(CASE, "fp16")
    spec16 = _spec(x16, w16, b16)
    for backend, algorithm in [("numba", "direct"), ("numba", "im2col"), ("cupy", "im2col_cublas")]:
        impl = runner.Impl(backend, algorithm)
        assert runner._refuses_shape(impl, spec)
        assert not runner._refuses_shape(impl, spec16)          # they have float16 kernels
    for backend, algorithm in [("cupy", "implicit_gemm"), ("cupy", "direct"), ("cpu", "implicit")]:
        assert not runner._refuses_shape(runner.Impl(backend, algorithm), spec)


def test_torch_cpu_tensors_view_the_same_bfloat16_data():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    x, w, b, base = runner.host_inputs(CASE, "bf16")
    tx, tw, tb = runner._torch_tensors(torch, CASE, base, w, b, "cpu")
    assert tx.dtype == tw.dtype == tb.dtype == torch.bfloat16
    assert tx.data_ptr() == base.ctypes.data and tw.data_ptr() == w.ctypes.data
    assert np.array_equal(tx.view(torch.int16).numpy(), base.view(np.int16))
