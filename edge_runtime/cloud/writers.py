"""The outputs of ``edge-runtime subscribe``: JSON lines or CSV, on stdout or appended to a file.

Example::

    with open_writer("results.csv", "csv") as writer:     # "-": stdout
        writer.write(line)                                # one row, flushed

Standard output and files are written with ``os.write`` (:class:`FdTextSink`, :class:`FileSink`):
a signal arriving during a large write cannot cut a line, and nothing waits in a buffer.

``edge-runtime subscribe`` acknowledges a message only once its line is written (and fsynced):
:func:`open_output` gives an :class:`Output` whose :meth:`Output.commit` ends a batch, and which
takes the lines of an unfinished batch back when a write fails (:class:`OutputError`)::

    with open_output("results.jsonl", "jsonl", fsync=True) as out:
        out.write(line)
        out.commit()          # fsync: the batch may be acknowledged now
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import stat
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any, NoReturn

from edge_runtime.errors import ConfigError, TransportError, close_matches

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

    def sync(self) -> None:
        """``fsync`` when the descriptor is a regular file (stdout redirected to one); a pipe
        or terminal has nothing to sync."""
        if stat.S_ISREG(os.fstat(self.fd).st_mode):
            os.fsync(self.fd)


class FileSink(FdTextSink):
    """A file opened for appending (created when missing), written like :class:`FdTextSink`;
    :meth:`size` and :meth:`truncate` let a failed batch be taken back."""

    def __init__(self, path: str) -> None:
        super().__init__(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644))
        self.path = path

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)

    def close(self) -> None:
        os.close(self.fd)


class OutputError(TransportError):
    """The output (or the subscriber's state file) could not be written: disk full, I/O error."""


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


def _writer(sink: IO[str] | FdTextSink, fmt: str, header: bool) -> Writer:
    return CsvWriter(sink, header=header) if fmt == "csv" else JsonLinesWriter(sink)


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"format {fmt!r} is not one of {', '.join(FORMATS)}{close_matches(str(fmt), FORMATS)}")


def _open_file(output: str) -> FileSink:
    try:
        return FileSink(output)
    except OSError as exc:
        raise ConfigError(f"cannot open output {output!r}: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def open_writer(output: str = "-", fmt: str = "jsonl") -> Iterator[Writer]:
    """A writer of ``fmt`` on stdout (``-``) or appending to the file ``output`` (a CSV header
    only when the file is new or empty), like ``run --output``."""
    _check_format(fmt)
    if output == "-":
        yield _writer(stdout_sink(), fmt, True)
        return
    sink = _open_file(output)
    try:
        yield _writer(sink, fmt, sink.size() == 0)
    finally:
        sink.close()


class Output:
    """The subscriber's output: :meth:`write` each line, :meth:`commit` at the end of a batch
    (an fsync unless ``fsync`` is False; after it the batch may be acknowledged). A failed
    write or fsync takes the file back to where the batch began (its lines were not
    acknowledged: the broker sends them again) and raises :class:`OutputError` naming the file;
    a closed stdout pipe stays a :class:`BrokenPipeError` (a clean stop)."""

    def __init__(self, writer: Writer, sink: IO[str] | FdTextSink, name: str, *, fsync: bool) -> None:
        self.writer = writer
        self.sink = sink
        self.name = name
        self.fsync = fsync
        self._mark = sink.size() if isinstance(sink, FileSink) else None
        self.lines = 0  # written since the last commit

    def write(self, line: dict[str, Any]) -> None:
        try:
            self.writer.write(line)
        except BrokenPipeError:
            raise
        except OSError as exc:
            self.fail(exc)
        self.lines += 1

    def commit(self, then: Callable[[], None] | None = None) -> None:
        """Make the batch's lines durable (per ``fsync``), then run ``then`` (saving what the
        batch changed elsewhere); when ``then`` raises :class:`OutputError` the batch's lines
        are taken back too, so that neither is ahead of the other."""
        try:
            if self.fsync and isinstance(self.sink, FdTextSink):
                self.sink.sync()
            else:
                self.sink.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            self.fail(exc)
        if then is not None:
            try:
                then()
            except OutputError as exc:
                raise OutputError(f"{exc}{self._take_back(f'out of {self.name}')}") from exc
        if isinstance(self.sink, FileSink):
            self._mark = self.sink.size()
        self.lines = 0

    def _take_back(self, where: str = "") -> str:
        """Cut the file back to where the batch began (best effort); says so, or ``""``."""
        if not isinstance(self.sink, FileSink) or self._mark is None:
            return ""
        try:
            if self.sink.size() <= self._mark:
                return ""
            self.sink.truncate(self._mark)
        except OSError:
            return ""
        batch = f"the unfinished batch ({self.lines} whole line(s)) was taken back {where}".rstrip()
        return f"; {batch}" if where else f"; its {batch.removeprefix('the ')}"

    def fail(self, exc: OSError) -> NoReturn:
        """Take the unfinished batch back and raise :class:`OutputError`."""
        raise OutputError(f"cannot write {self.name}: {exc.strerror or exc}{self._take_back()}") from exc


@contextlib.contextmanager
def open_output(output: str = "-", fmt: str = "jsonl", *, fsync: bool = True) -> Iterator[Output]:
    """An :class:`Output` of ``fmt`` on stdout (``-``) or appending to the file ``output``
    (a CSV header when it is new or empty). :class:`ConfigError` when the file cannot be
    opened, :class:`OutputError` when its CSV header cannot be written."""
    _check_format(fmt)
    if output == "-":
        sink: IO[str] | FdTextSink = stdout_sink()
        name, header = "standard output", True
    else:
        sink = _open_file(output)
        name, header = f"output {output!r}", sink.size() == 0
    try:
        try:
            writer = _writer(sink, fmt, header)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(f"cannot write {name}: {exc.strerror or exc}") from exc
        yield Output(writer, sink, name, fsync=fsync)
    finally:
        if isinstance(sink, FileSink):
            sink.close()


__all__ = [
    "CSV_COLUMNS",
    "FORMATS",
    "CsvWriter",
    "FdTextSink",
    "FileSink",
    "JsonLinesWriter",
    "Output",
    "OutputError",
    "Writer",
    "open_output",
    "open_writer",
    "stdout_sink",
]
