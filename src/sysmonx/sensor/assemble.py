"""Observations -> Sysmon for Linux events, with the fields and value formats Sysmon for Linux
writes (shared/spec/sysmon-semantics.md sections 4.2, 4.3 and 5.3).

Every backend's observations go through the same :class:`Assembler`, so an event's values do not
depend on which tier collected it. Field order comes from the schema catalogue.
"""

from __future__ import annotations

import os
import socket
import threading
from datetime import datetime, timezone
from typing import Optional

from ..event import (LINUX_CHANNEL, LINUX_PROVIDER, LINUX_PROVIDER_GUID, SYSMON_KEYWORDS, Event)
from ..schema import CURRENT
from ..version import __version__
from . import observations as ob
from .process import UNSET_ID, FileHasher, ProcessCache, clean_text, logon_guid

__all__ = ["Assembler", "utc_time", "event_time"]


def utc_time(ts_ns: int) -> str:
    """Sysmon's UtcTime: ``YYYY-MM-DD HH:MM:SS.mmm`` (UTC, milliseconds)."""
    s, ns = divmod(ts_ns, 1_000_000_000)
    return datetime.fromtimestamp(s, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") + \
        f".{ns // 1_000_000:03d}"


def event_time(ts_ns: int) -> str:
    """System/TimeCreated in the canonical form, with Sysmon for Linux's microsecond precision
    (``YYYY-MM-DDTHH:MM:SS.uuuuuu000Z``, spec 5.3 sample)."""
    s, ns = divmod(ts_ns, 1_000_000_000)
    return (datetime.fromtimestamp(s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
            + f".{ns // 1000:06d}000Z")


def _query_status(rcode) -> str:
    """QueryStatus as Windows Sysmon writes it: ``0`` for success, else the Win32 DNS error code
    ``9000 + RCODE`` (9003 = DNS_ERROR_RCODE_NAME_ERROR for NXDOMAIN, 9002 SERVFAIL, 9005
    REFUSED ...); ``-`` when no answer was seen."""
    if rcode is None:
        return "-"
    return "0" if rcode == 0 else str(9000 + rcode)


def _dash(v) -> str:
    return "-" if v is None or v == "" else str(v)


class Assembler:
    """Builds Sysmon for Linux events.

    Args:
        cache: the shared :class:`~sysmonx.sensor.process.ProcessCache`.
        hasher: computes ProcessCreate ``Hashes`` (HashAlgorithms; default SHA256).
        provider, provider_guid, channel: envelope (defaults: exactly Sysmon for Linux's).
        computer: System/Computer (default: the host name).
    """

    def __init__(self, cache: ProcessCache, hasher: Optional[FileHasher] = None, *,
                 provider: str = LINUX_PROVIDER, provider_guid: str = LINUX_PROVIDER_GUID,
                 channel: str = LINUX_CHANNEL, computer: Optional[str] = None) -> None:
        self.cache = cache
        self.hasher = hasher or FileHasher()
        self.provider = provider
        self.provider_guid = provider_guid
        self.channel = channel
        self.computer = computer or socket.gethostname()
        self.pid = os.getpid()
        self.euid = str(os.geteuid())
        self._udp_ports: dict = {}  # local UDP port -> (pid, ts_ns), for DNS attribution

    def envelope(self, event_id: int, data: dict, ts_ns: int) -> Event:
        """Wrap ``data`` in the System header Sysmon for Linux writes (``record_id`` is left
        ``None``: the ``record-numbers`` stage numbers what passes the filter)."""
        ev = CURRENT.events[event_id]
        return Event(event_id, data, provider=self.provider, provider_guid=self.provider_guid,
                     version=ev.version, level=ev.level_value, task=event_id, opcode=0,
                     keywords=SYSMON_KEYWORDS, time_created=event_time(ts_ns),
                     record_id=None, process_id=self.pid,
                     thread_id=threading.get_native_id(), channel=self.channel,
                     computer=self.computer, user_id=self.euid)

    # --- events the sensor itself reports -------------------------------------------------

    def service_state(self, state: str, schema_version: str, ts_ns: int) -> Event:
        """Event 4: ``State`` Started/Stopped."""
        return self.envelope(4, {"UtcTime": utc_time(ts_ns), "State": state,
                                 "Version": __version__, "SchemaVersion": schema_version}, ts_ns)

    def config_change(self, configuration: str, sha256: Optional[str], ts_ns: int) -> Event:
        """Event 16: ``ConfigurationFileHash`` is ``SHA256=<hex>`` (``-`` without a file)."""
        return self.envelope(16, {"UtcTime": utc_time(ts_ns), "Configuration": configuration,
                                  "ConfigurationFileHash":
                                      f"SHA256={sha256}" if sha256 else "-"}, ts_ns)

    def error(self, ident: str, description: str, ts_ns: int) -> Event:
        """Event 255: ``ID`` names the component, ``Description`` the problem."""
        return self.envelope(255, {"UtcTime": utc_time(ts_ns), "ID": ident,
                                   "Description": description}, ts_ns)

    # --- observations -------------------------------------------------------------------------

    def _proc(self, pid):
        info = self.cache.get(pid)
        return info

    def build(self, o: ob.Observation) -> Optional[Event]:
        """The Sysmon event for one observation (``None`` for observations that only update
        state)."""
        t = type(o)
        if t is ob.ProcessExec:
            return self._exec(o)
        if t is ob.ProcessExit:
            return self._exit(o)
        if t is ob.NetworkConnect:
            return self._network(o)
        if t is ob.FileCreate:
            return self._file(11, o)
        if t is ob.FileDelete:
            return self._file(23, o)
        if t is ob.RawAccessRead:
            return self._raw(o)
        if t is ob.ProcessAccess:
            return self._access(o)
        if t is ob.DnsQuery:
            return self._dns(o)
        if t is ob.Loss:
            return self.error(o.source, f"Lost {o.count} events" + (f": {o.detail}" if o.detail
                                                                    else ""), o.ts_ns)
        if t is ob.BackendError:
            return self.error(o.source, o.message, o.ts_ns)
        return None

    def _exec(self, o: ob.ProcessExec) -> Event:
        info = self.cache.on_exec(o.pid, ppid=o.ppid, start_ticks=o.start_ticks, image=o.image,
                                  argv=o.argv, cwd=o.cwd, uid=o.uid, auid=o.auid,
                                  sessionid=o.sessionid, end_data=o.end_data)
        parent = self.cache.get(info.ppid)
        uid = info.uid
        logon_uid = uid if uid is not None else UNSET_ID
        session = info.sessionid if info.sessionid not in (None, UNSET_ID) else 0
        data = {
            "RuleName": "-", "UtcTime": utc_time(o.ts_ns), "ProcessGuid": info.guid,
            "ProcessId": str(o.pid), "Image": _dash(info.image), "FileVersion": "-",
            "Description": "-", "Product": "-", "Company": "-", "OriginalFileName": "-",
            "CommandLine": _dash(info.command_line), "CurrentDirectory": _dash(info.cwd),
            "User": info.user, "LogonGuid": logon_guid(self.cache.machine, logon_uid),
            "LogonId": str(logon_uid), "TerminalSessionId": str(session),
            "IntegrityLevel": "no level", "Hashes": self.hasher.hashes(info.image),
            "ParentProcessGuid": parent.guid if parent else "{00000000-0000-0000-0000-000000000000}",
            "ParentProcessId": str(info.ppid or 0),
            "ParentImage": _dash(parent.image if parent else None),
            "ParentCommandLine": _dash(parent.command_line if parent else None),
            "ParentUser": parent.user if parent else "-",
        }
        return self.envelope(1, data, o.ts_ns)

    def _exit(self, o: ob.ProcessExit) -> Event:
        info = self.cache.on_exit(o.pid, o.ts_ns)
        return self.envelope(5, {
            "RuleName": "-", "UtcTime": utc_time(o.ts_ns),
            "ProcessGuid": info.guid if info else "{00000000-0000-0000-0000-000000000000}",
            "ProcessId": str(o.pid), "Image": _dash(info.image if info else None),
            "User": info.user if info else "-"}, o.ts_ns)

    def _network(self, o: ob.NetworkConnect) -> Event:
        info = self._proc(o.pid)
        if o.protocol == "udp" and o.source_port:
            self._udp_ports[o.source_port] = (o.pid, o.ts_ns)
            if len(self._udp_ports) > 4096:
                self._udp_ports.pop(next(iter(self._udp_ports)))
        v6 = "true" if o.ipv6 else "false"
        return self.envelope(3, {
            "RuleName": "-", "UtcTime": utc_time(o.ts_ns),
            "ProcessGuid": info.guid if info else "{00000000-0000-0000-0000-000000000000}",
            "ProcessId": str(o.pid), "Image": _dash(info.image if info else None),
            "User": info.user if info else "-", "Protocol": o.protocol,
            "Initiated": "true" if o.initiated else "false", "SourceIsIpv6": v6,
            "SourceIp": _dash(o.source_ip), "SourceHostname": "-",
            "SourcePort": str(o.source_port or 0), "SourcePortName": "-",
            "DestinationIsIpv6": v6, "DestinationIp": _dash(o.dest_ip),
            "DestinationHostname": "-", "DestinationPort": str(o.dest_port),
            "DestinationPortName": "-"}, o.ts_ns)

    def _file(self, event_id: int, o) -> Event:
        info = self._proc(o.pid)
        guid = info.guid if info else "{00000000-0000-0000-0000-000000000000}"
        image = _dash(info.image if info else None)
        user = info.user if info else "-"
        if event_id == 11:
            data = {"RuleName": "-", "UtcTime": utc_time(o.ts_ns), "ProcessGuid": guid,
                    "ProcessId": str(o.pid), "Image": image, "TargetFilename": clean_text(o.path),
                    "CreationUtcTime": utc_time(o.ts_ns), "User": user}
        else:
            data = {"RuleName": "-", "UtcTime": utc_time(o.ts_ns), "ProcessGuid": guid,
                    "ProcessId": str(o.pid), "User": user, "Image": image,
                    "TargetFilename": clean_text(o.path), "Hashes": "-", "IsExecutable": "-",
                    "Archived": "-"}
        return self.envelope(event_id, data, o.ts_ns)

    def _raw(self, o: ob.RawAccessRead) -> Event:
        info = self._proc(o.pid)
        return self.envelope(9, {
            "RuleName": "-", "UtcTime": utc_time(o.ts_ns),
            "ProcessGuid": info.guid if info else "{00000000-0000-0000-0000-000000000000}",
            "ProcessId": str(o.pid), "Image": _dash(info.image if info else None),
            "Device": clean_text(o.device), "User": info.user if info else "-"}, o.ts_ns)

    def _access(self, o: ob.ProcessAccess) -> Event:
        src, dst = self._proc(o.pid), self._proc(o.target_pid)
        zero = "{00000000-0000-0000-0000-000000000000}"
        return self.envelope(10, {
            "RuleName": "-", "UtcTime": utc_time(o.ts_ns),
            "SourceProcessGUID": src.guid if src else zero, "SourceProcessId": str(o.pid),
            "SourceThreadId": str(o.tid or o.pid), "SourceImage": _dash(src.image if src else None),
            "TargetProcessGUID": dst.guid if dst else zero, "TargetProcessId": str(o.target_pid),
            "TargetImage": _dash(dst.image if dst else None), "GrantedAccess": f"0x{o.request:x}",
            "CallTrace": "-", "SourceUser": src.user if src else "-",
            "TargetUser": dst.user if dst else "-"}, o.ts_ns)

    def _dns(self, o: ob.DnsQuery) -> Event:
        pid = o.pid
        if pid is None and o.source_port:
            hit = self._udp_ports.get(o.source_port)
            if hit and abs(o.ts_ns - hit[1]) < 5_000_000_000:
                pid = hit[0]
        info = self._proc(pid) if pid else None
        return self.envelope(22, {
            "RuleName": "-", "UtcTime": utc_time(o.ts_ns),
            "ProcessGuid": info.guid if info else "{00000000-0000-0000-0000-000000000000}",
            "ProcessId": str(pid or 0), "QueryName": clean_text(o.query_name),
            "QueryStatus": _query_status(o.status),
            "QueryResults": _dash(clean_text(o.results)), "Image": _dash(info.image if info else None),
            "User": info.user if info else "-"}, o.ts_ns)
