"""nxlog (see :mod:`sysmonx.sources.jsonshapes`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Optional

from ...core.registry import SOURCES
from ...event import SYSMON_PROVIDERS, Event, normalize_time
from ..base import FileNotes
from .common import (ShapeFormat, _event_id, _has_zone, _int, _keywords, _other_data,
                     _provider_guid, _str, _sysmon_data, _time)

__all__ = ["NxlogFormat"]

#: im_msvistalog's own fields, and what Logstash / the Mordor pipeline add.
_NXLOG_META = frozenset({
    "EventTime", "EventReceivedTime", "SourceModuleName", "SourceModuleType", "Hostname",
    "EventType", "Severity", "SeverityValue", "Keywords", "EventID", "SourceName", "ProviderGuid",
    "Version", "Task", "OpcodeValue", "Opcode", "RecordNumber", "ActivityID", "RelatedActivityID",
    "ProcessID", "ThreadID", "Channel", "Domain", "AccountName", "UserID", "AccountType",
    "Category", "Message", "ERRORCODE", "ExecutionProcessID", "EventTypeOrignal",
    "EventTypeOriginal", "@timestamp", "@version", "host", "port", "tags", "type"})
#: nxlog's EventType values (Sysmon's own EventType field is overwritten by them).
_NXLOG_EVENT_TYPES = frozenset({"INFO", "AUDIT_SUCCESS", "AUDIT_FAILURE", "WARNING", "ERROR",
                                "CRITICAL", "VERBOSE", "DEBUG"})
_NXLOG_DROP = {"EventType": _NXLOG_EVENT_TYPES}
_NXLOG_LEVELS = {"DEBUG": 5, "INFO": 4, "WARNING": 3, "ERROR": 2, "CRITICAL": 1}
_QUARTER = 900


def _nxlog_time(obj: dict) -> str:
    """``EventTime`` in UTC: with its zone if it has one, else shifted by the collector's offset
    (``@timestamp`` UTC minus ``EventReceivedTime`` local, to 15 minutes)."""
    t = obj.get("EventTime")
    if type(t) is not str or not t:
        return _time(obj.get("@timestamp"))
    if _has_zone(t):
        return normalize_time(t)
    canonical = normalize_time(t)
    offset = _zone_offset(obj.get("EventReceivedTime"), obj.get("@timestamp"))
    if offset:
        shifted = datetime.fromisoformat(canonical[:19]) + timedelta(seconds=offset)
        return shifted.isoformat(timespec="seconds") + canonical[19:]
    return canonical


def _zone_offset(received, stamp) -> int:
    """Seconds to add to the collector's local times for UTC: ``stamp`` (UTC) minus
    ``received`` (zone-less local), rounded to 15 minutes; 0 when unknown or implausible."""
    if type(received) is not str or type(stamp) is not str or not received or not stamp:
        return 0
    try:
        local = datetime.fromisoformat(received)
        utc = datetime.fromisoformat(stamp)
    except ValueError:
        try:
            local = datetime.fromisoformat(normalize_time(received)[:26])
            utc = datetime.fromisoformat(normalize_time(stamp)[:26] + "+00:00")
        except ValueError:
            return 0
    zone = utc.utcoffset()
    if local.tzinfo is not None or zone is None:
        return 0
    offset = round((utc.replace(tzinfo=None) - local - zone).total_seconds()
                   / _QUARTER) * _QUARTER
    return offset if abs(offset) <= 14 * 3600 else 0


def _nxlog(obj: dict, origin, notes: Optional[FileNotes] = None) -> Event:
    eid = _event_id(obj.get("EventID"))
    provider = _str(obj.get("SourceName")) or ""
    sysmon = provider in SYSMON_PROVIDERS
    if sysmon:
        data = _sysmon_data(eid, obj, _NXLOG_META, obj.get("Message"),
                            prefer_message=("EventType", "Version"), drop=_NXLOG_DROP,
                            unescape=True)
    else:
        data = _other_data(obj, _NXLOG_META, unescape=True)
    severity = obj.get("Severity")
    pid = obj.get("ExecutionProcessID", obj.get("ProcessID"))
    return Event(eid, data, provider=provider,
                 provider_guid=_provider_guid(obj.get("ProviderGuid"), provider),
                 version=_int(obj.get("Version")),
                 level=(_NXLOG_LEVELS.get(severity) if type(severity) is str else None),
                 task=_int(obj.get("Task")), opcode=_int(obj.get("OpcodeValue")),
                 keywords=_keywords(obj.get("Keywords"), sysmon), time_created=_nxlog_time(obj),
                 record_id=_int(obj.get("RecordNumber")), process_id=_int(pid),
                 thread_id=_int(obj.get("ThreadID")), channel=_str(obj.get("Channel")) or "",
                 computer=_str(obj.get("Hostname")) or "", user_id=_str(obj.get("UserID")),
                 origin=origin)


@SOURCES.register
class NxlogFormat(ShapeFormat):
    """nxlog ``im_msvistalog`` JSON (flat)."""

    name = "nxlog"
    summary = "nxlog im_msvistalog JSON (flat)"
    order = 41
    convert_one = staticmethod(_nxlog)
