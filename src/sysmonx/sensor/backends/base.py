"""The contract every live trace backend implements.

A backend observes the kernel and calls ``emit(observation)`` (from its own reader thread) with
:mod:`sysmonx.sensor.observations` objects. ``emit`` may block when the sensor's queue is full:
that is the back-pressure, and the kernel-side buffer then absorbs the burst; whatever the kernel
drops must come back as a :class:`~sysmonx.sensor.observations.Loss` with the count (never
silently).
"""

from __future__ import annotations

import abc
import threading
from typing import Callable, ClassVar, Optional

from ...core.errors import SourceUnavailable
from ..observations import Observation

__all__ = ["Backend", "BackendUnavailable", "WakeableReaderMixin"]


class BackendUnavailable(SourceUnavailable):
    """The backend cannot run on this host; ``str()`` is the reason shown to the user
    (e.g. "no BTF at /sys/kernel/btf/vmlinux", "audit is owned by pid 812 (auditd)")."""


class Backend(abc.ABC):
    """A live trace backend.

    Class attributes:
        name: ``--backend`` name (``ebpf``, ``audit``, ``cnproc``, ``dns``).
        tier: ``A``/``B``/``C`` for process/file/network backends (best first); ``aux`` for
            backends that run beside the chosen tier (DNS).
        events: Sysmon event IDs it can produce.

    Args:
        emit: called with each observation, from a backend thread; may block (back-pressure).
            When it has a ``many`` attribute (the sensor's does), :meth:`emit_all` hands a whole
            batch over in one call: one queue operation and one wake-up of the consumer instead
            of one per observation.
        exclude_pids: pids whose activity must not be reported (the sensor itself), filtered in
            the kernel where the mechanism allows it.
        options: backend-specific settings (buffer sizes, ...); unknown keys are ignored.
    """

    name: ClassVar[str] = ""
    tier: ClassVar[str] = ""
    events: ClassVar[frozenset] = frozenset()

    def __init__(self, emit: Callable[[Observation], None], exclude_pids: frozenset = frozenset(),
                 options: Optional[dict] = None) -> None:
        self.emit = emit
        self._emit_many = getattr(emit, "many", None)
        self.exclude_pids = frozenset(exclude_pids)
        self.options = dict(options or {})

    def emit_all(self, observations: list) -> None:
        """Emit a batch of observations in order (one call of ``emit.many`` when available)."""
        if not observations:
            return
        if self._emit_many is not None:
            self._emit_many(observations)
        else:
            for o in observations:
                self.emit(o)

    @classmethod
    @abc.abstractmethod
    def probe(cls) -> Optional[str]:
        """Check, without side effects, whether this backend can run here.

        Returns:
            ``None`` when usable, else the reason it is not (one line, for the user).
        """

    @abc.abstractmethod
    def start(self) -> None:
        """Set up kernel collection and start the reader thread(s).

        Raises:
            BackendUnavailable: set-up failed; everything done so far has been undone.
        """

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop reader threads and restore every kernel state changed by :meth:`start`
        (audit rules and settings, BPF links, fanotify marks). Idempotent; never raises."""

    def collecting(self) -> frozenset:
        """The event IDs this backend collects now (once started): :attr:`events`, narrowed
        by a backend whose collection depends on its options or on what it could set up (an
        event off unless asked, a kernel interface that failed). The live exit table lists
        these with 0 when none was seen."""
        return self.events

    def stats(self) -> dict:
        """Counters for the summary/bench: at least ``received`` and ``lost`` (ints)."""
        return {"received": 0, "lost": 0}

    def blind_episodes(self) -> tuple[int, bool]:
        """``(episodes, blind now)``: how many times the backend's collection was blind while
        it ran (its kernel source switched off by someone else, such as audit disabled under
        tier B) and whether it is now. The events of those times were missed and their number
        cannot be known: the heartbeat's ``EventsLost`` is then the unknown ``-`` and the run's
        summary says so. Default: never blind (``(0, False)``)."""
        return 0, False

    def integrity(self) -> list:
        """What another process undid of this backend's kernel set-up, as
        ``[(technique, details)]`` TamperFinding material (``bpf_detach``,
        ``audit_rules_changed`` ...); polled by the sensor's guard (:mod:`sysmonx.sensor.guard`)
        while the backend runs. Default: nothing checked. Must be cheap and never raise."""
        return []


class WakeableReaderMixin:
    """``stop()`` for a backend whose reader thread sleeps in ``select``/``poll`` on a wake pipe.

    The subclass sets ``_stopped``/``_stopping`` (False), ``_wake_w`` (write end of the pipe, or
    -1), ``_thread`` and ``join_timeout_s``, and implements ``_cleanup()`` (close sockets, undo
    kernel state). The reader drains what is queued once ``_stopping`` is set.
    """

    _stopped: bool
    _stopping: bool
    _wake_r: int
    _wake_w: int
    _thread: Optional[threading.Thread]
    join_timeout_s: float

    def _cleanup(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Wake the reader, let it drain and finish (up to ``join_timeout_s``), then undo all
        set-up with ``_cleanup()``. Idempotent; never raises."""
        import os
        import threading
        if self._stopped:
            return
        self._stopping = True
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                pass
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(self.join_timeout_s)
        self._cleanup()
        self._stopped = True

    def _close_wake_pipe(self) -> None:
        """Close both ends of the wake pipe (for ``_cleanup``); idempotent."""
        import os
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._wake_r = self._wake_w = -1
