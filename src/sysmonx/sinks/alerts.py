"""Sigma alerts as JSON lines (``--alerts FILE``): one object per alert, the format of
:meth:`sysmonx.detection.alerts.Alert.to_json` (rule id, title, level, ATT&CK tags, window, matched
record ids, key fields). Without this sink, alerts go into the event stream as SysmonX event 1000
(the ``sigma-alert-events`` stage)."""

from __future__ import annotations

from typing import Any, BinaryIO, Optional, Union

from ..core.registry import SINKS
from ..interfaces import Sink, SinkStats
from .base import is_std_stream, open_target

__all__ = ["AlertJsonlSink"]


@SINKS.register
class AlertJsonlSink(Sink):
    """Writes each alert as one JSON line to a binary stream.

    Args:
        stream: binary, writable.
        close_stream: close it in :meth:`close` (never standard output).
    """

    name = "alerts-jsonl"
    summary = "Sigma alerts as JSON lines (--alerts FILE)"
    accepts = frozenset({"alert"})

    def __init__(self, stream: BinaryIO, close_stream: bool = True) -> None:
        self.stream: Optional[BinaryIO] = stream
        self.close_stream = close_stream
        self.stats = SinkStats()

    @classmethod
    def open(cls, target: Union[str, BinaryIO, None] = None, **options: Any) -> AlertJsonlSink:
        """The sink on a path (truncated), ``-`` for standard output, or a binary stream.

        Raises:
            SinkError: the path cannot be opened.
        """
        stream, label = open_target(target)
        sink = cls(stream, **options)
        sink.target = label
        return sink

    def write(self, item: Any) -> None:
        """Write one alert line."""
        assert self.stream is not None
        self.stream.write(item.to_json())

    def flush(self) -> None:
        """Flush the stream."""
        if self.stream is not None:
            self.stream.flush()

    def close(self) -> None:
        """Flush and close (standard output is only flushed). Idempotent."""
        if self.stream is None:
            return
        stream, self.stream = self.stream, None
        try:
            stream.flush()
        finally:
            if self.close_stream and not is_std_stream(stream):
                stream.close()
