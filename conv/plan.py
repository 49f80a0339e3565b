"""Planning: what a call runs, decided once. `make_plan` is the one function that turns a checked
call (a ConvSpec and the caller's arrays) into a Plan; `conv.explain` returns that Plan and
`conv.conv1d/conv2d` execute exactly it (`execute`). Every check that can refuse a call happens
while planning (argument checks in conv._spec.make_spec, devices, backend availability and the
array kinds it takes, the algorithm's name and dtypes, from conv.registry), so explain raises
exactly when the call would.

A backend module (conv/backend/*, listed in conv.registry.BACKENDS) defines:
    availability() -> (bool, str)      whether it can run here, and if not, why
    plan_workspace(spec, algorithm, input, config) -> (bytes, Chunks | None, note)
        the workspace the call allocates beyond its output and its chunking under the cap
        (conv/_workspace.py), None when it runs whole; note: "" or a sentence for the reason;
        config: the tile configuration ("": the default), which can change it (cupy
        implicit_gemm's split-K ones have a workspace)
    runs_version(spec, algorithm) -> int | None (optional)   the version that will run when it is
        not the registry row's (numba's direct falls back to version 0 for large patches)
    configs(spec, algorithm) -> tuple[str, ...] (optional)   the tile configurations the
        algorithm can run spec with, by name (empty or absent: one, chosen by the backend); a
        Plan whose `config` is "" runs the backend's own choice
    precision(spec, algorithm, allow_tf32) -> str (optional)   the arithmetic the algorithm will
        run where it has a choice ("tf32", "3xtf32", "f16"); "" or absent: the dtype's own
    run(plan, input, weight, bias) -> output   (the caller's arrays: possibly non-contiguous,
        never modified; the output has shape spec.output_shape, dtype spec.dtype, and is the same
        kind of array as the input, on its device)
    set_workspace_limit(nbytes), workspace_limit()   where it has a workspace
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _arrays, registry
from . import autotune as _autotune
from ._spec import ConvSpec
from ._workspace import Chunks

BACKEND_NAMES = tuple(registry.BACKENDS)


@dataclass(frozen=True)
class Plan:
    """What a call runs, and why: returned by conv.explain, executed by the call."""

    spec: ConvSpec
    kind: str                   # the input's array kind (conv._arrays)
    device: str                 # "cpu", "cuda:<index>", or "cuda" (the current device)
    backend: str
    algorithm: str
    version: int                # the algorithm's version (conv.registry)
    reason: str
    workspace_bytes: int        # what it allocates beyond the output (per chunk when chunked)
    chunks: Chunks | None       # None: the whole call at once
    config: str = ""            # the tile configuration by name ("": the backend's own choice)
    # The arithmetic that runs where the algorithm has a choice (the backend's `precision` hook):
    # "tf32" (allow_tf32), "3xtf32", "f16"; "": the dtype's own.
    precision: str = ""

    def __str__(self) -> str:
        chunked = "whole" if self.chunks is None else \
            f"{self.chunks.count(self.spec)} chunks of {tuple(self.chunks)}"
        config = f" [{self.config}]" if self.config else ""
        precision = f" in {self.precision}" if self.precision else ""
        return (f"{self.spec.op} on {self.device}: {self.backend}:{self.algorithm}{config} "
                f"v{self.version}{precision} ({chunked}, workspace {self.workspace_bytes} "
                f"bytes): {self.reason}")


_allow_tf32 = False


def set_allow_tf32(allow: bool) -> None:
    """The default of the calls' ``allow_tf32`` keyword, like PyTorch's
    ``torch.backends.cudnn.allow_tf32``
    (https://pytorch.org/docs/stable/notes/cuda.html#tf32-on-ampere) but initially False: float32 stays float32-accurate unless TF32 is asked for. With it, GPU
    algorithms that have a TF32 mode (cupy's implicit_gemm) round float32 operands to TF32 (11
    significant bits); everything else, the CPU included, is unchanged."""
    global _allow_tf32
    _allow_tf32 = _check_allow_tf32(allow)


def allow_tf32() -> bool:
    """The current default of ``allow_tf32`` (`set_allow_tf32`)."""
    return _allow_tf32


def _check_allow_tf32(value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"allow_tf32 must be True or False (or None for the default, "
                        f"conv.set_allow_tf32), not {type(value).__name__}")
    return bool(value)


def backend_module(name: str):
    if name not in registry.BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected 'auto' or one of {list(BACKEND_NAMES)}")
    return registry.BACKENDS[name].load()


def backend_availability(name: str) -> tuple[bool, str]:
    try:
        module = backend_module(name)
    except ImportError as exc:      # an optional dependency is missing
        return False, f"cannot import its module: {exc}"
    return module.availability()


def backends() -> dict[str, tuple[bool, str]]:
    """Every backend name -> (usable on this machine, why / why not)."""
    return {name: backend_availability(name) for name in BACKEND_NAMES}


def check_same_device(*arrays) -> str:
    """PyTorch's rule: every tensor of one call on one device. Returns that device's name."""
    names = []
    for a in arrays:
        if a is not None:
            name = _arrays.device_name(a)
            if name not in names:
                names.append(name)
    if any(n.startswith("cuda:") for n in names):
        # "cuda" alone: an array that carries only a pointer (numba device arrays and other
        # __cuda_array_interface__ producers), which lives on the current device: no conflict.
        names = [n for n in names if n != "cuda"]
    if len(names) > 1:
        gpu = [n for n in names if n != "cpu"]
        first, second = (gpu[0], "cpu") if "cpu" in names else (names[0], names[1])
        raise ValueError(f"Expected all tensors to be on the same device, but found at least two "
                         f"devices, {first} and {second}!")
    return names[0]


def _choose_backend(kind: str, backend: str, input) -> tuple[str, str]:
    if backend == "auto":
        if kind == _arrays.NUMPY:
            return "cpu", "NumPy input runs on the fast CPU path"
        if kind in _arrays.GPU_KINDS:
            reasons = []
            for name in registry.GPU_PRIORITY:
                ok, why_not = backend_availability(name)
                if ok and kind in registry.BACKENDS[name].kinds:
                    return name, (f"input lives on a CUDA device ({kind}); {name} is the first "
                                  f"usable GPU backend")
                reasons.append(f"{name}: {why_not}")
            raise RuntimeError(f"input lives on a CUDA device ({kind}) but no GPU backend is "
                               f"usable: " + "; ".join(reasons))
        raise TypeError(f"cannot tell where an input of type {type(input).__name__} lives")
    ok, why_not = backend_availability(backend)     # unknown names raise ValueError here
    if not ok:
        raise RuntimeError(f"backend {backend!r} is not usable here: {why_not}")
    kinds = registry.BACKENDS[backend].kinds
    if kind not in kinds:
        raise ValueError(f"backend {backend!r} does not take {kind} arrays "
                         f"(it takes {', '.join(kinds)})")
    return backend, f"backend {backend!r} was asked for"


def configs(backend: str, spec: ConvSpec, algorithm: str) -> tuple[str, ...]:
    """The tile configurations `backend`'s `algorithm` can run spec with (empty: one)."""
    hook = getattr(backend_module(backend), "configs", None)
    return tuple(hook(spec, algorithm)) if hook is not None else ()


def make_plan(spec: ConvSpec, input, weight, bias, backend: str = "auto",
              algorithm: str = "auto", *, emulated: bool = False, config: str = "",
              allow_tf32: bool | None = None) -> Plan:
    """The Plan of a call whose arguments make_spec has checked into spec. emulated: the plan of
    the named GPU backend for NumPy arrays, without asking for a GPU (conv.emulator runs it).
    config: a tile configuration of the algorithm (`configs`), "" for the backend's choice; with
    algorithm="auto" and autotuning on (conv/autotune.py) the autotuner picks both.
    allow_tf32: whether float32 may run in TF32 where the algorithm can (None: the default,
    `set_allow_tf32`); the backend's `precision` hook says what then runs (Plan.precision)."""
    allow = _allow_tf32 if allow_tf32 is None else _check_allow_tf32(allow_tf32)
    device = check_same_device(input, weight, bias)
    kind = _arrays.array_kind(input)
    if emulated:
        if backend not in registry.BACKENDS or kind != _arrays.NUMPY:
            raise ValueError("an emulated plan needs a backend name and NumPy arrays")
        name, why, device = backend, "the CUDA C kernels on the CPU emulator", "emulator"
    else:
        name, why = _choose_backend(kind, backend, input)
    tuned = None
    if algorithm == "auto" and not emulated and _autotune.enabled():
        tuned = _autotune.choice(spec, name, kind, device, input, weight, bias, allow)
    if tuned is not None:
        row, algo_why = registry.algorithm(name, tuned.algorithm), tuned.reason
        config = tuned.config
    elif algorithm == "auto":
        row, algo_why = registry.auto_algorithm(name, spec)
    else:
        row, algo_why = registry.algorithm(name, algorithm), "algorithm was asked for"
    refusal = row.refusal(spec)
    if refusal is not None:
        raise refusal
    module = backend_module(name)
    if config and config not in configs(name, spec, row.name):
        raise ValueError(f"{name} algorithm {row.name!r} has no tile configuration {config!r} "
                         f"for this call; expected one of {list(configs(name, spec, row.name))}")
    nbytes, chunks, note = module.plan_workspace(spec, row.name, input, config)
    reason = f"{why}; {algo_why}" + (f"; {note}" if note else "")
    version = getattr(module, "runs_version", lambda s, a: None)(spec, row.name)
    precision = getattr(module, "precision", lambda s, a, t: "")(spec, row.name, allow)
    return Plan(spec, kind, device, name, row.name, row.version if version is None else version,
                reason, nbytes, chunks, config, precision)


def execute(plan: Plan, input, weight, bias):
    """Run `plan` on the arrays it was made for."""
    return backend_module(plan.backend).run(plan, input, weight, bias)


def set_workspace_limit(nbytes: int | None, backend: str = "cpu") -> None:
    """Cap (bytes) on a backend's workspace ("cpu", "cupy" or "numba"); None restores the
    backend's default. Calls whose workspace exceeds it run as chunks of themselves, the same
    algorithm on each (conv/_workspace.py says how)."""
    module = backend_module(backend)
    if not hasattr(module, "set_workspace_limit"):
        raise ValueError(f"backend {backend!r} has no workspace")
    module.set_workspace_limit(nbytes)
