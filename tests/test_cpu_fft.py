"""cpu:fft (conv/backend/cpu/fft.py) against the float64 reference: a grid of its own (conv1d and
conv2d, stride, dilation, groups and depthwise, every padding mode, bias, unbatched, every float
and complex dtype, kernels 1..255, partial overlap-save tiles and batches), non-contiguous inputs,
the accuracy bound of its module docstring, inf and nan where the direct sum has them, numpy.fft
without SciPy, integer refusal, the workspace explain shows, and autotuning choosing it. The
conv1d tests run on both engines (the `engine` fixture: fft_lanes.py, and pocketfft through
scipy.fft), with fft_lanes' own grid of channel counts, its transforms against numpy.fft, and its
AVX2 variant in a child process. Every output allocation starts NaN-poisoned; the caller's arrays
are checked unchanged."""
from __future__ import annotations

import os
import re

import numpy as np
import pytest

import conv
import conv.backend.cpu as _cpu
from conv._spec import make_spec
from conv.backend.cpu import chunks
from conv.backend.cpu import fft as fft_module
from tests._helpers import (
    FLOAT_AND_COMPLEX,
    RTOL,
    algorithm_refusal,
    assert_matches_reference,
    make_operands,
    run_tests_on_avx2,
)


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """Every output and chunk buffer (conv.backend.cpu._new_output) starts as NaN."""
    monkeypatch.setattr(_cpu, "_new_output", lambda shape, dtype: np.full(shape, np.nan, dtype))


ENGINES = ["lanes", "pocketfft"]


@pytest.fixture(params=ENGINES)
def engine(request, monkeypatch):
    """Run conv1d of real float32/float64 without groups on fft_lanes.py (the default) or on the
    pocketfft batches; plans are remade for each."""
    monkeypatch.setattr(fft_module, "LANES", request.param == "lanes")
    fft_module.plan.cache_clear()
    yield request.param
    fft_module.plan.cache_clear()


def _engine_of(op, x, w, b=None, **kwargs) -> str:
    spec = conv.explain(op, x, w, b, algorithm="fft", **kwargs).spec
    return fft_module.plan(spec, x.dtype, _cpu.workspace_limit()).engine


def _check(op, x, w, b=None, engine=None, **kwargs):
    """The reference comparison, and the caller's arrays unchanged by the call; with `engine`,
    that conv1d of real float32/float64 without groups ran on it."""
    if engine is not None:
        lanes = (op == "conv1d" and kwargs.get("groups", 1) == 1
                 and x.dtype in (np.float32, np.float64))
        assert _engine_of(op, x, w, b, **kwargs) == (engine if lanes else "pocketfft")
    copies = [None if a is None else a.copy() for a in (x, w, b)]
    out = assert_matches_reference(op, x, w, b, backend="cpu", algorithm="fft", **kwargs)
    for got, before in zip((x, w, b), copies):
        if got is not None:
            np.testing.assert_array_equal(got, before)
    return out


# (id, op, x shape, w shape, bias, kwargs)
GRID = [
    ("1d-k1", "conv1d", (2, 3, 50), (4, 3, 1), True, {}),
    ("1d-k2-stride", "conv1d", (2, 3, 51), (4, 3, 2), False, {"stride": 2}),
    ("1d-k255-same", "conv1d", (2, 3, 300), (4, 3, 255), True, {"padding": "same"}),
    ("1d-k127-stride3", "conv1d", (1, 4, 1000), (4, 4, 127), True, {"padding": 63, "stride": 3}),
    ("1d-depthwise-dilated", "conv1d", (2, 6, 400), (6, 1, 31), True,
     {"groups": 6, "dilation": 3, "padding": "same"}),
    ("1d-groups-reflect", "conv1d", (2, 6, 333), (9, 2, 17), True,
     {"groups": 3, "padding": 8, "padding_mode": "reflect"}),
    ("1d-unbatched-even", "conv1d", (3, 200), (2, 3, 64), True, {"padding": "same"}),
    ("1d-circular", "conv1d", (1, 2, 500), (3, 2, 9), False,
     {"padding": 20, "padding_mode": "circular"}),
    ("1d-replicate-big-stride", "conv1d", (1, 2, 100), (3, 2, 5), True,
     {"padding": 30, "stride": 7, "padding_mode": "replicate"}),
    ("1d-huge-padding", "conv1d", (1, 2, 40), (3, 2, 7), True, {"padding": 300, "stride": 5}),
    ("2d-same", "conv2d", (2, 3, 20, 23), (4, 3, 5, 4), True, {"padding": "same"}),
    ("2d-groups-strided-dilated-reflect", "conv2d", (1, 4, 30, 31), (6, 2, 7, 7), True,
     {"groups": 2, "stride": 2, "dilation": 2, "padding": 3, "padding_mode": "reflect"}),
    ("2d-depthwise-column-replicate", "conv2d", (1, 3, 17, 19), (3, 1, 9, 1), True,
     {"groups": 3, "padding": (4, 0), "padding_mode": "replicate"}),
    ("2d-unbatched-row-circular", "conv2d", (3, 16, 16), (2, 3, 1, 15), True,
     {"padding": (0, 7), "padding_mode": "circular"}),
    ("2d-stride-rows", "conv2d", (2, 2, 12, 13), (2, 2, 3, 3), False, {"stride": (3, 1)}),
    ("2d-k33", "conv2d", (1, 1, 40, 40), (1, 1, 33, 33), True, {"padding": 16}),
    ("2d-kernel-is-input", "conv2d", (2, 2, 6, 7), (3, 2, 6, 7), True, {}),
]


@pytest.mark.parametrize("dtype", FLOAT_AND_COMPLEX)
@pytest.mark.parametrize("case", GRID, ids=[c[0] for c in GRID])
def test_grid(case, dtype, engine, rng):
    _, op, xs, ws, bias, kwargs = case
    x, w, b = make_operands(rng, xs, ws, dtype, bias=bias)
    _check(op, x, w, b, engine=engine, **kwargs)


@pytest.mark.parametrize("dtype", ["float32", "complex128"])
def test_kernel_lengths_1_to_255(dtype, engine, rng):
    for s in (1, 2, 3, 5, 8, 16, 31, 64, 100, 127, 128, 200, 255):
        x, w, b = make_operands(rng, (1, 3, 700), (2, 3, s), dtype, bias=True)
        _check("conv1d", x, w, b, engine=engine, padding="same" if s % 2 else s // 2)


def test_non_contiguous_inputs(engine, rng):
    base, wbase, b = make_operands(rng, (2, 8, 30, 41), (6, 7, 5, 4), "float32", bias=(3,))
    w = wbase.transpose(1, 0, 2, 3)[:3, :4]                     # (3, 4, 5, 4), permuted strides
    for x in (base[:, ::2], base[:, :4, :, ::-1], base[:, 4:, 3:, ::3],
              np.asfortranarray(base[:, :4])):
        _check("conv2d", x, w, b, padding=(2, 1))
    x1 = base[0, :4, 5, ::-1]                                   # (4, 41) unbatched, reversed
    _check("conv1d", x1, w[:, :, 0], b, engine=engine, padding=2)
    x3 = base[:, ::2, 7, 1::2]                                  # (2, 4, 20), every stride odd
    _check("conv1d", x3, np.ascontiguousarray(w[:, :, 1]), b, engine=engine, padding=1,
           stride=2)


@pytest.mark.parametrize("batch_bytes", [1, 20_000, 200_000])
def test_partial_tiles_and_batches(batch_bytes, monkeypatch, rng):
    # Small batches: boxes of images, tile rows and tile columns that do not divide the tiles,
    # a last tile holding fewer outputs than the others, tiles crossing both ends of the input.
    monkeypatch.setattr(fft_module, "BATCH_BYTES", batch_bytes)
    fft_module.plan.cache_clear()
    try:
        for op, xs, ws, kwargs in [
                ("conv2d", (3, 2, 41, 37), (3, 2, 5, 6), {"padding": (2, 3), "stride": (1, 2)}),
                ("conv1d", (3, 2, 2000), (2, 2, 77), {"padding": 38, "dilation": 2}),
                ("conv2d", (2, 4, 29, 30), (4, 1, 4, 3), {"groups": 4, "padding": "same",
                                                          "padding_mode": "reflect"})]:
            x, w, b = make_operands(rng, xs, ws, "float64", bias=True)
            spec = conv.explain(op, x, w, b, algorithm="fft", **kwargs).spec
            fp = fft_module.plan(spec, x.dtype, _cpu.workspace_limit())
            (mh, mw), (th, tw) = fp.per_tile, fp.tiles
            assert th * mh > spec.p or tw * mw > spec.q, fp        # a partial last tile
            if batch_bytes < 200_000:
                assert fp.batch != (spec.n, th, tw), fp             # several batches
            _check(op, x, w, b, **kwargs)
    finally:
        fft_module.plan.cache_clear()


def test_accuracy_within_the_default_tolerance(engine, rng):
    # The bound of conv/backend/cpu/fft.py's docstring, on a small grid of fresh standard-normal
    # data: the largest error as a fraction of RTOL[dtype] * sqrt(Cg*R*S) * max|ref| (the
    # docstring's measurement over the full grid found at most 0.05 in float32 transforms).
    worst = {}
    for dtype in FLOAT_AND_COMPLEX:
        for c, s, length in [(1, 3, 20000), (1, 255, 4000), (16, 63, 2000), (64, 9, 500),
                             (4, 127, 3000)]:
            x, w, _ = make_operands(rng, (1, c, length), (c, c, s), dtype)
            out = conv.conv1d(x, w, padding="same", algorithm="fft")
            wide = np.complex128 if x.dtype.kind == "c" else np.float64
            ref = conv.conv1d(x.astype(wide), w.astype(wide), padding="same", backend="reference")
            tol = RTOL[x.dtype] * np.sqrt(c * s) * np.abs(ref).max()
            ratio = float(np.abs(out.astype(wide) - ref).max() / tol)
            worst[dtype] = max(worst.get(dtype, 0.0), ratio)
    assert all(v < 1 for v in worst.values()), worst
    # float32 transforms keep float32 (and complex64) well inside their tolerance.
    assert worst["float32"] < 0.25 and worst["complex64"] < 0.25, worst


NON_FINITE = [
    ("conv1d", (2, 3, 40), (4, 3, 5), {"padding": 3}),
    ("conv1d", (2, 3, 40), (4, 3, 5), {"padding": 3, "stride": 2, "dilation": 2}),
    ("conv1d", (2, 4, 40), (4, 2, 5), {"padding": "same", "groups": 2, "padding_mode": "reflect"}),
    ("conv2d", (2, 3, 9, 10), (4, 3, 3, 2), {"padding": (2, 1), "stride": (2, 1)}),
    ("conv2d", (1, 3, 9, 10), (6, 1, 3, 3), {"padding": 1, "groups": 3,
                                            "padding_mode": "circular"}),
]


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("case", range(len(NON_FINITE)))
def test_inf_and_nan_where_the_direct_sum_has_them(case, dtype, engine, rng):
    # A transform would spread them over the tile; fft adds their products exactly instead.
    op, xs, ws, kwargs = NON_FINITE[case]
    for bad_x, bad_w in [(1, 0), (0, 1), (2, 2), (40, 0)]:
        x, w, b = make_operands(rng, xs, ws, dtype, bias=True)
        for a, count in ((x, bad_x), (w, bad_w)):
            flat = a.reshape(-1)
            flat[rng.choice(flat.size, count, replace=False)] = rng.choice(
                [np.inf, -np.inf, np.nan], count)
        out = getattr(conv, op)(x, w, b, algorithm="fft", **kwargs).astype(np.float64)
        ref = getattr(conv, op)(x.astype(np.float64), w.astype(np.float64),
                                b.astype(np.float64), backend="reference", **kwargs)
        for kind in (np.isnan, np.isposinf, np.isneginf):
            np.testing.assert_array_equal(kind(out), kind(ref), err_msg=kind.__name__)
        finite = np.isfinite(ref)
        tol = 1e-2 if dtype == "float16" else 1e-4
        np.testing.assert_allclose(out[finite], ref[finite], rtol=tol, atol=tol)


def test_complex_non_finite_follows_pytorch(rng):
    # The complex fixup (conv/functional.py) runs the same algorithm on real parts.
    x, w, b = make_operands(rng, (2, 2, 30), (3, 2, 7), "complex64", bias=True)
    x[1, 0, 12] = complex(np.inf, 0)
    out = conv.conv1d(x, w, b, algorithm="fft", padding=3)
    touched = np.zeros(out.shape, bool)
    touched[1, :, 12 - 3:12 + 4] = True                 # every window over x[1, 0, 12]
    assert np.isnan(out.real[touched]).all() and np.isnan(out.imag[touched]).all()
    x[1, 0, 12] = 0
    assert_matches_reference("conv1d", x, w, b, backend="cpu", algorithm="fft", padding=3)


@pytest.mark.parametrize("dtype", ["float32", "complex64", "float64"])
def test_numpy_fft_without_scipy(dtype, monkeypatch, rng):
    monkeypatch.setattr(fft_module, "_use_scipy", False)
    transforms, kwargs = fft_module._transforms(2)
    assert transforms is np.fft and kwargs == {}
    x, w, b = make_operands(rng, (2, 4, 25, 26), (6, 2, 5, 3), dtype, bias=True)
    _check("conv2d", x, w, b, groups=2, padding=(2, 1), stride=(2, 1))
    x, w, b = make_operands(rng, (1, 3, 900), (2, 3, 101), dtype, bias=True)
    _check("conv1d", x, w, b, padding="same")


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64", "uint8"])
def test_integers_are_refused(dtype):
    x, w, _ = make_operands("fft-int", (1, 2, 9), (3, 2, 3), dtype)
    message = f"^{re.escape(algorithm_refusal('fft', dtype))}$"
    with pytest.raises(TypeError, match=message):
        conv.explain("conv1d", x, w, algorithm="fft")
    with pytest.raises(TypeError, match=message):
        conv.conv1d(x, w, algorithm="fft")


def test_explain_reports_tiles_and_workspace(rng):
    x, w, b = make_operands(rng, (1, 16, 8000), (16, 16, 127), "float32", bias=True)
    plan = conv.explain("conv1d", x, w, b, padding="same", algorithm="fft")
    spec = plan.spec
    nbytes, chunked = chunks.plan_workspace(spec, "fft", x.dtype, True, _cpu.numba_threads(),
                                            _cpu.workspace_limit())
    assert (plan.workspace_bytes, plan.chunks) == (nbytes, chunked) and chunked is None
    fp = fft_module.plan(spec, x.dtype, _cpu.workspace_limit())
    assert plan.workspace_bytes == fp.workspace > 0
    assert re.search(r"FFT tiles of \d+ \(float32\), \d+ outputs each", plan.reason), plan.reason


def test_chunked_under_a_small_cap(rng):
    # The weight spectrum alone (32 x 32 kernels of 127 taps, 1.25x its size while it is made)
    # exceeds 512 KiB: chunks that split the kernel, each within the cap.
    x, w, b = make_operands(rng, (1, 32, 600), (32, 32, 127), "float32", bias=True)
    old = _cpu.workspace_limit()
    try:
        conv.set_workspace_limit(512 << 10, "cpu")
        plan = conv.explain("conv1d", x, w, b, padding=63, algorithm="fft")
        assert plan.chunks is not None and plan.chunks.kernel_cols < 127, plan
        assert plan.workspace_bytes <= 512 << 10, plan
        _check("conv1d", x, w, b, padding=63)
    finally:
        _cpu.set_workspace_limit(old)


def test_weight_spectrum_is_reused_only_for_the_same_weights(engine, rng):
    x, w, b = make_operands(rng, (1, 4, 3000), (4, 4, 101), "float32", bias=True)
    first = _check("conv1d", x, w, b, engine=engine, padding=50)
    np.testing.assert_array_equal(_check("conv1d", x, w, b, padding=50), first)
    w[2, 1, 7] += 1.0                    # changed in place: the cached spectrum is stale
    _check("conv1d", x, w, b, padding=50)
    w2 = make_operands(rng, None, (4, 4, 101), "float32")[1]  # new weights, same shape
    _check("conv1d", x, w2, b, padding=50)


def test_plans_fit_the_cap_they_were_made_for():
    for xs, ws, limit in [((1, 16, 8000), (16, 16, 127), 64 << 20), ((1, 16, 8000), (16, 16, 127),
                                                                   1 << 20),
                          ((2, 8, 60, 70), (8, 8, 9, 9), 4 << 20), ((1, 3, 500), (2, 3, 5), 4096)]:
        op = "conv1d" if len(xs) == 3 else "conv2d"
        spec = make_spec(op, np.empty(xs, np.float32), np.empty(ws, np.float32), None, 1,
                         "same", 1, 1, "zeros")
        fp = fft_module.plan(spec, np.dtype(np.float32), limit)
        assert fp.workspace <= limit, (xs, ws, limit, fp)


def test_autotune_picks_fft_for_a_long_kernel(tmp_path, monkeypatch, rng):
    # The long-kernel case: fft measured 2-3x faster than implicit here (2 cores), so
    # the autotuner's timing picks it; the tuned call's result is the reference's.
    from conv import autotune
    monkeypatch.setenv("CONV_CACHE_DIR", str(tmp_path))
    autotune.clear_memory()
    conv.set_autotune(True)
    try:
        x, w, b = make_operands(rng, (1, 16, 8000), (16, 16, 127), "float32", bias=True)
        plan = conv.explain("conv1d", x, w, b, padding="same")
        assert "fft " in plan.reason, plan.reason                # fft was timed
        out = conv.conv1d(x, w, b, padding="same")
        assert_matches_reference("conv1d", x, w, b, backend="cpu", algorithm=plan.algorithm,
                                 padding="same")
        np.testing.assert_array_equal(out, conv.conv1d(x, w, b, padding="same",
                                                       algorithm=plan.algorithm))
        if plan.algorithm != "fft":
            pytest.xfail(f"timing on a busy machine chose {plan.algorithm}: {plan.reason}")
    finally:
        conv.set_autotune(None)
        autotune.clear_memory()


def test_structural_zeros_are_held_to_the_tiles_scale():
    # The case a property test found (tests/_helpers.py, TRANSFORM_ALGORITHMS): the dilated taps
    # skip the only input element, so both outputs are exactly 0; fft leaves rounding of the
    # tile's products there, within the tolerance at the floor max|x| * max|w|, not at max|ref|.
    x, w, _ = make_operands(0, (1, 1), (1, 1, 2), "float32")
    out = assert_matches_reference("conv1d", x, w, None, backend="cpu", algorithm="fft",
                                   padding=2, dilation=3)
    assert np.abs(out).max() <= 1e-6 * np.abs(x).max() * np.abs(w).max()


# fft_lanes.py: channel counts around whole vectors (16 float32 / 8 float64 lanes on AVX-512, 8 /
# 4 on AVX2), more output than input channels and fewer, batches, strides and dilations, tiles
# crossing both ends of the input, the padding modes its padded copy serves, one output.
LANES_GRID = [
    ("c1-k1-kernel40", (3, 1, 500), (1, 1, 40), {"padding": 20}),
    ("c17-k33", (2, 17, 300), (33, 17, 21), {"padding": 10}),
    ("c40-k8-stride2-dilation2", (1, 40, 1000), (8, 40, 63), {"padding": 30, "stride": 2,
                                                              "dilation": 2}),
    ("c9-one-output", (5, 9, 64), (5, 9, 64), {}),
    ("c16-long-kernel-same", (1, 16, 8000), (16, 16, 127), {"padding": "same"}),
    ("c5-reflect-batch", (4, 5, 333), (7, 5, 17), {"padding": 8, "padding_mode": "reflect"}),
    ("c3-circular-stride3", (2, 3, 250), (4, 3, 31), {"padding": 15, "stride": 3,
                                                       "padding_mode": "circular"}),
    ("c2-huge-padding", (1, 2, 40), (3, 2, 7), {"padding": 300, "stride": 5}),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", LANES_GRID, ids=[c[0] for c in LANES_GRID])
def test_lanes_engine_grid(case, dtype, rng):
    _, xs, ws, kwargs = case
    x, w, b = make_operands(rng, xs, ws, dtype, bias=True)
    _check("conv1d", x, w, b, engine="lanes", **kwargs)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("points", [1, 2, 4, 8, 64, 512])
def test_lanes_transform_is_numpy_fft(points, dtype, rng):
    # _cfft on rows [re | im] of `half` lanes: the complex FFT of each lane (inverse: unscaled,
    # conjugate twiddles), against numpy.fft in float64.
    from conv.backend.cpu import fft_lanes
    lane = fft_lanes.lanes(np.dtype(dtype))
    half = 2 * lane
    tw_r, tw_i = fft_lanes.twiddles(2 * points, np.dtype(dtype))
    z = (rng.standard_normal((points, half)) + 1j * rng.standard_normal((points, half)))
    for inverse in (False, True):
        a = np.concatenate([z.real, z.imag], axis=1).astype(dtype).reshape(-1)
        b = np.full_like(a, np.nan)
        in_b = fft_lanes._cfft(a, b, points, half, lane, tw_r, tw_i, 2 * points, inverse)
        rows = (b if in_b else a).reshape(points, 2 * half).astype(np.float64)
        got = rows[:, :half] + 1j * rows[:, half:]
        want = np.fft.ifft(z, axis=0) * points if inverse else np.fft.fft(z, axis=0)
        eps = np.finfo(dtype).eps
        assert np.abs(got - want).max() <= 8 * eps * np.log2(2 * points) * np.abs(want).max()


def test_lanes_mixing_weights_are_kept_only_with_the_kept_spectrum(rng):
    # fft_lanes keeps its mixing form of the weights only beside fft.py's kept spectrum: weights
    # with a non-finite tap (whose spectrum is not kept) drop it.
    from conv.backend.cpu import fft_lanes
    x, w, b = make_operands(rng, (1, 4, 900), (4, 4, 65), "float32", bias=True)
    _check("conv1d", x, w, b, engine="lanes", padding=32)
    kept = fft_module._last_weights.entry
    assert kept is not None and fft_lanes._last_mix.entry[0] is kept[2]
    w[1, 2, 3] = np.inf
    conv.conv1d(x, w, b, padding=32, algorithm="fft")
    assert fft_lanes._last_mix.entry is None


def test_lanes_plans_fall_back_where_they_do_not_fit(rng):
    # Under a small cap fft_lanes' mixing weights and task buffers do not fit: the pocketfft
    # batches (or their chunks) run, within the cap, with the reference's result.
    x, w, b = make_operands(rng, (1, 32, 2000), (32, 32, 127), "float32", bias=True)
    spec = conv.explain("conv1d", x, w, b, padding=63, algorithm="fft").spec
    roomy = fft_module.plan(spec, x.dtype, 256 << 20)
    assert roomy.engine == "lanes" and roomy.workspace <= 256 << 20
    length = roomy.lengths[1]
    assert length & (length - 1) == 0 and length >= 127, roomy
    assert fft_module.plan(spec, x.dtype, 1 << 20).engine == "pocketfft"
    old = _cpu.workspace_limit()
    try:
        conv.set_workspace_limit(1 << 20, "cpu")
        plan = conv.explain("conv1d", x, w, b, padding=63, algorithm="fft")
        assert plan.workspace_bytes <= 1 << 20, plan
        _check("conv1d", x, w, b, padding=63)
    finally:
        _cpu.set_workspace_limit(old)


def test_explain_names_the_lanes_engine(rng):
    x, w, b = make_operands(rng, (1, 16, 8000), (16, 16, 63), "float32", bias=True)
    plan = conv.explain("conv1d", x, w, b, padding="same", algorithm="fft")
    assert re.search(r"FFT tiles of \d+ \(float32\), \d+ outputs each, \d+ per image, \d+ per "
                     r"task, transforms in vectors across channels$", plan.reason), plan.reason


@pytest.mark.skipif(os.environ.get("CONV_TEST_CHILD") == "1", reason="already the AVX2 child run")
def test_lanes_engine_on_the_avx2_variant_in_a_child_process():
    # Hosts without AVX-512 run 8 float32 (4 float64) lanes and another micro-kernel shape; numba
    # compiles them here when told the target is a Haswell.
    run_tests_on_avx2(__file__, "lanes_engine_grid or lanes_transform or inf_and_nan")
