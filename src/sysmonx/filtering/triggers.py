"""Which rules with a SysmonX ``scanners`` attribute included an event.

A config asks for scans the way the 2019 SysmonX design meant: ``scanners="NAME,NAME"`` (or
``all``) on an event tag, a ``<Rule>`` or a filter. When the filter has *included* an event,
:meth:`ScanTriggers.scanners_for` says which scanners its rules asked for:

* on the tag of an ``include`` set: the set matches the event;
* on the tag of an ``exclude`` set: always (an included event passed every exclude set, so this
  set let it through: ``<ProcessCreate onmatch="exclude" scanners="all"/>`` scans every process);
* on a filter or ``<Rule>`` of an include set (the parser refuses them in exclude sets): the set
  matches and that filter (that ``<Rule>`` group) matches.

When several include sets match, every one of them counts (the union of their scanners). The
evaluation is Sysmon's, as in :mod:`~sysmonx.filtering.engine` (the same folding, field
positions, ``-`` for empty values and walk), for the few sets that carry the attribute only; a
config without it costs nothing.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from ..configmodel import Config, RuleSet
from ..schema import CURRENT
from .conditions import fold
from .engine import EngineOptions, _SetCompiler
from .walk import compile_walk, match_group

__all__ = ["ScanTriggers"]

_Check = Callable[[dict], tuple]


class ScanTriggers:
    """The scan requests of a configuration, compiled per EventID.

    Args:
        config: the loaded configuration (``None``: nothing triggers).
        options: the filter's :class:`~sysmonx.filtering.engine.EngineOptions` (folding).
    Attributes:
        event_ids: the EventIDs some rule may trigger scans for.
    """

    def __init__(self, config: Optional[Config], options: Optional[EngineOptions] = None):
        self.options = options or EngineOptions()
        self._compiler = _SetCompiler(self.options)
        self._by_id: dict[int, list[tuple[tuple[str, ...], _Check]]] = {}
        for rs in (config.rule_sets if config is not None else ()):
            if not (rs.scanners or any(f.scanners for f in rs.filters)
                    or any(a.scanners for a in rs.aggregates.values())):
                continue
            for eid in CURRENT.tags.get(rs.tag, ()):
                self._by_id.setdefault(eid, []).append(self._compile(rs, eid))
        self.event_ids = frozenset(self._by_id)

    def _compile(self, rs: RuleSet, eid: int) -> tuple[tuple[str, ...], _Check]:
        present = self._compiler.present(rs, eid)
        fields = tuple(sorted({f.field for f in rs.filters}))
        walk = compile_walk(rs.relation, self._compiler.items(rs, present))
        parts: list[tuple[tuple[str, ...], Any]] = []
        seen_aggs: set[int] = set()
        for f in rs.filters:
            if f.aggregate:
                agg = rs.aggregates.get(f.aggregate)
                if agg is None or not agg.scanners or agg.id in seen_aggs:
                    continue
                seen_aggs.add(agg.id)
                members = tuple((g.field, self._compiler.member(g, present[g.field]).pred, None)
                                for g in rs.filters if g.aggregate == agg.id)
                parts.append((agg.scanners, ("g", agg.relation == "and", members)))
            if f.scanners:
                parts.append((f.scanners, ("f", f.field,
                                           self._compiler.member(f, present[f.field]).pred)))
        include = rs.onmatch == "include"
        set_scanners = rs.scanners

        def check(lv: dict) -> tuple:
            if not include:
                return set_scanners
            if not rs.filters or not walk(lv)[0]:
                return ()
            out = set_scanners
            for names, how in parts:
                if how[0] == "g":
                    ok = match_group(how[1], how[2], lv)[0]
                else:
                    ok = how[2] is not None and how[2](lv[how[1]])
                if ok:
                    out = out + names
            return out

        return fields, check

    def scanners_for(self, event_id: int, data: dict) -> tuple[str, ...]:
        """The scanner names the rules that included this event ask for (duplicates removed,
        in config order); ``()`` when none. Call only for events the filter included."""
        checks = self._by_id.get(event_id)
        if not checks:
            return ()
        out: list[str] = []
        for fields, check in checks:
            lv = {}
            for f in fields:
                v = data.get(f)
                lv[f] = (v.lower() if v.isascii() else fold(v)) if v else "-"
            if "RuleName" in lv:
                lv["RuleName"] = "-"
            for n in check(lv):
                if n not in out:
                    out.append(n)
        return tuple(out)
