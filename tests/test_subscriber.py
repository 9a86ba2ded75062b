"""The subscriber against a real mosquitto: decode, de-duplicate, gaps, shared subscriptions, writers."""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge_runtime.codec import encode_line
from edge_runtime.errors import ConfigError, TransportError
from edge_runtime.mqtt import MqttConfig, MqttPublisher
from edge_runtime.spool import Spool, SpoolOptions
from edge_runtime.subscriber import (
    CSV_COLUMNS,
    CsvWriter,
    JsonLinesWriter,
    ResultStream,
    StreamTracker,
    SubscribeOptions,
    iter_results,
    run_subscribe,
)
from tests.broker import HOST, MosquittoBroker, free_port, mosquitto_broker

broker = pytest.fixture(mosquitto_broker)


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


class RawPublisher:
    """A plain paho client publishing raw payloads (QoS 1, in order)."""

    def __init__(self, port: int) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="raw-pub", protocol=MQTTProtocolVersion.MQTTv5)
        self.client.connect(HOST, port, 10)
        self.client.loop_start()

    def publish(self, payload: bytes, topic: str = "edge/cam1/results") -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def raw(broker: MosquittoBroker) -> Iterator[RawPublisher]:
    pub = RawPublisher(broker.port)
    yield pub
    pub.close()


def opts(broker: MosquittoBroker, **kw: Any) -> SubscribeOptions:
    return SubscribeOptions(broker=broker.url, **kw)


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
    st = tracker._streams[(D, E)]
    assert len(st.above) <= 10 and st.top == 39
    assert tracker.gaps() == {(D, E): [(1, 1)]}  # given up, still reported
    assert "1 missing seq: 1" in tracker.summary()


# -- against mosquitto ----------------------------------------------------------------------------


def test_connection_error_names_host_and_port() -> None:
    port = free_port()
    with pytest.raises(TransportError, match=rf"127\.0\.0\.1:{port}"):
        next(iter_results(SubscribeOptions(broker=f"mqtt://127.0.0.1:{port}"), timeout=1))


def test_fifty_results_exactly_once_in_order(broker: MosquittoBroker, raw: RawPublisher) -> None:
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


def test_iter_results_with_a_real_publisher(broker: MosquittoBroker, tmp_path: Path) -> None:
    ready, tracker = threading.Event(), StreamTracker()
    out: list[dict[str, Any]] = []

    def consume() -> None:
        out.extend(iter_results(opts(broker), max_messages=10, timeout=10, ready=ready, tracker=tracker))

    thread = threading.Thread(target=consume)
    thread.start()
    assert ready.wait(10)
    config = MqttConfig.from_url(broker.url, client_id="pub-cam1")
    with Spool.open(tmp_path / "spool.sqlite", SpoolOptions()) as spool, MqttPublisher(config, "cam1", spool) as pub:
        for i in range(10):
            pub.publish_line({**frame(0), "seq": -1, "frame_id": i})
    thread.join(15)
    assert not thread.is_alive()
    assert [line["frame_id"] for line in out] == list(range(10))
    assert len({line["seq"] for line in out}) == 10
    assert tracker.gaps() == {}


def test_malformed_payloads_are_counted_and_the_stream_goes_on(
    broker: MosquittoBroker, raw: RawPublisher, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = StreamTracker()
    good = encode_line(frame(1))
    garbage = [b"junk", b"{}", good[:-3], good[:3], b"", encode_line(frame(0))[:2] + b"\x09\x00"]
    with caplog.at_level(logging.WARNING, logger="edge_runtime.subscriber"):
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


def test_shared_subscription_splits_the_stream(broker: MosquittoBroker, raw: RawPublisher) -> None:
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
    assert json.loads(rows[1][6]) == frame(1)["results"]
    assert len(rows) == 3


def test_run_subscribe_writes_csv(broker: MosquittoBroker, raw: RawPublisher, tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    args = argparse.Namespace(broker=broker.url, topic=None, share=None, output=str(out), format="csv")
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
