"""SigmaHQ field names on SysmonX events.

SigmaHQ rules for Sysmon use Sysmon's own ``EventData`` names (``Image``, ``CommandLine``,
``TargetObject`` ...; Sigma taxonomy appendix, "Fields": "We align our field names to the field
names that Sysmon uses"), so most fields are a plain ``event.data`` lookup. The rest:

* **System header** fields, named as the Sigma rules specification says ("Field Usage", tag and
  attribute joined with ``_``): ``EventID``, ``Provider_Name``, ``Provider_Guid``, ``Channel``,
  ``Computer``, ``Level``, ``Task``, ``Opcode``, ``Keywords``, ``Version``, ``EventRecordID``,
  ``Execution_ProcessID``, ``Execution_ThreadID``, ``Security_UserID``,
  ``TimeCreated_SystemTime``; ``ComputerName`` is the System ``Computer`` too.
* **Sub-hashes**: Sysmon writes one combined ``Hashes`` field (``Hash`` in event 15),
  ``SHA1=...,MD5=...,SHA256=...,IMPHASH=...``. The combined field matches as it is
  (``Hashes|contains: 'IMPHASH=...'``) and each algorithm is also a field of its own, named
  case-insensitively as the taxonomy does: ``md5``, ``sha1``, ``sha256``, ``imphash`` (also
  ``Imphash``, ``MD5`` ...; ``sha384``/``sha512`` likewise if present).

A name the event itself carries in ``EventData`` always wins over these derived values.
"""

from __future__ import annotations

from typing import Callable, Optional

from ..event import Event

__all__ = ["FieldGetter", "field_getter", "SYSTEM_FIELDS", "HASH_FIELDS", "split_hashes",
           "known_fields"]

#: ``getter(event) -> value or None``; ``None`` instead of a getter means ``event.data.get``.
FieldGetter = Callable[[Event], Optional[str]]


def _opt(v) -> Optional[str]:
    return None if v is None else str(v)


#: System header field name -> value getter (Sigma rules specification, "Field Usage" 3.i).
SYSTEM_FIELDS: dict[str, Callable[[Event], Optional[str]]] = {
    "EventID": lambda e: str(e.event_id),
    "Provider_Name": lambda e: e.provider,
    "Provider_Guid": lambda e: e.provider_guid,
    "Channel": lambda e: e.channel,
    "Computer": lambda e: e.computer,
    "ComputerName": lambda e: e.computer,
    "Level": lambda e: _opt(e.level),
    "Task": lambda e: _opt(e.task),
    "Opcode": lambda e: _opt(e.opcode),
    "Keywords": lambda e: e.keywords,
    "Version": lambda e: _opt(e.version),
    "EventRecordID": lambda e: _opt(e.record_id),
    "Execution_ProcessID": lambda e: _opt(e.process_id),
    "Execution_ThreadID": lambda e: _opt(e.thread_id),
    "Security_UserID": lambda e: e.user_id,
    "TimeCreated_SystemTime": lambda e: e.time_created or None,
}

#: Sub-hash field names (lower case) -> the algorithm name Sysmon writes.
HASH_FIELDS = {"md5": "MD5", "sha1": "SHA1", "sha256": "SHA256", "sha384": "SHA384",
               "sha512": "SHA512", "imphash": "IMPHASH"}


def split_hashes(value: str) -> dict[str, str]:
    """``"SHA1=AB,MD5=CD"`` -> ``{"SHA1": "AB", "MD5": "CD"}`` (names upper-cased)."""
    out = {}
    for part in value.split(","):
        k, sep, v = part.partition("=")
        if sep:
            out[k.strip().upper()] = v.strip()
    return out


def _hash_getter(name: str, algo: str) -> FieldGetter:
    def get(e: Event) -> Optional[str]:
        data = e.data
        v = data.get(name)
        if v is not None:
            return v
        combined = data.get("Hashes")
        if combined is None:
            combined = data.get("Hash")
        if combined is None:
            return None
        return split_hashes(combined).get(algo)
    return get


def _system_getter(name: str, system: Callable[[Event], Optional[str]]) -> FieldGetter:
    def get(e: Event) -> Optional[str]:
        v = e.data.get(name)
        return system(e) if v is None else v
    return get


def field_getter(name: str) -> Optional[FieldGetter]:
    """The getter of a Sigma field name, or ``None`` for a plain ``event.data.get(name)``."""
    system = SYSTEM_FIELDS.get(name)
    if system is not None:
        return _system_getter(name, system)
    algo = HASH_FIELDS.get(name.lower())
    if algo is not None:
        return _hash_getter(name, algo)
    return None


def known_fields(event_id: int) -> frozenset:
    """Field names a Sysmon event of ``event_id`` can carry in the newest schema, plus the
    System and sub-hash names above (empty set for an unknown EventID)."""
    from ..schema import CURRENT
    ev = CURRENT.events.get(event_id)
    if ev is None:
        return frozenset()
    names = set(ev.field_names) | set(SYSTEM_FIELDS)
    if "Hashes" in names or "Hash" in names:
        names |= set(HASH_FIELDS)
    if names & {"ProcessGuid", "SourceProcessGuid", "SourceProcessGUID"}:
        # SysmonX enrichment fields (GrandparentImage ...): computed for rules that use them
        from ..schema.catalogue import ENRICHMENT_FIELD_NAMES
        names |= ENRICHMENT_FIELD_NAMES
    return frozenset(names)
