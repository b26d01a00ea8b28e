"""A minimal ctypes binding to the system ``libbpf.so.1`` (libbpf >= 1.0).

Only what the tier-A backend needs: open/load an object, resize a map before load, attach
programs (tracepoint-family auto-attach and cgroup), read and write maps, and a ring buffer
consumer. All libbpf errors become :class:`LibbpfError` (an ``OSError`` with the errno and the
libbpf log lines captured while the call ran, e.g. the verifier log). linux-sensing.md §2.4(b)
explains why ctypes against Debian's ``libbpf1`` was chosen over bcc and pylibbpf.

Thread-safety: an :class:`BpfObject` may be used from several threads, but its ring buffer must
be polled by one thread at a time (libbpf's rule).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as _errno
import os
import threading
from typing import Callable, Optional

__all__ = ["SAMPLE_CB", "BpfObject", "LibbpfError", "RingBuffer", "load_libbpf"]

_lib: Optional[ctypes.CDLL] = None
_lib_error: Optional[str] = None
_lib_lock = threading.Lock()
_log_lock = threading.Lock()
_log_lines: Optional[list] = None
_log_buf = None

SAMPLE_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
"""``ring_buffer_sample_fn``: ``(ctx, data, size) -> int``; a negative return stops the poll."""

_PRINT_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


class LibbpfError(OSError):
    """A libbpf call failed. ``errno`` is the positive error number; ``log`` the libbpf
    messages (warnings, verifier output) captured during the call."""

    def __init__(self, err: int, what: str, log: str = "") -> None:
        super().__init__(err, f"{what}: {os.strerror(err)}" + (f"\n{log}" if log else ""))
        self.log = log


def _proto(lib: ctypes.CDLL, name: str, restype, *argtypes) -> None:
    fn = getattr(lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)


def load_libbpf() -> ctypes.CDLL:
    """Load and prototype ``libbpf.so.1`` once.

    Raises:
        OSError: the library is missing or too old (no ``ring_buffer__new`` or
            ``bpf_object__next_program``).
    """
    global _lib, _lib_error
    with _lib_lock:
        if _lib is not None:
            return _lib
        if _lib_error is not None:
            raise OSError(_lib_error)
        try:
            lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
        except OSError:
            name = ctypes.util.find_library("bpf")
            if not name:
                _lib_error = "libbpf.so.1 not found (install Debian package libbpf1)"
                raise OSError(_lib_error) from None
            lib = ctypes.CDLL(name, use_errno=True)
        vp, cp, ci = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
        cu32, cu64 = ctypes.c_uint32, ctypes.c_uint64
        try:
            _proto(lib, "libbpf_set_print", vp, _PRINT_CB)
            _proto(lib, "bpf_object__open_file", vp, cp, vp)
            _proto(lib, "bpf_object__load", ci, vp)
            _proto(lib, "bpf_object__close", None, vp)
            _proto(lib, "bpf_object__find_map_by_name", vp, vp, cp)
            _proto(lib, "bpf_object__next_program", vp, vp, vp)
            _proto(lib, "bpf_map__set_max_entries", ci, vp, cu32)
            _proto(lib, "bpf_map__fd", ci, vp)
            _proto(lib, "bpf_program__name", cp, vp)
            _proto(lib, "bpf_program__section_name", cp, vp)
            _proto(lib, "bpf_program__set_autoload", ci, vp, ctypes.c_bool)
            _proto(lib, "bpf_program__autoload", ctypes.c_bool, vp)
            _proto(lib, "bpf_program__attach", vp, vp)
            _proto(lib, "bpf_program__attach_cgroup", vp, vp, ci)
            _proto(lib, "bpf_link__destroy", ci, vp)
            _proto(lib, "bpf_map_update_elem", ci, ci, vp, vp, cu64)
            _proto(lib, "bpf_map_lookup_elem", ci, ci, vp, vp)
            _proto(lib, "bpf_map_delete_elem", ci, ci, vp)
            _proto(lib, "libbpf_num_possible_cpus", ci)
            _proto(lib, "ring_buffer__new", vp, ci, SAMPLE_CB, vp, vp)
            _proto(lib, "ring_buffer__poll", ci, vp, ci)
            _proto(lib, "ring_buffer__consume", ci, vp)
            _proto(lib, "ring_buffer__free", None, vp)
        except AttributeError as exc:
            _lib_error = f"libbpf too old (need >= 1.0): {exc}"
            raise OSError(_lib_error) from None
        _lib = lib
        return lib


_libc = ctypes.CDLL(None, use_errno=True)
_libc.vsnprintf.restype = ctypes.c_int
_libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]


@_PRINT_CB
def _print_cb(level: int, fmt: bytes, va: int) -> int:
    # va_list decays to a pointer when passed to a function (x86-64, arm64 ABIs).
    global _log_buf
    if _log_lines is None:
        return 0
    if _log_buf is None:  # verifier logs can be megabytes; messages are serialised by _log_lock
        _log_buf = ctypes.create_string_buffer(4 << 20)
    n = _libc.vsnprintf(_log_buf, len(_log_buf), fmt, va)
    if n > 0:
        _log_lines.extend(_log_buf.value.decode("utf-8", "replace").rstrip("\n").split("\n"))
    return 0


class _Capture:
    """Route libbpf's log to a list for the duration of a call (serialised process-wide)."""

    def __enter__(self) -> list:
        global _log_lines
        _log_lock.acquire()
        self.lib = load_libbpf()
        _log_lines = []
        self.prev = self.lib.libbpf_set_print(_print_cb)
        return _log_lines

    def __exit__(self, *exc) -> None:
        global _log_lines
        prev = self.prev
        self.lib.libbpf_set_print(ctypes.cast(prev, _PRINT_CB) if prev else _PRINT_CB())
        _log_lines = None
        _log_lock.release()


def _tail(lines: list, n: int = 60) -> str:
    return "\n".join(lines[-n:])


class BpfObject:
    """An opened BPF object file, then loaded, with its attach links.

    Args:
        path: the ``.bpf.o`` file.

    Raises:
        LibbpfError: the file cannot be opened (not an ELF BPF object, missing BTF...).
    """

    def __init__(self, path: str) -> None:
        self.lib = load_libbpf()
        with _Capture() as log:
            obj = self.lib.bpf_object__open_file(os.fsencode(path), None)
            err = ctypes.get_errno()
        if not obj:
            raise LibbpfError(err or _errno.EINVAL, f"bpf_object__open_file({path})", _tail(log))
        self.obj: Optional[int] = obj
        self.links: list = []
        self._lock = threading.Lock()

    # -- before load --------------------------------------------------------------------------
    def programs(self) -> dict:
        """``{program name: (section name, handle)}`` for every program in the object."""
        out: dict[str, tuple] = {}
        prog = None
        while True:
            prog = self.lib.bpf_object__next_program(self.obj, prog)
            if not prog:
                return out
            out[self.lib.bpf_program__name(prog).decode()] = (
                self.lib.bpf_program__section_name(prog).decode(), prog)

    def set_autoload(self, prog: int, on: bool) -> None:
        """Include (``True``) or skip a program at load time."""
        self.lib.bpf_program__set_autoload(prog, on)

    def _map(self, name: str) -> int:
        m = self.lib.bpf_object__find_map_by_name(self.obj, name.encode())
        if not m:
            raise LibbpfError(_errno.ENOENT, f"map {name!r} not in object")
        return m

    def set_max_entries(self, name: str, n: int) -> None:
        """Resize a map before :meth:`load` (for a ring buffer: its size in bytes)."""
        rc = self.lib.bpf_map__set_max_entries(self._map(name), n)
        if rc < 0:
            raise LibbpfError(-rc, f"bpf_map__set_max_entries({name}, {n})")

    def load(self) -> None:
        """Create the maps and load (verify) the programs.

        Raises:
            LibbpfError: with the verifier log tail when a program is rejected.
        """
        with _Capture() as log:
            rc = self.lib.bpf_object__load(self.obj)
        if rc < 0:
            raise LibbpfError(-rc, "bpf_object__load", _tail(log))

    # -- after load ---------------------------------------------------------------------------
    def map_fd(self, name: str) -> int:
        """File descriptor of a loaded map."""
        fd = self.lib.bpf_map__fd(self._map(name))
        if fd < 0:
            raise LibbpfError(-fd, f"bpf_map__fd({name})")
        return fd

    def attach(self, prog: int, cgroup_fd: Optional[int] = None) -> None:
        """Attach a program (tp_btf/raw_tp by its section, or to a cgroup v2 directory fd);
        the link is kept and destroyed by :meth:`detach_all`."""
        with _Capture() as log:
            if cgroup_fd is None:
                link = self.lib.bpf_program__attach(prog)
            else:
                link = self.lib.bpf_program__attach_cgroup(prog, cgroup_fd)
            err = ctypes.get_errno()
        if not link:
            name = self.lib.bpf_program__name(prog).decode()
            raise LibbpfError(err or _errno.EINVAL, f"attach {name}", _tail(log, 10))
        with self._lock:
            self.links.append(link)

    def detach_all(self) -> None:
        """Destroy every link (detaches the programs). Idempotent."""
        with self._lock:
            links, self.links = self.links, []
        for link in links:
            self.lib.bpf_link__destroy(link)

    def close(self) -> None:
        """Detach and free the object (maps and programs go away with their last fd)."""
        self.detach_all()
        with self._lock:
            obj, self.obj = self.obj, None
        if obj:
            self.lib.bpf_object__close(obj)


def map_update(fd: int, key: bytes, value: bytes, flags: int = 0) -> None:
    """``bpf_map_update_elem`` with raw key/value bytes. Raises :class:`LibbpfError`."""
    lib = load_libbpf()
    rc = lib.bpf_map_update_elem(fd, key, value, flags)
    if rc < 0:
        raise LibbpfError(-rc, "bpf_map_update_elem")


def map_delete(fd: int, key: bytes) -> bool:
    """``bpf_map_delete_elem``; ``False`` if the key was absent."""
    return load_libbpf().bpf_map_delete_elem(fd, key) == 0


def map_lookup(fd: int, key: bytes, value_size: int) -> Optional[bytes]:
    """``bpf_map_lookup_elem``; ``None`` when absent. For per-CPU maps pass
    ``value_size = round_up(size, 8) * possible_cpus()``."""
    buf = ctypes.create_string_buffer(value_size)
    rc = load_libbpf().bpf_map_lookup_elem(fd, key, buf)
    if rc < 0:
        if -rc == _errno.ENOENT:
            return None
        raise LibbpfError(-rc, "bpf_map_lookup_elem")
    return buf.raw


def possible_cpus() -> int:
    """Number of possible CPUs (the per-CPU map value count)."""
    n = load_libbpf().libbpf_num_possible_cpus()
    if n < 0:
        raise LibbpfError(-n, "libbpf_num_possible_cpus")
    return n


class RingBuffer:
    """A libbpf ring buffer consumer on a ``BPF_MAP_TYPE_RINGBUF`` map fd.

    Args:
        map_fd: the ring buffer map.
        callback: ``callback(data_ptr, size) -> int`` run for each record inside :meth:`poll`;
            copy the bytes out (``ctypes.string_at``) before returning; return a negative
            number to stop the current poll early.
        native: instead of ``callback``, ``(function_address, ctx)``: a C
            ``ring_buffer_sample_fn`` and its ``ctx`` (e.g. ``sysmonx.sensor._ringbatch``'s
            ``sample_callback()`` and a ``RingBatch``'s ``.ctx``); libbpf calls it with no
            Python call per record. The caller keeps whatever ``ctx`` points to alive.

    Raises:
        ValueError: neither or both of ``callback`` and ``native``.
        LibbpfError: ``ring_buffer__new`` failed.
    """

    def __init__(self, map_fd: int, callback: Optional[Callable[[int, int], int]] = None,
                 native: Optional[tuple] = None) -> None:
        self.lib = load_libbpf()
        if (callback is None) == (native is None):
            raise ValueError("RingBuffer: give exactly one of callback and native")
        ctx = None
        if native is not None:
            address, ctx = native
            self._cb = SAMPLE_CB(address)
        else:
            assert callback is not None

            def _cb(_ctx, data, size):
                return callback(data, size)

            self._cb = SAMPLE_CB(_cb)  # keep a reference: libbpf calls it later
        rb = self.lib.ring_buffer__new(map_fd, self._cb, ctx, None)
        if not rb:
            raise LibbpfError(ctypes.get_errno() or _errno.EINVAL, "ring_buffer__new")
        self.rb: Optional[int] = rb

    def poll(self, timeout_ms: int) -> int:
        """Wait up to ``timeout_ms`` for records and consume them; returns the number consumed,
        or the negative callback value when it stopped early; ``-EINTR`` is returned as 0."""
        n = self.lib.ring_buffer__poll(self.rb, timeout_ms)
        return 0 if n == -_errno.EINTR else n

    def consume(self) -> int:
        """Consume whatever is available without waiting."""
        return self.lib.ring_buffer__consume(self.rb)

    def free(self) -> None:
        """Release the consumer (idempotent)."""
        rb, self.rb = self.rb, None
        if rb:
            self.lib.ring_buffer__free(rb)
