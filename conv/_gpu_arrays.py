"""GPU array interop shared by the GPU backends: take any CUDA array zero-copy, give the result back
as the caller's kind of array on the caller's device.

CuPy and numba.cuda are imported here only when a GPU path is actually used.
"""
from __future__ import annotations

import sys

import numpy as np

from . import _arrays


def import_cupy():
    """CuPy, or ImportError saying why it cannot be used."""
    import cupy  # noqa: F401  (ImportError propagates with its own reason)
    return cupy


def cupy_availability() -> tuple[bool, str]:
    try:
        cupy = import_cupy()
    except Exception as exc:  # ImportError, or a broken CUDA install raising at import
        return False, f"CuPy is not installed or failed to import ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return False, f"no CUDA driver or device ({type(exc).__name__}: {exc})"
    if count == 0:
        return False, "no CUDA device"
    return True, f"CuPy {cupy.__version__} with {count} CUDA device(s)"


def cupy_from_host(host: np.ndarray, device_index: int):
    cupy = import_cupy()
    with cupy.cuda.Device(device_index):
        return cupy.asarray(host)


def input_device(a) -> int | None:
    """The CUDA device a GPU array lives on, None for host arrays (or when only the pointer knows)."""
    return _arrays.cuda_device_of(a)


def _plain_torch(t):
    """A PyTorch tensor its DLPack / __cuda_array_interface__ exports describe truthfully: no
    autograd (exporting a tensor that requires grad raises), and lazy conjugate / negative bits
    resolved (the array interface ignores them, which would silently give conj(x) as x)."""
    t = t.detach()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    return t


def to_cupy(a, kind: str | None = None):
    """A CuPy view of `a` (zero-copy for GPU arrays), or a device copy of a NumPy array; kind:
    its array kind where the caller knows it (a Plan does)."""
    if a is None:
        return None
    cupy = import_cupy()
    kind = kind or _arrays.array_kind(a)
    if kind == _arrays.CUPY:
        return a
    if kind == _arrays.NUMPY:
        return cupy.asarray(a)
    if kind == _arrays.TORCH_CUDA:
        return cupy.from_dlpack(_plain_torch(a))    # honours the producer's stream
    if not hasattr(a, "__cuda_array_interface__") and hasattr(a, "__dlpack__"):
        return cupy.from_dlpack(a)
    return cupy.asarray(a)                  # __cuda_array_interface__: zero-copy


def from_cupy(out, kind: str):
    """Return CuPy array `out` as an array of `kind` (the input's: NumPy input gets NumPy back)."""
    if kind == _arrays.CUPY or kind == _arrays.CUDA_OTHER:
        return out
    if kind == _arrays.NUMPY:
        return out.get()
    if kind == _arrays.TORCH_CUDA:
        return sys.modules["torch"].from_dlpack(out)
    if kind == _arrays.NUMBA_CUDA:
        return sys.modules["numba.cuda"].as_cuda_array(out)
    raise TypeError(f"cannot return a result for an input of kind {kind}")


def to_numba(a, kind: str | None = None):
    """A numba.cuda device array for `a` (zero-copy for __cuda_array_interface__ arrays)."""
    if a is None:
        return None
    from numba import cuda
    kind = kind or _arrays.array_kind(a)
    if kind == _arrays.NUMPY:
        return cuda.to_device(np.ascontiguousarray(a))
    if kind == _arrays.NUMBA_CUDA:
        return a
    if kind == _arrays.TORCH_CUDA:
        a = _plain_torch(a)
    if hasattr(a, "__cuda_array_interface__"):
        return cuda.as_cuda_array(a)
    return cuda.as_cuda_array(to_cupy(a))    # DLPack-only producers go through CuPy


def from_numba(out, like, kind: str):
    """Return numba device array `out` as an array of `kind`, the kind of `like` (the input)."""
    if kind == _arrays.NUMBA_CUDA:
        return out
    if kind == _arrays.NUMPY:
        return out.copy_to_host()
    if kind == _arrays.CUPY or kind == _arrays.CUDA_OTHER:
        return import_cupy().asarray(out)
    if kind == _arrays.TORCH_CUDA:
        return sys.modules["torch"].as_tensor(out, device=like.device)
    raise TypeError(f"cannot return a result for an input of kind {kind}")


# CUDA's grid limits (gridDim x, y, z), the same on every device since compute capability 3.0:
# both GPU backends clamp their grids to them (their kernels grid-stride past them).
GRID_LIMITS = (2 ** 31 - 1, 65535, 65535)


# Test hook: when on, GPU backends fill each output with NaN (integers: a sentinel) before the
# kernels run, so an element no thread wrote fails the comparison instead of passing as 0.
_poison_outputs = False


def set_poison_outputs(enabled: bool) -> None:
    global _poison_outputs
    _poison_outputs = bool(enabled)


def poison_enabled() -> bool:
    return _poison_outputs


def poison_value(dtype: np.dtype):
    dtype = np.dtype(dtype)
    if dtype.kind in "fc":
        return np.nan
    return np.iinfo(dtype).min + 7    # unlikely to be a correct integer result
