"""The compiled replay loop (``_speedups.evtx_batch``: the EVTX record loop; ``_speedups.run_batch``:
the per-item loop over a source's lists) against the pure-Python paths.

Held to the same output byte for byte and the same error lines: ``sysmonx replay`` of every
corpus EVTX with each config (none, SwiftOnSecurity, sysmon-modular) and ``--non-sysmon pass``,
in ``jsonl``, ``xml`` and ``linux-xml``; every damaged-file case of tests/test_sources.py (record
headers, bodies, chunk magic, templates, blank chunk, file header, truncation) read and replayed
in both modes gives the same events AND the same ReadErrors in the same order. The compiled
loops are shown to be taken (counters), so none of this passes vacuously, and they keep no
memory (tracemalloc) and make no reference errors (debug allocator, ``-X dev``).

Skipped with a reason when the extension is not built (as tests/test_speedups.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from builders import RecordingSink

from sysmonx.core import native
from sysmonx.core.errors import SinkError
from sysmonx.event import Event
from sysmonx.pipeline import loop as loop_module
from sysmonx.pipeline import Replayer, ReplayOptions, make_writer
from sysmonx.sources import evtx as evtx_source

sp = native.speedups
needs_ext = pytest.mark.skipif(sp is None, reason=f"C extension not in use: "
                               f"{native.implementation()}")
pytestmark = needs_ext

CONFIGS = {
    "none": None,
    "sos": "configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml",
    "modular": "configs/olafhartong__sysmon-modular/sysmonconfig.xml",
}


def _env(pure: bool) -> dict:
    env = dict(os.environ)
    env.pop(native.PURE_ENV, None)
    if pure:
        env[native.PURE_ENV] = "1"
    return env


def _cli(args: list[str], pure: bool, cache: Path | None = None) -> tuple[int, str]:
    """Run the command line; ``cache``: its own cache folder (so each mode's config line says
    the same about the config caches, whatever ran before)."""
    env = _env(pure)
    if cache is not None:
        env["SYSMONX_CACHE_DIR"] = str(cache)
    r = subprocess.run([sys.executable, "-m", "sysmonx.cli", *args], env=env,
                       capture_output=True, text=True, timeout=900)
    return r.returncode, r.stderr


@pytest.mark.parametrize("config,fmt", [(c, f) for c in CONFIGS for f in ("jsonl", "xml")]
                         + [("none", "linux-xml")])
def test_corpus_replay_identical_in_both_modes(corpus, tmp_path, config, fmt):
    """Every corpus EVTX through the command line, all records (``--non-sysmon pass``): the
    compiled loop writes the bytes, and says the lines on stderr, the pure path does
    (``linux-xml``, the Linux output, once: without a config)."""
    extra = ["--config", str(corpus / CONFIGS[config])] if CONFIGS[config] else []
    out = {}
    for pure in (False, True):
        path = tmp_path / f"{pure}.out"
        rc, err = _cli(["replay", str(corpus / "evtx"), "-f", fmt, "--non-sysmon", "pass",
                        "--no-progress", "-o", str(path), *extra], pure,
                       cache=tmp_path / f"cache-{pure}")
        out[pure] = (rc, err.replace(str(tmp_path / f"cache-{pure}"), "CACHE"),
                     path.read_bytes())
    assert out[False][0] == out[True][0] == 0, out[False][1][-2000:]
    assert out[False][2].count(b"\n") > 500
    assert out[False][2] == out[True][2]
    assert out[False][1] == out[True][1]


def test_compiled_loops_are_taken(corpus, monkeypatch):
    """A replay of corpus EVTX runs its records through ``evtx_batch`` and its items through
    ``run_batch``: counted, so the equality tests above compare the compiled path."""
    files = sorted(str(p) for p in (corpus / "evtx").rglob("*.evtx"))[:12]
    calls = []
    real = loop_module._run_batch
    assert real is sp.run_batch

    def counting(items, *rest):
        calls.append(len(items))
        return real(items, *rest)

    monkeypatch.setattr(loop_module, "_run_batch", counting)
    before = evtx_source.compiled_records[0]
    r = Replayer(ReplayOptions(keep_duplicates=True, non_sysmon="pass"),
                 make_writer("jsonl", RecordingSink()))
    stats = r.run(files)
    converted = evtx_source.compiled_records[0] - before
    assert stats.records > 100
    assert converted >= 0.9 * stats.records, (converted, stats.records)
    assert sum(calls) == stats.records
    assert max(calls) > 1  # lists of several events, not one call per event




def _run_replay(files: list[str], mode: str, monkeypatch, fail_at: int = 0,
                **options) -> tuple:
    """Replay in one of three loops: ``compiled`` (run_batch over lists), ``lists`` (the Python
    loop over the same lists), ``events`` (the per-event Python loop, no lists)."""
    with monkeypatch.context() as m:
        if mode != "compiled":
            m.setattr(loop_module, "_run_batch", None)
        if mode == "events":
            from sysmonx.sources.recorded import RecordedLogs
            m.setattr(RecordedLogs, "batches", lambda self: None)
        sink = RecordingSink(fail_at)
        errors: list = []
        r = Replayer(ReplayOptions(**options), make_writer("jsonl", sink),
                     on_error=lambda e: errors.append(str(e)))
        raised = None
        try:
            r.run(files)
        except SinkError as exc:
            raised = str(exc)
        st = r.stats
        slot = r.fanout.slots[0]
        return (b"".join(sink.parts), errors, raised, slot.sent, st.records, st.sysmon,
                dict(st.included), st.duplicates)


@pytest.mark.parametrize("options", [{}, {"keep_duplicates": True, "non_sysmon": "pass"}],
                         ids=["defaults", "all-records"])
def test_three_loops_agree_in_process(corpus, monkeypatch, options):
    files = sorted(str(p) for p in (corpus / "evtx").rglob("*.evtx"))[:20]
    runs = {m: _run_replay(files, m, monkeypatch, **options)
            for m in ("compiled", "lists", "events")}
    assert runs["compiled"][0].count(b"\n") > 100
    assert runs["compiled"] == runs["lists"] == runs["events"]


@pytest.mark.parametrize("fail_at", [1, 7, 300])
def test_failing_output_accounted_the_same(corpus, monkeypatch, fail_at):
    """A write that fails (fatal policy: the replay stops with SinkError) leaves the same bytes
    written, the same message and the same ``sent`` count on every loop."""
    files = sorted(str(p) for p in (corpus / "evtx").rglob("*.evtx"))[:20]
    runs = {m: _run_replay(files, m, monkeypatch, fail_at=fail_at, keep_duplicates=True)
            for m in ("compiled", "lists", "events")}
    assert runs["compiled"][2] is not None  # it did fail
    assert runs["compiled"][3] == fail_at - 1
    assert runs["compiled"][:4] == runs["lists"][:4] == runs["events"][:4]


# --- damaged files ------------------------------------------------------------------------------

def _damaged_files(corpus: Path, tmp_path: Path) -> list[Path]:
    sys.path.insert(0, str(Path(__file__).parent))
    import test_sources as ts
    data = (corpus / ts.PANACHE).read_bytes()
    out = []
    for kind in ts.DAMAGE:
        p = tmp_path / "damaged" / f"{kind}.evtx"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(ts._damage(data, kind))
        out.append(p)
    return out


_DUMP = r'''
import json, sys
from sysmonx.sources.evtx import read_evtx, compiled_records
from sysmonx.sinks.jsonl import event_to_json
out = []
for path in sys.argv[1:]:
    items = []
    def on_error(e):
        items.append(["error", str(e), e.severity, e.offset])
    for ev in read_evtx(path, on_error):
        items.append(["event", event_to_json(ev).decode()])
    out.append([path, items])
print(json.dumps([out, compiled_records[0]]))
'''


def test_damaged_files_same_events_and_errors(corpus, tmp_path):
    """Each damage case read in both modes: the same events and the same error lines (message,
    severity, offset), interleaved in the same order."""
    files = [str(p) for p in _damaged_files(corpus, tmp_path)]
    res = {}
    for pure in (False, True):
        r = subprocess.run([sys.executable, "-c", _DUMP, *files], env=_env(pure),
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        res[pure] = json.loads(r.stdout)
    (compiled, n_compiled), (pure, n_pure) = res[False], res[True]
    assert n_pure == 0 and n_compiled > 1000
    assert compiled == pure
    errors = sum(1 for _, items in compiled for it in items if it[0] == "error")
    assert errors >= len(files) - 1  # every case but the clean-reading ones reports


def test_damaged_files_replay_identical(corpus, tmp_path):
    """The damaged files through ``sysmonx replay`` (duplicates dropped as by default): same
    output, same stderr, same exit code in both modes."""
    _damaged_files(corpus, tmp_path)
    res = {}
    for pure in (False, True):
        path = tmp_path / f"{pure}.jsonl"
        rc, err = _cli(["replay", str(tmp_path / "damaged"), "-f", "jsonl", "--no-progress",
                        "-o", str(path)], pure)
        res[pure] = (rc, err, path.read_bytes())
    assert res[False][2].count(b"\n") > 500
    assert "chunk" in res[False][1]
    assert res[False] == res[True]


# --- the C functions' contracts and memory ------------------------------------------------------

def test_evtx_batch_statuses(corpus):
    """Status codes of one chunk: 1 (limit reached), 2 (a record of the next chunk, handed back
    uncounted), 0 (end); counts, last id and the ids set as the Python loop keeps them."""
    from evtx import PyEvtxParser
    path = str(corpus / "evtx/sbousseaden__EVTX-ATTACK-SAMPLES/AutomatedTestingTools/"
               "PanacheSysmon_vs_AtomicRedTeam01.evtx")
    it = PyEvtxParser(path).records_json()
    seen: set = set()
    out: list = []
    st = sp.evtx_batch(it, 1, 44, seen, path, None, out, 10)
    assert st == (1, 10, 10, None) and seen == set(range(1, 11))
    assert [e.origin for e in out] == [(path, i) for i in range(1, 11)]
    st = sp.evtx_batch(it, 1, 44, seen, path, None, out, 1000)
    assert st[:3] == (2, 34, 44) and st[3]["event_record_id"] == 45
    assert len(out) == 44 and seen == set(range(1, 45))
    st = sp.evtx_batch(it, 45, 2**64 - 1, seen, path, None, out, 10**6)
    assert st == (0, 565 - 45, 565, None) and len(out) == 564  # 45 was handed back
    st = sp.evtx_batch(it, 1, 0, set(), path, None, [], 5)
    assert st == (0, 0, None, None)
    with pytest.raises(TypeError):
        sp.evtx_batch(it, 1, 0, [], path, None, [], 5)
    with pytest.raises(OverflowError):
        sp.evtx_batch(it, -1, 0, set(), path, None, [], 5)


def test_evtx_batch_error_statuses():
    """An iterator error (3), a conversion error (4, the record counted), a record the compiled
    converter does not take (5), a record that is not a dict (2): each handed back."""
    good = ('{"Event":{"System":{}}}')

    def records():
        yield {"event_record_id": 1, "data": "not json"}
        raise RuntimeError("chunk number 3 is broken")

    seen: set = set()
    it = records()
    st = sp.evtx_batch(it, 1, 5, seen, "p", None, [], 10)
    assert st[:3] == (5, 1, 1) and st[3] == (1, "not json") and seen == {1}
    st = sp.evtx_batch(it, 1, 5, seen, "p", None, [], 10)
    assert st[:3] == (3, 0, None) and isinstance(st[3], RuntimeError)
    it = iter([{"event_record_id": 2}, ["x"], {"event_record_id": 3, "data": good}])
    st = sp.evtx_batch(it, 1, 5, seen, "p", None, [], 10)
    assert st[:3] == (4, 1, 2) and st[3][0] == 2 and isinstance(st[3][1], KeyError)
    st = sp.evtx_batch(it, 1, 5, seen, "p", None, [], 10)
    assert st == (2, 0, None, ["x"])
    it = iter([{"event_record_id": 2**64}, {"event_record_id": -1}, {"event_record_id": 1.0}])
    for rid in (2**64, -1, 1.0):
        assert sp.evtx_batch(it, 0, 2**64 - 1, seen, "p", None, [], 10) == \
            (2, 0, None, {"event_record_id": rid})


def test_run_batch_stop_and_errors():
    """run_batch stops after the item during which a stop was requested, passes dropped and
    non-Event items as the Python loop does, and leaves the count of what it wrote in
    ``_sent_pending`` when a stage raises."""
    class P:
        _stop = False
        _sent_pending = 0

    p = P()
    written, delivered = [], []
    evs = [Event(1, {"n": str(i)}) for i in range(6)]

    def stage(item, emit):
        if item is evs[3]:
            p._stop = True
        return item is not evs[1]

    sent = sp.run_batch(evs + ["other"], (stage,), (None,), Event, written.append, None,
                        delivered.append, p)
    assert sent == 3 and written == [evs[0], evs[2], evs[3]] and delivered == []
    p._stop = False
    sent = sp.run_batch(evs[4:] + ["other"], (stage,), (None,), Event, None, None,
                        delivered.append, p)
    assert sent == 0 and delivered == [evs[4], evs[5], "other"]

    def boom(item, emit):
        if item is evs[2]:
            raise ValueError("stage failed")
        return True

    with pytest.raises(ValueError):
        sp.run_batch(evs, (boom,), (None,), Event, written.append, None, None, p)
    assert p._sent_pending == 2


def test_no_memory_kept_and_no_reference_errors(corpus, tmp_path):
    """The reader and loop over the damaged cases and corpus files, again and again, in a child
    under the debug allocator and ``-X dev``: reference errors abort it, and the memory traced
    after a warm-up must not grow."""
    files = [str(p) for p in _damaged_files(corpus, tmp_path)]
    files += sorted(str(p) for p in (corpus / "evtx").rglob("*.evtx"))[:6]
    script = tmp_path / "run.py"
    script.write_text(
        "import gc, io, sys, tracemalloc\n"
        "from sysmonx.pipeline import Replayer, ReplayOptions, make_writer\n"
        "files = sys.argv[1:]\n"
        "def once():\n"
        "    r = Replayer(ReplayOptions(non_sysmon='pass'), make_writer('jsonl', io.BytesIO()),\n"
        "                 on_error=lambda e: None)\n"
        "    r.run(files)\n"
        "for _ in range(3):\n"
        "    once()\n"
        "gc.collect()\n"
        "tracemalloc.start()\n"
        "once(); gc.collect()\n"
        "before = tracemalloc.get_traced_memory()[0]\n"
        "for _ in range(8):\n"
        "    once()\n"
        "gc.collect()\n"
        "print(tracemalloc.get_traced_memory()[0] - before)\n", encoding="utf-8")
    env = _env(False)
    env["PYTHONMALLOC"] = "debug"
    r = subprocess.run([sys.executable, "-X", "dev", str(script), *files], env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    grown = int(r.stdout.strip().splitlines()[-1])
    # one object leaked per record would be > 8 x ~5,000 records x 32 bytes = 1.2 MiB
    assert grown < 200_000, f"{grown} bytes kept after 8 rounds"


# --- the replay stages' compiled common case ------------------------------------------------------

def _clock_cases(corpus: Path) -> list:
    files = sorted(str(p) for p in (corpus / "evtx").rglob("*.evtx"))[:10]
    evs = [e for f in files for e in evtx_source.read_evtx(f, lambda e: None)]
    base = evs[0]
    t = base.time_created

    def ev(**kw) -> Event:
        e = Event(base.event_id, dict(base.data), provider=base.provider,
                  time_created=t, origin=base.origin)
        for k, v in kw.items():
            setattr(e, k, v)
        return e

    odd = [
        ev(data={}), ev(data={"UtcTime": None}), ev(data={"UtcTime": "short"}),
        ev(data={"UtcTime": t[:10] + " " + t[11:13] + ":00:00.000"}),
        ev(data={"UtcTime": f"{t[:10]} {(int(t[11:13]) + 5) % 24:02d}{t[13:23]}"}),
        ev(data={"UtcTime": "2019-04-18 1é:00:00"}), ev(data={"UtcTime": "2019-04-18 1€:00:00"}),
        ev(time_created="2019-04-18T16€"), ev(time_created=""),
        ev(origin=None), ev(origin=()), ev(origin=(base.origin[0] + "",) + base.origin[1:]),
        ev(origin=("other.evtx", 1)),
        ev(data=__import__("collections").OrderedDict(UtcTime="x")),
        ev(provider="Microsoft-Windows-Security-Auditing"), ev(event_id=True),
        ev(event_id=2**70), "not an event", None,
    ]
    return evs + odd + evs[:5]


@pytest.mark.parametrize("kind", ["clock", "count"])
def test_stage_fast_path_agrees_with_the_python_method(corpus, kind):
    """The compiled ``process`` of the clock check and of the filter without a config against
    the Python method on a twin stage: same answers, same warnings emitted, same state (path,
    check, counters) after every item, on corpus events and odd ones (no origin, another path
    object of the same name, missing/short/non-ASCII UtcTime, other hours, an OrderedDict,
    non-Sysmon providers, odd EventIDs, non-Events)."""
    from sysmonx.filtering.stage import FilterStage
    from sysmonx.stages.clock import ClockCheckStage
    make = ClockCheckStage if kind == "clock" else FilterStage
    fast, slow = make(), make()
    assert type(fast.process).__name__ == "StageFast"
    cases = _clock_cases(corpus)
    got_f, got_s = [], []
    for item in cases:
        rf = fast.process(item, got_f.append)
        rs = slow._process_py(item, got_s.append)
        assert rf == rs, item
        if kind == "clock":
            assert (fast._path, fast._check is None) == (slow._path, slow._check is None)
        else:
            assert fast.included == slow.included
    assert [str(x) for x in got_f] == [str(x) for x in got_s]
    if kind == "clock":
        assert got_f  # an hour-off UtcTime was warned about
    else:
        assert sum(fast.included.values()) > 500
