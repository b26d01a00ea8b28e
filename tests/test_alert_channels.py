"""SigmaAlert events (1000) name the channel of the records they were made from (``Channels``):
record numbers are per channel, so ``Computer`` and ``RecordIds`` alone do not find a record
(Security and Sysmon both have a record 5 on one computer).

A read-back alert is dropped as "made again" only when this run matched the record it names in
that channel; an alert without ``Channels`` (an older output) only where this run matched its
record in exactly one channel."""

from __future__ import annotations

from builders import WHOAMI, alert_event, security_event, sysmon_event, whoami_pair_rules

from sysmonx.detection import DetectionStage, load_rules_text
from sysmonx.detection.stages import SigmaMatchStage
from sysmonx.event import Event

PS = "Microsoft-Windows-PowerShell/Operational"
PS_CORE = "PowerShellCore/Operational"

# ps_script covers both PowerShell channels with the same EventID (4104)
SCRIPT_RULE = """title: Script block with Invoke-Mimikatz
id: 0c1ae2a4-0000-4000-8000-00000000c001
level: high
logsource:
  product: windows
  category: ps_script
detection:
  selection:
    ScriptBlockText|contains: Invoke-Mimikatz
  condition: selection
"""

# a correlation over a Sysmon rule and a Security rule
PAIR_RULES = whoami_pair_rules("0c1ae2a4-0000-4000-8000-00000000c002",
                               "0c1ae2a4-0000-4000-8000-00000000c003",
                               "0c1ae2a4-0000-4000-8000-00000000c004", 1)


def _script(channel: str, rid: int) -> Event:
    return Event(4104, {"ScriptBlockText": "Invoke-Mimikatz -DumpCreds"},
                 provider="Microsoft-Windows-PowerShell", provider_guid=None, channel=channel,
                 computer="h", time_created="2024-01-01T00:00:00.000000000Z", record_id=rid)


def _alert(data: dict, rid: int = 1) -> Event:
    return alert_event(data, rid)


def test_detection_alert_names_its_channel():
    det = DetectionStage(load_rules_text(SCRIPT_RULE))
    (alert,) = det.process(_script(PS_CORE, 5))
    e = alert.to_event(record_id=1)
    assert e.data["Channels"] == PS_CORE
    assert e.data["RecordIds"] == "5" and e.data["EventIds"] == "4104"
    assert e.computer == "h" and e.version == 3


def test_read_back_alert_of_another_channel_is_kept():
    """PowerShellCore/Operational 4104 #5's alert is not dropped because this run matched
    Microsoft-Windows-PowerShell/Operational 4104 #5 (same rule, computer, EventID, record)."""
    det = DetectionStage(load_rules_text(SCRIPT_RULE))
    (made,) = det.process(_script(PS_CORE, 5))
    core_alert = made.to_event(record_id=1)
    stage = SigmaMatchStage(det)
    out: list = []
    assert stage.process(_script(PS, 5), out.append) is False  # matched here: RuleHits
    assert stage.process(core_alert, out.append) is True and stage.replaced == 0
    # the alert of the record this run matched is made again: dropped
    (ps_made,) = det.process(_script(PS, 5))
    assert stage.process(ps_made.to_event(record_id=2), out.append) is False
    assert stage.replaced == 1
    # once the PowerShellCore record is matched too, its alert is made again as well
    assert stage.process(_script(PS_CORE, 5), out.append) is False
    assert stage.process(core_alert, out.append) is False and stage.replaced == 2
    # channel names compare as Windows does, without case
    lower = _alert({**core_alert.data, "Channels": PS_CORE.lower()}, 3)
    assert stage.process(lower, out.append) is False and stage.replaced == 3


def test_read_back_alert_without_channels_is_made_again_only_when_unambiguous():
    """An alert written before Channels existed (version 2): replayed with the same rules it is
    made again (dropped, not written twice) where this run matched its record in one channel
    only; where two channels of the computer had a record 5 it is kept, never dropped on a
    guess."""
    det = DetectionStage(load_rules_text(SCRIPT_RULE))
    (made,) = det.process(_script(PS, 5))
    old = dict(made.to_event(record_id=1).data)
    del old["Channels"]
    stage = SigmaMatchStage(det)
    out: list = []
    assert stage.process(_alert(old), out.append) is True and stage.replaced == 0  # not yet
    assert stage.process(_script(PS, 5), out.append) is False
    assert stage.process(_alert(old, 2), out.append) is False and stage.replaced == 1
    # the same record number matched in a second channel: which one the alert names is unknown
    assert stage.process(_script(PS_CORE, 5), out.append) is False
    assert stage.process(_alert(old, 3), out.append) is True and stage.replaced == 1


def test_read_back_alert_without_channels_kept_after_its_key_is_forgotten():
    """The channel table follows the hit table's bound: a forgotten record is kept."""
    det = DetectionStage(load_rules_text(SCRIPT_RULE))
    (made,) = det.process(_script(PS, 5))
    old = dict(made.to_event(record_id=1).data)
    del old["Channels"]
    stage = SigmaMatchStage(det)
    stage.HITS_KEPT = 2
    out: list = []
    for rid in (5, 6, 7):
        assert stage.process(_script(PS, rid), out.append) is False
    assert stage._chans.get(("h", 4104, 5)) is None and len(stage._chans) == 2
    assert stage.process(_alert(old), out.append) is True and stage.replaced == 0


def test_correlation_alert_names_its_channels_and_is_kept_for_another_channel():
    """Security 4688 #5 and Sysmon 1 #5 on one computer: a correlation alert read back that
    names the Security record is kept when this run matched only the Sysmon one."""
    det = DetectionStage(load_rules_text(PAIR_RULES))
    sec = security_event(4688, {"NewProcessName": WHOAMI, "NewProcessId": "0x1a4"}, 5)
    sysmon = sysmon_event(1, {"Image": WHOAMI, "ProcessId": "420"}, 5,
                          time_created="2024-01-01T00:00:01.000000000Z")
    alerts = [a for a in det.process(sec) if a.kind != "detection"] + \
        [a for a in det.finish() if a.kind != "detection"]
    (corr,) = alerts
    e = corr.to_event(record_id=1)
    assert e.data["Channels"] == "Security"
    assert e.data["RecordIds"] == "5" and e.data["EventIds"] == "4688"
    stage = SigmaMatchStage(DetectionStage(load_rules_text(PAIR_RULES)))
    out: list = []
    assert stage.process(sysmon, out.append) is False
    assert stage.process(e, out.append) is True and stage.replaced == 0
    # made again once the Security record is matched here
    assert stage.process(sec, out.append) is False
    assert stage.process(e, out.append) is False and stage.replaced == 1


def test_correlation_alert_json_names_its_channels():
    """``--alerts FILE``: a correlation's line names the channels of the events it correlates
    (a detection's is its ``event.Channel``), as event 1000's ``Channels`` does."""
    import orjson
    det = DetectionStage(load_rules_text(PAIR_RULES.replace("gte: 1", "gte: 2")))
    sec = security_event(4688, {"NewProcessName": WHOAMI}, 5)
    sysmon = sysmon_event(1, {"Image": WHOAMI}, 7, time_created="2024-01-01T00:00:01.000000000Z")
    alerts = det.process(sec) + det.process(sysmon) + det.finish()
    corr = [a for a in alerts if a.kind != "detection"]
    lines = [orjson.loads(a.to_json()) for a in corr]
    assert [(ln["event_ids"], ln["record_ids"], ln["channels"]) for ln in lines] == \
        [([4688, 1], [5, 7], ["Security", "Microsoft-Windows-Sysmon/Operational"])]
    for a, line in zip(corr, lines, strict=True):
        assert line == orjson.loads(orjson.dumps(a.to_dict()))
        assert a.to_event(1).data["Channels"] == ",".join(line["channels"])


def test_channel_name_with_a_comma_round_trips():
    """A channel name may hold a comma (a custom ETW channel): ``Channels`` percent-encodes it,
    reading back gives the names written, and the alert of that record is made again (not
    taken for two channels and written twice). Names without ``,`` or ``%`` are unchanged, so
    older alerts read the same."""
    from sysmonx.detection.alerts import Alert, join_channels, split_channels
    odd = "Custom,Trace/Operational"
    names = [odd, "Security", "100%Done/Admin", ""]
    text = join_channels(names)
    assert text == "Custom%2CTrace/Operational,Security,100%25Done/Admin,"
    assert split_channels(text) == names
    assert split_channels("Security,Microsoft-Windows-Sysmon/Operational") == \
        ["Security", "Microsoft-Windows-Sysmon/Operational"]
    assert split_channels("50%off,a%2cb") == ["50%off", "a,b"]  # lenient: % kept as written
    det = DetectionStage(load_rules_text(SCRIPT_RULE))
    rule = det.matcher.compiled[0]
    event = _script(odd, 9)
    alert = Alert(rule_id=rule.key, title="t", level="high", status="", kind="detection",
                  window_start="2024-01-01T00:00:00.000000000Z",
                  window_end="2024-01-01T00:00:00.000000000Z", computer="h",
                  record_ids=(9,), event_ids=(4104,),
                  event={"Channel": odd, "EventID": 4104, "EventRecordID": 9})
    e = alert.to_event(record_id=1)
    assert e.data["Channels"] == "Custom%2CTrace/Operational"
    assert split_channels(e.data["Channels"]) == [odd]
    stage = SigmaMatchStage(det)
    stage.note(event, [rule])
    assert stage.made_again(e)
    # the same record number in a channel named like one half of it: not the same record
    other = _alert({**e.data, "Channels": "Custom"}, 2)
    assert not stage.made_again(other)
