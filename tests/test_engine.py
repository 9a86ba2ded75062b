"""edge_runtime.inference.engine on the demo bundle: same answers as the original model, the trunk
once per frame, schedules, conditional and disabled heads, artifact choice, bad bundles."""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from edge_runtime.errors import BundleError, ConfigError
from edge_runtime.frames.geometry import FrameGeometry
from edge_runtime.frames.preprocess import Preprocessor
from edge_runtime.inference.engine import Engine, EngineOptions
from edge_runtime.inference.results import Classification, Regression, Segmentation
from exporter.pipeline import SplitOptions, split_model

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
HEADS_WITH_CONDITION = """
[heads.shape]
outputs = ["shape_logits"]
decoder = { type = "classification", labels = ["circle", "square", "triangle"], top_k = 1 }

[heads.box]
outputs = ["box"]
decoder = { type = "regression", names = ["x1", "y1", "x2", "y2"], box_format = "xyxy", normalized = true }
schedule = { every_n_frames = 3 }

[heads.mask]
outputs = ["mask_logits"]
decoder = { type = "segmentation", classes = ["background", "shape"] }
schedule = { when = { head = "shape", class_in = ["circle"], min_score = 0.5 } }
"""


def _frames(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 frames of the demo data (letterboxed into a wider canvas) + classes."""
    pytest.importorskip("torch")  # the demo data generator lives in the torch training script
    sys.path.insert(0, str(ROOT))
    from examples.train_demo_model import make_frames

    images, classes, _boxes, _masks = make_frames(count, seed=seed)
    # Put each 128x128 frame in the middle of a 256x192 canvas of its own corner colour.
    canvas = np.empty((count, 192, 256, 3), np.uint8)
    canvas[:] = images[:, :1, :1, :]
    canvas[:, 32:160, 64:192] = images
    return canvas, classes


@pytest.fixture(scope="module")
def conditional_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    root = tmp_path_factory.mktemp("engine_cond")
    spec = root / "heads.toml"
    spec.write_text(HEADS_WITH_CONDITION)
    out = root / "bundle"
    split_model(
        EXAMPLES / "demo_multitask.onnx", out, SplitOptions(input_spec=EXAMPLES / "demo_input.toml", head_spec=spec)
    )
    return out


class CountingSession:
    """A real backend session that counts its runs."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0
        self.input_names = inner.input_names
        self.output_names = inner.output_names

    def run(self, feeds: Mapping[str, Any], outputs: Sequence[str] | None = None) -> dict[str, Any]:
        self.calls += 1
        return self.inner.run(feeds, outputs)

    def to_numpy(self, value: Any) -> np.ndarray:
        return self.inner.to_numpy(value)

    def close(self) -> None:
        self.inner.close()


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def test_engine_matches_the_original_model_decoded_by_hand(demo_bundle: Path) -> None:
    frames, _classes = _frames(6, seed=5)
    original = ort.InferenceSession(str(EXAMPLES / "demo_multitask.onnx"), providers=["CPUExecutionProvider"])
    with Engine.from_bundle(demo_bundle, EngineOptions(threads=1)) as engine:
        preprocess = Preprocessor(engine.manifest.input)
        for index, frame in enumerate(frames):
            result = engine.infer(frame)
            x, geometry = preprocess(frame)
            logits, box, mask_logits = original.run(None, {"image": x})
            # shape: softmax top-3 by hand
            probs = _softmax(logits[0])
            shape = result.results["shape"]
            assert isinstance(shape, Classification)
            assert list(shape.class_ids) == list(np.argsort(-probs)[:3])
            np.testing.assert_allclose(shape.scores, np.sort(probs)[::-1][:3], rtol=1e-5, atol=1e-6)
            # box: normalised xyxy in the 128x128 input -> frame pixels through the letterbox
            reg = result.results["box"]
            assert isinstance(reg, Regression) and reg.box is not None
            expected_box = geometry.boxes_to_frame(box[0] * 128.0)[0]
            np.testing.assert_allclose(reg.box, expected_box, atol=1e-3)
            # mask: every second frame (schedule), argmax inside the letterbox content
            if index % 2 == 0:
                seg = result.results["mask"]
                assert isinstance(seg, Segmentation)
                x0, y0, x1, y1 = (round(v) for v in geometry.content)
                np.testing.assert_array_equal(seg.mask, mask_logits[0].argmax(0)[y0:y1, x0:x1])
            else:
                assert "mask" not in result.results and "mask" in result.skipped


def test_trunk_runs_exactly_once_per_frame(demo_bundle: Path) -> None:
    frames, _ = _frames(5, seed=6)
    with Engine.from_bundle(demo_bundle) as engine:
        counting = CountingSession(engine._trunk)
        engine._trunk = counting
        for frame in frames:
            engine.infer(frame)
        assert counting.calls == 5
        assert engine.stats.trunk_runs == 5
        assert engine.stats.head_runs == {"shape": 5, "box": 5, "mask": 3}
        assert engine.stats.head_skips == {"shape": 0, "box": 0, "mask": 2}


def test_every_n_and_conditional_heads(conditional_bundle: Path) -> None:
    frames, _ = _frames(12, seed=7)
    with Engine.from_bundle(conditional_bundle) as engine:
        results = [engine.infer(frame) for frame in frames]
    for index, result in enumerate(results):
        assert ("box" in result.results) == (index % 3 == 0)
        shape = result.results["shape"]
        assert isinstance(shape, Classification)
        is_circle = shape.labels[0] == "circle" and float(shape.scores[0]) >= 0.5
        assert ("mask" in result.results) == is_circle
    assert any("mask" in r.results for r in results) and any("mask" not in r.results for r in results)


def test_disabled_head_costs_nothing(demo_bundle: Path) -> None:
    frames, _ = _frames(4, seed=8)
    with Engine.from_bundle(demo_bundle) as engine:
        engine.set_head_enabled("box", False)
        counting = CountingSession(engine._heads["box"].session)
        engine._heads["box"].session = counting
        for frame in frames:
            assert "box" not in engine.infer(frame).results
        assert counting.calls == 0
        engine.set_head_enabled("box", True)
        assert "box" in engine.infer(frames[0]).results
        with pytest.raises(ConfigError, match="did you mean 'box'"):
            engine.set_head_enabled("bx", False)


def test_frame_result_line(demo_bundle: Path) -> None:
    frames, _ = _frames(1, seed=9)
    with Engine.from_bundle(demo_bundle) as engine:
        line = engine.infer(frames[0], frame_id=41, timestamp=1700000000.5).to_dict(device="cam-1", seq=7)
    assert {"device", "seq", "frame_id", "ts", "results", "latency_ms"} <= set(line)
    assert (line["device"], line["seq"], line["frame_id"], line["ts"]) == ("cam-1", 7, 41, 1700000000.5)
    assert {"preprocess", "trunk", "head:shape", "head:box", "head:mask", "decode", "total"} <= set(line["latency_ms"])


def test_precision_preference_falls_back_per_graph(demo_bundle: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO), Engine.from_bundle(demo_bundle, EngineOptions(precision="int8")) as engine:
        assert {a.precision for a in engine.artifacts.values()} == {"fp32"}
    assert "no onnx int8 artifact, using fp32" in caplog.text


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        (EngineOptions(heads=("shape", "maks")), ConfigError, "did you mean 'mask'"),
        (EngineOptions(backend="onnxruntme"), ConfigError, "did you mean 'onnxruntime'"),
    ],
    ids=["unknown-head", "unknown-backend"],
)
def test_engine_option_errors(demo_bundle: Path, options: EngineOptions, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        Engine.from_bundle(demo_bundle, options)


def test_bad_precision_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="precision 'int4'"):
        EngineOptions(precision="int4")


def test_tampered_bundle_is_refused(demo_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(demo_bundle, copy)
    graph = copy / "heads" / "box.fp32.onnx"
    data = bytearray(graph.read_bytes())
    data[-10] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"box\.fp32\.onnx: checksum mismatch"):
        Engine.from_bundle(copy)


def test_geometry_is_letterbox_for_the_demo() -> None:
    g = FrameGeometry.letterbox(256, 192, 128, 128)
    assert g.content == (0.0, 16.0, 128.0, 112.0)
