"""Sigma correlations: the specification's public examples, group-by isolation, strict order,
suppression, window-close conditions, bounded state.

The examples are read from the Sigma specification in the corpus (correlation rules
specification v2.1.0 and its schema test files), never copied here; the detection rules they
refer to and the events are written by the tests.
"""

from __future__ import annotations

import re

import pytest

from sysmonx.detection import DetectionOptions, DetectionStage, load_rules_text
from sysmonx.detection.correlation import format_ns, time_ns
from sysmonx.event import Event

SECURITY = "Microsoft-Windows-Security-Auditing"
T0 = 1_700_000_000  # seconds


def at(seconds: float) -> str:
    return format_ns(int((T0 + seconds) * 1_000_000_000))


def sec_event(eid: int, seconds: float, rid: int = 0, **data) -> Event:
    return Event(eid, dict(data), provider=SECURITY, provider_guid=None, channel="Security",
                 time_created=at(seconds), record_id=rid, computer=data.get("Computer", "dc1"))


def proc_event(seconds: float, rid: int = 0, computer: str = "ws1", **data) -> Event:
    return Event(1, dict(data), time_created=at(seconds), record_id=rid, computer=computer)


def base_rule(ref: str, eid: int, title: str = "") -> str:
    """A Security-log detection rule matching EventID ``eid``, named (or with the id) ``ref``."""
    key = "id" if re.fullmatch(r"[0-9a-f-]{36}", ref) else "name"
    return (f"title: {title or ref}\n{key}: {ref}\nlogsource:\n    product: windows\n"
            f"    service: security\ndetection:\n    selection:\n        EventID: {eid}\n"
            f"    condition: selection\n")


def proc_rule(ref: str, needle: str) -> str:
    return (f"title: {ref}\nname: {ref}\nlogsource:\n    product: windows\n"
            f"    category: process_creation\ndetection:\n    selection:\n"
            f"        CommandLine|contains: '{needle}'\n    condition: selection\n")


def stage(*docs: str, **opts) -> DetectionStage:
    st = DetectionStage(load_rules_text("\n---\n".join(d.strip("\n") for d in docs)),
                        DetectionOptions(**opts))
    assert not st.rejected, [str(i) for i in st.rejected]
    return st


def run(st: DetectionStage, events) -> list:
    out = []
    for e in events:
        out.extend(st.process(e))
    out.extend(st.finish())
    return [a for a in out if a.kind != "detection"]


# -- the specification's examples ---------------------------------------------------------------

@pytest.fixture(scope="module")
def spec(corpus):
    root = corpus / "sigma" / "sigma-specification"
    text = (root / "specification" / "sigma-correlation-rules-specification.md").read_text()
    blocks = re.findall(r"```ya?ml\n(.*?)```", text, re.DOTALL)
    out = {"blocks": [b for b in blocks if "correlation:" in b], "text": text}
    for f in sorted((root / "tests" / "schema" / "correlation").glob("*.yml")):
        out[f.stem] = f.read_text()
    return out


def spec_block(spec, marker: str) -> str:
    """The example YAML block that contains ``marker`` (a title or a distinctive line)."""
    found = [b for b in spec["blocks"] if marker in b]
    assert found, marker
    return found[0]


def test_event_count_example(spec):
    # "More than or equal 100 failed login attempts to a destination host in an hour"
    corr = spec["event_count"]
    st = stage(corr, base_rule("5638f7c0-ac70-491d-8465-2a65075e0d86", 4625, "failed login"))
    alerts = run(st, [sec_event(4625, i * 30, i, ComputerName="dc1") for i in range(100)])
    assert len(alerts) == 1
    a = alerts[0]
    assert a.rule_id == "0e95725d-7320-415d-80f7-004da920fc11" and a.kind == "event_count"
    assert a.group == {"ComputerName": "dc1"} and a.value == 100 and a.event_count == 100
    assert a.window_start == at(0) and a.window_end == at(99 * 30)
    assert a.record_ids[:3] == (0, 1, 2)
    # 99 events: no alert; 100 events over more than an hour: no alert either.
    st = stage(corr, base_rule("5638f7c0-ac70-491d-8465-2a65075e0d86", 4625))
    assert run(st, [sec_event(4625, i * 30, ComputerName="dc1") for i in range(99)]) == []
    st = stage(corr, base_rule("5638f7c0-ac70-491d-8465-2a65075e0d86", 4625))
    assert run(st, [sec_event(4625, i * 40, ComputerName="dc1") for i in range(100)]) == []


def test_event_count_group_isolation(spec):
    st = stage(spec["event_count"], base_rule("5638f7c0-ac70-491d-8465-2a65075e0d86", 4625))
    # 150 events interleaved over two hosts (75 each): events of one never count for the other.
    events = [sec_event(4625, i, ComputerName="dc1" if i % 2 else "dc2") for i in range(150)]
    assert run(st, events) == []
    st = stage(spec["event_count"], base_rule("5638f7c0-ac70-491d-8465-2a65075e0d86", 4625))
    events = [sec_event(4625, i, ComputerName="dc1" if i % 3 else "dc2") for i in range(160)]
    alerts = run(st, events)
    assert [a.group for a in alerts] == [{"ComputerName": "dc1"}]


def test_value_count_example(spec):
    # "Failed logon attempts with more than 100 different user accounts per source and
    # destination at a day"
    corr = spec["value_count"]
    base = base_rule("5638f7c0-ac70-491d-8465-2a65075e0d86", 4625)
    st = stage(corr, base)
    events = [sec_event(4625, i * 60, ComputerName="dc1", WorkstationName="ws9", User=f"u{i}")
              for i in range(100)]
    (a,) = run(st, events)
    assert a.value == 100 and a.group == {"ComputerName": "dc1", "WorkstationName": "ws9"}
    st = stage(corr, base)
    events = [sec_event(4625, i * 60, ComputerName="dc1", WorkstationName="ws9",
                        User=f"u{i % 99}") for i in range(300)]
    assert run(st, events) == []
    # Another workstation's users never count toward this one.
    st = stage(corr, base)
    events = [sec_event(4625, i * 60, ComputerName="dc1", WorkstationName=f"ws{i % 2}",
                        User=f"u{i}") for i in range(150)]
    assert run(st, events) == []


def test_temporal_example(spec):
    # "Reconnaissance commands defined in three Sigma rules are invoked in arbitrary order
    # within 5 minutes on a system by the same user"
    corr = spec["temporal"]
    rules = [proc_rule("recon_cmd_a", "whoami"), proc_rule("recon_cmd_b", "ipconfig"),
             proc_rule("recon_cmd_c", "net user")]
    events = [proc_event(0, 1, CommandLine="net user", User="bob"),
              proc_event(60, 2, CommandLine="whoami", User="bob"),
              proc_event(240, 3, CommandLine="ipconfig /all", User="bob")]
    (a,) = run(stage(corr, *rules), events)
    assert a.kind == "temporal" and a.group == {"ComputerName": "ws1", "User": "bob"}
    assert a.record_ids == (1, 2, 3) and a.value == 3
    # Another user's command completes nothing; neither does a spread over 6 minutes.
    other = [proc_event(0, 1, CommandLine="net user", User="bob"),
             proc_event(60, 2, CommandLine="whoami", User="alice"),
             proc_event(240, 3, CommandLine="ipconfig /all", User="bob")]
    assert run(stage(corr, *rules), other) == []
    slow = [proc_event(0, 1, CommandLine="net user", User="bob"),
            proc_event(60, 2, CommandLine="whoami", User="bob"),
            proc_event(360, 3, CommandLine="ipconfig /all", User="bob")]
    assert run(stage(corr, *rules), slow) == []
    # Another host, same user: separate group.
    hosts = [proc_event(0, 1, CommandLine="net user", User="bob"),
             proc_event(60, 2, CommandLine="whoami", User="bob", computer="ws2"),
             proc_event(240, 3, CommandLine="ipconfig /all", User="bob")]
    assert run(stage(corr, *rules), hosts) == []


def test_temporal_ordered_spec_example(spec):
    # "many failed logins as defined above are followed by a successful login by of the same
    # user account within 1 hour": the full example with chained correlations.
    example = spec_block(spec, "Correlation - Multiple Failed Logins Followed by Successful Login")
    st = stage(example)
    failures = [sec_event(4625, i, i, User="alice") for i in range(10)]
    alerts = run(st, failures + [sec_event(4624, 30, 99, User="alice")])
    assert len(alerts) == 1
    a = alerts[0]
    assert a.rule_id == "b180ead8-d58f-40b2-ae54-c8940995b9b6" and a.level == "high"
    assert a.kind == "temporal_ordered" and a.group == {"User": "alice"}
    assert a.record_ids == tuple(range(10)) + (99,)
    assert a.window_start == at(0) and a.window_end == at(30)
    # The inner correlations (generate not set) give no alert of their own.
    assert {x.rule_id for x in alerts} == {a.rule_id}
    # Successful login first, then the failures: wrong order, no alert.
    st = stage(example)
    assert run(st, [sec_event(4624, 0, 99, User="alice")]
               + [sec_event(4625, 1 + i, i, User="alice") for i in range(10)]) == []
    # Failures of alice, success of bob: different groups.
    st = stage(example)
    assert run(st, failures + [sec_event(4624, 30, 99, User="bob")]) == []
    # Nine failures only.
    st = stage(example)
    assert run(st, failures[:9] + [sec_event(4624, 30, 99, User="alice")]) == []
    # Success more than 10 minutes after the failures.
    st = stage(example)
    assert run(st, failures + [sec_event(4624, 700, 99, User="alice")]) == []


def test_temporal_ordered_section_example(spec):
    block = spec_block(spec, "type: temporal_ordered\n    rules:\n        - many_failed_logins")
    corr = "title: ordered\nid: 00000000-0000-0000-0000-0000000000f1\n" + block
    st = stage(corr, base_rule("many_failed_logins", 4625), base_rule("successful_login", 4624))
    assert len(run(st, [sec_event(4625, 0, User="u"), sec_event(4624, 10, User="u")])) == 1
    st = stage(corr, base_rule("many_failed_logins", 4625), base_rule("successful_login", 4624))
    assert run(st, [sec_event(4624, 0, User="u"), sec_event(4625, 10, User="u")]) == []


def test_value_sum_example(spec):
    corr = spec["value_sum"]
    rule = base_rule("website_access", 5156)
    events = [sec_event(5156, i * 60, i, SourceIP="10.0.0.5", User="bob", bytes_sent="300000")
              for i in range(4)]
    (a,) = run(stage(corr, rule), events)
    assert a.kind == "value_sum" and a.value == 1_200_000 and a.record_ids == (0, 1, 2, 3)
    assert run(stage(corr, rule), events[:3]) == []  # 900000 is not > 1000000
    # Non-numeric values are not summed.
    bad = [sec_event(5156, i, SourceIP="10.0.0.5", User="bob", bytes_sent="x") for i in range(9)]
    assert run(stage(corr, rule), bad) == []


def test_value_avg_example(spec):
    block = spec_block(spec, "type: value_avg")
    st = stage(block, base_rule("rule_a_id", 5156))
    low = [sec_event(5156, i, SourceIP="1.2.3.4", User="u", BytesOut="400") for i in range(3)]
    assert run(st, low) == []
    st = stage(block, base_rule("rule_a_id", 5156))
    (a,) = run(st, low + [sec_event(5156, 10, SourceIP="1.2.3.4", User="u", BytesOut="900")])
    assert a.kind == "value_avg" and a.value == pytest.approx(525.0)


def test_value_percentile_example(spec):
    # "A computer spawned a processes name in the last 24h than 1% of all the processes":
    # without condition.percentile, values whose share of the window is <= 1% alert.
    block = spec_block(spec, "type: value_percentile")
    rule = ("title: proc\nname: process_creation\nlogsource:\n    product: windows\n"
            "    category: process_creation\ndetection:\n    selection:\n"
            "        Image|endswith: '.exe'\n    condition: selection\n")
    st = stage(block, rule)
    events = [Event(1, {"image": "svchost.exe" if i else "evil.exe", "Image": "x.exe"},
                    time_created=at(i), record_id=i, computer="ws1") for i in range(150)]
    (a,) = run(st, events)
    assert a.kind == "value_percentile" and a.group == {"ComputerName": "ws1", "image": "evil.exe"}
    assert a.value == pytest.approx(100 / 150) and a.record_ids == (0,)


def test_value_percentile_and_median_numeric():
    rule = base_rule("xfer", 5156)
    p95 = ("title: p95\nid: 00000000-0000-0000-0000-0000000000a1\ncorrelation:\n"
           "    type: value_percentile\n    rules:\n        - xfer\n    group-by:\n"
           "        - User\n    timespan: 1h\n    condition:\n        field: bytes\n"
           "        percentile: 95\n        gt: 900\n")
    events = [sec_event(5156, i, User="u", bytes=str(10 * i)) for i in range(1, 101)]
    # gt is checked at every hit: the first window whose 95th percentile (linear interpolation
    # between closest ranks, as numpy's default) exceeds 900 is 10..950.
    (a,) = run(stage(p95, rule), events)
    assert a.value == pytest.approx(903.0) and a.event_count == 95
    med = p95.replace("value_percentile", "value_median").replace("        percentile: 95\n", "")
    med = med.replace("gt: 900", "gte: 500")
    (a,) = run(stage(med, rule), events)
    assert a.value == pytest.approx(500.0) and a.event_count == 99


def test_aliases_example(spec):
    block = spec_block(spec, "internal_ip:")
    internal_error = ("title: e\nname: internal_error\nlogsource:\n    product: windows\n"
                      "    service: security\ndetection:\n    selection:\n"
                      "        http.response.status_code: 500\n    condition: selection\n")
    new_conn = ("title: c\nname: new_network_connection\nlogsource:\n    product: windows\n"
                "    service: security\ndetection:\n    selection:\n"
                "        event.category: network\n    condition: selection\n")
    corr = block.replace("title: —", "title: aliased").replace("id: —",
                                                             "id: 00000000-0000-0000-0000-0000000000a2")
    err = sec_event(1, 0, 1, **{"http.response.status_code": "500", "destination.ip": "10.0.0.1",
                                "source.ip": "8.8.8.8"})
    conn = sec_event(2, 5, 2, **{"event.category": "network", "source.ip": "10.0.0.1",
                                 "destination.ip": "8.8.8.8"})
    (a,) = run(stage(corr, internal_error, new_conn), [err, conn])
    assert a.group == {"internal_ip": "10.0.0.1", "remote_ip": "8.8.8.8"}
    wrong = sec_event(2, 5, 2, **{"event.category": "network", "source.ip": "10.0.0.2",
                                  "destination.ip": "8.8.8.8"})
    assert run(stage(corr, internal_error, new_conn), [err, wrong]) == []


# -- order, isolation, suppression ---------------------------------------------------------------

ORDERED = ("title: ab\nid: 00000000-0000-0000-0000-0000000000b1\ncorrelation:\n"
           "    type: temporal_ordered\n    rules:\n        - step_a\n        - step_b\n"
           "    group-by:\n        - User\n    timespan: 5m\nlevel: high\n")


def ordered_stage():
    return stage(ORDERED, proc_rule("step_a", "aaa"), proc_rule("step_b", "bbb"))


def test_temporal_ordered_strict_order_by_event_time():
    st = ordered_stage()
    # B happens before A: arrival order does not matter, event time does.
    assert run(st, [proc_event(10, 1, CommandLine="aaa", User="u"),
                    proc_event(5, 2, CommandLine="bbb", User="u")]) == []
    st = ordered_stage()
    assert run(st, [proc_event(5, 1, CommandLine="bbb", User="u"),
                    proc_event(10, 2, CommandLine="aaa", User="u")]) == []
    # A arrives late but happened first: in order.
    st = ordered_stage()
    (a,) = run(st, [proc_event(10, 2, CommandLine="bbb", User="u"),
                    proc_event(5, 1, CommandLine="aaa", User="u")])
    assert a.record_ids == (1, 2)


def test_temporal_ordered_one_event_never_fills_two_steps():
    st = ordered_stage()
    assert run(st, [proc_event(5, 1, CommandLine="aaa bbb", User="u")]) == []
    st = ordered_stage()
    assert len(run(st, [proc_event(5, 1, CommandLine="aaa bbb", User="u"),
                        proc_event(6, 2, CommandLine="bbb", User="u")])) == 1


def test_temporal_ordered_group_isolation():
    st = ordered_stage()
    assert run(st, [proc_event(1, 1, CommandLine="aaa", User="a"),
                    proc_event(2, 2, CommandLine="bbb", User="b"),
                    proc_event(3, 3, CommandLine="aaa", User="b"),
                    proc_event(4, 4, CommandLine="bbb", User="c")]) == []


def test_temporal_ordered_equal_times_follow_arrival():
    st = ordered_stage()
    assert len(run(st, [proc_event(5, 1, CommandLine="aaa", User="u"),
                        proc_event(5, 2, CommandLine="bbb", User="u")])) == 1
    st = ordered_stage()
    assert run(st, [proc_event(5, 1, CommandLine="bbb", User="u"),
                    proc_event(5, 2, CommandLine="aaa", User="u")]) == []


def test_temporal_ordered_window_from_first_to_last():
    st = ordered_stage()
    assert run(st, [proc_event(0, 1, CommandLine="aaa", User="u"),
                    proc_event(301, 2, CommandLine="bbb", User="u")]) == []
    st = ordered_stage()
    # A later A restarts the chain within the window.
    (a,) = run(st, [proc_event(0, 1, CommandLine="aaa", User="u"),
                    proc_event(200, 2, CommandLine="aaa", User="u"),
                    proc_event(400, 3, CommandLine="bbb", User="u")])
    assert a.record_ids == (2, 3)


COUNT = ("title: burst\nid: 00000000-0000-0000-0000-0000000000c1\ncorrelation:\n"
         "    type: event_count\n    rules:\n        - step_a\n    group-by:\n        - User\n"
         "    timespan: 1m\n    condition:\n        gte: 10\nlevel: medium\n")


def test_one_burst_one_alert():
    st = stage(COUNT, proc_rule("step_a", "aaa"))
    burst = [proc_event(i * 0.05, i, CommandLine="aaa", User="u") for i in range(1000)]
    alerts = run(st, burst)
    assert len(alerts) == 1 and alerts[0].event_count == 10
    # A second burst after the window: a second alert.
    st = stage(COUNT, proc_rule("step_a", "aaa"))
    later = [proc_event(200 + i * 0.05, 2000 + i, CommandLine="aaa", User="u") for i in range(50)]
    alerts = run(st, burst + later)
    assert len(alerts) == 2 and alerts[1].record_ids[0] >= 2000
    # Two users bursting at the same time: one alert each.
    st = stage(COUNT, proc_rule("step_a", "aaa"))
    both = [proc_event(i * 0.05, i, CommandLine="aaa", User=f"u{i % 2}") for i in range(100)]
    assert sorted(a.group["User"] for a in run(st, both)) == ["u0", "u1"]


def test_generate_controls_base_rule_alerts():
    base = proc_rule("step_a", "aaa")
    st = stage(COUNT, base)
    out = [a for i in range(3) for a in st.process(proc_event(i, i, CommandLine="aaa", User="u"))]
    assert out == []
    st = stage(COUNT.replace("    type: event_count\n", "    type: event_count\n    generate: true\n"),
               base)
    out = [a for i in range(3) for a in st.process(proc_event(i, i, CommandLine="aaa", User="u"))]
    assert [a.kind for a in out] == ["detection"] * 3
    assert st.summary_rows()[0].matches == 3


def test_window_close_conditions():
    few = COUNT.replace("gte: 10", "lt: 3")
    st = stage(few, proc_rule("step_a", "aaa"))
    events = [proc_event(0, 1, CommandLine="aaa", User="quiet"),
              proc_event(1, 2, CommandLine="aaa", User="loud"),
              proc_event(2, 3, CommandLine="aaa", User="loud"),
              proc_event(3, 4, CommandLine="aaa", User="loud"),
              proc_event(10, 5, CommandLine="aaa", User="quiet")]
    alerts = []
    for e in events:
        alerts += st.process(e)
    assert alerts == []  # nothing can be said before the windows close
    alerts = st.finish()
    assert [(a.group["User"], a.value) for a in alerts] == [("quiet", 2)]
    # A later hit past the window closes it.
    st = stage(few, proc_rule("step_a", "aaa"))
    out = []
    for e in [proc_event(0, 1, CommandLine="aaa", User="q"),
              proc_event(100, 2, CommandLine="aaa", User="q")]:
        out += st.process(e)
    assert [(a.group["User"], a.value, a.record_ids) for a in out] == [("q", 1, (1,))]


def test_extended_condition():
    corr = ("title: a-not-b\nid: 00000000-0000-0000-0000-0000000000d1\ncorrelation:\n"
            "    type: temporal\n    group-by:\n        - User\n    timespan: 1m\n"
            "    condition: step_a and not step_b\n")
    rules = (proc_rule("step_a", "aaa"), proc_rule("step_b", "bbb"))
    (a,) = run(stage(corr, *rules), [proc_event(0, 1, CommandLine="aaa", User="u")])
    assert a.group == {"User": "u"}
    assert run(stage(corr, *rules), [proc_event(0, 1, CommandLine="aaa", User="u"),
                                     proc_event(30, 2, CommandLine="bbb", User="u")]) == []


def test_group_eviction_is_counted():
    st = stage(COUNT, proc_rule("step_a", "aaa"), max_groups=2)
    run(st, [proc_event(i, i, CommandLine="aaa", User=f"u{i}") for i in range(5)])
    assert st.correlation.stats.evicted_groups["00000000-0000-0000-0000-0000000000c1"] == 3


def test_state_is_bounded_by_window():
    st = stage(COUNT.replace("gte: 10", "gte: 100000"), proc_rule("step_a", "aaa"))
    for i in range(3000):
        st.process(proc_event(i * 0.5, i, CommandLine="aaa", User="u"))
    (group,) = st.correlation.correlations[0].groups.values()
    assert len(group.entries) <= 121  # one minute of hits at two per second


def test_rejected_correlations_are_reported():
    bad = ("title: bad\nid: 00000000-0000-0000-0000-0000000000e1\ncorrelation:\n"
           "    type: temporal_ordered\n    rules:\n        - step_a\n        - step_b\n"
           "    group-by:\n        - User\n    timespan: 1m\n    condition:\n        gte: 1\n")
    st = DetectionStage(load_rules_text("\n---\n".join(
        [bad, proc_rule("step_a", "aaa"), proc_rule("step_b", "bbb")])))
    assert [i.code for i in st.rejected] == ["correlation"]
    assert "temporal_ordered" in st.rejected[0].message


def test_time_conversion():
    t = "2024-02-29T23:59:59.123456789Z"
    assert format_ns(time_ns(t)) == t
    assert time_ns("2024-02-29 23:59:59.123") == time_ns("2024-02-29T23:59:59.123000000Z")
    assert time_ns("garbage") is None
