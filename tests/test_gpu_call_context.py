"""The device and capture rules of a GPU call, checked without a GPU against stand-ins for CuPy's
runtime (the real thing runs in tests/test_gpu_torch_streams.py on a GPU machine):

* `_gpu_arrays.on_device` switches to the input's device and restores the previous device only
  where that one has a context (restoring would create one on a never-used device 0);
* the autotuner does not time candidates while the call's stream captures a CUDA graph;
* the CuPy backend's default workspace cap does not ask the device for free memory then.
"""
from __future__ import annotations

import types

import numpy as np
import pytest

from conv import _arrays, _gpu_arrays, autotune
from conv._spec import make_spec


class _Runtime:
    """cupy.cuda.runtime's getDevice/setDevice, recording every setDevice."""

    def __init__(self, current: int):
        self.current, self.set_calls = current, []

    def getDevice(self):
        return self.current

    def setDevice(self, index):
        self.set_calls.append(index)
        self.current = index


@pytest.fixture
def runtime(monkeypatch):
    rt = _Runtime(0)
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=rt))
    monkeypatch.setattr(_gpu_arrays, "import_cupy", lambda: fake)
    return rt


def test_switches_and_restores_a_device_with_a_context(runtime, monkeypatch):
    monkeypatch.setattr(_gpu_arrays, "_primary_context_active", lambda index: True)
    with _gpu_arrays.on_device(1):
        assert runtime.current == 1
    assert runtime.current == 0 and runtime.set_calls == [1, 0]


def test_leaves_a_device_without_a_context_alone(runtime, monkeypatch):
    asked = []
    monkeypatch.setattr(_gpu_arrays, "_primary_context_active",
                        lambda index: asked.append(index) or False)
    with _gpu_arrays.on_device(1):
        pass
    assert asked == [0]
    assert runtime.set_calls == [1], "setDevice(0) would create a context on device 0"


def test_restores_even_when_the_call_raises(runtime, monkeypatch):
    monkeypatch.setattr(_gpu_arrays, "_primary_context_active", lambda index: True)
    with pytest.raises(RuntimeError):
        with _gpu_arrays.on_device(2):
            raise RuntimeError("kernel failed")
    assert runtime.current == 0


def test_same_device_or_none_touches_nothing(runtime, monkeypatch):
    monkeypatch.setattr(_gpu_arrays, "_primary_context_active",
                        lambda index: pytest.fail("asked for no reason"))
    with _gpu_arrays.on_device(0):
        pass
    with _gpu_arrays.on_device(None):
        pass
    assert runtime.set_calls == []


def test_primary_context_query_answers_without_a_driver():
    """Without libcuda (this machine) the answer is True: restore as CuPy would."""
    assert _gpu_arrays._primary_context_active(0) in (True, False)


def _spec():
    x, w = np.ones((1, 4, 8, 8), np.float32), np.ones((4, 4, 3, 3), np.float32)
    return make_spec("conv2d", x, w, None, 1, 1, 1, 1, "zeros"), x, w


def test_autotune_skips_timing_during_a_capture(monkeypatch, tmp_path):
    monkeypatch.setenv("CONV_CACHE_DIR", str(tmp_path))
    spec, x, w = _spec()
    assert len(autotune.candidates(spec, "cupy")) >= 2
    monkeypatch.setattr(_gpu_arrays, "capturing", lambda kind: kind == _arrays.CUPY)
    monkeypatch.setattr(autotune, "_tune", lambda *a, **k: pytest.fail("timed in a capture"))
    before = autotune.stats["skipped_in_capture"]
    assert autotune.choice(spec, "cupy", _arrays.CUPY, "cuda:0", x, w, None) is None
    assert autotune.stats["skipped_in_capture"] == before + 1
    assert not list(tmp_path.rglob("*.json")), "a capture must not write a cache entry"


def test_workspace_cap_does_not_query_the_device_in_a_capture(monkeypatch):
    from conv.backend import cupy as backend

    def no_query():
        raise AssertionError("memGetInfo during a capture")
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDevice=lambda: 3, memGetInfo=no_query)))
    monkeypatch.setattr(_gpu_arrays, "import_cupy", lambda: fake)
    monkeypatch.setattr(_gpu_arrays, "capturing", lambda kind: True)
    monkeypatch.setitem(backend._free_seen, 3, 80 << 20)
    assert backend._default_limit() == 10 << 20          # 1/8 of the last free memory seen
    backend._free_seen.pop(3)
    assert backend._default_limit() == 1 << 30           # never seen: the cap's largest value
