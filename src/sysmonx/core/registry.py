"""Registries of plugins: sources, stages, sinks, live backends and filter conditions.

Each kind of extension has one :class:`Registry`. A plugin registers itself once, where it is
defined, with the registry's decorator::

    from sysmonx.core.registry import SINKS

    @SINKS.register
    class NdjsonSink(Sink):
        name = "ndjson"
        summary = "one JSON object per line, newline-delimited"

The registry finds the built-in plugins by importing the modules of its ``builtin`` packages
(every module whose name does not start with ``_``), and third-party plugins through the Python
entry-point group ``sysmonx.<kind>`` (for example ``sysmonx.sinks``; the entry point's value is
the object to register, or a module that registers its objects when imported). Discovery happens
once, on the first lookup or listing, so importing :mod:`sysmonx` stays cheap (a lookup of a
built-in name imports the built-in modules only; the entry points are read for a listing or an
unknown name, and importlib.metadata is imported only when an installed distribution declares a
``sysmonx.*`` group: :func:`_may_have_plugins`); modules that cannot
be imported here (a missing optional library, another operating system) are listed with the reason
instead of failing the lookup of other names.

``sysmonx plugins`` prints every registry (:func:`all_registries`); the command line takes its
choices (``--format``, ``--input-format``, ``--backend``, ``--stage``) from them.

A registry is a plain mapping from a name to an object with a one-line ``summary`` (its
docstring's first line when it has no ``summary`` attribute). Registering a second object under a
taken name raises :class:`~sysmonx.core.errors.PluginError` (an identifier clash is a bug, never
silently resolved). Pattern from pySigma's ``autodiscover`` and dissect.target's plugin registry.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import threading
import types
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, Optional, TypeVar, overload

from .errors import PluginError

__all__ = ["Registry", "Entry", "SOURCES", "STAGES", "SINKS", "BACKENDS", "CONDITIONS", "SCANNERS",
           "all_registries", "ENTRY_POINT_PREFIX"]

T = TypeVar("T")
#: Entry-point groups are this prefix plus the registry kind (``sysmonx.sinks`` ...).
ENTRY_POINT_PREFIX = "sysmonx."


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered plugin.

    Attributes:
        name: the name users give (``--format jsonl``, ``condition="regex"``).
        obj: the registered class or object.
        summary: one line for listings.
        origin: the module that registered it (or ``entry point <dist>``).
    """

    name: str
    obj: T
    summary: str
    origin: str


def _summary_of(obj: Any) -> str:
    text = getattr(obj, "summary", None)
    if not text:
        doc = getattr(obj, "__doc__", None) or ""
        text = doc.strip().split("\n\n")[0].replace("\n", " ")
    return " ".join(str(text).split())



_EP_LOCK = threading.Lock()
_EP_GROUPS: Optional[dict[str, list[Any]]] = None
_METADATA_DIRS = (".dist-info", ".egg-info")


def _declares_sysmonx_group(text: str) -> bool:
    """Whether an ``entry_points.txt`` has a ``[sysmonx.*]`` section (its group headers are
    lines in brackets, as importlib.metadata reads them)."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]") and \
                line[1:-1].strip().startswith(ENTRY_POINT_PREFIX):
            return True
    return False


def _may_have_plugins() -> bool:
    """False only when it is certain that no installed distribution declares a ``sysmonx.*``
    entry point: the only distribution finder on ``sys.meta_path`` is the standard path finder,
    no ``sys.path`` entry is a zip file or an egg, and no ``entry_points.txt`` of a
    ``*.dist-info`` / ``*.egg-info`` folder in a ``sys.path`` folder has a ``[sysmonx.*]``
    section. These are the places importlib.metadata's path finder reads; anything else (a
    custom finder, an archive) answers True and the full scan decides. Costs about a
    millisecond, where importing importlib.metadata costs tens (it imports email, zipfile, csv
    ...), so a run without third-party plugins never imports it."""
    import sys
    from importlib.machinery import PathFinder
    for finder in sys.meta_path:
        if finder is not PathFinder and getattr(finder, "find_distributions", None) is not None:
            return True
    for entry in sys.path:
        base = entry or "."
        if not isinstance(base, str) or base.lower().endswith(".egg"):
            return True
        try:
            children = os.scandir(base)
        except NotADirectoryError:
            return True  # a zip archive on the path
        except OSError:
            continue  # missing or unreadable: importlib.metadata finds nothing there either
        with children:
            for child in children:
                if not child.name.lower().endswith(_METADATA_DIRS):
                    continue
                try:
                    with open(os.path.join(child.path, "entry_points.txt"),
                              encoding="utf-8", errors="replace") as f:
                        if _declares_sysmonx_group(f.read()):
                            return True
                except FileNotFoundError:
                    continue
                except OSError:
                    return True  # cannot tell: let the full scan decide
    return False


def _entry_points(group: str) -> list[Any]:
    """The entry points of ``group``. The installed distributions are read once per process for
    every ``sysmonx.*`` group (each scan costs milliseconds; five registries share one), and
    only when :func:`_may_have_plugins` finds a distribution that may declare one."""
    global _EP_GROUPS
    with _EP_LOCK:
        if _EP_GROUPS is None:
            if not _may_have_plugins():
                _EP_GROUPS = {}
            else:
                from importlib.metadata import entry_points
                found = entry_points()  # every group (3.11: SelectableGroups, later EntryPoints)
                _EP_GROUPS = {g: list(found.select(group=g)) for g in found.groups
                              if g.startswith(ENTRY_POINT_PREFIX)}
        return list(_EP_GROUPS.get(group, ()))


class Registry(Generic[T]):
    """Name -> plugin, filled where plugins are defined and by entry points.

    Args:
        kind: plural noun for listings and the entry-point group (``sinks``).
        builtin: dotted names of the packages (or modules) holding the built-in plugins.
        describe: what the kind is, one line (for ``sysmonx plugins``).
    """

    def __init__(self, kind: str, builtin: tuple[str, ...], describe: str) -> None:
        self.kind = kind
        self.builtin = builtin
        self.describe = describe
        self.group = ENTRY_POINT_PREFIX + kind
        self._entries: dict[str, Entry[T]] = {}
        self._broken: dict[str, str] = {}
        self._discovered = False
        self._builtin_done = False
        self._lock = threading.RLock()

    # -- registration --------------------------------------------------------------------------

    @overload
    def register(self, obj: T) -> T: ...

    @overload
    def register(self, obj: None = None, *, name: Optional[str] = None,
                 summary: Optional[str] = None) -> Callable[[T], T]: ...

    def register(self, obj: Optional[T] = None, *, name: Optional[str] = None,
                 summary: Optional[str] = None) -> Any:
        """Register ``obj`` under ``name`` (default: its ``name`` attribute). Usable as a bare
        decorator (``@REG.register``) or with arguments (``@REG.register(name="x")``).

        Raises:
            PluginError: no name, or the name is taken by another object.
        """
        def add(o: T) -> T:
            self.add(o, name=name, summary=summary)
            return o
        if obj is None:
            return add
        return add(obj)

    def add(self, obj: T, *, name: Optional[str] = None, summary: Optional[str] = None,
            origin: Optional[str] = None) -> Entry[T]:
        """Register ``obj`` (see :meth:`register`); returns its entry."""
        key = name or getattr(obj, "name", None)
        if not key or not isinstance(key, str):
            raise PluginError(f"{self.kind}: {obj!r} has no name to register under")
        entry = Entry(key, obj, summary or _summary_of(obj),
                      origin or str(getattr(obj, "__module__", "?")))
        with self._lock:
            old = self._entries.get(key)
            if old is not None and old.obj is not obj:
                raise PluginError(f"{self.kind}: {key!r} is registered twice ({old.origin} and "
                                  f"{entry.origin})")
            self._entries[key] = entry
        return entry

    def remove(self, name: str) -> None:
        """Forget ``name`` (tests that register temporary plugins use this)."""
        with self._lock:
            self._entries.pop(name, None)

    # -- discovery -----------------------------------------------------------------------------

    def discover(self) -> None:
        """Import the built-in plugin modules and load the entry points (once)."""
        if self._discovered:
            return
        with self._lock:
            if self._discovered:
                return
            self._discover_builtin()
            self._discovered = True
            self._load_entry_points()

    def _discover_builtin(self) -> None:
        """Import the built-in plugin modules (once): what :meth:`get` needs for a built-in
        name, without the entry points."""
        if self._builtin_done:
            return
        with self._lock:
            if self._builtin_done:
                return
            self._builtin_done = True
            for name in self.builtin:
                self._import_tree(name)

    def _import_tree(self, dotted: str) -> None:
        try:
            module = importlib.import_module(dotted)
        except Exception as exc:  # noqa: BLE001 - a broken plugin module must not hide the others
            self._broken[dotted] = f"{type(exc).__name__}: {exc}"
            return
        path = getattr(module, "__path__", None)
        if path is None:
            return
        for info in pkgutil.iter_modules(path):
            if not info.name.startswith("_"):
                self._import_tree(f"{dotted}.{info.name}")

    def _load_entry_points(self) -> None:
        for ep in _entry_points(self.group):
            try:
                obj = ep.load()
            except Exception as exc:  # noqa: BLE001 - report, keep the rest usable
                self._broken[f"entry point {ep.name}"] = f"{type(exc).__name__}: {exc}"
                continue
            if isinstance(obj, types.ModuleType):
                continue  # a module: it registered its objects when imported
            if ep.name not in self._entries:
                dist = getattr(ep, "dist", None)
                self.add(obj, name=ep.name,
                         origin=f"entry point {dist.name if dist is not None else ep.value}")

    # -- lookup --------------------------------------------------------------------------------

    def get(self, name: str) -> T:
        """The plugin registered as ``name``. A name the built-in modules register is found
        without reading the entry points; any other name loads them first (a built-in name
        wins over an entry point of the same name either way).

        Raises:
            PluginError: unknown name (the known ones are listed), or its module is broken.
        """
        entry = self._entries.get(name)
        if entry is None:
            self._discover_builtin()
            entry = self._entries.get(name)
        if entry is None:
            self.discover()
            entry = self._entries.get(name)
        if entry is None:
            known = ", ".join(self.names()) or "none"
            raise PluginError(f"unknown {self.kind[:-1]} {name!r}; known: {known}")
        return entry.obj

    def __contains__(self, name: object) -> bool:
        self.discover()
        return name in self._entries

    def names(self, where: Optional[Callable[[T], bool]] = None) -> list[str]:
        """Registered names in registration order (built-ins by module name), optionally only
        those whose object passes ``where``."""
        return [e.name for e in self.entries() if where is None or where(e.obj)]

    def entries(self) -> list[Entry[T]]:
        """Every entry, built-ins first."""
        self.discover()
        return list(self._entries.values())

    def has_other_plugins(self) -> bool:
        """Whether this registry may hold plugins beyond its built-in modules': an entry point
        of its group, or an object registered by a module outside SysmonX. Reads the entry
        points (once per process), imports no plugin module."""
        if _entry_points(self.group):
            return True
        with self._lock:
            return any(not str(getattr(e.obj, "__module__", "")).startswith("sysmonx.")
                       for e in self._entries.values())

    def registered(self, name: str) -> Optional[T]:
        """The plugin registered as ``name`` so far, or ``None``: no module is imported and
        no entry point read (for a caller that imported the module defining ``name``)."""
        entry = self._entries.get(name)
        return entry.obj if entry is not None else None

    def known_entries(self) -> list[Entry[T]]:
        """The entries registered without reading the entry points: the built-in modules' and
        any registered by code already imported (the entry points too once :meth:`discover`
        ran). For a caller that needs the entry points only when a name is not among these
        (the config reader's conditions): finding the installed distributions' entry points
        costs about 1.5 ms per process."""
        self._discover_builtin()
        return list(self._entries.values())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    @property
    def broken(self) -> dict[str, str]:
        """Plugin modules (or entry points) that could not be imported -> why."""
        self.discover()
        return dict(self._broken)


#: Sources of events: replay input formats (``--input-format``) and live collection.
SOURCES: Registry[Any] = Registry(
    "sources", ("sysmonx.sources", "sysmonx.sensor.live", "sysmonx.windows.sources"),
    "where events come from: recorded-log formats and live collection")
#: Pipeline stages (``--stage``; the built-in ones are wired by :mod:`sysmonx.pipeline`).
STAGES: Registry[Any] = Registry(
    "stages", ("sysmonx.stages", "sysmonx.filtering.stage", "sysmonx.detection.stages",
               "sysmonx.detection.readback", "sysmonx.workbench", "sysmonx.windows.stages",
               "sysmonx.windows.tamper", "sysmonx.scanners.stages"),
    "what happens to each event between source and outputs")
#: Outputs (``--format``, ``--syslog``, ``--alerts``, console mode).
SINKS: Registry[Any] = Registry(
    "sinks", ("sysmonx.sinks", "sysmonx.windows.evtoutput"), "where events and alerts go")
#: Live trace backends of the Linux sensor (``--backend``).
BACKENDS: Registry[Any] = Registry(
    "backends", ("sysmonx.sensor.backends",), "how the live sensor observes the kernel")
#: Filter conditions of Sysmon configs (``condition="..."``).
CONDITIONS: Registry[Any] = Registry(
    "conditions", ("sysmonx.filtering.conditions",),
    "Sysmon config filter operators (condition=\"...\")")

#: Process scanners (``scanners="NAME"`` in a config, ``sysmonx scan --scanners``).
SCANNERS: Registry[Any] = Registry(
    "scanners", ("sysmonx.scanners.builtin",),
    "what inspects a process to confirm or dismiss an event (finding: event 200)")


def all_registries() -> list[Registry[Any]]:
    """Every registry, in the order ``sysmonx plugins`` prints them."""
    return [SOURCES, STAGES, SINKS, BACKENDS, CONDITIONS, SCANNERS]
