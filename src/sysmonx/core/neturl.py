"""Output and input URLs (``SCHEME://HOST:PORT/PATH?OPTIONS``) and sizes, shared by the network
sinks and the network sources (``sysmonx collect``); NATS connection options from a URL."""

from __future__ import annotations

import re
import ssl
from typing import Any, Optional
from urllib.parse import parse_qsl, urlsplit

from .errors import SysmonXError, UsageError

__all__ = ["NetTarget", "parse_size", "nats_connect_options"]


def parse_size(text: str) -> int:
    """``256M`` / ``64k`` / ``1G`` / ``1000`` -> bytes.

    Raises:
        UsageError: not a size.
    """
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)[iI]?[bB]?\s*", text)
    if not m:
        raise UsageError(f"not a size: {text!r} (examples: 1000, 64k, 256M, 1G)")
    return int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]


class NetTarget:
    """A parsed output URL: ``scheme``, ``host``, ``port``, ``path``, ``options`` (the query as
    a dict; repeated keys keep the last), ``url`` (as given).

    Raises:
        UsageError: no host, or a port that is not a number.
    """

    def __init__(self, url: str, default_port: Optional[int] = None,
                 need_host: bool = True) -> None:
        parts = urlsplit(url)
        self.url = url
        self.scheme = parts.scheme.lower()
        try:
            self.port = parts.port or default_port
        except ValueError:
            raise UsageError(f"{url}: the port is not a number") from None
        self.host = parts.hostname or ""
        if need_host and not self.host:
            raise UsageError(f"{url}: no host (expected {self.scheme}://HOST:PORT)")
        if need_host and self.port is None:
            raise UsageError(f"{url}: no port (expected {self.scheme}://HOST:PORT)")
        self.path = parts.path
        self.options = dict(parse_qsl(parts.query, keep_blank_values=True))
        self.netloc = parts.netloc

    def flag(self, name: str, default: bool = False) -> bool:
        """A yes/no option (``1``/``true``/``yes``/``on``, or present without a value)."""
        if name not in self.options:
            return default
        return self.options[name].lower() in ("", "1", "true", "yes", "on")




async def _quiet_nats_error(exc: Exception) -> None:
    """nats-py's ``error_cb``: nothing (its default logs a traceback per failed attempt); the
    failure reaches the caller as the exception of the call that failed."""


def quiet_nats_logger() -> None:
    """Silence nats-py's logger (``nats``): nobody configures it, so Python printed its
    errors, with tracebacks, on stderr; SysmonX says the outage itself."""
    import logging
    log = logging.getLogger("nats")
    if not any(isinstance(h, logging.NullHandler) for h in log.handlers):
        log.addHandler(logging.NullHandler())
    log.propagate = False


def nats_connect_options(t: NetTarget) -> dict[str, Any]:
    """Keyword arguments of ``nats.connect`` (nats-py) for a parsed ``nats://`` URL: the server,
    TLS (``tls=1``, ``ca=``, ``cert=``, ``key=``; verification on), credentials read from files
    (``user=`` with ``password_file=``, ``token_file=``), no reconnection inside the client (the
    caller retries and knows what was confirmed), no library messages (``error_cb`` a no-op,
    :func:`quiet_nats_logger`).

    Raises:
        SysmonXError: a credential or certificate file cannot be read.
    """
    opts: dict[str, Any] = {"servers": [f"nats://{t.host}:{t.port}"], "allow_reconnect": False,
                            "connect_timeout": 2, "max_reconnect_attempts": 0,
                            "error_cb": _quiet_nats_error}
    quiet_nats_logger()
    try:
        if t.flag("tls") or "ca" in t.options:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
            if "ca" in t.options:
                ctx.load_verify_locations(cafile=t.options["ca"])
            if "cert" in t.options:
                ctx.load_cert_chain(t.options["cert"], t.options.get("key") or None)
            opts["tls"] = ctx
            opts["tls_hostname"] = t.host
        if "user" in t.options:
            opts["user"] = t.options["user"]
            if "password_file" in t.options:
                with open(t.options["password_file"]) as f:
                    opts["password"] = f.read().strip()
        if "token_file" in t.options:
            with open(t.options["token_file"]) as f:
                opts["token"] = f.read().strip()
    except (OSError, ssl.SSLError) as exc:
        raise SysmonXError(f"{t.url}: {exc}") from exc
    return opts
