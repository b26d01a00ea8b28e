"""The installed package (a wheel, as ``pip install .`` builds it) holds every non-Python file the
source tree ships: a user who installs without ``-e`` gets a sensor whose eBPF build finds its
headers (a missing ``pathwalk.bpf.h`` once made ``sysmonx run`` fail after ``pip install .``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "sysmonx"


def _shipped_source_files() -> set[str]:
    out = set()
    for path in SRC.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc",):
            out.add("sysmonx/" + path.relative_to(SRC).as_posix())
    return out


def test_wheel_holds_every_file_of_the_source_tree(tmp_path):
    # a copy of the tree without build products: an in-tree build reuses build/ and the
    # editable install's egg-info, which may hold files the package data no longer names
    tree = tmp_path / "tree"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(
        ".venv", "build", "dist", "*.egg-info", ".git", "__pycache__", ".pytest_cache",
        ".mypy_cache", ".ruff_cache"))
    wheeldir = tmp_path / "wheel"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                           str(wheeldir), str(tree)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheels = list(wheeldir.glob("sysmonx-*.whl"))
    assert len(wheels) == 1, wheels
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    missing = sorted(_shipped_source_files() - names)
    assert not missing, f"not in the wheel: {missing}"
    assert "sysmonx/sensor/bpf/pathwalk.bpf.h" in names
