"""Where numba caches the CPU kernels it compiles (they are declared cache=True).

numba writes next to the source (__pycache__) or, where that is not writable, in the user's cache
directory; where neither is (a read-only install in a container with a read-only home), its
first compile raises "cannot cache function ...: no locator available". Before the kernel
modules are imported (conv/backend/cpu/__init__.py calls `ensure_writable_cache`), check the two
places as numba would and, if neither takes a file, point numba at a fresh temporary directory,
with one warning: the kernels then compile once per process instead of once per machine.
NUMBA_CACHE_DIR, when set, is the user's choice and left alone.
"""
from __future__ import annotations

import os
import pathlib
import tempfile
import warnings

_checked = False


def _takes_a_file(folder: pathlib.Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
        return True
    except OSError:
        return False


def _numba_places() -> list[pathlib.Path]:
    """The in-tree cache of the kernel modules, then numba's user-wide cache directory."""
    from numba.misc.appdirs import user_cache_dir
    return [pathlib.Path(__file__).resolve().parent / "backend" / "cpu" / "__pycache__",
            pathlib.Path(user_cache_dir(appname="numba", appauthor=False))]


def ensure_writable_cache() -> str | None:
    """The temporary cache directory set, or None when numba can cache where it would."""
    global _checked
    if _checked or os.environ.get("NUMBA_CACHE_DIR"):
        return None
    _checked = True
    if any(_takes_a_file(place) for place in _numba_places()):
        return None
    import numba
    folder = tempfile.mkdtemp(prefix="conv-numba-cache-")
    numba.config.CACHE_DIR = folder
    warnings.warn(f"conv: neither the package's folder nor the user cache directory is writable; "
                  f"numba caches the CPU kernels in {folder} for this process (set "
                  f"NUMBA_CACHE_DIR to a writable folder to keep them)", RuntimeWarning,
                  stacklevel=2)
    return folder
