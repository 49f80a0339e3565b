"""Hypothesis strategies for random valid convolution configurations (shared by CPU and GPU tests)."""
from hypothesis import assume
from hypothesis import strategies as st


@st.composite
def conv_configs(draw, max_side: int = 9, max_channels: int = 6, dtypes=("float32", "float64"),
                 ops=("conv1d", "conv2d")):
    """(op, x_shape, w_shape, has_bias, kwargs, dtype) for a call PyTorch accepts."""
    op = draw(st.sampled_from(list(ops)))
    nsp = 1 if op == "conv1d" else 2
    groups = draw(st.integers(1, 3))
    c = groups * draw(st.integers(1, max(1, max_channels // groups)))
    k = groups * draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(nsp))
    dilation = tuple(draw(st.integers(1, 3)) for _ in range(nsp))
    mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    padding_kind = draw(st.sampled_from(["int", "tuple", "same", "valid"]))
    stride = (1,) * nsp if padding_kind == "same" else tuple(draw(st.integers(1, 3)) for _ in range(nsp))
    spatial = tuple(draw(st.integers(1, max_side)) for _ in range(nsp))
    if padding_kind == "int":
        padding = draw(st.integers(0, 3))
        pads = [(padding, padding)] * nsp
    elif padding_kind == "tuple":
        padding = tuple(draw(st.integers(0, 3)) for _ in range(nsp))
        pads = [(p, p) for p in padding]
    elif padding_kind == "same":
        padding = "same"
        pads = [(d * (kk - 1) // 2, d * (kk - 1) - d * (kk - 1) // 2) for kk, d in zip(kernel, dilation)]
    else:
        padding = "valid"
        pads = [(0, 0)] * nsp
    for size, (lo, hi), kk, d in zip(spatial, pads, kernel, dilation):
        assume(size + lo + hi >= d * (kk - 1) + 1)
        if mode == "reflect":
            assume(lo < size and hi < size)
        if mode == "circular":
            assume(lo <= size and hi <= size)
    batched = draw(st.booleans())
    n = draw(st.integers(1, 3))
    x_shape = ((n,) if batched else ()) + (c,) + spatial
    w_shape = (k, c // groups) + kernel
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=mode)
    dtype = draw(st.sampled_from(list(dtypes)))
    return op, x_shape, w_shape, draw(st.booleans()), kwargs, dtype
