"""conv1d/conv2d on Dask arrays (conv/_dask.py) against the in-memory call: every case of the
shared grid (every parameter and padding mode) with odd chunk sizes in every axis, halos deeper
than a chunk, empty output blocks, unbatched input, groups, Dask weights; laziness; errors as for
arrays; a two-process dask.distributed cluster; a 10^8-sample signal within bounded worker
memory. Skipped where Dask is not installed."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import conv
from tests._cases import CASE_IDS, CASES
from tests._helpers import (
    assert_output_matches_reference,
    make_operands,
    refused_by_pytorch,
)

da = pytest.importorskip("dask.array", reason="Dask is not installed (pip install '.[dask]')")

pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")


def _odd_chunks(shape, seed) -> tuple:
    """Chunk sizes per axis: uneven, some of one element, so halos cross several blocks."""
    rng = np.random.default_rng(seed)
    chunks = []
    for size in shape:
        sizes, left = [], size
        while left > 0:
            step = int(rng.integers(1, max(2, size // 2 + 1)))
            sizes.append(min(step, left))
            left -= sizes[-1]
        chunks.append(tuple(sizes) or (0,))
    return tuple(chunks)


def _both(op, x, w, b, chunks, w_chunks=None, **kwargs):
    """(lazy result, its computed value, the in-memory result)."""
    fn = getattr(conv, op)
    lazy = fn(da.from_array(x, chunks=chunks),
              w if w_chunks is None else da.from_array(w, chunks=w_chunks), b, **kwargs)
    return lazy, lazy.compute(scheduler="sync"), fn(x, w, b, **kwargs)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "complex64"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_equals_the_in_memory_call(case, dtype):
    op, xs, ws, bias, kwargs = case
    x, w, b = make_operands(("dask", case, dtype), xs, ws, dtype, bias=bias)
    if refused_by_pytorch(dtype, kwargs):
        with pytest.raises(TypeError, match="slow_conv_dilated"):
            getattr(conv, op)(da.from_array(x), w, b, **kwargs)
        return
    lazy, got, expected = _both(op, x, w, b, _odd_chunks(xs, len(CASE_IDS[0]) + len(xs)),
                                **kwargs)
    assert lazy.shape == expected.shape and lazy.dtype == expected.dtype
    assert got.shape == expected.shape and got.dtype == expected.dtype
    # The same kernels on pieces of the call: equal up to the summation order BLAS picks for a
    # GEMM of another width (im2col, for integers exactly), so against the reference's tolerance.
    assert_output_matches_reference(op, got, x, w, b, **kwargs)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("kwargs", [dict(stride=3, dilation=2, padding=4), dict(stride=7, padding=1),
                                    dict(padding=(0, 5), dilation=(3, 1)),
                                    dict(stride=(5, 2), dilation=2, padding=2)])
def test_uneven_halos_empty_blocks_and_dask_weights(mode, kwargs):
    x, w, b = make_operands(("dask-halo", mode), (2, 4, 13, 15), (6, 2, 3, 3), "float64",
                            bias=True)
    if mode == "reflect" and max(np.atleast_1d(kwargs["padding"])) >= 13:
        pytest.skip("reflect padding must be smaller than the input")
    lazy, got, expected = _both("conv2d", x, w, b, ((1, 1), (3, 1), (2, 2, 1, 8), (1, 3, 11)),
                                w_chunks=(2, 1, 3, 2), groups=2, padding_mode=mode, **kwargs)
    np.testing.assert_array_equal(got, expected)
    assert lazy.chunks[0] == (1, 1) and lazy.chunks[1] == (6,)        # batch 1:1, K in one
    assert len(lazy.chunks[2]) == 4 and len(lazy.chunks[3]) == 3      # one per input block


@pytest.mark.parametrize("op, shape, chunks", [("conv1d", (4, 50), (3, 9)),
                                               ("conv1d", (2, 4, 50), (1, 1, 7)),
                                               ("conv2d", (4, 9, 11), (2, 2, 3))])
def test_unbatched_and_conv1d(op, shape, chunks):
    ws = (6, 2, 3) if op == "conv1d" else (6, 2, 2, 3)
    x, w, b = make_operands(("dask-unbatched", shape), shape, ws, "float32", bias=True)
    for mode in ("zeros", "circular"):
        lazy, got, expected = _both(op, x, w, b, chunks, groups=2, padding=2, padding_mode=mode,
                                    stride=2)
        np.testing.assert_array_equal(got, expected)


def test_modules_take_dask_arrays():
    layer = conv.Conv2d(4, 6, 3, padding=1, groups=2, padding_mode="reflect", seed=0)
    x, _, _ = make_operands("dask-module", (2, 4, 9, 10), None, "float32")
    lazy = layer(da.from_array(x, chunks=(1, 4, 4, 5)))
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(scheduler="sync"), layer(x))


def test_lazy_nothing_computed_at_call(monkeypatch):
    calls = []
    monkeypatch.setattr(conv.plan, "execute", lambda *a: calls.append(a) or pytest.fail("ran"))
    x = da.random.default_rng(0).standard_normal((4, 3, 64, 64), chunks=(1, 3, 32, 32))
    lazy = conv.conv2d(x, np.ones((5, 3, 3, 3)), None, padding=1)
    assert calls == []
    assert lazy.shape == (4, 5, 64, 64) and lazy.dtype == np.float64
    assert type(lazy._meta) is np.ndarray and lazy.numblocks == (4, 1, 2, 2)


@pytest.mark.parametrize("args, kwargs", [
    (((2, 3, 8, 8), (4, 2, 3, 3)), {}),                             # channels do not match
    (((2, 3, 8, 8), (4, 3, 3, 3)), dict(stride=0)),
    (((2, 3, 8, 8), (4, 3, 3, 3)), dict(padding=9, padding_mode="reflect")),
    (((2, 3, 2, 2), (4, 3, 3, 3)), {}),                             # kernel larger than input
    (((3, 8, 8, 8, 1), (4, 3, 3, 3)), {}),                          # 5-D input
])
def test_errors_as_for_arrays(args, kwargs):
    x, w, _ = make_operands("dask-errors", *args, "float32")
    with pytest.raises(Exception) as in_memory:
        conv.conv2d(x, w, **kwargs)
    with pytest.raises(type(in_memory.value)) as lazy:
        conv.conv2d(da.from_array(x), w, **kwargs)
    assert str(lazy.value) == str(in_memory.value)


def test_nothing_of_dask_is_imported_without_dask_input():
    code = ("import sys, numpy as np, conv; "
            "conv.conv2d(np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3))); "
            "print(any(m == 'dask' or m.startswith('dask.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- on a cluster of two worker processes ------------------------------------------------------

@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           memory_limit="1.5GiB", dashboard_address=None)
    with cluster, distributed.Client(cluster) as c:
        c.wait_for_workers(2, timeout=120)
        yield c


@pytest.mark.parametrize("case", CASES[::6], ids=CASE_IDS[::6])
def test_on_a_two_process_cluster(client, case):
    op, xs, ws, bias, kwargs = case
    x, w, b = make_operands(("dask-cluster", case), xs, ws, "float32", bias=bias)
    lazy = getattr(conv, op)(da.from_array(x, chunks=_odd_chunks(xs, 3)), w, b, **kwargs)
    np.testing.assert_array_equal(client.compute(lazy).result(), getattr(conv, op)(x, w, b,
                                                                                   **kwargs))
    # The workers are two processes other than this one. Not client.scheduler_info(): in
    # distributed 2026.8 its periodic refresh (which asks for no workers) can overwrite the fresh
    # answer before it is returned, and CI once saw {} there.
    pids = client.run(os.getpid)
    assert len(pids) == 2 and len(set(pids.values())) == 2 and os.getpid() not in pids.values()


def test_a_long_signal_within_bounded_worker_memory(client):
    # 10^8 float32 samples (400 MB in, 400 MB out) on workers capped at 1.5 GiB each: only
    # chunks and their halos are ever in memory.
    n, chunk = 10 ** 8, 1 << 22
    x = da.random.default_rng(1).standard_normal((1, 1, n), chunks=(1, 1, chunk),
                                                  dtype=np.float32)
    w = np.array([[[0.25, 0.5, 0.25]]], np.float32)
    y = conv.conv1d(x, w, None, padding=1, padding_mode="reflect")
    total, edge = client.compute([y.sum(dtype=np.float64), y[..., chunk - 5:chunk + 5]])
    total, edge = total.result(), edge.result()
    xs = x[..., chunk - 6:chunk + 6].compute()
    np.testing.assert_allclose(edge, conv.conv1d(xs, w)[..., :10], rtol=1e-6)
    # Sum of the filtered signal = sum of the signal, up to the two reflected edge samples.
    assert abs(total - float(x.sum(dtype=np.float64).compute())) < 1e-2 * n ** 0.5


def test_random_specs_and_chunkings():
    # 400 draws: conv1d/conv2d, every padding mode, kernel 1-4, dilation 1-3, stride 1-5, padding
    # up to make_spec's limits, 1-4 random chunk boundaries per axis (empty output blocks, halos
    # over several blocks, circular halos from the far end).
    rng = np.random.default_rng(5)
    compared = 0
    for trial in range(400):
        op = "conv2d" if trial % 2 else "conv1d"
        mode = ["zeros", "reflect", "replicate", "circular"][trial % 4]
        length, height = int(rng.integers(1, 20)), int(rng.integers(1, 9))
        k, d, s = int(rng.integers(1, 5)), int(rng.integers(1, 4)), int(rng.integers(1, 6))
        most = length - 1 if mode == "reflect" else length if mode == "circular" else 6
        p = int(rng.integers(0, most + 1))
        if op == "conv1d":
            xs, ws, kwargs = (2, 3, length), (4, 3, k), dict(stride=s, dilation=d, padding=p)
        else:
            ph = min(p, height - 1) if mode == "reflect" else min(p, height) \
                if mode == "circular" else p
            xs, ws = (2, 3, height, length), (4, 3, 2, k)
            kwargs = dict(stride=(1, s), dilation=(1, d), padding=(ph, p))
        x, w, b = make_operands(("dask-random", trial), xs, ws, "float64", bias=True)
        fn = getattr(conv, op)
        try:
            expected = fn(x, w, b, padding_mode=mode, **kwargs)
        except (ValueError, TypeError) as error:
            with pytest.raises(type(error)):
                fn(da.from_array(x), w, b, padding_mode=mode, **kwargs)
            continue
        chunks = tuple(tuple(int(c) for c in np.diff(np.unique(np.concatenate(
            [[0, n], rng.integers(0, n + 1, 3)])))) or (n,) for n in xs)
        got = fn(da.from_array(x, chunks=chunks), w, b, padding_mode=mode,
                 **kwargs).compute(scheduler="sync")
        assert got.shape == expected.shape, (op, mode, xs, chunks, kwargs)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12,
                                   err_msg=f"{op} {mode} {xs} {chunks} {kwargs}")
        compared += 1
    assert compared > 300


def test_explain_says_how_a_dask_array_runs():
    with pytest.raises(TypeError, match="one such call per output block"):
        conv.explain("conv2d", da.ones((1, 2, 5, 5), chunks=2), np.ones((3, 2, 3, 3)))


@pytest.mark.parametrize("kwargs, dtype", [(dict(backend="nope"), "float32"),
                                           (dict(algorithm="winograd", stride=2), "float32"),
                                           (dict(backend="cupy"), "float32"),
                                           (dict(algorithm="implicit"), "int64")])
def test_what_a_blocks_call_would_refuse_is_refused_at_the_call(kwargs, dtype):
    x, w, _ = make_operands(("dask-refusals", dtype), (2, 3, 40), (4, 3, 3), dtype)
    with pytest.raises(Exception) as in_memory:
        conv.conv1d(x, w, **kwargs)
    with pytest.raises(type(in_memory.value)) as lazy:
        conv.conv1d(da.from_array(x, chunks=3), w, **kwargs)       # not only at .compute()
    assert str(lazy.value) == str(in_memory.value)


def test_unknown_chunk_sizes_are_refused_clearly():
    x = da.from_array(np.ones((4, 3, 5, 5)), chunks=(2, 3, 5, 5))
    x = x[x[:, 0, 0, 0] > 0]                                          # chunks (nan, nan)
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        conv.conv2d(x, np.ones((2, 3, 3, 3)))
