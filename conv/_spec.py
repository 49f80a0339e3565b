"""Argument checking shared by every backend: PyTorch's rules and PyTorch's words.

`make_spec` turns the arguments of ``conv1d``/``conv2d`` into a `ConvSpec`, the one description of a
call that every backend consumes. Backends never re-check arguments; they compute the (N, K, P, Q)
output of a 2-D convolution. A 1-D convolution is the 2-D one with H = R = 1 (one code path, two
names), and a 1-D spec's ``stride``/``dilation`` etc. carry 1 for the height.

Mirrors ``torch.nn.functional.conv1d/conv2d`` (aten/src/ATen/native/Convolution.cpp) and, for
``padding_mode``, ``torch.nn.Conv1d/Conv2d._conv_forward`` + ``torch.nn.functional.pad``.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np

from ._arrays import dtype_of, shape_of

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")

# PyTorch's C++ scalar-type names, used in its dtype-mismatch messages.
_TORCH_TYPE_NAMES = {
    np.dtype(np.float16): "c10::Half",
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
    np.dtype(np.complex64): "c10::complex<float>",
    np.dtype(np.complex128): "c10::complex<double>",
    np.dtype(np.int8): "signed char",
    np.dtype(np.int16): "short int",
    np.dtype(np.int32): "int",
    np.dtype(np.int64): "long int",
    np.dtype(np.uint8): "unsigned char",
    np.dtype(np.uint16): "unsigned short",
    np.dtype(np.uint32): "unsigned int",
    np.dtype(np.uint64): "unsigned long",
    np.dtype(np.bool_): "bool",
}
# PyTorch's ScalarType names, used in its "not implemented for" messages.
_TORCH_SCALAR_NAMES = {
    np.dtype(np.int8): "Char",
    np.dtype(np.uint8): "Byte",
    np.dtype(np.int16): "Short",
    np.dtype(np.int32): "Int",
    np.dtype(np.bool_): "Bool",
    np.dtype(np.uint16): "UInt16",
    np.dtype(np.uint32): "UInt32",
    np.dtype(np.uint64): "UInt64",
}

FLOAT_DTYPES = tuple(np.dtype(t) for t in (np.float16, np.float32, np.float64))
COMPLEX_DTYPES = tuple(np.dtype(t) for t in (np.complex64, np.complex128))
INT_DTYPES = tuple(np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64, np.uint8))
SUPPORTED_DTYPES = FLOAT_DTYPES + COMPLEX_DTYPES + INT_DTYPES


def torch_type_name(dtype: np.dtype) -> str:
    return _TORCH_TYPE_NAMES.get(np.dtype(dtype), str(dtype))


@dataclass(frozen=True)
class ConvSpec:
    """One convolution call, checked and normalised to 2-D (conv1d has h = r = 1).

    input (n, c, h, w) -> padded by pad = (top, bottom, left, right) with padding_mode -> convolved
    with weight (k, c // groups, r, s) at stride/dilation -> output (n, k, p, q).
    """

    op: str                                  # "conv1d" or "conv2d"
    n: int
    c: int
    h: int
    w: int
    k: int
    r: int
    s: int
    groups: int
    stride: tuple[int, int]                  # (stride_h, stride_w)
    dilation: tuple[int, int]                # (dilation_h, dilation_w)
    pad: tuple[int, int, int, int]           # (top, bottom, left, right)
    padding_mode: str                        # one of PADDING_MODES
    p: int                                   # output height
    q: int                                   # output width
    has_bias: bool
    dtype: np.dtype
    batched: bool

    @property
    def c_per_group(self) -> int:
        return self.c // self.groups if self.groups else 0

    @property
    def k_per_group(self) -> int:
        return self.k // self.groups if self.groups else 0

    @property
    def output_shape_4d(self) -> tuple[int, int, int, int]:
        # PyTorch quirk, mirrored: an input with zero channels gives an output with zero channels.
        return (self.n, self.k if self.c else 0, self.p, self.q)

    @property
    def output_shape(self) -> tuple[int, ...]:
        n, k, p, q = self.output_shape_4d
        shape = (n, k, p, q) if self.op == "conv2d" else (n, k, q)
        return shape if self.batched else shape[1:]

    @property
    def is_empty(self) -> bool:
        return 0 in self.output_shape_4d

    @property
    def is_depthwise(self) -> bool:
        return self.groups == self.c and self.groups > 1


def _int_tuple(value, name: str, n: int, op: str) -> tuple[int, ...]:
    """PyTorch's IntArrayRef parsing: an int, or a list/tuple of n ints."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, tuple, list)):
        raise TypeError(f"{op}(): argument '{name}' must be tuple of ints, but got "
                        f"{type(value).__name__}")
    if isinstance(value, numbers.Integral):
        return (int(value),) * n
    for pos, item in enumerate(value):
        if isinstance(item, (bool, np.bool_)) or not isinstance(item, numbers.Integral):
            raise TypeError(f"{op}(): argument '{name}' failed to unpack the object at pos {pos + 1} "
                            f"with error \"type must be tuple of ints,but got {type(item).__name__}\"")
    if len(value) == 1:
        return (int(value[0]),) * n
    if len(value) != n:
        shown = "[" + ", ".join(str(int(v)) for v in value) + "]"
        raise ValueError(f"expected {name} to be a single integer value or a list of {n} values to "
                         f"match the convolution dimensions, but got {name}={shown}")
    return tuple(int(v) for v in value)


def _fmt_shape(shape) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def check_dtype_supported(dtype: np.dtype, op: str) -> None:
    if dtype not in SUPPORTED_DTYPES:
        name = _TORCH_SCALAR_NAMES.get(dtype, str(dtype))
        raise TypeError(f"\"{op}\" not implemented for '{name}'")


# PyTorch's dilated CPU kernel has no 8/16/32-bit integer instantiation (int64 it has).
_NO_DILATED_KERNEL = tuple(np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.int32))


def same_padding(kernel: int, dilation: int) -> tuple[int, int]:
    """PyTorch's split of padding='same': total d*(k-1), the smaller half first."""
    total = dilation * (kernel - 1)
    return total // 2, total - total // 2


def make_spec(op: str, input, weight, bias, stride, padding, dilation, groups,
              padding_mode: str = "zeros") -> ConvSpec:
    """Check every argument as PyTorch does and return the normalised call description.

    Raises ValueError/TypeError with PyTorch's wording; computes nothing and touches no array.
    """
    nsp = 1 if op == "conv1d" else 2          # spatial dimensions
    for pos, (arg, name) in enumerate(((input, "input"), (weight, "weight")), start=1):
        if shape_of(arg) is None:
            raise TypeError(f"{op}() argument '{name}' (position {pos}) must be an array "
                            f"(numpy.ndarray, cupy.ndarray or a CUDA array), not {type(arg).__name__}")
    if bias is not None and shape_of(bias) is None:
        raise TypeError(f"{op}() argument 'bias' (position 3) must be an array or None, "
                        f"not {type(bias).__name__}")
    if not isinstance(padding_mode, str) or padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {{'zeros', 'reflect', 'replicate', "
                         f"'circular'}}, but got padding_mode={padding_mode!r}")
    if isinstance(groups, (bool, np.bool_)) or not isinstance(groups, numbers.Integral):
        raise TypeError(f"{op}(): argument 'groups' must be int, not {type(groups).__name__}")
    groups = int(groups)
    stride_t = _int_tuple(stride, "stride", nsp, op)
    dilation_t = _int_tuple(dilation, "dilation", nsp, op)
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(f"Invalid padding string: {padding!r}")
        padding_t = None
    else:
        padding_t = _int_tuple(padding, "padding", nsp, op)

    x_shape, w_shape = tuple(shape_of(input)), tuple(shape_of(weight))
    if len(x_shape) not in (nsp + 1, nsp + 2):
        raise ValueError(f"Expected {nsp + 1}D (unbatched) or {nsp + 2}D (batched) input to {op}, "
                         f"but got input of size: {_fmt_shape(x_shape)}")
    batched = len(x_shape) == nsp + 2
    x4 = x_shape if batched else (1,) + x_shape      # the batched view PyTorch checks against
    if len(w_shape) != nsp + 2:
        raise ValueError(f"Expected {len(w_shape)}-dimensional input for {len(w_shape)}-dimensional "
                         f"weight {_fmt_shape(w_shape)}, but got {len(x4)}-dimensional input of size "
                         f"{_fmt_shape(x4)} instead")

    if padding_t is not None and any(v < 0 for v in padding_t):
        raise ValueError("negative padding is not supported")
    if any(v <= 0 for v in stride_t):
        raise ValueError("non-positive stride is not supported")
    if any(v <= 0 for v in dilation_t):
        raise ValueError("non-positive dilation is not supported")
    if groups <= 0:
        raise ValueError("non-positive groups is not supported")
    if padding == "same" and any(v != 1 for v in stride_t):
        raise ValueError("padding='same' is not supported for strided convolutions")

    k = w_shape[0]
    if k < groups:
        raise ValueError(f"Given groups={groups}, expected weight to be at least {groups} at "
                         f"dimension 0, but got weight of size {_fmt_shape(w_shape)} instead")
    if k % groups:
        raise ValueError(f"Given groups={groups}, expected weight to be divisible by {groups} at "
                         f"dimension 0, but got weight of size [{_fmt_shape(w_shape)}] instead")
    if x4[1] != w_shape[1] * groups:
        raise ValueError(f"Given groups={groups}, weight of size {_fmt_shape(w_shape)}, expected "
                         f"input{_fmt_shape(x4)} to have {w_shape[1] * groups} channels, but got "
                         f"{x4[1]} channels instead")
    if bias is not None:
        b_shape = tuple(shape_of(bias))
        if len(b_shape) != 1 or b_shape[0] != k:
            raise ValueError(f"Given weight of size {_fmt_shape(w_shape)}, expected bias to be "
                             f"1-dimensional with {k} elements, but got bias of size "
                             f"{_fmt_shape(b_shape)} instead")
    kernel = w_shape[2:]
    if any(v == 0 for v in kernel):
        names = ("kernel_height: " + (str(kernel[0]) if nsp == 2 else "1") + " kernel_width: "
                 + str(kernel[-1]))
        raise ValueError(f"kernel size should be greater than zero, but got {names}")

    # Padding as (lo, hi) per spatial dim.
    if padding == "valid":
        pads = [(0, 0)] * nsp
    elif padding == "same":
        pads = [same_padding(kern, dil) for kern, dil in zip(kernel, dilation_t)]
    else:
        pads = [(p, p) for p in padding_t]

    spatial = x4[2:]
    padded = [size + lo + hi for size, (lo, hi) in zip(spatial, pads)]
    dilated = [d * (kern - 1) + 1 for kern, d in zip(kernel, dilation_t)]
    if any(pz < dk for pz, dk in zip(padded, dilated)):
        raise ValueError(f"Calculated padded input size per channel: ({' x '.join(map(str, padded))})."
                         f" Kernel size: ({' x '.join(map(str, dilated))}). Kernel size can't be "
                         f"greater than actual input size")

    if padding_mode != "zeros":
        # nn.Conv*d runs F.pad before every non-zeros-mode conv, even with zero padding.
        _check_pad_mode(padding_mode, x_shape, pads)
    if any(v == 0 for v in spatial) and x4[0] and x4[1] and not (
            padding_mode != "zeros" and any(lo or hi for lo, hi in pads)):
        # PyTorch runs conv1d as conv2d with height 1, and shows that 4-D shape here.
        shown = x4 if nsp == 2 else (x4[0], x4[1], 1, x4[2])
        raise ValueError(f"Only zero batch or zero channel inputs are supported, but got input shape: "
                         f"{_fmt_shape(shown)}")

    x_dtype, w_dtype = dtype_of(input), dtype_of(weight)
    check_dtype_supported(x_dtype, op)
    if x_dtype in _NO_DILATED_KERNEL and any(d > 1 for d in dilation_t):
        raise TypeError(f"\"slow_conv_dilated<>\" not implemented for "
                        f"'{_TORCH_SCALAR_NAMES[x_dtype]}'")
    if x_dtype != w_dtype:
        raise TypeError(f"Input type ({torch_type_name(x_dtype)}) and weight type "
                        f"({torch_type_name(w_dtype)}) should be the same")
    if bias is not None and dtype_of(bias) != x_dtype:
        raise TypeError(f"Input type ({torch_type_name(x_dtype)}) and bias type "
                        f"({torch_type_name(dtype_of(bias))}) should be the same")

    out = [(pz - dk) // st + 1 for pz, dk, st in zip(padded, dilated, stride_t)]
    if nsp == 1:
        pads = [(0, 0)] + pads
        stride_t, dilation_t, kernel, spatial, out = ((1,) + stride_t, (1,) + dilation_t,
                                                      (1,) + tuple(kernel), (1,) + tuple(spatial),
                                                      [1] + out)
    return ConvSpec(op=op, n=x4[0], c=x4[1], h=spatial[0], w=spatial[1], k=k, r=kernel[0],
                    s=kernel[1], groups=groups, stride=tuple(stride_t), dilation=tuple(dilation_t),
                    pad=(pads[0][0], pads[0][1], pads[1][0], pads[1][1]), padding_mode=padding_mode,
                    p=out[0], q=out[1], has_bias=bias is not None, dtype=x_dtype, batched=batched)


def _check_pad_mode(mode: str, x_shape: tuple, pads: list) -> None:
    """torch.nn.functional.pad's checks for reflect/replicate/circular, on the input as given."""
    nsp = len(pads)
    dims = len(x_shape)
    if mode in ("reflect", "replicate") and any(d == 0 for d in x_shape[dims - nsp - 1:]):
        raise ValueError(f"Expected {nsp + 1}D or {nsp + 2}D (batch mode) tensor with possibly 0 "
                         f"batch size and other non-zero dimensions for input, but got: "
                         f"{_fmt_shape(x_shape)}")
    for i, (lo, hi) in enumerate(reversed(pads)):        # last dimension first, as F.pad
        dim = dims - 1 - i
        size = x_shape[dim]
        if mode == "reflect" and (lo >= size or hi >= size):
            raise ValueError(f"Argument #{4 + 2 * i}: Padding size should be less than the "
                             f"corresponding input dimension, but got: padding ({lo}, {hi}) at "
                             f"dimension {dim} of input {_fmt_shape(x_shape)}")
        if mode == "circular" and (lo > size or hi > size):
            raise ValueError("Padding value causes wrapping around more than once.")


# make_spec on NumPy arrays reads only their shapes and dtypes, so its result for a given set of
# shapes, dtypes and plain-int arguments can be reused: the checks cost as much as a small conv.
# Only exact ints, tuples of exact ints and strings are cached (True == 1 and 1.0 == 1 hash
# alike, and those must still raise); errors are never cached.
_SPEC_CACHE: dict = {}


def _plain(value) -> bool:
    if type(value) in (int, str):
        return True
    return type(value) is tuple and all(type(v) is int for v in value)


def make_spec_cached(op: str, input, weight, bias, stride, padding, dilation, groups,
                     padding_mode: str = "zeros") -> ConvSpec:
    """make_spec, memoised for NumPy arrays with plain arguments."""
    arrays = (input, weight) if bias is None else (input, weight, bias)
    if not (all(type(a) is np.ndarray for a in arrays) and _plain(stride) and _plain(padding)
            and _plain(dilation) and type(groups) is int and type(padding_mode) is str):
        return make_spec(op, input, weight, bias, stride, padding, dilation, groups, padding_mode)
    key = (op, stride, padding, dilation, groups, padding_mode, type(stride), type(padding),
           type(dilation)) + tuple((a.shape, a.dtype) for a in arrays) + (bias is None,)
    spec = _SPEC_CACHE.get(key)
    if spec is None:
        spec = make_spec(op, input, weight, bias, stride, padding, dilation, groups, padding_mode)
        if len(_SPEC_CACHE) >= 1024:
            _SPEC_CACHE.clear()
        _SPEC_CACHE[key] = spec
    return spec
