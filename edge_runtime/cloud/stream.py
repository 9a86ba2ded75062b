"""Subscribe to result topics and yield decoded, de-duplicated lines.

Every payload is decoded with :func:`edge_runtime.codec.decode_payload`; a payload whose
``device`` is not its topic's device level is rejected. Lines are de-duplicated on
``(device, epoch, seq)`` and gaps found per ``(device, epoch)`` by a
:class:`~edge_runtime.cloud.tracker.StreamTracker`. Under a shared subscription (``share``)
each process sees only part of a device's stream, so gap reports are off there.

Example::

    from edge_runtime.cloud import SubscribeOptions, iter_results

    for line in iter_results(SubscribeOptions(broker="mqtt://127.0.0.1:1883"), max_messages=10):
        print(line["device"], line["seq"], line["results"])
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from edge_runtime.cloud.options import SubscribeOptions
from edge_runtime.cloud.tracker import StreamTracker
from edge_runtime.codec import CodecError, decode_payload
from edge_runtime.delivery.mqtt.client import make_client
from edge_runtime.delivery.mqtt.settings import describe_connect_error, describe_refusal
from edge_runtime.errors import TransportError
from edge_runtime.names import printable

logger = logging.getLogger(__name__)

#: Malformed payloads logged one by one before rate limiting starts.
MALFORMED_LOG_FIRST = 5
#: After that, at most one WARNING (with the count since the last one) per this many seconds.
MALFORMED_LOG_INTERVAL_S = 10.0
CONNECT_TIMEOUT_S = 10.0
#: Bounds of the queue between paho's network thread and the consumer (writer). When either is
#: reached the network thread stops reading: TCP back-pressure, the broker holds the rest (a
#: message larger than the byte bound is still taken when the queue is empty).
QUEUE_MAX_MESSAGES = 1000
QUEUE_MAX_BYTES = 32 << 20


class _DropLog:
    """WARNING for the first few dropped payloads of one kind (``what``: "malformed payload"),
    then at most one per interval. Topics and reasons come from peers: escaped."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0
        self.suppressed = 0
        self.last = 0.0

    def __call__(self, topic: str, reason: object) -> None:
        self.count += 1
        now = time.monotonic()
        if self.count <= MALFORMED_LOG_FIRST:
            logger.warning("%s on %s dropped: %s", self.what, printable(topic), printable(reason))
            self.last = now
        elif now - self.last >= MALFORMED_LOG_INTERVAL_S:
            logger.warning(
                "%s on %s dropped: %s (%d more since the last warning)",
                self.what, printable(topic), printable(reason), self.suppressed,
            )  # fmt: skip
            self.suppressed = 0
            self.last = now
        else:
            self.suppressed += 1


def topic_device(topic: str) -> str | None:
    """The device a topic belongs to: its level before the last (``<prefix>/<device>/results``);
    None when the topic has fewer than two levels."""
    levels = topic.split("/")
    return levels[-2] if len(levels) >= 2 else None


class _BoundedQueue:
    """The messages between paho's network thread and the consumer, bounded in count and
    bytes. :meth:`put` blocks while full (the network thread stops reading: the broker keeps
    the rest) until room is made or :meth:`release` is called at close, after which it never
    blocks again (what paho still hands over while disconnecting was acknowledged already, so
    it is kept for :meth:`ResultStream.drain`)."""

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.bytes = 0
        self.peak_bytes = 0
        self.waits = 0  # how often the network thread had to wait for room
        self.stalled = threading.Event()  # set while a put() waits for room
        self._items: collections.deque[tuple[str, bytes]] = collections.deque()
        self._cond = threading.Condition()
        self._released = False

    def __len__(self) -> int:
        return len(self._items)

    def _full(self, size: int) -> bool:
        if not self._items:
            return False
        return len(self._items) >= self.max_messages or self.bytes + size > self.max_bytes

    def put(self, topic: str, payload: bytes) -> None:
        with self._cond:
            if self._full(len(payload)) and not self._released:
                self.waits += 1
                self.stalled.set()
                while self._full(len(payload)) and not self._released:
                    self._cond.wait()
                self.stalled.clear()
            self._items.append((topic, payload))
            self.bytes += len(payload)
            self.peak_bytes = max(self.peak_bytes, self.bytes)
            self._cond.notify_all()

    def get(self, timeout: float | None) -> tuple[str, bytes] | None:
        """The oldest message, waiting up to ``timeout`` seconds (0: not at all); None if none."""
        with self._cond:
            if not self._items and timeout:
                self._cond.wait(timeout)
            if not self._items:
                return None
            topic, payload = self._items.popleft()
            self.bytes -= len(payload)
            self._cond.notify_all()
            return topic, payload

    def release(self) -> None:
        with self._cond:
            self._released = True
            self._cond.notify_all()


# -- MQTT ------------------------------------------------------------------------------------


class ResultStream:
    """A connected, subscribed MQTT client whose messages :meth:`lines` decodes.

    ``start()`` returns once the broker has granted the subscription (so a test can publish
    right after; a resumed session whose kept messages fill the queue first returns once it
    is full: the SUBACK follows them), or raises :class:`TransportError` with one line naming
    the broker and why (refused: bad user or password, not authorized...; unreachable; TLS
    verification).
    Messages wait in a queue bounded in count and bytes (:data:`QUEUE_MAX_MESSAGES`,
    :data:`QUEUE_MAX_BYTES`); when it is full paho's network thread stops reading, so a slow
    consumer leaves the rest with the broker instead of in memory. A payload whose ``device``
    is not its topic's device level is rejected and counted (``tracker.rejected``).
    With ``session_expiry_s`` > 0 the client connects with clean start off (MQTT 3.1.1:
    clean session off) under its fixed client id, so the broker keeps the subscription and
    queues QoS >= 1 messages while the subscriber is away; they arrive right after the next
    ``start()`` (``session_present`` tells whether the broker still had the session).
    Use as a context manager."""

    def __init__(self, options: SubscribeOptions, tracker: StreamTracker | None = None) -> None:
        self.options = options
        self.config = options.mqtt
        self.tracker = tracker or StreamTracker(gap_reports=options.share is None)
        self.session_present = False
        self._queue = _BoundedQueue(QUEUE_MAX_MESSAGES, QUEUE_MAX_BYTES)
        self._subscribed = threading.Event()
        self._connect_result: ReasonCode | None = None
        self._connected = threading.Event()
        self._started = False  # start() succeeded: from then on, connection trouble is logged
        self._closed = False
        self._log_malformed = _DropLog("malformed payload")
        self._log_rejected = _DropLog("payload for another device")
        self.client_id = options.mqtt_client_id or f"edge-sub-{uuid.uuid4().hex[:12]}"
        expiry = options.session_expiry_s  # > 0: the broker keeps the session (clean start off)
        self._client = make_client(self.config, self.client_id, clean_start=expiry == 0, session_expiry_s=expiry)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    @property
    def where(self) -> str:
        host = self.config.host
        return f"[{host}]:{self.config.port}" if ":" in host else f"{host}:{self.config.port}"

    def start(self, timeout: float = CONNECT_TIMEOUT_S) -> ResultStream:
        cfg = self.config
        try:
            self._client.connect_broker()
        except (OSError, ValueError) as exc:  # ssl.SSLError and socket.gaierror are OSErrors
            self.close()
            reason = describe_connect_error(exc)
            if cfg.uses_tls and isinstance(exc, ConnectionResetError):
                reason += " (a port without TLS? mqtts:// needs a TLS listener)"
            raise TransportError(f"cannot connect to MQTT broker {self.where}: {reason}") from exc
        self._client.loop_start()
        if not self._connected.wait(timeout):
            self.close()
            raise TransportError(
                f"MQTT broker {self.where} did not answer the connection in {timeout:g} s"
                + ("" if cfg.uses_tls else " (a TLS port? use mqtts://)")
            )
        rc = self._connect_result
        if rc is not None and rc.is_failure:
            self.close()
            raise TransportError(f"MQTT broker {self.where} refused the connection: {describe_refusal(rc)}")
        if not self._wait_subscribed(timeout):
            self.close()
            raise TransportError(
                f"MQTT broker {self.where} did not grant the subscription {self.options.subscription!r} "
                f"in {timeout:g} s"
            )
        self._started = True
        return self

    def _wait_subscribed(self, timeout: float) -> bool:
        """Wait for the SUBACK. A resumed session's broker sends the messages it kept before
        the SUBACK; when they fill the bounded queue (nobody takes from it before ``start()``
        returns) the SUBACK is behind them, and the subscription exists already: stop waiting
        then (a refusal still gets logged when the SUBACK comes)."""
        deadline = time.monotonic() + timeout
        while not self._subscribed.wait(0.05):
            if self.session_present and self._queue.stalled.is_set():
                return True
            if time.monotonic() >= deadline:
                return False
        return True

    # paho callbacks (network thread)
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        if rc.is_failure:
            if self._started:  # a later reconnect refused (start() reports the first one itself)
                logger.warning("MQTT broker %s refused the connection: %s; retrying", self.where, describe_refusal(rc))
            else:
                self._connect_result = rc
                self._connected.set()
            return
        self.session_present = bool(getattr(flags, "session_present", False))
        if self.session_present:
            logger.debug("MQTT broker %s resumed the session of client id %s", self.where, self.client_id)
        self._connect_result = rc
        self._connected.set()
        client.subscribe(self.options.subscription, qos=self.options.qos)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        if self._closed or not self._started:
            return
        if rc.getName() == "Session taken over":
            logger.warning(
                "MQTT broker %s: another client connected with client id %s and took the session over "
                "(reconnecting; give each subscriber its own --client-id)",
                self.where,
                self.client_id,
            )
        else:
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
        # Blocks while the queue is full: paho reads nothing more (and acknowledges nothing
        # more) until the consumer makes room; the broker holds the rest.
        self._queue.put(msg.topic, bytes(msg.payload))

    def _decode(self, topic: str, payload: bytes) -> dict[str, Any] | None:
        """The line to yield, or ``None`` (malformed, duplicate, or a heartbeat not asked for)."""
        try:
            line = decode_payload(payload)
        except CodecError as exc:
            self.tracker.count_malformed()
            self._log_malformed(topic, exc)
            return None
        claimed = topic_device(topic)
        if line.get("device") != claimed:
            # A client that may publish on one device's topic must not speak for another (nor
            # pre-empt its seqs, which the real messages would then meet as duplicates).
            self.tracker.count_rejected()
            self._log_rejected(topic, f"the payload says device {line.get('device')!r}, the topic {claimed!r}")
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
            item = self._queue.get(timeout=wait)
            if item is None:
                continue
            line = self._decode(*item)
            if line is not None:
                yielded += 1
                yield line

    def drain(self) -> Iterator[dict[str, Any]]:
        """The lines still queued, without waiting: after :meth:`close`, what the broker
        delivered (and was acknowledged) before the disconnect."""
        while True:
            item = self._queue.get(timeout=0)
            if item is None:
                return
            line = self._decode(*item)
            if line is not None:
                yield line

    def close(self) -> None:
        """Disconnect (a persistent session stays on the broker for ``session_expiry_s``)."""
        if self._closed:
            return
        self._closed = True
        self._queue.release()  # a network thread waiting for room goes on, and so can stop
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


__all__ = ["CONNECT_TIMEOUT_S", "QUEUE_MAX_BYTES", "QUEUE_MAX_MESSAGES", "ResultStream", "iter_results", "topic_device"]
