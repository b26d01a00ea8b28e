"""``python -m sysmonx.cli``: the ``sysmonx`` command."""

import sys

from .dispatch import main

if __name__ == "__main__":  # not when a tool imports every module (pkgutil.walk_packages)
    sys.exit(main())
