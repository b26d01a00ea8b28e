"""XML escaping and the event XML renderer shared by the Windows and Linux XML writers.

Markup characters become entity references; CR, LF (and tab in attributes) become character
references so one event is always one line and the value survives attribute-value and line-end
normalisation; the Unicode line separators U+0085, U+2028, U+2029 are also written as character
references, so a reader splitting on any line break still sees one event per line. So are the
other C1 controls (U+0080 to U+009F, e.g. U+009B, the 8-bit CSI that some terminals obey), so the
output shown on a terminal cannot start an escape sequence; XML parsers read all of these back as
the original characters.

Characters XML 1.0 cannot carry at all (C0 controls other than tab/LF/CR, lone surrogates,
U+FFFE, U+FFFF) have no lossless XML form, not even as character references. They are written as
the six-character text ``\\uXXXX`` (backslash, ``u``, four lower-case hex digits), e.g. ESC as
``\\u001b``, NUL as ``\\u0000``, a lone surrogate as ``\\ud800``. Readers return that text as it is.

An event is rendered from its shape's template (:func:`render_event`); the element-by-element
renderer (:func:`render_event_generic`) is the reference the templates match byte for byte.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..event import Event

__all__ = ["escape_text", "escape_attr_apos", "escape_attr_quot", "INVALID_XML_CHARS",
           "XmlForm", "render_event", "render_event_generic",
           "TEMPLATE_LIMIT", "TEMPLATE_CHARS"]

#: Regex class body of the characters XML 1.0 cannot carry.
INVALID_XML_CHARS = "\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\ud800-\\udfff\\ufffe\\uffff"

_COMMON = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;", "\n": "&#10;",
           "\u2028": "&#8232;", "\u2029": "&#8233;",
           **{chr(n): f"&#{n};" for n in range(0x80, 0xA0)}}  # C1 controls, U+0085 (NEL) included


def _class(table: dict) -> re.Pattern:
    return re.compile("[" + "".join("\\u%04x" % ord(c) for c in table) + INVALID_XML_CHARS + "]")


def _escaper(table: dict) -> Callable[[str], str]:
    pattern = _class(table)
    get = table.get

    def repl(m: re.Match) -> str:
        c = m.group()
        r = get(c)
        return r if r is not None else "\\u%04x" % ord(c)

    sub = pattern.sub
    search = pattern.search

    def escape(value: str) -> str:
        return sub(repl, value) if search(value) else value

    return escape


#: Element text: ``& < >`` as entities (quotes stay, as both Windows and libxml2 write them).
escape_text = _escaper(_COMMON)
#: Attribute value in single quotes (Windows form): also ``'`` and tab.
escape_attr_apos = _escaper({**_COMMON, "'": "&apos;", "\t": "&#9;"})
#: Attribute value in double quotes (libxml2 / Sysmon for Linux form): also ``"`` and tab.
escape_attr_quot = _escaper({**_COMMON, '"': "&quot;", "\t": "&#9;"})

_TEXT_SPECIAL = _class(_COMMON).search


class _Memo(dict):
    """``key -> fn(key)``, computed on first use (header values and field names repeat)."""

    def __init__(self, fn: Callable) -> None:
        super().__init__()
        self.fn = fn

    def __missing__(self, key):
        value = self.fn(key)
        if len(self) < 4096:
            self[key] = value
        return value


@dataclass(frozen=True)
class XmlForm:
    """What distinguishes one event XML dialect from another.

    Attributes:
        event_open: ``<Event ...>`` start tag.
        q: attribute quote character; ``attr``: its attribute escaper.
        user_attr: name of the Security attribute (``UserID`` / ``UserId``).
        time: Event time string -> SystemTime attribute value, escaped.
        memo: rendered pieces that repeat from event to event (filled on first use), and
            ``memo["templates"]``, the per-shape templates of :func:`render_event`.
    """

    event_open: str
    q: str
    attr: Callable[[str], str]
    user_attr: str
    time: Callable[[str], str]
    memo: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        q, attr = self.q, self.attr
        memo = {
            "data": _Memo(lambda name: f"<Data Name={q}{attr(name)}{q}>"),
            "text": _Memo(escape_text),
            "provider": _Memo(lambda pg: (
                f"{self.event_open}<System><Provider Name={q}{attr(pg[0] or '')}{q}"
                + (f" Guid={q}{attr(pg[1])}{q}/>" if pg[1] is not None else "/>"))),
            "security": _Memo(lambda user: "<Security/></System>" if user is None else
                              f"<Security {self.user_attr}={q}{attr(user)}{q}/></System>"),
            # event shape -> % format string (render_event; at most TEMPLATE_LIMIT of them and
            # about TEMPLATE_CHARS characters in all)
            "templates": {},
            "template_chars": [0],
        }
        object.__setattr__(self, "memo", memo)


def _num(value) -> str:
    return str(value) if type(value) is int else escape_text(str(value))


_ALL_INT = {int}

#: Most event shapes (see :func:`render_event`) one form keeps a template for, and most characters
#: in all its templates together; events of a shape seen after either is reached are rendered
#: by the generic renderer (same output, no cache growth). The corpus's 73,000 events from 1,700
#: files (EVTX, JSON datasets of many Windows channels, Sysmon for Linux) have 1,237 shapes,
#: 1.07 million characters of templates.
TEMPLATE_LIMIT = 4096
TEMPLATE_CHARS = 8_000_000

#: The code points up to U+00FF that :func:`escape_text` changes (``& < >``, C0 controls but tab,
#: C1 controls), as bytes: a Latin-1 string needs escaping exactly when it holds one of them.
_LATIN1_SPECIAL = bytes(c for c in range(256) if _TEXT_SPECIAL(chr(c)))


def _needs_escape(text: str) -> bool:
    """True when :func:`escape_text` would change ``text``.

    A Latin-1 string (nearly every real value: ASCII, ``Microsoft®``) is checked by deleting the
    special bytes from its Latin-1 encoding and comparing lengths, three times faster than the
    regular expression; any other string by the regular expression."""
    try:
        b = text.encode("latin-1")
    except UnicodeEncodeError:
        return _TEXT_SPECIAL(text) is not None
    return len(b.translate(None, _LATIN1_SPECIAL)) != len(b)


def render_event(e: Event, form: XmlForm, provider: str, guid: Optional[str],
                 channel: str, templates: bool = True) -> str:
    """One event as a single line of event XML in ``form`` (envelope values given).

    With ``templates`` (the default) an event whose ``data`` is a ``dict``, whose EventID is an
    ``int`` and whose Version, Level, Task, Opcode, EventRecordID, ProcessID and ThreadID are
    each an ``int`` or ``None`` is rendered from its shape's template: the XML of everything that
    is constant for ``(provider, guid, channel, EventID, Version, Level, Task, Opcode, Keywords,
    which of TimeCreated/EventRecordID/ProcessID/ThreadID are present, field names in order)``
    is built once (the ``<Event><System>`` skeleton without the absent elements, the
    ``<Data Name='...'>`` tags), and the event's own values (time, record number, process and
    thread ID, computer, user, escaped data values) are put into it with one ``%`` formatting.
    Any other event, an event of a new shape once the form holds :data:`TEMPLATE_LIMIT`
    templates or :data:`TEMPLATE_CHARS` characters of them, or ``templates=False``:
    :func:`render_event_generic`. Both give the same string
    for every event (tests/test_xml_templates.py checks it on the corpus and on edge cases).
    The templates are shared by every writer of the form; writers on other threads may build
    the same template twice (the same string) and make the character count approximate.

    Raises:
        TypeError: a data value or field name that is not a string (as the generic renderer).
    """
    data = e.data
    if not templates or type(data) is not dict:
        return render_event_generic(e, form, provider, guid, channel)
    time = e.time_created
    if (time and e.keywords is not None
            and type(e.event_id) is type(e.version) is type(e.level) is type(e.task)
            is type(e.opcode) is type(e.record_id) is type(e.process_id) is type(e.thread_id)
            is int):  # every System value present (nearly every EVTX event)
        key: tuple = (provider, guid, channel, e.event_id, e.version, e.level, e.task, e.opcode,
                      e.keywords, tuple(data))
        full = True
    elif type(e.event_id) is int and all(v is None or type(v) is int for v in (
            e.version, e.level, e.task, e.opcode, e.record_id, e.process_id, e.thread_id)):
        key = (provider, guid, channel, e.event_id, e.version, e.level, e.task, e.opcode,
               e.keywords, not time, e.record_id is None, e.process_id is None,
               e.thread_id is None, tuple(data))
        full = False
    else:
        return render_event_generic(e, form, provider, guid, channel)
    cache = form.memo["templates"]
    fmt = cache.get(key)
    if fmt is None:
        size = form.memo["template_chars"]
        if len(cache) >= TEMPLATE_LIMIT or size[0] >= TEMPLATE_CHARS:
            return render_event_generic(e, form, provider, guid, channel)
        fmt = cache[key] = _template(e, form, provider, guid, channel)
        size[0] += len(fmt)
    memo = form.memo
    values = data.values()
    if values and _needs_escape("".join(values)):
        values = map(escape_text, values)  # type: ignore[assignment]
    if full:
        return fmt % (form.time(time), e.record_id, e.process_id, e.thread_id,
                      memo["text"][e.computer or ""], memo["security"][e.user_id], *values)
    args: list = [form.time(time)] if time else []
    for value in (e.record_id, e.process_id, e.thread_id):
        if value is not None:
            args.append(value)
    args += (memo["text"][e.computer or ""], memo["security"][e.user_id], *values)
    return fmt % tuple(args)


_SLOT = object()  # where _template's format string takes a value


def _template(e: Event, form: XmlForm, provider: str, guid: Optional[str],
              channel: str) -> str:
    """The ``%`` format string of ``e``'s shape (see :func:`render_event`), element for element
    what :func:`render_event_generic` writes for it; its ``%s`` slots: SystemTime,
    EventRecordID, ProcessID, ThreadID (those present), escaped Computer, the Security
    element, then each data value in field order."""
    memo = form.memo
    q, text = form.q, memo["text"]
    p: list = [memo["provider"][provider, guid], f"<EventID>{e.event_id}</EventID>"]
    for tag, value in (("Version", e.version), ("Level", e.level), ("Task", e.task),
                       ("Opcode", e.opcode)):
        if value is not None:
            p.append(f"<{tag}>{value}</{tag}>")
    if e.keywords is not None:
        p += ["<Keywords>", text[e.keywords], "</Keywords>"]
    p += [f"<TimeCreated SystemTime={q}", _SLOT, f"{q}/>"] if e.time_created else ["<TimeCreated/>"]
    if e.record_id is not None:
        p += ["<EventRecordID>", _SLOT, "</EventRecordID>"]
    p.append("<Correlation/><Execution")
    if e.process_id is not None:
        p += [f" ProcessID={q}", _SLOT, q]
    if e.thread_id is not None:
        p += [f" ThreadID={q}", _SLOT, q]
    p += [f"/><Channel>{text[channel or '']}</Channel><Computer>", _SLOT, "</Computer>", _SLOT]
    if e.data:
        op = memo["data"]
        p.append("<EventData>")
        for name in e.data:
            p += [op[name], _SLOT, "</Data>"]
        p.append("</EventData></Event>")
    else:
        p.append("<EventData/></Event>")
    return "".join("%s" if x is _SLOT else x.replace("%", "%%") for x in p)


def render_event_generic(e: Event, form: XmlForm, provider: str, guid: Optional[str],
                         channel: str) -> str:
    """One event as a single line of event XML in ``form``, element by element (no template):
    the reference :func:`render_event`'s templates must match byte for byte, and its fallback.

    Raises:
        TypeError: a data value or field name that is not a string.
    """
    memo = form.memo
    text = memo["text"]
    if e.keywords is not None and e.time_created and set(map(type, (
            e.event_id, e.version, e.level, e.task, e.opcode, e.record_id, e.process_id,
            e.thread_id))) == _ALL_INT:  # every System value present: one f-string
        q = form.q
        p = [f"{memo['provider'][provider, guid]}<EventID>{e.event_id}</EventID>"
             f"<Version>{e.version}</Version><Level>{e.level}</Level><Task>{e.task}</Task>"
             f"<Opcode>{e.opcode}</Opcode><Keywords>{text[e.keywords]}</Keywords>"
             f"<TimeCreated SystemTime={q}{form.time(e.time_created)}{q}/>"
             f"<EventRecordID>{e.record_id}</EventRecordID><Correlation/>"
             f"<Execution ProcessID={q}{e.process_id}{q} ThreadID={q}{e.thread_id}{q}/>"
             f"<Channel>{text[channel or '']}</Channel><Computer>{text[e.computer or '']}"
             f"</Computer>{memo['security'][e.user_id]}"]
    else:
        p = _system(e, form, provider, guid, channel)
    data = e.data
    if data:
        p.append("<EventData>")
        op = memo["data"]
        if _TEXT_SPECIAL("".join(data.values())) is None:  # the usual case: nothing to escape
            p += [op[k] + v + "</Data>" for k, v in data.items()]
        else:
            p += [op[k] + escape_text(v) + "</Data>" for k, v in data.items()]
        p.append("</EventData></Event>")
    else:
        p.append("<EventData/></Event>")
    return "".join(p)


def _system(e: Event, form: XmlForm, provider: str, guid: Optional[str], channel: str) -> list:
    """The ``<Event><System>...</System>`` parts, any System value missing or odd."""
    q, attr, memo = form.q, form.attr, form.memo
    text = memo["text"]
    p = [memo["provider"][provider, guid], "<EventID>", _num(e.event_id), "</EventID>"]
    for tag, value in (("Version", e.version), ("Level", e.level), ("Task", e.task),
                       ("Opcode", e.opcode)):
        if value is not None:
            p += [f"<{tag}>", _num(value), f"</{tag}>"]
    if e.keywords is not None:
        p += ["<Keywords>", text[e.keywords], "</Keywords>"]
    if e.time_created:
        p += ["<TimeCreated SystemTime=", q, form.time(e.time_created), q, "/>"]
    else:
        p.append("<TimeCreated/>")
    if e.record_id is not None:
        p += ["<EventRecordID>", _num(e.record_id), "</EventRecordID>"]
    p.append("<Correlation/><Execution")
    if e.process_id is not None:
        p += [" ProcessID=", q, attr(str(e.process_id)), q]
    if e.thread_id is not None:
        p += [" ThreadID=", q, attr(str(e.thread_id)), q]
    p += ["/><Channel>", text[channel or ""], "</Channel><Computer>", text[e.computer or ""],
          "</Computer>", memo["security"][e.user_id]]
    return p
