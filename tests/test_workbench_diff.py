"""``sysmonx config diff``: "only A"/"only B" per EventID equal the difference of two replays'
outputs on the public corpus; reasons and examples name each config's deciding filters."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from sysmonx.cli import main

SWIFT = "configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml"
MODULAR = "configs/olafhartong__sysmon-modular/sysmonconfig.xml"


def _replay_keys(corpus, config, tmp_path, name) -> Counter:
    """(EventID, Computer, Channel, EventRecordID, time) of every event a replay writes."""
    out = tmp_path / f"{name}.jsonl"
    assert main(["replay", "-q", "-c", str(corpus / config), str(corpus / "evtx"),
                 "-f", "jsonl", "-o", str(out)]) == 0
    keys: Counter = Counter()
    for line in out.read_text().splitlines():
        e = json.loads(line)
        s = e["System"]
        keys[(e["EventID"], s["Computer"], s["Channel"], s["EventRecordID"],
              s["TimeCreated"])] += 1
    return keys


@pytest.fixture(scope="module")
def diff_json(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("diff") / "diff.json"
    assert main(["config", "diff", str(corpus / SWIFT), str(corpus / MODULAR),
                 str(corpus / "evtx"), "-f", "json", "-o", str(out), "-n", "2"]) == 0
    return json.loads(out.read_text())


def test_only_a_only_b_equal_two_replays(corpus, diff_json, tmp_path):
    a = _replay_keys(corpus, SWIFT, tmp_path, "a")
    b = _replay_keys(corpus, MODULAR, tmp_path, "b")
    assert max(a.values()) == 1 and max(b.values()) == 1  # the keys identify events
    only_a = Counter(k[0] for k in a if k not in b)
    only_b = Counter(k[0] for k in b if k not in a)
    both = Counter(k[0] for k in a if k in b)
    assert diff_json["only_a"] == {str(k): v for k, v in sorted(only_a.items())}
    assert diff_json["only_b"] == {str(k): v for k, v in sorted(only_b.items())}
    assert {e: c["both"] for e, c in diff_json["events"].items() if c["both"]} == {
        str(k): v for k, v in sorted(both.items())}
    # real figures: SwiftOnSecurity keeps 430 events sysmon-modular drops, and 97 the reverse
    assert sum(only_a.values()) == 430 and sum(only_b.values()) == 97
    assert diff_json["only_a"]["1"] == 416 and diff_json["only_b"]["7"] == 38
    assert diff_json["cross_check"]["mismatches"] == 0


def test_reasons_and_examples(diff_json):
    d = diff_json
    assert d["format"] == "sysmonx-config-diff/1"
    top_a = d["reasons"]["only_a"][0]
    # SwiftOnSecurity's ProcessCreate is exclude-only (kept by default); sysmon-modular's
    # include sets match none of these 416+ events (dropped by default)
    assert top_a["a"].startswith("default: kept") and top_a["b"].startswith("default: dropped")
    for side, n in (("only_a", 430), ("only_b", 97)):
        assert sum(r["count"] for r in d["reasons"][side]) + d["reasons_other"][side] == n
    ex = d["examples"]["only_b"]["7"]
    assert len(ex) == 2
    for e in ex:
        assert e["b"]["decision"] == "include" and e["a"]["decision"] == "exclude"
        assert e["b"]["filters"] and e["b"]["filters"][0]["file"].endswith("sysmonconfig.xml")
        assert e["b"]["rule_name"].startswith("technique_id=")
        assert e["event"]["event_id"] == 7 and e["event"]["fields"]["ImageLoaded"]
    assert all(len(v) <= 2 for side in d["examples"].values() for v in side.values())


def test_text_form(corpus, capsys):
    assert main(["config", "diff", str(corpus / SWIFT), str(corpus / MODULAR),
                 str(corpus / "evtx"), "-n", "1"]) == 0
    text = capsys.readouterr().out
    assert "Kept only by A" in text and "Kept only by B" in text
    total = [ln for ln in text.splitlines() if ln.startswith("total")][0].split()
    assert total[1:6] == ["439", "430", "97", "789", "413"]


def test_same_config_twice_differs_nowhere(corpus, capsys):
    assert main(["config", "diff", str(corpus / MODULAR), str(corpus / MODULAR),
                 str(corpus / "evtx"), "-f", "json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["only_a"] == {} and d["only_b"] == {}
    assert all(c["renamed"] == 0 for c in d["events"].values())
    assert sum(c["both"] + c["neither"] for c in d["events"].values()) == 1755
