"""Azure Sentinel / Log Analytics (see :mod:`sysmonx.sources.jsonshapes`)."""

from __future__ import annotations

import re
from typing import Optional

import orjson

from ...core.registry import SOURCES
from ...event import SYSMON_PROVIDERS, Event
from ..base import FileNotes, put_unique
from .common import (ShapeFormat, _NOTHING, _data, _event_id, _int, _keywords, _level, _opcode,
                     _other_data, _provider_guid, _str, _time)

__all__ = ["SentinelFormat"]

#: Columns of the Event, WindowsEvent and SecurityEvent tables that are not event data.
_SENTINEL_META = frozenset({
    "TenantId", "SourceSystem", "TimeGenerated", "TimeCreated", "Provider", "Source", "Channel",
    "EventLog", "Computer", "Task", "EventLevel", "EventLevelName", "EventData", "EventID",
    "EventOriginId", "ManagementGroupName", "Type", "_ResourceId", "MG", "UserName",
    "RenderedDescription", "EventCategory", "ParameterXml", "AzureDeploymentID", "Role",
    "EventRecordId", "Keywords", "Opcode", "Version", "SystemProcessId", "SystemThreadId",
    "SystemUserId", "Correlation", "RawEventData", "Data", "_ItemId",
    "_Internal_WorkspaceResourceId", "Activity", "EventSourceName", "SourceComputerId"})
_KUSTO_TIME = re.compile(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z\Z")


def _sentinel(obj: dict, origin, notes: Optional[FileNotes] = None) -> Event:
    message = obj.get("SyslogMessage")
    if message is not None:
        return _sentinel_syslog(obj, message, origin, notes)
    eid = _event_id(obj.get("EventID"))
    provider = _str(obj.get("Provider")) or _str(obj.get("Source")) or ""
    sysmon = provider in SYSMON_PROVIDERS
    ed = obj.get("EventData")
    if type(ed) is str:
        text = ed.strip()
        if text[:1] == "<":
            src, unnamed = _xml_event_data(text)
            if unnamed:
                from ..xmlfile import name_unnamed
                src = name_unnamed(eid, provider, _int(obj.get("Version")), unnamed, src, notes,
                                   origin)
        elif text[:1] == "{":
            src = orjson.loads(text)
            if type(src) is not dict:
                raise ValueError("EventData is not a JSON object")
        else:
            src = {"EventData": ed} if text else {}
        skip = _NOTHING
    elif type(ed) is dict:
        src, skip = ed, _NOTHING
    else:  # SecurityEvent: the event data are columns
        src, skip = obj, _SENTINEL_META
    data = _data(eid, sysmon, src, skip, obj.get("RenderedDescription"))
    if sysmon:
        for k, v in data.items():
            if k.endswith("UtcTime") and v[-1:] == "Z":
                m = _KUSTO_TIME.match(v)
                if m:
                    data[k] = f"{m.group(1)} {m.group(2)}.{(m.group(3) or '').ljust(3, '0')[:3]}"
    t = obj.get("TimeCreated") or obj.get("TimeGenerated")
    return Event(eid, data, provider=provider, provider_guid=_provider_guid(None, provider),
                 version=_int(obj.get("Version")), level=_level(obj.get("EventLevel")),
                 task=_int(obj.get("Task")), opcode=_opcode(obj.get("Opcode")),
                 keywords=_keywords(obj.get("Keywords"), sysmon), time_created=_time(t),
                 record_id=_int(obj.get("EventRecordId")),
                 process_id=_int(obj.get("SystemProcessId")),
                 thread_id=_int(obj.get("SystemThreadId")),
                 channel=_str(obj.get("Channel")) or _str(obj.get("EventLog")) or "",
                 computer=_str(obj.get("Computer")) or "", user_id=_str(obj.get("SystemUserId")),
                 origin=origin)


def _xml_event_data(text: str) -> tuple[dict, list]:
    """``Data`` and ``ComplexData`` elements of the Event table's EventData XML
    (``<DataItem><EventData><Data Name="x">v</Data>...``): ``({name: value}, [values of
    unnamed Data, in order])``."""
    from lxml import etree

    from ..xmlfile import safe_parser
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise ValueError("malformed EventData XML: DTDs and entities are not accepted")
    try:
        root = etree.fromstring(text.encode("utf-8"), safe_parser())
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"malformed EventData XML: {exc.msg}") from None
    out: dict = {}
    unnamed: list = []
    for el in root.iter():
        tag = el.tag
        if not isinstance(tag, str):
            continue
        local = tag[tag.index("}") + 1:] if tag[:1] == "{" else tag
        if local in ("Data", "ComplexData"):
            name = el.get("Name")
            if name:
                put_unique(out, name, el.text or "")
            elif local == "Data":
                unnamed.append(el.text or "")
    return out, unnamed


_SYSLOG_META = frozenset({"TenantId", "SourceSystem", "TimeGenerated", "EventTime", "Computer",
                          "HostName", "ProcessName", "Type", "MG", "_ResourceId",
                          "ManagementGroupName", "SourceComputerId", "CollectorHostName"})


def _sentinel_syslog(obj: dict, message, origin, notes: Optional[FileNotes] = None) -> Event:
    """A Syslog table row: the Sysmon for Linux event of ``SyslogMessage`` (entity references
    without ``;`` repaired, a message cut short read up to its last complete field, as
    :func:`sysmonx.sources.syslog.event_from_line` does), or the row itself."""
    if type(message) is not str:
        raise ValueError("SyslogMessage is not a string")
    start = message.find("<Event")
    if start >= 0:
        from lxml import etree

        from ..syslog import event_from_line
        raw = message.encode("utf-8")
        try:
            event = event_from_line(raw, raw.find(b"<Event"), origin, notes)
        except etree.XMLSyntaxError as exc:
            raise ValueError(f"malformed event XML in SyslogMessage: {exc.msg}") from None
        if not event.computer:
            event.computer = _str(obj.get("Computer")) or _str(obj.get("HostName")) or ""
        if not event.time_created:
            event.time_created = _time(obj.get("EventTime") or obj.get("TimeGenerated"))
        return event
    return Event(0, _other_data(obj, _SYSLOG_META), provider=_str(obj.get("ProcessName")) or "",
                 provider_guid=None, opcode=None, keywords=None,
                 time_created=_time(obj.get("EventTime") or obj.get("TimeGenerated")),
                 process_id=_int(obj.get("ProcessID")), channel="Syslog",
                 computer=_str(obj.get("Computer")) or _str(obj.get("HostName")) or "",
                 origin=origin)


@SOURCES.register
class SentinelFormat(ShapeFormat):
    """Azure Sentinel / Log Analytics rows (Event, WindowsEvent, Syslog with Linux Sysmon
    XML)."""

    name = "sentinel"
    summary = "Azure Sentinel / Log Analytics rows (Event, WindowsEvent, Syslog tables)"
    order = 42
    convert_one = staticmethod(_sentinel)
