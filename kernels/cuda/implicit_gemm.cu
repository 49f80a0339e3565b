// implicit_gemm.cu: convolution as an implicit GEMM on tensor cores, one matrix product per group
// g (grid z), with no im2col workspace:
//   out[n, g*kg + m, p, q] = bias[g*kg + m] + sum over i in [0, CRS) of W[g*kg + m, i] * X_g[i, j]
// where j = (n*P + p)*Q + q and i = (c*R + r)*S + s. X_g[i, j] is never stored: each tile of it
// is gathered from x on its way into shared memory.
//
// Names: m output channel within the group [0, kg); j column (n, p, q) [0, M = N*P*Q); i reduction
// index (c, r, s) within the group [0, CRS = cg*R*S); n image, c input channel of the group
// [0, cg), h/w input row/column, p/q output row/column, r/s taps.
//   wmat: the weights, contiguous (K, CRS) row-major (the backend's Operands.wmat).
//   x:    element (n, c, h, w) at x + n*xs_n + c*xs_c + h*xs_h + w*xs_w: any layout, channels_last
//         and strided views included; conv1d is height 1 (H = P = R = 1, xs_h = 0).
//         X_g[i, j] = x[n, g*cg + c, conv_src_index(p*stride_h - pad_top + r*dil_h, H, mode),
//                                    conv_src_index(q*stride_w - pad_left + s*dil_w, W, mode)],
//         zero where conv_src_index says -1 (zero padding): common.cuh, all four padding modes.
//   out:  element (m, j) at out + (j / PQ)*o_n + (g*kg + m)*o_k + j % PQ, the contract of gemm.cu
//         (for the contiguous (N, K, P, Q) output o_n = K*P*Q, o_k = P*Q = PQ).
//
// Who computes what (one version, three precisions; tile shapes from -D options):
//   block (blockIdx.x, blockIdx.y, blockIdx.z) -> the BM x BN output tile of rows
//       m0 = blockIdx.y*BM [0, kg) and columns j0 = blockIdx.x*BN [0, M) of group
//       g0 + blockIdx.z / splits, over the k-tiles of split blockIdx.z % splits (splits = 1: all
//       of them; the launch's tile configuration "<tile>/k<splits>" names the split-K ones).
//       NT = 32*WARPS_M*WARPS_N threads.
//   warp w = threadIdx.x / 32 -> the (BM/WARPS_M) x (BN/WARPS_N) sub-tile at rows
//       (w % WARPS_M)*BM/WARPS_M and columns (w / WARPS_M)*BN/WARPS_N of the block tile, as
//       MI x NI mma tiles of 16 x 8 (MI = BM/WARPS_M/16, NI = BN/WARPS_N/8).
//   lane -> its fragment elements of each mma tile (kernels/cuda/tensor_core.cuh: gid = lane/4,
//       tig = lane%4): accumulators c[0..3] = rows gid, gid, gid+8, gid+8, columns 2tig, 2tig+1,
//       2tig, 2tig+1 of the 16 x 8 tile, fp32 in registers (4*MI*NI per thread); the epilogue
//       adds the bias, casts to the storage type and stores exactly those elements (masked at
//       partial tiles: rows m >= kg, columns j >= M).
//   loads: per k-tile of BK reduction steps, thread tid fills A elements (m = tid/BK + l*NT/BK,
//       i = tid%BK) and B elements (i = tid/BN + l*NT/BN, j = tid%BN): consecutive threads take
//       consecutive i of a weight row and consecutive j (coalesced for a unit-stride q axis;
//       channels_last inputs are correct but not coalesced yet). A thread's column (n, p, q) and
//       its input row/column origins are computed once; per element only (c, r, s) is decoded.
//
// Shared memory per stage (STAGES buffers): A tile As[BM][BK + A_PAD] (m rows, i contiguous) and
// B tile Bs[BK][BN + B_PAD] (i rows, j contiguous). The pads make every fragment read
// bank-conflict free (32 banks of 4 bytes):
//   float32 (TF32 fragments read one float per lane): A_PAD = 4. Lane (gid, tig) reads
//       As[gid][tig] (+8 rows, +4 columns): bank (gid*(BK + 4) + tig) % 32; (BK + 4)/4 is odd for
//       BK % 8 == 0, so gid*(BK + 4) % 32 takes 8 distinct multiples of 4 and the 32 lanes hit 32
//       banks. B_PAD = 8: lane reads Bs[tig][gid]: bank (tig*(BN + 8) + gid) % 32 = 8*tig + gid for
//       BN % 32 == 0: 32 distinct banks.
//   float16 (ldmatrix: 8 lanes' 16-byte rows per matrix, which must lie in 8 distinct 16-byte bank
//       groups of a 128-byte line): A_PAD = B_PAD = 8 halves (16 bytes): row strides of
//       2*(BK + 8) and 2*(BN + 8) bytes are odd multiples of 16 for BK, BN % 16 == 0, so 8
//       consecutive rows fall in 8 distinct groups; rows stay 16-byte aligned, as ldmatrix needs.
//
// Pipeline (STAGES = 2 or 3 buffers, one __syncthreads per k-tile):
//   float32: every element is one 4-byte cp.async.ca with zero fill (src-size 0 for padding taps,
//       rows m >= kg, columns j >= M and i >= CRS; the source is then the tensor's base, never
//       read). The prologue issues tiles 0 .. STAGES-2, one commit group each; k-tile kt waits
//       with cp.async.wait_group STAGES-2 (its own group complete), __syncthreads (everyone's
//       complete, and everyone is done computing tile kt-1), issues tile kt+STAGES-1 into the
//       buffer tile kt-1 used, commits (an empty group past the end keeps the count), computes.
//   float16: 2-byte elements are below cp.async's 4-byte minimum, and 4-byte pairs are aligned
//       and in range only for some layouts, so elements are staged through registers: after the
//       barrier of k-tile kt, a thread loads its elements of tile kt+STAGES-1 from global memory
//       into registers, computes tile kt (the loads are in flight meanwhile), then stores them
//       into the buffer tile kt-1 used (every thread passed the barrier, so nobody reads it).
//
// Precisions (entry points of the dtype's module):
//   implicit_gemm_tf32_float32:   operands rounded to TF32 (cvt.rna: 10-bit mantissa, 11
//       significant bits) in the fragment loads, one mma.m16n8k8 per 8 reduction steps; fp32
//       accumulation. Relative error per product up to ~2^-11 (4.9e-4) of its magnitude, as
//       cuDNN's / PyTorch's allow_tf32.
//   implicit_gemm_3xtf32_float32: each operand split into big = tf32(v) and small = tf32(v - big)
//       (tensor_core.cuh: conv_tf32_split), three mmas per tile: small*big and big*small first
//       (the small terms, accumulated before the large one so they are not lost below its last
//       bit), then big*big; small*small (~2^-22 relative) is dropped. Near fp32 accuracy.
//   implicit_gemm_f16_float16:    m16n8k16 on float16 operands (exact products), fragments from
//       shared memory by ldmatrix (.x4 for A from the m-major tile, .x2.trans for B from the
//       k-major one), fp32 accumulation, one rounding to float16 in the epilogue.
//   implicit_gemm_bf16_bfloat16:  the same on bfloat16 operands (m16n8k16 .bf16, exact products
//       in fp32), one rounding to bfloat16 in the epilogue (common.cuh: round to nearest even).
//
// Tile configurations (conv/backend/cupy/sources.py: IGEMM_TILE_CONFIGS, by name BMxBNxBK, each its
// own module built with -DCONV_IGEMM_BM/BN/BK/WARPS_M/WARPS_N/STAGES). ptxas (NVRTC 13.5, the
// options CuPy uses; tests/test_nvrtc_compile.py), registers sm_80 / sm_90, static shared memory,
// no spills and no stack in any of them:
//   "128x64x16": 4 warps (2 x 2 of 64 x 32), 3 stages: tf32 156 / 158, 3xtf32 177 / 197 registers,
//                44,544 B; f16 and bf16 146 / 144 registers, 25,344 B.
//   "64x64x16":  4 warps (2 x 2 of 32 x 32), 3 stages: tf32 122 / 122, 3xtf32 124 / 119 registers,
//                29,184 B; f16 and bf16 94 / 93 registers, 16,128 B.
//   The _splitk entry points of each ("<tile>/k2", "/k4"): 128x64x16 tf32 182 / 186, 3xtf32
//   199 / 215, f16 and bf16 156 / 153; 64x64x16 tf32 126 / 128, 3xtf32 155 / 144, f16 and bf16
//   116 / 112 registers.
// Occupancy by registers (65,536 per SM): 128x64x16 3xtf32 2 blocks (8 warps) per SM, tf32 3;
// 64x64x16 4. Nothing has been timed on a GPU.
// 64-bit index arithmetic throughout (offsets into x, wmat, out; columns j).
#include "common.cuh"
#include "tensor_core.cuh"

#if !defined(CONV_IGEMM_BM) || !defined(CONV_IGEMM_BN) || !defined(CONV_IGEMM_BK) || \
    !defined(CONV_IGEMM_WARPS_M) || !defined(CONV_IGEMM_WARPS_N) || !defined(CONV_IGEMM_STAGES)
#error "CONV_IGEMM_BM/BN/BK/WARPS_M/WARPS_N/STAGES come from the host (sources.py: IGEMM_TILE_CONFIGS)"
#endif
#define CONV_IGEMM_THREADS (32 * CONV_IGEMM_WARPS_M * CONV_IGEMM_WARPS_N)

#define CONV_IGEMM_PARAMS(T)                                                                     \
    const T *__restrict__ x, const T *__restrict__ wmat, const T *__restrict__ bias,             \
        T *__restrict__ out, long long kg, long long cg, long long M, long long CRS, long long H, \
        long long W, long long P, long long Q, long long R, long long S, long long xs_n,         \
        long long xs_c, long long xs_h, long long xs_w, long long stride_h, long long stride_w,  \
        long long dil_h, long long dil_w, long long pad_top, long long pad_left, long long mode, \
        long long o_n, long long o_k, long long bs, long long has_bias, long long g0,            \
        long long splits, float *__restrict__ part, long long part_stride

#define CONV_IGEMM_ARGS                                                                          \
    x, wmat, bias, out, kg, cg, M, CRS, H, W, P, Q, R, S, xs_n, xs_c, xs_h, xs_w, stride_h,     \
        stride_w, dil_h, dil_w, pad_top, pad_left, mode, o_n, o_k, bs, has_bias, g0, splits,    \
        part, part_stride

// The four precisions (template argument of the body); f16 and bf16 share the 16-bit path.
#define CONV_IGEMM_TF32 0
#define CONV_IGEMM_3XTF32 1
#define CONV_IGEMM_F16 2
#define CONV_IGEMM_BF16 3

// What a shared-memory tile holds per precision: float32 values (rounded to TF32 when a fragment
// is read) or float16 / bfloat16 bit patterns; the pads of the header.
template <int PRECISION>
struct IgemmSmem {
    typedef float Elem;
    static constexpr int A_PAD = 4, B_PAD = 8, K_STEP = 8;     // m16n8k8
};
struct IgemmSmem16 {
    typedef unsigned short Elem;
    static constexpr int A_PAD = 8, B_PAD = 8, K_STEP = 16;    // m16n8k16
};
template <>
struct IgemmSmem<CONV_IGEMM_F16> : IgemmSmem16 {};
template <>
struct IgemmSmem<CONV_IGEMM_BF16> : IgemmSmem16 {};

template <typename T, int PRECISION, int BM, int BN, int BK, int WARPS_M, int WARPS_N,
          int STAGES, bool SPLIT_K>
__device__ __forceinline__ void implicit_gemm_body(CONV_IGEMM_PARAMS(T)) {
    typedef IgemmSmem<PRECISION> Smem;
    typedef typename Smem::Elem Elem;
    constexpr bool BITS16 = PRECISION == CONV_IGEMM_F16 || PRECISION == CONV_IGEMM_BF16;
    constexpr bool ASYNC = !BITS16;                         // cp.async (4-byte elements)
    constexpr int NT = 32 * WARPS_M * WARPS_N;              // threads per block
    constexpr int WTM = BM / WARPS_M, WTN = BN / WARPS_N;   // warp tile
    constexpr int MI = WTM / 16, NI = WTN / 8;              // mma tiles per warp
    constexpr int K_STEP = Smem::K_STEP;
    constexpr int A_LD = BK + Smem::A_PAD, B_LD = BN + Smem::B_PAD;
    constexpr int A_LOADS = BM * BK / NT, B_LOADS = BK * BN / NT;   // elements per thread
    static_assert(WTM % 16 == 0 && WTN % 8 == 0, "warp tiles are whole 16 x 8 mma tiles");
    static_assert(BK % K_STEP == 0 && BK % 16 == 0 && BN % 32 == 0,
                  "whole mma k-steps; the pads' bank arithmetic (header) needs BK % 16, BN % 32");
    static_assert(NT % BK == 0 && (BM * BK) % NT == 0, "A loads: whole rounds, fixed i");
    static_assert(NT % BN == 0 && (BK * BN) % NT == 0, "B loads: whole rounds, fixed j");
    static_assert(STAGES == 2 || STAGES == 3, "2 or 3 pipeline stages");
    __shared__ __align__(16) Elem As[STAGES][BM][A_LD];     // As[stage][m][i]
    __shared__ __align__(16) Elem Bs[STAGES][BK][B_LD];     // Bs[stage][i][j]

    const int tid = threadIdx.x;                            // range [0, NT)
    const int lane = tid % 32, warp = tid / 32;
    const int gid = lane / 4, tig = lane % 4;               // PTX: groupID, threadID_in_group
    const int wm = (warp % WARPS_M) * WTM;                  // warp tile origin in the block tile
    const int wn = (warp / WARPS_M) * WTN;
    // Split-K (the _splitk entry points, SPLIT_K): blockIdx.z is (group, split); split s of
    // `splits` covers k-tiles [s*per, min(k_tiles, (s+1)*per)) and writes its fp32 partial sums
    // to part (below). The other entry points ignore splits/part: no cost in registers.
    const long long nsplit = SPLIT_K ? splits : 1;
    const long long group = g0 + blockIdx.z / nsplit;       // range [0, groups)
    const long long split = blockIdx.z % nsplit;            // range [0, splits)
    const long long m0 = (long long)blockIdx.y * BM;        // first row, range [0, kg)
    const long long j0 = (long long)blockIdx.x * BN;        // first column, range [0, M)
    const long long PQ = P * Q, RS = R * S;
    const T *w_group = wmat + group * kg * CRS;

    // A loads: a fixed i (column of the weight row) per thread, rows a_m + l*NT/BK.
    const int a_i = tid % BK, a_m = tid / BK;
    // B loads: a fixed column j per thread, reduction rows b_i + l*NT/BN. The column's image
    // and input origins, once: x_col points at (n, group's channel 0, row 0, column 0).
    const int b_j = tid % BN, b_i = tid / BN;
    const bool col_in = j0 + b_j < M;
    long long h_origin = 0, w_origin = 0;
    const T *x_col = x;
    if (col_in) {
        const long long j = j0 + b_j;
        const long long n = j / PQ, pq = j - n * PQ;
        const long long p = pq / Q, q = pq - p * Q;
        h_origin = p * stride_h - pad_top;
        w_origin = q * stride_w - pad_left;
        x_col = x + n * xs_n + group * cg * xs_c;
    }

    // Where element (a_m + l*NT/BK, i0 + a_i) of the A tile and (i0 + b_i + l*NT/BN, b_j) of the B
    // tile come from, or nullptr for a zero (outside the matrices, or a zero-padding tap).
    auto a_source = [&](int l, long long i0) -> const T * {
        const long long m = m0 + a_m + l * (NT / BK), i = i0 + a_i;
        return (m < kg && i < CRS) ? w_group + m * CRS + i : nullptr;
    };
    auto b_source = [&](int l, long long i0) -> const T * {
        const long long i = i0 + b_i + l * (NT / BN);
        if (!col_in || i >= CRS) return nullptr;
        const long long c = i / RS, rs = i - c * RS;
        const long long r = rs / S, s = rs - r * S;
        const long long h = conv_src_index(h_origin + r * dil_h, H, mode);
        const long long w = conv_src_index(w_origin + s * dil_w, W, mode);
        return (h >= 0 && w >= 0) ? x_col + c * xs_c + h * xs_h + w * xs_w : nullptr;
    };

    // float32: issue the copies of k-tile i0 into buffer `stage` (the caller commits).
    auto issue_tile = [&](int stage, long long i0) {
#pragma unroll
        for (int l = 0; l < A_LOADS; ++l) {
            const T *src = a_source(l, i0);
            conv_cp_async_ca_zfill<4>(conv_smem_address(&As[stage][a_m + l * (NT / BK)][a_i]),
                                      src ? src : wmat, src ? 4 : 0);
        }
#pragma unroll
        for (int l = 0; l < B_LOADS; ++l) {
            const T *src = b_source(l, i0);
            conv_cp_async_ca_zfill<4>(conv_smem_address(&Bs[stage][b_i + l * (NT / BN)][b_j]),
                                      src ? src : x, src ? 4 : 0);
        }
    };
    // float16: k-tile i0 into registers, and from there into buffer `stage`.
    unsigned short a_reg[A_LOADS], b_reg[B_LOADS];
    auto fetch_tile = [&](long long i0) {
#pragma unroll
        for (int l = 0; l < A_LOADS; ++l) {
            const T *src = a_source(l, i0);
            a_reg[l] = src ? *reinterpret_cast<const unsigned short *>(src) : 0;
        }
#pragma unroll
        for (int l = 0; l < B_LOADS; ++l) {
            const T *src = b_source(l, i0);
            b_reg[l] = src ? *reinterpret_cast<const unsigned short *>(src) : 0;
        }
    };
    auto store_tile = [&](int stage) {
#pragma unroll
        for (int l = 0; l < A_LOADS; ++l)
            *reinterpret_cast<unsigned short *>(&As[stage][a_m + l * (NT / BK)][a_i]) = a_reg[l];
#pragma unroll
        for (int l = 0; l < B_LOADS; ++l)
            *reinterpret_cast<unsigned short *>(&Bs[stage][b_i + l * (NT / BN)][b_j]) = b_reg[l];
    };

    float acc[MI][NI][4];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0.0f;

    // The mma tiles of the warp over buffer `stage`.
    auto compute_tile = [&](int stage) {
#pragma unroll
        for (int ks = 0; ks < BK; ks += K_STEP) {
            if constexpr (BITS16) {
                unsigned a[MI][4], b[NI][2];
#pragma unroll
                for (int mi = 0; mi < MI; ++mi)     // lanes 0-15: rows of k 0-7, 16-31: of k 8-15
                    conv_ldmatrix_x4(a[mi], conv_smem_address(
                        &As[stage][wm + mi * 16 + lane % 16][ks + (lane / 16) * 8]));
#pragma unroll
                for (int ni = 0; ni < NI; ++ni)     // lanes 0-15: rows k = 0..15 (16-31 unread)
                    conv_ldmatrix_x2_trans(b[ni], conv_smem_address(
                        &Bs[stage][ks + lane % 16][wn + ni * 8]));
#pragma unroll
                for (int mi = 0; mi < MI; ++mi)
#pragma unroll
                    for (int ni = 0; ni < NI; ++ni)
                        if constexpr (PRECISION == CONV_IGEMM_BF16)
                            conv_mma_m16n8k16_bf16(acc[mi][ni], a[mi], b[ni], acc[mi][ni]);
                        else
                            conv_mma_m16n8k16_f16(acc[mi][ni], a[mi], b[ni], acc[mi][ni]);
            } else {
                constexpr bool SPLIT = PRECISION == CONV_IGEMM_3XTF32;
                unsigned a_big[MI][4], a_small[MI][4], b_big[NI][2], b_small[NI][2];
#pragma unroll
                for (int mi = 0; mi < MI; ++mi) {
                    const int row = wm + mi * 16 + gid;
                    const float v[4] = {As[stage][row][ks + tig], As[stage][row + 8][ks + tig],
                                        As[stage][row][ks + tig + 4],
                                        As[stage][row + 8][ks + tig + 4]};
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        if constexpr (SPLIT) conv_tf32_split(v[e], a_big[mi][e], a_small[mi][e]);
                        else a_big[mi][e] = conv_cvt_rna_tf32(v[e]);
                    }
                }
#pragma unroll
                for (int ni = 0; ni < NI; ++ni) {
                    const int col = wn + ni * 8 + gid;
                    const float v[2] = {Bs[stage][ks + tig][col], Bs[stage][ks + tig + 4][col]};
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        if constexpr (SPLIT) conv_tf32_split(v[e], b_big[ni][e], b_small[ni][e]);
                        else b_big[ni][e] = conv_cvt_rna_tf32(v[e]);
                    }
                }
#pragma unroll
                for (int mi = 0; mi < MI; ++mi)
#pragma unroll
                    for (int ni = 0; ni < NI; ++ni) {
                        if constexpr (SPLIT) {      // the small terms first (header)
                            conv_mma_m16n8k8_tf32(acc[mi][ni], a_small[mi], b_big[ni], acc[mi][ni]);
                            conv_mma_m16n8k8_tf32(acc[mi][ni], a_big[mi], b_small[ni], acc[mi][ni]);
                        }
                        conv_mma_m16n8k8_tf32(acc[mi][ni], a_big[mi], b_big[ni], acc[mi][ni]);
                    }
            }
        }
    };

    // This block's k-tiles [kt0, kt0 + count): all of them unless split; kt counts from 0.
    const long long k_tiles_all = (CRS + BK - 1) / BK;
    const long long per_split = (k_tiles_all + nsplit - 1) / nsplit;
    const long long kt0 = split * per_split;
    const long long k_tiles = kt0 >= k_tiles_all ? 0
                              : (k_tiles_all - kt0 < per_split ? k_tiles_all - kt0 : per_split);
    const long long i_first = kt0 * BK;
    if constexpr (ASYNC) {
#pragma unroll
        for (int s = 0; s < STAGES - 1; ++s) {
            if (s < k_tiles) issue_tile(s, i_first + (long long)s * BK);
            conv_cp_async_commit();
        }
        for (long long kt = 0; kt < k_tiles; ++kt) {
            conv_cp_async_wait<STAGES - 2>();       // this thread's copies of tile kt landed
            __syncthreads();                        // everyone's; and tile kt-1 is consumed
            const long long next = kt + STAGES - 1;
            if (next < k_tiles) issue_tile((int)(next % STAGES), i_first + next * BK);
            conv_cp_async_commit();                 // possibly empty: keeps the group count
            compute_tile((int)(kt % STAGES));
        }
    } else {
#pragma unroll
        for (int s = 0; s < STAGES - 1; ++s) {
            if (s < k_tiles) {
                fetch_tile(i_first + (long long)s * BK);
                store_tile(s);
            }
        }
        for (long long kt = 0; kt < k_tiles; ++kt) {
            __syncthreads();                        // tile kt stored; tile kt-1 consumed
            const long long next = kt + STAGES - 1;
            const bool more = next < k_tiles;
            if (more) fetch_tile(i_first + next * BK);   // in flight over the mmas
            compute_tile((int)(kt % STAGES));
            if (more) store_tile((int)(next % STAGES));
        }
    }

    // Epilogue: bias, cast, store this lane's accumulators to out (n, k, p, q); split, the raw
    // fp32 sums to part[split] (the contiguous (N, K, P, Q) layout of out, part_stride apart),
    // which splitk_sum.cu adds up in split order (deterministic), with the bias.
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {     // c[0..1]: row gid; c[2..3]: row gid + 8
            const long long m = m0 + wm + mi * 16 + gid + 8 * half;
            if (m >= kg) continue;
            const long long k = group * kg + m;
            const float bias_k = has_bias ? Traits<T>::load(bias[k * bs]) : 0.0f;
#pragma unroll
            for (int ni = 0; ni < NI; ++ni) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const long long j = j0 + wn + ni * 8 + 2 * tig + e;
                    if (j >= M) continue;
                    const long long n = j / PQ;
                    const long long at = n * o_n + k * o_k + (j - n * PQ);
                    if constexpr (SPLIT_K)
                        part[split * part_stride + at] = acc[mi][ni][2 * half + e];
                    else
                        out[at] = Traits<T>::store(acc[mi][ni][2 * half + e] + bias_k);
                }
            }
        }
    }
}

#define CONV_IGEMM_ENTRY(PREC_NAME, PREC, NAME, T)                                               \
    extern "C" __global__ void __launch_bounds__(CONV_IGEMM_THREADS)                             \
        implicit_gemm_##PREC_NAME##_##NAME(CONV_IGEMM_PARAMS(T)) {                               \
        implicit_gemm_body<T, PREC, CONV_IGEMM_BM, CONV_IGEMM_BN, CONV_IGEMM_BK,                 \
                           CONV_IGEMM_WARPS_M, CONV_IGEMM_WARPS_N, CONV_IGEMM_STAGES, false>(    \
            CONV_IGEMM_ARGS);                                                                    \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(CONV_IGEMM_THREADS)                             \
        implicit_gemm_##PREC_NAME##_splitk_##NAME(CONV_IGEMM_PARAMS(T)) {                        \
        implicit_gemm_body<T, PREC, CONV_IGEMM_BM, CONV_IGEMM_BN, CONV_IGEMM_BK,                 \
                           CONV_IGEMM_WARPS_M, CONV_IGEMM_WARPS_N, CONV_IGEMM_STAGES, true>(     \
            CONV_IGEMM_ARGS);                                                                    \
    }

#if defined(CONV_WANT_float32)
CONV_IGEMM_ENTRY(tf32, CONV_IGEMM_TF32, float32, float)
CONV_IGEMM_ENTRY(3xtf32, CONV_IGEMM_3XTF32, float32, float)
#endif
#if defined(CONV_WANT_float16)
CONV_IGEMM_ENTRY(f16, CONV_IGEMM_F16, float16, conv_half)
#endif
#if defined(CONV_WANT_bfloat16)
CONV_IGEMM_ENTRY(bf16, CONV_IGEMM_BF16, bfloat16, conv_bf16)
#endif
#if !defined(CONV_WANT_float32) && !defined(CONV_WANT_float16) && !defined(CONV_WANT_bfloat16)
#error "implicit_gemm.cu is built for float32, float16 or bfloat16 only"
#endif
