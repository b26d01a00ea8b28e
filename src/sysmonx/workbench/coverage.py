"""``sysmonx coverage``: the ATT&CK techniques a config's RuleNames and a Sigma rule set name,
which of them fired over recorded logs, as text, JSON and an ATT&CK Navigator layer.

Sources of coverage:

* **config**: every filter of an ``onmatch="include"`` rule set whose RuleName (after
  inheritance from ``<Rule>`` and ``<RuleGroup>``, spec 3.6) names techniques
  (:func:`~.common.techniques_in`: ``technique_id=T1036,...`` as sysmon-modular writes them,
  ``T1089,Tamper-Defender`` as SwiftOnSecurity does, ``MitreRef=T1055``, ``attack.t1059``).
  Names on exclude sets describe what is dropped, not what is seen, and do not count.
* **Sigma**: every rule that compiled (rules the matcher rejects cannot fire and are only
  counted) with ``attack.tNNNN[.NNN]`` tags.

With logs, the logs are replayed as ``sysmonx replay --config CONFIG --rules SIGMA`` would:
a config technique *fired* when a kept event's RuleName (as the filter sets it) names it; a
Sigma technique fired when a rule tagged with it matched an event (Sigma runs on the events
the config keeps, as in the replay; without a config on every event).

The Navigator layer follows the ATT&CK Navigator layer format 4.5
(mitre-attack/attack-navigator ``layers/spec/v4.5/layerformat.md``): ``versions.layer`` "4.5",
``versions.navigator`` "5.1.0", domain ``enterprise-attack``, one technique object per
technique ID (no ``tactic``: the annotation shows under each tactic of the technique), its
``score`` the number of rules naming it (or, with logs, the events that fired it), a
``comment`` and ``metadata`` with the counts, a white-to-blue ``gradient`` from 0 to the
highest score. The ATT&CK version is left out (optional in the format): names written years
ago may use IDs that newer ATT&CK releases revoked, which the Navigator shows as unknown.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from ..configmodel import Config
from ..core.registry import STAGES
from ..event import SYSMON_PROVIDERS, Event
from ..interfaces import Emit, Stage
from ..version import __version__
from .common import FilterIndex, techniques_in

__all__ = ["TechniqueRow", "Coverage", "RuleNameCounter", "COVERAGE_FORMAT", "LAYER_VERSION",
           "NAVIGATOR_VERSION", "navigator_layer", "format_text", "report_sections"]

COVERAGE_FORMAT = "sysmonx-coverage/1"
#: The Navigator layer format version written, and the Navigator version it declares.
LAYER_VERSION = "4.5"
NAVIGATOR_VERSION = "5.1.0"


@dataclass
class TechniqueRow:
    """One technique's coverage.

    Attributes:
        id: ``T1059`` or ``T1059.001``.
        config_filters: positions of the include filters naming it (config order).
        sigma_rules: keys (id, else name, else title) of the compiled Sigma rules tagged with it.
        fired_config: kept events whose RuleName names it (``None`` without logs).
        fired_sigma: Sigma matches of rules tagged with it (``None`` without logs).
    """

    id: str
    config_filters: list[int] = field(default_factory=list)
    sigma_rules: list[str] = field(default_factory=list)
    fired_config: Optional[int] = None
    fired_sigma: Optional[int] = None

    @property
    def fired(self) -> Optional[int]:
        """Events that fired it (config and Sigma), ``None`` without logs."""
        if self.fired_config is None and self.fired_sigma is None:
            return None
        return (self.fired_config or 0) + (self.fired_sigma or 0)


def _tid_key(tid: str) -> tuple[int, int]:
    main, _, sub = tid[1:].partition(".")
    return int(main), int(sub or -1)


class Coverage:
    """Techniques covered by a config and Sigma rules.

    Args:
        config: a loaded config, or ``None``.
        detection: a loaded :class:`~sysmonx.detection.stage.DetectionStage`, or ``None``.
    Attributes:
        rows: technique ID -> :class:`TechniqueRow`.
        index: the config's :class:`~.common.FilterIndex` (``None`` without a config).
        sigma_rejected: Sigma rules that did not compile (not counted as coverage).
    """

    def __init__(self, config: Optional[Config] = None, detection: Any = None) -> None:
        self.config = config
        self.detection = detection
        self.rows: dict[str, TechniqueRow] = {}
        self.index = FilterIndex(config) if config is not None else None
        self.logs = False
        if self.index is not None:
            for i, (rs, f) in enumerate(self.index.filters):
                if rs.onmatch == "include":
                    for t in techniques_in(f.name):
                        self._row(t).config_filters.append(i)
        self.sigma_rejected = 0
        if detection is not None:
            self.sigma_rejected = sum(1 for i in detection.issues if i.rejected)
            for r in detection.matcher.compiled:
                for tag in r.tags:
                    if tag.lower().startswith("attack.t"):
                        for t in techniques_in(tag):
                            row = self._row(t)
                            if r.key not in row.sigma_rules:
                                row.sigma_rules.append(r.key)

    def _row(self, tid: str) -> TechniqueRow:
        row = self.rows.get(tid)
        if row is None:
            row = self.rows[tid] = TechniqueRow(tid)
        return row

    def add_fired(self, rule_names: Counter[str], sigma_matches: Optional[Counter[str]]) -> None:
        """Record what fired over logs: ``rule_names`` counts the RuleNames of kept events,
        ``sigma_matches`` the matches per Sigma rule key (``None`` without rules)."""
        self.logs = True
        fired_cfg: Counter[str] = Counter()
        for name, n in rule_names.items():
            for t in techniques_in(name):
                fired_cfg[t] += n
        fired_sig: Counter[str] = Counter()
        if sigma_matches is not None and self.detection is not None:
            for r in self.detection.matcher.compiled:
                n = sigma_matches.get(r.key, 0)
                if n:
                    for tag in r.tags:
                        if tag.lower().startswith("attack.t"):
                            for t in techniques_in(tag):
                                fired_sig[t] += n
        for row in self.rows.values():
            row.fired_config = fired_cfg.get(row.id, 0) if self.config is not None else None
            row.fired_sigma = fired_sig.get(row.id, 0) if self.detection is not None else None

    def sorted_rows(self) -> list[TechniqueRow]:
        """Rows by technique ID (numeric, sub-techniques after their parent)."""
        return [self.rows[t] for t in sorted(self.rows, key=_tid_key)]

    def to_dict(self, inputs: Sequence[str] = (), rule_paths: Sequence[str] = ()
                ) -> dict[str, Any]:
        """The stable JSON form (docs/WORKBENCH.md): ``format``, ``config``, ``sigma``,
        ``logs``, ``totals`` and ``techniques`` (one object per technique: ``id``,
        ``config_filters`` (count), ``config_lines``, ``sigma_rules`` (count),
        ``sigma_rule_ids``, ``fired_config``, ``fired_sigma``; the last two ``null`` without
        logs)."""
        rows = self.sorted_rows()
        techniques = []
        for r in rows:
            lines = []
            if self.index is not None:
                lines = [self.index.filters[i][1].line for i in r.config_filters]
            techniques.append({
                "id": r.id, "config_filters": len(r.config_filters), "config_lines": lines,
                "sigma_rules": len(r.sigma_rules), "sigma_rule_ids": r.sigma_rules,
                "fired_config": r.fired_config, "fired_sigma": r.fired_sigma})
        by_cfg = {r.id for r in rows if r.config_filters}
        by_sig = {r.id for r in rows if r.sigma_rules}
        totals: dict[str, Any] = {"techniques": len(rows), "config": len(by_cfg),
                                  "sigma": len(by_sig), "both": len(by_cfg & by_sig)}
        if self.logs:
            totals["fired"] = sum(1 for r in rows if r.fired)
            totals["fired_config"] = sum(1 for r in rows if r.fired_config)
            totals["fired_sigma"] = sum(1 for r in rows if r.fired_sigma)
        sigma = None
        if self.detection is not None:
            sigma = {"paths": list(rule_paths), "rules": len(self.detection.matcher.compiled),
                     "rejected": self.sigma_rejected}
        return {
            "format": COVERAGE_FORMAT,
            "config": None if self.config is None else {
                "file": self.config.path, "sha256": self.config.sha256},
            "sigma": sigma,
            "logs": list(inputs) if self.logs else None,
            "totals": totals,
            "techniques": techniques,
        }


def navigator_layer(d: dict[str, Any], name: str = "SysmonX coverage") -> dict[str, Any]:
    """The ATT&CK Navigator layer (format 4.5, module docstring) of the JSON form ``d``.

    Scores: without logs the rules naming the technique (config filters + Sigma rules); with
    logs the events that fired it (0: covered, silent over these logs)."""
    logs = d["logs"] is not None
    techniques = []
    for t in d["techniques"]:
        fired = (t["fired_config"] or 0) + (t["fired_sigma"] or 0)
        score = fired if logs else t["config_filters"] + t["sigma_rules"]
        comment = f"{t['config_filters']} config filter(s), {t['sigma_rules']} Sigma rule(s)"
        meta = [{"name": "config filters", "value": str(t["config_filters"])},
                {"name": "Sigma rules", "value": str(t["sigma_rules"])}]
        if t["config_lines"]:
            meta.append({"name": "config lines",
                         "value": ", ".join(str(x) for x in t["config_lines"][:20])
                         + (" ..." if len(t["config_lines"]) > 20 else "")})
        if logs:
            comment += f"; fired on {fired} event(s)"
            meta.append({"name": "events fired (config)", "value": str(t["fired_config"] or 0)})
            meta.append({"name": "Sigma matches", "value": str(t["fired_sigma"] or 0)})
        techniques.append({"techniqueID": t["id"], "score": score, "comment": comment,
                           "enabled": True, "metadata": meta})
    top = max((t["score"] for t in techniques), default=0)
    sources = []
    if d["config"]:
        sources.append(f"config {d['config']['file']}")
    if d["sigma"]:
        sources.append(f"{d['sigma']['rules']} Sigma rules")
    desc = ("ATT&CK techniques named by " + (" and ".join(sources) or "nothing") + "; score: "
            + ("events that fired the technique over the logs" if logs
               else "rules naming the technique") + ". Made by SysmonX.")
    legend = [{"label": "named, never fired over the logs" if logs else "named by few rules",
               "color": "#ffffff"},
              {"label": "fired most" if logs else "named by most rules", "color": "#1565c0"}]
    meta = [{"name": "generated by", "value": f"SysmonX {__version__}"}]
    if d["config"]:
        meta.append({"name": "config", "value": d["config"]["file"]})
        meta.append({"name": "config sha256", "value": d["config"]["sha256"]})
    if d["sigma"]:
        meta.append({"name": "Sigma rules", "value": str(d["sigma"]["rules"])})
    if logs:
        meta.append({"name": "logs", "value": ", ".join(d["logs"])})
    return {
        "name": name,
        "versions": {"navigator": NAVIGATOR_VERSION, "layer": LAYER_VERSION},
        "domain": "enterprise-attack",
        "description": desc,
        "sorting": 3,
        "layout": {"layout": "side", "showID": True, "showName": True,
                   "showAggregateScores": False, "countUnscored": False,
                   "aggregateFunction": "average", "expandedSubtechniques": "annotated"},
        "hideDisabled": False,
        "techniques": techniques,
        "gradient": {"colors": ["#ffffff", "#1565c0"], "minValue": 0,
                     "maxValue": max(top, 1)},
        "legendItems": legend,
        "showTacticRowBackground": False,
        "selectTechniquesAcrossTactics": True,
        "selectSubtechniquesWithParent": False,
        "selectVisibleTechniques": False,
        "metadata": meta,
    }


@STAGES.register
class RuleNameCounter(Stage):
    """Counts the RuleName of every kept Sysmon event (put after the filter); keeps every
    item. ``names``: RuleName -> events (``-`` and empty not counted)."""

    name = "rulename-counter"
    summary = "workbench: counts the RuleNames of kept events (coverage)"

    def __init__(self) -> None:
        self.names: Counter[str] = Counter()

    def process(self, item: Any, emit: Emit) -> bool:
        """Count ``item``'s RuleName when it is a Sysmon event; always keep it."""
        if item.__class__ is Event and item.provider in SYSMON_PROVIDERS:
            name = item.data.get("RuleName")
            if name and name != "-":
                self.names[name] += 1
        return True


def format_text(d: dict[str, Any]) -> str:
    """The JSON form ``d`` as a text table (one line per technique) with totals."""
    logs = d["logs"] is not None
    out = []
    if d["config"]:
        out.append(f"Config: {d['config']['file']}")
    if d["sigma"]:
        out.append(f"Sigma: {d['sigma']['rules']:,} rules in use, {d['sigma']['rejected']:,} "
                   f"rejected ({', '.join(d['sigma']['paths'])})")
    t = d["totals"]
    named = " or ".join(w for w, on in (("the config", d["config"]), ("the Sigma rules",
                                                                       d["sigma"])) if on)
    out.append(f"Techniques: {t['techniques']} distinct ATT&CK techniques named by "
               f"{named or 'nothing'} ({t['config']} by the config, {t['sigma']} by "
               f"Sigma, {t['both']} by both)"
               + (f"; {t['fired']} of the {t['techniques']} fired over the logs (a kept event "
                  f"named one, or a rule tagged with one matched)" if logs else ""))
    out.append("")
    head = f"{'technique':<11} {'config':>7} {'sigma':>7}"
    if logs:
        head += f" {'fired(config)':>14} {'fired(sigma)':>13}"
    out.append(head)
    for r in d["techniques"]:
        line = f"{r['id']:<11} {r['config_filters']:>7} {r['sigma_rules']:>7}"
        if logs:
            fc = "-" if r["fired_config"] is None else str(r["fired_config"])
            fs = "-" if r["fired_sigma"] is None else str(r["fired_sigma"])
            line += f" {fc:>14} {fs:>13}"
        out.append(line)
    return "\n".join(out) + "\n"


def report_sections(d: dict[str, Any], top: int = 30) -> list[dict[str, Any]]:
    """The HTML report of the JSON form ``d``: the technique heat map, the techniques with
    most rules (config and Sigma), what fired (with logs) and the full table."""
    logs = d["logs"] is not None
    rows = d["techniques"]
    cells = []
    for r in rows:
        fired = (r["fired_config"] or 0) + (r["fired_sigma"] or 0)
        score = fired if logs else r["config_filters"] + r["sigma_rules"]
        tip = f"{r['config_filters']} config filters, {r['sigma_rules']} Sigma rules"
        if logs:
            tip += f", fired on {fired} events"
        cells.append({"id": r["id"], "score": score, "tip": tip})
    sections: list[dict[str, Any]] = [{
        "kind": "heatmap", "title": "ATT&CK technique heat map",
        "note": ("Colour: events that fired the technique over the logs (white: named but "
                 "silent)." if logs else "Colour: rules naming the technique."),
        "cells": cells, "legend": "Hover a cell for its counts."}]
    busy = sorted(rows, key=lambda r: -(r["config_filters"] + r["sigma_rules"]))[:top]
    sections.append({
        "kind": "bars", "title": f"Techniques named by most rules (top {top})", "stacked": True,
        "labels": [r["id"] for r in busy],
        "series": [{"name": "config filters", "color": "#2e7d32",
                    "values": [r["config_filters"] for r in busy]},
                   {"name": "Sigma rules", "color": "#6a1b9a",
                    "values": [r["sigma_rules"] for r in busy]}]})
    if logs:
        fired = sorted((r for r in rows if (r["fired_config"] or 0) + (r["fired_sigma"] or 0)),
                       key=lambda r: -((r["fired_config"] or 0) + (r["fired_sigma"] or 0)))[:top]
        sections.append({
            "kind": "bars", "title": "Techniques that fired over the logs", "stacked": True,
            "labels": [r["id"] for r in fired],
            "series": [{"name": "events kept by named config rules", "color": "#2e7d32",
                        "values": [r["fired_config"] or 0 for r in fired]},
                       {"name": "Sigma matches", "color": "#6a1b9a",
                        "values": [r["fired_sigma"] or 0 for r in fired]}]})
    cols = ["technique", "config filters", "Sigma rules"] + (
        ["fired (config)", "fired (Sigma)"] if logs else [])
    sections.append({"kind": "table", "title": "All techniques", "columns": cols,
                     "rows": [[r["id"], r["config_filters"], r["sigma_rules"]]
                              + ([r["fired_config"] if r["fired_config"] is not None else "-",
                                  r["fired_sigma"] if r["fired_sigma"] is not None else "-"]
                                 if logs else []) for r in rows]})
    return sections
