"""Messages for mistakes in a Sysmon config and in regexes (new users' reports): a mistyped
condition gets a "did you mean", a lookaround gets what RE2 lacks and what to write instead,
with the rule and the line; one refused error gets the closing count line as several do.
Each test fails on the code before these messages."""

from __future__ import annotations

import pytest

from sysmonx.config import ConfigError, load_config
from sysmonx.core.regex import compile_pattern, re2_hint

CONFIG = """<Sysmon schemaversion="4.50">
  <EventFiltering>
    <RuleGroup name="" groupRelation="or">
      <ProcessCreate onmatch="include">
        <Rule name="encoded ps" groupRelation="and">
          {filter}
        </Rule>
      </ProcessCreate>
    </RuleGroup>
  </EventFiltering>
</Sysmon>
"""


def _error(tmp_path, flt: str, **kw) -> str:
    p = tmp_path / "c.xml"
    p.write_text(CONFIG.format(filter=flt))
    with pytest.raises(ConfigError) as exc:
        load_config(p, **kw)
    (err,) = exc.value.errors
    return str(err)


@pytest.mark.parametrize("typo, meant", [("contians", "contains"), ("end wiht", "end with"),
                                         ("is nto", "is not"), ("Begin With", None),
                                         ("regx", "regex"), ("zzz", None)])
def test_a_mistyped_condition_gets_did_you_mean(tmp_path, typo, meant):
    if typo == "Begin With":  # conditions are case-insensitive: no error at all
        p = tmp_path / "ok.xml"
        p.write_text(CONFIG.format(filter=f'<Image condition="{typo}">c:\\x</Image>'))
        load_config(p)
        return
    msg = _error(tmp_path, f'<Image condition="{typo}">c:\\x</Image>')
    assert msg.startswith(f"{tmp_path / 'c.xml'}:6: Unknown condition: {typo}\n")
    if meant is None:
        assert "Did you mean" not in msg
    else:
        assert msg.endswith(f'Did you mean condition="{meant}"?')


def test_regx_without_extensions_says_regex_is_refused_not_did_you_mean_it(tmp_path):
    msg = _error(tmp_path, '<Image condition="regex">x</Image>', extensions=False)
    assert "refused while extensions are off" in msg and "Did you mean" not in msg


def test_a_lookahead_says_re2_has_none_with_rule_and_line(tmp_path):
    msg = _error(tmp_path, '<CommandLine condition="regex">-enc(?=\\s)</CommandLine>')
    assert msg.startswith(f"{tmp_path / 'c.xml'}:6: invalid regex for CommandLine in "
                          "<ProcessCreate onmatch=\"include\"> rule 'encoded ps': invalid perl "
                          "operator: (?=; RE2 has no lookaround (lookahead or lookbehind)")


@pytest.mark.parametrize("pattern, words", [
    ("a(?!b)", "no lookaround"), ("(?<=a)b", "no lookaround"), ("(?<!a)b", "no lookaround"),
    ("(?>a)", "no atomic groups"), ("a*+", "no possessive"), ("(a)\\1", "no backreferences"),
    ("(?P<n>a)(?P=n)", "no named backreferences")])
def test_pcre_constructs_re2_lacks_are_named(pattern, words):
    with pytest.raises(ValueError) as exc:
        compile_pattern(pattern)
    assert f"; RE2 has {words}" in str(exc.value)


def test_other_re2_errors_are_left_as_re2_says_them():
    with pytest.raises(ValueError) as exc:
        compile_pattern("(")
    assert str(exc.value) == "missing ): ("
    assert re2_hint("invalid escape sequence: \\Z") == ""


def test_a_sigma_re_with_a_lookahead_is_reported_with_the_hint(tmp_path, capsys):
    import argparse

    from sysmonx.cli.common import load_detection, stderr_console
    (tmp_path / "la.yml").write_text(
        "title: la\nid: 11111111-1111-1111-1111-111111111111\nstatus: test\nlogsource:\n"
        "    product: windows\n    category: process_creation\ndetection:\n    sel:\n"
        "        CommandLine|re: 'a(?=b)'\n    condition: sel\n")
    load_detection([str(tmp_path / "la.yml")], stderr_console(),
                   argparse.Namespace(no_rule_cache=True, quiet=False))
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if "la.yml" in ln and "rejected [sigma]" in ln]
    # its only rule rejected: nothing loaded, which is fatal for a run
    assert "error: --rules: no Sigma rule loaded from" in err
    assert "rejected [sigma]" in line and "(?=" in line
    assert line.endswith("; RE2 has no lookaround (lookahead or lookbehind), which keeps its "
                         "matching linear in time: match the wanted part alone and test what "
                         "must or must not be next to it with another filter or selection, in "
                         "an AND group or an exclude")


def test_one_config_error_ends_with_the_count_line_as_several_do(tmp_path, capsys):
    from sysmonx.cli.common import print_config_errors, stderr_console
    p = tmp_path / "c.xml"
    p.write_text(CONFIG.format(filter='<Image condition="contians">x</Image>'))
    with pytest.raises(ConfigError) as exc:
        load_config(p)
    print_config_errors(stderr_console(), exc.value)
    assert capsys.readouterr().err.splitlines()[-1] == "1 error: the configuration is refused"
