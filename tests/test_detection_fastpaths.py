"""The cold Sigma replay path: an alert's key fields in C (``_speedups.alert_fields``, the same
dict as ``DetectionStage._fields_py``) and an EVTX read without importing every registered
source (``sources.detect._reader``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sysmonx.core import native
from sysmonx.detection import stage as stage_mod
from sysmonx.detection.stage import DetectionOptions, DetectionStage

sp = native.speedups
needs_ext = pytest.mark.skipif(sp is None, reason=f"C extension not in use: "
                               f"{native.implementation()}")

ROOT = Path(__file__).resolve().parents[1]
RULES = "sigma/sigmahq_rules_sysmon_categories.tar.gz"


def _outcome(fn, *args):
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - the exception itself is compared
        return (type(exc), str(exc))


class _Str(str):
    def __len__(self) -> int:  # a subclass: len() and slicing are its own
        return 3


class _Dict(dict):
    def get(self, key, default=None):  # a subclass with its own get: left to Python
        return "from get"


DATA = {"Image": "C:\\a.exe", "CommandLine": "x" * 10, "Empty": "", "Null": None,
        "Astral": "\U0001F600" * 6, "Accents": "é" * 7, "Sub": _Str("abcdef"),
        "List": [1, 2, 3, 4, 5], "Int": 7}
CASES = [
    (DATA, ("Image", "CommandLine", "Empty", "Null", "Missing", "Astral", "Accents"), 5),
    (DATA, ("CommandLine",), 10),   # exactly the limit: kept whole
    (DATA, ("CommandLine",), 9),    # one over: cut, ellipsis appended
    (DATA, ("CommandLine", "Image"), 0),
    (DATA, ("Sub",), 2),            # str subclass: its own len
    (DATA, ("List",), 2),           # a list: cut, then list + str raises TypeError
    (DATA, ("List",), 9),
    (DATA, ("Int",), 4),            # len(int) raises TypeError
    (DATA, (), 4),
    ({}, ("Image",), 4),
]


@needs_ext
@pytest.mark.parametrize("data,names,limit", CASES)
def test_alert_fields_equal_the_python_expression(data, names, limit):
    py = _outcome(DetectionStage._fields_py, None, data, names, limit)
    c = _outcome(sp.alert_fields, data, names, limit)
    assert c == py
    if isinstance(py, dict):
        assert list(c) == list(py)  # the same order: the JSON line's bytes depend on it


@needs_ext
@pytest.mark.parametrize("data,names,limit", [
    (_Dict(DATA), ("Image",), 4),   # a dict subclass
    (DATA, ["Image"], 4),           # names not a tuple
    (DATA, ("Image",), -1),         # a negative limit (slices from the end in Python)
    (DATA, ("Image",), 2**70),      # beyond a C integer
    (DATA, ("Image",), 4.0),        # not an int
])
def test_alert_fields_leaves_other_types_to_python(data, names, limit):
    assert sp.alert_fields(data, names, limit) is None


@needs_ext
def test_alert_fields_keeps_no_memory(kept_bytes):
    def once() -> None:
        for data, names, limit in CASES:
            _outcome(sp.alert_fields, data, names, limit)

    grown = kept_bytes(once, 500, warm=20)
    assert grown < 65536, f"{grown} bytes kept after 500 rounds"


def _alert_lines(corpus: Path, monkeypatch, picker) -> list[bytes]:
    from sysmonx.sources import iter_input_files, open_source
    monkeypatch.setattr(stage_mod, "_alert_fields", picker)
    monkeypatch.setattr(stage_mod, "_sigma_alerts", None)  # it has its own (C) picker
    st = DetectionStage.from_paths([corpus / RULES], DetectionOptions(max_field_chars=40))
    out = []
    for f in iter_input_files([str(corpus / "evtx"), str(corpus / "json")]):
        for ev in open_source(f, lambda e: None):
            out.extend(a.to_json() for a in st.process(ev))
    out.extend(a.to_json() for a in st.finish())
    return out


@needs_ext
def test_corpus_alerts_are_byte_identical_with_the_compiled_picker(corpus, monkeypatch):
    """Every corpus alert line (fields cut at 40 characters, so the cut is exercised) is the
    same with the C picker and with the Python expression."""
    c = _alert_lines(corpus, monkeypatch, sp.alert_fields)
    py = _alert_lines(corpus, monkeypatch, None)
    assert len(py) > 300
    assert any("…".encode() in line for line in py)
    assert c == py


def test_reading_an_evtx_imports_no_other_source(corpus):
    """``open_source`` of an EVTX file (and ``iter_input_files`` of a file named explicitly)
    imports the EVTX reader alone, not every registered source (the live sensor, the Windows
    sources, asyncio, sqlite3, lxml: ~0.1 s of a cold replay); the records are all read."""
    evtx = sorted((corpus / "evtx").rglob("*.evtx"))[0]
    code = (
        "import sys, json\n"
        f"sys.path.insert(0, {str(ROOT / 'src')!r})\n"
        "from sysmonx.sources import iter_input_files, open_source\n"
        "n = sum(1 for f in iter_input_files([sys.argv[1]]) for _ in open_source(f, print))\n"
        "mods = [m for m in ('sysmonx.sensor', 'sysmonx.windows.sources', 'sysmonx.sources.xmlfile',"
        " 'sysmonx.sources.sqlitestore', 'asyncio', 'sqlite3', 'lxml') if m in sys.modules]\n"
        "print(json.dumps([n, mods]))\n")
    r = subprocess.run([sys.executable, "-c", code, str(evtx)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    n, mods = json.loads(r.stdout.strip().splitlines()[-1])
    from evtx import PyEvtxParser
    expected = sum(1 for _ in PyEvtxParser(str(evtx)).records_json())
    assert n == expected and n > 0
    assert mods == []


def test_other_formats_still_come_from_the_registry(corpus):
    """A format other than EVTX is still found through the registry (its discovery imports
    the built-in sources): the corpus JSON and Linux files read as before."""
    from sysmonx.sources import iter_input_files, open_source
    files = list(iter_input_files([str(corpus / "json"), str(corpus / "linux")]))
    assert files
    n = sum(1 for f in files for _ in open_source(f, lambda e: None))
    assert n > 1000


# --- pySigma is imported only to parse or compile ---------------------------------------------

_SIGMA_MODULES = ("import json, sys\n"
                  "mods = sorted(m for m in sys.modules if m.split('.')[0] in "
                  "('sigma', 'pyparsing', 'yaml'))\n"
                  "print(json.dumps(mods), file=sys.stderr)\n")


def _replay(args: list[str], cwd: Path) -> list[str]:
    """``sysmonx replay ARGS`` in a child; returns the pySigma/pyparsing/PyYAML modules it had
    imported at the end."""
    code = ("import sys\n"
            f"sys.path.insert(0, {str(ROOT / 'src')!r})\n"
            "from sysmonx.cli.dispatch import main\n"
            f"rc = main({args!r})\n" + _SIGMA_MODULES + "sys.exit(rc)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stderr.strip().splitlines()[-1])


def test_a_cached_replay_imports_no_pysigma_and_alerts_the_same(corpus, tmp_path):
    """``sysmonx replay`` of the corpus EVTX + JSON + Linux folders with the SigmaHQ bundle:
    from the rule cache, pySigma (and pyparsing, PyYAML) is never imported, and the alert lines
    are byte-identical to a run that compiles the rules without the cache."""
    inputs = [str(corpus / "evtx"), str(corpus / "json"), str(corpus / "linux")]
    common = ["replay", *inputs, "--rules", str(corpus / RULES), "--no-output",
              "--keep-duplicates", "-q"]
    cache = str(tmp_path / "cache")
    compiled = _replay(common + ["--alerts", str(tmp_path / "a.jsonl"), "--no-rule-cache"],
                       tmp_path)
    assert "sigma" in compiled  # compiling does import it
    _replay(common + ["--alerts", str(tmp_path / "fill.jsonl"), "--rule-cache", cache], tmp_path)
    cached = _replay(common + ["--alerts", str(tmp_path / "b.jsonl"), "--rule-cache", cache],
                     tmp_path)
    assert cached == []
    a = (tmp_path / "a.jsonl").read_bytes()
    assert a.count(b"\n") > 300
    assert (tmp_path / "b.jsonl").read_bytes() == a
    assert (tmp_path / "fill.jsonl").read_bytes() == a


def test_compiling_after_a_cached_load_binds_pysigma(tmp_path):
    """A process that loaded a stage from the cache (no pySigma) can still parse and compile
    rules afterwards (names bound on first use), with the Sigma specification's ``utf16le``
    modifier registered, and correlations compile. (A cached stage with correlations keeps
    the pySigma objects they refer to, so loading it imports pySigma.)"""
    rule = tmp_path / "r.yml"
    rule.write_text(
        "title: t\nid: 00000000-0000-0000-0000-000000000001\nname: r1\nstatus: test\n"
        "logsource: {product: windows, category: process_creation}\n"
        "detection:\n  sel:\n    CommandLine|utf16le|base64offset|contains: abc\n"
        "    Image|endswith: '\\\\x.exe'\n    IntegrityLevel|re|i: '^sys'\n"
        "    ProcessId|gt: 4\n  condition: sel\n", encoding="utf-8")
    both = tmp_path / "both.yml"
    both.write_text(rule.read_text(encoding="utf-8") +
        "---\ntitle: c\nname: c\ncorrelation:\n  type: event_count\n  rules: [r1]\n"
        "  group-by: [Computer]\n  timespan: 1m\n  condition: {gte: 2}\n", encoding="utf-8")
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT / 'src')!r})\n"
        "from sysmonx.detection import DetectionStage\n"
        "from sysmonx.detection.cache import RuleCache\n"
        f"st = DetectionStage.from_paths([{str(rule)!r}], cache=RuleCache({str(tmp_path / 'c')!r}))\n"
        "assert st.cache_status == 'cached', st.cache_notes\n"
        "assert 'sigma' not in sys.modules\n"
        "from sysmonx.detection import load_rules_text\n"
        f"st2 = DetectionStage(load_rules_text(open({str(both)!r}).read()))\n"
        "assert 'sigma' in sys.modules\n"
        "print(len(st2.matcher.compiled), len(st2.correlations), [str(i) for i in st2.rejected])\n")
    from sysmonx.detection.cache import RuleCache
    DetectionStage.from_paths([rule], cache=RuleCache(tmp_path / "c"))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "1 1 []"
