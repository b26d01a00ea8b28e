"""The compiled ring-buffer consumer (``sysmonx.sensor._ringbatch``) against the ctypes callback
it replaces (``EbpfBackend._on_sample``), without a kernel: both are called the way libbpf calls
a ``ring_buffer_sample_fn`` (through a C function pointer, GIL released for the C one) on
made-up records, and a fake ring replays libbpf's poll loop (a negative return ends the poll
after the record was consumed). The live comparison is in tests/test_ringbatch_live.py."""

from __future__ import annotations

import ctypes
import os
import random
import shutil
import sysconfig
from pathlib import Path

import pytest

from sysmonx.sensor.backends import ebpf as ebpf_mod
from sysmonx.sensor.backends.ebpf import _BATCH_FULL, EbpfBackend
from sysmonx.sensor.bpf.libbpf import SAMPLE_CB

rbmod = pytest.importorskip("sysmonx.sensor._ringbatch",
                            reason="the C extension is not built (pure path only)")


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


def test_compiled_consumer_is_chosen_where_it_can_be():
    """Where a C compiler and Python.h exist (CI), the install built the consumer and the
    backend uses it unless SYSMONX_PURE_PYTHON is set (then the ctypes callback)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    header = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not compiler or not header.is_file():
        pytest.skip("no C compiler or no Python headers here: the pure path is expected")
    if os.environ.get("SYSMONX_PURE_PYTHON", "") not in ("", "0"):
        assert ebpf_mod._ringbatch is None
    else:
        assert ebpf_mod._ringbatch is rbmod
