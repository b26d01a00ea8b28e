"""Kernel audit over ``NETLINK_AUDIT`` in pure Python: status, rules, records.

A small, dependency-free client for the parts of the audit netlink protocol the tier-B backend
(:mod:`sysmonx.sensor.backends.audit`) needs, written from ``<linux/audit.h>`` and measured on the
target machine (shared/spec/linux-sensing.md §2.2):

* :class:`AuditStatus` — ``struct audit_status`` (``AUDIT_GET``/``AUDIT_SET``);
* :class:`AuditRule` — ``struct audit_rule_data`` (``AUDIT_ADD_RULE``/``AUDIT_DEL_RULE``/
  ``AUDIT_LIST_RULES``), with string fields (watch path, filter key) in its trailing buffer;
* :class:`AuditSocket` — one netlink socket: requests with acks, unicast/multicast records;
* :func:`parse_record`, :func:`parse_fields`, :func:`decode_untrusted` — the record text.

Netlink quirk handled here: records *unicast* to the registered audit daemon carry an
``nlmsg_len`` that does **not** include the 16-byte ``nlmsghdr`` (an old kernel quirk kept for
ABI); multicast copies (``AUDIT_NLGRP_READLOG``) are fixed. Every record is one datagram, so the
record text is taken as "the rest of the datagram" whatever ``nlmsg_len`` says.

Privileges: CAP_AUDIT_CONTROL for status and rules, CAP_AUDIT_READ for the multicast group, both
in the initial user and PID namespace (in a child PID namespace requests fail with EPERM, in a
child user namespace with ECONNREFUSED).
"""

from __future__ import annotations

import errno
import os
import re
import select
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Union

from ...core import native

__all__ = [
    "NETLINK_AUDIT", "AUDIT_NLGRP_READLOG", "AuditError", "AuditStatus", "AuditRule",
    "AuditSocket", "parse_record", "parse_fields", "decode_untrusted", "AuditRecord",
    "snapshot_state",
]

NETLINK_AUDIT = 9
AUDIT_NLGRP_READLOG = 1          # multicast group: "best effort" read-only copy of every record
SOL_NETLINK = 270
SO_RCVBUFFORCE = 33

# nlmsghdr
NLMSG_HDR = struct.Struct("=IHHII")   # len, type, flags, seq, pid
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4

# message types (<linux/audit.h>)
AUDIT_GET = 1000
AUDIT_SET = 1001
AUDIT_ADD_RULE = 1011
AUDIT_DEL_RULE = 1012
AUDIT_LIST_RULES = 1013
AUDIT_REPLACE = 1329
AUDIT_FIRST_RECORD = 1100         # types below are commands/replies; from here on: log records
AUDIT_SYSCALL = 1300
AUDIT_PATH = 1302
AUDIT_CONFIG_CHANGE = 1305
AUDIT_SOCKADDR = 1306
AUDIT_CWD = 1307
AUDIT_EXECVE = 1309
AUDIT_OBJ_PID = 1318
AUDIT_EOE = 1320
AUDIT_PROCTITLE = 1327
AUDIT_OPENAT2 = 1337

# status mask bits
AUDIT_STATUS_ENABLED = 0x01
AUDIT_STATUS_FAILURE = 0x02
AUDIT_STATUS_PID = 0x04
AUDIT_STATUS_RATE_LIMIT = 0x08
AUDIT_STATUS_BACKLOG_LIMIT = 0x10
AUDIT_STATUS_BACKLOG_WAIT_TIME = 0x20

# rule lists, actions, fields, operators
AUDIT_FILTER_EXIT = 0x04
AUDIT_NEVER = 0
AUDIT_ALWAYS = 2
AUDIT_PID = 0
AUDIT_ARCH = 11
AUDIT_EXIT = 103
AUDIT_SUCCESS = 104
AUDIT_WATCH = 105
AUDIT_PERM = 106
AUDIT_FILETYPE = 108
AUDIT_SADDR_FAM = 113
AUDIT_ARG0 = 200
AUDIT_ARG1 = 201
AUDIT_ARG2 = 202
AUDIT_ARG3 = 203
AUDIT_FILTERKEY = 210
AUDIT_BIT_MASK = 0x08000000
AUDIT_NOT_EQUAL = 0x30000000
AUDIT_EQUAL = 0x40000000
AUDIT_PERM_READ = 4
AUDIT_MAX_FIELDS = 64
AUDIT_BITMASK_SIZE = 64
STRING_FIELDS = frozenset({AUDIT_WATCH, AUDIT_FILTERKEY, 107, 112,   # dir, exe
                           13, 14, 15, 16, 17, 18})                  # LSM subj/obj strings

_STATUS = struct.Struct("=11I")
_RULE_HEAD = struct.Struct("=3I")
_RULE_WORDS = struct.Struct(f"={AUDIT_BITMASK_SIZE}I")
_RULE_FIELDS = struct.Struct(f"={AUDIT_MAX_FIELDS}I")
RULE_FIXED_SIZE = _RULE_HEAD.size + _RULE_WORDS.size + 3 * _RULE_FIELDS.size + 4   # 1040 bytes


class AuditError(OSError):
    """An audit netlink request failed: ``errno`` is the kernel's error (e.g. ``EPERM``,
    ``EEXIST`` for a duplicate rule, ``ENOENT`` deleting an absent rule, ``ETIMEDOUT`` when no
    answer arrived in time)."""


@dataclass
class AuditStatus:
    """``struct audit_status`` (44 bytes on 5.x/6.x kernels; older kernels answer with a shorter
    struct, the missing tail reads as 0).

    Units: ``backlog_wait_time`` in jiffies (kernel default 60*HZ = 15000 at HZ=250),
    ``rate_limit`` records per second (0 = unlimited), ``lost`` a wrapping u32 count of records
    the kernel dropped since boot (never reset by this module).
    """

    mask: int = 0
    enabled: int = 0
    failure: int = 0
    pid: int = 0
    rate_limit: int = 0
    backlog_limit: int = 0
    lost: int = 0
    backlog: int = 0
    feature_bitmap: int = 0
    backlog_wait_time: int = 0
    backlog_wait_time_actual: int = 0

    CONFIG_FIELDS = ("enabled", "failure", "pid", "rate_limit", "backlog_limit",
                     "backlog_wait_time")

    def pack(self) -> bytes:
        """The 44-byte C struct."""
        return _STATUS.pack(self.mask, self.enabled, self.failure, self.pid, self.rate_limit,
                            self.backlog_limit, self.lost, self.backlog, self.feature_bitmap,
                            self.backlog_wait_time, self.backlog_wait_time_actual)

    @classmethod
    def unpack(cls, data: bytes) -> "AuditStatus":
        """Parse an ``AUDIT_GET`` reply payload (shorter payloads are zero-padded)."""
        data = bytes(data[:_STATUS.size]).ljust(_STATUS.size, b"\0")
        return cls(*_STATUS.unpack(data))

    def config(self) -> dict:
        """The settable configuration (no counters): enabled, failure, pid, rate_limit,
        backlog_limit, backlog_wait_time."""
        return {k: getattr(self, k) for k in self.CONFIG_FIELDS}


Value = Union[int, str]


@dataclass
class AuditRule:
    """One audit filter rule (``struct audit_rule_data``).

    Attributes:
        listnr: filter list (``AUDIT_FILTER_EXIT`` = 4 for syscall rules and watches).
        action: ``AUDIT_ALWAYS`` (2) or ``AUDIT_NEVER`` (0).
        mask: 64 u32 words, bit *n* = syscall number *n* (for the rule's ``arch``); use
            :meth:`syscall_mask` to build it. The top bits select kernel syscall classes.
        fields: ``(field, operator, value)``; string fields (watch path, filter key) take a
            ``str`` value that goes to the trailing buffer, all others a u32 (negative ints are
            stored two's complement, as auditctl does for ``exit=-115``).
    """

    listnr: int = AUDIT_FILTER_EXIT
    action: int = AUDIT_ALWAYS
    mask: tuple = (0,) * AUDIT_BITMASK_SIZE
    fields: list = field(default_factory=list)

    @staticmethod
    def syscall_mask(syscalls) -> tuple:
        """64-word mask with the bits of ``syscalls`` (iterable of ints) set; ``"all"`` sets
        every bit (what ``auditctl -S all`` and ``-w`` do)."""
        if syscalls == "all":
            return (0xFFFFFFFF,) * AUDIT_BITMASK_SIZE
        words = [0] * AUDIT_BITMASK_SIZE
        for n in syscalls:
            if not 0 <= n < AUDIT_BITMASK_SIZE * 32:
                raise ValueError(f"syscall number out of range: {n}")
            words[n // 32] |= 1 << (n % 32)
        return tuple(words)

    def syscalls(self) -> frozenset:
        """The syscall numbers whose bits are set (class bits included as numbers)."""
        return frozenset(w * 32 + b for w, word in enumerate(self.mask) for b in range(32)
                         if word >> b & 1)

    @property
    def key(self) -> Optional[str]:
        """The filter key (``-k``), or ``None``. Several keys are joined by ``\\x01``."""
        for fld, _op, val in self.fields:
            if fld == AUDIT_FILTERKEY:
                return val
        return None

    def pack(self) -> bytes:
        """The C struct plus its string buffer.

        Raises:
            ValueError: more than 64 fields, or a string field given a non-string.
        """
        if len(self.fields) > AUDIT_MAX_FIELDS:
            raise ValueError(f"too many rule fields: {len(self.fields)} > {AUDIT_MAX_FIELDS}")
        flds, vals, ops = [0] * AUDIT_MAX_FIELDS, [0] * AUDIT_MAX_FIELDS, [0] * AUDIT_MAX_FIELDS
        buf = bytearray()
        for i, (fld, op, val) in enumerate(self.fields):
            flds[i], ops[i] = fld, op
            if fld in STRING_FIELDS:
                if not isinstance(val, str):
                    raise ValueError(f"field {fld} needs a string value")
                raw = os.fsencode(val)
                vals[i] = len(raw)
                buf += raw
            else:
                vals[i] = int(val) & 0xFFFFFFFF
        return (_RULE_HEAD.pack(self.listnr, self.action, len(self.fields))
                + _RULE_WORDS.pack(*self.mask) + _RULE_FIELDS.pack(*flds)
                + _RULE_FIELDS.pack(*vals) + _RULE_FIELDS.pack(*ops)
                + struct.pack("=I", len(buf)) + bytes(buf))

    @classmethod
    def unpack(cls, data: bytes) -> "AuditRule":
        """Parse one ``AUDIT_LIST_RULES`` reply payload.

        Raises:
            ValueError: the payload is shorter than the fixed part or its buffer.
        """
        if len(data) < RULE_FIXED_SIZE:
            raise ValueError(f"audit rule payload too short: {len(data)} bytes")
        listnr, action, count = _RULE_HEAD.unpack_from(data, 0)
        off = _RULE_HEAD.size
        mask = _RULE_WORDS.unpack_from(data, off)
        off += _RULE_WORDS.size
        flds = _RULE_FIELDS.unpack_from(data, off)
        vals = _RULE_FIELDS.unpack_from(data, off + _RULE_FIELDS.size)
        ops = _RULE_FIELDS.unpack_from(data, off + 2 * _RULE_FIELDS.size)
        (buflen,) = struct.unpack_from("=I", data, RULE_FIXED_SIZE - 4)
        buf = bytes(data[RULE_FIXED_SIZE:RULE_FIXED_SIZE + buflen])
        if len(buf) < buflen:
            raise ValueError("audit rule string buffer truncated")
        fields, pos = [], 0
        for i in range(min(count, AUDIT_MAX_FIELDS)):
            if flds[i] in STRING_FIELDS:
                fields.append((flds[i], ops[i], os.fsdecode(buf[pos:pos + vals[i]])))
                pos += vals[i]
            else:
                fields.append((flds[i], ops[i], vals[i]))
        return cls(listnr=listnr & 0x0F, action=action, mask=tuple(mask), fields=fields)


class AuditSocket:
    """A ``NETLINK_AUDIT`` socket.

    Args:
        groups: multicast group bitmask to join at bind time (``1 << (AUDIT_NLGRP_READLOG-1)``
            for the read-only log copy; needs CAP_AUDIT_READ); 0 for a request/unicast socket.
        rcvbuf: receive buffer in bytes set with ``SO_RCVBUFFORCE`` (needs CAP_NET_ADMIN;
            falls back to ``SO_RCVBUF``, capped by ``net.core.rmem_max``); ``None`` keeps the
            default (~208 KiB).

    Raises:
        OSError: socket creation or bind failed (``EPROTONOSUPPORT`` without CONFIG_AUDIT,
            ``EPERM`` joining the group without CAP_AUDIT_READ).
    """

    def __init__(self, groups: int = 0, rcvbuf: Optional[int] = None) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
        try:
            if rcvbuf:
                try:
                    self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, int(rcvbuf))
                except OSError:
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, int(rcvbuf))
            self.sock.bind((0, groups))
        except BaseException:
            self.sock.close()
            raise
        self._seq = int(time.monotonic_ns() & 0x7FFFFFFF)
        self._buf = bytearray(1 << 16)
        self._poller: Optional[select.poll] = None  # select.poll (works for any fd number, unlike select)
        self.pending: list = []     # records received while waiting for a reply (type, bytes)

    # -- low level ---------------------------------------------------------------------------

    def fileno(self) -> int:
        """The socket's file descriptor (for ``select``)."""
        return self.sock.fileno()

    def close(self) -> None:
        """Close the socket (idempotent)."""
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, msg_type: int, payload: bytes = b"", flags: int = NLM_F_REQUEST) -> int:
        """Send one request; returns its sequence number."""
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        hdr = NLMSG_HDR.pack(NLMSG_HDR.size + len(payload), msg_type, flags, self._seq, 0)
        self.sock.sendto(hdr + payload, (0, 0))
        return self._seq

    def recv_datagram(self, timeout: Optional[float]) -> Optional[bytes]:
        """One datagram, or ``None`` when ``timeout`` seconds pass first (``0`` polls).

        Raises:
            OSError: e.g. ``ENOBUFS`` when the receive buffer overflowed (multicast drops).
        """
        if timeout is not None:
            if self._poller is None:
                self._poller = select.poll()
                self._poller.register(self.sock.fileno(), select.POLLIN)
            if not self._poller.poll(max(0, int(timeout * 1000 + 0.999))):
                return None
        try:
            n = self.sock.recv_into(self._buf, len(self._buf), socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        return bytes(self._buf[:n])

    def wait_readable(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a datagram; ``True`` when one is waiting."""
        if self._poller is None:
            self._poller = select.poll()
            self._poller.register(self.sock.fileno(), select.POLLIN)
        return bool(self._poller.poll(max(0, int(timeout * 1000 + 0.999))))

    @staticmethod
    def split(data: bytes) -> Iterator[tuple]:
        """Split a datagram into ``(type, flags, seq, payload)`` messages.

        A record datagram whose ``nlmsg_len`` excludes the header (unicast quirk) or is
        otherwise inconsistent yields one message with the rest of the datagram as payload.
        """
        off, total = 0, len(data)
        while off + NLMSG_HDR.size <= total:
            length, mtype, flags, seq, _pid = NLMSG_HDR.unpack_from(data, off)
            if mtype >= AUDIT_FIRST_RECORD or length < NLMSG_HDR.size or off + length > total:
                # event records: one per datagram; nlmsg_len untrustworthy (quirk)
                yield mtype, flags, seq, data[off + NLMSG_HDR.size:]
                return
            yield mtype, flags, seq, data[off + NLMSG_HDR.size:off + length]
            off += (length + 3) & ~3

    def request(self, msg_type: int, payload: bytes = b"", ack: bool = True,
                timeout: float = 2.0, multi: bool = False) -> list:
        """Send a request and collect its answer.

        Returns:
            list of ``(type, payload)`` replies with the request's sequence number (for
            ``multi``: every part until ``NLMSG_DONE``; else the single data reply, or ``[]``
            for a bare ack). Records that arrive meanwhile are appended to :attr:`pending`.

        Raises:
            AuditError: the kernel answered with an error, or no answer came in ``timeout``.
        """
        flags = NLM_F_REQUEST | (NLM_F_ACK if ack else 0)
        seq = self.send(msg_type, payload, flags)
        deadline = time.monotonic() + timeout
        out: list = []
        got_data = False
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AuditError(errno.ETIMEDOUT, f"no answer to audit request {msg_type}")
            data = self.recv_datagram(left)
            if data is None:
                continue
            for mtype, _mflags, mseq, body in self.split(data):
                if mtype >= AUDIT_FIRST_RECORD or mseq != seq:
                    if mtype >= AUDIT_FIRST_RECORD:
                        self.pending.append((mtype, body))
                    continue
                if mtype == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", body, 0)
                    if err:
                        raise AuditError(-err, f"audit request {msg_type}: {os.strerror(-err)}")
                    if not multi and (got_data or ack):
                        return out
                    continue
                if mtype == NLMSG_DONE:
                    return out
                out.append((mtype, bytes(body)))
                got_data = True
                if not multi and not ack:
                    return out

    # -- audit operations --------------------------------------------------------------------

    def get_status(self, timeout: float = 2.0) -> AuditStatus:
        """``AUDIT_GET``. Raises :class:`AuditError` (EPERM, ECONNREFUSED, ETIMEDOUT)."""
        for mtype, body in self.request(AUDIT_GET, ack=False, timeout=timeout):
            if mtype == AUDIT_GET:
                return AuditStatus.unpack(body)
        raise AuditError(errno.EPROTO, "AUDIT_GET answered without a status")

    def set_status(self, timeout: float = 2.0, **values: int) -> None:
        """``AUDIT_SET`` of the given fields only (e.g. ``enabled=1, backlog_limit=8192``).

        ``pid`` must be the caller's own pid (register) or 0 (unregister; only the registered
        process may do it). Setting ``lost`` is refused here (it would reset the counter).

        Raises:
            AuditError: refused by the kernel (EEXIST when another daemon is registered,
                EACCES, EINVAL for out-of-range values, EPERM when locked).
            ValueError: unknown or forbidden field name.
        """
        bits = {"enabled": AUDIT_STATUS_ENABLED, "failure": AUDIT_STATUS_FAILURE,
                "pid": AUDIT_STATUS_PID, "rate_limit": AUDIT_STATUS_RATE_LIMIT,
                "backlog_limit": AUDIT_STATUS_BACKLOG_LIMIT,
                "backlog_wait_time": AUDIT_STATUS_BACKLOG_WAIT_TIME}
        st = AuditStatus()
        for name, val in values.items():
            if name not in bits:
                raise ValueError(f"cannot set audit status field {name!r}")
            st.mask |= bits[name]
            setattr(st, name, int(val))
        self.request(AUDIT_SET, st.pack(), ack=True, timeout=timeout)

    def list_rules(self, timeout: float = 2.0) -> list:
        """``AUDIT_LIST_RULES``: the kernel's rule table in order, as raw payloads (bytes).
        Parse with :meth:`AuditRule.unpack`."""
        return [body for mtype, body in self.request(AUDIT_LIST_RULES, ack=False,
                                                     timeout=timeout, multi=True)
                if mtype == AUDIT_LIST_RULES]

    def add_rule(self, rule: Union[AuditRule, bytes], timeout: float = 2.0) -> None:
        """``AUDIT_ADD_RULE`` (appended to its list). Raises :class:`AuditError` (EEXIST for an
        identical rule, EINVAL for a field this kernel does not know)."""
        self.request(AUDIT_ADD_RULE, rule if isinstance(rule, bytes) else rule.pack(),
                     ack=True, timeout=timeout)

    def del_rule(self, rule: Union[AuditRule, bytes], timeout: float = 2.0) -> None:
        """``AUDIT_DEL_RULE`` of an identical rule. Raises :class:`AuditError` (ENOENT)."""
        self.request(AUDIT_DEL_RULE, rule if isinstance(rule, bytes) else rule.pack(),
                     ack=True, timeout=timeout)


def snapshot_state(sock: Optional[AuditSocket] = None) -> tuple:
    """The kernel's audit configuration as a comparable value: ``(status.config(), rules)``
    where rules is the ordered list of raw rule payloads. Counters (lost, backlog) excluded.

    Raises:
        AuditError / OSError: as :meth:`AuditSocket.get_status`.
    """
    own = sock is None
    sock = sock or AuditSocket()
    try:
        return sock.get_status().config(), sock.list_rules()
    finally:
        if own:
            sock.close()


# -- record text ----------------------------------------------------------------------------

_HEADER = re.compile(rb"audit\((\d+)\.(\d+):(\d+)\):\s?")
_FIELD = re.compile(r"([A-Za-z0-9_]+(?:\[\d+\])?)=(\"[^\"]*\"|'[^']*'|\S*)")


@dataclass(slots=True)
class AuditRecord:
    """One audit record: ``type`` (e.g. 1300), ``serial`` (the event id shared by all records
    of one event), ``ts_ns`` (epoch ns; the kernel gives milliseconds), ``text`` (the fields
    part after ``audit(...): ``, undecoded)."""

    type: int
    serial: int
    ts_ns: int
    text: str


def parse_record(msg_type: int, payload: bytes) -> Optional[AuditRecord]:
    """Parse ``audit(SEC.MSEC:SERIAL): fields`` (trailing NULs/newlines ignored).

    Returns:
        the record, or ``None`` when the payload has no audit header.
    """
    m = _HEADER.match(payload)
    if not m:
        return None
    sec, frac, serial = m.groups()
    ts_ns = int(sec) * 1_000_000_000 + int(frac.ljust(9, b"0")[:9])
    text = payload[m.end():].rstrip(b"\0\n").decode("utf-8", "surrogateescape")
    return AuditRecord(msg_type, int(serial), ts_ns, text)


def parse_fields_py(text: str) -> dict:
    """``key=value`` pairs of a record, values still raw (quoted, hex or plain). Later
    duplicates win (the kernel never repeats a key within a record). The definition of
    :func:`parse_fields`."""
    return dict(_FIELD.findall(text))


def parse_fields(text: str) -> dict:
    """``key=value`` pairs of a record (:func:`parse_fields_py`, the definition), by the
    compiled scanner :data:`compiled_fields` when it is built, for ASCII text (what the kernel
    writes: untrusted strings are quoted printable ASCII or hex)."""
    if compiled_fields is not None:
        out = compiled_fields(text)
        if out is not None:
            return out
    return dict(_FIELD.findall(text))


#: The compiled record reader and field scanner (``sysmonx.sensor._ringbatch.audit_recv`` and
#: ``audit_fields``: the same values as :meth:`AuditSocket.recv_datagram` +
#: :meth:`AuditSocket.split` + :func:`parse_record`, and :func:`parse_fields_py`, which define
#: them, without a Python frame per datagram or field). ``None`` when the extension is not built
#: or ``SYSMONX_PURE_PYTHON`` is set (read once, at import).
compiled_recv: Optional[Callable[[int, int, frozenset], tuple]]
compiled_fields: Optional[Callable[[str], Optional[dict]]]
compiled_recv, compiled_fields = native.compiled("sysmonx.sensor._ringbatch", "audit_recv",
                                                 "audit_fields")


def decode_untrusted(value: Optional[str]) -> Optional[bytes]:
    """Decode an "untrusted string" field as the kernel wrote it (``audit_log_untrustedstring``):
    ``"text"`` (printable ASCII without space or quote) or uppercase hex of the raw bytes.

    Returns:
        the raw bytes, or ``None`` for ``(null)``, an absent value or malformed hex.
    """
    if value is None or value == "(null)" or value == "":
        return None if value != "" else b""
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return value[1:-1].encode("utf-8", "surrogateescape")
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None
