"""im2col on the host: the column matrix cols[g, (c, r, s), (n, p, q)] of every group, copied from one
strided view of the padded input (converting to the compute dtype as it copies), multiplied by
W[g, k, (c, r, s)] with BLAS (one batched matmul). Pointwise convs (1x1, unpadded, output the
input's size) skip the columns: one GEMM over the input itself. Version 0 (the only one)."""
from __future__ import annotations

import numpy as np

from ..._spec import ConvSpec
from ..._workspace import ScratchBuffers


def _tap_view(xc: np.ndarray, spec: ConvSpec, p0: int, p1: int) -> np.ndarray:
    """Strided view (nb, G, cg, r, s, p1-p0, q) of what each tap sees for output rows [p0, p1)."""
    nb, c, hp, wp = xc.shape
    sn, sc, sh, sw = xc.strides
    (st_h, st_w), (d_h, d_w) = spec.stride, spec.dilation
    cg = spec.c_per_group
    base = xc[:, :, p0 * st_h:, :]
    return np.lib.stride_tricks.as_strided(
        base, shape=(nb, spec.groups, cg, spec.r, spec.s, p1 - p0, spec.q),
        strides=(sn, sc * cg, sc, sh * d_h, sw * d_w, sh * st_h, sw * st_w), writeable=False)


def im2col_gemm(xp: np.ndarray, w: np.ndarray, out: np.ndarray, spec: ConvSpec,
                scratch: ScratchBuffers) -> None:
    """All groups at once: cols[g, (c, r, s), (n, p, q)] from one strided view of the padded input
    xp (its own dtype: the copy into the column buffer converts it to out.dtype), then one batched
    matmul W[g] @ cols[g] (numpy hands each group's GEMM to BLAS). The caller has sized the call so
    that its column buffer fits the workspace limit."""
    n, _, p, q = out.shape
    groups, cg, kg = spec.groups, spec.c_per_group, spec.k_per_group
    crs = cg * spec.r * spec.s
    wmat = np.ascontiguousarray(w.reshape(groups, kg, crs))
    # (p, q) == (h, w), not stride == (1, 1): a stride that reads nothing different is recorded
    # as 1 (make_spec), and then the output can still be shorter than the input.
    if spec.r == spec.s == 1 and (spec.p, spec.q) == (spec.h, spec.w) and not any(spec.pad):
        # Pointwise: (G, kg, cg) @ (n, G, cg, h*w), no column buffer at all.
        xg = xp.reshape(n, groups, cg, p * q)
        np.matmul(wmat, xg, out=out.reshape(n, groups, kg, p * q))
        return
    # One image already makes a wide GEMM: go image by image, writing results in place.
    images_per_chunk = 1 if p * q >= 1024 else n
    for n0 in range(0, n, images_per_chunk):
        n1 = min(n, n0 + images_per_chunk)
        nb = n1 - n0
        view = _tap_view(xp[n0:n1], spec, 0, p)                    # (nb, G, cg, r, s, p, q)
        if nb == 1:
            # One image: the GEMM writes straight into its (K, P*Q) output plane.
            cols = scratch.get("cols", (groups, crs, p * q), out.dtype)
            cols.reshape(groups, cg, spec.r, spec.s, p, q)[...] = view[0]
            np.matmul(wmat, cols, out=out[n0].reshape(groups, kg, p * q))
            continue
        # One GEMM per group over all the images: wide even when p*q is small.
        cols = scratch.get("cols", (groups, crs, nb, p, q), out.dtype)
        cols.reshape(groups, cg, spec.r, spec.s, nb, p, q)[...] = view.transpose(
            1, 2, 3, 4, 0, 5, 6)
        res = np.matmul(wmat, cols.reshape(groups, crs, nb * p * q))   # (G, kg, nb*p*q)
        out[n0:n1] = res.reshape(groups * kg, nb, p, q).transpose(1, 0, 2, 3)
