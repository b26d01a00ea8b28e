"""A disk cache of the filter's compiled plans, so a run does not index the same config again.

Compiling a decider (:mod:`~sysmonx.filtering.index`) turns an EventID's rule sets into a
*plan*: which items exist, which literal patterns gate each of them, in Sysmon's evaluation
order (:func:`~sysmonx.filtering.index.plan_indexed`). With sysmon-modular that is ~11 ms of
CPU for the EventIDs a small replay meets, every run. The plan is plain data and depends only on
the configuration's rule sets, the engine's options and the code that built it, so it is stored
once (:class:`PlanCache`) and the decider is built from it
(:func:`~sysmonx.filtering.index.decider_from_plan`: the automata from the stored patterns, each
item's predicate on its first evaluation), exactly as a fresh compile builds it from the same
plan.

* **Key** (:func:`plans_key`): SHA-256 over the entry format, the SysmonX version, the
  interpreter's ``cache_tag``, a fingerprint of the filter's code
  (:func:`~sysmonx.core.marshalstore.code_fingerprint`: the paths and bytes of the filter
  compiler's, the reader's, the schema's and the model's modules and the ``core`` modules they
  use), the engine options, and
  the rule sets themselves (tag, EventID, onmatch, relation, every filter's field, condition,
  value, RuleName and ``<Rule>``, every ``<Rule>``'s relation), marshalled. The key is the
  model, not the file: an edited or programmatically built config gets its own entry.
* **Entry**: ``<dir>/<key>.marshal`` (:mod:`sysmonx.core.marshalstore`: private directory and
  file, magic, key and payload digest checked; plain marshalled data, never code or pickle):
  ``{decider key: plan}`` for the deciders compiled so far; a run that compiles more rewrites
  it (:meth:`~sysmonx.filtering.engine.FilterEngine.save_plans`, at the end of a filter stage
  and after ``compile_all``).
* **Errors**: what compiling can refuse is checked when the engine is built, cached or not
  (:meth:`~sysmonx.filtering.engine.FilterEngine._check_compile`); a stored plan that does not
  fit (wrong shape, a reference outside the config) is ignored with a note and compiled again.
* **Where**: ``$SYSMONX_CACHE_DIR/filter``, else ``$XDG_CACHE_HOME/sysmonx/filter``, else
  ``~/.cache/sysmonx/filter``; at most :data:`MAX_ENTRIES` entries. ``SYSMONX_CONFIG_CACHE=0``
  turns it off (with the config cache).
"""

from __future__ import annotations

import hashlib
import marshal
import operator
from pathlib import Path
from typing import Any, Optional

from ..core.cachelook import ORIGIN, model_snapshot
from ..core.marshalstore import (CacheFront, cache_dir, code_fingerprint,
                                 config_caches_enabled)

__all__ = ["PlanCache", "plans_key", "default_plan_cache_dir", "plan_cache_enabled",
           "PLAN_CACHE_FORMAT", "MAX_ENTRIES"]

#: Bumped when the plan or entry layout changes.
PLAN_CACHE_FORMAT = 1
_MAGIC = b"SYSMONX-FILTER-PLANS %d\n" % PLAN_CACHE_FORMAT
#: Entries kept in one cache directory (least recently used removed beyond).
MAX_ENTRIES = 64


def default_plan_cache_dir() -> Path:
    """``$SYSMONX_CACHE_DIR/filter``, else ``$XDG_CACHE_HOME/sysmonx/filter``, else
    ``~/.cache/sysmonx/filter`` (:func:`~sysmonx.core.marshalstore.cache_dir`)."""
    return cache_dir("filter")


def plan_cache_enabled() -> bool:
    """False when ``$SYSMONX_CONFIG_CACHE`` is ``0``, ``off``, ``no`` or ``false``, or where
    entries cannot be kept private (no POSIX owners: Windows)."""
    return config_caches_enabled()


_VERSIONS: Optional[bytes] = None


def _fingerprint() -> bytes:
    """The filter's code (:func:`~sysmonx.core.marshalstore.code_fingerprint`) and the SysmonX
    version."""
    global _VERSIONS
    if _VERSIONS is None:
        from ..version import __version__
        _VERSIONS = code_fingerprint() + __version__.encode()
    return _VERSIONS


_FILTER_KEY = operator.attrgetter("field", "condition", "value", "name", "aggregate")


def plans_key(config: Any, options: Any) -> Optional[str]:
    """The entry key (hex SHA-256) of ``config``'s rule sets compiled with ``options``, or
    ``None`` when the model holds values marshal cannot write (a programmatic config).

    A config ``load_config`` loaded through the config cache carries its content key
    (:data:`~sysmonx.core.cachelook.ORIGIN`: the bytes, path, reader options and code it was
    read from, which determine the rule sets): while its rule sets are still those it loaded
    (:func:`~sysmonx.core.cachelook.model_snapshot`, compared by identity), the key is derived
    from that key instead of marshalling the rule sets (~0.4-1.1 ms for SwiftOnSecurity and
    sysmon-modular); a config changed after loading gets the key of its rule sets."""
    origin = getattr(config, ORIGIN, None)
    if origin is not None and origin[0] == "key" and model_snapshot(config) == origin[2]:
        h = hashlib.sha256(_MAGIC)
        h.update(_fingerprint())
        h.update(repr(options).encode("utf-8", "surrogatepass"))
        h.update(b"\0config\0")
        h.update(origin[1].encode())
        return h.hexdigest()
    model = tuple(
        (rs.tag, rs.event_id, rs.onmatch, rs.relation, tuple(map(_FILTER_KEY, rs.filters)),
         tuple(sorted((k, a.relation) for k, a in rs.aggregates.items())))
        for rs in config.rule_sets)
    try:
        data = marshal.dumps(model)
    except (ValueError, TypeError):
        return None
    h = hashlib.sha256(_MAGIC)
    h.update(_fingerprint())
    h.update(repr(options).encode("utf-8", "surrogatepass"))
    h.update(b"\0")
    h.update(data)
    return h.hexdigest()


def _check(value: Any) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"holds a {type(value).__name__}, not a dict of plans")
    return value


class PlanCache(CacheFront):
    """Stored plans under ``directory`` (default :func:`default_plan_cache_dir`). ``status``,
    ``notes``, ``entry`` and the arguments: :class:`~sysmonx.core.marshalstore.CacheFront`."""

    magic = _MAGIC
    what = "filter plan cache"

    def default_directory(self) -> Path:
        """:func:`default_plan_cache_dir`."""
        return default_plan_cache_dir()

    def max_entries(self) -> int:
        """:data:`MAX_ENTRIES`."""
        return MAX_ENTRIES

    def get(self, key: str) -> Optional[dict]:
        """``{decider key: plan}`` stored under ``key``, or ``None`` (a miss, or a bad entry:
        removed, :attr:`notes` says why). Never raises for a bad entry."""
        return self._store.read(key, _check)

    def put(self, key: str, plans: dict) -> None:
        """Store ``plans`` under ``key``. Never raises."""
        self._store.write(key, plans)
