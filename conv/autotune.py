"""Autotuning: `algorithm="auto"` decided by timing every candidate once, remembered across processes.

    conv.set_autotune(True)        # or CONV_AUTOTUNE=1 in the environment; conv.set_autotune(None)
                                   # goes back to the environment's setting (default off)

With autotuning on, the first call of a (spec, dtype, array kind and memory layout, device) times
every eligible candidate of the chosen backend: each registry algorithm whose dtypes include the
call's, and on the GPU each of its tile configurations (conv.plan.configs). Candidates run on
scratch arrays of the call's shapes, dtypes and strides, filled with fresh random values; the
caller's arrays are not read while timing, so they cannot be changed by it, and the caller's
result is computed afterwards by the winner alone. Each candidate is called once untimed (numba
compiles, CuPy loads its module), then all are timed in rounds: each round gives every candidate
one untimed call (the switch from another algorithm costs the next call: thread pools wake,
caches refill) and `PER_ROUND` timed ones; up to `ROUNDS` rounds, no new one once `BUDGET_S` per
candidate has passed. The fastest median wins. CPU timings use time.perf_counter around the call; GPU
timings use CUDA events on the current stream.

On the CPU each candidate's block starts once the previous candidate's thread pool has gone quiet
(`_settle`): OpenBLAS's workers spin for about 0.1 s after every matmul (measured here: state R in
/proc for 100 ms after one 500x500 product), and on 2 cores a spinning worker takes one core from
numba's threads, so the implicit GEMM timed right after im2col ran at about half its speed (12-14
ms against 7.4-8.1 ms) and the tuner picked im2col where implicit was faster in 27 of 30 misses of
the full benchmark run. Where /proc cannot say (not Linux), each block is warmed up for
`WARMUP_S` instead, as the benchmark runner's timing does.

The choice is kept in memory and on disk, one JSON file per entry (`cache_dir()`: CONV_CACHE_DIR,
else the user cache directory from platformdirs, in a subfolder "autotune"). An entry's file name
is a hash of its device fingerprint (CPU model, vector width, thread count; GPU name, compute
capability, driver) and key (spec, dtype, array kind, memory layout); the file holds all of them
plus the library version and code digests (the GPU kernels' digest, conv.kernels_digest(), and the
CPU backend's sources), the times measured and when. A second process reads the entry and times
nothing. An entry is ignored (and rewritten once tuned again) when it cannot be parsed, has
another schema, fingerprint or key (foreign), or another library version or digest, or names a
candidate the registry no longer has (stale). Writes go to a temporary file in the same folder and
are renamed over the entry (os.replace, atomic), so concurrent writers never leave a torn file;
the folder keeps at most CONV_AUTOTUNE_CACHE_ENTRIES files (default 4096; the oldest go first). A
folder that cannot be written gives one warning and the process goes on with memory only.

conv.explain shows what happened: the measuring call's plan says "autotuned: <candidate> <ms>, ..."
and later plans say the choice came from the autotune cache (memory or disk), with the times
measured then. With autotuning on, explain of a case not yet tuned tunes it, exactly as the call
would (the call then reads the cache).
"""
from __future__ import annotations

import dataclasses
import datetime
import functools
import contextlib
import hashlib
import json
import os
import pathlib
import platform
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass

import numpy as np

from . import _arrays, _gpu_arrays
from ._dtypes import is_floating

SCHEMA = 1
ROUNDS = 3                      # most rounds; each times every candidate PER_ROUND times
PER_ROUND = 3                   # (after one untimed call); one round at least, whatever the budget
BUDGET_S = 0.25                 # timing budget per candidate: no new round once it is spent
SETTLE_MAX_S = 0.3              # longest wait for other threads to go quiet before a block; one
                                # wait that runs out (threads busy with other work) ends waiting
WARMUP_S = 0.1                  # without /proc: untimed calls of the candidate before its block
_ENV = "CONV_AUTOTUNE"
_ENV_DIR = "CONV_CACHE_DIR"
_ENV_ENTRIES = "CONV_AUTOTUNE_CACHE_ENTRIES"
_DEFAULT_ENTRIES = 4096

_enabled: bool | None = None    # None: the environment decides
_memory: dict = {}              # entry file name -> Choice
_recent: dict = {}              # (spec, backend, kind, device, strides, threads) -> Choice: the
                                # memory hit without building the entry's key (~microseconds)
_lock = threading.Lock()        # one tuning at a time: candidates timed side by side disturb each other
_disk_broken: str | None = None  # why the cache folder is unusable (warned once)
stats = {"tuned": 0, "candidates_timed": 0, "disk_hits": 0, "memory_hits": 0, "writes": 0,
         "ignored": 0, "skipped_in_capture": 0}          # counters (tests read them): what this process did


class AutotuneCacheWarning(RuntimeWarning):
    """The autotune cache folder cannot be used; choices are kept in memory only."""


def set_autotune(enabled: bool | None) -> None:
    """Turn autotuning of algorithm="auto" on or off for this process; None: back to the
    environment's setting (CONV_AUTOTUNE=1 turns it on; default off)."""
    global _enabled
    if enabled is not None and not isinstance(enabled, bool):
        raise TypeError(f"set_autotune takes True, False or None, not {type(enabled).__name__}")
    _enabled = enabled


def enabled() -> bool:
    if _enabled is not None:
        return _enabled
    return os.environ.get(_ENV, "0").strip().lower() not in ("", "0", "false", "no", "off")


def cache_dir() -> pathlib.Path:
    """The folder of the on-disk autotune cache."""
    root = os.environ.get(_ENV_DIR)
    if not root:
        try:
            import platformdirs
            root = platformdirs.user_cache_dir("conv", appauthor=False)
        except ImportError:     # the XDG rule platformdirs applies on Linux
            root = os.path.join(os.environ.get("XDG_CACHE_HOME") or
                                os.path.expanduser("~/.cache"), "conv")
    return pathlib.Path(root) / "autotune"


def clear_memory() -> None:
    """Forget the in-memory choices (the disk cache stays): the next call reads the disk again."""
    global _disk_broken
    with _lock:
        _memory.clear()
        _recent.clear()
        _disk_broken = None


# ---------------------------------------------------------------------------------------------
# What identifies an entry

@functools.lru_cache(maxsize=None)
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_fingerprint() -> dict:
    import numba

    from .backend.cpu import implicit
    return {"device": "cpu", "model": _cpu_model(), "machine": platform.machine(),
            "vector_bytes": implicit._VECTOR_BYTES, "threads": numba.get_num_threads()}


def _gpu_fingerprint(device: str) -> dict:
    from ._gpu_arrays import import_cupy
    cupy = import_cupy()
    index = int(device.split(":")[1]) if ":" in device else cupy.cuda.Device().id
    props = cupy.cuda.runtime.getDeviceProperties(index)
    name = props["name"]
    return {"device": "cuda", "name": name.decode() if isinstance(name, bytes) else str(name),
            "compute_capability": f"{props['major']}.{props['minor']}",
            "driver": cupy.cuda.runtime.driverGetVersion(),
            "runtime": cupy.cuda.runtime.runtimeGetVersion()}


def fingerprint(device: str) -> dict:
    """What the timings depend on, of the machine that runs `device` ("cpu" or "cuda[:i]")."""
    return _cpu_fingerprint() if device == "cpu" else _gpu_fingerprint(device)


@functools.lru_cache(maxsize=None)
def code_digests() -> dict:
    """The library version and digests of the code that runs: the GPU kernels
    (conv.kernels_digest()) and the CPU backend's sources (conv/backend/, hashed the same way)."""
    from . import __version__
    from ._digest import kernels_digest
    backend_root = pathlib.Path(__file__).parent / "backend"
    return {"version": __version__, "kernels_digest": kernels_digest(),
            "backend_digest": kernels_digest(backend_root)}


def _layout(a, kind: str) -> str:
    """The memory layout class of an array: 'C' (C-contiguous), 'perm:<axes>' (dense in another
    axis order, e.g. channels-last), or 'strided:<strides>'."""
    if kind in _arrays.GPU_KINDS:
        from ._gpu_arrays import to_cupy
        a = to_cupy(a, kind)                # a zero-copy view, for its strides
    else:
        a = np.asarray(a)
    shape, strides = a.shape, tuple(s // a.itemsize for s in a.strides)
    c_order, acc = [], 1
    for n in reversed(shape):
        c_order.insert(0, acc)
        acc *= n
    live = [(st, n, i) for i, (st, n) in enumerate(zip(strides, shape)) if n > 1]
    if all(st == c_order[i] for st, _, i in live):
        return "C"
    order = sorted(live, key=lambda t: -abs(t[0]))
    acc, dense = 1, True
    for st, n, _ in reversed(order):
        dense &= st == acc
        acc *= n
    if dense:
        return "perm:" + ",".join(str(i) for _, _, i in order)
    return "strided:" + ",".join(str(s) for s in strides)


def _key(spec, backend: str, kind: str, input, weight, allow_tf32: bool = False) -> dict:
    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    fields["dtype"] = np.dtype(spec.dtype).name
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}
    return {"spec": fields, "backend": backend, "kind": kind,
            "layout": [_layout(input, kind), _layout(weight, _arrays.array_kind(weight))],
            "allow_tf32": bool(allow_tf32)}


def _strides(a):
    if a is None:
        return None
    strides = getattr(a, "strides", None)
    if strides is None and callable(getattr(a, "stride", None)):
        strides = a.stride()                    # a PyTorch tensor
    return tuple(strides) if strides is not None else None


def _threads(device: str):
    if device in ("cpu", "emulator"):
        import numba
        return numba.get_num_threads()
    if ":" in device:                           # "cuda:N": the device is in the key already
        return None
    from ._gpu_arrays import import_cupy       # a pointer-only array: the current device's
    return import_cupy().cuda.Device().id


def _entry_name(fp: dict, key: dict) -> str:
    text = json.dumps({"fingerprint": fp, "key": key}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:40] + ".json"


# ---------------------------------------------------------------------------------------------
# The choice

@dataclass(frozen=True)
class Choice:
    algorithm: str
    config: str
    times_ms: dict              # "algorithm" or "algorithm[config]" -> median ms (or a failure)
    measured_at: str
    source: str                 # "measured" | "memory" | "disk"
    path: str                   # the entry's file ("" when memory only)

    @property
    def label(self) -> str:
        return _label(self.algorithm, self.config)

    @property
    def reason(self) -> str:
        times = ", ".join(f"{k} {v:.3g} ms" if isinstance(v, (int, float)) else f"{k} {v}"
                          for k, v in self.times_ms.items())
        if self.source == "measured":
            where = f"; cached in {self.path}" if self.path else "; kept in memory only"
            return f"autotuned: {times}{where}"
        where = ("in memory" + (f"; {self.path}" if self.path else "")
                 if self.source == "memory" else self.path)
        return f"from the autotune cache ({where}; measured {self.measured_at}): {times}"


def _ordered(times: dict) -> dict:
    """Times fastest first, failures last."""
    return dict(sorted(times.items(), key=lambda kv: (not isinstance(kv[1], float),
                                                      kv[1] if isinstance(kv[1], float) else 0)))


def _label(algorithm: str, config: str) -> str:
    return f"{algorithm}[{config}]" if config else algorithm


def candidates(spec, backend: str) -> list[tuple[str, str]]:
    """(algorithm, config) pairs autotuning times for spec on backend: every registry algorithm
    of the backend whose dtypes include spec's, each with every tile configuration it has."""
    from . import plan as _plan
    from . import registry
    out = []
    for row in registry.algorithms(backend):
        if row.refusal(spec) is not None:
            continue
        out += [(row.name, c) for c in (_plan.configs(backend, spec, row.name) or ("",))]
    return out


def choice(spec, backend: str, kind: str, device: str, input, weight, bias,
           allow_tf32: bool = False) -> Choice | None:
    """The autotuned (algorithm, config) for this call, timing the candidates on a cache miss;
    None when there is nothing to choose (one candidate, or an empty output). allow_tf32: the
    call's (resolved) TF32 permission: the candidates are timed in the precision the call will
    run, and it is part of the key."""
    if spec.is_empty:
        return None
    recent = (spec, backend, kind, device, _strides(input), _strides(weight), _threads(device),
              allow_tf32)
    hit = _recent.get(recent)
    if hit is not None:
        stats["memory_hits"] += 1
        return hit
    cands = candidates(spec, backend)
    if len(cands) < 2:
        return None
    if device not in ("cpu", "emulator") and _gpu_arrays.capturing(kind):
        # Timing synchronises, which a CUDA graph capture forbids: the dispatch rule decides,
        # and nothing is remembered (the first call outside a capture tunes). Warm up first.
        stats["skipped_in_capture"] += 1
        return None
    fp = fingerprint("cpu" if device in ("cpu", "emulator") else device)
    key = _key(spec, backend, kind, input, weight, allow_tf32)
    name = _entry_name(fp, key)
    with _lock:
        hit = _memory.get(name)
        if hit is not None:
            stats["memory_hits"] += 1
            _recent[recent] = hit
            return hit
        hit = _read(name, fp, key, cands)
        if hit is not None:
            stats["disk_hits"] += 1
        else:
            with _gpu_arrays.on_device(None if device in ("cpu", "emulator") else
                                       _arrays.cuda_device_of(input)):
                # scratch arrays, timed calls and events on the input's device
                hit = _tune(spec, backend, kind, device, input, weight, bias, cands, allow_tf32)
            if hit is None:
                return None
            hit = dataclasses.replace(hit, path=_write(name, fp, key, hit) or "")
        # What this call reports is how it was decided; later calls read the memory.
        _memory[name] = _recent[recent] = dataclasses.replace(hit, source="memory")
        return hit


# ---------------------------------------------------------------------------------------------
# Timing

def _fill_random(a: np.ndarray, rng: np.random.Generator) -> None:
    dt = a.dtype
    if is_floating(dt):                 # bfloat16 included (its kind is "V")
        a[...] = rng.standard_normal(a.shape).astype(dt)
    elif dt.kind == "c":
        a[...] = (rng.standard_normal(a.shape) + 1j * rng.standard_normal(a.shape)).astype(dt)
    elif dt.kind == "b":
        a[...] = rng.integers(0, 2, a.shape).astype(dt)
    else:
        info = np.iinfo(dt)
        a[...] = rng.integers(max(info.min, -8), min(info.max, 8) + 1, a.shape).astype(dt)


def _scratch_host(a: np.ndarray, rng) -> np.ndarray:
    """An array of a's shape, dtype and strides over fresh memory, filled with random values."""
    if a.size == 0 or a.flags.c_contiguous:
        out = np.empty(a.shape, a.dtype)
        _fill_random(out, rng)
        return out
    item = a.itemsize
    lo = sum(min(0, (n - 1) * s) for n, s in zip(a.shape, a.strides))
    hi = sum(max(0, (n - 1) * s) for n, s in zip(a.shape, a.strides)) + item
    base = np.empty((hi - lo) // item + 1, a.dtype)
    _fill_random(base, rng)
    start = base[(-lo) // item:]
    return np.lib.stride_tricks.as_strided(start, a.shape, a.strides)


def _scratch(a, kind: str, rng):
    if a is None:
        return None
    if kind == _arrays.NUMPY:
        return _scratch_host(np.asarray(a), rng)
    from ._gpu_arrays import import_cupy, to_cupy
    cupy = import_cupy()
    view = to_cupy(a, kind)
    host = np.empty(view.shape, view.dtype)
    _fill_random(host, rng)
    out = cupy.empty_like(view)         # keeps a dense permuted layout (channels-last)
    out[...] = cupy.asarray(host)
    return out


def _timer(device: str):
    """A function f(call) -> milliseconds of one call."""
    if device in ("cpu", "emulator"):
        def cpu(call):
            t0 = time.perf_counter()
            call()
            return (time.perf_counter() - t0) * 1e3
        return cpu
    from ._gpu_arrays import import_cupy
    cupy = import_cupy()
    start, end = cupy.cuda.Event(), cupy.cuda.Event()

    def gpu(call):
        start.record()
        call()
        end.record()
        end.synchronize()
        return cupy.cuda.get_elapsed_time(start, end)
    return gpu


def _other_threads_running() -> int | None:
    """How many of this process's other threads are on a CPU or waiting for one (state R in
    /proc/self/task/*/stat), or None where /proc cannot say."""
    me = threading.get_native_id()
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return None
    running = 0
    for tid in tids:
        if tid == str(me):
            continue
        try:
            with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                stat = f.read()
        except OSError:                         # the thread ended meanwhile
            continue
        if stat[stat.rindex(b")") + 2:][:1] == b"R":
            running += 1
    return running


class _Settler:
    """Called before a candidate's block: waits (at most SETTLE_MAX_S) until no other thread of the
    process runs, so the block is not timed against the previous candidate's spinning pool (module
    docstring). Threads that stay busy past the limit are another program's work, which waiting
    cannot remove: later calls then do not wait. Without /proc it warms the candidate up for
    WARMUP_S instead."""

    def __init__(self):
        self.mode = "wait"                      # "wait", "warm up" (no /proc) or "off"
        self.waited_s = 0.0

    def __call__(self, call) -> None:
        t0 = time.perf_counter()
        while self.mode == "wait":
            running = _other_threads_running()
            if running is None:
                self.mode = "warm up"
            elif running == 0:
                break
            elif time.perf_counter() - t0 > SETTLE_MAX_S:
                self.mode = "off"
            else:
                time.sleep(0.002)
        if self.mode == "warm up":
            while time.perf_counter() - t0 < WARMUP_S:
                call()
        self.waited_s += time.perf_counter() - t0


def _tune(spec, backend, kind, device, input, weight, bias, cands,
          allow_tf32: bool = False) -> Choice | None:
    from . import plan as _plan
    rng = np.random.default_rng(0x5EED)
    if kind == _arrays.NUMPY or kind not in _arrays.GPU_KINDS:
        sx, sw, sb = (_scratch(a, _arrays.NUMPY, rng) for a in (input, weight, bias))
    else:
        sx, sw, sb = (None if a is None else _scratch(a, _arrays.array_kind(a), rng)
                      for a in (input, weight, bias))
    timer = _timer(device)
    times: dict = {}
    calls = {}
    stats["tuned"] += 1
    for algorithm, config in cands:
        label = _label(algorithm, config)
        try:
            plan = _plan.make_plan(spec, sx, sw, sb, backend, algorithm, config=config,
                                   allow_tf32=allow_tf32)

            def call(plan=plan):
                return _plan.execute(plan, sx, sw, sb)
            timer(call)                         # compiles / loads (and syncs); not counted
        except Exception as exc:                # a candidate that cannot run here is not chosen
            times[label] = f"failed ({type(exc).__name__}: {str(exc)[:80]})"
            continue
        calls[(algorithm, config)] = call
    # Rounds, each giving every candidate a block of PER_ROUND timed calls after one untimed call:
    # a slow spell of the machine then falls on all candidates, and no timed call pays for the
    # switch from another algorithm (measured: alternating call by call, the implicit GEMM took
    # 12-14 ms after numba's direct loops and BLAS, 7.4-8.1 ms in blocks; it is what a layer
    # run again and again costs). On the CPU a block starts only once the previous candidate's
    # pool has stopped spinning (_Settler: blocks alone did not remove OpenBLAS's 0.1 s of spin).
    samples = {c: [] for c in calls}
    spent = 0.0
    settle = _Settler() if device in ("cpu", "emulator") else None
    for round_ in range(ROUNDS):
        if round_ >= 1 and spent >= BUDGET_S * max(1, len(calls)):
            break
        for c, call in list(calls.items()):
            try:
                if settle is not None:
                    settle(call)                # the previous candidate's pool goes quiet
                call()                          # the switch from the previous candidate
                for _ in range(PER_ROUND):
                    ms = timer(call)
                    samples[c].append(ms)
                    spent += ms * 1e-3
            except Exception as exc:            # e.g. out of memory once others hold theirs
                times[_label(*c)] = f"failed ({type(exc).__name__}: {str(exc)[:80]})"
                del calls[c], samples[c]
    best = None
    for (algorithm, config), ms in samples.items():
        stats["candidates_timed"] += 1
        median = float(np.median(ms))
        times[_label(algorithm, config)] = median
        if best is None or median < best[0]:
            best = (median, algorithm, config)
    if best is None:
        return None
    ordered = _ordered(times)
    return Choice(best[1], best[2], ordered,
                  datetime.datetime.now().isoformat(timespec="seconds"), "measured", "")


# ---------------------------------------------------------------------------------------------
# The disk

def _read(name: str, fp: dict, key: dict, cands) -> Choice | None:
    if _disk_broken is not None:
        return None
    path = cache_dir() / name
    try:
        text = path.read_text()
    except OSError:
        return None                             # absent (or unreadable): a miss
    try:
        entry = json.loads(text)
        ok = (entry["schema"] == SCHEMA and entry["fingerprint"] == fp and entry["key"] == key
              and entry["code"] == code_digests()
              and (entry["algorithm"], entry["config"]) in cands)
        times = _ordered({str(k): (float(v) if isinstance(v, (int, float)) else str(v))
                          for k, v in entry["times_ms"].items()})
        result = Choice(str(entry["algorithm"]), str(entry["config"]), times,
                        str(entry["measured_at"]), "disk", str(path))
    except (ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:                                  # corrupt, foreign or stale: tuned again
        stats["ignored"] += 1
        return None
    return result


def _max_entries() -> int:
    try:
        return max(1, int(os.environ.get(_ENV_ENTRIES, _DEFAULT_ENTRIES)))
    except ValueError:
        return _DEFAULT_ENTRIES


def _write(name: str, fp: dict, key: dict, tuned: Choice) -> str | None:
    global _disk_broken
    if _disk_broken is not None:
        return None
    folder = cache_dir()
    entry = {"schema": SCHEMA, "fingerprint": fp, "key": key, "code": code_digests(),
             "algorithm": tuned.algorithm, "config": tuned.config, "times_ms": tuned.times_ms,
             "measured_at": tuned.measured_at, "pid": os.getpid(), "host": platform.node()}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=folder)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(entry, f, indent=1, sort_keys=True)
            os.replace(tmp, folder / name)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        _disk_broken = f"{type(exc).__name__}: {exc}"
        warnings.warn(f"conv: the autotune cache folder {folder} cannot be written "
                      f"({_disk_broken}); autotuned choices are kept in memory only",
                      AutotuneCacheWarning, stacklevel=2)
        return None
    stats["writes"] += 1
    _prune(folder)
    return str(folder / name)


def _prune(folder: pathlib.Path) -> None:
    """Keep at most _max_entries() entries: the oldest (by modification time) go first."""
    try:
        files = [p for p in folder.iterdir() if p.suffix == ".json" and not p.name.startswith(".")]
    except OSError:
        return
    extra = len(files) - _max_entries()
    if extra <= 0:
        return
    def mtime(p):
        try:
            return p.stat().st_mtime_ns
        except OSError:
            return 0
    for p in sorted(files, key=mtime)[:extra]:
        with contextlib.suppress(OSError):
            p.unlink()


def describe() -> str:
    """One line: whether autotuning is on, where its cache is, what this process did."""
    state = "on" if enabled() else "off"
    disk = f"memory only ({_disk_broken})" if _disk_broken else str(cache_dir())
    return (f"autotune {state}; cache {disk}; this process: {stats['tuned']} tuned "
            f"({stats['candidates_timed']} candidates timed), {stats['memory_hits']} memory hits, "
            f"{stats['disk_hits']} disk hits, {stats['ignored']} entries ignored")

