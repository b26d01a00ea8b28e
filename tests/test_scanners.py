"""Scanners: the technique harness on demand (``sysmonx scan PID``), the config attribute and
its triggers, the allow-list, event 200 through the loop (filterable, named, every format,
Sigma), the scan queue's bounded loss and budgets.

Each technique is performed for real by a small C program compiled here (``scanner_techniques``):
the test asserts the finding from ``sysmonx scan PID`` with the process's ProcessGuid, and no
finding of that name for the same program run without the technique. The live sensor's side is
``test_scanners_live.py``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from sysmonx.cli import main
from sysmonx.config import ConfigError, parse_config
from sysmonx.core.registry import SCANNERS
from sysmonx.event import LINUX_PROVIDER, Event
from sysmonx.filtering import FilterEngine
from sysmonx.filtering.triggers import ScanTriggers
from sysmonx.scanners.allowlist import AllowList, default_allowlist
from sysmonx.scanners.base import Finding, ProcessView
from sysmonx.scanners.engine import Identity, ScanReport, finding_event, scan_process
from sysmonx.scanners.stages import ScanOptions, ScanService

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scanner_techniques import harness

SCANNER_NAMES = {"memfd_exec", "deleted_exe", "exe_in_writable_dir", "anon_exec_memory",
                 "rwx_memory", "elf_in_anon_memory", "text_modified", "ptrace_attached",
                 "ld_preload", "argv_spoofed", "yara"}

needs_cc = pytest.mark.skipif(harness.compiler() is None, reason="no C compiler (cc/gcc/clang) "
                              "to build the technique programs")
needs_linux_proc = pytest.mark.skipif(not Path("/proc/self/mem").exists(),
                                      reason="needs Linux /proc")


def _yara_missing() -> str:
    from sysmonx.scanners.builtin.yara import yara_available
    return yara_available()


# ---------------------------------------------------------------------------------------------
# on demand: the technique harness


@pytest.fixture(scope="module")
def built():
    if harness.compiler() is None:
        pytest.skip("no C compiler (cc/gcc/clang) to build the technique programs")
    b = harness.build("unit")
    yield b
    b.close()


def _scan(pid: int, scanner: str, *extra: str) -> tuple[int, list[dict]]:
    out = io.StringIO()
    with redirect_stdout(out):
        rc = main(["scan", str(pid), "--scanners", scanner, "--format", "jsonl", *extra])
    return rc, [json.loads(line) for line in out.getvalue().splitlines()]


@needs_cc
@needs_linux_proc
@pytest.mark.parametrize("finding", list(harness.TECHNIQUES))
def test_technique_found_on_demand_and_its_control_is_clean(built, finding):
    if finding.startswith("yara:") and _yara_missing():
        pytest.skip(_yara_missing())
    scanner = "yara" if finding.startswith("yara:") else finding
    extra = ["--yara", str(built.rules)] if scanner == "yara" else []
    run = harness.start(built, finding, False, "sxscan-unit")
    expected_guid = Identity().guid(ProcessView(run.pid))
    rc, events = _scan(run.pid, scanner, *extra)
    assert rc == 1, events
    hits = [e for e in events if e["Finding"] == finding]
    assert len(hits) == 1, events
    e = hits[0]
    assert e["EventID"] == 200 and e["Scanner"] == scanner
    assert e["ProcessId"] == str(run.pid) and e["ProcessGuid"] == expected_guid
    assert e["TriggerEventId"] == "0" and e["Details"] and e["RuleName"] == "-"
    assert e["System"]["Provider"] == LINUX_PROVIDER and e["System"]["Task"] == 200
    control = harness.start(built, finding, True, "sxscan-unit")
    rc, events = _scan(control.pid, scanner, *extra)
    assert [e for e in events if e["Finding"] == finding] == []
    assert rc == 0, events


@needs_cc
@needs_linux_proc
def test_details_say_what_was_seen(built):
    run = harness.start(built, "text_modified", False, "sxscan-unit")
    _, events = _scan(run.pid, "text_modified")
    # nop nop ud2 patched over never_called(): memory vs file bytes, 4 bytes in one run
    assert "4 byte(s)" in events[0]["Details"] and "90900f0b" in events[0]["Details"]
    run = harness.start(built, "rwx_memory", False, "sxscan-unit")
    _, events = _scan(run.pid, "rwx_memory")
    assert "rwxp 12288 bytes (anonymous)" in events[0]["Details"]
    run = harness.start(built, "ld_preload", False, "sxscan-unit")
    _, events = _scan(run.pid, "ld_preload")
    assert events[0]["Details"] == f"LD_PRELOAD={built.library}"
    run = harness.start(built, "argv_spoofed", False, "sxscan-unit")
    _, events = _scan(run.pid, "argv_spoofed")
    assert "overwritten in place" in events[0]["Details"]
    assert "/tmp/harmless" in events[0]["Details"]


@needs_cc
@needs_linux_proc
def test_argv_spoofed_compares_with_the_command_line_recorded_at_exec(built):
    """A same-length rewrite leaves the layout intact: only the recorded line shows it."""
    from sysmonx.scanners.builtin import argv_spoofed
    run = harness.start(built, "argv_spoofed", True, "sxscan-unit")
    recorded = f"{built.program} argv {run.tagfile} --control"
    assert argv_spoofed.check(run.pid, recorded_cmdline=recorded) == []
    # a recorded line that the tier cut short is a prefix, not a difference
    assert argv_spoofed.check(run.pid, recorded_cmdline=recorded[:20]) == []
    found = argv_spoofed.check(run.pid, recorded_cmdline=f"{built.program} argv /tmp/other")
    assert len(found) == 1 and "recorded at exec" in found[0].details


@needs_cc
@needs_linux_proc
def test_argv_rendering_is_the_sensors(built):
    """Newlines, tabs and invalid UTF-8 in arguments: the recorded CommandLine (the sensor's
    rendering) and the scanner's rendering of the same argv agree, so no false difference."""
    from sysmonx.scanners.builtin import argv_spoofed
    from sysmonx.sensor.process import clean_text
    args = ["python3", "-c", "\nimport os\n\tx = 1\n", os.fsdecode(b"\xff\xfe")]
    raw = b"\0".join(os.fsencode(a) for a in args) + b"\0"
    assert argv_spoofed.command_line(raw) == clean_text(" ".join(args))
    p = subprocess.Popen([str(built.program), "plain", "/tmp/sxscan-unit-nl\nx\ty"],
                         stdout=subprocess.PIPE, text=True)
    built.procs.append(p)
    assert p.stdout.readline().startswith("ready")
    recorded = clean_text(f"{built.program} plain /tmp/sxscan-unit-nl\nx\ty")
    assert argv_spoofed.check(p.pid, recorded_cmdline=recorded) == []


@needs_cc
@needs_linux_proc
def test_check_functions_are_importable_per_scanner(built):
    """Each scanner module's ``check(pid)`` (what other parts of SysmonX call)."""
    from sysmonx.scanners.builtin import deleted_exe, memfd_exec
    run = harness.start(built, "deleted_exe", False, "sxscan-unit")
    found = deleted_exe.check(run.pid)
    assert [f.finding for f in found] == ["deleted_exe"] and "deleted since exec" in found[0].details
    assert memfd_exec.check(run.pid) == []
    assert deleted_exe.check(os.getpid()) == []
    # the same through the registry, without importing sysmonx.scanners (for the sensor)
    assert SCANNERS.get("deleted_exe").check(run.pid) == found


@needs_cc
@needs_linux_proc
def test_deleted_exe_sees_a_replaced_image(built, tmp_path):
    from sysmonx.scanners.builtin import deleted_exe
    prog = built.root / "technique-replaced"
    prog.write_bytes(built.program.read_bytes())
    prog.chmod(0o755)
    p = subprocess.Popen([str(prog), "plain", str(tmp_path / "tag")], stdout=subprocess.PIPE,
                         text=True)
    built.procs.append(p)
    assert p.stdout.readline().startswith("ready")
    assert deleted_exe.check(p.pid) == []
    new = built.root / "technique-new"
    new.write_bytes(built.program.read_bytes())
    os.replace(new, prog)  # what an upgrade does: a new file renamed over the path
    found = deleted_exe.check(p.pid)
    assert len(found) == 1 and ("deleted since exec" in found[0].details
                                or "replaced since exec" in found[0].details)


def test_scan_usage_and_exit_status(capsys):
    assert main(["scan"]) == 87
    assert "name PIDs or give --all" in capsys.readouterr().err
    assert main(["scan", "1", "--scanners", "nope"]) == 87
    assert "unknown scanner 'nope'" in capsys.readouterr().err
    assert main(["scan", "1", "--scanners", "yara"]) == 87
    assert "needs --yara" in capsys.readouterr().err
    # the scanner itself is never scanned; nothing found: 0, and a clean scan still says what
    # it did (a new user's report: silence looked like nothing had run)
    capsys.readouterr()
    assert main(["scan", str(os.getpid()), "999999999"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("sysmonx scan: 2 processes, 0 scanned, 2 skipped (")
    assert "; 0 findings, 0 dismissed by the allow-list" in captured.err


def test_scan_rejects_bad_yara_rules_with_the_place(tmp_path, capsys):
    if _yara_missing():
        pytest.skip(_yara_missing())
    bad = tmp_path / "bad.yar"
    bad.write_text("rule X { condition: nope }\n")
    assert main(["scan", "1", "--yara", str(bad)]) == 87
    err = capsys.readouterr().err
    assert str(bad) in err and "YARA" in err


@needs_linux_proc
def test_scan_all_reports_statistics(tmp_path):
    stats = tmp_path / "stats.json"
    out = io.StringIO()
    with redirect_stdout(out):
        rc = main(["scan", "--all", "--scanners", "memfd_exec,rwx_memory", "--stats", str(stats)])
    st = json.loads(stats.read_text())
    assert rc == (1 if st["findings"] else 0)
    assert st["processes"] >= st["scanned"] >= 1
    assert st["skipped"].get("self") == 1
    assert st["seconds_max"] >= st["seconds_median"] > 0 and st["peak_rss_kib"] > 0


# ---------------------------------------------------------------------------------------------
# registry, allow-list, budget


def test_every_scanner_is_registered_with_a_check_function():
    assert set(SCANNERS.names()) == SCANNER_NAMES
    assert SCANNERS.broken == {}
    import importlib
    for name in SCANNER_NAMES:
        mod = importlib.import_module(f"sysmonx.scanners.builtin.{name}")
        assert callable(mod.check), name
        assert SCANNERS.get(name).name == name


def test_plugins_lists_the_scanners(capsys):
    assert main(["plugins", "scanners"]) == 0
    out = capsys.readouterr().out
    for name in SCANNER_NAMES:
        assert f"\n  {name} " in out


def test_default_allowlist_dismisses_documented_causes_only():
    al = default_allowlist()
    assert len(al) >= 20
    jit = Finding("anon_exec_memory", "anon_exec_memory", "3 executable anonymous mapping(s)")
    assert al.dismiss(jit, "/usr/lib/jvm/java-17/bin/java").why.startswith("JIT")
    assert al.dismiss(jit, "/tmp/x") is None
    bp = Finding("text_modified", "text_modified",
                 "1 byte(s) of /bin/bash text differ from the file in 1 run(s) (only int3 "
                 "breakpoints): 0x1 1 bytes cc (file 55)")
    assert al.dismiss(bp, "/bin/bash") is not None
    patch = Finding("text_modified", "text_modified", "4 byte(s) of /bin/bash text differ")
    assert al.dismiss(patch, "/bin/bash") is None
    gdb = Finding("ptrace_attached", "ptrace_attached", "traced by pid 7 (/usr/bin/gdb)")
    evil = Finding("ptrace_attached", "ptrace_attached", "traced by pid 7 (/tmp/inject)")
    assert al.dismiss(gdb, "/bin/x") is not None and al.dismiss(evil, "/bin/x") is None
    runc = Finding("memfd_exec", "memfd_exec", "exe /memfd:runc_cloned:/proc/self/exe (deleted)")
    assert al.dismiss(runc, "/memfd:runc_cloned:/proc/self/exe (deleted)") is not None


def test_allowlist_package_upgrade_asks_the_package_manager(monkeypatch):
    from sysmonx.scanners import allowlist as mod
    monkeypatch.setitem(mod._dpkg, "files", {b"/usr/sbin/cron"})
    al = default_allowlist()
    f = Finding("deleted_exe", "deleted_exe", "exe /usr/sbin/cron deleted since exec")
    assert al.dismiss(f, "/usr/sbin/cron (deleted)") is not None
    assert al.dismiss(f, "/sbin/cron (deleted)") is not None  # the /usr-merged twin
    assert al.dismiss(f, "/opt/evil (deleted)") is None


def test_user_allowlist_extends_and_bad_files_say_where(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text("rwx_memory:\n  - image: '/opt/luajit/*'\n    why: our JIT\n")
    al = AllowList()
    al.extend(good)
    f = Finding("rwx_memory", "rwx_memory", "1 rwx mapping(s)")
    assert al.dismiss(f, "/opt/luajit/bin/x").why == "our JIT"
    bad = tmp_path / "bad.yaml"
    bad.write_text("rwx_memory:\n  - colour: red\n")
    with pytest.raises(ConfigError) as exc:
        al.extend(bad)
    assert str(bad) in str(exc.value)
    broken = tmp_path / "broken.yaml"
    broken.write_text("rwx_memory: [\n")
    with pytest.raises(ConfigError) as exc:
        al.extend(broken)
    assert str(broken) in str(exc.value) and ":2:" in str(exc.value) or "YAML" in str(exc.value)


@needs_cc
@needs_linux_proc
def test_budget_stops_a_scanner_and_is_reported(built):
    from sysmonx.scanners.engine import select_scanners
    run = harness.start(built, "elf_in_anon_memory", False, "sxscan-unit")
    scanners, _ = select_scanners(["elf_in_anon_memory", "memfd_exec", "deleted_exe"])
    rep = scan_process(run.pid, scanners, max_bytes=4096)
    assert rep.over_budget == ["elf_in_anon_memory"] and rep.findings == []
    rep = scan_process(run.pid, scanners)
    assert rep.over_budget == [] and [f.finding for f in rep.findings] == ["elf_in_anon_memory"]
    assert rep.bytes > 4096 and rep.seconds > 0


def test_scan_skips_itself_kernel_threads_and_gone_processes():
    from sysmonx.scanners.engine import select_scanners
    scanners, _ = select_scanners(["all"])
    assert scan_process(os.getpid(), scanners).skipped == "self"
    kthreadd = 2
    if Path(f"/proc/{kthreadd}/stat").exists() and b"kthreadd" in Path(
            f"/proc/{kthreadd}/stat").read_bytes():
        assert scan_process(kthreadd, scanners).skipped == "kernel thread"
    p = subprocess.Popen(["true"])
    p.wait()
    assert scan_process(p.pid, scanners).skipped == "gone"


@needs_cc
@needs_linux_proc
def test_scan_checks_the_process_is_the_one_the_event_named(built):
    from sysmonx.scanners.engine import select_scanners
    run = harness.start(built, "rwx_memory", False, "sxscan-unit")
    scanners, _ = select_scanners(["rwx_memory"])
    guid = Identity().guid(ProcessView(run.pid))
    assert scan_process(run.pid, scanners, expect_guid=guid).findings
    other = guid[:20] + "0000" + guid[24:]  # another process (other end_code)
    assert scan_process(run.pid, scanners, expect_guid=other).skipped == "replaced"


# ---------------------------------------------------------------------------------------------
# config attribute and triggers

CFG = """<Sysmon schemaversion="4.90"><EventFiltering>
  <RuleGroup groupRelation="or">
    <ProcessCreate onmatch="include" scanners="memfd_exec,deleted_exe">
      <Image condition="begin with">/tmp/</Image>
      <Rule groupRelation="and" scanners="yara:Mimikatz">
        <Image condition="end with">/x</Image><User condition="is">root</User>
      </Rule>
      <CommandLine condition="contains" scanners="argv_spoofed">--spoof</CommandLine>
    </ProcessCreate>
  </RuleGroup>
  <RuleGroup groupRelation="or">
    <NetworkConnect onmatch="exclude" scanners="all">
      <DestinationPort condition="is">53</DestinationPort>
    </NetworkConnect>
  </RuleGroup>
</EventFiltering></Sysmon>"""


def _plain(xml: str) -> str:
    """The config without its scanners= attributes."""
    import re
    return re.sub(r' scanners="[^"]*"', "", xml)


def test_config_keeps_scanners_on_tags_rules_and_filters():
    cfg = parse_config(CFG)
    pc = cfg.rule_sets[0]
    assert pc.scanners == ("memfd_exec", "deleted_exe")
    assert [a.scanners for a in pc.aggregates.values()] == [("yara:Mimikatz",)]
    assert [f.scanners for f in pc.filters] == [(), (), (), ("argv_spoofed",)]
    assert cfg.rule_sets[1].scanners == ("all",) and cfg.requests_scans
    assert not parse_config(_plain(CFG)).requests_scans


@pytest.mark.parametrize("text, message", [
    ('<ProcessCreate onmatch="include" scanners="nope"><Image>x</Image></ProcessCreate>',
     "unknown scanner 'nope'"),
    ('<ProcessCreate onmatch="include" scanners=" , "><Image>x</Image></ProcessCreate>',
     "empty scanners"),
    ('<ProcessCreate onmatch="exclude"><Image scanners="all">x</Image></ProcessCreate>',
     "an exclude rule never includes an event"),
])
def test_config_refuses_bad_scanner_attributes_with_the_line(text, message):
    xml = f'<Sysmon schemaversion="4.90"><EventFiltering>\n{text}\n</EventFiltering></Sysmon>'
    with pytest.raises(ConfigError) as exc:
        parse_config(xml, "c.xml")
    assert message in str(exc.value) and "c.xml:2" in str(exc.value)


def test_without_extensions_scanners_and_scanner_finding_are_refused():
    with pytest.raises(ConfigError, match="No declaration for attribute scanners"):
        parse_config(CFG, extensions=False)
    xml = ('<Sysmon schemaversion="4.90"><EventFiltering><ScannerFinding onmatch="exclude">'
           '<Finding>rwx_memory</Finding></ScannerFinding></EventFiltering></Sysmon>')
    assert parse_config(xml).rule_sets[0].event_id == 200
    with pytest.raises(ConfigError, match="SysmonX extensions are disabled"):
        parse_config(xml, extensions=False)


def _pc(image: str, cmd: str = "x", user: str = "root") -> dict:
    return {"RuleName": "-", "Image": image, "CommandLine": cmd, "User": user}


def test_triggers_follow_which_rule_included_the_event():
    cfg = parse_config(CFG)
    trig = ScanTriggers(cfg)
    eng = FilterEngine(cfg)
    cases = [
        (_pc("/tmp/a"), ("memfd_exec", "deleted_exe")),
        (_pc("/usr/bin/x"), ("memfd_exec", "deleted_exe", "yara:Mimikatz")),
        (_pc("/usr/bin/x", user="bob"), ()),               # not included at all
        (_pc("/tmp/x", "--spoof"), ("memfd_exec", "deleted_exe", "yara:Mimikatz",
                                    "argv_spoofed")),
    ]
    for data, want in cases:
        included = eng.decide(1, data)[0]
        got = trig.scanners_for(1, data) if included else ()
        assert got == want, data
    # an exclude set with scanners: every event it lets through
    assert trig.scanners_for(3, {"DestinationPort": "443"}) == ("all",)
    assert eng.decide(3, {"DestinationPort": "53"})[0] is False
    assert ScanTriggers(None).event_ids == frozenset()


def test_blob_refuses_the_scanner_finding_tag():
    from sysmonx.config.blob import BlobError, compile_blob
    xml = ('<Sysmon schemaversion="4.90"><EventFiltering><ScannerFinding onmatch="exclude">'
           '<Finding>rwx_memory</Finding></ScannerFinding></EventFiltering></Sysmon>')
    with pytest.raises(BlobError, match="SysmonX event 200"):
        compile_blob(parse_config(xml))
    # scanners= attributes leave Sysmon's filtering as it is: the blob is the plain config's
    assert compile_blob(parse_config(CFG)) == compile_blob(parse_config(_plain(CFG)))


# ---------------------------------------------------------------------------------------------
# event 200 through the loop


def _trigger() -> Event:
    return Event(1, {"RuleName": "-", "UtcTime": "2026-12-06 10:00:00.000",
                     "ProcessGuid": "{11111111-0000-0000-0000-000000000000}",
                     "ProcessId": "42", "Image": "/tmp/x", "CommandLine": "x"},
                 provider=LINUX_PROVIDER, provider_guid="{ff032593-a8d3-4f13-b0d6-01fc615a0f97}",
                 version=5, level=4, task=1, opcode=0, keywords="0x8000000000000000",
                 time_created="2026-12-06T10:00:00.000000000Z", record_id=1, process_id=9,
                 thread_id=9, channel="Linux-Sysmon/Operational", computer="host")


def _finding_event(details: str = "0x1000-0x2000 rwxp") -> Event:
    rep = ScanReport(42, "/tmp/x", "{11111111-0000-0000-0000-000000000000}")
    return finding_event(rep, Finding("rwx_memory", "rwx_memory", details), _trigger(),
                         ts_ns=1_765_000_000_123_456_789)


def test_finding_event_fields_and_envelope():
    e = _finding_event()
    assert list(e.data) == ["RuleName", "UtcTime", "ProcessGuid", "ProcessId", "Image",
                            "Scanner", "Finding", "Details", "TriggerEventId"]
    assert e.data["UtcTime"] == "2025-12-06 05:46:40.123"
    assert e.data["TriggerEventId"] == "1" and e.computer == "host"
    assert e.provider == LINUX_PROVIDER and e.channel == "Linux-Sysmon/Operational"
    assert e.event_id == 200 and e.task == 200 and e.version == 1 and e.level == 4
    # a value from the scanned process cannot forge a line or a field
    forged = _finding_event("a\nb</Data><Data Name='Finding'>x\x1b[2J")
    assert "\n" not in forged.data["Details"] and "\x1b" not in forged.data["Details"]


@pytest.mark.parametrize("fmt", ["xml", "linux-xml", "jsonl", "csv"])
def test_every_output_format_writes_event_200(fmt, tmp_path):
    from sysmonx.sinks import writer_class
    out = tmp_path / f"o.{fmt}"
    w = writer_class(fmt).open(str(out))
    w.write(_finding_event("x</Data><Data Name=\"Finding\">forged"))
    w.close()
    text = out.read_text()
    assert "rwx_memory" in text and "200" in text
    if fmt in ("xml", "linux-xml"):
        assert "<EventID>200</EventID>" in text
        assert "Name='Scanner'>rwx_memory<" in text or 'Name="Scanner">rwx_memory<' in text
        assert "&lt;/Data&gt;" in text
    # read back through the replay readers (each format's own): same fields
    if fmt != "csv":
        from sysmonx.sources.detect import open_source
        back = [e for e in open_source(str(out), lambda e: pytest.fail(str(e)))]
        assert back[0].event_id == 200
        assert back[0].data["Details"] == "x</Data><Data Name=\"Finding\">forged"


def test_scanner_finding_is_filtered_and_named_by_config():
    from sysmonx.filtering.stage import FilterStage
    cfg = parse_config("""<Sysmon schemaversion="4.90"><EventFiltering>
      <ScannerFinding onmatch="include">
        <Finding name="T1055 rwx" condition="is">rwx_memory</Finding>
      </ScannerFinding></EventFiltering></Sysmon>""")
    st = FilterStage(cfg)
    keep = _finding_event()
    assert st.process(keep, lambda x: None) and keep.data["RuleName"] == "T1055 rwx"
    other = _finding_event()
    other.data["Finding"] = "memfd_exec"
    assert not st.process(other, lambda x: None)
    # without a ScannerFinding rule findings are logged (default include)
    assert FilterStage(parse_config(CFG)).process(_finding_event(), lambda x: None)


def test_sigma_sees_findings_through_the_documented_logsource(tmp_path):
    from sysmonx.detection.stage import DetectionStage
    rule = tmp_path / "r.yml"
    rule.write_text("""title: Executable anonymous memory found by a scanner
id: 5b2f3c1e-7a3b-4c44-9d1e-1f6b1e0c2a10
status: experimental
logsource:
    product: linux
    category: scanner_finding
detection:
    sel:
        Finding: rwx_memory
    condition: sel
level: high
""")
    det = DetectionStage.from_paths([str(rule)])
    alerts = det.process(_finding_event())
    assert [a.title for a in alerts] == ["Executable anonymous memory found by a scanner"]
    other = _finding_event()
    other.data["Finding"] = "memfd_exec"
    assert det.process(other) == []


# ---------------------------------------------------------------------------------------------
# the scan queue: bounded, never blocking, losses reported


def test_full_scan_queue_drops_the_oldest_counts_and_reports_one_event_255(monkeypatch):
    gate = threading.Event()
    svc = ScanService(ScanOptions(queue_size=2, repeat_s=0))
    scanned: list = []

    def slow(req):
        gate.wait(5)
        scanned.append(req.guid)

    monkeypatch.setattr(svc, "_scan", slow)
    trig = _trigger()
    t0 = time.monotonic()
    for i in range(10):
        assert svc.submit(("rwx_memory",), 42, f"{{g{i}}}", trig, None)
    assert time.monotonic() - t0 < 0.5  # never blocks the loop
    # the worker holds one (the newest when it woke), two wait: the rest were dropped
    assert svc.stats.dropped in (7, 8)
    assert svc.take(losses=False) == []  # findings only: the loss waits for the tick
    out = svc.take()
    assert [e.event_id for e in out] == [255]
    assert out[0].data["ID"] == "Scanner"
    assert out[0].data["Description"].startswith(f"{svc.stats.dropped} scan request(s) could "
                                                 "not be queued")
    assert svc.take() == []  # reported once
    gate.set()
    assert svc.drain(5)
    assert "{g9}" in scanned and "{g8}" in scanned  # the newest are scanned, newest first
    assert scanned.index("{g9}") < scanned.index("{g8}")
    svc.close()


def test_repeated_requests_for_one_process_are_scanned_once(monkeypatch):
    svc = ScanService(ScanOptions(repeat_s=60))
    seen = []
    monkeypatch.setattr(svc, "_scan", lambda req: seen.append(req.pid))
    for _ in range(5):
        svc.submit(("rwx_memory",), 42, "{g}", _trigger(), None)
    assert svc.drain(5) and seen == [42] and svc.stats.repeats == 4
    svc.close()


@needs_linux_proc
def test_scan_stages_emit_findings_before_the_filter(monkeypatch):
    """The worker's findings come out of ``scanner-findings``; the loop sends them on."""
    from sysmonx.scanners.stages import scan_stages
    cfg = parse_config(CFG)
    findings, requests = scan_stages(cfg, ScanOptions())
    svc = findings.service
    assert svc is requests.service
    done = threading.Event()

    def fake_scan(req):
        svc._account(ScanReport(req.pid, "/tmp/a", req.guid,
                                findings=[Finding("memfd_exec", "memfd_exec", "exe /memfd:x")]),
                     req)
        done.set()

    monkeypatch.setattr(svc, "_scan", fake_scan)
    ev = _trigger()
    ev.data["Image"] = "/tmp/a"
    assert requests.process(ev, lambda x: None) is True
    assert done.wait(5)
    emitted: list = []
    findings.tick(0, emitted.append)
    assert [e.event_id for e in emitted] == [200]
    assert emitted[0].data["ProcessGuid"] == ev.data["ProcessGuid"]
    assert emitted[0].data["TriggerEventId"] == "1"
    assert svc.stats.requested == 1 and svc.stats.findings == {"memfd_exec": 1}
    findings.finish(lambda x: None)


def test_windows_sensor_config_leaves_sysmonx_events_and_scanners_out():
    """Sysmon is handed neither <ScannerFinding> nor scanners= attributes (SysmonX scans and
    filters its own events itself)."""
    from sysmonx.windows.sensorconfig import derive_sensor_config
    xml = CFG.replace("</EventFiltering>", '<RuleGroup groupRelation="or"><ScannerFinding '
                      'onmatch="exclude"><Finding>rwx_memory</Finding></ScannerFinding>'
                      "</RuleGroup></EventFiltering>")
    derived = derive_sensor_config(parse_config(xml))
    assert "ScannerFinding" not in derived.xml and "scanners=" not in derived.xml
    assert "ProcessCreate" in derived.xml


def test_scanner_finding_is_schema_data_printed_by_dash_s(capsys):
    """Event 200 is in the catalogue as an extension event: in every schema snapshot, filterable
    by <ScannerFinding>, printed by ``sysmonx -s``, absent from Sysmon's own manifest."""
    from sysmonx.schema import CURRENT, all_versions, get_schema
    from sysmonx.schema.printer import render_manifest
    for v in all_versions():
        assert get_schema(v).tags["ScannerFinding"] == (200,)
    ev = CURRENT.events[200]
    assert ev.extension and ev.field_names == (
        "RuleName", "UtcTime", "ProcessGuid", "ProcessId", "Image", "Scanner", "Finding",
        "Details", "TriggerEventId")
    assert main(["-s"]) == 0
    out = capsys.readouterr().out
    assert 'name="SYSMONXEVENT_SCANNER_FINDING" value="200"' in out
    assert 'rulename="ScannerFinding"' in out
    assert "ScannerFinding" not in render_manifest(CURRENT, "windows", extensions=False)
