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


def _same_padding_warning(spec: ConvSpec, padding, stacklevel: int = 4) -> None:
    # stacklevel: the user's call of conv1d/conv2d, seen from here (4: called from _conv).
    # PyTorch warns when 'same' needs asymmetric padding (even kernel with odd dilation).
    if padding == "same" and spec.padding_mode == "zeros" and any(
            (spec.dilation[i] * (k - 1)) % 2 for i, k in enumerate((spec.r, spec.s))):
        warnings.warn("Using padding='same' with even kernel lengths and odd dilation may require a "
                      "zero-padded copy of the input be created", UserWarning,
                      stacklevel=stacklevel)


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
                a = _arrays.torch_cpu_numpy(_plain_torch(a))
            except TypeError:       # a dtype NumPy has no equivalent of (bfloat16, ...)
                raise TypeError(f"conv has no kernels for PyTorch dtype {a.dtype}") from None
            was_tensor |= i == 0
        converted.append(a)
    return (*converted, was_tensor)


# --- The memory format of a PyTorch result ---------------------------------------------------
# PyTorch returns a convolution's output channels_last when its backend says so, and it asks
# twice (aten/src/ATen/native/Convolution.cpp and ConvUtils.h; every step below probed on torch
# 2.13 CPU, tests/test_channels_last.py):
# 1. _convolution's _determine_backend_memory_format: on the CPU oneDNN's
#    mkldnn_conv_use_channels_last and the slow kernels' thnn_conv_use_channels_last both answer
#    "the input or the weight suggests channels_last" (_arrays.suggests_channels_last), for every
#    dtype. If not, the result is contiguous. If so, both operands are made
#    .contiguous(channels_last): unchanged where they are channels_last-contiguous already, else
#    copied with exact channels_last strides;
# 2. the kernel asks the same of those copies, and allocates its output by the answer. An exact
#    copy suggests channels_last unless it is N111-shaped (ambiguous): the second answer differs
#    from the first only there.
# Which tensors they look at follows from what runs before them:
# * an input with zero batch or channels takes the "empty" backend: contiguous, whatever the
#   weight;
# * conv1d runs as conv2d on input.contiguous().unsqueeze(2) and weight.unsqueeze(2): in practice
#   only the weight (a permuted (K, S, C) one) suggests channels_last (the input only where
#   contiguous() kept odd strides of size-1 dimensions), and the output is that 4-D result
#   squeezed back (strides (K*L, 1, K): not contiguous, though no 3-D memory format has that name);
# * an unbatched conv2d input is looked at as input.unsqueeze(0), whose batch stride is C times
#   the channel stride: a slice x[0] of an NHWC batch does not suggest channels_last, a (C, 1, 1)
#   view of an HWC image does; the output is the 4-D one squeezed back;
# * a padding_mode other than 'zeros' is nn.Conv2d's F.pad first: 'reflect' and 'replicate' turn
#   a 4-D input that suggests channels_last into a new channels_last tensor, 'circular' and any
#   3-D input into a contiguous one (which step 2 still copies, should step 1 say channels_last);
# * complex convolutions are three real ones over real/imaginary views (strides doubled: never
#   channels_last-contiguous, so always copied in step 1), combined elementwise: that result is
#   contiguous wherever channels_last and contiguous strides give the same memory order.
# The output has the exact strides of a new channels_last tensor (_arrays.channels_last_strides),
# also along size-1 dimensions.
# PyTorch CUDA differs by backend, and we follow the CPU: cuDNN (cudnn_conv_suggest_memory_format)
# refuses channels_last for float64 (so complex128 too) and returns those contiguous, and its own
# depthwise kernel (used where cuDNN is not) returns contiguous results.


def _torch_operand_layouts(input, weight):
    """(input shape, input strides, weight shape, weight strides) when `input` is a PyTorch tensor
    (so the result is one), else None. Strides in elements; the weight's None where unknown
    (contiguous: it cannot suggest channels_last)."""
    if not _arrays._is_torch_tensor(input):
        return None
    if type(weight) is type(input):     # two tensors, the common case: no further probing
        return input.shape, input.stride(), weight.shape, weight.stride()
    return (input.shape, input.stride(), _arrays.shape_of(weight),
            _arrays.element_strides_of(weight))


def _torch_channels_last(spec: ConvSpec, layouts) -> bool:
    """Whether PyTorch would return this call's output channels_last (the rule above)."""
    if spec.n == 0 or spec.c == 0:
        return False
    x_shape, x_strides, w_shape, w_strides = layouts
    if w_shape is None or w_strides is None or len(w_shape) != len(w_strides):
        w_shape = w_strides = None
    elif spec.op == "conv1d":       # weight.unsqueeze(2): the new stride is S times S's stride
        (k, c, s), (k_stride, c_stride, s_stride) = w_shape, w_strides
        w_shape, w_strides = (k, c, 1, s), (k_stride, c_stride, s * s_stride, s_stride)
    if spec.padding_mode != "zeros":
        # nn.Conv*d's F.pad first: 'reflect' and 'replicate' turn a 4-D input that suggests
        # channels_last into a new channels_last tensor, everything else into a contiguous one.
        top, bottom, left, right = spec.pad
        if spec.op == "conv1d":
            padded = tuple(x_shape[:-1]) + (x_shape[-1] + left + right,)
        else:
            padded = tuple(x_shape[:-2]) + (x_shape[-2] + top + bottom, x_shape[-1] + left + right)
        if (len(padded) == 4 and spec.padding_mode != "circular"
                and _arrays.suggests_channels_last(x_shape, x_strides)):
            x_strides = _arrays.channels_last_strides(padded)
        else:
            x_strides = _contiguous_strides(padded)
        x_shape = padded
    if not spec.batched:
        # input.unsqueeze(0): the new stride is C times C's stride.
        x_shape, x_strides = (1,) + tuple(x_shape), (x_shape[0] * x_strides[0],) + tuple(x_strides)
    real = spec.dtype.kind != "c"
    if spec.op == "conv1d":
        # input.contiguous() (which keeps a contiguous input's strides along size-1 dimensions;
        # a complex input's real and imaginary views are never contiguous), then unsqueeze(2).
        if not real or not _arrays.is_contiguous_strides(x_shape, x_strides):
            x_strides = _contiguous_strides(x_shape)
        (n, c, s), (n_stride, c_stride, s_stride) = x_shape, x_strides
        x_shape, x_strides = (n, c, 1, s), (n_stride, c_stride, s * s_stride, s_stride)
    # (shape, strides, whether .contiguous(channels_last) may return it as it is): complex
    # operands are real/imaginary views with doubled strides, copied, except conv1d's input,
    # which contiguous() copied already.
    operands = [(x_shape, x_strides, real or spec.op == "conv1d")]
    if w_shape is not None:
        operands.append((w_shape, w_strides, real))
    if not any(_arrays.suggests_channels_last(shape, strides) for shape, strides, _ in operands):
        return False                # step 1 said contiguous
    for shape, strides, may_keep in operands:   # step 2, on .contiguous(channels_last) of each
        if may_keep and _arrays.is_channels_last_contiguous(shape, strides):
            if _arrays.suggests_channels_last(shape, strides):
                return True
        elif shape[1:] != (1, 1, 1):    # an exact copy; N111 is ambiguous
            return True
    return False


def _contiguous_strides(shape) -> tuple:
    """The element strides PyTorch gives a new contiguous tensor of `shape` (a zero size counts
    as 1)."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def _in_torch_memory_format(out, spec: ConvSpec, layouts):
    """PyTorch tensor `out`, as the backend returned it (C-contiguous), in the memory format
    PyTorch would return: strides only (zero-copy) where the memory order stays, else a copy."""
    if layouts is None or not _arrays._is_torch_tensor(out):
        return out
    if spec.is_empty:
        strides = _contiguous_strides(out.shape)      # PyTorch's empty results are contiguous
        return out if out.stride() == strides else out.as_strided(out.shape, strides)
    if not _torch_channels_last(spec, layouts):
        return out
    n, k, p, q = spec.output_shape_4d
    strides = _arrays.channels_last_strides((n, k, p, q))
    # The dimensions PyTorch squeezes away afterwards: conv1d's height, an unbatched batch.
    kept = [d for d in range(4) if not (d == 2 and spec.op == "conv1d")
            and not (d == 0 and not spec.batched)]
    strides = tuple(strides[d] for d in kept)
    # Channels_last and contiguous strides give the same memory order when the channels, or
    # both spatial dimensions, have size 1.
    same_order = k <= 1 or (p <= 1 and q <= 1)
    if same_order and spec.dtype.kind == "c":
        return out.contiguous()     # PyTorch's elementwise result: contiguous
    if out.stride() == strides:
        return out
    if same_order and out.is_contiguous():
        return out.as_strided(out.shape, strides)
    torch = sys.modules["torch"]
    result = torch.empty_strided(out.shape, strides, dtype=out.dtype, device=out.device)
    from . import _gpu_arrays
    if _gpu_arrays.poison_enabled():    # the test hook: an element copy_ missed shows
        result.fill_(_gpu_arrays.poison_value(spec.dtype))
    return result.copy_(out)        # on PyTorch's current stream, as the backend's kernels ran


def _conv(op, input, weight, bias, stride, padding, dilation, groups, padding_mode, backend,
          algorithm, allow_tf32=None):
    if type(backend) is not str or type(algorithm) is not str:
        _check_names(backend, algorithm)
    if "torch" in sys.modules and not (type(input) is type(weight) is np.ndarray and (
            bias is None or type(bias) is np.ndarray)):
        # A PyTorch tensor in, one out, in the memory format PyTorch's would have: the operands'
        # layouts are read before the CPU ones become NumPy views (which keep them anyway).
        layouts = _torch_operand_layouts(input, weight)
        input, weight, bias, was_tensor = _torch_cpu_as_numpy(input, weight, bias)
        if was_tensor:              # a PyTorch CPU tensor in, one out (over the result's memory)
            out, spec = _conv_in_memory(op, input, weight, bias, stride, padding, dilation, groups,
                                        padding_mode, backend, algorithm, allow_tf32)
            return _in_torch_memory_format(_arrays.torch_from_numpy(out), spec, layouts)
        if layouts is not None:     # a PyTorch CUDA tensor: the backend returns a tensor
            out, spec = _conv_in_memory(op, input, weight, bias, stride, padding, dilation, groups,
                                        padding_mode, backend, algorithm, allow_tf32)
            return _in_torch_memory_format(out, spec, layouts)
    if type(input) is not np.ndarray and _dask.is_dask_array(input):
        # Lazily, chunk by chunk (conv/_dask.py); each chunk comes back through here.
        out, spec = _dask.conv(op, input, weight, bias, stride, padding, dilation, groups,
                               padding_mode, backend, algorithm, allow_tf32)
        _same_padding_warning(spec, padding)
        return out
    return _conv_in_memory(op, input, weight, bias, stride, padding, dilation, groups,
                           padding_mode, backend, algorithm, allow_tf32)[0]


def _conv_in_memory(op, input, weight, bias, stride, padding, dilation, groups, padding_mode,
                    backend, algorithm, allow_tf32):
    """One in-memory call (NumPy, CuPy, Numba or PyTorch CUDA arrays): (result, spec)."""
    spec = make_spec_cached(op, input, weight, bias, stride, padding, dilation, groups,
                            padding_mode)
    plan = _plan.make_plan(spec, input, weight, bias, backend, algorithm, allow_tf32=allow_tf32)
    _same_padding_warning(spec, padding, stacklevel=5)      # from conv*d -> _conv -> here
    out = _plan.execute(plan, input, weight, bias)
    if spec.dtype.kind == "c" and type(out) is np.ndarray and out.size:
        # One pass: a non-finite element makes the sum non-finite (a sum that overflows only
        # costs the check below, which then changes nothing).
        with np.errstate(all="ignore"):
            finite = np.isfinite(out.sum())
        if not finite:
            _non_finite_like_pytorch(out, plan, input, weight, bias)
    return out, spec


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
    Returns an array of the input's kind and dtype, shape (N, K, L_out) or (K, L_out); a PyTorch
    tensor result has the strides PyTorch's would have (a permuted (K, S, C) weight gives
    PyTorch's squeezed channels_last ones).
    """
    return _conv("conv1d", input, weight, bias, stride, padding, dilation, groups, padding_mode,
                 backend, algorithm, allow_tf32)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           padding_mode: str = "zeros", backend: str = "auto", algorithm: str = "auto",
           allow_tf32: bool | None = None):
    """2-D convolution over (N, C, H, W) or unbatched (C, H, W) input with weight (K, C/groups, R, S).

    Same arguments and result as ``torch.nn.functional.conv2d``; see ``conv1d`` for the extras.
    Returns an array of the input's kind and dtype, shape (N, K, H_out, W_out) or (K, H_out, W_out).
    A PyTorch tensor result is ``torch.channels_last`` where PyTorch's would be (a channels_last
    input or weight), with PyTorch's strides.
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
