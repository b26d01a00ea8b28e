"""Output to the Windows Event Log: the generated instrumentation manifest (one template per
event, named fields from the schema catalogue), the manifest writer's EventWrite encoding, and
the classic-source fallback's strings, against fake advapi32 APIs."""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import pytest
from lxml import etree

from sysmonx.cli import builtin_sample_path
from sysmonx.core.errors import SinkError
from sysmonx.schema import CURRENT
from sysmonx.sources.xmlfile import read_xml
from sysmonx.windows.evtoutput import (CHANNEL_KEYWORD, EVENT_DATA_DESCRIPTOR, MAX_STRING,
                                       PROVIDER_GUID, EventLogSink, render_manifest)
from sysmonx.windows.fakes import FakeEventWriteApi, FakeReportEventApi

NS = {"m": "http://schemas.microsoft.com/win/2004/08/events"}


def _sample():
    return [e for e in read_xml(str(builtin_sample_path()), lambda err: None)
            if e.provider == "Microsoft-Windows-Sysmon"]


def test_data_descriptor_is_evntprov_h_layout():
    assert ctypes.sizeof(EVENT_DATA_DESCRIPTOR) == 16
    assert (EVENT_DATA_DESCRIPTOR.Ptr.offset, EVENT_DATA_DESCRIPTOR.Size.offset,
            EVENT_DATA_DESCRIPTOR.Reserved.offset) == (0, 8, 12)


def test_manifest_names_every_field_of_every_event():
    root = etree.fromstring(render_manifest().encode("utf-8"))
    prov = root.find(".//m:provider", NS)
    assert prov.get("name") == "SysmonX" and prov.get("guid") == PROVIDER_GUID
    ch = prov.find("m:channels/m:channel", NS)
    assert (ch.get("name"), ch.get("value"), ch.get("type")) == \
        ("SysmonX/Operational", "16", "Operational")
    templates = {t.get("tid"): [d.get("name") for d in t.findall("m:data", NS)]
                 for t in prov.findall("m:templates/m:template", NS)}
    events = {int(e.get("value")): e for e in prov.findall("m:events/m:event", NS)}
    assert {1, 5, 22, 29, 255, 220} <= set(events)
    strings = {s.get("id"): s.get("value") for s in root.iter("{%s}string" % NS["m"])}
    for eid, ev in events.items():
        schema = CURRENT.events[eid]
        assert templates[ev.get("template")] == list(schema.field_names), eid
        assert ev.get("version") == str(schema.version)
        msg = strings[f"event.{eid}"]
        assert msg.startswith(schema.template + ":\r\n")
        assert re.findall(r"%(\d+)", msg) == [str(i) for i in
                                              range(1, len(schema.field_names) + 1)]
    assert events[255].get("level") == "win:Error"


def test_manifest_writer_sends_each_field_as_utf16_in_template_order():
    api = FakeEventWriteApi(registered=True)
    sink = EventLogSink(eventwrite=api, reportevent=FakeReportEventApi())
    assert sink.mode == "manifest" and sink.target == "SysmonX/Operational"
    events = [e for e in _sample() if e.event_id in CURRENT.events]
    for e in events:
        sink.write(e)
    sink.close()
    assert len(api.written) == len(events) and api.handles == []
    for (desc, fields), e in zip(api.written, events, strict=True):
        schema = CURRENT.events[e.event_id]
        assert (desc.Id, desc.Version, desc.Channel, desc.Task, desc.Keyword) == \
            (e.event_id, schema.version, 16, e.event_id, CHANNEL_KEYWORD)
        assert fields == [e.data.get(n) or "-" for n in schema.field_names]


def test_fallback_writes_named_strings_to_the_application_log():
    rep = FakeReportEventApi()
    sink = EventLogSink(eventwrite=FakeEventWriteApi(registered=False), reportevent=rep)
    assert sink.mode == "classic" and sink.target == "Application (SysmonX)"
    ev = next(e for e in _sample() if e.event_id == 1)
    ev.data["CommandLine"] = "x" * (MAX_STRING + 50)
    sink.write(ev)
    etype, eid, strings = rep.reported[0]
    assert (etype, eid) == (0x0004, 1) and rep.sources == ["SysmonX"]
    assert strings[0].startswith("RuleName: ") and len(strings) == len(ev.data)
    cut = next(s for s in strings if s.startswith("CommandLine: "))
    assert len(cut) == MAX_STRING and cut.endswith("[cut by SysmonX: the Event Log limit]")


def test_records_of_other_channels_are_not_written_again_and_manifest_mode_needs_it():
    from sysmonx.event import Event
    api = FakeEventWriteApi()
    sink = EventLogSink(eventwrite=api)
    sink.write(Event(4104, {"ScriptBlockText": "x"}, provider="Microsoft-Windows-PowerShell"))
    assert sink.skipped == 1 and api.written == []
    with pytest.raises(SinkError, match="not registered"):
        EventLogSink("manifest", eventwrite=FakeEventWriteApi(registered=False))
    with pytest.raises(SinkError, match="eventlog:"):
        EventLogSink("classic")                       # no advapi32 here
    assert Path(builtin_sample_path()).exists()
