"""Follow an installed Sysmon for Linux: read its syslog output as it is written (a log file,
followed across rotation, or journald) and forward its events through SysmonX's pipeline, as the
original SysmonX ran on top of Sysmon (shared/spec/sysmonx-2019.md).

Options (``SensorOptions.backend_options``):
    ``follow``: a file path (default ``/var/log/syslog``) or ``journald``.
    ``from_start``: read the file from its beginning instead of only new lines (default False).
    ``poll_s``: file polling interval in seconds (default 0.2).
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import threading
import time
from typing import Optional

from lxml import etree

from ...sources import FileNotes
from ...sources.syslog import event_from_line
from .. import observations as ob
from .base import Backend, BackendUnavailable

__all__ = ["FollowBackend"]

_START = b"<Event"
MAX_LINE = 1 << 20


class FollowBackend(Backend):
    """Forwards Sysmon for Linux events from its syslog output (name ``sysmon-follow``)."""

    name = "sysmon-follow"
    tier = "follow"
    events = frozenset({1, 3, 4, 5, 9, 10, 11, 16, 23, 255})

    @classmethod
    def probe(cls) -> Optional[str]:
        """Always possible in principle; :meth:`start` checks the actual source."""
        return None

    def __init__(self, emit, exclude_pids=frozenset(), options=None) -> None:
        super().__init__(emit, exclude_pids, options)
        self.source = self.options.get("follow", "/var/log/syslog")
        self.from_start = bool(self.options.get("from_start", False))
        self.poll_s = float(self.options.get("poll_s", 0.2))
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._proc: Optional[subprocess.Popen] = None
        self.received = 0
        self.bad = 0
        self.repaired = 0
        self.cut_short = 0
        self._notes = FileNotes(self.source, self._note)

    def start(self) -> None:
        """Open the source and start the reader thread.

        Raises:
            BackendUnavailable: the file cannot be opened, or journalctl is missing.
        """
        if self.source == "journald":
            exe = shutil.which("journalctl")
            if exe is None:
                raise BackendUnavailable("journalctl not found")
            if not os.path.exists("/run/systemd/journal/socket"):
                raise BackendUnavailable("journald is not running here (no "
                                         "/run/systemd/journal/socket); follow a log file instead")
            args = [exe, "--follow", "--output=cat", "--no-pager", "SYSLOG_IDENTIFIER=sysmon"]
            if not self.from_start:
                args.insert(2, "--lines=0")
            self._proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            target = self._run_journal
        else:
            try:
                open(self.source, "rb").close()
            except OSError as exc:
                raise BackendUnavailable(f"cannot read {self.source}: {exc.strerror}") from None
            target = self._run_file
        self._thread = threading.Thread(target=target, name="sysmonx-follow", daemon=True)
        self._thread.start()

    def _line(self, line: bytes, where: tuple) -> None:
        i = line.find(_START)
        if i < 0 or line[i + 6:i + 7] not in (b">", b" ", b"\t"):
            return
        try:
            event = event_from_line(line, i, where, self._notes)
        except (etree.XMLSyntaxError, ValueError) as exc:
            self.bad += 1
            self.emit(ob.BackendError(time.time_ns(), "sysmon-follow",
                                      f"{where[0]}:{where[1]}: unreadable Sysmon event: {exc}"))
            return
        self.received += 1
        self.emit(ob.Forwarded(time.time_ns(), event))

    def _note(self, err) -> None:
        """What the line parser reports beside the event: a repair (entity references that lost
        their ';') or a message cut short whose complete fields were kept; both are counted
        and the event is forwarded."""
        if err.severity == "repaired":
            self.repaired += 1
        elif err.severity == "error":
            self.cut_short += 1

    def _run_file(self) -> None:
        path = self.source
        f = open(path, "rb")
        ino = os.fstat(f.fileno()).st_ino
        if not self.from_start:
            f.seek(0, os.SEEK_END)
        lineno, buf = 0, b""
        while not self._stop.is_set():
            chunk = f.read(1 << 16)
            if chunk:
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    lineno += 1
                    self._line(line.rstrip(b"\r"), (path, lineno))
                if len(buf) > MAX_LINE:
                    self.emit(ob.BackendError(time.time_ns(), "sysmon-follow",
                                              f"{path}:{lineno + 1}: line too long; skipped"))
                    buf = b""
                continue
            time.sleep(self.poll_s)
            try:  # rotation (new inode) or truncation: start over on the new file
                st = os.stat(path)
            except OSError:
                continue
            if st.st_ino != ino or st.st_size < f.tell():
                f.close()
                f = open(path, "rb")
                ino, lineno, buf = os.fstat(f.fileno()).st_ino, 0, b""
        f.close()

    def _run_journal(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        out = self._proc.stdout
        n = 0
        while not self._stop.is_set():
            ready, _, _ = select.select([out], [], [], 0.2)
            if not ready:
                continue
            line = out.readline(MAX_LINE)
            if not line:
                break
            n += 1
            self._line(line.rstrip(b"\r\n"), ("journald", n))

    def stop(self) -> None:
        """Stop reading (and the journalctl child)."""
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._thread is not None:
            self._thread.join(5)

    def stats(self) -> dict:
        """``received`` forwarded events; ``lost`` 0 (a file loses nothing); ``bad`` lines;
        ``repaired`` events read after restoring entity references that lost their ``;``;
        ``cut_short`` events forwarded with the fields left before a syslog size cut."""
        return {"received": self.received, "lost": 0, "bad": self.bad,
                "repaired": self.repaired, "cut_short": self.cut_short}
