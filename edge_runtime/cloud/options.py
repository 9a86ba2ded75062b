"""``edge-runtime subscribe`` options: :class:`SubscribeOptions`, merged from flags,
``EDGE_RUNTIME_SUBSCRIBE_<KEY>`` environment variables and a ``--config`` file.

Example::

    options = SubscribeOptions.load("subscribe.toml", flags={"qos": 0})   # flags > env > file
    options.subscription        # "$share/workers/edge/+/results" with share="workers"
    options.mqtt                # the broker URL as an MqttConfig

Each key is validated on its own and errors name where it came from (the flag, the variable
or the file).
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from edge_runtime.delivery.mqtt.settings import MqttConfig
from edge_runtime.errors import ConfigError
from edge_runtime.settings.subscribe import DEFAULT_SESSION_EXPIRY_S, MAX_SESSION_EXPIRY_S, SUBSCRIBE

#: ``EDGE_RUNTIME_SUBSCRIBE_<KEY>``: apart from ``run``'s ``EDGE_RUNTIME_<KEY>`` settings.
ENV_PREFIX = SUBSCRIBE.prefix
#: The command-line flag of each option (the environment variable is ENV_PREFIX + KEY).
FLAGS = {row.name: SUBSCRIBE.flag(row) for row in SUBSCRIBE.rows}


@dataclass(frozen=True)
class SubscribeOptions:
    """What ``edge-runtime subscribe`` does. ``broker``: ``mqtt://[user:pass@]host:port`` or
    ``mqtts://...`` (see :meth:`MqttConfig.from_url`; ``?protocol=3.1.1`` for MQTT 3.1.1);
    ``share``: a shared-subscription group (``$share/<share>/<topic>``); ``output``: ``-``
    (stdout) or a file; ``client_id``: fixed MQTT client id (default: the URL's
    ``client_id=``, else derived from the host, output, share and ``instance``:
    :meth:`derived_client_id`); ``heartbeats``: yield heartbeat lines too (they are always
    counted); ``session_expiry_s``: > 0 keeps the broker session (and the QoS >= 1 messages
    queued in it) this long after a disconnect; 0 or ``clean_session``: a clean start each
    time (random client id unless one is given); ``fsync``: ``batch``, ``never`` or a number of
    messages (:attr:`fsync_every`); ``state_dir``: where a persistent subscriber writing to
    stdout keeps its lock and state files.

    :meth:`load` merges a config file, ``EDGE_RUNTIME_SUBSCRIBE_*`` variables and flags."""

    broker: str
    topic: str = SUBSCRIBE.field("topic")
    share: str | None = SUBSCRIBE.field("share")
    output: str = SUBSCRIBE.field("output")
    format: str = SUBSCRIBE.field("format")
    client_id: str | None = SUBSCRIBE.field("client_id")
    instance: int = SUBSCRIBE.field("instance")
    clean_session: bool = SUBSCRIBE.field("clean_session")
    qos: int = SUBSCRIBE.field("qos")
    heartbeats: bool = SUBSCRIBE.field("heartbeats")
    session_expiry_s: int = SUBSCRIBE.field("session_expiry_s")
    fsync: str = SUBSCRIBE.field("fsync")
    state_dir: Path | None = SUBSCRIBE.field("state_dir")  # noqa: RUF009 (a dataclasses.field, from the row)

    def __post_init__(self) -> None:
        for row in SUBSCRIBE.rows:  # each value checked by its row (None: an optional one not given)
            value = getattr(self, row.name)
            if value is not None or row.required or row.default is not None:
                object.__setattr__(self, row.name, SUBSCRIBE.check_value(row.name, value))

    @property
    def subscription(self) -> str:
        """The topic filter sent to the broker."""
        return f"$share/{self.share}/{self.topic}" if self.share else self.topic

    @property
    def status_subscription(self) -> str | None:
        """The devices' status topics (``<prefix>/+/status`` for ``<prefix>/+/results``), for
        the leading and trailing gaps; None under a shared subscription (no gap reports) or
        when the topic does not end in ``results`` (``edge/#`` gets the status topics itself)."""
        levels = self.topic.split("/")
        if self.share or levels[-1] != "results":
            return None
        return "/".join([*levels[:-1], "status"])

    @property
    def persistent(self) -> bool:
        """Whether the broker keeps the session while the subscriber is away (the default)."""
        return not self.clean_session and self.session_expiry_s > 0

    @property
    def fsync_every(self) -> tuple[bool, int | None]:
        """``(fsync or not, most messages per batch)``: ``batch`` → ``(True, None)``, ``never``
        → ``(False, None)``, ``"N"`` → ``(True, N)`` (None: the stream's own bound)."""
        if self.fsync == "never":
            return False, None
        return True, None if self.fsync == "batch" else int(self.fsync)

    def derived_client_id(self, host: str | None = None) -> str:
        """``edge-sub-<16 hex digits>`` from the host name, the output (its real path, or
        ``-``), the share group and ``instance``: the same subscriber gets the same session
        on every start, another output or instance another one."""
        host = socket.gethostname() if host is None else host
        output = self.output if self.output == "-" else os.path.realpath(self.output)
        text = "\0".join([host, output, self.share or "", str(self.instance)])
        return "edge-sub-" + hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]

    @property
    def session_client_id(self) -> str | None:
        """The client id of the session: the fixed one (:attr:`mqtt_client_id`), else for a
        persistent session the derived one, else None (a random one per start)."""
        return self.mqtt_client_id or (self.derived_client_id() if self.persistent else None)

    @property
    def mqtt(self) -> MqttConfig:
        return MqttConfig.from_url(self.broker)

    @property
    def mqtt_client_id(self) -> str | None:
        """The fixed client id: ``client_id``, else the broker URL's ``client_id=``, else ``None``."""
        return self.client_id or self.mqtt.client_id or None

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """Every option (= config key; environment variable ``EDGE_RUNTIME_SUBSCRIBE_<KEY>``)."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], where: str = "configuration", origins: Mapping[str, str] | None = None
    ) -> SubscribeOptions:
        """Validate merged settings; errors name the key's origin (``origins[key]``, else
        ``where``). ``None`` values count as not given."""
        if data.get("broker") in (None, ""):
            raise ConfigError(f"no MQTT broker given: use {SUBSCRIBE.ways('broker')} (e.g. mqtt://broker.local:1883)")
        return cls(**SUBSCRIBE.validate(data, where, origins))

    @classmethod
    def load(
        cls,
        config_file: str | Path | None = None,
        flags: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> SubscribeOptions:
        """Merge defaults, the file, ``EDGE_RUNTIME_SUBSCRIBE_*`` variables and flags
        (``None`` = not given), in rising precedence."""
        merged, origins = SUBSCRIBE.merge(config_file, flags, os.environ if environ is None else environ)
        return cls.from_mapping(merged, str(config_file) if config_file is not None else "configuration", origins)


def environment_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """``EDGE_RUNTIME_SUBSCRIBE_QOS=0`` → ``{"qos": 0}``; unknown ``EDGE_RUNTIME_SUBSCRIBE_*``
    names are errors (other ``EDGE_RUNTIME_*`` names belong to ``run`` and are ignored)."""
    return SUBSCRIBE.environment(environ)


__all__ = [
    "DEFAULT_SESSION_EXPIRY_S",
    "ENV_PREFIX",
    "FLAGS",
    "MAX_SESSION_EXPIRY_S",
    "SubscribeOptions",
    "environment_settings",
]
