"""Per-stage latency of a bundle on this machine: ``edge-runtime bench``.

Warm-up, then a run bounded by a frame count or a time budget of :meth:`Engine.infer` on
synthetic frames (rendered before timing starts) plus the result's encoding
(:func:`edge_runtime.codec.payloads.encode_frame`, msgpack). Per stage (``preprocess``, ``trunk``,
``head:<name>``, ``decode``, ``encode``, ``total`` = infer + encode) it reports n, mean, min,
p50/p90/p95/p99, max in ms, the frame rate, peak RSS, the board and device profile, versions and
threads. It writes ``NAME.json`` (the harness's ``edge-bench/1`` schema), ``NAME.csv`` (one row
per stage), ``NAME.md`` and, with matplotlib (the ``bench`` extra), ``NAME.stages.png`` (p50
per stage, stacked) and ``NAME.hist.png`` (distribution of ``total``).

Example::

    report = run_latency("build/demo_bundle", BenchOptions(seconds=5))
    print(format_report(report))
    write_outputs(report, "bench-out")

CLI: ``edge-runtime bench build/demo_bundle --seconds 10 --out bench-out``
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import ConfigError, close_matches
from edge_runtime.ops.bench import Timing, environment, format_timings, write_csv, write_report

logger = logging.getLogger(__name__)

QUICK_FRAMES = 20
QUICK_WARMUP = 3
_FRAME_POOL = 8

BENCH_EXAMPLES = """examples:
  edge-runtime bench build/demo_bundle --seconds 10 --out bench-out
  edge-runtime bench build/demo_bundle --precision int8 --threads 2 --frames 500
  edge-runtime bench build/demo_bundle --backend tflite --all-heads --out bench-out --name tflite
  edge-runtime bench build/demo_bundle --quick --out /tmp/bench

Writes NAME.json (schema edge-bench/1), NAME.csv, NAME.md and, when matplotlib is installed
(pip install 'edge-runtime[bench]'), NAME.stages.png and NAME.hist.png under --out.
Without --out only the table is printed. Stage "total" is Engine.infer plus encoding.
"""


@dataclass(frozen=True)
class BenchOptions:
    """What ``edge-runtime bench`` measures. ``frames`` (a count) wins over ``seconds`` (a
    budget); ``backend``/``precision``/``threads`` None take the tuning in ``state_dir`` (None:
    the daemon's) when there is one for the bundle here (``edge-runtime tune``), else the device
    profile's defaults; ``all_heads`` runs every head on every frame instead of the bundle's schedules."""

    backend: str | None = None
    precision: str | None = None
    threads: int | None = None
    frames: int | None = None
    seconds: float = 10.0
    warmup: int = 20
    width: int = 640
    height: int = 480
    all_heads: bool = False
    profile: str | None = None
    broker: str | None = None
    state_dir: str | None = None

    def __post_init__(self) -> None:
        from edge_runtime.bundle.specs import PRECISIONS
        from edge_runtime.inference.backends import BACKENDS

        if self.backend is not None and self.backend not in BACKENDS:
            raise ConfigError(
                f"backend {self.backend!r} is not one of {', '.join(BACKENDS)}{close_matches(self.backend, BACKENDS)}"
            )
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ConfigError(
                f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}"
                f"{close_matches(self.precision, PRECISIONS)}"
            )
        for name, value, low in (("threads", self.threads, 1), ("frames", self.frames, 1)):
            if value is not None and value < low:
                raise ConfigError(f"{name} must be >= {low}, got {value}")
        if not self.seconds > 0:
            raise ConfigError(f"seconds must be > 0, got {self.seconds}")
        if self.warmup < 0:
            raise ConfigError(f"warmup must be >= 0, got {self.warmup}")
        if self.width < 1 or self.height < 1:
            raise ConfigError(f"frame size must be positive, got {self.width}x{self.height}")
        if self.broker is not None:
            from edge_runtime.delivery.mqtt.settings import MqttConfig

            MqttConfig.from_url(self.broker)  # a ConfigError naming the URL (password hidden)


@dataclass
class LatencyReport:
    """One run's result. ``samples_ms``: stage -> every measured value (ms); ``meta``: what
    goes beside the timings in the JSON report."""

    timings: dict[str, Timing]
    samples_ms: dict[str, list[float]]
    meta: dict[str, Any] = field(default_factory=dict)


def _maxrss_mib() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for dist in ("edge-runtime", "onnxruntime", "numpy", "msgpack", "ai-edge-litert", "tflite-runtime", "matplotlib"):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            found[dist] = None
    return found


def run_latency(bundle: str | Path, options: BenchOptions | None = None) -> LatencyReport:
    """Measure ``bundle`` per stage; see the module docstring."""
    from edge_runtime.bundle.reader import load_bundle
    from edge_runtime.codec import encode_frame
    from edge_runtime.frames.synthetic import SyntheticSource
    from edge_runtime.inference.engine import Engine
    from edge_runtime.ops.device import bundle_formats, choose_profile, detect_board, engine_options_for

    options = options or BenchOptions()
    rss_before = _maxrss_mib()
    board = detect_board()
    profile, reason = choose_profile(board, options.profile)
    manifest = load_bundle(bundle, verify_hashes=False).manifest
    engine_options, notes = engine_options_for(
        profile,
        backend=options.backend,
        precision=options.precision,
        threads=options.threads,
        bundle_formats=bundle_formats(manifest),
    )
    tuning = "backend or precision given"
    engine_options = replace(engine_options, origin="as given")
    if options.backend is None and options.precision is None:
        from edge_runtime.config import default_state_dir
        from edge_runtime.tuning.record import tuning_for

        choice, tuning = tuning_for(Path(bundle), Path(options.state_dir) if options.state_dir else default_state_dir())
        if choice is not None:
            if options.threads is not None:
                choice["trunk"] = replace(choice["trunk"], threads=options.threads)
            engine_options = replace(engine_options, graphs=choice, origin=tuning)
        else:
            tuning = f"not tuned ({tuning})"
            engine_options = replace(engine_options, origin="device profile, not tuned")
    source = SyntheticSource(options.width, options.height)
    frames = [source.render(i) for i in range(_FRAME_POOL)]
    samples: dict[str, list[float]] = {}
    publisher = _open_publisher(options.broker, samples) if options.broker else None
    with Engine.from_bundle(bundle, engine_options) as engine:
        rss_loaded = _maxrss_mib()
        if options.all_heads:
            for name in engine.head_names:
                engine.scheduler.set_every_n_frames(name, 1)

        def one(i: int) -> dict[str, float]:
            result = engine.infer(frames[i % _FRAME_POOL], frame_id=i)
            t0 = time.perf_counter_ns()
            encode_frame(result, device="bench", epoch="bench", seq=i)
            latency = dict(result.latency_ms)
            latency["encode"] = (time.perf_counter_ns() - t0) / 1e6
            latency["total"] = latency["total"] + latency["encode"]
            if publisher is not None:  # into the spool (QoS 1); PUBLISH -> PUBACK is timed apart
                t1 = time.perf_counter_ns()
                publisher.publish_frame(result)  # what the daemon runs: typed results encoded in the spool
                latency["publish"] = (time.perf_counter_ns() - t1) / 1e6
            return latency

        for i in range(options.warmup):
            one(i)
        if publisher is not None:
            samples.get("publish_to_ack", []).clear()  # the warm-up's acks
        start = time.perf_counter()
        n = 0
        while True:
            for stage, ms in one(options.warmup + n).items():
                samples.setdefault(stage, []).append(ms)
            n += 1
            elapsed = time.perf_counter() - start
            if options.frames is not None:
                if n >= options.frames:
                    break
            elif elapsed >= options.seconds:
                break
        if publisher is not None:
            _drain(publisher, samples)
        stats = asdict(engine.stats)
        artifacts = {graph: f"{a.precision} {a.format}" for graph, a in engine.artifacts.items()}
        graphs = [run.describe() for run in engine.graphs]
        backend_description = engine.backend_description
    heads = [s for s in samples if s.startswith("head:")]
    order = ["preprocess", "trunk", *heads, "decode", "encode", "publish", "publish_to_ack", "total"]
    ordered = {s: samples[s] for s in order if s in samples}
    timings = {s: Timing.from_ns([round(v * 1e6) for v in values]) for s, values in ordered.items()}
    meta: dict[str, Any] = {
        "benchmark": "latency",
        "bundle": str(bundle),
        "model": f"{manifest.name} v{manifest.version}",
        "options": asdict(options),
        "engine": {
            "backend": engine_options.backend,
            "precision": engine_options.precision,
            "threads": engine_options.threads,
            "head_threads": engine_options.head_threads,
            "providers": list(engine_options.providers) if engine_options.providers else None,
            "artifacts": artifacts,
            "graphs": graphs,
            "tuning": tuning,
            "description": backend_description,
            "notes": notes,
        },
        "frames": n,
        "elapsed_s": elapsed,
        "fps": n / elapsed if elapsed > 0 else None,
        "fps_from_mean_total": 1000.0 / timings["total"].mean_ms if timings["total"].mean_ms > 0 else None,
        "frame_size": [options.width, options.height],
        "engine_stats": stats,
        "memory": {
            "peak_rss_mib_before": round(rss_before, 1),
            "peak_rss_mib_after_load": round(rss_loaded, 1),
            "peak_rss_mib_after": round(_maxrss_mib(), 1),
        },
        "environment": environment(engine_options.threads),
        "board": {"description": board.describe(), "machine": board.machine, "model": board.model},
        "profile": {"name": profile.name, "reason": reason},
        "versions": _versions(),
    }
    return LatencyReport(timings, ordered, meta)


def format_report(report: LatencyReport) -> str:
    """The terminal summary: stage table, frame rate, memory, environment."""
    m = report.meta
    eng, mem, env = m["engine"], m["memory"], m["environment"]
    chosen = f"{eng['backend']} {eng['precision']}, threads {eng['threads'] or 'auto'} (heads {eng['head_threads']})"
    if str(eng.get("tuning", "")).startswith("tuned "):
        chosen = f"{eng['tuning']}, per graph"
    lines = [
        f"{m['model']}: {chosen}, {m['frames']} frames in {m['elapsed_s']:.2f} s",
        *(f"  {line}" for line in eng.get("graphs", [])),
        format_timings(report.timings),
        f"fps: {m['fps']:.1f} measured (loop), {m['fps_from_mean_total']:.1f} from mean total",
        f"peak RSS: {mem['peak_rss_mib_before']} MiB before load, {mem['peak_rss_mib_after_load']} after load, "
        f"{mem['peak_rss_mib_after']} after the run",
        f"machine: {env['cpu']} ({env['machine']}, {env['cores']} cores); board {m['board']['description']}; "
        f"profile {m['profile']['name']}",
    ]
    return "\n".join(lines)


def _write_markdown(path: Path, report: LatencyReport, charts: list[Path]) -> Path:
    m = report.meta
    eng, mem, env = m["engine"], m["memory"], m["environment"]
    lines = [
        f"# Latency: {m['model']}",
        "",
        f"- backend {eng['backend']}, precision {eng['precision']}, threads {eng['threads'] or 'auto'} "
        f"(heads {eng['head_threads']}); artifacts: {', '.join(f'{g} {a}' for g, a in eng['artifacts'].items())}",
        f"- {m['frames']} frames ({m['frame_size'][0]}x{m['frame_size'][1]} synthetic) in {m['elapsed_s']:.2f} s "
        f"after {m['options']['warmup']} warm-up frames; "
        f"{'every head on every frame' if m['options']['all_heads'] else 'heads as the bundle schedules them'}",
        f"- fps: **{m['fps']:.1f}** measured, {m['fps_from_mean_total']:.1f} from mean total",
        f"- peak RSS: {mem['peak_rss_mib_before']} MiB before load, {mem['peak_rss_mib_after_load']} after load, "
        f"{mem['peak_rss_mib_after']} after the run",
        f"- machine: {env['cpu']} ({env['machine']}, {env['cores']} cores), {env['system']}, "
        f"Python {env['python']}, onnxruntime {env['onnxruntime']}, numpy {env['numpy']}",
        f"- board: {m['board']['description']}; profile {m['profile']['name']} ({m['profile']['reason']})",
        "",
        "| stage | n | p50 | p90 | p95 | p99 | mean (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for stage, t in report.timings.items():
        lines.append(
            f"| {stage} | {t.n} | {t.p50_ms:.3f} | {t.p90_ms:.3f} | {t.p95_ms:.3f} | {t.p99_ms:.3f} | {t.mean_ms:.3f} |"
        )
    lines += [
        "",
        "`total` = `Engine.infer` (preprocess, trunk, heads, decode) + `encode` (msgpack). A head with a"
        " smaller n than `total` is scheduled (not run on every frame): its p50 is per run, not per frame.",
    ]
    if charts:
        lines += ["", *(f"![{c.stem}]({c.name})" for c in charts)]
    else:
        lines += ["", "Charts skipped: matplotlib is not installed (pip install 'edge-runtime[bench]')."]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _write_charts(out: Path, name: str, report: LatencyReport) -> list[Path]:
    """PNG charts, or [] when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    title = f"{report.meta['model']} ({report.meta['engine']['backend']} {report.meta['engine']['precision']})"
    stages = [s for s in report.timings if s != "total"]
    fig, ax = plt.subplots(figsize=(8, 2.6))
    left = 0.0
    colors = plt.get_cmap("tab10")
    for i, stage in enumerate(stages):
        width = report.timings[stage].p50_ms
        ax.barh(["p50"], [width], left=left, label=f"{stage} {width:.3f}", color=colors(i % 10))
        left += width
    ax.barh(["total p50"], [report.timings["total"].p50_ms], color="grey")
    ax.set_xlabel("ms")
    ax.set_title(f"Per-stage p50, stacked: {title}", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=4, frameon=False)
    fig.tight_layout()
    stacked = out / f"{name}.stages.png"
    fig.savefig(stacked, dpi=80)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3))
    total = np.asarray(report.samples_ms["total"])
    ax.hist(total, bins=min(50, max(5, len(total) // 10)), color="tab:blue")
    for q, style in (("p50_ms", "-"), ("p99_ms", "--")):
        ax.axvline(getattr(report.timings["total"], q), color="black", linestyle=style, label=q[:-3])
    ax.set_xlabel("total latency (ms)")
    ax.set_ylabel("frames")
    ax.set_title(f"Latency distribution: {title}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    hist = out / f"{name}.hist.png"
    fig.savefig(hist, dpi=80)
    plt.close(fig)
    return [stacked, hist]


def write_outputs(report: LatencyReport, out: str | Path, name: str = "latency") -> list[Path]:
    """Write NAME.json, NAME.csv, NAME.md and (with matplotlib) the PNG charts; returns the paths."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    charts = _write_charts(folder, name, report)
    report.meta["charts"] = [c.name for c in charts]
    paths = [write_report(folder / f"{name}.json", report.timings, {}, report.meta)]
    paths.append(write_csv(folder / f"{name}.csv", report.timings, key="stage"))
    paths.append(_write_markdown(folder / f"{name}.md", report, charts))
    return [*paths, *charts]


def _open_publisher(url: str, samples: dict[str, list[float]]) -> Any:
    """An MQTT publisher with a throw-away spool whose PUBLISH -> PUBACK times go to
    ``samples["publish_to_ack"]`` (ms)."""
    import tempfile

    from edge_runtime.delivery.mqtt.publisher import MqttPublisher
    from edge_runtime.delivery.mqtt.settings import MqttConfig
    from edge_runtime.delivery.spool import Spool
    from edge_runtime.errors import TransportError

    folder = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    spool = Spool.open(folder / "spool.sqlite")
    publisher = MqttPublisher(MqttConfig.from_url(url), "bench", spool, epoch="bench")
    acks = samples.setdefault("publish_to_ack", [])
    publisher.on_ack_latency = lambda seconds: acks.append(seconds * 1000.0)
    publisher.start()
    deadline = time.monotonic() + 10
    while not publisher.wait_connected(0.05) and publisher.last_error is None and time.monotonic() < deadline:
        pass  # a refused connection says so at once; a silent host takes the 10 s
    if not publisher.connected:
        reason = publisher.last_error or "no connection within 10 s"
        publisher.close(timeout=0.5)
        spool.close()
        raise TransportError(f"bench --broker: {reason}")
    return publisher


def _drain(publisher: Any, samples: dict[str, list[float]], timeout: float = 30.0) -> None:
    """Wait until every result was acknowledged, then close (the spool is thrown away)."""
    import shutil

    deadline = time.monotonic() + timeout
    publisher.spool.flush()
    while publisher.spool.stats().depth and time.monotonic() < deadline:
        time.sleep(0.01)
    publisher.close(timeout=2.0)
    folder = publisher.spool.path.parent
    publisher.spool.close()
    shutil.rmtree(folder, ignore_errors=True)
    if not samples.get("publish_to_ack"):
        samples.pop("publish_to_ack", None)


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``edge-runtime bench`` (also used by ``benchmarks/latency.py``)."""
    parser.add_argument("bundle", metavar="BUNDLE_DIR")
    parser.add_argument("--backend", help="onnxruntime or tflite (default: the device profile's)")
    parser.add_argument("--precision", help="fp32, fp16 or int8: a preference (default: the device profile's)")
    parser.add_argument("--threads", type=int, help="trunk threads (default: the device profile's)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--frames", type=int, metavar="N", help="measure N frames")
    budget.add_argument("--seconds", type=float, metavar="S", help="measure for S seconds (default: 10)")
    parser.add_argument("--warmup", type=int, metavar="N", help="warm-up frames (default: 20)")
    parser.add_argument("--all-heads", action="store_true", help="run every head on every frame (ignore schedules)")
    parser.add_argument("--size", metavar="WxH", default="640x480", help="synthetic frame size (default: 640x480)")
    parser.add_argument("--profile", metavar="NAME", help="device profile instead of the detected one")
    parser.add_argument(
        "--state-dir", metavar="DIR", help="where edge-runtime tune kept its choice (default: the daemon's)"
    )
    parser.add_argument(
        "--broker",
        metavar="URL",
        help="also publish every result (QoS 1, through a spool) and time publish and PUBLISH -> PUBACK",
    )
    parser.add_argument("--out", metavar="DIR", help="write JSON, CSV, markdown and PNG charts here")
    parser.add_argument("--name", default="latency", help="file name stem of the outputs (default: latency)")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_WARMUP} warm-up and {QUICK_FRAMES} frames (tests, smoke checks)"
    )


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    """BenchOptions from parsed :func:`add_bench_arguments` arguments."""
    try:
        width, height = (int(v) for v in str(args.size).lower().split("x"))
    except ValueError as exc:
        raise ConfigError(f"--size {args.size!r}: expected WIDTHxHEIGHT, e.g. 640x480") from exc
    frames = args.frames
    warmup = args.warmup
    if args.quick:
        frames = frames if frames is not None else (None if args.seconds is not None else QUICK_FRAMES)
        warmup = warmup if warmup is not None else QUICK_WARMUP
    return BenchOptions(
        backend=args.backend,
        precision=args.precision,
        threads=args.threads,
        frames=frames,
        seconds=args.seconds if args.seconds is not None else 10.0,
        warmup=warmup if warmup is not None else 20,
        width=width,
        height=height,
        all_heads=args.all_heads,
        profile=args.profile,
        broker=args.broker,
        state_dir=args.state_dir,
    )


def run_bench(args: argparse.Namespace) -> int:
    """``edge-runtime bench``: measure, print the table, write the files."""
    options = options_from_args(args)
    report = run_latency(args.bundle, options)
    print(format_report(report))
    if args.out:
        paths = write_outputs(report, args.out, args.name)
        print("wrote: " + ", ".join(str(p) for p in paths))
        if not report.meta["charts"]:
            print("PNG charts skipped: matplotlib is not installed (pip install 'edge-runtime[bench]')")
    return 0


__all__ = [
    "BENCH_EXAMPLES",
    "BenchOptions",
    "LatencyReport",
    "add_bench_arguments",
    "format_report",
    "options_from_args",
    "run_bench",
    "run_latency",
    "write_outputs",
]
