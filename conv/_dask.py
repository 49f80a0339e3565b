"""conv1d / conv2d on Dask arrays: lazily, chunk by chunk, on any Dask scheduler.

`conv.conv1d/conv2d` (and the modules) send a `dask.array.Array` input here; nothing of Dask is
imported otherwise. The result is a lazy Dask array whose chunks are NumPy or CuPy arrays as the
input's are (each chunk runs through conv's own dispatch: the CPU path for NumPy chunks, a GPU
backend for CuPy chunks).

Which task computes what: one task per output block. Output blocks follow the input's: along the
batch axis one to one; the channel axis is one block of all K output channels (the task
concatenates the input's channel blocks); along each spatial axis, output block i holds the
outputs whose window starts (output o * stride - low padding) in input block i, the first block
also those starting in the low padding and the last those starting past the end, so block
boundaries align to the stride and some blocks may be empty. A task reads exactly the input
elements its outputs' windows cover (the halo: (taps - 1) * dilation past the block, any number of
input blocks deep), mapped through the padding mode at the global boundary only
(conv._padding.source_index: PyTorch's reflect excludes the edge, circular wraps to the far end),
assembles them into one padded piece and convolves it with no padding. Weight and bias enter the
graph once each (sent to each worker once); Dask-array weights or biases stay lazy. What a
block's call would refuse (arguments, backend, algorithm, dtypes, devices) is refused at the call:
make_spec on stand-ins of the whole input, make_plan on a stand-in of one block's piece.
"""
from __future__ import annotations

import itertools
import sys

import numpy as np

from . import _padding
from ._spec import ConvSpec, make_spec


def is_dask_array(a) -> bool:
    """True for a dask.array.Array (without importing Dask when the caller has not)."""
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(a, da.Array)


def _stand_in(a):
    """A NumPy array with a's shape and dtype and no memory, for argument checking: make_spec then
    refuses exactly what it refuses for in-memory arrays, with the same messages."""
    if a is None or not is_dask_array(a):
        return a
    return np.broadcast_to(np.zeros((), a.dtype), a.shape)


def _output_ranges(chunks: tuple[int, ...], outputs: int, stride: int, pad_lo: int) -> list:
    """[lo, hi) of the outputs of each input block along one spatial axis (module docstring)."""
    starts = list(itertools.accumulate((0,) + tuple(chunks)))
    ranges = []
    for i in range(len(chunks)):
        lo = 0 if i == 0 else min(outputs, max(0, -(-(starts[i] + pad_lo) // stride)))
        hi = outputs if i == len(chunks) - 1 else min(outputs, max(
            0, -(-(starts[i + 1] + pad_lo) // stride)))
        ranges.append((lo, max(lo, hi)))
    return ranges


def _source_ranges(first: int, stop: int, size: int, mode: str) -> list[tuple[int, int]]:
    """The input elements padded coordinates [first, stop) read under `mode`, as ranges (the
    source_index of conv._padding, taken a range at a time; make_spec bounds the paddings so that
    one reflection or wrap suffices)."""
    inside = (max(first, 0), min(stop, size))
    ranges = [inside] if inside[0] < inside[1] else []
    low, high = (first, min(stop, 0)), (max(first, size), stop)       # parts in the padding
    for lo, hi in (low, high):
        if lo >= hi or mode == "zeros":
            continue
        if mode == "replicate":
            ranges.append((0, 1) if hi <= 0 else (size - 1, size))
        elif mode == "reflect":                     # -i for i < 0, 2(size-1) - i past the end
            ranges.append((1 - hi, 1 - lo) if hi <= 0 else
                          (2 * (size - 1) - hi + 1, 2 * (size - 1) - lo + 1))
        else:                                       # circular
            ranges.append((lo + size, hi + size) if hi <= 0 else (lo - size, hi - size))
    return ranges


def _touched_blocks(first: int, length: int, size: int, mode: str, starts: list) -> list:
    """(block, start, stop) of the input blocks a piece of padded coordinates [first,
    first + length) reads: each source range is a run of blocks, found by bisection (graph
    building stays linear in the number of blocks)."""
    edges = np.asarray(starts)
    touched: set[int] = set()
    for lo, hi in _source_ranges(first, first + length, size, mode):
        a = int(np.searchsorted(edges, lo, side="right")) - 1
        b = int(np.searchsorted(edges, hi, side="left"))
        touched.update(i for i in range(max(a, 0), min(b, len(starts) - 1))
                       if starts[i] < starts[i + 1])     # zero-size blocks supply nothing
    return [(i, starts[i], starts[i + 1]) for i in sorted(touched)]


def _axis_reads(first: int, length: int, size: int, mode: str, blocks: list) -> list:
    """Per touched block: (positions in the piece, positions in the block) of what it supplies."""
    source = _padding.source_index(np.arange(first, first + length, dtype=np.int64), size, mode)
    reads = []
    for _, start, stop in blocks:
        where = np.nonzero((source >= start) & (source < stop))[0]
        reads.append((where, source[where] - start))
    return reads


def _compute_block(op, kwargs, weight, bias, shape, rows, cols, *blocks):
    """One output block: the padded piece from the touched input blocks (each a list of channel
    blocks), then conv with no padding. rows / cols: (first padded coordinate, length, input
    size, padding mode, touched blocks) of the piece along each spatial axis (rows None for
    conv1d)."""
    from . import functional
    row_reads = [(None, None)] if rows is None else _axis_reads(*rows)
    col_reads = _axis_reads(*cols)
    blocks = [b[0] if len(b) == 1 else _xp(b[0]).concatenate(b, axis=-3 if op == "conv2d" else -2)
              for b in blocks]
    xp = _xp(blocks[0])
    piece = xp.zeros(shape, dtype=blocks[0].dtype)
    k = 0
    for r_pos, r_loc in row_reads:
        for c_pos, c_loc in col_reads:
            block = blocks[k]
            k += 1
            if r_pos is None:
                piece[..., _index(c_pos, xp)] = block[..., _index(c_loc, xp)]
                continue
            rp, rl, cp, cl = (_index(i, xp) for i in (r_pos, r_loc, c_pos, c_loc))
            if all(isinstance(i, slice) for i in (rp, rl, cp, cl)):
                piece[..., rp, cp] = block[..., rl, cl]         # the common case: a view copy
            else:
                for r_dst, r_src in zip(r_pos.tolist(), r_loc.tolist()):     # row by row
                    piece[..., r_dst, cp] = block[..., r_src, cl]
    if xp is not np:                # CuPy chunks: the weights on the chunk's device
        weight = xp.asarray(weight)
        bias = None if bias is None else xp.asarray(bias)
    fn = functional.conv2d if op == "conv2d" else functional.conv1d
    return fn(piece, weight, bias, padding=0, **kwargs)


def _index(positions: np.ndarray, xp):
    """positions as a slice when they step by +1 or -1 (the inside of the input, a reflection),
    else as an index array."""
    n = len(positions)
    if n and (n == 1 or (np.diff(positions) == positions[1] - positions[0]).all()) and (
            n == 1 or abs(int(positions[1] - positions[0])) == 1):
        first = int(positions[0])
        step = 1 if n == 1 else int(positions[1] - positions[0])
        stop = first + step * n
        return slice(first, stop if stop >= 0 else None, step)
    return xp.asarray(positions)


def _xp(a):
    if type(a).__module__.startswith("cupy"):
        import cupy
        return cupy
    return np


def conv(op: str, input, weight, bias, stride, padding, dilation, groups, padding_mode: str,
         backend: str, algorithm: str, allow_tf32: bool | None = None):
    """(the lazy conv of Dask array `input`, its ConvSpec) (module docstring). allow_tf32 None is
    resolved now (conv.set_allow_tf32's value at the call), not when the graph runs."""
    from .plan import allow_tf32 as default_allow_tf32
    allow_tf32 = default_allow_tf32() if allow_tf32 is None else allow_tf32
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    if any(np.isnan(c) for axis in input.chunks for c in axis):
        raise ValueError("the input's chunk sizes are unknown (nan); call "
                         "input.compute_chunk_sizes() first")
    spec: ConvSpec = make_spec(op, _stand_in(input), _stand_in(weight), _stand_in(bias), stride,
                               padding, dilation, groups, padding_mode)
    _check_plan(spec, input, weight, bias, backend, algorithm, allow_tf32)
    if is_dask_array(weight) or is_dask_array(bias):
        weight, bias = (a.rechunk(a.shape) if is_dask_array(a) else a for a in (weight, bias))
    top, _, left, _ = spec.pad
    two_d = op == "conv2d"
    nd = input.ndim
    batch_axis = 0 if spec.batched else None
    channel_axis = 1 if spec.batched else 0
    # Spatial axes as (rows, cols); conv1d has only cols (rows: one block of one "row").
    col_axis = nd - 1
    row_axis = nd - 2 if two_d else None
    n_blocks = input.chunks[batch_axis] if spec.batched else ()
    row_chunks = input.chunks[row_axis] if two_d else (1,)
    col_chunks = input.chunks[col_axis]
    row_out = _output_ranges(row_chunks, spec.p, spec.stride[0], top) if two_d else [(0, 1)]
    col_out = _output_ranges(col_chunks, spec.q, spec.stride[1], left)
    row_starts = list(itertools.accumulate((0,) + tuple(row_chunks)))
    col_starts = list(itertools.accumulate((0,) + tuple(col_chunks)))
    c_blocks = len(input.chunks[channel_axis])

    name = f"conv-{op}-{tokenize(input, weight, bias, spec, backend, algorithm, allow_tf32)}"
    w_key, b_key = (f"{name}-weight",), (f"{name}-bias",)
    layer: dict = {}
    dependencies = [input]
    if is_dask_array(weight):
        dependencies.append(weight)
        w_arg = (weight.name,) + (0,) * weight.ndim
    else:
        layer[w_key] = weight
        w_arg = w_key
    b_arg = None
    if bias is not None:
        if is_dask_array(bias):
            dependencies.append(bias)
            b_arg = (bias.name, 0)
        else:
            layer[b_key] = bias
            b_arg = b_key
    kwargs = dict(stride=spec.stride if two_d else spec.stride[1],
                  dilation=spec.dilation if two_d else spec.dilation[1], groups=spec.groups,
                  backend=backend, algorithm=algorithm, allow_tf32=allow_tf32)
    batch_ranges = list(range(len(n_blocks))) if spec.batched else [None]
    for bn in batch_ranges:
        nb = n_blocks[bn] if bn is not None else None
        for bi, (plo, phi) in enumerate(row_out):
            rows = None
            if two_d:
                length = (phi - plo - 1) * spec.stride[0] + (spec.r - 1) * spec.dilation[0] + 1
                first = plo * spec.stride[0] - top
                rows = (first, length, spec.h, spec.padding_mode,
                        _touched_blocks(first, length, spec.h, spec.padding_mode, row_starts))
            for bj, (qlo, qhi) in enumerate(col_out):
                length = (qhi - qlo - 1) * spec.stride[1] + (spec.s - 1) * spec.dilation[1] + 1
                first = qlo * spec.stride[1] - left
                cols = (first, length, spec.w, spec.padding_mode,
                        _touched_blocks(first, length, spec.w, spec.padding_mode, col_starts))
                out_index = ((bn,) if spec.batched else ()) + (0,) + \
                    ((bi,) if two_d else ()) + (bj,)
                if (two_d and (phi <= plo or not rows[4])) or qhi <= qlo or not cols[4] or \
                        spec.is_empty:
                    # Nothing to read (an empty block, or a piece of zero padding only).
                    layer[(name,) + out_index] = (
                        _empty_block, _block_shape(spec, nb, phi - plo, qhi - qlo),
                        input._meta, spec.dtype, op, kwargs, w_arg, b_arg)
                    continue
                piece_shape = ((nb,) if spec.batched else ()) + (spec.c,) + \
                    ((rows[1],) if two_d else ()) + (cols[1],)
                blocks = []
                for rb, _, _ in (rows[4] if two_d else [(None, 0, 0)]):
                    for cb, _, _ in cols[4]:
                        index = [0] * nd
                        if spec.batched:
                            index[batch_axis] = bn
                        if two_d:
                            index[row_axis] = rb
                        index[col_axis] = cb
                        channel_keys = []
                        for ci in range(c_blocks):
                            index[channel_axis] = ci
                            channel_keys.append((input.name,) + tuple(index))
                        blocks.append(channel_keys)
                layer[(name,) + out_index] = (_compute_block, op, kwargs, w_arg, b_arg,
                                              piece_shape, rows, cols, *blocks)
    out_chunks = ((tuple(n_blocks),) if spec.batched else ()) + ((spec.output_shape_4d[1],),) + \
        ((tuple(hi - lo for lo, hi in row_out),) if two_d else ()) + \
        (tuple(hi - lo for lo, hi in col_out),)
    meta = input._meta[(slice(0, 0),) * nd].astype(spec.dtype)
    graph = HighLevelGraph.from_collections(name, layer, dependencies=dependencies)
    return da.Array(graph, name, out_chunks, meta=meta), spec


def _check_plan(spec: ConvSpec, input, weight, bias, backend: str, algorithm: str,
                allow_tf32: bool = False) -> None:
    """Plan one block's call now (a piece of one output, on stand-ins of the chunks' kind), so
    that what the blocks' calls would refuse (backend, algorithm, its dtypes, devices) is
    refused at the call, not when the graph runs."""
    from .plan import make_plan
    xp = _xp(input._meta)
    # Two outputs along each axis: with one, make_spec records the stride as 1 (it changes
    # nothing then), and a refusal of the stride (winograd's) would wait for the graph to run.
    # (Only where the call has two: the stride is then within the padded input's extent.)
    window = ((spec.r - 1) * spec.dilation[0] + 1 + (spec.stride[0] if spec.p > 1 else 0),
              (spec.s - 1) * spec.dilation[1] + 1 + (spec.stride[1] if spec.q > 1 else 0))
    shape = ((1,) if spec.batched else ()) + (spec.c,) + \
        ((window[0],) if spec.op == "conv2d" else ()) + (window[1],)
    piece = xp.broadcast_to(xp.zeros((), spec.dtype), shape)
    w, b = (None if a is None else (_stand_in(a) if is_dask_array(a) else a)
            for a in (weight, bias))
    kwargs = (spec.stride, 0, spec.dilation, spec.groups) if spec.op == "conv2d" else \
        (spec.stride[1], 0, spec.dilation[1], spec.groups)
    piece_spec = make_spec(spec.op, piece, w, b, *kwargs, "zeros")
    make_plan(piece_spec, piece, w, b, backend, algorithm, allow_tf32=allow_tf32)


def _block_shape(spec: ConvSpec, nb, rows: int, cols: int) -> tuple:
    return ((nb,) if spec.batched else ()) + (spec.output_shape_4d[1],) + \
        ((rows,) if spec.op == "conv2d" else ()) + (cols,)


def _empty_block(shape, meta, dtype, op, kwargs, weight, bias):
    """An output block with no outputs, or whose outputs read only zero padding (= the bias)."""
    xp = _xp(meta)
    out = xp.zeros(shape, dtype=dtype)
    if bias is not None and out.size:
        index = (None,) * (len(shape) - (3 if op == "conv2d" else 2)) + (slice(None),) + \
            (None,) * (2 if op == "conv2d" else 1)
        out[...] = xp.asarray(bias)[index]
    return out
