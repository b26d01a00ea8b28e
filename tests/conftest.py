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


# Live tests (kernel audit rules, BPF programs, tracefs instances, rsyslog, service installs) change
# machine-wide state. Two test runs on one host (two checkouts, a developer and CI) must not
# interleave them, so every module marked ``live`` holds an exclusive lock on a host-wide file for
# its duration. The lock is advisory and costs nothing when only one run is active.
LIVE_LOCK = os.environ.get("SYSMONX_LIVE_LOCK", "/tmp/sysmonx-live-tests.lock")


def pytest_configure(config: pytest.Config) -> None:
    """Declare the ``live`` marker (module touches machine-wide kernel or service state)."""
    config.addinivalue_line("markers", "live: touches machine-wide state; serialised across test runs")


@pytest.fixture(scope="module", autouse=True)
def _live_lock(request: pytest.FixtureRequest):
    """Hold the host-wide live-test lock while a ``live`` module runs."""
    if request.node.get_closest_marker("live") is None:
        yield
        return
    import fcntl

    with open(LIVE_LOCK, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
