"""The one error root: every error SysmonX shows a user derives from :class:`SysmonXError`.

An error carries a message and, when it is about a place in an input, a :class:`Location` (file,
line or record offset). ``str(error)`` renders ``location: message``; the command line prints that
as one line. Narrow subclasses name the phase (configuration, schema, input, output, rules,
sources, service); each also derives from the builtin exception callers caught before the root
existed (``ValueError``, ``OSError`` ...), so ``except ValueError`` keeps working.

Which module raises what:

=========================  ===============================  ========================================
class                      builtin base                     raised by
=========================  ===============================  ========================================
:class:`ConfigError`       ``ValueError``                   config reader, command-line merge, reload
:class:`SchemaError`       ``ValueError``                   schema version parsing
:class:`BlobError`         ``ValueError``                   binary rule blob
:class:`UsageError`        ``ValueError``                   Sysmon switches, option values (``--from``)
:class:`ReadError`         -- (reported, not raised)        sources: one damaged record or file
:class:`RuleError`         ``ValueError``                   Sigma rule compilation and correlation
:class:`RegexError`        ``ValueError``                   the RE2 policy (:mod:`sysmonx.core.regex`)
:class:`SourceUnavailable` ``RuntimeError``                 live backends and sources that cannot run
:class:`SinkError`         ``OSError``                      outputs that cannot be written
:class:`ServiceError`      ``RuntimeError``                 service install/uninstall
:class:`PluginError`       ``LookupError``                  registries (unknown or broken plugin)
=========================  ===============================  ========================================

Pattern from pySigma's ``SigmaError`` (a location rendered ``path:line``) and dissect.target's
exceptions that subclass both the domain error and the builtin.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

__all__ = ["Location", "SysmonXError", "SEVERITIES", "ConfigError", "SchemaError", "BlobError", "UsageError",
           "ReadError", "RuleError", "RegexError", "SourceUnavailable", "SinkError",
           "OutputClosed", "ServiceError", "PluginError"]


@dataclass(frozen=True)
class Location:
    """Where something is: a file and, optionally, a place in it.

    Attributes:
        path: the file (for an archive member ``archive.zip!member.json``), a socket, or a name
            such as ``<string>`` / ``<stdin>``.
        offset: a 1-based line (``kind == "line"``), a byte offset (``"byte"``), an EVTX record
            number (``"record"``); ``None`` when the whole file is meant.
        kind: ``"line"``, ``"byte"``, ``"record"`` or ``"file"``.
    """

    path: str
    offset: Optional[int] = None
    kind: str = "line"

    def __str__(self) -> str:
        if self.offset is None:
            return self.path
        if self.kind == "line":
            return f"{self.path}:{self.offset}"
        return f"{self.path}:{self.kind} {self.offset}"


class SysmonXError(Exception):
    """Root of every user-facing SysmonX error.

    Args:
        message: what is wrong, for a user (one line).
        location: where, or ``None``.
    Attributes:
        message, location: as given.
    """

    def __init__(self, message: str, location: Optional[Location] = None) -> None:
        self.message = message
        self.location = location
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.location is None:
            return self.message
        return f"{self.location}: {self.message}"

    def __reduce__(self) -> tuple[Any, ...]:  # pickled across replay worker processes
        return (type(self), (self.message, self.location))


class ConfigError(SysmonXError, ValueError):
    """A configuration Sysmon would refuse to load.

    Args:
        message: what is wrong (Sysmon's wording where it has one).
        path: the config file (or ``<string>``).
        line: 1-based line of the offending element, or ``None``.
        others: further errors found in the same file.
    Attributes:
        message, path, line: as given; ``location`` is ``Location(path, line)``.
        errors: every error found in the file, this one first (Sysmon's validation reports them
            all, not only the first); ``[self]`` when only one is known. ``str()`` gives the
            first; print ``errors`` to show all.
    """

    def __init__(self, message: str, path: str = "<string>", line: Optional[int] = None,
                 others: Optional[list[ConfigError]] = None) -> None:
        self.path = path
        self.line = line
        self.errors: list[ConfigError] = [self] + list(others or [])
        super().__init__(message, Location(path, line or None, "line"))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.path, self.line, self.errors[1:]))


class SchemaError(SysmonXError, ValueError):
    """A schema version no 4.x Sysmon accepts, or one newer than SysmonX knows."""


class BlobError(SysmonXError, ValueError):
    """A binary rule blob that cannot be read or written (see :mod:`sysmonx.config.blob`)."""


class UsageError(SysmonXError, ValueError):
    """A command line or option value that does not parse (exit 87 for Sysmon's switches, 2 for
    the subcommands)."""


#: ``ReadError.severity`` values. ``error``: data was lost (a record, a field, a file);
#: ``warning``: everything was read, but something the user must know changes its meaning
#: (said once per file); ``note``: information (a per-file summary of repairs, a file skipped);
#: ``repaired``: one record read as its producer meant it after a known export fault was undone
#: (counted by the consumer, not printed one by one).
SEVERITIES = ("error", "warning", "note", "repaired")


class ReadError(SysmonXError):
    """One damaged, repaired or noteworthy spot of an input (a record, line, chunk, or the whole
    file); reading went on after it. Sources report these as data (never raised across the
    loop).

    Args:
        path: the file (archive members as ``archive.zip!member.json``, nested
            ``a.zip!b.tar.gz!c.json``; a single compressed stream ``x.json.gz``: the file).
        offset: a 1-based line number (``offset_kind == "line"``), a byte offset (``"byte"``)
            or an EVTX record number (``"record"``: the number in the record header, which is
            also the ``EventRecordID`` unless the file was exported from a larger log); ``None``
            for the whole file.
        offset_kind: ``"line"``, ``"byte"``, ``"record"`` or ``"file"``.
        message: what is wrong and what was lost, for a user.
        severity: one of :data:`SEVERITIES` (``error`` unless said otherwise).
    """

    #: what this is in the pipeline (a stage may emit one; the loop reports it).
    item_kind: ClassVar[str] = "error"

    def __init__(self, path: str, offset: Optional[int], offset_kind: str, message: str,
                 severity: str = "error") -> None:
        self.path = path
        self.offset = offset
        self.offset_kind = offset_kind
        self.severity = severity
        super().__init__(message, Location(path, offset, offset_kind))

    def _key(self) -> tuple[Any, ...]:
        return (self.path, self.offset, self.offset_kind, self.message, self.severity)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReadError) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self._key())

    def __repr__(self) -> str:
        return (f"ReadError(path={self.path!r}, offset={self.offset!r}, "
                f"offset_kind={self.offset_kind!r}, message={self.message!r}, "
                f"severity={self.severity!r})")


class RuleError(SysmonXError, ValueError):
    """A Sigma rule or correlation that cannot be evaluated.

    Attributes:
        code: short reason code (``regex``, ``condition``, ``correlation`` ...).
    """

    def __init__(self, code: str, message: str, location: Optional[Location] = None) -> None:
        self.code = code
        super().__init__(message, location)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.message, self.location))


class RegexError(SysmonXError, ValueError):
    """RE2 refuses a pattern (syntax, backreference, lookaround, or too large for its memory
    budget)."""


class SourceUnavailable(SysmonXError, RuntimeError):
    """A source or live backend cannot run here; the message is the reason for the user (e.g.
    "no BTF at /sys/kernel/btf/vmlinux", "audit is owned by pid 812 (auditd)")."""


class SinkError(SysmonXError, OSError):
    """An output cannot be opened or written (disk full, closed socket ...). ``__cause__`` holds
    the underlying ``OSError`` when there is one."""


class EventsSpooled(SinkError):
    """A network output closed with ``count`` events still in its spool on disk (the receiver
    did not confirm them in time): not lost, the next run with the same spool sends them. A
    live run reports them as spooled; under the ``fatal`` policy (replay) it is a failure."""

    def __init__(self, message: str, count: int) -> None:
        super().__init__(message)
        self.count = count


class OutputClosed(SinkError):
    """The reader of an output went away (``| head`` closed the pipe): stop quietly."""


class ServiceError(SysmonXError, RuntimeError):
    """A service step (install, update, uninstall) cannot be done."""


class PluginError(SysmonXError, LookupError):
    """An unknown plugin name, or a plugin that cannot be loaded (reason given)."""
