"""Kernel names for the sensor's threads (``/proc/PID/task/TID/comm``, what ``top -H``, ``ps
-L`` and ``perf`` show), so that the CPU time of each can be told apart from outside: Python
names its threads only for itself. Linux ``prctl(PR_SET_NAME)``; at most 15 bytes kept; does
nothing where it is not available."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Any, Optional

__all__ = ["set_native_name"]

_PR_SET_NAME = 15
_libc: Optional[Any] = None


def set_native_name(name: str) -> bool:
    """Give the calling thread the kernel name ``name`` (cut to 15 bytes). Returns whether it
    was set; never raises."""
    global _libc
    if not sys.platform.startswith("linux"):
        return False
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return bool(_libc.prctl(_PR_SET_NAME, name.encode("utf-8", "replace")[:15], 0, 0, 0)
                    == 0)
    except (OSError, AttributeError):
        return False
