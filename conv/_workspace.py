"""The im2col workspace cap of a host or numba backend: bytes, from an environment variable or a
default, changed with set(). Larger problems are chunked against it, never refused."""
from __future__ import annotations

import os
import threading

import numpy as np


class WorkspaceLimit:
    def __init__(self, env_var: str, default: int):
        self.nbytes = int(os.environ.get(env_var) or default)

    def set(self, nbytes: int) -> None:
        if nbytes <= 0:
            raise ValueError("workspace limit must be positive")
        self.nbytes = int(nbytes)

    def get(self) -> int:
        return self.nbytes


class ScratchBuffers:
    """Named per-thread buffers kept between calls while they fit the limit: a fresh multi-megabyte
    allocation each call costs a page fault per 4 KiB on first touch, which measured as much as
    the GEMM itself on mid-sized layers. Contents are undefined on return."""

    def __init__(self, limit: WorkspaceLimit):
        self.limit = limit
        self._local = threading.local()

    def get(self, name: str, shape: tuple, dtype) -> np.ndarray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        buf = getattr(self._local, name, None)
        if buf is None or buf.nbytes < nbytes:
            buf = np.empty(max(nbytes, 1), np.uint8)
            if nbytes <= self.limit.nbytes:
                setattr(self._local, name, buf)
        return buf[:nbytes].view(dtype).reshape(shape)
