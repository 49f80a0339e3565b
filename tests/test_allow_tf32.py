"""The precision switch, mirroring PyTorch's ``torch.backends.cudnn.allow_tf32``: the keyword
``allow_tf32`` of conv.conv1d/conv2d/explain and the modules' forward, its default from
conv.set_allow_tf32 (initially False), carried by the Plan as ``Plan.precision``: cupy's
implicit_gemm plans "tf32" when allowed and "3xtf32" otherwise for float32, "f16" for float16;
every other algorithm, and the CPU, plans "" and computes the same with or without it.
No GPU needed: CuPy plans are made for the emulator (conv.plan.make_plan(..., emulated=True)).
"""
from __future__ import annotations

import numpy as np
import pytest

import conv
from conv import plan as planning
from conv._spec import make_spec
from tests._helpers import make_operands


@pytest.fixture(autouse=True)
def restore_default():
    before = planning.allow_tf32()
    yield
    conv.set_allow_tf32(before)


def _cupy_plan(dtype="float32", algorithm="implicit_gemm", **kwargs):
    x, w, b = make_operands(("tf32-plan", dtype), (2, 3, 8, 8), (4, 3, 3, 3), dtype, bias=True)
    spec = make_spec("conv2d", x, w, b, 1, 1, 1, 1, "zeros")
    return planning.make_plan(spec, x, w, b, "cupy", algorithm, emulated=True, **kwargs)


def test_default_is_off_and_float32_runs_3xtf32():
    assert planning.allow_tf32() is False
    assert _cupy_plan().precision == "3xtf32"
    assert _cupy_plan(allow_tf32=None).precision == "3xtf32"


def test_the_keyword_and_the_setter():
    assert _cupy_plan(allow_tf32=True).precision == "tf32"
    conv.set_allow_tf32(True)
    assert planning.allow_tf32() is True
    assert _cupy_plan().precision == "tf32"
    assert _cupy_plan(allow_tf32=False).precision == "3xtf32"      # the call wins
    conv.set_allow_tf32(False)
    assert _cupy_plan().precision == "3xtf32"


def test_float16_and_other_algorithms_are_unaffected():
    for allow in (False, True):
        assert _cupy_plan("float16", allow_tf32=allow).precision == "f16"
        for algorithm in ("direct", "im2col", "im2col_cublas"):
            assert _cupy_plan(algorithm=algorithm, allow_tf32=allow).precision == ""


def test_explain_states_the_precision():
    assert " in 3xtf32 " in str(_cupy_plan())
    assert " in tf32 " in str(_cupy_plan(allow_tf32=True))
    assert "tf32" not in str(_cupy_plan(algorithm="im2col", allow_tf32=True))


@pytest.mark.parametrize("op, xs, ws", [("conv2d", (2, 3, 7, 8), (4, 3, 3, 3)),
                                        ("conv1d", (2, 3, 20), (4, 3, 5))])
def test_cpu_path_accepts_the_keyword_and_changes_nothing(op, xs, ws):
    x, w, b = make_operands(("tf32-cpu", op), xs, ws, "float32", bias=True)
    fn = getattr(conv, op)
    plain = fn(x, w, b, padding=1)
    for allow in (True, False):
        np.testing.assert_array_equal(fn(x, w, b, padding=1, allow_tf32=allow), plain)
        plan = conv.explain(op, x, w, b, padding=1, allow_tf32=allow)
        assert plan.precision == "" and "tf32" not in str(plan)
    conv.set_allow_tf32(True)
    np.testing.assert_array_equal(fn(x, w, b, padding=1), plain)
    layer = (conv.Conv2d if op == "conv2d" else conv.Conv1d)(3, 4, ws[-1], padding=1, seed=0)
    np.testing.assert_array_equal(layer(x, allow_tf32=True), layer(x, allow_tf32=False))


def test_the_keyword_takes_booleans_only():
    x, w, _ = make_operands("tf32-type", (1, 2, 5), (3, 2, 3), "float32")
    with pytest.raises(TypeError, match="allow_tf32 must be True or False"):
        conv.conv1d(x, w, allow_tf32="yes")
    with pytest.raises(TypeError, match="allow_tf32 must be True or False"):
        conv.set_allow_tf32(1)
    assert planning.allow_tf32() is False


def test_dask_inputs_carry_the_keyword_to_their_blocks(monkeypatch):
    da = pytest.importorskip("dask.array", reason="dask is not installed (the [dask] extra)")
    x, w, b = make_operands("tf32-dask", (2, 3, 9, 8), (4, 3, 3, 3), "float32", bias=True)
    seen = []
    real = planning.make_plan

    def spy(*args, **kwargs):
        seen.append(kwargs.get("allow_tf32"))
        return real(*args, **kwargs)
    monkeypatch.setattr(planning, "make_plan", spy)
    lazy = conv.conv2d(da.from_array(x, chunks=(1, 3, 5, 8)), w, b, padding=1, allow_tf32=True)
    np.testing.assert_array_equal(lazy.compute(scheduler="synchronous"),
                                  conv.conv2d(x, w, b, padding=1))
    assert seen and all(v is True for v in seen[:-1])        # the check and every block's call
    with pytest.raises(TypeError, match="allow_tf32 must be True or False"):
        conv.conv2d(da.from_array(x, chunks=2), w, b, allow_tf32="yes")     # at the call
