"""Decision traces: why Sysmon would log (or drop) one event, filter by filter.

:func:`explain` walks Sysmon's filter algorithm for one event and records every step: the rule
sets of the event's tag in evaluation order (spec/sysmon-semantics.md 3.2: exclude sets first,
then include sets, each group in reverse document order), every filter evaluated with its
outcome, ``<Rule>`` sub-groups (3.4), the same-field rule (a later filter on a field that already
matched is skipped; in an AND set a miss is forgiven while a later filter tests the same field),
the RuleName bookkeeping including the stale-name quirk (3.6), the fallback when nothing matched
(3.3) and the per-type defaults (3.7).

This module is a second, deliberately plain implementation of the algorithm: it walks the
configuration model directly, where :class:`~sysmonx.filtering.engine.FilterEngine` compiles it
into predicates and an index. Only the operator predicates (:func:`make_predicate`, spec 2.2) are
shared. ``tests/test_explain.py`` checks that both agree on every spec vector and on corpus
configurations. ``sysmonx config explain`` and the ``-t`` console mode print these traces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from ..configmodel import Aggregate, Config, Filter, RuleSet
from ..schema import CURRENT
from ..textsafe import visible
from ..schema.catalogue import ENRICHMENT_FIELD_NAMES
from .conditions import REGEX_MAX_MEM, fold, make_predicate
from .engine import NEVER_FILTERED, EngineOptions, expand_environment, never_filtered

__all__ = ["FilterStep", "GroupStep", "RuleSetTrace", "Explanation", "explain",
           "format_explanation", "summary_line", "display_safe"]

#: Outcomes of one filter.
MATCH, NO_MATCH, ABSENT, SKIPPED, NOT_EVALUATED = (
    "match", "no match", "absent", "skipped", "not evaluated")


@dataclass
class FilterStep:
    """One filter as the walk met it.

    Attributes:
        filter: the :class:`~sysmonx.configmodel.Filter`.
        outcome: ``match``, ``no match``, ``absent`` (the field is not at its bound position in
            this event id, spec 1.5: NoMatch), ``skipped`` (top level: an earlier filter on the same
            field already matched, spec 3.4) or ``not evaluated`` (the set was already decided).
        value: the event's value as compared (``-`` for a missing or empty value; ``None`` when
            the filter was not evaluated).
        error: set when the predicate could not be built (an invalid regex): a NoMatch.
    """

    filter: Filter
    outcome: str
    value: Optional[str] = None
    error: Optional[str] = None

    @property
    def matched(self) -> bool:
        """True for ``match``."""
        return self.outcome == MATCH


@dataclass
class GroupStep:
    """A ``<Rule>`` compound filter: its members' steps and the group result."""

    aggregate: Aggregate
    steps: list[FilterStep]
    outcome: str

    @property
    def matched(self) -> bool:
        """True when the group matched."""
        return self.outcome == MATCH


Step = Union[FilterStep, GroupStep]


@dataclass
class RuleSetTrace:
    """One rule set as tried for the event.

    Attributes:
        rule_set: the :class:`~sysmonx.configmodel.RuleSet`.
        position: 1-based document position among the rule sets of the tag.
        matched: whether the set matched.
        steps: filter and ``<Rule>`` steps in document order.
        name: the last non-empty RuleName of a filter that matched inside this set (``None``: none),
            whether or not the set matched (it survives to later sets: stale-name quirk, TV40).
        reason: one line on how the set was decided.
    """

    rule_set: RuleSet
    position: int
    matched: bool
    steps: list[Step] = field(default_factory=list)
    name: Optional[str] = None
    reason: str = ""

    def matched_filters(self) -> list[FilterStep]:
        """Filters (also inside ``<Rule>`` groups) that matched, in document order."""
        out: list[FilterStep] = []
        for s in self.steps:
            if isinstance(s, GroupStep):
                out.extend(m for m in s.steps if m.matched)
            elif s.matched:
                out.append(s)
        return out


@dataclass
class Explanation:
    """The full trace of one decision.

    Attributes:
        event_id: the event's id; ``tag`` its filter tag (``None``: never filtered, or unknown id).
        filterable: False for 4, 16, 255 and ids Sysmon does not define (always logged, RuleName
            untouched).
        sets: rule sets in evaluation order, up to and including the one that decided.
        total_sets: how many rule sets the tag has.
        include: the decision (True: logged).
        rule_name: RuleName Sysmon writes (``-`` when no rule matched; ``None`` when unfilterable).
        decided_by: the matching rule set, or ``None`` (default / fallback).
        reason: one line on why.
    """

    event_id: int
    tag: Optional[str]
    filterable: bool
    sets: list[RuleSetTrace]
    total_sets: int
    include: bool
    rule_name: Optional[str]
    decided_by: Optional[RuleSetTrace]
    reason: str

    @property
    def decision(self) -> str:
        """``include`` or ``exclude``."""
        return "include" if self.include else "exclude"


def _folded(data: dict, fields: set) -> tuple[dict, dict]:
    """(folded values, shown values) for the fields used: ``-`` for missing/empty (spec 2.1);
    RuleName is ``-`` at filter time (Sysmon fills it after filtering)."""
    folded, shown = {}, {}
    for name in fields:
        v = data.get(name)
        if name == "RuleName" or not v:
            v = "-"
        shown[name] = v
        folded[name] = fold(v)
    return folded, shown


class _Walker:
    """Evaluates rule sets of one event id, recording every step (spec 3.4)."""

    def __init__(self, event_id: int, options: EngineOptions, folded: dict, shown: dict):
        self.actual = CURRENT.events[event_id].field_names
        self.options = options
        self.folded = folded
        self.shown = shown
        self._preds: dict = {}

    def _present(self, rs: RuleSet, f: Filter) -> bool:
        pos = CURRENT.events[rs.event_id].index.get(f.field)
        if pos is None and f.field in ENRICHMENT_FIELD_NAMES:
            return True  # looked up by name, as the engine does (FilterCompiler.present)
        return pos is not None and pos < len(self.actual) and self.actual[pos] == f.field

    def _test(self, rs: RuleSet, f: Filter) -> FilterStep:
        if not self._present(rs, f):
            return FilterStep(f, ABSENT)
        value = f.value
        if self.options.environment is not None:
            expanded = expand_environment(f.value, self.options.environment)
            if expanded is None:
                return FilterStep(f, NO_MATCH, self.shown[f.field],
                                  "environment expansion longer than 32767 characters")
            value = expanded
        key = (f.condition, value)
        pred = self._preds.get(key)
        if pred is None:
            try:
                pred = make_predicate(f.condition, value, compare_fold=self.options.compare_fold,
                                      regex_max_mem=REGEX_MAX_MEM)
            except ValueError as exc:  # a failed filter is a NoMatch (spec 3.5)
                return FilterStep(f, NO_MATCH, self.shown[f.field], str(exc))
            self._preds[key] = pred
        ok = pred(self.folded[f.field])
        return FilterStep(f, MATCH if ok else NO_MATCH, self.shown[f.field])

    def run(self, rs: RuleSet, position: int) -> RuleSetTrace:
        trace = RuleSetTrace(rs, position, False)
        if not rs.filters:
            trace.reason = "a rule set without filters never matches"
            return trace
        is_and = rs.relation == "and"
        # Runs of consecutive filters of one <Rule> form a sub-group (spec 3.4).
        items: list = []
        for idx, f in enumerate(rs.filters):
            if f.aggregate and items and items[-1][0] == "g" and items[-1][1] == f.aggregate:
                items[-1][2].append(f)
            elif f.aggregate:
                items.append(("g", f.aggregate, [f]))
            else:
                items.append(("f", idx, f))
        later_fields = {}
        for idx, f in enumerate(rs.filters):
            if not f.aggregate:
                later_fields[f.field] = idx  # last top-level index per field
        decided: Optional[bool] = None
        matched_fields: set = set()
        for item in items:
            if item[0] == "g":
                agg = rs.aggregates.get(item[1]) or Aggregate(item[1], "or", None)
                if decided is not None:
                    trace.steps.append(GroupStep(agg, [FilterStep(f, NOT_EVALUATED)
                                                       for f in item[2]], NOT_EVALUATED))
                    continue
                group_and = agg.relation == "and"
                gsteps: list[FilterStep] = []
                gresult: Optional[bool] = None
                for f in item[2]:
                    if gresult is not None:
                        gsteps.append(FilterStep(f, NOT_EVALUATED))
                        continue
                    st = self._test(rs, f)
                    gsteps.append(st)
                    if st.matched:
                        if f.name:
                            trace.name = f.name
                        if not group_and:
                            gresult = True
                    elif group_and:
                        gresult = False
                if gresult is None:
                    gresult = group_and
                trace.steps.append(GroupStep(agg, gsteps, MATCH if gresult else NO_MATCH))
                label = f"<Rule{' ' + repr(agg.name) if agg.name else ''}>"
                if gresult and not is_and:
                    decided, trace.reason = True, f"{label} matched (OR set: first match wins)"
                elif not gresult and is_and:
                    decided, trace.reason = False, f"{label} did not match (AND set)"
                continue
            _, idx, f = item
            if decided is not None:
                trace.steps.append(FilterStep(f, NOT_EVALUATED))
                continue
            if f.field in matched_fields:
                trace.steps.append(FilterStep(f, SKIPPED, self.shown.get(f.field)))
                continue
            st = self._test(rs, f)
            trace.steps.append(st)
            if st.matched:
                if f.name:
                    trace.name = f.name
                matched_fields.add(f.field)
                if not is_and:
                    decided = True
                    trace.reason = f"{f.field} {f.condition} matched (OR set: first match wins)"
            elif is_and and later_fields[f.field] <= idx:
                decided = False
                trace.reason = (f"{f.field} did not match and no later filter tests {f.field} "
                                "(AND set)")
        if decided is None:
            decided = is_and
            trace.reason = ("every field tested matched (AND set)" if is_and
                            else "no filter matched (OR set)")
        trace.matched = decided
        return trace


def _default_include(event_id: int, default: str, options: EngineOptions) -> bool:
    if options.no_rule_defaults == "community" and event_id in (2, 6):
        return True
    return default == "include"


def explain(config: Optional[Config], event_id: int, data: dict,
            options: Optional[EngineOptions] = None) -> Explanation:
    """Trace Sysmon's decision for one event.

    Args:
        config: a loaded configuration, or ``None`` (no configuration: per-type defaults).
        event_id: the event's id.
        data: field name -> value string (a missing or empty value counts as ``-``).
        options: the same :class:`~sysmonx.filtering.engine.EngineOptions` the engine takes
            (fold of less/more than, fallback, stale RuleName, no-rule defaults, environment);
            ``None``: the defaults.
    Returns:
        an :class:`Explanation`; ``(include, rule_name)`` equal what
        ``FilterEngine(config, options).decide(event_id, data)`` returns.

    Spec: sysmon-semantics.md 3.2 (order), 3.3 (decision and fallback), 3.4 (group evaluation),
    3.5 (errors as NoMatch), 3.6 (RuleName), 3.7 (defaults), 1.5 (multi-id binding).
    """
    options = options if options is not None else EngineOptions()
    ev = CURRENT.events.get(event_id)
    if ev is not None and never_filtered(event_id, data):
        return Explanation(event_id, None, False, [], 0, True, "-", None,
                           "a TamperFinding config_weakened is never filtered nor truncated: it "
                           "reports the reload that put this configuration in force")
    if ev is None or event_id in NEVER_FILTERED or ev.tag is None:
        why = ("Sysmon never filters events 4, 16 and 255" if ev is not None
               else f"event id {event_id} is not a Sysmon event; passed through")
        return Explanation(event_id, None, False, [], 0, True, None, None, why)
    sets = [rs for rs in (config.rule_sets if config is not None else ()) if rs.tag == ev.tag]
    if not sets:
        inc = _default_include(event_id, ev.default, options)
        why = (f"no rule set for {ev.tag}: the event type's default is to "
               f"{'log' if inc else 'drop'} it")
        return Explanation(event_id, ev.tag, True, [], 0, inc, "-", None, why)
    position = {id(rs): i + 1 for i, rs in enumerate(sets)}
    ordered = ([rs for rs in reversed(sets) if rs.onmatch == "exclude"]
               + [rs for rs in reversed(sets) if rs.onmatch == "include"])
    used = {f.field for rs in sets for f in rs.filters}
    folded, shown = _folded(data, used)
    walker = _Walker(event_id, options, folded, shown)
    traces: list[RuleSetTrace] = []
    current: Optional[str] = None
    for rs in ordered:
        t = walker.run(rs, position[id(rs)])
        traces.append(t)
        if options.stale_rulename:
            if t.name is not None:
                current = t.name
        elif t.matched:
            current = t.name
        if t.matched:
            inc = rs.onmatch == "include"
            why = (f"rule set {t.position} ({rs.tag} onmatch={rs.onmatch}"
                   f"{', line ' + str(rs.line) if rs.line else ''}) matched: "
                   f"{'include' if inc else 'exclude'}")
            if current and current != t.name:
                why += (f"; RuleName {current!r} is left over from an earlier rule set "
                        "(Sysmon does not reset it)")
            return Explanation(event_id, ev.tag, True, traces, len(sets), inc, current or "-",
                               t, why)
    if len(sets) == 1:
        inc = sets[0].default == "include"
        why = (f"the only rule set did not match: onmatch={sets[0].onmatch} "
               f"{'logs' if inc else 'drops'} what it does not match")
    elif options.fallback == "intent" and all(rs.onmatch == "exclude" for rs in sets):
        inc = True
        why = f"none of the {len(sets)} exclude sets matched (fallback 'intent': include)"
    else:
        inc = False
        why = (f"none of the {len(sets)} rule sets matched: with two or more rule sets for a tag "
               "Sysmon drops the event")
    return Explanation(event_id, ev.tag, True, traces, len(sets), inc, "-", None, why)


def display_safe(line: str) -> str:
    """``line`` without the characters a terminal obeys instead of showing (C0/C1 controls but
    tab, bidi overrides, lone surrogates): each is written as the text ``\\uXXXX``, so values
    from events or configurations cannot drive the console (:func:`sysmonx.textsafe.visible`)."""
    return visible(line, "\t")


def _q(s: str) -> str:
    """Quote a value for display: ``'text'``, or Python's escaped form for control characters."""
    return f"'{s}'" if s.isprintable() else repr(s)


def _filter_text(f: Filter) -> str:
    where = f" (line {f.line})" if f.line else ""
    name = f" name={_q(f.name)}" if f.name else ""
    return f"{f.field} {f.condition} {_q(f.value)}{name}{where}"


def _step_lines(st: FilterStep, indent: str, verbose_values: bool,
                notes: Optional[dict[str, str]] = None) -> list[str]:
    text = f"{indent}{_filter_text(st.filter)}: {st.outcome}"
    note = notes.get(st.filter.field) if notes and st.outcome in (MATCH, NO_MATCH) else None
    if note is not None:
        text += f"  [event value {_q(st.value or '-')}: {note}]"
    elif st.outcome == ABSENT:
        text += " (field not in this event type)"
    elif st.outcome == SKIPPED:
        text += " (an earlier filter on the same field matched)"
    elif st.value is not None and verbose_values:
        text += f"  [event value {_q(st.value)}]"
    if st.error:
        text += f"  [error: {st.error}]"
    return [text]


def format_explanation(expl: Explanation, *, prefix: str = "", values: bool = True,
                       notes: Optional[dict[str, str]] = None) -> str:
    """Render an :class:`Explanation` as the text ``sysmonx config explain`` prints.

    Layout: a header naming the event and the number of rule sets, one block per rule set tried
    (``[n] <Tag> onmatch=... (line L, combine and|or): MATCH|no match`` and its filters with their
    outcomes, ``<Rule>`` members indented further), then ``Decision:`` and ``RuleName:`` lines.

    Args:
        prefix: put in front of every line (``[R] `` in the ``-t`` console mode).
        values: show the event value compared by each evaluated filter.
        notes: field -> a note printed with the value of every evaluated filter on that field
            (``config explain``: where an enrichment value the event did not carry came from).
    Returns:
        the text, ending with a newline.
    """
    out: list[str] = []
    ev = CURRENT.events.get(expl.event_id)
    label = f"Event {expl.event_id}" + (f" ({ev.template})" if ev is not None else "")
    if not expl.filterable:
        out.append(f"{label}: not filtered ({expl.reason})")
        out.append("Decision: include")
        return "".join(prefix + display_safe(line) + "\n" for line in out)
    if expl.total_sets == 0:
        out.append(f"{label}, tag {expl.tag}: no rule sets")
    else:
        out.append(f"{label}, tag {expl.tag}: {expl.total_sets} rule set(s); tried exclude sets "
                   "first, then include sets, each in reverse document order")
    for t in expl.sets:
        rs = t.rule_set
        where = f"line {rs.line}, " if rs.line else ""
        grp = f", RuleGroup {_q(rs.group_name)}" if rs.group_name else ""
        out.append(f"  [{t.position}] {rs.tag} onmatch={rs.onmatch} ({where}combine "
                   f"{rs.relation}{grp}): {'MATCH' if t.matched else 'no match'} - {t.reason}")
        for st in t.steps:
            if isinstance(st, GroupStep):
                a = st.aggregate
                nm = f" name={_q(a.name)}" if a.name is not None else ""
                ln = f" (line {a.line})" if a.line else ""
                out.append(f"      <Rule groupRelation={a.relation}{nm}>{ln}: {st.outcome}")
                for m in st.steps:
                    out.extend(_step_lines(m, "          ", values, notes))
            else:
                out.extend(_step_lines(st, "      ", values, notes))
        if t.name is not None:
            out.append(f"      RuleName after this set: {_q(t.name)}")
    out.append(f"Decision: {expl.decision} ({expl.reason})")
    out.append(f"RuleName: {expl.rule_name}")
    if notes:
        out.append("Note: the decision uses enrichment values this event did not carry ("
                   + ", ".join(sorted(notes)) + "), computed from it alone as noted above")
    return "".join(prefix + display_safe(line) + "\n" for line in out)


def summary_line(expl: Explanation) -> str:
    """One line for the ``-t`` console mode: event, decision, deciding rule set and RuleName."""
    return display_safe(_summary(expl))


def _summary(expl: Explanation) -> str:
    ev = CURRENT.events.get(expl.event_id)
    tag = expl.tag or (ev.template if ev else str(expl.event_id))
    if not expl.filterable:
        return f"Event {expl.event_id} {tag}: include (never filtered)"
    if expl.decided_by is not None:
        rs = expl.decided_by.rule_set
        hits = ", ".join(f"{s.filter.field} {s.filter.condition} {_q(s.filter.value)}"
                         for s in expl.decided_by.matched_filters()[:3])
        where = f" line {rs.line}" if rs.line else ""
        return (f"Event {expl.event_id} {tag}: {expl.decision} by rule set "
                f"{expl.decided_by.position} (onmatch={rs.onmatch}{where}; {hits}), "
                f"RuleName: {expl.rule_name}")
    return f"Event {expl.event_id} {tag}: {expl.decision} ({expl.reason}), RuleName: -"
