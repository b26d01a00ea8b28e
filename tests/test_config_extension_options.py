"""SysmonX's own configuration entries (``<HeartbeatInterval>``, ``<YaraRules>``): catalogue
options with ``extension=True``, validated by the config reader with the element's line,
refused when extensions are off, printed by ``-s``/``-? config`` after Sysmon's, and never
written into a configuration Sysmon itself reads."""

from __future__ import annotations

import pytest
from lxml import etree

from sysmonx.config.cmdline import render_config_xml
from sysmonx.config.export import export_sysmon
from sysmonx.config.parse import MAX_HEARTBEAT_INTERVAL, parse_config, parse_heartbeat_interval
from sysmonx.core.errors import ConfigError
from sysmonx.schema import CURRENT, all_versions, get_schema
from sysmonx.schema.printer import render_config_help, render_manifest, render_schema_output
from sysmonx.windows.sensorconfig import derive_sensor_config


def xml(entry: str, version: str = "4.90") -> str:
    # the entry is on line 3, after an option of Sysmon's on line 2
    return (f'<Sysmon schemaversion="{version}">\n<HashAlgorithms>sha256</HashAlgorithms>\n'
            f'{entry}\n<EventFiltering><ProcessCreate onmatch="exclude"/></EventFiltering>\n'
            "</Sysmon>")


@pytest.mark.parametrize("text, seconds", [
    ("60", 60.0), ("0", 0.0), ("1", 1.0), (" 2.5\n", 2.5), ("86400", 86400.0), ("007", 7.0)])
def test_heartbeat_interval_is_read_from_the_config(text, seconds):
    cfg = parse_config(xml(f"<HeartbeatInterval>{text}</HeartbeatInterval>"), "c.xml")
    assert cfg.heartbeat_interval == seconds
    assert cfg.options == {"HashAlgorithms": "sha256", "HeartbeatInterval": text.strip()}
    assert cfg.hash_algorithms == ["SHA256"]


def test_heartbeat_interval_absent_is_none_and_any_schema_version_takes_it():
    assert parse_config(xml("")).heartbeat_interval is None
    for v in all_versions():
        text = f"{v[0]}.{v[1]:02d}"
        cfg = parse_config(xml("<HeartbeatInterval>5</HeartbeatInterval>", text))
        assert cfg.heartbeat_interval == 5.0, text
    # the last one wins, as for Sysmon's own options
    two = parse_config(xml("<HeartbeatInterval>5</HeartbeatInterval>"
                           "<HeartbeatInterval>7</HeartbeatInterval>"))
    assert two.heartbeat_interval == 7.0


@pytest.mark.parametrize("text, message", [
    ("abc", "'abc' is not a number of seconds (0 for none, or 1 to 86400)"),
    ("-5", "'-5' is not a number of seconds"),
    ("+5", "'+5' is not a number of seconds"),
    ("1e3", "'1e3' is not a number of seconds"),
    ("inf", "'inf' is not a number of seconds"),
    ("nan", "'nan' is not a number of seconds"),
    ("", "'' is not a number of seconds"),
    ("5 s", "'5 s' is not a number of seconds"),
    ("\u0665", "is not a number of seconds"),          # an Arabic-Indic digit: not ASCII
    ("0.5", "0.5 s is out of range (0 for none, or 1 to 86400 seconds)"),
    ("86401", "86401 s is out of range"),
])
def test_bad_heartbeat_interval_is_a_config_error_with_the_line(text, message):
    with pytest.raises(ConfigError) as exc:
        parse_config(xml(f"<HeartbeatInterval>{text}</HeartbeatInterval>"), "c.xml")
    assert str(exc.value).startswith("c.xml:3: <HeartbeatInterval>: ")
    assert message in str(exc.value)


def test_heartbeat_interval_element_shape_is_checked():
    with pytest.raises(ConfigError, match=r"c\.xml:3: No declaration for attribute unit"):
        parse_config(xml('<HeartbeatInterval unit="s">5</HeartbeatInterval>'), "c.xml")
    with pytest.raises(ConfigError, match=r"c\.xml:3: Element HeartbeatInterval may only contain"):
        parse_config(xml("<HeartbeatInterval><x/>5</HeartbeatInterval>"), "c.xml")


def test_every_error_of_the_file_is_reported():
    text = xml("<HeartbeatInterval>soon</HeartbeatInterval>").replace(
        '<ProcessCreate onmatch="exclude"/>', '<ProcessCreate onmatch="exclude">\n<Nope/>'
        "</ProcessCreate>")
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "c.xml")
    assert [(e.line, e.message.split(":")[0]) for e in exc.value.errors] == [
        (3, "<HeartbeatInterval>"), (5, "Element Nope is not a field of ProcessCreate in schema "
                                        "(No declaration for element Nope)")]


@pytest.mark.parametrize("entry", ["<HeartbeatInterval>60</HeartbeatInterval>",
                                   "<YaraRules>rules/</YaraRules>"])
def test_extensions_off_refuses_sysmonx_options_with_the_line(entry):
    name = entry[1:entry.index(">")]
    with pytest.raises(ConfigError) as exc:
        parse_config(xml(entry), "c.xml", extensions=False)
    assert str(exc.value) == (f"c.xml:3: <{name}> is a SysmonX option, not Sysmon's; SysmonX "
                              "extensions are disabled")
    # Sysmon's own options stay accepted
    assert parse_config(xml(""), "c.xml", extensions=False).options == {"HashAlgorithms": "sha256"}


def test_yara_rules_is_relative_to_the_config_file(tmp_path):
    cfg = parse_config(xml("<YaraRules> rules/ </YaraRules>"), str(tmp_path / "c.xml"))
    assert cfg.options["YaraRules"] == str(tmp_path / "rules")
    with pytest.raises(ConfigError, match=r"c\.xml:3: <YaraRules>: empty"):
        parse_config(xml("<YaraRules> </YaraRules>"), "c.xml")


def test_parse_heartbeat_interval_is_the_command_lines_check_too():
    assert parse_heartbeat_interval("0") == 0.0
    assert parse_heartbeat_interval(f"{MAX_HEARTBEAT_INTERVAL:.0f}") == 86400.0
    with pytest.raises(ValueError, match="out of range"):
        parse_heartbeat_interval("0.001")


# --- the schema: SysmonX's entries beside, never inside, Sysmon's manifests -------------------

def test_catalogue_keeps_extension_options_out_of_sysmons_options():
    for v in all_versions():
        s = get_schema(v)
        assert s.extension_entries == {"HeartbeatInterval", "YaraRules"}
        assert all(o.extension for o in s.extension_options)
        assert not s.extension_entries & s.config_entries
        assert not any(o.extension for o in s.options)
        assert not {o.name for o in s.options} & s.extension_entries


def test_schema_output_lists_extension_options_after_sysmons():
    text, code = render_schema_output(None)
    assert code == 0
    root = etree.fromstring(text.encode())
    names = [o.get("name") for o in root.iter("option")]
    assert names[-2:] == ["HeartbeatInterval", "YaraRules"]
    assert names[:-2] == [o.name for o in CURRENT.options if not o.internal
                          and o.name != "BTF"]
    hb = [o for o in root.iter("option") if o.get("name") == "HeartbeatInterval"][0]
    assert dict(hb.attrib) == {"name": "HeartbeatInterval", "argument": "required"}
    assert "<!-- SysmonX: configuration entries not in Sysmon's manifest -->" in text
    linux, _ = render_schema_output(None, "linux")
    assert '<option name="HeartbeatInterval" argument="required" target="all" />' in linux
    # Sysmon's manifests, byte for byte, do not have them
    for v in all_versions():
        for style in ("windows", "linux"):
            plain = render_manifest(get_schema(v), style, extensions=False)
            assert "HeartbeatInterval" not in plain and "SysmonX" not in plain
    plain, _ = render_schema_output("all", extensions=False)
    assert "HeartbeatInterval" not in plain and "YaraRules" not in plain


def test_config_help_lists_extension_entries_after_sysmons():
    lines = render_config_help(CURRENT).split("\n")
    start = lines.index("  Entry                  Value    Description") + 1
    names = [line.split()[0] for line in lines[start:lines.index("", start)]
             if not line.startswith("   ")]
    assert names[-2:] == ["HeartbeatInterval", "YaraRules"]
    assert set(names[:-2]) == CURRENT.config_entries
    row = [line for line in lines if line.startswith("  HeartbeatInterval ")][0]
    assert "Number" in row and "seconds between Heartbeat events (202)" in row


# --- configurations for Sysmon itself never carry them -----------------------------------------

def test_windows_sensor_config_leaves_sysmonx_options_out():
    user = parse_config(xml("<HeartbeatInterval>30</HeartbeatInterval>\n"
                            "<YaraRules>/opt/rules</YaraRules>"), "user.xml")
    sensor = derive_sensor_config(user, also_collect={1, 5})
    assert "HeartbeatInterval" not in sensor.xml and "YaraRules" not in sensor.xml
    assert "<HashAlgorithms>sha256</HashAlgorithms>" in sensor.xml
    again = parse_config(sensor.xml, "<sensor>", extensions=False)   # Sysmon accepts it
    assert again.options == {"HashAlgorithms": "sha256"} and again.heartbeat_interval is None


def test_config_export_sysmon_removes_sysmonx_options_with_their_lines():
    src = xml("<HeartbeatInterval>30</HeartbeatInterval>\n<YaraRules>rules/</YaraRules>")
    out, warnings = export_sysmon(src.encode(), "c.xml")
    assert b"HeartbeatInterval" not in out and b"YaraRules" not in out
    assert [str(w) for w in warnings] == [
        "c.xml:3: warning: <HeartbeatInterval> removed: a SysmonX option Sysmon does not have",
        "c.xml:4: warning: <YaraRules> removed: a SysmonX option Sysmon does not have"]
    plain = parse_config(out, "out.xml", extensions=False)          # real Sysmon's grammar
    assert plain.options == {"HashAlgorithms": "sha256"} and len(plain.rule_sets) == 1


def test_sysmonx_config_round_trips_through_its_xml():
    cfg = parse_config(xml("<HeartbeatInterval>15</HeartbeatInterval>"), "c.xml")
    back = parse_config(render_config_xml(cfg), "again.xml")
    assert back.heartbeat_interval == 15.0 and back.options == cfg.options
