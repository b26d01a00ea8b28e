"""What a configuration change takes out of collection: per EventID, the filtering two configs put
in force, compared with Sysmon's decision semantics (spec/sysmon-semantics.md 3.3, 3.7).

Used by the live sensor's guard on every applied reload (``config_weakened`` TamperFinding,
docs/RESILIENCE.md): an attacker with root who edits the configuration to stop collecting and
sends SIGHUP (ATT&CK T1562.006 Indicator Blocking, T1562.001) otherwise leaves only event 16.

Model of one EventID under one config (:class:`Coverage`), from the rule sets of its tag:

* no rule set: the per-type default (:attr:`~sysmonx.schema.catalogue.EventDef.default`; with
  ``no_rule_defaults="community"`` 2 and 6 logged too): everything, or nothing;
* one ``onmatch="exclude"`` set: everything except what its rules match; one ``include`` set:
  only what its rules match (an empty include set: nothing);
* two or more sets: only what an include rule matches and no exclude rule matches (the code's
  fallback, spec 3.3 / TV29: exclude-only sets then log nothing); with ``fallback="intent"``,
  exclude-only sets log everything they do not match.

A *rule* is what can decide an event on its own: a top-level filter of an ``or`` set, a
``<Rule>`` of an ``or`` set, or a whole ``and`` set (its filters only match together), except
an ``and`` set whose filters all test one field (no ``<Rule>``): at the top level filters on
the same field are alternatives (spec 3.4), so each is a rule as in an ``or`` set. Rules
are compared by their conditions (field, condition, value; a ``<Rule>``'s relation), not their
RuleNames: renaming is not a change of collection. A rule that names a field the EventID does
not have (RegistryEvent's ``Details`` for 12) cannot act on it and is left out for that ID.

Collection is *reduced* for an EventID when it went from logged (everything or some) to not
logged at all, or when it is still logged but narrowed: new exclude rules, include rules
removed (when only includes are logged before and after), or from "everything but excludes" to
"only includes". Which events a rule matches is not computed (two conditions are compared as
text): a reload that swaps a rule for a wider one still counts its new exclude as narrowing.
A change that only adds collection (new include rules, removed exclude rules, an event type
switched on) is not a reduction. ``FieldSizes`` that cut a field shorter than before (or cut
one that was not cut) are reported too: truncation hides what the field said.

Options that change what an event carries or what is kept beside it (:func:`option_reductions`)
are compared too, as the configuration's text says them (whether or not this host's tier acts
on them: the same file configures Sysmon and SysmonX on Windows): ``<HashAlgorithms>`` that no
longer compute an algorithm (an absent entry is the sensor's default, SHA256, on both sides),
``<DnsLookup>`` turned off (Sysmon's default is on), ``<CopyOnDelete_PE>`` turned off, entries
removed from ``<CopyOnDelete_Extensions>``/``_SIDs``/``_Processes`` while the list stays (file
archiving of fewer deletes), the SysmonX ``scanners=`` requests of an event type that are gone
(``all`` is every registered scanner, ``yara`` covers ``yara:RULE``) and the SysmonX
``<YaraRules>`` entry removed. Not compared: ``<ArchiveDirectory>`` (removing it moves archives
to Sysmon's default folder, it does not stop archiving) and a whole CopyOnDelete list removed
(what Sysmon archives without one is not specified).

Text from the configuration is untrusted: :func:`describe` quotes every rule value as a JSON
string (quotes, backslashes and control characters escaped) with display controls made visible
(:func:`~sysmonx.textsafe.visible`), cuts it to :data:`VALUE_LIMIT` characters and the whole
text to :data:`DETAILS_LIMIT`, so a value cannot forge another field or line of the output.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Optional

from ..configmodel import Config, Filter, RuleSet
from ..schema import CURRENT
from ..textsafe import split_comma_list, visible
from .engine import NEVER_FILTERED, EngineOptions

__all__ = ["Coverage", "EventReduction", "Reduction", "coverage", "reduction", "describe",
           "option_reductions", "DEFAULT_HASH_ALGORITHMS", "VALUE_LIMIT", "DETAILS_LIMIT",
           "CONDITIONS_SHOWN"]

#: Hash algorithms the live sensor computes when the configuration names none
#: (sensor/live.py ``_hasher``).
DEFAULT_HASH_ALGORITHMS = ("SHA256",)
#: Values of a Sysmon Boolean entry that mean off (config/parse.py ``_FALSE_FLAGS``; lower case).
_OFF = {"false", "0", "null", "disabled"}
#: CopyOnDelete entries whose list says which deletes are archived.
_COPY_LISTS = ("CopyOnDelete_Extensions", "CopyOnDelete_SIDs", "CopyOnDelete_Processes")

#: Longest rule value quoted in a description (longer ones end with ``...``).
VALUE_LIMIT = 80
#: New exclude rules whose conditions a description lists per event type (the rest counted).
CONDITIONS_SHOWN = 3
#: Longest description (characters); what does not fit is counted at the end.
DETAILS_LIMIT = 2000

_DEFAULT_OPTIONS = EngineOptions()
#: A rule's identity: ("filter", field, condition, value) or (relation, (filter keys ...)).
RuleKey = tuple


def _fkey(f: Filter) -> tuple[str, str, str]:
    return (f.field, f.condition, f.value)


def _rules(rs: RuleSet, fields: frozenset[str]) -> set[RuleKey]:
    """The rules of one set that can act on an event with ``fields``."""
    top_fields = {f.field for f in rs.filters if not f.aggregate}
    if rs.relation == "and" and (len(top_fields) > 1 or rs.aggregates):
        keys = []
        for f in rs.filters:
            if f.field not in fields:
                return set()  # an AND set with a field the event lacks never matches
            keys.append(_fkey(f))
        return {("and", tuple(sorted(set(keys))))} if keys else set()
    out: set[RuleKey] = set()
    groups: dict[int, list[Filter]] = {}
    for f in rs.filters:
        if f.aggregate:
            groups.setdefault(f.aggregate, []).append(f)
        elif f.field in fields:
            out.add(("filter",) + _fkey(f))
    for agg_id, members in groups.items():
        agg = rs.aggregates.get(agg_id)
        relation = agg.relation if agg is not None else "or"
        present = [m for m in members if m.field in fields]
        if not present or (relation == "and" and len(present) != len(members)):
            continue
        out.add((relation, tuple(sorted({_fkey(m) for m in present}))))
    return out


@dataclass(frozen=True)
class Coverage:
    """What one config logs of one EventID.

    Attributes:
        mode: ``all`` (everything its exclude rules do not match) or ``only`` (only what its
            include rules match and its exclude rules do not).
        includes, excludes: the rules (keys) that can act on the EventID.
    """

    mode: str
    includes: frozenset = frozenset()
    excludes: frozenset = frozenset()

    @property
    def logs_nothing(self) -> bool:
        """Nothing of the EventID is logged (``only`` with no include rule)."""
        return self.mode == "only" and not self.includes


def coverage(config: Optional[Config], event_id: int,
             options: EngineOptions = _DEFAULT_OPTIONS) -> Optional[Coverage]:
    """The :class:`Coverage` of ``event_id`` under ``config`` (``None``: no config, Sysmon's
    per-type defaults); ``None`` for an EventID that is never filtered (4, 16, 255) or not in
    the catalogue."""
    ev = CURRENT.events.get(event_id)
    if ev is None or ev.tag is None or event_id in NEVER_FILTERED:
        return None
    sets = [rs for rs in (config.rule_sets if config is not None else ()) if rs.tag == ev.tag]
    if not sets:
        default = ev.default == "include" or (options.no_rule_defaults == "community"
                                              and event_id in (2, 6))
        return Coverage("all" if default else "only")
    fields = frozenset(f.name for f in ev.fields)
    inc: set[RuleKey] = set()
    exc: set[RuleKey] = set()
    for rs in sets:
        (inc if rs.onmatch == "include" else exc).update(_rules(rs, fields))
    if len(sets) == 1:
        mode = "all" if sets[0].onmatch == "exclude" else "only"
    elif options.fallback == "intent" and all(rs.onmatch == "exclude" for rs in sets):
        mode = "all"
    else:
        mode = "only"
    return Coverage(mode, frozenset(inc), frozenset(exc))


@dataclass
class EventReduction:
    """How one EventID's collection was reduced.

    Attributes:
        event_id, tag: the EventID and its config tag.
        dark: logged before (everything or some), nothing now.
        new_excludes: exclude rules the new config has and the old did not (sorted).
        removed_includes: include rules the old config had and the new does not, when both log
            only what includes match.
        added_includes: with ``removed_includes``, include rules the new config has and the old
            did not (told beside it: a value swapped for another reads "1 include rule removed
            (1 added)"; what the removed rule matched is not collected any more either way).
        was_all: logged everything but excludes before, only what includes match now.
        includes_now: the new config's include rules (with ``was_all``).
    """

    event_id: int
    tag: str
    dark: bool = False
    new_excludes: list = field(default_factory=list)
    removed_includes: int = 0
    added_includes: int = 0
    was_all: bool = False
    includes_now: int = 0

    def signature(self) -> tuple:
        """What the change is, without the EventID (IDs of one tag alike are told once)."""
        return (self.tag, self.dark, tuple(self.new_excludes), self.removed_includes,
                self.added_includes, self.was_all, self.includes_now)


@dataclass
class Reduction:
    """Everything a configuration change took out of collection.

    Attributes:
        events: per EventID with a reduction, in EventID order.
        field_sizes: ``(field, new size, old size or None when not cut)`` for FieldSizes that
            cut a field shorter than before, by field name.
        options: one description per option that collects less (:func:`option_reductions`).
    """

    events: list[EventReduction] = field(default_factory=list)
    field_sizes: list[tuple[str, int, Optional[int]]] = field(default_factory=list)
    options: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.events or self.field_sizes or self.options)

    @property
    def dark(self) -> list[int]:
        """EventIDs logged before and not at all now."""
        return [e.event_id for e in self.events if e.dark]


def reduction(old: Optional[Config], new: Optional[Config],
              options: EngineOptions = _DEFAULT_OPTIONS) -> Reduction:
    """What going from ``old`` to ``new`` takes out of collection (module docstring); ``None``
    for either is "no config" (Sysmon's per-type defaults, as the live sensor runs without
    one). Every EventID of the catalogue that a config can filter is compared, SysmonX's own
    (201 TamperFinding ...) included."""
    out = Reduction()
    for eid in sorted(CURRENT.events):
        before = coverage(old, eid, options)
        after = coverage(new, eid, options)
        if before is None or after is None or before.logs_nothing:
            continue
        tag = CURRENT.events[eid].tag or ""
        if after.logs_nothing:
            out.events.append(EventReduction(eid, tag, dark=True))
            continue
        r = EventReduction(eid, tag)
        r.new_excludes = sorted(after.excludes - before.excludes, key=repr)
        if before.mode == "all" and after.mode == "only":
            r.was_all, r.includes_now = True, len(after.includes)
        elif before.mode == after.mode == "only":
            r.removed_includes = len(before.includes - after.includes)
            if r.removed_includes:
                r.added_includes = len(after.includes - before.includes)
        if r.new_excludes or r.removed_includes or r.was_all:
            out.events.append(r)
    old_sizes = old.field_sizes if old is not None else {}
    for name, size in sorted((new.field_sizes if new is not None else {}).items()):
        was = old_sizes.get(name)
        if was is None or size < was:
            out.field_sizes.append((name, size, was))
    out.options = option_reductions(old, new)
    return out


def _items(text: str) -> list[str]:
    """A Sysmon comma list as the config reader splits it (:func:`split_comma_list`), items
    stripped, blank ones left out."""
    return [i.strip() for i in split_comma_list(text) if i.strip()]


def _scanner_requests(config: Optional[Config]) -> dict[str, set[str]]:
    """Event tag -> scanner names its rule sets, ``<Rule>``s and filters request (``all``
    expanded to every registered scanner)."""
    from ..core.registry import SCANNERS
    out: dict[str, set[str]] = {}
    for rs in (config.rule_sets if config is not None else ()):
        names = set(rs.scanners)
        for f in rs.filters:
            names.update(f.scanners)
        for a in rs.aggregates.values():
            names.update(a.scanners)
        if "all" in names:
            names.discard("all")
            names.update(SCANNERS.names())
        if names:
            out.setdefault(rs.tag, set()).update(names)
    return out


def option_reductions(old: Optional[Config], new: Optional[Config]) -> list[str]:
    """The options of ``new`` that collect or keep less than those of ``old`` (module
    docstring), one description each, in a fixed order: HashAlgorithms, DnsLookup,
    CopyOnDelete_PE, the CopyOnDelete lists, scanners per event type (tag order), YaraRules.
    Values from the configuration are quoted as rule values are (:func:`describe`)."""
    out: list[str] = []
    old_opts = old.options if old is not None else {}
    new_opts = new.options if new is not None else {}
    before = set((old.hash_algorithms if old is not None else None) or DEFAULT_HASH_ALGORITHMS)
    after = (new.hash_algorithms if new is not None else None) or list(DEFAULT_HASH_ALGORITHMS)
    gone = [h for h in ("SHA1", "MD5", "SHA256", "IMPHASH") if h in before and h not in after]
    if gone:
        out.append(f"HashAlgorithms: {', '.join(gone)} no longer computed (now "
                   f"{', '.join(after)})")
    if old_opts.get("DnsLookup", "true").strip().lower() not in _OFF and \
            new_opts.get("DnsLookup", "true").strip().lower() in _OFF:
        out.append("DnsLookup turned off (no reverse lookup of NetworkConnect host names)")
    if "CopyOnDelete_PE" in old_opts and "CopyOnDelete_PE" not in new_opts:
        out.append("CopyOnDelete_PE turned off (deleted executables no longer archived)")
    for name in _COPY_LISTS:
        if name in old_opts and name in new_opts:
            now = {i.lower() for i in _items(new_opts[name])}
            removed = [i for i in _items(old_opts[name]) if i.lower() not in now]
            if removed:
                out.append(f"{name}: {', '.join(_quote(i) for i in removed[:CONDITIONS_SHOWN])}"
                           + (f" and {len(removed) - CONDITIONS_SHOWN} more"
                              if len(removed) > CONDITIONS_SHOWN else "")
                           + " removed (fewer deletes archived)")
    was, now_req = _scanner_requests(old), _scanner_requests(new)
    for tag in sorted(was):
        kept = now_req.get(tag, set())
        lost = sorted(n for n in was[tag] - kept
                      if not (n.startswith("yara:") and "yara" in kept))
        if lost:
            out.append(f"scanners no longer requested on {tag}: "
                       + ", ".join(n if _PLAIN_NAME.fullmatch(n) else _quote(n) for n in lost))
    if "YaraRules" in old_opts and "YaraRules" not in new_opts:
        out.append(f"YaraRules removed (was {_quote(old_opts['YaraRules'])})")
    return out


#: A scanner name written as it is (``memory``, ``yara:Rule_1``); any other (config text:
#: spaces, ``|``, control characters) is JSON-quoted like rule values, so it cannot add items.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,80}")


def _quote(value: str) -> str:
    if len(value) > VALUE_LIMIT:
        value = value[:VALUE_LIMIT - 3] + "..."
    return visible(json.dumps(value, ensure_ascii=False))


def _condition(key: RuleKey) -> str:
    if key[0] == "filter":
        _, fname, cond, value = key
        return f"{fname} {cond} {_quote(value)}"
    relation, members = key
    inner = f" {relation} ".join(f"{f} {c} {_quote(v)}" for f, c, v in members)
    return f"({inner})"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _label(tag: str, ids: list[int]) -> str:
    return f"{tag} ({', '.join(map(str, ids))})"


def describe(red: Reduction, limit: int = DETAILS_LIMIT) -> str:
    """One line: what went dark, then what was narrowed, one item per event type (the EventIDs
    of a multi-ID tag with the same change together), then FieldSizes, items separated by
    `` | ``; rule values quoted and escaped (module docstring); at most ``limit`` characters:
    whole items while they fit, then ``| ... (N more)``. Empty for no reduction.

    Example: ``not logged any more: ProcessCreate (1) | narrowed: NetworkConnect (3): 1 new
    exclude rule: Image end with "/nc"``."""
    merged: dict[tuple, list[int]] = {}
    first: dict[tuple, EventReduction] = {}
    for e in red.events:
        sig = e.signature()
        merged.setdefault(sig, []).append(e.event_id)
        first.setdefault(sig, e)
    dark = [_label(first[s].tag, ids) for s, ids in merged.items() if first[s].dark]
    items: list[str] = []
    if dark:
        items.append("not logged any more: " + ", ".join(dark))
    narrowed = 0
    for sig, ids in merged.items():
        e = first[sig]
        if e.dark:
            continue
        what = []
        if e.was_all:
            n = e.includes_now
            verb = "matches" if n == 1 else "match"
            what.append(f"only what {_plural(n, 'include rule')} {verb} (was: "
                        "everything not excluded)")
        if e.removed_includes:
            what.append(f"{_plural(e.removed_includes, 'include rule')} removed"
                        + (f" ({e.added_includes} added)" if e.added_includes else ""))
        if e.new_excludes:
            shown = "; ".join(_condition(k) for k in e.new_excludes[:CONDITIONS_SHOWN])
            more = len(e.new_excludes) - CONDITIONS_SHOWN
            what.append(f"{_plural(len(e.new_excludes), 'new exclude rule')}: {shown}"
                        + (f"; and {more} more" if more > 0 else ""))
        items.append(("narrowed: " if not narrowed else "") + f"{_label(e.tag, ids)}: "
                     + ", ".join(what))
        narrowed += 1
    items.extend(red.options)
    if red.field_sizes:
        items.append("FieldSizes: " + ", ".join(
            f"{name} cut to {size} characters (was {'not cut' if was is None else was})"
            for name, size, was in red.field_sizes))
    text = " | ".join(items)
    if len(text) <= limit:
        return text
    # whole items while they fit, with room for the count of those left out
    kept: list[str] = []
    size = 0
    for item in items:
        if size + len(item) + 3 > limit - 24:
            break
        kept.append(item)
        size += len(item) + 3
    if not kept:  # one item longer than the limit: cut inside it
        return items[0][:limit - 24] + f" ... ({len(items)} items)"
    return " | ".join(kept) + f" | ... ({len(items) - len(kept)} more)"
