"""EventRecordID numbering of the live sensor: events that pass the filter and carry no record id
(everything the sensor builds itself) are numbered in order, from 0 and without gaps, as Sysmon for
Linux numbers what it writes. Events that already have one (a followed Sysmon for Linux log) keep
it."""

from __future__ import annotations

from typing import Any

from ..core.registry import STAGES
from ..event import Event
from ..interfaces import Emit, Stage

__all__ = ["RecordNumbers"]


@STAGES.register
class RecordNumbers(Stage):
    """Gives events without ``record_id`` the next number.

    Args:
        start: the first number (Sysmon for Linux: 0, its first event 16).
    """

    name = "record-numbers"
    summary = "number events without an EventRecordID in order, from 0, without gaps (live)"
    stateful = True

    def __init__(self, start: int = 0) -> None:
        self.next = start

    def process(self, item: Any, emit: Emit) -> bool:
        """Number ``item`` if it is an event without a record id."""
        if type(item) is Event and item.record_id is None:
            item.record_id = self.next
            self.next += 1
        return True
