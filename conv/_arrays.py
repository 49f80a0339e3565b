"""What an array is and where it lives, found cheaply: no GPU library is imported to ask.

Like array-api-compat's helpers, a CuPy or PyTorch array is recognised through ``sys.modules``
(if CuPy was never imported, the object cannot be a CuPy array).
"""
from __future__ import annotations

import sys

import numpy as np

# The array kinds the dispatcher distinguishes.
NUMPY, CUPY, TORCH_CUDA, NUMBA_CUDA, CUDA_OTHER, TORCH_CPU, UNKNOWN = (
    "numpy", "cupy", "torch-cuda", "numba-cuda", "cuda-array", "torch-cpu", "unknown")
GPU_KINDS = (CUPY, TORCH_CUDA, NUMBA_CUDA, CUDA_OTHER)

_TORCH_TO_NUMPY = {
    "torch.float16": np.float16, "torch.float32": np.float32, "torch.float64": np.float64,
    "torch.complex64": np.complex64, "torch.complex128": np.complex128, "torch.int8": np.int8,
    "torch.int16": np.int16, "torch.int32": np.int32, "torch.int64": np.int64,
    "torch.uint8": np.uint8, "torch.bool": np.bool_,
}


def _is_torch_tensor(a) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(a, torch.Tensor)


def _is_cupy_array(a) -> bool:
    cupy = sys.modules.get("cupy")
    return cupy is not None and isinstance(a, cupy.ndarray)


def _is_numba_device_array(a) -> bool:
    """A numba.cuda device array (also the CUDA simulator's, which has no __cuda_array_interface__)."""
    numba_cuda = sys.modules.get("numba.cuda")
    if numba_cuda is None or isinstance(a, np.ndarray) or not type(a).__module__.startswith("numba"):
        return False
    is_cuda_array = getattr(numba_cuda, "is_cuda_array", None)
    return is_cuda_array(a) if is_cuda_array is not None else hasattr(a, "copy_to_host")


def array_kind(a) -> str:
    """One of NUMPY, CUPY, TORCH_CUDA, NUMBA_CUDA, CUDA_OTHER, TORCH_CPU, UNKNOWN."""
    if isinstance(a, np.ndarray):
        return NUMPY
    if _is_cupy_array(a):
        return CUPY
    if _is_torch_tensor(a):
        return TORCH_CUDA if a.device.type == "cuda" else TORCH_CPU
    if _is_numba_device_array(a):
        return NUMBA_CUDA
    if hasattr(a, "__cuda_array_interface__"):
        return CUDA_OTHER
    if hasattr(a, "__dlpack_device__"):
        try:
            device_type, _ = a.__dlpack_device__()
        except Exception:
            return UNKNOWN
        return CUDA_OTHER if int(device_type) in (2, 13) else UNKNOWN   # kDLCUDA, kDLCUDAManaged
    return UNKNOWN


def shape_of(a):
    """The shape as a tuple of ints, or None for objects that are not arrays."""
    if isinstance(a, np.ndarray) or _is_cupy_array(a):
        return a.shape
    if _is_torch_tensor(a) or _is_numba_device_array(a):
        return tuple(a.shape)
    iface = getattr(a, "__cuda_array_interface__", None)
    if iface is not None:
        return tuple(iface["shape"])
    if hasattr(a, "__dlpack_device__") and hasattr(a, "shape") and hasattr(a, "dtype"):
        return tuple(a.shape)
    return None


def dtype_of(a) -> np.dtype:
    """The NumPy dtype of any supported array (PyTorch dtypes mapped to NumPy's)."""
    if _is_torch_tensor(a):
        name = str(a.dtype)
        if name not in _TORCH_TO_NUMPY:
            raise TypeError(f"unsupported dtype {name}")
        return np.dtype(_TORCH_TO_NUMPY[name])
    iface = getattr(a, "__cuda_array_interface__", None)
    if iface is not None and not hasattr(a, "dtype"):
        return np.dtype(iface["typestr"])
    # Byte order is storage, not type: a big-endian float32 array is float32 (results are native).
    return np.dtype(a.dtype).newbyteorder("=")


def cuda_device_of(a) -> int | None:
    """CUDA device ordinal of a GPU array, None for host arrays."""
    kind = array_kind(a)
    if kind == CUPY:
        return int(a.device.id)
    if kind == TORCH_CUDA:
        return int(a.device.index)
    if kind in (NUMBA_CUDA, CUDA_OTHER):
        if hasattr(a, "__dlpack_device__"):
            return int(a.__dlpack_device__()[1])
        # __cuda_array_interface__ carries no device; the pointer's device is the current one.
        return None
    return None


def device_name(a) -> str:
    """'cpu' or 'cuda:N', PyTorch's spelling, for error messages."""
    kind = array_kind(a)
    if kind in GPU_KINDS:
        dev = cuda_device_of(a)
        return "cuda" if dev is None else f"cuda:{dev}"
    return "cpu"


def to_numpy(a) -> np.ndarray:
    """Any array kind the library returns (NumPy, CuPy, Numba device array, PyTorch tensor) as NumPy,
    copied to the host where it lives on a GPU."""
    if isinstance(a, np.ndarray):
        return a
    if _is_cupy_array(a):
        return a.get()
    if _is_torch_tensor(a):
        return a.detach().cpu().numpy()
    if hasattr(a, "copy_to_host"):          # numba.cuda device arrays
        return a.copy_to_host()
    raise TypeError(f"cannot bring {type(a).__name__} to the host")
