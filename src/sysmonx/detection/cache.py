"""A disk cache of compiled Sigma rule sets, so a start-up with thousands of rules is fast.

Loading the SigmaHQ bundle's 2,007 rule files (1,999 load) (YAML, pySigma's parse of every
detection and condition) and compiling them (:mod:`.matcher`, :mod:`.correlation`) takes a few
seconds of CPU. The result
depends only on the bytes of the rule files, their names (which load issues and alerts
report), the stage's options and the code that built it, so it is stored once and reused:

* **Key** (:func:`rules_key`): SHA-256 over the cache format, the SysmonX version, a
  fingerprint of every ``.py`` file of the installed ``sysmonx`` package (a changed compiler
  never reuses an old result, whatever the version says), the interpreter's ``cache_tag``,
  the versions of pySigma, google-re2, pyahocorasick, PyYAML and cloudpickle, the stage's
  options, and for every path given: its name as given and the bytes of every file the loader
  would read under it (folders walked as :func:`.rules.load_rules` walks them, a bundle as
  its raw bytes). Nothing is keyed on times or sizes alone.
* **Entry**: ``<dir>/<key>.pickle``: a magic line, the key, the SHA-256 of the payload, the
  payload (the freshly compiled :class:`~.stage.DetectionStage`, written by a cloudpickle-based
  pickler whose output plain :mod:`pickle` reads: the generated matcher functions as
  marshalled code objects with their module's name or ``eval`` namespace; compiled RE2
  patterns as their pattern and options, compiled again on load). What a run may never need
  is kept as bytes and built on first use: each detection rule's pySigma object
  (:class:`LazyRule`) and each event group's automata (their words, ``matcher._Scanners``), so
  a cached start-up with the SigmaHQ bundle's 2,007 rule files (1,999 load) costs ~0.1 s of
  CPU and an entry is ~8-9 MB.
* **Trust**: an entry is read only from a directory owned by the user running SysmonX that no
  other user can write (created ``0700``), from a regular file (not a link) owned by that user
  and writable by nobody else, with the right magic, key and payload digest. Reading an entry
  runs no code but SysmonX's and its libraries' (the payload names functions the installed
  packages define and generated matcher code), the same trust Python gives to its own
  ``__pycache__``: anyone who can write there as that user can already change the installed
  code. Any entry that fails a check, or cannot be read, is ignored (a ``note`` says why) and
  rebuilt; a cache that cannot be written only costs the start-up time.
* **Bound**: at most :data:`MAX_ENTRIES` entries and :data:`MAX_TOTAL_BYTES` together;
  the least recently used go first.

A miss hashes the inputs before and after loading and stores the result only when both
digests agree (rules edited during the load are not stored under either version).
"""

from __future__ import annotations

import builtins
import gc
import hashlib
import io
import marshal
import os
import pickle
import stat
import sys
import tempfile
import threading
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Union

from ..core.marshalstore import cache_dir, private_dir_problem

__all__ = ["RuleCache", "CacheResult", "rules_key", "default_cache_dir", "MAX_ENTRIES",
           "MAX_TOTAL_BYTES", "CACHE_FORMAT"]

#: Bumped when the entry layout changes.
CACHE_FORMAT = 2
_MAGIC = b"SYSMONX-SIGMA-CACHE %d\n" % CACHE_FORMAT
_LAZY_LOCK = threading.Lock()  # held only while a LazyRule is built on first use
#: Entries kept in one cache directory (least recently used removed beyond).
MAX_ENTRIES = 8
#: Bytes kept in one cache directory (least recently used removed beyond).
MAX_TOTAL_BYTES = 512 << 20
#: An entry larger than this is not read (that of the SigmaHQ bundle's 2,007 rule files
#: (1,999 load) is ~8-9 MB).
MAX_ENTRY_BYTES = 1 << 30
_DEPENDENCIES = ("pysigma", "google-re2", "pyahocorasick", "pyyaml", "cloudpickle")


def default_cache_dir() -> Path:
    """``$SYSMONX_CACHE_DIR/sigma`` (beside the eBPF objects' ``$SYSMONX_CACHE_DIR/bpf``), else
    ``$XDG_CACHE_HOME/sysmonx/sigma``, else ``~/.cache/sysmonx/sigma``
    (:func:`~sysmonx.core.marshalstore.cache_dir`)."""
    return cache_dir("sigma")


_CODE_FINGERPRINT: Optional[bytes] = None


def _code_fingerprint() -> bytes:
    """SHA-256 over the relative path and bytes of every ``.py`` file of the ``sysmonx``
    package as installed (computed once per process, a few milliseconds)."""
    global _CODE_FINGERPRINT
    if _CODE_FINGERPRINT is None:
        root = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
        files: list = []
        for top, _dirs, names in os.walk(root):
            rel = os.path.relpath(top, root)
            files.extend(os.path.normpath(os.path.join(rel, n)) for n in names
                         if n.endswith(".py"))
        h = hashlib.sha256()
        for name in sorted(files, key=lambda n: n.split(os.sep)):  # as Path objects sort
            h.update(name.encode() + b"\0")
            with open(os.path.join(root, name), "rb") as f:
                h.update(f.read())
            h.update(b"\0")
        _CODE_FINGERPRINT = h.digest()
    return _CODE_FINGERPRINT


def _dist_versions(names: Iterable[str]) -> dict:
    """``{name: version}`` of the installed distributions ``names`` found as
    ``<name>-<version>.dist-info`` folders on ``sys.path`` (the first one in path order, as
    :mod:`importlib.metadata` finds them; names compared normalised, PEP 503). Importing
    :mod:`importlib.metadata` alone costs ~15 ms of a ~0.1 s cached start-up; a name not
    found this way is absent from the result (the caller asks :mod:`importlib.metadata`)."""
    want = {n.lower().replace("-", "_").replace(".", "_"): n for n in names}
    out: dict = {}
    for d in sys.path:
        try:
            entries = os.listdir(d or ".")
        except OSError:
            continue
        for e in entries:
            if not e.endswith(".dist-info"):
                continue
            dist, _, version = e[:-len(".dist-info")].partition("-")
            name = want.get(dist.lower().replace("-", "_").replace(".", "_"))
            if name is not None and name not in out and version:
                out[name] = version
        if len(out) == len(want):
            break
    return out


def _versions() -> str:
    from ..version import __version__
    out = [f"sysmonx={__version__}", f"python={sys.implementation.cache_tag}"]
    found = _dist_versions(_DEPENDENCIES)
    for name in _DEPENDENCIES:
        version = found.get(name)
        if version is None:
            from importlib import metadata
            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                version = "-"
        out.append(f"{name}={version}")
    return ";".join(out)


def _hash_file(h: Any, path: Path) -> None:
    try:
        if not path.is_file():  # the loader skips (and reports) FIFOs, sockets, devices
            h.update(b"not-a-file\0")
            return
        with open(path, "rb") as f:
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                h.update(chunk)
    except OSError as exc:
        h.update(f"unreadable:{exc.errno}".encode())
    h.update(b"\0")


def rules_key(paths: Iterable[Union[str, Path]], options: Any = None) -> str:
    """The cache key (64 hex digits) of rules loaded from ``paths`` with ``options``.

    Args:
        paths: what :func:`~.rules.load_rules` is given (files, folders, bundles), in order.
        options: the stage's options; their ``repr`` is part of the key.
    Raises:
        FileNotFoundError: a path that does not exist (as the loader would).
    """
    from .rules import BUNDLE_SUFFIXES, RULE_EXTENSIONS
    h = hashlib.sha256()
    h.update(_MAGIC + _versions().encode() + b"\0" + _code_fingerprint())
    h.update(repr(options).encode() + b"\0")
    for p in paths:
        path = Path(p)
        h.update(b"path\0" + os.fsencode(str(p)) + b"\0")
        if path.is_dir():
            for sub in sorted(path.rglob("*")):
                if sub.name.lower().endswith(RULE_EXTENSIONS + BUNDLE_SUFFIXES) \
                        and not sub.is_dir():
                    h.update(os.fsencode(str(sub)) + b"\0")
                    _hash_file(h, sub)
        elif path.exists():
            _hash_file(h, path)
        else:
            raise FileNotFoundError(f"no such rule file or folder: {p}")
    return h.hexdigest()


# -- serialisation ---------------------------------------------------------------------------

def _recompile(pattern: str, case_sensitive: bool, dot_nl: bool, max_mem: int) -> Any:
    from ..core.regex import compile_pattern
    return compile_pattern(pattern, case_sensitive=case_sensitive, dot_nl=dot_nl,
                           max_mem=max_mem)


def _rule_without_detection(cls: Any, state: dict) -> Any:
    """A pySigma rule rebuilt from ``state`` (its ``detection`` left out: see _Pickler)."""
    rule = cls.__new__(cls)
    rule.__dict__.update(state)
    return rule


class LazyRule:
    """A pySigma rule of a cached stage, kept as its serialised bytes until first used.

    A compiled stage copies what alerts need (id, title, level, status, tags) into its
    :class:`~.matcher.CompiledRule`; the pySigma rule is read only for reports (the rule's
    file in ``--profile-rules``), by correlations, and by code that inspects rules. Rebuilding
    the 1,999 that load of the SigmaHQ bundle's 2,007 rule files (dates, enums, paths, tags)
    was a third of a cached start-up, so a cached
    stage holds this stand-in instead: the first attribute read (or ``isinstance``) builds
    the rule from the entry's bytes (the same trusted entry, see the module docstring) and
    forwards to it from then on. Its identity is stable (one stand-in per rule, shared by
    every reference in the entry), so tables keyed by ``id()`` of rules stay valid.

    Args:
        blob: the rule as :func:`dumps` stored it.
    """

    __slots__ = ("_blob", "_rule")

    def __init__(self, blob: bytes) -> None:
        object.__setattr__(self, "_blob", blob)
        object.__setattr__(self, "_rule", None)

    def _load(self) -> Any:
        rule = object.__getattribute__(self, "_rule")
        if rule is None:
            with _LAZY_LOCK:  # first use from two threads builds one rule, not two
                rule = object.__getattribute__(self, "_rule")
                if rule is None:
                    rule = loads(object.__getattribute__(self, "_blob"))
                    object.__setattr__(self, "_rule", rule)
                    object.__setattr__(self, "_blob", b"")
        return rule

    @property  # type: ignore[misc]  # isinstance() and type checks see the rule's class
    def __class__(self) -> type:
        return type(self._load())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._load(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._load(), name, value)

    def __repr__(self) -> str:
        return repr(self._load())

    def __reduce__(self) -> tuple:
        rule = object.__getattribute__(self, "_rule")
        if rule is None:
            return LazyRule, (object.__getattribute__(self, "_blob"),)
        return _identity, (rule,)


def _identity(obj: Any) -> Any:
    return obj


_UNBOUND: Any = object()
#: Types of the interpreter only :mod:`types` names (``types.MethodType`` is ``method`` of
#: ``builtins``, which pickle cannot find by that name).
_TYPES = {v.__name__: v for k, v in vars(types).items()
          if isinstance(v, type) and v.__module__ == "builtins"
          and not hasattr(builtins, v.__name__)}


def _types_attr(name: str) -> type:
    for v in vars(types).values():
        if isinstance(v, type) and v.__name__ == name:
            return v
    raise AttributeError(f"module types has no type named {name!r}")


def _function(code: types.CodeType, globals_: Union[str, dict], name: str,
              nfree: int) -> types.FunctionType:
    """A function of ``code`` whose globals are the module ``globals_`` names (imported as
    pickle imports the classes it names) or the given dict; closure cells empty until
    :func:`_fill_function` (so a closure may refer back to its function)."""
    if isinstance(globals_, str):
        module = sys.modules.get(globals_)
        if module is None:
            import importlib
            module = importlib.import_module(globals_)
        globals_ = vars(module)
    closure = tuple(types.CellType() for _ in range(nfree)) or None
    return types.FunctionType(code, globals_, name, None, closure)


def _fill_function(fn: types.FunctionType, state: tuple) -> types.FunctionType:
    defaults, kwdefaults, cells, attrs, qualname, module = state
    fn.__defaults__ = defaults
    fn.__kwdefaults__ = kwdefaults
    fn.__qualname__ = qualname
    fn.__module__ = module
    if attrs:
        fn.__dict__.update(attrs)
    if cells:
        for cell, value in zip(fn.__closure__ or (), cells, strict=True):
            if value is not _UNBOUND:
                cell.cell_contents = value
    return fn


def _names(code: types.CodeType, out: set) -> set:
    out.update(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            _names(c, out)
    return out


def _reduce_function(fn: types.FunctionType) -> Any:
    """A generated function (a rule's ``evaluate``, a closure of the compiler) as its code
    (marshal, shared between functions of one code), its globals (the module's name, or the
    names it reads of a ``eval`` namespace) and its closure values: about half the load time
    of the generic way. ``NotImplemented`` for a function pickle can name (module-level)."""
    module = fn.__module__
    mod = sys.modules.get(module) if module else None
    if mod is not None and "<" not in fn.__qualname__ \
            and getattr(mod, fn.__qualname__, None) is fn:
        return NotImplemented
    g = fn.__globals__
    if mod is not None and vars(mod) is g:
        globals_: Union[str, dict] = module
    else:
        globals_ = {n: g[n] for n in sorted(_names(fn.__code__, set())) if n in g
                    and n != "__builtins__"}
    cells: Optional[tuple] = None
    if fn.__closure__:
        values = []
        for cell in fn.__closure__:
            try:
                values.append(cell.cell_contents)
            except ValueError:
                values.append(_UNBOUND)
        cells = tuple(values)
    code = fn.__code__
    state = (fn.__defaults__, fn.__kwdefaults__, cells, dict(fn.__dict__) or None,
             fn.__qualname__, module)
    return (_function, (code, globals_, fn.__name__, len(code.co_freevars)), state, None, None,
            _fill_function)


def _pickler_class() -> type:
    import cloudpickle
    import re2
    from sigma.rule import SigmaRule

    class _Pickler(cloudpickle.Pickler):
        """cloudpickle with four additions: an RE2 pattern is stored as its pattern and
        options; a function carrying a ``recipe`` (``(factory, args)``, e.g.
        :func:`sysmonx.core.regex.searcher`'s) is stored as that call; a method of a C object
        (an automaton's ``iter``) as the object and the method's name; a pySigma detection
        rule without its ``detection`` tree (``None`` when loaded): a compiled stage keeps
        its rules for their metadata (id, title, level, tags, the references of
        correlations) and never reads the tree again, which is a third of the entry and of
        its load time. A detection rule no correlation refers to is stored apart, as a
        :class:`LazyRule` (``lazy_rules``)."""

        lazy_rules = True

        def reducer_override(self, obj: Any) -> Any:
            t = type(obj)
            if t is LazyRule:
                return obj.__reduce__()
            if isinstance(obj, SigmaRule) and "detection" in obj.__dict__:
                state = dict(obj.__dict__, detection=None)
                if self.lazy_rules and not state.get("_backreferences"):
                    # stored apart, built on first use (LazyRule); a rule correlations
                    # refer to is stored in place (its back references are shared objects)
                    buf = io.BytesIO()
                    inner = _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
                    inner.lazy_rules = False
                    inner.dump(obj)
                    return LazyRule, (buf.getvalue(),)
                return _rule_without_detection, (t, state)
            if t is re2._Regexp:
                o = obj.options
                return _recompile, (obj.pattern, o.case_sensitive, o.dot_nl, o.max_mem)
            if t is types.FunctionType:
                if "recipe" in obj.__dict__:
                    return obj.recipe
                reduced = _reduce_function(obj)
                if reduced is not NotImplemented:
                    return reduced
            if t is type and _TYPES.get(getattr(obj, "__name__", "")) is obj:  # types.MethodType ...
                return _types_attr, (getattr(obj, "__name__", ""),)
            if t is types.CodeType:
                return marshal.loads, (marshal.dumps(obj),)
            if t is types.BuiltinMethodType and not isinstance(obj.__self__, types.ModuleType):
                return getattr, (obj.__self__, obj.__name__)
            return super().reducer_override(obj)

    return _Pickler


def dumps(obj: Any) -> bytes:
    """``obj`` serialised for the cache.

    Raises:
        pickle.PicklingError, TypeError: something in ``obj`` cannot be stored.
    """
    buf = io.BytesIO()
    _pickler_class()(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buf.getvalue()


def loads(data: Union[bytes, memoryview], expect: type = object, freeze: bool = False) -> Any:
    """The object :func:`dumps` stored, built with the garbage collector paused (hundreds of
    thousands of objects, none of them garbage).

    Args:
        data: a payload of :func:`dumps`.
        expect: the type the object must have.
        freeze: once the object is built and is an ``expect``, move every object that exists
            to the collector's permanent generation (:func:`gc.freeze`) before the collector
            runs again. Paused, the collector still counts the allocations; the first one
            after it is resumed would otherwise start a collection that walks every object
            just built (~20-30 ms for the SigmaHQ bundle's stage) and frees none, right
            before a caller that freezes them anyway (``DetectionOptions.freeze_gc``).
    Raises:
        ValueError: the object is not an ``expect`` (nothing is frozen then).
        Exception: whatever :func:`pickle.loads` raises for a damaged payload.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        obj = pickle.loads(data)
        if not isinstance(obj, expect):
            raise ValueError(f"holds a {type(obj).__name__}, not a {expect.__name__}")
        if freeze:
            gc.freeze()
        return obj
    finally:
        if enabled:
            gc.enable()


# -- the directory ---------------------------------------------------------------------------

@dataclass
class CacheResult:
    """What a :meth:`RuleCache.get` or :meth:`RuleCache.put` did.

    Attributes:
        status: ``hit``, ``miss``, ``stored``, ``ignored`` (an entry failed a check) or
            ``unwritable``.
        path: the entry's path.
        notes: reasons, for a person (why an entry was ignored or could not be written).
    """

    status: str
    path: Optional[Path] = None
    notes: list = field(default_factory=list)


class RuleCache:
    """Compiled rule sets stored under ``directory`` (default :func:`default_cache_dir`).

    Args:
        directory: the cache directory; created ``0700`` when missing.
    """

    def __init__(self, directory: Union[str, Path, None] = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    def entry(self, key: str) -> Path:
        """The entry path of ``key``."""
        return self.directory / f"{key}.pickle"

    def get(self, key: str, expect: type = object,
            freeze: bool = False) -> tuple[Any, CacheResult]:
        """``(object, result)``: the stored object of ``key`` (``None`` on a miss or when the
        entry was ignored; ``result.notes`` says why), which must be an ``expect``; with
        ``freeze``, every object that exists is moved to the collector's permanent generation
        as it is loaded (:func:`loads`). Never raises for a bad entry."""
        path = self.entry(key)
        euid = os.geteuid()
        why = private_dir_problem(self.directory, euid)
        if why is not None:
            if not self.directory.exists():
                return None, CacheResult("miss", path)
            return None, CacheResult("ignored", path, [f"rule cache not used: {why}"])
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return None, CacheResult("miss", path)
        except OSError as exc:
            return None, CacheResult("ignored", path, [f"rule cache entry {path}: {exc}"])
        try:
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode) or st.st_uid != euid or st.st_mode & 0o022:
                    raise ValueError("not a regular file owned by this user and writable by no one else")
                if st.st_size > MAX_ENTRY_BYTES:
                    raise ValueError(f"larger than {MAX_ENTRY_BYTES} bytes")
                data = f.read()
            head = len(_MAGIC)
            if data[:head] != _MAGIC:
                raise ValueError("not a rule cache entry of this format")
            if data[head:head + 64] != key.encode():
                raise ValueError("entry of another key")
            digest = data[head + 64:head + 96]
            payload = memoryview(data)[head + 96:]
            if hashlib.sha256(payload).digest() != digest:
                raise ValueError("damaged (payload digest differs)")
            obj = loads(payload, expect, freeze)
        except Exception as exc:  # noqa: BLE001 - any failure means: rebuild
            self._remove(path)
            return None, CacheResult("ignored", path, [f"rule cache entry {path} ignored and "
                                                       f"rebuilt: {exc}"])
        try:
            if st.st_mtime < time.time() - 60:  # least recently used order (to the minute)
                os.utime(path)
        except OSError:
            pass
        return obj, CacheResult("hit", path)

    def put(self, key: str, obj: Any) -> CacheResult:
        """Store ``obj`` under ``key`` (atomically: a temporary file renamed). Never raises;
        the result says what happened."""
        path = self.entry(key)
        try:
            payload = dumps(obj)
        except Exception as exc:  # noqa: BLE001 - a rule set that cannot be stored: no cache
            return CacheResult("unwritable", path, [f"rule cache: cannot store: {exc}"])
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            why = private_dir_problem(self.directory, os.geteuid())
            if why is not None:
                return CacheResult("unwritable", path, [f"rule cache not used: {why}"])
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".pickle")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(_MAGIC + key.encode() + hashlib.sha256(payload).digest())
                    f.write(payload)
                os.replace(tmp, path)
            except BaseException:
                self._remove(Path(tmp))
                raise
        except OSError as exc:
            return CacheResult("unwritable", path, [f"rule cache: cannot write {path}: {exc}"])
        self._trim(keep=path)
        return CacheResult("stored", path)

    def _trim(self, keep: Path) -> None:
        try:
            entries = [(p.stat().st_mtime, p.stat().st_size, p)
                       for p in self.directory.glob("*.pickle") if p != keep]
        except OSError:
            return
        entries.sort(reverse=True)
        total = keep.stat().st_size if keep.exists() else 0
        for n, (_, size, p) in enumerate(entries, start=1):
            total += size
            if n >= MAX_ENTRIES or total > MAX_TOTAL_BYTES:
                self._remove(p)

    @staticmethod
    def _remove(path: Path) -> None:
        try:
            path.unlink()
        except OSError:
            pass


def cached(paths: list, options: Any, build: Callable[[], Any],
           cache: Optional[RuleCache], expect: type = object,
           freeze: bool = False,
           store_if: Optional[Callable[[Any], bool]] = None) -> tuple[Any, list]:
    """``(object, notes)``: the object built by ``build()`` for rules at ``paths``, from
    ``cache`` when it holds one (an ``expect``; with ``freeze``, frozen as it is loaded:
    :meth:`RuleCache.get`), else built and stored (see the module docstring) unless
    ``store_if(object)`` is false (nothing worth keeping: no rule loaded).

    Raises:
        FileNotFoundError: a path that does not exist.
    """
    if cache is None:
        return build(), []
    key = rules_key(paths, options)
    obj, res = cache.get(key, expect, freeze)
    if obj is not None:
        return obj, res.notes
    notes = list(res.notes)
    obj = build()
    if store_if is not None and not store_if(obj):
        return obj, notes
    if rules_key(paths, options) == key:
        notes += [n for n in cache.put(key, obj).notes if n not in notes]  # said once
    else:
        notes.append("rule cache: rule files changed while loading; not stored")
    return obj, notes
