"""A fake live backend for tests that run the sensor without tracing: it emits FileCreate
observations for given paths when started (shared by the Sigma wiring and alert-triage tests)."""

from __future__ import annotations

import threading
import time
from typing import Any, Sequence

from sysmonx.sensor import live as live_mod
from sysmonx.sensor import observations as ob


def install_file_backend(monkeypatch: Any, paths: Sequence[str], pid: int = 4242) -> type:
    """Make the sensor choose a tier-A backend ``fake`` that, when started, emits one
    ``FileCreate`` (process ``pid``, time now) per path of ``paths``, in order, and no
    auxiliary backend. Returns the backend class."""

    class Fake(live_mod.Backend):
        name, tier = "fake", "A"

        @classmethod
        def probe(cls) -> None:
            return None

        def start(self) -> None:
            now = time.time_ns()
            for p in paths:
                self.emit(ob.FileCreate(now, pid, p))

        def stop(self) -> None:
            pass

    monkeypatch.setattr(live_mod, "choose_backend", lambda forced=None, failed=None: ("fake", {}))
    monkeypatch.setattr(live_mod, "load_backend", lambda name: Fake)
    monkeypatch.setattr(live_mod, "auxiliary_backends", list)
    return Fake


def run_until(sensor: Any, done: Any, timeout: float = 5.0) -> None:
    """Run ``sensor`` (a :class:`~sysmonx.pipeline.live.Sensor`) in a thread until ``done()``
    is true or ``timeout`` seconds passed, then stop it and wait for it (10 s)."""
    t = threading.Thread(target=sensor.run, kwargs={"install_signals": False})
    t.start()
    end = time.monotonic() + timeout
    while not done() and time.monotonic() < end:
        time.sleep(0.01)
    sensor.request_stop()
    t.join(10)
