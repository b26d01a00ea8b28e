"""The Sysmon event catalogue as data: every event 1-29 and 255, its fields and their history.

This module is the single source of truth for event IDs, names, tags, versions, levels, ordered
fields and field types. The config parser, the validator, the filter compiler, the readers, the
writers and ``sysmonx -s`` all read it (through :mod:`sysmonx.schema`).

Sources: spec/sysmon-semantics.md sections 1.3, 1.7, 3.7 and 4.3; the SysmonCommon manifest
(schemas 4.0-4.81) and the Windows ``sysmon -s`` dumps (4.30-4.82) under
shared/corpus/schemas, against which ``tests/test_schema.py`` checks this table.

Each field and event carries ``since``: the first 4.x schema version that has it (``None`` means
"present in every 4.x schema"). Field order is the order of the newest schema; older schemas are
the same order with later fields removed (Sysmon never reordered fields within 4.x).

:data:`EVENTS` and :data:`OPTIONS` are in manifest order. Where a manifest moved an event or an
option (the 0xF002 private event; the configuration options, reordered in 4.23), or changed one
of its attributes (ServiceArchiveDirectory is ``target="all"`` in 4.1 only), the entry appears
once per variant with disjoint ``since``/``until`` ranges, so a schema snapshot keeps exactly the
manifest's order and attributes. Code that wants "the" definition of an id or option name should
go through :func:`sysmonx.schema.get_schema` (or take the last entry, which is the newest).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

# Manifest in/out types (win: event-manifest type names, as Sysmon's manifest spells them).
STRING = "win:UnicodeString"
GUID = "win:GUID"
UINT32 = "win:UInt32"
UINT16 = "win:UInt16"
BOOLEAN = "win:Boolean"
HEXINT32 = "win:HexInt32"
HEXINT64 = "win:HexInt64"

Version = tuple[int, int]


def parse_version(text: str) -> Version:
    """Parse a Sysmon schema version string the way Sysmon does.

    Sysmon parses the string as a float and re-prints it with two decimals, so ``4.1`` is
    ``4.10`` and ``4.2`` is ``4.20`` (spec/sysmon-semantics.md section 1.6).

    Args:
        text: e.g. ``"4.90"``, ``"4.1"``.
    Returns:
        ``(major, minor)`` with minor in hundredths, e.g. ``(4, 90)``, ``(4, 10)``.
    Raises:
        ValueError: not a plain decimal number, or a leading zero major (``04.50``), which
            Sysmon rejects as "Invalid schema version number".
    """
    t = text.strip()
    if not t or t.startswith("0") and len(t) > 1 and t[1] != ".":
        raise ValueError(f"Invalid schema version number ({text})")
    head, _, tail = t.partition(".")
    if not (head.isascii() and head.isdigit()) or (tail and not (tail.isascii() and tail.isdigit())):
        raise ValueError(f"Invalid schema version number ({text})")
    value = round(float(t) * 100)
    return value // 100, value % 100


def format_version(v: Version) -> str:
    """Render ``(4, 10)`` as ``"4.10"`` (Sysmon's ``%.2f`` rendering)."""
    return f"{v[0]}.{v[1]:02d}"


@dataclass(frozen=True, slots=True)
class FieldDef:
    """One data field of an event: ``name`` (Sysmon's exact spelling), manifest ``in_type`` and
    ``out_type`` (``None`` where the manifest gives none) and ``since`` (first 4.x schema)."""

    name: str
    in_type: str = STRING
    out_type: Optional[str] = "xs:string"
    since: Optional[Version] = None


def _s(name: str, since: Optional[Version] = None) -> FieldDef:
    return FieldDef(name, STRING, "xs:string", since)


def _guid(name: str) -> FieldDef:
    return FieldDef(name, GUID, None)


def _pid(name: str) -> FieldDef:
    return FieldDef(name, UINT32, "win:PID")


def _t(name: str, in_type: str, since: Optional[Version] = None) -> FieldDef:
    return FieldDef(name, in_type, None, since)


_RN = _s("RuleName", (4, 10))
_USER = _s("User", (4, 80))


@dataclass(frozen=True, slots=True)
class EventDef:
    """One Sysmon event type.

    Attributes:
        event_id: Sysmon EventID (1-29, 255; or the private 0xf001/0xf002 of old schemas).
        symbol: manifest name, e.g. ``SYSMONEVENT_CREATE_PROCESS`` (used by ``-t`` output).
        template: Task display name, e.g. ``Process Create``.
        tag: config event tag (manifest ``rulename``), ``None`` for unfilterable 4/16/255.
        version: event version written in ``System/Version``.
        level: ``Informational`` or ``Error`` (System/Level 4 or 2).
        default: decision when a config has no rule set for the tag (spec 3.7).
        default_attr: whether the manifest spells ``ruledefault`` explicitly (for ``-s``).
        fields: ordered data fields of the newest schema.
        since / until: first schema with the event, first schema without it (``None`` = open).
        history: ``((version, {"template": ..., "version": ...}), ...)`` values that applied
            *before* the given schema version.
        extension: ``True`` for an event no Sysmon manifest defines (SysmonX's own events, and
            Sysmon for Linux's event 100, which no SysmonCommon manifest lists): present in every
            schema version (a config of any version may filter it; its tag is refused when
            extensions are off), left out of the byte-exact manifest rendering and of the
            manifest comparisons. The one mechanism for every such event: add an entry in a
            block of its own at the end of :data:`EVENTS`.
        sigma_category: the Sigma ``logsource: category`` that selects this event (extension
            events only; Sysmon's own events are mapped by the Sigma taxonomy in
            :mod:`sysmonx.detection.logsource`), ``None`` for none.
        description: what the event means and where its values come from (extension events;
            Sysmon's own are described by Sysmon's documentation).
    """

    event_id: int
    symbol: str
    template: str
    tag: Optional[str]
    version: int
    fields: tuple[FieldDef, ...]
    level: str = "Informational"
    default: str = "exclude"
    default_attr: bool = False
    since: Optional[Version] = None
    until: Optional[Version] = None
    history: tuple = field(default=())
    extension: bool = False
    sigma_category: Optional[str] = None
    description: str = ""

    @property
    def level_value(self) -> int:
        """System/Level number: 4 for Informational, 3 for Warning, 2 for Error."""
        return LEVEL_VALUES.get(self.level, 4)

    @property
    def filterable(self) -> bool:
        """False for 4, 16 and 255, which Sysmon never filters (spec 3.7)."""
        return self.tag is not None


#: Manifest level name -> System/Level number.
LEVEL_VALUES = {"Error": 2, "Warning": 3, "Informational": 4}


def _ev(event_id, symbol, template, tag, version, fields, **kw) -> EventDef:
    return EventDef(event_id, symbol, template, tag, version, tuple(fields), **kw)


_PROC = [_guid("ProcessGuid"), _pid("ProcessId")]
_CLIP_PRIVATE = [_RN, _s("UtcTime"), *_PROC, _s("Image"), _t("Session", UINT32), _s("ClientInfo"),
                 _s("Hashes"), _s("Path"), _s("Archived")]

EVENTS: tuple[EventDef, ...] = (
    _ev(255, "SYSMONEVENT_ERROR", "Error report", None, 3,
        [_s("UtcTime"), _s("ID"), _s("Description")], level="Error", default="include"),
    _ev(1, "SYSMONEVENT_CREATE_PROCESS", "Process Create", "ProcessCreate", 5, [
        _RN, _s("UtcTime"), *_PROC, _s("Image"), _s("FileVersion"), _s("Description"), _s("Product"),
        _s("Company"), _s("OriginalFileName", (4, 21)), _s("CommandLine"), _s("CurrentDirectory"),
        _s("User"), _guid("LogonGuid"), _t("LogonId", HEXINT64), _t("TerminalSessionId", UINT32),
        _s("IntegrityLevel"), _s("Hashes"), _guid("ParentProcessGuid"), _pid("ParentProcessId"),
        _s("ParentImage"), _s("ParentCommandLine"), _s("ParentUser", (4, 80))],
        default="include", default_attr=True),
    _ev(2, "SYSMONEVENT_FILE_TIME", "File creation time changed", "FileCreateTime", 5, [
        _RN, _s("UtcTime"), *_PROC, _s("Image"), _s("TargetFilename"), _s("CreationUtcTime"),
        _s("PreviousCreationUtcTime"), _USER], history=(((4, 32), {"version": 4}),)),
    _ev(3, "SYSMONEVENT_NETWORK_CONNECT", "Network connection detected", "NetworkConnect", 5, [
        _RN, _s("UtcTime"), *_PROC, _s("Image"), _s("User"), _s("Protocol"), _t("Initiated", BOOLEAN),
        _t("SourceIsIpv6", BOOLEAN), _s("SourceIp"), _s("SourceHostname"), _t("SourcePort", UINT16),
        _s("SourcePortName"), _t("DestinationIsIpv6", BOOLEAN), _s("DestinationIp"),
        _s("DestinationHostname"), _t("DestinationPort", UINT16), _s("DestinationPortName")]),
    _ev(4, "SYSMONEVENT_SERVICE_STATE_CHANGE", "Sysmon service state changed", None, 3,
        [_s("UtcTime"), _s("State"), _s("Version"), _s("SchemaVersion")], default="include"),
    _ev(5, "SYSMONEVENT_PROCESS_TERMINATE", "Process terminated", "ProcessTerminate", 3, [
        _RN, _s("UtcTime"), *_PROC, _s("Image"), _USER], default="include", default_attr=True),
    _ev(6, "SYSMONEVENT_DRIVER_LOAD", "Driver loaded", "DriverLoad", 4, [
        _RN, _s("UtcTime"), _s("ImageLoaded"), _s("Hashes"), _s("Signed"), _s("Signature"),
        _s("SignatureStatus")], history=(((4, 32), {"version": 3}),)),
    _ev(7, "SYSMONEVENT_IMAGE_LOAD", "Image loaded", "ImageLoad", 3, [
        _RN, _s("UtcTime"), *_PROC, _s("Image"), _s("ImageLoaded"), _s("FileVersion"),
        _s("Description"), _s("Product"), _s("Company"), _s("OriginalFileName", (4, 21)),
        _s("Hashes"), _s("Signed"), _s("Signature"), _s("SignatureStatus"), _USER]),
    _ev(8, "SYSMONEVENT_CREATE_REMOTE_THREAD", "CreateRemoteThread detected", "CreateRemoteThread", 2, [
        _RN, _s("UtcTime"), _guid("SourceProcessGuid"), _pid("SourceProcessId"), _s("SourceImage"),
        _guid("TargetProcessGuid"), _pid("TargetProcessId"), _s("TargetImage"),
        _t("NewThreadId", UINT32), _s("StartAddress"), _s("StartModule"), _s("StartFunction"),
        _s("SourceUser", (4, 80)), _s("TargetUser", (4, 80))]),
    _ev(9, "SYSMONEVENT_RAWACCESS_READ", "RawAccessRead detected", "RawAccessRead", 2, [
        _RN, _s("UtcTime"), *_PROC, _s("Image"), _s("Device"), _USER]),
    _ev(10, "SYSMONEVENT_ACCESS_PROCESS", "Process accessed", "ProcessAccess", 3, [
        _RN, _s("UtcTime"), _guid("SourceProcessGUID"), _pid("SourceProcessId"),
        _t("SourceThreadId", UINT32), _s("SourceImage"), _guid("TargetProcessGUID"),
        _pid("TargetProcessId"), _s("TargetImage"), _t("GrantedAccess", HEXINT32), _s("CallTrace"),
        _s("SourceUser", (4, 80)), _s("TargetUser", (4, 80))]),
    _ev(11, "SYSMONEVENT_FILE_CREATE", "File created", "FileCreate", 2, [
        _RN, _s("UtcTime"), *_PROC, _s("Image"), _s("TargetFilename"), _s("CreationUtcTime"), _USER],
        default_attr=True),
    _ev(12, "SYSMONEVENT_REG_KEY", "Registry object added or deleted", "RegistryEvent", 2, [
        _RN, _s("EventType"), _s("UtcTime"), *_PROC, _s("Image"), _s("TargetObject"), _USER],
        default_attr=True),
    _ev(13, "SYSMONEVENT_REG_SETVALUE", "Registry value set", "RegistryEvent", 2, [
        _RN, _s("EventType"), _s("UtcTime"), *_PROC, _s("Image"), _s("TargetObject"), _s("Details"),
        _USER], default_attr=True),
    _ev(14, "SYSMONEVENT_REG_NAME", "Registry object renamed", "RegistryEvent", 2, [
        _RN, _s("EventType"), _s("UtcTime"), *_PROC, _s("Image"), _s("TargetObject"), _s("NewName"),
        _USER], default_attr=True),
    _ev(15, "SYSMONEVENT_FILE_CREATE_STREAM_HASH", "File stream created", "FileCreateStreamHash", 2, [
        _RN, _s("UtcTime"), *_PROC, _s("Image"), _s("TargetFilename"), _s("CreationUtcTime"),
        _s("Hash"), _s("Contents", (4, 31)), _USER], default_attr=True),
    _ev(16, "SYSMONEVENT_SERVICE_CONFIGURATION_CHANGE", "Sysmon config state changed", None, 3,
        [_s("UtcTime"), _s("Configuration"), _s("ConfigurationFileHash")], default="include"),
    _ev(17, "SYSMONEVENT_CREATE_NAMEDPIPE", "Pipe Created", "PipeEvent", 1, [
        _RN, _s("EventType", (4, 21)), _s("UtcTime"), *_PROC, _s("PipeName"), _s("Image"), _USER],
        default_attr=True),
    _ev(18, "SYSMONEVENT_CONNECT_NAMEDPIPE", "Pipe Connected", "PipeEvent", 1, [
        _RN, _s("EventType", (4, 21)), _s("UtcTime"), *_PROC, _s("PipeName"), _s("Image"), _USER],
        default_attr=True),
    _ev(19, "SYSMONEVENT_WMI_FILTER", "WmiEventFilter activity detected", "WmiEvent", 3, [
        _RN, _s("EventType"), _s("UtcTime"), _s("Operation"), _s("User"), _s("EventNamespace"),
        _s("Name"), _s("Query")], default_attr=True),
    _ev(20, "SYSMONEVENT_WMI_CONSUMER", "WmiEventConsumer activity detected", "WmiEvent", 3, [
        _RN, _s("EventType"), _s("UtcTime"), _s("Operation"), _s("User"), _s("Name"), _s("Type"),
        _s("Destination")], default_attr=True),
    _ev(21, "SYSMONEVENT_WMI_BINDING", "WmiEventConsumerToFilter activity detected", "WmiEvent", 3, [
        _RN, _s("EventType"), _s("UtcTime"), _s("Operation"), _s("User"), _s("Consumer"),
        _s("Filter")], default_attr=True),
    # Private IDs of the pre-4.30/4.40 manifests (their tags were accepted by those DTDs). The
    # 4.0-4.23 manifests list them after 21 and before 22; 4.30-4.32 list 0xF002 after 23, so
    # 0xF002 has one entry per position (disjoint since/until).
    _ev(0xF001, "SYSMONEVENT_FILE_DELETE", "File Delete", "FileDelete", 5, [
        _RN, _s("UtcTime"), *_PROC, _s("Image"), _s("TargetFilename"), _s("Hashes"), _s("Archived")],
        until=(4, 30)),
    _ev(0xF002, "SYSMONEVENT_CLIPBOARD", "Clipboard changed", "ClipboardChange", 5, _CLIP_PRIVATE,
        until=(4, 30)),
    _ev(22, "SYSMONEVENT_DNS_QUERY", "Dns query", "DnsQuery", 5, [
        _RN, _s("UtcTime"), *_PROC, _s("QueryName"), _s("QueryStatus"), _s("QueryResults"),
        _s("Image"), _USER], default_attr=True, since=(4, 21)),
    _ev(23, "SYSMONEVENT_FILE_DELETE", "File Delete archived", "FileDelete", 5, [
        _RN, _s("UtcTime"), *_PROC, _s("User"), _s("Image"), _s("TargetFilename"), _s("Hashes"),
        _t("IsExecutable", BOOLEAN), _s("Archived")], since=(4, 30),
        history=(((4, 60), {"template": "File Delete"}),)),
    _ev(24, "SYSMONEVENT_CLIPBOARD", "Clipboard changed", "ClipboardChange", 5, [
        _RN, _s("UtcTime"), *_PROC, _s("Image"), _t("Session", UINT32), _s("ClientInfo"),
        _s("Hashes"), _s("Archived"), _USER], since=(4, 40)),
    _ev(25, "SYSMONEVENT_PROCESS_IMAGE_TAMPERING", "Process Tampering", "ProcessTampering", 5, [
        _RN, _s("UtcTime"), *_PROC, _s("Image"), _s("Type"), _USER], since=(4, 50)),
    _ev(26, "SYSMONEVENT_FILE_DELETE_DETECTED", "File Delete logged", "FileDeleteDetected", 5, [
        _RN, _s("UtcTime"), *_PROC, _s("User"), _s("Image"), _s("TargetFilename"), _s("Hashes"),
        _t("IsExecutable", BOOLEAN)], since=(4, 60)),
    _ev(27, "SYSMONEVENT_FILE_BLOCK_EXE", "File Block Executable", "FileBlockExecutable", 5, [
        _RN, _s("UtcTime"), *_PROC, _s("User"), _s("Image"), _s("TargetFilename"), _s("Hashes")],
        since=(4, 82)),
    _ev(28, "SYSMONEVENT_FILE_BLOCK_SHREDDING", "File Block Shredding", "FileBlockShredding", 5, [
        _RN, _s("UtcTime"), *_PROC, _s("User"), _s("Image"), _s("TargetFilename"), _s("Hashes"),
        _t("IsExecutable", BOOLEAN)], since=(4, 83)),
    _ev(29, "SYSMONEVENT_FILE_EXE_DETECTED", "File Executable Detected", "FileExecutableDetected", 5, [
        _RN, _s("UtcTime"), *_PROC, _s("User"), _s("Image"), _s("TargetFilename"), _s("Hashes")],
        since=(4, 90)),
    # 0xF002 as the 4.30-4.32 manifests list it: after 23 (see the 4.0-4.23 entries above 22).
    _ev(0xF002, "SYSMONEVENT_CLIPBOARD", "Clipboard changed", "ClipboardChange", 5, _CLIP_PRIVATE,
        since=(4, 30), until=(4, 40)),

    # --- Resilience (SysmonX extension events; docs/ARCHITECTURE.md "SysmonX's own events") --
    # 100: Sysmon for Linux's eBPF program event (its ID and field names); 201, 202: SysmonX.
    _ev(100, "SYSMONEVENT_BPF_EVENT", "eBPF Program Loaded", "BpfEvent", 1, [
        _RN, _s("UtcTime"), *_PROC, _s("Image"), _s("User"), _s("BpfCommand"),
        _s("BpfProgramType"), _t("BpfProgramId", UINT32), _s("BpfProgramName")],
        default="include", extension=True, sigma_category="bpf_event"),
    _ev(201, "SYSMONXEVENT_TAMPER_FINDING", "Tamper finding", "TamperFinding", 1, [
        _RN, _s("UtcTime"), _s("Technique"), _s("Details"), *_PROC, _s("Image"), _s("Source")],
        level="Warning", default="include", extension=True, sigma_category="sysmonx_tamper",
        description="An attempt to blind, stop, reconfigure or fool the sensor. Technique: a "
                    "stable name (sysmonx.stages.tamperfinding.TECHNIQUES): live Linux "
                    "sensor_signal, sensor_ptrace, bpf_map_tamper, bpf_detach, "
                    "audit_rules_changed, config_modified, config_weakened (an applied reload "
                    "that reduced collection; after its event 16; never filtered), "
                    "preload_hook, "
                    "output_blocked, clock_changed, unclean_shutdown, self_modified, "
                    "state_lock_held, "
                    "sysmon_channel_disabled (Windows); from recorded logs sysmon_stopped, "
                    "sysmon_config_changed, sysmon_rules_registry, driver_unloaded, "
                    "log_cleared, record_gap, time_gap, sysmon_error. Details: what was seen, "
                    "one line. ProcessGuid/ProcessId/Image: the actor where known, else the "
                    "all-zero GUID, 0 and -. Source: live, or the log the finding was read "
                    "from."),
    _ev(202, "SYSMONXEVENT_HEARTBEAT", "Heartbeat", "Heartbeat", 1, [
        _RN, _s("UtcTime"), _t("Sequence", UINT32), _t("SecondsSincePrevious", UINT32),
        _t("EventsWritten", UINT32),
        _t("EventsLost", UINT32), _s("Backend"), _s("ConfigurationFileHash")],
        default="include", extension=True, sigma_category="sysmonx_heartbeat"),
    # --- end Resilience ------------------------------------------------------------------------
    # --- Windows (SysmonX extension events; docs/WINDOWS.md "PowerShell script blocks") -------
    # 220: one PowerShell script block reassembled from its 4104 parts (powershell.py).
    _ev(220, "SYSMONXEVENT_POWERSHELL_SCRIPT_BLOCK", "PowerShell script block",
        "PowerShellScriptBlock", 1, [
            _RN, _s("UtcTime"), _s("ScriptBlockId"), _s("Path"), _pid("ProcessId"),
            _s("UserSid"), _t("MessageTotal", UINT32), _t("Suspicious", BOOLEAN),
            _s("FirstRecordID"), _s("LastRecordID"), _s("ScriptBlockText")],
        default="include", extension=True, sigma_category="sysmonx_ps_script_block"),
    # --- end Windows ---------------------------------------------------------------------------
    # --- Scanners (SysmonX extension events; docs/ARCHITECTURE.md "Scanners") -----------------
    # 200: a scanner's finding on the process of an event a config rule asked to scan
    # (scanners="..."), or on a process `sysmonx scan` inspected: the scanned process, the
    # scanner, the finding name (memfd_exec ... yara:RULE), what was seen (Details) and the
    # EventID that triggered the scan (0 on demand).
    _ev(200, "SYSMONXEVENT_SCANNER_FINDING", "Scanner finding", "ScannerFinding", 1, [
        _RN, _s("UtcTime"), *_PROC, _s("Image"), _s("Scanner"), _s("Finding"), _s("Details"),
        _t("TriggerEventId", UINT32)],
        default="include", extension=True, sigma_category="scanner_finding"),
    # --- end Scanners --------------------------------------------------------------------------
    # --- Linux visibility (SysmonX extension events; docs/ARCHITECTURE.md "SysmonX's own events",
    # "What each tier can know") -----------------------------------------------------------------
    # 210-213: made by the ebpf backend's visibility object, the shell backend (210) and tier B
    # (212). Fields follow Sysmon's conventions: RuleName and UtcTime first, then the acting
    # process (ProcessGuid, ProcessId, Image), User after Image.
    _ev(210, "SYSMONXEVENT_SHELL_COMMAND", "Shell command", "ShellCommand", 1, [
        _RN, _s("UtcTime"), *_PROC, _s("Image"), _s("User"), _s("Tty"), _s("Command")],
        default="include", default_attr=True, extension=True, sigma_category="shell_command",
        description="A command line an interactive shell read from its terminal (bash's "
                    "readline, through a uretprobe), the Linux counterpart of PowerShell "
                    "script-block logging. Tty: the terminal (/dev/pts/N), - when unknown."),
    _ev(211, "SYSMONXEVENT_PRIVILEGE_CHANGE", "Privilege change", "PrivilegeChange", 1, [
        _RN, _s("UtcTime"), *_PROC, _s("Image"), _s("User"), _s("Syscall"), _s("ChangeType"),
        _s("PreviousValue"), _s("NewValue")],
        default="include", default_attr=True, extension=True, sigma_category="privilege_change",
        description="A successful setuid-family, setgid-family or capset call that gained "
                    "privilege: ChangeType User (real/effective/saved uid, PreviousValue and "
                    "NewValue as ruid/euid/suid), Group (the same for gids) or Capabilities "
                    "(effective/permitted/inheritable masks in hex). Drops are not reported."),
    _ev(212, "SYSMONXEVENT_MEMFD_CREATE", "Memory file created", "MemfdCreate", 1, [
        _RN, _s("UtcTime"), *_PROC, _s("Image"), _s("User"), _s("Name"), _s("Flags")],
        extension=True, sigma_category="memfd_create",
        description="memfd_create: an anonymous memory-backed file (the usual first step of "
                    "fileless execution). Name as given to memfd_create; Flags the MFD_* names. "
                    "Off by default; rate-limited per process."),
    _ev(213, "SYSMONXEVENT_EXEC_MEMORY", "Executable memory", "ExecMemory", 1, [
        _RN, _s("UtcTime"), *_PROC, _s("Image"), _s("User"), _s("Syscall"), _s("Address"),
        _s("Length"), _s("Protection"), _s("PreviousProtection")],
        extension=True, sigma_category="exec_memory",
        description="mmap or mprotect giving anonymous or writable memory execute permission "
                    "(shellcode staging, JIT). Protection/PreviousProtection as rwx; "
                    "PreviousProtection - for mmap. Off by default; rate-limited per process."),
    # --- end Linux visibility ---------------------------------------------------------------
    # --- Sigma (SysmonX extension event; docs/DETECTION.md "Alerts") ----------------------------
    # 1000: a Sigma rule's or correlation's alert, written after the event that raised it
    # (detection/alerts.py). Not filterable (no tag): alerts come after the config's filter.
    # Version 2 (2026-12-07): Tactics/Techniques replace Attack, a correlation's window in the
    # SystemTime form, a detection without the correlation fields. Version 3 (2026-12-07):
    # Channels (record numbers are per channel: RecordIds alone do not find a record).
    _ev(1000, "SYSMONXEVENT_SIGMA_ALERT", "Sigma alert", None, 3, [
        _s("RuleId"), _s("RuleTitle"), _s("RuleLevel"), _s("RuleStatus"), _s("RuleKind"),
        _s("Tactics"), _s("Techniques"), _s("Tags"), _s("RuleDescription"), _s("RuleAuthor"),
        _s("RuleReferences"), _s("RuleFalsePositives"), _s("WindowStart"), _s("WindowEnd"),
        _t("EventCount", UINT32),
        _s("RecordIds"), _s("EventIds"), _s("Channels"), _s("Rules"), _s("Value"), _s("Group"),
        _s("SourceFile")],
        default="include", extension=True,
        description="A Sigma rule matched the event just before it in the stream, or a "
                    "correlation fired. RuleId (id, else name, else title), RuleTitle, "
                    "RuleLevel, RuleStatus; RuleKind detection or the correlation type; Tactics "
                    "(ATT&CK tactic names, e.g. Defense Evasion) and Techniques (technique IDs, "
                    "e.g. T1059.001) read from the attack.* tags, and Tags (all), "
                    "comma-separated; RuleDescription, RuleAuthor, "
                    "RuleReferences and RuleFalsePositives: the rule's own text (lists joined "
                    "with '; ', each value cut to 4,096 characters; empty when the rule has "
                    "none); WindowStart/WindowEnd (a correlation's only) in the form of "
                    "System/TimeCreated; EventCount; RecordIds, EventIds and Channels "
                    "(System/Channel, distinct) of the matched events, comma-separated (in "
                    "Channels a channel name's % and , written %25 and %2C): with "
                    "System/Computer what finds the records, also a record that is not written "
                    "(another provider's under --non-sysmon drop); Rules (a correlation's rules), Value "
                    "(its aggregate) and Group (name=value; ...), absent for a detection; "
                    "SourceFile: the recorded file the matched event was read from (replay; "
                    "absent live, and for correlations by design: their events may come from "
                    "several files). "
                    "Then the matched event's key fields under their own names (the fields the "
                    "rule tests and Image, CommandLine, ParentImage, User, ProcessGuid ...). "
                    "System/Level from the Sigma level (critical 1, high 2, medium 3, low and "
                    "informational 4); provider SysmonX, channel SysmonX/Alerts."),
    # --- end Sigma -----------------------------------------------------------------------------
)


@dataclass(frozen=True, slots=True)
class ExtensionField:
    """A SysmonX enrichment field (``sysmonx.stages.enrich``): computed once per event by the
    enrichment stage, filterable inside ``tags``, written only with ``--enrich``.

    ``unknown`` is the value written when a path cannot know it (the documented unknown value).
    """

    name: str
    description: str
    unknown: str = "-"
    tags: Optional[tuple[str, ...]] = None  # None: every tag whose events name a process


#: The enrichment fields, in the order they are written (after the event's own fields).
ENRICHMENT_FIELDS: tuple[ExtensionField, ...] = (
    ExtensionField("GrandparentImage", "Image of the parent of the event's process's parent"),
    ExtensionField("GrandparentCommandLine", "CommandLine of that grandparent"),
    ExtensionField("AncestorImages", "Images of up to 8 ancestors of the event's process, "
                   "nearest (the parent) first, separated by |"),
    ExtensionField("ContainerId", "container id from the process's cgroup path (64 hex), - "
                   "on the host; unknown when it cannot be known (the process was gone before "
                   "its cgroup was read, replay)", unknown="unknown"),
    ExtensionField("ContainerRuntime", "docker, containerd, cri-o, podman, lxc, - (host); "
                   "unknown as ContainerId", unknown="unknown"),
    ExtensionField("MntNs", "mount namespace inode number (at the exec when the sensor saw "
                   "it); - when unknown", unknown="-"),
    ExtensionField("PidNs", "pid namespace inode number (as MntNs)", unknown="-"),
    ExtensionField("Tty", "controlling terminal (/dev/pts/N), - for none"),
    ExtensionField("SessionId", "login (audit) session id", unknown="0"),
    ExtensionField("FileType", "type of the Image file: ELF, script (with its interpreter: "
                   "script:/bin/sh), other; - when it cannot be read (gone, memfd, replay). "
                   "Live on Linux the Image of a script is its interpreter (the kernel's exe), "
                   "so scripts show as the interpreter's type"),
)
ENRICHMENT_FIELD_NAMES: frozenset[str] = frozenset(f.name for f in ENRICHMENT_FIELDS)


@dataclass(frozen=True, slots=True)
class OptionDef:
    """A manifest ``<option>``: command-line switch and/or configuration entry.

    ``argument`` is ``none``/``optional``/``required``; ``noconfig`` marks command-line-only
    switches; ``rule`` marks options that enable an event collection; ``forceconfig`` rule options
    appear in a config as ``<NameConfig>``; ``internal`` ones (manifest ``target="internal"``)
    never show in Windows ``-s``. ``since``/``until``: first schema with / first schema without
    this entry (an option may have several entries, one per manifest position or variant).
    ``extension`` marks a SysmonX configuration entry no Sysmon manifest defines (present in
    every schema version, accepted only with extensions on, kept out of Sysmon's manifests:
    :attr:`sysmonx.schema.Schema.extension_options`).
    """

    switch: Optional[str]
    name: str
    argument: str
    noconfig: bool = False
    exclusive: bool = False
    rule: bool = False
    forceconfig: bool = False
    internal: bool = False
    since: Optional[Version] = None
    until: Optional[Version] = None
    extension: bool = False


_EARLY = (4, 23)  # the 4.0-4.22 manifests list the configuration options in another order

OPTIONS: tuple[OptionDef, ...] = (
    # Command-line only options: same relative order in every 4.x manifest.
    OptionDef("i", "Install", "optional", noconfig=True, exclusive=True),
    OptionDef("c", "Configuration", "optional", noconfig=True, exclusive=True),
    OptionDef("u", "UnInstall", "optional", noconfig=True, exclusive=True),
    OptionDef("m", "Manifest", "none", noconfig=True, exclusive=True),
    OptionDef("z", "ClipboardInstance", "required", noconfig=True, exclusive=True),
    OptionDef("t", "DebugMode", "optional", noconfig=True),
    OptionDef("btf", "BTF", "optional", noconfig=True, since=(4, 81)),
    OptionDef("service", "Service", "none", noconfig=True, since=(4, 70)),
    OptionDef("s", "PrintSchema", "optional", noconfig=True, exclusive=True),
    OptionDef("nologo", "NoLogo", "none", noconfig=True),
    OptionDef("accepteula", "AcceptEula", "none", noconfig=True),
    OptionDef("-", "ConfigDefault", "none", noconfig=True),
    # Configuration-file options as the 4.0-4.22 manifests order them.
    OptionDef("h", "HashAlgorithms", "required", until=_EARLY),
    OptionDef("n", "NetworkConnect", "optional", rule=True, until=_EARLY),
    OptionDef("l", "ImageLoad", "optional", rule=True, until=_EARLY),
    OptionDef("d", "DriverName", "required", until=_EARLY),
    OptionDef("dns", "DnsQuery", "optional", rule=True, since=(4, 21), until=_EARLY),
    OptionDef("a", "ArchiveDirectory", "required", until=_EARLY),
    OptionDef("p", "CopyOnDelete_Processes", "required", until=_EARLY),
    OptionDef("e", "CopyOnDelete_PE", "none", until=_EARLY),
    OptionDef("f", "CopyOnDelete_SIDs", "required", until=_EARLY),
    OptionDef("j", "CopyOnDelete_Extensions", "required", until=_EARLY),
    OptionDef(None, "CaptureClipboard", "none", until=_EARLY),
    OptionDef("s", "ServiceArchiveDirectory", "required", internal=True, until=(4, 10)),
    # The 4.1 manifest alone spells ServiceArchiveDirectory target="all" (a config entry there).
    OptionDef("s", "ServiceArchiveDirectory", "required", since=(4, 10), until=(4, 20)),
    OptionDef("s", "ServiceArchiveDirectory", "required", internal=True, since=(4, 20),
              until=_EARLY),
    OptionDef("k", "ProcessAccess", "required", rule=True, forceconfig=True, until=_EARLY),
    OptionDef("r", "CheckRevocation", "optional", until=_EARLY),
    OptionDef("g", "PipeMonitoring", "required", rule=True, forceconfig=True, until=_EARLY),
    # Configuration-file options as the 4.23 and later manifests order them.
    OptionDef("a", "ArchiveDirectory", "required", since=_EARLY),
    OptionDef(None, "CaptureClipboard", "none", since=_EARLY),
    OptionDef("d", "DriverName", "required", since=_EARLY),
    OptionDef("dns", "DnsQuery", "optional", rule=True, since=_EARLY),
    OptionDef("e", "CopyOnDelete_PE", "none", since=_EARLY, until=(4, 30)),
    OptionDef("f", "CopyOnDelete_SIDs", "required", since=_EARLY, until=(4, 30)),
    OptionDef("g", "PipeMonitoring", "required", rule=True, forceconfig=True, since=_EARLY),
    OptionDef("h", "HashAlgorithms", "required", since=_EARLY),
    OptionDef("j", "CopyOnDelete_Extensions", "required", since=_EARLY, until=(4, 30)),
    OptionDef(None, "DnsLookup", "required", since=(4, 30)),
    OptionDef("k", "ProcessAccess", "required", rule=True, forceconfig=True, since=_EARLY),
    OptionDef("l", "ImageLoad", "optional", rule=True, since=_EARLY),
    OptionDef("n", "NetworkConnect", "optional", rule=True, since=_EARLY),
    OptionDef("p", "CopyOnDelete_Processes", "required", since=_EARLY, until=(4, 30)),
    OptionDef("r", "CheckRevocation", "optional", since=_EARLY),
    OptionDef("s", "ServiceArchiveDirectory", "required", internal=True, since=_EARLY),
    OptionDef("x", "InternalRepresentation", "required", internal=True, since=(4, 50)),
    OptionDef("y", "OutputRules", "required", internal=True, since=(4, 50)),
    OptionDef(None, "TraceEvents", "required", internal=True, since=(4, 50)),
    OptionDef(None, "FieldSizes", "required", since=(4, 81)),
    OptionDef(None, "DriverQueueSize", "required", since=(4, 91)),
    OptionDef(None, "SigningQueueSize", "required", since=(4, 91)),

    # --- SysmonX configuration entries (extension options; no Sysmon manifest has them) -------
    # Elements directly under <Sysmon>, like Sysmon's own options, in a config of any schema
    # version; config/parse.py validates each value and refuses them with extensions off;
    # `sysmonx -s` prints them after Sysmon's options; a configuration written for Sysmon itself
    # never carries them (windows/sensorconfig.py).
    # HeartbeatInterval: seconds between Heartbeat events (202) of the live sensor, 0 for none
    # (`sysmonx run --heartbeat` overrides it). YaraRules: the YARA rule file or folder of
    # scanners="yara..." rules, relative to the config file (`sysmonx run --yara` overrides it).
    OptionDef(None, "HeartbeatInterval", "required", extension=True),
    OptionDef(None, "YaraRules", "required", extension=True),
    # --- end SysmonX configuration entries ------------------------------------------------------
)

#: Operator enumeration order (messages, rule blob), spec section 2.2.
CONDITIONS: tuple[str, ...] = (
    "is", "is not", "contains", "contains any", "is any", "contains all", "excludes",
    "excludes any", "excludes all", "begin with", "end with", "less than", "more than", "image",
    "not begin with", "not end with",
)

#: First schema version whose manifest lists each condition (spec section 1.7).
CONDITION_SINCE: dict[str, Version] = {
    "contains any": (4, 22), "contains all": (4, 22), "excludes any": (4, 23),
    "excludes all": (4, 23), "is any": (4, 31), "not begin with": (4, 70),
    "not end with": (4, 70),
}

#: Order in which a manifest's ``<filters>`` element lists the conditions (for ``-s``).
CONDITION_MANIFEST_ORDER: tuple[str, ...] = (
    "is", "is not", "contains", "contains any", "is any", "contains all", "excludes",
    "excludes any", "excludes all", "begin with", "not begin with", "end with", "not end with",
    "less than", "more than", "image",
)

#: Every 4.x schema version Sysmon has published, with its manifest binaryversion string.
SCHEMA_VERSIONS: tuple[tuple[Version, str], ...] = (
    ((4, 0), "1.01"), ((4, 10), "8.00"), ((4, 20), "8.00"), ((4, 21), "9.10"), ((4, 22), "9.20"),
    ((4, 23), "9.20"), ((4, 30), "9.20"), ((4, 31), "9.20"), ((4, 32), "9.20"), ((4, 40), "11.0"),
    ((4, 50), "13.0"), ((4, 60), "14.0"), ((4, 70), "15.0"), ((4, 80), "16"), ((4, 81), "16"),
    ((4, 82), "17"), ((4, 83), "17"), ((4, 90), "18"), ((4, 91), "18"),
)
