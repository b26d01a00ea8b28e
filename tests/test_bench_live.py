"""bench/bench_live.py measures honestly (issue: it divided CPU by a wall time with 2 s of idle per
phase, counted matching events instead of distinct execs, did not check ProcessGuid, exited 0
when the sensor did not start, and its documented command ran outside the venv)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_live.py"
spec = importlib.util.spec_from_file_location("bench_live", BENCH)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

TRUE = os.path.realpath("/bin/true")


def ev(eid, i, guid, pid="100", image=TRUE, tag="t"):
    e = {"EventID": eid, "ProcessGuid": guid, "ProcessId": pid, "Image": image}
    if eid == 1:
        e["CommandLine"] = f"/bin/true {tag}-{i}"
    return e


def g(n: int) -> str:
    return f"{{3d1219c7-5a51-6b15-59ed-d0346855{n:04x}}}"


def test_score_counts_distinct_execs_with_valid_unique_guids_and_their_exit():
    events = [
        ev(1, 0, g(1), "1"), ev(5, 0, g(1), "1"),
        ev(1, 0, g(1), "1"), ev(5, 0, g(1), "1"),                 # the same exec written twice
        ev(1, 1, "{00000000-0000-0000-0000-000000000000}", "2"),   # zero GUID
        ev(1, 2, "{3d1219c7-5a51-6b15-0000-000000000000}", "3"),   # zero key
        ev(1, 3, g(4), "4"), ev(1, 4, g(4), "5"),                  # two execs, one GUID
        ev(5, 3, g(4), "4"), ev(5, 4, g(4), "5"),
        ev(1, 5, g(6), "6"),                                       # no event 5
        ev(1, 6, g(7), "7", image="-"), ev(5, 6, g(7), "7"),       # wrong image
        ev(1, 7, g(8), "8"), ev(5, 7, g(8), "8"),                  # right
    ]
    s = bench.score(events, "t", 10)
    assert s["captured"] == 2 and s["duplicates"] == 1 and s["bad_guid"] == 4
    assert s["share"] == pytest.approx(0.2)
    assert any("2 execs without an event 1" in o for o in s["other"])


def test_full_guid():
    assert bench.full_guid(g(1))
    assert not bench.full_guid("{3d1219c7-0000-0000-59ed-d03468550000}")
    assert not bench.full_guid("{3d1219c7-5a51-6b15-0000-000000000000}")
    assert not bench.full_guid("not a guid")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("cc"), reason="needs root and cc")
def test_exits_non_zero_when_the_sensor_does_not_start():
    r = subprocess.run([sys.executable, str(BENCH), "--backends", "no-such-tier", "--burst", "5",
                        "--rate", "5", "--seconds", "1", "--idle", "0"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    assert "no-such-tier NOT MEASURED: no-such-tier: sensor did not start" in r.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_refuses_a_python_without_sysmonx():
    system = shutil.which("python3", path="/usr/bin:/bin")
    if system is None or subprocess.run([system, "-c", "import sysmonx"],
                                        capture_output=True).returncode == 0:
        pytest.skip("no Python without sysmonx here")
    r = subprocess.run([system, str(BENCH), "--backends", "ebpf"], capture_output=True,
                       text=True, timeout=60, cwd="/")
    assert r.returncode == 2 and "run with the project's venv" in r.stderr


def test_documented_command_uses_the_venv_python():
    root = BENCH.parents[1]
    for doc in (root / "README.md", root / "docs" / "PERFORMANCE.md", BENCH):
        text = doc.read_text()
        assert "sudo .venv/bin/python bench/bench_live.py" in text, doc
        assert "sudo python bench/bench_live.py" not in text, doc


def test_cpu_is_divided_by_the_load_window_only(monkeypatch):
    """The old bench slept 2 s inside the timed window after each phase; now the window is the
    spawner's run, and the CPU counted runs until the phase's events are written."""
    import time as _time

    ticks = iter([0, 150, 200])  # at the start, at the end of the load, when all is written
    monkeypatch.setattr(bench, "cpu_ticks", lambda pid: next(ticks))
    monkeypatch.setattr(bench.os, "sysconf", lambda name: 100)

    class Done:
        stdout = "100 0.2\n"

    def spawner(*a, **k):
        _time.sleep(0.2)
        return Done()

    monkeypatch.setattr(bench.subprocess, "run", spawner)

    class Sensor:
        pid = 1

        def poll(self):
            return None

    class Out:
        events = ([{"EventID": 1, "CommandLine": f"/bin/true tg-{i}", "ProcessId": str(i)}
                   for i in range(100)] + [{"EventID": 5, "ProcessId": str(i)}
                                           for i in range(100)])

        def poll(self):
            pass

    p = bench.phase(Sensor(), Out(), Path("/x"), 100, 0.0, "tg", 5.0)
    assert p["made"] == 100
    assert 0.19 < p["load_s"] < 0.4          # the spawner's run, no idle
    assert p["cpu_s"] == 2.0 and p["cpu_in_window_s"] == 1.5
