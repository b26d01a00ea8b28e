"""Alert triage: keep only the Sigma alerts that matter (``--min-level``, ``--technique``,
``--tag``), the selection Hayabusa (``--min-level``) and Chainsaw (``--level``) offer.

:class:`AlertTriage` is plain data (it travels to ``--jobs`` workers) with one decision,
:meth:`AlertTriage.keeps`, over a rule's level and tags; it is applied to

* the alerts a run makes (:class:`~sysmonx.detection.alerts.Alert`), *after* the detection
  stage built them: the correlation engine sees every detection hit first, so a low-level base
  rule still feeds a high-level correlation that is kept;
* SysmonX ``SigmaAlert`` events (EventID 1000, provider ``SysmonX``) read back from an input
  (a replayed SysmonX output), by their ``RuleLevel`` and ``Tags`` fields.

Nothing else is touched: Sysmon events and SysmonX's other events go out as the config decides.
The stage that applies it is ``alert-triage`` (:class:`~sysmonx.detection.stages.AlertTriageStage`).

Selection (Sigma's terms, https://github.com/SigmaHQ/sigma-specification, "Level", "Tags"):

* ``min_level``: one of :data:`~sysmonx.detection.alerts.LEVELS` (informational < low < medium
  < high < critical); an alert is kept when its rule's level is that or above. An alert whose
  rule has no level (or a level Sigma does not define) is held back by every ``min_level``:
  it cannot be shown to reach it (leave the option out to see every alert).
* ``tags``: Sigma tags, lower-cased (``attack.credential-access``, ``attack.t1003``,
  ``cve.2021-44228``); an ``attack.*`` tag is compared with ``_`` read as ``-``
  (``attack.credential_access`` is ``attack.credential-access``, as older rules spell it).
  A selected tag selects itself and every tag below it: ``attack.t1003`` selects
  ``attack.t1003.001``; a sub-technique does not select its parent. An alert is kept when one
  of its rule's tags is selected (any of them: the selections are alternatives). ``--technique
  T1003`` is ``--tag attack.t1003``.
* both given: an alert is kept when it passes both.
* a tactic ATT&CK replaced (:data:`TACTIC_SUCCESSORS`: ``attack.defense-evasion``, which
  ATT&CK v19 split into Stealth and Defense Impairment) selects its successors' tags too, so
  rules written before and after the change are both selected; :attr:`AlertTriage.successors`
  says which were added (for a note), :meth:`AlertTriage.unmatched` which selected tags no
  loaded rule has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from ..core.errors import UsageError
from ..event import SIGMA_ALERT_EVENT_ID, SIGMA_ALERT_PROVIDER, Event
from .alerts import LEVELS

__all__ = ["AlertTriage", "TriageError", "is_alert_event", "TACTIC_SUCCESSORS"]

#: ATT&CK Enterprise tactics that a release replaced, as Sigma tags name them
#: (``attack.<short name>``) -> (the release, the tags of the tactics that replaced it). Data,
#: one row per change. Source: ATT&CK's release notes, https://attack.mitre.org/resources/updates/
#: (v19: Defense Evasion, TA0005, split into Stealth and Defense Impairment; SigmaHQ's rules
#: since then are tagged ``attack.stealth`` / ``attack.defense-impairment``).
TACTIC_SUCCESSORS: dict[str, tuple[str, tuple[str, ...]]] = {
    "attack.defense-evasion": ("ATT&CK v19", ("attack.stealth", "attack.defense-impairment")),
}

_RANK = {lv: i for i, lv in enumerate(LEVELS)}
_TECHNIQUE = re.compile(r"[Tt]\d{4}(?:\.\d{3})?")
_TAG = re.compile(r"[a-z0-9][a-z0-9_.\-]*")


class TriageError(UsageError):
    """A ``--min-level``, ``--technique`` or ``--tag`` value that is not valid (the message
    names the option and the value; a :class:`~sysmonx.core.errors.UsageError`, so also a
    ``ValueError``)."""


def is_alert_event(event: Event) -> bool:
    """True when ``event`` is a SysmonX ``SigmaAlert`` event (EventID 1000, provider
    ``SysmonX``), as :meth:`~sysmonx.detection.alerts.Alert.to_event` writes it."""
    return event.event_id == SIGMA_ALERT_EVENT_ID and event.provider == SIGMA_ALERT_PROVIDER


def _canonical(tag: str) -> str:
    tag = tag.strip().lower()
    return tag.replace("_", "-") if tag.startswith("attack.") else tag


@dataclass(frozen=True)
class AlertTriage:
    """Which alerts to keep (module docstring).

    Attributes:
        min_level: the lowest Sigma level kept, or ``None`` (every level, and no level).
        tags: canonical selected tags (``attack.t1003``, ``attack.credential-access``), empty
            for no selection on tags; a replaced tactic's successors included.
        successors: ``(tag given, release, successor tags)`` for each selected tactic that
            :data:`TACTIC_SUCCESSORS` names (their tags are in :attr:`tags`).
    """

    min_level: Optional[str] = None
    tags: tuple[str, ...] = ()
    successors: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    @classmethod
    def from_options(cls, min_level: Optional[str] = None, techniques: Iterable[str] = (),
                     tags: Iterable[str] = ()) -> Optional[AlertTriage]:
        """Build from command-line values: ``min_level`` a level name (any case);
        ``techniques`` and ``tags`` lists of values, each comma-separated
        (``T1003,T1059.001``; ``attack.credential_access``). Returns ``None`` when nothing
        is selected.

        Raises:
            TriageError: an unknown level, a technique not written ``Tnnnn`` or
                ``Tnnnn.nnn``, an empty or malformed tag.
        """
        level = None
        if min_level is not None:
            level = min_level.strip().lower()
            if level not in _RANK:
                raise TriageError(f"--min-level {min_level!r}: not a Sigma level (one of "
                                  + ", ".join(LEVELS) + ")")
        selected: list[str] = []
        for text in techniques:
            for part in text.split(","):
                part = part.strip()
                if not _TECHNIQUE.fullmatch(part):
                    raise TriageError(f"--technique {part!r}: not an ATT&CK technique ID "
                                      "(T1003, T1059.001)")
                selected.append("attack." + part.lower())
        for text in tags:
            for part in text.split(","):
                canon = _canonical(part)
                if not _TAG.fullmatch(canon) or canon.endswith("."):
                    raise TriageError(f"--tag {part.strip()!r}: not a Sigma tag "
                                      "(attack.credential-access, attack.t1003, cve.2021-44228)")
                selected.append(canon)
        if level is None and not selected:
            return None
        added = []
        for tag in list(selected):
            row = TACTIC_SUCCESSORS.get(tag)
            if row is not None:
                added.append((tag, row[0], row[1]))
                selected.extend(row[1])
        return cls(level, tuple(dict.fromkeys(selected)), tuple(added))

    def unmatched(self, rule_tags: Iterable[Iterable[str]]) -> list[str]:
        """The selected tags (as :attr:`tags` spells them, successors a replaced tactic added
        left out) that select none of ``rule_tags`` (each loaded rule's tags, as written); a
        replaced tactic counts as matched when one of its successors is."""
        added = {t for _, _, new in self.successors for t in new}
        found: set[str] = set()
        for tags in rule_tags:
            for tag in tags:
                canon = _canonical(tag)
                for sel in self.tags:
                    if canon == sel or canon.startswith(sel + "."):
                        found.add(sel)
        for old, _, new in self.successors:
            if found.intersection(new):
                found.add(old)
        return [t for t in self.tags if t not in found and t not in added]

    def keeps(self, level: Optional[str], tags: Iterable[str]) -> bool:
        """True when an alert of a rule with ``level`` (``None`` or ``""``: none) and ``tags``
        (as written) passes the selection."""
        if self.min_level is not None:
            rank = _RANK.get((level or "").lower())
            if rank is None or rank < _RANK[self.min_level]:
                return False
        if self.tags:
            for tag in tags:
                canon = _canonical(tag)
                for sel in self.tags:
                    if canon == sel or canon.startswith(sel + "."):
                        return True
            return False
        return True

    def keeps_item(self, item: Any) -> Optional[bool]:
        """The decision for a pipeline item: an :class:`~sysmonx.detection.alerts.Alert`
        (``item_kind == "alert"``) by its level and tags, a ``SigmaAlert`` event by its
        ``RuleLevel`` and ``Tags`` (``,``-separated) fields; ``None`` for anything else (not
        an alert: never held back)."""
        if item.__class__ is Event:
            if not is_alert_event(item):
                return None
            data = item.data
            tags = data.get("Tags") or ""
            return self.keeps(data.get("RuleLevel"), tags.split(",") if tags else ())
        if getattr(item, "item_kind", None) == "alert":
            return self.keeps(item.level, item.tags)
        return None

    def describe(self) -> str:
        """The selection as options, for summaries (``--min-level high --technique T1003
        --tag attack.credential-access``): a technique's tag is named as ``--technique``
        (``--tag attack.t1003`` and ``--technique T1003`` select the same)."""
        parts = []
        if self.min_level is not None:
            parts.append(f"--min-level {self.min_level}")
        techniques = [t[len("attack."):].upper() for t in self.tags
                      if t.startswith("attack.") and _TECHNIQUE.fullmatch(t[len("attack."):])]
        others = [t for t in self.tags
                  if not (t.startswith("attack.") and _TECHNIQUE.fullmatch(t[len("attack."):]))]
        if techniques:
            parts.append("--technique " + ",".join(techniques))
        if others:
            parts.append("--tag " + ",".join(others))
        return " ".join(parts)
