"""SigmaAlert events read back, as alerts again: what ``--alerts FILE`` writes for them.

A replayed SysmonX output holds its alerts as SysmonX event 1000 (``SigmaAlert``,
:meth:`~sysmonx.detection.alerts.Alert.to_event`). When a run writes its alerts to an alerts
output (``--alerts FILE``, a sink that accepts ``alert`` items), the SigmaAlert events read back
that the run keeps (not made again by its ``--rules``, kept by ``--min-level`` / ``--technique``
/ ``--tag``) go there too, as the same JSON line an alert of the run has, and not into the event
stream: the ``sigma-alerts-read-back`` stage (:class:`ReadBackAlertStage`), placed after
``alert-triage``, turns each into a :class:`ReadBackAlert` (:func:`alert_from_event`).

What event 1000 carries is what the JSON line gets back (field by field, the inverse of
``to_event``). Two things it does not carry are written as their documented unknown values:

* ``event`` is ``null``: event 1000 does not repeat the matched event (in the output it was read
  from, that event is the one written just before the alert, when it was written at all);
* the rule's ``references`` and ``falsepositives`` are event 1000's ``RuleReferences`` and
  ``RuleFalsePositives`` split at ``"; "`` (how ``to_event`` joined them: an item that itself
  held ``"; "`` comes back as two), and ``description`` / ``author`` are ``null`` when the
  field is empty; a rule of this run's ``--rules`` with the same reference gives its own texts
  instead, as for the run's alerts.

A correlation's ``group`` is read from ``Group`` (``name=value; ...``, split at ``"; "`` and
the first ``=``), its ``value`` from ``Value`` (a number, ``null`` when empty or not a number),
its ``channels`` from ``Channels`` (:func:`~sysmonx.event.split_channels`: ``%2C``
read as ``,``, ``""`` for an event without a channel, as the first run wrote them); an event
1000 without ``Channels`` (version 1 or 2, written before the field existed) gives ``channels``
``null``: which channels its events were in is not known.
"""

from __future__ import annotations

from typing import Any, Optional

import orjson

from ..core.registry import STAGES
from ..event import Event
from ..interfaces import Emit, Stage
from .alerts import _FIXED, Alert, rule_meta, split_channels
from .triage import is_alert_event

__all__ = ["ReadBackAlert", "ReadBackAlertStage", "alert_from_event"]


class ReadBackAlert(Alert):
    """An :class:`~sysmonx.detection.alerts.Alert` rebuilt from a SigmaAlert event read back
    (:func:`alert_from_event`); its rule texts are the event's (``meta``) unless a rule of this
    run has the same reference.

    Attributes:
        meta: ``{"description", "author", "references", "falsepositives"}`` from the event
            (shaped as :func:`~sysmonx.detection.alerts.rule_text`).
        channels_known: False when the event had no ``Channels`` field (module docstring).
    """

    meta: dict
    #: False when the event had no ``Channels`` field (version 1 or 2): a correlation's
    #: ``channels`` is then ``null`` in the JSON line (not known)
    channels_known: bool = True

    def to_dict(self) -> dict:
        """:meth:`Alert.to_dict` with the rule texts the event carried and, for an event without
        ``Channels``, a correlation's ``channels`` ``null`` (module docstring)."""
        d = super().to_dict()
        if not self.channels_known and "channels" in d:
            d["channels"] = None
        own = rule_meta(self.rule_id)
        if own["description"] is None and own["author"] is None and not own["references"] \
                and not own["falsepositives"]:
            d.update(self.meta)
        return d

    def to_json(self) -> bytes:
        """One JSON line (trailing newline): :meth:`to_dict`, keys in the documented order."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_APPEND_NEWLINE)


def _ints(text: str) -> tuple:
    out = []
    for part in text.split(","):
        part = part.strip()
        if part:
            try:
                out.append(int(part))
            except ValueError:
                continue
    return tuple(out)


def _number(text: str) -> Optional[float]:
    if not text:
        return None
    try:
        v = float(text)
    except ValueError:
        return None
    return int(v) if v.is_integer() else v


def _items(text: str) -> list:
    return [x for x in text.split("; ")] if text else []


def alert_from_event(event: Event) -> ReadBackAlert:
    """The alert a SigmaAlert event (EventID 1000, provider ``SysmonX``) was written from, as
    far as the event carries it (module docstring): ``window_end`` is the event's
    ``TimeCreated``; ``window_start`` its ``WindowStart`` (a correlation's) or the same time;
    ``fields`` every EventData field after the fixed ones (the key fields)."""
    d = event.data
    kind = d.get("RuleKind") or "detection"
    tags = d.get("Tags") or ""
    end = event.time_created or ""
    start = d.get("WindowStart") or end if kind != "detection" else end
    group: dict = {}
    for part in _items(d.get("Group") or ""):
        name, _, value = part.partition("=")
        group[name] = value
    try:
        count = int(d.get("EventCount") or 1)
    except ValueError:
        count = 1
    alert = ReadBackAlert(
        rule_id=d.get("RuleId") or "", title=d.get("RuleTitle") or "",
        level=d.get("RuleLevel") or "", status=d.get("RuleStatus") or "", kind=kind,
        tags=tuple(tags.split(",")) if tags else (), window_start=start, window_end=end,
        computer=event.computer or "", group=group,
        record_ids=_ints(d.get("RecordIds") or ""), event_count=count,
        event_ids=_ints(d.get("EventIds") or ""),
        rules=tuple(r for r in (d.get("Rules") or "").split(",") if r),
        value=_number(d.get("Value") or ""),
        fields={k: v for k, v in d.items() if k not in _FIXED and v is not None},
        source_file=d.get("SourceFile") or None, event=None)
    if "Channels" in d:  # an empty one (an event without a channel) reads as ""
        setattr(alert, "correlation_channels",  # noqa: B010
                tuple(split_channels(d["Channels"] or "")))
    else:  # version 1 or 2: not known
        alert.channels_known = False
    alert.meta = {"description": d.get("RuleDescription") or None,
                  "author": d.get("RuleAuthor") or None,
                  "references": _items(d.get("RuleReferences") or ""),
                  "falsepositives": _items(d.get("RuleFalsePositives") or "")}
    return alert


@STAGES.register
class ReadBackAlertStage(Stage):
    """SigmaAlert events read back go to the alerts output as alerts (:func:`alert_from_event`),
    not into the event stream; placed after ``alert-triage``, so only those the run keeps
    arrive here. Used when the run has an alerts output (``--alerts FILE``).

    Attributes:
        moved: SigmaAlert events turned into alerts.
    """

    name = "sigma-alerts-read-back"
    summary = "SigmaAlert events read back to the alerts output (--alerts FILE) as alerts"

    def __init__(self) -> None:
        self.moved = 0

    def process(self, item: Any, emit: Emit) -> bool:
        """Replace a SigmaAlert event by its alert; pass anything else."""
        if item.__class__ is not Event or not is_alert_event(item):
            return True
        self.moved += 1
        emit(alert_from_event(item))
        return False
