"""The Prometheus endpoint of a running daemon, its config errors, and the per-stage latency
percentiles of the MQTT status message. No timing assertions."""

from __future__ import annotations

import builtins
import re
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.config import RuntimeConfig
from edge_runtime.daemon.handoff import LatestFrameSlot
from edge_runtime.daemon.pipeline import Daemon
from edge_runtime.errors import ConfigError
from edge_runtime.ops.metrics import Metrics, MetricsSnapshot
from tests.broker import BrokerProcess

pytest.importorskip("prometheus_client")

EXPECTED = (
    "edge_runtime_stage_latency_seconds_bucket",
    "edge_runtime_frames_total",
    "edge_runtime_head_runs_total",
    "edge_runtime_head_skips_total",
    "edge_runtime_results_published_total",
    "edge_runtime_fps",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(bundle: Path, tmp_path: Path, **kw: Any) -> RuntimeConfig:
    flags = {"bundle": str(bundle), "state_dir": str(tmp_path / "state"), "device_id": "cam-1", **kw}
    return RuntimeConfig.load(flags=flags, environ={})


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def _frames_in(text: str) -> float:
    match = re.search(r'^edge_runtime_frames_total\{kind="in"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_running_daemon_serves_the_expected_metrics(demo_bundle: Path, tmp_path: Path) -> None:
    port = _free_port()
    out = tmp_path / "results.jsonl"
    config = _config(
        demo_bundle, tmp_path, source="synthetic:160x120", fps=10.0, max_frames=20, output=str(out), metrics_port=port
    )
    daemon = Daemon(config)
    codes: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            codes.append(daemon.run(install_signals=False))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    scrapes: list[str] = []
    deadline = time.monotonic() + 30
    while thread.is_alive() and time.monotonic() < deadline:
        try:
            text = _scrape(port)
        except OSError:
            time.sleep(0.05)  # not listening yet
            continue
        scrapes.append(text)
        if len(scrapes) >= 2 and _frames_in(text) > _frames_in(scrapes[0]) and "stage=" in text:
            break
        time.sleep(0.2)
    thread.join(timeout=60)
    assert not errors, errors
    assert codes == [0]
    assert len(scrapes) >= 2, "the endpoint never answered while the daemon ran"
    last = scrapes[-1]
    for name in EXPECTED:
        assert name in last, name
    assert _frames_in(last) > _frames_in(scrapes[0])
    assert re.search(r'edge_runtime_stage_latency_seconds_count\{stage="total"\} [1-9]', last)
    assert re.search(r'edge_runtime_head_runs_total\{head="\w+"\} ', last)
    assert "edge_runtime_spool_depth" not in last  # no broker, no spool
    with pytest.raises(OSError):  # the endpoint stops with the daemon
        _scrape(port)


def test_port_in_use_names_host_and_port(demo_bundle: Path, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        config = _config(demo_bundle, tmp_path, source="synthetic:160x120", max_frames=2, metrics_port=port)
        with pytest.raises(ConfigError, match=rf"metrics endpoint 127\.0\.0\.1:{port}: cannot listen"):
            Daemon(config).run(install_signals=False)


def test_missing_prometheus_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("prometheus_client"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ConfigError, match=re.escape("pip install 'edge-runtime[metrics]'")):
        Metrics(MetricsSnapshot)


@pytest.mark.parametrize(
    ("environ", "flags", "expected"),
    [
        ({}, {}, (0, "127.0.0.1")),
        ({"EDGE_RUNTIME_METRICS_PORT": "9464", "EDGE_RUNTIME_METRICS_HOST": "0.0.0.0"}, {}, (9464, "0.0.0.0")),
        ({"EDGE_RUNTIME_METRICS_PORT": "9464"}, {"metrics_port": 9500}, (9500, "127.0.0.1")),
        (
            {},
            {"metrics_port": 70000},
            ConfigError("--metrics-port: metrics_port must be an integer from 0 to 65535, got 70000"),
        ),
        ({"EDGE_RUNTIME_METRICS_PORT": "x"}, {}, ConfigError("EDGE_RUNTIME_METRICS_PORT")),
    ],
)
def test_metrics_config(environ: dict[str, str], flags: dict[str, Any], expected: Any) -> None:
    base = {"bundle": "b", "source": "synthetic", **flags}
    if isinstance(expected, ConfigError):
        with pytest.raises(ConfigError, match=str(expected)):
            RuntimeConfig.load(flags=base, environ=environ)
        return
    config = RuntimeConfig.load(flags=base, environ=environ)
    assert (config.metrics_port, config.metrics_host) == expected


def test_snapshot_collector_exposes_gauges_with_a_broker() -> None:
    snapshot = MetricsSnapshot(
        frames_in=5, head_runs={"cls": 5}, head_skips={"cls": 0}, spool_depth=3, mqtt_connected=True, fps=2.5
    )
    from prometheus_client import generate_latest

    metrics = Metrics(lambda: snapshot)
    metrics.observe_latencies({"trunk": 2.0})
    metrics.observe_ack_latency(0.01)
    text = generate_latest(metrics.registry).decode()
    assert 'edge_runtime_frames_total{kind="in"} 5.0' in text
    assert "edge_runtime_spool_depth 3.0" in text
    assert "edge_runtime_mqtt_connected 1.0" in text
    assert 'edge_runtime_stage_latency_seconds_count{stage="trunk"} 1.0' in text
    assert "edge_runtime_publish_ack_latency_seconds_count 1.0" in text


def test_status_counters_carry_per_stage_percentiles(tmp_path: Path) -> None:
    config = RuntimeConfig.load(
        flags={"bundle": "b", "source": "synthetic", "state_dir": str(tmp_path / "state")}, environ={}
    )
    daemon = Daemon(config)
    assert daemon.status_counters(LatestFrameSlot(drop_old=True))["latency_ms"] == {}
    for value in range(1, 101):
        daemon.counters.add_latencies({"trunk": float(value), "total": 2.0 * value})
    latency = daemon.status_counters(LatestFrameSlot(drop_old=True))["latency_ms"]
    assert set(latency) == {"trunk", "total"}
    assert latency["trunk"] == {"p50": 50.5, "p95": 95.05}
    assert latency["total"]["p50"] <= latency["total"]["p95"]


@pytest.mark.mqtt5
def test_broker_gauges_and_ack_latency_with_a_real_broker(
    broker: BrokerProcess, demo_bundle: Path, tmp_path: Path
) -> None:
    port = _free_port()
    config = _config(
        demo_bundle, tmp_path, source="synthetic:160x120", fps=10.0, max_frames=30, metrics_port=port,
        broker=broker.url,
    )  # fmt: skip
    daemon = Daemon(config)
    thread = threading.Thread(target=lambda: daemon.run(install_signals=False), daemon=True)
    thread.start()
    seen = ""
    deadline = time.monotonic() + 30
    while thread.is_alive() and time.monotonic() < deadline:
        try:
            text = _scrape(port)
        except OSError:
            time.sleep(0.05)
            continue
        if re.search(r"^edge_runtime_publish_ack_latency_seconds_count [1-9]", text, re.M):
            seen = text
            break
        time.sleep(0.2)
    thread.join(timeout=60)
    assert seen, "no PUBACK latency was observed while the daemon published"
    assert re.search(r"^edge_runtime_mqtt_connected 1\.0$", seen, re.M)
    assert re.search(r"^edge_runtime_spool_depth \d", seen, re.M)
    assert re.search(r"^edge_runtime_results_published_total [1-9]", seen, re.M)
