"""A stand-in for a PyTorch CUDA tensor, for the tests that drive the GPU backends' PyTorch paths
without a GPU (tests/test_torch_call_wiring.py on the emulator, tests/cudasim in numba's
simulator): the attributes those paths read, over `data`, a NumPy array or a simulator device
array standing for device memory."""
from __future__ import annotations

import types

import numpy as np


class FakeTensor:
    def __init__(self, data, device: int = 0):
        self.data, self.device = data, types.SimpleNamespace(type="cuda", index=device)

    dtype = property(lambda self: f"torch.{self.data.dtype.name}")
    shape = property(lambda self: tuple(self.data.shape))
    # PyTorch exports version 2, without a stream (read only by the stand-ins of the readers).
    __cuda_array_interface__ = property(lambda self: {"version": 2})

    def detach(self):
        return self

    def is_conj(self):
        return False

    def is_neg(self):
        return False

    def fill_(self, value):
        if hasattr(self.data, "copy_to_device"):        # a simulator device array
            self.data.copy_to_device(np.full(self.data.shape, value, self.data.dtype))
        else:
            self.data[...] = value
        return self

    def reshape(self, *shape):
        return FakeTensor(self.data.reshape(*shape), self.device.index)
