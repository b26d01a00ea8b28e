"""Sigma rules compiled into in-process matchers over SysmonX events.

Each rule's condition tree, as pySigma parses and post-processes it (selections resolved,
``1 of sel*`` / ``all of them`` expanded, ``not`` and parentheses kept, modifiers applied to the
values), is compiled into a Python expression over an event and the automaton keys found in it
(generated code, one function per rule). Values follow the Sigma specification:

* strings match case-insensitively (``cased`` makes them case-sensitive), ``*``/``?`` are
  wildcards, ``\\`` escapes them; ``contains``/``startswith``/``endswith``/``all``/``windash``/
  ``base64``/``base64offset``/``utf16le``/``utf16be``/``utf16``/``wide`` are applied by pySigma
  to the values (Sigma modifiers appendix);
* ``re`` is searched (unanchored) with RE2, case-sensitive unless ``i``; ``m`` and ``s`` flags;
  where RE2's syntax means something else than the PCRE flavour the Sigma modifiers appendix
  names, the pattern is rewritten to PCRE's meaning (:func:`pcre_to_re2`: ``$`` and ``\\Z``
  also match before a final newline, ``\\s`` includes the vertical tab);
* ``cidr`` (IPv4 and IPv6), ``lt``/``lte``/``gt``/``gte``/``neq`` on numbers (decimal or
  ``0x`` hexadecimal field values), the time-part modifiers ``minute`` ... ``year``, ``exists``,
  ``fieldref`` (case-insensitive, with ``startswith``/``endswith``/``contains``), ``expand``
  with the placeholders given at load (a rule with a placeholder that has no value is rejected);
* a number matches the field's decimal (or ``0x`` hex) rendering, a boolean ``true``/``false``;
* ``null`` matches a field that is absent or empty; a keyword (value without field) is a
  full-text search: it matches when it is a substring of any ``EventData`` value (its own
  wildcards kept).

A field absent from the event matches nothing but ``null`` and ``exists: false`` (so
``not filter`` is true for it).

**Speed.** Rules are grouped by the events they can see (:mod:`.logsource`). Within a group every
plain string value (equals, prefix, suffix, substring) and every number/boolean becomes a key of
one Aho-Corasick automaton per field, over the lower-cased value framed by two sentinel
characters (``\\x02value\\x03``: a prefix key starts with ``\\x02``, a suffix key ends with
``\\x03``, an equality key has both). One pass per field finds every key of every rule of the
group; such values are then decided exactly by set membership. Other values (wildcards in the
middle, regexes, cased strings, IPv4 CIDR ranges) contribute necessary literals (each literal
fragment, the literals every regex match must contain, the address prefixes) as keys, tested
before their own code runs. From the condition each rule gets a necessity tree (which keys every
matching event contains); each group indexes a rule by its rarest necessary clause, first from a
prior, then from the key frequencies the group observes, so an event only reaches the rules it
could satisfy. Rules without any necessary clause are evaluated for every event of their group
(the load report counts them). Field values and whole events already seen are remembered with
their keys and candidates (bounded), so repeated values cost one dictionary lookup. A whole
event is remembered under its key, the tuple of its values of the fields the group's keys are
on (and of the header constants its data overrides); with it the result of every rule that reads
no other field (:attr:`CompiledRule.reads`, no keyword), so a repeated event is one tuple, one
dictionary lookup and the evaluation of the few rules that read other fields.
"""

from __future__ import annotations

import difflib
import ipaddress
import pickle
import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Sequence

import ahocorasick
from ..core import regex as _re2
from ..core.native import speedups as _speedups
from ..core.errors import RegexError, RuleError
from ..event import (
    LINUX_PROVIDER,
    SIGMA_ALERT_PROVIDER,
    WINDOWS_PROVIDER,
    Event,
    TimeFormatError,
    normalize_time,
)
from .fields import HASH_FIELDS, field_getter, known_fields
from .logsource import LogsourceError, Target, group_keys_for_event, resolve_logsource
from . import _pysigma

if TYPE_CHECKING:
    from sigma.conditions import (
        ConditionAND,
        ConditionFieldEqualsValueExpression,
        ConditionNOT,
        ConditionOR,
        ConditionValueExpression,
    )
    from sigma.rule import SigmaRule
    from sigma.types import (
        CompareOperators,
        Placeholder,
        SigmaBool,
        SigmaCasedString,
        SigmaCIDRExpression,
        SigmaCompareExpression,
        SigmaExists,
        SigmaExpansion,
        SigmaFieldReference,
        SigmaNull,
        SigmaNumber,
        SigmaRegularExpression,
        SigmaString,
        SigmaTimestampPart,
        SpecialChars,
        TimestampPart,
    )

#: pySigma's names this module uses, bound on first use (:func:`_need_sigma`).
_SIGMA = {
    "sigma.conditions": ("ConditionAND", "ConditionFieldEqualsValueExpression", "ConditionNOT",
                         "ConditionOR", "ConditionValueExpression"),
    "sigma.rule": ("SigmaRule",),
    "sigma.types": ("CompareOperators", "Placeholder", "SigmaBool", "SigmaCasedString",
                    "SigmaCIDRExpression", "SigmaCompareExpression", "SigmaExists",
                    "SigmaExpansion", "SigmaFieldReference", "SigmaNull", "SigmaNumber",
                    "SigmaRegularExpression", "SigmaString",
                    "SigmaTimestampPart", "SpecialChars", "TimestampPart"),
}


def _need_sigma() -> None:
    """Bind pySigma's names (:data:`_SIGMA`) and the wildcards :data:`_MULTI` and
    :data:`_SINGLE` into this module on first use (:mod:`._pysigma`): a run from the rule
    cache compiles nothing and does not import pySigma."""
    if "_MULTI" in globals():
        return
    _pysigma.bind(globals(), _SIGMA)
    globals()["_SINGLE"] = SpecialChars.WILDCARD_SINGLE
    globals()["_MULTI"] = SpecialChars.WILDCARD_MULTI


try:  # Python's regex parser, only to find the literals a pattern needs (3.11+ names)
    import re._constants as _sre_c  # type: ignore[import-not-found]
    import re._parser as _sre_p  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover
    import sre_constants as _sre_c
    import sre_parse as _sre_p

__all__ = ["RuleCompileError", "CompiledRule", "RuleMatcher", "REGEX_MAX_MEM", "START", "END",
           "compile_re", "pcre_to_re2"]

#: Sentinels framing a lower-cased field value in the automaton text.
START = "\x02"
END = "\x03"
_SENTINELS = (START, END)
#: RE2 memory budget per ``re`` value, bytes (a hostile pattern fails to compile).
REGEX_MAX_MEM = _re2.MAX_MEM

# pySigma's wildcards ``SpecialChars.WILDCARD_MULTI`` and ``_SINGLE`` (``_MULTI`` and
# ``_SINGLE``) are bound by :func:`_need_sigma`.
if TYPE_CHECKING:
    _MULTI = SpecialChars.WILDCARD_MULTI
    _SINGLE = SpecialChars.WILDCARD_SINGLE



def nearest_field(name: str, known: set) -> Optional[str]:
    """The field of ``known`` a Sigma rule's field ``name`` (not among them) probably means, for
    the ``field`` warning: the one that differs only in case first, else the closest spelling
    (:func:`difflib.get_close_matches`, cutoff 0.75: the config checker's "Did you mean"),
    else ``None``."""
    folded = {k.lower(): k for k in sorted(known)}
    same = folded.get(name.lower())
    if same is not None:
        return same
    close = difflib.get_close_matches(name.lower(), sorted(folded), n=1, cutoff=0.75)
    return folded[close[0]] if close else None

class RuleCompileError(RuleError):
    """A rule the matcher cannot evaluate; ``code`` groups reasons in the load report."""


# --------------------------------------------------------------------------------------------
# Atoms: one field/value test each.

@dataclass
class _Atom:
    """One value test. ``exact`` keys decide it by automaton hits alone (true when any is
    found); ``trigger`` is a tuple of necessary clauses (tuples of keys: when the atom is true,
    one key of each clause is in the field); ``fn(event)`` decides non-exact atoms."""

    field: Optional[str]
    exact: tuple = ()
    trigger: tuple = ()
    fn: Optional[Callable[[Event], bool]] = None


def _getter(name: str) -> Callable[[Event], Optional[str]]:
    g = field_getter(name)
    if g is not None:
        return g
    return lambda e: e.data.get(name)


def _has_sentinel(s: str) -> bool:
    return START in s or END in s


def _norm_parts(s: SigmaString) -> list:
    """Sigma string parts with adjacent plain strings merged and ``**`` collapsed."""
    _need_sigma()
    out: list = []
    for p in s.s:
        if isinstance(p, Placeholder):
            raise RuleCompileError("placeholder", f"placeholder %{p.name}% left unexpanded")
        if isinstance(p, str):
            if not p:
                continue
            if out and isinstance(out[-1], str):
                out[-1] += p
            else:
                out.append(p)
        elif p is _MULTI and out and out[-1] is _MULTI:
            continue
        else:
            out.append(p)
    return out


def _norm_parts_list(parts: list) -> list:
    _need_sigma()
    out: list = []
    for p in parts:
        if p is _MULTI and out and out[-1] is _MULTI:
            continue
        out.append(p)
    return out


def _glob_fn(parts: list, cased: bool) -> Callable[[str], bool]:
    """Matcher of a wildcard pattern over a whole value (lower-cased first unless ``cased``)."""
    _need_sigma()
    if not cased:
        parts = [p.lower() if isinstance(p, str) else p for p in parts]
    if _SINGLE in parts:
        rx = "".join(_re2.escape(p) if isinstance(p, str) else (".*" if p is _MULTI else ".")
                     for p in parts)
        full = _re2.compile_pattern(rx, dot_nl=True).fullmatch
        if cased:
            return lambda v: full(v) is not None
        return lambda v: full(v.lower()) is not None
    # '*' only: anchored first/last fragments, greedy leftmost search for the middle ones.
    first = parts[0] if isinstance(parts[0], str) else ""
    last = parts[-1] if isinstance(parts[-1], str) and len(parts) > 1 else ""
    middle = [p for p in parts[1 if first else 0: len(parts) - (1 if last else 0)]
              if isinstance(p, str)]
    fl, ll = len(first), len(last)

    def match(v: str) -> bool:
        if not cased:
            v = v.lower()
        if len(v) < fl + ll or not v.startswith(first) or not v.endswith(last):
            return False
        pos, end = fl, len(v) - ll
        for frag in middle:
            i = v.find(frag, pos, end)
            if i < 0:
                return False
            pos = i + len(frag)
        return True
    return match


def _string_shape(parts: list) -> tuple[str, str]:
    """``(kind, literal)``: kind is eq/prefix/suffix/contains/any/glob."""
    _need_sigma()
    if not parts:
        return "eq", ""
    if all(p is _MULTI for p in parts):
        return "any", ""
    if len(parts) == 1 and isinstance(parts[0], str):
        return "eq", parts[0]
    if len(parts) == 2:
        if parts[0] is _MULTI and isinstance(parts[1], str):
            return "suffix", parts[1]
        if parts[1] is _MULTI and isinstance(parts[0], str):
            return "prefix", parts[0]
    if len(parts) == 3 and parts[0] is _MULTI and parts[2] is _MULTI and isinstance(parts[1], str):
        return "contains", parts[1]
    return "glob", ""


def _key(kind: str, lit: str) -> str:
    if kind == "eq":
        return START + lit + END
    if kind == "prefix":
        return START + lit
    if kind == "suffix":
        return lit + END
    return lit


def _glob_trigger(parts: list) -> tuple:
    """Every literal fragment of a wildcard pattern is necessary: one single-key clause each
    (anchored at an end of the value when it starts or ends the pattern)."""
    out = []
    for i, p in enumerate(parts):
        if isinstance(p, str):
            lit = p.lower()
            if _has_sentinel(lit):
                continue
            k = lit
            if i == 0:
                k = START + k
            if i == len(parts) - 1:
                k = k + END
            if (k,) not in out:
                out.append((k,))
    return tuple(out)


def _string_atom(name: Optional[str], s: SigmaString) -> _Atom:
    _need_sigma()
    cased = isinstance(s, SigmaCasedString)
    parts = _norm_parts(s)
    if name is None:  # keyword: a substring of any EventData value (full-text search)
        parts = _norm_parts_list([_MULTI] + parts + [_MULTI])
        kind, lit = _string_shape(parts)
        pred = _value_pred(kind, lit, parts, cased)
        return _Atom(None, fn=lambda e: any(pred(v) for v in e.data.values()))
    kind, lit = _string_shape(parts)
    get = _getter(name)
    if kind == "any":
        return _Atom(name, fn=lambda e: get(e) is not None)
    if kind != "glob":
        low = lit.lower()
        key = _key(kind, low)
        if not cased and not _has_sentinel(low):
            return _Atom(name, exact=(key,))
        pred = _value_pred(kind, lit, parts, cased)
        trig = () if _has_sentinel(low) else ((key,),)
        return _Atom(name, trigger=trig, fn=_on_value(get, pred))
    pred = _glob_fn(parts, cased)
    return _Atom(name, trigger=_glob_trigger(parts), fn=_on_value(get, pred))


def _value_pred(kind: str, lit: str, parts: list, cased: bool) -> Callable[[str], bool]:
    if kind == "glob":
        return _glob_fn(parts, cased)
    if kind == "any":
        return lambda v: True
    if not cased:
        lit = lit.lower()
    if kind == "eq":
        return (lambda v: v == lit) if cased else (lambda v: v.lower() == lit)
    if kind == "prefix":
        return (lambda v: v.startswith(lit)) if cased else (lambda v: v.lower().startswith(lit))
    if kind == "suffix":
        return (lambda v: v.endswith(lit)) if cased else (lambda v: v.lower().endswith(lit))
    return (lambda v: lit in v) if cased else (lambda v: lit in v.lower())


def _on_value(get, pred) -> Callable[[Event], bool]:
    def fn(e: Event) -> bool:
        v = get(e)
        return v is not None and pred(v)
    return fn


def _number_strings(n) -> tuple:
    out = [str(n)]
    if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
        out.append(hex(n))
    return tuple(out)


def _parse_number(v: str):
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        pass
    s = v.strip().lower()
    if s.startswith("0x"):
        try:
            return int(s, 16)
        except ValueError:
            return None
    return None


#: pySigma's ``CompareOperators`` by member name -> the comparison.
_OPS = {
    "LT": lambda a, b: a < b,
    "LTE": lambda a, b: a <= b,
    "GT": lambda a, b: a > b,
    "GTE": lambda a, b: a >= b,
    "NEQ": lambda a, b: a != b,
}


def _time_part(v: str, part: TimestampPart) -> Optional[int]:
    _need_sigma()
    try:
        t = normalize_time(v)
    except (TimeFormatError, ValueError):
        return None
    y, mo, d = int(t[0:4]), int(t[5:7]), int(t[8:10])
    if part is TimestampPart.MINUTE:
        return int(t[14:16])
    if part is TimestampPart.HOUR:
        return int(t[11:13])
    if part is TimestampPart.DAY:
        return d
    if part is TimestampPart.MONTH:
        return mo
    if part is TimestampPart.YEAR:
        return y
    try:
        return date(y, mo, d).isocalendar()[1]
    except ValueError:
        return None


_IP_CACHE: dict = {}


def _ip(v: str):
    r = _IP_CACHE.get(v, False)
    if r is not False:
        return r
    s = v.strip()
    if s.startswith("[") and s.endswith("]"):
        s = s[1:-1]
    s = s.split("%", 1)[0]
    try:
        r = ipaddress.ip_address(s)
    except ValueError:
        r = None
    if len(_IP_CACHE) > 65536:
        _IP_CACHE.clear()
    _IP_CACHE[v] = r
    return r


def _cidr_trigger(net) -> tuple:
    """Prefix keys of the IPv4 dotted forms of a network (none for IPv6)."""
    _need_sigma()
    if net.version != 4:
        return ()
    keys = []
    for pat in SigmaCIDRExpression(str(net)).expand("*"):
        if pat.endswith("*"):
            if pat == "*":
                return ()
            keys.append(START + pat[:-1])
        else:
            keys.append(START + pat + END)
    return tuple(keys) if len(keys) <= 256 else ()


# Regex literal extraction (a literal every match must contain: the automaton trigger).
_LIT = _sre_c.LITERAL
_SUB = _sre_c.SUBPATTERN
_BRANCH = _sre_c.BRANCH
_REPEATS = tuple(getattr(_sre_c, n) for n in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT")
                 if hasattr(_sre_c, n))


def _alt_key(alts: Sequence[str]) -> tuple:
    return (min(map(len, alts)), -len(alts))


def _re_need(items) -> list:
    """Necessary literal clauses of a parsed regex sequence: every match contains one literal
    of each clause (a clause is a list of alternatives)."""
    out: list = []
    run: list = []
    for op, av in items:
        if op is _LIT:
            run.append(chr(av))
            continue
        if run:
            out.append(["".join(run)])
            run = []
        if op is _SUB:
            out.extend(_re_need(list(av[-1])))
        elif op is _BRANCH:
            alts = [_re_need(list(a)) for a in av[1]]
            if all(alts):
                out.append([lit for a in alts for lit in max(a, key=_alt_key)])
        elif op in _REPEATS and av[0] >= 1:
            out.extend(_re_need(list(av[2])))
    if run:
        out.append(["".join(run)])
    return out


def regex_literals(pattern: str, limit: int = 4) -> tuple:
    """Necessary literal clauses of a regex (lower-cased): a tuple of clauses, each a tuple of
    alternatives of which every match contains one; the ``limit`` longest clauses, ``()``
    when none can be derived (e.g. a pattern Python's parser does not read)."""
    try:
        tree = _sre_p.parse(pattern, 0)
    except Exception:  # noqa: BLE001 - any parse problem only means "no trigger"
        return ()
    out: list[tuple[str, ...]] = []
    for clause in _re_need(list(tree)):
        lits = tuple(dict.fromkeys(lit.lower() for lit in clause))
        if not lits or any(not lit or _has_sentinel(lit) for lit in lits) or lits in out:
            continue
        out.append(lits)
    out.sort(key=_alt_key, reverse=True)
    return tuple(out[:limit])


#: pySigma's ``SigmaRegularExpressionFlag`` by member name -> the RE2 flag.
_RE_FLAGS = {"IGNORECASE": "i", "MULTILINE": "m", "DOTALL": "s"}


_PCRE_END = r"(?:\n?\z)"
_SPACE = "\t\n\x0b\f\r "
_INLINE_FLAGS = re.compile(r"\(\?[a-zA-Z]*m[a-zA-Z-]*[):]")


def pcre_to_re2(pattern: str, multiline: bool = False) -> str:
    r"""Rewrite a Sigma ``re`` pattern so that RE2 matches what PCRE (the flavour of the Sigma
    modifiers appendix) matches, where the two read the same syntax differently:

    * ``$`` without the ``m`` flag: PCRE matches at the end *or before a final newline*, RE2 only
      at the end; it becomes ``(?:\n?\z)``. With ``m`` (flag or inline ``(?m)``) both match
      before every newline and it is left alone.
    * ``\Z``: PCRE's "end or before a final newline", which RE2 does not know: likewise.
    * ``\s`` / ``\S`` (outside a character class): PCRE's white space includes the vertical
      tab (since PCRE 8.34), RE2's does not: spelled out as a class.

    Remaining differences (docs/DETECTION.md): a ``$`` rewritten this way consumes the final
    newline, so a pattern that goes on matching after a ``$`` (``a$\n``) no longer matches;
    ``\s`` inside a character class keeps RE2's meaning; constructs RE2 refuses (lookaround,
    backreferences, possessive and atomic groups, ``\R``, ``\h``, ``\K``) make the rule
    rejected at load, never silently different.
    """
    if not multiline and _INLINE_FLAGS.search(pattern):
        multiline = True  # an inline (?m) anywhere: treat every $ as multi-line (as written)
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            if not in_class and nxt == "Z":
                out.append(_PCRE_END)
            elif not in_class and nxt == "s":
                out.append(f"[{_SPACE}]")
            elif not in_class and nxt == "S":
                out.append(f"[^{_SPACE}]")
            else:
                out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
            out.append(c)
        elif c == "[":
            in_class = True
            out.append(c)
            # a ']' first in the class (after an optional '^') is a literal
            j = i + 1
            if j < n and pattern[j] == "^":
                out.append("^")
                j += 1
            if j < n and pattern[j] == "]":
                out.append("]")
                j += 1
            i = j
            continue
        elif c == "$" and not multiline:
            out.append(_PCRE_END)
        else:
            out.append(c)
        i += 1
    return "".join(out)


def compile_re(pattern: str, flags: Iterable = ()) -> Callable[[str], bool]:
    """RE2 ``search`` predicate of a Sigma ``re`` value with its ``i``/``m``/``s`` flags, with
    PCRE's meaning where RE2 reads the syntax differently (:func:`pcre_to_re2`).

    Raises:
        RuleCompileError: RE2 rejects the pattern.
    """
    flags = list(flags)
    fl = "".join(sorted(_RE_FLAGS[f.name] for f in flags))
    rewritten = pcre_to_re2(pattern, multiline="m" in fl)
    try:
        rx = _re2.compile_pattern((f"(?{fl})" if fl else "") + rewritten)
    except RegexError as exc:
        raise RuleCompileError("regex", f"RE2 cannot compile {pattern!r}: {exc}") from None
    return _re2.searcher(rx)


# --------------------------------------------------------------------------------------------
# Condition IR: ("and", [..]) ("or", [..]) ("not", x) ("atom", _Atom) ("const", bool)


class _Builder:
    """Turns a pySigma condition tree into the IR, expanding placeholders."""

    def __init__(self, placeholders: Optional[dict]) -> None:
        self.placeholders = placeholders or {}
        self.fields: set = set()

    def tree(self, node) -> tuple:
        _need_sigma()
        if isinstance(node, ConditionAND):
            return ("and", [self.tree(a) for a in node.args if a is not None])
        if isinstance(node, ConditionOR):
            return ("or", [self.tree(a) for a in node.args if a is not None])
        if isinstance(node, ConditionNOT):
            return ("not", self.tree(node.args[0]))
        if isinstance(node, ConditionFieldEqualsValueExpression):
            self.fields.add(node.field)
            return self.value(node.field, node.value)
        if isinstance(node, ConditionValueExpression):
            return self.value(None, node.value)
        if node is None:
            raise RuleCompileError("condition", "condition is empty after processing")
        raise RuleCompileError("condition", f"condition element {type(node).__name__} "
                                            "is not supported")

    def _expand(self, s: SigmaString) -> list:
        _need_sigma()
        def cb(p: Placeholder):
            if p.name not in self.placeholders:
                raise RuleCompileError("placeholder", f"placeholder %{p.name}% has no value "
                                                      "(give it with placeholders=...)")
            for v in self.placeholders[p.name]:
                yield SigmaString(str(v))
        return s.replace_placeholders(cb)

    def value(self, name: Optional[str], v) -> tuple:
        _need_sigma()
        if isinstance(v, SigmaExpansion):
            return ("or", [self.value(name, x) for x in v.values])
        if isinstance(v, SigmaString):
            if v.contains_placeholder():
                strs: list = self._expand(v)
                if isinstance(v, SigmaCasedString):
                    strs = [SigmaCasedString.from_sigma_string(x) for x in strs]
                return ("or", [("atom", _string_atom(name, x)) for x in strs])
            return ("atom", _string_atom(name, v))
        if isinstance(v, SigmaTimestampPart):
            return ("atom", self._compare(name, CompareOperators.NEQ, v, equal=True))
        if isinstance(v, SigmaBool):
            s = "true" if v.boolean else "false"
            if name is None:
                return ("atom", _Atom(None, fn=lambda e: any(x.lower() == s
                                                           for x in e.data.values())))
            return ("atom", _Atom(name, exact=(START + s + END,)))
        if isinstance(v, SigmaNumber):
            nums = _number_strings(v.number)
            if name is None:
                ss = frozenset(nums)
                return ("atom", _Atom(None, fn=lambda e: any(x.lower() in ss
                                                           for x in e.data.values())))
            return ("atom", _Atom(name, exact=tuple(START + s + END for s in nums)))
        if name is None:
            raise RuleCompileError("keyword", f"keyword value of type {type(v).__name__} is "
                                              "not supported (only strings and numbers)")
        get = _getter(name)
        if isinstance(v, SigmaNull):
            return ("atom", _Atom(name, fn=lambda e: not get(e)))
        if isinstance(v, SigmaExists):
            want = bool(v.exists)
            return ("atom", _Atom(name, fn=lambda e: (get(e) is not None) is want))
        if isinstance(v, SigmaRegularExpression):
            if v.regexp.contains_placeholder():
                pats = [str(x) for x in v.replace_placeholders(self._re_cb)]
            else:
                pats = [str(v.regexp)]
            atoms = []
            for pat in pats:
                pred = compile_re(pat, v.flags)
                atoms.append(("atom", _Atom(name, trigger=regex_literals(pat),
                                            fn=_on_value(get, pred))))
            return atoms[0] if len(atoms) == 1 else ("or", atoms)
        if isinstance(v, SigmaCIDRExpression):
            net = v.network

            def in_net(s: str, net=net) -> bool:
                ip = _ip(s)
                return ip is not None and ip.version == net.version and ip in net
            trig = _cidr_trigger(net)
            return ("atom", _Atom(name, trigger=(trig,) if trig else (),
                                  fn=_on_value(get, in_net)))
        if isinstance(v, SigmaCompareExpression):
            return ("atom", self._compare(name, v.op, v.number))
        if isinstance(v, SigmaFieldReference):
            other = _getter(v.field)
            self.fields.add(v.field)
            sw, ew = v.starts_with, v.ends_with

            def ref(e: Event) -> bool:
                a, b = get(e), other(e)
                if a is None or b is None:
                    return False
                a, b = a.lower(), b.lower()
                if sw and ew:  # contains
                    return b in a
                if sw:  # startswith: the field begins with the referenced value
                    return a.startswith(b)
                if ew:
                    return a.endswith(b)
                return a == b
            return ("atom", _Atom(name, fn=ref))
        raise RuleCompileError("value", f"value type {type(v).__name__} is not supported")

    def _re_cb(self, p: Placeholder):
        if p.name not in self.placeholders:
            raise RuleCompileError("placeholder", f"placeholder %{p.name}% has no value")
        for v in self.placeholders[p.name]:
            yield _re2.escape(str(v))

    def _compare(self, name, op, number, equal: bool = False) -> _Atom:
        _need_sigma()
        get = _getter(name)
        n = number.number
        part = number.timestamp_part if isinstance(number, SigmaTimestampPart) else None
        cmp = (lambda a, b: a == b) if equal else _OPS[op.name]
        neq = op is CompareOperators.NEQ and not equal

        def fn(e: Event) -> bool:
            v = get(e)
            if v is None:
                return False
            x = _time_part(v, part) if part is not None else _parse_number(v)
            if x is None:
                return neq and v.strip() != str(n)
            return cmp(x, n)
        return _Atom(name, fn=fn)


# --------------------------------------------------------------------------------------------
# Compiled rules.

@dataclass(eq=False)
class CompiledRule:
    """One evaluable Sigma rule.

    Attributes:
        index: position in the matcher (stable order of alerts).
        rule: the pySigma :class:`~sigma.rule.SigmaRule`.
        id, name, title, level, status: rule metadata as strings (``""`` when absent).
        tags: every tag (``attack.t1059.001`` ...), in rule order.
        target: where its events come from (:class:`~.logsource.Target`).
        fields: field names the detection references (for alert key fields).
        evaluate: ``evaluate(event, hits) -> bool`` (``hits``: the automaton keys found).
        need: the rule's necessity tree: which automaton keys every matching event contains
            (``("c", clauses)`` / ``("and", [...])`` / ``("or", [...])``, clauses being
            frozensets of key ids of which one is found), ``None`` when nothing is necessary.
            Each event group picks from it the rarest clause to index the rule and a few others
            to check before ``evaluate``.
        keys: key id -> ``(field, key string)`` of every automaton key the rule uses.
        reads: every field name ``evaluate`` can read (fields of its values and field
            references), ``None`` when it reads the whole ``EventData`` (a keyword) or is
            unknown. A group whose remembered events are keyed by all of these fields can
            remember the rule's result with them (:class:`_Group`).
    """

    index: int
    rule: SigmaRule
    id: str
    name: str
    title: str
    level: str
    status: str
    tags: tuple
    target: Target
    fields: tuple
    evaluate: Callable[[Event, set], bool]
    need: Optional[tuple] = None
    keys: dict = field(default_factory=dict, repr=False)
    reads: Optional[frozenset] = None

    @property
    def key(self) -> str:
        """The rule's reference: its id, else its name, else its title."""
        return self.id or self.name or self.title


class _Keys:
    """Global key ids: ``(field, key string) -> id``."""

    def __init__(self) -> None:
        self.ids: dict = {}
        self.info: list = []

    def kid(self, fieldname: Optional[str], key: str) -> int:
        k = (fieldname, key)
        i = self.ids.get(k)
        if i is None:
            i = self.ids[k] = len(self.info)
            self.info.append(k)
        return i


def _est(info: tuple) -> float:
    """Rough chance a key is found in an event: shorter, unanchored literals and fields whose
    values repeat (images, products, flags) are found more often."""
    fieldname, key = info
    anchors = (key[:1] == START) + (key[-1:] == END)
    lit = len(key) - anchors
    p = 0.7 ** (lit + 3 * anchors)
    if fieldname in _REPETITIVE:
        p *= 40.0
    return min(1.0, p)


_REPETITIVE = frozenset({
    "Image", "ParentImage", "OriginalFileName", "ImageLoaded", "SourceImage", "TargetImage",
    "Product", "Company", "Description", "FileVersion", "IntegrityLevel", "User", "EventType",
    "Initiated", "Signed", "SignatureStatus", "Signature", "Protocol", "EventID", "Provider_Name",
    "Channel", "LogonId", "DestinationPort", "SourcePort", "CurrentDirectory", "GrantedAccess",
    "ParentUser", "SourceUser", "TargetUser", "State", "Type",
})


class RuleMatcher:
    """All compiled rules, indexed by event group; :meth:`match` returns the rules an event hits.

    Args:
        rules: pySigma rules (correlation rules are not given here).
        placeholders: values of ``expand`` placeholders, ``{"Administrators": ["adm_*"], ...}``
            (values are Sigma strings: wildcards allowed).
    Attributes:
        compiled: the rules that compiled, in input order.
        rejected: ``[(rule, code, message)]`` for rules that cannot be evaluated.
        warnings: ``[(rule, code, message)]`` for rules that load but may not behave as written
            (a field the Sysmon event never carries, evaluated on every event of its group).
    """

    def __init__(self, rules: Iterable[SigmaRule], placeholders: Optional[dict] = None) -> None:
        _need_sigma()
        self._keys = _Keys()
        self.compiled: list[CompiledRule] = []
        self.rejected: list = []
        self.warnings: list = []
        for rule in rules:
            try:
                self.compiled.append(self._compile(rule, placeholders, len(self.compiled)))
            except RuleCompileError as exc:
                self.rejected.append((rule, exc.code, str(exc)))
            except LogsourceError as exc:
                self.rejected.append((rule, "logsource", str(exc)))
            except Exception as exc:  # noqa: BLE001 - pySigma raises many types; report, go on
                self.rejected.append((rule, "sigma", f"{type(exc).__name__}: {exc}"))
        self._build_groups()

    # -- compile -------------------------------------------------------------------------------

    def _compile(self, rule: SigmaRule, placeholders: Optional[dict], index: int) -> CompiledRule:
        ls = rule.logsource
        target = resolve_logsource(ls.product, ls.category, ls.service)
        b = _Builder(placeholders)
        trees = [b.tree(c.parse()) for c in rule.detection.parsed_condition]
        ir = trees[0] if len(trees) == 1 else ("or", trees)
        if target.event_types:
            ir = ("and", [("or", [("atom", _Atom("EventType", exact=(START + t.lower() + END,)))
                                  for t in target.event_types]), ir])
        ir = _simplify(ir)
        keys: dict = {}
        ns: dict = {}
        expr = self._gen(ir, ns, keys)
        evaluate = eval(compile(f"lambda e, h: {expr}", f"<sigma rule {index}>", "eval"), ns)
        need = self._need(ir)
        atoms_read = _reads(ir)
        reads = None if atoms_read is None else frozenset(atoms_read | b.fields)
        self._check_fields(rule, target, b.fields)
        if need is None:
            self.warnings.append((rule, "unindexed", "no value the rule requires can be found by "
                                  "the automaton: evaluated on every event of its log source"))
        return CompiledRule(
            index=index, rule=rule, id=str(rule.id) if rule.id else "", name=rule.name or "",
            title=rule.title or "", level=rule.level.name.lower() if rule.level else "",
            status=rule.status.name.lower() if rule.status else "",
            tags=tuple(str(t) for t in rule.tags), target=target,
            fields=tuple(sorted(b.fields)), evaluate=evaluate, need=need, keys=keys,
            reads=reads)

    def _check_fields(self, rule: SigmaRule, target: Target, names: set) -> None:
        ids = {g[1] for g in target.groups if g[0] in ("win", "lnx")}
        if not ids:
            return
        known: set = set()
        for i in ids:
            known |= known_fields(i)
        missing = sorted(n for n in names if n not in known and n.lower() not in HASH_FIELDS)
        if missing:
            named = [n + (f" (did you mean {near}?)" if (near := nearest_field(n, known)) else "")
                     for n in missing]
            self.warnings.append((rule, "field", "field(s) " + ", ".join(named) +
                                  " not in Sysmon's events of this log source: they match only "
                                  "events that carry them (another producer's records, "
                                  "enrichment); field names are case-sensitive"))

    def _kid(self, fieldname: Optional[str], key: str, keys: dict) -> int:
        k = self._keys.kid(fieldname, key)
        keys[k] = self._keys.info[k]  # the one tuple of that key (shared in the rule cache)
        return k

    @staticmethod
    def _name(ns: dict, obj) -> str:
        name = f"_{len(ns)}"
        ns[name] = obj
        return name

    def _gen(self, ir: tuple, ns: dict, keys: dict) -> str:
        """Python expression over ``e`` (event) and ``h`` (keys found) deciding ``ir``."""
        kind = ir[0]
        if kind == "const":
            return "True" if ir[1] else "False"
        if kind == "atom":
            a: _Atom = ir[1]
            if a.exact:
                ids = frozenset(self._kid(a.field, k, keys) for k in a.exact)
                if len(ids) == 1:
                    return f"({next(iter(ids))} in h)"
                return f"(not {self._name(ns, ids)}.isdisjoint(h))"
            # Necessary literals first: the code of the atom runs only when they were found.
            pre = []
            for clause in a.trigger:
                ids = frozenset(self._kid(a.field, k, keys) for k in clause)
                pre.append(f"({next(iter(ids))} in h)" if len(ids) == 1
                           else f"(not {self._name(ns, ids)}.isdisjoint(h))")
            return "(" + " and ".join(pre + [f"{self._name(ns, a.fn)}(e)"]) + ")"
        if kind == "not":
            return f"(not {self._gen(ir[1], ns, keys)})"
        children = ir[1]
        parts = []
        if kind == "or":
            exact = frozenset(self._kid(c[1].field, k, keys) for c in children
                              if c[0] == "atom" and c[1].exact for k in c[1].exact)
            if len(exact) == 1:
                parts.append(f"({next(iter(exact))} in h)")
            elif exact:
                parts.append(f"(not {self._name(ns, exact)}.isdisjoint(h))")
            parts += [self._gen(c, ns, keys) for c in children
                      if not (c[0] == "atom" and c[1].exact)]
            return "(" + " or ".join(parts) + ")"
        single = frozenset(self._kid(c[1].field, c[1].exact[0], keys) for c in children
                           if c[0] == "atom" and len(c[1].exact) == 1)
        if len(single) == 1:
            parts.append(f"({next(iter(single))} in h)")
        elif single:
            parts.append(f"({self._name(ns, single)} <= h)")
        parts += [self._gen(c, ns, keys) for c in children
                  if not (c[0] == "atom" and len(c[1].exact) == 1)]
        return "(" + " and ".join(parts) + ")"

    def _need(self, ir: tuple) -> Optional[tuple]:
        """The necessity tree of ``ir`` (see :class:`CompiledRule`), ``None`` if nothing."""
        kind = ir[0]
        if kind == "atom":
            a: _Atom = ir[1]
            if a.field is None:
                return None
            if a.exact:
                return ("c", (frozenset(self._keys.kid(a.field, k) for k in a.exact),))
            if a.trigger:
                return ("c", tuple(frozenset(self._keys.kid(a.field, k) for k in clause)
                                   for clause in a.trigger))
            return None
        if kind == "and":
            kids = [n for n in (self._need(c) for c in ir[1]) if n is not None]
            if not kids:
                return None
            return kids[0] if len(kids) == 1 else ("and", kids)
        if kind == "or":
            kids = []
            for c in ir[1]:
                n = self._need(c)
                if n is None:
                    return None
                kids.append(n)
            # Children with a single clause each need no choice: their union is the clause.
            fixed = [k for k in kids if k[0] == "c" and len(k[1]) == 1]
            rest = [k for k in kids if not (k[0] == "c" and len(k[1]) == 1)]
            if len(fixed) > 1:
                merged = ("c", (frozenset().union(*(k[1][0] for k in fixed)),))
                rest.insert(0, merged)
            else:
                rest = kids
            return rest[0] if len(rest) == 1 else ("or", rest)
        return None

    # -- index ---------------------------------------------------------------------------------

    def _build_groups(self) -> None:
        per_group: dict = {}
        for r in self.compiled:
            for g in r.target.groups:
                per_group.setdefault(g, []).append(r)
        info = self._keys.info
        prior = [_est(k) for k in info]
        self.groups: dict = {}
        for g, rules in per_group.items():
            consts = None
            if g[0] in _PROVIDER_OF_PLATFORM:
                consts = {"EventID": str(g[1]), "Provider_Name": _PROVIDER_OF_PLATFORM[g[0]]}
            self.groups[g] = _Group(rules, info, prior, consts)
        # Sysmon events: provider -> {EventID: group} (one dict lookup each).
        self._sysmon: dict = {}
        for (plat, *rest), g in self.groups.items():
            if plat in _PROVIDER_OF_PLATFORM:
                self._sysmon.setdefault(_PROVIDER_OF_PLATFORM[plat], {})[rest[0]] = g
        self._has_channels = any(k[0] == "chan" for k in self.groups)
        self.unindexed = sum(1 for r in self.compiled if r.need is None)

    def match(self, event: Event) -> list[CompiledRule]:
        """The compiled rules ``event`` satisfies, in rule order (a new list, empty when
        none). A Sysmon event belongs to one group (its provider and EventID).

        With the compiled extension, ``_speedups.sigma_match`` answers a Sysmon event of a
        group without getters (the same lookups, calls of ``_remember`` for a new key,
        calibration and rule calls as :meth:`_Group.matches`, which defines the behaviour);
        it returns None for every other case, which the code below runs."""
        if _sigma_match is not None:
            done = _sigma_match(self._sysmon, event, _index)
            if done is not None:
                return done
        by_id = self._sysmon.get(event.provider)
        if by_id is not None:
            g = by_id.get(event.event_id)
            return [] if g is None else g.matches(event)
        out: list = []
        if self._has_channels and event.provider != SIGMA_ALERT_PROVIDER:
            # (SysmonX's own alerts read back are never matched: no alerts about alerts)
            for gk in group_keys_for_event(event.provider, event.channel, event.event_id):
                g = self.groups.get(gk)
                if g is not None:
                    g.match(event, out)
        if len(out) > 1:
            out.sort(key=_index)
        return out

    # -- profiling (``--profile-rules``) -------------------------------------------------------

    def set_profile(self, profile: Any) -> None:
        """Count and time every rule evaluation into ``profile`` from now on (``None``: stop).

        ``profile`` is a :class:`~.profile.RuleProfile` (its ``clock``, counters and per-rule
        lists sized to :attr:`compiled`). While it is set, :meth:`match` is this instance's
        :meth:`match_profiled`: the same decisions in the same order (the same lookups,
        calibration and rule calls), with counters and a clock call around each evaluation.
        Without a profile :meth:`match` is the class's own method, untouched: profiling costs
        nothing when it is off.
        """
        if profile is None:
            self.__dict__.pop("match", None)
            return

        def match(event: Event) -> list[CompiledRule]:
            return self.match_profiled(event, profile)
        self.match = match  # type: ignore[method-assign]

    def match_profiled(self, event: Event, profile: Any) -> list[CompiledRule]:
        """:meth:`match`, counting into ``profile`` (see :meth:`set_profile`): events seen,
        events no rule's log source covers, and per group and rule what
        :meth:`_Group.match_profiled` counts."""
        profile.events += 1
        out: list = []
        reached = False
        by_id = self._sysmon.get(event.provider)
        if by_id is not None:
            g = by_id.get(event.event_id)
            if g is not None:
                reached = True
                g.match_profiled(event, out, profile)
        elif self._has_channels:
            for gk in group_keys_for_event(event.provider, event.channel, event.event_id):
                g = self.groups.get(gk)
                if g is not None:
                    reached = True
                    g.match_profiled(event, out, profile)
        if not reached:
            profile.events_without_rules += 1
        if len(out) > 1:
            out.sort(key=_index)
        return out


_PROVIDER_OF_PLATFORM = {"win": WINDOWS_PROVIDER, "lnx": LINUX_PROVIDER}

#: :meth:`RuleMatcher.match`'s compiled common case (``_speedups.sigma_match``), or None.
_sigma_match = getattr(_speedups, "sigma_match", None)


def _index(r: CompiledRule) -> int:
    return r.index


#: Field values at most this long are remembered with their automaton result (per group and
#: field, at most CACHE_ENTRIES values, then the memory starts over): repeated values (images,
#: DLLs, users, flags) cost one dictionary lookup.
CACHE_MAX_LEN = 1024
CACHE_ENTRIES = 8192
#: Events of a group after which the lead clauses are re-chosen from observed key frequencies.
RELEAD_AT = (256, 4096, 65536)
#: While calibrating, every event is counted; afterwards one event in this many.
SAMPLE_EVERY = 16
#: Necessary clauses checked before a candidate rule is evaluated (besides its lead).
MAX_OTHERS = 3
#: A lead clause found in at most this share of a group's events is kept at a re-choice.
RARE = 0.01


def _best(nt: tuple, score) -> tuple:
    """``(clause, score)``: the rarest single necessary clause of a necessity tree."""
    kind = nt[0]
    if kind == "c":
        return min(((c, score(c)) for c in nt[1]), key=lambda x: x[1])
    if kind == "and":
        return min((_best(x, score) for x in nt[1]), key=lambda x: x[1])
    union: set = set()
    for x in nt[1]:
        union |= _best(x, score)[0]
    c = frozenset(union)
    return c, score(c)


def _clauses(nt: tuple, score) -> list:
    """Necessary clauses of a tree with scores: every clause of its top-level conjunction."""
    kind = nt[0]
    if kind == "c":
        return [(c, score(c)) for c in nt[1]]
    if kind == "and":
        out: list = []
        for x in nt[1]:
            for c in _clauses(x, score):
                if all(c[0] != o[0] for o in out):
                    out.append(c)
        return out
    return [_best(nt, score)]


#: The keys found in a value where none is found (a remembered value's entry is its keys only:
#: they do not depend on the leads, so a re-choice keeps them; the candidates they lead to are
#: looked up when an event's keys are combined, :meth:`_Group._combine`).
_EMPTY: frozenset = frozenset()
#: Whole events are remembered too (tuple of their scanned field values -> keys and
#: candidates) when the values add up to at most this many characters, up to COMBO_ENTRIES
#: per group: repeated events (the same image loading the same DLL, the same registry write)
#: cost one dictionary lookup.
COMBO_MAX_LEN = 2048
COMBO_ENTRIES = 4096


def _lead_to(ks: frozenset, lead_index: dict) -> tuple:
    """The candidates (:class:`_Cand`) keys ``ks`` lead to: each rule whose lead clause holds
    one of them, once (a tuple of a set)."""
    cands: set = set()
    for k in ks:
        x = lead_index.get(k)
        if x:
            cands.update(x)
    return tuple(cands)


class _Group:
    """The rules of one event group: one automaton per field, and each rule indexed by its
    rarest necessary clause (re-chosen from the key frequencies this group actually sees).

    Per event, the event's key (its values of :attr:`key_names`, then of the getters' fields)
    is looked up in the memory of whole events: ``key -> (keys found, candidates, matches,
    rules to evaluate)``, where ``matches`` are the rules decided by the key alone (every field
    they read is in it: ``pure``) that matched, and ``rules to evaluate`` the candidates that
    read other fields and passed their other necessary clauses. For a new key every field
    value is looked up in its field's memory of values already seen (``value -> (keys found,
    candidate rules)``), all fields at once with C-level ``map`` calls; only new values are
    scanned by the automaton.

    Args:
        rules: the compiled rules of the group.
        info: key id -> (field, key string).
        prior: key id -> prior estimate of how often the key is found.
        constants: field -> value known for every event of the group (EventID and
            Provider_Name of a Sysmon group), unless the event's data carries that name.
    """

    def __init__(self, rules: list, info: list, prior: list,
                 constants: Optional[dict] = None) -> None:
        fields: dict = {}
        self.rules = [r for r in rules if r.need is not None]
        self.always = tuple(r for r in rules if r.need is None)
        for r in rules:
            for k in r.keys:
                f, s = info[k]
                fields.setdefault(f, {})[s] = k
        constants = {f: v for f, v in (constants or {}).items() if f in fields}
        self.scanners: dict = _Scanners()
        for f in sorted(fields):
            # Single characters are tested with one set intersection; the rest by the automaton.
            singles = {s: k for s, k in fields[f].items() if len(s) == 1}
            self.scanners[f] = (_automaton([(s, k) for s, k in fields[f].items() if len(s) > 1]),
                                singles)
        names = [f for f in sorted(fields) if f not in constants]
        self.names = tuple(f for f in names if field_getter(f) is None)
        self.getters: tuple[tuple[str, Callable[[Event], Any]], ...] = tuple(
            (f, g) for f in names if (g := field_getter(f)) is not None)
        self.getter_fns = tuple(g for _, g in self.getters)
        # A rule every field of which is part of the remembered event key (and that reads no
        # keyword) decides the same on every event with that key: its result is remembered.
        keyed = set(self.names) | {f for f, _ in self.getters} | set(constants)
        self.pure = frozenset(r.index for r in rules
                              if r.reads is not None and r.reads <= keyed)
        self.caches = tuple({None: _EMPTY} for _ in self.names)
        self.combos: dict = {}
        # The compiled match only (_speedups.sigma_match, which fills it): an EVTX event's key
        # spelt from its record's text before its data dict is made (bytes) -> the entry
        # combos holds for the values it spells (the same object). Cleared with combos,
        # moved to the new entries by a re-choice.
        self.raw_combos: dict = {}
        self.getter_caches = tuple({None: _EMPTY} for _ in self.getters)
        self.constants = tuple((f, v) for f, v in constants.items())
        self.const_names = tuple(constants)
        self.const_entry = _EMPTY
        # The key of an event: its values of names and const_names (None unless its data
        # overrides a constant), then of the getters' fields.
        self.key_names = self.names + self.const_names
        self.n_names = len(self.names)
        self.scan_caches = self.caches + self.getter_caches
        self.scan_names = self.names + tuple(f for f, _ in self.getters)
        self.prior = prior
        self.freq: Counter = Counter()
        # sampled events by their entry: id -> [entry, times] (folded into freq and the
        # candidates' counts at the next re-choice: one dictionary update per sample)
        self.samples: dict = {}
        self.seen = 0
        self.sampled = 0
        self.next_relead = 0
        self.countdown = self.period = 1
        self.lead_index: dict = {}
        self.cands: list = []
        self._relead()

    def _relead(self) -> None:
        """(Re)choose each rule's lead clause: the one whose keys are seen least (observed
        frequencies smoothed by the prior). A rule that was rarely a candidate keeps its lead."""
        freq = self.freq
        for (hits, cands, *_), times in self.samples.values():
            for k in hits:
                freq[k] += times
            for c in cands:
                c.count += times
        self.samples = {}
        prior, n = self.prior, self.sampled
        p: dict = {}
        memo: dict = {}

        # Memoised by the clause itself, not its id(): _best() builds temporary clauses (the
        # union of an "or"), and a freed temporary's id is reused by the next one, whose keys
        # differ; an id-keyed memo then returned another clause's score, so the lead chosen
        # depended on memory reuse and changed from run to run.
        def score(clause: frozenset) -> float:
            total = memo.get(clause)
            if total is None:
                total = 0.0
                for k in clause:
                    x = p.get(k)
                    if x is None:
                        x = p[k] = ((freq.get(k, 0) + 4.0 * prior[k]) / (n + 4.0)
                                    if n else prior[k])
                    total += x
                memo[clause] = total
            return total

        limit = RARE * n
        if not self.cands:
            self.cands = [_Cand(r) for r in self.rules]
        lead_index = self.lead_index
        changed = False
        for c in self.cands:
            if c.lead is None or c.count > limit:
                ranked = sorted(_clauses(c.rule.need, score), key=lambda x: x[1])
                lead = ranked[0][0]
                c.others = tuple(x for x, _ in ranked[1:1 + MAX_OTHERS])
                if lead != c.lead:
                    changed = True
                    for k in c.lead or ():
                        lead_index[k].remove(c)
                    for k in lead:
                        lead_index.setdefault(k, []).append(c)
                    c.lead = lead
            c.count = 0
        if changed:
            # Remembered events would lead to the old candidates: those are looked up again
            # from their keys (as _combine does), so no remembered event is scanned or
            # decided again (most of a group's events were repeats after a change; the
            # remembered values hold keys only, which do not depend on the leads). An event
            # keeps its rule results and the rules left to evaluate: they never depend on the
            # leads or on the clauses checked first (each is a necessary clause of its rule,
            # so the old candidates held every rule that can match; the new ones hold it too).
            combos = self.combos
            moved: dict = {}  # id(old entry) -> (old, new): the old ones kept alive here
            for values, e in combos.items():  # values replaced in place: same size
                new = combos[values] = (e[0], _lead_to(e[0], lead_index), e[2], e[3])
                moved[id(e)] = (e, new)
            raw = self.raw_combos
            for rk, e in list(raw.items()):  # entries of combos (see _remember), else dropped
                m = moved.get(id(e))
                if m is not None and m[0] is e:
                    raw[rk] = m[1]
                else:
                    del raw[rk]
            self.const_entry = self._const_entry()
        self.next_relead = next((x for x in RELEAD_AT if x > self.seen), 0)
        self.countdown = self.period = self._period()
        self.freq = Counter()
        self.sampled = 0

    def _const_entry(self) -> frozenset:
        ks: set = set()
        for f, v in self.constants:
            ks |= self._scan(f, v)
        return frozenset(ks)

    def _scan(self, name: str, v: str) -> frozenset:
        """The keys found in ``v`` (a value of field ``name``)."""
        low = v.lower()
        if START in low or END in low:
            low = low.replace(START, "\ufffd").replace(END, "\ufffd")
        it, singles = self.scanners[name]
        found = [k for _, k in it(START + low + END)] if it is not None else []
        if singles:
            for c in singles.keys() & set(low):
                found.append(singles[c])
        if not found:
            return _EMPTY
        return frozenset(found)

    def _fill(self, names: tuple, caches: tuple, values: tuple, entries: tuple) -> tuple:
        """Scan the values the memories did not know; remember them."""
        out = list(entries)
        for i, e in enumerate(entries):
            if e is None:
                v = values[i]
                e = out[i] = self._scan(names[i], v)
                if len(v) <= CACHE_MAX_LEN:
                    cache = caches[i]
                    if len(cache) >= CACHE_ENTRIES:
                        cache.clear()
                        cache[None] = _EMPTY
                    cache[v] = e
        return tuple(out)

    def _entry(self, event: Event) -> tuple:
        """``(keys found, candidates, remembered matches, rules to evaluate)`` of ``event``:
        from the memory of whole events when its key (:attr:`key_names`' values, then the
        getters') was seen, else computed (:meth:`_outcome`) and remembered when the values
        are short enough."""
        values = tuple(map(event.data.get, self.key_names))
        if self.getter_fns:
            values += tuple([g(event) for g in self.getter_fns])
        entry = self.combos.get(values)
        if entry is None:
            entry = self._remember(values, event)
        return entry

    def _remember(self, values: tuple, event: Event) -> tuple:
        entry = self._outcome(values, event)
        if sum(map(len, filter(None, values))) <= COMBO_MAX_LEN:  # None: 0
            if len(self.combos) >= COMBO_ENTRIES:
                self.combos.clear()
                self.raw_combos.clear()
            self.combos[values] = entry
        return entry

    def matches(self, event: Event) -> list:
        """The rules of this group ``event`` matches, in rule order (a new list).

        Per event: the event's key (the group's field values, one tuple) is looked up in the
        memory of whole events (:meth:`_entry`, inlined); the rules whose result the memory
        holds are taken as they are, the others (candidates whose necessary clauses were all
        found and unindexed rules that read a field outside the key) are evaluated."""
        values = tuple(map(event.data.get, self.key_names))
        if self.getter_fns:
            values += tuple([g(event) for g in self.getter_fns])
        entry = self.combos.get(values)
        if entry is None:
            entry = self._remember(values, event)
        if self.next_relead:
            self.countdown -= 1
            if not self.countdown:
                self._calibrate(entry)
        pending = entry[3]
        if not pending:
            return list(entry[2])
        hits = entry[0]
        out = list(entry[2])
        for evaluate, rule in pending:
            if evaluate(event, hits):
                out.append(rule)
        if len(out) > 1:
            out.sort(key=_index)
        return out

    def match(self, event: Event, out: list) -> None:
        """Append to ``out`` the rules of this group ``event`` matches (:meth:`matches`)."""
        out.extend(self.matches(event))

    def match_profiled(self, event: Event, out: list, profile: Any) -> None:
        """:meth:`match` with counters: the same lookups (:meth:`_entry`) and calibration, and
        the same decisions (``tests/test_rule_profile.py`` checks them), but every candidate
        whose other clauses were found is evaluated (the remembered results are not used), so
        that each rule's cost is measured.

        Counts into ``profile`` (a :class:`~.profile.RuleProfile`): ``group_events[self]``
        (events this group saw; every rule of the group was eligible for them),
        ``prefilter_ns`` (clock time of the value lookups, automaton scans and candidate
        choice), and per rule index ``candidates`` (its lead clause was found),
        ``evaluations`` (its other necessary clauses were found too, or it is unindexed: its
        code ran), ``matches`` and ``time_ns`` (clock time of its code, one clock call before
        and one after each evaluation).
        """
        clock = profile.clock
        t0 = clock()
        ge = profile.group_events
        ge[self] = ge.get(self, 0) + 1
        entry = self._entry(event)
        hits, cands = entry[0], entry[1]
        if self.next_relead:
            self.countdown -= 1
            if not self.countdown:
                self._calibrate(entry)
        profile.prefilter_ns += clock() - t0
        n_cand, n_eval, n_match, spent = (profile.candidates, profile.evaluations,
                                          profile.matches, profile.time_ns)
        for c in cands:
            i = c.rule.index
            n_cand[i] += 1
            for clause in c.others:
                if clause.isdisjoint(hits):
                    break
            else:
                t = clock()
                ok = c.evaluate(event, hits)
                spent[i] += clock() - t
                n_eval[i] += 1
                if ok:
                    n_match[i] += 1
                    out.append(c.rule)
        for r in self.always:
            i = r.index
            n_cand[i] += 1
            t = clock()
            ok = r.evaluate(event, hits)
            spent[i] += clock() - t
            n_eval[i] += 1
            if ok:
                n_match[i] += 1
                out.append(r)

    def _outcome(self, values: tuple, event: Event) -> tuple:
        """``(keys found, candidates, matches, rules to evaluate)`` of an event with these
        field values: the candidates whose other necessary clauses were found and the
        unindexed rules, evaluated on ``event`` when the key decides them (``pure``: the
        ``matches``, sorted by rule index), else returned as ``(evaluate, rule)`` pairs."""
        hits, cands = self._combine(values)
        pure = self.pure
        matched: list = []
        pending: list = []
        for c in cands:
            for clause in c.others:
                if clause.isdisjoint(hits):
                    break
            else:
                rule = c.rule
                if rule.index not in pure:
                    pending.append((c.evaluate, rule))
                elif c.evaluate(event, hits):
                    matched.append(rule)
        for r in self.always:
            if r.index not in pure:
                pending.append((r.evaluate, r))
            elif r.evaluate(event, hits):
                matched.append(r)
        matched.sort(key=_index)
        return hits, cands, tuple(matched), tuple(pending)

    def _combine(self, values: tuple) -> tuple:
        """``(keys found, candidates)`` of a whole event from its key (constants included,
        from the key's values where the event's data overrides them)."""
        n = self.n_names
        nc = len(self.const_names)
        scanned = values[:n] + values[n + nc:] if nc else values
        caches = self.scan_caches
        entries: tuple = tuple(map(dict.get, caches, scanned))
        if None in entries:
            entries = self._fill(self.scan_names, caches, scanned, entries)
        if nc:
            over = values[n:n + nc]
            if over.count(None) == nc:
                entries += (self.const_entry,)
            else:  # the data overrides the header
                entries += tuple(self._scan(f, v if o is None else o)
                                 for (f, v), o in zip(self.constants, over, strict=True))
        hits = frozenset().union(*entries)
        return hits, _lead_to(hits, self.lead_index)

    def _period(self) -> int:
        """Events until the next one calibration counts (every event for the first
        ``RELEAD_AT[0]``, then every ``SAMPLE_EVERY``-th) or the next re-choice."""
        seen, nxt = self.seen, self.next_relead
        if not nxt:
            return 0
        if seen + 1 < RELEAD_AT[0]:
            return 1
        sample = (seen // SAMPLE_EVERY + 1) * SAMPLE_EVERY
        return min(sample, nxt) - seen

    def _calibrate(self, entry: tuple) -> None:
        """Count this event's entry (its keys and candidates, :meth:`_entry`; its
        ``countdown`` ran out: every event up to ``RELEAD_AT[0]``, then one in
        ``SAMPLE_EVERY``); re-choose the leads at the next ``RELEAD_AT``."""
        self.seen += self.period
        seen = self.seen
        if seen < RELEAD_AT[0] or seen % SAMPLE_EVERY == 0:
            self.sampled += 1
            sample = self.samples.get(id(entry))
            if sample is None:
                self.samples[id(entry)] = [entry, 1]
            else:
                sample[1] += 1
        if seen >= self.next_relead:
            self._relead()
        else:
            self.countdown = self.period = self._period()


_SCANNERS_LOCK = threading.Lock()  # held only while a group's automaton is built on first use


class _Scanners(dict):
    """``field -> (automaton.iter or None, single characters)`` of one group. Serialised (the
    rule cache, :mod:`.cache`), each field's entry is kept as the bytes of its automaton's
    words and built again on first use (:meth:`__missing__`): the automata as pyahocorasick
    stores them are two thirds of a cached rule set (~15 MB for the SigmaHQ bundle's 2,007
    rule files, 1,999 of which load; their words 0.8 MB), and a run usually meets few of the groups;
    looking up a built entry is a plain dict lookup."""

    def __missing__(self, name: str) -> tuple:
        with _SCANNERS_LOCK:  # first use from two threads: one builds, the other finds it
            if dict.__contains__(self, name):
                return dict.__getitem__(self, name)
            pending = self.__dict__.get("pending")
            if not pending or name not in pending:
                raise KeyError(name)
            words, singles = pickle.loads(pending[name])
            value = self[name] = (_automaton(words), singles)
            del pending[name]  # only once the built entry is in place
            return value

    def __reduce__(self) -> tuple:
        pending = dict(self.__dict__.get("pending") or {})
        for name, (it, singles) in self.items():
            words = list(it.__self__.items()) if it is not None else []
            pending[name] = pickle.dumps((words, singles), protocol=pickle.HIGHEST_PROTOCOL)
        return _scanners_from, (pending,)


def _automaton(words: list) -> Optional[Callable]:
    """``iter`` of an Aho-Corasick automaton of ``(word, key id)`` pairs (``None``: none)."""
    if not words:
        return None
    auto = ahocorasick.Automaton()
    for s, k in words:
        auto.add_word(s, k)
    auto.make_automaton()
    return auto.iter


def _scanners_from(pending: dict) -> _Scanners:
    out = _Scanners()
    out.pending = pending  # type: ignore[attr-defined]
    return out


class _Cand:
    """A rule as indexed in one group: its lead clause and the clauses to check before
    evaluating it."""

    __slots__ = ("rule", "lead", "others", "evaluate", "count")

    def __init__(self, rule: CompiledRule) -> None:
        self.rule = rule
        self.lead: Optional[frozenset] = None
        self.others: tuple = ()
        self.evaluate = rule.evaluate
        self.count = 0


def _reads(ir: tuple) -> Optional[set]:
    """Field names the atoms of ``ir`` read; ``None`` when one is a keyword (every value)."""
    kind = ir[0]
    if kind == "atom":
        name = ir[1].field
        return None if name is None else {name}
    if kind == "const":
        return set()
    if kind == "not":
        return _reads(ir[1])
    out: set = set()
    for c in ir[1]:
        r = _reads(c)
        if r is None:
            return None
        out |= r
    return out


def _simplify(ir: tuple) -> tuple:
    """Flatten nested and/or, fold constants and double negations."""
    kind = ir[0]
    if kind == "not":
        inner = _simplify(ir[1])
        if inner[0] == "not":
            return inner[1]
        if inner[0] == "const":
            return ("const", not inner[1])
        return ("not", inner)
    if kind in ("and", "or"):
        kids = []
        for c in ir[1]:
            c = _simplify(c)
            if c[0] == kind:
                kids.extend(c[1])
            elif c[0] == "const":
                if c[1] == (kind == "or"):
                    return c
            else:
                kids.append(c)
        if not kids:
            return ("const", kind == "and")
        if len(kids) == 1:
            return kids[0]
        return (kind, kids)
    return ir
