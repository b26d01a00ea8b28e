"""Events sent by the syslog writer through a real rsyslog daemon (Debian's rsyslog, started here
with a private socket and output file) read back identical, one line per event."""

import os
import shutil
import subprocess
import time

import pytest

from sysmonx.sensor import observations as ob
from sysmonx.sensor.assemble import Assembler
from sysmonx.sensor.process import ProcessCache
from sysmonx.sinks.syslog import SyslogWriter
from sysmonx.sources import open_source

pytestmark = pytest.mark.live

RSYSLOGD = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if os.path.exists(
    "/usr/sbin/rsyslogd") else None)


@pytest.fixture
def rsyslog(tmp_path):
    if RSYSLOGD is None:
        pytest.skip("rsyslogd not installed (apt-get install rsyslog; .ci/run installs it)")
    sock, out, pidfile = tmp_path / "log.sock", tmp_path / "messages", tmp_path / "rsyslog.pid"
    conf = tmp_path / "rsyslog.conf"
    conf.write_text(f"""
global(maxMessageSize="128k" workDirectory="{tmp_path}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{sock}" CreatePath="on")
template(name="plain" type="string" string="%TIMESTAMP% %HOSTNAME% %syslogtag%%msg:::sp-if-no-1st-sp%%msg%\\n")
*.* action(type="omfile" file="{out}" template="plain")
""")  # noqa: E501 - rsyslog's template line, verbatim
    proc = subprocess.Popen([RSYSLOGD, "-n", "-f", str(conf), "-i", str(pidfile)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.skip(f"rsyslogd did not start: {proc.stdout.read().decode()[:300]}")
        time.sleep(0.05)
    yield sock, out
    proc.terminate()
    proc.wait(10)


def test_events_through_rsyslog_read_back_identical(rsyslog):
    sock, out = rsyslog
    asm = Assembler(ProcessCache(machine="00000000"), computer="h")
    now = time.time_ns()
    events = [asm.build(ob.FileCreate(now, os.getpid(), p)) for p in (
        "/tmp/plain", "/tmp/with space & <xml> \"quotes\"", "/tmp/new\nline forged</Data>",
        "/tmp/" + "x" * 20000)]
    events.append(asm.build(ob.ProcessExec(now, os.getpid())))
    for i, e in enumerate(events, 1):
        e.record_id = i
    w = SyslogWriter(str(sock))
    for e in events:
        w.write(e)
    w.close()
    assert w.failed == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if out.exists() and out.read_bytes().count(b"</Event>") >= len(events):
            break
        time.sleep(0.05)
    lines = out.read_bytes().splitlines()
    assert len([ln for ln in lines if b" sysmon: <Event>" in ln]) == len(events)
    back = list(open_source(str(out), lambda err: pytest.fail(str(err)), "syslog"))
    assert [b.data for b in back] == [e.data for e in events]
    assert [b.record_id for b in back] == [1, 2, 3, 4, 5]
