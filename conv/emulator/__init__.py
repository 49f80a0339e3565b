"""A CPU emulator of the CUDA subset our CUDA C kernels use: the real sources (the very text CuPy
compiles, conv/backend/cupy/sources.py:kernel_source), built with g++ against cuda_emulator.h,
executing the very launches the CuPy backend computes (conv/backend/cupy/__init__.py:launches).

    from conv import emulator
    plan = emulator.plan("conv2d", x, w, b, algorithm="im2col", padding=1)   # a CuPy-backend Plan
    y = emulator.run(plan, x, w, b, schedule="shuffled")                     # NumPy in and out

What it checks that compiling does not: every thread of every block runs (as a fiber, see the
header for the scheduler), with block-shared memory poisoned at each block's start, thread orders
that change between runs (schedule "forward", "reverse", "shuffled" with a seed), the launch
limits cuLaunchKernel enforces, and, with asan=True (in a process that preloads AddressSanitizer:
`asan_environment()`), every out-of-bounds access to global or shared memory. It does not model
timing, warps' lockstep execution beyond the warp rendezvous (__syncwarp, __shfl_sync, mma.sync,
ldmatrix), when an in-flight cp.async lands (always at the wait), memory coherence between blocks
or float32 flush-to-zero (CuPy compiles with -ftz=true: results on subnormal inputs may differ).

Loading a source: two mechanical rewrites, nothing else. Each `__shared__ T name[...];` becomes
CONV_EMU_SHARED(T, name, [...]) (block-shared storage from the emulator; with `__align__(N)`
before or after `__shared__`, CONV_EMU_SHARED_ALIGNED(T, name, [...], N)), and each inline PTX
statement `asm("insn %0, %1;" : "=f"(d) : "h"(a))` becomes a call of the emulated instruction,
conv_emu_ptx_insn(d, a) (an instruction without an emulation is refused by name). One instruction
per statement; its text may be several adjacent string literals; its operands, in PTX order, are
`%N` references (plain, inside a vector `{%0, %1}` or a memory operand `[%2]`, each mapped to the
C++ expression of operand N) and integer immediates (passed as they are), so
`asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;" :: "r"(d), "l"(s), "r"(n))` becomes
conv_emu_ptx_cp_async_ca(d, s, 16, n). Modules are cached on disk (CONV_EMULATOR_CACHE, default
~/.cache/conv/emulator) by a hash of everything that goes into them.

`source_module(text)` builds any kernel text (its `#include "x.cuh"` of kernels/cuda pasted as
the backend pastes them) and returns a Module to launch its entry points: the tests of the
emulated instructions use it (tests/test_emulated_ptx.py).
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import importlib.resources
import os
import pathlib
import re
import shutil
import subprocess
import tempfile

import numpy as np

SCHEDULES = {"forward": 0, "reverse": 1, "shuffled": 2}
_HEADER = "cuda_emulator.h"
# -fno-gnu-unique: g++ otherwise makes the function-local statics of inline templates (the
# bookkeeping of each __shared__ site) STB_GNU_UNIQUE symbols, which the dynamic linker binds
# process-wide even under RTLD_LOCAL: a second module with the same template instantiation (a
# mutant of a kernel, another tile's module) would share the first one's and lose its shared
# memory ("dst is not inside a __shared__ array").
_CXXFLAGS = ("-std=c++17", "-O1", "-fPIC", "-shared", "-fno-strict-aliasing", "-fno-gnu-unique",
             "-w")
_ASAN_FLAGS = ("-fsanitize=address", "-fno-omit-frame-pointer", "-DCONV_EMU_ASAN", "-g")

# PTX instructions with an emulation in cuda_emulator.h: mnemonic -> function.
# (kernels/cuda/tensor_core.cuh wraps the tensor-core and async-copy ones; cuda_emulator.h says
# how each is emulated, with the PTX ISA section it follows.)
PTX_INSTRUCTIONS = {
    "cvt.f32.f16": "conv_emu_ptx_cvt_f32_f16",
    "cvt.rn.f16.f32": "conv_emu_ptx_cvt_rn_f16_f32",
    "cvt.rna.tf32.f32": "conv_emu_ptx_cvt_rna_tf32_f32",
    "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32": "conv_emu_ptx_mma_m16n8k8_tf32",
    "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32": "conv_emu_ptx_mma_m16n8k16_f16",
    "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32": "conv_emu_ptx_mma_m16n8k16_bf16",
    "ldmatrix.sync.aligned.m8n8.x1.shared.b16": "conv_emu_ptx_ldmatrix_x1",
    "ldmatrix.sync.aligned.m8n8.x2.shared.b16": "conv_emu_ptx_ldmatrix_x2",
    "ldmatrix.sync.aligned.m8n8.x4.shared.b16": "conv_emu_ptx_ldmatrix_x4",
    "ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16": "conv_emu_ptx_ldmatrix_x1_trans",
    "ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16": "conv_emu_ptx_ldmatrix_x2_trans",
    "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16": "conv_emu_ptx_ldmatrix_x4_trans",
    "cp.async.ca.shared.global": "conv_emu_ptx_cp_async_ca",     # [dst], [src], cp-size{, src-size}
    "cp.async.cg.shared.global": "conv_emu_ptx_cp_async_cg",
    "cp.async.commit_group": "conv_emu_ptx_cp_async_commit_group",
    "cp.async.wait_group": "conv_emu_ptx_cp_async_wait_group",
    "cp.async.wait_all": "conv_emu_ptx_cp_async_wait_all",
}

_ALIGN = r"(?:__align__\s*\(\s*(\d+)\s*\)\s+)?"
_SHARED = re.compile(_ALIGN + r"__shared__\s+" + _ALIGN +
                     r"([A-Za-z_][\w:<>, ]*?)\s+([A-Za-z_]\w*)\s*((?:\[[^\]\n]+\])+)\s*;")
_STRING = r'"(?:[^"\\\n]|\\.)*"'
_ASM = re.compile(r'\basm\s*(?:volatile\s*|__volatile__\s*)?\(\s*((?:' + _STRING +
                  r'\s*)+)((?::[^;]*?)?)\)\s*;')
_OPERAND = re.compile(r'"[=+&]*\w+"\s*\(([^()]*(?:\([^()]*\)[^()]*)*)\)')
_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)
_IMMEDIATE = re.compile(r"-?(?:0[xX][0-9a-fA-F]+|\d+)[uU]?")
_PARAMS = re.compile(r"#define CONV_\w+_PARAMS\(T\)((?:[^\n]*\\\n)*[^\n]*)")


_replaced: dict[str, str] = {}          # source name -> text to build instead (replaced_source)


@contextlib.contextmanager
def replaced_source(source: str, text: str):
    """Build and launch `text` wherever kernels/cuda/<source> would be (mutation tests: a kernel
    with a barrier or a bounds check removed must fail)."""
    _replaced[source] = text
    try:
        yield
    finally:
        del _replaced[source]


class EmulatorError(RuntimeError):
    """A launch the emulator refused or a kernel fault it found (the message says which)."""


def header_path() -> pathlib.Path:
    return pathlib.Path(str(importlib.resources.files("conv.emulator"))) / _HEADER


def compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++")


def availability() -> tuple[bool, str]:
    cxx = compiler()
    if cxx is None:
        return False, "no C++ compiler: the emulator needs g++ (or $CXX)"
    return True, f"{cxx}"


def _asm_text(literals: str) -> str:
    """The instruction text of an asm statement's adjacent string literals, escapes resolved."""
    body = "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', literals))
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


def _translate_asm(match: re.Match) -> str:
    text, operands = _asm_text(match.group(1)).strip(), match.group(2)
    statements = [t.strip() for t in text.split(";") if t.strip()]
    if len(statements) != 1:
        raise EmulatorError(f"inline PTX {text!r}: the emulator rewrites one instruction per asm "
                            f"statement")
    insn, rest = (statements[0].split(None, 1) + [""])[:2]
    if insn not in PTX_INSTRUCTIONS:
        raise EmulatorError(f"inline PTX instruction {insn!r} has no emulation "
                            f"(conv/emulator/cuda_emulator.h)")
    exprs = [e.strip() for e in _OPERAND.findall(operands)]
    args, used = [], set()
    # Vector braces and memory brackets only group operands: flatten them, in PTX order.
    for token in re.sub(r"[{}\[\]]", " ", rest).split(","):
        token = token.strip()
        ref = re.fullmatch(r"%(\d+)", token)
        if ref and int(ref.group(1)) < len(exprs):
            args.append(exprs[int(ref.group(1))])
            used.add(int(ref.group(1)))
        elif _IMMEDIATE.fullmatch(token):
            args.append(token)
        elif token or rest.strip():
            raise EmulatorError(f"cannot map the operand {token!r} of {text!r} (the emulator "
                                f"takes %N operands, {{vectors}}, [addresses] without offsets "
                                f"and integer immediates)")
    if used != set(range(len(exprs))):
        raise EmulatorError(f"cannot map the operands of {text!r}: operand(s) "
                            f"{sorted(set(range(len(exprs))) - used)} unused")
    return f"{PTX_INSTRUCTIONS[insn]}({', '.join(args)});"


def _translate_shared(m: re.Match) -> str:
    align = m.group(1) or m.group(2)
    if align:
        return f"CONV_EMU_SHARED_ALIGNED({m.group(3)}, {m.group(4)}, {m.group(5)}, {align});"
    return f"CONV_EMU_SHARED({m.group(3)}, {m.group(4)}, {m.group(5)});"


def translate(text: str) -> str:
    """The source with its __shared__ declarations and inline PTX rewritten (module docstring)."""
    text = _SHARED.sub(_translate_shared, text)
    if "__shared__" in _COMMENTS.sub("", text):     # one left that is code, not a comment
        raise EmulatorError("a __shared__ declaration the emulator cannot rewrite (only "
                            "'__shared__ [__align__(N)] T name[dims];' is supported)")
    return _ASM.sub(_translate_asm, text)


def parameters(source: str) -> tuple[str, ...]:
    """The parameter list of kernels/cuda/<source>'s entry points (its CONV_*_PARAMS macro); each
    must be a pointer or a 64-bit integer, which the emulator passes as 64-bit words."""
    from conv.backend.cupy.sources import read_source
    return _parameters(source, _replaced.get(source) or read_source(source))


@functools.lru_cache(maxsize=64)
def _parameters(source: str, text: str) -> tuple[str, ...]:
    bodies = _PARAMS.findall(text)
    if len(bodies) != 1:
        raise EmulatorError(f"{source}: expected one CONV_*_PARAMS(T) parameter list")
    params = tuple(" ".join(p.replace("\\", " ").split()) for p in bodies[0].split(","))
    for p in params:
        if "*" not in p and not p.startswith("long long "):
            raise EmulatorError(f"{source}: parameter {p!r} is neither a pointer nor a 64-bit "
                                f"integer")
    return params


def _cache_dir() -> pathlib.Path:
    root = os.environ.get("CONV_EMULATOR_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "conv", "emulator")
    path = pathlib.Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cxx_options(options: tuple[str, ...]) -> list[str]:
    """NVRTC options -> g++ options (the -D defines carry over; --std too)."""
    out = []
    for opt in options:
        if opt.startswith("-D"):
            out.append(opt)
        elif opt.startswith("--std="):
            out.append(opt[1:])
        else:
            raise EmulatorError(f"compile option {opt!r} has no g++ equivalent")
    return out


@functools.lru_cache(maxsize=None)
def _compiler_version(cxx: str) -> str:
    return subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout


def build(source: str, options: tuple[str, ...], asan: bool = False) -> pathlib.Path:
    """The shared library of kernels/cuda/<source> compiled with `options` (cached)."""
    from conv.backend.cupy.sources import kernel_source
    return _build_text(source, kernel_source(source, _replaced.get(source)), options, asan)


def _build_text(source: str, text: str, options: tuple[str, ...], asan: bool) -> pathlib.Path:
    """The shared library of the self-contained kernel text `text` (named `source` in messages
    and the cache), translated and compiled with `options` (cached)."""
    cxx = compiler()
    if cxx is None:
        raise EmulatorError(availability()[1])
    text = translate(text)
    flags = list(_CXXFLAGS) + (list(_ASAN_FLAGS) if asan else []) + _cxx_options(options)
    header = header_path()
    key = hashlib.sha256("\0".join([text, header.read_text(), " ".join(flags),
                                    _compiler_version(cxx)]).encode()).hexdigest()[:24]
    target = _cache_dir() / f"{source.replace('.', '_')}-{key}.so"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        src = pathlib.Path(tmp) / source
        src.write_text(text)
        out = pathlib.Path(tmp) / "module.so"
        proc = subprocess.run([cxx, *flags, "-include", str(header), "-x", "c++", str(src),
                               "-o", str(out)], capture_output=True, text=True)
        if proc.returncode:
            raise EmulatorError(f"g++ failed on {source} {options}:\n{proc.stderr[-4000:]}")
        tmp_target = target.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(out, tmp_target)
        os.replace(tmp_target, target)          # atomic: concurrent builders agree
    return target


class Module:
    """One built source: launch its entry points."""

    def __init__(self, path: pathlib.Path):
        self.lib = ctypes.CDLL(str(path))
        self.lib.conv_emu_launch.restype = ctypes.c_int
        self.lib.conv_emu_launch.argtypes = [
            ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint),
            ctypes.POINTER(ctypes.c_uint64), ctypes.c_int, ctypes.c_int, ctypes.c_ulonglong,
            ctypes.c_char_p, ctypes.c_int]

    def launch(self, entry: str, grid, block, args: tuple, schedule: str = "forward",
               seed: int = 0) -> None:
        fn = ctypes.cast(getattr(self.lib, entry), ctypes.c_void_p)
        words = (ctypes.c_uint64 * max(1, len(args)))(*(_word(a) for a in args))
        g = (ctypes.c_uint * 3)(*(int(v) for v in tuple(grid) + (1,) * (3 - len(grid))))
        b = (ctypes.c_uint * 3)(*(int(v) for v in tuple(block) + (1,) * (3 - len(block))))
        message = ctypes.create_string_buffer(512)
        if self.lib.conv_emu_launch(fn, g, b, words, len(args), SCHEDULES[schedule], seed,
                                    message, 512):
            raise EmulatorError(f"{entry}<<<{tuple(g)}, {tuple(b)}>>>: "
                                f"{message.value.decode()}")


def _word(a) -> int:
    """A kernel argument as the 64-bit word the kernel reads: an array's data pointer (its first
    element, as a device pointer is), an integer's two's-complement bits."""
    if isinstance(a, np.ndarray):
        return a.ctypes.data
    return int(a) & 0xFFFF_FFFF_FFFF_FFFF


@functools.lru_cache(maxsize=None)
def _load(path: pathlib.Path) -> Module:
    return Module(path)


def module(source: str, options: tuple[str, ...], asan: bool = False) -> Module:
    return _load(build(source, options, asan))


def source_module(text: str, options: tuple[str, ...] = ("--std=c++17",), *,
                  name: str = "test_kernel.cu", asan: bool = False) -> Module:
    """A Module built from the kernel text `text` (not a file of kernels/cuda): its
    `#include "x.cuh"` lines replaced by those files of kernels/cuda, as the backend's sources
    are, then translated and compiled with `options` (NVRTC-style: -D and --std). For tests of
    the emulator and of device helpers; `name` names it in messages and in the cache."""
    from conv.backend.cupy.sources import kernel_source
    return _load(_build_text(name, kernel_source(name, text), options, asan))


def execute(step, schedule: str = "forward", seed: int = 0, asan: bool = False) -> None:
    """Run one step the CuPy backend computed: a Launch on the emulator, a HostStep as itself."""
    from conv.backend import cupy as cupy_backend
    if isinstance(step, cupy_backend.HostStep):
        step.run()
        return
    expected = len(parameters(step.source))
    if len(step.args) != expected:
        raise EmulatorError(f"{step.entry}: {len(step.args)} arguments for {expected} parameters")
    module(step.source, step.options, asan).launch(step.entry, step.grid, step.block, step.args,
                                                   schedule, seed)


def plan(op: str, x, w, b=None, stride=1, padding=0, dilation=1, groups=1, *,
         padding_mode: str = "zeros", algorithm: str = "auto", config: str = ""):
    """The CuPy backend's Plan of a call on NumPy arrays, made as conv.explain makes it but
    without asking for a GPU; config: a tile configuration (conv.plan.configs)."""
    from conv import plan as planning
    from conv._spec import make_spec
    spec = make_spec(op, x, w, b, stride, padding, dilation, groups, padding_mode)
    return planning.make_plan(spec, x, w, b, "cupy", algorithm, emulated=True, config=config)


def run(plan, x, w, b=None, *, schedule: str = "forward", seed: int = 0, asan: bool = False):
    """Execute `plan` (a CuPy-backend Plan) on NumPy arrays standing for device memory; returns
    the output as a NumPy array of shape spec.output_shape (the callers' arrays are only read)."""
    from conv.backend import cupy as cupy_backend
    spec = plan.spec
    if spec.is_empty:
        return np.empty(spec.output_shape, spec.dtype)
    ops = cupy_backend._prepare(plan, x, w, b, xp=np)
    for step in cupy_backend.launches(plan, ops):
        execute(step, schedule, seed, asan)
    return ops.out.reshape(spec.output_shape)


def asan_environment() -> dict[str, str]:
    """Environment for a child process that runs asan=True launches: AddressSanitizer's runtime
    preloaded (Python itself is not instrumented), leak checking off."""
    cxx = compiler()
    if cxx is None:
        raise EmulatorError(availability()[1])
    lib = subprocess.run([cxx, "-print-file-name=libasan.so"], capture_output=True,
                         text=True).stdout.strip()
    env = dict(os.environ)
    env["LD_PRELOAD"] = lib
    env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=0:exitcode=86:halt_on_error=1"
    return env
