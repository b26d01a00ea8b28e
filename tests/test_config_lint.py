"""``sysmonx config check`` warnings for constructs that silently never match (or always match),
each with file and line, and the engine confirming every claim the warning makes."""

from sysmonx.cli import main as cli_main
from sysmonx.config import parse_config
from sysmonx.filtering.lint import lint_config
from sysmonx.filtering import FilterEngine


def lint(body: str, version: str = "4.90"):
    text = (f'<Sysmon schemaversion="{version}">\n<EventFiltering>\n{body}\n'
            "</EventFiltering>\n</Sysmon>")
    c = parse_config(text, "c.xml")
    return c, lint_config(c)


def matches(body: str, event_id: int, data: dict) -> bool:
    """Whether a config of ``body`` alone includes the event (Sysmon's decision)."""
    c = parse_config(f'<Sysmon schemaversion="4.90"><EventFiltering>{body}</EventFiltering>'
                     "</Sysmon>", "m.xml")
    return FilterEngine(c).decide(event_id, data)[0]


def only(warnings, needle):
    found = [w for w in warnings if needle in w.message]
    assert found, [str(w) for w in warnings]
    return found


def test_trailing_space_never_matches():
    c, ws = lint('<ProcessCreate onmatch="include">\n'
                 '<Image condition="image">mscorsvw.exe </Image>\n</ProcessCreate>')
    w = only(ws, "the trailing space of the value 'mscorsvw.exe ' never occurs in Image")[0]
    assert (w.path, w.line) == ("c.xml", 4)
    assert str(w).startswith("c.xml:4: warning: <Image condition=\"image\">'mscorsvw.exe '")
    assert FilterEngine(c).decide(1, {"Image": "C:\\mscorsvw.exe"})[0] is False  # TV39


def test_semicolon_with_plain_condition():
    c, ws = lint('<ProcessCreate onmatch="include">\n'
                 '<CommandLine condition="contains">unload;detach</CommandLine>\n</ProcessCreate>')
    assert only(ws, "';' separates values only")[0].line == 4
    assert FilterEngine(c).decide(1, {"CommandLine": "fltmc unload x"})[0] is False


def test_list_quirks():
    _, ws = lint('<ProcessCreate onmatch="include">\n'
                 '<CommandLine condition="contains any">-enc;bypass;</CommandLine>\n'
                 '<Image condition="contains any">a.exe;;b.exe</Image>\n'
                 '<User condition="contains any">NETWORK SERVICE; LOCAL SERVICE</User>\n'
                 '<ParentImage condition="excludes any">x;</ParentImage>\n</ProcessCreate>')
    assert only(ws, "trailing ';'")[0].line == 4 and "matches every event" in \
        only(ws, "trailing ';'")[0].message
    assert "(';b.exe')" in only(ws, "(';;')")[0].message
    assert only(ws, "piece ' LOCAL SERVICE'")[0].line == 6
    assert "never matches" in [w for w in ws if w.line == 7][0].message


def test_image_with_linux_paths():
    c, ws = lint('<ProcessCreate onmatch="include">\n'
                 '<Image condition="image">/usr/bin/bash</Image>\n'
                 '<Image condition="image">bin/bash</Image>\n'
                 '<Image condition="image">bash</Image>\n</ProcessCreate>')
    assert "same as 'is'" in [w for w in ws if w.line == 4][0].message
    assert "never matches an absolute path" in [w for w in ws if w.line == 5][0].message
    assert "does not strip '/'" in [w for w in ws if w.line == 6][0].message
    e = FilterEngine(c)
    assert e.decide(1, {"Image": "/usr/bin/bash"})[0] is True
    assert FilterEngine(parse_config(
        '<Sysmon schemaversion="4.90"><EventFiltering><ProcessCreate onmatch="include">'
        '<Image condition="image">bash</Image></ProcessCreate></EventFiltering></Sysmon>')
    ).decide(1, {"Image": "/usr/bin/bash"})[0] is False  # TV09


def test_bare_image_name_not_flagged_in_windows_configs():
    _, ws = lint('<ProcessCreate onmatch="include">\n<Image condition="image">cmd.exe</Image>\n'
                 '<ParentImage condition="is">C:\\Windows\\explorer.exe</ParentImage>\n'
                 '</ProcessCreate>')
    assert ws == []


def test_less_than_on_numbers():
    c, ws = lint('<NetworkConnect onmatch="include">\n'
                 '<DestinationPort condition="less than">1024</DestinationPort>\n'
                 '</NetworkConnect>')
    assert "compares text, not numbers" in only(ws, "compares text")[0].message
    assert FilterEngine(c).decide(3, {"DestinationPort": "443"})[0] is False  # TV15


def test_empty_values():
    _, ws = lint('<ProcessCreate onmatch="include">\n'
                 '<CommandLine condition="is"></CommandLine>\n'
                 '<Image condition="contains"></Image>\n'
                 '<User condition="excludes"></User>\n</ProcessCreate>')
    assert "never matches" in [w for w in ws if w.line == 4][0].message
    assert "matches every event" in [w for w in ws if w.line == 5][0].message
    assert "never matches" in [w for w in ws if w.line == 6][0].message


def test_empty_include_set_disables_collection():
    c, ws = lint('<RawAccessRead onmatch="include"/>')
    w = only(ws, "has no filters")[0]
    assert w.line == 3 and "no RawAccessRead event is logged" in w.message
    assert FilterEngine(c).decide(9, {"Device": "/dev/sda"})[0] is False
    _, ws = lint('<DriverLoad onmatch="include"/>\n<DriverLoad onmatch="exclude">'
                 '<Signature>x</Signature></DriverLoad>')
    assert "fallback" in only(ws, "has no filters")[0].message


def test_several_exclude_only_sets_log_nothing():
    c, ws = lint('<RuleGroup groupRelation="or"><ProcessCreate onmatch="exclude">'
                 '<Image>a.exe</Image></ProcessCreate></RuleGroup>\n'
                 '<RuleGroup groupRelation="or"><ProcessCreate onmatch="exclude">'
                 '<Image>b.exe</Image></ProcessCreate></RuleGroup>')
    w = only(ws, "exclude\"> elements and no include")[0]
    assert w.line == 4
    assert FilterEngine(c).decide(1, {"Image": "c.exe"})[0] is False  # TV29


def test_duplicates_and_impossible_rule():
    c, ws = lint('<ImageLoad onmatch="include">\n<Image>a.exe</Image>\n<Image>A.EXE</Image>\n'
                 '<Rule groupRelation="and">\n<ImageLoaded>x.dll</ImageLoaded>\n'
                 '<ImageLoaded>y.dll</ImageLoaded>\n</Rule>\n</ImageLoad>')
    assert only(ws, "duplicate of the filter on line 4")[0].line == 5
    w = only(ws, "can never match")[0]
    assert w.line == 6
    assert FilterEngine(c).decide(7, {"ImageLoaded": "x.dll", "Image": "q"})[0] is False


def test_include_shadowed_by_exclude():
    c, ws = lint('<ProcessCreate onmatch="exclude">\n'
                 '<Image condition="begin with">C:\\Windows\\</Image>\n</ProcessCreate>\n'
                 '<ProcessCreate onmatch="include">\n'
                 '<Image>C:\\Windows\\System32\\cmd.exe</Image>\n'
                 '<Image>C:\\Tools\\x.exe</Image>\n</ProcessCreate>')
    w = only(ws, "never includes anything")
    assert [x.line for x in w] == [7]
    assert "(line 4;" in w[0].message
    assert FilterEngine(c).decide(1, {"Image": "C:\\Windows\\System32\\cmd.exe"})[0] is False


def test_env_variables_in_linux_configs():
    _, ws = lint('<FileCreate onmatch="include">\n'
                 '<TargetFilename condition="begin with">/home/%USER%/</TargetFilename>\n'
                 '</FileCreate>')
    assert only(ws, "expanded only by Windows Sysmon")[0].line == 4


def test_clean_config_has_no_warnings():
    _, ws = lint('<RuleGroup name="g" groupRelation="or"><ProcessCreate onmatch="include">\n'
                 '<Image condition="end with">\\powershell.exe</Image>\n'
                 '<CommandLine condition="contains any">-enc;-nop</CommandLine>\n'
                 '</ProcessCreate></RuleGroup>\n<NetworkConnect onmatch="exclude"/>')
    assert ws == []


def test_cli_check_prints_warnings_with_file_and_line(tmp_path, capsys):
    p = tmp_path / "c.xml"
    p.write_text('<Sysmon schemaversion="4.90">\n<EventFiltering>\n'
                 '<ProcessCreate onmatch="include">\n'
                 '<Image condition="image">mscorsvw.exe </Image>\n'
                 '</ProcessCreate>\n</EventFiltering>\n</Sysmon>\n')
    assert cli_main(["config", "check", str(p)]) == 0
    captured = capsys.readouterr()
    assert f"{p}:4: warning: <Image condition=\"image\">'mscorsvw.exe '" in captured.err
    assert captured.out.startswith(f"Configuration file validated: {p}")


def test_corpus_configs_lint_without_errors(corpus):
    from sysmonx.config import ConfigError
    n = 0
    for path in sorted((corpus / "configs").rglob("*.xml")):
        try:
            c = parse_config(path.read_bytes(), str(path))
        except ConfigError:
            continue
        for w in lint_config(c):
            assert w.path == str(path) and w.line
        n += 1
    assert n > 100


# ---- '*' is not a wildcard --------------------------------------------------------------------------

def test_star_in_values_is_warned_with_what_to_write_instead():
    c, ws = lint('<ProcessCreate onmatch="include">\n'
                 '<Image condition="contains">C:\\Users\\*\\AppData\\Local\\Temp\\</Image>\n'
                 '<Image condition="is">*\\rundll32.exe</Image>\n'
                 '<ParentImage condition="begin with">C:\\Windows\\*</ParentImage>\n'
                 '<CommandLine condition="contains">*powershell*</CommandLine>\n'
                 '<CommandLine condition="is">\\??\\C:\\Windows\\system32\\autochk.exe *</CommandLine>\n'
                 '<CommandLine condition="contains">del *.tmp</CommandLine>\n'
                 '</ProcessCreate>\n<RegistryEvent onmatch="include">\n'
                 '<TargetObject condition="contains">HKCR\\*\\shell\\open</TargetObject>\n'
                 '<TargetObject condition="contains">HKU\\*\\Software\\Run</TargetObject>\n'
                 '</RegistryEvent>')
    by_line = {w.line: w.message for w in ws}
    assert "condition=\"contains all\" 'C:\\Users\\;\\AppData\\Local\\Temp\\'" in by_line[4]
    assert "condition=\"regex\" 'C:\\\\Users\\\\.*\\\\AppData" in by_line[4]
    assert by_line[5].endswith("use condition=\"end with\" '\\rundll32.exe'")
    assert by_line[6].endswith("use condition=\"begin with\" 'C:\\Windows\\'")
    assert "almost certainly not what is meant" in by_line[7]
    assert by_line[7].endswith("use condition=\"contains\" 'powershell'")
    assert 8 not in by_line and 9 not in by_line  # real '*' arguments of a command line
    assert 12 not in by_line  # HKCR\* is a real key (every file type)
    assert "'*' is not a wildcard" in by_line[13]
    # the claim holds: Sysmon's comparison never matches what the author meant
    pc = '<ProcessCreate onmatch="include">{}</ProcessCreate>'.format
    assert matches(pc('<Image condition="contains">C:\\Users\\*\\AppData\\Local\\Temp\\</Image>'),
                   1, {"Image": "C:\\Users\\bob\\AppData\\Local\\Temp\\x.exe"}) is False
    assert matches(pc('<Image condition="contains all">C:\\Users\\;\\AppData\\Local\\Temp\\'
                      '</Image>'), 1,
                   {"Image": "C:\\Users\\bob\\AppData\\Local\\Temp\\x.exe"}) is True
    assert matches(pc('<Image condition="is">*\\rundll32.exe</Image>'), 1,
                   {"Image": "C:\\Windows\\System32\\rundll32.exe"}) is False


def test_registry_paths_sysmon_never_writes():
    c, ws = lint('<RegistryEvent onmatch="include">\n'
                 '<TargetObject condition="begin with">\\REGISTRY\\MACHINE\\SOFTWARE\\Run'
                 '</TargetObject>\n'
                 '<TargetObject condition="contains">'
                 'HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services\\x</TargetObject>\n'
                 '<TargetObject condition="begin with">HKCU\\Software\\Microsoft\\Run</TargetObject>\n'
                 '<TargetObject condition="contains any">\\Run;REGISTRY\\USER\\S-1-5-18</TargetObject>\n'
                 '<TargetObject condition="begin with">HKLM\\SYSTEM\\CurrentControlSet\\Services'
                 '</TargetObject>\n'
                 '</RegistryEvent>')
    by_line = {w.line: w.message for w in ws}
    assert "'HKLM\\' for '\\REGISTRY\\MACHINE\\'" in by_line[4]
    assert by_line[4].endswith("e.g. 'HKLM\\SOFTWARE\\Run'")
    assert by_line[5].endswith("e.g. 'HKLM\\SYSTEM\\CurrentControlSet\\Services\\x'")
    assert "'HKU\\<SID>\\' for 'HKCU\\'" in by_line[6]
    assert "'HKU\\' for 'REGISTRY\\USER\\'" in by_line[7]
    assert 8 not in by_line
    assert matches('<RegistryEvent onmatch="include"><TargetObject condition="begin with">'
                   '\\REGISTRY\\MACHINE\\SOFTWARE\\Run</TargetObject></RegistryEvent>', 13,
                   {"TargetObject": "HKLM\\SOFTWARE\\Run\\x", "EventType": "SetValue"}) is False


# ---- white space: only where it makes the filter unmatchable -------------------------------------

def test_whitespace_warned_only_where_it_makes_the_filter_unmatchable():
    c, ws = lint('<ProcessCreate onmatch="include">\n'
                 '<CommandLine condition="begin with">dsadd </CommandLine>\n'           # meant
                 '<CommandLine condition="contains"> -enc </CommandLine>\n'             # meant
                 '<CommandLine condition="begin with"> "C:\\x.exe"</CommandLine>\n'      # free text
                 '<Image condition="begin with">C:\\Program Files\\Vendor Suite </Image>\n'  # meant
                 '<Image condition="end with">\\Vendor Suite\\x.exe </Image>\n'         # never
                 '<Image condition="begin with"> C:\\Windows\\</Image>\n'               # never
                 '<Image condition="contains all"> C:\\Users\\;\\AppData\\</Image>\n'   # never
                 '<Image condition="contains"> Suite\\</Image>\n'                       # possible
                 '<User condition="contains any">NETWORK SERVICE; LOCAL SERVICE</User>\n'  # never
                 '<User condition="contains"> Smith</User>\n'                           # possible
                 '<Hashes condition="contains">MD5= </Hashes>\n'                        # never
                 '<Image condition="is not">C:\\a.exe </Image>\n'                       # always
                 '<Image condition="is">C:\\b.exe\n    </Image>\n'                      # layout
                 '</ProcessCreate>\n<DriverLoad onmatch="exclude">\n'
                 '<Signature condition="begin with">Intel </Signature>\n'               # meant
                 '</DriverLoad>')
    warned = sorted(w.line for w in ws)
    assert warned == [8, 9, 10, 12, 14, 15, 16]
    by_line = {w.line: w.message for w in ws}
    assert "Windows drops trailing spaces" in by_line[8]
    assert "(so 'is not' is always true)" in by_line[15]
    assert "line break or tab" in by_line[16]
    # the warned ones never match, the others match what they mean
    pc = '<ProcessCreate onmatch="include">{}</ProcessCreate>'.format
    assert matches(pc('<CommandLine condition="begin with">dsadd </CommandLine>'), 1,
                   {"CommandLine": "dsadd user x"}) is True
    assert matches(pc('<Image condition="begin with">C:\\Program Files\\Vendor Suite </Image>'),
                   1, {"Image": "C:\\Program Files\\Vendor Suite 2\\v.exe"}) is True
    assert matches(pc('<Image condition="contains all"> C:\\Users\\;\\AppData\\</Image>'), 1,
                   {"Image": "C:\\Users\\bob\\AppData\\x.exe"}) is False
    assert matches(pc('<User condition="contains any">NETWORK SERVICE; LOCAL SERVICE</User>'), 1,
                   {"User": "NT AUTHORITY\\LOCAL SERVICE"}) is False
    assert matches('<DriverLoad onmatch="include"><Signature condition="begin with">Intel '
                   '</Signature></DriverLoad>', 6, {"Signature": "Intel Corporation"}) is True


def test_linux_paths_may_end_with_a_space():
    _, ws = lint('<FileCreate onmatch="include">\n'
                 '<TargetFilename condition="end with">/tmp/x </TargetFilename>\n'
                 '<TargetFilename condition="begin with">/tmp/</TargetFilename>\n'
                 '</FileCreate>')
    assert ws == []


# ---- every error, not only the first --------------------------------------------------------------

def test_config_check_lists_every_error(tmp_path, capsys):
    p = tmp_path / "bad.xml"
    p.write_text('<Sysmon schemaversion="4.90">\n<HashAlgorithms>sha1,bogus</HashAlgorithms>\n'
                 '<EventFiltering>\n<ProcessCreate onmatch="include">\n'
                 '<Imagee condition="is">a</Imagee>\n'
                 '<CommandLine condition="contain">b</CommandLine>\n'
                 '<Image condition="is">ok</Image>\n</ProcessCreate>\n'
                 '<RuleGroup groupRelation="xor"><FileCreate onmatch="include"/></RuleGroup>\n'
                 '<Bogus onmatch="include"/>\n</EventFiltering>\n</Sysmon>\n')
    assert cli_main(["config", "check", str(p)]) == 1
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("error: ")]
    assert [x.split(":")[2] for x in lines] == ["2", "5", "6", "9", "10"]
    assert "5 errors: the configuration is refused" in err
    from sysmonx.config import ConfigError
    try:
        parse_config(p.read_bytes(), str(p))
    except ConfigError as exc:
        assert (exc.line, len(exc.errors)) == (2, 5)
    else:
        raise AssertionError("the config loaded")


def test_image_is_a_bare_file_name_never_matches():
    """``<Image condition="is">csc.exe</Image>`` (sysmon-modular has such filters) never
    equals a full path; a new user's ``config check`` said nothing. ``System`` is a real
    Image value and full paths are fine."""
    body = ('<ProcessCreate onmatch="include">\n'
            '<Image condition="is">csc.exe</Image>\n'
            '<Image condition="is">System</Image>\n'
            '<ParentImage condition="is any">C:\\x\\a.exe;hh.exe</ParentImage>\n'
            '<Image condition="is">C:\\Windows\\csc.exe</Image>\n</ProcessCreate>')
    c, ws = lint(body)
    w = only(ws, "is a full path")
    assert [(x.line, x.message.split(": ", 1)[1]) for x in w] == [
        (4, "Image is a full path, so 'csc.exe' never equals it; use condition 'image' (the "
            "file name) or 'end with' '\\csc.exe'"),
        (6, "ParentImage is a full path, so 'hh.exe' never equals it; use condition 'image' "
            "(the file name) or 'end with' '\\hh.exe'")]
    assert not matches(body.replace("C:\\Windows\\csc.exe", "C:\\none"), 1,
                       {"Image": "C:\\Windows\\Microsoft.NET\\csc.exe"})
