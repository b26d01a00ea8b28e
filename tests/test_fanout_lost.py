"""FanOut.lost_everywhere: the heartbeat's EventsLost share from the outputs (review S #8)."""

from __future__ import annotations

from sysmonx.event import Event
from sysmonx.pipeline.fanout import FanOut, SinkSlot


class Flaky:
    """An events output that fails on the events whose number is in ``bad``."""

    def __init__(self, name: str, bad: set[int]) -> None:
        self.name, self.bad, self.got = name, bad, []

    def write(self, item: Event) -> None:
        n = int(item.data["n"])
        if n in self.bad:
            raise OSError(28, "No space left on device")
        self.got.append(n)


def run(bads: list[set[int]]) -> tuple[FanOut, list[Flaky]]:
    sinks = [Flaky(f"o{i}", b) for i, b in enumerate(bads)]
    fo = FanOut([SinkSlot(s, policy="count", count_ids=True) for s in sinks])
    for n in range(1, 21):
        fo.deliver(Event(1, {"n": str(n)}))
    return fo, sinks


def test_lost_everywhere_exact_when_failures_overlap():
    fo, sinks = run([set(range(1, 11)), set(range(5, 11))])
    assert fo.lost_everywhere() == 6  # events 5-10 reached no output
    assert sorted(set(sinks[0].got) | set(sinks[1].got)) == list(range(1, 5)) + \
        list(range(11, 21))


def test_lost_everywhere_is_an_upper_bound_when_outputs_failed_on_different_events():
    """Documented as "at most" (README, RESILIENCE): A failed on 1-10 and B on 11-20, so every
    event reached one output, yet the count says 10; counting per event across queued slots
    (their own threads) is not done."""
    fo, sinks = run([set(range(1, 11)), set(range(11, 21))])
    assert sorted(sinks[0].got + sinks[1].got) == list(range(1, 21))  # none lost everywhere
    assert fo.lost_everywhere() == 10


def test_lost_everywhere_with_one_output_is_its_own_count():
    fo, _ = run([{3, 4, 7}])
    assert fo.lost_everywhere() == 3
