"""The compiled per-record path's shortcuts of session 9 against the pure-Python paths.

* The converter shares the str of a short ASCII System value (provider name and GUID, channel,
  computer, keywords, user id) seen before: records whose values repeat, differ by one byte,
  sit at the 48-byte limit and beyond it, are escaped, non-ASCII (Latin-1 and wider) or so many
  that cache slots are replaced, each converted as the pure path converts it, and the sharing
  itself shown (the same str object for a repeated computer name).
* The JSON-lines renderer writes a str's last 1-7 bytes in one step when none needs escaping,
  skips the enrichment-name lookup for keys of a length no enrichment name has, and writes
  integers without snprintf: every string length 0-20 with each escapable character at each
  position, keys of every enrichment name's length (and 63, 64, 65 characters), integers around
  every power of ten and the 64-bit limits, each rendered as the pure path renders it.
* The EVTX record loop's origin tuples are untracked by the garbage collector (a str and an
  int: no cycle possible).

Skipped with a reason when the extension is not built (as tests/test_speedups.py).
"""

from __future__ import annotations

import gc
import os

import pytest

from sysmonx.core import native
from sysmonx.event import Event
from sysmonx.schema.catalogue import ENRICHMENT_FIELD_NAMES
from sysmonx.sinks import jsonl
from sysmonx.sources import evtx as evtx_source

sp = native.speedups
pytestmark = pytest.mark.skipif(sp is None, reason=f"C extension not in use: "
                                f"{native.implementation()}")

ORIGIN = ("file.evtx", 7)

SYSTEM = ('"System":{"Provider":{"#attributes":{"Name":"PROV","Guid":"GUID"}},"EventID":1,'
          '"Version":5,"Level":4,"Task":1,"Opcode":0,"Keywords":"KEYW","TimeCreated":'
          '{"#attributes":{"SystemTime":"2019-04-18T16:55:37.125139Z"}},"EventRecordID":4,'
          '"Execution":{"#attributes":{"ProcessID":3192,"ThreadID":3288}},"Channel":"CHAN",'
          '"Computer":"COMP","Security":{"#attributes":{"UserID":"USER"}}}')
DATA = '"EventData":{"RuleName":"-","Image":"C:\\\\a.exe","ProcessGuid":"{365abb72-0000}"}'


def record(prov: str = "Microsoft-Windows-Sysmon", guid: str = "5770385F-C22A-43E0-BF4C-06F5698FFBD9",
           keywords: str = "0x8000000000000000", channel: str = "Microsoft-Windows-Sysmon/Operational",
           computer: str = "IEWIN7", user: str = "S-1-5-18") -> str:
    """A record's JSON text with the given System values (raw JSON string bodies: escapes
    are written as JSON escapes)."""
    system = (SYSTEM.replace("PROV", prov).replace("GUID", guid).replace("KEYW", keywords)
              .replace("CHAN", channel).replace("COMP", computer).replace("USER", user))
    return '{"Event":{' + system + "," + DATA + "}}"


def _slots(e: Event) -> tuple:
    return tuple(getattr(e, s) for s in Event.__slots__ if s != "_raw") + (tuple(e.data.items()),)


def _same(text: str) -> Event:
    py = evtx_source._convert_py(text, ORIGIN)
    c = sp.convert_raw(text, ORIGIN)
    assert c is not None, text
    assert _slots(c) == _slots(py), text
    assert sp.event_json(c) == jsonl._event_to_json_py(py), text
    return c


def test_repeated_system_values_are_shared_and_equal():
    a, b = _same(record(computer="WS-SHARED-01")), _same(record(computer="WS-SHARED-01"))
    assert a.computer == "WS-SHARED-01"
    assert a.computer is b.computer  # the second record's str came from the cache
    assert a.channel is b.channel and a.user_id is b.user_id and a.keywords is b.keywords
    assert a.provider is b.provider


@pytest.mark.parametrize("value", [
    "", "x", "WS01", "WS02", "ws01", "A" * 47, "A" * 48, "A" * 49, "B" * 48, "A" * 200,
    "CAFÉ", "CAF\\u00c9", "CAFE\\u0301", "中文-PC", "😀", "a\\\\b", "a\\\"b", "a\\/b",
    "\\u0041BC", "ABC", "\\u0000", "é" * 30, "x" * 47 + "é",
])
def test_system_values_convert_as_the_pure_path(value):
    for field in ("computer", "channel", "user", "keywords", "prov"):
        _same(record(**{field: value}))
    _same(record(guid=value))


def test_the_same_bytes_in_other_texts_give_the_same_strs():
    # an ASCII value first seen in ASCII text, then in Latin-1 and in wider text (the cache is
    # keyed by bytes, and is only used for ASCII bytes, which decode alike in every mode)
    _same(record(computer="MIXED-1"))
    _same(record(computer="MIXED-1", user="é"))
    _same(record(computer="MIXED-1", user="€"))
    _same(record(computer="MIXED-1", user="😀"))
    _same(record(computer="MIXÉD-1"))
    _same(record(computer="MIXED-1"))


def test_cache_slots_replaced_under_many_values():
    # far more distinct values than the cache has slots: every slot is replaced many times,
    # and colliding values never give each other's str
    names = [f"HOST-{i:05d}" for i in range(5000)] + [f"h{i}" for i in range(3000)]
    got = [sp.convert_raw(record(computer=n, channel=n[::-1]), ORIGIN) for n in names]
    assert [e.computer for e in got] == names
    assert [e.channel for e in got] == [n[::-1] for n in names]
    for n in names[::250]:
        _same(record(computer=n))


# --- the renderer ---------------------------------------------------------------------------------

SPECIAL = ['"', "\\", "\n", "\x00", "\x1f", "\x7f", "é", "\x85", "€"]


def _render_same(event: Event) -> None:
    assert sp.event_json_raw(event) == jsonl._event_to_json_py(event)


def test_every_short_length_with_every_escape_at_every_position():
    for n in range(21):
        _render_same(Event(1, {"A": "a" * n, "b" * n or "k": "v"}))
        for ch in SPECIAL:
            for pos in range(n):
                s = "a" * pos + ch + "a" * (n - pos - 1)
                _render_same(Event(1, {"V": s, s: "k"}))


def test_keys_of_enrichment_name_lengths_and_long_keys():
    lengths = sorted({len(n) for n in ENRICHMENT_FIELD_NAMES} | {1, 63, 64, 65, 100})
    for n in lengths:
        data = {"Image": "i", "K" * n: "v", "Z" * (n - 1) + "é": "w"}
        _render_same(Event(1, data))
    # a real enrichment name is still found after keys of other lengths, and moved to its part
    ev = Event(1, {"Image": "i", "X" * 64: "a", "Tty": "pts/0", "GrandparentImage": "g"})
    _render_same(ev)
    assert b'"Enrichment":{' in sp.event_json_raw(ev)


@pytest.mark.parametrize("v", sorted({0, 1, -1, 9, -9, 2**63 - 1, -2**63, -2**63 + 1,
                                      2**62, -(2**62)} |
                                     {s * (10**k + d) for k in range(19) for d in (-1, 0, 1)
                                      for s in (1, -1) if -2**63 <= s * (10**k + d) < 2**63}))
def test_integers_render_as_the_pure_path(v):
    _render_same(Event(1, {"A": v}, record_id=min(abs(v), 2**63 - 1), process_id=v,
                       thread_id=v))


# --- the record loop's origins ------------------------------------------------------------------

def test_batch_origins_are_untracked_and_events_complete(corpus):
    path = str(corpus / "evtx" / "sbousseaden__EVTX-ATTACK-SAMPLES" / "AutomatedTestingTools"
               / "PanacheSysmon_vs_AtomicRedTeam01.evtx")
    events = [e for batch in evtx_source.read_evtx_batches(path, lambda err: None)
              for e in batch]
    assert len(events) > 500
    # each chunk's first record is converted by the Python step (its tuple stays tracked until
    # the collector's first pass); every other one in the compiled loop
    chunks = -(-(os.path.getsize(path) - 4096) // 65536)
    tracked = sum(gc.is_tracked(e.origin) for e in events)
    assert tracked <= chunks < len(events) // 10
    assert all(e.origin[0] == path and isinstance(e.origin[1], int) for e in events)
    gc.collect()  # the collector finds nothing wrong with them
    rids = [e.origin[1] for e in events]
    assert rids == sorted(set(rids))
