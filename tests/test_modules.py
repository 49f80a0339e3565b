"""conv.Conv1d / conv.Conv2d: PyTorch's surface (attributes, repr, init, errors) and forward."""
import math

import numpy as np
import pytest

import conv
from tests._helpers import assert_matches_reference, make_operands

REPRS = [
    (lambda: conv.Conv1d(1, 3, 1), "Conv1d(1, 3, kernel_size=(1,), stride=(1,))"),
    (lambda: conv.Conv2d(4, 8, 3, stride=2, padding=1, dilation=2, groups=2, bias=False,
                         padding_mode="reflect"),
     "Conv2d(4, 8, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), dilation=(2, 2), groups=2, "
     "bias=False, padding_mode=reflect)"),
    (lambda: conv.Conv2d(4, 8, (3, 5), padding="same"),
     "Conv2d(4, 8, kernel_size=(3, 5), stride=(1, 1), padding=same)"),
    (lambda: conv.Conv2d(4, 8, 3, padding=(0, 0), dilation=1), "Conv2d(4, 8, kernel_size=(3, 3), stride=(1, 1))"),
    (lambda: conv.Conv1d(4, 8, 3, padding="valid"),
     "Conv1d(4, 8, kernel_size=(3,), stride=(1,), padding=valid)"),
    (lambda: conv.Conv2d(4, 8, 3, padding=0, padding_mode="circular"),
     "Conv2d(4, 8, kernel_size=(3, 3), stride=(1, 1), padding_mode=circular)"),
]


@pytest.mark.parametrize("make,expected", REPRS, ids=[r[1] for r in REPRS])
def test_repr_is_pytorchs(make, expected):
    assert repr(make()) == expected


def test_attributes_like_pytorch():
    m = conv.Conv2d(6, 12, (3, 5), stride=(2, 1), padding=[1, 2], dilation=2, groups=3)
    assert (m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
            m.groups, m.padding_mode) == (6, 12, (3, 5), (2, 1), (1, 2), (2, 2), 3, "zeros")
    assert m.weight.shape == (12, 2, 3, 5) and m.weight.dtype == np.float32
    assert m.bias.shape == (12,)
    assert conv.Conv1d(4, 8, 3, padding=[2]).padding == (2,)
    assert conv.Conv2d(4, 8, 3, padding="same").padding == "same"
    assert conv.Conv2d(4, 8, 3, bias=False).bias is None
    assert conv.Conv1d(4, 8, 3, dtype=np.float64).weight.dtype == np.float64


def test_init_bounds_and_seed():
    m = conv.Conv2d(16, 32, 3, groups=4, seed=0)
    bound = 1 / math.sqrt(16 // 4 * 9)
    assert np.abs(m.weight).max() <= bound and np.abs(m.bias).max() <= bound
    # Uniform over the whole range, not a constant or a narrow band.
    assert np.abs(m.weight).max() > 0.9 * bound and m.weight.std() > 0.5 * bound / math.sqrt(3)
    again = conv.Conv2d(16, 32, 3, groups=4, seed=0)
    np.testing.assert_array_equal(m.weight, again.weight)
    np.testing.assert_array_equal(m.bias, again.bias)
    other = conv.Conv2d(16, 32, 3, groups=4, seed=np.random.default_rng(1))
    assert not np.array_equal(m.weight, other.weight)
    c = conv.Conv1d(2, 2, 3, dtype=np.complex64, seed=0)
    assert c.weight.dtype == np.complex64 and np.abs(c.weight.imag).max() > 0


def test_weight_and_bias_are_assignable(rng):
    m = conv.Conv1d(3, 4, 3, padding=1)
    x, m.weight, _ = make_operands(rng, (2, 3, 10), (4, 3, 3), "float32")
    m.bias = None
    np.testing.assert_allclose(m(x), conv.conv1d(x, m.weight, None, padding=1), rtol=1e-6)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [1, "same", "valid", (2, 1)])
def test_forward_matches_reference(mode, padding, rng):
    m = conv.Conv2d(4, 6, (3, 4), padding=padding, groups=2, padding_mode=mode, seed=3)
    x, _, _ = make_operands(rng, (2, 4, 7, 8), None, "float32")
    out = assert_matches_reference("conv2d", x, m.weight, m.bias, backend="cpu", padding=padding,
                                   groups=2, padding_mode=mode)
    np.testing.assert_array_equal(m(x), out)
    np.testing.assert_array_equal(m.forward(x, backend="reference"),
                                  conv.conv2d(x, m.weight, m.bias, padding=padding, groups=2,
                                              padding_mode=mode, backend="reference"))


def test_unbatched_forward(rng):
    m = conv.Conv1d(3, 5, 3, padding=1, padding_mode="reflect", seed=4)
    x, _, _ = make_operands(rng, (3, 11), None, "float32")
    out = m(x)
    assert out.shape == (5, 11) and out.dtype == np.float32
    # The unbatched call is the batched one on a batch of one, and matches the reference.
    np.testing.assert_array_equal(out, m(x[None])[0])
    assert_matches_reference("conv1d", x, m.weight, m.bias, backend="cpu", padding=1,
                             padding_mode="reflect")


def test_zero_out_channels_warns_like_pytorch():
    with pytest.warns(UserWarning, match="Initializing zero-element tensors is a no-op"):
        m = conv.Conv2d(6, 0, 3)
    assert m.weight.shape == (0, 6, 3, 3)
    with pytest.raises(ValueError, match="expected weight to be at least 1 at dimension 0"):
        m(np.ones((1, 6, 5, 5), np.float32))


@pytest.mark.parametrize("kwargs,message", [
    (dict(groups=2, in_channels=5), "in_channels must be divisible by groups"),
    (dict(groups=2, out_channels=13), "out_channels must be divisible by groups"),
    (dict(groups=0), "groups must be a positive integer"),
    (dict(padding_mode="foo"), "padding_mode must be one of {'zeros', 'reflect', 'replicate', "
                               "'circular'}, but got padding_mode='foo'"),
    (dict(padding="foo"), "Invalid padding string 'foo', should be one of {'valid', 'same'}"),
    (dict(padding="same", stride=2), "padding='same' is not supported for strided convolutions"),
    (dict(device="tpu"), "Expected one of cpu, cuda device type at start of device string: tpu"),
    (dict(device="cuda:x"), "Invalid device string: 'cuda:x'"),
])
def test_constructor_errors(kwargs, message):
    args = dict(in_channels=6, out_channels=12, kernel_size=3)
    args.update(kwargs)
    with pytest.raises(ValueError) as info:
        conv.Conv2d(**args)
    assert str(info.value) == message


def test_non_integer_groups_is_a_type_error():
    with pytest.raises(TypeError, match="groups must be a positive integer, got float"):
        conv.Conv2d(4, 4, 3, groups=2.0)


def test_same_padding_warning_points_at_the_caller():
    with pytest.warns(UserWarning, match="even kernel lengths") as record:
        conv.conv1d(np.ones((1, 1, 8), np.float32), np.ones((1, 1, 4), np.float32), padding="same")
    assert record[0].filename == __file__


def test_integer_dtype_refused_for_modules():
    with pytest.raises(TypeError, match="dtype must be a floating point or complex dtype"):
        conv.Conv2d(2, 2, 3, dtype=np.int32)


def test_cuda_device_without_gpu_raises_clearly():
    ok, why = conv.backends()["cupy"]
    if ok:
        pytest.skip("a GPU is usable here; the GPU tests cover device='cuda'")
    with pytest.raises(RuntimeError) as info:
        conv.Conv2d(2, 2, 3, device="cuda:1")
    assert str(info.value).startswith("device='cuda:1' keeps the weights as CuPy arrays, but the "
                                      "cupy backend is not usable here: ")
    assert why in str(info.value)


def test_negative_padding_accepted_at_construction_refused_in_forward():
    m = conv.Conv2d(2, 2, 3, padding=-1)     # PyTorch accepts this until forward
    with pytest.raises(ValueError, match="negative padding is not supported"):
        m(np.ones((1, 2, 5, 5), np.float32))


def test_groups_taken_as_pytorch_takes_them(rng):
    # Integer-likes are ints; a bool is accepted at construction (True == 1) and kept, so forward
    # refuses it as torch.nn.Conv2d's forward does.
    m = conv.Conv2d(4, 6, 3, groups=np.array(2), seed=0)
    assert m.groups == 2 and type(m.groups) is int and m.weight.shape == (6, 2, 3, 3)
    assert repr(m) == "Conv2d(4, 6, kernel_size=(3, 3), stride=(1, 1), groups=2)"
    x, _, _ = make_operands(rng, (1, 4, 5, 5), None, "float32")
    np.testing.assert_array_equal(m(x), conv.conv2d(x, m.weight, m.bias, groups=2))
    flagged = conv.Conv2d(4, 6, 3, groups=True)
    assert flagged.groups is True and flagged.weight.shape == (6, 4, 3, 3)
    assert repr(flagged) == "Conv2d(4, 6, kernel_size=(3, 3), stride=(1, 1))"
    with pytest.raises(TypeError, match="argument 'groups' must be int, not bool"):
        flagged(x)


@pytest.mark.parametrize("args,message", [
    ((-1, 6, 3), "Trying to create tensor with negative dimension -1: [6, -1, 3, 3]"),
    ((4, -2, 3), "Trying to create tensor with negative dimension -2: [-2, 4, 3, 3]"),
    ((4, 6, (3, -1)), "Trying to create tensor with negative dimension -1: [6, 4, 3, -1]"),
])
def test_negative_sizes_are_pytorchs_error(args, message):
    with pytest.raises(ValueError) as info:
        conv.Conv2d(*args)
    assert str(info.value) == message
