"""The detection engineering workbench: what a Sysmon config logs, what it misses and what it
covers, over recorded logs.

* :mod:`.stats`: per rule set and filter, the events each decided (``sysmonx config stats``);
* :mod:`.diff`: what two configs log differently (``sysmonx config diff``);
* :mod:`.coverage`: ATT&CK techniques named by a config's RuleNames and Sigma rules' tags, which of
  them fired, and the ATT&CK Navigator layer (``sysmonx coverage``);
* :mod:`.html`: one self-contained HTML report with charts for any of them (``--html``).

Decisions come from the filter engine (:class:`~sysmonx.filtering.engine.FilterEngine`); the
deciding filter of an event from the independent walk of :mod:`sysmonx.filtering.explain`, and
each event's two answers are compared (a disagreement is counted and reported, never hidden).
Nothing here re-implements Sysmon's algorithm.
"""
