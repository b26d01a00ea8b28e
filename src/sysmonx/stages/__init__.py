"""Small stages of the replay pipeline that are neither the Sysmon filter nor detection.

=================  ===========================================================================
module             stage
=================  ===========================================================================
``dedup``          :class:`~sysmonx.stages.dedup.DuplicateFilter`: the same record read twice
                   (an EVTX and its JSON export side by side) is passed on once
``clock``          :class:`~sysmonx.stages.clock.ClockCheck`: System times that disagree with
                   the event's own ``UtcTime`` by whole hours (local time labelled UTC)
=================  ===========================================================================

Each stage works on :class:`~sysmonx.event.Event` objects alone and is testable without a
source or a sink; :mod:`sysmonx.pipeline` wires them.
"""
