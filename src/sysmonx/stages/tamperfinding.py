"""TamperFinding (SysmonX event 201): how every part of SysmonX reports an attempt to blind, stop,
reconfigure or fool the sensor, and the stable names of the techniques it reports.

One public helper, :func:`tamper_finding`, builds the event; the live Linux sensor, the replay
``tamper`` stage and the Windows sources all use it, so a finding has the same fields, value
formats and envelope wherever it comes from. The event's definition (fields, tag
``TamperFinding``, level Warning, Sigma category ``sysmonx_tamper``) is data in
:mod:`sysmonx.schema.catalogue`; this module only fills it.

Fields, in order (schema catalogue): ``RuleName`` (``-``; the filter fills it), ``UtcTime``
(Sysmon's ``YYYY-MM-DD HH:MM:SS.mmm``, UTC), ``Technique`` (a name from :data:`TECHNIQUES`, or
another lower-case ``snake_case`` name a new detector documents there), ``Details`` (one line of
text: what was seen, with the values that prove it), ``ProcessGuid``/``ProcessId``/``Image`` of
the actor (the process that did it) where known, else the documented unknown values
(all-zero GUID, ``0``, ``-``), ``Source`` (``live`` for the running sensor, else the log the
finding was read from).

The envelope is the stream's own: a finding from a Windows log or sensor carries Windows Sysmon's
provider and channel, one from the Linux sensor Sysmon for Linux's, as SysmonX's events 4, 16
and 255 do; EventIDs from 200 up are what mark SysmonX's own events (docs/ARCHITECTURE.md
"SysmonX's own events ..., tamper findings and heartbeats").
"""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Optional, Union

from ..event import (LINUX_CHANNEL, LINUX_PROVIDER, LINUX_PROVIDER_GUID, SYSMON_KEYWORDS,
                     WINDOWS_CHANNEL, WINDOWS_PROVIDER, WINDOWS_PROVIDER_GUID, Event,
                     normalize_time)
from ..schema import CURRENT

__all__ = ["TAMPER_FINDING_EVENT_ID", "HEARTBEAT_EVENT_ID", "BPF_EVENT_ID", "TECHNIQUES",
           "ZERO_GUID", "tamper_finding", "utc_time_field"]

#: SysmonX event IDs of the resilience events (catalogue entries in schema/catalogue.py).
TAMPER_FINDING_EVENT_ID = 201
HEARTBEAT_EVENT_ID = 202
#: Sysmon for Linux's eBPF program event.
BPF_EVENT_ID = 100

#: The GUID of no known process (Sysmon's "unknown parent").
ZERO_GUID = "{00000000-0000-0000-0000-000000000000}"

#: Stable technique names -> (where it is detected, ATT&CK technique, what it means). The name is
#: the contract with detections (Sigma rules select on ``Technique``); never rename one.
TECHNIQUES: dict[str, tuple[str, str, str]] = {
    # live sensor (Linux)
    "sensor_signal": ("live", "T1562.001",
                      "a signal sent to the sensor by another process (who and which); a "
                      "SIGHUP whose configuration reload was applied is not one (event 16)"),
    "sensor_ptrace": ("live", "T1055.008",
                      "the sensor is being traced (ptrace attach, or process_vm_* on it)"),
    "bpf_map_tamper": ("live", "T1562.001",
                       "another process opened or updated one of the sensor's BPF maps or "
                       "programs by id"),
    "bpf_detach": ("live", "T1562.001", "a sensor BPF program or link is no longer attached"),
    "audit_rules_changed": ("live", "T1562.012",
                            "the sensor's audit rules removed, audit disabled or the audit pid "
                            "taken by another process"),
    "config_modified": ("live", "T1562.001",
                        "the config file on disk changed, or differs from the running one, "
                        "without a reload"),
    "config_weakened": ("live", "T1562.006",
                        "an applied reload reduced collection: event types no longer logged, "
                        "new exclude rules, include rules removed, FieldSizes cutting a field, "
                        "heartbeats turned off; the actor is the SIGHUP's sender"),
    "preload_hook": ("live", "T1574.006",
                     "/etc/ld.so.preload created or changed, LD_PRELOAD or an unexpected "
                     "library in the sensor"),
    "output_blocked": ("live", "T1562.006",
                       "an output file or the syslog socket replaced, removed or failing"),
    "clock_changed": ("live", "T1070.006",
                      "the wall clock jumped against the monotonic clock"),
    "unclean_shutdown": ("live", "T1562.001",
                         "the previous run ended without event 4 Stopped (its last heartbeat "
                         "sequence given)"),
    "self_modified": ("live", "T1562.001",
                      "the sensor's installed files changed since install"),
    "state_lock_held": ("live", "T1562.001",
                        "the state directory's lock held at start by a process that is not a "
                        "live SysmonX sensor (named from /proc/locks)"),
    # recorded Windows logs (replay --tamper, follow)
    "sysmon_stopped": ("log", "T1562.001",
                       "Sysmon stopped (event 4) or its service stopped or disabled "
                       "(System 7036/7040)"),
    "sysmon_config_changed": ("log", "T1562.001",
                              "Sysmon's configuration changed mid-log (event 16)"),
    "sysmon_rules_registry": ("log", "T1562.001",
                              "a registry write to Sysmon's rules or service keys (event 12/13)"),
    "driver_unloaded": ("log", "T1562.001", "the Sysmon minifilter driver was unloaded"),
    "log_cleared": ("log", "T1070.001", "an event log was cleared (Security 1102, System 104)"),
    "record_gap": ("log", "T1070.001",
                   "EventRecordIDs missing within one channel of one computer"),
    "time_gap": ("log", "T1562.006",
                 "no events for much longer than the log's usual rate"),
    "sysmon_error": ("log", "T1562.001", "Sysmon reported an error (event 255)"),
    # Windows, read live (windows/tamper.py) besides sysmon_stopped, driver_unloaded,
    # sysmon_rules_registry and time_gap above
    "sysmon_channel_disabled": ("live", "T1562.002",
                                "Sysmon's Event Log channel was disabled (wevtutil sl /e:false)"),
}

_NAME = re.compile(r"^[a-z][a-z0-9_]{1,63}$")

_Host = tuple[str, str, str, str]
_hosts: dict[str, _Host] = {
    "linux": (LINUX_PROVIDER, LINUX_PROVIDER_GUID, LINUX_CHANNEL, "linux"),
    "windows": (WINDOWS_PROVIDER, WINDOWS_PROVIDER_GUID, WINDOWS_CHANNEL, "windows"),
}


def utc_time_field(when: Union[int, str]) -> str:
    """Sysmon's ``UtcTime`` text (``YYYY-MM-DD HH:MM:SS.mmm``) for ``when``.

    Args:
        when: nanoseconds since 1970 (UTC), or a time :func:`~sysmonx.event.normalize_time`
            accepts (the canonical ``...nnnnnnnnnZ`` form, a Sysmon ``UtcTime``, ISO 8601).
    Raises:
        TimeFormatError (a ``ValueError``): ``when`` is text in no known time format.
    """
    if isinstance(when, int):
        s, ns = divmod(when, 1_000_000_000)
        dt = datetime.fromtimestamp(s, timezone.utc)
        return f"{dt:%Y-%m-%d %H:%M:%S}.{ns // 1_000_000:03d}"
    t = normalize_time(when)
    return f"{t[:10]} {t[11:23]}"


def _canonical(when: Union[int, str]) -> str:
    if isinstance(when, int):
        s, ns = divmod(when, 1_000_000_000)
        dt = datetime.fromtimestamp(s, timezone.utc)
        return f"{dt:%Y-%m-%dT%H:%M:%S}.{ns:09d}Z"
    return normalize_time(when)


def tamper_finding(technique: str, details: str, *,
                   when: Union[int, str, None] = None,
                   source: str = "live",
                   process_guid: Optional[str] = None,
                   process_id: Optional[int] = None,
                   image: Optional[str] = None,
                   platform: Optional[str] = None,
                   computer: Optional[str] = None,
                   record_id: Optional[int] = None,
                   user_id: Optional[str] = None) -> Event:
    """Build one TamperFinding event (EventID 201).

    Args:
        technique: stable technique name (:data:`TECHNIQUES`; another name must be lower-case
            ``snake_case``, 2-64 characters, and be documented there before it ships).
        details: one line saying what was seen (line breaks become spaces).
        when: time of the finding: nanoseconds since 1970 UTC, or a time string (the event's
            ``TimeCreated`` for a finding read from a log); ``None`` = now.
        source: ``live``, or the log the finding was read from (path or channel).
        process_guid, process_id, image: the actor where known; ``None`` gives the documented
            unknown values (all-zero GUID, ``0``, ``-``).
        platform: ``linux`` (Sysmon for Linux's provider and channel) or ``windows`` (Windows
            Sysmon's); ``None`` = the platform SysmonX runs on.
        computer: System/Computer (default: this host's name).
        record_id: System/EventRecordID (``None``: the live ``record-numbers`` stage numbers it).
        user_id: System/Security UserID; ``None`` = the sensor's effective uid for a ``live``
            finding on Linux (as the sensor's other events), else none.
    Returns:
        the :class:`~sysmonx.event.Event`, System/Level 3 (Warning), Version and field order from
        the schema catalogue; System/Execution the current process and thread for a ``live``
        finding, none for one read from a log (the same log gives the same finding whichever
        process replays or follows it).
    Raises:
        ValueError: a technique name that is not ``snake_case``, an unknown ``platform``, or a
            ``when`` string in no known time format.
    Source: docs/ARCHITECTURE.md "SysmonX's own events ..., tamper findings and heartbeats";
    field list of the resilience issue (Build 1).
    """
    if not _NAME.match(technique):
        raise ValueError(f"tamper technique name {technique!r} is not lower-case snake_case "
                         "(see sysmonx.stages.tamperfinding.TECHNIQUES)")
    host = platform or ("windows" if sys.platform == "win32" else "linux")
    if host not in _hosts:
        raise ValueError(f"platform must be 'linux' or 'windows', not {platform!r}")
    provider, guid, channel, _ = _hosts[host]
    stamp = time.time_ns() if when is None else when
    ev = CURRENT.events[TAMPER_FINDING_EVENT_ID]
    data = {
        "RuleName": "-",
        "UtcTime": utc_time_field(stamp),
        "Technique": technique,
        "Details": " ".join(str(details).split()) or "-",
        "ProcessGuid": process_guid or ZERO_GUID,
        "ProcessId": str(process_id) if process_id else "0",
        "Image": image or "-",
        "Source": source or "-",
    }
    return Event(TAMPER_FINDING_EVENT_ID, data, provider=provider, provider_guid=guid,
                 version=ev.version, level=ev.level_value, task=TAMPER_FINDING_EVENT_ID,
                 opcode=0, keywords=SYSMON_KEYWORDS, time_created=_canonical(stamp),
                 record_id=record_id,
                 process_id=os.getpid() if source == "live" else None,
                 thread_id=threading.get_native_id() if source == "live" else None,
                 channel=channel,
                 computer=computer if computer is not None else socket.gethostname(),
                 user_id=user_id if user_id is not None else _live_uid(source))


def _live_uid(source: str) -> Optional[str]:
    return str(os.geteuid()) if source == "live" and hasattr(os, "geteuid") else None
