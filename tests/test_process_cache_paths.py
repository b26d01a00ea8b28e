"""The process cache's inlined exec path (``ProcessCache.on_exec`` / ``_store``) against the
general one: the same entries, GUIDs, image index and entry order for the same observations.

``on_exec`` builds the GUID without ``make_guid`` when both halves are known and stores entries
with the image index inlined; a subclass takes ``make_guid`` and the reference ``_store`` below
is the general code (``_index`` for every change), so any difference is the fast path's."""

from __future__ import annotations

import random

import pytest

from sysmonx.sensor.process import ProcessCache, ProcInfo

# pids above the kernel's pid_max (4,194,304): /proc never has them, so nothing is read there
BASE = 5_000_000
NS = 1_700_000_000_000_000_000


class _General(ProcessCache):
    """The general path: make_guid for every GUID, _index for every index change."""

    def _store(self, info: ProcInfo) -> ProcInfo:
        with self._lock:
            old = self._procs.get(info.pid)
            if old is not None and old.exited_ns is None:
                self._index(old, False)
            self._procs[info.pid] = info
            self._procs.move_to_end(info.pid)
            if info.exited_ns is None:
                self._index(info, True)
            while len(self._procs) > self.max_entries:
                _pid, dropped = self._procs.popitem(last=False)
                if dropped.exited_ns is None:
                    self._index(dropped, False)
        return info


def _script(seed: int, n: int) -> list:
    """A random mix of execs (all facts, some missing, non-ASCII text, pid reuse, exec chains),
    forks and exits (before/after exec) over a few dozen pids."""
    rnd = random.Random(seed)
    steps = []
    for i in range(n):
        pid = BASE + rnd.randrange(40)
        st = 100 + rnd.randrange(6)
        r = rnd.random()
        if r < 0.55:
            image = rnd.choice(["/usr/bin/true", "/usr/bin/b\udcffad", "/opt/é/x", "", None])
            argv = rnd.choice([["/bin/true", f"bench-{i}"], ["x\udce9", "é"], [], None])
            steps.append(("exec", pid, dict(
                ppid=rnd.choice([None, 1, BASE + rnd.randrange(40)]),
                start_ticks=rnd.choice([None, st]), image=image, argv=argv,
                cwd=rnd.choice(["/root", "/tmp/\udcff", None]), uid=rnd.choice([None, 0, 1000]),
                auid=rnd.choice([None, 1000]), sessionid=rnd.choice([None, 3]),
                end_data=rnd.choice([None, 0, 0x55D0C0FFE000 + i]), ts_ns=NS + i)))
        elif r < 0.75:
            steps.append(("fork", pid, dict(ppid=BASE + rnd.randrange(40),
                                            start_ticks=rnd.choice([None, st]), ts_ns=NS + i)))
        else:
            steps.append(("exit", pid, dict(ts_ns=NS + i, start_ticks=rnd.choice([None, st]))))
    return steps


def _run(cache: ProcessCache, steps: list) -> list:
    out = []
    for kind, pid, kw in steps:
        if kind == "exec":
            out.append(cache.on_exec(pid, **kw))
        elif kind == "fork":
            out.append(cache.on_fork(pid, **kw))
        else:
            out.append(cache.on_exit(pid, kw["ts_ns"], kw["start_ticks"]))
    return out


def _same(fast: ProcessCache, general: ProcessCache, steps: list) -> None:
    got, want = _run(fast, steps), _run(general, steps)
    assert got == want  # every returned entry, field by field (GUID and extra included)
    assert list(fast._procs.items()) == list(general._procs.items())  # same entries, same order
    assert fast._by_image == general._by_image
    assert fast.synthetic_keys == general.synthetic_keys
    assert fast.approximate_starts == general.approximate_starts


def test_inlined_exec_path_matches_the_general_one():
    for seed in range(20):
        steps = _script(seed, 600)
        _same(ProcessCache(machine="d65774de"), _General(machine="d65774de"), steps)


def test_inlined_exec_path_matches_the_general_one_when_entries_are_evicted():
    for seed in range(10):
        steps = _script(100 + seed, 400)
        _same(ProcessCache(machine="d65774de", max_entries=7),
              _General(machine="d65774de", max_entries=7), steps)


def test_fast_guid_is_sysmon_for_linux_layout():
    cache = ProcessCache(machine="d65774de")
    info = cache.on_exec(BASE, ppid=1, start_ticks=12345, image="/usr/bin/true",
                         argv=["/bin/true"], cwd="/", uid=0, end_data=0x55D0C0FFE000, ts_ns=NS)
    assert info.guid == cache.make_guid(12345, 0x55D0C0FFE000, BASE)
    assert info.command_line == "/bin/true"


def test_non_utf8_text_becomes_replacement_character():
    cache = ProcessCache(machine="d65774de")
    info = cache.on_exec(BASE, ppid=1, start_ticks=1, image="/tmp/b\udcffad",
                         argv=["a\udce9", "b"], cwd="/tmp/\udcff", uid=0, end_data=1, ts_ns=NS)
    assert (info.image, info.command_line, info.cwd) == \
        ("/tmp/b\ufffdad", "a\ufffd b", "/tmp/\ufffd")


def test_proc_info_has_no_instance_dict():
    # slots: a busy sensor keeps up to max_entries of these; no per-entry attribute dict
    info = ProcInfo(1)
    assert not hasattr(info, "__dict__")
    info.extra["late_exec"] = True
    assert info.user == info.user


# -- the compiled paths (sysmonx.sensor._ringbatch Builder: on_exec / get / on_exit in C) ------

def _compiled_pair(max_entries: int = 65536):
    """A compiled and a pure assembler, each over its own cache (same machine), or skip."""
    from sysmonx.sensor import assemble as asm_mod
    if asm_mod._Builder is None:
        pytest.skip("compiled assembly not built or disabled (SYSMONX_PURE_PYTHON)")
    compiled = asm_mod.Assembler(ProcessCache(machine="d65774de", max_entries=max_entries),
                                 computer="host-a")
    pure = asm_mod.Assembler(ProcessCache(machine="d65774de", max_entries=max_entries),
                             computer="host-a")
    assert compiled.assembly == "compiled"
    return compiled, pure


def _observations(seed: int, n: int) -> list:
    """Execs (mostly every fact known and ASCII: the compiled case; else facts missing,
    non-UTF-8 text, empty image, end_data 0), forks, exits (start time matching, other, none),
    over a few dozen pids, so that pids are reused, exits come before/after execs and entries
    are replaced while running or after exiting."""
    from sysmonx.sensor import observations as ob
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        pid = BASE + rnd.randrange(30)
        st = 100 + rnd.randrange(5)
        r = rnd.random()
        ts = NS + i * 1_000
        if r < 0.6:
            known = rnd.random() < 0.7
            out.append(ob.ProcessExec(
                ts_ns=ts, pid=pid, ppid=rnd.choice([1, BASE + rnd.randrange(30)])
                if known else rnd.choice([None, 1]),
                start_ticks=st if known else rnd.choice([None, st]),
                image=rnd.choice(["/usr/bin/true", "/usr/bin/id", "/opt/x/y"]) if known
                else rnd.choice(["/usr/bin/b\udcffad", "", None, "/usr/bin/true"]),
                argv=rnd.choice([["/bin/true", f"bench-{i}"], ["/usr/bin/id"], []]) if known
                else rnd.choice([["x\udce9"], None, ["a", "b"]]),
                cwd=rnd.choice(["/root", "/"]) if known else rnd.choice(["/tmp/\udcff", None]),
                uid=rnd.choice([0, 1000]) if known else rnd.choice([None, 0]),
                auid=rnd.choice([None, 1000, 0xFFFFFFFF]), sessionid=rnd.choice([None, 3]),
                end_data=0x55D0C0FFE000 + rnd.randrange(1 << 20) if known
                else rnd.choice([None, 0, 0x1234])))
        elif r < 0.7:
            out.append(("fork", pid, dict(ppid=BASE + rnd.randrange(30),
                                          start_ticks=rnd.choice([None, st]), ts_ns=ts)))
        else:
            out.append(ob.ProcessExit(ts_ns=ts, pid=pid,
                                      start_ticks=rnd.choice([None, st, st + 1])))
    return out


def _state(cache: ProcessCache) -> tuple:
    entries = [(pid, tuple(getattr(i, f) for f in ProcInfo.__slots__))
               for pid, i in cache._procs.items()]
    return (entries, {k: set(v) for k, v in cache._by_image.items()}, cache.synthetic_keys,
            cache.approximate_starts, cache._synthetic)


def _event(e) -> tuple:
    return (e.event_id, list(e.data.items()), e.time_created, e.provider, e.thread_id)


def _compare(seed: int, n: int, max_entries: int = 65536) -> int:
    """Both assemblers over the same observations: the same events, the same cache (entries
    slot by slot, order, image index, counters) after every step. Returns how many execs the
    compiled path took without calling ``ProcessCache.on_exec``."""
    from sysmonx.sensor import assemble as asm_mod
    from sysmonx.sensor import observations as ob
    compiled, pure = _compiled_pair(max_entries)
    fallbacks = []
    method = compiled.cache.on_exec

    def counted(*a, **k):
        fallbacks.append(a[0])
        return method(*a, **k)
    compiled.cache.on_exec = counted  # the instance's: what the compiled code calls back
    execs = 0
    for o in _observations(seed, n):
        if type(o) is tuple:
            _kind, pid, kw = o
            assert compiled.cache.on_fork(pid, **kw) == pure.cache.on_fork(pid, **kw)
        elif type(o) is ob.ProcessExec:
            execs += 1
            got = [_event(e) for e in compiled.exec_events(o)]
            assert got == [_event(e) for e in asm_mod.Assembler._exec(pure, o)], o
        else:
            assert _event(compiled.exit_event(o)) == _event(asm_mod.Assembler._exit(pure, o)), o
        assert _state(compiled.cache) == _state(pure.cache), o
    return execs - len(fallbacks)


def test_compiled_cache_paths_match_the_python_methods():
    compiled_execs = sum(_compare(seed, 400) for seed in range(12))
    assert compiled_execs > 1000  # the comparison exercised the compiled exec path


def test_compiled_cache_paths_match_when_entries_are_evicted():
    assert sum(_compare(200 + seed, 300, max_entries=9) for seed in range(8)) > 500


def test_compiled_exec_keeps_what_the_method_keeps_for_a_late_exec():
    """An exec that arrives after its process's exit (same start time) is the method's case:
    the entry keeps the exit time and is marked ``late_exec`` on both paths."""
    from sysmonx.sensor import assemble as asm_mod
    from sysmonx.sensor import observations as ob
    compiled, pure = _compiled_pair()
    exe = ob.ProcessExec(ts_ns=NS, pid=BASE, ppid=1, start_ticks=7, image="/usr/bin/true",
                         argv=["/bin/true"], cwd="/", uid=0, end_data=0x55D0C0FFE000)
    gone = ob.ProcessExit(ts_ns=NS + 5, pid=BASE, start_ticks=7)
    for a, ex, xt in ((compiled, compiled.exec_events, compiled.exit_event),
                      (pure, lambda o: asm_mod.Assembler._exec(pure, o),
                       lambda o: asm_mod.Assembler._exit(pure, o))):
        xt(gone)
        ex(exe)
        info = a.cache.peek(BASE)
        assert info.exited_ns == NS + 5 and info.extra == {"late_exec": True}
    assert _state(compiled.cache) == _state(pure.cache)
