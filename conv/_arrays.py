"""What an array is and where it lives, found cheaply: no GPU library is imported to ask.

Like array-api-compat's helpers, a CuPy or PyTorch array is recognised through ``sys.modules``
(if CuPy was never imported, the object cannot be a CuPy array).
"""
from __future__ import annotations

import sys

import numpy as np

from ._dtypes import BFLOAT16

# The array kinds the dispatcher distinguishes.
NUMPY, CUPY, TORCH_CUDA, NUMBA_CUDA, CUDA_OTHER, TORCH_CPU, UNKNOWN = (
    "numpy", "cupy", "torch-cuda", "numba-cuda", "cuda-array", "torch-cpu", "unknown")
GPU_KINDS = (CUPY, TORCH_CUDA, NUMBA_CUDA, CUDA_OTHER)

_TORCH_TO_NUMPY = {
    "torch.float16": np.float16, "torch.float32": np.float32, "torch.float64": np.float64,
    "torch.complex64": np.complex64, "torch.complex128": np.complex128, "torch.int8": np.int8,
    "torch.int16": np.int16, "torch.int32": np.int32, "torch.int64": np.int64,
    "torch.uint8": np.uint8, "torch.bool": np.bool_, "torch.bfloat16": BFLOAT16,
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


def torch_cpu_numpy(t) -> np.ndarray:
    """The NumPy array over a PyTorch CPU tensor's memory (zero-copy): bfloat16, which
    Tensor.numpy() refuses, as ml_dtypes' bfloat16 through a same-size integer view."""
    if str(t.dtype) == "torch.bfloat16":
        return t.view(sys.modules["torch"].int16).numpy().view(BFLOAT16)
    return t.numpy()


def torch_from_numpy(a: np.ndarray):
    """torch.from_numpy, bfloat16 (ml_dtypes) included: a tensor over `a`'s memory."""
    torch = sys.modules["torch"]
    if a.dtype == BFLOAT16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def to_numpy(a) -> np.ndarray:
    """Any array kind the library returns (NumPy, CuPy, Numba device array, PyTorch tensor) as NumPy,
    copied to the host where it lives on a GPU."""
    if isinstance(a, np.ndarray):
        return a
    if _is_cupy_array(a):
        return a.get()
    if _is_torch_tensor(a):
        return torch_cpu_numpy(a.detach().cpu())
    if hasattr(a, "copy_to_host"):          # numba.cuda device arrays
        return a.copy_to_host()
    raise TypeError(f"cannot bring {type(a).__name__} to the host")


# --- PyTorch's memory format, guessed from strides ------------------------------------------
# PyTorch lays out a convolution's output as channels_last when its input or weight "suggests"
# channels_last (conv/functional.py has the whole rule). The suggestion is c10's
# is_channels_last_strides_2d (c10/core/MemoryFormat.h), written again here so that it works on
# plain tuples, NumPy and CuPy arrays too, and never imports torch.

def suggests_channels_last(shape, strides) -> bool:
    """Whether PyTorch's ``Tensor.suggest_memory_format()`` is ``torch.channels_last`` for a
    strided tensor of `shape` and `strides`: only 4-D ones can be; density is not required (a
    sliced NHWC view counts).

    `strides` in elements (PyTorch's ``stride()``; bytes answer alike: the rule only compares
    strides with each other and with strides times sizes).

    Walking from the fastest NHWC dimension to the slowest (C, W, H, N), each stride must reach
    past everything the faster dimensions span. Ambiguous strides resolve to NCHW, as in c10:
    a zero channel stride (channels broadcast), a zero-size dimension, and an N111-like tensor
    whose batch stride a channel stride could equally explain. A size-1 dimension does not widen
    the span, which is how N1HW-channels_last and a transposed 1C1W tell themselves apart.
    """
    if len(shape) != 4:
        return False                    # 3-D tensors have no channels_last in PyTorch
    if strides[1] == 0:
        return False
    span = 0                            # elements (or bytes) the faster dimensions cover
    for dim in (1, 3, 2, 0):
        size, stride = shape[dim], strides[dim]
        if size == 0 or stride < span:
            return False
        if dim == 0 and span == strides[1]:
            return False
        span = stride * size if size > 1 else stride
    return True


def is_channels_last_contiguous(shape, strides) -> bool:
    """PyTorch's ``is_contiguous(memory_format=torch.channels_last)`` for a 4-D `shape` and element
    `strides`: dense in NHWC order, size-1 dimensions' strides ignored (so a tensor can be this
    and not suggest channels_last: N111, NC11 with NCHW strides)."""
    expected = 1
    for dim in (1, 3, 2, 0):
        if shape[dim] != 1:
            if strides[dim] != expected:
                return False
            expected *= shape[dim]
    return True


def is_contiguous_strides(shape, strides) -> bool:
    """PyTorch's ``is_contiguous()`` for `shape` and element `strides`: dense in C order, size-1
    dimensions' strides ignored (``contiguous()`` returns such a tensor as it is)."""
    expected = 1
    for size, stride in zip(reversed(shape), reversed(strides)):
        if size != 1:
            if stride != expected:
                return False
            expected *= size
    return True


def channels_last_strides(shape) -> tuple:
    """The element strides PyTorch gives a new channels_last tensor of 4-D `shape` (c10's
    get_channels_last_strides_2d: C fastest, then W, H, N; sizes taken as they are, zeros too)."""
    _, c, h, w = shape
    return (h * w * c, 1, w * c, c)


def element_strides_of(a) -> tuple | None:
    """`a`'s strides in elements, as PyTorch's ``stride()`` (NumPy's, CuPy's and Numba's bytes
    divided by the item size); None where only a C-contiguous layout is known (a
    __cuda_array_interface__ without strides), for a stride that is no whole number of elements
    (PyTorch has no such tensor), or when `a` is no array."""
    if _is_torch_tensor(a):
        return a.stride()
    strides = getattr(a, "strides", None)
    if strides is None:
        iface = getattr(a, "__cuda_array_interface__", None)
        strides = None if iface is None else iface.get("strides")
        if strides is None:
            return None
    try:
        itemsize = dtype_of(a).itemsize
    except (AttributeError, TypeError):     # strides but no dtype (a memoryview): no array of ours
        return None
    if not itemsize or any(s % itemsize for s in strides):
        return None
    return tuple(s // itemsize for s in strides)
