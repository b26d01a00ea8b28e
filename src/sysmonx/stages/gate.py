"""The non-Sysmon gate: records of other providers (a Security record in a mixed EVTX) never reach
the Sysmon filter; they are dropped (default) or passed through unchanged (``--non-sysmon pass``).

The filter stage ignores non-Sysmon events itself, so passed records skip it and go on to
detection and the outputs.
"""

from __future__ import annotations

from typing import Any

from ..core.registry import STAGES
from ..event import SYSMON_PROVIDERS, Event
from ..interfaces import Emit, Stage

__all__ = ["SysmonGate"]


@STAGES.register
class SysmonGate(Stage):
    """Counts Sysmon and other records; drops the others unless ``non_sysmon == "pass"``.

    Args:
        non_sysmon: ``drop`` or ``pass``.
    Attributes:
        sysmon, non_sysmon: records seen; ``non_sysmon_written``: other records passed on.
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

    def process(self, item: Any, emit: Emit) -> bool:
        """Pass Sysmon events; count and drop or pass the others."""
        if item.__class__ is not Event:
            return True
        if item.provider in SYSMON_PROVIDERS:
            self.sysmon += 1
            return True
        self.non_sysmon += 1
        if self.keep_other:
            self.non_sysmon_written += 1
            return True
        return False
