"""``sysmonx config diff A B LOGS...``: what two configs log differently over the same logs.

Every Sysmon event the replay reads (same readers, duplicate removal, clock check and gate as
``sysmonx replay``) is decided by both configs' compiled engines
(:class:`~sysmonx.filtering.engine.FilterEngine`), exactly as two replays would decide it. Per
EventID it is counted as kept by both, only by A, only by B or by neither; events both keep
under different RuleNames are counted as ``renamed``. For each event only one config keeps, the
deciding rule set and filters of both configs come from the explain walk
(:meth:`~sysmonx.workbench.stats.ConfigStats.attribute`, memoised), aggregated into ``reasons``
(which pair of decisions made the difference, most frequent first) and, for up to
``examples`` events per side and EventID, shown with the event.

The JSON form (``"format": "sysmonx-config-diff/1"``) is documented in docs/WORKBENCH.md.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Optional, Sequence

from ..configmodel import Config
from ..core.registry import STAGES
from ..event import SYSMON_PROVIDERS, Event
from ..filtering.engine import EngineOptions
from ..interfaces import Emit, Stage
from ..schema import CURRENT
from .common import quoted
from .stats import Attribution, ConfigStats

__all__ = ["ConfigDiff", "ConfigDiffStage", "DIFF_FORMAT", "format_text", "report_sections"]

DIFF_FORMAT = "sysmonx-config-diff/1"
#: Event fields shown in examples before the others (the rest follow in event order).
_FIRST = ("Image", "CommandLine", "TargetFilename", "TargetObject", "ImageLoaded",
          "DestinationIp", "QueryName", "SourceImage", "TargetImage", "PipeName")
#: Longest value shown in an example (longer values are cut and end with ``...``).
VALUE_LIMIT = 300
_KINDS = ("both", "only_a", "only_b", "neither", "renamed")


class ConfigDiff:
    """Counters of two configs' decisions over one stream of Sysmon events.

    Args:
        a, b: the two loaded configs.
        options: engine choices for both.
        examples: events kept per side and EventID as examples (default 5).
    Attributes:
        counts: per EventID, a :class:`collections.Counter` of ``both``, ``only_a``, ``only_b``,
            ``neither``, ``renamed``.
        reasons: per side (``only_a``/``only_b``), Counter of ``(A's decision, B's decision)``
            descriptions.
        examples: per side, EventID -> list of example dicts.
    """

    def __init__(self, a: Config, b: Config, options: Optional[EngineOptions] = None, *,
                 examples: int = 5) -> None:
        self.a, self.b = ConfigStats(a, options), ConfigStats(b, options)
        self.max_examples = examples
        self.counts: dict[int, Counter[str]] = {}
        self.reasons: dict[str, Counter[tuple[str, str]]] = {"only_a": Counter(),
                                                             "only_b": Counter()}
        self.examples: dict[str, dict[int, list[dict[str, Any]]]] = {"only_a": {}, "only_b": {}}
        self._da: dict = {}
        self._db: dict = {}
        #: after :meth:`compare_replay`: EventIDs where A's totals differ from the replay's
        self.replay_mismatches: Optional[list[dict[str, Any]]] = None

    def observe(self, event: Event) -> None:
        """Decide one Sysmon event with both configs and count it."""
        eid, data = event.event_id, event.data
        da = self._da.get(eid) or self._da.setdefault(eid, self.a.engine.decider_for(eid))
        db = self._db.get(eid) or self._db.setdefault(eid, self.b.engine.decider_for(eid))
        ia, na = da(data)
        ib, nb = db(data)
        c = self.counts.get(eid)
        if c is None:
            c = self.counts[eid] = Counter()
        if ia and ib:
            c["both"] += 1
            if na != nb:
                c["renamed"] += 1
            return
        if not ia and not ib:
            c["neither"] += 1
            return
        side = "only_a" if ia else "only_b"
        c[side] += 1
        if na is None or nb is None:  # cannot happen: unfiltered events are kept by both
            return
        att_a, att_b = self.a.attribute(eid, data), self.b.attribute(eid, data)
        why_a, why_b = _why(self.a, att_a), _why(self.b, att_b)
        self.reasons[side][(why_a, why_b)] += 1
        ex = self.examples[side].setdefault(eid, [])
        if len(ex) < self.max_examples:
            ex.append({"event": _event_dict(event),
                       "a": _decision(self.a, att_a), "b": _decision(self.b, att_b)})

    def compare_replay(self, included: dict, excluded: dict) -> list[dict[str, Any]]:
        """Compare A's kept (``both`` + ``only_a``) and dropped (``only_b`` + ``neither``)
        per EventID with the counters of the replay's own filter run with config A
        (:func:`~sysmonx.workbench.common.replay_through`); stores and returns the EventIDs
        that differ, ``[{"event_id", "workbench", "replay"}]``."""
        out = []
        for e in sorted(set(self.counts) | set(included) | set(excluded)):
            c = self.counts.get(e, Counter())
            mine = {"included": c["both"] + c["only_a"], "excluded": c["only_b"] + c["neither"]}
            theirs = {"included": included.get(e, 0), "excluded": excluded.get(e, 0)}
            if mine != theirs:
                out.append({"event_id": e, "workbench": mine, "replay": theirs})
        self.replay_mismatches = out
        return out

    def to_dict(self, inputs: Sequence[str] = (), replay: Any = None,
                top: int = 20) -> dict[str, Any]:
        """The stable JSON form (docs/WORKBENCH.md): ``format``, ``a``, ``b``, ``inputs``,
        ``read``, ``events`` (EventID string -> the five counts), ``only_a`` and ``only_b``
        (EventID string -> count, EventIDs with a difference only), ``reasons`` (per side, the
        ``top`` most frequent ``{"a", "b", "count"}``), ``reasons_other`` (per side, the events
        of the reasons beyond ``top``) and ``examples`` (per side, EventID
        string -> list of ``{"event", "a", "b"}``)."""
        ids = sorted(self.counts)
        read = None
        if replay is not None:
            read = {"files": replay.files, "records": replay.records, "sysmon": replay.sysmon,
                    "errors": replay.errors, "duplicates": replay.duplicates}
        return {
            "format": DIFF_FORMAT,
            "a": _config_ref(self.a.config), "b": _config_ref(self.b.config),
            "inputs": list(inputs), "read": read,
            "events": {str(e): {k: self.counts[e][k] for k in _KINDS} for e in ids},
            "only_a": {str(e): self.counts[e]["only_a"] for e in ids if self.counts[e]["only_a"]},
            "only_b": {str(e): self.counts[e]["only_b"] for e in ids if self.counts[e]["only_b"]},
            "reasons": {side: [{"a": a, "b": b, "count": n} for (a, b), n in r.most_common(top)]
                        for side, r in self.reasons.items()},
            "reasons_other": {side: sum(n for _, n in r.most_common()[top:])
                              for side, r in self.reasons.items()},
            "examples": {side: {str(e): v for e, v in sorted(ex.items())}
                         for side, ex in self.examples.items()},
            "cross_check": {"mismatches": self.a.mismatches + self.b.mismatches,
                            "replay_mismatches": self.replay_mismatches},
        }


def _config_ref(cfg: Config) -> dict[str, Any]:
    return {"file": cfg.path, "sha256": cfg.sha256, "schema": cfg.schema_version_text}


def _cut(v: str) -> str:
    return v if len(v) <= VALUE_LIMIT else v[:VALUE_LIMIT - 3] + "..."


def _event_dict(event: Event) -> dict[str, Any]:
    data = event.data
    fields = {k: _cut(data[k]) for k in _FIRST if k in data}
    for k, v in data.items():
        if k not in fields and k != "RuleName" and len(fields) < 12:
            fields[k] = _cut(v)
    origin = event.origin
    return {"event_id": event.event_id, "record_id": event.record_id,
            "time": event.time_created, "computer": event.computer,
            "source": f"{origin[0]}:{origin[1]}" if origin else None, "fields": fields}


def _why(stats: ConfigStats, att: Attribution) -> str:
    if att.rule_set < 0:
        return ("default: kept" if att.include else "default: dropped") + \
            " (no rule set matched)"
    rs = stats.index.describe_set(att.rule_set)
    parts = []
    for i in att.deciding[:3]:
        f = stats.index.describe_filter(i)
        parts.append(f"line {f['line']} {f['field']} {f['condition']} {quoted(f['value'])}")
    return (f"{rs['tag']} onmatch={rs['onmatch']} (line {rs['line']}): " + "; ".join(parts))


def _decision(stats: ConfigStats, att: Attribution) -> dict[str, Any]:
    return {"decision": "include" if att.include else "exclude", "rule_name": att.rule_name,
            "rule_set": None if att.rule_set < 0 else stats.index.describe_set(att.rule_set),
            "filters": [stats.index.describe_filter(i) for i in att.deciding]}


@STAGES.register
class ConfigDiffStage(Stage):
    """Feeds every Sysmon event to a :class:`ConfigDiff`; keeps every item. It needs two
    configs, so ``--stage`` cannot add it.

    Args:
        diff: the :class:`ConfigDiff` to feed.
    """

    name = "config-diff"
    summary = "workbench: what two configs log differently (config diff)"

    def __init__(self, diff: ConfigDiff) -> None:
        self.diff = diff

    def process(self, item: Any, emit: Emit) -> bool:
        """Count ``item`` when it is a Sysmon event; always keep it."""
        if item.__class__ is Event and item.provider in SYSMON_PROVIDERS:
            self.diff.observe(item)
        return True


def _label(eid: str) -> str:
    ev = CURRENT.events.get(int(eid))
    return f"{eid} {ev.tag or ev.template}" if ev is not None else eid


def format_text(d: dict[str, Any]) -> str:
    """The JSON form ``d`` as the text report: counts per EventID, the most frequent reasons,
    then the examples (display-safe)."""
    from ..filtering.explain import display_safe as safe
    out = [f"A: {d['a']['file']}", f"B: {d['b']['file']}", ""]
    out.append(f"{'EventID':<32} {'both':>8} {'only A':>8} {'only B':>8} {'neither':>8} "
               f"{'renamed':>8}")
    tot: Counter[str] = Counter()
    for eid, c in d["events"].items():
        tot.update(c)
        out.append(f"{_label(eid):<32} " + " ".join(f"{c[k]:>8}" for k in _KINDS))
    out.append(f"{'total':<32} " + " ".join(f"{tot[k]:>8}" for k in _KINDS))
    for side, name in (("only_a", "A"), ("only_b", "B")):
        if not d["reasons"][side]:
            continue
        out.append("")
        out.append(f"Kept only by {name}: why (most frequent first)")
        for r in d["reasons"][side]:
            out.append(safe(f"  {r['count']:>7}  A: {r['a']}"))
            out.append(safe(f"           B: {r['b']}"))
        for eid, exs in d["examples"][side].items():
            out.append(f"  examples, event {_label(eid)}:")
            for ex in exs:
                ev = ex["event"]
                fields = ", ".join(f"{k}={v}" for k, v in list(ev["fields"].items())[:3])
                out.append(safe(f"    record {ev['record_id']} {ev['time']}: {fields}"))
    return "\n".join(out) + "\n"


def report_sections(d: dict[str, Any]) -> list[dict[str, Any]]:
    """The HTML report of the JSON form ``d`` (:mod:`.html` section kinds)."""
    ids = list(d["events"])
    differ = [e for e in ids if d["events"][e]["only_a"] or d["events"][e]["only_b"]]
    sections: list[dict[str, Any]] = [{
        "kind": "bars", "title": "Events only one config keeps, per EventID",
        "note": "A = " + d["a"]["file"] + "; B = " + d["b"]["file"] + ". EventIDs where both "
                "decide alike are left out.",
        "labels": [_label(e) for e in differ],
        "series": [{"name": "only A keeps", "color": "#1565c0",
                    "values": [d["events"][e]["only_a"] for e in differ]},
                   {"name": "only B keeps", "color": "#ef6c00",
                    "values": [d["events"][e]["only_b"] for e in differ]}]},
        {"kind": "bars", "title": "Events both keep, and both drop", "stacked": True,
         "labels": [_label(e) for e in ids],
         "series": [{"name": "both keep", "color": "#2e7d32",
                     "values": [d["events"][e]["both"] for e in ids]},
                    {"name": "both drop", "color": "#9e9e9e",
                     "values": [d["events"][e]["neither"] for e in ids]}]}]
    for side, name in (("only_a", "A"), ("only_b", "B")):
        sections.append({
            "kind": "table", "title": f"Why only {name} keeps them",
            "columns": ["events", "A decided by", "B decided by"],
            "rows": [[r["count"], r["a"], r["b"]] for r in d["reasons"][side]]})
        rows = []
        for eid, exs in d["examples"][side].items():
            for ex in exs:
                ev = ex["event"]
                rows.append([eid, str(ev["record_id"]), ev["time"],
                             "; ".join(f"{k}={v}" for k, v in list(ev["fields"].items())[:4]),
                             ex["a"]["rule_name"] or "-", ex["b"]["rule_name"] or "-"])
        sections.append({"kind": "table", "title": f"Examples kept only by {name}",
                         "columns": ["EventID", "record", "time", "fields", "RuleName in A",
                                     "RuleName in B"], "rows": rows})
    return sections
