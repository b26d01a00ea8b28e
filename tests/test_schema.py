"""The event-schema catalogue and the ``-s`` / ``-? config`` printers against real manifests.

Reference data (read-only corpus, see conftest.py):

* ``schemas/Sysinternals__SysmonCommon/manifest.xml`` - every manifest 2.0-4.81 as the current
  Sysmon source embeds them (raw form: ``target`` attributes, comments).
* ``schemas/microsoft__MSTIC-Sysmon/windows/schemas/*.xml`` - ``sysmon -s`` console output of
  Windows Sysmon 11.0-14.0 (schemas 4.30-4.82): a banner, then the ``<manifest>`` block.
* ``schemas/microsoft__MSTIC-Sysmon/linux/schemas/sysmonv1.0.0.xml`` - Linux ``sysmon -s`` (4.81).

The catalogue follows the SysmonCommon manifest for 4.0-4.81 (what a current Sysmon embeds, prints
with ``-s <version>`` and builds its DTDs from) and the Windows 14.0 dump for 4.82. Several older
Windows builds shipped a different manifest under the same schema version; those per-build
differences are listed, exactly, in :data:`BUILD_DIFFERENCES` and every other line must match.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from sysmonx.schema import (
    CURRENT, LATEST, SchemaVersionError, all_versions, extended, format_version, get_schema,
)
from sysmonx.schema.printer import (
    NO_MATCH_EXIT_CODE, NO_MATCH_MESSAGE, WINDOWS_HIDDEN_OPTIONS, manifest_version_text,
    render_config_help, render_manifest, render_schema_output,
)

COMMON = Path("schemas/Sysinternals__SysmonCommon/manifest.xml")
WINDOWS_DIR = Path("schemas/microsoft__MSTIC-Sysmon/windows/schemas")
LINUX_DUMP = Path("schemas/microsoft__MSTIC-Sysmon/linux/schemas/sysmonv1.0.0.xml")

#: 4.x manifests in the SysmonCommon file, spelled as there.
COMMON_4X = ("4.0", "4.1", "4.2", "4.21", "4.22", "4.23", "4.30", "4.31", "4.32", "4.40", "4.50",
             "4.60", "4.70", "4.80", "4.81")

_REG = (11, 12, 13, 14, 15)  # FileCreate, RegistryEvent x3, FileCreateStreamHash
_OLD_CLIPBOARD = {"drop_options": ("ClipboardInstance", "CaptureClipboard"),
                  "drop_events": (0xF002,)}

#: How each Windows build's ``-s`` output differs from the catalogue's schema of that version
#: (i.e. from the SysmonCommon manifest). ``lines`` = (dump-only lines, rendered-only lines) of a
#: line diff between the dump and ``render_manifest(get_schema(v), "windows")``.
#:   symbol_prefix  - builds up to 13.01 named events SYSMON_* (SysmonCommon: SYSMONEVENT_*)
#:   ruledefault    - explicit ruledefault="..." the build printed (SysmonCommon differs)
#:   argument       - option argument kinds the build printed (CheckRevocation was "none")
#:   drop_options / drop_events - absent from that build's manifest
#:   binary_version - manifest binaryversion the build printed (13.21/13.22 carried "14.1")
BUILD_DIFFERENCES: dict[str, dict] = {
    "sysmonv11.0_4.30.xml": dict(
        symbol_prefix="SYSMON_", argument={"CheckRevocation": "none"}, **_OLD_CLIPBOARD,
        ruledefault={2: "include", 6: "include", **{i: "include" for i in _REG}},
        lines=(25, 39)),
    "sysmonv11.10_4.32.xml": dict(
        symbol_prefix="SYSMON_", argument={"CheckRevocation": "none"}, **_OLD_CLIPBOARD,
        ruledefault={i: "include" for i in _REG}, lines=(25, 39)),
    "sysmonv11.11_4.32.xml": dict(
        symbol_prefix="SYSMON_", argument={"CheckRevocation": "none"}, **_OLD_CLIPBOARD,
        ruledefault={i: "include" for i in _REG}, lines=(25, 39)),
    "sysmonv12_4.40.xml": dict(
        symbol_prefix="SYSMON_", argument={"CheckRevocation": "none"},
        ruledefault={i: "include" for i in _REG}, lines=(26, 26)),
    "sysmonv12.03_4.40.xml": dict(
        symbol_prefix="SYSMON_", argument={"CheckRevocation": "none"}, lines=(26, 26)),
    "sysmonv13.01_4.50.xml": dict(symbol_prefix="SYSMON_", lines=(26, 26)),
    "sysmonv13.10_4.60.xml": dict(lines=(0, 0)),
    "sysmonv13.21_4.70.xml": dict(binary_version="14.1", drop_options=("Service",), lines=(1, 2)),
    "sysmonv13.22_4.70.xml": dict(binary_version="14.1", drop_options=("Service",), lines=(1, 2)),
    "sysmonv13.24_4.70.xml": dict(lines=(0, 0)),
    "sysmonv13.30_4.81.xml": dict(lines=(0, 0)),
    "sysmonv14.0_4.82.xml": dict(lines=(0, 0)),
}
WINDOWS_DUMPS = tuple(BUILD_DIFFERENCES)


# ---------------------------------------------------------------------------------------------
# corpus parsing


def _common_blocks(corpus: Path) -> dict[str, str]:
    """schemaversion text -> raw ``<manifest>...</manifest>`` block of the SysmonCommon file."""
    text = (corpus / COMMON).read_text()
    return {m.group(1): m.group(0) for m in
            re.finditer(r'<manifest schemaversion="([^"]+)".*?</manifest>', text, re.S)}


def _dump_block(path: Path) -> str:
    """The ``<manifest>`` block of a ``sysmon -s`` dump (banner lines dropped)."""
    text = path.read_text()
    return text[text.index("<manifest"):]


def _lines(text: str) -> list[str]:
    """Lines with line endings and trailing whitespace normalised."""
    return [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]


def _version_of(block: str) -> str:
    return re.search(r'schemaversion="([^"]+)"', block).group(1)


def _manifest_model(block: str, windows: bool) -> dict:
    """Comparable model of a manifest block. ``windows``: keep only what Windows ``-s`` shows."""
    root = ET.fromstring(block)
    options = []
    for o in root.find("configuration/options").findall("option"):
        a = o.attrib
        internal = a.get("target") == "internal"
        if windows and internal:
            continue
        options.append((a.get("switch"), a["name"], a["argument"], a.get("noconfig") == "true",
                        a.get("exclusive") == "true", a.get("rule") == "true",
                        a.get("forceconfig") == "true", internal))
    filters = root.find("configuration/filters")
    events = []
    for e in root.find("events").findall("event"):
        a = e.attrib
        events.append((int(a["value"], 0), a["name"], a["template"], a.get("rulename"),
                       int(a["version"]), a["level"], a.get("ruledefault"),
                       tuple((d.get("name"), d.get("inType"), d.get("outType"))
                             for d in e.findall("data"))))
    return {"binary": root.get("binaryversion"), "options": options,
            "filters": (filters.get("default"), tuple(filters.text.split(","))), "events": events}


def _schema_model(schema, windows: bool) -> dict:
    """The same model built from a :class:`Schema`."""
    options = [(o.switch, o.name, o.argument, o.noconfig, o.exclusive, o.rule, o.forceconfig,
                o.internal) for o in schema.options
               if not (windows and (o.internal or o.name in WINDOWS_HIDDEN_OPTIONS))]
    events = [(e.event_id, e.symbol, e.template, e.tag, e.version, e.level,
               e.default if e.default_attr else None,
               tuple((f.name, f.in_type, f.out_type) for f in e.fields))
              for e in schema.events.values() if not e.extension]
    return {"binary": schema.binary_version, "options": options,
            "filters": ("is", schema.conditions), "events": events}


def _as_built(schema, differences: dict):
    """``schema`` changed the way one Windows build's manifest differed (BUILD_DIFFERENCES)."""
    events = {}
    for event_id, e in schema.events.items():
        if event_id in differences.get("drop_events", ()):
            continue
        if "symbol_prefix" in differences:
            e = dataclasses.replace(
                e, symbol=e.symbol.replace("SYSMONEVENT_", differences["symbol_prefix"], 1))
        if event_id in differences.get("ruledefault", {}):
            e = dataclasses.replace(e, default=differences["ruledefault"][event_id],
                                    default_attr=True)
        events[event_id] = e
    options = tuple(
        dataclasses.replace(o, argument=differences.get("argument", {}).get(o.name, o.argument))
        for o in schema.options if o.name not in differences.get("drop_options", ()))
    return dataclasses.replace(
        schema, events=events, options=options,
        binary_version=differences.get("binary_version", schema.binary_version))


def _diff_counts(expected: list[str], got: list[str]) -> tuple[int, int]:
    removed = added = 0
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, expected, got, False).get_opcodes():
        if tag != "equal":
            removed += i2 - i1
            added += j2 - j1
    return removed, added


# ---------------------------------------------------------------------------------------------
# the corpus is what these tests expect


def test_corpus_inventory(corpus):
    blocks = _common_blocks(corpus)
    assert tuple(v for v in reversed(list(blocks)) if v.startswith("4.")) == COMMON_4X
    assert sorted(p.name for p in (corpus / WINDOWS_DIR).glob("*.xml")) == sorted(WINDOWS_DUMPS)


def test_catalogue_versions_cover_corpus(corpus):
    known = {format_version(v) for v in all_versions()}
    for text in COMMON_4X:
        assert format_version(get_schema(text).version) in known
        assert manifest_version_text(get_schema(text).version) == text
    for name in WINDOWS_DUMPS:
        v = _version_of(_dump_block(corpus / WINDOWS_DIR / name))
        assert get_schema(v).version_text == v


# ---------------------------------------------------------------------------------------------
# task 1: catalogue == manifests


@pytest.mark.parametrize("version", COMMON_4X)
def test_catalogue_matches_sysmoncommon_manifest(corpus, version):
    block = _common_blocks(corpus)[version]
    schema = get_schema(version)
    expected = _manifest_model(block, windows=False)
    got = _schema_model(schema, windows=False)
    assert got["binary"] == expected["binary"]
    assert got["filters"] == expected["filters"]
    assert got["options"] == expected["options"]
    assert [e[0] for e in got["events"]] == [e[0] for e in expected["events"]]
    for g, x in zip(got["events"], expected["events"], strict=False):
        assert g == x, f"event {x[0]:#x}"
    assert schema.version == get_schema(format_version(schema.version)).version


@pytest.mark.parametrize("version", COMMON_4X)
def test_derived_tags_and_config_entries_match_manifest(corpus, version):
    root = ET.fromstring(_common_blocks(corpus)[version])
    tags: dict[str, list[int]] = {}
    for e in root.find("events").findall("event"):
        if e.get("rulename"):
            tags.setdefault(e.get("rulename"), []).append(int(e.get("value"), 0))
    schema = get_schema(version)
    extension_tags = {e.tag for e in schema.events.values() if e.extension}
    assert {k: list(v) for k, v in schema.tags.items() if k not in extension_tags} == tags
    entries = set()
    for o in root.find("configuration/options").findall("option"):
        if o.get("noconfig") == "true" or o.get("target") == "internal":
            continue
        if o.get("rule") == "true":
            if o.get("forceconfig") == "true":
                entries.add(o.get("name") + "Config")
            continue
        entries.add(o.get("name"))
    assert schema.config_entries == entries


@pytest.mark.parametrize("dump", WINDOWS_DUMPS)
def test_catalogue_matches_windows_dump(corpus, dump):
    block = _dump_block(corpus / WINDOWS_DIR / dump)
    schema = get_schema(_version_of(block))
    expected = _manifest_model(block, windows=True)
    got = _schema_model(_as_built(schema, BUILD_DIFFERENCES[dump]), windows=True)
    assert got["binary"] == expected["binary"]
    assert got["filters"] == expected["filters"]
    assert got["options"] == expected["options"]
    assert [e[0] for e in got["events"]] == [e[0] for e in expected["events"]]
    for g, x in zip(got["events"], expected["events"], strict=False):
        assert g == x, f"event {x[0]:#x}"


@pytest.mark.parametrize("dump", [d for d, q in BUILD_DIFFERENCES.items() if len(q) > 1])
def test_each_listed_build_difference_is_real(dump):
    """Every entry of BUILD_DIFFERENCES changes the rendering (none is stale)."""
    schema = get_schema(re.search(r"_(4\.\d+)\.xml$", dump).group(1))
    plain = render_manifest(schema)
    for key, value in BUILD_DIFFERENCES[dump].items():
        if key != "lines":
            assert render_manifest(_as_built(schema, {key: value})) != plain, key


def test_private_event_ids_by_version():
    def sysmon_ids(v):
        return [i for i, e in get_schema(v).events.items() if not e.extension]
    assert sysmon_ids("4.23")[-3:] == [0xF001, 0xF002, 22]
    assert sysmon_ids("4.30")[-3:] == [22, 23, 0xF002]
    assert 0xF001 not in get_schema("4.30").events
    assert 0xF002 not in get_schema("4.40").events
    assert get_schema("4.32").events[0xF002].field_names[-2:] == ("Path", "Archived")


def test_option_order_changed_in_423():
    def config_order(v):
        return [o.name for o in get_schema(v).options if not o.noconfig and not o.internal]
    assert config_order("4.22")[:3] == ["HashAlgorithms", "NetworkConnect", "ImageLoad"]
    assert config_order("4.23")[:3] == ["ArchiveDirectory", "CaptureClipboard", "DriverName"]
    assert "ServiceArchiveDirectory" in get_schema("4.1").config_entries
    assert "ServiceArchiveDirectory" not in get_schema("4.0").config_entries
    assert "ServiceArchiveDirectory" not in get_schema("4.2").config_entries


# ---------------------------------------------------------------------------------------------
# get_schema selection rules (spec 1.6, 1.7)


def test_get_schema_selects_highest_not_above_request():
    assert get_schema("4.24").version == (4, 23)
    assert get_schema("4.29").version == (4, 23)
    assert get_schema("4.33").version == (4, 32)
    assert get_schema("4.0").version == (4, 0)
    assert get_schema((4, 85)).version == (4, 83)


def test_get_schema_version_text_is_a_float():
    assert get_schema("4.1") is get_schema("4.10")
    assert get_schema("4.2") is get_schema("4.20")
    assert get_schema("4.5").version == (4, 50)
    assert get_schema(" 4.50 ").version == (4, 50)


@pytest.mark.parametrize("text", ["3.40", "3.4", "2.0", "0.5"])
def test_get_schema_rejects_pre_4(text):
    with pytest.raises(SchemaVersionError, match="Incorrect or unsupported schema version"):
        get_schema(text)


def test_get_schema_pre_4_message():
    with pytest.raises(SchemaVersionError) as info:
        get_schema("3.40")
    assert str(info.value) == ("Incorrect or unsupported schema version 3.40. "
                               "Current Sysmon schema version 4.00")


@pytest.mark.parametrize("text", ["04.50", "4.5x", "", "abc", "4..5", "-4.5", "4,50"])
def test_get_schema_rejects_malformed(text):
    with pytest.raises(SchemaVersionError, match="Invalid schema version number"):
        get_schema(text)


def test_get_schema_rejects_newer_than_newest():
    newest = format_version(LATEST)
    assert get_schema(newest) is CURRENT
    assert extended(get_schema(newest)).events == CURRENT.events
    for text in ("4.92", "5.0", "10.1"):
        with pytest.raises(SchemaVersionError, match="newest supported is " + newest):
            get_schema(text)


# ---------------------------------------------------------------------------------------------
# task 2: render_manifest / render_schema_output


@pytest.mark.parametrize("dump", WINDOWS_DUMPS)
def test_render_windows_equals_dump(corpus, dump):
    """Line-for-line equality with the build's ``-s`` output (build differences applied)."""
    expected = _lines(_dump_block(corpus / WINDOWS_DIR / dump))
    schema = get_schema(_version_of("\n".join(expected)))
    differences = BUILD_DIFFERENCES[dump]
    assert _lines(render_manifest(_as_built(schema, differences), "windows")) == expected
    # Without them, exactly the documented number of lines differ (0 = exact equality).
    got = _lines(render_manifest(schema, "windows"))
    assert _diff_counts(expected, got) == differences["lines"]


@pytest.mark.parametrize("version", COMMON_4X)
def test_render_linux_equals_sysmoncommon_text(corpus, version):
    """The Linux form is the raw SysmonCommon text (indented from column 0, no blank lines)."""
    raw = _common_blocks(corpus)[version].split("\n")
    expected = [line[2:] if line.startswith("  ") else line for line in raw if line.strip()]
    assert _lines(render_manifest(get_schema(version), "linux")) == expected


def test_render_linux_equals_linux_dump_but_btf(corpus):
    """Sysmon for Linux 1.0.0 predates the BTF option the SysmonCommon 4.81 manifest now has."""
    expected = _lines((corpus / LINUX_DUMP).read_text())
    got = _lines(render_manifest(get_schema("4.81"), "linux"))
    btf = ('      <option switch="btf" name="BTF" argument="optional" target="all"'
           ' noconfig="true" />')
    assert got.index(btf) == 10
    assert got[:10] + got[11:] == expected


@pytest.mark.parametrize("version", [format_version(v) for v in all_versions()])
@pytest.mark.parametrize("style", ["windows", "linux"])
def test_render_every_version_is_wellformed(version, style):
    text = render_manifest(get_schema(version), style)
    root = ET.fromstring(text)
    assert root.get("schemaversion") == manifest_version_text(get_schema(version).version)
    assert [int(e.get("value"), 0) for e in root.iter("event")] == [
        i for i, e in get_schema(version).events.items() if not e.extension]
    assert not text.endswith("\n")
    internal = [o for o in root.iter("option") if o.get("name") == "TraceEvents"]
    if style == "windows":
        assert "target=" not in text and not internal
        assert 'name="BTF"' not in text
    if style == "linux" and get_schema(version).version >= (4, 50):
        assert internal and internal[0].get("target") == "internal"


def test_render_manifest_rejects_unknown_style():
    with pytest.raises(ValueError):
        render_manifest(CURRENT, "macos")
    with pytest.raises(ValueError):
        render_schema_output(None, "macos")


def test_windows_comments_placement():
    lines = render_manifest(get_schema("4.0")).split("\n")
    assert lines[3] == "      <!-- Command-line only options -->"
    i = lines.index("      <!-- Configuration file -->")
    assert 'name="HashAlgorithms"' in lines[i + 1]
    assert 'name="ConfigDefault"' in lines[i - 1]


def test_schema_output_default_is_newest():
    text, code = render_schema_output(None)
    assert code == 0
    # the newest manifest, plus the events no Sysmon manifest defines at the end of <events>
    assert text == render_manifest(CURRENT, extensions=True) + "\n"
    plain = render_manifest(CURRENT)
    head, tail = plain.split("  </events>")
    # SysmonX's configuration entries close <options>; without them, the rest is Sysmon's
    # manifest with the extension events closing <events>
    lines = text.split("\n")
    ext = ["      <!-- SysmonX: configuration entries not in Sysmon's manifest -->"] + [
        f'      <option name="{o.name}" argument="{o.argument}" />'
        for o in CURRENT.extension_options]
    i = lines.index(ext[0])
    assert lines[i:i + len(ext)] == ext and lines[i + len(ext)] == "    </options>"
    sysmons = "\n".join(lines[:i] + lines[i + len(ext):])
    assert sysmons.startswith(head) and "  </events>" + tail in sysmons
    assert '<event name="SYSMONXEVENT_SHELL_COMMAND" value="210"' in text
    # new-user report s14 #2/#9: the extension events in EventID order, one name prefix, and
    # each says its ruledefault (Sysmon's manifests leave it out where the event is off, so
    # a missing attribute read as "off" for events 100, 200-202 and 220, which are on)
    ext_events = re.findall(r'<event name="([A-Z_]+)" value="(\d+)"[^>]*?(?: ruledefault="(\w+)")?'
                            r' version', text[text.index("SYSMONEVENT_BPF_EVENT") - 20:])
    assert [int(v) for _, v, _ in ext_events] == sorted(int(v) for _, v, _ in ext_events)
    assert all(n.startswith(("SYSMONXEVENT_", "SYSMONEVENT_BPF")) for n, _, _ in ext_events)
    defaults = {int(v): d for _, v, d in ext_events}
    assert defaults == {100: "include", 200: "include", 201: "include", 202: "include",
                        210: "include", 211: "include", 212: "exclude", 213: "exclude",
                        220: "include", 1000: ""}
    # -s VERSION lists them too; Sysmon's manifest byte for byte without them
    assert render_schema_output(format_version(LATEST))[0] == text
    assert render_schema_output(format_version(LATEST), extensions=False)[0] == plain + "\n"
    assert text.startswith(f'<manifest schemaversion="{format_version(LATEST)}" ')


@pytest.mark.parametrize("arg, expected", [
    ("4.50", "4.50"), ("4.5", "4.50"), ("4.8", "4.83"), ("4.82", "4.82"), ("4.2", "4.23"),
    ("4.1", "4.1"), ("4.0", "4.0"), ("4", format_version(LATEST)), ("", format_version(LATEST)),
    ("4.3", "4.32"), ("4.9", "4.91"),
])
def test_schema_output_prefix_match_newest_first(arg, expected):
    text, code = render_schema_output(arg)
    assert code == 0
    assert text.count("<manifest ") == 1
    assert text.startswith(f'<manifest schemaversion="{expected}" ')


@pytest.mark.parametrize("arg", ["4.10", "4.20", "5", "3.40", "x", "4.99"])
def test_schema_output_no_match(arg):
    assert render_schema_output(arg) == (NO_MATCH_MESSAGE + "\n", NO_MATCH_EXIT_CODE)
    assert NO_MATCH_MESSAGE == "There is no schema that matches that version."
    assert NO_MATCH_EXIT_CODE == 0  # spec 6.4: -s exits 0; PrintSchema() has no failure path


@pytest.mark.parametrize("arg", ["all", "ALL", "All"])
@pytest.mark.parametrize("style", ["windows", "linux"])
def test_schema_output_all(arg, style):
    text, code = render_schema_output(arg, style)
    assert code == 0
    versions = re.findall(r'^<manifest schemaversion="([^"]+)"', text, re.M)
    assert versions == [manifest_version_text(v) for v in reversed(all_versions())]
    assert text == "".join(render_manifest(get_schema(v), style, True) + "\n"
                           for v in reversed(all_versions()))


def test_schema_output_linux_style():
    text, code = render_schema_output("4.81", "linux")
    assert code == 0
    assert 'target="internal"' in text and 'name="BTF"' in text


# ---------------------------------------------------------------------------------------------
# task 3: -? config


def test_config_help_exact_lines():
    text = render_config_help(CURRENT)
    lines = text.split("\n")
    v = format_version(LATEST)
    assert lines[0] == f"Configuration usage (current schema is version: {v}):"
    assert f'<Sysmon schemaversion="{v}">' in lines
    assert "    <ProcessTerminate onmatch=\"include\" />" in lines
    assert "Id     Tag                  Event" in lines
    assert "1      ProcessCreate        Process Create" in lines
    assert "15     FileCreateStreamHash File stream created" in lines
    assert "12     RegistryEvent        Registry object added or deleted" in lines
    assert "23     FileDelete           File Delete archived" in lines
    assert "29     FileExecutableDetected File Executable Detected" in lines
    assert "is            Default, values are equals." in lines
    assert "not begin with The field does not begin with this value." in lines
    assert text.endswith("\n")


def test_config_help_event_table_covers_filterable_events():
    lines = render_config_help(CURRENT).split("\n")
    start = lines.index("Id     Tag                  Event") + 1
    rows = lines[start:lines.index("", start)]
    expected = [e for e in CURRENT.events.values() if e.tag]
    assert [int(r.split()[0]) for r in rows] == [e.event_id for e in expected]
    assert rows == ["%-6d %-20s %s" % (e.event_id, e.tag, e.template) for e in expected]
    assert not {4, 16, 255} & {int(r.split()[0]) for r in rows}


def test_config_help_entries_and_conditions_follow_schema():
    text = render_config_help(get_schema("4.22"))
    assert text.startswith("Configuration usage (current schema is version: 4.22):\n")
    assert "  CopyOnDelete_PE" in text and "  DnsLookup" not in text
    assert "  ProcessAccessConfig" in text and "  PipeMonitoringConfig" in text
    assert "\nnot begin with" not in text and "\ncontains any " in text
    assert "\nexcludes any" not in text and "\nis any" not in text
    current = render_config_help(CURRENT)
    for entry in CURRENT.config_entries:
        assert re.search(rf"^  {re.escape(entry)} ", current, re.M), entry
    for condition in CURRENT.conditions:
        assert re.search(rf"^{re.escape(condition)} +\S", current, re.M), condition
    assert max(len(line) for line in current.split("\n")) <= 98
