"""A reload puts the new configuration in force for events that happen after it; an event that
happened before it but reaches the filter later (the live sensor holds events ~0.25 s to order
them) is decided by the configuration in force when it happened. Seen by a new user: a SIGHUP
reload that stopped logging ProcessCreate also hid the ``cp`` that wrote the new config (run
150 ms before the SIGHUP), and a command run in the blind window was logged after the next
reload."""

from __future__ import annotations

import time

from sysmonx.config import parse_config
from sysmonx.event import Event
from sysmonx.filtering import stage as stage_mod
from sysmonx.filtering.stage import FilterStage

LOG_ALL = (b'<Sysmon schemaversion="4.81"><EventFiltering><RuleGroup groupRelation="or">'
           b'<ProcessCreate onmatch="exclude"/></RuleGroup></EventFiltering></Sysmon>')
LOG_NONE = (b'<Sysmon schemaversion="4.81"><EventFiltering><RuleGroup groupRelation="or">'
            b'<ProcessCreate onmatch="include"/></RuleGroup></EventFiltering></Sysmon>')


def _at(ts_ns: int) -> Event:
    s, ns = divmod(ts_ns, 1_000_000_000)
    t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + f".{ns // 1000:06d}000Z"
    return Event(1, {"RuleName": "-", "UtcTime": "x", "Image": "/usr/bin/cp"},
                 provider="Linux-Sysmon", time_created=t)


def test_events_before_a_reload_are_decided_by_the_config_then_in_force(monkeypatch):
    st = FilterStage(parse_config(LOG_ALL))
    before = _at(time.time_ns() - 150_000_000)        # the cp, 150 ms before the SIGHUP
    st.reload(parse_config(LOG_NONE))
    after = _at(time.time_ns() + 1_000_000)
    assert st.process(before, lambda e: None) is True   # logged: ProcessCreate was on then
    assert st.process(after, lambda e: None) is False   # the blind window
    blind = _at(time.time_ns() - 1_000_000)
    st.reload(parse_config(LOG_ALL))
    assert st.process(blind, lambda e: None) is False   # happened while ProcessCreate was off
    assert st.process(_at(time.time_ns() + 1_000_000), lambda e: None) is True
    assert (st.included[1], st.excluded[1]) == (2, 2)
    # after the overlap the previous configuration is forgotten
    monkeypatch.setattr(stage_mod, "RELOAD_OVERLAP_S", -1.0)
    st.reload(parse_config(LOG_NONE))
    st.process(_at(time.time_ns() + 1_000_000), lambda e: None)
    assert st._before is None
    assert st.process(_at(time.time_ns() - 5_000_000_000), lambda e: None) is False
