"""No algorithm reads outside the caller's arrays: input, weight and bias each end (then start)
at an inaccessible page, so one element read past them is a crash (in a child process, reported
with the case that was running), not a discarded value. Outputs are NaN-poisoned there too."""
import pytest

from tests._cases import CASES
from tests._guard_pages import PAGE, run_cases_in_child
from tests._helpers import HOST_ALGORITHMS, refused_by_algorithm, refused_by_pytorch
from tests._helpers import stable_seed as _seed


def _grid_cases(backend, algorithm, dtypes):
    cases = []
    for op, x, w, bias, kwargs in CASES:
        for dtype in dtypes:
            if refused_by_algorithm(algorithm, dtype) or refused_by_pytorch(dtype, kwargs):
                continue
            for side in ("end", "start"):
                cases.append(dict(op=op, x=x, w=w, bias=bias, kwargs=kwargs, dtype=dtype,
                                  side=side, backend=backend, algorithm=algorithm,
                                  seed=_seed(op, x, w, kwargs, dtype, side, algorithm)))
    return cases


@pytest.mark.parametrize("backend, algorithm", HOST_ALGORITHMS,
                         ids=[f"{b}-{a}" for b, a in HOST_ALGORITHMS])
def test_grid_within_the_callers_arrays(backend, algorithm, tmp_path):
    dtypes = ["float32"] if backend == "reference" else ["float32", "float64", "int32",
                                                         "complex64", "uint8", "float16"]
    run_cases_in_child(_grid_cases(backend, algorithm, dtypes), tmp_path)


def test_conv1d_stride2_deinterleaved_reads_stop_at_the_input(tmp_path):
    # The reproducer: x (1, 1, 128) float32, w (1, 1, 2), stride 2 read in place by the
    # deinterleaving kernel, whose last vector load once ended one element past x. Every length
    # up to 400 (and both float dtypes), stride 2, kernels 2 and 3, in place where the rule allows.
    cases = []
    for length in range(2, 401):
        for taps in (2, 3):
            for dtype in ("float32", "float64"):
                if length < taps:
                    continue
                cases.append(dict(op="conv1d", x=(1, 1, length), w=(1, 1, taps), bias=False,
                                  kwargs=dict(stride=2), dtype=dtype, side="end", backend="cpu",
                                  algorithm="implicit", seed=_seed(length, taps, dtype)))
    run_cases_in_child(cases, tmp_path)


def test_guard_page_catches_an_over_read(tmp_path):
    # The harness itself: a read one element past a guarded array must crash the child.
    import subprocess
    import sys
    code = ("import numpy as np; from tests._guard_pages import guarded; "
            f"a = guarded(np.ones({PAGE // 4}, np.float32)); "
            "b = np.lib.stride_tricks.as_strided(a, shape=(a.size + 1,)); print(b.sum())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=str(__import__("pathlib").Path(__file__).parent.parent))
    assert proc.returncode != 0 and "nan" not in proc.stdout
