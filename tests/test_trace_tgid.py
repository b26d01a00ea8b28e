"""Which process a trace line's task belongs to (``cn_tracefs.thread_group``).

The tracer's ``record-tgid`` column is looked up in a pid-indexed table when the line is read
and saved lazily (at a context switch after the event): a reader faster than that
switch can print the entry of an earlier task with the same pid (after the pid numbers wrapped,
``pid_max`` 32768, another process's thread), so a live task is resolved from /proc."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

from sysmonx.sensor.backends.cn_tracefs import thread_group


def test_a_live_task_is_resolved_from_proc_whatever_the_column_says():
    assert thread_group(os.getpid(), 12345) == os.getpid()
    assert thread_group(os.getpid(), None) == os.getpid()
    got: list = []
    ready, done = threading.Event(), threading.Event()

    def run() -> None:
        got.append(threading.get_native_id())
        ready.set()
        done.wait(10)

    t = threading.Thread(target=run)
    t.start()
    try:
        ready.wait(10)
        tid = got[0]
        assert tid != os.getpid()
        # a stale column (the tid itself, as an earlier single-threaded process of that pid
        # would have left it) does not win over /proc
        assert thread_group(tid, tid) == os.getpid()
    finally:
        done.set()
        t.join()


def test_an_exited_task_takes_the_column_then_its_own_id():
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                       capture_output=True, text=True, check=True)
    gone = int(p.stdout)
    if os.path.exists(f"/proc/{gone}"):  # reused already: nothing to assert
        return
    assert thread_group(gone, 4242) == 4242
    assert thread_group(gone, None) == gone
