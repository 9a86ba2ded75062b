"""What a spool hands out and takes in: :class:`SpooledMessage` (one message, stored or not),
:class:`SpoolStats` (its counters) and the checks of a message's topic, QoS and expiry.

:class:`~edge_runtime.delivery.spool.Spool` is where they come from.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from edge_runtime.errors import ConfigError


@dataclass(frozen=True)
class SpooledMessage:
    """One stored message. ``id`` orders messages (never reused); ``seq`` is its message number."""

    id: int
    topic: str
    payload: bytes
    qos: int
    expiry_s: float | None
    created: float
    seq: int
    attempts: int

    @property
    def stored(self) -> bool:
        """False for a message the spool could not store (``disk_full``: ``id`` 0): the caller
        publishes it live or counts it lost (:meth:`~edge_runtime.delivery.spool.Spool.count_lost`)."""
        return self.id > 0

    def remaining_expiry_s(self, now: float | None = None) -> float | None:
        """Seconds left before the message expires (for MQTT v5 message expiry), or ``None``."""
        if self.expiry_s is None:
            return None
        return self.created + self.expiry_s - (time.time() if now is None else now)


@dataclass(frozen=True)
class SpoolStats:
    """The state of a spool. ``bytes``: topics + payloads; ``dropped_overflow`` / ``expired``:
    totals over the life of the file; ``oldest_age_s``: ``None`` when empty; ``uncommitted``:
    appends in the open batch. ``disk_full``: appends are not stored for lack of disk space;
    ``unspooled``: messages handed back unstored because of it; ``lost``: messages lost to a
    full disk (unstored ones the caller could not publish, and appends of a batch that could
    not be committed) — both totals over the life of the file."""

    depth: int
    bytes: int
    dropped_overflow: int
    expired: int
    next_seq: int
    oldest_age_s: float | None
    committed_next_seq: int
    uncommitted: int
    disk_full: bool = False
    unspooled: int = 0
    lost: int = 0


def check_message(topic: str, qos: int, expiry_s: float | None) -> None:
    """Refuse (ConfigError) a topic that is not a non-empty string, a QoS other than 0-2, an expiry that is not > 0."""
    if not isinstance(topic, str) or not topic:
        raise ConfigError(f"spool message topic: must be a non-empty string, got {topic!r}")
    if qos not in (0, 1, 2) or isinstance(qos, bool):
        raise ConfigError(f"spool message qos: must be 0, 1 or 2, got {qos!r}")
    if expiry_s is not None and (
        isinstance(expiry_s, bool)
        or not isinstance(expiry_s, (int, float))
        or not math.isfinite(expiry_s)
        or expiry_s <= 0
    ):
        raise ConfigError(f"spool message expiry_s: must be a number > 0 or None, got {expiry_s!r}")
