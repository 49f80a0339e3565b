"""The kernel digest: which GPU kernel sources a result was obtained with.

sha256 over every file under kernels/ (installed as conv.kernels; excluding __pycache__), sorted by
POSIX path relative to kernels/, hashing for each file its path, a NUL byte, then its bytes.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import pathlib


def kernels_root() -> pathlib.Path:
    """The kernels/ folder: conv.kernels, as installed (or mapped to the checkout by an editable
    install)."""
    return pathlib.Path(str(importlib.resources.files("conv.kernels")))


def kernels_digest(root: str | pathlib.Path | None = None) -> str:
    root = pathlib.Path(root) if root is not None else kernels_root()
    files = sorted((p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts),
                   key=lambda p: p.relative_to(root).as_posix())
    h = hashlib.sha256()
    for path in files:
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()
