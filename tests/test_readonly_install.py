"""A read-only install (read-only package folder and home, as in a locked-down container): the first
call works, with one warning, its CPU kernels cached in a temporary folder (conv/_numba_cache.py).
Each case runs in a child process, so this process's numba setup is untouched."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

import conv

ROOT = pathlib.Path(conv.__file__).resolve().parent.parent
CALL = ("import warnings, numpy as np\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import conv\n"
        "    y = conv.conv2d(np.ones((1, 2, 5, 5), np.float32), np.ones((3, 2, 3, 3), np.float32))\n"
        "    y = conv.conv2d(np.ones((1, 2, 5, 5), np.float32), np.ones((3, 2, 3, 3), np.float32))\n"
        "assert y.shape == (1, 3, 3, 3) and (y == 18).all(), y\n"
        "mine = [w for w in caught if 'numba caches the CPU kernels' in str(w.message)]\n"
        "print(len(mine), conv.__file__)\n")


def test_unwritable_cache_places_fall_back_to_a_temporary_folder():
    code = ("import conv._numba_cache as c, pathlib\n"
            "c._numba_places = lambda: [pathlib.Path('/dev/null/conv'), pathlib.Path('/dev/null/u')]\n"
            + CALL +
            "import numba, os\n"
            "assert numba.config.CACHE_DIR.startswith(os.path.join(__import__('tempfile')"
            ".gettempdir(), 'conv-numba-cache-'))\n"
            "assert any(os.scandir(numba.config.CACHE_DIR))   # the kernels were cached there\n")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[0] == "1"                    # exactly one warning


def test_writable_places_change_nothing():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    out = subprocess.run([sys.executable, "-c", CALL], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[0] == "0"


def test_a_read_only_filesystem(tmp_path):
    # The real thing: the package on a read-only bind mount, HOME read-only too (needs root and
    # mount, as on CI's VM; skipped elsewhere).
    package, home = tmp_path / "site", tmp_path / "home"
    shutil.copytree(ROOT / "conv", package / "conv",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "kernels", package / "conv" / "kernels",
                    ignore=shutil.ignore_patterns("__pycache__"))
    home.mkdir()
    mounted = []
    try:
        for folder in (package, home):
            for cmd in (["mount", "--bind", str(folder), str(folder)],
                        ["mount", "-o", "remount,ro,bind", str(folder)]):
                if subprocess.run(cmd, capture_output=True).returncode:
                    pytest.skip("cannot make a read-only bind mount here (needs root and mount)")
                if cmd[1] == "--bind":
                    mounted.append(folder)
        env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
        env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), PYTHONPATH=str(package))
        out = subprocess.run([sys.executable, "-c", CALL], capture_output=True, text=True,
                             env=env, cwd=str(tmp_path), timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        count, where = out.stdout.split()
        assert count == "1" and where.startswith(str(package))
    finally:
        for folder in reversed(mounted):
            subprocess.run(["umount", str(folder)], capture_output=True)
