"""Padding modes: the one table of them, and the host-side padding the NumPy paths use.

PADDING_MODES numbers each mode; make_spec accepts exactly its names, the CUDA C kernels get the
numbers as `CONV_PAD_<MODE>` macros (`cuda_defines`, pasted before common.cuh by
conv/backend/cupy/sources.py) and the numba.cuda kernels import them
(kernels/numba_cuda/common.py). Each mode's index arithmetic is written once per language:
`source_index` here, `conv_src_index` in kernels/cuda/common.cuh, `source_index` in
kernels/numba_cuda/common.py; tests/test_padding_modes.py checks all of them against np.pad.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ._spec import ConvSpec

# padding_mode -> (the number the kernels branch on, the numpy.pad mode that pads the same way;
# PyTorch's reflect excludes the edge, as NumPy's does).
_TABLE = {"zeros": (0, "constant"), "reflect": (1, "reflect"), "replicate": (2, "edge"),
          "circular": (3, "wrap")}
PADDING_MODES: dict[str, int] = {mode: code for mode, (code, _) in _TABLE.items()}
NUMPY_PAD_MODES: dict[str, str] = {mode: np_mode for mode, (_, np_mode) in _TABLE.items()}


def cuda_defines() -> str:
    """`#define CONV_PAD_<MODE> <number>` for every mode."""
    return "".join(f"#define CONV_PAD_{mode.upper()} {code}\n" for mode, code in PADDING_MODES.items())


def as_4d(x: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """(N, C, H, W) view of a conv1d/conv2d input, batched or not (copies only odd strided views)."""
    return x.reshape(spec.n, spec.c, spec.h, spec.w)


def weight_4d(w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    return w.reshape(spec.k, spec.c_per_group, spec.r, spec.s)


def pad_input(x4: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The padded input (a new array), as torch.nn.functional.pad with spec.padding_mode: the
    reference's (np.pad for the other modes, so the oracle shares no padding code with the fast
    paths' padded_copy)."""
    top, bottom, left, right = spec.pad
    if not any(spec.pad):
        return x4
    if spec.padding_mode == "zeros":     # one allocation + one copy (np.pad makes several)
        return padded_copy(x4, spec)
    widths = ((0, 0), (0, 0), (top, bottom), (left, right))
    return np.pad(x4, widths, mode=NUMPY_PAD_MODES[spec.padding_mode])


def padded_copy(x4: np.ndarray, spec: ConvSpec, out: np.ndarray | None = None) -> np.ndarray:
    """The padded input (a new array, or x4 itself without padding) for the CPU paths: one
    allocation, the input copied once into its middle, then the border rows (for the input's
    columns) and the border columns (for every padded row) copied from their source_index
    elements (the modes are separable: padded (u, v) holds x[rows[u], cols[v]]). out: where to
    write it (the padded shape), instead of a new array: PhaseLayout.fill writes a stride-1
    layout this way, which is most of the gain (a timing script, (2, 32, 56, 56) float32 padded
    by 1 in reflect mode: this 0.14 ms against np.pad's 0.19 as new arrays; a whole implicit
    call's premium over zero padding 1.08 -> 0.13 ms with the in-place fill)."""
    top, bottom, left, right = spec.pad
    if not any(spec.pad) and out is None:
        return x4
    n, c, h, w = x4.shape
    if out is None:
        out = np.empty((n, c, h + top + bottom, w + left + right), x4.dtype)
    out[:, :, top:top + h, left:left + w] = x4
    if spec.padding_mode == "zeros":
        out[:, :, :top] = 0
        out[:, :, top + h:] = 0
        out[:, :, top:top + h, :left] = 0
        out[:, :, top:top + h, left + w:] = 0
        return out
    rows = source_index(np.arange(-top, h + bottom), h, spec.padding_mode)
    cols = source_index(np.arange(-left, w + right), w, spec.padding_mode)
    for u in [*range(top), *range(top + h, top + h + bottom)]:
        out[:, :, u, left:left + w] = x4[:, :, rows[u]]
    if left:
        out[:, :, :, :left] = out[:, :, :, left + cols[:left]]
    if right:
        out[:, :, :, left + w:] = out[:, :, :, left + cols[left + w:]]
    return out


def source_index(coords: np.ndarray, size: int, mode: str) -> np.ndarray:
    """For padded-input coordinates shifted by the low padding (so 0 is the first input element),
    the input element each one holds under `mode`, or -1 for a zero ('zeros' outside the input).
    Valid for the paddings make_spec accepts (reflect: < size; circular: <= size)."""
    if mode == "zeros":
        return np.where((coords >= 0) & (coords < size), coords, -1)
    if mode == "reflect":           # PyTorch's reflect excludes the edge
        return np.where(coords < 0, -coords, np.where(coords >= size, 2 * (size - 1) - coords,
                                                      coords))
    if mode == "replicate":
        return np.clip(coords, 0, size - 1)
    return coords % size            # circular


def gather_padded(x4: np.ndarray, row_index: np.ndarray, col_index: np.ndarray) -> np.ndarray:
    """x4[:, :, row_index][:, :, :, col_index] as a new C-contiguous array, zero where an index is
    -1: a piece of the padded input built from index maps (source_index), never the whole of it.
    Image by image, so the temporary that fancy indexing makes is one image of the piece."""
    rows, cols = np.maximum(row_index, 0)[:, None], np.maximum(col_index, 0)[None, :]
    out = np.empty(x4.shape[:2] + (len(row_index), len(col_index)), x4.dtype)
    for image in range(x4.shape[0]):
        out[image] = x4[image][:, rows, cols]
    out[:, :, row_index < 0, :] = 0
    out[:, :, :, col_index < 0] = 0
    return out
