"""The compiled assembly of ProcessCreate (1) and ProcessTerminate (5) gives exactly the events of
the Python methods that define them (:meth:`Assembler._exec`, :meth:`Assembler._exit`).

The live source's hot path calls ``Assembler.exec_events``/``exit_event``; when
``sysmonx.sensor._ringbatch`` is built (and ``SYSMONX_PURE_PYTHON`` is not set) those are the
compiled ``Builder``'s methods. Each test runs the same observations through a compiled and a
pure assembler (each with its own process cache) and compares every event field by field and in
order, with the odd cases: a missing image, deleted and fileless images (ProcessTampering 25
after the 1), long command lines with quotes, control characters and bytes that are not UTF-8,
kernel threads (no image, no argv, parent 2), unknown users and parents, unset and set session
ids, exits of processes never seen (with and without a start time, a pid reused since),
times on second boundaries and before 1970, and a hasher replaced after the assembler was made
(as the live source does).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from sysmonx.sensor import assemble as asm_mod
from sysmonx.sensor import observations as ob
from sysmonx.sensor.assemble import Assembler
from sysmonx.sensor.process import FileHasher, ProcessCache

pytest.importorskip("sysmonx.sensor._ringbatch", reason="the C extension is not built")
pytestmark = pytest.mark.skipif(asm_mod._Builder is None,
                                reason="compiled assembly disabled (SYSMONX_PURE_PYTHON)")

BASE = 3_500_000  # pids above any pid_max: no /proc entry, so both caches see the same facts
TS = 1_796_000_000_000_000_000


def fields(e) -> tuple:
    """Everything an event carries, data in order."""
    return (type(e), e.event_id, list(e.data.items()), e.provider, e.provider_guid, e.version,
            e.level, e.task, e.opcode, e.keywords, e.time_created, e.record_id, e.process_id,
            e.thread_id, e.channel, e.computer, e.user_id, e.origin)


def pair() -> tuple:
    """A compiled and a pure assembler over caches of the same machine."""
    compiled = Assembler(ProcessCache(machine="0a1b2c3d"), computer="host-a")
    pure = Assembler(ProcessCache(machine="0a1b2c3d"), computer="host-a")
    assert compiled.assembly == "compiled"
    return compiled, pure


def run(items: list, compiled: Assembler, pure: Assembler) -> tuple:
    """The events of ``items`` (execs and exits) through both; each as a list of fields."""
    got, want = [], []
    for o in items:
        if type(o) is ob.ProcessExec:
            got.extend(fields(e) for e in compiled.exec_events(o))
            want.extend(fields(e) for e in Assembler._exec(pure, o))
        else:
            got.append(fields(compiled.exit_event(o)))
            want.append(fields(Assembler._exit(pure, o)))
    return got, want


def odd_workload() -> list:
    me = os.getpid()
    long_cmd = ["/bin/sh", "-c", 'echo "a \\"quoted\\" word" \'single\' `tick` $(sub) ; '
                + "x" * 70_000]
    non_utf8 = ["/opt/\udcff\udcfebin", "arg\udce9", "\udcc3\udca9t\udce9", "tab\there",
                "nl\nline", "nul-free \u00e9\u4e2d\U0001f600", "\x1b[31mred"]
    out: list = []
    cases = [
        dict(image="/usr/bin/true", argv=["/bin/true", "plain"], cwd="/", uid=0, ppid=me),
        dict(image=None, argv=None, cwd=None, uid=None, ppid=None),  # nothing known
        dict(image="", argv=[], cwd="", uid=1000, ppid=0),  # empty facts
        dict(image="/tmp/gone (deleted)", argv=["/tmp/gone"], cwd="/tmp", uid=0, ppid=me),
        dict(image="/memfd:payload (deleted)", argv=["x"], cwd="/", uid=0, ppid=me),
        dict(image="/dev/zero (deleted)", argv=["y"], cwd="/", uid=0, ppid=1),
        dict(image="/usr/bin/sh", argv=long_cmd, cwd='/tmp/"q"', uid=54_321, ppid=me),
        dict(image=non_utf8[0], argv=non_utf8, cwd="/\udcffdir", uid=65_534, ppid=BASE),
        dict(image=None, argv=[], cwd=None, uid=0, ppid=2),  # a kernel thread
        dict(image="/usr/bin/true", argv=["true"], cwd="/", uid=0, ppid=BASE + 1),  # child
        dict(image="/usr/bin/true", argv=["true"], cwd="/", uid=2**32 - 1, ppid=me,
             sessionid=None),
    ]
    for i, c in enumerate(cases):
        pid = BASE + i
        sid = c.pop("sessionid", 4_294_967_295 if i % 2 else 3 + i)
        # second boundaries, the last millisecond of a second
        ts = TS + i * 999_999_999 + (999_999_999 if i % 3 == 0 else 0)
        out.append(ob.ProcessExec(ts_ns=ts, pid=pid, start_ticks=500 + i, auid=1000,
                                  sessionid=sid, end_data=0x5000 + i, **c))
    for i in range(len(cases)):
        out.append(ob.ProcessExit(ts_ns=TS + 20 * 10**9 + i, pid=BASE + i, start_ticks=500 + i))
    out += [
        ob.ProcessExit(ts_ns=TS + 30 * 10**9, pid=BASE + 900, start_ticks=77),  # never seen
        ob.ProcessExit(ts_ns=TS + 30 * 10**9 + 1, pid=BASE + 901),  # never seen, no start
        ob.ProcessExit(ts_ns=TS + 31 * 10**9, pid=BASE + 1, start_ticks=9_999),  # pid reused
        ob.ProcessExit(ts_ns=TS + 32 * 10**9, pid=BASE + 2),  # exited twice
        # an exit before its exec (the exec arrives late: the cache marks it late_exec)
        ob.ProcessExit(ts_ns=TS + 40 * 10**9, pid=BASE + 950, start_ticks=950),
        ob.ProcessExec(ts_ns=TS + 39 * 10**9, pid=BASE + 950, ppid=me, start_ticks=950,
                       image="/usr/bin/late", argv=["late"], cwd="/", uid=0, auid=0,
                       sessionid=1, end_data=1),
        ob.ProcessExec(ts_ns=-1_500_000_001, pid=BASE + 960, ppid=me, start_ticks=1,
                       image="/usr/bin/old", argv=["old"], cwd="/", uid=0, auid=0,
                       sessionid=1, end_data=1),  # before 1970: floor division
        ob.ProcessExit(ts_ns=0, pid=BASE + 960, start_ticks=1),
    ]
    return out


def test_odd_cases_give_identical_events():
    compiled, pure = pair()
    got, want = run(odd_workload(), compiled, pure)
    assert len(got) == len(want) == 11 + 3 + 11 + 4 + 4
    assert got == want
    types = [f[1] for f in got]
    assert types.count(25) == 3  # deleted, memfd, /dev/zero
    data = {(f[1], dict(f[2])["ProcessId"]): dict(f[2]) for f in got}
    assert data[(1, str(BASE + 1))]["Image"] == "-"
    assert data[(1, str(BASE + 1))]["CommandLine"] == "-"
    assert data[(1, str(BASE + 7))]["CommandLine"].startswith("/opt/\ufffd\ufffdbin arg\ufffd")
    assert data[(1, str(BASE + 6))]["CommandLine"].endswith("x" * 70_000)
    assert data[(1, str(BASE + 6))]["User"] == "54321"
    assert data[(5, str(BASE + 901))]["ProcessGuid"] == "{00000000-0000-0000-0000-000000000000}"


def test_many_execs_with_parents_and_exits_identical():
    """A larger run: children of earlier processes, exits interleaved, the cache warm."""
    compiled, pure = pair()
    items: list = []
    me = os.getpid()
    for i in range(600):
        pid = BASE + 1000 + i
        items.append(ob.ProcessExec(ts_ns=TS + i * 1_700_000, pid=pid,
                                    ppid=BASE + 1000 + i // 2 if i else me, start_ticks=i,
                                    image="/usr/bin/true" if i % 9 else "/x (deleted)",
                                    argv=["true", str(i)], cwd="/", uid=i % 3,
                                    auid=4_294_967_295, sessionid=i % 4, end_data=i))
        if i % 3 == 2:
            items.append(ob.ProcessExit(ts_ns=TS + i * 1_700_000 + 5, pid=pid - 1,
                                        start_ticks=i - 1))
    got, want = run(items, compiled, pure)
    assert len(got) == 600 + 200 + 67
    assert got == want


def test_replaced_hasher_and_changed_envelope_are_used():
    """The live source sets ``assembler.hasher`` after making it: the compiled path reads the
    assembler's attributes at every call, as the Python method does."""
    compiled, pure = pair()
    for a in (compiled, pure):
        a.hasher = FileHasher(["MD5", "SHA1"])
        a.computer = "renamed"
    o = ob.ProcessExec(ts_ns=TS, pid=BASE + 5000, ppid=os.getpid(), start_ticks=1,
                       image=sys.executable, argv=["py"], cwd="/", uid=0, auid=0, sessionid=1,
                       end_data=1)
    got, want = run([o], compiled, pure)
    assert got == want
    assert dict(got[0][2])["Hashes"].startswith("SHA1=")
    assert got[0][15] == "renamed"


def test_thread_id_is_the_building_thread():
    compiled, _ = pair()
    box: list = []

    def build() -> None:
        box.append((threading.get_native_id(), compiled.exit_event(
            ob.ProcessExit(ts_ns=TS, pid=BASE + 6000, start_ticks=3))))

    t = threading.Thread(target=build)
    t.start()
    t.join()
    native, event = box[0]
    assert event.thread_id == native != threading.get_native_id()


def test_errors_propagate_like_the_python_method():
    compiled, pure = pair()
    bad = ob.ProcessExit(ts_ns="soon", pid=BASE + 7000, start_ticks=None)  # type: ignore
    with pytest.raises(TypeError):
        Assembler._exit(pure, bad)
    with pytest.raises(TypeError):
        compiled.exit_event(bad)


def test_subclass_keeps_python_methods():
    class Custom(Assembler):
        def _exit(self, o):  # type: ignore[override]
            return super()._exit(o)

    assert Custom(ProcessCache(machine="0a1b2c3d")).assembly == "python"


def test_pure_python_switch_forces_the_python_assembly():
    code = ("from sysmonx.sensor.assemble import Assembler\n"
            "from sysmonx.sensor.process import ProcessCache\n"
            "print(Assembler(ProcessCache(machine='0a1b2c3d')).assembly)")
    for value, want in (("1", "python"), ("0", "compiled")):
        env = dict(os.environ, SYSMONX_PURE_PYTHON=value)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True).stdout.strip()
        assert out == want


def test_hashes_found_in_the_cache_equal_the_method(tmp_path):
    """The compiled path looks a FileHasher's cache up itself (same stat, same key): a file
    rewritten (new size and mtime) is hashed again, a missing file or a path with a NUL is the
    Python method's answer (``-``, ValueError), a hasher without algorithms writes ``-``."""
    exe = tmp_path / "tool"
    exe.write_bytes(b"one")
    compiled, pure = pair()
    me = os.getpid()

    def ex(i: int, image: str) -> ob.ProcessExec:
        return ob.ProcessExec(ts_ns=TS + i, pid=BASE + 8000 + i, ppid=me, start_ticks=i,
                              image=image, argv=["t"], cwd="/", uid=0, auid=0, sessionid=1,
                              end_data=1)

    items = [ex(0, str(exe)), ex(1, str(exe))]
    got, want = run(items, compiled, pure)
    assert got == want
    first = dict(got[0][2])["Hashes"]
    assert first.startswith("SHA256=") and dict(got[1][2])["Hashes"] == first
    exe.write_bytes(b"two, longer")
    os.utime(exe, ns=(1, 2))
    got, want = run([ex(2, str(exe)), ex(3, str(tmp_path / "missing"))], compiled, pure)
    assert got == want
    assert dict(got[0][2])["Hashes"] not in (first, "-")
    assert dict(got[1][2])["Hashes"] == "-"
    with pytest.raises(ValueError):
        compiled.exec_events(ex(4, "/bin/a\x00b"))
    with pytest.raises(ValueError):
        Assembler._exec(pure, ex(4, "/bin/a\x00b"))
    for a in (compiled, pure):
        a.hasher.algorithms = []
    got, want = run([ex(5, str(exe))], compiled, pure)
    assert got == want and dict(got[0][2])["Hashes"] == "-"


def test_a_procinfo_with_another_field_is_refused_by_the_compiled_builder(monkeypatch):
    """Found in review: the C exec path makes cache entries itself and fills ProcInfo's 14
    slots; a 15th field would be unset in its entries and set in the Python path's. The
    builder refuses such a class instead of building entries that differ."""
    from dataclasses import fields, make_dataclass
    from typing import Optional

    from sysmonx.sensor import process as proc_mod
    if asm_mod._Builder is None:
        pytest.skip("the compiled builder is not built here")
    own = [(f.name, f.type, f) for f in fields(proc_mod.ProcInfo)]
    assert len(own) == 14
    # ProcInfo's own fields (defaults included) and one more
    Wider = make_dataclass("Wider", own + [("container", Optional[str], None)], slots=True)

    monkeypatch.setattr(proc_mod, "ProcInfo", Wider)
    with pytest.raises(TypeError, match="has 15 slots; the compiled builder fills 14"):
        Assembler(ProcessCache(machine="0a1b2c3d"), computer="h")
