"""Schema snapshots per Sysmon schema version, built from :mod:`sysmonx.schema.catalogue`.

``get_schema("4.50")`` returns what a 4.50 configuration may use (events, tags, fields, options,
conditions); :data:`CURRENT` is the newest schema, whose event definitions the filter engine and
writers always use, as Sysmon does ("event/field definitions used for compiling are always the
current binary's (only the DTD varies)", spec/sysmon-semantics.md section 1.7).

The extension events (catalogue entries with ``extension=True``: 100, 200-202, 210-213, 220, 1000)
are in every snapshot, so a config of any schema version may filter them; manifest rendering
and comparisons leave them out unless asked. Two views per version: :func:`extended` (plus the
enrichment fields: configs with extensions on) and :func:`sysmon_only` (without the extension
events: configs with extensions off, exactly Sysmon's grammar).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

from ..core.errors import SchemaError
from .catalogue import (
    BOOLEAN, CONDITION_MANIFEST_ORDER, CONDITION_SINCE, CONDITIONS, ENRICHMENT_FIELDS, EVENTS,
    GUID, HEXINT32, HEXINT64, LEVEL_VALUES, OPTIONS, SCHEMA_VERSIONS, STRING, UINT16, UINT32,
    EventDef, FieldDef, OptionDef, Version,
    format_version, parse_version,
)

__all__ = [
    "EventSchema", "Schema", "SchemaVersionError", "get_schema", "CURRENT", "LATEST", "OLDEST",
    "parse_version", "format_version", "CONDITIONS", "FieldDef", "OptionDef", "EventDef",
    "STRING", "GUID", "UINT32", "UINT16", "BOOLEAN", "HEXINT32", "HEXINT64", "event_schema",
    "positional_names", "extended", "sysmon_only", "enrichment_tags",
]

LATEST: Version = SCHEMA_VERSIONS[-1][0]
OLDEST: Version = SCHEMA_VERSIONS[0][0]


class SchemaVersionError(SchemaError):
    """A schemaversion that no 4.x Sysmon accepts (spec section 1.6: below 4.0 or malformed), or
    newer than the newest schema SysmonX knows."""


def _present(since: Optional[Version], until: Optional[Version], v: Version) -> bool:
    return (since is None or since <= v) and (until is None or v < until)


@dataclass(frozen=True, slots=True)
class EventSchema:
    """One event type as a given schema version defines it.

    ``fields`` is ordered (manifest order); ``field_names`` the names alone; ``index`` maps a
    field name to its 0-based position (the position Sysmon's filter checks, spec 1.5).
    """

    event_id: int
    symbol: str
    template: str
    tag: Optional[str]
    version: int
    level: str
    default: str
    default_attr: bool
    fields: tuple[FieldDef, ...]
    field_names: tuple[str, ...]
    index: dict
    extension: bool = False
    sigma_category: Optional[str] = None

    @property
    def level_value(self) -> int:
        """System/Level: 4 (Informational), 3 (Warning) or 2 (Error)."""
        return LEVEL_VALUES.get(self.level, 4)

    @property
    def filterable(self) -> bool:
        """False for 4, 16, 255 (never filtered, spec 3.7)."""
        return self.tag is not None


@dataclass(frozen=True)
class Schema:
    """Everything one schema version accepts.

    Attributes:
        version: ``(4, 90)``; ``binary_version``: manifest binaryversion string.
        events: event id -> :class:`EventSchema`, in manifest order (255 first).
        tags: config event tag -> event ids it covers, in manifest order (e.g. RegistryEvent ->
            (12, 13, 14)).
        options: manifest options of this version (Sysmon's only).
        conditions: operator names this version's manifest lists.
        config_entries: element names legal directly under ``<Sysmon>`` besides EventFiltering
            (spec 1.2).
        tag_fields: tag -> union of the field names of its events (the DTD content of the tag).
        all_fields: union of all fields of all events (the DTD content of ``<Rule>``).
        extension_options: SysmonX's own configuration entries (catalogue options with
            ``extension=True``: ``HeartbeatInterval``, ``YaraRules``), present in every version;
            in no Sysmon manifest, so never in ``options`` or ``config_entries``.
        extension_entries: their element names.
    """

    version: Version
    binary_version: str
    events: dict
    tags: dict
    options: tuple
    conditions: tuple
    config_entries: frozenset
    tag_fields: dict
    all_fields: frozenset
    extension_options: tuple = ()
    extension_entries: frozenset = frozenset()

    @property
    def version_text(self) -> str:
        """``"4.90"``."""
        return format_version(self.version)


def _snapshot(defn: EventDef, v: Version) -> EventSchema:
    fields = tuple(f for f in defn.fields if _present(f.since, None, v))
    template, version = defn.template, defn.version
    for before, values in defn.history:
        if v < before:
            template = values.get("template", template)
            version = values.get("version", version)
    names = tuple(f.name for f in fields)
    return EventSchema(defn.event_id, defn.symbol, template, defn.tag, version, defn.level,
                       defn.default, defn.default_attr, fields, names,
                       {n: i for i, n in enumerate(names)}, defn.extension, defn.sigma_category)


def _assemble(v: Version, events: dict[int, EventSchema],
              extra_fields: Optional[dict[str, frozenset[str]]] = None) -> Schema:
    """A :class:`Schema` of version ``v`` over ``events``: tags, tag fields and ``<Rule>``
    fields derived from them (plus ``extra_fields`` per tag), options, conditions, entries."""
    binary = dict(SCHEMA_VERSIONS)[v]
    tags: dict[str, list[int]] = {}
    tag_fields: dict[str, set[str]] = {}
    for e in events.values():
        if e.tag:
            tags.setdefault(e.tag, []).append(e.event_id)
            tag_fields.setdefault(e.tag, set()).update(e.field_names)
    for tag, names in (extra_fields or {}).items():
        tag_fields[tag].update(names)
    options = tuple(o for o in OPTIONS if not o.extension and _present(o.since, o.until, v))
    extension_options = tuple(o for o in OPTIONS if o.extension and _present(o.since, o.until, v))
    conditions = tuple(c for c in CONDITION_MANIFEST_ORDER
                       if CONDITION_SINCE.get(c, (0, 0)) <= v)
    entries = set()
    for o in options:
        if o.noconfig or o.internal:
            continue
        if o.rule:
            if o.forceconfig:
                entries.add(o.name + "Config")
            continue
        entries.add(o.name)
    all_fields = frozenset(n for fs in tag_fields.values() for n in fs)
    return Schema(v, binary, events, {k: tuple(x) for k, x in tags.items()}, options, conditions,
                  frozenset(entries), {k: frozenset(x) for k, x in tag_fields.items()}, all_fields,
                  extension_options, frozenset(o.name for o in extension_options))


@lru_cache(maxsize=None)
def _build(v: Version) -> Schema:
    return _assemble(v, {defn.event_id: _snapshot(defn, v) for defn in EVENTS
                         if _present(defn.since, defn.until, v)})


def get_schema(version: "str | Version") -> Schema:
    """Return the schema a configuration of the given ``schemaversion`` is validated against.

    Selection follows Sysmon (spec section 1.7): the newest published version not above the
    requested one, so ``4.24`` uses 4.23 and ``4.2`` is 4.20.

    Args:
        version: ``"4.90"`` or ``(4, 90)``.
    Raises:
        SchemaVersionError: malformed, below 4.0 (``Incorrect or unsupported schema version``),
            or above the newest known schema (Sysmon 14 likewise rejects 4.90 configs).
    """
    if isinstance(version, str):
        try:
            v = parse_version(version)
        except ValueError as exc:
            raise SchemaVersionError(str(exc)) from None
    else:
        v = version
    if v < OLDEST:
        raise SchemaVersionError(
            f"Incorrect or unsupported schema version {format_version(v)}. "
            f"Current Sysmon schema version {format_version(OLDEST)}")
    if v > LATEST:
        raise SchemaVersionError(
            f"Unsupported schema version {format_version(v)}: newest supported is "
            f"{format_version(LATEST)}")
    chosen = max(sv for sv, _ in SCHEMA_VERSIONS if sv <= v)
    return _build(chosen)


_PROCESS_FIELDS = frozenset({"ProcessGuid", "SourceProcessGuid", "SourceProcessGUID"})


def enrichment_tags(schema: Schema) -> frozenset[str]:
    """Tags whose events name an acting process (a ``ProcessGuid``, or ``SourceProcessGuid`` /
    ``SourceProcessGUID``): the tags the enrichment fields may be filtered in."""
    return frozenset(e.tag for e in schema.events.values()
                     if e.tag and _PROCESS_FIELDS & set(e.field_names))


@lru_cache(maxsize=None)
def _extended(v: Version) -> Schema:
    base = _build(v)
    extra = {tag: frozenset(f.name for f in ENRICHMENT_FIELDS if f.tags is None or tag in f.tags)
             for tag in enrichment_tags(base)}
    return _assemble(v, dict(base.events), extra)


def extended(schema: Schema) -> Schema:
    """``schema`` with the SysmonX enrichment fields (catalogue ``ENRICHMENT_FIELDS``:
    ``GrandparentImage`` ...) added to every tag :func:`enrichment_tags` names: what a config
    with extensions enabled is validated against. Events are the same objects as
    ``schema``'s (the extension events are in every snapshot already). Cached per version."""
    return _extended(schema.version)


@lru_cache(maxsize=None)
def _sysmon_only(v: Version) -> Schema:
    return _assemble(v, {i: e for i, e in _build(v).events.items() if not e.extension})


def sysmon_only(schema: Schema) -> Schema:
    """``schema`` without the extension events (catalogue entries with ``extension=True``),
    their tags and fields: exactly what Sysmon itself accepts for that version, what a config
    with extensions disabled (``--no-extensions``) is validated against. Cached per version.
    ``extension_options`` stay listed (never in ``config_entries``), so the reader can name a
    SysmonX entry when it refuses one."""
    return _sysmon_only(schema.version)


def all_versions() -> list[Version]:
    """Every published 4.x schema version, oldest first."""
    return [v for v, _ in SCHEMA_VERSIONS]


CURRENT: Schema = _build(LATEST)
"""The newest schema, SysmonX's extension events included (what the filter, the sensor and the
writers use)."""


def event_schema(event_id: int) -> Optional[EventSchema]:
    """The newest definition of ``event_id``, or ``None`` for an ID Sysmon does not define."""
    return CURRENT.events.get(event_id)


@lru_cache(maxsize=512)
def positional_names(event_id: int, version: Optional[int], count: int
                     ) -> Optional[tuple[str, ...]]:
    """The field names of a Sysmon event whose ``count`` EventData values came without names
    (``<Data>`` without ``Name``: forwarded or re-exported events), by position, as Event Viewer
    assigns them from the manifest template of the event's ``System/Version``.

    Every schema version in which event ``event_id`` has template version ``version`` is
    considered; the names are returned when exactly one field list of ``count`` names fits.

    Returns:
        the names in order, or ``None`` when the event, its version or the count is unknown or
        ambiguous (the caller then keeps the values unnamed and says so).
    """
    if version is None:
        return None
    fits = set()
    for v in all_versions():
        ev = _build(v).events.get(event_id)
        if ev is not None and ev.version == version and len(ev.field_names) == count:
            fits.add(ev.field_names)
    return fits.pop() if len(fits) == 1 else None
