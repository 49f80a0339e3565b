"""The fast CPU path (default for NumPy input): planning, chunked execution, and the algorithms'
entry points. Where each algorithm lives (conv/registry.py has their rows and the auto rule):
  implicit.py  "implicit": float16/32/64 only. A register-tiled implicit GEMM: the input in its
               stride-phase layout (layout.py), read where it lies (no im2col buffer) by a SIMD
               micro-kernel that numba builds with LLVM for the host's vector width.
  im2col.py    "im2col": pad, build the column matrix of every group from one strided view,
               multiply by the weights with BLAS. Pointwise convs skip the columns.
  direct.py    "direct": numba-parallel loops over (n, k) output planes: the padded input split
               into its stride phases (layout.py), one long unit-stride axpy per (channel, tap).
  fft.py       "fft": floats and complex. Overlap-save tiles, real FFTs (scipy.fft with the
               backend's threads, else numpy.fft), the channel reduction as one batched complex
               matmul per frequency: for long kernels.
  fft_lanes.py its conv1d engine (real float32/64, no groups): transforms in SIMD lanes across
               channels, the frequency-domain products as GEMMs on implicit.py's micro-kernel.
  winograd.py  "winograd": float16/32/64, stride-1 3x3 conv2d and 3-tap conv1d only (dilated:
               as its dilation phases)
               (other specs: ValueError, from its registry row's spec_refusal). Winograd
               F(4x4,3x3)/F(2x2,3x3) tiles (F(4,3)/F(2,3) for conv1d): numba input/output
               transforms, one GEMM per transform point on implicit.py's LLVM micro-kernel.
  winograd_lanes.py  its channels-last pipeline (convs without groups): the transforms in
               SIMD lanes across channels, the point GEMMs transposed to read that layout.
  chunks.py    what each algorithm allocates, and the chunking of calls that exceed the cap.
Memory: every algorithm allocates at most the output plus the workspace limit
(`conv.set_workspace_limit(nbytes, "cpu")`, env CONV_CPU_WORKSPACE_BYTES, default 64 MiB) plus a
few KiB: a call whose copies (padded or converted input, phase layout, column buffer,
compute-dtype output) would exceed it runs as chunks of itself (_run_chunked, chunks.py).
Accumulation: conv/_dtypes.py (float16 in float32, integers exactly in int64). bfloat16 runs as the
float32 call on float32 copies of its operands, rounded once at the end (_run).
"""
from __future__ import annotations

import contextlib
import dataclasses

import numpy as np

from ..._numba_cache import ensure_writable_cache

ensure_writable_cache()         # before any kernel module (cache=True) is imported

from ..._dtypes import BFLOAT16  # noqa: E402
from ..._dtypes import accumulator_dtype as compute_dtype  # noqa: E402
from ..._padding import as_4d, gather_padded, padded_copy, source_index, weight_4d  # noqa: E402
from ..._spec import ConvSpec  # noqa: E402
from ..._workspace import ScratchBuffers, WorkspaceLimit  # noqa: E402
from . import chunks  # noqa: E402

# Cap on each call's workspace (bytes): conv.set_workspace_limit(nbytes, "cpu"), default 64 MiB.
_DEFAULT_LIMIT = 64 << 20
_limit = WorkspaceLimit("CONV_CPU_WORKSPACE_BYTES", _DEFAULT_LIMIT)
set_workspace_limit = _limit.set
workspace_limit = _limit.get
_scratch = ScratchBuffers(_limit)


def availability() -> tuple[bool, str]:
    return True, "NumPy/BLAS and numba on the host"


def plan_workspace(spec: ConvSpec, algorithm: str, x, config: str = "") -> tuple[int, object, str]:
    """(workspace bytes, chunks or None, note) of the call on input x (its dtype and contiguity
    decide what is copied). bfloat16: that of the float32 call it runs (_run)."""
    if spec.is_empty:
        return 0, None, ""
    dtype, contiguous = x.dtype, x.flags.c_contiguous
    if spec.dtype == BFLOAT16:
        spec, dtype, contiguous = dataclasses.replace(spec, dtype=_F32), _F32, True
    nbytes, chunking = chunks.plan_workspace(spec, algorithm, dtype, contiguous,
                                             numba_threads(), _limit.get())
    note = "" if chunking is None else (
        f"its workspace would exceed the {_limit.get()}-byte cap: it runs as "
        f"{chunking.count(spec)} chunks")
    if algorithm == "fft" and chunking is None:
        from .fft import describe
        note = describe(spec, x.dtype, _limit.get())
    if algorithm == "winograd" and chunking is None:
        from .winograd import describe
        note = describe(spec, x.dtype, x.flags.c_contiguous, _limit.get())
    return nbytes, chunking, note


def run(plan, x, weight, bias) -> np.ndarray:
    # inf/nan/overflow propagate silently, as in PyTorch (no RuntimeWarning, no FloatingPointError
    # under a caller's np.errstate(all="raise")).
    with np.errstate(all="ignore"):
        return _run(plan, x, weight, bias)


_F32 = np.dtype(np.float32)


def _run(plan, x, weight, bias) -> np.ndarray:
    spec, algorithm = plan.spec, plan.algorithm
    if spec.dtype == BFLOAT16 and spec.output_shape_4d[0] * spec.output_shape_4d[1] * spec.p \
            * spec.q:
        # No kernel reads bfloat16 (numba has no such type): the operands are converted to
        # float32 (exact), the float32 call runs (its plan's workspace and chunks, which
        # plan_workspace computed), and its result is rounded once to bfloat16, as PyTorch's
        # float32 accumulation does. The float32 copies of input, weight and output are this
        # dtype's cost beyond the workspace cap.
        plan32 = dataclasses.replace(plan, spec=dataclasses.replace(spec, dtype=_F32))
        out = _run(plan32, np.asarray(x, _F32), np.asarray(weight, _F32),
                   None if bias is None else np.asarray(bias, _F32))
        return out.astype(BFLOAT16)
    n, k, p, q = spec.output_shape_4d
    cdt = compute_dtype(spec.dtype)
    if not n * k * p * q:
        return _new_output((n, k, p, q), spec.dtype).reshape(spec.output_shape)
    x4, w4 = as_4d(x, spec), weight_4d(weight, spec)
    b = None if bias is None else bias.astype(cdt, copy=False)
    if plan.chunks is None:
        # The fast path: the whole call at once, its workspace within the limit.
        out = _new_output((n, k, p, q), cdt)
        _compute(x4, w4.astype(cdt, copy=False), b, out, spec, algorithm)
        return out.astype(spec.dtype, copy=False).reshape(spec.output_shape)
    out = _new_output((n, k, p, q), spec.dtype)
    _run_chunked(x4, w4, b, out, spec, algorithm, plan.chunks)
    return out.reshape(spec.output_shape)


def _new_output(shape: tuple, dtype: np.dtype) -> np.ndarray:
    # Every algorithm writes every element of the output and of each chunk's buffers (all come
    # from here); tests replace this with a NaN-filled allocation to prove it.
    return np.empty(shape, dtype)


def numba_threads() -> int:
    # numba.get_num_threads() starts numba's threads, which fixes the threading layer: our choice
    # of layer (conv/_threads.py) must be made first.
    from ..._threads import num_threads
    return num_threads()


def _compute(x4: np.ndarray, w: np.ndarray, b, out: np.ndarray, spec: ConvSpec,
             algorithm: str) -> None:
    """out (N, K, P, Q), in the compute dtype, = the conv of x4 (any dtype: each algorithm converts
    what it copies) by w (compute dtype) plus b (or None), all of spec at once."""
    with _plain_memory_errors():
        if algorithm == "implicit":
            from .implicit import conv2d_implicit
            conv2d_implicit(x4, w, b, out, spec, _scratch)       # adds the bias itself
            return
        if algorithm == "direct":
            from .direct import direct_conv
            direct_conv(x4, w, out, spec, _scratch)
        elif algorithm == "fft":
            from .fft import fft_conv
            fft_conv(x4, w, out, spec, _scratch, numba_threads(), _limit.get())
        elif algorithm == "winograd":
            from .winograd import winograd_conv
            winograd_conv(x4, w, out, spec, _scratch, _limit.get())
        else:
            from .im2col import im2col_gemm
            im2col_gemm(padded_copy(x4, spec), w, out, spec, _scratch)
    if b is not None:
        out += b[None, :, None, None]


@contextlib.contextmanager
def _plain_memory_errors():
    """numba reports an allocation failure inside a compiled function as SystemError (the
    MemoryError is its cause): give the caller the MemoryError."""
    try:
        yield
    except SystemError as error:
        cause = error.__cause__ or error.__context__
        if isinstance(cause, MemoryError):
            raise MemoryError(str(cause)) from None
        if isinstance(cause, ValueError) and "array is too big" in str(cause):
            raise MemoryError(str(cause)) from None
        raise


def _run_chunked(x4: np.ndarray, w4: np.ndarray, b, out: np.ndarray, spec: ConvSpec,
                 algorithm: str, chunking) -> None:
    """The call as chunks of itself (conv/_workspace.py's policy; chunks.py sized them): each
    piece reads only the part of the input its outputs read (chunks.axis_piece)."""
    n, k, p, q = out.shape
    cdt = compute_dtype(spec.dtype)
    nb, pb, qb, rb, sb = chunking
    split_kernel = rb < spec.r or sb < spec.s
    whole_weight = None if split_kernel else w4.astype(cdt, copy=False)
    for n0 in range(0, n, nb):
        n1 = min(n, n0 + nb)
        for p0 in range(0, p, pb):
            p1 = min(p, p0 + pb)
            for q0 in range(0, q, qb):
                q1 = min(q, q0 + qb)
                in_place = (p1 - p0, q1 - q0) == (p, q) and out.dtype == cdt
                target = out[n0:n1] if in_place else _new_output((n1 - n0, k, p1 - p0, q1 - q0),
                                                                 cdt)
                partial = None
                for r0 in range(0, spec.r, rb):
                    r1 = min(spec.r, r0 + rb)
                    for s0 in range(0, spec.s, sb):
                        s1 = min(spec.s, s0 + sb)
                        if r0 == s0 == 0:
                            dst = target
                        else:
                            if partial is None:
                                partial = _new_output(target.shape, cdt)
                            dst = partial
                        weight = whole_weight if whole_weight is not None else \
                            w4[:, :, r0:r1, s0:s1].astype(cdt)
                        _compute_piece(x4[n0:n1], weight, dst, spec, algorithm,
                                       (p0, p1, r0, r1), (q0, q1, s0, s1))
                        if dst is partial:
                            target += partial
                if b is not None:
                    target += b[None, :, None, None]
                if not in_place:
                    out[n0:n1, :, p0:p1, q0:q1] = target     # casts into the output dtype


def _compute_piece(x4: np.ndarray, w: np.ndarray, dst: np.ndarray, spec: ConvSpec, algorithm: str,
                   row_part: tuple, col_part: tuple) -> None:
    """dst = the outputs rows [p0, p1) x columns [q0, q1) of the images of x4 get from kernel rows
    [r0, r1) and columns [s0, s1): the same algorithm on a spec of just that piece."""
    (p0, p1, r0, r1), (q0, q1, s0, s1) = row_part, col_part
    top, _, left, _ = spec.pad
    h, width = spec.h, spec.w
    row_coords, row_start, row_stop, stride_h = chunks.axis_piece(p0, p1, r0, r1, spec.stride[0],
                                                            spec.dilation[0], top)
    col_coords, col_start, col_stop, stride_w = chunks.axis_piece(q0, q1, s0, s1, spec.stride[1],
                                                            spec.dilation[1], left)
    reads_padding = (row_start < 0 or row_stop > h or col_start < 0 or col_stop > width)
    if row_coords is not None or col_coords is not None or (
            spec.padding_mode != "zeros" and reads_padding):
        if row_coords is None:
            row_coords = np.arange(row_start, row_stop, dtype=np.int64)
        if col_coords is None:
            col_coords = np.arange(col_start, col_stop, dtype=np.int64)
        xc = gather_padded(x4, source_index(row_coords, h, spec.padding_mode),
                           source_index(col_coords, width, spec.padding_mode))
        pad = (0, 0, 0, 0)
    else:
        lo_h, hi_h = max(row_start, 0), min(row_stop, h)
        lo_w, hi_w = max(col_start, 0), min(col_stop, width)
        if hi_h <= lo_h or hi_w <= lo_w:
            dst[...] = 0                        # the piece reads zero padding only
            return
        xc = x4[:, :, lo_h:hi_h, lo_w:hi_w]
        pad = (lo_h - row_start, row_stop - hi_h, lo_w - col_start, col_stop - hi_w)
    piece = dataclasses.replace(
        spec, n=xc.shape[0], h=xc.shape[2], w=xc.shape[3], r=r1 - r0, s=s1 - s0,
        stride=(stride_h, stride_w), pad=pad, padding_mode="zeros", p=p1 - p0, q=q1 - q0,
        has_bias=False, batched=True)
    _compute(xc, w, None, dst, piece, algorithm)
