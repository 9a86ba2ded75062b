"""Shared set-up for the benchmark scripts: a bundle to measure and an engine that runs
every head on every frame (so that each iteration costs the same)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from edge_runtime.inference.engine import Engine, EngineOptions

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DEMO_MODEL = EXAMPLES / "demo_multitask.onnx"
MBV2_MODEL = ROOT / "build" / "mbv2_multitask.onnx"  # written by benchmarks/mobilenet_multitask.py
MBV2_HEADS = Path(__file__).resolve().parent / "mbv2_heads.toml"


def split_for_bench(
    out: Path, model: Path = DEMO_MODEL, input_spec: Path | None = None, head_spec: Path | None = None
) -> Path:
    """Split ``model`` into ``out``; the demo model and the MobileNetV2-sized model get their own
    head specs (real decoders) by default, the demo its input spec too."""
    from exporter.pipeline import SplitOptions, split_model

    demo = model.resolve() == DEMO_MODEL.resolve()
    mbv2 = model.resolve() == MBV2_MODEL.resolve()
    input_spec = input_spec or (EXAMPLES / "demo_input.toml" if demo else None)
    head_spec = head_spec or (EXAMPLES / "demo_heads.toml" if demo else MBV2_HEADS if mbv2 else None)
    split_model(model, out, SplitOptions(input_spec=input_spec, head_spec=head_spec))
    return out


def engine_all_heads(bundle: Path, threads: int) -> Engine:
    """An engine whose heads all run on every frame."""
    engine = Engine.from_bundle(bundle, EngineOptions(threads=threads))
    for name in engine.head_names:
        engine.scheduler.set_every_n_frames(name, 1)
    return engine


def package_version(package: str) -> str | None:
    """The installed version of ``package``, or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def progress(model: str, logger: logging.Logger, every: float = 10.0) -> Callable[[int, float], None]:
    """A ``run_interleaved`` progress callback that logs ``model``'s rounds every ``every`` seconds."""
    due = [every]

    def report(rounds: int, elapsed: float) -> None:
        if elapsed >= due[0]:
            logger.info("  %s: %d rounds, %.0f s", model, rounds, elapsed)
            due[0] = elapsed + every

    return report
