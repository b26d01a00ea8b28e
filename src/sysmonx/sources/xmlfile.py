"""Event XML files: ``wevtutil qe /f:xml``, Get-WinEvent ``.ToXml()``, Event Viewer "Save as XML"
(``<Events><Event xmlns=...>...</Event>...</Events>``), SysmonX's own XML writers, or any number
of ``<Event>`` elements concatenated without a root; with or without the event namespace, single
or double quoted attributes, UTF-8 or UTF-16 (byte-order mark) or the encoding the XML declaration
names.

The file is cut into events at the text level (``<Event ...>`` to ``</Event>``, skipping comments
and CDATA) and each event is parsed alone with lxml, so a malformed event costs only itself: it is
reported with its line number and reading resumes at the next ``<Event``. Memory is bounded by the
largest event (at most :data:`~sysmonx.sources.MAX_RECORD_BYTES`), not the file.

Safety: nothing outside an event (XML declaration, ``<!DOCTYPE>``, root element) reaches the
parser, and the parser neither loads DTDs, resolves entities nor uses the network. An entity
reference inside an event (billion laughs, external entities) is therefore an undefined entity:
the event is reported as malformed and nothing is expanded or fetched.

:func:`event_from_element` (shared with the syslog reader) maps an ``<Event>`` element to an
:class:`~sysmonx.event.Event`, namespace-agnostic.
"""

from __future__ import annotations

import codecs
import re
import threading
from functools import lru_cache
from typing import Any, Callable, Iterator, Optional

from lxml import etree

from ..core.registry import SOURCES
from ..event import SYSMON_PROVIDERS, Event, normalize_time
from ..schema import positional_names
from ..core.errors import ReadError
from .base import MAX_RECORD_BYTES, FileFormat, FileNotes, OnError, put_unique

__all__ = ["read_xml", "read_xml_stream", "event_from_element", "parse_event", "safe_parser",
           "SAFE_PARSER_OPTIONS", "repair_entity_refs", "ENTITY_REPAIR", "name_unnamed"]

#: Parser settings for untrusted event XML: no DTD, no entity expansion, no network, no huge trees.
SAFE_PARSER_OPTIONS = dict(resolve_entities=False, no_network=True, huge_tree=False,
                           load_dtd=False, dtd_validation=False, remove_comments=True,
                           remove_pis=True, collect_ids=False)
_parsers = threading.local()  # lxml parsers must not be used by two threads at once


def safe_parser() -> etree.XMLParser:
    """This thread's lxml parser with :data:`SAFE_PARSER_OPTIONS`."""
    parser = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = etree.XMLParser(**SAFE_PARSER_OPTIONS)
    return parser


_BLOCK = 1 << 20
_TOKEN = re.compile(rb"<(?:(Event)[\s/>]|(/Event)\s*>|(!--)|(!\[CDATA\[)|(!DOCTYPE))")
_DECL = re.compile(rb"""<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


def read_xml(path: str, on_error: Callable[[ReadError], None]) -> Iterator[Event]:
    """Yield the events of an event XML file, streaming.

    ``Event.origin`` is ``(path, line of the <Event start tag)``.

    Args:
        path: the file.
        on_error: receives a :class:`~sysmonx.sources.ReadError` (line number) per malformed or
            unterminated event, ignored ``<!DOCTYPE>`` and undecodable encoding; reading goes on.
    Raises:
        OSError: the file cannot be opened.
    """
    with open(path, "rb") as raw:
        yield from read_xml_stream(raw, path, on_error)


def read_xml_stream(raw, path: str, on_error: Callable[[ReadError], None]) -> Iterator[Event]:
    """:func:`read_xml` over an open binary stream ``raw`` (an archive member, ...), named
    ``path`` in origins and errors. ``raw`` should have ``peek`` (``io.BufferedReader``) for the
    byte-order mark / XML declaration check; without it the stream is read as UTF-8."""
    stream = _utf8_stream(raw, path, on_error)
    notes = FileNotes(path, on_error)
    for start_line, chunk in _split_events(stream, path, on_error):
        try:
            event = parse_event(chunk, (path, start_line), notes)
        except etree.XMLSyntaxError as exc:
            line = start_line + (exc.lineno or 1) - 1
            on_error(ReadError(path, line, "line", f"malformed event XML: {exc.msg}"))
            continue
        except ValueError as exc:
            on_error(ReadError(path, start_line, "line", f"invalid event: {exc}"))
            continue
        yield event


#: The ``repaired`` message for records whose entity references had lost their ``;``.
ENTITY_REPAIR = "entity references without ';' (read as the producer wrote them)"


def parse_event(xml: bytes, origin: tuple, notes: Optional[FileNotes] = None) -> Event:
    """Parse one ``<Event>...</Event>`` document (bytes, UTF-8) with :func:`safe_parser`.

    A document that is not well-formed only because its entity references lost their ``;`` on
    the way (``&lt unknown process&gt``: some syslog forwarders and SIEM exports of Sysmon for
    Linux drop it or turn it into a space) is read as its producer wrote it
    (:func:`repair_entity_refs`), and reported to ``notes`` as ``repaired``.

    Args:
        xml: the event document.
        origin: ``(path, offset)`` for ``Event.origin``; its offset is used in notes (a line).
        notes: where repairs and warnings about the record go (see :func:`event_from_element`).
    Raises:
        lxml.etree.XMLSyntaxError: not well-formed (an undefined entity such as ``&xxe;`` stays
            an error: nothing is expanded), even after the repair.
        ValueError: well-formed but not an event (see :func:`event_from_element`).
    """
    parser = safe_parser()
    try:
        root = etree.fromstring(xml, parser)
    except etree.XMLSyntaxError:
        fixed = repair_entity_refs(xml) if b"&" in xml else None
        if fixed is None:
            raise
        root = etree.fromstring(fixed, parser)  # still malformed: the repair was not the issue
        if notes is not None:
            notes.repaired(origin[1] if origin else None, "line", ENTITY_REPAIR)
    return event_from_element(root, origin, notes)


_AMP = re.compile(rb"&(?:(lt|gt|amp|quot|apos)|#(\d+)|#[xX]([0-9A-Fa-f]+)|([A-Za-z_][\w.-]*))?(;)?")


def repair_entity_refs(xml: bytes) -> Optional[bytes]:
    """``xml`` with every entity reference that lost its ``;`` given it back; ``None`` when there
    is none to repair.

    The producers concerned (Sysmon for Linux through libxml2, Windows) escape every ``&``, so
    an ``&`` is always the start of a reference, and no predefined entity name is a prefix of
    another: ``&ltfoo`` can only be ``&lt;foo``. Two kinds of damage are seen in real exports:
    the ``;`` deleted (``&lt&gt``), or replaced by a space (``&lt unknown process&gt ``). Within
    one record, a reference without ``;`` followed by anything but a space proves deletion;
    when every one is followed by a space, the space is the lost ``;`` and is consumed. A lone
    ``&`` that starts no reference is a literal ampersand. References to other (undefined)
    entities, with or without ``;``, are left alone: they stay errors and are never expanded.
    A numeric reference followed by digits is ambiguous and read greedily (``&#1012`` is
    ``&#1012;``).
    """
    bare: list = []   # (start, end) of references that lost their ';'
    lone: list = []   # positions of '&' that start no reference
    for m in _AMP.finditer(xml):
        if m.group(4) is not None:  # &name... of an entity Sysmon never writes: leave it
            continue
        if m.group(1) is None and m.group(2) is None and m.group(3) is None:
            lone.append(m.start())
        elif m.group(5) is None:
            bare.append((m.start(), m.end()))
    if not bare and not lone:
        return None
    space_mode = bool(bare) and all(xml[e:e + 1] == b" " for _, e in bare)
    out = bytearray()
    pos = 0
    edits = sorted([(s, e, True) for s, e in bare] + [(p, p + 1, False) for p in lone])
    for start, end, is_ref in edits:
        out += xml[pos:start]
        if is_ref:
            out += xml[start:end] + b";"
            pos = end + 1 if space_mode else end
        else:
            out += b"&amp;"
            pos = end
    out += xml[pos:]
    return bytes(out)


def _split_events(stream, path: str, on_error: Callable[[ReadError], None]
                  ) -> Iterator[tuple[int, bytes]]:
    """``(line, bytes)`` of each ``<Event ...>...</Event>`` in ``stream``, cut at the text level.

    An event that is followed by another ``<Event`` before its end tag, that never ends, or that
    exceeds MAX_RECORD_BYTES is reported and skipped; the scan resumes at the next ``<Event``.
    """
    buf = b""
    pos = 0            # scan position in buf
    start = -1         # start of the current event in buf, -1 outside events
    start_line = 0
    line_pos, line_no = 0, 1   # line number of buf[line_pos]
    eof = False
    doctype_reported = False

    def line_at(p: int) -> int:
        nonlocal line_pos, line_no
        if p >= line_pos:
            line_no += buf.count(b"\n", line_pos, p)
        else:
            line_no -= buf.count(b"\n", p, line_pos)
        line_pos = p
        return line_no

    while True:
        m = _TOKEN.search(buf, pos)
        need_more = m is None
        if m is not None:
            kind = m.lastindex
            if kind in (3, 4, 5):  # comment, CDATA, DOCTYPE: skip to their end
                end = _construct_end(buf, m, kind)
                if end < 0:
                    need_more = True
                else:
                    if kind == 5 and not doctype_reported:
                        doctype_reported = True
                        on_error(ReadError(path, line_at(m.start()), "line",
                                           "<!DOCTYPE> ignored: DTDs and entities are never loaded "
                                           "or expanded"))
                    pos = end
                    continue
            elif kind == 1:  # <Event
                if buf[m.end() - 1:m.end()] == b"/" and m.end() >= len(buf) and not eof:
                    need_more = True  # "<Event/" at the end of the buffer: "<Event/>"?
                else:
                    if start >= 0:
                        on_error(ReadError(path, start_line, "line",
                                           "event not terminated before the next <Event>; "
                                           "skipped"))
                    start, start_line = m.start(), line_at(m.start())
                    pos = m.end()
                    if buf[pos - 1:pos + 1] == b"/>":  # <Event/>: empty, reported as such later
                        yield start_line, buf[start:pos + 1]
                        start = -1
                    continue
            else:  # </Event>
                if start >= 0:
                    yield start_line, buf[start:m.end()]
                    start = -1
                pos = m.end()
                continue
        if need_more:
            if eof:
                if start >= 0:
                    on_error(ReadError(path, start_line, "line",
                                       "event not terminated at the end of the file; skipped"))
                return
            # Rescan from an unfinished token (or the last "<", which may begin one); drop what
            # is consumed but keep the current event.
            if m is not None:
                pos = m.start()
            else:
                tail = buf.rfind(b"<", pos)
                pos = tail if tail >= 0 else len(buf)
            keep = start if start >= 0 else pos
            if keep > 0:
                line_at(keep)
                buf = buf[keep:]
                pos -= keep
                line_pos -= keep
                if start >= 0:
                    start -= keep
            if start >= 0 and len(buf) > MAX_RECORD_BYTES:
                on_error(ReadError(path, start_line, "line",
                                   f"event longer than {MAX_RECORD_BYTES} bytes; skipped"))
                start = -1
            block = stream.read(_BLOCK)
            if not block:
                eof = True
            buf += block


def _construct_end(buf: bytes, m: re.Match, kind: int) -> int:
    """End offset of the comment / CDATA / DOCTYPE starting at ``m``, or -1 if not in ``buf``."""
    if kind == 3:
        end = buf.find(b"-->", m.end())
        return end + 3 if end >= 0 else -1
    if kind == 4:
        end = buf.find(b"]]>", m.end())
        return end + 3 if end >= 0 else -1
    gt = buf.find(b">", m.end())
    bracket = buf.find(b"[", m.end())
    if bracket >= 0 and (gt < 0 or bracket < gt):  # internal subset: up to "]" ... ">"
        close = re.compile(rb"\]\s*>").search(buf, bracket)
        return close.end() if close else -1
    return gt + 1 if gt >= 0 else -1


def _utf8_stream(raw, path: str, on_error: Callable[[ReadError], None]):
    """``raw`` as a stream of UTF-8 bytes: byte-order mark, else XML declaration, else UTF-8."""
    head = raw.peek(256)[:256] if hasattr(raw, "peek") else b""
    encoding = None
    if head.startswith(codecs.BOM_UTF8):
        raw.read(3)
    elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    elif head[:2] == b"<\x00":
        encoding = "utf-16-le"
    elif head[:2] == b"\x00<":
        encoding = "utf-16-be"
    else:
        m = _DECL.match(head)
        if m and m.group(1).lower().replace(b"_", b"-") not in (b"utf-8", b"utf8", b"us-ascii",
                                                                 b"ascii"):
            encoding = m.group(1).decode("ascii")
    if encoding is None:
        return raw
    try:
        return _Transcoder(raw, encoding)
    except LookupError:
        on_error(ReadError(path, 1, "line", f"unknown encoding {encoding!r}; reading as UTF-8"))
        return raw


class _Transcoder:
    """A binary stream that yields ``raw`` (in ``encoding``) re-encoded as UTF-8."""

    def __init__(self, raw, encoding: str) -> None:
        self.raw = raw
        self.decoder = codecs.getincrementaldecoder(encoding)(errors="replace")

    def read(self, n: int) -> bytes:
        while True:
            block = self.raw.read(n)
            text = self.decoder.decode(block, final=not block)
            if text or not block:
                return text.encode("utf-8")


# ---- <Event> element -> Event -------------------------------------------------------------------

def _local(tag) -> Optional[str]:
    """Local name of an element tag (``{ns}Name`` -> ``Name``); None for comments/PIs/entities."""
    if not isinstance(tag, str):
        return None
    return tag[tag.index("}") + 1:] if tag[:1] == "{" else tag


def _int(el, what: str) -> Optional[int]:
    text = el.text
    if text is None or not text.strip():
        return None
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{what} is not a number: {text!r}") from None


def _text(el) -> str:
    """Text of a leaf element; markup inside (never in an event value) is refused."""
    if len(el):
        raise ValueError(f"unexpected markup inside <{_local(el.tag)}>")
    return el.text or ""


def event_from_element(root, origin: Optional[tuple] = None,
                       notes: Optional[FileNotes] = None) -> Event:
    """Map an lxml ``<Event>`` element (any namespace) to an Event.

    System children map to the Event header (``Security/@UserID`` or Linux ``@UserId``; missing
    elements give ``None``); ``EventData/Data[@Name]`` and ``EventData/ComplexData[@Name]`` map
    to ``data`` by their ``Name`` in document order (empty element -> ``""``; a ComplexData
    with child elements gives ``Name.Child`` keys). ``<Data>`` without ``Name`` (forwarded and
    re-exported events) get their names by position from the schema when the provider is
    Sysmon's and the EventID, ``System/Version`` and value count fit one template
    (:func:`sysmonx.schema.positional_names`, as Event Viewer does); otherwise they stay
    ``Data``, ``Data_2``... and ``notes`` gets a warning once per file. Other EventData children
    and UserData are flattened best effort (``Parent.Child`` names, ``_2`` suffixes for
    repeats). ``RenderingInfo`` is ignored.

    Raises:
        ValueError: the root is not ``Event``, or EventID is missing, or a number or the time is
            malformed, or a value contains markup.
    """
    tag = root.tag
    if _local(tag) != "Event":
        raise ValueError(f"root element is <{_local(tag)}>, not <Event>")
    ns = tag[:tag.index("}") + 1] if tag[0] == "{" else ""
    known = _known_tags(ns)  # full tag -> local name, for the usual elements
    kw: dict = {"provider": "", "provider_guid": None, "version": None, "level": None,
                "task": None, "opcode": None, "keywords": None, "time_created": "",
                "record_id": None, "process_id": None, "thread_id": None, "channel": "",
                "computer": "", "user_id": None, "origin": origin}
    event_id = None
    data: dict = {}
    unnamed: list = []
    for part in root:
        name = known.get(part.tag) or _local(part.tag)
        if name == "System":
            for el in part:
                sub = known.get(el.tag) or _local(el.tag)
                if sub == "Provider":
                    kw["provider"] = el.get("Name", "")
                    kw["provider_guid"] = el.get("Guid")
                elif sub == "EventID":
                    event_id = _int(el, "EventID")
                elif sub in _INT_FIELDS:
                    kw[_INT_FIELDS[sub]] = _int(el, sub)
                elif sub == "Keywords":
                    kw["keywords"] = el.text or ""
                elif sub == "TimeCreated":
                    t = el.get("SystemTime")
                    kw["time_created"] = normalize_time(t) if t else ""
                elif sub == "Execution":
                    kw["process_id"] = _int_attr(el, "ProcessID")
                    kw["thread_id"] = _int_attr(el, "ThreadID")
                elif sub == "Channel":
                    kw["channel"] = el.text or ""
                elif sub == "Computer":
                    kw["computer"] = el.text or ""
                elif sub == "Security":
                    kw["user_id"] = el.get("UserID", el.get("UserId"))
        elif name == "EventData":
            data_tag = ns + "Data"
            for el in part:
                key = None
                if el.tag == data_tag:  # the usual <Data Name='...'>value</Data>
                    key = el.get("Name")
                    if key is None:
                        unnamed.append(_text(el))
                        continue
                    if key not in data:
                        data[key] = _text(el)
                        continue
                sub = _local(el.tag)
                if sub == "ComplexData" and el.get("Name"):
                    children = [c for c in el if _local(c.tag)]
                    if children:
                        _flatten(children, el.get("Name") + ".", data)
                    else:
                        put_unique(data, el.get("Name"), el.text or "")
                elif sub is not None:  # repeated Data, Binary, ...
                    put_unique(data, key or sub, _text(el))
        elif name == "UserData":
            items = [el for el in part if _local(el.tag)]
            if len(items) == 1 and len(items[0]):
                items = [el for el in items[0] if _local(el.tag)]
            _flatten(items, "", data)
    if event_id is None:
        raise ValueError("event has no System/EventID")
    if unnamed:
        data = name_unnamed(event_id, kw["provider"], kw["version"], unnamed, data, notes,
                            origin)
    return Event(event_id, data, **kw)


def name_unnamed(event_id: int, provider: str, version: Optional[int], values: list,
                 data: dict, notes: Optional[FileNotes], origin: Optional[tuple],
                 offset_kind: str = "line") -> dict:
    """EventData of a record whose ``values`` came without names, merged with the named
    ``data`` it also had: names by position from the schema for a Sysmon event whose EventID,
    Version and value count fit one template (and no named values), else ``Data``,
    ``Data_2``... with a warning (once per file) through ``notes``. Shared by the XML, evtx-crate
    JSON and Sentinel readers."""
    if provider in SYSMON_PROVIDERS and not data:
        names = positional_names(event_id, version, len(values))
        if names is not None:
            return dict(zip(names, values, strict=True))
    for v in values:
        put_unique(data, "Data", v)
    if notes is not None:
        offset = origin[1] if origin else None
        why = ("its EventID and Version fit no Sysmon template of that many fields"
               if provider in SYSMON_PROVIDERS else "the provider's schema is not known here")
        notes.warn_once("unnamed-data", offset, offset_kind,
                        f"EventData values without Name (provider {provider or '?'}, EventID "
                        f"{event_id}, version {version if version is not None else '?'}): they "
                        f"are kept as Data, Data_2...; {why}, so config filters and Sigma rules "
                        "on their real names cannot match them")
    return data


@lru_cache(maxsize=16)
def _known_tags(ns: str) -> dict:
    return {ns + name: name for name in (
        "System", "EventData", "UserData", "Provider", "EventID", "Version", "Level", "Task",
        "Opcode", "Keywords", "TimeCreated", "EventRecordID", "Correlation", "Execution",
        "Channel", "Computer", "Security")}


def _int_attr(el, attr: str) -> Optional[int]:
    v = el.get(attr)
    if v is None:
        return None
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"Execution/@{attr} is not a number: {v!r}") from None


_INT_FIELDS = {"Version": "version", "Level": "level", "Task": "task", "Opcode": "opcode",
               "EventRecordID": "record_id"}


def _flatten(elements, prefix: str, out: dict) -> None:
    for el in elements:
        name = prefix + (_local(el.tag) or "")
        children = [c for c in el if _local(c.tag)]
        if children:
            _flatten(children, name + ".", out)
        else:
            put_unique(out, name, el.text or "")


@SOURCES.register
class XmlFormat(FileFormat):
    """Event XML: ``wevtutil qe /f:xml``, Get-WinEvent ``ToXml()``, Event Viewer "Save As XML",
    the SysmonX writers, Sysmon for Linux's XML."""

    name = "xml"
    summary = "event XML (wevtutil, Get-WinEvent, Event Viewer, SysmonX, Sysmon for Linux)"
    extensions = (".xml",)
    order = 10

    @classmethod
    def read(cls, path: str, on_error: OnError, **options: Any) -> Iterator[Event]:
        """:func:`read_xml`."""
        return read_xml(path, on_error)

    @classmethod
    def read_stream(cls, stream: Any, name: str, on_error: OnError) -> Iterator[Event]:
        """:func:`read_xml_stream`."""
        return read_xml_stream(stream, name, on_error)
