"""The configuration model: options and rule sets, as Sysmon compiles them.

Shapes follow Sysmon's compiled model (spec/sysmon-semantics.md section 3.1): one
:class:`RuleSet` per event-tag element in document order, each with an ordered list of
:class:`Filter`; filters that came from one ``<Rule>`` share an aggregate id.

The model sits below both the reader that builds it (:mod:`sysmonx.config`) and the filter that
compiles it (:mod:`sysmonx.filtering`), so neither of those packages imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from .core.errors import ConfigError
from .schema import Schema, Version, format_version

__all__ = ["Config", "RuleSet", "Filter", "Aggregate", "ConfigWarning", "ConfigError",
           "size_text"]


@dataclass(frozen=True)
class ConfigWarning:
    """Something Sysmon accepts but that probably is not what the author meant, or an element
    Sysmon skips while still loading (spec 1.3, 1.6). ``str()`` gives ``path:line: message``."""

    message: str
    path: str
    line: Optional[int] = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: warning: {self.message}"


@dataclass(frozen=True)
class Aggregate:
    """A compound ``<Rule>``: ``relation`` is ``"and"`` or ``"or"`` (missing => or, spec 1.4),
    ``name`` its ``name`` attribute or ``None`` when absent, ``scanners`` the scanner names of
    its SysmonX ``scanners`` attribute (empty when absent)."""

    id: int
    relation: str
    name: Optional[str]
    line: Optional[int] = None
    scanners: tuple[str, ...] = ()


@dataclass(frozen=True)
class Filter:
    """One field filter.

    Attributes:
        field: Sysmon field name (case-sensitive), e.g. ``Image``.
        condition: canonical operator name (``is``, ``end with``, ... or the SysmonX ``regex``).
        value: rule value verbatim (no trimming, entities decoded; spec 1.1).
        name: RuleName after inheritance (own, else ``<Rule>``'s, else ``<RuleGroup>``'s, else
            ``""``; spec 3.6).
        aggregate: 0 for a top-level filter, else the id of its :class:`Aggregate`.
        line: source line.
        scanners: scanner names of its SysmonX ``scanners`` attribute (empty when absent): when
            this filter matches an event its rule set includes, they run on the event's process.
    """

    field: str
    condition: str
    value: str
    name: str = ""
    aggregate: int = 0
    line: Optional[int] = None
    scanners: tuple[str, ...] = ()


@dataclass
class RuleSet:
    """One event-tag element (``<ProcessCreate onmatch="exclude">`` ...).

    Attributes:
        tag: event tag, e.g. ``RegistryEvent``.
        event_id: the id the element is bound to (first id of the tag whose fields contain every
            field used, spec 1.5).
        onmatch: ``include`` or ``exclude``.
        relation: top-level combine type, ``and`` or ``or`` (spec 1.3).
        filters: ordered filters.
        aggregates: aggregate id -> :class:`Aggregate`.
        group_name: enclosing ``RuleGroup`` name attribute, or ``None``.
        line: source line of the tag element.
        scanners: scanner names of the tag's SysmonX ``scanners`` attribute (empty when
            absent): they run on the process of every event this set includes (an include set:
            the events it matches; an exclude set: the events of its tag it lets through).
    """

    tag: str
    event_id: int
    onmatch: str
    relation: str
    filters: list[Filter] = field(default_factory=list)
    aggregates: dict[int, Aggregate] = field(default_factory=dict)
    group_name: Optional[str] = None
    line: Optional[int] = None
    scanners: tuple[str, ...] = ()

    @property
    def default(self) -> str:
        """Sysmon's internal default of the set: ``exclude`` for onmatch=include and vice versa."""
        return "exclude" if self.onmatch == "include" else "include"


@dataclass
class Config:
    """A loaded configuration.

    Attributes:
        path: file it came from (``<string>`` for text), ``sha256``: hex digest of its bytes (as
            event 16's ``ConfigurationFileHash`` reports it).
        schema_version: requested ``(major, minor)``; ``schema``: the schema the file was validated
            against.
        options: configuration entries, element name -> text (``""`` for an empty element);
            ``hash_algorithms`` parsed list (upper case, Sysmon order), ``field_sizes`` field -> N.
            SysmonX's own entries (``Schema.extension_entries``) are in ``options`` too (the
            text as written; ``YaraRules`` made relative to the config file's folder).
        heartbeat_interval: the SysmonX ``<HeartbeatInterval>`` in seconds (``0.0``: no
            heartbeats), ``None`` when the config does not set it (the sensor's default or
            ``--heartbeat`` applies).
        rule_sets: in document order.
        warnings: non-fatal findings.
    """

    path: str
    sha256: str
    schema_version: Version
    schema: Schema
    options: dict[str, str] = field(default_factory=dict)
    hash_algorithms: list[str] = field(default_factory=list)
    field_sizes: dict[str, int] = field(default_factory=dict)
    heartbeat_interval: Optional[float] = None
    rule_sets: list[RuleSet] = field(default_factory=list)
    warnings: list[ConfigWarning] = field(default_factory=list)

    @property
    def schema_version_text(self) -> str:
        """``"4.90"``."""
        return format_version(self.schema_version)

    def rule_sets_for_tag(self, tag: str) -> list[RuleSet]:
        """Rule sets of one tag in document order."""
        return [rs for rs in self.rule_sets if rs.tag == tag]

    def enrichment_fields_used(self) -> frozenset[str]:
        """Names of the SysmonX enrichment fields (``GrandparentImage`` ...) the rule sets
        filter on: when not empty, the run adds the enrichment stage before the filter."""
        from .schema.catalogue import ENRICHMENT_FIELD_NAMES
        return frozenset(f.field for rs in self.rule_sets for f in rs.filters
                         if f.field in ENRICHMENT_FIELD_NAMES)

    def tags_used(self) -> frozenset[str]:
        """Event tags that have at least one rule set (what a live sensor must collect for the
        events that are off unless a config asks for them)."""
        return frozenset(rs.tag for rs in self.rule_sets)

    @property
    def requests_scans(self) -> bool:
        """True when a rule set, ``<Rule>`` or filter carries a ``scanners`` attribute."""
        return any(rs.scanners or any(f.scanners for f in rs.filters)
                   or any(a.scanners for a in rs.aggregates.values()) for rs in self.rule_sets)


def size_text(rule_sets: Sequence[Any]) -> str:
    """``"12 rule sets, 1,914 filters"`` (``"1 rule set, 1 filter"``) for a config's
    ``rule_sets`` (objects with a ``filters`` list): the size the CLI and the sensor's status
    lines give."""
    n = len(rule_sets)
    f = sum(len(r.filters) for r in rule_sets)
    return (f"{n:,} rule set{'' if n == 1 else 's'}, {f:,} filter{'' if f == 1 else 's'}")
