"""What a new user reads when rules or a config do not load: Sigma load issues are one line of
counts (with and without ``-q``; ``--rule-issues`` lists them), and the unknown condition /
modifier messages name what SysmonX does accept, from the registries (``regex``, ``re``)."""

from __future__ import annotations

import pytest

from sysmonx.cli import builtin_sample_path, main
from sysmonx.config import ConfigError
from sysmonx.core.registry import CONDITIONS as CONDITION_REGISTRY

BAD_MODIFIER = ("title: bad modifier\nid: 00000000-0000-0000-0000-0000000000d1\nlogsource:\n"
                "    product: windows\n    category: process_creation\ndetection:\n    sel:\n"
                "        CommandLine|regexp: 'a.c'\n    condition: sel\n")
BAD_LOGSOURCE = ("title: other product\nlogsource:\n    product: solaris\ndetection:\n"
                 "    sel:\n        CommandLine: x\n    condition: sel\n")
GOOD = ("title: good\nlogsource:\n    product: windows\n    category: process_creation\n"
        "detection:\n    sel:\n        CommandLine|re: 'a.c'\n    condition: sel\n")


def _rules(tmp_path):
    d = tmp_path / "rules"
    d.mkdir()
    (d / "a.yml").write_text(BAD_MODIFIER)
    (d / "b.yml").write_text(BAD_LOGSOURCE)
    (d / "c.yml").write_text(GOOD)
    return d


def test_sigma_load_issues_are_one_line_and_listed_with_rule_issues(tmp_path, capsys):
    d = _rules(tmp_path)
    argv = ["replay", str(builtin_sample_path()), "--rules", str(d), "--no-output",
            "--no-rule-cache"]
    for quiet in (["-q"], []):  # the same line, with and without -q
        assert main(argv + quiet) == 0
        err = capsys.readouterr().err
        lines = [x for x in err.splitlines() if x.startswith("sigma:")]
        assert lines == ["sigma: load issues (listed with --rule-issues): 1 rejected logsource, "
                         "1 rejected sigma",
                         "sigma: 1 rule and 0 correlations loaded, 2 rejected, of 3 read "
                         "(compiled; rule cache off)"], err
    assert main(argv + ["--rule-issues"]) == 0  # one line per issue
    err = capsys.readouterr().err
    assert "a.yml: rejected [sigma] 00000000-0000-0000-0000-0000000000d1 (bad modifier)" in err
    assert "b.yml: rejected [logsource] (other product)" in err
    assert "load issues (listed with" not in err


def test_the_loaded_line_says_whether_the_rules_came_from_the_cache(tmp_path, capsys):
    """A new user could not tell a compiled start from a cached one but by its time."""
    d = _rules(tmp_path)
    cache = tmp_path / "cache"
    argv = ["replay", str(builtin_sample_path()), "--rules", str(d), "--no-output", "-q",
            "--rule-cache", str(cache)]

    def loaded():
        assert main(argv) == 0
        return [x for x in capsys.readouterr().err.splitlines() if x.startswith("sigma: ")
                and "correlations loaded" in x]
    assert loaded() == ["sigma: 1 rule and 0 correlations loaded, 2 rejected, of 3 read (compiled "
                        f"and stored in the rule cache in {cache})"]
    assert loaded() == ["sigma: 1 rule and 0 correlations loaded, 2 rejected, of 3 read (from the "
                        f"rule cache in {cache})"]


def test_unknown_modifier_lists_the_known_ones(tmp_path, capsys):
    d = _rules(tmp_path)
    assert main(["replay", str(builtin_sample_path()), "--rules", str(d), "--no-output",
                 "--no-rule-cache", "--rule-issues"]) == 0
    line = next(x for x in capsys.readouterr().err.splitlines() if "bad modifier" in x)
    assert "Unknown modifier 'regexp'" in line
    known = line.split("(known modifiers: ", 1)[1].rstrip(")").split(", ")
    assert {"re", "contains", "cidr", "utf16le", "windash"} <= set(known)


def _config(tmp_path, condition: str):
    bad = tmp_path / "bad.xml"
    bad.write_text('<Sysmon schemaversion="4.90">\n<EventFiltering>\n'
                   f'<ProcessCreate onmatch="include"><Image condition="{condition}">x</Image>'
                   "</ProcessCreate></EventFiltering></Sysmon>")
    return bad


def test_unknown_condition_names_the_extensions_from_the_registry(tmp_path):
    from sysmonx.config import load_config
    with pytest.raises(ConfigError) as ei:
        load_config(str(_config(tmp_path, "sounds like")))
    msg = str(ei.value)
    # Sysmon's own two lines first, unchanged
    assert "Unknown condition: sounds like\nExpected values are is, is not, contains," in msg
    extensions = [e.name for e in CONDITION_REGISTRY.entries()
                  if getattr(e.obj, "extension", False)]
    assert "regex" in extensions
    assert msg.rstrip().endswith("SysmonX extensions also accepted: " + ", ".join(extensions))


def test_extension_condition_without_extensions_says_why(tmp_path, capsys):
    bad = _config(tmp_path, "regex")
    assert main(["replay", str(builtin_sample_path()), "--config", str(bad), "-q",
                 "--no-extensions"]) == 1
    err = capsys.readouterr().err
    assert "Unknown condition: regex" in err
    assert "regex is a SysmonX extension, refused while extensions are off" in err
    assert "also accepted" not in err


def test_quiet_counts_the_unindexed_rules_note_it_holds_back(tmp_path, capsys):
    """A new user found the note on rules the prefilter cannot index hidden by -q and counted
    nowhere, although -q promises to count what it holds back."""
    d = tmp_path / "u"
    d.mkdir()
    (d / "u.yml").write_text(
        "title: Unindexed\nid: 00000000-0000-0000-0000-0000000000e1\nstatus: test\n"
        "level: low\nlogsource:\n    category: process_creation\n    product: windows\n"
        "detection:\n    selection:\n        Image|re: '.'\n    condition: not selection\n")
    argv = ["replay", str(builtin_sample_path()), "--rules", str(d), "--no-output",
            "--no-rule-cache"]
    assert main(argv + ["-q"]) == 0
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("sigma:")]
    # in words, not the code "note unindexed" a new user could not read
    assert lines[0] == ("sigma: load issues (listed with --rule-issues): 1 rule evaluated on "
                        "every event of its log source (nothing to prefilter on)")
    assert main(argv + ["--rule-issues"]) == 0
    assert "sigma: note: 1 rule without a value the prefilter can look for" in \
        capsys.readouterr().err
