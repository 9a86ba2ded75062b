"""Golden self-test data for a bundle: a few frames and the float model's outputs for them.

:func:`write_selftest` runs N frames (default: deterministic synthetic frames at the model's
input size) through the bundle's **FP32 ONNX** artifacts with the runtime's own engine
(every head on every frame) and writes, under ``selftest/``:

- ``frames.npy``: the frames, ``(N, H, W, 3) uint8`` RGB;
- ``expected.npz``: the raw float32 outputs, key ``<head>/<output>``, each ``(N, *shape)``;
- ``expected.json``: the decoded results per frame, as the runtime's result line shows them.

The files go into the manifest's ``files`` (sha256) and its ``selftest`` section; the manifest
is rewritten atomically (any ``manifest.sig`` is dropped: sign again). The device compares the
artifacts it loads against these with :func:`edge_runtime.trust.selftest.check_selftest`.

Example::

    write_selftest("build/demo_bundle")                     # 4 synthetic frames
    write_selftest("build/demo_bundle", frames=my_frames)   # (N, H, W, 3) uint8

CLI: ``edge-export split`` writes them unless ``--no-selftest``; ``edge-runtime selftest BUNDLE``
runs them.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.bundle.specs import DecoderSpec, InputSpec, SelfTestSpec
from edge_runtime.errors import ConfigError, EdgeRuntimeError, ModelError
from edge_runtime.frames.preprocess import Preprocessor
from edge_runtime.frames.synthetic import SyntheticSource
from edge_runtime.inference.decoders import build_decoder
from edge_runtime.inference.engine import Engine, EngineOptions
from edge_runtime.trust.selftest import DECODED_PATH, EXPECTED_PATH, FRAMES_PATH
from exporter.bundle import rewrite_bundle

logger = logging.getLogger(__name__)

DEFAULT_COUNT = 4
#: Synthetic frame ``i`` is ``SyntheticSource.render(i * FRAME_STRIDE)``: the shapes move between frames.
FRAME_STRIDE = 7


def synthetic_frames(spec: InputSpec, count: int = DEFAULT_COUNT) -> np.ndarray:
    """``count`` deterministic RGB frames at the model's input size: ``(count, H, W, 3) uint8``."""
    if count < 1:
        raise ConfigError(f"self-test frame count must be >= 1, got {count}")
    height, width = spec.height_width
    source = SyntheticSource(width, height)
    return np.stack([source.render(i * FRAME_STRIDE) for i in range(count)])


def _check_frames(frames: Any) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ConfigError(f"self-test frames must be (N, H, W, 3) uint8 with N >= 1, got {frames.shape} {frames.dtype}")
    return np.ascontiguousarray(frames)


def write_selftest(
    bundle_dir: str | Path,
    frames: np.ndarray | None = None,
    count: int = DEFAULT_COUNT,
    *,
    tolerance: Mapping[str, Mapping[str, float]] | None = None,
) -> Path:
    """Write the self-test data of the bundle at ``bundle_dir`` (see the module docstring) and
    return the bundle directory. ``tolerance`` (head -> ``rtol`` / ``atol`` / ``min_cosine``)
    goes into the manifest; by default the bundle's current overrides are kept."""
    options = EngineOptions(backend="onnxruntime", precision="fp32", threads=1)
    with Engine.from_bundle(bundle_dir, options) as engine:
        bundle = engine.bundle
        manifest = bundle.manifest
        not_float = [f"{graph} ({a.path})" for graph, a in engine.artifacts.items() if a.precision != "fp32"]
        if not_float:
            raise ModelError(
                f"{bundle.root}: no FP32 ONNX artifact for {', '.join(not_float)}; "
                "self-test outputs must come from the float model"
            )
        frames = _check_frames(frames if frames is not None else synthetic_frames(manifest.input, count))
        preprocess = Preprocessor(manifest.input)
        decoders = {
            name: build_decoder(name, entry.decoder or DecoderSpec(), entry.outputs)
            for name, entry in manifest.heads.items()
        }
        raw: dict[str, list[np.ndarray]] = {
            f"{name}/{output}": [] for name, entry in manifest.heads.items() for output in entry.outputs
        }
        decoded: list[dict[str, Any]] = []
        for index, frame in enumerate(frames):
            model_input, geometry = preprocess(frame)
            values = engine.run_graphs(model_input)
            results: dict[str, Any] = {}
            for name, entry in manifest.heads.items():
                tensors = {output: np.array(engine.to_numpy(values[output])) for output in entry.outputs}
                for output, tensor in tensors.items():
                    raw[f"{name}/{output}"].append(tensor.astype(np.float32))
                try:
                    results[name] = decoders[name](tensors, geometry).to_dict()
                except EdgeRuntimeError as exc:  # the raw outputs are what the device compares
                    logger.warning("self-test: head %r: cannot decode frame %d: %s", name, index, exc)
                    results[name] = {"error": str(exc)}
            decoded.append({"frame_id": index, "results": results})
    expected = io.BytesIO()
    np.savez(expected, **{key: np.stack(values) for key, values in raw.items()})  # type: ignore[arg-type]
    frames_file = io.BytesIO()
    np.save(frames_file, frames, allow_pickle=False)
    blobs = {
        FRAMES_PATH: frames_file.getvalue(),
        EXPECTED_PATH: expected.getvalue(),
        DECODED_PATH: (json.dumps({"frames": decoded}, indent=1) + "\n").encode(),
    }
    old = manifest.selftest
    stale = {old.frames, old.expected, *([old.decoded] if old.decoded else [])} if old is not None else set()
    spec = SelfTestSpec(
        frames=FRAMES_PATH,
        expected=EXPECTED_PATH,
        decoded=DECODED_PATH,
        tolerance={h: dict(t) for h, t in (tolerance or (old.tolerance if old else {})).items()},
    )
    written = rewrite_bundle(bundle, bundle.root, replace(manifest, selftest=spec), blobs, drop=stale, force=True)
    logger.debug("self-test: %d frames, heads %s -> %s", len(frames), ", ".join(manifest.heads), written)
    return written
