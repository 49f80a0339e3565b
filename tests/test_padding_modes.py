"""The one padding-mode table (conv/_padding.py) and every implementation of its index arithmetic
agree with numpy.pad, which pads as torch.nn.functional.pad does for these modes.

Host: conv._padding.source_index. numba.cuda: kernels/numba_cuda/common.py:source_index, run as
plain Python (its py_func). The CUDA C conv_src_index (kernels/cuda/common.cuh) gets the table's
numbers from the loader's text, checked here; it runs in the GPU tests.
"""
from __future__ import annotations

import numpy as np
import pytest

from conv import _padding
from conv._spec import PADDING_MODES


def _padded_by_numpy(size: int, lo: int, hi: int, mode: str) -> np.ndarray:
    """For each padded coordinate, the input element numpy.pad puts there (-1: a zero)."""
    values = np.arange(size) + 1                      # 0 marks a zero pad
    padded = np.pad(values, (lo, hi), mode=_padding.NUMPY_PAD_MODES[mode])
    return padded - 1


def _cases():
    for mode in PADDING_MODES:
        for size in range(1, 9):
            # make_spec's limits: reflect pads < size, circular pads <= size.
            most = size - 1 if mode == "reflect" else size if mode == "circular" else size + 3
            for lo in range(most + 1):
                for hi in (0, min(most, 2), most):
                    yield mode, size, lo, hi


CASES = list(_cases())


def test_every_mode_has_one_number_and_make_spec_takes_exactly_those():
    assert sorted(PADDING_MODES.values()) == list(range(len(PADDING_MODES)))
    assert PADDING_MODES is _padding.PADDING_MODES
    assert set(_padding.NUMPY_PAD_MODES) == set(PADDING_MODES)


@pytest.mark.parametrize("mode", list(PADDING_MODES))
def test_host_source_index_is_numpy_pad(mode):
    for m, size, lo, hi in CASES:
        if m == mode:
            coords = np.arange(-lo, size + hi)
            np.testing.assert_array_equal(_padding.source_index(coords, size, mode),
                                          _padded_by_numpy(size, lo, hi, mode),
                                          err_msg=f"size {size}, pads {lo}, {hi}")


@pytest.mark.parametrize("mode", list(PADDING_MODES))
def test_numba_cuda_source_index_is_numpy_pad(mode):
    common = pytest.importorskip("conv.kernels.numba_cuda.common",
                                 reason="numba-cuda is not installed")
    index = common.source_index.py_func
    code = PADDING_MODES[mode]
    for m, size, lo, hi in CASES:
        if m == mode:
            got = [index(i, size, code) for i in range(-lo, size + hi)]
            np.testing.assert_array_equal(got, _padded_by_numpy(size, lo, hi, mode),
                                          err_msg=f"size {size}, pads {lo}, {hi}")


def test_cuda_sources_get_the_table():
    from conv.backend.cupy.sources import SOURCES, kernel_source
    for source in SOURCES:
        text = kernel_source(source)
        for mode, code in PADDING_MODES.items():
            assert f"#define CONV_PAD_{mode.upper()} {code}\n" in text
        assert "#define CONV_PAD_ZEROS 0\n" not in text.split('#line 1 "common.cuh"')[1]


@pytest.mark.parametrize("mode", list(PADDING_MODES))
def test_padded_copy_is_numpy_pad(mode):
    # The CPU paths' padded_copy against np.pad (which the reference keeps), over every pad pair
    # of CASES on both axes at once, distinct values everywhere, several dtypes and a strided view.
    from types import SimpleNamespace
    rng = np.random.default_rng(5)
    pairs = [(size, lo, hi) for m, size, lo, hi in CASES if m == mode]
    picks = rng.choice(len(pairs), size=(60, 2))
    for count, (i, j) in enumerate(picks):
        (h, top, bottom), (w, left, right) = pairs[i], pairs[j]
        dtype = ["float32", "float64", "float16", "complex64", "int32"][count % 5]
        base = (np.arange(2 * 3 * h * (2 * w)) + 1).reshape(2, 3, h, 2 * w).astype(dtype)
        x = base[:, :, :, ::2] if count % 2 else np.ascontiguousarray(base[:, :, :, :w])
        spec = SimpleNamespace(pad=(top, bottom, left, right), padding_mode=mode)
        got = _padding.padded_copy(x, spec)
        want = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)),
                      mode=_padding.NUMPY_PAD_MODES[mode])
        assert got.dtype == x.dtype
        np.testing.assert_array_equal(got, want, err_msg=f"{x.shape} pads {spec.pad}")
        if any(spec.pad):
            assert not np.shares_memory(got, x)
