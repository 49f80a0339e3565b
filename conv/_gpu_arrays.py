"""GPU array interop shared by the GPU backends: take any CUDA array zero-copy, give the result back
as the caller's kind of array on the caller's device.

CuPy and numba.cuda are imported here only when a GPU path is actually used.
"""
from __future__ import annotations

import contextlib
import ctypes
import sys

import numpy as np

from . import _arrays
from ._dtypes import BFLOAT16, is_floating


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


# ---------------------------------------------------------------------------------------------
# The device, stream and allocator of one call
#
# A call runs on its input's device, on the stream the caller's library would use (CuPy's current
# stream for CuPy arrays, PyTorch's current stream for PyTorch tensors: then our kernels are
# ordered after the work that produced the input and before whatever the caller queues next,
# with no synchronisation, as one of PyTorch's own ops), and for PyTorch tensors every buffer
# comes from PyTorch's caching allocator on that stream: the output is a native tensor, and the
# workspace returns to PyTorch's cache stream-ordered, so a later allocation on the stream cannot
# reuse it while a kernel still reads it, and capture into a CUDA graph (which needs the graph's
# private pool, not cudaMalloc) works. As with PyTorch's ops, an input allocated on another stream
# is the caller's to keep alive (Tensor.record_stream).

def _primary_context_active(index: int) -> bool:
    """Whether device `index`'s primary context exists (the driver's cuDevicePrimaryCtxGetState);
    True where the driver cannot be asked, so the caller then restores as usual."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch._C, "_cuda_hasPrimaryContext"):
        try:
            return bool(torch._C._cuda_hasPrimaryContext(index))
        except Exception:
            pass
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
        dev, flags, active = ctypes.c_int(), ctypes.c_uint(), ctypes.c_int()
        if libcuda.cuDeviceGet(ctypes.byref(dev), index) != 0:
            return True
        if libcuda.cuDevicePrimaryCtxGetState(dev, ctypes.byref(flags), ctypes.byref(active)):
            return True
        return bool(active.value)
    except (OSError, AttributeError):
        return True


@contextlib.contextmanager
def on_device(index: int | None):
    """Make CUDA device `index` current for the block (None: leave the current one). Unlike
    ``cupy.cuda.Device(index)``, the previous device is restored only where it has a context:
    since CUDA 12 cudaSetDevice creates one, so restoring a never-used device 0 after a call on
    device 1 would put a context (hundreds of MiB) on device 0. PyTorch's device guard skips
    that restore the same way (c10::cuda::MaybeSetDevice); the thread then stays on `index`."""
    if index is None:
        yield
        return
    runtime = import_cupy().cuda.runtime
    previous = runtime.getDevice()
    if previous == index:
        yield
        return
    runtime.setDevice(index)
    try:
        yield
    finally:
        if _primary_context_active(previous):
            runtime.setDevice(previous)


def capturing(kind: str) -> bool:
    """Whether the stream a call of this array kind runs on is capturing a CUDA graph (then the
    call must not synchronise or time anything: the autotuner uses the dispatch rule)."""
    try:
        if kind == _arrays.TORCH_CUDA:
            return bool(sys.modules["torch"].cuda.is_current_stream_capturing())
        if kind == _arrays.CUPY:
            return bool(import_cupy().cuda.get_current_stream().is_capturing())
    except Exception:               # no device to ask (the emulator), an old CuPy
        return False
    return False


def torch_dtype(dtype: np.dtype):
    """The PyTorch dtype of NumPy dtype `dtype` (torch is imported: the caller has tensors)."""
    torch = sys.modules["torch"]
    return {np.dtype(v): getattr(torch, k.split(".")[1])
            for k, v in _arrays._TORCH_TO_NUMPY.items()}[np.dtype(dtype)]


def torch_empty(shape, dtype, device_index: int):
    """A native PyTorch tensor from PyTorch's caching allocator on the device's current stream."""
    torch = sys.modules["torch"]
    return torch.empty(shape, dtype=torch_dtype(dtype), device=f"cuda:{device_index}")


def _torch_cupy_allocator(stream_ptr: int):
    """A CuPy allocator (cupy.cuda.using_allocator) drawing from PyTorch's caching allocator on
    stream `stream_ptr`; CuPy frees through it when the memory's last array dies."""
    torch = sys.modules["torch"]
    cupy = import_cupy()

    def malloc(size: int, device_id: int) -> int:
        return torch.cuda.caching_allocator_alloc(size, device_id, stream_ptr)

    def free(ptr: int, device_id: int) -> None:
        torch.cuda.caching_allocator_delete(ptr)

    return cupy.cuda.memory.PythonFunctionAllocator(malloc, free).malloc


@contextlib.contextmanager
def cupy_call(kind: str, device_index: int | None):
    """The device, stream and allocator of one call through CuPy: on `device_index` (None: the
    current device); for PyTorch tensors on PyTorch's current stream with every CuPy allocation
    from PyTorch's caching allocator (yields that torch stream), otherwise on CuPy's current
    stream and memory pool (yields None)."""
    cupy = import_cupy()
    with on_device(device_index):
        if kind != _arrays.TORCH_CUDA:
            yield None
            return
        torch = sys.modules["torch"]
        index = cupy.cuda.runtime.getDevice()
        stream = torch.cuda.current_stream(index)
        with _cupy_stream(cupy, stream, index), \
                cupy.cuda.using_allocator(_torch_cupy_allocator(stream.cuda_stream)):
            yield stream


def _cupy_stream(cupy, torch_stream, index: int):
    """CuPy's view of a PyTorch stream: Stream.from_external through the CUDA stream protocol
    (CuPy 14, which deprecates ExternalStream), else ExternalStream."""
    if hasattr(cupy.cuda.Stream, "from_external") and hasattr(torch_stream, "__cuda_stream__"):
        return cupy.cuda.Stream.from_external(torch_stream)
    return cupy.cuda.ExternalStream(torch_stream.cuda_stream, index)


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
        a = _plain_torch(a)
        if str(a.dtype) == "torch.bfloat16":        # CuPy's bfloat16 (ml_dtypes) by a bit view
            return cupy.from_dlpack(a.view(sys.modules["torch"].int16)).view(BFLOAT16)
        return cupy.from_dlpack(a)                  # honours the producer's stream
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


def to_numba(a, kind: str | None = None, sync: bool = True):
    """A numba.cuda device array for `a` (zero-copy for __cuda_array_interface__ arrays).
    sync=False: the caller launches on the stream the array's exporter names (a CuPy array on
    CuPy's current stream), so numba need not synchronise that stream first."""
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
        return cuda.as_cuda_array(a, sync=sync)
    return cuda.as_cuda_array(to_cupy(a), sync=sync)    # DLPack-only producers go through CuPy


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
    if dtype.kind in "fc" or is_floating(dtype):          # bfloat16's kind is "V"
        return np.nan
    return np.iinfo(dtype).min + 7    # unlikely to be a correct integer result
