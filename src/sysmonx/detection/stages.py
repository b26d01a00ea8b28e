"""Sigma detection as pipeline stages: a stateless match stage and a stateful correlation stage.

::

    ... filter ──► sigma-match ──► sigma-correlate ──► [alert-triage] ──► [sigma-alert-events]
                   (which rules     (detection alerts,   (--min-level,      (alerts as SysmonX
                    match: RuleHits) correlations, clock) --technique/--tag) event 1000)

``sigma-match`` asks the rules only (:meth:`DetectionStage.match
<sysmonx.detection.stage.DetectionStage.match>`, no stream state), so it may run in several
places; an event that matches becomes a :class:`RuleHits` item. ``sigma-correlate`` sees the one
ordered stream: it writes the event on, then its alerts (:meth:`DetectionStage.correlate
<sysmonx.detection.stage.DetectionStage.correlate>`: detection alerts, correlation alerts, windows
closed as the clock moves), advances correlation windows on :meth:`tick` (a quiet live host) and
closes them at :meth:`finish`. ``alert-triage`` holds back the alerts the run's selection
(:class:`~sysmonx.detection.triage.AlertTriage`) does not keep, after correlation saw them.
``sigma-alert-events`` turns alerts into SysmonX ``SigmaAlert``
events (ID 1000) numbered from 1 in their own channel, for runs without ``--alerts FILE``.

SysmonX ``SigmaAlert`` events read back from an input (a replayed SysmonX output) are never
matched as if they were Sysmon events: ``sigma-match`` passes them on unmatched, or drops them
when this run makes the same alert again from the events it read (its rule, ``RuleId``, is one of
this run's and the events the alert names, by ``Computer``, ``Channels``, ``EventIds`` and
``RecordIds``, were matched here; counted in :attr:`SigmaMatchStage.replaced`). An alert without
``Channels`` (written before SysmonX wrote that field) is always kept: record numbers are per
channel, so without it the events it names are not known. ``sigma-correlate`` passes them on
without reading their time.

The engine (:class:`~sysmonx.detection.stage.DetectionStage`) is shared by both stages and
imported lazily, so listing stages does not load pySigma.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Optional

from ..core.registry import STAGES
from ..event import SIGMA_ALERT_EVENT_ID, SIGMA_ALERT_PROVIDER, Event
from ..interfaces import Emit, Stage
from .alerts import split_channels

if TYPE_CHECKING:
    from .stage import DetectionStage
    from .triage import AlertTriage

__all__ = ["RuleHits", "SigmaMatchStage", "SigmaCorrelateStage", "SigmaAlertEvents",
           "AlertTriageStage", "TICK_GRACE_NS", "rule_keys"]

#: How far behind the live clock correlation windows are closed on a tick: events still on their
#: way through the sensor's queue are not older than this.
TICK_GRACE_NS = 2_000_000_000


class RuleHits:
    """An event and the detection rules it matched (internal: only ``sigma-correlate`` takes
    it; no sink accepts it)."""

    __slots__ = ("event", "hits")
    item_kind: ClassVar[str] = "hits"

    def __init__(self, event: Event, hits: list[Any]) -> None:
        self.event = event
        self.hits = hits


@STAGES.register
class SigmaMatchStage(Stage):
    """Which Sigma rules each event matches (stateless).

    Args:
        detection: the loaded :class:`~sysmonx.detection.stage.DetectionStage`.
        decide: whether this stage decides which SigmaAlert events read back are made again
            (:meth:`made_again`); ``False`` passes every one on for the process that sees the
            whole stream in input order to decide (a ``--jobs`` worker: its parent, which
            notes the workers' matches, :class:`~sysmonx.pipeline.parallel`).
    """

    name = "sigma-match"
    summary = "Sigma detection rules matched against each event (stateless)"

    #: Matched events remembered for :meth:`made_again` (the most recent; about 200 bytes
    #: each). A SigmaAlert event follows the events it was made from, so an older one only
    #: matters for an alert far behind its events: it is then kept, never lost.
    HITS_KEPT = 100_000

    def __init__(self, detection: DetectionStage, decide: bool = True) -> None:
        self.detection = detection
        self.decide = decide
        #: SigmaAlert events read back and dropped: this run made the same alert again
        self.replaced = 0
        self._keys: Optional[frozenset[str]] = None
        # (Computer, channel lower case, EventID, EventRecordID) of the events this stage
        # matched -> rule keys (record numbers are per channel: Security and Sysmon both have
        # a record 5)
        self._hits: dict[tuple[str, str, int, Optional[int]], tuple[str, ...]] = {}
        # (Computer, EventID, EventRecordID) -> the channels this stage matched it in, for an
        # alert written before Channels existed (version 2)
        self._chans: dict[tuple[str, int, Optional[int]], tuple[str, ...]] = {}

    def process(self, item: Any, emit: Emit) -> bool:
        """Pass events without a match; replace a matching event by its :class:`RuleHits`.
        A SigmaAlert event read back is never matched: dropped (counted in :attr:`replaced`)
        when this run makes the same alert again from the events it read
        (:meth:`made_again`), else passed on (an input of alerts without their events keeps
        them)."""
        if type(item) is not Event:
            return True
        if item.provider == SIGMA_ALERT_PROVIDER:
            if self.decide and item.event_id == SIGMA_ALERT_EVENT_ID and self.made_again(item):
                self.replaced += 1
                return False
            return True
        hits = self.detection.match(item)
        if not hits:
            return True
        self.note(item, hits)
        emit(RuleHits(item, hits))
        return False

    def note(self, event: Event, hits: list[Any]) -> None:
        """Remember that ``event`` matched ``hits`` (compiled rules) for :meth:`made_again`
        (done by :meth:`process`; ``--dask``'s driver notes the workers' matches)."""
        hit_keys = self._hits
        channel = (event.channel or "").lower()
        key = (event.computer, channel, event.event_id, event.record_id)
        known = hit_keys.get(key)
        hit_keys[key] = (known or ()) + tuple(r.key for r in hits)
        if known is None:
            rkey = (event.computer, event.event_id, event.record_id)
            self._chans[rkey] = self._chans.get(rkey, ()) + (channel,)
        if len(hit_keys) > self.HITS_KEPT:
            comp, chan, eid, rid = old = next(iter(hit_keys))
            del hit_keys[old]
            rkey = (comp, eid, rid)
            left = tuple(c for c in self._chans.get(rkey, ()) if c != chan)
            if left:
                self._chans[rkey] = left
            else:
                self._chans.pop(rkey, None)

    def made_again(self, alert: Event) -> bool:
        """Whether this run makes SigmaAlert event ``alert`` (read back) again: its rule
        (``RuleId``) is one of this run's and this stage matched the events it names
        (``Computer`` with ``Channels``/``EventIds``/``RecordIds``): for a detection rule, that
        event by that rule; for a correlation, every one of its records as one of its channels
        and EventIDs by some rule. An alert without ``Channels`` (version 2, written by an
        older SysmonX) is taken for made again only where each record it names was matched here
        in exactly one channel (record numbers are per channel); where two channels of that
        computer had such a record it is kept, never dropped on a guess. ``--jobs`` workers do
        not decide (``decide=False``): their parent notes every worker's matches in input
        order and decides, as one process does."""
        keys = self._keys
        if keys is None:
            keys = self._keys = rule_keys(self.detection)
        data = alert.data
        rule = data.get("RuleId")
        if rule not in keys:
            return False
        try:
            rids = [int(r) for r in data.get("RecordIds", "").split(",")]
            eids = [int(e) for e in data.get("EventIds", "").split(",")]
        except ValueError:
            return False
        hits = self._hits
        comp = alert.computer
        chans = data.get("Channels")
        if chans is None:
            # an older alert: the channel of each record it names is the one this run matched
            # it in, when there is exactly one
            found: set[str] = set()
            for r in rids:
                seen = {c for e in eids for c in self._chans.get((comp, e, r), ())}
                if len(seen) != 1:
                    return False
                found |= seen
            channels = sorted(found)
        else:
            channels = [c.lower() for c in split_channels(chans)]
        if data.get("RuleKind") == "detection":
            return (len(rids) == 1 and len(eids) == 1 and len(channels) == 1
                    and rule in hits.get((comp, channels[0], eids[0], rids[0]), ()))
        # a correlation: Channels and EventIds are its events' distinct channels and IDs,
        # RecordIds its events' records (the first max_alert_records); each record must have
        # been matched here as one of them
        return all(any((comp, c, e, r) in hits for c in channels for e in eids) for r in rids)


@STAGES.register
class SigmaCorrelateStage(Stage):
    """Detection alerts and Sigma correlations over the ordered stream (stateful).

    Args:
        detection: the same engine the match stage uses.
        tick_grace_ns: on :meth:`tick`, windows are closed up to ``now - tick_grace_ns``.
    """

    name = "sigma-correlate"
    summary = "Sigma alerts and correlations (windows, group-by, order) over the ordered stream"
    stateful = True

    def __init__(self, detection: DetectionStage, tick_grace_ns: int = TICK_GRACE_NS) -> None:
        self.detection = detection
        self.grace = tick_grace_ns

    def process(self, item: Any, emit: Emit) -> bool:
        """Write the event on, then its alerts (in that order). The alerts are built before
        the event is written on: the stages after this one (``enrich-strip`` without
        ``--enrich``) may remove the enrichment fields the rules matched on, and an alert's
        ``fields`` (and a correlation's group-by values) are read from the event as the rules
        saw it."""
        t = type(item)
        if t is RuleHits:
            alerts = self.detection.correlate(item.event, item.hits)
            emit(item.event)
            for alert in alerts:
                emit(alert)
            return False
        if t is not Event or item.provider == SIGMA_ALERT_PROVIDER:
            return True
        alerts = self.detection.correlate(item, [])
        if not alerts:
            return True
        emit(item)
        for alert in alerts:
            emit(alert)
        return False

    def tick(self, now_ns: int, emit: Emit) -> None:
        """Close the windows that ended before ``now_ns - tick_grace_ns``."""
        for alert in self.detection.tick(now_ns - self.grace):
            emit(alert)

    def finish(self, emit: Emit) -> None:
        """Close every open window."""
        for alert in self.detection.finish():
            emit(alert)


@STAGES.register
class SigmaAlertEvents(Stage):
    """Alerts into the event stream as SysmonX ``SigmaAlert`` events (ID 1000), numbered from 1
    in their own channel (``SysmonX/Alerts``)."""

    name = "sigma-alert-events"
    summary = "Sigma alerts as SysmonX event 1000 (SigmaAlert) in the event stream"
    stateful = True

    def __init__(self) -> None:
        self.count = 0

    def process(self, item: Any, emit: Emit) -> bool:
        """Replace an alert by its event."""
        if getattr(item, "item_kind", None) != "alert":
            return True
        self.count += 1
        emit(item.to_event(record_id=self.count))
        return False


def rule_keys(detection: DetectionStage) -> frozenset[str]:
    """The rule references (``rule_id`` of their alerts, ``RuleId`` of event 1000) of a
    detection stage's detection rules and correlations whose alerts this stage writes (a rule
    that only feeds correlations without ``generate: true`` makes no alert of its own)."""
    out = detection._output  # per compiled rule: whether its alerts are written
    return frozenset([r.key for r, o in zip(detection.matcher.compiled, out, strict=True) if o]
                     + [c.key for c in detection.correlations if c.output])


@STAGES.register
class AlertTriageStage(Stage):
    """Holds back the alerts a selection (``--min-level``, ``--technique``, ``--tag``) does not
    keep: the run's alerts and SigmaAlert events read back from the input
    (:class:`~sysmonx.detection.triage.AlertTriage`); everything else passes. Placed after
    ``sigma-correlate`` (correlations see every detection hit) and before
    ``sigma-alert-events`` (the kept alerts are numbered without gaps).

    Args:
        triage: the selection.
    Attributes:
        held_back: alerts of this run held back; ``held_back_read``: SigmaAlert events read
            back and held back.
    """

    name = "alert-triage"
    summary = "keep only the Sigma alerts of --min-level / --technique / --tag (alerts only)"

    def __init__(self, triage: AlertTriage) -> None:
        self.triage = triage
        self.held_back = 0
        self.held_back_read = 0

    def process(self, item: Any, emit: Emit) -> bool:
        """Drop (and count) an alert or SigmaAlert event the selection does not keep."""
        keep = self.triage.keeps_item(item)
        if keep is None or keep:
            return True
        if item.__class__ is Event:
            self.held_back_read += 1
        else:
            self.held_back += 1
        return False
