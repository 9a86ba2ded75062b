"""The cloud side: subscribe to result topics, decode payloads, de-duplicate, report gaps.

Every payload is decoded with :func:`edge_runtime.codec.wire.decode_payload`. Messages are
de-duplicated on ``(device, epoch, seq)`` and gaps are reported per ``(device, epoch)``
(DESIGN §8). Under a shared subscription (``--share GROUP``) each process sees only part of a
device's stream, so gap reports are off there; de-duplication stays.

Example::

    from edge_runtime.cloud.subscriber import SubscribeOptions, iter_results

    for line in iter_results(SubscribeOptions(broker="mqtt://127.0.0.1:1883"), max_messages=10):
        print(line["device"], line["seq"], line["results"])

CLI::

    edge-runtime subscribe --broker mqtt://broker.local:1883
    edge-runtime subscribe --broker mqtt://broker.local --share workers --format csv --output results.csv
    edge-runtime subscribe --broker mqtt://broker.local --client-id cloud-1 --session-expiry 3600

Options come from flags > ``EDGE_RUNTIME_SUBSCRIBE_<KEY>`` environment variables > a
``--config`` file (TOML/YAML/JSON, the keys of :class:`SubscribeOptions`) > defaults.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import csv
import json
import logging
import os
import signal
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Any, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_runtime.codec.wire import CodecError, decode_payload
from edge_runtime.config import parse_env_value
from edge_runtime.delivery.mqtt.publisher import MqttConfig, describe_connect_error, describe_refusal
from edge_runtime.errors import ConfigError, TransportError, close_matches
from edge_runtime.names import printable
from edge_runtime.specfiles import load_mapping_file

logger = logging.getLogger(__name__)

FORMATS = ("jsonl", "csv")
CSV_COLUMNS = ("device", "epoch", "seq", "frame_id", "ts", "latency_total_ms", "results")
#: Malformed payloads logged one by one before rate limiting starts.
MALFORMED_LOG_FIRST = 5
#: After that, at most one WARNING (with the count since the last one) per this many seconds.
MALFORMED_LOG_INTERVAL_S = 10.0
#: Per (device, epoch), the most out-of-order seqs kept above the contiguous one; past it, the
#: oldest gap is given up (reported as lost, a later arrival in it counts as a duplicate).
MAX_PENDING = 10_000
CONNECT_TIMEOUT_S = 10.0
#: Bounds of the queue between paho's network thread and the consumer (writer). When either is
#: reached the network thread stops reading: TCP back-pressure, the broker holds the rest (a
#: message larger than the byte bound is still taken when the queue is empty).
QUEUE_MAX_MESSAGES = 1000
QUEUE_MAX_BYTES = 32 << 20
#: ``EDGE_RUNTIME_SUBSCRIBE_<KEY>``: apart from ``run``'s ``EDGE_RUNTIME_<KEY>`` settings.
ENV_PREFIX = "EDGE_RUNTIME_SUBSCRIBE_"
#: The largest MQTT v5 Session Expiry Interval (0xFFFFFFFF: the session never expires).
MAX_SESSION_EXPIRY_S = 0xFFFFFFFF

Key = tuple[str, str]


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
                raise ConfigError(f"{origins.get(key, where)}: {exc}") from None
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


# -- de-duplication and gaps -------------------------------------------------------------------


@dataclass
class _Stream:
    """One (device, epoch): every seq <= ``top`` is seen (from ``first`` on), plus ``above``."""

    first: int
    top: int
    above: set[int] = field(default_factory=set)
    before: set[int] = field(default_factory=set)  # seqs below the first one seen (joined mid-stream)
    lost: list[tuple[int, int]] = field(default_factory=list)  # gaps given up (MAX_PENDING)


class StreamTracker:
    """De-duplicates on ``(device, epoch, seq)`` and finds gaps per ``(device, epoch)``.

    Memory per stream is bounded: the highest contiguous seq, plus the set of seqs above it
    (at most ``max_pending``; past it the oldest gap is given up and listed as lost). The first
    seq seen of a stream starts it: earlier seqs are history, not a gap. ``gap_reports=False``
    (shared subscriptions) keeps de-duplication and reports no gaps.
    """

    def __init__(self, *, gap_reports: bool = True, max_pending: int = MAX_PENDING) -> None:
        self.gap_reports = gap_reports
        self.max_pending = max_pending
        self.received = 0  # every message, whatever it holds
        self.results = 0  # unique frames
        self.duplicates = 0
        self.malformed = 0
        self.rejected = 0  # payloads whose device is not the one their topic names
        self.heartbeats = 0  # unique heartbeats
        self._streams: dict[Key, _Stream] = {}

    def observe(self, device: str, epoch: str, seq: int) -> bool:
        """Record one seq; ``True`` when it is new, ``False`` for a duplicate (counted)."""
        key = (device, epoch)
        st = self._streams.get(key)
        if st is None:
            self._streams[key] = _Stream(first=seq, top=seq)
            return True
        if seq < st.first:
            if seq in st.before:
                self.duplicates += 1
                return False
            if len(st.before) < self.max_pending:
                st.before.add(seq)
            return True
        if seq <= st.top or seq in st.above:
            self.duplicates += 1
            return False
        if seq == st.top + 1:
            st.top = seq
            while st.top + 1 in st.above:
                st.top += 1
                st.above.discard(st.top)
        else:
            st.above.add(seq)
            if len(st.above) > self.max_pending:
                self._give_up_oldest_gap(st)
        return True

    def _give_up_oldest_gap(self, st: _Stream) -> None:
        low = min(st.above)
        if self.gap_reports:
            st.lost.append((st.top + 1, low - 1))
            del st.lost[: -self.max_pending]
        st.above.discard(low)
        st.top = low
        while st.top + 1 in st.above:
            st.top += 1
            st.above.discard(st.top)

    def count_line(self, line: dict[str, Any]) -> bool:
        """Count a decoded line (frame or heartbeat); ``True`` when it is new."""
        self.received += 1
        if not self.observe(str(line["device"]), str(line["epoch"]), int(line["seq"])):
            return False
        if line.get("kind") == "heartbeat":
            self.heartbeats += 1
        else:
            self.results += 1
        return True

    def count_malformed(self) -> None:
        self.received += 1
        self.malformed += 1

    def count_rejected(self) -> None:
        """A payload that claims another device than its topic (dropped before de-dup)."""
        self.received += 1
        self.rejected += 1

    def streams(self) -> list[Key]:
        return sorted(self._streams)

    def gaps(self) -> dict[Key, list[tuple[int, int]]]:
        """Missing seq ranges (inclusive) per (device, epoch), lost ones included; ``{}`` when
        gap reports are off. Streams without gaps are left out."""
        if not self.gap_reports:
            return {}
        out: dict[Key, list[tuple[int, int]]] = {}
        for key, st in sorted(self._streams.items()):
            ranges = list(st.lost)
            prev = st.top
            for seq in sorted(st.above):
                if seq > prev + 1:
                    ranges.append((prev + 1, seq - 1))
                prev = seq
            if ranges:
                out[key] = ranges
        return out

    def summary(self) -> str:
        """Counters and gaps, one item a line (what ``subscribe`` prints to stderr at exit)."""
        lines = [
            f"received {self.received} messages: {self.results} results, {self.heartbeats} heartbeats, "
            f"{self.duplicates} duplicates, {self.malformed} malformed"
            + (f", {self.rejected} rejected (device differs from the topic's)" if self.rejected else "")
        ]
        if not self.gap_reports:
            lines.append("gap reports off under a shared subscription (each subscriber sees part of each stream)")
            return "\n".join(lines)
        gaps = self.gaps()
        for device, epoch in self.streams():
            ranges = gaps.get((device, epoch), [])
            if ranges:
                missing = sum(b - a + 1 for a, b in ranges)
                shown = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in ranges[:20])
                more = f" (+{len(ranges) - 20} more ranges)" if len(ranges) > 20 else ""
                lines.append(f"{printable(device)} epoch {printable(epoch)}: {missing} missing seq: {shown}{more}")
            else:
                lines.append(f"{printable(device)} epoch {printable(epoch)}: no gaps")
        return "\n".join(lines)


class _DropLog:
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


def topic_device(topic: str) -> str | None:
    """The device a topic belongs to: its level before the last (``<prefix>/<device>/results``);
    None when the topic has fewer than two levels."""
    levels = topic.split("/")
    return levels[-2] if len(levels) >= 2 else None


class _BoundedQueue:
    """The messages between paho's network thread and the consumer, bounded in count and
    bytes. :meth:`put` blocks while full (the network thread stops reading: the broker keeps
    the rest) until room is made or :meth:`release` is called at close, after which it never
    blocks again (what paho still hands over while disconnecting was acknowledged already, so
    it is kept for :meth:`ResultStream.drain`)."""

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.bytes = 0
        self.peak_bytes = 0
        self.waits = 0  # how often the network thread had to wait for room
        self.stalled = threading.Event()  # set while a put() waits for room
        self._items: collections.deque[tuple[str, bytes]] = collections.deque()
        self._cond = threading.Condition()
        self._released = False

    def __len__(self) -> int:
        return len(self._items)

    def _full(self, size: int) -> bool:
        if not self._items:
            return False
        return len(self._items) >= self.max_messages or self.bytes + size > self.max_bytes

    def put(self, topic: str, payload: bytes) -> None:
        with self._cond:
            if self._full(len(payload)) and not self._released:
                self.waits += 1
                self.stalled.set()
                while self._full(len(payload)) and not self._released:
                    self._cond.wait()
                self.stalled.clear()
            self._items.append((topic, payload))
            self.bytes += len(payload)
            self.peak_bytes = max(self.peak_bytes, self.bytes)
            self._cond.notify_all()

    def get(self, timeout: float | None) -> tuple[str, bytes] | None:
        """The oldest message, waiting up to ``timeout`` seconds (0: not at all); None if none."""
        with self._cond:
            if not self._items and timeout:
                self._cond.wait(timeout)
            if not self._items:
                return None
            topic, payload = self._items.popleft()
            self.bytes -= len(payload)
            self._cond.notify_all()
            return topic, payload

    def release(self) -> None:
        with self._cond:
            self._released = True
            self._cond.notify_all()


# -- MQTT ------------------------------------------------------------------------------------


class ResultStream:
    """A connected, subscribed MQTT client whose messages :meth:`lines` decodes.

    ``start()`` returns once the broker has granted the subscription (so a test can publish
    right after; a resumed session whose kept messages fill the queue first returns once it
    is full: the SUBACK follows them), or raises :class:`TransportError` with one line naming
    the broker and why (refused: bad user or password, not authorized...; unreachable; TLS
    verification).
    Messages wait in a queue bounded in count and bytes (:data:`QUEUE_MAX_MESSAGES`,
    :data:`QUEUE_MAX_BYTES`); when it is full paho's network thread stops reading, so a slow
    consumer leaves the rest with the broker instead of in memory. A payload whose ``device``
    is not its topic's device level is rejected and counted (``tracker.rejected``).
    With ``session_expiry_s`` > 0 the client connects with clean start off (MQTT 3.1.1:
    clean session off) under its fixed client id, so the broker keeps the subscription and
    queues QoS >= 1 messages while the subscriber is away; they arrive right after the next
    ``start()`` (``session_present`` tells whether the broker still had the session).
    Use as a context manager."""

    def __init__(self, options: SubscribeOptions, tracker: StreamTracker | None = None) -> None:
        self.options = options
        self.config = options.mqtt
        self.tracker = tracker or StreamTracker(gap_reports=options.share is None)
        self.session_present = False
        self._queue = _BoundedQueue(QUEUE_MAX_MESSAGES, QUEUE_MAX_BYTES)
        self._subscribed = threading.Event()
        self._connect_result: ReasonCode | None = None
        self._connected = threading.Event()
        self._started = False  # start() succeeded: from then on, connection trouble is logged
        self._closed = False
        self._log_malformed = _DropLog("malformed payload")
        self._log_rejected = _DropLog("payload for another device")
        cfg = self.config
        self.client_id = options.mqtt_client_id or f"edge-sub-{uuid.uuid4().hex[:12]}"
        persistent = options.session_expiry_s > 0
        if cfg.protocol == "3.1.1":
            self._client = paho.Client(
                CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                protocol=MQTTProtocolVersion.MQTTv311,
                clean_session=not persistent,
            )
        else:
            self._client = paho.Client(
                CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=MQTTProtocolVersion.MQTTv5
            )
        if cfg.username is not None:
            self._client.username_pw_set(cfg.username, cfg.password)
        if cfg.uses_tls:
            try:
                self._client.tls_set(ca_certs=cfg.tls_ca, certfile=cfg.tls_cert, keyfile=cfg.tls_key)
            except (OSError, ValueError) as exc:
                raise ConfigError(f"MQTT TLS setup failed: {exc}") from None
        self._client.reconnect_delay_set(cast(int, cfg.reconnect_min_s), cast(int, cfg.reconnect_max_s))
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    @property
    def where(self) -> str:
        host = self.config.host
        return f"[{host}]:{self.config.port}" if ":" in host else f"{host}:{self.config.port}"

    def start(self, timeout: float = CONNECT_TIMEOUT_S) -> ResultStream:
        cfg = self.config
        try:
            if cfg.protocol == "3.1.1":
                self._client.connect(cfg.host, cfg.port, cfg.keepalive)
            else:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = self.options.session_expiry_s
                clean_start = self.options.session_expiry_s == 0
                self._client.connect(cfg.host, cfg.port, cfg.keepalive, clean_start=clean_start, properties=props)
        except (OSError, ValueError) as exc:  # ssl.SSLError and socket.gaierror are OSErrors
            self.close()
            reason = describe_connect_error(exc)
            if cfg.uses_tls and isinstance(exc, ConnectionResetError):
                reason += " (a port without TLS? mqtts:// needs a TLS listener)"
            raise TransportError(f"cannot connect to MQTT broker {self.where}: {reason}") from None
        self._client.loop_start()
        if not self._connected.wait(timeout):
            self.close()
            raise TransportError(
                f"MQTT broker {self.where} did not answer the connection in {timeout:g} s"
                + ("" if cfg.uses_tls else " (a TLS port? use mqtts://)")
            )
        rc = self._connect_result
        if rc is not None and rc.is_failure:
            self.close()
            raise TransportError(f"MQTT broker {self.where} refused the connection: {describe_refusal(rc)}")
        if not self._wait_subscribed(timeout):
            self.close()
            raise TransportError(
                f"MQTT broker {self.where} did not grant the subscription {self.options.subscription!r} "
                f"in {timeout:g} s"
            )
        self._started = True
        return self

    def _wait_subscribed(self, timeout: float) -> bool:
        """Wait for the SUBACK. A resumed session's broker sends the messages it kept before
        the SUBACK; when they fill the bounded queue (nobody takes from it before ``start()``
        returns) the SUBACK is behind them, and the subscription exists already: stop waiting
        then (a refusal still gets logged when the SUBACK comes)."""
        deadline = time.monotonic() + timeout
        while not self._subscribed.wait(0.05):
            if self.session_present and self._queue.stalled.is_set():
                return True
            if time.monotonic() >= deadline:
                return False
        return True

    # paho callbacks (network thread)
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        if rc.is_failure:
            if self._started:  # a later reconnect refused (start() reports the first one itself)
                logger.warning("MQTT broker %s refused the connection: %s; retrying", self.where, describe_refusal(rc))
            else:
                self._connect_result = rc
                self._connected.set()
            return
        self.session_present = bool(getattr(flags, "session_present", False))
        if self.session_present:
            logger.debug("MQTT broker %s resumed the session of client id %s", self.where, self.client_id)
        self._connect_result = rc
        self._connected.set()
        client.subscribe(self.options.subscription, qos=self.options.qos)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        if self._closed or not self._started:
            return
        if rc.getName() == "Session taken over":
            logger.warning(
                "MQTT broker %s: another client connected with client id %s and took the session over "
                "(reconnecting; give each subscriber its own --client-id)",
                self.where,
                self.client_id,
            )
        else:
            logger.warning("MQTT connection to %s lost: %s (reconnecting)", self.where, rc)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, rcs: list[ReasonCode], props: Any) -> None:
        failed = [rc for rc in rcs if rc.is_failure]
        if failed:
            logger.error(
                "MQTT broker %s refused the subscription %r: %s", self.where, self.options.subscription, failed
            )
            return
        self._subscribed.set()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        # Blocks while the queue is full: paho reads nothing more (and acknowledges nothing
        # more) until the consumer makes room; the broker holds the rest.
        self._queue.put(msg.topic, bytes(msg.payload))

    def _decode(self, topic: str, payload: bytes) -> dict[str, Any] | None:
        """The line to yield, or ``None`` (malformed, duplicate, or a heartbeat not asked for)."""
        try:
            line = decode_payload(payload)
        except CodecError as exc:
            self.tracker.count_malformed()
            self._log_malformed(topic, exc)
            return None
        claimed = topic_device(topic)
        if line.get("device") != claimed:
            # A client that may publish on one device's topic must not speak for another (nor
            # pre-empt its seqs, which the real messages would then meet as duplicates).
            self.tracker.count_rejected()
            self._log_rejected(topic, f"the payload says device {line.get('device')!r}, the topic {claimed!r}")
            return None
        if not self.tracker.count_line(line):
            return None
        if line.get("kind") == "heartbeat" and not self.options.heartbeats:
            return None
        return line

    def lines(
        self,
        *,
        stop: threading.Event | None = None,
        max_messages: int | None = None,
        timeout: float | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Decoded, de-duplicated lines until ``stop`` is set, ``max_messages`` lines were
        yielded, or ``timeout`` seconds have passed (whichever comes first)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        yielded = 0
        while max_messages is None or yielded < max_messages:
            if stop is not None and stop.is_set():
                return
            wait = 0.1
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                wait = min(wait, left)
            item = self._queue.get(timeout=wait)
            if item is None:
                continue
            line = self._decode(*item)
            if line is not None:
                yielded += 1
                yield line

    def drain(self) -> Iterator[dict[str, Any]]:
        """The lines still queued, without waiting: after :meth:`close`, what the broker
        delivered (and was acknowledged) before the disconnect."""
        while True:
            item = self._queue.get(timeout=0)
            if item is None:
                return
            line = self._decode(*item)
            if line is not None:
                yield line

    def close(self) -> None:
        """Disconnect (a persistent session stays on the broker for ``session_expiry_s``)."""
        if self._closed:
            return
        self._closed = True
        self._queue.release()  # a network thread waiting for room goes on, and so can stop
        with contextlib.suppress(Exception):
            self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> ResultStream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_results(
    options: SubscribeOptions,
    *,
    stop: threading.Event | None = None,
    max_messages: int | None = None,
    timeout: float | None = None,
    tracker: StreamTracker | None = None,
    ready: threading.Event | None = None,
) -> Iterator[dict[str, Any]]:
    """Connect, subscribe and yield decoded, de-duplicated result lines (see
    :meth:`ResultStream.lines`). ``tracker`` (optional) receives the counters and gaps;
    ``ready`` is set once the subscription is granted. :class:`TransportError` when the
    broker cannot be reached."""
    with ResultStream(options, tracker) as stream:
        if ready is not None:
            ready.set()
        yield from stream.lines(stop=stop, max_messages=max_messages, timeout=timeout)


# -- writers -------------------------------------------------------------------------------


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class FdTextSink:
    """Text written straight to a file descriptor with ``os.write`` until every byte is out.

    CPython's buffered ``sys.stdout`` loses data when a signal (SIGTERM, SIGINT) arrives while a
    large write is blocked on a full pipe: measured here, a 16 MB line was cut after 128 KiB and
    the next line glued on. ``os.write`` returns what it wrote and retries on EINTR (PEP 475),
    so the loop writes each line whole."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, text: str) -> int:
        view = memoryview(text.encode("utf-8"))
        while view:
            view = view[os.write(self.fd, view) :]
        return len(text)

    def flush(self) -> None:
        """Nothing is buffered."""


def _stdout() -> IO[str] | FdTextSink:
    """Standard output as a sink that survives signals (:class:`FdTextSink`) when it is a real
    file descriptor, else ``sys.stdout`` as it is (captured by a test, replaced by a caller)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation: no descriptor
        return sys.stdout
    sys.stdout.flush()
    return FdTextSink(fd)


class JsonLinesWriter:
    """One compact JSON object per line, flushed after each."""

    def __init__(self, stream: IO[str] | FdTextSink) -> None:
        self.stream = stream

    def write(self, line: dict[str, Any]) -> None:
        self.stream.write(_compact(line) + "\n")
        self.stream.flush()


class CsvWriter:
    """``device, epoch, seq, frame_id, ts, latency_total_ms, results`` (compact JSON); a header
    first; flushed after each row. Heartbeats get an empty frame_id and latency."""

    def __init__(self, stream: IO[str] | FdTextSink, *, header: bool = True) -> None:
        self.stream = stream
        self._csv = csv.writer(stream, lineterminator="\n")
        if header:
            self._csv.writerow(CSV_COLUMNS)
            self.stream.flush()

    def write(self, line: dict[str, Any]) -> None:
        latency = line.get("latency_ms")
        total = latency.get("total", "") if isinstance(latency, dict) else ""
        results = line.get("results", line.get("heads", {}))
        self._csv.writerow(
            [line.get("device"), line.get("epoch"), line.get("seq"), line.get("frame_id", ""), line.get("ts"), total,
             _compact(results)]
        )  # fmt: skip
        self.stream.flush()


Writer = JsonLinesWriter | CsvWriter


@contextlib.contextmanager
def open_writer(output: str = "-", fmt: str = "jsonl") -> Iterator[Writer]:
    """A writer of ``fmt`` on stdout (``-``) or appending to the file ``output`` (a CSV header
    only when the file is new or empty), like ``run --output``."""
    if fmt not in FORMATS:
        raise ConfigError(f"format {fmt!r} is not one of {', '.join(FORMATS)}{close_matches(str(fmt), FORMATS)}")
    if output == "-":
        yield (CsvWriter if fmt == "csv" else JsonLinesWriter)(_stdout())
        return
    try:
        fh = open(output, "a", encoding="utf-8", newline="")
    except OSError as exc:
        raise ConfigError(f"cannot open output {output!r}: {exc.strerror or exc}") from None
    with fh:
        yield CsvWriter(fh, header=fh.tell() == 0) if fmt == "csv" else JsonLinesWriter(fh)


# -- CLI -------------------------------------------------------------------------------------


def options_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> SubscribeOptions:
    """The options of ``edge-runtime subscribe``: flags > ``EDGE_RUNTIME_SUBSCRIBE_*``
    (``environ``, default ``os.environ``) > the ``--config`` file > defaults."""
    flags = {key: getattr(args, key, None) for key in SubscribeOptions.keys()}
    return SubscribeOptions.load(config_file=getattr(args, "config", None), flags=flags, environ=environ)


def run_subscribe(args: argparse.Namespace, *, stop: threading.Event | None = None) -> int:
    """``edge-runtime subscribe``: write results until SIGINT/SIGTERM (or ``stop``), then the
    lines already received, then print the summary to stderr and return 0.
    :class:`ConfigError` / :class:`TransportError` (one line each) when the options are wrong
    or the broker cannot be reached or refuses the connection."""
    options = options_from_args(args)
    stop = stop or threading.Event()
    tracker = StreamTracker(gap_reports=options.share is None)
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def handler(signum: int, frame: Any) -> None:
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    try:
        # The output first: a persistent session hands over its queued messages on connect.
        with open_writer(options.output, options.format) as writer, ResultStream(options, tracker) as stream:
            resumed = " (session resumed)" if stream.session_present else ""
            print(f"subscribed to {options.subscription!r} on {stream.where}{resumed}", file=sys.stderr)
            for line in stream.lines(stop=stop):
                writer.write(line)
            stream.close()  # nothing more arrives; write what was received (and acknowledged)
            for line in stream.drain():
                writer.write(line)
    except BrokenPipeError:  # stdout closed (| head): a clean stop
        with contextlib.suppress(Exception):
            sys.stdout = open(os.devnull, "w")
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    print(tracker.summary(), file=sys.stderr)
    return 0


def add_subscribe_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``subscribe`` flags (DESIGN §7), for ``edge_runtime.cli``. None is required here:
    each one can also come from ``--config`` or ``EDGE_RUNTIME_SUBSCRIBE_*``."""
    parser.add_argument("--config", metavar="FILE", help="TOML/YAML/JSON file with the keys below (e.g. broker)")
    parser.add_argument(
        "--broker", metavar="URL", help="mqtt://[user:pass@]host:port or mqtts://... (?protocol=3.1.1 for MQTT 3.1.1)"
    )
    parser.add_argument("--topic", help="topic filter (default: edge/+/results)")
    parser.add_argument("--share", metavar="GROUP", help="shared subscription group (gap reports off)")
    parser.add_argument("--output", metavar="-|FILE", help="stdout (-, default) or a file (appended to)")
    parser.add_argument("--format", choices=FORMATS, help="jsonl (default) or csv")
    parser.add_argument(
        "--client-id", dest="client_id", help="fixed MQTT client id, one per subscriber (default: random)"
    )
    parser.add_argument("--qos", type=int, choices=(0, 1, 2), help="subscription QoS (default: 1)")
    parser.add_argument(
        "--session-expiry",
        dest="session_expiry_s",
        type=int,
        metavar="SECONDS",
        help="keep the broker session this long after a disconnect, so QoS 1 results queue while "
        "away (needs --client-id; default 0: clean start)",
    )
    parser.add_argument(
        "--heartbeats",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write heartbeat lines too (default: no; they are always counted)",
    )


SUBSCRIBE_EXAMPLES = """examples:
  edge-runtime subscribe --broker mqtt://broker.local:1883
  edge-runtime subscribe --broker mqtt://127.0.0.1:1883 --topic 'edge/cam1/results' --format csv --output r.csv
  edge-runtime subscribe --broker mqtts://user:pass@broker.example.com --share workers
  edge-runtime subscribe --broker mqtt://broker.local --client-id cloud-1 --session-expiry 3600 --output r.jsonl
  edge-runtime subscribe --config subscribe.toml --heartbeats
  EDGE_RUNTIME_SUBSCRIBE_BROKER=mqtt://broker.local EDGE_RUNTIME_SUBSCRIBE_FORMAT=csv edge-runtime subscribe

De-duplicates on (device, epoch, seq) and reports gaps per (device, epoch) at exit (Ctrl-C);
heartbeats take a seq too, so they fill the sequence whether written or not. Under --share
each subscriber sees part of every stream, so gap reports are off.

Every flag is also a config-file key (broker, topic, share, output, format, client_id, qos,
heartbeats, session_expiry_s) and an EDGE_RUNTIME_SUBSCRIBE_<KEY> environment variable
(EDGE_RUNTIME_SUBSCRIBE_SESSION_EXPIRY_S=3600); flags win over the environment, which wins
over the file. With --session-expiry the broker keeps the subscription and queues QoS 1
results while the subscriber is away (up to its max_queued_messages); they arrive on the
next start with the same --client-id. MQTT 3.1.1 has no expiry: the session is kept
(clean session off) as long as the broker's persistent_client_expiration allows.
"""

__all__ = [
    "CSV_COLUMNS",
    "FORMATS",
    "SUBSCRIBE_EXAMPLES",
    "CsvWriter",
    "FdTextSink",
    "JsonLinesWriter",
    "ResultStream",
    "StreamTracker",
    "SubscribeOptions",
    "add_subscribe_arguments",
    "iter_results",
    "open_writer",
    "options_from_args",
    "run_subscribe",
    "topic_device",
]
