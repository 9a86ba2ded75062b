"""ONNX -> TFLite through onnx2tf in its own virtualenv (built on first use: minutes on a fresh
machine, cached after), on the trained demo bundle: FP32 and INT8 graphs, the tensor map
that the runtime relies on, fidelity per task, and onnx2tf failures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.bundle.reader import load_bundle
from exporter.onnx2tf_converter import run_onnx2tf
from exporter.tflite import TfliteOptions, convert_bundle
from exporter.toolenv import ToolEnv, ToolEnvError, ensure_env

pytest.importorskip("ai_edge_litert", reason="LiteRT is not installed (pip install 'edge-runtime[tflite]')")

# Tens of seconds with the converter virtualenv built (minutes to build it): make test-quick leaves it out.
pytestmark = pytest.mark.slow


def demo_like_frames(count: int, seed: int) -> np.ndarray:
    """Frames of the demo's kind: a coloured square on a dark noisy background (the quantized
    graphs are calibrated for this distribution; parity is judged on it too)."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 60, (count, 96, 128, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        y, x, size = int(rng.integers(5, 40)), int(rng.integers(5, 70)), int(rng.integers(20, 45))
        frame[y : y + size, x : x + size] = (220, 40 * (i % 5), 255 - 25 * (i % 7))
    return frames


@pytest.fixture(scope="session")
def onnx2tf_env() -> ToolEnv:
    try:
        return ensure_env("onnx2tf")
    except ToolEnvError as exc:  # no PyPI: say why, loudly
        pytest.fail(f"the onnx2tf environment could not be built: {exc}")


@pytest.fixture(scope="session")
def tflite_bundle(demo_bundle: Path, onnx2tf_env: ToolEnv, tmp_path_factory: pytest.TempPathFactory) -> Path:
    frames = demo_like_frames(16, seed=5)
    root = tmp_path_factory.mktemp("tflite")
    np.save(root / "frames.npy", frames)
    convert_bundle(demo_bundle, root / "bundle", TfliteOptions(calib=root / "frames.npy"))
    return root / "bundle"


@pytest.fixture(scope="session")
def tflite_fp32_bundle(demo_bundle: Path, onnx2tf_env: ToolEnv, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo bundle converted at FP32 only."""
    frames = demo_like_frames(16, seed=5)
    root = tmp_path_factory.mktemp("tflite-fp32")
    np.save(root / "frames.npy", frames)
    convert_bundle(demo_bundle, root / "bundle", TfliteOptions(calib=root / "frames.npy", precisions=("fp32",)))
    return root / "bundle"


def test_fp32_graphs_do_not_depend_on_int8_being_requested(tflite_bundle: Path, tflite_fp32_bundle: Path) -> None:
    """One converter run per precision: the FP32 files come from a run without INT8 options,
    so they are the same bytes whether or not INT8 was asked for (onnx2tf is deterministic)."""
    fp32_files = sorted((tflite_fp32_bundle / "tflite").rglob("*.fp32.tflite"))
    assert len(fp32_files) == 4  # trunk and three heads
    for path in fp32_files:
        both = tflite_bundle / path.relative_to(tflite_fp32_bundle)
        assert both.read_bytes() == path.read_bytes(), path.name


def test_an_int8_conversion_keeps_the_fp32_graphs(tflite_fp32_bundle: Path, tmp_path: Path) -> None:
    """Re-conversion adds, never drops: INT8 on a bundle with FP32 TFLite graphs keeps them."""
    frames = tmp_path / "frames.npy"
    np.save(frames, demo_like_frames(16, seed=5))
    before = load_bundle(tflite_fp32_bundle).manifest
    convert_bundle(tflite_fp32_bundle, tmp_path / "bundle", TfliteOptions(calib=frames, precisions=("int8",)))
    bundle = load_bundle(tmp_path / "bundle")  # every listed file present, sha256 verified
    manifest = bundle.manifest
    assert manifest.trunk.artifact("tflite", "int8") is not None
    for graph, entry in [("trunk", manifest.trunk), *manifest.heads.items()]:
        fp32 = entry.artifact("tflite", "fp32")
        old = (before.trunk if graph == "trunk" else before.heads[graph]).artifact("tflite", "fp32")
        assert fp32 is not None and old is not None and fp32 == old, graph
        assert bundle.path_of(fp32).read_bytes() == (tflite_fp32_bundle / fp32.path).read_bytes()
        assert entry.artifact("onnx", "fp32") is not None
    report = json.loads((tmp_path / "bundle" / "tflite.json").read_text())
    assert {d["precision"] for d in report["decisions"]} == {"int8"}


def test_every_graph_has_tflite_artifacts_with_a_tensor_map(tflite_bundle: Path) -> None:
    bundle = load_bundle(tflite_bundle)  # sha256 of every file
    manifest = bundle.manifest
    report = json.loads((tflite_bundle / "tflite.json").read_text())
    decided = {(d["graph"], d["precision"]): d for d in report["decisions"]}
    for graph, entry in [("trunk", manifest.trunk), *manifest.heads.items()]:
        fp32 = entry.artifact("tflite", "fp32")
        assert fp32 is not None, decided[(graph, "fp32")]["reason"]
        assert fp32.fidelity is not None and fp32.fidelity["agreement"] >= 0.999  # conversion keeps the numbers
        names = {*entry.inputs, *entry.outputs} if graph != "trunk" else {manifest.input.name, *entry.outputs}
        for artifact in filter(None, [fp32, entry.artifact("tflite", "int8")]):
            tensors = artifact.extra["tensors"]
            assert set(tensors) == names  # every logical tensor is mapped, by name
            assert artifact.extra["signature"] == "serving_default"
            for logical, info in tensors.items():
                assert set(info) == {"name", "perm", "dtype", "quantization"}
                if logical in ("image", "features", "mask_logits"):
                    assert info["perm"] == [0, 2, 3, 1], (logical, info)  # NCHW -> NHWC
        assert entry.artifact("onnx", "fp32") is not None  # the ONNX graphs stay


def test_int8_graphs_are_quantized_and_measured(tflite_bundle: Path) -> None:
    manifest = load_bundle(tflite_bundle).manifest
    trunk8 = manifest.trunk.artifact("tflite", "int8")
    assert trunk8 is not None and trunk8.fidelity is not None
    assert set(trunk8.fidelity["tasks"]) == {"shape", "box", "mask"}
    features = trunk8.extra["tensors"]["features"]
    assert features["dtype"] == "int8" and features["quantization"] is not None
    scale, zero = features["quantization"]
    assert scale > 0 and -128 <= zero <= 127
    for entry in manifest.heads.values():
        artifact = entry.artifact("tflite", "int8")
        if artifact is None:
            continue  # below the gate: recorded in tflite.json
        assert artifact.fidelity is not None and artifact.fidelity["agreement"] >= 0.99
        # onnx2tf names quantized outputs output_0...: the map points at them, keyed by the ONNX name
        assert set(entry.outputs) <= set(artifact.extra["tensors"])
    assert (tflite_bundle / "tflite" / "trunk.int8.tflite").stat().st_size < 0.5 * (
        tflite_bundle / "tflite" / "trunk.fp32.tflite"
    ).stat().st_size


def test_onnx2tf_failure_shows_its_last_lines(onnx2tf_env: ToolEnv, tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not an onnx model")
    with pytest.raises(ToolEnvError) as caught:
        run_onnx2tf(onnx2tf_env, broken, tmp_path, None)
    message = str(caught.value)
    assert "onnx2tf on broken.onnx (FP32) failed" in message and "last lines" in message
    assert len(message.splitlines()) > 2


def _raw_outputs(bundle: Path, backend: str, precision: str, frames: np.ndarray) -> tuple[dict, list[dict]]:
    """(artifacts chosen, per-frame raw head outputs) through the engine on one backend."""
    from edge_runtime.inference.engine import Engine, EngineOptions

    with Engine.from_bundle(bundle, EngineOptions(backend=backend, precision=precision, threads=2)) as engine:
        chosen = {name: (a.format, a.precision) for name, a in engine.artifacts.items()}
        outputs = []
        for frame in frames:
            values = engine.run_graphs(engine.preprocess(frame))
            outputs.append({name: engine.to_numpy(value) for name, value in values.items()})
    return chosen, outputs


@pytest.mark.parametrize(("precision", "minimum"), [("fp32", 0.999), ("int8", 0.99)])
def test_parity_onnxruntime_and_litert(tflite_bundle: Path, precision: str, minimum: float) -> None:
    """The same bundle through ONNX Runtime (float, the reference) and through LiteRT agree per
    task, by the quantization issue's metrics."""
    from exporter.fidelity import head_fidelity

    frames = demo_like_frames(12, seed=9)  # not the calibration frames
    _, reference = _raw_outputs(tflite_bundle, "onnxruntime", "fp32", frames)
    chosen, candidate = _raw_outputs(tflite_bundle, "tflite", precision, frames)
    assert all(fmt == "tflite" for fmt, _ in chosen.values())
    assert chosen["trunk"] == ("tflite", precision)
    manifest = load_bundle(tflite_bundle).manifest
    for name, entry in manifest.heads.items():
        ref = [{o: r[o] for o in entry.outputs} for r in reference]
        cand = [{o: c[o] for o in entry.outputs} for c in candidate]
        fidelity = head_fidelity(name, entry.decoder, entry.outputs, ref, cand, (128, 128))
        assert fidelity.value >= minimum, (name, precision, fidelity)


def test_tune_measures_litert_and_onnxruntime_together(tflite_bundle: Path) -> None:
    from edge_runtime.inference.engine import Engine, EngineOptions
    from edge_runtime.tuning.search import TuneOptions, tune

    bundle = load_bundle(tflite_bundle, verify_hashes=False)
    result = tune(bundle, TuneOptions(seconds=1.0, cores=1))
    trunk_rows = [r["candidate"] for r in result.rows if r["round"] == "trunk"]
    assert {"tflite fp32 x1", "tflite int8 x1"} <= set(trunk_rows), trunk_rows
    # each head's round times it on both backends (the current choice and every other candidate)
    head_rounds = {r["round"] for r in result.rows if r["round"].startswith("head ")}
    assert head_rounds
    for phase in head_rounds:
        head = phase.removeprefix("head ")
        backends = {
            part.split()[1]
            for r in result.rows
            if r["round"] == phase and r["candidate"] != "baseline"
            for part in r["configuration"].split("; ")
            if part.split()[0] == head
        }
        assert backends == {"tflite", "onnxruntime"}, (phase, result.rows)
    with Engine.from_bundle(tflite_bundle, EngineOptions(graphs=result.choice, origin="tuned")) as engine:
        assert [(r.backend, r.precision) for r in engine.graphs] == [
            (c.backend, c.precision) for c in result.choice.values()
        ]
        assert set(engine.infer(demo_like_frames(1, seed=9)[0]).results) == set(engine.head_names)
