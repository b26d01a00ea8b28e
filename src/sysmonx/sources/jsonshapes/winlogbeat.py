"""winlogbeat (see :mod:`sysmonx.sources.jsonshapes`)."""

from __future__ import annotations

import re
from typing import Optional

from ...core.registry import SOURCES
from ...event import SYSMON_PROVIDERS, Event
from ..base import FileNotes, put_unique
from .common import (ShapeFormat, _NOTHING, _data, _event_id, _int, _keywords, _level, _opcode,
                     _provider_guid, _str, _time, _value)

__all__ = ["WinlogbeatFormat"]

_PARAM = re.compile(r"param[1-9]\d*\Z")


def _winlogbeat(obj: dict, origin, notes: Optional[FileNotes] = None) -> Event:
    w = obj.get("winlog")
    if type(w) is dict:  # 7.x / 8.x
        eid = _event_id(w.get("event_id", (obj.get("event") or {}).get("code")))
        provider = _str(w.get("provider_name")) or ""
        channel = _str(w.get("channel")) or ""
        computer = _str(w.get("computer_name")) or ""
        record = _int(w.get("record_id"))
        src = w.get("event_data") or {}
        user_data = w.get("user_data")
        proc = w.get("process") or {}
        pid = _int(proc.get("pid"))
        tid = _int((proc.get("thread") or {}).get("id"))
        user = (w.get("user") or {}).get("identifier")
        level = (obj.get("log") or {}).get("level", w.get("level"))
        version, opcode, task = w.get("version"), w.get("opcode"), w.get("task")
        keywords, guid = w.get("keywords"), w.get("provider_guid")
        t = w.get("time_created") or obj.get("@timestamp")
    else:  # 6.x
        eid = _event_id(obj.get("event_id"))
        provider = _str(obj.get("source_name")) or ""
        channel = _str(obj.get("log_name")) or ""
        computer = _str(obj.get("computer_name")) or ""
        record = _int(obj.get("record_number"))
        src = obj.get("event_data") or {}
        user_data = obj.get("user_data")
        pid, tid = _int(obj.get("process_id")), _int(obj.get("thread_id"))
        user = (obj.get("user") or {}).get("identifier")
        level = obj.get("level")
        version, opcode, task = obj.get("version"), obj.get("opcode"), obj.get("task")
        keywords, guid = obj.get("keywords"), obj.get("provider_guid")
        t = obj.get("@timestamp")
    if type(src) is not dict:
        raise ValueError("event_data is not an object")
    sysmon = provider in SYSMON_PROVIDERS
    if sysmon and src and all(_PARAM.match(k) for k in src):  # winlogbeat's unnamed <Data>
        from ..xmlfile import name_unnamed
        ordered = [_value(src[k]) for k in sorted(src, key=lambda k: int(k[5:]))]
        src = name_unnamed(eid, provider, _int(version), ordered, {}, notes, origin)
    task = _int(task)
    if task is None and sysmon:
        task = eid  # a task name ("Process Create (rule: ProcessCreate)"); Sysmon's is the id
    data = _data(eid, sysmon, src, _NOTHING, obj.get("message"))
    if type(user_data) is dict:
        for k, v in user_data.items():
            if k != "xml_name":
                put_unique(data, k, _value(v))
    return Event(eid, data, provider=provider, provider_guid=_provider_guid(guid, provider),
                 version=_int(version), level=_level(level), task=task,
                 opcode=_opcode(opcode), keywords=_keywords(keywords, sysmon),
                 time_created=_time(t), record_id=record, process_id=pid, thread_id=tid,
                 channel=channel, computer=computer, user_id=_str(user), origin=origin)


@SOURCES.register
class WinlogbeatFormat(ShapeFormat):
    """winlogbeat 6.x, 7.x and 8.x JSON (Elastic)."""

    name = "winlogbeat"
    summary = "winlogbeat 6/7/8 JSON (Elastic)"
    order = 40
    convert_one = staticmethod(_winlogbeat)
