"""Scanners: inspect a running process to confirm or dismiss what an event suggests.

==================  ======================================================================
module              what it holds
==================  ======================================================================
``base``            :class:`~.base.Finding`, :class:`~.base.ProcessView` (``/proc/PID``
                    reads with a :class:`~.base.Budget`), the :class:`~.base.Scanner`
                    contract
``builtin/``        one module per scanner, each registered in ``SCANNERS`` and with a
                    ``check(pid, **context)`` function other modules may call
``allowlist``       documented benign causes as data (``data/scanner-allowlist.yaml``)
``engine``          one process scan (budget, identity, allow-list), findings as event 200
``stages``          the live loop's ``scanner-findings`` / ``scanner-requests`` stages and
                    the bounded scan queue with its worker
==================  ======================================================================

See docs/ARCHITECTURE.md, "Scanners".
"""
