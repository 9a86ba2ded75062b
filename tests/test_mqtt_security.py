"""MQTT over TLS with passwords (and client certificates) against a real mosquitto, refusals
named in ``MqttPublisher.last_error`` and by ``edge-runtime subscribe``, and MQTT 3.1.1.

The PKI is a throwaway CA, a server certificate for 127.0.0.1 / localhost and a client
certificate, made with ``openssl`` once per session (see ``tests/broker.py``). Tests skip, with
the reason, where mosquitto, mosquitto_passwd or openssl are missing; the plain 3.1.1 test and
the broker-fixture test also run on the amqtt fallback.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge_runtime.codec import MAGIC, decode_payload
from edge_runtime.delivery.mqtt.publisher import MqttPublisher
from edge_runtime.delivery.mqtt.settings import MqttConfig
from edge_runtime.delivery.spool import Spool
from edge_runtime.delivery.spool_file import SpoolOptions
from tests.broker import (
    HOST,
    BrokerProcess,
    MosquittoBroker,
    Pki,
    TlsFiles,
    find_mosquitto,
    find_mosquitto_passwd,
    make_test_pki,
    wait_for,
)
from tests.test_mqtt import DEVICE, line

ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD = "edge", "s3cret-pw"
RESULTS = f"edge/{DEVICE}/results"
PASSWORD_REFUSED = re.compile(r"bad user name or password|not authori[sz]ed", re.IGNORECASE)
CERTIFICATE_FAILED = re.compile(r"certificate verif", re.IGNORECASE)


class Listener:
    """A paho subscriber to the results topic (MQTT 5 or 3.1.1; TLS, password and client
    certificate when given) that keeps every message; the constructor returns once the
    subscription is granted."""

    def __init__(
        self,
        port: int,
        *,
        protocol: str = "5",
        username: str | None = None,
        password: str | None = None,
        ca: Path | None = None,
        client_cert: TlsFiles | None = None,
    ) -> None:
        self.messages: list[paho.MQTTMessage] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.connect_results: list[str] = []
        version = MQTTProtocolVersion.MQTTv5 if protocol == "5" else MQTTProtocolVersion.MQTTv311
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"listener-{uuid.uuid4().hex[:8]}", protocol=version
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca is not None:
            cert, key = (str(client_cert.cert), str(client_cert.key)) if client_cert else (None, None)
            self.client.tls_set(ca_certs=str(ca), certfile=cert, keyfile=key)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect_async(HOST, port, 10)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            self.close()
            raise AssertionError(f"the listener did not subscribe: {self.connect_results}")

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connect_results.append(str(rc))
        client.subscribe(RESULTS, 1)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append(msg)

    def results(self) -> list[paho.MQTTMessage]:
        with self.lock:
            return [m for m in self.messages if m.topic == RESULTS]

    def seqs(self) -> list[int]:
        return [decode_payload(bytes(m.payload))["seq"] for m in self.results()]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# -- fixtures ------------------------------------------------------------------------------------


def _skip(reason: str) -> None:
    print(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    missing = [
        name
        for name, found in (
            ("mosquitto", find_mosquitto()),
            ("mosquitto_passwd", find_mosquitto_passwd()),
            ("openssl", shutil.which("openssl")),
        )
        if found is None
    ]
    if missing:
        _skip(f"{' and '.join(missing)} not installed (apt-get install mosquitto openssl); skipping the TLS tests")
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def secure_mosquitto(tmp_path: Path, pki: Pki, *, require_certificate: bool = False) -> MosquittoBroker:
    """mosquitto with a TLS listener and one user; anonymous clients refused. Not started."""
    return MosquittoBroker(
        workdir=tmp_path / "mosquitto-tls",
        tls=pki.server,
        require_certificate=require_certificate,
        passwords={USER: PASSWORD, "someone-else": "other-pw"},
    )


@pytest.fixture
def tls_broker(tmp_path: Path, pki: Pki) -> Iterator[MosquittoBroker]:
    with secure_mosquitto(tmp_path, pki) as broker:
        yield broker


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    with Spool.open(tmp_path / "spool.sqlite", SpoolOptions()) as s:
        yield s


def secure_config(
    broker: BrokerProcess,
    ca: Path,
    *,
    password: str | None = PASSWORD,
    client_cert: TlsFiles | None = None,
    query: str = "",
) -> MqttConfig:
    credentials = f"{USER}:{password}@" if password is not None else ""
    files: dict[str, Any] = {"tls_ca": str(ca)}
    if client_cert is not None:
        files.update(tls_cert=str(client_cert.cert), tls_key=str(client_cert.key))
    return MqttConfig.from_url(
        f"mqtts://{credentials}{HOST}:{broker.port}{query}",
        client_id="pub-secure",
        reconnect_min_s=0.2,
        reconnect_max_s=0.5,
        **files,
    )


# -- delivery over TLS ---------------------------------------------------------------------------


@pytest.mark.parametrize("require_certificate", [False, True], ids=["password", "password+client-cert"])
def test_tls_with_password_delivers_results(tmp_path: Path, pki: Pki, spool: Spool, require_certificate: bool) -> None:
    client_cert = pki.client if require_certificate else None
    with secure_mosquitto(tmp_path, pki, require_certificate=require_certificate) as broker:
        assert broker.url.startswith("mqtts://")
        listener = Listener(broker.port, username=USER, password=PASSWORD, ca=pki.ca, client_cert=client_cert)
        try:
            config = secure_config(broker, pki.ca, client_cert=client_cert)
            with MqttPublisher(config, DEVICE, spool) as pub:
                assert pub.wait_connected(10), pub.last_error
                for i in range(30):
                    pub.publish_line(line(i))
                assert wait_for(lambda: len(listener.seqs()) >= 30), listener.seqs()
                assert wait_for(lambda: spool.stats().depth == 0)
                assert pub.last_error is None
            assert listener.seqs() == list(range(30))
            assert pub.acked == 30
        finally:
            listener.close()


def test_client_certificate_is_required(tmp_path: Path, pki: Pki, spool: Spool) -> None:
    """The right password without a client certificate gets no connection; results stay."""
    with secure_mosquitto(tmp_path, pki, require_certificate=True) as broker:
        pub = MqttPublisher(secure_config(broker, pki.ca), DEVICE, spool).start()
        try:
            for i in range(5):
                pub.publish_line(line(i))
            assert wait_for(lambda: "peer did not return a certificate" in broker.log_tail(50), 10), broker.log_tail()
            assert not pub.connected and pub.acked == 0
            assert spool.stats().depth == 5
        finally:
            pub.close(timeout=0.2)
        assert spool.stats().depth == 5


def test_missing_client_certificate_is_named_in_last_error(tmp_path: Path, pki: Pki, spool: Spool) -> None:
    with secure_mosquitto(tmp_path, pki, require_certificate=True) as broker:
        pub = MqttPublisher(secure_config(broker, pki.ca), DEVICE, spool).start()
        try:
            assert wait_for(lambda: pub.last_error is not None, 2), "last_error is still None after 2 s"
            assert f"{HOST}:{broker.port}" in str(pub.last_error)
            assert re.search(r"certificate", str(pub.last_error), re.IGNORECASE), pub.last_error
        finally:
            pub.close(timeout=0.2)


# -- refusals: the publisher names them and keeps the results ------------------------------------

# (protocol, password, what last_error must say, what mosquitto logs once per refused attempt)
REFUSALS = [
    pytest.param("5", "WRONG", PASSWORD_REFUSED, "not authorised", id="wrong-password-v5"),
    pytest.param("3.1.1", "WRONG", PASSWORD_REFUSED, "not authorised", id="wrong-password-v3.1.1"),
    pytest.param("5", None, PASSWORD_REFUSED, "not authorised", id="anonymous-v5"),
    pytest.param("5", PASSWORD, CERTIFICATE_FAILED, "unknown ca", id="wrong-ca"),
]


@pytest.mark.parametrize(("protocol", "password", "expected", "broker_logs"), REFUSALS)
def test_refused_connection_is_named_and_results_stay_in_the_spool(
    tls_broker: MosquittoBroker,
    pki: Pki,
    spool: Spool,
    protocol: str,
    password: str | None,
    expected: re.Pattern[str],
    broker_logs: str,
) -> None:
    ca = pki.other_ca if expected is CERTIFICATE_FAILED else pki.ca
    config = secure_config(tls_broker, ca, password=password, query=f"?protocol={protocol}")
    pub = MqttPublisher(config, DEVICE, spool).start()
    try:
        for i in range(5):
            pub.publish_line(line(i))
        # two refused attempts: the first one's callbacks (refusal, then disconnect) are all done
        refused = lambda: tls_broker.log_path.read_text(errors="replace").count(broker_logs)  # noqa: E731
        assert wait_for(lambda: refused() >= 2, 10), tls_broker.log_tail()
        error = str(pub.last_error)
        assert f"{HOST}:{tls_broker.port}" in error, error
        assert expected.search(error), error
        assert not pub.connected and pub.acked == 0 and pub.published == 0
        assert spool.stats().depth == 5
    finally:
        pub.close(timeout=0.2)
    assert spool.stats().depth == 5


# -- the subscribe command -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "trusted", "expected"),
    [
        pytest.param("WRONG", "ca", PASSWORD_REFUSED, id="wrong-password"),
        pytest.param(PASSWORD, "other_ca", CERTIFICATE_FAILED, id="wrong-ca"),
    ],
)
def test_subscribe_command_names_the_refusal(
    tls_broker: MosquittoBroker, pki: Pki, password: str, trusted: str, expected: re.Pattern[str]
) -> None:
    # subscribe has no CA option: the CA comes from OpenSSL's SSL_CERT_FILE (paho's default certs)
    env = {**os.environ, "SSL_CERT_FILE": str(getattr(pki, trusted)), "PYTHONPATH": str(ROOT)}
    url = f"mqtts://{USER}:{password}@{HOST}:{tls_broker.port}"
    proc = subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", "subscribe", "--broker", url],
        capture_output=True, text=True, timeout=30, cwd=ROOT, env=env,
    )  # fmt: skip
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert f"{HOST}:{tls_broker.port}" in proc.stderr, proc.stderr
    assert expected.search(proc.stderr), proc.stderr
    assert proc.stdout == ""


# -- MQTT 3.1.1 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "tls+password"])
def test_mqtt311_publisher_delivers_50_in_order(
    request: pytest.FixtureRequest, tmp_path: Path, spool: Spool, secure: bool
) -> None:
    """``?protocol=3.1.1``: no properties on the wire; the payload's magic names the codec.
    ``plain`` runs on the ``broker`` fixture (mosquitto or the amqtt fallback)."""
    if secure:
        pki: Pki = request.getfixturevalue("pki")
        broker: BrokerProcess = request.getfixturevalue("tls_broker")
        config = secure_config(broker, pki.ca, query="?protocol=3.1.1")
        listener_args: dict[str, Any] = {"username": USER, "password": PASSWORD, "ca": pki.ca}
    else:
        broker = request.getfixturevalue("broker")
        config = MqttConfig.from_url(broker.url + "?protocol=3.1.1", client_id="pub-311")
        listener_args = {}
    assert config.protocol == "3.1.1"
    listener = Listener(broker.port, protocol="3.1.1", **listener_args)
    try:
        with MqttPublisher(config, DEVICE, spool) as pub:
            assert pub.wait_connected(10), pub.last_error
            for i in range(50):
                pub.publish_line(line(i))
            assert wait_for(lambda: len(listener.results()) >= 50), len(listener.results())
            assert wait_for(lambda: spool.stats().depth == 0)
        messages = listener.results()
        assert all(m.properties is None for m in messages)
        assert all(bytes(m.payload)[:2] == MAGIC for m in messages)
        decoded = [decode_payload(bytes(m.payload)) for m in messages]
        assert [d["seq"] for d in decoded] == list(range(50))
        assert [d["frame_id"] for d in decoded] == list(range(50))
        assert {d["device"] for d in decoded} == {DEVICE}
        assert pub.acked == 50
    finally:
        listener.close()


# -- the broker fixture itself (mosquitto or amqtt) ----------------------------------------------


def test_broker_fixture_stops_restarts_and_kills(broker: BrokerProcess) -> None:
    """``stop`` and ``kill`` disconnect clients; ``start`` listens again on the same port."""
    events: list[str] = []
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="fixture-check", protocol=MQTTProtocolVersion.MQTTv311)
    client.reconnect_delay_set(0.05, 0.1)  # type: ignore[arg-type]
    client.on_connect = lambda c, u, f, rc, p: events.append(f"connect:{rc}")
    client.on_disconnect = lambda c, u, f, rc, p: events.append("disconnect")
    client.connect_async(HOST, broker.port, 10)
    client.loop_start()
    try:
        assert wait_for(lambda: events == ["connect:Success"], 10), events
        port = broker.port
        broker.stop()
        assert not broker.running
        assert wait_for(lambda: events[-1:] == ["disconnect"], 5), events
        broker.start()
        assert broker.running and broker.port == port
        assert wait_for(lambda: events.count("connect:Success") == 2, 10), events
        broker.kill()
        assert not broker.running
        assert wait_for(lambda: events.count("disconnect") >= 2, 5), events
    finally:
        client.disconnect()
        client.loop_stop()
