"""Verify, then time: one row per (case, implementation, precision).

For each case the runner builds the inputs once per precision, computes the reference (PyTorch in
float64, on the CPU or on the GPU; the NumPy reference where PyTorch is absent), then for each implementation makes one call, checks it against the reference
with a tolerance relative to the reference's magnitude, and only if it is right times it. A wrong
result is a WRONG row with its error, never a time.

Implementations: every usable backend and algorithm of conv (found at run time through
``conv.registry``) for the device, plus PyTorch (``torch.nn.functional.conv1d/conv2d``; cuDNN
with ``cudnn.benchmark = True`` on the GPU). Precisions: "fp32" (TF32 off on both sides), "tf32"
(PyTorch with TF32 on, ours as-is), "fp16", "bf16" (ml_dtypes' bfloat16 arrays, torch.bfloat16
tensors; implementations without bfloat16 kernels have no row: numba's, im2col_cublas).

Who runs where. On a CPU run PyTorch lives in a worker process of its own (TorchWorker, started
with multiprocessing's "spawn", the environment inherited: OMP_WAIT_POLICY and the thread settings
are the same) and this process never imports it: PyTorch's OpenMP pool and numba's, both spinning
after their work, slowed each other unevenly in one process (a 1x1 conv took 25 ms with PyTorch
imported and 7 ms alone, issue 14). The worker rebuilds the case's inputs (host_inputs is
deterministic; a hash of the arrays sent along proves they are the ones timed here), computes the
float64 reference and sends it back, makes the torch row's first call and sends its output back
for the same `check`, and times one round whenever this process asks: the interleaved rounds stay,
and only one process times at a time. A worker that dies or errs makes that case's torch row an
ERROR row; the next case starts a new one. GPU runs (and --torch-in-process) keep PyTorch in this
process: the issue is the CPU thread pools, and a CUDA context per process would cost more.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import multiprocessing
import os
import sys
import time
import warnings
import zlib
from dataclasses import dataclass

import numpy as np

import conv
from conv import plan as _plan
from conv import registry
from conv._arrays import to_numpy as to_host
from conv._arrays import torch_from_numpy
from conv._dtypes import BFLOAT16
from conv._spec import make_spec
from conv.backend.reference import conv_reference

from . import metrics
from .suites import Case
from .timing import (CpuUse, GpuTimer, Timing, round_spread, row_interference, time_cpu,
                     wait_for_idle_pools)

PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
# Rows that time algorithm="auto": "auto" with autotuning off (the registry's auto rule, read from
# the dispatch tables), "autotune" with it on, its cache in a fresh folder per run, so the row's
# first call is the tuning (first_ms: every candidate timed, then the call itself).
AUTO_MODES = ("auto", "autotune")
# Relative tolerance per precision, times sqrt(reduction length) times max |reference|; plus, for
# bf16, ROUNDING times max |reference|: both sides sum in float32 (RTOL's term) and round once to
# 8 significant bits, half an ulp, at most 2^-8 of max |reference| (tests/_helpers.py derives it).
RTOL = {"fp32": 2e-6, "tf32": 5e-4, "fp16": 1e-3, "bf16": 2e-6}
ROUNDING = {"bf16": 2.0 ** -8}
STORAGE = {"fp16": np.dtype(np.float16), "bf16": BFLOAT16}    # else float32
# The NumPy reference backend is slow: timed only on cases up to this many FLOPs.
REFERENCE_MAX_FLOPS = 3e7
TORCH = "torch"


@dataclass(frozen=True)
class Impl:
    """An implementation to time: a conv backend + algorithm, or PyTorch."""

    backend: str
    algorithm: str = ""

    @property
    def label(self) -> str:
        return self.backend if self.backend == TORCH else f"{self.backend}:{self.algorithm}"

    @property
    def is_ours(self) -> bool:
        return self.backend != TORCH

    @property
    def is_auto(self) -> bool:
        """Times algorithm="auto" (autotuned or not) rather than one algorithm."""
        return self.algorithm in AUTO_MODES

    def call(self, conv_fn, args, kwargs):
        """conv_fn (conv.conv1d/conv2d) on args with this backend and algorithm."""
        if self.algorithm == "autotune":
            with autotuning():
                return conv_fn(*args, backend=self.backend, algorithm="auto", **kwargs)
        return conv_fn(*args, backend=self.backend,
                       algorithm="auto" if self.is_auto else self.algorithm, **kwargs)


@dataclass
class Settings:
    device: str                      # "cpu" or "gpu"
    precisions: tuple
    quick: bool = False
    max_reps: int | None = None      # --repeats
    use_torch: bool = True
    budget_s: float | None = None    # timing budget per (case, implementation)
    torch_in_process: bool = False   # --torch-in-process: CPU PyTorch in this process (the old way)

    @property
    def budget(self) -> float:
        if self.budget_s is not None:
            return self.budget_s
        return 0.12 if self.quick else 0.5


# ----------------------------------------------------------------------------- what can run here
def import_torch():
    """PyTorch, or None when it is not installed (or fails to import)."""
    try:
        import torch
    except Exception:
        return None
    return torch


def torch_cuda_usable(torch) -> bool:
    try:
        return bool(torch.cuda.is_available())
    except Exception:
        return False


def cudasim_enabled() -> bool:
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        return True
    numba = sys.modules.get("numba")
    return bool(numba is not None and getattr(getattr(numba, "config", None), "ENABLE_CUDASIM", 0))


def gpu_usable() -> tuple[bool, str]:
    """Whether a GPU run can happen: CuPy (inputs, events, L2 flush) and a CUDA device."""
    from conv._gpu_arrays import cupy_availability
    return cupy_availability()


def discover(device: str, wanted=()) -> tuple[list[Impl], list[str]]:
    """Our implementations for `device` ('cpu' or 'gpu'), filtered by `wanted` (backend or
    backend:algorithm names; empty = all), and notes on what was left out and why."""
    names = ("reference", "cpu") if device == "cpu" else ("cupy", "numba")
    impls, notes = [], []
    for name in names:
        if name == "numba" and cudasim_enabled():
            notes.append("numba: skipped under NUMBA_ENABLE_CUDASIM (the simulator is not a GPU)")
            continue
        ok, why = _plan.backend_availability(name)
        if not ok:
            notes.append(f"{name}: not usable here ({why})")
            continue
        for row in registry.algorithms(name):
            impl = Impl(name, row.name)
            if not wanted or name in wanted or impl.label in wanted:
                impls.append(impl)
        if len(registry.algorithms(name)) > 1:
            # What a user gets without naming an algorithm: the auto rule, and the autotuner.
            for mode in AUTO_MODES:
                impl = Impl(name, mode)
                if not wanted or name in wanted or impl.label in wanted:
                    impls.append(impl)
    for w in wanted:
        if w != TORCH and not any(w in (i.backend, i.label) for i in impls):
            notes.append(f"{w}: asked for but not available on the {device}")
    if device == "cpu":
        notes.extend(cpu_target_notes())
    return impls, notes


def cpu_target_notes() -> list[str]:
    """What the CPU kernels and PyTorch's oneDNN were compiled for where the environment chose it
    (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES: our kernels for another target than the host, e.g. the
    AVX2 variant on an AVX-512 machine; ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA: PyTorch held to
    an older ISA): the host's features and the defined peak do not say it."""
    notes = []
    name, features = os.environ.get("NUMBA_CPU_NAME"), os.environ.get("NUMBA_CPU_FEATURES")
    if name and name != "host":
        from conv.backend.cpu import implicit
        notes.append(f"our CPU kernels compiled for NUMBA_CPU_NAME={name} (NUMBA_CPU_FEATURES="
                     f"{features or ''}): {implicit._VECTOR_BYTES * 8}-bit vectors, "
                     f"{implicit.MR} x {implicit.NV} micro-kernel tiles, not the host's")
    for var in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        if os.environ.get(var):
            notes.append(f"PyTorch's oneDNN held to {var}={os.environ[var]}")
    return notes


# ------------------------------------------------------------------------------------- inputs
def _seed(case: Case) -> int:
    return zlib.crc32(case.label.encode())


def host_inputs(case: Case, precision: str):
    """(x, w, b) NumPy arrays for the case in the precision's storage dtype, plus x's base array
    (x is base.transpose(0, 2, 1), non-contiguous, when the case asks for a transposed input)."""
    rng = np.random.default_rng(_seed(case))
    dtype = STORAGE.get(precision, np.dtype(np.float32))
    if case.transposed_input:
        n, c, length = case.x_shape
        base = rng.standard_normal((n, length, c), dtype=np.float32).astype(dtype)
        x = base.transpose(0, 2, 1)
    else:
        base = x = rng.standard_normal(case.x_shape, dtype=np.float32).astype(dtype)
    fan_in = int(np.prod(case.w_shape[1:]))
    w = (rng.standard_normal(case.w_shape, dtype=np.float32) / math.sqrt(fan_in)).astype(dtype)
    b = rng.standard_normal(case.w_shape[0], dtype=np.float32).astype(dtype) if case.bias else None
    return x, w, b, base


def inputs_digest(x_base, w, b) -> str:
    """SHA-256 of the case's arrays (shapes, dtypes and bytes): the worker checks that the inputs
    it rebuilt are the ones this process times ours on."""
    h = hashlib.sha256()
    for a in (x_base, w, b):
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _gpu_arrays(x_base, w, b, case: Case):
    """Device copies: (x, w, b) as conv is called with them, and x's base (see host_inputs)."""
    import cupy
    base = cupy.asarray(x_base)
    x = base.transpose(0, 2, 1) if case.transposed_input else base
    return x, cupy.asarray(w), None if b is None else cupy.asarray(b), base


def _as_kind(a, backend: str):
    """A GPU array in a kind the backend accepts (CuPy preferred, zero-copy otherwise)."""
    if a is None:
        return None
    accepts = registry.BACKENDS[backend].kinds
    if "cupy" in accepts:
        return a
    if "numba-cuda" in accepts:
        from numba import cuda
        return cuda.as_cuda_array(a)
    if "torch-cuda" in accepts:
        return import_torch().as_tensor(a, device="cuda")
    return a


# -------------------------------------------------------------------------------------- PyTorch
@contextlib.contextmanager
def torch_precision(torch, precision: str):
    """TF32 on for 'tf32' rows, off otherwise (cuDNN convs and cuBLAS matmuls); restored after."""
    if torch is None or not torch.cuda.is_available():
        yield
        return
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    on = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = on
    torch.backends.cuda.matmul.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def torch_conv(torch, case: Case, spec, x, w, b):
    """torch.nn.functional.conv1d/conv2d with the case's arguments; a padding_mode other than
    'zeros' pads with F.pad first, as torch.nn.Conv1d/Conv2d do."""
    F = torch.nn.functional
    fn = F.conv1d if case.op == "conv1d" else F.conv2d
    if case.padding_mode == "zeros":
        return fn(x, w, b, case.stride, case.padding, case.dilation, case.groups)
    top, bottom, left, right = spec.pad
    pad = (left, right) if case.op == "conv1d" else (left, right, top, bottom)
    return fn(F.pad(x, pad, mode=case.padding_mode), w, b, case.stride, 0, case.dilation,
              case.groups)


def _torch_cuda(torch, a):
    """A zero-copy tensor of CuPy array `a`; bfloat16 through a same-size integer view (its
    __cuda_array_interface__ has no bfloat16 type string PyTorch reads)."""
    if a.dtype == BFLOAT16:
        return torch.as_tensor(a.view(np.int16), device="cuda").view(torch.bfloat16)
    return torch.as_tensor(a, device="cuda")


def _torch_tensors(torch, case: Case, x_base, w, b, device: str):
    """Torch views of the same data (zero-copy from NumPy or CuPy)."""
    if device == "cpu":
        tx = torch_from_numpy(x_base)
        tw, tb = torch_from_numpy(w), None if b is None else torch_from_numpy(b)
    else:
        tx, tw, tb = (None if a is None else _torch_cuda(torch, a) for a in (x_base, w, b))
    if case.transposed_input:
        tx = tx.transpose(1, 2)
    return tx, tw, tb


# ------------------------------------------------------------------------------------ reference
def reference_output(torch, case: Case, spec, x, w, b, x_base, device: str, gpu=None) -> tuple:
    """(reference as float64 NumPy, what it is). x/w/b/x_base are host arrays; `gpu` their device
    copies (x, w, b, x_base) on a GPU run."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if torch is not None and device == "cpu":
            tx, tw, tb = _torch_tensors(torch, case, x_base.astype(np.float64), w.astype(np.float64),
                                        None if b is None else b.astype(np.float64), "cpu")
            return torch_conv(torch, case, spec, tx, tw, tb).numpy(), "torch float64 (CPU)"
        if torch is not None and device == "gpu" and torch_cuda_usable(torch):
            _, gw, gb, gbase = gpu
            tx, tw, tb = _torch_tensors(torch, case, gbase, gw, gb, "gpu")
            # float64 on the GPU: cuDNN's autotuned fp32 algorithms (FFT, Winograd) can be off by
            # more than an fp32 tolerance, which would turn right answers into false WRONG rows.
            with torch_precision(torch, "fp32"):
                out = torch_conv(torch, case, spec, tx.double(), tw.double(),
                                 None if tb is None else tb.double())
            return out.cpu().numpy(), "torch float64 (GPU)"
        return conv_reference(x, w, b, spec), "NumPy reference (float64)"


def check(out: np.ndarray, ref: np.ndarray, precision: str, reduction: int) -> tuple[bool, float,
                                                                                     float, str]:
    """(ok, max abs error, tolerance, message). Tolerance: RTOL * sqrt(reduction) * max|ref|;
    a NaN or an element the call left unwritten counts as wrong."""
    if tuple(out.shape) != tuple(ref.shape):
        return False, float("nan"), float("nan"), f"shape {tuple(out.shape)}, expected {ref.shape}"
    if ref.size == 0:
        return True, 0.0, 0.0, ""
    scale = max(float(np.abs(ref).max()), 1e-30)
    tol = (RTOL[precision] * math.sqrt(max(1, reduction)) + ROUNDING.get(precision, 0.0)) * scale
    err = np.abs(out.astype(np.float64) - ref)
    bad = ~(err <= tol)
    max_err = float(np.nanmax(np.where(np.isfinite(err), err, np.inf)))
    if bad.any():
        first = tuple(int(v) for v in np.argwhere(bad)[0])
        return False, max_err, tol, (f"{int(bad.sum())} of {bad.size} elements off (first at "
                                     f"{first}: {out[first]!r} vs {ref[first]!r})")
    return True, max_err, tol, ""


# --------------------------------------------------------------------------- the PyTorch worker
# Test hook: CONV_BENCH_TORCH_WORKER_EXIT="STAGE[:TEXT]" makes the worker exit abruptly (as a
# crash would) on reaching STAGE ("reference", "first_call" or "time_round") for a case whose
# label contains TEXT (any case without it).
WORKER_EXIT_HOOK = "CONV_BENCH_TORCH_WORKER_EXIT"


class WorkerError(RuntimeError):
    """The PyTorch worker failed a request: it raised (still alive) or it died."""


class TorchWorker:
    """PyTorch in a spawned process of its own; requests go over a pipe, one at a time, and this
    process waits for each answer (so the two never compute, let alone time, at once)."""

    def __init__(self):
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_torch_worker_main, args=(child,), daemon=True,
                                   name="conv-bench-torch-worker")
        self.process.start()
        child.close()
        self.pid = self.process.pid
        try:
            hello = self.call("hello")
        except WorkerError:
            self.close()
            raise
        self.version, self.threads = hello["version"], hello["threads"]

    def alive(self) -> bool:
        return self.process.is_alive()

    def call(self, what: str, *args):
        """The worker's answer to request `what`; WorkerError if it raised or died."""
        try:
            self._conn.send((what, args))
            while not self._conn.poll(0.5):
                if not self.process.is_alive() and not self._conn.poll(0):
                    raise EOFError
            kind, value = self._conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
            self.process.join(1.0)
            raise WorkerError(f"the PyTorch worker (pid {self.pid}) died during '{what}' "
                              f"(exit code {self.process.exitcode})") from None
        if kind == "error":
            raise WorkerError(f"in the PyTorch worker (pid {self.pid}), '{what}': {value}")
        return value

    def cpu_seconds(self) -> float:
        """The worker's CPU time so far (0 once it is gone)."""
        from .timing import _process_cpu_seconds
        return _process_cpu_seconds(self.pid) if self.process.is_alive() else 0.0

    def close(self) -> None:
        if self.process.is_alive():
            with contextlib.suppress(Exception):
                self._conn.send(("stop", ()))
            self.process.join(2.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(1.0)
        self._conn.close()


class _RemoteRound:
    """The torch row's fn in _time_rounds: one round is timed by the worker, not here."""

    def __init__(self, worker: TorchWorker):
        self.worker = worker

    def time_round(self, **how) -> Timing:
        return self.worker.call("time_round", how)


def _torch_worker_main(conn) -> None:
    """The worker's loop: answer ("ok", value) or ("error", text) to each request until "stop"."""
    torch = None
    current: dict = {}          # the case being worked on: its label, spec, tensors, precision
    exit_stage, _, exit_case = os.environ.get(WORKER_EXIT_HOOK, "").partition(":")

    def hello():
        nonlocal torch
        torch = import_torch()
        if torch is None:
            raise RuntimeError("PyTorch does not import in the worker")
        # Plain str and int: torch.__version__ is a torch class, and unpickling it would import
        # torch in the runner.
        return {"pid": os.getpid(), "version": str(torch.__version__),
                "threads": int(torch.get_num_threads())}

    def gemm_peak():
        peak = metrics.measure_torch_cpu_gemm_peak()
        return None if peak is None else float(peak)

    def reference(case: Case, precision: str, digest: str):
        current.clear()
        x, w, b, x_base = host_inputs(case, precision)
        if inputs_digest(x_base, w, b) != digest:
            raise RuntimeError("the inputs rebuilt here differ from the runner's")
        spec = make_spec(case.op, x, w, b, case.stride, case.padding, case.dilation, case.groups,
                         case.padding_mode)
        ref, what = reference_output(torch, case, spec, x, w, b, x_base, "cpu")
        current.update(label=case.label, case=case, spec=spec, precision=precision,
                       tensors=_torch_tensors(torch, case, x_base, w, b, "cpu"))
        return np.asarray(ref, dtype=np.float64), str(what)

    def fn():
        return torch_conv(torch, current["case"], current["spec"], *current["tensors"])

    def context():
        stack = contextlib.ExitStack()
        stack.enter_context(torch.no_grad())
        stack.enter_context(torch_precision(torch, current["precision"]))
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        return stack

    def first_call():
        # As Runner._measure and _first_call: one call timed apart, its output sent for `check`.
        with context():
            t0 = time.perf_counter()
            out = fn()
            first_ms = (time.perf_counter() - t0) * 1e3
        return first_ms, np.array(to_host(out))

    def time_round(how: dict):
        with context():
            return time_cpu(fn, **how)

    handlers = {"hello": hello, "gemm_peak": gemm_peak, "reference": reference,
                "first_call": first_call, "time_round": time_round}
    while True:
        try:
            what, args = conn.recv()
        except EOFError:                    # the runner went away
            return
        if what == "stop":
            return
        label = args[0].label if what == "reference" else current.get("label", "")
        if exit_stage == what and exit_case in label:
            os._exit(17)
        try:
            conn.send(("ok", handlers[what](*args)))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"[:300]))


# ------------------------------------------------------------------------------------------ rows
def _row(case: Case, spec, impl: Impl, precision: str, **fields) -> dict:
    itemsize = metrics.ITEMSIZE[precision]
    row = {
        "suite": case.suite, "case": case.name, "op": case.op, "args": case.describe(),
        "impl": impl.label, "backend": impl.backend, "algorithm": impl.algorithm,
        "precision": precision, "status": "ok", "note": "",
        "median_ms": None, "p20_ms": None, "p80_ms": None, "reps": 0,
        "first_ms": None, "compile_ms": None,
        "flops": metrics.conv_flops(spec), "bytes": metrics.conv_bytes(spec, itemsize),
        "gflops": None, "gbps": None, "peak_share": None, "bw_share": None,
        "torch_ms": None, "ratio": None, "max_err": None, "tol": None, "auto": False,
        "round_ms": None, "round_spread": None, "others_cpu": None, "unreliable": None,
        "ratio_unreliable": None, "idle_wait_ms": None,
    }
    row.update(fields)
    return row


def _fill_rates(row: dict, peaks: dict) -> None:
    if row["median_ms"]:
        sec = row["median_ms"] * 1e-3
        row["gflops"] = metrics.rate(row["flops"], sec) / 1e9
        row["gbps"] = metrics.rate(row["bytes"], sec) / 1e9
        peak = peaks.get(row["precision"]) or peaks.get("fp32")
        if peak and metrics.counts_direct_flops(row):      # an FFT's GFLOP/s is effective only
            row["peak_share"] = row["gflops"] * 1e9 / peak
        if peaks.get("bandwidth"):
            row["bw_share"] = row["gbps"] * 1e9 / peaks["bandwidth"]


class Runner:
    """Runs cases on one device and collects rows."""

    def __init__(self, settings: Settings, impls: list[Impl], peaks: dict, progress=None,
                 worker: TorchWorker | None = None):
        self.settings = settings
        self.impls = impls
        self.peaks = peaks
        self.progress = progress
        self.gpu = settings.device == "gpu"
        # CPU runs: PyTorch in a worker process (`worker`, or one started here), never imported
        # in this one; a worker that dies is replaced at the next case.
        self.isolated = settings.use_torch and not self.gpu and not settings.torch_in_process
        self.worker = worker
        self.worker_pids: list[int] = [worker.pid] if worker is not None else []
        self.worker_cpu_s = 0.0     # CPU seconds of the workers closed so far (the run's, not others')
        self.torch = import_torch() if settings.use_torch and not self.isolated else None
        if self.gpu and self.torch is not None and not torch_cuda_usable(self.torch):
            self.torch = None                   # a CPU-only PyTorch has no cuDNN to compare with
        self.timer = GpuTimer() if self.gpu else None
        if self.gpu and self.torch is not None and self.torch.cuda.is_available():
            self.torch.backends.cudnn.benchmark = True
        self.rows: list[dict] = []

    @property
    def compares_torch(self) -> bool:
        return self.isolated or self.torch is not None

    def _worker(self) -> TorchWorker:
        """The live worker, a new one if the last died (WorkerError if it cannot start)."""
        if self.worker is not None and not self.worker.alive():
            self.close()
        if self.worker is None:
            self.worker = TorchWorker()
            self.worker_pids.append(self.worker.pid)
        return self.worker

    def close(self) -> None:
        if self.worker is not None:
            self.worker_cpu_s += self.worker.cpu_seconds()
            self.worker.close()
            self.worker = None

    def _own_pids(self) -> tuple:
        """Processes whose CPU time is this run's, not interference: the worker's."""
        return (self.worker.pid,) if self.worker is not None and self.worker.alive() else ()

    # -- timing -------------------------------------------------------------------------------
    @property
    def rounds(self) -> int:
        """CPU rows are timed in this many interleaved rounds (GPU timings are steady: one)."""
        return 1 if self.gpu else (2 if self.settings.quick else 4)

    def _max_min_reps(self, slow: bool) -> tuple[int, int]:
        s = self.settings
        max_reps = s.max_reps or (30 if s.quick else 100) * (2 if self.gpu else 1)
        return max_reps, min(max_reps, 3 if (slow or s.quick) else 5)

    def cpu_round(self, slow: bool = False) -> dict:
        """time_cpu's budget and repetitions for one CPU round (split over the rounds); the
        worker's torch rounds get the same."""
        max_reps, min_reps = self._max_min_reps(slow)
        rounds = self.rounds
        return {"budget_s": self.settings.budget / rounds,
                "min_reps": max(2, min_reps // rounds), "max_reps": max(2, max_reps // rounds)}

    def _time(self, fn, slow: bool = False):
        """One round of timing: the budget and the repetitions are split over the rounds."""
        if self.gpu:
            max_reps, _ = self._max_min_reps(slow)
            return self.timer.time(fn, budget_s=self.settings.budget,
                                   min_reps=min(max_reps, 10), max_reps=max_reps)
        return time_cpu(fn, **self.cpu_round(slow))

    def _first_call(self, fn):
        if self.gpu:
            return self.timer.first_call_ms(fn)
        t0 = time.perf_counter()
        out = fn()
        return (time.perf_counter() - t0) * 1e3, out

    def _measure(self, row: dict, fn, ref, precision: str, reduction: int, module=None,
                 slow: bool = False):
        """First call (timed apart, compile time noted) and verification. Returns the row and,
        if the output is right, the function to time (the caller times every right one in
        interleaved rounds: _time_rounds)."""
        compile_before = _compile_times(module)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                first_ms, out = self._first_call(fn)
                out = to_host(out)
        except Exception as exc:                            # unsupported here, or a crash
            row.update(status="ERROR", note=f"{type(exc).__name__}: {exc}"[:200])
            return row, None
        row["first_ms"] = first_ms
        compiled = _compile_delta(compile_before, _compile_times(module))
        if compiled is not None:
            row["compile_ms"] = compiled * 1e3
        ok, max_err, tol, msg = check(out, ref, precision, reduction)
        row.update(max_err=max_err, tol=tol)
        if not ok:
            row.update(status="WRONG", note=msg)
            return row, None
        return row, (fn, slow)

    def _time_rounds(self, timed: list) -> None:
        """timed: (row, fn, slow, context) for every verified row of a case; context() wraps the
        calls (PyTorch's precision switches). Each round times every row once, in order."""
        samples = [[] for _ in timed]
        pids = self._own_pids()
        # CpuUse.now(pids) only with a worker: the interference tests stand in a plain now().

        def snapshot():
            return CpuUse.now(pids) if pids else CpuUse.now()
        before = snapshot()
        failed = set()
        for _ in range(self.rounds):
            for i, (row, fn, slow, context) in enumerate(timed):
                if i in failed:
                    continue
                remote = getattr(fn, "time_round", None)
                if remote is not None:          # the worker's torch row: its round r, now
                    # This process's pools (OpenBLAS after our im2col row) go idle first: the
                    # worker times on the same cores (it waits for its own pools itself).
                    wait_for_idle_pools()
                    try:
                        samples[i].append(remote(**self.cpu_round(slow)))
                    except WorkerError as exc:
                        row.update(status="ERROR", note=str(exc)[:300])
                        failed.add(i)
                    continue
                with warnings.catch_warnings(), context():
                    warnings.simplefilter("ignore")
                    samples[i].append(self._time(fn, slow=slow))
        # Interference seen while this case was timed: what other processes took of the CPUs
        # (the worker's CPU time is ours), and how far each row's rounds disagree
        # (timing.row_interference says when it is too far).
        others = before.others_share(snapshot()) if timed else None
        for i, ((row, *_), rounds) in enumerate(zip(timed, samples)):
            if i in failed:
                continue
            t = Timing.pooled(rounds)
            spread = round_spread(rounds)
            waits = [r.idle_wait_s for r in rounds]
            row.update(median_ms=t.median_ms, p20_ms=t.p20_ms, p80_ms=t.p80_ms, reps=t.reps,
                       round_ms=[r.median_ms for r in rounds], round_spread=spread,
                       idle_wait_ms=[None if v is None else round(v * 1e3, 1) for v in waits],
                       others_cpu=others, unreliable=row_interference(spread, others))
            _fill_rates(row, self.peaks)

    # -- one case -----------------------------------------------------------------------------
    def run_case(self, case: Case, precision: str) -> list[dict]:
        torch = self.torch
        x, w, b, x_base = host_inputs(case, precision)
        spec = make_spec(case.op, x, w, b, case.stride, case.padding, case.dilation, case.groups,
                         case.padding_mode)
        reduction = spec.c_per_group * spec.r * spec.s
        gpu_arrays = _gpu_arrays(x_base, w, b, case) if self.gpu else None
        worker_failed = None
        if self.isolated:
            ref, ref_what, worker_failed = self._worker_reference(case, precision, spec, x, w, b,
                                                                  x_base)
        else:
            ref, ref_what = reference_output(torch, case, spec, x, w, b, x_base,
                                             self.settings.device, gpu_arrays)
        conv_fn = getattr(conv, case.op)
        rows = []
        ours = gpu_arrays[:3] if self.gpu else (x, w, b)
        auto = _auto_choice(case, ours[0], ours[1])
        timed = []
        for impl in self.impls:
            row = _row(case, spec, impl, precision, auto=auto == impl.label)
            if impl.backend == "reference" and metrics.conv_flops(spec) > REFERENCE_MAX_FLOPS:
                continue                              # capped: far too slow to time here
            if _refuses_shape(impl, spec):
                continue                              # e.g. winograd on a 1x1 or strided conv
            kwargs = case.kwargs
            if precision == "tf32":     # ours with TF32 allowed (only cupy's implicit_gemm has
                kwargs = dict(kwargs, allow_tf32=True)      # it), PyTorch with cuDNN's TF32 on
                row["note"] = "ours with allow_tf32=True, vs PyTorch with TF32 on"
            module = _plan.backend_module(impl.backend)
            args = tuple(_as_kind(a, impl.backend) for a in ours) if self.gpu else ours

            def fn(args=args, impl=impl, kwargs=kwargs):
                return impl.call(conv_fn, args, kwargs)

            row, to_time = self._measure(row, fn, ref, precision, reduction, module,
                                         slow=impl.backend == "reference")
            if impl.is_auto and row["status"] == "ok":
                row["picked"] = _picked(case, args, impl)
                row["note"] = f"picked {row['picked']}"
            rows.append(row)
            if to_time:
                timed.append((row, *to_time, contextlib.nullcontext))
        if self.compares_torch:
            if self.isolated:
                row, to_time, context = self._worker_torch_row(case, spec, precision, ref,
                                                               reduction, worker_failed)
            else:
                row, to_time, context = self._torch_row(case, spec, precision, x_base, w, b,
                                                        gpu_arrays, ref, reduction)
            rows.append(row)
            if to_time:
                timed.append((row, *to_time, context))
        self._time_rounds(timed)
        torch_ms = rows[-1]["median_ms"] if self.compares_torch else None
        torch_noisy = rows[-1].get("unreliable") if self.compares_torch else None
        for row in rows:
            row["reference"] = ref_what
            if torch_ms and row["median_ms"] and row["backend"] != TORCH:
                row["torch_ms"] = torch_ms
                row["ratio"] = torch_ms / row["median_ms"]
                if torch_noisy:             # a ratio is as unreliable as either of its times
                    row["ratio_unreliable"] = f"torch: {torch_noisy}"
        if self.gpu:
            del gpu_arrays, ours
            import cupy
            cupy.get_default_memory_pool().free_all_blocks()
        return rows

    def _torch_row(self, case, spec, precision, x_base, w, b, gpu_arrays, ref, reduction) -> dict:
        torch = self.torch
        impl = Impl(TORCH)
        label = "cuDNN (torch)" if self.gpu else f"torch CPU, {torch.get_num_threads()} threads"
        row = _row(case, spec, impl, precision, note=label)
        try:
            if self.gpu:
                _, gw, gb, gbase = gpu_arrays
                tx, tw, tb = _torch_tensors(torch, case, gbase, gw, gb, "gpu")
            else:
                tx, tw, tb = _torch_tensors(torch, case, x_base, w, b, "cpu")
        except Exception as exc:
            row.update(status="ERROR", note=f"{type(exc).__name__}: {exc}"[:200])
            return row, None, None

        def fn():
            return torch_conv(torch, case, spec, tx, tw, tb)

        def context():
            # The precision switches are set around the timing, not inside each call.
            stack = contextlib.ExitStack()
            stack.enter_context(torch.no_grad())
            stack.enter_context(torch_precision(torch, precision))
            return stack

        with context():
            row, to_time = self._measure(row, fn, ref, precision, reduction)
        return row, to_time, context

    def _worker_reference(self, case, precision, spec, x, w, b, x_base) -> tuple:
        """(reference, what it is, why the worker failed or None): PyTorch float64 computed in the
        worker on the inputs it rebuilt (their hash checked), or the NumPy reference if it failed."""
        try:
            worker = self._worker()
            ref, what = worker.call("reference", case, precision, inputs_digest(x_base, w, b))
            return ref, f"{what}, in the worker process (pid {worker.pid})", None
        except WorkerError as exc:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = conv_reference(x, w, b, spec)
            return ref, "NumPy reference (float64; the PyTorch worker failed)", str(exc)

    def _worker_torch_row(self, case, spec, precision, ref, reduction, failed) -> tuple:
        """The torch row from the worker: its first call's output checked here with `check`, as
        _measure checks ours; its rounds timed there (_RemoteRound)."""
        impl = Impl(TORCH)
        worker = self.worker
        label = (f"torch CPU, {worker.threads} threads, worker pid {worker.pid}"
                 if worker is not None and failed is None else "torch CPU, worker process")
        row = _row(case, spec, impl, precision, note=label)
        if failed is None:
            try:
                first_ms, out = worker.call("first_call")
            except WorkerError as exc:
                failed = str(exc)
        if failed is not None:
            row.update(status="ERROR", note=failed[:300])
            return row, None, None
        row["first_ms"] = first_ms
        ok, max_err, tol, msg = check(out, ref, precision, reduction)
        row.update(max_err=max_err, tol=tol)
        if not ok:
            row.update(status="WRONG", note=msg)
            return row, None, None
        return row, (_RemoteRound(worker), False), contextlib.nullcontext

    # -- all cases ----------------------------------------------------------------------------
    def run(self, cases: list[Case], on_rows=None) -> list[dict]:
        """Every case at every precision; on_rows(rows) as each finishes."""
        try:
            with fresh_autotune_cache():
                return self._run(cases, on_rows)
        finally:
            self.close()

    def torch_process(self) -> dict:
        """Where PyTorch ran, for the results' settings and the header."""
        if not self.compares_torch:
            return {"mode": None, "torch_imported_in_runner": "torch" in sys.modules,
                    "runner_pid": os.getpid()}
        mode = "worker" if self.isolated else "in-process"
        return {"mode": mode, "runner_pid": os.getpid(), "worker_pids": list(self.worker_pids),
                "start_method": "spawn" if self.isolated else None,
                "torch_imported_in_runner": "torch" in sys.modules}

    def _run(self, cases: list[Case], on_rows=None) -> list[dict]:
        for case in cases:
            for precision in self.settings.precisions:
                if self.progress is not None:
                    self.progress.set_postfix_str(f"{case.label} {precision}", refresh=False)
                rows = self.run_case(case, precision)
                self.rows.extend(rows)
                if on_rows is not None:
                    on_rows(rows)
                if self.progress is not None:
                    self.progress.update(1)
        return self.rows


@contextlib.contextmanager
def autotuning():
    """Autotuning on around a call (restored after)."""
    saved = conv.autotune._enabled
    conv.set_autotune(True)
    try:
        yield
    finally:
        conv.set_autotune(saved)


@contextlib.contextmanager
def fresh_autotune_cache():
    """The autotune cache in a temporary folder for the run (and forgotten in memory), so every
    autotune row tunes on its first call and the user's own cache is neither read nor written."""
    import tempfile
    saved = os.environ.get("CONV_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="conv-bench-autotune-") as folder:
        os.environ["CONV_CACHE_DIR"] = folder
        conv.autotune.clear_memory()
        try:
            yield folder
        finally:
            if saved is None:
                os.environ.pop("CONV_CACHE_DIR", None)
            else:
                os.environ["CONV_CACHE_DIR"] = saved
            conv.autotune.clear_memory()


def _refuses_shape(impl: Impl, spec) -> bool:
    """Whether impl's algorithm computes only some shapes and not this one (its registry row's
    spec refusal: winograd takes stride-1 3x3 only), or has no kernels for the precision's dtype
    (the registry's dtypes: numba's and im2col_cublas in a bf16 run): such a case has no row for
    it, as the reference has none above its cap."""
    if impl.is_auto or impl.backend == TORCH:
        return False
    try:
        row = registry.algorithm(impl.backend, impl.algorithm)
    except ValueError:
        return False
    if spec.dtype not in row.dtypes:
        return True
    return row.spec_refusal is not None and row.spec_refusal(spec) is not None


def _picked(case: Case, args, impl: Impl) -> str | None:
    """algorithm[config] an auto row ran (its plan, after the first call)."""
    try:
        if impl.algorithm == "autotune":
            with autotuning():
                plan = conv.explain(case.op, args[0], args[1], args[2], backend=impl.backend,
                                    **case.kwargs)
        else:
            plan = conv.explain(case.op, args[0], args[1], args[2], backend=impl.backend,
                                **case.kwargs)
    except Exception:
        return None
    return plan.algorithm + (f"[{plan.config}]" if plan.config else "")


def _auto_choice(case: Case, x, w) -> str | None:
    """backend:algorithm that conv's algorithm='auto' picks for this case (None if it cannot)."""
    try:
        choice = conv.explain(case.op, x, w, None, **case.kwargs)
    except Exception:
        return None
    return f"{choice.backend}:{choice.algorithm}"


def _compile_times(module):
    fn = getattr(module, "compile_times", None) if module is not None else None
    if fn is None:
        return None
    try:
        return dict(fn())
    except Exception:
        return None


def _compile_delta(before, after):
    """Seconds of compilation that happened between two compile_times() snapshots."""
    if before is None or after is None:
        return None
    return sum(float(v) - float(before.get(k, 0.0)) for k, v in after.items()
               if float(v) != float(before.get(k, 0.0)))


# -------------------------------------------------------------------------------------- geomeans
def ratio_unreliable(row: dict) -> str | None:
    """Why a row's ratio cannot be trusted: its own time, or PyTorch's in the same case."""
    return row.get("unreliable") or row.get("ratio_unreliable")


def geomeans(rows: list[dict]) -> list[dict]:
    """Geometric mean of ratio (PyTorch time / ours, > 1 = we are faster) per suite and precision,
    for each implementation, for what algorithm='auto' picks ("auto"), and for the best of ours per
    case ("best"; the NumPy reference excluded). Suite "all" pools every suite. "unreliable":
    how many of the ratios come from a row flagged for interference (ratio_unreliable)."""
    keyed: dict = {}
    for row in rows:
        if row["backend"] == TORCH or not row.get("ratio"):
            continue
        item = (row["ratio"], bool(ratio_unreliable(row)))
        for suite in (row["suite"], "all"):
            key = (suite, row["precision"])
            keyed.setdefault(key, {}).setdefault(row["impl"], []).append(item)
            if row.get("auto"):
                keyed[key].setdefault("auto", []).append(item)
    best: dict = {}
    for row in rows:
        if row["backend"] in (TORCH, "reference") or not row.get("ratio") or \
                row["algorithm"] in AUTO_MODES:
            continue
        k = (row["suite"], row["case"], row["precision"])
        best[k] = max(best.get(k, (0.0, False)), (row["ratio"], bool(ratio_unreliable(row))))
    for (suite, case, precision), item in best.items():
        for s in (suite, "all"):
            keyed.setdefault((s, precision), {}).setdefault("best", []).append(item)
    return _geomean_table(keyed, rows, "geomean_ratio", last=("auto", "best"))


def _geomean_table(keyed: dict, rows: list[dict], field: str, last=()) -> list[dict]:
    """keyed: (suite, precision) -> impl -> [(value, unreliable)] -> one geomean row each, in the
    suites' order ("all" last), then by precision, the `last` implementations after the others."""
    out = []
    for (suite, precision), impls in keyed.items():
        for impl, items in impls.items():
            out.append({"suite": suite, "precision": precision, "impl": impl,
                        field: metrics.geomean([v for v, _ in items]),
                        "cases": len(items), "unreliable": sum(n for _, n in items)})
    order = {name: i for i, name in enumerate(dict.fromkeys(r["suite"] for r in rows))}
    order["all"] = len(order)
    out.sort(key=lambda g: (order.get(g["suite"], 99), PRECISIONS.index(g["precision"]),
                            g["impl"] in last, g["impl"]))
    return out


# ------------------------------------------------------------------------ without PyTorch as well
def fastest_per_case(rows: list[dict]) -> list[dict]:
    """Per case and precision, the fastest verified implementation (PyTorch included when it ran;
    the auto rows excluded: they run one of the others), with the runner-up and its margin."""
    keyed: dict = {}
    for r in rows:
        if r["status"] != "ok" or not r.get("median_ms") or r["algorithm"] in AUTO_MODES:
            continue
        keyed.setdefault((r["suite"], r["case"], r["precision"]), []).append(r)
    out = []
    for (suite, case, precision), case_rows in keyed.items():
        case_rows.sort(key=lambda r: r["median_ms"])
        first = case_rows[0]
        second = case_rows[1] if len(case_rows) > 1 else None
        out.append({"suite": suite, "case": case, "precision": precision,
                    "fastest": first["impl"], "median_ms": first["median_ms"],
                    "runner_up": second["impl"] if second else None,
                    "margin": second["median_ms"] / first["median_ms"] if second else None,
                    "unreliable": bool(first.get("unreliable")
                                       or (second and second.get("unreliable")))})
    return out


def geomeans_vs_reference(rows: list[dict]) -> list[dict]:
    """Geometric mean of (NumPy reference time / ours) per suite and precision for each
    implementation, over the cases where reference:direct was timed (up to REFERENCE_MAX_FLOPS):
    the summary a run without PyTorch can give."""
    ref = {(r["suite"], r["case"], r["precision"]): r for r in rows
           if r["backend"] == "reference" and r["status"] == "ok" and r.get("median_ms")}
    keyed: dict = {}
    for r in rows:
        base = ref.get((r["suite"], r["case"], r["precision"]))
        if base is None or r is base or r["status"] != "ok" or not r.get("median_ms"):
            continue
        item = (base["median_ms"] / r["median_ms"],
                bool(r.get("unreliable") or base.get("unreliable")))
        for suite in (r["suite"], "all"):
            keyed.setdefault((suite, r["precision"]), {}).setdefault(r["impl"], []).append(item)
    return _geomean_table(keyed, rows, "geomean_speedup")


# ------------------------------------------------------------------------------ auto versus best
def auto_versus_best(rows: list[dict]) -> list[dict]:
    """Per backend and precision: how close algorithm="auto" comes to the best single algorithm
    of that backend, case by case (best time / auto time: 1 = it picked the best), with autotuning
    off ("auto") and on ("autotune"), and what the autotuner's first call cost (its first_ms: the
    tuning plus one call, against the best algorithm's median).

    Also per case: best time / the time of the picked algorithm's own row (`..._over_picked`):
    the quality of the pick alone. The auto row's own time is a separate measurement whose noise
    counts against it (the best of several noisy rows is biased low), the picked algorithm's row
    is timed exactly as the best one was (on the GPU a tile configuration of an algorithm is not a
    row of its own: the algorithm's row, with its default tile, stands in)."""
    keyed: dict = {}
    for r in rows:
        if r["backend"] in (TORCH, "reference") or r["status"] != "ok" or not r["median_ms"]:
            continue
        keyed.setdefault((r["backend"], r["precision"]), {}).setdefault(
            (r["suite"], r["case"]), []).append(r)
    out = []
    for (backend, precision), cases in keyed.items():
        shares = {mode: [] for mode in AUTO_MODES}
        picked_shares = {mode: [] for mode in AUTO_MODES}
        worst = {mode: None for mode in AUTO_MODES}
        tuning_ms, tuning_x = [], []
        for (suite, case), case_rows in cases.items():
            single = [r for r in case_rows if r["algorithm"] not in AUTO_MODES]
            if not single:
                continue
            best = min(single, key=lambda r: r["median_ms"])
            for r in case_rows:
                if r["algorithm"] not in AUTO_MODES:
                    continue
                share = best["median_ms"] / r["median_ms"]
                shares[r["algorithm"]].append(share)
                picked = (r.get("picked") or "").split("[")[0]
                own = next((s for s in single if s["algorithm"] == picked), None)
                if own is not None:
                    picked_shares[r["algorithm"]].append(best["median_ms"] / own["median_ms"])
                if worst[r["algorithm"]] is None or share < worst[r["algorithm"]][0]:
                    worst[r["algorithm"]] = (share, f"{suite}/{case}", r.get("picked"),
                                             best["algorithm"])
                if r["algorithm"] == "autotune" and r["first_ms"]:
                    tuning_ms.append(r["first_ms"])
                    tuning_x.append(r["first_ms"] / best["median_ms"])
        for mode in AUTO_MODES:
            if not shares[mode]:
                continue
            entry = {"backend": backend, "precision": precision, "mode": mode,
                     "cases": len(shares[mode]),
                     "geomean_best_over_auto": metrics.geomean(shares[mode]),
                     "within_10pct": sum(v >= 1 / 1.1 for v in shares[mode]),
                     "geomean_best_over_picked": (metrics.geomean(picked_shares[mode])
                                                  if picked_shares[mode] else None),
                     "picked_within_10pct": sum(v >= 1 / 1.1 for v in picked_shares[mode]),
                     "picked_cases": len(picked_shares[mode]),
                     "worst": None if worst[mode] is None else {
                         "share": worst[mode][0], "case": worst[mode][1],
                         "picked": worst[mode][2], "best": worst[mode][3]}}
            if mode == "autotune" and tuning_ms:
                entry["first_call_ms_median"] = float(np.median(tuning_ms))
                entry["first_call_ms_max"] = float(max(tuning_ms))
                entry["first_call_over_best_median"] = float(np.median(tuning_x))
            out.append(entry)
    return out
