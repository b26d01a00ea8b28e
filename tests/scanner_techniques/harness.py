"""The technique harness: build the technique program (C, compiled here) and start processes
that perform one real technique each (or the same program without it), for the scanner tests.

Every technique is a few system calls on the program's own memory or environment (see
``technique.c``); nothing here is malware. A process prints ``ready PID`` once its technique is
done and it has created its tag file (the FileCreate the live sensor scans on), then sleeps.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent

#: The YARA rule of the ``yara`` technique (the marker is assembled at run time, so neither the
#: program file nor its command line holds it).
YARA_RULE = """
rule SysmonxTestMarker
{
    strings:
        $m = "SYSMONX_YARA_MARKER_4242"
    condition:
        $m
}
"""

#: finding name -> technique mode (``technique.c``).
TECHNIQUES = {
    "memfd_exec": "memfd",
    "deleted_exe": "deleted",
    "exe_in_writable_dir": "writable",
    "anon_exec_memory": "anon",
    "rwx_memory": "rwx",
    "elf_in_anon_memory": "elf",
    "text_modified": "text",
    "ptrace_attached": "ptrace",
    "ld_preload": "preload",
    "argv_spoofed": "argv",
    "yara:SysmonxTestMarker": "yara",
}


def compiler() -> Optional[str]:
    """A C compiler on PATH, or ``None``."""
    return shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


@dataclass
class Built:
    """The compiled program and library, in a private directory that is not world-writable
    and not under /tmp (so only the ``writable`` technique's copy lies in a writable place)."""

    root: Path
    program: Path
    library: Path
    rules: Path
    procs: list = field(default_factory=list)

    def close(self) -> None:
        """Kill every process (tracers first: a traced process is reaped after its tracer),
        remove the files."""
        for p in reversed(self.procs):
            if p.poll() is None:
                p.kill()
        for p in reversed(self.procs):
            p.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


def build(tag: str) -> Built:
    """Compile ``technique.c`` and ``preload.c`` into a private directory."""
    cc = compiler()
    assert cc is not None
    base = Path.home() / ".cache"
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=f"sxscan-{tag}-", dir=base))
    os.chmod(root, 0o755)
    program = root / "technique"
    library = root / "libsxpreload.so"
    subprocess.run([cc, "-O1", "-o", str(program), str(HERE / "technique.c")], check=True)
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(library), str(HERE / "preload.c")],
                   check=True)
    rules = root / "marker.yar"
    rules.write_text(YARA_RULE)
    return Built(root, program, library, rules)


@dataclass
class Running:
    """A started technique process: ``pid`` of the process that performed it, ``tagfile``."""

    finding: str
    control: bool
    pid: int
    tagfile: str
    proc: subprocess.Popen


def _ready(proc: subprocess.Popen, timeout: float = 20.0) -> int:
    end = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if line.startswith("ready "):
            return int(line.split()[1])
        if not line and proc.poll() is not None:
            raise AssertionError(f"technique exited with {proc.returncode}")
    raise AssertionError("technique did not become ready")


def start(built: Built, finding: str, control: bool, tag: str) -> Running:
    """Start the technique program for ``finding`` (with ``control``: without the technique)
    and wait until it is ready. The tag file name contains ``tag`` (the live config's rule)."""
    mode = TECHNIQUES[finding]
    name = finding.replace(":", "-")
    tagfile = f"/tmp/{tag}-{name}{'-control' if control else ''}"
    program = built.program
    env = dict(os.environ)
    args_mode = mode
    if mode == "deleted":  # it unlinks its own image: give it a copy of its own
        program = built.root / f"technique-{name}-{int(control)}"
        shutil.copy2(built.program, program)
    elif mode == "writable":
        args_mode = "plain"
        if not control:
            program = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir="/dev/shm")) / "technique"
            shutil.copy2(built.program, program)
    elif mode == "preload":
        args_mode = "plain"
        if not control:
            env["LD_PRELOAD"] = str(built.library)
    argv = [str(program), args_mode, tagfile] + (["--control"] if control else [])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env)
    built.procs.append(proc)
    if mode == "ptrace" and not control:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("waiting "), line
        tracer = subprocess.Popen([str(built.program), "tracer", line.split()[1]],
                                  stdout=subprocess.PIPE, text=True)
        built.procs.append(tracer)
        assert tracer.stdout is not None and tracer.stdout.readline().startswith("attached")
    pid = _ready(proc)
    if mode == "writable" and not control:
        built.procs.append(_Cleanup(program.parent))
    return Running(finding, control, pid, tagfile, proc)


class _Cleanup:
    """Removes a directory when :meth:`Built.close` 'kills' it."""

    def __init__(self, path: Path):
        self.path = path

    def poll(self) -> int:
        shutil.rmtree(self.path, ignore_errors=True)
        return 0

    def kill(self) -> None:
        pass

    def wait(self, timeout: float) -> int:
        return 0
