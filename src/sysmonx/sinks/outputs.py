"""``-o OUT`` (repeatable) to sinks: a file path or ``-`` gets the stream format of ``--format``;
``SCHEME://...`` gets the registered sink whose ``schemes`` name SCHEME (``tcp``, ``tls``,
``udp``, ``http``, ``https``, ``sqlite``, ``nats``, ``kafka``, and those of plugins)."""

from __future__ import annotations

import re
from typing import Any, Optional

from ..core.errors import UsageError
from ..core.registry import SINKS
from ..interfaces import Sink

__all__ = ["is_url", "url_schemes", "url_sink_class", "open_url_output"]

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def is_url(spec: str) -> bool:
    """Whether an ``-o`` value is a URL (``scheme://``) rather than a path."""
    return bool(_URL.match(spec))


def url_schemes() -> dict[str, type[Sink]]:
    """URL scheme -> sink class, from the registered sinks' ``schemes`` attribute."""
    out: dict[str, type[Sink]] = {}
    for e in SINKS.entries():
        for scheme in getattr(e.obj, "schemes", ()) or ():
            out.setdefault(scheme, e.obj)
    return out


def url_sink_class(spec: str) -> Optional[type[Sink]]:
    """The sink class for the URL ``spec``, ``None`` when ``spec`` is not a URL.

    Raises:
        UsageError: a URL whose scheme no sink takes.
    """
    m = _URL.match(spec)
    if not m:
        return None
    scheme = m.group(1).lower()
    schemes = url_schemes()
    if scheme not in schemes:
        raise UsageError(f"-o {spec}: no output takes {scheme}:// (known: "
                         f"{', '.join(sorted(schemes))}; 'sysmonx plugins sinks' lists them)")
    return schemes[scheme]


def open_url_output(spec: str, **options: Any) -> Sink:
    """The sink for the output URL ``spec`` (its options in the URL's query).

    Raises:
        UsageError: unknown scheme or a bad URL. SinkError: the output (or its spool) cannot be
        opened.
    """
    cls = url_sink_class(spec)
    if cls is None:
        raise UsageError(f"-o {spec}: not a URL")
    sink = cls.open(spec, **options)
    if not sink.label:
        sink.label = f"-o {spec.split('?', 1)[0]}"
    return sink
