"""The fast CPU path (default for NumPy input).

Three algorithms:
  "implicit": float16/32/64 only. A register-tiled implicit GEMM (conv/_cpu_implicit.py): the
            input in its stride-phase layout, read where it lies (no im2col buffer) by a SIMD
            micro-kernel that numba builds with LLVM for the host's vector width. The default
            for floating point.
  "im2col": pad once, then per chunk of images build the column matrix cols[g, (c, r, s), (n, p, q)]
            of every group from one strided view and multiply by W[g, k, (c, r, s)] with BLAS (one
            batched matmul). 1x1 stride-1 unpadded convs skip im2col (plain GEMM). The column
            buffer never exceeds the workspace limit (`conv.set_workspace_limit(nbytes, "cpu")`,
            env CONV_CPU_WORKSPACE_BYTES, default 64 MiB): the batch is chunked, and a single image
            too large for it is split into bands of output rows. The default for integer and
            complex inputs.
  "direct": numba-parallel loops over (n, k) output planes (conv/_cpu_direct.py): the padded
            input split into its stride phases, then one long unit-stride axpy per (channel, tap).
            The default for unstrided depthwise convs.
Accumulation: float16 in float32, float32 in float32 (as PyTorch's CPU path), float64 and complex
in their own precision, integers exactly in int64 (wrapping on the cast back, as PyTorch).
"""
from __future__ import annotations

import numpy as np

from . import _arrays
from ._padding import as_4d, pad_input, weight_4d
from ._spec import ConvSpec
from ._workspace import ScratchBuffers, WorkspaceLimit

NAME = "cpu"
ALGORITHMS = ("implicit", "im2col", "direct")
ACCEPTS = (_arrays.NUMPY,)

# Cap on the column buffer (bytes): conv.set_workspace_limit(nbytes, "cpu"), default 64 MiB.
_limit = WorkspaceLimit("CONV_CPU_WORKSPACE_BYTES", 64 << 20)
set_workspace_limit = _limit.set
workspace_limit = _limit.get


_scratch = ScratchBuffers(_limit)
_IMPLICIT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def availability() -> tuple[bool, str]:
    return True, "NumPy/BLAS and numba on the host"


def compute_dtype(dtype: np.dtype) -> np.dtype:
    if dtype == np.float16:
        return np.dtype(np.float32)
    if dtype.kind in "iu":
        return np.dtype(np.int64)
    return dtype


def choose_algorithm(spec: ConvSpec) -> tuple[str, str]:
    """Rule from the benchmark runner's CPU measurements (bench/ suites resnet50, sweep, grouped,
    textcnn, wavenet, longkernel, audio) and A/B timings of the grouped shapes: the implicit GEMM
    wins for every floating-point conv (ResNeXt's 4-channel groups: 1.3-4x the direct loops;
    strided depthwise: 1.5x) but unstrided depthwise ones, where the direct loops are 5-10%
    faster (the implicit GEMM's tile of output channels holds one row there). Integers and
    complex use im2col (exact int64 / complex GEMM)."""
    if spec.dtype.kind in "iuc":
        return "im2col", "integer and complex inputs use im2col (exact int64 / complex GEMM)"
    if spec.k_per_group == 1 and spec.stride == (1, 1):
        return "direct", ("depthwise and unstrided: the implicit GEMM's tiles of output channels "
                          "would hold one row")
    return "implicit", "floating point: the register-tiled implicit GEMM"


def run(x, weight, bias, spec: ConvSpec, algorithm: str) -> np.ndarray:
    if algorithm == "implicit" and compute_dtype(spec.dtype) not in _IMPLICIT_DTYPES:
        raise TypeError(f"cpu algorithm 'implicit' computes floating-point inputs only "
                        f"(float16, float32, float64), got {spec.dtype}; use 'im2col' or 'direct'")
    # inf/nan/overflow propagate silently, as in PyTorch (no RuntimeWarning, no FloatingPointError
    # under a caller's np.errstate(all="raise")).
    with np.errstate(all="ignore"):
        return _run(x, weight, bias, spec, algorithm)


def _run(x, weight, bias, spec: ConvSpec, algorithm: str) -> np.ndarray:
    n, k, p, q = spec.output_shape_4d
    cdt = compute_dtype(spec.dtype)
    out = _new_output((n, k, p, q), cdt)
    if out.size:
        w = weight_4d(weight, spec).astype(cdt, copy=False)
        b = None if bias is None else bias.astype(cdt, copy=False)
        if algorithm == "implicit":
            from ._cpu_implicit import conv2d_implicit
            conv2d_implicit(as_4d(x, spec), w, b, out, spec, _scratch)   # adds the bias itself
            b = None
        elif algorithm == "direct":
            _direct(as_4d(x, spec), w, out, spec)
        else:
            xp = pad_input(as_4d(x, spec), spec)
            _im2col_gemm(xp.astype(cdt, copy=False), w, out, spec)
        if b is not None:
            out += b[None, :, None, None]
    return out.astype(spec.dtype, copy=False).reshape(spec.output_shape)


def _new_output(shape: tuple, dtype: np.dtype) -> np.ndarray:
    # Every algorithm writes every element; tests replace this with a NaN-filled allocation to
    # prove it.
    return np.empty(shape, dtype)


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


def _im2col_gemm(xp: np.ndarray, w: np.ndarray, out: np.ndarray, spec: ConvSpec) -> None:
    """All groups at once: cols[g, (c, r, s), (n, p, q)] from one strided view, then one batched
    matmul W[g] @ cols[g] (numpy hands each group's GEMM to BLAS)."""
    n, _, p, q = out.shape
    groups, cg, kg = spec.groups, spec.c_per_group, spec.k_per_group
    crs = cg * spec.r * spec.s
    itemsize = xp.dtype.itemsize
    wmat = np.ascontiguousarray(w.reshape(groups, kg, crs))
    if spec.r == spec.s == 1 and spec.stride == (1, 1) and not any(spec.pad):
        # Pointwise: (G, kg, cg) @ (nb, G, cg, h*w), no column buffer at all.
        chunk = max(1, min(n, _limit.nbytes // max(1, spec.c * p * q * itemsize)))
        for n0 in range(0, n, chunk):
            n1 = min(n, n0 + chunk)
            xg = xp[n0:n1].reshape(n1 - n0, groups, cg, p * q)
            out[n0:n1] = np.matmul(wmat, xg).reshape(n1 - n0, groups * kg, p, q)
        return
    # Rows of the output per column buffer: whole images when they fit, else bands of rows.
    image_bytes = groups * crs * p * q * itemsize
    images_per_chunk = max(1, min(n, _limit.nbytes // max(image_bytes, 1)))
    if p * q >= 1024:
        # One image already makes a wide GEMM: go image by image, writing results in place.
        images_per_chunk = 1
    rows_per_chunk = p if image_bytes <= _limit.nbytes else max(
        1, _limit.nbytes // max(groups * crs * q * itemsize, 1))
    for n0 in range(0, n, images_per_chunk):
        n1 = min(n, n0 + images_per_chunk)
        nb = n1 - n0
        for p0 in range(0, p, rows_per_chunk):
            p1 = min(p, p0 + rows_per_chunk)
            pb = p1 - p0
            view = _tap_view(xp[n0:n1], spec, p0, p1)              # (nb, G, cg, r, s, pb, q)
            if nb == 1 and pb == p:
                # One image: the GEMM writes straight into its (K, P*Q) output plane.
                cols = _scratch.get("cols", (groups, crs, pb * q), xp.dtype)
                cols.reshape(groups, cg, spec.r, spec.s, pb, q)[...] = view[0]
                np.matmul(wmat, cols, out=out[n0].reshape(groups, kg, p * q))
                continue
            # One GEMM per group over the whole chunk: wide even when p*q is small.
            cols = _scratch.get("cols", (groups, crs, nb, pb, q), xp.dtype)
            cols.reshape(groups, cg, spec.r, spec.s, nb, pb, q)[...] = view.transpose(
                1, 2, 3, 4, 0, 5, 6)
            res = np.matmul(wmat, cols.reshape(groups, crs, nb * pb * q))   # (G, kg, nb*pb*q)
            out[n0:n1, :, p0:p1, :] = res.reshape(groups * kg, nb, pb, q).transpose(1, 0, 2, 3)


def _direct(x4: np.ndarray, w: np.ndarray, out: np.ndarray, spec: ConvSpec) -> None:
    import numba

    from ._cpu_direct import direct_conv2d, direct_conv2d_exclusive, phase_layout
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
    phases = _scratch.get("phases", layout.shape, out.dtype)
    layout.fill(x4, phases)
    direct_conv2d(phases, layout.taps, w, out, spec.groups)
