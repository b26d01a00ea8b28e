"""A scripted live backend: the sensor run end to end without a kernel.

:class:`ScriptBackend` emits its class's ``script`` (a list of observations,
:mod:`sysmonx.sensor.observations`) from a thread, as a real backend's reader does; a ``None``
in the script holds the stream there until the class's ``gate`` (a ``threading.Event``) is
set, when one is given. :func:`install` makes the live sensor choose it as its only backend
(no auxiliary backends); the ``script_backend`` fixture of ``conftest.py`` does so with a
fresh subclass per test, so a script or gate set by one test never reaches another.
"""

from __future__ import annotations

import threading
from typing import Optional

from sysmonx.sensor import live as live_mod
from sysmonx.sensor.backends.base import Backend


class ScriptBackend(Backend):
    """Emits ``script`` from a thread, then sees nothing (see the module docstring)."""

    name = "script"
    tier = "A"
    script: list = []
    #: set by a test to hold the stream at a ``None`` in the script until the event is set
    gate: Optional[threading.Event] = None

    @classmethod
    def probe(cls):
        return None

    def start(self):
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        for o in self.script:
            if o is None:
                if self.gate is not None:
                    self.gate.wait(30)
                continue
            self.emit(o)

    def stop(self):
        self.thread.join(5)


def install(monkeypatch, cls: type = ScriptBackend) -> type:
    """Make the live sensor run ``cls`` as its chosen backend and no auxiliary ones; returns a
    fresh subclass of ``cls`` (its own ``script`` and ``gate``) that the sensor will run."""
    fresh = type(cls.__name__, (cls,), {"script": [], "gate": None})
    monkeypatch.setattr(live_mod, "choose_backend", lambda forced=None, failed=None:
                        (fresh.name, {}))
    monkeypatch.setattr(live_mod, "load_backend", lambda name: fresh)
    monkeypatch.setattr(live_mod, "auxiliary_backends", list)
    return fresh
