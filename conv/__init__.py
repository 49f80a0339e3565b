"""conv: Conv1d/Conv2d with PyTorch's exact semantics on NumPy arrays (CPU) and CUDA arrays (GPU).

    import numpy as np, conv
    y = conv.conv2d(x, w, b, stride=2, padding="same" ...)     # like torch.nn.functional.conv2d
    layer = conv.Conv2d(3, 64, 7, stride=2, padding=3, seed=0)  # like torch.nn.Conv2d
"""
from ._digest import kernels_digest
from .autotune import set_autotune
from .functional import conv1d, conv2d, explain
from .modules import Conv1d, Conv2d
from .plan import BACKEND_NAMES, Plan, backends, set_allow_tf32, set_workspace_limit

__all__ = ["conv1d", "conv2d", "Conv1d", "Conv2d", "explain", "backends", "Plan",
           "BACKEND_NAMES", "kernels_digest", "set_workspace_limit", "set_autotune",
           "set_allow_tf32"]
__version__ = "0.1.0"
