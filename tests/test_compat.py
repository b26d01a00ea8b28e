"""Sysmon's own command line (``sysmonx -i/-c/-u/-s/-t/-? ...``): parsing rules, exit codes and
messages (spec/sysmon-semantics.md 6.1-6.4), the configuration switches merged into the model
(3.1, rule-blob.md 6.7), the ``-c`` dump format (6.3) and the ``-t`` console output (5.4)."""

import re
import io
import os
import shutil
import subprocess
import sys
import time

import pytest

from sysmonx.cli import sysmon as compat
from sysmonx.cli import main as cli_main
from sysmonx.cli.sysmon import CommandLineError, main, parse_command_line, render_dump
from sysmonx.config import ConfigError, parse_config
from sysmonx.config.blob import compile_blob
from sysmonx.config.cmdline import (SwitchOptions, empty_config, merge_command_line,
                                    render_config_xml, split_switch_list)
from sysmonx.event import Event
from sysmonx.filtering import FilterEngine

pytestmark = pytest.mark.live


def run(argv, root=None):
    out, err = io.StringIO(), io.StringIO()
    if root is not None:
        argv = ["--install-root", str(root), *argv]
    code = main(argv, out, err)
    return code, out.getvalue(), err.getvalue()


def cfg(inner, version="4.90", options=""):
    return parse_config(f'<Sysmon schemaversion="{version}">{options}<EventFiltering>{inner}'
                        "</EventFiltering></Sysmon>", "c.xml")


# --- parsing (spec 6.1) --------------------------------------------------------------------------

def parsed(*argv):
    p = parse_command_line(list(argv), ("-",))
    return p.set, p.values


def test_values_required_optional_none():
    assert parsed("-i", "c.xml") == (["Install"], {"Install": "c.xml"})
    assert parsed("-i") == (["Install"], {})
    # optional: the next argument is not taken when it starts with a switch character
    assert parsed("-c", "--") == (["Configuration", "ConfigDefault"], {})
    # required: the next argument is taken whatever it is
    assert parsed("-h", "-n") == (["HashAlgorithms"], {"HashAlgorithms": "-n"})
    with pytest.raises(CommandLineError, match="needs a value"):
        parse_command_line(["-h"], ("-",))
    assert parsed("-accepteula", "-nologo") == (["AcceptEula", "NoLogo"], {})


def test_case_insensitive_and_multi_letter_prefix():
    assert parsed("-I", "x.xml") == (["Install"], {"Install": "x.xml"})
    assert parsed("-AcceptEula") == (["AcceptEula"], {})
    # a multi-letter switch matches a prefix of the argument; the rest is ignored (Sysmon)
    assert parsed("-nologoXYZ") == (["NoLogo"], {})
    assert parsed("-service") == (["Service"], {})
    assert parsed("-btf", "/sys/kernel/btf/vmlinux")[1] == {"BTF": "/sys/kernel/btf/vmlinux"}


def test_one_letter_concatenation_only_in_manifest_order():
    assert parsed("-in") == (["Install", "NetworkConnect"], {})
    assert parsed("-in", "chrome") == (["Install", "NetworkConnect"], {"NetworkConnect": "chrome"})
    assert parsed("-ih", "md5") == (["Install", "HashAlgorithms"], {"HashAlgorithms": "md5"})
    assert parsed("-c-") == (["Configuration", "ConfigDefault"], {})
    with pytest.raises(CommandLineError):
        parse_command_line(["-ni"], ("-",))        # n comes after i in the manifest
    with pytest.raises(CommandLineError):
        parse_command_line(["-hi", "md5"], ("-",))  # a value switch must be the last letter
    with pytest.raises(CommandLineError):
        parse_command_line(["-tverbose"], ("-",))


def test_exclusive_group():
    for a, b in (("-i", "-c"), ("-u", "-s"), ("-c", "-c"), ("-i", "-m")):
        with pytest.raises(CommandLineError, match="cannot be combined"):
            parse_command_line([a, b], ("-",))
    assert parsed("-i", "-accepteula", "-n")[0] == ["Install", "AcceptEula", "NetworkConnect"]


def test_dns_is_shadowed_by_d_as_in_sysmon():
    with pytest.raises(CommandLineError, match="-d takes a value"):
        parse_command_line(["-dns"], ("-",))


def test_not_a_switch_and_value_twice():
    with pytest.raises(CommandLineError, match="not a switch"):
        parse_command_line(["config.xml"], ("-",))
    with pytest.raises(CommandLineError, match="given twice"):
        parse_command_line(["-n", "a", "-n", "b"], ("-",))
    with pytest.raises(CommandLineError, match="unknown switch"):
        parse_command_line(["-q"], ("-",))


def test_slash_prefix_only_in_windows_style(monkeypatch):
    with pytest.raises(CommandLineError):
        parse_command_line(["/i"], ("-",))
    assert parse_command_line(["/i", "x.xml"], ("-", "/")).values == {"Install": "x.xml"}
    # an optional value starting with '/' is a switch on Windows but a path on Linux
    assert parse_command_line(["-i", "/etc/x.xml"], ("-",)).values == {"Install": "/etc/x.xml"}
    assert parse_command_line(["-i", "/accepteula"], ("-", "/")).values == {}  # a switch there
    monkeypatch.setenv("SYSMONX_SWITCH_STYLE", "windows")
    assert compat.switch_prefixes() == ("-", "/")
    monkeypatch.setenv("SYSMONX_SWITCH_STYLE", "linux")
    assert compat.switch_prefixes() == ("-",)


def test_split_sysmonx_options():
    opts, rest = compat.split_sysmonx_options(
        ["--install-root", "/r", "-i", "c.xml", "--output-file=/o", "--no-dns", "--backend",
         "audit"])
    assert opts == {"install-root": "/r", "output-file": "/o", "no-dns": True, "backend": "audit"}
    assert rest == ["-i", "c.xml"]


# --- dispatch, messages and exit codes (spec 6.2, 6.4) -------------------------------------------

def test_parse_failure_prints_usage_to_stderr_and_exits_87():
    code, out, err = run(["-q"])
    assert code == 87 and out == ""
    assert "Usage:" in err and "Install:                 sysmonx -i [<configfile>]" in err
    code, out, err = run(["-dns"])
    assert code == 87 and "-d <DriverName>" in err


def test_help_and_config_help():
    for first in ("-?", "-h", "-help", "-HELP"):
        code, out, err = run([first])
        assert code == 0 and out.startswith("Usage:")
    # new-user report s14 #8: the closing lines name every SysmonX command
    from sysmonx.cli.dispatch import SUBCOMMANDS
    tail = out[out.index("SysmonX commands:"):out.index("Neither install")]
    assert all(re.search(rf"\b{c}\b", tail) for c in SUBCOMMANDS)
    assert all(c in tail for c in ("check", "explain", "stats", "diff", "compile", "decode",
                                   "export"))
    code, out, _ = run(["-?", "config"])
    assert code == 0 and out.startswith("Configuration usage (current schema is version: 4.91):")
    # -h <algs> as the first argument is help, as in Sysmon for Linux
    assert run(["-h", "md5"])[0] == 0


def test_schema_switch_keeps_working(capsys):
    code, out, _ = run(["-s", "4.50"])
    assert code == 0 and out.startswith('<manifest schemaversion="4.50" binaryversion="13.0">')
    assert cli_main(["-s", "4.50"]) == 0
    assert capsys.readouterr().out.startswith('<manifest schemaversion="4.50"')
    code, out, _ = run(["-s", "9.9"])
    assert code == 0 and out == "There is no schema that matches that version.\n"


def test_double_dash_needs_c():
    code, out, _ = run(["--"])
    assert code == 87
    assert out == "The '--' switch must be used with -c switch (config update) to set defaults.\n\n"


@pytest.mark.parametrize("argv", [["-d", "drv"], ["-a", "arch"], ["-r"], ["-i", "-r"],
                                  ["-z", "1"]])
def test_options_not_implemented_on_linux(argv):
    code, out, _ = run(argv)
    assert code == 87 and out == "\nOption not implemented on Linux.\n\n"


def test_config_options_not_implemented_on_linux(tmp_path):
    c = tmp_path / "c.xml"
    c.write_text('<Sysmon schemaversion="4.90"><CheckRevocation/></Sysmon>')
    code, out, _ = run(["-i", str(c)], tmp_path / "root")
    assert code == 87 and out.endswith("\nOption not implemented on Linux.\n\n")
    assert not (tmp_path / "root").exists()


def test_debug_mode_value(tmp_path):
    code, out, _ = run(["-t", "loud"])
    assert code == 87 and out == "Possible options for DebugMode: verbose\n\n"
    # a config given to -t (a new user's guess): Sysmon's line, then where a config goes
    c = tmp_path / "c.xml"
    c.write_text('<Sysmon schemaversion="4.90"/>')
    code, out, _ = run(["-t", str(c)])
    assert code == 87 and out.startswith("Possible options for DebugMode: verbose\n")
    assert f"a config goes with -c or -i: 'sysmonx -t -c {c}'" in out


def test_non_root_refused_with_740(monkeypatch):
    monkeypatch.setattr(compat, "is_root", lambda: False)
    for argv in (["-i"], ["-c"], ["-u"], ["-t"]):
        code, out, _ = run(argv)
        assert code == 740 and out == "You need to run Sysmon as root.\n\n"
    assert run(["-s", "4.50"])[0] == 0  # printing the schema needs no root


@pytest.fixture
def as_root(monkeypatch):
    monkeypatch.setattr(compat, "is_root", lambda: True)


def test_uninstall_value(as_root, tmp_path):
    code, out, err = run(["-u", "now"], tmp_path)
    assert code == 87 and "Invalid option for -u.\n" in out and "Usage:" in err


def test_config_commands_without_installation(as_root, tmp_path):
    code, out, _ = run(["-nologo", "-c"], tmp_path)
    assert (code, out) == (87, "Sysmon is not running\n")
    c = tmp_path / "c.xml"
    c.write_text('<Sysmon schemaversion="4.90"/>')
    code, out, _ = run(["-nologo", "-c", str(c)], tmp_path)
    assert code == 87 and out.endswith("Error: Sysmon is not installed.\n")
    code, out, _ = run(["-nologo", "-c", "--", "-n"], tmp_path)
    assert (code, out) == (87, "Cannot use specific settings with enforcing defaults.\n\n")
    code, out, _ = run(["-nologo", "-c", str(c), "--"], tmp_path)
    assert code == 87 and out.endswith("Cannot use specific settings with enforcing defaults.\n\n")
    code, out, _ = run(["-nologo", "-u"], tmp_path)
    assert (code, out) == (87, "Sysmon is not installed.\n")


def test_invalid_config_is_87_with_line_and_writes_nothing(as_root, tmp_path):
    c = tmp_path / "bad.xml"
    c.write_text('<Sysmon schemaversion="4.90">\n<EventFiltering>\n<ProcessCreate '
                 'onmatch="include">\n<Imagee>x</Imagee></ProcessCreate></EventFiltering>'
                 "</Sysmon>")
    root = tmp_path / "root"
    code, out, err = run(["-nologo", "-i", str(c)], root)
    assert code == 87 and f"{c}:4:" in err and "Usage:" in err
    assert not root.exists()
    # new-user report s14 #5: the outcome after the usage text, not only the errors above it
    assert err.endswith(f"\nConfiguration {c} refused (1 error above): nothing was installed "
                        "or changed; a running service keeps its configuration.\n")


def test_nothing_to_do_is_usage(as_root):
    code, _, err = run(["-accepteula"])
    assert code == 87 and "Usage:" in err


def test_subcommands_and_version_still_route(capsys):
    assert cli_main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("sysmonx ")
    assert cli_main(["--help"]) == 0
    assert "sysmonx replay" in capsys.readouterr().out


# --- configuration switches merged into the model (spec 3.1) -----------------------------------

def test_split_switch_list_like_stringlistdup():
    assert split_switch_list("chrome.exe,firefox.exe") == ["chrome.exe", "firefox.exe"]
    assert split_switch_list("my,,app.exe,b") == ["my,app.exe", "b"]
    assert split_switch_list("a,b,") == ["a", "b"]
    assert split_switch_list(",a") == []
    assert split_switch_list("") == []


def test_n_procs_prepended_to_first_include_set():
    c = cfg('<NetworkConnect onmatch="include"><DestinationPort>443</DestinationPort>'
            '</NetworkConnect><NetworkConnect onmatch="include"><DestinationPort>80'
            '</DestinationPort></NetworkConnect>')
    m = merge_command_line(c, SwitchOptions(network="chrome.exe,curl"))
    first = m.rule_sets[0]
    assert [(f.field, f.condition, f.value, f.name) for f in first.filters[:2]] == [
        ("Image", "image", "chrome.exe", ""), ("Image", "image", "curl", "")]
    assert first.filters[2].field == "DestinationPort" and len(m.rule_sets[1].filters) == 1
    assert len(c.rule_sets[0].filters) == 1  # the input is not modified
    # the prepended filters take the set's combine type: AND with the other fields
    eng = FilterEngine(m)
    assert eng.decide(3, {"Image": "C:\\x\\chrome.exe", "DestinationPort": "443"}) == (True, "-")
    assert eng.decide(3, {"Image": "C:\\x\\chrome.exe", "DestinationPort": "22"}) == (False, "-")
    assert any("ANDed" in w.message for w in m.warnings)


def test_n_procs_with_exclude_set_is_incompatible():
    c = cfg('<NetworkConnect onmatch="exclude"><DestinationPort>443</DestinationPort>'
            '</NetworkConnect>')
    with pytest.raises(ConfigError, match="Incompatible configuration and command-line rule on "
                                          "NetworkConnect"):
        merge_command_line(c, SwitchOptions(network="chrome.exe"))


def test_procs_without_a_set_append_or_include_sets_imageload_first():
    m = merge_command_line(cfg('<ProcessCreate onmatch="exclude"/>'),
                           SwitchOptions(network="a.exe,b.exe", image_load="c.exe"))
    assert [(rs.tag, rs.onmatch, rs.relation, len(rs.filters)) for rs in m.rule_sets] == [
        ("ProcessCreate", "exclude", "and", 0), ("ImageLoad", "include", "or", 1),
        ("NetworkConnect", "include", "or", 2)]
    eng = FilterEngine(m)
    assert eng.decide(3, {"Image": "C:\\b.exe"}) == (True, "-")
    assert eng.decide(3, {"Image": "C:\\z.exe"}) == (False, "-")
    # the blob gets the command-line sets after the file's, as Sysmon appends them
    assert compile_blob(m)


def test_n_without_list_logs_all_network_when_no_set():
    m = merge_command_line(None, SwitchOptions(network=""))
    assert FilterEngine(m).decide(3, {"Image": "x"}) == (True, "-")
    assert FilterEngine(empty_config()).decide(3, {"Image": "x"}) == (False, "-")
    c = cfg('<NetworkConnect onmatch="include"><DestinationPort>443</DestinationPort>'
            '</NetworkConnect>')
    assert len(merge_command_line(c, SwitchOptions(network="")).rule_sets) == 1


def test_h_switch_and_config_value():
    m = merge_command_line(None, SwitchOptions(hash_algorithms="md5,SHA256"))
    assert m.hash_algorithms == ["MD5", "SHA256"] and m.options["HashAlgorithms"] == "md5,SHA256"
    c = cfg("", options="<HashAlgorithms>sha1</HashAlgorithms>")
    m = merge_command_line(c, SwitchOptions(hash_algorithms="md5"))
    assert m.hash_algorithms == ["SHA1"]
    assert any("Command-line switch 'h' was overwritten by configuration node 'HashAlgorithms'"
               in w.message for w in m.warnings)
    with pytest.raises(ConfigError, match="Invalid hashing algorithm: crc"):
        merge_command_line(None, SwitchOptions(hash_algorithms="crc"))


def _model(c):
    return ([(rs.tag, rs.event_id, rs.onmatch, rs.relation,
              [(f.field, f.condition, f.value, f.name) for f in rs.filters],
              sorted((a.relation, repr(a.name)) for a in rs.aggregates.values()))
             for rs in c.rule_sets], c.options, c.hash_algorithms, c.field_sizes)


def test_render_config_xml_round_trips_corpus_configs(corpus):
    files = sorted((corpus / "configs").rglob("*.xml"))
    done = 0
    for path in files:
        try:
            c = parse_config(path.read_bytes(), str(path))
        except ConfigError:
            continue
        back = parse_config(render_config_xml(c, comment="x -- y"), "back.xml")
        assert _model(back) == _model(c), path
        try:
            blob = compile_blob(c)
        except Exception:  # noqa: BLE001 - a config the blob compiler refuses is not compared
            continue
        assert compile_blob(back) == blob, path
        done += 1
    assert done > 100


def test_render_config_xml_keeps_odd_values():
    c = cfg('<RuleGroup name="g" groupRelation="or"><ProcessCreate onmatch="include">'
            '<Image condition="contains"> a&amp;b&lt;c&#13;</Image>'
            '<Rule name="r"><CommandLine name="">x</CommandLine><User>y</User></Rule>'
            '</ProcessCreate></RuleGroup>')
    back = parse_config(render_config_xml(c))
    assert _model(back) == _model(c)
    assert back.rule_sets[0].filters[0].value == " a&b<c\r"


# --- -c dump format (spec 6.3) -----------------------------------------------------------------

DUMP_CFG = """<Sysmon schemaversion="4.90">
  <EventFiltering>
    <RuleGroup name="grp" groupRelation="or">
      <ProcessCreate onmatch="include">
        <Image condition="end with">/bash</Image>
        <Rule name="a compound rule with a rather long name" groupRelation="and">
          <CommandLine condition="contains">-c</CommandLine>
          <ParentImage condition="not begin with">/usr/sbin/</ParentImage>
        </Rule>
        <Rule>
          <User>root</User>
        </Rule>
      </ProcessCreate>
    </RuleGroup>
    <ProcessCreate onmatch="include"><Image>/bin/ls</Image></ProcessCreate>
    <ProcessCreate onmatch="exclude"><Image>/bin/true</Image></ProcessCreate>
    <NetworkConnect onmatch="exclude"/>
    <FileCreate onmatch="include"><TargetFilename condition="begin with">/etc/</TargetFilename>
    </FileCreate>
  </EventFiltering>
</Sysmon>"""


def test_dump_lines():
    c = parse_config(DUMP_CFG)
    text = render_dump(compile_blob(c), "CommandLine:100,Image:20")
    lines = text.split("\n")
    assert lines[0] == " - Field Sizes:                   CommandLine:100,Image:20"
    assert len(" - Field Sizes:".ljust(34)) == 34 and lines[0][34:] == "CommandLine:100,Image:20"
    assert lines[1] == ""
    assert lines[2] == "Rule configuration (version 4.90):"
    assert lines[3] == (" - ProcessCreate                      onmatch: include   combine rules "
                        "using 'Or'")
    assert lines[3][3:37] == "ProcessCreate".ljust(34)
    assert lines[4] == "\tImage                          filter: end with     value: '/bash'"
    assert lines[5] == "\tCompound Rule a compound rule with a rather lo   combine using And"
    assert lines[6] == ("\t    CommandLine                    filter: contains     value: '-c'")
    assert lines[7] == ("\t    ParentImage                    filter: not begin with value: "
                        "'/usr/sbin/'")
    assert lines[8] == "\tCompound Rule 0002   combine using Or"
    assert lines[9] == "\t    User                           filter: is           value: 'root'"
    # the second include ProcessCreate set follows one with the same tag and onmatch: skipped
    assert lines[10] == (" - ProcessCreate                      onmatch: exclude   combine rules "
                         "using 'And'")
    assert lines[11] == "\tImage                          filter: is           value: '/bin/true'"
    assert lines[12] == (" - NetworkConnect                     onmatch: exclude   combine rules "
                         "using 'And'")
    assert lines[13] == (" - FileCreate                         onmatch: include   combine rules "
                         "using 'And'")
    assert lines[14].startswith(
        "\tTargetFilename                 filter: begin with   value: '/etc/'")
    assert text.endswith("'/etc/'\n") and "/bin/ls" not in text


def test_dump_without_rules():
    assert render_dump(None) == "No rules installed\n"
    assert render_dump(b"", "Image:20") == (" - Field Sizes:                   Image:20\n"
                                           "No rules installed\n")


# --- -t console mode (spec 5.4) ----------------------------------------------------------------

def _traced(stage, event_id, data):
    """Run one Linux-Sysmon event through a tracing filter stage: (kept, trace texts)."""
    traces = []
    ev = Event(event_id, dict(data), provider="Linux-Sysmon")
    kept = stage.process(ev, lambda t: traces.append(t.text))
    return kept, ev, "".join(traces)


def test_console_writer_and_rule_traces():
    c = parse_config(DUMP_CFG)
    from sysmonx.filtering import EngineOptions
    from sysmonx.filtering.stage import FilterStage
    from sysmonx.sinks.console import ConsoleSink
    opts = EngineOptions(compare_fold="upper")
    stage = FilterStage(c, opts, without_config="defaults", trace="summary")
    kept, ev, line = _traced(stage, 1, {"Image": "/bin/bash", "User": "x"})
    assert (kept, ev.data.get("RuleName")) == (True, "grp")
    kept4, ev4, line4 = _traced(stage, 4, {"State": "Started"})
    assert (kept4, ev4.data.get("RuleName")) == (True, None)
    line += line4
    assert line.startswith("[R] Event 1 ProcessCreate: include by rule set 1 (onmatch=include "
                           "line 4; Image end with '/bash'), RuleName: grp")
    assert line.count("\n") == 1  # event 4 is not filtered: no trace
    verbose = FilterStage(c, opts, without_config="defaults", trace="verbose")
    _, _, text = _traced(verbose, 1, {"Image": "/bin/true"})
    assert all(x.startswith("[R] ") for x in text.splitlines())
    assert "[R]   [3] ProcessCreate onmatch=exclude" in text and "[R] Decision: exclude" in text
    w = io.StringIO()
    ConsoleSink(w).write(Event(1, {"RuleName": "-", "Image": "/bin/ls"}))
    assert w.getvalue() == "Event SYSMONEVENT_CREATE_PROCESS\n\tRuleName: -\n\tImage: /bin/ls\n"


def _live_backend():
    if os.geteuid() != 0:
        return None, "needs root"
    from sysmonx.sensor.backends import probe
    reasons = {}
    for name in ("cnproc", "audit", "ebpf"):
        reason = probe(name)
        if reason is None:
            return name, None
        reasons[name] = reason
    return None, "; ".join(f"{k}: {v}" for k, v in reasons.items())


def test_debug_mode_live(tmp_path):
    backend, why = _live_backend()
    if backend is None:
        pytest.skip(f"no live backend can run here ({why})")
    c = tmp_path / "c.xml"
    c.write_text('<Sysmon schemaversion="4.81"><EventFiltering><RuleGroup name="tgrp" '
                 'groupRelation="or"><ProcessCreate onmatch="include"><Image condition="end with">'
                 '/true</Image></ProcessCreate></RuleGroup></EventFiltering></Sysmon>')
    proc = subprocess.Popen([sys.executable, "-m", "sysmonx.cli", "-t", "-i", str(c),
                             "--duration", "4", "--backend", backend, "--no-dns"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    subprocess.run([shutil.which("true") or "/bin/true"])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Event SYSMONEVENT_SERVICE_STATE_CHANGE\n\tUtcTime: " in out
    assert "\tState: Started\n" in out
    assert "[R] Event 1 ProcessCreate: include by rule set 1" in out and "RuleName: tgrp" in out
    assert "\tRuleName: tgrp\n" in out


def test_console_output_cannot_drive_the_terminal():
    from sysmonx.sinks.console import ConsoleSink
    w = io.StringIO()
    ConsoleSink(w).write(Event(1, {"CommandLine": "a\x1b[2Jb\u202ec\rd\te"}))
    assert w.getvalue() == ("Event SYSMONEVENT_CREATE_PROCESS\n"
                            "\tCommandLine: a\\u001b[2Jb\\u202ec\\u000dd\te\n")
    c = cfg('<ProcessCreate onmatch="include"><CommandLine condition="contains">b'
            '</CommandLine></ProcessCreate>')
    from sysmonx.filtering.explain import explain, format_explanation
    text = format_explanation(explain(c, 1, {"CommandLine": "a\x1b[2Jb"}))
    assert "\x1b" not in text and "\\x1b[2Jb" in text
