"""The tensor-core and async-copy PTX of kernels/cuda/tensor_core.cuh on a real GPU, element by
element against the CPU emulator: the kernels of tests/test_emulated_ptx.py (KERNELS, the very
text the emulator runs) compiled by CuPy for this device and fed the same inputs. This is how a
GPU checks the emulator's fragment layouts (mma.sync, ldmatrix), its cp.async group semantics and
its cvt.rna.tf32 rounding against the hardware. Skipped with a reason without a GPU.

What must agree exactly: ldmatrix registers; mma.sync on small integers (every partial sum exact,
so the hardware's unspecified summation order cannot matter); cp.async data after the waits;
cvt.rna.tf32 bits (NaN-ness only for NaNs). What may differ: mma.sync on random data in the last
bits (the tolerance of tests/_helpers.py), and what a thread reads before its wait (the poison or
the data: the copy may already have landed on a GPU; the emulator always shows the poison).
"""
from __future__ import annotations

import numpy as np
import pytest

from conv import _gpu_arrays, emulator
from conv.backend.cupy.sources import BASE_OPTIONS, kernel_source
from conv.plan import backend_availability
from tests._helpers import _report, operand_rng
from tests.test_emulated_ptx import (
    KERNELS,
    LDMATRIX_VARIANTS,
    assert_close,
    cp_async_inputs,
    cvt_inputs,
    mma_operands,
    mma_reference,
    run_cp_async,
    run_cvt,
    run_ldmatrix,
    run_mma,
)

_OK, _WHY = backend_availability("cupy")
_EMU_OK, _EMU_WHY = emulator.availability()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not _OK, reason=f"CuPy backend not usable: {_WHY}"),
    pytest.mark.skipif(not _EMU_OK, reason=f"CPU emulator (the comparison) not usable: "
                                           f"{_EMU_WHY}"),
]


@pytest.fixture(scope="module")
def cupy():
    return _gpu_arrays.import_cupy()


@pytest.fixture(scope="module")
def gpu(cupy):
    """A launcher of KERNELS on the current GPU (CuPy compiles for its architecture)."""
    module = cupy.RawModule(code=kernel_source("test_ptx.cu", KERNELS), options=BASE_OPTIONS)

    def launch(entry, grid, block, args):
        words = tuple(np.int64(a) if isinstance(a, int) else a for a in args)
        module.get_function(entry)(tuple(grid), tuple(block), words)
        cupy.cuda.runtime.deviceSynchronize()
    return launch


@pytest.fixture(scope="module")
def emulated():
    module = emulator.source_module(KERNELS, BASE_OPTIONS, name="test_ptx.cu")

    def launch(entry, grid, block, args):
        module.launch(entry, grid, block, args, "shuffled", 7)
    return launch


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


@pytest.mark.parametrize("kind", ["tf32", "f16", "bf16"])
def test_mma_layouts_agree_exactly_on_integers(cupy, gpu, emulated, kind):
    a_bits, b_bits, c, a, b = mma_operands(kind, warps=2, rng=operand_rng(("gpu-mma-int", kind)),
                                           integers=True)
    on_gpu = _host(run_mma(gpu, kind, a_bits, b_bits, c, xp=cupy))
    on_cpu = run_mma(emulated, kind, a_bits, b_bits, c)
    np.testing.assert_array_equal(on_cpu, mma_reference(a, b, c))
    np.testing.assert_array_equal(on_gpu, on_cpu)


@pytest.mark.parametrize("kind", ["tf32", "f16", "bf16"])
def test_mma_random_data_agrees_within_tolerance(cupy, gpu, emulated, kind):
    # TF32 operands carry random low 13 bits: the hardware must ignore them, as the emulator does.
    a_bits, b_bits, c, a, b = mma_operands(kind, warps=4, rng=operand_rng(("gpu-mma", kind)))
    on_gpu = _host(run_mma(gpu, kind, a_bits, b_bits, c, xp=cupy))
    on_cpu = run_mma(emulated, kind, a_bits, b_bits, c)
    ref = mma_reference(a, b, c)
    assert_close(on_gpu, ref, a.shape[-1], f"mma {kind} on the GPU")
    assert_close(on_gpu, on_cpu.astype(np.float64), a.shape[-1], f"mma {kind}: GPU vs emulator")


@pytest.mark.parametrize("count, trans", LDMATRIX_VARIANTS,
                         ids=[f"x{c}{'-trans' if t else ''}" for c, t in LDMATRIX_VARIANTS])
def test_ldmatrix_agrees_exactly(cupy, gpu, emulated, count, trans):
    m = operand_rng(("gpu-ldmatrix", count, trans)).integers(0, 1 << 16, (4, 8, 8),
                                                             dtype=np.uint16)
    np.testing.assert_array_equal(_host(run_ldmatrix(gpu, m, count, trans, xp=cupy)),
                                  run_ldmatrix(emulated, m, count, trans))


def _poison_or(got, final):
    """Before its wait a thread may read the poison (the kernel writes it first: a GPU does not
    poison shared memory) or the landed data, nothing else."""
    return np.isnan(got) | (got == final)


def test_cp_async_agrees_after_the_waits(cupy, gpu, emulated):
    src, zfill = cp_async_inputs(operand_rng("gpu-cp-async"))
    on_gpu = {k: _host(v) for k, v in
              run_cp_async(gpu, src, zfill, nothing=cupy.asarray(src), xp=cupy).items()}
    on_cpu = run_cp_async(emulated, src, zfill)
    for name in ("final", "neighbour"):
        np.testing.assert_array_equal(on_gpu[name], on_cpu[name], err_msg=name)
    mid_gpu, mid_cpu = on_gpu["mid"].reshape(32, 16), on_cpu["mid"].reshape(32, 16)
    np.testing.assert_array_equal(mid_gpu[:, :8], mid_cpu[:, :8])        # group 0: waited for
    final = on_gpu["final"].reshape(32, 16)
    assert _poison_or(mid_gpu[:, 8:], final[:, 8:]).all()
    assert _poison_or(on_gpu["before"], on_gpu["final"]).all()
    assert _poison_or(on_gpu["unwaited"].reshape(32, 4),
                      np.roll(src.reshape(32, 16)[:, :4], -1, axis=0)).all()


def test_cvt_rna_tf32_agrees_bit_for_bit(cupy, gpu, emulated):
    x = cvt_inputs(operand_rng("gpu-cvt"))
    on_gpu = [_host(o) for o in run_cvt(gpu, x, xp=cupy)]
    on_cpu = run_cvt(emulated, x)
    nan = np.isnan(x)
    for name, g, e in zip(("rounded", "big", "small"), on_gpu, on_cpu):
        np.testing.assert_array_equal(g[~nan], e[~nan], err_msg=name)
        bad = ~np.isnan(g[nan].view(np.float32))
        if name == "rounded" and bad.any():
            _report("cvt.rna.tf32 of NaN inputs", g[nan], e[nan], bad)
