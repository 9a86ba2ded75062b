"""The device's MQTT publisher: drains the store-and-forward spool.

Results go to the :class:`~edge_runtime.delivery.spool.Spool` first (``publish_frame``,
``publish_line``); a sender thread (:mod:`~edge_runtime.delivery.mqtt.sender`: the in-flight
window, acks and their retries, live publishing on a full disk) publishes what is committed
there and deletes a message only on its PUBACK. The publisher keeps the retained status
(:mod:`~edge_runtime.delivery.mqtt.status`) on ``<prefix>/<device>/status``, subscribes to
``.../cmd`` when ``on_command`` is set and answers on ``.../reply`` (``docs/protocol.md`` §9).
Connection failures are retried with backoff, logged once per distinct reason and kept in
:attr:`MqttPublisher.last_error`.

On a full disk the spool hands results back unstored: see :mod:`~edge_runtime.delivery.mqtt.sender`.

Example::

    config = MqttConfig.from_url("mqtts://user:secret@broker.local:8883")
    with Spool.open("/var/lib/edge-runtime/spool.sqlite") as spool, \\
            MqttPublisher(config, "cam1", spool, epoch=epoch) as publisher:
        publisher.publish_frame(result)  # a FrameResult; its seq is the spool's
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_runtime.codec import content_type, encode_frame, encode_line
from edge_runtime.delivery.mqtt.client import MqttClient, make_client
from edge_runtime.delivery.mqtt.outgoing import Unsendable
from edge_runtime.delivery.mqtt.sender import Sender
from edge_runtime.delivery.mqtt.settings import (
    NO_TLS_LISTENER_HINT,
    DeviceTopics,
    MqttConfig,
    describe_connect_error,
    describe_refusal,
)
from edge_runtime.delivery.mqtt.status import OFFLINE, ONLINE, STATUS_CONTENT_TYPE, status_payload
from edge_runtime.delivery.spool import Spool, SpooledMessage
from edge_runtime.errors import ConfigError, TransportError
from edge_runtime.names import check_device_id

if TYPE_CHECKING:
    from edge_runtime.inference.results import FrameResult

logger = logging.getLogger(__name__)


class MqttPublisher:
    """Publishes the spool's messages; a context manager (``start`` / ``close``).

    ``publish_line`` / ``write`` append to the spool (the seq in the payload is the spool's seq);
    counters ``published`` (PUBLISH calls, re-sends by paho not counted), ``acked`` (PUBACKs that
    removed a message from the spool), ``reconnects`` and ``rejected`` (PUBACKs with an error
    reason code: the message stays in the spool and is tried again later); ``unsendable.count``:
    spooled messages dropped because no retry could send them (:mod:`.outgoing`);
    ``published_unspooled``: results the spool could not store (a full disk), published live; ``last_error``: why
    the last connection attempt failed (None once connected). ``epoch`` goes into the status
    messages; ``compression``: ``"zstd"`` compresses payloads (see :mod:`edge_runtime.codec.envelope`).
    """

    def __init__(
        self,
        config: MqttConfig,
        device_id: str,
        spool: Spool,
        *,
        mode: str = "msgpack",
        compression: str | None = None,
        max_inflight: int = 100,
        expiry_s: float | None = None,
        epoch: str | None = None,
        on_command: Callable[[bytes], object] | None = None,
    ) -> None:
        check_device_id(device_id, "MQTT publisher", "device id")
        if max_inflight < 1:
            raise ConfigError(f"max_inflight must be >= 1, got {max_inflight}")
        self.config = config
        self.device_id = device_id
        self.spool = spool
        self.mode = mode
        self.compression = compression
        self.epoch = epoch
        self.content_type = content_type(mode)
        self.max_inflight = max_inflight
        self.expiry_s = expiry_s
        topics = DeviceTopics(config.topic_prefix, device_id)
        self.results_topic, self.status_topic = topics.results, topics.status
        self.command_topic, self.reply_topic = topics.cmd, topics.reply
        #: Called (network thread) with the payload of each message on ``command_topic``; when
        #: set before :meth:`start`, the publisher subscribes to that topic on every connect.
        self.on_command = on_command
        #: Extra fields merged into every status message (e.g. the command counters).
        self.status_extra: Callable[[], Mapping[str, Any]] | None = None
        self.reconnects = 0
        self.last_error: str | None = None
        self._logged_error: str | None = None
        self._status_fields: dict[str, Any] = {}
        self._v5 = config.protocol == "5"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._ever_connected = False
        self._thread: threading.Thread | None = None
        self._closed = False
        self._client = self._make_client()
        self._sender = Sender(
            self._client, spool, max_inflight=max_inflight, content_type=self.content_type, v5=self._v5,
            connected=self._connected, wake=self._wake, stop=self._stop,
        )  # fmt: skip

    # -- the sender's counters ---------------------------------------------------------------
    @property
    def published(self) -> int:
        return self._sender.published

    @property
    def acked(self) -> int:
        return self._sender.acked

    @property
    def rejected(self) -> int:
        return self._sender.rejected

    @property
    def published_unspooled(self) -> int:
        return self._sender.published_unspooled

    @property
    def unsendable(self) -> Unsendable:
        return self._sender.unsendable

    @property
    def on_ack_latency(self) -> Callable[[float], None] | None:
        """Called (sender thread) with each acknowledged result's PUBLISH → PUBACK seconds."""
        return self._sender.on_ack_latency

    @on_ack_latency.setter
    def on_ack_latency(self, observer: Callable[[float], None] | None) -> None:
        self._sender.on_ack_latency = observer

    # -- setup -----------------------------------------------------------------------------
    def _make_client(self) -> MqttClient:
        cfg = self.config
        client_id = cfg.client_id or f"edge-{self.device_id}"
        client = make_client(cfg, client_id, clean_start=False, session_expiry_s=cfg.session_expiry_s)
        will = status_payload(OFFLINE, self._identity())
        client.will_set(self.status_topic, will, qos=1, retain=True, properties=self._status_properties(will=True))
        client.max_inflight_messages_set(self.max_inflight + 4)  # + birth / offline status, replies
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_connect_fail = self._on_connect_fail
        return client

    def _identity(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"device": self.device_id}
        if self.epoch is not None:
            fields["epoch"] = self.epoch
        return fields

    def _status_properties(self, will: bool = False) -> Properties | None:
        if not self._v5:
            return None
        props = Properties(PacketTypes.WILLMESSAGE if will else PacketTypes.PUBLISH)
        props.ContentType = STATUS_CONTENT_TYPE
        return props

    def start(self) -> MqttPublisher:
        """Connect in the background (retrying until the broker is there) and start sending."""
        if self._thread is not None:
            return self
        cfg = self.config
        # the spool's content at start is backlog; results appended from now on are live, even
        # those appended before the first connection is up
        self._sender.live_after_id = self.spool.last_id
        try:
            self._client.connect_broker(background=True)
        except (OSError, ValueError) as exc:
            raise TransportError(f"MQTT broker {cfg.host}:{cfg.port}: {exc}") from exc
        self._client.loop_start()
        self._thread = threading.Thread(target=self._sender.run, name="mqtt-sender", daemon=True)
        self._thread.start()
        return self

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    # -- paho callbacks (network thread) ----------------------------------------------------
    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason_code: ReasonCode, properties: Any
    ) -> None:
        if reason_code.is_failure:
            self._set_error(f"refused the connection: {describe_refusal(reason_code)}")
            return
        self.last_error = self._logged_error = None
        if self._ever_connected:
            self.reconnects += 1
            logger.info("MQTT reconnected to %s:%s", self.config.host, self.config.port)
            # what piled up during the outage is backlog; what comes from now on is live
            with contextlib.suppress(Exception):
                self._sender.live_after_id = self.spool.last_id
        self._ever_connected = True
        if self.on_command is not None:
            client.subscribe(self.command_topic, qos=1)
        client.publish(
            self.status_topic, self._status(ONLINE), qos=1, retain=True, properties=self._status_properties()
        )
        self._connected.set()
        self._wake.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        handler = self.on_command
        if handler is None or message.topic != self.command_topic:
            return
        try:
            handler(bytes(message.payload))
        except Exception:  # never into paho's network thread
            logger.exception("MQTT command handler failed")

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        exc = getattr(client, "last_connect_exception", None)
        self._set_error(describe_connect_error(exc, self.config.uses_tls) if exc is not None else "connection failed")

    def _set_error(self, reason: str) -> None:
        message = f"MQTT broker {self.config.host}:{self.config.port}: {reason}; retrying"
        self.last_error = message
        if message != self._logged_error:  # once per distinct reason, not on every retry
            self._logged_error = message
            logger.error("%s", message)

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason_code: ReasonCode, properties: Any
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if not self._closed and was_connected:  # not after a refused CONNACK: keep its reason
            self.last_error = f"MQTT broker {self.config.host}:{self.config.port}: connection lost: {reason_code}"
            logger.warning("MQTT connection to %s:%s lost: %s", self.config.host, self.config.port, reason_code)
        elif not self._closed and self.last_error is None:  # e.g. TLS: the broker hung up during the handshake
            hint = (
                f"{NO_TLS_LISTENER_HINT[:-1]}; or does it require a client certificate? set tls_cert and tls_key)"
                if self.config.uses_tls
                else ""
            )
            self._set_error(f"closed the connection before it was established: {reason_code}{hint}")

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason_code: ReasonCode, properties: Any
    ) -> None:
        # Called under paho's message lock: only queue the ack; the sender thread applies it.
        self._sender.queue_ack(mid, not reason_code.is_failure)

    # -- the sink API -----------------------------------------------------------------------
    def publish_line(
        self,
        line: Mapping[str, Any],
        *,
        qos: int | None = None,
        expiry_s: float | None = None,
        float32_heads: Collection[str] = (),
    ) -> SpooledMessage:
        """Append one JSON-form line (a heartbeat, a decoded result), its ``seq`` set to the
        spool's seq, for publishing; ``qos`` / ``expiry_s`` default to the publisher's."""
        mode, compression = self.mode, self.compression
        return self._append(
            lambda seq: encode_line(
                {**line, "seq": seq}, mode=mode, compression=compression, float32_heads=float32_heads
            ),
            qos,
            expiry_s,
        )

    def publish_frame(
        self,
        result: FrameResult,
        *,
        qos: int | None = None,
        expiry_s: float | None = None,
        float32_heads: Collection[str] = (),
    ) -> SpooledMessage:
        """Append one frame's typed results, encoded straight from the arrays (no JSON form in
        between: heads in ``float32_heads`` keep full float32 precision), ``seq`` the spool's."""
        device, epoch, mode, compression = self.device_id, self.epoch, self.mode, self.compression
        if epoch is None:
            raise TransportError("publish_frame needs the publisher's epoch (MqttPublisher(..., epoch=...))")
        return self._append(
            lambda seq: encode_frame(
                result, device=device, epoch=epoch, seq=seq, mode=mode, compression=compression,
                float32_heads=float32_heads,
            ),
            qos,
            expiry_s,
        )  # fmt: skip

    def _append(self, encode: Callable[[int], bytes], qos: int | None, expiry_s: float | None) -> SpooledMessage:
        if self._closed:
            raise TransportError("the MQTT publisher is closed")
        msg = self.spool.append_with(
            self.results_topic,
            encode,
            qos=self.config.qos if qos is None else qos,
            expiry_s=self.expiry_s if expiry_s is None else expiry_s,
        )
        if not msg.stored:  # a full disk: published live by the sender, or lost (counted)
            self._sender.add_unstored(msg)
        elif self._sender.idle:  # otherwise the sender looks when the spool's batch is committed
            self._wake.set()
        return msg

    def status_fields(self) -> dict[str, Any]:
        """The counters of the status message: the caller's (:meth:`publish_status`) and the
        spool's and the publisher's own."""
        fields: dict[str, Any] = {**self._identity(), "ts": round(time.time(), 3), **self._status_fields}
        extra = self.status_extra
        if extra is not None:
            try:
                fields.update(extra())
            except Exception:
                logger.exception("MQTT status_extra failed")
        with contextlib.suppress(Exception):
            stats = self.spool.stats()
            fields["spool"] = {
                "depth": stats.depth,
                "bytes": stats.bytes,
                "dropped_overflow": stats.dropped_overflow,
                "expired": stats.expired,
                "oldest_age_s": None if stats.oldest_age_s is None else round(stats.oldest_age_s, 3),
                "disk_full": stats.disk_full,
                "unspooled": stats.unspooled,
                "lost": stats.lost,
            }
        fields["mqtt"] = {
            "published": self.published,
            "acked": self.acked,
            "reconnects": self.reconnects,
            "rejected": self.rejected,
            "unsendable": self.unsendable.count,
            "published_unspooled": self.published_unspooled,
        }
        return fields

    def _status(self, state: str) -> bytes:
        return status_payload(state, self.status_fields())

    def publish_status(self, fields: Mapping[str, Any] | None = None) -> bool:
        """Publish the retained ``online`` status with ``fields`` (e.g. fps, dropped frames)
        added to the counters; they are kept for the next birth message too. False when not
        connected (nothing is queued: a status is only worth its latest value)."""
        if fields is not None:
            self._status_fields = dict(fields)
        if self._closed or not self._connected.is_set():
            return False
        info = self._client.publish(
            self.status_topic, self._status(ONLINE), qos=1, retain=True, properties=self._status_properties()
        )
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def publish_reply(self, reply: Mapping[str, Any]) -> bool:
        """Publish a command's outcome as JSON on ``reply_topic`` (QoS 1, not retained; paho
        queues it while disconnected). False when the publisher is closed or paho refused it."""
        if self._closed:
            return False
        props = self._status_properties()
        payload = json.dumps(reply, separators=(",", ":"), ensure_ascii=False, default=str).encode()
        info = self._client.publish(self.reply_topic, payload, qos=1, retain=False, properties=props)
        return info.rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN)

    def close(self, timeout: float = 5.0) -> None:
        """Flush the spool, wait (at most ``timeout``, and only while connected) until it is
        drained and acked, publish the retained ``offline`` status and disconnect. What is not
        acked stays in the spool."""
        if self._closed:
            return
        deadline = time.monotonic() + timeout
        with contextlib.suppress(Exception):
            self.spool.flush()
        if self._thread is not None:
            while time.monotonic() < deadline:
                if self.spool.stats().depth == 0 and not self._sender.outstanding:
                    break
                if not self._connected.is_set() and self.last_error is not None:
                    break  # the broker is away: what is left stays in the spool for the next start
                self._wake.set()
                time.sleep(0.02)
        self._closed = True
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(max(1.0, deadline - time.monotonic()))
            with contextlib.suppress(Exception):
                self._sender.apply_acks(force=True)
            with contextlib.suppress(Exception):
                self._sender.lose_unspooled()  # never published: counted lost
        if self._connected.is_set():
            info = self._client.publish(
                self.status_topic, self._status(OFFLINE), qos=1, retain=True, properties=self._status_properties()
            )
            with contextlib.suppress(Exception):
                info.wait_for_publish(max(0.5, min(2.0, deadline - time.monotonic())))
        with contextlib.suppress(Exception):
            self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()

    def __enter__(self) -> MqttPublisher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["MqttPublisher"]
