"""What the MQTT sender needs per spooled message besides its topic and payload: the PUBLISH
properties (reused, the expiry clamped to what MQTT v5 can carry, encoded once up front), what
becomes of a message that can never be sent, and when a spool write that failed is tried again.

A message whose remaining expiry is beyond MQTT v5's largest Message Expiry Interval
(4294967295 s: a four-byte integer) has not expired: it is sent with that largest interval.
Anything else that makes paho refuse one message for good (a payload over MQTT's 256 MiB, a
property that cannot be encoded) would fail again on every retry and hold back the spool behind
it, so the sender deletes that message from the spool, counts it (status ``mqtt.unsendable``)
and logs each distinct reason once: one line, no traceback. On a full disk that delete can
fail (``DiskFullError``): the id is kept, left out of the sender's reads, and deleted later
(:class:`SpoolRetry`, as the sender's acks are), the failure logged once.

Example::

    properties, unsendable = PublishProperties("application/x-edge-msgpack"), Unsendable()
    try:
        client.publish(msg.topic, msg.payload, qos=msg.qos, properties=properties.for_message(msg))
    except UNSENDABLE_ERRORS as exc:   # permanent: this message, not the connection
        unsendable.drop(spool, msg, exc)
"""

from __future__ import annotations

import logging
import math
import struct
import time

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_runtime.delivery.spool import Spool, SpooledMessage
from edge_runtime.delivery.spool_file import SpoolError
from edge_runtime.names import printable
from edge_runtime.settings.heads import MAX_MESSAGE_EXPIRY_S

logger = logging.getLogger(__name__)

#: What ``properties.pack()`` and ``client.publish`` raise for a message that no retry can send
#: (paho checks the topic, the QoS and the payload size before it queues a message; properties
#: are packed here first). Connection trouble is not among them: paho returns it as ``rc``.
UNSENDABLE_ERRORS: tuple[type[Exception], ...] = (ValueError, TypeError, OverflowError, struct.error)
_CACHE = 256  # PUBLISH properties kept for reuse, one per distinct expiry interval
_REASONS = 32  # distinct reasons logged; beyond, drops are only counted
SPOOL_RETRY_S = 0.5  # after a failed spool write (a full disk), the next try


def expiry_interval(remaining_s: float | None) -> int | None:
    """The MQTT v5 Message Expiry Interval for ``remaining_s`` seconds: whole seconds rounded
    up, at least 1, at most :data:`MAX_MESSAGE_EXPIRY_S`; ``None``: the message never expires."""
    if remaining_s is None:
        return None
    return max(1, math.ceil(min(remaining_s, MAX_MESSAGE_EXPIRY_S)))


class PublishProperties:
    """PUBLISH properties by expiry interval, each built and packed once: building one costs
    ~50 µs of the sender thread (measured), and paho only packs them. Packing here means a
    property that cannot be encoded raises before paho has queued the message (a message in
    paho's queue whose properties fail to pack would fail again on every reconnect)."""

    def __init__(self, content_type: str) -> None:
        self.content_type = content_type
        self.clamped = 0  # messages sent with their expiry cut to MAX_MESSAGE_EXPIRY_S
        self._cache: dict[int | None, Properties] = {}

    def for_message(self, msg: SpooledMessage, now: float | None = None) -> Properties:
        remaining = msg.remaining_expiry_s(now)
        interval = expiry_interval(remaining)
        if remaining is not None and remaining > MAX_MESSAGE_EXPIRY_S:
            self.clamped += 1
            if self.clamped == 1:
                logger.warning(
                    "MQTT: spooled message seq %d expires in %.0f s, beyond MQTT v5's largest message expiry "
                    "interval: sent with %d s (later ones too, without this line)",
                    msg.seq, remaining, MAX_MESSAGE_EXPIRY_S,
                )  # fmt: skip
        props = self._cache.get(interval)
        if props is None:
            props = Properties(PacketTypes.PUBLISH)
            props.ContentType = self.content_type
            if interval is not None:
                props.MessageExpiryInterval = interval
            props.pack()  # raises now, not inside paho's queue
            if len(self._cache) >= _CACHE:
                self._cache.clear()
            self._cache[interval] = props
        return props


class SpoolRetry:
    """When a spool write that failed (a ``SpoolError``: ``DiskFullError`` on a full disk) is
    tried again: not before ``interval_s``; each distinct failure logged once."""

    def __init__(self, interval_s: float = SPOOL_RETRY_S) -> None:
        self.interval_s = interval_s
        self._at = 0.0
        self._logged: set[str] = set()

    def due(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self._at

    def failed(self, what: str, exc: SpoolError) -> None:
        self._at = time.monotonic() + self.interval_s
        message = f"{what}: {exc}"
        if message not in self._logged and len(self._logged) < _REASONS:
            self._logged.add(message)
            logger.error("MQTT sender: spool %s (retried every %.1f s; logged once)", message, self.interval_s)


class Unsendable:
    """Spooled messages dropped because they can never be sent: ``count`` (status
    ``mqtt.unsendable``), each distinct reason logged once. ``undeleted``: the ids of dropped
    messages whose delete failed (a full disk), kept for :meth:`delete`; the sender leaves them
    out of its reads."""

    def __init__(self) -> None:
        self.count = 0
        self.undeleted: list[int] = []
        self._logged: set[str] = set()
        self._retry = SpoolRetry()

    def drop(self, spool: Spool, msg: SpooledMessage, exc: BaseException) -> None:
        """Delete ``msg`` from ``spool`` (it would fail on every retry; a message the spool never
        stored, id 0, has nothing to delete), count it, log why. A failed delete is kept (:meth:`delete`)."""
        self.count += 1
        reason = f"{type(exc).__name__}: {exc}"
        if reason not in self._logged and len(self._logged) < _REASONS:
            self._logged.add(reason)
            logger.error(
                "MQTT: dropped spooled message seq %d on %s: it can never be sent (%s); later ones for the same "
                "reason are only counted (status mqtt.unsendable)",
                msg.seq, printable(msg.topic), printable(reason),
            )  # fmt: skip
        if msg.id > 0:
            self.undeleted.append(msg.id)
            self.delete(spool)

    def delete(self, spool: Spool, force: bool = False) -> None:
        """Delete the dropped messages from ``spool``. When that fails (a ``SpoolError``: a full
        disk) they are kept and tried again by a later call once the retry is due (``force``: now)."""
        if not self.undeleted or not (force or self._retry.due()):
            return
        try:
            spool.ack(self.undeleted)
        except SpoolError as exc:
            self._retry.failed("delete of unsendable messages", exc)
            return
        self.undeleted = []


__all__ = ["SPOOL_RETRY_S", "UNSENDABLE_ERRORS", "PublishProperties", "SpoolRetry", "Unsendable", "expiry_interval"]
