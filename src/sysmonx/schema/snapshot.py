"""Schema snapshots per Sysmon schema version, built from :mod:`sysmonx.schema.catalogue`.

``get_schema("4.50")`` returns what a 4.50 configuration may use (events, tags, fields, options,
conditions); :data:`CURRENT` is the newest schema, whose event definitions the filter engine and
writers always use, as Sysmon does ("event/field definitions used for compiling are always the
current binary's (only the DTD varies)", spec/sysmon-semantics.md section 1.7).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

from ..core.errors import SchemaError
from .catalogue import (
    BOOLEAN, CONDITION_MANIFEST_ORDER, CONDITION_SINCE, CONDITIONS, EVENTS, GUID, HEXINT32, HEXINT64,
    LEVEL_VALUES, OPTIONS, SCHEMA_VERSIONS, STRING, UINT16, UINT32, EventDef, FieldDef, OptionDef, Version,
    format_version, parse_version,
)

__all__ = [
    "EventSchema", "Schema", "SchemaVersionError", "get_schema", "CURRENT", "LATEST", "OLDEST",
    "parse_version", "format_version", "CONDITIONS", "FieldDef", "OptionDef", "EventDef",
    "STRING", "GUID", "UINT32", "UINT16", "BOOLEAN", "HEXINT32", "HEXINT64", "event_schema",
    "positional_names",
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


@lru_cache(maxsize=None)
def _build(v: Version) -> Schema:
    binary = dict(SCHEMA_VERSIONS)[v]
    events = {}
    for defn in EVENTS:
        if _present(defn.since, defn.until, v):
            events[defn.event_id] = _snapshot(defn, v)
    tags: dict[str, list[int]] = {}
    tag_fields: dict[str, set[str]] = {}
    for e in events.values():
        if e.tag:
            tags.setdefault(e.tag, []).append(e.event_id)
            tag_fields.setdefault(e.tag, set()).update(e.field_names)
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
    all_fields = frozenset(n for e in events.values() if e.tag for n in e.field_names)
    return Schema(v, binary, events, {k: tuple(x) for k, x in tags.items()}, options, conditions,
                  frozenset(entries), {k: frozenset(x) for k, x in tag_fields.items()}, all_fields,
                  extension_options, frozenset(o.name for o in extension_options))


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


def all_versions() -> list[Version]:
    """Every published 4.x schema version, oldest first."""
    return [v for v, _ in SCHEMA_VERSIONS]


CURRENT: Schema = _build(LATEST)


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
