"""Visible renderings of characters that act on a display instead of being shown.

Attacker-controlled text (a command line, a file name, an input path) can carry characters that a
terminal or a spreadsheet obeys: ESC and the other C0 controls start ANSI/OSC sequences
(``\\x1b[31m``, ``\\x1b]0;title\\x07``), CR and BS overwrite what was printed, LF forges a new line,
the C1 controls include the 8-bit CSI (U+009B), and the Unicode bidirectional controls (U+202E
RIGHT-TO-LEFT OVERRIDE ...) reorder what is displayed (``exe.txt`` shown for ``txt.exe``).
:func:`visible` replaces each of them by the six-character text ``\\uXXXX`` (backslash, ``u``, four
lower-case hex digits), the same spelling the XML writers use for characters XML cannot carry
(:mod:`sysmonx.sinks._xml`), so the reader sees that something was there and what it was.

Used for every line the command line prints (:func:`safe_console`) and for the display columns
of the CSV timeline (:mod:`sysmonx.sinks.csv_timeline`).
"""

from __future__ import annotations

import re

__all__ = ["split_comma_list", "CONTROL_CLASS", "visible", "terminal_safe", "terminal_lines",
           "safe_console"]

#: Regex class body of the characters :func:`visible` renders: C0 controls, DEL, C1 controls, the
#: Unicode line/paragraph separators, the bidirectional marks, embeddings, overrides and isolates,
#: lone surrogates, and the non-characters U+FFFE / U+FFFF.
CONTROL_CLASS = ("\\x00-\\x1f\\x7f-\\x9f\\u061c\\u200e\\u200f\\u2028\\u2029\\u202a-\\u202e"
                 "\\u2066-\\u2069\\ud800-\\udfff\\ufffe\\uffff")

_PATTERNS: dict = {}


def _pattern(keep: str) -> re.Pattern:
    pat = _PATTERNS.get(keep)
    if pat is None:
        body = CONTROL_CLASS
        if keep:
            # a character class minus ``keep``: (?![keep])[class]
            pat = re.compile("(?![" + "".join("\\u%04x" % ord(c) for c in keep) + "])[" + body
                             + "]")
        else:
            pat = re.compile("[" + body + "]")
        _PATTERNS[keep] = pat
    return pat


def _repl(m: re.Match) -> str:
    return "\\u%04x" % ord(m.group())


def visible(text: str, keep: str = "") -> str:
    """``text`` with every character of :data:`CONTROL_CLASS` (except those in ``keep``) written
    as the text ``\\uXXXX``.

    Args:
        text: any string (lone surrogates included).
        keep: characters of the class to leave as they are (e.g. ``"\\t"``).
    Returns:
        a string without display-controlling characters (except ``keep``); equal to ``text``
        (the same object) when there was nothing to replace.
    """
    pat = _pattern(keep)
    return pat.sub(_repl, text) if pat.search(text) else text


def terminal_safe(text: str) -> str:
    """``text`` made safe to print on a terminal as one line: :func:`visible` with nothing kept
    (tab, CR and LF included), so no value can emit an escape sequence, move the cursor, forge
    another line or reorder the display."""
    return visible(text)


def terminal_lines(text: str, indent: str = "  ") -> str:
    """``text`` made safe to print on a terminal, keeping its line breaks readable: each line is
    :func:`terminal_safe`, and every line after the first starts with ``indent``, so a value
    holding a line feed can never forge a line that starts like the program's own lines."""
    if "\n" not in text:
        return terminal_safe(text)
    return ("\n" + indent).join(terminal_safe(line) for line in text.split("\n"))


def safe_console(**options):
    """A :class:`rich.console.Console` whose ``print`` neutralises every ``str`` it is given with
    :func:`terminal_lines` and never interprets console markup (``[link=...]`` would emit an OSC 8
    escape), emoji codes or highlighting in it. Rich renderables (tables, progress bars) are
    printed as usual; put untrusted text in them only through :func:`terminal_safe`.

    Args:
        options: passed to ``Console`` (e.g. ``stderr=True``).
    """
    from rich.console import Console

    class SafeConsole(Console):
        """A Console that passes every printed string through :func:`terminal_lines`."""

        def print(self, *objects, **kwargs):
            objects = tuple(terminal_lines(o) if isinstance(o, str) else o for o in objects)
            kwargs["markup"] = False
            kwargs["emoji"] = False
            kwargs["highlight"] = False
            return super().print(*objects, **kwargs)

    options.setdefault("markup", False)
    options.setdefault("emoji", False)
    options.setdefault("highlight", False)
    return SafeConsole(**options)


def split_comma_list(text: str) -> list[str]:
    """Split a comma list the way Sysmon's ``StringListDup`` does (HashAlgorithms and the
    command-line process lists): ``,`` separates items, ``,,`` is a literal comma, and the list is
    a multi-string that ends at its first empty item, so ``a,b,`` is ``[a, b]`` and ``,a`` is
    empty (spec 1.2).

    >>> split_comma_list("chrome.exe,my,,app.exe")
    ['chrome.exe', 'my,app.exe']
    """
    items, cur, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == ",":
            if text[i + 1:i + 2] == ",":
                cur.append(",")
                i += 2
                continue
            items.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    items.append("".join(cur))
    out = []
    for item in items:
        if item == "":
            break
        out.append(item)
    return out
