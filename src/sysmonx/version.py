"""The SysmonX version (``sysmonx --version``, event 4's ``Version``)."""

__version__ = "0.1.0"
