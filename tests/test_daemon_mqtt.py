"""The daemon publishing over MQTT through the spool: every result arrives once, seq is
gapless and continues across restarts, and results survive a broker that is down."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.codec import decode_payload
from edge_runtime.config import RuntimeConfig
from edge_runtime.daemon.pipeline import Daemon
from edge_runtime.delivery.spool import Spool
from tests.broker import HOST, BrokerProcess
from tests.conftest import write_npy_frames
from tests.test_mqtt import Subscriber

pytestmark = pytest.mark.mqtt5  # the daemon and the subscribers speak MQTT 5
TOPIC = "edge/cam-9/results"


@pytest.fixture
def frames_dir(tmp_path: Path) -> Path:
    return write_npy_frames(tmp_path / "frames", 6, 96, 128, seed=4)


def _config(bundle: Path, frames: Path, tmp_path: Path, port: int, **kw: Any) -> RuntimeConfig:
    flags = {
        "bundle": str(bundle), "source": str(frames), "state_dir": str(tmp_path / "state"),
        "device_id": "cam-9", "broker": f"mqtt://{HOST}:{port}", **kw,
    }  # fmt: skip
    return RuntimeConfig.load(flags=flags, environ={})


def test_results_reach_the_broker_with_gapless_seq_across_restarts(
    broker: BrokerProcess, demo_bundle: Path, frames_dir: Path, tmp_path: Path
) -> None:
    subscriber = Subscriber(broker.port, [TOPIC], name="daemon-sub")
    try:
        config = _config(demo_bundle, frames_dir, tmp_path, broker.port)
        assert Daemon(config).run(install_signals=False) == 0
        assert Daemon(config).run(install_signals=False) == 0
        assert subscriber.wait_for(lambda: len(subscriber.on(TOPIC)) >= 12)
        lines = [decode_payload(bytes(m.payload)) for m in subscriber.on(TOPIC)]
    finally:
        subscriber.close()
    assert [line["seq"] for line in lines] == list(range(12))
    assert [line["frame_id"] for line in lines] == [*range(6), *range(6)]
    assert {line["device"] for line in lines} == {"cam-9"}
    assert {"shape", "box"} <= set(lines[0]["results"])
    with Spool.open(tmp_path / "state" / "spool.sqlite") as spool:
        assert spool.stats().depth == 0 and spool.next_seq == 12


def test_broker_down_results_wait_in_the_spool(
    broker: BrokerProcess, demo_bundle: Path, frames_dir: Path, tmp_path: Path
) -> None:
    broker.stop()
    port = broker.port
    config = _config(demo_bundle, frames_dir, tmp_path, port)
    started = time.monotonic()
    assert Daemon(config).run(install_signals=False) == 0  # no broker: waits its close timeout, keeps all
    assert time.monotonic() - started < 60
    with Spool.open(tmp_path / "state" / "spool.sqlite") as spool:
        assert spool.stats().depth == 6
    broker.start()
    subscriber = Subscriber(port, [TOPIC], name="late-sub")
    try:
        assert Daemon(config).run(install_signals=False) == 0
        assert subscriber.wait_for(lambda: len({*map(_seq, subscriber.on(TOPIC))}) >= 12)
        seqs = sorted({_seq(m) for m in subscriber.on(TOPIC)})
    finally:
        subscriber.close()
    assert seqs == list(range(12))


def _seq(message: Any) -> int:
    return int(decode_payload(bytes(message.payload))["seq"])


def test_daemon_to_subscribe_command(
    broker: BrokerProcess, demo_bundle: Path, frames_dir: Path, tmp_path: Path
) -> None:
    """`edge-runtime run --broker` on one side, `edge-runtime subscribe` on the other."""
    out = tmp_path / "received.jsonl"
    sub = subprocess.Popen(
        [
            sys.executable, "-m", "edge_runtime.cli", "subscribe", "--broker", f"mqtt://{HOST}:{broker.port}",
            "--topic", "edge/+/results", "--output", str(out),
        ],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        assert sub.stderr is not None
        first = ""
        while "subscribed to" not in first and time.monotonic() < deadline:
            first += sub.stderr.readline()  # printed once the broker granted the subscription
        assert "subscribed to" in first, first
        config = _config(demo_bundle, frames_dir, tmp_path, broker.port)
        assert Daemon(config).run(install_signals=False) == 0
        while time.monotonic() < deadline and len(out.read_text().splitlines()) < 6:
            time.sleep(0.05)
    finally:
        sub.send_signal(signal.SIGTERM)
        _, stderr = sub.communicate(timeout=30)
    assert sub.returncode == 0, stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["seq"] for line in lines] == list(range(6))
    assert {line["device"] for line in lines} == {"cam-9"}
    assert "6 results" in first + stderr and "Traceback" not in stderr


def test_a_float32_head_reaches_the_wire_bit_for_bit(demo_bundle: Path, frames_dir: Path, tmp_path: Path) -> None:
    """The daemon encodes the engine's typed results: a head marked ``float32`` carries the
    engine's float32 values exactly (the JSON form, which the wire used to be made from, rounds
    to 4 decimals). No broker listens, so the messages stay in the spool to be read back."""
    import msgpack
    import numpy as np

    from edge_runtime.codec.arrays import _ext_hook
    from edge_runtime.codec.envelope import HEADER_SIZE
    from edge_runtime.frames.sources import open_source
    from edge_runtime.inference.engine import Engine, EngineOptions

    config_file = tmp_path / "config.toml"
    config_file.write_text("[heads.box]\nfloat32 = true\n")
    flags = {
        "bundle": str(demo_bundle), "source": str(frames_dir), "state_dir": str(tmp_path / "state"),
        "device_id": "cam-9", "broker": f"mqtt://{HOST}:1", "precision": "fp32", "threads": 1,
    }  # fmt: skip
    assert Daemon(RuntimeConfig.load(config_file=config_file, flags=flags, environ={})).run(install_signals=False) == 0
    with Spool.open(tmp_path / "state" / "spool.sqlite") as spool:
        payloads = [m.payload for m in spool.pending(100)]
    assert len(payloads) == 6
    wire = {}
    for payload in payloads:
        body = msgpack.unpackb(payload[HEADER_SIZE:], raw=False, ext_hook=_ext_hook, strict_map_key=True)
        wire[body["f"]] = (body["r"]["box"]["v"], body["r"]["shape"]["p"])
    with Engine.from_bundle(demo_bundle, EngineOptions(precision="fp32", threads=1)) as engine:
        for frame in open_source(str(frames_dir)):
            expected = engine.infer(frame).results["box"]
            values, scores = wire[frame.frame_id]
            assert values.dtype == np.float32 and np.array_equal(values, expected.values)  # float32 kept
            assert not np.array_equal(values, np.round(expected.values, 4))  # more than the JSON form holds
            assert scores.dtype == np.float16  # a head not marked float32 travels as float16
