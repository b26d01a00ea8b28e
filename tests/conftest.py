"""Shared test helpers: the read-only reference corpus (Sysmon manifests, dumps, samples).

The corpus lives outside the repository (licences): ``$SYSMONX_CORPUS`` or
``<repo>/../shared/corpus``. Tests that need it take the ``corpus`` fixture and are skipped
cleanly when it is absent. When ``$SYSMONX_CORPUS`` names a folder that exists (CI sets it), the
corpus is required: a test skipped for want of corpus data (a skip reason mentioning the corpus)
fails the run, so a moved or incomplete corpus cannot turn ~170 tests into silent skips.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional

import pytest


# Compiled Sigma rule sets go to a private folder of this test session, never to ~/.cache
# (CLI subprocesses inherit it); removed at the end.
_RULE_CACHE = None
if "SYSMONX_CACHE_DIR" not in os.environ:
    _RULE_CACHE = tempfile.mkdtemp(prefix="sysmonx-test-cache-")
    os.environ["SYSMONX_CACHE_DIR"] = _RULE_CACHE


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


def corpus_required() -> bool:
    """True when ``$SYSMONX_CORPUS`` is set and names an existing folder (see module doc)."""
    env = os.environ.get("SYSMONX_CORPUS")
    return bool(env) and Path(env).is_dir()


_CORPUS_SKIPS: list[str] = []


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr or "")


_CORPUS_ABSENT_SKIPS: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Remember tests skipped for want of corpus data (failures while the corpus is required;
    counted for a closing line otherwise)."""
    if report.skipped and "corpus" in _skip_reason(report).lower():
        if corpus_required():
            _CORPUS_SKIPS.append(f"{report.nodeid}: {_skip_reason(report)}")
        else:
            _CORPUS_ABSENT_SKIPS.append(report.nodeid)


def pytest_terminal_summary(terminalreporter) -> None:
    """Name the corpus tests that skipped although the corpus is required; otherwise say in
    one line how many skipped for want of it and where it was looked for."""
    if _CORPUS_SKIPS:
        terminalreporter.section("corpus tests skipped although SYSMONX_CORPUS is set",
                                 red=True)
        for line in _CORPUS_SKIPS:
            terminalreporter.write_line(line)
    elif _CORPUS_ABSENT_SKIPS:
        where = Path(__file__).resolve().parents[2] / "shared" / "corpus"
        terminalreporter.write_line(
            f"{len(_CORPUS_ABSENT_SKIPS)} tests skipped: no reference corpus at {where} and "
            "SYSMONX_CORPUS is not set (set it to the corpus folder to run them)", yellow=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when corpus tests skipped while the corpus is required; remove this
    session's rule cache folder."""
    if _CORPUS_SKIPS and exitstatus == 0:
        session.exitstatus = 1
    if _RULE_CACHE:
        shutil.rmtree(_RULE_CACHE, ignore_errors=True)


# Live tests (kernel audit rules, BPF programs, tracefs instances, rsyslog, service installs) change
# machine-wide state. Two test runs on one host (two checkouts, a developer and CI) must not
# interleave them, so every module marked ``live`` holds an exclusive lock on a host-wide file for
# its duration. The lock is advisory and costs nothing when only one run is active.
LIVE_LOCK = os.environ.get("SYSMONX_LIVE_LOCK", "/tmp/sysmonx-live-tests.lock")


def _finder_state() -> tuple[list, object]:
    """What decides where distributions are found: ``sys.meta_path`` and the standard path
    finder's own ``find_distributions`` (importlib_metadata deletes it when imported)."""
    from importlib.machinery import PathFinder
    return list(sys.meta_path), PathFinder.__dict__.get("find_distributions")


def _restore_finders(state: tuple[list, object]) -> None:
    from importlib.machinery import PathFinder
    sys.meta_path[:] = state[0]
    if state[1] is not None:
        PathFinder.find_distributions = state[1]  # type: ignore[method-assign]


def _finder_change(before: tuple[list, object]) -> Optional[str]:
    """What changed since ``before`` (:func:`_finder_state`), in words, or ``None``."""
    now = _finder_state()
    if now == before:
        return None
    added = ", ".join(repr(f) for f in now[0] if f not in before[0]) or "none"
    removed = ", ".join(repr(f) for f in before[0] if f not in now[0]) or "none"
    said = f"sys.meta_path changed (added: {added}; removed: {removed})"
    if now[1] is not before[1]:
        said += "; the standard path finder's find_distributions " + (
            "deleted" if now[1] is None else "replaced")
    return said


#: the finders when the session started (pytest's own import hook on sys.meta_path already).
_SESSION_FINDERS = _finder_state()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Refuse a run where importing a test module changed the distribution finders (import
    what does, e.g. dask, in a fixture that puts them back: see tests/test_dask_replay.py)."""
    change = _finder_change(_SESSION_FINDERS)
    if change is not None:
        _restore_finders(_SESSION_FINDERS)
        raise pytest.UsageError(f"importing the test modules left {change}; the registry's "
                                "plugin check reads them")


@pytest.fixture(scope="module", autouse=True)
def _finders_unchanged(request: pytest.FixtureRequest):
    """Fail the module that leaves the distribution finders changed (a finder left on
    ``sys.meta_path``, or the path finder's ``find_distributions`` deleted, makes the
    registry's plugin check fall back to the full entry-point scan in every later module), and
    put them back as they were."""
    before = _finder_state()
    yield
    change = _finder_change(before)
    if change is not None:
        _restore_finders(before)
        pytest.fail(f"{request.node.nodeid} left {change}", pytrace=False)


def _kept_bytes(once: Callable[[], object], rounds: int, warm: int = 20) -> int:
    """Bytes still allocated after ``rounds`` more calls of ``once`` than after one: ``once``
    is called ``warm`` times first (caches filled), then once more and ``rounds`` times under
    tracemalloc (it sees every allocation), with a full collection before each reading."""
    import gc
    import tracemalloc
    for _ in range(warm):
        once()
    gc.collect()
    tracemalloc.start()
    try:
        once()
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(rounds):
            once()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


@pytest.fixture
def kept_bytes() -> Callable[[Callable[[], object], int, int], int]:
    """The leak check of the compiled code's tests: ``kept_bytes(once, rounds, warm=20)``,
    the bytes ``rounds`` calls of ``once`` kept (:func:`_kept_bytes`)."""
    return _kept_bytes


_INTERRUPTED: list[bool] = []


def pytest_keyboard_interrupt(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    """Ctrl-C (or ``pytest.exit``) stopped the run: noted for :func:`interrupted`. pytest calls
    this before the session's fixtures are torn down."""
    _INTERRUPTED.append(True)


def interrupted() -> bool:
    """Whether the run was stopped by Ctrl-C: a fixture that checks the machine's state after
    its test (tests/test_backend_audit.py ``baseline``) then puts the state back without
    judging it (the test did not finish), so the run ends without a teardown traceback."""
    return bool(_INTERRUPTED)


def pytest_configure(config: pytest.Config) -> None:
    """Declare the ``live`` marker (module touches machine-wide kernel or service state).
    Refuse to run when ``$SYSMONX_CORPUS`` is set but names no folder: a mistyped path would
    otherwise skip every corpus test as if no corpus had been asked for (new-user report s15).

    Raises:
        pytest.UsageError: ``$SYSMONX_CORPUS`` names no folder (pytest exits with status 4).
    """
    config.addinivalue_line("markers", "live: touches machine-wide state; serialised across test runs")
    env = os.environ.get("SYSMONX_CORPUS")
    if env and not Path(env).is_dir():
        raise pytest.UsageError(
            f"SYSMONX_CORPUS is set to {env!r}, which is not a folder: point it at the reference "
            "corpus folder (the one holding MANIFEST.md), or unset it to skip the corpus tests")


@pytest.fixture(scope="module", autouse=True)
def _live_lock(request: pytest.FixtureRequest):
    """Hold the host-wide live-test lock while a ``live`` module runs."""
    if request.node.get_closest_marker("live") is None:
        yield
        return
    import fcntl

    with open(LIVE_LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another process holds it: say so, then wait (not silent)
            capture = request.config.pluginmanager.getplugin("capturemanager")
            with capture.global_and_fixture_disabled():
                print(f"\n{request.node.nodeid}: waiting for {LIVE_LOCK}: another process on "
                      "this host holds it (a test run's live tests, or a live command run under "
                      "flock on it; SYSMONX_LIVE_LOCK names another file)", file=sys.stderr,
                      flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture
def script_backend(monkeypatch):
    """The live sensor's only backend is a scripted one (``tests/live_script.py``): set the
    returned class's ``script`` (and ``gate``) before the sensor starts."""
    from live_script import install
    return install(monkeypatch)
