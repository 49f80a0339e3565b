"""conv1d / conv2d: the functional API, mirroring torch.nn.functional.conv1d/conv2d.

https://pytorch.org/docs/stable/generated/torch.nn.functional.conv1d.html
https://pytorch.org/docs/stable/generated/torch.nn.functional.conv2d.html
"""
from __future__ import annotations

import dataclasses
import sys
import warnings

import numpy as np

from . import _arrays, _dask
from . import plan as _plan
from ._spec import ConvSpec, make_spec, make_spec_cached


def _same_padding_warning(spec: ConvSpec, padding) -> None:
    # PyTorch warns when 'same' needs asymmetric padding (even kernel with odd dilation).
    if padding == "same" and spec.padding_mode == "zeros" and any(
            (spec.dilation[i] * (k - 1)) % 2 for i, k in enumerate((spec.r, spec.s))):
        warnings.warn("Using padding='same' with even kernel lengths and odd dilation may require a "
                      "zero-padded copy of the input be created", UserWarning, stacklevel=4)


def _check_names(backend, algorithm) -> None:
    # Names are looked up in dicts: a list would raise "unhashable type" from deep inside.
    for name, value, names in (("backend", backend, "a name from conv.backends()"),
                               ("algorithm", algorithm, "one of the backend's algorithms")):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string ('auto' or {names}), not "
                            f"{type(value).__name__}")


def _torch_cpu_as_numpy(input, weight, bias):
    """(input, weight, bias) with every PyTorch CPU tensor as the NumPy array over its memory
    (zero-copy; detached, lazy conjugate/negative bits resolved first), and whether the input was
    one (then the result goes back as a tensor)."""
    converted, was_tensor = [], False
    for i, a in enumerate((input, weight, bias)):
        if a is not None and type(a) is not np.ndarray and _arrays.array_kind(a) == _arrays.TORCH_CPU:
            from ._gpu_arrays import _plain_torch
            try:
                a = _plain_torch(a).numpy()
            except TypeError:       # a dtype NumPy has no equivalent of (bfloat16, ...)
                raise TypeError(f"conv has no kernels for PyTorch dtype {a.dtype}") from None
            was_tensor |= i == 0
        converted.append(a)
    return (*converted, was_tensor)


def _conv(op, input, weight, bias, stride, padding, dilation, groups, padding_mode, backend,
          algorithm, allow_tf32=None):
    if type(backend) is not str or type(algorithm) is not str:
        _check_names(backend, algorithm)
    if "torch" in sys.modules and not (type(input) is type(weight) is np.ndarray and (
            bias is None or type(bias) is np.ndarray)):
        input, weight, bias, was_tensor = _torch_cpu_as_numpy(input, weight, bias)
        if was_tensor:              # a PyTorch CPU tensor in, one out (over the result's memory)
            out = _conv(op, input, weight, bias, stride, padding, dilation, groups, padding_mode,
                        backend, algorithm, allow_tf32)
            return sys.modules["torch"].from_numpy(out)
    if type(input) is not np.ndarray and _dask.is_dask_array(input):
        # Lazily, chunk by chunk (conv/_dask.py); each chunk comes back through here.
        out, spec = _dask.conv(op, input, weight, bias, stride, padding, dilation, groups,
                               padding_mode, backend, algorithm, allow_tf32)
        _same_padding_warning(spec, padding)
        return out
    spec = make_spec_cached(op, input, weight, bias, stride, padding, dilation, groups,
                            padding_mode)
    plan = _plan.make_plan(spec, input, weight, bias, backend, algorithm, allow_tf32=allow_tf32)
    _same_padding_warning(spec, padding)
    out = _plan.execute(plan, input, weight, bias)
    if spec.dtype.kind == "c" and type(out) is np.ndarray and out.size:
        # One pass: a non-finite element makes the sum non-finite (a sum that overflows only
        # costs the check below, which then changes nothing).
        with np.errstate(all="ignore"):
            finite = np.isfinite(out.sum())
        if not finite:
            _non_finite_like_pytorch(out, plan, input, weight, bias)
    return out


def _non_finite_like_pytorch(out: np.ndarray, plan: _plan.Plan, input, weight, bias) -> None:
    """PyTorch convolves complex arrays as three real convolutions (Gauss's trick):
    a = conv(xr, wr, br), b = conv(xi, wi), c = conv(xr + xi, wr + wi, br + bi), then
    out = a - b + 1j * (c - a - b). Where a, b, c are finite that is our result up to rounding;
    where one is not, PyTorch's inf/nan follow from that formula (inf - inf = nan, and PyTorch's
    1j * inf is nan+nanj), not from a complex multiply-add (inf * (1+1j) = inf+infj). Only for an
    output that holds a non-finite value, compute the three real convolutions and take PyTorch's
    value wherever one of them, or our output, is not finite."""
    real_spec = dataclasses.replace(plan.spec, dtype=np.dtype(out.real.dtype))
    xr, xi, wr, wi = input.real, input.imag, weight.real, weight.imag
    br, bi = (None, None) if bias is None else (bias.real, bias.imag)

    def real_conv(x, w, b):
        # The same backend and algorithm, planned for the real dtype.
        real = _plan.make_plan(real_spec, x, w, b, plan.backend, plan.algorithm,
                               allow_tf32=plan.precision == "tf32")
        return _plan.execute(real, x, w, b)

    with np.errstate(all="ignore"):
        a = real_conv(xr, wr, br)
        b = real_conv(xi, wi, None)
        c = real_conv(xr + xi, wr + wi, None if bias is None else br + bi)
        v = c - a - b
        where = ~(np.isfinite(a) & np.isfinite(b) & np.isfinite(c) & np.isfinite(out))
        finite_v = np.isfinite(v)
        # (a - b) + 1j * v as PyTorch evaluates it: nan+nanj wherever v is not finite.
        out.real[where] = np.where(finite_v, a - b, np.nan)[where]
        out.imag[where] = np.where(finite_v, v, np.nan)[where]


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode: str = "zeros", backend: str = "auto", algorithm: str = "auto",
           allow_tf32: bool | None = None):
    """1-D convolution over (N, C, L) or unbatched (C, L) input with weight (K, C/groups, S).

    Same arguments and result as ``torch.nn.functional.conv1d``; ``padding_mode`` ('zeros',
    'reflect', 'replicate', 'circular') is our extension with ``torch.nn.Conv1d``'s meaning.
    ``backend``: 'auto' (from where the input lives), 'cpu', 'reference', 'cupy' or 'numba';
    ``algorithm``: 'auto' or one of the backend's algorithms (see ``conv.explain``).
    ``allow_tf32``: whether float32 may run in TF32 on GPU algorithms that have it (cupy's
    implicit_gemm; otherwise it runs 3xTF32, float32-accurate), as PyTorch's
    ``torch.backends.cudnn.allow_tf32``; None: the default, ``conv.set_allow_tf32`` (initially
    False). Everything else, the CPU included, ignores it. ``conv.explain`` says which runs.
    Returns an array of the input's kind and dtype, shape (N, K, L_out) or (K, L_out).
    """
    return _conv("conv1d", input, weight, bias, stride, padding, dilation, groups, padding_mode,
                 backend, algorithm, allow_tf32)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode: str = "zeros", backend: str = "auto", algorithm: str = "auto",
           allow_tf32: bool | None = None):
    """2-D convolution over (N, C, H, W) or unbatched (C, H, W) input with weight (K, C/groups, R, S).

    Same arguments and result as ``torch.nn.functional.conv2d``; see ``conv1d`` for the extras.
    Returns an array of the input's kind and dtype, shape (N, K, H_out, W_out) or (K, H_out, W_out).
    """
    return _conv("conv2d", input, weight, bias, stride, padding, dilation, groups, padding_mode,
                 backend, algorithm, allow_tf32)


def explain(op: str, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
            padding_mode: str = "zeros", backend: str = "auto", algorithm: str = "auto",
            allow_tf32: bool | None = None) -> _plan.Plan:
    """The Plan ``conv1d``/``conv2d`` (op) would execute for these arguments: backend, algorithm
    and its version, the precision where the algorithm has a choice (``Plan.precision``: "tf32",
    "3xtf32", "f16"), why, workspace bytes and chunking.

    Plans exactly as the call does (the call executes this very plan), so it raises exactly what
    the call would raise before computing; computes nothing. A Dask array input runs one such
    call per output block: explain raises TypeError there and says so.
    """
    if op not in ("conv1d", "conv2d"):
        raise ValueError(f"op must be 'conv1d' or 'conv2d', got {op!r}")
    _check_names(backend, algorithm)
    if "torch" in sys.modules:
        input, weight, bias, _ = _torch_cpu_as_numpy(input, weight, bias)
    if _dask.is_dask_array(input):
        raise TypeError("conv.explain plans one in-memory call; a Dask array runs one such call "
                        "per output block (conv/_dask.py): explain one block's arrays instead")
    spec = make_spec(op, input, weight, bias, stride, padding, dilation, groups, padding_mode)
    return _plan.make_plan(spec, input, weight, bias, backend, algorithm, allow_tf32=allow_tf32)
