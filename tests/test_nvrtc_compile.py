"""CI without a GPU: every CUDA C specialisation the CuPy backend can launch compiles with NVRTC.

Each (source, compile options) module of conv.backend.cupy.sources.specialisations() (one per
source and dtype, and for gemm.cu one per GEMM tile configuration the dtype has) is compiled for
sm_80 and sm_90 with the options CuPy's RawModule uses, from the very text CuPy compiles
(conv.backend.cupy.sources.kernel_source). Every entry point must come out in a non-empty cubin. ptxas's
registers / spills / stack per entry are printed as a table (shown in the CI log, also recorded as
a junit property); spills are reported, not judged.
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from conv import _nvrtc
from conv.backend.cupy import sources as _cupy_sources

ARCHS = ("sm_80", "sm_90")

_ok, _why = _nvrtc.nvrtc_availability()
pytestmark = pytest.mark.skipif(not _ok, reason=f"NVRTC not usable: {_why}")


def _modules() -> dict[tuple[str, tuple[str, ...]], list[str]]:
    """(source, options) -> entry points, from the backend's list of specialisations."""
    modules: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for source, entry, options in _cupy_sources.specialisations():
        modules.setdefault((source, options), []).append(entry)
    return modules


MODULES = _modules()
MODULE_KEYS = [(source, options, arch) for (source, options) in MODULES for arch in ARCHS]


def _module_id(key) -> str:
    source, options, arch = key
    want = next((o.split("_", 2)[-1] for o in options if o.startswith("-DCONV_WANT_")), "all")
    tile = _cupy_sources.gemm_tile_of(options)
    return f"{source}-{want}{'-' + tile if tile else ''}-{arch}"


def _table_source(source: str, options: tuple[str, ...]) -> str:
    """The table's source column: gemm.cu with its tile ("gemm.cu 64x64x16"), else the file."""
    tile = _cupy_sources.gemm_tile_of(options)
    return f"{source} {tile}" if tile else source


@pytest.fixture(scope="session")
def compiled() -> dict:
    """Every module compiled once per architecture (threads: NVRTC programs are independent)."""
    def build(key):
        source, options, arch = key
        opts = options + _nvrtc.CUPY_IMPLICIT_OPTIONS
        return key, _nvrtc.compile_source(_cupy_sources.kernel_source(source), arch, opts,
                                          name=source)
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(build, MODULE_KEYS))


def test_specialisations_cover_every_algorithm_and_dtype():
    from conv._spec import SUPPORTED_DTYPES
    entries = {entry for _, entry, _ in _cupy_sources.specialisations()}
    for dt in SUPPORTED_DTYPES:
        for base in ("conv2d_direct_naive", "im2col", "gemm_naive", "gemm_tiled",
                     *(f"conv2d_direct_kb{kb}" for kb in _cupy_sources.DIRECT_KBS)):
            assert f"{base}_{dt.name}" in entries


def test_specialisations_cover_every_gemm_tile_of_every_dtype():
    from conv._spec import SUPPORTED_DTYPES
    specs = set(_cupy_sources.specialisations())
    for dt in SUPPORTED_DTYPES:
        for tile in _cupy_sources.gemm_tiles(dt):
            options = _cupy_sources.module_options("gemm.cu", dt, tile)
            assert ("gemm.cu", f"gemm_tiled_{dt.name}", options) in specs, (dt, tile)
    assert len(specs) == len(_cupy_sources.specialisations())      # each listed once


@pytest.mark.parametrize("source", _cupy_sources.SOURCES)
def test_sources_are_self_contained(source):
    text = _cupy_sources.kernel_source(source)
    assert not re.search(r"^\s*#\s*include", text, re.MULTILINE), \
        f"{source}: the compiled text must not #include anything (CuPy and CI NVRTC differ in headers)"
    assert "extern \"C\"" in text


@pytest.mark.parametrize("key", MODULE_KEYS, ids=[_module_id(k) for k in MODULE_KEYS])
def test_module_compiles(compiled, key):
    result = compiled[key]
    source, options, arch = key
    assert result.ok, f"{source} {' '.join(options)} for {arch} failed:\n{result.log}"
    assert result.cubin_size > 0, f"{source} for {arch}: empty cubin"
    for entry in MODULES[(source, options)]:
        assert entry in result.functions, \
            f"{source} for {arch}: entry {entry} missing from the ptxas report:\n{result.log}"


def test_resource_table(compiled, record_property):
    """Print registers / spills / stack per entry (a report, not a threshold)."""
    rows = []
    for (source, options, arch), result in sorted(compiled.items(), key=lambda kv: (kv[0][2], kv[0][0])):
        for entry in MODULES[(source, options)]:
            if entry in result.functions:
                rows.append((_table_source(source, options), arch, result.functions[entry]))
    table = _nvrtc.format_table(rows)
    spilling = [f"{arch} {source} {st.name}" for source, arch, st in rows
                if st.spill_stores or st.spill_loads]
    counted = (f"{len(rows)} entry points in {len(compiled)} modules "
               f"({len(MODULES)} (source, options) modules x {len(ARCHS)} architectures)")
    # Printed at the end of the run by tests/conftest.py:pytest_terminal_summary (also from an
    # xdist worker, whose own output the terminal never shows), and kept in the junit XML.
    record_property("nvrtc_resource_table",
                    "NVRTC/ptxas resources per entry point (bytes for spills, stack, smem)\n"
                    + table + f"\n{counted}; entries with spills: "
                    + (", ".join(spilling) if spilling else "none"))
    assert len(rows) == sum(len(e) for e in MODULES.values()) * len(ARCHS)


def test_parse_ptxas_log():
    log = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'gemm_tiled_float32' for 'sm_90'
ptxas info    : Function properties for gemm_tiled_float32
ptxas         .     8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 122 registers, used 1 barriers, 8224 bytes smem, 496 bytes cmem[0]
ptxas info    : Compile time = 12.5 ms
"""
    stats = _nvrtc.parse_ptxas_log(log)
    assert stats == {"gemm_tiled_float32": _nvrtc.FunctionStats("gemm_tiled_float32", 122, 4, 12,
                                                                8, 8224)}
