"""conv.explain says what the call does: it raises exactly when the call raises (same type), and
otherwise names the backend and algorithm the call runs, with a reason that fits the spec."""
import pytest

import conv
from tests._helpers import HOST_ALGORITHMS, make_operands

DTYPES = ["float16", "float32", "float64", "complex64", "complex128", "int8", "int16", "int32",
          "int64", "uint8", "bool", "uint16"]
CALLS = [  # (op, x shape, w shape, kwargs): a plain conv, a dilated one, an empty one
    ("conv2d", (2, 6, 7, 8), (3, 2, 3, 3), dict(groups=3, padding=1)),
    ("conv1d", (2, 4, 17), (5, 4, 3), dict(dilation=2)),
    ("conv2d", (0, 3, 5, 5), (4, 3, 3, 3), dict()),
]


def _outcome(fn):
    try:
        return fn(), None
    except Exception as exc:          # the type is what is compared
        return None, type(exc)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend, algorithm", HOST_ALGORITHMS + [("cpu", "auto"),
                                                                 ("auto", "auto")])
def test_explain_raises_exactly_when_the_call_does(dtype, backend, algorithm, rng):
    for op, xs, ws, kwargs in CALLS:
        x, w, _ = make_operands(rng, xs, ws, dtype)
        plan, explain_error = _outcome(lambda: conv.explain(
            op, x, w, backend=backend, algorithm=algorithm, **kwargs))
        _, call_error = _outcome(lambda: getattr(conv, op)(
            x, w, backend=backend, algorithm=algorithm, **kwargs))
        assert explain_error is call_error, (op, dtype, backend, algorithm, explain_error,
                                             call_error)
        if plan is not None:
            assert isinstance(plan, conv.Plan)
            assert algorithm in ("auto", plan.algorithm)


def test_one_output_channel_per_group_is_not_called_depthwise(rng):
    # groups = 3 < C = 6: the reason (the dispatch table's nearest measured case) must not call it
    # depthwise. (The hand-written rule that sent every unstrided k_per_group == 1 call to
    # 'direct' is gone: the table measures the nearest case, a grouped ResNeXt layer.)
    x, w, _ = make_operands(rng, (1, 6, 9, 9), (3, 2, 3, 3), "float32")
    plan = conv.explain("conv2d", x, w, groups=3)
    assert plan.algorithm == conv.registry.auto_algorithm("cpu", plan.spec)[0].name
    assert "dispatch table" in plan.reason and "depthwise" not in plan.reason, plan.reason


def test_a_spec_keeps_its_hash_in_process_only():
    # ConvSpec keeps its hash after the first (the plan caches hash it every call); equal specs
    # hash equal, a changed copy does not keep the old hash, and a pickle carries no hash (a
    # string's hash differs between processes: a Dask worker recomputes it).
    import dataclasses
    import pickle

    import numpy as np

    from conv._spec import make_spec
    x = np.zeros((1, 2, 5, 5), np.float32)
    w = np.zeros((3, 2, 3, 3), np.float32)
    spec = make_spec("conv2d", x, w, None, 1, 1, 1, 1, "reflect")
    again = make_spec("conv2d", x, w, None, 1, 1, 1, 1, "reflect")
    assert spec is not again and hash(spec) == hash(again) == hash(spec) and spec == again
    other = dataclasses.replace(spec, n=2)
    assert other != spec and hash(other) != hash(spec) and "_hash" in spec.__dict__
    copy = pickle.loads(pickle.dumps(spec))
    assert "_hash" not in copy.__dict__ and copy == spec and hash(copy) == hash(spec)
