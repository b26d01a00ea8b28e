"""PowerShell script blocks (event 4104) reassembled across their parts, and module-logging
records (event 4103) read into named fields.

Record shapes (``Microsoft-Windows-PowerShell``, ``{a0c1853b-5c40-4b15-8766-3cf1c58f985a}``,
channel ``Microsoft-Windows-PowerShell/Operational``), from PowerShell's own code
(PowerShell/PowerShell ``CompiledScriptBlock.cs``, ``PSEtwLogProvider.cs``, ``MshLog.cs``) and
published records:

* **4104** "Creating Scriptblock text (%1 of %2)", Task 2, Opcode 15, Version 1, EventData
  ``MessageNumber``, ``MessageTotal``, ``ScriptBlockText``, ``ScriptBlockId`` (a GUID without
  braces), ``Path`` (empty for interactive code). A block shorter than 20,000 characters is one
  record (1 of 1). A longer one is cut into segments of ``10000 + random(0..9999)`` characters,
  ``floor(len / size) + 1`` of them, written one after the other; the last segment is empty when
  the length is a multiple of the segment size. Level 5 (Verbose) normally, Level 3 (Warning)
  when PowerShell found suspicious content in the block (logged even without script-block
  logging enabled). Records with ``MessageNumber`` 0 and ``MessageTotal`` 0 are PowerShell's own
  error reports (protected event logging failures), not parts. With protected event logging each
  segment is a separate CMS message: reassembly joins them as they are.
* **4103** "{Payload} Context: {ContextInfo} User Data: {UserData}", Task 106, Opcode 20: one
  record per pipeline (``LogPipelineExecutionDetailEvent`` writes the whole detail buffer at
  once); nothing splits it, so there are no parts to reassemble. ``ContextInfo`` is
  ``"        Label = value"`` lines (labels localised with the OS language); its
  ``Sequence Number`` is a process-wide counter over every log context
  (``MshLog.NextSequenceNumber``), so gaps in it do not show lost records and are not reported.

:class:`ScriptBlockAssembler` keeps the parts of open blocks (bounded in count and characters),
accepts them in any order, drops repeats, reports conflicting or inconsistent parts, emits one
SysmonX script-block event per complete block, and reports blocks whose parts never all arrived
(timeout, memory bound, end of input) as a :class:`~sysmonx.windows.report.Loss` of the missing
parts: their text is never guessed. The original 4104 records are not altered or consumed: the
caller passes them on as they are.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..event import SYSMON_KEYWORDS, Event
from ..schema import CURRENT
from .report import Loss, ReportIdentity, error_event, loss_event

__all__ = ["POWERSHELL_PROVIDER", "POWERSHELL_PROVIDER_GUID", "POWERSHELL_CHANNEL",
           "SCRIPT_BLOCK_EVENT_ID", "SCRIPT_BLOCK_FIELDS", "SYSMONX_IDENTITY", "STREAM_IDENTITY",
           "ScriptBlockAssembler", "parse_context_info", "pipeline_detail", "PipelineDetail",
           "CONTEXT_LABELS"]

POWERSHELL_PROVIDER = "Microsoft-Windows-PowerShell"
POWERSHELL_PROVIDER_GUID = "{a0c1853b-5c40-4b15-8766-3cf1c58f985a}"
POWERSHELL_CHANNEL = "Microsoft-Windows-PowerShell/Operational"

#: EventID of SysmonX's reassembled script-block event, ``PowerShellScriptBlock`` (the lead's
#: allocation in SysmonX's own range; its definition is data in the schema catalogue).
SCRIPT_BLOCK_EVENT_ID = 220
#: Its fields, in order (the catalogue's). PowerShell's names where the value is PowerShell's.
SCRIPT_BLOCK_FIELDS = ("RuleName", "UtcTime", "ScriptBlockId", "Path", "ProcessId", "UserSid",
                       "MessageTotal", "Suspicious", "FirstRecordID", "LastRecordID",
                       "ScriptBlockText")
#: System header of SysmonX's own events in the event stream: Windows Sysmon's provider and
#: channel, as SysmonX's events 4, 16, 255 and every SysmonX event from 200 up carry (the
#: EventID marks them as SysmonX's), so the config filter, Sigma (``service: sysmon``) and every
#: output treat them like Sysmon's events.
STREAM_IDENTITY = ReportIdentity()
#: Provider and channel of SysmonX's own Event Log channel (the 2019 prototype's names), used by
#: the event-log output (:mod:`sysmonx.windows.evtoutput`), not by the event stream.
SYSMONX_IDENTITY = ReportIdentity(provider="SysmonX", provider_guid=None,
                                  channel="SysmonX/Operational")

_LEVEL_WARNING = 3  # PowerShell logs blocks with suspicious content as warnings


@dataclass
class _Block:
    key: tuple
    script_block_id: str
    total: int
    first: Event
    opened: float
    parts: dict = field(default_factory=dict)      # MessageNumber -> text
    record_ids: list = field(default_factory=list)
    chars: int = 0
    suspicious: bool = False
    conflicts: int = 0


def _int(value: Optional[str]) -> Optional[int]:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class ScriptBlockAssembler:
    """Reassemble 4104 script blocks from their parts (see the module docstring).

    Args:
        timeout: seconds to wait for the missing parts of a block after its last part arrived
            (PowerShell writes the parts back to back, so a few seconds suffice live).
        max_open: open (incomplete) blocks kept at most; past it the oldest is given up.
        max_chars: characters of buffered parts kept at most, over all open blocks; past it the
            oldest blocks are given up.
        max_parts: largest ``MessageTotal`` accepted (a forged 4104 cannot make the assembler
            wait for millions of parts).
        single_parts: also emit a script-block event for 1-of-1 records, so that every block is
            one script-block event (False: only multi-part blocks).
        identity: System header of the events emitted.
        clock: seconds, monotonic (tests pass a fake clock).

    Attributes:
        stats: ``parts``, ``complete``, ``duplicates``, ``conflicts``, ``malformed``,
            ``incomplete``, ``late_parts``, ``not_parts``.
        losses: :class:`~sysmonx.windows.report.Loss` of every incomplete block.
    """

    def __init__(self, *, timeout: float = 60.0, max_open: int = 4096,
                 max_chars: int = 64 << 20, max_parts: int = 100_000, single_parts: bool = True,
                 identity: ReportIdentity = STREAM_IDENTITY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout = timeout
        self.max_open = max_open
        self.max_chars = max_chars
        self.max_parts = max_parts
        self.single_parts = single_parts
        self.identity = identity
        self.clock = clock
        self._open: "OrderedDict[tuple, _Block]" = OrderedDict()  # by last activity
        self._done: "OrderedDict[tuple, None]" = OrderedDict()    # recently completed keys
        self.buffered_chars = 0
        self.stats = {k: 0 for k in ("parts", "complete", "duplicates", "conflicts", "malformed",
                                     "incomplete", "late_parts", "not_parts")}
        self.losses: list[Loss] = []

    @staticmethod
    def is_part(event: Event) -> bool:
        """True for a PowerShell 4104 record."""
        return event.event_id == 4104 and event.provider == POWERSHELL_PROVIDER

    def add(self, event: Event) -> list[Event]:
        """Take one event; return what to emit now (script-block events, events 255 for
        incomplete blocks and anomalies). Events other than 4104 give ``[]``; expired blocks
        are given up first (:meth:`expire`)."""
        out = self.expire()
        if not self.is_part(event):
            return out
        d = event.data
        number, total = _int(d.get("MessageNumber")), _int(d.get("MessageTotal"))
        sbid = (d.get("ScriptBlockId") or "").strip().strip("{}").lower()
        if number == 0 and total == 0:
            self.stats["not_parts"] += 1  # PowerShell's own error report, not a segment
            return out
        if number is None or total is None or not sbid or not 1 <= number <= total \
                or total > self.max_parts:
            self.stats["malformed"] += 1
            out.append(error_event("powershell:4104",
                                   f"malformed script block part (MessageNumber "
                                   f"{d.get('MessageNumber')!r}, MessageTotal "
                                   f"{d.get('MessageTotal')!r}, ScriptBlockId {sbid or '-'}, "
                                   f"EventRecordID {event.record_id}); ignored", None,
                                   self.identity))
            return out
        self.stats["parts"] += 1
        text = d.get("ScriptBlockText") or ""
        key = (event.computer.lower(), sbid)
        if key in self._done:
            self.stats["late_parts"] += 1  # a repeat of a block already emitted
            self.stats["duplicates"] += 1
            return out
        block = self._open.get(key)
        if block is None:
            block = _Block(key, sbid, total, event, self.clock())
            self._open[key] = block
        else:
            self._open.move_to_end(key)
            block.opened = self.clock()
        if total != block.total:
            self.stats["conflicts"] += 1
            block.conflicts += 1
            out.append(error_event("powershell:4104",
                                   f"script block {sbid}: part {number} says {total} parts, "
                                   f"earlier parts said {block.total}; part ignored", None,
                                   self.identity))
            return out
        if number in block.parts:
            if block.parts[number] == text:
                self.stats["duplicates"] += 1
            else:
                self.stats["conflicts"] += 1
                block.conflicts += 1
                out.append(error_event("powershell:4104",
                                       f"script block {sbid}: two different texts for part "
                                       f"{number} of {total}; the first is kept", None,
                                       self.identity))
            return out
        block.parts[number] = text
        block.chars += len(text)
        self.buffered_chars += len(text)
        if event.record_id is not None:
            block.record_ids.append(event.record_id)
        if event.level == _LEVEL_WARNING:
            block.suspicious = True
        if number == 1:
            block.first = event
        if len(block.parts) == block.total:
            self._close(block)
            self.stats["complete"] += 1
            if block.total > 1 or self.single_parts:
                out.append(self._event(block))
            return out
        out.extend(self._enforce_bounds())
        return out

    def expire(self, now: Optional[float] = None) -> list[Event]:
        """Give up blocks that got no part for ``timeout`` seconds; return their loss events."""
        t = self.clock() if now is None else now
        out = []
        while self._open:
            key, block = next(iter(self._open.items()))
            if t - block.opened < self.timeout:
                break
            out.append(self._give_up(block, f"no part arrived for {self.timeout:g} s"))
        return out

    def flush(self) -> list[Event]:
        """End of input: give up every open block; return their loss events."""
        out = []
        while self._open:
            out.append(self._give_up(next(iter(self._open.values())), "the input ended"))
        return out

    @property
    def open_blocks(self) -> int:
        """Blocks waiting for parts."""
        return len(self._open)

    # ---- internals -----------------------------------------------------------------------

    def _close(self, block: _Block) -> None:
        self._open.pop(block.key, None)
        self.buffered_chars -= block.chars
        self._done[block.key] = None
        while len(self._done) > 4 * self.max_open:
            self._done.popitem(last=False)

    def _enforce_bounds(self) -> list[Event]:
        out = []
        while self._open and (len(self._open) > self.max_open
                              or self.buffered_chars > self.max_chars):
            block = next(iter(self._open.values()))
            out.append(self._give_up(block, f"the assembler's bounds ({self.max_open} open "
                                            f"blocks, {self.max_chars} characters) were reached"))
        return out

    def _give_up(self, block: _Block, why: str) -> Event:
        self._close(block)
        self.stats["incomplete"] += 1
        missing = [n for n in range(1, block.total + 1) if n not in block.parts]
        shown = ",".join(map(str, missing[:20])) + (",..." if len(missing) > 20 else "")
        first = block.first
        path = first.data.get("Path") or "-"
        loss = Loss("powershell:4104", len(missing),
                    f"script block {block.script_block_id} (Path {path}, process "
                    f"{first.process_id}, {first.computer or '-'}): parts {shown} of "
                    f"{block.total} never arrived ({why}); the {len(block.parts)} parts received "
                    "were passed on as they are",
                    first_record=min(block.record_ids) if block.record_ids else None,
                    last_record=max(block.record_ids) if block.record_ids else None)
        self.losses.append(loss)
        return loss_event(loss, self.identity)

    def _event(self, block: _Block) -> Event:
        first = block.first
        text = "".join(block.parts[n] for n in range(1, block.total + 1))
        rids = block.record_ids
        data = {
            "RuleName": "-",
            "UtcTime": _utc_from_canonical(first.time_created),
            "ScriptBlockId": block.script_block_id,
            "Path": first.data.get("Path") or "",
            "ProcessId": str(first.process_id) if first.process_id is not None else "-",
            "UserSid": first.user_id or "-",
            "MessageTotal": str(block.total),
            "Suspicious": "true" if block.suspicious else "false",
            "FirstRecordID": str(min(rids)) if rids else "-",
            "LastRecordID": str(max(rids)) if rids else "-",
            "ScriptBlockText": text,
        }
        who = self.identity
        schema = CURRENT.events[SCRIPT_BLOCK_EVENT_ID]
        return Event(SCRIPT_BLOCK_EVENT_ID, data, provider=who.provider,
                     provider_guid=who.provider_guid, version=schema.version,
                     level=schema.level_value, task=SCRIPT_BLOCK_EVENT_ID, opcode=0,
                     keywords=SYSMON_KEYWORDS, time_created=first.time_created, record_id=None,
                     process_id=first.process_id, thread_id=first.thread_id,
                     channel=who.channel, computer=first.computer, user_id=first.user_id)


def _utc_from_canonical(time_created: str) -> str:
    """``2025-04-09T09:20:55.730393900Z`` -> Sysmon's ``2025-04-09 09:20:55.730``; ``-`` when
    the record had no time."""
    if len(time_created) < 23:
        return "-"
    return time_created[:10] + " " + time_created[11:23]


# ---- 4103 ------------------------------------------------------------------------------------

#: English ContextInfo labels (EtwLoggingStrings) -> field names (PowerShell's LogContext
#: property names).
CONTEXT_LABELS = {
    "Severity": "Severity", "Host Name": "HostName", "Host Version": "HostVersion",
    "Host ID": "HostId", "Host Application": "HostApplication",
    "Engine Version": "EngineVersion", "Runspace ID": "RunspaceId",
    "Pipeline ID": "PipelineId", "Command Name": "CommandName", "Command Type": "CommandType",
    "Script Name": "ScriptName", "Command Path": "CommandPath",
    "Sequence Number": "SequenceNumber", "User": "User", "Connected User": "ConnectedUser",
    "Shell ID": "ShellId",
}


def parse_context_info(text: str, max_fields: int = 64) -> tuple[dict, dict]:
    """Split a 4103 ``ContextInfo`` into fields.

    Lines are ``Label = value`` (leading spaces, CRLF). English labels map to
    :data:`CONTEXT_LABELS` names; other labels (another OS language, a newer PowerShell) are
    returned separately, as written. At most ``max_fields`` lines are read.

    Returns:
        ``(fields, other)``: ``{name: value}`` for known labels, ``{label: value}`` for the rest.
    """
    fields: dict = {}
    other: dict = {}
    for line in text.replace("\r\n", "\n").split("\n")[:max_fields]:
        label, sep, value = line.strip().partition(" = ")
        if not sep:
            label, sep, value = line.strip().partition(" =")
            if not sep:
                continue
        label = label.strip()
        name = CONTEXT_LABELS.get(label)
        if name is not None:
            fields.setdefault(name, value.strip())
        elif label:
            other.setdefault(label, value.strip())
    return fields, other


@dataclass(frozen=True)
class PipelineDetail:
    """A 4103 record read: ``context`` (:func:`parse_context_info` fields), ``other_context``
    (unmapped labels), ``payload`` (cut to the bound), ``payload_truncated``, ``user_data``."""

    context: dict
    other_context: dict
    payload: str
    payload_truncated: bool
    user_data: str


def pipeline_detail(event: Event, max_payload: int = 1 << 20) -> Optional[PipelineDetail]:
    """Read a PowerShell 4103 record (``None`` for any other event). ``Payload`` is cut to
    ``max_payload`` characters (``payload_truncated`` says so)."""
    if event.event_id != 4103 or event.provider != POWERSHELL_PROVIDER:
        return None
    d = event.data
    ctx, other = parse_context_info(d.get("ContextInfo") or "")
    payload = d.get("Payload") or ""
    return PipelineDetail(ctx, other, payload[:max_payload], len(payload) > max_payload,
                          d.get("UserData") or "")

