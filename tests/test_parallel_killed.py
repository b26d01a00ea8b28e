"""``replay --jobs``: a worker the kernel kills (the OOM killer's SIGKILL) in the middle of
writing its result. CPython's pool reads the result before it looks at the workers' exit, so
the half-written message left its manager thread waiting for the rest forever and the replay
hung (found in review: ``pipeline/parallel.py`` handled only the workers it terminated itself).
Now the replay ends: the file is named as lost, the exit status is non-zero, and every other
file's output is written as one process writes it."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from sysmonx.pipeline import ReplayOptions, Replayer, make_writer

from test_parallel_sigma import _spanning_inputs

ROOT = Path(__file__).resolve().parents[1]

# The hook, installed in the parent before the workers fork: the pool's executors are recorded
# (so a worker finds its own pool's result pipe) and a worker given midwrite.jsonl writes the
# first bytes of a 1 MiB result message into that pipe, then is killed by SIGKILL, as a worker
# the kernel kills while it sends its result.
HOOK = textwrap.dedent("""\
    import concurrent.futures, os, signal, struct
    from concurrent.futures import process
    from sysmonx.pipeline import parallel

    POOLS = []
    _Pool = process.ProcessPoolExecutor

    class RecordedPool(_Pool):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            POOLS.append(self)

    concurrent.futures.ProcessPoolExecutor = RecordedPool

    class KilledMidResult(parallel.Replayer):
        def run_file(self, path):
            if path.endswith("midwrite.jsonl"):
                writer = POOLS[-1]._result_queue._writer
                os.write(writer.fileno(), struct.pack("!i", 1 << 20) + b"x" * 64)
                os.kill(os.getpid(), signal.SIGKILL)
            return super().run_file(path)

    parallel.Replayer = KilledMidResult
""")

LIBRARY = HOOK + textwrap.dedent("""\
    import io, sys
    from sysmonx.pipeline import ReplayOptions, replay_parallel
    files = sys.argv[1].split(",")
    buf = io.BytesIO()
    lines = []
    stats = replay_parallel(files, ReplayOptions(keep_duplicates=True), "jsonl", buf, 2,
                            lines.append)
    sys.stdout.buffer.write(buf.getvalue())
    for line in lines:
        print(line.severity, line, file=sys.stderr)
    print("errors", stats.errors, "files", stats.files, "lost", stats.lost_files,
          file=sys.stderr)
""")

CLI = HOOK + textwrap.dedent("""\
    import sys
    from sysmonx.cli.dispatch import main
    sys.exit(main(sys.argv[1:]))
""")


def _inputs(tmp_path: Path) -> tuple[list[str], Path, bytes]:
    """The three spanning files with ``midwrite.jsonl`` (a copy of the third) second, and what
    one process writes for the three without it."""
    files, _ = _spanning_inputs(tmp_path)
    killer = tmp_path / "midwrite.jsonl"
    killer.write_bytes(Path(files[2]).read_bytes())
    buf = io.BytesIO()
    rp = Replayer(ReplayOptions(keep_duplicates=True), make_writer("jsonl", buf))
    for f in files:
        rp.run_file(f)
    return files[:1] + [str(killer)] + files[1:], killer, buf.getvalue()


def test_a_worker_killed_while_writing_its_result_is_reported_not_waited_for(tmp_path):
    """Fails on the code before with a timeout: the replay never ended."""
    files, killer, want = _inputs(tmp_path)
    r = subprocess.run([sys.executable, "-c", LIBRARY, ",".join(files)], capture_output=True,
                       cwd=ROOT, timeout=90)
    err = r.stderr.decode()
    assert r.returncode == 0, err
    assert f"error {killer}: the worker process replaying this file was killed by signal 9 " \
           "(SIGKILL); its events are not in the output" in err
    assert f"errors 1 files 4 lost ['{killer}']" in err
    assert r.stdout == want and want.count(b"\n") > 1700  # every other file, in input order


def test_cli_ends_with_an_error_naming_the_lost_file_and_a_non_zero_status(tmp_path):
    files, killer, want = _inputs(tmp_path)
    out = tmp_path / "out.jsonl"
    r = subprocess.run([sys.executable, "-c", CLI, "replay", *files, "--jobs", "2",
                        "--keep-duplicates", "-f", "jsonl", "-o", str(out), "--no-progress"],
                       capture_output=True, cwd=ROOT, timeout=90,
                       env=dict(os.environ, COLUMNS="400"))
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert f"error: 1 file not replayed, a worker process died replaying each (their events " \
           f"are not in the output; the other files' are): {killer}" in err
    assert out.read_bytes() == want
