"""``replay --jobs N --rules`` over a replayed SysmonX output: a SigmaAlert (1000) read back from
one file whose events are in another file, read by another worker, is made again (replaced)
exactly as in one process; the selection (``--min-level``) comes after that decision, and the
``events checked`` count leaves the read-back alerts out (one process's ``sigma-match`` never
counts them)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from builders import folder_with_read_back_alerts, whoami_rule

from sysmonx.cli import main

# 565 records, one whoami.exe process creation
PANACHE = "evtx/sbousseaden__EVTX-ATTACK-SAMPLES/AutomatedTestingTools/" \
    "PanacheSysmon_vs_AtomicRedTeam01.evtx"

RULES = whoami_rule("6f5b7c1e-0000-4000-8000-0000000000b1", "Whoami Execution (low base)",
                    "low") + """---
title: Whoami seen (high correlation)
id: 6f5b7c1e-0000-4000-8000-0000000000b2
level: high
correlation:
    type: event_count
    rules:
        - 6f5b7c1e-0000-4000-8000-0000000000b1
    timespan: 3650d
    condition:
        gte: 1
    generate: true
"""


def _summary(err: str) -> list[str]:
    """The lines of the summary that count alerts (read back, replaced, held back, made)."""
    return [ln for ln in err.splitlines()
            if "read back" in ln or ln.startswith("Sigma:") or "held back" in ln]


@pytest.fixture()
def inputs(corpus, tmp_path, capsys) -> tuple[Path, Path]:
    rules = tmp_path / "whoami.yml"
    rules.write_text(RULES)
    folder, kinds = folder_with_read_back_alerts(corpus / PANACHE, rules, tmp_path)
    capsys.readouterr()
    assert kinds == ["detection", "event_count"]
    return folder, rules


@pytest.mark.parametrize("extra", [[], ["--min-level", "high"]])
def test_jobs_makes_again_what_one_process_makes_again(inputs, tmp_path, capsys, extra):
    folder, rules = inputs
    outs, errs = [], []
    for jobs in ([], ["--jobs", "2"]):
        out = tmp_path / f"out{len(outs)}.jsonl"
        assert main(["replay", str(folder), "--rules", str(rules), "-f", "jsonl", "-o",
                     str(out), "--keep-duplicates", *extra, *jobs]) == 0
        outs.append(out.read_bytes())
        errs.append(_summary(capsys.readouterr().err))
    one, two = outs
    assert two == one
    assert errs[1] == errs[0]
    # both read-back alerts were made again from the events (in another file), never twice
    assert "SigmaAlert): 2 " in errs[0][0] and "2 replaced by this run's --rules" in errs[0][0]
    (sigma,) = [ln for ln in errs[0] if ln.startswith("Sigma:")]
    assert "events checked 565;" in sigma
    made = [orjson.loads(ln) for ln in one.splitlines() if b'"EventID":1000' in ln]
    assert [e["RuleKind"] for e in made] == \
        (["detection", "event_count"] if not extra else ["event_count"])
    if extra:  # the low alert made again is held back (this run's), not counted as read back
        assert any("held back by --min-level high: 1 " in ln for ln in errs[0])


def test_jobs_keeps_alerts_read_before_their_events(inputs, tmp_path, capsys):
    """An alerts file read ahead of its events is kept (and made again: written twice, never
    lost), in one process and with --jobs alike."""
    folder, rules = inputs
    (folder / "c_alerts.jsonl").rename(folder / "a_alerts.jsonl")
    outs = []
    for jobs in ([], ["--jobs", "2"]):
        out = tmp_path / f"ahead{len(outs)}.jsonl"
        assert main(["replay", str(folder), "--rules", str(rules), "-f", "jsonl", "-o",
                     str(out), "--keep-duplicates", *jobs]) == 0
        err = capsys.readouterr().err
        assert "replaced by this run's --rules" not in err
        outs.append(out.read_bytes())
    assert outs[1] == outs[0]
    assert outs[0].count(b'"EventID":1000') == 4
