"""Compile the CUDA C kernels with NVRTC, without a GPU, and read ptxas's resource report.

CI has no GPU, but NVRTC (PyPI ``nvidia-cuda-nvrtc`` through ``cuda-bindings``) compiles to a cubin
for any architecture. `compile_source` compiles one source text with the options CuPy's RawModule
would use (conv.backend.cupy.sources.module_options gives the same tuple) plus ``-Xptxas=-v``, and
`parse_ptxas_log` turns ptxas's report into registers / spill stores / spill loads / stack per
entry function.

``cuda.bindings`` is imported only when a compile is asked for; `nvrtc_availability` says whether
it can be.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

# Options CuPy's compiler adds on its own (cupy/cuda/compiler.py): compiling with them here keeps
# what CI checks identical to what runs.
CUPY_IMPLICIT_OPTIONS = ("-ftz=true",)


@dataclass(frozen=True)
class FunctionStats:
    """ptxas's report for one entry function."""

    name: str
    registers: int
    spill_stores: int          # bytes
    spill_loads: int           # bytes
    stack: int                 # bytes of stack frame
    shared: int                # bytes of static shared memory


@dataclass
class CompileResult:
    ok: bool
    arch: str
    log: str
    cubin_size: int
    functions: dict[str, FunctionStats] = field(default_factory=dict)


def _import_nvrtc():
    from cuda.bindings import nvrtc  # ImportError propagates with its own reason
    return nvrtc


def nvrtc_availability() -> tuple[bool, str]:
    try:
        nvrtc = _import_nvrtc()
        err, major, minor = nvrtc.nvrtcVersion()
        if int(err) != 0:
            return False, f"nvrtcVersion failed: {err}"
    except Exception as exc:   # missing package, or the NVRTC library cannot be loaded
        return False, f"NVRTC is not usable ({type(exc).__name__}: {exc})"
    return True, f"NVRTC {major}.{minor}"



def compile_source(source: str, arch: str = "sm_90", options=(), name: str = "kernel.cu",
                   verbose_ptxas: bool = True) -> CompileResult:
    """Compile `source` to a cubin for `arch` ("sm_80", "sm_90", ...) with `options`.

    Returns the log (compiler diagnostics and, with `verbose_ptxas`, ptxas's per-function report),
    the cubin's size (0 on failure) and the parsed per-function statistics.
    """
    nvrtc = _import_nvrtc()
    opts = [f"--gpu-architecture={arch}", *options]
    if verbose_ptxas:
        opts.append("-Xptxas=-v")
    err, prog = nvrtc.nvrtcCreateProgram(source.encode(), name.encode(), 0, [], [])
    if int(err) != 0:
        raise RuntimeError(f"nvrtcCreateProgram failed: {err}")
    try:
        (status,) = nvrtc.nvrtcCompileProgram(prog, len(opts), [o.encode() for o in opts])
        err, size = nvrtc.nvrtcGetProgramLogSize(prog)
        log_buf = b" " * size
        nvrtc.nvrtcGetProgramLog(prog, log_buf)
        log = log_buf.rstrip(b"\0 ").decode(errors="replace")
        ok = int(status) == 0
        cubin_size = 0
        if ok:
            err, cubin_size = nvrtc.nvrtcGetCUBINSize(prog)
            if int(err) != 0:
                cubin_size = 0
        return CompileResult(ok=ok, arch=arch, log=log, cubin_size=int(cubin_size),
                             functions=parse_ptxas_log(log) if ok else {})
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


_FUNC = re.compile(r"Function properties for (\S+)")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")
_ENTRY = re.compile(r"Compiling entry function '([^']+)'")


def parse_ptxas_log(log: str) -> dict[str, FunctionStats]:
    """Per entry function: registers, spill stores/loads and stack (bytes), static shared memory.

    ptxas -v prints, per function, "Compiling entry function 'f'", "Function properties for f",
    "N bytes stack frame, N bytes spill stores, N bytes spill loads" and "Used N registers, ...".
    Device functions that were not inlined get a properties block too; only entries are returned.
    """
    entries = set(_ENTRY.findall(log))
    stats: dict[str, FunctionStats] = {}
    current, frame = None, (0, 0, 0)
    for line in log.splitlines():
        m = _FUNC.search(line)
        if m:
            current, frame = m.group(1), (0, 0, 0)
            continue
        m = _FRAME.search(line)
        if m and current is not None:
            frame = tuple(int(v) for v in m.groups())
            continue
        m = _USED.search(line)
        if m and current is not None:
            smem = _SMEM.search(line)
            if current in entries:
                stats[current] = FunctionStats(current, int(m.group(1)), frame[1], frame[2],
                                               frame[0], int(smem.group(1)) if smem else 0)
            current = None
    return stats


def format_table(rows) -> str:
    """A fixed-width table of (source, arch, FunctionStats) rows."""
    head = f"{'source':<18} {'arch':<6} {'entry':<32} {'regs':>4} {'spill st':>8} {'spill ld':>8} " \
           f"{'stack':>5} {'smem':>6}"
    lines = [head, "-" * len(head)]
    for source, arch, st in rows:
        lines.append(f"{source:<18} {arch:<6} {st.name:<32} {st.registers:>4} {st.spill_stores:>8} "
                     f"{st.spill_loads:>8} {st.stack:>5} {st.shared:>6}")
    return "\n".join(lines)
