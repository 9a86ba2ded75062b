"""Message expiry beyond MQTT v5's Message Expiry Interval (a four-byte integer: 4294967295 s).

Refused, in one line naming the key and the value, wherever it is configured: the config's
``heads.<name>.expiry_s``, a bundle manifest's per-head default and ``edge-runtime run
--validate`` (one rule: the ``heads.<name>.expiry_s`` row of edge_runtime/settings/heads.py).
A message already in the spool with such an expiry (written with the Spool API, as an older
runtime or a bundle edited by hand could have left it) has not expired: it is sent with the
largest interval, and what follows it is delivered. A spooled message that paho can never send
is dropped, counted (status ``mqtt.unsendable``) and logged once, not retried forever; on a full
disk, where deleting it from the spool fails, it is kept out of the reads and deleted later.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge_runtime.bundle.manifest import Manifest
from edge_runtime.cli import main
from edge_runtime.config import RuntimeConfig
from edge_runtime.delivery.mqtt.outgoing import Unsendable, expiry_interval
from edge_runtime.delivery.mqtt.publisher import MqttPublisher
from edge_runtime.delivery.mqtt.settings import MqttConfig
from edge_runtime.delivery.spool import Spool
from edge_runtime.delivery.spool_file import DiskFullError, SpoolOptions
from edge_runtime.errors import BundleError, ConfigError
from edge_runtime.settings.heads import MAX_MESSAGE_EXPIRY_S, check_head_value
from tests.broker import HOST, BrokerProcess, wait_for

DEVICE = "cam1"
RESULTS = f"edge/{DEVICE}/results"
TOO_LONG = MAX_MESSAGE_EXPIRY_S + 1
LIMIT_WORDS = "must be at most 4294967295 (the largest MQTT v5 message expiry interval)"


# -- configuration: one rule, three places ---------------------------------------------------------


def _load(tmp_path: Path, head_table: str) -> RuntimeConfig:
    path = tmp_path / "config.toml"
    path.write_text(f"bundle = 'b'\nsource = 'synthetic'\n[heads.box]\n{head_table}\n")
    return RuntimeConfig.load(config_file=path, environ={})


@pytest.mark.parametrize("value", ["4294967296", "1e10", "18446744073709551616"])
def test_config_refuses_an_expiry_mqtt_cannot_carry(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, f"expiry_s = {value}")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'config.toml'}: heads.box.expiry_s {LIMIT_WORDS}, got ")
    assert len(message.splitlines()) == 1


def test_config_accepts_the_largest_interval_and_keeps_its_lower_bound(tmp_path: Path) -> None:
    assert _load(tmp_path, f"expiry_s = {MAX_MESSAGE_EXPIRY_S}").heads["box"].expiry_s == MAX_MESSAGE_EXPIRY_S
    with pytest.raises(ConfigError, match=r"heads\.box\.expiry_s must be a number >= 1, got 0"):
        _load(tmp_path, "expiry_s = 0")


def test_the_rule_is_the_settings_row() -> None:
    with pytest.raises(ConfigError) as caught:
        check_head_value("expiry_s", TOO_LONG, "box")
    assert str(caught.value) == f"heads.box.expiry_s {LIMIT_WORDS}, got {TOO_LONG}"


def _manifest_with_expiry(manifest: dict[str, Any], head: str, expiry: Any) -> dict[str, Any]:
    manifest = json.loads(json.dumps(manifest))
    manifest["heads"][head]["expiry_s"] = expiry
    return manifest


def test_bundle_manifest_refuses_it_in_the_same_words(demo_bundle: Path) -> None:
    manifest = json.loads((demo_bundle / "manifest.json").read_text())
    head = next(iter(manifest["heads"]))
    with pytest.raises(BundleError) as caught:
        Manifest.from_mapping(_manifest_with_expiry(manifest, head, TOO_LONG), "manifest.json")
    assert str(caught.value) == f"manifest.json: heads.{head}: expiry_s {LIMIT_WORDS}, got {TOO_LONG}"
    ok = Manifest.from_mapping(_manifest_with_expiry(manifest, head, MAX_MESSAGE_EXPIRY_S), "manifest.json")
    assert ok.heads[head].expiry_s == MAX_MESSAGE_EXPIRY_S


def _validate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["run", "--source", "synthetic", *args, "--validate"])
    return code, capsys.readouterr().err


def test_validate_refuses_it_in_the_config_and_in_the_bundle(
    demo_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ["--state-dir", str(tmp_path / "state")]
    config = tmp_path / "config.toml"
    config.write_text(f"[heads.box]\nexpiry_s = {TOO_LONG}\n")
    code, err = _validate(capsys, "--bundle", str(demo_bundle), "--config", str(config), *state)
    assert code == 2, err
    lines = [line for line in err.splitlines() if "error" in line]
    assert lines == [f"edge-runtime: error: {config}: heads.box.expiry_s {LIMIT_WORDS}, got {TOO_LONG}"]

    bundle = Path(shutil.copytree(demo_bundle, tmp_path / "bundle"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    (bundle / "manifest.json").write_text(json.dumps(_manifest_with_expiry(manifest, "box", TOO_LONG)))
    code, err = _validate(capsys, "--bundle", str(bundle), *state)
    assert code == 2, err
    assert f"heads.box: expiry_s {LIMIT_WORDS}, got {TOO_LONG}" in err and "Traceback" not in err

    config.write_text(f"[heads.box]\nexpiry_s = {MAX_MESSAGE_EXPIRY_S}\n")
    code, err = _validate(capsys, "--bundle", str(demo_bundle), "--config", str(config), *state)
    assert code == 0, err


# -- the sender ------------------------------------------------------------------------------------


def test_expiry_interval_is_whole_seconds_within_mqtt() -> None:
    assert expiry_interval(None) is None
    assert expiry_interval(0.2) == 1 and expiry_interval(-3.0) == 1 and expiry_interval(59.1) == 60
    assert expiry_interval(float(MAX_MESSAGE_EXPIRY_S)) == MAX_MESSAGE_EXPIRY_S
    assert expiry_interval(2.0**40) == MAX_MESSAGE_EXPIRY_S and expiry_interval(1e300) == MAX_MESSAGE_EXPIRY_S


class Receiver:
    """A paho MQTT 5 subscriber on the device's results topic, recording every message."""

    def __init__(self, port: int) -> None:
        self.messages: list[paho.MQTTMessage] = []
        self.lock = threading.Lock()
        subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="expiry-sub", protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(RESULTS, qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(HOST, port, 10)
        self.client.loop_start()
        assert subscribed.wait(10), "the subscriber did not subscribe"

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append(message)

    def payloads(self) -> list[bytes]:
        with self.lock:
            return [bytes(m.payload) for m in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def receiver(broker: BrokerProcess) -> Iterator[Receiver]:
    sub = Receiver(broker.port)
    try:
        yield sub
    finally:
        sub.close()


def _publisher(broker: BrokerProcess, spool: Spool) -> MqttPublisher:
    config = MqttConfig.from_url(f"mqtt://{HOST}:{broker.port}", client_id="pub-expiry")
    return MqttPublisher(config, DEVICE, spool, mode="json")


def _sender_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("edge_runtime.delivery.mqtt")]


@pytest.mark.mqtt5
def test_a_spooled_message_with_a_huge_expiry_is_sent_clamped_and_the_rest_follow(
    broker: BrokerProcess, receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with Spool.open(tmp_path / "spool.sqlite", SpoolOptions()) as spool:
        spool.append(RESULTS, b"before", expiry_s=60)
        spool.append(RESULTS, b"huge", expiry_s=2.0**40)  # what the config and the bundle now refuse
        spool.append(RESULTS, b"huge again", expiry_s=float(TOO_LONG))
        spool.append(RESULTS, b"after")
        spool.flush()
        with _publisher(broker, spool) as pub:
            assert wait_for(lambda: len(receiver.payloads()) >= 4, 15), receiver.payloads()
            assert wait_for(lambda: spool.stats().depth == 0, 10)
            status = pub.status_fields()["mqtt"]
    assert sorted(receiver.payloads()) == sorted([b"before", b"huge", b"huge again", b"after"])
    intervals: dict[bytes, int] = {
        bytes(m.payload): getattr(m.properties, "MessageExpiryInterval", -1) for m in receiver.messages
    }
    for name in (b"huge", b"huge again"):  # mosquitto forwards what is left of the interval
        assert intervals[name] >= MAX_MESSAGE_EXPIRY_S - 60, intervals
    assert 0 < intervals[b"before"] <= 60 and intervals[b"after"] == -1, intervals  # -1: none
    assert status["unsendable"] == 0 and status["acked"] == 4
    records = _sender_records(caplog)
    assert not [r for r in records if r.levelno >= logging.ERROR or r.exc_info], [r.getMessage() for r in records]
    clamped = [r.getMessage() for r in records if "beyond MQTT v5's largest message expiry" in r.getMessage()]
    assert len(clamped) == 1, clamped  # once, not once per message or per retry


@pytest.mark.mqtt5
def test_a_message_paho_can_never_send_is_dropped_counted_and_logged_once(
    broker: BrokerProcess, receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with Spool.open(tmp_path / "spool.sqlite", SpoolOptions()) as spool:
        spool.append(RESULTS, b"first")
        spool.append(f"edge/{DEVICE}/+", b"wildcard topic")  # the spool takes it, paho never sends it
        spool.append(RESULTS, b"second")
        spool.append(f"edge/{DEVICE}/#", b"another")
        spool.append(RESULTS, b"third")
        spool.flush()
        with _publisher(broker, spool) as pub:
            assert wait_for(lambda: len(receiver.payloads()) >= 3, 15), receiver.payloads()
            assert wait_for(lambda: spool.stats().depth == 0, 10), spool.stats()
            wait_for(lambda: False, 1.0)  # a retry loop would have logged again by now
            status = pub.status_fields()["mqtt"]
            assert pub.unsendable.count == 2
    assert sorted(receiver.payloads()) == [b"first", b"second", b"third"]
    assert status["unsendable"] == 2 and status["acked"] == 3
    records = _sender_records(caplog)
    assert not [r for r in records if r.exc_info], "a traceback was logged"
    errors = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors  # one reason (wildcards), one line
    assert "can never be sent" in errors[0] and "wildcards" in errors[0] and "mqtt.unsendable" in errors[0]


def _full_disk_acks(
    spool: Spool, monkeypatch: pytest.MonkeyPatch, failures: int = 0, seconds: float = 0.0
) -> list[int]:
    """Make ``spool.ack`` raise DiskFullError (as on a disk full even without the reserve) the
    first ``failures`` times, or for the next ``seconds``; returns ``[failures left]``."""
    real_ack, until, left = spool.ack, time.monotonic() + seconds, [failures]

    def ack(ids: Any) -> int:
        if left[0] > 0 or time.monotonic() < until:
            left[0] = max(0, left[0] - 1)
            raise DiskFullError(f"spool {spool.path}: the disk is full: the ack could not be committed")
        return real_ack(ids)

    monkeypatch.setattr(spool, "ack", ack)
    return left


def test_unsendable_keeps_a_message_it_cannot_delete_on_a_full_disk_and_deletes_it_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO)
    with Spool.open(tmp_path / "spool.sqlite", SpoolOptions()) as spool:
        msg = spool.append(f"edge/{DEVICE}/+", b"wildcard topic", durable=True)
        left = _full_disk_acks(spool, monkeypatch, failures=2)
        unsendable = Unsendable()
        unsendable.drop(spool, msg, ValueError("Publish topic cannot contain wildcards."))  # raised DiskFullError
        assert unsendable.count == 1 and unsendable.undeleted == [msg.id] and left == [1]
        unsendable.delete(spool)  # the retry is not due yet: not tried
        assert left == [1]
        unsendable.delete(spool, force=True)  # fails again: kept
        assert left == [0] and unsendable.undeleted == [msg.id] and spool.stats().depth == 1
        unsendable.delete(spool, force=True)
        assert unsendable.undeleted == [] and spool.stats().depth == 0 and unsendable.count == 1
    records = _sender_records(caplog)
    assert not [r for r in records if r.exc_info]
    full = [r.getMessage() for r in records if "delete of unsendable messages" in r.getMessage()]
    assert len(full) == 1 and "the disk is full" in full[0], full  # logged once, not per try


@pytest.mark.mqtt5
def test_an_unsendable_message_on_a_full_disk_is_dropped_once_without_a_traceback(
    broker: BrokerProcess,
    receiver: Receiver,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO)
    with Spool.open(tmp_path / "spool.sqlite", SpoolOptions()) as spool:
        spool.append(RESULTS, b"first")
        spool.append(f"edge/{DEVICE}/+", b"wildcard topic")
        spool.append(RESULTS, b"second")
        spool.flush()
        _full_disk_acks(spool, monkeypatch, seconds=1.5)  # every delete fails for a while
        with _publisher(broker, spool) as pub:
            assert wait_for(lambda: len(receiver.payloads()) >= 2, 15), receiver.payloads()
            assert wait_for(lambda: spool.stats().depth == 0, 10), spool.stats()
            status = pub.status_fields()["mqtt"]
    records = _sender_records(caplog)
    assert not [r for r in records if r.exc_info], "a traceback was logged"  # the old sender: every 0.5 s
    assert sorted(receiver.payloads()) == [b"first", b"second"]  # the failed acks did not re-publish
    assert status["unsendable"] == 1 and status["acked"] == 2 and pub.unsendable.undeleted == []
    errors = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
    assert sum("can never be sent" in e for e in errors) == 1, errors
    assert sum("delete of unsendable messages" in e for e in errors) == 1, errors
