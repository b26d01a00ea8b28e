"""``--jobs``: worker processes write byte for byte what one process writes (corpus, configs,
formats); ``--jobs 0`` uses workers only where the input is large enough to gain from them;
workers inherit what the parent prepared instead of doing it again each."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sysmonx.config import load_config
from sysmonx.pipeline import ReplayOptions, Replayer, auto_jobs, make_writer, replay_parallel
from sysmonx.pipeline import parallel

ROOT = Path(__file__).resolve().parents[1]
SOS = "configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml"
MODULAR = "configs/olafhartong__sysmon-modular/sysmonconfig.xml"


def _sequential(files, options, fmt) -> bytes:
    buf = io.BytesIO()
    w = make_writer(fmt, buf)
    w.close_stream = False
    r = Replayer(options, w)
    for f in files:
        r.run_file(f)
    w.close()
    return buf.getvalue()


@pytest.mark.parametrize("config, fmt", [(SOS, "jsonl"), (MODULAR, "xml"), (None, "jsonl"),
                                         (SOS, "csv")])
def test_workers_write_what_one_process_writes(corpus, config, fmt):
    files = sorted(str(p) for p in (corpus / "evtx").rglob("*.evtx"))
    if config is not None and not (corpus / config).is_file():
        pytest.skip(f"corpus config missing: {config}")
    cfg = load_config(corpus / config) if config else None
    options = ReplayOptions(config=cfg, keep_duplicates=True)
    want = _sequential(files, options, fmt)
    assert want.count(b"\n") > 500
    buf = io.BytesIO()
    stats = replay_parallel(files, options, fmt, buf, 2, lambda line: None)
    assert buf.getvalue() == want
    assert stats.records >= 1766
    assert parallel._PARENT_ENGINE == {}  # the inherited engine is not kept past the pool


def test_auto_jobs_uses_workers_only_for_large_inputs(tmp_path):
    def sized(name: str, size: int) -> str:
        p = tmp_path / name
        with open(p, "wb") as f:
            f.truncate(size)  # sparse: the size is all auto_jobs reads
        return str(p)

    per = parallel.AUTO_BYTES_PER_JOB
    small = [sized(f"s{i}", 1 << 20) for i in range(40)]
    assert auto_jobs(small, cpus=8) == 1
    assert auto_jobs([sized("a", 2 * per - 1)], cpus=8) == 1
    assert auto_jobs([sized("b", 2 * per)], cpus=8) == 2
    assert auto_jobs([sized("c", 100 * per)], cpus=8) == 8
    assert auto_jobs([sized("d", 100 * per)], cpus=1) == 1
    assert auto_jobs([str(tmp_path / "missing")], cpus=8) == 1


def test_cli_jobs_0_on_a_small_folder_writes_what_jobs_1_writes(corpus, tmp_path):
    folder = corpus / "evtx"
    outs = []
    for jobs in ("1", "0", "2"):
        out = tmp_path / f"out{jobs}.jsonl"
        r = subprocess.run([sys.executable, "-m", "sysmonx.cli", "replay", str(folder),
                            "--config", str(corpus / SOS), "--keep-duplicates", "--jobs", jobs,
                            "-f", "jsonl", "-o", str(out), "-q"], capture_output=True,
                           cwd=ROOT, timeout=300)
        assert r.returncode == 0, r.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2] and outs[0].count(b"\n") > 500


def test_listing_stages_does_not_load_sigma():
    """Workers and replays without --rules never import pySigma (the stage registry imports
    the detection stages' module only)."""
    code = ("import sys\nfrom sysmonx.core.registry import STAGES\nSTAGES.discover()\n"
            "assert 'sigma-match' in STAGES.names(), STAGES.names()\n"
            "print(sorted(m for m in sys.modules if m == 'sigma' or m.startswith('sigma.')))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    from sysmonx import detection
    assert detection.DetectionStage.__name__ == "DetectionStage"
    with pytest.raises(AttributeError):
        detection.NoSuchName  # noqa: B018


def test_cli_jobs_0_says_when_it_stays_on_one_process(corpus, tmp_path):
    """A new user ran --jobs on the 5 MB corpus and could not tell whether workers ran: --jobs 0
    keeping one process is said, with the size rule."""
    r = subprocess.run([sys.executable, "-m", "sysmonx.cli", "replay", str(corpus / "evtx"),
                        "--keep-duplicates", "--jobs", "0", "--no-output", "--no-progress"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert ("note: --jobs 0 replays on one process: the input is too small for workers to pay "
            "off (one worker per 24 MB, none below 48 MB)") in r.stderr
    assert "worker processes" not in r.stderr


def test_cli_jobs_says_how_many_workers_it_started(corpus, tmp_path):
    """A new user ran --jobs 2 and nothing said how many workers ran; with -q nothing is said."""
    from sysmonx.pipeline.parallel import worker_count
    files = sorted(str(p) for p in (corpus / "evtx").rglob("*.evtx"))
    assert worker_count(files, 2) == 2 and worker_count(files[:1], 2) == 1
    argv = [sys.executable, "-m", "sysmonx.cli", "replay", str(corpus / "evtx"),
            "--keep-duplicates", "--jobs", "2", "--no-output", "--no-progress"]
    r = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"note: replaying {len(files)} files on 2 worker processes" in r.stderr
    r = subprocess.run(argv + ["-q"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0 and "worker processes" not in r.stderr
