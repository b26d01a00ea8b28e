"""Filter engine behaviours beyond the spec's vectors: multi-id binding by field position, named
options for uncertain behaviours, the regex extension, FieldSizes, document order in OR sets."""

import time

import pytest

from sysmonx.config import ConfigError, parse_config
from sysmonx.filtering import EngineOptions, FilterEngine, split_tokens, truncate_value
from sysmonx.filtering.conditions import contains_terms, is_any_terms


def cfg(inner: str, version: str = "4.90", **kw):
    return parse_config(f'<Sysmon schemaversion="{version}"><EventFiltering>{inner}'
                        "</EventFiltering></Sysmon>", **kw)


def test_registry_user_filter_binds_to_event_12_position():
    # User is field 7 of event 12 but field 8 of 13/14: a set bound to 12 never matches
    # User on 13/14 (spec 1.5: the field must exist at the same position).
    c = cfg('<RegistryEvent onmatch="include"><User condition="is">alice</User></RegistryEvent>')
    assert c.rule_sets[0].event_id == 12
    e = FilterEngine(c)
    assert e.decide(12, {"User": "alice"})[0] is True
    assert e.decide(13, {"User": "alice"})[0] is False
    assert e.decide(14, {"User": "alice"})[0] is False


def test_registry_details_binds_to_13_and_user_then_matches_14():
    c = cfg('<RegistryEvent onmatch="include"><Rule groupRelation="or">'
            '<Details condition="contains">x</Details><User condition="is">bob</User></Rule>'
            "</RegistryEvent>")
    assert c.rule_sets[0].event_id == 13
    e = FilterEngine(c)
    assert e.decide(14, {"User": "bob"})[0] is True       # User at index 8 in 13 and 14
    assert e.decide(12, {"User": "bob"})[0] is False      # index 8 does not exist in 12
    assert e.decide(13, {"Details": "axb"})[0] is True


def test_wmi_name_binds_to_19_only():
    c = cfg('<WmiEvent onmatch="include"><Name condition="contains">evil</Name></WmiEvent>')
    e = FilterEngine(c)
    assert e.decide(19, {"Name": "evil filter"})[0] is True
    assert e.decide(20, {"Name": "evil consumer"})[0] is False


def test_mixed_registry_fields_skip_set_with_warning():
    c = cfg('<RegistryEvent onmatch="include"><Rule groupRelation="and"><Details>a</Details>'
            "<NewName>b</NewName></Rule></RegistryEvent>")
    assert c.rule_sets == []
    assert "Incorrect field" in c.warnings[0].message


def test_fallback_intent_option_logs_unmatched_with_exclude_sets_only():
    inner = ('<RuleGroup groupRelation="or"><ProcessCreate onmatch="exclude"><Image>a.exe</Image>'
             '</ProcessCreate></RuleGroup><RuleGroup groupRelation="or">'
             '<ProcessCreate onmatch="exclude"><Image>b.exe</Image></ProcessCreate></RuleGroup>')
    assert FilterEngine(cfg(inner)).decide(1, {"Image": "c.exe"}) == (False, "-")
    intent = FilterEngine(cfg(inner), EngineOptions(fallback="intent"))
    assert intent.decide(1, {"Image": "c.exe"}) == (True, "-")
    assert intent.decide(1, {"Image": "a.exe"}) == (False, "-")


@pytest.mark.parametrize("indexed", [True, False], ids=["indexed", "walk"])
def test_stale_rulename_option(indexed):
    inner = ('<RuleGroup name="grp" groupRelation="and"><ProcessCreate onmatch="exclude">'
             '<Image name="ex-img" condition="end with">powershell.exe</Image><User>SYSTEM</User>'
             '</ProcessCreate></RuleGroup><RuleGroup groupRelation="or">'
             '<ProcessCreate onmatch="include"><CommandLine condition="contains">-nop'
             "</CommandLine></ProcessCreate></RuleGroup>")
    ev = {"Image": "C:\\powershell.exe", "User": "alice", "CommandLine": "powershell -nop"}
    assert FilterEngine(cfg(inner), EngineOptions(indexed=indexed)).decide(1, ev) == \
        (True, "ex-img")
    fresh = FilterEngine(cfg(inner), EngineOptions(stale_rulename=False, indexed=indexed))
    assert fresh.decide(1, ev) == (True, "-")


def test_compare_fold_upper_changes_order_of_underscore():
    # '_' (0x5F) sorts after 'A'-'Z' but before 'a'-'z': lower fold => 'a' > '_', upper => 'A' < '_'.
    inner = ('<RuleGroup groupRelation="or"><ProcessCreate onmatch="include">'
             '<Image condition="less than">_</Image></ProcessCreate></RuleGroup>')
    assert FilterEngine(cfg(inner)).decide(1, {"Image": "a"})[0] is False
    upper = FilterEngine(cfg(inner), EngineOptions(compare_fold="upper"))
    assert upper.decide(1, {"Image": "a"})[0] is True


def test_no_rule_defaults_profiles():
    assert FilterEngine(None).decide(6, {})[0] is False
    assert FilterEngine(None, EngineOptions(no_rule_defaults="community")).decide(6, {})[0] is True
    for eid in (4, 16, 255):
        assert FilterEngine(None).decide(eid, {}) == (True, None)


def test_never_filtered_even_with_rules_for_everything():
    e = FilterEngine(cfg('<ProcessCreate onmatch="include"/>'))
    assert e.decide(4, {"State": "Started"}) == (True, None)
    assert e.decide(9999, {}) == (True, None)


def test_regex_extension_case_insensitive_unanchored():
    inner = ('<RuleGroup groupRelation="or"><ProcessCreate onmatch="include">'
             '<CommandLine name="enc" condition="regex">-e(nc|ncodedcommand)?\\s+[a-z0-9+/=]{20,}'
             "</CommandLine></ProcessCreate></RuleGroup>")
    e = FilterEngine(cfg(inner))
    assert e.decide(1, {"CommandLine": "PowerShell -EncodedCommand SQBFAFgAIAAoAE4AZQB3AC0A"}) \
        == (True, "enc")
    assert e.decide(1, {"CommandLine": "powershell -enc short"}) == (False, "-")


def test_regex_rejected_without_extensions_and_invalid_pattern_has_line():
    inner = ('<ProcessCreate onmatch="include">\n<Image condition="regex">(a)\\1</Image>'
             "</ProcessCreate>")
    with pytest.raises(ConfigError, match="Unknown condition: regex"):
        cfg(inner, extensions=False)
    with pytest.raises(ConfigError, match="invalid regex") as ei:
        cfg(inner)
    assert ei.value.line == 2


def test_regex_is_linear_time_on_pathological_input():
    # A pattern that backtracks exponentially in Python's re; RE2 stays linear.
    inner = ('<RuleGroup groupRelation="or"><ProcessCreate onmatch="include">'
             '<CommandLine condition="regex">^(a+)+$</CommandLine></ProcessCreate></RuleGroup>')
    e = FilterEngine(cfg(inner))
    value = "a" * 50_000 + "!"
    start = time.process_time()
    assert e.decide(1, {"CommandLine": value})[0] is False
    assert time.process_time() - start < 2.0  # generous bound; Python's re would never finish


def test_plain_config_identical_with_and_without_extensions():
    inner = ('<RuleGroup groupRelation="or"><ProcessCreate onmatch="include">'
             '<Image condition="end with">\\cmd.exe</Image><CommandLine condition="contains any">'
             "-enc;bypass</CommandLine></ProcessCreate></RuleGroup>")
    a, b = FilterEngine(cfg(inner)), FilterEngine(cfg(inner, extensions=False))
    for ev in ({"Image": "C:\\cmd.exe"}, {"CommandLine": "x -ENC y"}, {"Image": "x"}):
        assert a.decide(1, ev) == b.decide(1, ev)


def test_field_sizes_truncation_after_filtering():
    c = parse_config('<Sysmon schemaversion="4.90"><FieldSizes>CommandLine:10,Image:2</FieldSizes>'
                     '<EventFiltering><RuleGroup groupRelation="or"><ProcessCreate onmatch="include">'
                     '<CommandLine condition="end with">tail-of-a-long-line</CommandLine>'
                     "</ProcessCreate></RuleGroup></EventFiltering></Sysmon>")
    e = FilterEngine(c)
    data = {"Image": "C:\\x.exe", "CommandLine": "a very long line ending in tail-of-a-long-line"}
    assert e.decide(1, data)[0] is True  # the filter saw the full value
    out = e.apply_field_sizes(1, data)
    assert out["CommandLine"] == "a very ..." and out["Image"] == "-"
    assert data["CommandLine"].endswith("tail-of-a-long-line")  # input untouched
    assert e.apply_field_sizes(29, {"Image": "C:\\long"})["Image"] == "C:\\long"  # quirk
    e2 = FilterEngine(c, EngineOptions(field_sizes_skip_last=False))
    assert e2.apply_field_sizes(29, {"Image": "C:\\long"})["Image"] == "-"


@pytest.mark.parametrize("value,size,expected", [
    ("ABCDEFGHIJKLMN", 5, "AB..."), ("ABC", 3, "ABC"), ("ABCD", 3, "..."), ("ABCD", 2, "-"),
    ("ABCD", 1, "-"), ("ABCD", 0, ""),
])
def test_truncate_value(value, size, expected):
    assert truncate_value(value, size) == expected


def test_split_tokens_quirks():
    assert split_tokens("a;b;") == [(0, 1), (2, 1), (4, 0)]
    assert contains_terms("a;b;") == ["a", "b", ""]
    assert contains_terms("a;;b") == ["a", ";b", "b"]
    assert contains_terms("") == [""]
    assert contains_terms(";cmd.exe") == [";cmd.exe", "cmd.exe"]
    assert is_any_terms(";;;;;;;") == frozenset()
    assert is_any_terms("80;;443") == {"80", "443"}


# Reproducers from review against SysmonCommon's NextItem/FindSubString (empty pieces search the
# rest of the value, and the pieces after them are still tested).
@pytest.mark.parametrize("cond,rule,value,expected", [
    ("contains any", "a.exe;;b.exe", "C:\\b.exe", True),
    ("is any", "80;;443", "443", True),
    ("contains any", "a.exe;;", "C:\\z.exe", True),
    ("contains any", ";cmd.exe", "C:\\cmd.exe", True),
    ("is any", ";", ";", False),
    ("contains all", "a;;b;c", "a;b c", False),
    ("contains all", "a;;b;c", "a;;b;c", True),
    ("excludes any", "a.exe;;b.exe", "C:\\b.exe", False),
])
def test_empty_token_semantics(cond, rule, value, expected):
    inner = ('<RuleGroup groupRelation="or"><ProcessCreate onmatch="include">'
             f'<CommandLine condition="{cond}">{rule}</CommandLine></ProcessCreate></RuleGroup>')
    assert FilterEngine(cfg(inner)).decide(1, {"CommandLine": value})[0] is expected


def test_rulename_is_dash_at_filter_time():
    inner = ('<RuleGroup groupRelation="or"><ProcessCreate onmatch="include">'
             "<RuleName>-</RuleName></ProcessCreate></RuleGroup>")
    e = FilterEngine(cfg(inner))
    assert e.decide(1, {"RuleName": "technique_id=T1059"}) == (True, "-")


def test_utf16_units_in_truncation_and_order():
    assert truncate_value("ab\U0001F600\U0001F600", 4) == "a..."
    assert truncate_value("ab\U0001F600", 4) == "ab\U0001F600"  # 4 units: unchanged
    inner = ('<RuleGroup groupRelation="or"><ProcessCreate onmatch="include">'
             '<Image condition="less than">\uff10</Image></ProcessCreate></RuleGroup>')
    # U+1F600 is D83D DE00 in UTF-16, which sorts below U+FF10.
    assert FilterEngine(cfg(inner)).decide(1, {"Image": "\U0001F600"})[0] is True


def test_large_and_set_compiles_in_linear_time():
    inner = '<RegistryEvent onmatch="include">' + "".join(
        f'<TargetObject condition="contains">k{i}</TargetObject>' for i in range(20000)) + \
        "</RegistryEvent>"
    start = time.process_time()
    FilterEngine(cfg(inner))
    assert time.process_time() - start < 10


@pytest.mark.parametrize("indexed", [True, False], ids=["indexed", "walk"])
def test_or_set_keeps_document_order_rulename(indexed):
    # Several kinds and fields in one OR set: the first matching filter in document order names.
    inner = ('<RuleGroup groupRelation="or"><ProcessCreate onmatch="include">'
             '<CommandLine name="n0" condition="contains">zzz</CommandLine>'
             '<Image name="n1" condition="end with">.exe</Image>'
             '<Image name="n2" condition="is">c:\\a.exe</Image>'
             '<Image name="n3" condition="image">a.exe</Image>'
             '<CommandLine name="n4" condition="contains">run</CommandLine>'
             "</ProcessCreate></RuleGroup>")
    e = FilterEngine(cfg(inner), EngineOptions(indexed=indexed))
    assert e.decide(1, {"Image": "C:\\a.exe", "CommandLine": "run"}) == (True, "n1")
    assert e.decide(1, {"Image": "C:\\a.dll", "CommandLine": "run zzz"}) == (True, "n0")
    assert e.decide(1, {"Image": "C:\\a.dll", "CommandLine": "run"}) == (True, "n4")
    assert e.decide(1, {"Image": "D:\\x\\A.EXE", "CommandLine": "-"}) == (True, "n1")


def test_missing_and_empty_values_are_dash():
    inner = ('<RuleGroup groupRelation="or"><ProcessCreate onmatch="include">'
             '<Company condition="is">-</Company></ProcessCreate></RuleGroup>')
    e = FilterEngine(cfg(inner))
    assert e.decide(1, {"Company": ""})[0] is True
    assert e.decide(1, {})[0] is True
    assert e.decide(1, {"Company": "Microsoft"})[0] is False


def test_non_ascii_folding_is_ascii_only():
    inner = ('<RuleGroup groupRelation="or"><ProcessCreate onmatch="include">'
             '<Image condition="contains">ÄPFEL</Image></ProcessCreate></RuleGroup>')
    e = FilterEngine(cfg(inner))
    assert e.decide(1, {"Image": "C:\\ÄPfel.exe"})[0] is True
    assert e.decide(1, {"Image": "C:\\äpfel.exe"})[0] is False  # Ä/ä are not folded


def test_incorrect_field_skips_remaining_elements_of_the_tag():
    c = cfg('<RegistryEvent onmatch="include"><Rule groupRelation="and"><Details>a</Details>'
            "<NewName>b</NewName></Rule></RegistryEvent>"
            '<ProcessCreate onmatch="include"><Image>x</Image></ProcessCreate>'
            '<RegistryEvent onmatch="include"><TargetObject>y</TargetObject></RegistryEvent>')
    assert [rs.tag for rs in c.rule_sets] == ["ProcessCreate"]
    assert "remaining elements" in c.warnings[1].message


def test_rule_name_limit_counts_utf8_bytes():
    ok = "é" * 127  # 254 bytes
    cfg(f'<ProcessCreate onmatch="include"><Image name="{ok}">x</Image></ProcessCreate>')
    with pytest.raises(ConfigError, match="larger than 255"):
        cfg(f'<ProcessCreate onmatch="include"><Image name="{ok}é">x</Image></ProcessCreate>')


def test_environment_expansion_option():
    inner = ('<RuleGroup groupRelation="or"><ProcessCreate onmatch="include">'
             '<Image condition="begin with">%SystemRoot%\\System32\\</Image>'
             "</ProcessCreate></RuleGroup>")
    ev = {"Image": "C:\\Windows\\System32\\cmd.exe"}
    assert FilterEngine(cfg(inner)).decide(1, ev)[0] is False  # literal by default
    from sysmonx.filtering.engine import WINDOWS_DEFAULT_ENV, expand_environment
    win = FilterEngine(cfg(inner), EngineOptions(environment=WINDOWS_DEFAULT_ENV))
    assert win.decide(1, ev)[0] is True
    assert expand_environment("%systemroot%\\x;%NOPE%", WINDOWS_DEFAULT_ENV) == \
        "C:\\Windows\\x;%NOPE%"
    assert expand_environment("%A%", {"A": "x" * 40000}) is None


def test_regex_count_is_bounded():
    many = "".join(f'<CommandLine condition="regex">a{i}</CommandLine>' for i in range(1025))
    with pytest.raises(ConfigError, match="more than 1024 regex"):
        cfg(f'<ProcessCreate onmatch="include">{many}</ProcessCreate>')
