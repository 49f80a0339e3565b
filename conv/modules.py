"""Conv1d / Conv2d modules, mirroring torch.nn.Conv1d / torch.nn.Conv2d.

https://pytorch.org/docs/stable/generated/torch.nn.Conv1d.html
https://pytorch.org/docs/stable/generated/torch.nn.Conv2d.html

One class does the work for both (`_ConvNd`); Conv1d and Conv2d only fix the number of spatial dims.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from . import functional
from ._spec import COMPLEX_DTYPES, FLOAT_DTYPES, PADDING_MODES, _as_int, _fmt_shape


def _ntuple(value, n: int) -> tuple:
    """torch.nn.modules.utils._ntuple: an iterable becomes a tuple, anything else is repeated n times."""
    if isinstance(value, (tuple, list)):
        return tuple(value)
    return (value,) * n


def _parse_device(device) -> int | None:
    """None for the host, the CUDA ordinal for 'cuda' / 'cuda:N'."""
    if device is None or device == "cpu":
        return None
    if isinstance(device, str) and (device == "cuda" or device.startswith("cuda:")):
        index = device[5:] if device != "cuda" else "0"
        if not index.isdigit():
            raise ValueError(f"Invalid device string: '{device}'")
        return int(index)
    raise ValueError(f"Expected one of cpu, cuda device type at start of device string: {device}")


class _ConvNd:
    _n_spatial = 0

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device=None, dtype=None, *, seed=None):
        n = self._n_spatial
        if not isinstance(groups, (bool, np.bool_)):
            # PyTorch takes any integer-like groups (np.int64, a 0-d integer array). A bool it takes
            # too (True == 1) and keeps, so that forward then refuses it, as PyTorch's does.
            as_int = _as_int(groups)
            if as_int is None:
                raise TypeError(f"groups must be a positive integer, got {type(groups).__name__}")
            groups = as_int
        if groups <= 0:
            raise ValueError("groups must be a positive integer")
        if in_channels % groups != 0:
            raise ValueError("in_channels must be divisible by groups")
        if out_channels % groups != 0:
            raise ValueError("out_channels must be divisible by groups")
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(f"Invalid padding string {padding!r}, should be one of "
                                 "{'valid', 'same'}")
            if padding == "same" and any(s != 1 for s in _ntuple(stride, n)):
                raise ValueError("padding='same' is not supported for strided convolutions")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {{'zeros', 'reflect', 'replicate', "
                             f"'circular'}}, but got padding_mode={padding_mode!r}")
        dtype = np.dtype(np.float32 if dtype is None else dtype)
        if dtype not in FLOAT_DTYPES + COMPLEX_DTYPES:
            raise TypeError(f"{type(self).__name__}: dtype must be a floating point or complex dtype "
                            f"(float16, bfloat16, float32/64, complex64/128), got {dtype}")
        self._device_index = _parse_device(device)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _ntuple(kernel_size, n)
        self.stride = _ntuple(stride, n)
        self.padding = padding if isinstance(padding, str) else _ntuple(padding, n)
        self.dilation = _ntuple(dilation, n)
        self.groups = groups
        self.padding_mode = padding_mode
        self.transposed = False
        self.output_padding = (0,) * n
        self.dtype = dtype
        shape = (out_channels, in_channels // groups) + self.kernel_size
        self.weight = self._empty(shape)
        self.bias = self._empty((out_channels,)) if bias else None
        self.reset_parameters(seed)

    def _empty(self, shape):
        if any(d < 0 for d in shape):
            raise ValueError(f"Trying to create tensor with negative dimension "
                             f"{next(d for d in shape if d < 0)}: {_fmt_shape(shape)}")
        return np.empty(shape, self.dtype)

    @property
    def device(self) -> str:
        return "cpu" if self._device_index is None else f"cuda:{self._device_index}"

    def reset_parameters(self, seed=None) -> None:
        """PyTorch's init: kaiming_uniform_(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the
        weight, the same bound for the bias. `seed`: None, an int or a numpy.random.Generator."""
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        fan_in = (self.in_channels // self.groups) * math.prod(self.kernel_size)
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        if self.weight.size == 0:
            warnings.warn("Initializing zero-element tensors is a no-op", UserWarning, stacklevel=3)
        self.weight = self._to_device(self._uniform(rng, self.weight.shape, bound))
        if self.bias is not None:
            self.bias = self._to_device(self._uniform(rng, self.bias.shape, bound))

    def _uniform(self, rng, shape, bound):
        real = np.float64
        if self.dtype.kind == "c":    # PyTorch draws real and imaginary parts independently
            values = rng.uniform(-bound, bound, shape) + 1j * rng.uniform(-bound, bound, shape)
        else:
            values = rng.uniform(-bound, bound, shape).astype(real)
        return values.astype(self.dtype)

    def _to_device(self, host: np.ndarray):
        if self._device_index is None:
            return host
        from . import _gpu_arrays  # imported only when a module lives on a GPU
        ok, why = _gpu_arrays.cupy_availability()
        if not ok:
            raise RuntimeError(f"device={self.device!r} keeps the weights as CuPy arrays, but the "
                               f"cupy backend is not usable here: {why}")
        return _gpu_arrays.cupy_from_host(host, self._device_index)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0,) * len(self.padding):
            s += f", padding={self.padding}"
        if self.dilation != (1,) * len(self.dilation):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def forward(self, input, *, backend: str = "auto", algorithm: str = "auto",
                allow_tf32: bool | None = None):
        fn = functional.conv1d if self._n_spatial == 1 else functional.conv2d
        return fn(input, self.weight, self.bias, self.stride, self.padding, self.dilation,
                  self.groups, padding_mode=self.padding_mode, backend=backend, algorithm=algorithm,
                  allow_tf32=allow_tf32)

    __call__ = forward


class Conv1d(_ConvNd):
    """torch.nn.Conv1d on NumPy/CUDA arrays: weight (out, in/groups, k), optional bias (out,)."""

    _n_spatial = 1


class Conv2d(_ConvNd):
    """torch.nn.Conv2d on NumPy/CUDA arrays: weight (out, in/groups, kh, kw), optional bias (out,)."""

    _n_spatial = 2
