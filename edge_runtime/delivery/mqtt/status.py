"""The device's status message: a retained JSON object on ``<prefix>/<device>/status``
(docs/protocol.md §6.1), ``online`` with counters while it runs, ``offline`` on close and as
the last will.

Example::

    payload = status_payload(ONLINE, {"device": "cam1", "fps": 24.9})
    assert parse_status(payload)["state"] == "online"
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from edge_runtime.bounded_json import loads_bounded

ONLINE = "online"
OFFLINE = "offline"
STATUS_CONTENT_TYPE = "application/json"


def status_payload(state: str, fields: Mapping[str, Any] | None = None) -> bytes:
    """The JSON status message: ``{"state": ..., **fields}``."""
    return json.dumps({"state": state, **(fields or {})}, separators=(",", ":")).encode()


def parse_status(payload: bytes) -> dict[str, Any]:
    """A status message as a dict (``state`` always present; ``ValueError`` if it is not one)."""
    data = loads_bounded(payload)
    if not isinstance(data, dict) or not isinstance(data.get("state"), str):
        raise ValueError(f"not a status message: {payload[:80]!r}")
    return data


__all__ = ["OFFLINE", "ONLINE", "STATUS_CONTENT_TYPE", "parse_status", "status_payload"]
