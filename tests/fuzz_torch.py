"""Differential fuzz of conv.conv1d/conv2d (and a little of conv.Conv1d/Conv2d) against PyTorch.

Hypothesis draws calls (`valid_calls`, `invalid_calls`); `check` runs one call through PyTorch's CPU
convolution and through ours and says how they compare (an `Outcome`):

- both compute: same shape, same dtype, values within the tests/_helpers.py convention (per dtype
  RTOL * sqrt(reduction) * max|reference|, the reference being PyTorch's own result computed in
  float64 / complex128, and for fft and winograd max|reference| at least max|x| * max|w|;
  integers exactly equal to PyTorch's wrapped result). Our CPU output
  allocation (`conv.backend.cpu._new_output`) is poisoned with NaN (float, complex) or a sentinel
  (integers) so an element no kernel wrote shows; the result must be a plain ndarray sharing no
  memory with an input, and no input (nor the buffer behind a view) may change.
- both refuse: ours must be ValueError or TypeError (never another type, never a crash) with
  PyTorch's message, up to the documented differences below.
- one side only refuses: a finding, unless documented below.

PyTorch's reference for padding_mode != 'zeros' is what torch.nn.Conv1d/Conv2d run:
``F.pad(x, reversed padding repeated twice, mode)`` then the conv with padding 0 (the modules
themselves for the calls that go through conv.Conv1d/Conv2d).

Documented differences (README "Where we differ from PyTorch", the _OURS table of
tests/test_torch_differential.py); nothing else is normalised:
- our own words for non-array arguments, float/bool parameters, a zero-size kernel, the
  ``"conv2d" not implemented for 'Bool'`` family (PyTorch names its internal kernel), dtype
  mismatches (PyTorch's wording depends on its internal path), the padding_mode message (PyTorch
  prints a set, in no fixed order), and a message of PyTorch's oneDNN path (it names oneDNN's
  internals, as its zero-kernel message does); also arrays of a dtype PyTorch cannot represent
  (object, longdouble: torch.from_numpy refuses them; we raise TypeError);
- a bias whose dtype differs from the input's is refused for every padding form;
- with padding_mode != 'zeros': argument errors come before padding errors, and negative padding
  is refused; a 1-element padding tuple applies to every spatial dimension (the reference here
  expands it, as it does for 'zeros');
- a zero-size kernel is refused even on a zero-channel input.

CI entry: tests/test_fuzz_torch.py (a few hundred valid and invalid calls, derandomized, no example
database). Environment: CONV_FUZZ_EXAMPLES=N runs N examples per test instead (e.g. 20000).

By hand, counting every outcome instead of stopping at the first failure (batches run in child
processes, so a crash is counted, not fatal):

    python3 -m tests.fuzz_torch --valid 10000 --invalid 3000 [--seed 0] [--batch 400] [--show 3]

Every example printed is a `Call(...)` that reproduces it:
``python3 -c "from tests.fuzz_torch import *; print(check(Call(...)))"``.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import pickle
import re
import selectors
import subprocess
import sys
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

import conv
import conv.backend.cpu
from conv._spec import PADDING_MODES, same_padding
from conv._arrays import torch_cpu_numpy, torch_from_numpy
from conv._dtypes import BFLOAT16, is_floating
from tests._helpers import (BF16_ROUNDING, RTOL, make_operands, operand_rng,
                            transform_scale_floor)

DTYPES = ("float16", "bfloat16", "float32", "float64", "complex64", "complex128", "int8", "int16",
          "int32", "int64", "uint8")
# PyTorch's CPU conv has no dilated kernel for these (it raises NotImplementedError).
NO_DILATED_KERNEL = ("int8", "int16", "int32", "uint8")
# Memory layouts an argument can arrive in (see `materialise`).
LAYOUTS = ("contiguous", "fortran", "negative", "slice", "transposed", "readonly", "bigendian",
           "unaligned", "broadcast")
# (backend, algorithm) pairs of the host; "implicit" computes floating point only, "fft" floating
# point and complex, "winograd" floating point at stride 1 and 3 taps per axis only (any dilation)
# (drawn only there: elsewhere it refuses what PyTorch computes).
HOST_PATHS = (("cpu", "auto"), ("cpu", "implicit"), ("cpu", "im2col"), ("cpu", "direct"),
              ("cpu", "fft"), ("cpu", "winograd"), ("reference", "auto"))

OK = "ok"
FAILURE_KINDS = ("wrong_values", "wrong_shape", "wrong_dtype", "input_modified", "crashed",
                 "wrong_exception_type", "message_differs", "accepted_by_torch_only",
                 "accepted_by_ours_only")


@dataclass(frozen=True)
class Arr:
    """An array argument to build: shape, dtype, memory layout; `masked`: as a numpy.ma array."""

    shape: tuple
    dtype: str
    layout: str = "contiguous"
    masked: bool = False


@dataclass(frozen=True)
class Call:
    """One call of conv.<op>(x, w, b, stride, padding, dilation, groups, ...); its repr reproduces
    it. x/w/b are `Arr` or, for invalid calls, any other object passed as is (b None: no bias)."""

    op: str
    x: Any
    w: Any
    b: Any = None
    stride: Any = 1
    padding: Any = 0
    dilation: Any = 1
    groups: Any = 1
    padding_mode: Any = "zeros"
    backend: str = "cpu"
    algorithm: str = "auto"
    module: bool = False          # through conv.Conv1d/Conv2d (and torch.nn.Conv1d/Conv2d)
    seed: int = 0
    why: str = ""                 # the invalid strategy's mutation, for the tallies


@dataclass
class Outcome:
    kind: str                     # OK or one of FAILURE_KINDS
    detail: str = ""
    documented: str = ""          # for OK: which documented difference made it OK, if any

    def __str__(self) -> str:
        extra = f" [{self.documented}]" if self.documented else ""
        return f"{self.kind}{extra}: {self.detail}" if self.detail else f"{self.kind}{extra}"


# ----------------------------------------------------------------------------------------------
# Building the arguments
# ----------------------------------------------------------------------------------------------

def _data(rng: np.random.Generator, shape: tuple, dtype: np.dtype) -> np.ndarray:
    """Fresh random values of any dtype, from the one operand builder (tests/_helpers)."""
    return make_operands(rng, shape, None, dtype)[0]


def materialise(spec: Arr, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    """The array `spec` describes, and the arrays owning its memory (checked unchanged later)."""
    arr, owners = _in_layout(spec, rng)
    if spec.masked:
        mask = rng.integers(0, 2, size=arr.shape).astype(bool)
        return np.ma.masked_array(arr, mask=mask), owners + [mask]
    return arr, owners


def _in_layout(spec: Arr, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
    dtype = np.dtype(spec.dtype)
    shape = tuple(spec.shape)
    layout = spec.layout
    if layout == "broadcast" and len(shape) and dtype.kind != "O":
        # Stride 0 along one axis: every slice along it is the same memory.
        axis = int(rng.integers(len(shape)))
        small = _data(rng, shape[:axis] + (min(shape[axis], 1),) + shape[axis + 1:], dtype)
        return np.broadcast_to(small, shape), [small]
    data = _data(rng, shape, dtype)
    if layout == "fortran":
        arr = np.asfortranarray(data)
    elif layout == "negative" and data.ndim:
        # A view with negative strides on every axis whose values are `data`.
        flip = tuple(slice(None, None, -1) for _ in shape)
        owner = np.ascontiguousarray(data[flip])
        return owner[flip], [owner]
    elif layout == "slice" and data.ndim:
        # Every other element of a bigger array filled with other random values.
        owner = _data(rng, tuple(2 * s + 1 for s in shape), dtype)
        arr = owner[tuple(slice(1, 1 + 2 * s, 2) for s in shape)]
        arr[...] = data
        return arr, [owner]
    elif layout == "transposed" and data.ndim >= 2:
        owner = np.ascontiguousarray(np.swapaxes(data, -1, -2))
        return np.swapaxes(owner, -1, -2), [owner]
    elif layout == "readonly":
        arr = data.copy()
        arr.setflags(write=False)
    elif layout == "bigendian" and dtype != BFLOAT16:   # ml_dtypes' bfloat16 has no byte order
        arr = data.astype(dtype.newbyteorder(">"))
    elif layout == "unaligned" and dtype.kind != "O":
        # A view at a 1-byte offset into a uint8 buffer.
        owner = np.zeros(data.nbytes + 1, np.uint8)
        arr = np.ndarray(shape, dtype, buffer=owner, offset=1)
        arr[...] = data
        return arr, [owner]
    else:
        arr = data
    return arr, [arr]


def build(call: Call) -> tuple[tuple, list[np.ndarray]]:
    """(x, w, b) for `call`, from its seed, and every array owning their memory."""
    rng = operand_rng(call.seed)
    args, owners = [], []
    for spec in (call.x, call.w, call.b):
        if isinstance(spec, Arr):
            arr, own = materialise(spec, rng)
            args.append(arr)
            owners += own
        else:
            args.append(spec)
    return tuple(args), owners


# ----------------------------------------------------------------------------------------------
# PyTorch's side
# ----------------------------------------------------------------------------------------------

def _torch():
    import torch
    return torch


def _to_tensor(torch, value, upcast: bool):
    """A NumPy array as a native-order contiguous tensor (float64/complex128 when `upcast`);
    anything else passed as is, for PyTorch to refuse in its own words."""
    if not isinstance(value, np.ndarray):
        return value
    native = np.array(np.asarray(value), dtype=value.dtype.newbyteorder("="), order="C")
    if upcast and (native.dtype.kind == "c" or is_floating(native.dtype)):
        native = native.astype(np.complex128 if native.dtype.kind == "c" else np.float64)
    return torch_from_numpy(native)             # bfloat16 included


def _per_dim(value, nsp: int) -> tuple:
    if isinstance(value, (tuple, list)):
        return tuple(value) * nsp if len(value) == 1 else tuple(value)
    return (value,) * nsp


def _reversed_pads(call: Call, kernel: tuple) -> list[int]:
    """nn.Conv*d's _reversed_padding_repeated_twice: (lo, hi) per dimension, last one first."""
    nsp = len(kernel)
    if call.padding == "valid":
        pads = [(0, 0)] * nsp
    elif call.padding == "same":
        pads = [same_padding(int(k), int(d)) for k, d in zip(kernel, _per_dim(call.dilation, nsp))]
    else:
        pads = [(int(p), int(p)) for p in _per_dim(call.padding, nsp)]
    if len(pads) != nsp:
        raise ValueError("not a padding")
    return [v for lo_hi in reversed(pads) for v in lo_hi]


def torch_conv(call: Call, x, w, b, upcast: bool = False) -> np.ndarray:
    """PyTorch's answer to `call` (raises what PyTorch raises)."""
    torch = _torch()
    F = torch.nn.functional
    tx, tw, tb = (_to_tensor(torch, v, upcast) for v in (x, w, b))
    nsp = 1 if call.op == "conv1d" else 2
    if call.module or call.padding_mode not in tuple(PADDING_MODES):
        cls = torch.nn.Conv1d if nsp == 1 else torch.nn.Conv2d
        m = cls(tw.shape[1] * call.groups, tw.shape[0], tuple(tw.shape[2:]), call.stride,
                call.padding, call.dilation, call.groups, bias=tb is not None,
                padding_mode=call.padding_mode, dtype=tw.dtype)
        with torch.no_grad():
            m.weight.copy_(tw)
            if tb is not None:
                m.bias.copy_(tb)
            return torch_cpu_numpy(m(tx))
    fn = getattr(F, call.op)
    if call.padding_mode == "zeros":
        return torch_cpu_numpy(fn(tx, tw, tb, call.stride, call.padding, call.dilation,
                                  call.groups))
    try:
        pads = _reversed_pads(call, tuple(tw.shape[2:]))
    except (TypeError, ValueError, AttributeError, IndexError):
        # Not a padding F.pad could take: the conv reports the argument error.
        return torch_cpu_numpy(fn(tx, tw, tb, call.stride, call.padding, call.dilation,
                                  call.groups))
    padded = F.pad(tx, pads, mode=call.padding_mode)
    return torch_cpu_numpy(fn(padded, tw, tb, call.stride, 0, call.dilation, call.groups))


# ----------------------------------------------------------------------------------------------
# Our side
# ----------------------------------------------------------------------------------------------

_POISON_INT = 0x5A5A5A5A5A5A5A5A


@contextlib.contextmanager
def poisoned_outputs():
    """Every CPU output allocation filled with NaN (float/complex) or a sentinel (integers)."""
    original = conv.backend.cpu._new_output

    def poisoned(shape, dtype):
        out = original(shape, dtype)
        kind = np.dtype(dtype).kind
        out.fill(np.nan if kind in "fc" or is_floating(dtype) else
                 np.array(_POISON_INT).astype(dtype) if kind in "iu" else 1)
        return out

    conv.backend.cpu._new_output = poisoned
    try:
        yield
    finally:
        conv.backend.cpu._new_output = original


def our_conv(call: Call, x, w, b):
    """Our answer to `call` (raises what we raise)."""
    if call.module:
        cls = conv.Conv1d if call.op == "conv1d" else conv.Conv2d
        m = cls(w.shape[1] * call.groups, w.shape[0], tuple(w.shape[2:]), call.stride, call.padding,
                call.dilation, call.groups, bias=b is not None, padding_mode=call.padding_mode,
                dtype=w.dtype.newbyteorder("="), seed=0)
        m.weight, m.bias = w, b
        return m(x, backend=call.backend, algorithm=call.algorithm)
    return getattr(conv, call.op)(x, w, b, call.stride, call.padding, call.dilation, call.groups,
                                  padding_mode=call.padding_mode, backend=call.backend,
                                  algorithm=call.algorithm)


# ----------------------------------------------------------------------------------------------
# The one check
# ----------------------------------------------------------------------------------------------

def _message(exc: BaseException) -> str:
    # PyTorch appends a C++ backtrace ("\nException raised from ...") to some messages, and a
    # note on where a warning was triggered; neither is part of the message.
    text = str(exc).split(" (Triggered internally")[0]
    return re.sub(r"\nException raised from .*?\n(?=\"$)|\nException raised from .*$", "", text,
                  flags=re.S)


def _short(exc: BaseException) -> str:
    text = _message(exc)
    return f"{type(exc).__name__}: {text if len(text) < 300 else text[:300] + '...'}"


_DTYPE_MISMATCH = re.compile(r"^Input type \(.+\) and (weight|bias) type \(.+\) should be the same"
                             r"|^expected scalar type \w+ but found \w+$")
_NOT_IMPLEMENTED = re.compile(r"^\"[\w<>]+\" not implemented for '(\w+)'$")
_PADDING_MODE = re.compile(r"^padding_mode must be one of .*, but got padding_mode=(.*)$")
_PAD_ERRORS = ("Padding size should be less than", "Padding value causes wrapping",
               "possibly 0 batch size and other non-zero dimensions", "Only 2D, 3D, 4D, 5D padding",
               "Padding length", "negative padding")


def documented_message_difference(call: Call, theirs: BaseException, ours: BaseException) -> str:
    """The documented difference that explains differing messages, or '' if none does."""
    t, o = _message(theirs), _message(ours)
    if re.match(r"^conv[12]d\(\) argument '(input|weight|bias)' \(position [123]\) must be an "
                r"array", o) and isinstance(theirs, TypeError):
        return "own words: non-array argument"
    if (re.match(r"^conv[12]d\(\): argument '(stride|padding|dilation|groups)' (must be |failed "
                 r"to unpack)", o) and "received an invalid combination of arguments" in t):
        return "own words: float/bool parameter"
    if (re.match(r"^Expected ([3-9])-dimensional input for \1-dimensional weight", o)
            and re.match(r"^expected (stride|padding|dilation) to be a single integer value or a "
                         r"list of \d+ values", t)):
        # PyTorch sizes its parameter lists by the weight's rank and complains about those.
        return "own words: weight rank (weight-dims)"
    if o.startswith("kernel size should be greater than zero"):
        # PyTorch's wording depends on its path (oneDNN's descriptor error, an IndexError from
        # select() on an empty batch, its native message).
        return "own words: zero-size kernel"
    mo, mt = _NOT_IMPLEMENTED.match(o), _NOT_IMPLEMENTED.match(t)
    if mo and mt and mo.group(1) == mt.group(1):
        return "own words: unsupported dtype (PyTorch names its kernel)"
    if _DTYPE_MISMATCH.match(o) and _DTYPE_MISMATCH.match(t):
        return "own words: dtype mismatch"
    if (isinstance(call.padding, str) and re.match(r"^Input type \(.+\) and bias type \(.+\) "
                                                   r"should be the same$", o)):
        # README: refused for every padding form; PyTorch casts the bias for string padding
        # (and so fails only where the cast does, with its own words).
        return "bias dtype differs (refused for every padding form)"
    mo, mt = _PADDING_MODE.match(o), _PADDING_MODE.match(t)
    if mo and mt and mo.group(1) == mt.group(1):
        return "own words: padding_mode (PyTorch prints a set)"
    if t.startswith("could not create a primitive descriptor") or t.startswith(
            "could not construct a memory descriptor"):
        return "own words: PyTorch's message names oneDNN internals"
    if "SymIntArrayRef expected to contain only concrete integers" in t:
        # PyTorch reads -2**63 as a symbolic int and names a generated source file.
        return "own words: PyTorch's message names its internals (SymInt)"
    if t.startswith("can't convert np.ndarray of type") and isinstance(ours, TypeError):
        return "own words: a dtype PyTorch has no tensor for"
    if call.padding_mode != "zeros" and any(s in t for s in _PAD_ERRORS) and not any(
            s in o for s in _PAD_ERRORS):
        return "argument errors before padding errors (padding_mode != 'zeros')"
    return ""


def documented_refusal(call: Call, x, w, b, ours: BaseException) -> str:
    """The documented difference under which we refuse a call PyTorch computes, or ''."""
    o = _message(ours)
    if (isinstance(call.padding, str) and isinstance(b, np.ndarray) and isinstance(x, np.ndarray)
            and b.dtype.newbyteorder("=") != x.dtype.newbyteorder("=")
            and re.match(r"^Input type \(.+\) and bias type \(.+\) should be the same$", o)):
        return "bias dtype differs (refused for every padding form)"
    if (isinstance(w, np.ndarray) and 0 in w.shape[2:]
            and o.startswith("kernel size should be greater than zero")):
        return "zero-size kernel refused on a zero-channel input"
    if call.padding_mode != "zeros" and o == "negative padding is not supported":
        return "negative padding refused (padding_mode != 'zeros')"
    if (isinstance(x, np.ndarray) and x.dtype.newbyteorder("=") in _REFUSED_EVEN_EMPTY
            and _is_empty_input(x, call) and isinstance(ours, TypeError)):
        # README: bool and uint16/32/64 are refused even where PyTorch computes nothing.
        return "bool/uint16/32/64 refused on an empty input"
    if isinstance(x, np.ma.MaskedArray) and isinstance(ours, TypeError):
        # Not in the README: PyTorch has no masked tensors to compare with, and computing on the
        # data under the mask would silently ignore it; refusing is the other honest answer.
        return "masked array refused"
    return ""


def _huge(value) -> bool:
    values = value if isinstance(value, (list, tuple)) else [value]
    return any(isinstance(v, int) and v > 2**20 for v in values)


def _clip(value):
    if isinstance(value, (list, tuple)):
        return type(value)(min(v, 2**20) if isinstance(v, int) else v for v in value)
    return min(value, 2**20) if isinstance(value, int) else value


_REFUSED_EVEN_EMPTY = tuple(np.dtype(t) for t in (np.bool_, np.uint16, np.uint32, np.uint64))


def _is_empty_input(x, call: Call) -> bool:
    """Zero batch or zero channels: PyTorch then skips its dtype checks and computes nothing."""
    batched = x.ndim == (3 if call.op == "conv1d" else 4)
    lead = x.shape[:2] if batched else (1,) + x.shape[:1]
    return 0 in lead


def _empty_mixed_dtypes(x, w, got) -> bool:
    """README: on an empty input with input and weight of different dtypes we return the
    input's dtype (PyTorch's output dtype there depends on its internal path)."""
    return (isinstance(x, np.ndarray) and isinstance(w, np.ndarray)
            and x.dtype.newbyteorder("=") != w.dtype.newbyteorder("=")
            and got.dtype == x.dtype.newbyteorder("="))


def _reduction(w) -> int:
    return max(1, int(np.prod(w.shape[1:]))) if isinstance(w, np.ndarray) else 1


def _compare(call: Call, x, w, b, got, expected: np.ndarray) -> Outcome:
    if type(got) is not np.ndarray:
        return Outcome("wrong_dtype", f"result is a {type(got).__name__}, not a numpy.ndarray")
    if got.shape != expected.shape:
        return Outcome("wrong_shape", f"shape {got.shape}, PyTorch {expected.shape}")
    if got.dtype != expected.dtype:
        return Outcome("wrong_dtype", f"dtype {got.dtype}, PyTorch {expected.dtype}")
    for name, arg in (("input", x), ("weight", w), ("bias", b)):
        if isinstance(arg, np.ndarray) and np.may_share_memory(got, arg):
            return Outcome("input_modified", f"the result shares memory with the {name}")
    if got.size == 0:
        return Outcome(OK)
    if got.dtype.kind in "iu":
        bad = got != expected
        tol = None
        ref = expected
    else:
        ref = torch_conv(call, x, w, b, upcast=True)
        # The transform algorithms' floor of the scale (tests/_helpers.py): their error is
        # relative to their tiles' values, so outputs that are zero by structure (every tap in
        # the padding) come out at rounding level (seed 12 found fft at 4e-16 there).
        floor = transform_scale_floor(call.algorithm, x, w) if isinstance(x, np.ndarray) \
            and isinstance(w, np.ndarray) else 0.0
        scale = max(float(np.abs(ref).max()), floor, 1e-30)
        tol = RTOL[got.dtype] * math.sqrt(_reduction(w)) * scale
        if got.dtype == BFLOAT16:           # one rounding to bfloat16 (tests/_helpers.py)
            tol += BF16_ROUNDING * scale
        bad = ~(np.abs(got.astype(ref.dtype) - ref) <= tol)     # NaN (unwritten) counts as bad
    if not bad.any():
        return Outcome(OK)
    where = [tuple(int(v) for v in i) for i in np.argwhere(bad)[:3]]
    shown = ", ".join(f"at {i}: got {got[i]!r}, expected {ref[i]!r}" for i in where)
    tol_text = "" if tol is None else f" (tolerance {tol:.3g})"
    return Outcome("wrong_values", f"{int(bad.sum())} of {bad.size} elements wrong{tol_text}; "
                                   f"{shown}")


def check(call: Call) -> Outcome:
    """Run `call` through PyTorch and through us; how the two compare."""
    (x, w, b), owners = build(call)
    before = [o.copy() for o in owners]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            expected, theirs = torch_conv(call, x, w, b), None
        except Exception as exc:             # PyTorch refuses: any exception type will do
            expected, theirs = None, exc
        try:
            with poisoned_outputs():
                got, ours = our_conv(call, x, w, b), None
        except Exception as exc:
            got, ours = None, exc
        for now, then in zip(owners, before):
            if not (np.array_equal(now, then) if now.dtype.kind == "O" else
                    now.tobytes() == then.tobytes()):
                return Outcome("input_modified", "an input array (or the buffer behind it) changed")
        if ours is not None and not isinstance(ours, (ValueError, TypeError)):
            return Outcome("wrong_exception_type", f"we raise {_short(ours)}" + (
                f"; PyTorch raises {_short(theirs)}" if theirs is not None else
                "; PyTorch computes it"))
        if theirs is None and ours is None:
            if (type(got) is np.ndarray and got.size == 0 and got.shape == expected.shape
                    and got.dtype != expected.dtype and _empty_mixed_dtypes(x, w, got)):
                return Outcome(OK, documented="empty input with mixed dtypes: the input's dtype")
            return _compare(call, x, w, b, got, expected)
        if theirs is None:
            label = documented_refusal(call, x, w, b, ours)
            if label:
                return Outcome(OK, documented=label)
            return Outcome("accepted_by_torch_only", f"PyTorch computes shape {expected.shape}; "
                                                     f"we raise {_short(ours)}")
        if ours is None:
            shape = getattr(got, "shape", None)
            if (_message(theirs).startswith("could not create a primitive descriptor")
                    and shape is not None and _huge(call.stride)):
                # README: PyTorch's shape checks accept a stride beyond 2**62, then its oneDNN
                # path fails on it; we compute it. Checked against PyTorch with the stride cut to
                # 2**20, which reads the same windows (one output along such a dimension).
                clipped = dataclasses.replace(call, stride=_clip(call.stride))
                outcome = _compare(call, x, w, b, got, torch_conv(clipped, x, w, b))
                return outcome if outcome.kind != OK else Outcome(
                    OK, documented="computed where PyTorch's oneDNN path fails (huge stride)")
            return Outcome("accepted_by_ours_only", f"we compute shape {shape}; PyTorch raises "
                                                    f"{_short(theirs)}")
        if _message(ours) == _message(theirs):
            return Outcome(OK)
        label = documented_message_difference(call, theirs, ours)
        if label:
            return Outcome(OK, documented=label)
        return Outcome("message_differs", f"we raise {_short(ours)}; PyTorch raises "
                                          f"{_short(theirs)}")


# ----------------------------------------------------------------------------------------------
# Strategies
# ----------------------------------------------------------------------------------------------

def _int_form(draw, values: tuple, nsp: int):
    """One parameter in one of the forms PyTorch takes: tuple, list, and where every dimension has
    the same value also an int, a 1-tuple or a NumPy integer."""
    forms = ["tuple", "list"] + (["int", "int", "one", "numpy"] if len(set(values)) == 1 else [])
    form = draw(st.sampled_from(forms))
    if form == "int":
        return values[0]
    if form == "one":
        return (values[0],)
    if form == "numpy":
        return np.int64(values[0])
    return list(values) if form == "list" else tuple(values)


@st.composite
def valid_calls(draw) -> Call:
    """A call PyTorch computes: every dtype, padding form and mode, layout and host path."""
    op = draw(st.sampled_from(["conv1d", "conv2d"]))
    nsp = 1 if op == "conv1d" else 2
    dtype = draw(st.sampled_from(DTYPES))
    if draw(st.integers(0, 7)) == 0:          # wide: many channels, partial tiles of them
        groups, cg, kg = 1, draw(st.integers(1, 24)), draw(st.integers(1, 24))
    else:
        groups = draw(st.integers(1, 4))
        cg = draw(st.integers(0, 5)) if draw(st.integers(0, 9)) == 0 else draw(st.integers(1, 5))
        # depthwise (cg = 1, kg = 1), channel multipliers (cg = 1, kg > 1), grouped
        kg = draw(st.integers(1, 5))
    c, k = groups * cg, groups * kg
    kernel = tuple(draw(st.integers(1, 5)) for _ in range(nsp))
    dilation = tuple(1 if dtype in NO_DILATED_KERNEL else draw(st.integers(1, 3))
                     for _ in range(nsp))
    modes = ("zeros", "circular") if c == 0 else tuple(PADDING_MODES)
    mode = draw(st.sampled_from(modes))
    padding_kind = draw(st.sampled_from(["int", "tuple", "same", "valid"]))
    if padding_kind == "same":
        pads = [same_padding(kk, d) for kk, d in zip(kernel, dilation)]
        padding = "same"
    elif padding_kind == "valid":
        pads = [(0, 0)] * nsp
        padding = "valid"
    else:
        big = draw(st.integers(0, 5)) == 0
        values = tuple(draw(st.integers(0, 13 if big else 3)) for _ in range(nsp))
        if padding_kind == "int":
            values = (values[0],) * nsp
        padding = _int_form(draw, values, nsp)
        pads = [(p, p) for p in values]
    n = draw(st.sampled_from([0, 1, 1, 2, 3]))
    spatial = []
    max_extra = 40 if nsp == 1 else 16
    for (lo, hi), kk, d in zip(pads, kernel, dilation):
        lower = max(1, d * (kk - 1) + 1 - lo - hi)
        if mode == "reflect":
            lower = max(lower, lo + 1, hi + 1)
        elif mode == "circular":
            lower = max(lower, lo, hi)
        if mode == "zeros" and (n == 0 or c == 0) and draw(st.integers(0, 9)) == 0:
            lower = max(0, d * (kk - 1) + 1 - lo - hi)       # an empty plane PyTorch accepts
        spatial.append(lower + draw(st.integers(0, max_extra)))
    if padding == "same":
        stride = 1 if draw(st.booleans()) else (1,) * nsp
    else:
        huge = draw(st.integers(0, 19)) == 0
        strides = tuple(draw(st.sampled_from([2**20, 2**31, 2**62, 2**63 - 1])) if huge else
                        draw(st.integers(1, 4)) for _ in range(nsp))
        stride = _int_form(draw, strides, nsp)
    batched = n != 1 or draw(st.booleans())
    x_shape = ((n,) if batched else ()) + (c,) + tuple(spatial)
    w_shape = (k, cg) + kernel
    layout = st.sampled_from(LAYOUTS)
    has_bias = draw(st.booleans())
    kind = np.dtype(dtype).kind
    floating = is_floating(dtype)       # bfloat16 too (its kind is "V")
    dil = _int_form(draw, dilation, nsp)
    ones = all(v == 1 for v in (stride if isinstance(stride, (tuple, list)) else (stride,)))
    winograd_shape = floating and ones and all(t == 3 for t in kernel)
    paths = [p for p in HOST_PATHS if not (p[1] == "implicit" and not floating)
             and not (p[1] == "fft" and kind in "iu")
             and not (p[1] == "winograd" and not winograd_shape)]
    # Few calls are Winograd's shape (about 1%): those run it half the time.
    if winograd_shape and draw(st.booleans()):
        backend, algorithm = "cpu", "winograd"
    else:
        backend, algorithm = draw(st.sampled_from(paths))
    # torch.nn.Conv*d zips 1-element tuples with the kernel size (its 'same' padding then covers
    # one dimension): the modules get ints or full tuples.
    module = ((floating or kind == "c") and c > 0 and draw(st.integers(0, 7)) == 0
              and all(not isinstance(v, (tuple, list)) or len(v) == nsp
                      for v in (padding, stride, dil)))
    return Call(op=op, x=Arr(x_shape, dtype, draw(layout)), w=Arr(w_shape, dtype, draw(layout)),
                b=Arr((k,), dtype, draw(layout)) if has_bias else None, stride=stride,
                padding=padding, dilation=dil, groups=groups, padding_mode=mode, backend=backend,
                algorithm=algorithm, module=module, seed=draw(st.integers(0, 2**32 - 1)))


def _replace(call: Call, why: str, **changes) -> Call:
    return dataclasses.replace(call, why=why, **changes)


def _with_dtype(a, dtype: str):
    return dataclasses.replace(a, dtype=dtype) if isinstance(a, Arr) else a


HUGE = (2**31, 2**62, 2**63 - 1, 2**63, 2**64)
# (Not 0-d arrays as parameters: PyTorch 2.13 fails an internal assert on them, PyList_Check.)


@st.composite
def invalid_calls(draw) -> Call:
    """A call with one thing wrong (or, sometimes, right after all): PyTorch refuses the rest."""
    base = draw(valid_calls())
    nsp = 1 if base.op == "conv1d" else 2
    x, w = base.x, base.w
    k = w.shape[0]
    mutation = draw(st.sampled_from([
        "input-rank", "weight-rank", "channels", "groups", "stride", "padding", "dilation",
        "same-strided", "kernel-too-big", "empty-spatial", "zero-out-channels", "zero-kernel",
        "weight-dtype", "bias-dtype", "unsupported-dtype", "int-dilated", "bias-shape",
        "non-array", "float-params", "padding-mode", "reflect-too-big", "circular-wraps",
        "pad-empty-dims", "masked"]))
    # The plain functional call unless the mutation is about padding modes.
    call = _replace(base, mutation, module=False, padding_mode="zeros")
    small = st.integers(0, 4)
    if mutation == "input-rank":
        rank = draw(st.sampled_from([r for r in range(nsp + 4) if r not in (nsp + 1, nsp + 2)]))
        return _replace(call, mutation, x=dataclasses.replace(
            x, shape=tuple(draw(st.integers(1, 5)) for _ in range(rank))))
    if mutation == "weight-rank":
        rank = draw(st.sampled_from([r for r in range(6) if r != nsp + 2]))
        shape = (tuple(w.shape) + (2, 2, 2))[:rank]
        return _replace(call, mutation, w=dataclasses.replace(w, shape=shape))
    if mutation == "channels":
        c = x.shape[-nsp - 1] + draw(st.sampled_from([-2, -1, 1, 3]))
        shape = x.shape[:-nsp - 1] + (max(c, 0),) + x.shape[-nsp:]
        return _replace(call, mutation, x=dataclasses.replace(x, shape=shape))
    if mutation == "groups":
        return _replace(call, mutation, groups=draw(st.sampled_from(
            (0, -1, -3, k + 1, 2 * k + 1, 7) + HUGE)))
    if mutation == "stride":
        bad = draw(st.sampled_from([0, -1, (1, 0)[:nsp] if nsp == 2 else 0, -(2**63), *HUGE[3:],
                                    (1,) * (nsp + 1), [], (2**63,) * nsp]))
        return _replace(call, mutation, stride=bad, padding=0)
    if mutation == "padding":
        bad = draw(st.sampled_from([-1, (0, -1) if nsp == 2 else -2, 2**62, 2**63, (1,) * (nsp + 1),
                                    [], "SAME", "full", "", "same ", "Valid"]))
        return _replace(call, mutation, padding=bad)
    if mutation == "dilation":
        # Huge, but (kernel - 1) * dilation stays within int64: PyTorch's arithmetic wraps
        # beyond that (it then computes a conv whose kernel it thinks has size 1).
        bad = draw(st.sampled_from([0, -1, -3, (1, 0) if nsp == 2 else 0, 2**31, 2**40, 2**63,
                                    (1,) * (nsp + 1)]))
        # (Not 'same' with a huge dilation: the README documents that one as a MemoryError.)
        return _replace(call, mutation, dilation=bad,
                        padding=0 if call.padding == "same" else call.padding)
    if mutation == "same-strided":
        return _replace(call, mutation, padding="same", stride=draw(st.sampled_from(
            [2, 3, (1, 2) if nsp == 2 else 2])))
    if mutation == "kernel-too-big":
        spatial = tuple(draw(st.integers(0, 2)) for _ in range(nsp))
        kernel = tuple(draw(st.integers(3, 6)) for _ in range(nsp))
        return _replace(call, mutation, padding=draw(st.sampled_from([0, "valid"])),
                        x=dataclasses.replace(x, shape=x.shape[:-nsp] + spatial),
                        w=dataclasses.replace(w, shape=w.shape[:2] + kernel))
    if mutation == "empty-spatial":
        lead = (draw(st.integers(1, 3)), max(1, x.shape[-nsp - 1]))
        spatial = tuple(draw(st.sampled_from([0, 0, 3, 8])) for _ in range(nsp))
        if 0 not in spatial:
            spatial = (0,) + spatial[1:]
        c = lead[1]
        groups = call.groups if c % call.groups == 0 else 1
        return _replace(call, mutation, x=dataclasses.replace(x, shape=lead + spatial),
                        w=dataclasses.replace(w, shape=(k, c // groups) + (1,) * nsp),
                        groups=groups, padding=draw(st.sampled_from([0, 1, "same", "valid"])),
                        stride=1)
    if mutation == "zero-out-channels":
        return _replace(call, mutation, w=dataclasses.replace(w, shape=(0,) + w.shape[1:]), b=None)
    if mutation == "zero-kernel":
        kernel = tuple(draw(st.sampled_from([0, 1, 2])) for _ in range(nsp))
        if 0 not in kernel:
            kernel = kernel[:-1] + (0,)
        return _replace(call, mutation, w=dataclasses.replace(w, shape=w.shape[:2] + kernel),
                        padding=draw(st.sampled_from([0, 1, "valid"])))
    if mutation == "weight-dtype":
        other = draw(st.sampled_from([d for d in DTYPES + ("bool",) if d != x.dtype]))
        return _replace(call, mutation, w=_with_dtype(w, other), b=_with_dtype(base.b, other)
                        if draw(st.booleans()) else base.b)
    if mutation == "bias-dtype":
        other = draw(st.sampled_from([d for d in DTYPES + ("bool", "uint32") if d != x.dtype]))
        return _replace(call, mutation, b=Arr((k,), other))
    if mutation == "unsupported-dtype":
        dt = draw(st.sampled_from(["bool", "uint16", "uint32", "uint64", "object", "longdouble"]))
        return _replace(call, mutation, x=_with_dtype(x, dt), w=_with_dtype(w, dt),
                        b=_with_dtype(base.b, dt), algorithm="auto", backend="cpu")
    if mutation == "int-dilated":
        dt = draw(st.sampled_from(NO_DILATED_KERNEL))
        return _replace(call, mutation, x=_with_dtype(x, dt), w=_with_dtype(w, dt),
                        b=_with_dtype(base.b, dt), padding=0, dilation=draw(
                            st.sampled_from([2, (1, 2) if nsp == 2 else 3])), algorithm="auto")
    if mutation == "bias-shape":
        shape = draw(st.sampled_from([(k + 1,), (k, 1), (), (1, k), (max(k - 1, 0),)]))
        return _replace(call, mutation, b=Arr(shape, x.dtype))
    if mutation == "non-array":
        bad = draw(st.sampled_from([[1.0, 2.0], [[[1.0]]], 1.0, 3, None, "x", (1, 2)]))
        slot = draw(st.sampled_from(["x", "w", "b"]))
        if slot == "b" and bad is None:
            bad = [0.5]
        return _replace(call, mutation, **{slot: bad})
    if mutation == "float-params":
        name = draw(st.sampled_from(["stride", "padding", "dilation", "groups"]))
        if name == "groups":
            bad = draw(st.sampled_from([float(call.groups), True, np.float64(call.groups),
                                        np.int64(call.groups), "1"]))
        else:
            bad = draw(st.sampled_from([1.0, 1.5, True, False, (1, 1.0) if nsp == 2 else (1.0,),
                                        (True,) * nsp, np.float32(1), np.int32(1),
                                        np.array([1] * nsp), None, "1"]))
        return _replace(call, mutation, **{name: bad})
    if mutation == "padding-mode":
        return _replace(call, mutation, padding_mode=draw(st.sampled_from(
            ["mirror", "Zeros", "", "reflection", "constant", "wrap"])))
    if mutation in ("reflect-too-big", "circular-wraps"):
        mode = "reflect" if mutation == "reflect-too-big" else "circular"
        spatial = tuple(draw(st.integers(1, 4)) for _ in range(nsp))
        pad = max(spatial) + (0 if mode == "reflect" else 1) + draw(small)
        return _replace(call, mutation, padding_mode=mode, padding=pad, stride=1, dilation=1,
                        x=dataclasses.replace(x, shape=x.shape[:-nsp] + spatial),
                        w=dataclasses.replace(w, shape=w.shape[:2] + (1,) * nsp))
    if mutation == "pad-empty-dims":
        mode = draw(st.sampled_from(["reflect", "replicate", "circular"]))
        shape = list(x.shape)
        shape[draw(st.integers(0, len(shape) - 1))] = 0
        c = shape[-nsp - 1]
        groups = call.groups if c % call.groups == 0 and c else 1
        return _replace(call, mutation, padding_mode=mode, padding=draw(small), stride=1,
                        dilation=1, groups=groups, x=dataclasses.replace(x, shape=tuple(shape)),
                        w=dataclasses.replace(w, shape=(k, c // groups if c else 0) + (1,) * nsp))
    # "masked": a numpy.ma input: refused with TypeError, or computed on its data as PyTorch
    # computes torch.from_numpy(masked) (a plain ndarray result either way).
    return _replace(base, mutation, x=dataclasses.replace(x, masked=True), module=False)


# ----------------------------------------------------------------------------------------------
# The CLI: many calls, every outcome counted, batches in child processes
# ----------------------------------------------------------------------------------------------

def collect(strategy, n: int, seed: int) -> list[Call]:
    """n calls drawn by hypothesis from `strategy` (generation only, reproducible by seed)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    calls: list[Call] = []

    @hypothesis_seed(seed)
    @settings(max_examples=n, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def gather(call):
        calls.append(call)

    gather()
    return calls[:n]


def _worker() -> None:
    """Child process: read pickled [(index, Call)] on stdin, one JSON line per call on stdout."""
    try:
        _torch().set_num_threads(1)
    except Exception:
        pass
    out = sys.stdout
    for index, call in pickle.load(sys.stdin.buffer):
        out.write(json.dumps({"begin": index}) + "\n")
        out.flush()
        try:
            outcome = check(call)
        except Exception as exc:        # a bug in the harness or PyTorch's side: say so
            outcome = Outcome("crashed", f"check itself raised {_short(exc)}")
        out.write(json.dumps({"index": index, "kind": outcome.kind, "detail": outcome.detail,
                              "documented": outcome.documented}) + "\n")
        out.flush()


def run_isolated(calls: list[Call], batch: int, timeout_s: float,
                 progress=None) -> list[Outcome]:
    """check() every call in child processes; a child that dies or hangs is counted as a crash of
    the call it was running, and the rest of its batch goes to a new child."""
    results: dict[int, Outcome] = {}
    pending = list(range(len(calls)))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    while pending:
        chunk, pending = pending[:batch], pending[batch:]
        proc = subprocess.Popen([sys.executable, "-m", "tests.fuzz_torch", "--worker"], cwd=root,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, env=env)
        proc.stdin.write(pickle.dumps([(i, calls[i]) for i in chunk]))
        proc.stdin.close()
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        current, done, buffer = None, set(), b""
        deadline = time.monotonic() + timeout_s * 4       # the first call pays the imports
        hung = False
        while True:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                hung = True
                proc.kill()
                break
            data = os.read(proc.stdout.fileno(), 1 << 16)
            if not data:
                break
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                msg = json.loads(line)
                if "begin" in msg:
                    current = msg["begin"]
                else:
                    results[msg["index"]] = Outcome(msg["kind"], msg["detail"], msg["documented"])
                    done.add(msg["index"])
                    current = None
                    if progress:
                        progress(len(results))
                deadline = time.monotonic() + timeout_s
        rc = proc.wait()
        sel.close()
        proc.stdout.close()
        if current is not None:
            why = f"no answer within {timeout_s:.0f} s (killed)" if hung else (
                f"the process died (exit status {rc})")
            results[current] = Outcome("crashed", why)
            done.add(current)
        elif rc != 0 and not hung and len(done) < len(chunk):
            first = next(i for i in chunk if i not in done)
            results[first] = Outcome("crashed", f"the worker failed before the call (exit {rc})")
            done.add(first)
        pending = [i for i in chunk if i not in done] + pending
    return [results[i] for i in range(len(calls))]


def _signature(outcome: Outcome) -> str:
    """The failure with its numbers blanked: one line per distinct failure."""
    return re.sub(r"\d+", "#", outcome.detail.split("\n")[0])[:220]


def report(name: str, calls: list[Call], outcomes: list[Outcome], show: int) -> str:
    lines = [f"== {name}: {len(calls)} calls"]
    counts = Counter(o.kind for o in outcomes)
    for kind in (OK,) + FAILURE_KINDS:
        lines.append(f"  {kind:24s} {counts.get(kind, 0)}")
    documented = Counter(o.documented for o in outcomes if o.kind == OK and o.documented)
    for label, count in documented.most_common():
        lines.append(f"    ok, documented difference: {label}: {count}")
    by_kind: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, o in enumerate(outcomes):
        if o.kind != OK:
            by_kind[o.kind][_signature(o)].append(i)
    for kind in FAILURE_KINDS:
        if kind not in by_kind:
            continue
        lines.append(f"-- {kind}: {counts[kind]} calls, {len(by_kind[kind])} distinct")
        for sig, indices in sorted(by_kind[kind].items(), key=lambda kv: -len(kv[1])):
            lines.append(f"  [{len(indices)}x] {sig}")
            for i in indices[:show]:
                lines.append(f"      {outcomes[i].detail}")
                lines.append(f"      {calls[i]!r}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.fuzz_torch", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--valid", type=int, default=1000, help="valid calls to run")
    parser.add_argument("--invalid", type=int, default=300, help="invalid calls to run")
    parser.add_argument("--seed", type=int, default=0, help="hypothesis seed of the draw")
    parser.add_argument("--batch", type=int, default=400, help="calls per child process")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a call may take")
    parser.add_argument("--show", type=int, default=3, help="examples shown per distinct failure")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker()
        return 0
    failures = 0
    for name, strategy, n in (("valid", valid_calls(), args.valid),
                              ("invalid", invalid_calls(), args.invalid)):
        if n <= 0:
            continue
        start = time.monotonic()
        calls = collect(strategy, n, args.seed)
        print(f"{name}: drew {len(calls)} calls in {time.monotonic() - start:.0f} s", flush=True)

        def progress(done, total=len(calls), name=name, start=time.monotonic()):
            if done % 500 == 0 or done == total:
                print(f"  {name}: {done}/{total} checked, {time.monotonic() - start:.0f} s",
                      flush=True)

        outcomes = run_isolated(calls, args.batch, args.timeout, progress)
        failures += sum(o.kind != OK for o in outcomes)
        print(report(name, calls, outcomes, args.show), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
