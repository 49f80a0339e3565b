"""The phase layout: the padded input split into its stride phases, so every tap of a strided or
dilated conv reads a unit-stride run (used by the direct loops, direct.py, and the implicit GEMM,
implicit.py). PhaseLayout says where each phase goes and fills it; layout_extent its size.

    phases[n, c, phase(a, b), i, j] = xp[n, c, i*stride_h + a, j*stride_w + b]
"""
from __future__ import annotations

import functools
import math

import numba
import numpy as np

from ..._padding import padded_copy
from ..._spec import ConvSpec


def layout_extent(spec: ConvSpec, hp: int, wp: int, split_columns: bool) -> tuple[int, int]:
    """(elements of a layout's copy, elements of one channel's phases) for a padded hp x wp
    input: plain ints, so a size can be asked for before any array (tap offsets) is built. The
    phases some tap reads along rows are {(r*dh) % sh}, which are min(R, sh / gcd(dh, sh)) in
    number (r*dh/g runs through the residues modulo sh/g with step dh/g, coprime to sh/g)."""
    (sh, sw), (dh, dw) = spec.stride, spec.dilation
    row_phases = min(spec.r, sh // math.gcd(dh, sh))
    col_phases = min(spec.s, sw // math.gcd(dw, sw)) if split_columns else 1
    hph, wph = -(-hp // sh), -(-wp // sw)
    channel = row_phases * col_phases * hph * (wph if split_columns else wph * sw)
    return spec.n * spec.c * channel, channel


class PhaseLayout:
    """Where the padded input's stride phases go: (N, C, PH, Hph, Wph), PH = the phases some tap
    reads (all stride_h*stride_w for a 3x3 stride-2 conv, only (0, 0) for a 1x1 strided or a
    dilation-2 stride-2 one, so unread phases are never copied).

    split_columns=False keeps the columns whole (only rows are split into phases): planes of
    Wc = stride_w * ceil(Wp / stride_w) columns, and a tap reads every stride_w-th element
    (the implicit GEMM's kernel deinterleaves them). Then wph = Wc / stride_w is still the wide
    grid's row length."""

    def __init__(self, spec: ConvSpec, split_columns: bool = True):
        (self.sh, self.sw), (dh, dw) = spec.stride, spec.dilation
        self.spec = spec
        self.split_columns = split_columns
        self.row_phases = sorted({(r * dh) % self.sh for r in range(spec.r)})
        self.col_phases = sorted({(s * dw) % self.sw for s in range(spec.s)}) if split_columns \
            else [0]
        top, bottom, left, right = spec.pad
        self.hph = -(-(spec.h + top + bottom) // self.sh)
        self.wph = -(-(spec.w + left + right) // self.sw)
        # Columns per stored row: one phase's, or whole padded rows rounded up to stride_w.
        self.row_len = self.wph if split_columns else self.wph * self.sw
        self.n_phases = len(self.row_phases) * len(self.col_phases)
        self.shape = (spec.n, spec.c, self.n_phases, self.hph, self.row_len)
        # The size formula the workspace estimates use (chunks.py) is this layout's.
        assert layout_extent(spec, spec.h + top + bottom, spec.w + left + right,
                             split_columns)[1] == self.n_phases * self.hph * self.row_len
        self.col_step = self.sw if split_columns else 1       # input columns between stored ones
        # Read-only arrays for the numba kernels (a layout is shared through phase_layout()).
        self.taps = self._tap_offsets(dh, dw)
        self.row_phase_array = np.array(self.row_phases, np.int64)
        self.col_phase_array = np.array(self.col_phases, np.int64)
        for a in (self.taps, self.row_phase_array, self.col_phase_array):
            a.flags.writeable = False

    def _tap_offsets(self, dh: int, dw: int) -> np.ndarray:
        """For tap t = r*S + s: its flat offset in a channel's phases (PH, Hph, row_len) viewed as
        1-D, phase index * Hph*row_len plus i0*row_len + j0 inside the phase plane (j0 = the
        column inside the whole row when columns are not split)."""
        spec = self.spec
        offsets = np.empty(spec.r * spec.s, np.int64)
        plane = self.hph * self.row_len
        for r in range(spec.r):
            a, i0 = (r * dh) % self.sh, (r * dh) // self.sh
            for s in range(spec.s):
                if self.split_columns:
                    b, j0 = (s * dw) % self.sw, (s * dw) // self.sw
                else:
                    b, j0 = 0, s * dw
                phase = self.row_phases.index(a) * len(self.col_phases) + self.col_phases.index(b)
                offsets[r * spec.s + s] = phase * plane + i0 * self.row_len + j0
        return offsets

    def source(self, x4: np.ndarray) -> tuple[np.ndarray, int, int]:
        """What the fills read, and its (top, left) zero padding: zero padding is written as
        borders, never as a padded copy; the other modes pad first (then nothing is left)."""
        spec = self.spec
        if spec.padding_mode != "zeros" and any(spec.pad):
            return padded_copy(x4, spec), 0, 0
        return x4, spec.pad[0], spec.pad[2]

    def fill(self, x4: np.ndarray, dst: np.ndarray) -> None:
        """dst[n, c, phase(a, b), i, j] = padded x4[n, c, i*stride_h + a, j*stride_w + b], zero
        where that falls outside the padded input (NumPy, whole input; fill_planes is the same
        per plane, inside numba tasks)."""
        spec = self.spec
        if self.sh == self.sw == 1 and spec.padding_mode != "zeros":
            # Stride 1: the layout is the padded input itself, written in place (no padded
            # copy to fill from: a fresh array, page-faulted in on every call).
            planes = dst.view()
            planes.shape = dst.shape[:2] + dst.shape[3:]      # (raises rather than copy)
            padded_copy(x4, spec, out=planes)
            return
        x4, top, left = self.source(x4)
        h, w = x4.shape[2:]
        col_step = self.col_step
        for ia, a in enumerate(self.row_phases):
            i_lo, i_hi = _valid_range(a - top, self.sh, h, self.hph)
            for ib, b in enumerate(self.col_phases):
                j_lo, j_hi = _valid_range(b - left, col_step, w, self.row_len)
                part = dst[:, :, ia * len(self.col_phases) + ib]
                part[:, :, :i_lo] = 0
                part[:, :, i_hi:] = 0
                part[:, :, i_lo:i_hi, :j_lo] = 0
                part[:, :, i_lo:i_hi, j_hi:] = 0
                r0, c0 = i_lo * self.sh + a - top, j_lo * col_step + b - left
                part[:, :, i_lo:i_hi, j_lo:j_hi] = x4[:, :, r0::self.sh, c0::col_step][
                    :, :, :i_hi - i_lo, :j_hi - j_lo]


@functools.lru_cache(maxsize=256)
def phase_layout(spec: ConvSpec, split_columns: bool = True) -> PhaseLayout:
    """The layout of a spec, built once (its tap offsets cost as much as a small conv)."""
    return PhaseLayout(spec, split_columns)


@numba.njit(cache=True)
def _valid_range(first: int, step: int, size: int, count: int) -> tuple[int, int]:
    """[lo, hi): the i < count with 0 <= first + i*step < size."""
    lo = min(count, max(0, -(first // step)))
    hi = max(lo, min(count, (size - 1 - first) // step + 1))
    return lo, hi


@numba.njit(inline="always", boundscheck=False)
def fill_planes(x, img, c_first, count, buf, row_phases, col_phases, stride_h, col_step, top,
                left, hph, row_len):
    """PhaseLayout.fill for channels [c_first, c_first+count) of image img of the unpadded x
    (N, C, H, W) into buf (count planes of PH x hph x row_len), zero padding as borders.
    col_step is stride_w when columns are split into phases, 1 when they are kept whole."""
    h, width = x.shape[2], x.shape[3]
    n_cols = col_phases.shape[0]
    plane_len = row_phases.shape[0] * n_cols * hph * row_len
    for c in range(count):
        src = x[img, c_first + c]
        for ia in range(row_phases.shape[0]):
            a = row_phases[ia]
            for ib in range(n_cols):
                b = col_phases[ib]
                base = c * plane_len + (ia * n_cols + ib) * hph * row_len
                j_lo, j_hi = _valid_range(b - left, col_step, width, row_len)
                c0 = j_lo * col_step + b - left
                for i in range(hph):
                    d = buf[base + i * row_len:base + (i + 1) * row_len]
                    row = i * stride_h + a - top
                    if row < 0 or row >= h:
                        for j in range(row_len):
                            d[j] = 0
                        continue
                    for j in range(j_lo):
                        d[j] = 0
                    for j in range(j_hi, row_len):
                        d[j] = 0
                    d_mid = d[j_lo:j_hi]
                    if col_step == 1:               # unit stride: the copy vectorises
                        s_mid = src[row, c0:c0 + j_hi - j_lo]
                        for j in range(j_hi - j_lo):
                            d_mid[j] = s_mid[j]
                    else:
                        s_row = src[row]
                        for j in range(j_hi - j_lo):
                            d_mid[j] = s_row[c0 + j * col_step]
