"""Autotuning (conv/autotune.py): the on-disk cache across processes, corrupt/stale/foreign entries,
concurrent writers, the size bound, an unwritable folder, autotune off, and the tuned call's
result and the caller's arrays.

Cross-process tests run `python -c` children with CONV_CACHE_DIR in a temporary folder; each child
prints what its process did (conv.autotune.stats) and the plan's reason as JSON.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import conv
from conv import autotune
from tests._helpers import assert_output_matches_reference, make_operands
from tests.fuzz_torch import poisoned_outputs

_OTHER_THREADS = autotune._other_threads_running()

# The CPU algorithms a float32 call has (autotune times each of them).
FLOAT_CANDIDATES = [a.name for a in conv.registry.algorithms("cpu")
                    if np.dtype(np.float32) in a.dtypes]

# A small conv every CPU algorithm takes (implicit, im2col, direct, fft): tuning it costs ~0.1 s.
CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import conv
    from conv import autotune
    rng = np.random.default_rng(0)
    c = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    x = rng.standard_normal((1, c, 12, 12)).astype(np.float32)
    w = rng.standard_normal((8, c, 3, 3)).astype(np.float32)
    conv.set_autotune(True)
    plan = conv.explain("conv2d", x, w, padding=1)    # tunes (or reads the disk); the call
    y = conv.conv2d(x, w, padding=1)                 # then reads the memory
    print(json.dumps({"stats": autotune.stats, "reason": plan.reason,
                      "algorithm": plan.algorithm, "sum": float(np.float64(y).sum())}))
""")


def _child_env(cache, **extra) -> dict:
    env = dict(os.environ, CONV_CACHE_DIR=str(cache))
    env.pop("CONV_AUTOTUNE", None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _run_child(cache, *args, **extra) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, *map(str, args)], capture_output=True,
                          text=True, env=_child_env(cache, **extra), timeout=300,
                          cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _entries(cache) -> list:
    folder = cache / "autotune"
    return sorted(folder.glob("*.json")) if folder.exists() else []


@pytest.fixture
def tuning(tmp_path, monkeypatch):
    """Autotuning on in this process, its cache in a fresh folder; state restored after."""
    monkeypatch.setenv("CONV_CACHE_DIR", str(tmp_path))
    autotune.clear_memory()
    saved = dict(autotune.stats)
    for k in autotune.stats:
        autotune.stats[k] = 0
    conv.set_autotune(True)
    yield tmp_path
    conv.set_autotune(None)
    autotune.clear_memory()
    autotune.stats.update(saved)


# ----------------------------------------------------------------------------------- processes
def test_cache_round_trip_across_two_processes(tmp_path):
    first = _run_child(tmp_path)
    assert first["stats"]["tuned"] == 1
    assert first["stats"]["candidates_timed"] == len(FLOAT_CANDIDATES)
    assert first["stats"]["disk_hits"] == 0 and first["stats"]["writes"] == 1
    assert first["stats"]["memory_hits"] == 1 and first["reason"].count("; autotuned: ") == 1
    (entry,) = _entries(tmp_path)
    stored = json.loads(entry.read_text())
    assert stored["algorithm"] == first["algorithm"]
    assert set(stored["times_ms"]) == set(FLOAT_CANDIDATES)
    assert stored["code"]["kernels_digest"] == conv.kernels_digest()

    second = _run_child(tmp_path)
    assert second["stats"]["tuned"] == 0 and second["stats"]["candidates_timed"] == 0
    assert second["stats"]["disk_hits"] == 1 and second["stats"]["writes"] == 0
    assert second["algorithm"] == first["algorithm"]
    assert second["reason"].count(f"from the autotune cache ({entry}") == 1
    assert np.isclose(first["sum"], second["sum"], rtol=1e-4)


@pytest.fixture(scope="module")
def pristine_cache(tmp_path_factory):
    """A cache folder holding the one entry a child process wrote."""
    cache = tmp_path_factory.mktemp("pristine")
    _run_child(cache)
    return cache


@pytest.mark.parametrize("damage", ["corrupt", "truncated", "stale digest", "stale version",
                                    "unknown algorithm", "foreign key"])
def test_damaged_entry_is_ignored_and_rewritten(tmp_path, damage, pristine_cache):
    shutil.copytree(pristine_cache / "autotune", tmp_path / "autotune")
    (entry,) = _entries(tmp_path)
    stored = json.loads(entry.read_text())
    if damage == "corrupt":
        entry.write_bytes(b"\x00{not json")
    elif damage == "truncated":
        entry.write_text(entry.read_text()[:40])
    else:
        if damage == "stale digest":
            stored["code"]["kernels_digest"] = "0" * 64
        elif damage == "stale version":
            stored["code"]["version"] = "0.0.0"
        elif damage == "unknown algorithm":
            stored["algorithm"] = "no_such_algorithm"
        else:                       # a hash collision or a copied file: the key inside differs
            stored["key"]["spec"]["c"] += 1
        entry.write_text(json.dumps(stored))
    again = _run_child(tmp_path)
    assert again["stats"]["ignored"] == 1 and again["stats"]["tuned"] == 1
    assert again["reason"].count("; autotuned: ") == 1
    rewritten = json.loads(entry.read_text())     # the same file, whole and current again
    assert rewritten["code"]["kernels_digest"] == conv.kernels_digest()
    assert rewritten["code"]["version"] == conv.__version__
    assert rewritten["key"] == json.loads(json.dumps(rewritten["key"]))
    assert rewritten["algorithm"] in FLOAT_CANDIDATES
    assert len(_entries(tmp_path)) == 1


def test_another_fingerprint_misses_the_cache(tmp_path):
    two = _run_child(tmp_path, NUMBA_NUM_THREADS=2)
    one = _run_child(tmp_path, NUMBA_NUM_THREADS=1)      # another thread count: another device
    assert two["stats"]["tuned"] == 1 and one["stats"]["tuned"] == 1
    assert one["stats"]["disk_hits"] == 0
    prints = sorted(json.loads(p.read_text())["fingerprint"]["threads"]
                    for p in _entries(tmp_path))
    assert prints == [1, 2]


def test_concurrent_writers(tmp_path):
    """Four processes tune at once: two the same case, two others; every file whole, none torn,
    no temporary file left."""
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(c)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=_child_env(tmp_path),
                              cwd=os.path.dirname(os.path.dirname(__file__)))
             for c in (8, 8, 5, 6)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    entries = _entries(tmp_path)
    assert len(entries) == 3
    for e in entries:
        assert json.loads(e.read_text())["schema"] == autotune.SCHEMA
    assert not [p for p in (tmp_path / "autotune").iterdir() if p.name.startswith(".tmp-")]
    again = _run_child(tmp_path, 8)
    assert again["stats"]["disk_hits"] == 1 and again["stats"]["tuned"] == 0


# ---------------------------------------------------------------------------------- in process
def _small_call(c=4, seed="autotune", **kw):
    x, w, b = make_operands(seed, (2, c, 9, 11), (6, c, 3, 3), bias=True)
    return x, w, b


def test_off_times_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("CONV_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("CONV_AUTOTUNE", raising=False)
    conv.set_autotune(None)
    before = dict(autotune.stats)
    x, w, b = _small_call()
    conv.conv2d(x, w, b, padding=1)
    plan = conv.explain("conv2d", x, w, b, padding=1)
    assert "autotune" not in plan.reason
    assert autotune.stats == before
    assert not (tmp_path / "autotune").exists()
    monkeypatch.setenv("CONV_AUTOTUNE", "0")
    conv.conv2d(x, w, b, padding=1)
    assert autotune.stats == before


def test_environment_turns_it_on(tmp_path, monkeypatch, tuning):
    conv.set_autotune(None)
    monkeypatch.setenv("CONV_AUTOTUNE", "1")
    x, w, b = _small_call(seed="env")
    assert conv.explain("conv2d", x, w, b, padding=1).reason.count("autotuned: ") == 1
    assert autotune.stats["tuned"] == 1


def test_tuned_result_matches_reference_and_arrays_untouched(tuning):
    # A non-contiguous input (a strided view of a larger base) and a permuted weight.
    base, w_base, b = make_operands("autotune-views", (2, 5, 20, 13), (3, 3, 5, 6), bias=(6,))
    x = base[:, :, ::2]                              # (2, 5, 10, 13), gaps between rows
    w = w_base.transpose(3, 2, 1, 0)                 # (6, 5, 3, 3) in a permuted layout
    copies = [a.copy() for a in (base, w_base, b)]
    with poisoned_outputs():
        y = conv.conv2d(x, w, b, padding=1, stride=(1, 2))
    for a, c in zip((base, w_base, b), copies):
        np.testing.assert_array_equal(a, c)
    assert autotune.stats["tuned"] == 1
    assert_output_matches_reference("conv2d", y, x, w, b, padding=1, stride=(1, 2))
    plan = conv.explain("conv2d", x, w, b, padding=1, stride=(1, 2))
    assert plan.reason.count("from the autotune cache (in memory; ") == 1
    assert plan.algorithm in FLOAT_CANDIDATES


def test_scratch_arrays_have_the_callers_layout():
    rng = np.random.default_rng(0)
    base = np.arange(2 * 5 * 20 * 13, dtype=np.float32).reshape(2, 5, 20, 13)
    for view in (base, base[:, :, ::2], base.transpose(0, 2, 3, 1), base[:, ::-1, 3:, ::3]):
        scratch = autotune._scratch_host(view, rng)
        assert scratch.shape == view.shape and scratch.strides == view.strides
        assert not np.shares_memory(scratch, base)
        assert np.isfinite(scratch).all() and np.abs(scratch).max() > 0
        scratch[...] = 1.0                      # every element is writable memory of its own


def test_integer_candidates_exclude_implicit(tuning):
    x, w, _ = make_operands("autotune-int", (1, 3, 8, 8), (4, 3, 3, 3), dtype="int32")
    spec_cands = autotune.candidates(conv._spec.make_spec("conv2d", x, w, None, 1, 0, 1, 1,
                                                          "zeros"), "cpu")
    assert [a for a, _ in spec_cands] == ["im2col", "direct"]
    y = conv.conv2d(x, w)
    assert_output_matches_reference("conv2d", y, x, w)
    plan = conv.explain("conv2d", x, w)
    assert plan.algorithm in ("im2col", "direct") and "autotune cache" in plan.reason


def test_explain_first_tunes_then_the_call_reads_the_cache(tuning):
    x, w, b = _small_call(seed="explain-first")
    plan = conv.explain("conv2d", x, w, b, padding=1)
    assert "autotuned: " in plan.reason and str(tuning) in plan.reason
    tuned = autotune.stats["tuned"]
    conv.conv2d(x, w, b, padding=1)
    assert autotune.stats["tuned"] == tuned and autotune.stats["memory_hits"] >= 1
    for name in FLOAT_CANDIDATES:
        assert f"{name} " in plan.reason                  # every candidate's time is shown


def test_explicit_algorithm_and_single_candidate_backends_are_not_tuned(tuning):
    x, w, b = _small_call(seed="explicit")
    conv.conv2d(x, w, b, padding=1, algorithm="direct")
    conv.conv2d(x, w, b, padding=1, backend="reference")
    assert autotune.stats["tuned"] == 0


def test_size_bound(tuning, monkeypatch):
    monkeypatch.setenv("CONV_AUTOTUNE_CACHE_ENTRIES", "2")
    for c in (2, 3, 4, 5):
        x, w, b = _small_call(c=c, seed=("bound", c))
        conv.conv2d(x, w, b, padding=1)
    assert autotune.stats["tuned"] == 4
    assert len(_entries(tuning)) == 2


def test_unwritable_folder_warns_once_and_keeps_memory(tmp_path, monkeypatch, tuning):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CONV_CACHE_DIR", str(blocker))     # mkdir under a file fails, as root too
    autotune.clear_memory()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for c in (2, 3):
            x, w, b = _small_call(c=c, seed=("unwritable", c))
            conv.conv2d(x, w, b, padding=1)
            conv.conv2d(x, w, b, padding=1)
    ours = [m for m in caught if issubclass(m.category, autotune.AutotuneCacheWarning)]
    assert len(ours) == 1 and "memory only" in str(ours[0].message)
    assert autotune.stats["tuned"] == 2 and autotune.stats["memory_hits"] == 2
    assert "from the autotune cache (in memory; measured " in conv.explain(
        "conv2d", x, w, b, padding=1).reason


def test_set_autotune_rejects_non_bools():
    with pytest.raises(TypeError, match="set_autotune takes True, False or None"):
        conv.set_autotune("yes")


def test_gpu_candidates_include_every_tile_configuration():
    """The CuPy backend's candidates (no GPU needed to list them): every algorithm with kernels
    for the dtype, with each of its tile configurations."""
    from conv import plan as planning
    from conv._spec import make_spec
    x, w, _ = make_operands("gpu-cands", (1, 4, 8, 8), (8, 4, 3, 3))
    spec = make_spec("conv2d", x, w, None, 1, 1, 1, 1, "zeros")
    cands = autotune.candidates(spec, "cupy")
    expected = []
    for row in conv.registry.algorithms("cupy"):
        if row.refusal(spec) is not None:      # depthwise: a dense conv is not its shape
            continue
        expected += [(row.name, c) for c in (planning.configs("cupy", spec, row.name) or ("",))]
    assert cands == expected
    assert not any(name == "depthwise" for name, _ in cands)
    assert ("direct", "kb8") in cands and ("im2col", "128x128x8") in cands
    assert ("im2col", "64x64x16") in cands and ("im2col_cublas", "") in cands
    wide = make_spec("conv2d", x.astype(np.float64), w.astype(np.float64), None, 1, 1, 1, 1,
                     "zeros")
    assert ("im2col", "128x128x8") not in autotune.candidates(wide, "cupy")
    assert ("im2col", "64x64x16") in autotune.candidates(wide, "cupy")


# ----------------------------------------------------------------------- quiet pools before a block
@pytest.mark.skipif(_OTHER_THREADS is None, reason="no /proc/self/task here: the tuner warms up "
                                                   "each block instead (tested below)")
def test_settler_waits_for_a_spinning_blas_pool():
    # OpenBLAS's workers spin after a matmul (about 0.1 s): the settler waits them out.
    from threadpoolctl import threadpool_info
    if not any(p.get("internal_api") == "openblas" and p.get("num_threads", 1) > 1
               for p in threadpool_info()):
        pytest.skip("NumPy's BLAS here is not a multi-threaded OpenBLAS: nothing spins")
    a = np.random.default_rng(1).standard_normal((400, 400))
    a @ a
    assert autotune._other_threads_running() > 0          # a worker still spins
    settle = autotune._Settler()
    calls = []
    settle(lambda: calls.append(1))
    assert autotune._other_threads_running() == 0 and settle.mode == "wait"
    assert 0 < settle.waited_s <= autotune.SETTLE_MAX_S + 0.05 and calls == []


def test_settler_stops_waiting_for_threads_that_stay_busy(monkeypatch):
    monkeypatch.setattr(autotune, "_other_threads_running", lambda: 1)
    monkeypatch.setattr(autotune, "SETTLE_MAX_S", 0.02)
    settle = autotune._Settler()
    settle(lambda: None)
    assert settle.mode == "off" and settle.waited_s >= 0.02
    waited = settle.waited_s
    settle(lambda: None)                                  # another program's work: no more waits
    assert settle.waited_s - waited < 0.01


def test_settler_without_proc_warms_the_candidate_up(monkeypatch):
    monkeypatch.setattr(autotune, "_other_threads_running", lambda: None)
    monkeypatch.setattr(autotune, "WARMUP_S", 0.02)
    settle = autotune._Settler()
    calls = []
    settle(lambda: calls.append(1))
    assert settle.mode == "warm up" and len(calls) >= 1 and settle.waited_s >= 0.02
    settle(lambda: calls.append(2))
    assert 2 in calls                                     # every block warms up


# ------------------------------------------------------------------------------------------- GPU
def test_gpu_timer_and_fingerprint_use_events_and_device_properties(monkeypatch):
    """Without a GPU: the GPU timer brackets the call with two CUDA events and reads their elapsed
    time after synchronising the end one; the fingerprint reads name, compute capability, driver
    and runtime of the input's device (a stand-in CuPy records the calls)."""
    calls = []

    class Event:
        def __init__(self):
            self.name = f"e{len([c for c in calls if c[0] == 'new'])}"
            calls.append(("new", self.name))

        def record(self):
            calls.append(("record", self.name))

        def synchronize(self):
            calls.append(("synchronize", self.name))

    class Runtime:
        @staticmethod
        def getDeviceProperties(index):
            calls.append(("props", index))
            return {"name": b"NVIDIA H200", "major": 9, "minor": 0}

        driverGetVersion = staticmethod(lambda: 13000)
        runtimeGetVersion = staticmethod(lambda: 13000)

    class Cuda:
        pass

    cuda = Cuda()
    cuda.Event, cuda.runtime = Event, Runtime
    cuda.get_elapsed_time = lambda a, b: calls.append(("elapsed", a.name, b.name)) or 1.25
    fake = type("FakeCupy", (), {"cuda": cuda})()
    monkeypatch.setattr(conv._gpu_arrays, "import_cupy", lambda: fake)

    timer = autotune._timer("cuda:1")
    assert timer(lambda: calls.append(("call",))) == 1.25
    assert calls[2:] == [("record", "e0"), ("call",), ("record", "e1"), ("synchronize", "e1"),
                         ("elapsed", "e0", "e1")]
    fp = autotune.fingerprint("cuda:1")
    assert fp == {"device": "cuda", "name": "NVIDIA H200", "compute_capability": "9.0",
                  "driver": 13000, "runtime": 13000}
    assert ("props", 1) in calls


_CUPY_OK, _CUPY_WHY = conv.plan.backend_availability("cupy")


@pytest.mark.gpu
@pytest.mark.skipif(not _CUPY_OK, reason=f"CuPy backend not usable: {_CUPY_WHY}")
def test_gpu_autotune_times_every_config_and_the_winner_is_right(tuning):
    cupy = conv._gpu_arrays.import_cupy()
    conv._gpu_arrays.set_poison_outputs(True)
    try:
        x, w, b = make_operands("gpu-autotune", (2, 8, 17, 19), (16, 8, 3, 3), bias=True)
        gx, gw, gb = (cupy.asarray(a) for a in (x, w, b))
        copies = [a.copy() for a in (gx, gw, gb)]
        plan = conv.explain("conv2d", gx, gw, gb, padding=1)
        assert "autotuned: " in plan.reason
        for label in ("direct[kb1]", "direct[kb8]", "im2col[128x128x8]", "im2col[64x64x16]",
                      "im2col_cublas", "direct_naive"):
            assert label in plan.reason
        y = conv.conv2d(gx, gw, gb, padding=1)
        assert isinstance(y, cupy.ndarray)
        assert_output_matches_reference("conv2d", y, x, w, b, padding=1)
        for a, c in zip((gx, gw, gb), copies):
            assert bool((a == c).all())
        again = conv.explain("conv2d", gx, gw, gb, padding=1)
        assert "from the autotune cache (in memory" in again.reason
        assert (again.algorithm, again.config) == (plan.algorithm, plan.config)
        assert json.loads(_entries(tuning)[0].read_text())["fingerprint"]["device"] == "cuda"
    finally:
        conv._gpu_arrays.set_poison_outputs(False)
