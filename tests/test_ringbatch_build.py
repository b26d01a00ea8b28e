"""Where a C compiler and the Python headers exist (CI has both), the install must have built
the eBPF backend's compiled ring-buffer consumer (``sysmonx.sensor._ringbatch``) and the backend
must use it, unless ``SYSMONX_PURE_PYTHON`` is set: otherwise CI would test the ctypes path twice
and the compiled one never (tests/test_ringbatch.py skips without the extension)."""

from __future__ import annotations

import importlib
import os
import shutil
import sysconfig
from pathlib import Path

import pytest

from sysmonx.sensor.backends import ebpf as ebpf_mod


def test_compiled_consumer_is_chosen_where_it_can_be():
    compiler = shutil.which("cc") or shutil.which("gcc")
    header = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not compiler or not header.is_file():
        pytest.skip("no C compiler or no Python headers here: the pure path is expected")
    rbmod = importlib.import_module("sysmonx.sensor._ringbatch")  # ImportError: not built
    if os.environ.get("SYSMONX_PURE_PYTHON", "") not in ("", "0"):
        assert ebpf_mod._ringbatch is None and not ebpf_mod._NATIVE_DECODE
    else:
        assert ebpf_mod._ringbatch is rbmod and ebpf_mod._NATIVE_DECODE
