#!/usr/bin/env python3
"""Peak memory and throughput of replay at 1x, 10x and 100x the size of a corpus file.

    python bench/bench_size.py [--corpus DIR] [--sizes 1,10,100] [--inputs evtx,jsonl,...]
                               [--rules PATH [--rule-cache DIR] [--where]]
                               [--output xml|linux-xml|jsonl|csv|ecs|sqlite|none]
                               [--config FILE|none]

Issue 6.3: memory must be flat in input size: peak RSS at 100x at most 1.5x peak RSS at 1x.

Inputs, built in a temporary folder (``--keep DIR`` keeps them) by repeating real data:

``evtx``
    ``PanacheSysmon_vs_AtomicRedTeam01.evtx`` (1.1 MB, 15 chunks, 565 Sysmon records) made N
    times longer as a *valid* EVTX file: EVTX files cannot be concatenated (one file header,
    chunk numbering, record numbers), so the file header is kept and the 15 chunks are written
    N times, each copy with its record numbers shifted by 565 x copy in every record header and
    in the chunk header (first/last record number and id), and the chunk's two CRC32 checksums
    (event records, header) recomputed; the file header gets the new chunk count, last chunk
    number and next record number and its CRC32 (``chunk count`` is 16 bits: at most 65,535
    chunks, 4 GiB). The built file is checked: pyevtx-rs reads exactly 565 x N records with no
    error, and so does SysmonX (no record is reported as damaged or recovered).
``jsonl``, ``xml``
    the same 565 records rendered once by SysmonX's JSON lines / Windows event XML writer, the
    rendering repeated N times (line-oriented formats concatenate).
``flatjson``
    the Security-Datasets member ``psh_cmstp_execution_bypassuac_*.json`` (1.76 MB, one JSON
    object per line, Security-Datasets' flat export), its lines repeated N times.
``flatjson-gz``
    that repeated file gzip-compressed, read in place through the archive reader.
``evtx-zip`` (not in the default set)
    the built EVTX as a member of a zip archive. pyevtx-rs needs a seekable file, so the archive
    reader holds an EVTX member in memory (up to 256 MiB, ``sources/archive.py``): memory grows
    with the member by design and this input is left out of the 1.5x verdict.

Each (input, size) is replayed in a fresh Python process (so peaks do not carry over) the way
``sysmonx replay FILE --config CFG -f FORMAT -o /dev/null`` does it: the config compiled, the
input read, filtered and written to ``/dev/null``. Every input repeats the same events (the
built EVTX renumbers record headers, but the events keep their EventRecordID and time), so they
are replayed as with ``--keep-duplicates`` (otherwise every copy but the first would be dropped
unwritten); a record dropped as a duplicate stops the bench. The child reports its resident set after
imports and config compilation (``VmRSS``), its peak resident set (``VmHWM`` from
``/proc/self/status``), the records read and the wall time of the replay. Printed per input:
records, records/s, peak RSS, growth of the peak over the post-import baseline, and
peak(Nx)/peak(1x). (``getrusage().ru_maxrss`` is not used for the peak: Linux carries it over
``fork`` + ``execve`` from the parent, so a child's value is at least the parent's RSS at the time;
``VmHWM`` belongs to the child's own address space.)

``--rules PATH`` runs Sigma rules in every child as ``sysmonx replay --rules PATH`` does (the
detection stage after the filter, alerts into the event stream as event 1000, written with the
events): compiled in the child, or with ``--rule-cache DIR`` taken from a cache a separate
process filled first (what a second ``sysmonx replay`` does). The child then also reports its
resident set after the imports, after the config, after compiling the rules (and the peak while
compiling), before and after the pass, and the alerts. ``--where`` adds one child per
measurement that traces Python allocations (``tracemalloc``) and prints the source files and
lines holding the most memory after compiling the rules, and what the pass added and still holds
(its RSS is inflated by the tracing: those runs are not the measurement).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from _common import default_corpus  # noqa: E402

EVTX_REL = ("evtx/sbousseaden__EVTX-ATTACK-SAMPLES/AutomatedTestingTools/"
            "PanacheSysmon_vs_AtomicRedTeam01.evtx")
FLAT_REL = ("json/OTRF__Security-Datasets/datasets/atomic/windows/defense_evasion/host/"
            "psh_cmstp_execution_bypassuac.zip")
CONFIG_REL = "configs/SwiftOnSecurity__sysmon-config/sysmonconfig-export.xml"
INPUTS = ("evtx", "jsonl", "xml", "flatjson", "flatjson-gz")
EXTRA_INPUTS = ("evtx-zip",)
#: Inputs whose memory grows with their size by design (not held to the 1.5x target).
IN_MEMORY = frozenset({"evtx-zip"})

_HEADER_BLOCK = 4096
_CHUNK = 65536


# ---- building the inputs ------------------------------------------------------------------------

def _chunks(data: bytes) -> list[bytes]:
    """The chunks of an EVTX file that carry records (slots with the chunk magic)."""
    out = []
    for off in range(_HEADER_BLOCK, len(data) - _CHUNK + 1, _CHUNK):
        chunk = data[off:off + _CHUNK]
        if chunk.startswith(b"ElfChnk\x00"):
            out.append(chunk)
    return out


def _renumber_chunk(chunk: bytes, shift: int) -> bytes:
    """``chunk`` with every record number (record headers, chunk header) plus ``shift`` and both
    checksums recomputed."""
    c = bytearray(chunk)
    first, last, first_id, last_id = struct.unpack_from("<QQQQ", c, 8)
    struct.pack_into("<QQQQ", c, 8, first + shift, last + shift, first_id + shift,
                     last_id + shift)
    free = struct.unpack_from("<I", c, 48)[0]
    pos = 512
    while pos + 24 <= free:
        if c[pos:pos + 4] != b"**\x00\x00":
            raise ValueError(f"record magic missing at chunk offset {pos}")
        size, rid = struct.unpack_from("<IQ", c, pos + 4)
        struct.pack_into("<Q", c, pos + 8, rid + shift)
        pos += size
    struct.pack_into("<I", c, 52, zlib.crc32(bytes(c[512:free])))
    struct.pack_into("<I", c, 124, zlib.crc32(bytes(c[:120]) + bytes(c[128:512])))
    return bytes(c)


def build_evtx(src: Path, copies: int, dst: Path) -> int:
    """Write ``dst``: ``src``'s chunks ``copies`` times, renumbered (module docstring).
    Returns the number of records."""
    data = src.read_bytes()
    chunks = _chunks(data)
    per_copy = struct.unpack_from("<Q", chunks[-1], 16)[0] - \
        struct.unpack_from("<Q", chunks[0], 8)[0] + 1
    total_chunks = len(chunks) * copies
    if total_chunks > 0xFFFF:
        raise ValueError("more than 65,535 chunks: EVTX cannot hold that")
    head = bytearray(data[:_HEADER_BLOCK])
    struct.pack_into("<QQQ", head, 8, 0, total_chunks - 1, per_copy * copies + 1)
    struct.pack_into("<H", head, 42, total_chunks)
    struct.pack_into("<I", head, 120, 0)  # flags: clean
    struct.pack_into("<I", head, 124, zlib.crc32(bytes(head[:120])))
    with open(dst, "wb") as f:
        f.write(head)
        for k in range(copies):
            for chunk in chunks:
                f.write(_renumber_chunk(chunk, k * per_copy) if k else chunk)
    return per_copy * copies


def repeat_file(src: Path, copies: int, dst: Path) -> None:
    """``dst`` = ``src``'s bytes ``copies`` times (``src`` must end with a line break)."""
    with open(dst, "wb") as out:
        for _ in range(copies):
            with open(src, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)


def render(evtx: Path, fmt: str, dst: Path) -> None:
    """``evtx`` rendered once by SysmonX's ``fmt`` writer into ``dst``."""
    from sysmonx.pipeline import Replayer, ReplayOptions, make_writer
    with make_writer(fmt, open(dst, "wb")) as w:
        Replayer(ReplayOptions(), w).run([str(evtx)])


def build_inputs(corpus: Path, work: Path, sizes: list[int], inputs: list[str]) -> dict:
    """``{input: {size: path}}`` of the inputs (module docstring), built in ``work``."""
    evtx = corpus / EVTX_REL
    out: dict = {}
    base = {}
    if "jsonl" in inputs:
        base["jsonl"] = work / "base.jsonl"
        render(evtx, "jsonl", base["jsonl"])
    if "xml" in inputs:
        base["xml"] = work / "base.xml"
        render(evtx, "xml", base["xml"])
    if "flatjson" in inputs or "flatjson-gz" in inputs:
        with zipfile.ZipFile(corpus / FLAT_REL) as z:
            member = next(n for n in z.namelist() if n.endswith(".json") and "MACOSX" not in n)
            raw = z.read(member)
        if not raw.endswith(b"\n"):
            raw += b"\n"
        base["flatjson"] = work / "base.flat.json"
        base["flatjson"].write_bytes(raw)
    for name in inputs:
        out[name] = {}
        for n in sizes:
            if name == "evtx":
                p = work / f"x{n}.evtx"
                build_evtx(evtx, n, p)
            elif name == "evtx-zip":
                p = work / f"x{n}.evtx.zip"
                member = work / f"x{n}.member.evtx"
                build_evtx(evtx, n, member)
                with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
                    z.write(member, f"x{n}.evtx")
                member.unlink()
            elif name == "flatjson-gz":
                p = work / f"x{n}.flat.json.gz"
                src = out.get("flatjson", {}).get(n)
                if src is None:
                    src = work / f"x{n}.flat.json.tmp"
                    repeat_file(base["flatjson"], n, src)
                with open(src, "rb") as f, gzip.open(p, "wb", compresslevel=1) as g:
                    shutil.copyfileobj(f, g, 1 << 20)
                if src.name.endswith(".tmp"):
                    src.unlink()
            else:
                suffix = {"jsonl": ".jsonl", "xml": ".xml", "flatjson": ".flat.json"}[name]
                p = work / f"x{n}{suffix}"
                repeat_file(base[name], n, p)
            out[name][n] = p
    return out


# ---- measuring ----------------------------------------------------------------------------------

CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, sys.argv[1])

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0

path, fmt, cfg, keep = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] == "keep"
rules, cache_dir, where = sys.argv[7], sys.argv[8], sys.argv[9] == "where"
from sysmonx.config import load_config
from sysmonx.pipeline import Replayer, ReplayOptions, make_writer
import sysmonx.sources.evtx, sysmonx.sources.jsonshapes, sysmonx.sources.archive  # noqa
if rules != "none":
    from sysmonx.detection import DetectionStage
    from sysmonx.detection.cache import RuleCache
phases = {"imports": status("VmRSS")}
config = None if cfg == "none" else load_config(cfg)
phases["config"] = status("VmRSS")
if where:
    import tracemalloc
    tracemalloc.start(1)
stage = None
if rules != "none":
    stage = DetectionStage.from_paths([rules], cache=RuleCache(cache_dir) if cache_dir != "none"
                                      else None)
    phases["rules"] = status("VmRSS")
    phases["rules_hwm"] = status("VmHWM")
top_rules = top_pass = top_lines = None
if where:
    import gc
    gc.collect()

    def top(snap, base=None, n=12):
        flt = [tracemalloc.Filter(False, tracemalloc.__file__)]
        snap = snap.filter_traces(flt)
        stats = snap.compare_to(base.filter_traces(flt), "filename") if base is not None \
            else snap.statistics("filename")
        root = sys.argv[1]
        return [[(s.traceback[0].filename.replace(root + "/", "")), s.size,
                 getattr(s, "size_diff", s.size), s.count] for s in stats[:n]]
    snap_rules = tracemalloc.take_snapshot()
    top_rules = top(snap_rules)
    top_lines = [[s.traceback[0].filename.replace(sys.argv[1] + "/", "") + ":" +
                  str(s.traceback[0].lineno), s.size, s.size, s.count]
                 for s in snap_rules.statistics("lineno")[:10]]
    phases["traced_rules"] = tracemalloc.get_traced_memory()[0]
sinks = []
if fmt == "sqlite":  # the event store: a new database file per run
    from sysmonx.sinks.sqlite import SqliteSink
    writer = None
    sinks = [SqliteSink(sys.argv[6])]
else:
    writer = None if fmt == "none" else make_writer(fmt, open(os.devnull, "wb"))
errors = []
replayer = Replayer(ReplayOptions(config=config, keep_duplicates=keep), writer,
                    on_error=errors.append, sinks=sinks, detection=stage)
baseline = status("VmRSS")
t = time.perf_counter()
replayer.run([path])
elapsed = time.perf_counter() - t
phases["pass"] = status("VmRSS")
if where:
    gc.collect()
    top_pass = top(tracemalloc.take_snapshot(), snap_rules)
    phases["traced_pass"], phases["traced_peak"] = tracemalloc.get_traced_memory()
if writer is not None:
    writer.close()
replayer.close()
stored = None
if fmt == "sqlite":
    import sqlite3
    stored = sqlite3.connect(sys.argv[6]).execute("SELECT count(*) FROM events").fetchone()[0]
    os.unlink(sys.argv[6])
print(json.dumps({"records": replayer.stats.records, "errors": len(errors), "stored": stored,
                  "included": sum(replayer.stats.included.values()),
                  "duplicates": replayer.stats.duplicates,
                  "first_error": str(errors[0]) if errors else None,
                  "seconds": elapsed, "baseline": baseline, "hwm": status("VmHWM"),
                  "phases": phases, "top_rules": top_rules, "top_pass": top_pass,
                  "top_lines": top_lines,
                  "rules": stage.rules_loaded if stage is not None else None,
                  "alerts": stage.stats.alerts if stage is not None else None,
                  "cache": stage.cache_status if stage is not None else None,
                  "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


#: Inputs that repeat the same events (same EventRecordID and time in every copy: the built
#: EVTX renumbers the record headers, not the events): all of them. They are replayed with the
#: duplicate filter off, or it would drop every copy but the first and the figures would measure
#: nothing; the filter's own memory (8 bytes per distinct record, bounded) is not in these rows.
REPEATED_RECORDS = frozenset({"evtx", "evtx-zip", "jsonl", "xml", "flatjson", "flatjson-gz"})


def measure(path: Path, fmt: str, config: str, keep_duplicates: bool = False,
            rules: Optional[str] = None, rule_cache: Optional[str] = None,
            where: bool = False) -> dict:
    """Replay ``path`` in a fresh interpreter; the child's figures (see :data:`CHILD`).

    ``rules``: Sigma rules run through the detection stage as ``sysmonx replay --rules`` does
    (compiled in the child, or taken from ``rule_cache``); ``where``: trace allocations
    (``tracemalloc``, grouped by source file) after compiling the rules and over the pass: the
    figures of such a run are inflated by the tracing and are not the measurement.

    Raises:
        RuntimeError: records were dropped as duplicates (the measurement would be hollow), or
            the rules were to run and none was compiled.
    """
    db = str(path) + ".store.db"
    r = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "src"), str(path), fmt, config,
                        "keep" if keep_duplicates else "dedup", db, rules or "none",
                        rule_cache or "none", "where" if where else "-"],
                       capture_output=True, text=True, check=True)
    out = json.loads(r.stdout)
    if out["duplicates"]:
        raise RuntimeError(f"{path}: {out['duplicates']} records dropped as duplicates")
    if fmt == "sqlite" and out["stored"] != out["included"]:
        raise RuntimeError(f"{path}: {out['included']} events included, {out['stored']} stored")
    if rules and not out["rules"]:
        raise RuntimeError(f"{path}: no Sigma rule compiled from {rules}")
    return out


def _mb(n: int) -> str:
    return f"{n / 2**20:8.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=default_corpus())
    ap.add_argument("--sizes", default="1,10,100", help="multiples of the corpus file")
    ap.add_argument("--inputs", default=",".join(INPUTS),
                    help=f"any of {', '.join(INPUTS + EXTRA_INPUTS)}")
    ap.add_argument("--output", default="xml",
                    choices=["xml", "linux-xml", "jsonl", "csv", "ecs", "sqlite", "none"],
                    help="a stream format written to /dev/null, or 'sqlite': the event store "
                         "(a new database file next to the input; rows checked, then deleted)")
    ap.add_argument("--config", default=None,
                    help="Sysmon config (default: SwiftOnSecurity's from the corpus; 'none': "
                         "no filtering)")
    ap.add_argument("--keep", metavar="DIR", help="build the inputs in DIR and keep them")
    ap.add_argument("--rules", metavar="PATH",
                    help="Sigma rules (file, folder or .tar.gz bundle) run through the detection "
                         "stage in every child, as `sysmonx replay --rules` does (e.g. "
                         "<corpus>/sigma/sigmahq_rules_sysmon_categories.tar.gz); default none")
    ap.add_argument("--rule-cache", metavar="DIR",
                    help="with --rules: take the compiled rules from this cache (filled first "
                         "by a separate process) instead of compiling them in each child")
    ap.add_argument("--where", action="store_true",
                    help="with --rules: one more child per measurement traces allocations "
                         "(tracemalloc) and prints the top source files after compiling the "
                         "rules and what the pass added (slower; not the measured figures)")
    args = ap.parse_args()
    corpus = Path(args.corpus)
    if not (corpus / EVTX_REL).is_file():
        print(f"corpus file missing: {corpus / EVTX_REL}; set --corpus or SYSMONX_CORPUS",
              file=sys.stderr)
        return 1
    if args.rules and not Path(args.rules).exists():
        print(f"--rules: {args.rules}: no such file or folder", file=sys.stderr)
        return 1
    if (args.rule_cache or args.where) and not args.rules:
        print("--rule-cache and --where need --rules", file=sys.stderr)
        return 1
    sizes = [int(x) for x in args.sizes.split(",")]
    inputs = [x for x in args.inputs.split(",") if x]
    config = args.config or str(corpus / CONFIG_REL)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="sysmonx-size-"))
    work.mkdir(parents=True, exist_ok=True)
    worst = 1.0
    measured = 0
    try:
        built = build_inputs(corpus, work, sizes, inputs)
        if "evtx" in built:  # the built EVTX must be valid: every record, no error
            from evtx import PyEvtxParser
            for n, p in built["evtx"].items():
                count = sum(1 for _ in PyEvtxParser(str(p)).records_json())
                if count != 565 * n:
                    print(f"built EVTX x{n}: pyevtx-rs read {count} records, expected {565 * n}",
                          file=sys.stderr)
                    return 1
        if args.rule_cache:
            fill_rule_cache(args.rules, args.rule_cache)
        print(f"output: {args.output}  config: {Path(config).name if config != 'none' else 'none'}"
              f"  python {sys.version.split()[0]}  cpus: {os.cpu_count()}  load average: "
              f"{_load()}")
        if args.rules:
            how = f"from the cache {args.rule_cache}" if args.rule_cache else \
                "compiled in each child"
            print(f"rules: {args.rules} ({how})")
            print("RSS MB after: imports, + config, + rules compiled (peak while compiling), "
                  "before the pass, after the pass; peak = VmHWM of the whole child")
            print(f"{'input':12} {'size':>5} {'file MB':>8} {'records':>9} {'rec/s':>7} "
                  f"{'imports':>8} {'config':>7} {'rules':>7} {'(peak)':>7} {'pre':>7} "
                  f"{'post':>7} {'peak MB':>8} {'peak/1x':>8} {'alerts':>7}  errors")
        else:
            print(f"{'input':12} {'size':>5} {'file MB':>9} {'records':>9} {'rec/s':>9} "
                  f"{'base MB':>8} {'peak MB':>8} {'growth':>8} {'peak/1x':>8}  errors")
        for name in inputs:
            first_peak = None
            for n in sizes:
                p = built[name][n]
                m = measure(p, args.output, config, name in REPEATED_RECORDS, args.rules,
                            args.rule_cache)
                if m["records"] == 0:
                    raise RuntimeError(f"{p}: no record read")
                if args.rule_cache and m["cache"] != "cached":
                    raise RuntimeError(f"{p}: the rules were {m['cache']}, not from the cache")
                measured += 1
                peak = m["hwm"]
                first_peak = first_peak or peak
                ratio = peak / first_peak
                if n != sizes[0] and name not in IN_MEMORY:
                    worst = max(worst, ratio)
                tail = f"  {m['errors']}" + \
                    (f" ({m['first_error']})" if m["errors"] else "") + \
                    ("  (in memory by design)" if name in IN_MEMORY else "")
                if args.rules:
                    ph = m["phases"]
                    print(f"{name:12} {str(n) + 'x':>5} {_mb(p.stat().st_size)[1:]:>8} "
                          f"{m['records']:9,} {m['records'] / m['seconds']:7,.0f} "
                          f"{_mb(ph['imports'])} {_mb(ph['config'])[1:]} {_mb(ph['rules'])[1:]} "
                          f"{_mb(ph['rules_hwm'])[1:]} {_mb(m['baseline'])[1:]} "
                          f"{_mb(ph['pass'])[1:]} {_mb(peak)} {ratio:8.2f} {m['alerts']:7,}"
                          + tail)
                    if args.where:
                        _print_where(measure(p, args.output, config, name in REPEATED_RECORDS,
                                             args.rules, args.rule_cache, where=True))
                else:
                    print(f"{name:12} {str(n) + 'x':>5} {_mb(p.stat().st_size):>9} "
                          f"{m['records']:9,} {m['records'] / m['seconds']:9,.0f} "
                          f"{_mb(m['baseline'])} {_mb(peak)} {_mb(peak - m['baseline'])} "
                          f"{ratio:8.2f}" + tail)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if not measured:
        print("error: nothing was measured", file=sys.stderr)
        return 1
    print(f"load average at the end: {_load()}")
    if any(name not in IN_MEMORY for name in inputs) and len(sizes) > 1:
        print(f"largest peak RSS ratio to 1x: {worst:.2f} (target <= 1.5; streaming inputs)")
    return 0 if worst <= 1.5 else 2


def fill_rule_cache(rules: str, cache_dir: str) -> None:
    """Compile ``rules`` into the rule cache at ``cache_dir`` in a separate process (so its
    memory is not in any measurement)."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]);"
            "from sysmonx.detection import DetectionStage;"
            "from sysmonx.detection.cache import RuleCache;"
            "DetectionStage.from_paths([sys.argv[2]], cache=RuleCache(sys.argv[3]))")
    subprocess.run([sys.executable, "-c", code, str(ROOT / "src"), rules, cache_dir],
                   check=True, capture_output=True)


def _load() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def _print_where(m: dict) -> None:
    """The ``--where`` child's allocation tables (Python allocations only, by source file)."""
    ph = m["phases"]
    print(f"    traced Python memory: {_mb(ph['traced_rules']).strip()} MB after compiling the "
          f"rules, {_mb(ph['traced_pass']).strip()} MB after the pass (traced peak "
          f"{_mb(ph['traced_peak']).strip()} MB); RSS with tracing {_mb(m['hwm']).strip()} MB")
    print("    after compiling the rules, by source file (MB, blocks):")
    for f, size, _, count in m["top_rules"]:
        print(f"      {size / 2**20:7.2f} {count:9,}  {f}")
    print("    after compiling the rules, by source line (MB, blocks):")
    for f, size, _, count in m["top_lines"]:
        print(f"      {size / 2**20:7.2f} {count:9,}  {f}")
    print("    added by the pass and still held, by source file (MB, blocks):")
    for f, _, diff, count in m["top_pass"]:
        if diff:
            print(f"      {diff / 2**20:+7.2f} {count:9,}  {f}")

if __name__ == "__main__":
    sys.exit(main())
