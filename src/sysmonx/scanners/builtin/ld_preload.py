"""``ld_preload``: the dynamic loader was told to load extra code into the process.

Source: ``LD_PRELOAD`` / ``LD_AUDIT`` (non-empty) in ``/proc/PID/environ`` (the environment the
process was started with, ld.so(8)); and ``/etc/ld.so.preload``: a library it lists that is
mapped in the process (``/proc/PID/maps``). ATT&CK T1574.006 (dynamic linker hijacking).
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Optional

from ...core.registry import SCANNERS
from ..base import Finding, ProcessView, ScanContext, Scanner, check_with

__all__ = ["LdPreload", "preload_file_entries", "check"]

_VARS = (b"LD_PRELOAD=", b"LD_AUDIT=")
_preload_cache: list = [None, ()]  # [(mtime_ns, size), entries]


def preload_file_entries(path: str = "/etc/ld.so.preload") -> tuple[str, ...]:
    """The libraries ``/etc/ld.so.preload`` lists (white space or colon separated, ``#``
    comments), cached while the file's mtime and size stay the same; ``()`` when absent."""
    try:
        st = os.stat(path)
    except OSError:
        return ()
    key = (st.st_mtime_ns, st.st_size)
    if _preload_cache[0] != key:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read(65536)
        except OSError:
            return ()
        entries = []
        for line in text.splitlines():
            line = line.split("#", 1)[0]
            entries += [e for e in line.replace(":", " ").split() if e]
        _preload_cache[:] = [key, tuple(entries)]
    return tuple(_preload_cache[1])


def _env_value(environ: bytes, prefix: bytes) -> Optional[str]:
    for item in environ.split(b"\0"):
        if item.startswith(prefix):
            v = item[len(prefix):]
            return v.decode("utf-8", "replace") if v.strip() else None
    return None


@SCANNERS.register
class LdPreload(Scanner):
    """``LD_PRELOAD``/``LD_AUDIT`` set, or an ``/etc/ld.so.preload`` library mapped."""

    name = "ld_preload"
    summary = "LD_PRELOAD/LD_AUDIT in the environment, or an /etc/ld.so.preload library mapped"

    def scan(self, proc: ProcessView, ctx: ScanContext) -> Iterable[Finding]:
        """One finding per cause: ``LD_PRELOAD=...``, ``LD_AUDIT=...``, ``/etc/ld.so.preload:
        LIB mapped``."""
        env = proc.environ or b""
        for var in _VARS:
            v = _env_value(env, var)
            if v is not None:
                yield self.finding(f"{var.decode()}{v}")
        entries = preload_file_entries()
        if entries:
            mapped = {m.path for m in proc.maps}
            for lib in entries:
                real = os.path.realpath(lib)
                if lib in mapped or real in mapped:
                    yield self.finding(f"/etc/ld.so.preload: {lib} mapped")


def check(pid: int, **context: Any) -> list[Finding]:
    """:class:`LdPreload` on ``pid``. Returns its findings, empty when none."""
    return check_with(LdPreload(), pid, ScanContext(**context))
