"""Sysmon as SysmonX's Windows sensor: locate, install, reconfigure and uninstall it.

SysmonX never ships Sysmon: the user provides ``Sysmon64.exe`` (``--sysmon PATH``, ``PATH``, or
an installed Sysmon service), or explicitly consents to a download from Sysinternals
(``https://download.sysinternals.com/files/Sysmon.zip``, over TLS, Authenticode-checked before
use). Sysmon's EULA is the user's to accept: without ``-accepteula`` nothing is installed.

Every OS action goes through a :class:`CommandRunner` (default :class:`SubprocessRunner`), so the
flow is tested here with a fake runner. Commands, as Sysinternals documents them:

==============================================  ===================================================
``Sysmon64.exe -accepteula -i CONFIG``          install the service (named after the executable:
                                                ``Sysmon64``) and driver (``SysmonDrv``) with the
                                                sensor configuration
``Sysmon64.exe -c CONFIG``                      replace the configuration (no restart)
``Sysmon64.exe -u``                             remove service and driver (``-u force`` when parts
                                                are already gone)
``sc.exe query NAME`` / ``sc.exe qc NAME``      service state / its binary (``BINARY_PATH_NAME``);
                                                exit code 1060 when it does not exist
``sc.exe start NAME``                           keep it running
``reg.exe export KEY FILE /y``                  back up the configuration of a Sysmon SysmonX did
                                                not install (``Services\\<driver>\\Parameters``)
``reg.exe import FILE``                         put it back on ``-u``
==============================================  ===================================================

``-u`` removes what ``-i`` installed: Sysmon itself only when SysmonX installed it (recorded in
``sysmon-state.json`` under the state folder); a Sysmon that was there before gets its previous
configuration back (registry values restored, then its rule blob re-applied with ``-c`` so the
running service reloads it).
"""

from __future__ import annotations

import abc
import hashlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import zipfile
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

__all__ = ["CommandResult", "CommandRunner", "SubprocessRunner", "SysmonError",
           "SysmonNotFound", "SysmonState", "SysmonManager", "sysmon_binary_name",
           "download_sysmon", "SYSMON_ZIP_URL", "ERROR_SERVICE_DOES_NOT_EXIST"]

SYSMON_ZIP_URL = "https://download.sysinternals.com/files/Sysmon.zip"
ERROR_SERVICE_DOES_NOT_EXIST = 1060
_SERVICE_NAMES = ("Sysmon64", "Sysmon", "Sysmon64a")
_STATE = re.compile(r"^\s*STATE\s*:\s*(\d+)\s+(\w+)", re.M)
_BINARY = re.compile(r"^\s*BINARY_PATH_NAME\s*:\s*(.+?)\s*$", re.M)
_MAX_ZIP = 64 << 20
_MAX_MEMBER = 32 << 20


@dataclass(frozen=True)
class CommandResult:
    """What a command returned: exit code, standard output and error as text."""

    returncode: int
    stdout: str = ""
    stderr: str = ""


class CommandRunner(abc.ABC):
    """Runs a command line (no shell) and returns a :class:`CommandResult`."""

    @abc.abstractmethod
    def run(self, argv: Sequence[str], timeout: float = 120.0) -> CommandResult:
        """Run ``argv``; raise :class:`OSError` when it cannot be started."""


class SubprocessRunner(CommandRunner):
    """:class:`CommandRunner` over :func:`subprocess.run` (output decoded leniently: console
    programs write the OEM code page when redirected)."""

    def run(self, argv: Sequence[str], timeout: float = 120.0) -> CommandResult:
        proc = subprocess.run(list(argv), capture_output=True, timeout=timeout, check=False)
        dec = lambda b: b.decode("utf-8", errors="replace") if b else ""  # noqa: E731
        return CommandResult(proc.returncode, dec(proc.stdout), dec(proc.stderr))


class SysmonError(RuntimeError):
    """A Sysmon operation failed; the message says which command and what it printed."""


class SysmonNotFound(SysmonError):
    """No Sysmon binary was found (and no download was allowed)."""


@dataclass
class SysmonState:
    """What SysmonX did to Sysmon, persisted as ``sysmon-state.json``.

    Attributes:
        service: Sysmon's service name (``Sysmon64``).
        binary: the executable SysmonX runs for ``-c``/``-u`` (the installed copy).
        installed_by_sysmonx: True when ``-i`` installed Sysmon (``-u`` removes it).
        backup: ``.reg`` backup of a pre-existing Sysmon's configuration, or ``None``.
        driver: Sysmon's driver name (``SysmonDrv``).
        sensor_sha256: SHA-256 of the sensor configuration last applied.
    """

    service: str
    binary: str
    installed_by_sysmonx: bool
    backup: Optional[str] = None
    driver: str = "SysmonDrv"
    sensor_sha256: str = ""


def sysmon_binary_name(machine: Optional[str] = None) -> str:
    """The Sysmon executable for this CPU: ``Sysmon64a.exe`` on ARM64, ``Sysmon64.exe`` on x64,
    ``Sysmon.exe`` on 32-bit x86 (the three binaries of Sysmon.zip)."""
    m = (machine or platform.machine()).lower()
    if m in ("arm64", "aarch64"):
        return "Sysmon64a.exe"
    if m in ("amd64", "x86_64", "x64"):
        return "Sysmon64.exe"
    return "Sysmon.exe"


def download_sysmon(dest_dir: str, *, consent: bool, runner: CommandRunner,
                    fetch: Optional[Callable[[str], bytes]] = None,
                    machine: Optional[str] = None,
                    expected_sha256: Optional[str] = None) -> str:
    """Download Sysmon.zip from Sysinternals and extract this CPU's binary into ``dest_dir``.

    Only with ``consent`` (the user asked for it explicitly). The binary is kept only if its
    Authenticode signature is valid and from Microsoft (``Get-AuthenticodeSignature`` run
    through ``runner``) and, when given, the zip's SHA-256 matches ``expected_sha256``.

    Args:
        fetch: URL -> bytes (default: :func:`urllib.request.urlopen` with certificate checks).
    Returns:
        the path of the extracted executable.
    Raises:
        SysmonNotFound: no consent.
        SysmonError: download, size, archive, hash or signature problem (the file is removed).
    """
    if not consent:
        raise SysmonNotFound("Sysmon was not found and downloading it needs your explicit "
                             "consent (--download-sysmon); or pass --sysmon PATH")
    name = sysmon_binary_name(machine)
    if fetch is None:
        def fetch(url: str) -> bytes:
            import urllib.request
            with urllib.request.urlopen(url, timeout=60) as resp:  # an https URL only
                return resp.read(_MAX_ZIP + 1)
    data = fetch(SYSMON_ZIP_URL)
    if len(data) > _MAX_ZIP:
        raise SysmonError(f"{SYSMON_ZIP_URL}: more than {_MAX_ZIP} bytes; refused")
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 and digest != expected_sha256.lower():
        raise SysmonError(f"{SYSMON_ZIP_URL}: SHA-256 {digest} is not the expected "
                          f"{expected_sha256}")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            member = next((i for i in zf.infolist() if i.filename.lower() == name.lower()),
                          None)
            if member is None:
                raise SysmonError(f"{SYSMON_ZIP_URL} holds no {name}")
            if member.file_size > _MAX_MEMBER:
                raise SysmonError(f"{name} in {SYSMON_ZIP_URL} is too large")
            payload = zf.read(member)
    except zipfile.BadZipFile as exc:
        raise SysmonError(f"{SYSMON_ZIP_URL}: not a zip archive ({exc})") from None
    os.makedirs(dest_dir, exist_ok=True)
    path = os.path.join(dest_dir, name)   # fixed name: nothing from the archive picks the path
    with open(path, "wb") as f:
        f.write(payload)
    ok, why = _authenticode_ok(runner, path)
    if not ok:
        os.unlink(path)
        raise SysmonError(f"{name} from {SYSMON_ZIP_URL} failed the signature check: {why}")
    return path


def _authenticode_ok(runner: CommandRunner, path: str) -> tuple[bool, str]:
    script = ("$s = Get-AuthenticodeSignature -LiteralPath $args[0]; "
              "[Console]::Out.Write($s.Status.ToString() + '|' + $s.SignerCertificate.Subject)")
    res = runner.run(["powershell.exe", "-NoProfile", "-NonInteractive", "-Command", script,
                      path])
    status, _, subject = res.stdout.strip().partition("|")
    if res.returncode != 0 or status != "Valid":
        return False, f"status {status or res.stderr.strip() or res.returncode}"
    if "O=Microsoft Corporation" not in subject:
        return False, f"signed by {subject!r}, not Microsoft"
    return True, subject


class SysmonManager:
    """Install, reconfigure, keep running and uninstall Sysmon for SysmonX.

    Args:
        runner: runs the commands (see the module docstring).
        state_dir: SysmonX's private folder (``%ProgramData%\\SysmonX``): sensor configuration
            files, the ``.reg`` backup, ``sysmon-state.json``.
        which: finds an executable on ``PATH`` (default :func:`shutil.which`).
        exists: path existence test (default :func:`os.path.isfile`).
        machine: CPU name (default :func:`platform.machine`).
        fetch: download function for :func:`download_sysmon`.
    """

    def __init__(self, runner: CommandRunner, state_dir: str, *,
                 which: Callable[[str], Optional[str]] = shutil.which,
                 exists: Callable[[str], bool] = os.path.isfile,
                 machine: Optional[str] = None,
                 fetch: Optional[Callable[[str], bytes]] = None) -> None:
        self.runner = runner
        self.state_dir = state_dir
        self.which = which
        self.exists = exists
        self.machine = machine
        self.fetch = fetch

    # ---- state -------------------------------------------------------------------------------

    @property
    def state_path(self) -> str:
        """``<state_dir>/sysmon-state.json``."""
        return os.path.join(self.state_dir, "sysmon-state.json")

    def load_state(self) -> Optional[SysmonState]:
        """The recorded state, or ``None`` when SysmonX did not set Sysmon up.

        Raises:
            SysmonError: the state file is unreadable (path in the message).
        """
        try:
            with open(self.state_path, encoding="utf-8") as f:
                return SysmonState(**json.load(f))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise SysmonError(f"{self.state_path}: unreadable ({exc})") from None

    def _save_state(self, state: SysmonState) -> None:
        os.makedirs(self.state_dir, exist_ok=True)
        tmp = self.state_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(asdict(state), f, indent=1)
        os.replace(tmp, self.state_path)

    # ---- queries -------------------------------------------------------------------------------

    def service_state(self, name: str) -> Optional[str]:
        """``RUNNING``, ``STOPPED``, ... from ``sc.exe query``; ``None`` when no such service."""
        res = self.runner.run(["sc.exe", "query", name])
        if res.returncode == ERROR_SERVICE_DOES_NOT_EXIST:
            return None
        m = _STATE.search(res.stdout)
        if res.returncode != 0 or not m:
            raise SysmonError(f"sc.exe query {name} failed ({res.returncode}): "
                              f"{(res.stdout + res.stderr).strip()[:300]}")
        return m.group(2).upper()

    def service_binary(self, name: str) -> Optional[str]:
        """The executable of service ``name`` (``sc.exe qc``), or ``None``."""
        res = self.runner.run(["sc.exe", "qc", name])
        if res.returncode != 0:
            return None
        m = _BINARY.search(res.stdout)
        if not m:
            return None
        path = m.group(1).strip()
        return path[1:path.index('"', 1)] if path.startswith('"') else path.split(" -", 1)[0]

    def find_installed(self, extra_names: Sequence[str] = ()) -> Optional[tuple[str, str]]:
        """An installed Sysmon service: ``(service name, binary)`` or ``None``."""
        for name in dict.fromkeys((*extra_names, *_SERVICE_NAMES)):
            if self.service_state(name) is not None:
                return name, self.service_binary(name) or ""
        return None

    def locate(self, explicit: Optional[str] = None) -> str:
        """The Sysmon executable to install from: ``explicit`` (must exist and be a Sysmon
        executable), else this CPU's Sysmon on ``PATH``.

        Raises:
            SysmonNotFound: nothing suitable (the message says how to provide it).
        """
        if explicit:
            base = os.path.basename(explicit.replace("\\", "/")).lower()
            if not self.exists(explicit):
                raise SysmonNotFound(f"--sysmon {explicit}: no such file")
            if not (base.startswith("sysmon") and base.endswith(".exe")):
                raise SysmonNotFound(f"--sysmon {explicit}: not a Sysmon executable "
                                     "(expected Sysmon64.exe, Sysmon64a.exe or Sysmon.exe)")
            return explicit
        name = sysmon_binary_name(self.machine)
        found = self.which(name)
        if found:
            return found
        raise SysmonNotFound(f"{name} not found: pass --sysmon PATH to your copy (from "
                             "https://learn.microsoft.com/sysinternals/downloads/sysmon), or "
                             "--download-sysmon to let SysmonX fetch it from Sysinternals")

    # ---- actions -------------------------------------------------------------------------------

    def _write_config(self, xml: str) -> str:
        os.makedirs(self.state_dir, exist_ok=True)
        path = os.path.join(self.state_dir, "sysmon-sensor-config.xml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(xml)
        return path

    def _sysmon(self, binary: str, args: Sequence[str], what: str) -> CommandResult:
        res = self.runner.run([binary, *args], timeout=300)
        if res.returncode != 0:
            raise SysmonError(f"{what}: {os.path.basename(binary)} {' '.join(args)} exited "
                              f"with {res.returncode}: {(res.stdout + res.stderr).strip()[:500]}")
        return res

    def install(self, sensor_xml: str, *, accept_eula: bool, sysmon: Optional[str] = None,
                download: bool = False, driver: str = "SysmonDrv") -> SysmonState:
        """Make Sysmon run with the sensor configuration.

        A Sysmon already installed is kept (its configuration is backed up, then replaced with
        ``-c``); otherwise Sysmon is installed with ``-accepteula -i``. The service must end up
        ``RUNNING``.

        Raises:
            SysmonError: EULA not accepted, SysmonX already set Sysmon up (use ``-c``), a
                command failed, or the service does not run afterwards.
            SysmonNotFound: no binary and no download consent.
        """
        if not accept_eula:
            raise SysmonError("Sysmon's license must be accepted: add -accepteula (SysmonX "
                              "passes it to Sysmon; read https://learn.microsoft.com/"
                              "sysinternals/license-terms)")
        if self.load_state() is not None:
            raise SysmonError("Sysmon is already set up by SysmonX: use -c to change the "
                              "configuration, or -u first")
        sha = hashlib.sha256(sensor_xml.encode("utf-8")).hexdigest()
        hint = [os.path.splitext(os.path.basename(sysmon.replace("\\", "/")))[0]] \
            if sysmon else []
        existing = self.find_installed(hint)
        config = self._write_config(sensor_xml)
        if existing is not None:
            service, binary = existing
            if not binary:
                raise SysmonError(f"service {service} exists but its binary is unknown")
            backup = os.path.join(self.state_dir, "sysmon-config-backup.reg")
            key = f"HKLM\\SYSTEM\\CurrentControlSet\\Services\\{driver}\\Parameters"
            res = self.runner.run(["reg.exe", "export", key, backup, "/y"])
            if res.returncode != 0:
                raise SysmonError(f"cannot back up the current Sysmon configuration ({key}): "
                                  f"{(res.stdout + res.stderr).strip()[:300]}; nothing changed")
            state = SysmonState(service, binary, False, backup, driver, sha)
            try:
                self._sysmon(binary, ["-c", config], "applying the sensor configuration")
            except SysmonError:
                os.unlink(backup) if os.path.exists(backup) else None
                raise
            self._save_state(state)
        else:
            try:
                source = self.locate(sysmon)
            except SysmonNotFound:
                if not download:
                    raise
                source = download_sysmon(os.path.join(self.state_dir, "download"),
                                         consent=True, runner=self.runner, fetch=self.fetch,
                                         machine=self.machine)
            service = os.path.splitext(os.path.basename(source.replace("\\", "/")))[0]
            self._sysmon(source, ["-accepteula", "-i", config], "installing Sysmon")
            binary = self.service_binary(service) or source
            state = SysmonState(service, binary, True, None, driver, sha)
            self._save_state(state)
        if self.service_state(state.service) != "RUNNING":
            raise SysmonError(f"service {state.service} is not running after the install")
        return state

    def update(self, sensor_xml: str) -> SysmonState:
        """``-c``: apply a new sensor configuration to the Sysmon SysmonX set up.

        Raises:
            SysmonError: SysmonX did not set Sysmon up, or Sysmon refused the configuration.
        """
        state = self.load_state()
        if state is None:
            raise SysmonError("Sysmon is not set up by SysmonX: use -i first")
        self._sysmon(state.binary, ["-c", self._write_config(sensor_xml)],
                     "applying the sensor configuration")
        state.sensor_sha256 = hashlib.sha256(sensor_xml.encode("utf-8")).hexdigest()
        self._save_state(state)
        return state

    def ensure_running(self) -> bool:
        """Start Sysmon's service when it is stopped; True when it was already running.

        Raises:
            SysmonError: not set up, the service is gone, or it cannot be started.
        """
        state = self.load_state()
        if state is None:
            raise SysmonError("Sysmon is not set up by SysmonX")
        current = self.service_state(state.service)
        if current is None:
            raise SysmonError(f"service {state.service} no longer exists (Sysmon was removed)")
        if current == "RUNNING":
            return True
        res = self.runner.run(["sc.exe", "start", state.service])
        if res.returncode != 0:
            raise SysmonError(f"sc.exe start {state.service} failed ({res.returncode}): "
                              f"{(res.stdout + res.stderr).strip()[:300]}")
        return False

    def uninstall(self) -> str:
        """``-u``: remove Sysmon if SysmonX installed it, else restore its previous
        configuration; forget the state. Returns what was done (one line).

        Raises:
            SysmonError: a command failed (the state is kept, so ``-u`` can be retried).
        """
        state = self.load_state()
        if state is None:
            return "Sysmon was not set up by SysmonX: nothing to remove"
        if state.installed_by_sysmonx:
            res = self.runner.run([state.binary, "-u"], timeout=300)
            if res.returncode != 0:
                self._sysmon(state.binary, ["-u", "force"], "removing Sysmon")
            done = f"removed Sysmon (service {state.service}, installed by SysmonX)"
        else:
            done = self._restore(state)
        os.unlink(self.state_path)
        for name in ("sysmon-sensor-config.xml",):
            try:
                os.unlink(os.path.join(self.state_dir, name))
            except FileNotFoundError:
                pass
        return done

    def _restore(self, state: SysmonState) -> str:
        if not state.backup or not os.path.exists(state.backup):
            raise SysmonError("the backup of the previous Sysmon configuration is missing "
                              f"({state.backup}); Sysmon keeps the sensor configuration")
        res = self.runner.run(["reg.exe", "import", state.backup])
        if res.returncode != 0:
            raise SysmonError(f"reg.exe import {state.backup} failed: "
                              f"{(res.stdout + res.stderr).strip()[:300]}")
        from ..config.blob import BlobError, blob_to_xml, read_blob_file
        try:
            xml = blob_to_xml(read_blob_file(state.backup))
        except BlobError:
            xml = None  # no Rules value: Sysmon ran with its defaults
        if xml is None:
            self._sysmon(state.binary, ["-c", "--"], "restoring the default configuration")
        else:
            path = os.path.join(self.state_dir, "sysmon-restored-config.xml")
            with open(path, "w", encoding="utf-8") as f:
                f.write(xml)
            self._sysmon(state.binary, ["-c", path], "restoring the previous configuration")
            os.unlink(path)
        os.unlink(state.backup)
        return f"restored the previous configuration of {state.service} (not installed by SysmonX)"
