"""The accuracy of cpu:winograd against the float64 reference, on fresh standard-normal data: per
tile size, dtype and channel count C, the largest max|err| / max|ref| over a few seeds and
shapes, and that error as a fraction of the tests' tolerance RTOL[dtype] * sqrt(Cg*R*S) * max|ref|
(tests/_helpers.py). Not a test: it takes about a minute.

    python scripts/winograd_accuracy.py [--seeds 3]

Cases per C: conv2d (1, C, 20, 20) x (8, C, 3, 3) padding 1 (partial tiles on both edges for
F(4x4)), and conv1d (1, C, 250) x (8, C, 3) padding 1. Eight output channels: the error of an
output depends on the reduction over C, not on K, and the reference stays fast.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

import conv
from conv._spec import make_spec
from conv.backend.cpu import winograd
from conv.backend.reference import conv_reference

sys.path.insert(0, ".")
from tests._helpers import RTOL, make_operands  # noqa: E402

CHANNELS = (3, 16, 64, 256, 512)
CASES = (("conv2d", (20, 20), (3, 3)), ("conv1d", (250,), (3,)))


def error(op: str, c: int, spatial: tuple, kernel: tuple, dtype: str, m: int, seed: int):
    """(max|err| / max|ref|, that as a fraction of the tests' tolerance) of one case."""
    x, w, _ = make_operands(("winograd-accuracy", op, c, dtype, seed), (1, c) + spatial,
                            (8, c) + kernel, dtype)
    winograd.tile_size = lambda spec: m
    try:
        out = getattr(conv, op)(x, w, padding=1, backend="cpu", algorithm="winograd")
    finally:
        winograd.tile_size = original_tile_size
    spec = make_spec(op, x, w, None, 1, 1, 1, 1, "zeros")
    ref = conv_reference(x, w, None, spec)
    relative = float(np.abs(out.astype(np.float64) - ref).max() / np.abs(ref).max())
    tolerance = RTOL[np.dtype(dtype)] * np.sqrt(c * int(np.prod(kernel)))
    return relative, relative / tolerance


original_tile_size = winograd.tile_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    print(f"{'dtype':8} {'tile':10} " + " ".join(f"{'C=' + str(c):>17}" for c in CHANNELS))
    print(f"{'':19} " + " ".join(f"{'err/max|ref| tol':>17}" for _ in CHANNELS))
    worst = {}
    for dtype in ("float32", "float64", "float16"):
        for m in (2, 4):
            for op, spatial, kernel in CASES:
                cells = []
                for c in CHANNELS:
                    rel, frac = max(error(op, c, spatial, kernel, dtype, m, seed)
                                    for seed in range(args.seeds))
                    worst[(dtype, m)] = max(worst.get((dtype, m), 0.0), frac)
                    cells.append(f"{rel:9.2e} {frac:6.3f}")
                name = f"F({m}x{m})" if op == "conv2d" else f"F({m})"
                print(f"{dtype:8} {name:10} " + " ".join(f"{cell:>17}" for cell in cells))
    print("\nlargest error as a fraction of the tests' tolerance:")
    for (dtype, m), frac in worst.items():
        print(f"  {dtype:8} m={m}: {frac:.3f}")


if __name__ == "__main__":
    main()
