"""Outputs of 1,352 CPU calls (every CPU algorithm, five dtypes, all padding modes, strides,
dilations, groups, non-contiguous inputs, whole and chunked under a 4 KiB workspace cap), saved for
a bitwise comparison of two versions of conv (a refactor must change no bit):

    git worktree add /tmp/old <commit>
    python3 tests/bitwise_versions.py /tmp/old old.npz
    python3 tests/bitwise_versions.py . new.npz
    python3 tests/bitwise_versions.py --compare old.npz new.npz
"""
import os
import sys

import numpy as np

if sys.argv[1] == "--compare":
    old, new = np.load(sys.argv[2]), np.load(sys.argv[3])
    assert set(old.files) == set(new.files), "different case lists"
    differ = [k for k in old.files if old[k].dtype != new[k].dtype or old[k].shape != new[k].shape
              or old[k].tobytes() != new[k].tobytes()]
    print(f"{len(old.files)} outputs, {len(differ)} differ: {differ[:20]}")
    sys.exit(1 if differ else 0)

sys.path.insert(0, os.path.abspath(sys.argv[1]))
import conv  # noqa: E402

assert conv.__file__.startswith(os.path.abspath(sys.argv[1])), conv.__file__
rng = np.random.default_rng(12345)
out = {}
dtypes = ["float32", "float64", "float16", "int32", "complex64"]
modes = ["zeros", "reflect", "replicate", "circular"]
count = 0
for i in range(260):
    op = "conv2d" if i % 3 else "conv1d"
    g = int(rng.choice([1, 1, 2, 3]))
    cg = int(rng.integers(1, 4)); kg = int(rng.integers(1, 5))
    if i % 7 == 0: cg, kg = 1, 1          # depthwise
    n = int(rng.integers(1, 4))
    h = int(rng.integers(3, 12)); w = int(rng.integers(3, 40))
    r = int(rng.integers(1, 4)); s = int(rng.integers(1, 5))
    st = (int(rng.integers(1, 3)), int(rng.integers(1, 4)))
    dl = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
    mode = modes[i % 4]
    pad = (int(rng.integers(0, min(h, r + 1))), int(rng.integers(0, min(w, s + 1))))
    if mode == "reflect": pad = (min(pad[0], h - 1), min(pad[1], w - 1))
    dt = dtypes[i % len(dtypes)]
    if op == "conv1d":
        xs, ws = (n, g * cg, w), (g * kg, cg, s); kw = dict(stride=st[1], dilation=dl[1], padding=pad[1])
    else:
        xs, ws = (n, g * cg, h, w), (g * kg, cg, r, s); kw = dict(stride=st, dilation=dl, padding=pad)
    def draw(shape):
        v = rng.standard_normal(shape)
        if dt.startswith("int"): v = rng.integers(-5, 6, shape)
        if dt.startswith("complex"): v = v + 1j * rng.standard_normal(shape)
        return np.asarray(v).astype(dt)
    x, wt, b = draw(xs), draw(ws), draw((g * kg,))
    if i % 5 == 0: x = x[..., ::-1]      # non-contiguous
    for algo in ["implicit", "im2col", "direct"]:
        if algo == "implicit" and dt in ("int32", "complex64"): continue
        for limit in (None, 4096):
            conv.set_workspace_limit(limit or (64 << 20), "cpu")
            try:
                y = getattr(conv, op)(x, wt, b, groups=g, padding_mode=mode, backend="cpu", algorithm=algo, **kw)
            except (ValueError, TypeError) as e:
                y = np.array(str(e))
            out[f"{i}-{algo}-{limit}"] = y; count += 1
np.savez(sys.argv[2], **out)
print(count, "outputs")
