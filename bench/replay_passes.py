#!/usr/bin/env python3
"""Replay EVTX files N times in one process, for instruction counts per record.

    python bench/replay_passes.py N CONFIG [FILE ...]

``N`` passes over the files (default: the corpus's EVTX files, ``$SYSMONX_CORPUS/evtx``) with
one ``Replayer`` (``--keep-duplicates``, so every pass writes every record), JSON lines to a
null stream whose ``write`` is a Python method; ``CONFIG``: a Sysmon config file, or ``none``
(loaded without the config caches). Meant to run under callgrind twice, the instructions of the
run with fewer passes subtracted from the one with more, divided by the records between them,
so start-up, imports and the config's load and compile drop out::

    valgrind --tool=callgrind --callgrind-out-file=a.out python bench/replay_passes.py 1 none
    valgrind --tool=callgrind --callgrind-out-file=b.out python bench/replay_passes.py 4 none

(the corpus: (b - a) / (3 x 1,766 records)). Prints the files, records and raw-path records to
stderr; exit status 1 when no record was read (no input file, or none readable).
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sysmonx.config import load_config
from sysmonx.filtering.engine import FilterEngine
from sysmonx.pipeline import Replayer, ReplayOptions, make_writer
from sysmonx.sources import iter_input_files
import sysmonx.sources.evtx  # noqa: F401  (imported before the run, as the command line does)


class _Null(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        return len(b)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    passes, config_path = int(argv[0]), argv[1]
    files = argv[2:]
    if not files:
        corpus = os.environ.get("SYSMONX_CORPUS", "")
        files = [f for f in iter_input_files([os.path.join(corpus, "evtx")])
                 if f.lower().endswith(".evtx")]
    config = None if config_path == "none" else load_config(config_path, cache=None)
    engine = FilterEngine(config, plan_cache=False) if config is not None else None
    writer = make_writer("jsonl", _Null())
    r = Replayer(ReplayOptions(config=config, keep_duplicates=True), writer, engine=engine)
    for _ in range(passes):
        for f in files:
            r.run_file(f)
    r.finish()
    writer.close()
    print(len(files), r.stats.records, r.stats.raw_records, file=sys.stderr)
    if passes > 0 and not r.stats.records:  # nothing was measured: no file, or no record read
        print(f"replay_passes: no record read from {len(files)} files", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
