"""Command line: Sysmon-compatible switches and SysmonX subcommands, one module per command.

``sysmonx replay ...`` replays recorded logs through a config (:mod:`.replay`); ``sysmonx run`` is
the live sensor (:mod:`.run`); ``sysmonx config check|explain|compile|decode`` are the
configuration tools (:mod:`.config`); ``sysmonx plugins`` lists the registries (:mod:`.plugins`).
A first argument that is a switch (``-i``, ``-c``, ``-u``, ``-s``, ``-t``, ``-? config`` ...) is
Sysmon's own command line, handled by :mod:`.sysmon` with Sysmon's parsing rules and exit codes
(0, 87, 740). :mod:`.dispatch` holds the entry point and usage; :mod:`.common` what the commands
share. The CLI only parses arguments and calls the pipeline (docs/ARCHITECTURE.md).

Exit status of the subcommands: 0 success; 1 a fatal error (bad config, missing input,
unwritable output); 2 bad usage. A bad record is an error line on stderr, not a failure.
"""

from __future__ import annotations

from .common import builtin_config_path, builtin_linux_config_path, builtin_sample_path
from .dispatch import USAGE, main

__all__ = ["main", "USAGE", "builtin_config_path", "builtin_linux_config_path",
           "builtin_sample_path"]
