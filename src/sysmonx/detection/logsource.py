"""Sigma log sources -> the events SysmonX reads: provider, channel, EventIDs, EventType subsets.

A Sigma rule names where its events come from with ``product``, ``category`` and ``service``
(Sigma rules specification, "Log source"; the mapping for Sysmon is the taxonomy appendix,
"Windows Folder / Category" and "Linux Folder"). SysmonX turns that into *groups* of events a
rule can ever see, so an event only meets the rules of its own group:

* ``("win", EventID)``: Windows Sysmon (provider ``Microsoft-Windows-Sysmon``);
* ``("lnx", EventID)``: Sysmon for Linux (provider ``Linux-Sysmon``);
* ``("chan", channel, EventID or None)``: any other provider, by its channel (lower case), for
  the Windows services of the taxonomy (``service: security`` -> ``Security`` ...).

A Sysmon rule therefore never fires on another provider's event that happens to carry the same
EventID (a Security 4688 never meets a ``process_creation`` rule, a Linux-Sysmon event never a
``product: windows`` rule). A log source with no mapping raises :class:`LogsourceError` with the
reason; the loader reports the rule as rejected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..core.errors import RuleError
from ..schema.catalogue import EVENTS
from ..event import LINUX_PROVIDER, WINDOWS_PROVIDER

__all__ = ["LogsourceError", "Target", "resolve_logsource", "group_keys_for_event",
           "SYSMON_CATEGORIES", "EVENT_TYPES", "WINDOWS_SERVICE_CHANNELS", "WINDOWS_CHANNEL_CATEGORIES",
           "WINDOWS_SYSMON_IDS", "LINUX_SYSMON_IDS", "EXTENSION_IDS", "EXTENSION_CATEGORIES",
           "unreachable", "platform_of_provider"]

#: Events in a Sysmon stream that no Sysmon manifest defines (SysmonX's own, Sysmon for Linux's
#: 100), with their Sigma category: data from the schema catalogue (``extension`` entries).
EXTENSION_IDS: tuple[int, ...] = tuple(sorted({e.event_id for e in EVENTS if e.extension}))
EXTENSION_CATEGORIES: dict[str, tuple[int, ...]] = {}
for _e in EVENTS:
    if _e.extension and _e.sigma_category:
        EXTENSION_CATEGORIES[_e.sigma_category] = EXTENSION_CATEGORIES.get(
            _e.sigma_category, ()) + (_e.event_id,)

#: Every EventID Windows Sysmon writes (``service: sysmon`` covers all of them, 4/16/255 included),
#: and the extension events SysmonX writes into the same stream.
WINDOWS_SYSMON_IDS = tuple(range(1, 30)) + (255,) + EXTENSION_IDS
#: EventIDs Sysmon for Linux writes (1, 3, 4, 5, 9, 11, 16, 23, 255; the others are accepted so
#: that a future Sysmon for Linux event is not silently missed).
LINUX_SYSMON_IDS = WINDOWS_SYSMON_IDS

#: Generic category -> Sysmon EventIDs (taxonomy appendix, Windows Folder / Category).
SYSMON_CATEGORIES: dict[str, tuple[int, ...]] = {
    "process_creation": (1,),
    "file_change": (2,),
    "network_connection": (3,),
    "sysmon_status": (4, 16),
    "process_termination": (5,),
    "driver_load": (6,),
    "image_load": (7,),
    "create_remote_thread": (8,),
    "raw_access_thread": (9,),
    "process_access": (10,),
    "file_event": (11,),
    "registry_add": (12,),
    "registry_delete": (12,),
    "registry_set": (13,),
    "registry_rename": (14,),
    "registry_event": (12, 13, 14),
    "create_stream_hash": (15,),
    "pipe_created": (17, 18),
    "wmi_event": (19, 20, 21),
    "dns_query": (22,),
    "file_delete": (23, 26),
    "clipboard_capture": (24,),
    "process_tampering": (25,),
    "file_delete_detected": (26,),
    "file_block_executable": (27,),
    "file_block_shredding": (28,),
    "file_executable_detected": (29,),
    "sysmon_error": (255,),
    **EXTENSION_CATEGORIES,
}

#: Registry categories that see only some ``EventType`` values of their EventID (Sysmon's
#: event 12 carries CreateKey, DeleteKey and DeleteValue; 13 SetValue; 14 RenameKey).
EVENT_TYPES: dict[str, tuple[str, ...]] = {
    "registry_add": ("CreateKey",),
    "registry_delete": ("DeleteKey", "DeleteValue"),
    "registry_set": ("SetValue",),
    "registry_rename": ("RenameKey",),
}

#: Categories that name events no Sysmon writes, with the reason given at load.
_NOT_SYSMON: dict[str, str] = {
    "file_access": "category file_access comes from the Microsoft-Windows-Kernel-File ETW "
                   "provider, which Sysmon does not record",
    "file_rename": "category file_rename comes from the Microsoft-Windows-Kernel-File ETW "
                   "provider, which Sysmon does not record",
}

#: Windows categories that are other channels (taxonomy appendix): category -> (channels, IDs).
WINDOWS_CHANNEL_CATEGORIES: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {
    "ps_classic_start": (("Windows PowerShell",), (400,)),
    "ps_classic_provider_start": (("Windows PowerShell",), (600,)),
    "ps_classic_script": (("Windows PowerShell",), (800,)),
    "ps_module": (("Microsoft-Windows-PowerShell/Operational", "PowerShellCore/Operational"),
                  (4103,)),
    "ps_script": (("Microsoft-Windows-PowerShell/Operational", "PowerShellCore/Operational"),
                  (4104,)),
}

#: ``product: windows`` services -> channels (taxonomy appendix, Windows Folder / Service).
WINDOWS_SERVICE_CHANNELS: dict[str, tuple[str, ...]] = {
    "application": ("Application",),
    "application-experience": ("Microsoft-Windows-Application-Experience/Program-Telemetry",
                               "Microsoft-Windows-Application-Experience/"
                               "Program-Compatibility-Assistant"),
    "applocker": ("Microsoft-Windows-AppLocker/MSI and Script",
                  "Microsoft-Windows-AppLocker/EXE and DLL",
                  "Microsoft-Windows-AppLocker/Packaged app-Deployment",
                  "Microsoft-Windows-AppLocker/Packaged app-Execution"),
    "appmodel-runtime": ("Microsoft-Windows-AppModel-Runtime/Admin",),
    "appxdeployment-server": ("Microsoft-Windows-AppXDeploymentServer/Operational",),
    "appxpackaging-om": ("Microsoft-Windows-AppxPackaging/Operational",),
    "bitlocker": ("Microsoft-Windows-BitLocker/BitLocker Management",),
    "bits-client": ("Microsoft-Windows-Bits-Client/Operational",),
    "capi2": ("Microsoft-Windows-CAPI2/Operational",),
    "certificateservicesclient-lifecycle-system": (
        "Microsoft-Windows-CertificateServicesClient-Lifecycle-System/Operational",),
    "codeintegrity-operational": ("Microsoft-Windows-CodeIntegrity/Operational",),
    "dhcp": ("Microsoft-Windows-DHCP-Server/Operational",),
    "diagnosis-scripted": ("Microsoft-Windows-Diagnosis-Scripted/Operational",),
    "dns-client": ("Microsoft-Windows-DNS Client Events/Operational",),
    "dns-server": ("DNS Server",),
    "dns-server-analytic": ("Microsoft-Windows-DNS-Server/Analytical",),
    "dns-server-audit": ("Microsoft-Windows-DNS-Server/Audit",),
    "driver-framework": ("Microsoft-Windows-DriverFrameworks-UserMode/Operational",),
    "firewall-as": ("Microsoft-Windows-Windows Firewall With Advanced Security/Firewall",),
    "hyper-v-worker": ("Microsoft-Windows-Hyper-V-Worker",),
    "iis-configuration": ("Microsoft-IIS-Configuration/Operational",),
    "kernel-event-tracing": ("Microsoft-Windows-Kernel-EventTracing",),
    "kernel-shimengine": ("Microsoft-Windows-Kernel-ShimEngine/Operational",
                          "Microsoft-Windows-Kernel-ShimEngine/Diagnostic"),
    "ldap": ("Microsoft-Windows-LDAP-Client/Debug",),
    "lsa-server": ("Microsoft-Windows-LSA/Operational",),
    "msexchange-management": ("MSExchange Management",),
    "ntfs": ("Microsoft-Windows-Ntfs/Operational",),
    "ntlm": ("Microsoft-Windows-NTLM/Operational",),
    "openssh": ("OpenSSH/Operational",),
    "powershell": ("Microsoft-Windows-PowerShell/Operational",),
    "powershell-classic": ("Windows PowerShell",),
    "printservice-admin": ("Microsoft-Windows-PrintService/Admin",),
    "printservice-operational": ("Microsoft-Windows-PrintService/Operational",),
    "security": ("Security",),
    "security-mitigations": ("Microsoft-Windows-Security-Mitigations/Kernel Mode",
                             "Microsoft-Windows-Security-Mitigations/User Mode"),
    "sense": ("Microsoft-Windows-SENSE/Operational",),
    "servicebus-client": ("Microsoft-ServiceBus-Client/Operational",
                          "Microsoft-ServiceBus-Client/Admin"),
    "shell-core": ("Microsoft-Windows-Shell-Core/Operational",),
    "smbclient-security": ("Microsoft-Windows-SmbClient/Security",),
    "system": ("System",),
    "taskscheduler": ("Microsoft-Windows-TaskScheduler/Operational",),
    "terminalservices-localsessionmanager": (
        "Microsoft-Windows-TerminalServices-LocalSessionManager/Operational",),
    "vhdmp": ("Microsoft-Windows-VHDMP/Operational",),
    "windefend": ("Microsoft-Windows-Windows Defender/Operational",),
    "wmi": ("Microsoft-Windows-WMI-Activity/Operational",),
}

_SYSMON_PLATFORMS = {"windows": ("win",), "linux": ("lnx",), None: ("win", "lnx")}
_PLATFORM_OF_PROVIDER = {WINDOWS_PROVIDER: "win", LINUX_PROVIDER: "lnx"}


class LogsourceError(RuleError):
    """A log source SysmonX has no events for; the message says why (shown at load)."""

    def __init__(self, message: str) -> None:
        super().__init__("logsource", message)

    def __reduce__(self) -> tuple:
        return (type(self), (self.message,))


@dataclass(frozen=True)
class Target:
    """Where a rule's events come from.

    Attributes:
        groups: group keys (see module docstring) of the events the rule can meet.
        event_types: ``EventType`` values the event must carry (registry_add/delete/set/rename),
            or ``None``.
        description: one line for summaries, e.g. ``Sysmon (Windows) EventID 12 [CreateKey]``.
    """

    groups: tuple
    event_types: Optional[tuple[str, ...]]
    description: str


def resolve_logsource(product: Optional[str], category: Optional[str],
                      service: Optional[str]) -> Target:
    """Map a Sigma log source to the groups of events it covers.

    Args:
        product, category, service: the rule's ``logsource`` values (``None`` when absent);
            compared case-insensitively.
    Returns:
        :class:`Target`.
    Raises:
        LogsourceError: no event SysmonX reads can come from this log source (other product,
            unknown category, a Windows category recorded by another provider, a Linux service
            other than sysmon).
    Source: Sigma taxonomy appendix, "Windows Folder", "Linux Folder".
    """
    p = product.lower() if product else None
    c = category.lower() if category else None
    s = service.lower() if service else None
    if p not in (None, "windows", "linux"):
        raise LogsourceError(f"product {product!r} is not recorded by Sysmon (only windows and "
                             "linux are)")
    if c is not None:
        if s not in (None, "sysmon"):
            raise LogsourceError(f"category {category!r} with service {service!r} has no "
                                 "mapping to Sysmon events")
        if c in _NOT_SYSMON:
            raise LogsourceError(_NOT_SYSMON[c])
        if c in SYSMON_CATEGORIES:
            ids = SYSMON_CATEGORIES[c]
            plats = _SYSMON_PLATFORMS[p]
            groups: tuple = tuple((pl, i) for pl in plats for i in ids)
            types = EVENT_TYPES.get(c)
            where = "/".join("Windows" if pl == "win" else "Linux" for pl in plats)
            desc = (f"Sysmon ({where}) EventID {'/'.join(map(str, ids))}"
                    + (f" [{', '.join(types)}]" if types else ""))
            return Target(groups, types, desc)
        if c in WINDOWS_CHANNEL_CATEGORIES and p in (None, "windows"):
            channels, ids = WINDOWS_CHANNEL_CATEGORIES[c]
            groups = tuple(("chan", ch.lower(), i) for ch in channels for i in ids)
            return Target(groups, None, f"channel {' | '.join(channels)} EventID "
                                        f"{'/'.join(map(str, ids))}")
        raise LogsourceError(f"category {category!r} has no mapping to events SysmonX reads")
    if s is None:
        raise LogsourceError("log source without category or service (product alone) is not "
                             "mapped: it would match every event of the product")
    if s == "sysmon":
        plats = _SYSMON_PLATFORMS[p]
        groups = tuple((pl, i) for pl in plats
                       for i in (WINDOWS_SYSMON_IDS if pl == "win" else LINUX_SYSMON_IDS))
        where = "/".join("Windows" if pl == "win" else "Linux" for pl in plats)
        return Target(groups, None, f"Sysmon ({where}), every EventID")
    if p in (None, "windows") and s in WINDOWS_SERVICE_CHANNELS:
        channels = WINDOWS_SERVICE_CHANNELS[s]
        return Target(tuple(("chan", ch.lower(), None) for ch in channels), None,
                      f"channel {' | '.join(channels)}")
    raise LogsourceError(f"service {service!r}"
                         + (f" of product {product!r}" if product else "")
                         + " has no mapping to events SysmonX reads")


def group_keys_for_event(provider: str, channel: str, event_id: int) -> tuple:
    """The group keys an event belongs to (see module docstring), most specific first.

    Sysmon events (by provider) belong to exactly one group; other events to their channel's
    EventID group and its any-EventID group.
    """
    plat = _PLATFORM_OF_PROVIDER.get(provider)
    if plat is not None:
        return ((plat, event_id),)
    ch = (channel or "").lower()
    return (("chan", ch, event_id), ("chan", ch, None))


def platform_of_provider(provider: str) -> Optional[str]:
    """``"win"`` for Windows Sysmon's provider, ``"lnx"`` for Sysmon for Linux's, else ``None``
    (another provider's events are grouped by their channel)."""
    return _PLATFORM_OF_PROVIDER.get(provider)


def unreachable(targets: list[Target], platforms: frozenset[str],
                channels: Optional[frozenset[str]]) -> list[int]:
    """Indices of the ``targets`` no event of a source can ever meet: none of their groups is
    a Sysmon group of ``platforms`` (``"win"``, ``"lnx"``) nor, for a ``("chan", ...)`` group, a
    channel of ``channels`` (lower case; ``None``: the source's channels are not known, so a
    channel group may be met). Used by ``sysmonx run`` to say how many loaded rules a Linux
    sensor (Sysmon for Linux events only) can never fire."""
    def met(g: tuple) -> bool:
        if g[0] == "chan":
            return channels is None or g[1] in channels
        return g[0] in platforms

    return [i for i, t in enumerate(targets) if not any(met(g) for g in t.groups)]
