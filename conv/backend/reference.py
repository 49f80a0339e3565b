"""The NumPy reference: the oracle of every test. Written for clarity, never the default path.

Pads explicitly (torch.nn.functional.pad semantics), then for each kernel tap (r, s) takes the strided
slice of the padded input that tap sees and accumulates its product with the tap's weights, per
group, in float64 (complex128 for complex input; int64 for integer input, exact, wrapping on the
cast back as PyTorch's integer convolution does).
"""
from __future__ import annotations

import numpy as np

from .._padding import as_4d, pad_input, weight_4d
from .._spec import ConvSpec


def availability() -> tuple[bool, str]:
    return True, "plain NumPy, always available"


def plan_workspace(spec: ConvSpec, algorithm: str, x, config: str = "") -> tuple[int, None, str]:
    """The padded input and the accumulator (float64 / complex128 / int64) are its copies; it has
    no cap (it is the oracle, written for clarity)."""
    acc = accumulation_dtype(spec.dtype).itemsize
    top, bottom, left, right = spec.pad
    padded = spec.n * spec.c * (spec.h + top + bottom) * (spec.w + left + right)
    return (2 * padded + spec.n * spec.k * spec.p * spec.q) * acc, None, ""


def accumulation_dtype(dtype: np.dtype) -> np.dtype:
    if dtype.kind == "c":
        return np.dtype(np.complex128)
    if dtype.kind in "iu":
        return np.dtype(np.int64)
    return np.dtype(np.float64)


def conv_reference(x, weight, bias, spec: ConvSpec, out_dtype=None) -> np.ndarray:
    """Reference output of shape spec.output_shape, in out_dtype (default: the accumulation dtype).

    inf/nan/overflow propagate silently, as in PyTorch.
    """
    with np.errstate(all="ignore"):
        return _conv_reference(x, weight, bias, spec, out_dtype)


def _conv_reference(x, weight, bias, spec: ConvSpec, out_dtype=None) -> np.ndarray:
    acc = accumulation_dtype(spec.dtype)
    n, k, p, q = spec.output_shape_4d
    out = np.zeros((n, k, p, q), dtype=acc)
    if out.size:
        xp = pad_input(as_4d(np.asarray(x), spec), spec).astype(acc)
        w = weight_4d(np.asarray(weight), spec).astype(acc)
        sh, sw = spec.stride
        dh, dw = spec.dilation
        cg, kg = spec.c_per_group, spec.k_per_group
        for g in range(spec.groups):
            xg = xp[:, g * cg:(g + 1) * cg]                 # (n, cg, Hp, Wp)
            wg = w[g * kg:(g + 1) * kg]                     # (kg, cg, r, s)
            for r in range(spec.r):
                for s in range(spec.s):
                    h0, w0 = r * dh, s * dw
                    tap = xg[:, :, h0:h0 + (p - 1) * sh + 1:sh, w0:w0 + (q - 1) * sw + 1:sw]
                    out[:, g * kg:(g + 1) * kg] += np.einsum("nchw,kc->nkhw", tap, wg[:, :, r, s])
        if bias is not None:
            out += np.asarray(bias).astype(acc)[None, :, None, None]
    out = out.reshape(spec.output_shape)
    return out if out_dtype is None else out.astype(out_dtype)


def run(plan, x, weight, bias) -> np.ndarray:
    return conv_reference(x, weight, bias, plan.spec, out_dtype=plan.spec.dtype)
