"""The im2col workspace cap of a host or numba backend: bytes, from an environment variable or a
default, changed with set(). Larger problems are chunked against it, never refused."""
from __future__ import annotations

import os


class WorkspaceLimit:
    def __init__(self, env_var: str, default: int):
        self.env_var = env_var
        self.nbytes = int(os.environ.get(env_var) or default)

    def set(self, nbytes: int) -> None:
        if nbytes <= 0:
            raise ValueError("workspace limit must be positive")
        self.nbytes = int(nbytes)

    def get(self) -> int:
        return self.nbytes
