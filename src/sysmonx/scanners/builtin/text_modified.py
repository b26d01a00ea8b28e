"""``text_modified``: the executable's code in memory differs from its file.

Source: the executable mappings of ``/proc/PID/maps`` that map the running image (the same path
as ``/proc/PID/exe``, both the kernel's ``d_path``), read through ``/proc/PID/mem`` and compared
with the image file at the mapping's offset (read through ``/proc/PID/exe``, so a deleted image
still compares). x86-64 and aarch64 code is position-independent: the loader never writes into
text, so any difference is a patch (hooking, in-memory patching: ATT&CK T1055, T1574).

Breakpoints are differences too: a debugger's or a uprobe's (the kernel writes an ``int3`` into
the process's copy of the page). When every differing byte is a lone ``0xCC`` the details say
``only int3 breakpoints``, which the default allow-list dismisses as that documented cause.
"""

from __future__ import annotations

from typing import Any, Iterable

from ...core.registry import SCANNERS
from ..base import Finding, ProcessView, ScanContext, Scanner, check_with, shorten

__all__ = ["TextModified", "check"]

CHUNK = 1 << 20


def _diff_runs(mem: bytes, disk: bytes) -> list[tuple[int, int]]:
    """``(offset, length)`` of the runs where ``mem`` and ``disk`` differ (``disk`` may be
    shorter: a mapping's last page past the end of the file is zero in memory and not code)."""
    runs: list[tuple[int, int]] = []
    n = min(len(mem), len(disk))
    if mem[:n] == disk[:n]:
        return runs
    i = 0
    while i < n:
        if mem[i] != disk[i]:
            j = i
            while j < n and mem[j] != disk[j]:
                j += 1
            runs.append((i, j - i))
            i = j
        else:
            # skip equal stretches quickly
            k = i + 4096
            if k < n and mem[i:k] == disk[i:k]:
                i = k
            else:
                i += 1
    return runs


@SCANNERS.register
class TextModified(Scanner):
    """The image's code in memory differs from the file."""

    name = "text_modified"
    summary = "the executable's code in memory differs from its file (patched text)"
    reads_memory = True

    def scan(self, proc: ProcessView, ctx: ScanContext) -> Iterable[Finding]:
        """One finding: the differing byte runs (address, length, bytes in memory vs file)."""
        exe = proc.exe
        if exe is None:
            return
        exe_file = proc.base + "exe"
        patches: list[str] = []
        total = 0
        only_int3 = True
        for m in proc.maps:
            # the image's own code: maps prints the same d_path as /proc/PID/exe
            if not m.executable or m.path != exe:
                continue
            addr = m.start
            while addr < m.end:
                n = min(CHUNK, m.end - addr)
                mem = proc.read(addr, n)
                disk = proc.read_file(exe_file, m.offset + (addr - m.start), n)
                for off, length in _diff_runs(mem, disk):
                    total += length
                    if not (length == 1 and mem[off] == 0xCC):
                        only_int3 = False
                    patches.append(f"{addr + off:#x} {length} bytes {mem[off:off + min(length, 8)].hex()}"
                                   f" (file {disk[off:off + min(length, 8)].hex()})")
                if len(mem) < n:
                    break
                addr += n
        if patches:
            kind = " (only int3 breakpoints)" if only_int3 else ""
            yield self.finding(f"{total} byte(s) of {proc.exe_path} text differ from the file in "
                               f"{len(patches)} run(s){kind}: " + shorten(patches))


def check(pid: int, **context: Any) -> list[Finding]:
    """:class:`TextModified` on ``pid``. Returns its findings, empty when none.
    Raises BudgetExceeded (default budget: 64 MiB, 2 s)."""
    return check_with(TextModified(), pid, ScanContext(**context))
