"""Security-Datasets flat exporter (see :mod:`sysmonx.sources.jsonshapes`)."""

from __future__ import annotations

from typing import Optional

from ...core.registry import SOURCES
from ...event import SYSMON_PROVIDERS, Event
from ..base import FileNotes
from .common import (ShapeFormat, _data, _event_id, _has_zone, _int, _keywords, _level,
                     _provider_guid, _str, _time)

__all__ = ["FlatJsonFormat"]

_FLAT_META = frozenset({"SourceName", "ProviderGuid", "Level", "Keywords", "Channel", "Hostname",
                        "TimeCreated", "@timestamp", "EventID", "Message", "Task"})


def _flat(obj: dict, origin, notes: Optional[FileNotes] = None) -> Event:
    eid = _event_id(obj.get("EventID"))
    provider = _str(obj.get("SourceName")) or ""
    sysmon = provider in SYSMON_PROVIDERS
    t = obj.get("TimeCreated")
    if not (type(t) is str and t and _has_zone(t)) and obj.get("@timestamp"):
        t = obj.get("@timestamp")
    return Event(eid, _data(eid, sysmon, obj, _FLAT_META, obj.get("Message")),
                 provider=provider,
                 provider_guid=_provider_guid(obj.get("ProviderGuid"), provider),
                 version=None, level=_level(obj.get("Level")), task=_int(obj.get("Task")),
                 opcode=None, keywords=_keywords(obj.get("Keywords"), sysmon),
                 time_created=_time(t), record_id=None, process_id=None, thread_id=None,
                 channel=_str(obj.get("Channel")) or "", computer=_str(obj.get("Hostname")) or "",
                 user_id=None, origin=origin)


@SOURCES.register
class FlatJsonFormat(ShapeFormat):
    """Security-Datasets flat JSON exporter."""

    name = "flatjson"
    summary = "Security-Datasets flat JSON"
    order = 43
    convert_one = staticmethod(_flat)
