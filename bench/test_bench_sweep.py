"""pytest-benchmark over the stride x padding x dilation sweep (and a case of every other suite),
at small sizes, for every usable backend and algorithm and for PyTorch.

    pytest bench --benchmark-only

Each benchmark checks its result once against the reference (PyTorch in float64, or the NumPy
reference) before timing; nothing is asserted about the times. Plain ``pytest`` does not collect
this file: the project's testpaths is ``tests``.
"""
from __future__ import annotations

import warnings

import pytest

from bench import metrics, runner, suites
from conv._spec import make_spec

pytest.importorskip("pytest_benchmark")

# The quick CPU sweep, plus the first quick case of each other suite (small sizes).
CASES = suites.sweep("cpu", quick=True) + [
    suites.SUITES[name]("cpu", quick=True)[0]
    for name in ("grouped", "textcnn", "wavenet", "longkernel", "audio")]


def _impls():
    """(id, Impl, on_gpu) for our CPU implementations, the GPU ones where usable, and PyTorch."""
    params = []
    cpu, _ = runner.discover("cpu")
    for impl in cpu:
        params.append(pytest.param(impl, False, id=impl.label))
    gpu_ok, _ = runner.gpu_usable()
    if gpu_ok:
        for impl in runner.discover("gpu")[0]:
            params.append(pytest.param(impl, True, id=impl.label, marks=pytest.mark.gpu))
    params.append(pytest.param(runner.Impl(runner.TORCH), False, id="torch"))
    return params


def _case_id(case: suites.Case) -> str:
    return case.label.replace("/", "-")


@pytest.mark.parametrize("impl, on_gpu", _impls())
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_conv(benchmark, case, impl, on_gpu):
    torch = runner.import_torch()
    if impl.backend == runner.TORCH and torch is None:
        pytest.skip("PyTorch is not installed")
    x, w, b, x_base = runner.host_inputs(case, "fp32")
    spec = make_spec(case.op, x, w, b, case.stride, case.padding, case.dilation, case.groups,
                     case.padding_mode)
    if impl.backend == "reference" and metrics.conv_flops(spec) > runner.REFERENCE_MAX_FLOPS:
        pytest.skip("the NumPy reference is only timed on small cases")
    ref, _ = runner.reference_output(torch, case, spec, x, w, b, x_base, "cpu")

    sync = None
    if impl.backend == runner.TORCH:
        tx, tw, tb = runner._torch_tensors(torch, case, x_base, w, b, "cpu")

        def fn():
            with torch.no_grad():
                return runner.torch_conv(torch, case, spec, tx, tw, tb)
    else:
        import conv
        args = (x, w, b)
        if on_gpu:
            import cupy
            args = tuple(runner._as_kind(a, impl.backend) for a in runner._gpu_arrays(x_base, w, b, case)[:3])
            sync = cupy.cuda.Device().synchronize
        conv_fn = getattr(conv, case.op)

        def fn():
            return impl.call(conv_fn, args, case.kwargs)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = runner.to_host(fn())
    ok, max_err, tol, msg = runner.check(out, ref, "fp32", spec.c_per_group * spec.r * spec.s)
    assert ok, f"{case.label} {impl.label}: WRONG: {msg} (max error {max_err:.3g}, tol {tol:.3g})"

    if sync is not None:
        def timed():
            fn()
            sync()
    else:
        timed = fn
    benchmark.extra_info.update(flops=metrics.conv_flops(spec), case=case.describe(), impl=impl.label)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        benchmark(timed)
