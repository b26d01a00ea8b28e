"""Live trace backends, best tier first, and start-up selection.

Tiers (shared/spec/linux-sensing.md section 5): A ``ebpf`` (CO-RE, tracepoints and cgroup hooks),
B ``audit`` (kernel audit over netlink), C ``cnproc`` (proc connector + fanotify + tracefs).
``dns`` (AF_PACKET, tier ``aux``) runs beside whichever tier is chosen. Each backend registers
itself in :data:`~sysmonx.core.registry.BACKENDS` where it is defined; adding one is one module
with a :class:`~.base.Backend` subclass (``name``, ``tier``, ``probe``, ``start``, ``stop``,
``stats``) and its ``@BACKENDS.register`` line.
"""

from __future__ import annotations

from typing import Optional

from ...core.registry import BACKENDS
from .base import Backend, BackendUnavailable

__all__ = ["tiers", "auxiliary_backends", "load_backend", "probe", "probe_all", "choose_backend",
           "Backend", "BackendUnavailable"]

_TIER_ORDER = ("A", "B", "C")


def tiers() -> list[str]:
    """Names of the process/file/network backends, best tier first."""
    found = [(e.obj.tier, e.name) for e in BACKENDS.entries()
             if getattr(e.obj, "tier", None) in _TIER_ORDER]
    return [name for _, name in sorted(found, key=lambda t: _TIER_ORDER.index(t[0]))]


def auxiliary_backends() -> list[str]:
    """Names of the backends that run beside the chosen tier (DNS)."""
    return [e.name for e in BACKENDS.entries() if getattr(e.obj, "tier", None) == "aux"]


def load_backend(name: str) -> type[Backend]:
    """The backend class registered as ``name``.

    Raises:
        BackendUnavailable: unknown name, or its module cannot be imported here (reason given).
    """
    if name not in BACKENDS:
        for module, reason in BACKENDS.broken.items():
            if module.rsplit(".", 1)[-1] == name:
                raise BackendUnavailable(f"backend {name} cannot be loaded: {reason}")
        raise BackendUnavailable(f"unknown backend {name!r}; known: "
                                 f"{', '.join(BACKENDS.names())}")
    cls: type[Backend] = BACKENDS.get(name)
    return cls


def probe(name: str) -> Optional[str]:
    """``None`` if backend ``name`` can run here, else the reason it cannot."""
    try:
        return load_backend(name).probe()
    except BackendUnavailable as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - a probe must never take the sensor down
        return f"probe failed: {exc!r}"


def probe_all() -> dict[str, Optional[str]]:
    """name -> ``None`` or reason, for every registered backend (``sysmonx run
    --list-backends``)."""
    return {name: probe(name) for name in [*tiers(), *auxiliary_backends()]}


def choose_backend(forced: Optional[str] = None,
                   failed: Optional[dict[str, str]] = None) -> tuple[str, dict[str, str]]:
    """Pick the tier to run: ``forced`` if given, else the best tier whose probe passes.

    Args:
        forced: the tier named by ``--backend`` (no other is tried).
        failed: tiers that passed their probe but failed to start (e.g. the eBPF object did not
            build), name -> reason: skipped with that reason, so the next tier is chosen.
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
    reasons: dict[str, str] = {}
    for name in tiers():
        reason = (failed or {}).get(name) or probe(name)
        if reason is None:
            return name, reasons
        reasons[name] = reason
    raise BackendUnavailable("no trace backend can run here: " +
                             "; ".join(f"{k}: {v}" for k, v in reasons.items()))
