"""Cost of reading and writing ``Event.data`` on an Event built with a dict (the live sensor's
and Sigma's events), against reading a plain slot (``event_id``) in the same run.

```sh
python bench/bench_event_attr.py [--rounds 7] [--n 2000000]
```

Once the compiled EVTX converter has made its first Event (``sysmonx replay`` of an EVTX file),
``Event.data`` is a descriptor over the slot that builds the dict of an EVTX record on first
read; before that (a live sensor, JSON or XML input) it is the plain slot. This bench shows what
the descriptor costs events that already have their dict: the rows before and after one EVTX
record is converted. Prints ns per access (best of ``--rounds``) and the ratio to the plain slot
read of the same phase. Exits 2 when the extension is not in use (nothing to measure).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Callable


def _best(fn: Callable[[int], None], n: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        fn(n)
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--n", type=int, default=2_000_000)
    args = ap.parse_args(argv)
    from sysmonx.core import native
    from sysmonx.event import Event
    from sysmonx.sources import evtx
    if native.speedups is None:
        print(f"not measured: {native.implementation()}", file=sys.stderr)
        return 2
    ev = Event(1, {"UtcTime": "2026-12-07 00:00:00.000", "Image": "/usr/bin/true"})
    d = ev.data

    def read_slot(n: int) -> None:
        e = ev
        for _ in range(n):
            e.event_id  # noqa: B018 - the read is what is measured

    def read_data(n: int) -> None:
        e = ev
        for _ in range(n):
            e.data  # noqa: B018

    def write_data(n: int) -> None:
        e = ev
        for _ in range(n):
            e.data = d

    def new_event(n: int) -> None:
        for _ in range(n):
            Event(1, d)

    for phase in ("before", "after"):
        if phase == "after":
            evtx._convert(_RECORD, ("x.evtx", 1), None)
        print(f"{phase} an EVTX record is converted: Event.data is "
              f"{type(Event.__dict__['data']).__name__}")
        base = _best(read_slot, args.n, args.rounds)
        print(f"  {'read event_id (baseline)':26} {base:7.2f} ns  1.00")
        for label, fn, n in (("read data", read_data, args.n),
                             ("write data", write_data, args.n),
                             ("Event(1, data)", new_event, args.n // 4)):
            t = _best(fn, n, args.rounds)
            print(f"  {label:26} {t:7.2f} ns  {t / base:.2f}")
    return 0


_RECORD = (
    '{"Event":{"System":{"Provider":{"#attributes":{"Name":"Microsoft-Windows-Sysmon","Guid":'
    '"5770385F-C22A-43E0-BF4C-06F5698FFBD9"}},"EventID":1,"Version":5,"Level":4,"Task":1,'
    '"Opcode":0,"Keywords":"0x8000000000000000","TimeCreated":{"#attributes":{"SystemTime":'
    '"2019-04-18T16:55:37.125139Z"}},"EventRecordID":4,"Execution":{"#attributes":'
    '{"ProcessID":3192,"ThreadID":3288}},"Channel":"Microsoft-Windows-Sysmon/Operational",'
    '"Computer":"IEWIN7","Security":{"#attributes":{"UserID":"S-1-5-18"}}},"EventData":'
    '{"UtcTime":"2019-04-18 16:55:37.075","Image":"C:\\\\a.exe"}}}')


if __name__ == "__main__":
    sys.exit(main())
