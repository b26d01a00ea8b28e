"""``sysmonx plugins``: the registries and what is in them."""

from __future__ import annotations

import sys

from . import common
from .common import EXIT_USAGE

__all__ = ["cmd_plugins"]


def cmd_plugins(argv: list[str]) -> int:
    """``sysmonx plugins``: every registry (sources, stages, sinks, backends, conditions) with
    one line per plugin: name, summary, where it is defined; then modules that could not be
    loaded and why."""
    p = common.UsageParser(prog="sysmonx plugins",
                                description="List the registered sources, stages, sinks, live "
                                            "backends and filter conditions (built-in and "
                                            "from the sysmonx.* entry-point groups).")
    p.add_argument("kind", nargs="?", help="only this registry (sources, stages, sinks, "
                                           "backends, conditions)")
    args = p.parse_args(argv)
    from ..core.registry import all_registries
    from ..textsafe import terminal_safe
    regs = all_registries()
    if args.kind is not None:
        regs = [r for r in regs if r.kind == args.kind]
        if not regs:
            sys.stderr.write(f"error: no registry {args.kind!r}; known: "
                             f"{', '.join(r.kind for r in all_registries())}\n")
            return EXIT_USAGE
    out = []
    for reg in regs:
        entries = reg.entries()
        if reg.kind != "conditions":  # conditions keep Sysmon's manifest order
            entries.sort(key=lambda e: (getattr(e.obj, "order", 100), e.name))
        out.append(f"{reg.kind} ({reg.describe}; entry points: {reg.group}):")
        width = max((len(e.name) for e in entries), default=0)
        for e in entries:
            out.append(f"  {terminal_safe(e.name):<{width}}  {terminal_safe(e.summary)}  "
                       f"[{terminal_safe(e.origin)}]")
        for where, why in reg.broken.items():
            out.append(f"  (cannot load {terminal_safe(where)}: {terminal_safe(why)})")
        out.append("")
    sys.stdout.write("\n".join(out))
    return 0
