"""Winograd minimal filtering on the host (algorithm "winograd", version 0, the only one): Lavin &
Gray 2016, "Fast Algorithms for Convolutional Neural Networks", for stride-1, dilation-1 3x3
conv2d (F(4x4,3x3) and F(2x2,3x3)) and 3-tap conv1d (F(4,3) and F(2,3)); a dilated one runs as
its dilation phases (below).

Dilation (`_phase_groups`, `_dilated_conv`): with dilation (dh, dw) and stride 1, the outputs
out[:, :, a::dh, b::dw] read only the source's elements [e_r::dh, e_c::dw] (e_r = (a - top) mod
dh, likewise e_c), at dilation 1: each phase is an undilated 3x3 (3-tap) conv of that sub-grid
with its own zero padding (the input's 'zeros' padding by index arithmetic, the other modes
from the padded copy). Phases of equal geometry (all of them where d divides the sizes, else at
most two sizes per axis) are stacked as images and run as one undilated call, whose U is the
same for every phase (the weights' cache); phases reading only padding are zero. The phases are
copied once into their stack (a pass over the input) and their outputs scattered back (a pass
over the output): a timing script (2-core Zen 4, float32) measured 64 x 56 x 56 -> 64 at
dilation 2 in 0.82-0.85 ms against the implicit GEMM's 1.30, 128 x 28 x 28 at dilation 4 1.28
against 1.51, and 2 x 32 x 56 x 56 -> 32 at dilation 2 0.73-0.89 against 0.59-0.76 (the copies
cost what the fewer multiplies save there); the dispatch table decides.

Map. The output is cut into tiles of m x m outputs (conv1d: 1 x m), m = 4 or 2, on a grid of
TH x TW = ceil(P/m) x ceil(Q/m) tiles per image; tile (th, tw) reads the alpha x alpha patch
(alpha = m + 2) of the padded input at rows th*m .., columns tw*m ... Per batch of tiles (a box of
images x tile rows x tile columns, sized under the workspace cap; t = the tile's index in it):
    V[e, c, t] = (B^T d B)[e]          the input transform of channel c's patch, e in [0, alpha^2)
    M[e, k, t] = U[e, k, :] @ V[e, g]  one GEMM per transform point e (and group g):
                                       (Kg x Cg) @ (Cg x T), `_point_gemms` (below)
    out tile   = A^T M A               the output transform; only outputs p < P, q < Q are written
U[e, k, c] = (G g G^T)[e] is the weight transform, made in float64 (the Kronecker product G (x) G
times the taps, `_weight_transform_kernel`, numba-parallel over blocks of filters) and rounded
once into the compute dtype, or taken from the cache (Memory); conv1d uses the
1-D transforms along the columns only (e in [0, alpha)). The matrices are Lavin's, points
0, +-1, +-2 (m = 4) and 0, +-1 (m = 2), plus infinity.

GEMM: `_point_gemms` runs implicit.py's LLVM register-tiled micro-kernel (MR output channels x
NR columns) over V's panels, numba-parallel over (point, group, column block, panel block):
numpy's batched matmul on OpenBLAS was 5-100x slower per call on the shared 2-core machine (its
threads spin against numba's; a timing script while writing this, not the benchmark runner);
blocks of output channels and depthwise groups still use numpy (matmul / a broadcast product).

Who computes what: `_input_transform` are numba-parallel over (block of channels, image,
tile row) of the batch (about TRANSFORM_TASKS tasks: one per channel cost a microsecond each of
task overhead, as much as the work on 7-28-pixel layers). Per channel a task gathers the band of
alpha padded rows its row of tiles reads, once (neighbouring patches overlap), through the row
and column index maps (the padding, of every mode, is never materialised: a map holds the input
row or column each padded coordinate reads, -1 for a zero), applies B^T down every column of
the band in float64, then B along each tile's rows, and stores the alpha^2 values into V's
point-major planes (each GEMM then reads contiguous [Cg x T] panels).
`_output_transform` are parallel over (block of output channels, image, tile row): A
along each tile's rows of M, A^T down the columns, and the valid outputs straight into
out[n, k, p, q]. The bias is added by the caller.

Layout and loop order: V (alpha^2, C, T) and M (alpha^2, K, T), point-major, so that each point's
GEMM is one contiguous BLAS call with a wide N = T (a whole batch of tiles over all its images);
U (alpha^2, K, Cg). When U would not fit the cap, the output channels run in blocks (the input
transform is then repeated per block).

Tile size (`tile_size`): F(4x4) does 36 multiplies per 16 outputs (2.25 per output against
direct's 9), F(2x2) 16 per 4 (4 per output), but F(4x4)'s transforms amplify rounding more (see
Accuracy). Measured, F(4x4) stays within 0.17 of the float32 tolerance at every C, so accuracy
never decides: the default plan takes the tile size whose GEMMs do less work counting the
columns padded to whole micro-kernel tiles (points x tiles rounded up to NR), F(4x4) on ties:
F(2x2) where F(4x4) makes too few tiles (batch 1 at 7 x 7: 4 tiles padded to 24 columns);
tests force either through `tile_size`.

Accuracy (scripts/winograd_accuracy.py, fresh standard-normal data, conv2d (1, C, 20, 20) x
(8, C, 3, 3) and conv1d (1, C, 250) x (8, C, 3), padding 1, 2 seeds, max|err| / max|ref| against
the float64 reference, and that as a fraction of the tests' tolerance RTOL[dtype] *
sqrt(Cg*R*S) * max|ref| (tests/_helpers.py; float32: 2e-6):
    float32 F(4x4)  C=3: 1.8e-6 (0.17)  16: 3.8e-6 (0.16)  64: 6.2e-6 (0.13)  256: 1.0e-5 (0.11)
                    512: 1.2e-5 (0.09)
    float32 F(2x2)  at most 8.6e-7, 0.013 of the tolerance; F(4) at most 0.06, F(2) 0.015
    float64         F(4x4) at most 0.008 of the tolerance, F(2x2) 0.001
    float16         at most 0.054 (its output rounding, whatever the tile)
Winograd's error grows like sqrt(C), as the tolerance does (each output is a sum over C of
transformed products), so the ratio stays below 0.2 at every C; F(4x4)'s transforms (entries up
to 8 in A^T, 5 in B^T, 1/24 in G) cost about 5x the other algorithms' 0.03. The transforms are
computed in float64 and rounded once (input and output transforms per element, the weight
transform per filter): only the per-point GEMMs run in the compute dtype. Accepted bound:
ACCEPTED_FRACTION (0.5) of the tests' tolerance in every dtype, asserted in float32 for both tile
sizes by tests/test_cpu_winograd.py (C = 512 and C = 3). Data whose outputs are small next to
the patch's other values get an error relative to the large ones, as with any Winograd or FFT
convolution.

Non-finite values: an inf or nan in a patch would spread through the transforms over its whole
tile (inf - inf = nan where the direct sum has inf). The input transform reads non-finite
elements as zero and flags its task; non-finite weight taps are zeroed before the weight
transform; their products are then added exactly (fft.py's `_add_non_finite_terms`), so inf and
nan appear exactly where the direct sum has them.

Tried and not kept (2026-12-02, the 2-core AVX2 machine, timing scripts and one runner A/B of
the 12 eligible dense cases, noisy): transforms restructured as loops over a task's run of up
to 256 tiles (patch elements gathered into float64 rows, one loop per transformed output),
plus a narrow micro-kernel for each point GEMM's last column tile (1 or 2 vectors instead of
NR padded columns). Bit-identical results; the output transform measured 0.8 -> 0.37 ms and
the 128-channel 28 x 28 GEMMs 1.37 -> 1.03 ms, but the runner's geomean against PyTorch moved
0.572 -> 0.592 (within its noise; the first run was marked unreliable), and the cold numba
compile of this module's float32 kernels went from 19 s to 59 s (CI compiles them cold):
reverted. What was learnt, for the next attempt:
numba wraps a computed signed index (x[p + off]) in a negative-index select that keeps LLVM
from vectorising (a float32 -> float64 copy: 1.5 ns an element against 0.18 through a
slice); each array slice costs about 10 ns; an integer floor division by a run-time m in an
inner helper cost more than the loop it guarded; and inlining straight-line row functions
into parallel kernels multiplies their compile time. The transforms are load/store-bound in
float64 at about 0.4 ns an output; a real gain needs the 6 x 6 patch of 8 tiles transformed
in vector registers (float32 lanes, no intermediate rows), as oneDNN's and NNPACK's do.
That was tried next (the same day): llvmlite intrinsics transforming 8 tiles at once, one per
lane (patch columns picked by shuffles from wide row loads, or read from a band gathered in
column phases), in float64 in the scalar code's order (bitwise the same V and outputs),
partial runs by per-lane stores. Alone, one call of 8 F(4x4) tiles took 95 ns (0.33 ns an
output); inside the transform it took about 750 ns, and the input transform of 64 channels of
56 x 56 stayed at 0.8-1.2 ms: V (36/16 = 2.25 times the input, 1.8 MB here) is written beyond
L2 and the transform is bound by that traffic, not by its arithmetic. Smaller batches (V in
L2: BATCH_BYTES 256 KB - 2 MB) re-read U per batch: mixed and noisy at batch 1 (1 MB faster
on the 128-channel 28 x 28 layer, slower on three others). Reverted as
well. Winograd here needs a fused, cache-blocked pipeline (a block of tiles through input
transform, the 36 GEMMs and output transform while its V and M stay in L2) with U streamed
once per block, and pays at batch sizes where U's traffic is shared by many tiles.
That pipeline was then tried (2026-12-02, git branch wip/winograd-fused): one task per run of NR
tiles (and block of output-channel panels) transforming its tiles of every channel into its own V,
running the 36 point GEMMs on the micro-kernel into its own M and transforming those out; bitwise
the same outputs. Timing scripts, not the runner: on 64 channels of 56 x 56 (batch 1) its GEMMs took
0.52 ms (123 GFLOP/s, against implicit's whole 2.6 ms), but its scalar float64 transforms 2.0 ms
(input) and 0.9 ms (output), about 190 ns per tile and channel and not vectorised (numba's computed
signed indices again): 3.3 to 3.6 ms a call in different runs, as the batched path; cold compile 10
-> 23 s. A second version (the input laid out once as a padded grid, unsigned indices, the run's
tiles innermost) brought the transforms to 0.62 + 0.61 ms, the whole call to 1.15x implicit on that
layer but 0.61-0.94x on 128-256 channels and on 2 x 32 channels of 56 x 56 (where the kernel took
1.6 ms of a 2.5 ms call). Not merged: it pays once the transforms run in float32 lanes, 8 tiles per
vector, and the call's Python is cut.

Channels-last pipeline (winograd_lanes.py, its docstring): for convs without groups in
float32/float64 whose U fits the cap, V, M and U are laid out channels last and the transforms
run in SIMD lanes across channels, in the compute dtype (float32 for float32: at most 0.19 of the
tests' tolerance against the 0.17 above, winograd_lanes.py's "Precision"), and where U is small
one fused kernel runs the whole conv; 1.6-2.2x faster than the implicit GEMM on ResNet-50's 64- and
128-channel 3x3 layers in a timing script. `LANES` and `FUSED` (the knobs tests turn) force the
point-major pipeline described above, or the channels-last one's batches.

Memory (`workspace`, chunks.py's estimate): the compute-dtype (contiguous) copy of the input
where the input is not one already, U (plus the cached copy of the weights it is kept with), per
batch V and M (ScratchBuffers, kept between calls), and each task's float64 buffers (a band of
one row of tiles; NUMBA_NUM_THREADS of them, at most that many are alive). Between calls each
thread keeps its last U with the weights it was made from (when both fit CACHE_SHARE of the
cap); a caller mutating the weights in place gets a fresh U (the weights are compared, as
fft.py does with its spectrum).
"""
from __future__ import annotations

import dataclasses
import functools
import threading
from dataclasses import dataclass

import numba
import numpy as np

from ..._dtypes import accumulator_dtype as compute_dtype
from ..._padding import padded_copy, source_index
from ..._spec import ConvSpec
from ..._threads import serialised_if_needed
from ..._workspace import ScratchBuffers
from .fft import _batch_box  # the same tiles-per-batch box
from . import winograd_lanes
from .implicit import MR, _tile, tile_columns

# The largest batch of tiles (bytes of V and M together; also at most a quarter of the cap):
# wider batches make each point's GEMM wider, but past this V and M leave the caches.
BATCH_BYTES = 8 << 20
# Filters per task of the weight transform (its float64 staging: taps x FILTER_BLOCK).
FILTER_BLOCK = 64
# U and the copy of the weights it was made from are kept between calls when together they fit
# this share of the cap (a quarter kept 512-channel layers' 26 MB from the cache, and their
# weight transform took 30 ms of a 45 ms call).
CACHE_SHARE = 1 / 2
# The channels-last pipeline (winograd_lanes.py) where it applies: the knob tests turn off to
# run the point-major one on the same specs; its dtypes.
LANES = True
# Its fused kernel (one parallel kernel for the whole conv, U read by every task) where U is at
# most FUSED_U_BYTES: measured (winograd_lanes.py, "Fused") faster than the batches up to U of
# 2.4 MB, level at 9.4 MB, slower at 16.7 MB. FUSED: the knob tests turn to run the batches.
FUSED = True
FUSED_U_BYTES = 8 << 20
_LANE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# The error bound accepted for the default plan, as a fraction of the tests' tolerance.
ACCEPTED_FRACTION = 0.5

# --------------------------------------------------------------------------- the transforms
#
# Lavin & Gray's matrices, for correlation y[i] = sum_r d[i + r] g[r] (what conv computes):
#   y = A^T [(G g) * (B^T d)]
# B^T and A^T (small integers) are defined once, in winograd_lanes.py (BT, AT: its intrinsics need
# them as Python numbers); the scalar transforms below are the same rows written out. G, with its
# fractions, is used here only (the weight transform, in float64).

_G = {
    2: np.array([[1, 0, 0],
                 [1 / 2, 1 / 2, 1 / 2],
                 [1 / 2, -1 / 2, 1 / 2],
                 [0, 0, 1]], np.float64),
    4: np.array([[1 / 4, 0, 0],
                 [-1 / 6, -1 / 6, -1 / 6],
                 [-1 / 6, 1 / 6, -1 / 6],
                 [1 / 24, 1 / 12, 1 / 6],
                 [1 / 24, -1 / 12, 1 / 6],
                 [0, 0, 1]], np.float64),
}
# The 1-D transforms as straight-line code on scalars (float64), one function per tile size so
# that each vectorised loop below has no branch on m inside it.

@numba.njit(inline="always", cache=True)
def _bt4(a0, a1, a2, a3, a4, a5):
    """B^T of F(4, 3): the 6 transformed values of 6 inputs."""
    return (4.0 * a0 - 5.0 * a2 + a4, a3 + a4 - 4.0 * (a1 + a2), a4 - a3 + 4.0 * (a1 - a2),
            a4 - a2 + 2.0 * (a3 - a1), a4 - a2 + 2.0 * (a1 - a3), 4.0 * a1 - 5.0 * a3 + a5)


@numba.njit(inline="always", cache=True)
def _bt2(a0, a1, a2, a3):
    """B^T of F(2, 3)."""
    return a0 - a2, a1 + a2, a2 - a1, a1 - a3


@numba.njit(inline="always", cache=True)
def _at4(a0, a1, a2, a3, a4, a5):
    """A^T of F(4, 3): the 4 outputs of 6 transformed values (of the compute dtype), in float64."""
    f0, f5 = np.float64(a0), np.float64(a5)
    s12, d12 = np.float64(a1) + np.float64(a2), np.float64(a1) - np.float64(a2)
    s34, d34 = np.float64(a3) + np.float64(a4), np.float64(a3) - np.float64(a4)
    return f0 + s12 + s34, d12 + 2.0 * d34, s12 + 4.0 * s34, d12 + 8.0 * d34 + f5


@numba.njit(inline="always", cache=True)
def _at2(a0, a1, a2, a3):
    """A^T of F(2, 3), in float64."""
    f1, f2 = np.float64(a1), np.float64(a2)
    return np.float64(a0) + f1 + f2, f1 - f2 - np.float64(a3)


# --------------------------------------------------------------------------- the kernels
#
# Batch coordinates: images [n0, n0 + nb), tile rows [th0, th0 + bh), tile columns
# [tw0, tw0 + bw); tile (n, th, tw) has index t = ((n - n0)*bh + th - th0)*bw + tw - tw0 in
# [0, nb*bh*bw). rows[u] / cols[v]: the input row / column that padded coordinate u / v reads,
# -1 for a zero (zero padding, or past the padded input: only outputs never written read it).
#
# Each task owns one row of tiles (of one channel, one image) and works on whole rows of it:
# band[i, j] is padded row row0 + i, column tw0*m + j of the tiles' patches (the patches of
# neighbouring tiles overlap by 2 columns, so the band holds each element once). Every pass is
# a loop along the band's columns or along the row's tiles, straight-line code in its body, so
# that LLVM vectorises it (loads of stride m are interleaved-group loads).

@numba.njit(inline="always", cache=True)
def _gather_band(x, n, c, rows, row0, cols, col0, band):
    """band[i, j] = padded element (row0 + i, col0 + j) of x[n, c] (0 where padding); returns
    True where one was not finite (then read as 0: winograd_conv adds its terms exactly)."""
    found = False
    for i in range(band.shape[0]):
        src_row = rows[row0 + i]
        if src_row < 0:
            band[i, :] = 0.0
            continue
        bad_row = 0
        for j in range(band.shape[1]):
            src_col = cols[col0 + j]
            value = np.float64(x[n, c, src_row, max(src_col, 0)]) if src_col >= 0 else 0.0
            band[i, j] = value
            bad_row |= value - value != 0.0          # inf or nan: a branch-free or
        if bad_row:
            found = True
            for j in range(band.shape[1]):
                if band[i, j] - band[i, j] != 0.0:
                    band[i, j] = 0.0
    return found


@numba.njit(parallel=True, cache=True, boundscheck=False)
def _input_transform(x, rows, cols, m, two_d, n0, nb, th0, bh, tw0, bw, c_block, v, bad):
    """v[e, c, t] = (B^T d B)[e] of tile t's patch d of channel c (conv1d, two_d False: tile
    rows are output rows, the patch is alpha elements of one input row, v[e, c, t] = (B^T d)[e]);
    bad[task] = True where the task's patches had a non-finite element (read as zero). One task
    per (block of c_block channels, image, tile row), its band buffers reused across its
    channels: B^T down the band's columns (2-D only), then B along each tile's rows. One kernel
    for both ops: each parallel kernel's compile costs seconds of CI's cold start."""
    alpha = m + 2
    band_rows = alpha if two_d else 1
    channels = x.shape[1]
    per_channel = nb * bh
    width = bw * m + 2
    blocks = -(-channels // c_block)
    for task in numba.prange(blocks * per_channel):       # range [0, blocks*nb*bh)
        c_first = task // per_channel * c_block
        image = task % per_channel // bh                   # range [0, nb)
        tile_row = task % bh                               # range [0, bh)
        n = n0 + image
        row0 = (th0 + tile_row) * m if two_d else th0 + tile_row
        t0 = (image * bh + tile_row) * bw
        band = np.empty((band_rows, width), np.float64)
        down = np.empty((band_rows, width), np.float64)    # B^T of each column of the band
        for c in range(c_first, min(channels, c_first + c_block)):
            if _gather_band(x, n, c, rows, row0, cols, tw0 * m, band):
                bad[task] = True
            if not two_d:
                down[0, :] = band[0, :]
            elif m == 4:
                for j in range(width):
                    r = _bt4(band[0, j], band[1, j], band[2, j], band[3, j], band[4, j], band[5, j])
                    for i in range(6):
                        down[i, j] = r[i]
            else:
                for j in range(width):
                    r = _bt2(band[0, j], band[1, j], band[2, j], band[3, j])
                    for i in range(4):
                        down[i, j] = r[i]
            if m == 4:
                for i in range(band_rows):
                    for b in range(bw):
                        j = b * 4
                        r = _bt4(down[i, j], down[i, j + 1], down[i, j + 2], down[i, j + 3],
                                 down[i, j + 4], down[i, j + 5])
                        for e in range(6):
                            v[i * 6 + e, c, t0 + b] = r[e]
            else:
                for i in range(band_rows):
                    for b in range(bw):
                        j = b * 2
                        r = _bt2(down[i, j], down[i, j + 1], down[i, j + 2], down[i, j + 3])
                        for e in range(4):
                            v[i * 4 + e, c, t0 + b] = r[e]


@numba.njit(parallel=True, cache=True, boundscheck=False)
def _output_transform(mm, m, two_d, n0, nb, th0, bh, tw0, bw, k_block, k0, out):
    """out[n, k0 + k, p, q] = (A^T M A) of tile t's mm[:, k, t] (conv1d: A^T M), for its outputs
    p < P, q < Q (out whole, not a slice of channels: one compiled layout). One task per (block
    of k_block output channels, image, tile row): A along each tile's rows of M, then A^T down
    the columns of the row of tiles (2-D only), then the valid rows and columns are copied out."""
    alpha = m + 2
    band_rows = alpha if two_d else 1
    out_rows = m if two_d else 1
    k_count, p_count, q_count = mm.shape[1], out.shape[2], out.shape[3]
    per_channel = nb * bh
    width = bw * m
    blocks = -(-k_count // k_block)
    for task in numba.prange(blocks * per_channel):       # range [0, blocks*nb*bh)
        k_first = task // per_channel * k_block
        image = task % per_channel // bh
        tile_row = task % bh
        n = n0 + image
        p0 = (th0 + tile_row) * m if two_d else th0 + tile_row
        q0 = tw0 * m
        t0 = (image * bh + tile_row) * bw
        across = np.empty((band_rows, width), np.float64)  # M A of each tile, side by side
        result = np.empty((out_rows, width), np.float64)
        for k in range(k_first, min(k_count, k_first + k_block)):
            if m == 4:
                for i in range(band_rows):
                    for b in range(bw):
                        t = t0 + b
                        r = _at4(mm[i * 6, k, t], mm[i * 6 + 1, k, t], mm[i * 6 + 2, k, t],
                                 mm[i * 6 + 3, k, t], mm[i * 6 + 4, k, t], mm[i * 6 + 5, k, t])
                        for jo in range(4):
                            across[i, b * 4 + jo] = r[jo]
            else:
                for i in range(band_rows):
                    for b in range(bw):
                        t = t0 + b
                        r = _at2(mm[i * 4, k, t], mm[i * 4 + 1, k, t], mm[i * 4 + 2, k, t],
                                 mm[i * 4 + 3, k, t])
                        for jo in range(2):
                            across[i, b * 2 + jo] = r[jo]
            if not two_d:
                result[0, :] = across[0, :]
            elif m == 4:
                for j in range(width):
                    r = _at4(across[0, j], across[1, j], across[2, j], across[3, j], across[4, j],
                             across[5, j])
                    for io in range(4):
                        result[io, j] = r[io]
            else:
                for j in range(width):
                    r = _at2(across[0, j], across[1, j], across[2, j], across[3, j])
                    for io in range(2):
                        result[io, j] = r[io]
            for io in range(min(out_rows, p_count - p0)):
                for j in range(min(width, q_count - q0)):
                    out[n, k0 + k, p0 + io, q0 + j] = result[io, j]


@numba.njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def _point_gemms_kernel(u, v, mm, points, groups, cg, kg, t_pad, red_off, nr, panels_per_task,
                        tiles_per_task):
    """mm[e, k, t] = sum_c u[e, k, c] * v[e, g*cg + c, t] for every point e, output channel
    k = g*kg + i, column t < t_pad (a multiple of NR): implicit.py's register-tiled micro-kernel
    (MR output channels x NR columns in vector registers over the whole reduction). u (points,
    K, cg), v (points, C, t_pad), mm (points, K, t_pad), all flat. One task per (point, group,
    block of tiles_per_task nr-column tiles (nr = implicit.tile_columns), block of
    panels_per_task MR-row panels)."""
    k_count, c_count = groups * kg, groups * cg
    n_tiles = t_pad // nr
    n_tile_blocks = (n_tiles + tiles_per_task - 1) // tiles_per_task
    n_panels = (kg + MR - 1) // MR
    n_panel_blocks = (n_panels + panels_per_task - 1) // panels_per_task
    for task in numba.prange(points * groups * n_tile_blocks * n_panel_blocks):
        panel_block = task % n_panel_blocks
        rest = task // n_panel_blocks
        tile_block = rest % n_tile_blocks
        rest //= n_tile_blocks
        g = rest % groups
        e = rest // groups                                  # range [0, points)
        first = panel_block * panels_per_task
        last = min(n_panels, first + panels_per_task)
        for tile in range(tile_block * tiles_per_task,
                          min(n_tiles, (tile_block + 1) * tiles_per_task)):
            j0 = tile * nr
            x_off = (e * c_count + g * cg) * t_pad + j0
            for panel in range(first, last):
                k0 = g * kg + panel * MR
                _tile(min(MR, kg - panel * MR), u, (e * k_count + k0) * cg, cg, v, x_off,
                      red_off, cg, mm, (e * k_count + k0) * t_pad + j0, t_pad)


@numba.njit(parallel=True, cache=True, boundscheck=False)
def _weight_transform_kernel(filters, transform, block, u):
    """u[e, f] = sum_t transform[e, t] * filters[f, t] in float64, rounded once into u's dtype;
    non-finite taps read as 0. One task per block of filters, staged transposed in float64 so
    that every inner loop runs along the filters (vectorised): numpy's matmul on OpenBLAS
    measured 30 to 370 ms for 512 x 512 filters (its threads spin against numba's), this
    kernel a few."""
    points, taps = transform.shape
    count = filters.shape[0]
    for task in numba.prange(-(-count // block)):
        f0 = task * block
        size = min(count, f0 + block) - f0
        staged = np.empty((taps, size), np.float64)
        for f in range(size):
            for t in range(taps):
                value = np.float64(filters[f0 + f, t])
                staged[t, f] = value if value - value == 0.0 else 0.0
        acc = np.empty(size, np.float64)
        for e in range(points):
            acc[:] = 0.0
            for t in range(taps):
                coefficient = transform[e, t]
                if coefficient != 0.0:
                    for f in range(size):
                        acc[f] += coefficient * staged[t, f]
            for f in range(size):
                u[e, f0 + f] = acc[f]


_transform_weights = serialised_if_needed(_weight_transform_kernel)
_transform_input = serialised_if_needed(_input_transform)
_transform_output = serialised_if_needed(_output_transform)
_point_gemms = serialised_if_needed(_point_gemms_kernel)
PANELS = 16             # MR-row panels per GEMM task: its weight rows stay in L1/L2
TILES = 8               # nr-column tiles per GEMM task
# Tasks per transform call: enough to balance the threads; each task costs about a microsecond
# of its own (its band buffers), which measured as much as the transform itself at one task per
# (channel, row of tiles) on 128-512 channels of 7-28 pixels.
TRANSFORM_TASKS = 64


def _channel_block(channels: int, bands: int) -> int:
    """Channels per transform task, for `bands` rows of tiles: about TRANSFORM_TASKS tasks."""
    blocks = max(1, min(channels, TRANSFORM_TASKS // max(1, bands)))
    return -(-channels // blocks)


# --------------------------------------------------------------------------- eligibility and plan

def refusal(spec: ConvSpec) -> ValueError | None:
    """The ValueError a call of spec with algorithm="winograd" raises, or None: Winograd's
    transforms here are those of stride-1 3x3 (conv2d) and 3-tap (conv1d) kernels (a dilated one
    runs as its dilation phases, `_phase_groups`)."""
    kernel_ok = (spec.r, spec.s) == ((3, 3) if spec.op == "conv2d" else (1, 3))
    if kernel_ok and spec.stride == (1, 1):
        return None
    kernel = f"{spec.r}x{spec.s}" if spec.op == "conv2d" else f"{spec.s}"
    stride = spec.stride if spec.op == "conv2d" else spec.stride[1]
    return ValueError(f"cpu algorithm 'winograd' computes only stride-1 convolutions with a 3x3 "
                      f"(conv2d) or 3-tap (conv1d) kernel, at any dilation; this {spec.op} has "
                      f"kernel {kernel}, stride {stride}")


# --------------------------------------------------------------------------- dilation phases

@dataclass(frozen=True)
class _Phase:
    """One dilation phase of a stride-1 conv: the outputs out[:, :, a::dh, b::dw] are the
    undilated conv (zero padding) of the source's elements [e_r::dh, e_c::dw], the first
    `rows` x `cols` of them (none: they read only zero padding)."""
    a: int
    b: int
    e_r: int
    rows: int
    e_c: int
    cols: int


def _phase_axis(outputs: int, size: int, before: int, taps: int, d: int, a: int):
    """Along one axis (outputs, source size, zero padding before it, taps, dilation d): the
    outputs a, a + d, ... read padded elements (i' + t)*d + a, t < taps, which are the source's
    elements e, e + d, ... with `pad` zeros before them. (count, e, pad, used, after): the
    phase's outputs, its first source element, the zeros before and after the `used` source
    elements it reads (used <= 0: none)."""
    count = -(-(outputs - a) // d)
    e = (a - before) % d
    pad = (before - a + e) // d
    available = max(0, -(-(size - e) // d))
    used = min(available, count + taps - 1 - pad)
    return count, e, pad, used, count + taps - 1 - pad - max(used, 0)


@functools.lru_cache(maxsize=256)
def _phase_groups(spec: ConvSpec) -> tuple[tuple[ConvSpec | None, tuple[_Phase, ...]], ...]:
    """The dilation phases of spec (stride 1, dilation (dh, dw)) over its source (the input,
    'zeros' padding or none, or its padded copy for the other modes), grouped by their
    undilated conv: (spec of the group's phases stacked as images, N per phase, or None where
    they read only zeros; its phases). Where d divides the sizes every phase has the same
    geometry: one call for all of them; else at most two sizes per axis."""
    dh, dw = spec.dilation
    zeros = spec.padding_mode == "zeros" or not any(spec.pad)
    top, bottom, left, right = spec.pad
    h, w = (spec.h, spec.w) if zeros else (spec.h + top + bottom, spec.w + left + right)
    before_h, before_w = (top, left) if zeros else (0, 0)
    groups: dict = {}
    for a in range(min(dh, spec.p)):
        count_r, e_r, pad_r, rows, after_r = _phase_axis(spec.p, h, before_h, spec.r, dh, a)
        for b in range(min(dw, spec.q)):
            count_c, e_c, pad_c, cols, after_c = _phase_axis(spec.q, w, before_w, spec.s, dw, b)
            empty = rows <= 0 or cols <= 0
            key = None if empty else (rows, cols, pad_r, after_r, pad_c, after_c, count_r,
                                      count_c)
            groups.setdefault(key, []).append(_Phase(a, b, e_r, rows, e_c, cols))
    out = []
    for key, phases in groups.items():
        sub = None
        if key is not None:
            rows, cols, pad_r, after_r, pad_c, after_c, count_r, count_c = key
            sub = dataclasses.replace(spec, n=spec.n * len(phases), h=rows, w=cols,
                                      dilation=(1, 1), pad=(pad_r, after_r, pad_c, after_c),
                                      padding_mode="zeros", p=count_r, q=count_c,
                                      has_bias=False, batched=True)
        out.append((sub, tuple(phases)))
    return tuple(out)


def _group_bytes(sub: ConvSpec, x_dtype: np.dtype) -> int:
    """What a group holds beside its own plan: its stacked phases (in x_dtype) and its output."""
    return (sub.n * sub.c * sub.h * sub.w * np.dtype(x_dtype).itemsize
            + sub.n * sub.k * sub.p * sub.q * compute_dtype(sub.dtype).itemsize)


def _padded_bytes(spec: ConvSpec, x_dtype: np.dtype) -> int:
    """The padded copy the phases of a non-zero padding mode read."""
    if spec.padding_mode == "zeros" or not any(spec.pad):
        return 0
    top, bottom, left, right = spec.pad
    return spec.n * spec.c * (spec.h + top + bottom) * (spec.w + left + right) * \
        np.dtype(x_dtype).itemsize


def _phase_plans(spec: ConvSpec, x_dtype: np.dtype, limit: int):
    """[(group spec, its plan or None)] and the workspace of the whole dilated call: the padded
    copy, and the largest of each group's plan (its stacked phases are contiguous) with its
    stacked phases and output, each group planned under what that leaves."""
    padded = _padded_bytes(spec, x_dtype)
    plans, most = [], 0
    for sub, _ in _phase_groups(spec):
        if sub is None:
            plans.append((None, None))
            continue
        extra = _group_bytes(sub, x_dtype)
        wp = _plan_of(sub, x_dtype, True, max(0, limit - padded - extra))
        plans.append((sub, wp))
        most = max(most, wp.workspace + extra)
    return plans, padded + most


def _dilated_conv(x4: np.ndarray, w: np.ndarray, out: np.ndarray, spec: ConvSpec,
                  scratch: ScratchBuffers, limit: int) -> None:
    """winograd_conv of a dilated spec: per group of equal phases, one undilated conv of them
    stacked as images, scattered into out[:, :, a::dh, b::dw] (U made once, for the first)."""
    dh, dw = spec.dilation
    src = x4 if spec.padding_mode == "zeros" or not any(spec.pad) else padded_copy(x4, spec)
    padded = _padded_bytes(spec, x4.dtype)
    n = spec.n
    for sub, phases in _phase_groups(spec):
        if sub is None:
            for ph in phases:
                out[:, :, ph.a::dh, ph.b::dw] = 0
            continue
        # (Kept between calls, as V and M: fresh buffers would be page-faulted in each call.)
        stacked = scratch.get("winograd_phases_in", (len(phases), n, sub.c, sub.h, sub.w),
                              x4.dtype)
        for i, ph in enumerate(phases):
            stacked[i] = src[:, :, ph.e_r::dh, ph.e_c::dw][:, :, :ph.rows, :ph.cols]
        result = scratch.get("winograd_phases_out", (sub.n, sub.k, sub.p, sub.q), out.dtype)
        winograd_conv(stacked.reshape(sub.n, sub.c, sub.h, sub.w), w, result, sub, scratch,
                      max(0, limit - padded - _group_bytes(sub, x4.dtype)))
        for i, ph in enumerate(phases):
            out[:, :, ph.a::dh, ph.b::dw] = result[i * n:(i + 1) * n]


def tile_size(spec: ConvSpec) -> int:
    """m, the outputs per tile along each transformed axis (4 or 2) the plan uses for spec: the
    knob tests replace to force a tile size."""
    # F(4x4) stays within a sixth of the float32 tolerance at every measured C (see Accuracy),
    # so accuracy never needs F(2x2); it pays where F(4x4)'s tiles are too few to fill the
    # micro-kernel's columns: the GEMMs' work is points x tiles padded to whole nr-column
    # tiles (and U's bytes, read once per batch, grow with the points too). 512 channels of
    # 7 x 7: F(4x4) 36 x 24 (4 tiles padded), F(2x2) 16 x 24 (16 tiles): measured (roughly,
    # the shared 2-core machine) 45 -> 9 ms a call, with the weight cache.
    two_d = spec.r == 3
    nr = tile_columns(compute_dtype(spec.dtype))

    def work(m: int) -> int:
        tiles = spec.n * (-(-spec.p // m) if two_d else spec.p) * -(-spec.q // m)
        return ((m + 2) ** 2 if two_d else m + 2) * -(-tiles // nr) * nr
    return 2 if work(2) < work(4) else 4


@dataclass(frozen=True)
class WinogradPlan:
    m: int                          # outputs per tile along each transformed axis (2 or 4)
    two_d: bool                     # 3x3 (2-D transforms) or 1x3 (1-D along the columns)
    tiles: tuple[int, int]          # tiles per image (ceil(P/m) or P, ceil(Q/m))
    batch: tuple[int, int, int]     # a batch's box of (images, tile rows, tile columns)
    k_block: int                    # output channels per block of U (K: all at once)
    workspace: int                  # bytes allocated beyond the output
    lanes: bool = False             # the channels-last pipeline (winograd_lanes.py)
    fused: bool = False             # ... in its fused kernel (no batches)

    @property
    def points(self) -> int:
        """Transform points per tile: alpha^2 (2-D) or alpha (1-D)."""
        alpha = self.m + 2
        return alpha * alpha if self.two_d else alpha


@functools.lru_cache(maxsize=1024)
def plan(spec: ConvSpec, x_dtype: np.dtype, contiguous: bool, limit: int, m: int,
         lanes: bool = True, fused_ok: bool = True) -> WinogradPlan:
    """Tiles, batching and workspace of spec on an input of x_dtype (contiguous or not) under the
    cap `limit`, with tiles of m outputs per axis; lanes, fused_ok: whether the channels-last
    pipeline, and its fused kernel, may be used where they apply."""
    cdt = compute_dtype(spec.dtype)
    size = cdt.itemsize
    two_d = spec.r == 3
    th = -(-spec.p // m) if two_d else spec.p
    tw = -(-spec.q // m)
    points = (m + 2) ** 2 if two_d else m + 2
    # Held through the call: the compute-dtype copy of the input, U and the weights kept with it.
    held = 0
    if np.dtype(x_dtype) != cdt or not contiguous:
        held += spec.n * spec.c * spec.h * spec.w * size
    cg = spec.c_per_group
    per_k = points * cg * size                      # U's bytes per output channel
    taps = 9 if two_d else 3
    fixed = held
    # The channels-last pipeline (winograd_lanes.py): no groups, U whole under the cap.
    cv, kp = winograd_lanes.padded_sizes(spec.c, spec.k, cdt)
    lanes_u = points * spec.c * kp * size
    use_lanes = (lanes and spec.groups == 1 and cdt in _LANE_DTYPES
                 and fixed + lanes_u + points * (cv + kp) * size <= limit)
    if use_lanes:
        k_block = spec.k
        room = limit - fixed - lanes_u
        u_bytes = lanes_u
    elif fixed + spec.k * per_k + points * (spec.c + spec.k) * size <= limit:
        k_block = spec.k
        room = limit - fixed - spec.k * per_k
        u_bytes = spec.k * per_k
    else:
        # U in blocks of output channels (whole groups, or a divisor of one group's count):
        # half of what is left for U, half for the batches.
        room = max(0, limit - fixed) // 2
        k_block = max(1, min(spec.k, room // per_k))
        kg = spec.k_per_group
        if k_block >= kg:
            k_block = k_block // kg * kg
        else:
            k_block = next(b for b in range(k_block, 0, -1) if kg % b == 0)
        u_bytes = k_block * per_k
    # The copy of the weights kept with U between calls (_weights: only U of all K, when both
    # fit CACHE_SHARE of the cap).
    weights = spec.k * cg * taps * size
    if k_block == spec.k and u_bytes + weights <= limit * CACHE_SHARE:
        fixed += weights
        room -= weights
    per_tile = points * ((cv + kp) if use_lanes else (spec.c + k_block)) * size   # V and M
    tile_budget = min(BATCH_BYTES, limit // 4, max(0, room))
    box = _batch_box(spec.n, th, tw, max(1, tile_budget // per_tile))
    tiles = box[0] * box[1] * box[2]
    # Each task's own buffers (numba's threads at most alive at a time): the transforms' bands
    # of one row of tiles (float64; channels-last: alpha rows of every channel vector, and the
    # output's m rows), the weight transform's staged filters.
    alpha, bw = m + 2, box[2]
    rows_held = 2 * alpha if two_d else 1
    per_task = max(rows_held * (bw * m + 2), ((alpha + m) if two_d else m) * bw * m,
                   (taps + 1) * FILTER_BLOCK) * 8
    fused = use_lanes and fused_ok and u_bytes <= FUSED_U_BYTES
    if use_lanes:
        if fused:
            # No batches: each task's V and M (at most fused_tiles' bound), its band and row
            # buffer.
            tiles = 0
            fused_tiles = max(MR, min(tw, winograd_lanes.FUSED_BYTES // per_tile))
            bw = fused_tiles
        per_task = max(per_task, (alpha * cv + m * kp) * (bw * m + 2) * size
                       + (per_tile * bw if fused else 0))
    workspace = fixed + u_bytes + tiles * per_tile + numba.config.NUMBA_NUM_THREADS * per_task
    if use_lanes:
        # The copy with inf and nan read as zero (made only where the input has them).
        workspace += spec.n * spec.c * spec.h * spec.w * size
    return WinogradPlan(m, two_d, (th, tw), box, k_block, int(workspace), use_lanes, fused)


def _plan_of(spec: ConvSpec, x_dtype, contiguous: bool, limit: int) -> WinogradPlan:
    return plan(spec, np.dtype(x_dtype), bool(contiguous), int(limit), int(tile_size(spec)),
                bool(LANES), bool(FUSED))


def describe(spec: ConvSpec, x_dtype: np.dtype, contiguous: bool, limit: int) -> str:
    """The plan in words, for conv.explain."""
    if spec.dilation != (1, 1):
        plans, _ = _phase_plans(spec, np.dtype(x_dtype), int(limit))
        groups = _phase_groups(spec)
        largest = max((sub for sub, _ in plans if sub is not None), key=lambda sub: sub.n *
                      sub.p * sub.q)
        phases = sum(len(phases) for _, phases in groups)
        return (f"{phases} dilation phases (dilation {spec.dilation[0]}x{spec.dilation[1]}) "
                f"in {len(groups)} undilated conv(s) of phases stacked as images; the largest: "
                + describe(largest, x_dtype, True, int(limit)))
    wp = _plan_of(spec, x_dtype, contiguous, limit)
    name = f"F({wp.m}x{wp.m},3x3)" if wp.two_d else f"F({wp.m},3)"
    batch = wp.batch[0] * wp.batch[1] * wp.batch[2]
    blocks = "" if wp.k_block == spec.k else \
        f", output channels in blocks of {wp.k_block}"
    pipeline = ", transforms in vectors across channels (channels last)" if wp.lanes else ""
    return (f"Winograd {name} in {compute_dtype(spec.dtype).name}: {wp.tiles[0] * wp.tiles[1]} "
            f"tiles per image, {batch} per batch, {wp.points} GEMMs per batch{blocks}{pipeline}")


def workspace(spec: ConvSpec, x_dtype: np.dtype, contiguous: bool, limit: int) -> int:
    """Bytes winograd_conv allocates for spec beyond its output (chunks.py's estimate)."""
    if spec.is_empty:
        return 0
    if spec.dilation != (1, 1):
        return _phase_plans(spec, np.dtype(x_dtype), int(limit))[1]
    return _plan_of(spec, x_dtype, contiguous, limit).workspace


# --------------------------------------------------------------------------- the convolution

# The last weight transform each thread made, with the weights it was made from: a layer called
# again with the same weights skips the transform; weights changed in place are caught by the
# comparison (a copy is kept, never the caller's array).
_last_weights = threading.local()


def _weight_transform(w: np.ndarray, spec: ConvSpec, m: int, k0: int, k1: int,
                      cdt: np.dtype) -> np.ndarray:
    """U[e, k - k0, c] for output channels [k0, k1): G g G^T (2-D) or G g (1-D) of each filter,
    in float64 (the Kronecker product G (x) G times the taps, `_weight_transform_kernel`),
    rounded once. Non-finite taps are read as zero (winograd_conv adds their terms exactly)."""
    g = _G[m]
    two_d = spec.r == 3
    transform = np.kron(g, g) if two_d else g          # (points, 9) or (points, 3)
    points, taps = transform.shape
    cg = spec.c_per_group
    filters = w[k0:k1].reshape((k1 - k0) * cg, taps)
    u = np.empty((points, (k1 - k0) * cg), cdt)
    _transform_weights(np.ascontiguousarray(filters), transform, FILTER_BLOCK, u)
    return u.reshape(points, k1 - k0, cg)


def _cache_key(w: np.ndarray, spec: ConvSpec, wp: WinogradPlan, cdt: np.dtype, k0: int,
               k1: int) -> tuple:
    return (spec.groups, wp.m, wp.two_d, wp.lanes, cdt, w.shape, w.dtype, k0, k1)


@numba.njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def _equal_kernel(a, b, blocks):
    """Whether the flat arrays a and b (of one shape and dtype) are equal element for element (as
    np.array_equal): in parallel blocks, each a vectorised count of differences."""
    size = a.shape[0]
    per = (size + blocks - 1) // blocks
    differences = np.zeros(blocks, np.int64)
    for block in numba.prange(blocks):
        count = 0
        for i in range(block * per, min(size, (block + 1) * per)):
            count += a[i] != b[i]
        differences[block] = count
    return differences.sum() == 0


_equal = serialised_if_needed(_equal_kernel)


def _cached_weights(w: np.ndarray, spec: ConvSpec, wp: WinogradPlan, cdt: np.dtype):
    """U of all output channels from the thread's cache when w equals the weights it was made
    from (those were finite: only they are cached), else None."""
    last = getattr(_last_weights, "entry", None)
    if last is None or last[0] != _cache_key(w, spec, wp, cdt, 0, spec.k):
        return None
    flat, kept = w.reshape(-1), last[1].reshape(-1)
    blocks = max(1, min(4 * numba.get_num_threads(), flat.size >> 14))
    return last[2] if _equal(flat, kept, blocks) else None


def _weights(w: np.ndarray, spec: ConvSpec, wp: WinogradPlan, cdt: np.dtype, k0: int, k1: int,
             cacheable: bool, limit: int) -> np.ndarray:
    """U for output channels [k0, k1), made (and kept in the thread's cache where cacheable);
    for the channels-last pipeline (wp.lanes), transposed and padded."""
    u = _weight_transform(w, spec, wp.m, k0, k1, cdt)
    if wp.lanes:
        # (points, C, Kp): the channels-last pipeline's right-hand operand.
        u = winograd_lanes.transposed_weights(
            u, winograd_lanes.padded_sizes(spec.c, spec.k, cdt)[1])
    if cacheable and u.nbytes + w.nbytes <= limit * CACHE_SHARE:
        _last_weights.entry = (_cache_key(w, spec, wp, cdt, k0, k1), w.copy(), u)
    return u


def winograd_conv(x4: np.ndarray, w: np.ndarray, out: np.ndarray, spec: ConvSpec,
                  scratch: ScratchBuffers, limit: int) -> None:
    """out (N, K, P, Q), in the compute dtype, = the conv of x4 (any dtype) by w (compute dtype),
    without bias, all of spec at once: the module docstring's map."""
    if spec.dilation != (1, 1):
        _dilated_conv(x4, w, out, spec, scratch, limit)
        return
    cdt = out.dtype
    contiguous = x4.flags.c_contiguous
    wp = _plan_of(spec, x4.dtype, contiguous, limit)
    m, points = wp.m, wp.points
    x = np.ascontiguousarray(x4, dtype=cdt)
    nr = tile_columns(cdt)

    top, _, left, _ = spec.pad
    (th, tw), (nb, bh, bw) = wp.tiles, wp.batch
    # Index maps over the padded coordinates the tile grid reads: past the padded input, zeros.
    rows = _index_map(th * m + 2 if wp.two_d else th, spec.h, top,
                      spec.h + spec.pad[0] + spec.pad[1], spec.padding_mode)
    cols = _index_map(tw * m + 2, spec.w, left, spec.w + spec.pad[2] + spec.pad[3],
                      spec.padding_mode)
    run = _consecutive_run(tw * m + 2, spec.w, left, spec.w + spec.pad[2] + spec.pad[3],
                           spec.padding_mode) if wp.lanes else None

    # Weights equal to the cached ones (which were finite) skip their transform and their check.
    cached = _cached_weights(w, spec, wp, cdt) if wp.k_block == spec.k else None
    bad_taps = None if cached is not None else ~np.isfinite(w)
    any_bad_taps = bad_taps is not None and bool(bad_taps.any())
    groups, cg, kg = spec.groups, spec.c_per_group, spec.k_per_group
    bad_input = False
    threads = numba.get_num_threads()
    if wp.fused:
        # One parallel kernel for the whole conv (winograd_lanes.py, "Fused").
        u = cached if cached is not None else _weights(w, spec, wp, cdt, 0, spec.k,
                                                       not any_bad_taps, limit)
        bad_input = winograd_lanes.run_fused(x, rows, cols, run, m, wp.two_d, u, out, wp.tiles,
                                             threads)
    for k0 in range(0, 0 if wp.fused else spec.k, wp.k_block):
        k1 = min(spec.k, k0 + wp.k_block)
        u = cached if cached is not None else _weights(
            w, spec, wp, cdt, k0, k1, not any_bad_taps and wp.k_block == spec.k, limit)
        # The groups this block spans, and its channels within them.
        g0, g1 = k0 // kg, -(-k1 // kg)
        kb = k1 - k0
        for n0 in range(0, spec.n, nb):
            n1 = min(spec.n, n0 + nb)
            for th0 in range(0, th, bh):
                th1 = min(th, th0 + bh)
                for tw0 in range(0, tw, bw):
                    tw1 = min(tw, tw0 + bw)
                    if wp.lanes:
                        bad_input |= winograd_lanes.run_batch(
                            x, rows, cols, run, m, wp.two_d, u, out,
                            (n1 - n0, th1 - th0, tw1 - tw0), (n0, th0, tw0), threads, scratch)
                        continue
                    count = (n1 - n0) * (th1 - th0) * (tw1 - tw0)
                    # Columns padded to whole micro-kernel tiles (the padding is zero, its
                    # results are never read).
                    t_pad = -(-count // nr) * nr
                    v = scratch.get("winograd_v", (points, spec.c, t_pad), cdt)
                    v[:, :, count:] = 0
                    bands = (n1 - n0) * (th1 - th0)
                    c_block = _channel_block(spec.c, bands)
                    bad = np.zeros(-(-spec.c // c_block) * bands, np.bool_)
                    _transform_input(x, rows, cols, m, wp.two_d, n0, n1 - n0, th0,
                                     th1 - th0, tw0, tw1 - tw0, c_block, v, bad)
                    bad_input = bad_input or bool(bad.any())
                    mm = scratch.get("winograd_m", (points, kb, t_pad), cdt)
                    if cg == 1:
                        # Depthwise-like (one input channel per group): a broadcast product.
                        vg = v.reshape(points, groups, 1, t_pad)[:, g0:g1]
                        np.multiply(u.reshape(points, g1 - g0, kg, 1), vg,
                                    out=mm.reshape(points, g1 - g0, kg, t_pad))
                    elif kb == spec.k:
                        _point_gemms(u.reshape(-1), v.reshape(-1), mm.reshape(-1), points,
                                     groups, cg, kg, t_pad, np.arange(cg, dtype=np.int64) * t_pad,
                                     nr, PANELS, TILES)
                    elif kb == kg * (g1 - g0) and k0 % kg == 0:
                        # A block of whole groups: (points, G', Kg, Cg) @ (points, G', Cg, T).
                        np.matmul(u.reshape(points, g1 - g0, kg, cg),
                                  v.reshape(points, groups, cg, t_pad)[:, g0:g1],
                                  out=mm.reshape(points, g1 - g0, kg, t_pad))
                    else:
                        # A block of part of one group.
                        np.matmul(u, v[:, g0 * cg:(g0 + 1) * cg], out=mm)
                    _transform_output(mm, m, wp.two_d, n0, n1 - n0, th0, th1 - th0, tw0,
                                      tw1 - tw0, _channel_block(kb, bands), k0, out)
    if bad_input or any_bad_taps:
        from .fft import _add_non_finite_terms
        if bad_taps is None:
            bad_taps = np.zeros(w.shape, np.bool_)
        if spec.padding_mode == "zeros" or not any(spec.pad):
            src, offsets = x4, (top, left)
        else:
            src, offsets = padded_copy(x4, spec), (0, 0)
        _add_non_finite_terms(src, offsets, w, bad_taps, bad_input, out, spec)


@functools.lru_cache(maxsize=256)
def _index_map(count: int, size: int, low_pad: int, padded: int, mode: str) -> np.ndarray:
    """For padded coordinates 0 .. count-1, the input element each reads under `mode`, -1 for a
    zero: conv/_padding.source_index inside the padded extent, -1 past it (read-only: cached,
    as it costs more than a small call's kernels)."""
    coords = np.arange(count, dtype=np.int64)
    index = source_index(np.minimum(coords, padded - 1) - low_pad, size, mode)
    index = np.where(coords < padded, index, -1).astype(np.int64)
    index.flags.writeable = False
    return index


@functools.lru_cache(maxsize=256)
def _consecutive_run(count: int, size: int, low_pad: int, padded: int, mode: str) -> tuple:
    """winograd_lanes.consecutive_run of _index_map(the same arguments), cached with it."""
    return winograd_lanes.consecutive_run(_index_map(count, size, low_pad, padded, mode))
