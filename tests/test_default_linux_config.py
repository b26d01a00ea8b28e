"""The built-in Linux config: semaphores of every Python and glibc program are not reported as
ingress tool transfer, while a real drop in /dev/shm still is.

A new user's live run wrote 40 FileCreate events in 30 s, all ``/dev/shm/sem.*`` files of other
Python processes (multiprocessing's locks: glibc's ``sem_open`` creates ``/dev/shm/sem.XXXXXX``
and links it to ``sem.<name>``), each named T1105. Fails on the config before the exclude.
"""

from __future__ import annotations

import pytest

from sysmonx.cli.common import builtin_linux_config_path
from sysmonx.config import load_config
from sysmonx.filtering import EngineOptions, FilterEngine

T1105 = "technique_id=T1105,technique_name=Ingress Tool Transfer"


@pytest.fixture(scope="module", params=[True, False], ids=["indexed", "walk"])
def engine(request):
    return FilterEngine(load_config(builtin_linux_config_path()),
                        EngineOptions(indexed=request.param))


def _file(path: str, image: str = "/usr/bin/python3.11") -> dict:
    return {"RuleName": "-", "UtcTime": "2026-12-07 04:10:00.000",
            "ProcessGuid": "{00000000-0000-0000-0000-000000000000}", "ProcessId": "42",
            "Image": image, "TargetFilename": path,
            "CreationUtcTime": "2026-12-07 04:10:00.000", "User": "root"}


@pytest.mark.parametrize("path", ["/dev/shm/sem.xAzL5Q", "/dev/shm/sem.mp-4x8k2w9a",
                                  "/dev/shm/sem.loky-1234-abcd"])
def test_semaphores_are_not_reported(engine, path):
    assert engine.decide(11, _file(path))[0] is False


@pytest.mark.parametrize("path", ["/dev/shm/payload", "/dev/shm/.x", "/dev/shm/sem",
                                  "/dev/shm/semx.elf", "/dev/shm/dir/sem.x"])
def test_a_real_drop_in_dev_shm_is_still_t1105(engine, path):
    assert engine.decide(11, _file(path, "/usr/bin/curl")) == (True, T1105)


def test_the_rest_of_the_file_rules_still_fire(engine):
    assert engine.decide(11, _file("/root/.ssh/authorized_keys"))[0] is True
    assert engine.decide(11, _file("/tmp/random.txt"))[0] is False


@pytest.mark.parametrize("kind", ["Image is fileless", "Image is deleted",
                                  "Command line is rewritten", "Image is replaced"])
def test_process_tampering_is_logged(engine, kind):
    """README lists 25 ProcessTampering as on by default; a new user's live run showed 4 seen,
    4 dropped: the config had no ProcessTampering rule set, and an event type without one is
    dropped (Sysmon's rule). Fails on the config without ``<ProcessTampering onmatch="exclude"/>``."""
    data = {"RuleName": "-", "UtcTime": "2026-12-07 09:45:00.000",
            "ProcessGuid": "{00000000-0000-0000-0000-000000000000}", "ProcessId": "4242",
            "Image": "/memfd:x (deleted)", "Type": kind, "User": "root"}
    assert engine.decide(25, data)[0] is True


@pytest.mark.parametrize("event_id", [1, 3, 5, 9, 10, 22, 25])
def test_the_event_types_logged_in_full_have_a_rule_set(event_id):
    """The comment at the config's top names the event types it logs in full: each has an
    empty exclude rule set (everything kept), as README's table says."""
    config = load_config(builtin_linux_config_path())
    sets = [rs for rs in config.rule_sets if rs.event_id == event_id]
    assert sets and all(rs.onmatch == "exclude" and not rs.filters for rs in sets)
