"""pySigma's names imported on first use by the modules that compile rules.

Importing pySigma (its rule, condition and correlation modules, and pyparsing under them) costs
~0.08 s of CPU. A run that takes its compiled rules from the cache (:mod:`.cache`) never parses
or compiles a rule, so :mod:`.rules`, :mod:`.matcher` and :mod:`.correlation` do not import
pySigma when they are imported: each lists the names it uses (imported under ``TYPE_CHECKING``
for the type checker) and calls its ``_need_sigma()`` at the top of every function that reads
one of them, which binds them into the module's globals on the first call (:func:`bind`).
"""

from __future__ import annotations

import importlib
import threading
from typing import Mapping

__all__ = ["bind"]

_LOCK = threading.Lock()


def bind(namespace: dict, spec: Mapping[str, tuple[str, ...]]) -> None:
    """Import each module of ``spec`` (``module -> names``) and store each name's object in
    ``namespace`` (a module's ``globals()``). Idempotent; thread-safe (the names are in place
    before the caller goes on).

    Raises:
        ImportError: pySigma (or one of the names) is missing, as the module-level imports
            did.
    """
    with _LOCK:
        for module, names in spec.items():
            mod = importlib.import_module(module)
            for name in names:
                namespace[name] = getattr(mod, name)
