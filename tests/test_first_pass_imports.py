"""A replay without Sigma rules, read-back alerts or ``--alerts-only`` does not import the
detection package (``sysmonx.detection``: alerts, triage, read-back, the Sigma stages) nor the
``alerts-only`` stage: not in its first pass (the Replayer found its stages by their classes,
importing their modules, about 1.5 ms of CPU before the first record), not from the command line
(``--min-level`` / ``--technique`` / ``--tag`` not given: nothing to select). The counters of
those stages still come back when they are in the run."""

from __future__ import annotations

import os
import subprocess
import sys

PANACHE = ("evtx/sbousseaden__EVTX-ATTACK-SAMPLES/AutomatedTestingTools/"
           "PanacheSysmon_vs_AtomicRedTeam01.evtx")

# run in a fresh process: what the replay imported, and its counts
_REPLAY = """
import sys
from sysmonx.pipeline import Replayer, ReplayOptions
before = set(sys.modules)
r = Replayer(ReplayOptions(alerts_only={alerts_only}), None)
r.run_file({path!r})
st = r.stats
print(sorted(m for m in set(sys.modules) - before
             if m.startswith(("sysmonx.detection", "sysmonx.stages.alertsonly"))))
print(st.records, st.not_alerts)
"""

# the command line in a fresh process: the detection modules loaded when it exits
_CLI = ("import atexit, sys\n"
        "atexit.register(lambda: print(sorted(m for m in sys.modules if m.startswith("
        "('sysmonx.detection', 'sysmonx.stages.alertsonly'))), file=sys.stderr))\n"
        "from sysmonx.cli import main\nraise SystemExit(main())\n")


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=dict(os.environ, SYSMONX_CONFIG_CACHE="0"), timeout=300)


def test_replayer_without_detection_imports_none_of_it(corpus):
    proc = _run(_REPLAY.format(alerts_only=False, path=str(corpus / PANACHE)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["[]", "565 0"]


def test_alerts_only_stage_still_counted(corpus):
    """``--alerts-only`` imports its stage (the stage list holds it) and its count of events
    not written comes back: every record of the file (none is a SigmaAlert event)."""
    proc = _run(_REPLAY.format(alerts_only=True, path=str(corpus / PANACHE)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["['sysmonx.stages.alertsonly']", "565 565"]


def test_cli_replay_without_triage_options_does_not_import_detection(corpus, tmp_path):
    out = tmp_path / "out.jsonl"
    proc = _run(_CLI, "replay", str(corpus / PANACHE), "-f", "jsonl", "--no-progress", "-q",
                "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines()[-1] == "[]"
    assert out.read_bytes().count(b"\n") == 565


def test_cli_triage_options_still_checked_and_used(corpus, tmp_path):
    """With ``--min-level`` the selection is built (the triage module imported) and a bad value
    is still the usage error it was."""
    proc = _run(_CLI, "replay", str(corpus / PANACHE), "--no-output", "-q",
                "--min-level", "severe")
    assert proc.returncode == 87  # EXIT_USAGE
    assert "--min-level 'severe': not a Sigma level" in proc.stdout + proc.stderr
    proc = _run(_CLI, "replay", str(corpus / PANACHE), "--no-output", "-q",
                "--min-level", "high")
    assert proc.returncode == 0, proc.stderr
    assert "sysmonx.detection.triage" in proc.stderr.splitlines()[-1]
