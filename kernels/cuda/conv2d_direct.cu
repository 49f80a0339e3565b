// conv2d_direct.cu: direct 2-D convolution, out[n, k, p, q] = bias[k] + sum over (c, r, s) of
// x_padded[n, g*cg + c, p*stride_h + r*dil_h, q*stride_w + s*dil_w] * w[k, c, r, s], g = k / kg.
// conv1d is the case H = R = 1. Padding (zeros/reflect/replicate/circular) is resolved by index
// arithmetic (common.cuh:conv_src_index); no padded copy is made.
//
// Names: n batch [0, N), c input channel [0, C) (cg = C / groups per group), k output channel
// [0, K) (kg = K / groups per group), h/w input row/column [0, H)/[0, W), p/q output row/column
// [0, P)/[0, Q), r/s kernel taps [0, R)/[0, S).
//
// Versions (same parameters, picked by name in conv/backend/cupy/__init__.py):
//   version 0, conv2d_direct_naive_<dtype>  (algorithm "direct_naive"):
//       one thread per output (n, k, p, q), q fastest; loops over c, r, s, resolving the padded
//       index of every tap for every channel. The baseline every other version is checked against.
//   version 1, conv2d_direct_kb<KB>_<dtype>  (algorithm "direct", KB in {1, 4, 8}):
//       one thread per (n, g, k-block, p, q), q fastest; each thread computes KB output channels
//       k = g*kg + kb*KB + j, j in [0, KB) of one group in registers. Loops over taps (r, s)
//       outside and channels c inside, so the padded index of a tap is resolved once for all cg
//       channels, and every input value loaded is used KB times. Threads of a warp share
//       (n, g, k-block) except where a warp straddles two output planes, so weight loads are
//       warp-uniform (broadcast).
//       KB = 1 is the depthwise specialisation (one output channel per group: no idle lanes of an
//       unrolled k loop); KB = 4/8 serve channel multipliers and dense convolutions.
//
// Grids are 1-D with a grid-stride loop over all outputs; every index is 64-bit (long long), so
// tensors beyond 2^31 elements are addressed correctly. Input and weight are read through element
// strides (any view, negative strides included, zero-copy); the output is contiguous (N, K, P, Q).
#include "common.cuh"

#define CONV_DIRECT_PARAMS(T)                                                                    \
    const T *__restrict__ x, const T *__restrict__ w, const T *__restrict__ bias,                \
        T *__restrict__ out, long long N, long long C, long long H, long long W, long long K,     \
        long long P, long long Q, long long R, long long S, long long xs_n, long long xs_c,       \
        long long xs_h, long long xs_w, long long ws_k, long long ws_c, long long ws_r,           \
        long long ws_s, long long bs, long long groups, long long stride_h, long long stride_w,   \
        long long dil_h, long long dil_w, long long pad_top, long long pad_left, long long mode,  \
        long long has_bias

#define CONV_DIRECT_ARGS                                                                         \
    x, w, bias, out, N, C, H, W, K, P, Q, R, S, xs_n, xs_c, xs_h, xs_w, ws_k, ws_c, ws_r, ws_s,  \
        bs, groups, stride_h, stride_w, dil_h, dil_w, pad_top, pad_left, mode, has_bias

// Version 0: one thread per output (n, k, p, q); loops over c, r, s.
template <typename T>
__device__ __forceinline__ void conv2d_direct_naive_body(CONV_DIRECT_PARAMS(T)) {
    typedef typename Traits<T>::Acc Acc;
    const long long cg = C / groups;           // input channels per group
    const long long kg = K / groups;           // output channels per group
    const long long total = N * K * P * Q;     // outputs, the contiguous (N, K, P, Q) order
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        const long long q = idx % Q;           // range [0, Q)
        long long t = idx / Q;
        const long long p = t % P;             // range [0, P)
        t /= P;
        const long long k = t % K;             // range [0, K)
        const long long n = t / K;             // range [0, N)
        const long long g = k / kg;            // group of k, range [0, groups)
        Acc acc = Traits<T>::zero();
        const T *xc = x + n * xs_n + g * cg * xs_c;   // x[n, g*cg + c, 0, 0]
        const T *wc = w + k * ws_k;                   // w[k, c, 0, 0]
        for (long long c = 0; c < cg; ++c, xc += xs_c, wc += ws_c) {   // channel in group
            for (long long r = 0; r < R; ++r) {
                const long long h = conv_src_index(p * stride_h - pad_top + r * dil_h, H, mode);
                if (h < 0) continue;           // a zero of the padding
                for (long long s = 0; s < S; ++s) {
                    const long long wi = conv_src_index(q * stride_w - pad_left + s * dil_w, W, mode);
                    if (wi < 0) continue;
                    acc = conv_mac(acc, Traits<T>::load(xc[h * xs_h + wi * xs_w]),
                                   Traits<T>::load(wc[r * ws_r + s * ws_s]));
                }
            }
        }
        if (has_bias) acc = acc + Traits<T>::load(bias[k * bs]);
        out[idx] = Traits<T>::store(acc);
    }
}

// Version 1: one thread per (n, g, k-block, p, q); KB output channels in registers; loops over
// r, s (padded index resolved once per tap), then c.
template <typename T, int KB>
__device__ __forceinline__ void conv2d_direct_kblock_body(CONV_DIRECT_PARAMS(T)) {
    typedef typename Traits<T>::Acc Acc;
    const long long cg = C / groups;
    const long long kg = K / groups;
    const long long kblocks = (kg + KB - 1) / KB;            // k-blocks per group
    const long long total = N * groups * kblocks * P * Q;    // threads' work items
    const long long PQ = P * Q;
    const int taps_r = (int)R, taps_s = (int)S;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        const long long q = idx % Q;           // range [0, Q)
        long long t = idx / Q;
        const long long p = t % P;             // range [0, P)
        t /= P;
        const long long kb = t % kblocks;      // k-block within the group, range [0, kblocks)
        t /= kblocks;
        const long long g = t % groups;        // range [0, groups)
        const long long n = t / groups;        // range [0, N)
        const long long k0 = g * kg + kb * KB; // first output channel of this thread
        const long long left = kg - kb * KB;
        const int kcount = left < KB ? (int)left : KB;   // channels of this block, range [1, KB]

        Acc acc[KB];
#pragma unroll
        for (int j = 0; j < KB; ++j) acc[j] = Traits<T>::zero();

        const long long h0 = p * stride_h - pad_top;     // input row of tap r = 0 (may be padding)
        const long long w0 = q * stride_w - pad_left;    // input column of tap s = 0
        const T *xg = x + n * xs_n + g * cg * xs_c;      // image n, first channel of group g
        const T *wk = w + k0 * ws_k;                     // weights of channel k0
        for (int r = 0; r < taps_r; ++r) {
            const long long h = conv_src_index(h0 + r * dil_h, H, mode);
            if (h < 0) continue;
            for (int s = 0; s < taps_s; ++s) {
                const long long wi = conv_src_index(w0 + s * dil_w, W, mode);
                if (wi < 0) continue;
                const T *xp = xg + h * xs_h + wi * xs_w;  // x[n, g*cg, h, wi]
                const T *wp = wk + r * ws_r + s * ws_s;   // w[k0, 0, r, s]
                for (long long c = 0; c < cg; ++c, xp += xs_c, wp += ws_c) {   // channel in group
                    const Acc xv = Traits<T>::load(*xp);
#pragma unroll
                    for (int j = 0; j < KB; ++j) {
                        // Lanes past the group's last channel (j >= kcount) recompute channel k0's
                        // product instead of branching; their sums are never stored.
                        const int jw = j < kcount ? j : 0;
                        acc[j] = conv_mac(acc[j], xv, Traits<T>::load(wp[jw * ws_k]));
                    }
                }
            }
        }
        T *o = out + (n * K + k0) * PQ + p * Q + q;      // out[n, k0, p, q], contiguous
#pragma unroll
        for (int j = 0; j < KB; ++j) {
            if (j < kcount) {
                Acc v = acc[j];
                if (has_bias) v = v + Traits<T>::load(bias[(k0 + j) * bs]);
                o[j * PQ] = Traits<T>::store(v);
            }
        }
    }
}

#define CONV_DIRECT_ENTRIES(NAME, T)                                                             \
    extern "C" __global__ void __launch_bounds__(256, 2)                                         \
        conv2d_direct_naive_##NAME(CONV_DIRECT_PARAMS(T)) {                                      \
        conv2d_direct_naive_body<T>(CONV_DIRECT_ARGS);                                           \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(256, 2)                                         \
        conv2d_direct_kb1_##NAME(CONV_DIRECT_PARAMS(T)) {                                        \
        conv2d_direct_kblock_body<T, 1>(CONV_DIRECT_ARGS);                                       \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(256, 2)                                         \
        conv2d_direct_kb4_##NAME(CONV_DIRECT_PARAMS(T)) {                                        \
        conv2d_direct_kblock_body<T, 4>(CONV_DIRECT_ARGS);                                       \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(256, 2)                                         \
        conv2d_direct_kb8_##NAME(CONV_DIRECT_PARAMS(T)) {                                        \
        conv2d_direct_kblock_body<T, 8>(CONV_DIRECT_ARGS);                                       \
    }

#if defined(CONV_WANT_float16)
CONV_DIRECT_ENTRIES(float16, conv_half)
#endif
#if defined(CONV_WANT_bfloat16)
CONV_DIRECT_ENTRIES(bfloat16, conv_bf16)
#endif
#if defined(CONV_WANT_float32)
CONV_DIRECT_ENTRIES(float32, float)
#endif
#if defined(CONV_WANT_float64)
CONV_DIRECT_ENTRIES(float64, double)
#endif
#if defined(CONV_WANT_complex64)
CONV_DIRECT_ENTRIES(complex64, conv_complex<float>)
#endif
#if defined(CONV_WANT_complex128)
CONV_DIRECT_ENTRIES(complex128, conv_complex<double>)
#endif
#if defined(CONV_WANT_int8)
CONV_DIRECT_ENTRIES(int8, signed char)
#endif
#if defined(CONV_WANT_int16)
CONV_DIRECT_ENTRIES(int16, short)
#endif
#if defined(CONV_WANT_int32)
CONV_DIRECT_ENTRIES(int32, int)
#endif
#if defined(CONV_WANT_int64)
CONV_DIRECT_ENTRIES(int64, long long)
#endif
#if defined(CONV_WANT_uint8)
CONV_DIRECT_ENTRIES(uint8, unsigned char)
#endif
