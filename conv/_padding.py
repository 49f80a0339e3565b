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
