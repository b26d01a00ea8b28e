"""Per-rule cost of Sigma detection (``--profile-rules``): what each rule cost and what the
prefilter spared.

::

    profile = RuleProfile.attach(stage)      # from now on every evaluation is counted and timed
    ... run the replay ...
    profile.detach()
    profile.top(10)                          # the 10 most expensive detection rules
    profile.to_json()                        # the full table (shape below)

**What is counted.** Rules are grouped by the events their log source covers
(:mod:`.logsource`); an event reaches one group (Sysmon events) and every rule of that group is
*eligible* for it. The prefilter (:class:`~.matcher.RuleMatcher`: one automaton per field,
each rule indexed by its rarest necessary clause) picks *candidates* (the rule's lead clause
was found in the event), then checks up to three other necessary clauses; the rules that pass,
and the unindexed rules of the group (nothing they require can be found by the automaton), are
*evaluated*: their compiled condition runs. Per rule: ``eligible``, ``candidates``,
``evaluations``, ``skipped`` (= eligible - evaluations: evaluations the prefilter spared),
``matches`` and ``time_ns``. Run-wide: events, events no rule's log source covers, the sums,
``skip_rate`` (skipped / eligible) and ``hit_rate`` (matches / evaluations: how often an
evaluation the prefilter let through found a match), and ``prefilter_ns`` (time of the value
lookups, automaton scans and candidate choice).

**Time.** ``time.perf_counter_ns`` (a monotonic clock read through the vDSO, about 0.1 µs a
call here) before and after each rule's evaluation: wall time of this thread, so on a busy
machine it includes time the thread was preempted. ``time.thread_time_ns`` (CPU time) is a
system call costing about 1 µs here, as much as a typical evaluation, so it is not used.
``timer_floor_ns`` is what one measurement reads with nothing between the two calls (the
median over a few thousand back-to-back pairs, measured at :meth:`RuleProfile.attach`);
``cost_ns`` = ``time_ns - evaluations * timer_floor_ns`` (never below 0) is the estimate of the
rule's own cost, by which rules are ranked.

Correlation rules: ``time_ns`` is the time the correlation engine spent on each correlation
rule (counting a hit of a referenced rule into its groups and checking its condition, closing
its windows on the clock and at the end), ``calls`` how many such steps, ``hits`` and
``alerts`` from the engine's own counters.

**Zero cost when off.** Nothing in the matcher or the engine checks for a profile: attaching
replaces :meth:`RuleMatcher.match <.matcher.RuleMatcher.match>` and two engine methods on those
instances only, detaching restores the classes' own methods.

JSON shape (``--profile-rules-out``; ``version`` changes when a key changes meaning or goes
away; keys may be added)::

    {"version": 1, "timer": "perf_counter_ns", "timer_floor_ns": 60,
     "events": 1000, "events_without_rules": 12,
     "prefilter": {"eligible": 480000, "candidates": 2100, "evaluations": 1500,
                   "skipped": 478500, "matches": 3, "skip_rate": 0.996875,
                   "hit_rate": 0.002, "time_ns": 9100000},
     "evaluation_ns": 2400000,
     "rules": [{"id": "...", "title": "...", "file": "rules.tar.gz!a.yml", "level": "high",
                "indexed": true, "eligible": 970, "candidates": 40, "evaluations": 40,
                "skipped": 930, "matches": 1, "time_ns": 51000, "cost_ns": 48600}, ...],
     "correlations": [{"id": "...", "title": "...", "file": "...", "level": "high",
                       "type": "event_count", "hits": 3, "alerts": 1, "calls": 4,
                       "time_ns": 41000}, ...]}

``rules`` holds every compiled detection rule, most expensive (``cost_ns``) first, then by
title; ``correlations`` every compiled correlation, by ``time_ns``. ``id`` is the rule's id,
else its name, else its title.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

if TYPE_CHECKING:
    from .stage import DetectionStage

__all__ = ["RuleProfile", "PROFILE_VERSION", "write_profile"]

#: Version of the JSON shape of :meth:`RuleProfile.to_json`.
PROFILE_VERSION = 1


def _timer_floor(clock: Callable[[], int], rounds: int = 4001) -> int:
    """Median of ``clock() - clock()`` back to back, ns: what a measurement of nothing reads."""
    deltas = []
    for _ in range(rounds):
        t = clock()
        deltas.append(clock() - t)
    deltas.sort()
    return deltas[len(deltas) // 2]


def _source(rule: Any) -> str:
    src = getattr(rule, "source", None)
    return str(src.path) if src is not None and getattr(src, "path", None) else ""


class RuleProfile:
    """Counters and clock times of every Sigma rule of one :class:`DetectionStage`.

    Args:
        stage: the loaded detection stage (its rules are not changed).
        clock: a function returning nanoseconds (default: :func:`time.perf_counter_ns`, looked
            up when the profile is made).
    Attributes:
        events: events matched while attached.
        events_without_rules: those no rule's log source covers (no group reached).
        group_events: ``{matcher group: events it saw}``.
        prefilter_ns: clock time of the prefilter (lookups, automaton scans, candidates).
        candidates, evaluations, matches, time_ns: per detection rule, indexed by
            ``CompiledRule.index``.
        corr_calls, corr_ns: per correlation, indexed by its position in
            ``stage.correlations``.
        timer_floor_ns: see the module docstring.
    """

    def __init__(self, stage: DetectionStage,
                 clock: Optional[Callable[[], int]] = None) -> None:
        self.stage = stage
        self.clock: Callable[[], int] = clock or time.perf_counter_ns
        n = len(stage.matcher.compiled)
        self.events = 0
        self.events_without_rules = 0
        self.group_events: dict = {}
        self.prefilter_ns = 0
        self.candidates = [0] * n
        self.evaluations = [0] * n
        self.matches = [0] * n
        self.time_ns = [0] * n
        m = len(stage.correlations)
        self.corr_calls = [0] * m
        self.corr_ns = [0] * m
        self.timer_floor_ns = _timer_floor(self.clock)
        self._attached = False

    # -- attach --------------------------------------------------------------------------------

    @classmethod
    def attach(cls, stage: DetectionStage,
               clock: Optional[Callable[[], int]] = None) -> RuleProfile:
        """A new profile counting everything ``stage`` evaluates from now on (until
        :meth:`detach`). One profile per stage at a time."""
        prof = cls(stage, clock)
        stage.matcher.set_profile(prof)
        if stage.correlation is not None:
            prof._wrap_engine(stage.correlation)
        prof._attached = True
        return prof

    def detach(self) -> None:
        """Stop counting: the matcher's and the engine's own methods again."""
        if not self._attached:
            return
        self.stage.matcher.set_profile(None)
        eng = self.stage.correlation
        if eng is not None:
            eng.__dict__.pop("_hit", None)
            eng.__dict__.pop("_close", None)
        self._attached = False

    def _wrap_engine(self, eng: Any) -> None:
        """Time the engine's per-correlation steps: ``_hit`` (a hit counted into one
        correlation's group, its condition checked; may close a window inside) and ``_close``
        when the sweep or the end of the stream closes a window (not again inside ``_hit``)."""
        index = {id(c): i for i, c in enumerate(self.stage.correlations)}
        clock, calls, spent = self.clock, self.corr_calls, self.corr_ns
        hit, close = eng._hit, eng._close
        inside = [False]

        def timed_hit(corr: Any, step: int, h: Any) -> list:
            t = clock()
            inside[0] = True
            try:
                return hit(corr, step, h)
            finally:
                inside[0] = False
                i = index[id(corr)]
                spent[i] += clock() - t
                calls[i] += 1

        def timed_close(corr: Any, key: tuple, st: Any) -> list:
            if inside[0]:
                return close(corr, key, st)
            t = clock()
            try:
                return close(corr, key, st)
            finally:
                i = index[id(corr)]
                spent[i] += clock() - t
                calls[i] += 1

        eng._hit = timed_hit
        eng._close = timed_close

    # -- results -------------------------------------------------------------------------------

    def eligible(self) -> list[int]:
        """Per detection rule: events of its groups (for which its log source was right)."""
        out = [0] * len(self.evaluations)
        for g, n in self.group_events.items():
            for r in g.rules:
                out[r.index] += n
            for r in g.always:
                out[r.index] += n
        return out

    def rules(self) -> list[dict]:
        """Every detection rule's row (shape: ``rules`` in the module docstring), most
        expensive first, then by title."""
        eligible = self.eligible()
        floor = self.timer_floor_ns
        rows: list[dict] = []
        for r in self.stage.matcher.compiled:
            i = r.index
            ev = self.evaluations[i]
            rows.append({
                "id": r.key, "title": r.title, "file": _source(r.rule), "level": r.level,
                "indexed": r.need is not None, "eligible": eligible[i],
                "candidates": self.candidates[i], "evaluations": ev,
                "skipped": eligible[i] - ev, "matches": self.matches[i],
                "time_ns": self.time_ns[i], "cost_ns": max(0, self.time_ns[i] - ev * floor)})
        rows.sort(key=lambda x: (-x["cost_ns"], -x["time_ns"], x["title"], x["id"]))
        return rows

    def top(self, n: int = 10) -> list[dict]:
        """The ``n`` most expensive detection rules (rows of :meth:`rules`)."""
        return self.rules()[:n]

    def correlations(self) -> list[dict]:
        """Every correlation's row (shape: ``correlations`` in the module docstring), most
        time first."""
        eng = self.stage.correlation
        rows: list[dict] = []
        for i, c in enumerate(self.stage.correlations):
            rows.append({
                "id": c.key, "title": c.title, "file": _source(c.rule), "level": c.level,
                "type": c.kind, "hits": eng.stats.hits.get(c.key, 0) if eng else 0,
                "alerts": eng.stats.alerts.get(c.key, 0) if eng else 0,
                "calls": self.corr_calls[i], "time_ns": self.corr_ns[i]})
        rows.sort(key=lambda x: (-x["time_ns"], x["title"], x["id"]))
        return rows

    def prefilter(self) -> dict:
        """Run-wide prefilter figures (shape: ``prefilter`` in the module docstring)."""
        eligible = sum(self.eligible())
        ev = sum(self.evaluations)
        m = sum(self.matches)
        return {"eligible": eligible, "candidates": sum(self.candidates), "evaluations": ev,
                "skipped": eligible - ev, "matches": m,
                "skip_rate": (eligible - ev) / eligible if eligible else None,
                "hit_rate": m / ev if ev else None, "time_ns": self.prefilter_ns}

    def as_dict(self) -> dict:
        """The whole profile (the JSON shape of the module docstring)."""
        return {"version": PROFILE_VERSION, "timer": getattr(self.clock, "__name__", "clock"),
                "timer_floor_ns": self.timer_floor_ns, "events": self.events,
                "events_without_rules": self.events_without_rules,
                "prefilter": self.prefilter(), "evaluation_ns": sum(self.time_ns),
                "rules": self.rules(), "correlations": self.correlations()}

    def to_json(self) -> str:
        """:meth:`as_dict` as indented JSON text (UTF-8 safe, ends with a newline)."""
        return json.dumps(self.as_dict(), indent=1, ensure_ascii=False) + "\n"

    def summary_line(self) -> str:
        """One line: events, eligible rule evaluations, how many the prefilter skipped and ran,
        the hit rate, prefilter and evaluation time."""
        p = self.prefilter()
        skip = "-" if p["skip_rate"] is None else f"{100 * p['skip_rate']:.2f} %"
        hit = "-" if p["hit_rate"] is None else f"{100 * p['hit_rate']:.3f} %"
        return (f"prefilter: {self.events:,} events ({self.events_without_rules:,} no rule "
                f"covers); {p['eligible']:,} eligible rule evaluations, {p['skipped']:,} "
                f"skipped ({skip}), {p['evaluations']:,} run ({p['candidates']:,} candidates); "
                f"{p['matches']:,} matched (hit rate {hit}); prefilter "
                f"{p['time_ns'] / 1e6:,.1f} ms, rule evaluation "
                f"{sum(self.time_ns) / 1e6:,.1f} ms (timer floor {self.timer_floor_ns} ns "
                "per evaluation)")


#: One line under ``--profile-rules``' figures that says what its words mean (a new user read
#: "3,182 run (6,953 candidates)" and "[unindexed]" as jargon).
LEGEND = ("legend: eligible = each event times the rules of its log source; skipped = the "
          "prefilter ruled the rule out (a value it needs is not in the event); candidates = "
          "the rule's rarest required value was found, run = its other checked values were "
          "too (or it is unindexed), so its condition ran; hit rate = matched / run; "
          "[unindexed] = a rule with no value to prefilter on, run on every event of its log "
          "source")


def write_profile(profile: Optional[RuleProfile], path: str) -> None:
    """Write ``profile``'s JSON to ``path``.

    Raises:
        OSError: the file cannot be written.
    """
    if profile is None:
        return
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(profile.to_json())
