"""Alerts: what a Sigma rule or correlation reports, as JSON lines or as a SysmonX event.

An :class:`Alert` is produced by :class:`~sysmonx.detection.stage.DetectionStage` for every
detection-rule match (unless a correlation consumes the rule without ``generate``) and for every
correlation that fires. Two renderings:

* :meth:`Alert.to_json`: one JSON object per line (UTF-8, no raw control character, so no value
  can forge a line): ``type`` (``sigma_alert``), ``rule_id``, ``title``, ``level``, ``status``,
  ``kind`` (``detection`` or the correlation type), ``attack`` (what the ATT&CK tags name:
  ``{"tactics": ["Defense Evasion", ...], "techniques": ["T1059.001", ...]}``,
  :func:`attack_info`; empty lists when none), ``tags`` (all, as written), ``description``,
  ``author`` (strings, ``null`` when the rule has none), ``references``, ``falsepositives``
  (lists of strings, ``[]`` when none): the rule's own text for triage, each string cut to
  :data:`MAX_META_CHARS` characters with ``…`` appended and at most :data:`MAX_META_ITEMS`
  items (:func:`rule_text`); ``time`` (for a detection the matched event's
  System/TimeCreated: when its record was written, which can follow the activity's own time,
  the event's ``UtcTime``, by seconds; for a correlation the window end), then for a
  correlation only ``window_start`` and ``window_end`` (the times in Windows Sysmon's
  SystemTime format, 7 fractional digits, ``2021-11-18T07:40:46.1574090Z``; nothing is lost:
  Windows counts 100 ns ticks and Sysmon for Linux microseconds), ``computer``, for a
  correlation only ``group`` (group-by field -> value), ``event_count``, ``record_ids`` (of
  the matched events, at most ``max_alert_records``, oldest first), ``event_ids``, for a
  correlation only ``channels`` (its events' System/Channel, distinct, in order of
  appearance, a JSON list: what finds its records with ``computer`` and ``record_ids``;
  ``""`` for an event without a channel; a detection's is ``event.Channel``), ``rules`` (its
  referenced rules) and ``value`` (its aggregate), then
  ``fields`` (key fields of the matched event: the fields the rule tests, enrichment fields
  included, with the values it matched on, plus the usual identity fields, or the group
  values of a correlation), ``source_file`` (the recorded file
  the matched event was read from, its path as given on the command line or found in a folder
  given there; ``null`` for live events, and ``null`` by design for correlations: their events
  may come from several files, and a correlation keeps only its events' times, record ids and
  event ids, not their files) and ``event`` (the whole matched event, :func:`matched_event`:
  ``{"EventID", "EventRecordID", "TimeCreated", "Provider", "Channel", "Computer",
  "EventData": {every field in order}}``, at most :data:`MAX_EVENT_FIELDS` fields, each value
  cut to ``max_field_chars`` with ``…`` appended; ``null`` for correlations). Every value is a
  JSON string inside its own key, so no value can add or change a field.
* :meth:`Alert.to_event`: a SysmonX event for the XML/JSON streams, provider ``SysmonX``, channel
  ``SysmonX/Alerts``, EventID :data:`SIGMA_ALERT_EVENT_ID` (1000, ``SigmaAlert``: outside Sysmon's
  1-29 and 255), Level from the Sigma level (critical 1, high 2, medium 3, low and
  informational 4), TimeCreated the alert's ``time``, EventData in this order: ``RuleId``,
  ``RuleTitle``, ``RuleLevel``, ``RuleStatus``, ``RuleKind``, ``Tactics``, ``Techniques``
  (``attack``'s lists joined with ``,``), ``Tags``, ``RuleDescription``, ``RuleAuthor``,
  ``RuleReferences``, ``RuleFalsePositives`` (the lists' items joined with ``; ``, each item's
  white space runs made one space; empty when the rule has none), ``WindowStart``,
  ``WindowEnd`` (a correlation's only; SystemTime form, as the event's TimeCreated),
  ``EventCount``, ``RecordIds``, ``EventIds``, ``Channels`` (the matched events' System/Channel,
  distinct, comma-separated, a ``%`` or ``,`` in a name written ``%25`` or ``%2C``:
  :func:`join_channels`, read back by :func:`split_channels`; with ``Computer`` and
  ``RecordIds`` what finds the records, also when the matched record itself is not written, a
  Security record under ``--non-sysmon drop``), ``Rules``, ``Value``, ``Group`` (the last three
  a correlation's only; ``name=value; ...``), ``SourceFile`` (only when the matched event was
  read from a file: its path, as in ``source_file``), then each key field under its own name
  (a name that collides with one above is skipped). The whole matched event is not repeated
  here: in the event stream it is the event just before the alert.

``source_file`` answers what ``record_ids`` alone cannot in a replay of a folder: EventRecordIDs
restart in every file. The same path is written by one process and by ``--jobs``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import orjson

from ..core.native import speedups as _speedups
from ..event import SIGMA_ALERT_PROVIDER, Event, join_channels, split_channels

__all__ = ["Alert", "SIGMA_ALERT_EVENT_ID", "SIGMA_ALERT_NAME", "ALERT_PROVIDER",
           "ALERT_CHANNEL", "MAX_EVENT_FIELDS", "matched_event", "source_of",
           "LEVEL_TO_WINDOWS", "LEVELS", "attack_tags", "MAX_META_CHARS", "MAX_META_ITEMS",
           "register_rules", "rule_meta", "rule_text", "system_time", "attack_info", "TACTICS",
           "join_channels", "split_channels"]

#: EventID of the SysmonX ``SigmaAlert`` event (outside Sysmon's range).
SIGMA_ALERT_EVENT_ID = 1000
SIGMA_ALERT_NAME = "SigmaAlert"
ALERT_PROVIDER = SIGMA_ALERT_PROVIDER
ALERT_CHANNEL = "SysmonX/Alerts"
#: Sigma levels, most severe last.
LEVELS = ("informational", "low", "medium", "high", "critical")
#: Sigma level -> Windows System/Level (1 critical, 2 error, 3 warning, 4 information).
LEVEL_TO_WINDOWS = {"critical": 1, "high": 2, "medium": 3, "low": 4, "informational": 4}

#: fields of the matched event copied into an alert's ``event`` (a JSON event may carry any
#: number; Sysmon's largest event has 24).
MAX_EVENT_FIELDS = 256

#: a rule's description, author, and each reference and false positive, cut to this many
#: characters in alerts (``…`` appended; the key fields' default bound).
MAX_META_CHARS = 4096
#: references or false positives of a rule listed in an alert (SigmaHQ's rules have at most 16).
MAX_META_ITEMS = 64

_FIXED = ("RuleId", "RuleTitle", "RuleLevel", "RuleStatus", "RuleKind", "Tactics",
          "Techniques", "Tags", "RuleDescription", "RuleAuthor", "RuleReferences", "RuleFalsePositives",
          "WindowStart", "WindowEnd", "EventCount", "RecordIds", "EventIds", "Channels", "Rules",
          "Value",
          "Group", "SourceFile")


@dataclass
class Alert:
    """One alert.

    Attributes:
        rule_id: the rule's id (or name, or title when it has neither).
        title, level, status: rule metadata (``""`` when absent).
        kind: ``detection`` or the correlation type (``event_count``, ``temporal_ordered`` ...).
        tags: every rule tag as written (``attack.t1059.001``, ``cve.2021-44228`` ...).
        window_start, window_end: canonical UTC times (``...nnnnnnnnnZ``) of the first and last
            matched event (equal for a detection).
        computer: System/Computer of the (last) matched event.
        group: group-by field -> value of a correlation (``{}`` for a detection).
        record_ids: EventRecordIDs of the matched events, oldest first (bounded).
        event_count: how many events the alert covers (may exceed ``len(record_ids)``).
        event_ids: EventIDs of the matched events (distinct, in order of appearance).
        rules: for a correlation, the referenced rules (id or name).
        value: a correlation's aggregate (count, distinct values, sum, average, percentile).
        fields: key fields of the matched event (field -> value).
        source_file: path of the recorded file the matched event came from (``Event.origin``),
            ``None`` for live events and correlations.
        event: the matched event (:func:`matched_event`), ``None`` for correlations.
    """

    rule_id: str
    title: str
    level: str
    status: str
    kind: str
    tags: tuple = ()
    window_start: str = ""
    window_end: str = ""
    computer: str = ""
    group: dict = field(default_factory=dict)
    record_ids: tuple = ()
    event_count: int = 1
    event_ids: tuple = ()
    rules: tuple = ()
    value: Optional[float] = None
    fields: dict = field(default_factory=dict)
    source_file: Optional[str] = None
    event: Optional[dict] = None
    #: what this is in the pipeline (:mod:`sysmonx.interfaces`).
    item_kind: ClassVar[str] = "alert"
    #: a correlation's events' channels, set on the alert by the correlation engine (not a
    #: dataclass field: the compiled detection path builds detection alerts from exactly the
    #: fields above); read through :attr:`channels`.
    correlation_channels: ClassVar[tuple] = ()

    @property
    def channels(self) -> tuple:
        """System/Channel of the matched events (distinct, in order of appearance; ``""``
        for an event without one): a detection's from its matched event, a correlation's as
        the correlation engine collected them (``()`` when it did not)."""
        if self.event is not None:
            return (self.event.get("Channel") or "",)
        return self.correlation_channels

    @property
    def attack(self) -> dict:
        """What the ATT&CK tags name: :func:`attack_info` of :attr:`tags`."""
        return attack_info(self.tags)

    @property
    def time(self) -> str:
        """When the alert happened: the window end (for a detection the matched event's
        System/TimeCreated, when its record was written; the activity's own time is the
        event's ``UtcTime`` field where Sysmon records one)."""
        return self.window_end

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples for lists), keys in the documented order; a detection
        (``kind`` ``detection``) has no ``window_start``, ``window_end``, ``group``, ``rules``
        or ``value`` (they describe a correlation)."""
        d = {
            "type": "sigma_alert", "rule_id": self.rule_id, "title": self.title,
            "level": self.level, "status": self.status, "kind": self.kind,
            "attack": attack_info(self.tags), "tags": self.tags,
            **rule_meta(self.rule_id),
            "time": system_time(self.window_end)}
        if self.kind == "detection":
            d.update({"computer": self.computer, "event_count": self.event_count,
                      "record_ids": self.record_ids, "event_ids": self.event_ids})
        else:
            d.update({"window_start": system_time(self.window_start),
                      "window_end": system_time(self.window_end),
                      "computer": self.computer, "group": self.group,
                      "event_count": self.event_count, "record_ids": self.record_ids,
                      "event_ids": self.event_ids, "channels": self.channels,
                      "rules": self.rules, "value": self.value})
        d.update({"fields": self.fields, "source_file": self.source_file, "event": self.event})
        return d

    def to_json(self) -> bytes:
        """One JSON line (with the trailing newline): :meth:`to_dict` as orjson writes it (no
        white space), its first keys (``type`` ... ``tags``: the rule's, the same for each of
        its alerts, with the rule's description ... falsepositives) serialised once per rule and
        remembered until rules are registered again."""
        key = (self.rule_id, self.title, self.level, self.status, self.kind, self.tags)
        head = _HEADS.get(key)
        if head is None:
            head = orjson.dumps({
                "type": "sigma_alert", "rule_id": self.rule_id, "title": self.title,
                "level": self.level, "status": self.status, "kind": self.kind,
                "attack": attack_info(self.tags), "tags": self.tags,
                **rule_meta(self.rule_id)})[:-1] + b","
            if len(_HEADS) >= 65536:
                _HEADS.clear()
            _HEADS[key] = head
        end = self.window_end
        if len(end) == 30 and end[29] == "Z":  # system_time, inlined (once per alert)
            end = end[:27] + "Z"
        if self.kind == "detection":
            return head + orjson.dumps({
                "time": end, "computer": self.computer, "event_count": self.event_count,
                "record_ids": self.record_ids, "event_ids": self.event_ids,
                "fields": self.fields, "source_file": self.source_file, "event": self.event},
                option=orjson.OPT_APPEND_NEWLINE)[1:]
        start = end if self.window_start is self.window_end else system_time(self.window_start)
        return head + orjson.dumps({
            "time": end, "window_start": start,
            "window_end": end, "computer": self.computer, "group": self.group,
            "event_count": self.event_count, "record_ids": self.record_ids,
            "event_ids": self.event_ids, "channels": self.channels, "rules": self.rules,
            "value": self.value, "fields": self.fields, "source_file": self.source_file, "event": self.event},
            option=orjson.OPT_APPEND_NEWLINE)[1:]

    def to_event(self, record_id: Optional[int] = None) -> Event:
        """The alert as a SysmonX ``SigmaAlert`` event (see module docstring)."""
        tactics, techniques = _attack_fields(self.tags)
        data = {
            "RuleId": self.rule_id, "RuleTitle": self.title, "RuleLevel": self.level,
            "RuleStatus": self.status, "RuleKind": self.kind, "Tactics": tactics,
            "Techniques": techniques, "Tags": ",".join(self.tags), **_meta_fields(self.rule_id),
        }
        if self.kind != "detection":
            data.update({
                "WindowStart": system_time(self.window_start),
                "WindowEnd": system_time(self.window_end)})
        data["EventCount"] = str(self.event_count)
        data["RecordIds"] = ",".join(str(r) for r in self.record_ids)
        data["EventIds"] = ",".join(str(i) for i in self.event_ids)
        data["Channels"] = join_channels(self.channels)
        if self.kind != "detection":
            data.update({
                "Rules": ",".join(self.rules),
                "Value": "" if self.value is None else _num(self.value),
                "Group": "; ".join(f"{k}={'' if v is None else v}"
                                   for k, v in self.group.items())})
        if self.source_file is not None:
            data["SourceFile"] = self.source_file
        for k, v in self.fields.items():
            if k not in data and v is not None:
                data[k] = str(v)
        return Event(SIGMA_ALERT_EVENT_ID, data, provider=ALERT_PROVIDER, provider_guid=None,
                     version=3, level=LEVEL_TO_WINDOWS.get(self.level, 4), task=0, opcode=0,
                     keywords="0x0", time_created=self.window_end, record_id=record_id,
                     process_id=None, thread_id=None, channel=ALERT_CHANNEL,
                     computer=self.computer)


_alert_fields = getattr(_speedups, "alert_fields", None)


def matched_event(event: Event, limit: int) -> dict:
    """The matched event as an alert carries it: ``{"EventID": int, "EventRecordID": int or
    None, "TimeCreated": str, "Provider": str, "Channel": str, "Computer": str, "EventData":
    {field: value}}``: the System values that find the record (TimeCreated in
    :func:`system_time`'s form: when the record was written, the alert's ``time``; Provider
    the System/Provider Name; each ``""`` when the event has none), then EventData in the
    event's order, at most :data:`MAX_EVENT_FIELDS` fields (``None`` values left out), each
    value longer than ``limit`` characters cut to ``limit`` with ``…`` appended (the rule of
    the key fields). ``_speedups.sigma_alerts`` builds the same dict in C."""
    data = event.data
    names = tuple(data)
    if len(names) > MAX_EVENT_FIELDS:
        names = names[:MAX_EVENT_FIELDS]
    fields = _alert_fields(data, names, limit) if _alert_fields is not None else None
    if fields is None:
        fields = {n: v if len(v) <= limit else v[:limit] + "…"
                  for n in names if (v := data[n]) is not None}
    return {"EventID": event.event_id, "EventRecordID": event.record_id,
            "TimeCreated": system_time(event.time_created or ""),
            "Provider": event.provider or "", "Channel": event.channel or "",
            "Computer": event.computer or "", "EventData": fields}


def source_of(event: Event) -> Optional[str]:
    """The path of the recorded file ``event`` was read from (``origin[0]`` as a string), or
    ``None`` for a live event."""
    origin = event.origin
    return None if not origin or origin[0] is None else str(origin[0])


#: rule reference (id, else name, else title) -> rule_text's dict (register_rules).
_META: dict = {}
_NO_META: dict = {"description": None, "author": None, "references": [], "falsepositives": []}


def _cut(v: Any) -> Optional[str]:
    if v is None:
        return None
    v = str(v)
    return v if len(v) <= MAX_META_CHARS else v[:MAX_META_CHARS] + "…"


def rule_text(rule: Any) -> dict:
    """A Sigma rule's texts as its alerts carry them: ``{"description": str or None,
    "author": str or None, "references": [str], "falsepositives": [str]}`` (Sigma's field
    names, read from the pySigma rule's attributes of those names), each string cut to
    :data:`MAX_META_CHARS` characters with ``…`` appended, at most :data:`MAX_META_ITEMS`
    items per list."""
    return {"description": _cut(getattr(rule, "description", None)),
            "author": _cut(getattr(rule, "author", None)),
            "references": [_cut(x) for x in
                           list(getattr(rule, "references", None) or ())[:MAX_META_ITEMS]],
            "falsepositives": [_cut(x) for x in
                               list(getattr(rule, "falsepositives", None)
                                    or ())[:MAX_META_ITEMS]]}


def register_rules(texts: dict) -> None:
    """Make rules' texts known to their alerts: ``texts`` maps a rule's reference (an alert's
    ``rule_id``: the rule's id, else name, else title) to :func:`rule_text`'s dict. The
    detection stage registers its rules' texts when it is built or read from the rule cache
    (which stores them, so a cached stage never rebuilds a pySigma rule for them); a later
    stage's rule with the same reference replaces the earlier one."""
    _META.update(texts)
    _HEADS.clear()
    _EVENT_META.clear()


def rule_meta(rule_id: str) -> dict:
    """The texts registered for ``rule_id`` (:func:`register_rules`, shaped as
    :func:`rule_text`); ``None`` and empty lists for a rule not registered."""
    return _META.get(rule_id, _NO_META)


_EVENT_META: dict = {}


def _meta_fields(rule_id: str) -> dict:
    """Event 1000's RuleDescription ... RuleFalsePositives for ``rule_id`` (memorised)."""
    r = _EVENT_META.get(rule_id)
    if r is None:
        m = rule_meta(rule_id)
        r = {"RuleDescription": m["description"] or "", "RuleAuthor": m["author"] or "",
             "RuleReferences": "; ".join(" ".join(x.split()) for x in m["references"]),
             "RuleFalsePositives": "; ".join(" ".join(x.split())
                                             for x in m["falsepositives"])}
        if len(_EVENT_META) < 65536:
            _EVENT_META[rule_id] = r
    return r


def system_time(t: str) -> str:
    """``2019-04-18T16:55:37.014980123Z`` -> ``2019-04-18T16:55:37.0149801Z``: a canonical
    UTC time (9 fractional digits) in Sysmon's SystemTime format (7, cut like Windows' 100 ns
    ticks); any other string unchanged."""
    if len(t) == 30 and t[10] == "T" and t[-1] == "Z":
        return t[:27] + "Z"
    return t


_ATTACK: dict = {}
#: (rule_id, title, level, status, kind, tags) -> the JSON line's first keys, ending in ``,``.
_HEADS: dict = {}


def attack_tags(tags: tuple) -> tuple:
    """The ``attack.*`` tags of ``tags`` (memorised per tag tuple)."""
    r = _ATTACK.get(tags)
    if r is None:
        r = tuple(t for t in tags if t.lower().startswith("attack."))
        if len(_ATTACK) < 65536:
            _ATTACK[tags] = r
    return r



#: ATT&CK Enterprise tactics as Sigma tags spell them (``attack.<short name>``) -> the
#: tactic's name as ATT&CK writes it (https://attack.mitre.org/tactics/enterprise/): the 14 of
#: ATT&CK up to v18 and the two that v19 split Defense Evasion into (Stealth, Defense
#: Impairment), which current SigmaHQ rules already use (``attack.stealth``,
#: ``attack.defense-impairment``); rules written before v19 keep ``attack.defense-evasion``.
TACTICS = {
    "reconnaissance": "Reconnaissance", "resource-development": "Resource Development",
    "initial-access": "Initial Access", "execution": "Execution", "persistence": "Persistence",
    "privilege-escalation": "Privilege Escalation", "defense-evasion": "Defense Evasion",
    "credential-access": "Credential Access", "discovery": "Discovery",
    "lateral-movement": "Lateral Movement", "collection": "Collection",
    "command-and-control": "Command and Control", "exfiltration": "Exfiltration",
    "impact": "Impact", "stealth": "Stealth", "defense-impairment": "Defense Impairment"}
_INFO: dict = {}
_TECHNIQUE = re.compile(r"t\d{4}(?:\.\d{3})?")


def attack_info(tags: tuple) -> dict:
    """What a rule's ATT&CK tags name: ``{"tactics": [tactic name, ...], "techniques":
    [technique ID, ...]}``, each in the order of the tags, without repeats: a tactic tag
    (``attack.defense-evasion``, one of :data:`TACTICS`; older rules' ``attack.defense_evasion``
    alike) gives its name (``Defense
    Evasion``), a technique tag (``attack.t1059.001``) its ID upper-case (``T1059.001``).
    Other ``attack.*`` tags (groups ``attack.g0010``, software ``attack.s0002``, a tactic
    ATT&CK Enterprise does not have) and every other tag stay in ``tags`` only (Sigma's tag
    conventions, https://github.com/SigmaHQ/sigma-specification, "Tags"). Memorised per tag
    tuple; the lists are tuples (written as JSON arrays)."""
    r = _INFO.get(tags)
    if r is None:
        tactics: list = []
        techniques: list = []
        for t in tags:
            low = t.lower()
            if not low.startswith("attack."):
                continue
            name = low[7:]
            tactic = TACTICS.get(name.replace("_", "-"))
            if tactic is not None:
                if tactic not in tactics:
                    tactics.append(tactic)
            elif _TECHNIQUE.fullmatch(name) and name.upper() not in techniques:
                techniques.append(name.upper())
        r = {"tactics": tuple(tactics), "techniques": tuple(techniques)}
        if len(_INFO) < 65536:
            _INFO[tags] = r
    return r


def _attack_fields(tags: tuple) -> tuple:
    """Event 1000's ``Tactics`` and ``Techniques``: :func:`attack_info`'s lists joined with
    ``,``."""
    info = attack_info(tags)
    return ",".join(info["tactics"]), ",".join(info["techniques"])


def _num(v: float) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)
