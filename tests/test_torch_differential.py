"""Against PyTorch itself, where it is installed: the same grid, the modules, the error messages."""
import numpy as np
import pytest

import conv
from tests._cases import CASE_IDS, CASES
from tests._helpers import CPU_ALGORITHMS, random_array, refused_by_algorithm
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
    x, w = random_array(rng, xs, dtype), random_array(rng, ws, dtype)
    b = random_array(rng, (ws[0],), dtype) if has_bias else None
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
         "padding-mode", "weight-dims",
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
    assert torch_message == message


class _Captured(Exception):
    pass


def test_module_reprs_and_init_match_pytorch():
    torch = torch_or_skip()
    from tests.test_modules import REPRS
    import re
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
