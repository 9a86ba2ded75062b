"""The daemon's publishing policy through a real broker: QoS and expiry per head, report by
exception with heartbeats, and the status message's counters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_runtime.codec import decode_payload
from edge_runtime.config import RuntimeConfig
from edge_runtime.daemon.pipeline import Daemon
from edge_runtime.delivery.mqtt.status import parse_status
from tests.broker import HOST, BrokerProcess
from tests.conftest import write_npy_frames
from tests.test_mqtt import Subscriber

pytestmark = pytest.mark.mqtt5
RESULTS = "edge/cam-r/results"
STATUS = "edge/cam-r/status"


def _config(bundle: Path, source: str, tmp_path: Path, port: int, **kw: Any) -> RuntimeConfig:
    flags = {
        "bundle": str(bundle), "source": source, "state_dir": str(tmp_path / "state"),
        "device_id": "cam-r", "broker": f"mqtt://{HOST}:{port}", **kw,
    }  # fmt: skip
    return RuntimeConfig.load(flags=flags, environ={})


def test_qos_expiry_per_head_and_status_counters(broker: BrokerProcess, demo_bundle: Path, tmp_path: Path) -> None:
    frames = write_npy_frames(tmp_path / "frames", 6, 96, 128, seed=11)
    heads = {
        "shape": {"qos": 0, "expiry_s": 30},
        "box": {"qos": 1, "expiry_s": 90},
        "mask": {"qos": 2, "every_n_frames": 3},  # no expiry: messages carrying it never expire
    }
    config = _config(demo_bundle, str(frames), tmp_path, broker.port, heads=heads, status_interval_s=0.2)
    sub = Subscriber(broker.port, [RESULTS, STATUS], name="rep-sub", qos=2)
    try:
        assert Daemon(config).run(install_signals=False) == 0
        assert sub.wait_for(lambda: len(sub.on(RESULTS)) >= 6)
        assert sub.wait_for(lambda: parse_status(bytes(sub.on(STATUS)[-1].payload))["state"] == "offline")
        messages = sub.on(RESULTS)
        statuses = [parse_status(bytes(m.payload)) for m in sub.on(STATUS)]
    finally:
        sub.close()
    lines = [decode_payload(bytes(m.payload)) for m in messages]
    # MQTT keeps order only within one QoS level (a QoS 2 message reaches subscribers after its
    # PUBREL): every seq arrives once, not necessarily in order.
    assert sorted(line["seq"] for line in lines) == list(range(6))
    for message, line in zip(messages, lines, strict=True):
        expiry = getattr(message.properties, "MessageExpiryInterval", None)
        if "mask" in line["results"]:
            assert message.qos == 2 and expiry is None
        else:
            assert set(line["results"]) == {"shape", "box"}
            assert message.qos == 1 and expiry is not None and 80 <= expiry <= 90
    assert sum("mask" in line["results"] for line in lines) == 2  # frames 0 and 3
    final = statuses[-1]
    assert final["device"] == "cam-r" and final["epoch"] == lines[0]["epoch"]
    assert final["frames"] == 6 and final["results"] == 6 and final["dropped_frames"] == 0
    assert final["spool"] == {**final["spool"], "depth": 0, "dropped_overflow": 0, "expired": 0}
    assert final["mqtt"]["acked"] == 6
    assert any(s["state"] == "online" and "fps" in s for s in statuses)
    # what each graph runs as, and why (no tuning in this state directory: the device profile's)
    graphs = next(s["graphs"] for s in statuses if "graphs" in s)
    assert set(graphs) == {"trunk", "shape", "box", "mask"}
    assert graphs["trunk"]["backend"] == "onnxruntime" and graphs["trunk"]["reason"] == "device profile, not tuned"


def test_report_by_exception_sends_changes_and_heartbeats(
    broker: BrokerProcess, demo_bundle: Path, tmp_path: Path
) -> None:
    # Only the box head, with a deadband no box move can exceed: after the first frame nothing
    # changes, so the device is silent except for heartbeats every 0.3 s.
    heads = {"shape": {"enabled": False}, "mask": {"enabled": False}, "box": {"deadband": 1e6}}
    config = _config(
        demo_bundle, "synthetic", tmp_path, broker.port, heads=heads, fps=20.0, max_frames=30, rbe_heartbeat_s=0.3
    )
    sub = Subscriber(broker.port, [RESULTS], name="rbe-sub")
    try:
        daemon = Daemon(config)
        assert daemon.run(install_signals=False) == 0
        assert sub.wait_for(lambda: len(sub.on(RESULTS)) >= 1 + daemon.reporter.heartbeats)  # type: ignore[union-attr]
        lines = [decode_payload(bytes(m.payload)) for m in sub.on(RESULTS)]
    finally:
        sub.close()
    frames = [line for line in lines if line.get("kind") != "heartbeat"]
    beats = [line for line in lines if line.get("kind") == "heartbeat"]
    assert len(frames) == 1 and frames[0]["frame_id"] == 0 and set(frames[0]["results"]) == {"box"}
    assert 2 <= len(beats) <= 8, len(beats)  # ~1.5 s of frames at 20 fps / 0.3 s
    assert [line["seq"] for line in lines] == list(range(len(lines)))  # heartbeats take seqs: no gaps
    held = [beat["heads"]["box"]["held"] for beat in beats]
    assert held == sorted(held) and held[-1] >= 20  # results held back since the box was published
    assert daemon.reporter is not None and daemon.reporter.suppressed_frames == 29


def test_spool_overflow_is_counted_and_reported_in_the_status(
    broker: BrokerProcess, demo_bundle: Path, tmp_path: Path
) -> None:
    frames = write_npy_frames(tmp_path / "frames", 6, 96, 128, seed=12)
    config = _config(demo_bundle, str(frames), tmp_path, broker.port, spool_max_rows=4)
    broker.stop()  # nowhere to send: 6 results into a spool of 4 rows, the 2 oldest are dropped
    assert Daemon(config).run(install_signals=False) == 0
    broker.start()
    sub = Subscriber(broker.port, [RESULTS, STATUS], name="overflow-sub")
    try:
        assert (
            Daemon(_config(demo_bundle, str(frames), tmp_path, broker.port, max_frames=1)).run(install_signals=False)
            == 0
        )
        assert sub.wait_for(lambda: len(sub.on(RESULTS)) >= 5)
        assert sub.wait_for(lambda: parse_status(bytes(sub.on(STATUS)[-1].payload))["state"] == "offline")
        seqs = sorted(decode_payload(bytes(m.payload))["seq"] for m in sub.on(RESULTS))
        final = parse_status(bytes(sub.on(STATUS)[-1].payload))
    finally:
        sub.close()
    assert seqs == [2, 3, 4, 5, 6]  # 0 and 1 were dropped (oldest first); the seven results kept their seq
    assert final["spool"]["dropped_overflow"] == 2 and final["spool"]["depth"] == 0
