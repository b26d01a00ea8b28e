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

__all__ = ["fold", "fold_upper", "split_tokens", "make_predicate", "compile_regex",
           "REGEX_MAX_MEM", "Predicate"]

Predicate = Callable[[str], bool]

_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}
_ASCII_UPPER = {c + 32: c for c in range(ord("A"), ord("Z") + 1)}

#: RE2 memory budget per compiled user pattern, bytes: a hostile pattern fails to compile
#: instead of exhausting memory.
REGEX_MAX_MEM = 8 << 20


def fold(s: str) -> str:
    """ASCII-only lower-casing (``A``-``Z`` only), as Sysmon folds (spec 2.1)."""
    return s.lower() if s.isascii() else s.translate(_ASCII_LOWER)


def fold_upper(s: str) -> str:
    """ASCII-only upper-casing, the Linux ``WideStrcasecmp`` fold (spec 2.1)."""
    return s.upper() if s.isascii() else s.translate(_ASCII_UPPER)


def split_tokens(value: str) -> list[str]:
    """Split a ``contains any``/``is any``/``contains all``/``excludes …`` value on ``;``
    exactly as Sysmon's ``NextItem`` does (spec 2.2, token quirks).

    Each token starts where the previous one ended plus one and runs to the next ``;`` found
    *after its first character*; so a trailing ``;`` yields a final empty token (matching every
    non-empty value) and an empty middle token in ``a;;b`` becomes ``;b``.

    >>> split_tokens("a.exe;;b.exe")
    ['a.exe', ';b.exe']
    >>> split_tokens("a;b;")
    ['a', 'b', '']
    """
    tokens, start, n = [], 0, len(value)
    while True:
        if start >= n:
            tokens.append("")
            return tokens
        end = value.find(";", start + 1)
        if end == -1:
            tokens.append(value[start:])
            return tokens
        tokens.append(value[start:end])
        start = end + 1


def compile_regex(pattern: str):
    """Compile a user pattern with RE2: case-insensitive, unanchored, linear time, bounded memory.

    Raises:
        ValueError: RE2 rejects the pattern (syntax, backreferences, or too large).
    """
    opts = re2.Options()
    opts.case_sensitive = False
    opts.log_errors = False
    opts.max_mem = REGEX_MAX_MEM
    try:
        return re2.compile(pattern, opts)
    except re2.error as exc:
        msg = exc.args[0] if exc.args else exc
        if isinstance(msg, bytes):
            msg = msg.decode("utf-8", "replace")
        raise ValueError(str(msg)) from None


def make_predicate(condition: str, value: str, *, compare_fold: str = "lower") -> Predicate:
    """Build the predicate for one filter.

    Args:
        condition: canonical condition name (``is`` … ``not end with``, or ``regex``).
        value: the rule value verbatim (this function folds it).
        compare_fold: ``lower`` (Windows ``_wcsicmp``) or ``upper`` (Linux ``WideStrcasecmp``):
            the fold used by ``less than``/``more than`` (spec 2.1, uncertain on Windows).
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
        if compare_fold == "upper":
            ru = fold_upper(r)
            if condition == "less than":
                return lambda v: fold_upper(v) < ru
            return lambda v: fold_upper(v) > ru
        return (lambda v: v < r) if condition == "less than" else (lambda v: v > r)
    if condition == "image":
        if "\\" in r:
            return r.__eq__
        return lambda v: v[v.rfind("\\") + 1:] == r
    if condition in ("contains any", "excludes any", "contains all", "excludes all"):
        tokens = tuple(split_tokens(r))
        if condition == "contains any":
            return lambda v: any(t in v for t in tokens)
        if condition == "excludes any":
            return lambda v: not any(t in v for t in tokens)
        if condition == "contains all":
            return lambda v: all(t in v for t in tokens)
        return lambda v: not all(t in v for t in tokens)
    if condition == "is any":
        return frozenset(split_tokens(r)).__contains__
    if condition == "regex":
        search = compile_regex(value).search
        return lambda v: search(v) is not None
    raise ValueError(f"Unknown condition: {condition}")
