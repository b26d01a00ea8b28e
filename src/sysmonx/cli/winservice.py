"""``python -m sysmonx.cli.winservice --state-dir DIR``: the SysmonX Windows service process.

The Service Control Manager starts it (``sysmonx -accepteula -i`` created the service);
:class:`~sysmonx.windows.service.ServiceHost` runs the collector built from
``DIR\\service.json`` (:func:`~sysmonx.pipeline.windows.collector_from_state`) until the SCM
stops it. Started from a console it exits with error 1063 (not started by the SCM).
"""

from __future__ import annotations

import sys
from typing import Optional

from ..pipeline.windows import collector_from_state
from ..windows.service import CtypesServiceApi, ServiceHost
from ..windows.win32 import Win32Error, Win32Unavailable

__all__ = ["main"]


def main(argv: Optional[list[str]] = None) -> int:
    """Run as the SysmonX service (module docstring); returns the exit status."""
    import argparse
    p = argparse.ArgumentParser(prog="sysmonx-service")
    p.add_argument("--state-dir", required=True)
    args = p.parse_args(argv)
    try:
        api = CtypesServiceApi()
    except Win32Unavailable as exc:
        sys.stderr.write(f"sysmonx service: {exc}\n")
        return 1
    host = ServiceHost(api, lambda: collector_from_state(args.state_dir))
    try:
        host.run()
    except Win32Error as exc:
        sys.stderr.write(f"sysmonx service: {exc} (start it with sc.exe start SysmonX)\n")
        return 1
    if host.error:
        sys.stderr.write(f"sysmonx service: {host.error}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
