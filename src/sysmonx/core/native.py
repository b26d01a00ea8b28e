"""Which implementation the replay hot paths use: the compiled extension
``sysmonx.core._speedups`` (C, built by ``pip install`` when a C compiler and the Python headers
are present) or the pure-Python functions, which define the behaviour.

The extension is used when it imports, unless the environment variable ``SYSMONX_PURE_PYTHON``
is set to anything but ``""`` or ``"0"`` (read once, at import). Both paths give byte-identical
output (tests/test_speedups.py); the extension handles the common record shapes and hands every
other input to the Python function.

``sysmonx --version`` prints :func:`implementation`.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any, Callable, Optional

__all__ = ["speedups", "implementation", "PURE_ENV", "stage_fast", "compiled"]

#: The environment variable that forces the pure-Python paths.
PURE_ENV = "SYSMONX_PURE_PYTHON"

_forced_pure = os.environ.get(PURE_ENV, "") not in ("", "0")
_missing: Optional[str] = None
speedups: Optional[ModuleType] = None
if not _forced_pure:
    try:
        speedups = importlib.import_module("sysmonx.core._speedups")
    except ImportError as exc:  # not built (no compiler at install time): pure Python
        _missing = str(exc)


def implementation() -> str:
    """One line naming the active path: ``"compiled (sysmonx.core._speedups)"``, or
    ``"pure Python (...)"`` with the reason."""
    if speedups is not None:
        return "compiled (sysmonx.core._speedups)"
    if _forced_pure:
        return f"pure Python ({PURE_ENV} is set)"
    return "pure Python (the C extension is not built)"


def sensor_implementation() -> str:
    """One line naming the live sensor's path: ``"compiled (sysmonx.sensor._ringbatch)"``, or
    ``"pure Python (...)"`` with the reason (the ring-buffer consumer, event assembly and audit
    reader; each falls back to its Python code, which defines it)."""
    if _forced_pure:
        return f"pure Python ({PURE_ENV} is set)"
    try:
        importlib.import_module("sysmonx.sensor._ringbatch")
    except ImportError:
        return "pure Python (the C extension is not built)"
    return "compiled (sysmonx.sensor._ringbatch)"


def stage_fast(kind: str, stage: object, fallback: Callable[[Any, Any], bool]
               ) -> Callable[[Any, Any], bool]:
    """A stage's ``process``: ``_speedups.StageFast(kind, stage, fallback)`` (the common case
    of a replay stage answered in C, everything else by ``fallback``, the stage's Python
    method, which defines the behaviour), or ``fallback`` itself in pure mode or before the
    Event type is registered (``sysmonx.sources.evtx`` not imported). ``kind``: ``clock``
    (:class:`~sysmonx.stages.clock.ClockCheckStage`) or ``count``
    (:class:`~sysmonx.filtering.stage.FilterStage` without an engine)."""
    if speedups is None:
        return fallback
    try:
        fast: Callable[[Any, Any], bool] = speedups.StageFast(kind, stage, fallback)
    except RuntimeError:  # the Event type is not registered yet
        return fallback
    return fast



def compiled(module: str, *names: str) -> tuple[Any, ...]:
    """The functions ``names`` of the compiled extension ``module`` (e.g.
    ``"sysmonx.sensor._ringbatch"``), in order, each ``None`` when :data:`PURE_ENV` is set, the
    extension is not built, or it lacks that name (an older build): the caller then runs its
    Python function, which defines the behaviour. Never raises."""
    if _forced_pure:
        return (None,) * len(names)
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return (None,) * len(names)
    return tuple(getattr(mod, n, None) for n in names)
