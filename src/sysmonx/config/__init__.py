"""Sysmon configuration: XML parsing and validation into a rule-set model.

See :func:`load_config` / :func:`parse_config` (spec/sysmon-semantics.md section 1).
"""

from ..configmodel import Aggregate, Config, ConfigError, ConfigWarning, Filter, RuleSet
from .parse import load_config, parse_config

__all__ = ["Aggregate", "Config", "ConfigError", "ConfigWarning", "Filter", "RuleSet",
           "load_config", "parse_config"]
