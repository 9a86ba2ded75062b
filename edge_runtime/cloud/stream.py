"""Subscribe to result topics and yield decoded, de-duplicated lines, acknowledging each
message only once the consumer has taken (written) it.

Every payload is decoded with :func:`edge_runtime.codec.decode_payload`; a payload whose
``device`` is not its topic's device level is rejected. Lines are de-duplicated on
``(device, epoch, seq)`` and gaps found per ``(device, epoch)`` by a
:class:`~edge_runtime.cloud.tracker.StreamTracker`. Under a shared subscription (``share``)
each process sees only part of a device's stream, so gap reports are off there. The devices'
status messages (``<prefix>/+/status``, subscribed too unless under ``share``) give the tracker
each stream's first, oldest held and last seq: leading and trailing gaps.

Acknowledgements are manual: paho does not PUBACK a QoS >= 1 message when it arrives. The
messages are taken from the queue in batches (what is there, at most ``batch``); after the
consumer has had every line of a batch, ``commit()`` (the caller's: fsync the output, save the
state) runs and then the batch is acknowledged, in the order it was received. A consumer that
raises leaves the batch unacknowledged: the broker keeps it for the session.

Example::

    from edge_runtime.cloud import SubscribeOptions, iter_results

    for line in iter_results(SubscribeOptions(broker="mqtt://127.0.0.1:1883"), max_messages=10):
        print(line["device"], line["seq"], line["results"])
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from edge_runtime.cloud.inbox import (
    QUEUE_MAX_BYTES,
    QUEUE_MAX_MESSAGES,
    BoundedQueue,
    DropLog,
    Message,
    is_status_topic,
    topic_device,
)
from edge_runtime.cloud.options import SubscribeOptions
from edge_runtime.cloud.tracker import StreamTracker
from edge_runtime.codec import CodecError, decode_payload
from edge_runtime.delivery.mqtt.client import make_client
from edge_runtime.delivery.mqtt.settings import describe_connect_error, describe_refusal
from edge_runtime.delivery.mqtt.status import parse_status
from edge_runtime.errors import TransportError

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
#: The most messages taken (and then acknowledged together) in one batch.
BATCH_MAX_MESSAGES = QUEUE_MAX_MESSAGES
#: The reason code of a broker that closed the connection because another client connected
#: with the same client id (MQTT 5).
SESSION_TAKEN_OVER = "Session taken over"
#: A broker that says nothing (MQTT 3.1.1; mosquitto 2.0.11 even under MQTT 5) just closes the
#: connection of the client whose id another one took. This many losses in a row without a
#: DISCONNECT from the broker, each (but the first) of a connection younger than
#: :data:`SHORT_CONNECTION_S`, count as the session being taken over: the client that has been
#: thrown out the most stops, the other keeps the session.
TAKEOVER_LOSSES = 3
SHORT_CONNECTION_S = 5.0


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
    A QoS >= 1 message is acknowledged only after the consumer took its batch (see the module
    docstring), so what the consumer did not get stays with the broker.
    With a fixed client id (``client_id``, else the options') and ``options.persistent`` the
    client connects with clean start off (MQTT 3.1.1: clean session off) and the options'
    session expiry, so the broker keeps the subscription and queues QoS >= 1 messages while the
    subscriber is away; they arrive right after the next ``start()`` (``session_present``
    tells whether the broker still had the session). Without a fixed id: a random one and a
    clean start. When the broker hands the session to another client with the same id (MQTT 5
    "Session taken over") the stream stops instead of taking it back: ``failure`` says so and
    :meth:`lines` ends. Use as a context manager."""

    def __init__(
        self, options: SubscribeOptions, tracker: StreamTracker | None = None, *, client_id: str | None = None
    ) -> None:
        self.options = options
        self.config = options.mqtt
        self.tracker = tracker or StreamTracker(gap_reports=options.share is None)
        self.session_present = False
        self.status_subscription = options.status_subscription
        #: Why the stream stopped on its own (the session was taken over), else None.
        self.failure: str | None = None
        self.acked = 0  # acknowledgements sent
        self._queue = BoundedQueue(QUEUE_MAX_MESSAGES, QUEUE_MAX_BYTES)
        self._subscribed = threading.Event()
        self._connect_result: ReasonCode | None = None
        self._connected = threading.Event()
        self._started = False  # start() succeeded: from then on, connection trouble is logged
        self._closed = False
        self._log_malformed = DropLog("malformed payload")
        self._log_rejected = DropLog("payload for another device")
        self._status_refused_logged = False
        # (connection, mid, qos) of each message taken, in the order received, not yet acknowledged
        self._unacked: list[tuple[int, int, int]] = []
        self._generation = 0  # bumped on every connect and disconnect (under _ack_lock)
        self._connected_at = 0.0
        self._silent_losses = 0  # connections closed by the broker without a word, in a row
        self._ack_lock = threading.Lock()
        fixed = client_id or options.mqtt_client_id
        self.persistent = options.persistent and fixed is not None
        self.client_id = fixed or f"edge-sub-{uuid.uuid4().hex[:12]}"
        expiry = options.session_expiry_s if self.persistent else 0
        self._client = make_client(
            self.config, self.client_id, clean_start=not self.persistent, session_expiry_s=expiry
        )
        self._client.manual_ack_set(True)  # PUBACK once the consumer has the message (ack())
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
            reason = describe_connect_error(exc, tls=cfg.uses_tls)
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
        with self._ack_lock:
            self._generation += 1
        if rc.is_failure:
            if self._started:  # a later reconnect refused (start() reports the first one itself)
                logger.warning("MQTT broker %s refused the connection: %s; retrying", self.where, describe_refusal(rc))
            else:
                self._connect_result = rc
                self._connected.set()
            return
        self._connected_at = time.monotonic()
        self.session_present = bool(getattr(flags, "session_present", False))
        if self.session_present:
            logger.debug("MQTT broker %s resumed the session of client id %s", self.where, self.client_id)
        self._connect_result = rc
        self._connected.set()
        topics = [(self.options.subscription, self.options.qos)]
        if self.status_subscription is not None:
            topics.append((self.status_subscription, self.options.qos))
        client.subscribe(topics)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        with self._ack_lock:  # what was received on this connection can no longer be acknowledged
            self._generation += 1
        if self._closed or not self._started:
            return
        if rc.getName() == SESSION_TAKEN_OVER:
            self._stop_taken_over(
                client, f"another client connected with client id {self.client_id} and took the session over"
            )
            return
        if self.persistent and not getattr(flags, "is_disconnect_packet_from_server", False):
            young = time.monotonic() - self._connected_at < SHORT_CONNECTION_S
            self._silent_losses = self._silent_losses + 1 if young else 1
            if self._silent_losses >= TAKEOVER_LOSSES:
                self._stop_taken_over(
                    client,
                    f"it closed the connection of client id {self.client_id} right after each of the last "
                    f"{TAKEOVER_LOSSES - 1} connects: most likely another client connected with that id and took "
                    "the session over",
                )
                return
        logger.warning("MQTT connection to %s lost: %s (reconnecting)", self.where, rc)

    def _stop_taken_over(self, client: paho.Client, why: str) -> None:
        """Stop (``failure``) instead of reconnecting: taking the session back would throw the
        other client out, and it would do the same. Logged once."""
        if self.failure is None:
            self.failure = (
                f"MQTT broker {self.where}: {why}; stopping (give each subscriber its own client id, "
                "--output or --instance)"
            )
            logger.error("%s", self.failure)
        client.disconnect()  # no reconnect

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, rcs: list[ReasonCode], props: Any) -> None:
        if not rcs or rcs[0].is_failure:
            logger.error(
                "MQTT broker %s refused the subscription %r: %s", self.where, self.options.subscription, rcs[:1]
            )
            return
        if len(rcs) > 1 and rcs[1].is_failure and not self._status_refused_logged:
            self._status_refused_logged = True
            logger.warning(
                "MQTT broker %s refused the subscription %r: %s (no leading or trailing gap reports)",
                self.where, self.status_subscription, rcs[1],
            )  # fmt: skip
        self._subscribed.set()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        # Blocks while the queue is full: paho reads nothing more until the consumer makes
        # room; the broker holds the rest. Nothing is acknowledged here (manual_ack).
        self._queue.put(Message(msg.topic, bytes(msg.payload), msg.mid, msg.qos, self._generation))

    # the consumer's side
    def _take(self, message: Message) -> dict[str, Any] | None:
        """The line of one message (None: not a line to yield), its acknowledgement noted."""
        self._unacked.append((message.generation, message.mid, message.qos))
        if is_status_topic(message.topic):
            self._status(message.topic, message.payload)
            return None
        return self._decode(message.topic, message.payload)

    def _status(self, topic: str, payload: bytes) -> None:
        """A device's status message: its stream positions go to the tracker."""
        if not payload:  # a retained status being cleared
            return
        device = topic_device(topic)
        try:
            status = parse_status(payload)
        except ValueError as exc:
            self.tracker.count_malformed()
            self._log_malformed(topic, f"status message: {exc}")
            return
        claimed = status.get("device", device)
        if device is None or claimed != device:
            self.tracker.count_rejected()
            self._log_rejected(topic, f"the status says device {claimed!r}, the topic {device!r}")
            return
        self.tracker.count_status(device, status)

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

    def ack(self) -> int:
        """Acknowledge every message taken so far, in the order received (a message that
        came on an earlier connection is not: the broker sends it again). How many were sent."""
        sent = 0
        with self._ack_lock:
            unacked, self._unacked = self._unacked, []
            for generation, mid, qos in unacked:
                if qos > 0 and generation == self._generation:
                    self._client.ack(mid, qos)
                    sent += 1
        self.acked += sent
        return sent

    def _end_batch(self, commit: Callable[[], None] | None) -> None:
        if commit is not None:
            commit()
        self.ack()

    def lines(
        self,
        *,
        stop: threading.Event | None = None,
        max_messages: int | None = None,
        timeout: float | None = None,
        commit: Callable[[], None] | None = None,
        batch: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Decoded, de-duplicated lines until ``stop`` is set (the messages queued then are
        still taken), ``max_messages`` lines were yielded, ``timeout`` seconds have passed or
        the stream failed (``failure``). Messages are taken in batches (those waiting, at most
        ``batch``, default :data:`BATCH_MAX_MESSAGES`); once the consumer has had a batch's
        lines, ``commit()`` runs and the batch is acknowledged. When the consumer raises (or
        ``commit`` does), the batch is not acknowledged."""
        deadline = None if timeout is None else time.monotonic() + timeout
        most = batch or BATCH_MAX_MESSAGES
        yielded = taken = 0
        stopping: int | None = None  # after stop: how many queued messages are still taken
        while max_messages is None or yielded < max_messages:
            if self.failure is not None:
                break
            if stopping is None and stop is not None and stop.is_set():
                stopping = len(self._queue)
            if stopping is not None and stopping <= 0:
                break
            wait = 0.0 if taken or stopping is not None else 0.1
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                wait = min(wait, left)
            item = self._queue.get(timeout=wait)
            if item is None:
                if taken:
                    self._end_batch(commit)
                    taken = 0
                if stopping is not None:
                    break
                continue
            if stopping is not None:
                stopping -= 1
            taken += 1
            line = self._take(item)
            if line is not None:
                yielded += 1
                yield line
            if taken >= most:
                self._end_batch(commit)
                taken = 0
        if taken:
            self._end_batch(commit)

    def drain(self) -> Iterator[dict[str, Any]]:
        """The lines still queued, without waiting: after :meth:`close`, what the broker
        delivered before the disconnect. They cannot be acknowledged any more: a persistent
        session gets them again (as duplicates, once the consumer has recorded them)."""
        while True:
            item = self._queue.get(timeout=0)
            if item is None:
                break
            line = self._take(item)
            if line is not None:
                yield line
        self._unacked.clear()

    def close(self) -> None:
        """Disconnect (a persistent session stays on the broker for its session expiry, with
        what was not acknowledged)."""
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


__all__ = [
    "BATCH_MAX_MESSAGES",
    "CONNECT_TIMEOUT_S",
    "QUEUE_MAX_BYTES",
    "QUEUE_MAX_MESSAGES",
    "ResultStream",
    "is_status_topic",
    "iter_results",
    "topic_device",
]
