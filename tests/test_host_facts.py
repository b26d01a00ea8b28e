"""The live host facts of the enrichment (``sysmonx.sensor.hostinfo.HostFacts``): a process
on the host, one in a container, and one that is gone or whose pid now holds another process
give three different answers: ``-`` (host), the container id, ``unknown``; the namespaces are
those read at the exec when the process cache has them, else ``/proc``, else ``-`` (never 0,
never another process's)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sysmonx.event import Event
from sysmonx.sensor import hostinfo
import pytest

from sysmonx.sensor.assemble import Assembler
from sysmonx.sensor.hostinfo import HostFacts
from sysmonx.sensor.observations import ProcessExec
from sysmonx.sensor.process import ProcessCache
from sysmonx.stages.enrich import EnrichStage

DOCKER_ID = "4f1c" * 16


def _event(pid: int, guid: str, image: str = "/bin/sh") -> Event:
    return Event(event_id=1, data={"ProcessGuid": guid, "ProcessId": str(pid), "Image": image})


def _enrich(cache: ProcessCache, pid: int, guid: str) -> dict:
    stage = EnrichStage(keep=True, host=HostFacts(cache))
    ev = _event(pid, guid)
    stage.process(ev, lambda x: None)
    return ev.data


def test_running_process_on_the_host_gets_its_proc_facts():
    cache = ProcessCache()
    me = cache.get(os.getpid())
    d = _enrich(cache, os.getpid(), me.guid)
    assert d["MntNs"] == str(os.stat("/proc/self/ns/mnt").st_ino)
    assert d["PidNs"] == str(os.stat("/proc/self/ns/pid").st_ino)
    assert (d["ContainerId"], d["ContainerRuntime"]) == hostinfo.container_of(os.getpid())


def test_container_cgroup_path_names_the_container(monkeypatch, tmp_path):
    cache = ProcessCache()
    me = cache.get(os.getpid())
    real_open = open

    def fake_open(path, *a, **k):
        if str(path) == f"/proc/{os.getpid()}/cgroup":
            f = tmp_path / "cgroup"
            f.write_text(f"0::/system.slice/docker-{DOCKER_ID}.scope\n")
            return real_open(f, *a, **k)
        return real_open(path, *a, **k)
    monkeypatch.setattr("builtins.open", fake_open)
    d = _enrich(cache, os.getpid(), me.guid)
    assert (d["ContainerId"], d["ContainerRuntime"]) == (DOCKER_ID, "docker")


def _build(asm: Assembler, o: ProcessExec, compiled: bool) -> None:
    if compiled:
        assert asm.assembly == "compiled"
        asm.exec_events(o)
    else:
        Assembler._exec(asm, o)


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "pure"])
def test_gone_process_gets_unknown_not_host_and_its_exec_namespaces(compiled):
    """A short-lived process: the exec record carried its namespaces (tier A), /proc is gone
    by the time the enrichment asks; the compiled and the pure assembler keep them alike."""
    cache = ProcessCache()
    asm = Assembler(cache)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    pid = child.pid
    child.wait()  # reaped: /proc/PID is gone
    assert not Path(f"/proc/{pid}").exists()
    _build(asm, ProcessExec(ts_ns=1, pid=pid, ppid=os.getpid(), start_ticks=12345,
                            image="/bin/true", argv=["true"], cwd="/", uid=0, end_data=0x5555,
                            mnt_ns=4026531999, pid_ns=4026532000), compiled)
    info = cache.peek(pid)
    assert info.extra["ns"] == (4026531999, 4026532000)
    d = _enrich(cache, pid, info.guid)
    assert (d["MntNs"], d["PidNs"]) == ("4026531999", "4026532000")
    assert (d["ContainerId"], d["ContainerRuntime"]) == ("unknown", "unknown")
    assert d["Tty"] == "-"


def test_gone_process_without_exec_namespaces_gets_the_unknown_values():
    cache = ProcessCache()
    asm = Assembler(cache)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    pid = child.pid
    child.wait()
    _build(asm, ProcessExec(ts_ns=1, pid=pid, ppid=os.getpid(), start_ticks=12345,
                            image="/bin/true", argv=["true"], cwd="/", uid=0, end_data=0x5555),
           True)
    d = _enrich(cache, pid, cache.peek(pid).guid)
    assert (d["MntNs"], d["PidNs"], d["ContainerId"], d["ContainerRuntime"]) == \
        ("-", "-", "unknown", "unknown")


def test_pid_held_by_another_process_is_not_read():
    """The cache holds another process for this pid (reused): /proc/PID is that one's, so
    nothing is read from it (before: its namespaces and cgroup were written)."""
    cache = ProcessCache()
    me = cache.get(os.getpid())
    other_guid = me.guid[:-5] + ("0000}" if not me.guid.endswith("0000}") else "1111}")
    d = _enrich(cache, os.getpid(), other_guid)
    assert (d["MntNs"], d["PidNs"], d["ContainerId"]) == ("-", "-", "unknown")


def test_exec_observed_by_a_tier_that_reads_proc_keeps_the_namespaces_then():
    """A tier whose record has no namespaces: the cache reads them with the rest of /proc at
    the exec, so they stay known after the process is gone."""
    cache = ProcessCache()
    info = cache.on_exec(os.getpid(), ts_ns=1)
    assert info.extra["ns"] == (os.stat("/proc/self/ns/mnt").st_ino,
                                os.stat("/proc/self/ns/pid").st_ino)


def test_exec_namespaces_not_taken_from_a_later_image(monkeypatch):
    """Tier B's exec without a snapshot of its own (the process exec'd again before it was
    read: ``unshare -m sh``): /proc shows the later image, whose namespaces may be new ones,
    so they are not recorded for this exec (review). /proc showing this exec's image: kept."""
    from sysmonx.sensor import process as process_mod
    live = {"ppid": 1, "start_ticks": 777, "end_data": 0x1234, "uid": 0, "image": "/usr/bin/sh",
            "argv": ["sh"], "cwd": "/", "auid": 0, "sessionid": 1, "mnt_ns": 4026532999,
            "pid_ns": 4026531836}
    monkeypatch.setattr(process_mod, "read_proc", lambda pid: dict(live))
    cache = process_mod.ProcessCache()
    info = cache.on_exec(4242, start_ticks=777, image="/usr/bin/unshare", argv=["unshare", "-m"])
    assert "ns" not in info.extra
    info = cache.on_exec(4243, start_ticks=777, image="/usr/bin/sh", argv=["sh"])
    assert info.extra["ns"] == (4026532999, 4026531836)
