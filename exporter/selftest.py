"""Golden self-test data for a bundle: a few frames, the float model's outputs for them, and what
the quantized or converted artifacts measured on them.

:func:`write_selftest` runs N frames through the bundle's **FP32 ONNX** artifacts with the
runtime's own engine (every head on every frame) and writes, under ``selftest/``:

- ``frame_<i>.png``: the frames, lossless RGB PNGs (longest side at most twice the model
  input's: larger frames are scaled down first, and the stored frame is the one measured), read
  on the device with numpy and zlib only;
- ``expected.npz``: the raw float32 outputs, key ``<head>/<output>``, each ``(N, *shape)``;
- ``expected.json``: the decoded results per frame, as the runtime's result line shows them.

It then loads the bundle the way a device may (each backend with artifacts, each precision)
and measures every head that does not run on fp32 ONNX on those frames with the device's own
check (:func:`edge_runtime.trust.selftest.compare_heads`: the gate's metric on decoded
results); the values go into the manifest's ``selftest.agreement``, which the device must
reproduce. ``quantize`` and ``convert`` call it with frames the fidelity gate held back from
calibration (``source: calibration``): a bundle that passed the gate passes its self-test on
the frames it was gated on. Without real frames the frames are synthetic.

The files go into the manifest's ``files`` (sha256) and its ``selftest`` section; the manifest
is rewritten atomically (any ``manifest.sig`` is dropped: sign again).

Example::

    write_selftest("build/demo_bundle")                                        # 4 synthetic frames
    write_selftest("build/demo_bundle", frames=held_back, source="calibration")  # (H, W, 3) uint8 each

CLI: ``edge-export split`` writes them unless ``--no-selftest``; ``quantize`` and ``convert``
replace them; ``edge-runtime selftest BUNDLE`` runs them.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_runtime.bundle.selftest_spec import SELFTEST_SOURCES, SelfTestSpec
from edge_runtime.bundle.specs import DecoderSpec, InputSpec
from edge_runtime.errors import ConfigError, EdgeRuntimeError, ModelError
from edge_runtime.frames.png import encode_png
from edge_runtime.frames.preprocess import Preprocessor, numpy_resize_bilinear
from edge_runtime.frames.synthetic import SyntheticSource
from edge_runtime.inference.decoders import build_decoder
from edge_runtime.inference.engine import Engine, EngineOptions
from edge_runtime.trust.selftest import (
    DECODED_PATH,
    EXPECTED_PATH,
    SELFTEST_DIR,
    SELFTEST_RESIZE,
    compare_heads,
    path_key,
)
from exporter.bundle import rewrite_bundle

if TYPE_CHECKING:
    from exporter.calibration import CalibrationSet

logger = logging.getLogger(__name__)

DEFAULT_COUNT = 4
#: Synthetic frame ``i`` is ``SyntheticSource.render(i * FRAME_STRIDE)``: the shapes move between frames.
FRAME_STRIDE = 7
#: A stored frame's longest side is at most this many times the model input's.
MAX_FRAME_SCALE = 2


def frame_path(index: int) -> str:
    """Where self-test frame ``index`` goes in the bundle."""
    return f"{SELFTEST_DIR}/frame_{index}.png"


def synthetic_frames(spec: InputSpec, count: int = DEFAULT_COUNT) -> np.ndarray:
    """``count`` deterministic RGB frames at the model's input size: ``(count, H, W, 3) uint8``."""
    if count < 1:
        raise ConfigError(f"self-test frame count must be >= 1, got {count}")
    height, width = spec.height_width
    source = SyntheticSource(width, height)
    return np.stack([source.render(i * FRAME_STRIDE) for i in range(count)])


def fit_frame(frame: np.ndarray, spec: InputSpec) -> np.ndarray:
    """``frame`` scaled down (aspect kept) so that its longest side is at most
    :data:`MAX_FRAME_SCALE` times the model input's longest side; unchanged when it already is."""
    limit = MAX_FRAME_SCALE * max(spec.height_width)
    height, width = frame.shape[:2]
    if max(height, width) <= limit:
        return frame
    scale = limit / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(numpy_resize_bilinear(frame, *size), dtype=np.uint8)


def _check_frames(frames: Any, spec: InputSpec) -> list[np.ndarray]:
    items = list(frames)
    if not items:
        raise ConfigError("self-test frames: none given")
    out = []
    for index, frame in enumerate(items):
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3 or 0 in frame.shape:
            raise ConfigError(f"self-test frame {index} must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
        out.append(np.ascontiguousarray(fit_frame(frame, spec)))
    return out


def _engine_paths(bundle_dir: Path) -> list[EngineOptions]:
    """One engine option per distinct set of artifacts a device may load (backends x precisions)."""
    from edge_runtime.bundle.reader import load_bundle
    from edge_runtime.inference.engine import choose_artifact

    manifest = load_bundle(bundle_dir, warn_unchecked=False).manifest
    formats = {a.format for entry in manifest.graphs().values() for a in entry.artifacts}
    seen: set[tuple[tuple[str, str], ...]] = set()
    found: list[EngineOptions] = []
    for backend, fmt in (("onnxruntime", "onnx"), ("tflite", "tflite")):
        if fmt not in formats or not all(any(a.format == fmt for a in e.artifacts) for e in manifest.graphs().values()):
            continue
        for precision in ("fp32", "fp16", "int8"):
            chosen = tuple(
                (graph, choose_artifact(entry, graph, fmt, precision).path)
                for graph, entry in manifest.graphs().items()
            )
            if chosen not in seen:
                seen.add(chosen)
                found.append(EngineOptions(backend=backend, precision=precision, threads=1))
    return found


def _measure(
    bundle_dir: Path, frames: list[np.ndarray], expected: Mapping[str, np.ndarray], spec: SelfTestSpec
) -> dict[str, dict[str, float]]:
    """head -> artifact path -> what the device's check measures on ``frames``, for every way a
    device may load the bundle that is not all fp32 ONNX."""
    agreement: dict[str, dict[str, float]] = {}
    for options in _engine_paths(bundle_dir):
        try:
            engine = Engine.from_bundle(bundle_dir, options)
        except (EdgeRuntimeError, ImportError) as exc:  # e.g. no LiteRT here: the device's bound is the gate's
            logger.info("self-test: not measured with %s %s: %s", options.backend, options.precision, exc)
            continue
        with engine:
            trunk = engine.artifacts["trunk"]
            checks = compare_heads(engine, frames, expected, spec)
            for name, check in checks.items():
                artifact = engine.artifacts[name]
                if not check.passed:
                    logger.warning("self-test data: %s", check.line())
                # fp32 on both (compared exactly) or a small output's error: not an agreement to record
                if check.metric == "max_abs_error":
                    continue
                agreement.setdefault(name, {})[path_key(trunk, artifact)] = round(float(check.value), 6)
    return agreement


def write_selftest(
    bundle_dir: str | Path,
    frames: Sequence[np.ndarray] | np.ndarray | None = None,
    count: int = DEFAULT_COUNT,
    *,
    tolerance: Mapping[str, Mapping[str, float]] | None = None,
    source: str = "synthetic",
) -> Path:
    """Write the self-test data of the bundle at ``bundle_dir`` (see the module docstring) and
    return the bundle directory. ``frames``: RGB ``(H, W, 3) uint8`` frames of any size (default:
    ``count`` synthetic frames at the model's input size); ``source``: ``"calibration"`` for frames
    the fidelity gate held back, else ``"synthetic"``; ``tolerance`` (head -> ``rtol`` / ``atol`` /
    ``min_cosine`` / ``min_agreement``) goes into the manifest, by default the bundle's current
    overrides are kept."""
    if source not in SELFTEST_SOURCES:
        raise ConfigError(f"self-test source must be one of {', '.join(SELFTEST_SOURCES)}, got {source!r}")
    root = Path(bundle_dir)
    options = EngineOptions(backend="onnxruntime", precision="fp32", threads=1)
    with Engine.from_bundle(root, options) as engine:
        bundle = engine.bundle
        manifest = bundle.manifest
        not_float = [f"{graph} ({a.path})" for graph, a in engine.artifacts.items() if a.precision != "fp32"]
        if not_float:
            raise ModelError(
                f"{bundle.root}: no FP32 ONNX artifact for {', '.join(not_float)}; "
                "self-test outputs must come from the float model"
            )
        chosen = _check_frames(synthetic_frames(manifest.input, count) if frames is None else frames, manifest.input)
        preprocess = Preprocessor(manifest.input, backend=SELFTEST_RESIZE)
        decoders = {
            name: build_decoder(name, entry.decoder or DecoderSpec(), entry.outputs)
            for name, entry in manifest.heads.items()
        }
        raw: dict[str, list[np.ndarray]] = {
            f"{name}/{output}": [] for name, entry in manifest.heads.items() for output in entry.outputs
        }
        decoded: list[dict[str, Any]] = []
        for index, frame in enumerate(chosen):
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
    expected_arrays = {key: np.stack(values) for key, values in raw.items()}
    old = manifest.selftest
    spec = SelfTestSpec(
        frames=tuple(frame_path(i) for i in range(len(chosen))),
        expected=EXPECTED_PATH,
        decoded=DECODED_PATH,
        tolerance={h: dict(t) for h, t in (tolerance or (old.tolerance if old else {})).items()},
        source=source,
    )
    spec = replace(spec, agreement=_measure(root, chosen, expected_arrays, spec))
    expected = io.BytesIO()
    np.savez(expected, **expected_arrays)  # type: ignore[arg-type]
    blobs = {frame_path(i): encode_png(frame) for i, frame in enumerate(chosen)}
    blobs[EXPECTED_PATH] = expected.getvalue()
    blobs[DECODED_PATH] = (json.dumps({"frames": decoded}, indent=1) + "\n").encode()
    stale = set(old.frame_files) | {old.expected, *([old.decoded] if old.decoded else [])} if old is not None else set()
    written = rewrite_bundle(bundle, bundle.root, replace(manifest, selftest=spec), blobs, drop=stale, force=True)
    logger.debug("self-test: %d %s frames, heads %s -> %s", len(chosen), source, ", ".join(manifest.heads), written)
    return written


def refresh_selftest(bundle_dir: str | Path, calib: CalibrationSet, held_out: float) -> None:
    """After ``quantize`` or ``convert`` wrote new artifacts: the self-test again, on frames the
    gate held back from ``calib`` (when it holds frames, not model inputs), with what the new
    artifacts measure on them. A bundle split with ``--no-selftest`` stays without one."""
    from edge_runtime.bundle.reader import read_manifest

    old = read_manifest(Path(bundle_dir)).selftest
    if old is None:
        return
    frames = calib.selftest_frames(held_out, DEFAULT_COUNT)
    if frames is None:
        logger.warning(
            "self-test frames stay synthetic: the calibration data (%s) are model inputs, not frames; "
            "give a folder of images or (N, H, W, 3) uint8 frames to test the bundle on frames it was gated on",
            calib.source,
        )
        count = len(old.frames) if isinstance(old.frames, tuple) else DEFAULT_COUNT
        write_selftest(bundle_dir, count=count)
        return
    write_selftest(bundle_dir, frames=frames, source="synthetic" if calib.generated else "calibration")
