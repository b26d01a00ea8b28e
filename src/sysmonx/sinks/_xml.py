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
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..event import Event

__all__ = ["escape_text", "escape_attr_apos", "escape_attr_quot", "INVALID_XML_CHARS",
           "XmlForm", "render_event"]

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
        memo: rendered pieces that repeat from event to event (filled on first use).
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
        }
        object.__setattr__(self, "memo", memo)


def _num(value) -> str:
    return str(value) if type(value) is int else escape_text(str(value))


_ALL_INT = {int}


def render_event(e: Event, form: XmlForm, provider: str, guid: Optional[str],
                 channel: str) -> str:
    """One event as a single line of event XML in ``form`` (envelope values given)."""
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
