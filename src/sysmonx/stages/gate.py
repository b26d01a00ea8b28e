"""The non-Sysmon gate: records of other providers (a Security record in a mixed EVTX) never reach
the Sysmon filter; they are dropped (default) or passed through unchanged (``--non-sysmon pass``).

The filter stage ignores non-Sysmon events itself, so passed records skip it and go on to
detection and the outputs.

SysmonX's own ``SigmaAlert`` events (EventID 1000, provider ``SysmonX``: a replayed SysmonX
output) are not "other records": they are SysmonX events, counted in ``sigma_alerts`` and always
passed on (the config has no tag for event 1000, so no config filters them; ``--min-level``,
``--technique`` and ``--tag`` select them as they select the run's own alerts). SysmonX's other
own events (100, 200 and up) travel with the Sysmon provider of their stream and are Sysmon
events here.
"""

from __future__ import annotations

from typing import Any

from ..core.registry import STAGES
from ..event import SIGMA_ALERT_EVENT_ID, SIGMA_ALERT_PROVIDER, SYSMON_PROVIDERS, Event
from ..interfaces import Emit, Stage

__all__ = ["SysmonGate"]


@STAGES.register
class SysmonGate(Stage):
    """Counts Sysmon events, SysmonX SigmaAlert events and other records; passes the first two,
    drops the others unless ``non_sysmon == "pass"``.

    Args:
        non_sysmon: ``drop`` or ``pass``.
    Attributes:
        sysmon, sigma_alerts, non_sysmon: records seen; ``non_sysmon_written``: other records
            passed on.
    Raises:
        ValueError: another ``non_sysmon`` value.
    """

    name = "sysmon-gate"
    summary = "records of other providers: drop (default) or pass unfiltered (--non-sysmon)"

    def __init__(self, non_sysmon: str = "drop") -> None:
        if non_sysmon not in ("drop", "pass"):
            raise ValueError(f"non_sysmon must be 'drop' or 'pass', not {non_sysmon!r}")
        self.keep_other = non_sysmon == "pass"
        self.sysmon = 0
        self.non_sysmon = 0
        self.non_sysmon_written = 0
        self.sigma_alerts = 0

    def process(self, item: Any, emit: Emit) -> bool:
        """Pass Sysmon events; count and drop or pass the others."""
        if item.__class__ is not Event:
            return True
        if item.provider in SYSMON_PROVIDERS:
            self.sysmon += 1
            return True
        if item.provider == SIGMA_ALERT_PROVIDER and item.event_id == SIGMA_ALERT_EVENT_ID:
            self.sigma_alerts += 1
            return True
        self.non_sysmon += 1
        if self.keep_other:
            self.non_sysmon_written += 1
            return True
        return False
