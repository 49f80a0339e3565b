"""The CPU path under every process model: fork/spawn/forkserver pools after the parent has run a
parallel conv, 8 threads calling at once, an oversubscribed machine, and the threading layer
conv/_threads.py picks (each scenario in a child process: tests/_process_models.py)."""
import importlib.metadata
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _installed(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


HAVE_TBB = _installed("tbb")        # a dependency on x86-64 Linux and Windows (pyproject.toml)


def _run(*scenario, layer=None, timeout=300):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_THREADING_LAYER")}
    if layer:
        env["NUMBA_THREADING_LAYER"] = layer
    proc = subprocess.run([sys.executable, "-m", "tests._process_models", *scenario], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0 and proc.stdout.startswith("ok"), (
        f"{scenario} (layer {layer or 'ours'}): exit {proc.returncode}\n{proc.stdout[-2000:]}\n"
        f"{proc.stderr[-3000:]}")
    return proc.stdout.strip()


def test_layer_is_fork_and_thread_safe_by_default():
    out = _run("layer")
    assert out.endswith("layer tbb" if HAVE_TBB else "layer workqueue"), out


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_pool_after_a_parallel_call(method):
    print(_run("pool", method))


def test_eight_threads_at_once():
    print(_run("threads"))


def test_eight_threads_at_once_on_workqueue():
    # numba's workqueue layer dies on concurrent launches; ours are serialised on it.
    print(_run("threads", layer="workqueue"))


def test_fork_pool_on_workqueue():
    print(_run("pool", "fork", layer="workqueue"))


def test_oversubscribed_machine_completes_and_is_right():
    print(_run("oversubscribed"))


def test_without_tbb_our_default_is_workqueue_and_threads_take_turns():
    out = _run("no_tbb_threads")
    assert out.endswith("layer workqueue"), out


def test_without_tbb_a_fork_pool_works():
    out = _run("no_tbb_fork_pool")
    assert out.endswith("layer workqueue"), out
