"""cpu:implicit, the register-tiled implicit GEMM: the edges of its tiling (partial panels and tiles,
task splits, the in-place and copied input layouts, the zero slack), with outputs poisoned so an
element it fails to write shows up as NaN."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import conv
import conv.backend.cpu as _cpu
import conv.backend.cpu.implicit as _cpu_implicit
import conv.backend.cpu.layout
from tests._helpers import (
    AVX2_CHILD_ENV,
    assert_matches_reference,
    implicit_refusal,
    make_operands,
    run_tests_on_avx2,
)

MR = _cpu_implicit.MR
NR32 = _cpu_implicit.tile_columns(np.float32)


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    def nan_filled(shape, dtype):
        return np.full(shape, np.nan, dtype)
    monkeypatch.setattr(_cpu, "_new_output", nan_filled)


# (x shape, w shape, kwargs): each names the tiling edge it exercises.
CASES = {
    "one-row-panel": ((1, 3, 5, 7), (1, 3, 3, 3), {}),
    "partial-panel": ((2, 5, 6, 9), (MR + 3, 5, 3, 3), {"padding": 1}),
    "many-panels-split": ((1, 4, 6, 6), (MR * 8 * 3 + 1, 4, 3, 3), {"padding": 1}),
    "tile-crosses-rows": ((3, 4, 9, 11), (10, 4, 2, 5), {"padding": (1, 2)}),
    "pointwise-in-place": ((2, 6, 4, NR32 // 4), (9, 6, 1, 1), {}),         # L % NR == 0: no copy
    "pointwise-partial-tile": ((2, 6, 5, 7), (9, 6, 1, 1), {}),
    "pointwise-whole-tiles": ((2, 6, 13, 11), (9, 6, 1, 1), {}),          # tiles cross rows
    "column-kernel-padded": ((1, 5, 9, 3 * NR32 + 5), (7, 5, 3, 1), {"padding": (1, 2)}),
    "pointwise-strided": ((2, 6, 9, 10), (9, 6, 1, 1), {"stride": 2}),
    "strided-dilated": ((2, 3, 17, 19), (7, 3, 3, 3), {"stride": (2, 3), "dilation": (2, 1),
                                                       "padding": 2}),
    "dilation-multiple-of-stride": ((1, 2, 15, 15), (5, 2, 3, 3), {"stride": 2, "dilation": 2}),
    "groups": ((2, 12, 8, 8), (18, 4, 3, 3), {"groups": 3, "padding": 1}),
    "depthwise-tile-blocks": ((2, 3, 41, 67), (3, 1, 3, 3), {"groups": 3, "padding": 1}),
    "channel-multiplier": ((1, 3, 45, 61), (6, 1, 5, 5), {"groups": 3, "stride": 2}),
    "long-reduction": ((1, 300, 4, 4), (5, 300, 3, 3), {"padding": 1}),
    "reflect": ((2, 3, 6, 7), (4, 3, 3, 3), {"padding": 2, "padding_mode": "reflect"}),
    "circular-strided": ((1, 3, 8, 9), (4, 3, 3, 2), {"padding": (2, 1), "stride": 2,
                                                      "padding_mode": "circular"}),
    "stride2-odd-width": ((2, 3, 9, 13), (5, 3, 3, 3), {"stride": 2, "padding": 1}),
    "conv1d-stride2-in-place": ((3, 4, 8 * NR32 + 2), (5, 4, 3), {"stride": 2}),
    "conv1d-stride2-dilated": ((2, 4, 301), (5, 4, 3), {"stride": 2, "dilation": 3}),
    # N*G = 64 (image, group) pairs: one task per pair, laying out its own channels.
    "grouped-per-task": ((2, 64, 7, 9), (64, 2, 3, 3), {"groups": 32, "padding": 1}),
    "grouped-per-task-strided": ((2, 64, 13, 14), (96, 2, 3, 3), {"groups": 32, "stride": 2,
                                                                 "padding": 1}),
    "grouped-per-task-split": ((2, 64, 10, 12), (64, 2, 2, 3), {"groups": 32, "stride": (2, 3),
                                                               "padding": 1,
                                                               "padding_mode": "reflect"}),
    "depthwise-per-task": ((2, 32, 9, 10), (32, 1, 3, 3), {"groups": 32, "dilation": 2,
                                                           "padding": 2}),
    "conv1d-long": ((3, 4, 1000), (6, 4, 7), {"dilation": 3, "padding": "same"}),
    "conv1d-grouped-per-task": ((2, 64, 3 * NR32 + 9), (96, 2, 3), {"groups": 32, "padding": 1}),
    "one-output": ((1, 2, 3, 3), (3, 2, 3, 3), {}),
}


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("name", list(CASES))
def test_tiling_edges(name, dtype, rng):
    xs, ws, kwargs = CASES[name]
    op = "conv1d" if len(xs) == 3 else "conv2d"
    x, w, b = make_operands(rng, xs, ws, dtype, bias=True)
    copies = (x.copy(), w.copy(), b.copy())
    assert_matches_reference(op, x, w, b, backend="cpu", algorithm="implicit", **kwargs)
    assert_matches_reference(op, x, w, None, backend="cpu", algorithm="implicit", **kwargs)
    for got, before in zip((x, w, b), copies):
        np.testing.assert_array_equal(got, before)


@pytest.fixture
def packing(monkeypatch):
    """Set whether plans pack their tiles (packs() decides by size and vector width otherwise);
    plans made under it are dropped on both sides, so no other test sees them."""
    def force(on: bool):
        monkeypatch.setattr(_cpu_implicit, "packs", lambda crs, col_stride: on or col_stride == 2)
        _cpu_implicit._plan.cache_clear()
    yield force
    _cpu_implicit._plan.cache_clear()


@pytest.mark.parametrize("pack", [True, False], ids=["packed", "unpacked"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(CASES))
def test_tiling_edges_packed_and_unpacked(name, dtype, pack, packing, rng):
    # Both ways on every host: the rule packs by size on AVX2 only. (Stride-2 tiles that keep
    # their columns whole are packed either way: it deinterleaves them.)
    packing(pack)
    xs, ws, kwargs = CASES[name]
    op = "conv1d" if len(xs) == 3 else "conv2d"
    x, w, b = make_operands(rng, xs, ws, dtype, bias=True)
    assert_matches_reference(op, x, w, b, backend="cpu", algorithm="implicit", **kwargs)


def test_packing_changes_no_bit(packing, rng):
    # The packed tile holds the values the micro-kernel would load, summed in the same order.
    x, w, b = make_operands(rng, (2, 40, 11, 13), (MR * 5 + 1, 40, 3, 3), "float32", bias=True)
    results = []
    for pack in (True, False):
        packing(pack)
        results.append(conv.conv2d(x, w, b, padding=1, algorithm="implicit"))
    np.testing.assert_array_equal(results[0], results[1])


def test_pack_rule_bounds():
    crs_per_byte = 1 / (_cpu_implicit.NV * _cpu_implicit._VECTOR_BYTES)
    small = int(_cpu_implicit.PACK_MIN_BYTES * crs_per_byte) - 1
    large = int(_cpu_implicit.PACK_MAX_BYTES * crs_per_byte) + 1
    avx2 = _cpu_implicit._VECTOR_BYTES == 32
    assert _cpu_implicit.packs(small, 2) and _cpu_implicit.packs(large, 2)
    assert not _cpu_implicit.packs(small, 1) and not _cpu_implicit.packs(large, 1)
    assert _cpu_implicit.packs(small + 1, 1) == avx2 == _cpu_implicit.packs(large - 1, 1)


@pytest.fixture
def into_output(monkeypatch):
    """Set whether plans store whole tiles straight into the output (stores_into_output()
    decides by shape otherwise); plans made under it are dropped on both sides."""
    def force(on: bool):
        rule = _cpu_implicit.stores_into_output
        monkeypatch.setattr(_cpu_implicit, "stores_into_output",
                            lambda spec, layout: on and rule(spec, layout))
        _cpu_implicit._plan.cache_clear()
    yield force
    _cpu_implicit._plan.cache_clear()


@pytest.mark.parametrize("name", list(CASES))
def test_storing_into_the_output_changes_no_bit(name, into_output, rng):
    # Whole tiles stored by the micro-kernel with the bias, or through the task's buffer and its
    # copy: the same sums, the bias added after them either way. Both are the reference's.
    xs, ws, kwargs = CASES[name]
    op = "conv1d" if len(xs) == 3 else "conv2d"
    x, w, b = make_operands(rng, xs, ws, "float32", bias=True)
    results = []
    for on in (True, False):
        into_output(on)
        results.append(assert_matches_reference(op, x, w, b, backend="cpu",
                                                algorithm="implicit", **kwargs))
    np.testing.assert_array_equal(results[0], results[1])


def test_into_output_rule():
    # Every wide column is an output exactly where a plane has one output row or the kernel is
    # one column wide (then ceil(Wp / sw) wide columns and outputs per row).
    from conv._spec import make_spec
    from conv.backend.cpu.layout import phase_layout

    def rule(xs, ws, stride, padding):
        op = "conv1d" if len(xs) == 3 else "conv2d"
        spec = make_spec(op, np.zeros(xs, np.float32), np.zeros(ws, np.float32), None, stride,
                         padding, 1, 1, "zeros")
        layout = phase_layout(spec, split_columns=not _cpu_implicit._deinterleave(spec))
        every = layout.wph == spec.q or spec.p == 1
        assert _cpu_implicit.stores_into_output(spec, layout) == every
        return every
    assert rule((1, 3, 100), (4, 3, 5), 3, 2)                        # conv1d
    assert rule((1, 3, 9, 10), (4, 3, 1, 1), 1, 0)                   # 1x1
    assert rule((1, 3, 9, 11), (4, 3, 1, 1), 2, 1)                   # 1x1, strided, padded
    assert rule((1, 3, 9, 11), (4, 3, 3, 1), 1, 1)                   # a column kernel, padded
    assert not rule((1, 3, 9, 11), (4, 3, 3, 3), 1, 1)
    assert not rule((1, 3, 9, 11), (4, 3, 1, 2), 1, 0)


@pytest.mark.parametrize("name", ["pointwise-in-place", "conv1d-stride2-in-place"])
def test_in_place_cases_read_the_input_without_a_copy(name, rng, monkeypatch):
    def no_copy(*args):
        raise AssertionError("the input was copied")
    monkeypatch.setattr(conv.backend.cpu.layout.PhaseLayout, "fill", no_copy)
    xs, ws, kwargs = CASES[name]
    op = "conv1d" if len(xs) == 3 else "conv2d"
    x, w, _ = make_operands(rng, xs, ws, "float32")
    assert_matches_reference(op, x, w, None, backend="cpu", algorithm="implicit", **kwargs)


@pytest.mark.parametrize("name", [n for n in CASES if "per-task" in n])
def test_per_task_cases_take_the_grouped_path(name, rng):
    import numba

    from conv._spec import make_spec
    if 4 * numba.get_num_threads() > 64:
        pytest.skip("more than 16 numba threads: 64 (image, group) pairs do not take the path")
    xs, ws, kwargs = CASES[name]
    x, w, _ = make_operands(rng, xs, ws, "float32")
    spec = make_spec("conv1d" if len(xs) == 3 else "conv2d", x, w, None,
                     kwargs.get("stride", 1), kwargs.get("padding", 0),
                     kwargs.get("dilation", 1), kwargs["groups"],
                     kwargs.get("padding_mode", "zeros"))
    assert _cpu_implicit._plan(spec, NR32, numba.get_num_threads()).grouped


def test_read_only_input_read_in_place(rng):
    x, w, _ = make_operands(rng, (2, 6, 4, NR32 // 4), (9, 6, 1, 1), "float32")
    x.flags.writeable = False
    out = assert_matches_reference("conv2d", x, w, None, backend="cpu", algorithm="implicit")
    assert not np.shares_memory(out, x)


def test_non_contiguous_views(rng):
    base, w, _ = make_operands(rng, (2, 8, 12, 40), (5, 4, 3, 3), "float32")
    for x in (base[:, ::2], base[:, :4, :, ::-1], np.asfortranarray(base[:, 4:])):
        assert_matches_reference("conv2d", x, w, None, backend="cpu", algorithm="implicit",
                                 padding=1)


@pytest.mark.parametrize("dtype", ["complex64", "int32"])
def test_refuses_complex_and_integer(dtype, rng):
    x, _, _ = make_operands(rng, (1, 2, 5, 5), None, dtype)
    with pytest.raises(TypeError, match=re.escape(implicit_refusal(dtype))):
        conv.conv2d(x, x[:1], backend="cpu", algorithm="implicit")


def test_auto_picks_implicit_or_winograd_for_dense_float(rng):
    # Winograd or the implicit GEMM, whichever the dispatch table's nearest case measured
    # faster; stride 2, which Winograd does not compute, leaves implicit.
    x, w, _ = make_operands(rng, (1, 64, 16, 16), (64, 64, 3, 3), "float32")
    assert conv.explain("conv2d", x, w, padding=1).algorithm in ("implicit", "winograd")
    assert conv.explain("conv2d", x, w, padding=1, stride=2).algorithm == "implicit"


def test_tile_shape_fits_the_vector_registers():
    registers = 32 if _cpu_implicit._VECTOR_BYTES == 64 else 16
    assert MR * _cpu_implicit.NV + _cpu_implicit.NV + 1 <= registers


@pytest.mark.skipif(os.environ.get("CONV_TEST_CHILD") == "1", reason="already the AVX2 child run")
def test_avx2_variant_in_a_child_process():
    # The 256-bit variant (4 x 3 tiles) is what hosts without AVX-512 run; numba compiles it here
    # when told the target is a Haswell, so its tiling edges are checked on this machine too.
    code = ("import conv.backend.cpu.implicit as m; "
            "assert (m._VECTOR_BYTES, m.MR, m.NV) == (32, 4, 3), (m._VECTOR_BYTES, m.MR, m.NV)")
    subprocess.run([sys.executable, "-c", code], env=dict(os.environ, **AVX2_CHILD_ENV),
                   check=True)
    run_tests_on_avx2(__file__, "tiling_edges")


def test_packing_blocks_are_bounded_and_counted(monkeypatch):
    # A deinterleaved tile is always packed, so columns are kept whole only where its block fits
    # PACK_MAX_BYTES; and the workspace estimate counts a block (and its offsets) per thread.
    import numba

    from conv._spec import make_spec
    from conv.backend.cpu import chunks
    per_row = _cpu_implicit.NV * _cpu_implicit._VECTOR_BYTES
    most = _cpu_implicit.PACK_MAX_BYTES // per_row                # rows of the largest block
    for channels, whole in ((most // 3, True), (most // 3 + 1, False)):
        x = np.zeros((1, channels, 64), np.float32)
        w = np.zeros((8, channels, 3), np.float32)
        spec = make_spec("conv1d", x, w, None, 2, 0, 1, 1, "zeros")
        assert _cpu_implicit._deinterleave(spec) == whole, channels
    x = np.zeros((1, 64, 2048), np.float32)
    w = np.zeros((64, 64, 3), np.float32)
    spec = make_spec("conv1d", x, w, None, 2, 0, 1, 1, "zeros")
    threads = numba.get_num_threads()
    assert _cpu_implicit._plan(spec, NR32, threads).pack

    def estimate():
        return chunks._algorithm_workspace(spec, "implicit", np.dtype(np.float32), True, threads)
    packing = estimate()
    monkeypatch.setattr(_cpu_implicit, "packs", lambda crs, col_stride: False)
    assert packing - estimate() == threads * (_cpu_implicit.packed_tile_bytes(64 * 3) + 8 * 64 * 3)


def test_short_reductions_run_in_tasks_of_few_panels(rng):
    # A short reduction (crs <= SHORT_REDUCTION) caps a task at SHORT_PANELS panels (few output
    # rows written at once), a long one at PANELS; either way the result is the reference's.
    import numba

    from conv._spec import make_spec
    threads = numba.get_num_threads()
    for (c, taps), cap in (((1, 10), _cpu_implicit.SHORT_PANELS), ((3, 49), _cpu_implicit.PANELS)):
        x = np.zeros((1, c, 4000), np.float32)
        w = np.zeros((512, c, taps), np.float32)
        spec = make_spec("conv1d", x, w, None, 5, 0, 1, 1, "zeros")
        plan = _cpu_implicit._plan(spec, NR32, threads)
        assert plan.panels_per_task <= cap and (cap == _cpu_implicit.SHORT_PANELS
                                                or plan.panels_per_task > 4), (c, taps)
    for dtype in ("float32", "float64"):
        x, w, b = make_operands(rng, (2, 1, 4003), (200, 1, 10), dtype, bias=True)
        assert_matches_reference("conv1d", x, w, b, backend="cpu", algorithm="implicit", stride=5)
