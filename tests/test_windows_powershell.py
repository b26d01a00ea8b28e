"""PowerShell 4104 script-block reassembly and 4103 context parsing, on records shaped like real
ones (PowerShell/PowerShell CompiledScriptBlock.cs splits blocks of 20,000+ characters into
segments of 10000 + random(10000) characters, floor(len / size) + 1 of them, written back to
back; the System header below is the one Windows records carry: Task 2, Opcode 15, Version 1,
Keywords 0x0, Level 5 or 3)."""

from __future__ import annotations

import random
from xml.sax.saxutils import escape

import pytest

from sysmonx.sources.xmlfile import parse_event
from sysmonx.windows.eventlog import ChannelSpec, EventLogSource
from sysmonx.windows.fakes import FakeWevtApi
from sysmonx.windows.powershell import (POWERSHELL_CHANNEL, SCRIPT_BLOCK_EVENT_ID,
                                        SCRIPT_BLOCK_FIELDS, ScriptBlockAssembler,
                                        parse_context_info, pipeline_detail)

SBID = "ec01d4f1-b1ad-4a78-af6b-ac18c1131c30"


def part(number, total, text, *, sbid=SBID, rid=3080, level=5, computer="DESKTOP-M3AKJSD",
         path="", time="2025-04-09T09:20:55.7303939Z", pid=6064):
    xml = (
        "<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System>"
        "<Provider Name='Microsoft-Windows-PowerShell' "
        "Guid='{a0c1853b-5c40-4b15-8766-3cf1c58f985a}'/><EventID>4104</EventID>"
        f"<Version>1</Version><Level>{level}</Level><Task>2</Task><Opcode>15</Opcode>"
        f"<Keywords>0x0</Keywords><TimeCreated SystemTime='{time}'/>"
        f"<EventRecordID>{rid}</EventRecordID>"
        "<Correlation ActivityID='{8dda4362-a927-0000-f7f2-dc8d27a9db01}'/>"
        f"<Execution ProcessID='{pid}' ThreadID='10848'/>"
        f"<Channel>{POWERSHELL_CHANNEL}</Channel><Computer>{computer}</Computer>"
        "<Security UserID='S-1-5-21-3999086100-426973801-4203759309-1002'/></System>"
        f"<EventData><Data Name='MessageNumber'>{number}</Data>"
        f"<Data Name='MessageTotal'>{total}</Data>"
        f"<Data Name='ScriptBlockText'>{escape(text)}</Data>"
        f"<Data Name='ScriptBlockId'>{sbid}</Data><Data Name='Path'>{escape(path)}</Data>"
        "</EventData></Event>")
    return parse_event(xml.encode("utf-8"), ("test", rid))


def powershell_segments(text: str, segment: int) -> list[str]:
    """CompiledScriptBlock.LogScriptBlockCreation's split, with the random size fixed."""
    if len(text) < 20000:
        return [text]
    segments = len(text) // segment + 1
    return [text[i * segment:i * segment + min(segment, len(text) - i * segment)]
            for i in range(segments)]


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def _script(n: int, seed: int = 7) -> str:
    rnd = random.Random(seed)
    words = ["$wc", "=", "New-Object", "Net.WebClient;", "IEX", "$x", "|", "%{", "}", "\n",
             "'a<b>&c'", "é", "𝄞"]
    return " ".join(rnd.choice(words) for _ in range(n))[:n]


def test_single_record_block():
    asm = ScriptBlockAssembler()
    out = asm.add(part(1, 1, "Check-VM", path=""))
    assert len(out) == 1
    ev = out[0]
    assert ev.event_id == SCRIPT_BLOCK_EVENT_ID and tuple(ev.data) == SCRIPT_BLOCK_FIELDS
    assert ev.data["ScriptBlockText"] == "Check-VM" and ev.data["ScriptBlockId"] == SBID
    assert ev.data["UtcTime"] == "2025-04-09 09:20:55.730" and ev.data["ProcessId"] == "6064"
    assert ev.data["FirstRecordID"] == ev.data["LastRecordID"] == "3080"
    assert ev.data["UserSid"] == "S-1-5-21-3999086100-426973801-4203759309-1002"
    assert ev.event_id == 220 and ev.provider == "Microsoft-Windows-Sysmon" and ev.task == 220
    assert ev.channel == "Microsoft-Windows-Sysmon/Operational" and ev.version == 1
    assert ev.record_id is None and ev.computer == "DESKTOP-M3AKJSD"
    assert ScriptBlockAssembler(single_parts=False).add(part(1, 1, "x")) == []


@pytest.mark.parametrize("length,segment", [(30000, 10000), (45123, 12345), (20000, 19999)])
def test_multi_part_in_order_rebuilds_the_exact_text(length, segment):
    text = _script(length)
    parts = powershell_segments(text, segment)
    assert len(parts) >= 2
    asm = ScriptBlockAssembler()
    out = []
    for i, t in enumerate(parts, 1):
        out += asm.add(part(i, len(parts), t, rid=100 + i, path=r"C:\Users\alice\setup.ps1"))
    assert len(out) == 1 and out[0].data["ScriptBlockText"] == text
    assert out[0].data["MessageTotal"] == str(len(parts))
    assert out[0].data["Path"] == r"C:\Users\alice\setup.ps1"
    assert (out[0].data["FirstRecordID"], out[0].data["LastRecordID"]) == \
        ("101", str(100 + len(parts)))
    assert asm.open_blocks == 0 and asm.buffered_chars == 0
    if length % segment == 0:
        assert parts[-1] == ""   # PowerShell's empty last segment is a real part


def test_out_of_order_parts_and_first_part_header():
    text = _script(36000, seed=3)
    parts = powershell_segments(text, 12000)     # 4 parts
    asm = ScriptBlockAssembler()
    order = [3, 1, 4, 2]
    out = []
    for n in order:
        out += asm.add(part(n, 4, parts[n - 1], rid=200 + n,
                            time=f"2025-04-09T09:20:5{n}.0000000Z"))
    assert len(out) == 1
    assert out[0].data["ScriptBlockText"] == text
    assert out[0].data["UtcTime"] == "2025-04-09 09:20:51.000"   # part 1's time


def test_missing_part_reported_after_timeout_with_count_and_records():
    clock = Clock()
    asm = ScriptBlockAssembler(timeout=30, clock=clock)
    assert asm.add(part(1, 3, "aaa", rid=11)) == []
    assert asm.add(part(3, 3, "ccc", rid=13)) == []
    clock.t += 29
    assert asm.expire() == []
    clock.t += 2
    out = asm.expire()
    assert len(out) == 1 and out[0].event_id == 255
    loss = asm.losses[0]
    assert (loss.count, loss.first_record, loss.last_record) == (1, 11, 13)
    assert f"script block {SBID}" in loss.detail and "parts 2 of 3 never arrived" in loss.detail
    assert out[0].data["Description"].startswith("Lost 1 events (EventRecordID 11-13)")
    assert asm.open_blocks == 0 and asm.buffered_chars == 0
    assert asm.stats["incomplete"] == 1 and asm.stats["complete"] == 0


def test_duplicates_conflicts_and_inconsistent_totals():
    asm = ScriptBlockAssembler()
    assert asm.add(part(1, 3, "one")) == []
    assert asm.add(part(1, 3, "one")) == []                    # redelivered record
    out = asm.add(part(1, 3, "ONE"))                           # same part, other text
    assert out[0].event_id == 255 and "two different texts for part 1 of 3" in \
        out[0].data["Description"]
    out = asm.add(part(2, 5, "two?"))                          # says 5 parts, not 3
    assert "says 5 parts, earlier parts said 3" in out[0].data["Description"]
    asm.add(part(2, 3, "two"))
    done = asm.add(part(3, 3, "three"))
    assert done[0].data["ScriptBlockText"] == "onetwothree"
    assert asm.add(part(2, 3, "two")) == []                    # late repeat after completion
    assert asm.open_blocks == 0
    assert asm.stats["duplicates"] == 2 and asm.stats["conflicts"] == 2
    assert asm.stats["late_parts"] == 1


def test_same_id_on_two_hosts_and_interleaved_blocks():
    asm = ScriptBlockAssembler()
    other = "0b8f7f3e-0000-4000-8000-000000000001"
    out = []
    out += asm.add(part(1, 2, "A1", computer="WS-01"))
    out += asm.add(part(1, 2, "B1", computer="WS-02"))
    out += asm.add(part(2, 2, "C2", sbid=other))
    out += asm.add(part(2, 2, "B2", computer="WS-02"))
    out += asm.add(part(1, 2, "C1", sbid=other))
    out += asm.add(part(2, 2, "A2", computer="WS-01"))
    assert sorted(e.data["ScriptBlockText"] for e in out) == ["A1A2", "B1B2", "C1C2"]


def test_memory_and_open_block_bounds():
    asm = ScriptBlockAssembler(max_chars=25000, max_open=3)
    out = []
    for i in range(3):
        out += asm.add(part(1, 2, "x" * 10000, sbid=f"00000000-0000-0000-0000-00000000000{i}",
                            rid=i))
    # 30000 buffered characters > 25000: the oldest block is given up.
    assert len(out) == 1 and asm.losses[0].count == 1
    assert asm.buffered_chars == 20000 and asm.open_blocks == 2
    for i in range(3, 6):
        out += asm.add(part(1, 2, "y", sbid=f"00000000-0000-0000-0000-00000000000{i}"))
    assert asm.open_blocks <= 3 and asm.buffered_chars <= 25000
    assert asm.stats["incomplete"] == len(asm.losses) == 3


def test_malformed_and_not_parts():
    asm = ScriptBlockAssembler(max_parts=1000)
    assert asm.add(part(0, 0, "Could not encrypt ...")) == []  # PowerShell's own error report
    for n, t in ((4, 3), (1, 5000), ("x", 2)):
        out = asm.add(part(n, t, "text"))
        assert out[0].event_id == 255 and "malformed script block part" in \
            out[0].data["Description"]
    assert asm.stats["malformed"] == 3 and asm.stats["not_parts"] == 1 and asm.open_blocks == 0


def test_suspicious_level_and_flush():
    asm = ScriptBlockAssembler()
    asm.add(part(1, 2, "VirtualAlloc", level=3))
    done = asm.add(part(2, 2, " CreateThread", level=3))
    assert done[0].data["Suspicious"] == "true"
    asm.add(part(1, 2, "left open", sbid="11111111-2222-3333-4444-555555555555"))
    out = asm.flush()
    assert len(out) == 1 and "the input ended" in out[0].data["Description"]
    assert asm.add(part(1, 1, "ok", sbid="99999999-0000-0000-0000-000000000000"))
    assert asm.stats["complete"] == 2


def test_parts_from_a_live_subscription_are_reassembled():
    """The parts arrive through the Event Log source (filtered query) and are assembled; the
    4104 records themselves are passed on unchanged."""
    text = _script(50000, seed=11)
    parts = powershell_segments(text, 15000)
    api = FakeWevtApi([POWERSHELL_CHANNEL])
    for i, t in enumerate(parts, 1):
        api.write(POWERSHELL_CHANNEL, _xml_of(i, len(parts), t))
    src = EventLogSource([ChannelSpec(POWERSHELL_CHANNEL,
                                      "*[System[(EventID=4103 or EventID=4104)]]")],
                         api=api, wait_ms=50)
    asm = ScriptBlockAssembler()
    seen, blocks = [], []
    for ev in src.events(idle=0.1):
        if ev is None:
            break
        seen.append(ev)
        blocks += asm.add(ev)
        src.commit(ev)
    src.close()
    assert [e.event_id for e in seen] == [4104] * len(parts)
    assert len(blocks) == 1 and blocks[0].data["ScriptBlockText"] == text
    assert blocks[0].data["FirstRecordID"] == "1"


def _xml_of(number, total, text):
    ev = part(number, total, text, rid=0)
    return (
        "<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System>"
        "<Provider Name='Microsoft-Windows-PowerShell' "
        "Guid='{a0c1853b-5c40-4b15-8766-3cf1c58f985a}'/><EventID>4104</EventID>"
        "<Version>1</Version><Level>5</Level><Task>2</Task><Opcode>15</Opcode>"
        "<Keywords>0x0</Keywords><TimeCreated SystemTime='2025-04-09T09:20:55.7303939Z'/>"
        "<EventRecordID>0</EventRecordID><Execution ProcessID='6064' ThreadID='10848'/>"
        f"<Channel>{POWERSHELL_CHANNEL}</Channel><Computer>{ev.computer}</Computer></System>"
        f"<EventData><Data Name='MessageNumber'>{number}</Data>"
        f"<Data Name='MessageTotal'>{total}</Data>"
        f"<Data Name='ScriptBlockText'>{escape(text)}</Data>"
        f"<Data Name='ScriptBlockId'>{SBID}</Data><Data Name='Path'></Data></EventData></Event>")


CONTEXT = ("        Severity = Informational\r\n        Host Name = ConsoleHost\r\n"
           "        Host Version = 5.1.14393.4350\r\n"
           "        Host ID = 32afa6ab-c13e-4c81-91ed-8488f7e303ea\r\n"
           "        Host Application = C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\"
           "powershell.exe -nop -w hidden -enc SQBFAFgA\r\n"
           "        Engine Version = 5.1.14393.4350\r\n"
           "        Runspace ID = be9cbd71-6464-43fd-94f7-af1594871f07\r\n"
           "        Pipeline ID = 68\r\n        Command Name = Invoke-Expression\r\n"
           "        Command Type = Cmdlet\r\n        Script Name = \r\n        Command Path = \r\n"
           "        Sequence Number = 302\r\n        User = OFFSEC\\admmig\r\n"
           "        Connected User = \r\n        Shell ID = Microsoft.PowerShell\r\n"
           "        Hôte = localisé\r\n")


def test_4103_context_info_fields():
    fields, other = parse_context_info(CONTEXT)
    assert fields["HostApplication"].endswith("-enc SQBFAFgA")
    assert fields["CommandName"] == "Invoke-Expression" and fields["SequenceNumber"] == "302"
    assert fields["ScriptName"] == "" and fields["User"] == "OFFSEC\\admmig"
    assert len(fields) == 16 and other == {"Hôte": "localisé"}
    xml = ("<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System>"
           "<Provider Name='Microsoft-Windows-PowerShell'/><EventID>4103</EventID>"
           "<Version>1</Version><Level>4</Level><Task>106</Task><Opcode>20</Opcode>"
           "<EventRecordID>3081</EventRecordID>"
           f"<Channel>{POWERSHELL_CHANNEL}</Channel><Computer>jump01</Computer></System>"
           f"<EventData><Data Name='ContextInfo'>{escape(CONTEXT)}</Data>"
           "<Data Name='UserData'></Data><Data Name='Payload'>CommandInvocation(Invoke-Expression)"
           ": \"Invoke-Expression\"</Data></EventData></Event>")
    ev = parse_event(xml.encode(), ("t", 1))
    detail = pipeline_detail(ev, max_payload=20)
    assert detail.context["CommandType"] == "Cmdlet"
    assert detail.payload == "CommandInvocation(In" and detail.payload_truncated
    assert pipeline_detail(part(1, 1, "x")) is None
    assert ScriptBlockAssembler().add(ev) == []
