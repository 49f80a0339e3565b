"""The CUDA C sources of the CuPy backend (kernels/cuda/, installed as conv.kernels.cuda) and every
specialisation the backend can launch. No CuPy needed: CI compiles all of them with NVRTC
(tests/test_nvrtc_compile.py).

`kernel_source(name)` is the self-contained text CuPy and NVRTC both compile: each
`#include "x.cuh"` replaced by that file, with the host's tables (padding modes from
conv/_padding.py, accumulation types from conv/_dtypes.py) as macros before common.cuh. CuPy's
kernel cache hashes all of it.
"""
from __future__ import annotations

import importlib.resources
import re

import numpy as np

from ..._dtypes import cuda_defines as accumulator_defines
from ..._padding import cuda_defines as padding_defines
from ..._spec import SUPPORTED_DTYPES

SOURCES = ("conv2d_direct.cu", "im2col.cu", "gemm.cu")
# Options handed to cupy.RawModule (CuPy adds -ftz=true itself; conv._nvrtc adds it in CI).
BASE_OPTIONS = ("--std=c++17",)
# GEMM tiles (BM, BN, BK, TM, TN) per dtype: 128x128 with 8x8 outputs per thread where the
# accumulator is 4 bytes, 64x64 with 4x4 for 8- and 16-byte accumulators (registers, shared memory).
_GEMM_TILE_SMALL_ACC = (128, 128, 8, 8, 8)
_GEMM_TILE_WIDE_ACC = (64, 64, 16, 4, 4)
GEMM_TILES = {dt: (_GEMM_TILE_SMALL_ACC if dt in (np.dtype(np.float16), np.dtype(np.float32))
                   else _GEMM_TILE_WIDE_ACC) for dt in SUPPORTED_DTYPES}
DIRECT_KBS = (1, 4, 8)          # output channels per thread of direct version 1
_INCLUDE = re.compile(r'^#include "([\w.]+\.cuh)"[ \t]*$', re.MULTILINE)


def read_source(name: str) -> str:
    """Text of kernels/cuda/<name>."""
    return importlib.resources.files("conv.kernels.cuda").joinpath(name).read_text()


def dtype_name(dtype) -> str:
    """The suffix of the entry points for `dtype` ("float32", "complex64", "int8", ...)."""
    return np.dtype(dtype).name


# ---------------------------------------------------------------------------------------------
# Sources and specialisations (no CuPy needed)

def kernel_source(name: str, text: str | None = None) -> str:
    """The self-contained text of kernels/<name>: each ``#include "x.cuh"`` replaced by that file.

    CuPy and NVRTC both compile this very text, and CuPy's kernel cache hashes all of it (a change
    to common.cuh recompiles every module).
    """
    text = read_source(name) if text is None else text     # text: a changed copy (tests)

    def paste(match: re.Match) -> str:
        header = read_source(match.group(1)).replace("#pragma once\n", "")
        if match.group(1) == "common.cuh":      # the host's tables first
            header = (f'#line 1 "conv/_padding.py"\n{padding_defines()}'
                      f'#line 1 "conv/_dtypes.py"\n{accumulator_defines()}'
                      f'#line 1 "{match.group(1)}"\n{header}')
        next_line = text.count("\n", 0, match.start()) + 2     # the line after the #include
        return f'{header}\n#line {next_line} "{name}"'

    return _INCLUDE.sub(paste, text)


def module_options(source: str, dtype) -> tuple[str, ...]:
    """The compile options of the module built from `source` for `dtype`."""
    dt = np.dtype(dtype)
    opts = BASE_OPTIONS + (f"-DCONV_WANT_{dtype_name(dt)}",)
    if source == "gemm.cu":
        bm, bn, bk, tm, tn = GEMM_TILES[dt]
        opts += (f"-DCONV_GEMM_BM={bm}", f"-DCONV_GEMM_BN={bn}", f"-DCONV_GEMM_BK={bk}",
                 f"-DCONV_GEMM_TM={tm}", f"-DCONV_GEMM_TN={tn}")
    return opts


def entry_points(source: str, dtype) -> tuple[str, ...]:
    """Every entry point of the module built from `source` for `dtype`."""
    name = dtype_name(dtype)
    if source == "conv2d_direct.cu":
        return (f"conv2d_direct_naive_{name}",) + tuple(f"conv2d_direct_kb{kb}_{name}"
                                                      for kb in DIRECT_KBS)
    if source == "im2col.cu":
        return (f"im2col_{name}",)
    if source == "gemm.cu":
        return (f"gemm_naive_{name}", f"gemm_tiled_{name}")
    raise ValueError(f"unknown kernel source {source!r}")


def specialisations() -> list[tuple[str, str, tuple[str, ...]]]:
    """Every (source file, entry point, compile options) this backend can launch."""
    return [(source, entry, module_options(source, dt))
            for source in SOURCES for dt in SUPPORTED_DTYPES
            for entry in entry_points(source, dt)]
