"""Every error PyTorch raises for these calls, raised here as ValueError/TypeError in PyTorch's words,
with nothing computed and no array modified."""
import warnings

import numpy as np
import pytest

import conv
from tests._helpers import HOST_ALGORITHMS, make_operands, refused_by_algorithm
from tests.conftest import torch_or_skip


def a(*shape, dtype=np.float32):
    """One fresh random array (tests/_helpers.make_operands), seeded by its shape and dtype."""
    return make_operands(("test_errors.a", shape, np.dtype(dtype).str), shape, dtype=dtype)[0]


def zero_d_view():
    """A 0-d view into a negative-stride array."""
    return a(6)[::-1][2, ...]


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
    # PyTorch's words for a zero dilation depend on its CPU backend: oneDNN (float32/complex64,
    # here: a batch of 2) and its native kernels (float64, or one small float32 image).
    ("zero-dilation", lambda: conv.conv2d(a(2, 5, 5, 5), a(12, 5, 3, 3), dilation=0), ValueError,
     "non-positive dilation is not supported"),
    ("zero-dilation-native", lambda: conv.conv2d(a(2, 5, 5, 5, dtype=np.float64),
                                                 a(12, 5, 3, 3, dtype=np.float64),
                                                 dilation=(1, 0)),
     ValueError, "dilation should be greater than zero, but got [1, 0]"),
    ("zero-dilation-one-image", lambda: conv.conv2d(a(1, 2, 6, 6), a(3, 2, 3, 3), dilation=0),
     ValueError, "dilation should be greater than zero, but got [0, 0]"),
    ("zero-dilation-1d", lambda: conv.conv1d(a(2, 2, 6, dtype=np.float64), a(3, 2, 3, dtype=np.float64),
                                             dilation=0),
     ValueError, "dilation should be greater than zero, but got [1, 0]"),
    ("zero-dilation-complex128", lambda: conv.conv2d(a(2, 2, 6, 6, dtype=np.complex128),
                                                     a(3, 2, 3, 3, dtype=np.complex128), dilation=0),
     ValueError, "dilation should be greater than zero, but got [0, 0]"),
    ("negative-dilation", lambda: conv.conv2d(a(2, 5, 5, 5), a(12, 5, 3, 3), dilation=(1, -3)),
     ValueError, "dilation should be greater than zero"),
    ("negative-dilation-before-groups", lambda: conv.conv2d(a(2, 4, 6, 6), a(6, 4, 3, 3),
                                                            dilation=-1, groups=8),
     ValueError, "dilation should be greater than zero"),
    ("zero-dilation-after-groups", lambda: conv.conv2d(a(2, 4, 6, 6), a(6, 4, 3, 3), dilation=0,
                                                       groups=8),
     ValueError, "Given groups=8, expected weight to be at least 8 at dimension 0, but got weight of "
     "size [6, 4, 3, 3] instead"),
    ("zero-kernel-dilated", lambda: conv.conv2d(a(2, 2, 6, 6, dtype=np.float64),
                                                a(3, 2, 3, 0, dtype=np.float64), dilation=2),
     ValueError, "kernel size should be greater than zero, but got [3, 0]"),
    ("zero-kernel-native", lambda: conv.conv2d(a(1, 2, 6, 6), a(3, 2, 0, 3)), ValueError,
     "kernel size should be greater than zero, but got kernel_height: 0 kernel_width: 3"),
    ("zero-kernel-same", lambda: conv.conv2d(a(1, 2, 6, 6, dtype=np.float64),
                                             a(3, 2, 3, 0, dtype=np.float64), padding="same"),
     ValueError, "kernel size should be greater than zero, but got kernel_height: 3 kernel_width: 0"),
    ("weight-0d", lambda: conv.conv2d(a(2, 4, 6, 6), a()), ValueError,
     "weight should have at least three dimensions"),
    ("weight-0d-view", lambda: conv.conv1d(a(2, 4, 6), zero_d_view()), ValueError,
     "weight should have at least three dimensions"),
    ("weight-1d", lambda: conv.conv1d(a(2, 4, 6), a(6)), ValueError,
     "weight should have at least three dimensions"),
    ("weight-2d-same", lambda: conv.conv2d(a(2, 4, 6, 6), a(6, 4), padding="same"), ValueError,
     "weight should have at least three dimensions"),
    ("weight-2d-groups0", lambda: conv.conv2d(a(2, 4, 6, 6), a(6, 4), groups=0), ValueError,
     "weight should have at least three dimensions"),
    ("weight-3d-conv2d", lambda: conv.conv2d(a(2, 4, 6, 6), a(6, 4, 3)), ValueError,
     "expected stride to be a single integer value or a list of 1 values to match the convolution "
     "dimensions, but got stride=[1, 1]"),
    ("weight-5d-conv2d-stride1", lambda: conv.conv2d(a(2, 4, 6, 6), a(6, 4, 3, 3, 3), stride=(1,)),
     ValueError, "expected padding to be a single integer value or a list of 3 values to match the "
     "convolution dimensions, but got padding=[0, 0]"),
    ("weight-3d-conv2d-list-params", lambda: conv.conv2d(a(2, 4, 6, 6), a(6, 4, 3), stride=[1],
                                                         padding=[0], dilation=[1]),
     ValueError, "expected output_padding to be a single integer value or a list of 1 values to "
     "match the convolution dimensions, but got output_padding=[0, 0]"),
    ("weight-3d-valid", lambda: conv.conv2d(a(2, 4, 6, 6), a(6, 4, 3), padding="valid", stride=[1],
                                            dilation=[1]),
     ValueError, "Expected 3-dimensional input for 3-dimensional weight [6, 4, 3], but got "
     "4-dimensional input of size [2, 4, 6, 6] instead"),
    ("weight-3d-same", lambda: conv.conv2d(a(2, 4, 6, 6), a(6, 4, 3), padding="same"), ValueError,
     "Expected 3-dimensional input for 3-dimensional weight[6, 4, 3], but got 4-dimensional input "
     "of size [2, 4, 6, 6] instead"),
    ("tuple-length-checked-against-weight", lambda: conv.conv2d(a(2, 4, 6, 6), a(6, 4, 3, 3),
                                                                padding=(1, 1, 1),
                                                                dilation=(1, 1, 1)),
     ValueError, "expected padding to be a single integer value or a list of 2 values to match the "
     "convolution dimensions, but got padding=[1, 1, 1]"),
    ("same-stride-broadcast", lambda: conv.conv2d(a(2, 4, 6, 6), a(6, 4, 3, 3), padding="same",
                                                  stride=(1, 1, 1)),
     ValueError, "stride cannot broadcast to 2 dimensions"),
    ("same-dilation-broadcast", lambda: conv.conv2d(a(2, 4, 6, 6), a(6, 4, 3, 3), padding="same",
                                                    dilation=()),
     ValueError, "dilation cannot broadcast to 2 dimensions"),
    ("same-zero-stride", lambda: conv.conv2d(a(2, 4, 6, 6), a(6, 4, 3, 3), padding="same", stride=0),
     ValueError, "padding='same' is not supported for strided convolutions"),
    ("same-negative-dilation", lambda: conv.conv1d(a(2, 4, 6), a(6, 4, 3), padding="same",
                                                   dilation=-1),
     ValueError, "negative padding is not supported"),
    ("same-channels-shows-padded-input", lambda: conv.conv2d(a(2, 6, 5, 5), a(12, 5, 2, 2),
                                                             padding="same"),
     ValueError, "Given groups=1, weight of size [12, 5, 2, 2], expected input[2, 6, 6, 6] to have 5 "
     "channels, but got 6 channels instead"),
    ("padding-at-most", lambda: conv.conv2d(a(1, 2, 5, 5), a(3, 2, 3, 3), padding=2**62), ValueError,
     "Given padding=4611686018427387904 at dimension 0 , expected padding to be at most "
     "4611686018427387903"),
    ("padding-at-most-dim1", lambda: conv.conv2d(a(1, 2, 5, 5), a(3, 2, 3, 3), padding=(0, 2**62)),
     ValueError, "Given padding=4611686018427387904 at dimension 1 , expected padding to be at most "
     "4611686018427387903"),
    ("padding-at-most-1d-empty", lambda: conv.conv1d(a(0, 2, 5), a(3, 2, 3), padding=2**62),
     ValueError, "Given padding=4611686018427387904 at dimension 0 , expected padding to be at most "
     "4611686018427387903"),
    ("padding-at-most-after-bias", lambda: conv.conv2d(a(1, 2, 5, 5), a(3, 2, 3, 3), a(2),
                                                       padding=2**62),
     ValueError, "Given weight of size [3, 2, 3, 3], expected bias to be 1-dimensional with 3 elements,"
     " but got bias of size [2] instead"),
    ("padding-at-most-before-dtype", lambda: conv.conv2d(a(1, 2, 5, 5), a(3, 2, 3, 3, dtype=np.float64),
                                                         padding=2**62),
     ValueError, "Given padding=4611686018427387904 at dimension 0 , expected padding to be at most "
     "4611686018427387903"),
    ("stride-overflow", lambda: conv.conv2d(a(1, 2, 5, 5), a(3, 2, 3, 3), stride=2**63), ValueError,
     "Overflow when unpacking long long"),
    ("dilation-overflow", lambda: conv.conv1d(a(1, 2, 5), a(3, 2, 3), dilation=2**64), ValueError,
     "Overflow when unpacking long long"),
    ("padding-overflow", lambda: conv.conv1d(a(1, 2, 5), a(3, 2, 3), padding=2**63), ValueError,
     "Overflow when unpacking long long"),
    ("groups-overflow", lambda: conv.conv2d(a(1, 2, 5, 5), a(3, 2, 3, 3), groups=2**63), ValueError,
     "Overflow when unpacking long long"),
    ("negative-stride-overflow", lambda: conv.conv2d(a(1, 2, 5, 5), a(3, 2, 3, 3), stride=-2**63 - 1),
     ValueError, "Overflow when unpacking long long"),
    ("overflow-before-input-dims", lambda: conv.conv2d(a(5, 5), a(3, 2, 3, 3), stride=2**63),
     ValueError, "Overflow when unpacking long long"),
    ("overflow-in-tuple", lambda: conv.conv2d(a(1, 2, 5, 5), a(3, 2, 3, 3), stride=(1, 2**63)),
     TypeError, "conv2d(): argument 'stride' failed to unpack the object at pos 2 with error "
     "\"Overflow when unpacking long long\""),
    ("bias-0d", lambda: conv.conv2d(a(2, 4, 6, 6), a(1, 4, 3, 3), a()), ValueError,
     "Given weight of size [1, 4, 3, 3], expected bias to be 1-dimensional with 1 elements, but got "
     "bias of size [] instead"),
    ("bias-0d-same", lambda: conv.conv1d(a(2, 4, 6), a(1, 4, 3), zero_d_view(), padding="same"),
     ValueError, "Given weight of size [1, 4, 3], expected bias to be 1-dimensional with 1 elements, "
     "but got bias of size [] instead"),
    ("input-0d", lambda: conv.conv2d(a(), a(1, 4, 3, 3)), ValueError,
     "Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: []"),
    ("input-0d-view", lambda: conv.conv1d(zero_d_view(), a(1, 4, 3)), ValueError,
     "Expected 2D (unbatched) or 3D (batched) input to conv1d, but got input of size: []"),
    ("bias-dtype-before-input-dims", lambda: conv.conv2d(a(6, 6), a(6, 4, 3, 3),
                                                         a(6, dtype=np.float64)),
     TypeError, "Input type (float) and bias type (double) should be the same"),
    ("padding-string-after-input-dims", lambda: conv.conv2d(a(6, 6), a(6, 4, 3, 3), padding="foo"),
     ValueError, "Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: "
     "[6, 6]"),
    ("padding-string-before-weight-dims", lambda: conv.conv2d(a(2, 4, 6, 6), a(6), padding="foo"),
     ValueError, "Invalid padding string: 'foo'"),
    ("bool-dilated", lambda: conv.conv2d(np.ones((2, 3, 8, 8), np.bool_), np.ones((2, 3, 3, 3), np.bool_),
                                         dilation=2),
     TypeError, "\"slow_conv_dilated<>\" not implemented for 'Bool'"),
    ("complex-weight-dtype-first", lambda: conv.conv2d(a(2, 4, 6, 6, dtype=np.complex64),
                                                       a(6, dtype=np.complex128)),
     TypeError, "Input type (c10::complex<float>) and weight type (c10::complex<double>) should be "
     "the same"),
    ("masked-input", lambda: conv.conv2d(np.ma.masked_array(a(2, 4, 6, 6), mask=False), a(6, 4, 3, 3)),
     TypeError, "conv2d() argument 'input' (position 1) is a numpy.ma.MaskedArray: masked arrays are "
     "not supported (pass input.filled(value) or input.data)"),
    ("masked-weight", lambda: conv.conv1d(a(2, 4, 6), np.ma.masked_array(a(6, 4, 3))), TypeError,
     "conv1d() argument 'weight' (position 2) is a numpy.ma.MaskedArray: masked arrays are not "
     "supported (pass weight.filled(value) or weight.data)"),
    ("masked-bias", lambda: conv.conv1d(a(2, 4, 6), a(6, 4, 3), np.ma.masked_array(a(6), mask=True)),
     TypeError, "conv1d() argument 'bias' (position 3) is a numpy.ma.MaskedArray: masked arrays are "
     "not supported (pass bias.filled(value) or bias.data)"),
    ("object-array", lambda: conv.conv2d(a(2, 4, 6, 6).astype(object), a(6, 4, 3, 3)), TypeError,
     "\"conv2d\" not implemented for 'object'"),
    ("object-weight-on-empty-input", lambda: conv.conv2d(a(0, 4, 6, 6), a(6, 4, 3, 3).astype(object)),
     TypeError, "\"conv2d\" not implemented for 'object'"),
    ("string-array", lambda: conv.conv1d(np.array([["1", "2", "3"]]), np.array([[["1"]]])), TypeError,
     "\"conv1d\" not implemented for '<U1'"),
    ("string-input", lambda: conv.conv1d("abc", a(1, 1, 1)), TypeError,
     "conv1d() argument 'input' (position 1) must be an array (numpy.ndarray, cupy.ndarray or a CUDA "
     "array), not str"),
    ("nested-list-input", lambda: conv.conv1d([[[1.0, 2.0]]], a(1, 1, 1)), TypeError,
     "conv1d() argument 'input' (position 1) must be an array (numpy.ndarray, cupy.ndarray or a CUDA "
     "array), not list"),
    ("0d-bool-groups", lambda: conv.conv2d(a(2, 4, 6, 6), a(6, 4, 3, 3), groups=np.array(True)),
     TypeError, "conv2d(): argument 'groups' must be int, not ndarray"),
    ("1d-array-groups", lambda: conv.conv2d(a(2, 4, 6, 6), a(6, 4, 3, 3), groups=np.array([1])),
     TypeError, "conv2d(): argument 'groups' must be int, not ndarray"),
    ("backend-not-a-string", lambda: conv.conv2d(a(1, 1, 3, 3), a(1, 1, 1, 1), backend=["cpu"]),
     TypeError, "backend must be a string ('auto' or a name from conv.backends()), not list"),
    ("algorithm-not-a-string", lambda: conv.conv2d(a(1, 1, 3, 3), a(1, 1, 1, 1), algorithm=None),
     TypeError, "algorithm must be a string ('auto' or one of the backend's algorithms), not NoneType"),
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
    ("unknown-algorithm", lambda: conv.conv1d(a(1, 1, 3), a(1, 1, 1), algorithm="fast"), ValueError,
     "backend 'cpu' has no algorithm 'fast'; expected 'auto' or one of ['implicit', 'im2col', 'direct', "
     "'fft', 'winograd']"),
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
    # Tap (0, 0) is inf: where it reads an input 1 the output is +inf; where it reads the zero
    # padding (first row and column) inf * 0 is nan, as in PyTorch's native CPU kernels (README).
    assert np.isposinf(out[0, 0, 1:, 1:]).all(), out
    assert np.isnan(out[0, 0, 0, :]).all() and np.isnan(out[0, 0, :, 0]).all(), out
    assert np.isposinf(big).all()


def test_big_endian_arrays_are_read_as_their_type():
    x = np.arange(24, dtype=">f4").reshape(1, 2, 12)
    w = np.ones((3, 2, 3), ">f4")
    out = conv.conv1d(x, w)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, conv.conv1d(x.astype("<f4"), w.astype("<f4")))


def test_memoised_specs_never_bypass_a_check():
    # conv._spec caches specs of NumPy calls by shapes, dtypes and plain-int arguments; a bool or
    # float argument equal to a cached int, or a changed dtype, must still be checked afresh.
    x, w, _ = make_operands("memoised-specs", (1, 2, 5, 5), (4, 2, 3, 3), "float32")
    for _ in range(2):
        conv.conv2d(x, w, stride=1, padding=1, groups=1)
        conv.conv2d(x, w, stride=(1, 1), padding=(1, 1))
    for kwargs in ({"stride": True}, {"stride": 1.0}, {"stride": (1, True)}, {"groups": True},
                   {"padding": 1.0}, {"dilation": (1.0, 1)}, {"groups": np.array(True)},
                   {"stride": (np.array(1.0), 1)}, {"groups": np.bool_(True)}):
        with pytest.raises(TypeError):
            conv.conv2d(x, w, **kwargs)
    with pytest.raises(TypeError, match="should be the same"):
        conv.conv2d(x, w.astype(np.float64), stride=1, padding=1)
    with pytest.raises(ValueError, match="to have 2 channels"):
        conv.conv2d(x[:, :1], w, stride=1, padding=1)


def _poison_cpu_output(monkeypatch):
    # Every CPU algorithm writes every output element: start them from NaN (a sentinel for ints).
    import conv.backend.cpu
    monkeypatch.setattr(conv.backend.cpu, "_new_output", lambda shape, dtype: np.full(
        shape, np.nan if np.dtype(dtype).kind in "fc" else 77, dtype))


HUGE_STRIDES = [2**62, (1, 2**62), 2**63 - 1]


@pytest.mark.parametrize("stride", HUGE_STRIDES, ids=str)
@pytest.mark.parametrize("dtype", ["int64", "int8", "float32", "complex64"])
@pytest.mark.parametrize("backend,algorithm", HOST_ALGORITHMS)
def test_huge_stride_computes(backend, algorithm, dtype, stride, rng, monkeypatch):
    # PyTorch accepts any stride below 2**63; past the input it reads one window per dimension.
    if refused_by_algorithm(algorithm, dtype):
        pytest.skip("cpu:implicit computes floating point only, cpu:fft no integers")
    _poison_cpu_output(monkeypatch)
    x, w, b = make_operands(rng, (2, 3, 5, 6), (4, 3, 3, 2), dtype, bias=True)
    sane = tuple(7 if s > 1 else 1 for s in np.broadcast_to(np.array(stride, dtype=object), 2))
    out = conv.conv2d(x, w, b, stride=stride, backend=backend, algorithm=algorithm)
    expected = conv.conv2d(x, w, b, stride=sane, backend="reference")
    assert out.dtype == x.dtype and out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend,algorithm", HOST_ALGORITHMS)
def test_huge_dilation_of_a_one_tap_kernel_computes(backend, algorithm, rng):
    x, w, _ = make_operands(rng, (2, 3, 5, 6), (4, 3, 1, 2), "float64")
    out = conv.conv2d(x, w, dilation=(2**63 - 1, 3), backend=backend, algorithm=algorithm)
    np.testing.assert_allclose(out, conv.conv2d(x, w, dilation=(1, 3), backend="reference"),
                               rtol=1e-12, atol=1e-12)


def test_dilated_kernel_past_int64_is_refused_exactly():
    # PyTorch's int64 arithmetic wraps here (and returns an output); ours is exact.
    with pytest.raises(ValueError) as info:
        conv.conv2d(a(1, 2, 5, 5), a(3, 2, 3, 3), dilation=2**62)
    assert str(info.value) == ("Calculated padded input size per channel: (5 x 5). Kernel size: "
                               "(9223372036854775809 x 9223372036854775809). Kernel size can't be "
                               "greater than actual input size")


EMPTY_ACCEPTED = [
    # PyTorch gives an input with zero batch or zero channels an empty output before its backend
    # checks: integer dilated kernels, zero dilation and a weight of another dtype pass there.
    ("int8-dilated-zero-batch", (0, 3, 8, 8), (2, 3, 3, 3), "int8", "int8", dict(dilation=2),
     (0, 2, 4, 4)),
    ("int32-dilated-zero-channels", (2, 0, 8, 8), (2, 0, 3, 3), "int32", "int32", dict(dilation=2),
     (2, 0, 4, 4)),
    ("uint8-dilated-zero-batch-1d", (0, 3, 8), (2, 3, 3), "uint8", "uint8", dict(dilation=3),
     (0, 2, 2)),
    ("zero-dilation-zero-batch", (0, 3, 6, 6), (2, 3, 3, 3), "float32", "float32", dict(dilation=0),
     (0, 2, 6, 6)),
    ("dtype-mismatch-zero-batch", (0, 3, 6, 6), (2, 3, 3, 3), "float32", "float64", {},
     (0, 2, 4, 4)),
]


@pytest.mark.parametrize("xs,ws,xdt,wdt,kwargs,shape", [e[1:] for e in EMPTY_ACCEPTED],
                         ids=[e[0] for e in EMPTY_ACCEPTED])
@pytest.mark.parametrize("backend,algorithm", HOST_ALGORITHMS)
def test_empty_inputs_skip_the_backend_checks(backend, algorithm, xs, ws, xdt, wdt, kwargs, shape):
    if refused_by_algorithm(algorithm, xdt):
        pytest.skip("cpu:implicit computes floating point only, cpu:fft no integers")
    op = "conv1d" if len(xs) == 3 else "conv2d"
    out = getattr(conv, op)(a(*xs, dtype=xdt), a(*ws, dtype=wdt), backend=backend,
                            algorithm=algorithm, **kwargs)
    assert out.shape == shape and out.dtype == np.dtype(xdt)


def test_bool_input_is_refused_even_when_empty():
    # Ours: PyTorch returns an empty bool output here.
    with pytest.raises(TypeError, match="\"conv2d\" not implemented for 'Bool'"):
        conv.conv2d(np.ones((0, 3, 6, 6), bool), np.ones((2, 3, 3, 3), bool))


def test_integer_like_arguments_are_ints(rng):
    x, w, _ = make_operands(rng, (2, 4, 7, 7), (6, 2, 3, 3), "float32")
    expected = conv.conv2d(x, w, stride=(2, 1), padding=1, groups=2)
    for kwargs in (dict(groups=np.array(2)), dict(groups=np.int64(2), stride=(np.array(2), 1)),
                   dict(groups=np.uint8(2), stride=(np.int32(2), np.array(1)), padding=np.int16(1))):
        merged = dict(stride=(2, 1), padding=1, groups=2)
        merged.update(kwargs)
        np.testing.assert_array_equal(conv.conv2d(x, w, **merged), expected)
    assert conv.explain("conv2d", x, w, groups=np.array(2)).backend == "cpu"


def test_torch_cpu_tensors_in_give_torch_cpu_tensors_out():
    torch = torch_or_skip()
    x, w, b = a(2, 4, 6, 6), a(6, 4, 3, 3), a(6)
    expected = conv.conv2d(x, w, b, padding=1)
    for args in ((torch.from_numpy(x), w, b), (x, torch.from_numpy(w), b),
                 (x, w, torch.from_numpy(b)), tuple(map(torch.from_numpy, (x, w, b)))):
        out = conv.conv2d(*args, padding=1)
        # The input's kind comes back: a tensor for a tensor input, NumPy otherwise.
        assert type(out) is (torch.Tensor if isinstance(args[0], torch.Tensor) else np.ndarray)
        np.testing.assert_array_equal(np.asarray(out), expected)
        assert conv.explain("conv2d", *args, padding=1).backend == "cpu"
    # Zero-copy both ways: the kernels read the tensor's memory; the result is a tensor over
    # the output's memory (torch.from_numpy).
    seen = []
    real = conv.plan.execute

    def recording(plan, x_, w_, b_):
        seen.append(x_)
        return real(plan, x_, w_, b_)

    tx = torch.from_numpy(x.copy())
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(conv.plan, "execute", recording)
        out = conv.conv2d(tx, w, b, padding=1)
    assert np.shares_memory(seen[0], tx.numpy())
    np.testing.assert_array_equal(tx.numpy(), x)                 # the caller's tensor untouched
    assert not out.requires_grad and out.dtype == torch.float32
    # Tensors that require grad, and lazily conjugated ones, are read as their values.
    xg = torch.from_numpy(x.copy()).requires_grad_()
    np.testing.assert_array_equal(conv.conv2d(xg, w, b, padding=1).numpy(), expected)
    xc = torch.from_numpy((x + 1j * x[::-1]).astype(np.complex64))
    out = conv.conv2d(xc.conj(), w.astype(np.complex64), padding=1)
    np.testing.assert_allclose(out.numpy(), conv.conv2d(np.conj(xc.numpy()), w.astype(
        np.complex64), padding=1), rtol=1e-6)


def test_torch_cpu_dtypes_numpy_lacks_are_refused_clearly():
    """float8 has no NumPy dtype here (bfloat16 has: ml_dtypes, tests/test_bfloat16.py)."""
    torch = torch_or_skip()
    x, w = torch.ones(1, 2, 5, 5).to(torch.float8_e4m3fn), torch.ones(3, 2, 3, 3).to(
        torch.float8_e4m3fn)
    for call in (lambda: conv.conv2d(x, w), lambda: conv.explain("conv2d", x, w)):
        with pytest.raises(TypeError, match="no kernels for PyTorch dtype torch.float8_e4m3fn"):
            call()


@pytest.mark.parametrize("backend,algorithm", [h for h in HOST_ALGORITHMS if h[1] != "implicit"])
def test_masked_arrays_are_refused_by_every_algorithm(backend, algorithm):
    x = np.ma.masked_array(a(2, 4, 6, 6), mask=a(2, 4, 6, 6) > 0)
    with pytest.raises(TypeError, match="masked arrays are not supported"):
        conv.conv2d(x, a(6, 4, 3, 3), backend=backend, algorithm=algorithm)


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
@pytest.mark.parametrize("backend,algorithm", [h for h in HOST_ALGORITHMS if h[1] != "implicit"])
def test_complex_inf_gives_pytorchs_nan(backend, algorithm, dtype, rng):
    # PyTorch convolves complex arrays as three real convolutions (Gauss's trick):
    # inf * (1+1j) comes out nan+nanj there, inf+infj from a complex multiply-add.
    x, w, b = make_operands(rng, (2, 2, 9), (3, 2, 3), dtype, bias=True)
    x[1, 0, 4] = np.inf
    w[2, 1, 0] = complex(1, np.inf)
    copies = [v.copy() for v in (x, w, b)]
    out = conv.conv1d(x, w, b, backend=backend, algorithm=algorithm)
    for v, c in zip((x, w, b), copies):
        np.testing.assert_array_equal(v, c)
    touched = np.zeros(out.shape, bool)
    touched[1, :, 2:5] = True                  # every window over x[1, 0, 4]
    touched[:, 2, :] = True                    # every output of the weight holding inf
    assert np.isnan(out.real[touched]).all() and np.isnan(out.imag[touched]).all()
    finite = conv.conv1d(np.where(np.isfinite(x), x, 0), np.where(np.isfinite(w), w, 0), b,
                         backend="reference")
    np.testing.assert_allclose(out[~touched], finite[~touched], rtol=1e-5)



def _huge_arguments(big):
    return [dict(padding=big), dict(padding=(big, 0)), dict(stride=big), dict(dilation=big),
            dict(dilation=big, padding="same"), dict(stride=big, padding=big // 2),
            dict(padding=big, padding_mode="circular"), dict(padding=big, stride=big)]


@pytest.mark.parametrize("big", [2**31, 2**40, 2**62 - 1, 2**63 - 1])
@pytest.mark.parametrize("algorithm", ["auto", "im2col", "direct", "implicit", "fft", "winograd"])
def test_huge_parameters_compute_or_refuse_cleanly(big, algorithm):
    # The call either computes (PyTorch's result: the differential tests) or refuses with
    # ValueError/MemoryError (an output or padded copy no machine holds), never OverflowError or
    # another type from index arithmetic in the planners (once: the fit check building an int64
    # plan).
    operands = (("conv2d",) + make_operands(("huge", big), (2, 2, 5, 6), (3, 2, 3, 2),
                                            "float64")[:2],
                ("conv1d",) + make_operands(("huge", big, 1), (2, 2, 6), (3, 2, 3), "float64")[:2])
    for op, x, w in operands:
        for dtype in ("float32", "int64"):
            if algorithm in ("implicit", "fft", "winograd") and dtype == "int64":
                continue
            for kwargs in _huge_arguments(big):
                if op == "conv1d":
                    kwargs = {k: (v[0] if isinstance(v, tuple) else v) for k, v in kwargs.items()}
                try:
                    getattr(conv, op)(x.astype(dtype), w.astype(dtype), algorithm=algorithm,
                                      **kwargs)
                except (ValueError, TypeError, MemoryError):
                    pass
