"""The one loop: source -> stages -> sinks, with a tick.

Replay, the live sensor, following a Sysmon for Linux log, console mode (``-t``) and every
``--jobs`` worker run :meth:`Pipeline.run`; they differ only in their source, stages and sinks
(:mod:`sysmonx.pipeline.build`). Per item::

    item = next(source.events())          # None: a live source has nothing right now
    for stage in stages:                   # each may drop it, or emit more items
        if not stage.process(item, emit): break
    else:
        fanout.deliver(item)               # to the sinks that accept its kind

``emit(x)`` from stage *i* sends ``x`` through stages *i+1...* and on to the sinks before it
returns (see :mod:`sysmonx.interfaces`). A live source (``Source.live``) gets more: about once a
second (``tick_s``) the loop calls ``stage.tick(source.now_ns(), emit)`` on every stage (a
correlation window on a quiet host closes on time); an output's loss period that ended is written
as event 255 (:mod:`sysmonx.pipeline.fanout`, ``ID`` ``Output``);
between two items it applies a stop or reload request: a reload loads the new configuration
(``reloader``), hands it to every stage and to the source (which writes event 16), or, when it
cannot be loaded, keeps the old one and reports event 255 ``ConfigReload``.

At the end of the source the stages finish (open correlation windows are emitted), then the
source's trailer (the sensor's final event 4) goes through, and :meth:`Pipeline.close` flushes and
closes the sinks. Damaged input records reach ``on_error`` (counted in ``errors``), never stop the
loop. A sink failure stops it only under the ``fatal`` policy (replay).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from typing import Any, Callable, Iterable, Optional, Sequence

from ..configmodel import Config
from ..core import native
from ..core.errors import SysmonXError
from ..event import Event
from ..interfaces import Emit, Source, Stage
from .fanout import FanOut, SinkSlot

__all__ = ["Pipeline"]

#: The compiled per-list loop (``_speedups.run_batch``: the loops below, same calls in the
#: same order), or None (pure Python).
_run_batch: Optional[Callable[..., int]] = (native.speedups.run_batch
                                             if native.speedups is not None else None)


class Pipeline:
    """Stages and sinks, run over one or more sources.

    Args:
        stages: in order.
        fanout: the sinks (:meth:`FanOut.build <sysmonx.pipeline.fanout.FanOut.build>`), or a
            list of sinks (delivered directly, ``fatal`` policy).
        on_error: receives every :class:`~sysmonx.core.errors.ReadError` a source reports.
        on_status: receives one-line status messages (a rejected reload ...).
        reloader: returns the configuration to put in force on a reload request; raises
            ``SysmonXError`` / ``OSError`` when it cannot (the old one stays).
        tick_s: seconds between ticks of a live source.
    Attributes:
        errors: damaged records and unreadable files reported by sources (``error`` severity).
        warnings: ``warning`` reports (everything read, but the meaning changes).
        repaired: records read after undoing a known export fault, per fault (counted, not
            passed to ``on_error``).
        reload_errors: reloads that were refused.
        raw_records: records written by the raw path (:meth:`_raw_plan`) without an Event.
    """

    def __init__(self, stages: Sequence[Stage], fanout: Any, *,
                 on_error: Optional[Callable[[SysmonXError], None]] = None,
                 on_status: Optional[Callable[[str], None]] = None,
                 reloader: Optional[Callable[[], Optional[Config]]] = None,
                 tick_s: float = 1.0) -> None:
        self.stages = list(stages)
        self.fanout = fanout if isinstance(fanout, FanOut) else FanOut.build(list(fanout))
        self.on_error = on_error
        self.on_status = on_status or (lambda msg: None)
        self.reloader = reloader
        self.tick_s = tick_s
        self.errors = 0
        self.warnings = 0
        self.repaired: Counter[str] = Counter()
        self.reload_errors = 0
        self.fanout.on_error = self._error
        self.fanout.on_status = self.on_status
        self._source: Optional[Source] = None
        self._stop = False
        self._reload = False
        self._attention = False  # a request or tick is due: checked between items
        self._lock = threading.Lock()
        self._started = False
        self._sent_pending = 0  # events written by a compiled batch that then raised
        self.raw_records = 0  # records the raw path wrote without an Event (_raw_plan)
        self._raw_seen = 0
        # emits[i]: what stage i's emit() does (push into stages i+1...)
        self._emits: list[Emit] = [self._emitter(i + 1) for i in range(len(self.stages))]
        self._steps = list(zip([s.process for s in self.stages], self._emits, strict=True))
        self._processes = tuple(s.process for s in self.stages)  # for the compiled loop
        self._emits_t = tuple(self._emits)

    # -- control (any thread, signal handlers) ---------------------------------------------------

    def request_stop(self) -> None:
        """End the run after the current item (the source's trailer is still written)."""
        self._stop = True
        self._attention = True
        src = self._source
        if src is not None:
            src.stop()

    def request_reload(self) -> None:
        """Re-read the configuration between two items (SIGHUP)."""
        self._reload = True
        self._attention = True

    # -- the loop ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the sinks' delivery threads (done by :meth:`run` when needed)."""
        if not self._started:
            self._started = True
            self.fanout.start()

    def run(self, source: Source, *, finish: bool = True) -> None:
        """Run ``source`` to its end (or a stop request) through the stages into the sinks.

        Args:
            finish: end of the whole stream: let the stages emit what is pending and write the
                source's trailer. Replay workers that feed several sources into one pipeline
                pass False and call :meth:`finish` once.
        Raises:
            SinkError: a sink failed under the ``fatal`` policy.
            OutputClosed: an output's reader went away.
            SourceUnavailable: the source cannot start.
        """
        self.start()
        source.on_error = self._error
        self._source = source
        try:
            source.open()
            if self._stop:
                source.stop()
            if source.live:
                self._run_live(source)
            else:
                self._run_recorded(source)
            if finish:
                self.finish()
                for item in source.trailer():
                    self._push(item, 0)
                if source.live:
                    # outputs still failing: reported to the others, after the trailer (the
                    # guard's last findings and heartbeat, 4 Stopped), so that the events 255
                    # Output of an output add up to what the closing summary says it did not
                    # take (new-user report s13 #4: the trailer's events were counted after
                    # the last report)
                    self.fanout.settle()
                    self.fanout.end_losses()
                    self._report_losses(source)
        finally:
            self._source = None
            source.close()

    def _run_recorded(self, source: Source) -> None:
        direct = self.fanout.direct_event_writer()
        plan = self._raw_plan(direct)
        # always told, None included: a source run again keeps no plan of an earlier run
        if not source.use_raw(plan):
            plan = None
        batches = source.batches()
        if batches is not None and _run_batch is not None:
            self._run_batches(batches, direct, plan)
            return
        # the pure-Python loop: a source's lists are read item by item
        items = source.events() if batches is None else itertools.chain.from_iterable(batches)
        if direct is not None:
            self._direct(items, *direct)
            return
        steps = self._steps
        deliver = self.fanout.deliver
        for item in items:
            if item is None:
                continue
            for process, emit in steps:
                if not process(item, emit):
                    break
            else:
                deliver(item)
            if self._stop:
                break

    def _raw_plan(self, direct: Optional[tuple[SinkSlot, Any]]) -> Any:
        """The raw path (``_speedups.RawPlan``) when every stage offers a compiled step
        (:meth:`Stage.raw_step <sysmonx.interfaces.Stage.raw_step>`) and the one direct sink is
        the compiled JSON-lines writer; ``None`` otherwise (then every record is an Event, as
        before). With it, the source writes the records every step passes itself (each the same
        line, the same stage counters, in the same order) and hands every other record to this
        loop as its Event, which then goes through all the stages."""
        if direct is None or _run_batch is None or native.speedups is None:
            return None
        self._raw_seen = 0
        steps = []
        for stage in self.stages:
            step = stage.raw_step()
            if step is None:
                return None
            steps.append(step)
        slot, write = direct
        if type(write) is not native.speedups.LineWriter:  # not the compiled writer
            return None
        if not any(kind == "gate" for kind, _ in steps):  # e.g. --dask's parent: no Sysmon gate
            return None
        # made the same way whatever was imported before (RawPlan needs only the JSON side set
        # up, which the LineWriter's module did); a bad step raises
        return native.speedups.RawPlan(tuple(steps), write, slot.failure, self)

    def _run_batches(self, batches: Any, direct: Optional[tuple[SinkSlot, Any]],
                     plan: Any = None) -> None:
        """The loop of :meth:`_run_recorded` (``direct``: :meth:`_direct`'s one events-only sink
        written directly, its slot and ``write``) over a source's
        :meth:`~sysmonx.interfaces.Source.batches`, compiled: the same per-item steps in the same
        order, without a generator hand-off per item. ``plan``: the raw path the source took
        (:meth:`_raw_plan`): the lines it wrote are added to the slot's ``sent``; its ``None``
        entries are skipped."""
        assert _run_batch is not None
        deliver = self.fanout.deliver
        processes, emits = self._processes, self._emits_t
        if direct is None:
            for batch in batches:
                _run_batch(batch, processes, emits, Event, None, None, deliver, self)
                if self._stop:
                    return
            return
        slot, write = direct
        sent = 0
        self._sent_pending = 0
        try:
            for batch in batches:
                sent += _run_batch(batch, processes, emits, Event, write, slot.failure, deliver,
                                   self)
                if plan is not None:
                    error = plan.take_error()
                    if error is not None:  # the slot's failure() raised on a raw write
                        raise error
                if self._stop:
                    return
        finally:
            slot.sent += sent + self._sent_pending
            self._sent_pending = 0
            if plan is not None:
                slot.sent += plan.sent
                plan.sent = 0
                self.raw_records += plan.raw - self._raw_seen
                self._raw_seen = plan.raw

    def _direct(self, items: Iterable[Any], slot: SinkSlot, write: Any) -> None:
        """Each item through the stages, then events to ``write`` and anything else to the
        fan-out; a failed write goes to ``slot.failure``, written events are added to
        ``slot.sent`` (also when a failure ends the run); ``None`` items are skipped."""
        steps = self._steps
        deliver = self.fanout.deliver
        sent = 0
        try:
            for item in items:
                if item is None:
                    continue
                for process, emit in steps:
                    if not process(item, emit):
                        break
                else:
                    if item.__class__ is Event:
                        try:
                            write(item)
                        except Exception as exc:  # noqa: BLE001 - accounted by the slot
                            slot.failure(exc)
                        else:
                            sent += 1
                    else:
                        deliver(item)
                if self._stop:
                    break
        finally:
            slot.sent += sent

    def _run_live(self, source: Source) -> None:
        steps = self._steps
        deliver = self.fanout.deliver
        monotonic = time.monotonic
        next_tick = monotonic() + self.tick_s
        reports = self.fanout.reports
        n = 0
        for item in source.events():
            if item is not None:
                for process, emit in steps:
                    if not process(item, emit):
                        break
                else:
                    deliver(item)
                if reports:
                    self._report_losses(source)
                n += 1
                if n & 63 and not self._attention:
                    continue
            if self._attention:
                self._attention = False
                if self._stop:
                    source.stop()
                if self._reload:
                    self._reload = False
                    self._do_reload(source)
            if reports:
                self._report_losses(source)
            now = monotonic()
            if now >= next_tick:
                next_tick = now + self.tick_s
                self._tick(source)

    def finish(self) -> None:
        """End of the stream: every stage emits what it still holds."""
        for i, stage in enumerate(self.stages):
            stage.finish(self._emits[i])

    def emitter_after(self, stage: Stage) -> Emit:
        """``stage``'s ``emit``: sends an item through the stages after it and on to the sinks
        (for work a stage does between two sources, :meth:`TimeWindowStage.end_file
        <sysmonx.stages.window.TimeWindowStage.end_file>`).

        Raises:
            ValueError: ``stage`` is not one of this pipeline's.
        """
        return self._emits[self.stages.index(stage)]

    def close(self) -> None:
        """Flush and close every sink.

        Raises:
            SinkError: buffered output could not be written (``fatal`` policy).
        """
        self.start()
        self.fanout.close()

    # -- internals --------------------------------------------------------------------------------

    def _emitter(self, start: int) -> Emit:
        def emit(item: Any) -> None:
            self._push(item, start)
        return emit

    def _push(self, item: Any, start: int) -> None:
        steps = self._steps
        for i in range(start, len(steps)):
            process, emit = steps[i]
            if not process(item, emit):
                return
        self.fanout.deliver(item)

    def _error(self, err: SysmonXError) -> None:
        severity = getattr(err, "severity", "error")
        if severity == "repaired":  # counted; the source sums them up per file
            self.repaired[err.message] += 1
            return
        if severity == "error":
            self.errors += 1
        elif severity == "warning":
            self.warnings += 1
        if self.on_error is not None:
            self.on_error(err)

    def _tick(self, source: Source) -> None:
        now = source.now_ns()
        if now is not None:
            for i, stage in enumerate(self.stages):
                stage.tick(now, self._emits[i])

    def _report_losses(self, source: Source) -> None:
        """Write an event 255 (``ID`` ``Output``) for every output's loss period that ended:
        to every output when it works again, else to the others."""
        for report in self.fanout.take_reports():
            ev = source.error_event("Output", report.description)
            if ev is None:
                continue
            if not report.recovered:
                self.fanout.mark_report(ev, report.slot)
            self._push(ev, 0)

    def _do_reload(self, source: Source) -> None:
        if self.reloader is None:
            return
        try:
            config = self.reloader()
        except (SysmonXError, OSError) as exc:
            self.reload_errors += 1
            self.on_status(f"configuration not applied, the previous one stays: {exc}")
            ev = source.error_event("ConfigReload", f"configuration not applied: {exc}")
            if ev is not None:
                self._push(ev, 0)
            return
        for stage in self.stages:
            stage.reload(config)
        source.reload(config)
        self.on_status(reload_applied(config))


def reload_applied(config: Any) -> str:
    """The status line of a reload that was applied (the refusal's counterpart): ``configuration
    applied: PATH (SHA256=HEX, schema 4.90, N rule sets, M filters)``; ``configuration applied:
    none (nothing filtered)`` for ``None``. Event 16 carries the same hash."""
    if config is None:
        return "configuration applied: none (nothing filtered)"
    from ..configmodel import size_text
    return (f"configuration applied: {config.path} (SHA256={config.sha256 or '-'}, schema "
            f"{config.schema_version_text}, {size_text(getattr(config, 'rule_sets', ()))})")
