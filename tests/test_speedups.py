"""The compiled replay hot paths (``sysmonx.core._speedups``) against the pure-Python ones.

The C functions handle the common record shapes and answer ``None`` for anything else, which the
Python functions then decide; these tests hold them to the same output, byte for byte: every
record of every corpus EVTX file (converted and rendered record by record, and ``sysmonx replay
-f jsonl`` of the whole corpus through the command line in both modes), hand-made JSON edge
cases (escapes, surrogates, control characters, number forms, duplicate keys, shapes the fast
path does not take) and hand-made Events for the renderer. Malformed input gives the error the
pure path gives, for every truncation of a real record. A last test runs the edge cases under
CPython's debug allocator and development mode (buffer overruns, reference errors).

Skipped with a reason when the extension is not built; ``test_extension_is_built_where_it_can_be``
fails instead when a C compiler and the Python headers are present (CI has both), so CI runs the
compiled paths.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
from builders import EVTX_SYSTEM

from sysmonx.core import native
from sysmonx.event import Event
from sysmonx.sinks import jsonl
from sysmonx.sources import evtx as evtx_source

sp = native.speedups
needs_ext = pytest.mark.skipif(sp is None, reason=f"C extension not in use: "
                               f"{native.implementation()}")

ORIGIN = ("file.evtx", 7)


def _slots(e: Event) -> tuple:
    return tuple(getattr(e, s) for s in Event.__slots__ if s != "_raw") + (tuple(e.data.items()),)


def _outcome(fn, *args) -> Any:
    """The result of fn(*args), or (exception type, message) when it raises."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - the exception itself is compared
        return (type(exc), str(exc))


def _same_conversion(text: str) -> Any:
    """Assert the compiled converter (with its fallback) gives what the pure one gives; return
    the pure outcome."""
    py = _outcome(evtx_source._convert_py, text, ORIGIN)
    c = _outcome(sp.convert, text, ORIGIN, None)
    if isinstance(py, Event):
        assert isinstance(c, Event), (text, c)
        # rendered from the record's text (EventData not made a dict yet), then as a dict
        assert sp.event_json(sp.convert(text, ORIGIN, None)) == jsonl._event_to_json_py(py), text
        assert _slots(c) == _slots(py), text
        assert sp.event_json(c) == jsonl._event_to_json_py(py), text
    else:
        assert c == py, text
    return py


# --- every corpus record -----------------------------------------------------------------------

def _corpus_records(corpus: Path) -> list[tuple[str, int, str]]:
    from evtx import PyEvtxParser
    out = []
    files = sorted((corpus / "evtx").rglob("*.evtx"))
    assert files, "no EVTX in the corpus"
    for f in files:
        it = PyEvtxParser(str(f)).records_json()
        for _ in range(100_000):
            try:
                for rec in it:
                    out.append((str(f), rec["event_record_id"], rec["data"]))
                break
            except (RuntimeError, OSError):  # damaged records: the reader's business
                continue
    return out


@needs_ext
def test_every_corpus_record_converts_and_renders_identically(corpus):
    records = _corpus_records(corpus)
    handled = lazy = 0
    for path, rid, text in records:
        origin = (path, rid)
        py = evtx_source._convert_py(text, origin)
        line = jsonl._event_to_json_py(py)
        raw = sp.convert_raw(text, origin)
        if raw is not None:
            handled += 1
            # [26a] EventData kept as the record text's slices: rendered from them, then the
            # dict made from them on first read of .data
            if hasattr(raw, "_raw"):
                lazy += 1
                assert sp.event_json_raw(raw) == line, (path, rid)
                assert hasattr(raw, "_raw"), (path, rid)  # rendering did not make the dict
            assert _slots(raw) == _slots(py), (path, rid)
            assert not hasattr(raw, "_raw"), (path, rid)
        c = sp.convert(text, origin, None)
        assert _slots(c) == _slots(py), (path, rid)
        assert sp.event_json_raw(c) in (line, None), (path, rid)
        assert sp.event_json(c) == line, (path, rid)
    assert len(records) > 1000
    # the corpus is the common shape: the C path itself must take (nearly) all of it
    assert handled >= 0.99 * len(records), (handled, len(records))
    assert lazy >= 0.95 * handled, (lazy, handled)


def _replay_cli(corpus: Path, out: Path, pure: bool, *extra: str) -> bytes:
    env = dict(os.environ)
    env.pop(native.PURE_ENV, None)
    if pure:
        env[native.PURE_ENV] = "1"
    args = [sys.executable, "-m", "sysmonx.cli", "replay", str(corpus / "evtx"),
            str(corpus / "json"), "-f", "jsonl", "-o", str(out), *extra]
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return out.read_bytes()


@needs_ext
@pytest.mark.parametrize("extra", [(), ("--non-sysmon", "pass"),
                                   ("--enrich", "--non-sysmon", "pass")],
                         ids=["sysmon", "all-records", "enriched"])
def test_replay_jsonl_is_byte_identical_in_both_modes(corpus, tmp_path, extra):
    compiled = _replay_cli(corpus, tmp_path / "c.jsonl", False, *extra)
    pure = _replay_cli(corpus, tmp_path / "p.jsonl", True, *extra)
    assert compiled.count(b"\n") > 1000
    assert compiled == pure


def test_version_names_the_active_path():
    env = dict(os.environ, **{native.PURE_ENV: "1"})
    r = subprocess.run([sys.executable, "-m", "sysmonx.cli", "--version"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.count("pure Python (SYSMONX_PURE_PYTHON is set)") == 2
    env.pop(native.PURE_ENV)
    r = subprocess.run([sys.executable, "-m", "sysmonx.cli", "--version"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert native.implementation() in r.stdout
    # the live sensor's extension is named too (a new user found only replay's path said)
    assert f"live sensor hot paths: {native.sensor_implementation()}" in r.stdout


def test_pure_mode_uses_the_python_functions():
    code = ("from sysmonx.sources import evtx; from sysmonx.sinks import jsonl; "
            "print(evtx._convert is evtx._convert_py, "
            "jsonl.event_to_json is jsonl._event_to_json_py)")
    env = dict(os.environ, **{native.PURE_ENV: "1"})
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.stdout.split() == ["True", "True"], r.stderr


def test_extension_is_built_where_it_can_be():
    """Where a C compiler and Python.h exist (CI), the install must have built the extension:
    otherwise CI would test the pure path twice and never the compiled one."""
    if os.environ.get(native.PURE_ENV, "") not in ("", "0"):
        pytest.skip(f"{native.PURE_ENV} is set")
    compiler = shutil.which("cc") or shutil.which("gcc")
    header = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not compiler or not header.is_file():
        pytest.skip("no C compiler or no Python headers here: the pure path is expected")
    assert sp is not None, native.implementation()
    assert evtx_source._convert is sp.convert
    assert jsonl.event_to_json is sp.event_json


# --- hand-made records ---------------------------------------------------------------------------

SYSTEM = EVTX_SYSTEM
DATA = ('"EventData":{"RuleName":"-","UtcTime":"2019-04-18 16:55:37.075","ProcessGuid":'
        '"365ABB72-AF09-5CB8-0000-0010E0AF0A00","ProcessId":2088,"Image":"C:\\\\a.exe",'
        '"CommandLine":"a b","ParentProcessGuid":"{365abb72-0000-0000-0000-000000000000}"}')


def rec(system: str = SYSTEM, data: str = DATA, head: str = '{"Event":{"#attributes":'
        '{"xmlns":"http://schemas.microsoft.com/win/2004/08/events/event"},', tail: str = "}}") -> str:
    return head + system + ("," + data if data else "") + tail


def with_data(fields: str, system: str = SYSTEM) -> str:
    return rec(system, '"EventData":{' + fields + "}")


def sys_with(old: str, new: str) -> str:
    assert old in SYSTEM
    return SYSTEM.replace(old, new)


NON_SYSMON = sys_with('"Name":"Microsoft-Windows-Sysmon"', '"Name":"Microsoft-Windows-Security"')

#: (id, text, whether the C path itself must take it)
CASES = [
    ("base", rec(), True),
    ("escapes", with_data(r'"CommandLine":"q\"b\\s\/d\b\f\n\r\t\u0041\u00e9\u20AC\u0000\u001f"'),
     True),
    ("surrogate-pair", with_data(r'"CommandLine":"x\ud83d\ude00y\uD83D\uDE00"'), True),
    ("lone-high", with_data(r'"CommandLine":"x\ud800"'), False),
    ("lone-high-then-char", with_data(r'"CommandLine":"\ud800\u0041"'), False),
    ("lone-low", with_data(r'"CommandLine":"\udc00"'), False),
    ("lone-high-in-key", with_data(r'"\ud800":"x"'), False),
    ("lone-high-in-skipped", rec(sys_with('"Correlation":null', r'"Correlation":"\udbff"')),
     False),
    ("bad-escape", with_data(r'"CommandLine":"\x41"'), False),
    ("short-u-escape", with_data(r'"CommandLine":"\u00"'), False),
    ("raw-control-char", with_data('"CommandLine":"a\tb"'), False),
    ("raw-c1-nonascii-latin1", with_data('"CommandLine":"\u0085\u009f é ÿ"'), True),
    ("raw-bmp", with_data('"CommandLine":"€ \u2028 中文"'), True),
    ("raw-astral", with_data('"CommandLine":"😀 \U0010ffff"'), True),
    ("latin1-with-bmp-escape", with_data(r'"CommandLine":"é\u20ac\ud83d\ude00 ü"'), True),
    ("long-escaped", with_data('"CommandLine":"' + "é\\n" * 2000 + '"'), True),
    # [20b] strings built directly: ASCII values of Latin-1 and of UTF-8 text (the str must be
    # the canonical ASCII one), escapes without \u in 1-byte text (ASCII and Latin-1 result)
    ("latin1-text-ascii-values", with_data(r'"Product":"é","Image":"C:\\W\\x.exe","A":"\"q\"",'
                                           r'"B":"\/\b\f\n\r\t","C":"plain","D":""'), True),
    ("latin1-text-escaped-latin1", with_data(r'"Product":"é\\ÿ\n\u0041","B":"\\","C":"ÿ\""'),
     True),
    ("utf8-text-ascii-values", with_data(r'"Product":"€","Image":"C:\\W\\x.exe","C":"plain",'
                                         r'"D":"é\\","E":"' + "a" * 70 + '"'), True),
    ("ascii-text-escapes", with_data(r'"Image":"C:\\W\\x.exe","B":"\"\/\b\f\n\r\t\\",'
                                     r'"C":"\u0041\\"'), True),
    ("long-key", with_data('"' + "K" * 300 + '":"v","' + "é" * 60 + '":"w"'), True),
    ("escaped-key", with_data(r'"Comm\u0061ndLine":"x","Imag\u00e9":"y"'), True),
    ("ints", with_data('"A":0,"B":-1,"C":18446744073709551615,"D":-9223372036854775808,'
                       '"E":9223372036854775807'), True),
    ("int-beyond-u64", with_data('"A":18446744073709551616'), False),
    ("int-beyond-i64", with_data('"A":-9223372036854775809'), False),
    ("minus-zero", with_data('"A":-0'), False),
    ("leading-zero", with_data('"A":007'), False),
    ("floats", with_data('"A":1.5,"B":1e5,"C":1E+2,"D":-0.0'), False),
    ("bad-float", with_data('"A":1.'), False),
    ("literals", with_data('"A":null,"B":true,"C":false'), True),
    ("bad-literal", with_data('"A":nul'), False),
    ("array-value", with_data('"A":["x",1,null]'), False),
    ("object-value", with_data('"A":{"b":"c"}'), False),
    ("complex-data", with_data('"ComplexData":{"#attributes":{"Name":"X"},"#text":"v"}'), False),
    ("duplicate-data-key", with_data('"A":"1","B":"2","A":"3"'), False),
    ("duplicate-system-key", rec(sys_with('"Level":4', '"Level":4,"Level":5')), False),
    ("duplicate-event", rec() [:-1] + ',"Event":{}}', False),
    ("duplicate-eventdata", rec(data=DATA + "," + DATA), False),
    ("data-list", rec(data='"EventData":{"Data":["a","b"]}'), False),
    ("data-text-list", rec(data='"EventData":{"Data":{"#text":["a","b"]}}'), False),
    ("data-and-named", with_data('"A":"x","Data":"y"'), False),
    ("eventdata-null", rec(data='"EventData":null'), False),
    ("eventdata-string", rec(data='"EventData":"x"'), False),
    ("eventdata-missing", rec(data=""), False),
    ("userdata", rec(data='"UserData":{"Wrapper":{"A":"1","B":{"C":"2"}}}'), False),
    ("empty-eventdata", with_data(""), True),
    ("reserved-names", with_data('"A":"1","System":"s","EventID":"e","ExtraData":"x",'
                                 '"Enrichment":"n","#attributes":"a","#text":"t"'), True),
    ("enrichment-names", with_data('"A":"1","GrandparentImage":"g","Tty":"t"'), True),
    ("no-execution", rec(sys_with('"Execution":{"#attributes":{"ProcessID":3192,'
                                  '"ThreadID":3288}},', '')), False),
    ("execution-partial", rec(sys_with('"ThreadID":3288', '"Other":1')), False),
    ("execution-strings", rec(sys_with('"ProcessID":3192', '"ProcessID":"3192"')), True),
    ("no-security", rec(sys_with(',"Security":{"#attributes":{"UserID":"S-1-5-18"}}', '')),
     False),
    ("security-null", rec(sys_with('{"#attributes":{"UserID":"S-1-5-18"}}', 'null')), True),
    ("security-empty", rec(sys_with('{"#attributes":{"UserID":"S-1-5-18"}}', '{}')), True),
    ("security-no-userid", rec(sys_with('{"UserID":"S-1-5-18"}', '{}')), False),
    ("security-other-key", rec(sys_with('{"#attributes":{"UserID":"S-1-5-18"}}', '{"x":1}')),
     False),
    ("security-string", rec(sys_with('{"#attributes":{"UserID":"S-1-5-18"}}', '""')), False),
    ("security-extra", rec(sys_with('{"#attributes":{"UserID":"S-1-5-18"}}',
                                    '{"#attributes":{"UserID":"S-1","X":2},"y":[1]}')), True),
    ("no-timecreated", rec(sys_with('"TimeCreated":{"#attributes":{"SystemTime":'
                                    '"2019-04-18T16:55:37.125139Z"}},', '')), False),
    ("time-seconds", rec(sys_with('37.125139Z', '37Z')), False),
    ("time-7-digits", rec(sys_with('2019-04-18T16:55:37.125139Z', '2019-04-18 16:55:37.1251397')),
     False),
    ("time-garbage", rec(sys_with('2019-04-18T16:55:37.125139Z', 'garbage-garbage-garbage-gar')),
     False),
    ("time-27-nonascii", rec(sys_with('2019-04-18T16:55:37.125139Z',
                                      '2019-04-18T16:55:37.12513éZ')), False),
    ("no-guid", rec(sys_with(',"Guid":"5770385F-C22A-43E0-BF4C-06F5698FFBD9"', '')), False),
    ("guid-null", rec(sys_with('"5770385F-C22A-43E0-BF4C-06F5698FFBD9"', 'null')), True),
    ("guid-empty", rec(sys_with('"5770385F-C22A-43E0-BF4C-06F5698FFBD9"', '""')), True),
    ("guid-braced", rec(sys_with('"5770385F-C22A-43E0-BF4C-06F5698FFBD9"', '"{AB-CD}"')), True),
    ("guid-nonascii", rec(sys_with('"5770385F-C22A-43E0-BF4C-06F5698FFBD9"', '"ÀBÇ-İ"')), True),
    ("guid-int", rec(sys_with('"5770385F-C22A-43E0-BF4C-06F5698FFBD9"', '5')), False),
    ("no-eventid", rec(sys_with('"EventID":1,', '')), False),
    ("eventid-qualifiers", rec(sys_with('"EventID":1', '"EventID":{"#attributes":'
                                        '{"Qualifiers":16384},"#text":1}')), False),
    ("eventid-string", rec(sys_with('"EventID":1', '"EventID":"1"')), False),
    ("eventid-bool", rec(sys_with('"EventID":1', '"EventID":true')), False),
    ("eventid-unknown-sysmon", rec(sys_with('"EventID":1', '"EventID":999')), False),
    ("provider-name-int", rec(sys_with('"Name":"Microsoft-Windows-Sysmon"', '"Name":7')), False),
    ("provider-no-attributes", rec(sys_with('{"#attributes":{"Name":"Microsoft-Windows-Sysmon",'
                                            '"Guid":"5770385F-C22A-43E0-BF4C-06F5698FFBD9"}}',
                                            '"x"')), False),
    ("version-float", rec(sys_with('"Version":5', '"Version":5.0')), False),
    ("version-null", rec(sys_with('"Version":5', '"Version":null')), True),
    ("no-version", rec(sys_with('"Version":5,', '')), False),
    ("system-not-object", rec('"System":[]'), False),
    ("sysmon-guid-fields", with_data('"ProcessGuid":"ABCDEF01-0000-0000-0000-00000000000A",'
                                     '"ParentProcessGuid":"","SourceProcessGUID":"x",'
                                     '"TargetProcessGUID":"ÀB"'), True),
    ("sysmon-guid-int", with_data('"ProcessGuid":12'), True),
    ("non-sysmon-guids", with_data('"G":"ABCDEF01-0000-0000-0000-00000000000A","L":'
                                   '"abcdef01-0000-0000-0000-00000000000a","S":'
                                   '"ABCDEF01-0000-0000-0000-00000000000AX","N":123',
                                   NON_SYSMON), True),
    ("whitespace", json.dumps(json.loads(rec()), indent=4) + "\n\t \r", True),
    ("trailing-garbage", rec() + " x", False),
    ("trailing-comma", rec()[:-2] + ",}}", False),
    ("missing-colon", rec().replace('"Level":4', '"Level" 4'), False),
    ("deep-skipped", rec(sys_with('"Correlation":null', '"Correlation":' + "[" * 5000 + "]" * 5000)),
     False),
    ("deep-ok", rec(sys_with('"Correlation":null', '"Correlation":' + "[" * 100 + "]" * 100)),
     True),
    ("empty-text", "", False),
    ("top-array", "[]", False),
    ("top-string", '"x"', False),
    ("top-empty", "{}", False),
    ("event-null", '{"Event":null}', False),
    ("event-array", '{"Event":[]}', False),
    ("other-top-keys", '{"A":[1,{"b":null}],' + rec()[1:], True),
    # [26a] fields kept as slices of the text: the most a record keeps that way, one more (the
    # Python path), a duplicate only an escape tells apart, DEL (plain ASCII, not escaped)
    ("fields-256", with_data(",".join(f'"F{i}":"v{i}"' for i in range(256))), True),
    ("fields-257", with_data(",".join(f'"F{i}":"v{i}"' for i in range(257))), False),
    ("duplicate-escaped-key", with_data(r'"AB":"1","A\u0042":"2"'), False),
    ("del-char", with_data('"A":"a\u007fb","B":"cd"'), True),
    # [28c] escaped ASCII values kept as their escaped text when every escape is the renderer's
    # own (\" \\ \b \f \n \r \t), a str otherwise (\/, \u, non-ASCII); the str made from that
    # text on demand (data, GUID fields, UtcTime for the clock check, RuleName)
    ("canonical-escapes", with_data(r'"Image":"C:\\W\\x.exe","A":"q\"b","B":"\b\f\n\r\t",'
                                    r'"C":"\\\\srv\\s","D":"a\/b","E":"\u0041\\","F":"é\\",'
                                    r'"G":"\\","H":"x\\\"y"'), True),
    ("escaped-sysmon-guid-fields", with_data(r'"ProcessGuid":"A\\B","ParentProcessGuid":'
                                             r'"{A\\B}","SourceProcessGUID":"\\"'), True),
    ("escaped-non-sysmon-guids", with_data(r'"G":"ABCDEF01\\0000","H":"\\ABCDEF01-0000-0000-'
                                           r'0000-00000000000A"', NON_SYSMON), True),
    ("escaped-utctime-rulename", with_data(r'"RuleName":"a\\b","UtcTime":"2019-04-18 16:55\n"'),
     True),
]


@needs_ext
def test_repeated_system_values_and_keys_render_as_each_record_says():
    """[28c] The renderer copies the System text it wrote last for the same value objects and
    keeps what it learnt of each EventData key; records that change one System value or a key
    at a time, back and forth, still render as the pure renderer does (values of another
    object but equal text, other values, the reserved and enrichment names after plain ones)."""
    variants = [
        rec(),
        rec(sys_with('"Level":4', '"Level":5')),
        rec(sys_with('"Keywords":"0x8000000000000000"', '"Keywords":"0x8000000000000001"')),
        rec(sys_with('"Computer":', '"Computer":"x\\\\y","X":')),
        rec(sys_with('{"#attributes":{"UserID":"S-1-5-18"}}', 'null')),
        rec(sys_with('"Channel":', '"Channel":"Other","Y":')),
        rec(sys_with('"Name":"Microsoft-Windows-Sysmon"', '"Name":"Microsoft-Windows-Security"')),
        with_data('"A":"1","System":"s","B":"2"'),
        with_data('"A":"1","GrandparentImage":"g"'),
        with_data('"A":"1","Tty":"t","B":2'),
        with_data(r'"A":"x\\y","B":"q\"r","C":-7'),
    ]
    for text in variants + variants[::-1] + variants:
        _same_conversion(text)


@needs_ext
@pytest.mark.parametrize("text,handled", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_edge_case_records(text, handled):
    _same_conversion(text)
    raw = sp.convert_raw(text, ORIGIN)
    assert (raw is not None) == handled


@needs_ext
def test_lone_surrogate_in_the_text_itself():
    # not from pyevtx-rs (its text is valid UTF-8), but a str can hold one: orjson decides
    text = with_data('"CommandLine":"\ud800"')
    assert sp.convert_raw(text, ORIGIN) is None
    _same_conversion(text)


@needs_ext
def test_every_truncation_of_a_record_fails_as_the_pure_path_does():
    text = with_data(r'"CommandLine":"é\u20ac\ud83d\ude00 \"q\"","N":-12,"B":true,"Z":null')
    for i in range(len(text)):
        cut = text[:i]
        assert sp.convert_raw(cut, ORIGIN) is None
        _same_conversion(cut)


@needs_ext
def test_provider_guids_share_the_python_cache():
    text = rec(sys_with('"5770385F-C22A-43E0-BF4C-06F5698FFBD9"', '"AAAA-BBBB-Ünique-1"'))
    evtx_source._provider_guids.pop("AAAA-BBBB-Ünique-1", None)
    e = sp.convert_raw(text, ORIGIN)
    assert e.provider_guid == "{aaaa-bbbb-ünique-1}"
    assert evtx_source._provider_guids["AAAA-BBBB-Ünique-1"] == "{aaaa-bbbb-ünique-1}"


# --- hand-made events for the renderer ----------------------------------------------------------

ALL_CHARS = "".join(chr(c) for c in range(0x200)) + "\u2028\u2029€中\U0001f600\U0010ffff"

EVENTS = [
    ("plain", Event(1, {"A": "x", "B": ""}, time_created="2019-04-18T16:55:37.125139000Z")),
    ("all-low-chars", Event(1, {"A": ALL_CHARS, ALL_CHARS: "k"})),
    ("ascii-runs", Event(1, {"A": "abcdefgh" * 5 + '"' + "abcdefghijklmnop\\" * 3 + "\x7f\x1f"})),
    ("ucs2", Event(1, {"A": "é€\x85"})),
    ("ucs4", Event(1, {"A": "é€\x85\U0001f600"})),
    ("lone-surrogate", Event(1, {"A": "x\ud800y"})),
    ("lone-surrogate-key", Event(1, {"\udc00": "x"})),
    ("script", Event(1, {"A": "</script><!--"})),
    ("int-values", Event(1, {"A": 5, "B": -1, "C": 2**63 - 1, "D": -2**63})),
    ("u64-value", Event(1, {"A": 2**64 - 1})),
    ("huge-int", Event(1, {"A": 2**64})),
    ("bool-none", Event(1, {"A": True, "B": False, "C": None})),
    ("float", Event(1, {"A": 1.5})),
    ("list", Event(1, {"A": ["x"]})),
    ("int-key", Event(1, {5: "x"})),
    ("reserved-middle", Event(1, {"a": "1", "System": "s", "b": "2", "EventID": "e"})),
    ("reserved-first", Event(1, {"ExtraData": "x", "a": "1"})),
    ("enrichment-key", Event(1, {"a": "1", "Enrichment": "x"})),
    ("enrichment", Event(1, {"Image": "i", "GrandparentImage": "g", "AncestorImages": "a|b",
                             "Tty": "pts/1"})),
    ("enrichment-own-field", Event(210, {"Tty": "pts/0", "GrandparentImage": "g"})),
    ("enrichment-reserved", Event(1, {"System": "s", "GrandparentImage": "g", "x": "1"})),
    ("time-empty", Event(1, {}, time_created="")),
    ("time-noncanonical", Event(1, {}, time_created="2019-04-18 16:55:37.12")),
    ("time-offset", Event(1, {}, time_created="2019-04-18T16:55:37+02:00")),
    ("time-garbage", Event(1, {}, time_created="garbage")),
    ("time-none", Event(1, {}, time_created=None)),  # type: ignore[arg-type]
    ("nulls", Event(1, {}, provider_guid=None, keywords=None, opcode=None, user_id=None)),
    ("big-record-id", Event(1, {}, record_id=2**64 - 1, process_id=2**70)),
    ("eventid-bool", Event(True, {})),  # type: ignore[arg-type]
    ("eventid-big", Event(2**65, {})),
    ("data-subclass", Event(1, __import__("collections").OrderedDict(A="x"))),
    ("empty-data", Event(1, {})),
    ("long", Event(1, {"A": "x" * 100_000, "B": "é" * 50_000, "C": "\x01" * 10_000})),
    ("linux", Event(1, {"A": "x"}, provider="Linux-Sysmon", channel="Linux-Sysmon/Operational",
                    user_id="0")),
]


class _SubEvent(Event):
    __slots__ = ()


@needs_ext
@pytest.mark.parametrize("event", [e for _, e in EVENTS], ids=[n for n, _ in EVENTS])
def test_edge_case_events_render_identically(event):
    py = _outcome(jsonl._event_to_json_py, event)
    c = _outcome(sp.event_json, event)
    assert c == py


@needs_ext
def test_renderer_takes_the_common_events_itself():
    for name, event in EVENTS:
        raw = sp.event_json_raw(event)
        if name in ("plain", "all-low-chars", "ascii-runs", "ucs2", "ucs4", "script",
                    "int-values", "bool-none", "reserved-middle", "enrichment", "time-empty",
                    "time-noncanonical", "nulls", "empty-data", "long", "linux"):
            assert raw == jsonl._event_to_json_py(event), name
        if name in ("lone-surrogate", "lone-surrogate-key", "huge-int", "float", "list",
                    "int-key", "data-subclass", "u64-value"):
            assert raw is None, name
    sub = _SubEvent(1, {"A": "x"})
    assert sp.event_json_raw(sub) is None
    assert sp.event_json(sub) == jsonl._event_to_json_py(sub)


@needs_ext
def test_unset_slot_fails_as_the_pure_path_does():
    e = Event.__new__(Event)
    e.event_id, e.data = 1, {"A": "x"}
    assert _outcome(sp.event_json, e) == _outcome(jsonl._event_to_json_py, e)


# --- memory checks -------------------------------------------------------------------------------

@needs_ext
def test_edge_cases_under_the_debug_allocator(tmp_path):
    """The record and event edge cases again in a child with ``PYTHONMALLOC=debug`` and
    ``-X dev``: buffer overruns and reference-count errors abort it."""
    script = tmp_path / "run.py"
    script.write_text(
        "import sys, gc\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import test_speedups as t\n"
        "for _ in range(3):\n"
        "    for _, text, _ in t.CASES:\n"
        "        t._same_conversion(text)\n"
        "    for _, e in t.EVENTS:\n"
        "        assert t._outcome(t.sp.event_json, e) == t._outcome(t.jsonl._event_to_json_py, e)\n"
        "    text = t.CASES[1][1]\n"
        "    for i in range(len(text)):\n"
        "        t.sp.convert_raw(text[:i], t.ORIGIN)\n"
        "    gc.collect()\n"
        "print('ok')\n", encoding="utf-8")
    env = dict(os.environ, PYTHONMALLOC="debug")
    env.pop(native.PURE_ENV, None)
    r = subprocess.run([sys.executable, "-X", "dev", str(script)], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


@needs_ext
def test_no_memory_kept_across_calls(kept_bytes):
    """Converting and rendering every edge case (fallbacks and errors included) again and again
    keeps no memory: no reference leaked on any path (tracemalloc sees every allocation)."""
    def once() -> None:
        for _, text, _ in CASES:
            sp.convert_raw(text, ORIGIN)
            _outcome(sp.convert, text, ORIGIN, None)
        for _, e in EVENTS:
            sp.event_json_raw(e)
            _outcome(sp.event_json, e)

    # caches (keys, provider GUIDs, line-number tables) filled first
    grown = kept_bytes(once, 200, warm=20)
    # one object leaked per call would be >= 200 x ~130 calls x 32 bytes = 800 KiB; what the
    # interpreter itself keeps now and then (freelists, caches) stays below a few KiB
    assert grown < 65536, f"{grown} bytes kept after 200 rounds"
