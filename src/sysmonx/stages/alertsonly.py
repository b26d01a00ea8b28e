"""``--alerts-only``: the event outputs carry only the Sigma alerts (SysmonX event 1000).

A triage timeline as Hayabusa's ``csv-timeline`` and Chainsaw's ``hunt`` give it: one row per
detection, in the output format of ``-f`` (CSV, JSON lines, XML ...). The ``alerts-only`` stage
is the last one of a replay: everything before it runs as usual (the config filters, Sigma rules
match and correlate on every event, ``--min-level`` / ``--technique`` / ``--tag`` select the
alerts, read-back SigmaAlert events are handled as without the option), and it drops every
event that is not a ``SigmaAlert`` event, counting them (:attr:`AlertsOnlyStage.dropped`).
Other SysmonX findings (TamperFinding, 201) are events, not alerts: left out too.
"""

from __future__ import annotations

from typing import Any

from ..core.registry import STAGES
from ..event import SIGMA_ALERT_EVENT_ID, SIGMA_ALERT_PROVIDER, Event
from ..interfaces import Emit, Stage

__all__ = ["AlertsOnlyStage"]


@STAGES.register
class AlertsOnlyStage(Stage):
    """Drops every event but SigmaAlert events (EventID 1000, provider ``SysmonX``); items that
    are not events (alerts on their way to an alerts sink) pass.

    Attributes:
        dropped: events not written.
    """

    name = "alerts-only"
    summary = "write only the Sigma alerts (event 1000) to the event outputs (--alerts-only)"

    def __init__(self) -> None:
        self.dropped = 0

    def process(self, item: Any, emit: Emit) -> bool:
        """Pass a SigmaAlert event or a non-event; drop (and count) any other event."""
        if not isinstance(item, Event) or (item.event_id == SIGMA_ALERT_EVENT_ID
                                           and item.provider == SIGMA_ALERT_PROVIDER):
            return True
        self.dropped += 1
        return False
