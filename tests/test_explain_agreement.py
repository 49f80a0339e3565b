"""conv.explain agrees with the call, everywhere: for every supported dtype x backend ('auto' and
each of conv.plan.BACKEND_NAMES) x algorithm ('auto', each of that backend's algorithms in
conv.registry, and an unknown name) on a few specs, explain raises exactly when conv.conv1d/conv2d
raises (same type, same message, and the call raises while planning: nothing is executed), and
otherwise the call executes exactly the Plan explain returned and its result matches the reference.

Backends that cannot run here (the GPU backends on a machine without a GPU) refuse with
RuntimeError on both sides: still an agreement case."""
import re

import pytest

import conv
import conv.plan
import conv.registry
from conv._spec import SUPPORTED_DTYPES
from tests._helpers import (
    assert_output_matches_reference,
    implicit_refusal,
    make_operands,
)

# id -> (op, x shape, w shape, bias, kwargs). Small: the whole file runs in seconds.
SPECS = {
    "conv2d": ("conv2d", (2, 3, 7, 8), (4, 3, 3, 3), True, dict(padding=1)),
    "conv1d": ("conv1d", (2, 4, 17), (5, 4, 3), True, dict(dilation=2)),
    # One output channel per group but not depthwise (groups = 3 < C = 6).
    "groups3-c6-k3": ("conv2d", (1, 6, 9, 9), (3, 2, 3, 3), True, dict(groups=3)),
    "depthwise": ("conv2d", (2, 6, 7, 8), (6, 1, 3, 3), False, dict(groups=6, padding=1)),
    "strided-reflect": ("conv2d", (2, 3, 9, 10), (4, 3, 3, 2), True,
                        dict(stride=2, padding=(2, 1), padding_mode="reflect")),
}

UNKNOWN = "no_such_algorithm"     # a name no backend will ever have
BACKENDS = ("auto",) + tuple(conv.plan.BACKEND_NAMES)


def _algorithm_names(backend: str) -> list[str]:
    if backend == "auto":
        # Whatever backend auto resolves to: every name any backend knows.
        rows = conv.registry.ALGORITHMS
    else:
        rows = conv.registry.algorithms(backend)
    return list(dict.fromkeys(a.name for a in rows))


CASES = [(backend, algorithm) for backend in BACKENDS
         for algorithm in ["auto"] + _algorithm_names(backend) + [UNKNOWN]]
DTYPES = [d.name for d in SUPPORTED_DTYPES]


def _operands(spec_id: str, dtype: str):
    op, xs, ws, bias, kwargs = SPECS[spec_id]
    x, w, b = make_operands(("explain-agreement", spec_id, dtype), xs, ws, dtype, bias=bias)
    return op, x, w, b, kwargs


def _outcome(fn):
    try:
        return fn(), None
    except Exception as exc:          # type and message are what is compared
        return None, exc


@pytest.fixture
def executed(monkeypatch):
    """Every Plan conv.plan.execute is given, in order."""
    plans = []
    real = conv.plan.execute

    def recording(plan, *args, **kwargs):
        plans.append(plan)
        return real(plan, *args, **kwargs)

    monkeypatch.setattr(conv.plan, "execute", recording)
    return plans


@pytest.mark.parametrize("spec_id", list(SPECS))
@pytest.mark.parametrize("backend, algorithm", CASES, ids=[f"{b}:{a}" for b, a in CASES])
@pytest.mark.parametrize("dtype", DTYPES)
def test_explain_agrees_with_the_call(dtype, backend, algorithm, spec_id, executed):
    op, x, w, b, kwargs = _operands(spec_id, dtype)
    where = f"{op}({spec_id}, {dtype}, backend={backend!r}, algorithm={algorithm!r})"
    plan, explain_error = _outcome(lambda: conv.explain(op, x, w, b, backend=backend,
                                                        algorithm=algorithm, **kwargs))
    assert executed == [], f"{where}: explain executed a plan"
    out, call_error = _outcome(lambda: getattr(conv, op)(x, w, b, backend=backend,
                                                         algorithm=algorithm, **kwargs))
    explained = None if explain_error is None else (type(explain_error), str(explain_error))
    called = None if call_error is None else (type(call_error), str(call_error))
    assert explained == called, f"{where}: explain raised {explained}, the call {called}"

    if backend != "auto" and not conv.plan.backend_availability(backend)[0]:
        # Argument errors (PyTorch's) come first; a call they let through is refused as unusable.
        _, argument_error = _outcome(lambda: conv.explain(op, x, w, b, backend="reference",
                                                          **kwargs))
        expected = RuntimeError if argument_error is None else type(argument_error)
        assert type(explain_error) is expected, f"{where}: {explained}"
    if algorithm == UNKNOWN:
        assert explain_error is not None, f"{where}: an unknown algorithm was accepted"
    if explain_error is not None:
        # The call refused while planning, as explain did: it executed nothing.
        assert executed == [], f"{where}: the call executed {executed} and then raised {called}"
        return

    assert isinstance(plan, conv.Plan), where
    assert executed == [plan], f"{where}: explain planned {plan}, the call executed {executed}"
    assert algorithm in ("auto", plan.algorithm), f"{where}: {plan}"
    assert backend in ("auto", plan.backend), f"{where}: {plan}"
    assert plan.reason, where
    assert_output_matches_reference(op, out, x, w, b, where=where, **kwargs)


# The two cases of the issue, spelled out.

@pytest.mark.parametrize("backend", ["auto", "cpu"])
@pytest.mark.parametrize("dtype", ["int64", "uint8"])
def test_implicit_refuses_integers_in_explain_and_call(dtype, backend, executed):
    op, x, w, b, kwargs = _operands("conv2d", dtype)
    message = re.escape(implicit_refusal(dtype))
    with pytest.raises(TypeError, match=f"^{message}$"):
        conv.explain(op, x, w, b, backend=backend, algorithm="implicit", **kwargs)
    with pytest.raises(TypeError, match=f"^{message}$"):
        conv.conv2d(x, w, b, backend=backend, algorithm="implicit", **kwargs)
    assert executed == []


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_one_output_channel_per_group_is_not_called_depthwise(dtype, executed):
    op, x, w, b, kwargs = _operands("groups3-c6-k3", dtype)
    plan = conv.explain(op, x, w, b, **kwargs)
    assert (plan.spec.groups, plan.spec.c, plan.spec.k) == (3, 6, 3)
    # The CPU's dispatch table chooses (conv/dispatch.py); the old rule's 'direct' for every
    # unstrided one-output-channel-per-group call was hand-written.
    assert plan.backend == "cpu" and "dispatch table" in plan.reason, plan
    assert "depthwise" not in plan.reason, plan.reason
    out = conv.conv2d(x, w, b, **kwargs)
    assert executed == [plan]
    assert_output_matches_reference(op, out, x, w, b, **kwargs)
