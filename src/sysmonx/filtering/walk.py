"""Sysmon's walk over one rule set, filter by filter (spec/sysmon-semantics.md 3.4 and 3.6).

The plain evaluation: every filter in document order, ``<Rule>`` runs as sub-groups, the
same-field rule at the top level, the RuleName of the last named filter that matched. It is the
evaluator of ``EngineOptions(indexed=False)`` and of the candidates the index
(:mod:`~sysmonx.filtering.index`) picks.
"""

from __future__ import annotations

from typing import Callable, Optional

__all__ = ["Member", "Item", "SetResult", "match_group", "compile_walk"]

#: ``(matched, name)``: ``name`` is the last non-empty RuleName set during the evaluation
#: (possibly by a filter of a group or set that did not match, spec 3.6), else ``None``.
SetResult = tuple[bool, Optional[str]]


class Member:
    """One compiled filter.

    Attributes:
        field: Sysmon field name.
        pred: predicate on the folded value, or ``None`` when the field is not at its bound
            position in this event id (spec 1.5: NoMatch).
        name: inherited RuleName, ``None`` when empty (spec 3.6).
        condition: canonical condition name (spec 2.2).
        value: folded rule value after environment expansion; ``None`` when expansion failed
            (the filter never matches).
    """

    __slots__ = ("field", "pred", "name", "condition", "value")

    def __init__(self, field: str, pred: Optional[Callable[[str], bool]], name: Optional[str],
                 condition: str, value: Optional[str]):
        self.field, self.pred, self.name = field, pred, name
        self.condition, self.value = condition, value

    def __repr__(self) -> str:
        return f"Member({self.field} {self.condition} {self.value!r} name={self.name!r})"


#: An item of a rule set: ``("f", member, later)`` for a top-level filter (``later``: another
#: top-level filter on the same field follows it) or ``("g", relation, members)`` for a run of
#: filters of one ``<Rule>`` (``relation``: ``"and"`` or ``"or"``).
Item = tuple


def match_group(rel_and: bool, members: tuple, lv: dict) -> SetResult:
    """Evaluate a ``<Rule>`` group (spec 3.4): inside it every filter counts, even on the same
    field. ``members``: ``(field, pred, name)`` triples; ``lv``: field -> folded value."""
    name = None
    for field, pred, fname in members:
        if pred is not None and pred(lv[field]):
            if fname:
                name = fname
            if not rel_and:
                return True, name
        elif rel_and:
            return False, name
    return rel_and, name


def compile_walk(relation: str, items: list) -> Callable[[dict], SetResult]:
    """The walk of one rule set with combine type ``relation`` (``"and"``/``"or"``) over its
    ``items`` (see :data:`Item`). Returns ``walk(lv) -> (matched, name)``."""
    is_and = relation == "and"
    plain: list[tuple] = []
    for item in items:
        if item[0] == "g":
            plain.append(("g", item[1] == "and",
                          tuple((m.field, m.pred, m.name) for m in item[2])))
        else:
            m = item[1]
            plain.append(("f", m.field, m.pred, m.name, item[2]))
    items_t = tuple(plain)
    if not items_t:
        return lambda lv: (False, None)

    def walk(lv: dict) -> SetResult:
        name = None
        matched_fields = set()
        for item in items_t:
            if item[0] == "g":
                ok, gname = match_group(item[1], item[2], lv)
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
