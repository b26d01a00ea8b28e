"""Sysmon's filter conditions and evaluation algorithm (spec/sysmon-semantics.md sections 2-3)."""

from .conditions import fold, make_predicate, split_tokens
from .engine import EngineOptions, FilterEngine, truncate_value

__all__ = ["EngineOptions", "FilterEngine", "fold", "make_predicate", "split_tokens",
           "truncate_value"]
