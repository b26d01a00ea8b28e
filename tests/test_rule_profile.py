"""``--profile-rules``: per-rule evaluations, matches and cost, the prefilter's figures, the
correlations' cost; nothing measured when it is off; the output unchanged when it is on.

The counting tests use rules and events written here, with counts worked out by hand from how
the matcher indexes rules (docs/PERFORMANCE.md, "Per-rule cost"); the identity test replays the
corpus EVTX with the SigmaHQ bundle.
"""

from __future__ import annotations

import argparse
import io
import json
import time


from sysmonx.cli import main
from sysmonx.cli.common import report_rule_profile
from sysmonx.detection import DetectionOptions, DetectionStage, load_rules_text
from sysmonx.detection.correlation import format_ns
from sysmonx.detection.matcher import RuleMatcher, _Group
from sysmonx.detection.profile import PROFILE_VERSION, RuleProfile
from sysmonx.event import Event

T0 = 1_700_000_000


def proc(i: int, image: str, cmd: str) -> Event:
    return Event(1, {"Image": image, "CommandLine": cmd},
                 time_created=format_ns(int((T0 + i) * 1e9)), record_id=i, computer="ws1")


def conn(i: int, port: str) -> Event:
    return Event(3, {"Image": "C:\\x.exe", "DestinationPort": port},
                 time_created=format_ns(int((T0 + i) * 1e9)), record_id=i, computer="ws1")


def rule(title: str, category: str, detection: str) -> str:
    return (f"title: {title}\nname: {title.replace(' ', '_')}\nlevel: high\n"
            f"logsource: {{product: windows, category: {category}}}\n"
            f"detection: {detection}\n")


RULES = [
    # indexed by the '\cmd.exe' suffix key
    rule("cmd", "process_creation", "{sel: {Image|endswith: '\\cmd.exe'}, condition: sel}"),
    # indexed by the 'whoami' key
    rule("whoami", "process_creation", "{sel: {CommandLine|contains: whoami}, condition: sel}"),
    # nothing it requires can be found by the automaton: evaluated on every process event
    rule("not explorer", "process_creation",
         "{sel: {Image|endswith: '\\explorer.exe'}, condition: not sel}"),
    # two necessary clauses: led by the image key (rarer by the prior), '-enc' checked before
    rule("encoded powershell", "process_creation",
         "{img: {Image|endswith: '\\powershell.exe'}, cl: {CommandLine|contains: '-enc'},"
         " condition: img and cl}"),
    rule("port 4444", "network_connection", "{sel: {DestinationPort: 4444}, condition: sel}"),
]

EVENTS = [
    proc(1, "C:\\Windows\\System32\\cmd.exe", "cmd /c whoami"),       # cmd, whoami, not explorer
    proc(2, "C:\\Windows\\powershell.exe", "powershell -nop"),        # ps: lead found, '-enc' not
    proc(3, "C:\\Windows\\powershell.exe", "powershell -enc AAAA"),   # ps, not explorer
    proc(4, "C:\\Windows\\explorer.exe", "explorer.exe"),             # only 'not explorer' runs
    conn(5, "4444"),
    conn(6, "80"),
    Event(5, {"Image": "C:\\a.exe"}, time_created=format_ns(int((T0 + 7) * 1e9)), record_id=7,
          computer="ws1"),                                            # no rule covers event 5
]

# title: (eligible, candidates, evaluations, matches)
EXPECTED = {
    "cmd": (4, 1, 1, 1),
    "whoami": (4, 1, 1, 1),
    "not explorer": (4, 4, 4, 3),
    "encoded powershell": (4, 2, 1, 1),
    "port 4444": (2, 1, 1, 1),
}


def load(docs: list[str]) -> DetectionStage:
    st = DetectionStage(load_rules_text("\n---\n".join(d.strip("\n") for d in docs)),
                        DetectionOptions(freeze_gc=False))
    assert not st.rejected, [str(i) for i in st.rejected]
    return st


def test_counts_per_rule_and_prefilter_are_exact():
    st = load(RULES)
    prof = RuleProfile.attach(st)
    alerts = [a.title for e in EVENTS for a in st.process(e)]
    prof.detach()
    assert sorted(alerts) == sorted(["cmd", "whoami", "not explorer", "not explorer",
                                     "encoded powershell", "not explorer", "port 4444"])
    rows = {r["title"]: r for r in prof.rules()}
    got = {t: (r["eligible"], r["candidates"], r["evaluations"], r["matches"])
           for t, r in rows.items()}
    assert got == EXPECTED
    assert rows["not explorer"]["indexed"] is False
    assert all(r["indexed"] for t, r in rows.items() if t != "not explorer")
    for r in rows.values():
        assert r["skipped"] == r["eligible"] - r["evaluations"]
        assert r["time_ns"] > 0 and 0 <= r["cost_ns"] <= r["time_ns"]
    assert prof.events == 7 and prof.events_without_rules == 1
    pre = prof.prefilter()
    assert pre == {"eligible": 18, "candidates": 9, "evaluations": 8, "skipped": 10,
                   "matches": 7, "skip_rate": 10 / 18, "hit_rate": 7 / 8,
                   "time_ns": pre["time_ns"]}
    assert pre["time_ns"] > 0
    # the matches counted by the profile are the stage's own
    assert {r["id"]: r["matches"] for r in rows.values() if r["matches"]} == dict(st.matches)


def test_profiled_and_plain_matching_decide_alike_and_evolve_alike():
    """The profiled path is a copy of the plain one's lookups: same rules, same order, same
    adaptive state, over enough events to pass the first re-choice of lead clauses (256)."""
    plain, profiled = load(RULES), load(RULES)
    prof = RuleProfile.attach(profiled)
    images = ["cmd.exe", "powershell.exe", "explorer.exe", "calc.exe"]
    cmds = ["whoami", "-enc x", "-nop", "dir"]
    for i in range(600):
        e = proc(i, "C:\\W\\" + images[i % 4], cmds[(i // 4) % 4] + f" {i % 7}")
        assert [r.index for r in plain.match(e)] == [r.index for r in profiled.match(e)]
    for g_plain, g_prof in zip(plain.matcher.groups.values(), profiled.matcher.groups.values(),
                               strict=True):
        assert [(c.rule.index, c.lead) for c in g_plain.cands] == \
            [(c.rule.index, c.lead) for c in g_prof.cands]
    assert prof.events == 600


class FakeClock:
    """A clock that moves 1 ns per reading, plus what a slowed evaluation adds."""

    def __init__(self) -> None:
        self.now = 0
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        self.now += 1
        return self.now


def slowed(stage: DetectionStage, clock: FakeClock, cost: dict) -> None:
    """Make each rule's evaluation advance ``clock`` by ``cost[title]`` ns."""
    def wrap(fn, ns):
        def evaluate(e, h):
            clock.now += ns
            return fn(e, h)
        return evaluate
    for g in stage.matcher.groups.values():
        for c in g.cands:
            c.evaluate = wrap(c.evaluate, cost[c.rule.title])
        for r in g.always:
            r.evaluate = wrap(r.evaluate, cost[r.title])


def test_rules_ranked_by_cost_and_table_shows_the_top_ten():
    # 12 rules; rule k matches CommandLine containing 'tokK'; costs chosen so that ranking by
    # cost differs from ranking by evaluations and by cost per evaluation.
    docs = [rule(f"r{k:02d}", "process_creation",
                 f"{{sel: {{CommandLine|contains: 'tok{k:02d}x'}}, condition: sel}}")
            for k in range(12)]
    st = load(docs)
    clock = FakeClock()
    prof = RuleProfile.attach(st, clock)
    assert prof.timer_floor_ns == 1
    cost = {f"r{k:02d}": 100 * ((k * 7) % 12 + 1) + k for k in range(12)}
    evals = {f"r{k:02d}": 1 + k % 3 for k in range(12)}
    assert len({cost[t] * evals[t] for t in cost}) == 12  # no ties
    slowed(st, clock, cost)
    i = 0
    for title, n in evals.items():
        for _ in range(n):
            i += 1
            st.process(proc(i, "C:\\a.exe", f"x tok{title[1:]}x y"))
    prof.detach()
    rows = prof.rules()
    assert {r["title"]: r["evaluations"] for r in rows} == evals
    assert {r["title"]: r["cost_ns"] for r in rows} == {t: cost[t] * evals[t] for t in cost}
    expected = sorted(cost, key=lambda t: (-cost[t] * evals[t], t))
    assert [r["title"] for r in rows] == expected
    assert [r["title"] for r in prof.top()] == expected[:10]
    # the printed table: the same ten, in that order
    from rich.console import Console
    buf = io.StringIO()
    console = Console(file=buf, width=200, force_terminal=False)
    assert report_rule_profile(console, prof, argparse.Namespace(profile_rules_out=None))
    text = buf.getvalue()
    order = [t for t in sorted(cost, key=text.find) if t in text]
    assert order == expected[:10]
    assert expected[10] not in text and expected[11] not in text
    assert "prefilter: 24 events (0 no rule covers)" in text


def test_off_path_calls_no_clock_and_attach_detach_restores(monkeypatch):
    calls = {"n": 0}
    real = time.perf_counter_ns

    def counting() -> int:
        calls["n"] += 1
        return real()
    monkeypatch.setattr(time, "perf_counter_ns", counting)
    st = load(RULES)
    assert "match" not in vars(st.matcher)
    assert type(st.matcher).match is RuleMatcher.match
    for e in EVENTS:
        st.process(e)
    assert calls["n"] == 0  # no profile: not one clock reading on the detection path
    prof = RuleProfile.attach(st)  # default clock looked up now: the counting one
    floor_calls = calls["n"]
    assert floor_calls > 0
    for e in EVENTS:
        st.process(e)
    # one reading before and after each evaluation, two around each group's lookup
    assert calls["n"] - floor_calls == 2 * 8 + 2 * 6
    prof.detach()
    assert "match" not in vars(st.matcher)
    before = calls["n"]
    for e in EVENTS:
        st.process(e)
    assert calls["n"] == before and prof.events == 7


def test_off_path_never_enters_the_profiled_code(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("profiled path entered")
    monkeypatch.setattr(_Group, "match_profiled", boom)
    monkeypatch.setattr(RuleMatcher, "match_profiled", boom)
    log, rules = _write_inputs(tmp_path)
    assert main(["replay", str(log), "--rules", str(rules), "-q", "-f", "jsonl",
                 "-o", str(tmp_path / "out.jsonl"), "--no-rule-cache"]) == 0
    assert (tmp_path / "out.jsonl").read_text().count('"EventID":1000') == 7


CORR = """title: three cmds
id: 0f6d3a9e-8a7b-4c1e-9a55-3d2b1c0e0002
level: high
correlation:
  type: event_count
  rules: [cmd]
  group-by: [Computer]
  timespan: 10m
  condition: {gte: 3}
---
title: few ps
id: 0f6d3a9e-8a7b-4c1e-9a55-3d2b1c0e0003
level: low
correlation:
  type: event_count
  rules: [encoded_powershell]
  group-by: [Computer]
  timespan: 10m
  condition: {lt: 5}
"""


def test_correlation_cost_counted_per_correlation():
    st = load(RULES + [CORR])
    assert len(st.correlations) == 2
    prof = RuleProfile.attach(st)
    events = [proc(i, "C:\\Windows\\System32\\cmd.exe", "cmd") for i in range(4)]
    events.append(proc(10, "C:\\Windows\\powershell.exe", "powershell -enc A"))
    alerts = [a.title for e in events for a in st.process(e)] + [a.title for a in st.finish()]
    prof.detach()
    assert alerts.count("three cmds") == 1 and alerts.count("few ps") == 1
    rows = {c["title"]: c for c in prof.correlations()}
    # 'three cmds' (checked on arrival): one step per hit; 'few ps' (checked when its window
    # closes): one step for its hit, one for closing the window at the end
    assert (rows["three cmds"]["hits"], rows["three cmds"]["calls"],
            rows["three cmds"]["alerts"]) == (4, 4, 1)
    assert (rows["few ps"]["hits"], rows["few ps"]["calls"], rows["few ps"]["alerts"]) == \
        (1, 2, 1)
    assert all(c["time_ns"] > 0 for c in rows.values())
    assert [c["time_ns"] for c in prof.correlations()] == sorted(
        (c["time_ns"] for c in rows.values()), reverse=True)
    assert "_hit" not in vars(st.correlation) and "_close" not in vars(st.correlation)


def _write_inputs(tmp_path):
    from sysmonx.pipeline import make_writer
    log = tmp_path / "e.jsonl"
    with open(log, "wb") as f:
        w = make_writer("jsonl", f)
        w.close_stream = False
        for e in EVENTS:
            w.write(e)
        w.close()
    rules = tmp_path / "rules.yml"
    rules.write_text("\n---\n".join(d.strip("\n") for d in RULES) + "\n")
    return log, rules


def test_cli_json_shape_and_counts(tmp_path, capsys):
    log, rules = _write_inputs(tmp_path)
    out = tmp_path / "profile.json"
    assert main(["replay", str(log), "--rules", str(rules), "-q", "--no-output",
                 "--profile-rules-out", str(out), "--no-rule-cache"]) == 0
    err = capsys.readouterr().err
    assert "Sigma rules: the 5 most expensive (of 5)" in err
    assert ("prefilter: 7 events (1 no rule covers); 18 eligible rule evaluations, 10 skipped "
            "(55.56 %), 8 run (9 candidates); 7 matched (hit rate 87.500 %)") in err
    doc = json.loads(out.read_text())
    assert set(doc) == {"version", "timer", "timer_floor_ns", "events", "events_without_rules",
                        "prefilter", "evaluation_ns", "rules", "correlations"}
    assert doc["version"] == PROFILE_VERSION == 1 and doc["timer"] == "perf_counter_ns"
    assert (doc["events"], doc["events_without_rules"]) == (7, 1)
    assert set(doc["prefilter"]) == {"eligible", "candidates", "evaluations", "skipped",
                                     "matches", "skip_rate", "hit_rate", "time_ns"}
    assert doc["correlations"] == []
    keys = {"id", "title", "file", "level", "indexed", "eligible", "candidates", "evaluations",
            "skipped", "matches", "time_ns", "cost_ns"}
    for r in doc["rules"]:
        assert set(r) == keys
        assert r["file"] == str(rules) and r["level"] == "high"
        assert r["id"] == r["title"].replace(" ", "_")
        assert (r["eligible"], r["candidates"], r["evaluations"], r["matches"]) == \
            EXPECTED[r["title"]]
    assert [r["cost_ns"] for r in doc["rules"]] == sorted(
        (r["cost_ns"] for r in doc["rules"]), reverse=True)
    assert doc["evaluation_ns"] == sum(r["time_ns"] for r in doc["rules"])


def test_cli_refuses_profile_without_rules_or_with_dask(tmp_path, capsys):
    log, rules = _write_inputs(tmp_path)
    assert main(["replay", str(log), "--profile-rules", "-q"]) == 87
    assert "--profile-rules profiles Sigma rules: give --rules" in capsys.readouterr().err
    assert main(["replay", str(log), "--rules", str(rules), "--profile-rules", "--dask",
                 "local", "-q"]) == 87
    assert "not with --dask" in capsys.readouterr().err
    bad = tmp_path / "no" / "such" / "dir" / "p.json"
    assert main(["replay", str(log), "--rules", str(rules), "--profile-rules-out", str(bad),
                 "-q", "--no-output", "--no-rule-cache"]) == 1
    assert f"cannot write {bad}" in capsys.readouterr().err


def test_output_identical_with_and_without_profile_on_the_corpus(corpus, tmp_path, capsys):
    bundle = corpus / "sigma" / "sigmahq_rules_sysmon_categories.tar.gz"
    evtx = corpus / "evtx"
    outs = []
    for extra in ([], ["--profile-rules", "--profile-rules-out", str(tmp_path / "p.json")]):
        out = tmp_path / f"out{len(outs)}.jsonl"
        assert main(["replay", str(evtx), "--rules", str(bundle), "-f", "jsonl", "-o", str(out),
                     "--no-progress", *extra]) == 0
        outs.append(out.read_bytes())
        capsys.readouterr()
    assert outs[0] == outs[1]
    assert outs[0].count(b'"EventID":1000') > 100  # alerts were written: rules did run
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["prefilter"]["matches"] == outs[0].count(b'"EventID":1000')
    assert len(doc["rules"]) > 1900
    assert 0.9 < doc["prefilter"]["skip_rate"] < 1


LINUX_LOG = ("linux/elastic__integrations/packages/sysmon_linux/_dev/deploy/docker/sample_logs/"
             "sysmon.log")


def test_run_follow_profiles_too(corpus, tmp_path, capsys):
    """``sysmonx run`` shares the option: the 3 network connections of the Sysmon for Linux
    sample are the rule's eligible events, each evaluated and matched."""
    rules = tmp_path / "r.yml"
    rules.write_text("title: elastic connects\nname: elastic_connects\nlevel: low\n"
                     "logsource: {product: linux, category: network_connection}\n"
                     "detection: {sel: {Image|contains: '/Elastic/'}, condition: sel}\n")
    prof = tmp_path / "p.json"
    assert main(["run", "--follow", str(corpus / LINUX_LOG), "--from-start", "-f", "jsonl",
                 "-o", str(tmp_path / "out.jsonl"), "--duration", "1", "--heartbeat", "0",
                 "--rules", str(rules), "--profile-rules-out", str(prof),
                 "--no-rule-cache"]) == 0
    assert "Sigma rules: the 1 most expensive (of 1)" in capsys.readouterr().err
    (row,) = json.loads(prof.read_text())["rules"]
    assert (row["id"], row["eligible"], row["evaluations"], row["matches"]) == \
        ("elastic_connects", 3, 3, 3)


def test_lead_clauses_and_candidates_are_the_same_on_every_load(corpus):
    """The prefilter's choice of each rule's lead clause depends on the rules and the events
    only: two loads of the SigmaHQ bundle over the corpus EVTX find the same candidates (it
    varied with memory reuse: 7,117 and 6,958 candidates in one process)."""
    from sysmonx.detection.cache import RuleCache
    from sysmonx.sources import open_source
    files = sorted(str(p) for p in (corpus / "evtx").rglob("*.evtx"))
    events = [e for f in files for e in open_source(f, lambda err: None)]
    seen = []
    for _ in range(2):
        st = DetectionStage.from_paths(
            [corpus / "sigma" / "sigmahq_rules_sysmon_categories.tar.gz"],
            DetectionOptions(freeze_gc=False), cache=RuleCache(None))
        prof = RuleProfile.attach(st)
        for e in events:
            st.match(e)
        leads = [(c.rule.index, sorted(c.lead)) for g in st.matcher.groups.values()
                 for c in g.cands]
        seen.append((prof.candidates, prof.evaluations, leads))
    assert sum(seen[0][1]) > 3000
    assert seen[0] == seen[1]
