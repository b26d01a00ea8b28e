"""``--jobs`` with Sigma rules: workers match, the parent correlates over their results in input
order, and the output (events, alerts as events 1000 or ``--alerts FILE``, the Sigma summary) is
byte for byte one process's: on the corpus with the SigmaHQ bundle and correlation rules over
its rules, with correlations whose hits span files (and whose windows close by the stream clock
and by sweeps that happen in another file than the one that opened them), with a bad file, and
when a worker process dies."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sysmonx.event import Event
from sysmonx.pipeline import ReplayOptions, Replayer, make_writer, replay_parallel
from sysmonx.pipeline import parallel

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = "sigma/sigmahq_rules_sysmon_categories.tar.gz"
SOS = "configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml"


def _correlation(title: str, ident: str, kind: str, rules: list[str], timespan: str,
                 condition: str, group_by: tuple[str, ...] = (), field: str = "") -> str:
    lines = [f"title: {title}", f"id: {ident}", "level: high", "correlation:",
             f"    type: {kind}", "    rules:"]
    lines += [f"        - {r}" for r in rules]
    if group_by:
        lines.append("    group-by:")
        lines += [f"        - {g}" for g in group_by]
    lines.append(f"    timespan: {timespan}")
    if condition:
        lines.append("    condition:")
        lines.append(f"        {condition}")
        if field:
            lines.append(f"        field: {field}")
    return "\n".join(lines) + "\n"


# SigmaHQ rules of the bundle that fire on the corpus EVTX files (in several files each)
WMI_SUB = "0f06a3a5-6a09-413f-8743-e6cf35561297"      # WMI Event Subscription (3 computers)
WMIPRVSE = "d21374ff-f574-44a7-9998-4a8c8bf33d7d"     # WmiPrvSE Spawned A Process
REMOTE_THREAD = "a1a144b7-5c9b-4853-a559-2172be8d4a03"  # Remote Thread Creation ... (93)
IMPACKET = "10c14723-61c7-4c75-92ca-9af245723ad2"     # HackTool - Impacket Lateral Movement
NONINTERACTIVE_PS = "f4bbd493-b796-416e-bbf2-121235348529"


def _corpus_correlations(folder: Path) -> Path:
    """Correlations over bundle rules: arrival (gte) and window-close (lt, value_count) types,
    grouped and not, spanning the corpus files (timespans of years) or closing often (1m)."""
    folder.mkdir()
    rules = {
        "wmi_burst.yml": _correlation("WMI burst", "c0000000-0000-0000-0000-000000000001",
                                      "event_count", [WMI_SUB, WMIPRVSE], "3650d", "gte: 20"),
        "wmi_then_impacket.yml": _correlation(
            "WMI and Impacket", "c0000000-0000-0000-0000-000000000002", "temporal",
            [WMI_SUB, IMPACKET], "3650d", ""),
        "few_threads.yml": _correlation(
            "Few remote threads a minute", "c0000000-0000-0000-0000-000000000003",
            "event_count", [REMOTE_THREAD, NONINTERACTIVE_PS], "1m", "lt: 3",
            group_by=("Computer",)),
        "thread_targets.yml": _correlation(
            "Remote thread targets", "c0000000-0000-0000-0000-000000000004", "value_count",
            [REMOTE_THREAD], "1h", "lt: 3", group_by=("Computer",), field="SourceImage"),
    }
    for name, text in rules.items():
        (folder / name).write_text(text)
    return folder


def _one_process(files, options, fmt, rules, alerts_file=None) -> tuple[bytes, object, object]:
    """What one process writes (the CLI's single-process path: Replayer, finish, close)."""
    from sysmonx.detection import DetectionStage
    det = DetectionStage.from_paths(rules)
    buf = io.BytesIO()
    w = make_writer(fmt, buf)
    w.close_stream = False
    sinks = []
    if alerts_file is not None:
        from sysmonx.sinks.alerts import AlertJsonlSink
        sinks.append(AlertJsonlSink(alerts_file, close_stream=False))
    r = Replayer(options, w, detection=det, sinks=sinks)
    for f in files:
        r.run_file(f)
    r.finish()
    r.close()
    return buf.getvalue(), r.stats, det


def _workers(files, options, fmt, rules, jobs=2, alerts_file=None, errors=None):
    from sysmonx.detection import DetectionStage
    det = DetectionStage.from_paths(rules)
    buf = io.BytesIO()
    sinks = []
    if alerts_file is not None:
        from sysmonx.sinks.alerts import AlertJsonlSink
        sinks.append(AlertJsonlSink(alerts_file, close_stream=False))
    stats = replay_parallel(files, options, fmt, buf, jobs,
                            errors.append if errors is not None else (lambda line: None),
                            detection=det, alert_sinks=sinks)
    return buf.getvalue(), stats, det


@pytest.mark.parametrize("fmt, config", [("jsonl", None), ("xml", SOS)])
def test_corpus_with_sigmahq_bundle_and_correlations_as_one_process(corpus, tmp_path, fmt,
                                                                     config):
    from sysmonx.config import load_config
    files = sorted(str(p) for p in (corpus / "evtx").rglob("*.evtx"))
    # three passes over the corpus: enough hits that the correlation engine sweeps (every 512
    # clock advances), with the sweeps and the every-256th-event clock reads falling inside
    # the workers' parts at places only the exact count finds
    files = files * 3
    rules = [str(corpus / BUNDLE), str(_corpus_correlations(tmp_path / "corr"))]
    options = ReplayOptions(config=load_config(corpus / config) if config else None,
                            keep_duplicates=True)
    want, stats1, det1 = _one_process(files, options, fmt, rules)
    got, stats2, det2 = _workers(files, options, fmt, rules)
    kinds = {a for a in (b"event_count", b"temporal", b"value_count") if a in want}
    assert kinds == {b"event_count", b"temporal", b"value_count"}  # correlations fired
    assert want.count(b"SigmaAlert") > 0 or b"<EventID>1000<" in want or \
        want.count(b'"EventID":1000,') > 300
    assert got == want
    assert stats2.records == stats1.records and dict(+stats2.included) == dict(+stats1.included)
    assert det2.summary_rows() == det1.summary_rows()
    assert det2.stats == det1.stats
    assert det2.correlation.stats == det1.correlation.stats
    assert parallel._PARENT_ENGINE == {}


def _write_jsonl(path: Path, events: list[Event]) -> str:
    buf = io.BytesIO()
    w = make_writer("jsonl", buf)
    for e in events:
        w.write(e)
    path.write_bytes(buf.getvalue())
    return str(path)


_T0 = 1_700_000_000  # seconds


def _proc(n: int, second: int, image: str, user: str = "u1", computer: str = "h1") -> Event:
    import datetime
    t = datetime.datetime.fromtimestamp(_T0 + second, datetime.timezone.utc)
    utc = t.strftime("%Y-%m-%d %H:%M:%S.000")
    return Event(1, {"RuleName": "-", "UtcTime": utc,
                     "ProcessGuid": "{00000000-0000-0000-0000-%012x}" % n,
                     "ProcessId": str(n), "Image": image, "CommandLine": f"{image} {n}",
                     "User": user}, version=5, level=4, task=1, opcode=0,
                 time_created=t.strftime("%Y-%m-%dT%H:%M:%S.") + "000000000Z", record_id=n,
                 process_id=4, thread_id=8, computer=computer)


def _rule(title: str, ident: str, image: str) -> str:
    return textwrap.dedent(f"""\
        title: {title}
        id: {ident}
        level: low
        logsource:
            product: windows
            category: process_creation
        detection:
            sel:
                Image|endswith: '\\{image}'
            condition: sel
        """)


A, B, N = ("a0000000-0000-0000-0000-00000000000a", "a0000000-0000-0000-0000-00000000000b",
           "a0000000-0000-0000-0000-0000000000ff")


def _spanning_inputs(tmp_path: Path) -> tuple[list[str], list[str]]:
    """Three files; A in the first, B in the second (same user, 30 s apart across the file
    boundary); noise hits on two computers, one second apart, so 1-minute windows open in
    one file and close in the next by the clock (a sweep) or by a later hit."""
    n = 0
    files = []
    second = 0

    def ev(image: str, **kw) -> Event:
        nonlocal n, second
        n += 1
        second += 1
        return _proc(n, second, "C:\\t\\" + image, **kw)

    f1 = [ev("filler.exe") for _ in range(300)]
    f1 += [ev("a.exe"), ev("a.exe", user="u2")]
    f1 += [ev("noise.exe", computer=f"h{i % 2}") for i in range(700)]
    f1 += [ev("a.exe")]
    files.append(_write_jsonl(tmp_path / "1.jsonl", f1))
    f2 = [ev("filler.exe") for _ in range(20)] + [ev("b.exe")]
    f2 += [ev("noise.exe", computer="h1") for _ in range(600)]
    f2 += [ev("a.exe"), ev("filler.exe")]
    files.append(_write_jsonl(tmp_path / "2.jsonl", f2))
    f3 = [ev("noise.exe", computer="h0") for _ in range(90)] + [ev("b.exe", user="u2")]
    files.append(_write_jsonl(tmp_path / "3.jsonl", f3))
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "a.yml").write_text(_rule("A", A, "a.exe"))
    (rules_dir / "b.yml").write_text(_rule("B", B, "b.exe"))
    (rules_dir / "n.yml").write_text(_rule("Noise", N, "noise.exe"))
    (rules_dir / "ab.yml").write_text(_correlation(
        "A then B", "b0000000-0000-0000-0000-000000000001", "temporal_ordered", [A, B], "1h",
        "", group_by=("User",)))
    (rules_dir / "three_a.yml").write_text(_correlation(
        "Three A", "b0000000-0000-0000-0000-000000000002", "event_count", [A], "2h", "gte: 3",
        group_by=("User",)))
    (rules_dir / "quiet.yml").write_text(_correlation(
        "Quiet minute", "b0000000-0000-0000-0000-000000000003", "event_count", [N], "1m",
        "lt: 100", group_by=("Computer",)))
    (rules_dir / "ab_any.yml").write_text(_correlation(
        "A and B", "b0000000-0000-0000-0000-000000000004", "temporal", [A, B], "1h", ""))
    return files, [str(rules_dir)]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_correlations_spanning_files_fire_as_in_one_process(tmp_path, fmt):
    files, rules = _spanning_inputs(tmp_path)
    options = ReplayOptions(keep_duplicates=True)
    want, _, det1 = _one_process(files, options, fmt, rules)
    assert det1.stats.events == 1717
    fired = {k: n for k, n in det1.alert_counts.items() if k.startswith("b0000000")}
    # the cross-file correlations fired: A (file 1) then B (file 2) for u1; a third A (file 2)
    assert fired["b0000000-0000-0000-0000-000000000001"] >= 1
    assert fired["b0000000-0000-0000-0000-000000000002"] >= 1
    assert fired["b0000000-0000-0000-0000-000000000004"] >= 1
    assert fired["b0000000-0000-0000-0000-000000000003"] > 20  # windows closed, many by clock
    got, _, det2 = _workers(files, options, fmt, rules)
    assert got == want
    assert det2.alert_counts == det1.alert_counts and det2.stats == det1.stats


def test_alerts_file_as_one_process(tmp_path):
    files, rules = _spanning_inputs(tmp_path)
    options = ReplayOptions(keep_duplicates=True)
    a1, a2 = io.BytesIO(), io.BytesIO()
    want, _, _ = _one_process(files, options, "jsonl", rules, alerts_file=a1)
    got, _, _ = _workers(files, options, "jsonl", rules, alerts_file=a2)
    assert got == want and b'"EventID":1000' not in got  # alerts went to the file only
    assert a2.getvalue() == a1.getvalue() and a1.getvalue().count(b"\n") > 20


def test_bad_file_reports_its_error_and_keeps_the_other_files(tmp_path):
    files, rules = _spanning_inputs(tmp_path)
    bad = tmp_path / "2b.evtx"
    bad.write_bytes(b"ElfFile\x00" + b"\xff" * 5000)  # an EVTX header that is not one
    files.insert(2, str(bad))
    options = ReplayOptions(keep_duplicates=True)
    want, stats1, _ = _one_process(files, options, "jsonl", rules)
    errors: list = []
    got, stats2, _ = _workers(files, options, "jsonl", rules, errors=errors)
    assert got == want and want.count(b"\n") > 1750
    assert stats2.errors == stats1.errors >= 1
    assert any("2b.evtx" in line for line in errors)


CRASH = textwrap.dedent("""\
    import io, os, signal, sys
    from sysmonx.pipeline import ReplayOptions, replay_parallel, parallel
    from sysmonx.detection import DetectionStage

    class Crashing(parallel.Replayer):
        def run_file(self, path):
            if path.endswith("crash.jsonl"):
                os.kill(os.getpid(), signal.SIGKILL)
            return super().run_file(path)

    parallel.Replayer = Crashing  # the forked workers inherit it
    files, rules = sys.argv[1].split(","), sys.argv[2]
    buf = io.BytesIO()
    lines = []
    kw = {"detection": DetectionStage.from_paths([rules])} if rules != "-" else {}
    stats = replay_parallel(files, ReplayOptions(keep_duplicates=True), "jsonl", buf, 2,
                            lines.append, **kw)
    sys.stdout.buffer.write(buf.getvalue())
    for line in lines:
        print(line.severity, line, file=sys.stderr)
    print("errors", stats.errors, "files", stats.files, file=sys.stderr)
""")


@pytest.mark.parametrize("sigma", [True, False])
def test_a_dead_worker_is_reported_and_the_other_files_are_written(tmp_path, sigma):
    """A worker killed while replaying one file: the file is an error line naming it and the
    signal; every other file's events (and, with rules, the alerts) are written as one process
    writes them. (Before: the pool waited forever for the lost task.)"""
    files, rules = _spanning_inputs(tmp_path)
    crash = tmp_path / "crash.jsonl"
    crash.write_bytes((tmp_path / "3.jsonl").read_bytes())
    with_crash = files[:2] + [str(crash)] + files[2:]
    if sigma:
        want, _, _ = _one_process(files, ReplayOptions(keep_duplicates=True), "jsonl", rules)
    else:
        buf = io.BytesIO()
        w = make_writer("jsonl", buf)
        rp = Replayer(ReplayOptions(keep_duplicates=True), w)
        for f in files:
            rp.run_file(f)
        want = buf.getvalue()
    r = subprocess.run([sys.executable, "-c", CRASH, ",".join(with_crash),
                        rules[0] if sigma else "-"], capture_output=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    err = r.stderr.decode()
    assert f"error {crash}: the worker process replaying this file was killed by signal 9 " \
           "(SIGKILL); its events are not in the output" in err
    assert "errors 1 files 4" in err
    assert r.stdout == want  # every other file, alerts and correlations included


def test_cli_jobs_2_with_rules_uses_workers_and_writes_what_jobs_1_writes(corpus, tmp_path):
    corr = _corpus_correlations(tmp_path / "corr")
    runs = []
    for jobs in ("1", "2"):
        out, alerts = tmp_path / f"out{jobs}.xml", tmp_path / f"alerts{jobs}.jsonl"
        for extra in ([], ["--alerts", str(alerts)]):
            r = subprocess.run(
                [sys.executable, "-m", "sysmonx.cli", "replay", str(corpus / "evtx"),
                 "--rules", str(corpus / BUNDLE), "--rules", str(corr), "--keep-duplicates",
                 "--jobs", jobs, "-o", str(out), "--no-progress",
                 "--rule-cache", str(tmp_path / "cache"), *extra],
                capture_output=True, cwd=ROOT, timeout=300, env={
                    "PATH": "/usr/bin:/bin", "COLUMNS": "200", "HOME": str(tmp_path)})
            assert r.returncode == 0, r.stderr
            runs.append((out.read_bytes(), alerts.read_bytes() if extra else b"",
                         r.stderr.replace(b"sigma: note:", b"")
                         .replace(str(alerts).encode(), b"ALERTS").split(b"\n")))
    assert b"replays on one process" not in b"\n".join(runs[2][2] + runs[3][2])
    assert runs[0][0] == runs[2][0] and runs[0][0].count(b"<EventID>1000</EventID>") > 250
    assert runs[1][0] == runs[3][0] and runs[1][1] == runs[3][1] and runs[1][1]
    assert all(b"note: replaying 42 files on 2 worker processes" in run[2] for run in runs[2:])
    # the summaries (replay and Sigma detections) are the same, rule-cache notes and the
    # workers' note aside
    summary = [[ln for ln in run[2] if not ln.startswith((b"sigma:", b"note: replaying"))]
               for run in runs]
    assert summary[0] == summary[2] and summary[1] == summary[3]
    assert any(b"Sigma detections" in ln for ln in summary[0])


class _FullDisk(io.RawIOBase):
    """An output that takes the first write, then fails as a full disk does."""

    def __init__(self) -> None:
        self.writes = 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.writes += 1
        if self.writes > 1:
            raise OSError(28, "No space left on device")
        return len(b)


def test_a_failing_output_stops_the_workers_with_one_error(tmp_path):
    import multiprocessing

    from sysmonx.core.errors import SinkError
    from sysmonx.detection import DetectionStage
    files, rules = _spanning_inputs(tmp_path)
    with pytest.raises(SinkError, match="No space left on device"):
        replay_parallel(files * 4, ReplayOptions(keep_duplicates=True), "jsonl", _FullDisk(),
                        2, lambda line: None, detection=DetectionStage.from_paths(rules))
    # no worker left behind: each was terminated (then killed after 5 s) and joined; a loaded
    # machine may take a moment to reap one (CI saw one child still listed once), so the
    # children get 15 s to be gone, and one still alive after that fails the test
    deadline = time.monotonic() + 15
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.1)
    left = multiprocessing.active_children()
    assert left == [], [(p.name, p.pid, p.exitcode) for p in left]
    assert parallel._PARENT_ENGINE == {}


_POOL: list = []


def _write_half_a_result_then_hang() -> None:
    """Runs in a worker: starts a 1 MiB result message in the pool's result pipe, writes 16
    bytes of it and stops there, as a worker terminated in the middle of its write does."""
    import os
    import struct
    import time
    writer = _POOL[0]._result_queue._writer
    os.write(writer.fileno(), struct.pack("!i", 1 << 20) + b"x" * 16)
    time.sleep(60)


def test_stopping_a_pool_whose_worker_died_mid_result_does_not_hang():
    """Found in the test above about 1 run in 30 on a loaded machine: the worker was terminated
    while it wrote its result, the pool's manager thread waited for the rest of the message
    forever, and the interpreter hung at exit joining it."""
    import multiprocessing
    import time
    from concurrent.futures import ProcessPoolExecutor
    ex = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
    _POOL[:] = [ex]
    try:
        ex.submit(_write_half_a_result_then_hang)
        time.sleep(1)   # the worker has written; the manager thread waits for the rest
        manager = ex._executor_manager_thread
        assert manager is not None and manager.is_alive()
        started = time.monotonic()
        parallel._stop(ex, wait=False)
        assert not manager.is_alive()
        assert time.monotonic() - started < 10
        assert multiprocessing.active_children() == []
    finally:
        _POOL.clear()


def test_a_dead_workers_status_still_being_stored_is_waited_for_not_called_died():
    """The pool's manager thread may reap the dead worker first: for a moment this thread's
    ``exitcode`` is ``None`` (``waitpid`` gives ECHILD) although the worker was killed by a
    signal. Reported before as ``died`` (about 1 run in 35 of the test above)."""
    from sysmonx.pipeline.parallel import _describe_exit, _exit_code

    class Reaped:
        reads = 0

        def join(self, timeout=None):
            pass

        @property
        def exitcode(self):
            self.reads += 1
            return -9 if self.reads > 3 else None

    assert _describe_exit(_exit_code([Reaped()])) == "was killed by signal 9 (SIGKILL)"
