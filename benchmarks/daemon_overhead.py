"""Daemon end to end vs the raw backend: what the pipeline around the graphs costs per frame.

Goal from the issue (reported, not asserted): daemon end-to-end / raw backend <= 1.10.

* ``raw``     ``Engine.run_graphs`` on an already preprocessed input: trunk + every head, no
              preprocessing, no decoding (the backend alone);
* ``engine``  ``Engine.infer`` on a frame: preprocess + trunk + scheduled heads + decode;
* ``daemon``  ``edge-runtime run`` in-process on a folder of ``.npy`` frames (every frame is
              processed; JSON lines to /dev/null): capture, inference and output threads,
              wall time per frame from the first frame to the last result.

The daemon runs are whole runs (a few seconds each), so A/B interleaving is per run: raw,
engine and daemon alternate ``--rounds`` times and the medians are compared. The daemon
runs with every head on every frame so that it does the same work as ``raw``.

Usage::

    python benchmarks/daemon_overhead.py [--bundle build/demo_bundle | --model MODEL.onnx] [--frames 400]
        [--rounds 3]
        [--json benchmarks/results/daemon_overhead.x86_64.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_support import DEMO_MODEL, split_for_bench

from edge_runtime.config import RuntimeConfig
from edge_runtime.daemon.pipeline import Daemon
from edge_runtime.frames.synthetic import SyntheticSource
from edge_runtime.inference.engine import Engine, EngineOptions
from edge_runtime.ops.bench import environment


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def per_frame_raw(bundle: Path, frames: list[np.ndarray]) -> float:
    with Engine.from_bundle(bundle, EngineOptions()) as engine:
        inputs = [engine.preprocess(f) for f in frames]
        for x in inputs[:10]:
            engine.run_graphs(x)
        start = time.perf_counter()
        for x in inputs:
            engine.run_graphs(x)
        return (time.perf_counter() - start) / len(inputs) * 1000


def per_frame_engine(bundle: Path, frames: list[np.ndarray]) -> float:
    with Engine.from_bundle(bundle, EngineOptions()) as engine:
        for name in engine.head_names:
            engine.scheduler.set_every_n_frames(name, 1)
        for i, f in enumerate(frames[:10]):
            engine.infer(f, frame_id=i)
        start = time.perf_counter()
        for i, f in enumerate(frames):
            engine.infer(f, frame_id=i)
        return (time.perf_counter() - start) / len(frames) * 1000


def per_frame_daemon(bundle: Path, folder: Path, count: int, state: Path) -> float:
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
        },
        environ={},
    )
    daemon = Daemon(config)
    start = time.perf_counter()
    assert daemon.run(install_signals=False) == 0
    elapsed = time.perf_counter() - start
    assert daemon.counters.results_written == count, (daemon.counters.results_written, count)
    return elapsed / count * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, help="a bundle (default: split --model)")
    parser.add_argument(
        "--model", type=Path, default=DEMO_MODEL,
        help="ONNX model to split when no --bundle (default: the demo; build/mbv2_multitask.onnx gets "
        "benchmarks/mbv2_heads.toml)",
    )  # fmt: skip
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="daemon-overhead-") as tmp:
        root = Path(tmp)
        bundle = args.bundle or split_for_bench(root / "bundle", args.model)
        source = SyntheticSource(640, 480)
        frames = [source.render(i) for i in range(args.frames)]
        folder = root / "frames"
        folder.mkdir()
        for i, frame in enumerate(frames):
            np.save(folder / f"{i:05d}.npy", frame)
        runs: dict[str, list[float]] = {"raw": [], "engine": [], "daemon": []}
        for r in range(args.rounds):
            progress(f"round {r + 1}/{args.rounds}")
            runs["raw"].append(per_frame_raw(bundle, frames))
            runs["engine"].append(per_frame_engine(bundle, frames))
            runs["daemon"].append(per_frame_daemon(bundle, folder, args.frames, root / f"state{r}"))
    medians = {k: statistics.median(v) for k, v in runs.items()}
    ratios = {
        "daemon / raw": medians["daemon"] / medians["raw"],
        "engine / raw": medians["engine"] / medians["raw"],
        "daemon / engine": medians["daemon"] / medians["engine"],
    }
    for name, values in runs.items():
        print(f"{name:<7} ms/frame median {medians[name]:.3f}  runs {', '.join(f'{v:.3f}' for v in values)}")
    for name, value in ratios.items():
        print(f"{name:<16} {value:.3f}")
    print(f"goal daemon / raw <= 1.10: {'met' if ratios['daemon / raw'] <= 1.10 else 'NOT met'}")
    if args.json:
        report = {
            "schema": "edge-bench/1",
            "benchmark": "daemon_overhead",
            "bundle": str(args.bundle) if args.bundle else f"split of {args.model}",
            "frames": args.frames,
            "rounds": args.rounds,
            "ms_per_frame": runs,
            "median_ms_per_frame": medians,
            "ratios": ratios,
            "environment": environment(None),
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
