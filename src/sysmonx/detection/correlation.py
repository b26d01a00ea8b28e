"""Sigma correlation rules evaluated incrementally over the event stream.

Every correlation type of the Sigma correlation rules specification (v2.1.0, "Correlation
Types"): ``event_count``, ``value_count``, ``temporal``, ``temporal_ordered``, ``value_sum``,
``value_avg``, ``value_percentile``, ``value_median``; with ``group-by``, ``timespan``,
``aliases`` ("Field Name Aliases"), ``generate`` and chaining (a correlation may refer to
another). pySigma's extended (boolean) condition of temporal correlations is supported too.

Semantics, precisely:

* **Time** is the event's ``TimeCreated``; order ties are broken by arrival order. A hit is the
  match of a referenced rule (or an alert of a referenced correlation, at its window end).
* **Groups**: the hit's values of the ``group-by`` fields (an alias resolves to the field named
  for the hit's rule) form the group key, compared exactly. Hits of one group never count toward
  another. Without ``group-by`` there is one group. A hit whose event lacks a group-by field is
  not counted at all (as ``stats ... by`` drops such events in Splunk), never pooled into a
  ``null`` group: it is counted in :attr:`CorrelationStats.ungrouped` and reported, and fields
  Sysmon never writes for the referenced rules' events are load warnings
  (:meth:`CompiledCorrelation.unknown_fields`).
* **Windows**: conditions that can only become true by more hits (``gt``/``gte``, and the
  default condition of ``temporal``/``temporal_ordered``) are checked on every hit over the
  sliding window ``[newest - timespan, newest]`` of its group, so a burst is detected as soon as
  it qualifies. The other operators (``lt``, ``lte``, ``eq``, ``neq``, and an extended condition
  with ``not``) need the whole window: they are checked when the window closes, over tumbling
  windows that start at the group's first hit (closed by a later hit past the window, by the
  stream clock moving past it, or by :meth:`CorrelationEngine.finish`). A group without any hit
  is never observed, so "fewer than N" means "between 1 and N-1".
* **temporal_ordered** needs one hit per referenced rule in the listed order, each strictly after
  the previous one (time, then arrival), the first and last at most ``timespan`` apart; one event
  never fills two steps. Found by a greedy earliest-successor search over each group's hits, so
  out-of-order arrival within the window is judged by event time.
* **Aggregates**: ``value_count`` counts distinct values (tuples when ``field`` is a list) and
  ignores hits without the field; ``value_sum``/``value_avg``/``value_median``/
  ``value_percentile`` use the hits whose field parses as a number (percentile: linear
  interpolation between closest ranks, ``condition.percentile`` 0-100). ``value_percentile``
  without ``percentile`` is the specification's own example ("a process name seen in less than
  1% of the processes"): at window close, every value of the field whose share of the group's
  hits (in percent) satisfies the condition gets an alert, the value added to its group.
* **Suppression**: when a correlation fires for a group, the hits it covers are consumed and the
  same correlation and group stays silent for one ``timespan`` after the alert (hits still
  accumulate), so one burst gives one alert, not one per sliding window.
* **Bounded state**: hits older than the window are evicted as the group's time advances; a
  sweep drops groups whose window ended (closing tumbling windows first); each correlation keeps
  at most ``max_groups`` groups (least recently used evicted, counted in
  :attr:`CorrelationStats.evicted_groups`) and each group at most ``max_entries`` hits (oldest
  dropped, counted in ``dropped_hits``). Hits older than their group's window are ``late`` and
  ignored.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any, Callable, Optional

from ..core.errors import RuleError
from ..event import Event, TimeFormatError, normalize_time
from .alerts import Alert
from .fields import field_getter
from . import _pysigma

if TYPE_CHECKING:
    from sigma.correlations import (
        CorrelationConditionAND,
        CorrelationConditionNOT,
        CorrelationConditionOR,
        SigmaCorrelationRule,
        SigmaCorrelationType,
        SigmaExtendedCorrelationCondition,
        SigmaRuleReference,
    )

#: pySigma's names this module uses, bound on first use (:func:`_need_sigma`).
_SIGMA = {"sigma.correlations": (
    "CorrelationConditionAND", "CorrelationConditionNOT", "CorrelationConditionOR",
    "SigmaCorrelationRule", "SigmaCorrelationType", "SigmaExtendedCorrelationCondition",
    "SigmaRuleReference")}


def _need_sigma() -> None:
    """Bind pySigma's names (:data:`_SIGMA`) into this module on first use
    (:mod:`._pysigma`): a run from the rule cache compiles nothing and does not import
    pySigma."""
    if "SigmaRuleReference" not in globals():
        _pysigma.bind(globals(), _SIGMA)


__all__ = ["CorrelationEngine", "CompiledCorrelation", "CorrelationStats", "CorrelationError",
           "Hit", "time_ns", "format_ns"]

NS = 1_000_000_000
_EPOCH_ORD = date(1970, 1, 1).toordinal()


class CorrelationError(RuleError):
    """A correlation rule the engine cannot evaluate (reported at load with the reason)."""

    def __init__(self, message: str) -> None:
        super().__init__("correlation", message)

    def __reduce__(self) -> tuple:
        return (type(self), (self.message,))


def time_ns(t: str) -> Optional[int]:
    """Canonical UTC time string -> nanoseconds since 1970 (``None`` if not a time)."""
    if len(t) != 30 or t[10] != "T" or t[29] != "Z":
        try:
            t = normalize_time(t)
        except (TimeFormatError, ValueError):
            return None
    try:
        days = date(int(t[0:4]), int(t[5:7]), int(t[8:10])).toordinal() - _EPOCH_ORD
        secs = days * 86400 + int(t[11:13]) * 3600 + int(t[14:16]) * 60 + int(t[17:19])
        return secs * NS + int(t[20:29])
    except ValueError:
        return None


def format_ns(ns: int) -> str:
    """Nanoseconds since 1970 -> canonical UTC time string."""
    secs, frac = divmod(ns, NS)
    days, rem = divmod(secs, 86400)
    d = date.fromordinal(days + _EPOCH_ORD)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return f"{d.isoformat()}T{h:02d}:{m:02d}:{s:02d}.{frac:09d}Z"


_GETTERS: dict[str, Callable[[Event], Optional[str]]] = {}


def _get(event: Event, name: str) -> Optional[str]:
    g = _GETTERS.get(name)
    if g is None:
        g = field_getter(name) or (lambda e: e.data.get(name))
        _GETTERS[name] = g
    return g(event)


@dataclass
class Hit:
    """One thing a correlation counts.

    Attributes:
        source: the pySigma rule (detection or correlation) that produced it.
        time: nanoseconds since 1970; ``seq``: arrival number (order ties).
        event: the matched event (detection hits), else ``None``.
        values: field values of a correlation hit (its group values), else ``None``.
        record_ids, event_ids: of the events behind the hit.
        count: events behind the hit.
        computer: System/Computer of the (last) event.
        start: time of the first event behind the hit (a correlation's window start), else
            ``time``.
        channels: System/Channel of the events behind the hit (distinct, in order of
            appearance; ``""`` for an event without one).
    """

    source: object
    time: int
    seq: int
    event: Optional[Event] = None
    values: Optional[dict] = None
    record_ids: tuple = ()
    event_ids: tuple = ()
    count: int = 1
    computer: str = ""
    start: Optional[int] = None
    channels: tuple = ()

    def get(self, name: str) -> Optional[str]:
        """Value of field ``name`` in the hit's event (or correlation values)."""
        if self.event is not None:
            return _get(self.event, name)
        if self.values is not None:
            return self.values.get(name)
        return None


# An entry of a group's state: (time, seq, value, record_ids, event_ids, count, computer, start,
# channels)
_T, _SEQ, _VAL, _RIDS, _EIDS, _CNT, _COMP, _START, _CHANS = range(9)


class _Group:
    __slots__ = ("entries", "steps", "newest", "suppress_until", "window_start")

    def __init__(self, n_steps: int) -> None:
        self.entries: list = []
        self.steps: list = [[] for _ in range(n_steps)] if n_steps else []
        self.newest: Optional[int] = None
        self.suppress_until: Optional[int] = None
        self.window_start: Optional[int] = None


@dataclass
class CorrelationStats:
    """Counters of the correlation engine (per correlation key: id, name or title).
    ``ungrouped``: hits not counted because their event lacks a group-by field."""

    hits: Counter = field(default_factory=Counter)
    alerts: Counter = field(default_factory=Counter)
    evicted_groups: Counter = field(default_factory=Counter)
    dropped_hits: Counter = field(default_factory=Counter)
    late_hits: Counter = field(default_factory=Counter)
    ignored_values: Counter = field(default_factory=Counter)
    ungrouped: Counter = field(default_factory=Counter)


_OPS: dict[str, Callable] = {
    "LT": lambda a, b: a < b, "LTE": lambda a, b: a <= b, "GT": lambda a, b: a > b,
    "GTE": lambda a, b: a >= b, "EQ": lambda a, b: a == b, "NEQ": lambda a, b: a != b,
}


def _percentile(values: list, p: float) -> float:
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    k = (len(xs) - 1) * p / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def _number(v) -> Optional[float]:
    if v is None:
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        s = str(v).strip().lower()
        if s.startswith("0x"):
            try:
                return float(int(s, 16))
            except ValueError:
                return None
        return None
    return x if math.isfinite(x) else None


def _ref_key(rule) -> str:
    return str(rule.id) if getattr(rule, "id", None) else (getattr(rule, "name", None)
                                                          or getattr(rule, "title", "") or "")



def _field_for(alias_map: dict, name: str, rule) -> str:
    """The event field behind ``name`` for referenced ``rule``: the rule's mapping of the alias
    ``name`` (matched by rule object, id or name), else ``name`` itself (Sigma correlation
    specification, "aliases")."""
    alias = alias_map.get(name)
    if alias is not None:
        for ref, fld in alias.mapping.items():
            if getattr(ref, "rule", None) is rule or ref.reference in (
                    str(rule.id) if rule.id else None, rule.name):
                return fld
    return name

class CompiledCorrelation:
    """One correlation rule ready to evaluate.

    Attributes:
        rule: the pySigma :class:`~sigma.correlations.SigmaCorrelationRule`.
        key, title, level, status, tags, kind: metadata (``kind`` = correlation type).
        timespan: nanoseconds.
        group_by: the ``group-by`` names (aliases included), ``()`` for one group.
        refs: the referenced pySigma rules, in the listed order.
        arrival: True when checked on every hit (sliding window), False at window close.
        output: False when a referencing correlation consumes it without ``generate``.
    Raises:
        CorrelationError: on construction, for a correlation the engine cannot evaluate.
    """

    def __init__(self, rule: SigmaCorrelationRule) -> None:
        _need_sigma()
        self.rule = rule
        self.key = _ref_key(rule)
        self.title = rule.title or ""
        self.level = str(rule.level) if rule.level else ""
        self.status = str(rule.status) if rule.status else ""
        self.tags = tuple(str(t) for t in rule.tags)
        self.kind = rule.type.name.lower()
        self.timespan = rule.timespan.seconds * NS
        self.group_by = tuple(rule.group_by or ())
        self.refs = [r.rule for r in rule.referenced_rules]
        self.ref_names = tuple(_ref_key(r) for r in self.refs)
        self.output = True
        self.parents: list = []
        self.groups: OrderedDict = OrderedDict()
        # Per referenced rule: the field names behind each group-by name (aliases resolved).
        self._fields_for: dict = {}
        alias_map = {a.alias: a for a in rule.aliases}
        for r in self.refs:
            self._fields_for[id(r)] = tuple(_field_for(alias_map, g, r) for g in self.group_by)
        cond = rule.condition
        self.extended = None
        self.percentile: Optional[float] = None
        self.threshold: float = 1
        self.fieldref: tuple = ()
        t = rule.type
        if isinstance(cond, SigmaExtendedCorrelationCondition):
            if t is not SigmaCorrelationType.TEMPORAL:
                raise CorrelationError("an extended (boolean) condition is only supported for "
                                       "temporal correlations")
            self.extended = cond.parsed
            self.op, self.threshold = "GTE", 1
            self.arrival = not _has_not(self.extended)
        else:
            self.op = cond.op.name
            self.threshold = cond.count
            self.arrival = self.op in ("GT", "GTE")
            if cond.fieldref is not None:
                self.fieldref = tuple(cond.fieldref) if isinstance(cond.fieldref, list) \
                    else (cond.fieldref,)
            self.percentile = cond.percentile
        if t is SigmaCorrelationType.TEMPORAL_ORDERED and not (
                self.op == "GTE" and self.threshold == len(self.refs)):
            raise CorrelationError("temporal_ordered supports only its default condition (every "
                                   "referenced rule, in order)")
        # value_percentile without condition.percentile is the specification's example form:
        # the share (in percent) of the window's hits that carry each value of the field.
        self.rarity = t is SigmaCorrelationType.VALUE_PERCENTILE and self.percentile is None
        if self.rarity:
            self.arrival = False
        elif t is SigmaCorrelationType.VALUE_PERCENTILE and not (
                self.percentile is not None and 0 <= self.percentile <= 100):
            raise CorrelationError("value_percentile: condition.percentile must be 0-100")
        if t in (SigmaCorrelationType.VALUE_COUNT, SigmaCorrelationType.VALUE_SUM,
                 SigmaCorrelationType.VALUE_AVG, SigmaCorrelationType.VALUE_MEDIAN,
                 SigmaCorrelationType.VALUE_PERCENTILE) and not self.fieldref:
            raise CorrelationError(f"{self.kind} needs condition.field")
        if not self.refs:
            raise CorrelationError("no referenced rules")
        self._value_fields: dict = {}
        for r in self.refs:
            self._value_fields[id(r)] = tuple(_field_for(alias_map, f, r) for f in self.fieldref)
        self.n_steps = len(self.refs) if t in (SigmaCorrelationType.TEMPORAL,
                                               SigmaCorrelationType.TEMPORAL_ORDERED) else 0

    def __getstate__(self) -> dict:
        """Pickled state (the rule cache): the per-reference tables are keyed by ``id()`` of
        the referenced rules, which a copy does not keep, so they travel in ``refs`` order."""
        state = self.__dict__.copy()
        state["_fields_for"] = [self._fields_for[id(r)] for r in self.refs]
        state["_value_fields"] = [self._value_fields[id(r)] for r in self.refs]
        return state

    def __setstate__(self, state: dict) -> None:
        refs = state["refs"]
        state["_fields_for"] = {id(r): v for r, v in zip(refs, state["_fields_for"], strict=True)}
        state["_value_fields"] = {id(r): v for r, v in zip(refs, state["_value_fields"],
                                                           strict=True)}
        self.__dict__.update(state)

    def group_key(self, hit: Hit) -> tuple:
        """The hit's group (values of the group-by fields for its rule); a value is ``None``
        where the hit lacks the field."""
        return tuple(hit.get(f) for f in self._fields_for[id(hit.source)])

    def unknown_fields(self, known_for: Callable[[object], Optional[frozenset]]
                       ) -> list[tuple[str, str, str, Any]]:
        """Group-by and value fields no hit of a referenced rule can carry.

        Args:
            known_for: ``known_for(rule) -> names`` a hit of that referenced rule can carry
                (for a detection rule the fields of the events of its log source; for a
                correlation its own group-by and value names), or ``None`` when unknown
                (nothing is checked for that rule).
        Returns:
            ``[(role, name as written, field behind it for that rule, rule)]``, ``role``
            ``group-by`` or ``value``.
        """
        out = []
        for r in self.refs:
            known = known_for(r)
            if known is None:
                continue
            for role, names, fields in (("group-by", self.group_by, self._fields_for[id(r)]),
                                        ("value", self.fieldref, self._value_fields[id(r)])):
                for name, fld in zip(names, fields, strict=True):
                    if fld not in known:
                        out.append((role, name, fld, r))
        return out

    def carries(self) -> frozenset:
        """Names a hit of this correlation carries for a referencing one: its group-by names
        (and value field names for the value_percentile rarity form)."""
        return frozenset(self.group_by) | (frozenset(self.fieldref) if self.rarity
                                          else frozenset())

    def value_of(self, hit: Hit):
        """The aggregated value of a hit (``None``: not counted)."""
        names = self._value_fields[id(hit.source)]
        if self.kind == "value_count" or self.rarity:
            vals = tuple(hit.get(f) for f in names)
            if any(v is None for v in vals):
                return None
            return vals[0] if len(vals) == 1 else vals
        return _number(hit.get(names[0]))


def _has_not(node) -> bool:
    _need_sigma()
    if isinstance(node, CorrelationConditionNOT):
        return True
    if isinstance(node, (CorrelationConditionAND, CorrelationConditionOR)):
        return any(_has_not(a) for a in node.args)
    return False


def _eval_extended(node, present: set) -> bool:
    _need_sigma()
    if isinstance(node, SigmaRuleReference):
        return node.reference in present
    if isinstance(node, CorrelationConditionNOT):
        return not _eval_extended(node.args[0], present)
    if isinstance(node, CorrelationConditionAND):
        return all(_eval_extended(a, present) for a in node.args)
    if isinstance(node, CorrelationConditionOR):
        return any(_eval_extended(a, present) for a in node.args)
    return False


class CorrelationEngine:
    """Evaluates compiled correlations over hits.

    Args:
        correlations: compiled correlations (chains included; parents are linked here).
        max_groups: groups kept per correlation (LRU beyond).
        max_entries: hits kept per group (oldest dropped beyond).
        max_alert_records: record ids listed in one alert.
    """

    SWEEP_EVERY = 512

    def __init__(self, correlations: list, max_groups: int = 10000, max_entries: int = 10000,
                 max_alert_records: int = 100) -> None:
        self.correlations = correlations
        self.max_groups = max_groups
        self.max_entries = max_entries
        self.max_alert_records = max_alert_records
        self.stats = CorrelationStats()
        #: id(pySigma rule) -> [(correlation, step)] of the correlations counting its hits.
        self.consumers: dict = {}
        by_rule = {id(c.rule): c for c in correlations}
        for c in correlations:
            for step, r in enumerate(c.refs):
                self.consumers.setdefault(id(r), []).append((c, step))
                child = by_rule.get(id(r))
                if child is not None and (c, step) not in child.parents:
                    child.parents.append((c, step))
        self._seq = 0
        self.clock: Optional[int] = None
        self._since_sweep = 0
        self._min_span = min((c.timespan for c in correlations), default=0)

    def __getstate__(self) -> dict:
        """Pickled state (the rule cache): ``consumers`` is keyed by ``id()`` of rule objects,
        which a copy does not keep, so it travels as ``(rule, consumers)`` pairs."""
        state = self.__dict__.copy()
        rules = {id(r): r for c in self.correlations for r in c.refs}
        state["consumers"] = [(rules[k], v) for k, v in self.consumers.items()]
        return state

    def __setstate__(self, state: dict) -> None:
        state["consumers"] = {id(r): v for r, v in state["consumers"]}
        self.__dict__.update(state)

    def consumes(self, rule) -> bool:
        """True when some correlation counts hits of ``rule`` (a pySigma rule)."""
        return id(rule) in self.consumers

    # -- input ---------------------------------------------------------------------------------

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def event_hit(self, rule, event: Event, t: int, seq: Optional[int] = None) -> list[Alert]:
        """Count a detection match of ``rule`` (pySigma rule) on ``event`` at time ``t`` (ns).

        ``seq`` orders hits of equal time; give the matches of one event the same ``seq`` (see
        :meth:`next_seq`) so that one event never fills two steps of a temporal_ordered chain.
        """
        hit = Hit(rule, t, self.next_seq() if seq is None else seq, event=event,
                  record_ids=(event.record_id,) if event.record_id is not None else (),
                  event_ids=(event.event_id,), computer=event.computer or "",
                  channels=(event.channel or "",))
        return self.feed(hit)

    def feed(self, hit: Hit) -> list[Alert]:
        """Count ``hit`` in every correlation that refers to its rule; returns the alerts of the
        correlations that output (chained hits are fed to parents)."""
        out: list = []
        for corr, step in self.consumers.get(id(hit.source), ()):
            self.stats.hits[corr.key] += 1
            for alert, chit in self._hit(corr, step, hit):
                self.stats.alerts[corr.key] += 1
                if corr.output:
                    out.append(alert)
                if corr.parents:
                    out.extend(self.feed(chit))
        return out

    def advance(self, t: Optional[int]) -> list[Alert]:
        """Move the stream clock to ``t`` (ns); every few hundred events, close and drop the
        windows that ended. Returns alerts of closed windows."""
        if t is None:
            return []
        if self.clock is None or t > self.clock:
            self.clock = t
        self._since_sweep += 1
        if self._since_sweep < self.SWEEP_EVERY:
            return []
        self._since_sweep = 0
        return self.sweep()

    def sweep(self) -> list[Alert]:
        """Close windows that ended before the clock; drop idle groups."""
        out: list = []
        if self.clock is None:
            return out
        for corr in self.correlations:
            cutoff = self.clock - corr.timespan
            groups = corr.groups
            while groups:
                key, st = next(iter(groups.items()))
                end = st.window_start if not corr.arrival else st.newest
                if end is None or end >= cutoff:
                    break
                del groups[key]
                if not corr.arrival:
                    out.extend(self._emit(corr, self._close(corr, key, st)))
        return out

    def finish(self) -> list[Alert]:
        """Close every open window (end of stream); state is cleared."""
        out: list = []
        for corr in self.correlations:
            groups = corr.groups
            corr.groups = OrderedDict()
            if not corr.arrival:
                for key, st in groups.items():
                    out.extend(self._emit(corr, self._close(corr, key, st)))
        return out

    def _emit(self, corr: CompiledCorrelation, fired: list) -> list[Alert]:
        out: list = []
        for alert, chit in fired:
            self.stats.alerts[corr.key] += 1
            if corr.output:
                out.append(alert)
            if corr.parents:
                out.extend(self.feed(chit))
        return out

    # -- state ---------------------------------------------------------------------------------

    def _state(self, corr: CompiledCorrelation, key: tuple) -> _Group:
        groups = corr.groups
        st = groups.get(key)
        if st is None:
            st = groups[key] = _Group(corr.n_steps)
            if len(groups) > self.max_groups:
                groups.popitem(last=False)
                self.stats.evicted_groups[corr.key] += 1
        else:
            groups.move_to_end(key)
        return st

    def _hit(self, corr: CompiledCorrelation, step: int, hit: Hit) -> list:
        key = corr.group_key(hit)
        if None in key:  # never pooled into a "null" group: not counted, and reported
            self.stats.ungrouped[corr.key] += 1
            return []
        value = None
        if corr.fieldref:
            value = corr.value_of(hit)
            if value is None:
                self.stats.ignored_values[corr.key] += 1
                return []
        st = self._state(corr, key)
        t = hit.time
        entry = (t, hit.seq, value, hit.record_ids, hit.event_ids, hit.count, hit.computer,
                 t if hit.start is None else hit.start, hit.channels)
        fired: list = []
        if corr.arrival:
            newest = t if st.newest is None or t > st.newest else st.newest
            cutoff = newest - corr.timespan
            if t < cutoff:
                self.stats.late_hits[corr.key] += 1
                return []
            st.newest = newest
            self._insert(corr, st, step, entry)
            self._expire(st, cutoff)
            if st.suppress_until is not None and newest < st.suppress_until:
                return []
            st.suppress_until = None
            results = self._check(corr, key, st)
            if results:
                fired.extend(results)
                st.entries.clear()
                for s in st.steps:
                    s.clear()
                st.suppress_until = newest + corr.timespan
            return fired
        # window-close evaluation (tumbling windows from the group's first hit)
        if st.window_start is None:
            st.window_start = t
        elif t < st.window_start:
            self.stats.late_hits[corr.key] += 1
            return []
        elif t > st.window_start + corr.timespan:
            fired.extend(self._close(corr, key, st))
            st.window_start = t
        st.newest = t if st.newest is None or t > st.newest else st.newest
        self._insert(corr, st, step, entry)
        return fired

    def _insert(self, corr: CompiledCorrelation, st: _Group, step: int, entry: tuple) -> None:
        lst = st.steps[step] if corr.n_steps else st.entries
        if not lst or (entry[_T], entry[_SEQ]) >= (lst[-1][_T], lst[-1][_SEQ]):
            lst.append(entry)
        else:
            bisect.insort(lst, entry, key=lambda e: (e[_T], e[_SEQ]))
        if len(lst) > self.max_entries:
            del lst[0]
            self.stats.dropped_hits[corr.key] += 1

    @staticmethod
    def _expire(st: _Group, cutoff: int) -> None:
        lists = st.steps if st.steps else (st.entries,)
        for lst in lists:
            if lst and lst[0][_T] < cutoff:
                i = bisect.bisect_left(lst, cutoff, key=lambda e: e[_T])
                del lst[:i]

    def _close(self, corr: CompiledCorrelation, key: tuple, st: _Group) -> list:
        results = self._check(corr, key, st)
        st.entries = []
        st.steps = [[] for _ in st.steps]
        return results

    # -- conditions ----------------------------------------------------------------------------

    def _check(self, corr: CompiledCorrelation, key: tuple, st: _Group) -> list:
        """``[(alert, hit for parents)]`` when the condition holds over the group's state."""
        kind = corr.kind
        cmp = _OPS[corr.op]
        if kind == "temporal_ordered":
            chain = self._chain(corr, st.steps)
            if chain is None:
                return []
            return [self._alert(corr, key, chain, float(len(chain)))]
        if corr.rarity:
            entries = st.entries
            if not entries:
                return []
            counts = Counter(e[_VAL] for e in entries)
            out = []
            for value, n in counts.items():
                share = 100.0 * n / len(entries)
                if cmp(share, corr.threshold):
                    these = [e for e in entries if e[_VAL] == value]
                    extra = dict(zip(corr.fieldref, value if isinstance(value, tuple)
                                     else (value,), strict=False))
                    out.append(self._alert(corr, key, these, share, extra))
            return out
        if kind == "temporal":
            present_steps = [i for i, s in enumerate(st.steps) if s]
            if corr.extended is not None:
                names = {corr.ref_names[i] for i in present_steps}
                names |= {getattr(corr.refs[i], "name", None) or "" for i in present_steps}
                if not _eval_extended(corr.extended, names):
                    return []
            elif not cmp(len({id(corr.refs[i]) for i in present_steps}), corr.threshold):
                return []
            entries = sorted((e for i in present_steps for e in st.steps[i]),
                             key=lambda e: (e[_T], e[_SEQ]))
            if not entries:
                return []
            return [self._alert(corr, key, entries,
                                float(len({id(corr.refs[i]) for i in present_steps})))]
        entries = st.entries
        if not entries:
            return []
        if kind == "event_count":
            agg: float = float(len(entries))
        elif kind == "value_count":
            agg = float(len({e[_VAL] for e in entries}))
        else:
            vals = [e[_VAL] for e in entries]
            if kind == "value_sum":
                agg = float(sum(vals))
            elif kind == "value_avg":
                agg = sum(vals) / len(vals)
            elif kind == "value_median":
                agg = _percentile(vals, 50)
            else:
                agg = _percentile(vals, corr.percentile if corr.percentile is not None else 50)
        if not cmp(agg, corr.threshold):
            return []
        return [self._alert(corr, key, entries, agg)]

    @staticmethod
    def _chain(corr: CompiledCorrelation, steps: list) -> Optional[list]:
        """Earliest ordered chain (one entry per step, strictly increasing (time, seq)) whose
        first and last entries are at most ``timespan`` apart, or ``None``."""
        if any(not s for s in steps):
            return None
        span = corr.timespan
        first = steps[0]
        for start in first:
            chain = [start]
            cur = (start[_T], start[_SEQ])
            within = True
            for lst in steps[1:]:
                i = bisect.bisect_right(lst, cur, key=lambda e: (e[_T], e[_SEQ]))
                if i >= len(lst):
                    return None  # no successor for this start: none for later starts either
                nxt = lst[i]
                if nxt[_T] - start[_T] > span:
                    within = False
                    break
                chain.append(nxt)
                cur = (nxt[_T], nxt[_SEQ])
            if within:
                return chain
        return None

    def _alert(self, corr: CompiledCorrelation, key: tuple, entries: list, agg: float,
               extra: Optional[dict] = None):
        start, end = min(e[_START] for e in entries), max(e[_T] for e in entries)
        rids: list = []
        eids: list = []
        chans: list = []
        count = 0
        for e in entries:
            count += e[_CNT]
            for eid in e[_EIDS]:
                if eid not in eids:
                    eids.append(eid)
            for ch in e[_CHANS]:
                if ch not in chans:
                    chans.append(ch)
            if len(rids) < self.max_alert_records:
                rids.extend(e[_RIDS][: self.max_alert_records - len(rids)])
        group = dict(zip(corr.group_by, key, strict=True))
        if extra:
            group.update(extra)
        alert = Alert(rule_id=corr.key, title=corr.title, level=corr.level, status=corr.status,
                      kind=corr.kind, tags=corr.tags, window_start=format_ns(start),
                      window_end=format_ns(end), computer=entries[-1][_COMP], group=group,
                      record_ids=tuple(rids), event_count=count, event_ids=tuple(eids),
                      rules=corr.ref_names, value=agg, fields=dict(group))
        # a ClassVar of Alert, set on this instance (not a dataclass field: alerts.py)
        setattr(alert, "correlation_channels", tuple(chans))  # noqa: B010
        chit = Hit(corr.rule, end, self.next_seq(), values=dict(group), record_ids=tuple(rids),
                   event_ids=tuple(eids), count=count, computer=entries[-1][_COMP], start=start,
                   channels=tuple(chans))
        return alert, chit
