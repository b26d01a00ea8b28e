"""``elf_in_anon_memory``: an ELF image sits in anonymous memory (a loader staged a binary).

Source: the readable anonymous mappings of ``/proc/PID/maps`` (no file, heap, memfd other than
the running image; not the kernel's ``[vdso]``), read through ``/proc/PID/mem`` in chunks; at
the start of every page, an ELF identification (``\\x7fELF``, class 1/2, data 1/2, version 1)
followed by a plausible header (type EXEC/DYN/REL, a known machine) is a finding. Reflective
ELF loaders and ``memfd``-less in-memory execution leave exactly this (ATT&CK T1620).
"""

from __future__ import annotations

import struct
from typing import Any, Iterable

from ...core.registry import SCANNERS
from ..base import (KERNEL_MAPPINGS, Finding, ProcessView, ScanContext, Scanner, check_with,
                    shorten)

__all__ = ["ElfInAnonMemory", "elf_header_at", "check"]

PAGE = 4096
CHUNK = 1 << 20
_MACHINES = {3: "x86", 0x3E: "x86-64", 0x28: "arm", 0xB7: "aarch64", 0xF3: "riscv", 0x08: "mips",
             0x14: "ppc", 0x15: "ppc64", 0x16: "s390"}
_TYPES = {1: "REL", 2: "EXEC", 3: "DYN"}


def elf_header_at(buf: bytes, off: int) -> str:
    """A description (``ELF64 DYN x86-64``) when ``buf[off:]`` starts a plausible ELF header,
    else ``""``."""
    h = buf[off:off + 20]
    if len(h) < 20 or h[:4] != b"\x7fELF" or h[4] not in (1, 2) or h[5] not in (1, 2) or h[6] != 1:
        return ""
    e_type, e_machine = struct.unpack_from("<HH" if h[5] == 1 else ">HH", h, 16)
    if e_type not in _TYPES or e_machine not in _MACHINES:
        return ""
    return f"ELF{32 if h[4] == 1 else 64} {_TYPES[e_type]} {_MACHINES[e_machine]}"


@SCANNERS.register
class ElfInAnonMemory(Scanner):
    """An ELF header at the start of a page of anonymous memory."""

    name = "elf_in_anon_memory"
    summary = "an ELF header at a page start of anonymous memory (in-memory loader)"
    reads_memory = True

    def scan(self, proc: ProcessView, ctx: ScanContext) -> Iterable[Finding]:
        """One finding listing where ELF headers were found."""
        exe = proc.exe
        hits = []
        for m in proc.maps:
            if m.perms[0] != "r" or not m.anonymous or m.path in KERNEL_MAPPINGS or m.path == exe:
                continue
            addr = m.start
            while addr < m.end:
                n = min(CHUNK, m.end - addr)
                buf = proc.read(addr, n)
                # only page starts are candidates: a loader maps or copies an image page-aligned
                pos = buf.find(b"\x7fELF")
                while pos >= 0:
                    if pos % PAGE == 0:
                        what = elf_header_at(buf, pos)
                        if what:
                            hits.append(f"{what} at {addr + pos:#x} in {m} {m.path or '(anonymous)'}")
                    pos = buf.find(b"\x7fELF", pos + 1)
                if len(buf) < n:
                    break
                addr += n
        if hits:
            yield self.finding(f"{len(hits)} ELF header(s) in anonymous memory: " + shorten(hits))


def check(pid: int, **context: Any) -> list[Finding]:
    """:class:`ElfInAnonMemory` on ``pid``. Returns its findings, empty when none.
    Raises BudgetExceeded (default budget: 64 MiB, 2 s)."""
    return check_with(ElfInAnonMemory(), pid, ScanContext(**context))
