"""Builders shared by tests (like ``fake_live.py``): the Sysmon and Security events Sigma alerts
are made from, the whoami rule they match, SysmonX ``SigmaAlert`` events (1000) as a replay
reads them back, and a Sysmon record's ``System`` as the evtx library renders it in JSON.

Used by tests/test_alert_channels.py, test_alert_triage.py, test_sigma_other_channels.py,
test_detection_wiring.py, test_parallel_readback.py (events and rules) and
test_lazy_eventdata.py, test_speedups.py, test_sigma_raw_key.py (``EVTX_SYSTEM``); test_raw_path.py and
test_replay_batches.py (``RecordingSink``), test_alert_channels.py and
test_alerts_readback_followups.py (``whoami_pair_rules``), test_parallel_readback.py and
test_alerts_readback_followups.py (``folder_with_read_back_alerts``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from sysmonx.event import Event
from sysmonx.sources import open_source

SYSMON_CHANNEL = "Microsoft-Windows-Sysmon/Operational"
SECURITY_PROVIDER = "Microsoft-Windows-Security-Auditing"
ALERT_CHANNEL = "SysmonX/Alerts"
WHOAMI = "C:\\Windows\\System32\\whoami.exe"
#: the time the hand-made events of these tests carry unless told otherwise
T0 = "2024-01-01T00:00:00.000000000Z"


def whoami_rule(rule_id: str, title: str, level: str, *, name: Optional[str] = None,
                status: Optional[str] = None, tags: Sequence[str] = ()) -> str:
    """A Sigma rule (YAML text) of ``process_creation`` matching ``Image|endswith
    '\\\\whoami.exe'``, with the given ``id``, ``title``, ``level`` and, when given, ``name``,
    ``status`` and ``tags``."""
    lines = [f"title: {title}", f"id: {rule_id}"]
    if name is not None:
        lines.append(f"name: {name}")
    if status is not None:
        lines.append(f"status: {status}")
    lines += [f"level: {level}", "logsource:", "  product: windows",
              "  category: process_creation", "detection:", "  selection:",
              "    Image|endswith: '\\\\whoami.exe'", "  condition: selection"]
    if tags:
        lines.append("tags:")
        lines += [f"  - {t}" for t in tags]
    return "\n".join(lines) + "\n"


def sysmon_event(event_id: int, data: dict, record_id: Optional[int] = None, *,
                 computer: str = "h", time_created: str = T0, **system: Any) -> Event:
    """A Windows Sysmon event of ``Microsoft-Windows-Sysmon/Operational`` (the Event's default
    provider), on ``computer``."""
    return Event(event_id, data, channel=SYSMON_CHANNEL, computer=computer,
                 time_created=time_created, record_id=record_id, **system)


def security_event(event_id: int, data: dict, record_id: Optional[int] = None, *,
                   channel: str = "Security", computer: Optional[str] = "h",
                   time_created: Optional[str] = T0) -> Event:
    """A record of the Security auditing provider (``Microsoft-Windows-Security-Auditing``, no
    provider GUID) in ``channel``."""
    return Event(event_id, data, provider=SECURITY_PROVIDER, provider_guid=None,
                 channel=channel, computer=computer, time_created=time_created,
                 record_id=record_id)


def alert_event(data: dict, record_id: Optional[int] = 1, *, computer: Optional[str] = "h",
                channel: Optional[str] = ALERT_CHANNEL,
                time_created: Optional[str] = T0) -> Event:
    """A SysmonX ``SigmaAlert`` event (1000, provider ``SysmonX``) with EventData ``data``, as
    a replay reads one back from an earlier output."""
    return Event(1000, data, provider="SysmonX", provider_guid=None, channel=channel,
                 computer=computer, time_created=time_created, record_id=record_id)


def alert_events(path: Path) -> list[Event]:
    """The SigmaAlert events (1000) of a replay's output file, in order."""
    return [e for e in open_source(str(path), lambda e: None) if e.event_id == 1000]


#: ``System`` of a Sysmon 1 record (IEWIN7, record 4) as evtx's JSON renders it.
EVTX_SYSTEM = (
    '"System":{"Provider":{"#attributes":{"Name":"Microsoft-Windows-Sysmon",'
    '"Guid":"5770385F-C22A-43E0-BF4C-06F5698FFBD9"}},"EventID":1,"Version":5,"Level":4,'
    '"Task":1,"Opcode":0,"Keywords":"0x8000000000000000","TimeCreated":{"#attributes":'
    '{"SystemTime":"2019-04-18T16:55:37.125139Z"}},"EventRecordID":4,"Correlation":null,'
    '"Execution":{"#attributes":{"ProcessID":3192,"ThreadID":3288}},"Channel":'
    '"Microsoft-Windows-Sysmon/Operational","Computer":"IEWIN7","Security":{"#attributes":'
    '{"UserID":"S-1-5-18"}}}')


class RecordingSink:
    """A binary stream that keeps what is written (``parts``, one bytes object per ``write``);
    ``fail_at``: the write (1-based) that raises ``OSError`` (ENOSPC) instead."""

    def __init__(self, fail_at: int = 0) -> None:
        self.parts: list[bytes] = []
        self.fail_at = fail_at
        self.n = 0

    def write(self, b: bytes) -> int:
        self.n += 1
        if self.n == self.fail_at:
            raise OSError(28, "No space left on device")
        self.parts.append(bytes(b))
        return len(b)

    def flush(self) -> None:
        pass


def whoami_pair_rules(sysmon_id: str, security_id: str, correlation_id: str, gte: int) -> str:
    """Sigma rules (YAML text): the whoami rule on Sysmon's ``process_creation``
    (``sysmon_id``, level low), its Security 4688 twin (``security_id``, level low) and an
    ``event_count`` correlation over both (``correlation_id``, level high, 1 h, ``gte``)."""
    return whoami_rule(sysmon_id, "whoami (Sysmon)", "low") + f"""---
title: whoami (Security)
id: {security_id}
level: low
logsource:
  product: windows
  service: security
detection:
  selection:
    EventID: 4688
    NewProcessName|endswith: '\\\\whoami.exe'
  condition: selection
---
title: whoami seen
id: {correlation_id}
level: high
correlation:
    type: event_count
    rules:
        - {sysmon_id}
        - {security_id}
    timespan: 1h
    condition:
        gte: {gte}
"""


def folder_with_read_back_alerts(evtx: Path, rules: Path, tmp_path: Path) -> tuple[Path, list]:
    """Replay ``evtx`` with the Sigma ``rules`` file to JSON lines (``sysmonx replay ... -f
    jsonl -q``, exit 0 asserted), then make ``tmp_path/in`` holding the EVTX (a symlink,
    ``b_events.evtx``) and, after it, the run's SigmaAlert lines (``c_alerts.jsonl``), as a
    replay reads an earlier output back. Returns the folder and the alert lines' ``RuleKind``s
    in order."""
    import orjson

    from sysmonx.cli import main
    first = tmp_path / "first.jsonl"
    assert main(["replay", str(evtx), "--rules", str(rules), "-f", "jsonl", "-o", str(first),
                 "-q"]) == 0
    alerts = [ln for ln in first.read_bytes().splitlines(keepends=True)
              if orjson.loads(ln)["EventID"] == 1000]
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "b_events.evtx").symlink_to(evtx)
    (folder / "c_alerts.jsonl").write_bytes(b"".join(alerts))  # after its events
    return folder, [orjson.loads(ln)["RuleKind"] for ln in alerts]
