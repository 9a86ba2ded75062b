"""Between paho's network thread and the subscriber's consumer: the received messages in a
queue bounded in count and bytes, the topic helpers, and rate-limited warnings for dropped
payloads.

Example::

    queue = BoundedQueue(QUEUE_MAX_MESSAGES, QUEUE_MAX_BYTES)
    queue.put(Message("edge/cam1/results", payload, mid=7, qos=1, generation=1))   # network thread
    message = queue.get(timeout=0.1)                                               # consumer
    topic_device("edge/cam1/results")    # "cam1"
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import NamedTuple

from edge_runtime.names import printable

logger = logging.getLogger("edge_runtime.cloud.stream")  # the subscriber's warnings, under one name

#: Malformed payloads logged one by one before rate limiting starts.
MALFORMED_LOG_FIRST = 5
#: After that, at most one WARNING (with the count since the last one) per this many seconds.
MALFORMED_LOG_INTERVAL_S = 10.0
#: Bounds of the queue between paho's network thread and the consumer (writer). When either is
#: reached the network thread stops reading: TCP back-pressure, the broker holds the rest (a
#: message larger than the byte bound is still taken when the queue is empty).
QUEUE_MAX_MESSAGES = 1000
QUEUE_MAX_BYTES = 32 << 20


class DropLog:
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


class Message(NamedTuple):
    """One received message: what the consumer needs, and what its acknowledgement needs
    (``generation``: the connection it came on; a later connection cannot acknowledge it)."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int


def is_status_topic(topic: str) -> bool:
    """``<prefix>/<device>/status``: a device's status message (docs/protocol.md §6.1)."""
    return topic.rsplit("/", 1)[-1] == "status"


def topic_device(topic: str) -> str | None:
    """The device a topic belongs to: its level before the last (``<prefix>/<device>/results``);
    None when the topic has fewer than two levels."""
    levels = topic.split("/")
    return levels[-2] if len(levels) >= 2 else None


class BoundedQueue:
    """The messages between paho's network thread and the consumer, bounded in count and
    bytes. :meth:`put` blocks while full (the network thread stops reading: the broker keeps
    the rest) until room is made or :meth:`release` is called at close, after which it never
    blocks again (what paho still hands over while disconnecting is kept for
    :meth:`ResultStream.drain`)."""

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.bytes = 0
        self.peak_bytes = 0
        self.waits = 0  # how often the network thread had to wait for room
        self.stalled = threading.Event()  # set while a put() waits for room
        self._items: collections.deque[Message] = collections.deque()
        self._cond = threading.Condition()
        self._released = False

    def __len__(self) -> int:
        return len(self._items)

    def _full(self, size: int) -> bool:
        if not self._items:
            return False
        return len(self._items) >= self.max_messages or self.bytes + size > self.max_bytes

    def put(self, message: Message) -> None:
        size = len(message.payload)
        with self._cond:
            if self._full(size) and not self._released:
                self.waits += 1
                self.stalled.set()
                while self._full(size) and not self._released:
                    self._cond.wait()
                self.stalled.clear()
            self._items.append(message)
            self.bytes += size
            self.peak_bytes = max(self.peak_bytes, self.bytes)
            self._cond.notify_all()

    def get(self, timeout: float | None) -> Message | None:
        """The oldest message, waiting up to ``timeout`` seconds (0: not at all); None if none."""
        with self._cond:
            if not self._items and timeout:
                self._cond.wait(timeout)
            if not self._items:
                return None
            message = self._items.popleft()
            self.bytes -= len(message.payload)
            self._cond.notify_all()
            return message

    def release(self) -> None:
        with self._cond:
            self._released = True
            self._cond.notify_all()


__all__ = [
    "MALFORMED_LOG_FIRST",
    "MALFORMED_LOG_INTERVAL_S",
    "QUEUE_MAX_BYTES",
    "QUEUE_MAX_MESSAGES",
    "BoundedQueue",
    "DropLog",
    "Message",
    "is_status_topic",
    "topic_device",
]
