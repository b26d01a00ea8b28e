"""The non-Sysmon gate: records of other providers (a Security record in a mixed EVTX) never reach
the Sysmon filter; they are dropped (default) or passed through unchanged (``--non-sysmon pass``).

The filter stage ignores non-Sysmon events itself, so passed records skip it and go on to
detection and the outputs.

SysmonX's own ``SigmaAlert`` events (EventID 1000, provider ``SysmonX``: a replayed SysmonX
output) are not "other records": they are SysmonX events, counted in ``sigma_alerts`` and always
passed on (the config has no tag for event 1000, so no config filters them; ``--min-level``,
``--technique`` and ``--tag`` select them as they select the run's own alerts). SysmonX's other
own events (100, 200 and up) travel with the Sysmon provider of their stream and are Sysmon
events here.

Loaded Sigma rules whose log source names another channel (``service: security``,
``category: ps_script`` ...) see that channel's records whatever ``--non-sysmon`` says, as
Hayabusa or Chainsaw would show them: with ``drop``, the gate passes the records of those
channels on (``sigma_only``) and :class:`SigmaOnlyDrop`, right after the Sigma stages, drops
them, so they are checked by the rules but never written. :func:`sigma_channels` names the
channels.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from ..core.registry import STAGES
from ..event import SIGMA_ALERT_EVENT_ID, SIGMA_ALERT_PROVIDER, SYSMON_PROVIDERS, Event
from ..interfaces import Emit, Stage

__all__ = ["SysmonGate", "SigmaOnlyDrop", "sigma_channels", "sigma_only",
           "sigma_only_channels"]


def sigma_channels(detection: Any) -> frozenset[str]:
    """The channels (lower case, e.g. ``security``, ``microsoft-windows-powershell/operational``)
    of other providers that the loaded rules of ``detection`` (a
    :class:`~sysmonx.detection.stage.DetectionStage`, or ``None``) are written for: the
    ``("chan", channel, ...)`` groups of their log sources
    (:mod:`sysmonx.detection.logsource`). Empty without rules or with Sysmon rules only."""
    if detection is None:
        return frozenset()
    return frozenset(g[1] for r in detection.matcher.compiled for g in r.target.groups
                     if g[0] == "chan")


def sigma_only_channels(non_sysmon: str, detection: Any = None,
                        extra: Iterable[str] = ()) -> frozenset[str]:
    """The channels (lower case) whose records of other providers a run checks with its Sigma
    rules without writing them: none with ``non_sysmon == "pass"`` (every such record is
    written), else :func:`sigma_channels` of ``detection`` and ``extra`` (channels already
    named, e.g. a ``--jobs`` parent's for its workers). The one rule behind the gate's
    ``sigma_channels``, :class:`SigmaOnlyDrop` and the counters of ``--jobs`` and ``--dask``."""
    if non_sysmon == "pass":
        return frozenset()
    return frozenset(extra) | sigma_channels(detection)


@STAGES.register
class SysmonGate(Stage):
    """Counts Sysmon events, SysmonX SigmaAlert events and other records; passes the first two,
    drops the others unless ``non_sysmon == "pass"`` or their channel is one of
    ``sigma_channels``.

    Args:
        non_sysmon: ``drop`` or ``pass``.
        sigma_channels: channels (lower case) that loaded Sigma rules read
            (:func:`sigma_channels`); with ``drop``, their records are passed on for detection
            only (:class:`SigmaOnlyDrop` drops them after it).
    Attributes:
        sysmon, sigma_alerts, non_sysmon: records seen; ``non_sysmon_written``: other records
        passed on to the output; ``non_sysmon_sigma``: other records passed on to the Sigma
        rules only.
    Raises:
        ValueError: another ``non_sysmon`` value.
    """

    name = "sysmon-gate"
    summary = "records of other providers: drop (default) or pass unfiltered (--non-sysmon)"

    def __init__(self, non_sysmon: str = "drop", sigma_channels: Iterable[str] = ()) -> None:
        if non_sysmon not in ("drop", "pass"):
            raise ValueError(f"non_sysmon must be 'drop' or 'pass', not {non_sysmon!r}")
        self.keep_other = non_sysmon == "pass"
        self.sigma_channels = sigma_only_channels(non_sysmon, None, sigma_channels)
        self.sysmon = 0
        self.non_sysmon = 0
        self.non_sysmon_written = 0
        self.non_sysmon_sigma = 0
        self.sigma_alerts = 0

    def raw_step(self) -> Optional[tuple[str, Any]]:
        """``("gate", self)``: a Sysmon record, counted in ``sysmon`` (the compiled step);
        ``None`` for a subclass (its ``process`` may do more)."""
        return ("gate", self) if type(self) is SysmonGate else None

    def process(self, item: Any, emit: Emit) -> bool:
        """Pass Sysmon events; count and drop or pass the others."""
        if item.__class__ is not Event:
            return True
        if item.provider in SYSMON_PROVIDERS:
            self.sysmon += 1
            return True
        if item.provider == SIGMA_ALERT_PROVIDER and item.event_id == SIGMA_ALERT_EVENT_ID:
            self.sigma_alerts += 1
            return True
        self.non_sysmon += 1
        if self.keep_other:
            self.non_sysmon_written += 1
            return True
        if self.sigma_channels and (item.channel or "").lower() in self.sigma_channels:
            self.non_sysmon_sigma += 1
            return True
        return False


def sigma_only(item: Any, channels: frozenset[str]) -> bool:
    """Whether ``item`` is a record of another provider that a :class:`SysmonGate` with these
    ``sigma_channels`` passed on for detection only."""
    return (item.__class__ is Event and item.provider not in SYSMON_PROVIDERS
            and item.provider != SIGMA_ALERT_PROVIDER
            and (item.channel or "").lower() in channels)


@STAGES.register
class SigmaOnlyDrop(Stage):
    """Drops, after the Sigma stages, the records of other providers the gate passed on for the
    rules only (``--non-sysmon drop``): they were checked, their alerts go on, they are not
    written.

    Args:
        channels: the gate's ``sigma_channels``.
    """

    name = "sigma-only-drop"
    summary = ("records of other providers passed to Sigma rules only (--non-sysmon drop): "
               "dropped after detection")

    def __init__(self, channels: frozenset[str] = frozenset()) -> None:
        self.channels = channels

    def process(self, item: Any, emit: Emit) -> bool:
        """Drop a record passed for detection only; pass everything else."""
        return not sigma_only(item, self.channels)
