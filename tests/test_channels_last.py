"""PyTorch tensors in, PyTorch's memory format out (issue 16): a channels_last input or weight
gives a channels_last result, with PyTorch's strides to the last size-1 dimension.

The rule (conv/functional.py, above _torch_operand_layouts) was read from PyTorch's source and
probed on torch 2.13 CPU; every case here compares our strides with what the installed PyTorch
returns for the same tensors, and our values with the float64 reference:

* test_stride_rule_*: c10's is_channels_last_strides_2d as conv._arrays.suggests_channels_last,
  on plain tuples (no PyTorch needed), its ambiguous cases included;
* test_memory_format_is_pytorchs: a table of layouts (NHWC, sliced NHWC views, permuted conv1d
  weights, unbatched views, ambiguous size-1 strides, broadcast strides) x ops, groups, kernels,
  padding modes, dtypes;
* test_random_layouts_match_pytorch: random strided layouts of both operands (permuted, sliced,
  arbitrary size-1 strides), the strides PyTorch returns;
* the modules, the NumPy results that stay C-contiguous, and a CUDA variant (marked gpu) for the
  cupy and numba backends on device="cuda" tensors, which follows CPU PyTorch's strides.
"""
from __future__ import annotations

import numpy as np
import pytest

import conv
from conv import _gpu_arrays
from conv._arrays import (
    channels_last_strides,
    element_strides_of,
    is_channels_last_contiguous,
    is_contiguous_strides,
    suggests_channels_last,
)
from conv.plan import backend_availability
from tests._helpers import assert_output_matches_reference, make_operands, operand_rng

pytestmark = pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel lengths")


def _torch():
    return pytest.importorskip("torch", reason="PyTorch is not installed: PyTorch's memory "
                                               "formats cannot be compared")


# --- the stride rule on tuples --------------------------------------------------------------

# (shape, element strides, suggests channels_last, why)
STRIDE_RULE = [
    ((2, 4, 6, 6), (144, 36, 6, 1), False, "NCHW contiguous"),
    ((2, 4, 6, 6), (144, 1, 24, 4), True, "NHWC"),
    ((2, 4, 6, 6), (288, 2, 48, 8), True, "NHWC sliced along C: not dense, still NHWC order"),
    ((2, 4, 6, 6), (144, 1, 4, 24), False, "NWHC: W slower than H"),
    ((2, 4, 6, 6), (4, 1, 48, 8), False, "HWNC: the batch is not the slowest"),
    ((2, 4, 6, 6), (36, 0, 6, 1), False, "channels broadcast (stride 0): NCHW by convention"),
    ((3, 4, 6, 6), (0, 1, 24, 4), False, "batch broadcast: stride 0 under the H*W*C span"),
    ((0, 4, 6, 6), (144, 1, 24, 4), False, "a zero-size dimension"),
    ((2, 4, 0, 6), (0, 1, 24, 4), False, "a zero-size dimension"),
    ((2, 1, 1, 1), (1, 1, 1, 1), False, "N111 contiguous: ambiguous, NCHW"),
    ((2, 1, 1, 1), (5, 5, 5, 5), False, "N11W contiguous sliced to W=1: ambiguous, NCHW"),
    ((2, 1, 1, 1), (4, 1, 2, 2), True, "N111 whose H/W strides exceed C's: not ambiguous"),
    ((3, 1, 5, 1), (5, 1, 1, 1), True, "N1H1 channels_last strides"),
    ((3, 1, 5, 1), (5, 5, 1, 1), False, "N1H1 contiguous strides"),
    ((1, 4, 1, 5), (20, 5, 5, 1), False, "1C1W contiguous"),
    ((1, 5, 1, 4), (20, 1, 5, 5), False, "1C1W transposed (1, 3): [1, H, 1, C]@[HC, 1, H, H]"),
    ((2, 4, 1, 1), (4, 1, 1, 1), False, "NC11 contiguous (is_contiguous(channels_last) though)"),
    ((2, 4, 1, 1), (4, 1, 4, 4), True, "NC11 channels_last strides"),
    ((1, 4, 6, 6), (4, 1, 24, 4), False, "unsqueeze(0) of an HWC image: batch stride C < H*W*C"),
    ((1, 4, 1, 1), (4, 1, 4, 4), True, "unsqueeze(0) of a (C, 1, 1) view of a 1x1xC image"),
    ((8, 4, 1, 3), (12, 1, 12, 4), True, "unsqueeze(2) of a permuted (K, C, S) conv1d weight"),
    ((2, 4, 6, 6), (-144, 1, 24, 4), False, "a negative stride (NumPy can have them)"),
    ((2, 4, 6), (24, 1, 4), False, "3-D: PyTorch has no channels_last for it"),
    ((2, 4, 6, 6, 6), (864, 1, 144, 24, 4), False, "5-D: channels_last_3d, not channels_last"),
]


@pytest.mark.parametrize("shape,strides,expected,why", STRIDE_RULE,
                         ids=[f"{case[3]}" for case in STRIDE_RULE])
def test_stride_rule_on_tuples(shape, strides, expected, why):
    assert suggests_channels_last(shape, strides) is expected, why
    # Byte strides answer alike: the rule compares strides only with each other (and times sizes).
    assert suggests_channels_last(shape, tuple(8 * s for s in strides)) is expected, why


def test_stride_rule_on_channels_last_strides():
    # A new channels_last tensor suggests channels_last, except where its strides are ambiguous.
    assert channels_last_strides((2, 8, 4, 4)) == (128, 1, 32, 8)
    assert channels_last_strides((2, 8, 1, 1)) == (8, 1, 8, 8)
    for shape in [(2, 3, 4, 5), (1, 3, 4, 5), (2, 1, 4, 5), (2, 3, 1, 1), (2, 1, 1, 5)]:
        assert suggests_channels_last(shape, channels_last_strides(shape)), shape
    assert not suggests_channels_last((2, 1, 1, 1), channels_last_strides((2, 1, 1, 1)))


def test_contiguity_predicates_are_pytorchs():
    # is_contiguous(memory_format=channels_last) and is_contiguous(): size-1 strides ignored.
    assert is_channels_last_contiguous((2, 4, 6, 6), (144, 1, 24, 4))
    assert not is_channels_last_contiguous((2, 4, 6, 6), (288, 2, 48, 8))     # sliced: not dense
    assert is_channels_last_contiguous((2, 4, 1, 1), (4, 1, 1, 1))            # NCHW strides too
    assert not is_channels_last_contiguous((2, 1, 1, 1), (4, 1, 2, 2))
    assert is_contiguous_strides((2, 4, 6), (24, 6, 1))
    assert is_contiguous_strides((1, 1, 2), (8, 1, 1))         # odd strides of size-1 dims kept
    assert not is_contiguous_strides((2, 4, 6), (24, 1, 4))


def test_element_strides_of_arrays():
    a = np.empty((2, 6, 6, 4), np.float32).transpose(0, 3, 1, 2)
    assert element_strides_of(a) == (144, 1, 24, 4)
    assert element_strides_of(np.empty((3, 5), "V3")[:, ::2]) == (5, 2)
    assert element_strides_of(memoryview(b"ab")) is None and element_strides_of([1, 2]) is None


def test_stride_rule_on_numpy_views():
    nhwc = np.empty((2, 6, 6, 4), np.float32).transpose(0, 3, 1, 2)
    assert suggests_channels_last(nhwc.shape, nhwc.strides)
    assert not suggests_channels_last(nhwc.shape, np.ascontiguousarray(nhwc).strides)
    assert suggests_channels_last(nhwc[:, ::2].shape, nhwc[:, ::2].strides)


# --- layouts of the operands ----------------------------------------------------------------

def _relaid(torch, t, layout, device="cpu"):
    """Tensor `t`'s values on `device` in `layout`: a name below or a tuple of element strides.
    Broadcast layouts ('expand_*') keep one slice of `t` and repeat it (values change)."""
    t = t.to(device)
    shape = tuple(t.shape)

    def into(view):
        assert tuple(view.shape) == shape, (layout, view.shape, shape)
        return view.copy_(t)

    def empty(*size):
        return torch.empty(size, dtype=t.dtype, device=device)

    if isinstance(layout, tuple):
        extent = 1 + sum((n - 1) * s for n, s in zip(shape, layout))
        return into(empty(extent).as_strided(shape, layout))
    if layout == "contiguous":
        return t.contiguous()
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "nhwc_sliced_c":           # every other channel of an NHWC tensor
        n, c, h, w = shape
        return into(empty(n, h, w, 2 * c).permute(0, 3, 1, 2)[:, 1::2])
    if layout == "nhwc_sliced_hw":          # a window of an NHWC tensor
        n, c, h, w = shape
        return into(empty(n, 2 * h, w + 1, c).permute(0, 3, 1, 2)[:, :, ::2, 1:])
    if layout == "nwhc":
        n, c, h, w = shape
        return into(empty(n, w, h, c).permute(0, 3, 2, 1))
    if layout == "ksc":                     # a conv1d weight (K, C, S) stored as (K, S, C)
        return into(empty(shape[0], shape[2], shape[1]).permute(0, 2, 1))
    if layout == "hwc":                     # an unbatched (C, H, W) image stored as (H, W, C)
        return into(empty(shape[1], shape[2], shape[0]).permute(2, 0, 1))
    if layout == "expand_c":
        return t[:, :1].expand(shape)
    if layout == "expand_n_cl":
        return t[:1].contiguous(memory_format=torch.channels_last).expand(shape)
    if layout == "expand_k":
        return t[:1].expand(shape)
    raise AssertionError(f"unknown layout {layout!r}")


def _pytorch(torch, op, x, w, b, kwargs):
    """PyTorch's result: F.conv*d for zeros padding, the module's pad-then-conv otherwise."""
    kwargs = dict(kwargs)
    mode = kwargs.pop("padding_mode", "zeros")
    if mode == "zeros":
        return getattr(torch.nn.functional, op)(x, w, b, **kwargs)
    module = torch.nn.Conv1d if op == "conv1d" else torch.nn.Conv2d
    m = module(w.shape[1] * kwargs.get("groups", 1), w.shape[0], tuple(w.shape[2:]),
               padding_mode=mode, bias=b is not None, dtype=w.dtype, device=w.device, **kwargs)
    m.weight = torch.nn.Parameter(w, requires_grad=False)      # keeps w's strides
    if b is not None:
        m.bias = torch.nn.Parameter(b, requires_grad=False)
    with torch.no_grad():
        return m(x)


def _host(a):
    return None if a is None else a.detach().cpu().numpy().copy()


def _check_against_pytorch(torch, op, x, w, b, kwargs, expected=None, size1_strides=True, **call):
    """Ours on (x, w, b): PyTorch's shape and strides (size1_strides False: those of dimensions of
    size > 1), and the reference's values."""
    if expected is None:
        expected = _pytorch(torch, op, x, w, b, kwargs)
    got = getattr(conv, op)(x, w, b, **kwargs, **call)
    where = (f"{op}(x{tuple(x.shape)}@{x.stride()}, w{tuple(w.shape)}@{w.stride()}, {kwargs}, "
             f"{x.dtype})")
    assert isinstance(got, torch.Tensor) and got.device == x.device, where
    assert tuple(got.shape) == tuple(expected.shape), f"{where}: shape {tuple(got.shape)}"

    def compared(strides):
        return tuple(v for v, size in zip(strides, got.shape) if size1_strides or size != 1)

    assert compared(got.stride()) == compared(expected.stride()), \
        f"{where}: strides {got.stride()}, PyTorch's {expected.stride()}"
    assert_output_matches_reference(op, got, _host(x), _host(w), _host(b), where=where, **kwargs)
    return got


def _operands(torch, rng, op, x_shape, w_shape, dtype, bias=False):
    x, w, b = make_operands(rng, x_shape, w_shape, dtype, bias=bias)
    return tuple(None if a is None else torch.from_numpy(a) for a in (x, w, b))


# (id, op, x shape, w shape, x layout, w layout, kwargs): PyTorch's strides for each.
CL, C = "channels_last", "contiguous"
CASES = [
    ("input-cl", "conv2d", (2, 4, 6, 6), (8, 4, 3, 3), CL, C, {}),
    ("weight-cl", "conv2d", (2, 4, 6, 6), (8, 4, 3, 3), C, CL, {}),
    ("both-cl", "conv2d", (2, 4, 6, 6), (8, 4, 3, 3), CL, CL, {}),
    ("neither", "conv2d", (2, 4, 6, 6), (8, 4, 3, 3), C, C, {}),
    ("input-cl-bias-stride-dilation", "conv2d", (2, 4, 9, 9), (8, 4, 3, 3), CL, C,
     dict(stride=(2, 1), dilation=2, padding=1)),
    ("input-cl-same", "conv2d", (2, 4, 6, 6), (8, 4, 2, 3), CL, C, dict(padding="same")),
    # Sliced (non-dense) NHWC views, and orders that are not NHWC.
    ("input-nhwc-sliced-c", "conv2d", (2, 4, 6, 6), (8, 4, 3, 3), "nhwc_sliced_c", C, {}),
    ("input-nhwc-sliced-hw", "conv2d", (2, 4, 6, 6), (8, 4, 3, 3), "nhwc_sliced_hw", C, {}),
    ("input-nwhc", "conv2d", (2, 4, 6, 6), (8, 4, 3, 3), "nwhc", C, {}),
    ("input-channels-broadcast", "conv2d", (2, 4, 6, 6), (8, 4, 3, 3), "expand_c", C, {}),
    ("input-batch-broadcast-cl", "conv2d", (3, 4, 6, 6), (8, 4, 3, 3), "expand_n_cl", C, {}),
    ("weight-broadcast", "conv2d", (2, 4, 6, 6), (8, 4, 3, 3), C, "expand_k", {}),
    # Groups, depthwise (with a channel multiplier), 1x1 kernels.
    ("groups-weight-cl", "conv2d", (2, 4, 6, 6), (8, 2, 3, 3), C, CL, dict(groups=2)),
    ("depthwise-input-cl", "conv2d", (2, 4, 6, 6), (4, 1, 3, 3), CL, C, dict(groups=4)),
    ("depthwise-x2-weight-cl", "conv2d", (2, 4, 6, 6), (8, 1, 3, 3), C, CL, dict(groups=4)),
    ("1x1-input-cl", "conv2d", (2, 4, 6, 6), (8, 4, 1, 1), CL, C, {}),
    ("1x1-weight-cl", "conv2d", (2, 4, 6, 6), (8, 4, 1, 1), C, CL, {}),
    ("1x1-neither", "conv2d", (2, 4, 6, 6), (8, 4, 1, 1), C, C, {}),
    # Size-1 dimensions: PyTorch's exact channels_last strides, ambiguous strides as NCHW.
    ("batch-1-input-cl", "conv2d", (1, 4, 6, 6), (8, 4, 3, 3), CL, C, {}),
    ("channels-1-input-cl", "conv2d", (2, 1, 6, 6), (8, 1, 3, 3), CL, C, {}),
    ("out-channels-1-input-cl", "conv2d", (2, 4, 6, 6), (1, 4, 3, 3), CL, C, {}),
    ("out-channels-1-weight-cl", "conv2d", (2, 4, 6, 6), (1, 4, 3, 3), C, CL, {}),
    ("height-1-input-cl", "conv2d", (2, 4, 1, 6), (8, 4, 1, 3), CL, C, {}),
    ("output-1x1-input-cl", "conv2d", (2, 4, 3, 3), (8, 4, 3, 3), CL, C, {}),
    ("nc11-input-cl", "conv2d", (2, 4, 1, 1), (8, 4, 1, 1), CL, C, {}),
    ("nc11-input-contiguous", "conv2d", (2, 4, 1, 1), (8, 4, 1, 1), C, C, {}),
    ("n111-ambiguous", "conv2d", (2, 1, 1, 1), (8, 1, 1, 1), (1, 1, 1, 1), C, {}),
    ("n111-unambiguous", "conv2d", (2, 1, 1, 1), (8, 1, 1, 1), (4, 1, 2, 2), C, {}),
    ("batch-1-small-batch-stride", "conv2d", (1, 4, 6, 6), (8, 4, 3, 3), (4, 1, 24, 4), C, {}),
    ("weight-kc11-transposed", "conv2d", (2, 4, 6, 6), (8, 4, 1, 1), C, (4, 1, 4, 4), {}),
    # Unbatched conv2d: PyTorch looks at input.unsqueeze(0).
    ("unbatched-hwc-image", "conv2d", (4, 6, 6), (8, 4, 3, 3), "hwc", C, {}),
    ("unbatched-c11-view", "conv2d", (4, 1, 1), (8, 4, 1, 1), "hwc", C, {}),
    ("unbatched-weight-cl", "conv2d", (4, 6, 6), (8, 4, 3, 3), C, CL, {}),
    ("unbatched-weight-cl-k1", "conv2d", (4, 6, 6), (1, 4, 3, 3), C, CL, {}),
    # Empty batch: PyTorch's "empty" backend, contiguous whatever the weight.
    ("empty-batch-input-cl", "conv2d", (0, 4, 6, 6), (8, 4, 3, 3), CL, C, {}),
    ("empty-batch-weight-cl", "conv2d", (0, 4, 6, 6), (8, 4, 3, 3), C, CL, {}),
    # Padding modes: nn.Conv2d pads with F.pad first.
    ("reflect-input-cl", "conv2d", (2, 4, 6, 6), (8, 4, 3, 3), CL, C,
     dict(padding=1, padding_mode="reflect")),
    ("reflect-input-nhwc-sliced", "conv2d", (2, 4, 6, 6), (8, 4, 3, 3), "nhwc_sliced_hw", C,
     dict(padding=(1, 2), padding_mode="reflect")),
    ("reflect-weight-cl", "conv2d", (2, 4, 6, 6), (8, 4, 3, 3), C, CL,
     dict(padding=1, padding_mode="reflect")),
    ("reflect-zero-padding-n111", "conv2d", (2, 1, 1, 1), (8, 1, 1, 1), (4, 1, 2, 2), C,
     dict(padding=0, padding_mode="reflect")),
    ("replicate-input-cl-same", "conv2d", (2, 4, 6, 6), (8, 4, 2, 2), CL, C,
     dict(padding="same", padding_mode="replicate")),
    ("replicate-height-1-input-cl", "conv2d", (2, 4, 1, 6), (8, 4, 1, 3), CL, C,
     dict(padding=1, padding_mode="replicate")),
    ("replicate-n111-padded", "conv2d", (2, 1, 1, 1), (8, 1, 1, 1), (4, 1, 2, 2), C,
     dict(padding=1, padding_mode="replicate")),
    ("circular-input-cl", "conv2d", (2, 4, 6, 6), (8, 4, 3, 3), CL, C,
     dict(padding=1, padding_mode="circular")),
    ("circular-weight-cl", "conv2d", (2, 4, 6, 6), (8, 4, 3, 3), C, CL,
     dict(padding=1, padding_mode="circular")),
    ("reflect-unbatched-c11-view", "conv2d", (4, 1, 1), (8, 4, 1, 1), "hwc", C,
     dict(padding=0, padding_mode="reflect")),
    ("reflect-unbatched-weight-cl", "conv2d", (4, 6, 6), (8, 4, 3, 3), C, CL,
     dict(padding=1, padding_mode="reflect")),
    # conv1d: the input is made contiguous, the weight is looked at as weight.unsqueeze(2).
    ("conv1d-neither", "conv1d", (2, 4, 10), (8, 4, 3), C, C, {}),
    ("conv1d-input-nlc", "conv1d", (2, 4, 10), (8, 4, 3), "ksc", C, {}),
    ("conv1d-weight-ksc", "conv1d", (2, 4, 10), (8, 4, 3), C, "ksc", {}),
    ("conv1d-weight-ksc-k1", "conv1d", (2, 4, 10), (1, 4, 3), C, "ksc", {}),
    ("conv1d-weight-ksc-output-1", "conv1d", (2, 4, 3), (8, 4, 3), C, "ksc", {}),
    ("conv1d-weight-ksc-1-tap", "conv1d", (2, 4, 10), (8, 4, 1), C, "ksc", {}),
    ("conv1d-weight-kc1-contiguous", "conv1d", (2, 4, 10), (8, 4, 1), C, C, {}),
    ("conv1d-depthwise-weight-k1s", "conv1d", (2, 4, 10), (4, 1, 3), C, "ksc", dict(groups=4)),
    ("conv1d-unbatched-weight-ksc", "conv1d", (4, 10), (8, 4, 3), C, "ksc", {}),
    ("conv1d-empty-batch-weight-ksc", "conv1d", (0, 4, 10), (8, 4, 3), C, "ksc", {}),
    ("conv1d-reflect-weight-ksc", "conv1d", (2, 4, 10), (8, 4, 3), C, "ksc",
     dict(padding=1, padding_mode="reflect")),
]
CASE_IDS = [case[0] for case in CASES]


@pytest.mark.torch
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_memory_format_is_pytorchs(case, rng):
    torch = _torch()
    _, op, x_shape, w_shape, x_layout, w_layout, kwargs = case
    x, w, _ = _operands(torch, rng, op, x_shape, w_shape, "float32")
    x, w = _relaid(torch, x, x_layout), _relaid(torch, w, w_layout)
    _check_against_pytorch(torch, op, x, w, None, kwargs)


# The cases whose strides depend on the dtype (complex results are contiguous where that is the
# same memory order), and a few that do not, for every dtype PyTorch's CPU convolves.
DTYPE_CASES = ["input-cl", "weight-cl", "out-channels-1-input-cl", "output-1x1-input-cl",
               "unbatched-c11-view", "unbatched-weight-cl-k1", "conv1d-weight-ksc",
               "conv1d-weight-ksc-k1", "reflect-input-cl"]


@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["float16", "float64", "complex64", "complex128", "int64"])
@pytest.mark.parametrize("case", [c for c in CASES if c[0] in DTYPE_CASES],
                         ids=[c for c in CASE_IDS if c in DTYPE_CASES])
def test_memory_format_is_pytorchs_for_every_dtype(case, dtype, rng):
    torch = _torch()
    _, op, x_shape, w_shape, x_layout, w_layout, kwargs = case
    if dtype == "int64" and kwargs.get("padding_mode", "zeros") != "zeros":
        pytest.skip("PyTorch has no integer nn.Conv2d (its parameters need a floating dtype)")
    x, w, b = _operands(torch, rng, op, x_shape, w_shape, dtype, bias=True)
    x, w = _relaid(torch, x, x_layout), _relaid(torch, w, w_layout)
    _check_against_pytorch(torch, op, x, w, b, kwargs)


@pytest.mark.torch
@pytest.mark.parametrize("algorithm", ["direct", "im2col", "implicit", "fft", "winograd"])
def test_memory_format_for_every_cpu_algorithm(algorithm, rng):
    torch = _torch()
    x, w, b = _operands(torch, rng, "conv2d", (2, 4, 6, 6), (8, 4, 3, 3), "float32", bias=True)
    x = _relaid(torch, x, "nhwc_sliced_hw")
    _check_against_pytorch(torch, "conv2d", x, w, b, dict(padding=1), backend="cpu",
                           algorithm=algorithm)


def _random_layout(torch, rng, t):
    """`t` in a random strided layout: dimensions in a random memory order, some sliced with a
    step of 2, size-1 dimensions with an arbitrary stride (0 included)."""
    shape = tuple(t.shape)
    order = rng.permutation(len(shape))             # slowest to fastest
    steps = [int(rng.integers(1, 3)) for _ in shape]
    strides, span = [0] * len(shape), 1
    for dim in order[::-1]:
        strides[dim] = span * steps[dim]
        span *= shape[dim] * steps[dim]
    for dim, size in enumerate(shape):
        if size == 1:
            strides[dim] = int(rng.choice([0, 1, 2, 3, span]))
    return _relaid(torch, t, tuple(strides))


@pytest.mark.torch
@pytest.mark.parametrize("dtype,count", [("float32", 80), ("float64", 30), ("complex64", 40)])
def test_random_layouts_match_pytorch(dtype, count):
    """Random layouts through conv2d, unbatched conv2d and conv1d, every padding mode. Complex
    results are compared along dimensions of size > 1 only: there PyTorch's elementwise combine
    of three real convolutions picks strides for size-1 dimensions that we do not mirror (in
    about 1 of 500 random calls; the memory order is the same)."""
    torch = _torch()
    rng = operand_rng(("random-layouts", dtype))
    calls = 0
    for _ in range(count):
        n, c, h, w = (int(v) for v in rng.choice([1, 1, 2, 3], size=4))
        k = int(rng.choice([1, 2, 3]))
        r, s = int(rng.integers(1, h + 1)), int(rng.integers(1, w + 1))
        mode = str(rng.choice(["zeros", "zeros", "reflect", "replicate", "circular"]))
        x, wt, _ = _operands(torch, rng, "conv2d", (n, c, h, w), (k, c, r, s), dtype)
        x, wt = _random_layout(torch, rng, x), _random_layout(torch, rng, wt)
        candidates = [("conv2d", x, wt), ("conv2d", x[0], wt)]
        if h == 1:      # the same tensors' 3-D views, through conv1d
            candidates += [("conv1d", x[:, :, 0], wt[:, :, 0]), ("conv1d", x[0, :, 0], wt[:, :, 0])]
        for op, xx, ww in candidates:
            spatial = xx.shape[-2:] if op == "conv2d" else xx.shape[-1:]
            pad = int(rng.integers(0, 2)) if mode != "reflect" or min(spatial) > 1 else 0
            kwargs = dict(padding=pad, padding_mode=mode)
            _check_against_pytorch(torch, op, xx, ww, None, kwargs,
                                   size1_strides=np.dtype(dtype).kind != "c")
            calls += 1
    assert calls >= 2 * count


# --- modules; NumPy stays C-contiguous --------------------------------------------------------

@pytest.mark.torch
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "circular"])
def test_module_returns_pytorchs_memory_format(padding_mode, rng):
    torch = _torch()
    ours = conv.Conv2d(4, 8, 3, padding=1, padding_mode=padding_mode, seed=3)
    theirs = torch.nn.Conv2d(4, 8, 3, padding=1, padding_mode=padding_mode)
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.weight))
        theirs.bias.copy_(torch.from_numpy(ours.bias))
        x = _relaid(torch, _operands(torch, rng, "conv2d", (2, 4, 6, 6), None, "float32")[0], CL)
        expected = theirs(x)
    got = ours(x)
    assert got.stride() == expected.stride(), (got.stride(), expected.stride())
    assert_output_matches_reference("conv2d", got, _host(x), ours.weight, ours.bias, padding=1,
                                    padding_mode=padding_mode)


def test_numpy_results_stay_c_contiguous(rng):
    x, w, _ = make_operands(rng, (2, 6, 6, 4), (8, 4, 3, 3), "float32")
    nhwc = x.transpose(0, 3, 1, 2)
    out = conv.conv2d(nhwc, w)
    assert type(out) is np.ndarray and out.flags.c_contiguous
    assert_output_matches_reference("conv2d", out, np.ascontiguousarray(nhwc), w)


@pytest.mark.torch
def test_numpy_input_with_channels_last_tensor_weight_stays_numpy(rng):
    torch = _torch()
    x, w, _ = make_operands(rng, (2, 4, 6, 6), (8, 4, 3, 3), "float32")
    out = conv.conv2d(x, _relaid(torch, torch.from_numpy(w), CL))
    assert type(out) is np.ndarray and out.flags.c_contiguous
    assert_output_matches_reference("conv2d", out, x, w)


@pytest.mark.torch
def test_numpy_weight_strides_count_for_a_tensor_input(rng):
    # Ours only (PyTorch takes no NumPy weight): the rule reads the NumPy weight's strides too.
    torch = _torch()
    x, w, _ = make_operands(rng, (2, 4, 6, 6), (8, 3, 3, 4), "float32")
    w_nhwc = w.transpose(0, 3, 1, 2)
    expected = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w_nhwc))
    got = conv.conv2d(torch.from_numpy(x), w_nhwc)
    assert got.stride() == expected.stride() == channels_last_strides(tuple(got.shape))
    assert_output_matches_reference("conv2d", got, x, np.ascontiguousarray(w_nhwc))


@pytest.mark.torch
def test_same_padding_warning_points_at_the_caller_for_tensors():
    # The tensor path runs the call one frame deeper than before; the warning still names us.
    torch = _torch()
    x = _relaid(torch, torch.ones((1, 2, 8, 8)), CL)
    with pytest.warns(UserWarning, match="even kernel lengths") as record:
        conv.conv2d(x, torch.ones((2, 2, 4, 4)), padding="same")
    assert record[0].filename == __file__


# --- CUDA: PyTorch CUDA tensors through the cupy and numba backends ---------------------------

GPU_CASES = ["input-cl", "weight-cl", "neither", "input-nhwc-sliced-hw", "out-channels-1-input-cl",
             "unbatched-c11-view", "unbatched-weight-cl", "empty-batch-weight-cl",
             "reflect-input-cl", "circular-input-cl", "depthwise-input-cl", "conv1d-weight-ksc",
             "conv1d-unbatched-weight-ksc"]


@pytest.fixture
def cuda_torch():
    torch = _torch()
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA device")
    before = _gpu_arrays.poison_enabled()
    _gpu_arrays.set_poison_outputs(True)
    yield torch
    _gpu_arrays.set_poison_outputs(before)


@pytest.mark.gpu
@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64"])
@pytest.mark.parametrize("backend", ["cupy", "numba"])
@pytest.mark.parametrize("case", [c for c in CASES if c[0] in GPU_CASES],
                         ids=[c for c in CASE_IDS if c in GPU_CASES])
def test_cuda_memory_format_follows_cpu_pytorch(cuda_torch, case, backend, dtype, rng):
    torch = cuda_torch
    ok, why = backend_availability(backend)
    if not ok:
        pytest.skip(f"{backend} backend not usable: {why}")
    _, op, x_shape, w_shape, x_layout, w_layout, kwargs = case
    x, w, b = _operands(torch, rng, op, x_shape, w_shape, dtype, bias=True)
    # CPU PyTorch's strides: its CUDA build returns float64 (and complex128) contiguous from
    # cuDNN, and contiguous from its own depthwise kernel; we follow the CPU (functional.py).
    expected = _pytorch(torch, op, _relaid(torch, x, x_layout), _relaid(torch, w, w_layout), b,
                        kwargs)
    x, w, b = (_relaid(torch, x, x_layout, "cuda"), _relaid(torch, w, w_layout, "cuda"),
               b.to("cuda"))
    got = _check_against_pytorch(torch, op, x, w, b, kwargs, expected=expected, backend=backend)
    assert got.is_cuda
