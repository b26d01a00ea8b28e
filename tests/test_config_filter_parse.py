"""The config reader's per-filter path (``_Builder._filter``, ``_new_filter``): the filters and
the errors it gives are those of the plain checks, in the same order.

The reader checks each filter element for its field, attributes, content, scanners, name and
condition, reading each attribute once, and builds the frozen ``Filter`` without the
dataclass's ``__init__``. The expected values below were taken from the reader before that
change (they pass on it too): a different first error, line or filter attribute fails them.
"""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest

from sysmonx.config import ConfigError, load_config
from sysmonx.config.parse import _new_filter, parse_config
from sysmonx.configmodel import Filter

HEAD = ('<Sysmon schemaversion="4.90"><EventFiltering><RuleGroup groupRelation="or">'
        '<ProcessCreate onmatch="{onmatch}">\n')
TAIL = "\n</ProcessCreate></RuleGroup></EventFiltering></Sysmon>"
CONDITIONS = ("is, is not, contains, contains any, is any, contains all, excludes, excludes any, "
              "excludes all, begin with, end with, less than, more than, image, not begin with, "
              "not end with")


def _config(body: str, onmatch: str = "include") -> bytes:
    return (HEAD.format(onmatch=onmatch) + body + TAIL).encode()


def _errors(raw: bytes, **kw) -> list:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, **kw)
    return [(e.message, e.line) for e in info.value.errors]


@pytest.mark.parametrize("body, onmatch, expected", [
    ('<Image condition="is" bogus="1">a.exe</Image>', "include",
     [("No declaration for attribute bogus of element Image", 2)]),
    # the attribute is the first check after the field: before content and condition
    ('<Image name="a" zz="1" condition="bad">a<i/></Image>', "include",
     [("No declaration for attribute zz of element Image", 2)]),
    ('<Image condition="is">a<b/>c</Image>', "include",
     [("Field element Image may only contain text", 2)]),
    ('<Nope condition="is">a</Nope>', "include",
     [("Element Nope is not a field of ProcessCreate in schema (No declaration for element "
       "Nope)", 2)]),
    ('<Image condition="ends with">a</Image>', "include",
     [(f"Unknown condition: ends with\nExpected values are {CONDITIONS}\nSysmonX extensions "
       'also accepted: regex\nDid you mean condition="end with"?', 2)]),
    (f'<Image name="{"n" * 256}">a</Image>', "include",
     [(f"Rule name is larger than 255 characters: {'n' * 256}", 2)]),
    ('<Image scanners="yara">a</Image>', "exclude",
     [('scanners="yara" on <Image> of an onmatch="exclude" set: an exclude rule never '
       "includes an event (put it on the tag, or on a rule of an include set)", 2)]),
    # every filter is checked; the errors come back by line
    ('<Image condition="IS">ok</Image>\n<Image condition="bad">a</Image>\n'
     '<Rule groupRelation="and" name="r">\n<Image x="1">b</Image>\n'
     '<CommandLine condition="contains">c<i/></CommandLine>\n</Rule>\n'
     '<Image name="" condition="">d</Image>', "include",
     [(f"Unknown condition: bad\nExpected values are {CONDITIONS}\nSysmonX extensions also "
       "accepted: regex", 3),
      ("No declaration for attribute x of element Image", 5),
      ("Field element CommandLine may only contain text", 6)]),
])
def test_filter_errors(body, onmatch, expected):
    assert _errors(_config(body, onmatch)) == expected


def test_scanners_refused_without_extensions():
    raw = _config('<Image condition="is" scanners="yara">a</Image>')
    assert _errors(raw, extensions=False) == [
        ("No declaration for attribute scanners of element Image", 2)]


def test_filters_read():
    raw = _config(
        '<Image condition="IS">ok</Image>\n<Image name="">a<!-- c -->b</Image>\n'
        '<Rule groupRelation="and" name="r">\n<Image condition="end with">b</Image>\n'
        '<CommandLine condition="contains" name="own">c</CommandLine>\n</Rule>\n'
        '<Image condition="">d</Image>\n'
        '<ParentImage scanners="yara" condition="image">x.exe</ParentImage>')
    cfg = parse_config(raw)
    got = [dataclasses.astuple(f) for rs in cfg.rule_sets for f in rs.filters]
    assert got == [
        ("Image", "is", "ok", "", 0, 2, ()),
        ("Image", "is", "ab", "", 0, 3, ()),
        ("Image", "end with", "b", "r", 1, 5, ()),
        ("CommandLine", "contains", "c", "own", 1, 6, ()),
        ("Image", "is", "d", "", 0, 8, ()),
        ("ParentImage", "image", "x.exe", "", 0, 9, ("yara",)),
    ]


def test_new_filter_is_the_dataclass():
    """``_new_filter`` sets every field of ``Filter`` (a field added to the dataclass and not
    to it fails here) and gives an object equal in every respect to the constructor's."""
    args = ("Image", "end with", "x.exe", "n", 3, 7, ("yara",))
    made, built = _new_filter(*args), Filter(*args)
    assert type(made) is Filter
    assert list(vars(made)) == [f.name for f in dataclasses.fields(Filter)]
    assert vars(made) == vars(built)
    assert made == built and hash(made) == hash(built) and repr(made) == repr(built)
    assert pickle.loads(pickle.dumps(made)) == built
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.value = "y"  # type: ignore[misc]


def test_corpus_config_filters_are_dataclass_filters(corpus):
    """Every filter of every corpus config the reader accepts equals the one ``Filter(...)``
    builds from its fields."""
    seen = 0
    for path in sorted(Path(corpus, "configs").rglob("*.xml")):
        try:
            cfg = load_config(str(path), cache=None)
        except ConfigError:
            continue
        for rs in cfg.rule_sets:
            for f in rs.filters:
                again = Filter(*dataclasses.astuple(f))
                assert vars(f) == vars(again) and hash(f) == hash(again), (path, f)
                seen += 1
    assert seen > 5000


def _read(path: Path, extensions: bool):
    """What the reader gives for a file: the model's parts, or the error with its others."""
    try:
        cfg = load_config(str(path), cache=None, extensions=extensions)
    except ConfigError as exc:
        return ("error", [(str(e), e.line) for e in exc.errors])
    return (cfg.rule_sets, cfg.options, cfg.hash_algorithms, cfg.field_sizes, cfg.warnings,
            cfg.schema_version, cfg.sha256, cfg.heartbeat_interval)


def test_common_filters_built_inline_equal_the_full_path(corpus, monkeypatch):
    """The reader builds a common filter element (no attribute but condition and name, no
    child node, a known condition that is not an extension's, a short name) itself; every
    other goes through ``_filter``. Every corpus config file, accepted or refused, with
    extensions on and off, reads alike both ways (filters, lines, warnings, errors)."""
    from sysmonx.config import parse as parse_mod
    files = sorted(p for p in Path(corpus, "configs").rglob("*") if p.is_file())
    refused = accepted = 0
    for path in files:
        for extensions in (True, False):
            monkeypatch.setattr(parse_mod, "_COMMON_FILTERS_INLINE", True)
            fast = _read(path, extensions)
            monkeypatch.setattr(parse_mod, "_COMMON_FILTERS_INLINE", False)
            full = _read(path, extensions)
            assert fast == full, (path, extensions)
            refused += fast[0] == "error"
            accepted += fast[0] != "error"
    assert refused > 50 and accepted > 200, (refused, accepted)


@pytest.mark.parametrize("body", [
    '<Image condition="is" name="n">a</Image>',
    '<Image condition="IS">a</Image><Image>b</Image>',
    '<Image condition="">a</Image>',
    '<Image condition="regex">a.*</Image>',
    '<Image condition="end with" scanners="all">a</Image>',
    '<Image condition="is" bad="1">a</Image>',
    '<Image condition="is">a<!-- c -->b</Image>',
    '<Image condition="bogus">a</Image>',
    f'<Image name="{"n" * 70}">a</Image>',
    f'<Image name="{"é" * 70}">a</Image>',
    f'<Image name="{"n" * 256}">a</Image>',
    '<Rule groupRelation="and" name="r"><Image>a</Image><User condition="contains">b</User>'
    '</Rule>',
    '<Nope>a</Nope>',
])
def test_each_filter_shape_reads_alike_inline_and_full(body, monkeypatch):
    from sysmonx.config import parse as parse_mod
    raw = _config(body)
    got = []
    for inline in (True, False):
        monkeypatch.setattr(parse_mod, "_COMMON_FILTERS_INLINE", inline)
        try:
            cfg = parse_config(raw)
            got.append([vars(f) for rs in cfg.rule_sets for f in rs.filters])
        except ConfigError as exc:
            got.append([(str(e), e.line) for e in exc.errors])
    assert got[0] == got[1]
