"""Real configurations from the corpus: SysmonCommon's unit-test configs (each has a compiled .bin
beside it, so Sysmon loads every one) and the community configs everyone deploys."""

from collections import Counter

import pytest

from sysmonx.config import load_config
from sysmonx.filtering import FilterEngine

SYSMONCOMMON = "configs/Sysinternals__SysmonCommon/UnitTests/data"

# Condition counts per real config, comments excluded; filters without a condition count as "is".
REAL_CONFIGS = {
    "configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml": (
        "4.50", 21, {"end with": 291, "is": 215, "begin with": 98, "image": 63, "contains": 52,
                     "contains any": 4, "contains all": 1}),
    "configs/Neo23x0__sysmon-config/sysmonconfig-export.xml": (
        "4.90", 28, {"contains": 1742, "end with": 354, "is": 240, "begin with": 155,
                     "image": 104, "contains any": 8, "contains all": 6}),
    "configs/olafhartong__sysmon-modular/sysmonconfig.xml": (
        "4.90", 34, {"is": 653, "end with": 378, "begin with": 327, "contains": 223,
                     "contains all": 170, "image": 163, "contains any": 72, "excludes": 12,
                     "is not": 10, "excludes any": 8, "is any": 4, "not begin with": 3,
                     "excludes all": 1, "not end with": 1}),
    "configs/olafhartong__sysmon-modular/sysmonconfig-excludes-only.xml": (
        "4.90", 22, {"is": 356, "end with": 252, "begin with": 67, "contains all": 65,
                     "contains": 17, "image": 12, "contains any": 2, "excludes all": 1}),
    "configs/olafhartong__sysmon-modular/sysmonconfig-research.xml": (
        "4.83", 21, {"begin with": 12, "is": 8}),
    "configs/microsoft__MSTIC-Sysmon/linux/configs/main.xml": (
        "4.81", 6, {"end with": 39, "contains": 12, "begin with": 12, "is": 9, "contains any": 5,
                    "contains all": 2}),
    "configs/microsoft__SysmonForLinux/perftest/tests/onlyProcCreate.xml": ("4.22", 2, {}),
}


def test_every_sysmoncommon_config_with_a_blob_loads(corpus):
    folder = corpus / SYSMONCOMMON
    blobs = sorted(folder.glob("*.xml.bin"))
    assert len(blobs) == 136
    for blob in blobs:
        cfg = load_config(blob.with_suffix(""))
        assert not [w for w in cfg.warnings], (blob.name, cfg.warnings)
        FilterEngine(cfg)


def test_encoding_variants_load_to_identical_rules(corpus):
    folder = corpus / SYSMONCOMMON
    variants = sorted(p for p in folder.glob("*.xml")
                      if p.name.startswith(("utf8-", "utf16-", "iso8859-")))
    assert len(variants) == 13
    models = {}
    for p in variants:
        cfg = load_config(p)
        models[p.name] = [(rs.tag, rs.onmatch, rs.relation,
                           [(f.field, f.condition, f.value, f.name) for f in rs.filters])
                          for rs in cfg.rule_sets]
    iso = {k: v for k, v in models.items() if k.startswith("iso8859")}
    uni = {k: v for k, v in models.items() if not k.startswith("iso8859")}
    assert len({repr(v) for v in uni.values()}) == 1, "UTF-8/UTF-16 variants differ"
    assert len({repr(v) for v in iso.values()}) == 1
    # The value is U+02C6; the "ISO-8859-1" files hold its UTF-8 bytes CB 86 and declare
    # ISO-8859-1, so Sysmon reads two Latin-1 characters, even after a UTF-8 BOM: their
    # compiled blobs hold UTF-16LE "cb00 8600" where the UTF-8 variants hold "c602".
    assert uni["utf8-nobom-noenc.xml"][0][3][0][2] == "\u02c6"
    assert iso["iso8859-utf8bom-iso8859enc.xml"][0][3][0][2] == "\xcb\x86"
    blob = (folder / "iso8859-utf8bom-iso8859enc.xml.bin").read_bytes()
    assert "\xcb\x86".encode("utf-16-le") in blob
    assert "\u02c6".encode("utf-16-le") in (folder / "utf8-nobom-noenc.xml.bin").read_bytes()


def test_longnames_config_accepts_255_character_names(corpus):
    cfg = load_config(corpus / SYSMONCOMMON / "longnames.xml")
    names = {f.name for rs in cfg.rule_sets for f in rs.filters}
    assert {len(n) for n in names} == {255}
    engine = FilterEngine(cfg)
    include, name = engine.decide(1, {"Image": "C:\\bash.exe"})
    assert include and name == "Z" * 255


@pytest.mark.parametrize("rel", sorted(REAL_CONFIGS))
def test_real_configs_load_with_expected_rules(corpus, rel):
    version, nsets, conditions = REAL_CONFIGS[rel]
    cfg = load_config(corpus / rel)
    assert cfg.schema_version_text == version
    assert len(cfg.rule_sets) == nsets
    counted = Counter(f.condition for rs in cfg.rule_sets for f in rs.filters)
    assert dict(counted) == conditions
    assert cfg.warnings == []
    FilterEngine(cfg)


def test_swiftonsecurity_decisions(corpus):
    """A few decisions read off the SwiftOnSecurity config by hand."""
    cfg = load_config(corpus / "configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml")
    e = FilterEngine(cfg)
    # ProcessCreate is exclude-only: ordinary processes are logged ...
    assert e.decide(1, {"Image": "C:\\Windows\\System32\\cmd.exe",
                        "CommandLine": "cmd.exe /c whoami"}) == (True, "-")
    # ... except its noise list, e.g. conhost started with 0xffffffff.
    assert e.decide(1, {"Image": "C:\\Windows\\System32\\conhost.exe",
                        "CommandLine": "\\??\\C:\\Windows\\system32\\conhost.exe 0xffffffff -ForceV1",
                        "ParentImage": "C:\\Windows\\System32\\cmd.exe"})[0] is False
    # FileCreate has an include set with technique names and an exclude set.
    inc, name = e.decide(11, {"TargetFilename": "C:\\Users\\bob\\AppData\\Roaming\\Microsoft\\"
                                                "Windows\\Start Menu\\Programs\\Startup\\x.lnk",
                              "Image": "C:\\Windows\\explorer.exe"})
    assert (inc, name) == (True, "T1023")  # first include filter: contains \\Start Menu
    assert e.decide(11, {"TargetFilename": "C:\\Users\\bob\\notes.txt",
                         "Image": "C:\\Windows\\notepad.exe"})[0] is False
