"""The detection stage: events in, Sigma alerts out, with per-rule hit counters.

::

    stage = DetectionStage.from_paths(["rules/"])          # load + compile, never raises on a rule
    for issue in stage.issues: ...                          # rejected rules and warnings
    for event in events:
        for alert in stage.process(event): write(alert)
    for alert in stage.finish(): write(alert)               # windows still open at the end
    stage.summary_rows()                                     # hits per rule, for a table

The stage owns a :class:`~.matcher.RuleMatcher` (detection rules) and, when correlations were
loaded, a :class:`~.correlation.CorrelationEngine`. It keeps no per-event state except the
correlation windows, which are bounded (see :mod:`.correlation`). One stage is not thread-safe:
feed it from one thread, in stream order.
"""

from __future__ import annotations

import gc
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from ..core.native import speedups as _speedups
from ..event import Event
from .alerts import LEVELS, MAX_EVENT_FIELDS, Alert, matched_event, source_of
from .alerts import register_rules as _register_rules
from .alerts import rule_text
from .fields import known_fields
from .correlation import (
    CompiledCorrelation,
    CorrelationEngine,
    CorrelationError,
    time_ns,
)
from .cache import RuleCache, cached
from .matcher import CompiledRule, RuleMatcher, _index
from .rules import LoadedRules, LoadIssue, load_rules, rule_ref

__all__ = ["DetectionStage", "DetectionOptions", "SummaryRow", "KEY_FIELDS"]

#: The compiled key-field picker (``_speedups.alert_fields``), or None (pure Python).
_alert_fields = getattr(_speedups, "alert_fields", None)
#: One event's detection alerts and counts in one compiled call (``_speedups.sigma_alerts``,
#: see :meth:`DetectionStage.correlate_timed`), or None (pure Python).
_sigma_alerts = getattr(_speedups, "sigma_alerts", None)
#: :meth:`DetectionStage.process` without correlations or rule profile in one compiled call
#: (``_speedups.sigma_process``), or None (pure Python).
_sigma_process = getattr(_speedups, "sigma_process", None)
if _sigma_alerts is not None and _speedups is not None:
    # an alert's source_file and event, made by the same functions as _alert's; with the
    # field cap, sigma_alerts builds both itself by their rule (once per event)
    _speedups.setup_sigma_alerts(source_of, matched_event, MAX_EVENT_FIELDS)

#: The Alert fields ``_alert`` passes, in order (positionally).
_ALERT_ARGS = ("rule_id", "title", "level", "status", "kind", "tags", "window_start",
               "window_end", "computer", "group", "record_ids", "event_count", "event_ids",
               "rules", "value", "fields", "source_file", "event")
#: What :func:`_plain_alert` found (``_UNCHECKED`` until its first call).
_UNCHECKED: Any = object()
_PLAIN_NAMES: Any = _UNCHECKED


def _plain_alert() -> Optional[tuple]:
    """:data:`_ALERT_ARGS` when constructing an :class:`Alert` does nothing but set those
    attributes in that order (a dataclass with exactly these fields, no ``__post_init__``,
    object's ``__new__`` and ``__setattr__``): ``sigma_alerts`` may then make alerts without
    calling ``__init__``; else None (it calls the class). Checked once per process (kept in
    ``_PLAIN_NAMES``; two threads checking at once find the same)."""
    global _PLAIN_NAMES
    if _PLAIN_NAMES is _UNCHECKED:
        import dataclasses
        plain = (dataclasses.is_dataclass(Alert)
                 and tuple(f.name for f in dataclasses.fields(Alert)) == _ALERT_ARGS
                 and not hasattr(Alert, "__post_init__")
                 and Alert.__new__ is object.__new__
                 and Alert.__setattr__ is object.__setattr__)
        if plain:  # and constructing one sets exactly these, in this order
            probe: tuple[Any, ...] = tuple(object() for _ in _ALERT_ARGS)
            made = Alert(*probe)
            plain = list(vars(made).items()) == list(zip(_ALERT_ARGS, probe, strict=True))
        _PLAIN_NAMES = _ALERT_ARGS if plain else None
    return _PLAIN_NAMES


# ``correlate_timed``'s ``t`` when the time is still to be read from the event (a sentinel no
# time in nanoseconds can equal)
_FROM_EVENT: Any = object()

#: Identity fields copied into a detection alert when the event has them (before the fields the
#: rule tests).
KEY_FIELDS = ("Image", "CommandLine", "ParentImage", "ParentCommandLine", "User", "ProcessId",
              "ProcessGuid", "TargetFilename", "TargetObject", "Details", "ImageLoaded",
              "SourceImage", "TargetImage", "DestinationIp", "DestinationPort", "QueryName",
              "PipeName")


@dataclass
class DetectionOptions:
    """Choices of a detection stage.

    Attributes:
        placeholders: values of ``expand`` placeholders (``{"Admins": ["adm_*"]}``).
        max_groups: groups kept per correlation (least recently used evicted beyond).
        max_entries: hits kept per correlation group.
        max_alert_records: record ids listed in one alert.
        max_field_chars: key field values longer than this are cut in alerts (``…`` appended).
        freeze_gc: after compiling, move every object that exists to the garbage collector's
            permanent generation (:func:`gc.freeze`). The compiled rules are hundreds of
            thousands of long-lived objects; without this each full collection walks them all
            (a few hundred milliseconds each time). Objects are still freed by reference
            counting; only reference cycles among objects that existed at that moment are no
            longer collected. Process-wide: turn off when embedding in a process that must not
            have that.
    """

    placeholders: Optional[dict] = None
    max_groups: int = 10000
    max_entries: int = 10000
    max_alert_records: int = 100
    max_field_chars: int = 4096
    freeze_gc: bool = True


@dataclass(frozen=True)
class SummaryRow:
    """One line of the end-of-replay table: a rule and how often it matched / alerted."""

    level: str
    rule_id: str
    title: str
    kind: str
    matches: int
    alerts: int


@dataclass
class DetectionStats:
    """Counters: ``events`` seen, ``matched`` events (at least one rule), ``alerts`` emitted,
    ``alerts_by_level``."""

    events: int = 0
    matched: int = 0
    alerts: int = 0
    alerts_by_level: Counter = field(default_factory=Counter)


class DetectionStage:
    """Sigma detection over SysmonX events.

    Args:
        loaded: rules from :func:`~.rules.load_rules`, compiled once: compiling drops the
            rules' parsed detection trees (memory), so a second stage needs the rules loaded
            again.
        options: :class:`DetectionOptions`.
    Raises:
        ValueError: ``loaded`` was already compiled by another stage (every rule would
            otherwise be rejected without its detection).
    Attributes:
        issues: every load problem (file, rule, reason), rejections and warnings
            (:class:`~.rules.LoadIssue`).
        matcher: the compiled detection rules.
        correlation: the correlation engine, or ``None`` when no correlation was loaded.
        stats: :class:`DetectionStats`.
    """

    def __init__(self, loaded: LoadedRules, options: Optional[DetectionOptions] = None) -> None:
        if any(getattr(r, "detection", True) is None for r in loaded.rules):
            raise ValueError("these Sigma rules were already compiled by another detection "
                             "stage (which drops their parsed detections): load them again")
        self.options = options or DetectionOptions()
        self.issues: list = list(loaded.issues)
        self.files = loaded.files
        self.matcher = RuleMatcher(loaded.rules, self.options.placeholders)
        for rule, code, msg in self.matcher.rejected:
            rid, title = rule_ref(rule)
            self.issues.append(LoadIssue(_src(rule), rid, title, code, msg))
        for rule, code, msg in self.matcher.warnings:
            rid, title = rule_ref(rule)
            self.issues.append(LoadIssue(_src(rule), rid, title, code, msg, rejected=False))
        self.correlations = self._compile_correlations(loaded.correlations)
        self._check_correlation_fields()
        # the rules' texts their alerts carry (kept here: a cached stage has them without
        # rebuilding its pySigma rules)
        self.rule_texts = {r.key: rule_text(r.rule) for r in self.matcher.compiled}
        self.rule_texts.update((c.key, rule_text(c.rule)) for c in self.correlations)
        self.register_rules()
        self.correlation: Optional[CorrelationEngine] = None
        if self.correlations:
            self.correlation = CorrelationEngine(
                self.correlations, max_groups=self.options.max_groups,
                max_entries=self.options.max_entries,
                max_alert_records=self.options.max_alert_records)
        # Output of detection rules: off when only non-generating correlations refer to them.
        gen: dict = {}
        for c in self.correlations:
            for r in c.refs:
                gen[id(r)] = gen.get(id(r), False) or bool(c.rule.generate)
        by_rule = {id(c.rule): c for c in self.correlations}
        for rid, g in gen.items():
            if rid in by_rule:
                by_rule[rid].output = g
        self._output = [gen.get(id(r.rule), True) for r in self.matcher.compiled]
        self._consumed = [self.correlation is not None and self.correlation.consumes(r.rule)
                          for r in self.matcher.compiled]
        self._key_fields = [self._fields_of(r) for r in self.matcher.compiled]
        # the parsed detection trees are read by compiling only (a cached stage never had
        # them): ~28 MB for the SigmaHQ bundle's 2,007 rule files (1,999 load), dropped now
        for r in self.matcher.compiled:
            if getattr(r.rule, "detection", None) is not None:
                r.rule.detection = None  # type: ignore[assignment]  # as a cached stage
        self.matches: Counter = Counter()
        self.alert_counts: Counter = Counter()
        self.stats = DetectionStats()
        self._clock: Optional[int] = None
        #: ``compiled`` or ``cached`` (:meth:`from_paths` with a cache); notes of the cache.
        self.cache_status = "compiled"
        self.cache_notes: list = []
        if self.options.freeze_gc:
            gc.collect()
            gc.freeze()

    @classmethod
    def from_paths(cls, paths: Iterable[Union[str, Path]],
                   options: Optional[DetectionOptions] = None,
                   cache: Optional[RuleCache] = None) -> DetectionStage:
        """Load rules from files, folders and bundles (:func:`~.rules.load_rules`) and compile.

        Args:
            paths: rule files, folders and bundles.
            options: :class:`DetectionOptions`.
            cache: a :class:`~.cache.RuleCache`: the compiled stage is taken from it when it
                holds one for exactly these rule bytes, names, options and code, else
                compiled and stored there (see :mod:`.cache`; not stored when no rule
                loaded). ``None``: always compile.
                What the cache did is in :attr:`cache_notes` (reasons an entry was ignored
                or not written) and :attr:`cache_status`.
        Raises:
            FileNotFoundError: a path that does not exist.
        """
        paths = list(paths)
        opts = options or DetectionOptions()
        if cache is None:
            return cls(load_rules(paths), opts)
        built: list = []

        def build() -> DetectionStage:
            built.append(True)
            return cls(load_rules(paths), opts)

        # a loaded stage made no garbage: frozen as it is loaded, before the collector could
        # walk it (the options are part of the key: the stored stage has opts.freeze_gc)
        # a rule set with no rule loaded is not stored (nothing to reuse; the CLI says so)
        stage, notes = cached(paths, opts, build, cache, cls, freeze=opts.freeze_gc,
                              store_if=lambda s: bool(s.rules_loaded))
        if not built:
            stage.register_rules()
        stage.cache_status = "compiled" if built else "cached"
        stage.cache_notes = notes
        return stage

    # -- load ----------------------------------------------------------------------------------

    def _compile_correlations(self, rules: list) -> list:
        compiled_ids = {id(r.rule) for r in self.matcher.compiled}
        out: list = []
        ok: set = set(compiled_ids)
        pending = list(rules)
        # Children before parents: a correlation is compiled once everything it refers to is.
        while pending:
            progress = False
            waiting = {id(c) for c in pending}
            for c in list(pending):
                refs = [r.rule for r in c.referenced_rules]
                if any(id(r) not in ok and id(r) in waiting for r in refs):
                    continue
                pending.remove(c)
                progress = True
                rid, title = rule_ref(c)
                missing = [rule_ref(r) for r in refs if id(r) not in ok]
                if missing:
                    self.issues.append(LoadIssue(_src(c), rid, title, "correlation",
                                                 "refers to rule(s) that cannot be evaluated: "
                                                 + ", ".join(m[0] or m[1] for m in missing)))
                    continue
                try:
                    out.append(CompiledCorrelation(c))
                    ok.add(id(c))
                except CorrelationError as exc:
                    self.issues.append(LoadIssue(_src(c), rid, title, "correlation", str(exc)))
            if not progress:  # a reference cycle
                for c in pending:
                    rid, title = rule_ref(c)
                    self.issues.append(LoadIssue(_src(c), rid, title, "correlation",
                                                 "correlation references form a cycle"))
                break
        return out

    def _check_correlation_fields(self) -> None:
        """Load warnings for correlations that would pool or drop hits silently: group-by and
        value fields no event of a referenced rule's Sysmon log source carries (``field``),
        and a ``taxonomy`` other than Sigma's, whose field names SysmonX uses (``taxonomy``).
        """
        by_rule = {id(c.rule): c for c in self.matcher.compiled}
        by_corr = {id(c.rule): c for c in self.correlations}

        def known_for(rule) -> Optional[frozenset]:
            compiled = by_rule.get(id(rule))
            if compiled is not None:
                groups = compiled.target.groups
                if not groups or any(g[0] not in ("win", "lnx") for g in groups):
                    return None  # other channels: their fields are not known here
                names: set = set()
                for g in groups:
                    names |= known_fields(g[1])
                return frozenset(names)
            inner = by_corr.get(id(rule))
            return inner.carries() if inner is not None else None

        for c in self.correlations:
            rid, title = rule_ref(c.rule)
            taxonomy = getattr(c.rule, "taxonomy", None)
            if taxonomy and str(taxonomy).lower() != "sigma":
                self.issues.append(LoadIssue(
                    _src(c.rule), rid, title, "taxonomy", f"taxonomy {taxonomy!r}: SysmonX "
                    "names fields as Sysmon writes them (the Sigma taxonomy); fields of "
                    "another taxonomy do not exist on its events", rejected=False))
            problems = c.unknown_fields(known_for)
            for role, name, fld, ref in problems:
                ref_id, ref_title = rule_ref(ref)
                behind = f" (alias of {fld})" if fld != name else ""
                kind = "its events" if id(ref) in by_rule else "its alerts"
                self.issues.append(LoadIssue(
                    _src(c.rule), rid, title, "field", f"{role} field {name}{behind} is never "
                    f"written for the events of referenced rule {ref_id or ref_title} ({kind} "
                    + ("do not carry it): its hits are not counted (never grouped as null)"
                       if role == "group-by" else "do not carry it): its hits are ignored"),
                    rejected=False))

    def _fields_of(self, r: CompiledRule) -> tuple:
        seen = dict.fromkeys(KEY_FIELDS)
        for f in r.fields:
            seen.setdefault(f)
        return tuple(seen)

    def close(self) -> None:
        """Give up the stage: with ``freeze_gc``, return the frozen objects to the garbage
        collector (:func:`gc.unfreeze`) so the rules can be freed once unreferenced (call before
        building a replacement stage, e.g. on a rules reload)."""
        if self.options.freeze_gc:
            gc.unfreeze()

    # -- run -----------------------------------------------------------------------------------

    def process(self, event: Event) -> list[Alert]:
        """Evaluate one event; returns its alerts (usually none), in rule order. The same as
        :meth:`correlate` of :meth:`match` (an event without a match and without
        correlations loaded returns at once).

        With the compiled extension, ``_speedups.sigma_process`` runs this for a stage
        without correlations whose matcher has no rule profile set (the same steps: the
        count, :meth:`RuleMatcher.match`'s compiled common case or the method itself, the
        alerts by ``sigma_alerts`` or :meth:`correlate_timed`); it returns None, with
        nothing changed, for every other stage, which the code below runs."""
        if _sigma_process is not None:
            names = _PLAIN_NAMES
            if names is _UNCHECKED:
                names = _plain_alert()
            done = _sigma_process(self, event, _FROM_EVENT, RuleMatcher.match, _index, Alert,
                                  names)
            if done is not None:
                return done
        self.stats.events += 1
        hits = self.matcher.match(event)
        if not hits and self.correlation is None:
            return []
        return self.correlate_timed(event, hits, _FROM_EVENT)

    def match(self, event: Event) -> list[CompiledRule]:
        """The detection rules ``event`` matches (usually none), in rule order. Stateless: no
        stream state is read or changed (only the ``events`` counter), so matching may run in
        several places at once."""
        self.stats.events += 1
        return self.matcher.match(event)

    #: With correlations, the stream clock is read from an event that matched a rule and from
    #: every ``CLOCK_EVERY``-th event (:attr:`DetectionStats.events`, counted by :meth:`match`).
    CLOCK_EVERY = 256

    def correlate(self, event: Event, hits: list[CompiledRule]) -> list[Alert]:
        """The alerts of ``event`` given the rules it matched (:meth:`match`): one detection
        alert per matched rule that outputs, then what the correlations fire, with the stream
        clock advanced to the event's time. Stateful: call in stream order, once per event."""
        if not hits and self.correlation is None:
            return []
        return self.correlate_timed(event, hits, _FROM_EVENT)

    def correlate_timed(self, event: Optional[Event], hits: list[CompiledRule],
                        t: Optional[int]) -> list[Alert]:
        """:meth:`correlate` for an event whose time was already converted: ``t`` is
        :func:`~.correlation.time_ns` of its ``time_created`` (``None``: empty or not a time).
        ``event`` may be ``None`` when ``hits`` is empty: an event without a match is only its
        time here, and only every :data:`CLOCK_EVERY`-th event's time is read (parallel replay,
        :mod:`sysmonx.pipeline.parallel`, calls this for those events alone, with
        :attr:`stats` ``.events`` set as :meth:`match` would have counted it)."""
        stats = self.stats
        corr = self.correlation
        if corr is None:
            if not hits:
                return []
            if _sigma_alerts is not None:
                # the code below, for every hit at once (None: a case it leaves to it)
                rows = self._rows
                if rows is None:
                    rows = self._alert_rows()
                done = _sigma_alerts(self, event, hits, rows, self.options.max_field_chars,
                                     Alert, _plain_alert())
                if done is not None:
                    return done
            alerts = [self._alert(r, event) for r in hits  # type: ignore[arg-type]
                      if self._output[r.index]]
        else:
            alerts = []
            if hits or stats.events % self.CLOCK_EVERY == 0:
                if t is _FROM_EVENT:
                    tc = event.time_created  # type: ignore[union-attr]
                    t = time_ns(tc) if tc else None
                if t is None:
                    t = self._clock
                else:
                    self._clock = t
                if t is not None:
                    alerts.extend(corr.advance(t))
            seq = corr.next_seq() if hits else 0
            for r in hits:
                if self._output[r.index]:
                    alerts.append(self._alert(r, event))  # type: ignore[arg-type]
                if self._consumed[r.index] and self._clock is not None:
                    alerts.extend(corr.event_hit(r.rule, event,  # type: ignore[arg-type]
                                                 self._clock, seq))
        if hits:
            stats.matched += 1
            matches = self.matches
            for r in hits:
                matches[r.key] += 1
        if alerts:
            self._count(alerts)
        return alerts

    def tick(self, now_ns: int) -> list[Alert]:
        """The stream's clock has reached ``now_ns`` without an event (a quiet live host): close
        the correlation windows that ended before it; returns their alerts."""
        corr = self.correlation
        if corr is None:
            return []
        if corr.clock is None or now_ns > corr.clock:
            corr.clock = now_ns
        if self._clock is None or now_ns > self._clock:
            self._clock = now_ns
        alerts = corr.sweep()
        self._count(alerts)
        return alerts

    def finish(self) -> list[Alert]:
        """End of stream: close open correlation windows; returns their alerts."""
        if self.correlation is None:
            return []
        alerts = self.correlation.finish()
        self._count(alerts)
        return alerts

    def _count(self, alerts: list) -> None:
        for a in alerts:
            self.stats.alerts += 1
            self.stats.alerts_by_level[a.level or "-"] += 1
            self.alert_counts[a.rule_id] += 1

    #: Per rule index: ``(key, title, level, status, tags, key field names, output, level or
    #: "-")``, what :meth:`_alert` and :meth:`_count` read of a detection rule, for the compiled
    #: ``sigma_alerts``; built on first use (:meth:`_alert_rows`; a cached stage is loaded
    #: without it).
    _rows: Optional[list] = None

    def _alert_rows(self) -> list:
        """Build :attr:`_rows`. Safe from several threads at once: each builds the same table
        from the compiled rules (read only) and stores it with one assignment."""
        rows = [(r.key, r.title, r.level, r.status, r.tags, self._key_fields[r.index],
                 bool(self._output[r.index]), r.level or "-")
                for r in self.matcher.compiled]
        self._rows = rows
        return rows

    def _fields_py(self, data: dict, names: tuple, limit: int) -> dict:
        """An alert's key fields: ``names``' values in ``data`` (in ``names``' order, absent
        and ``None`` values left out), each cut to ``limit`` characters with ``…`` appended.
        This defines the behaviour; ``_speedups.alert_fields`` computes the same in C (and
        returns ``None`` for argument types it leaves to this)."""
        get = data.get
        return {n: v if len(v) <= limit else v[:limit] + "…"
                for n in names if (v := get(n)) is not None}

    def _alert(self, r: CompiledRule, event: Event) -> Alert:
        data = event.data
        names = self._key_fields[r.index]
        limit = self.options.max_field_chars
        fields = _alert_fields(data, names, limit) if _alert_fields is not None else None
        if fields is None:
            fields = self._fields_py(data, names, limit)
        t = event.time_created
        rid = event.record_id
        # positional, in Alert's field order: rule_id, title, level, status, kind, tags,
        # window_start, window_end, computer, group, record_ids, event_count, event_ids, rules,
        # value, fields, source_file, event
        return Alert(r.key, r.title, r.level, r.status, "detection", r.tags, t, t,
                     event.computer or "", {}, () if rid is None else (rid,), 1,
                     (event.event_id,), (), None, fields, source_of(event),
                     matched_event(event, limit))

    def register_rules(self) -> None:
        """Make this stage's rules' texts (description, author, references, falsepositives)
        known to their alerts (:func:`.alerts.register_rules`); done when the stage is built
        or taken from the rule cache."""
        _register_rules(self.rule_texts)

    # -- reports -------------------------------------------------------------------------------

    @property
    def rules_loaded(self) -> int:
        """Detection rules compiled plus correlations compiled."""
        return len(self.matcher.compiled) + len(self.correlations)

    @property
    def rejected(self) -> list:
        """The issues that rejected a rule or file."""
        return [i for i in self.issues if i.rejected]

    def rejection_summary(self) -> Counter:
        """Rejections counted by reason code."""
        return Counter(i.code for i in self.issues if i.rejected)

    def summary_rows(self, include_silent: bool = False) -> list[SummaryRow]:
        """Rules that matched or alerted (all rules with ``include_silent``), most severe first,
        then most hits."""
        rows = []
        for r in self.matcher.compiled:
            m, a = self.matches.get(r.key, 0), self.alert_counts.get(r.key, 0)
            if m or a or include_silent:
                rows.append(SummaryRow(r.level, r.key, r.title, "detection", m, a))
        if self.correlation is not None:
            st = self.correlation.stats
            for c in self.correlations:
                m, a = st.hits.get(c.key, 0), self.alert_counts.get(c.key, 0)
                if m or a or include_silent:
                    rows.append(SummaryRow(c.level, c.key, c.title, c.kind, m, a))
        rank = {lv: i for i, lv in enumerate(LEVELS)}
        rows.sort(key=lambda x: (-rank.get(x.level, -1), -x.alerts, -x.matches, x.title))
        return rows

    def format_summary(self) -> str:
        """The summary as a plain text table (level, hits, alerts, rule)."""
        rows = self.summary_rows()
        lines = [f"{'level':<13} {'matches':>8} {'alerts':>7}  rule"]
        for r in rows:
            lines.append(f"{r.level or '-':<13} {r.matches:>8} {r.alerts:>7}  {r.title} "
                         f"[{r.rule_id}]" + (f" ({r.kind})" if r.kind != "detection" else ""))
        by_level = ", ".join(f"{lv}: {n}" for lv, n in sorted(
            self.stats.alerts_by_level.items(), key=lambda kv: -({lv: i for i, lv in enumerate(
                LEVELS)}.get(kv[0], -1))))
        lines.append(f"alerts: {self.stats.alerts}" + (f" ({by_level})" if by_level else ""))
        lines.extend(self.ungrouped_lines())
        return "\n".join(lines)

    def ungrouped_lines(self) -> list[str]:
        """One line per correlation that left hits uncounted because their events lacked a
        group-by field (see :mod:`.correlation`)."""
        if self.correlation is None:
            return []
        titles = {c.key: c.title for c in self.correlations}
        return [f"correlation {titles.get(k) or k} [{k}]: {n} hit(s) not counted: the event "
                "has no value for a group-by field"
                for k, n in sorted(self.correlation.stats.ungrouped.items())]


def _src(rule) -> str:
    src = getattr(rule, "source", None)
    return str(src.path) if src is not None and getattr(src, "path", None) else ""
