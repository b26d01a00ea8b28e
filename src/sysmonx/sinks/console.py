"""Console mode output (``sysmonx -t``): each event as Sysmon's debug mode prints it, and the rule
traces of the filter stage.

An event is ``Event <SYMBOL>`` then ``\\t<Field>: <value>`` per field (the layout of Sysmon's
debug mode and of sysmonLogView, spec/sysmon-semantics.md section 5.4); a trace is the ``[R] ...``
text the filter stage emits in console mode (:class:`~sysmonx.interfaces.Trace`), printed before
the event it explains. Every value is shown with :func:`~sysmonx.textsafe.visible` (tab kept), so
nothing read from an event can drive the terminal. Text is flushed as it is written; when the
reader goes away (``| head``) the sink raises :class:`~sysmonx.core.errors.OutputClosed`, which
stops the run quietly.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Optional, TextIO

from ..core.errors import OutputClosed
from ..core.registry import SINKS
from ..interfaces import Sink, SinkStats, Trace
from ..schema import CURRENT
from ..textsafe import visible

__all__ = ["ConsoleSink", "render_console_event"]


def render_console_event(event: Any) -> str:
    """One event in the console layout (ends with a line break)."""
    ev = CURRENT.events.get(event.event_id)
    symbol = ev.symbol if ev is not None else f"EVENT_{event.event_id}"
    return f"Event {symbol}\n" + "".join(f"\t{visible(k, chr(9))}: {visible(v, chr(9))}\n"
                                         for k, v in event.data.items())


@SINKS.register
class ConsoleSink(Sink):
    """Prints events and rule traces on a text stream (default standard output).

    Args:
        out: the text stream.
        lock: shared with other writers of ``out`` (optional).
    """

    name = "console"
    summary = "console mode (-t): events as Sysmon's debug mode prints them, and rule traces"
    accepts = frozenset({"event", "trace"})

    def __init__(self, out: Optional[TextIO] = None, lock: Optional[threading.Lock] = None):
        self.out = out if out is not None else sys.stdout
        self.lock = lock or threading.Lock()
        self.target = "<console>"
        self.stats = SinkStats()

    @classmethod
    def open(cls, target: Any = None, **options: Any) -> ConsoleSink:
        """The sink on the text stream ``target`` (default standard output)."""
        return cls(target, **options)

    def write(self, item: Any) -> None:
        """Print one event or trace.

        Raises:
            OutputClosed: the stream's reader went away.
        """
        text = item.text if type(item) is Trace else render_console_event(item)
        with self.lock:
            try:
                self.out.write(text)
                self.out.flush()
            except (BrokenPipeError, ValueError) as exc:
                raise OutputClosed("console output closed") from exc
