"""SysmonX: an augmented, Python drop-in replacement for Sysinternals Sysmon.

Same input (Sysmon XML configs, any 4.x schema) and same output (Sysmon events, IDs, field names,
value formats and XML) as Sysmon, plus replay of recorded logs, regex filters and more. See
docs/ARCHITECTURE.md for the pipeline.
"""

from .version import __version__

__all__ = ["__version__"]
