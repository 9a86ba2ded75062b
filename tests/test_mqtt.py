"""MqttPublisher against a real mosquitto, real paho subscribers and a real SQLite spool."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_runtime.codec import CONTENT_TYPE, decode_payload
from edge_runtime.delivery.mqtt.publisher import MqttPublisher
from edge_runtime.delivery.mqtt.sender import RepeatedErrors
from edge_runtime.delivery.mqtt.settings import MqttConfig
from edge_runtime.delivery.mqtt.status import parse_status
from edge_runtime.delivery.spool import Spool, SpooledMessage
from edge_runtime.delivery.spool_file import SpoolOptions
from edge_runtime.errors import ConfigError
from tests.broker import HOST, MosquittoBroker, find_mosquitto, wait_for

needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
DEVICE = "cam1"
ROOT = Path(__file__).resolve().parent.parent


def line(i: int) -> dict[str, Any]:
    return {
        "device": DEVICE,
        "epoch": "ep1",
        "seq": -1,  # replaced by the spool's seq
        "frame_id": i,
        "ts": 1000.0 + i,
        "results": {},
        "latency_ms": {"total": 1.0},
    }


class Subscriber:
    """A paho v5 subscriber that records decoded payloads; resubscribes on every connect.

    ``persistent=True``: clean_start False with a session expiry, so a broker with persistence
    keeps queuing for it while it (or the broker) is away."""

    def __init__(
        self, port: int, topics: list[str], *, persistent: bool = False, name: str = "sub", qos: int = 1
    ) -> None:
        self.topics = topics
        self.qos = qos
        self.messages: list[paho.MQTTMessage] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=MQTTProtocolVersion.MQTTv5)
        self.client.reconnect_delay_set(0.1, 0.2)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        props = None
        if persistent:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 600
        self.client.connect_async(HOST, port, 10, clean_start=not persistent, properties=props)
        self.client.loop_start()
        assert self.subscribed.wait(10), "the subscriber did not subscribe"

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        client.subscribe([(t, self.qos) for t in self.topics])

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append(msg)

    def on(self, topic: str) -> list[paho.MQTTMessage]:
        with self.lock:
            return [m for m in self.messages if m.topic == topic]

    def seqs(self, topic: str = f"edge/{DEVICE}/results") -> list[int]:
        return [decode_payload(bytes(m.payload))["seq"] for m in self.on(topic)]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        return wait_for(predicate, timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    with Spool.open(tmp_path / "spool.sqlite", SpoolOptions()) as s:
        yield s


def state(msg: paho.MQTTMessage) -> str:
    """The ``state`` of a status message (a JSON object)."""
    return str(parse_status(bytes(msg.payload))["state"])


def config(port: int, **kw: Any) -> MqttConfig:
    return MqttConfig.from_url(f"mqtt://{HOST}:{port}", client_id="pub-" + DEVICE, **kw)


# -- config ---------------------------------------------------------------------------------------


def test_from_url() -> None:
    c = MqttConfig.from_url("mqtts://user:p%40ss@broker.local?client_id=x&qos=0")
    assert (c.host, c.port, c.username, c.password, c.uses_tls, c.client_id, c.qos) == (
        "broker.local", 8883, "user", "p@ss", True, "x", 0,
    )  # fmt: skip
    assert MqttConfig.from_url("mqtt://h:1999").port == 1999
    assert MqttConfig.from_url("mqtt://h").port == 1883
    for bad in ("http://h", "mqtt://", "mqtt://h:99999", "mqtt://h?qos=7", "mqtt://h?bogus=1", "mqtt://h/path"):
        with pytest.raises(ConfigError, match="broker URL"):
            MqttConfig.from_url(bad)


# -- against mosquitto ---------------------------------------------------------------------------


@pytest.mark.mqtt5
def test_round_trip_200_in_order_with_birth_and_properties(broker: MosquittoBroker, spool: Spool) -> None:
    sub = Subscriber(broker.port, [f"edge/{DEVICE}/#"])
    try:
        with MqttPublisher(config(broker.port), DEVICE, spool) as pub:
            assert pub.wait_connected(10)
            for i in range(200):
                pub.publish_line(line(i))
            assert sub.wait_for(lambda: len(sub.seqs()) >= 200), sub.seqs()[-5:]
            assert sub.wait_for(lambda: spool.stats().depth == 0)
            status = sub.on(f"edge/{DEVICE}/status")
            assert status and state(status[0]) == "online"
        assert sub.seqs() == list(range(200))
        first = sub.on(f"edge/{DEVICE}/results")[0]
        assert getattr(first.properties, "ContentType", None) == CONTENT_TYPE
        assert pub.acked == 200 and pub.published == 200
        assert sub.wait_for(lambda: state(sub.on(f"edge/{DEVICE}/status")[-1]) == "offline", 5)
        final = parse_status(bytes(sub.on(f"edge/{DEVICE}/status")[-1].payload))
        assert final["device"] == DEVICE and final["spool"]["depth"] == 0
        assert final["mqtt"]["acked"] == 200 and final["mqtt"]["published"] == 200
    finally:
        sub.close()
    # the birth message is retained: a late subscriber sees the last status (offline after close)
    late = Subscriber(broker.port, [f"edge/{DEVICE}/status"], name="late")
    try:
        assert late.wait_for(lambda: bool(late.on(f"edge/{DEVICE}/status")), 5)
        msg = late.on(f"edge/{DEVICE}/status")[0]
        assert msg.retain and state(msg) == "offline"
    finally:
        late.close()


@needs_mosquitto
def test_broker_restart_mid_stream_loses_nothing(tmp_path: Path, spool: Spool) -> None:
    with MosquittoBroker(workdir=tmp_path / "mq", persistence=True) as mq:
        sub = Subscriber(mq.port, [f"edge/{DEVICE}/results"], persistent=True, name="sub-restart")
        try:
            cfg = config(mq.port, reconnect_min_s=0.2, reconnect_max_s=0.5)
            with MqttPublisher(cfg, DEVICE, spool) as pub:
                assert pub.wait_connected(10)
                for i in range(300):
                    pub.publish_line(line(i))
                    if i == 100:
                        mq.stop()
                        stopped = time.monotonic()
                    if i > 100 and mq.running is False and time.monotonic() - stopped > 2.0:
                        mq.start()
                    time.sleep(0.01)
                if not mq.running:
                    mq.start()
                assert sub.wait_for(lambda: set(sub.seqs()) >= set(range(300)), 15), sorted(
                    set(range(300)) - set(sub.seqs())
                )[:10]
                assert sub.wait_for(lambda: spool.stats().depth == 0, 10)
                assert pub.reconnects >= 1
            assert sorted(set(sub.seqs())) == list(range(300))
        finally:
            sub.close()


@needs_mosquitto
def test_broker_down_at_start(tmp_path: Path, spool: Spool) -> None:
    mq = MosquittoBroker(workdir=tmp_path / "mq", persistence=True)
    try:
        mq.start()
        sub = Subscriber(mq.port, [f"edge/{DEVICE}/results"], persistent=True, name="sub-down")
        mq.stop()  # the subscriber's session and subscription are saved
        cfg = config(mq.port, reconnect_min_s=0.2, reconnect_max_s=0.5)
        with MqttPublisher(cfg, DEVICE, spool) as pub:
            for i in range(50):
                pub.publish_line(line(i))
            time.sleep(0.5)
            assert not pub.connected and spool.stats().depth == 50
            mq.start()
            assert sub.wait_for(lambda: set(sub.seqs()) >= set(range(50)), 15), sub.seqs()
            assert sub.wait_for(lambda: spool.stats().depth == 0, 10)
        assert sorted(set(sub.seqs())) == list(range(50))
        sub.close()
    finally:
        mq.cleanup()


class FailingReads(Spool):
    """A spool whose reads fail every time: an unexpected error in every round of the sender."""

    def interleaved(self, limit: int, live_after_id: int, *, exclude: Collection[int] = ()) -> list[SpooledMessage]:
        raise RuntimeError("the spool's reads fail")


@pytest.mark.mqtt5
def test_a_sender_error_that_keeps_happening_is_logged_with_one_traceback(
    broker: MosquittoBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with (
        FailingReads.open(tmp_path / "spool.sqlite") as spool,
        MqttPublisher(config(broker.port), DEVICE, spool) as pub,
    ):
        assert pub.wait_connected(10)
        time.sleep(2.5)  # a round about every second (0.5 s after the error, 0.5 s idle): it failed 2-3 times
    failures = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in failures]  # the old sender: a traceback every round
    assert failures[0].exc_info and "the spool's reads fail" in failures[0].getMessage()


def test_repeated_errors_log_the_first_with_a_traceback_then_once_a_minute_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    errors = RepeatedErrors("MQTT sender: unexpected error")
    with caplog.at_level(logging.ERROR, logger="edge_runtime.delivery.mqtt.sender"):
        for i in range(120):  # every 0.5 s for a minute: one traceback
            errors.log(RuntimeError("spool gone"), now=100.0 + i * 0.5)
        assert len(caplog.records) == 1 and caplog.records[0].exc_info
        errors.log(RuntimeError("spool gone"), now=160.0)  # a minute after the first: one line, counted
        errors.log(RuntimeError("spool gone"), now=170.0)
        errors.log(KeyError("other"), now=170.5)  # another kind: its own traceback
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3, messages
    assert messages[1] == "MQTT sender: unexpected error again: RuntimeError: spool gone (120 times in the last 60 s)"
    assert not caplog.records[1].exc_info
    assert "KeyError: 'other'" in messages[2] and caplog.records[2].exc_info


PUBLISHER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from edge_runtime.delivery.mqtt.publisher import MqttPublisher
    from edge_runtime.delivery.mqtt.status import parse_status
    from edge_runtime.delivery.mqtt.settings import MqttConfig
    from edge_runtime.delivery.spool import Spool
    spool = Spool.open(sys.argv[2])
    pub = MqttPublisher(MqttConfig.from_url(sys.argv[1], client_id="lwt-pub"), "cam9", spool).start()
    if not pub.wait_connected(10):
        sys.exit(3)
    print("ready", flush=True)
    time.sleep(60)
    """
)


@pytest.mark.mqtt5
def test_last_will_offline_after_sigkill(broker: MosquittoBroker, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER_SCRIPT, broker.url, str(tmp_path / "lwt.sqlite")],
        stdout=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    sub = None
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == b"ready"
        sub = Subscriber(broker.port, ["edge/cam9/status"], name="lwt-sub")
        assert sub.wait_for(lambda: bool(sub.on("edge/cam9/status")), 5)
        birth = sub.on("edge/cam9/status")[0]
        assert birth.retain and state(birth) == "online"
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        assert sub.wait_for(lambda: state(sub.on("edge/cam9/status")[-1]) == "offline", 5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if sub is not None:
            sub.close()
    late = Subscriber(broker.port, ["edge/cam9/status"], name="lwt-late")
    try:
        assert late.wait_for(lambda: bool(late.on("edge/cam9/status")), 5)
        assert late.on("edge/cam9/status")[0].retain and state(late.on("edge/cam9/status")[0]) == "offline"
    finally:
        late.close()


def test_url_errors_hide_the_password_and_tls_files_come_from_the_url() -> None:
    with pytest.raises(ConfigError) as caught:
        MqttConfig.from_url("mqtt://cam:s3cret@broker:1883?qso=1")
    assert "s3cret" not in str(caught.value) and "cam:***@broker" in str(caught.value)
    assert "did you mean 'qos'" in str(caught.value)
    cfg = MqttConfig.from_url("mqtts://cam:pw@broker?tls_ca=/etc/ca.pem&tls_cert=/etc/c.pem&tls_key=/etc/c.key")
    assert (cfg.tls_ca, cfg.tls_cert, cfg.tls_key, cfg.port, cfg.uses_tls) == (
        "/etc/ca.pem",
        "/etc/c.pem",
        "/etc/c.key",
        8883,
        True,
    )
    with pytest.raises(ConfigError, match="both tls_cert and tls_key"):
        MqttConfig.from_url("mqtts://broker?tls_cert=/etc/c.pem")


# -- the client factory ---------------------------------------------------------------------------


def test_client_factory_names_the_tls_file_that_fails(tmp_path: Path) -> None:
    from edge_runtime.delivery.mqtt.client import make_client

    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    cases = [
        ("mqtts://h?tls_ca=/nonexistent.pem", "tls_ca '/nonexistent.pem': No such file or directory"),
        (f"mqtts://h?tls_ca={tmp_path}", f"tls_ca '{tmp_path}': Is a directory"),
        (f"mqtts://h?tls_ca={junk}", f"tls_ca '{junk}': cannot load it"),
        (f"mqtts://h?tls_cert={junk}&tls_key=/nonexistent.key", "tls_key '/nonexistent.key': No such file"),
        (f"mqtts://h?tls_cert={junk}&tls_key={junk}", f"tls_cert '{junk}' / tls_key '{junk}': cannot load it"),
    ]
    for url, named in cases:
        with pytest.raises(ConfigError) as caught:
            make_client(MqttConfig.from_url(url), "c1")
        assert str(caught.value).startswith("MQTT TLS setup: ") and named in str(caught.value), url
        assert "\n" not in str(caught.value)
    assert make_client(MqttConfig.from_url("mqtts://h"), "c1")._ssl  # the system's CAs


def test_client_factory_protocol_login_session_and_client_ids(spool: Spool) -> None:
    from edge_runtime.delivery.mqtt.client import make_client

    v311 = make_client(MqttConfig.from_url("mqtt://op:pw@h?protocol=3.1.1"), "c1", clean_start=False)
    assert (v311.protocol, v311.username, v311.password, v311._clean_session) == (
        MQTTProtocolVersion.MQTTv311, "op", "pw", False,
    )  # fmt: skip
    v5 = make_client(MqttConfig.from_url(f"mqtt://{HOST}:1"), "c2")  # nothing listens on port 1
    assert (v5.protocol, v5.username, v5._ssl) == (MQTTProtocolVersion.MQTTv5, None, False)
    with pytest.raises(ConnectionRefusedError):
        v5.connect_broker()
    assert isinstance(v5.last_connect_exception, ConnectionRefusedError)
    publisher = MqttPublisher(MqttConfig.from_url(f"mqtt://{HOST}:1"), DEVICE, spool)
    named = MqttPublisher(MqttConfig.from_url(f"mqtt://{HOST}:1?client_id=fixed"), DEVICE, spool)
    assert (publisher._client._client_id, named._client._client_id) == (f"edge-{DEVICE}".encode(), b"fixed")
    with pytest.raises(ConfigError, match="device id 'cam/1'"):
        MqttPublisher(MqttConfig.from_url(f"mqtt://{HOST}:1"), "cam/1", spool)
