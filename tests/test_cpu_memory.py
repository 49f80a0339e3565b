"""Bounded memory on every CPU algorithm: a call allocates at most its output plus the workspace
limit (conv.set_workspace_limit) plus a small constant, for every dtype, by running the same
algorithm on chunks of the call (planned by conv/backend/cpu/chunks.py, run by _run_chunked in
conv/backend/cpu/__init__.py). Peaks are measured with tracemalloc (NumPy reports its allocations
to it); chunked results are compared with the reference, outputs and chunk buffers poisoned; and
>2**31-element inputs check 64-bit indexing."""
from __future__ import annotations

import os
import tracemalloc

import numpy as np
import pytest

import conv
import conv.backend.cpu as _cpu
import conv.registry
from conv._spec import make_spec
from tests._helpers import assert_matches_reference, make_operands

LIMIT = 8 << 20
# What a chunked call may allocate beyond its output and the limit: index maps, weight pieces,
# the bias, a few NumPy temporaries of kilobytes (measured peaks stay far below this).
SLACK = 1 << 20
ALL_DTYPES = ["float16", "float32", "float64", "complex64", "complex128",
              "int8", "int16", "int32", "int64", "uint8"]
FLOAT_DTYPES = ["float16", "float32", "float64"]
CPU_ALGORITHMS = [a.name for a in conv.registry.algorithms("cpu")]  # implicit, im2col, direct,
                                                                    # fft, winograd


def _takes(algorithm: str, dtype) -> bool:
    """Whether the CPU algorithm has kernels for dtype (implicit: floats; fft: floats, complex)."""
    return np.dtype(dtype) in conv.registry.algorithm("cpu", algorithm).dtypes


def _accepts(algorithm: str, op, x, w, b, kwargs) -> bool:
    """Whether the CPU algorithm runs this call: its registry row's refusal (dtypes; winograd also
    shapes: stride 1, dilation 1, 3 taps per axis)."""
    spec = make_spec(op, x, w, b, kwargs.get("stride", 1), kwargs.get("padding", 0),
                     kwargs.get("dilation", 1), kwargs.get("groups", 1),
                     kwargs.get("padding_mode", "zeros"))
    return conv.registry.algorithm("cpu", algorithm).refusal(spec) is None


@pytest.fixture(autouse=True)
def poisoned_outputs(monkeypatch):
    """Every output and chunk buffer (all come from conv.backend.cpu._new_output) starts
    poisoned: NaN, or the integer dtype's minimum, which no test's small random data produces."""
    def poisoned(shape, dtype):
        dtype = np.dtype(dtype)
        fill = np.iinfo(dtype).min if dtype.kind in "iu" else np.nan
        return np.full(shape, fill, dtype)
    monkeypatch.setattr(_cpu, "_new_output", poisoned)


@pytest.fixture
def limit():
    """Sets the CPU workspace limit for one test; restores the old value afterwards."""
    old = _cpu.workspace_limit()
    yield conv.set_workspace_limit
    _cpu.set_workspace_limit(old)


def _chunks(op, x, w, b, algorithm, kwargs):
    """The chunking the call's plan runs (None: the whole call at once, within the limit)."""
    return conv.explain(op, x, w, b, backend="cpu", algorithm=algorithm, **kwargs).chunks


def _unchunked_would_exceed(op, x, w, b, algorithm, kwargs) -> bool:
    return _chunks(op, x, w, b, algorithm, kwargs) is not None


def _peak_of(fn):
    """(fn's result, the peak bytes traced while it ran)."""
    tracemalloc.start()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def _assert_bounded(op, x, w, b, algorithm, **kwargs):
    """Runs once untraced (compiles, fills caches), then traced: peak <= output + limit + SLACK."""
    fn = getattr(conv, op)
    fn(x, w, b, backend="cpu", algorithm=algorithm, **kwargs)
    out, peak = _peak_of(lambda: fn(x, w, b, backend="cpu", algorithm=algorithm, **kwargs))
    bound = out.nbytes + _cpu.workspace_limit() + SLACK
    assert peak <= bound, f"peak {peak} bytes > output {out.nbytes} + limit + {SLACK}"
    return out


# --- the findings' reproducers ----------------------------------------------------------------

def test_conv1d_im2col_is_chunked_along_the_row(limit, rng):
    # One output row: chunking images and rows alone left the 1.88 GB column buffer whole.
    x, w, _ = make_operands(rng, (1, 64, 2**20), (8, 64, 7), "float32")
    limit(LIMIT)
    assert _unchunked_would_exceed("conv1d", x, w, None, "im2col", {})
    out = _assert_bounded("conv1d", x, w, None, "im2col")
    # A few outputs, first and last of every chunk boundary region, by direct dot products.
    cols = np.array([0, 1, 4095, 4096, 123457, 2**20 - 7])
    expected = np.einsum("kcs,cqs->kq", w.astype(np.float64),
                         x[0][:, cols[:, None] + np.arange(7)].astype(np.float64))
    np.testing.assert_allclose(out[0][:, cols], expected, rtol=1e-4, atol=1e-3)


def test_conv1d_im2col_chunked_matches_reference(limit, rng):
    x, w, b = make_operands(rng, (1, 64, 2**16), (8, 64, 7), "float32", bias=True)
    limit(LIMIT)
    assert _unchunked_would_exceed("conv1d", x, w, b, "im2col", {})
    assert_matches_reference("conv1d", x, w, b, backend="cpu", algorithm="im2col")


@pytest.mark.parametrize("stride", [12001, 6001])
def test_huge_padding_is_not_materialised(stride, limit, rng):
    # A 2x2 output of a 4x4 int8 input padded by 6000: the whole padded input in int64 was 1 GiB.
    x, w, b = make_operands(rng, (1, 1, 4, 4), (1, 1, 3, 3), "int8", bias=True)
    limit(LIMIT)
    assert _unchunked_would_exceed("conv2d", x, w, b, "im2col", {"padding": 6000, "stride": stride})
    for algorithm in [a for a in CPU_ALGORITHMS if _takes(a, "int8")]:
        out = _assert_bounded("conv2d", x, w, b, algorithm, padding=6000, stride=stride)
        assert out.shape == (1, 1, 2, 2)
        # Output (i, j) reads padded rows/columns i*stride + 0..2: input i*stride - 6000 + 0..2.
        expected = np.full((2, 2), int(b[0]), np.int64)
        for i in range(2):
            for j in range(2):
                r0, c0 = i * stride - 6000, j * stride - 6000
                for r in range(3):
                    for s in range(3):
                        if 0 <= r0 + r < 4 and 0 <= c0 + s < 4:
                            expected[i, j] += int(w[0, 0, r, s]) * int(x[0, 0, r0 + r, c0 + s])
        np.testing.assert_array_equal(out[0, 0], expected.astype(np.int8))


# --- every algorithm x dtype on a shape that blows the limit unchunked ----------------------------

# (x shape, w shape, kwargs): what makes the unchunked workspace big.
DILATED = ((1, 2, 40, 40), (3, 2, 3, 3), {"dilation": 700, "padding": 700})   # phase layout 1440^2
PADDED = ((1, 2, 24, 24), (3, 2, 3, 3), {"padding": 1500, "stride": 500})      # padded copy 3024^2
LARGE = ((1, 4, 1100, 1100), (2, 4, 3, 3), {"padding": 1})                     # int64 layout 38 MB
LARGE_DEPTHWISE = ((1, 4, 1100, 1100), (4, 1, 3, 3), {"padding": 1, "groups": 4})
# fft: the weight spectrum of a long dilated kernel alone exceeds the limit (64 x 64 kernels of
# 509 taps: at least 64*64*256 complex frequencies), so even one output's chunk splits the kernel;
# fft never copies zero padding, so the padded case pads by replication.
LONG_KERNEL = ((1, 64, 1, 400), (64, 64, 1, 128), {"dilation": 4, "padding": (0, 254)})
PADDED_REPLICATE = ((1, 2, 24, 24), (3, 2, 3, 3), {"padding": 1500, "stride": 500,
                                                   "padding_mode": "replicate"})

MATRIX = (
    [("implicit", dt, DILATED) for dt in FLOAT_DTYPES]
    + [("im2col", dt, PADDED) for dt in ALL_DTYPES]
    + [("direct", dt, DILATED) for dt in FLOAT_DTYPES + ["complex64", "complex128", "int64"]]
    + [("direct", dt, LARGE) for dt in ["int8", "int16", "int32", "uint8"]]
    + [("direct", dt, LARGE_DEPTHWISE) for dt in ["int8", "float16"]]
    + [("fft", "float32", LONG_KERNEL)]
    + [("fft", dt, PADDED_REPLICATE) for dt in ["float16", "float64", "complex64"]]
    + [("winograd", "float32", LARGE), ("winograd", "float16", LARGE_DEPTHWISE)]  # 3x3, stride 1
)


@pytest.mark.parametrize("algorithm,dtype,case", MATRIX,
                         ids=[f"{a}-{d}-{c[1]}-{sorted(c[2])}" for a, d, c in MATRIX])
def test_memory_bounded_per_algorithm_and_dtype(algorithm, dtype, case, limit, rng):
    xs, ws, kwargs = case
    x, w, b = make_operands(rng, xs, ws, dtype, bias=True)
    limit(LIMIT)
    if algorithm == "winograd":
        # Its plan batches the tiles so that the transformed input and output fit the limit
        # (winograd.workspace): no chunks are needed, the bound below is what is checked.
        assert conv.explain("conv2d", x, w, b, backend="cpu", algorithm=algorithm,
                            **kwargs).workspace_bytes <= LIMIT
    else:
        assert _unchunked_would_exceed("conv2d", x, w, b, algorithm, kwargs)
    copies = (x.copy(), w.copy(), b.copy())
    assert_matches_reference("conv2d", x, w, b, backend="cpu", algorithm=algorithm, **kwargs)
    _assert_bounded("conv2d", x, w, b, algorithm, **kwargs)
    for got, before in zip((x, w, b), copies):
        np.testing.assert_array_equal(got, before)


def test_fitting_calls_are_not_chunked(monkeypatch, rng):
    def no_chunks(*args):
        raise AssertionError("a call that fits was chunked")
    monkeypatch.setattr(_cpu, "_run_chunked", no_chunks)
    x, w, _ = make_operands(rng, (2, 16, 20, 20), (8, 16, 3, 3), "float32")
    for algorithm in CPU_ALGORITHMS:
        assert_matches_reference("conv2d", x, w, None, backend="cpu", algorithm=algorithm,
                                 padding=1)


# --- chunked results, every way of splitting ---------------------------------------------------

CHUNK_CASES = {
    "images": ("conv2d", (5, 3, 9, 10), (4, 3, 3, 3), {"padding": 1}),
    "rows-strided": ("conv2d", (1, 3, 23, 10), (4, 3, 3, 2), {"padding": (2, 1), "stride": (2, 3)}),
    "groups-dilated": ("conv2d", (2, 6, 17, 15), (6, 3, 3, 3), {"groups": 2, "dilation": (2, 3),
                                                                "padding": 3}),
    "depthwise": ("conv2d", (2, 4, 13, 11), (4, 1, 3, 3), {"groups": 4, "padding": 1}),
    "reflect": ("conv2d", (2, 3, 9, 10), (4, 3, 3, 3), {"padding": 2, "padding_mode": "reflect"}),
    "replicate-strided": ("conv2d", (1, 3, 11, 12), (4, 3, 3, 2), {"padding": (3, 2), "stride": 2,
                                                                   "padding_mode": "replicate"}),
    "circular-windows": ("conv2d", (2, 3, 60, 61), (3, 3, 2, 2), {"padding": 2, "stride": 4,
                                                                "padding_mode": "circular"}),
    "windows-zeros": ("conv2d", (1, 2, 30, 31), (3, 2, 3, 2), {"padding": 5, "stride": (7, 9)}),
    "conv1d-long": ("conv1d", (1, 3, 3000), (4, 3, 5), {"padding": 2, "stride": 2}),
    "conv1d-same": ("conv1d", (2, 3, 700), (4, 3, 4), {"padding": "same", "dilation": 3}),
    "conv1d-reflect": ("conv1d", (1, 3, 900), (2, 3, 3), {"padding": 2, "padding_mode": "reflect"}),
    "kernel-split": ("conv1d", (1, 2, 30000), (3, 2, 3), {"dilation": 14000}),
    "kernel-split-2d": ("conv2d", (1, 2, 300, 300), (3, 2, 3, 3), {"dilation": 140, "padding": 7}),
    "unbatched": ("conv2d", (3, 9, 10), (4, 3, 3, 3), {"padding": 1}),
}
LIMITS = [1, 4 << 10, 64 << 10]


@pytest.mark.parametrize("workspace", LIMITS)
@pytest.mark.parametrize("dtype", ["float32", "float16", "int32", "complex64"])
@pytest.mark.parametrize("name", list(CHUNK_CASES))
def test_chunked_results_match_reference(name, dtype, workspace, limit, rng):
    op, xs, ws, kwargs = CHUNK_CASES[name]
    if workspace == 1 and (name.startswith("conv1d") or "split" in name or "windows-zeros" == name):
        pytest.skip("one output per chunk on a long row: covered by the larger limits")
    if workspace == 1 and dtype != "float32":
        # Chunks of single outputs split the same way whatever the dtype (float32 shows it); the
        # other dtypes chunk at 4 KiB and 64 KiB, where their bytes per output change the pieces.
        pytest.skip("one output per chunk: float32 covers it, other dtypes the larger limits")
    if dtype == "int32" and "dilation" in kwargs:
        pytest.skip("PyTorch has no dilated int32 kernel")
    x, w, b = make_operands(rng, xs, ws, dtype, bias=True)
    limit(workspace)
    for algorithm in CPU_ALGORITHMS:
        if not _accepts(algorithm, op, x, w, b, kwargs):
            continue
        # The largest limit leaves some small calls whole; fft (zero padding never copied, tiles
        # as small as the kernel) fits 4 KiB on some of these: the 1-byte limit chunks it.
        if workspace < LIMITS[-1] and (algorithm != "fft" or workspace == 1):
            assert _unchunked_would_exceed(op, x, w, b, algorithm, kwargs)
        assert_matches_reference(op, x, w, b, backend="cpu", algorithm=algorithm, **kwargs)
        if dtype == "float32":          # without a bias too (the bias is added per chunk)
            assert_matches_reference(op, x, w, None, backend="cpu", algorithm=algorithm, **kwargs)


@pytest.mark.parametrize("name", ["kernel-split", "kernel-split-2d"])
def test_huge_dilation_splits_the_kernel(name, limit, rng):
    op, xs, ws, kwargs = CHUNK_CASES[name]
    x, w, _ = make_operands(rng, xs, ws, "float32")
    limit(64 << 10)
    # im2col reads the input through a strided view: one output's columns are tiny, whole kernel;
    # fft's weight spectrum spans the dilated kernel.
    for algorithm in ("implicit", "direct", "fft"):
        chunks = _chunks(op, x, w, None, algorithm, kwargs)
        assert chunks is not None, algorithm
        assert chunks.kernel_rows < ws[2] if op == "conv2d" else chunks.kernel_cols < ws[-1], \
            chunks


def test_chunks_repeat_their_specs(limit, rng):
    # Equal chunk sizes: the pieces' specs (and the layouts cached per spec) are few.
    x, w, _ = make_operands(rng, (1, 3, 4000), (4, 3, 5), "float32")
    limit(4 << 10)
    explained = conv.explain("conv1d", x, w, None, padding=2, backend="cpu", algorithm="implicit")
    spec, plan = explained.spec, explained.chunks
    assert plan is not None
    chunks = -(-spec.q // plan.cols)
    assert chunks > 4
    assert spec.q - (chunks - 1) * plan.cols <= plan.cols
    assert plan.cols - (spec.q - (chunks - 1) * plan.cols) < chunks


def test_non_contiguous_input_chunked(limit, rng):
    base, w, _ = make_operands(rng, (2, 8, 30, 40), (5, 4, 3, 3), "float32")
    limit(4 << 10)
    for x in (base[:, ::2], base[:, :4, :, ::-1]):
        for algorithm in CPU_ALGORITHMS:
            assert_matches_reference("conv2d", x, w, None, backend="cpu", algorithm=algorithm,
                                     padding=1)


# --- MemoryError, not SystemError ------------------------------------------------------------

def test_allocation_failure_in_numba_loops_is_memory_error(limit, rng):
    # A 2**41-column phase plane per task of the direct loops: numba's allocation fails (numba
    # reports it as SystemError); with an unbounded limit nothing chunks it first.
    x, w, _ = make_operands(rng, (1, 1, 8), (1, 1, 2), "float64")
    limit(1 << 62)
    with pytest.raises(MemoryError):
        conv.conv1d(x, w, padding=2**40, dilation=2**41, backend="cpu", algorithm="direct")


def test_same_call_chunked_instead_of_failing(limit, rng):
    x, w, _ = make_operands(rng, (1, 1, 8), (1, 1, 2), "float64")
    limit(LIMIT)
    out = conv.conv1d(x, w, padding=2**40, dilation=2**41, backend="cpu", algorithm="direct")
    # Output j reads padded elements j and j + 2**41, input j - 2**40 and j + 2**40: all padding.
    np.testing.assert_array_equal(out, np.zeros((1, 1, 8)))


# --- 64-bit indexing on inputs of more than 2**31 elements --------------------------------------

BIG = 2**31 + 33
BIG_STRIDE = 2**16
BIG_TAPS = 7


def _available_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _big_signal(dtype, channels, rng, need):
    """(channels, BIG) input: a cheap constant background, random values at every element the
    conv reads (a wrong index reads the background and shows), the last ones included."""
    nbytes = channels * BIG * np.dtype(dtype).itemsize
    if _available_bytes() < nbytes + need:
        pytest.skip(f"needs {(nbytes + need) >> 30} GiB of free memory")
    x = np.full((1, channels, BIG), 3, dtype)
    q = (BIG - BIG_TAPS) // BIG_STRIDE + 1
    read = (np.arange(q)[:, None] * BIG_STRIDE + np.arange(BIG_TAPS)[None, :]).reshape(-1)
    for c in range(channels):
        x[0, c, read] = make_operands(rng, read.shape, None, dtype)[0]
    return x, q


def _warm_up(x, w, algorithm):
    """The same call on the first few outputs: numba compiles (or loads) its kernels for these
    types outside the traced run, whose peak then counts only the call's own arrays."""
    conv.conv1d(x[:, :, :8 * BIG_STRIDE], w, stride=BIG_STRIDE, backend="cpu", algorithm=algorithm)


def _big_expected(x, w, q):
    """out[k, j] = sum_c,s w[k, c, s] * x[c, j*stride + s], from the few elements read."""
    idx = np.arange(q)[:, None] * BIG_STRIDE + np.arange(BIG_TAPS)[None, :]
    acc = np.int64 if x.dtype.kind in "iu" else np.float64
    taps = x[0][:, idx].astype(acc)                                   # (C, q, S)
    return np.einsum("kcs,cqs->kq", w.astype(acc), taps)


@pytest.mark.parametrize("algorithm,k,groups", [("im2col", 2, 1), ("direct", 2, 1),
                                                ("direct", 1, 1)])
def test_int8_input_beyond_2_31_elements(algorithm, k, groups, limit, rng):
    x, q = _big_signal(np.int8, 1, rng, need=1 << 30)
    _, w, _ = make_operands(rng, None, (k, 1, BIG_TAPS), "int8")
    limit(LIMIT)
    _warm_up(x, w, algorithm)
    out, peak = _peak_of(lambda: conv.conv1d(x, w, stride=BIG_STRIDE, backend="cpu",
                                             algorithm=algorithm))
    # int64 copies of the input would be 16 GiB: converted per chunk instead.
    assert peak <= out.nbytes + LIMIT + SLACK
    np.testing.assert_array_equal(out[0], _big_expected(x, w, q).astype(np.int8))


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_float_input_beyond_2_31_elements(dtype, limit, rng):
    x, q = _big_signal(dtype, 1, rng, need=2 << 30)
    _, w, _ = make_operands(rng, None, (2, 1, BIG_TAPS), dtype)
    limit(LIMIT)
    expected = _big_expected(x, w, q)
    for algorithm in CPU_ALGORITHMS:
        if not _accepts(algorithm, "conv1d", x, w, None, {"stride": BIG_STRIDE}):
            continue
        _warm_up(x, w, algorithm)
        out, peak = _peak_of(lambda: conv.conv1d(x, w, stride=BIG_STRIDE, backend="cpu",
                                                 algorithm=algorithm))
        assert peak <= out.nbytes + LIMIT + SLACK, algorithm
        tol = 2e-3 if dtype == "float16" else 1e-5
        np.testing.assert_allclose(out[0].astype(np.float64), expected,
                                   rtol=tol, atol=tol * np.abs(expected).max(), err_msg=algorithm)
