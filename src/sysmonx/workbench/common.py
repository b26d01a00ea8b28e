"""What the workbench commands share: filter descriptions, technique IDs in names, bounded
counters and the replay that feeds them."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Callable, Iterable, Optional, Sequence

from ..configmodel import Config, Filter, RuleSet
from ..core.errors import ReadError
from ..interfaces import Stage

__all__ = ["TECHNIQUE_RE", "techniques_in", "FilterIndex", "BoundedCounter", "replay_through",
           "quoted"]


def quoted(value: str) -> str:
    """``value`` in single quotes as written (backslashes kept single, as in the config), or
    Python's escaped form when it holds characters that do not print."""
    return f"'{value}'" if value.isprintable() else repr(value)

#: An ATT&CK technique or sub-technique ID inside a longer text: ``T1055``, ``T1055.012``.
#: Matches every common naming scheme of config RuleNames and Sigma tags:
#: ``technique_id=T1036,technique_name=...`` (sysmon-modular), ``T1089,Tamper-Defender``
#: (SwiftOnSecurity), ``MitreRef=T1055`` and ``attack.t1059.001`` (Sigma), case-insensitive.
#: The ID must stand alone (no letter or digit right before the ``T`` or after the digits).
TECHNIQUE_RE = re.compile(r"(?<![A-Za-z0-9])[Tt](\d{4})(?:\.(\d{3}))?(?![0-9])")


def techniques_in(text: Optional[str]) -> list[str]:
    """The ATT&CK technique IDs named in ``text``, upper case (``T1059.001``), in order of
    appearance, each once. ``None`` or ``-`` give ``[]``.

    >>> techniques_in("technique_id=T1036,technique_name=Masquerading")
    ['T1036']
    >>> techniques_in("attack.t1059.001")
    ['T1059.001']
    """
    if not text or text == "-":
        return []
    out: list[str] = []
    for m in TECHNIQUE_RE.finditer(text):
        tid = "T" + m.group(1) + ("." + m.group(2) if m.group(2) else "")
        if tid not in out:
            out.append(tid)
    return out


class FilterIndex:
    """Stable positions of a config's rule sets and filters, and their JSON descriptions.

    Filters are numbered in document order across the whole config (``0..n-1``), rule sets
    likewise; identity is the model object (two identical filters are distinct).

    Args:
        config: a loaded :class:`~sysmonx.configmodel.Config`.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.rule_sets: list[RuleSet] = list(config.rule_sets)
        self.filters: list[tuple[RuleSet, Filter]] = [
            (rs, f) for rs in self.rule_sets for f in rs.filters]
        self._set_pos = {id(rs): i for i, rs in enumerate(self.rule_sets)}
        self._filter_pos = {id(f): i for i, (_, f) in enumerate(self.filters)}

    def set_pos(self, rs: RuleSet) -> int:
        """Position of rule set ``rs``."""
        return self._set_pos[id(rs)]

    def filter_pos(self, f: Filter) -> int:
        """Position of filter ``f``."""
        return self._filter_pos[id(f)]

    def describe_set(self, i: int) -> dict[str, Any]:
        """``{"file", "line", "tag", "event_id", "onmatch", "relation", "group_name",
        "filters"}`` of rule set ``i`` (``line`` ``None`` when unknown)."""
        rs = self.rule_sets[i]
        return {"file": self.config.path, "line": rs.line, "tag": rs.tag,
                "event_id": rs.event_id, "onmatch": rs.onmatch, "relation": rs.relation,
                "group_name": rs.group_name, "filters": len(rs.filters)}

    def describe_filter(self, i: int) -> dict[str, Any]:
        """``{"file", "line", "event_id", "rule_name", "tag", "onmatch", "field",
        "condition", "value", "rule_set_line"}`` of filter ``i``; ``rule_name`` is the
        inherited RuleName (``""`` when none), ``event_id`` the id its rule set is bound to."""
        rs, f = self.filters[i]
        return {"file": self.config.path, "line": f.line, "event_id": rs.event_id,
                "rule_name": f.name, "tag": rs.tag, "onmatch": rs.onmatch, "field": f.field,
                "condition": f.condition, "value": f.value, "rule_set_line": rs.line}

    def location(self, i: int) -> str:
        """``file:line`` of filter ``i``."""
        f = self.filters[i][1]
        return f"{self.config.path}:{f.line}" if f.line else self.config.path


class BoundedCounter:
    """A :class:`collections.Counter` of strings with bounded memory: at most ``limit``
    distinct keys holding at most ``max_chars`` characters together. Once full, new keys are
    counted together in :attr:`other` (keys already held keep counting exactly), so memory stays
    bounded whatever the input (hostile logs with huge unique values included).
    ``most_common`` is exact for the keys it holds.

    Args:
        limit: distinct keys kept (default 100,000).
        max_chars: characters of the keys kept, together (default 16 Mi).
    """

    def __init__(self, limit: int = 100_000, max_chars: int = 16 << 20) -> None:
        self.limit = limit
        self.max_chars = max_chars
        self.chars = 0
        self.counts: Counter[str] = Counter()
        self.other = 0

    def add(self, key: str, n: int = 1) -> None:
        """Count ``key`` ``n`` times."""
        c = self.counts
        if key in c:
            c[key] += n
        elif len(c) < self.limit and self.chars + len(key) <= self.max_chars:
            c[key] = n
            self.chars += len(key)
        else:
            self.other += n

    def most_common(self, n: int) -> list[tuple[str, int]]:
        """The ``n`` most frequent keys with their counts (ties in first-seen order)."""
        return self.counts.most_common(n)


def replay_through(paths: Sequence[str], stages: Sequence[Stage], *,
                   config: Optional[Config] = None, engine: Any = None,
                   engine_options: Any = None, enrich_fields: Iterable[str] = (),
                   input_format: Optional[str] = None,
                   on_error: Optional[Callable[[ReadError], None]] = None) -> Any:
    """Read ``paths`` as ``sysmonx replay --config CONFIG`` reads them (same readers,
    duplicate removal, clock check, Sysmon gate, enrichment and filter) and hand every Sysmon
    event to ``stages``, in order, right before the replay's filter: they see each event with
    the enrichment fields the replay computes for it (:mod:`sysmonx.stages.enrich`: the
    ancestry from the process tree of the log read so far), whatever the filter then decides.

    Args:
        config: the config the replay's own filter applies (``None``: none); its per-EventID
            decisions are the returned stats' ``included``/``excluded``, which the workbench
            compares with its own counts (a replay-side cross-check).
        engine: the compiled engine for ``config`` (compiled here when omitted).
        engine_options: the replay's :class:`~sysmonx.filtering.engine.EngineOptions`.
        enrich_fields: enrichment fields to compute besides ``config``'s (the other config of
            a diff).
    Returns:
        the :class:`~sysmonx.pipeline.replay.ReplayStats`.
    Raises:
        FileNotFoundError: a path that does not exist.
    """
    from ..filtering.engine import EngineOptions
    from ..pipeline import Replayer, ReplayOptions
    options = ReplayOptions(config=config, input_format=input_format,
                            engine_options=engine_options if engine_options is not None
                            else EngineOptions(),
                            enrich_fields=frozenset(enrich_fields))
    replayer = Replayer(options, None, on_error=on_error, engine=engine, before_filter=stages)
    try:
        stats = replayer.run(list(paths))
        replayer.finish()
    finally:
        replayer.close()
    return stats
