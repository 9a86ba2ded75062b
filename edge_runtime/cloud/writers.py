"""The outputs of ``edge-runtime subscribe``: JSON lines or CSV, on stdout or appended to a file.

Example::

    with open_writer("results.csv", "csv") as writer:     # "-": stdout
        writer.write(line)                                # one row, flushed

Standard output is written with ``os.write`` (:class:`FdTextSink`): a signal arriving during a
large write cannot cut a line.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
from collections.abc import Iterator
from typing import IO, Any

from edge_runtime.errors import ConfigError, close_matches

FORMATS = ("jsonl", "csv")
CSV_COLUMNS = ("device", "epoch", "seq", "frame_id", "ts", "latency_total_ms", "detections", "labels", "results")


def detection_summary(results: Any) -> tuple[int | str, str]:
    """``(boxes, "label:count;...")`` over the detection heads of a frame's decoded results (a
    head with ``xyxy`` and ``labels``); ``("", "")`` when the frame has no detection head."""
    if not isinstance(results, dict):
        return "", ""
    counts: dict[str, int] = {}
    boxes = 0
    found = False
    for head in results.values():
        if isinstance(head, dict) and isinstance(head.get("labels"), list) and "xyxy" in head:
            found = True
            boxes += len(head["labels"])
            for label in head["labels"]:
                counts[str(label)] = counts.get(str(label), 0) + 1
    if not found:
        return "", ""
    return boxes, ";".join(f"{label}:{n}" for label, n in counts.items())


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class FdTextSink:
    """Text written straight to a file descriptor with ``os.write`` until every byte is out.

    CPython's buffered ``sys.stdout`` loses data when a signal (SIGTERM, SIGINT) arrives while a
    large write is blocked on a full pipe: measured here, a 16 MB line was cut after 128 KiB and
    the next line glued on. ``os.write`` returns what it wrote and retries on EINTR (PEP 475),
    so the loop writes each line whole."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, text: str) -> int:
        view = memoryview(text.encode("utf-8"))
        while view:
            view = view[os.write(self.fd, view) :]
        return len(text)

    def flush(self) -> None:
        """Nothing is buffered."""


def stdout_sink() -> IO[str] | FdTextSink:
    """Standard output as a sink that survives signals (:class:`FdTextSink`) when it is a real
    file descriptor, else ``sys.stdout`` as it is (captured by a test, replaced by a caller)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation: no descriptor
        return sys.stdout
    sys.stdout.flush()
    return FdTextSink(fd)


class JsonLinesWriter:
    """One compact JSON object per line, flushed after each."""

    def __init__(self, stream: IO[str] | FdTextSink) -> None:
        self.stream = stream

    def write(self, line: dict[str, Any]) -> None:
        self.stream.write(_compact(line) + "\n")
        self.stream.flush()


class CsvWriter:
    """``device, epoch, seq, frame_id, ts, latency_total_ms, detections, labels, results`` (compact
    JSON); a header first; flushed after each row. ``detections`` counts the boxes of the frame's
    detection heads and ``labels`` lists them per label (``person:2;car:1``), both empty without
    a detection head. Heartbeats get an empty frame_id and latency."""

    def __init__(self, stream: IO[str] | FdTextSink, *, header: bool = True) -> None:
        self.stream = stream
        self._csv = csv.writer(stream, lineterminator="\n")
        if header:
            self._csv.writerow(CSV_COLUMNS)
            self.stream.flush()

    def write(self, line: dict[str, Any]) -> None:
        latency = line.get("latency_ms")
        total = latency.get("total", "") if isinstance(latency, dict) else ""
        results = line.get("results", line.get("heads", {}))
        boxes, labels = detection_summary(line.get("results"))
        self._csv.writerow(
            [line.get("device"), line.get("epoch"), line.get("seq"), line.get("frame_id", ""), line.get("ts"), total,
             boxes, labels, _compact(results)]
        )  # fmt: skip
        self.stream.flush()


Writer = JsonLinesWriter | CsvWriter


@contextlib.contextmanager
def open_writer(output: str = "-", fmt: str = "jsonl") -> Iterator[Writer]:
    """A writer of ``fmt`` on stdout (``-``) or appending to the file ``output`` (a CSV header
    only when the file is new or empty), like ``run --output``."""
    if fmt not in FORMATS:
        raise ConfigError(f"format {fmt!r} is not one of {', '.join(FORMATS)}{close_matches(str(fmt), FORMATS)}")
    if output == "-":
        yield (CsvWriter if fmt == "csv" else JsonLinesWriter)(stdout_sink())
        return
    try:
        fh = open(output, "a", encoding="utf-8", newline="")
    except OSError as exc:
        raise ConfigError(f"cannot open output {output!r}: {exc.strerror or exc}") from exc
    with fh:
        yield CsvWriter(fh, header=fh.tell() == 0) if fmt == "csv" else JsonLinesWriter(fh)


__all__ = [
    "CSV_COLUMNS",
    "FORMATS",
    "CsvWriter",
    "FdTextSink",
    "JsonLinesWriter",
    "Writer",
    "open_writer",
    "stdout_sink",
]
