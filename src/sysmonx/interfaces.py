"""The three interfaces of the one loop: :class:`Source`, :class:`Stage` and :class:`Sink`.

::

    Source.events()  ──►  Stage.process(item, emit) ... Stage.process(item, emit)  ──►  Sink.write(item)
                          (each stage: keep, drop, or emit more)               (fan-out by item kind)

:mod:`sysmonx.pipeline` runs them: one loop for replay, the live sensor, following a log and
console mode. What flows is *items*, each with an ``item_kind`` string:

==========  ========================================  =========================================
item_kind   type                                      produced by
==========  ========================================  =========================================
``event``   :class:`~sysmonx.event.Event`             sources, stages (alerts as event 1000)
``alert``   :class:`~sysmonx.detection.alerts.Alert`  the Sigma correlation stage
``hits``    :class:`~sysmonx.detection.stages.RuleHits`  the Sigma match stage (internal)
``trace``   :class:`Trace`                            the filter stage in console mode
==========  ========================================  =========================================

A stage passes items of kinds it does not handle (returns True); a sink receives only the kinds
in its ``accepts``. ``emit(item)`` sends ``item`` through the stages *after* the emitting one and
on to the sinks before it returns; to put items after the current one, a stage emits the current
item first and returns False (the Sigma stages do that, so an event precedes its alerts).

Errors and losses are data: a source reports a damaged record through ``on_error`` (a
:class:`~sysmonx.core.errors.ReadError`, never an exception across the loop) and a live source
turns lost events into event 255.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, ClassVar, Iterable, Iterator, Optional

from .core.errors import SysmonXError
from .event import Event

if TYPE_CHECKING:
    from .configmodel import Config

__all__ = ["Source", "Stage", "Sink", "SinkStats", "Emit", "ErrorHandler", "Trace"]

#: ``emit(item)``: hand an item to the rest of the pipeline.
Emit = Callable[[Any], None]
#: Receives every damaged record / unreadable file a source meets.
ErrorHandler = Callable[[SysmonXError], None]


def _ignore_error(err: SysmonXError) -> None:
    """Default error handler of a source not run by a loop: errors are dropped."""


@dataclass(frozen=True, slots=True)
class Trace:
    """One block of rule-trace text (``[R] ...`` lines) for the console."""

    text: str
    item_kind: ClassVar[str] = "trace"


class Source(abc.ABC):
    """Yields events, lazily.

    Class attributes:
        name: registry name (``--input-format`` for file formats, ``live`` ...).
        summary: one line for ``sysmonx plugins``.
    Attributes:
        live: the source follows real time: the loop ticks stages with :meth:`now_ns` (also
            while it is idle) and applies stop and reload requests between items.
        on_error: receives a :class:`~sysmonx.core.errors.ReadError` for every damaged record,
            line or unreadable file; set by the loop before :meth:`events` is called.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    live: bool = False
    on_error: ErrorHandler = _ignore_error

    @classmethod
    def check_available(cls) -> None:
        """Raise :class:`~sysmonx.core.errors.SourceUnavailable` with the reason when this
        source cannot run here (default: it can)."""

    def open(self) -> None:
        """Acquire what :meth:`events` needs (start backends ...). Raises
        :class:`~sysmonx.core.errors.SourceUnavailable` when it cannot."""

    @abc.abstractmethod
    def events(self) -> Iterator[Optional[Event]]:
        """Yield events; a live source yields ``None`` when it has nothing right now, so the
        loop can tick stages and handle stop/reload requests."""

    def batches(self) -> Optional[Iterator[list[Any]]]:
        """The events of :meth:`events` in lists, or ``None`` (the default) when this source
        does not batch. Only recorded sources (not ``live``) are asked, by
        :meth:`Pipeline.run <sysmonx.pipeline.loop.Pipeline.run>`, which then runs each list's
        events through the stages one by one, as it would those of :meth:`events`. A source
        that batches gives the same events in the same order and does everything else it does
        between two events (``on_error`` reports, progress) only after the list of the events
        before it has been handed over, so the output and the reports are the same as with
        :meth:`events`; lists are never empty."""
        return None

    def use_raw(self, plan: Any) -> bool:
        """Take the loop's raw path ``plan`` (``sysmonx.core._speedups.RawPlan``) for the lists
        of :meth:`batches`: the records it writes itself come as ``None`` entries of the lists
        (each list still holds one entry per record); ``None``: no raw path (the loop tells the
        source before every run, so no plan of an earlier run stays). True when this source
        takes it; the default is False (the source ignores it)."""
        return False

    def now_ns(self) -> Optional[int]:
        """The source's clock for :meth:`Stage.tick` (UTC ns), ``None`` for recorded logs."""
        return None

    def trailer(self) -> Iterable[Event]:
        """Events that come after the stages have finished (the sensor's final event 4)."""
        return ()

    def error_event(self, ident: str, description: str) -> Optional[Event]:
        """An event 255 reporting a problem of the pipeline (an output that lost events, a
        rejected reload) in this source's envelope; ``None`` when the source's stream has no
        place for one (recorded logs)."""
        return None

    def reload(self, config: Optional[Config]) -> None:
        """A new configuration is in force (live sources write event 16)."""

    def stop(self) -> None:
        """Ask :meth:`events` to end soon (thread- and signal-safe)."""

    def close(self) -> None:
        """Release everything (stop backends, close files). Called once, also after errors."""


class Stage(abc.ABC):
    """One step between source and sinks.

    Class attributes:
        name: registry name (``--stage``).
        summary: one line for ``sysmonx plugins``.
        stateful: needs the one ordered stream (numbering, correlation); a stateless stage may
            run in several worker processes.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    stateful: ClassVar[bool] = False

    @abc.abstractmethod
    def process(self, item: Any, emit: Emit) -> bool:
        """Handle one item: return True to pass it on, False to drop it; ``emit`` adds items
        (see the module docstring for the order)."""

    def tick(self, now_ns: int, emit: Emit) -> None:
        """Time-driven work (correlation windows, heartbeats); ``now_ns`` is the source's clock
        (UTC ns)."""

    def finish(self, emit: Emit) -> None:
        """End of the stream: emit what is still pending (open correlation windows)."""

    def reload(self, config: Optional[Config]) -> None:
        """A new configuration is in force (the filter recompiles)."""

    def raw_step(self) -> Optional[tuple[str, Any]]:
        """This stage's compiled step over a record's text, for the loop's raw path
        (``sysmonx.core._speedups.RawPlan``: ``("dedup", streams)``, ``("clock", stage)``,
        ``("gate", stage)``, ``("count", stage)`` or ``("filter", stage)``; a plan needs a
        ``gate`` step), or ``None`` (the default): the stage has
        none, and the loop then runs every record as an Event through :meth:`process`. A step
        decides only the case its ``process`` decides the same way without side effects other
        than the ones the plan makes; every other record goes to :meth:`process` as an Event."""
        return None


@dataclass(slots=True)
class SinkStats:
    """Delivery counters of one sink: ``sent``, ``failed`` (the sink raised, or could not
    deliver), ``dropped`` (its queue was full)."""

    sent: int = 0
    failed: int = 0
    dropped: int = 0

    @property
    def undelivered(self) -> int:
        """``failed + dropped``."""
        return self.failed + self.dropped


class Sink(abc.ABC):
    """One output.

    Class attributes:
        name: registry name (``--format`` for the stream formats).
        summary: one line for ``sysmonx plugins``.
        accepts: the ``item_kind`` values it writes (default events only).
        stream_format: an event format written to a byte stream: a ``--format`` choice.
        slow: may block for long (a socket to another process): the fan-out puts it behind its
            own bounded queue and thread.
        counts_itself: :attr:`stats` is kept by the sink (it absorbs some failures itself)
            instead of by the fan-out.
    Attributes:
        target: what it writes to (a path, ``<stdout>``, a socket).
        label: how the output is named in messages (``-o events.log``, ``stdout``, ``syslog
            /dev/log``); empty: ``name -> target``.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    accepts: ClassVar[frozenset[str]] = frozenset({"event"})
    stream_format: ClassVar[bool] = False
    slow: ClassVar[bool] = False
    counts_itself: ClassVar[bool] = False
    target: str = ""
    label: str = ""

    @classmethod
    def open(cls, target: Any, **options: Any) -> Sink:
        """Create the sink on ``target`` (a path, ``-`` for standard output, a binary stream, a
        socket address, per sink) with its keyword ``options``.

        Raises:
            SinkError: the target cannot be opened.
            TypeError: an option the sink does not take.
        """
        return cls(**options)

    @abc.abstractmethod
    def write(self, item: Any) -> None:
        """Write one item. Raises ``OSError`` / :class:`~sysmonx.core.errors.SinkError` when it
        cannot (the fan-out counts it)."""

    def flush(self) -> None:
        """Push buffered output to the target."""

    def close(self) -> None:
        """Finish the output (a closing tag), flush, release the target. Idempotent."""


#: A binary stream a stream-format sink writes to.
Stream = BinaryIO
