"""The daemon's counters: one object feeding the log's status line, the MQTT status message,
the heartbeat file and the Prometheus endpoint, so each number has one definition.

``fps`` is always frames processed (by the engine) per second since the start; ``results`` are
messages published; ``dropped_frames`` frames a live source dropped because inference was busy.

Example::

    counters = PipelineCounters()
    counters.frames_in += 1
    counters.add_latencies({"trunk": 2.1, "total": 3.0})
    logger.info("%s", counters.status_line(dropped=0))
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from edge_runtime.delivery.reporting import Reporter
    from edge_runtime.inference.engine import Engine
    from edge_runtime.ops.metrics import MetricsSnapshot

#: Latencies kept per stage for the percentiles (a rolling window).
STAGE_WINDOW = 256


class StageStats:
    """Rolling per-stage latencies (the last :data:`STAGE_WINDOW` frames) for the status line."""

    def __init__(self) -> None:
        self._values: dict[str, deque[float]] = {}

    def add(self, latency_ms: dict[str, float]) -> None:
        for stage, ms in latency_ms.items():
            self._values.setdefault(stage, deque(maxlen=STAGE_WINDOW)).append(ms)

    def p50(self) -> dict[str, float]:
        return {stage: float(np.median(values)) for stage, values in list(self._values.items()) if values}

    def percentiles(self) -> dict[str, dict[str, float]]:
        """Per stage ``{"p50": ..., "p95": ...}`` in ms, rounded to 3 decimals (for the MQTT status)."""
        out: dict[str, dict[str, float]] = {}
        for stage, values in list(self._values.items()):
            if values:
                p50, p95 = np.percentile(np.fromiter(values, dtype=np.float64), [50, 95])
                out[stage] = {"p50": round(float(p50), 3), "p95": round(float(p95), 3)}
        return out


@dataclass
class PipelineCounters:
    """What the pipeline did since it started. The threads update the integers (each is
    written by one thread only); the readers take a consistent-enough snapshot."""

    frames_in: int = 0
    #: Frames the source skipped (unreadable or oversized files, corrupt video frames): counted, never fatal.
    frames_skipped: int = 0
    frames_processed: int = 0
    results_written: int = 0
    started: float = field(default_factory=time.monotonic)
    stages: StageStats = field(default_factory=StageStats)

    def add_latencies(self, latency_ms: dict[str, float]) -> None:
        """One processed frame's per-stage latencies."""
        self.stages.add(latency_ms)

    @property
    def elapsed_s(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    @property
    def fps(self) -> float:
        """Frames processed per second since the start (the one definition)."""
        return self.frames_processed / self.elapsed_s

    def status_fields(self, *, dropped: int, reporter: Reporter | None) -> dict[str, Any]:
        """The pipeline's fields of the MQTT status message (docs/protocol.md §6.1)."""
        return {
            "fps": round(self.fps, 2),
            "frames": self.frames_in,
            "dropped_frames": dropped,
            "skipped_frames": self.frames_skipped,
            "results": self.results_written,
            "suppressed_frames": 0 if reporter is None else reporter.suppressed_frames,
            "heartbeats": 0 if reporter is None else reporter.heartbeats,
            "uptime_s": round(self.elapsed_s, 1),
            "latency_ms": self.stages.percentiles(),
        }

    def status_line(self, *, dropped: int) -> str:
        """``12.5 fps, 250 frames, 3 dropped, 250 results; p50 ms: preprocess 0.4, trunk 2.1, …``."""
        p50 = ", ".join(f"{k} {v:.2f}" for k, v in self.stages.p50().items() if k != "total")
        return (
            f"{self.fps:.1f} fps, {self.frames_in} frames, {dropped} dropped, {self.frames_skipped} skipped, "
            f"{self.results_written} results; p50 ms: {p50}"
        )

    def heartbeat_fields(self, *, dropped: int) -> dict[str, Any]:
        """The counters of the heartbeat file."""
        return {
            "frames": self.frames_in,
            "results": self.results_written,
            "dropped": dropped,
            "skipped": self.frames_skipped,
        }

    def metrics_snapshot(
        self,
        *,
        engine: Engine | None,
        dropped: int,
        spool_depth: int | None,
        mqtt_connected: bool | None,
    ) -> MetricsSnapshot:
        """The counters and gauges for a metrics scrape."""
        from edge_runtime.ops.metrics import MetricsSnapshot

        return MetricsSnapshot(
            frames_in=self.frames_in,
            frames_processed=self.frames_processed,
            frames_dropped=dropped,
            frames_skipped=self.frames_skipped,
            results_published=self.results_written,
            head_runs={} if engine is None else dict(engine.stats.head_runs),
            head_skips={} if engine is None else dict(engine.stats.head_skips),
            spool_depth=spool_depth,
            mqtt_connected=mqtt_connected,
            fps=round(self.fps, 3),
        )


__all__ = ["STAGE_WINDOW", "PipelineCounters", "StageStats"]
