"""Timing harness: warm-up, interleaved cases, a time budget, percentiles, JSON reports.

Cases run A B C A B C … so that drift of a noisy machine (frequency scaling, neighbours)
hits every case alike; comparisons are reported as ratios measured in the same run.
Timings use ``time.perf_counter_ns``.

Example::

    results = run_interleaved({"a": fn_a, "b": fn_b}, warmup=20, seconds=5)
    print(results["a"].p50_ms / results["b"].p50_ms)

CLI: ``edge-runtime bench build/demo_bundle --seconds 10 --out build/bench`` (see :mod:`edge_runtime.ops.bench_run`)
"""

from __future__ import annotations

import csv
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

SCHEMA = "edge-bench/1"


@dataclass(frozen=True)
class Timing:
    """Latency statistics of one case, in milliseconds."""

    n: int
    mean_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def from_ns(cls, samples: list[int]) -> Timing:
        """Statistics of raw ``perf_counter_ns`` durations."""
        ms = np.asarray(samples, dtype=np.float64) / 1e6
        p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99])
        return cls(
            n=len(samples), mean_ms=float(ms.mean()), min_ms=float(ms.min()), p50_ms=float(p50),
            p90_ms=float(p90), p95_ms=float(p95), p99_ms=float(p99), max_ms=float(ms.max()),
        )  # fmt: skip


def run_interleaved(
    cases: Mapping[str, Callable[[], Any]],
    *,
    warmup: int = 20,
    seconds: float = 10.0,
    max_rounds: int | None = None,
    min_rounds: int = 10,
    progress: Callable[[int, float], None] | None = None,
) -> dict[str, Timing]:
    """Time every case round-robin until ``seconds`` have passed (at least ``min_rounds``)."""
    for _ in range(warmup):
        for fn in cases.values():
            fn()
    samples: dict[str, list[int]] = {name: [] for name in cases}
    start = time.monotonic()
    next_report = start + 1.0
    rounds = 0
    while True:
        for name, fn in cases.items():
            t0 = time.perf_counter_ns()
            fn()
            samples[name].append(time.perf_counter_ns() - t0)
        rounds += 1
        now = time.monotonic()
        if progress is not None and now >= next_report:
            progress(rounds, now - start)
            next_report = now + 1.0
        if max_rounds is not None and rounds >= max_rounds:
            break
        if now - start >= seconds and rounds >= min_rounds:
            break
    return {name: Timing.from_ns(values) for name, values in samples.items()}


def environment(threads: int | None = None) -> dict[str, Any]:
    """Machine and library versions to store beside the numbers."""
    import onnxruntime

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "machine": platform.machine(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
        "threads": threads,
    }


def write_report(
    path: str | Path, timings: Mapping[str, Timing], ratios: Mapping[str, float], meta: Mapping[str, Any]
) -> Path:
    """Write the JSON report (schema ``edge-bench/1``)."""
    report = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **meta,
        "timings_ms": {name: asdict(t) for name, t in timings.items()},
        "ratios": dict(ratios),
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return out


def write_csv(path: str | Path, timings: Mapping[str, Timing], key: str = "case") -> Path:
    """One row per case (its name in column ``key``): n and every statistic in ms (4 decimals)."""
    fields = [key, "n", "mean_ms", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms"]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(fields)
        for name, t in timings.items():
            d = asdict(t)
            writer.writerow([name, t.n, *(f"{d[f]:.4f}" for f in fields[2:])])
    return out


def format_timings(timings: Mapping[str, Timing]) -> str:
    """A plain table of the statistics."""
    header = f"{'case':<28} {'n':>6} {'p50':>8} {'p90':>8} {'p95':>8} {'p99':>8} {'mean':>8}  (ms)"
    rows = [
        f"{name:<28} {t.n:>6} {t.p50_ms:>8.3f} {t.p90_ms:>8.3f} {t.p95_ms:>8.3f} {t.p99_ms:>8.3f} {t.mean_ms:>8.3f}"
        for name, t in timings.items()
    ]
    return "\n".join([header, *rows])
