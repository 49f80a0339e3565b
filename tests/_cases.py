"""The parameter grid every backend's tests run: one list, shared by CPU and GPU tests.

Each case: (op, x_shape, w_shape, has_bias, kwargs). Shapes are small and odd so partial tiles and
edge taps are exercised; together they cover every stride, padding form, dilation, groups form,
padding mode, unbatched input and the empty shapes PyTorch accepts.
"""
from __future__ import annotations


def _c(op, x, w, bias=True, **kw):
    return pytest_id(op, x, w, bias, kw), (op, x, w, bias, kw)


def pytest_id(op, x, w, bias, kw) -> str:
    parts = [op, "x" + "x".join(map(str, x)), "w" + "x".join(map(str, w))]
    parts += [f"{k}={v}" for k, v in kw.items()]
    if not bias:
        parts.append("nobias")
    return "-".join(str(p).replace(" ", "") for p in parts)


_RAW = [
    # conv2d: basics
    _c("conv2d", (2, 3, 7, 9), (4, 3, 3, 3)),
    _c("conv2d", (2, 3, 7, 9), (4, 3, 3, 3), bias=False),
    _c("conv2d", (1, 5, 8, 8), (6, 5, 1, 1)),                        # pointwise
    _c("conv2d", (2, 3, 9, 10), (4, 3, 3, 2), stride=2),
    _c("conv2d", (2, 3, 9, 10), (4, 3, 3, 2), stride=(1, 3)),
    _c("conv2d", (2, 3, 9, 10), (4, 3, 3, 3), padding=1),
    _c("conv2d", (2, 3, 9, 10), (4, 3, 3, 3), padding=(2, 0)),
    _c("conv2d", (2, 3, 9, 10), (4, 3, 3, 3), padding=[0, 3]),
    _c("conv2d", (2, 3, 11, 12), (4, 3, 3, 3), dilation=2),
    _c("conv2d", (2, 3, 11, 12), (4, 3, 3, 2), dilation=(3, 1), padding=2, stride=2),
    _c("conv2d", (2, 3, 9, 10), (4, 3, 3, 3), padding="same"),
    _c("conv2d", (2, 3, 9, 10), (4, 3, 4, 2), padding="same"),       # even kernels: asymmetric
    _c("conv2d", (2, 3, 9, 10), (4, 3, 4, 3), padding="same", dilation=(1, 2)),
    _c("conv2d", (2, 3, 9, 10), (4, 3, 3, 3), padding="valid"),
    _c("conv2d", (2, 6, 8, 9), (4, 3, 3, 3), groups=2),
    _c("conv2d", (2, 6, 8, 9), (6, 1, 3, 3), groups=6, padding=1),       # depthwise
    _c("conv2d", (2, 4, 8, 9), (12, 1, 3, 3), groups=4, stride=2),       # channel multiplier 3
    _c("conv2d", (1, 8, 7, 7), (8, 2, 5, 5), groups=4, padding=2, dilation=1),
    _c("conv2d", (2, 3, 7, 8), (4, 3, 3, 3), padding=(1, 2), padding_mode="reflect"),
    _c("conv2d", (2, 3, 7, 8), (4, 3, 3, 3), padding=2, padding_mode="replicate"),
    _c("conv2d", (2, 3, 7, 8), (4, 3, 3, 3), padding=(3, 1), padding_mode="circular"),
    _c("conv2d", (2, 3, 7, 8), (4, 3, 3, 3), padding=(7, 8), padding_mode="circular"),   # = size
    _c("conv2d", (2, 3, 7, 8), (4, 3, 4, 3), padding="same", padding_mode="reflect"),
    _c("conv2d", (2, 4, 7, 8), (4, 2, 3, 3), padding=1, stride=2, dilation=2, groups=2,
       padding_mode="replicate"),
    _c("conv2d", (3, 7, 8), (4, 3, 3, 3)),                               # unbatched
    _c("conv2d", (3, 7, 8), (4, 3, 3, 3), padding=1, padding_mode="reflect"),
    _c("conv2d", (0, 3, 7, 8), (4, 3, 3, 3)),                            # empty batch
    _c("conv2d", (2, 0, 7, 8), (4, 0, 3, 3)),                            # zero channels
    _c("conv2d", (0, 3, 7, 8), (4, 3, 3, 3), padding=1, padding_mode="reflect"),
    _c("conv2d", (1, 2, 3, 3), (3, 2, 3, 3)),                            # kernel = input
    _c("conv2d", (1, 2, 1, 17), (3, 2, 1, 4), stride=(1, 5)),
    # conv1d
    _c("conv1d", (2, 3, 17), (4, 3, 3)),
    _c("conv1d", (2, 3, 17), (4, 3, 3), bias=False, stride=3),
    _c("conv1d", (2, 3, 17), (4, 3, 5), padding=2),
    _c("conv1d", (2, 3, 30), (4, 3, 3), dilation=4, padding="same"),
    _c("conv1d", (2, 3, 17), (4, 3, 4), padding="same"),
    _c("conv1d", (2, 3, 17), (4, 3, 3), padding="valid"),
    _c("conv1d", (2, 6, 17), (6, 1, 5), groups=6, padding=2),            # depthwise
    _c("conv1d", (2, 6, 17), (9, 2, 3), groups=3),
    _c("conv1d", (2, 3, 17), (4, 3, 3), padding=2, padding_mode="reflect"),
    _c("conv1d", (2, 3, 17), (4, 3, 3), padding=4, padding_mode="replicate"),
    _c("conv1d", (2, 3, 17), (4, 3, 3), padding=5, padding_mode="circular"),
    _c("conv1d", (3, 17), (4, 3, 3), padding=1),                         # unbatched
    _c("conv1d", (0, 3, 17), (4, 3, 3)),
    _c("conv1d", (2, 0, 17), (4, 0, 3)),
    _c("conv1d", (1, 2, 300), (3, 2, 31), stride=4, padding=15),         # long kernel, strided
    # One output per row: the stride reads nothing new (recorded as 1), yet P*Q < H*W.
    _c("conv1d", (2, 2, 3), (3, 2, 1), stride=3),
    _c("conv2d", (1, 2, 3, 4), (3, 2, 1, 1), stride=(3, 4)),
]

CASES = [case for _, case in _RAW]
CASE_IDS = [case_id for case_id, _ in _RAW]
