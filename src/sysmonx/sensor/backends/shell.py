"""ShellCommand (SysmonX event 210): the command lines interactive shells read, from a
uretprobe on ``readline`` through tracefs (shared/spec/linux-sensing.md, "uprobes": a
``r:NAME /usr/bin/bash:OFFSET cmd=+0($retval):string`` probe returned every command typed into
an interactive bash on a pty).

Runs beside whichever tier is chosen (tier ``aux``): uprobes through tracefs need neither BPF nor
audit, so every tier gives the same ShellCommand events.

Set-up (:class:`ShellBackend`):

* find each shell binary (option ``shells``, default ``/usr/bin/bash``, ``/bin/bash``; one per
  inode) that exports ``readline`` (:func:`elf_symbol_offset`: the ``.dynsym`` value turned into
  a file offset through the ``PT_LOAD`` headers, what ``nm -D`` plus the program headers give);
* define ``r:sysmonx_<pid>/readline_<n> PATH:0xOFFSET cmd=+0($retval):string`` in
  ``uprobe_events`` (a group named after the sensor's pid, so stale probes of dead sensors are
  recognised and removed), and enable it in a private instance ``instances/sysmonx_sh_<pid>``
  (``trace_clock=mono``, ``options/record-tgid``);
* read the instance's ``trace_pipe`` non-blocking; each line is one command:
  ``bash-4242 (   4242) [001] ..... 812.345678: readline_0: (0x.. <- 0x..) cmd="ls -la"``;
  ``cmd=(fault)`` (readline returned NULL: end of input) is skipped.

The terminal (``Tty``) is read from ``/proc/PID/stat`` when the line is read; a shell already
gone by then (``exit`` ends it at once) keeps the terminal seen at its earlier lines
(:func:`tty_for_line`); ``-`` when neither is known. Losses: the instance's per-CPU
``overrun`` + ``dropped events`` counters, as event 255.

Options: ``shells`` (list of paths), ``shell_buffer_kb`` (per-CPU trace buffer, default 1024),
``poll_interval_s`` (default 0.05).
"""

from __future__ import annotations

import errno
import os
import re
import select
import struct
import threading
import time
from typing import Any, Callable, Optional

from ...core.registry import BACKENDS
from ..tracefs import cpu_stats_files, read_lost
from ..observations import BackendError, Loss, Observation, ShellCommand
from .base import Backend, BackendUnavailable
from .cn_tracefs import thread_group

__all__ = ["ShellBackend", "elf_symbol_offset", "parse_line", "tty_for_line"]

DEFAULT_SHELLS = ("/usr/bin/bash", "/bin/bash")
GROUP_PREFIX = "sysmonx_"
INSTANCE_PREFIX = "sysmonx_sh_"

_LINE = re.compile(
    rb"^\s*(?P<comm>.*?)-(?P<tid>\d+)\s+(?:\(\s*(?P<tgid>[\d-]+)\)\s+)?\[\d+\]\s+\S+\s+"
    rb"(?P<ts>\d+)\.(?P<us>\d+):\s+(?P<event>[\w.]+):\s+\([^)]*\)\s+cmd=(?P<cmd>.*)$")


def elf_symbol_offset(path: str, symbol: str) -> Optional[int]:
    """File offset of the dynamic symbol ``symbol`` of the ELF64 little-endian file at
    ``path`` (what a uprobe needs), or ``None`` when the file is not such an ELF, has no such
    defined function, or cannot be read. Source: elf(5)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    (e_phoff, e_shoff, _, _, e_phentsize, e_phnum, e_shentsize, e_shnum,
     _) = struct.unpack_from("<QQIHHHHHH", data, 0x20)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, e_shoff + i * e_shentsize)
                for i in range(e_shnum)]
    value = None
    for sh in sections:
        if sh[1] != 11:  # SHT_DYNSYM
            continue
        strtab = sections[sh[6]]
        str_off = strtab[4]
        for i in range(sh[5] // 24):
            st_name, st_info, _, st_shndx, st_value, _ = struct.unpack_from(
                "<IBBHQQ", data, sh[4] + i * 24)
            if st_shndx == 0 or st_info & 0xF != 2:  # undefined, or not STT_FUNC
                continue
            end = data.find(b"\0", str_off + st_name)
            if data[str_off + st_name:end] == symbol.encode():
                value = st_value
                break
    if value is None:
        return None
    for i in range(e_phnum):
        p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = struct.unpack_from(
            "<IIQQQQQQ", data, e_phoff + i * e_phentsize)
        if p_type == 1 and p_vaddr <= value < p_vaddr + p_filesz:
            return value - p_vaddr + p_offset
    return None


def parse_line(line: bytes, resolve: Optional[Callable[[int, Optional[int]], int]] = None
               ) -> Optional[tuple[int, int, str]]:
    """``(tgid, mono_ns, command)`` from one ``trace_pipe`` line of the readline probe, or
    ``None`` for other lines and for ``cmd=(fault)`` (readline returned NULL). ``resolve(tid,
    printed tgid or None)`` gives the process (the backend passes
    :func:`~.cn_tracefs.thread_group`: the printed column may be an earlier task's); without
    it the printed column, else the tid."""
    m = _LINE.match(line)
    if not m:
        return None
    cmd = m.group("cmd")
    if not (len(cmd) >= 2 and cmd.startswith(b'"') and cmd.endswith(b'"')):
        return None
    tgid = m.group("tgid")
    printed = int(tgid) if tgid and tgid.strip(b"-") and int(tgid) > 0 else None
    tid = int(m.group("tid"))
    pid = resolve(tid, printed) if resolve is not None else (printed or tid)
    us = m.group("us").ljust(6, b"0")[:6]
    ts = int(m.group("ts")) * 1_000_000_000 + int(us) * 1000
    return pid, ts, os.fsdecode(cmd[1:-1])


#: Shells whose terminal :func:`tty_for_line` remembers (oldest forgotten first).
TTY_MEMORY = 4096


def tty_for_line(pid: int, known: dict, read: Optional[Callable[[int], Optional[str]]] = None,
                 alive: Optional[Callable[[int], bool]] = None) -> Optional[str]:
    """The terminal of the shell ``pid`` that read a line: read now (``/proc/PID/stat``); when
    the shell is already gone (it exits right after reading ``exit``), the terminal it had at
    one of its earlier lines, from ``known`` (pid -> terminal, updated here, at most
    :data:`TTY_MEMORY` entries); ``None`` when neither is known (written as ``-``). A live
    process without a terminal is ``None`` and is forgotten, so a reused pid never inherits
    another shell's terminal while it runs. A zombie (exited, not yet reaped) counts as gone:
    ``exit`` released its terminal, so its ``/proc/PID/stat`` shows none, and its pid cannot be
    another process's yet (before, the remembered terminal was dropped there: ``Tty -`` for
    ``exit`` when the line was read in that window). ``read``/``alive``: for tests."""
    from ..hostinfo import tty_of
    tty = (read or tty_of)(pid)
    if tty is not None:
        known.pop(pid, None)
        known[pid] = tty
        if len(known) > TTY_MEMORY:
            known.pop(next(iter(known)))
        return tty
    if (alive or _running)(pid):
        known.pop(pid, None)
        return None
    return known.get(pid)


def _running(pid: int) -> bool:
    """``/proc/PID`` is a process that has not exited: present, state neither ``Z`` (zombie)
    nor ``X`` (dead); proc(5) ``stat`` field 3."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read(512)
    except OSError:
        return False
    end = raw.rfind(b")")
    return end > 0 and raw[end + 2:end + 3] not in (b"Z", b"X", b"")


def _write(path: str, text: str, append: bool = False) -> None:
    flags = os.O_WRONLY | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


@BACKENDS.register(summary="beside any tier: ShellCommand (210) from a uretprobe on bash's "
                           "readline (tracefs)")
class ShellBackend(Backend):
    """Commands typed into interactive bash shells (see the module docstring).

    Threads: one reader (``sysmonx-shell``). ``stop`` disables and removes the probe and the
    instance, and unmounts a private tracefs mount.
    """

    name = "shell"
    tier = "aux"
    events = frozenset({210})

    def __init__(self, emit: Callable[[Observation], None], exclude_pids: frozenset = frozenset(),
                 options: Optional[dict] = None) -> None:
        super().__init__(emit, exclude_pids, options)
        self._tfs: Optional[Any] = None
        self._instance: Optional[str] = None
        self._group = f"{GROUP_PREFIX}{os.getpid()}"
        self._probes: list[str] = []
        self._fd = -1
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._lost_base: dict = {}
        self.received = 0
        self.lost = 0
        self.targets: list[tuple[str, int]] = []

    @classmethod
    def _targets(cls, shells) -> list[tuple[str, int]]:
        seen, out = set(), []
        for path in shells:
            try:
                st = os.stat(path)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            off = elf_symbol_offset(path, "readline")
            if off is not None:
                seen.add((st.st_dev, st.st_ino))
                out.append((os.path.realpath(path), off))
        return out

    @classmethod
    def probe(cls) -> Optional[str]:
        """``None`` when a shell exporting ``readline`` exists, uprobes are built in
        (``CONFIG_UPROBE_EVENTS``) and tracefs is usable; else why not."""
        from ..tracefs import tracefs_problem
        if os.geteuid() != 0:
            return "needs root (uprobes through tracefs)"
        why = tracefs_problem()
        if why:
            return why
        if not cls._targets(DEFAULT_SHELLS):
            return "no shell exporting readline (bash) found"
        return None

    def start(self) -> None:
        """Define and enable the probes, open the pipe, start the reader.

        Raises:
            BackendUnavailable: no shell to probe, no uprobe support, or tracefs refused a
                step; everything done so far is undone.
        """
        from ..tracefs import Tracefs
        self.targets = self._targets(self.options.get("shells", DEFAULT_SHELLS))
        if not self.targets:
            raise BackendUnavailable("no shell exporting readline (bash) found")
        try:
            self._tfs = Tfs = Tracefs()
            root = Tfs.path
            if not os.path.exists(os.path.join(root, "uprobe_events")):
                raise BackendUnavailable("kernel without uprobe events (CONFIG_UPROBE_EVENTS)")
            self._reap_stale(root)
            for i, (path, off) in enumerate(self.targets):
                name = f"readline_{i}"
                _write(os.path.join(root, "uprobe_events"),
                       f"r:{self._group}/{name} {path}:0x{off:x} cmd=+0($retval):string\n",
                       append=True)
                self._probes.append(name)
            inst = os.path.join(root, "instances", f"{INSTANCE_PREFIX}{os.getpid()}")
            try:
                os.mkdir(inst)
            except FileExistsError:
                pass
            self._instance = inst
            _write(os.path.join(inst, "buffer_size_kb"),
                   str(int(self.options.get("shell_buffer_kb", 1024))))
            _write(os.path.join(inst, "trace_clock"), "mono")
            _write(os.path.join(inst, "options/record-tgid"), "1")
            for cpu_stats in cpu_stats_files(self._instance):
                self._lost_base[cpu_stats] = read_lost(cpu_stats)
            for name in self._probes:
                _write(os.path.join(inst, "events", self._group, name, "enable"), "1")
            self._fd = os.open(os.path.join(inst, "trace_pipe"),
                               os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except BackendUnavailable:
            self._cleanup()
            raise
        except OSError as exc:
            self._cleanup()
            raise BackendUnavailable(f"shell uprobe set-up failed: {exc}") from None
        self._stop.clear()
        self._thread = threading.Thread(target=self._reader, name="sysmonx-shell", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the reader and undo the set-up. Idempotent; never raises."""
        try:
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=5)
            self._cleanup()
        except Exception:  # noqa: BLE001 - stop never raises
            pass

    def stats(self) -> dict:
        """``received`` (commands), ``lost`` (tracefs overruns), ``targets``."""
        return {"received": self.received, "lost": self.lost,
                "targets": [p for p, _ in self.targets]}

    # -- internals ----------------------------------------------------------------------------
    @staticmethod
    def _reap_stale(root: str) -> None:
        """Remove the instances and probes of sensors that died without cleaning up."""
        inst_dir = os.path.join(root, "instances")
        try:
            for name in os.listdir(inst_dir):
                owner = name[len(INSTANCE_PREFIX):]
                if name.startswith(INSTANCE_PREFIX) and owner.isdigit() and \
                        not os.path.exists(f"/proc/{owner}"):
                    ShellBackend._remove_instance(os.path.join(inst_dir, name))
            with open(os.path.join(root, "uprobe_events"), encoding="utf-8") as fh:
                lines = fh.read().splitlines()
        except OSError:
            return
        for line in lines:
            head = line.split(" ", 1)[0]  # r:GROUP/NAME
            group = head[2:].split("/", 1)[0]
            owner = group[len(GROUP_PREFIX):]
            if group.startswith(GROUP_PREFIX) and owner.isdigit() and \
                    not os.path.exists(f"/proc/{owner}"):
                try:
                    _write(os.path.join(root, "uprobe_events"), f"-:{head[2:]}\n", append=True)
                except OSError:
                    pass

    @staticmethod
    def _remove_instance(path: str) -> None:
        try:
            _write(os.path.join(path, "events/enable"), "0")
        except OSError:
            pass
        for _ in range(20):
            try:
                os.rmdir(path)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    return
                time.sleep(0.05)

    def _cleanup(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._instance is not None:
            self._remove_instance(self._instance)
            self._instance = None
        if self._tfs is not None:
            for name in self._probes:
                try:
                    _write(os.path.join(self._tfs.path, "uprobe_events"),
                           f"-:{self._group}/{name}\n", append=True)
                except OSError:
                    pass
            self._probes = []
            self._tfs.close()
            self._tfs = None

    def _check_lost(self) -> None:
        delta = 0
        for path in cpu_stats_files(self._instance):
            now = read_lost(path)
            delta += max(0, now - self._lost_base.get(path, 0))
            self._lost_base[path] = now
        if delta:
            self.lost += delta
            self.emit(Loss(ts_ns=time.time_ns(), source="shell.tracefs", count=delta))

    def _reader(self) -> None:
        from ..procfs import monotonic_to_epoch_offset
        rest = b""
        ttys: dict = {}
        offset = monotonic_to_epoch_offset()
        offset_due = time.monotonic() + 1.0
        next_lost = 0.0
        interval = float(self.options.get("poll_interval_s", 0.05))
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        try:
            while not self._stop.is_set():
                poller.poll(int(interval * 1000))
                chunks = []
                while True:
                    try:
                        chunk = os.read(self._fd, 1 << 16)
                    except BlockingIOError:
                        break
                    if not chunk:
                        break
                    chunks.append(chunk)
                now = time.monotonic()
                if now >= offset_due:
                    offset = monotonic_to_epoch_offset()
                    offset_due = now + 1.0
                if chunks:
                    data = rest + b"".join(chunks)
                    lines = data.split(b"\n")
                    rest = lines.pop()
                    out = []
                    for line in lines:
                        parsed = parse_line(line, thread_group)
                        if parsed is None:
                            continue
                        pid, mono, cmd = parsed
                        if pid in self.exclude_pids:
                            continue
                        self.received += 1
                        out.append(ShellCommand(ts_ns=mono + offset, pid=pid, command=cmd,
                                                tty=tty_for_line(pid, ttys)))
                    self.emit_all(out)
                if now >= next_lost:
                    self._check_lost()
                    next_lost = now + 0.5
        except Exception as exc:  # noqa: BLE001 - reported as event 255
            try:
                self.emit(BackendError(ts_ns=time.time_ns(), source="shell",
                                       message=f"reader failed: {exc!r}", fatal=True))
            except Exception:  # noqa: BLE001
                pass
