"""The wheel: one top-level name (conv, with the GPU kernel sources as conv.kernels and the
benchmark runner as conv.bench), every kernel source inside, no benchmark results."""
from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    # From a clean copy of the tree: an in-tree build/ left by an earlier build would add its
    # stale modules to the wheel.
    tree = tmp_path_factory.mktemp("tree") / "conv-src"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(
        "build", "dist", "*.egg-info", "__pycache__", ".git", ".hypothesis"))
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-q", "-w", str(out), str(tree)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode:
        pytest.skip(f"cannot build a wheel here (no setuptools/wheel?): {proc.stderr[-500:]}")
    (path,) = out.glob("conv-*.whl")
    return zipfile.ZipFile(path)


@pytest.fixture(scope="module")
def wheel_names(wheel) -> list[str]:
    return wheel.namelist()


def test_wheel_metadata_spdx_license_one_version_and_the_extras(wheel, wheel_names):
    import conv
    (metadata,) = [n for n in wheel_names if n.endswith(".dist-info/METADATA")]
    text = wheel.read(metadata).decode()
    assert "License-Expression: MIT" in text and "License-File: LICENSE" in text
    assert f"Version: {conv.__version__}" in text
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in wheel_names)
    extras = {line.split(": ", 1)[1] for line in text.splitlines()
              if line.startswith("Provides-Extra: ")}
    assert {"cuda", "cuda12", "test", "bench", "dask"} <= extras


def test_wheel_has_only_the_projects_top_level_name(wheel_names):
    tops = {name.split("/", 1)[0] for name in wheel_names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"conv"}


def test_every_module_in_the_wheel_is_in_the_tree(wheel_names):
    where = {"conv/kernels/": ROOT / "kernels", "conv/bench/": ROOT / "bench",
             "conv/": ROOT / "conv"}
    for name in wheel_names:
        if name.endswith(".py"):
            prefix = next(p for p in where if name.startswith(p))
            assert (where[prefix] / name[len(prefix):]).is_file(), name


def test_wheel_holds_every_kernel_source_and_no_results(wheel_names):
    kernels = ROOT / "kernels"
    sources = {f"conv/kernels/{p.relative_to(kernels).as_posix()}" for p in kernels.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert sources <= set(wheel_names)
    assert "conv/bench/__main__.py" in wheel_names
    # The dispatch tables are the one kind of JSON the wheel carries (not the results they came
    # from).
    assert not [n for n in wheel_names if "/results/" in n or n.endswith(".png")
                or (n.endswith(".json") and not n.startswith("conv/dispatch_tables/"))]


def test_wheel_carries_the_dispatch_tables_auto_reads(wheel, wheel_names):
    tables = ROOT / "conv" / "dispatch_tables"
    expected = {f"conv/dispatch_tables/{p.name}" for p in tables.glob("*.json")}
    assert "conv/dispatch_tables/cpu.json" in expected
    assert expected == {n for n in wheel_names if n.startswith("conv/dispatch_tables/")}
    for name in expected:
        assert wheel.read(name) == (ROOT / name).read_bytes(), name


def test_kernels_and_bench_import_inside_conv():
    import conv.bench
    import conv.kernels
    assert pathlib.Path(conv.kernels.__file__).parent == conv._digest.kernels_root()
    assert conv.bench.__name__ == "conv.bench"
    import conv.backend.cpu  # noqa: F401  (the backend package must not shadow conv.backends())
    assert callable(conv.backends) and "cpu" in conv.backends()
