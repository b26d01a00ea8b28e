"""Sysmon's 16 filter conditions, plus SysmonX's ``regex``, as predicates on folded strings.

Semantics: spec/sysmon-semantics.md section 2. Every comparison is case-insensitive with
ASCII-only folding (2.1); values are compared as Sysmon renders them, with ``-`` for a missing or
empty value; ``less than``/``more than`` are lexicographic; ``;`` lists follow Sysmon's tokenizer
quirks (2.2, token quirks).

A predicate built here takes the *folded* field value (see :func:`fold`) and returns a bool.
"""

from __future__ import annotations

from typing import Callable

import re2

__all__ = ["fold", "fold_upper", "split_tokens", "contains_terms", "is_any_terms", "utf16_len",
           "utf16_key", "make_predicate", "compile_regex", "REGEX_MAX_MEM", "Predicate"]

Predicate = Callable[[str], bool]

_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}
_ASCII_UPPER = {c + 32: c for c in range(ord("A"), ord("Z") + 1)}

#: RE2 memory budget per compiled user pattern, bytes: a hostile pattern fails to compile
#: instead of exhausting memory.
REGEX_MAX_MEM = 8 << 20
#: Memory budget shared by all regex filters of one configuration (per-pattern budget is
#: ``min(REGEX_MAX_MEM, REGEX_TOTAL_MEM / count)``), and the most regex filters a config may have.
REGEX_TOTAL_MEM = 256 << 20
REGEX_MAX_COUNT = 1024
#: A regex filter looks at the first this-many characters of a value (bounds time per event).
REGEX_SCAN_LIMIT = 65536


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


def compile_regex(pattern: str, max_mem: int = REGEX_MAX_MEM):
    """Compile a user pattern with RE2: case-insensitive, unanchored, linear time, bounded memory.

    Args:
        max_mem: RE2's memory budget for this pattern, bytes.
    Raises:
        ValueError: RE2 rejects the pattern (syntax, backreferences, or too large).
    """
    opts = re2.Options()
    opts.case_sensitive = False
    opts.log_errors = False
    opts.max_mem = max_mem
    try:
        return re2.compile(pattern, opts)
    except re2.error as exc:
        msg = exc.args[0] if exc.args else exc
        if isinstance(msg, bytes):
            msg = msg.decode("utf-8", "replace")
        raise ValueError(str(msg)) from None


def make_predicate(condition: str, value: str, *, compare_fold: str = "lower",
                   regex_max_mem: int = REGEX_MAX_MEM) -> Predicate:
    """Build the predicate for one filter.

    Args:
        condition: canonical condition name (``is`` … ``not end with``, or ``regex``).
        value: the rule value verbatim (this function folds it).
        compare_fold: ``lower`` (Windows ``_wcsicmp``) or ``upper`` (Linux ``WideStrcasecmp``):
            the fold used by ``less than``/``more than`` (spec 2.1, uncertain on Windows).
        regex_max_mem: RE2 memory budget of a ``regex`` pattern, bytes.
    Returns:
        ``pred(folded_field_value) -> bool``.
    Raises:
        ValueError: unknown condition or invalid regex.
    """
    r = fold(value)
    if condition == "is":
        return r.__eq__
    if condition == "is not":
        return r.__ne__
    if condition == "contains":
        return lambda v: r in v
    if condition == "excludes":
        return lambda v: r not in v
    if condition == "begin with":
        return lambda v: v.startswith(r)
    if condition == "not begin with":
        return lambda v: not v.startswith(r)
    if condition == "end with":
        return lambda v: v.endswith(r)
    if condition == "not end with":
        return lambda v: not v.endswith(r)
    if condition in ("less than", "more than"):
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
        if condition == "less than":
            return lambda v: compare(v) < 0
        return lambda v: compare(v) > 0
    if condition == "image":
        if "\\" in r:
            return r.__eq__
        return lambda v: v[v.rfind("\\") + 1:] == r
    if condition in ("contains any", "excludes any", "contains all", "excludes all"):
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
        if condition == "contains any":
            return contains_any
        if condition == "excludes any":
            return lambda v: not contains_any(v)
        if condition == "contains all":
            return contains_all
        return lambda v: not contains_all(v)
    if condition == "is any":
        return is_any_terms(r).__contains__
    if condition == "regex":
        search = compile_regex(value, regex_max_mem).search
        limit = REGEX_SCAN_LIMIT
        return lambda v: search(v if len(v) <= limit else v[:limit]) is not None
    raise ValueError(f"Unknown condition: {condition}")
