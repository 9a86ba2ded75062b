"""The settings of ``edge-runtime subscribe``: :data:`SUBSCRIBE`, one row each, and their checks.
:class:`~edge_runtime.cloud.options.SubscribeOptions` takes its defaults, validation,
``EDGE_RUNTIME_SUBSCRIBE_*`` variables and flags from here.

Example::

    SUBSCRIBE.check_value("qos", 3)        # ConfigError: qos must be 0, 1 or 2, got 3
    SUBSCRIBE.ways("client_id")   # "--client-id, EDGE_RUNTIME_SUBSCRIBE_CLIENT_ID or the config key 'client_id'"
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from edge_runtime.cloud.writers import FORMATS
from edge_runtime.delivery.mqtt.settings import MqttConfig
from edge_runtime.errors import ConfigError
from edge_runtime.settings.run import SUBSCRIBE_ENV_PREFIX
from edge_runtime.settings.table import Setting, Table

#: The largest MQTT v5 Session Expiry Interval (0xFFFFFFFF: the session never expires).
MAX_SESSION_EXPIRY_S = 0xFFFFFFFF
#: The default session expiry: the broker keeps a subscriber's session, and queues its QoS 1
#: results, for a day after it went away.
DEFAULT_SESSION_EXPIRY_S = 86_400
#: ``fsync`` values besides a whole number of messages.
FSYNC_MODES = ("batch", "never")


def _check_topic_filter(topic: str) -> str:
    if not topic or "\0" in topic:
        raise ConfigError(f"subscribe topic must be a non-empty string without NUL, got {topic!r}")
    if topic.startswith("$share/"):
        raise ConfigError(f"subscribe topic {topic!r}: give the group with --share (share=), not a $share/ prefix")
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ConfigError(f"subscribe topic {topic!r}: '#' must be a whole, last level")
        if "+" in level and level != "+":
            raise ConfigError(f"subscribe topic {topic!r}: '+' must be a whole level")
    return topic


def _check_broker(url: str) -> str:
    if not url:
        raise ConfigError(f"broker must be a broker URL (mqtt://host:port), got {url!r}")
    MqttConfig.from_url(url)  # ConfigError naming the URL
    for key in ("qos", "session_expiry_s"):  # the publisher's; a subscriber has its own options
        # (the message leaves the URL out: it may hold a password)
        if key in urllib.parse.parse_qs(urllib.parse.urlsplit(url).query, keep_blank_values=True):
            row = SUBSCRIBE[key]
            raise ConfigError(
                f"broker URL: {key}= is a publisher setting; for subscribe use {SUBSCRIBE.flag(row)} "
                f"(config key {key}, {SUBSCRIBE.env_name(row)})"
            )
    return url


def _check_fsync(value: str) -> str:
    text = value.strip().lower()
    if text in FSYNC_MODES or (text.isdigit() and int(text) >= 1):
        return text if text in FSYNC_MODES else str(int(text))
    raise ConfigError(f"fsync must be 'batch', 'never' or a whole number of messages >= 1, got {value!r}")


def _check_share(share: str) -> str:
    if not share or any(c in share for c in "/+#\0"):
        raise ConfigError(f"share group must be a non-empty name without / + # or NUL, got {share!r}")
    return share


def _check_non_empty(key: str, what: str) -> Any:
    def check(value: str) -> str:
        if not value:
            raise ConfigError(f"{key} must be {what}, got {value!r}")
        return value

    return check


CONNECTION, SUBSCRIPTION, OUTPUT = ("Broker and session", "Subscription", "Output")
#: Every option of ``edge-runtime subscribe`` (= config key; ``EDGE_RUNTIME_SUBSCRIBE_<KEY>``).
SUBSCRIBE = Table(
    SUBSCRIBE_ENV_PREFIX,
    (
        Setting("broker", "str", help="mqtt://[user:pass@]host:port or mqtts://... (?protocol=3.1.1 for MQTT 3.1.1)",
                group=CONNECTION, required=True, check=_check_broker, metavar="URL"),
        Setting("topic", "str", "edge/+/results", "topic filter", SUBSCRIPTION, check=_check_topic_filter),
        Setting("share", "str", None, "shared subscription group ($share/<group>/<topic>; gap reports off)",
                SUBSCRIPTION, check=_check_share, default_doc="not set: every message", metavar="GROUP"),
        Setting("output", "str", "-", "stdout (-) or a file (appended to)", OUTPUT,
                check=_check_non_empty("output", "'-' (stdout) or a file path"), metavar="-|FILE"),
        Setting("format", "str", "jsonl", "output format", OUTPUT, choices=FORMATS),
        Setting("client_id", "str", None, "fixed MQTT client id, one per subscriber", CONNECTION,
                check=_check_non_empty("client_id", "a non-empty string"),
                default_doc="the broker URL's client_id=, else edge-sub-<hash of the host, output, share and "
                "instance> (random with clean_session)", metavar="ID"),
        Setting("instance", "int", 0, "which subscriber this is among those on this host with the same output "
                "and share group (part of the derived client id)", CONNECTION, minimum=0, metavar="N"),
        Setting("clean_session", "bool", False, "a random client id and a clean start each time: nothing is "
                "queued while away, no state file (the default keeps a persistent session)", CONNECTION),
        Setting("qos", "int", 1, "subscription QoS", SUBSCRIPTION, choices=(0, 1, 2)),
        Setting("heartbeats", "bool", False, "write heartbeat lines too (they are always counted)", OUTPUT),
        Setting(
            "session_expiry_s", "int", DEFAULT_SESSION_EXPIRY_S, "keep the broker session this long after a "
            "disconnect, so QoS 1 results queue while away (0: a clean start each time)", CONNECTION,
            minimum=0, maximum=MAX_SESSION_EXPIRY_S, what="whole seconds", flag="--session-expiry",
            metavar="SECONDS", default_doc="86400 (1 day)",
        ),
        Setting("fsync", "str", "batch", "when written lines are fsynced, always before the broker gets their "
                "acknowledgement: 'batch' (once per batch of received messages), 'never' (written to the kernel "
                "only: survives a crash of the subscriber, not of the machine) or N (at most N messages per fsync)",
                OUTPUT, check=_check_fsync, metavar="batch|never|N"),
        Setting("state_dir", "path", None, "where the lock and state file of a persistent subscriber writing to "
                "stdout go (with a file output they go beside it)", OUTPUT, metavar="DIR",
                default_doc="$STATE_DIRECTORY, else $XDG_STATE_HOME/edge-runtime or ~/.local/state/edge-runtime, "
                "each + /subscribe"),
    ),
    noun="subscribe setting",
)  # fmt: skip

__all__ = ["DEFAULT_SESSION_EXPIRY_S", "FSYNC_MODES", "MAX_SESSION_EXPIRY_S", "SUBSCRIBE"]
