"""Argument checking shared by every backend: PyTorch's rules and PyTorch's words.

`make_spec` turns the arguments of ``conv1d``/``conv2d`` into a `ConvSpec`, the one description of a
call that every backend consumes. Backends add only what their algorithms cannot compute
(`check_supported`, asked while resolving, so conv.explain refuses it too); they compute the
(N, K, P, Q) output of a 2-D convolution. A 1-D convolution is the 2-D one with H = R = 1 (one code path, two
names), and a 1-D spec's ``stride``/``dilation`` etc. carry 1 for the height.

Mirrors ``torch.nn.functional.conv1d/conv2d`` (aten/src/ATen/native/Convolution.cpp) and, for
``padding_mode``, ``torch.nn.Conv1d/Conv2d._conv_forward`` + ``torch.nn.functional.pad``.
"""
from __future__ import annotations

import numbers
import operator
import dataclasses
from dataclasses import dataclass

import numpy as np

from ._arrays import dtype_of, shape_of
from ._dtypes import BFLOAT16
from ._padding import PADDING_MODES

# PyTorch's C++ scalar-type names, used in its dtype-mismatch messages.
_TORCH_TYPE_NAMES = {
    np.dtype(np.float16): "c10::Half",
    BFLOAT16: "c10::BFloat16",
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

FLOAT_DTYPES = tuple(np.dtype(t) for t in (np.float16, BFLOAT16, np.float32, np.float64))
COMPLEX_DTYPES = tuple(np.dtype(t) for t in (np.complex64, np.complex128))
INT_DTYPES = tuple(np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64, np.uint8))
SUPPORTED_DTYPES = FLOAT_DTYPES + COMPLEX_DTYPES + INT_DTYPES


def torch_type_name(dtype: np.dtype) -> str:
    return _TORCH_TYPE_NAMES.get(np.dtype(dtype), str(dtype))


@dataclass(frozen=True)
class ConvSpec:
    """One convolution call, checked and normalised to 2-D (conv1d has h = r = 1).

    input (n, c, h, w) -> padded by pad = (top, bottom, left, right) with padding_mode -> convolved
    with weight (k, c // groups, r, s) at stride/dilation -> output (n, k, p, q). A stride along a
    dimension with one output and a dilation along a one-tap kernel dimension are recorded as 1
    (they change nothing that is read); a zero dilation reaches a spec only with an empty output.
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

    def __hash__(self) -> int:
        # Every call hashes its spec in several caches (plans, dispatch lookups, layouts): the
        # dataclass's hash rebuilds a tuple of 18 fields each time, so it is kept after the first.
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(tuple(getattr(self, f.name) for f in dataclasses.fields(self)))
            object.__setattr__(self, "_hash", cached)
        return cached

    def __getstate__(self) -> dict:
        # Not the kept hash: a string's hash differs between processes (a Dask worker's).
        return {name: value for name, value in self.__dict__.items() if name != "_hash"}

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


_INT64_MAX = 2**63 - 1
_INT64_MIN = -2**63
_OVERFLOW = "Overflow when unpacking long long"


def _as_int(value) -> int | None:
    """The int PyTorch's argument parser reads from an int-like value: a Python or NumPy integer,
    a 0-d integer array (anything with __index__ but no bool and no more than 0 dimensions); None
    for anything else."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    dtype = getattr(value, "dtype", None)
    if getattr(value, "ndim", 0) != 0 or str(dtype) in ("bool", "torch.bool"):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _int_list(value, name: str, nsp: int, op: str) -> list[int]:
    """PyTorch's IntArrayRef parsing: an int becomes nsp copies of itself (the length conv1d/conv2d
    declare), a list/tuple of ints is kept as given; its length is checked later, against the
    weight, as PyTorch checks it."""
    if isinstance(value, (tuple, list)):
        items = []
        for pos, item in enumerate(value, start=1):
            number = _as_int(item)
            if number is None:
                raise TypeError(f"{op}(): argument '{name}' failed to unpack the object at pos {pos} "
                                f"with error \"type must be tuple of ints,but got "
                                f"{type(item).__name__}\"")
            if not _INT64_MIN <= number <= _INT64_MAX:
                raise TypeError(f"{op}(): argument '{name}' failed to unpack the object at pos {pos} "
                                f"with error \"{_OVERFLOW}\"")
            items.append(number)
        return items
    number = _as_int(value)
    if number is None:
        raise TypeError(f"{op}(): argument '{name}' must be tuple of ints, but got "
                        f"{type(value).__name__}")
    if not _INT64_MIN <= number <= _INT64_MAX:
        raise ValueError(_OVERFLOW)
    return [number] * nsp


def _expand(values: list[int], name: str, dim: int) -> tuple[int, ...]:
    """at::native expand_param_if_needed: one value for every spatial dimension, or one per dim."""
    if len(values) == 1:
        return tuple(values) * dim
    if len(values) != dim:
        raise ValueError(f"expected {name} to be a single integer value or a list of {dim} values to "
                         f"match the convolution dimensions, but got {name}={_fmt_shape(values)}")
    return tuple(values)


def _fmt_shape(shape) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def check_dtype_supported(dtype: np.dtype, op: str) -> None:
    if dtype not in SUPPORTED_DTYPES:
        name = _TORCH_SCALAR_NAMES.get(dtype, str(dtype))
        raise TypeError(f"\"{op}\" not implemented for '{name}'")


# PyTorch's dilated CPU kernel has no 8/16/32-bit integer instantiation (int64 it has).
_NO_DILATED_KERNEL = tuple(np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.int32))
# The dtypes whose convolutions PyTorch runs on oneDNN (complex64 as float32 real convolutions).
_ONEDNN_DTYPES = (np.dtype(np.float32), np.dtype(np.complex64))


def same_padding(kernel: int, dilation: int) -> tuple[int, int]:
    """PyTorch's split of padding='same': total d*(k-1), the smaller half first."""
    total = dilation * (kernel - 1)
    return total // 2, total - total // 2


def _torch_runs_onednn(dtype: np.dtype, x4: tuple, kernel: tuple, groups: int) -> bool:
    """Whether PyTorch's CPU convolution picks oneDNN for this call (ConvParams::use_mkldnn with the
    shapes in PyTorch's 4-D view). Its wording of a zero dilation depends on it. Only asked for a
    zero dilation or a zero-size kernel, where use_mkldnn's first clause (strided, dilated, or a
    kernel other than 1x1) always holds."""
    n, c, h, w = x4 if len(x4) == 4 else (x4[0], x4[1], 1, x4[2])
    r, s = kernel if len(kernel) == 2 else (1, kernel[0])
    return dtype in _ONEDNN_DTYPES and (groups > 1 or (r > 3 and s > 3) or n > 1
                                        or n * c * h * w > 20480)


def _check_array(a, name: str, pos: int, op: str) -> None:
    """An array argument: an array kind we accept, of a dtype PyTorch has."""
    if name == "bias" and shape_of(a) is None:
        raise TypeError(f"{op}() argument 'bias' (position 3) must be an array or None, "
                        f"not {type(a).__name__}")
    if shape_of(a) is None:
        raise TypeError(f"{op}() argument '{name}' (position {pos}) must be an array "
                        f"(numpy.ndarray, cupy.ndarray or a CUDA array), not {type(a).__name__}")
    if isinstance(a, np.ma.MaskedArray):
        # Every path would read the data under the mask (and numba cannot read it at all).
        raise TypeError(f"{op}() argument '{name}' (position {pos}) is a numpy.ma.MaskedArray: "
                        f"masked arrays are not supported (pass {name}.filled(value) or {name}.data)")
    dtype = dtype_of(a)
    if dtype not in _TORCH_TYPE_NAMES:
        # A dtype PyTorch has no tensors of (object, strings, datetimes, float128, ...).
        raise TypeError(f"\"{op}\" not implemented for '{dtype}'")


def make_spec(op: str, input, weight, bias, stride, padding, dilation, groups,
              padding_mode: str = "zeros") -> ConvSpec:
    """Check every argument as PyTorch does and return the normalised call description.

    Raises ValueError/TypeError with PyTorch's wording, in PyTorch's order (its argument parser,
    conv1d/conv2d, _convolution, check_shape_forward, then its CPU backend's checks, which an input
    with zero batch or zero channels skips); computes nothing and touches no array.
    """
    nsp = 1 if op == "conv1d" else 2          # spatial dimensions
    # --- PyTorch's argument parser: types, and ints that fit in int64.
    _check_array(input, "input", 1, op)
    _check_array(weight, "weight", 2, op)
    if bias is not None:
        _check_array(bias, "bias", 3, op)
    if not isinstance(padding_mode, str) or padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {{'zeros', 'reflect', 'replicate', "
                         f"'circular'}}, but got padding_mode={padding_mode!r}")
    stride_l = _int_list(stride, "stride", nsp, op)
    padding_l = None if isinstance(padding, str) else _int_list(padding, "padding", nsp, op)
    dilation_l = _int_list(dilation, "dilation", nsp, op)
    groups_int = _as_int(groups)
    if groups_int is None:
        raise TypeError(f"{op}(): argument 'groups' must be int, not {type(groups).__name__}")
    if not _INT64_MIN <= groups_int <= _INT64_MAX:
        raise ValueError(_OVERFLOW)
    groups = groups_int

    x_shape, w_shape = tuple(shape_of(input)), tuple(shape_of(weight))
    x_dtype, w_dtype = dtype_of(input), dtype_of(weight)
    b_dtype = None if bias is None else dtype_of(bias)
    # --- conv1d/conv2d: the bias dtype first (PyTorch: for integer padding; we: for every form).
    if b_dtype is not None and b_dtype != x_dtype:
        raise TypeError(f"Input type ({torch_type_name(x_dtype)}) and bias type "
                        f"({torch_type_name(b_dtype)}) should be the same")
    if len(x_shape) not in (nsp + 1, nsp + 2):
        raise ValueError(f"Expected {nsp + 1}D (unbatched) or {nsp + 2}D (batched) input to {op}, "
                         f"but got input of size: {_fmt_shape(x_shape)}")
    batched = len(x_shape) == nsp + 2
    x4 = x_shape if batched else (1,) + x_shape      # the batched view PyTorch checks against
    if x_dtype.kind == "c" and w_dtype != x_dtype:
        # PyTorch's complex path compares the types before anything else.
        raise TypeError(f"Input type ({torch_type_name(x_dtype)}) and weight type "
                        f"({torch_type_name(w_dtype)}) should be the same")
    if isinstance(padding, str) and padding not in ("same", "valid"):
        raise ValueError(f"Invalid padding string: {padding!r}")

    # --- at::_convolution (and convolution_same for padding='same').
    wdim = len(w_shape)
    if wdim < 3:
        raise ValueError("weight should have at least three dimensions")
    if groups <= 0:
        raise ValueError("non-positive groups is not supported")
    dim = wdim - 2                                   # PyTorch counts spatial dims from the weight
    kernel = w_shape[2:]
    if padding == "same":
        if wdim != len(x4):
            raise ValueError(f"Expected {wdim}-dimensional input for {wdim}-dimensional weight"
                             f"{_fmt_shape(w_shape)}, but got {len(x4)}-dimensional input of size "
                             f"{_fmt_shape(x4)} instead")
        for name, values in (("stride", stride_l), ("dilation", dilation_l)):
            if len(values) not in (1, dim):
                raise ValueError(f"{name} cannot broadcast to {dim} dimensions")
        if any(v != 1 for v in stride_l):
            raise ValueError("padding='same' is not supported for strided convolutions")
        stride_t, dilation_t = _expand(stride_l, "stride", dim), _expand(dilation_l, "dilation", dim)
        # (A zero-size kernel gets no padding: it reaches PyTorch's kernel-size check.)
        pads = [same_padding(kern, dil) if kern else (0, 0) for kern, dil in zip(kernel, dilation_t)]
        # PyTorch pads the odd extra element into the input first: its later messages show that
        # padded input.
        x4_shown = x4[:2] + tuple(size + hi - lo for size, (lo, hi) in zip(x4[2:], pads))
    else:
        stride_t = _expand(stride_l, "stride", dim)
        padding_t = _expand([0] if padding == "valid" else padding_l, "padding", dim)
        dilation_t = _expand(dilation_l, "dilation", dim)
        if padding != "valid" and dim != nsp:
            # conv1d/conv2d pass output_padding as [0] / [0, 0]: the last list to be expanded.
            _expand([0] * nsp, "output_padding", dim)
        pads = [(v, v) for v in padding_t]
        x4_shown = x4

    # --- check_shape_forward.
    if any(lo < 0 for lo, _ in pads):
        raise ValueError("negative padding is not supported")
    if any(v <= 0 for v in stride_t):
        raise ValueError("non-positive stride is not supported")
    if any(v < 0 for v in dilation_t):
        raise ValueError("dilation should be greater than zero")
    if wdim != len(x4):
        raise ValueError(f"Expected {wdim}-dimensional input for {wdim}-dimensional weight "
                         f"{_fmt_shape(w_shape)}, but got {len(x4)}-dimensional input of size "
                         f"{_fmt_shape(x4)} instead")
    k = w_shape[0]
    if k < groups:
        raise ValueError(f"Given groups={groups}, expected weight to be at least {groups} at "
                         f"dimension 0, but got weight of size {_fmt_shape(w_shape)} instead")
    if k % groups:
        raise ValueError(f"Given groups={groups}, expected weight to be divisible by {groups} at "
                         f"dimension 0, but got weight of size [{_fmt_shape(w_shape)}] instead")
    if x4[1] != w_shape[1] * groups:
        raise ValueError(f"Given groups={groups}, weight of size {_fmt_shape(w_shape)}, expected "
                         f"input{_fmt_shape(x4_shown)} to have {w_shape[1] * groups} channels, but "
                         f"got {x4[1]} channels instead")
    if bias is not None:
        b_shape = tuple(shape_of(bias))
        if len(b_shape) != 1 or b_shape[0] != k:
            raise ValueError(f"Given weight of size {_fmt_shape(w_shape)}, expected bias to be "
                             f"1-dimensional with {k} elements, but got bias of size "
                             f"{_fmt_shape(b_shape)} instead")
    for i, (lo, _) in enumerate(pads):
        if lo > _INT64_MAX - lo:        # PyTorch's guard against 2 * padding overflowing int64
            raise ValueError(f"Given padding={lo} at dimension {i} , expected padding to be at most "
                             f"{_INT64_MAX // 2}")
    # Exact (Python int) shape arithmetic: no int64 wrap-around, unlike PyTorch's.
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

    # --- PyTorch's CPU backend selection and the backends' own checks.
    if any(v == 0 for v in spatial) and x4[0] and x4[1] and not (
            padding_mode != "zeros" and any(lo or hi for lo, hi in pads)):
        # PyTorch runs conv1d as conv2d with height 1, and shows that 4-D shape here.
        shown = x4_shown if nsp == 2 else (x4[0], x4[1], 1, x4_shown[2])
        raise ValueError(f"Only zero batch or zero channel inputs are supported, but got input shape: "
                         f"{_fmt_shape(shown)}")
    dilated_kernel = any(d != 1 for d in dilation_t)
    onednn = _torch_runs_onednn(x_dtype, x4, kernel, groups)
    as_2d = (lambda values: list(values)) if nsp == 2 else (lambda values: [1] + list(values))
    if any(v == 0 for v in kernel):
        # Refused even where PyTorch returns an empty output (zero channels; README).
        if dilated_kernel and not onednn:
            raise ValueError(f"kernel size should be greater than zero, but got "
                             f"{_fmt_shape(as_2d(kernel))}")
        names = ("kernel_height: " + (str(kernel[0]) if nsp == 2 else "1") + " kernel_width: "
                 + str(kernel[-1]))
        raise ValueError(f"kernel size should be greater than zero, but got {names}")
    if x4[0] and x4[1]:
        # An input with zero batch or zero channels takes PyTorch's "empty" backend: an empty
        # output, none of the checks below (dtypes, zero dilation, missing integer kernels).
        if onednn and w_dtype != x_dtype:
            _refuse_weight_dtype(x_dtype, w_dtype)
        if any(d == 0 for d in dilation_t):
            if onednn:
                raise ValueError("non-positive dilation is not supported")
            raise ValueError(f"dilation should be greater than zero, but got "
                             f"{_fmt_shape(as_2d(dilation_t))}")
        if x_dtype not in SUPPORTED_DTYPES or (x_dtype in _NO_DILATED_KERNEL and dilated_kernel):
            _refuse_input_dtype(x_dtype, dilated_kernel, op)
        if w_dtype != x_dtype:
            _refuse_weight_dtype(x_dtype, w_dtype)
    elif x_dtype not in SUPPORTED_DTYPES:
        # Ours: bool and uint16/32/64 are refused even where PyTorch returns an empty output.
        _refuse_input_dtype(x_dtype, dilated_kernel, op)

    out = [(pz - dk) // st + 1 for pz, dk, st in zip(padded, dilated, stride_t)]
    # A stride along a dimension with one output, or a dilation along a one-tap kernel dimension,
    # changes nothing that is read: record 1 there, so that no kernel forms a byte offset from an
    # absurd value (PyTorch accepts stride=2**62).
    stride_t = tuple(1 if o == 1 else st for o, st in zip(out, stride_t))
    dilation_t = tuple(1 if kern == 1 else d for kern, d in zip(kernel, dilation_t))
    if nsp == 1:
        pads = [(0, 0)] + pads
        stride_t, dilation_t, kernel, spatial, out = ((1,) + stride_t, (1,) + dilation_t,
                                                      (1,) + tuple(kernel), (1,) + tuple(spatial),
                                                      [1] + out)
    return ConvSpec(op=op, n=x4[0], c=x4[1], h=spatial[0], w=spatial[1], k=k, r=kernel[0],
                    s=kernel[1], groups=groups, stride=tuple(stride_t), dilation=tuple(dilation_t),
                    pad=(pads[0][0], pads[0][1], pads[1][0], pads[1][1]), padding_mode=padding_mode,
                    p=out[0], q=out[1], has_bias=bias is not None, dtype=x_dtype, batched=batched)


def _refuse_input_dtype(x_dtype: np.dtype, dilated_kernel: bool, op: str) -> None:
    if dilated_kernel:
        raise TypeError(f"\"slow_conv_dilated<>\" not implemented for "
                        f"'{_TORCH_SCALAR_NAMES[x_dtype]}'")
    check_dtype_supported(x_dtype, op)


def _refuse_weight_dtype(x_dtype: np.dtype, w_dtype: np.dtype) -> None:
    raise TypeError(f"Input type ({torch_type_name(x_dtype)}) and weight type "
                    f"({torch_type_name(w_dtype)}) should be the same")


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
