"""The dispatcher: which backend and algorithm runs a call, and why.

Backends are modules, imported only when first asked for (a CPU-only user never imports CuPy).
Each backend module defines:

    ALGORITHMS: tuple[str, ...]   algorithm names it accepts besides "auto"
    ACCEPTS: tuple[str, ...]      array kinds (conv._arrays) it takes as input
    availability() -> (bool, str) whether it can run on this machine, and if not, why
    choose_algorithm(spec) -> (algorithm, reason)   its rule for algorithm="auto"
    check_supported(spec, algorithm) (optional)     raises what `run` would refuse for the spec,
        so that conv.explain raises exactly when the call would
    run(input, weight, bias, spec, algorithm) -> output
        input/weight/bias are the caller's arrays, already checked by conv._spec.make_spec
        (possibly non-contiguous, never to be modified); the output has shape spec.output_shape,
        dtype spec.dtype, and is the same kind of array as the input, on the same device.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from . import _arrays

_BACKEND_MODULES = {
    "reference": "conv._reference",
    "cpu": "conv._cpu",
    "cupy": "conv._cupy_backend",
    "numba": "conv._numba_backend",
}
BACKEND_NAMES = tuple(_BACKEND_MODULES)
# Order in which "auto" tries GPU backends for arrays that live on a CUDA device.
_GPU_PRIORITY = ("cupy", "numba")


@dataclass(frozen=True)
class Choice:
    """What a call would run: backend, algorithm, and a sentence saying why."""

    backend: str
    algorithm: str
    reason: str


def backend_module(name: str):
    if name not in _BACKEND_MODULES:
        raise ValueError(f"unknown backend {name!r}; expected 'auto' or one of {list(BACKEND_NAMES)}")
    return importlib.import_module(_BACKEND_MODULES[name])


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


def resolve(spec, input, backend: str = "auto", algorithm: str = "auto") -> Choice:
    """Pick the backend (from where `input` lives) and the algorithm (by the backend's rule)."""
    kind = _arrays.array_kind(input)
    if backend == "auto":
        if kind == _arrays.NUMPY:
            name, why = "cpu", "NumPy input runs on the fast CPU path"
        elif kind in _arrays.GPU_KINDS:
            reasons = []
            for name in _GPU_PRIORITY:
                ok, why_not = backend_availability(name)
                if ok and kind in backend_module(name).ACCEPTS:
                    why = f"input lives on a CUDA device ({kind}); {name} is the first usable GPU backend"
                    break
                reasons.append(f"{name}: {why_not}")
            else:
                raise RuntimeError(f"input lives on a CUDA device ({kind}) but no GPU backend is "
                                   f"usable: " + "; ".join(reasons))
        else:
            raise TypeError(f"cannot tell where an input of type {type(input).__name__} lives")
    else:
        name = backend
        ok, why_not = backend_availability(name)     # unknown names raise ValueError here
        if not ok:
            raise RuntimeError(f"backend {name!r} is not usable here: {why_not}")
        module = backend_module(name)
        if kind not in module.ACCEPTS:
            raise ValueError(f"backend {name!r} does not take {kind} arrays "
                             f"(it takes {', '.join(module.ACCEPTS)})")
        why = f"backend {name!r} was asked for"
    module = backend_module(name)
    if algorithm == "auto":
        algo, algo_why = module.choose_algorithm(spec)
    else:
        if algorithm not in module.ALGORITHMS:
            raise ValueError(f"backend {name!r} has no algorithm {algorithm!r}; expected 'auto' or "
                             f"one of {list(module.ALGORITHMS)}")
        algo, algo_why = algorithm, "algorithm was asked for"
    check = getattr(module, "check_supported", None)
    if check is not None:               # what the algorithm cannot compute is refused here
        check(spec, algo)
    return Choice(name, algo, f"{why}; {algo_why}")


def set_workspace_limit(nbytes: int, backend: str = "cpu") -> None:
    """Cap (bytes) on a backend's workspace ("cpu", "cupy" or "numba"). On "cpu" every algorithm
    stays within it: larger calls run as chunks of themselves (conv/_cpu.py). On the GPU backends
    it caps the im2col column buffer (see their modules for how each chunks)."""
    module = backend_module(backend)
    if not hasattr(module, "set_workspace_limit"):
        raise ValueError(f"backend {backend!r} has no workspace")
    module.set_workspace_limit(nbytes)
