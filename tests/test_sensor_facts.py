"""The sensor core's facts, independent of any kernel backend: ProcessGuid (full and distinct,
forked children, keys the tier could not read), the fileless/deleted image fact, DNS attribution,
per-process order, and outputs that fail. Each test pins a fault seen live (issue "every tier
reports the same facts"); the live comparison across tiers is tests/test_live_tiers.py."""

from __future__ import annotations

import os
import threading
import time

import pytest

from sysmonx.config import parse_config
from sysmonx.pipeline.live import Sensor, SensorOptions
from sysmonx.sensor import live as live_mod
from sysmonx.sensor import observations as ob
from sysmonx.sensor.assemble import Assembler
from sysmonx.sensor.backends.base import BackendUnavailable
from sysmonx.sensor.order import OrderBuffer
from sysmonx.sensor.process import (ProcessCache, guid_key_is_synthetic, image_state,
                                    process_guid)
from sysmonx.sinks.syslog import SyslogWriter

from live_script import ScriptBackend

ZERO = "{00000000-0000-0000-0000-000000000000}"
NOW = 1_765_000_000 * 10**9


def full_guid(g: str) -> bool:
    """Start second and key both non-zero."""
    return g != ZERO and g[10:19] != "0000-0000" and not g.endswith("0000-000000000000}")


def asm() -> Assembler:
    return Assembler(ProcessCache(machine="0badcafe"), computer="h")


# ---------------------------------------------------------------- ProcessGuid


def test_guid_layout_end_code_and_pid():
    # Sysmon for Linux's own form (corpus sample) without pid; with pid, bytes 14-15 carry it
    assert process_guid("d65774de", 0x61758D17, 0x559032_04F092) == \
        "{d65774de-8d17-6175-92f0-043290550000}"
    assert process_guid("d65774de", 0x61758D17, 0x559032_04F092, 0x1234) == \
        "{d65774de-8d17-6175-92f0-043290553412}"


def test_processes_whose_end_code_is_unknown_get_full_distinct_guids():
    """Audit tier, process gone before /proc could be read: 300 execs in the same second gave
    92 distinct GUIDs, 168 all-zero. Now: full, distinct, marked as sensor-generated."""
    a = asm()
    guids = []
    for i in range(300):
        e = a.build(ob.ProcessExec(NOW + i, 90000 + i, ppid=1, image="/usr/bin/true",
                                   argv=["/bin/true", str(i)], cwd="/", uid=0))
        guids.append(e.data["ProcessGuid"])
    assert len(set(guids)) == 300
    assert all(full_guid(g) and guid_key_is_synthetic(g) for g in guids)
    # the start second is the observation's when no tier could read the start time
    s = NOW // 10**9
    assert guids[0][10:19] == f"{s & 0xFFFF:04x}-{s >> 16:04x}"


def test_exec_chain_of_one_pid_gives_distinct_guids():
    a = asm()
    g = [a.build(ob.ProcessExec(NOW + i, 4242, ppid=1, start_ticks=500, image=img, argv=[img],
                                cwd="/", uid=0, end_data=end)).data["ProcessGuid"]
         for i, (img, end) in enumerate([("/usr/bin/unshare", 0x55AA00001000),
                                         ("/usr/bin/dash", 0x55BB00002000),
                                         ("/usr/bin/getent", None)])]
    assert len(set(g)) == 3 and all(full_guid(x) for x in g)
    assert g[0][10:19] == g[1][10:19] == g[2][10:19]  # same process start


def test_forked_child_has_parent_image_user_and_its_own_guid():
    """Fork without exec: event 5 had Image -, User - and an all-zero GUID."""
    a = asm()
    parent = a.build(ob.ProcessExec(NOW, 5000, ppid=1, start_ticks=100, image="/usr/bin/python3",
                                    argv=["python3", "srv.py"], cwd="/srv", uid=0,
                                    end_data=0x55D012345678))
    a.build(ob.ProcessFork(NOW + 1, 5001, 5000, start_ticks=100))  # same second, same end_code
    net = a.build(ob.NetworkConnect(NOW + 2, 5001, "tcp", True, "127.0.0.1", 80, "127.0.0.1", 4000))
    end = a.build(ob.ProcessExit(NOW + 3, 5001, start_ticks=100))
    pg = parent.data["ProcessGuid"]
    for e in (net, end):
        assert e.data["Image"] == "/usr/bin/python3" and e.data["User"] == "root"
        assert full_guid(e.data["ProcessGuid"]) and e.data["ProcessGuid"] != pg
    assert net.data["ProcessGuid"] == end.data["ProcessGuid"]
    assert not guid_key_is_synthetic(end.data["ProcessGuid"])  # the copied end_code is real


def test_fork_delivered_after_exec_keeps_the_exec():
    a = asm()
    a.build(ob.ProcessExec(NOW, 5000, ppid=1, start_ticks=100, image="/usr/bin/bash",
                           argv=["bash"], cwd="/", uid=0, end_data=0x55D000001000))
    e1 = a.build(ob.ProcessExec(NOW + 5, 5002, ppid=5000, start_ticks=101, image="/usr/bin/ls",
                                argv=["ls"], cwd="/", uid=0, end_data=0x55E000001000))
    a.build(ob.ProcessFork(NOW + 1, 5002, 5000, start_ticks=101))
    x = a.build(ob.ProcessExit(NOW + 9, 5002, start_ticks=101))
    assert x.data["Image"] == "/usr/bin/ls" and x.data["ProcessGuid"] == e1.data["ProcessGuid"]


def test_exit_of_unseen_process_still_has_a_full_guid():
    a = asm()
    x = a.build(ob.ProcessExit(NOW, 999_999_0, start_ticks=777))
    assert full_guid(x.data["ProcessGuid"]) and x.data["Image"] == "-"


# ---------------------------------------------------------------- fileless / deleted


def test_image_state_reads_the_kernel_view():
    assert image_state("/memfd:payload (deleted)") == "fileless"
    assert image_state("/tmp/x (deleted)") == "deleted"
    assert image_state("/usr/bin/true") is None and image_state(None) is None


def test_fileless_exec_and_deleted_image_give_process_tampering():
    a = asm()
    evs = a.build_events(ob.ProcessExec(NOW, 6000, ppid=1, start_ticks=1,
                                        image="/memfd:sx (deleted)", argv=["bash"], cwd="/",
                                        uid=0, end_data=0x55F000001000))
    assert [e.event_id for e in evs] == [1, 25]
    assert evs[0].data["Image"] == "/memfd:sx (deleted)"  # never stripped
    assert evs[1].data["Type"] == "Image is fileless"
    assert evs[1].data["ProcessGuid"] == evs[0].data["ProcessGuid"]
    a.build(ob.ProcessExec(NOW, 6001, ppid=1, start_ticks=2, image="/tmp/dropper", argv=["x"],
                           cwd="/", uid=0, end_data=0x55F000002000))
    evs = a.build_events(ob.FileDelete(NOW + 1, 4242, "/tmp/dropper"))
    assert [e.event_id for e in evs] == [23, 25]
    assert evs[1].data["ProcessId"] == "6001" and evs[1].data["Type"] == "Image is deleted"
    assert [e.event_id for e in a.build_events(ob.FileDelete(NOW + 2, 1, "/tmp/dropper"))] == [23]
    a.build(ob.ProcessExit(NOW + 3, 6001, start_ticks=2))
    a.build(ob.ProcessExec(NOW + 4, 6002, ppid=1, start_ticks=3, image="/tmp/y", argv=["y"],
                           cwd="/", uid=0, end_data=1))
    a.build(ob.ProcessExit(NOW + 5, 6002, start_ticks=3))
    assert [e.event_id for e in a.build_events(ob.FileDelete(NOW + 6, 1, "/tmp/y"))] == [23]


# ---------------------------------------------------------------- DNS attribution


def test_dns_is_never_attributed_to_the_resolver_that_received_it():
    """A resolver on loopback receives the query: its receive's 'source port' is the client's
    port. That used to name the resolver as the querying process."""
    a = asm()
    a.build(ob.ProcessExec(NOW, 7000, ppid=1, start_ticks=1, image="/usr/sbin/dnsmasq",
                           argv=["dnsmasq"], cwd="/", uid=0, end_data=1))
    a.build(ob.NetworkConnect(NOW + 1, 7000, "udp", False, "127.0.0.153", 53, "127.0.0.1", 40001))
    q = a.build(ob.DnsQuery(NOW + 2, None, "x.test", 0, None, source_port=40001,
                            server="127.0.0.153"))
    assert q.data["ProcessId"] == "0" and q.data["Image"] == "-"


def test_dns_attributed_from_tier_socket_port_then_proc_then_join():
    a = asm()
    for pid, img in ((7100, "/usr/bin/getent"), (7101, "/usr/bin/dig"), (7102, "/usr/bin/curl"),
                     (7103, "/usr/bin/host")):
        a.build(ob.ProcessExec(NOW, pid, ppid=1, start_ticks=1, image=img, argv=[img], cwd="/",
                               uid=0, end_data=pid))
    # tier A: the connect carried the local port read from the socket
    a.build(ob.NetworkConnect(NOW + 1, 7100, "udp", True, "127.0.0.53", 53, "127.0.0.1", 41000))
    q = a.build(ob.DnsQuery(NOW + 2, None, "a.test", 0, None, 41000, "127.0.0.53"))
    assert q.data["Image"] == "/usr/bin/getent"
    # DNS backend's socket look-up
    q = a.build(ob.DnsQuery(NOW + 3, 7101, "b.test", 0, None, 41001, "127.0.0.53"))
    assert q.data["Image"] == "/usr/bin/dig"
    # tier B: a connect to the resolver whose source port the tier could not know: joined when
    # it is the only candidate; the AAAA query from the same port joins the same process
    a.build(ob.NetworkConnect(NOW + 4, 7102, "udp", True, "127.0.0.53", 53))
    for t in (5, 6):
        q = a.build(ob.DnsQuery(NOW + t, None, "c.test", 0, None, 41002, "127.0.0.53"))
        assert q.data["Image"] == "/usr/bin/curl"
    # two candidates from two processes: no guess
    a.build(ob.NetworkConnect(NOW + 7, 7103, "udp", True, "127.0.0.53", 53))
    a.build(ob.NetworkConnect(NOW + 8, 7101, "udp", True, "127.0.0.53", 53))
    q = a.build(ob.DnsQuery(NOW + 9, None, "d.test", 0, None, 41003, "127.0.0.53"))
    assert q.data["ProcessId"] == "0" and q.data["ProcessGuid"] == ZERO


def test_unknown_protocol_and_source_are_the_documented_unknowns():
    a = asm()
    e = a.build(ob.NetworkConnect(NOW, 1, None, True, "10.0.0.1", 443))
    assert (e.data["Protocol"], e.data["SourceIp"], e.data["SourcePort"]) == ("-", "-", "0")


# ---------------------------------------------------------------- order


def test_order_buffer_puts_each_process_in_order():
    """getent's event 22 used to be written before its event 1; curl's event 5 before its 22."""
    buf = OrderBuffer(window_s=0.25, exit_hold_s=2.5)
    exec_ = ob.ProcessExec(NOW + 10, 1, start_ticks=1)
    dns = ob.DnsQuery(NOW + 20, 1, "x", 0)
    exit_ = ob.ProcessExit(NOW + 30, 1)
    assert buf.push(dns, 0.0) == [] and buf.push(exit_, 0.001) == []
    assert buf.push(exec_, 0.010) == []   # the slow backend's exec arrives last
    assert buf.ready(0.2) == [] and buf.next_due() == pytest.approx(0.26)  # exec: first by time
    assert buf.ready(0.26) == [exec_, dns, exit_]  # in event-time order
    late = ob.FileCreate(NOW + 5, 1, "/x")  # arrives after the others left: written as it comes
    buf.push(late, 0.3)
    assert buf.ready(0.6) == [late] and buf.late == 1
    loss = ob.Loss(NOW, "x", 1)
    assert buf.push(loss, 0.3) == [loss]  # not held


def test_exit_events_are_held_and_written_after_late_events():
    buf = OrderBuffer(window_s=0.25, exit_hold_s=2.5)
    buf.hold_exit("exit-of-1", 1, 1.0)
    assert buf.exits_ready(3.4) == [] and buf.next_due() == pytest.approx(3.5)
    assert buf.exits_ready(3.5) == ["exit-of-1"]
    buf.hold_exit("e2", 2, 4.0)
    assert buf.drain_exits() == ["e2"]


class Recorder:
    name = "recorder"

    def __init__(self, fail_when=lambda e: False):
        self.events = []
        self.fail_when = fail_when

    def write(self, e):
        self.attempts = getattr(self, "attempts", 0) + 1
        if self.fail_when(e):
            raise OSError(28, "No space left on device")
        self.events.append(e)

    def close(self):
        pass


def run(sensor, until, timeout=10.0):
    t = threading.Thread(target=sensor.run, kwargs={"install_signals": False})
    t.start()
    end = time.monotonic() + timeout
    while time.monotonic() < end and not until():
        time.sleep(0.01)
    sensor.request_stop()
    t.join(15)
    assert not t.is_alive()


def test_sensor_writes_each_process_in_order(script_backend):
    t0 = time.time_ns()
    script_backend.script = [
        ob.DnsQuery(t0 + 2_000_000, 8001, "a.test", 0),
        ob.ProcessExit(t0 + 3_000_000, 8001, start_ticks=9),
        ob.ProcessExec(t0 + 1_000_000, 8001, ppid=1, start_ticks=9, image="/usr/bin/getent",
                       argv=["getent"], cwd="/", uid=0, end_data=0x55AA),
    ]
    rec = Recorder()
    cfg = parse_config('<Sysmon schemaversion="4.81"><EventFiltering><RuleGroup name="" '
                       'groupRelation="or"><DnsQuery onmatch="exclude"/></RuleGroup>'
                       '</EventFiltering></Sysmon>')
    sensor = Sensor(cfg, [rec], SensorOptions(order_window_s=0.2, exit_hold_s=0.5))
    run(sensor, lambda: any(e.event_id == 5 for e in rec.events))
    ids = [e.event_id for e in rec.events if e.data.get("ProcessId") == "8001"]
    assert ids == [1, 22, 5]
    assert len({e.data["ProcessGuid"] for e in rec.events
                if e.data.get("ProcessId") == "8001"}) == 1


# ---------------------------------------------------------------- outputs that fail


def test_failing_output_is_counted_reported_and_recovery_gives_255(script_backend):
    """-o on a full file system crashed the sensor; nothing said how much was lost."""
    full = {"on": False}
    t0 = time.time_ns()
    script_backend.script = [ob.FileCreate(t0 + i, 4242, f"/tmp/keep/{i}") for i in range(30)]
    status = []
    good, bad = Recorder(), Recorder(lambda e: full["on"])
    cfg = parse_config('<Sysmon schemaversion="4.81"><EventFiltering><RuleGroup name="" '
                       'groupRelation="or"><FileCreate onmatch="exclude"/></RuleGroup>'
                       '</EventFiltering></Sysmon>')
    sensor = Sensor(cfg, [good, bad], SensorOptions(order_window_s=0), on_status=status.append)
    full["on"] = True

    def until():
        # the failing output has its own thread: recover only once it has tried all 32 events
        n = sum(1 for e in good.events if e.event_id == 11)
        if n >= 30 and getattr(bad, "attempts", 0) >= 32 and full["on"]:
            full["on"] = False
            sensor.emit(ob.FileCreate(time.time_ns(), 4242, "/tmp/keep/after"))
        return any(e.event_id == 255 for e in bad.events)

    run(sensor, until)
    assert sum(1 for e in good.events if e.event_id == 11) == 31  # the other output got all
    report = [e for e in bad.events if e.event_id == 255]
    assert len(report) == 1 and report[0].data["ID"] == "Output"
    # 32: events 16 and 4 at start and the 30 FileCreate
    assert report[0].data["Description"].startswith("32 events could not be written to recorder")
    assert "No space left on device" in report[0].data["Description"]
    assert [e.data["TargetFilename"] for e in bad.events if e.event_id == 11] == ["/tmp/keep/after"]
    assert sensor.stats.undelivered["recorder"] == 32
    assert sensor.stats.written[11] == 31  # what the output that took the most holds
    assert any("fails (No space left on device)" in m for m in status)
    assert any("works again; 32 events" in m for m in status)
    assert "NOT WRITTEN to recorder: 32 events" in sensor.summary()


def test_healthy_output_is_not_counted_lost_because_another_fails(script_backend):
    """New-user report s11 #2: with ``-o good -o /full/fs`` the summary said "events written 0"
    and the heartbeat inside the healthy file said ``EventsWritten 0``, ``EventsLost 4247``.
    Written is what the best output took, each output's count is in the summary, and lost
    (heartbeat) counts only events no output took."""
    t0 = time.time_ns()
    script_backend.script = [ob.FileCreate(t0 + i, 4242, f"/tmp/keep/{i}") for i in range(30)]
    good, bad = Recorder(), Recorder(lambda e: True)
    good.label, bad.label = "-o good.xml", "-o full.xml"
    cfg = parse_config('<Sysmon schemaversion="4.81"><EventFiltering><RuleGroup name="" '
                       'groupRelation="or"><FileCreate onmatch="exclude"/></RuleGroup>'
                       '</EventFiltering></Sysmon>')
    sensor = Sensor(cfg, [bad, good], SensorOptions(order_window_s=0))
    run(sensor, lambda: sum(1 for e in good.events if e.event_id == 11) >= 30
        and getattr(bad, "attempts", 0) >= 32)
    n_good = len(good.events)
    st = sensor.stats
    assert st.written[11] == 30 and sum(st.written.values()) == n_good
    assert st.written_by_output == {"-o full.xml": 0, "-o good.xml": n_good}
    written, lost, per_output = sensor.guard_counters()
    assert (written, lost) == (n_good, 0)
    assert per_output["-o full.xml"][0] == bad.attempts and per_output["-o good.xml"][0] == 0
    line = sensor.summary()
    assert f"events written {n_good:,} (0 to -o full.xml, {n_good:,} to -o good.xml)" in line
    assert f"NOT WRITTEN to -o full.xml: {bad.attempts:,} events" in line


def test_syslog_writer_without_daemon_raises_and_counts(tmp_path):
    """--syslog with no daemon counted undelivered events as written."""
    w = SyslogWriter(str(tmp_path / "nope.sock"), require=False)
    ev = asm().build(ob.FileCreate(NOW, 1, "/tmp/x"))
    with pytest.raises(OSError):
        w.write(ev)
    assert (w.sent, w.failed) == (0, 1)


def test_sensor_with_syslog_and_no_daemon_counts_every_event_as_undelivered(tmp_path,
                                                                             script_backend):
    t0 = time.time_ns()
    script_backend.script = [ob.FileCreate(t0 + i, 4242, f"/tmp/keep/{i}") for i in range(10)]
    w = SyslogWriter(str(tmp_path / "nope.sock"), require=False)
    sensor = Sensor(None, [w], SensorOptions(order_window_s=0))
    run(sensor, lambda: sensor.stats.observations["FileCreate"] >= 10, timeout=5)
    # 16 and 4 at start, 10 FileCreate (default config logs 11? no: only 1 and 5), 4 at stop
    assert sum(sensor.stats.written.values()) == 0
    assert sensor.stats.undelivered[w.label] == w.failed >= 3


def test_dns_join_skips_connects_already_explained_or_of_exited_processes():
    """Two getent runs attributed through their sockets, then a dig whose query only the join
    can attribute: the earlier connects are claimed or their processes gone, so it is dig's."""
    a = asm()
    for pid, img in ((7200, "/usr/bin/getent"), (7201, "/usr/bin/getent"), (7202, "/usr/bin/dig")):
        a.build(ob.ProcessExec(NOW, pid, ppid=1, start_ticks=1, image=img, argv=[img], cwd="/",
                               uid=0, end_data=pid))
    a.build(ob.NetworkConnect(NOW + 10, 7200, "udp", True, "127.0.0.53", 53))
    a.build(ob.DnsQuery(NOW + 11, 7200, "a.test", 0, None, 42000, "127.0.0.53"))
    a.build(ob.NetworkConnect(NOW + 20, 7201, "udp", True, "127.0.0.53", 53))
    a.build(ob.ProcessExit(NOW + 25, 7201, start_ticks=1))  # its query never came
    a.build(ob.NetworkConnect(NOW + 30, 7202, "udp", True, "127.0.0.53", 53))
    q = a.build(ob.DnsQuery(NOW + 31, None, "d.test", 0, None, 42001, "127.0.0.53"))
    assert q.data["Image"] == "/usr/bin/dig"


def test_exec_arriving_after_its_exit_still_names_the_exit(script_backend):
    """A slow backend (audit) delivered /bin/true's exec after the proc connector's exit had
    been assembled: event 5 carried the forked parent's GUID, event 1 another."""
    t0 = time.time_ns()
    script_backend.script = [
        ob.ProcessExec(t0, 8100, ppid=1, start_ticks=50, image="/usr/bin/python3",
                       argv=["python3"], cwd="/", uid=0, end_data=0x55AA00001000),
        ob.ProcessFork(t0 + 1_000, 8101, 8100, start_ticks=60),
        ob.ProcessExit(t0 + 3_000, 8101, start_ticks=60),
    ]
    late = ob.ProcessExec(t0 + 2_000, 8101, ppid=8100, start_ticks=60, image="/usr/bin/true",
                          argv=["/bin/true"], cwd="/", uid=0)
    rec = Recorder()
    sensor = Sensor(None, [rec], SensorOptions(order_window_s=0.05, exit_hold_s=1.0))

    emitted = {"done": False}

    def once():
        if not emitted["done"] and sensor.stats.observations["ProcessExit"]:
            time.sleep(0.2)
            sensor.emit(late)
            emitted["done"] = True
        return any(e.event_id == 5 and e.data["ProcessId"] == "8101" for e in rec.events)

    run(sensor, once)
    ones = [e for e in rec.events if e.event_id == 1 and e.data["ProcessId"] == "8101"]
    fives = [e for e in rec.events if e.event_id == 5 and e.data["ProcessId"] == "8101"]
    assert len(ones) == len(fives) == 1
    assert fives[0].data["ProcessGuid"] == ones[0].data["ProcessGuid"]
    assert fives[0].data["Image"] == "/usr/bin/true"
    assert rec.events.index(ones[0]) < rec.events.index(fives[0])


def test_socket_owner_found_when_proc_net_tcp_is_longer_than_a_page():
    """/proc/net/tcp hands out about a page per read: the reader stopped after the first one, so
    a socket listed further down (a busy host, many connections) had no owner."""
    import socket

    from sysmonx.sensor.procfs import SocketOwners
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(256)
    socks = [srv]
    try:
        clients = []
        for _ in range(150):  # 300 lines of ~150 bytes: many pages
            c = socket.create_connection(srv.getsockname())
            socks += [c, srv.accept()[0]]
            clients.append(c.getsockname()[1])
        owners = SocketOwners()
        found = [owners.lookup("tcp", port, "127.0.0.1") for port in clients]
        assert found == [os.getpid()] * len(clients)
    finally:
        for s in socks:
            s.close()


class BrokenTierBackend(ScriptBackend):
    """A tier whose probe passes but whose start fails, as tier A does when its eBPF object
    cannot be built (a header missing from an install, clang failing)."""
    name = "broken"
    tier = "A"

    def start(self):
        raise BackendUnavailable("clang (BPF) failed (exit 1): 'pathwalk.bpf.h' file not found")


class NextTierBackend(ScriptBackend):
    name = "next"
    tier = "B"


@pytest.fixture
def two_tiers(monkeypatch):
    from sysmonx.sensor import backends as backends_mod
    classes = {"broken": BrokenTierBackend, "next": NextTierBackend}
    monkeypatch.setattr(backends_mod, "tiers", lambda: ["broken", "next"])
    monkeypatch.setattr(backends_mod, "load_backend", lambda name: classes[name])
    monkeypatch.setattr(live_mod, "load_backend", lambda name: classes[name])
    monkeypatch.setattr(live_mod, "auxiliary_backends", list)
    return classes


def test_a_tier_that_fails_to_start_falls_back_to_the_next(two_tiers):
    statuses: list[str] = []
    src = live_mod.LiveSource(None, live_mod.LiveOptions(dns=False), on_status=statuses.append)
    NextTierBackend.script = []
    src.open()
    try:
        assert src.stats.backend == "next"
        assert src.stats.skipped == {"broken": "failed to start: clang (BPF) failed (exit 1): "
                                               "'pathwalk.bpf.h' file not found"}
        assert any(m.startswith("backend broken failed to start, trying the next tier: clang")
                   for m in statuses), statuses
        assert "backend next started" in statuses
    finally:
        src.close()


def test_a_forced_tier_that_fails_to_start_is_an_error(two_tiers):
    src = live_mod.LiveSource(None, live_mod.LiveOptions(dns=False, backend="broken"))
    with pytest.raises(BackendUnavailable, match="pathwalk.bpf.h"):
        src.open()


def test_socket_owner_cache_tells_two_addresses_on_one_port_apart():
    """Two processes' UDP sockets on one port of two local addresses: the answer cached for
    the first address is not given for the second (the cache was keyed by port alone)."""
    import socket
    import subprocess
    import sys

    from sysmonx.sensor.procfs import SocketOwners
    mine = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    mine.bind(("127.0.0.1", 0))
    port = mine.getsockname()[1]
    child = subprocess.Popen(
        [sys.executable, "-c", "import socket,sys,time\n"
         "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
         f"s.bind(('127.0.0.2',{port}))\nprint('ok',flush=True)\ntime.sleep(30)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ok"
        owners = SocketOwners()
        assert owners.lookup("udp", port, "127.0.0.1") == os.getpid()
        assert owners.lookup("udp", port, "127.0.0.2") == child.pid
    finally:
        child.kill()
        child.wait()
        mine.close()
