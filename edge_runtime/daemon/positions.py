"""Where the device stands in each stream of its epoch, for the status message and the heartbeat
file (docs/protocol.md §6.1): ``epoch_reason`` and ``streams``; the delivery counters (``spool``,
``mqtt``: a full disk shows as ``spool.disk_full``; ``mqtt.connected`` and ``mqtt.ack_age_s`` for
``edge-runtime health``) in the heartbeat file too.

Per stream (today ``results``): ``first_seq`` (the first seq of this epoch), ``first_held``
(the oldest seq of this epoch still held on the device: seqs below it that a subscriber did not
get are gone, dropped on the device or delivered before it joined) and ``last_issued`` (the
last seq numbered so far; ``first_seq - 1`` before the first). Subscribers report leading and
trailing gaps from them.

Example::

    fields = epoch_fields(state, spool, next_seq=120)
    fields["streams"]["results"]["last_issued"]     # 119
"""

from __future__ import annotations

import logging
import time
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge_runtime.delivery.spool import Spool
    from edge_runtime.delivery.state import StateDir

logger = logging.getLogger(__name__)


def stream_positions(state: StateDir, spool: Spool | None, next_seq: int) -> dict[str, dict[str, int]]:
    """The positions of the ``results`` stream; ``next_seq`` is the daemon's own count, used
    without a spool (then nothing is held back)."""
    first = state.info.first_seq if state.info is not None else 0
    held = next_seq
    if spool is not None:
        try:
            next_seq = spool.next_seq
            oldest = spool.oldest_seq()
        except Exception as exc:  # the spool is closing
            logger.debug("spool positions for the status: %s", exc)
        else:
            held = next_seq if oldest is None else max(first, oldest)
    return {"results": {"first_seq": first, "first_held": held, "last_issued": next_seq - 1}}


def epoch_fields(state: StateDir, spool: Spool | None, next_seq: int) -> dict[str, Any]:
    """``{"epoch_reason": ..., "streams": ...}`` for the status message and the heartbeat file."""
    reason = state.info.reason if state.info is not None else ""
    return {"epoch_reason": reason, "streams": stream_positions(state, spool, next_seq)}


#: Per publisher: (its ``acked`` count, time.monotonic() when that count last changed).
_ACK_CLOCKS: weakref.WeakKeyDictionary[Any, tuple[int, float]] = weakref.WeakKeyDictionary()


def delivery_fields(publisher: Any) -> dict[str, Any]:
    """The ``spool`` and ``mqtt`` objects of the publisher's status (empty without a broker), with
    ``mqtt.connected`` and ``mqtt.ack_age_s`` (seconds since the ``acked`` count last rose, or
    since the first heartbeat) for ``edge-runtime health``."""
    if publisher is None:
        return {}
    try:
        status = publisher.status_fields()
        connected = bool(publisher.connected)
    except Exception as exc:  # the publisher is closing
        logger.debug("delivery counters for the heartbeat: %s", exc)
        return {}
    fields = {key: status[key] for key in ("spool", "mqtt") if key in status}
    mqtt = fields.get("mqtt")
    if isinstance(mqtt, dict):
        now = time.monotonic()
        acked = mqtt.get("acked", 0)
        try:
            previous = _ACK_CLOCKS.get(publisher)
            if previous is None or previous[0] != acked:
                _ACK_CLOCKS[publisher] = previous = (acked, now)
        except TypeError:  # not weak-referenceable (a test double): no ack age
            previous = None
        fields["mqtt"] = {
            **mqtt,
            "connected": connected,
            **({} if previous is None else {"ack_age_s": round(now - previous[1], 1)}),
        }
    return fields


def write_heartbeat(state: StateDir, fields: dict[str, Any], failing: bool) -> bool:
    """Write the heartbeat file; an error (a full state volume) is logged once until a write
    succeeds again. Returns whether it is failing now."""
    try:
        state.write_heartbeat(fields)
    except OSError as exc:
        if not failing:
            logger.warning("cannot write the heartbeat in %s: %s (said once until it works again)", state.path, exc)
        return True
    if failing:
        logger.info("the heartbeat in %s is written again", state.path)
    return False


__all__ = ["delivery_fields", "epoch_fields", "stream_positions", "write_heartbeat"]
