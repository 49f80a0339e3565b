// common.cuh: element types, accumulation rules and padding index arithmetic shared by the CUDA C
// convolution kernels (conv2d_direct.cu, im2col.cu, gemm.cu).
//
// Self-contained on purpose: no CUDA toolkit header is included, so the same text compiles in
// CuPy's RawModule and with the PyPI NVRTC in CI. The loader (conv/backend/cupy/sources.py:kernel_source)
// pastes this file in place of `#include "common.cuh"`, so the text CuPy hashes for its kernel cache
// is the whole program.
//
// Storage type T -> accumulation type Acc (Traits<T>), as the host's one table says
// (conv/_dtypes.py, pasted before this file as the CONV_ACC_<dtype> macros):
//   float16 (conv_half, raw IEEE bits) -> float   (converted with cvt.f32.f16 / cvt.rn.f16.f32)
//   bfloat16 (conv_bf16, raw bits: the top half of a float32) -> float (a shift; back by rounding
//       to nearest even in integer arithmetic, NaN kept quiet)
//   float32 -> float, float64 -> double
//   complex64 -> conv_complex<float>, complex128 -> conv_complex<double> (no conjugation, as PyTorch)
//   int8/int16/int32/int64/uint8 -> long long: exact, wrapping on the cast back (PyTorch/CPU)
//
// Compile-time dtype selection: a module is built for one dtype with -DCONV_WANT_<dtype> (e.g.
// -DCONV_WANT_float32), always given by the host (conv/backend/cupy/sources.py:module_options).
#pragma once

#if !defined(CONV_WANT_float16) && !defined(CONV_WANT_bfloat16) && !defined(CONV_WANT_float32) && !defined(CONV_WANT_float64) && \
    !defined(CONV_WANT_complex64) && !defined(CONV_WANT_complex128) && !defined(CONV_WANT_int8) && \
    !defined(CONV_WANT_int16) && !defined(CONV_WANT_int32) && !defined(CONV_WANT_int64) && \
    !defined(CONV_WANT_uint8)
#error "a module is built for one dtype: -DCONV_WANT_<dtype> (conv/backend/cupy/sources.py:module_options)"
#endif

// The host's tables, pasted before this file by the loader: padding modes (conv/_padding.py) as
// CONV_PAD_<MODE>, accumulation types (conv/_dtypes.py) as CONV_ACC_<dtype>.
#if !defined(CONV_PAD_ZEROS) || !defined(CONV_PAD_REFLECT) || !defined(CONV_PAD_REPLICATE) || \
    !defined(CONV_PAD_CIRCULAR) || !defined(CONV_ACC_float16) || !defined(CONV_ACC_bfloat16)
#error "compile the loader's text (conv/backend/cupy/sources.py:kernel_source), not this file"
#endif

// ---------------------------------------------------------------------------------------------
// float16 as raw bits; arithmetic happens in float32.
struct conv_half {
    unsigned short bits;
};

__device__ __forceinline__ float conv_half_to_float(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ unsigned short conv_float_to_half(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// ---------------------------------------------------------------------------------------------
// bfloat16 as raw bits (the sign, exponent and top 7 mantissa bits of a float32); arithmetic
// happens in float32. The conversion back is integer arithmetic, the same on every architecture
// (cvt.rn.bf16.f32 needs sm_80) and in the CPU emulator: round to nearest even (adding 0x7fff
// plus the lowest kept bit carries exactly when the dropped half is above, or at with an odd
// kept part; a carry out of the mantissa rounds up the exponent, to inf past the largest
// finite), NaN kept a quiet NaN of the same sign.
struct conv_bf16 {
    unsigned short bits;
};

__device__ __forceinline__ float conv_bf16_to_float(unsigned short h) {
    return __uint_as_float((unsigned)h << 16);
}

__device__ __forceinline__ unsigned short conv_float_to_bf16(float f) {
    const unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// ---------------------------------------------------------------------------------------------
// Complex numbers: (re, im) pairs aligned like their parts (element alignment is all a strided
// view guarantees), with the two products a convolution needs.
template <typename F>
struct conv_complex {
    F re, im;
};

template <typename F>
__device__ __forceinline__ conv_complex<F> operator+(conv_complex<F> a, conv_complex<F> b) {
    conv_complex<F> r;
    r.re = a.re + b.re;
    r.im = a.im + b.im;
    return r;
}

// acc + a * b, the one operation of every inner loop.
template <typename A>
__device__ __forceinline__ A conv_mac(A acc, A a, A b) {
    return acc + a * b;
}

template <typename F>
__device__ __forceinline__ conv_complex<F> conv_mac(conv_complex<F> acc, conv_complex<F> a,
                                                    conv_complex<F> b) {
    conv_complex<F> r;
    r.re = acc.re + a.re * b.re - a.im * b.im;
    r.im = acc.im + a.re * b.im + a.im * b.re;
    return r;
}

// ---------------------------------------------------------------------------------------------
// Traits<T>: Acc, load (T -> Acc), store (Acc -> T), zero.
template <typename T>
struct Traits;

// The 16-bit types are their bits, widened to and rounded from their float accumulator.
template <typename T, typename A, float (*ToFloat)(unsigned short),
          unsigned short (*FromFloat)(float)>
struct Bits16Traits {
    typedef A Acc;
    static __device__ __forceinline__ Acc load(T v) { return ToFloat(v.bits); }
    static __device__ __forceinline__ T store(Acc a) {
        T h;
        h.bits = FromFloat(a);
        return h;
    }
    static __device__ __forceinline__ Acc zero() { return 0.0f; }
};

template <>
struct Traits<conv_half>
    : Bits16Traits<conv_half, CONV_ACC_float16, conv_half_to_float, conv_float_to_half> {};

template <>
struct Traits<conv_bf16>
    : Bits16Traits<conv_bf16, CONV_ACC_bfloat16, conv_bf16_to_float, conv_float_to_bf16> {};

template <typename F, typename A>
struct ConvRealTraits {
    typedef A Acc;
    static __device__ __forceinline__ Acc load(F v) { return v; }
    static __device__ __forceinline__ F store(Acc a) { return a; }
    static __device__ __forceinline__ Acc zero() { return F(0); }
};
template <> struct Traits<float> : ConvRealTraits<float, CONV_ACC_float32> {};
template <> struct Traits<double> : ConvRealTraits<double, CONV_ACC_float64> {};

template <typename F, typename A>
struct ConvComplexTraits {
    typedef A Acc;
    static __device__ __forceinline__ Acc load(conv_complex<F> v) { return v; }
    static __device__ __forceinline__ conv_complex<F> store(Acc a) { return a; }
    static __device__ __forceinline__ Acc zero() {
        Acc z;
        z.re = F(0);
        z.im = F(0);
        return z;
    }
};

template <> struct Traits<conv_complex<float> >
    : ConvComplexTraits<float, CONV_ACC_complex64> {};
template <> struct Traits<conv_complex<double> >
    : ConvComplexTraits<double, CONV_ACC_complex128> {};

// Integers: exact sums in 64 bits; the cast back keeps the low bits (two's-complement wrap).
template <typename I, typename A>
struct ConvIntTraits {
    typedef A Acc;
    static __device__ __forceinline__ Acc load(I v) { return (long long)v; }
    static __device__ __forceinline__ I store(Acc a) { return (I)(unsigned long long)a; }
    static __device__ __forceinline__ Acc zero() { return 0; }
};
template <> struct Traits<signed char> : ConvIntTraits<signed char, CONV_ACC_int8> {};
template <> struct Traits<short> : ConvIntTraits<short, CONV_ACC_int16> {};
template <> struct Traits<int> : ConvIntTraits<int, CONV_ACC_int32> {};
template <> struct Traits<long long> : ConvIntTraits<long long, CONV_ACC_int64> {};
template <> struct Traits<unsigned char> : ConvIntTraits<unsigned char, CONV_ACC_uint8> {};

// ---------------------------------------------------------------------------------------------
// Padding by index arithmetic (no padded copy). `i` is a coordinate of the unpadded input that may
// lie in the padding, i in [-pad_lo, size + pad_hi); returns the input coordinate it reads, in
// [0, size), or -1 for a zero. ConvSpec guarantees one reflection/wrap is enough:
// reflect: pad < size; circular: pad <= size.
__device__ __forceinline__ long long conv_src_index(long long i, long long size, long long mode) {
    if (i >= 0 && i < size) return i;
    if (mode == CONV_PAD_REFLECT) return i < 0 ? -i : 2 * (size - 1) - i;   // edge not repeated
    if (mode == CONV_PAD_REPLICATE) return i < 0 ? 0 : size - 1;
    if (mode == CONV_PAD_CIRCULAR) return i < 0 ? i + size : i - size;
    return -1;                                                                // zeros
}
