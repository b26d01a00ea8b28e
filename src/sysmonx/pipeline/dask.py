"""Scale-out replay on Dask distributed: ``sysmonx replay PATH... --dask SCHEDULER|local``.

One Dask task per input file runs, in a worker, the stateless part of the replay: reading, the
clock check, the time window, the Sysmon gate, the filter (RuleName included) and the Sigma
*match* stage. It returns the file's kept events (each as its exact SysmonX JSON line, with its
origin and the indices of the detection rules it matched), its counters and its error lines.
The driver takes the results **in input order** and runs what needs the one ordered stream: the
duplicate filter, Sigma correlation and the alerts as events 1000, then the outputs. So the
output is the one a single-process replay writes: same events, same order, same alerts, the
same bytes.

::

    driver: files ─► client.map(one task per file) ──────────────► results in input order
    worker: read ─► clock ─► window ─► gate ─► filter ─► sigma-match ─► [(event, origin, hits)]
    driver: ─► duplicates ─► sigma-correlate ─► sigma-alert-events ─► outputs

Tasks are pure (a file and the options in, data out): when a worker dies in the middle of a job,
the scheduler runs its tasks again on another worker and the driver, which only reads results,
writes the same output (``tests/test_dask_replay.py`` kills one).

The counters are one process's too. The duplicate check runs first in one process, so a
duplicate is counted as a duplicate only, whatever the later stages would have done with it.
Here the workers' stages run first: a worker also returns, in its place among the kept events,
what identifies each record its stages dropped (provider, computer, channel, EventRecordID,
System time; a SigmaAlert's fields the check reads) and which stage dropped it, and the
driver's duplicate check sees every record in input order and takes a duplicate out of the
counter that stage counted it in (``excluded``, out of the time window, other records dropped,
alerts replaced). With ``--rules``, the driver also notes the workers' matches in input order
and decides which SigmaAlert events read back this run makes again (their events may be in
another file than the alert), then holds back the read-back alerts ``--min-level``/
``--technique``/``--tag`` do not keep, as one process does in that order. Left different: a
duplicate record still passes the workers' stateful stages (``--tamper``'s checks, which one
process never shows a duplicate), and the per-rule match counts of the Sigma summary are the
workers' (not shown). Memory: the driver holds one file's kept events and dropped-record
identities at a time (plus results that completed ahead of the next in order).

``local`` starts a ``LocalCluster`` of ``workers`` single-threaded worker processes on this
machine; any other value is a scheduler address (``tcp://HOST:8786``) whose workers have
SysmonX installed and can read the input paths.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator, Optional, Sequence

import orjson

from ..core.errors import SysmonXError
from ..event import SIGMA_ALERT_EVENT_ID, SIGMA_ALERT_PROVIDER, SYSMON_PROVIDERS, Event
from ..interfaces import Sink, Source, Stage
from ..sinks.jsonl import event_to_json
from ..sources.jsonl import event_from_object
from ..stages.dedup import DuplicateFilter
from ..stages.gate import sigma_channels, sigma_only, sigma_only_channels
from .fanout import FanOut
from .loop import Pipeline
from .replay import ReplayOptions, ReplayStats

__all__ = ["replay_dask", "dask_task", "DaskUnavailable"]


class DaskUnavailable(SysmonXError, RuntimeError):
    """Dask distributed is not installed or the scheduler cannot be reached."""


# per worker process: compiled filter and rules, built once per (options, rules) token
_CACHE: dict[str, Any] = {}


class _Capture(Sink):
    """Collects what the worker's stages pass: events and their rule hits, in order; and, in
    their place in that order, what identifies the records the stages dropped (:class:`_Fates`)."""

    accepts = frozenset({"event", "hits"})

    def __init__(self) -> None:
        self.items: list[tuple[Optional[bytes], Any, tuple[int, ...]]] = []
        self.fates: Optional[_Fates] = None

    def write(self, item: Any) -> None:
        fates = self.fates
        if type(item) is Event:
            if fates is not None and item is fates.current:
                fates.kept = True
            self.items.append((event_to_json(item), item.origin, ()))
        else:  # RuleHits
            e = item.event
            if fates is not None and e is fates.current:
                fates.kept = True
            self.items.append((event_to_json(e), e.origin, tuple(r.index for r in item.hits)))


# why a worker's stages dropped a record (what they counted it as): outside the time window,
# another provider's record the gate dropped, a Sysmon event the filter excluded, a SigmaAlert
# read back that this run's rules make again, or one the alert selection held back
_WINDOW, _GATE, _FILTER, _REPLACED, _HELD, _OTHER = range(6)


class _Fates:
    """Which records a worker's stages dropped, and why, so that the driver's duplicate check
    sees every record read, as the one-process replay's (first stage) does.

    ``start`` (first stage) takes each record read; ``reached[0]`` (right before the filter)
    and ``reached[1]`` (right after it) note how far it got; the capture notes when it was
    passed on. A record that was not passed on is added to the capture's items as ``(None,
    (fate, EventID, provider, computer, channel, EventRecordID, System time, SigmaAlert
    fields or None), ())`` (the fields the duplicate check reads), in its place among them.
    A record without an EventRecordID is never a duplicate: nothing is added for it."""

    def __init__(self, capture: _Capture) -> None:
        self.capture = capture
        capture.fates = self
        self.current: Optional[Event] = None
        self.kept = False
        self.level = 0
        self.snap: tuple[int, ...] = ()
        self.rp: Any = None
        outer = self

        class _Start(Stage):
            name = "dask-record"

            def process(self, item: Any, emit: Any) -> bool:
                if type(item) is Event:
                    outer.settle()
                    outer.current, outer.kept, outer.level = item, False, 0
                    outer.snap = outer.counters()
                return True

        class _Reached(Stage):
            name = "dask-reached"

            def __init__(self, level: int) -> None:
                self.level = level

            def process(self, item: Any, emit: Any) -> bool:
                if item is outer.current:
                    outer.level = self.level
                return True

        self.start = _Start()
        self.reached = (_Reached(1), _Reached(2))

    def counters(self) -> tuple[int, ...]:
        """The dropping stages' counters (window, gate, replaced, held back read back)."""
        rp = self.rp
        win, gate, match, tri = rp._window, rp._gate, rp._match, rp._triage
        return (win.out_of_window if win is not None else 0,
                gate.non_sysmon - gate.non_sysmon_written - gate.non_sysmon_sigma,
                match.replaced if match is not None else 0,
                tri.held_back_read if tri is not None else 0)

    def settle(self) -> None:
        """Add the current record to the capture's items if it was dropped."""
        e = self.current
        if e is None:
            return
        self.current = None
        if self.kept or e.record_id is None or e.record_id < 0:
            return
        if self.level == 2:
            now = self.counters()
            fate = (_REPLACED if now[2] > self.snap[2] else _HELD if now[3] > self.snap[3]
                    else _OTHER)
        elif self.level == 1:
            fate = _FILTER
        else:
            now = self.counters()
            fate = (_WINDOW if now[0] > self.snap[0] else _GATE if now[1] > self.snap[1]
                    else _OTHER)
        alert = None
        if e.provider == SIGMA_ALERT_PROVIDER:
            d = e.data
            alert = {k: d[k] for k in ("RuleId", "RecordIds", "Channels", "SourceFile")
                     if k in d}
        self.capture.items.append((None, (fate, e.event_id, e.provider, e.computer, e.channel,
                                          e.record_id, e.time_created, alert), ()))


def dask_task(path: str, options: ReplayOptions, rule_paths: Sequence[str], token: str
              ) -> tuple[list[tuple[Optional[bytes], Any, tuple[int, ...]]], ReplayStats,
                         list[list[str]]]:
    """The worker's part for one file (module docstring): ``(items, stats, error lines)``; an
    item is ``(event JSON line, origin, matched rule indices)``, or, unless
    ``options.keep_duplicates``, ``(None, dropped record, ())`` in the place of a record the
    stages dropped (:class:`_Fates`); an error line ``[severity, text]``."""
    from ..filtering import FilterEngine
    cached = _CACHE.get(token)
    if cached is None:
        engine = FilterEngine(options.config, options.engine_options) \
            if options.config is not None else None
        detection = None
        if rule_paths:
            from ..detection import DetectionStage
            detection = DetectionStage.from_paths(list(rule_paths))
        cached = _CACHE[token] = (engine, detection)
    engine, detection = cached
    import dataclasses
    from .replay import Replayer
    extra: list[Any] = []
    if detection is not None:
        from ..detection.stages import SigmaMatchStage
        extra.append(SigmaMatchStage(detection))
    capture = _Capture()
    fates = _Fates(capture) if not options.keep_duplicates else None
    errors: list[list[str]] = []

    def on_error(err: Any) -> None:
        errors.append([getattr(err, "severity", "error"), str(err)])
    if fates is not None:
        extra.insert(0, fates.reached[1])
    rp = Replayer(dataclasses.replace(options, keep_duplicates=True,
                                      sigma_channels=sigma_channels(detection)), None,
                  engine=engine,
                  sinks=[capture], extra_stages=extra, on_error=on_error,
                  at_start=[fates.start] if fates is not None else [],
                  before_filter=[fates.reached[0]] if fates is not None else [])
    if fates is not None:
        fates.rp = rp
    rp.run_file(path)
    if fates is not None:
        fates.settle()
    stats = rp.stats
    return capture.items, stats, errors


def _dropped(info: tuple[Any, ...]) -> Event:
    """The record a worker dropped, as much of it as the duplicate check reads."""
    _fate, eid, provider, computer, channel, rid, time_created, alert = info
    return Event(eid, alert or {}, provider=provider, provider_guid=None, channel=channel,
                 computer=computer, time_created=time_created, record_id=rid)


def _uncount(stats: ReplayStats, info: tuple[Any, ...]) -> None:
    """A record a worker dropped is a duplicate: count it as the one-process replay does (a
    duplicate, in ``records`` only), not as what the worker's stages counted it."""
    fate, eid = info[0], info[1]
    stats.duplicates += 1
    if fate == _WINDOW:
        stats.out_of_window -= 1
    elif fate == _GATE:
        stats.non_sysmon -= 1
    elif fate == _FILTER:
        stats.sysmon -= 1
        stats.excluded[eid] -= 1
    elif fate == _REPLACED:
        stats.sigma_alerts -= 1
        stats.alerts_replaced -= 1
    elif fate == _HELD:
        stats.sigma_alerts -= 1
        stats.alerts_held_back -= 1


class _Merged(Source):
    """The driver's source: the workers' items, file after file, in input order."""

    name = "dask-merged"

    def __init__(self, items: Iterator[Any]) -> None:
        self._items = items

    def events(self) -> Iterator[Optional[Event]]:
        yield from self._items


def replay_dask(files: list[str], options: ReplayOptions, scheduler: str, sinks: list[Sink], *,
                detection: Any = None, rule_paths: Sequence[str] = (), workers: int = 2,
                on_error: Callable[[Any], None], alerts_to_stream: bool = True,
                on_file_done: Optional[Callable[[str, ReplayStats], None]] = None,
                client: Any = None) -> ReplayStats:
    """Replay ``files`` on a Dask cluster into ``sinks`` (module docstring).

    Args:
        scheduler: ``local`` or a scheduler address.
        detection: the driver's loaded :class:`~sysmonx.detection.stage.DetectionStage`
            (correlation), loaded from ``rule_paths`` (which the workers load for matching).
        workers: worker processes of a ``local`` cluster.
        on_error: receives each error/warning line (a ``ReadError``-like object with
            ``severity``) in file order.
        client: an existing ``distributed.Client`` (tests); closed by the caller.
    Returns:
        the merged :class:`~sysmonx.pipeline.replay.ReplayStats`.
    Raises:
        DaskUnavailable: distributed is missing or the scheduler cannot be reached.
        SinkError: an output failed.
    """
    import importlib
    try:
        dist: Any = importlib.import_module("distributed")  # untyped: used through Any
        Client, LocalCluster = dist.Client, dist.LocalCluster
    except ImportError:
        raise DaskUnavailable("--dask needs dask distributed (pip install 'sysmonx[dask]')") \
            from None
    import uuid
    token = uuid.uuid4().hex
    own_client = client is None
    cluster = None
    if client is None:
        try:
            if scheduler == "local":
                cluster = LocalCluster(n_workers=max(1, workers), threads_per_worker=1,
                                       processes=True, dashboard_address=None)
                client = Client(cluster)
            else:
                client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise DaskUnavailable(f"--dask {scheduler}: {exc}") from exc
    total = ReplayStats()
    dedup = None if options.keep_duplicates else DuplicateFilter()
    compiled = detection.matcher.compiled if detection is not None else []
    channels = sigma_only_channels(options.non_sysmon, detection)
    try:
        # with rules, the driver's alert-triage selects the SigmaAlert events read back too,
        # after the driver decided which ones this run makes again (as one process does)
        import dataclasses
        worker_options = (dataclasses.replace(options, triage=None) if detection is not None
                          else options)
        # --alerts-only leaves the events out in the driver, after correlation saw them
        worker_options = dataclasses.replace(worker_options, alerts_only=False)
        opt = client.scatter(worker_options, broadcast=True)
        futures = [client.submit(dask_task, f, opt, list(rule_paths), token, pure=False,
                                 key=f"sysmonx-replay-{i}-{token}")
                   for i, f in enumerate(files)]

        class _Line(str):
            severity = "error"

        def items() -> Iterator[Any]:
            from ..detection.stages import RuleHits, SigmaMatchStage
            # the workers' matches, in input order: a SigmaAlert event read back whose events
            # another file's worker matched is made again here, as in one process
            index = SigmaMatchStage(detection) if detection is not None else None
            for path, fut in zip(files, futures, strict=True):
                part, stats, errors = fut.result()
                fut.release()
                for sev, text in errors:
                    line = _Line(text)
                    line.severity = sev
                    on_error(line)
                for line_bytes, origin, hits in part:
                    if line_bytes is None:  # a record the worker's stages dropped
                        if dedup is not None and dedup.is_duplicate(_dropped(origin)):
                            _uncount(stats, origin)
                        continue
                    try:
                        obj = orjson.loads(line_bytes)
                    except orjson.JSONDecodeError:
                        obj = json.loads(line_bytes)
                    e = event_from_object(obj, tuple(origin) if origin else None)
                    if dedup is not None and dedup.is_duplicate(e):
                        stats.duplicates += 1
                        if e.provider == SIGMA_ALERT_PROVIDER:  # counted by the gate only
                            stats.sigma_alerts -= 1
                        elif e.provider in SYSMON_PROVIDERS:  # the gate's and the filter's
                            stats.sysmon -= 1
                            stats.included[e.event_id] -= 1
                        else:  # another provider's record: the gate's counters, not included
                            stats.non_sysmon -= 1
                            if sigma_only(e, channels):
                                stats.non_sysmon_sigma -= 1
                            else:
                                stats.non_sysmon_written -= 1
                        continue
                    if index is not None:
                        if hits:
                            rule_hits = [compiled[h] for h in hits]
                            index.note(e, rule_hits)
                            detection.stats.events += 1  # matched in the worker: counted here
                            yield RuleHits(e, rule_hits)
                            continue
                        if e.provider == SIGMA_ALERT_PROVIDER:  # read back, never matched
                            if e.event_id == SIGMA_ALERT_EVENT_ID and index.made_again(e):
                                # its events were matched in another file's worker
                                stats.alerts_replaced += 1
                                continue
                        else:
                            detection.stats.events += 1
                    yield e
                total.merge(stats)
                if on_file_done is not None:
                    on_file_done(path, total)

        stages: list[Any] = []
        if detection is not None:
            from .replay import detection_stages
            # correlate (+ triage, + events)
            stages = detection_stages(detection, alerts_to_stream, options.triage,
                                      channels)[1:]
        fanout = FanOut.build(sinks, "fatal")
        if fanout.accepts("alert"):  # --alerts FILE: the SigmaAlert events read back go there
            from ..detection.readback import ReadBackAlertStage
            stages.append(ReadBackAlertStage())
        if options.alerts_only:
            from ..stages.alertsonly import AlertsOnlyStage
            stages.append(AlertsOnlyStage())
        pipe = Pipeline(stages, fanout, on_error=on_error)
        pipe.run(_Merged(items()))
        pipe.close()
        for st in stages:  # alerts held back here (read-back ones without --rules: in the workers)
            total.alerts_held_back += (getattr(st, "held_back", 0)
                                       + getattr(st, "held_back_read", 0))
            total.alerts_read_back_out += getattr(st, "moved", 0)
            total.not_alerts += getattr(st, "dropped", 0)
    finally:
        if own_client:
            client.close()
            if cluster is not None:
                cluster.close()
    return total
