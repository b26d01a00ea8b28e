"""Build of the optional C extensions ``sysmonx.core._speedups`` (replay and JSON lines) and
``sysmonx.sensor._ringbatch`` (the eBPF ring-buffer consumer); everything else is in
pyproject.toml. ``optional=True``: without a C compiler or the Python headers the build goes on
without it and SysmonX uses its pure-Python paths (same output)."""

from setuptools import Extension, setup

# A call to a function the headers do not declare (a CPython internal that left the public API)
# fails the build instead of becoming an implicit declaration (an error on GCC >= 14 anyway, a
# missing symbol at import otherwise): the extension is then left out and said, never half-built.
_FLAGS = ["-Werror=implicit-function-declaration"]

setup(ext_modules=[Extension("sysmonx.core._speedups", ["src/sysmonx/core/_speedups.c"],
                             optional=True, extra_compile_args=_FLAGS),
                   Extension("sysmonx.sensor._ringbatch", ["src/sysmonx/sensor/_ringbatch.c"],
                             optional=True, extra_compile_args=_FLAGS)])
