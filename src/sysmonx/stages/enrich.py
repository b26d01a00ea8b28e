"""The enrichment stage: SysmonX's extension fields (schema catalogue ``ENRICHMENT_FIELDS``),
computed once per event before the filter, so configs and Sigma rules can use them, and written
only when asked (``--enrich``).

=======================  ==================================================================
field                    source
=======================  ==================================================================
GrandparentImage,        the process tree the stream itself describes: every event 1 gives
GrandparentCommandLine,  ProcessGuid -> (Image, CommandLine, ParentProcessGuid), and its parent
AncestorImages           (ParentImage, ParentCommandLine) when the tree has no entry yet; so a
                         recorded Windows or Linux log gets them on replay as well as live.
                         The event's process is its ``ProcessGuid`` (``SourceProcessGuid`` for
                         8 and 10); for event 1 the ancestry starts at its ParentImage. Live,
                         a process started before the sensor is looked up in the sensor's
                         process cache (``host``).
ContainerId,             ``host`` only (the live sensor, :class:`~sysmonx.sensor.hostinfo.HostFacts`):
ContainerRuntime, MntNs, cgroup path, controlling terminal, audit session from ``/proc/PID``
PidNs, Tty, SessionId,   while it is still the same process; namespaces as read at the exec
FileType                 (the process cache's ``extra["ns"]``: tier A's exec record, tiers B/C's
                         ``/proc`` snapshot), else ``/proc/PID/ns``; the first bytes of Image.
                         Replay writes the documented unknown values.
=======================  ==================================================================

Unknown values (catalogue ``unknown``): ``-`` for text and for MntNs/PidNs, ``unknown`` for
ContainerId/ContainerRuntime (whose ``-`` means "on the host": the cgroup path was read and
names no container), ``0`` for SessionId. A field the event already carries (ShellCommand's own
``Tty``) is left as it is.

Output: :class:`EnrichStage` adds the fields into ``Event.data``; unless ``keep`` (``--enrich``),
:class:`EnrichStrip` (the last stage) removes what it added before the sinks, so Sysmon-compatible
output does not change a byte. Memory: the tree holds at most ``max_processes`` entries (least
recently used dropped first; about 300 bytes each).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Iterable, Optional

from ..core.registry import STAGES
from ..event import Event
from ..interfaces import Emit, Stage
from ..schema.catalogue import ENRICHMENT_FIELD_NAMES, ENRICHMENT_FIELDS

__all__ = ["EnrichStage", "EnrichStrip", "ANCESTRY_FIELDS", "HOST_FIELDS", "MAX_ANCESTORS",
           "HostLookup", "enrichment_wanted", "with_enrichment"]

MAX_ANCESTORS = 8
ANCESTRY_FIELDS = frozenset({"GrandparentImage", "GrandparentCommandLine", "AncestorImages"})
HOST_FIELDS = ENRICHMENT_FIELD_NAMES - ANCESTRY_FIELDS
_UNKNOWN = {f.name: f.unknown for f in ENRICHMENT_FIELDS}
_ORDER = [f.name for f in ENRICHMENT_FIELDS]
_ZERO_GUID = "{00000000-0000-0000-0000-000000000000}"

#: ``host(pid, guid, image) -> {field: value}`` for :data:`HOST_FIELDS`, and
#: ``host.ancestors(pid) -> [(image, command_line), ...]`` nearest first (optional attribute).
HostLookup = Callable[[int, str, str], "dict[str, str]"]


@STAGES.register
class EnrichStage(Stage):
    """Adds the enrichment fields to every Sysmon event that names a process.

    Args:
        fields: the fields to compute (default all); only :data:`ANCESTRY_FIELDS` cost nothing
            beyond the tree.
        host: live facts (:data:`HostLookup`), ``None`` on replay.
        keep: the fields stay in the output (``--enrich``); else :class:`EnrichStrip` removes
            them.
        max_processes: bound of the process tree.
    Attributes:
        enriched: events enriched; ``tree_size``: processes in the tree.
    """

    name = "enrich"
    summary = "SysmonX enrichment fields (GrandparentImage, AncestorImages, ContainerId ...)"
    stateful = True

    def __init__(self, fields: Optional[Iterable[str]] = None, host: Optional[HostLookup] = None,
                 keep: bool = False, max_processes: int = 200_000) -> None:
        wanted = ENRICHMENT_FIELD_NAMES if fields is None else \
            frozenset(fields) & ENRICHMENT_FIELD_NAMES
        self.fields = [f for f in _ORDER if f in wanted]
        self.ancestry = bool(ANCESTRY_FIELDS & wanted)
        self.host_fields = [f for f in self.fields if f in HOST_FIELDS]
        self.host = host
        self.keep = keep
        #: fields wanted whatever the config (the Sigma rules' ones), kept across reloads
        self.extra_fields: frozenset[str] = frozenset()
        self.max_processes = max_processes
        self.tree: OrderedDict[str, tuple[str, str, Optional[str]]] = OrderedDict()
        self.enriched = 0
        self._host_cache: OrderedDict[str, dict[str, str]] = OrderedDict()
        #: the last event enriched and the fields added to it (for EnrichStrip)
        self.last: tuple[Any, Any] = (None, ())

    @property
    def tree_size(self) -> int:
        """Processes the tree knows."""
        return len(self.tree)

    def _remember(self, guid: str, image: str, cmd: str, parent: Optional[str]) -> None:
        tree = self.tree
        if guid in tree:
            tree.move_to_end(guid)
        tree[guid] = (image, cmd, parent)
        if len(tree) > self.max_processes:
            tree.popitem(last=False)

    def _chain(self, start: Optional[str], first: Optional[tuple[str, str]],
               pid: Optional[int]) -> list[tuple[str, str]]:
        """Ancestors ``[(image, command line), ...]`` nearest first, from the tree (starting
        at ``first`` then the parent GUID ``start``), else from ``host.ancestors``."""
        out: list[tuple[str, str]] = [first] if first is not None else []
        seen = set()
        guid = start
        tree = self.tree
        while guid and len(out) < MAX_ANCESTORS and guid not in seen and guid != _ZERO_GUID:
            seen.add(guid)
            node = tree.get(guid)
            if node is None:
                break
            out.append((node[0], node[1]))
            guid = node[2]
        if not out and pid and self.host is not None:
            more = getattr(self.host, "ancestors", None)
            if more is not None:
                out = list(more(pid))[:MAX_ANCESTORS]
        return out[:MAX_ANCESTORS]

    def set_fields(self, fields: Iterable[str]) -> None:
        """Compute ``fields`` from now on (a reloaded config); the tree is kept either way."""
        wanted = frozenset(fields) & ENRICHMENT_FIELD_NAMES
        self.fields = [f for f in _ORDER if f in wanted]
        self.ancestry = bool(ANCESTRY_FIELDS & wanted)
        self.host_fields = [f for f in self.fields if f in HOST_FIELDS]

    def reload(self, config: Any) -> None:
        """A new config: compute what it filters on (all fields when ``keep``)."""
        if not self.keep:
            self.set_fields(enrichment_wanted(config) | self.extra_fields)

    def process(self, item: Any, emit: Emit) -> bool:
        """Enrich one event (other items pass untouched)."""
        if item.__class__ is not Event or not item.is_sysmon:
            return True
        data = item.data
        eid = item.event_id
        guid = data.get("ProcessGuid") or data.get("SourceProcessGuid") \
            or data.get("SourceProcessGUID")
        if guid is None:
            return True
        guid = guid.lower()
        if not self.fields:  # only the tree (a reload may ask for fields later)
            if eid == 1:
                parent = (data.get("ParentProcessGuid") or "").lower() or None
                self._remember(guid, data.get("Image", "-"), data.get("CommandLine", "-"),
                               parent)
            return True
        added: list[str] = []
        if eid == 1:
            parent = (data.get("ParentProcessGuid") or "").lower() or None
            self._remember(guid, data.get("Image", "-"), data.get("CommandLine", "-"), parent)
            if parent and parent not in self.tree and parent != _ZERO_GUID:
                self._remember(parent, data.get("ParentImage", "-"),
                               data.get("ParentCommandLine", "-"), None)
        pid_text = data.get("ProcessId") or data.get("SourceProcessId") or ""
        pid = int(pid_text) if pid_text.isdigit() else None
        if self.ancestry:
            if eid == 1:
                first = (data.get("ParentImage", "-"), data.get("ParentCommandLine", "-"))
                start = self.tree.get(guid, (None, None, None))[2]
                chain = self._chain(self.tree.get(start, (None, None, None))[2] if start
                                    else None, first, None)
                if start is None or start == _ZERO_GUID:
                    chain = [first]
            else:
                node = self.tree.get(guid)
                chain = self._chain(node[2] if node else None, None,
                                    None if node else pid)
            values = {
                "GrandparentImage": chain[1][0] if len(chain) > 1 else "-",
                "GrandparentCommandLine": chain[1][1] if len(chain) > 1 else "-",
                "AncestorImages": "|".join(c[0] for c in chain) if chain else "-",
            }
            for f in ("GrandparentImage", "GrandparentCommandLine", "AncestorImages"):
                if f in self.fields and f not in data:
                    data[f] = values[f]
                    added.append(f)
        if self.host_fields:
            facts = self._host_facts(guid, pid, data.get("Image") or data.get("SourceImage"))
            for f in self.host_fields:
                if f not in data:
                    data[f] = facts.get(f, _UNKNOWN[f])
                    added.append(f)
        self.enriched += 1
        self.last = (item, added)
        return True

    def _host_facts(self, guid: str, pid: Optional[int], image: Optional[str]
                    ) -> dict[str, str]:
        """Live facts of one process, looked up once per ProcessGuid."""
        cache = self._host_cache
        known = cache.get(guid)
        if known is not None:
            return known
        facts: dict[str, str] = {}
        if self.host is not None and pid:
            facts = self.host(pid, guid, image or "-")
        cache[guid] = facts
        if len(cache) > 65536:
            cache.popitem(last=False)
        return facts


@STAGES.register
class EnrichStrip(Stage):
    """The last stage when enrichment is not to be written: removes the fields
    :class:`EnrichStage` added to the event passing (fields the event carried stay)."""

    name = "enrich-strip"
    summary = "removes the enrichment fields before the outputs (without --enrich)"
    stateful = True

    def __init__(self, enrich: Optional[EnrichStage] = None) -> None:
        self.enrich = enrich

    def process(self, item: Any, emit: Emit) -> bool:
        """Strip what the enrichment stage added to ``item``."""
        if self.enrich is None:
            return True
        event, added = self.enrich.last
        if item is event:
            data = item.data
            for f in added:
                data.pop(f, None)
            self.enrich.last = (None, ())
        return True


def enrichment_wanted(config: Any = None, detection: Any = None, enrich: bool = False
                      ) -> frozenset[str]:
    """The enrichment fields a run must compute: all with ``enrich`` (``--enrich``), else those
    the config filters on (``Config.enrichment_fields_used``) and those the Sigma rules of
    ``detection`` reference (their compiled ``fields``)."""
    if enrich:
        return ENRICHMENT_FIELD_NAMES
    out: set[str] = set()
    if config is not None:
        out |= config.enrichment_fields_used()
    matcher = getattr(detection, "matcher", None)
    for rule in getattr(matcher, "compiled", ()) or ():
        out |= ENRICHMENT_FIELD_NAMES & set(getattr(rule, "fields", ()))
    return frozenset(out)


def with_enrichment(stages: list[Any], enrich: EnrichStage) -> list[Any]:
    """``stages`` with ``enrich`` inserted right before the filter stage (name ``filter``; at
    the front when there is none) and, unless ``enrich.keep``, :class:`EnrichStrip` last."""
    out = list(stages)
    at = next((i for i, s in enumerate(out) if getattr(s, "name", "") == "filter"), 0)
    out.insert(at, enrich)
    if not enrich.keep:
        out.append(EnrichStrip(enrich))
    return out
