"""Registry of live trace backends, best tier first, and start-up selection.

Tiers (shared/spec/linux-sensing.md section 5): A ``ebpf`` (CO-RE, tracepoints and cgroup hooks),
B ``audit`` (kernel audit over netlink), C ``cnproc`` (proc connector + fanotify + tracefs).
``dns`` (AF_PACKET) runs beside whichever tier is chosen. Adding a backend is one module plus one
line here.
"""

from __future__ import annotations

import importlib
from typing import Optional

from .base import Backend, BackendUnavailable

__all__ = ["TIERS", "AUXILIARY", "FOLLOWERS", "load_backend", "probe_all", "choose_backend", "Backend",
           "BackendUnavailable"]

#: name -> "module:Class", best first.
TIERS = {
    "ebpf": "sysmonx.sensor.backends.ebpf:EbpfBackend",
    "audit": "sysmonx.sensor.backends.audit:AuditBackend",
    "cnproc": "sysmonx.sensor.backends.cnproc:CnprocBackend",
}
#: Backends that run beside the chosen tier.
AUXILIARY = {
    "dns": "sysmonx.sensor.backends.dns:DnsBackend",
}
#: Backends used only when asked for (``--backend``): they forward another sensor's events.
FOLLOWERS = {
    "sysmon-follow": "sysmonx.sensor.backends.follow:FollowBackend",
}


def load_backend(name: str) -> type:
    """The backend class registered as ``name``.

    Raises:
        BackendUnavailable: unknown name, or its module cannot be imported here (reason given).
    """
    spec = TIERS.get(name) or AUXILIARY.get(name) or FOLLOWERS.get(name)
    if spec is None:
        raise BackendUnavailable(f"unknown backend {name!r}; known: "
                                 f"{', '.join([*TIERS, *AUXILIARY, *FOLLOWERS])}")
    module, cls = spec.split(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError, OSError) as exc:
        raise BackendUnavailable(f"backend {name} cannot be loaded: {exc}") from None


def probe(name: str) -> Optional[str]:
    """``None`` if backend ``name`` can run here, else the reason it cannot."""
    try:
        return load_backend(name).probe()
    except BackendUnavailable as exc:
        return str(exc)
    except Exception as exc:  # a probe must never take the sensor down
        return f"probe failed: {exc!r}"


def probe_all() -> dict:
    """name -> ``None`` or reason, for every registered backend (for ``sysmonx run --backends``)."""
    return {name: probe(name) for name in [*TIERS, *AUXILIARY]}


def choose_backend(forced: Optional[str] = None) -> tuple[str, dict]:
    """Pick the tier to run: ``forced`` if given, else the best tier whose probe passes.

    Returns:
        ``(name, reasons)`` where ``reasons`` maps every tier tried before it to why it was
        skipped.
    Raises:
        BackendUnavailable: the forced backend cannot run, or no tier can (all reasons listed).
    """
    if forced:
        reason = probe(forced)
        if reason:
            raise BackendUnavailable(f"backend {forced} unavailable: {reason}")
        return forced, {}
    reasons = {}
    for name in TIERS:
        reason = probe(name)
        if reason is None:
            return name, reasons
        reasons[name] = reason
    raise BackendUnavailable("no trace backend can run here: " +
                             "; ".join(f"{k}: {v}" for k, v in reasons.items()))
