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

import os
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from edge_runtime.cloud.writers import FORMATS
from edge_runtime.config import parse_env_value
from edge_runtime.delivery.mqtt.settings import MqttConfig
from edge_runtime.errors import ConfigError, close_matches
from edge_runtime.specfiles import load_mapping_file

#: ``EDGE_RUNTIME_SUBSCRIBE_<KEY>``: apart from ``run``'s ``EDGE_RUNTIME_<KEY>`` settings.
ENV_PREFIX = "EDGE_RUNTIME_SUBSCRIBE_"
#: The largest MQTT v5 Session Expiry Interval (0xFFFFFFFF: the session never expires).
MAX_SESSION_EXPIRY_S = 0xFFFFFFFF


def _check_topic_filter(topic: str) -> None:
    if not isinstance(topic, str) or not topic or "\0" in topic:
        raise ConfigError(f"subscribe topic must be a non-empty string without NUL, got {topic!r}")
    if topic.startswith("$share/"):
        raise ConfigError(f"subscribe topic {topic!r}: give the group with --share (share=), not a $share/ prefix")
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ConfigError(f"subscribe topic {topic!r}: '#' must be a whole, last level")
        if "+" in level and level != "+":
            raise ConfigError(f"subscribe topic {topic!r}: '+' must be a whole level")


def _check_broker(url: Any) -> None:
    if not isinstance(url, str) or not url:
        raise ConfigError(f"broker must be a broker URL (mqtt://host:port), got {url!r}")
    MqttConfig.from_url(url)  # ConfigError naming the URL
    for key in ("qos", "session_expiry_s"):  # the publisher's; a subscriber has its own options
        # (the message leaves the URL out: it may hold a password)
        if key in urllib.parse.parse_qs(urllib.parse.urlsplit(url).query, keep_blank_values=True):
            raise ConfigError(
                f"broker URL: {key}= is a publisher setting; for subscribe use {FLAGS[key]} "
                f"(config key {key}, {ENV_PREFIX}{key.upper()})"
            )


def _check_share(share: Any) -> None:
    if not isinstance(share, str) or not share or any(c in share for c in "/+#\0"):
        raise ConfigError(f"share group must be a non-empty name without / + # or NUL, got {share!r}")


def _check_output(output: Any) -> None:
    if not isinstance(output, str) or not output:
        raise ConfigError(f"output must be '-' (stdout) or a file path, got {output!r}")


def _check_format(fmt: Any) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"format {fmt!r} is not one of {', '.join(FORMATS)}{close_matches(str(fmt), FORMATS)}")


def _check_client_id(client_id: Any) -> None:
    if not isinstance(client_id, str) or not client_id:
        raise ConfigError(f"client_id must be a non-empty string, got {client_id!r}")


def _check_qos(qos: Any) -> None:
    if isinstance(qos, bool) or qos not in (0, 1, 2):
        raise ConfigError(f"qos must be 0, 1 or 2, got {qos!r}")


def _check_heartbeats(heartbeats: Any) -> None:
    if not isinstance(heartbeats, bool):
        raise ConfigError(f"heartbeats must be true or false, got {heartbeats!r}")


def _check_session_expiry(seconds: Any) -> None:
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 0 <= seconds <= MAX_SESSION_EXPIRY_S:
        raise ConfigError(f"session_expiry_s must be whole seconds, 0..{MAX_SESSION_EXPIRY_S}, got {seconds!r}")


#: Per option: its validator (``None`` is always valid for the optional ones: not given).
_CHECKS: dict[str, Callable[[Any], None]] = {
    "broker": _check_broker,
    "topic": _check_topic_filter,
    "share": _check_share,
    "output": _check_output,
    "format": _check_format,
    "client_id": _check_client_id,
    "qos": _check_qos,
    "heartbeats": _check_heartbeats,
    "session_expiry_s": _check_session_expiry,
}
#: The command-line flag of each option (the environment variable is ENV_PREFIX + KEY).
FLAGS = {
    "broker": "--broker",
    "topic": "--topic",
    "share": "--share",
    "output": "--output",
    "format": "--format",
    "client_id": "--client-id",
    "qos": "--qos",
    "heartbeats": "--heartbeats",
    "session_expiry_s": "--session-expiry",
}
_INT_KEYS = ("qos", "session_expiry_s")
_BOOL_KEYS = ("heartbeats",)


def _ways(key: str) -> str:
    """``--client-id, EDGE_RUNTIME_SUBSCRIBE_CLIENT_ID or the config key client_id``."""
    return f"{FLAGS[key]}, {ENV_PREFIX}{key.upper()} or the config key {key!r}"


@dataclass(frozen=True)
class SubscribeOptions:
    """What ``edge-runtime subscribe`` does. ``broker``: ``mqtt://[user:pass@]host:port`` or
    ``mqtts://...`` (see :meth:`MqttConfig.from_url`; ``?protocol=3.1.1`` for MQTT 3.1.1);
    ``share``: a shared-subscription group (``$share/<share>/<topic>``); ``output``: ``-``
    (stdout) or a file; ``client_id``: fixed MQTT client id (default: the URL's
    ``client_id=``, else random); ``heartbeats``: yield heartbeat lines too (they are always
    counted); ``session_expiry_s``: > 0 keeps the broker session (and the QoS >= 1 messages
    queued in it) this long after a disconnect; needs a client id. 0: a clean start each time.

    :meth:`load` merges a config file, ``EDGE_RUNTIME_SUBSCRIBE_*`` variables and flags."""

    broker: str
    topic: str = "edge/+/results"
    share: str | None = None
    output: str = "-"
    format: str = "jsonl"
    client_id: str | None = None
    qos: int = 1
    heartbeats: bool = False
    session_expiry_s: int = 0

    def __post_init__(self) -> None:
        for key, check in _CHECKS.items():
            value = getattr(self, key)
            if value is not None or key not in ("share", "client_id"):
                check(value)
        if self.session_expiry_s and self.mqtt_client_id is None:
            raise ConfigError(
                f"session_expiry_s {self.session_expiry_s} needs a fixed client id ({_ways('client_id')}): "
                "the broker keeps the session, and the messages queued in it, under that id"
            )

    @property
    def subscription(self) -> str:
        """The topic filter sent to the broker."""
        return f"$share/{self.share}/{self.topic}" if self.share else self.topic

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
        keys = cls.keys()
        origins = origins or {}
        for key in data:
            if key not in keys:
                raise ConfigError(
                    f"{origins.get(key, where)}: unknown key {key!r}{close_matches(str(key), keys)}; "
                    f"valid keys: {', '.join(keys)}"
                )
        if data.get("broker") in (None, ""):
            raise ConfigError(f"no MQTT broker given: use {_ways('broker')} (e.g. mqtt://broker.local:1883)")
        values = {key: value for key, value in data.items() if value is not None}
        for key, value in values.items():
            try:
                _CHECKS[key](value)
            except ConfigError as exc:
                raise ConfigError(f"{origins.get(key, where)}: {exc}") from exc
        return cls(**values)

    @classmethod
    def load(
        cls,
        config_file: str | Path | None = None,
        flags: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> SubscribeOptions:
        """Merge defaults, the file, ``EDGE_RUNTIME_SUBSCRIBE_*`` variables and flags
        (``None`` = not given), in rising precedence."""
        merged: dict[str, Any] = {}
        origins: dict[str, str] = {}
        if config_file is not None:
            for key, value in load_mapping_file(config_file).items():
                merged[key], origins[key] = value, str(config_file)
        for key, value in environment_settings(os.environ if environ is None else environ).items():
            merged[key], origins[key] = value, ENV_PREFIX + key.upper()
        for key, value in (flags or {}).items():
            if value is not None:
                merged[key], origins[key] = value, FLAGS.get(key, key)
        return cls.from_mapping(merged, str(config_file) if config_file is not None else "configuration", origins)


def environment_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """``EDGE_RUNTIME_SUBSCRIBE_QOS=0`` → ``{"qos": 0}``; unknown ``EDGE_RUNTIME_SUBSCRIBE_*``
    names are errors (other ``EDGE_RUNTIME_*`` names belong to ``run`` and are ignored)."""
    keys = SubscribeOptions.keys()
    settings: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in keys:
            env_names = [ENV_PREFIX + k.upper() for k in keys]
            raise ConfigError(
                f"environment variable {name} is not a subscribe setting{close_matches(name, env_names)}; "
                f"known: {', '.join(env_names)}"
            )
        settings[key] = _parse_env(key, raw, name)
    return settings


def _parse_env(key: str, raw: str, name: str) -> Any:
    return parse_env_value(raw, name, int if key in _INT_KEYS else bool if key in _BOOL_KEYS else str)


__all__ = ["ENV_PREFIX", "FLAGS", "MAX_SESSION_EXPIRY_S", "SubscribeOptions", "environment_settings"]
