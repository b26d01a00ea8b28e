"""``sysmonx config stats``: what a config decides over recorded logs, rule set by rule set and
filter by filter.

For every Sysmon event the replay reads (same readers, duplicate removal, clock check and gate
as ``sysmonx replay``):

1. the decision and RuleName come from the compiled
   :class:`~sysmonx.filtering.engine.FilterEngine`, exactly as the replay's filter stage gets
   them (so the per-EventID kept/dropped totals equal a replay's summary);
2. which rule set and which filters decided comes from the independent walk of
   :func:`sysmonx.filtering.explain.explain` (spec/sysmon-semantics.md 3.2-3.7), memoised on the
   values of the fields the tag's rule sets test (an event's decision depends on nothing else).
   The walk's decision is compared with the engine's for every event; disagreements are counted
   in ``cross_check.mismatches`` (with the first few events) and are a defect;
3. included events feed bounded counters of their ``Image``, ``TargetFilename`` and
   ``TargetObject`` values (the noisiest are candidates for exclusions).

Attribution: the *deciding* filters of an event are the matches that made its deciding rule set
match: in an OR set the first filter that matched, or the matching members of the first
``<Rule>`` group that matched; in an AND set every filter that matched. A filter *matched* an
event when Sysmon's walk evaluated it and it matched (filters after a decided set or after the
first match of an OR set are not evaluated, as in Sysmon): a filter that never matched is dead
weight or shadowed over these logs. Events of a tag with no rule set, or that no rule set
matched, are decided by the default (spec 3.3, 3.7) and counted in ``defaults``.

The JSON form (:meth:`ConfigStats.to_dict`, ``"format": "sysmonx-config-stats/1"``) is
documented in docs/WORKBENCH.md.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, NamedTuple, Optional, Sequence

from ..configmodel import Config, Filter
from ..core.registry import STAGES
from ..event import SYSMON_PROVIDERS, Event
from ..filtering.engine import EngineOptions, FilterEngine
from ..filtering.explain import Explanation, GroupStep, RuleSetTrace, explain
from ..interfaces import Emit, Stage
from ..schema import CURRENT
from .common import BoundedCounter, FilterIndex

__all__ = ["NOISY_FIELDS", "Attribution", "ConfigStats", "ConfigStatsStage", "deciding_filters",
           "matched_filters", "STATS_FORMAT"]

#: Fields whose most frequent values among included events are reported.
NOISY_FIELDS = ("Image", "TargetFilename", "TargetObject")
#: The ``format`` value of the JSON form.
STATS_FORMAT = "sysmonx-config-stats/1"


class Attribution(NamedTuple):
    """One event's decision as the explain walk saw it.

    Attributes:
        include: the decision.
        rule_name: the RuleName Sysmon writes (``-`` when none).
        rule_set: position of the deciding rule set in the config, ``-1`` for the default.
        deciding: positions of the deciding filters (see module docstring).
        matched: positions of every filter the walk evaluated and found matching.
    """

    include: bool
    rule_name: Optional[str]
    rule_set: int
    deciding: tuple[int, ...]
    matched: tuple[int, ...]


def deciding_filters(trace: RuleSetTrace) -> list[Filter]:
    """The filters whose matches made the rule set of ``trace`` match (module docstring):
    OR set: the first matching filter, or the matching members of the first matching
    ``<Rule>``; AND set: every filter that matched. ``[]`` when the set did not match."""
    if not trace.matched:
        return []
    is_and = trace.rule_set.relation == "and"
    out: list[Filter] = []
    for s in trace.steps:
        if isinstance(s, GroupStep):
            if s.matched:
                out.extend(m.filter for m in s.steps if m.matched)
                if not is_and:
                    return out
        elif s.matched:
            out.append(s.filter)
            if not is_and:
                return out
    return out


def matched_filters(expl: Explanation) -> list[Filter]:
    """Every filter the walk of ``expl`` evaluated and found matching, in walk order (group
    members included, whether or not their group matched)."""
    out: list[Filter] = []
    for t in expl.sets:
        for s in t.steps:
            if isinstance(s, GroupStep):
                out.extend(m.filter for m in s.steps if m.matched)
            elif s.matched:
                out.append(s.filter)
    return out


class ConfigStats:
    """Counters of one config over a stream of Sysmon events.

    Args:
        config: the loaded config.
        options: engine choices (the same as the replay being compared).
        engine: an already compiled engine for ``config`` (compiled here when omitted).
        noisy_fields: fields whose values among included events are counted.
        memo_limit: distinct field-value combinations whose attribution is kept, and
            ``memo_chars`` the characters of their values together (beyond either, events are
            explained one by one: same result, more time; memory stays bounded).
        distinct_limit: distinct values kept per noisy field (:class:`BoundedCounter`).
    Attributes:
        included, excluded: per EventID, the engine's decisions.
        unfiltered: per EventID, events Sysmon never filters (4, 16, 255, unknown ids),
            counted as included.
        set_decided: per rule set position, events it decided.
        filter_decided: per filter position, events it was a deciding match for.
        filter_matched: per filter position, events it matched when evaluated.
        default_included, default_excluded: per EventID, events decided by no rule set.
        tag_events: per tag, events of that tag evaluated.
        explained: events explained by the walk (cache misses); ``mismatches``: events where
            the walk and the engine disagree (with ``mismatch_examples``).
        replay_mismatches: after :meth:`compare_replay`, the EventIDs whose kept/dropped
            totals differ from the replay's own filter's (``[{"event_id", "workbench",
            "replay"}]``, each side ``{"included", "excluded"}``); ``None`` before.
    """

    def __init__(self, config: Config, options: Optional[EngineOptions] = None, *,
                 engine: Optional[FilterEngine] = None,
                 noisy_fields: Sequence[str] = NOISY_FIELDS, memo_limit: int = 200_000,
                 memo_chars: int = 64 << 20, distinct_limit: int = 100_000) -> None:
        self.config = config
        self.options = options if options is not None else EngineOptions()
        self.engine = engine if engine is not None else FilterEngine(config, self.options)
        self.index = FilterIndex(config)
        self.noisy_fields = tuple(noisy_fields)
        self.memo_limit = memo_limit
        self.memo_chars = memo_chars
        self._memo_used = 0
        self.included: Counter[int] = Counter()
        self.excluded: Counter[int] = Counter()
        self.unfiltered: Counter[int] = Counter()
        self.set_decided: Counter[int] = Counter()
        self.filter_decided: Counter[int] = Counter()
        self.filter_matched: Counter[int] = Counter()
        self.default_included: Counter[int] = Counter()
        self.default_excluded: Counter[int] = Counter()
        self.tag_events: Counter[str] = Counter()
        self.noisy = {f: BoundedCounter(distinct_limit) for f in self.noisy_fields}
        self.explained = 0
        self.mismatches = 0
        self.mismatch_examples: list[dict[str, Any]] = []
        self.replay_mismatches: Optional[list[dict[str, Any]]] = None
        self._memo: dict[tuple, Attribution] = {}
        self._deciders: dict[int, Callable[[dict], tuple[bool, Optional[str]]]] = {}
        self._keys: dict[int, tuple[str, ...]] = {}
        used: dict[str, set[str]] = {}
        for rs in config.rule_sets:
            used.setdefault(rs.tag, set()).update(f.field for f in rs.filters)
        self._used = {tag: tuple(sorted(v - {"RuleName"})) for tag, v in used.items()}

    def attribute(self, event_id: int, data: dict) -> Attribution:
        """The explain walk's view of one event (memoised; see :class:`Attribution`)."""
        fields = self._keys.get(event_id)
        if fields is None:
            ev = CURRENT.events.get(event_id)
            fields = self._used.get(ev.tag, ()) if ev is not None and ev.tag else ()
            self._keys[event_id] = fields
        values = tuple(data.get(f) for f in fields)
        key = (event_id, values)
        att = self._memo.get(key)
        if att is not None:
            return att
        expl = explain(self.config, event_id, data, self.options)
        self.explained += 1
        pos = self.index.filter_pos
        if expl.decided_by is not None:
            att = Attribution(expl.include, expl.rule_name,
                              self.index.set_pos(expl.decided_by.rule_set),
                              tuple(pos(f) for f in deciding_filters(expl.decided_by)),
                              tuple(pos(f) for f in matched_filters(expl)))
        else:
            att = Attribution(expl.include, expl.rule_name, -1, (),
                              tuple(pos(f) for f in matched_filters(expl)))
        size = sum(len(v) for v in values if v)
        if len(self._memo) < self.memo_limit and self._memo_used + size <= self.memo_chars:
            self._memo[key] = att
            self._memo_used += size
        return att

    def observe(self, event: Event) -> None:
        """Count one Sysmon event."""
        eid, data = event.event_id, event.data
        decide = self._deciders.get(eid)
        if decide is None:
            decide = self._deciders[eid] = self.engine.decider_for(eid)
        include, name = decide(data)
        if name is None:  # never filtered (4, 16, 255) or not a Sysmon event id
            self.included[eid] += 1
            self.unfiltered[eid] += 1
            self._noise(data)
            return
        ev = CURRENT.events[eid]
        self.tag_events[ev.tag or ""] += 1
        att = self.attribute(eid, data)
        if (att.include, att.rule_name) != (include, name):
            self.mismatches += 1
            if len(self.mismatch_examples) < 5:
                self.mismatch_examples.append({
                    "event_id": eid, "record_id": event.record_id, "engine": [include, name],
                    "explain": [att.include, att.rule_name]})
        if include:
            self.included[eid] += 1
            self._noise(data)
        else:
            self.excluded[eid] += 1
        if att.rule_set < 0:
            (self.default_included if include else self.default_excluded)[eid] += 1
        else:
            self.set_decided[att.rule_set] += 1
        for i in att.deciding:
            self.filter_decided[i] += 1
        for i in att.matched:
            self.filter_matched[i] += 1

    def compare_replay(self, included: dict, excluded: dict) -> list[dict[str, Any]]:
        """Compare the per-EventID decisions counted here with those of the replay that fed
        this object (``included``/``excluded``: EventID -> events, the replay filter's own
        counters for the same config, :func:`~sysmonx.workbench.common.replay_through`). A
        difference means the workbench did not decide as the replay did (other field values,
        another engine): it is stored in :attr:`replay_mismatches` and returned."""
        out = []
        for e in sorted(set(self.included) | set(self.excluded) | set(included)
                        | set(excluded)):
            mine = {"included": self.included[e], "excluded": self.excluded[e]}
            theirs = {"included": included.get(e, 0), "excluded": excluded.get(e, 0)}
            if mine != theirs:
                out.append({"event_id": e, "workbench": mine, "replay": theirs})
        self.replay_mismatches = out
        return out

    def _noise(self, data: dict) -> None:
        for f, counter in self.noisy.items():
            v = data.get(f)
            if v and v != "-":
                counter.add(v)

    # -- results -------------------------------------------------------------------------------

    def filter_rows(self) -> list[dict[str, Any]]:
        """Every filter in document order: its description
        (:meth:`~.common.FilterIndex.describe_filter`) with ``decided`` (events it was a deciding
        match for), ``included``/``excluded`` (the same events by direction), ``matched`` and
        ``events_of_type`` (events of its tag evaluated)."""
        rows = []
        for i in range(len(self.index.filters)):
            d = self.index.describe_filter(i)
            n = self.filter_decided[i]
            inc = d["onmatch"] == "include"
            d.update(decided=n, included=n if inc else 0, excluded=0 if inc else n,
                     matched=self.filter_matched[i], events_of_type=self.tag_events[d["tag"]])
            rows.append(d)
        return rows

    def rule_set_rows(self) -> list[dict[str, Any]]:
        """Every rule set in document order with ``decided``, ``included``, ``excluded``."""
        rows = []
        for i in range(len(self.index.rule_sets)):
            d = self.index.describe_set(i)
            n = self.set_decided[i]
            inc = d["onmatch"] == "include"
            d.update(decided=n, included=n if inc else 0, excluded=0 if inc else n,
                     events_of_type=self.tag_events[d["tag"]])
            rows.append(d)
        return rows

    def to_dict(self, top: int = 20, inputs: Sequence[str] = (),
                replay: Any = None) -> dict[str, Any]:
        """The stable JSON form (docs/WORKBENCH.md): ``format``, ``config``, ``inputs``,
        ``read`` (replay counters), ``events`` (EventID string -> ``{"included", "excluded"}``),
        ``defaults`` (same shape: decided by no rule set), ``rule_sets``, ``filters``,
        ``never_matched``, ``noisy`` (field -> top ``top`` ``{"value", "count"}`` plus
        ``other``) and ``cross_check``."""
        events = {str(e): {"included": self.included[e], "excluded": self.excluded[e]}
                  for e in sorted(set(self.included) | set(self.excluded))}
        defaults = {str(e): {"included": self.default_included[e],
                             "excluded": self.default_excluded[e]}
                    for e in sorted(set(self.default_included) | set(self.default_excluded))}
        filters = self.filter_rows()
        read = None
        if replay is not None:
            read = {"files": replay.files, "records": replay.records, "sysmon": replay.sysmon,
                    "errors": replay.errors, "duplicates": replay.duplicates,
                    "sigma_alerts": replay.sigma_alerts}
        return {
            "format": STATS_FORMAT,
            "config": {"file": self.config.path, "sha256": self.config.sha256,
                       "schema": self.config.schema_version_text,
                       "rule_sets": len(self.index.rule_sets),
                       "filters": len(self.index.filters)},
            "inputs": list(inputs),
            "read": read,
            "events": events,
            "defaults": defaults,
            "rule_sets": self.rule_set_rows(),
            "filters": filters,
            "never_matched": [f for f in filters if f["matched"] == 0],
            "noisy": {f: {"top": _case_folded(c, top), "other": c.other}
                      for f, c in self.noisy.items()},
            "cross_check": {"explained": self.explained, "mismatches": self.mismatches,
                            "examples": self.mismatch_examples,
                            "replay_mismatches": self.replay_mismatches},
        }


def _case_folded(counter: Any, top: int) -> list[dict[str, Any]]:
    """The ``top`` most frequent values of ``counter`` with values that differ only in case
    counted as one (Sysmon's conditions ignore case, so one exclusion covers them all):
    ``[{"value": the most frequent spelling, "count": all spellings together, "spellings": n}]``
    (``spellings`` only when more than one), most frequent first, ties in first-seen order."""
    groups: dict[str, list] = {}
    for value, n in counter.counts.items():
        g = groups.get(value.lower())
        if g is None:
            groups[value.lower()] = [value, n, n, 1]   # spelling, its count, total, spellings
        else:
            g[2] += n
            g[3] += 1
            if n > g[1]:
                g[0], g[1] = value, n
    ranked = sorted(groups.values(), key=lambda g: -g[2])[:top]
    return [{"value": g[0], "count": g[2], **({"spellings": g[3]} if g[3] > 1 else {})}
            for g in ranked]


@STAGES.register
class ConfigStatsStage(Stage):
    """Counts what a config decides (:class:`ConfigStats`) for every Sysmon event passing by;
    keeps every item. Put it where the filter would be (the workbench runs it on an unfiltered
    replay); it needs a config, so ``--stage`` cannot add it.

    Args:
        stats: the :class:`ConfigStats` to feed.
    """

    name = "config-stats"
    summary = "workbench: per rule set and filter, the events a config decides (config stats)"

    def __init__(self, stats: ConfigStats) -> None:
        self.stats = stats

    def process(self, item: Any, emit: Emit) -> bool:
        """Count ``item`` when it is a Sysmon event; always keep it."""
        if item.__class__ is Event and item.provider in SYSMON_PROVIDERS:
            self.stats.observe(item)
        return True


def _event_label(eid: int) -> str:
    ev = CURRENT.events.get(eid)
    return ev.tag or ev.template if ev is not None else "(not a Sysmon event ID)"


def format_text(d: dict[str, Any], top: int = 20) -> str:
    """The JSON form ``d`` (:meth:`ConfigStats.to_dict`) as the text report: kept and dropped
    per EventID, the ``top`` filters that decided most events, the noisiest values among
    included events, and the filters that never matched. Event and config values are made
    display-safe (no terminal control characters)."""
    from ..filtering.explain import display_safe as safe

    from .common import quoted
    n, f = d['config']['rule_sets'], d['config']['filters']
    out = [f"Config: {d['config']['file']} (schema {d['config']['schema']}, "
           f"{n:,} rule set{'' if n == 1 else 's'}, {f:,} filter{'' if f == 1 else 's'})"]
    if d.get("read"):
        r = d["read"]
        out.append(f"Read: {r['files']} files, {r['records']} records, {r['sysmon']} Sysmon "
                   f"events, {r['errors']} errors, {r['duplicates']} duplicates dropped"
                   + (f", {r['sigma_alerts']} SysmonX alerts (event 1000, SigmaAlert: never "
                      "filtered by a config, not in the table)" if r.get("sigma_alerts") else ""))
    out.append("")
    out.append(f"{'':>7}  {'':<30} {'':>8} {'':>8} {'':>8} {'kept by':>8} {'dropped by':>10}")
    out.append(f"{'EventID':>7}  {'Event':<30} {'read':>8} {'kept':>8} {'dropped':>8} "
               f"{'default':>8} {'default':>10}")
    tot_i = tot_e = tot_di = tot_de = 0
    for eid, c in d["events"].items():
        dflt = d["defaults"].get(eid, {"included": 0, "excluded": 0})
        tot_i += c["included"]
        tot_e += c["excluded"]
        tot_di += dflt["included"]
        tot_de += dflt["excluded"]
        out.append(f"{eid:>7}  {_event_label(int(eid)):<30} {c['included'] + c['excluded']:>8} "
                   f"{c['included']:>8} {c['excluded']:>8} "
                   f"{dflt['included']:>8} {dflt['excluded']:>10}")
    out.append(f"{'':>7}  {'total':<30} {tot_i + tot_e:>8} {tot_i:>8} {tot_e:>8} "
               f"{tot_di:>8} {tot_de:>10}")
    out.append("(kept/dropped by default: decided by no rule set, Sysmon's default for the "
               "tag or the fallback; included in kept/dropped)")
    busy = sorted((f for f in d["filters"] if f["decided"]), key=lambda f: -f["decided"])[:top]
    out.append("")
    out.append(f"Filters that decided most events (top {top}; lines of {d['config']['file']}):")
    for f in busy:
        name = f" name={quoted(f['rule_name'])}" if f["rule_name"] else ""
        out.append(safe(f"  {f['decided']:>7} {'kept' if f['onmatch'] == 'include' else 'dropped'}"
                        f"  line {f['line']} {f['tag']} onmatch={f['onmatch']} "
                        f"{f['field']} {f['condition']} {quoted(f['value'])}{name}"))
    for field, noisy in d["noisy"].items():
        if not noisy["top"]:
            continue
        out.append("")
        out.append(f"Most frequent {field} among kept events (exclusion candidates):")
        for item in noisy["top"][:top]:
            also = (f"  (and {item['spellings'] - 1} other spelling"
                    f"{'s' if item['spellings'] > 2 else ''} differing in case)"
                    if item.get("spellings") else "")
            out.append(safe(f"  {item['count']:>7}  {item['value']}{also}"))
    nm = d["never_matched"]
    out.append("")
    out.append(f"Filters that never matched: {len(nm)} of {len(d['filters'])} "
               f"({sum(1 for f in nm if f['events_of_type'] == 0)} of them on event types "
               "absent from these logs)")
    for f in nm[:top]:
        out.append(safe(f"  line {f['line']} {f['tag']} onmatch={f['onmatch']} "
                        f"{f['field']} {f['condition']} {quoted(f['value'])} "
                        f"({f['events_of_type']} events of the type)"))
    if len(nm) > top:
        out.append(f"  ... {len(nm) - top} more (--format json lists all)")
    cc = d["cross_check"]
    out.append("")
    out.append(f"Cross-check: {cc['explained']} distinct decisions explained, "
               f"{cc['mismatches']} disagreements between the engine and the explain walk")
    rm = cc.get("replay_mismatches")
    if rm is not None:
        out.append(f"Cross-check with the replay's own filter: {len(rm)} EventIDs whose "
                   "kept/dropped totals differ")
        for m in rm:
            w, r = m["workbench"], m["replay"]
            out.append(f"  EventID {m['event_id']}: here kept {w['included']} dropped "
                       f"{w['excluded']}, replay kept {r['included']} dropped {r['excluded']}")
    return "\n".join(out) + "\n"


#: Columns of the CSV form: one row per filter.
CSV_COLUMNS = ("file", "line", "event_id", "tag", "onmatch", "rule_name", "field", "condition",
               "value", "decided", "included", "excluded", "matched", "events_of_type")


def write_csv(d: dict[str, Any], stream: Any) -> None:
    """The filters of ``d`` as CSV (:data:`CSV_COLUMNS`, RFC 4180, formula-neutralised cells)
    on the text ``stream``."""
    import csv

    from ..sinks.csv_timeline import neutralise
    w = csv.writer(stream, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)
    for f in d["filters"]:
        w.writerow([neutralise("" if f[c] is None else str(f[c])) for c in CSV_COLUMNS])


KEPT, DROPPED = "#2e7d32", "#c62828"


def report_sections(d: dict[str, Any], top: int = 20) -> list[dict[str, Any]]:
    """The HTML report of the JSON form ``d`` (:mod:`.html` section kinds): kept vs dropped per
    EventID, the filters that kept and dropped most events, the noisiest values among kept
    events, the techniques of the RuleNames that kept events (heat map) and the never-matching
    filters."""
    from .common import techniques_in
    ids = list(d["events"])
    sections: list[dict[str, Any]] = [{
        "kind": "bars", "title": "Events per EventID: kept vs dropped", "stacked": True,
        "note": "Sysmon's decision for every event read, as sysmonx replay makes it.",
        "labels": [f"{e} {_event_label(int(e))}" for e in ids],
        "series": [{"name": "kept", "color": KEPT,
                    "values": [d["events"][e]["included"] for e in ids]},
                   {"name": "dropped", "color": DROPPED,
                    "values": [d["events"][e]["excluded"] for e in ids]}]}]

    def label(f: dict) -> str:
        named = ",".join(techniques_in(f["rule_name"])) or f["rule_name"]
        return (f"line {f['line']} {f['field']} {f['condition']} {f['value']}"
                + (f" [{named}]" if named else ""))
    for onmatch, what, color in (("include", "kept", KEPT), ("exclude", "dropped", DROPPED)):
        busy = sorted((f for f in d["filters"] if f["decided"] and f["onmatch"] == onmatch),
                      key=lambda f: -f["decided"])[:top]
        sections.append({
            "kind": "bars", "title": f"Noisiest rules: filters that {what} most events",
            "note": "Deciding matches per filter (config line, field, condition, value "
                    "[RuleName's techniques, or the RuleName]).", "clip": "head",
            "labels": [label(f) for f in busy],
            "series": [{"name": f"events {what}", "color": color,
                        "values": [f["decided"] for f in busy]}]})
    for field, noisy in d["noisy"].items():
        sections.append({
            "kind": "bars", "title": f"Noisiest {field} values among kept events",
            "note": "Candidates for exclusions" + (f" ({noisy['other']} more events had values "
                                                   "beyond the counting bound)"
                                                   if noisy["other"] else "."),
            "labels": [t["value"] for t in noisy["top"][:top]],
            "series": [{"name": "events kept", "color": "#1565c0",
                        "values": [t["count"] for t in noisy["top"][:top]]}]})
    techniques: Counter[str] = Counter()
    for f in d["filters"]:
        if f["onmatch"] == "include" and f["decided"]:
            for t in techniques_in(f["rule_name"]):
                techniques[t] += f["decided"]
    sections.append({
        "kind": "heatmap", "title": "ATT&CK techniques of the RuleNames that kept events",
        "note": "Events kept by filters whose RuleName names the technique.",
        "cells": [{"id": t, "score": n, "tip": f"{n} events kept"}
                  for t, n in sorted(techniques.items())],
        "legend": "White: none; darker: more events."})
    nm = d["never_matched"]
    sections.append({
        "kind": "table", "title": f"Filters that never matched ({len(nm)} of {len(d['filters'])})",
        "note": "Never matched when Sysmon's walk evaluated them over these logs.",
        "columns": ["line", "tag", "onmatch", "field", "condition", "value", "RuleName",
                    "events of the type"],
        "rows": [[f["line"] or "", f["tag"], f["onmatch"], f["field"], f["condition"],
                  f["value"], f["rule_name"], f["events_of_type"]] for f in nm]})
    return sections
