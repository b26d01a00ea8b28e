"""Private on-disk entries of plain marshalled data: the storage under the config cache
(:mod:`sysmonx.config.cache`) and the filter's compiled-plan cache
(:mod:`sysmonx.filtering.plancache`).

An entry ``<directory>/<key><suffix>`` is a magic line, the key (64 hex characters), the
SHA-256 of the payload and the payload (:mod:`marshal` of plain values: tuples, lists, dicts,
strings, numbers, ``None``; never code, never pickle). It is read only from a directory owned by
the user running SysmonX that no other user can write (created ``0700``), from a regular file
(not a link) owned by that user and writable by nobody else, with the right magic, key and
payload digest; anything else is ignored with a note for a person (a bad entry is removed, so
the caller's rebuilt value replaces it). Writing goes through a temporary file renamed into
place; at most ``max_entries`` entries are kept, the least recently used removed first.

With ``admit_on_second_miss`` a key is stored only when it is written for the second time: the
first write leaves an empty marker ``<key>.seen`` (status ``noted``), so a value used once (a
config replayed once, or edited between runs) costs a marker, not its marshalling and writing;
markers are bounded like entries.
"""

from __future__ import annotations

import hashlib
import marshal
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any, Optional, Union

from .cachelook import (cache_dir, config_caches_enabled, create_marker, private_dir_problem,
                        supported)

__all__ = ["MarshalStore", "private_dir_problem", "code_fingerprint", "supported",
           "cache_dir", "config_caches_enabled", "CacheFront"]

#: An entry larger than this is not read.
MAX_ENTRY_BYTES = 256 << 20


#: The code a stored config or filter plan depends on, relative to the ``sysmonx`` package: the
#: config reader, the filter's compiler, the schema and the model, and what they import.
_CODE_PARTS = ("config/parse.py", "config/cache.py", "filtering/engine.py", "filtering/index.py",
               "filtering/walk.py", "filtering/conditions.py", "filtering/plancache.py",
               "schema/__init__.py", "schema/snapshot.py", "schema/catalogue.py",
               "configmodel.py", "core/registry.py", "core/errors.py", "core/regex.py",
               "core/marshalstore.py")
_FINGERPRINT: Optional[bytes] = None


def code_fingerprint() -> bytes:
    """SHA-256 over the interpreter's ``cache_tag`` and the relative path and bytes of every
    file of :data:`_CODE_PARTS` as installed (computed once per process, ~0.5 ms): a changed
    reader or compiler never reuses an entry, whatever the version says (the callers' keys add
    the SysmonX version)."""
    global _FINGERPRINT
    if _FINGERPRINT is None:
        root = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
        h = hashlib.sha256(sys.implementation.cache_tag.encode())
        files: list[str] = []
        for part in _CODE_PARTS:
            full = os.path.join(root, part)
            if os.path.isdir(full):
                files.extend(os.path.join(part, n) for n in os.listdir(full) if n.endswith(".py"))
            else:
                files.append(part)
        for name in sorted(files):
            h.update(name.encode() + b"\0")
            with open(os.path.join(root, name), "rb") as f:
                h.update(f.read())
            h.update(b"\0")
        _FINGERPRINT = h.digest()
    return _FINGERPRINT


class MarshalStore:
    """Entries of one kind under ``directory`` (see the module docstring).

    Args:
        directory: the folder (created ``0700`` on the first write).
        magic: the first bytes of every entry (names the kind and its format version).
        what: the store's name in notes (``config cache``).
        suffix: entry file suffix.
        max_entries: entries kept (least recently used removed beyond).
    Attributes:
        status: what the last :meth:`read`/:meth:`write` did: ``hit``, ``miss``, ``ignored``
            (an entry or the directory failed a check), ``stored``, ``noted`` (a first write
            with ``admit_on_second_miss``: only the marker) or ``unwritable``.
        notes: the reasons of the last call, for a person.
        admit_on_second_miss: store a key at its second write only (module docstring).
    """

    def __init__(self, directory: Union[str, Path], magic: bytes, what: str,
                 suffix: str = ".marshal", max_entries: int = 32,
                 admit_on_second_miss: bool = False) -> None:
        self.directory = Path(directory)
        self.magic = magic
        self.what = what
        self.suffix = suffix
        self.max_entries = max_entries
        self.admit_on_second_miss = admit_on_second_miss
        self.status = ""
        self.notes: list[str] = []

    def entry(self, key: str) -> Path:
        """The entry path of ``key``."""
        return self.directory / f"{key}{self.suffix}"

    def read(self, key: str, check: Any = None) -> Any:
        """The value stored under ``key``, passed through ``check(value)`` when given (which
        raises for a value of the wrong shape), or ``None`` on a miss or a bad entry (removed;
        :attr:`notes` says why). Never raises for a bad entry."""
        self.notes = []
        path = self.entry(key)
        if not supported():
            self.status = "miss"
            return None
        euid = os.geteuid()
        why = private_dir_problem(self.directory, euid)
        if why is not None:
            if not os.path.lexists(self.directory):
                self.status = "miss"
                return None
            self.status = "ignored"
            self.notes.append(f"{self.what} not used: {why}")
            return None
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            self.status = "miss"
            return None
        except OSError as exc:
            self.status = "ignored"
            self.notes.append(f"{self.what} entry {path} not read: {exc}")
            return None
        try:
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode) or st.st_uid != euid or st.st_mode & 0o022:
                    raise ValueError("not a regular file owned by this user and writable by no one else")
                if st.st_size > MAX_ENTRY_BYTES:
                    raise ValueError(f"larger than {MAX_ENTRY_BYTES} bytes")
                data = f.read()
            head = len(self.magic)
            if data[:head] != self.magic:
                raise ValueError(f"not a {self.what} entry of this format")
            if data[head:head + 64] != key.encode():
                raise ValueError("entry of another key")
            payload = memoryview(data)[head + 96:]
            if hashlib.sha256(payload).digest() != data[head + 64:head + 96]:
                raise ValueError("damaged (payload digest differs)")
            value = marshal.loads(payload)
            if check is not None:
                value = check(value)
        except Exception as exc:  # noqa: BLE001 - any failure means: rebuild
            self._remove(path)
            self.status = "ignored"
            self.notes.append(f"{self.what} entry {path} ignored and rebuilt: {exc}")
            return None
        try:
            if st.st_mtime < time.time() - 60:  # least recently used order (to the minute)
                os.utime(path)
        except OSError:
            pass
        self.status = "hit"
        return value

    def write(self, key: str, value: Any, admitted: bool = False) -> None:
        """Store ``value`` (plain data) under ``key``; ``admitted``: stored now even with
        :attr:`admit_on_second_miss` (the caller decided it is a second run, e.g. by a config
        file's first look: :func:`~sysmonx.core.cachelook.first_look`). Never raises:
        :attr:`status` and :attr:`notes` say what happened."""
        self.notes = []
        path = self.entry(key)
        if not supported():
            self.status = "unwritable"
            return
        marker = self.directory / f"{key}.seen"
        admit = self.admit_on_second_miss and not admitted
        if admit and not os.path.lexists(marker):
            self._note(marker)
            return
        try:
            payload = marshal.dumps(value)
        except (ValueError, TypeError) as exc:  # a value marshal cannot hold: not stored
            self.status = "unwritable"
            self.notes.append(f"{self.what}: cannot store: {exc}")
            return
        try:
            if not self._private_directory():
                return
            tmp = self.directory / f".tmp-{os.getpid()}-{os.urandom(6).hex()}{self.suffix}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                         0o600)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(self.magic + key.encode() + hashlib.sha256(payload).digest())
                    f.write(payload)
                os.replace(tmp, path)
            except BaseException:
                self._remove(tmp)
                raise
        except OSError as exc:
            self.status = "unwritable"
            self.notes.append(f"{self.what}: cannot write {path}: {exc}")
            return
        self.status = "stored"
        if admit:
            self._remove(marker)
        self._trim(keep=path)

    def _note(self, marker: Path) -> None:
        """A first write with ``admit_on_second_miss``: create the empty ``marker`` (private,
        not through a link), keep at most ``max_entries`` markers; status ``noted``."""
        try:
            if not self._private_directory():
                return
            create_marker(marker)
        except OSError as exc:
            self.status = "unwritable"
            self.notes.append(f"{self.what}: cannot write {marker}: {exc}")
            return
        self.status = "noted"
        self._trim(keep=marker, suffix=".seen")

    def _private_directory(self) -> bool:
        """Create :attr:`directory` (``0700``) if missing; False, with status ``unwritable``
        and a note, when it is not private to this user. Raises OSError from ``mkdir``."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        why = private_dir_problem(self.directory, os.geteuid())
        if why is None:
            return True
        self.status = "unwritable"
        self.notes.append(f"{self.what} not used: {why}")
        return False

    def _trim(self, keep: Path, suffix: Optional[str] = None) -> None:
        try:
            entries = sorted(((p.stat().st_mtime, p) for p in
                              self.directory.glob("*" + (suffix or self.suffix)) if p != keep),
                             reverse=True)
        except OSError:
            return
        for _, p in entries[self.max_entries - 1:]:
            self._remove(p)

    @staticmethod
    def _remove(path: Path) -> None:
        try:
            path.unlink()
        except OSError:
            pass


class CacheFront:
    """What a cache over one :class:`MarshalStore` shares (the config cache, the filter plan
    cache): the directory, :attr:`status`, :attr:`notes` and :meth:`entry`. A subclass sets
    :attr:`magic` and :attr:`what` and gives :meth:`default_directory` and :meth:`max_entries`;
    its own ``get``/``put`` convert values to and from plain data.

    Args:
        directory: the cache directory (default :meth:`default_directory`); created ``0700``
            when missing.
        admit_on_second_miss: store a key at its second write only (module docstring).
    """

    #: the entries' first line (:class:`MarshalStore`).
    magic = b""
    #: the cache's name in notes, for a person.
    what = ""

    def __init__(self, directory: Union[str, Path, None] = None, *,
                 admit_on_second_miss: bool = False) -> None:
        self.directory = Path(directory) if directory is not None else self.default_directory()
        self._store = MarshalStore(self.directory, self.magic, self.what,
                                   max_entries=self.max_entries(),
                                   admit_on_second_miss=admit_on_second_miss)

    def default_directory(self) -> Path:
        """The directory used when none is given."""
        raise NotImplementedError

    def max_entries(self) -> int:
        """Entries kept (least recently used removed beyond); read at every call."""
        return 32

    @property
    def status(self) -> str:
        """What the last ``get``/``put`` did: ``hit``, ``miss``, ``ignored`` (an entry or the
        directory failed a check), ``stored``, ``noted`` (a first write with
        ``admit_on_second_miss``) or ``unwritable``."""
        return self._store.status

    @property
    def notes(self) -> list[str]:
        """The reasons of the last call, for a person."""
        return self._store.notes

    def entry(self, key: str) -> Path:
        """The entry path of ``key``."""
        return self._store.entry(key)

    def record(self, status: str, notes: list[str]) -> None:
        """Set :attr:`status` and :attr:`notes` for what a caller did in the cache's name
        (``load_config``'s first look: ``noted`` or ``unwritable``)."""
        self._store.status, self._store.notes = status, list(notes)
