"""Sysmon's 16 filter conditions, plus SysmonX's ``regex``, as predicates on folded strings.

Semantics: spec/sysmon-semantics.md section 2. Every comparison is case-insensitive with
ASCII-only folding (2.1); values are compared as Sysmon renders them, with ``-`` for a missing or
empty value; ``less than``/``more than`` are lexicographic; ``;`` lists follow Sysmon's tokenizer
quirks (2.2, token quirks).

A predicate built here takes the *folded* field value (see :func:`fold`) and returns a bool.

Each condition is a :class:`Condition` registered in
:data:`~sysmonx.core.registry.CONDITIONS` where it is defined, at the bottom of this module;
:func:`make_predicate` looks the name up there. A SysmonX extension (``extension=True``) is
accepted by the config reader only when extensions are on (``--no-extensions`` refuses it). To add
a condition, register a :class:`Condition` (here, or from another package through the
``sysmonx.conditions`` entry-point group): the reader then accepts it and the engine evaluates it
with the generic predicate path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..core import regex as _re2
from ..core.errors import PluginError, UsageError
from ..core.registry import CONDITIONS

__all__ = ["fold", "fold_upper", "split_tokens", "contains_terms", "is_any_terms", "utf16_len",
           "utf16_key", "make_predicate", "compile_regex", "REGEX_MAX_MEM", "REGEX_TOTAL_MEM",
           "REGEX_MAX_COUNT", "REGEX_SCAN_LIMIT", "Predicate", "Condition"]

Predicate = Callable[[str], bool]

_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}
_ASCII_UPPER = {c + 32: c for c in range(ord("A"), ord("Z") + 1)}

#: The RE2 policy's limits (:mod:`sysmonx.core.regex`), under the names the engine uses.
REGEX_MAX_MEM = _re2.MAX_MEM
REGEX_TOTAL_MEM = _re2.TOTAL_MEM
REGEX_MAX_COUNT = _re2.MAX_COUNT
REGEX_SCAN_LIMIT = _re2.SCAN_LIMIT


def fold(s: str) -> str:
    """ASCII-only lower-casing (``A``-``Z`` only), as Sysmon folds (spec 2.1)."""
    return s.lower() if s.isascii() else s.translate(_ASCII_LOWER)


def fold_upper(s: str) -> str:
    """ASCII-only upper-casing, the Linux ``WideStrcasecmp`` fold (spec 2.1)."""
    return s.upper() if s.isascii() else s.translate(_ASCII_UPPER)


def split_tokens(value: str) -> list[tuple[int, int]]:
    """Sysmon's ``NextItem`` over a ``;`` list: ``(offset, size)`` of every piece between
    semicolons, empty pieces included (spec 2.2, token quirks).

    >>> split_tokens("a.exe;;b.exe")
    [(0, 5), (6, 0), (7, 5)]
    """
    out, start = [], 0
    while True:
        end = value.find(";", start)
        if end == -1:
            out.append((start, len(value) - start))
            return out
        out.append((start, end - start))
        start = end + 1


def contains_terms(value: str) -> list[str]:
    """The substrings ``contains any``/``contains all``/``excludes any``/``excludes all`` look
    for: each piece, except that an *empty* piece searches for the whole rest of the rule value
    from its offset (Sysmon's ``FindSubString`` with size 0). So a trailing ``;`` adds ``""``
    (matches every value) and ``a.exe;;b.exe`` looks for ``a.exe``, ``;b.exe`` and ``b.exe``.

    >>> contains_terms("a.exe;;b.exe")
    ['a.exe', ';b.exe', 'b.exe']
    >>> contains_terms("-enc;bypass;")
    ['-enc', 'bypass', '']
    """
    return [value[o:o + n] if n else value[o:] for o, n in split_tokens(value)]


def is_any_terms(value: str) -> frozenset:
    """The values ``is any`` compares with: the non-empty pieces (an empty piece never matches,
    spec 2.2)."""
    return frozenset(value[o:o + n] for o, n in split_tokens(value) if n)


def utf16_len(s: str) -> int:
    """Length in UTF-16 code units, the unit Sysmon counts in (spec 2.1, 3.9)."""
    if s.isascii() or max(s) < "\U00010000":
        return len(s)
    return len(s.encode("utf-16-le", "surrogatepass")) // 2


def utf16_key(s: str):
    """Sort key giving UTF-16 code-unit order (Sysmon compares UTF-16 strings); equal to the
    string itself when it has no character outside the BMP."""
    if s.isascii() or max(s) < "\U00010000":
        return s
    return s.encode("utf-16-be", "surrogatepass")


def compile_regex(pattern: str, max_mem: int = REGEX_MAX_MEM) -> Any:
    """Compile a config ``regex`` value under the RE2 policy: case-insensitive, unanchored,
    linear time, bounded memory (:func:`sysmonx.core.regex.compile_pattern`).

    Raises:
        RegexError: RE2 rejects the pattern (a ``ValueError``).
    """
    return _re2.compile_pattern(pattern, case_sensitive=False, max_mem=max_mem)


@dataclass(frozen=True)
class Condition:
    """One filter operator.

    Attributes:
        name: the ``condition`` attribute value, lower case (``begin with``).
        summary: one line for listings.
        make: ``make(folded_rule_value, raw_rule_value, compare_fold, regex_max_mem)`` ->
            predicate on a folded field value.
        extension: a SysmonX addition (refused by ``--no-extensions``; not in Sysmon's schema).
        validate: ``validate(raw_rule_value)`` raising ``ValueError`` for a value the config
            reader must refuse (with the file and line), or ``None``.
        max_per_config: most filters of this condition one configuration may hold, or ``None``.
    """

    name: str
    summary: str
    make: Callable[[str, str, str, int], Predicate]
    extension: bool = False
    validate: Optional[Callable[[str], object]] = None
    max_per_config: Optional[int] = None


def make_predicate(condition: str, value: str, *, compare_fold: str = "lower",
                   regex_max_mem: int = REGEX_MAX_MEM) -> Predicate:
    """Build the predicate for one filter.

    Args:
        condition: canonical condition name (``is`` … ``not end with``, ``regex``, or any
            registered :class:`Condition`).
        value: the rule value verbatim (this function folds it).
        compare_fold: ``lower`` (Windows ``_wcsicmp``) or ``upper`` (Linux ``WideStrcasecmp``):
            the fold used by ``less than``/``more than`` (spec 2.1, uncertain on Windows).
        regex_max_mem: RE2 memory budget of a ``regex`` pattern, bytes.
    Returns:
        ``pred(folded_field_value) -> bool``.
    Raises:
        ValueError: unknown condition (:class:`~sysmonx.core.errors.UsageError`) or invalid
            regex (:class:`~sysmonx.core.errors.RegexError`).
    """
    cond = _BUILTIN.get(condition)
    if cond is None:
        try:
            cond = CONDITIONS.get(condition)
        except PluginError:
            raise UsageError(f"Unknown condition: {condition}") from None
    return cond.make(fold(value), value, compare_fold, regex_max_mem)


def _less_more(less: bool) -> Callable[[str, str, str, int], Predicate]:
    def make(r: str, raw: str, compare_fold: str, mem: int) -> Predicate:
        conv = fold_upper if compare_fold == "upper" else str
        ref = conv(r)
        ref16 = ref.encode("utf-16-be", "surrogatepass")
        ref_bmp = isinstance(utf16_key(ref), str)

        def compare(v: str) -> int:
            cv = conv(v)
            if ref_bmp and isinstance(utf16_key(cv), str):
                return (cv > ref) - (cv < ref)
            # outside the BMP: compare UTF-16 code units, as Sysmon does
            a = cv.encode("utf-16-be", "surrogatepass")
            return (a > ref16) - (a < ref16)
        if less:
            return lambda v: compare(v) < 0
        return lambda v: compare(v) > 0
    return make


def _image(r: str, raw: str, compare_fold: str, mem: int) -> Predicate:
    if "\\" in r:
        return r.__eq__
    return lambda v: v[v.rfind("\\") + 1:] == r


def _terms(kind: str) -> Callable[[str, str, str, int], Predicate]:
    def make(r: str, raw: str, compare_fold: str, mem: int) -> Predicate:
        tokens = tuple(contains_terms(r))

        def contains_any(v: str) -> bool:
            for t in tokens:
                if t in v:
                    return True
            return False

        def contains_all(v: str) -> bool:
            for t in tokens:
                if t not in v:
                    return False
            return True
        if kind == "contains any":
            return contains_any
        if kind == "excludes any":
            return lambda v: not contains_any(v)
        if kind == "contains all":
            return contains_all
        return lambda v: not contains_all(v)
    return make


def _regex(r: str, raw: str, compare_fold: str, mem: int) -> Predicate:
    return _re2.searcher(compile_regex(raw, mem), REGEX_SCAN_LIMIT)


def _check_regex(raw: str) -> None:
    compile_regex(raw)


# Sysmon's operators in manifest order (spec 2.2), then SysmonX's.
_ALL = (
    Condition("is", "the whole value equals", lambda r, raw, f, m: r.__eq__),
    Condition("is not", "the whole value differs", lambda r, raw, f, m: r.__ne__),
    Condition("contains", "the value contains", lambda r, raw, f, m: lambda v: r in v),
    Condition("excludes", "the value does not contain",
              lambda r, raw, f, m: lambda v: r not in v),
    Condition("begin with", "the value starts with",
              lambda r, raw, f, m: lambda v: v.startswith(r)),
    Condition("end with", "the value ends with", lambda r, raw, f, m: lambda v: v.endswith(r)),
    Condition("less than", "lexicographically before (strings, not numbers)", _less_more(True)),
    Condition("more than", "lexicographically after (strings, not numbers)", _less_more(False)),
    Condition("image", "the file name after the last \\ equals (or the whole path with a \\)",
              _image),
    Condition("contains any", "contains one of the ;-separated pieces", _terms("contains any")),
    Condition("is any", "equals one of the ;-separated pieces",
              lambda r, raw, f, m: is_any_terms(r).__contains__),
    Condition("contains all", "contains every ;-separated piece", _terms("contains all")),
    Condition("excludes any", "lacks at least one ;-separated piece", _terms("excludes any")),
    Condition("excludes all", "contains none of the ;-separated pieces",
              _terms("excludes all")),
    Condition("not begin with", "the value does not start with",
              lambda r, raw, f, m: lambda v: not v.startswith(r)),
    Condition("not end with", "the value does not end with",
              lambda r, raw, f, m: lambda v: not v.endswith(r)),
    Condition("regex", "RE2 search, case-insensitive, linear time (SysmonX extension)", _regex,
              extension=True, validate=_check_regex, max_per_config=REGEX_MAX_COUNT),
)
_BUILTIN = {c.name: c for c in _ALL}
for _c in _ALL:
    CONDITIONS.add(_c, name=_c.name, summary=_c.summary, origin=__name__)
