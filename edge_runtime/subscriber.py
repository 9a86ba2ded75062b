"""The cloud side: subscribe to result topics, decode payloads, de-duplicate, report gaps.

Every payload is decoded with :func:`edge_runtime.codec.decode_payload`. Messages are
de-duplicated on ``(device, epoch, seq)`` and gaps are reported per ``(device, epoch)``
(DESIGN §8). Under a shared subscription (``--share GROUP``) each process sees only part of a
device's stream, so gap reports are off there; de-duplication stays.

Example::

    from edge_runtime.subscriber import SubscribeOptions, iter_results

    for line in iter_results(SubscribeOptions(broker="mqtt://127.0.0.1:1883"), max_messages=10):
        print(line["device"], line["seq"], line["results"])

CLI::

    edge-runtime subscribe --broker mqtt://broker.local:1883
    edge-runtime subscribe --broker mqtt://broker.local --share workers --format csv --output results.csv
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import os
import queue
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge_runtime.codec import CodecError, decode_payload
from edge_runtime.errors import ConfigError, TransportError, close_matches
from edge_runtime.mqtt import MqttConfig

logger = logging.getLogger(__name__)

FORMATS = ("jsonl", "csv")
CSV_COLUMNS = ("device", "epoch", "seq", "frame_id", "ts", "latency_total_ms", "results")
#: Malformed payloads logged one by one before rate limiting starts.
MALFORMED_LOG_FIRST = 5
#: After that, at most one WARNING (with the count since the last one) per this many seconds.
MALFORMED_LOG_INTERVAL_S = 10.0
#: Per (device, epoch), the most out-of-order seqs kept above the contiguous one; past it, the
#: oldest gap is given up (reported as lost, a later arrival in it counts as a duplicate).
MAX_PENDING = 10_000
CONNECT_TIMEOUT_S = 10.0

Key = tuple[str, str]


def _check_topic_filter(topic: str) -> None:
    if not isinstance(topic, str) or not topic or "\0" in topic:
        raise ConfigError(f"subscribe topic must be a non-empty string without NUL, got {topic!r}")
    if topic.startswith("$share/"):
        raise ConfigError(f"subscribe topic {topic!r}: give the group with share=, not a $share/ prefix")
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ConfigError(f"subscribe topic {topic!r}: '#' must be a whole, last level")
        if "+" in level and level != "+":
            raise ConfigError(f"subscribe topic {topic!r}: '+' must be a whole level")


@dataclass(frozen=True)
class SubscribeOptions:
    """What ``edge-runtime subscribe`` does. ``broker``: ``mqtt://[user:pass@]host:port`` or
    ``mqtts://...`` (see :meth:`MqttConfig.from_url`); ``share``: a shared-subscription group
    (``$share/<share>/<topic>``); ``output``: ``-`` (stdout) or a file; ``heartbeats``: yield
    heartbeat lines too (they are always counted)."""

    broker: str
    topic: str = "edge/+/results"
    share: str | None = None
    output: str = "-"
    format: str = "jsonl"
    client_id: str | None = None
    qos: int = 1
    heartbeats: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.broker, str) or not self.broker:
            raise ConfigError(f"broker must be a broker URL (mqtt://host:port), got {self.broker!r}")
        MqttConfig.from_url(self.broker)  # ConfigError naming the URL
        _check_topic_filter(self.topic)
        if self.share is not None and (
            not isinstance(self.share, str) or not self.share or any(c in self.share for c in "/+#\0")
        ):
            raise ConfigError(f"share group must be a non-empty name without / + # or NUL, got {self.share!r}")
        if not isinstance(self.output, str) or not self.output:
            raise ConfigError(f"output must be '-' (stdout) or a file path, got {self.output!r}")
        if self.format not in FORMATS:
            raise ConfigError(
                f"format {self.format!r} is not one of {', '.join(FORMATS)}{close_matches(str(self.format), FORMATS)}"
            )
        if self.client_id is not None and (not isinstance(self.client_id, str) or not self.client_id):
            raise ConfigError(f"client_id must be a non-empty string or None, got {self.client_id!r}")
        if isinstance(self.qos, bool) or self.qos not in (0, 1, 2):
            raise ConfigError(f"qos must be 0, 1 or 2, got {self.qos!r}")

    @property
    def subscription(self) -> str:
        """The topic filter sent to the broker."""
        return f"$share/{self.share}/{self.topic}" if self.share else self.topic

    @property
    def mqtt(self) -> MqttConfig:
        return MqttConfig.from_url(self.broker)


# -- de-duplication and gaps -------------------------------------------------------------------


@dataclass
class _Stream:
    """One (device, epoch): every seq <= ``top`` is seen (from ``first`` on), plus ``above``."""

    first: int
    top: int
    above: set[int] = field(default_factory=set)
    before: set[int] = field(default_factory=set)  # seqs below the first one seen (joined mid-stream)
    lost: list[tuple[int, int]] = field(default_factory=list)  # gaps given up (MAX_PENDING)


class StreamTracker:
    """De-duplicates on ``(device, epoch, seq)`` and finds gaps per ``(device, epoch)``.

    Memory per stream is bounded: the highest contiguous seq, plus the set of seqs above it
    (at most ``max_pending``; past it the oldest gap is given up and listed as lost). The first
    seq seen of a stream starts it: earlier seqs are history, not a gap. ``gap_reports=False``
    (shared subscriptions) keeps de-duplication and reports no gaps.
    """

    def __init__(self, *, gap_reports: bool = True, max_pending: int = MAX_PENDING) -> None:
        self.gap_reports = gap_reports
        self.max_pending = max_pending
        self.received = 0  # every message, whatever it holds
        self.results = 0  # unique frames
        self.duplicates = 0
        self.malformed = 0
        self.heartbeats = 0  # unique heartbeats
        self._streams: dict[Key, _Stream] = {}

    def observe(self, device: str, epoch: str, seq: int) -> bool:
        """Record one seq; ``True`` when it is new, ``False`` for a duplicate (counted)."""
        key = (device, epoch)
        st = self._streams.get(key)
        if st is None:
            self._streams[key] = _Stream(first=seq, top=seq)
            return True
        if seq < st.first:
            if seq in st.before:
                self.duplicates += 1
                return False
            if len(st.before) < self.max_pending:
                st.before.add(seq)
            return True
        if seq <= st.top or seq in st.above:
            self.duplicates += 1
            return False
        if seq == st.top + 1:
            st.top = seq
            while st.top + 1 in st.above:
                st.top += 1
                st.above.discard(st.top)
        else:
            st.above.add(seq)
            if len(st.above) > self.max_pending:
                self._give_up_oldest_gap(st)
        return True

    def _give_up_oldest_gap(self, st: _Stream) -> None:
        low = min(st.above)
        if self.gap_reports:
            st.lost.append((st.top + 1, low - 1))
            del st.lost[: -self.max_pending]
        st.above.discard(low)
        st.top = low
        while st.top + 1 in st.above:
            st.top += 1
            st.above.discard(st.top)

    def count_line(self, line: dict[str, Any]) -> bool:
        """Count a decoded line (frame or heartbeat); ``True`` when it is new."""
        self.received += 1
        if not self.observe(str(line["device"]), str(line["epoch"]), int(line["seq"])):
            return False
        if line.get("kind") == "heartbeat":
            self.heartbeats += 1
        else:
            self.results += 1
        return True

    def count_malformed(self) -> None:
        self.received += 1
        self.malformed += 1

    def streams(self) -> list[Key]:
        return sorted(self._streams)

    def gaps(self) -> dict[Key, list[tuple[int, int]]]:
        """Missing seq ranges (inclusive) per (device, epoch), lost ones included; ``{}`` when
        gap reports are off. Streams without gaps are left out."""
        if not self.gap_reports:
            return {}
        out: dict[Key, list[tuple[int, int]]] = {}
        for key, st in sorted(self._streams.items()):
            ranges = list(st.lost)
            prev = st.top
            for seq in sorted(st.above):
                if seq > prev + 1:
                    ranges.append((prev + 1, seq - 1))
                prev = seq
            if ranges:
                out[key] = ranges
        return out

    def summary(self) -> str:
        """Counters and gaps, one item a line (what ``subscribe`` prints to stderr at exit)."""
        lines = [
            f"received {self.received} messages: {self.results} results, {self.heartbeats} heartbeats, "
            f"{self.duplicates} duplicates, {self.malformed} malformed"
        ]
        if not self.gap_reports:
            lines.append("gap reports off under a shared subscription (each subscriber sees part of each stream)")
            return "\n".join(lines)
        gaps = self.gaps()
        for device, epoch in self.streams():
            ranges = gaps.get((device, epoch), [])
            if ranges:
                missing = sum(b - a + 1 for a, b in ranges)
                shown = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges[:20])
                more = f" (+{len(ranges) - 20} more ranges)" if len(ranges) > 20 else ""
                lines.append(f"{device} epoch {epoch}: {missing} missing seq: {shown}{more}")
            else:
                lines.append(f"{device} epoch {epoch}: no gaps")
        return "\n".join(lines)


class _MalformedLog:
    """WARNING for the first few malformed payloads, then at most one per interval."""

    def __init__(self) -> None:
        self.count = 0
        self.suppressed = 0
        self.last = 0.0

    def __call__(self, topic: str, exc: Exception) -> None:
        self.count += 1
        now = time.monotonic()
        if self.count <= MALFORMED_LOG_FIRST:
            logger.warning("malformed payload on %s dropped: %s", topic, exc)
            self.last = now
        elif now - self.last >= MALFORMED_LOG_INTERVAL_S:
            logger.warning(
                "malformed payload on %s dropped: %s (%d more since the last warning)", topic, exc, self.suppressed
            )
            self.suppressed = 0
            self.last = now
        else:
            self.suppressed += 1


# -- MQTT ------------------------------------------------------------------------------------


class ResultStream:
    """A connected, subscribed MQTT client whose messages :meth:`lines` decodes.

    ``start()`` returns once the broker has granted the subscription (so a test can publish
    right after), or raises :class:`TransportError`. Use as a context manager."""

    def __init__(self, options: SubscribeOptions, tracker: StreamTracker | None = None) -> None:
        self.options = options
        self.config = options.mqtt
        self.tracker = tracker or StreamTracker(gap_reports=options.share is None)
        self._queue: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._subscribed = threading.Event()
        self._connect_result: ReasonCode | None = None
        self._connected = threading.Event()
        self._closed = False
        self._log_malformed = _MalformedLog()
        cfg = self.config
        client_id = options.client_id or f"edge-sub-{uuid.uuid4().hex[:12]}"
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        if cfg.username is not None:
            self._client.username_pw_set(cfg.username, cfg.password)
        if cfg.uses_tls:
            try:
                self._client.tls_set(ca_certs=cfg.tls_ca, certfile=cfg.tls_cert, keyfile=cfg.tls_key)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"MQTT TLS setup failed: {exc}") from None
        self._client.reconnect_delay_set(cast(int, cfg.reconnect_min_s), cast(int, cfg.reconnect_max_s))
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    @property
    def where(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    def start(self, timeout: float = CONNECT_TIMEOUT_S) -> ResultStream:
        try:
            self._client.connect(self.config.host, self.config.port, self.config.keepalive, clean_start=True)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
            raise TransportError(f"cannot connect to MQTT broker {self.where}: {reason}") from None
        self._client.loop_start()
        if not self._connected.wait(timeout):
            self.close()
            raise TransportError(f"MQTT broker {self.where} did not answer the connection in {timeout:g} s")
        rc = self._connect_result
        if rc is not None and rc.is_failure:
            self.close()
            raise TransportError(f"MQTT broker {self.where} refused the connection: {rc}")
        if not self._subscribed.wait(timeout):
            self.close()
            raise TransportError(
                f"MQTT broker {self.where} did not grant the subscription {self.options.subscription!r} "
                f"in {timeout:g} s"
            )
        return self

    # paho callbacks (network thread)
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        self._connect_result = rc
        self._connected.set()
        if rc.is_failure:
            logger.warning("MQTT broker %s refused the connection: %s", self.where, rc)
            return
        client.subscribe(self.options.subscription, qos=self.options.qos)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        if not self._closed:
            logger.warning("MQTT connection to %s lost: %s (reconnecting)", self.where, rc)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, rcs: list[ReasonCode], props: Any) -> None:
        failed = [rc for rc in rcs if rc.is_failure]
        if failed:
            logger.error(
                "MQTT broker %s refused the subscription %r: %s", self.where, self.options.subscription, failed
            )
            return
        self._subscribed.set()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self._queue.put((msg.topic, bytes(msg.payload)))

    def _decode(self, topic: str, payload: bytes) -> dict[str, Any] | None:
        """The line to yield, or ``None`` (malformed, duplicate, or a heartbeat not asked for)."""
        try:
            line = decode_payload(payload)
        except CodecError as exc:
            self.tracker.count_malformed()
            self._log_malformed(topic, exc)
            return None
        if not self.tracker.count_line(line):
            return None
        if line.get("kind") == "heartbeat" and not self.options.heartbeats:
            return None
        return line

    def lines(
        self,
        *,
        stop: threading.Event | None = None,
        max_messages: int | None = None,
        timeout: float | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Decoded, de-duplicated lines until ``stop`` is set, ``max_messages`` lines were
        yielded, or ``timeout`` seconds have passed (whichever comes first)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        yielded = 0
        while max_messages is None or yielded < max_messages:
            if stop is not None and stop.is_set():
                return
            wait = 0.1
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                wait = min(wait, left)
            try:
                topic, payload = self._queue.get(timeout=wait)
            except queue.Empty:
                continue
            line = self._decode(topic, payload)
            if line is not None:
                yielded += 1
                yield line

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> ResultStream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_results(
    options: SubscribeOptions,
    *,
    stop: threading.Event | None = None,
    max_messages: int | None = None,
    timeout: float | None = None,
    tracker: StreamTracker | None = None,
    ready: threading.Event | None = None,
) -> Iterator[dict[str, Any]]:
    """Connect, subscribe and yield decoded, de-duplicated result lines (see
    :meth:`ResultStream.lines`). ``tracker`` (optional) receives the counters and gaps;
    ``ready`` is set once the subscription is granted. :class:`TransportError` when the
    broker cannot be reached."""
    with ResultStream(options, tracker) as stream:
        if ready is not None:
            ready.set()
        yield from stream.lines(stop=stop, max_messages=max_messages, timeout=timeout)


# -- writers -------------------------------------------------------------------------------


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class JsonLinesWriter:
    """One compact JSON object per line, flushed after each."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, line: dict[str, Any]) -> None:
        self.stream.write(_compact(line) + "\n")
        self.stream.flush()


class CsvWriter:
    """``device, epoch, seq, frame_id, ts, latency_total_ms, results`` (compact JSON); a header
    first; flushed after each row. Heartbeats get an empty frame_id and latency."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._csv = csv.writer(stream, lineterminator="\n")
        self._csv.writerow(CSV_COLUMNS)
        self.stream.flush()

    def write(self, line: dict[str, Any]) -> None:
        latency = line.get("latency_ms")
        total = latency.get("total", "") if isinstance(latency, dict) else ""
        results = line.get("results", line.get("heads", {}))
        self._csv.writerow(
            [line.get("device"), line.get("epoch"), line.get("seq"), line.get("frame_id", ""), line.get("ts"), total,
             _compact(results)]
        )  # fmt: skip
        self.stream.flush()


Writer = JsonLinesWriter | CsvWriter


@contextlib.contextmanager
def open_writer(output: str = "-", fmt: str = "jsonl") -> Iterator[Writer]:
    """A writer of ``fmt`` on stdout (``-``) or a new file ``output``."""
    if fmt not in FORMATS:
        raise ConfigError(f"format {fmt!r} is not one of {', '.join(FORMATS)}{close_matches(str(fmt), FORMATS)}")
    if output == "-":
        yield (CsvWriter if fmt == "csv" else JsonLinesWriter)(sys.stdout)
        return
    try:
        fh = open(output, "w", encoding="utf-8", newline="")
    except OSError as exc:
        raise ConfigError(f"cannot open output {output!r}: {exc.strerror or exc}") from None
    with fh:
        yield (CsvWriter if fmt == "csv" else JsonLinesWriter)(fh)


# -- CLI -------------------------------------------------------------------------------------


def options_from_args(args: argparse.Namespace) -> SubscribeOptions:
    values = {
        key: getattr(args, key)
        for key in ("broker", "topic", "share", "output", "format", "client_id", "qos", "heartbeats")
        if getattr(args, key, None) is not None
    }
    return SubscribeOptions(**values)


def run_subscribe(args: argparse.Namespace, *, stop: threading.Event | None = None) -> int:
    """``edge-runtime subscribe``: write results until SIGINT/SIGTERM (or ``stop``), then print
    the summary to stderr and return 0."""
    options = options_from_args(args)
    stop = stop or threading.Event()
    tracker = StreamTracker(gap_reports=options.share is None)
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def handler(signum: int, frame: Any) -> None:
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    try:
        with ResultStream(options, tracker) as stream, open_writer(options.output, options.format) as writer:
            print(f"subscribed to {options.subscription!r} on {stream.where}", file=sys.stderr)
            for line in stream.lines(stop=stop):
                writer.write(line)
    except BrokenPipeError:  # stdout closed (| head): a clean stop
        with contextlib.suppress(Exception):
            sys.stdout = open(os.devnull, "w")
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    print(tracker.summary(), file=sys.stderr)
    return 0


def add_subscribe_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``subscribe`` flags (DESIGN §7), for ``edge_runtime.cli``."""
    parser.add_argument("--broker", required=True, metavar="URL", help="mqtt://[user:pass@]host:port or mqtts://...")
    parser.add_argument("--topic", help="topic filter (default: edge/+/results)")
    parser.add_argument("--share", metavar="GROUP", help="shared subscription group (gap reports off)")
    parser.add_argument("--output", metavar="-|FILE", help="stdout (-, default) or a file")
    parser.add_argument("--format", choices=FORMATS, help="jsonl (default) or csv")
    parser.add_argument("--client-id", dest="client_id", help="MQTT client id (default: random)")
    parser.add_argument("--qos", type=int, choices=(0, 1, 2), help="subscription QoS (default: 1)")
    parser.add_argument("--heartbeats", action="store_true", default=None, help="write heartbeat lines too")


SUBSCRIBE_EXAMPLES = """examples:
  edge-runtime subscribe --broker mqtt://broker.local:1883
  edge-runtime subscribe --broker mqtt://127.0.0.1:1883 --topic 'edge/cam1/results' --format csv --output r.csv
  edge-runtime subscribe --broker mqtts://user:pass@broker.example.com --share workers

De-duplicates on (device, epoch, seq) and reports gaps per (device, epoch) at exit (Ctrl-C);
under --share each subscriber sees part of every stream, so gap reports are off.
"""

__all__ = [
    "CSV_COLUMNS",
    "FORMATS",
    "SUBSCRIBE_EXAMPLES",
    "CsvWriter",
    "JsonLinesWriter",
    "ResultStream",
    "StreamTracker",
    "SubscribeOptions",
    "add_subscribe_arguments",
    "iter_results",
    "open_writer",
    "options_from_args",
    "run_subscribe",
]
