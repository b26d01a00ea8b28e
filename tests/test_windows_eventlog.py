"""The Windows Event Log source against a fake wevtapi that replays recorded event XML.

Covers: identical Events from a recorded XML file and from a live subscription of the same
records (corpus EVTX rendered to XML by pyevtx-rs, and the built-in sample), bookmarks persisted
only after commit, at-least-once resume with dedup by channel + EventRecordID, re-subscription on
ERROR_EVT_QUERY_RESULT_STALE, loss records when the log wrapped past the bookmark or was cleared,
filtered queries, batch shrinking on RPC_S_INVALID_BOUND, per-channel failures, handle hygiene.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest

from sysmonx.cli import builtin_sample_path
from sysmonx.sources.xmlfile import read_xml, read_xml_stream
from sysmonx.windows import wevtapi
from sysmonx.windows.eventlog import (BookmarkError, BookmarkStore, ChannelSpec, EventLogSource,
                                      Position, SourceUnavailable, bookmark_xml)
from sysmonx.windows.fakes import FakeWevtApi, evtx_records, split_event_xml
from sysmonx.windows.win32 import ERROR_ACCESS_DENIED, ERROR_INVALID_OPERATION, is_windows

SYSMON = "Microsoft-Windows-Sysmon/Operational"
PS = "Microsoft-Windows-PowerShell/Operational"


def _sample_xml() -> list[str]:
    return split_event_xml(Path(builtin_sample_path()).read_text(encoding="utf-8"))


def _template() -> str:
    """One Sysmon ProcessCreate record of the built-in sample (renumbered by the fake log)."""
    return next(x for x in _sample_xml() if "<EventID>1</EventID>" in x)


def _take(source: EventLogSource, n: int, *, commit: bool = True, timeout: float = 10.0):
    """Read ``n`` non-255 events (and every 255 seen meanwhile) from a running source."""
    got, reports = [], []
    deadline = time.monotonic() + timeout
    it = source.events(idle=0.1)
    while len(got) < n:
        assert time.monotonic() < deadline, f"only {len(got)} of {n} events arrived"
        ev = next(it)
        if ev is None:
            continue
        if ev.event_id == 255 and ev.origin is None:
            reports.append(ev)
            continue
        got.append(ev)
        if commit:
            source.commit(ev)
    return got, reports


def _drain_reports(source: EventLogSource, settle: float = 0.3) -> list:
    """Events 255 (and anything else) queued within ``settle`` seconds."""
    out = []
    end = time.monotonic() + settle
    while time.monotonic() < end:
        try:
            item = source._queue.get(timeout=0.05)
        except Exception:  # noqa: BLE001 - queue.Empty: nothing yet
            continue
        out.append(item)
    return out


def _source(api, channels=None, **kw) -> EventLogSource:
    kw.setdefault("wait_ms", 50)
    return EventLogSource(list(channels or [ChannelSpec(SYSMON)]), api=api,
                          clock=lambda: 1_700_000_000_000_000_000, **kw)


# ---- identical Events: recorded XML file vs live subscription ---------------------------------

def _corpus_evtx(corpus: Path) -> list[Path]:
    names = ["Credential Access/ppl_bypass_ppldump_knowdll_hijack_sysmon_security.evtx",
             "Credential Access/babyshark_mimikatz_powershell.evtx",
             "Defense Evasion/DE_renamed_psexec_service_sysmon_17_18.evtx",
             "Credential Access/tutto_malseclogon.evtx"]
    base = corpus / "evtx" / "sbousseaden__EVTX-ATTACK-SAMPLES"
    return [base / n for n in names if (base / n).exists()]


def _live_equals_file(records: list[str], tmp_path: Path) -> tuple[list, list]:
    """Write ``records`` as one event XML file and replay it; serve the same records as live
    channels (one fake channel per System/Channel) and subscribe. Returns both event lists."""
    body = "\n".join(re.sub(r"^\s*<\?xml[^>]*\?>\s*", "", r) for r in records)
    path = tmp_path / "recorded.xml"
    path.write_text(f"<Events>\n{body}\n</Events>\n", encoding="utf-8")
    errors: list = []
    from_file = list(read_xml(str(path), errors.append))
    assert not errors
    channels = []
    api = FakeWevtApi()
    for rec in records:
        ch = re.search(r"<Channel>(.*?)</Channel>", rec).group(1)
        if ch.lower() not in api.logs:
            api.add_channel(ch)
            channels.append(ChannelSpec(ch))
        api.write(ch, rec, keep_id=True)
    src = _source(api, channels)
    try:
        live, reports = _take(src, len(records))
    finally:
        src.close()
    assert not reports
    return from_file, live


def test_corpus_evtx_live_subscription_equals_recorded_xml(corpus, tmp_path):
    files = _corpus_evtx(corpus)
    if not files:
        pytest.skip("corpus EVTX samples not found")
    total = 0
    for f in files:
        records = evtx_records(str(f))
        from_file, live = _live_equals_file(records, tmp_path)
        # Channels are read one after the other: compare per channel, in log order.
        for ch in {e.channel for e in from_file}:
            a = [e for e in from_file if e.channel == ch]
            b = [e for e in live if e.channel == ch]
            assert a == b, f"{f.name}: {ch}"
            assert [e.origin[1] for e in b] == [e.record_id for e in a]
        total += len(live)
    assert total >= 60  # 20 + 33 + 11 + 15 records in these files


def test_builtin_sample_live_equals_replay(tmp_path):
    records = _sample_xml()
    with open(builtin_sample_path(), "rb") as f:
        replayed = list(read_xml_stream(f, "sample", lambda e: None))
    api = FakeWevtApi([SYSMON])
    for rec in records:
        api.write(SYSMON, rec, keep_id=True)
    src = _source(api)
    live, _ = _take(src, len(records))
    src.close()
    assert live == replayed and len(live) == 26
    assert live[0].data["State"] == "Started" and live[0].record_id == 1001


# ---- bookmarks, commit, at-least-once -----------------------------------------------------------

def test_bookmark_persisted_only_after_commit_and_resume(tmp_path):
    api = FakeWevtApi([SYSMON])
    for _ in range(10):
        api.write(SYSMON, _template())
    store_path = tmp_path / "bookmarks.json"
    src = _source(api, bookmarks=BookmarkStore(str(store_path)))
    got, _ = _take(src, 10, commit=False)
    assert not store_path.exists()               # nothing accepted yet: nothing persisted
    src.commit(got[4])                           # the sinks accepted records 1..5
    doc = json.loads(store_path.read_text())
    assert doc["channels"][SYSMON]["record_id"] == 5
    assert doc["channels"][SYSMON]["time_created"] == got[4].time_created
    assert src.commit(got[2]) is False                 # already covered by the commit of 5
    assert src.stats["ignored_commits"] == 1
    src.close()
    # Restart: 6..10 were delivered but never accepted, so they come again; 1..5 do not.
    src2 = _source(api, bookmarks=BookmarkStore(str(store_path)))
    again, _ = _take(src2, 5)
    assert [e.record_id for e in again] == [6, 7, 8, 9, 10]
    assert not _drain_reports(src2)
    src2.close()
    assert ("EvtCreateBookmark", bookmark_xml(SYSMON, 5)) in api.calls
    subscribe_flags = [c[3] for c in api.calls if c[0] == "EvtSubscribe"]
    assert subscribe_flags[-1] == (wevtapi.EvtSubscribeStartAfterBookmark
                                   | wevtapi.EvtSubscribeStrict)
    assert json.loads(store_path.read_text())["channels"][SYSMON]["record_id"] == 10


def test_stale_result_resubscribes_from_bookmark_and_dedups():
    api = FakeWevtApi([SYSMON])
    for _ in range(8):
        api.write(SYSMON, _template())
    src = _source(api)
    got, _ = _take(src, 8, commit=False)
    src.commit(got[2])                            # accepted 1..3; 4..8 in flight
    api.next_errors.append(wevtapi.ERROR_EVT_QUERY_RESULT_STALE)
    for _ in range(2):
        api.write(SYSMON, _template())            # wakes the reader: EvtNext -> stale
    more, reports = _take(src, 2)
    src.close()
    assert [e.record_id for e in more] == [9, 10]  # 4..8 re-delivered by the new subscription
    assert src.stats["stale"] == 1 and src.stats["duplicates"] == 5
    assert not reports and not src.losses


def test_log_wrap_while_reading_reports_exact_loss():
    api = FakeWevtApi([SYSMON], capacity=10)
    for _ in range(5):
        api.write(SYSMON, _template())
    src = _source(api)
    got, _ = _take(src, 5)                        # 1..5 read and accepted
    with api._lock:                               # 30 records land before the reader wakes
        for _ in range(30):
            api.write(SYSMON, _template())
    more, reports = _take(src, 10)
    src.close()
    assert [e.record_id for e in more] == list(range(26, 36))
    assert [(x.count, x.first_record, x.last_record) for x in src.losses] == [(20, 6, 25)]
    assert len(reports) == 1 and reports[0].data["ID"] == f"eventlog:{SYSMON}"
    assert reports[0].data["Description"].startswith("Lost 20 events (EventRecordID 6-25): "
                                                     "the log wrapped")
    assert src.stats["stale"] == 1


def test_wrap_across_restart_reported_once(tmp_path):
    api = FakeWevtApi([SYSMON], capacity=21)
    for _ in range(40):
        api.write(SYSMON, _template())            # log holds 20..40
    store = BookmarkStore(str(tmp_path / "b.json"))
    store.set(SYSMON, Position(3, "2026-11-02T09:00:00.000000000Z"))
    src = _source(api, bookmarks=store)
    got, reports = _take(src, 21, commit=False)
    src.close()
    assert got[0].record_id == 20 and got[-1].record_id == 40
    assert [(x.count, x.first_record, x.last_record) for x in src.losses] == [(16, 4, 19)]
    # Restart without having committed anything: the loss is not reported a second time.
    src2 = _source(api, bookmarks=BookmarkStore(str(tmp_path / "b.json")))
    again, reports2 = _take(src2, 21)
    src2.close()
    assert again[0].record_id == 20 and not src2.losses and not reports2


def test_cleared_log_is_reported_and_renumbered_records_are_not_deduped(tmp_path):
    api = FakeWevtApi([SYSMON])
    for _ in range(50):
        api.write(SYSMON, _template())
    src = _source(api)
    got, _ = _take(src, 50)
    src.close()
    api.clear(SYSMON)
    for _ in range(5):
        api.write(SYSMON, _template())            # numbered 1..5 again
    src2 = _source(api, bookmarks=src.bookmarks)
    again, reports = _take(src2, 5)
    src2.close()
    assert [e.record_id for e in again] == [1, 2, 3, 4, 5]
    assert len(src2.losses) == 1 and src2.losses[0].count is None
    assert "cleared after record 50" in src2.losses[0].detail
    assert reports[0].data["Description"].startswith("Lost an unknown number of events")
    assert src2.stats["duplicates"] == 0


def test_clear_while_reading_is_stale_then_reported():
    api = FakeWevtApi([SYSMON])
    for i in range(6):
        api.write(SYSMON, _at(_template(), f"2026-11-02T09:00:0{i}.0000000Z"))
    src = _source(api)
    old, _ = _take(src, 6, commit=False)
    src.commit(old[1])
    with api._lock:
        api.clear(SYSMON)
        for i in range(3):
            api.write(SYSMON, _at(_template(), f"2026-11-02T10:00:0{i}.0000000Z"))
    again, reports = _take(src, 3, commit=False)
    assert [e.record_id for e in again] == [1, 2, 3]
    assert src.stats["stale"] == 1 and src.losses[0].count is None
    # Events delivered before the clear can no longer be committed; the new ones can.
    assert src.commit(old[4]) is False and src.commit(old[0]) is False
    assert src.commit(again[2]) is True
    src.close()
    assert src.bookmarks.get(SYSMON).record_id == 3


def test_unreadable_log_info_with_missing_bookmark_reports_unknown_loss():
    api = FakeWevtApi([SYSMON], capacity=5)
    for _ in range(12):
        api.write(SYSMON, _template())            # holds 8..12
    api.log_info_error = ERROR_ACCESS_DENIED
    store = BookmarkStore()
    store.set(SYSMON, Position(2, "x"))
    src = _source(api, bookmarks=store)
    got, reports = _take(src, 5)
    src.close()
    assert [e.record_id for e in got] == [8, 9, 10, 11, 12]
    assert src.stats["strict_bookmark_misses"] == 1
    assert [loss.count for loss in src.losses] == [None]


# ---- queries, batches, odd errors --------------------------------------------------------------

def _ps_record(event_id: int) -> str:
    return (f"<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'><System>"
            f"<Provider Name='Microsoft-Windows-PowerShell' "
            f"Guid='{{a0c1853b-5c40-4b15-8766-3cf1c58f985a}}'/><EventID>{event_id}</EventID>"
            f"<Version>1</Version><Level>5</Level><Task>2</Task><Opcode>15</Opcode>"
            f"<Keywords>0x0</Keywords><TimeCreated SystemTime='2025-04-09T09:20:55.7303939Z'/>"
            f"<EventRecordID>0</EventRecordID><Channel>{PS}</Channel><Computer>WS01</Computer>"
            f"</System><EventData><Data Name='MessageNumber'>1</Data></EventData></Event>")


def test_filtered_query_delivers_only_matching_ids_and_gaps_are_not_loss():
    api = FakeWevtApi([PS])
    for eid in (4100, 4104, 40961, 4103, 53504, 4104):
        api.write(PS, _ps_record(eid))
    src = _source(api, [ChannelSpec(PS, "*[System[(EventID=4103 or EventID=4104)]]")])
    got, _ = _take(src, 3)
    src.close()
    assert [(e.event_id, e.record_id) for e in got] == [(4104, 2), (4103, 4), (4104, 6)]
    assert not src.losses


def test_rpc_invalid_bound_halves_the_batch():
    api = FakeWevtApi([SYSMON])
    for _ in range(30):
        api.write(SYSMON, _template())
    api.max_batch = 8
    src = _source(api, batch_size=64)
    got, _ = _take(src, 30)
    src.close()
    assert [e.record_id for e in got] == list(range(1, 31))
    assert src.batch_size == 8 and src.stats["batch_shrinks"] == 3
    assert src.stats["duplicates"] == 0


def test_invalid_operation_is_nothing_now_and_render_error_is_a_loss():
    api = FakeWevtApi([SYSMON])
    api.next_errors.append(ERROR_INVALID_OPERATION)
    for _ in range(4):
        api.write(SYSMON, _template())
    api.render_errors.add(3)
    src = _source(api)
    got, reports = _take(src, 3)
    src.close()
    assert [e.record_id for e in got] == [1, 2, 4]
    assert src.stats["invalid_operation"] == 1 and src.stats["render_errors"] == 1
    assert [loss.count for loss in src.losses] == [1] and len(reports) == 1


def test_missing_channel_reported_others_keep_working_and_no_handle_leaks():
    api = FakeWevtApi([SYSMON])
    for _ in range(3):
        api.write(SYSMON, _template())
    src = _source(api, [ChannelSpec("Microsoft-Windows-Nope/Operational"), ChannelSpec(SYSMON)])
    got, reports = _take(src, 3)
    src.close()
    assert [e.record_id for e in got] == [1, 2, 3]
    assert any("cannot subscribe to 'Microsoft-Windows-Nope/Operational'" in r.data["Description"]
               for r in reports)
    assert api.open_handles == []


def test_records_written_after_start_wake_the_reader():
    api = FakeWevtApi([SYSMON])
    src = _source(api, [ChannelSpec(SYSMON, start="future")], wait_ms=5000)
    api.write(SYSMON, _template())               # before the subscription: not delivered
    src.start()
    time.sleep(0.2)

    def writer():
        for _ in range(5):
            api.write(SYSMON, _template())
            time.sleep(0.01)

    t = threading.Thread(target=writer)
    start = time.monotonic()
    t.start()
    got, _ = _take(src, 5)
    t.join()
    src.close()
    assert [e.record_id for e in got] == [2, 3, 4, 5, 6]
    assert time.monotonic() - start < 3          # woken by the signal, not the 5 s poll


def test_bookmark_store_rejects_garbage(tmp_path):
    p = tmp_path / "b.json"
    p.write_text("{not json")
    with pytest.raises(BookmarkError, match="b.json"):
        BookmarkStore(str(p))
    p.write_text(json.dumps({"version": 1, "channels": {SYSMON: {"record_id": 7}}}))
    assert BookmarkStore(str(p)).get(SYSMON) == Position(7, "")


def test_bookmark_xml_escapes_channel():
    assert bookmark_xml("A'B&C", 42) == ('<BookmarkList><Bookmark Channel="A\'B&amp;C" '
                                         "RecordId='42' IsCurrent='true'/></BookmarkList>")


def test_check_available_off_windows():
    if is_windows():
        pytest.skip("wevtapi is available on Windows")
    with pytest.raises(SourceUnavailable, match="needs Windows"):
        EventLogSource.check_available()
    with pytest.raises(SourceUnavailable):
        EventLogSource([ChannelSpec(SYSMON)]).start()


def test_bookmark_writes_are_rate_limited_and_flushed_on_close(tmp_path):
    api = FakeWevtApi([SYSMON])
    for _ in range(200):
        api.write(SYSMON, _template())
    path = tmp_path / "b.json"
    store = BookmarkStore(str(path))
    src = _source(api, bookmarks=store, persist_every=3600)
    got, _ = _take(src, 200)                     # 200 commits
    assert store.writes == 1                     # only the first one reached the disk
    assert json.loads(path.read_text())["channels"][SYSMON]["record_id"] == 1
    src.close()
    assert store.writes == 2
    assert json.loads(path.read_text())["channels"][SYSMON]["record_id"] == 200


def _at(xml: str, when: str) -> str:
    out, n = re.subn(r"""SystemTime=(['"])[^'"]*\1""", f"SystemTime='{when}'", xml)
    assert n == 1
    return out


def test_log_cleared_and_refilled_past_the_bookmark_is_detected():
    """Numbers alone cannot tell: the log again holds a record 5. Its TimeCreated can."""
    api = FakeWevtApi([SYSMON])
    for i in range(6):
        api.write(SYSMON, _at(_template(), f"2026-11-02T09:00:0{i}.0000000Z"))
    src = _source(api)
    got, _ = _take(src, 5)                       # accepted 1..5
    src.close()
    api.clear(SYSMON)
    for i in range(8):
        api.write(SYSMON, _at(_template(), f"2026-11-02T10:00:0{i}.0000000Z"))
    src2 = _source(api, bookmarks=src.bookmarks)
    again, reports = _take(src2, 8)
    src2.close()
    assert [e.record_id for e in again] == list(range(1, 9))   # none skipped
    assert [x.count for x in src2.losses] == [None]
    assert "cleared and renumbered: record 5 is now an event of 2026-11-02T10:00:04" in \
        src2.losses[0].detail
    # The same log, not cleared: the bookmarked record is the one accepted; no report.
    src3 = _source(api, bookmarks=src2.bookmarks)
    api.write(SYSMON, _at(_template(), "2026-11-02T10:00:09.0000000Z"))
    more, reports3 = _take(src3, 1)
    src3.close()
    assert more[0].record_id == 9 and not src3.losses and not reports3


def test_resume_at_oldest_never_skips_the_record_after_a_missing_bookmark():
    """EvtSubscribe without EvtSubscribeStrict starts after the record closest to a missing
    bookmark, which would skip it; the source resumes at the oldest record instead."""
    api = FakeWevtApi([SYSMON], capacity=10)
    for _ in range(30):
        api.write(SYSMON, _template())            # holds 21..30
    store = BookmarkStore()
    store.set(SYSMON, Position(20, ""))           # record 20 itself was overwritten
    src = _source(api, bookmarks=store)
    got, reports = _take(src, 10)
    src.close()
    assert got[0].record_id == 21 and not src.losses and not reports
    assert src.stats["strict_bookmark_misses"] == 1
