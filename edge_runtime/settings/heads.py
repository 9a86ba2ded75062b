"""The keys of ``[heads.<name>]`` (:data:`HEADS`): per-head overrides of the bundle manifest's
schedule and publishing, in the config file. The bundle manifest's per-head ``qos`` /
``expiry_s`` defaults are checked by the same rows (:func:`check_head_value`), so a value the
config refuses is refused in a manifest too, with the same words.

Example::

    check_head_value("expiry_s", 2**32)   # ConfigError: expiry_s must be at most 4294967295 (...), got 4294967296
    check_heads({"box": {"expiry_s": 60}})   # {"box": {"expiry_s": 60.0}}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edge_runtime.errors import ConfigError, close_matches
from edge_runtime.settings.table import NO_FLAG, Setting, Table

#: The largest MQTT v5 Message Expiry Interval: the property is a four-byte integer of seconds.
MAX_MESSAGE_EXPIRY_S = 0xFFFFFFFF
#: The longest head period (``every_n_frames``) a config, head spec, manifest or ``set_schedule``
#: command may give: a signed 32-bit count (a year of frames at 60 fps is 1.9e9).
MAX_EVERY_N_FRAMES = 2**31 - 1

HEAD_GROUP = "Per head: `[heads.<name>]` in the config file"
#: The keys of ``[heads.<name>]``: they override the bundle manifest's schedule and publishing
#: for one head. File-only (no variable, no flag); ``commands`` may change some at run time.
HEADS = Table(
    "",
    (
        Setting(
            "enabled",
            "bool",
            None,
            "run the head (false: skip it)",
            HEAD_GROUP,
            default_doc="true",
            env=False,
            flag=NO_FLAG,
            commands=("enable_head", "disable_head"),
        ),
        Setting(
            "every_n_frames",
            "int",
            None,
            "run the head on every Nth frame",
            HEAD_GROUP,
            minimum=1,
            limit=MAX_EVERY_N_FRAMES,
            limit_why="a signed 32-bit frame count",
            default_doc="the bundle's schedule",
            env=False,
            flag=NO_FLAG,
            commands=("set_schedule",),
        ),
        Setting(
            "qos",
            "int",
            None,
            "MQTT QoS of the head's results",
            HEAD_GROUP,
            choices=(0, 1, 2),
            default_doc="the bundle's, else 1",
            env=False,
            flag=NO_FLAG,
        ),
        Setting(
            "expiry_s",
            "float",
            None,
            "MQTT message expiry of the head's results (seconds)",
            HEAD_GROUP,
            minimum=1,
            limit=MAX_MESSAGE_EXPIRY_S,
            limit_why="the largest MQTT v5 message expiry interval",
            default_doc="the bundle's, else none",
            env=False,
            flag=NO_FLAG,
        ),
        Setting(
            "deadband",
            "float",
            None,
            "report by exception: publish only when a value moved by more than this, or a label / count changed",
            HEAD_GROUP,
            minimum=0,
            default_doc="not set: every result",
            env=False,
            flag=NO_FLAG,
        ),
        Setting(
            "float32",
            "bool",
            None,
            "send the head's float arrays as float32 instead of float16",
            HEAD_GROUP,
            default_doc="false",
            env=False,
            flag=NO_FLAG,
        ),
    ),
    key_prefix="heads.<name>.",
)


def check_heads(value: Mapping[Any, Any]) -> dict[str, dict[str, Any]]:
    """``{head: {key: value}}``, each value checked by its :data:`HEADS` row."""
    result: dict[str, dict[str, Any]] = {}
    for name, entry in value.items():
        if not isinstance(entry, Mapping):
            raise ConfigError(f"heads.{name}: must be a table with {', '.join(HEADS.keys())}")
        for key in entry:
            if key not in HEADS.keys():
                raise ConfigError(
                    f"heads.{name}: unknown key {key!r}{close_matches(str(key), HEADS.keys())}; "
                    f"valid keys: {', '.join(HEADS.keys())}"
                )
        result[str(name)] = {key: check_head_value(key, v, str(name)) for key, v in entry.items() if v is not None}
    return result


def every_n_frames_problem(value: int) -> str | None:
    """Why ``value`` is too long a head period (``"must be at most ..."``), or None: the one bound of
    the config, the head spec's and manifest's schedules and the ``set_schedule`` command."""
    return None if value <= MAX_EVERY_N_FRAMES else f"must be {HEADS['every_n_frames'].limit_text()}"


def check_head_value(key: str, value: Any, head: str | None = None) -> Any:
    """``value`` checked and converted by the :data:`HEADS` row ``key``; the error names the key
    as ``heads.<head>.<key>`` (``head`` given) or ``<key>``, without an origin."""
    return Table("", HEADS.rows, key_prefix="" if head is None else f"heads.{head}.").check_value(key, value)


__all__ = [
    "HEADS",
    "HEAD_GROUP",
    "MAX_EVERY_N_FRAMES",
    "MAX_MESSAGE_EXPIRY_S",
    "check_head_value",
    "check_heads",
    "every_n_frames_problem",
]
