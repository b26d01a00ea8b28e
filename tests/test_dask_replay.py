"""Scale-out replay on Dask distributed (sysmonx.pipeline.dask, ``replay --dask``): a local
cluster gives the one-process replay's output byte for byte, on the corpus with a config and with
Sigma rules (alerts included), also when a worker is killed in the middle of the job."""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
import time

import pytest

from sysmonx.cli import main
from sysmonx.config import load_config
from sysmonx.pipeline import Replayer, ReplayOptions
from sysmonx.sinks import writer_class
from sysmonx.sources import iter_input_files



@pytest.fixture(scope="module", autouse=True)
def distributed():
    """dask distributed, imported for this module only: importing dask puts importlib_metadata's
    distribution finder and tlz's loader on ``sys.meta_path`` for good and deletes the standard
    path finder's ``find_distributions`` (importlib_metadata's ``disable_stdlib_finder``), so
    the registry's plugin check would scan every entry point in the modules after this one;
    both are put back when the module ends (conftest checks that no module leaves them
    changed)."""
    from importlib.machinery import PathFinder
    before = list(sys.meta_path), PathFinder.__dict__["find_distributions"]
    yield pytest.importorskip("distributed", reason="dask distributed not installed "
                              "(pip install 'sysmonx[dask]')")
    sys.meta_path[:] = before[0]
    PathFinder.find_distributions = before[1]

CONFIG = "configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml"
RULES = "sigma/sigmahq_rules_sysmon_categories.tar.gz"


def corpus_files(root):
    return list(iter_input_files([str(root / "evtx"), str(root / "json"), str(root / "linux")]))


def test_cli_dask_local_equals_one_process_with_config(corpus, tmp_path):
    files = corpus_files(corpus)
    one, many = tmp_path / "one.xml", tmp_path / "dask.xml"
    assert main(["replay", *files, "-c", str(corpus / CONFIG), "-o", str(one), "-q"]) == 0
    assert main(["replay", *files, "-c", str(corpus / CONFIG), "-o", str(many), "-q",
                 "--dask", "local", "--dask-workers", "2"]) == 0
    assert many.read_bytes() == one.read_bytes() and one.stat().st_size > 100_000


def _one_process(files, rules_path, config):
    from sysmonx.detection import DetectionStage
    out = io.BytesIO()
    w = writer_class("jsonl")(out, close_stream=False)
    rp = Replayer(ReplayOptions(config=config), w,
                  detection=DetectionStage.from_paths([rules_path]))
    for f in files:
        rp.run_file(f)
    rp.finish()
    rp.close()
    return out.getvalue(), rp.stats


def test_rules_and_a_worker_killed_mid_job_give_identical_output(corpus, distributed):
    from sysmonx.detection import DetectionStage
    from sysmonx.pipeline.dask import replay_dask
    files = corpus_files(corpus)
    rules = str(corpus / RULES)
    config = load_config(corpus / CONFIG)
    expected, stats1 = _one_process(files, rules, config)
    assert expected.count(b'"EventID":1000,') > 10  # alerts are part of what must match
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    client = distributed.Client(cluster)
    try:
        pids = list(client.run(os.getpid).values())
        killed = []

        def kill_one() -> None:  # while the workers load rules and read the first files
            time.sleep(1.5)
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
        t = threading.Thread(target=kill_one)
        t.start()
        out = io.BytesIO()
        w = writer_class("jsonl")(out, close_stream=False)
        stats = replay_dask(files, ReplayOptions(config=config), "local", [w],
                            detection=DetectionStage.from_paths([rules]), rule_paths=[rules],
                            on_error=lambda e: None, client=client)
        t.join()
        assert killed
        assert out.getvalue() == expected
        assert stats.records == stats1.records
        assert dict(+stats.included) == dict(+stats1.included)
    finally:
        client.close()
        cluster.close()


def test_security_rule_fires_on_dask_as_in_one_process(corpus, tmp_path, capsys):
    """Records of a channel the loaded rules read meet them with --non-sysmon drop and are not
    written (new-user report, session 10, finding 2), on Dask as in one process."""
    from test_sigma_other_channels import FOLDER, _rule
    rule = _rule(tmp_path)
    got = []
    for extra in ([], ["--dask", "local", "--dask-workers", "2"]):
        out, alerts = tmp_path / "out.jsonl", tmp_path / "alerts.jsonl"
        assert main(["replay", str(corpus / FOLDER), "--rules", rule, "-f", "jsonl",
                     "-o", str(out), "--alerts", str(alerts), "-q", *extra]) == 0
        err = capsys.readouterr().err
        assert "events checked 75; alerts 1 (high 1)" in err
        got.append((out.read_bytes(), alerts.read_bytes()))
    assert got[0] == got[1]
    assert b"Security-Auditing" not in got[1][0] and len(got[1][1].splitlines()) == 1


def test_duplicates_counted_as_one_process_counts_them(corpus, tmp_path):
    """The same output given twice (its events and its SigmaAlert events repeat): the alert
    counts of --dask equal one process's (they gave a -1 row for event 1000 and twice the
    alerts read back), and so do the "Sysmon events" and "duplicates dropped" counts (the
    driver's duplicate check also sees the records the workers' filter excluded)."""
    from sysmonx.pipeline.dask import replay_dask  # noqa: F401  (the module loads)
    full = tmp_path / "full.jsonl"
    assert main(["replay", str(corpus / "evtx"), "--rules", str(corpus / RULES), "-f", "jsonl",
                 "-o", str(full), "-q"]) == 0
    twice = tmp_path / "twice.jsonl"
    twice.write_bytes(full.read_bytes())

    def summary(*extra):
        import contextlib
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert main(["replay", str(full), str(twice), "-c", "default", "--no-output",
                         "--no-progress", *extra]) == 0
        return [ln for ln in err.getvalue().splitlines()
                if ln.startswith(("SysmonX alerts read back", "files:", "duplicates dropped"))
                or "| 1000 |" in ln or "Sigma alert" in ln]

    one = summary()
    assert any("SysmonX alerts read back" in ln for ln in one), one
    assert summary("--dask", "local", "--dask-workers", "1") == one


def test_dask_counts_equal_one_process_with_duplicates_filtered_out(corpus, tmp_path):
    """A log given three times beside an output made from it (Sysmon events, a SigmaAlert read
    back): with a config that excludes some of the repeated events, a time window that drops
    some, other providers' records the gate drops, and rules that make the read-back alert
    again from another file's events, --dask's summary equals one process's line for line
    ("Sysmon events" and "duplicates dropped" differed: the driver's duplicate check saw only
    the events the workers kept; "events checked" counted the alert read back; a read-back
    alert whose events another file's worker matched was written again)."""
    import contextlib
    import shutil
    from test_sigma_other_channels import MALSECLOGON, _rule
    d = tmp_path / "in"
    d.mkdir()
    for name in ("a", "b", "c"):
        shutil.copy(corpus / MALSECLOGON, d / f"{name}.evtx")
    rule = _rule(tmp_path)
    assert main(["replay", str(d / "a.evtx"), "--rules", rule, "-f", "jsonl", "-o",
                 str(d / "out.jsonl"), "-q"]) == 0

    def summary(*extra):
        err = io.StringIO()
        out = tmp_path / f"out{len(extra)}.jsonl"
        with contextlib.redirect_stderr(err):
            assert main(["replay", str(d), "-f", "jsonl", "-o", str(out), "--no-progress",
                         *args, *extra]) == 0
        lines = [ln for ln in err.getvalue().splitlines()
                 if not ln.startswith(("config:", "sigma: "))]
        return lines, out.read_bytes()

    for args in (["-c", str(corpus / CONFIG)],
                 ["-c", str(corpus / CONFIG), "--from", "2021-12-07T17:33:01.62Z"],
                 ["--rules", rule, "--no-rule-cache"],
                 ["--rules", rule, "--no-rule-cache", "--min-level", "critical"],
                 ["--min-level", "critical"]):
        one, one_out = summary()
        many, many_out = summary("--dask", "local", "--dask-workers", "2")
        assert many == one, args
        assert many_out == one_out, args
        head = next(ln for ln in one if ln.startswith("files:"))
        assert "records read: 52" in head, args
        dups = next(ln for ln in one if ln.startswith("duplicates dropped:"))
        assert dups.startswith("duplicates dropped: 36 "), args  # 2 x 15 + the output's 6
    # one copy's records are counted, the others are duplicates
    assert "Sysmon events: 6  other records: 9" in head
