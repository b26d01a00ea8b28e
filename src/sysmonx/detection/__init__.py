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

from .alerts import ALERT_CHANNEL, ALERT_PROVIDER, SIGMA_ALERT_EVENT_ID, Alert
from .rules import LoadedRules, LoadIssue, load_rules, load_rules_text
from .stage import DetectionOptions, DetectionStage, SummaryRow

__all__ = ["Alert", "SIGMA_ALERT_EVENT_ID", "ALERT_PROVIDER", "ALERT_CHANNEL", "LoadedRules",
           "LoadIssue", "load_rules", "load_rules_text", "DetectionStage", "DetectionOptions",
           "SummaryRow"]
