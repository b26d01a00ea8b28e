"""The event catalogue as data, and the schema each Sysmon schema version defines.

==============  ===========================================================================
module          what it holds
==============  ===========================================================================
``catalogue``   events 1-29 and 255, ordered fields with manifest types, tags, options,
                conditions, each with the schema version that introduced or removed it;
                SysmonX's own events (``extension=True`` entries, in blocks) and the
                enrichment fields
``snapshot``    :func:`get_schema` (the snapshot a config of one ``schemaversion`` is
                validated against), :data:`CURRENT`, :func:`extended` / :func:`sysmon_only`
                (extensions on / off), :func:`positional_names`
``printer``     ``-s [version|all]`` and ``-? config``
==============  ===========================================================================
"""

from __future__ import annotations

from .snapshot import (BOOLEAN, CONDITIONS, CURRENT, GUID, HEXINT32, HEXINT64, LATEST, OLDEST,
                       STRING, UINT16, UINT32, EventDef, EventSchema, FieldDef, OptionDef, Schema,
                       SchemaVersionError, Version, all_versions, event_schema, format_version,
                       enrichment_tags, extended, get_schema, parse_version, positional_names,
                       sysmon_only)

__all__ = [
    "EventSchema", "Schema", "SchemaVersionError", "get_schema", "CURRENT", "LATEST", "OLDEST",
    "parse_version", "format_version", "CONDITIONS", "FieldDef", "OptionDef", "EventDef",
    "STRING", "GUID", "UINT32", "UINT16", "BOOLEAN", "HEXINT32", "HEXINT64", "event_schema",
    "positional_names", "all_versions", "Version", "extended", "sysmon_only",
    "enrichment_tags",
]
