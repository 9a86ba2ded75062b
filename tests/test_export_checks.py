"""Exports that check everything before they write, and leave nothing when they fail:
head checks (exporter/head_checks.py), metadata labels (exporter/metadata.py), head spec
suggestions (exporter/suggest.py, ``edge-export inspect MODEL --suggest-head-spec``)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_models as m
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_runtime.bundle.reader import load_bundle
from edge_runtime.errors import EdgeRuntimeError, ModelError
from exporter.metadata import read_metadata
from exporter.pipeline import SplitOptions, split_model
from exporter.suggest import format_head_spec, output_shapes, suggest_heads

ROOT = Path(__file__).resolve().parents[1]


def _heads(tmp_path: Path, heads: dict[str, Any]) -> Path:
    spec = tmp_path / "heads.json"
    spec.write_text(json.dumps({"heads": heads}), encoding="utf-8")
    return spec


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# -- a failed export leaves nothing --------------------------------------------------------------


def test_label_count_that_is_not_the_class_count_fails_before_anything_is_written(tmp_path: Path) -> None:
    # hard_sharing's cls has 5 classes
    spec = _heads(tmp_path, {"cls": {"decoder": {"type": "classification", "labels": ["only"]}}})
    with pytest.raises(ModelError, match=r"head 'cls': output 'cls' has shape \(1, 5\).*\(1, 1\): one score per label"):
        split_model(m.hard_sharing(), tmp_path / "bundle", SplitOptions(head_spec=spec))
    assert not (tmp_path / "bundle").exists()
    assert _leftovers(tmp_path) == []


def test_decoder_that_does_not_fit_the_output_shapes_fails_on_the_command_line(tmp_path: Path) -> None:
    onnx.save(m.hard_sharing(), tmp_path / "model.onnx")
    spec = _heads(tmp_path, {"seg": {"decoder": {"type": "detection", "labels": ["a", "b"]}}})
    done = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "split", "model.onnx", "-o", "bundle", "--head-spec", str(spec)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "edge-export: error: head 'seg': output 'seg' has shape (1, 2, 16, 16)" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "bundle").exists() and _leftovers(tmp_path) == []


def test_schedule_watching_a_missing_head_fails_before_writing(tmp_path: Path) -> None:
    spec = _heads(tmp_path, {"seg": {"schedule": {"when": {"head": "nope"}}}})
    with pytest.raises(EdgeRuntimeError, match=r"head 'seg' runs when head 'nope' matches"):
        split_model(m.hard_sharing(), tmp_path / "bundle", SplitOptions(head_spec=spec))
    assert not (tmp_path / "bundle").exists()


FAILURE_POINTS = [
    "exporter.pipeline.load_onnx_model",
    "exporter.pipeline.make_device_compatible",
    "exporter.pipeline.plan_split",
    "exporter.pipeline.extract_graphs",
    "exporter.pipeline.verify_split",
    "exporter.pipeline.check_heads",
    "exporter.pipeline.write_bundle",
    "exporter.selftest.write_selftest",
]


@pytest.mark.parametrize("target", FAILURE_POINTS, ids=[t.rsplit(".", 1)[-1] for t in FAILURE_POINTS])
@pytest.mark.parametrize("existing", [False, True], ids=["fresh", "replacing"])
def test_a_failure_at_any_step_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, existing: bool
) -> None:
    model = tmp_path / "model.onnx"
    onnx.save(m.hard_sharing(), model)
    out = tmp_path / "out" / "bundle"
    if existing:
        split_model(model, out, SplitOptions())
        before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def fail(*args: object, **kwargs: object) -> None:
        raise ModelError(f"injected failure in {target}")

    monkeypatch.setattr(target, fail)
    with pytest.raises(ModelError, match="injected failure"):
        split_model(model, out, SplitOptions(force=True))
    if existing:
        assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    else:
        assert not out.exists()
    assert not out.parent.exists() or _leftovers(out.parent) == []


def test_a_failed_quantize_in_the_export_chain_leaves_no_split_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from exporter import ExportOptions, export

    def fail(*args: object, **kwargs: object) -> None:
        raise ModelError("injected quantize failure")

    monkeypatch.setattr("exporter.quantize.quantize_bundle", fail)
    model = tmp_path / "model.onnx"
    onnx.save(m.hard_sharing(), model)
    with pytest.raises(ModelError, match="injected quantize failure"):
        export(model, tmp_path / "bundle", ExportOptions(precision="int8"))
    assert not (tmp_path / "bundle").exists() and _leftovers(tmp_path) == []


# -- metadata labels -----------------------------------------------------------------------------


def _with_props(model: onnx.ModelProto, **props: str) -> onnx.ModelProto:
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


@pytest.mark.parametrize(
    ("props", "labels", "size"),
    [
        ({"names": "{0: 'person', 1: 'car'}", "imgsz": "[320, 256]"}, ("person", "car"), (320, 256)),
        ({"labels": '["a", "b", "c"]'}, ("a", "b", "c"), None),
        ({"character": "text\ntitle\nfigure"}, ("text", "title", "figure"), None),
        ({"names": "not a list"}, None, None),
        ({"names": "{0: 'a', 2: 'b'}"}, None, None),  # not 0..n-1
        ({"classes": "a,a"}, None, None),  # not distinct
    ],
)
def test_metadata_labels_and_size(props: dict[str, str], labels: tuple[str, ...] | None, size: Any) -> None:
    meta = read_metadata(_with_props(m.hard_sharing(), **props))
    assert meta.labels == labels
    assert meta.input_size == size


def test_metadata_labels_become_head_labels_and_a_spec_wins(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = _with_props(m.hard_sharing(), names=str(dict(enumerate("abcde"))))
    spec = _heads(tmp_path, {"cls": {"decoder": {"type": "classification"}}})
    result = split_model(model, tmp_path / "b1", SplitOptions(head_spec=spec))
    assert result.manifest.heads["cls"].decoder.params["labels"] == list("abcde")  # type: ignore[union-attr]

    spec = _heads(tmp_path, {"cls": {"decoder": {"type": "classification", "labels": list("vwxyz")}}})
    with caplog.at_level(logging.WARNING):
        result = split_model(model, tmp_path / "b2", SplitOptions(head_spec=spec))
    assert result.manifest.heads["cls"].decoder.params["labels"] == list("vwxyz")  # type: ignore[union-attr]
    assert "gives 5 labels (v, w, x...) but the model's metadata 'names' lists 5 (a, b, c...); the head spec wins" in (
        caplog.text
    )


def test_metadata_labels_that_do_not_fit_a_head_are_dropped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = _with_props(m.hard_sharing(), names="{0: 'a', 1: 'b'}")  # cls has 5 classes
    spec = _heads(tmp_path, {"cls": {"decoder": {"type": "classification"}}})
    with caplog.at_level(logging.WARNING):
        result = split_model(model, tmp_path / "b", SplitOptions(head_spec=spec))
    assert "labels" not in result.manifest.heads["cls"].decoder.params  # type: ignore[union-attr]
    assert "the model metadata's 2 class labels do not fit this head" in caplog.text


def test_a_head_without_decoder_is_announced_with_its_size(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        split_model(m.hard_sharing(), tmp_path / "b", SplitOptions())
    assert "head 'seg' has no decoder: each frame publishes its 512 raw output values (seg)" in caplog.text
    assert "--suggest-head-spec" in caplog.text


# -- suggested head specs ------------------------------------------------------------------------


class _Builder:
    """Tiny detectors whose outputs have the layouts of published ones (input 1x3x64x64)."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(3)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value: Any, dtype: Any = np.float32) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(self, op: str, inputs: Sequence[str], out: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op, list(inputs), [out], **attrs))
        return out

    def conv(self, x: str, out: str, c_in: int, c_out: int, stride: int = 1) -> str:
        w = self.const(f"{out}.w", self.rng.standard_normal((c_out, c_in, 1, 1)) * 0.3)
        return self.node("Conv", [x, w], out, strides=[stride, stride])

    def rows(self, x: str, out: str, channels: int) -> str:
        """(1, C, h, w) -> (1, h*w, C)."""
        flat = self.node("Reshape", [x, self.const(f"{out}.shape", [1, channels, -1], np.int64)], f"{out}.flat")
        return self.node("Transpose", [flat], out, perm=[0, 2, 1])

    def model(self, outputs: Sequence[str], **props: str) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            "t",
            [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 64, 64])],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
            initializer=self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7)
        model = onnx.shape_inference.infer_shapes(model)
        inferred = {v.name: v for v in [*model.graph.value_info, *model.graph.output]}
        for out in model.graph.output:
            out.CopyFrom(inferred[out.name])
        del model.graph.value_info[:]
        onnx.checker.check_model(model, full_check=True)
        return _with_props(model, **props)


def picodet_like(classes: int = 3, bins: int = 8) -> onnx.ModelProto:
    """PP-PicoDet layout: per stride 8/16/32/64, sigmoid scores (1, N_l, C) then DFL boxes (1, N_l, 4*bins)."""
    b = _Builder()
    x = b.node("Relu", [b.conv("image", "stem", 3, 8, 2)], "stem_relu")  # stride 2
    x = b.conv(x, "s4", 8, 8, 2)
    outputs = []
    for level, stride in enumerate((8, 16, 32, 64)):
        x = b.conv(x, f"p{stride}", 8, 8, 2)
        scores = b.node(
            "Sigmoid", [b.rows(b.conv(x, f"cls{stride}", 8, classes), f"cls{stride}_rows", classes)], f"score_{level}"
        )
        boxes = b.rows(b.conv(x, f"reg{stride}", 8, 4 * bins), f"box_{level}", 4 * bins)
        outputs += [scores, boxes]
    return b.model(outputs, names=str(dict(enumerate(["text", "title", "figure"][:classes]))))


def yolov8_like(classes: int = 2) -> onnx.ModelProto:
    """YOLOv8 layout: one output (1, 4+C, N), N = 8x8 + 4x4 + 2x2 = 84 at 64x64, Ultralytics metadata."""
    b = _Builder()
    x = b.conv("image", "s2", 3, 8, 2)
    x = b.conv(x, "s4", 8, 8, 2)
    levels = []
    for stride in (8, 16, 32):
        x = b.conv(x, f"p{stride}", 8, 8, 2)
        flat = b.node(
            "Reshape",
            [b.conv(x, f"o{stride}", 8, 4 + classes), b.const(f"r{stride}", [1, 4 + classes, -1], np.int64)],
            f"f{stride}",
        )
        levels.append(flat)
    b.node("Concat", levels, "output0", axis=2)
    return b.model(["output0"], names="{0: 'FACE_F', 1: 'FACE_M'}", imgsz="[64, 64]", stride="32")


def test_suggests_a_grid_head_for_a_picodet_layout() -> None:
    model = picodet_like()
    shapes = output_shapes(model, (1, 3, 64, 64), "float32")
    [head] = suggest_heads(model, shapes, (64, 64), read_metadata(model))
    assert head.decoder == {
        "type": "grid",
        "strides": [8, 16, 32, 64],
        "box": "distance",
        "grid_offset": 0.5,
        "bins": 8,
        "score_outputs": ["score_0", "score_1", "score_2", "score_3"],
        "box_outputs": ["box_0", "box_1", "box_2", "box_3"],
        "activation": "none",
        "labels": ["text", "title", "figure"],
    }
    assert head.outputs == ["score_0", "box_0", "score_1", "box_1", "score_2", "box_2", "score_3", "box_3"]


def test_suggests_a_yolo_head_for_a_yolov8_layout() -> None:
    model = yolov8_like()
    shapes = output_shapes(model, (1, 3, 64, 64), "float32")
    assert shapes == {"output0": (1, 6, 84)}
    [head] = suggest_heads(model, shapes, (64, 64), read_metadata(model))
    assert head.decoder == {"type": "detection", "box_format": "cxcywh", "labels": ["FACE_F", "FACE_M"]}


def test_suggested_head_spec_splits_and_decodes(tmp_path: Path) -> None:
    model_path = tmp_path / "yolo.onnx"
    onnx.save(yolov8_like(), model_path)
    done = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "inspect", str(model_path), "--suggest-head-spec"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# Head spec proposed for yolo.onnx")
    spec = tmp_path / "heads.toml"
    spec.write_text(done.stdout, encoding="utf-8")
    result = split_model(model_path, tmp_path / "bundle", SplitOptions(head_spec=spec))
    decoder = load_bundle(result.bundle_dir, warn_unchecked=False).manifest.heads["detections"].decoder
    assert decoder is not None and decoder.type == "detection" and decoder.params["labels"] == ["FACE_F", "FACE_M"]


def test_suggestion_text_is_a_valid_head_spec(tmp_path: Path) -> None:
    model = picodet_like()
    shapes = output_shapes(model, (1, 3, 64, 64), "float32")
    text = format_head_spec(suggest_heads(model, shapes, (64, 64), read_metadata(model)), "pico.onnx")
    path = tmp_path / "heads.toml"
    path.write_text(text, encoding="utf-8")
    from exporter.specs import load_head_spec

    [definition] = load_head_spec(path).values()
    assert definition.decoder.type == "grid" and definition.decoder.params["bins"] == 8


def test_inspect_suggest_refuses_a_bundle(tmp_path: Path) -> None:
    split_model(m.hard_sharing(), tmp_path / "bundle", SplitOptions())
    done = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "inspect", str(tmp_path / "bundle"), "--suggest-head-spec"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2 and "--suggest-head-spec and --input-spec take a model file" in done.stderr


def test_two_branch_single_task_detector_exports_as_one_detection_head(tmp_path: Path) -> None:
    from edge_runtime.inference.engine import Engine, EngineOptions
    from edge_runtime.inference.results import Detections

    # boxes (1, 4, 8, 8) and scores (1, 3, 8, 8) from two branches over a stride-2 backbone
    spec = _heads(
        tmp_path,
        {
            "det": {
                "outputs": ["boxes", "scores"],
                "decoder": {
                    "type": "grid",
                    "strides": [2],
                    "labels": ["a", "b", "c"],
                    "score_outputs": ["scores"],
                    "box_outputs": ["boxes"],
                    "score_threshold": 0.0,
                },
            }
        },
    )
    result = split_model(m.two_branch_detector(), tmp_path / "bundle", SplitOptions(head_spec=spec))

    assert result.plan.boundary == ("feat",)
    assert [h.name for h in result.plan.heads] == ["det"]
    with Engine.from_bundle(result.bundle_dir, EngineOptions(threads=1)) as engine:
        frame = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
        decoded = engine.infer(frame).results["det"]
    assert isinstance(decoded, Detections) and 0 < len(decoded) <= 100
    assert set(decoded.labels) <= {"a", "b", "c"}


def test_logit_scores_without_activation_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # boxes (1, 4, 8, 8) and raw score logits (1, 3, 8, 8): two_branch_detector's score_logits
    model = m.two_branch_detector()
    model.graph.output[1].name = "score_logits"
    model.graph.node.remove(model.graph.node[-1])  # the Sigmoid
    decoder = {"type": "grid", "strides": [2], "score_outputs": ["score_logits"], "box_outputs": ["boxes"]}
    spec = _heads(tmp_path, {"det": {"outputs": ["boxes", "score_logits"], "decoder": decoder}})
    with caplog.at_level(logging.WARNING):
        split_model(model, tmp_path / "bundle", SplitOptions(head_spec=spec))
    assert "head 'det': decoded scores lie outside 0..1" in caplog.text
    assert "set the decoder's activation to 'sigmoid'" in caplog.text


def test_metadata_input_size_contradicting_the_model_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = _with_props(m.hard_sharing(), imgsz="[32, 32]")  # the input is 16x16
    with caplog.at_level(logging.WARNING):
        split_model(model, tmp_path / "bundle", SplitOptions())
    assert "input 16x16 (HxW) but the model's metadata 'imgsz' says 32x32; the input spec wins" in caplog.text


def test_split_summary_says_when_the_trunk_is_the_identity(tmp_path: Path) -> None:
    onnx.save(m.single_output(), tmp_path / "model.onnx")
    done = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "-q", "split", "model.onnx", "-o", "bundle"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "boundary: none (the trunk passes image on; --boundary TENSOR cuts)" in done.stdout
