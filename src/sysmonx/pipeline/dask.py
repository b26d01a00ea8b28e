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

Differences from a one-process replay, in the counters only: records dropped as duplicates are
found among the *kept* events (the workers filter first; the same events are kept either way),
so ``excluded`` still counts a duplicate that the filter excluded, and the per-rule match counts
of the Sigma summary are the workers' (not shown). Memory: the driver holds one file's kept
events at a time (plus results that completed ahead of the next in order).

``local`` starts a ``LocalCluster`` of ``workers`` single-threaded worker processes on this
machine; any other value is a scheduler address (``tcp://HOST:8786``) whose workers have
SysmonX installed and can read the input paths.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator, Optional, Sequence

import orjson

from ..core.errors import SysmonXError
from ..event import SIGMA_ALERT_PROVIDER, SYSMON_PROVIDERS, Event
from ..interfaces import Sink, Source
from ..sinks.jsonl import event_to_json
from ..sources.jsonl import event_from_object
from ..stages.dedup import DuplicateFilter
from ..stages.gate import SigmaOnlyDrop, sigma_channels, sigma_only
from .fanout import FanOut
from .loop import Pipeline
from .replay import ReplayOptions, ReplayStats

__all__ = ["replay_dask", "dask_task", "DaskUnavailable"]


class DaskUnavailable(SysmonXError, RuntimeError):
    """Dask distributed is not installed or the scheduler cannot be reached."""


# per worker process: compiled filter and rules, built once per (options, rules) token
_CACHE: dict[str, Any] = {}


class _Capture(Sink):
    """Collects what the worker's stages pass: events and their rule hits, in order."""

    accepts = frozenset({"event", "hits"})

    def __init__(self) -> None:
        self.items: list[tuple[bytes, Any, tuple[int, ...]]] = []

    def write(self, item: Any) -> None:
        if type(item) is Event:
            self.items.append((event_to_json(item), item.origin, ()))
        else:  # RuleHits
            e = item.event
            self.items.append((event_to_json(e), e.origin, tuple(r.index for r in item.hits)))


def dask_task(path: str, options: ReplayOptions, rule_paths: Sequence[str], token: str
              ) -> tuple[list[tuple[bytes, Any, tuple[int, ...]]], ReplayStats, list[list[str]]]:
    """The worker's part for one file (module docstring): ``(items, stats, error lines)``; an
    item is ``(event JSON line, origin, matched rule indices)``, an error line ``[severity,
    text]``."""
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
    errors: list[list[str]] = []

    def on_error(err: Any) -> None:
        errors.append([getattr(err, "severity", "error"), str(err)])
    rp = Replayer(dataclasses.replace(options, keep_duplicates=True,
                                      sigma_channels=sigma_channels(detection)), None,
                  engine=engine,
                  sinks=[capture], extra_stages=extra, on_error=on_error)
    rp.run_file(path)
    stats = rp.stats
    return capture.items, stats, errors


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
    channels = (frozenset() if options.non_sysmon == "pass"
                else sigma_channels(detection))
    try:
        opt = client.scatter(options, broadcast=True)
        futures = [client.submit(dask_task, f, opt, list(rule_paths), token, pure=False,
                                 key=f"sysmonx-replay-{i}-{token}")
                   for i, f in enumerate(files)]

        class _Line(str):
            severity = "error"

        def items() -> Iterator[Any]:
            from ..detection.stages import RuleHits
            for path, fut in zip(files, futures, strict=True):
                part, stats, errors = fut.result()
                fut.release()
                for sev, text in errors:
                    line = _Line(text)
                    line.severity = sev
                    on_error(line)
                for line_bytes, origin, hits in part:
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
                    if detection is not None:
                        detection.stats.events += 1  # matched in the worker: counted here
                    yield RuleHits(e, [compiled[h] for h in hits]) if hits else e
                total.merge(stats)
                if on_file_done is not None:
                    on_file_done(path, total)

        stages: list[Any] = []
        if detection is not None:
            from .replay import detection_stages
            # correlate (+ triage, + events)
            stages = detection_stages(detection, alerts_to_stream, options.triage)[1:]
            if channels:  # records the rules read, not written (--non-sysmon drop)
                stages.insert(1, SigmaOnlyDrop(channels))
        pipe = Pipeline(stages, FanOut.build(sinks, "fatal"), on_error=on_error)
        pipe.run(_Merged(items()))
        pipe.close()
        for st in stages:  # the run's alerts held back here (read-back ones: in the workers)
            total.alerts_held_back += getattr(st, "held_back", 0)
    finally:
        if own_client:
            client.close()
            if cluster is not None:
                cluster.close()
    return total
