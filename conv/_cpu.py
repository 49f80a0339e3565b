"""The fast CPU path (default for NumPy input).

Two algorithms:
  "im2col": pad once, then per chunk of images and per group build the column matrix
            cols[(c, r, s), (n, p, q)] from a strided view and multiply by the weight matrix
            W[k, (c, r, s)] with BLAS. 1x1 stride-1 unpadded convs skip im2col (plain GEMM).
            The column buffer never exceeds `conv.cpu.set_workspace_limit` bytes: the batch is
            chunked, and a single image too large for it is split by output rows.
  "direct": numba-parallel loops over (n, k) output planes, one tap (r, s) at a time with a
            contiguous inner loop over q: the choice where GEMM is a poor fit (depthwise,
            few channels per group).
Accumulation: float16 in float32, float32 in float32 (as PyTorch's CPU path), float64 and complex
in their own precision, integers exactly in int64 (wrapping on the cast back, as PyTorch).
"""
from __future__ import annotations

import os

import numpy as np

from . import _arrays
from ._padding import as_4d, pad_input, weight_4d
from ._spec import ConvSpec

NAME = "cpu"
ALGORITHMS = ("im2col", "direct")
ACCEPTS = (_arrays.NUMPY,)

_DEFAULT_WORKSPACE = 64 << 20
_workspace_limit = int(os.environ.get("CONV_CPU_WORKSPACE_BYTES", _DEFAULT_WORKSPACE))


def set_workspace_limit(nbytes: int) -> None:
    """Cap (bytes) on the im2col column buffer; larger problems are chunked. Default 64 MiB."""
    global _workspace_limit
    if nbytes <= 0:
        raise ValueError("workspace limit must be positive")
    _workspace_limit = int(nbytes)


def workspace_limit() -> int:
    return _workspace_limit


def availability() -> tuple[bool, str]:
    return True, "NumPy/BLAS and numba on the host"


def compute_dtype(dtype: np.dtype) -> np.dtype:
    if dtype == np.float16:
        return np.dtype(np.float32)
    if dtype.kind in "iu":
        return np.dtype(np.int64)
    return dtype


def choose_algorithm(spec: ConvSpec) -> tuple[str, str]:
    if spec.dtype.kind in "iuc":
        return "im2col", "integer and complex inputs use im2col (exact int64 / complex GEMM)"
    if spec.c_per_group * spec.r * spec.s <= 16 and spec.k_per_group <= 4:
        return "direct", (f"each output sums only {spec.c_per_group * spec.r * spec.s} products per "
                          f"group ({spec.k_per_group} outputs per group): GEMM would be mostly overhead")
    return "im2col", "dense enough for GEMM (im2col + BLAS)"


def run(x, weight, bias, spec: ConvSpec, algorithm: str) -> np.ndarray:
    n, k, p, q = spec.output_shape_4d
    cdt = compute_dtype(spec.dtype)
    out = np.empty((n, k, p, q), dtype=cdt)
    if out.size:
        w = weight_4d(weight, spec).astype(cdt, copy=False)
        if algorithm == "direct":
            _direct(as_4d(x, spec), w, out, spec)
        else:
            xp = pad_input(as_4d(x, spec), spec)
            _im2col_gemm(xp.astype(cdt, copy=False), w, out, spec)
        if bias is not None:
            out += bias.astype(cdt, copy=False)[None, :, None, None]
    return out.astype(spec.dtype, copy=False).reshape(spec.output_shape)


def _tap_view(xg: np.ndarray, spec: ConvSpec, p0: int, p1: int) -> np.ndarray:
    """Strided view (nb, cg, r, s, p1-p0, q) of what each tap sees for output rows [p0, p1)."""
    sn, sc, sh, sw = xg.strides
    (st_h, st_w), (d_h, d_w) = spec.stride, spec.dilation
    base = xg[:, :, p0 * st_h:, :]
    return np.lib.stride_tricks.as_strided(
        base, shape=(xg.shape[0], xg.shape[1], spec.r, spec.s, p1 - p0, spec.q),
        strides=(sn, sc, sh * d_h, sw * d_w, sh * st_h, sw * st_w), writeable=False)


def _im2col_gemm(xp: np.ndarray, w: np.ndarray, out: np.ndarray, spec: ConvSpec) -> None:
    n, _, p, q = out.shape
    cg, kg = spec.c_per_group, spec.k_per_group
    crs = cg * spec.r * spec.s
    itemsize = xp.dtype.itemsize
    pointwise = spec.r == spec.s == 1 and spec.stride == (1, 1) and not any(spec.pad)
    # Rows of the output per column buffer: whole images when they fit, else bands of rows.
    image_bytes = crs * p * q * itemsize
    images_per_chunk = max(1, min(n, _workspace_limit // max(image_bytes, 1)))
    rows_per_chunk = p if image_bytes <= _workspace_limit else max(
        1, _workspace_limit // max(crs * q * itemsize, 1))
    for g in range(spec.groups):
        wmat = np.ascontiguousarray(w[g * kg:(g + 1) * kg].reshape(kg, crs))
        xg = xp[:, g * cg:(g + 1) * cg]
        og = out[:, g * kg:(g + 1) * kg]
        if pointwise:
            # (kg, cg) @ (nb, cg, h*w): no column buffer at all.
            for n0 in range(0, n, max(1, images_per_chunk)):
                n1 = min(n, n0 + images_per_chunk)
                og[n0:n1] = np.matmul(wmat, xg[n0:n1].reshape(n1 - n0, cg, p * q)).reshape(
                    n1 - n0, kg, p, q)
            continue
        for n0 in range(0, n, images_per_chunk):
            n1 = min(n, n0 + images_per_chunk)
            for p0 in range(0, p, rows_per_chunk):
                p1 = min(p, p0 + rows_per_chunk)
                view = _tap_view(xg[n0:n1], spec, p0, p1)          # (nb, cg, r, s, pb, q)
                nb, pb = n1 - n0, p1 - p0
                # cols[(c,r,s), (n,p,q)]: one GEMM for the whole chunk, big even when p*q is small.
                cols = np.empty((crs, nb, pb, q), dtype=xp.dtype)
                cols.reshape(cg, spec.r, spec.s, nb, pb, q)[...] = view.transpose(1, 2, 3, 0, 4, 5)
                res = wmat @ cols.reshape(crs, nb * pb * q)               # (kg, nb*pb*q)
                og[n0:n1, :, p0:p1, :] = res.reshape(kg, nb, pb, q).transpose(1, 0, 2, 3)


def _direct(x4: np.ndarray, w: np.ndarray, out: np.ndarray, spec: ConvSpec) -> None:
    from ._cpu_direct import direct_conv2d
    cdt = out.dtype
    if spec.padding_mode == "zeros":
        xin, pad_top, pad_left = x4, spec.pad[0], spec.pad[2]      # zero padding by bounds
    else:
        xin, pad_top, pad_left = pad_input(x4, spec), 0, 0
    direct_conv2d(np.ascontiguousarray(xin, dtype=cdt), np.ascontiguousarray(w), out, spec.groups,
                  spec.stride[0], spec.stride[1], spec.dilation[0], spec.dilation[1], pad_top,
                  pad_left)
