"""What the CuPy backend would launch, computed without a GPU: `launches(plan, operands)` is plain
arithmetic on the plan (conv/backend/cupy/__init__.py separates it from who launches), so CI checks
every launch's entry point, argument count, grid and block, and the workspace chunking, with NumPy
arrays standing in for device arrays, and each tile configuration the autotuner can name
(direct's kb1/kb4/kb8, im2col's GEMM tiles): its entry point, compile options, grid and block.
Executing the launches needs a GPU (tests/test_gpu_cupy.py) or the CPU emulator of the kernels
(tests/test_emulated_cupy.py runs every configuration)."""
from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest

from conv import _gpu_arrays, registry
from conv import plan as planning
from conv._spec import SUPPORTED_DTYPES, make_spec
from conv._workspace import Chunks, plan_chunks
from conv.backend import cupy as cupy_backend
from conv.backend.cupy import sources
from conv.plan import Plan
from tests._helpers import make_operands

_PARAMS = re.compile(r"#define CONV_\w+_PARAMS\(T\)((?:[^\n]*\\\n)*[^\n]*)")


def _parameter_count(source: str) -> int:
    """Parameters of the entry points of kernels/cuda/<source> (each source has one list)."""
    (body,) = _PARAMS.findall(sources.read_source(source))
    return body.count(",") + 1


def _plan(op, x, w, b, algorithm, limit=None, config="", **kwargs) -> Plan:
    spec = make_spec(op, x, w, b, kwargs.get("stride", 1), kwargs.get("padding", 0),
                     kwargs.get("dilation", 1), kwargs.get("groups", 1),
                     kwargs.get("padding_mode", "zeros"))
    row = registry.algorithm("cupy", algorithm)
    n, _, p, q = spec.output_shape_4d
    chunks, nbytes = None, 0
    if algorithm.startswith("im2col") and not (cupy_backend._is_pointwise(spec)
                                               and algorithm != "im2col_cublas"):
        whole = Chunks(n, p, q, spec.r, spec.s)
        chosen = plan_chunks(whole, lambda c: cupy_backend._column_bytes(spec, c) <= (
            limit or 1 << 40), split_columns_and_kernel=False)
        nbytes = cupy_backend._column_bytes(spec, chosen)
        chunks = None if chosen == whole else chosen
    return Plan(spec, "numpy", "cuda:0", "cupy", algorithm, row.version, "", nbytes, chunks,
                config)


def _operands(plan, x, w, b) -> cupy_backend.Operands:
    return cupy_backend._prepare(plan, x, w, b, xp=np)      # NumPy arrays for device memory


CASES = [("conv2d", (3, 4, 9, 10), (6, 4, 3, 3), dict(padding=1)),
         ("conv2d", (2, 6, 7, 7), (6, 2, 3, 2), dict(groups=3, stride=2, padding_mode="reflect",
                                                   padding=1)),
         ("conv2d", (2, 4, 5, 6), (8, 4, 1, 1), {}),                     # pointwise
         ("conv1d", (2, 3, 30), (5, 3, 4), dict(dilation=2, padding=3))]


@pytest.mark.parametrize("algorithm", [a.name for a in registry.algorithms("cupy")])
@pytest.mark.parametrize("op, xs, ws, kwargs", CASES)
@pytest.mark.parametrize("limit", [None, 2000, 10])
def test_launches_name_real_entry_points_with_their_arguments(op, xs, ws, kwargs, algorithm,
                                                             limit):
    x, w, b = make_operands(("launches", op, xs, ws), xs, ws, "float32", bias=True)
    plan = _plan(op, x, w, b, algorithm, limit, **kwargs)
    steps = cupy_backend.launches(plan, _operands(plan, x, w, b))
    entries = {(s, e, o) for s, e, o in sources.specialisations()}
    kernel_steps = [s for s in steps if isinstance(s, cupy_backend.Launch)]
    assert kernel_steps
    for step in kernel_steps:
        assert (step.source, step.entry, step.options) in entries
        assert len(step.args) == _parameter_count(step.source), step.entry
        assert all(1 <= g <= lim for g, lim in zip(step.grid, _gpu_arrays.GRID_LIMITS))
        assert 1 <= np.prod(step.block) <= 256
    spec = plan.spec
    pieces = 1 if plan.chunks is None else plan.chunks.count(spec)
    unfolds = [s for s in kernel_steps if s.source == "im2col.cu"]
    if plan.workspace_bytes:
        assert len(unfolds) == pieces
        # Every output row of every image is unfolded exactly once, by some band.
        covered = sum(int(s.args[2]) * int(s.args[6]) for s in unfolds)  # N * P of each launch
        assert covered == spec.n * spec.p
        if limit is not None and plan.chunks is not None:
            one_row = cupy_backend._column_bytes(spec, Chunks(1, 1, spec.q, spec.r, spec.s))
            assert plan.workspace_bytes <= max(limit, one_row)
    else:
        assert not unfolds


def test_row_bands_move_the_top_padding_up():
    # A band starting at output row p0 unfolds like the whole call: pad_top - p0 * stride_h.
    x, w, b = make_operands("bands", (1, 2, 12, 5), (3, 2, 3, 3), "float32", bias=True)
    plan = _plan("conv2d", x, w, b, "im2col", 2 * 3 * 3 * 5 * 4 * 2, stride=(2, 1), padding=1)
    assert plan.chunks.rows == 2
    unfolds = [s for s in cupy_backend.launches(plan, _operands(plan, x, w, b))
               if isinstance(s, cupy_backend.Launch) and s.source == "im2col.cu"]
    tops = [int(s.args[18]) for s in unfolds]
    assert tops == [1 - p0 * 2 for p0 in range(0, plan.spec.p, 2)]


# --- tile configurations (what the autotuner names) -----------------------------------------

def _configs_of(algorithm: str, dtype="float32") -> list[str]:
    x, w, _ = make_operands("configs", (1, 2, 5, 5), (4, 2, 3, 3), dtype)
    return list(cupy_backend.configs(make_spec("conv2d", x, w, None, 1, 0, 1, 1), algorithm))


def test_configs_by_algorithm_and_dtype():
    for algorithm in ("direct_naive", "im2col_naive", "im2col_cublas"):
        assert _configs_of(algorithm) == []
    assert _configs_of("direct") == ["kb1", "kb4", "kb8"]
    for dt in SUPPORTED_DTYPES:
        # 128x128x8 only for 4-byte accumulators; 64x64x16 for every dtype; the default first.
        four_bytes = dt.name in ("float16", "bfloat16", "float32")
        assert _configs_of("im2col", dt) == (["128x128x8", "64x64x16"] if four_bytes
                                             else ["64x64x16"])
        assert sources.GEMM_TILES[dt] == ("128x128x8" if four_bytes else "64x64x16")


def test_gemm_tiles_fit_the_kernel():
    """gemm.cu's static_asserts and launch bounds, and the 48 KiB of static shared memory, for
    every (dtype, tile) pair a config can name."""
    for name, t in sources.GEMM_TILE_CONFIGS.items():
        assert name == f"{t.bm}x{t.bn}x{t.bk}"
        assert t.bm % t.tm == 0 and t.bn % t.tn == 0
        nt = t.threads
        assert nt <= 256 and nt % t.bk == 0 and (t.bm * t.bk) % nt == 0
        assert nt % t.bn == 0 and (t.bk * t.bn) % nt == 0
    for dt in SUPPORTED_DTYPES:
        for name in sources.gemm_tiles(dt):
            assert sources.GEMM_TILE_CONFIGS[name].shared_bytes(dt) <= 48 * 1024, (name, dt)


def test_module_options_take_the_tile():
    f32, f64 = np.dtype(np.float32), np.dtype(np.float64)
    assert sources.module_options("gemm.cu", f32) == sources.module_options("gemm.cu", f32,
                                                                            "128x128x8")
    small = sources.module_options("gemm.cu", f32, "64x64x16")
    assert {"-DCONV_GEMM_BM=64", "-DCONV_GEMM_BK=16", "-DCONV_GEMM_TM=4"} <= set(small)
    assert sources.gemm_tile_of(small) == "64x64x16"
    assert sources.module_label("gemm.cu", small) == "gemm.cu[float32,64x64x16]"
    assert sources.module_label("gemm.cu", sources.module_options("gemm.cu", f64)) == \
        "gemm.cu[float64]"
    with pytest.raises(ValueError, match="no tile '128x128x8' for float64"):
        sources.module_options("gemm.cu", f64, "128x128x8")
    with pytest.raises(ValueError, match="takes no GEMM tile"):
        sources.module_options("im2col.cu", f32, "64x64x16")


# Partial tiles: kg = 20 and 3 (below every BM, partial k-blocks of 4 and 8), 130 (a full BM = 128
# tile and a partial one), columns 180 = 128 + 52, reductions 27, 10, 18, 5 (partial BK steps).
CONFIG_CASES = [
    ("conv2d", (2, 3, 9, 10), (20, 3, 3, 3), dict(padding=1)),
    ("conv1d", (2, 6, 40), (9, 2, 5), dict(groups=3, stride=2, padding=2)),
    ("conv2d", (1, 6, 4, 40), (130, 6, 1, 3), dict(padding=(0, 1))),
    ("conv2d", (2, 5, 8, 8), (6, 5, 1, 1), dict(stride=2)),                  # pointwise
]
ALL_CONFIGS = [(a, c) for a in ("direct", "im2col") for c in _configs_of(a)]


@pytest.mark.parametrize("algorithm, config", ALL_CONFIGS)
@pytest.mark.parametrize("op, xs, ws, kwargs", CONFIG_CASES)
@pytest.mark.parametrize("limit", [None, 2000])
def test_each_config_launches_its_entry_grid_block_and_options(op, xs, ws, kwargs, algorithm,
                                                               config, limit):
    x, w, b = make_operands(("configs", op, xs, ws), xs, ws, "float32", bias=True)
    plan = _plan(op, x, w, b, algorithm, limit, config, **kwargs)
    spec = plan.spec
    n, _, p, q = spec.output_shape_4d
    kg = spec.k_per_group
    steps = [s for s in cupy_backend.launches(plan, _operands(plan, x, w, b))
             if isinstance(s, cupy_backend.Launch)]
    entries = set(sources.specialisations())
    assert all((s.source, s.entry, s.options) in entries for s in steps)
    if algorithm == "direct":
        kb = int(config[2:])
        (step,) = steps
        assert step.entry == f"conv2d_direct_kb{kb}_float32"
        assert step.options == sources.module_options("conv2d_direct.cu", spec.dtype)
        assert step.grid == (math.ceil(n * spec.groups * math.ceil(kg / kb) * p * q / 256), 1, 1)
        assert step.block == (256, 1, 1)
        return
    tile = sources.GEMM_TILE_CONFIGS[config]
    gemms = [s for s in steps if s.source == "gemm.cu"]
    assert gemms and all(s.entry == "gemm_tiled_float32" for s in gemms)
    # Every band's GEMM: its columns (N*P of the band times Q) in BN-wide tiles, kg in BM rows.
    bands = [s for s in steps if s.source == "im2col.cu"]
    ncols = [int(s.args[2]) * int(s.args[6]) * q for s in bands] or [n * p * q]
    assert len(gemms) == len(ncols)
    for step, cols in zip(gemms, ncols):
        assert step.options == sources.module_options("gemm.cu", spec.dtype, config)
        assert f"-DCONV_GEMM_BM={tile.bm}" in step.options
        assert step.grid == (math.ceil(cols / tile.bn), math.ceil(kg / tile.bm), spec.groups)
        assert step.block == (tile.threads, 1, 1)
        assert int(step.args[5]) == cols                    # M, the kernel's column count
    assert all(s.options == sources.module_options("im2col.cu", spec.dtype) for s in bands)


@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
@pytest.mark.parametrize("op, xs, ws, kwargs", CONFIG_CASES)
def test_the_default_config_is_todays_choice(op, xs, ws, kwargs, algorithm):
    """config "" launches exactly what naming the default does (the heuristic KB, GEMM_TILES)."""
    x, w, b = make_operands(("configs", op, xs, ws), xs, ws, "float32", bias=True)
    plan = _plan(op, x, w, b, algorithm, **kwargs)
    kg = plan.spec.k_per_group
    default = (f"kb{min(v for v in sources.DIRECT_KBS if v >= min(kg, 8))}"
               if algorithm == "direct" else sources.GEMM_TILES[plan.spec.dtype])
    ops = _operands(plan, x, w, b)
    got = cupy_backend.launches(plan, ops)
    named = cupy_backend.launches(dataclasses.replace(plan, config=default), ops)
    assert [(s.entry, s.options, s.grid, s.block) for s in got] == \
        [(s.entry, s.options, s.grid, s.block) for s in named]


def _make_plan(algorithm, config, dtype="float32"):
    x, w, b = make_operands("configs-plan", (2, 3, 9, 10), (20, 3, 3, 3), dtype, bias=True)
    spec = make_spec("conv2d", x, w, b, 1, 1, 1, 1)
    return planning.make_plan(spec, x, w, b, "cupy", algorithm, emulated=True, config=config)


def test_make_plan_carries_a_known_config():
    assert planning.configs("cupy", _make_plan("direct", "").spec, "im2col") == \
        ("128x128x8", "64x64x16")
    plan = _make_plan("im2col", "64x64x16")
    assert plan.config == "64x64x16" and "cupy:im2col [64x64x16]" in str(plan)
    assert _make_plan("direct", "kb1").config == "kb1"
    assert _make_plan("im2col", "").config == ""


@pytest.mark.parametrize("algorithm, config, dtype", [
    ("direct", "kb2", "float32"),                    # no such KB
    ("im2col", "32x32x8", "float32"),                # no such tile
    ("im2col", "128x128x8", "float64"),              # a tile the dtype's accumulator has not
    ("direct", "64x64x16", "float32"),               # another algorithm's name
    ("direct_naive", "kb4", "float32"),              # one configuration only
    ("im2col_cublas", "64x64x16", "float32"),
])
def test_make_plan_refuses_an_unknown_config(algorithm, config, dtype):
    with pytest.raises(ValueError, match=f"cupy algorithm '{algorithm}' has no tile "
                                         f"configuration '{config}' for this call"):
        _make_plan(algorithm, config, dtype)


def test_launches_refuse_an_unknown_config():
    # A Plan built by hand (not through make_plan) with a config its algorithm does not have.
    x, w, b = make_operands("configs-launch", (2, 3, 9, 10), (20, 3, 3, 3), "float64", bias=True)
    for algorithm, config in [("im2col", "128x128x8"), ("direct", "kb3"),
                              ("im2col_naive", "64x64x16")]:
        plan = _plan("conv2d", x, w, b, algorithm, config=config, padding=1)
        with pytest.raises(ValueError, match=f"no tile configuration '{config}'"):
            cupy_backend.launches(plan, _operands(plan, x, w, b))
