"""The XML writers' per-shape templates give exactly the generic renderer's bytes.

``render_event`` renders an event from its shape's template (the ``<Event><System>`` skeleton
and the ``<Data Name=...>`` tags built once per provider/EventID/version/field list);
``render_event_generic`` is the element-by-element renderer the writers used before, kept as the
reference. Every event of the corpus (EVTX, the JSON datasets, Sysmon for Linux syslog), with
and without enrichment fields, in both XML forms and both envelope modes, and hand-made edge
cases (escapes, control characters, surrogates, ``%`` signs, empty and absent values, odd System
values, the same EventID with another field list) must come out byte for byte the same.
"""

from __future__ import annotations

import io
from copy import copy
from pathlib import Path

import pytest

from sysmonx.event import (Event, LINUX_CHANNEL, LINUX_PROVIDER, LINUX_PROVIDER_GUID,
                           WINDOWS_CHANNEL, WINDOWS_PROVIDER, WINDOWS_PROVIDER_GUID)
from sysmonx.sinks import _xml, xml_linux, xml_windows
from sysmonx.sinks._xml import TEMPLATE_LIMIT, XmlForm, escape_text, render_event_generic
from sysmonx.sinks.xml_linux import LinuxXmlWriter, render_linux_xml
from sysmonx.sinks.xml_windows import WindowsXmlWriter, render_windows_xml
from sysmonx.sources import iter_input_files, open_source
from sysmonx.stages.enrich import EnrichStage

RENDERERS = [render_windows_xml, render_linux_xml]
FORMS = [xml_windows._FORM, xml_linux._FORM]
GENERIC_CALLS = [0]


@pytest.fixture(autouse=True)
def fresh_templates(monkeypatch):
    """Every test starts with empty template caches and counts the generic renderer's calls
    (so a test cannot pass because a full cache sent everything to the generic renderer)."""
    for form in FORMS:
        monkeypatch.setitem(form.memo, "templates", {})
        monkeypatch.setitem(form.memo, "template_chars", [0])
    real = _xml.render_event_generic

    def counted(*args, **kw):
        GENERIC_CALLS[0] += 1
        return real(*args, **kw)

    monkeypatch.setattr(_xml, "render_event_generic", counted)


def templatable(e: Event) -> bool:
    """Whether ``render_event`` documents a template for ``e``'s shape."""
    return (type(e.data) is dict and type(e.event_id) is int
            and all(v is None or type(v) is int for v in (
                e.version, e.level, e.task, e.opcode, e.record_id, e.process_id, e.thread_id)))


def both(e: Event, render) -> bool:
    """Assert template and generic output agree for ``e`` in both envelope modes; True when
    the template path rendered it (asserted for every event it documents a template for)."""
    used = []
    for rewrite in (False, True):
        calls = GENERIC_CALLS[0]
        fast = render(e, rewrite, templates=True)
        used.append(GENERIC_CALLS[0] == calls)
        assert fast == render(e, rewrite, templates=False), (e.event_id, e.data)
    assert used == [templatable(e)] * 2, (used, e.event_id, e.data)
    return used[0]


def corpus_events(corpus: Path) -> dict[str, list[Event]]:
    """Every event of the corpus's EVTX, JSON datasets and Sysmon for Linux logs, by folder."""
    out: dict[str, list[Event]] = {}
    for folder in ("evtx", "json", "linux"):
        notes: list = []
        events = out[folder] = []
        for path in iter_input_files([str(corpus / folder)]):
            events.extend(open_source(str(path), notes.append))
    return out


@pytest.fixture(scope="module")
def events(corpus) -> dict[str, list[Event]]:
    return corpus_events(corpus)


@pytest.mark.parametrize("render", RENDERERS, ids=["xml", "linux-xml"])
def test_every_corpus_event_renders_the_same_from_its_template(events, render):
    assert len(events["evtx"]) > 1000 and len(events["json"]) > 50_000 and events["linux"]
    n = templated = 0
    for evs in events.values():
        for e in evs:
            templated += both(e, render)
            n += 1
    assert templated > n * 0.99, (templated, n)
    providers = {e.provider for evs in events.values() for e in evs}
    assert {WINDOWS_PROVIDER, LINUX_PROVIDER} < providers and len(providers) > 5


@pytest.mark.parametrize("render", RENDERERS, ids=["xml", "linux-xml"])
def test_enriched_corpus_events_render_the_same(events, render):
    stage = EnrichStage(keep=True)
    added = 0
    for e in events["evtx"] + events["json"][:20_000] + events["linux"]:
        e = copy(e)
        e.data = dict(e.data)
        before = len(e.data)
        stage.process(e, lambda item: None)
        added += len(e.data) > before
        both(e, render)
    assert added > 1000


@pytest.mark.parametrize("writer", [WindowsXmlWriter, LinuxXmlWriter])
def test_writers_write_the_same_bytes_with_and_without_templates(events, writer):
    sample = events["evtx"] + events["json"][::7] + events["linux"]
    outs = []
    for templates in (True, False):
        buf = io.BytesIO()
        w = writer(buf, close_stream=False, templates=templates)
        for e in sample:
            w.write(e)
        w.close()
        outs.append(buf.getvalue())
    assert outs[0] == outs[1]
    assert outs[0].count(b"\n") == len(sample)


def sysmon(data, **kw) -> Event:
    base = dict(version=5, level=4, task=1, opcode=0, time_created="2024-03-05T10:11:12.123456789Z",
                record_id=7, process_id=812, thread_id=813, computer="web01", user_id="S-1-5-18")
    base.update(kw)
    return Event(kw.pop("event_id", 1), data, **{k: v for k, v in base.items() if k != "event_id"})


NASTY = ["", "&", "<tag attr='x'>", 'a "quoted" \'one\'', "%s %d %% %(x)s", "tab\there",
         "cr\rlf\nend", "nul\x00esc\x1b", "c1 \x85 \x9b", "ls\u2028ps\u2029", "nonchar \ufffe\uffff",
         "lone \ud800 surrogate \udfff", "astral \U0001F600", "nbsp\u00a0soft\u00adhyphen",
         "Microsoft\u00ae Windows\u00ae", "\u7faf\u8019", "&amp;already", "]]>", "\\u0041"]


@pytest.mark.parametrize("render", RENDERERS, ids=["xml", "linux-xml"])
@pytest.mark.parametrize("value", NASTY)
def test_values_that_need_escaping_or_look_like_format_directives(render, value):
    both(sysmon({"RuleName": "-", "Image": value, "CommandLine": value + value}), render)
    both(sysmon({"A": value}), render)
    # the value in every System string the template keeps constant or fills in
    both(sysmon({"A": "x"}, computer=value, user_id=value, keywords=value or "0x1"), render)
    both(sysmon({"A": "x"}, provider=value, provider_guid=value, channel=value), render)


@pytest.mark.parametrize("render", RENDERERS, ids=["xml", "linux-xml"])
@pytest.mark.parametrize("name", ["", "%s", "%", "a'b\"c", "x<y>&z", "tab\tname", "System",
                                  "EventData", "xmlns", "Data Name='x'", "\x00\ud800",
                                  "RuleName"])
def test_odd_field_names(render, name):
    both(sysmon({"RuleName": "-", name: "v", "Last": "%s"}), render)


@pytest.mark.parametrize("render", RENDERERS, ids=["xml", "linux-xml"])
def test_template_of_one_event_does_not_leak_into_the_next(render):
    first = sysmon({"RuleName": "-", "Image": "a.exe"}, record_id=1)
    second = sysmon({"RuleName": "x&y", "Image": "b<.exe"}, record_id=2, computer="other",
                    user_id=None, time_created="2025-01-01T00:00:00.000000001Z")
    out1, out2 = render(first), render(second)
    assert out1 == render(first, templates=False) and out2 == render(second, templates=False)
    assert "b&lt;.exe" in out2 and "a.exe" not in out2 and "<Security/>" in out2
    # same EventID, other field lists and orders: each its own template
    for data in ({"Image": "a", "RuleName": "-"}, {"RuleName": "-"}, {},
                 {"RuleName": "-", "Image": "a", "Extra": "e"}):
        both(sysmon(data), render)
    both(sysmon({"RuleName": "-"}, event_id=3), render)
    both(sysmon({"RuleName": "-"}, version=2), render)


ODD_SYSTEM = [dict(version=None), dict(level=None), dict(task=None), dict(opcode=None),
              dict(keywords=None), dict(time_created=""), dict(record_id=None),
              dict(process_id=None), dict(thread_id=None), dict(event_id=True),
              dict(event_id=1.0), dict(version=True), dict(record_id=7.5), dict(process_id="12"),
              dict(time_created="2024-03-05 10:11:12.123"), dict(time_created="not <a> time"),
              dict(computer=None), dict(computer=""), dict(user_id=None), dict(provider=None),
              dict(provider_guid=None), dict(channel=""), dict(channel=None),
              dict(provider="Microsoft-Windows-Security-Auditing", channel="Security",
                   provider_guid="{54849625-5478-4994-a5ba-3e3b0328c30d}", event_id=4688,
                   version=2, task=13312, keywords="0x8020000000000000")]


@pytest.mark.parametrize("render", RENDERERS, ids=["xml", "linux-xml"])
@pytest.mark.parametrize("system", ODD_SYSTEM, ids=lambda d: ",".join(f"{k}={v!r}" for k, v in d.items()))
def test_odd_and_missing_system_values_and_other_providers(render, system):
    both(sysmon({"RuleName": "-", "Image": "a"}, **system), render)
    both(sysmon({}, **system), render)


@pytest.mark.parametrize("render", RENDERERS, ids=["xml", "linux-xml"])
def test_shapes_differing_only_in_which_system_values_are_present(render):
    import itertools
    events = []
    for version, time, rid, pid, tid, kw in itertools.product(
            (5, None), ("2024-03-05T10:11:12.123456789Z", ""), (7, None), (812, None), (813, None),
            ("0x8000000000000000", None)):
        events.append(sysmon({"RuleName": "-", "Image": "a"}, version=version, time_created=time,
                             record_id=rid, process_id=pid, thread_id=tid, keywords=kw))
    for e in events + events[::-1]:  # one cache: every shape after every other
        both(e, render)


@pytest.mark.parametrize("render", RENDERERS, ids=["xml", "linux-xml"])
def test_envelope_rewrite_uses_its_own_templates(render):
    win = sysmon({"RuleName": "-", "Image": "C:\\x.exe"})
    lin = sysmon({"RuleName": "-", "Image": "/bin/sh"}, provider=LINUX_PROVIDER,
                 provider_guid=LINUX_PROVIDER_GUID, channel=LINUX_CHANNEL, user_id="0")
    for e in (win, lin, win, lin):
        both(e, render)
    assert WINDOWS_CHANNEL in render_windows_xml(lin, True)
    assert WINDOWS_PROVIDER_GUID in render_windows_xml(lin, True)
    assert LINUX_CHANNEL in render_linux_xml(win, True)


@pytest.mark.parametrize("render", RENDERERS, ids=["xml", "linux-xml"])
def test_data_that_is_not_a_plain_dict_or_not_strings(render):
    class Sub(str):
        pass

    both(sysmon({"A": Sub("sub<"), "B": Sub("plain")}), render)
    both(sysmon(None), render)
    from collections import OrderedDict
    both(sysmon(OrderedDict([("B", "2"), ("A", "1&")])), render)
    for bad in ({"A": 1}, {"A": None}, {1: "x"}):
        with pytest.raises(TypeError):
            render(sysmon(bad), templates=False)
        with pytest.raises(TypeError):
            render(sysmon(bad))


def test_template_cache_is_bounded_and_new_shapes_still_render_the_same():
    form = XmlForm("<Event>", '"', _xml.escape_attr_quot, "UserId", lambda t: t)
    for i in range(TEMPLATE_LIMIT + 50):
        e = sysmon({f"F{i}": "v&"})
        assert (_xml.render_event(e, form, "P", None, "C")
                == render_event_generic(e, form, "P", None, "C"))
    assert len(form.memo["templates"]) == TEMPLATE_LIMIT


def test_template_characters_are_bounded(monkeypatch):
    monkeypatch.setattr(_xml, "TEMPLATE_CHARS", 5000)
    form = XmlForm("<Event>", '"', _xml.escape_attr_quot, "UserId", lambda t: t)
    for i in range(200):
        e = sysmon({"N" * 100 + str(i): "v", "Other": "w"})
        assert (_xml.render_event(e, form, "P", None, "C")
                == render_event_generic(e, form, "P", None, "C"))
    assert 5000 <= form.memo["template_chars"][0] < 5500
    assert form.memo["template_chars"][0] == sum(map(len, form.memo["templates"].values()))


def test_latin1_escape_check_agrees_with_the_escaper_on_every_code_point():
    for c in range(0x3000):
        s = "ab" + chr(c) + "cd"
        assert _xml._needs_escape(s) == (escape_text(s) != s), hex(c)
    for c in (0xD800, 0xDBFF, 0xDC00, 0xDFFF, 0xFFFD, 0xFFFE, 0xFFFF, 0x10000, 0x10FFFF):
        s = chr(c)
        assert _xml._needs_escape(s) == (escape_text(s) != s), hex(c)


@pytest.mark.parametrize("fmt", ["xml", "linux-xml"])
def test_replay_writes_the_same_file_with_and_without_templates(corpus, tmp_path, fmt,
                                                                 monkeypatch):
    """``sysmonx replay`` through the one loop, the corpus's EVTX and Sysmon for Linux syslog,
    with the writers' templates and with every event forced through the generic renderer."""
    from sysmonx.cli import main

    def generic(e, form, provider, guid, channel, templates=True):
        return _xml.render_event(e, form, provider, guid, channel, templates=False)

    inputs = [str(corpus / "evtx"), str(corpus / "linux")]
    out, calls = {}, {}
    GENERIC_CALLS[0] = 0
    for mode in ("templates", "generic"):
        if mode == "generic":
            for module in (xml_windows, xml_linux):
                monkeypatch.setattr(module, "render_event", generic)
        path = tmp_path / f"{mode}.{fmt}"
        assert main(["replay", *inputs, "-f", fmt, "-o", str(path), "-q"]) == 0
        out[mode] = path.read_bytes()
        calls[mode] = GENERIC_CALLS[0]
    assert out["templates"] == out["generic"]
    assert calls["templates"] == 0 < calls["generic"]
    assert out["templates"].count(b"\n") > 1700
