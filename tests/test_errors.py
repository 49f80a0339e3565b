"""Every error PyTorch raises for these calls, raised here as ValueError/TypeError in PyTorch's words,
with nothing computed and no array modified."""
import warnings

import numpy as np
import pytest

import conv
from tests._helpers import HOST_ALGORITHMS

r = np.random.default_rng(0)


def a(*shape, dtype=np.float32):
    return r.standard_normal(shape).astype(dtype)


# (id, callable, exception type, exact message)
ERRORS = [
    ("channels", lambda: conv.conv2d(a(2, 6, 5, 5), a(12, 5, 3, 3)), ValueError,
     "Given groups=1, weight of size [12, 5, 3, 3], expected input[2, 6, 5, 5] to have 5 channels, "
     "but got 6 channels instead"),
    ("channels-1d", lambda: conv.conv1d(a(2, 6, 5), a(12, 5, 3)), ValueError,
     "Given groups=1, weight of size [12, 5, 3], expected input[2, 6, 5] to have 5 channels, but got "
     "6 channels instead"),
    ("channels-groups", lambda: conv.conv2d(a(2, 6, 5, 5), a(12, 2, 3, 3), groups=2), ValueError,
     "Given groups=2, weight of size [12, 2, 3, 3], expected input[2, 6, 5, 5] to have 4 channels, "
     "but got 6 channels instead"),
    ("channels-unbatched", lambda: conv.conv2d(a(6, 5, 5), a(12, 5, 3, 3)), ValueError,
     "Given groups=1, weight of size [12, 5, 3, 3], expected input[1, 6, 5, 5] to have 5 channels, "
     "but got 6 channels instead"),
    ("kernel-too-big", lambda: conv.conv2d(a(2, 5, 2, 2), a(12, 5, 3, 3)), ValueError,
     "Calculated padded input size per channel: (2 x 2). Kernel size: (3 x 3). Kernel size can't be "
     "greater than actual input size"),
    ("kernel-too-big-1d", lambda: conv.conv1d(a(2, 5, 2), a(12, 5, 3)), ValueError,
     "Calculated padded input size per channel: (2). Kernel size: (3). Kernel size can't be greater "
     "than actual input size"),
    ("kernel-too-big-dilated", lambda: conv.conv2d(a(2, 5, 4, 4), a(12, 5, 3, 3), dilation=2),
     ValueError, "Calculated padded input size per channel: (4 x 4). Kernel size: (5 x 5). Kernel "
     "size can't be greater than actual input size"),
    ("kernel-too-big-padded", lambda: conv.conv2d(a(2, 5, 1, 4), a(12, 5, 3, 3), padding=(0, 1)),
     ValueError, "Calculated padded input size per channel: (1 x 6). Kernel size: (3 x 3). Kernel "
     "size can't be greater than actual input size"),
    ("input-dims", lambda: conv.conv2d(a(5), a(12, 5, 3, 3)), ValueError,
     "Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: [5]"),
    ("input-dims-1d", lambda: conv.conv1d(a(5, 5, 5, 5), a(12, 5, 3)), ValueError,
     "Expected 2D (unbatched) or 3D (batched) input to conv1d, but got input of size: [5, 5, 5, 5]"),
    ("weight-dims", lambda: conv.conv1d(a(2, 5, 5), a(12, 5, 3, 3)), ValueError,
     "Expected 4-dimensional input for 4-dimensional weight [12, 5, 3, 3], but got 3-dimensional "
     "input of size [2, 5, 5] instead"),
    ("negative-padding", lambda: conv.conv2d(a(2, 5, 5, 5), a(12, 5, 3, 3), padding=-1), ValueError,
     "negative padding is not supported"),
    ("zero-stride", lambda: conv.conv2d(a(2, 5, 5, 5), a(12, 5, 3, 3), stride=0), ValueError,
     "non-positive stride is not supported"),
    ("negative-stride", lambda: conv.conv2d(a(2, 5, 5, 5), a(12, 5, 3, 3), stride=(1, -1)),
     ValueError, "non-positive stride is not supported"),
    ("zero-dilation", lambda: conv.conv2d(a(2, 5, 5, 5), a(12, 5, 3, 3), dilation=0), ValueError,
     "non-positive dilation is not supported"),
    ("zero-groups", lambda: conv.conv2d(a(2, 5, 5, 5), a(12, 5, 3, 3), groups=0), ValueError,
     "non-positive groups is not supported"),
    ("groups-not-dividing-weight", lambda: conv.conv2d(a(2, 6, 5, 5), a(13, 3, 3, 3), groups=2),
     ValueError, "Given groups=2, expected weight to be divisible by 2 at dimension 0, but got weight "
     "of size [[13, 3, 3, 3]] instead"),
    ("zero-out-channels", lambda: conv.conv2d(a(2, 5, 5, 5), a(0, 5, 3, 3)), ValueError,
     "Given groups=1, expected weight to be at least 1 at dimension 0, but got weight of size "
     "[0, 5, 3, 3] instead"),
    ("bias-length", lambda: conv.conv2d(a(2, 5, 5, 5), a(12, 5, 3, 3), a(11)), ValueError,
     "Given weight of size [12, 5, 3, 3], expected bias to be 1-dimensional with 12 elements, but got "
     "bias of size [11] instead"),
    ("bias-2d", lambda: conv.conv2d(a(2, 5, 5, 5), a(12, 5, 3, 3), a(12, 1)), ValueError,
     "Given weight of size [12, 5, 3, 3], expected bias to be 1-dimensional with 12 elements, but got "
     "bias of size [12, 1] instead"),
    ("padding-string", lambda: conv.conv2d(a(2, 5, 5, 5), a(12, 5, 3, 3), padding="foo"), ValueError,
     "Invalid padding string: 'foo'"),
    ("padding-string-case", lambda: conv.conv2d(a(2, 5, 5, 5), a(12, 5, 3, 3), padding="SAME"),
     ValueError, "Invalid padding string: 'SAME'"),
    ("same-strided", lambda: conv.conv2d(a(2, 5, 5, 5), a(12, 5, 3, 3), padding="same", stride=2),
     ValueError, "padding='same' is not supported for strided convolutions"),
    ("tuple-length", lambda: conv.conv2d(a(2, 5, 5, 5), a(12, 5, 3, 3), stride=(1, 1, 1)), ValueError,
     "expected stride to be a single integer value or a list of 2 values to match the convolution "
     "dimensions, but got stride=[1, 1, 1]"),
    ("tuple-length-padding", lambda: conv.conv2d(a(2, 5, 5, 5), a(12, 5, 3, 3), padding=(1, 1, 1)),
     ValueError, "expected padding to be a single integer value or a list of 2 values to match the "
     "convolution dimensions, but got padding=[1, 1, 1]"),
    ("tuple-length-1d", lambda: conv.conv1d(a(2, 5, 5), a(12, 5, 3), stride=(1, 1)), ValueError,
     "expected stride to be a single integer value or a list of 1 values to match the convolution "
     "dimensions, but got stride=[1, 1]"),
    ("zero-kernel", lambda: conv.conv2d(a(2, 5, 5, 5), a(12, 5, 0, 0)), ValueError,
     "kernel size should be greater than zero, but got kernel_height: 0 kernel_width: 0"),
    ("zero-kernel-1d", lambda: conv.conv1d(a(1, 6, 5), a(12, 6, 0)), ValueError,
     "kernel size should be greater than zero, but got kernel_height: 1 kernel_width: 0"),
    ("empty-spatial-padded", lambda: conv.conv2d(a(2, 5, 0, 5), a(12, 5, 1, 1), padding=1),
     ValueError, "Only zero batch or zero channel inputs are supported, but got input shape: "
     "[2, 5, 0, 5]"),
    ("empty-spatial", lambda: conv.conv2d(a(2, 5, 0, 5), a(12, 5, 1, 1)), ValueError,
     "Calculated padded input size per channel: (0 x 5). Kernel size: (1 x 1). Kernel size can't be "
     "greater than actual input size"),
    ("dtype-input-weight", lambda: conv.conv2d(a(2, 5, 5, 5), a(12, 5, 3, 3, dtype=np.float64)),
     TypeError, "Input type (float) and weight type (double) should be the same"),
    ("dtype-bias", lambda: conv.conv2d(a(2, 5, 5, 5), a(12, 5, 3, 3), a(12, dtype=np.float64)),
     TypeError, "Input type (float) and bias type (double) should be the same"),
    ("dtype-bias-half", lambda: conv.conv2d(a(2, 5, 5, 5, dtype=np.float16),
                                            a(12, 5, 3, 3, dtype=np.float16), a(12)),
     TypeError, "Input type (c10::Half) and bias type (float) should be the same"),
    ("dtype-bool", lambda: conv.conv2d(np.ones((2, 5, 5, 5), bool), np.ones((12, 5, 3, 3), bool)),
     TypeError, "\"conv2d\" not implemented for 'Bool'"),
    ("dtype-uint32", lambda: conv.conv1d(np.ones((2, 5, 5), np.uint32), np.ones((2, 5, 3), np.uint32)),
     TypeError, "\"conv1d\" not implemented for 'UInt32'"),
    ("int32-dilated", lambda: conv.conv2d(np.ones((1, 2, 6, 6), np.int32),
                                          np.ones((3, 2, 2, 2), np.int32), dilation=(1, 2)),
     TypeError, "\"slow_conv_dilated<>\" not implemented for 'Int'"),
    ("int8-dilated-1d", lambda: conv.conv1d(np.ones((1, 2, 6), np.int8), np.ones((3, 2, 2), np.int8),
                                            dilation=2),
     TypeError, "\"slow_conv_dilated<>\" not implemented for 'Char'"),
    ("dtype-bias-unsigned", lambda: conv.conv1d(a(1, 2, 6), a(3, 2, 2), np.ones(3, np.uint32)),
     TypeError, "Input type (float) and bias type (unsigned int) should be the same"),
    ("empty-length-1d", lambda: conv.conv1d(a(2, 3, 0), a(4, 3, 1), padding=1), ValueError,
     "Only zero batch or zero channel inputs are supported, but got input shape: [2, 3, 1, 0]"),
    ("reflect-zero-channels-unpadded", lambda: conv.conv1d(a(0, 0, 1), a(2, 0, 1),
                                                           padding_mode="reflect"), ValueError,
     "Expected 2D or 3D (batch mode) tensor with possibly 0 batch size and other non-zero dimensions "
     "for input, but got: [0, 0, 1]"),
    ("replicate-empty-unbatched-1d", lambda: conv.conv1d(a(0, 4), a(2, 0, 3), padding=1,
                                                         padding_mode="replicate"), ValueError,
     "Expected 2D or 3D (batch mode) tensor with possibly 0 batch size and other non-zero dimensions "
     "for input, but got: [0, 4]"),
    ("reflect-too-big", lambda: conv.conv2d(a(1, 1, 3, 3), a(1, 1, 3, 3), padding=3,
                                            padding_mode="reflect"), ValueError,
     "Argument #4: Padding size should be less than the corresponding input dimension, but got: "
     "padding (3, 3) at dimension 3 of input [1, 1, 3, 3]"),
    ("reflect-equal-height", lambda: conv.conv2d(a(1, 1, 2, 5), a(1, 1, 3, 3), padding=2,
                                                 padding_mode="reflect"), ValueError,
     "Argument #6: Padding size should be less than the corresponding input dimension, but got: "
     "padding (2, 2) at dimension 2 of input [1, 1, 2, 5]"),
    ("reflect-unbatched-1d", lambda: conv.conv1d(a(1, 3), a(1, 1, 3), padding=3,
                                                 padding_mode="reflect"), ValueError,
     "Argument #4: Padding size should be less than the corresponding input dimension, but got: "
     "padding (3, 3) at dimension 1 of input [1, 3]"),
    ("circular-wraps-twice", lambda: conv.conv2d(a(1, 1, 3, 3), a(1, 1, 3, 3), padding=4,
                                                 padding_mode="circular"), ValueError,
     "Padding value causes wrapping around more than once."),
    ("replicate-empty", lambda: conv.conv2d(a(1, 1, 0, 2), a(1, 1, 1, 1), padding=1,
                                            padding_mode="replicate"), ValueError,
     "Expected 3D or 4D (batch mode) tensor with possibly 0 batch size and other non-zero dimensions "
     "for input, but got: [1, 1, 0, 2]"),
    ("padding-mode", lambda: conv.conv2d(a(1, 1, 3, 3), a(1, 1, 3, 3), padding_mode="mirror"),
     ValueError, "padding_mode must be one of {'zeros', 'reflect', 'replicate', 'circular'}, but got "
     "padding_mode='mirror'"),
    ("float-stride", lambda: conv.conv2d(a(2, 5, 5, 5), a(12, 5, 3, 3), stride=1.5), TypeError,
     "conv2d(): argument 'stride' must be tuple of ints, but got float"),
    ("float-in-tuple", lambda: conv.conv2d(a(2, 5, 5, 5), a(12, 5, 3, 3), stride=(1, 1.0)), TypeError,
     "conv2d(): argument 'stride' failed to unpack the object at pos 2 with error \"type must be tuple "
     "of ints,but got float\""),
    ("bool-stride", lambda: conv.conv2d(a(2, 5, 5, 5), a(12, 5, 3, 3), stride=True), TypeError,
     "conv2d(): argument 'stride' must be tuple of ints, but got bool"),
    ("float-groups", lambda: conv.conv2d(a(2, 4, 5, 5), a(12, 2, 3, 3), groups=2.0), TypeError,
     "conv2d(): argument 'groups' must be int, not float"),
    ("list-input", lambda: conv.conv2d([1.0], a(12, 5, 3, 3)), TypeError,
     "conv2d() argument 'input' (position 1) must be an array (numpy.ndarray, cupy.ndarray or a CUDA "
     "array), not list"),
    ("list-weight", lambda: conv.conv1d(a(1, 1, 3), [[[1.0]]]), TypeError,
     "conv1d() argument 'weight' (position 2) must be an array (numpy.ndarray, cupy.ndarray or a CUDA "
     "array), not list"),
    ("unknown-backend", lambda: conv.conv1d(a(1, 1, 3), a(1, 1, 1), backend="tpu"), ValueError,
     "unknown backend 'tpu'; expected 'auto' or one of ['reference', 'cpu', 'cupy', 'numba']"),
    ("unknown-algorithm", lambda: conv.conv1d(a(1, 1, 3), a(1, 1, 1), algorithm="fft"), ValueError,
     "backend 'cpu' has no algorithm 'fft'; expected 'auto' or one of ['implicit', 'im2col', 'direct']"),
]


@pytest.mark.parametrize("fn,exc,message", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_error_message(fn, exc, message):
    with pytest.raises(exc) as info:
        fn()
    assert str(info.value) == message


def test_bad_input_leaves_arrays_untouched():
    x, w, b = a(2, 6, 5, 5), a(12, 5, 3, 3), a(12)
    copies = [v.copy() for v in (x, w, b)]
    with pytest.raises(ValueError):
        conv.conv2d(x, w, b)
    for v, c in zip((x, w, b), copies):
        np.testing.assert_array_equal(v, c)


def test_int64_dilated_is_computed_like_pytorch():
    x = np.arange(12, dtype=np.int64).reshape(1, 2, 6)
    w = np.ones((3, 2, 2), np.int64)
    out = conv.conv1d(x, w, dilation=2)
    ref = conv.conv1d(x.astype(np.float64), w.astype(np.float64), dilation=2, backend="reference")
    assert out.dtype == np.int64 and np.array_equal(out, ref.astype(np.int64))


@pytest.mark.parametrize("backend,algorithm", HOST_ALGORITHMS)
def test_inf_and_overflow_propagate_silently(backend, algorithm):
    # PyTorch returns inf/nan without a warning; so do we, even under np.errstate(all="raise").
    w = np.ones((1, 1, 3, 3), np.float32)
    w[0, 0, 0, 0] = np.inf
    x = np.ones((1, 1, 3, 3), np.float32)
    h = np.full((1, 1, 4, 4), 60000, np.float16)
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        out = conv.conv2d(x, w, padding=1, backend=backend, algorithm=algorithm)
        big = conv.conv2d(h, np.ones((1, 1, 2, 2), np.float16), backend=backend, algorithm=algorithm)
    assert np.isnan(out).any() or np.isinf(out).any()
    assert np.isinf(big).all()


def test_big_endian_arrays_are_read_as_their_type():
    x = np.arange(24, dtype=">f4").reshape(1, 2, 12)
    w = np.ones((3, 2, 3), ">f4")
    out = conv.conv1d(x, w)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, conv.conv1d(x.astype("<f4"), w.astype("<f4")))


def test_memoised_specs_never_bypass_a_check():
    # conv._spec caches specs of NumPy calls by shapes, dtypes and plain-int arguments; a bool or
    # float argument equal to a cached int, or a changed dtype, must still be checked afresh.
    x = r.standard_normal((1, 2, 5, 5)).astype(np.float32)
    w = r.standard_normal((4, 2, 3, 3)).astype(np.float32)
    for _ in range(2):
        conv.conv2d(x, w, stride=1, padding=1, groups=1)
        conv.conv2d(x, w, stride=(1, 1), padding=(1, 1))
    for kwargs in ({"stride": True}, {"stride": 1.0}, {"stride": (1, True)}, {"groups": True},
                   {"padding": 1.0}, {"dilation": (1.0, 1)}):
        with pytest.raises(TypeError):
            conv.conv2d(x, w, **kwargs)
    with pytest.raises(TypeError, match="should be the same"):
        conv.conv2d(x, w.astype(np.float64), stride=1, padding=1)
    with pytest.raises(ValueError, match="to have 2 channels"):
        conv.conv2d(x[:, :1], w, stride=1, padding=1)
