"""The CUDA C kernels executed on the CPU emulator (conv/emulator/): the CuPy backend's whole GPU
grid (every algorithm x dtype x case of tests/_cases.py, as tests/test_gpu_cupy.py runs it on a
GPU), every tile configuration the autotuner can name (direct's kb1/kb4/kb8, im2col's GEMM tiles)
on cases with partial tiles on every edge, views, chunking, integer dtypes, the launch limits, the
emulated PTX, and mutation tests that prove the emulator catches a removed barrier, a
shared-memory read before write and (under AddressSanitizer, tests/_emulator_asan.py) an
out-of-bounds tile load.

Outputs are poisoned (NaN, or a sentinel for integers) before the kernels run; each test runs its
threads in a schedule (forward, reverse or shuffled) drawn from its id.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conv import emulator, registry
from conv import plan as planning
from conv._spec import make_spec
from conv.backend import cupy as cupy_backend
from conv.backend.cupy.sources import (
    GEMM_TILE_CONFIGS,
    gemm_tiles,
    module_options,
    read_source,
)
from tests._cases import CASE_IDS, CASES
from tests._helpers import (
    FLOAT_AND_COMPLEX,
    assert_output_matches_reference,
    make_operands,
    refused_by_pytorch,
)
from tests._emulated import SCHEDULES, poison_outputs, schedule  # noqa: F401 (fixtures)

_OK, _WHY = emulator.availability()
pytestmark = [
    pytest.mark.emulated,
    pytest.mark.skipif(not _OK, reason=f"CPU emulator of the CUDA kernels not usable: {_WHY}"),
    pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths"),
]

ALGORITHMS = [a.name for a in registry.algorithms("cupy")]
DTYPES = FLOAT_AND_COMPLEX + ["bfloat16", "int32"]


def _without_kernels(algorithm: str, dtype) -> bool:
    """implicit_gemm computes float16 and float32 only: the registry refuses the others."""
    return np.dtype(dtype) not in registry.algorithm("cupy", algorithm).dtypes


def _refused_shape(op, x, w, b, algorithm, schedule=("forward", 0), **kwargs) -> bool:
    """depthwise computes groups == C only: where the registry row refuses the spec (a
    ValueError), the call must raise it; True when it did (the caller has nothing to check)."""
    spec = make_spec(op, x, w, b, kwargs.get("stride", 1), kwargs.get("padding", 0),
                     kwargs.get("dilation", 1), kwargs.get("groups", 1),
                     kwargs.get("padding_mode", "zeros"))
    refusal = registry.algorithm("cupy", algorithm).refusal(spec)
    if not isinstance(refusal, ValueError):
        return False
    with pytest.raises(ValueError, match=f"'{algorithm}'"):
        emulate(op, x, w, b, algorithm, schedule, **kwargs)
    return True






@pytest.fixture
def workspace():
    yield cupy_backend.set_workspace_limit
    cupy_backend.set_workspace_limit(None)


def emulate(op, x, w, b, algorithm, schedule=("forward", 0), **kwargs):
    plan = emulator.plan(op, x, w, b, algorithm=algorithm, **kwargs)
    return plan, emulator.run(plan, x, w, b, schedule=schedule[0], seed=schedule[1])


def _operands(case, dtype, seed=0):
    op, x_shape, w_shape, has_bias, kwargs = case
    x, w, b = make_operands(("emulated", case, dtype, seed), x_shape, w_shape, dtype,
                            bias=has_bias)
    return op, x, w, b, kwargs


# --- the GPU grid ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_grid(case, algorithm, dtype, schedule):
    op, x, w, b, kwargs = _operands(case, dtype)
    if refused_by_pytorch(dtype, kwargs):
        with pytest.raises(TypeError, match="slow_conv_dilated"):
            emulate(op, x, w, b, algorithm, schedule, **kwargs)
        return
    if _without_kernels(algorithm, dtype):
        with pytest.raises(TypeError, match=f"'{algorithm}' has no kernels for dtype {dtype}"):
            emulate(op, x, w, b, algorithm, schedule, **kwargs)
        return
    if _refused_shape(op, x, w, b, algorithm, schedule, **kwargs):
        return
    copies = [None if a is None else a.copy() for a in (x, w, b)]
    plan, out = emulate(op, x, w, b, algorithm, schedule, **kwargs)
    assert (plan.backend, plan.algorithm) == ("cupy", algorithm)
    assert_output_matches_reference(op, out, x, w, b, where=f"{plan} [{schedule[0]}]", **kwargs)
    for a, before in zip((x, w, b), copies):       # inputs are never modified
        if a is not None:
            np.testing.assert_array_equal(a, before)


@pytest.mark.parametrize("dtype", ["int8", "int16", "int64", "uint8"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_other_integer_dtypes_wrap_as_pytorch(algorithm, dtype, schedule):
    op, x, w, b, kwargs = _operands(CASES[0], dtype)
    x = (x * 37).astype(dtype)                      # large enough that int8/uint8 sums wrap
    if _without_kernels(algorithm, dtype):
        with pytest.raises(TypeError, match="has no kernels for dtype"):
            emulate(op, x, w, b, algorithm, schedule, **kwargs)
        return
    if _refused_shape(op, x, w, b, algorithm, schedule, **kwargs):
        return
    _, out = emulate(op, x, w, b, algorithm, schedule, **kwargs)
    assert_output_matches_reference(op, out, x, w, b, **kwargs)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_views_negative_strides_and_transposes(algorithm, schedule):
    base, w, b = make_operands("emulated-views", (4, 6, 11, 13), (6, 3, 4, 3), "float32",
                               bias=(12,))
    x, w, b = base[::-1, :, ::2, ::-1], w.transpose(0, 1, 3, 2), b[::2]
    kwargs = dict(padding=(1, 2), groups=2, stride=(1, 2), padding_mode="reflect")
    if _refused_shape("conv2d", x, w, b, algorithm, schedule, **kwargs):   # depthwise
        return      # (tests/test_emulated_depthwise.py: its views)
    _, out = emulate("conv2d", x, w, b, algorithm, schedule, **kwargs)
    assert_output_matches_reference("conv2d", out, x, w, b, **kwargs)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_views_pointwise_and_unbatched_conv1d(algorithm, schedule):
    x, w, _ = make_operands("emulated-pointwise", (3, 6, 9, 7), (8, 6, 1, 1), "float32")
    x = x[:, :, ::-1, :]
    if _refused_shape("conv2d", x, w, None, algorithm, schedule, stride=2):   # depthwise
        return      # (tests/test_emulated_depthwise.py: its views and conv1d)
    _, out = emulate("conv2d", x, w, None, algorithm, schedule, stride=2)
    assert_output_matches_reference("conv2d", out, x, w, None, stride=2)
    # complex64 where the algorithm has it (implicit_gemm: float32)
    dtype = "float32" if _without_kernels(algorithm, "complex64") else "complex64"
    x1, w1, b1 = make_operands("emulated-conv1d", (6, 40), (9, 2, 3), dtype, bias=True)
    x1, b1 = x1[:, ::-2], b1[::-1]
    kwargs = dict(groups=3, padding=2, padding_mode="circular", dilation=2)
    _, out = emulate("conv1d", x1, w1, b1, algorithm, schedule, **kwargs)
    assert_output_matches_reference("conv1d", out, x1, w1, b1, **kwargs)


# --- tile configurations: each one the autotuner can name, on partial tiles at every edge ------

# kg = 20 (below every BM; k-blocks of 4 full, of 8 partial), 3 per group (partial k-blocks, groups
# in grid z), 130 (a full BM = 128 tile and a partial one, and a full BN = 128 column tile); columns
# 180 = 128 + 52 and 160 (one full tile of either BN and a partial one); reductions 27, 10, 18
# (partial BK = 8 and 16 steps); depthwise (kg = 1: kb4/kb8 lanes past the group idle); pointwise
# (the GEMM reads the strided input in place).
CONFIG_CASES = {
    "dense": ("conv2d", (2, 3, 9, 10), (20, 3, 3, 3), True, dict(padding=1)),
    "grouped-conv1d": ("conv1d", (2, 6, 40), (9, 2, 5), True,
                       dict(groups=3, stride=2, padding=2, padding_mode="reflect")),
    "wide": ("conv2d", (1, 6, 4, 40), (130, 6, 1, 3), False, dict(padding=(0, 1))),
    "depthwise": ("conv2d", (2, 6, 8, 9), (6, 1, 3, 3), True, dict(groups=6, padding=1)),
    "pointwise": ("conv2d", (2, 5, 8, 8), (6, 5, 1, 1), True, dict(stride=2)),
}
_DIRECT_CASES = ("dense", "grouped-conv1d", "depthwise")
_GEMM_CASES = ("dense", "grouped-conv1d", "wide", "pointwise")
TILE_CONFIGS = ([("direct", f"kb{kb}", case, "float32") for kb in cupy_backend.DIRECT_KBS
                 for case in _DIRECT_CASES] +
                [("im2col", tile, case, "float32") for tile in gemm_tiles("float32")
                 for case in _GEMM_CASES] +
                # the new (dtype, tile) pairs beyond the defaults: 64x64x16 with 4-byte
                # accumulators (float16 converts on the way into shared memory)
                [("im2col", "64x64x16", case, "float16") for case in ("dense", "wide")])


@pytest.mark.parametrize("algorithm, config, case, dtype", TILE_CONFIGS,
                         ids=["-".join(c) for c in TILE_CONFIGS])
def test_tile_configs(algorithm, config, case, dtype, schedule):
    op, x, w, b, kwargs = _operands(CONFIG_CASES[case], dtype)
    spec = make_spec(op, x, w, b, kwargs.get("stride", 1), kwargs.get("padding", 0),
                     kwargs.get("dilation", 1), kwargs.get("groups", 1),
                     kwargs.get("padding_mode", "zeros"))
    plan = planning.make_plan(spec, x, w, b, "cupy", algorithm, emulated=True, config=config)
    assert plan.config == config
    launched = [s for s in cupy_backend.launches(plan, cupy_backend._prepare(plan, x, w, b, np))
                if isinstance(s, cupy_backend.Launch) and s.source != "im2col.cu"]
    if algorithm == "direct":
        assert [s.entry for s in launched] == [f"conv2d_direct_{config}_{dtype}"]
    else:
        tile = GEMM_TILE_CONFIGS[config]
        assert launched and all(s.block == (tile.threads, 1, 1) and
                                s.options == module_options("gemm.cu", dtype, config)
                                for s in launched)
    out = emulator.run(plan, x, w, b, schedule=schedule[0], seed=schedule[1])
    assert_output_matches_reference(op, out, x, w, b, where=f"{plan} [{schedule[0]}]", **kwargs)


# --- the workspace cap: chunks of images, then bands of output rows --------------------------

@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("algorithm", ["im2col", "im2col_naive", "im2col_cublas"])
def test_workspace_cap_chunks_images_then_rows(workspace, algorithm, mode, schedule):
    x, w, b = make_operands(("emulated-chunks", mode), (5, 3, 9, 10), (4, 3, 3, 3), "float32",
                            bias=True)
    kwargs = dict(padding=1, stride=(2, 1), padding_mode=mode)      # P = 5, Q = 10
    per_row = 3 * 3 * 3 * 10 * 4                                     # C*R*S*Q*itemsize
    for limit, images, rows in [(2 * 5 * per_row, 2, 5), (2 * per_row, 1, 2), (per_row - 1, 1, 1)]:
        workspace(limit)
        plan, out = emulate("conv2d", x, w, b, algorithm, schedule, **kwargs)
        assert plan.algorithm == algorithm
        assert (plan.chunks.images, plan.chunks.rows) == (images, rows), plan
        assert plan.workspace_bytes <= max(limit, per_row)
        assert_output_matches_reference("conv2d", out, x, w, b, **kwargs)


def test_schedules_give_identical_bits():
    # Race-free kernels: each output's sum runs in one thread in a fixed order, whatever the
    # order of the threads.
    x, w, b = make_operands("emulated-schedules", (2, 12, 9, 10), (20, 12, 3, 3), "float64",
                            bias=True)
    outs = {(s, seed): emulate("conv2d", x, w, b, "im2col", (s, seed), padding=1)[1]
            for s in SCHEDULES for seed in (1, 2)}
    first = next(iter(outs.values()))
    for out in outs.values():
        np.testing.assert_array_equal(out, first)


# --- the emulator itself: limits, PTX, barriers -----------------------------------------------

def _custom_module(text: str):
    """A module built from `text` in place of im2col.cu (its name only; nothing of it is used)."""
    with emulator.replaced_source("im2col.cu", text):
        return emulator.module("im2col.cu", module_options("im2col.cu", np.float32))


_PROBES = r'''
#include "common.cuh"
extern "C" __global__ void f16_to_f32(const unsigned short *h, float *f, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) f[i] = conv_half_to_float(h[i]);
}
extern "C" __global__ void f32_to_f16(const float *f, unsigned short *h, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) h[i] = conv_float_to_half(f[i]);
}
extern "C" __global__ void warp_sum(const float *x, float *out) {
    float v = x[threadIdx.x];
    for (int d = 16; d > 0; d /= 2) v += __shfl_sync(0xffffffffu, v, (threadIdx.x + d) % 32);
    out[threadIdx.x] = v;
}
extern "C" __global__ void too_much_shared(float *out) {
    __shared__ float big[12289];
    big[threadIdx.x] = 1.0f;
    out[0] = big[0];
}
extern "C" __global__ void mismatched_barriers(float *out) {
    if (threadIdx.x == 0) __syncthreads(); else __syncwarp();
    out[threadIdx.x] = 1.0f;
}
'''


def test_cvt_f16_to_f32_is_exact_for_every_bit_pattern():
    m = _custom_module(_PROBES)
    h = np.arange(1 << 16, dtype=np.uint16)
    f = np.full(h.size, -1.0, np.float32)
    m.launch("f16_to_f32", (h.size // 256, 1, 1), (256, 1, 1), (h, f, h.size))
    expected = h.view(np.float16).astype(np.float32)
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(f[finite].view(np.uint32), expected[finite].view(np.uint32))
    assert np.array_equal(np.isnan(f), np.isnan(expected))
    assert np.array_equal(np.isinf(f) & (f > 0), np.isinf(expected) & (expected > 0))


def test_cvt_rn_f32_to_f16_rounds_to_nearest_even():
    m = _custom_module(_PROBES)
    rng = np.random.default_rng(7)
    bits = np.concatenate([rng.integers(0, 1 << 32, 1 << 18, dtype=np.uint64).astype(np.uint32),
                           # every float16 and the midpoints between neighbours: the ties
                           (np.arange(1 << 16, dtype=np.uint16).view(np.float16)
                            .astype(np.float32).view(np.uint32) + np.uint32(1 << 12))])
    f = bits.view(np.float32)
    h = np.zeros(f.size, np.uint16)
    m.launch("f32_to_f16", (-(-f.size // 256), 1, 1), (256, 1, 1), (f, h, f.size))
    with np.errstate(over="ignore"):
        expected = f.astype(np.float16)                 # NumPy rounds to nearest even
    nan = np.isnan(f)
    np.testing.assert_array_equal(h[~nan], expected[~nan].view(np.uint16))
    assert (h[nan] == 0x7fff).all()                     # PTX: the canonical NaN


def test_warp_shuffle_is_a_rendezvous():
    m = _custom_module(_PROBES)
    x = np.arange(32, dtype=np.float32)
    out = np.zeros(32, np.float32)
    for schedule in SCHEDULES:
        m.launch("warp_sum", (1, 1, 1), (32, 1, 1), (x, out), schedule, seed=5)
        np.testing.assert_array_equal(out, np.full(32, x.sum(), np.float32))


@pytest.mark.parametrize("grid, block", [((1, 1, 1), (1025, 1, 1)), ((1, 1, 1), (32, 32, 2)),
                                         ((1, 1, 1), (1, 1, 65)), ((1, 65536, 1), (32, 1, 1)),
                                         ((0, 1, 1), (32, 1, 1))])
def test_launch_limits_are_refused_as_cuLaunchKernel_does(grid, block):
    m = _custom_module(_PROBES)
    out = np.zeros(2048, np.float32)
    with pytest.raises(emulator.EmulatorError, match="CUDA_ERROR_INVALID_VALUE"):
        m.launch("warp_sum", grid, block, (out, out))


def test_more_than_48_kib_of_shared_memory_is_refused():
    m = _custom_module(_PROBES)
    with pytest.raises(emulator.EmulatorError, match="48 KiB"):
        m.launch("too_much_shared", (1, 1, 1), (32, 1, 1), (np.zeros(1, np.float32),))


def test_threads_waiting_at_different_barriers_are_a_deadlock():
    m = _custom_module(_PROBES)
    with pytest.raises(emulator.EmulatorError, match="deadlock"):
        m.launch("mismatched_barriers", (1, 1, 1), (32, 1, 1), (np.zeros(32, np.float32),))


def test_inline_ptx_without_an_emulation_is_refused_by_name():
    text = 'extern "C" __global__ void k(float *x) { asm("ex2.approx.f32 %0, %0;" : "+f"(x[0])); }'
    with pytest.raises(emulator.EmulatorError, match="ex2.approx.f32"):
        _custom_module(text)


# --- mutations: the emulator catches what a kernel bug would do on a GPU ----------------------

def _gemm_case():
    # CRS = 4*3*3 = 36: five BK = 8 steps, the last one partial; kg = 20 < BM: a partial tile.
    x, w, b = make_operands("emulated-mutation", (2, 4, 9, 10), (20, 4, 3, 3), "float32",
                            bias=True)
    return x, w, b, dict(padding=1)


def _gemm_source_with(old: str, new: str, count: int = 1) -> str:
    text = read_source("gemm.cu")
    assert text.count(old) >= count, old
    return text.replace(old, new, count)


def test_the_unmutated_gemm_passes():
    x, w, b, kwargs = _gemm_case()
    for s in SCHEDULES:
        _, out = emulate("conv2d", x, w, b, "im2col", (s, 3), **kwargs)
        assert_output_matches_reference("conv2d", out, x, w, b, **kwargs)


@pytest.mark.parametrize("which", [0, 1], ids=["before-the-products", "after-the-products"])
def test_a_removed_barrier_is_caught(which):
    x, w, b, kwargs = _gemm_case()
    text = read_source("gemm.cu")
    first = text.index("__syncthreads();")
    at = first if which == 0 else text.index("__syncthreads();", first + 1)
    mutated = text[:at] + "/* removed */" + text[at + len("__syncthreads();"):]
    with emulator.replaced_source("gemm.cu", mutated):
        _, out = emulate("conv2d", x, w, b, "im2col", ("forward", 0), **kwargs)
    with pytest.raises(AssertionError):
        assert_output_matches_reference("conv2d", out, x, w, b, **kwargs)


def test_a_shared_memory_read_before_write_is_caught():
    # The A tile's zero fill for rows past the weights removed: with a reduction of 3*1*2 = 6 < BK
    # the tile's rows 6 and 7 are then read without ever being written.
    x, w, b = make_operands("emulated-unwritten", (2, 3, 9, 10), (20, 3, 1, 2), "float32",
                            bias=True)
    kwargs = dict(padding=1)
    _, out = emulate("conv2d", x, w, b, "im2col", ("forward", 0), **kwargs)
    assert_output_matches_reference("conv2d", out, x, w, b, **kwargs)        # unmutated: right
    mutated = _gemm_source_with(
        "As[a_i][m] = (gm < kg && gi < CRS) ? Traits<T>::load(Ag[gm * CRS + gi]) : "
        "Traits<T>::zero();",
        "if (gm < kg && gi < CRS) As[a_i][m] = Traits<T>::load(Ag[gm * CRS + gi]);")
    with emulator.replaced_source("gemm.cu", mutated):
        _, out = emulate("conv2d", x, w, b, "im2col", ("forward", 0), **kwargs)
    assert np.isnan(out).any()


def _asan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tests._emulator_asan", *args],
                          capture_output=True, text=True, env=emulator.asan_environment(),
                          timeout=600)


def test_asan_subset_passes():
    proc = _asan("grid")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "cases passed under AddressSanitizer" in proc.stdout


def test_an_out_of_bounds_tile_load_is_caught_by_asan():
    # The B tile's bounds check removed: the last, partial reduction step reads rows past the
    # column buffer's end. They meet the A tile's zeros, so the outputs are usually right and
    # poisoning cannot be relied on to see it; AddressSanitizer does.
    proc = _asan("oob-tile-load")
    assert proc.returncode == 86, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "AddressSanitizer: heap-buffer-overflow" in proc.stderr


def test_an_out_of_bounds_shared_memory_store_is_caught_by_asan():
    proc = _asan("oob-shared")
    assert proc.returncode == 86, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "AddressSanitizer: heap-buffer-overflow" in proc.stderr
