"""Device ids, and text from outside made safe to print.

One rule for what a device id may hold (:func:`device_id_problem`): it is a level of every MQTT
topic of the device (``<prefix>/<device>/results``), so no ``/``, ``+``, ``#``, and, since it
is printed in logs and summaries, no control character. :func:`printable` escapes what a
peer sent (a device id in a payload, a topic) before it goes into a log line or a summary, so a
newline in it cannot forge a line. :func:`redact_url` is the one password redaction, for broker
URLs and camera/stream URLs alike.

Example::

    check_device_id("cam-entrance", "config.toml")      # returns it, or raises ConfigError
    logger.warning("payload on %s rejected", printable(topic))
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from edge_runtime.errors import ConfigError


def device_id_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a device id (``"must be ..."``), or None when it can."""
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if any(c in value for c in "/+#"):
        return "must be free of '/', '+', '#' (it is a level of the MQTT topics)"
    if not value.isprintable():
        return "must hold no control or other unprintable character"
    return None


def check_device_id(value: Any, where: str, key: str = "device_id") -> str:
    """``value`` when it is a valid device id; else :class:`ConfigError`
    ``"<where>: <key> '<value>' must ..."``."""
    problem = device_id_problem(value)
    if problem is not None:
        raise ConfigError(f"{where}: {key} {value!r} {problem}")
    return str(value)


def printable(value: object) -> str:
    """``str(value)`` with every unprintable character (newline, escape, NUL, ...) written as a
    Python escape (``\\n``, ``\\x1b``): one line, nothing a terminal interprets."""
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def redact_url(url: str) -> str:
    """``url`` with the password replaced by ``***`` (for logs and error messages)."""
    try:
        parts = urllib.parse.urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        netloc = f"{user}:***@{parts.netloc.rpartition('@')[2]}"
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparseable URL>"


__all__ = ["check_device_id", "device_id_problem", "printable", "redact_url"]
