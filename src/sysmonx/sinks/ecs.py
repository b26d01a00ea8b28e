"""ECS JSON lines (``--format ecs``): one Elastic Common Schema document per event.

The mapping follows Elastic's own Sysmon pipelines, so dashboards and detection rules written for
Elastic's Sysmon data work on SysmonX output unchanged:

* elastic/beats ``x-pack/winlogbeat/module/sysmon/ingest/sysmon.yml`` (the winlogbeat Sysmon
  module) and elastic/integrations ``packages/windows/data_stream/sysmon_operational`` (the
  Windows integration's Sysmon data stream, which carries the same pipeline): ``event.code``,
  ``event.category``/``event.type``/``event.action`` per EventID, ``process.*``,
  ``process.parent.*``, ``source.*``/``destination.*``, ``network.*`` (``protocol`` from the
  port name, ``dns`` for 22), ``dns.*``, ``related.hosts``, ``file.*``,
  ``registry.*``, ``user.*``, ``rule.name``, ``error.*``; for a Sigma alert (event 1000)
  ``rule.name``/``rule.id``, ``tags`` and ``log.file.path`` (its ``SourceFile``);
* the ECS field reference (elastic/ecs ``generated/csv/fields.csv``) for every field's type:
  ``tests/test_ecs.py`` checks every emitted field name and value type against it.

Every document also keeps the event whole under ``winlog``, as winlogbeat does: ``winlog.event_data``
holds every EventData field under its Sysmon name with its string value (nothing is dropped, even
the values the ECS fields repeat), and ``winlog.channel``, ``provider_name``, ``provider_guid``,
``event_id``, ``record_id``, ``computer_name``, ``process.pid``/``thread.id``, ``user.identifier``,
``version``, ``task``, ``opcode`` hold the System header. (``winlog.*`` is Beats' namespace, not
ECS: it is the place Elastic's Sysmon dashboards read the original fields from.)

Where SysmonX differs from Elastic's pipeline, on purpose:

* **Linux.** Elastic applies its Windows command-line split and ``\\``-basename to Sysmon for
  Linux events too, so ``process.name`` is the whole path and ``process.args`` a Windows split
  of a Linux argv. Here an event is Linux when its provider is ``Linux-Sysmon`` or its image is
  an absolute POSIX path: ``process.name`` is the part after the last ``/``, and
  ``process.args`` is the argv: Sysmon for Linux writes ``CommandLine`` as the argv joined by
  single spaces, so splitting on single spaces gives the argv back exactly (empty arguments
  included) unless an argument itself contained a space, which the recorded form cannot tell.
  ``host.os.type`` is ``linux``.
* **Registry**: ``registry.value`` only for a value (13), ``registry.key`` without it; Elastic
  writes the last path element to ``registry.value`` for key events (12, 14) too.
* **Registry data** (13): DWORD/QWORD as decimal with ``registry.data.type``
  ``REG_DWORD``/``REG_QWORD`` (Elastic: ``SZ_DWORD``/``SZ_QWORD``, its QWORD high half shifted
  by 8 bits, not 32); other data without a type, which Sysmon's text does not tell.
* ``user.id`` is not set: the System ``UserID`` Elastic copies is Sysmon's service account.
* Event 20's ``Destination`` (the consumer's command line or script, not an executable) stays
  in ``winlog.event_data``; Elastic renames it to ``process.executable``.
* **Hashes** of files (events 6, 7, 15, 23, 26 to 29) go to ``file.hash.*``; Elastic puts those
  of events 23 to 26 under ``process.hash``. Only event 1's hashes describe the process image.
* Values Sysmon writes as "unknown" (``-``, empty, the all-zero GUID) are left out of the ECS
  fields (as Elastic's pipeline removes them) but stay in ``winlog.event_data``. A port or pid
  that is not a number, or an IP that is not an address, is left out of the ECS field (ECS types
  ``long`` and ``ip`` would reject the document) and stays in ``winlog.event_data``.
* SysmonX's own events (200 and up, 1000 SigmaAlert) carry ``event.kind`` ``alert`` for 1000
  (with ``rule.*`` from the alert) and ``event`` otherwise.

Line format: orjson, one object per line, C1 controls escaped as in :mod:`.jsonl`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any, Optional

import orjson

from ..core.registry import SINKS
from ..event import LINUX_PROVIDER, Event, normalize_time
from .base import Writer

__all__ = ["EcsWriter", "event_to_ecs", "ecs_line", "ECS_VERSION", "CATEGORIES",
           "windows_split_command_line"]

#: The ECS version the documents declare (``ecs.version``).
ECS_VERSION = "8.11.0"

#: EventID -> (event.category, event.type, event.action): Elastic's table (sysmon.yml, cited in
#: the module docstring); 24 has no category there (none of ECS's fits the clipboard).
CATEGORIES: dict[int, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    1: (("process",), ("start",), "Process creation"),
    2: (("file",), ("change",), "A process changed a file creation time"),
    3: (("network",), ("start", "connection", "protocol"), "Network connection"),
    4: (("process",), ("change",), "Sysmon service state changed"),
    5: (("process",), ("end",), "Process terminated"),
    6: (("driver",), ("start",), "Driver loaded"),
    7: (("process",), ("change",), "Image loaded"),
    8: (("process",), ("change",), "CreateRemoteThread"),
    9: (("process",), ("access",), "RawAccessRead"),
    10: (("process",), ("access",), "ProcessAccess"),
    11: (("file",), ("creation",), "FileCreate"),
    12: (("configuration", "registry"), ("change",), "RegistryEvent (Object create and delete)"),
    13: (("configuration", "registry"), ("change",), "RegistryEvent (Value Set)"),
    14: (("configuration", "registry"), ("change",), "RegistryEvent (Key and Value Rename)"),
    15: (("file",), ("access",), "FileCreateStreamHash"),
    16: (("configuration",), ("change",), "ServiceConfigurationChange"),
    17: (("file",), ("creation",), "PipeEvent (Pipe Created)"),
    18: (("file",), ("access",), "PipeEvent (Pipe Connected)"),
    19: (("process",), ("info",), "WmiEvent (WmiEventFilter activity detected)"),
    20: (("process",), ("change",), "WmiEvent (WmiEventConsumer activity detected)"),
    21: (("process",), ("access",), "WmiEvent (WmiEventConsumerToFilter activity detected)"),
    22: (("network",), ("connection", "protocol", "info"), "DNSEvent (DNS query)"),
    23: (("file",), ("deletion",), "FileDelete (File Delete archived)"),
    24: ((), ("change",), "ClipboardChange (New content in the clipboard)"),
    25: (("process",), ("change",), "ProcessTampering (Process image change)"),
    26: (("file",), ("deletion",), "FileDeleteDetected (File Delete logged)"),
    27: (("file",), ("creation",), "FileBlockExecutable"),
    28: (("file",), ("deletion",), "FileBlockShredding"),
    29: (("file",), ("creation",), "FileExecutableDetected"),
    100: (("process",), ("change",), "eBPF program loaded"),
    255: (("process",), ("error",), "Error"),
    1000: (("intrusion_detection",), ("indicator",), "Sigma rule matched"),
}

#: EventIDs whose ``event.outcome`` is ``failure`` in Elastic's table: 27 (a blocked executable
#: is a file creation that failed) and 255 (Sysmon's error report).
_FAILURES = frozenset({27, 255})
_UNKNOWN = frozenset({"", "-", "{00000000-0000-0000-0000-000000000000}"})
_FILE_HASH_EVENTS = frozenset({6, 7, 15, 23, 26, 27, 28, 29})
_HASH_KEYS = {"md5": "md5", "sha1": "sha1", "sha256": "sha256", "sha384": "sha384",
              "sha512": "sha512", "imphash": "imphash"}
_ZERO_HASH = re.compile(r"^0*$")
_C1 = re.compile(rb"\xc2[\x80-\x9f]")
#: Sysmon's rendering of DWORD and QWORD registry data (``DWORD (0x00000001)``,
#: ``QWORD (0xHIGH-0xLOW)``), the forms Elastic's pipeline parses.
_DWORD = re.compile(r"(?i)^DWORD \((0x[0-9a-f]{8})\)$")
_QWORD = re.compile(r"(?i)^QWORD \((0x[0-9a-f]{8})-(0x[0-9a-f]{8})\)$")
_HIVES = {"HKLM": "HKLM", "HKU": "HKU", "HKCR": "HKCR", "HKCU": "HKCU", "HKCC": "HKCC"}


def _c1(m: re.Match) -> bytes:
    return b"\\u%04x" % m.group()[1]


def _known(v: Optional[str]) -> bool:
    return v is not None and v not in _UNKNOWN


def _utc(t: str) -> Optional[str]:
    """The System time as canonical UTC (``...nnnnnnnnnZ``); ``None`` when it does not parse."""
    if len(t) == 30 and t[29] == "Z":
        return t
    try:
        return normalize_time(t)
    except ValueError:
        return None


def _int(v: Optional[str]) -> Optional[int]:
    if not _known(v):
        return None
    assert v is not None
    try:
        return int(v, 16) if v[:2] in ("0x", "0X") else int(v)
    except ValueError:
        return None


def _ip(v: Optional[str]) -> Optional[str]:
    if not _known(v):
        return None
    assert v is not None
    try:
        return str(ipaddress.ip_address(v.split("%", 1)[0]))
    except ValueError:
        return None


def _iso(utc_time: str) -> Optional[str]:
    """Sysmon's ``YYYY-MM-DD HH:MM:SS.mmm`` (or ISO) as ISO 8601 with ``Z``."""
    if len(utc_time) >= 19 and utc_time[4] == "-" and utc_time[10] in " T":
        t = utc_time[:10] + "T" + utc_time[11:]
        return t if t.endswith("Z") else t + "Z"
    return None


def windows_split_command_line(cmd: str) -> list[str]:
    """A Windows command line split as ``CommandLineToArgvW`` does (quotes, backslash runs
    before a quote, ``""`` inside quotes as one quote), the rule Elastic's pipeline implements.
    Returns the argument strings (empty list for an empty line)."""
    args: list[str] = []
    i, n = 0, len(cmd)
    while i < n:
        while i < n and cmd[i] in " \t":
            i += 1
        if i >= n:
            break
        b: list[str] = []
        inquote = False
        slashes = 0
        while i < n:
            c = cmd[i]
            if c in " \t" and not inquote:
                break
            if c == "\\":
                slashes += 1
                i += 1
                continue
            if c == '"':
                b.append("\\" * (slashes // 2))
                if slashes % 2 == 0:
                    if inquote and i + 1 < n and cmd[i + 1] == '"':
                        b.append('"')
                        i += 1
                    inquote = not inquote
                else:
                    b.append('"')
                slashes = 0
                i += 1
                continue
            b.append("\\" * slashes)
            slashes = 0
            b.append(c)
            i += 1
        b.append("\\" * slashes)
        args.append("".join(b))
    return args


def _is_linux(e: Event) -> bool:
    if e.provider == LINUX_PROVIDER:
        return True
    image = e.data.get("Image") or e.data.get("SourceImage") or ""
    return image.startswith("/")


def _basename(path: str, linux: bool) -> str:
    return path.rsplit("/" if linux else "\\", 1)[-1]


def _args(cmd: str, linux: bool) -> list[str]:
    return cmd.split(" ") if linux else windows_split_command_line(cmd)


def _put(doc: dict, dotted: str, value: Any) -> None:
    cur = doc
    *parts, last = dotted.split(".")
    for p in parts:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = cur[p] = {}
        cur = nxt
    cur[last] = value


def _process(doc: dict, prefix: str, guid: Optional[str], pid: Optional[str],
             image: Optional[str], cmd: Optional[str], linux: bool) -> None:
    if _known(guid):
        _put(doc, f"{prefix}.entity_id", guid)
    p = _int(pid)
    if p is not None:
        _put(doc, f"{prefix}.pid", p)
    if _known(image):
        assert image is not None
        _put(doc, f"{prefix}.executable", image)
        _put(doc, f"{prefix}.name", _basename(image, linux))
    if _known(cmd):
        assert cmd is not None
        _put(doc, f"{prefix}.command_line", cmd)
        args = _args(cmd, linux)
        _put(doc, f"{prefix}.args", args)
        _put(doc, f"{prefix}.args_count", len(args))


def _hashes(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split(","):
        k, sep, v = part.partition("=")
        key = _HASH_KEYS.get(k.strip().lower())
        v = v.strip().lower()
        if sep and key and v and not _ZERO_HASH.match(v):
            out[key] = v
    return out


def _file(doc: dict, path: str, linux: bool) -> None:
    _put(doc, "file.path", path)
    sep = "/" if linux else "\\"
    head, s, name = path.rpartition(sep)
    _put(doc, "file.name", name)
    if s and head:
        _put(doc, "file.directory", head)
    if "." in name.strip("."):
        ext = name.rsplit(".", 1)[1]
        if ext and len(ext) <= 16:
            _put(doc, "file.extension", ext.lower())


def _registry(doc: dict, target: str, event_id: int, details: Optional[str]) -> None:
    _put(doc, "registry.path", target)
    first, _, rest = target.partition("\\")
    hive = _HIVES.get(first.upper())
    if hive is None and first.upper() == "HKEY_LOCAL_MACHINE":
        hive = "HKLM"
    if hive is None and first.upper() == "HKEY_USERS":
        hive = "HKU"
    if hive is not None:
        _put(doc, "registry.hive", hive)
        key = rest
        if event_id == 13 and "\\" in rest:
            key, _, value = rest.rpartition("\\")
            _put(doc, "registry.value", value)
        if key:
            _put(doc, "registry.key", key)
    if event_id == 13 and _known(details):
        assert details is not None
        m = _DWORD.match(details)
        q = _QWORD.match(details)
        if m:
            _put(doc, "registry.data.strings", [str(int(m.group(1), 16))])
            _put(doc, "registry.data.type", "REG_DWORD")
        elif q:
            _put(doc, "registry.data.strings", [str(int(q.group(1), 16) << 32
                                                    | int(q.group(2), 16))])
            _put(doc, "registry.data.type", "REG_QWORD")
        else:  # REG_SZ, REG_EXPAND_SZ, or "Binary Data" (binary or multi-string): type unknown
            _put(doc, "registry.data.strings", [details])


def _dns_ips(results: str) -> list[str]:
    ips = []
    for part in results.split(";"):
        part = part.strip()
        if not part or part.startswith("type:"):
            continue
        ip = _ip(part[7:] if part.startswith("::ffff:") else part)
        if ip is not None:
            ips.append(ip)
    return ips


def _dns_names(results: str) -> list[str]:
    """The names in Sysmon's QueryResults answers (``type:  5 cname.example;``), in order."""
    names: list[str] = []
    for part in results.split(";"):
        words = part.split()
        if len(words) == 3 and words[0] == "type:" and words[2] not in names:
            names.append(words[2])
    return names


def event_to_ecs(e: Event) -> dict[str, Any]:
    """One event as an ECS document (nested dicts, JSON-ready).

    Shape: ``@timestamp`` (the event's ``UtcTime``, else its System time; ISO 8601 UTC),
    ``ecs.version``, ``event.*`` (``kind``, ``code`` as text, ``module`` ``sysmon``,
    ``provider``, ``category``/``type``/``action`` from :data:`CATEGORIES`, ``created`` the
    System time), ``host.name``, ``host.os.type``, the ECS field sets the event has (module
    docstring), and ``winlog`` with every original field. Never raises for a well-formed
    :class:`~sysmonx.event.Event`; values of unexpected shape stay only in ``winlog``.
    """
    d = e.data
    eid = e.event_id
    linux = _is_linux(e)
    created = _utc(e.time_created) if e.time_created else None
    ts = _iso(d.get("UtcTime", "")) or created
    doc: dict[str, Any] = {}
    if ts:
        doc["@timestamp"] = ts
    doc["ecs"] = {"version": ECS_VERSION}
    event: dict[str, Any] = {"kind": "alert" if eid == 1000 else "event", "code": str(eid),
                             "module": "sysmon", "provider": e.provider}
    cat = CATEGORIES.get(eid)
    if cat is not None:
        if cat[0]:
            event["category"] = list(cat[0])
        event["type"] = list(cat[1])
        event["action"] = cat[2]
        if eid in _FAILURES:
            event["outcome"] = "failure"
    if created:
        event["created"] = created
    doc["event"] = event
    host: dict[str, Any] = {"os": {"type": "linux" if linux else "windows"}}
    if e.computer:
        host["name"] = e.computer
        host["hostname"] = e.computer.split(".", 1)[0]
    doc["host"] = host
    if e.level is not None:
        doc["log"] = {"level": {1: "critical", 2: "error", 3: "warning", 4: "information",
                                5: "verbose"}.get(e.level, str(e.level))}
    if _known(d.get("RuleName")) and eid != 1000:
        _put(doc, "rule.name", d["RuleName"])

    # the process the event is about (the source process of 8 and 10)
    if eid in (8, 10):
        _process(doc, "process", d.get("SourceProcessGuid") or d.get("SourceProcessGUID"),
                 d.get("SourceProcessId"), d.get("SourceImage"), None, linux)
        tid = _int(d.get("SourceThreadId"))
        if tid is not None:
            _put(doc, "process.thread.id", tid)
    else:
        _process(doc, "process", d.get("ProcessGuid"), d.get("ProcessId"),
                 d.get("Image"), d.get("CommandLine"), linux)
    if _known(d.get("CurrentDirectory")):
        _put(doc, "process.working_directory", d["CurrentDirectory"])
    if eid == 1:
        _process(doc, "process.parent", d.get("ParentProcessGuid"), d.get("ParentProcessId"),
                 d.get("ParentImage"), d.get("ParentCommandLine"), linux)
        if not linux:
            for src, dst in (("OriginalFileName", "original_file_name"), ("Company", "company"),
                             ("Description", "description"), ("FileVersion", "file_version"),
                             ("Product", "product")):
                if _known(d.get(src)):
                    _put(doc, f"process.pe.{dst}", d[src])
    hashes = _hashes(d.get("Hashes") or d.get("Hash") or "")
    if hashes:
        where = "process" if eid == 1 else "file" if eid in _FILE_HASH_EVENTS else None
        if where is not None:
            imphash = hashes.pop("imphash", None)
            if hashes:
                _put(doc, f"{where}.hash", hashes)
            if imphash:
                _put(doc, f"{where}.pe.imphash", imphash)
            _put(doc, "related.hash", sorted(set(hashes.values())
                                             | ({imphash} if imphash else set())))

    user = d.get("User")
    if _known(user):
        assert user is not None
        if not linux and "\\" in user:
            dom, _, name = user.partition("\\")
            _put(doc, "user.domain", dom)
            _put(doc, "user.name", name)
        else:
            _put(doc, "user.name", user)
        _put(doc, "related.user", [doc["user"]["name"]])

    # files, images, pipes
    if eid in (2, 11, 15, 23, 26, 27, 28, 29) and _known(d.get("TargetFilename")):
        _file(doc, d["TargetFilename"], linux)
    if eid in (6, 7) and _known(d.get("ImageLoaded")):
        _file(doc, d["ImageLoaded"], linux)
        signed = d.get("Signed")
        if signed in ("true", "false"):
            _put(doc, "file.code_signature.exists", signed == "true")
        if _known(d.get("Signature")):
            _put(doc, "file.code_signature.subject_name", d["Signature"])
        if _known(d.get("SignatureStatus")):
            _put(doc, "file.code_signature.status", d["SignatureStatus"])
            if d["SignatureStatus"] == "Valid":  # Elastic sets it only then (never false)
                _put(doc, "file.code_signature.valid", True)
        if eid == 7:  # the loaded image's version resource (Elastic: file.pe.* for 7 only)
            for src, dst in (("OriginalFileName", "original_file_name"), ("Company", "company"),
                             ("Description", "description"), ("FileVersion", "file_version"),
                             ("Product", "product")):
                if _known(d.get(src)):
                    _put(doc, f"file.pe.{dst}", d[src])
    if eid == 9 and _known(d.get("Device")):  # the volume read raw, e.g. \Device\HarddiskVolume2
        _file(doc, d["Device"], linux)
    if eid == 25 and _known(d.get("Type")):  # "Image is replaced", "Image is locked for access"
        doc["message"] = d["Type"]
    if eid in (17, 18) and _known(d.get("PipeName")):
        _put(doc, "file.name", d["PipeName"])

    # registry
    if eid in (12, 13, 14) and _known(d.get("TargetObject")):
        _registry(doc, d["TargetObject"], eid, d.get("Details"))

    # network
    if eid == 3:
        ips = []
        for side in ("source", "destination"):
            cap = side.capitalize()
            ip = _ip(d.get(f"{cap}Ip"))
            if ip is not None:
                _put(doc, f"{side}.ip", ip)
                ips.append(ip)
            port = _int(d.get(f"{cap}Port"))
            if port is not None:
                _put(doc, f"{side}.port", port)
            if _known(d.get(f"{cap}Hostname")):
                _put(doc, f"{side}.domain", d[f"{cap}Hostname"])
        proto = d.get("Protocol")
        if _known(proto):
            assert proto is not None
            _put(doc, "network.transport", proto.lower())
        # the application protocol: the destination port's service name, else the source's
        for name in (d.get("DestinationPortName"), d.get("SourcePortName")):
            if _known(name):
                assert name is not None
                _put(doc, "network.protocol", name.lower())
                break
        v6 = d.get("SourceIsIpv6")
        if v6 in ("true", "false"):
            _put(doc, "network.type", "ipv6" if v6 == "true" else "ipv4")
        init = d.get("Initiated")
        if init in ("true", "false"):
            _put(doc, "network.direction", "egress" if init == "true" else "ingress")
        if ips:
            _put(doc, "related.ip", ips)
    if eid == 22:
        _put(doc, "network.protocol", "dns")
        hosts = _dns_names(d.get("QueryResults") or "")
        if _known(d.get("QueryName")):
            _put(doc, "dns.question.name", d["QueryName"])
            if d["QueryName"] not in hosts:
                hosts.append(d["QueryName"])
        if hosts:
            _put(doc, "related.hosts", hosts)
        resolved = _dns_ips(d.get("QueryResults") or "")
        if resolved:
            _put(doc, "dns.resolved_ip", resolved)
            _put(doc, "related.ip", resolved)
    if eid == 255:
        if _known(d.get("ID")):
            _put(doc, "error.code", d["ID"])
        if _known(d.get("Description")):
            _put(doc, "error.message", d["Description"])
    if eid == 1000:
        for src, dst in (("RuleTitle", "rule.name"), ("RuleId", "rule.id")):
            if _known(d.get(src)):
                _put(doc, dst, d[src])
        if _known(d.get("Tags")):
            _put(doc, "tags", d["Tags"].split(","))
        if _known(d.get("SourceFile")):  # the recorded file of the matched event
            _put(doc, "log.file.path", d["SourceFile"])

    system: dict[str, Any] = {
        "channel": e.channel, "provider_name": e.provider, "provider_guid": e.provider_guid,
        "event_id": str(eid), "computer_name": e.computer,
        "record_id": None if e.record_id is None else str(e.record_id),
        "version": e.version, "task": None if e.task is None else str(e.task),
        "opcode": None if e.opcode is None else str(e.opcode)}
    winlog = {k: v for k, v in system.items() if v is not None and v != ""}
    if e.process_id is not None:
        winlog["process"] = {"pid": e.process_id}
        if e.thread_id is not None:
            winlog["process"]["thread"] = {"id": e.thread_id}
    if e.user_id:
        winlog["user"] = {"identifier": e.user_id}
    winlog["event_data"] = dict(d)
    doc["winlog"] = winlog
    return doc


def ecs_line(e: Event) -> bytes:
    """One event as an ECS JSON line (bytes, UTF-8, without the line break)."""
    doc = event_to_ecs(e)
    try:
        out = orjson.dumps(doc)
        return _C1.sub(_c1, out) if b"\xc2" in out else out
    except TypeError:  # lone surrogates: orjson refuses them, json escapes them
        return json.dumps(doc, ensure_ascii=True, separators=(",", ":")).encode()


@SINKS.register
class EcsWriter(Writer):
    """Writes events as ECS JSON lines (the mapping above).

    Args:
        stream: binary output stream.
        close_stream: see :class:`~sysmonx.sinks.base.Writer`.
    """

    name = "ecs"
    summary = "Elastic Common Schema JSON lines (Elastic's Sysmon mapping; right for Linux)"

    def write(self, event: Event) -> None:
        """Write one event line."""
        self.stream.write(ecs_line(event) + b"\n")
