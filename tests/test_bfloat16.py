"""bfloat16 (ml_dtypes' NumPy dtype on the host, torch.bfloat16 tensors): accepted by the reference
and every CPU algorithm (which run it as float32 and round once), returned as the input's kind
and dtype, compared with the float64 reference (tests/_helpers.py: RTOL[bfloat16], derived there)
and with PyTorch's CPU bfloat16 convolution; PyTorch CPU tensors round-trip zero-copy; PyTorch's
words for mismatched dtypes; the backends without bfloat16 kernels refuse it while planning.
(The CUDA C kernels' bfloat16 entry points run on the emulator in tests/test_emulated_cupy.py and
tests/test_emulated_implicit_gemm.py.)
"""
from __future__ import annotations

import numpy as np
import pytest

import conv
from conv import registry
from conv._dtypes import BFLOAT16
from conv._spec import make_spec
from conv.plan import make_plan
from tests._cases import CASE_IDS, CASES
from tests._helpers import (
    CPU_ALGORITHMS,
    assert_matches_reference,
    assert_output_matches_reference,
    make_operands,
)

ALGORITHMS = CPU_ALGORITHMS + ["winograd"]


def _operands(case, seed=0):
    op, x_shape, w_shape, has_bias, kwargs = case
    x, w, b = make_operands(("bf16", case, seed), x_shape, w_shape, BFLOAT16, bias=has_bias)
    return op, x, w, b, kwargs


def test_operands_are_bfloat16_and_not_all_representable_in_float16():
    _, x, w, _, _ = _operands(CASES[0])
    assert x.dtype == BFLOAT16 and w.dtype == BFLOAT16
    assert np.unique(x.astype(np.float32)).size > 10          # fresh random values, not zeros


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_cpu_algorithms_match_the_reference(case, algorithm):
    op, x, w, b, kwargs = _operands(case)
    spec = make_spec(op, x, w, b, kwargs.get("stride", 1), kwargs.get("padding", 0),
                     kwargs.get("dilation", 1), kwargs.get("groups", 1),
                     kwargs.get("padding_mode", "zeros"))
    refusal = registry.algorithm("cpu", algorithm).refusal(spec)
    if refusal is not None:                                   # winograd: 3x3 stride 1 only
        with pytest.raises(type(refusal)):
            getattr(conv, op)(x, w, b, backend="cpu", algorithm=algorithm, **kwargs)
        return
    copies = [None if a is None else a.copy() for a in (x, w, b)]
    out = assert_matches_reference(op, x, w, b, backend="cpu", algorithm=algorithm, **kwargs)
    assert out.dtype == BFLOAT16
    for a, before in zip((x, w, b), copies):                  # inputs never modified
        if a is not None:
            np.testing.assert_array_equal(a.view(np.uint16), before.view(np.uint16))


def test_auto_and_the_reference_backend():
    op, x, w, b, kwargs = _operands(CASES[0])
    plan = conv.explain(op, x, w, b, **kwargs)
    assert plan.backend == "cpu" and plan.spec.dtype == BFLOAT16
    assert_matches_reference(op, x, w, b, backend="auto", **kwargs)
    ref = conv.conv2d(x, w, b, backend="reference", **kwargs)
    assert ref.dtype == BFLOAT16


def test_chunked_call_matches(monkeypatch):
    """Over the workspace cap the float32 call it runs is chunked like any float32 call."""
    op, x, w, b, kwargs = "conv2d", *make_operands("bf16-chunks", (3, 4, 20, 22), (5, 4, 3, 3),
                                                  BFLOAT16, bias=True), {"padding": 1}
    conv.set_workspace_limit(2048, "cpu")
    try:
        plan = conv.explain(op, x, w, b, backend="cpu", algorithm="im2col", **kwargs)
        assert plan.chunks is not None
        assert_matches_reference(op, x, w, b, backend="cpu", algorithm="im2col", **kwargs)
    finally:
        conv.set_workspace_limit(None, "cpu")


def test_modules_take_bfloat16():
    layer = conv.Conv2d(3, 4, 3, padding=1, padding_mode="reflect", dtype=BFLOAT16, seed=0)
    assert layer.weight.dtype == BFLOAT16 and layer.bias.dtype == BFLOAT16
    x = make_operands("bf16-module", (2, 3, 9, 8), None, BFLOAT16)[0]
    out = layer(x)
    assert out.dtype == BFLOAT16
    assert_output_matches_reference("conv2d", out, x, layer.weight, layer.bias, padding=1,
                                    padding_mode="reflect")


def test_backends_without_bfloat16_kernels_refuse_it_while_planning():
    _, x, w, b, _ = _operands(CASES[0])
    spec = make_spec("conv2d", x, w, b, 1, 0, 1, 1, "zeros")
    for backend, algorithm in [("numba", a.name) for a in registry.algorithms("numba")] + [
            ("cupy", "im2col_cublas")]:
        with pytest.raises(TypeError, match=f"'{algorithm}' has no kernels for dtype bfloat16"):
            make_plan(spec, x, w, b, backend, algorithm, emulated=True)
    plan = make_plan(spec, x, w, b, "cupy", "implicit_gemm", emulated=True)
    assert plan.precision == "bf16"


# --- PyTorch ---------------------------------------------------------------------------------

torch = pytest.importorskip("torch", reason="PyTorch is not installed: no differential tests")


def _tensor(a):
    return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_matches_pytorch_cpu(case):
    """Our CPU result and PyTorch's bfloat16 convolution are both within the reference's
    tolerance (both sum in float32 and round once; they agree to the bit on most elements)."""
    op, x, w, b, kwargs = _operands(case, seed=1)
    kwargs = dict(kwargs)
    mode = kwargs.pop("padding_mode", "zeros")
    xt, wt = _tensor(x), _tensor(w)
    bt = None if b is None else _tensor(b)
    if mode == "zeros":
        expected = getattr(torch.nn.functional, op)(xt, wt, bt, **kwargs)
    else:
        module = (torch.nn.Conv1d if op == "conv1d" else torch.nn.Conv2d)(
            w.shape[1] * kwargs.get("groups", 1), w.shape[0], w.shape[2:], bias=b is not None,
            padding_mode=mode, dtype=torch.bfloat16, **kwargs)
        with torch.no_grad():
            module.weight.copy_(wt)
            if b is not None:
                module.bias.copy_(bt)
            expected = module(xt)
    ours = getattr(conv, op)(xt, wt, bt, padding_mode=mode, **kwargs)
    assert isinstance(ours, torch.Tensor) and ours.dtype == torch.bfloat16
    assert ours.shape == expected.shape and ours.stride() == expected.stride()
    for result in (ours, expected):
        assert_output_matches_reference(op, result.float().numpy().astype(BFLOAT16), x, w, b,
                                        padding_mode=mode, **kwargs)


def test_torch_cpu_tensor_round_trip_is_zero_copy_and_leaves_inputs_alone():
    _, x, w, b, kwargs = _operands(CASES[0], seed=2)
    xt, wt, bt = _tensor(x), _tensor(w), _tensor(b)
    before = [t.clone() for t in (xt, wt, bt)]
    out = conv.conv2d(xt, wt, bt, **kwargs)
    assert type(out) is torch.Tensor and out.dtype == torch.bfloat16 and out.device.type == "cpu"
    for t, saved in zip((xt, wt, bt), before):
        assert torch.equal(t.view(torch.int16), saved.view(torch.int16))
    # The tensor is a view of the result's memory: writing through a NumPy view of it shows.
    view = out.view(torch.int16).numpy()
    view.flat[0] = 0
    assert out.view(torch.int16).flatten()[0].item() == 0
    assert_output_matches_reference("conv2d", conv._arrays.to_numpy(conv.conv2d(xt, wt, bt)),
                                    x, w, b)


@pytest.mark.parametrize("other", [torch.float32, torch.float16, torch.float64])
def test_mismatched_bias_dtype_uses_pytorch_words(other):
    _, x, w, b, kwargs = _operands(CASES[0])
    xt, wt, bt = _tensor(x), _tensor(w), _tensor(b).to(other)
    with pytest.raises(RuntimeError) as theirs:
        torch.nn.functional.conv2d(xt, wt, bt)
    with pytest.raises(TypeError) as ours:
        conv.conv2d(xt, wt, bt)
    assert str(ours.value) == str(theirs.value)


def test_mismatched_weight_dtype_is_refused():
    """PyTorch words this one after its kernel's scalar type ("expected scalar type BFloat16 but
    found Float"); we say which operands differ, as for every other dtype pair."""
    _, x, w, _, _ = _operands(CASES[0])
    with pytest.raises(RuntimeError):
        torch.nn.functional.conv2d(_tensor(x), _tensor(w).float())
    with pytest.raises(TypeError, match=r"Input type \(c10::BFloat16\) and weight type \(float\)"):
        conv.conv2d(_tensor(x), _tensor(w).float())
