"""numba-parallel direct convolution on the host (algorithm "direct", version 0, the only one).

One task per output plane (n, k), plane in [0, N*K).

The padded input xp (N, C, Hp, Wp) arrives split into its stride phases (PhaseLayout)
    phases[n, c, phase(a, b), i, j] = xp[n, c, i*stride_h + a, j*stride_w + b]
(for stride 1 that is xp itself). Tap (r, s) reads input row p*stride_h + r*dil_h =
(p + i0)*stride_h + a with a = (r*dil_h) % stride_h, i0 = (r*dil_h) // stride_h (and likewise
b, j0 for columns), so in phase (a, b) output (p, q) reads element (p + i0, q + j0): a stride-1
access. On the "wide" grid of P rows of Wph columns, output (p, q) and its input sit at flat offsets
p*Wph + q and p*Wph + q + (i0*Wph + j0), so each (channel, tap) is ONE unit-stride axpy of length
L = (P-1)*Wph + Q, which LLVM vectorises; the extra Wph - Q columns of each row are cropped at the
end. The last element read, (P-1+i0)*Wph + Q-1+j0, stays inside the phase plane.
"""
from __future__ import annotations

import numba
import numpy as np

from ..._spec import ConvSpec
from ..._threads import serialised_if_needed
from ..._workspace import ScratchBuffers
from .layout import fill_planes, phase_layout


@numba.njit(inline="always", boundscheck=False)
def _output_plane(src, channel_len, tap_offset, w, kk, out_plane, wph, acc):
    """out_plane (P, Q) = sum over channels c and taps t of w[kk, c, t] * the run of the phases
    src[c*channel_len + tap_offset[t] + p*wph + q], in bands of output rows whose accumulator
    (acc, band*wph elements, about 16 KiB) stays in L1."""
    p_out, q_out = out_plane.shape
    cg, s_taps = w.shape[1], w.shape[3]
    taps = w.shape[2] * s_taps
    band = acc.shape[0] // wph
    for p0 in range(0, p_out, band):
        rows = min(band, p_out - p0)
        length = (rows - 1) * wph + q_out
        acc[:length] = 0
        for c in range(cg):
            for t in range(taps):
                wv = w[kk, c, t // s_taps, t % s_taps]
                off = c * channel_len + tap_offset[t] + p0 * wph
                # Slices first, then a plain range loop: indices numba knows are non-negative,
                # so no wraparound checks and the loop vectorises.
                run = src[off:off + length]
                dst = acc[:length]
                for i in range(length):
                    dst[i] += wv * run[i]
        for p in range(rows):
            row = acc[p * wph:p * wph + q_out]
            out_row = out_plane[p0 + p]
            for q in range(q_out):
                out_row[q] = row[q]


@numba.njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def _direct_conv2d(phases, tap_offset, w, out, groups):
    n, k, p_out, q_out = out.shape
    n_phases, hph, wph = phases.shape[2], phases.shape[3], phases.shape[4]
    kg = k // groups
    cg = w.shape[1]
    channel_len = n_phases * hph * wph
    band = max(1, min(p_out, 4096 // wph))
    for plane in numba.prange(n * k):            # plane in [0, N*K)
        img = plane // k
        kk = plane % k
        c0 = (kk // kg) * cg                      # first input channel of kk's group
        group = phases[img, c0:c0 + cg].reshape(cg * channel_len)
        _output_plane(group, channel_len, tap_offset, w, kk, out[img, kk], wph,
                      np.empty(band * wph, dtype=out.dtype))


@numba.njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def _direct_conv2d_exclusive(x, tap_offset, w, out, row_phases, col_phases, stride_h, stride_w,
                            top, left, hph, wph, n_blocks):
    """_direct_conv2d when every output plane has its input channels to itself (one output
    channel per group: depthwise): each task splits its own channels' planes of the unpadded
    x (N, C, H, W) into phases in a task-local buffer, zero padding as borders, so the copy runs
    in parallel and stays in cache instead of a serial whole-input copy before the loops."""
    n, k, p_out, q_out = out.shape
    cg = w.shape[1]
    plane_len = row_phases.shape[0] * col_phases.shape[0] * hph * wph
    band = max(1, min(p_out, 4096 // wph))
    # Blocks of planes per task: the two buffers are allocated once per block, not per plane
    # (hundreds of small depthwise planes made the allocations a third of the time).
    per_block = (n * k + n_blocks - 1) // n_blocks
    for block in numba.prange(n_blocks):
        buf = np.empty(cg * plane_len, dtype=out.dtype)
        acc = np.empty(band * wph, dtype=out.dtype)
        for plane in range(block * per_block, min(n * k, (block + 1) * per_block)):
            img = plane // k
            kk = plane % k
            fill_planes(x, img, kk * cg, cg, buf, row_phases, col_phases, stride_h, stride_w, top,
                        left, hph, wph)
            _output_plane(buf, plane_len, tap_offset, w, kk, out[img, kk], wph, acc)


# Called from Python (direct_conv below): serialised where the threading layer needs it (_threads).
direct_conv2d = serialised_if_needed(_direct_conv2d)
direct_conv2d_exclusive = serialised_if_needed(_direct_conv2d_exclusive)


def direct_conv(x4: np.ndarray, w: np.ndarray, out: np.ndarray, spec: ConvSpec,
                scratch: ScratchBuffers) -> None:
    """out (N, K, P, Q), compute dtype, = the conv of x4 (N, C, H, W) by w, no bias."""
    layout = phase_layout(spec)
    w = np.ascontiguousarray(w)
    if spec.k_per_group == 1:
        # Each output plane reads channels no other plane reads: phase-split them per task.
        x4, top, left = layout.source(x4)
        direct_conv2d_exclusive(x4.astype(out.dtype, copy=False), layout.taps, w, out,
                                layout.row_phase_array, layout.col_phase_array, *spec.stride,
                                top, left, layout.hph, layout.wph,
                                min(spec.n * spec.k, 8 * numba.get_num_threads()))
        return
    phases = scratch.get("phases", layout.shape, out.dtype)
    layout.fill(x4, phases)
    direct_conv2d(phases, layout.taps, w, out, spec.groups)
