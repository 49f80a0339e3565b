"""Arrays that end (or start) exactly at an inaccessible page, and a child-process runner.

A read one element past such an array (or before it) is a SIGSEGV, not a silently discarded
value, so a kernel that over-reads fails loudly. A crash would kill the test process, so the
cases run in a child (`python -m tests._guard_pages CASEFILE`): it prints each case before running
it, and the parent reports the case that was running when the child died.
"""
from __future__ import annotations

import ctypes
import json
import mmap
import os
import subprocess
import sys

import numpy as np

PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_PROT_NONE = 0
_KEEP = []          # the mappings behind live guarded arrays (never unmapped: tests are short)


def guarded(values: np.ndarray, side: str = "end") -> np.ndarray:
    """A C-contiguous copy of `values` whose last byte is followed by (side='end') or whose first
    byte is preceded by (side='start') a PROT_NONE page."""
    nbytes = values.nbytes
    data_pages = -(-max(nbytes, 1) // PAGE)
    mapping = mmap.mmap(-1, (data_pages + 2) * PAGE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(mapping))
    for page in (0, data_pages + 1):       # a guard page on both sides of the data pages
        if _libc.mprotect(base + page * PAGE, PAGE, _PROT_NONE) != 0:
            raise OSError(ctypes.get_errno(), "mprotect failed")
    _KEEP.append(mapping)
    raw = np.frombuffer(mapping, np.uint8)
    start = PAGE if side == "start" else PAGE + data_pages * PAGE - nbytes
    out = raw[start:start + nbytes].view(values.dtype).reshape(values.shape)
    out[...] = values
    return out


def run_cases_in_child(cases: list[dict], tmp_path) -> None:
    """Run every case (a dict of conv arguments, see _run_case) in one child process; raise
    AssertionError naming the case that crashed or failed."""
    case_file = tmp_path / "guard_cases.json"
    case_file.write_text(json.dumps(cases))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-m", "tests._guard_pages", str(case_file)], cwd=root,
                          capture_output=True, text=True, timeout=900)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or lines[-1] != f"done {len(cases)}":
        last = lines[-1] if lines else "(nothing printed)"
        raise AssertionError(f"guard-page child exited with {proc.returncode}; last line: {last}\n"
                             f"stderr tail: {proc.stderr[-2000:]}")


def _run_case(case: dict) -> None:
    import conv
    from tests._helpers import assert_matches_reference, make_operands
    x, w, b = make_operands(case["seed"], case["x"], case["w"], case["dtype"], bias=case["bias"])
    side = case["side"]
    xg, wg = guarded(x, side), guarded(w, side)
    bg = None if b is None else guarded(b, side)
    assert_matches_reference(case["op"], xg, wg, bg, backend=case["backend"],
                             algorithm=case["algorithm"], x_host=x, w_host=w, b_host=b,
                             **case["kwargs"])
    del conv


def main(case_file: str) -> None:
    import conv.backend.cpu as _cpu
    # Poisoned outputs, as in the in-process tests: an element a kernel fails to write is NaN.
    _cpu._new_output = lambda shape, dtype: np.full(shape, np.nan if np.dtype(dtype).kind in "fc"
                                                    else 0, dtype)
    cases = json.loads(open(case_file).read())
    for i, case in enumerate(cases):
        print(f"case {i}: {json.dumps(case)}", flush=True)
        _run_case(case)
    print(f"done {len(cases)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
