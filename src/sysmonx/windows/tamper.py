"""Windows tamper signals, read live: Sysmon's service state, its minifilter, its registry keys,
its Event Log channel, and its heartbeat (events still arriving).

Each signal is a reader behind :class:`HostProbe` (default :class:`CommandProbe`, which runs
``sc.exe``, ``fltmc.exe``, ``reg.exe`` and ``wevtutil.exe`` through a
:class:`~sysmonx.windows.sysmon.CommandRunner`, so :class:`~sysmonx.windows.fakes.FakeWindowsHost`
stands in for Windows in tests). :class:`WindowsTamperChecks` compares each reading with the
state SysmonX set up and returns one finding per change (a finding is reported once, and again
only after the state was good in between); the ``windows-tamper`` stage runs the checks every
``interval_s`` seconds in its own thread and emits the findings on the loop's tick.

========================  =====================  ===============================================
signal                    technique              finding when
========================  =====================  ===============================================
service state             ``sysmon_stopped``     the Sysmon service is not ``RUNNING`` (stopped,
                                                 paused) or no longer exists (T1562.001)
minifilter                ``driver_unloaded``    ``fltmc filters`` no longer lists the Sysmon
                                                 driver (``fltMC unload SysmonDrv``, T1562.001)
registry                  ``sysmon_rules_registry``  the driver's ``Parameters\\Rules`` value
                                                 differs from the one read at start, or the key
                                                 is gone (T1562.001)
channel                   ``sysmon_channel_disabled``  ``wevtutil gl`` says the Sysmon channel is
                                                 not enabled (``wevtutil sl /e:false``,
                                                 T1562.002)
heartbeat                 ``time_gap``           no Sysmon event for ``silence_s`` seconds while
                                                 its service says ``RUNNING`` (events dropped
                                                 or the channel blinded, T1562.006)
========================  =====================  ===============================================

The findings are SysmonX event 201 ``TamperFinding`` built by the resilience work's helper
(:mod:`sysmonx.stages.tamperfinding`: RuleName, UtcTime, Technique, Details, ProcessGuid,
ProcessId, Image, Source, in Windows Sysmon's envelope); a live reading cannot name the actor, so
ProcessGuid/ProcessId/Image are the documented unknown values.
"""

from __future__ import annotations

import abc
import hashlib
import queue
import re
import threading
import time
from typing import Any, Callable, Optional

from ..core.registry import STAGES
from ..event import WINDOWS_CHANNEL, WINDOWS_PROVIDER, Event
from ..interfaces import Emit, Stage
from ..stages.tamperfinding import TAMPER_FINDING_EVENT_ID, ZERO_GUID
from ..stages.tamperfinding import tamper_finding as _shared_finding
from .sysmon import CommandRunner, SysmonError, SysmonManager

__all__ = ["HostProbe", "CommandProbe", "WindowsTamperChecks", "WindowsTamper",
           "tamper_finding", "TAMPER_FINDING_EVENT_ID", "ZERO_GUID", "RULES_KEY"]

#: The registry key of Sysmon's driver parameters (``Rules``, ``HashingAlgorithm`` ...).
RULES_KEY = "HKLM\\SYSTEM\\CurrentControlSet\\Services\\{driver}\\Parameters"


def tamper_finding(technique: str, details: str, *, when_ns: Optional[int] = None,
                   source: str = "live", computer: str = "") -> Event:
    """One TamperFinding (event 201) of a Windows live reading, through the shared helper
    (:func:`sysmonx.stages.tamperfinding.tamper_finding`, ``platform="windows"``: Windows
    Sysmon's envelope, Level 3): the actor is unknown (zero GUID, ``0``, ``-``).

    Args:
        technique: the stable technique name (module docstring).
        details: one line: what was read, with the values that prove it.
        when_ns: time of the reading, ns since 1970 UTC (default now).
        source: ``live``.
        computer: System/Computer.
    """
    return _shared_finding(technique, details, when=when_ns, source=source, platform="windows",
                           computer=computer)


class HostProbe(abc.ABC):
    """Readings of the host's Sysmon state. Each returns ``None`` when it cannot read (no
    rights, tool missing): a reading that fails is never taken for tampering."""

    @abc.abstractmethod
    def service_state(self, name: str) -> Optional[str]:
        """``RUNNING``, ``STOPPED`` ..., ``""`` when the service does not exist, ``None`` when
        unreadable."""

    @abc.abstractmethod
    def minifilters(self) -> Optional[list[str]]:
        """Names of the loaded minifilters (lower case), ``None`` when unreadable."""

    @abc.abstractmethod
    def registry_value(self, key: str, name: str) -> Optional[str]:
        """The value's data as ``reg query`` prints it, ``""`` when the key or value is
        missing, ``None`` when unreadable."""

    @abc.abstractmethod
    def channel_enabled(self, channel: str) -> Optional[bool]:
        """Whether the Event Log channel is enabled, ``None`` when unreadable."""


_FLT_LINE = re.compile(r"^(\S+)\s+\d+\s+[\d.]+\s+\d+\s*$")
_REG_LINE = re.compile(r"^\s+(\S.*?)\s{4}(REG_\w+)\s{4}(.*)$")


class CommandProbe(HostProbe):
    """:class:`HostProbe` over Windows' own tools, run through ``runner``.

    Args:
        runner: runs the commands (:class:`~sysmonx.windows.sysmon.SubprocessRunner` on
            Windows, :class:`~sysmonx.windows.fakes.FakeWindowsHost` in tests).
    """

    def __init__(self, runner: CommandRunner) -> None:
        self.runner = runner
        self._sc = SysmonManager(runner, "")

    def service_state(self, name: str) -> Optional[str]:
        """From ``sc.exe query NAME``."""
        try:
            state = self._sc.service_state(name)
        except SysmonError:
            return None
        return "" if state is None else state

    def minifilters(self) -> Optional[list[str]]:
        """From ``fltmc.exe filters`` (needs an elevated prompt)."""
        res = self.runner.run(["fltmc.exe", "filters"])
        if res.returncode != 0:
            return None
        names = []
        for line in res.stdout.splitlines():
            m = _FLT_LINE.match(line.strip())
            if m:
                names.append(m.group(1).lower())
        return names

    def registry_value(self, key: str, name: str) -> Optional[str]:
        """From ``reg.exe query KEY /v NAME``; exit code 1 means missing."""
        res = self.runner.run(["reg.exe", "query", key, "/v", name])
        if res.returncode == 1:
            return ""
        if res.returncode != 0:
            return None
        for line in res.stdout.splitlines():
            m = _REG_LINE.match(line)
            if m and m.group(1).lower() == name.lower():
                return m.group(3).strip()
        return ""

    def channel_enabled(self, channel: str) -> Optional[bool]:
        """From ``wevtutil.exe gl CHANNEL`` (``enabled: true``)."""
        res = self.runner.run(["wevtutil.exe", "gl", channel])
        if res.returncode != 0:
            return None
        m = re.search(r"^enabled:\s*(true|false)\s*$", res.stdout, re.M | re.I)
        return None if m is None else m.group(1).lower() == "true"


class WindowsTamperChecks:
    """Compare the probe's readings with the state SysmonX set up (module docstring).

    Args:
        probe: the readings.
        service: Sysmon's service name (``Sysmon64`` ...).
        driver: its minifilter driver (``SysmonDrv``).
        channel: its Event Log channel.
        silence_s: heartbeat: seconds without a Sysmon event that make a finding.
        computer: System/Computer of the findings.
        restart: called when the service is found stopped (default none); SysmonX passes
            :meth:`SysmonManager.ensure_running <sysmonx.windows.sysmon.SysmonManager.
            ensure_running>`, so a stopped Sysmon is started again and the finding says so.
        clock: ns since 1970 (tests pass a fixed clock); ``monotonic``: seconds, for silence.
    Attributes:
        baseline_rules: the ``Rules`` value read by :meth:`baseline` (``None``: not read).
    """

    def __init__(self, probe: HostProbe, *, service: str = "Sysmon64",
                 driver: str = "SysmonDrv", channel: str = WINDOWS_CHANNEL,
                 silence_s: float = 600.0, computer: str = "",
                 restart: Optional[Callable[[], Any]] = None,
                 clock: Callable[[], int] = time.time_ns,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.probe = probe
        self.service = service
        self.driver = driver
        self.channel = channel
        self.silence_s = silence_s
        self.computer = computer
        self.restart = restart
        self.clock = clock
        self.monotonic = monotonic
        self.baseline_rules: Optional[str] = None
        self._last_event = monotonic()
        self._active: set[str] = set()   # techniques reported and not yet back to good

    def baseline(self) -> None:
        """Read the state to compare against (the ``Rules`` value SysmonX's sensor config
        left); call after ``-i``/``-c``, and at service start."""
        value = self.probe.registry_value(RULES_KEY.format(driver=self.driver), "Rules")
        self.baseline_rules = value if value else None

    def saw_sysmon_event(self) -> None:
        """A Sysmon event arrived (the heartbeat)."""
        self._last_event = self.monotonic()

    def _report(self, technique: str, bad: bool, details: str, out: list[Event]) -> None:
        if not bad:
            self._active.discard(technique)
            return
        if technique in self._active:
            return
        self._active.add(technique)
        out.append(tamper_finding(technique, details, when_ns=self.clock(),
                                  computer=self.computer))

    def check(self) -> list[Event]:
        """Read every signal once; returns the new findings."""
        out: list[Event] = []
        state = self.probe.service_state(self.service)
        if state is not None:
            details = (f"service {self.service} is {state or 'not installed any more'} "
                       "(sc.exe query)")
            if state not in ("RUNNING", "") and self.restart is not None \
                    and "sysmon_stopped" not in self._active:
                try:
                    self.restart()
                    details += "; SysmonX started it again"
                except Exception as exc:  # noqa: BLE001 - the finding says why
                    details += f"; SysmonX could not start it again: {exc}"
            self._report("sysmon_stopped", state != "RUNNING", details, out)
        filters = self.probe.minifilters()
        if filters is not None:
            self._report("driver_unloaded", self.driver.lower() not in filters,
                         f"minifilter {self.driver} is not loaded (fltmc filters lists "
                         f"{', '.join(filters) or 'none'})", out)
        if self.baseline_rules is not None:
            key = RULES_KEY.format(driver=self.driver)
            now = self.probe.registry_value(key, "Rules")
            if now is not None:
                old = hashlib.sha256(self.baseline_rules.encode()).hexdigest()[:16]
                new = hashlib.sha256(now.encode()).hexdigest()[:16] if now else "missing"
                self._report("sysmon_rules_registry", now != self.baseline_rules,
                             f"{key}\\Rules changed outside SysmonX (sha256 {old} -> {new})",
                             out)
        enabled = self.probe.channel_enabled(self.channel)
        if enabled is not None:
            self._report("sysmon_channel_disabled", not enabled,
                         f"Event Log channel {self.channel} is disabled (wevtutil gl)", out)
        quiet = self.monotonic() - self._last_event
        self._report("time_gap", quiet >= self.silence_s and state == "RUNNING",
                     f"no Sysmon event for {quiet:.0f} s while service {self.service} is "
                     "RUNNING", out)
        return out


@STAGES.register
class WindowsTamper(Stage):
    """Windows tamper signals as TamperFinding events (module docstring), read every
    ``interval_s`` seconds in a thread of their own (the commands take tens of ms).

    Args:
        checks: the checks (default: a :class:`CommandProbe` over the real commands, for the
            Sysmon that SysmonX set up).
        interval_s: seconds between readings.
    """

    name = "windows-tamper"
    summary = ("Windows tamper signals (Sysmon service, minifilter, rules registry value, "
               "channel, heartbeat) as TamperFinding events")
    stateful = True

    def __init__(self, checks: Optional[WindowsTamperChecks] = None,
                 interval_s: float = 30.0) -> None:
        if checks is None:
            from .sysmon import SubprocessRunner
            checks = WindowsTamperChecks(CommandProbe(SubprocessRunner()))
        self.checks = checks
        self.interval_s = interval_s
        self._found: queue.Queue[Event] = queue.Queue()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _run(self) -> None:
        self.checks.baseline()
        while not self._stop.is_set():
            for ev in self.checks.check():
                self._found.put(ev)
            self._stop.wait(self.interval_s)

    def process(self, item: Any, emit: Emit) -> bool:
        """Note Sysmon events (the heartbeat); pass everything."""
        if item.__class__ is Event and item.provider == WINDOWS_PROVIDER \
                and item.event_id < 200:
            self.checks.saw_sysmon_event()
        return True

    def tick(self, now_ns: int, emit: Emit) -> None:
        """Start the reader thread (first tick); emit the findings read since."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name="sysmonx-windows-tamper")
            self._thread.start()
        while True:
            try:
                emit(self._found.get_nowait())
            except queue.Empty:
                return

    def finish(self, emit: Emit) -> None:
        """Stop the reader; emit what it found."""
        self._stop.set()
        if self._thread is None:
            return
        self._thread.join(5.0)
        self.tick(0, emit)
