"""evtx-crate JSON (see :mod:`sysmonx.sources.jsonshapes`)."""

from __future__ import annotations

from typing import Optional

from ...core.registry import SOURCES
from ...event import Event
from ..base import FileNotes
from .common import ShapeFormat

__all__ = ["EvtxJsonFormat"]

def _evtxjson(obj: dict, origin, notes: Optional[FileNotes] = None) -> Event:
    from ..evtx import _BadRecord, _convert_root
    try:
        return _convert_root(obj.get("Event"), origin, notes)
    except _BadRecord as exc:
        raise ValueError(str(exc)) from None


@SOURCES.register
class EvtxJsonFormat(ShapeFormat):
    """evtx-crate JSON (``evtx_dump``, pyevtx-rs ``records_json``)."""

    name = "evtxjson"
    summary = "evtx-crate JSON (evtx_dump, pyevtx-rs)"
    order = 44
    convert_one = staticmethod(_evtxjson)
