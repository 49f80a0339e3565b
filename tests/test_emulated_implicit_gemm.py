"""The tensor-core implicit GEMM (kernels/cuda/implicit_gemm.cu, algorithm cupy:implicit_gemm) on
the CPU emulator (conv/emulator/): the backend's own launches (conv/backend/cupy/__init__.py:
launches) for every precision x tile configuration, against the float64 reference, on cases
with partial tiles on every edge (rows kg < BM and kg = BM + 2, columns not a multiple of BN,
reductions not a multiple of BK), conv2d and conv1d, the four padding modes, stride, dilation,
groups (depthwise with a channel multiplier), bias or none, batch > 1 and unbatched, a
channels_last input view and a strided (negative-stride) view; the schedules give identical
bits; mutation tests show a removed cp.async wait or __syncthreads of the float32 pipeline is
caught (the float16 one's barrier is not: see _MUTATION_CASE).

Tolerances (tests/_helpers.py: RTOL[dtype] * sqrt(reduction) * max|ref|): 3xTF32 meets the float32
one, f16 and bf16 (fp32 accumulation) the float16 and bfloat16 ones. TF32 rounds both operands to 11 significant bits
(cvt.rna: relative error <= 2^-11 each), so a product is off by up to 2^-10 of its magnitude: its
tolerance is TF32_RTOL = 2^-10 in the same formula (and TF32 must be measurably worse than
float32's tolerance, or it did not run).

Outputs are NaN-poisoned before the kernels run; each test runs its threads in a schedule
(forward, reverse or shuffled) drawn from its id.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conv import emulator
from conv._spec import make_spec
from conv.backend import cupy as cupy_backend
from conv.backend.cupy.sources import (
    IGEMM_PRECISIONS,
    IGEMM_TILE_CONFIGS,
    module_options,
    read_source,
)
from conv.backend.reference import conv_reference
from tests._emulated import SCHEDULES, poison_outputs, schedule  # noqa: F401 (fixtures)
from tests._helpers import RTOL, _report, assert_output_matches_reference, make_operands

_OK, _WHY = emulator.availability()
pytestmark = [
    pytest.mark.emulated,
    pytest.mark.skipif(not _OK, reason=f"CPU emulator of the CUDA kernels not usable: {_WHY}"),
]

TF32_RTOL = 2.0 ** -10          # both operands rounded to TF32: <= 2^-11 relative error each
PRECISIONS = [("float32", "3xtf32"), ("float32", "tf32"), ("float16", "f16"),
              ("bfloat16", "bf16")]
TILES = list(IGEMM_TILE_CONFIGS)
COMBOS = [(dt, prec, tile) for dt, prec in PRECISIONS for tile in TILES]
COMBO_IDS = [f"{prec}-{tile}" for _, prec, tile in COMBOS]

# Partial tiles: kg 20, 3, 2 (below every BM) and 130 (one full BM = 128 tile, then 2 rows);
# columns 180, 2*20, 240, 2*4*8, 11 (none a multiple of BN = 64); reductions 27, 10, 36, 9, 20
# (BK = 16 tiles: partial, one partial, two full + 4, ...). Every padding mode; stride, dilation,
# groups (depthwise with 2 output channels per input channel), bias or none, unbatched conv1d.
CASES = {
    "dense-zeros": ("conv2d", (2, 3, 9, 10), (20, 3, 3, 3), True, dict(padding=1)),
    "grouped-conv1d-reflect": ("conv1d", (2, 6, 40), (9, 2, 5), True,
                               dict(groups=3, stride=2, padding=2, padding_mode="reflect")),
    "wide-dilated-replicate": ("conv2d", (1, 6, 6, 40), (130, 6, 2, 3), False,
                               dict(padding=(1, 2), dilation=2, padding_mode="replicate")),
    "depthwise-x2-circular": ("conv2d", (2, 4, 7, 8), (8, 1, 3, 3), True,
                              dict(groups=4, stride=(2, 1), padding=1, padding_mode="circular")),
    "unbatched-conv1d-strided": ("conv1d", (5, 33), (6, 5, 4), False,
                                 dict(stride=3, dilation=2, padding=3)),
}




def _plan(op, x, w, b, tile, precision, **kwargs):
    """The backend's plan of the call on implicit_gemm with `tile`, set to run `precision`."""
    plan = emulator.plan(op, x, w, b, algorithm="implicit_gemm", config=tile, **kwargs)
    return dataclasses.replace(plan, precision=precision)


def _run(op, x, w, b, tile, precision, schedule=("forward", 0), **kwargs):
    plan = _plan(op, x, w, b, tile, precision, **kwargs)
    launched = cupy_backend.launches(plan, cupy_backend._prepare(plan, x, w, b, np))
    entry = f"implicit_gemm_{precision}_{x.dtype.name}"
    assert [s.entry for s in launched] == [entry] * len(launched) and launched
    assert all(s.options == module_options("implicit_gemm.cu", x.dtype, tile) for s in launched)
    return plan, emulator.run(plan, x, w, b, schedule=schedule[0], seed=schedule[1])


def _assert_tf32_close(op, out, x, w, b, where, **kwargs) -> float:
    """TF32's tolerance, TF32_RTOL * sqrt(reduction) * max|ref|; returns the largest error
    relative to max|ref|."""
    spec = make_spec(op, x, w, b, kwargs.get("stride", 1), kwargs.get("padding", 0),
                     kwargs.get("dilation", 1), kwargs.get("groups", 1),
                     kwargs.get("padding_mode", "zeros"))
    ref = conv_reference(x, w, b, spec)
    assert out.shape == ref.shape and out.dtype == x.dtype, where
    scale = max(float(np.abs(ref).max()), 1e-30)
    tol = TF32_RTOL * np.sqrt(max(1, spec.c_per_group * spec.r * spec.s)) * scale
    err = np.abs(out.astype(np.float64) - ref)
    bad = ~(err <= tol)                     # NaN (poison left unwritten) is bad
    if bad.any():
        _report(where, out, ref, bad, tol)
    return float(err.max()) / scale


def _check(op, out, x, w, b, precision, where, **kwargs):
    if precision == "tf32":
        _assert_tf32_close(op, out, x, w, b, where, **kwargs)
    else:
        assert_output_matches_reference(op, out, x, w, b, where=where, **kwargs)


# --- every precision x tile on the cases ---------------------------------------------------

@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype, precision, tile", COMBOS, ids=COMBO_IDS)
def test_cases(dtype, precision, tile, case, schedule):
    op, xs, ws, has_bias, kwargs = CASES[case]
    x, w, b = make_operands(("igemm", case, dtype), xs, ws, dtype, bias=has_bias)
    copies = [None if a is None else a.copy() for a in (x, w, b)]
    plan, out = _run(op, x, w, b, tile, precision, schedule, **kwargs)
    _check(op, out, x, w, b, precision, f"{plan} {precision} [{schedule[0]}]", **kwargs)
    for a, before in zip((x, w, b), copies):       # inputs are never modified
        if a is not None:
            np.testing.assert_array_equal(a, before)


@pytest.mark.parametrize("view", ["channels_last", "strided"])
@pytest.mark.parametrize("dtype, precision, tile", COMBOS, ids=COMBO_IDS)
def test_views(dtype, precision, tile, view, schedule):
    if view == "channels_last":         # NHWC memory seen as NCHW: channel stride 1
        base, w, b = make_operands(("igemm-nhwc", dtype), (2, 9, 10, 5), (20, 5, 3, 3), dtype,
                                   bias=True)
        x = base.transpose(0, 3, 1, 2)
        assert x.strides[1] == x.itemsize
        kwargs = dict(padding=1, stride=2)
    else:                               # every other row, columns reversed; a strided bias
        base, w, b = make_operands(("igemm-strided", dtype), (2, 5, 19, 21), (12, 5, 2, 3),
                                   dtype, bias=(24,))
        x, b = base[:, :, ::2, ::-1], b[::-2]
        kwargs = dict(padding=(1, 0), dilation=(1, 2), padding_mode="reflect")
    plan, out = _run("conv2d", x, w, b, tile, precision, schedule, **kwargs)
    _check("conv2d", out, x, w, b, precision, f"{plan} {precision} {view}", **kwargs)


def test_schedules_give_identical_bits():
    # Race-free: each output's sum runs in one lane's mma chain in a fixed order, whatever the
    # order of the threads between barriers.
    op, xs, ws, has_bias, kwargs = CASES["dense-zeros"]
    runs = [(s, 1) for s in SCHEDULES] + [("shuffled", 2)]
    for dtype, precision in PRECISIONS:
        x, w, b = make_operands(("igemm-schedules", dtype), xs, ws, dtype, bias=has_bias)
        outs = [_run(op, x, w, b, "64x64x16", precision, run, **kwargs)[1] for run in runs]
        for out in outs[1:]:
            np.testing.assert_array_equal(out, outs[0])


def test_tf32_is_tf32_and_3xtf32_is_float32_accurate():
    # The precision switch changes what runs: TF32's error is far above float32's tolerance
    # (operands rounded to 11 bits), 3xTF32's within it, on the same data.
    op, xs, ws, has_bias, kwargs = CASES["dense-zeros"]
    x, w, b = make_operands("igemm-precision", xs, ws, "float32", bias=has_bias)
    _, tf32 = _run(op, x, w, b, "128x64x16", "tf32", **kwargs)
    _, split = _run(op, x, w, b, "128x64x16", "3xtf32", **kwargs)
    assert_output_matches_reference(op, split, x, w, b, **kwargs)
    with pytest.raises(AssertionError, match="elements wrong"):
        assert_output_matches_reference(op, tf32, x, w, b, **kwargs)
    assert _assert_tf32_close(op, tf32, x, w, b, "tf32", **kwargs) > 10 * RTOL[x.dtype]


# --- the launches: grid, block, options; refusals ------------------------------------------

@pytest.mark.parametrize("tile", TILES)
def test_launch_grid_block_and_options(tile):
    op, xs, ws, has_bias, kwargs = CASES["wide-dilated-replicate"]
    x, w, b = make_operands("igemm-launch", xs, ws, "float32", bias=has_bias)
    plan = emulator.plan(op, x, w, b, algorithm="implicit_gemm", config=tile, **kwargs)
    assert plan.workspace_bytes == 0 and plan.chunks is None        # no workspace
    (step,) = cupy_backend.launches(plan, cupy_backend._prepare(plan, x, w, b, np))
    t = IGEMM_TILE_CONFIGS[tile]
    spec = plan.spec
    cols = spec.n * spec.p * spec.q
    assert step.entry == "implicit_gemm_3xtf32_float32"      # float32's default precision
    assert step.grid == (-(-cols // t.bn), -(-spec.k_per_group // t.bm), spec.groups)
    assert step.block == (t.threads, 1, 1)
    assert f"-DCONV_IGEMM_BM={t.bm}" in step.options and f"-DCONV_IGEMM_STAGES={t.stages}" in \
        step.options
    assert len(step.args) == len(emulator.parameters("implicit_gemm.cu"))
    assert t.shared_bytes("float32") <= 48 * 1024 and t.shared_bytes("float16") <= 48 * 1024


def test_default_precisions_and_refusals():
    x, w, _ = make_operands("igemm-refusals", (1, 2, 5, 5), (4, 2, 3, 3), "float64")
    with pytest.raises(TypeError, match="implicit_gemm' has no kernels for dtype float64"):
        emulator.plan("conv2d", x, w, None, algorithm="implicit_gemm")
    xi, wi = x.astype(np.int32), w.astype(np.int32)
    with pytest.raises(TypeError, match="implicit_gemm' has no kernels for dtype int32"):
        emulator.plan("conv2d", xi, wi, None, algorithm="implicit_gemm")
    for dtype, precisions in IGEMM_PRECISIONS.items():
        plan = emulator.plan("conv2d", x.astype(dtype), w.astype(dtype), None,
                             algorithm="implicit_gemm")
        assert cupy_backend.implicit_gemm_precision(plan) == precisions[0]
    x16, w16 = x.astype(np.float16), w.astype(np.float16)
    plan = _plan("conv2d", x16, w16, None, "", "tf32")
    with pytest.raises(ValueError, match="no precision 'tf32' for float16"):
        cupy_backend.launches(plan, cupy_backend._prepare(plan, x16, w16, None, np))


# --- mutation tests: the checks above can fail --------------------------------------------

_WAIT = "conv_cp_async_wait<STAGES - 2>();"
_ASYNC_BARRIER = "__syncthreads();                        // everyone's; and tile kt-1 is consumed"
_F16_BARRIER = "__syncthreads();                        // tile kt stored; tile kt-1 consumed"
# One block (40 columns, kg 20) and 3 k-tiles of BK = 16 (CRS 36): the prologue fills two buffers,
# the loop issues the third. The 64x64x16 tile keeps each thread's copies without the wait (48)
# under the emulator's 64 pending copies. The float16 path's barrier (stores staged through
# registers) is caught only where one warp runs ahead of the others: the reverse and shuffled
# schedules release one warp at a time from its warp collectives (ldmatrix, mma); the forward
# schedule advances warps together from one collective to the next, so no warp overtakes.
_MUTATION_CASE = ("conv2d", (1, 6, 6, 10), (20, 6, 2, 3), True, {})
_MUTANTS = [(_WAIT, "wait", "3xtf32"), (_ASYNC_BARRIER, "barrier", "3xtf32"),
            (_WAIT, "wait", "tf32"), (_ASYNC_BARRIER, "barrier", "tf32"),
            (_F16_BARRIER, "barrier", "f16")]


@pytest.mark.parametrize("removed, what, precision", _MUTANTS,
                         ids=[f"{p}-{'cp-async-wait' if w == 'wait' else w}"
                              for _, w, p in _MUTANTS])
def test_a_removed_wait_or_barrier_is_caught(removed, what, precision, schedule):
    text = read_source("implicit_gemm.cu")
    assert text.count(removed) == 1
    if precision == "f16" and schedule[0] == "forward":
        schedule = ("reverse", schedule[1])    # the forward schedule cannot catch it (above)
    dtype = "float16" if precision == "f16" else "float32"
    op, xs, ws, has_bias, kwargs = _MUTATION_CASE
    x, w, b = make_operands("igemm-mutation", xs, ws, dtype, bias=has_bias)
    plan, out = _run(op, x, w, b, "64x64x16", precision, schedule, **kwargs)
    _check(op, out, x, w, b, precision, f"{plan}", **kwargs)         # intact: passes
    # The mutant keeps every name of the intact kernel: the emulator's modules do not share
    # the statics of their template instantiations (conv/emulator's -fno-gnu-unique).
    mutant = text.replace(removed, "")
    with emulator.replaced_source("implicit_gemm.cu", mutant):
        plan, out = _run(op, x, w, b, "64x64x16", precision, schedule, **kwargs)
    with pytest.raises(AssertionError, match="elements wrong"):
        _check(op, out, x, w, b, precision, f"{plan} without {removed.split(';')[0]}", **kwargs)


# --- split-K ("<tile>/k<splits>": fp32 partial sums, then splitk_sum.cu) -----------------------

# Long reductions on small grids (where split-K is offered): CRS 144 (9 k-tiles of 16: /k2 5 + 4,
# /k4 3 + 3 + 3 + an empty split), with bias, padding, partial tiles; CRS 120 in a conv1d with
# kg 6 < BM, 46 columns < BN, stride, reflect padding, no bias; CRS 72 grouped (2 groups).
SPLIT_CASES = {
    "dense-bias": ("conv2d", (2, 16, 7, 9), (20, 16, 3, 3), True, dict(padding=1)),
    "conv1d-reflect": ("conv1d", (1, 24, 95), (6, 24, 5), False,
                       dict(stride=2, padding=2, padding_mode="reflect")),
    "grouped": ("conv2d", (1, 16, 6, 6), (10, 8, 3, 3), True, dict(groups=2, padding=1)),
}
SPLIT_CONFIGS = ["128x64x16/k2", "128x64x16/k4", "64x64x16/k2", "64x64x16/k4"]


@pytest.mark.parametrize("config", SPLIT_CONFIGS)
@pytest.mark.parametrize("case", list(SPLIT_CASES))
@pytest.mark.parametrize("dtype, precision", PRECISIONS, ids=[p for _, p in PRECISIONS])
def test_split_k(dtype, precision, case, config, schedule):
    op, xs, ws, has_bias, kwargs = SPLIT_CASES[case]
    x, w, b = make_operands(("igemm-splitk", case, dtype), xs, ws, dtype, bias=has_bias)
    spec = make_spec(op, x, w, b, kwargs.get("stride", 1), kwargs.get("padding", 0), 1,
                     kwargs.get("groups", 1), kwargs.get("padding_mode", "zeros"))
    crs = spec.c_per_group * spec.r * spec.s
    if -(-crs // 16) < 2 * int(config.split("/k")[1]):
        assert config not in cupy_backend.configs(spec, "implicit_gemm")
        return
    plan = dataclasses.replace(
        emulator.plan(op, x, w, b, algorithm="implicit_gemm", config=config, **kwargs),
        precision=precision)
    splits = int(config.split("/k")[1])
    n, k, p, q = spec.output_shape_4d
    assert plan.workspace_bytes == splits * n * k * p * q * 4        # fp32 partial sums
    assert f"split-K in {splits}" in plan.reason
    steps = cupy_backend.launches(plan, cupy_backend._prepare(plan, x, w, b, np))
    assert [s.entry for s in steps] == [f"implicit_gemm_{precision}_splitk_{x.dtype.name}",
                                        f"splitk_sum_{x.dtype.name}"]
    assert steps[0].grid[2] == spec.groups * splits
    out = emulator.run(plan, x, w, b, schedule=schedule[0], seed=schedule[1])
    _check(op, out, x, w, b, precision, f"{plan} {precision} [{schedule[0]}]", **kwargs)


def test_split_k_gives_identical_bits_in_every_schedule():
    op, xs, ws, has_bias, kwargs = SPLIT_CASES["dense-bias"]
    x, w, b = make_operands("igemm-splitk-bits", xs, ws, "float32", bias=has_bias)
    plan = emulator.plan(op, x, w, b, algorithm="implicit_gemm", config="64x64x16/k4", **kwargs)
    runs = [(s, 1) for s in SCHEDULES] + [("shuffled", 2)]
    outs = [emulator.run(plan, x, w, b, schedule=s, seed=seed) for s, seed in runs]
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])


def test_split_k_is_offered_only_for_small_grids_long_reductions_and_within_the_cap():
    def offered(xs, ws, **kwargs):
        x, w, _ = make_operands("igemm-splitk-offer", xs, ws, "float32")
        spec = make_spec("conv2d", x, w, None, 1, kwargs.get("padding", 0), 1, 1, "zeros")
        return [c for c in cupy_backend.configs(spec, "implicit_gemm") if "/k" in c]
    assert offered((2, 16, 7, 9), (20, 16, 3, 3), padding=1) == SPLIT_CONFIGS
    assert offered((2, 2, 7, 9), (20, 2, 3, 3), padding=1) == []       # 18: two k-tiles
    assert offered((64, 16, 56, 56), (64, 16, 3, 3), padding=1) == []  # a large grid already
    op, xs, ws, has_bias, kwargs = SPLIT_CASES["dense-bias"]
    x, w, b = make_operands("igemm-splitk-cap", xs, ws, "float32", bias=has_bias)
    cupy_backend.set_workspace_limit(4096)
    try:
        spec = make_spec(op, x, w, b, 1, 1, 1, 1, "zeros")
        assert not [c for c in cupy_backend.configs(spec, "implicit_gemm") if "/k" in c]
        with pytest.raises(ValueError, match="no tile configuration '128x64x16/k2'"):
            emulator.plan(op, x, w, b, algorithm="implicit_gemm", config="128x64x16/k2",
                          **kwargs)
    finally:
        cupy_backend.set_workspace_limit(None)


def test_a_split_k_without_its_k_offset_is_caught():
    """Mutant: every split reads the reduction from its start (the k-tile offset dropped)."""
    text = read_source("implicit_gemm.cu")
    line = "const long long i_first = kt0 * BK;"
    assert text.count(line) == 1
    op, xs, ws, has_bias, kwargs = SPLIT_CASES["dense-bias"]
    x, w, b = make_operands("igemm-splitk-mutant", xs, ws, "float32", bias=has_bias)
    plan = emulator.plan(op, x, w, b, algorithm="implicit_gemm", config="64x64x16/k2", **kwargs)
    with emulator.replaced_source("implicit_gemm.cu", text.replace(line, "const long long "
                                                                         "i_first = 0;")):
        out = emulator.run(plan, x, w, b)
    with pytest.raises(AssertionError, match="elements wrong"):
        assert_output_matches_reference(op, out, x, w, b, **kwargs)
