"""Hypothesis: on random valid configurations the CPU path agrees with the reference, and the
unbatched/batched and conv1d/conv2d identities hold."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import conv
from tests._helpers import (
    CPU_ALGORITHMS,
    assert_matches_reference,
    make_operands,
    refused_by_algorithm,
)
from tests.strategies import conv_configs

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(cfg=conv_configs(dtypes=("float32", "float64", "complex128", "int64")),
       algorithm=st.sampled_from(CPU_ALGORITHMS), seed=st.integers(0, 2**32 - 1))
def test_cpu_matches_reference(cfg, algorithm, seed):
    op, xs, ws, has_bias, kwargs, dtype = cfg
    x, w, b = make_operands(seed, xs, ws, dtype, bias=has_bias)
    if refused_by_algorithm(algorithm, dtype):
        algorithm = "im2col"
    assert_matches_reference(op, x, w, b, backend="cpu", algorithm=algorithm, **kwargs)


@SETTINGS
@given(cfg=conv_configs(), seed=st.integers(0, 2**32 - 1))
def test_unbatched_equals_batch_of_one(cfg, seed):
    op, xs, ws, has_bias, kwargs, dtype = cfg
    nsp = 1 if op == "conv1d" else 2
    x, w, _ = make_operands(seed, xs, ws, dtype)
    single = x if len(xs) == nsp + 1 else x[0]
    fn = getattr(conv, op)
    np.testing.assert_array_equal(fn(single, w, **kwargs), fn(single[None], w, **kwargs)[0])


@SETTINGS
@given(cfg=conv_configs(ops=("conv1d",)), algorithm=st.sampled_from(["reference"] + CPU_ALGORITHMS),
       seed=st.integers(0, 2**32 - 1))
def test_conv1d_is_conv2d_with_unit_height(cfg, algorithm, seed):
    op, xs, ws, has_bias, kwargs, dtype = cfg
    backend = "reference" if algorithm == "reference" else "cpu"
    algorithm = "auto" if algorithm == "reference" else algorithm
    x, w, _ = make_operands(seed, xs, ws, "float64")
    kw2 = dict(kwargs)
    for name in ("stride", "dilation"):
        kw2[name] = (1,) + tuple(kwargs[name])
    if isinstance(kwargs["padding"], str):
        kw2["padding"] = kwargs["padding"]
    else:
        pad = kwargs["padding"]
        kw2["padding"] = (0,) + (tuple(pad) if isinstance(pad, tuple) else (pad,))
    y1 = conv.conv1d(x, w, **kwargs, backend=backend, algorithm=algorithm)
    y2 = conv.conv2d(x[..., None, :], w[..., None, :], **kw2, backend=backend, algorithm=algorithm)
    # Both run the same 2-D computation on the same numbers: equal to float64 rounding.
    np.testing.assert_allclose(y1, y2[..., 0, :], rtol=1e-12, atol=1e-12)
