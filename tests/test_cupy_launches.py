"""What the CuPy backend would launch, computed without a GPU: `launches(plan, operands)` is plain
arithmetic on the plan (conv/backend/cupy/__init__.py separates it from who launches), so CI checks
every launch's entry point, argument count, grid and block, and the workspace chunking, with NumPy
arrays standing in for device arrays. Executing the launches needs a GPU (tests/test_gpu_cupy.py)
or the CPU emulator of the kernels."""
from __future__ import annotations

import re

import numpy as np
import pytest

from conv import _gpu_arrays, registry
from conv._spec import make_spec
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


def _plan(op, x, w, b, algorithm, limit=None, **kwargs) -> Plan:
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
    return Plan(spec, "numpy", "cuda:0", "cupy", algorithm, row.version, "", nbytes, chunks)


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
