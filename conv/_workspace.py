"""Workspace: the cap on what one call may allocate beyond its output, per backend, and the one
chunk planner every backend uses to stay within it.

Policy (every backend, every algorithm with a workspace): a call whose workspace exceeds the cap
runs as chunks of itself, the same algorithm on each, never another algorithm. Chunks are whole
images first, then bands of output rows of one image, then (where the backend can gather a piece
of the input: the CPU) bands of output columns, then pieces of the kernel summed. The smallest
chunk a backend can run (one output row of one image on the GPU backends) runs even when it alone
exceeds the cap; the plan says so (conv.explain). Chunk lengths split their axis evenly, so the
pieces' specs, and whatever is cached per spec, repeat.
"""
from __future__ import annotations

import math
import os
import threading
from typing import Callable, NamedTuple

import numpy as np


class WorkspaceLimit:
    """A backend's cap in bytes: from the environment variable `env_var`, else `default` (an int,
    or a function giving it when asked: the GPU default depends on free device memory); changed
    with set(), set(None) restores the default."""

    def __init__(self, env_var: str, default):
        self._default = default
        self._env = int(os.environ[env_var]) if os.environ.get(env_var) else None
        self._set: int | None = None

    def set(self, nbytes: int | None) -> None:
        if nbytes is not None and nbytes <= 0:
            raise ValueError("workspace limit must be positive")
        self._set = None if nbytes is None else int(nbytes)

    def get(self) -> int:
        if self._set is not None:
            return self._set
        if self._env is not None:
            return self._env
        return self._default() if callable(self._default) else self._default


class Chunks(NamedTuple):
    """Chunk lengths along (images, output rows, output columns, kernel rows, kernel columns);
    the whole call is Chunks(N, P, Q, R, S)."""

    images: int
    rows: int
    cols: int
    kernel_rows: int
    kernel_cols: int

    def count(self, spec) -> int:
        """How many pieces the call runs as."""
        n, _, p, q = spec.output_shape_4d
        sizes = (n, p, q, spec.r, spec.s)
        out = 1
        for size, length in zip(sizes, self):
            out *= -(-size // length) if size else 1
        return out


def _largest(size: int, fits: Callable[[int], bool]) -> int:
    """The largest m in [1, size] with fits(m) (fits is monotone), or 1."""
    lo, hi = 1, size
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _even(size: int, most: int) -> int:
    """Chunk length at most `most` that splits size into equal chunks (the last one shorter by
    less than one chunk count)."""
    count = -(-size // most)
    return -(-size // count)


def plan_chunks(whole: Chunks, fits: Callable[[Chunks], bool], split_columns_and_kernel: bool
                ) -> Chunks:
    """The chunking of a call of shape `whole` under the policy above; fits(chunks) says whether a
    chunk's workspace is within the cap (monotone in every length). Without
    split_columns_and_kernel (a backend that cannot gather a piece of the input) the smallest
    chunk is one output row of one image."""
    n, p, q, r, s = whole

    def ok(*lengths) -> bool:
        return fits(Chunks(*lengths))

    if ok(n, p, q, r, s):
        return whole
    if ok(1, p, q, r, s):
        return Chunks(_even(n, _largest(n, lambda m: ok(m, p, q, r, s))), p, q, r, s)
    if ok(1, 1, q, r, s) or not split_columns_and_kernel:
        return Chunks(1, _even(p, _largest(p, lambda m: ok(1, m, q, r, s))), q, r, s)
    if ok(1, 1, 1, r, s):
        return Chunks(1, 1, _even(q, _largest(q, lambda m: ok(1, 1, m, r, s))), r, s)
    # One output with the whole kernel does not fit (a huge dilation): split the kernel, then
    # widen the chunk of outputs again.
    rb = _largest(r, lambda m: ok(1, 1, 1, m, s))
    sb = s if ok(1, 1, 1, rb, s) else _largest(s, lambda m: ok(1, 1, 1, 1, m))
    rb, sb = _even(r, rb), _even(s, sb)
    qb = _even(q, _largest(q, lambda m: ok(1, 1, m, rb, sb)))
    pb = _even(p, _largest(p, lambda m: ok(1, m, q, rb, sb))) if qb == q else 1
    return Chunks(1, pb, qb, rb, sb)


def plan_column_chunks(spec, column_bytes: Callable[[Chunks], int], limit: int
                       ) -> tuple[int, Chunks | None, str]:
    """(workspace bytes, chunks or None, note for the plan's reason) of a GPU im2col whose column
    buffer for a chunk takes column_bytes(chunk): images, then bands of output rows."""
    n, _, p, q = spec.output_shape_4d
    whole = Chunks(n, p, q, spec.r, spec.s)
    chunks = plan_chunks(whole, lambda c: column_bytes(c) <= limit,
                         split_columns_and_kernel=False)
    nbytes = column_bytes(chunks)
    if chunks == whole:
        return nbytes, None, ""
    note = f"the columns exceed the {limit}-byte cap: {chunks.count(spec)} chunks"
    if nbytes > limit:
        note += f" of one output row ({nbytes} bytes: the smallest chunk, run anyway)"
    return nbytes, chunks, note


class ScratchBuffers:
    """Named per-thread buffers kept between calls while they fit the limit: a fresh multi-megabyte
    allocation each call costs a page fault per 4 KiB on first touch, which measured as much as
    the GEMM itself on mid-sized layers. Contents are undefined on return."""

    def __init__(self, limit: WorkspaceLimit):
        self.limit = limit
        self._local = threading.local()

    def get(self, name: str, shape: tuple, dtype) -> np.ndarray:
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize    # np.prod: 5 us a call
        buf = getattr(self._local, name, None)
        if buf is None or buf.nbytes < nbytes:
            buf = np.empty(max(nbytes, 1), np.uint8)
            if nbytes <= self.limit.get():
                setattr(self._local, name, buf)
        return buf[:nbytes].view(dtype).reshape(shape)
