"""The built-in scanners, one module each, registered in
:data:`~sysmonx.core.registry.SCANNERS` where they are defined. Each module also has
``check(pid, **context) -> list[Finding]`` (see :mod:`sysmonx.scanners.base`)."""
