"""The depthwise kernel (kernels/cuda/depthwise.cu, algorithm cupy:depthwise) on the CPU emulator
(conv/emulator/): the backend's own launches against the float64 reference, with NaN-poisoned
outputs (integers: a sentinel) and a poisoned guard region after the output that must stay
untouched. Cases: conv1d and conv2d, channel multipliers 1, 2, 3, the four padding modes, stride,
dilation, bias or none, batch > 1 and unbatched, partial tiles on every edge of every tile
configuration, every dtype (integers wrapping as PyTorch's), a channels_last and a strided view,
the Mamba-style causal conv1d scaled down; the refusals (groups != C; a patch no tile's buffer
holds) and the fallback to a smaller tile; mutation tests showing that a removed __syncthreads or
a removed store bounds check is caught.
"""
from __future__ import annotations

import numpy as np
import pytest

from conv import _gpu_arrays, emulator, registry
from conv._spec import make_spec
from conv.backend import cupy as cupy_backend
from conv.backend.cupy.sources import DEPTHWISE_CONFIGS, depthwise_configs, read_source
from conv.backend.reference import conv_reference
from tests._emulated import poison_outputs, schedule  # noqa: F401 (fixtures)
from tests._helpers import assert_output_matches_reference, make_operands

_OK, _WHY = emulator.availability()
pytestmark = [
    pytest.mark.emulated,
    pytest.mark.skipif(not _OK, reason=f"CPU emulator of the CUDA kernels not usable: {_WHY}"),
]

_GUARD = 64                     # poisoned elements after the output: out-of-bounds stores land here

# (op, x shape, w shape, bias, kwargs). Q = 9, 11, 40, 19, 37 and P = 8, 4, 1, 5: no tile's
# multiple, so every launch has partial tiles in q (and in p for the 2-D tiles).
CASES = {
    "m1-zeros": ("conv2d", (2, 6, 8, 9), (6, 1, 3, 3), True, dict(groups=6, padding=1)),
    "m3-stride": ("conv2d", (2, 4, 8, 9), (12, 1, 3, 3), False, dict(groups=4, stride=2,
                                                                     padding=(1, 2))),
    "m2-reflect-dilated": ("conv2d", (1, 3, 9, 14), (6, 1, 3, 2), True,
                           dict(groups=3, dilation=(2, 3), padding=(2, 1),
                                padding_mode="reflect")),
    "m1-replicate-conv1d": ("conv1d", (2, 5, 37), (5, 1, 5), True,
                            dict(groups=5, padding=3, padding_mode="replicate")),
    "m2-circular-conv1d-strided": ("conv1d", (3, 40), (6, 1, 4), False,
                                   dict(groups=3, stride=2, dilation=2, padding=4,
                                        padding_mode="circular")),
    "m1-unbatched-conv2d": ("conv2d", (4, 7, 19), (4, 1, 2, 4), True,
                            dict(groups=4, padding="same", padding_mode="circular")),
}


def _kwargs_spec(op, x, w, b, kwargs):
    return make_spec(op, x, w, b, kwargs.get("stride", 1), kwargs.get("padding", 0),
                     kwargs.get("dilation", 1), kwargs.get("groups", 1),
                     kwargs.get("padding_mode", "zeros"))


def _run(op, x, w, b, config="", schedule=("forward", 0), text=None, **kwargs):
    """The plan and output of the backend's launches on the emulator, the output allocated with
    a poisoned guard region after it that is asserted untouched."""
    plan = emulator.plan(op, x, w, b, algorithm="depthwise", config=config, **kwargs)
    ops = cupy_backend._prepare(plan, x, w, b, np)
    size = ops.out.size
    big = np.full(size + _GUARD, _gpu_arrays.poison_value(plan.spec.dtype), plan.spec.dtype)
    ops.out = big[:size].reshape(ops.out.shape)
    steps = cupy_backend.launches(plan, ops)
    tile = config or depthwise_configs(plan.spec)[0]
    assert steps and all(s.entry == f"depthwise_{tile}_{x.dtype.name}" for s in steps)
    assert all(s.block == (DEPTHWISE_CONFIGS[tile].threads, 1, 1) for s in steps)
    for step in steps:
        emulator.execute(step, schedule[0], schedule[1])
    guard = big[size:]
    guard_intact = bool(np.isnan(guard).all()) if guard.dtype.kind in "fc" else bool(
        (guard == _gpu_arrays.poison_value(guard.dtype)).all())
    return plan, ops.out.reshape(plan.spec.output_shape), guard_intact


def _check(op, x, w, b, config="", schedule=("forward", 0), **kwargs):
    plan, out, guard_intact = _run(op, x, w, b, config, schedule, **kwargs)
    assert_output_matches_reference(op, out, x, w, b, where=f"{plan} [{schedule[0]}]", **kwargs)
    assert guard_intact, f"{plan}: a store beyond the output"
    return plan


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(CASES))
def test_cases(case, dtype, schedule):
    op, xs, ws, has_bias, kwargs = CASES[case]
    x, w, b = make_operands(("dw", case, dtype), xs, ws, dtype, bias=has_bias)
    copies = [None if a is None else a.copy() for a in (x, w, b)]
    _check(op, x, w, b, "", schedule, **kwargs)
    for a, before in zip((x, w, b), copies):       # inputs are never modified
        if a is not None:
            np.testing.assert_array_equal(a, before)


@pytest.mark.parametrize("config", list(DEPTHWISE_CONFIGS))
@pytest.mark.parametrize("case", ["m1-zeros", "m1-replicate-conv1d"])
def test_every_tile_config(case, config, schedule):
    op, xs, ws, has_bias, kwargs = CASES[case]
    x, w, b = make_operands(("dw-config", case), xs, ws, "float32", bias=has_bias)
    _check(op, x, w, b, config, schedule, **kwargs)


@pytest.mark.parametrize("dtype", ["float16", "complex64", "complex128", "int8", "int16",
                                   "int32", "int64", "uint8"])
def test_every_dtype(dtype, schedule):
    # Undilated (PyTorch refuses dilated 8/16/32-bit integer convolutions); integers scaled so
    # int8/uint8 sums wrap, as PyTorch's do.
    op, xs, ws, has_bias, kwargs = CASES["m3-stride"]
    x, w, b = make_operands(("dw-dtype", dtype), xs, ws, dtype, bias=True)
    if np.dtype(dtype).kind in "iu":
        x = (x * 37).astype(dtype)
    _check(op, x, w, b, "", schedule, **kwargs)
    op1, xs1, ws1, _, kw1 = CASES["m1-replicate-conv1d"]
    x1, w1, b1 = make_operands(("dw-dtype-1d", dtype), xs1, ws1, dtype, bias=False)
    _check(op1, x1, w1, b1, "", schedule, **kw1)


@pytest.mark.parametrize("view", ["channels_last", "strided"])
def test_views(view, schedule):
    if view == "channels_last":         # NHWC memory seen as NCHW: channel stride 1
        base, w, b = make_operands("dw-nhwc", (2, 9, 10, 6), (12, 1, 3, 3), "float32", bias=True)
        x = base.transpose(0, 3, 1, 2)
        assert x.strides[1] == x.itemsize
        kwargs = dict(groups=6, padding=1, stride=(1, 2))
    else:                               # every other row, columns reversed; strided weights, bias
        base, w, b = make_operands("dw-strided", (2, 4, 15, 21), (8, 1, 4, 3), "float32",
                                   bias=(16,))
        x, w, b = base[:, :, ::2, ::-1], w.transpose(0, 1, 3, 2)[:, :, ::-1], b[::-2]
        kwargs = dict(groups=4, padding=(1, 0), dilation=(1, 2), padding_mode="reflect")
    _check("conv2d", x, w, b, "", schedule, **kwargs)


def test_mamba_causal_conv1d_scaled_down(schedule):
    # Mamba's short causal conv: kernel 4, padding 3 on both sides, the output sliced to L
    # (the real shape (8, 1536, 2048) scaled down to (2, 16, 700): q tiles of 1024, partial).
    n, c, length = 2, 16, 700
    x, w, b = make_operands("dw-mamba", (n, c, length), (c, 1, 4), "float32", bias=True)
    kwargs = dict(groups=c, padding=3)
    plan, out, guard_intact = _run("conv1d", x, w, b, "", schedule, **kwargs)
    assert plan.config == "" and depthwise_configs(plan.spec)[0] == "1x1024"
    assert guard_intact and out.shape == (n, c, length + 3)
    ref = conv_reference(x, w, b, _kwargs_spec("conv1d", x, w, b, kwargs))[..., :length]
    causal = out[..., :length]
    tol = 2e-6 * 2 * float(np.abs(ref).max())          # RTOL[float32] * sqrt(4) * max|ref|
    assert np.all(np.abs(causal - ref) <= tol)
    # causal: output t depends on inputs <= t only
    x2 = x.copy()
    x2[..., 400:] += 1
    _, out2, _ = _run("conv1d", x2, w, b, "", schedule, **kwargs)
    np.testing.assert_array_equal(out2[..., :400], out[..., :400])


def test_refuses_what_is_not_depthwise():
    x, w, b = make_operands("dw-refusal", (2, 6, 8, 9), (4, 3, 3, 3), "float32", bias=True)
    with pytest.raises(ValueError, match=r"depthwise convolutions only \(groups == C.*groups=2, "
                                         r"C=6"):
        emulator.plan("conv2d", x, w, b, algorithm="depthwise", groups=2)
    with pytest.raises(ValueError, match="groups=1, C=6"):
        emulator.plan("conv2d", x, np.ones((4, 6, 3, 3), "float32"), b, algorithm="depthwise")
    # registry: the row refuses, so it is not a candidate of the autotuner for such specs
    spec = _kwargs_spec("conv2d", x, w, b, dict(groups=2))
    assert isinstance(registry.algorithm("cupy", "depthwise").refusal(spec), ValueError)


def test_large_dilation_falls_back_then_is_refused(schedule):
    # dilation 500 along w on 3 taps, float32: 8x64's patch is PH 8 x PW 63 + 1000 + 1 = 1064,
    # 8512 elements > its 4096 (16 KiB); 4x32's is 4 x 1032 + 3 weights = 4131 <= 6144 (24 KiB).
    x, w, b = make_operands("dw-dilated", (1, 2, 4, 1010), (2, 1, 1, 3), "float32", bias=True)
    kwargs = dict(groups=2, dilation=(1, 500))
    spec = _kwargs_spec("conv2d", x, w, b, kwargs)
    assert depthwise_configs(spec)[0] == "4x32" and "8x64" not in depthwise_configs(spec)
    _check("conv2d", x, w, b, "", schedule, **kwargs)
    with pytest.raises(ValueError, match="no tile configuration '8x64'"):
        _run("conv2d", x, w, b, "8x64", **kwargs)
    # dilation 3000: no tile's buffer holds the patch; planning refuses with the reason
    x, w, b = make_operands("dw-dilated-huge", (1, 2, 6001), (2, 1, 3), "float32")
    with pytest.raises(ValueError, match="bytes of shared memory.*use algorithm 'direct'"):
        emulator.plan("conv1d", x, w, b, algorithm="depthwise", groups=2, dilation=3000)


# --- mutation tests: the checks above can fail --------------------------------------------

_BARRIER = "__syncthreads();                                        // the patch and weights are staged"
_STORE_CHECK = "if (tq + j < q_count) o[j]"


@pytest.mark.parametrize("removed, replacement, what", [
    (_BARRIER, "", "barrier"), (_STORE_CHECK, "o[j]", "store_check")],
    ids=["barrier", "store-bounds-check"])
def test_a_removed_barrier_or_bounds_check_is_caught(removed, replacement, what, schedule):
    text = read_source("depthwise.cu")
    assert text.count(removed) == 1
    op, xs, ws, has_bias, kwargs = CASES["m1-zeros"]
    x, w, b = make_operands("dw-mutation", xs, ws, "float32", bias=has_bias)
    _check(op, x, w, b, "8x64", schedule, **kwargs)                  # intact: passes
    # The mutant's body gets its own name (the emulator's __shared__ sites are function-local
    # statics of the template, process-wide symbols: tests/test_emulated_implicit_gemm.py).
    mutant = text.replace(removed, replacement).replace("depthwise_body",
                                                        f"depthwise_without_{what}_body")
    with emulator.replaced_source("depthwise.cu", mutant):
        with pytest.raises(AssertionError, match="elements wrong|a store beyond the output"):
            _check(op, x, w, b, "8x64", schedule, **kwargs)
