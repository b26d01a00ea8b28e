"""SysmonX as a Linux service: install (``-i``), update (``-c file``, ``-c --``), uninstall
(``-u``).

Layout under an *install root* (``/`` normally; ``--install-root DIR`` or ``$SYSMONX_INSTALL_ROOT``
lets tests run the whole flow in a temporary directory), mirroring Sysmon for Linux's
``/opt/sysmon`` (spec/sysmon-semantics.md 5.2, spec/rule-blob.md 1):

==================================  ======================================================  =====
``{root}/opt/sysmonx/config.xml``   the configuration the service runs (the file given,      0600
                                    byte for byte; with configuration switches the merged
                                    configuration, see :mod:`sysmonx.config.cmdline`)
``{root}/opt/sysmonx/rules.bin``    Sysmon's compiled rule blob of it (empty: no rules)      0600
``{root}/opt/sysmonx/argv``         the command line of the last ``-i``/``-c`` (NUL-ended)    0600
``{root}/opt/sysmonx/fieldsizes``   the FieldSizes option, when set                          0600
``{root}/opt/sysmonx/service.json`` how the service runs and every path the install created  0600
``{root}/opt/sysmonx/service.log``  the daemon's stderr (daemon mode only)                   0600
``{root}/etc/systemd/system/``      the systemd unit                                         0644
``sysmonx.service``
``{root}/run/sysmonx.pid``          the daemon's pid (daemon mode only)                      0644
==================================  ======================================================  =====

Two ways to run it: with **systemd** (install root ``/`` and systemd is PID 1): ``systemctl
enable --now``, reload with ``systemctl reload`` (the unit's ``ExecReload`` sends SIGHUP), stop
with ``systemctl disable --now``; otherwise (no systemd, or a test install root) as a **detached
daemon** ``sysmonx run ... --pidfile {root}/run/sysmonx.pid`` whose pid file appears once the
sensor has started (events 4 and 16 written), reloaded with SIGHUP, stopped with SIGTERM. Either
way the service is the live sensor (:mod:`sysmonx.pipeline.live`): it writes event 4 when it
starts and stops, and on a reload re-reads ``config.xml`` and writes event 16 with its SHA256.

``$SYSMONX_SERVICE_MODE`` (``systemd`` or ``daemon``) forces a mode.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .core.errors import ServiceError as _ServiceError

__all__ = ["Layout", "ServiceError", "ServiceSettings", "install", "update", "uninstall",
           "is_installed", "is_running", "read_state", "unit_text", "systemd_mode",
           "UNIT_NAME", "reload_service", "stop_service", "syslog_problem"]

UNIT_NAME = "sysmonx.service"
#: Seconds ``-i`` waits for the daemon to report that it started (``$SYSMONX_START_TIMEOUT``).
START_TIMEOUT = 90.0
#: Seconds ``-u`` waits for the daemon to exit after SIGTERM before SIGKILL.
STOP_TIMEOUT = 20.0

_children: list = []  # daemons started by this process (reaped when they exit)


class ServiceError(_ServiceError):
    """An install, update or uninstall step failed; the message says which and why."""


@dataclass(frozen=True)
class Layout:
    """Paths of an installation under ``root`` (see the module docstring)."""

    root: Path

    @classmethod
    def from_root(cls, root: Optional[str] = None) -> "Layout":
        """``root`` or ``$SYSMONX_INSTALL_ROOT`` or ``/``."""
        return cls(Path(root or os.environ.get("SYSMONX_INSTALL_ROOT") or "/").resolve())

    def _at(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    @property
    def opt(self) -> Path:
        """``{root}/opt/sysmonx`` (the service's working directory)."""
        return self._at("/opt/sysmonx")

    @property
    def config(self) -> Path:
        """The configuration the service runs."""
        return self.opt / "config.xml"

    @property
    def rules(self) -> Path:
        """The compiled rule blob."""
        return self.opt / "rules.bin"

    @property
    def argv(self) -> Path:
        """The stored command line."""
        return self.opt / "argv"

    @property
    def field_sizes(self) -> Path:
        """The stored FieldSizes option (``-c`` dump prints it)."""
        return self.opt / "fieldsizes"

    @property
    def state(self) -> Path:
        """Install record (mode, daemon command, created paths)."""
        return self.opt / "service.json"

    @property
    def manifest(self) -> Path:
        """SHA256 of every installed file the sensor runs from (``self_modified`` at start)."""
        return self.opt / "manifest.json"

    @property
    def sensor_state(self) -> Path:
        """The sensor's own state directory (heartbeat sequence, running flag)."""
        return self._at("/var/lib/sysmonx")

    @property
    def cache(self) -> Path:
        """The systemd service's cache (the unit's ``$SYSMONX_CACHE_DIR``: parsed
        configurations, filter plans, built eBPF objects); systemd creates it
        (``CacheDirectory=sysmonx``), writable under the unit's ``ProtectHome=read-only`` where
        root's ``~/.cache`` is not. A daemon (no systemd) keeps the default caches (root's
        ``~/.cache/sysmonx``, eBPF objects in ``/var/cache/sysmonx/bpf``)."""
        return self._at("/var/cache/sysmonx")

    @property
    def log(self) -> Path:
        """The daemon's stderr (daemon mode)."""
        return self.opt / "service.log"

    @property
    def unit(self) -> Path:
        """The systemd unit file."""
        return self._at("/etc/systemd/system/" + UNIT_NAME)

    @property
    def pidfile(self) -> Path:
        """The daemon's pid file (daemon mode)."""
        return self._at("/run/sysmonx.pid")

    def final(self, path: Path) -> str:
        """``path`` as seen from the installed system (``{root}/x`` -> ``/x``)."""
        return "/" + str(path.relative_to(self.root)).lstrip("/") if self.root != Path("/") \
            else str(path)


@dataclass
class ServiceSettings:
    """How the service runs (SysmonX options beside Sysmon's switches).

    Attributes:
        output_file: write events to this file instead of syslog (``--output-file``).
        backend: force a trace backend (``--backend``).
        no_dns: do not run the DNS backend.
        python: interpreter for the service (default: the running one).
    """

    output_file: Optional[str] = None
    backend: Optional[str] = None
    no_dns: bool = False
    python: str = field(default_factory=lambda: sys.executable)


# --- small helpers --------------------------------------------------------------------------

def _write_file(path: Path, data: bytes, mode: int, created: list) -> None:
    """Atomically replace ``path`` with ``data`` (a temporary file renamed over it), ``mode``."""
    _mkdirs(path.parent, created)
    if not path.exists():
        created.append(str(path))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _mkdirs(path: Path, created: list, mode: int = 0o755) -> None:
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        os.mkdir(d, mode)
        os.chmod(d, mode)
        created.append(str(d) + "/")


def _pid_alive(pid: int) -> bool:
    for child in list(_children):  # reap our own daemons so a dead one is not a zombie
        if child.pid == pid and child.poll() is not None:
            _children.remove(child)
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            if f.read().split(b") ", 1)[-1][:1] == b"Z":
                return False
    except OSError:
        pass
    return True


def _pid_is_sysmonx(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"sysmonx" in f.read()
    except OSError:
        return False


def _read_pid(layout: Layout) -> Optional[int]:
    try:
        text = layout.pidfile.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def systemd_mode(layout: Layout) -> bool:
    """True when the service is managed by systemd: install root ``/``, systemd is PID 1
    (``/run/systemd/system`` exists) and ``systemctl`` is installed; ``$SYSMONX_SERVICE_MODE``
    overrides."""
    forced = os.environ.get("SYSMONX_SERVICE_MODE")
    if forced in ("systemd", "daemon"):
        return forced == "systemd"
    return (layout.root == Path("/") and os.path.isdir("/run/systemd/system")
            and shutil.which("systemctl") is not None)


def _systemctl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["systemctl", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise ServiceError(f"systemctl {' '.join(args)} failed: "
                           f"{(proc.stderr or proc.stdout).strip()}")
    return proc


def _quote_systemd(arg: str) -> str:
    if arg and all(c.isalnum() or c in "/._-=:+,@" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def service_command(layout: Layout, settings: ServiceSettings, *, final: bool) -> list[str]:
    """The ``sysmonx run`` command line of the service.

    Args:
        final: paths as seen from the installed system (for the unit file) rather than under
            the install root (for a daemon started now).
    """
    path = layout.final if final else str
    # -I: isolated from PYTHON* variables, the user's site-packages and the working directory
    # (-S is not used: it would also drop the site-packages SysmonX and its libraries live in)
    cmd = [settings.python, "-I", "-m", "sysmonx.cli", "run",
           "--state-dir", path(layout.sensor_state), "--install-manifest", path(layout.manifest),
           "--config", path(layout.config), "--config-name-from", path(layout.argv)]
    if settings.output_file:
        cmd += ["-o", settings.output_file]
    else:
        cmd += ["--syslog"]
    if settings.backend:
        cmd += ["--backend", settings.backend]
    if settings.no_dns:
        cmd += ["--no-dns"]
    return cmd


def unit_text(layout: Layout, settings: ServiceSettings) -> str:
    """The systemd unit: ``Type=notify`` running :func:`service_command` (the sensor says
    ``READY=1`` once events 16 and 4 are out, then ``WATCHDOG=1`` from its loop: a sensor whose
    loop hangs for ``WatchdogSec`` is killed and restarted), ``ExecReload`` sending SIGHUP (the
    sensor re-reads ``config.xml`` and writes event 16), ``Restart=on-failure`` (also after a
    kill -9 or the watchdog), working directory ``/opt/sysmonx``, the caches in
    ``/var/cache/sysmonx`` (``CacheDirectory=`` and ``$SYSMONX_CACHE_DIR``: root's ``~/.cache``
    is read-only under ``ProtectHome=read-only``), and hardening that leaves tracing intact.

    Left out on purpose, because each breaks a backend: ``PrivateTmp``/``PrivateDevices`` (a
    private mount view makes fanotify report wrong paths for ``/tmp``), ``ProtectKernelTunables``
    and ``ProtectControlGroups`` (read-only ``/sys``: tracefs events, cgroup BPF attach),
    ``MemoryDenyWriteExecute`` (ctypes callbacks), ``SystemCallFilter`` (bpf, perf_event_open),
    ``CapabilityBoundingSet`` (the backends need CAP_SYS_ADMIN, CAP_BPF, CAP_PERFMON,
    CAP_AUDIT_*, CAP_NET_*, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH ...).
    """
    exec_start = " ".join(_quote_systemd(a) for a in service_command(layout, settings,
                                                                        final=True))
    return (
        "[Unit]\n"
        "Description=SysmonX system monitor (Sysmon-compatible event sensor)\n"
        "After=network.target\n"
        "\n"
        "[Service]\n"
        "Type=notify\n"
        "NotifyAccess=main\n"
        f"ExecStart={exec_start}\n"
        "ExecReload=/bin/kill -HUP $MAINPID\n"
        "Restart=on-failure\n"
        "RestartSec=5\n"
        "TimeoutStartSec=300\n"
        "WatchdogSec=60\n"
        f"WorkingDirectory={layout.final(layout.opt)}\n"
        # the caches: /root/.cache is read-only under ProtectHome=read-only
        "CacheDirectory=sysmonx\n"
        f"Environment=SYSMONX_CACHE_DIR={layout.final(layout.cache)}\n"
        "UMask=0077\n"
        "NoNewPrivileges=yes\n"
        "ProtectSystem=full\n"
        "ProtectHome=read-only\n"
        "ProtectHostname=yes\n"
        "RestrictRealtime=yes\n"
        "RestrictSUIDSGID=yes\n"
        "LockPersonality=yes\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n")


def read_state(layout: Layout) -> Optional[dict]:
    """The install record (``service.json``), or ``None`` when absent or unreadable."""
    try:
        return json.loads(layout.state.read_text())
    except (OSError, ValueError):
        return None


def _write_state(layout: Layout, state: dict, created: list) -> None:
    _write_file(layout.state, (json.dumps(state, indent=2) + "\n").encode(), 0o600, created)


def is_installed(layout: Layout) -> bool:
    """True when an installation exists under the root (its record, unit or configuration)."""
    return layout.state.exists() or layout.unit.exists() or layout.config.exists()


def is_running(layout: Layout) -> bool:
    """True when the installed service runs (systemd: ``is-active``; daemon: its pid is alive
    and is a SysmonX process)."""
    state = read_state(layout) or {}
    if state.get("mode") == "systemd":
        return _systemctl("is-active", "--quiet", UNIT_NAME, check=False).returncode == 0
    pid = _read_pid(layout)
    return pid is not None and _pid_alive(pid) and _pid_is_sysmonx(pid)


# --- start / stop / reload ------------------------------------------------------------------

def _start_daemon(layout: Layout, settings: ServiceSettings, created: list,
                  timeout: Optional[float] = None) -> int:
    """Start ``sysmonx run ... --pidfile`` detached and wait until the sensor has started.

    Returns:
        the daemon's pid.
    Raises:
        ServiceError: it exited or did not start in time (with the end of its log).
    """
    if timeout is None:
        timeout = float(os.environ.get("SYSMONX_START_TIMEOUT", START_TIMEOUT))
    _mkdirs(layout.pidfile.parent, created)
    try:
        layout.pidfile.unlink()
    except FileNotFoundError:
        pass
    cmd = service_command(layout, settings, final=False) + ["--pidfile", str(layout.pidfile)]
    if not layout.log.exists():
        created.append(str(layout.log))
    fd = os.open(layout.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    # the unit's UMask=0077 for the daemon too: its event file, spool and state are the
    # owner's only (it inherited the installer's umask: an event file of 0644)
    umask = os.umask(0o077)
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd,
                                cwd=layout.opt, start_new_session=True, close_fds=True)
    finally:
        os.umask(umask)
        os.close(fd)
    _children.append(proc)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"the service exited with status {proc.returncode} while "
                               f"starting:\n{_log_tail(layout)}")
        if _read_pid(layout) == proc.pid:
            return proc.pid
        time.sleep(0.1)
    proc.terminate()
    raise ServiceError(f"the service did not start within {timeout:.0f} s:\n{_log_tail(layout)}")


def _log_tail(layout: Layout, lines: int = 15) -> str:
    try:
        text = layout.log.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def stop_service(layout: Layout, state: Optional[dict] = None) -> bool:
    """Stop the service if it runs. Returns True when something was stopped.

    systemd: ``systemctl disable --now``; daemon: SIGTERM (the sensor writes event 4 Stopped),
    SIGKILL after :data:`STOP_TIMEOUT` seconds.
    """
    state = state if state is not None else (read_state(layout) or {})
    if state.get("mode") == "systemd":
        active = _systemctl("is-active", "--quiet", UNIT_NAME, check=False).returncode == 0
        _systemctl("disable", "--now", UNIT_NAME, check=False)
        return active
    pid = _read_pid(layout)
    if pid is None or not _pid_alive(pid) or not _pid_is_sysmonx(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
        while _pid_alive(pid):
            time.sleep(0.05)
    return True


def start_service(layout: Layout, say: Callable[[str], None] = print) -> bool:
    """Start the installed service when it is not running (``-c`` on a stopped service, after
    a kill -9 or a crash: a daemon has no supervisor). systemd: ``systemctl start``; daemon:
    the command recorded at install, as ``-i`` starts it. Returns False when it already ran.

    Raises:
        ServiceError: not installed, or it did not start (with the end of its log).
    """
    state = read_state(layout)
    if state is None:
        raise ServiceError("Error: Sysmon is not installed.")
    if is_running(layout):
        return False
    if state.get("mode") == "systemd":
        _systemctl("start", UNIT_NAME)
        return True
    opts = state.get("settings", {})
    settings = ServiceSettings(output_file=opts.get("output_file"), backend=opts.get("backend"),
                               no_dns=bool(opts.get("no_dns")),
                               python=opts.get("python") or sys.executable)
    created = list(state.get("created", []))
    try:
        pid = _start_daemon(layout, settings, created)
    finally:
        state["created"] = created
        _write_state(layout, state, created)
    say(f"Sysmon started (pid {pid}).")
    return True


def reload_service(layout: Layout) -> bool:
    """Ask the running service to re-read its configuration (SIGHUP; systemd: ``systemctl
    reload``). Returns False when it is not running."""
    state = read_state(layout) or {}
    if state.get("mode") == "systemd":
        if _systemctl("is-active", "--quiet", UNIT_NAME, check=False).returncode != 0:
            return False
        _systemctl("reload", UNIT_NAME)
        return True
    pid = _read_pid(layout)
    if pid is None or not _pid_alive(pid) or not _pid_is_sysmonx(pid):
        return False
    os.kill(pid, signal.SIGHUP)
    return True


# --- install / update / uninstall -----------------------------------------------------------

@dataclass
class Payload:
    """What ``-i``/``-c`` write: the configuration text the service runs, its rule blob, the
    FieldSizes value and the command line."""

    config: bytes
    rules: bytes
    field_sizes: Optional[str]
    argv: list[str]


#: files in a site-packages directory that ``site`` runs at every interpreter start, also
#: under ``python -I`` (``.pth`` lines that start with ``import``; the two customize modules)
STARTUP_NAMES = ("sitecustomize.py", "usercustomize.py")


def startup_dirs() -> list[Path]:
    """The site-packages directories of the running interpreter (``site.getsitepackages``),
    where start-up files (:func:`startup_files`) are looked for."""
    import site
    return [Path(d) for d in dict.fromkeys(site.getsitepackages()) if os.path.isdir(d)]


def startup_files(dirs: list[Path]) -> list[Path]:
    """The files in ``dirs`` that run code when the interpreter starts: ``*.pth`` and
    :data:`STARTUP_NAMES`."""
    out: list[Path] = []
    for d in dirs:
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        out += [d / n for n in names if n.endswith(".pth") or n in STARTUP_NAMES]
    return out


def install_manifest_files() -> list[Path]:
    """The files an installed sensor runs from: the interpreter, every file of the ``sysmonx``
    package (sources, data) and the site-packages start-up files (:func:`startup_files`: a
    ``.pth`` runs its ``import`` lines in the sensor at start, ``-I`` does not stop that)."""
    import sysmonx
    pkg = Path(sysmonx.__file__).resolve().parent
    files = [Path(os.path.realpath(sys.executable))]
    files += sorted(p for p in pkg.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    files += startup_files(startup_dirs())
    return files


def _write_manifest(layout: Layout, created: list) -> None:
    """``manifest.json``: ``{"files": {path: sha256}, "startup_dirs": [dir]}`` of
    :func:`install_manifest_files` and :func:`startup_dirs` (0600; the sensor reports a
    start-up file in those directories that the manifest does not list).
    The configuration is not in it: ``-c`` changes it legitimately, and the running sensor
    watches it (``config_modified``)."""
    files = {}
    for p in install_manifest_files():
        try:
            files[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
        except OSError:
            continue
    manifest = {"files": files, "startup_dirs": [str(d) for d in startup_dirs()]}
    _write_file(layout.manifest, (json.dumps(manifest, indent=1) + "\n").encode(),
                0o600, created)


def _write_payload(layout: Layout, payload: Payload, created: list) -> None:
    _mkdirs(layout.opt.parent, created)
    _mkdirs(layout.opt, created, 0o700)
    os.chmod(layout.opt, 0o700)
    _write_file(layout.config, payload.config, 0o600, created)
    _write_file(layout.rules, payload.rules, 0o600, created)
    _write_file(layout.argv, b"".join(a.encode("utf-8", "surrogateescape") + b"\0"
                                      for a in payload.argv), 0o600, created)
    if payload.field_sizes:
        _write_file(layout.field_sizes, payload.field_sizes.encode("utf-8"), 0o600, created)
    elif layout.field_sizes.exists():
        layout.field_sizes.unlink()


def install(layout: Layout, payload: Payload, settings: ServiceSettings,
            say: Callable[[str], None] = print) -> str:
    """Install and start the service (``-i``); an existing installation is stopped and replaced.

    Writes the files of the module docstring, then starts the service (systemd or daemon, see
    :func:`systemd_mode`); the sensor writes event 4 (Started) and event 16 when it starts.

    Returns:
        the mode used: ``systemd`` or ``daemon``.
    Raises:
        ServiceError: a step failed (files stay installed so ``-u`` can remove them).
        OSError: a file could not be written.
    """
    old = read_state(layout)
    created: list = list(old.get("created", [])) if old else []
    if old is not None or layout.unit.exists():
        stop_service(layout, old)
    mode = "systemd" if systemd_mode(layout) else "daemon"
    _write_payload(layout, payload, created)
    _write_manifest(layout, created)
    _mkdirs(layout.sensor_state, created, 0o700)
    _write_file(layout.unit, unit_text(layout, settings).encode(), 0o644, created)
    state = {"mode": mode, "root": str(layout.root), "unit": str(layout.unit),
             "command": service_command(layout, settings, final=(mode == "systemd")),
             "settings": {"output_file": settings.output_file, "backend": settings.backend,
                          "no_dns": settings.no_dns, "python": settings.python},
             "created": created}
    _write_state(layout, state, created)
    say("Sysmon installed.")
    say("Starting Sysmon..")
    try:
        if mode == "systemd":
            _systemctl("daemon-reload")
            _systemctl("enable", "--now", UNIT_NAME)
        else:
            _start_daemon(layout, settings, created)
    finally:  # record what starting created (pid file directory, log), even on failure
        state["created"] = created
        _write_state(layout, state, created)
    say("Sysmon started.")
    if not settings.output_file:
        problem = syslog_problem()
        if problem is not None:
            say(f"warning: {problem}: the service's events are lost until a syslog daemon "
                "listens there (install and start rsyslog, or reinstall with --output-file FILE)")
    return mode


def syslog_problem(address: str = "/dev/log") -> Optional[str]:
    """Why events sent to the local syslog socket ``address`` would be lost now (no socket, or
    nobody receiving on it), or ``None`` when a daemon accepts datagrams there. Sends nothing."""
    import socket
    if not os.path.exists(address):
        return f"no syslog daemon: {address} does not exist"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.connect(address)
    except OSError as exc:
        return f"no syslog daemon receives at {address} ({exc.strerror or exc})"
    finally:
        sock.close()
    return None


def update(layout: Layout, payload: Payload) -> bool:
    """Apply a new configuration to the installed service without restarting it (``-c``).

    Writes ``config.xml``, ``rules.bin``, ``argv`` (and ``fieldsizes``), then signals the service
    (:func:`reload_service`), which re-reads the configuration and writes event 16 with its
    SHA256.

    Returns:
        True when the running service was signalled, False when it is not running (the new
        configuration applies when it starts).
    Raises:
        ServiceError: not installed.
    """
    if not is_installed(layout):
        raise ServiceError("Error: Sysmon is not installed.")
    state = read_state(layout) or {"mode": "daemon", "created": []}
    created = list(state.get("created", []))
    _write_payload(layout, payload, created)
    state["created"] = created
    _write_state(layout, state, created)
    return reload_service(layout)


def _known_paths(layout: Layout) -> list[str]:
    return [str(p) for p in (layout.config, layout.rules, layout.argv, layout.field_sizes,
                             layout.state, layout.log, layout.unit, layout.pidfile,
                             layout.manifest)]


def _kept(layout: Layout, path: str) -> bool:
    """Paths ``-u`` keeps: the sensor's state directory (heartbeat ``Sequence``, the time of
    the last heartbeat, the running flag). Removing it made the next install start at
    ``Sequence`` 1 with ``SecondsSincePrevious`` 0, which no silence rule can tell from a
    first install, and took the state of other sensors sharing the directory."""
    return path.startswith(str(layout.sensor_state) + "/")


def uninstall(layout: Layout, force: bool = False,
              say: Callable[[str], None] = print) -> list[str]:
    """Stop the service and remove every file and directory the install created (``-u``).

    Only paths recorded in ``service.json`` when they were created, plus the fixed file names
    of the layout, are removed; directories only when empty. Without ``force`` a missing
    installation (or missing components) is an error; with it, whatever exists is removed.

    Returns:
        the paths removed.
    Raises:
        ServiceError: ``Sysmon is not installed.`` or a component is missing (without force).
    """
    state = read_state(layout)
    if state is None and not force:
        if not is_installed(layout):
            raise ServiceError("Sysmon is not installed.")
        raise ServiceError("Sysmon installation is incomplete (service.json missing); use "
                           "-u force")
    if state is not None and not force:
        missing = [p for p in (layout.config, layout.rules, layout.unit) if not p.exists()]
        if missing:
            raise ServiceError("Sysmon installation is incomplete (missing "
                               + ", ".join(str(m) for m in missing) + "); use -u force")
    state = state or {}
    # systemd: disable --now (also removes the enable symlink); daemon: returns once it exited
    stopped = stop_service(layout, state)
    say("Sysmon stopped." if stopped else "Sysmon was not running.")
    removed: list[str] = []
    created = state.get("created", [])
    # its directory goes only when empty, as every directory the install created
    files = [p for p in created if not p.endswith("/") and not _kept(layout, p)]
    for p in dict.fromkeys(files + _known_paths(layout)):
        path = Path(p)
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed.append(p)
    if state.get("mode") == "systemd":
        _systemctl("daemon-reload", check=False)
    dirs = sorted((p.rstrip("/") for p in created if p.endswith("/")),
                  key=lambda d: d.count("/"), reverse=True)
    if layout.opt.is_dir() and str(layout.opt) not in dirs:
        dirs.insert(0, str(layout.opt))
    for d in dirs:
        try:
            os.rmdir(d)
            removed.append(d + "/")
        except OSError:
            pass
    say("Sysmon removed." if removed else "Nothing to remove.")
    if (layout.sensor_state / "state.json").exists():
        say(f"Kept {layout.sensor_state / 'state.json'} (heartbeat Sequence and "
            "SecondsSincePrevious continue at the next install).")
    return removed
