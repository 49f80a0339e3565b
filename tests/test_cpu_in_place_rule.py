"""cpu:implicit reads the caller's input in place only where its phase layout IS the input, and
never reads past the input: the rule (`layout_is_input`) and the read bound
(`last_element_read`) checked exhaustively over small shapes against explicit computations,
plus the reproducers of the wrong results it once gave (padding and stride silently ignored).
"""
import itertools

import numba
import numpy as np
import pytest

import conv
import conv.backend.cpu as _cpu
import conv.backend.cpu.implicit as _cpu_implicit
from conv._spec import make_spec
from tests._helpers import assert_matches_reference, make_operands, operand_rng

MODES = ("zeros", "reflect", "replicate", "circular")


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    monkeypatch.setattr(_cpu, "_new_output", lambda shape, dtype: np.full(shape, np.nan, dtype))


def _spec_or_none(op, x_shape, w_shape, stride, padding, dilation, mode):
    try:
        return make_spec(op, np.empty(x_shape, np.float32), np.empty(w_shape, np.float32), None,
                         stride, padding, dilation, 1, mode)
    except (ValueError, TypeError):
        return None


# Wide columns per micro-tile of float32: in-place reads need lengths near multiples of it.
NR = _cpu_implicit.tile_columns(np.dtype(np.float32))


def _conv1d_specs(channels=1):
    lengths = sorted(set(range(1, 17)) | set(range(NR - 4, NR + 5)) | {2 * NR - 1, 2 * NR})
    # Every zero padding up to 13 (what makes a padded, stride-split plane as long as the input);
    # the other modes pad first, so the rule refuses them once any padding is there: a little.
    paddings = [(p, "zeros") for p in range(14)] + [(p, m) for p in range(3) for m in MODES[1:]]
    for length, taps, stride, dilation, (padding, mode) in itertools.product(
            lengths, range(1, 5), range(1, 4), range(1, 4), paddings):
        spec = _spec_or_none("conv1d", (1, channels, length), (1, channels, taps), stride,
                             padding, dilation, mode)
        if spec is not None:
            yield spec


def _conv2d_specs(count=1500, seed=20261201):
    rng = operand_rng(seed)           # draws shapes, not data
    found = 0
    while found < count:
        h = int(rng.integers(1, 5))
        w = int(rng.choice([*range(1, 7), *range(NR - 2, NR + 3)]))
        r, s = rng.integers(1, 4, 2)
        stride = tuple(int(v) for v in rng.integers(1, 4, 2))
        dilation = tuple(int(v) for v in rng.integers(1, 3, 2))
        padding = tuple(int(v) for v in rng.integers(0, 4, 2))
        spec = _spec_or_none("conv2d", (2, 2, h, w), (3, 2, r, s), stride, padding, dilation,
                             MODES[rng.integers(4)])
        if spec is not None:
            found += 1
            yield spec


def _layout_equals_input(spec, layout) -> bool:
    """Explicitly: fill the layout from an input of distinct values and compare element-wise."""
    x = (np.arange(spec.n * spec.c * spec.h * spec.w, dtype=np.float64) + 1).reshape(
        spec.n, spec.c, spec.h, spec.w)
    if int(np.prod(layout.shape)) != x.size:
        return False
    dst = np.full(layout.shape, np.nan)
    layout.fill(x, dst)
    return bool(np.array_equal(dst.reshape(-1), x.reshape(-1)))


def _last_read_by_enumeration(spec, plan, nr) -> int:
    """Every load of every task: (image, group) base + col_stride*tile*NR + red_off[kk] and the
    col_stride*NR elements the kernel's vector loads cover from there."""
    length = (spec.p - 1) * plan.layout.wph + spec.q
    tiles = np.arange(-(-length // nr))
    bases = np.array([(img * spec.c + g * spec.c_per_group) * plan.channel_stride
                      for img in range(spec.n) for g in range(spec.groups)])
    starts = (bases[:, None, None] + plan.col_stride * nr * tiles[None, :, None]
              + plan.red_off[None, None, :])
    return int(starts.max()) + plan.col_stride * nr - 1


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("specs", ["conv1d", "conv2d"])
def test_rule_agrees_with_explicit_layout_and_bounds(specs, dtype):
    nr = _cpu_implicit.tile_columns(np.dtype(dtype))
    threads = numba.get_num_threads()
    checked = rules = in_place = 0
    for spec in (_conv1d_specs() if specs == "conv1d" else _conv2d_specs()):
        if spec.is_empty:
            continue
        plan = _cpu_implicit._plan(spec, nr, threads)
        rule = _cpu_implicit.layout_is_input(spec, plan.layout)
        equal = _layout_equals_input(spec, plan.layout)
        # Sound everywhere; exact for zero padding (a zero never equals an input value here).
        # With a materialised padding mode the layout can equal the input by coincidence (x of
        # width 2, replicate padding 1, stride 2: [a, a, b, b] -> [a, b]); the rule need not see it.
        assert (rule == equal) if spec.padding_mode == "zeros" else (equal or not rule), spec
        assert plan.last_read == _last_read_by_enumeration(spec, plan, nr), spec
        assert plan.in_place == (rule and plan.last_read < plan.total), spec
        checked += 1
        rules += rule
        in_place += plan.in_place
    # The grid covers both answers of the rule, and in-place reads.
    assert checked > 1000 and rules > 10 and in_place > 0, (checked, rules, in_place)


def test_every_small_conv1d_that_looks_like_its_input_is_right():
    # The configurations the old shape-only rule read in place: the padded, stride-split plane
    # has the raw input's size. Each is run and compared with the reference.
    rng = operand_rng("looks-like-input")
    nr = _cpu_implicit.tile_columns(np.dtype(np.float32))
    count = 0
    for spec in _conv1d_specs(channels=2):
        plan = _cpu_implicit._plan(spec, nr, numba.get_num_threads())
        if spec.is_empty or plan.layout.shape[2:] != (1, spec.h, spec.w):
            continue
        x, w, _ = make_operands(rng, (1, spec.c, spec.w), (1, spec.c, spec.s), "float32")
        assert_matches_reference("conv1d", x, w, None, backend="cpu", algorithm="implicit",
                                 stride=spec.stride[1], padding=spec.pad[2],
                                 dilation=spec.dilation[1], padding_mode=spec.padding_mode)
        count += 1
    assert count > 100


def test_reproducer_padding_and_stride_not_ignored():
    x = np.arange(1, 34, dtype=np.float64).reshape(1, 1, 33)
    w = np.array([[[1.0, 0.0]]])
    out = conv.conv1d(x, w, stride=2, padding=16, dilation=2, algorithm="implicit")
    expected = np.zeros(32)
    expected[8:25] = np.arange(1, 34, 2)          # PyTorch's result
    np.testing.assert_array_equal(out.reshape(-1), expected)


@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    ((1, 1, 65), (1, 1, 2), dict(stride=2, padding=32, dilation=2)),
    ((1, 1, 24), (1, 1, 1), dict(stride=2, padding=12)),
    ((3, 8, 7, 7), (16, 1, 3, 4), dict(stride=2, padding=3, dilation=2, groups=8)),
])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_reproducers_match_the_reference(x_shape, w_shape, kwargs, dtype, rng):
    op = "conv1d" if len(x_shape) == 3 else "conv2d"
    x, w, b = make_operands(rng, x_shape, w_shape, dtype, bias=True)
    for algorithm in ("auto", "implicit"):
        assert_matches_reference(op, x, w, b, backend="cpu", algorithm=algorithm, **kwargs)
