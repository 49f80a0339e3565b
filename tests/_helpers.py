"""The test helpers every test file shares: the one operand builder (`make_operands`, seeded
through `operand_rng`) and the one comparison helper (`assert_matches_reference`: run a backend,
compare with the float64 NumPy reference).

Seeds: a test's data is reproducible in every process. A str (a test's node id, a case string) or
a tuple of parts is hashed with zlib.crc32 (`stable_seed`; Python's hash() of a str is salted per
process); an int is a seed already (one a hypothesis strategy drew, one a child process was
handed); a Generator (the `rng` fixture of tests/conftest.py, seeded from the test's node id) is
drawn from, so several operand sets of one test differ.

Tolerance is relative to the reference's magnitude (max |ref| over the output, and the size of the
reduction), per dtype; the first mismatches are printed, a few at most.
"""
from __future__ import annotations

import os
import subprocess
import sys
import zlib

import numpy as np

import conv
from conv._arrays import to_numpy as to_host
from conv._dtypes import BFLOAT16, is_floating
from conv._spec import make_spec
from conv.dispatch import TRANSFORM_ALGORITHMS
from conv.backend.reference import conv_reference

# Relative tolerance per dtype, scaled by sqrt(reduction length) and max|ref| below: the rounding
# error of a sum of n terms of random sign grows like sqrt(n) units in the last place of the
# largest terms. Measured over the CPU grid, implicit, memory and property tests (2,262 tests,
# every algorithm and float/complex dtype): the largest error was 0.12 of this tolerance
# (float16, direct), 0.03 for float32 and complex64, 0.003 for float64 and complex128.
RTOL = {
    np.dtype(np.float16): 2e-3,
    # bfloat16: see BF16_ROUNDING below (its tolerance does not grow with the reduction).
    BFLOAT16: 2e-6,
    np.dtype(np.float32): 2e-6,
    np.dtype(np.float64): 1e-13,
    np.dtype(np.complex64): 2e-6,
    np.dtype(np.complex128): 1e-13,
}

# bfloat16: every path sums in float32 (float32's error, RTOL[bfloat16] = RTOL[float32] in the
# formula) and rounds once, to 8 significant bits: at most half an ulp, which is at most 2^-8 of
# max|ref| (a value in [2^e, 2^(e+1)) has ulp 2^(e-7)). That term is added to the formula's, not
# scaled by sqrt(reduction): derived, not fitted, and tight enough that truncating instead of
# rounding (up to a whole ulp) fails.
BF16_ROUNDING = 2.0 ** -8

# The transform algorithms' error is relative to the values of the tile they transform, not to
# each output (conv/backend/cpu/fft.py, "Precision"): an output that is exactly zero by
# structure, such as a dilated kernel's taps skipping the only nonzero input, comes out at the
# rounding level of the tile's products (a property test found fft at -1.7e-9 for
# x = [[0.126]], w = [[[-0.132, 0.640]]], dilation 3, padding 2: both outputs 0). For them
# (conv.dispatch.TRANSFORM_ALGORITHMS, the same pair auto treats as inexact) the
# scale max|ref| has the floor max|x| * max|w|, the largest product in any tile, which random
# data's max|ref| (about sqrt(reduction) times it) exceeds except in such degenerate calls.


def transform_scale_floor(algorithm: str, x, w) -> float:
    """The floor of the tolerance's scale for `algorithm` on host arrays x, w (see above)."""
    if algorithm not in TRANSFORM_ALGORITHMS or x.size == 0 or w.size == 0:
        return 0.0
    return float(np.abs(x).max()) * float(np.abs(w).max())

FLOAT_AND_COMPLEX = ["float16", "float32", "float64", "complex64", "complex128"]


def stable_seed(*parts) -> int:
    """A seed from `parts`, the same in every process: zlib.crc32 of their str() joined by '/'."""
    return zlib.crc32("/".join(map(str, parts)).encode())


def operand_rng(seed) -> np.random.Generator:
    """The Generator operands are drawn from: `seed` a str or tuple of parts (hashed by
    stable_seed), an int (used as is), or a Generator (returned as is, its stream continued)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (str, tuple)):
        seed = stable_seed(*seed) if isinstance(seed, tuple) else stable_seed(seed)
    return np.random.default_rng(int(seed))


def make_operands(seed, x_shape, w_shape=None, dtype="float32", *, bias=False, w_dtype=None,
                  b_dtype=None) -> tuple:
    """(x, w, b): fresh random operands of a conv call (never zeros, never uninitialised), drawn
    in that order from operand_rng(seed).

    x has shape x_shape and w has shape w_shape (either None: that operand is None); b is None for bias False/None,
    shape (w_shape[0],) for bias True, or the shape `bias` names (a tuple: a wrong-sized bias).
    Values by dtype (dtype for x, w_dtype / b_dtype for w / b, defaulting to dtype): standard
    normal floats (and object / longdouble arrays of them), complex numbers with standard normal
    real and imaginary parts, small integers (-5..5, unsigned 0..5), random booleans. Always
    ndarrays, 0-d ones included."""
    rng = operand_rng(seed)

    def draw(shape, dt):
        dt = np.dtype(dt)
        shape = tuple(shape)
        if dt.kind == "c":
            values = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
        elif dt.kind in "iu":
            values = rng.integers(0 if dt.kind == "u" else -5, 6, size=shape)
        elif dt.kind == "b":
            values = rng.integers(0, 2, size=shape)
        else:
            values = rng.standard_normal(shape)
        return np.asarray(values).astype(dt)

    x = None if x_shape is None else draw(x_shape, dtype)
    w = None if w_shape is None else draw(w_shape, dtype if w_dtype is None else w_dtype)
    if bias is None or bias is False:
        b = None
    else:
        b_shape = (w_shape[0],) if bias is True else bias
        b = draw(b_shape, dtype if b_dtype is None else b_dtype)
    return x, w, b


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
    out = fn(x, w, b, backend=backend, algorithm=algorithm, **kwargs)
    where = f"{op}(backend={backend!r}, algorithm={algorithm!r}, x{tuple(x_host.shape)}, " \
            f"w{tuple(w_host.shape)}, {kwargs})"
    floor = transform_scale_floor(algorithm, to_host(x_host), to_host(w_host))
    return assert_output_matches_reference(op, out, x_host, w_host, b_host, where=where,
                                           scale_floor=floor, **kwargs)


def assert_output_matches_reference(op: str, out, x_host, w_host, b_host=None, *,
                                    where: str = "", scale_floor: float = 0.0,
                                    **kwargs) -> np.ndarray:
    """The comparison of assert_matches_reference, for an output `out` (host or device array)
    already computed with conv.<op>(..., **kwargs) from arrays whose host copies are
    x_host/w_host/b_host; scale_floor: the least scale (transform_scale_floor). Returns `out`
    on the host."""
    out = to_host(out)
    spec = make_spec(op, x_host, w_host, b_host, kwargs.get("stride", 1), kwargs.get("padding", 0),
                     kwargs.get("dilation", 1), kwargs.get("groups", 1),
                     kwargs.get("padding_mode", "zeros"))
    ref = conv_reference(x_host, w_host, b_host, spec)
    where = where or f"{op}(x{tuple(x_host.shape)}, w{tuple(w_host.shape)}, {kwargs})"
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
    scale = max(float(np.abs(ref).max()), scale_floor, 1e-30)
    tol = RTOL[x_host.dtype] * np.sqrt(reduction) * scale
    if x_host.dtype == BFLOAT16:
        tol += BF16_ROUNDING * scale
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


# Every host (backend, algorithm) pair (conv.registry lists them in this order); "implicit"
# computes floating-point dtypes only, "fft" floating-point and complex ones.
HOST_ALGORITHMS = [("cpu", "implicit"), ("cpu", "im2col"), ("cpu", "direct"), ("cpu", "fft"),
                   ("reference", "direct")]
CPU_ALGORITHMS = [a for b, a in HOST_ALGORITHMS if b == "cpu"]


def refused_by_algorithm(algorithm, dtype) -> bool:
    """cpu:implicit and cpu:winograd raise TypeError for complex and integer inputs, cpu:fft for
    integer inputs (algorithm_refusal says how). cpu:winograd also refuses, with a ValueError,
    every spec but stride-1 dilation-1 3x3 conv2d and 3-tap conv1d: that depends on the spec,
    not the dtype (winograd.refusal says it)."""
    kind = np.dtype(dtype).kind
    return ((algorithm in ("implicit", "winograd") and not is_floating(dtype))
            or (algorithm == "fft" and kind in "iu"))


def implicit_refusal(dtype) -> str:
    """The TypeError message of cpu:implicit for an input of `dtype` it has no kernel for."""
    return (f"cpu algorithm 'implicit' has no kernels for dtype {np.dtype(dtype)} "
            f"(supported: float16, bfloat16, float32, float64)")


def algorithm_refusal(algorithm, dtype) -> str:
    """The TypeError message of a CPU algorithm refusing an input of `dtype`."""
    if algorithm == "implicit":
        return implicit_refusal(dtype)
    if algorithm == "winograd":
        return (f"cpu algorithm 'winograd' has no kernels for dtype {np.dtype(dtype)} "
                f"(supported: float16, bfloat16, float32, float64)")
    assert algorithm == "fft", algorithm
    return (f"cpu algorithm 'fft' has no kernels for dtype {np.dtype(dtype)} "
            f"(supported: float16, bfloat16, float32, float64, complex64, complex128)")


# The environment that makes numba compile for a Haswell (AVX2, 8 float32 lanes) on any x86 host:
# the other vector width's kernels, tested in a child process (numba fixes its target at import).
AVX2_CHILD_ENV = {"CONV_TEST_CHILD": "1", "NUMBA_CPU_NAME": "haswell",
                  "NUMBA_CPU_FEATURES": "+avx,+avx2,+fma,+f16c,+popcnt,+sse4.1,+sse4.2,+ssse3,"
                                        "+sse3,+cx16"}


def run_tests_on_avx2(test_file: str, selection: str) -> None:
    """Run the tests of test_file matching the -k selection in a child process compiled for
    AVX2 (AVX2_CHILD_ENV); they must pass, and some must run."""
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             os.path.abspath(test_file), "-k", selection],
                            env=dict(os.environ, **AVX2_CHILD_ENV), capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
