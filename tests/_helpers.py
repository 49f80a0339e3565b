"""The one comparison helper: run a backend, compare with the float64 NumPy reference.

Tolerance is relative to the reference's magnitude (max |ref| over the output, and the size of the
reduction), per dtype; the first mismatches are printed, a few at most.
"""
from __future__ import annotations

import numpy as np

import conv
from conv._arrays import to_numpy as to_host
from conv._reference import conv_reference
from conv._spec import make_spec

# Relative tolerance per dtype, scaled by sqrt(reduction length) and max|ref| below: the rounding
# error of a sum of n terms of random sign grows like sqrt(n) units in the last place of the
# largest terms. Measured over the CPU grid, implicit, memory and property tests (2,262 tests,
# every algorithm and float/complex dtype): the largest error was 0.12 of this tolerance
# (float16, direct), 0.03 for float32 and complex64, 0.003 for float64 and complex128.
RTOL = {
    np.dtype(np.float16): 2e-3,
    np.dtype(np.float32): 2e-6,
    np.dtype(np.float64): 1e-13,
    np.dtype(np.complex64): 2e-6,
    np.dtype(np.complex128): 1e-13,
}

FLOAT_AND_COMPLEX = ["float16", "float32", "float64", "complex64", "complex128"]


def random_array(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    """Fresh random data (never zeros): normal floats, small integers for integer dtypes."""
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    if dtype.kind in "iu":
        lo = 0 if dtype.kind == "u" else -5
        return rng.integers(lo, 6, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def assert_matches_reference(op: str, x, w, b=None, *, backend: str, algorithm: str = "auto",
                             x_host=None, w_host=None, b_host=None, **kwargs) -> np.ndarray:
    """Run conv.<op> on (x, w, b) with `backend`/`algorithm` and compare with the reference.

    x/w/b may be device arrays; pass their host copies as x_host/w_host/b_host then (the reference
    runs on the host). Checks shape, dtype, that every element is finite where the reference is,
    and values within RTOL[dtype] * sqrt(reduction) * max|ref|. Returns the output on the host.
    """
    x_host = x if x_host is None else x_host
    w_host = w if w_host is None else w_host
    b_host = b if b_host is None else b_host
    fn = getattr(conv, op)
    out = to_host(fn(x, w, b, backend=backend, algorithm=algorithm, **kwargs))
    spec = make_spec(op, x_host, w_host, b_host, kwargs.get("stride", 1), kwargs.get("padding", 0),
                     kwargs.get("dilation", 1), kwargs.get("groups", 1),
                     kwargs.get("padding_mode", "zeros"))
    ref = conv_reference(x_host, w_host, b_host, spec)
    where = f"{op}(backend={backend!r}, algorithm={algorithm!r}, x{tuple(x_host.shape)}, " \
            f"w{tuple(w_host.shape)}, {kwargs})"
    assert out.shape == ref.shape, f"{where}: shape {out.shape}, expected {ref.shape}"
    assert out.dtype == x_host.dtype, f"{where}: dtype {out.dtype}, expected {x_host.dtype}"
    if ref.size == 0:
        return out
    if x_host.dtype.kind in "iu":
        expected = ref.astype(x_host.dtype)
        bad = out != expected
        if bad.any():
            _report(where, out, expected, bad)
        return out
    reduction = max(1, spec.c_per_group * spec.r * spec.s)
    scale = max(float(np.abs(ref).max()), 1e-30)
    tol = RTOL[x_host.dtype] * np.sqrt(reduction) * scale
    err = np.abs(out.astype(ref.dtype) - ref)
    bad = ~(err <= tol)           # NaN (an unwritten, poisoned element) counts as bad
    if bad.any():
        _report(where, out, ref, bad, tol)
    return out


def _report(where, out, ref, bad, tol=None):
    idx = np.argwhere(bad)
    lines = [f"{where}: {len(idx)} of {bad.size} elements wrong" +
             (f" (tolerance {tol:.3g})" if tol is not None else "")]
    for i in idx[:5]:
        i = tuple(int(v) for v in i)
        lines.append(f"  at {i}: got {out[i]!r}, expected {ref[i]!r}")
    raise AssertionError("\n".join(lines))


def refused_by_pytorch(dtype, kwargs) -> bool:
    """PyTorch has no dilated kernel for 8/16/32-bit integers; such calls raise TypeError."""
    dilation = kwargs.get("dilation", 1)
    return str(np.dtype(dtype)) in ("int8", "int16", "int32", "uint8") and max(
        np.atleast_1d(dilation)) > 1


# Every host (backend, algorithm) pair; "implicit" computes floating-point dtypes only.
HOST_ALGORITHMS = [("cpu", "implicit"), ("cpu", "im2col"), ("cpu", "direct"), ("reference", "direct")]
CPU_ALGORITHMS = [a for b, a in HOST_ALGORITHMS if b == "cpu"]


def refused_by_algorithm(algorithm, dtype) -> bool:
    """cpu:implicit raises TypeError for complex and integer inputs."""
    return algorithm == "implicit" and np.dtype(dtype).kind not in "f"
