"""``yara``: YARA rules over the process's memory and over its image file.

Findings are named ``yara:RULE`` (one per matching rule). Rules come from a file or a folder
(``*.yar``/``*.yara``, compiled together with one namespace per file) given with ``--yara`` or
the config's ``<ScannerYaraRules>`` (see :func:`load_rules`); a config's ``scanners="yara"`` runs
every rule, ``scanners="yara:RULE"`` one. Memory scanned: every readable mapping that is
anonymous or writable (heap, stacks, data, JIT and injected code); read-only file mappings are
the files themselves, and the image file is scanned as a file. Memory is read in chunks through
``/proc/PID/mem`` with an overlap, so a match across two chunks is found; the scan's budget
bounds the bytes. Library: yara-python (libyara), ``Rules.match(data=...)``; libyara's own
``pid=`` scanning is not used (it attaches with ptrace, which stops the process).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Union

from ...core.errors import ConfigError
from ...core.registry import SCANNERS
from ..base import (KERNEL_MAPPINGS, Finding, ProcessView, ScanContext, Scanner, check_with,
                    shorten)

__all__ = ["Yara", "load_rules", "yara_available", "check"]

CHUNK = 1 << 20
OVERLAP = 4096
MAX_FILE = 64 << 20


def yara_available() -> str:
    """``""`` when yara-python imports, else why not."""
    try:
        import yara  # noqa: F401
    except ImportError as exc:
        return f"yara-python is not installed ({exc})"
    return ""


def load_rules(path: Union[str, Path]) -> Any:
    """Compile the YARA rules of a file, or of every ``*.yar``/``*.yara`` file of a folder (one
    namespace per file).

    Returns:
        ``yara.Rules``.
    Raises:
        ConfigError: yara-python missing, no rule file, or a syntax error (path and line).
    """
    why = yara_available()
    if why:
        raise ConfigError(why, str(path))
    import yara
    p = Path(path)
    if p.is_dir():
        files = sorted(q for q in p.rglob("*") if q.suffix.lower() in (".yar", ".yara")
                       and q.is_file())
        if not files:
            raise ConfigError("no *.yar or *.yara file in the folder", str(p))
        sources = {str(q.relative_to(p)): str(q) for q in files}
    elif p.is_file():
        sources = {p.name: str(p)}
    else:
        raise ConfigError("YARA rules not found", str(p))
    try:
        return yara.compile(filepaths=sources)
    except yara.SyntaxError as exc:
        raise ConfigError(f"YARA: {exc}", str(p)) from None
    except yara.Error as exc:
        raise ConfigError(f"YARA: {exc}", str(p)) from None


def _strings(match: Any, base: int) -> list[str]:
    out = []
    for s in getattr(match, "strings", [])[:4]:
        for inst in s.instances[:1]:
            text = bytes(inst.matched_data[:32])
            plain = text.decode("ascii", "replace")
            shown = plain if text.isascii() and plain.isprintable() else text.hex()
            out.append(f"{s.identifier} at {base + inst.offset:#x} {shown!r}")
    return out


@SCANNERS.register
class Yara(Scanner):
    """YARA rules over process memory and the image file (findings ``yara:RULE``)."""

    name = "yara"
    summary = "YARA rules (yara-python) over process memory and the image file: yara:RULE"
    reads_memory = True

    def scan(self, proc: ProcessView, ctx: ScanContext) -> Iterable[Finding]:
        """One finding per matching rule, its details naming where (memory range or file) and
        the first strings matched."""
        rules = ctx.yara_rules
        if rules is None:
            return
        hits: dict[str, list[str]] = {}

        def record(matches: Any, where: str, base: int) -> None:
            for m in matches:
                if ctx.yara_only and m.rule not in ctx.yara_only:
                    continue
                items = hits.setdefault(m.rule, [])
                if len(items) < 8:
                    strs = _strings(m, base)
                    items.append(f"{where}: {', '.join(strs) if strs else 'condition'}")

        exe = proc.base + "exe"
        st = proc.exe_stat()
        if st is not None and st.st_size:
            size = min(st.st_size, MAX_FILE)
            data = proc.read_file(exe, 0, size)
            if data:
                record(rules.match(data=data), f"file {proc.exe_path}", 0)
        for m in proc.maps:
            if m.perms[0] != "r" or m.path in KERNEL_MAPPINGS:
                continue
            if not (m.anonymous or m.perms[1] == "w"):
                continue
            addr = m.start
            while addr < m.end:
                n = min(CHUNK, m.end - addr)
                buf = proc.read(addr, n)
                if buf:
                    record(rules.match(data=buf), f"memory {m} {m.path or '(anonymous)'}", addr)
                if len(buf) < n or addr + n >= m.end:
                    break
                addr += n - OVERLAP
        for rule, where in hits.items():
            yield self.finding(shorten(sorted(set(where), key=where.index), 3), f"yara:{rule}")


def check(pid: int, **context: Any) -> list[Finding]:
    """:class:`Yara` on ``pid`` (``yara_rules=`` from :func:`load_rules`). Returns its
    findings (``yara:RULE``), empty when none."""
    return check_with(Yara(), pid, ScanContext(**context))


