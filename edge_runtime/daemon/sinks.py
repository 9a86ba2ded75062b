"""Where the daemon's numbered results go besides the spool: JSON lines on stdout or a file.

Example::

    sink = JsonLinesSink("-")          # or a file path, appended to
    sink.write({"device": "cam1", "seq": 0, "results": {}})
    sink.close()
"""

from __future__ import annotations

from typing import IO, Any, Protocol

from edge_runtime.cloud.writers import FdTextSink, JsonLinesWriter, stdout_sink
from edge_runtime.errors import ConfigError


class ResultSink(Protocol):
    """Where numbered results go: ``write`` one, ``close`` at the end."""

    def write(self, line: dict[str, Any]) -> None:
        """Deliver one result line (the fields of docs/protocol.md)."""
        ...

    def close(self) -> None:
        """Flush and release."""
        ...


class JsonLinesSink:
    """One JSON object per line (the subscriber's writer: same format, same escaping) to standard
    output (``-``, written whole even when a signal interrupts a blocked pipe) or a file
    (appended)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._owned: IO[str] | None = None
        if target == "-":
            stream: IO[str] | FdTextSink = stdout_sink()
        else:
            try:
                self._owned = open(target, "a", encoding="utf-8")  # closed in close()
            except OSError as exc:
                raise ConfigError(f"--output {target}: cannot open: {exc.strerror or exc}") from exc
            stream = self._owned
        self._writer = JsonLinesWriter(stream)

    def write(self, line: dict[str, Any]) -> None:
        self._writer.write(line)

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()
        else:
            self._writer.stream.flush()


__all__ = ["JsonLinesSink", "ResultSink"]
