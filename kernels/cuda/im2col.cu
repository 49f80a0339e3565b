// im2col.cu: lowers a chunk of images to the column matrix the GEMM (gemm.cu) multiplies by the
// weights: cols[(c, r, s), (n, p, q)] = x_padded[n, c, p*stride_h + r*dil_h, q*stride_w + s*dil_w].
//
// Names: n image of the chunk [0, N), c input channel [0, C), h/w input row/column [0, H)/[0, W),
// p/q output row/column [0, P)/[0, Q), r/s kernel taps [0, R)/[0, S); j = (n*P + p)*Q + q is the
// column, range [0, M = N*P*Q).
//
// Layout: row-major (C*R*S, M); row (c*R + r)*S + s. Group g's rows are the contiguous block
// [g*cg*R*S, (g+1)*cg*R*S), so the GEMM of group g starts at cols + g*cg*R*S*M.
//
// Version 0 (the only one), im2col_<dtype>: one thread per (c, j), j fastest, so consecutive
// threads write consecutive columns (coalesced stores) and read neighbouring q; each thread loops
// over the R*S taps of channel c, resolving padding by index arithmetic (common.cuh:conv_src_index)
// and writing zero where a zero pad is read. Pure data movement: T is only stored, never converted.
// 1-D grid-stride loop, 64-bit indices throughout; the input is read through element strides.
#include "common.cuh"

#define CONV_IM2COL_PARAMS(T)                                                                    \
    const T *__restrict__ x, T *__restrict__ cols, long long N, long long C, long long H,        \
        long long W, long long P, long long Q, long long R, long long S, long long xs_n,          \
        long long xs_c, long long xs_h, long long xs_w, long long stride_h, long long stride_w,   \
        long long dil_h, long long dil_w, long long pad_top, long long pad_left, long long mode

#define CONV_IM2COL_ARGS                                                                         \
    x, cols, N, C, H, W, P, Q, R, S, xs_n, xs_c, xs_h, xs_w, stride_h, stride_w, dil_h, dil_w,   \
        pad_top, pad_left, mode

template <typename T>
__device__ __forceinline__ void im2col_body(CONV_IM2COL_PARAMS(T)) {
    const long long PQ = P * Q;
    const long long M = N * PQ;                 // columns
    const long long total = C * M;              // (c, j) work items
    const long long RS = R * S;
    const int taps_r = (int)R, taps_s = (int)S;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        const long long j = idx % M;            // column, range [0, M)
        const long long c = idx / M;            // input channel, range [0, C)
        const long long n = j / PQ;             // image of the chunk, range [0, N)
        const long long pq = j - n * PQ;
        const long long p = pq / Q;             // range [0, P)
        const long long q = pq - p * Q;         // range [0, Q)
        const T *xc = x + n * xs_n + c * xs_c;
        T *col = cols + c * RS * M + j;         // row (c, 0, 0), column j
        const long long h0 = p * stride_h - pad_top;
        const long long w0 = q * stride_w - pad_left;
        for (int r = 0; r < taps_r; ++r) {
            const long long h = conv_src_index(h0 + r * dil_h, H, mode);
            for (int s = 0; s < taps_s; ++s) {
                const long long wi = conv_src_index(w0 + s * dil_w, W, mode);
                T v = T();                      // all-zero bits: 0 for every dtype
                if (h >= 0 && wi >= 0) v = xc[h * xs_h + wi * xs_w];
                col[((long long)r * taps_s + s) * M] = v;
            }
        }
    }
}

#define CONV_IM2COL_ENTRY(NAME, T)                                                               \
    extern "C" __global__ void __launch_bounds__(256) im2col_##NAME(CONV_IM2COL_PARAMS(T)) {     \
        im2col_body<T>(CONV_IM2COL_ARGS);                                                        \
    }

#if defined(CONV_WANT_float16)
CONV_IM2COL_ENTRY(float16, conv_half)
#endif
#if defined(CONV_WANT_bfloat16)
CONV_IM2COL_ENTRY(bfloat16, conv_bf16)
#endif
#if defined(CONV_WANT_float32)
CONV_IM2COL_ENTRY(float32, float)
#endif
#if defined(CONV_WANT_float64)
CONV_IM2COL_ENTRY(float64, double)
#endif
#if defined(CONV_WANT_complex64)
CONV_IM2COL_ENTRY(complex64, conv_complex<float>)
#endif
#if defined(CONV_WANT_complex128)
CONV_IM2COL_ENTRY(complex128, conv_complex<double>)
#endif
#if defined(CONV_WANT_int8)
CONV_IM2COL_ENTRY(int8, signed char)
#endif
#if defined(CONV_WANT_int16)
CONV_IM2COL_ENTRY(int16, short)
#endif
#if defined(CONV_WANT_int32)
CONV_IM2COL_ENTRY(int32, int)
#endif
#if defined(CONV_WANT_int64)
CONV_IM2COL_ENTRY(int64, long long)
#endif
#if defined(CONV_WANT_uint8)
CONV_IM2COL_ENTRY(uint8, unsigned char)
#endif
