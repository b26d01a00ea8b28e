"""What the benchmarks share: the corpus location and the raw-parse baseline they compare to."""

from __future__ import annotations

import os
from pathlib import Path

from evtx import PyEvtxParser

ROOT = Path(__file__).resolve().parents[1]


def default_corpus() -> str:
    """``$SYSMONX_CORPUS``, else ``../shared/corpus`` beside the repository."""
    return os.environ.get("SYSMONX_CORPUS") or str(ROOT.parent / "shared" / "corpus")


def baseline(files: list[str]) -> int:
    """The baseline every ratio uses: iterate ``PyEvtxParser(f).records_json()`` over ``files``
    (the Rust parse alone, no JSON decoding). Returns the number of records."""
    n = 0
    for f in files:
        for _ in PyEvtxParser(f).records_json():
            n += 1
    return n
