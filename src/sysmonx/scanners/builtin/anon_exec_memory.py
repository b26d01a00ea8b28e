"""``anon_exec_memory``: executable memory that no file backs (injected or generated code).

Source: ``/proc/PID/maps``: a mapping with ``x`` whose path is empty, ``[heap]``, ``[stack]`` or
a memfd / shared-memory object other than the running image itself. The kernel's own pseudo
mappings (``[vdso]``, ``[vsyscall]``, ``[uprobes]`` ...) are never counted. JIT runtimes (Java,
node, browsers, python's ctypes/libffi trampolines) do this by design: the default allow-list
names them (:mod:`sysmonx.scanners.allowlist`). ATT&CK T1055 (process injection).
"""

from __future__ import annotations

from typing import Any, Iterable

from ...core.registry import SCANNERS
from ..base import (KERNEL_MAPPINGS, Finding, ProcessView, ScanContext, Scanner, check_with,
                    shorten)

__all__ = ["AnonExecMemory", "anon_exec_mappings", "check"]


def anon_exec_mappings(proc: ProcessView) -> list:
    """The executable anonymous mappings of ``proc`` (see the module docstring)."""
    exe = proc.exe
    return [m for m in proc.maps
            if m.executable and m.path not in KERNEL_MAPPINGS and m.anonymous and m.path != exe]


@SCANNERS.register
class AnonExecMemory(Scanner):
    """Executable anonymous memory (no file behind it)."""

    name = "anon_exec_memory"
    summary = "executable memory no file backs (anonymous, heap, stack, memfd other than the image)"

    def scan(self, proc: ProcessView, ctx: ScanContext) -> Iterable[Finding]:
        """One finding listing the mappings (address range, permissions, size, path)."""
        found = anon_exec_mappings(proc)
        if found:
            total = sum(m.size for m in found)
            items = [f"{m} {m.size} bytes{' ' + m.path if m.path else ''}" for m in found]
            yield self.finding(f"{len(found)} executable anonymous mapping(s), {total} bytes: "
                               + shorten(items))


def check(pid: int, **context: Any) -> list[Finding]:
    """:class:`AnonExecMemory` on ``pid``. Returns its findings, empty when none."""
    return check_with(AnonExecMemory(), pid, ScanContext(**context))
