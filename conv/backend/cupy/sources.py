"""The CUDA C sources of the CuPy backend (kernels/cuda/, installed as conv.kernels.cuda) and every
specialisation the backend can launch. No CuPy needed: CI compiles all of them with NVRTC
(tests/test_nvrtc_compile.py).

Tile configurations, by name (what `Plan.config` and the autotuner pass): DIRECT_CONFIGS
("kb1", "kb4", "kb8": direct version 1's output channels per thread, entry points of one module)
and GEMM_TILE_CONFIGS ("128x128x8", "64x64x16": gemm.cu version 1's tiles, each its own module
through -D options; `gemm_tiles(dtype)` says which a dtype has, GEMM_TILES its default), and
IGEMM_TILE_CONFIGS ("128x64x16", "64x64x16": implicit_gemm.cu's tensor-core tiles, float16,
bfloat16 and float32 only, each its own module; IGEMM_DTYPES, IGEMM_PRECISIONS name its dtypes and
entry points; "<tile>/k2", "<tile>/k4" their split-K forms, `igemm_configs(spec)` says where),
and DEPTHWISE_CONFIGS ("1x1024", "1x256", "8x64", "4x32": depthwise.cu's output tiles, entry points
of the dtype's one module; `depthwise_configs(spec)` says which fit a spec, the preferred first).

`kernel_source(name)` is the self-contained text CuPy and NVRTC both compile: each
`#include "x.cuh"` replaced by that file, with the host's tables (padding modes from
conv/_padding.py, accumulation types from conv/_dtypes.py) as macros before common.cuh. CuPy's
kernel cache hashes all of it.
"""
from __future__ import annotations

import importlib.resources
import re
from dataclasses import dataclass

import numpy as np

from ..._dtypes import BFLOAT16, accumulator_dtype
from ..._dtypes import cuda_defines as accumulator_defines
from ..._padding import cuda_defines as padding_defines
from ..._spec import SUPPORTED_DTYPES

SOURCES = ("conv2d_direct.cu", "im2col.cu", "gemm.cu", "implicit_gemm.cu", "splitk_sum.cu",
           "depthwise.cu")
# Options handed to cupy.RawModule (CuPy adds -ftz=true itself; conv._nvrtc adds it in CI).
BASE_OPTIONS = ("--std=c++17",)


@dataclass(frozen=True)
class GemmTile:
    """A tile configuration of gemm.cu version 1 (passed as -DCONV_GEMM_BM etc.): a block of
    (BM/TM) x (BN/TN) threads computes BM x BN outputs (m, j), TM x TN of them per thread in
    registers, staging BK reduction steps of A and B in shared memory per iteration."""

    bm: int
    bn: int
    bk: int
    tm: int
    tn: int
    max_acc_bytes: int      # the widest accumulator it is built for: TM*TN of them per thread

    @property
    def name(self) -> str:
        return f"{self.bm}x{self.bn}x{self.bk}"

    @property
    def threads(self) -> int:
        return (self.bm // self.tm) * (self.bn // self.tn)

    def shared_bytes(self, dtype) -> int:
        """Static shared memory of gemm_tiled for `dtype`: As[BK][BM + 1] and Bs[BK][BN] of Acc."""
        return self.bk * (self.bm + 1 + self.bn) * accumulator_dtype(dtype).itemsize

    def options(self) -> tuple[str, ...]:
        return (f"-DCONV_GEMM_BM={self.bm}", f"-DCONV_GEMM_BN={self.bn}",
                f"-DCONV_GEMM_BK={self.bk}", f"-DCONV_GEMM_TM={self.tm}",
                f"-DCONV_GEMM_TN={self.tn}")


# The GEMM tiles by name, the one home of their shapes (the autotuner picks among them by name:
# conv/backend/cupy/__init__.py:configs). Each is 256 threads, gemm.cu's static_asserts hold for
# it, and its shared memory stays under 48 KiB for every accumulator it allows (at most 33 KiB:
# 64x64x16 with complex128). 128x128x8 keeps 64 accumulators per thread in registers, so only
# 4-byte ones (float16/float32): 8-byte ones would take 128 of the 255 registers before any
# operand, 16-byte ones all of them.
GEMM_TILE_CONFIGS: dict[str, GemmTile] = {t.name: t for t in (
    GemmTile(128, 128, 8, 8, 8, max_acc_bytes=4),
    GemmTile(64, 64, 16, 4, 4, max_acc_bytes=16),
)}


def gemm_tiles(dtype) -> tuple[str, ...]:
    """The names of the GEMM tiles gemm_tiled has for `dtype`, the default (largest) first."""
    acc = accumulator_dtype(dtype).itemsize
    return tuple(name for name, t in GEMM_TILE_CONFIGS.items() if acc <= t.max_acc_bytes)


# The tile each dtype runs by default (plan.config ""): the first its accumulator allows,
# 128x128x8 for float16/float32, 64x64x16 for the 8- and 16-byte accumulators.
GEMM_TILES: dict[np.dtype, str] = {dt: gemm_tiles(dt)[0] for dt in SUPPORTED_DTYPES}


@dataclass(frozen=True)
class IgemmTile:
    """A tile configuration of implicit_gemm.cu (-DCONV_IGEMM_BM etc.): a block of
    32 * warps_m * warps_n threads computes BM x BN outputs (m, j), each warp a
    (BM/warps_m) x (BN/warps_n) sub-tile of 16 x 8 mma tiles, with `stages` shared-memory buffers
    of BK reduction steps in its pipeline."""

    bm: int
    bn: int
    bk: int
    warps_m: int
    warps_n: int
    stages: int

    @property
    def name(self) -> str:
        return f"{self.bm}x{self.bn}x{self.bk}"

    @property
    def threads(self) -> int:
        return 32 * self.warps_m * self.warps_n

    def shared_bytes(self, dtype) -> int:
        """Static shared memory of the kernel for `dtype` (float32, float16 or bfloat16): per
        stage As[BM][BK + pad] and Bs[BK][BN + 8] (pads: 4 floats or 8 halves for A, 8 for B; the
        kernel's header says why)."""
        item = np.dtype(dtype).itemsize
        a_pad = 4 if item == 4 else 8
        return self.stages * (self.bm * (self.bk + a_pad) + self.bk * (self.bn + 8)) * item

    def options(self) -> tuple[str, ...]:
        return (f"-DCONV_IGEMM_BM={self.bm}", f"-DCONV_IGEMM_BN={self.bn}",
                f"-DCONV_IGEMM_BK={self.bk}", f"-DCONV_IGEMM_WARPS_M={self.warps_m}",
                f"-DCONV_IGEMM_WARPS_N={self.warps_n}", f"-DCONV_IGEMM_STAGES={self.stages}")


# implicit_gemm.cu's tiles by name, the default first (nothing measured yet: the larger tile reuses
# each loaded element over more outputs). Both are 4 warps in 2 x 2 and 3 stages; the largest
# static shared memory is 43.5 KiB (128x64x16, float32), under the 48 KiB a static array may use.
IGEMM_TILE_CONFIGS: dict[str, IgemmTile] = {t.name: t for t in (
    IgemmTile(128, 64, 16, 2, 2, 3),
    IgemmTile(64, 64, 16, 2, 2, 3),
)}
IGEMM_TILE = next(iter(IGEMM_TILE_CONFIGS))
# Split-K: "<tile>/k<splits>" runs the tile with its reduction cut into `splits` parts, each a
# block of its own writing fp32 partial sums to a workspace that a second kernel adds up
# (splitk_sum.cu, in split order: deterministic). Offered (igemm_configs) where the
# unsplit grid has fewer than SPLITK_MAX_BLOCKS blocks, two per SM of a 132-SM H100/H200 (the late
# layers of a network: small N*P*Q, long reductions), and every split keeps at least 2 k-tiles;
# not measured on a GPU yet (the autotuner times them).
IGEMM_SPLITS = (2, 4)
SPLITK_MAX_BLOCKS = 264


def igemm_config(name: str) -> tuple[str, int]:
    """(tile name, splits) of an implicit_gemm configuration name ("" the default tile)."""
    tile, _, k = (name or IGEMM_TILE).partition("/k")
    if tile not in IGEMM_TILE_CONFIGS or (k and int(k) not in IGEMM_SPLITS):
        raise ValueError(f"implicit_gemm has no tile configuration {name!r}")
    return tile, int(k) if k else 1


def igemm_configs(spec) -> tuple[str, ...]:
    """The configurations implicit_gemm offers for spec: every tile, and its split-K forms where
    they may pay (above)."""
    out = list(IGEMM_TILE_CONFIGS)
    crs = spec.c_per_group * spec.r * spec.s
    columns = spec.n * spec.p * spec.q
    for name, t in IGEMM_TILE_CONFIGS.items():
        blocks = -(-columns // t.bn) * -(-spec.k_per_group // t.bm) * spec.groups
        k_tiles = -(-crs // t.bk)
        out += [f"{name}/k{s}" for s in IGEMM_SPLITS
                if blocks < SPLITK_MAX_BLOCKS and k_tiles >= 2 * s]
    return tuple(out)
# The dtypes implicit_gemm.cu is built for, and each one's precisions (entry point
# implicit_gemm_<precision>_<dtype>), the default first: 3xTF32 keeps float32 accurate; "tf32" is
# the opt-in (PyTorch's allow_tf32).
IGEMM_PRECISIONS: dict[np.dtype, tuple[str, ...]] = {
    np.dtype(np.float32): ("3xtf32", "tf32"),
    np.dtype(np.float16): ("f16",),
    BFLOAT16: ("bf16",),
}
IGEMM_DTYPES = tuple(IGEMM_PRECISIONS)
@dataclass(frozen=True)
class DepthwiseTile:
    """A tile of depthwise.cu (its entry point depthwise_<P>x<Q>_<dtype>): a block of
    tile_p * tile_q / qt threads computes tile_p x tile_q outputs of one (n, k) plane, qt
    consecutive columns per thread, from an input patch and the R*S weights staged in a static
    shared buffer of smem_bytes. The numbers must match CONV_DEPTHWISE_ENTRIES in the kernel."""

    tile_p: int
    tile_q: int
    qt: int
    smem_bytes: int

    @property
    def name(self) -> str:
        return f"{self.tile_p}x{self.tile_q}"

    @property
    def threads(self) -> int:
        return self.tile_p * self.tile_q // self.qt

    def shared_elements(self, spec) -> int:
        """Elements of the buffer spec needs: the patch PH x PW, then the R*S weights."""
        ph = (self.tile_p - 1) * spec.stride[0] + (spec.r - 1) * spec.dilation[0] + 1
        pw = (self.tile_q - 1) * spec.stride[1] + (spec.s - 1) * spec.dilation[1] + 1
        return ph * pw + spec.r * spec.s

    def fits(self, spec) -> bool:
        return self.shared_elements(spec) <= self.smem_bytes // spec.dtype.itemsize


# depthwise.cu's tiles by name. Long rows ("1x1024", "1x256") for conv1d and single-row outputs,
# where a block's halo (S-1)*dil_w is small against its run of q; 2-D tiles ("8x64", "4x32") for
# conv2d. Each kind's second tile is the fallback where a huge dilation or stride makes the first
# one's patch overflow its buffer. Static shared memory at most 24 KiB (under 48 KiB).
DEPTHWISE_CONFIGS: dict[str, DepthwiseTile] = {t.name: t for t in (
    DepthwiseTile(1, 1024, 4, 24576),
    DepthwiseTile(1, 256, 2, 24576),
    DepthwiseTile(8, 64, 4, 16384),
    DepthwiseTile(4, 32, 2, 24576),
)}


def depthwise_configs(spec) -> tuple[str, ...]:
    """The names of depthwise.cu's tiles whose shared buffer holds spec's patch and weights, the
    preferred first: the long rows where the output has one row (conv1d), the 2-D tiles first
    otherwise; () where none fits."""
    order = ("1x1024", "1x256", "8x64", "4x32") if spec.p == 1 else (
        "8x64", "4x32", "1x1024", "1x256")
    return tuple(name for name in order if DEPTHWISE_CONFIGS[name].fits(spec))


DIRECT_KBS = (1, 4, 8)          # output channels per thread of direct version 1
# Direct version 1's configurations by name: one entry point per KB, all in one module (the
# kernel's ceil-division over k-blocks and its kcount mask take any KB for any channel count).
DIRECT_CONFIGS: dict[str, int] = {f"kb{kb}": kb for kb in DIRECT_KBS}
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


def module_options(source: str, dtype, tile: str = "") -> tuple[str, ...]:
    """The compile options of the module built from `source` for `dtype`; for gemm.cu with the
    GEMM tile named `tile` ("": the dtype's default, GEMM_TILES), for implicit_gemm.cu with its
    tile `tile` ("": IGEMM_TILE)."""
    dt = np.dtype(dtype)
    opts = BASE_OPTIONS + (f"-DCONV_WANT_{dtype_name(dt)}",)
    if source == "implicit_gemm.cu":
        if dt not in IGEMM_DTYPES:
            raise ValueError(f"implicit_gemm.cu is built for {[d.name for d in IGEMM_DTYPES]} "
                             f"only, not {dt}")
        name = tile or IGEMM_TILE
        if name not in IGEMM_TILE_CONFIGS:
            raise ValueError(f"implicit_gemm.cu has no tile {name!r}; it has "
                             f"{list(IGEMM_TILE_CONFIGS)}")
        opts += IGEMM_TILE_CONFIGS[name].options()
    elif source == "gemm.cu":
        name = tile or GEMM_TILES[dt]
        if name not in gemm_tiles(dt):
            raise ValueError(f"gemm.cu has no tile {name!r} for {dt}; it has "
                             f"{list(gemm_tiles(dt))}")
        opts += GEMM_TILE_CONFIGS[name].options()
    elif tile:
        raise ValueError(f"{source} takes no GEMM tile (asked for {tile!r})")
    return opts


def gemm_tile_of(options: tuple[str, ...]) -> str:
    """The name of the tile a module's options build, gemm.cu's GEMM tile or implicit_gemm.cu's
    (their -D options differ: -DCONV_GEMM_* and -DCONV_IGEMM_*); "" for a module without one."""
    tables = (GEMM_TILE_CONFIGS, IGEMM_TILE_CONFIGS)
    return next((name for table in tables for name, t in table.items()
                 if set(t.options()) <= set(options)), "")


def module_label(source: str, options: tuple[str, ...]) -> str:
    """"source[dtype]", with ",tile" after the dtype where a tiled module's tile is not its
    default ("gemm.cu[float32,64x64x16]", "implicit_gemm.cu[float16,64x64x16]")."""
    dtype = next(o[len("-DCONV_WANT_"):] for o in options if o.startswith("-DCONV_WANT_"))
    tile = gemm_tile_of(options)
    default = IGEMM_TILE if source == "implicit_gemm.cu" else GEMM_TILES[np.dtype(dtype)]
    if tile and tile != default:
        return f"{source}[{dtype},{tile}]"
    return f"{source}[{dtype}]"


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
    if source == "implicit_gemm.cu":
        return tuple(f"implicit_gemm_{p}{split}_{name}"
                     for p in IGEMM_PRECISIONS.get(np.dtype(dtype), ()) for split in ("", "_splitk"))
    if source == "splitk_sum.cu":
        return (f"splitk_sum_{name}",) if np.dtype(dtype) in IGEMM_PRECISIONS else ()
    if source == "depthwise.cu":
        return tuple(f"depthwise_{tile}_{name}" for tile in DEPTHWISE_CONFIGS)
    raise ValueError(f"unknown kernel source {source!r}")


def specialisations() -> list[tuple[str, str, tuple[str, ...]]]:
    """Every (source file, entry point, compile options) this backend can launch: each module's
    entry points with its default options, and gemm_tiled once more for each other GEMM tile of
    the dtype (the tiled GEMM's configurations; gemm_naive is launched from the default module),
    and implicit_gemm.cu's entry points once per tile for float16, bfloat16 and float32."""
    specs = []
    for source in SOURCES:
        if source == "implicit_gemm.cu":
            specs += [(source, entry, module_options(source, dt, t))
                      for dt in IGEMM_DTYPES for t in IGEMM_TILE_CONFIGS
                      for entry in entry_points(source, dt)]
            continue
        for dt in (IGEMM_DTYPES if source == "splitk_sum.cu" else SUPPORTED_DTYPES):
            specs += [(source, entry, module_options(source, dt))
                      for entry in entry_points(source, dt)]
            if source == "gemm.cu":
                specs += [(source, f"gemm_tiled_{dtype_name(dt)}", module_options(source, dt, t))
                          for t in gemm_tiles(dt) if t != GEMM_TILES[dt]]
    return specs
