"""conv1d / conv2d: the functional API, mirroring torch.nn.functional.conv1d/conv2d.

https://pytorch.org/docs/stable/generated/torch.nn.functional.conv1d.html
https://pytorch.org/docs/stable/generated/torch.nn.functional.conv2d.html
"""
from __future__ import annotations

import warnings

from . import _dispatch
from ._spec import ConvSpec, make_spec, make_spec_cached


def _same_padding_warning(spec: ConvSpec, padding) -> None:
    # PyTorch warns when 'same' needs asymmetric padding (even kernel with odd dilation).
    if padding == "same" and spec.padding_mode == "zeros" and any(
            (spec.dilation[i] * (k - 1)) % 2 for i, k in enumerate((spec.r, spec.s))):
        warnings.warn("Using padding='same' with even kernel lengths and odd dilation may require a "
                      "zero-padded copy of the input be created", UserWarning, stacklevel=4)


def _conv(op, input, weight, bias, stride, padding, dilation, groups, padding_mode, backend,
          algorithm):
    spec = make_spec_cached(op, input, weight, bias, stride, padding, dilation, groups,
                            padding_mode)
    _dispatch.check_same_device(input, weight, bias)
    choice = _dispatch.resolve(spec, input, backend, algorithm)
    _same_padding_warning(spec, padding)
    module = _dispatch.backend_module(choice.backend)
    return module.run(input, weight, bias, spec, choice.algorithm)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode: str = "zeros", backend: str = "auto", algorithm: str = "auto"):
    """1-D convolution over (N, C, L) or unbatched (C, L) input with weight (K, C/groups, S).

    Same arguments and result as ``torch.nn.functional.conv1d``; ``padding_mode`` ('zeros',
    'reflect', 'replicate', 'circular') is our extension with ``torch.nn.Conv1d``'s meaning.
    ``backend``: 'auto' (from where the input lives), 'cpu', 'reference', 'cupy' or 'numba';
    ``algorithm``: 'auto' or one of the backend's algorithms (see ``conv.explain``).
    Returns an array of the input's kind and dtype, shape (N, K, L_out) or (K, L_out).
    """
    return _conv("conv1d", input, weight, bias, stride, padding, dilation, groups, padding_mode,
                 backend, algorithm)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode: str = "zeros", backend: str = "auto", algorithm: str = "auto"):
    """2-D convolution over (N, C, H, W) or unbatched (C, H, W) input with weight (K, C/groups, R, S).

    Same arguments and result as ``torch.nn.functional.conv2d``; see ``conv1d`` for the extras.
    Returns an array of the input's kind and dtype, shape (N, K, H_out, W_out) or (K, H_out, W_out).
    """
    return _conv("conv2d", input, weight, bias, stride, padding, dilation, groups, padding_mode,
                 backend, algorithm)


def explain(op: str, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
            padding_mode: str = "zeros", backend: str = "auto",
            algorithm: str = "auto") -> _dispatch.Choice:
    """Which backend and algorithm ``conv1d``/``conv2d`` (op) would use for these arguments, and why.

    Checks the arguments exactly as the call would; computes nothing.
    """
    if op not in ("conv1d", "conv2d"):
        raise ValueError(f"op must be 'conv1d' or 'conv2d', got {op!r}")
    spec = make_spec(op, input, weight, bias, stride, padding, dilation, groups, padding_mode)
    _dispatch.check_same_device(input, weight, bias)
    return _dispatch.resolve(spec, input, backend, algorithm)
