"""The filter stage: the one place where a Sysmon config decides, RuleName is set and FieldSizes
truncates, for replay, the live sensor, following a log and console mode alike.

Per Sysmon event (other providers pass untouched; the gate before it decides about them):

1. decide with the compiled :class:`~sysmonx.filtering.engine.FilterEngine` (one decision closure
   per EventID, cached here);
2. excluded: counted, dropped;
3. included: RuleName set to the decided name (spec 3.6). An event that has a ``RuleName`` field
   gets the name in place; one without it gets ``RuleName`` as its first field unless the name is
   ``-`` (events 4, 16 and 255 are never filtered and get no name);
   a TamperFinding (201) whose ``Technique`` is ``config_weakened`` is kept whatever the config
   decides (RuleName ``-``): it reports the reload that put this very filter in force, and a
   configuration that excludes TamperFinding must not hide that it did (docs/RESILIENCE.md;
   the engine's decider for 201 does it, :func:`~sysmonx.filtering.engine.never_filtered`, so
   the workbench and ``config explain`` decide the same);
4. FieldSizes truncation after filtering (spec 3.9); never of that finding.

Without an engine (replay without ``--config``) events pass unchanged and are only counted. With
``trace`` (console mode, ``sysmonx -t``) each decision is also explained by the independent walk
of :mod:`sysmonx.filtering.explain` and emitted as a :class:`~sysmonx.interfaces.Trace` before the
event: one ``[R]`` summary line, or the full trace with ``trace="verbose"``; a disagreement with
the engine is printed as ``[R] MISMATCH``.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Callable, Optional

from ..configmodel import Config
from ..core import native
from ..core.registry import STAGES
from ..event import SYSMON_PROVIDERS, Event
from ..interfaces import Emit, Stage, Trace
from .engine import EngineOptions, FilterEngine

#: the compiled decider's type (``decide(event)`` as well as ``decide(data)``), and the
#: function that sets RuleName on an EVTX record's fields still kept as slices of its text
#: (``data["RuleName"] = name`` without making the dict; False when it did nothing)
_COMPILED_DECIDER: Optional[type] = None
_set_rule_name: Optional[Callable[[Event, str], bool]] = None
if native.speedups is not None and hasattr(native.speedups, "set_decider_event"):
    native.speedups.set_decider_event(Event)
    _COMPILED_DECIDER = native.speedups.FilterDecider
    _set_rule_name = native.speedups.set_rule_name

__all__ = ["FilterStage"]

_Decider = Callable[[dict[str, str]], "tuple[bool, Optional[str]]"]


#: How long after a reload an event that happened before it is still decided by the
#: configuration then in force (seconds): longer than any source's delay to the filter.
RELOAD_OVERLAP_S = 30.0


@STAGES.register
class FilterStage(Stage):
    """Sysmon's filter over the stream.

    Args:
        config: the configuration, or ``None``.
        options: engine choices (:class:`~sysmonx.filtering.engine.EngineOptions`).
        without_config: what ``config=None`` means: ``pass`` (replay: nothing filtered, RuleName
            as recorded) or ``defaults`` (live: Sysmon's per-type defaults, as Sysmon without
            rules).
        engine: an already compiled engine for ``config`` (shared by replay workers).
        trace: ``None``, ``summary`` or ``verbose`` (console mode).
    Attributes:
        included, excluded: Sysmon events per EventID.
    """

    name = "filter"
    summary = "Sysmon config semantics: include/exclude, RuleName, FieldSizes (one place)"

    def __init__(self, config: Optional[Config] = None,
                 options: Optional[EngineOptions] = None, *, without_config: str = "pass",
                 engine: Optional[FilterEngine] = None, trace: Optional[str] = None) -> None:
        if without_config not in ("pass", "defaults"):
            raise ValueError(f"without_config must be 'pass' or 'defaults', not "
                             f"{without_config!r}")
        if trace not in (None, "summary", "verbose"):
            raise ValueError(f"trace must be None, 'summary' or 'verbose', not {trace!r}")
        self.options = options if options is not None else EngineOptions()
        self.without_config = without_config
        self.trace = trace
        self.config = config
        self.engine = engine if engine is not None else self._compile(config)
        self._deciders: dict[int, _Decider] = {}
        #: after a reload: (the reload's time as a canonical TimeCreated string, the engine in
        #: force before it, when to forget it (monotonic s)); ``None`` otherwise
        self._before: Optional[tuple[str, Optional[FilterEngine], float]] = None
        self.included: Counter[int] = Counter()
        self.excluded: Counter[int] = Counter()
        # compiled: without an engine, a Sysmon event of an EventID counted before is counted
        # without a Python call (with one, the Python method decides: no extra call layer;
        # either callable stays right after a reload, the compiled one reads ``engine``)
        fast: Any = native.stage_fast("count", self, self._process_py)
        self.process = fast if self.engine is None else self._process_py  # type: ignore[method-assign]

    def _compile(self, config: Optional[Config]) -> Optional[FilterEngine]:
        if config is None and self.without_config == "pass":
            return None
        return FilterEngine(config, self.options)

    def reload(self, config: Optional[Config]) -> None:
        """Compile ``config`` and put it in force for the events that happen from now on (the
        plans the old engine compiled are stored first). An event that happened before the
        reload (its ``TimeCreated`` earlier) but reaches the filter after it (the live sensor
        holds events ~0.25 s to order them, some sources longer) is decided by the configuration
        in force when it happened, for :data:`RELOAD_OVERLAP_S` seconds: a reload that stops
        logging ProcessCreate does not hide the commands run just before it (the ``cp`` of the
        new config file), and events of the blind window are not logged after it."""
        if self.engine is not None:
            self.engine.save_plans()
        engine = self._compile(config)
        s, ns = divmod(time.time_ns(), 1_000_000_000)
        cut = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{ns // 1000:06d}000Z"
        self._before = (cut, self.engine, time.monotonic() + RELOAD_OVERLAP_S)
        self.config, self.engine, self._deciders = config, engine, {}

    def finish(self, emit: Emit) -> None:
        """End of the stream: the plans the engine compiled in this run are stored
        (:meth:`~sysmonx.filtering.engine.FilterEngine.save_plans`)."""
        if self.engine is not None:
            self.engine.save_plans()

    def raw_step(self) -> Optional[tuple[str, Any]]:
        """The compiled step over a record's text, without a trace or a reload's overlap:
        ``("count", self)`` without an engine (a Sysmon record is counted in ``included``);
        ``("filter", self)`` with one whose deciders are compiled (``_speedups.FilterDecider``:
        the record's decider decides it from its fields, RuleName set in them); else
        ``None`` (also for a subclass)."""
        if self.trace is not None or self._before is not None or type(self) is not FilterStage:
            return None
        if self.engine is None:
            return ("count", self)
        if _COMPILED_DECIDER is None or _set_rule_name is None:
            return None
        return ("filter", self)

    def process(self, item: Any, emit: Emit) -> bool:
        """Decide one Sysmon event (see the module docstring); other items pass."""
        return self._process_py(item, emit)

    def _process_py(self, item: Any, emit: Emit) -> bool:
        if item.__class__ is not Event or item.provider not in SYSMON_PROVIDERS:
            return True
        eid = item.event_id
        engine = self.engine
        before = self._before
        if before is not None and item.time_created and item.time_created < before[0]:
            engine = before[1]  # happened before the reload: the configuration then in force
            if engine is None:
                self.included[eid] += 1
                return True
            decide: Optional[_Decider] = engine.decider_for(eid)
        else:
            if before is not None and time.monotonic() > before[2]:
                self._before = None
            if engine is None:
                self.included[eid] += 1
                return True
            decide = self._deciders.get(eid)
            if decide is None:
                decide = self._deciders[eid] = engine.decider_for(eid)
        assert decide is not None
        # the compiled decider takes the Event itself: an EVTX record's fields are then read
        # from its text, without making the dict (sysmonx.core._speedups)
        if decide.__class__ is _COMPILED_DECIDER:
            include, name = decide(item)  # type: ignore[arg-type]
        else:
            include, name = decide(item.data)
        if self.trace is not None:
            self._trace(item, include, name, emit)
        if not include:
            self.excluded[eid] += 1
            return False
        if name is not None and not (_set_rule_name is not None and _set_rule_name(item, name)):
            data = item.data
            if "RuleName" in data:
                data["RuleName"] = name
            elif name != "-":
                item.data = {"RuleName": name, **data}
        if engine.field_sizes:
            item.data = engine.apply_field_sizes(eid, item.data)
        self.included[eid] += 1
        return True

    def _trace(self, event: Event, include: bool, name: Optional[str], emit: Emit) -> None:
        from .explain import explain, format_explanation, summary_line
        expl = explain(self.config, event.event_id, event.data, self.options)
        if not expl.filterable:
            return
        text = (format_explanation(expl, prefix="[R] ", values=True) if self.trace == "verbose"
                else f"[R] {summary_line(expl)}\n")
        if (expl.include, expl.rule_name) != (include, name):
            text += f"[R] MISMATCH: the engine decided {(include, name)}\n"
        emit(Trace(text))
