"""Sigma detection: rules and correlations evaluated in-process on replayed and live events.

Modules, one concept each:

==================  ==========================================================================
``rules``           loading YAML files, folders and bundles with pySigma; load issues
``logsource``       product/category/service -> Sysmon provider, channel, EventIDs, EventType
``fields``          SigmaHQ field names on SysmonX events (System fields, sub-hashes)
``matcher``         rules compiled into matchers, grouped by event, multi-pattern automata
``correlation``     the Sigma correlation types, incremental, bounded, with suppression
``alerts``          :class:`Alert`, JSON lines and the SysmonX ``SigmaAlert`` event (ID 1000)
``stage``           :class:`DetectionStage`: ``process(event)``, ``finish()``, hit counters
==================  ==========================================================================

See docs/DETECTION.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .alerts import ALERT_CHANNEL, ALERT_PROVIDER, SIGMA_ALERT_EVENT_ID, Alert
    from .rules import LoadedRules, LoadIssue, load_rules, load_rules_text
    from .stage import DetectionOptions, DetectionStage, SummaryRow

__all__ = ["Alert", "SIGMA_ALERT_EVENT_ID", "ALERT_PROVIDER", "ALERT_CHANNEL", "LoadedRules",
           "LoadIssue", "load_rules", "load_rules_text", "DetectionStage", "DetectionOptions",
           "SummaryRow"]

# The names above are imported on first use (PEP 562): importing one module of this package
# (the pipeline stages of ``detection.stages``, which the stage registry imports to list them)
# does not load pySigma and the compiler (~0.1 s), which only runs with Sigma rules need.
_WHERE = {"Alert": ".alerts", "SIGMA_ALERT_EVENT_ID": ".alerts", "ALERT_PROVIDER": ".alerts",
          "ALERT_CHANNEL": ".alerts", "LoadedRules": ".rules", "LoadIssue": ".rules",
          "load_rules": ".rules", "load_rules_text": ".rules", "DetectionStage": ".stage",
          "DetectionOptions": ".stage", "SummaryRow": ".stage"}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where, __name__), name)
    globals()[name] = value
    return value
