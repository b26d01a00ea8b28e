"""The raw path's System values and chunk changes, differential.

The compiled record loop keeps a record's System integers (EventRecordID, ProcessID, ThreadID)
as their digits and TimeCreated as its characters in the record's text, re-uses the Provider and
Security objects when their text repeats, and takes each chunk's first record itself after
Python has counted it for its chunk (``evtx_batch``'s ``pending``). These tests hold that to the
other ways of reading the same records, byte for byte and call for call:

* records of a real file whose System part is rewritten at random (seeded): escapes in
  SystemTime, Provider, Channel, Computer, UserID; integers of every length up to and beyond
  64 bits, negative, ``-0``, fractions, exponents, strings, ``null`` and booleans in the integer
  slots; Version/Level/Task/Opcode/Keywords in odd shapes; Provider and Security texts that
  repeat for a few records and then change; repeated EventRecordIDs (duplicates): the raw
  path, the Event path (raw path off) and the Python record loop give the same lines, the same
  error lines in the same places among them, and the same counters; and the pure-Python
  process (``SYSMONX_PURE_PYTHON=1``) gives the same;
* damaged files (every case of tests/test_sources.py: chunk changes next to damaged chunks,
  records recovered, lost): the same with the raw path on, off and through the Python loop;
* ``evtx_batch`` with a pending record: taken first, not counted again.

Skipped with a reason when the extension is not built.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sysmonx.core import native
from sysmonx.pipeline.replay import Replayer, ReplayOptions, make_writer
from sysmonx.sources import evtx as evtx_source
from sysmonx.stages.gate import SysmonGate

sp = native.speedups
needs_ext = pytest.mark.skipif(sp is None, reason=f"C extension not in use: "
                               f"{native.implementation()}")

PANACHE = ("evtx/sbousseaden__EVTX-ATTACK-SAMPLES/AutomatedTestingTools/"
           "PanacheSysmon_vs_AtomicRedTeam01.evtx")

# integer forms: plain (1 to 20 digits, the 18-digit limit of the digits kept), beyond 64 bits,
# negative, -0, fraction, exponent, string, null, booleans
INTS = ["0", "7", "4242", "999999999999999999", "1000000000000000000", "9223372036854775807",
        "9223372036854775808", "18446744073709551615", "18446744073709551616", "-1", "-0",
        "-9223372036854775808", "1.5", "2e3", "1E2", '"4242"', '"4\\u0032"', "null", "true",
        "false"]
SMALL = ["0", "4", "255", "256", "70000", "-3", '"5"', "null", "true", "1.0"]
KEYWORDS = ['"0x8000000000000000"', "0", '"0x80\\u00300"', "null", '"0x8000000000000000\\t"']
TIMES = [None, "\\u0032021-11-18T07:40:29.566033Z", "2021-11-18T07\\u003a40:29.566033Z",
         "2021-11-18T07:40:29.566Z", "2021-11-18T07:40:29.5660330Z", "2021-11-18 07:40:29.566033Z",
         "2021-11-18T07:40:29.566033", "2021-11-18T07:40:29.56603\\u0033Z",
         "2021-11-18T07:40:29.566033\\u005a", "2021-02-30T07:40:29.566033Z", "",
         "2021-11-18T07:40:29\\t566033Z", "2021-11-18T07:40:29.5660\\tZ",
         r'2021-11-18T07:40:29.566\\\"Z']
PROVIDERS = [None,
             '{"#attributes":{"Name":"Microsoft-Windows-Sysmon","Guid":"5770385f-c22a-43e0-bf4c-'
             '06f5698ffbd9"}}',
             '{"#attributes":{"Name":"Microsoft-Windows-Sysmon","Guid":"{5770385F-C22A-43E0-BF4C-'
             '06F5698FFBD9}"}}',
             '{"#attributes":{"Name":"Microsoft\\u002dWindows-Sysmon","Guid":"5770385F-C22A-43E0-'
             'BF4C-06F5698FFBD9"}}',
             '{"#attributes":{"Name":"Microsoft-Windows-Sysmon","Guid":null}}',
             '{"#attributes":{"Name":"Microsoft-Windows-Sysmon","Guid":"5770385F-C22A-43E0-BF4C-'
             '06F5698FFBD9","EventSourceName":"x"}}',
             '{"#attributes":{"Name":"Other-Provider","Guid":"00000000-0000-0000-0000-'
             '000000000001"}}',
             '{"#attributes":{"Name":"Microsoft-Windows-Sysmon"}}',
             '{"#attributes":{"Guid":"5770385F-C22A-43E0-BF4C-06F5698FFBD9","Name":"Microsoft-'
             'Windows-Sysmon"}}']
SECURITY = [None, "null", "{}", '{"#attributes":{"UserID":"S-1-5-\\u00318"}}',
            '{"#attributes":{"UserID":7}}', '{"#attributes":{"UserID":null}}',
            '{"#attributes":{"UserID":"S-1-5-21-1-2-3-1001"}}', '{"#attributes":{}}',
            '{"x":1}']
TEXTS = [None, '"PC-01\\\\cybercat"', '"PC-01.cybercat.local\\u00e9"', "12", '"a\\"b"',
         '"Microsoft-Windows-Sysmon\\/Operational"']


def _sub(text: str, pattern: str, value: str) -> str:
    return re.sub(pattern, lambda m: m.group(1) + value, text, count=1)


class _Mutator:
    """Rewrites a record's System part; the Provider and Security texts, once changed, are kept
    for a few records (so repeated texts, changed texts and texts seen before all occur)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.provider: Any = None
        self.security: Any = None
        self.keep = 0

    def __call__(self, text: str, rid: int) -> str:
        rng = self.rng
        if self.keep <= 0:
            self.provider, self.security = rng.choice(PROVIDERS), rng.choice(SECURITY)
            self.keep = rng.randrange(1, 6)
        self.keep -= 1
        if self.provider is not None:
            text = _sub(text, r'("Provider":)\{"#attributes":\{[^}]*\}\}', self.provider)
        if self.security is not None:
            text = _sub(text, r'("Security":)(\{"#attributes":\{[^}]*\}\}|null)', self.security)
        for key, forms in (("EventRecordID", INTS), ("ProcessID", INTS), ("ThreadID", INTS),
                           ("Version", SMALL), ("Level", SMALL), ("Task", SMALL),
                           ("Opcode", SMALL), ("Keywords", KEYWORDS)):
            if rng.random() < 0.15:
                text = _sub(text, rf'("{key}":)("[^"]*"|[^,}}]*)', rng.choice(forms))
        if rng.random() < 0.2:  # a repeated record id: the duplicate check's case
            text = _sub(text, r'("EventRecordID":)(\d+)', str(rid - rng.randrange(0, 3)))
        t = rng.choice(TIMES)
        if t is not None and rng.random() < 0.4:
            text = _sub(text, r'("SystemTime":)"[^"]*"', f'"{t}"')
        for key in ("Channel", "Computer"):
            v = rng.choice(TEXTS)
            if v is not None and rng.random() < 0.15:
                text = _sub(text, rf'("{key}":)("[^"]*"|[^,}}]*)', v)
        return text


def _patched_parser(m: Any, mutate: Any) -> None:
    """pyevtx-rs's records with their data text rewritten by ``mutate(text, rid)``."""
    real = evtx_source._open_parser

    class Wrapped:
        def __init__(self, parser: Any) -> None:
            self.parser = parser

        def records_json(self) -> Any:
            for rec in self.parser.records_json():
                yield {"event_record_id": rec["event_record_id"],
                       "timestamp": rec["timestamp"],
                       "data": mutate(rec["data"], rec["event_record_id"])}

    def open_parser(*args: Any, **kw: Any) -> Any:
        p = real(*args, **kw)
        return None if p is None else Wrapped(p)
    m.setattr(evtx_source, "_open_parser", open_parser)


class _Log:
    """A binary stream and an on_error in one list: lines and error lines in the order made."""

    def __init__(self) -> None:
        self.items: list = []

    def write(self, b: bytes) -> int:
        self.items.append(("line", bytes(b)))
        return len(b)

    def flush(self) -> None:
        pass

    def on_error(self, e: Any) -> None:
        self.items.append(("error", str(e), e.severity, e.offset))


def run(files: list[str], mode: str, seed: Any = None, fmt: str = "jsonl",
        **options: Any) -> tuple:
    """Replay ``files`` (with the System parts rewritten when ``seed`` is given: a seed of
    :class:`_Mutator`, or a ``mutate(text, rid)`` of its own) one way: ``raw`` (the raw path),
    ``event`` (raw path off: every record an Event), ``python`` (the Python record loop and
    converter), written as ``fmt``. Returns the lines and errors in order, the counters and
    the number of records the raw path wrote."""
    mp = pytest.MonkeyPatch()
    try:
        if seed is not None:
            _patched_parser(mp, seed if callable(seed) else _Mutator(seed))
        if mode != "raw":
            mp.setattr(SysmonGate, "raw_step", lambda self: None)
        if mode == "python":  # the Python record loop and converter
            mp.setattr(evtx_source, "_batch", None)
            mp.setattr(evtx_source, "_convert", evtx_source._convert_py)
        log = _Log()
        r = Replayer(ReplayOptions(**options), make_writer(fmt, log), on_error=log.on_error)
        for f in files:
            r.run_file(f)
        r.finish()
        st = r.stats
        return ((log.items, st.records, st.sysmon, st.non_sysmon, dict(st.included),
                 st.duplicates), r.pipeline.raw_records)
    finally:
        mp.undo()


def _mutated_files(corpus: Path) -> list[str]:
    files = sorted(str(p) for p in (corpus / "evtx").rglob("*.evtx"))
    return [str(corpus / PANACHE)] + files[:12]


def _same_three_ways(files, rewrite, keep):
    """Run ``files`` rewritten by ``rewrite`` (a seed or a function, as ``run`` takes) the raw,
    Event and Python ways; assert the Event way took no record raw and all three gave the same
    lines and errors; return the raw way's (results, records taken)."""
    raw, taken = run(files, "raw", rewrite, keep_duplicates=keep)
    event, none = run(files, "event", rewrite, keep_duplicates=keep)
    py, _ = run(files, "python", rewrite, keep_duplicates=keep)
    assert none == 0
    assert raw == event
    assert raw == py
    return raw, taken


@needs_ext
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("keep", [False, True], ids=["defaults", "keep-duplicates"])
def test_rewritten_system_values_same_every_way(corpus, seed, keep):
    files = _mutated_files(corpus)
    raw, taken = _same_three_ways(files, seed, keep)
    lines = [it for it in raw[0] if it[0] == "line"]
    errors = [it for it in raw[0] if it[0] == "error"]
    # the rewrites are taken by the raw path where they can be, and reach every other way
    assert taken > 200, taken
    assert len(lines) > taken
    assert errors  # the malformed forms (beyond 64 bits, ...) are reported as before
    if not keep:
        assert raw[5] > 0  # repeated record ids were dropped as duplicates


_PURE = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
import test_raw_path_system as t
res, taken = t.run(sys.argv[4:], "raw", int(sys.argv[2]), keep_duplicates=sys.argv[3] == "1")
items = [[it[0], it[1].decode() if it[0] == "line" else it[1]] + list(it[2:]) for it in res[0]]
print(json.dumps([items] + list(res[1:5]) + [res[5], taken]))
'''


@needs_ext
@pytest.mark.parametrize("keep", [False, True], ids=["defaults", "keep-duplicates"])
def test_rewritten_system_values_same_as_pure_python(corpus, keep):
    files = _mutated_files(corpus)
    out = {}
    for pure in ("", "1"):
        env = dict(os.environ, SYSMONX_PURE_PYTHON=pure,
                   PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                               os.environ.get("PYTHONPATH", "")]))
        r = subprocess.run([sys.executable, "-c", _PURE, str(Path(__file__).parent), "4",
                            "1" if keep else "0", *files], env=env, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        out[pure] = json.loads(r.stdout)
    assert out[""][-1] > 200 and out["1"][-1] == 0
    assert out[""][:-1] == out["1"][:-1]


def _damaged_files(corpus: Path, tmp_path: Path) -> list[str]:
    sys.path.insert(0, str(Path(__file__).parent))
    import test_sources as ts
    data = (corpus / ts.PANACHE).read_bytes()
    out = []
    for kind in ts.DAMAGE:
        p = tmp_path / f"{kind}.evtx"
        p.write_bytes(ts._damage(data, kind))
        out.append(str(p))
    return out


@needs_ext
@pytest.mark.parametrize("keep", [False, True], ids=["defaults", "keep-duplicates"])
def test_damaged_files_chunk_changes_same_every_way(corpus, tmp_path, keep):
    """Chunk changes next to damaged chunks (records recovered from the chunk left, lost ones
    reported, blank chunks skipped): each chunk's first record, now taken by the compiled loop
    after the chunk change, is written in the same place, with the same error lines around it."""
    files = _damaged_files(corpus, tmp_path)
    raw, taken = run(files, "raw", keep_duplicates=keep)
    event, _ = run(files, "event", keep_duplicates=keep)
    py, _ = run(files, "python", keep_duplicates=keep)
    assert raw == event == py
    errors = [it for it in raw[0] if it[0] == "error"]
    assert len(errors) >= len(files) - 2
    assert taken > (500 if not keep else 500 * (len(files) - 4)), taken


@needs_ext
def test_evtx_batch_pending_record(corpus):
    """The record handed back as status 2 (the next chunk's first), given back as ``pending``
    after the chunk change: taken first, ahead of the iterator's records, and not counted
    again (Python counted it); without a plan it is the first Event of the list."""
    from evtx import PyEvtxParser
    path = str(corpus / PANACHE)
    it = PyEvtxParser(path).records_json()
    seen: set = set()
    out: list = []
    st = sp.evtx_batch(it, 1, 44, seen, path, None, out, 1000)
    assert st[:3] == (2, 44, 44) and st[3]["event_record_id"] == 45
    pending = st[3]
    seen = {45}  # the chunk change: Python's count of the record
    out = []
    st = sp.evtx_batch(it, 45, 80, seen, path, None, out, 10, None, pending)
    assert st == (1, 9, 54, None)  # 10 events, 9 of them counted here
    assert [e.origin for e in out] == [(path, i) for i in range(45, 55)]
    assert seen == set(range(45, 55))
    with pytest.raises(TypeError):
        sp.evtx_batch(it, 45, 80, seen, path, None, [], 10, None, {"event_record_id": "x",
                                                                  "data": "{}"})
    with pytest.raises(TypeError):
        sp.evtx_batch(it, 45, 80, seen, path, None, [], 10, None, [pending])


@needs_ext
def test_replay_passes_driver_counts_every_pass(corpus):
    """bench/replay_passes.py (the instruction-count driver of docs/PERFORMANCE.md): N passes
    over a file in one process, every record written each pass (duplicates kept), all of them
    by the raw path here (Panache: Sysmon records only)."""
    root = Path(__file__).parents[1]
    r = subprocess.run([sys.executable, str(root / "bench" / "replay_passes.py"), "2", "none",
                        str(corpus / PANACHE)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr.split() == ["1", "1130", "1130"]


# Hand-picked System values (JSON text as it would stand in the record), one case per record in
# turn: integers the digits path must not take ("0012", "+5", signs, fractions, exponents,
# whitespace around them, beyond 64 bits, 18 and 19 digits), TimeCreated texts of every odd
# shape (short, long, markup and quote characters escaped and not, controls, DEL, Latin-1 and
# wider characters, not a string), Provider and Security texts that repeat, change only in an
# escape or keep their Name with another Guid, the Event's attributes in other shapes; records
# made Latin-1 or wider than Latin-1 by their Computer (the reader's other modes); texts cut
# right after an integer or inside SystemTime (invalid JSON).
ADV_INTS = ["0012", "+5", " 5", "5 ", "\\t7", "1e3", "1E+2", "5.0", "-1", "-0", "00", "0",
            "18446744073709551616", "18446744073709551615", "123456789012345678",
            "1234567890123456789", '"5"', "[5]", "{}", "true", "null", "7"]
ADV_TIMES = ['"2021-11-18T07:40:29.566033"', '"2021-11-18T07:40:29.5660330Z"',
             '"2021-11-18T07:40:29.<&\\"\\\\>\'Z"', '"2021-11-18T07:40:29.<&>\'x/Z"',
             '"2021-11-18T07:40:29.\\u0001\\u007f\\u0085\\u009f\\u2028Z"',
             '"2021-11-18T07:40:29.56603\x7fZ"', '"2021-11-18T07:40:29.56603\u00e9Z"',
             '"2021-11-18T07:40:29.56603\u20acZ"', '"2021-11-18T07:40:29.56603\\u00e9Z"',
             '"<2021-11-18T07:40:29.566033Z"', '"2021-11-18T07:40:29.5660\\"3Z"',
             "null", "5", '""', '"Z"', '"2021-11-18T07:40:29.Z"', ' "2021-11-18T07:40:29.566033Z"',
             '"2021-11-18T07:40:29.566033Z","SystemTime":"2021-11-18T07:40:29.566033Z"']
ADV_PROVIDERS = [
    '{"#attributes":{"Name":"Microsoft-Windows-Sysmon","Guid":"5770385F-C22A-43E0-BF4C-06F5698FFBD9"}}',
    '{"#attributes":{"Name":"Microsoft-Windows-Sysmo\\u006e","Guid":"5770385F-C22A-43E0-BF4C-06F5698FFBD9"}}',
    '{"#attributes":{"Name":"Microsoft-Windows-Sysmon","Guid":"5770385F-C22A-43E0-BF4C-06F5698FFBDA"}}',
    '{"#attributes":{"Name":"Microsoft-Windows-Sysmon","Guid":"5770385f-c22a-43e0-bf4c-06f5698ffbd9"}}',
    '{"#attributes": {"Name":"Microsoft-Windows-Sysmon","Guid":"5770385F-C22A-43E0-BF4C-06F5698FFBD9"}}',
    '{"#attributes":{"Name":"Microsoft-Windows-Sysmon","Name":"X","Guid":"5770385F-C22A-43E0-BF4C-06F5698FFBD9"}}',
    '{"#attributes":{"Name":"Microsoft-Windows-Sysmon\\"","Guid":"5770385F-C22A-43E0-BF4C-06F5698FFBD9"}}',
    '{"#attributes":{"Name":"Microsoft-Windows-Sysmon","Guid":"5770385F-C22A-43E0-BF4C-06F5698FFBD9<&>"}}',
    '{"#attributes":{"Name":"Microsoft-Windows-Sysmon\u00e9","Guid":"5770385F-C22A-43E0-BF4C-06F5698FFBD9"}}',
]
ADV_SECURITY = ['{"#attributes":{"UserID":"S-1-5-18"}}', '{"#attributes":{"UserID":"S-1-5-1\\u0038"}}',
                '{"#attributes":{"UserID":"S-1-5-18<&\\"x"}}', '{"#attributes":{"UserID":"S-1-5-18"},"x":1}',
                '{"#attributes":{"UserID":"S-1-5-18","UserID":"S-1-5-19"}}', "null", "{}"]
ADV_EVENT_ATTRS = ['{"xmlns":"http://schemas.microsoft.com/win/2004/08/events/event"}',
                   '{"xmlns":"http://schemas.microsoft.com/win/2004/08/events/event","x":1}',
                   '{"xmlns":"x"}', "null", '{"xmlns":"http://schemas.microsoft.com/win/2004/08/'
                   'events/event"},"#attributes":{"xmlns":"y"}']
ADV_COMPUTERS = [None, None, '"PC-\u00e9"', '"PC-\u20ac"', '"PC-\\u20ac"']


def _adversarial(text: str, rid: int) -> str:
    """Record ``rid``'s text with one of the hand-picked System values (by its number), a
    Provider and Security text kept for runs of records, and its Computer making it Latin-1 or
    wider for some records."""
    cases: list = ([("EventRecordID", v) for v in ADV_INTS] + [("ProcessID", v) for v in ADV_INTS]
                   + [("ThreadID", v) for v in ADV_INTS] + [("SystemTime", v) for v in ADV_TIMES]
                   + [("#attributes", v) for v in ADV_EVENT_ATTRS]
                   + [("cut", k) for k in ("EventRecordID", "ProcessID", "ThreadID",
                                           "SystemTime")])
    key, v = cases[rid % len(cases)]
    text = _sub(text, r'("Provider":)\{"#attributes":\{[^}]*\}\}',
                ADV_PROVIDERS[(rid // 5) % len(ADV_PROVIDERS)])
    text = _sub(text, r'("Security":)(\{"#attributes":\{[^}]*\}\}|null)',
                ADV_SECURITY[(rid // 3) % len(ADV_SECURITY)])
    computer = ADV_COMPUTERS[(rid // 7) % len(ADV_COMPUTERS)]
    if computer is not None:
        text = _sub(text, r'("Computer":)("[^"]*")', computer)
    if key == "cut":  # the text ends inside or right after the value
        m = re.search(rf'"{v}":"?[^,}}"]{{0,5}}', text)
        assert m is not None
        return text[:m.end()]
    if key == "#attributes":
        return _sub(text, r'("Event":\{"#attributes":)(\{[^}]*\})', v)
    return _sub(text, rf'("{key}":)("[^"]*"|[^,}}]*)', v)


@needs_ext
@pytest.mark.parametrize("keep", [False, True], ids=["defaults", "keep-duplicates"])
def test_adversarial_system_values_same_every_way(corpus, keep):
    files = [str(corpus / PANACHE)]
    raw, taken = _same_three_ways(files, _adversarial, keep)
    lines = [it[1] for it in raw[0] if it[0] == "line"]
    errors = [it for it in raw[0] if it[0] == "error"]
    assert taken > 50, taken  # 82 of Panache's 565 records
    assert len(errors) > 100  # the invalid forms ("0012", "+5", texts cut short, ...)
    # every line is one JSON object; no System value added a key or a value of its own
    for b in lines:
        obj = json.loads(b)
        assert list(obj["System"]) == ["Provider", "ProviderGuid", "Version", "Level", "Task",
                                       "Opcode", "Keywords", "TimeCreated", "EventRecordID",
                                       "ProcessID", "ThreadID", "Channel", "Computer",
                                       "UserID"], obj["System"]
    written = [json.loads(b)["System"] for b in lines]
    # the odd values that are valid JSON reach the output as values, not as text; a
    # TimeCreated is a time or the record is refused
    assert all(re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{9}Z",
                            s["TimeCreated"]) for s in written)
    assert any(s["ProcessID"] == 18446744073709551615 for s in written)
    assert any(s["ThreadID"] == "5" for s in written)
    assert any(s["EventRecordID"] == 123456789012345678 for s in written)


@needs_ext
def test_adversarial_system_values_xml_same_every_way(corpus):
    """The same records as XML (the Event path's writer: the integers made ints from their
    digits, TimeCreated from the text's characters when they are a time)."""
    files = [str(corpus / PANACHE)]
    event, _ = run(files, "event", _adversarial, fmt="xml")
    py, _ = run(files, "python", _adversarial, fmt="xml")
    assert event == py
    text = b"".join(it[1] for it in event[0] if it[0] == "line")
    assert b"<TimeCreated SystemTime='2021-11-18T07:40:29.5660330Z'/>" in text
    assert b"29.<" not in text and b"29.&lt;" not in text  # markup times are refused


_PURE_ADV = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
import test_raw_path_system as t
res, taken = t.run(sys.argv[3:], "raw", t._adversarial, fmt=sys.argv[2])
items = [[it[0], it[1].decode() if it[0] == "line" else it[1]] + list(it[2:]) for it in res[0]]
print(json.dumps([items] + list(res[1:5]) + [res[5], taken]))
'''


@needs_ext
@pytest.mark.parametrize("fmt", ["jsonl", "xml"])
def test_adversarial_system_values_same_as_pure_python(corpus, fmt):
    files = [str(corpus / PANACHE)]
    out = {}
    for pure in ("", "1"):
        env = dict(os.environ, SYSMONX_PURE_PYTHON=pure,
                   PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                               os.environ.get("PYTHONPATH", "")]))
        r = subprocess.run([sys.executable, "-c", _PURE_ADV, str(Path(__file__).parent), fmt,
                            *files], env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        out[pure] = json.loads(r.stdout)
    assert out["1"][-1] == 0
    assert out[""][:-1] == out["1"][:-1]


# A SystemTime in pyevtx-rs's outline (27 characters, '.' at 19, 'Z' at 26) whose other
# characters are not digits: markup that would close the XML attribute and add an element of
# its own, were it taken as the canonical time it looks like.
FORGED_TIME = "2'/><Forged/><T a='.123456Z"


def _forge_time(text: str, rid: int) -> str:
    if rid % 4:
        return text
    return _sub(text, r'("SystemTime":)"[^"]*"', json.dumps(FORGED_TIME))


@needs_ext
def test_time_created_text_cannot_forge_output(corpus):
    """A SystemTime that is no time is refused like any other non-time (the record reported
    undecodable) on every path, never written as a time: it cannot add an element to the XML
    (nor anything to the JSON line)."""
    files = [str(corpus / PANACHE)]
    assert len(FORGED_TIME) == 27
    for fmt in ("xml", "linux-xml", "jsonl"):
        event, _ = run(files, "event", _forge_time, fmt=fmt, keep_duplicates=True)
        py, _ = run(files, "python", _forge_time, fmt=fmt, keep_duplicates=True)
        assert event == py
        out = b"".join(it[1] for it in event[0] if it[0] == "line")
        assert b"Forged" not in out
        errors = [it for it in event[0] if it[0] == "error"]
        assert len(errors) == len(range(0, 566, 4)) - 1  # record ids 4, 8, ..., 564
        assert all("not an ISO 8601 time" in e[1] and e[3] % 4 == 0 for e in errors)
    raw, taken = run(files, "raw", _forge_time, keep_duplicates=True)
    event, _ = run(files, "event", _forge_time, keep_duplicates=True)
    assert raw == event and taken > 400


def test_undecodable_reason_names_what_the_record_lacks():
    """New-user report s15: a damaged template's record was reported as ``KeyError('Event')``
    alone; the reason now says in words which name the record lacks (the repr stays)."""
    from sysmonx.sources.evtx import _undecodable
    assert _undecodable(KeyError("Event")) == (
        "undecodable event record: no 'Event' element or value in the record (KeyError('Event'))")
    assert _undecodable(ValueError("bad")) == "undecodable event record: ValueError('bad')"
