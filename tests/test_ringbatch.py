"""The compiled ring-buffer consumer (``sysmonx.sensor._ringbatch``) against the ctypes callback
it replaces (``EbpfBackend._on_sample``), without a kernel: both are called the way libbpf calls
a ``ring_buffer_sample_fn`` (through a C function pointer, GIL released for the C one) on
made-up records, and a fake ring replays libbpf's poll loop (a negative return ends the poll
after the record was consumed). The live comparison is in tests/test_ringbatch_live.py."""

from __future__ import annotations

import ctypes
import os
import random

import pytest

from sysmonx.sensor.backends import ebpf as ebpf_mod
from sysmonx.sensor.backends.ebpf import _BATCH_FULL, EbpfBackend
from sysmonx.sensor.bpf.libbpf import SAMPLE_CB

rbmod = pytest.importorskip("sysmonx.sensor._ringbatch",
                            reason="the C extension is not built (pure path only; "
                                   "tests/test_ringbatch_build.py says whether it should be)")


def _c_callback():
    return SAMPLE_CB(rbmod.sample_callback())


class FakeRing:
    """Records in a ring; :meth:`poll` hands them to ``cb(ctx, ptr, size)`` one by one as
    libbpf's ringbuf_process_ring does: the record is consumed before the callback runs, and a
    negative return ends the poll with that value."""

    def __init__(self, records: list) -> None:
        self.records = list(records)
        self.pos = 0
        self.keep = []  # buffers alive while the callback may read them

    def poll(self, cb, ctx) -> int:
        n = 0
        while self.pos < len(self.records):
            rec = self.records[self.pos]
            self.pos += 1
            buf = ctypes.create_string_buffer(rec, len(rec) or 1)
            self.keep.append(buf)
            rc = cb(ctx, ctypes.addressof(buf), len(rec))
            if rc < 0:
                return rc
            n += 1
        return n


def _drain_both(records: list, batch_max: int, max_bytes: int = 8 << 20):
    """Run the fake ring through both consumers; returns (c_batches, py_batches, c_rcs, py_rcs)
    where each batch is what one poll delivered."""
    native = rbmod.RingBatch(batch_max, max_bytes)
    cb = _c_callback()
    ring = FakeRing(records)
    c_batches, c_rcs = [], []
    while True:
        rc = ring.poll(cb, native.ctx)
        c_rcs.append(rc)
        c_batches.append(native.take())
        if rc >= 0:
            break
    backend = EbpfBackend(lambda obs: None)
    backend._batch_max = batch_max
    py_cb = SAMPLE_CB(lambda _ctx, data, size: backend._on_sample(data, size))
    ring = FakeRing(records)
    py_batches, py_rcs = [], []
    while True:
        rc = ring.poll(py_cb, None)
        py_rcs.append(rc)
        py_batches.append(backend._batch)
        backend._batch = []
        if rc >= 0:
            break
    return c_batches, py_batches, c_rcs, py_rcs


def _records(n: int, seed: int = 7) -> list:
    rnd = random.Random(seed)
    sizes = [0, 1, 3, 24, 88, 4095, 4096, 4097, 70_000] + [rnd.randrange(0, 5000)
                                                           for _ in range(n)]
    return [rnd.randbytes(s) for s in sizes]


@pytest.mark.parametrize("batch_max", [1, 2, 7, 512])
def test_same_records_same_order_same_poll_ends(batch_max):
    records = _records(300)
    c_b, py_b, c_rcs, py_rcs = _drain_both(records, batch_max)
    assert c_b == py_b  # the same bytes, in the same batches
    assert c_rcs == py_rcs  # a full batch ends the poll with the same value
    assert [r for b in c_b for r in b] == records
    if batch_max < len(records):
        assert _BATCH_FULL in c_rcs and rbmod.FULL == _BATCH_FULL


def test_zero_length_and_oversized_records():
    big = os.urandom(3 << 20)
    records = [b"", b"x", big, b"", big[:5], b"\0" * 9000]
    c_b, py_b, _, _ = _drain_both(records, 512)
    assert c_b == py_b
    assert [r for b in c_b for r in b] == records


def test_byte_bound_ends_the_poll_and_keeps_the_record():
    # 1 KiB bound: a record that crosses it is stored (libbpf consumed it already) and the poll
    # ends; the next poll goes on with the next record
    records = [bytes([i]) * 600 for i in range(10)]
    native = rbmod.RingBatch(512, 1024)
    cb, ring = _c_callback(), FakeRing(records)
    got, rcs = [], []
    while True:
        rc = ring.poll(cb, native.ctx)
        rcs.append(rc)
        got.append(native.take())
        if rc >= 0:
            break
    assert [len(b) for b in got] == [2, 2, 2, 2, 2, 0]
    assert rcs == [rbmod.FULL] * 5 + [0]
    assert [r for b in got for r in b] == records


def test_take_empties_and_buffer_is_reused():
    native = rbmod.RingBatch(4, 1 << 20)
    cb = _c_callback()
    for round_ in range(50):
        recs = [bytes([round_ % 256]) * (round_ * 100 + i) for i in range(3)]
        bufs = [ctypes.create_string_buffer(r, len(r) or 1) for r in recs]
        rcs = [cb(native.ctx, ctypes.addressof(b), len(r)) for b, r in zip(bufs, recs,
                                                                          strict=True)]
        assert rcs == [0, 0, 0]
        assert len(native) == 3
        assert native.take() == recs
        assert len(native) == 0 and native.take() == []
    assert native.nomem == 0


def test_bad_arguments():
    with pytest.raises(ValueError):
        rbmod.RingBatch(0, 10)
    with pytest.raises(ValueError):
        rbmod.RingBatch(10, 0)


# --- fork/exec/exit decoded in C == the Python decoder ------------------------------------------

HDR = ebpf_mod._HDR
OFFSET = 1_765_000_000_000_000_000


def _rec(etype, body: bytes, flags=0, pid=4242, tid=4243, abi=ebpf_mod.ABI_VERSION,
         ts=123_456_789_012):
    return HDR.pack(etype, flags, pid, tid, abi, ts) + body


def _exec(argv: bytes, image: bytes, cwd: bytes, flags=0, ns=(4026531840, 4026531836), **kw):
    body = ebpf_mod._EXEC.pack(1, 0, 4294967295, 7, 555 * 10_000_000 + 9, 0x55d0c0de,
                               len(argv), len(image), len(cwd), 0, *ns) + argv + image + cwd
    return _rec(ebpf_mod.EV_EXEC, body, flags, **kw)


def _hand_made() -> list:
    F = ebpf_mod
    recs = [
        _rec(F.EV_FORK, ebpf_mod._FORK.pack(1, 1000, 987_654_321_000)),
        _rec(F.EV_EXIT, ebpf_mod._EXIT.pack(987_654_321_000, 3 << 8 | 9, 0)),
        _rec(F.EV_EXIT, ebpf_mod._EXIT.pack(0, 0xFFFFFFFF, 0), pid=0xFFFFFFFF),
        _exec(b"/bin/true\0bench-1\0", b"true\0bin\0usr\0", b"tmp\0"),
        _exec(b"/bin/true\0bench-1", b"true\0bin\0usr\0", b"\0"),  # no trailing NUL
        _exec(b"", b"", b""),  # empty argv, no image, root cwd
        _exec(b"\0", b"x\0", b"a\0\0b\0"),  # an empty argument; an empty component
        _exec(b"caf\xc3\xa9\0\xff\xfe\0\xc3\0", b"\xe9t\xe9\0", b"d\xff\0"),  # invalid UTF-8
        _exec(b"a\0b\0", b"img\0", b"c\0", flags=F.F_IMAGE_DELETED),
        _exec(b"a\0", b"img\0", b"c\0", flags=F.F_ARGV_FAIL),
        _exec(b"a\0", b"rel/true\0", b"home\0", flags=F.F_IMAGE_FILENAME),  # Python decides
        _exec(b"a\0", b"memfd:x\0", b"c\0", flags=F.F_IMAGE_PSEUDO),  # Python decides
        _exec(b"a\0", b"img\0", b"c\0", flags=F.F_ARGV_TRUNC | F.F_PATH1_TRUNC),
        _exec(b"a\0", b"img\0", b"c\0", ns=(0, 0)),  # namespaces not read: None in both
        _exec(b"a\0", b"img\0", b"c\0", ns=(0xFFFFFFFF, 1)),
        _exec(b"a\0", b"img\0", b"c\0", abi=1),  # wrong ABI: an error in both
        _exec(b"a\0", b"img\0", b"c\0")[:-3],  # shorter than its lengths say
        _rec(F.EV_FORK, b"\0" * 5),  # short: an error in both
        b"",  # empty: an error in both
        b"\x01\x00",  # shorter than a header
        _rec(F.EV_PTRACE, ebpf_mod._PTRACE.pack(77, 0, 16)),  # another type: Python
        _rec(F.EV_NET, ebpf_mod._NET.pack(6, 2, 1, 0, 40000, 443, b"\x7f\0\0\x01" + bytes(12),
                                         b"\x0a\0\0\x02" + bytes(12))),
        _rec(F.EV_FILE_CREATE, ebpf_mod._PATH.pack(8, 0, -100) + b"f\0tmp\0\0\0"),
        _rec(99, b"\0" * 40),  # unknown type: an error in both
        _exec(b"a\0", b"img\0", b"c\0", ts=(1 << 64) - 1),  # a time beyond int64: Python
    ]
    rnd = random.Random(3)
    for _ in range(300):
        parts = [rnd.randbytes(rnd.randrange(0, 12)) for _ in range(rnd.randrange(0, 5))]
        recs.append(_exec(b"\0".join(parts) + (b"\0" if rnd.random() < 0.7 else b""),
                          b"\0".join(parts[:2]) + b"\0", rnd.randbytes(rnd.randrange(0, 9)),
                          flags=rnd.choice([0, 0, F.F_IMAGE_DELETED, F.F_ARGV_FAIL]),
                          pid=rnd.randrange(1, 1 << 32), tid=rnd.randrange(1, 1 << 32),
                          ts=rnd.randrange(0, 1 << 62)))
    return recs


def _python_decode(records: list):
    b = EbpfBackend(lambda obs: None)
    out = []
    for rec in records:
        try:
            obs = b._decode(rec, OFFSET)
        except Exception:  # noqa: BLE001 - counted as the backend counts it
            b._errors += 1
            continue
        if obs is not None:
            out.append(obs)
    return out, b._received, b._errors


def test_decoded_records_equal_the_python_decoder():
    records = _hand_made()
    native = rbmod.RingBatch(100_000, 1 << 30)
    cb, ring = _c_callback(), FakeRing(records)
    assert ring.poll(cb, native.ctx) == len(records)
    b = EbpfBackend(lambda obs: None)
    got, left = native.take_decoded(OFFSET, ebpf_mod._NS_PER_TICK, ebpf_mod._COMMON,
                                    b._received)
    assert len(native) == 0
    assert left == sum(type(x) is bytes for x in got) and 0 < left < len(records)
    got = b._decode_left(got, OFFSET)
    want, received, errors = _python_decode(records)
    assert [(type(o), o) for o in got] == [(type(o), o) for o in want]
    assert b._received == received and b._errors == errors
    assert errors == 5  # ABI, short fork, empty, short header, unknown type
    assert sum(type(o).__name__ in ("ProcessExec", "ProcessFork", "ProcessExit")
               for o in got) > 300


def test_take_decoded_bad_arguments():
    native = rbmod.RingBatch(4, 100)
    with pytest.raises(ValueError):
        native.take_decoded(0, 0, ebpf_mod._COMMON, [0] * 9)
    with pytest.raises(ValueError):
        native.take_decoded(0, 1, ebpf_mod._COMMON[:2], [0] * 9)
    with pytest.raises(ValueError):
        native.take_decoded(0, 1, ebpf_mod._COMMON, [0] * 8)


def test_repeated_decoding_keeps_no_memory():
    import tracemalloc
    records = _hand_made()[:40]
    native = rbmod.RingBatch(100_000, 1 << 30)
    cb = _c_callback()
    counters = [0] * 9

    def once():
        FakeRing(records).poll(cb, native.ctx)
        got, _left = native.take_decoded(OFFSET, ebpf_mod._NS_PER_TICK, ebpf_mod._COMMON,
                                         counters)
        return len(got)

    for _ in range(50):
        once()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(500):
        assert once() == 40
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert after - before < 64 * 1024, after - before  # 20,000 records: a leak would show
