// cuda_emulator.h: the CUDA subset our kernels use, for g++ on the CPU (conv/emulator/__init__.py
// force-includes this before the very text CuPy compiles, conv/backend/cupy/sources.py).
//
// Who runs what: a launch runs its blocks one after another; the threads of a block are ucontext
// fibers on one OS thread. A thread runs until it reaches __syncthreads() (or __syncwarp()) or
// returns; then the scheduler runs the next ready thread, in the launch's schedule order
// (forward, reverse, or shuffled anew at every barrier), so results that depend on the order of
// threads between barriers differ between schedules. A barrier releases once every thread of the
// block (of the warp, for __syncwarp) that has not returned waits at it; threads that wait at
// barriers no other thread can reach are reported as a deadlock.
//
// Built-ins: threadIdx, blockIdx, blockDim, gridDim, warpSize; __syncthreads, __syncwarp,
// __shfl_sync (a warp rendezvous: every lane deposits, every lane reads). __shared__ arrays are
// block-shared storage that the loader's rewrite of each declaration asks for
// (conv_emu_shared_slot): allocated per block, filled with 0xFF bytes at the block's start (NaN
// for floating point, -1 for integers) so a read before any write shows, and one heap allocation
// each, so AddressSanitizer sees an access past either end. Inline PTX statements are rewritten by
// the loader into calls of the conv_emu_ptx_* functions below, each with the PTX ISA's semantics.
//
// Limits refused as cuLaunchKernel refuses them: block dimensions (1024, 1024, 64; 1024 threads),
// grid dimensions (2^31 - 1, 65535, 65535), 48 KiB of static shared memory per block.
// Kernel parameters: pointers and 64-bit integers (the loader checks), passed as 64-bit words.
#pragma once

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
static size_t shared_bytes = 0;
static int sites = 0;

// __shfl_sync's exchange slots, one per thread.
static uint64_t shfl_slot[kMaxThreads];

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
    }
    shared_bytes = 0;
}

inline void run_block(int schedule, uint64_t &rng) {
    static int order[kMaxThreads];
    for (int i = 0; i < nthreads; ++i) {
        getcontext(&fibers[i]);
        fibers[i].uc_stack.ss_sp = stacks + (size_t)i * kStack;
        fibers[i].uc_stack.ss_size = kStack;
        fibers[i].uc_link = &scheduler;
        makecontext(&fibers[i], (void (*)())fiber_main, 0);
        state[i] = READY;
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
        for (int w0 = 0; w0 < nthreads; w0 += 32) {
            int w1 = w0 + 32 < nthreads ? w0 + 32 : nthreads;
            bool warp_ready = true, any = false;
            for (int i = w0; i < w1; ++i) {
                if (state[i] == AT_WARP_BARRIER) any = true;
                else if (state[i] != DONE) warp_ready = false;
            }
            if (any && warp_ready)
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
inline void *conv_emu_shared_slot(int &site, size_t bytes) {
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
        shared_ptr[site] = malloc(bytes);
        memset(shared_ptr[site], 0xFF, bytes);   // poison: a read before a write shows
        shared_bytes += bytes;
    }
    return shared_ptr[site];
}

#define CONV_EMU_SHARED(T, NAME, DIMS)                                                          \
    typedef T conv_emu_shared_##NAME##_t DIMS;                                                  \
    static int conv_emu_site_##NAME = -1;                                                       \
    conv_emu_shared_##NAME##_t &NAME = *static_cast<conv_emu_shared_##NAME##_t *>(              \
        conv_emu_shared_slot(conv_emu_site_##NAME, sizeof(conv_emu_shared_##NAME##_t)))

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
