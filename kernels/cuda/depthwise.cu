// depthwise.cu: depthwise convolution (groups == C, channel multiplier M = K / C >= 1), the
// bandwidth-bound case: each output reads R*S inputs of one channel, so there is no reduction over
// channels to amortise loads and the kernel's job is to read x once and write out once.
//   out[n, k, p, q] = bias[k] + sum over (r, s) of
//       x[n, c, conv_src_index(p*stride_h - pad_top + r*dil_h, H, mode),
//              conv_src_index(q*stride_w - pad_left + s*dil_w, W, mode)] * w[k, 0, r, s],
//   c = k / M (output channel k reads input channel k / M, PyTorch's grouping).
// conv1d is height 1 (H = P = R = 1, xs_h = 0). Padding by index arithmetic (common.cuh:
// conv_src_index, all four modes); no padded copy.
//
// Names: n image [0, N), k output channel [0, K), c input channel [0, C), M = K / C, plane (n, k)
// [0, N*K), h/w input row/column, p/q output row/column [0, P)/[0, Q), r/s taps [0, R)/[0, S).
//   x:   element (n, c, h, w) at x + n*xs_n + c*xs_c + h*xs_h + w*xs_w: any layout (channels_last,
//        strided and negative-stride views included).
//   w:   element (k, 0, r, s) at w + k*ws_k + r*ws_r + s*ws_s.
//   out: the contiguous (N, K, P, Q) output, element (plane, p, q) at (plane*P + p)*Q + q.
//
// Who computes what (one version; tiles TILE_P x TILE_Q with QT outputs per thread, the entry point
// depthwise_<TILE_P>x<TILE_Q>_<dtype>, mirrored by conv/backend/cupy/sources.py:DEPTHWISE_CONFIGS):
//   block (blockIdx.x, blockIdx.y, blockIdx.z) -> the TILE_P x TILE_Q output tile at rows
//       p0 = blockIdx.y*TILE_P, columns q0 = blockIdx.x*TILE_Q of plane plane0 + blockIdx.z
//       (the host launches once per 65535 planes). NT = TILE_P * TILE_Q / QT threads.
//   thread tid -> output row p0 + tid / (TILE_Q/QT) and the QT consecutive columns
//       q0 + (tid % (TILE_Q/QT))*QT + j, j in [0, QT), accumulated in registers in Traits<T>::Acc.
//   staging: the block loads, once, the input patch its tile reads,
//       PH = (TILE_P-1)*stride_h + (R-1)*dil_h + 1 rows x PW = (TILE_Q-1)*stride_w + (S-1)*dil_w + 1
//       columns starting at (p0*stride_h - pad_top, q0*stride_w - pad_left), flattened so
//       consecutive threads take consecutive columns (coalesced where xs_w == 1; channels_last
//       inputs are correct but each load is a separate 32-byte sector), and the R*S weights of
//       channel k after it. Patch elements that no stored output reads (a partial tile's rows and
//       columns past the last output) are written as zeros, never loaded: their padded
//       coordinates would lie beyond the one reflection conv_src_index resolves.
//   compute: for each tap row r, a register sliding window over the thread's shared-memory row:
//       for stride_w == dil_w == 1 the window win[0..QT) holds the inputs of tap s for its QT
//       outputs; moving to tap s+1 shifts it by one and reads one new value, so a thread reads
//       QT + S - 1 shared values per r instead of QT*S, and each weight (a warp-wide broadcast
//       read) is loaded once per (r, s) and used QT times from a register. Other strides and
//       dilations read shared memory per tap (the same patch, no window).
//
// Shared memory per block: one static buffer of SMEM_BYTES / sizeof(T) elements of the storage type
// T (float16 stays 2 bytes in shared memory, converted on the read): PH*PW patch elements, then
// R*S weights. The host checks that a config's buffer holds them (sources.py:
// DepthwiseTile.fits) and falls back to a smaller tile where it does not; where no tile fits
// (a huge dilation), planning raises a ValueError (conv/backend/cupy/__init__.py:_depthwise).
//
// Bytes per output: for stride 1 the patch is (TILE_P + (R-1)*dil_h) x (TILE_Q + (S-1)*dil_w)
// inputs for TILE_P*TILE_Q outputs, so for 3x3 on 8x64 (10 x 66 inputs, 512 outputs) 1.29 input
// reads + 1 output write per output; for the Mamba conv1d (S = 4) on 1x1024, 1.003 + 1. Two
// elements moved per output against 2*R*S flops (8 for S = 4, 18 for 3x3): an arithmetic intensity
// of 1-2.3 flop/byte in float32, far below any GPU's ridge point (~20-60 flop/byte on
// A100/H100/H200), hence bandwidth-bound: the target is >= 70% of HBM bandwidth. Shared memory
// traffic per output is (QT + S - 1)/QT * R reads: with QT consecutive columns per thread, lanes
// of a warp read addresses QT apart, a QT-way bank conflict for 4-byte types (2-way for QT = 2);
// accepted for now, not yet timed on a GPU.
//
// Configurations (entry points of the dtype's one module; ptxas, NVRTC 13.x with CuPy's options,
// registers sm_80 / sm_90 for float32, spills 0 everywhere; tests/test_nvrtc_compile.py prints
// the table for every dtype):
//   "1x1024": 1 x 1024 outputs, QT 4, 256 threads, 24 KiB: long conv1d rows (halo small).
//   "1x256":  1 x 256 outputs,  QT 2, 128 threads, 24 KiB: conv1d where 1x1024's patch does not fit.
//   "8x64":   8 x 64 outputs,   QT 4, 128 threads, 16 KiB: conv2d.
//   "4x32":   4 x 32 outputs,   QT 2,  64 threads, 24 KiB: conv2d where 8x64's patch does not fit.
//   (register counts: see the ptxas table in the report of the change; not measured on a GPU.)
// 64-bit index arithmetic for every global offset; patch indices are int (< SMEM_BYTES).
#include "common.cuh"

#define CONV_DEPTHWISE_PARAMS(T)                                                                 \
    const T *__restrict__ x, const T *__restrict__ w, const T *__restrict__ bias,                \
        T *__restrict__ out, long long K, long long M, long long H, long long W, long long P,    \
        long long Q, long long R, long long S, long long xs_n, long long xs_c, long long xs_h,  \
        long long xs_w, long long ws_k, long long ws_r, long long ws_s, long long bs,           \
        long long stride_h, long long stride_w, long long dil_h, long long dil_w,               \
        long long pad_top, long long pad_left, long long mode, long long has_bias,              \
        long long plane0

#define CONV_DEPTHWISE_ARGS                                                                      \
    x, w, bias, out, K, M, H, W, P, Q, R, S, xs_n, xs_c, xs_h, xs_w, ws_k, ws_r, ws_s, bs,      \
        stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, mode, has_bias, plane0

template <typename T, int TILE_P, int TILE_Q, int QT, int SMEM_BYTES>
__device__ __forceinline__ void depthwise_body(CONV_DEPTHWISE_PARAMS(T)) {
    typedef typename Traits<T>::Acc Acc;
    constexpr int Q_THREADS = TILE_Q / QT;                  // threads along q per output row
    constexpr int NT = Q_THREADS * TILE_P;                  // threads per block
    constexpr int CAP = SMEM_BYTES / (int)sizeof(T);        // elements of the buffer
    static_assert(TILE_Q % QT == 0, "whole QT-runs of outputs per thread");
    __shared__ __align__(16) T smem[CAP];                   // patch [PH][PW], then w[R][S]

    const int tid = threadIdx.x;                            // range [0, NT)
    const long long plane = plane0 + blockIdx.z;            // (n, k), range [0, N*K)
    const long long k = plane % K;                          // output channel
    const long long n = plane / K;                          // image
    const long long c = k / M;                              // its input channel
    const long long p0 = (long long)blockIdx.y * TILE_P;    // first output row of the tile
    const long long q0 = (long long)blockIdx.x * TILE_Q;    // first output column of the tile

    // The patch (full-tile extent: every thread's reads stay inside it) and the part of it that
    // the tile's stored outputs read (a partial tile's last rows/columns need less).
    const int PH = (int)((TILE_P - 1) * stride_h + (R - 1) * dil_h + 1);
    const int PW = (int)((TILE_Q - 1) * stride_w + (S - 1) * dil_w + 1);
    const long long p_count = P - p0 < TILE_P ? P - p0 : TILE_P;     // range [1, TILE_P]
    const long long q_count = Q - q0 < TILE_Q ? Q - q0 : TILE_Q;     // range [1, TILE_Q]
    const int PH_used = (int)((p_count - 1) * stride_h + (R - 1) * dil_h + 1);
    const int PW_used = (int)((q_count - 1) * stride_w + (S - 1) * dil_w + 1);
    const long long h_org = p0 * stride_h - pad_top;        // input row of patch row 0
    const long long w_org = q0 * stride_w - pad_left;       // input column of patch column 0
    const T *xc = x + n * xs_n + c * xs_c;                  // x[n, c, 0, 0]
    const T zero = Traits<T>::store(Traits<T>::zero());

    T *patch = smem;
    T *wts = smem + PH * PW;
    for (int e = tid; e < PH * PW; e += NT) {               // consecutive threads: columns
        const int hh = e / PW, ww = e % PW;
        T v = zero;
        if (hh < PH_used && ww < PW_used) {                 // read by a stored output
            const long long h = conv_src_index(h_org + hh, H, mode);
            const long long wi = conv_src_index(w_org + ww, W, mode);
            if (h >= 0 && wi >= 0) v = xc[h * xs_h + wi * xs_w];
        }
        patch[e] = v;
    }
    for (int i = tid; i < R * S; i += NT)                   // w[k, 0, r, s], r-major
        wts[i] = w[k * ws_k + (i / S) * ws_r + (i % S) * ws_s];
    __syncthreads();                                        // the patch and weights are staged

    const int tp = tid / Q_THREADS;                         // output row in the tile
    const int tq = (tid % Q_THREADS) * QT;                  // first output column in the tile
    if (p0 + tp >= P) return;                               // a partial tile's missing row
    Acc acc[QT];
#pragma unroll
    for (int j = 0; j < QT; ++j) acc[j] = Traits<T>::zero();
    const int taps_r = (int)R, taps_s = (int)S;
    const bool unit = stride_w == 1 && dil_w == 1;          // the sliding-window case
    for (int r = 0; r < taps_r; ++r) {
        // Patch row of tap r for output row tp; column of the thread's first output's tap 0.
        const T *row = patch + (tp * (int)stride_h + r * (int)dil_h) * PW + tq * (int)stride_w;
        const T *wr = wts + r * taps_s;
        if (unit) {
            Acc win[QT];                                    // inputs of tap s for the QT outputs
#pragma unroll
            for (int j = 0; j < QT; ++j) win[j] = Traits<T>::load(row[j]);
            for (int s = 0; s < taps_s; ++s) {
                const Acc wv = Traits<T>::load(wr[s]);
#pragma unroll
                for (int j = 0; j < QT; ++j) acc[j] = conv_mac(acc[j], win[j], wv);
                if (s + 1 < taps_s) {                       // slide to tap s + 1: one new input
#pragma unroll
                    for (int j = 0; j + 1 < QT; ++j) win[j] = win[j + 1];
                    win[QT - 1] = Traits<T>::load(row[QT + s]);   // column <= PW - 1
                }
            }
        } else {
            const int sw = (int)stride_w, dw = (int)dil_w;
            for (int s = 0; s < taps_s; ++s) {
                const Acc wv = Traits<T>::load(wr[s]);
#pragma unroll
                for (int j = 0; j < QT; ++j)
                    acc[j] = conv_mac(acc[j], Traits<T>::load(row[j * sw + s * dw]), wv);
            }
        }
    }
    const Acc b = has_bias ? Traits<T>::load(bias[k * bs]) : Traits<T>::zero();
    T *o = out + (plane * P + p0 + tp) * Q + q0 + tq;       // out[n, k, p0 + tp, q0 + tq]
#pragma unroll
    for (int j = 0; j < QT; ++j) {
        if (tq + j < q_count) o[j] = Traits<T>::store(has_bias ? acc[j] + b : acc[j]);
    }
}

// The configurations (TILE_P, TILE_Q, QT, shared bytes): sources.py:DEPTHWISE_CONFIGS holds the
// same numbers, the host's launch geometry and fit check.
#define CONV_DEPTHWISE_ENTRY(NAME, T, TP, TQ, QT, BYTES)                                        \
    extern "C" __global__ void __launch_bounds__(TP * TQ / QT)                                   \
        depthwise_##TP##x##TQ##_##NAME(CONV_DEPTHWISE_PARAMS(T)) {                               \
        depthwise_body<T, TP, TQ, QT, BYTES>(CONV_DEPTHWISE_ARGS);                               \
    }

#define CONV_DEPTHWISE_ENTRIES(NAME, T)                                                          \
    CONV_DEPTHWISE_ENTRY(NAME, T, 1, 1024, 4, 24576)                                             \
    CONV_DEPTHWISE_ENTRY(NAME, T, 1, 256, 2, 24576)                                              \
    CONV_DEPTHWISE_ENTRY(NAME, T, 8, 64, 4, 16384)                                               \
    CONV_DEPTHWISE_ENTRY(NAME, T, 4, 32, 2, 24576)

#if defined(CONV_WANT_float16)
CONV_DEPTHWISE_ENTRIES(float16, conv_half)
#endif
#if defined(CONV_WANT_bfloat16)
CONV_DEPTHWISE_ENTRIES(bfloat16, conv_bf16)
#endif
#if defined(CONV_WANT_float32)
CONV_DEPTHWISE_ENTRIES(float32, float)
#endif
#if defined(CONV_WANT_float64)
CONV_DEPTHWISE_ENTRIES(float64, double)
#endif
#if defined(CONV_WANT_complex64)
CONV_DEPTHWISE_ENTRIES(complex64, conv_complex<float>)
#endif
#if defined(CONV_WANT_complex128)
CONV_DEPTHWISE_ENTRIES(complex128, conv_complex<double>)
#endif
#if defined(CONV_WANT_int8)
CONV_DEPTHWISE_ENTRIES(int8, signed char)
#endif
#if defined(CONV_WANT_int16)
CONV_DEPTHWISE_ENTRIES(int16, short)
#endif
#if defined(CONV_WANT_int32)
CONV_DEPTHWISE_ENTRIES(int32, int)
#endif
#if defined(CONV_WANT_int64)
CONV_DEPTHWISE_ENTRIES(int64, long long)
#endif
#if defined(CONV_WANT_uint8)
CONV_DEPTHWISE_ENTRIES(uint8, unsigned char)
#endif
