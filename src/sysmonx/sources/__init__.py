"""Replay readers: recorded event logs in, :class:`~sysmonx.event.Event` objects out.

One module per format, each a generator function ``read_<format>(path, on_error)`` (and a
``read_<format>_stream(stream, name, on_error)`` variant for archive members):

==========  ========================================  ===========================================
format      module                                    input
==========  ========================================  ===========================================
evtx        :mod:`sysmonx.sources.evtx`               Windows ``.evtx`` (pyevtx-rs)
xml         :mod:`sysmonx.sources.xmlfile`            event XML (wevtutil, Get-WinEvent, Event
                                                      Viewer, SysmonX writers, Sysmon for Linux)
syslog      :mod:`sysmonx.sources.syslog`             Sysmon for Linux syslog lines
jsonl       :mod:`sysmonx.sources.jsonl`              SysmonX JSON lines (written by
                                                      :mod:`sysmonx.sinks.jsonl`)
winlogbeat  :mod:`sysmonx.sources.jsonshapes`         winlogbeat 6.x, 7.x, 8.x JSON
nxlog       :mod:`sysmonx.sources.jsonshapes`         nxlog ``im_msvistalog`` JSON (flat)
sentinel    :mod:`sysmonx.sources.jsonshapes`         Azure Sentinel / Log Analytics rows (Event,
                                                      WindowsEvent, Syslog with Linux Sysmon XML)
flatjson    :mod:`sysmonx.sources.jsonshapes`         Security-Datasets flat JSON exporter
evtxjson    :mod:`sysmonx.sources.jsonshapes`         evtx-crate JSON (``evtx_dump``, pyevtx-rs)
==========  ========================================  ===========================================

Compressed files and archives (gzip, bzip2, xz, zip, tar and their combinations) are read in place
by :mod:`sysmonx.sources.archive`, every member detected and read by the readers above.

Each format registers a :class:`~sysmonx.sources.base.FileFormat` in
:data:`~sysmonx.core.registry.SOURCES` where it is defined; :func:`open_source` reads through the
registered class, and :data:`FORMATS` / :data:`INPUT_EXTENSIONS` are computed from the registry.
:class:`~sysmonx.sources.replay.RecordedLogs` is the source a replay runs: files, folders and
archives in order, each detected and read.

All readers stream (memory does not grow with file size) and never give up on a file because of one
bad record: every damaged record, chunk or line is reported to the ``on_error`` callback as a
:class:`ReadError` (file and offset) and reading goes on with the next one.
"""

from __future__ import annotations

from typing import Any

from ..core.errors import SEVERITIES, ReadError
from .base import MAX_RECORD_BYTES, FileNotes
from .detect import (ARCHIVE_EXTENSIONS, JSON_FORMATS, detect_format, file_formats,
                     input_extensions, iter_input_files, open_source, read_stream)

__all__ = ["ReadError", "SEVERITIES", "FileNotes", "FORMATS", "JSON_FORMATS", "INPUT_EXTENSIONS",
           "ARCHIVE_EXTENSIONS", "iter_input_files", "detect_format", "open_source",
           "read_stream", "file_formats", "MAX_RECORD_BYTES"]


def __getattr__(name: str) -> Any:
    # Computed from the registry: FORMATS, the --input-format names; INPUT_EXTENSIONS, the
    # extensions kept when a folder is walked and the format each one suggests.
    if name == "FORMATS":
        return tuple(c.name for c in file_formats())
    if name == "INPUT_EXTENSIONS":
        return input_extensions()
    raise AttributeError(name)
