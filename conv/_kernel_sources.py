"""Where the GPU kernel sources live: the installed `conv_kernels` package (pyproject maps the
repository's kernels/ folder to it), or kernels/ beside conv/ in a source checkout."""
from __future__ import annotations

import functools
import importlib
import importlib.util
import pathlib


@functools.lru_cache(maxsize=None)
def kernels_dir() -> pathlib.Path:
    checkout = pathlib.Path(__file__).resolve().parent.parent / "kernels"
    if checkout.is_dir():
        return checkout
    spec = importlib.util.find_spec("conv_kernels")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("GPU kernel sources not found: neither kernels/ beside conv/ nor an "
                                "installed conv_kernels package")
    return pathlib.Path(list(spec.submodule_search_locations)[0])


def read_source(name: str) -> str:
    """Text of kernels/<name> (a CUDA C source)."""
    return (kernels_dir() / name).read_text()


def import_kernel_module(name: str):
    """Import kernels/<name>.py (a numba.cuda kernel module) as conv_kernels.<name>."""
    try:
        return importlib.import_module(f"conv_kernels.{name}")
    except ImportError:
        pass
    import sys
    full = f"conv_kernels.{name}"
    if full in sys.modules:
        return sys.modules[full]
    path = kernels_dir() / f"{name}.py"
    spec = importlib.util.spec_from_file_location(full, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    spec.loader.exec_module(module)
    return module
