"""Small pipeline stages that are neither the Sysmon filter (:mod:`sysmonx.filtering.stage`) nor
Sigma detection (:mod:`sysmonx.detection.stages`), one module each, each registered in
:data:`sysmonx.core.registry.STAGES`.

=================  ===========================================================================
module             stage
=================  ===========================================================================
``dedup``          ``duplicates``: the same record read twice (an EVTX and its JSON export side
                   by side) is passed on once (:class:`~sysmonx.stages.dedup.DuplicateFilter`)
``clock``          ``clock-check``: System times that disagree with the event's own ``UtcTime``
                   by whole hours (local time labelled UTC), warned once per file and offset
``window``         ``time-window``: ``--from``/``--to`` on System time or ``UtcTime``
``gate``           ``sysmon-gate``: records of other providers dropped or passed unfiltered
``numbering``      ``record-numbers``: the live sensor's EventRecordIDs
``alertsonly``     ``alerts-only``: only SigmaAlert events (1000) reach the event outputs
                   (``--alerts-only``)
=================  ===========================================================================

Each stage works on :class:`~sysmonx.event.Event` objects alone and is testable without a
source or a sink; :mod:`sysmonx.pipeline` wires them.
"""
