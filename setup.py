"""Build of the optional C extensions ``sysmonx.core._speedups`` (replay and JSON lines) and
``sysmonx.sensor._ringbatch`` (the eBPF ring-buffer consumer); everything else is in
pyproject.toml. ``optional=True``: without a C compiler or the Python headers the build goes on
without it and SysmonX uses its pure-Python paths (same output)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("sysmonx.core._speedups", ["src/sysmonx/core/_speedups.c"],
                             optional=True),
                   Extension("sysmonx.sensor._ringbatch", ["src/sysmonx/sensor/_ringbatch.c"],
                             optional=True)])
