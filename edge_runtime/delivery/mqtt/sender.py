"""The MQTT publisher's sender thread: it publishes what is committed in the spool, keeps at most
``max_inflight`` messages in flight, applies the PUBACKs to the spool, and publishes live the
results the spool could not store.

**Acks.** paho calls ``on_publish`` under its own lock, so :meth:`Sender.queue_ack` only queues
the mid; the sender frees the slot at once and deletes the PUBACKed messages from the spool (and
counts the attempts of the sent ones) in batches: a message is deleted only on its PUBACK (paho
re-sends what was in flight after a reconnect: at-least-once, the subscriber de-duplicates on
(device, epoch, seq)). A PUBACK with an error reason code holds the message back for
``_RETRY_REJECTED_S``. A failed spool ack (a disk that is full even without the spool's
reserve) keeps the PUBACKed ids and retries them (:class:`~.outgoing.SpoolRetry`): they stay out
of the reads, so they are not published again.

**A full disk.** The spool hands results back unstored (``SpooledMessage.stored`` False, see
:mod:`edge_runtime.delivery.spool_space`): the sender publishes them live, first, in the
in-flight window, without the spool (``published_unspooled``); when the broker is not connected
(or more than ``max(1000, 10 * max_inflight)`` wait) they are lost and counted in the spool's
``lost``.

**Errors.** A message paho can never send is dropped (:class:`~.outgoing.Unsendable`). Any other
error of a round is logged by :class:`RepeatedErrors` (the first of a kind with its traceback,
identical repeats at most once a minute with their count) and the sender goes on after 0.5 s.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties

from edge_runtime.delivery.mqtt.client import MqttClient
from edge_runtime.delivery.mqtt.outgoing import UNSENDABLE_ERRORS, PublishProperties, SpoolRetry, Unsendable
from edge_runtime.delivery.spool import Spool, SpooledMessage
from edge_runtime.delivery.spool_file import SpoolError

logger = logging.getLogger(__name__)

_RETRY_REJECTED_S = 5.0
_IDLE_WAIT_S = 0.5  # the sender's wait with nothing in flight and nothing uncommitted
_ACK_WAIT_S = 0.005  # at most this long between applying PUBACKs while messages are in flight
_ERROR_WAIT_S = 0.5  # after an unexpected error, before the next round
#: Identical unexpected errors are logged again at most this often (with their count).
REPEAT_LOG_INTERVAL_S = 60.0
_ERROR_KINDS = 32  # distinct errors tracked; beyond, the others are counted together


@dataclass
class _Seen:
    logged_at: float  # monotonic
    repeats: int = 0  # since logged_at


class RepeatedErrors:
    """Logs an error that may keep happening: the first of a kind (type and message) with its
    traceback, identical repeats at most once per ``interval_s`` as one line with their count.
    Beyond ``_ERROR_KINDS`` kinds, the others are counted together (no traceback)."""

    def __init__(self, what: str, interval_s: float = REPEAT_LOG_INTERVAL_S) -> None:
        self.what = what
        self.interval_s = interval_s
        self._seen: dict[str, _Seen] = {}

    def log(self, exc: BaseException, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        kind = f"{type(exc).__name__}: {exc}"
        seen = self._seen.get(kind)
        if seen is None and len(self._seen) < _ERROR_KINDS:
            self._seen[kind] = _Seen(now)
            logger.error(
                "%s: %s (identical repeats logged at most every %.0f s)", self.what, kind, self.interval_s, exc_info=exc
            )
            return
        if seen is None:
            seen = self._seen.setdefault("", _Seen(now))  # "": every kind beyond _ERROR_KINDS
            kind = f"{kind} (and other kinds beyond the {_ERROR_KINDS} logged)"
        seen.repeats += 1
        if now - seen.logged_at >= self.interval_s:
            since = now - seen.logged_at
            logger.error("%s again: %s (%d times in the last %.0f s)", self.what, kind, seen.repeats, since)
            seen.logged_at, seen.repeats = now, 0


class Sender:
    """What the sender thread does (:meth:`run`) and what it owns: the in-flight window, the
    PUBACKs to apply, the ready buffer, the unstored results to publish live, the counters.

    Other threads call only :meth:`queue_ack` (paho's network thread) and :meth:`add_unstored`
    (the thread that appends); the publisher sets ``live_after_id`` when it (re)connects.
    """

    def __init__(
        self,
        client: MqttClient,
        spool: Spool,
        *,
        max_inflight: int,
        content_type: str,
        v5: bool,
        connected: threading.Event,
        wake: threading.Event,
        stop: threading.Event,
    ) -> None:
        self.client = client
        self.spool = spool
        self.max_inflight = max_inflight
        self.published = self.acked = self.rejected = self.published_unspooled = 0
        #: Called (sender thread) with each acknowledged result's PUBLISH → PUBACK seconds.
        self.on_ack_latency: Callable[[float], None] | None = None
        self.unsendable = Unsendable()
        #: Spool ids above it are live, the others backlog (see ``Spool.interleaved``).
        self.live_after_id = 0
        self.idle = True  # the sender waits long: an append must wake it
        self._v5 = v5
        self._connected, self._wake, self._stop = connected, wake, stop
        self._sent_at: dict[int, float] = {}  # mid -> monotonic PUBLISH time, only with on_ack_latency
        self._acks: deque[tuple[int, bool]] = deque()  # (mid, ok) from the network thread
        self._inflight: dict[int, int] = {}  # mid -> spool id (0: published live, not in the spool)
        self._held: dict[int, float] = {}  # spool id -> monotonic time it may be re-sent (rejected)
        self._batch = max(1, max_inflight // 4)  # spool writes (acks, attempts) per batch; read-ahead
        self._ready: deque[SpooledMessage] = deque()  # read from the spool, not yet published
        self._acked_ids: list[int] = []  # PUBACKed, to delete from the spool
        self._attempted: list[int] = []  # published, attempt not yet counted in the spool
        self._writes_since: float | None = None
        self._wake_every = self._batch  # PUBACKs that wake the sender (else its timer does)
        # results the spool could not store (a full disk), to publish live; bounded, the excess is lost
        self._unspooled: deque[SpooledMessage] = deque()
        self._unspooled_max = max(1000, 10 * max_inflight)
        self._spool_retry = SpoolRetry()  # after a failed spool ack (a full disk)
        self._publish_properties = PublishProperties(content_type)  # by message expiry interval (s)
        self._errors = RepeatedErrors("MQTT sender: unexpected error")

    @property
    def outstanding(self) -> bool:
        """Messages in flight or unstored results waiting to be published live."""
        return bool(self._inflight or self._unspooled)

    # -- other threads -----------------------------------------------------------------------
    def queue_ack(self, mid: int, ok: bool) -> None:
        """A PUBACK (paho's network thread, under paho's lock): only queued; the sender applies it."""
        self._acks.append((mid, ok))
        if len(self._acks) >= self._wake_every:
            self._wake.set()

    def add_unstored(self, msg: SpooledMessage) -> None:
        """A result the spool could not store (a full disk): published live by the sender, or lost
        (counted) when the broker is not connected or too many wait already (the oldest go)."""
        if not self._connected.is_set():
            self.spool.count_lost(1)
            return
        self._unspooled.append(msg)
        if len(self._unspooled) > self._unspooled_max:  # the broker does not keep up: the oldest go
            with contextlib.suppress(IndexError):
                self._unspooled.popleft()
                self.spool.count_lost(1)
        self._wake.set()

    # -- the sender thread -------------------------------------------------------------------
    def run(self) -> None:
        """The sender thread, until the stop event is set."""
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self.apply_acks()
                self._send_batch()
                self.apply_acks()
            except Exception as exc:  # keep sending: a transient spool error must not end the thread
                self._errors.log(exc)
                self._stop.wait(_ERROR_WAIT_S)
            due = self.spool.seconds_until_commit()
            timeout = _IDLE_WAIT_S if due is None else max(due, 0.001)
            if self._inflight or self._acks or self._acked_ids or self._attempted:
                timeout = min(timeout, _ACK_WAIT_S)
            self.idle = timeout >= _IDLE_WAIT_S
            self._wake.wait(timeout)
            self.idle = False

    def apply_acks(self, force: bool = False) -> None:
        """Free the slots of the PUBACKed messages now; delete them from the spool (and count
        the attempts of the sent ones) in batches: when ``force``, when a batch is full or
        when the oldest pending write waited ``_ACK_WAIT_S``."""
        while self._acks:
            mid, ok = self._acks.popleft()
            msg_id = self._inflight.pop(mid, None)
            sent_at = self._sent_at.pop(mid, None)
            if msg_id is None:
                continue  # the birth / offline status message, or a mid we did not send
            if msg_id == 0:  # published live, not in the spool (a full disk): nothing to delete
                if not ok:
                    self.rejected += 1
                    self.spool.count_lost(1)
                continue
            if ok:
                self._acked_ids.append(msg_id)
                observer = self.on_ack_latency
                if observer is not None and sent_at is not None:
                    observer(time.monotonic() - sent_at)
            else:
                self.rejected += 1
                self._held[msg_id] = time.monotonic() + _RETRY_REJECTED_S
        if self.unsendable.undeleted:  # dropped messages whose delete failed (a full disk)
            self.unsendable.delete(self.spool, force)
        pending = len(self._acked_ids) + len(self._attempted)
        if not pending:
            return
        now = time.monotonic()
        if self._writes_since is None:
            self._writes_since = now
        if force or pending >= self._batch or now - self._writes_since >= _ACK_WAIT_S:
            if not force and not self._spool_retry.due(now):
                return
            if self._acked_ids:
                done = self._acked_ids
                try:
                    self.spool.ack(done)
                except SpoolError as exc:  # kept, out of the reads, and tried again: no re-publish
                    self._spool_retry.failed("ack", exc)
                    return
                self._acked_ids = []
                self.acked += len(done)
            if self._attempted:
                attempted, self._attempted = self._attempted, []
                try:
                    self.spool.mark_attempt(attempted)
                except SpoolError as exc:  # only a counter: these counts are dropped
                    self._spool_retry.failed("mark_attempt", exc)
            self._writes_since = None

    def _properties(self, msg: SpooledMessage) -> Properties | None:
        """PUBLISH properties (MQTT 5), reused per expiry interval, the expiry clamped to MQTT's."""
        return self._publish_properties.for_message(msg) if self._v5 else None

    def _send_batch(self) -> None:
        """Fill every free in-flight slot from the ready buffer, which is refilled from the spool
        in batches (live and backlog interleaved). Refilling only once a quarter of the slots
        was free measured 911 results/s at max_inflight 20 (the client went quiet while the
        broker's Nagle algorithm held PUBACKs for delayed ACKs); every free slot: ~3,700/s."""
        if not self._connected.is_set():
            self.lose_unspooled()
            return
        room = self._send_unspooled(self.max_inflight - len(self._inflight))
        if room <= 0:
            return
        if len(self._ready) < room:
            now = time.monotonic()
            for msg_id, until in list(self._held.items()):
                if until <= now:
                    del self._held[msg_id]
            exclude = {
                *self._inflight.values(), *self._held, *self._acked_ids, *self.unsendable.undeleted,
                *(m.id for m in self._ready),
            }  # fmt: skip
            self._ready.extend(self.spool.interleaved(room + self._batch, self.live_after_id, exclude=exclude))
        while room > 0 and self._ready:
            msg = self._ready.popleft()
            try:
                info = self.client.publish(msg.topic, msg.payload, qos=msg.qos, properties=self._properties(msg))
            except UNSENDABLE_ERRORS as exc:  # this message, on every retry: drop it, send the rest
                self.unsendable.drop(self.spool, msg, exc)
                continue
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                logger.warning("MQTT publish failed: %s", paho.error_string(info.rc))
                self._ready.appendleft(msg)
                break
            # NO_CONN: paho queued it and sends it after the reconnect.
            self.published += 1
            room -= 1
            self._attempted.append(msg.id)
            if self.on_ack_latency is not None and msg.qos > 0:
                self._sent_at[info.mid] = time.monotonic()
            if msg.qos == 0:
                self._acks.append((info.mid, True))
            self._inflight[info.mid] = msg.id

    def _send_unspooled(self, room: int) -> int:
        """Publish results the spool could not store (live, first); returns the room left."""
        while room > 0:
            try:
                msg = self._unspooled.popleft()
            except IndexError:
                break
            try:
                info = self.client.publish(msg.topic, msg.payload, qos=msg.qos, properties=self._properties(msg))
            except UNSENDABLE_ERRORS as exc:  # counted there (id 0: nothing to delete)
                self.unsendable.drop(self.spool, msg, exc)
                continue
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                logger.warning("MQTT publish failed: %s", paho.error_string(info.rc))
                self._unspooled.appendleft(msg)
                return 0
            self.published += 1
            self.published_unspooled += 1
            room -= 1
            if msg.qos == 0:
                self._acks.append((info.mid, True))
            self._inflight[info.mid] = 0
        return room

    def lose_unspooled(self) -> None:
        """Not connected: the unstored results waiting to be published live are lost (counted)."""
        lost = 0
        while True:
            try:
                self._unspooled.popleft()
            except IndexError:
                break
            lost += 1
        if lost:
            self.spool.count_lost(lost)


__all__ = ["REPEAT_LOG_INTERVAL_S", "RepeatedErrors", "Sender"]
