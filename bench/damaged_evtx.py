#!/usr/bin/env python3
"""Records recovered from damaged EVTX files: SysmonX vs raw pyevtx-rs iteration, per damage.

    python bench/damaged_evtx.py [--corpus DIR]

Builds damaged copies of a corpus EVTX (565 records, 17 chunks) in a temp dir — chunk header magic
broken, chunk checksum wrong, a record's size field broken, the first record of a chunk with its
size zeroed, a chunk header that overstates its records (evtx crate issue 197, not damage), the
file truncated mid-chunk, the file header broken — then counts the records raw pyevtx-rs
iteration yields (stopping at nothing: every exception is skipped, as a careful caller would) and
the events SysmonX reads, with the number of error lines (records lost) and SysmonX's first line
(error or warning). SysmonX should read at least what pyevtx-rs reads, with one line per damaged
spot and no error where nothing was lost.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import zlib
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from evtx import PyEvtxParser  # noqa: E402

from sysmonx.sources import open_source  # noqa: E402

SAMPLE = "evtx/sbousseaden__EVTX-ATTACK-SAMPLES/AutomatedTestingTools/PanacheSysmon_vs_AtomicRedTeam01.evtx"
CHUNK0 = 4096
CHUNK = 65536


def first_record(data: bytes, chunk: int) -> int:
    return CHUNK0 + chunk * CHUNK + 512


def damage(data: bytes, kind: str) -> bytes:
    b = bytearray(data)
    if kind == "chunk_magic":
        b[CHUNK0 + 2 * CHUNK:CHUNK0 + 2 * CHUNK + 8] = b"XXXXXXXX"
    elif kind == "chunk_checksum":
        off = CHUNK0 + 3 * CHUNK + 124  # header CRC32 of chunk 3
        b[off:off + 4] = bytes(x ^ 0xFF for x in b[off:off + 4])
    elif kind == "record_size":
        r = first_record(data, 4)
        size = struct.unpack_from("<I", b, r + 4)[0]
        r2 = r + size
        struct.pack_into("<I", b, r2 + 4, 0x7FFFFFF0)
    elif kind == "record_size_zero":
        r = first_record(data, 5)
        struct.pack_into("<I", b, r + 4, 0)
    elif kind == "overstated_header":  # evtx crate issue 197: no damage at all
        o = CHUNK0 + 3 * CHUNK
        last_n, _, last_id = struct.unpack_from("<QQQ", b, o + 16)
        free = struct.unpack_from("<I", b, o + 48)[0]
        b[o + free:o + CHUNK] = bytes(CHUNK - free)
        struct.pack_into("<Q", b, o + 16, last_n + 2)
        struct.pack_into("<Q", b, o + 32, last_id + 2)
        struct.pack_into("<I", b, o + 48, min(CHUNK, free + 600))
        struct.pack_into("<I", b, o + 124, zlib.crc32(bytes(b[o:o + 120]) + bytes(b[o + 128:o + 512])))
    elif kind == "truncated":
        return bytes(b[:CHUNK0 + 10 * CHUNK + 30000])
    elif kind == "file_header":
        b[0:8] = b"NotAnEvt"
    return bytes(b)


def raw_count(path: str) -> int:
    n = 0
    try:
        it = PyEvtxParser(path).records_json()
    except Exception:  # noqa: BLE001 - a file the reader refuses has no record to count
        return 0
    while True:
        try:
            next(it)
            n += 1
        except StopIteration:
            return n
        except Exception:  # noqa: BLE001 - a damaged record is skipped, as the reader goes on
            continue


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=os.environ.get("SYSMONX_CORPUS")
                    or str(ROOT.parent / "shared" / "corpus"))
    args = ap.parse_args()
    src = Path(args.corpus) / SAMPLE
    if not src.exists():
        print(f"missing {src}", file=sys.stderr)
        return 1
    data = src.read_bytes()
    print(f"{'damage':18} {'pyevtx-rs':>9} {'sysmonx':>8} {'errors':>6}  first error")
    with tempfile.TemporaryDirectory() as d:
        for kind in ("none", "chunk_magic", "chunk_checksum", "record_size", "record_size_zero",
                     "overstated_header", "truncated", "file_header"):
            p = os.path.join(d, f"{kind}.evtx")
            with open(p, "wb") as f:
                f.write(data if kind == "none" else damage(data, kind))
            notes = []
            n = sum(1 for _ in open_source(p, notes.append))
            errors = [e for e in notes if e.severity == "error"]
            first = (f"{notes[0].severity}: " + str(notes[0]).replace(p, kind + ".evtx"))[:90] \
                if notes else ""
            print(f"{kind:18} {raw_count(p):9} {n:8} {len(errors):6}  {first}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
