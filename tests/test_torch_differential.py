"""Against PyTorch itself, where it is installed: the same grid, the modules, the error messages."""
import re

import numpy as np
import pytest

import conv
from tests._cases import CASE_IDS, CASES
from tests._helpers import CPU_ALGORITHMS, make_operands, refused_by_algorithm
from tests.conftest import torch_or_skip
from tests.test_errors import ERRORS

pytestmark = pytest.mark.torch


def _torch_conv(torch, op, x, w, b, kwargs):
    """PyTorch's answer: F.conv for zeros, the module's pad-then-conv for other padding modes."""
    F = torch.nn.functional
    kwargs = dict(kwargs)
    mode = kwargs.pop("padding_mode", "zeros")
    tx, tw = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(w))
    tb = None if b is None else torch.from_numpy(b)
    fn = getattr(F, op)
    if mode == "zeros":
        return fn(tx, tw, tb, **kwargs).numpy()
    nsp = 1 if op == "conv1d" else 2
    module_cls = torch.nn.Conv1d if nsp == 1 else torch.nn.Conv2d
    float_dtype = tw.dtype if tw.dtype.is_floating_point or tw.dtype.is_complex else torch.float64
    m = module_cls(w.shape[1] * kwargs.get("groups", 1), w.shape[0], w.shape[2:],
                   padding_mode=mode, bias=b is not None, dtype=float_dtype, **kwargs)
    if float_dtype != tw.dtype:
        # Integer modules cannot exist in PyTorch (parameters need grad): pad as the module does.
        padded = F.pad(tx, m._reversed_padding_repeated_twice, mode=mode)
        kwargs["padding"] = 0
        return fn(padded, tw, tb, **kwargs).numpy()
    with torch.no_grad():
        m.weight.copy_(tw)
        if b is not None:
            m.bias.copy_(tb)
        return m(tx).numpy()


@pytest.mark.parametrize("dtype", ["float64", "complex128", "int64"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_grid_against_pytorch(case, dtype, rng):
    torch = torch_or_skip()
    op, xs, ws, has_bias, kwargs = case
    x, w, b = make_operands(rng, xs, ws, dtype, bias=has_bias)
    expected = _torch_conv(torch, op, x, w, b, kwargs)
    for algorithm in CPU_ALGORITHMS:
        if refused_by_algorithm(algorithm, dtype):
            continue
        got = getattr(conv, op)(x, w, b, backend="cpu", algorithm=algorithm, **kwargs)
        assert got.shape == expected.shape and got.dtype == expected.dtype
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


# Errors whose PyTorch wording we match exactly (the others are ours: non-array inputs and
# argument types, where PyTorch's message names its own overloads, and backend/algorithm names).
_OURS = {"list-input", "list-weight", "float-stride", "bool-stride", "float-groups",
         "unknown-backend", "unknown-algorithm", "dtype-input-weight", "dtype-uint32",
         "padding-mode",
         # Arrays PyTorch has no tensors of, masked arrays, backend and algorithm names.
         "masked-input", "masked-weight", "masked-bias", "object-array",
         "object-weight-on-empty-input", "string-array", "string-input", "nested-list-input",
         "backend-not-a-string", "algorithm-not-a-string",
         # PyTorch names its overloads here ("received an invalid combination of arguments").
         "0d-bool-groups", "1d-array-groups",
         # PyTorch's complex path names its C++ tensor types ("CPUComplexFloatType").
         "complex-weight-dtype-first",
         # PyTorch's oneDNN path says "could not create a primitive descriptor" here; we use the
         # message of its native path (also what nn.Conv2d(6, 12, 0) raises in forward).
         "zero-kernel",
         # PyTorch names its internal kernel ("slow_conv2d_cpu"); we name the public op.
         "dtype-bool"}


@pytest.mark.parametrize("fn,exc,message", [e[1:] for e in ERRORS if e[0] not in _OURS],
                         ids=[e[0] for e in ERRORS if e[0] not in _OURS])
def test_error_messages_are_pytorchs(fn, exc, message, monkeypatch):
    torch = torch_or_skip()
    # Re-run the same call through PyTorch by swapping numpy arrays for tensors.
    import conv.functional as cf
    captured = {}

    def capture(op, input, weight, bias, stride, padding, dilation, groups, padding_mode, *_):
        captured.update(op=op, args=(input, weight, bias), kw=dict(
            stride=stride, padding=padding, dilation=dilation, groups=groups), mode=padding_mode)
        raise _Captured

    monkeypatch.setattr(cf, "_conv", capture)
    with pytest.raises(_Captured):
        fn()
    x, w, b = (None if v is None else torch.from_numpy(np.asarray(v)) for v in captured["args"])
    with pytest.raises(Exception) as info:
        if captured["mode"] == "zeros":
            getattr(torch.nn.functional, captured["op"])(x, w, b, **captured["kw"])
        else:
            cls = torch.nn.Conv1d if captured["op"] == "conv1d" else torch.nn.Conv2d
            m = cls(w.shape[1], w.shape[0], tuple(w.shape[2:]), padding_mode=captured["mode"],
                    **captured["kw"])
            m(x)
    torch_message = str(info.value).split(" (Triggered internally")[0]
    # PyTorch's argument parser quotes a C++ backtrace inside its message; ours stops before it.
    torch_message = re.sub(r"\nException raised from .*(?=\"$)", "", torch_message, flags=re.S)
    assert torch_message == message


class _Captured(Exception):
    pass


def test_module_reprs_and_init_match_pytorch():
    torch = torch_or_skip()
    from tests.test_modules import REPRS
    for make, expected in REPRS:
        ours = make()
        args = re.match(r"\w+\((.*)\)", expected).group(1)
        assert repr(ours) == expected
        # Build PyTorch's module from the same constructor arguments and compare reprs.
        cls = getattr(torch.nn, type(ours).__name__)
        kw = dict(stride=ours.stride, padding=ours.padding, dilation=ours.dilation,
                  groups=ours.groups, bias=ours.bias is not None, padding_mode=ours.padding_mode)
        theirs = cls(ours.in_channels, ours.out_channels, ours.kernel_size, **kw)
        assert repr(theirs) == repr(ours), args


ACCEPTED = [
    # (id, op, input shape, weight shape, dtype, weight dtype, kwargs): calls PyTorch accepts.
    ("stride-2**62-int64", "conv2d", (2, 3, 5, 6), (4, 3, 3, 2), "int64", None, dict(stride=2**62)),
    ("stride-2**62-int8", "conv2d", (2, 3, 5, 6), (4, 3, 3, 2), "int8", None, dict(stride=2**62)),
    ("stride-2**62-complex64", "conv1d", (2, 3, 6), (4, 3, 2), "complex64", None,
     dict(stride=2**62)),
    ("stride-1-2**62-float32", "conv2d", (2, 3, 5, 6), (4, 3, 3, 2), "float32", None,
     dict(stride=(1, 2**62))),
    ("stride-int64-max", "conv1d", (2, 3, 6), (4, 3, 2), "float64", None, dict(stride=2**63 - 1)),
    ("dilation-int64-max-one-tap", "conv2d", (2, 3, 5, 6), (4, 3, 1, 1), "float64", None,
     dict(dilation=2**63 - 1)),
    ("int8-dilated-zero-batch", "conv2d", (0, 3, 8, 8), (2, 3, 3, 3), "int8", None,
     dict(dilation=2)),
    ("int32-dilated-zero-channels", "conv2d", (2, 0, 8, 8), (2, 0, 3, 3), "int32", None,
     dict(dilation=2)),
    ("zero-dilation-zero-batch", "conv2d", (0, 3, 6, 6), (2, 3, 3, 3), "float64", None,
     dict(dilation=0)),
    ("dtype-mismatch-zero-batch", "conv2d", (0, 3, 6, 6), (2, 3, 3, 3), "float32", "float64", {}),
    ("groups-0d-array", "conv2d", (2, 4, 6, 6), (6, 2, 3, 3), "float64", None,
     dict(groups=np.array(2))),
    ("stride-with-0d-array", "conv2d", (2, 4, 6, 6), (6, 4, 3, 3), "float64", None,
     dict(stride=(np.array(2), np.uint8(1)))),
]


@pytest.mark.parametrize("op,xs,ws,dtype,wdtype,kwargs", [c[1:] for c in ACCEPTED],
                         ids=[c[0] for c in ACCEPTED])
def test_accepted_where_pytorch_accepts(op, xs, ws, dtype, wdtype, kwargs, rng):
    torch = torch_or_skip()
    x, w, _ = make_operands(rng, xs, ws, dtype, w_dtype=wdtype)
    expected = getattr(torch.nn.functional, op)(torch.from_numpy(x), torch.from_numpy(w),
                                                **kwargs).numpy()
    for algorithm in CPU_ALGORITHMS:
        if refused_by_algorithm(algorithm, dtype):
            continue
        got = getattr(conv, op)(x, w, algorithm=algorithm, **kwargs)
        assert got.shape == expected.shape and got.dtype == expected.dtype
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 2])              # PyTorch's native path and its oneDNN path
@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_complex_inf_and_nan_like_pytorch(dtype, batch, rng):
    # No padding: an inf weight meeting zero padding is nan in PyTorch's native path and ours, but
    # oneDNN skips padded taps (README).
    torch = torch_or_skip()
    specials = [np.inf, -np.inf, np.nan]
    for trial in range(20):
        x, w, b = make_operands(rng, (batch, 4, 7, 6), (4, 2, 2, 3), dtype, bias=True)
        for arr in (x, w, b):
            for _ in range(int(rng.integers(0, 3))):
                idx = tuple(int(rng.integers(0, s)) for s in arr.shape)
                value = specials[int(rng.integers(0, 3))]
                arr[idx] = [complex(value, arr[idx].imag), complex(arr[idx].real, value),
                            complex(value, value)][int(rng.integers(0, 3))]
        kwargs = dict(groups=2, stride=int(rng.integers(1, 3)))
        expected = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                                              torch.from_numpy(b), **kwargs).numpy()
        for algorithm in ("im2col", "direct"):
            got = conv.conv2d(x, w, b, algorithm=algorithm, **kwargs)
            for part in ("real", "imag"):
                ours, theirs = getattr(got, part), getattr(expected, part)
                np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
                np.testing.assert_array_equal(ours[np.isinf(ours)], theirs[np.isinf(ours)])
                finite = np.isfinite(theirs)
                np.testing.assert_allclose(ours[finite], theirs[finite], rtol=1e-4, atol=1e-4)


def test_module_groups_and_sizes_like_pytorch():
    torch = torch_or_skip()
    for groups in (True, np.array(2), np.int64(2)):
        ours, theirs = conv.Conv2d(4, 6, 3, groups=groups), torch.nn.Conv2d(4, 6, 3, groups=groups)
        assert repr(ours) == repr(theirs)
    x = np.ones((1, 4, 5, 5), np.float32)
    with pytest.raises(TypeError):
        torch.nn.Conv2d(4, 6, 3, groups=True)(torch.from_numpy(x))
    with pytest.raises(TypeError):
        conv.Conv2d(4, 6, 3, groups=True)(x)
    for args in ((-1, 6, 3), (4, -2, 3), (4, 6, (3, -1))):
        with pytest.raises(RuntimeError) as theirs:
            torch.nn.Conv2d(*args)
        with pytest.raises(ValueError) as ours:
            conv.Conv2d(*args)
        assert str(ours.value) == str(theirs.value)
