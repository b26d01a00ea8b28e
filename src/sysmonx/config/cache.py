"""A disk cache of loaded Sysmon configurations, so a run does not parse the same XML again.

Reading and validating a large configuration (sysmon-modular's sysmonconfig.xml: 2,025
filters in 34 rule sets, 9-11 ms of CPU, most of it Python
over lxml's elements) gives a :class:`~sysmonx.configmodel.Config` that
depends only on the file's bytes, the path it was read from (``YaraRules`` is made relative to
the config's folder; ``Config.path`` and every warning name it), the reader's options and the
code that read it. So the result is stored once and reused:

* **Key** (:func:`config_key`): SHA-256 over the entry format, the SysmonX version, the
  interpreter's ``cache_tag``, lxml's and libxml2's versions, a fingerprint of the reader's
  code (:func:`~sysmonx.core.marshalstore.code_fingerprint`: the paths and bytes of the
  reader's, the filter compiler's, the schema's and the model's modules and the ``core``
  modules they use), the reader's options, the
  extension conditions registered without reading the installed distributions' entry points
  (what the reader starts with; reading them costs ~1.2 ms per process), the path as given
  and as an absolute path, and the configuration's bytes (exactly the bytes then parsed).
  A plugin's condition changes what loads only for a config that uses it, so a config read
  from an entry is used only when every condition it uses is accepted now (the entry points
  are read for that only when it uses a condition outside Sysmon's and the built-in ones);
  otherwise it is parsed again, and refused as without the cache.
* **Entry**: ``<dir>/<key>.marshal``: a magic line, the key, the SHA-256 of the payload, the
  payload: the :class:`Config` as nested tuples of strings, numbers and ``None``
  (:mod:`marshal` of plain data: no code, no pickle). Loading an entry builds the model objects
  again (the schema from its version, as the reader does).
* **Only what loaded**: a configuration the reader refuses raises its
  :class:`~sysmonx.core.errors.ConfigError` at every load, exactly as without the cache; an
  entry exists only for a configuration that loaded. What the filter engine refuses (a regex
  RE2 rejects, ...) is checked when the engine is built from the loaded model, cached or not.
* **Trust** (:mod:`sysmonx.core.marshalstore`): an entry is read only from a directory owned by
  the user running SysmonX that no other user can write (created ``0700``), from a regular file
  (not a link) owned by that user and writable by nobody else, with the right magic, key and
  payload digest, and a payload of the expected shape. Anything else is ignored with a note (for
  a person) and rebuilt; a cache that cannot be written only costs the load time.
* **Where**: ``$SYSMONX_CACHE_DIR/config``, else ``$XDG_CACHE_HOME/sysmonx/config``, else
  ``~/.cache/sysmonx/config`` (beside the Sigma rule cache's ``sigma``); at most
  :data:`MAX_ENTRIES` entries, the least recently used removed first. ``SYSMONX_CONFIG_CACHE=0``
  turns it off for :func:`~sysmonx.config.load_config`.
"""

from __future__ import annotations

import hashlib
import operator
import os
from pathlib import Path
from typing import Any, Optional

from ..configmodel import Aggregate, Config, ConfigWarning, Filter, RuleSet
from ..core.marshalstore import (CacheFront, cache_dir, code_fingerprint,
                                 config_caches_enabled)
from ..schema import extended, get_schema, sysmon_only

__all__ = ["ConfigCache", "config_key", "default_config_cache_dir", "CONFIG_CACHE_FORMAT",
           "MAX_ENTRIES", "cache_enabled", "to_plain", "from_plain"]

#: Bumped when the entry layout changes.
CONFIG_CACHE_FORMAT = 1
_MAGIC = b"SYSMONX-CONFIG-CACHE %d\n" % CONFIG_CACHE_FORMAT
#: Entries kept in one cache directory (least recently used removed beyond).
MAX_ENTRIES = 32


def default_config_cache_dir() -> Path:
    """``$SYSMONX_CACHE_DIR/config``, else ``$XDG_CACHE_HOME/sysmonx/config``, else
    ``~/.cache/sysmonx/config`` (:func:`~sysmonx.core.marshalstore.cache_dir`)."""
    return cache_dir("config")


def cache_enabled() -> bool:
    """False when ``$SYSMONX_CONFIG_CACHE`` is ``0``, ``off``, ``no`` or ``false``, or where
    entries cannot be kept private (no POSIX owners: Windows)."""
    return config_caches_enabled()


_VERSIONS: Optional[bytes] = None


def _fingerprint() -> bytes:
    """The reader's code (:func:`~sysmonx.core.marshalstore.code_fingerprint`) and lxml's and
    libxml2's versions."""
    global _VERSIONS
    if _VERSIONS is None:
        from lxml import etree

        from ..version import __version__
        _VERSIONS = code_fingerprint() + repr((__version__, etree.LXML_VERSION,
                                               etree.LIBXML_VERSION)).encode()
    return _VERSIONS


def config_key(raw: bytes, path: str, options: tuple) -> str:
    """The entry key (hex SHA-256) of configuration bytes ``raw`` read from ``path`` with the
    reader's ``options`` (a tuple of plain values: the flags and the extension conditions)."""
    h = hashlib.sha256(_MAGIC)
    h.update(_fingerprint())
    h.update(repr((path, os.path.abspath(path), options)).encode("utf-8", "surrogatepass"))
    h.update(b"\0")
    h.update(raw)
    return h.hexdigest()


_FILTER = ("field", "condition", "value", "name", "aggregate", "line", "scanners")
_FILTER_PLAIN = operator.attrgetter(*_FILTER)
_AGG = ("id", "relation", "name", "line", "scanners")


def to_plain(cfg: Config) -> tuple:
    """``cfg`` as nested tuples of strings, numbers and ``None`` (what an entry holds; the
    schema is kept as its version and whether it is the extended one)."""
    ext = cfg.schema is extended(get_schema(cfg.schema_version))
    return (
        cfg.path, cfg.sha256, tuple(cfg.schema_version), ext, cfg.schema.version,
        tuple(cfg.options.items()), tuple(cfg.hash_algorithms), tuple(cfg.field_sizes.items()),
        cfg.heartbeat_interval,
        tuple((rs.tag, rs.event_id, rs.onmatch, rs.relation,
               tuple(map(_FILTER_PLAIN, rs.filters)),
               tuple((k, a.id, a.relation, a.name, a.line, tuple(a.scanners))
                     for k, a in rs.aggregates.items()),
               rs.group_name, rs.line, tuple(rs.scanners)) for rs in cfg.rule_sets),
        tuple((w.message, w.path, w.line) for w in cfg.warnings),
    )


def _frozen(cls: type, names: tuple, values: tuple) -> Any:
    """An instance of the frozen dataclass ``cls`` with ``names`` set to ``values`` (what its
    generated ``__init__`` does, without the per-field ``object.__setattr__`` calls)."""
    obj: Any = object.__new__(cls)
    obj.__dict__.update(zip(names, values, strict=True))
    return obj


def _filters(plain: tuple) -> list:
    """The :class:`Filter` objects of a rule set's plain filters (:func:`to_plain`'s 7-tuples),
    as :func:`_frozen` makes them, in one loop (a large config has thousands): each 7-tuple
    unpacked into a dict display given to the object as its ``__dict__`` (sysmon-modular's
    2,025 filters: ~0.85 ms this way, ~1.8 ms through ``__dict__.update(zip(...))``). The
    instance dict is of the same kind as the reader's (filling the object's own ``__dict__``
    key by key instead made the compile that reads the filters ~5 % dearer).

    Raises:
        ValueError: a filter that is not a 7-tuple whose field and value are strings.
        TypeError: a filter that is not a sequence."""
    new, cls, set_dict = object.__new__, Filter, object.__setattr__
    out: list = []
    add = out.append
    try:
        for field, condition, value, name, aggregate, line, scanners in plain:
            if field.__class__ is not str or value.__class__ is not str:
                raise ValueError("bad filter")
            obj = new(cls)
            # the keys in _FILTER's order (the dataclass fields', as __init__ sets them)
            set_dict(obj, "__dict__", {"field": field, "condition": condition, "value": value,
                                       "name": name, "aggregate": aggregate, "line": line,
                                       "scanners": scanners})
            add(obj)
    except ValueError:
        raise ValueError("bad filter") from None  # also a tuple of another length
    return out


def from_plain(data: tuple) -> Config:
    """The :class:`Config` :func:`to_plain` gave ``data`` for.

    Raises:
        ValueError, TypeError: ``data`` is not of that shape (a damaged or foreign entry)."""
    (path, sha256, version, ext, schema_version, options, hashes, sizes, heartbeat,
     sets, warnings) = data
    version = tuple(version)
    if len(version) != 2 or not all(isinstance(x, int) for x in version):
        raise ValueError("bad schema version")
    base = get_schema(version)
    schema = extended(base) if ext else sysmon_only(base)
    if schema.version != schema_version:
        raise ValueError("schema version differs")
    cfg = Config(str(path), str(sha256), version, schema, dict(options), list(hashes),
                 dict(sizes), heartbeat)
    rule_sets = cfg.rule_sets
    for tag, eid, onmatch, relation, filters, aggs, group_name, line, scanners in sets:
        rule_sets.append(RuleSet(
            tag, eid, onmatch, relation, _filters(filters),
            {k: _frozen(Aggregate, _AGG, a) for k, *a in aggs}, group_name, line, scanners))
    cfg.warnings.extend(ConfigWarning(m, p, n) for m, p, n in warnings)
    return cfg


class ConfigCache(CacheFront):
    """Loaded configurations stored under ``directory`` (default
    :func:`default_config_cache_dir`); see the module docstring. ``status``, ``notes``,
    ``entry`` and the arguments: :class:`~sysmonx.core.marshalstore.CacheFront`."""

    magic = _MAGIC
    what = "config cache"

    def default_directory(self) -> Path:
        """:func:`default_config_cache_dir`."""
        return default_config_cache_dir()

    def max_entries(self) -> int:
        """:data:`MAX_ENTRIES`."""
        return MAX_ENTRIES

    def get(self, key: str) -> Optional[Config]:
        """The configuration stored under ``key``, or ``None`` (a miss, or an entry that failed
        a check: it is removed and :attr:`notes` says why). Never raises for a bad entry."""
        self._store.max_entries = MAX_ENTRIES
        return self._store.read(key, from_plain)

    def put(self, key: str, cfg: Config, admitted: bool = False) -> None:
        """Store ``cfg`` under ``key`` (a temporary file renamed); ``admitted``: now, even with
        ``admit_on_second_miss`` (``load_config`` decided by the file's first look that this
        is a second run). Never raises: :attr:`status` and :attr:`notes` say what
        happened."""
        self._store.max_entries = MAX_ENTRIES
        self._store.write(key, to_plain(cfg), admitted)

    @property
    def admit_on_second_miss(self) -> bool:
        """Whether a key is stored at its second write only (``load_config`` then decides by
        the config file's first look: :func:`~sysmonx.core.cachelook.first_look`)."""
        return self._store.admit_on_second_miss
