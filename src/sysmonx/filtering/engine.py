"""Sysmon's filter algorithm, compiled once per configuration into per-EventID deciders.

Semantics: spec/sysmon-semantics.md section 3 — rule-set order (3.2: exclude sets then include
sets, each in reverse document order), decision and fallback (3.3), group evaluation with the
same-field-is-OR rule and ``<Rule>`` sub-groups (3.4), errors as NoMatch (3.5), RuleName
selection including the stale-name quirk (3.6), per-type defaults (3.7), multi-id binding by
field position (1.5), FieldSizes truncation after filtering (3.9).

Compilation turns every rule set into a closure; large OR sets are bucketed by (field, operator)
into dict lookups and ``str.startswith``/``endswith`` tuple tests, keeping document-order
semantics (the first matching filter, which decides RuleName, is the one with the lowest index).
Evaluating an event never walks the config model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from ..configmodel import Config, RuleSet
from ..schema import CURRENT
from .conditions import (REGEX_MAX_MEM, REGEX_TOTAL_MEM, fold, is_any_terms, make_predicate,
                         utf16_len)

__all__ = ["EngineOptions", "FilterEngine", "truncate_value", "expand_environment",
           "WINDOWS_DEFAULT_ENV", "NEVER_FILTERED"]

#: Events Sysmon never filters (spec 3.7).
NEVER_FILTERED = frozenset({4, 16, 255})

SetResult = tuple[bool, Optional[str]]


@dataclass(frozen=True)
class EngineOptions:
    """Named choices where Sysmon's behaviour is uncertain or platform-dependent.

    Attributes:
        compare_fold: ``lower`` (Windows, default) or ``upper`` (Sysmon for Linux): the fold of
            ``less than``/``more than`` (spec 2.1).
        fallback: ``code`` (default; two or more rule sets for a tag and none matched => exclude,
            spec 3.3 / TV29) or ``intent`` (a tag with only exclude sets logs what none of them
            matches, as community guides expect).
        stale_rulename: True (default, code-derived, TV40): a name set by a filter in a rule set
            that did not match survives to a later matching set; False resets it per set.
        no_rule_defaults: ``manifest`` (default: only 1 and 5 logged without rules) or
            ``community`` (1, 2, 5, 6, per the TrustedSec guide; spec 3.7 uncertain).
        field_sizes_skip_last: True (default, code quirk): FieldSizes never truncates the highest
            event id (29); False truncates every event (spec 3.9).
        environment: Windows environment variables (name -> value, names case-insensitive) for
            expanding ``%NAME%`` in rule values, as Windows Sysmon does (spec 2.1). ``None``
            (default) compares rule values literally: a replayed log does not carry the recorded
            host's environment. Unknown names stay as written (ExpandEnvironmentStrings); an
            expansion longer than 32767 characters makes the filter NoMatch.
    """

    compare_fold: str = "lower"
    fallback: str = "code"
    stale_rulename: bool = True
    no_rule_defaults: str = "manifest"
    field_sizes_skip_last: bool = True
    environment: Optional[dict] = None

    def __post_init__(self) -> None:
        checks = {"compare_fold": ("lower", "upper"), "fallback": ("code", "intent"),
                  "no_rule_defaults": ("manifest", "community")}
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, not {getattr(self, name)!r}")


#: Windows environment of a default installation, for ``--windows-env`` (system variables only).
WINDOWS_DEFAULT_ENV = {
    "SystemRoot": "C:\\Windows", "windir": "C:\\Windows", "SystemDrive": "C:",
    "ProgramFiles": "C:\\Program Files", "ProgramFiles(x86)": "C:\\Program Files (x86)",
    "ProgramW6432": "C:\\Program Files", "ProgramData": "C:\\ProgramData",
    "ALLUSERSPROFILE": "C:\\ProgramData", "PUBLIC": "C:\\Users\\Public",
    "CommonProgramFiles": "C:\\Program Files\\Common Files",
    "CommonProgramFiles(x86)": "C:\\Program Files (x86)\\Common Files",
    "ComSpec": "C:\\Windows\\system32\\cmd.exe",
}


def expand_environment(value: str, env: dict) -> Optional[str]:
    """Expand ``%NAME%`` in a rule value like ExpandEnvironmentStrings (names case-insensitive,
    unknown names left as written). Returns ``None`` (NoMatch) when the result exceeds 32767
    characters (spec 2.1)."""
    if "%" not in value:
        return value
    lower = {k.lower(): v for k, v in env.items()}
    out, i = [], 0
    while i < len(value):
        j = value.find("%", i)
        if j < 0:
            out.append(value[i:])
            break
        k = value.find("%", j + 1)
        if k < 0:
            out.append(value[i:])
            break
        name = value[j + 1:k]
        out.append(value[i:j])
        if name.lower() in lower:
            out.append(lower[name.lower()])
            i = k + 1
        else:
            out.append("%" + name)
            i = k
    text = "".join(out)
    return text if len(text) <= 32767 else None


def truncate_value(value: str, size: int) -> str:
    """FieldSizes truncation (spec 3.9): longer than ``size`` UTF-16 code units => the first
    ``size-3`` units + ``...`` when size >= 3, ``-`` for 1 or 2, empty for 0; otherwise
    unchanged. A cut never splits a surrogate pair (the pair is dropped whole)."""
    if utf16_len(value) <= size:
        return value
    if size >= 3:
        keep = size - 3
        if len(value) == utf16_len(value):
            return value[:keep] + "..."
        out, units = [], 0
        for ch in value:
            w = 2 if ch >= "\U00010000" else 1
            if units + w > keep:
                break
            out.append(ch)
            units += w
        return "".join(out) + "..."
    return "-" if size > 0 else ""


_BUCKET_KINDS = ("is", "is any", "image", "begin with", "end with", "contains")


def _bucket_test(kind: str, entries: list[tuple[int, str]]) -> Callable[[str], int]:
    """Return ``test(v) -> lowest matching filter index or -1`` for same-field same-kind filters.

    ``entries`` are ``(index, folded rule value)`` in document order.
    """
    if kind in ("is", "is any"):
        table: dict[str, int] = {}
        for idx, r in entries:
            values = [r] if kind == "is" else is_any_terms(r)
            for t in values:
                table.setdefault(t, idx)
        get = table.get
        return lambda v: get(v, -1)
    if kind == "image":
        base: dict[str, int] = {}
        full: dict[str, int] = {}
        for idx, r in entries:
            (full if "\\" in r else base).setdefault(r, idx)
        bget, fget = base.get, full.get

        def image_test(v: str) -> int:
            a = bget(v[v.rfind("\\") + 1:], -1)
            b = fget(v, -1)
            if a < 0:
                return b
            return a if b < 0 or a < b else b
        return image_test
    values = tuple(r for _, r in entries)
    pairs = tuple(entries)
    if kind in ("begin with", "end with"):
        method = str.startswith if kind == "begin with" else str.endswith

        def affix_test(v: str) -> int:
            if not method(v, values):
                return -1
            for idx, r in pairs:
                if method(v, r):
                    return idx
            return -1
        return affix_test

    def contains_test(v: str) -> int:
        for idx, r in pairs:
            if r in v:
                return idx
        return -1
    return contains_test


def _never(v: str) -> bool:
    return False


def _single_test(pred: Callable[[str], bool], idx: int) -> Callable[[str], int]:
    """A one-filter bucket: ``idx`` when ``pred`` matches, else -1."""
    return lambda v: idx if pred(v) else -1


class _SetCompiler:
    """Compiles one rule set for one concrete event id."""

    def __init__(self, rs: RuleSet, event_id: int, opts: EngineOptions,
                 regex_mem: int = REGEX_MAX_MEM):
        self.rs = rs
        self.opts = opts
        self.regex_mem = regex_mem
        bound = CURRENT.events[rs.event_id].index
        actual = CURRENT.events[event_id].field_names
        self.present = {}
        for f in rs.filters:
            pos = bound.get(f.field)
            self.present[f.field] = pos is not None and pos < len(actual) and actual[pos] == f.field

    def value(self, f) -> Optional[str]:
        """The rule value after environment expansion (``None``: the filter can never match)."""
        if self.opts.environment is None:
            return f.value
        return expand_environment(f.value, self.opts.environment)

    def pred(self, f):
        if not self.present[f.field]:
            return None
        value = self.value(f)
        if value is None:
            return _never
        return make_predicate(f.condition, value, compare_fold=self.opts.compare_fold,
                              regex_max_mem=self.regex_mem)

    def compile(self) -> Callable[[dict], SetResult]:
        rs = self.rs
        if not rs.filters:
            return lambda lv: (False, None)
        items = []  # ("f", field, pred, name, later_same) | ("g", relation, [(field, pred, name)])
        i, n = 0, len(rs.filters)
        last_top = {}  # field -> index of its last top-level filter (same-field rule, spec 3.4)
        for j, g in enumerate(rs.filters):
            if not g.aggregate:
                last_top[g.field] = j
        while i < n:
            f = rs.filters[i]
            if f.aggregate:
                j = i
                members = []
                while j < n and rs.filters[j].aggregate == f.aggregate:
                    g = rs.filters[j]
                    members.append((g.field, self.pred(g), g.name or None))
                    j += 1
                items.append(("g", rs.aggregates[f.aggregate].relation, tuple(members)))
                i = j
            else:
                later = last_top[f.field] > i
                items.append(("f", f.field, self.pred(f), f.name or None, later))
                i += 1
        if rs.relation == "or" and all(it[0] == "f" for it in items):
            return self._compile_or_bucketed()
        return self._compile_walker(rs.relation, items)

    def _compile_or_bucketed(self) -> Callable[[dict], SetResult]:
        names: list[Optional[str]] = []
        buckets: dict[tuple[str, str], list[tuple[int, str]]] = {}
        singles: list[tuple[str, Callable[[str], bool], int]] = []
        for idx, f in enumerate(self.rs.filters):
            names.append(f.name or None)
            if not self.present[f.field]:
                continue
            value = self.value(f)
            if value is None:
                continue
            if f.condition in _BUCKET_KINDS:
                buckets.setdefault((f.field, f.condition), []).append((idx, fold(value)))
            else:
                singles.append((f.field, self.pred(f), idx))
        tests = [(field, _bucket_test(kind, entries)) for (field, kind), entries in buckets.items()]
        for field, pred, idx in singles:
            tests.append((field, _single_test(pred, idx)))
        tests_t = tuple(tests)
        if not tests_t:
            return lambda lv: (False, None)
        names_t = tuple(names)

        def match_or(lv: dict) -> SetResult:
            best = -1
            for field, test in tests_t:
                idx = test(lv[field])
                if idx >= 0 and (best < 0 or idx < best):
                    best = idx
                    if best == 0:
                        break
            if best < 0:
                return False, None
            return True, names_t[best]
        return match_or

    @staticmethod
    def _compile_walker(relation: str, items: list) -> Callable[[dict], SetResult]:
        is_and = relation == "and"
        items_t = tuple(items)

        def match_group(rel_and: bool, members, lv) -> SetResult:
            name = None
            for field, pred, fname in members:
                ok = pred is not None and pred(lv[field])
                if ok:
                    if fname:
                        name = fname
                    if not rel_and:
                        return True, name
                elif rel_and:
                    return False, name
            return rel_and, name

        def walk(lv: dict) -> SetResult:
            name = None
            matched_fields = set()
            for item in items_t:
                if item[0] == "g":
                    ok, gname = match_group(item[1] == "and", item[2], lv)
                    if gname is not None:
                        name = gname
                    if ok and not is_and:
                        return True, name
                    if not ok and is_and:
                        return False, name
                    continue
                _, field, pred, fname, later = item
                if field in matched_fields:
                    continue
                ok = pred is not None and pred(lv[field])
                if ok:
                    if fname:
                        name = fname
                    if not is_and:
                        return True, name
                    matched_fields.add(field)
                elif is_and and not later:
                    return False, name
            return is_and, name
        return walk


class FilterEngine:
    """A configuration compiled into one decision function per EventID.

    ``decide(event_id, data)`` returns ``(include, rule_name)``: ``include`` is Sysmon's decision
    to log the event, ``rule_name`` the RuleName Sysmon would write (``-`` when no rule matched),
    or ``None`` for events Sysmon never filters (4, 16, 255) and IDs it does not define, which
    are always included and keep their RuleName untouched.

    Args:
        config: a loaded :class:`~sysmonx.config.Config`, or ``None`` for Sysmon's behaviour with
            no configuration (per-type defaults only).
        options: :class:`EngineOptions`.
    """

    def __init__(self, config: Optional[Config], options: EngineOptions = EngineOptions()):
        self.config = config
        self.options = options
        self.field_sizes = dict(config.field_sizes) if config else {}
        n_regex = sum(f.condition == "regex" for rs in (config.rule_sets if config else ())
                      for f in rs.filters)
        self._regex_mem = max(256 << 10, min(REGEX_MAX_MEM, REGEX_TOTAL_MEM // max(1, n_regex)))
        self._deciders: dict[int, Callable[[dict], tuple[bool, Optional[str]]]] = {}
        for eid, ev in CURRENT.events.items():
            self._deciders[eid] = self._compile_event(eid, ev)
        self._truncate_skip = max(e for e in CURRENT.events if e < 255) \
            if options.field_sizes_skip_last else None

    def _default_include(self, eid: int, default: str) -> bool:
        if self.options.no_rule_defaults == "community" and eid in (2, 6):
            return True
        return default == "include"

    def _compile_event(self, eid: int, ev) -> Callable[[dict], tuple[bool, Optional[str]]]:
        if eid in NEVER_FILTERED or ev.tag is None:
            return lambda data: (True, None)
        sets: list[RuleSet] = []
        if self.config is not None:
            sets = [rs for rs in self.config.rule_sets if rs.tag == ev.tag]
        if not sets:
            const = (self._default_include(eid, ev.default), "-")
            return lambda data: const
        ordered = ([rs for rs in reversed(sets) if rs.onmatch == "exclude"]
                   + [rs for rs in reversed(sets) if rs.onmatch == "include"])
        compiled = tuple((rs.onmatch == "include",
                          _SetCompiler(rs, eid, self.options, self._regex_mem).compile())
                         for rs in ordered)
        if len(sets) == 1:
            fallback = sets[0].default == "include"
        elif self.options.fallback == "intent":
            fallback = all(rs.onmatch == "exclude" for rs in sets)
        else:
            fallback = False
        fields = tuple(sorted({f.field for rs in sets for f in rs.filters}))
        rule_name_used = "RuleName" in fields
        stale = self.options.stale_rulename

        def decide(data: dict) -> tuple[bool, Optional[str]]:
            lv = {}
            for f in fields:
                v = data.get(f)
                lv[f] = (v.lower() if v.isascii() else fold(v)) if v else "-"
            if rule_name_used:
                lv["RuleName"] = "-"  # Sysmon fills RuleName after filtering (spec 4.3)
            current = None
            for include, match in compiled:
                ok, name = match(lv)
                if stale:
                    if name is not None:
                        current = name
                elif ok:
                    current = name
                if ok:
                    return include, current or "-"
            return fallback, "-"
        return decide

    def decide(self, event_id: int, data: dict) -> tuple[bool, Optional[str]]:
        """Decide one event: see the class docstring. ``data`` maps field names to strings."""
        d = self._deciders.get(event_id)
        if d is None:
            return True, None
        return d(data)

    def decider_for(self, event_id: int) -> Callable[[dict], tuple[bool, Optional[str]]]:
        """The compiled decision function of one EventID (for hot loops)."""
        return self._deciders.get(event_id) or (lambda data: (True, None))

    def apply_field_sizes(self, event_id: int, data: dict) -> dict:
        """Return ``data`` with FieldSizes truncation applied (a new dict if anything changed).

        Runs after filtering, on output only (spec 3.9)."""
        if not self.field_sizes or event_id == self._truncate_skip:
            return data
        out = None
        for name, size in self.field_sizes.items():
            v = data.get(name)
            if v is not None and utf16_len(v) > size:
                if out is None:
                    out = dict(data)
                out[name] = truncate_value(v, size)
        return out if out is not None else data
