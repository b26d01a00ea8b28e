"""What the benchmarks share: the corpus location, the raw-parse baseline they compare to, and
``--keep DIR`` (the outputs of a live benchmark kept for a look afterwards)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]


def default_corpus() -> str:
    """``$SYSMONX_CORPUS``, else ``../shared/corpus`` beside the repository."""
    return os.environ.get("SYSMONX_CORPUS") or str(ROOT.parent / "shared" / "corpus")


def baseline(files: list[str]) -> int:
    """The baseline every ratio uses: iterate ``PyEvtxParser(f).records_json()`` over ``files``
    (the Rust parse alone, no JSON decoding). Returns the number of records."""
    from evtx import PyEvtxParser
    n = 0
    for f in files:
        for _ in PyEvtxParser(f).records_json():
            n += 1
    return n


def keep_outputs(workdir: Path, keep: Optional[str], pattern: str = "*.jsonl") -> list[Path]:
    """``--keep DIR``: copy the files of ``workdir`` matching ``pattern`` (the sensors'
    outputs) into ``keep``, made when missing; nothing when ``keep`` is ``None`` or empty.
    Returns the copies, sorted. Raises ``OSError`` when ``keep`` cannot be made or written."""
    if not keep:
        return []
    os.makedirs(keep, exist_ok=True)
    return sorted(Path(shutil.copy(f, keep)) for f in sorted(Path(workdir).glob(pattern)))
