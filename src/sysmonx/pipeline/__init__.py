"""The one loop and what runs on it.

==============  ===========================================================================
module          what it holds
==============  ===========================================================================
``loop``        :class:`~.loop.Pipeline`: source -> stages -> sinks, with a tick; stop and
                reload between items
``fanout``      delivery to the sinks: slots with counters, bounded queues, failure policies
``replay``      the replay stage list, :class:`~.replay.Replayer`, :class:`~.replay.ReplayOptions`
``parallel``    ``--jobs``: workers running the loop, output in input order
``live``        the live stage list, :class:`~.live.Sensor` (``run``, ``run --follow``, ``-t``)
==============  ===========================================================================

See docs/ARCHITECTURE.md for the picture.
"""

from __future__ import annotations

from ..core.errors import SinkError
from ..stages.window import parse_time_bound
from .loop import Pipeline
from .parallel import auto_jobs, default_jobs, replay_parallel
from .replay import ReplayOptions, Replayer, ReplayStats, event_name, make_writer

__all__ = ["Pipeline", "ReplayOptions", "ReplayStats", "Replayer", "make_writer",
           "replay_parallel", "default_jobs", "auto_jobs", "parse_time_bound", "event_name", "SinkError"]
