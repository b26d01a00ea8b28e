"""Alerts carry the rule's own text for triage and Sysmon's time format.

A new user triaging SigmaHQ alerts found no ``description``, ``falsepositives``, ``references``
or ``author`` in them (Hayabusa, Chainsaw and Zircolite show them), and the alert's ``time`` with
9 fractional digits beside events written with Sysmon's 7. These tests fail on the code before
the rule's text and :func:`~sysmonx.detection.alerts.system_time` were added.
"""

from __future__ import annotations

import json

from sysmonx.detection import DetectionStage, load_rules_text
from sysmonx.detection.alerts import MAX_META_CHARS
from sysmonx.event import Event
from sysmonx.schema.catalogue import EVENTS
from sysmonx.sinks.xml_windows import render_windows_xml

LONG = "x" * (MAX_META_CHARS + 10)
RULE = """title: cmd
id: 22222222-2222-2222-2222-222222222222
status: test
level: high
description: |
    Detects cmd.
    Second line with "quotes", </Data><Data Name='RuleLevel'>critical and a tab\there.
author: Jane Doe, John Roe
references:
    - https://example.org/a
    - "https://example.org/b\\n\\"level\\": \\"critical\\""
falsepositives:
    - Admin scripts
    - {long}
logsource:
    product: windows
    category: process_creation
detection:
    sel:
        Image|endswith: '\\\\cmd.exe'
    condition: sel
""".replace("{long}", LONG)

BARE = RULE.split("description:")[0] + "logsource:" + RULE.split("logsource:")[1]


def _event() -> Event:
    return Event(1, {"RuleName": "-", "Image": "c:\\cmd.exe", "CommandLine": "cmd"},
                 record_id=7, computer="host1", time_created="2024-05-01T10:00:00.123456789Z")


def test_json_alert_carries_the_rules_text_bounded_and_escaped():
    (alert,) = DetectionStage(load_rules_text(RULE)).process(_event())
    line = alert.to_json()
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    d = json.loads(line)
    assert d["description"].startswith("Detects cmd.\nSecond line with \"quotes\", </Data>")
    assert d["author"] == "Jane Doe, John Roe"
    assert d["references"] == ["https://example.org/a",
                               'https://example.org/b\n"level": "critical"']
    assert d["falsepositives"][0] == "Admin scripts"
    assert d["falsepositives"][1] == "x" * MAX_META_CHARS + "…"
    # nothing in the text changed a field
    assert d["level"] == "high" and d["rule_id"].startswith("2222")
    keys = list(d)
    assert keys[keys.index("tags") + 1:keys.index("tags") + 5] == [
        "description", "author", "references", "falsepositives"]
    assert alert.to_dict()["falsepositives"] == d["falsepositives"]


def test_rule_without_text_gives_null_and_empty_lists():
    (alert,) = DetectionStage(load_rules_text(BARE)).process(_event())
    d = json.loads(alert.to_json())
    assert (d["description"], d["author"], d["references"], d["falsepositives"]) == (
        None, None, [], [])
    e = alert.to_event(record_id=1)
    assert e.data["RuleDescription"] == "" and e.data["RuleReferences"] == ""


def test_alert_time_is_sysmons_systemtime_with_7_digits():
    (alert,) = DetectionStage(load_rules_text(RULE)).process(_event())
    d = json.loads(alert.to_json())
    assert d["time"] == d["event"]["TimeCreated"] == "2024-05-01T10:00:00.1234567Z"
    assert alert.to_dict()["time"] == "2024-05-01T10:00:00.1234567Z"
    xml = render_windows_xml(alert.to_event(record_id=1))
    # event 1000: SystemTime 7 digits; a detection has no window (a correlation's is tested
    # in test_alert_format.py)
    assert "SystemTime='2024-05-01T10:00:00.1234567Z'" in xml
    assert "WindowEnd" not in xml


def test_event_1000_carries_the_rules_text_in_its_catalogue_order():
    (alert,) = DetectionStage(load_rules_text(RULE)).process(_event())
    e = alert.to_event(record_id=1)
    (ev,) = [e for e in EVENTS if e.event_id == 1000]
    names = [f.name for f in ev.fields]
    assert names[names.index("Tags") + 1:names.index("Tags") + 5] == [
        "RuleDescription", "RuleAuthor", "RuleReferences", "RuleFalsePositives"]
    assert [k for k in e.data if k in names] == [n for n in names if n in e.data]
    assert e.data["RuleAuthor"] == "Jane Doe, John Roe"
    assert e.data["RuleReferences"] == ('https://example.org/a; '
                                        'https://example.org/b "level": "critical"')
    assert e.data["RuleFalsePositives"].startswith("Admin scripts; xxx")
    xml = render_windows_xml(e)
    # the description's markup is escaped: one RuleLevel field, the rule's
    assert xml.count("<Data Name='RuleLevel'>") == 1
    assert "<Data Name='RuleLevel'>high</Data>" in xml
    assert "&lt;/Data&gt;" in xml
