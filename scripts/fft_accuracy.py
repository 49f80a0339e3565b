"""The accuracy of cpu:fft against the float64 reference, on fresh standard-normal data: the
largest error over each dtype's cases as a fraction of the tests' tolerance
RTOL[dtype] * sqrt(Cg*R*S) * max|ref| (tests/_helpers.py). Not a test: it takes minutes.

    python scripts/fft_accuracy.py [--quick] [--transform32 float64]

The float64 reference of a large case is cpu:im2col in float64/complex128 on the same data cast
up (BLAS, error ~1e-16 relative: the reference backend's tap loops would take hours there; the
small cases check that both agree). --transform32 float64 measures float64 transforms of float32.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time

import numpy as np

import conv
from conv.backend.cpu import fft as fft_module
from conv._spec import make_spec

sys.path.insert(0, ".")
from tests._helpers import RTOL, make_operands  # noqa: E402


def configs(quick: bool):
    """(op, x shape, w shape, kwargs): kernels 3..255, channels 1..256, lengths up to 64k."""
    kernels = (3, 9, 31, 63, 127, 255) if not quick else (3, 31, 255)
    channels = (1, 4, 16, 64, 256) if not quick else (1, 16, 256)
    lengths = (512, 4096, 16384, 65536) if not quick else (1024, 65536)
    for s, c, length in itertools.product(kernels, channels, lengths):
        if c * c * s * length > (4e9 if not quick else 1e9) or length < s:
            continue
        yield "conv1d", (1, c, length), (c, c, s), {"padding": "same"}
    # Groups, depthwise, dilation, stride, an odd kernel length, random lengths.
    yield "conv1d", (2, 32, 8000), (32, 1, 127), {"groups": 32, "padding": "same"}
    yield "conv1d", (1, 16, 20000), (16, 4, 100), {"groups": 4, "dilation": 3}
    yield "conv1d", (1, 8, 30000), (8, 8, 201), {"stride": 3, "padding": 100}
    yield "conv1d", (1, 1, 65536), (1, 1, 3), {}
    yield "conv1d", (1, 256, 4000), (256, 256, 31), {"padding": "same"}
    for k in (3, 9, 31) if not quick else (9,):
        yield "conv2d", (1, 16, 128, 128), (16, 16, k, k), {"padding": "same"}
    yield "conv2d", (2, 64, 48, 48), (64, 64, 7, 7), {"padding": 3}
    yield "conv2d", (1, 4, 200, 300), (4, 4, 25, 9), {"dilation": (2, 3), "stride": (1, 2)}
    yield "conv2d", (1, 1, 256, 256), (1, 1, 3, 3), {"padding": 1}


def reference(op, x, w, kwargs):
    wide = np.complex128 if x.dtype.kind == "c" else np.float64
    return getattr(conv, op)(x.astype(wide), w.astype(wide), backend="cpu", algorithm="im2col",
                             **kwargs)


def ratio(op, x, w, kwargs, out, ref) -> float:
    spec = make_spec(op, x, w, None, kwargs.get("stride", 1), kwargs.get("padding", 0),
                     kwargs.get("dilation", 1), kwargs.get("groups", 1), "zeros")
    tol = RTOL[x.dtype] * np.sqrt(spec.c_per_group * spec.r * spec.s) * np.abs(ref).max()
    return float(np.abs(out.astype(ref.dtype) - ref).max() / tol)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--transform32", default="float32", choices=["float32", "float64"])
    parser.add_argument("--dtypes", default="float32,float16,float64,complex64,complex128")
    args = parser.parse_args()
    fft_module.TRANSFORM_DTYPE[np.dtype(np.float32)] = np.dtype(args.transform32)
    worst = {}
    for op, xs, ws, kwargs in configs(args.quick):
        for dtype in args.dtypes.split(","):
            if dtype != "float32" and xs[1] * ws[0] * ws[-1] * xs[-1] > 2e9:
                continue                # the large cases in float32 only (the dtype at stake)
            x, w, _ = make_operands(("fft-accuracy", op, xs, ws, str(kwargs), dtype), xs, ws,
                                    dtype)
            start = time.perf_counter()
            out = getattr(conv, op)(x, w, backend="cpu", algorithm="fft", **kwargs)
            took = time.perf_counter() - start
            value = ratio(op, x, w, kwargs, out, reference(op, x, w, kwargs))
            worst[dtype] = max(worst.get(dtype, (0.0, None)), (value, (op, xs, ws, kwargs)))
            print(f"{dtype:10s} {op} x{xs} w{ws} {kwargs}: {value:.4f} of the tolerance "
                  f"({took * 1e3:.1f} ms)", flush=True)
    print("\nlargest error / tolerance per dtype:")
    for dtype, (value, case) in worst.items():
        print(f"  {dtype:10s} {value:.4f}  at {case}")


if __name__ == "__main__":
    main()
