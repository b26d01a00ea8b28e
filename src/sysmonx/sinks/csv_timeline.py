"""CSV timeline: one row per event, columns for Timeline Explorer and spreadsheets.

Columns (one header row, then one row per event)::

    TimeCreated,Computer,Provider,Channel,EventID,EventName,RecordID,ProcessId,Image,
    CommandLine,ParentImage,User,Details,RuleName,EventData

``TimeCreated``
    the record's System time in UTC, ISO 8601 with 7 fractional digits and ``Z``
    (``2019-04-18T16:55:37.1251390Z``, the Windows resolution, as the Windows XML writer writes
    it; .NET tools such as Timeline Explorer parse at most 7 digits). Empty for a record
    without a time.
``Computer``, ``Provider``, ``Channel``, ``EventID``, ``RecordID``
    System values (``RecordID`` is ``EventRecordID``; ``Channel`` empty for a record without
    one). For a Sigma alert (SysmonX event 1000, provider ``SysmonX``) ``Channel`` and
    ``RecordID`` are those of the record the alert is about, as Hayabusa's timelines give them
    (the alert's ``Channels`` and ``RecordIds`` fields: ``Microsoft-Windows-Sysmon/Operational``
    and ``1339``; a correlation's list its records, comma-separated). ``Channel`` is decoded:
    a channel name holding ``,`` or ``%``, which ``Channels`` writes ``%2C`` / ``%25``, is
    written as it is (``Custom,Trace/Operational``); a correlation over such a channel and
    another is then ambiguous in this column, and the row's ``EventData`` keeps the encoded
    ``Channels``, which is not. The alert's own number in
    ``SysmonX/Alerts`` is its place in the output (alerts are numbered from 1 in stream order).
``EventName``
    the Sysmon event's name in the current schema: its config tag (``ProcessCreate``,
    ``NetworkConnect``, ``RegistryEvent`` ...), or for the events without one Sysmon's own
    symbol for it in CamelCase (event 4 ``ServiceStateChange``, 16
    ``ServiceConfigurationChange``, 255 ``Error``: ``SYSMONEVENT_SERVICE_STATE_CHANGE`` ...);
    ``SigmaAlert`` for a Sigma alert; empty for records of other providers.
``ProcessId``, ``Image``, ``User``
    the EventData fields of that name, else ``SourceProcessId`` / ``SourceImage`` /
    ``SourceUser`` (events 8 and 10), else empty.
``CommandLine``, ``ParentImage``, ``RuleName``
    the EventData fields of that name, or empty; for a Sigma alert ``RuleName`` is the rule's
    title (``RuleTitle``).
``Details``
    a compact summary of the object of the event (:func:`details`): network events
    ``tcp 10.0.0.5:49713 -> 93.184.216.34:443 (example.com)``; registry value sets
    ``TargetObject = Details``; renames ``TargetObject -> NewName``; otherwise the first present of
    ``TargetFilename``, ``TargetObject``, ``QueryName``, ``ImageLoaded``, ``TargetImage``,
    ``PipeName``, ``Device``, ``Destination``, ``Query``, ``Consumer``, ``Filter``, ``Name``,
    ``Type``, ``State``, ``Configuration``; for Sysmon's error report (255) ``Description``;
    for SysmonX's TamperFinding (201) ``Technique: Details`` (``config_weakened: configuration
    SHA256=... collects less: ...``);
    for a Sigma alert (1000) its level and ATT&CK techniques, ``level high; T1003.002`` (the
    matched event's own row, after which the alert comes, has its details).
    Empty when none is present (process create and terminate: see ``CommandLine``).
``EventData``
    every EventData field, in order, as one JSON object (``{"RuleName":"-",...}``): the exact
    values, whatever they contain. Every character the display columns render as ``\\uXXXX``
    is written here as the JSON escape ``\\uXXXX`` of the same character (lone surrogates
    included), so a JSON parser gives the values back exactly and the cell holds no raw control
    or bidirectional character.

Safety, for a value that an attacker chose (a command line, a file name):

* RFC 4180 quoting by the :mod:`csv` module (``,``, ``"`` and line breaks inside quotes), CRLF
  row ends, so no value can forge a column or a row.
* The display columns (all but ``EventData``) are shown with :func:`sysmonx.textsafe.visible`:
  control characters (C0 except tab, including CR and LF; DEL; C1), the Unicode line separators,
  bidirectional overrides and marks (U+202E ...), lone surrogates and U+FFFE/U+FFFF are written
  as the text ``\\uXXXX``. So every event is exactly one physical line, nothing in a cell can
  drive a terminal that shows the file, and an RTL-override trick is visible in the timeline.
  Those cells are a display rendering; ``EventData`` holds the exact values.
* Formula neutralisation (OWASP "CSV injection"): a cell that starts with ``=``, ``+``, ``-``,
  ``@``, tab or CR is written with a ``'`` in front, so Excel, LibreOffice and Google Sheets
  show it as text instead of evaluating it. A cell that starts with ``'`` also gets one, so the
  rule is reversible (:func:`unneutralise` drops exactly one leading ``'``). The lone value
  ``-`` (Sysmon's "no value", e.g. ``RuleName``) is left as it is: it cannot be a formula.

UTF-8; ``bom=True`` puts a byte-order mark first so Excel opens the file as UTF-8.
"""

from __future__ import annotations

import csv
import io
import json
import re
from typing import BinaryIO

import orjson

from ..core.registry import SINKS
from ..event import SYSMON_PROVIDERS, Event, normalize_time, split_channels
from ..textsafe import CONTROL_CLASS, visible
from .base import Writer

__all__ = ["CsvTimelineWriter", "COLUMNS", "row", "details", "neutralise", "unneutralise"]

#: The header row.
COLUMNS = ("TimeCreated", "Computer", "Provider", "Channel", "EventID", "EventName", "RecordID",
           "ProcessId", "Image", "CommandLine", "ParentImage", "User", "Details", "RuleName",
           "EventData")

_FORMULA_START = frozenset("=+-@\t\r'")
_DETAIL_FIELDS = ("TargetFilename", "TargetObject", "QueryName", "ImageLoaded", "TargetImage",
                  "PipeName", "Device", "Destination", "Query", "Consumer", "Filter", "Name",
                  "Type", "State", "Configuration")

_names: dict = {}

#: SigmaAlert (sysmonx.detection.alerts, which this layer does not import): EventID, provider,
#: the name the schema and the docs give it.
ALERT_EVENT_ID = 1000
ALERT_PROVIDER = "SysmonX"
ALERT_EVENT_NAME = "SigmaAlert"
_CONTROL = re.compile("(?!\t)[" + CONTROL_CLASS + "]").search


def _event_name(event_id: int) -> str:
    name = _names.get(event_id)
    if name is None:
        from ..schema import CURRENT
        ev = CURRENT.events.get(event_id)
        name = (ev.tag or _camel(ev.symbol)) if ev is not None else ""
        _names[event_id] = name
    return name


def _camel(symbol: str) -> str:
    """``SYSMONEVENT_SERVICE_STATE_CHANGE`` -> ``ServiceStateChange`` (the event's symbol in
    Sysmon's schema without its ``SYSMONEVENT_`` / ``SYSMONXEVENT_`` prefix)."""
    base = symbol.split("EVENT_", 1)[1] if "EVENT_" in symbol else symbol
    return "".join(w.capitalize() for w in base.split("_") if w)


def neutralise(cell: str) -> str:
    """``cell`` with a ``'`` in front when it starts with ``= + - @``, tab, CR or ``'`` (except
    the lone value ``-``), so a spreadsheet does not evaluate it as a formula."""
    if cell and cell[0] in _FORMULA_START and cell != "-":
        return "'" + cell
    return cell


def unneutralise(cell: str) -> str:
    """Inverse of :func:`neutralise`: drop one leading ``'``."""
    return cell[1:] if cell[:1] == "'" else cell


def _pick(data: dict, *names: str) -> str:
    for name in names:
        v = data.get(name)
        if v:
            return v
    return ""


def details(e: Event) -> str:
    """The ``Details`` column of ``e`` (see the module docstring), before display rendering."""
    d = e.data
    if "DestinationIp" in d or "DestinationPort" in d:
        text = (f"{d.get('Protocol', '')} {d.get('SourceIp', '')}:{d.get('SourcePort', '')} -> "
                f"{d.get('DestinationIp', '')}:{d.get('DestinationPort', '')}").strip()
        host = d.get("DestinationHostname")
        return f"{text} ({host})" if host and host != "-" else text
    if "TargetObject" in d:
        if e.event_id == 13 and "Details" in d:
            return f"{d['TargetObject']} = {d['Details']}"
        if e.event_id == 14 and "NewName" in d:
            return f"{d['TargetObject']} -> {d['NewName']}"
    if e.event_id == 255:  # Sysmon error report
        return _pick(d, "Description", "ID")
    if e.event_id == 201 and "Technique" in d:  # SysmonX TamperFinding: what was seen
        return f"{d['Technique']}: {d.get('Details', '')}"
    if e.event_id == ALERT_EVENT_ID and e.provider == ALERT_PROVIDER:
        parts = [f"level {d['RuleLevel']}"] if d.get("RuleLevel") else []
        if d.get("Techniques"):
            parts.append(d["Techniques"])
        return "; ".join(parts)
    return _pick(d, *_DETAIL_FIELDS)


def _time7(t: str) -> str:
    if not t:
        return ""
    if len(t) != 30 or t[29] != "Z":
        try:
            t = normalize_time(t)
        except ValueError:
            return t  # not a time: shown as it is (rendered and neutralised by row)
    return t[:27] + "Z"


def _event_data_json(data: dict) -> str:
    """``data`` as compact JSON whose display-controlling characters are JSON escapes: the raw
    characters :func:`~sysmonx.textsafe.visible` replaces can only stand inside JSON strings, and
    its ``\\uXXXX`` text is the JSON escape of the same character, so decoding gives ``data``
    back exactly."""
    try:
        text = orjson.dumps(data).decode()
    except TypeError:  # lone surrogates: orjson refuses them, json escapes them
        text = json.dumps(data, ensure_ascii=True, separators=(",", ":"))
    return visible(text)


def _alert_channels(text: str) -> str:
    """An alert row's ``Channel``: event 1000's ``Channels`` decoded (a ``%2C`` / ``%25`` in a
    name read as ``,`` / ``%``, :func:`~sysmonx.event.split_channels`), a
    correlation's names joined with ``,``."""
    if "%" not in text:  # nothing encoded (every channel Windows and Sysmon define)
        return text
    return ",".join(split_channels(text))


def row(e: Event) -> list:
    """The cells of ``e``'s row, as written (display-rendered and neutralised), in
    :data:`COLUMNS` order."""
    d = e.data
    alert = e.event_id == ALERT_EVENT_ID and e.provider == ALERT_PROVIDER
    cells = [
        _time7(e.time_created), e.computer or "", e.provider or "",
        _alert_channels(d.get("Channels") or "") if alert else e.channel or "", str(e.event_id),
        ALERT_EVENT_NAME if alert else
        _event_name(e.event_id) if e.provider in SYSMON_PROVIDERS else "",
        (d.get("RecordIds") or "") if alert else
        "" if e.record_id is None else str(e.record_id),
        _pick(d, "ProcessId", "SourceProcessId"), _pick(d, "Image", "SourceImage"),
        d.get("CommandLine") or "", d.get("ParentImage") or "", _pick(d, "User", "SourceUser"),
        details(e), (d.get("RuleTitle") if alert else d.get("RuleName")) or ""]
    if _CONTROL("".join(cells)) is not None:  # rare: something to render
        cells = [visible(c, "\t") for c in cells]
    for i, c in enumerate(cells):
        if c and c[0] in _FORMULA_START and c != "-":
            cells[i] = "'" + c
    cells.append(_event_data_json(d))
    return cells


@SINKS.register
class CsvTimelineWriter(Writer):
    """Writes events as a CSV timeline (format and safety rules above), UTF-8, CRLF row ends.

    The header row (and the byte-order mark) is written when the writer is created, so an output
    without events still names its columns.

    Args:
        stream: binary output stream.
        bom: start with a UTF-8 byte-order mark (for Excel).
        header: write the header row (``False`` for a continuation part, see
            :attr:`~sysmonx.sinks.base.Writer.PART_OPTIONS`).
        close_stream: see :class:`~sysmonx.sinks.base.Writer`.
    """

    name = "csv"
    summary = "CSV timeline for Timeline Explorer and spreadsheets, formula-neutralised"

    PART_OPTIONS = {"header": False, "bom": False}

    def __init__(self, stream: BinaryIO, bom: bool = False, header: bool = True,
                 close_stream: bool = True) -> None:
        super().__init__(stream, close_stream)
        self._buf = io.StringIO()
        self._csv = csv.writer(self._buf, lineterminator="\r\n")
        if bom:
            stream.write(b"\xef\xbb\xbf")
        if header:
            self._emit(COLUMNS)

    def _emit(self, cells) -> None:
        buf = self._buf
        buf.seek(0)
        buf.truncate()
        self._csv.writerow(cells)
        self.stream.write(buf.getvalue().encode("utf-8"))

    def write(self, event: Event) -> None:
        """Write one event row."""
        self._emit(row(event))
