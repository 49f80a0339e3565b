"""Host-side padding and 4-D views shared by the NumPy paths."""
from __future__ import annotations

import numpy as np

from ._spec import ConvSpec

# PyTorch padding_mode -> numpy.pad mode. PyTorch's reflect excludes the edge, as NumPy's does.
NUMPY_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def as_4d(x: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """(N, C, H, W) view of a conv1d/conv2d input, batched or not (copies only odd strided views)."""
    return x.reshape(spec.n, spec.c, spec.h, spec.w)


def weight_4d(w: np.ndarray, spec: ConvSpec) -> np.ndarray:
    return w.reshape(spec.k, spec.c_per_group, spec.r, spec.s)


def pad_input(x4: np.ndarray, spec: ConvSpec) -> np.ndarray:
    """The padded input (a new array), as torch.nn.functional.pad with spec.padding_mode."""
    top, bottom, left, right = spec.pad
    if not any(spec.pad):
        return x4
    if spec.padding_mode == "zeros":     # one allocation + one copy (np.pad makes several)
        n, c, h, w = x4.shape
        out = np.zeros((n, c, h + top + bottom, w + left + right), x4.dtype)
        out[:, :, top:top + h, left:left + w] = x4
        return out
    widths = ((0, 0), (0, 0), (top, bottom), (left, right))
    return np.pad(x4, widths, mode=NUMPY_PAD_MODES[spec.padding_mode])


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
