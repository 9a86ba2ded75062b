"""What the daemon costs around the graphs, per frame, in the steady state.

Three ways to run the same frames, alternated round by round in one run:

* ``raw``     ``Engine.run_graphs`` on already preprocessed inputs: trunk + every head, no
              preprocessing, no decoding (the backend alone);
* ``engine``  ``Engine.infer`` on the frames: preprocess + trunk + every head + decode;
* ``daemon``  ``Daemon.run`` in-process on a folder of ``.npy`` frames (every frame processed,
              every head on every frame, JSON lines to /dev/null): capture, inference and output
              threads. Its per-frame time is the **steady state**, from the 11th result to the
              last one (a sink timestamps each result as the output thread hands it over; the
              other two modes leave out 10 warm-up frames too), divided by the frames between
              them; the time from ``run()`` to the first result
              (engine build, self-test, state directory, threads) is reported apart as ``time to
              first result``.

Goals (reported, never asserted): daemon / engine <= 1.05 (reading frames, hand-offs between
threads and writing results within 5 % of ``Engine.infer``) and engine / raw <= 1.10
(preprocessing and decoding within 10 % of the graphs). After every round the script prints the
running ``daemon / engine`` and ``engine / raw`` medians.

Bundles: ``mbv2`` (the MobileNetV2-sized model of ``benchmarks/mobilenet_multitask.py``, split
with its real decoders, synthetic 640x480 frames), ``demo`` (the demo model, synthetic frames) and
``zoo``: every detector ``make zoo`` left in ``build/zoo`` (a grid, detection or SSD head) whose
FP32 graphs (trunk and heads) take at least ``--min-graphs-ms`` here, on the zoo's own images (cycled; a slow
model gets fewer than ``--frames``, about 5 s of graphs a run, at least 40).

Usage::

    python benchmarks/daemon_overhead.py [--models mbv2,zoo] [--bundle NAME=DIR]... [--frames 300]
        [--rounds 5] [--min-graphs-ms 2] [--threads N] [--json benchmarks/results/daemon_overhead.x86_64.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from bench_support import DEMO_MODEL, MBV2_MODEL, ROOT, split_for_bench

from edge_runtime.config import RuntimeConfig
from edge_runtime.daemon.pipeline import Daemon
from edge_runtime.frames.images import read_image
from edge_runtime.frames.synthetic import SyntheticSource
from edge_runtime.inference.engine import Engine, EngineOptions
from edge_runtime.ops.bench import environment

DETECTOR_DECODERS = ("grid", "detection", "ssd")
GOALS = {"daemon / engine": 1.05, "engine / raw": 1.10}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: Frames run before timing starts, in every mode (the daemon's first results are left out).
WARMUP = 10
#: A zoo detector's run is about this long (its frames: fewer than --frames for slow trunks, at
#: least MIN_FRAMES).
RUN_SECONDS = 5.0
MIN_FRAMES = 40


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Case:
    """One bundle and the frames it runs on."""

    name: str
    bundle: Path
    frames: list[np.ndarray]
    runs: dict[str, list[float]] = field(default_factory=lambda: {"raw": [], "engine": [], "daemon": []})
    first_result_s: list[float] = field(default_factory=list)


class ResultClock:
    """A result sink that only notes when each result reached it."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def write(self, line: dict[str, Any]) -> None:
        if "results" in line:  # frame results, not heartbeat lines
            self.times.append(time.perf_counter())

    def close(self) -> None:
        """Nothing to release."""


def per_frame_raw(bundle: Path, frames: list[np.ndarray], threads: int | None) -> float:
    with Engine.from_bundle(bundle, EngineOptions(threads=threads)) as engine:
        inputs = [engine.preprocess(f) for f in frames]
        for x in inputs[:WARMUP]:
            engine.run_graphs(x)
        start = time.perf_counter()
        for x in inputs:
            engine.run_graphs(x)
        return (time.perf_counter() - start) / len(inputs) * 1000


def per_frame_engine(bundle: Path, frames: list[np.ndarray], threads: int | None) -> float:
    with Engine.from_bundle(bundle, EngineOptions(threads=threads)) as engine:
        for name in engine.head_names:
            engine.scheduler.set_every_n_frames(name, 1)
        for i, f in enumerate(frames[:WARMUP]):
            engine.infer(f, frame_id=i)
        start = time.perf_counter()
        for i, f in enumerate(frames):
            engine.infer(f, frame_id=i)
        return (time.perf_counter() - start) / len(frames) * 1000


def per_frame_daemon(bundle: Path, folder: Path, count: int, state: Path, threads: int | None) -> tuple[float, float]:
    """Steady-state ms per frame (first result to last) and seconds from ``run()`` to the first result."""
    heads = {name: {"every_n_frames": 1} for name in json.loads((bundle / "manifest.json").read_text())["heads"]}
    config = RuntimeConfig.load(
        flags={
            "bundle": str(bundle),
            "source": str(folder),
            "state_dir": str(state),
            "output": "/dev/null",
            "device_id": "bench",
            "heads": heads,
            "status_interval_s": 3600.0,
            **({"threads": threads} if threads else {}),
        },
        environ={},
    )
    clock = ResultClock()
    daemon = Daemon(config, sinks=[clock])
    start = time.perf_counter()
    if daemon.run(install_signals=False) != 0:
        raise RuntimeError(f"the daemon failed on {bundle}")
    if len(clock.times) != count:
        raise RuntimeError(f"the daemon wrote {len(clock.times)} results for {count} frames")
    # as the engine's loop, the first WARMUP frames are not timed
    steady = (clock.times[-1] - clock.times[WARMUP]) / (count - 1 - WARMUP) * 1000
    return steady, clock.times[0] - start


def graphs_ms(bundle: Path, frame: np.ndarray) -> float:
    """The FP32 graphs' (trunk and every head) median time here on one frame, to pick the zoo's
    heavier detectors (by the graphs, not the trunk alone: nudenet's split leaves almost all of
    YOLOv8 in its head)."""
    with Engine.from_bundle(bundle, EngineOptions()) as engine:
        x = engine.preprocess(frame)
        times = []
        for _ in range(12):
            start = time.perf_counter()
            engine.run_graphs(x)
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times[2:])


def synthetic_frames(count: int) -> list[np.ndarray]:
    source = SyntheticSource(640, 480)
    return [source.render(i) for i in range(count)]


def zoo_cases(count: int, min_graphs_ms: float) -> list[Case]:
    """The zoo's detectors whose graphs take at least ``min_graphs_ms`` here, on their own images."""
    cases: list[Case] = []
    zoo = ROOT / "build" / "zoo"
    if not zoo.is_dir():
        progress("no build/zoo: run `make zoo` for the zoo's detectors")
        return cases
    for model in sorted(p for p in zoo.iterdir() if p.is_dir()):
        bundle = model / "bundle-fp32"
        images = sorted(p for p in (model / "images").glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not (bundle / "manifest.json").is_file() or not images:
            continue
        heads = json.loads((bundle / "manifest.json").read_text())["heads"]
        if not any((h.get("decoder") or {}).get("type") in DETECTOR_DECODERS for h in heads.values()):
            continue
        decoded = [read_image(p) for p in images]
        ms = graphs_ms(bundle, decoded[0])
        if ms < min_graphs_ms:
            progress(f"{model.name}: graphs {ms:.2f} ms < {min_graphs_ms} ms, left out")
            continue
        frames = min(count, max(MIN_FRAMES, int(RUN_SECONDS * 1000 / ms)))  # a run of a few seconds
        progress(f"{model.name}: graphs {ms:.2f} ms, {len(images)} images, {frames} frames a run")
        cases.append(Case(model.name, bundle, [decoded[i % len(decoded)] for i in range(frames)]))
    return cases


def ratios_of(case: Case) -> dict[str, float]:
    medians = {k: statistics.median(v) for k, v in case.runs.items()}
    return {
        "daemon / engine": medians["daemon"] / medians["engine"],
        "engine / raw": medians["engine"] / medians["raw"],
        "daemon / raw": medians["daemon"] / medians["raw"],
    }


def run_rounds(cases: list[Case], rounds: int, root: Path, threads: int | None) -> None:
    """raw, engine and daemon of every case, alternated, ``rounds`` times."""
    for case in cases:
        folder = root / case.name / "frames"
        folder.mkdir(parents=True)
        for i, frame in enumerate(case.frames):
            np.save(folder / f"{i:05d}.npy", frame)
    for r in range(rounds):
        for case in cases:
            case.runs["raw"].append(per_frame_raw(case.bundle, case.frames, threads))
            case.runs["engine"].append(per_frame_engine(case.bundle, case.frames, threads))
            steady, first = per_frame_daemon(
                case.bundle, root / case.name / "frames", len(case.frames), root / case.name / f"state{r}", threads
            )
            case.runs["daemon"].append(steady)
            case.first_result_s.append(first)
            ratios = ratios_of(case)
            progress(
                f"round {r + 1}/{rounds} {case.name}: raw {case.runs['raw'][-1]:.3f}, engine "
                f"{case.runs['engine'][-1]:.3f}, daemon {steady:.3f} ms/frame; medians so far: daemon / engine "
                f"{ratios['daemon / engine']:.3f}, engine / raw {ratios['engine / raw']:.3f}"
            )


def report(cases: list[Case], args: argparse.Namespace) -> dict[str, Any]:
    models: dict[str, Any] = {}
    for case in cases:
        ratios = ratios_of(case)
        models[case.name] = {
            "bundle": str(case.bundle),
            "frames": len(case.frames),
            "ms_per_frame": case.runs,
            "median_ms_per_frame": {k: statistics.median(v) for k, v in case.runs.items()},
            "time_to_first_result_s": statistics.median(case.first_result_s),
            "ratios": ratios,
            "goals_met": {name: ratios[name] <= goal for name, goal in GOALS.items()},
        }
    return {
        "schema": "edge-bench/1",
        "benchmark": "daemon_overhead",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python benchmarks/daemon_overhead.py " + " ".join(sys.argv[1:]),
        "rounds": args.rounds,
        "threads": args.threads,
        "goals": {name: f"<= {goal}" for name, goal in GOALS.items()},
        "models": models,
        "environment": environment(None),
    }


def print_table(data: dict[str, Any]) -> None:
    print(
        f"{'model':<16} {'raw ms':>8} {'engine ms':>10} {'daemon ms':>10} {'first s':>8} "
        f"{'daemon/engine':>14} {'engine/raw':>11}"
    )
    for name, m in data["models"].items():
        med, r = m["median_ms_per_frame"], m["ratios"]
        print(
            f"{name:<16} {med['raw']:>8.3f} {med['engine']:>10.3f} {med['daemon']:>10.3f} "
            f"{m['time_to_first_result_s']:>8.2f} {r['daemon / engine']:>14.3f} {r['engine / raw']:>11.3f}"
        )
    for goal, limit in GOALS.items():
        met = [n for n, m in data["models"].items() if m["goals_met"][goal]]
        print(f"goal {goal} <= {limit}: met on {len(met)}/{len(data['models'])} ({', '.join(met) or 'none'})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mbv2,zoo", help="mbv2, demo, zoo (comma-separated), or none")
    parser.add_argument(
        "--bundle", action="append", default=[], metavar="NAME=DIR", help="another bundle (synthetic frames)"
    )
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-graphs-ms", type=float, default=2.0, help="zoo detectors whose graphs take this long")
    parser.add_argument("--threads", type=int, help="trunk threads in every mode (default: the engine's, every core)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.frames < 20 or args.rounds < 1:
        parser.error("--frames must be >= 20 and --rounds >= 1")
    logging.basicConfig(level=logging.WARNING)
    wanted = {m.strip() for m in args.models.split(",") if m.strip() and m.strip() != "none"}
    unknown = wanted - {"mbv2", "demo", "zoo"}
    if unknown:
        parser.error(f"--models: unknown {', '.join(sorted(unknown))} (mbv2, demo, zoo, none)")
    with tempfile.TemporaryDirectory(prefix="daemon-overhead-") as tmp:
        root = Path(tmp)
        cases: list[Case] = []
        synthetic = synthetic_frames(args.frames) if wanted & {"mbv2", "demo"} or args.bundle else []
        if "mbv2" in wanted:
            if not MBV2_MODEL.is_file():
                parser.error(f"{MBV2_MODEL} is missing: run `python benchmarks/mobilenet_multitask.py` first")
            cases.append(Case("mbv2", split_for_bench(root / "mbv2-bundle", MBV2_MODEL), synthetic))
        if "demo" in wanted:
            cases.append(Case("demo", split_for_bench(root / "demo-bundle", DEMO_MODEL), synthetic))
        for spec in args.bundle:
            name, _, path = spec.partition("=")
            if not path or not (Path(path) / "manifest.json").is_file():
                parser.error(f"--bundle {spec!r}: expected NAME=DIR with DIR/manifest.json")
            cases.append(Case(name, Path(path), synthetic))
        if "zoo" in wanted:
            cases.extend(zoo_cases(args.frames, args.min_graphs_ms))
        if not cases:
            parser.error("nothing to measure")
        run_rounds(cases, args.rounds, root, args.threads)
    data = report(cases, args)
    print_table(data)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
