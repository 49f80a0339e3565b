// cuda_emulator.h: the CUDA subset our kernels use, for g++ on the CPU (conv/emulator/__init__.py
// force-includes this before the very text CuPy compiles, conv/backend/cupy/sources.py).
//
// Who runs what: a launch runs its blocks one after another; the threads of a block are ucontext
// fibers on one OS thread. A thread runs until it reaches __syncthreads() (or __syncwarp()) or
// returns; then the scheduler runs the next ready thread, in the launch's schedule order
// (forward, reverse, or shuffled anew at every barrier), so results that depend on the order of
// threads between barriers differ between schedules. A barrier releases once every thread of the
// block (of the warp, for __syncwarp) that has not returned waits at it; threads that wait at
// barriers no other thread can reach are reported as a deadlock. Warps released from warp
// barriers (and so from warp collectives): all together under the forward schedule, one at a time
// under the others (the last ready warp for reverse; for shuffled the warp released before while
// it is ready, else a random one), which lets one warp run ahead of the rest up to the next
// __syncthreads, as warps do on a GPU.
//
// Built-ins: threadIdx, blockIdx, blockDim, gridDim, warpSize; __syncthreads, __syncwarp,
// __shfl_sync (a warp rendezvous: every lane deposits, every lane reads); __float_as_uint,
// __uint_as_float; __align__(n). __shared__ arrays (with __align__(n): aligned so) are
// block-shared storage that the loader's rewrite of each declaration asks for
// (conv_emu_shared_slot): allocated per block, filled with 0xFF bytes at the block's start (NaN
// for floating point, -1 for integers) so a read before any write shows, and one heap allocation
// each, so AddressSanitizer sees an access past either end. Inline PTX statements are rewritten by
// the loader into calls of the conv_emu_ptx_* functions below, each with the PTX ISA's semantics.
// CONV_EMULATOR is defined (1) so that a source can tell the emulator from a GPU compile where it
// must (kernels/cuda/tensor_core.cuh: shared-memory addresses are host pointers here).
//
// Tensor-core and async-copy PTX (what kernels/cuda/tensor_core.cuh wraps):
// - mma.sync and ldmatrix are warp collectives, rendezvous as __shfl_sync is: every lane deposits
//   its operands (fragments, row addresses), the warp meets at a __syncwarp, each lane computes
//   its own result from everything gathered, and the warp meets again before any lane may reuse
//   the slots. The warp must be complete (32 threads, none returned) and every lane must be at
//   the same instruction (a per-lane count of collectives entered): otherwise the launch fails.
// - cp.async copies are recorded per thread at issue and done at cp.async.wait_group /
//   cp.async.wait_all (or when the thread returns); until then the destination keeps whatever it
//   held (the 0xFF poison of a fresh block), also across __syncthreads, as on a GPU where the
//   copy may still be in flight.
//
// Limits refused as cuLaunchKernel refuses them: block dimensions (1024, 1024, 64; 1024 threads),
// grid dimensions (2^31 - 1, 65535, 65535), 48 KiB of static shared memory per block.
// Kernel parameters: pointers and 64-bit integers (the loader checks), passed as 64-bit words.
#pragma once

#define CONV_EMULATOR 1

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ucontext.h>

#ifdef CONV_EMU_ASAN
#include <sanitizer/common_interface_defs.h>
#endif

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

struct conv_emu_uint3 {
    unsigned int x, y, z;
};

static conv_emu_uint3 threadIdx, blockIdx, blockDim, gridDim;
static const int warpSize = 32;

// ---------------------------------------------------------------------------------------------
// Fibers and the scheduler

namespace conv_emu {

enum State { READY, AT_BARRIER, AT_WARP_BARRIER, DONE };
const int kMaxThreads = 1024;
const int kMaxArgs = 48;
const size_t kStack = 256 * 1024;
const size_t kMaxShared = 48 * 1024;

typedef void (*Kernel)(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t,
                       uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t,
                       uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t,
                       uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t,
                       uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t,
                       uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t,
                       uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t);

static ucontext_t scheduler;
static ucontext_t fibers[kMaxThreads];
static State state[kMaxThreads];
static conv_emu_uint3 tid[kMaxThreads];
static char *stacks = nullptr;
static int nthreads = 0;
static int current = -1;
static Kernel kernel;
static uint64_t args[kMaxArgs];
static char error[512];
static bool failed = false;

// Block-shared memory: one allocation per __shared__ declaration site, per block.
const int kMaxSites = 64;
static void *shared_ptr[kMaxSites];
static size_t shared_size[kMaxSites];     // bytes of each site's allocation (address checks)
static size_t shared_bytes = 0;
static int sites = 0;

// __shfl_sync's exchange slots, one per thread.
static uint64_t shfl_slot[kMaxThreads];

// Warp collectives (mma.sync, ldmatrix): each lane's deposited operands, and per lane the number
// of collectives it has entered in this block and the last one's name (all lanes of a warp must
// agree on both when they meet).
const int kCollectiveWords = 6;
static uint64_t collective_slot[kMaxThreads][kCollectiveWords];
static uint64_t collective_count[kMaxThreads];
static const char *collective_name[kMaxThreads];

// cp.async copies a thread has issued and not yet completed, in issue order; group: the number of
// the cp.async-group commit_group closed it into, or -1 while not committed. groups_committed:
// the groups the thread has committed in this block (numbers 0, 1, ...).
struct PendingCopy {
    char *dst;
    const char *src;
    int cp_size, src_size, group;
};
const int kMaxPendingCopies = 64;
static PendingCopy pending_copy[kMaxThreads][kMaxPendingCopies];
static int pending_copies[kMaxThreads];
static int groups_committed[kMaxThreads];
inline void complete_copies(int thread, int below_group, bool uncommitted_too);

#ifdef CONV_EMU_ASAN
// AddressSanitizer follows the stack switches (its fiber API): each context keeps its fake stack.
static void *sched_fake = nullptr;
static void *fiber_fake[kMaxThreads];
static const void *sched_bottom = nullptr;
static size_t sched_size = 0;
#endif

inline void fail(const char *what) {
    if (!failed) {
        failed = true;
        snprintf(error, sizeof error, "%s", what);
    }
}

// The scheduler runs fiber i until it yields or returns.
inline void resume(int i) {
    current = i;
#ifdef CONV_EMU_ASAN
    __sanitizer_start_switch_fiber(&sched_fake, stacks + (size_t)i * kStack, kStack);
#endif
    swapcontext(&scheduler, &fibers[i]);
#ifdef CONV_EMU_ASAN
    __sanitizer_finish_switch_fiber(sched_fake, nullptr, nullptr);
#endif
}

// A fiber gives the processor back to the scheduler (at a barrier).
inline void yield_to_scheduler() {
    int me = current;
#ifdef CONV_EMU_ASAN
    __sanitizer_start_switch_fiber(&fiber_fake[me], sched_bottom, sched_size);
#endif
    swapcontext(&fibers[me], &scheduler);
#ifdef CONV_EMU_ASAN
    __sanitizer_finish_switch_fiber(fiber_fake[me], &sched_bottom, &sched_size);
#endif
    threadIdx = tid[me];        // resumed: this fiber's thread again
}

inline void fiber_main() {
    int me = current;
#ifdef CONV_EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &sched_bottom, &sched_size);   // arrived, first time
#endif
    threadIdx = tid[me];
    const uint64_t *a = args;
    kernel(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13],
           a[14], a[15], a[16], a[17], a[18], a[19], a[20], a[21], a[22], a[23], a[24], a[25],
           a[26], a[27], a[28], a[29], a[30], a[31], a[32], a[33], a[34], a[35], a[36], a[37],
           a[38], a[39], a[40], a[41], a[42], a[43], a[44], a[45], a[46], a[47]);
    // cp.async copies the thread never waited for complete now: on a GPU they land at some
    // unknown time after issue, so this is one of the legal outcomes. Threads of the block still
    // running may then see the data without having waited: a race on a GPU too, not a guarantee
    // (a kernel must wait, then __syncthreads, before others read).
    complete_copies(me, 0x7fffffff, true);
    state[me] = DONE;
#ifdef CONV_EMU_ASAN
    __sanitizer_start_switch_fiber(nullptr, sched_bottom, sched_size);   // this stack is done
#endif
    // Returning resumes uc_link, the scheduler.
}

inline uint64_t next_random(uint64_t &s) {   // xorshift64*
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 2685821657736338717ULL;
}

// Order in which the scheduler visits the threads in the next pass.
inline void make_order(int *order, int schedule, uint64_t &rng) {
    for (int i = 0; i < nthreads; ++i) order[i] = schedule == 1 ? nthreads - 1 - i : i;
    if (schedule == 2)
        for (int i = nthreads - 1; i > 0; --i) {
            int j = (int)(next_random(rng) % (uint64_t)(i + 1));
            int t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
}

inline void free_shared() {
    for (int i = 0; i < kMaxSites; ++i) {
        free(shared_ptr[i]);
        shared_ptr[i] = nullptr;
        shared_size[i] = 0;
    }
    shared_bytes = 0;
}

inline void run_block(int schedule, uint64_t &rng) {
    static int order[kMaxThreads];
    int n_passes = 0;
    for (int i = 0; i < nthreads; ++i) {
        getcontext(&fibers[i]);
        fibers[i].uc_stack.ss_sp = stacks + (size_t)i * kStack;
        fibers[i].uc_stack.ss_size = kStack;
        fibers[i].uc_link = &scheduler;
        makecontext(&fibers[i], (void (*)())fiber_main, 0);
        state[i] = READY;
        collective_count[i] = 0;
        collective_name[i] = nullptr;
        pending_copies[i] = 0;      // a failed launch may have left some: they are dropped
        groups_committed[i] = 0;
    }
    for (;;) {
        make_order(order, schedule, rng);
        for (int k = 0; k < nthreads && !failed; ++k) {
            int i = order[k];
            if (state[i] != READY) continue;
            resume(i);
        }
        if (failed) return;
        // Release every barrier all its (not returned) threads wait at.
        int waiting = 0, released = 0;
        bool block_ready = true;
        for (int i = 0; i < nthreads; ++i) {
            if (state[i] == AT_WARP_BARRIER || state[i] == READY) block_ready = false;
            if (state[i] != DONE) ++waiting;
        }
        if (!waiting) return;
        if (block_ready) {
            for (int i = 0; i < nthreads; ++i)
                if (state[i] == AT_BARRIER) state[i] = READY;
            continue;
        }
        // The warps whose every (not returned) thread waits at a warp barrier. The forward
        // schedule releases all of them, so warps advance together from one warp barrier (or
        // collective) to the next; the reverse schedule releases only the last of them and the
        // shuffled one a random one, so that warp runs ahead of the others up to the next block
        // barrier: a kernel that lacks a __syncthreads between one warp's shared-memory stores
        // and another's reads (or the reverse) then reads poison or overwritten data.
        static int ready_warps[kMaxThreads / 32];
        static int favoured_warp;
        if (!n_passes++) favoured_warp = -1;
        int n_ready = 0;
        for (int w0 = 0; w0 < nthreads; w0 += 32) {
            int w1 = w0 + 32 < nthreads ? w0 + 32 : nthreads;
            bool warp_ready = true, any = false;
            for (int i = w0; i < w1; ++i) {
                if (state[i] == AT_WARP_BARRIER) any = true;
                else if (state[i] != DONE) warp_ready = false;
            }
            if (any && warp_ready) ready_warps[n_ready++] = w0;
        }
        int first = 0, last = n_ready;
        if (n_ready && schedule == 1) {
            first = n_ready - 1;
        } else if (n_ready && schedule == 2) {
            // The warp released last goes on while it can (up to a block barrier or its end);
            // otherwise a random ready warp takes over.
            first = -1;
            for (int r = 0; r < n_ready; ++r)
                if (ready_warps[r] == favoured_warp) first = r;
            if (first < 0) first = (int)(next_random(rng) % (uint64_t)n_ready);
            favoured_warp = ready_warps[first];
            last = first + 1;
        }
        for (int r = first; r < last; ++r) {
            int w0 = ready_warps[r], w1 = w0 + 32 < nthreads ? w0 + 32 : nthreads;
            for (int i = w0; i < w1; ++i)
                if (state[i] == AT_WARP_BARRIER) {
                    state[i] = READY;
                    ++released;
                }
        }
        if (!released) {
            fail("deadlock: threads wait at barriers the other threads of their block or warp "
                 "never reach");
            return;
        }
    }
}

}  // namespace conv_emu

// ---------------------------------------------------------------------------------------------
// Built-in functions

inline void __syncthreads() {
    conv_emu::state[conv_emu::current] = conv_emu::AT_BARRIER;
    conv_emu::yield_to_scheduler();
}

inline void __syncwarp(unsigned int mask = 0xffffffffu) {
    (void)mask;     // every lane of the warp takes part (all our uses pass the full mask)
    conv_emu::state[conv_emu::current] = conv_emu::AT_WARP_BARRIER;
    conv_emu::yield_to_scheduler();
}

template <typename T>
inline T __shfl_sync(unsigned int mask, T value, int src_lane, int width = 32) {
    static_assert(sizeof(T) <= 8, "__shfl_sync moves at most 8 bytes");
    const int me = conv_emu::current;
    uint64_t bits = 0;
    memcpy(&bits, &value, sizeof(T));
    conv_emu::shfl_slot[me] = bits;
    __syncwarp(mask);                           // every lane has deposited
    const int lane = me % 32, base = me - lane + (lane / width) * width;
    const int src = base + ((src_lane % width) + width) % width;
    T out;
    bits = conv_emu::shfl_slot[src < conv_emu::nthreads ? src : me];
    memcpy(&out, &bits, sizeof(T));
    __syncwarp(mask);                           // every lane has read
    return out;
}

// Block-shared storage of one __shared__ declaration (site: its number, assigned on first use).
inline void *conv_emu_shared_slot(int &site, size_t bytes, size_t align = 16) {
    using namespace conv_emu;
    if (site < 0) {
        if (sites == kMaxSites) {
            fail("more __shared__ declarations than the emulator has slots for");
            return nullptr;
        }
        site = sites++;
    }
    if (!shared_ptr[site]) {
        if (shared_bytes + bytes > kMaxShared) {
            fail("CUDA_ERROR_INVALID_VALUE: the block uses more than 48 KiB of static shared "
                 "memory");
            static char spare[kMaxShared];
            return spare;
        }
        // posix_memalign, not a rounded-up size: AddressSanitizer still sees the first byte past
        // the declared array. 16 bytes at least, as malloc gives (a GPU aligns shared arrays to
        // their element type; the emulator never aligns less than that).
        void *p = nullptr;
        if (posix_memalign(&p, align < 16 ? 16 : align, bytes ? bytes : 1)) {
            fail("could not allocate block-shared memory");
            static char spare[kMaxShared];
            return spare;
        }
        shared_ptr[site] = p;
        memset(shared_ptr[site], 0xFF, bytes);   // poison: a read before a write shows
        shared_size[site] = bytes;
        shared_bytes += bytes;
    }
    return shared_ptr[site];
}

#define CONV_EMU_SHARED(T, NAME, DIMS)                                                          \
    typedef T conv_emu_shared_##NAME##_t DIMS;                                                  \
    static int conv_emu_site_##NAME = -1;                                                       \
    conv_emu_shared_##NAME##_t &NAME = *static_cast<conv_emu_shared_##NAME##_t *>(              \
        conv_emu_shared_slot(conv_emu_site_##NAME, sizeof(conv_emu_shared_##NAME##_t)))

// `__shared__ __align__(ALIGN) T NAME DIMS;` (the loader's rewrite keeps the alignment).
#define CONV_EMU_SHARED_ALIGNED(T, NAME, DIMS, ALIGN)                                           \
    typedef T conv_emu_shared_##NAME##_t DIMS;                                                  \
    static int conv_emu_site_##NAME = -1;                                                       \
    conv_emu_shared_##NAME##_t &NAME = *static_cast<conv_emu_shared_##NAME##_t *>(              \
        conv_emu_shared_slot(conv_emu_site_##NAME, sizeof(conv_emu_shared_##NAME##_t), ALIGN))

// __float_as_uint / __uint_as_float: the bits of a float as an unsigned and back.
inline unsigned int __float_as_uint(float x) {
    unsigned int u;
    memcpy(&u, &x, 4);
    return u;
}

inline float __uint_as_float(unsigned int u) {
    float x;
    memcpy(&x, &u, 4);
    return x;
}

// ---------------------------------------------------------------------------------------------
// PTX instructions (PTX ISA semantics)

// cvt.f32.f16 d, a: float16 bits to float32, exact (subnormals kept).
inline void conv_emu_ptx_cvt_f32_f16(float &d, unsigned short a) {
    const uint32_t sign = (uint32_t)(a & 0x8000u) << 16;
    uint32_t exp = (a >> 10) & 0x1fu, man = a & 0x3ffu, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);               // inf, nan (payload kept,
                                                               // signalling bit too)
    } else if (exp) {
        bits = sign | ((exp + 112) << 23) | (man << 13);       // normal: rebias 15 -> 127
    } else if (!man) {
        bits = sign;                                           // +-0
    } else {                                                   // subnormal: normalise
        int e = -1;
        do {
            man <<= 1;
            ++e;
        } while (!(man & 0x400u));
        bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ffu) << 13);
    }
    memcpy(&d, &bits, 4);
}

// cvt.rn.f16.f32 d, a: float32 to float16 bits, round to nearest even; overflow to inf; NaN
// to the canonical NaN 0x7fff.
inline void conv_emu_ptx_cvt_rn_f16_f32(unsigned short &d, float a) {
    uint32_t x;
    memcpy(&x, &a, 4);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) {
        d = 0x7fff;
        return;
    }
    if (ax >= 0x477ff000u) {                    // rounds to >= 65520: inf (and inf itself)
        d = sign | 0x7c00u;
        return;
    }
    if (ax < 0x38800000u) {                     // below 2^-14: float16 subnormal or zero
        if (ax < 0x33000000u) {                 // below 2^-25: rounds to zero (ties to even 0)
            d = sign;
            return;
        }
        // value = M * 2^(e - 150), M the 24-bit significand; in units of float16's smallest
        // subnormal 2^-24 that is M * 2^(e - 126): drop 126 - e (>= 14, < 25) bits, rounding.
        const uint32_t e = ax >> 23, man = (ax & 0x7fffffu) | 0x800000u;
        const int drop = 126 - (int)e;
        uint32_t kept = man >> drop;
        const uint32_t rest = man & ((1u << drop) - 1), halfway = 1u << (drop - 1);
        if (rest > halfway || (rest == halfway && (kept & 1u))) ++kept;
        d = sign | (uint16_t)kept;              // kept == 0x400 is the smallest normal: right
        return;
    }
    uint32_t h = ((ax >> 13) - (112u << 10));   // rebias 127 -> 15, keep 10 mantissa bits
    const uint32_t rest = ax & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;   // carries into the exponent
    d = sign | (uint16_t)h;
}

// cvt.rna.tf32.f32 d, a: float32 to TF32 (1 sign, 8 exponent, 10 mantissa bits) kept in a .b32
// with its low 13 bits zero, rounding to nearest with ties away from zero (PTX ISA, "cvt"). The
// bits are sign-magnitude, so adding half a TF32 unit in the last place (bit 12) to the magnitude
// and truncating rounds half away from zero; a carry into the exponent is right (1.11...1 x 2^e
// rounds up to 2^(e+1); the largest finite floats round to infinity, as round-to-nearest
// overflows). Inf stays Inf. NaN stays a NaN: its sign and top payload bits, the quiet bit set
// (truncating a payload held only in the low 13 bits would turn it into Inf); the PTX ISA does
// not say which NaN bits the hardware returns, so tests compare NaN-ness only.
inline void conv_emu_ptx_cvt_rna_tf32_f32(uint32_t &d, float a) {
    uint32_t x;
    memcpy(&x, &a, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        d = (x & 0xffffe000u) | 0x00400000u;
    else if ((x & 0x7fffffffu) == 0x7f800000u)
        d = x;
    else
        d = (x + 0x1000u) & 0xffffe000u;
}

// ---------------------------------------------------------------------------------------------
// Warp collectives: the rendezvous mma.sync and ldmatrix share (see the header).

namespace conv_emu {

inline void instruction_fail(const char *insn, const char *why, int thread) {
    char message[256];
    snprintf(message, sizeof message, "%s: %s (thread %d, warp %d)", insn, why, thread,
             thread / 32);
    fail(message);
}

// Deposit is done by the caller after this returns true; false: the launch has failed.
inline bool collective_enter(const char *insn) {
    const int me = current, w0 = me - me % 32;
    if (w0 + 32 > nthreads) {
        instruction_fail(insn, "a warp collective needs all 32 lanes, and this warp is partial "
                               "(blockDim is not a multiple of 32)", me);
        return false;
    }
    ++collective_count[me];
    collective_name[me] = insn;
    return !failed;
}

// Every lane has deposited: check that the whole warp is at this very instruction.
inline bool collective_gathered(const char *insn) {
    __syncwarp();
    const int me = current, w0 = me - me % 32;
    for (int i = w0; i < w0 + 32; ++i)
        if (state[i] == DONE || collective_count[i] != collective_count[me] ||
            !collective_name[i] || strcmp(collective_name[i], insn) != 0) {
            instruction_fail(insn, "not every lane of the warp executes this instruction with "
                                   "it (.sync.aligned: a lane returned, diverged, or is at "
                                   "another collective)", me);
            return false;
        }
    return !failed;
}

// Every lane has read what it needs from the slots: they may be overwritten again.
inline void collective_leave() { __syncwarp(); }

// The allocation of block-shared memory holding [p, p + bytes), or -1.
inline int shared_site_of(const char *p, size_t bytes) {
    for (int i = 0; i < sites; ++i) {
        const char *base = static_cast<const char *>(shared_ptr[i]);
        if (base && p >= base && p + bytes <= base + shared_size[i]) return i;
    }
    return -1;
}

}  // namespace conv_emu

// mma.sync.aligned.m16n8k{8,16}.row.col.f32.{tf32,f16,bf16}.{...}.f32 d, a, b, c: D = A B + C for
// a 16 x K A (row-major fragments), a K x 8 B (column-major fragments) and 16 x 8 C/D in f32.
// Fragment layouts: PTX ISA 8.x, "Matrix Fragments for mma.m16n8k8" (.tf32) and "Matrix
// Fragments for mma.m16n8k16 with floating point type" (.f16/.bf16), in "Warp Level Matrix
// Multiply-Accumulate Instructions". With g = laneid >> 2 (groupID) and t = laneid % 4
// (threadID_in_group):
//   m16n8k8 .tf32   A: a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4)
//                   B: b0 (t, g), b1 (t+4, g)
//   m16n8k16 .f16/.bf16, two elements per .b32, the lower-numbered one in bits 0-15:
//                   A: a0,a1 (g, 2t..2t+1)   a2,a3 (g+8, 2t..2t+1)
//                      a4,a5 (g, 2t+8..2t+9) a6,a7 (g+8, 2t+8..2t+9)
//                   B: b0,b1 (2t..2t+1, g)   b2,b3 (2t+8..2t+9, g)
//   C and D (both):    c0 (g, 2t), c1 (g, 2t+1), c2 (g+8, 2t), c3 (g+8, 2t+1)
// Arithmetic: every product of two TF32, f16 or bf16 values is exact in float32 (at most 11 x 11
// significand bits); each D element is c, then + A[r][k] * B[k][n] for k = 0, 1, ..., K-1, each
// sum rounded to float32 (round to nearest even). The hardware's order and internal precision are
// unspecified (it may sum several products before rounding): expect differences in the last bits
// of D on a GPU, none where every partial sum is exact (small integers). TF32 operands: the
// hardware reads only the top 19 bits of each .b32 (sign, 8 exponent, 10 mantissa bits), so the
// emulator zeroes the low 13 bits, the truncation the hardware applies to an fp32 bit pattern that
// was not rounded with cvt.rna.tf32.f32 first. Subnormal inputs and sums are kept (no flush).
namespace conv_emu {

enum MmaKind { MMA_TF32, MMA_F16, MMA_BF16 };

inline float mma_half_value(uint32_t bits16, MmaKind kind) {
    float f;
    if (kind == MMA_BF16) {
        const uint32_t u = bits16 << 16;
        memcpy(&f, &u, 4);
    } else {
        conv_emu_ptx_cvt_f32_f16(f, (unsigned short)bits16);
    }
    return f;
}

inline float mma_tf32_value(uint32_t bits) {
    const uint32_t u = bits & 0xffffe000u;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// The deposits of one warp's 32 lanes, indexed by lane.
typedef const uint64_t (*WarpSlots)[kCollectiveWords];

// Element (row, k) of A and (k, col) of B from the gathered fragments, per the layouts above
// (slots 0-3: a0..a3, slots 4-5: b0, b1).
inline float mma_a(WarpSlots warp, int row, int k, MmaKind kind) {
    const int g = row % 8, hi_row = row / 8;
    if (kind == MMA_TF32) {
        const int lane = g * 4 + k % 4, reg = hi_row + 2 * (k / 4);
        return mma_tf32_value((uint32_t)warp[lane][reg]);
    }
    const int kk = k % 8, lane = g * 4 + kk / 2, reg = hi_row + 2 * (k / 8);
    const uint32_t word = (uint32_t)warp[lane][reg];
    return mma_half_value(kk % 2 ? word >> 16 : word & 0xffffu, kind);
}

inline float mma_b(WarpSlots warp, int k, int col, MmaKind kind) {
    if (kind == MMA_TF32) {
        const int lane = col * 4 + k % 4, reg = 4 + k / 4;
        return mma_tf32_value((uint32_t)warp[lane][reg]);
    }
    const int kk = k % 8, lane = col * 4 + kk / 2, reg = 4 + k / 8;
    const uint32_t word = (uint32_t)warp[lane][reg];
    return mma_half_value(kk % 2 ? word >> 16 : word & 0xffffu, kind);
}

inline void mma_m16n8(const char *insn, MmaKind kind, float &d0, float &d1, float &d2, float &d3,
                      uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                      uint32_t b1, float c0, float c1, float c2, float c3) {
    const int me = current;
    if (!collective_enter(insn)) return;
    const uint32_t regs[6] = {a0, a1, a2, a3, b0, b1};
    for (int i = 0; i < 6; ++i) collective_slot[me][i] = regs[i];
    if (!collective_gathered(insn)) return;
    const int lane = me % 32, g = lane >> 2, t = lane % 4;
    WarpSlots warp = &collective_slot[me - lane];
    const int K = kind == MMA_TF32 ? 8 : 16;
    const float c[4] = {c0, c1, c2, c3};
    float d[4];
    for (int i = 0; i < 4; ++i) {
        const int row = g + 8 * (i / 2), col = 2 * t + i % 2;
        float acc = c[i];
        for (int k = 0; k < K; ++k) acc += mma_a(warp, row, k, kind) * mma_b(warp, k, col, kind);
        d[i] = acc;
    }
    collective_leave();
    d0 = d[0];
    d1 = d[1];
    d2 = d[2];
    d3 = d[3];
}

}  // namespace conv_emu


inline void conv_emu_ptx_mma_m16n8k8_tf32(float &d0, float &d1, float &d2, float &d3, uint32_t a0,
                                          uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                          uint32_t b1, float c0, float c1, float c2, float c3) {
    conv_emu::mma_m16n8("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32", conv_emu::MMA_TF32,
                        d0, d1, d2, d3, a0, a1, a2, a3, b0, b1, c0, c1, c2, c3);
}

inline void conv_emu_ptx_mma_m16n8k16_f16(float &d0, float &d1, float &d2, float &d3, uint32_t a0,
                                          uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                          uint32_t b1, float c0, float c1, float c2, float c3) {
    conv_emu::mma_m16n8("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32", conv_emu::MMA_F16,
                        d0, d1, d2, d3, a0, a1, a2, a3, b0, b1, c0, c1, c2, c3);
}

inline void conv_emu_ptx_mma_m16n8k16_bf16(float &d0, float &d1, float &d2, float &d3,
                                           uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                           uint32_t b0, uint32_t b1, float c0, float c1, float c2,
                                           float c3) {
    conv_emu::mma_m16n8("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32", conv_emu::MMA_BF16,
                        d0, d1, d2, d3, a0, a1, a2, a3, b0, b1, c0, c1, c2, c3);
}

// ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{.trans}.shared.b16 d, [p]: a warp loads 1, 2 or 4 8x8
// matrices of 16-bit elements from shared memory (PTX ISA 8.x, "ldmatrix", in "Warp-level matrix
// load instruction"). Lanes 8i..8i+7 supply the addresses of rows 0..7 of matrix i (lanes 0-7 for
// .x1, 0-15 for .x2, 0-31 for .x4; the other lanes' addresses are not read); each row is 16 bytes,
// its address 16-byte aligned ("a group of four consecutive threads loads 16 bytes. The matrix
// addresses must be naturally aligned accordingly"). Lane l receives in register d_i the 32-bit
// fragment of matrix i at row l / 4, elements 2(l % 4) and 2(l % 4) + 1 (the lower-numbered in
// bits 0-15), which is the A/B fragment layout of mma.m16n8k16 above. .trans: the matrix is read
// column-major, so lane l receives elements (2(l % 4), l / 4) and (2(l % 4) + 1, l / 4) of the
// matrix as stored. The emulator refuses a row address that is not 16-byte aligned or whose 16
// bytes are not inside one __shared__ array (the GPU's behaviour there is undefined).
namespace conv_emu {

inline void ldmatrix(const char *insn, int count, bool trans, uint32_t *d, uint64_t address) {
    const int me = current, lane = me % 32;
    if (!collective_enter(insn)) return;
    collective_slot[me][0] = address;
    if (lane < 8 * count) {
        const char *row = reinterpret_cast<const char *>(address);
        if (address % 16) {
            instruction_fail(insn, "a row address is not 16-byte aligned", me);
            return;
        }
        if (shared_site_of(row, 16) < 0) {
            instruction_fail(insn, "a row address is not inside a __shared__ array (16 bytes "
                                   "from it)", me);
            return;
        }
    }
    if (!collective_gathered(insn)) return;
    WarpSlots warp = &collective_slot[me - lane];
    const int g = lane >> 2, t = lane % 4;
    for (int i = 0; i < count; ++i) {
        uint16_t lo, hi;
        if (!trans) {           // row g, elements 2t, 2t+1
            const char *row = reinterpret_cast<const char *>(warp[8 * i + g][0]);
            memcpy(&lo, row + 4 * t, 2);
            memcpy(&hi, row + 4 * t + 2, 2);
        } else {                // rows 2t, 2t+1, element g
            const char *row0 = reinterpret_cast<const char *>(warp[8 * i + 2 * t][0]);
            const char *row1 = reinterpret_cast<const char *>(warp[8 * i + 2 * t + 1][0]);
            memcpy(&lo, row0 + 2 * g, 2);
            memcpy(&hi, row1 + 2 * g, 2);
        }
        d[i] = (uint32_t)lo | ((uint32_t)hi << 16);
    }
    collective_leave();
}

}  // namespace conv_emu

inline void conv_emu_ptx_ldmatrix_x1(uint32_t &d0, uint64_t p) {
    uint32_t d[1] = {};
    conv_emu::ldmatrix("ldmatrix.sync.aligned.m8n8.x1.shared.b16", 1, false, d, p);
    d0 = d[0];
}

inline void conv_emu_ptx_ldmatrix_x2(uint32_t &d0, uint32_t &d1, uint64_t p) {
    uint32_t d[2] = {};
    conv_emu::ldmatrix("ldmatrix.sync.aligned.m8n8.x2.shared.b16", 2, false, d, p);
    d0 = d[0];
    d1 = d[1];
}

inline void conv_emu_ptx_ldmatrix_x4(uint32_t &d0, uint32_t &d1, uint32_t &d2, uint32_t &d3,
                                     uint64_t p) {
    uint32_t d[4] = {};
    conv_emu::ldmatrix("ldmatrix.sync.aligned.m8n8.x4.shared.b16", 4, false, d, p);
    d0 = d[0];
    d1 = d[1];
    d2 = d[2];
    d3 = d[3];
}

inline void conv_emu_ptx_ldmatrix_x1_trans(uint32_t &d0, uint64_t p) {
    uint32_t d[1] = {};
    conv_emu::ldmatrix("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16", 1, true, d, p);
    d0 = d[0];
}

inline void conv_emu_ptx_ldmatrix_x2_trans(uint32_t &d0, uint32_t &d1, uint64_t p) {
    uint32_t d[2] = {};
    conv_emu::ldmatrix("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16", 2, true, d, p);
    d0 = d[0];
    d1 = d[1];
}

inline void conv_emu_ptx_ldmatrix_x4_trans(uint32_t &d0, uint32_t &d1, uint32_t &d2, uint32_t &d3,
                                           uint64_t p) {
    uint32_t d[4] = {};
    conv_emu::ldmatrix("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16", 4, true, d, p);
    d0 = d[0];
    d1 = d[1];
    d2 = d[2];
    d3 = d[3];
}

// cp.async.{ca,cg}.shared.global [dst], [src], cp-size{, src-size}: copy cp-size bytes (4, 8 or
// 16; .cg: 16 only) from global src to shared dst, asynchronously (PTX ISA 8.x, "cp.async", in
// "Data Movement and Conversion Instructions: Asynchronous copy"). With src-size < cp-size only
// src-size bytes are read and the rest of dst is filled with zeros; src-size 0 reads nothing, so
// src may then point anywhere (the emulator does not touch it). src-size > cp-size is undefined:
// refused. Both addresses must be aligned to cp-size (refused otherwise); dst must lie inside a
// __shared__ array (refused otherwise); src is read when the copy completes (AddressSanitizer sees
// an out-of-bounds read there). .ca and .cg differ in caching only: the same here.
// cp.async.commit_group closes the thread's copies not yet in a group into a new cp.async-group
// (possibly empty); cp.async.wait_group N completes every group but the N most recently committed
// (copies not committed are not waited for); cp.async.wait_all is commit_group + wait_group 0
// ("cp.async.wait_group", "cp.async.wait_all"). Completion is per thread: another thread sees the
// data after the waiting thread's __syncthreads, as on a GPU.
namespace conv_emu {

inline void complete_copy(const PendingCopy &c) {
    if (c.src_size) memcpy(c.dst, c.src, (size_t)c.src_size);
    if (c.src_size < c.cp_size) memset(c.dst + c.src_size, 0, (size_t)(c.cp_size - c.src_size));
}

// Complete, in issue order, the thread's copies of groups numbered below `below_group` (and the
// uncommitted ones with uncommitted_too); the others stay pending, in order.
inline void complete_copies(int thread, int below_group, bool uncommitted_too) {
    int kept = 0;
    for (int i = 0; i < pending_copies[thread]; ++i) {
        const PendingCopy &c = pending_copy[thread][i];
        if (c.group < 0 ? uncommitted_too : c.group < below_group)
            complete_copy(c);
        else
            pending_copy[thread][kept++] = c;
    }
    pending_copies[thread] = kept;
}

inline void cp_async(const char *insn, uint64_t dst, const void *src, int cp_size, int src_size) {
    const int me = current;
    char why[160];
    if (cp_size != 4 && cp_size != 8 && cp_size != 16) {
        snprintf(why, sizeof why, "cp-size %d (it is 4, 8 or 16)", cp_size);
    } else if (src_size < 0 || src_size > cp_size) {
        snprintf(why, sizeof why, "src-size %d outside [0, cp-size %d]", src_size, cp_size);
    } else if (dst % (uint64_t)cp_size || reinterpret_cast<uintptr_t>(src) % (uintptr_t)cp_size) {
        snprintf(why, sizeof why, "an address not aligned to cp-size %d (dst %% %d = %d, src %% %d "
                 "= %d)", cp_size, cp_size, (int)(dst % (uint64_t)cp_size), cp_size,
                 (int)(reinterpret_cast<uintptr_t>(src) % (uintptr_t)cp_size));
    } else if (shared_site_of(reinterpret_cast<const char *>(dst), (size_t)cp_size) < 0) {
        snprintf(why, sizeof why, "dst is not inside a __shared__ array (%d bytes from it)",
                 cp_size);
    } else if (pending_copies[me] == kMaxPendingCopies) {
        snprintf(why, sizeof why, "more than %d copies pending in one thread (the emulator's "
                 "limit)", kMaxPendingCopies);
    } else {
        PendingCopy &c = pending_copy[me][pending_copies[me]++];
        c.dst = reinterpret_cast<char *>(dst);
        c.src = static_cast<const char *>(src);
        c.cp_size = cp_size;
        c.src_size = src_size;
        c.group = -1;
        return;
    }
    instruction_fail(insn, why, me);
}

}  // namespace conv_emu

inline void conv_emu_ptx_cp_async_ca(uint64_t dst, const void *src, int cp_size) {
    conv_emu::cp_async("cp.async.ca.shared.global", dst, src, cp_size, cp_size);
}

inline void conv_emu_ptx_cp_async_ca(uint64_t dst, const void *src, int cp_size, int src_size) {
    conv_emu::cp_async("cp.async.ca.shared.global", dst, src, cp_size, src_size);
}

inline void conv_emu_ptx_cp_async_cg(uint64_t dst, const void *src, int cp_size) {
    if (cp_size != 16)
        conv_emu::instruction_fail("cp.async.cg.shared.global", "cp-size is 16 only with .cg",
                                   conv_emu::current);
    else
        conv_emu::cp_async("cp.async.cg.shared.global", dst, src, cp_size, cp_size);
}

inline void conv_emu_ptx_cp_async_cg(uint64_t dst, const void *src, int cp_size, int src_size) {
    if (cp_size != 16)
        conv_emu::instruction_fail("cp.async.cg.shared.global", "cp-size is 16 only with .cg",
                                   conv_emu::current);
    else
        conv_emu::cp_async("cp.async.cg.shared.global", dst, src, cp_size, src_size);
}

inline void conv_emu_ptx_cp_async_commit_group() {
    using namespace conv_emu;
    const int me = current;
    for (int i = 0; i < pending_copies[me]; ++i)
        if (pending_copy[me][i].group < 0) pending_copy[me][i].group = groups_committed[me];
    ++groups_committed[me];
}

inline void conv_emu_ptx_cp_async_wait_group(int n) {
    using namespace conv_emu;
    if (n < 0) {
        instruction_fail("cp.async.wait_group", "a negative group count", current);
        return;
    }
    complete_copies(current, groups_committed[current] - n, false);
}

inline void conv_emu_ptx_cp_async_wait_all() {
    conv_emu_ptx_cp_async_commit_group();
    conv_emu_ptx_cp_async_wait_group(0);
}

// ---------------------------------------------------------------------------------------------
// The launch entry point the loader calls through ctypes

extern "C" int conv_emu_launch(void *fn, const unsigned int *grid, const unsigned int *block,
                               const uint64_t *launch_args, int nargs, int schedule,
                               unsigned long long seed, char *message, int message_len) {
    using namespace conv_emu;
    failed = false;
    error[0] = 0;
    const unsigned long long threads = (unsigned long long)block[0] * block[1] * block[2];
    if (!block[0] || !block[1] || !block[2] || !grid[0] || !grid[1] || !grid[2])
        fail("CUDA_ERROR_INVALID_VALUE: a grid or block dimension is 0");
    else if (block[0] > 1024 || block[1] > 1024 || block[2] > 64 || threads > 1024)
        fail("CUDA_ERROR_INVALID_VALUE: block dimensions exceed (1024, 1024, 64) or 1024 threads");
    else if (grid[0] > 2147483647u || grid[1] > 65535 || grid[2] > 65535)
        fail("CUDA_ERROR_INVALID_VALUE: grid dimensions exceed (2^31 - 1, 65535, 65535)");
    else if (nargs > kMaxArgs)
        fail("more kernel parameters than the emulator passes");
    if (!failed) {
        kernel = (Kernel)fn;
        memset(args, 0, sizeof args);
        memcpy(args, launch_args, sizeof(uint64_t) * (size_t)nargs);
        nthreads = (int)threads;
        if (!stacks) stacks = (char *)malloc(kStack * kMaxThreads);
        blockDim = {block[0], block[1], block[2]};
        gridDim = {grid[0], grid[1], grid[2]};
        for (int i = 0; i < nthreads; ++i)
            tid[i] = {(unsigned)(i % block[0]), (unsigned)((i / block[0]) % block[1]),
                      (unsigned)(i / (block[0] * block[1]))};
        uint64_t rng = seed * 0x9E3779B97F4A7C15ULL + 1;
        for (unsigned z = 0; z < grid[2] && !failed; ++z)
            for (unsigned y = 0; y < grid[1] && !failed; ++y)
                for (unsigned x = 0; x < grid[0] && !failed; ++x) {
                    blockIdx = {x, y, z};
                    run_block(schedule, rng);
                    free_shared();
                }
        free_shared();
    }
    if (failed) snprintf(message, (size_t)message_len, "%s", error);
    return failed ? 1 : 0;
}
