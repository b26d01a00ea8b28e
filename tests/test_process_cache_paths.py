"""The process cache's inlined exec path (``ProcessCache.on_exec`` / ``_store``) against the
general one: the same entries, GUIDs, image index and entry order for the same observations.

``on_exec`` builds the GUID without ``make_guid`` when both halves are known and stores entries
with the image index inlined; a subclass takes ``make_guid`` and the reference ``_store`` below
is the general code (``_index`` for every change), so any difference is the fast path's."""

from __future__ import annotations

import random

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
