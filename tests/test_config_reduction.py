"""What a configuration change takes out of collection (:mod:`sysmonx.filtering.reduction`):
corpus configs (SwiftOnSecurity, sysmon-modular) and edited copies, Sysmon's per-type defaults
and fallback, and the escaping of rule values in the description."""

from __future__ import annotations

import pytest

from sysmonx.config.parse import load_config, parse_config
from sysmonx.filtering import EngineOptions
from sysmonx.filtering.reduction import (DETAILS_LIMIT, VALUE_LIMIT, coverage, describe,
                                         reduction)

SOS = "configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml"
MODULAR = "configs/olafhartong__sysmon-modular/sysmonconfig.xml"


def _sos_text(corpus) -> str:
    return (corpus / SOS).read_bytes().decode("utf-8")


def _without_process_create(text: str, replacement: str) -> str:
    i = text.index('<ProcessCreate onmatch="exclude">')
    j = text.index("</ProcessCreate>") + len("</ProcessCreate>")
    return text[:i] + replacement + text[j:]


def cfg(body: str, extra: str = "") -> object:
    return parse_config(f'<Sysmon schemaversion="4.90">{extra}<EventFiltering>{body}'
                        f'</EventFiltering></Sysmon>')


def test_swiftonsecurity_edited_to_log_no_process_create_goes_dark(corpus):
    sos = load_config(corpus / SOS)
    dark = parse_config(_without_process_create(_sos_text(corpus),
                                                '<ProcessCreate onmatch="include"/>'),
                        "sos-edited.xml")
    red = reduction(sos, dark)
    assert red.dark == [1] and [e.event_id for e in red.events] == [1]
    assert describe(red) == "not logged any more: ProcessCreate (1)"
    # back again: only adds
    assert not reduction(dark, sos) and describe(reduction(dark, sos)) == ""


def test_removing_the_process_create_element_logs_everything_sysmon_default(corpus):
    """No rule set for ProcessCreate: Sysmon's default for 1 is include (spec 3.7), so removing
    SwiftOnSecurity's exclude set logs more, not less."""
    sos = load_config(corpus / SOS)
    gone = parse_config(_without_process_create(_sos_text(corpus), ""), "sos-gone.xml")
    assert not reduction(sos, gone)
    red = reduction(gone, sos)  # and putting SoS's excludes back narrows it
    assert [(e.event_id, len(e.new_excludes), e.dark) for e in red.events] == [(1, 138, False)]
    assert describe(red).startswith(
        'narrowed: ProcessCreate (1): 138 new exclude rules: CommandLine begin with " \\"C:\\\\'
        'Windows\\\\system32\\\\wermgr.exe\\" \\"-queuereporting_svc\\" "; ')
    assert describe(red).endswith("; and 135 more")


def test_identical_configs_reduce_nothing(corpus):
    a = load_config(corpus / SOS)
    b = parse_config((corpus / SOS).read_bytes(), "copy.xml")
    assert not reduction(a, b) and describe(reduction(a, b)) == ""


def test_modular_to_swiftonsecurity(corpus):
    mod, sos = load_config(corpus / MODULAR), load_config(corpus / SOS)
    red = reduction(mod, sos)
    assert red.dark == [7, 10, 25, 26, 29]
    assert [(e.event_id, len(e.new_excludes), e.removed_includes, e.was_all)
            for e in red.events if not e.dark] == [
        (1, 58, 0, False), (2, 6, 3, False), (3, 7, 45, False), (5, 0, 2, False),
        (6, 3, 0, False), (8, 9, 0, False), (11, 9, 80, False), (12, 31, 225, False),
        (13, 31, 236, False), (14, 31, 225, False), (15, 0, 9, False), (17, 0, 12, False),
        (18, 0, 12, False), (22, 33, 0, False)]
    d = describe(red)
    items = d.split(" | ")
    assert items[0] == ("not logged any more: ImageLoad (7), ProcessAccess (10), "
                        "ProcessTampering (25), FileDeleteDetected (26), "
                        "FileExecutableDetected (29)")
    assert items[1].startswith("narrowed: ProcessCreate (1): 58 new exclude rules: ")
    assert items[2] == ('FileCreateTime (2): 3 include rules removed, 6 new exclude rules: '
                        'Image contains "Update\\\\"; Image contains "install"; Image end with '
                        '"redist.exe"; and 3 more')
    # the includes the new config adds are told beside those it removed (new-user report s14 #3)
    assert items[3].startswith("NetworkConnect (3): 45 include rules removed (28 added), 7 new ")
    assert items[4] == "ProcessTerminate (5): 2 include rules removed (1 added)"
    # RegistryEvent's ids with the same change are told together
    assert any(i.startswith("RegistryEvent (12, 14): 225 include rules removed (104 added), 31 "
                            "new ") for i in items)
    # modular hashes with every algorithm (*), SwiftOnSecurity with three
    assert red.options == ["HashAlgorithms: SHA1 no longer computed (now MD5, SHA256, IMPHASH)"]
    assert len(d) <= DETAILS_LIMIT and items[-1] == "... (5 more)"
    # modular turns DnsLookup off, SwiftOnSecurity keeps Sysmon's default (on)
    assert reduction(sos, mod).options == [
        "DnsLookup turned off (no reverse lookup of NetworkConnect host names)"]
    # the reverse narrows too (each has excludes the other lacks) and starts differently
    back = describe(reduction(sos, mod))
    assert back.startswith("narrowed: ProcessCreate (1): only what 167 include rules match "
                           "(was: everything not excluded), 91 new exclude rules: ")


def test_only_adding_collection_is_no_reduction():
    base = cfg('<NetworkConnect onmatch="include"><Image condition="end with">/curl</Image>'
               '</NetworkConnect><ProcessCreate onmatch="exclude"><Image condition="is">/bin/true'
               '</Image></ProcessCreate>')
    more = cfg('<NetworkConnect onmatch="include"><Image condition="end with">/curl</Image>'
               '<Image condition="end with">/nc</Image></NetworkConnect>'
               '<ProcessCreate onmatch="exclude"/><DnsQuery onmatch="exclude"/>')
    assert not reduction(base, more)
    assert describe(reduction(more, base)) == (
        "not logged any more: DnsQuery (22) | narrowed: ProcessCreate (1): 1 new exclude rule: "
        'Image is "/bin/true" | NetworkConnect (3): 1 include rule removed')


def test_renaming_rules_is_no_reduction():
    a = cfg('<NetworkConnect onmatch="include"><Image name="a" condition="end with">/nc</Image>'
            '</NetworkConnect>')
    b = cfg('<NetworkConnect onmatch="include"><Image name="b" condition="end with">/nc</Image>'
            '</NetworkConnect>')
    assert not reduction(a, b)


def test_sysmon_fallback_two_exclude_sets_log_nothing():
    """Two exclude sets for one tag: events matching neither are excluded (spec 3.3, code
    fallback), so splitting an exclude set in two RuleGroups blinds the event type; with the
    ``intent`` fallback it only narrows."""
    one = cfg('<RuleGroup groupRelation="or"><ProcessCreate onmatch="exclude">'
              '<Image condition="is">/bin/true</Image></ProcessCreate></RuleGroup>')
    two = cfg('<RuleGroup groupRelation="or"><ProcessCreate onmatch="exclude">'
              '<Image condition="is">/bin/true</Image></ProcessCreate></RuleGroup>'
              '<RuleGroup groupRelation="or"><ProcessCreate onmatch="exclude">'
              '<Image condition="is">/bin/false</Image></ProcessCreate></RuleGroup>')
    assert describe(reduction(one, two)) == "not logged any more: ProcessCreate (1)"
    intent = EngineOptions(fallback="intent")
    assert describe(reduction(one, two, intent)) == (
        'narrowed: ProcessCreate (1): 1 new exclude rule: Image is "/bin/false"')


def test_no_config_is_sysmons_defaults():
    """``None`` (the sensor without a config): 1 and 5 logged, every other type not."""
    assert coverage(None, 1).mode == "all" and coverage(None, 3).logs_nothing
    assert coverage(None, 16) is None and coverage(None, 4) is None
    only_net = cfg('<NetworkConnect onmatch="include"><Image condition="end with">/nc</Image>'
                   '</NetworkConnect>')
    assert not reduction(None, only_net)
    assert describe(reduction(only_net, None)) == "not logged any more: NetworkConnect (3)"
    pc = cfg('<ProcessCreate onmatch="include"><Image condition="end with">/sh</Image>'
             '</ProcessCreate>')
    assert describe(reduction(None, pc)) == (
        "narrowed: ProcessCreate (1): only what 1 include rule matches (was: everything not "
        "excluded)")


def test_and_rules_and_fields_an_event_lacks():
    """A ``<Rule groupRelation="and">`` is one rule; a rule on a field an EventID lacks cannot
    act on it (RegistryEvent ``Details`` exists for 13 only)."""
    a = cfg('<RegistryEvent onmatch="include"><TargetObject condition="contains">Run'
            '</TargetObject></RegistryEvent>')
    b = cfg('<RegistryEvent onmatch="include"><TargetObject condition="contains">Run'
            '</TargetObject></RegistryEvent><RegistryEvent onmatch="exclude">'
            '<Rule groupRelation="and"><Image condition="end with">evil.exe</Image>'
            '<Details condition="contains">x</Details></Rule></RegistryEvent>')
    red = reduction(a, b)
    assert [e.event_id for e in red.events] == [13]
    assert describe(red) == ('narrowed: RegistryEvent (13): 1 new exclude rule: (Details '
                             'contains "x" and Image end with "evil.exe")')


def test_tamper_findings_excluded_by_a_reload_are_named():
    assert describe(reduction(None, cfg('<TamperFinding onmatch="include"/>'))) == \
        "not logged any more: TamperFinding (201)"


def test_field_sizes_that_cut_a_field():
    a = cfg("", "<FieldSizes>CommandLine:100</FieldSizes>")
    b = cfg("", "<FieldSizes>CommandLine:5,Image:9</FieldSizes>")
    assert describe(reduction(a, b)) == ("FieldSizes: CommandLine cut to 5 characters (was "
                                         "100), Image cut to 9 characters (was not cut)")
    assert not reduction(b, a)


@pytest.mark.parametrize("value, shown", [
    ('x" Technique="sensor_ptrace', '"x\\" Technique=\\"sensor_ptrace"'),
    ("a\nEventID: 1", '"a\\nEventID: 1"'),
    ("</Data><Data Name='Technique'>x", "\"</Data><Data Name='Technique'>x\""),
    ("exe.\u202etxt", '"exe.\\u202etxt"'),
])
def test_rule_values_are_quoted_and_escaped(value, shown):
    """Config text is untrusted: a value is a JSON string (quotes, backslashes, newlines
    escaped), display controls made visible; the XML writers escape markup on top."""
    from xml.sax.saxutils import escape
    a = cfg("")
    b = cfg(f'<ProcessCreate onmatch="exclude"><CommandLine condition="is">'
            f'{escape(value, {chr(10): "&#10;"})}</CommandLine></ProcessCreate>')
    d = describe(reduction(a, b))
    assert d == f"narrowed: ProcessCreate (1): 1 new exclude rule: CommandLine is {shown}"
    assert "\n" not in d and "\u202e" not in d


def test_long_values_and_many_types_are_bounded():
    long = "A" * 500
    body = "".join(f'<{tag} onmatch="include"><Image condition="is">{long}{i}</Image></{tag}>'
                   for i, tag in enumerate(["NetworkConnect", "ImageLoad", "FileCreate",
                                            "FileDelete", "DnsQuery", "PipeEvent"]))
    a = cfg(body)
    b = cfg("".join(f'<{t} onmatch="exclude"><Image condition="is">{long}</Image></{t}>'
                    for t in ["ProcessCreate", "ProcessTerminate"]) + body)
    d = describe(reduction(a, b))
    assert f'"{"A" * (VALUE_LIMIT - 3)}..."' in d and long not in d
    assert describe(reduction(b, cfg(""))).startswith("not logged any more: NetworkConnect (3)")
    assert d.split(" | ")[1].startswith("ProcessTerminate (5): 1 new exclude rule")
    assert not reduction(b, a)
    short = describe(reduction(a, b), limit=120)
    assert len(short) <= 120 and short.endswith("... (2 items)")
    assert short.startswith('narrowed: ProcessCreate (1): 1 new exclude rule: Image is "AAA')
    two = describe(reduction(a, b), limit=len(d) - 1)  # whole items, the rest counted
    assert two == d.split(" | ")[0] + " | ... (1 more)"


# -- options: what an event carries or what is kept beside it -------------------------------------

def test_fewer_hash_algorithms_are_named():
    a = cfg("", "<HashAlgorithms>SHA256,IMPHASH,MD5</HashAlgorithms>")
    b = cfg("", "<HashAlgorithms>md5</HashAlgorithms>")
    assert reduction(a, b).options == ["HashAlgorithms: SHA256, IMPHASH no longer computed "
                                       "(now MD5)"]
    assert describe(reduction(a, b)) == "HashAlgorithms: SHA256, IMPHASH no longer computed " \
                                        "(now MD5)"
    assert not reduction(b, a)  # more algorithms: no reduction
    # no entry is the sensor's default (SHA256) on either side
    assert reduction(cfg(""), b).options == ["HashAlgorithms: SHA256 no longer computed (now "
                                             "MD5)"]
    assert not reduction(cfg(""), cfg("", "<HashAlgorithms>*</HashAlgorithms>"))
    assert not reduction(cfg("", "<HashAlgorithms>sha256</HashAlgorithms>"), cfg(""))


def test_dns_lookup_and_copy_on_delete_turned_off():
    on = cfg("", "<DnsLookup>true</DnsLookup>")
    off = cfg("", "<DnsLookup>False</DnsLookup>")
    assert reduction(on, off).options == [
        "DnsLookup turned off (no reverse lookup of NetworkConnect host names)"]
    assert reduction(cfg(""), off).options == reduction(on, off).options  # default: on
    assert not reduction(off, on)

    def v422(options: str) -> object:  # CopyOnDelete_* are entries of schemas before 4.30
        return parse_config(f'<Sysmon schemaversion="4.22">{options}<EventFiltering/>'
                            '</Sysmon>')
    assert reduction(v422("<CopyOnDelete_PE/>"), v422("")).options == [
        "CopyOnDelete_PE turned off (deleted executables no longer archived)"]
    # "false" is Sysmon's "not set"
    assert reduction(v422("<CopyOnDelete_PE/>"),
                     v422("<CopyOnDelete_PE>false</CopyOnDelete_PE>")).options
    assert not reduction(v422(""), v422("<CopyOnDelete_PE/>"))


def test_copy_on_delete_lists_that_lose_entries():
    def v(exts: str) -> object:
        return parse_config(f'<Sysmon schemaversion="4.22"><CopyOnDelete_Extensions>{exts}'
                            '</CopyOnDelete_Extensions><EventFiltering/></Sysmon>')
    red = reduction(v(".exe,.dll,.ps1"), v(".EXE"))
    assert red.options == ['CopyOnDelete_Extensions: ".dll", ".ps1" removed (fewer deletes '
                           'archived)']
    assert not reduction(v(".exe"), v(".exe,.dll"))


def test_scanner_requests_removed_per_event_type():
    yara = cfg('<ProcessCreate onmatch="include" scanners="yara,memfd_exec">'
               '<Image condition="end with">x</Image></ProcessCreate>',
               "<YaraRules>/r</YaraRules>")
    none = cfg('<ProcessCreate onmatch="include"><Image condition="end with">x</Image>'
               '</ProcessCreate>')
    red = reduction(yara, none)
    assert red.options == ["scanners no longer requested on ProcessCreate: memfd_exec, yara",
                           'YaraRules removed (was "/r")']
    assert describe(red) == " | ".join(red.options)
    assert not red.events  # the rules themselves did not change
    assert not reduction(none, yara)
    # one YARA rule kept under "yara": the rest of the rules still run
    one = cfg('<ProcessCreate onmatch="include" scanners="yara:A,memfd_exec">'
              '<Image condition="end with">x</Image></ProcessCreate>', "<YaraRules>/r</YaraRules>")
    assert not reduction(one, yara)
    assert reduction(yara, one).options == ["scanners no longer requested on ProcessCreate: "
                                            "yara"]
    # a scanner name is config text: one that could pass for more items is quoted
    odd = cfg('<ProcessCreate onmatch="include" scanners="yara:a&#10; | not logged any more: '
              'NetworkConnect (3)"><Image condition="end with">x</Image></ProcessCreate>',
              "<YaraRules>/r</YaraRules>")
    (text,) = [o for o in reduction(odd, none).options if o.startswith("scanners")]
    assert text == ('scanners no longer requested on ProcessCreate: "yara:a\\n | not logged any '
                    'more: NetworkConnect (3)"'), text


def test_an_include_value_swapped_is_told_as_removed_and_added():
    """New-user report s14 #3: a -c that swapped one include value for another read as
    '1 include rule removed' alone; what the old value matched is not collected any more (a
    reduction all the same), and the rule added is said beside it."""
    a = cfg('<FileCreate onmatch="include"><TargetFilename condition="begin with">/tmp/a/'
            '</TargetFilename></FileCreate>')
    b = cfg('<FileCreate onmatch="include"><TargetFilename condition="begin with">/tmp/b/'
            '</TargetFilename></FileCreate>')
    assert describe(reduction(a, b)) == "narrowed: FileCreate (11): 1 include rule removed (1 added)"
