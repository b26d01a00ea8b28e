"""JSON exports of other collectors: winlogbeat, nxlog, Azure Sentinel, Security-Datasets' flat
exporter and evtx-crate (``evtx_dump``) JSON. SysmonX's own JSON lines are read by
:mod:`sysmonx.sources.jsonl`.

Shapes (``--input-format`` names), each detected from the first JSON object of a file
(:func:`detect_json`, :func:`classify`):

``winlogbeat``
    6.x: top-level ``event_id``, ``source_name``, ``log_name``, ``computer_name``,
    ``record_number`` (string), ``event_data`` / ``user_data``, ``level`` / ``opcode`` / ``task``
    names, ``user.identifier``, ``process_id`` / ``thread_id``. 7.x and 8.x: the same under
    ``winlog`` (``winlog.event_id`` is an integer in 7, a string in 8; ``winlog.provider_name``,
    ``winlog.channel``, ``winlog.computer_name``, ``winlog.record_id``, ``winlog.event_data``,
    ``winlog.process.pid`` / ``thread.id``, ``log.level``). Time: ``@timestamp`` (winlogbeat sets
    it to the record's TimeCreated, milliseconds). Both layouts may be mixed in one file.
``nxlog``
    ``im_msvistalog`` records as ``to_json()`` writes them (often through Logstash): flat keys
    ``EventID``, ``SourceName``, ``Channel``, ``Hostname``, ``RecordNumber``, ``EventTime``,
    ``EventReceivedTime``, ``Keywords`` (signed integer), ``OpcodeValue``, ``ProcessID`` /
    ``ExecutionProcessID``, ``ThreadID``, ``UserID``, ... and the EventData fields flat beside them.
``sentinel``
    Azure Sentinel / Log Analytics rows: ``Event`` (``Source``, ``EventLog``, ``EventData`` an XML
    string ``<DataItem><EventData><Data Name=..>``) and ``WindowsEvent`` (``Provider``,
    ``Channel``, ``EventData`` a JSON string or object) tables, and the ``Syslog`` table whose
    ``SyslogMessage`` holds a Sysmon for Linux ``<Event>`` XML document (its System part gives
    the header; rows without an event become ``event_id`` 0 records of provider ``ProcessName``).
``flatjson``
    Security-Datasets' flat exporter: ``EventID``, ``SourceName``, ``Channel``, ``Hostname``,
    ``TimeCreated``, ``Task``, ``Level``, ``Keywords``, ``ProviderGuid``, ``@timestamp``,
    ``Message`` and the EventData fields flat.
``evtxjson``
    evtx-crate JSON (``evtx_dump -o json`` / ``jsonl``, pyevtx-rs ``records_json``):
    ``{"Event": {"System": {...}, "EventData": {...}}}`` objects, pretty-printed or one per line,
    with or without ``Record N`` header lines; converted exactly as the EVTX reader does.

One module per shape (``winlogbeat``, ``nxlog``, ``sentinel``, ``flatjson``, ``evtxjson``), each
with its record converter and its registered :class:`~.common.ShapeFormat`; what they share is in
:mod:`.common`.

Every shape may be one object per line, pretty-printed objects one after another, or a JSON
array of objects (:func:`iter_objects`); a UTF-8 byte-order mark is skipped.

Values come out as Sysmon renders them in event XML, so the same filters match as on the EVTX:
strings unchanged, numbers in decimal, booleans ``true``/``false``, ``null`` as ``""``, GUID
fields of Sysmon events ``{lower-case}``. For Sysmon events the fields are put in Sysmon's order
(the schema's), and fields the exporter dropped or clobbered are taken back from the rendered
``Message`` when it agrees with every field the record kept (winlogbeat leaves out empty values,
e.g. ``RuleName``; nxlog's field names are case-insensitive, so its ``ProcessID`` / ``EventType``
/ ``Version`` overwrite Sysmon's ``ProcessId`` / ``EventType`` / ``Version``). Message values of
``win:HexInt`` fields are lower-cased, as XML shows them. nxlog leaves EventData values
XML-escaped (``&lt;Anonymous Pipe&gt;``): they are unescaped. Sentinel's ``WindowsEvent`` table
re-renders date-like strings as ISO datetimes: Sysmon ``*UtcTime`` fields are put back in
Sysmon's ``YYYY-MM-DD HH:MM:SS.mmm``.

Time is the record's System time, normalised to UTC (never event data such as ``UtcTime``):
``@timestamp`` (winlogbeat), ``EventTime`` (nxlog), ``TimeCreated`` / ``TimeGenerated``
(Sentinel), ``TimeCreated`` (flat). Times without a zone are local times of the collector:
nxlog's ``EventTime`` is corrected by the zone offset between ``EventReceivedTime`` (local) and
Logstash's ``@timestamp`` (UTC), rounded to 15 minutes; a zone-less flat ``TimeCreated`` is
replaced by ``@timestamp`` when there is one, else taken as UTC (nothing tells the offset).

Lost on the way (the exports do not carry it; found by comparing with the EVTX or the message):
sub-millisecond time digits (winlogbeat, Sentinel, flat) or sub-second ones (nxlog); numeric
Level / Task / Opcode where only their names are exported (Level names are mapped back, Sysmon's
Task is its event id, other providers' stay ``None``); Keywords given as names (Sysmon's constant
is used); Version, EventRecordID and Execution ids where absent (flat, Sentinel Event table);
white space values the flat exporter turned into ``null`` (read as ``""``); values an exporter
trimmed (the SigmaHQ evtx-crate renderings trim trailing white space). Sentinel's ``WindowsEvent``
``Task`` column is taken as found even where it is not Sysmon's (``1`` for every event in the
corpus). Times of the flat exporter without a zone and without ``@timestamp`` are local times of
an unknown zone, taken as UTC.

Records of other providers are yielded too, with provider and channel as found and all their
non-header keys as data. Malformed lines (not JSON, not an object, no numeric event id, a bad
time) are reported as one :class:`~sysmonx.sources.ReadError` each (line number) and skipped.
``Event.origin`` is ``(path, line of the object's first line)``.
"""

from __future__ import annotations

from .common import (SHAPES, ShapeFormat, classify, convert, detect_json, iter_objects,
                     read_json_shape, read_json_shape_stream)

__all__ = ["SHAPES", "read_json_shape", "read_json_shape_stream", "iter_objects", "classify",
           "detect_json", "convert", "ShapeFormat"]
