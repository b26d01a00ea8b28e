"""``sysmonx config check`` warnings: constructs Sysmon accepts but that silently never match,
always match, or do something other than what they look like.

Each finding is a :class:`~sysmonx.configmodel.ConfigWarning` with the file and the line of the
filter or rule set. The checks follow spec/sysmon-semantics.md:

* values are taken verbatim (1.1): a leading or trailing space is warned where it makes the
  filter unmatchable, judged by field and condition (TV39): always in values that never hold
  white space (hashes, GUIDs, numbers, addresses), at the anchored end of paths and names
  (``is``, ``begin with`` for a leading, ``end with`` for a trailing one), before a drive letter
  or registry root inside ``contains``; never in free text (command lines, descriptions), nor
  where the space is plainly meant (``begin with`` ``'dsadd '``);
* ``*`` is not a wildcard in Sysmon (2.2): it is compared literally, so ``C:\\Users\\*\\AppData``
  never matches a path; the warning suggests ``contains all``, ``begin with``/``end with`` or
  ``condition="regex"`` (a lone ``*`` in a registry path under ``HKCR`` is a real key name);
* registry paths in a form Sysmon never writes (``\\REGISTRY\\MACHINE\\``, ``HKEY_LOCAL_MACHINE\\``,
  ``HKCU\\``, ``ControlSet001``): the warning gives the form it writes (``HKLM\\``, ``HKU\\``,
  ``CurrentControlSet``; spec 3.8);
* ``;`` is only a separator for ``contains any|all``, ``excludes any|all`` and ``is any`` (2.2):
  with a plain condition the ``;`` is compared literally;
* list quirks (2.2): a trailing ``;`` makes ``contains any`` match everything (TV12) and
  ``excludes any`` match nothing; an empty middle piece (``a;;b``) searches for ``;b``; pieces
  with surrounding spaces;
* empty values (2.1, 2.2): fields are never empty at filter time (``-`` instead), so ``is`` with an
  empty value never matches, ``contains``/``begin with``/``end with`` with an empty value match
  everything, ``excludes`` with an empty value matches nothing;
* ``image`` (2.2): only ``\\`` separates directories, so a Linux path is compared whole;
* image fields (``Image``, ``ParentImage``, ...) hold full paths: ``is`` with a bare file name
  (``csc.exe``) never matches (``System`` and the other pseudo-process names excepted);
* ``less than``/``more than`` are lexicographic (2.2, TV15-17): on a numeric field ``443 less
  than 1024`` is false;
* rule sets (3.3, 3.7): an include set without filters never matches (alone it drops every
  event of the tag, and Sysmon's collection gating switches the event off); two or more rule
  sets of a tag with none matching drop the event, so exclude-only tags split over several
  elements drop everything they do not match (TV29);
* duplicates, and ``<Rule groupRelation="and">`` testing one field ``is`` two values;
* shadowing (3.2): exclude sets are tried before include sets, so an include filter whose every
  match is also matched by a single-filter or OR exclude set of the same tag can never include;
* values with ``%`` are expanded only by Windows Sysmon (2.1).
"""

from __future__ import annotations

import re
from typing import Optional

from ..configmodel import Config, ConfigWarning, Filter, RuleSet
from ..schema import BOOLEAN, CURRENT, GUID, HEXINT32, HEXINT64, UINT16, UINT32
from .conditions import contains_terms, fold, make_predicate, split_tokens

__all__ = ["lint_config", "LIST_CONDITIONS", "PLAIN_CONDITIONS"]

#: Conditions whose value is a ``;`` list (spec 2.2).
LIST_CONDITIONS = frozenset({"contains any", "contains all", "excludes any", "excludes all",
                             "is any"})
#: Conditions that compare the value as one string.
PLAIN_CONDITIONS = frozenset({"is", "is not", "contains", "excludes", "begin with", "end with",
                              "not begin with", "not end with", "image", "less than",
                              "more than"})
_NUMERIC_TYPES = {UINT16, UINT32}


def _numeric_fields() -> frozenset:
    out = set()
    for ev in CURRENT.events.values():
        for f in ev.fields:
            if f.in_type in _NUMERIC_TYPES:
                out.add(f.name)
    return frozenset(out)


_NUMERIC = _numeric_fields()
_PATH_FIELDS = frozenset({"Image", "ParentImage", "TargetFilename", "ImageLoaded",
                          "CurrentDirectory", "SourceImage", "TargetImage", "Device"})
#: Free text: command lines, version resources, WMI text, registry data. White space at either
#: end and a literal '*' are possible there.
_FREE_TEXT = frozenset({"CommandLine", "ParentCommandLine", "Details", "Description", "Product",
                        "Company", "FileVersion", "OriginalFileName", "Query", "Consumer",
                        "Destination", "Name", "Operation", "NewName", "QueryResults",
                        "Contents", "ClientInfo", "Configuration", "Filter", "EventNamespace",
                        "Type", "RuleName"})
#: Paths of files, devices, pipes, registry keys and modules: they start with a drive letter, a
#: backslash or a root, never with white space.
_PATHS = _PATH_FIELDS | {"PipeName", "TargetObject", "StartModule"}
#: Fields that hold a process's full image path (a bare file name never equals one).
_IMAGE_FIELDS = frozenset({"Image", "ParentImage", "SourceImage", "TargetImage",
                           "ImageLoaded"})
#: Image values Sysmon writes that are not paths (kernel pseudo-processes, unknowns).
_PSEUDO_IMAGES = frozenset({"system", "registry", "memcompression", "secure system", "idle",
                            "-", "<unknown process>", "unknown process"})
#: Values that never contain white space at all.
_ATOMS = frozenset({"Hashes", "Hash", "ConfigurationFileHash", "SourceIp", "DestinationIp",
                    "Protocol", "EventType", "CallTrace", "StartAddress", "Signed",
                    "IsExecutable", "QueryStatus", "Archived"}) | frozenset(
    f.name for ev in CURRENT.events.values() for f in ev.fields
    if f.in_type in (UINT16, UINT32, GUID, BOOLEAN, HEXINT32, HEXINT64))
_USERS = frozenset({"User", "ParentUser", "SourceUser", "TargetUser"})
_WELL_KNOWN = re.compile(r"(?i)(SYSTEM|LOCAL SERVICE|NETWORK SERVICE)\b")
_DRIVE = re.compile(r"(?:[A-Za-z]:\\|\\\\)")
_HIVE = re.compile(r"(?i)HK(?:LM|U|CR|CC|CU|EY_[A-Z_]+)\\")
_NEGATIVE = frozenset({"is not", "excludes", "not begin with", "not end with", "excludes any",
                       "excludes all"})
_START_ANCHORED = frozenset({"is", "is not", "begin with", "not begin with", "image", "is any"})
_END_ANCHORED = frozenset({"is", "is not", "end with", "not end with", "image", "is any"})
#: Registry key forms Sysmon never writes (spec 3.8) -> the form it writes.
_REGISTRY_FORMS = (
    (re.compile(r"(?i)(?:^|\\)REGISTRY\\MACHINE\\?"), "HKLM\\"),
    (re.compile(r"(?i)(?:^|\\)REGISTRY\\USER\\?"), "HKU\\"),
    (re.compile(r"(?i)HKEY_LOCAL_MACHINE\\?"), "HKLM\\"),
    (re.compile(r"(?i)HKEY_USERS\\?"), "HKU\\"),
    (re.compile(r"(?i)HKEY_CLASSES_ROOT\\?"), "HKCR\\"),
    (re.compile(r"(?i)HKEY_CURRENT_CONFIG\\?"), "HKCC\\"),
    (re.compile(r"(?i)(?:HKEY_CURRENT_USER|^HKCU)\\"), "HKU\\<SID>\\"),
    (re.compile(r"(?i)ControlSet00\d"), "CurrentControlSet"),
)
_LINUX_PATH = re.compile(r"^/[^/]+/")
_ENV_VAR = re.compile(r"%[A-Za-z_][A-Za-z0-9_()]*%")


def _label(f: Filter) -> str:
    return f"<{f.field} condition=\"{f.condition}\">{_q(f.value)}"


class _Linter:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.out: list[ConfigWarning] = []
        # A config whose path fields hold '/' paths and no '\\' paths is meant for Linux.
        paths = [f.value for rs in cfg.rule_sets for f in rs.filters if f.field in _PATH_FIELDS]
        self.linux = (any(_LINUX_PATH.match(v) for v in paths)
                      and not any("\\" in v for v in paths))

    def warn(self, message: str, line: Optional[int]) -> None:
        self.out.append(ConfigWarning(message, self.cfg.path, line))

    # --- one filter ----------------------------------------------------------------------------

    def filter(self, rs: RuleSet, f: Filter) -> None:
        v, c, lab = f.value, f.condition, _label(f)
        if c == "regex":
            return
        if c in LIST_CONDITIONS:
            self.list_value(f)
        else:
            why = self.edge_space(f.field, c, v)
            if why:
                self.warn(f"{lab}: {why}{_always(c)}", f.line)
            if ";" in v and c in PLAIN_CONDITIONS:
                self.warn(f"{lab}: ';' separates values only for 'contains any', 'is any', "
                          f"'contains all', 'excludes any' and 'excludes all'; with '{c}' it is "
                          "compared as a literal ';'", f.line)
        if v == "":
            if c in ("is", "is any", "image"):
                self.warn(f"{lab}: an empty value never matches: Sysmon renders a missing or "
                          "empty field as '-'", f.line)
            elif c in ("contains", "begin with", "end with", "is not", "contains any",
                       "contains all"):
                self.warn(f"{lab}: an empty value matches every event", f.line)
            elif c in ("excludes", "not begin with", "not end with", "excludes any",
                       "excludes all"):
                self.warn(f"{lab}: an empty value never matches", f.line)
        if c == "image" and v:
            if "/" in v and "\\" not in v:
                if v.startswith("/"):
                    self.warn(f"{lab}: 'image' only splits paths at '\\', so a Linux path is "
                              "compared whole (same as 'is')", f.line)
                else:
                    self.warn(f"{lab}: 'image' only splits paths at '\\', so this partial Linux "
                              "path is compared with the whole value and never matches an "
                              "absolute path; use 'end with'", f.line)
            elif "\\" not in v and self.linux:
                self.warn(f"{lab}: on Linux 'image' does not strip '/' directories, so "
                          f"{_q(v)} only matches a value that is exactly {_q(v)}; use 'end with' "
                          f"'/{v}'", f.line)
        if f.field in _IMAGE_FIELDS and c in ("is", "is any"):
            for piece in ([v[o:o + n] for o, n in split_tokens(v)] if c == "is any" else [v]):
                name = piece.strip()
                if name and "\\" not in name and "/" not in name and \
                        name.lower() not in _PSEUDO_IMAGES:
                    sep = "/" if self.linux else "\\"
                    self.warn(f"{lab}: {f.field} is a full path, so {_q(name)} never equals "
                              f"it; use condition 'image' (the file name) or 'end with' "
                              f"{_q(sep + name)}", f.line)
                    break
        if c in ("less than", "more than") and (f.field in _NUMERIC or v.isdigit()):
            self.warn(f"{lab}: '{c}' compares text, not numbers (\"443\" {c} \"1024\" is "
                      f"{'false' if c == 'less than' else 'true'}); {f.field} values of another "
                      "length give surprising results", f.line)
        if self.linux and _ENV_VAR.search(v):
            self.warn(f"{lab}: '%NAME%' is expanded only by Windows Sysmon; Sysmon for Linux and "
                      "a replay without --windows-env/--env compare it literally", f.line)
        pieces = ([v[o:o + n] for o, n in split_tokens(v)] if c in LIST_CONDITIONS and ";" in v
                  else [v])
        for piece in pieces:
            why = _wildcard(f.field, c, piece)
            if why:
                self.warn(f"{lab}: {why}", f.line)
                break
        if f.field == "TargetObject":
            for piece in pieces:
                why = _registry_form(piece)
                if why:
                    self.warn(f"{lab}: {why}{_always(c)}", f.line)
                    break

    def edge_space(self, field: str, cond: str, text: str, piece: bool = False
                   ) -> Optional[str]:
        """Why white space at an end of ``text`` (a value, or a ``;`` list piece) makes the
        filter on ``field`` with ``cond`` unmatchable, or ``None`` when it does not (or when
        there is none). Judged on the values Sysmon writes into that field."""
        core = text.strip()
        if not core or core == text:
            return None
        lead, trail = text[:len(text) - len(text.lstrip())], text[len(text.rstrip()):]
        what = "piece" if piece else "value"
        layout = [w for w in (lead, trail) if w and w.strip(" ")]
        if layout:
            return (f"the {what} has a line break or tab at an end (from the XML's layout?), "
                    "which Sysmon compares literally (values are not trimmed), so it never "
                    "matches")
        if field in _FREE_TEXT:
            return None
        if cond in LIST_CONDITIONS:
            cond = "is" if cond == "is any" else "contains"
        side = None
        if field in _ATOMS:
            side, reason = ("leading" if lead else "trailing"), "such values never hold spaces"
        elif lead and cond in _START_ANCHORED:
            side = "leading"
            reason = ("a path starts with a drive letter, a backslash or a root"
                      if field in _PATHS else "Sysmon writes no leading space there")
        elif trail and cond in _END_ANCHORED and not (field in _PATHS and self.linux):
            side = "trailing"
            reason = ("Windows drops trailing spaces from file and folder names"
                      if field in _PATHS else "Sysmon writes no trailing space there")
        elif lead and field in _PATHS and (_DRIVE.match(core) or
                                           (field == "TargetObject" and _HIVE.match(core))):
            side, reason = "leading", ("a drive letter or registry root only starts a path, "
                                       "never follows a space")
        elif lead and field in _USERS and _WELL_KNOWN.match(core):
            side, reason = "leading", ("Sysmon writes these accounts as 'NT AUTHORITY\\"
                                       f"{core.upper()}', with no space before the name")
        if side is None:
            return None
        return (f"the {side} space of the {what} {_q(text)} never occurs in {field} values "
                f"({reason}); values are compared literally, so it never matches")

    def list_value(self, f: Filter) -> None:
        v, c, lab = f.value, f.condition, _label(f)
        if ";" not in v:
            why = self.edge_space(f.field, c, v)
            if why:
                self.warn(f"{lab}: {why}{_always(c)}", f.line)
            return
        pieces = [v[o:o + n] for o, n in split_tokens(v)]
        if v.endswith(";") and c != "is any":
            effect = {"contains any": "matches every event",
                      "excludes any": "never matches",
                      "contains all": "adds nothing", "excludes all": "adds nothing"}[c]
            self.warn(f"{lab}: the trailing ';' adds an empty piece that is found in every "
                      f"value, so this {effect}", f.line)
        if any(p == "" for p in pieces[:-1]):
            if c == "is any":
                self.warn(f"{lab}: an empty piece (';;') never matches", f.line)
            else:
                odd = [t for t, p in zip(contains_terms(v), pieces, strict=True) if p == "" and t]
                self.warn(f"{lab}: an empty piece (';;') searches for the rest of the value "
                          f"({_q(odd[0])}), not for nothing" if odd else
                          f"{lab}: an empty piece (';;')", f.line)
        for p in pieces:
            why = self.edge_space(f.field, c, p, piece=True) if p else None
            if why:
                self.warn(f"{lab}: {why} (pieces are not trimmed)", f.line)
                break

    # --- one rule set --------------------------------------------------------------------------

    def rule_set(self, rs: RuleSet) -> None:
        seen: dict = {}
        for f in rs.filters:
            key = (f.aggregate, f.field, f.condition, fold(f.value))
            if key in seen:
                self.warn(f"{_label(f)}: duplicate of the filter on line {seen[key]} in the same "
                          f"{'<Rule>' if f.aggregate else 'rule set'}", f.line)
            else:
                seen[key] = f.line
        for agg_id, agg in rs.aggregates.items():
            if agg.relation != "and":
                continue
            is_values: dict = {}
            for f in rs.filters:
                if f.aggregate == agg_id and f.condition == "is":
                    is_values.setdefault(f.field, set()).add(fold(f.value))
            for fld, vals in is_values.items():
                if len(vals) > 1:
                    self.warn(f"<Rule groupRelation=\"and\"> requires {fld} 'is' {len(vals)} "
                              "different values at once (inside a <Rule> the same field is not "
                              "ORed): it can never match", agg.line or rs.line)

    # --- the whole config ----------------------------------------------------------------------

    def tags(self) -> None:
        by_tag: dict = {}
        for rs in self.cfg.rule_sets:
            by_tag.setdefault(rs.tag, []).append(rs)
        for tag, sets in by_tag.items():
            for rs in sets:
                if rs.onmatch == "include" and not rs.filters:
                    if len(sets) == 1:
                        self.warn(f"<{tag} onmatch=\"include\"> has no filters: it never "
                                  f"matches, so no {tag} event is logged (and Sysmon switches "
                                  "that event's collection off)", rs.line)
                    else:
                        self.warn(f"<{tag} onmatch=\"include\"> has no filters: it never "
                                  "matches; it only counts towards the 'two or more rule sets' "
                                  "fallback (unmatched events are dropped)", rs.line)
            if len(sets) >= 2 and all(rs.onmatch == "exclude" for rs in sets):
                self.warn(f"{len(sets)} <{tag} onmatch=\"exclude\"> elements and no include: "
                          f"with two or more rule sets Sysmon drops a {tag} event that none of "
                          "them matches, so this logs nothing (merge them into one element to "
                          "log everything else)", sets[1].line)
            self.shadowing(tag, sets)

    def shadowing(self, tag: str, sets: list) -> None:
        excludes = [rs for rs in sets if rs.onmatch == "exclude" and rs.filters]
        # Exclude filters that alone make their set match: OR sets, or single-filter sets.
        deciding: list[tuple[RuleSet, Filter]] = []
        for rs in excludes:
            top = [f for f in rs.filters if not f.aggregate]
            if rs.relation == "or":
                deciding.extend((rs, f) for f in top)
            elif len(rs.filters) == len(top) and len({f.field for f in top}) == 1:
                deciding.extend((rs, f) for f in top)
        if not deciding:
            return
        for rs in sets:
            if rs.onmatch != "include":
                continue
            for f in rs.filters:
                if f.condition not in ("is", "is any") or f.aggregate:
                    continue
                for _ex_set, ex in deciding:
                    if ex.field != f.field or ex.condition == "regex":
                        continue
                    values = ([f.value] if f.condition == "is"
                              else [p for p in f.value.split(";") if p])
                    if not values:
                        continue
                    try:
                        pred = make_predicate(ex.condition, ex.value)
                    except ValueError:
                        continue
                    if all(pred(fold(x)) for x in values):
                        self.warn(f"{_label(f)}: never includes anything: every value it matches "
                                  f"is excluded first by {_label(ex)} (line {ex.line}; exclude "
                                  "sets are tried before include sets)", f.line)
                        break

    def run(self) -> list[ConfigWarning]:
        for rs in self.cfg.rule_sets:
            for f in rs.filters:
                self.filter(rs, f)
            self.rule_set(rs)
        self.tags()
        self.out.sort(key=lambda w: (w.line or 0))
        return self.out


def _always(cond: str) -> str:
    return f" (so '{cond}' is always true)" if cond in _NEGATIVE else ""


def _literal_star_ok(field: str, text: str) -> bool:
    """A '*' Sysmon may really meet in ``field``: in free text only inside (``del *.tmp``), in
    a registry path only as the key named ``*`` under the classes root (``HKCR\\*\\shell``)."""
    if field in _FREE_TEXT:  # '*' glued to a word at an end reads as a wildcard ('*.ps1'),
        # a '*' argument of its own is real ('autochk.exe *', 'del *')
        return not (text[:2].strip("* \t") and text[0] == "*"
                    or text[-2:].strip("* \t") and text[-1] == "*")
    if field == "TargetObject":
        parts = text.split("\\")
        return all("*" not in p or (p == "*" and i > 0 and (
            parts[i - 1].lower() in ("hkcr", "classes", "hkey_classes_root")
            or parts[i - 1].lower().endswith("_classes"))) for i, p in enumerate(parts))
    return False


def _q(text: str) -> str:
    """``text`` quoted as it is written in the XML (no Python escaping of backslashes)."""
    return f"'{text}'"


def _wildcard(field: str, cond: str, text: str) -> Optional[str]:
    """Why a ``*`` in ``text`` (a value or a list piece) is a wildcard Sysmon does not have,
    with what to write instead; ``None`` when there is none or it may be a literal ``*``."""
    if cond == "regex" or "*" not in text or _literal_star_ok(field, text):
        return None
    parts = [p for p in text.split("*") if p]
    if not parts:
        return (f"'*' is not a wildcard in Sysmon: {_q(text)} is compared literally and never "
                f"matches; to accept any {field}, leave the filter out")
    plain = cond if cond not in LIST_CONDITIONS else ("is" if cond == "is any" else "contains")
    start = not text.startswith("*") and plain in _START_ANCHORED
    end = not text.endswith("*") and plain in _END_ANCHORED
    if len(parts) == 1:
        alt = ("begin with" if start and not end else "end with" if end and not start
               else "contains")
        suggestion = f"use condition=\"{alt}\" {_q(parts[0])}"
    else:
        rx = ("^" if start else "") + ".*".join(re.escape(p) for p in parts) + ("$" if end else "")
        anchors = " and ".join(x for x in (f"begin with {_q(parts[0])}" if start else "",
                                          f"end with {_q(parts[-1])}" if end else "") if x)
        suggestion = (f"use condition=\"contains all\" {_q(';'.join(parts))} (order not "
                      "checked)" + (f" with {anchors} in a <Rule groupRelation=\"and\">"
                                    if anchors else "")
                      + f", or condition=\"regex\" {_q(rx)} (a SysmonX extension)")
    if field in _FREE_TEXT:
        effect = (f"it matches only a {field} that holds {_q(text)} literally, which is almost "
                  "certainly not what is meant")
    else:
        effect = f"{field} values never hold a '*', so this never matches{_always(cond)}"
    return f"'*' is not a wildcard in Sysmon: it is compared literally; {effect}; {suggestion}"


def _registry_form(text: str) -> Optional[str]:
    """Why ``text`` (a TargetObject value or piece) uses a registry path form Sysmon never
    writes, with the form it does write; ``None`` when it uses Sysmon's forms."""
    found, fixed = [], text
    for rx, written in _REGISTRY_FORMS:
        m = rx.search(fixed)
        if m:
            found.append((m.group(0), written))
            fixed = rx.sub(written.replace("\\", "\\\\"), fixed, count=1)
    if not found:
        return None
    forms = ", ".join(f"{_q(w)} for {_q(g)}" for g, w in found)
    return (f"Sysmon never writes TargetObject that way: it writes {forms} (its roots are HKLM, "
            f"HKU\\<SID>, HKCR and HKCC, and CurrentControlSet for ControlSet00x), so this "
            f"never matches as written; e.g. {_q(fixed)}")


def lint_config(cfg: Config) -> list[ConfigWarning]:
    """Warnings for constructs in ``cfg`` that silently never match, always match, or do not do
    what they look like (see the module docstring for the list and the spec sections).

    Args:
        cfg: a loaded configuration (its own load ``warnings`` are not repeated).
    Returns:
        :class:`~sysmonx.configmodel.ConfigWarning` objects (``path:line: warning: ...``), by
        line.
    """
    return _Linter(cfg).run()
