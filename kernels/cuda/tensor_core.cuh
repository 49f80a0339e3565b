// tensor_core.cuh: device wrappers of the tensor-core and async-copy PTX instructions (sm_80+)
// that the implicit-GEMM kernels use: mma.sync (TF32, f16, bf16 into f32), ldmatrix, cp.async
// with its groups, and cvt.rna.tf32.f32 with the 3xTF32 split built on it.
//
// Who computes what: every wrapper is one inline-PTX `asm volatile` statement, so the CPU
// emulator's loader (conv/emulator/__init__.py) rewrites it into the emulated instruction of
// conv/emulator/cuda_emulator.h, which documents each one's semantics and the PTX ISA section it
// follows. mma.sync and ldmatrix are warp-collective: all 32 lanes of a warp call them together,
// each lane holding its part of the fragments (layouts below, and in cuda_emulator.h).
// cp.async is per thread: a copy issued by a thread is complete for that thread after its
// conv_cp_async_wait<N> / conv_cp_async_wait_all, and for the other threads of the block after a
// __syncthreads that follows the wait.
//
// Fragment layouts (PTX ISA 8.x, "Matrix Fragments for mma.m16n8k8" and "... mma.m16n8k16 with
// floating point type"), with g = lane / 4 and t = lane % 4; (row, col) of A (16 x K), B (K x 8),
// C/D (16 x 8):
//   m16n8k8 tf32:  a[0] (g, t)  a[1] (g+8, t)  a[2] (g, t+4)  a[3] (g+8, t+4);  b[0] (t, g)
//                  b[1] (t+4, g)
//   m16n8k16 f16/bf16 (two 16-bit elements per register, column 2t or row 2t in bits 0-15):
//                  a[0] (g, 2t..2t+1)  a[1] (g+8, 2t..2t+1)  a[2] (g, 2t+8..2t+9)
//                  a[3] (g+8, 2t+8..2t+9);  b[0] (2t..2t+1, g)  b[1] (2t+8..2t+9, g)
//   C and D:       c[0] (g, 2t)  c[1] (g, 2t+1)  c[2] (g+8, 2t)  c[3] (g+8, 2t+1)
// ldmatrix .x4 of a 16 x 16 row-major tile (lanes 0-15 the rows of columns 0-7, lanes 16-31 the
// rows of columns 8-15) gives exactly a[0..3] of m16n8k16; b[0..1] come from .x2 of an 8 x 16
// n-major tile (row n holding k = 0..15; lanes 0-7 at k = 0, lanes 8-15 at k = 8) or from .x2.trans
// of a 16 x 8 k-major one (row k holding n = 0..7; lanes 0-15 rows k = 0..15).
//
// Shared-memory addresses: PTX takes a 32-bit address in the shared window; in the emulator shared
// memory is host memory, so the address is the pointer's 64-bit value (conv_smem_addr_t,
// conv_smem_address). Self-contained on purpose, like common.cuh: no CUDA header is included.
#pragma once

#ifdef CONV_EMULATOR
typedef unsigned long long conv_smem_addr_t;    // a host pointer's bits (cuda_emulator.h)
#else
typedef unsigned int conv_smem_addr_t;          // an address in the .shared window
#endif

// The address PTX's .shared operands take for a pointer into block-shared memory.
__device__ __forceinline__ conv_smem_addr_t conv_smem_address(const void *shared_ptr) {
#ifdef CONV_EMULATOR
    return (conv_smem_addr_t)shared_ptr;
#else
    return (conv_smem_addr_t)__cvta_generic_to_shared(shared_ptr);
#endif
}

// ---------------------------------------------------------------------------------------------
// mma.sync: D = A B + C over one 16 x 8 tile, per warp (fragments as in the header).

// A and B in TF32 bit patterns (.b32: only the top 19 bits are read; round them with
// conv_cvt_rna_tf32 first, else the hardware truncates), C and D in float32. d may alias c.
__device__ __forceinline__ void conv_mma_m16n8k8_tf32(float (&d)[4], const unsigned (&a)[4],
                                                      const unsigned (&b)[2],
                                                      const float (&c)[4]) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]),
          "f"(c[1]), "f"(c[2]), "f"(c[3]));
}

// A and B as pairs of float16 bit patterns per register, C and D in float32.
__device__ __forceinline__ void conv_mma_m16n8k16_f16(float (&d)[4], const unsigned (&a)[4],
                                                      const unsigned (&b)[2],
                                                      const float (&c)[4]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]),
          "f"(c[1]), "f"(c[2]), "f"(c[3]));
}

// A and B as pairs of bfloat16 bit patterns per register, C and D in float32.
__device__ __forceinline__ void conv_mma_m16n8k16_bf16(float (&d)[4], const unsigned (&a)[4],
                                                       const unsigned (&b)[2],
                                                       const float (&c)[4]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]),
          "f"(c[1]), "f"(c[2]), "f"(c[3]));
}

// ---------------------------------------------------------------------------------------------
// ldmatrix: 1, 2 or 4 8x8 matrices of 16-bit elements from shared memory, per warp. row: this
// lane's row address (16-byte aligned; lane 8i + r gives row r of matrix i; lanes past 8 x count
// are not read). Lane l gets in d[i] row l/4, elements 2(l%4), 2(l%4)+1 of matrix i (.trans: of
// its transpose).

__device__ __forceinline__ void conv_ldmatrix_x1(unsigned (&d)[1], conv_smem_addr_t row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n"
                 : "=r"(d[0])
                 : "r"(row));
}

__device__ __forceinline__ void conv_ldmatrix_x2(unsigned (&d)[2], conv_smem_addr_t row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(d[0]), "=r"(d[1])
                 : "r"(row));
}

__device__ __forceinline__ void conv_ldmatrix_x4(unsigned (&d)[4], conv_smem_addr_t row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
                 : "r"(row));
}

__device__ __forceinline__ void conv_ldmatrix_x1_trans(unsigned (&d)[1], conv_smem_addr_t row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n"
                 : "=r"(d[0])
                 : "r"(row));
}

__device__ __forceinline__ void conv_ldmatrix_x2_trans(unsigned (&d)[2], conv_smem_addr_t row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(d[0]), "=r"(d[1])
                 : "r"(row));
}

__device__ __forceinline__ void conv_ldmatrix_x4_trans(unsigned (&d)[4], conv_smem_addr_t row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
                 : "r"(row));
}

// ---------------------------------------------------------------------------------------------
// cp.async: global -> shared copies of BYTES (4, 8, 16; .cg: 16) bytes, both addresses aligned to
// BYTES. The _zfill forms read only src_bytes (0..BYTES) and zero the rest of the destination: a
// padding tap or an out-of-bounds row passes src_bytes = 0 (src is then not read, but must still
// be an aligned address: pass the tensor's base). "memory" clobbers: the compiler must not move
// shared-memory accesses across an issue or a wait.

template <int BYTES>
__device__ __forceinline__ void conv_cp_async_ca(conv_smem_addr_t dst, const void *src) {
    static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async copies 4, 8 or 16 bytes");
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(dst), "l"(src), "n"(BYTES)
                 : "memory");
}

template <int BYTES>
__device__ __forceinline__ void conv_cp_async_ca_zfill(conv_smem_addr_t dst, const void *src,
                                                       int src_bytes) {
    static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async copies 4, 8 or 16 bytes");
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(dst), "l"(src),
                 "n"(BYTES), "r"(src_bytes)
                 : "memory");
}

// .cg: cached in L2 only (the operand tiles of a GEMM are read once per block from L1's view).
__device__ __forceinline__ void conv_cp_async_cg(conv_smem_addr_t dst, const void *src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
}

__device__ __forceinline__ void conv_cp_async_cg_zfill(conv_smem_addr_t dst, const void *src,
                                                       int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(src_bytes)
                 : "memory");
}

// Close this thread's copies issued since the last commit into one cp.async-group.
__device__ __forceinline__ void conv_cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

// Wait until at most PENDING of this thread's most recent groups are still in flight.
template <int PENDING>
__device__ __forceinline__ void conv_cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(PENDING) : "memory");
}

// Commit and wait for everything this thread issued.
__device__ __forceinline__ void conv_cp_async_wait_all() {
    asm volatile("cp.async.wait_all;\n" ::: "memory");
}

// ---------------------------------------------------------------------------------------------
// TF32 conversion

// x rounded to TF32 (nearest, ties away from zero), as a .b32 with its low 13 bits zero.
__device__ __forceinline__ unsigned conv_cvt_rna_tf32(float x) {
    unsigned t;
    asm volatile("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(t) : "f"(x));
    return t;
}

// 3xTF32: x ~ big + small with big = tf32(x) and small = tf32(x - big), so that
// a*b ~ big_a*big_b + big_a*small_b + small_a*big_b recovers nearly float32 accuracy from three
// TF32 products (small*small is below float32's last bit and dropped). x - big is exact in
// float32 (both share x's exponent range), so only the second rounding loses anything.
__device__ __forceinline__ void conv_tf32_split(float x, unsigned &big, unsigned &small) {
    big = conv_cvt_rna_tf32(x);
    small = conv_cvt_rna_tf32(x - __uint_as_float(big));
}
