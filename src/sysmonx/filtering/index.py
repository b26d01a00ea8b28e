"""Indexed evaluation: an event only evaluates the filters and ``<Rule>`` groups that can act on it.

Sysmon walks every filter of every rule set of an event's tag in order (spec/sysmon-semantics.md
3.2-3.4). With a config such as sysmon-modular (hundreds of filters and ``<Rule>`` groups per tag)
that walk dominates a replay. This module decides exactly as the walk does while evaluating only
*candidates*:

* Every unit of evaluation (an *item*) gets a *gate*: per field, a set of literal patterns such
  that the item can only have an effect (a match, or a RuleName left behind) when one of them
  occurs in the field's value. Items of OR rule sets are their top-level filters and ``<Rule>``
  groups; an AND rule set is one item as a whole (any miss ends it).
* One Aho-Corasick automaton per (EventID, field) finds, in a single pass over
  ``"\\x02" + value + "\\x03"``, every pattern that occurs: ``is`` is ``\\x02r\\x03``,
  ``begin with`` ``\\x02r``, ``end with`` ``r\\x03``, ``image`` ``\\x02r\\x03`` or ``\\r\\x03``,
  ``contains`` ``r``, the ``… any`` lists one pattern per ``;`` piece (spec 2.2 token quirks),
  ``contains all`` its longest piece. Unanchored patterns shorter than :data:`SHORT` characters
  (which occur in most values, many times) are tested with ``in`` instead. The gated items of the
  found patterns, plus the items without a gate (negated operators, ``less than``/``more than``,
  ``regex``, ``contains ""`` and lists with an empty piece, which match everything), are the
  candidates.
* Candidates are numbered in Sysmon's evaluation order across all rule sets of the event (exclude
  sets, then include sets, each in reverse document order; items in document order), so walking
  them in ascending order reproduces the walk with the non-candidates removed. A non-candidate
  cannot match and cannot set a RuleName, so removing it changes nothing: the decision, the
  first matching filter and the RuleName bookkeeping, including names left behind by ``<Rule>``
  groups and rule sets that did not match (3.6, the stale-name quirk), are the walk's.

Gates are necessary conditions, never sufficient: every candidate is evaluated with the exact
predicate (:func:`~sysmonx.filtering.conditions.make_predicate`), so a pattern found by accident
(a value that itself contains ``\\x02`` or ``\\x03``) only costs an evaluation. Choosing a gate:

* OR group: the union of its members' gates (any member can match).
* AND group: one member among those up to its first named member (all members when none is
  named; every one of them must match before the group can match or set a name): the most
  selective (exact over affix over ``contains``, longer literals first).
* AND rule set: the union of the gates of its named filters and named groups (what can leave a
  name) and of one required part: all filters of one field (the same field is OR, spec 3.4) or
  one ``<Rule>`` group.

A field value longer than :data:`SCAN_LIMIT` characters is not scanned: every item gated on that
field becomes a candidate (linear work in C, as the walk would do). Scan results are memoised per
(EventID, field), since values repeat (the 22,871 ProcessAccess events of one Security-Datasets
capture carry 225 distinct CallTraces), within a :class:`MemoBudget` per engine: at most
:data:`MEMO_ENTRIES` values per table and about :data:`MEMO_BUDGET` bytes over all tables (a table
that would exceed either is emptied first), so memory stays bounded whatever the input.

``EngineOptions(indexed=False)`` keeps the plain walk; ``tests/test_filter_index.py`` checks that
both decide identically on every event of the corpus under every corpus configuration.
"""

from __future__ import annotations

import threading
from itertools import chain
from typing import Any, Callable, Optional

import ahocorasick

from ..core import native
from .conditions import contains_terms, fold, is_any_terms
from .walk import Member, compile_walk, match_group

__all__ = ["literals", "gate_of", "build_indexed_decider", "plan_indexed", "decider_from_plan",
           "storable_plan", "assemble_plan", "set_entries", "group_effect_gate",
           "MemoBudget", "SCAN_LIMIT",
           "MEMO_ENTRIES", "MEMO_BUDGET", "SHORT"]

#: Marks the start and the end of a value in the scanned text.
START, END = "\x02", "\x03"
#: Unanchored patterns shorter than this are tested with ``in``, not by the automaton (a one- or
#: two-character literal can occur many times in a value; the automaton reports each occurrence).
SHORT = 3
#: Values longer than this (characters) are not scanned: all items gated on the field are tried.
SCAN_LIMIT = 4096
#: Memo of scan results: at most this many values per (EventID, field) table ...
MEMO_ENTRIES = 4096
#: ... and about this many bytes over all tables of one engine (values longer than SCAN_LIMIT are
#: never memoised: they are not scanned).
MEMO_BUDGET = 4 << 20


class MemoBudget:
    """The memory all memo tables of one :class:`~sysmonx.filtering.engine.FilterEngine` share.

    Attributes:
        left: approximate bytes still available (a value costs twice its length, raw and folded,
            plus 256 for the entry, tuple and item set).
        lock: held while a table is filled or emptied, so the account stays exact if several
            threads decide with one engine.
    """

    def __init__(self, total: int = MEMO_BUDGET):
        self.total = total
        self.left = total
        self.lock = threading.Lock()

    @property
    def used(self) -> int:
        """Approximate bytes held by the memo tables."""
        return self.total - self.left


# A gate: None = no gate (always a candidate); else field -> frozenset of patterns; {} = can
# never act (dropped).
Gate = Optional[dict]

_NO = (False, None)
_EMPTY: frozenset = frozenset()


def literals(condition: str, r: str) -> Optional[frozenset]:
    """The automaton patterns for one filter.

    Args:
        condition: canonical condition name (spec 2.2).
        r: the folded rule value (after environment expansion).
    Returns:
        a frozenset of patterns, one of which occurs in ``START + v + END`` whenever the filter
        matches the folded value ``v`` (empty: the filter can never match); ``None`` when no
        such set exists (the filter is then always evaluated).
    """
    if condition == "is":
        return frozenset((START + r + END,))
    if condition == "is any":
        # empty pieces never match (spec 2.2); no piece at all => never matches
        return frozenset(START + t + END for t in is_any_terms(r))
    if condition == "image":
        if "\\" in r:
            return frozenset((START + r + END,))
        # the part after the last backslash, or the whole value when it has none
        return frozenset((START + r + END, "\\" + r + END))
    if condition == "begin with":
        return frozenset((START + r,)) if r else None
    if condition == "end with":
        return frozenset((r + END,)) if r else None
    if condition == "contains":
        return frozenset((r,)) if r else None  # "" is in every value
    if condition == "contains any":
        terms = contains_terms(r)
        return frozenset(terms) if all(terms) else None  # an empty piece matches everything
    if condition == "contains all":
        longest = max(contains_terms(r), key=len)
        return frozenset((longest,)) if longest else None
    return None  # is not, excludes*, not begin/end with, less/more than, regex


def _union(gates: list[Gate]) -> Gate:
    """A gate acting when any of ``gates`` does (``None`` if any is ungated)."""
    out: dict = {}
    for g in gates:
        if g is None:
            return None
        for field, pats in g.items():
            out[field] = out.get(field, _EMPTY) | pats
    return {f: p for f, p in out.items() if p}


def _cost(gate: dict) -> float:
    """How often a gate is expected to let an event through: lower is more selective."""
    total = 0.0
    for pats in gate.values():
        for p in pats:
            anchored = (p[:1] == START) + (p[-1:] == END)
            total += (3 - anchored) * 100 - min(len(p), 60)
    return total


def _best(gates: list[Gate]) -> Gate:
    """The most selective of several alternative necessary conditions (``{}`` wins: the item
    can never act; ``None`` only when every alternative is ungated)."""
    usable = [g for g in gates if g is not None]
    if not usable:
        return None
    for g in usable:
        if not g:
            return g
    return min(usable, key=_cost)


def gate_of(m: Member) -> Gate:
    """The gate of one filter: ``{}`` when it can never match (field absent, expansion failed,
    or an ``is any`` without a non-empty piece), ``None`` when it has no usable literal."""
    if m.pred is None or m.value is None:
        return {}
    pats = literals(m.condition, m.value)
    if pats is None:
        return None
    return {m.field: pats} if pats else {}


def _group_gates(relation: str, members: list[Member]) -> tuple[Gate, Gate]:
    """``(effect, match)`` gates of a ``<Rule>`` group: ``effect`` is necessary for the group to
    match or set a name, ``match`` for it to match."""
    gates = [gate_of(m) for m in members]
    if relation != "and":
        g = _union(gates)
        return g, g
    return group_effect_gate(relation, gates, [m.name for m in members]), _best(gates)


def group_effect_gate(relation: str, gates: list, names: list) -> Gate:
    """The ``effect`` gate of a ``<Rule>`` group (:func:`_group_gates`: necessary for the group
    to match or set a name) from its members' gates (:func:`gate_of`) and RuleNames (empty or
    ``None``: unnamed), in document order."""
    if relation != "and":
        return _union(gates)
    first_named = next((i for i, n in enumerate(names) if n), len(names) - 1)
    return _best(gates[:first_named + 1])


def _set_gate(items: list) -> Gate:
    """The gate of an AND rule set as a whole (see the module docstring)."""
    parts: list[Gate] = []
    required: list[Gate] = []
    by_field: dict[str, list[Gate]] = {}
    for item in items:
        if item[0] == "g":
            effect, match = _group_gates(item[1], item[2])
            if any(m.name for m in item[2]):
                parts.append(effect)
            required.append(match)
        else:
            m = item[1]
            g = gate_of(m)
            if m.name:
                parts.append(g)
            by_field.setdefault(m.field, []).append(g)
    required.extend(_union(gs) for gs in by_field.values())
    parts.append(_best(required))
    return _union(parts)


def _filter_item(field: str, pred, name: Optional[str]) -> Callable[[dict], tuple]:
    hit = (True, name)
    return lambda lv: hit if pred(lv[field]) else _NO


def _group_item(relation: str, members: list[Member]) -> Callable[[dict], tuple]:
    rel_and = relation == "and"
    plain = tuple((m.field, m.pred, m.name) for m in members)
    return lambda lv: match_group(rel_and, plain, lv)


def _scanner(patterns: dict, limit: int, every: Optional[frozenset] = None
             ) -> Callable[[str], frozenset]:
    """``scan(v) -> frozenset of item numbers`` for one field; ``patterns``: pattern -> items
    (any collection of item numbers: sets, or the sorted tuples of a stored plan; kept as they
    are, never changed); ``every``: the union of the items (computed when omitted)."""
    auto = ahocorasick.Automaton()
    short = []
    add_word = auto.add_word
    for pat, items in patterns.items():
        if len(pat) < SHORT and START not in pat and END not in pat:
            short.append((pat, items))
        else:
            add_word(pat, items)
    if every is None:
        every = frozenset(chain.from_iterable(patterns.values()))
    return _scan_function(auto, short, every, limit)


def _scan_function(auto: Any, short: list, every: frozenset, limit: int
                   ) -> Callable[[str], frozenset]:
    """:func:`_scanner`'s ``scan`` from its automaton (patterns added, not yet made), its
    short patterns ``(pattern, items)`` and the union of the items."""
    found = None
    if len(auto):
        auto.make_automaton()
        found = auto.iter
    short_t = tuple(short)

    def scan(v: str) -> frozenset:
        if len(v) > limit:
            return every
        acc: set = set()
        add = acc.update
        if found is not None:
            for _, items in found(START + v + END):
                add(items)
        for pat, items in short_t:
            if pat in v:
                add(items)
        return frozenset(acc) if acc else _EMPTY
    return scan


def build_indexed_decider(sets: list, fields: tuple, rule_name_used: bool, fallback: bool,
                          stale: bool, budget: Optional[MemoBudget] = None
                          ) -> Callable[[dict], tuple[bool, str]]:
    """Compile one EventID's rule sets into an indexed decision function.

    Args:
        sets: ``(include, relation, items)`` per rule set in evaluation order (spec 3.2); an item
            is a :data:`~sysmonx.filtering.walk.Item`.
        fields: the fields any of the sets tests (read from the event, folded, ``-`` if empty).
        rule_name_used: a filter tests ``RuleName`` (always ``-`` at filter time, spec 4.3).
        fallback: the decision when no set matches (spec 3.3).
        stale: EngineOptions.stale_rulename.
        budget: the engine's :class:`MemoBudget` (a private one when omitted).
    Returns:
        ``decide(data) -> (include, rule_name)`` deciding exactly as the plain walk
        (:class:`~sysmonx.filtering.engine.FilterEngine` with ``indexed=False``).
    """
    members: list = []
    numbers: dict = {}

    def ref(m: Member) -> int:
        k = numbers.get(id(m))
        if k is None:
            k = numbers[id(m)] = len(members)
            members.append(m)
        return k
    plan = plan_indexed(sets, fields, rule_name_used, fallback, stale, ref)
    return decider_from_plan(plan, members.__getitem__, budget)


def plan_indexed(sets: list, fields: tuple, rule_name_used: bool, fallback: bool, stale: bool,
                 ref: Callable[[Member], Any]) -> tuple:
    """What :func:`build_indexed_decider` computes from the rule sets, as plain data (tuples,
    dicts, strings, numbers and what ``ref`` returns), so it can be stored and turned into
    the same decider later by :func:`decider_from_plan`.

    Args:
        sets, fields, rule_name_used, fallback, stale: as :func:`build_indexed_decider`.
        ref: ``member -> reference`` (a plain value :func:`decider_from_plan`'s ``member``
            turns back into that member).
    Returns:
        ``(fields, rule_name_used, fallback, stale, evaluators, owner, includes, always,
        patterns)``: one evaluator spec per item number (``("f", ref)``, ``("g", relation,
        refs)``, or ``("s", relation, item specs)`` for a whole AND rule set), the rule set
        position of each item, the sets' include flags, the ungated items, and per field
        pattern -> item numbers (a set; :func:`storable_plan` makes them sorted tuples).
    """
    return assemble_plan([(include, set_entries(relation, items, ref))
                          for include, relation, items in sets],
                         fields, rule_name_used, fallback, stale)


def assemble_plan(parts: list, fields: tuple, rule_name_used: bool, fallback: bool,
                  stale: bool) -> tuple:
    """The plan of :func:`plan_indexed` from each rule set's part, in evaluation order.

    Args:
        parts: ``(include, entries)`` per rule set, ``entries`` the ``(gate, evaluator spec)``
            of each of its items that can act, in document order (:func:`set_entries`;
            ``gate`` ``None``: ungated, else field -> patterns, not empty).
        fields, rule_name_used, fallback, stale: as :func:`build_indexed_decider`.
    Returns:
        the plan, as :func:`plan_indexed`.
    """
    evals: list = []      # item number -> evaluator spec
    owner: list = []      # item number -> position of its rule set
    includes: list = []   # set position -> include?
    always: list = []
    patterns: dict[str, dict[str, set]] = {}
    for pos, (include, part) in enumerate(parts):
        includes.append(include)
        for gate, spec in part:
            k = len(evals)
            evals.append(spec)
            owner.append(pos)
            if gate is None:
                always.append(k)
                continue
            for field, pats in gate.items():
                table = patterns.get(field)
                if table is None:
                    table = patterns[field] = {}
                for p in pats:
                    ks = table.get(p)
                    if ks is None:
                        table[p] = {k}
                    else:
                        ks.add(k)
    return (tuple(fields), rule_name_used, fallback, stale, tuple(evals), tuple(owner),
            tuple(includes), tuple(always), patterns)


def set_entries(relation: str, items: list, ref: Callable[[Member], Any]) -> list:
    """One rule set's part of :func:`plan_indexed` (:func:`assemble_plan`'s ``entries``):
    ``(gate, evaluator spec)`` per item that can act (``gate`` ``None``: ungated), in document
    order; ``relation`` and ``items`` the set's (:data:`~sysmonx.filtering.walk.Item`),
    ``ref`` as :func:`plan_indexed`'s."""
    out: list = []
    if relation == "and":
        spec = tuple(("g", item[1], tuple(ref(m) for m in item[2])) if item[0] == "g"
                     else ("f", ref(item[1]), item[2]) for item in items)
        gate = _set_gate(items)
        if gate is None or gate:  # {}: can never match nor set a name
            out.append((gate, ("s", relation, spec)))
        return out
    for item in items:
        if item[0] == "g":
            gate, _ = _group_gates(item[1], item[2])
            if gate is None or gate:
                out.append((gate, ("g", item[1], tuple(ref(m) for m in item[2]))))
        else:
            m = item[1]
            gate = gate_of(m)
            if gate is None or gate:
                out.append((gate, ("f", ref(m))))
    return out


def storable_plan(plan: tuple) -> tuple:
    """``plan`` as :mod:`marshal` writes it deterministically: each pattern's item numbers as
    a sorted tuple (a plan read back from storage is already so)."""
    table = {f: {p: tuple(sorted(ks)) for p, ks in t.items()} for f, t in plan[8].items()}
    return plan[:8] + (table,)


def _evaluator(spec: tuple, member: Callable[[Any], Member]) -> Callable[[dict], tuple]:
    """The evaluator of one item spec of :func:`plan_indexed`."""
    if spec[0] == "f":
        m = member(spec[1])
        return _filter_item(m.field, m.pred, m.name)
    if spec[0] == "g":
        return _group_item(spec[1], [member(r) for r in spec[2]])
    items = [("g", it[1], [member(r) for r in it[2]]) if it[0] == "g"
             else ("f", member(it[1]), it[2]) for it in spec[2]]
    return compile_walk(spec[1], items)


def decider_from_plan(plan: tuple, member: Callable[[Any], Member],
                      budget: Optional[MemoBudget] = None) -> Callable[[dict], tuple[bool, str]]:
    """The decision function of a :func:`plan_indexed` plan.

    Each item's evaluator is built on the item's first evaluation (most items of a large
    config are never a candidate in a given run), from the members ``member(ref)`` gives.

    Args:
        plan: as :func:`plan_indexed` returns it (or as stored and read back).
        member: ``reference -> Member`` (the compiled filter, with its predicate).
        budget: the engine's :class:`MemoBudget` (a private one when omitted).
    Returns:
        ``decide(data) -> (include, rule_name)``, as :func:`build_indexed_decider`.
    Raises:
        ValueError, TypeError, KeyError, IndexError: a plan of another shape.
    """
    (fields, rule_name_used, fallback, stale, specs, owner_t, includes_t, always,
     table) = plan
    if len(specs) != len(owner_t) or (owner_t and (min(owner_t) < 0
                                                   or max(owner_t) >= len(includes_t))):
        raise ValueError("inconsistent plan")
    # item number -> its evaluator, built on the item's first evaluation (None until then;
    # a race builds it twice, alike)
    n = len(specs)
    evals: list = [None] * n
    scans = {}
    for f, t in table.items():
        # _scanner's work in one pass over the patterns: the automaton keeps each pattern's
        # item numbers as the plan has them (a set, or a stored plan's sorted tuple), which
        # the scan adds to its result as they are
        auto = ahocorasick.Automaton()
        add_word = auto.add_word
        short: list = []
        for p, ks in t.items():
            if len(p) < SHORT and START not in p and END not in p:
                short.append((p, ks))
            else:
                add_word(p, ks)
        seen = frozenset(chain.from_iterable(t.values()))
        if seen and (min(seen) < 0 or max(seen) >= n):
            raise ValueError("inconsistent plan")
        scans[f] = _scan_function(auto, short, seen, SCAN_LIMIT)
    if always and (min(always) < 0 or max(always) >= n):
        raise ValueError("inconsistent plan")
    always_l = list(always)
    if rule_name_used and "RuleName" in scans:
        # RuleName is "-" at filter time (Sysmon fills it afterwards, spec 4.3)
        always_l.extend(scans.pop("RuleName")("-"))
    always_t = frozenset(always_l)
    # per field read from the event: (name, memo raw value -> (folded value, items found), scan,
    # [bytes the memo holds])
    readers: tuple[tuple[str, dict, Optional[Callable], list], ...] = tuple(
        (f, {}, scans.get(f), [0]) for f in fields if f != "RuleName")
    miss = (fallback, "-")
    memo_entries, memo_len = MEMO_ENTRIES, SCAN_LIMIT
    if budget is None:
        budget = MemoBudget()
    lock = budget.lock

    def fill(reader: tuple, raw: Optional[str]) -> tuple:
        """A value its field's memo lacks: ``(folded value, items found)``, remembered (within
        the budget: a table that would exceed it or hold too many values is emptied first)."""
        _, memo, scan, used = reader
        if raw:
            v = raw.lower() if raw.isascii() else fold(raw)
            n = len(raw)
            if n > memo_len:  # not scanned, not remembered
                return (v, scan(v) if scan is not None else _EMPTY)
            cost = 256 + 2 * n
        else:
            v, cost = "-", 256
        entry = (v, scan(v) if scan is not None else _EMPTY)
        with lock:
            if len(memo) >= memo_entries or budget.left < cost:
                budget.left += used[0]
                used[0] = 0
                memo.clear()
            if budget.left >= cost:
                memo[raw] = entry
                used[0] += cost
                budget.left -= cost
        return entry

    def build(k: int) -> Callable[[dict], tuple]:
        """Item ``k``'s evaluator, built on its first evaluation (a race builds it twice)."""
        e = evals[k] = _evaluator(specs[k], member)
        return e

    def decide(data: dict) -> tuple[bool, str]:
        lv = {"RuleName": "-"} if rule_name_used else {}
        hits = set(always_t)
        for reader in readers:
            f = reader[0]
            raw = data.get(f)
            entry = reader[1].get(raw)
            if entry is None:
                entry = fill(reader, raw)
            lv[f] = entry[0]
            if entry[1]:
                hits |= entry[1]
        if not hits:
            return miss
        current = set_name = None
        at = -1
        for k in sorted(hits):
            e = evals[k]
            if e is None:
                e = build(k)
            ok, name = e(lv)
            pos = owner_t[k]
            if pos != at:
                at, set_name = pos, None
            if name is not None:
                current = set_name = name
            if ok:
                return includes_t[pos], (current if stale else set_name) or "-"
        return miss
    if native.speedups is None:
        return decide
    # the same decision with its loops compiled (fill, build and the evaluators stay these
    # Python functions); what it does not handle, decide itself decides
    fast: Callable[[dict], tuple[bool, str]] = native.speedups.FilterDecider(
        readers, always_t, rule_name_used, miss, evals, tuple(owner_t), tuple(includes_t),
        stale, fill, build, decide)
    return fast
