"""The subscriber against a real broker (the ``broker`` fixture: mosquitto, else amqtt speaking
MQTT 3.1.1 only): options from flags, environment and config files, decode, de-duplicate, gaps,
heartbeats, persistent sessions, shared subscriptions, writers, and ``edge-runtime subscribe``
as a subprocess (errors are one line, exit code 2)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge_runtime.cloud.cli import add_subscribe_arguments, run_subscribe
from edge_runtime.cloud.options import SubscribeOptions
from edge_runtime.cloud.stream import ResultStream, iter_results
from edge_runtime.cloud.tracker import StreamTracker
from edge_runtime.cloud.writers import CSV_COLUMNS, CsvWriter, JsonLinesWriter
from edge_runtime.codec import encode_heartbeat, encode_line
from edge_runtime.delivery.mqtt.publisher import MqttPublisher
from edge_runtime.delivery.mqtt.settings import MqttConfig
from edge_runtime.delivery.spool import Spool
from edge_runtime.delivery.spool_file import SpoolOptions
from edge_runtime.errors import ConfigError, TransportError
from tests.broker import HOST, BrokerProcess, MosquittoBroker, find_mosquitto, free_port, make_test_pki

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = [sys.executable, "-m", "edge_runtime.cli"]


def frame(seq: int, device: str = "cam1", epoch: str = "ep1") -> dict[str, Any]:
    return {
        "device": device,
        "epoch": epoch,
        "seq": seq,
        "frame_id": seq * 2,
        "ts": 1000.0 + seq,
        "results": {"cls": {"labels": ["cat"], "class_ids": [3], "scores": [0.5]}},
        "latency_ms": {"total": 1.5},
    }


def url_for(broker: BrokerProcess, protocol: str | None = None) -> str:
    """The broker's URL for a client speaking ``protocol`` (default: 5 where the broker can)."""
    protocol = protocol or ("5" if broker.supports("5") else "3.1.1")
    if not broker.supports(protocol):
        pytest.skip(f"{broker.name} does not speak MQTT {protocol}")
    return broker.url if protocol == "5" else f"{broker.url}?protocol=3.1.1"


def require_session_queueing(broker: BrokerProcess) -> None:
    """Skip (saying why) unless the broker queues QoS 1 messages for an offline session."""
    if not isinstance(broker, MosquittoBroker):
        reason = f"{broker.name} does not queue messages for offline persistent sessions; needs mosquitto"
        print(reason)
        pytest.skip(reason)


class RawPublisher:
    """A plain paho client publishing raw payloads (QoS 1, in order)."""

    def __init__(self, broker: BrokerProcess) -> None:
        version = MQTTProtocolVersion.MQTTv5 if broker.supports("5") else MQTTProtocolVersion.MQTTv311
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="raw-pub", protocol=version)
        self.client.connect(HOST, broker.port, 10)
        self.client.loop_start()

    def publish(self, payload: bytes, topic: str = "edge/cam1/results") -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def raw(broker: BrokerProcess) -> Iterator[RawPublisher]:
    pub = RawPublisher(broker)
    yield pub
    pub.close()


def opts(broker: BrokerProcess, **kw: Any) -> SubscribeOptions:
    return SubscribeOptions(broker=url_for(broker), **kw)


# -- options ----------------------------------------------------------------------------------


def test_options_validation() -> None:
    o = SubscribeOptions(broker="mqtt://127.0.0.1:1883", share="g")
    assert o.subscription == "$share/g/edge/+/results"
    assert SubscribeOptions(broker="mqtt://h").subscription == "edge/+/results"
    with pytest.raises(ConfigError, match=r"format 'jsnl'.*did you mean 'jsonl'"):
        SubscribeOptions(broker="mqtt://h", format="jsnl")
    with pytest.raises(ConfigError, match="broker URL"):
        SubscribeOptions(broker="http://h")
    with pytest.raises(ConfigError, match="qos"):
        SubscribeOptions(broker="mqtt://h", qos=3)
    with pytest.raises(ConfigError, match="share group"):
        SubscribeOptions(broker="mqtt://h", share="a/b")
    for bad in ("", "edge/#/x", "edge/a+/results", "$share/g/edge/+/results"):
        with pytest.raises(ConfigError, match="topic"):
            SubscribeOptions(broker="mqtt://h", topic=bad)


def test_options_default_to_a_persistent_session_under_a_derived_client_id(tmp_path: Path) -> None:
    """No client id needed for a persistent session: it is derived from the host, the output,
    the share group and the instance; a given one (flag or URL) wins; --clean-session or an
    expiry of 0 opt out (a random id per start, chosen by the stream)."""
    out = str(tmp_path / "r.jsonl")
    default = SubscribeOptions(broker="mqtt://h", output=out)
    assert default.persistent and default.session_expiry_s == 86400
    derived = default.derived_client_id("host-a")
    assert re.fullmatch(r"edge-sub-[0-9a-f]{16}", derived)
    assert default.derived_client_id("host-a") == derived  # the same on every start
    others = {
        SubscribeOptions(broker="mqtt://h", output=out).derived_client_id("host-b"),
        SubscribeOptions(broker="mqtt://h", output=out + ".2").derived_client_id("host-a"),
        SubscribeOptions(broker="mqtt://h", output=out, share="g").derived_client_id("host-a"),
        SubscribeOptions(broker="mqtt://h", output=out, instance=1).derived_client_id("host-a"),
        SubscribeOptions(broker="mqtt://h").derived_client_id("host-a"),
    }
    assert len(others) == 5 and derived not in others
    assert default.session_client_id == default.derived_client_id()
    assert SubscribeOptions(broker="mqtt://h", client_id="c1").session_client_id == "c1"
    assert SubscribeOptions(broker="mqtt://h?client_id=c2", session_expiry_s=60).session_client_id == "c2"
    for clean in (
        SubscribeOptions(broker="mqtt://h", clean_session=True),
        SubscribeOptions(broker="mqtt://h", session_expiry_s=0),
    ):
        assert not clean.persistent and clean.session_client_id is None
    assert SubscribeOptions(broker="mqtt://h", clean_session=True, client_id="c3").session_client_id == "c3"
    assert SubscribeOptions(broker="mqtt://h").fsync_every == (True, None)
    assert SubscribeOptions(broker="mqtt://h", fsync="never").fsync_every == (False, None)
    assert SubscribeOptions(broker="mqtt://h", fsync="50").fsync_every == (True, 50)
    with pytest.raises(ConfigError, match=r"fsync must be 'batch', 'never' or a whole number of messages >= 1"):
        SubscribeOptions(broker="mqtt://h", fsync="0")
    with pytest.raises(ConfigError, match="instance"):
        SubscribeOptions(broker="mqtt://h", instance=-1)
    assert SubscribeOptions(broker="mqtt://h").status_subscription == "edge/+/status"
    assert SubscribeOptions(broker="mqtt://h", topic="site/cam1/results").status_subscription == "site/cam1/status"
    assert SubscribeOptions(broker="mqtt://h", topic="edge/#").status_subscription is None
    assert SubscribeOptions(broker="mqtt://h", share="g").status_subscription is None


SUB = "EDGE_RUNTIME_SUBSCRIBE_"


@pytest.mark.parametrize(
    ("file", "env", "flags", "expected"),
    [
        pytest.param({"broker": "mqtt://f"}, {}, {}, {"broker": "mqtt://f", "topic": "edge/+/results"}, id="file"),
        pytest.param(
            {"broker": "mqtt://f", "topic": "a/+"}, {SUB + "TOPIC": "b/+"}, {}, {"topic": "b/+"}, id="env-over-file"
        ),
        pytest.param(
            {"broker": "mqtt://f"},
            {SUB + "BROKER": "mqtt://e", SUB + "FORMAT": "csv"},
            {"broker": "mqtt://flag", "format": None},
            {"broker": "mqtt://flag", "format": "csv"},
            id="flags-over-env",
        ),
        pytest.param(
            None,
            {
                SUB + "BROKER": "mqtt://e",
                SUB + "QOS": "0",
                SUB + "HEARTBEATS": "yes",
                SUB + "CLIENT_ID": "c1",
                SUB + "SESSION_EXPIRY_S": "3600",
            },
            {},
            {"qos": 0, "heartbeats": True, "client_id": "c1", "session_expiry_s": 3600},
            id="env-types",
        ),
        pytest.param(
            {"broker": "mqtt://f", "heartbeats": True, "qos": 2, "share": "g", "output": "r.csv"},
            {"EDGE_RUNTIME_MAX_FRAMES": "10", "EDGE_RUNTIME_BROKER": "mqtt://run"},  # run's settings
            {"heartbeats": False},
            {"broker": "mqtt://f", "heartbeats": False, "qos": 2, "share": "g", "output": "r.csv"},
            id="file-types-run-env-ignored",
        ),
    ],
)
def test_options_load_precedence(
    tmp_path: Path, file: dict[str, Any] | None, env: dict[str, str], flags: dict[str, Any], expected: dict[str, Any]
) -> None:
    path = None
    if file is not None:
        path = tmp_path / "subscribe.json"
        path.write_text(json.dumps(file))
    options = SubscribeOptions.load(config_file=path, flags=flags, environ=env)
    assert {key: getattr(options, key) for key in expected} == expected


@pytest.mark.parametrize(
    ("toml", "env", "flags", "message"),
    [
        pytest.param(
            'broker = "mqtt://f"\ntopc = "a"\n', {}, {},
            r"subscribe\.toml: unknown key 'topc' \(did you mean 'topic'\?\); valid keys: broker, topic",
            id="file-unknown-key",
        ),
        pytest.param(
            'broker = "mqtt://f"\nqos = "1"\n', {}, {}, r"subscribe\.toml: qos must be 0, 1 or 2, got '1'",
            id="file-wrong-type",
        ),
        pytest.param(
            'broker = "mqtt://f"\nheartbeats = 1\n', {}, {}, r"subscribe\.toml: heartbeats must be true or false",
            id="file-int-for-bool",
        ),
        pytest.param(
            'broker = "mqtt://f"\n', {SUB + "TOPICS": "a"}, {},
            r"environment variable EDGE_RUNTIME_SUBSCRIBE_TOPICS is not a subscribe setting "
            r"\(did you mean 'EDGE_RUNTIME_SUBSCRIBE_TOPIC'",
            id="env-unknown",
        ),
        pytest.param(
            'broker = "mqtt://f"\n', {SUB + "QOS": "high"}, {},
            r"EDGE_RUNTIME_SUBSCRIBE_QOS='high': expected an integer", id="env-not-an-int",
        ),
        pytest.param(
            'broker = "mqtt://f"\n', {SUB + "HEARTBEATS": "maybe"}, {},
            r"EDGE_RUNTIME_SUBSCRIBE_HEARTBEATS='maybe': expected true or false", id="env-not-a-bool",
        ),
        pytest.param(
            'broker = "mqtt://f"\n', {SUB + "FORMAT": "jsnl"}, {},
            r"EDGE_RUNTIME_SUBSCRIBE_FORMAT: format 'jsnl' is not one of jsonl, csv \(did you mean 'jsonl'",
            id="env-bad-value",
        ),
        pytest.param(
            'broker = "mqtt://f"\n', {}, {"share": "a/b"}, r"--share: share group", id="flag-bad-value",
        ),
        pytest.param(
            'topic = "a/+"\n', {}, {},
            r"no MQTT broker given: use --broker, EDGE_RUNTIME_SUBSCRIBE_BROKER or the config key 'broker'",
            id="no-broker",
        ),
        pytest.param(
            'broker = "mqtt://f"\nfsync = "sometimes"\n', {}, {},
            r"subscribe\.toml: fsync must be 'batch', 'never' or a whole number", id="fsync-bad",
        ),
        pytest.param(
            'broker = "mqtt://f"\nclient_id = "c"\n', {SUB + "SESSION_EXPIRY_S": "-1"}, {},
            r"EDGE_RUNTIME_SUBSCRIBE_SESSION_EXPIRY_S: session_expiry_s must be whole seconds", id="expiry-negative",
        ),
        pytest.param(
            'broker = "mqtt://f?client_id=c&session_expiry_s=60"\n', {}, {},
            r"session_expiry_s= is a publisher setting; for subscribe use --session-expiry", id="expiry-in-url",
        ),
    ],
)  # fmt: skip
def test_options_load_errors(
    tmp_path: Path, toml: str, env: dict[str, str], flags: dict[str, Any], message: str
) -> None:
    path = tmp_path / "subscribe.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message):
        SubscribeOptions.load(config_file=path, flags=flags, environ=env)


# -- StreamTracker ------------------------------------------------------------------------------

D, E = "cam1", "ep1"


@pytest.mark.parametrize(
    ("events", "new", "duplicates", "gaps"),
    [
        pytest.param([(D, E, s) for s in range(5)], [True] * 5, 0, {}, id="in-order"),
        pytest.param([(D, E, 0), (D, E, 1), (D, E, 1), (D, E, 0)], [True, True, False, False], 2, {}, id="duplicate"),
        pytest.param([(D, E, 0), (D, E, 3), (D, E, 6)], [True] * 3, 0, {(D, E): [(1, 2), (4, 5)]}, id="gaps"),
        pytest.param(
            [(D, E, 0), (D, E, 3), (D, E, 1), (D, E, 2), (D, E, 3), (D, E, 4)],
            [True, True, True, True, False, True],
            1,
            {},
            id="gap-then-fill",
        ),
        pytest.param(
            [(D, E, 0), (D, E, 4), (D, E, 2)], [True, True, True], 0, {(D, E): [(1, 1), (3, 3)]}, id="partial-fill"
        ),
        pytest.param(
            [(D, E, 0), ("cam2", E, 0), (D, E, 2), ("cam2", E, 1), ("cam2", E, 1)],
            [True, True, True, True, False],
            1,
            {(D, E): [(1, 1)]},
            id="two-devices",
        ),
        pytest.param(
            [(D, E, 5), (D, "ep2", 0), (D, E, 6), (D, "ep2", 0), (D, "ep2", 2)],
            [True, True, True, False, True],
            1,
            {(D, "ep2"): [(1, 1)]},
            id="two-epochs",
        ),
        pytest.param(
            [(D, E, 10), (D, E, 8), (D, E, 8), (D, E, 11)], [True, True, False, True], 1, {}, id="joined-late"
        ),
    ],
)
def test_tracker(events: list[tuple[str, str, int]], new: list[bool], duplicates: int, gaps: dict) -> None:
    tracker = StreamTracker()
    assert [tracker.observe(*ev) for ev in events] == new
    assert tracker.duplicates == duplicates
    assert tracker.gaps() == gaps


def test_tracker_shared_has_no_gap_reports_but_dedups() -> None:
    tracker = StreamTracker(gap_reports=False)
    assert [tracker.observe(D, E, s) for s in (0, 2, 4, 2)] == [True, True, True, False]
    assert tracker.gaps() == {}
    assert "gap reports off under a shared subscription" in tracker.summary()


def test_tracker_memory_is_bounded() -> None:
    tracker = StreamTracker(max_pending=10)
    tracker.observe(D, E, 0)
    for s in range(2, 40):  # seq 1 never comes
        assert tracker.observe(D, E, s)
    st = tracker._streams[(D, E, "results")]
    assert len(st.above) <= 10 and st.top == 39
    assert tracker.gaps() == {(D, E): [(1, 1)]}  # given up, still reported
    assert "1 missing seq: 1" in tracker.summary()


# -- against a broker -------------------------------------------------------------------------------


def test_connection_error_names_host_and_port() -> None:
    port = free_port()
    with pytest.raises(TransportError, match=rf"127\.0\.0\.1:{port}"):
        next(iter_results(SubscribeOptions(broker=f"mqtt://127.0.0.1:{port}"), timeout=1))


def test_fifty_results_exactly_once_in_order(broker: BrokerProcess, raw: RawPublisher) -> None:
    tracker = StreamTracker()
    with ResultStream(opts(broker), tracker) as stream:
        for seq in range(50):
            payload = encode_line(frame(seq))
            raw.publish(payload)
            if seq % 7 == 0:
                raw.publish(payload)  # an injected duplicate
        got = list(stream.lines(max_messages=50, timeout=10))
        assert list(stream.lines(timeout=0.3)) == []  # nothing more: the duplicates were dropped
    assert [line["seq"] for line in got] == list(range(50))
    assert got[3] == {**frame(3), "results": got[3]["results"]}
    assert got[3]["results"]["cls"]["labels"] == ["cat"]
    assert (tracker.results, tracker.duplicates, tracker.malformed) == (50, 8, 0)
    assert tracker.gaps() == {}


def test_iter_results_with_a_real_publisher(broker: BrokerProcess, tmp_path: Path) -> None:
    ready, tracker = threading.Event(), StreamTracker()
    out: list[dict[str, Any]] = []

    def consume() -> None:
        out.extend(iter_results(opts(broker), max_messages=10, timeout=10, ready=ready, tracker=tracker))

    thread = threading.Thread(target=consume)
    thread.start()
    assert ready.wait(10)
    config = MqttConfig.from_url(url_for(broker), client_id="pub-cam1")
    with Spool.open(tmp_path / "spool.sqlite", SpoolOptions()) as spool, MqttPublisher(config, "cam1", spool) as pub:
        # connected first: lines spooled before the connection are backlog, which the publisher
        # interleaves with live ones (Spool.interleaved), so their order on the wire would vary
        assert pub.wait_connected(10)
        for i in range(10):
            pub.publish_line({**frame(0), "seq": -1, "frame_id": i})
    thread.join(15)
    assert not thread.is_alive()
    assert [line["frame_id"] for line in out] == list(range(10))
    assert len({line["seq"] for line in out}) == 10
    assert tracker.gaps() == {}


def test_malformed_payloads_are_counted_and_the_stream_goes_on(
    broker: BrokerProcess, raw: RawPublisher, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = StreamTracker()
    good = encode_line(frame(1))
    garbage = [b"junk", b"{}", good[:-3], good[:3], b"", encode_line(frame(0))[:2] + b"\x09\x00"]
    with caplog.at_level(logging.WARNING, logger="edge_runtime.cloud.stream"):
        with ResultStream(opts(broker), tracker) as stream:
            raw.publish(encode_line(frame(0)))
            for payload in garbage:
                raw.publish(payload)
            raw.publish(good)
            raw.publish(encode_line({"kind": "heartbeat", "device": "cam1", "epoch": "ep1", "seq": 2, "ts": 1.0,
                                     "heads": {}}))  # fmt: skip
            raw.publish(encode_line(frame(3)))
            got = list(stream.lines(max_messages=3, timeout=10))
    assert [line["seq"] for line in got] == [0, 1, 3]
    assert tracker.malformed == len(garbage)
    assert tracker.heartbeats == 1
    assert tracker.gaps() == {}  # the heartbeat's seq filled 2
    warnings = [r for r in caplog.records if "malformed payload" in r.getMessage()]
    assert 1 <= len(warnings) <= 5


@pytest.mark.mqtt5
def test_shared_subscription_splits_the_stream(broker: BrokerProcess, raw: RawPublisher) -> None:
    trackers = [StreamTracker(gap_reports=False), StreamTracker(gap_reports=False)]
    streams = [ResultStream(opts(broker, share="g"), t).start() for t in trackers]
    assert all(s.tracker.gap_reports is False for s in streams)
    collected: list[list[dict[str, Any]]] = [[], []]
    stop = threading.Event()
    threads = [
        threading.Thread(target=lambda i=i: collected[i].extend(streams[i].lines(stop=stop, timeout=15)))
        for i in range(2)
    ]
    for t in threads:
        t.start()
    try:
        for seq in range(40):
            raw.publish(encode_line(frame(seq)))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(collected[0]) + len(collected[1]) < 40:
            time.sleep(0.02)
        time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        for s in streams:
            s.close()
    seqs = [line["seq"] for part in collected for line in part]
    assert sorted(seqs) == list(range(40))  # the union, each exactly once
    assert all(collected), "mosquitto should share the messages between both members"
    for tracker in trackers:
        assert tracker.gaps() == {}
        assert "gap reports off under a shared subscription" in tracker.summary()


def heartbeat(seq: int, device: str = "cam1", epoch: str = "ep1") -> bytes:
    return encode_heartbeat(device, epoch, seq, 2000.0 + seq, {"mask": {"held": True}})


@pytest.mark.parametrize("heartbeats", [False, True], ids=["heartbeats-counted", "heartbeats-written"])
def test_heartbeats_fill_the_sequence(broker: BrokerProcess, raw: RawPublisher, heartbeats: bool) -> None:
    tracker = StreamTracker()
    sent = [frame(0), heartbeat(1), heartbeat(2), frame(3), heartbeat(2), heartbeat(4), frame(5)]
    with ResultStream(opts(broker, heartbeats=heartbeats), tracker) as stream:
        for item in sent:
            raw.publish(item if isinstance(item, bytes) else encode_line(item))
        got = list(stream.lines(max_messages=6 if heartbeats else 3, timeout=10))
        assert list(stream.lines(timeout=0.3)) == []
    assert [(line["seq"], line.get("kind", "frame")) for line in got] == (
        [(0, "frame"), (1, "heartbeat"), (2, "heartbeat"), (3, "frame"), (4, "heartbeat"), (5, "frame")]
        if heartbeats
        else [(0, "frame"), (3, "frame"), (5, "frame")]
    )
    if heartbeats:
        assert got[1] == {"kind": "heartbeat", "device": "cam1", "epoch": "ep1", "seq": 1, "ts": 2001.0,
                          "heads": {"mask": {"held": True}}}  # fmt: skip
    assert (tracker.results, tracker.heartbeats, tracker.duplicates, tracker.received) == (3, 3, 1, 7)
    assert tracker.gaps() == {}  # seq 1, 2 and 4 are heartbeats: no false gaps
    assert "cam1 epoch ep1: no gaps" in tracker.summary()


@pytest.mark.parametrize(
    ("protocol", "expiry"),
    [("5", 60), ("3.1.1", 60), ("5", 0), ("3.1.1", 0)],
    ids=["v5-session", "v311-session", "v5-clean", "v311-clean"],
)
def test_persistent_session_queues_results_while_away(
    broker: BrokerProcess, raw: RawPublisher, protocol: str, expiry: int
) -> None:
    require_session_queueing(broker)
    options = SubscribeOptions(broker=url_for(broker, protocol), client_id="cloud-1", session_expiry_s=expiry)
    with ResultStream(options) as first:
        assert first.session_present is False
    for seq in range(5):  # published while the subscriber is away
        raw.publish(encode_line(frame(seq)))
    tracker = StreamTracker()
    with ResultStream(options, tracker) as again:
        assert again.session_present is (expiry > 0)
        raw.publish(encode_line(frame(5)))
        got = list(again.lines(max_messages=6 if expiry else 1, timeout=10))
        assert list(again.lines(timeout=0.3)) == []
    assert [line["seq"] for line in got] == (list(range(6)) if expiry else [5])
    assert tracker.gaps() == {}


def test_run_subscribe_writes_the_queued_results_before_it_stops(
    broker: BrokerProcess, raw: RawPublisher, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stop (SIGTERM) right after connecting: what the session handed over is still written."""
    require_session_queueing(broker)
    out = tmp_path / "r.jsonl"
    parser = argparse.ArgumentParser()
    add_subscribe_arguments(parser)
    args = parser.parse_args(
        ["--broker", url_for(broker), "--client-id", "cloud-1", "--session-expiry", "60", "--output", str(out)]
    )
    stopped = threading.Event()
    stopped.set()
    assert run_subscribe(args, stop=stopped) == 0  # makes the session; nothing to write yet
    assert out.read_text() == ""
    for seq in range(5):
        raw.publish(encode_line(frame(seq)))
    assert run_subscribe(args, stop=stopped) == 0
    assert [json.loads(line)["seq"] for line in out.read_text().splitlines()] == list(range(5))
    err = capsys.readouterr().err
    assert "(session resumed)" in err
    assert "received 5 messages: 5 results" in err


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_run_subscribe_heartbeats_flag_and_appending(
    broker: BrokerProcess, raw: RawPublisher, tmp_path: Path, fmt: str
) -> None:
    """``--heartbeats`` writes heartbeat lines; a second run appends (one CSV header)."""
    require_session_queueing(broker)
    out = tmp_path / f"r.{fmt}"
    parser = argparse.ArgumentParser()
    add_subscribe_arguments(parser)
    common = ["--broker", url_for(broker), "--client-id", "cloud-1", "--session-expiry", "60", "--output", str(out)]
    stopped = threading.Event()
    stopped.set()
    run_subscribe(parser.parse_args([*common, "--format", fmt, "--heartbeats"]), stop=stopped)
    raw.publish(encode_line(frame(0)))
    raw.publish(heartbeat(1))
    run_subscribe(parser.parse_args([*common, "--format", fmt, "--heartbeats"]), stop=stopped)
    raw.publish(heartbeat(2))
    raw.publish(encode_line(frame(3)))
    run_subscribe(parser.parse_args([*common, "--format", fmt, "--no-heartbeats"]), stop=stopped)
    if fmt == "csv":
        rows = list(csv.DictReader(out.open()))
        assert [(r["seq"], r["frame_id"]) for r in rows] == [("0", "0"), ("1", ""), ("3", "6")]
        assert json.loads(rows[1]["results"]) == {"mask": {"held": True}}
        assert out.read_text().count("device,epoch,seq") == 1
    else:
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert [(line["seq"], line.get("kind")) for line in lines] == [(0, None), (1, "heartbeat"), (3, None)]


# -- writers and the CLI function ----------------------------------------------------------------


def test_writers() -> None:
    buf = io.StringIO()
    JsonLinesWriter(buf).write(frame(1))
    assert json.loads(buf.getvalue()) == frame(1)
    assert buf.getvalue().count("\n") == 1 and ", " not in buf.getvalue()
    buf = io.StringIO()
    w = CsvWriter(buf)
    w.write(frame(1))
    w.write(frame(2))
    rows = list(csv.reader(io.StringIO(buf.getvalue())))
    assert rows[0] == list(CSV_COLUMNS)
    assert rows[1][:6] == ["cam1", "ep1", "1", "2", "1001.0", "1.5"]
    assert rows[1][6:8] == ["", ""]  # no detection head
    assert json.loads(rows[1][8]) == frame(1)["results"]
    assert len(rows) == 3


def test_csv_counts_detections_per_label() -> None:
    line = frame(1)
    line["results"] = {
        "objects": {"xyxy": [[0, 0, 1, 1]] * 3, "scores": [0.9, 0.8, 0.7], "class_ids": [0, 1, 0],
                    "labels": ["person", "car", "person"]},
        "faces": {"xyxy": [[0, 0, 1, 1]], "scores": [0.5], "class_ids": [0], "labels": ["face"],
                  "keypoint_names": ["nose"], "keypoints": [[[0.5, 0.5]]]},
        "shape": {"labels": ["square"], "class_ids": [1], "scores": [0.9]},
    }  # fmt: skip
    buf = io.StringIO()
    CsvWriter(buf).write(line)
    row = list(csv.reader(io.StringIO(buf.getvalue())))[1]
    assert row[6:8] == ["4", "person:2;car:1;face:1"]


def test_run_subscribe_writes_csv(broker: BrokerProcess, raw: RawPublisher, tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    args = argparse.Namespace(broker=url_for(broker), topic=None, share=None, output=str(out), format="csv")
    stop = threading.Event()
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(run_subscribe(args, stop=stop)))
    thread.start()
    try:
        # publish until the subscriber (subscribed at some point) has written 5 rows
        deadline, seq = time.monotonic() + 10, 0
        while time.monotonic() < deadline:
            raw.publish(encode_line(frame(seq)))
            seq += 1
            if out.exists() and out.read_text().count("\n") >= 6:
                break
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(5)
    assert codes == [0]
    rows = list(csv.DictReader(out.open()))
    assert len(rows) >= 5
    seqs = [int(r["seq"]) for r in rows]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # one row per result, in order
    assert all(json.loads(r["results"])["cls"]["labels"] == ["cat"] for r in rows)


# -- edge-runtime subscribe as a subprocess -------------------------------------------------------


def subscribe_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """``edge-runtime subscribe ARGS`` with only ``env``'s EDGE_RUNTIME_* variables; the lock and
    state of a subscriber writing to stdout go to a temporary state directory."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_RUNTIME_") and k != "STATE_DIRECTORY"}
    with tempfile.TemporaryDirectory(prefix="subscribe-state-") as state:
        return subprocess.run(
            [*RUNTIME, "subscribe", *args], cwd=ROOT, env={**base, "XDG_STATE_HOME": state, **(env or {})},
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip


def assert_one_error_line(proc: subprocess.CompletedProcess[str], pattern: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert re.fullmatch(r"edge-runtime: error: " + pattern, lines[0]), lines[0]


def need_mosquitto() -> None:
    if find_mosquitto() is None:
        reason = "mosquitto is not installed (apt-get install mosquitto): no password or TLS broker"
        print(reason)
        pytest.skip(reason)


WRONG_PASSWORD = "(Not authorized|Bad user name or password)"


@pytest.mark.parametrize(
    ("userinfo", "query", "reason"),
    [
        # mosquitto 2 answers a wrong password with "Not authorized" (other brokers: "Bad user name...")
        ("cloud:wrong@", "", rf"{WRONG_PASSWORD} \(check the user and password.*\)"),
        ("cloud:wrong@", "?protocol=3.1.1", rf"{WRONG_PASSWORD} \(check the user and password.*\)"),
        ("", "", r"Not authorized \(check the user and password.*\)"),
    ],
    ids=["wrong-password", "wrong-password-v311", "no-credentials"],
)
def test_cli_refused_connection_is_one_line(tmp_path: Path, userinfo: str, query: str, reason: str) -> None:
    need_mosquitto()
    with MosquittoBroker(workdir=tmp_path / "mosquitto", passwords={"cloud": "s3cret"}) as secured:
        url = f"mqtt://{userinfo}{HOST}:{secured.port}{query}"
        proc = subscribe_cli("--broker", url)
        right = SubscribeOptions(broker=f"mqtt://cloud:s3cret@{HOST}:{secured.port}{query}")
        with ResultStream(right):  # the right password gets in: the broker refused only the wrong one
            pass
    assert_one_error_line(proc, rf"MQTT broker 127\.0\.0\.1:{secured.port} refused the connection: {reason}")


def test_cli_tls_failures_are_one_line(tmp_path: Path) -> None:
    need_mosquitto()
    if subprocess.run(["openssl", "version"], capture_output=True, check=False).returncode != 0:
        pytest.skip("openssl is not installed: no test certificates")
    pki = make_test_pki(tmp_path / "pki")
    with MosquittoBroker(workdir=tmp_path / "tls", tls=pki.server) as tls_broker:
        # a CA this machine does not trust
        proc = subscribe_cli("--broker", f"mqtts://{HOST}:{tls_broker.port}")
    assert_one_error_line(
        proc, rf"cannot connect to MQTT broker 127\.0\.0\.1:{tls_broker.port}: TLS certificate verification failed: .+"
    )
    with MosquittoBroker(workdir=tmp_path / "plain") as plain:  # mqtts:// to a plain listener
        proc = subscribe_cli("--broker", f"mqtts://{HOST}:{plain.port}")
    assert_one_error_line(
        proc, rf"cannot connect to MQTT broker 127\.0\.0\.1:{plain.port}: .*(TLS handshake failed|a port without TLS).*"
    )


@pytest.mark.parametrize(
    ("args", "env", "pattern"),
    [
        pytest.param(
            [], {}, r"no MQTT broker given: use --broker, EDGE_RUNTIME_SUBSCRIBE_BROKER or the config key 'broker'.*",
            id="no-broker",
        ),
        pytest.param(
            ["--broker", "mqtt://127.0.0.1:{port}"], {},
            r"cannot connect to MQTT broker 127\.0\.0\.1:{port}: connection refused.*",
            id="nothing-listens",
        ),
        pytest.param(
            [], {"EDGE_RUNTIME_SUBSCRIBE_BROKER": "mqtt://h", "EDGE_RUNTIME_SUBSCRIBE_SESION_EXPIRY_S": "60"},
            r"environment variable EDGE_RUNTIME_SUBSCRIBE_SESION_EXPIRY_S is not a subscribe setting "
            r"\(did you mean 'EDGE_RUNTIME_SUBSCRIBE_SESSION_EXPIRY_S'.*",
            id="env-typo",
        ),
        pytest.param(
            ["--broker", "mqtt://h", "--fsync", "-3"], {},
            r"--fsync: fsync must be 'batch', 'never' or a whole number of messages >= 1, got '-3'", id="fsync-bad",
        ),
        pytest.param(
            ["--config", "missing.toml"], {}, r"missing\.toml: no such file", id="missing-config",
        ),
    ],
)  # fmt: skip
def test_cli_errors_are_one_line(args: list[str], env: dict[str, str], pattern: str) -> None:
    port = free_port()
    proc = subscribe_cli(*(a.format(port=port) for a in args), env=env)
    assert_one_error_line(proc, pattern.replace("{port}", str(port)))


def test_cli_config_file_environment_and_a_resumed_session(
    broker: BrokerProcess, raw: RawPublisher, tmp_path: Path
) -> None:
    """The broker and format from --config, the session from EDGE_RUNTIME_SUBSCRIBE_*; SIGINT
    stops it (exit 0, summary); results published while it is away arrive on the next start."""
    require_session_queueing(broker)
    out = tmp_path / "results.csv"
    config = tmp_path / "subscribe.toml"
    config.write_text(f'broker = "{url_for(broker)}"\nformat = "csv"\noutput = "{out}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_RUNTIME_")}
    env |= {"EDGE_RUNTIME_SUBSCRIBE_CLIENT_ID": "cloud-1", "EDGE_RUNTIME_SUBSCRIBE_SESSION_EXPIRY_S": "60"}

    def session(publish: range) -> tuple[int, str]:
        proc = subprocess.Popen(
            [*RUNTIME, "subscribe", "--config", str(config)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stderr is not None
            first = proc.stderr.readline()
            assert first.startswith(f"subscribed to 'edge/+/results' on 127.0.0.1:{broker.port}"), first
            for seq in publish:
                raw.publish(encode_line(frame(seq)))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and out.read_text().count("\n") < publish.stop + 1:
                time.sleep(0.02)
            proc.send_signal(signal.SIGINT)
            rest = proc.communicate(timeout=10)[1]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return proc.returncode, first + rest

    code, err = session(range(3))
    assert code == 0 and "received 3 messages: 3 results" in err and "(session resumed)" not in err
    for seq in range(3, 6):  # while it is away
        raw.publish(encode_line(frame(seq)))
    code, err = session(range(6, 7))
    assert code == 0, err
    assert "(session resumed)" in err and "received 4 messages: 4 results" in err and "Traceback" not in err
    rows = list(csv.DictReader(out.open()))
    assert [int(r["seq"]) for r in rows] == list(range(7))
