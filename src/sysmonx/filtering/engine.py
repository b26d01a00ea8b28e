"""Sysmon's filter algorithm, compiled per configuration into per-EventID deciders, each on its
EventID's first event (what compiling can refuse is checked when the engine is built).

Semantics: spec/sysmon-semantics.md section 3 — rule-set order (3.2: exclude sets then include
sets, each in reverse document order), decision and fallback (3.3), group evaluation with the
same-field-is-OR rule and ``<Rule>`` sub-groups (3.4), errors as NoMatch (3.5), RuleName
selection including the stale-name quirk (3.6), per-type defaults (3.7), multi-id binding by
field position (1.5), FieldSizes truncation after filtering (3.9).

Compilation turns every filter into a predicate and every rule set into walk items
(:mod:`~sysmonx.filtering.walk`). By default each EventID is then indexed
(:mod:`~sysmonx.filtering.index`): an event evaluates only the filters and ``<Rule>`` groups whose
literals occur in its values, in Sysmon's order, with the same decision and RuleName as the
plain walk, which ``EngineOptions(indexed=False)`` keeps. Evaluating an event never walks the
config model.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..core.cachelook import ORIGIN, config_caches_enabled
from ..configmodel import Config, RuleSet
from ..schema import CURRENT
from ..schema.catalogue import ENRICHMENT_FIELD_NAMES
from .conditions import REGEX_MAX_MEM, REGEX_TOTAL_MEM, fold, make_predicate, utf16_len
from .index import (MemoBudget, assemble_plan, decider_from_plan, group_effect_gate, literals,
                    set_entries, storable_plan)
from .walk import Member, compile_walk

__all__ = ["EngineOptions", "FilterEngine", "truncate_value", "expand_environment",
           "WINDOWS_DEFAULT_ENV", "NEVER_FILTERED", "never_filtered", "set_note_handler"]

#: Events Sysmon never filters (spec 3.7).
NEVER_FILTERED = frozenset({4, 16, 255})


def never_filtered(event_id: int, data: dict) -> bool:
    """True for the one SysmonX event no configuration filters or truncates: TamperFinding
    (201) ``config_weakened``, the record of a reload that made the sensor collect less
    (docs/RESILIENCE.md): the configuration it is about must not be able to drop it
    (``<TamperFinding onmatch="include"/>``) nor cut it (``<FieldSizes>``). Every decision
    path (the filter stage, the workbench, ``config explain``) goes through the engine's
    deciders, which apply this."""
    return event_id == 201 and data.get("Technique") == "config_weakened"

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
        indexed: True (default): evaluate only the filters and ``<Rule>`` groups that can act on
            the event (:mod:`~sysmonx.filtering.index`); False: walk every filter of every rule
            set in order (spec 3.4). Both decide identically (include/exclude and RuleName);
            False is the reference the index is tested against.
    """

    compare_fold: str = "lower"
    fallback: str = "code"
    stale_rulename: bool = True
    no_rule_defaults: str = "manifest"
    field_sizes_skip_last: bool = True
    environment: Optional[dict] = None
    indexed: bool = True

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


def _stderr_note(text: str) -> None:
    sys.stderr.write(f"sysmonx: note: {text}\n")


_NOTE_HANDLER: Callable[[str], None] = _stderr_note


def set_note_handler(handler: Optional[Callable[[str], None]]) -> Callable[[str], None]:
    """Send the filter plan cache's notes (an entry ignored and rebuilt, a directory not used,
    an entry not stored: rare, for a person) to ``handler`` (called with the note's text,
    without ``note:``) instead of stderr (``None``: stderr again, as ``sysmonx: note: TEXT``).
    Process-wide, as stderr is: ``replay`` counts them under ``-q`` as its other notes, a
    ``--jobs`` worker sends them to the parent with its error lines. Returns the previous
    handler (to restore it)."""
    global _NOTE_HANDLER
    previous = _NOTE_HANDLER
    _NOTE_HANDLER = handler or _stderr_note
    return previous


def _never(v: str) -> bool:
    return False


def _unbuilt(v: str) -> bool:
    """The predicate of an outline member (:meth:`_SetCompiler.outline`): never called."""
    raise AssertionError("an outline member was evaluated")


def _keeping_config_weakened(decide: Callable[[dict], tuple[bool, Optional[str]]]
                             ) -> Callable[[dict], tuple[bool, Optional[str]]]:
    """201's decider with :func:`never_filtered` first: a ``config_weakened`` finding is kept
    with RuleName ``-`` whatever the rules say."""
    def decide_201(data: dict) -> tuple[bool, Optional[str]]:
        if data.get("Technique") == "config_weakened":
            return True, "-"
        return decide(data)
    return decide_201


def _pass(data: dict) -> tuple[bool, Optional[str]]:
    return True, None


def _constant_decider(answer: tuple[bool, Optional[str]]
                      ) -> Callable[[dict], tuple[bool, Optional[str]]]:
    """A decider that gives ``answer`` (``(include, rule_name)``) for every record (an EventID
    without rules). The answer is also the function's attribute ``sysmonx_constant``, which the
    replay's raw path (``_speedups.RawPlan``) reads instead of calling it."""
    def decide(data: dict) -> tuple[bool, Optional[str]]:
        return answer
    decide.sysmonx_constant = answer  # type: ignore[attr-defined]
    return decide


#: Sysmon's conditions whose predicate building cannot fail on a string value (``regex`` can).
_SAFE_CONDITIONS = frozenset({
    "is", "is not", "contains", "excludes", "begin with", "end with", "less than", "more than",
    "image", "contains any", "is any", "contains all", "excludes any", "excludes all",
    "not begin with", "not end with"})


class _SetCompiler:
    """Compiles the rule sets of a configuration into walk items (:data:`walk.Item`), one
    :class:`~sysmonx.filtering.walk.Member` per (filter, field present or not), shared by the
    event ids of a tag."""

    def __init__(self, opts: EngineOptions, regex_mem: int = REGEX_MAX_MEM):
        self.opts = opts
        self.regex_mem = regex_mem
        self.members: dict = {}
        self.outlines: dict = {}  # (id(filter), present) -> Member without its predicate
        #: id(member or outline) -> (filter, present): where each came from
        self.origin: dict = {}

    @staticmethod
    def present(rs: RuleSet, event_id: int) -> dict[str, bool]:
        """Field -> whether it sits at its bound position in ``event_id`` (spec 1.5), in the
        order of the fields' first filters."""
        bound = CURRENT.events[rs.event_id].index
        actual = CURRENT.events[event_id].field_names
        out = {}
        for field in dict.fromkeys([f.field for f in rs.filters]):
            pos = bound.get(field)
            if pos is None and field in ENRICHMENT_FIELD_NAMES:
                out[field] = True  # looked up by name: added by the enrichment stage
                continue
            out[field] = pos is not None and pos < len(actual) and actual[pos] == field
        return out

    def value(self, f) -> Optional[str]:
        """The rule value after environment expansion (``None``: the filter can never match)."""
        if self.opts.environment is None:
            return f.value
        return expand_environment(f.value, self.opts.environment)

    def member(self, f, present: bool) -> Member:
        """One filter compiled: predicate ``None`` when its field is absent from the event id,
        :func:`_never` when environment expansion failed."""
        key = (id(f), present)  # the config, and so f, outlives the compiler
        m = self.members.get(key)
        if m is not None:
            return m
        if not present:
            m = Member(f.field, None, f.name or None, f.condition, fold(f.value))
        elif (value := self.value(f)) is None:
            m = Member(f.field, _never, f.name or None, f.condition, None)
        else:
            pred = make_predicate(f.condition, value, compare_fold=self.opts.compare_fold,
                                  regex_max_mem=self.regex_mem)
            m = Member(f.field, pred, f.name or None, f.condition, fold(value))
        self.members[key] = m
        self.origin[id(m)] = (f, present)
        return m

    def outline(self, f, present: bool) -> Member:
        """What the index plans with (:func:`~.index.plan_indexed`): the filter's field,
        condition, folded value and name as :meth:`member` gives them, its predicate
        :func:`_unbuilt` (a present field) unless the member was built already (what
        :meth:`member` builds is built when the filter is first evaluated)."""
        key = (id(f), present)
        m = self.members.get(key)
        if m is not None or not present:
            return m if m is not None else self.member(f, present)
        m = self.outlines.get(key)
        if m is None:
            if (value := self.value(f)) is None:
                return self.member(f, present)
            m = self.outlines[key] = Member(f.field, _unbuilt, f.name or None, f.condition,
                                            fold(value))
            self.origin[id(m)] = (f, present)
        return m

    def items(self, rs: RuleSet, present: dict[str, bool], outline: bool = False) -> list:
        """The set's filters as walk items, in document order (spec 3.4); ``present`` as
        returned by :meth:`present`; ``outline``: members as :meth:`outline` gives them
        (for planning only, never evaluated)."""
        member = self.outline if outline else self.member
        filters = rs.filters
        items: list[tuple] = []
        i, n = 0, len(filters)
        last_top = {}  # field -> index of its last top-level filter (same-field rule, spec 3.4)
        for j, g in enumerate(filters):
            if not g.aggregate:
                last_top[g.field] = j
        while i < n:
            f = filters[i]
            agg = f.aggregate
            if agg:
                j = i
                members = []
                while j < n and filters[j].aggregate == agg:
                    g = filters[j]
                    members.append(member(g, present[g.field]))
                    j += 1
                items.append(("g", rs.aggregates[agg].relation, members))
                i = j
            else:
                field = f.field
                items.append(("f", member(f, present[field]), last_top[field] > i))
                i += 1
        return items


class FilterEngine:
    """A configuration compiled into one decision function per EventID.

    Each EventID's function is compiled on its first use (:meth:`decide`, :meth:`decider_for`;
    a replay meets few of the EventIDs a config covers) and :meth:`compile_all` compiles them
    all. Every error compiling could raise is raised by the constructor, as a whole compile
    would raise it (:meth:`_check_compile`).

    ``decide(event_id, data)`` returns ``(include, rule_name)``: ``include`` is Sysmon's decision
    to log the event, ``rule_name`` the RuleName Sysmon would write (``-`` when no rule matched),
    or ``None`` for events Sysmon never filters (4, 16, 255) and IDs it does not define, which
    are always included and keep their RuleName untouched.

    With the index (the default), each decider is built from a *plan* (plain data:
    :func:`~sysmonx.filtering.index.plan_indexed`), compiled or read from the plan cache
    (:mod:`~sysmonx.filtering.plancache`, keyed by the rule sets, the options and the code);
    :meth:`save_plans` stores the plans compiled in this run (the filter stage calls it at
    the end, :meth:`compile_all` after compiling).

    Args:
        config: a loaded :class:`~sysmonx.config.Config`, or ``None`` for Sysmon's behaviour with
            no configuration (per-type defaults only).
        options: :class:`EngineOptions`.
        plan_cache: ``True`` (default): the default
            :class:`~sysmonx.filtering.plancache.PlanCache` unless ``$SYSMONX_CONFIG_CACHE`` is
            ``0``/``off``, none on a config file's first run (``load_config``'s first look:
            :mod:`~sysmonx.core.cachelook`; status ``noted``); ``False``/``None``: none; or a
            ``PlanCache``.
    Attributes:
        plan_cache_status: ``off``, or what the plan cache did last (``hit``, ``miss``,
            ``ignored``, ``stored``, ``unwritable``; ``noted``: a first run, stored at the
            next). Notes about it (an entry ignored and
            rebuilt, a directory that cannot be used) go to stderr as
            ``sysmonx: note: filter plan cache ...``.
    Raises:
        UsageError: a filter's condition is not registered (a config built without the reader).
        RegexError: a ``regex`` RE2 refuses under the engine's per-pattern memory share.
        KeyError: a rule set bound to an EventID the catalogue lacks, or a filter naming a
            ``<Rule>`` group its set lacks (configs built without the reader).
    """

    def __init__(self, config: Optional[Config], options: EngineOptions = EngineOptions(),
                 plan_cache: Any = True):
        self.config = config
        self.options = options
        self.field_sizes = dict(config.field_sizes) if config else {}
        n_regex = sum(f.condition == "regex" for rs in (config.rule_sets if config else ())
                      for f in rs.filters)
        self._regex_mem = max(256 << 10, min(REGEX_MAX_MEM, REGEX_TOTAL_MEM // max(1, n_regex)))
        self._deciders: dict[int, Callable[[dict], tuple[bool, Optional[str]]]] = {}
        self._compiler = _SetCompiler(options, self._regex_mem)
        self._shared: dict = {}  # (tag, field presence of every set) -> decider
        #: memory shared by the index's memo tables (:class:`~.index.MemoBudget`)
        self.memo = MemoBudget()
        self._lock = threading.Lock()
        self._by_tag: dict[str, list[RuleSet]] = {}  # tag -> its rule sets, document order
        for rs in (config.rule_sets if config else ()):
            self._by_tag.setdefault(rs.tag, []).append(rs)
        # each EventID's decider is compiled on its first event (a replay meets few of the
        # EventIDs a config covers); what compiling could refuse is checked now, at load
        self._check_compile()
        self._pos: Optional[dict] = None  # id(filter) -> (rule set index, filter index)
        #: (id(rule set), its fields' presence) -> the set's part of a plan (:meth:`_plan_part`)
        self._parts: dict = {}
        self._tag_fields: dict[str, tuple] = {}  # tag -> the fields its rule sets test, sorted
        self._plan_cache: Any = None  # a plancache.PlanCache (imported when one is used)
        self._notes_said: set[str] = set()  # a note is said once per engine (get, then put)
        self._plan_key: Optional[str] = None
        self._stored_plans: dict = {}
        self._new_plans: dict = {}
        self.plan_cache_status = "off"
        wanted = options.indexed and config is not None and bool(config.rule_sets)
        if plan_cache is True:
            plan_cache = None
            if config_caches_enabled():
                origin = getattr(config, ORIGIN, None)
                if origin is not None and origin[0] == "first":
                    # a config file's first run (load_config's first look): nothing is
                    # computed or stored; its second run stores the plans
                    if wanted:
                        self.plan_cache_status = "noted"
                else:
                    from .plancache import PlanCache
                    # stored at the second run: by the config file's first look, else (a
                    # config not loaded from a file) by the rule sets' own marker
                    plan_cache = PlanCache(admit_on_second_miss=origin is None)
        if plan_cache and wanted:
            assert config is not None
            from .plancache import plans_key
            key = plans_key(config, options)
            if key is not None:
                self._plan_cache, self._plan_key = plan_cache, key
                self._stored_plans = plan_cache.get(key) or {}
                self.plan_cache_status = plan_cache.status
                self._notes(plan_cache.notes)
        self._truncate_skip = max(e for e, d in CURRENT.events.items()
                                  if e < 255 and not d.extension) \
            if options.field_sizes_skip_last else None

    def _notes(self, notes: list) -> None:
        """Give the plan cache's new notes to the note handler (:func:`set_note_handler`); a
        note said before by this engine (the same reason at the read and at the store) is not
        said again."""
        for note in notes:
            if note not in self._notes_said:
                self._notes_said.add(note)
                _NOTE_HANDLER(note)

    def _check_compile(self) -> None:
        """Raise now what compiling any EventID would raise, in the order a full compile meets
        it, so a config error is reported at load and never deferred to an event.

        Compiling can only fail on a filter whose predicate building can fail (``regex``, a
        plugin's condition, a value that is not a string), on a rule set bound to an unknown
        EventID or on a filter naming a missing ``<Rule>`` group; a config the reader built has
        none of the last three. Those predicates are built here (and kept for the deciders)."""
        if self.config is None:
            return
        risky = False
        for rs in self.config.rule_sets:
            if rs.event_id not in CURRENT.events:
                risky = True
                break
            for f in rs.filters:
                if (f.condition not in _SAFE_CONDITIONS or f.value.__class__ is not str
                        or (f.aggregate and f.aggregate not in rs.aggregates)):
                    risky = True
                    break
            if risky:
                break
        if not risky:
            return
        # the full compile's order: EventIDs in catalogue order, sets in evaluation order
        seen: set = set()
        for eid, ev in CURRENT.events.items():
            if eid in NEVER_FILTERED or ev.tag is None:
                continue
            ordered = self._ordered_sets(ev.tag)
            if not ordered:
                continue
            present = [self._compiler.present(rs, eid) for rs in ordered]
            key = (ev.tag, tuple(tuple(sorted(p.items())) for p in present))
            if key in seen:
                continue
            seen.add(key)
            for rs, p in zip(ordered, present, strict=True):
                for f in rs.filters:
                    if f.aggregate:
                        _ = rs.aggregates[f.aggregate]  # a KeyError, as compiling raises
                    if f.condition not in _SAFE_CONDITIONS or f.value.__class__ is not str:
                        self._compiler.member(f, p[f.field])

    def compile_all(self) -> None:
        """Compile the decider of every EventID now (deciders are otherwise compiled on each
        EventID's first event), e.g. before measuring or sharing the engine; the plans are
        then stored (:meth:`save_plans`)."""
        for eid in CURRENT.events:
            self._decider(eid)
        self.save_plans()

    def save_plans(self) -> None:
        """Store the plans compiled since the engine was built (or last saved) in the plan
        cache, beside those read from it. Does nothing without a plan cache or new plans;
        never raises (:attr:`plan_cache_status` says what happened)."""
        if self._plan_cache is None or self._plan_key is None:
            return
        with self._lock:
            if not self._new_plans:
                return
            plans = {**self._stored_plans,
                     **{k: storable_plan(p) for k, p in self._new_plans.items()}}
            self._stored_plans, self._new_plans = plans, {}
        self._plan_cache.put(self._plan_key, plans)
        self.plan_cache_status = self._plan_cache.status
        self._notes(self._plan_cache.notes)

    def _ref(self, m: Member) -> tuple:
        """A compiled member as ``(rule set index, filter index, present)`` of the config."""
        if self._pos is None:
            self._ref_positions()
        assert self._pos is not None
        f, present = self._compiler.origin[id(m)]
        return self._pos[id(f)] + (present,)

    def _plan_part(self, rs: RuleSet, present: dict[str, bool]) -> list:
        """The rule set's part of a plan (:func:`~.index.set_entries` of its outline items,
        :meth:`_SetCompiler.items`), planned once per presence of its fields (the EventIDs
        of a multi-id tag that see a set alike share it) and, for an OR set's top-level
        filters, straight from the filter: the same gate and reference as through its
        outline member, without making one."""
        key = (id(rs), tuple(present.values()))  # the config, and so rs, outlives the engine
        part = self._parts.get(key)
        if part is not None:
            return part
        if rs.relation == "and":
            part = set_entries("and", self._compiler.items(rs, present, outline=True), self._ref)
            self._parts[key] = part
            return part
        if self._pos is None:
            self._ref_positions()
        assert self._pos is not None
        env = self.options.environment

        def gate(f, here: bool) -> Any:
            # gate_of(compiler.outline(f, here)): {} (never acts) for an absent field or a
            # failed expansion, else the literals of the folded value (None: ungated)
            if not here:
                return {}
            value = f.value if env is None else expand_environment(f.value, env)
            if value is None:
                return {}
            pats = literals(f.condition, fold(value))
            if pats is None:
                return None
            return {f.field: pats} if pats else {}

        filters = rs.filters
        part = []
        si = self._pos[id(filters[0])][0] if filters else 0
        i, n = 0, len(filters)
        while i < n:
            f = filters[i]
            agg = f.aggregate
            if agg:
                j = i
                while j < n and filters[j].aggregate == agg:
                    j += 1
                relation = rs.aggregates[agg].relation
                group = filters[i:j]
                here = [present[m.field] for m in group]
                gates = [gate(m, h) for m, h in zip(group, here, strict=True)]
                g = group_effect_gate(relation, gates, [m.name for m in group])
                if g is None or g:
                    refs = tuple((si, k, h) for k, h in zip(range(i, j), here, strict=True))
                    part.append((g, ("g", relation, refs)))
                i = j
                continue
            g = gate(f, present[f.field])
            if g is None or g:
                part.append((g, ("f", (si, i, True))))
            i += 1
        self._parts[key] = part
        return part

    def _ref_positions(self) -> None:
        """Fill ``_pos``: id of each filter -> (rule set index, filter index) in the config."""
        assert self.config is not None
        self._pos = {id(f): (si, fi) for si, rs in enumerate(self.config.rule_sets)
                     for fi, f in enumerate(rs.filters)}

    def _member(self, ref: tuple) -> Member:
        """The member a :meth:`_ref` reference names (compiled on first use, then shared)."""
        assert self.config is not None
        si, fi, present = ref
        return self._compiler.member(self.config.rule_sets[si].filters[fi], present)

    def _check_refs(self, plan: tuple) -> None:
        """Raise ValueError unless every member reference of ``plan`` names a filter of the
        config (a stored plan is used only then)."""
        assert self.config is not None
        sizes = [len(rs.filters) for rs in self.config.rule_sets]
        refs: list = []
        add, extend = refs.append, refs.extend
        for spec in plan[4]:
            kind = spec[0]
            if kind == "f":
                add(spec[1])
            elif kind == "g":
                extend(spec[2])
            elif kind == "s":
                for it in spec[2]:
                    if it[0] == "g":
                        extend(it[2])
                    else:
                        add(it[1])
            else:
                raise ValueError(f"bad item {kind!r}")
        n = len(sizes)
        for ref in refs:
            # a 3-tuple (rule set index, filter index, present) inside the config
            if (ref.__class__ is not tuple or len(ref) != 3 or ref[2].__class__ is not bool
                    or ref[0].__class__ is not int or ref[1].__class__ is not int
                    or not 0 <= ref[0] < n or not 0 <= ref[1] < sizes[ref[0]]):
                raise ValueError(f"bad member reference {ref!r}")

    def _decider(self, eid: int) -> Optional[Callable[[dict], tuple[bool, Optional[str]]]]:
        """The decider of ``eid``, compiled on first use (``None``: not an EventID of the
        catalogue)."""
        d = self._deciders.get(eid)
        if d is not None:
            return d
        ev = CURRENT.events.get(eid)
        if ev is None:
            return None
        with self._lock:
            d = self._deciders.get(eid)
            if d is None:
                d = self._compile_event(eid, ev)
                if eid == 201:
                    d = _keeping_config_weakened(d)
                self._deciders[eid] = d
        return d

    def _ordered_sets(self, tag: str) -> list[RuleSet]:
        """The rule sets of ``tag`` in evaluation order (spec 3.2): exclude sets, then include
        sets, each in reverse document order."""
        sets = self._by_tag.get(tag, [])
        return ([rs for rs in reversed(sets) if rs.onmatch == "exclude"]
                + [rs for rs in reversed(sets) if rs.onmatch == "include"])

    def _default_include(self, eid: int, default: str) -> bool:
        if self.options.no_rule_defaults == "community" and eid in (2, 6):
            return True
        return default == "include"

    def _compile_event(self, eid: int, ev) -> Callable[[dict], tuple[bool, Optional[str]]]:
        if eid in NEVER_FILTERED or ev.tag is None:
            return _constant_decider((True, None))
        sets: list[RuleSet] = self._by_tag.get(ev.tag, [])
        if not sets:
            return _constant_decider((self._default_include(eid, ev.default), "-"))
        ordered = ([rs for rs in reversed(sets) if rs.onmatch == "exclude"]
                   + [rs for rs in reversed(sets) if rs.onmatch == "include"])
        if len(sets) == 1:
            fallback = sets[0].default == "include"
        elif self.options.fallback == "intent":
            fallback = all(rs.onmatch == "exclude" for rs in sets)
        else:
            fallback = False
        fields = self._tag_fields.get(ev.tag)
        if fields is None:
            fields = self._tag_fields[ev.tag] = tuple(sorted({f.field for rs in sets
                                                              for f in rs.filters}))
        rule_name_used = "RuleName" in fields
        stale = self.options.stale_rulename
        present = [self._compiler.present(rs, eid) for rs in ordered]
        # the ids of a multi-id tag where the same fields are present decide alike
        key = (ev.tag, tuple(tuple(sorted(p.items())) for p in present))
        shared = self._shared.get(key)
        if shared is not None:
            return shared
        if self.options.indexed:
            decider = None
            plan = self._stored_plans.get(key)
            if plan is not None:
                try:
                    self._check_refs(plan)
                    decider = decider_from_plan(plan, self._member, self.memo)
                except Exception as exc:  # noqa: BLE001 - a plan that does not fit: compile
                    where = self._plan_cache.entry(self._plan_key) \
                        if self._plan_cache is not None and self._plan_key else "?"
                    self._notes([f"filter plan cache entry {where} ignored and rebuilt: "
                                 f"{exc!r}"])
                    self._stored_plans = {}
                    decider = None
            if decider is None:
                plan = assemble_plan([(rs.onmatch == "include", self._plan_part(rs, p))
                                      for rs, p in zip(ordered, present, strict=True)],
                                     fields, rule_name_used, fallback, stale)
                decider = decider_from_plan(plan, self._member, self.memo)
                if self._plan_cache is not None:
                    self._new_plans[key] = plan
            self._shared[key] = decider
            return decider
        compiled = [(rs.onmatch == "include", rs.relation, self._compiler.items(rs, p))
                    for rs, p in zip(ordered, present, strict=True)]
        walks = tuple((include, compile_walk(relation, items))
                      for include, relation, items in compiled)

        def decide(data: dict) -> tuple[bool, Optional[str]]:
            lv = {}
            for f in fields:
                v = data.get(f)
                lv[f] = (v.lower() if v.isascii() else fold(v)) if v else "-"
            if rule_name_used:
                lv["RuleName"] = "-"  # Sysmon fills RuleName after filtering (spec 4.3)
            current = None
            for include, match in walks:
                ok, name = match(lv)
                if stale:
                    if name is not None:
                        current = name
                elif ok:
                    current = name
                if ok:
                    return include, current or "-"
            return fallback, "-"
        self._shared[key] = decide
        return decide

    def decide(self, event_id: int, data: dict) -> tuple[bool, Optional[str]]:
        """Decide one event: see the class docstring. ``data`` maps field names to strings."""
        d = self._deciders.get(event_id) or self._decider(event_id)
        if d is None:
            return True, None
        return d(data)

    def decider_for(self, event_id: int) -> Callable[[dict], tuple[bool, Optional[str]]]:
        """The compiled decision function of one EventID (for hot loops; compiled now if it
        was not yet)."""
        return self._deciders.get(event_id) or self._decider(event_id) or _pass

    def apply_field_sizes(self, event_id: int, data: dict) -> dict:
        """Return ``data`` with FieldSizes truncation applied (a new dict if anything changed).

        Runs after filtering, on output only (spec 3.9)."""
        if not self.field_sizes or event_id == self._truncate_skip or (
                event_id == 201 and never_filtered(event_id, data)):
            return data
        out = None
        for name, size in self.field_sizes.items():
            v = data.get(name)
            if v is not None and utf16_len(v) > size:
                if out is None:
                    out = dict(data)
                out[name] = truncate_value(v, size)
        return out if out is not None else data
