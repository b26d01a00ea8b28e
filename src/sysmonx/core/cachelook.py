"""Where SysmonX's caches live, whether the config caches are on, and the first look that
decides whether a configuration file was seen before, all without the caches' own modules.

The config cache (:mod:`sysmonx.config.cache`) and the filter plan cache
(:mod:`sysmonx.filtering.plancache`) store a configuration at its second run: a config read
once (replayed once, or edited between runs) should cost nothing measurable. Their keys are
content keys (the config's bytes, the reader's code, ...: computing them and importing the
modules that do costs ~2.5-4 ms), so a first run does not compute them: :func:`look_key` is a
key of what ``stat`` says about the file (the path as given and absolute, device, inode, size,
modification time in nanoseconds) and the SysmonX version, and :func:`first_look` says whether
an empty marker ``<look key>.seen`` exists in the config cache's folder (and leaves one when it
does not).

The look key only decides *whether to compute the content keys*, never what is served: an
entry is found by its content key alone. What ``stat`` can miss (a file rewritten with other
bytes of the same size, its modification time set back, on the same inode) then costs at most
one run that stores a config read once; a stale config or plan is never served. A changed
``stat`` (any edit, ``touch``, a copy) makes the next run a first run again.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from pathlib import Path
from typing import Any, Optional, Union

__all__ = ["supported", "cache_dir", "config_caches_enabled", "private_dir_problem",
           "look_key", "first_look", "MARKER_SUFFIX", "MAX_MARKERS", "ORIGIN",
           "model_snapshot", "create_marker"]

#: The suffix of a first-look marker (an empty file).
MARKER_SUFFIX = ".seen"
#: First-look markers kept by ``load_config``'s default config cache.
MAX_MARKERS = 32
#: The attribute ``load_config`` sets on a :class:`~sysmonx.configmodel.Config` it loaded with
#: the config cache on: ``("first",)`` for a config file's first run (nothing computed or
#: stored; the filter plan cache is skipped too), or ``("key", content key, snapshot)`` where
#: ``snapshot`` is :func:`model_snapshot` at load time (the plan cache's key is then derived
#: from the content key while the rule sets are unchanged). Not a dataclass field: it takes no
#: part in equality and goes with the config to ``--jobs`` workers (pickle).
ORIGIN = "_sysmonx_cache_origin"


def supported() -> bool:
    """Whether entries can be kept here: the privacy checks need POSIX owners and modes
    (``os.geteuid``); elsewhere (Windows) nothing is read or written."""
    return hasattr(os, "geteuid")


def cache_dir(name: str) -> Path:
    """SysmonX's cache folder ``name`` (``sigma``, ``config``, ``filter``):
    ``$SYSMONX_CACHE_DIR/name``, else ``$XDG_CACHE_HOME/sysmonx/name``, else
    ``~/.cache/sysmonx/name``."""
    env = os.environ.get("SYSMONX_CACHE_DIR")
    if env:
        return Path(env) / name
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sysmonx" / name


def config_caches_enabled() -> bool:
    """False when ``$SYSMONX_CONFIG_CACHE`` is ``0``, ``off``, ``no`` or ``false`` (the config
    and filter plan caches), or where entries cannot be kept private (:func:`supported`)."""
    return supported() and os.environ.get("SYSMONX_CONFIG_CACHE", "").strip().lower() not in (
        "0", "off", "no", "false")


def private_dir_problem(path: Path, euid: int) -> Optional[str]:
    """Why ``path`` is not a directory only ``euid`` can write, or ``None`` when it is."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    if st.st_uid != euid:
        return f"{path} is owned by uid {st.st_uid}, not {euid}"
    if st.st_mode & 0o022:
        return f"{path} is writable by other users (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def model_snapshot(config: Any) -> tuple[Any, ...]:
    """What a configuration's filter plans depend on, to compare by identity (the filters and
    aggregates are frozen and kept, so a comparison with the same objects costs a pointer test
    each): per rule set its tag, EventID, onmatch, relation, filters and aggregates. Equal
    snapshots give equal plans (``filtering.plancache.plans_key`` hashes a subset of this)."""
    return tuple((rs.tag, rs.event_id, rs.onmatch, rs.relation, tuple(rs.filters),
                  tuple(rs.aggregates.items()))
                 for rs in config.rule_sets)


def look_key(path: str, st: os.stat_result, version: str) -> str:
    """The first-look key (hex SHA-256) of a file read from ``path`` (as given) whose
    ``os.fstat`` is ``st``: the path as given and absolute, ``st_dev``, ``st_ino``,
    ``st_size``, ``st_mtime_ns`` and ``version`` (the SysmonX version; module docstring: the
    key decides only whether the content keys are computed)."""
    return hashlib.sha256(repr(("sysmonx-first-look", 1, version, path,
                                os.path.abspath(path), st.st_dev, st.st_ino, st.st_size,
                                st.st_mtime_ns)).encode("utf-8", "surrogatepass")).hexdigest()


def first_look(directory: Path, key: str, bound: int) -> tuple[bool, str, list[str]]:
    """Whether the first-look ``key`` was seen before in ``directory``: ``(True, "seen", [])``
    when its marker exists (the marker's time is refreshed, to the minute, for the least
    recently used order); else the marker is created (``0600``, not through a link, in a
    directory created ``0700`` and private to this user), at most ``bound`` markers are kept
    (the oldest removed) and the result is ``(False, "noted", [])``, or
    ``(False, "unwritable", [why])`` when the marker cannot be written. Never raises."""
    marker = os.path.join(directory, key + MARKER_SUFFIX)
    try:
        st = os.lstat(marker)
    except OSError:
        st = None
    if st is not None and stat.S_ISREG(st.st_mode):
        if st.st_mtime < time.time() - 60:
            try:
                os.utime(marker)
            except OSError:
                pass
        return True, "seen", []
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        why = private_dir_problem(Path(directory), os.geteuid())
        if why is not None:
            return False, "unwritable", [f"config cache not used: {why}"]
        create_marker(marker)
    except OSError as exc:
        return False, "unwritable", [f"config cache: cannot write {marker}: {exc}"]
    _trim_markers(directory, bound, keep=key + MARKER_SUFFIX)
    return False, "noted", []


def create_marker(path: "Union[str, Path]") -> None:
    """Create the empty private file ``path`` (mode 0600, never through a symbolic link); one
    that exists already is left as it is. Raises :class:`OSError` when it cannot be created
    (the callers turn that into their cache's note)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL |
                     getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        return
    os.close(fd)


def _trim_markers(directory: Path, bound: int, keep: str) -> None:
    """Keep at most ``bound`` markers in ``directory``, ``keep`` (a name) and the most recently
    used others."""
    try:
        with os.scandir(directory) as it:
            names = [e.name for e in it if e.name.endswith(MARKER_SUFFIX) and e.name != keep]
        if len(names) < bound:
            return
        aged = []
        for name in names:
            full = os.path.join(directory, name)
            try:
                aged.append((os.lstat(full).st_mtime, full))
            except OSError:
                pass
    except OSError:
        return
    aged.sort(reverse=True)
    for _, full in aged[max(0, bound - 1):]:
        try:
            os.unlink(full)
        except OSError:
            pass
