"""Outputs (sinks): events and alerts out, one format or destination per module.

==============  ==================================================  ==================================
name            class                                               output
==============  ==================================================  ==================================
xml             :class:`.xml_windows.WindowsXmlWriter`              event XML as the Windows Event
                                                                    Log renders it
linux-xml       :class:`.xml_linux.LinuxXmlWriter`                  Sysmon for Linux single-line XML
jsonl           :class:`.jsonl.JsonlWriter`                         SysmonX JSON lines
csv             :class:`.csv_timeline.CsvTimelineWriter`            CSV timeline (Timeline Explorer,
                                                                    spreadsheets)
syslog          :class:`.syslog.SyslogWriter`                       the local syslog daemon, as
                                                                    Sysmon for Linux sends
console         :class:`.console.ConsoleSink`                       ``-t`` console text, rule traces
alerts-jsonl    :class:`.alerts.AlertJsonlSink`                     Sigma alerts as JSON lines
==============  ==================================================  ==================================

Each sink registers itself in :data:`sysmonx.core.registry.SINKS` where it is defined. The four
stream formats (``--format``) are :class:`.base.Writer` subclasses: ``Writer(stream, **options)``
over a binary stream, with ``write(event)`` and ``close()``, writing exactly one line per event
(the CSV writer: after one header line): no value can forge another field, event or line, nor put
a terminal escape (ESC, C1 controls) in the output as a raw character.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from ..core.errors import PluginError, UsageError
from ..core.registry import SINKS
from .base import Writer
from .wholeline import WholeLineFile

__all__ = ["Writer", "WRITERS", "writer_class", "stream_formats", "WholeLineFile",
           "BUILTIN_STREAM_FORMATS"]


def stream_formats() -> dict[str, type[Writer]]:
    """``--format`` name -> writer class: the registered sinks that render events to a byte
    stream, in registration order."""
    return {e.name: e.obj for e in SINKS.entries()
            if isinstance(e.obj, type) and issubclass(e.obj, Writer)}


#: The built-in stream formats -> the module of this package that registers each:
#: :func:`writer_class` imports that module alone (a replay writing JSON lines does not import
#: every sink: the network outputs, their ssl, asyncio and clients cost ~0.1 s of CPU);
#: ``tests/test_registry.py`` checks it against the registry.
BUILTIN_STREAM_FORMATS = {"xml": "xml_windows", "linux-xml": "xml_linux", "jsonl": "jsonl",
                          "csv": "csv_timeline", "ecs": "ecs"}


def writer_class(name: str) -> type[Writer]:
    """The writer class registered as the stream format ``name`` (a built-in one imported
    alone, :data:`BUILTIN_STREAM_FORMATS`; any other looked up in the whole registry).

    Raises:
        UsageError: unknown name (a ``ValueError``).
    """
    module = BUILTIN_STREAM_FORMATS.get(name)
    if module is not None:
        import_module(f"{__name__}.{module}")
        found = SINKS.registered(name)
        if isinstance(found, type) and issubclass(found, Writer):
            return found
    try:
        cls = SINKS.get(name)
    except PluginError:
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, Writer)):
        raise UsageError(f"unknown output format {name!r}; expected one of "
                         f"{', '.join(stream_formats())}")
    return cls


def __getattr__(name: str) -> Any:
    if name == "WRITERS":  # computed from the registry
        return stream_formats()
    raise AttributeError(name)
