// gemm.cu: the GEMM of im2col convolution, one matrix product per group g (grid z):
//   out[n, g*kg + m, p, q] = bias[g*kg + m] + sum over i in [0, CRS) of A[g*kg + m, i] * B_g[i, j]
// with j = (n*P + p)*Q + q.
//
// Names: m output channel within the group [0, kg); j column = (n, p, q) [0, M); i reduction index
// = (c, r, s) within the group [0, CRS = cg*R*S).
//   A:   the weights, contiguous (K, CRS) row-major.
//   B_g: element (i, j) at B + g*b_g + i*b_row + col_off(j), where
//        col_off(j) = (j / PQ)*b_n + ((j % PQ) / Q)*b_p + (j % Q)*b_q.
//        For the im2col workspace (im2col.cu) b_g = CRS*M, b_row = M, b_n = PQ, b_p = Q, b_q = 1;
//        a pointwise (1x1, unpadded) convolution passes the input itself: b_row = the channel
//        stride, b_n/b_p/b_q = the image/row/column strides times the conv stride (no workspace).
//   out: element (m, j) at out + (j / PQ)*o_n + (g*kg + m)*o_k + j % PQ. For whole images of the
//        contiguous (N, K, P, Q) output o_n = K*P*Q, o_k = P*Q = PQ; for a band of output rows
//        [p0, p0 + Pb) of one image (the workspace cap's chunks) out points at row p0, PQ = Pb*Q
//        and o_k stays P*Q.
// The bias add and the cast back to the storage type are fused in the epilogue; accumulation is in
// Traits<T>::Acc (float16 in float32, integers exactly in 64 bits).
//
// Versions (same parameters, picked by name in conv/backend/cupy/__init__.py):
//   version 0, gemm_naive_<dtype>  (algorithm "im2col_naive"): one thread per output (m, j); block
//       (32, 8) with x over j, y over m, z over groups; loops over i reading A and B from global
//       memory.
//   version 1, gemm_tiled_<dtype>  (algorithm "im2col"): a block computes a BM x BN tile of
//       (m, j) for one group with (BM/TM) x (BN/TN) threads; each thread owns TM x TN outputs in
//       registers, strided by the thread grid (rows ty + i*BM/TM, columns tx + jj*BN/TN), so its
//       shared-memory reads are broadcasts (A) or consecutive (B) and its stores are coalesced.
//       Per BK step the block stages A (transposed, padded against bank conflicts) and B in shared
//       memory, converting to Acc once on the way in. Tile sizes come from -DCONV_GEMM_BM etc.
//       (conv/backend/cupy/sources.py:GEMM_TILE_CONFIGS, by name: 128x128x8 with 8x8 per thread,
//       for float16/float32 only, and 64x64x16 with 4x4 for every dtype; GEMM_TILES names each
//       dtype's default; a plan's tile configuration picks another).
// 64-bit indices throughout; partial tiles at every edge are zero-filled on load and masked on store.
#include "common.cuh"

// The tile shapes have one home, GEMM_TILE_CONFIGS in conv/backend/cupy/sources.py, which passes
// the launched one as -D options.
#if !defined(CONV_GEMM_BM) || !defined(CONV_GEMM_BN) || !defined(CONV_GEMM_BK) || \
    !defined(CONV_GEMM_TM) || !defined(CONV_GEMM_TN)
#error "CONV_GEMM_BM/BN/BK/TM/TN are defined by the host (conv/backend/cupy/sources.py: GEMM_TILE_CONFIGS)"
#endif
#define CONV_GEMM_THREADS ((CONV_GEMM_BM / CONV_GEMM_TM) * (CONV_GEMM_BN / CONV_GEMM_TN))

#define CONV_GEMM_PARAMS(T)                                                                      \
    const T *__restrict__ A, const T *__restrict__ B, const T *__restrict__ bias,                \
        T *__restrict__ out, long long kg, long long M, long long CRS, long long PQ, long long Q, \
        long long b_g, long long b_row, long long b_n, long long b_p, long long b_q, long long o_n, \
        long long o_k, long long bs, long long has_bias, long long g0

#define CONV_GEMM_ARGS                                                                           \
    A, B, bias, out, kg, M, CRS, PQ, Q, b_g, b_row, b_n, b_p, b_q, o_n, o_k, bs, has_bias, g0

// Offset of column j = (n, p, q) in B.
__device__ __forceinline__ long long conv_gemm_col_off(long long j, long long PQ, long long Q,
                                                       long long b_n, long long b_p, long long b_q) {
    const long long n = j / PQ;
    const long long pq = j - n * PQ;
    const long long p = pq / Q;
    return n * b_n + p * b_p + (pq - p * Q) * b_q;
}

// Version 0: one thread per output (m, j); loops over i.
template <typename T>
__device__ __forceinline__ void gemm_naive_body(CONV_GEMM_PARAMS(T)) {
    typedef typename Traits<T>::Acc Acc;
    const long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;   // range [0, M)
    const long long m = (long long)blockIdx.y * blockDim.y + threadIdx.y;   // range [0, kg)
    const long long g = g0 + blockIdx.z;                                     // group
    if (j >= M || m >= kg) return;                                           // partial blocks
    const T *a = A + (g * kg + m) * CRS;
    const T *b = B + g * b_g + conv_gemm_col_off(j, PQ, Q, b_n, b_p, b_q);
    Acc acc = Traits<T>::zero();
    for (long long i = 0; i < CRS; ++i)
        acc = conv_mac(acc, Traits<T>::load(a[i]), Traits<T>::load(b[i * b_row]));
    const long long k = g * kg + m;
    if (has_bias) acc = acc + Traits<T>::load(bias[k * bs]);
    const long long n = j / PQ;
    out[n * o_n + k * o_k + (j - n * PQ)] = Traits<T>::store(acc);
}

// Version 1: shared-memory tiles, TM x TN register blocking.
template <typename T, int BM, int BN, int BK, int TM, int TN>
__device__ __forceinline__ void gemm_tiled_body(CONV_GEMM_PARAMS(T)) {
    typedef typename Traits<T>::Acc Acc;
    constexpr int TX = BN / TN;            // threads along j
    constexpr int TY = BM / TM;            // threads along m
    constexpr int NT = TX * TY;            // threads per block (1-D block)
    static_assert(BM % TM == 0 && BN % TN == 0, "tile must split into thread blocks");
    static_assert(NT % BK == 0 && (BM * BK) % NT == 0, "A tile loads: whole rounds, fixed i");
    static_assert(NT % BN == 0 && (BK * BN) % NT == 0, "B tile loads: whole rounds, fixed j");
    __shared__ Acc As[BK][BM + 1];         // As[i][m], transposed; +1 spreads the stores' banks
    __shared__ Acc Bs[BK][BN];             // Bs[i][j]

    const int tid = threadIdx.x;           // range [0, NT)
    const int tx = tid % TX, ty = tid / TX;
    const long long g = g0 + blockIdx.z;                   // group
    const long long m0 = (long long)blockIdx.y * BM;       // first row of the tile
    const long long j0 = (long long)blockIdx.x * BN;       // first column of the tile
    const T *Ag = A + g * kg * CRS;
    const T *Bg = B + g * b_g;

    // A loads: element e = tid + NT*l of the BM x BK tile is (m = e / BK, i = e % BK).
    const int a_i = tid % BK, a_m = tid / BK;
    // B loads: element e = tid + NT*l of the BK x BN tile is (i = e / BN, j = e % BN); the column
    // is the same for every l, so its offset is computed once.
    const int b_j = tid % BN, b_i = tid / BN;
    const bool b_in = j0 + b_j < M;
    const long long b_off = b_in ? conv_gemm_col_off(j0 + b_j, PQ, Q, b_n, b_p, b_q) : 0;

    Acc acc[TM][TN];
#pragma unroll
    for (int ii = 0; ii < TM; ++ii)
#pragma unroll
        for (int jj = 0; jj < TN; ++jj) acc[ii][jj] = Traits<T>::zero();

    for (long long i0 = 0; i0 < CRS; i0 += BK) {
#pragma unroll
        for (int l = 0; l < BM * BK / NT; ++l) {
            const int m = a_m + (NT / BK) * l;
            const long long gm = m0 + m, gi = i0 + a_i;
            As[a_i][m] = (gm < kg && gi < CRS) ? Traits<T>::load(Ag[gm * CRS + gi]) : Traits<T>::zero();
        }
#pragma unroll
        for (int l = 0; l < BK * BN / NT; ++l) {
            const int i = b_i + (NT / BN) * l;
            const long long gi = i0 + i;
            Bs[i][b_j] = (b_in && gi < CRS) ? Traits<T>::load(Bg[gi * b_row + b_off]) : Traits<T>::zero();
        }
        __syncthreads();
#pragma unroll
        for (int i = 0; i < BK; ++i) {
            Acc a[TM], b[TN];
#pragma unroll
            for (int ii = 0; ii < TM; ++ii) a[ii] = As[i][ty + TY * ii];
#pragma unroll
            for (int jj = 0; jj < TN; ++jj) b[jj] = Bs[i][tx + TX * jj];
#pragma unroll
            for (int ii = 0; ii < TM; ++ii)
#pragma unroll
                for (int jj = 0; jj < TN; ++jj) acc[ii][jj] = conv_mac(acc[ii][jj], a[ii], b[jj]);
        }
        __syncthreads();
    }

    // Epilogue: bias, cast, scatter to out (n, k, p, q).
#pragma unroll
    for (int jj = 0; jj < TN; ++jj) {
        const long long j = j0 + tx + TX * jj;
        if (j >= M) continue;
        const long long n = j / PQ;
        T *o = out + n * o_n + (j - n * PQ);
#pragma unroll
        for (int ii = 0; ii < TM; ++ii) {
            const long long m = m0 + ty + TY * ii;
            if (m >= kg) continue;
            const long long k = g * kg + m;
            Acc v = acc[ii][jj];
            if (has_bias) v = v + Traits<T>::load(bias[k * bs]);
            o[k * o_k] = Traits<T>::store(v);
        }
    }
}

#define CONV_GEMM_ENTRIES(NAME, T)                                                               \
    extern "C" __global__ void __launch_bounds__(256) gemm_naive_##NAME(CONV_GEMM_PARAMS(T)) {   \
        gemm_naive_body<T>(CONV_GEMM_ARGS);                                                      \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(CONV_GEMM_THREADS)                              \
        gemm_tiled_##NAME(CONV_GEMM_PARAMS(T)) {                                                 \
        gemm_tiled_body<T, CONV_GEMM_BM, CONV_GEMM_BN, CONV_GEMM_BK, CONV_GEMM_TM, CONV_GEMM_TN>( \
            CONV_GEMM_ARGS);                                                                     \
    }

#if defined(CONV_WANT_float16)
CONV_GEMM_ENTRIES(float16, conv_half)
#endif
#if defined(CONV_WANT_bfloat16)
CONV_GEMM_ENTRIES(bfloat16, conv_bf16)
#endif
#if defined(CONV_WANT_float32)
CONV_GEMM_ENTRIES(float32, float)
#endif
#if defined(CONV_WANT_float64)
CONV_GEMM_ENTRIES(float64, double)
#endif
#if defined(CONV_WANT_complex64)
CONV_GEMM_ENTRIES(complex64, conv_complex<float>)
#endif
#if defined(CONV_WANT_complex128)
CONV_GEMM_ENTRIES(complex128, conv_complex<double>)
#endif
#if defined(CONV_WANT_int8)
CONV_GEMM_ENTRIES(int8, signed char)
#endif
#if defined(CONV_WANT_int16)
CONV_GEMM_ENTRIES(int16, short)
#endif
#if defined(CONV_WANT_int32)
CONV_GEMM_ENTRIES(int32, int)
#endif
#if defined(CONV_WANT_int64)
CONV_GEMM_ENTRIES(int64, long long)
#endif
#if defined(CONV_WANT_uint8)
CONV_GEMM_ENTRIES(uint8, unsigned char)
#endif
