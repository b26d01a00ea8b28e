"""Shared test helpers: the read-only reference corpus (Sysmon manifests, dumps, samples).

The corpus lives outside the repository (licences): ``$SYSMONX_CORPUS`` or
``<repo>/../shared/corpus``. Tests that need it take the ``corpus`` fixture and are skipped
cleanly when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import pytest


def corpus_path() -> Optional[Path]:
    """The corpus directory, or ``None`` when it does not exist."""
    env = os.environ.get("SYSMONX_CORPUS")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "corpus"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def corpus() -> Path:
    """Path of the reference corpus; skips the test when the corpus is not available."""
    path = corpus_path()
    if path is None:
        pytest.skip("reference corpus not available (set SYSMONX_CORPUS)")
    return path
