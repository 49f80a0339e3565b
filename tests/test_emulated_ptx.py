"""The tensor-core and async-copy PTX of kernels/cuda/tensor_core.cuh on the CPU emulator
(conv/emulator/cuda_emulator.h), each instruction against a NumPy model of the PTX ISA's
definition: mma.sync m16n8k8 (TF32) and m16n8k16 (f16, bf16) with fragments loaded per the ISA's
layouts, against a float64 matmul; ldmatrix x1/x2/x4 with and without .trans against the ISA's
lane mapping; cp.async (data only after the wait, the poison before it, zero fill, wait_group 1
leaving the newest group in flight, the alignment and bounds the hardware requires, and under
AddressSanitizer an out-of-bounds source caught when the copy completes); cvt.rna.tf32 against a
bit-free float64 model; the loader's rewrite of the wrappers' asm; and NVRTC compiling the very
same kernels for sm_80 and sm_90. Each test runs its threads in a schedule drawn from its id.

KERNELS is also what tests/test_gpu_ptx.py runs on a GPU, element by element against the emulator:
keep the two in step through the `run_*` helpers below (each takes a launcher, emulated or CuPy).
Outputs are poisoned (NaN, or 0xDEADBEEF for bit patterns) before every launch.
"""
from __future__ import annotations

import pathlib
import subprocess
import sys
import zlib

import numpy as np
import pytest

from conv import _nvrtc, emulator
from conv.backend.cupy.sources import BASE_OPTIONS, kernel_source
from tests._helpers import RTOL, _report

_OK, _WHY = emulator.availability()

SENTINEL = np.uint32(0xDEADBEEF)

# One warp per 16 x 8 output tile; several warps per block take consecutive tiles, so a test with
# two warps also checks that warps do not see each other's fragments.
KERNELS = r'''
#include "tensor_core.cuh"

// One thread per (warp w, lane): lane = threadIdx.x % 32 (range [0, 32)), w = threadIdx.x / 32
// the tile. g = lane / 4 (groupID), t = lane % 4 (threadID_in_group), as in the PTX ISA.

// D[w] = A[w] B[w] + C[w]: A 16x8 and B 8x8 (k, n) row-major float32 bit patterns, C/D 16x8.
// swap != 0 exchanges a[1] and a[2] (a wrong layout that must change the result).
extern "C" __global__ void mma_tf32(const unsigned *A, const unsigned *B, const float *C,
                                    float *D, long long swap) {
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, t = lane % 4;
    const unsigned *a_tile = A + w * 128, *b_tile = B + w * 64;
    unsigned a[4] = {a_tile[g * 8 + t], a_tile[(g + 8) * 8 + t], a_tile[g * 8 + t + 4],
                     a_tile[(g + 8) * 8 + t + 4]};
    unsigned b[2] = {b_tile[t * 8 + g], b_tile[(t + 4) * 8 + g]};
    if (swap) {
        const unsigned keep = a[1];
        a[1] = a[2];
        a[2] = keep;
    }
    const float *c_tile = C + w * 128;
    float c[4] = {c_tile[g * 8 + 2 * t], c_tile[g * 8 + 2 * t + 1], c_tile[(g + 8) * 8 + 2 * t],
                  c_tile[(g + 8) * 8 + 2 * t + 1]}, d[4];
    conv_mma_m16n8k8_tf32(d, a, b, c);
    float *d_tile = D + w * 128;
    d_tile[g * 8 + 2 * t] = d[0];
    d_tile[g * 8 + 2 * t + 1] = d[1];
    d_tile[(g + 8) * 8 + 2 * t] = d[2];
    d_tile[(g + 8) * 8 + 2 * t + 1] = d[3];
}

// Two 16-bit elements of row-major M (width cols) as one register, (r, c) in bits 0-15.
__device__ unsigned pack_row(const unsigned short *M, int cols, int r, int c) {
    return (unsigned)M[r * cols + c] | ((unsigned)M[r * cols + c + 1] << 16);
}

// (r, c) and (r + 1, c) of row-major M as one register, (r, c) in bits 0-15.
__device__ unsigned pack_col(const unsigned short *M, int cols, int r, int c) {
    return (unsigned)M[r * cols + c] | ((unsigned)M[(r + 1) * cols + c] << 16);
}

// D[w] = A[w] B[w] + C[w] with A 16x16 and B 16x8 (k, n) row-major f16 (bf16 != 0: bf16) bits.
extern "C" __global__ void mma_half(const unsigned short *A, const unsigned short *B,
                                    const float *C, float *D, long long bf16, long long swap) {
    const int lane = threadIdx.x % 32, w = threadIdx.x / 32, g = lane / 4, t = lane % 4;
    const unsigned short *a_tile = A + w * 256, *b_tile = B + w * 128;
    unsigned a[4] = {pack_row(a_tile, 16, g, 2 * t), pack_row(a_tile, 16, g + 8, 2 * t),
                     pack_row(a_tile, 16, g, 2 * t + 8), pack_row(a_tile, 16, g + 8, 2 * t + 8)};
    unsigned b[2] = {pack_col(b_tile, 8, 2 * t, g), pack_col(b_tile, 8, 2 * t + 8, g)};
    if (swap) {
        const unsigned keep = a[1];
        a[1] = a[2];
        a[2] = keep;
    }
    const float *c_tile = C + w * 128;
    float c[4] = {c_tile[g * 8 + 2 * t], c_tile[g * 8 + 2 * t + 1], c_tile[(g + 8) * 8 + 2 * t],
                  c_tile[(g + 8) * 8 + 2 * t + 1]}, d[4];
    if (bf16)
        conv_mma_m16n8k16_bf16(d, a, b, c);
    else
        conv_mma_m16n8k16_f16(d, a, b, c);
    float *d_tile = D + w * 128;
    d_tile[g * 8 + 2 * t] = d[0];
    d_tile[g * 8 + 2 * t + 1] = d[1];
    d_tile[(g + 8) * 8 + 2 * t] = d[2];
    d_tile[(g + 8) * 8 + 2 * t + 1] = d[3];
}

// ldmatrix of the 4 8x8 matrices M[i][r][c] (16-bit): row r of matrix i is staged at shared row
// (8i + r) * 5 % 32, so consecutive rows are not contiguous; lane l passes the address of row
// l % 8 of matrix l / 8. variant: 0-2 x1/x2/x4, 3-5 the same .trans. out[l * 4 + i]: d[i].
extern "C" __global__ void ldmatrix_probe(const unsigned short *M, unsigned *out,
                                          long long variant) {
    __shared__ __align__(16) unsigned short rows[32][8];
    const int lane = threadIdx.x;
    for (int c = 0; c < 8; ++c) rows[(lane * 5) % 32][c] = M[lane * 8 + c];
    __syncwarp();
    const conv_smem_addr_t row = conv_smem_address(&rows[(lane * 5) % 32][0]);
    unsigned d[4] = {0xDEADBEEFu, 0xDEADBEEFu, 0xDEADBEEFu, 0xDEADBEEFu};
    int count = 4;
    switch (variant) {
    case 0: { unsigned r[1]; conv_ldmatrix_x1(r, row); d[0] = r[0]; count = 1; break; }
    case 1: { unsigned r[2]; conv_ldmatrix_x2(r, row); d[0] = r[0]; d[1] = r[1]; count = 2; break; }
    case 2: conv_ldmatrix_x4(d, row); break;
    case 3: { unsigned r[1]; conv_ldmatrix_x1_trans(r, row); d[0] = r[0]; count = 1; break; }
    case 4: { unsigned r[2]; conv_ldmatrix_x2_trans(r, row); d[0] = r[0]; d[1] = r[1];
              count = 2; break; }
    default: conv_ldmatrix_x4_trans(d, row); break;
    }
    for (int i = 0; i < count; ++i) out[lane * 4 + i] = d[i];
}

// Faults the emulator refuses. how: 0 a row address 2 bytes off 16-byte alignment, 1 a global
// address, 2 lane 0 returns before the collective, 3 the collective in a 16-thread block.
extern "C" __global__ void ldmatrix_fault(const unsigned short *M, unsigned *out, long long how) {
    __shared__ __align__(16) unsigned short rows[32][8];
    const int lane = threadIdx.x;
    for (int c = 0; c < 8; ++c) rows[lane][c] = M[c];
    __syncthreads();
    conv_smem_addr_t row = conv_smem_address(&rows[lane][0]);
    if (how == 0) row = conv_smem_address(&rows[lane][1]);
    if (how == 1) row = (conv_smem_addr_t)(unsigned long long)M;
    if (how == 2 && lane == 0) return;
    unsigned d[1];
    conv_ldmatrix_x1(d, row);
    out[lane] = d[0];
}

// cp.async, 16 floats per thread through shared memory (thread i owns stage[i][*]):
//   group 0: stage[i][0..3] <- src[i*16 + 0..3] (16 bytes, .cg), [4..7] (2 x 8 bytes, .ca)
//   group 1: stage[i][8..11] <- src[i*16 + 8..11] (4 x 4 bytes, .ca)
//   zero fill: stage[i][12..15] <- the first zfill[i] bytes of src[i*16 + 12..15] (.cg, 16);
//   where zfill[i] == 0 the source address is `nothing` (the emulated test passes 16, an unmapped
//   address: src-size 0 must not read it; the GPU test passes a valid one).
// out[i*16 + k] is read: before[...] right after the commits, mid[...] after wait_group 1,
// final[...] after wait_all; neighbour[...]: thread (i+1)'s stage after wait_all + __syncthreads;
// unwaited[...]: the neighbour's stage when no thread waited, after a __syncthreads.
extern "C" __global__ void cp_async_probe(const float *src, const int *zfill,
                                          const float *nothing, float *before, float *mid,
                                          float *final_, float *neighbour, float *unwaited) {
    __shared__ __align__(16) float stage[32][16];
    __shared__ __align__(16) float spare[32][4];
    const int i = threadIdx.x, next = (i + 1) % blockDim.x;
    const float *s = src + i * 16;
    // The emulator's poison written by the kernel too, so that a GPU shows it as well.
    for (int k = 0; k < 16; ++k) stage[i][k] = __uint_as_float(0xFFFFFFFFu);
    for (int k = 0; k < 4; ++k) spare[i][k] = __uint_as_float(0xFFFFFFFFu);
    conv_cp_async_cg(conv_smem_address(&stage[i][0]), s);
    conv_cp_async_ca<8>(conv_smem_address(&stage[i][4]), s + 4);
    conv_cp_async_ca<8>(conv_smem_address(&stage[i][6]), s + 6);
    conv_cp_async_commit();
    for (int k = 0; k < 4; ++k) conv_cp_async_ca<4>(conv_smem_address(&stage[i][8 + k]), s + 8 + k);
    const float *z = zfill[i] ? s + 12 : nothing;
    conv_cp_async_cg_zfill(conv_smem_address(&stage[i][12]), z, zfill[i]);
    conv_cp_async_commit();
    for (int k = 0; k < 16; ++k) before[i * 16 + k] = stage[i][k];
    conv_cp_async_wait<1>();
    for (int k = 0; k < 16; ++k) mid[i * 16 + k] = stage[i][k];
    conv_cp_async_wait_all();
    for (int k = 0; k < 16; ++k) final_[i * 16 + k] = stage[i][k];
    __syncthreads();
    for (int k = 0; k < 16; ++k) neighbour[i * 16 + k] = stage[next][k];
    // A kernel that forgets to wait: the copy is still in flight at the barrier.
    conv_cp_async_ca_zfill<16>(conv_smem_address(&spare[i][0]), s, 16);
    conv_cp_async_commit();
    __syncthreads();
    for (int k = 0; k < 4; ++k) unwaited[i * 4 + k] = spare[next][k];
    // No thread returns before every thread has read: a thread's pending copies complete when
    // it returns (cuda_emulator.h), which would land them under a slower neighbour's read.
    __syncthreads();
}

// Refusals. how: 0 dst 4 bytes off 8-byte alignment, 1 src off alignment, 2 src-size > cp-size,
// 3 dst in global memory.
extern "C" __global__ void cp_async_fault(const float *src, float *out, long long how) {
    __shared__ __align__(16) float stage[8];
    if (how == 0) conv_cp_async_ca<8>(conv_smem_address(&stage[1]), src);
    if (how == 1) conv_cp_async_ca<8>(conv_smem_address(&stage[0]), src + 1);
    if (how == 2) conv_cp_async_ca_zfill<8>(conv_smem_address(&stage[0]), src, 12);
    if (how == 3) conv_cp_async_ca<4>((conv_smem_addr_t)(unsigned long long)out, src);
    conv_cp_async_wait_all();
    out[0] = stage[0];
}

// cvt.rna.tf32.f32 and the 3xTF32 split of x[i]: rounded[i], big[i], small[i] (bit patterns).
extern "C" __global__ void cvt_tf32(const float *x, unsigned *rounded, unsigned *big,
                                    unsigned *small, long long n) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;   // range [0, n)
    if (i >= n) return;
    rounded[i] = conv_cvt_rna_tf32(x[i]);
    conv_tf32_split(x[i], big[i], small[i]);
}
'''

ENTRY_POINTS = ("mma_tf32", "mma_half", "ldmatrix_probe", "ldmatrix_fault", "cp_async_probe",
                "cp_async_fault", "cvt_tf32")
LDMATRIX_VARIANTS = [(count, trans) for trans in (False, True) for count in (1, 2, 4)]


# --- NumPy models of the data (shared with tests/test_gpu_ptx.py) -----------------------------

def tf32_truncate(bits: np.ndarray) -> np.ndarray:
    """The float32 value the tensor cores read from a .b32 TF32 operand: its top 19 bits."""
    return (bits.astype(np.uint32) & np.uint32(0xFFFFE000)).view(np.float32)


def bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns, rounded to nearest even (no ml_dtypes needed); finite
    inputs only."""
    u = values.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = u + 0x7FFF + ((u >> 16) & 1)
    return (rounded >> 16).astype(np.uint16)


def bfloat16_values(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def mma_operands(kind: str, warps: int, rng: np.random.Generator, integers: bool = False):
    """Per-warp A, B (bit patterns as the kernels take them), C, and the float64 A and B values
    they stand for. integers: small integers, so every partial sum is exact whatever the order
    (the hardware's summation order is unspecified)."""
    k = 8 if kind == "tf32" else 16
    shape_a, shape_b, shape_c = (warps, 16, k), (warps, k, 8), (warps, 16, 8)
    draw = (lambda s: rng.integers(-8, 9, s).astype(np.float32)) if integers else \
        (lambda s: rng.standard_normal(s).astype(np.float32))
    a, b, c = draw(shape_a), draw(shape_b), draw(shape_c)
    if kind == "tf32":
        # Random low 13 bits the hardware must ignore (integers are TF32 already: keep them).
        noise = (lambda s: np.zeros(s, np.uint32)) if integers else \
            (lambda s: rng.integers(0, 1 << 13, s, dtype=np.uint32))
        a_bits = (a.view(np.uint32) & np.uint32(0xFFFFE000)) | noise(shape_a)
        b_bits = (b.view(np.uint32) & np.uint32(0xFFFFE000)) | noise(shape_b)
        return a_bits, b_bits, c, tf32_truncate(a_bits), tf32_truncate(b_bits)
    if kind == "f16":
        a16, b16 = a.astype(np.float16), b.astype(np.float16)
        return a16.view(np.uint16), b16.view(np.uint16), c, a16.astype(np.float32), \
            b16.astype(np.float32)
    a_bits, b_bits = bfloat16_bits(a), bfloat16_bits(b)
    return a_bits, b_bits, c, bfloat16_values(a_bits), bfloat16_values(b_bits)


def ldmatrix_expected(m: np.ndarray, count: int, trans: bool) -> np.ndarray:
    """out[lane][i] per the PTX ISA: row lane/4, elements 2(lane%4), +1 of matrix i (of its
    transpose with .trans), the lower-numbered in bits 0-15; SENTINEL past `count`."""
    out = np.full((32, 4), SENTINEL, np.uint32)
    for lane in range(32):
        g, t = lane // 4, lane % 4
        for i in range(count):
            mat = m[i].T if trans else m[i]
            out[lane, i] = np.uint32(mat[g, 2 * t]) | (np.uint32(mat[g, 2 * t + 1]) << 16)
    return out


def tf32_rna_model(x: np.ndarray) -> np.ndarray:
    """cvt.rna.tf32.f32 without bit tricks: x rounded in float64 to a multiple of its TF32 unit
    in the last place (2^(e - 10), e = max(exponent, -126)), ties away from zero; +-inf past the
    largest finite float32 (round to nearest overflows); NaN stays NaN."""
    with np.errstate(invalid="ignore"):          # signalling NaNs quieten on the cast
        x64 = x.astype(np.float64)
    out = np.full(x64.shape, np.nan)
    finite = np.isfinite(x64)
    mag = np.abs(x64[finite])
    e = np.floor(np.log2(np.where(mag > 0, mag, 1.0)))
    ulp = np.exp2(np.maximum(e, -126) - 10)
    rounded = np.copysign(np.floor(mag / ulp + 0.5) * ulp, x64[finite])
    with np.errstate(over="ignore"):
        out[finite] = np.where(np.abs(rounded) >= 2.0 ** 128, np.copysign(np.inf, rounded),
                               rounded)
    out[np.isinf(x64)] = x64[np.isinf(x64)]
    return out


# --- runs: a launcher is launch(entry, grid, block, args), arrays NumPy (or CuPy) --------------

def run_mma(launch, kind: str, a_bits, b_bits, c, swap: bool = False, xp=np) -> np.ndarray:
    warps = c.shape[0]
    d = xp.full(c.shape, np.nan, np.float32)
    if kind == "tf32":
        launch("mma_tf32", (1, 1, 1), (32 * warps, 1, 1),
               (xp.asarray(a_bits), xp.asarray(b_bits), xp.asarray(c), d, int(swap)))
    else:
        launch("mma_half", (1, 1, 1), (32 * warps, 1, 1),
               (xp.asarray(a_bits), xp.asarray(b_bits), xp.asarray(c), d, int(kind == "bf16"),
                int(swap)))
    return d


def run_ldmatrix(launch, m: np.ndarray, count: int, trans: bool, xp=np) -> np.ndarray:
    out = xp.full((32, 4), SENTINEL, np.uint32)
    variant = {1: 0, 2: 1, 4: 2}[count] + (3 if trans else 0)
    launch("ldmatrix_probe", (1, 1, 1), (32, 1, 1), (xp.asarray(m), out, variant))
    return out


def run_cp_async(launch, src: np.ndarray, zfill: np.ndarray, nothing=16, xp=np) -> dict:
    """The cp_async_probe outputs by name; `nothing`: the source of the src-size 0 copies."""
    outs = {name: xp.full(src.size if name != "unwaited" else src.size // 4, np.nan, np.float32)
            for name in ("before", "mid", "final", "neighbour", "unwaited")}
    launch("cp_async_probe", (1, 1, 1), (32, 1, 1),
           (xp.asarray(src), xp.asarray(zfill), nothing, *outs.values()))
    return outs


def run_cvt(launch, x: np.ndarray, xp=np) -> tuple:
    outs = tuple(xp.full(x.size, SENTINEL, np.uint32) for _ in range(3))
    launch("cvt_tf32", (-(-x.size // 256), 1, 1), (256, 1, 1), (xp.asarray(x), *outs, x.size))
    return outs


def cp_async_inputs(rng) -> tuple[np.ndarray, np.ndarray]:
    src = rng.standard_normal(32 * 16).astype(np.float32)
    zfill = np.array([0, 4, 8, 12, 16] * 6 + [0, 16], np.int32)     # bytes per thread
    return src, zfill


# --- the emulated module ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def module():
    if not _OK:
        pytest.skip(f"CPU emulator not usable: {_WHY}")
    return emulator.source_module(KERNELS, BASE_OPTIONS, name="test_ptx.cu")


@pytest.fixture
def launch(module, request):
    """The emulated launcher of this test: threads in a schedule (forward, reverse or shuffled)
    and seed drawn from a stable hash of the test's id, as tests/test_emulated_cupy.py does."""
    h = zlib.crc32(request.node.nodeid.encode())
    schedule = tuple(emulator.SCHEDULES)[h % 3]

    def run(entry, grid, block, args):
        module.launch(entry, grid, block, args, schedule, h)
    return run


def assert_close(out, ref, reduction: int, where: str):
    """RTOL[float32] * sqrt(reduction) * max|ref|, the tolerance of tests/_helpers.py."""
    tol = RTOL[np.dtype(np.float32)] * np.sqrt(reduction) * max(float(np.abs(ref).max()), 1e-30)
    bad = ~(np.abs(out.astype(np.float64) - ref) <= tol)       # NaN (unwritten) is bad
    if bad.any():
        _report(where, out, ref, bad, tol)


def mma_reference(a, b, c) -> np.ndarray:
    return np.einsum("wmk,wkn->wmn", a.astype(np.float64), b.astype(np.float64)) + c


# --- mma.sync ---------------------------------------------------------------------------------

@pytest.mark.emulated
@pytest.mark.parametrize("kind", ["tf32", "f16", "bf16"])
def test_mma_matches_a_float64_matmul(launch, kind, rng):
    a_bits, b_bits, c, a, b = mma_operands(kind, warps=2, rng=rng)
    d = run_mma(launch, kind, a_bits, b_bits, c)
    assert_close(d, mma_reference(a, b, c), a.shape[-1], f"mma {kind}")


@pytest.mark.emulated
@pytest.mark.parametrize("kind", ["tf32", "f16", "bf16"])
def test_mma_with_a_wrong_fragment_layout_fails(launch, kind, rng):
    a_bits, b_bits, c, a, b = mma_operands(kind, warps=1, rng=rng)
    d = run_mma(launch, kind, a_bits, b_bits, c, swap=True)
    with pytest.raises(AssertionError, match="elements wrong"):
        assert_close(d, mma_reference(a, b, c), a.shape[-1], f"mma {kind}, a[1] <-> a[2]")


@pytest.mark.emulated
def test_mma_tf32_reads_only_the_top_19_bits(launch, rng):
    a_bits, b_bits, c, _, _ = mma_operands("tf32", warps=1, rng=rng)
    assert (a_bits & 0x1FFF).any()                  # the data does carry low bits to ignore
    np.testing.assert_array_equal(
        run_mma(launch, "tf32", a_bits, b_bits, c),
        run_mma(launch, "tf32", a_bits & np.uint32(0xFFFFE000), b_bits & np.uint32(0xFFFFE000), c))


# --- ldmatrix ---------------------------------------------------------------------------------

@pytest.mark.emulated
@pytest.mark.parametrize("count, trans", LDMATRIX_VARIANTS,
                         ids=[f"x{c}{'-trans' if t else ''}" for c, t in LDMATRIX_VARIANTS])
def test_ldmatrix_follows_the_isa_mapping(launch, count, trans, rng):
    m = rng.integers(0, 1 << 16, (4, 8, 8), dtype=np.uint16)
    out = run_ldmatrix(launch, m, count, trans)
    np.testing.assert_array_equal(out, ldmatrix_expected(m, count, trans))


@pytest.mark.emulated
@pytest.mark.parametrize("how, block, message", [
    (0, 32, "16-byte aligned"), (1, 32, "not inside a __shared__ array"),
    (2, 32, "not every lane of the warp"), (3, 16, "needs all 32 lanes")],
    ids=["misaligned-row", "global-address", "a-lane-returned", "partial-warp"])
def test_ldmatrix_faults_are_refused(module, how, block, message):
    m = np.arange(8, dtype=np.uint16)
    out = np.zeros(32, np.uint32)
    with pytest.raises(emulator.EmulatorError, match=message):
        module.launch("ldmatrix_fault", (1, 1, 1), (block, 1, 1), (m, out, how))


# --- cp.async ---------------------------------------------------------------------------------

@pytest.mark.emulated
def test_cp_async_data_lands_at_the_wait_and_not_before(launch, rng):
    src, zfill = cp_async_inputs(rng)
    o = {k: v.reshape(32, -1) for k, v in run_cp_async(launch, src, zfill).items()}
    s = src.reshape(32, 16)
    # Before any wait: every destination still holds the block's poison.
    assert np.isnan(o["before"]).all()
    # wait_group 1: group 0 (elements 0-7) complete, group 1 (8-15, the newest) still in flight.
    np.testing.assert_array_equal(o["mid"][:, :8], s[:, :8])
    assert np.isnan(o["mid"][:, 8:]).all()
    # wait_all: everything, the zero fill included (src-size bytes copied, the rest zero).
    expected = s.copy()
    for i, nbytes in enumerate(zfill):
        expected[i, 12 + nbytes // 4:] = 0.0
    np.testing.assert_array_equal(o["final"], expected)
    # Another thread sees the copies after the waiting thread's __syncthreads.
    np.testing.assert_array_equal(o["neighbour"], np.roll(expected, -1, axis=0))
    # A kernel that forgets the wait reads the poison after the barrier: the copy is in flight.
    assert np.isnan(o["unwaited"]).all()


@pytest.mark.emulated
@pytest.mark.parametrize("how, message", [
    (0, "not aligned to cp-size 8"), (1, "not aligned to cp-size 8"),
    (2, "src-size 12 outside"), (3, "dst is not inside a __shared__ array")],
    ids=["dst-misaligned", "src-misaligned", "src-size-past-cp-size", "dst-in-global"])
def test_cp_async_faults_are_refused(module, how, message):
    src = np.ones(8, np.float32)
    out = np.zeros(8, np.float32)
    with pytest.raises(emulator.EmulatorError, match=message):
        module.launch("cp_async_fault", (1, 1, 1), (1, 1, 1), (src, out, how))


# Run in a child process that preloads AddressSanitizer (emulator.asan_environment): the valid
# copies and ldmatrix loads run clean (the src-size 0 copies from an unmapped address included),
# then a source array too short for the copies is caught when the wait completes them.
_ASAN_CHILD = """
import numpy as np
import tests.test_emulated_ptx as t
from conv import emulator
m = emulator.source_module(t.KERNELS, t.BASE_OPTIONS, name="test_ptx.cu", asan=True)
launch = lambda e, g, b, a: m.launch(e, g, b, a, "shuffled", 2)
rng = np.random.default_rng(0)
src, zfill = t.cp_async_inputs(rng)
out = t.run_cp_async(launch, src, zfill)
assert (out["final"] == out["final"]).sum() == src.size
matrices = rng.integers(0, 1 << 16, (4, 8, 8), dtype=np.uint16)
np.testing.assert_array_equal(t.run_ldmatrix(launch, matrices, 4, True),
                              t.ldmatrix_expected(matrices, 4, True))
print("valid kernels clean", flush=True)
short = src[:31 * 16 + 4].copy()       # thread 31's copies read past its end
outs = [np.full(src.size, np.nan, np.float32) for _ in range(4)]
launch("cp_async_probe", (1, 1, 1), (32, 1, 1),
       (short, zfill, 16, *outs, np.full(src.size // 4, np.nan, np.float32)))
print("out-of-bounds source not caught", flush=True)
"""


@pytest.mark.emulated
def test_an_out_of_bounds_cp_async_source_is_caught_by_asan(module):
    proc = subprocess.run([sys.executable, "-c", _ASAN_CHILD], capture_output=True, text=True,
                          env=emulator.asan_environment(), timeout=300, check=False,
                          cwd=pathlib.Path(__file__).resolve().parents[1])
    assert "valid kernels clean" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "not caught" not in proc.stdout
    assert proc.returncode == 86 and "heap-buffer-overflow" in proc.stderr, proc.stderr[-3000:]
    # The read of the copy (at its completion), not some other access.
    assert "READ of size" in proc.stderr and "complete_cop" in proc.stderr, proc.stderr[-3000:]


# --- cvt.rna.tf32.f32 and the 3xTF32 split ----------------------------------------------------

def cvt_inputs(rng) -> np.ndarray:
    random_bits = rng.integers(0, 1 << 32, 1 << 16, dtype=np.uint64).astype(np.uint32)
    tf32_grid = rng.integers(0, 1 << 19, 1 << 12, dtype=np.uint64).astype(np.uint32) << 13
    specials = np.array([0x3F801000, 0xBF801000,        # 1 + 2^-11, its negative: ties, away
                         0x3F800FFF, 0x3F803000,        # below a tie; a tie above an odd unit
                         0x7F7FFFFF, 0xFF7FFFFF,        # the largest floats: round to +-inf
                         0x7F7FEFFF,                    # just below that: the largest TF32
                         0x7F800000, 0xFF800000,        # +-inf
                         0x7FC00000, 0x7F800001, 0xFFFFFFFF,   # NaNs, one payload in low bits
                         0x00000000, 0x80000000, 0x00001000, 0x00000FFF,   # zeros, subnormals
                         0x007FF000], np.uint32)        # the largest subnormal tie: rounds up
    return np.concatenate([random_bits, tf32_grid | np.uint32(0x1000), tf32_grid,
                           specials]).view(np.float32)


@pytest.mark.emulated
def test_cvt_rna_tf32_rounds_to_nearest_ties_away(launch, rng):
    x = cvt_inputs(rng)
    rounded, _, _ = run_cvt(launch, x)
    assert not (rounded & np.uint32(0x1FFF))[~np.isnan(x)].any()   # a TF32 pattern
    got = rounded.view(np.float32).astype(np.float64)
    expected = tf32_rna_model(x)
    nan = np.isnan(expected)
    assert np.array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got[~nan], expected[~nan])
    np.testing.assert_array_equal(np.signbit(got[~nan]), np.signbit(expected[~nan]))


@pytest.mark.emulated
def test_tf32_split_recovers_float32_accuracy(launch, rng):
    x = (rng.standard_normal(4096) * np.exp2(rng.integers(-60, 60, 4096))).astype(np.float32)
    _, big, small = run_cvt(launch, x)
    assert not ((big | small) & np.uint32(0x1FFF)).any()
    total = big.view(np.float32).astype(np.float64) + small.view(np.float32).astype(np.float64)
    err = np.abs(total - x.astype(np.float64)) / np.abs(x.astype(np.float64))
    assert err.max() <= 2.0 ** -21, err.max()                  # TF32 alone: up to 2^-11
    assert (small != 0).any()                                  # the low part does something


# --- the loader's rewrite of the wrappers -----------------------------------------------------

def test_loader_maps_vectors_addresses_and_immediates():
    text = ('asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "\n'
            '    "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\\n"\n'
            '    : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3]) : "r"(a[0]), "r"(a[1]), '
            '"r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), '
            '"f"(c[3]));\n'
            'asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;\\n" :: "r"(dst), '
            '"l"(f(src)), "r"(n) : "memory");\n'
            'asm volatile("cp.async.commit_group;\\n" ::: "memory");\n'
            '__shared__ __align__(16) unsigned short tile[16][8];\n')
    out = emulator.translate(text)
    assert ("conv_emu_ptx_mma_m16n8k8_tf32(d[0], d[1], d[2], d[3], a[0], a[1], a[2], a[3], "
            "b[0], b[1], c[0], c[1], c[2], c[3]);") in out
    assert "conv_emu_ptx_cp_async_ca(dst, f(src), 16, n);" in out
    assert "conv_emu_ptx_cp_async_commit_group();" in out
    assert "CONV_EMU_SHARED_ALIGNED(unsigned short, tile, [16][8], 16);" in out


@pytest.mark.parametrize("text, message", [
    ('asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(t) : "f"(x), "f"(y));', r"operand\(s\) \[2\] unused"),
    ('asm("cp.async.ca.shared.global [%0+16], [%1], 16;" :: "r"(d), "l"(s));', "cannot map"),
    ('asm("cp.async.commit_group; cp.async.wait_all;");', "one instruction per asm"),
], ids=["unused-operand", "address-offset", "two-instructions"])
def test_loader_refuses_what_it_cannot_map(text, message):
    with pytest.raises(emulator.EmulatorError, match=message):
        emulator.translate(text)


# --- NVRTC: the same kernels compile for the GPUs ---------------------------------------------

_NVRTC_OK, _NVRTC_WHY = _nvrtc.nvrtc_availability()


@pytest.mark.skipif(not _NVRTC_OK, reason=f"NVRTC not usable: {_NVRTC_WHY}")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_kernels_compile_with_nvrtc(arch):
    result = _nvrtc.compile_source(kernel_source("test_ptx.cu", KERNELS), arch,
                                   BASE_OPTIONS + _nvrtc.CUPY_IMPLICIT_OPTIONS, name="test_ptx.cu")
    assert result.ok, result.log
    assert result.cubin_size > 0
    assert set(ENTRY_POINTS) <= set(result.functions), result.log
