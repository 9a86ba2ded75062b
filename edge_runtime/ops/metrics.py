"""Prometheus metrics of the daemon (the optional ``metrics`` extra: prometheus-client).

Off by default; ``metrics_port`` (config key, ``EDGE_RUNTIME_METRICS_PORT``, ``--metrics-port``)
turns it on, bound to ``metrics_host`` (default ``127.0.0.1``: reach it through an SSH tunnel or
set ``0.0.0.0`` deliberately). Each :class:`Metrics` has its own ``CollectorRegistry``, so
several daemons in one process (the tests) do not collide.

Per-frame stage latencies are histograms observed as frames pass; counters and gauges (frames,
head runs/skips, results, spool depth, MQTT state, fps) are read from the daemon at scrape time
through a snapshot callback, so the pipeline pays nothing for them between scrapes.

Metrics (all prefixed ``edge_runtime_``): ``stage_latency_seconds{stage}`` (histogram),
``frames_total{kind="in|processed|dropped|skipped"}``, ``head_runs_total{head}``,
``head_skips_total{head}``, ``results_published_total``, ``spool_depth``, ``mqtt_connected``,
``fps``, ``publish_ack_latency_seconds`` (histogram, with a broker).

Example::

    metrics = Metrics.serve("127.0.0.1", 9464, snapshot=lambda: MetricsSnapshot(frames_in=3))
    metrics.observe_latencies({"trunk": 2.1, "total": 3.0})
    metrics.close()

CLI: ``edge-runtime run --bundle b --source synthetic --metrics-port 9464`` then
``curl http://127.0.0.1:9464/metrics``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_runtime.errors import ConfigError

logger = logging.getLogger(__name__)

PREFIX = "edge_runtime_"
INSTALL_HINT = "pip install 'edge-runtime[metrics]'"
#: Seconds; stages take from tens of microseconds (decode) to hundreds of milliseconds (a big trunk).
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@dataclass
class MetricsSnapshot:
    """The daemon's counters and gauges at one instant (read at scrape time)."""

    frames_in: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0
    frames_skipped: int = 0
    results_published: int = 0
    head_runs: Mapping[str, int] = field(default_factory=dict)
    head_skips: Mapping[str, int] = field(default_factory=dict)
    spool_depth: int | None = None
    mqtt_connected: bool | None = None
    fps: float = 0.0


def _import_prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise ConfigError(
            f"metrics_port is set but prometheus-client is not installed: {INSTALL_HINT} (or unset metrics_port)"
        ) from exc
    return prometheus_client


class _SnapshotCollector:
    """Counters and gauges built from a :class:`MetricsSnapshot` on every scrape."""

    def __init__(self, snapshot: Callable[[], MetricsSnapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        try:
            snap = self._snapshot()
        except Exception as exc:  # a scrape must never take the daemon down
            logger.debug("metrics snapshot failed: %s", exc)
            return
        frames = CounterMetricFamily(
            PREFIX + "frames", "Frames by kind: read, processed, dropped, skipped by the source", labels=["kind"]
        )
        frames.add_metric(["in"], snap.frames_in)
        frames.add_metric(["processed"], snap.frames_processed)
        frames.add_metric(["dropped"], snap.frames_dropped)
        frames.add_metric(["skipped"], snap.frames_skipped)
        yield frames
        runs = CounterMetricFamily(PREFIX + "head_runs", "Frames each head ran on", labels=["head"])
        for head, value in dict(snap.head_runs).items():
            runs.add_metric([head], value)
        yield runs
        skips = CounterMetricFamily(PREFIX + "head_skips", "Frames each head skipped (schedule)", labels=["head"])
        for head, value in dict(snap.head_skips).items():
            skips.add_metric([head], value)
        yield skips
        yield CounterMetricFamily(
            PREFIX + "results_published", "Result messages handed to the sinks", value=snap.results_published
        )
        yield GaugeMetricFamily(PREFIX + "fps", "Frames processed per second since the start", value=snap.fps)
        if snap.spool_depth is not None:
            yield GaugeMetricFamily(PREFIX + "spool_depth", "Results waiting in the spool", value=snap.spool_depth)
        if snap.mqtt_connected is not None:
            yield GaugeMetricFamily(
                PREFIX + "mqtt_connected", "1 while connected to the broker", value=int(snap.mqtt_connected)
            )


class Metrics:
    """A registry with the daemon's metrics and its HTTP endpoint. Use :meth:`serve`; ``close``."""

    def __init__(self, snapshot: Callable[[], MetricsSnapshot]) -> None:
        prometheus_client = _import_prometheus()
        self.registry = prometheus_client.CollectorRegistry()
        self._stage_latency = prometheus_client.Histogram(
            PREFIX + "stage_latency_seconds",
            "Per-frame latency of each pipeline stage",
            ["stage"],
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        self._ack_latency = prometheus_client.Histogram(
            PREFIX + "publish_ack_latency_seconds",
            "From PUBLISH to PUBACK (QoS 1) of result messages",
            registry=self.registry,
            buckets=ACK_BUCKETS,
        )
        self.registry.register(_SnapshotCollector(snapshot))
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.address: tuple[str, int] | None = None

    @classmethod
    def serve(cls, host: str, port: int, snapshot: Callable[[], MetricsSnapshot]) -> Metrics:
        """Build the metrics and serve them on ``http://host:port/metrics`` (a daemon thread)."""
        metrics = cls(snapshot)
        from prometheus_client import start_http_server

        try:
            server, thread = start_http_server(port, addr=host, registry=metrics.registry)
        except OSError as exc:
            raise ConfigError(
                f"metrics endpoint {host}:{port}: cannot listen: {exc.strerror or exc}"
                " (choose another metrics_port / --metrics-port)"
            ) from exc
        metrics._server, metrics._thread = server, thread
        metrics.address = (host, server.server_port)
        logger.info("metrics on http://%s:%d/metrics", host, server.server_port)
        return metrics

    def observe_latencies(self, latency_ms: Mapping[str, float]) -> None:
        """One frame's per-stage latencies (milliseconds, as in ``FrameResult.latency_ms``)."""
        for stage, value in latency_ms.items():
            self._stage_latency.labels(stage).observe(value / 1000.0)

    def observe_ack_latency(self, seconds: float) -> None:
        """One result message's PUBLISH → PUBACK time."""
        self._ack_latency.observe(seconds)

    def close(self) -> None:
        """Stop the endpoint (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Metrics:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
