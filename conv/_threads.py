"""Which parallel runtime the CPU kernels run on, chosen so that every process model works.

numba runs `prange` loops on one of three threading layers, fixed for the whole process at the
first parallel launch:

    layer       threads calling at once     fork after use          oversubscribed machine
    tbb         safe                        safe                    degrades gently
    omp (GNU)   safe                        child aborts ("fork()   spinning workers starve
                                            called from a process   each other (60x measured
                                            already using GNU       on a small conv)
                                            OpenMP")
    workqueue   process dies ("Concurrent   safe                    degrades gently
                access has been detected")

numba's own default order is tbb, omp, workqueue. We prefer tbb (a dependency where its wheels
exist) and, where tbb cannot load, workqueue rather than GNU OpenMP, and serialise our parallel
launches when the layer turns out to be workqueue, so that fork/spawn/forkserver pools, many
threads at once and a busy machine all work. A user's explicit choice (NUMBA_THREADING_LAYER or
NUMBA_THREADING_LAYER_PRIORITY, or numba.config set before the first launch) is respected;
with 'omp' chosen explicitly, fork-based pools after a conv call abort, as numba documents.
"""
from __future__ import annotations

import functools
import os
import threading

import numba

_PREFERRED = ["tbb", "workqueue", "omp"]


def _configure() -> None:
    """Set numba's layer priority unless the user chose; must run before any parallel launch."""
    config = numba.config
    if os.environ.get("NUMBA_THREADING_LAYER") or os.environ.get("NUMBA_THREADING_LAYER_PRIORITY"):
        return
    if config.THREADING_LAYER != "default":
        return
    if list(config.THREADING_LAYER_PRIORITY) == ["tbb", "omp", "workqueue"]:   # numba's default
        config.THREADING_LAYER_PRIORITY = list(_PREFERRED)


_configure()

# workqueue is not thread-safe: one parallel region at a time in this process.
_workqueue_lock = threading.Lock()


def num_threads() -> int:
    """numba's thread count (asking starts its threads, so only after _configure)."""
    return numba.get_num_threads()


def layer() -> str | None:
    """The threading layer numba launched with, or None before the first parallel launch."""
    try:
        return numba.threading_layer()
    except ValueError:          # no parallel region has run yet
        return None


def serialised_if_needed(kernel):
    """Wrap a parallel njit kernel called from Python: under the workqueue layer (not
    thread-safe) calls take a process-wide lock; under tbb and omp they run concurrently."""

    @functools.wraps(kernel)
    def call(*args):
        current = layer()
        if current is None or current == "workqueue":
            # The first launch decides the layer: hold the lock through it, so two threads
            # racing into the first call cannot enter workqueue together.
            with _workqueue_lock:
                return kernel(*args)
        return kernel(*args)

    call.kernel = kernel            # the numba dispatcher, for tests and introspection
    return call
