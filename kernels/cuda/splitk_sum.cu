// splitk_sum.cu: the second step of implicit_gemm.cu's split-K configurations ("<tile>/k<splits>",
// conv/backend/cupy/sources.py: IGEMM_SPLITS): the splits' fp32 partial sums added up, the bias
// added, the cast to the storage type.
//
// Who computes what: thread (blockIdx.x*blockDim.x + threadIdx.x), grid-stride, -> element e of
// the contiguous (N, K, P, Q) output, `total` of them:
//   out[e] = store(part[0*total + e] + ... + part[(splits-1)*total + e] + bias[k*bs]),
//   k = (e / PQ) % K (bias only where has_bias),
// summed in split order in float32, so every run and every schedule gives the same bits.
// 64-bit index arithmetic. Entry points splitk_sum_<dtype> for the dtypes implicit_gemm.cu has
// (float32, float16, bfloat16).
#include "common.cuh"

#define CONV_SPLITK_PARAMS(T)                                                                    \
    const float *__restrict__ part, const T *__restrict__ bias, T *__restrict__ out,             \
        long long total, long long splits, long long K, long long PQ, long long bs,             \
        long long has_bias

template <typename T>
__device__ __forceinline__ void splitk_sum_body(CONV_SPLITK_PARAMS(T)) {
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        float sum = 0.0f;
        for (long long s = 0; s < splits; ++s) sum += part[s * total + e];
        if (has_bias) sum += Traits<T>::load(bias[((e / PQ) % K) * bs]);
        out[e] = Traits<T>::store(sum);
    }
}

#define CONV_SPLITK_ENTRY(NAME, T)                                                               \
    extern "C" __global__ void __launch_bounds__(256) splitk_sum_##NAME(CONV_SPLITK_PARAMS(T)) { \
        splitk_sum_body<T>(part, bias, out, total, splits, K, PQ, bs, has_bias);                 \
    }

#if defined(CONV_WANT_float32)
CONV_SPLITK_ENTRY(float32, float)
#endif
#if defined(CONV_WANT_float16)
CONV_SPLITK_ENTRY(float16, conv_half)
#endif
#if defined(CONV_WANT_bfloat16)
CONV_SPLITK_ENTRY(bfloat16, conv_bf16)
#endif
#if !defined(CONV_WANT_float32) && !defined(CONV_WANT_float16) && !defined(CONV_WANT_bfloat16)
#error "splitk_sum.cu is built for implicit_gemm.cu's dtypes: float32, float16 or bfloat16"
#endif
