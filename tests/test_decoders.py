"""edge_runtime.inference.decoders (raw head outputs → results) and edge_runtime.inference.results (typed results)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from edge_runtime.bundle.specs import DECODER_PARAMS, DecoderSpec
from edge_runtime.errors import ConfigError, ModelError
from edge_runtime.frames.geometry import FrameGeometry
from edge_runtime.inference.decoders import DECODERS, build_decoder, nms
from edge_runtime.inference.results import (
    Classification,
    Detections,
    Embedding,
    FrameResult,
    Landmarks,
    RawOutput,
    Regression,
    Segmentation,
    decode_rle,
    encode_rle,
)

#: Model input = frame, 128x128: model-input pixels are frame pixels.
SAME = FrameGeometry.stretch(128, 128, 128, 128)
#: A 640x480 frame letterboxed into 128x128: scale 0.2, 16 rows of padding above and below.
LETTERBOX = FrameGeometry.letterbox(640, 480, 128, 128)


def decode(kind: str, params: dict[str, Any], tensors: dict[str, Any], geometry: FrameGeometry = SAME) -> Any:
    """Build the decoder for ``tensors``' names (in order) and decode them."""
    decoder = build_decoder("head", DecoderSpec(kind, params), list(tensors))
    return decoder({name: np.asarray(t, dtype=np.float32) for name, t in tensors.items()}, geometry)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_registry_covers_every_manifest_decoder_type() -> None:
    assert set(DECODERS) == set(DECODER_PARAMS)


# --- classification -------------------------------------------------------------------------

CLASSIFICATION_CASES = [
    pytest.param(
        {"labels": ["a", "b", "c"], "top_k": 3},
        [np.log([1.0, 2.0, 3.0])],
        [2, 1, 0],
        [3 / 6, 2 / 6, 1 / 6],
        ("c", "b", "a"),
        id="softmax-values-and-order",
    ),
    pytest.param(
        {"top_k": 2},
        [np.log([1.0, 2.0, 3.0, 4.0])],
        [3, 2],
        [0.4, 0.3],
        ("class_3", "class_2"),
        id="top-k-default-labels",
    ),
    pytest.param(
        {},
        [np.arange(7.0)],
        [6, 5, 4, 3, 2],
        list(np.exp(np.arange(6.0, 1.0, -1.0)) / np.exp(np.arange(7.0)).sum()),
        ("class_6", "class_5", "class_4", "class_3", "class_2"),
        id="default-top-k-is-5",
    ),
    pytest.param(
        {"softmax": False, "labels": ["a", "b", "c"]},
        [[0.2, 0.7, 0.1]],
        [1, 0, 2],
        [0.7, 0.2, 0.1],
        ("b", "a", "c"),
        id="probabilities-kept",
    ),
    pytest.param(
        {"labels": ["a", "b"]},
        [[1000.0, 0.0]],
        [0, 1],
        [1.0, 0.0],
        ("a", "b"),
        id="softmax-stable-for-large-logits",
    ),
    pytest.param(
        {"labels": ["a", "b", "c"], "top_k": 1},
        np.log([1.0, 3.0, 1.0]).reshape(1, 3, 1, 1),
        [1],
        [0.6],
        ("b",),
        id="conv-shaped-1xCx1x1",
    ),
    pytest.param(
        {"multi_label": True, "labels": ["a", "b", "c", "d"]},
        [[0.0, 2.0, -2.0, 1.0]],
        [1, 3, 0],
        [sigmoid(2.0), sigmoid(1.0), 0.5],
        ("b", "d", "a"),
        id="multi-label-sigmoid-threshold-inclusive",
    ),
    pytest.param(
        {"multi_label": True, "threshold": 0.6, "labels": ["a", "b", "c", "d"]},
        [[0.0, 2.0, -2.0, 1.0]],
        [1, 3],
        [sigmoid(2.0), sigmoid(1.0)],
        ("b", "d"),
        id="multi-label-threshold",
    ),
    pytest.param(
        {"multi_label": True, "softmax": False, "threshold": 0.3},
        [[0.2, 0.9, 0.3]],
        [1, 2],
        [0.9, 0.3],
        ("class_1", "class_2"),
        id="multi-label-probabilities",
    ),
    pytest.param(
        {"multi_label": True, "threshold": 0.99},
        [[0.0, 1.0]],
        [],
        [],
        (),
        id="multi-label-none-above",
    ),
]


@pytest.mark.parametrize(("params", "logits", "ids", "scores", "labels"), CLASSIFICATION_CASES)
def test_classification(
    params: dict[str, Any], logits: Any, ids: list[int], scores: list[float], labels: tuple[str, ...]
) -> None:
    result = decode("classification", params, {"logits": logits})

    assert isinstance(result, Classification)
    assert result.class_ids.dtype == np.int64 and result.scores.dtype == np.float32
    assert result.class_ids.tolist() == ids
    np.testing.assert_allclose(result.scores, scores, rtol=1e-5, atol=1e-7)
    assert result.labels == labels


# --- detection ------------------------------------------------------------------------------

#: Rows ``x1 y1 x2 y2 score_a score_b`` in model-input pixels (SAME geometry):
#: row 1 overlaps row 0 (IoU 0.82) with a lower class-a score; row 2 sits exactly on row 0
#: but is class b; row 3 is below the default score threshold; rows 4-7 score nothing.
DET_ROWS = np.array(
    [
        [10, 10, 50, 50, 0.9, 0.1],
        [12, 12, 52, 52, 0.8, 0.2],
        [10, 10, 50, 50, 0.1, 0.7],
        [80, 80, 100, 100, 0.2, 0.1],
        [0, 0, 1, 1, 0.0, 0.0],
        [0, 0, 1, 1, 0.0, 0.0],
        [0, 0, 1, 1, 0.0, 0.0],
        [0, 0, 1, 1, 0.0, 0.0],
    ],
    dtype=np.float32,
)
AB = {"labels": ["a", "b"]}
#: Per-class NMS keeps row 0 (a, 0.9) and row 2 (b, 0.7).
PER_CLASS = ([[10, 10, 50, 50], [10, 10, 50, 50]], [0.9, 0.7], [0, 1], ("a", "b"))
#: Class-agnostic NMS keeps row 0 only.
AGNOSTIC = ([[10, 10, 50, 50]], [0.9], [0], ("a",))


def with_box_format(rows: np.ndarray, box_format: str) -> np.ndarray:
    out = rows.copy()
    x1, y1, x2, y2 = (rows[:, i] for i in range(4))
    if box_format == "xywh":
        out[:, 2], out[:, 3] = x2 - x1, y2 - y1
    elif box_format == "cxcywh":
        out[:, :4] = np.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], axis=1)
    return out


def with_objectness(rows: np.ndarray) -> np.ndarray:
    """``x1 y1 x2 y2 obj a b`` whose products obj*class equal DET_ROWS' scores."""
    obj = np.full((len(rows), 1), 0.5, dtype=np.float32)
    return np.concatenate([rows[:, :4], obj, rows[:, 4:] / 0.5], axis=1)


def normalized(rows: np.ndarray) -> np.ndarray:
    out = rows.copy()
    out[:, :4] /= 128.0
    return out


DETECTION_CASES = [
    pytest.param(AB, {"out": DET_ROWS[None]}, SAME, PER_CLASS, id="one-output-NxC-per-class-nms"),
    pytest.param({}, {"out": DET_ROWS[None]}, SAME, (*PER_CLASS[:3], ("class_0", "class_1")), id="default-labels"),
    pytest.param({**AB, "class_agnostic_nms": True}, {"out": DET_ROWS[None]}, SAME, AGNOSTIC, id="class-agnostic"),
    pytest.param(AB, {"out": DET_ROWS.T[None]}, SAME, PER_CLASS, id="transposed-by-labels"),
    pytest.param(
        {}, {"out": DET_ROWS.T[None]}, SAME, (*PER_CLASS[:3], ("class_0", "class_1")), id="transposed-by-size"
    ),
    pytest.param(
        {**AB, "iou_threshold": 0.9},
        {"out": DET_ROWS[None]},
        SAME,
        ([[10, 10, 50, 50], [12, 12, 52, 52], [10, 10, 50, 50]], [0.9, 0.8, 0.7], [0, 0, 1], ("a", "a", "b")),
        id="iou-threshold-keeps-overlap",
    ),
    pytest.param(
        {**AB, "score_threshold": 0.75},
        {"out": DET_ROWS[None]},
        SAME,
        ([[10, 10, 50, 50]], [0.9], [0], ("a",)),
        id="score-threshold",
    ),
    pytest.param(
        {**AB, "score_threshold": 0.15},
        {"out": DET_ROWS[None]},
        SAME,
        ([[10, 10, 50, 50], [10, 10, 50, 50], [80, 80, 100, 100]], [0.9, 0.7, 0.2], [0, 1, 0], ("a", "b", "a")),
        id="low-score-threshold",
    ),
    pytest.param(
        {**AB, "max_detections": 1},
        {"out": DET_ROWS[None]},
        SAME,
        ([[10, 10, 50, 50]], [0.9], [0], ("a",)),
        id="max-detections",
    ),
    pytest.param(
        {**AB, "box_format": "xywh"}, {"out": with_box_format(DET_ROWS, "xywh")[None]}, SAME, PER_CLASS, id="xywh"
    ),
    pytest.param(
        {**AB, "box_format": "cxcywh"},
        {"out": with_box_format(DET_ROWS, "cxcywh")[None]},
        SAME,
        PER_CLASS,
        id="cxcywh",
    ),
    pytest.param(
        {**AB, "box_format": "cxcywh", "normalized": True},
        {"out": normalized(with_box_format(DET_ROWS, "cxcywh"))[None]},
        SAME,
        PER_CLASS,
        id="cxcywh-normalized",
    ),
    pytest.param({**AB, "normalized": True}, {"out": normalized(DET_ROWS)[None]}, SAME, PER_CLASS, id="normalized"),
    pytest.param(
        {**AB, "objectness": True}, {"out": with_objectness(DET_ROWS)[None]}, SAME, PER_CLASS, id="objectness-5+C"
    ),
    pytest.param(
        {**AB, "objectness": True},
        {"out": with_objectness(DET_ROWS).T[None]},
        SAME,
        PER_CLASS,
        id="objectness-transposed",
    ),
    pytest.param(
        AB, {"boxes": DET_ROWS[None, :, :4], "scores": DET_ROWS[None, :, 4:]}, SAME, PER_CLASS, id="two-outputs"
    ),
    pytest.param(
        AB,
        {"scores": DET_ROWS[None, :, 4:], "boxes": DET_ROWS[None, :, :4]},
        SAME,
        PER_CLASS,
        id="two-outputs-scores-first",
    ),
    pytest.param(
        {"labels": ["a", "b", "c", "d"]},
        {"boxes": DET_ROWS[None, :, :4], "scores": np.pad(DET_ROWS[:, 4:], ((0, 0), (0, 2)))[None]},
        SAME,
        PER_CLASS,
        id="two-outputs-four-classes-by-order",
    ),
    pytest.param(
        {},
        {"boxes": DET_ROWS[None, :, :4], "scores": DET_ROWS[None, :, 4]},
        SAME,
        ([[10, 10, 50, 50]], [0.9], [0], ("class_0",)),
        id="two-outputs-single-class-1xN",
    ),
    pytest.param(
        {"labels": ["thing"]},
        {"out": np.array([[[32, 40, 96, 88, 0.8]]], dtype=np.float32)},
        LETTERBOX,
        ([[160, 120, 480, 360]], [0.8], [0], ("thing",)),
        id="letterbox-to-frame-pixels",
    ),
    pytest.param(
        {"labels": ["thing"], "normalized": True},
        {"out": np.array([[[-0.25, 0.0, 0.5, 1.0, 0.8]]], dtype=np.float32)},
        LETTERBOX,
        ([[0, 0, 320, 480]], [0.8], [0], ("thing",)),
        id="letterbox-clipped-to-frame",
    ),
    pytest.param(AB, {"out": np.zeros((1, 0, 6), dtype=np.float32)}, SAME, ([], [], [], ()), id="no-boxes"),
]


@pytest.mark.parametrize(("params", "tensors", "geometry", "expected"), DETECTION_CASES)
def test_detection(
    params: dict[str, Any],
    tensors: dict[str, np.ndarray],
    geometry: FrameGeometry,
    expected: tuple[list[list[float]], list[float], list[int], tuple[str, ...]],
) -> None:
    xyxy, scores, class_ids, labels = expected

    result = decode("detection", params, tensors, geometry)

    assert isinstance(result, Detections)
    assert result.xyxy.dtype == np.float32 and result.xyxy.shape == (len(xyxy), 4)
    np.testing.assert_allclose(result.xyxy, np.asarray(xyxy, dtype=np.float32).reshape(-1, 4), rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(result.scores, scores, rtol=1e-6)
    assert result.class_ids.dtype == np.int64 and result.class_ids.tolist() == class_ids
    assert result.labels == labels


NMS_CASES = [
    pytest.param([[0, 0, 10, 10], [0, 0, 10, 10]], [0.5, 0.9], None, 0.5, [1], id="same-box-keeps-best"),
    pytest.param([[0, 0, 10, 10], [0, 0, 10, 10]], [0.5, 0.9], [0, 1], 0.5, [1, 0], id="other-class-kept"),
    pytest.param([[0, 0, 10, 10], [5, 0, 15, 10]], [0.9, 0.8], None, 0.3, [0], id="iou-1/3-above-threshold"),
    pytest.param([[0, 0, 10, 10], [5, 0, 15, 10]], [0.9, 0.8], None, 0.34, [0, 1], id="iou-1/3-below-threshold"),
    pytest.param([[0, 0, 0, 0], [0, 0, 0, 0]], [0.9, 0.8], None, 0.5, [0, 1], id="empty-boxes-never-overlap"),
    pytest.param(
        [[0, 0, 10, 10], [0, 0, 9, 10], [20, 0, 30, 10], [21, 0, 30, 10]],
        [0.9, 0.8, 0.7, 0.6],
        None,
        0.5,
        [0, 2],
        id="chain",
    ),
]


@pytest.mark.parametrize(("boxes", "scores", "class_ids", "iou", "keep"), NMS_CASES)
def test_nms(
    boxes: list[list[float]], scores: list[float], class_ids: list[int] | None, iou: float, keep: list[int]
) -> None:
    ids = None if class_ids is None else np.asarray(class_ids)

    kept = nms(np.asarray(boxes, dtype=np.float32), np.asarray(scores, dtype=np.float32), iou, 100, ids)

    assert kept.tolist() == keep


# --- segmentation ---------------------------------------------------------------------------

#: Class ids of a 4x4 mask, made into one-hot logits.
SEG_IDS = np.array([[0, 0, 1, 1], [0, 2, 2, 1], [2, 2, 2, 2], [0, 0, 0, 1]])


def one_hot_logits(ids: np.ndarray, classes: int) -> np.ndarray:
    """``(1, classes, H, W)`` logits whose argmax is ``ids`` (3.0 for the class, 0.5 elsewhere)."""
    logits = np.full((classes, *ids.shape), 0.5, dtype=np.float32)
    np.put_along_axis(logits, ids[None], 3.0, axis=0)
    return logits[None]


#: Frame 8 wide, 4 high, letterboxed into 8x8: content rows 2..6 of the model input.
WIDE = FrameGeometry.letterbox(8, 4, 8, 8)
#: Rows of a 4x4 output mask: rows 0 and 3 are padding (class 2 there), rows 1-2 are content.
PADDED_IDS = np.array([[2, 2, 2, 2], [0, 1, 1, 0], [1, 1, 0, 0], [2, 2, 2, 2]])

SEGMENTATION_CASES = [
    pytest.param(
        {"classes": ["bg", "a", "b"]},
        one_hot_logits(SEG_IDS, 3),
        SAME,
        SEG_IDS,
        {"bg": 6 / 16, "a": 4 / 16, "b": 6 / 16},
        id="argmax-4x4-output-of-128-input",
    ),
    pytest.param(
        {},
        one_hot_logits(SEG_IDS, 3),
        SAME,
        SEG_IDS,
        {"class_0": 6 / 16, "class_1": 4 / 16, "class_2": 6 / 16},
        id="default-classes",
    ),
    pytest.param(
        {"classes": ["bg", "a", "b"], "min_area": 0.3},
        one_hot_logits(SEG_IDS, 3),
        SAME,
        SEG_IDS,
        {"bg": 6 / 16, "b": 6 / 16},
        id="min-area",
    ),
    pytest.param(
        {"classes": ["bg", "a", "pad"]},
        one_hot_logits(PADDED_IDS, 3),
        WIDE,
        PADDED_IDS[1:3],
        {"bg": 4 / 8, "a": 4 / 8},
        id="letterbox-content-crop-half-resolution",
    ),
    pytest.param(
        {"classes": ["bg", "a", "pad"]},
        np.repeat(np.repeat(one_hot_logits(PADDED_IDS, 3), 2, axis=2), 2, axis=3),
        WIDE,
        np.repeat(np.repeat(PADDED_IDS[1:3], 2, axis=0), 2, axis=1),
        {"bg": 4 / 8, "a": 4 / 8},
        id="letterbox-content-crop-full-resolution",
    ),
    pytest.param(
        {"classes": ["background", "shape"]},
        np.array([[[[0.1, 0.5], [0.9, 0.49]]]]),
        SAME,
        np.array([[0, 1], [1, 0]]),
        {"background": 0.5, "shape": 0.5},
        id="single-channel-1x1xHxW",
    ),
    pytest.param(
        {"threshold": 0.8},
        np.array([[[0.1, 0.5], [0.9, 0.49]]]),
        SAME,
        np.array([[0, 0], [1, 0]]),
        {"class_0": 0.75, "class_1": 0.25},
        id="single-channel-1xHxW-threshold",
    ),
]


@pytest.mark.parametrize(("params", "logits", "geometry", "mask", "areas"), SEGMENTATION_CASES)
def test_segmentation(
    params: dict[str, Any], logits: np.ndarray, geometry: FrameGeometry, mask: np.ndarray, areas: dict[str, float]
) -> None:
    result = decode("segmentation", params, {"mask": logits}, geometry)

    assert isinstance(result, Segmentation)
    assert result.mask.dtype == np.uint8
    np.testing.assert_array_equal(result.mask, mask)
    assert result.class_areas == pytest.approx(areas)
    assert result.region is None
    assert (result.frame_width, result.frame_height) == (geometry.frame_width, geometry.frame_height)


@pytest.mark.parametrize(
    ("params", "classes"),
    [
        pytest.param({}, ("class_0", "class_1", "class_2"), id="default-classes-from-max-id"),
        pytest.param({"classes": ["bg", "a", "pad", "other"]}, ("bg", "a", "pad", "other"), id="named-classes"),
    ],
)
def test_segmentation_integer_class_ids_taken_as_they_are(params: dict[str, Any], classes: tuple[str, ...]) -> None:
    decoder = build_decoder("head", DecoderSpec("segmentation", params), ["ids"])

    result = decoder({"ids": PADDED_IDS[None].astype(np.int64)}, WIDE)

    np.testing.assert_array_equal(result.mask, PADDED_IDS[1:3])
    assert result.classes == classes
    assert result.class_areas == {classes[0]: 0.5, classes[1]: 0.5}


def test_segmentation_to_frame_size_under_letterbox() -> None:
    result = decode("segmentation", {}, {"mask": one_hot_logits(PADDED_IDS, 3)}, WIDE)

    full = result.to_frame_size()

    assert full.shape == (4, 8) and full.dtype == np.uint8
    np.testing.assert_array_equal(full, np.repeat(np.repeat(PADDED_IDS[1:3], 2, axis=0), 2, axis=1))


def test_segmentation_to_frame_size_under_center_crop() -> None:
    # An 8x4 frame centre-cropped to 4x4: the model sees frame columns 2..6 only.
    geometry = FrameGeometry.center_crop(8, 4, 4, 4)

    result = decode("segmentation", {}, {"mask": one_hot_logits(np.ones((4, 4), dtype=np.int64), 2)}, geometry)

    assert result.region == (2.0, 0.0, 6.0, 4.0)
    expected = np.zeros((4, 8), dtype=np.uint8)
    expected[:, 2:6] = 1
    np.testing.assert_array_equal(result.to_frame_size(), expected)


@pytest.mark.parametrize(
    ("mask", "values", "counts"),
    [
        pytest.param(np.array([[0, 0, 1], [1, 1, 0]], dtype=np.uint8), [0, 1, 0], [2, 3, 1], id="row-major-runs"),
        pytest.param(np.full((2, 2), 3, dtype=np.uint8), [3], [4], id="one-run"),
        pytest.param(np.array([[300, 300, 0]], dtype=np.int32), [300, 0], [2, 1], id="int32-ids"),
        pytest.param(np.zeros((0, 3), dtype=np.uint8), [], [], id="empty"),
    ],
)
def test_rle_encodes_runs_and_round_trips(mask: np.ndarray, values: list[int], counts: list[int]) -> None:
    rle = encode_rle(mask)

    assert rle == {"shape": list(mask.shape), "values": values, "counts": counts}
    decoded = decode_rle(json.loads(json.dumps(rle)))
    assert decoded.dtype == mask.dtype
    np.testing.assert_array_equal(decoded, mask)


def test_segmentation_round_trips_through_to_dict() -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 3, size=(6, 5))
    result = decode("segmentation", {"classes": ["x", "y", "z"]}, {"mask": one_hot_logits(ids, 3)}, SAME)

    data = json.loads(json.dumps(result.to_dict()))
    again = Segmentation.from_dict(data)

    assert set(data) == {"classes", "class_areas", "frame_size", "rle"}
    assert data["class_areas"] == {k: round(v, 4) for k, v in result.class_areas.items()}
    np.testing.assert_array_equal(again.mask, ids)
    assert again.classes == ("x", "y", "z") and again.frame_width == 128


@pytest.mark.parametrize(
    "rle",
    [
        pytest.param({"shape": [2, 2], "values": [0], "counts": [3]}, id="too-few-pixels"),
        pytest.param({"shape": [2, 2], "values": [0, 1], "counts": [4]}, id="length-mismatch"),
        pytest.param({"values": [0], "counts": [4]}, id="no-shape"),
    ],
)
def test_rle_decode_rejects_bad_encodings(rle: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        decode_rle(rle)


# --- landmarks, regression, embedding, raw ---------------------------------------------------

#: Model-input (64, 64) is the frame centre (320, 240); (0, 16) is the frame's top-left corner.
LANDMARK_CASES = [
    pytest.param({}, [[[64, 64], [0, 16]]], [[320, 240], [0, 0]], None, ("point_0", "point_1"), id="Kx2"),
    pytest.param(
        {"names": ["nose", "eye"]},
        [[[64, 64, 0.9], [0, 16, 0.2]]],
        [[320, 240], [0, 0]],
        [0.9, 0.2],
        ("nose", "eye"),
        id="Kx3-with-scores",
    ),
    pytest.param({}, [[64, 64, 0, 16]], [[320, 240], [0, 0]], None, ("point_0", "point_1"), id="flat-2K"),
    pytest.param(
        {"normalized": True, "score_threshold": 0.5},
        [[[0.5, 0.5, 0.1], [1.0, 0.875, 0.7], [0.0, 0.0, 0.3]]],
        [[320, 240], [640, 480], [0, -80]],
        [0.1, 0.7, 0.3],
        ("point_0", "point_1", "point_2"),
        id="normalized-low-scores-kept-not-clipped",
    ),
]


@pytest.mark.parametrize(("params", "raw", "points", "scores", "names"), LANDMARK_CASES)
def test_landmarks(
    params: dict[str, Any],
    raw: Any,
    points: list[list[float]],
    scores: list[float] | None,
    names: tuple[str, ...],
) -> None:
    result = decode("landmarks", params, {"kp": raw}, LETTERBOX)

    assert isinstance(result, Landmarks)
    assert result.points.dtype == np.float32
    np.testing.assert_allclose(result.points, points, rtol=1e-6, atol=1e-4)
    if scores is None:
        assert result.scores is None
    else:
        assert result.scores is not None
        np.testing.assert_allclose(result.scores, scores, rtol=1e-6)
    assert result.names == names


REGRESSION_CASES = [
    pytest.param(
        # The demo model's box head: sigmoid output, normalised xyxy of the 128x128 input.
        {"names": ["x1", "y1", "x2", "y2"], "box_format": "xyxy", "normalized": True},
        {"box": [[0.25, 0.3125, 0.75, 0.6875]]},
        [0.25, 0.3125, 0.75, 0.6875],
        ("x1", "y1", "x2", "y2"),
        [160, 120, 480, 360],
        id="demo-box-head-normalized-xyxy",
    ),
    pytest.param(
        {"box_format": "cxcywh"},
        {"box": [[64, 64, 64, 48]]},
        [64, 64, 64, 48],
        ("value_0", "value_1", "value_2", "value_3"),
        [160, 120, 480, 360],
        id="cxcywh-pixels",
    ),
    pytest.param(
        {"scale": 2.0, "names": ["age", "height"]},
        {"out": [[[1.5], [-0.25]]]},
        [3.0, -0.5],
        ("age", "height"),
        None,
        id="scale-flatten-no-box",
    ),
    pytest.param(
        {},
        {"a": [[1.0]], "b": [[2.0, 3.0]]},
        [1.0, 2.0, 3.0],
        ("value_0", "value_1", "value_2"),
        None,
        id="outputs-concatenated",
    ),
]


@pytest.mark.parametrize(("params", "tensors", "values", "names", "box"), REGRESSION_CASES)
def test_regression(
    params: dict[str, Any],
    tensors: dict[str, Any],
    values: list[float],
    names: tuple[str, ...],
    box: list[float] | None,
) -> None:
    result = decode("regression", params, tensors, LETTERBOX)

    assert isinstance(result, Regression)
    assert result.values.dtype == np.float32
    np.testing.assert_allclose(result.values, values, rtol=1e-6)
    assert result.names == names
    if box is None:
        assert result.box is None
    else:
        assert result.box is not None
        np.testing.assert_allclose(result.box, box, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize(
    ("params", "raw", "vector"),
    [
        pytest.param({}, [[3.0, 4.0]], [0.6, 0.8], id="l2-normalised"),
        pytest.param({}, [[[0.0], [0.0]]], [0.0, 0.0], id="zero-stays-zero"),
        pytest.param({"normalize": False}, [[3.0, 4.0]], [3.0, 4.0], id="not-normalised"),
    ],
)
def test_embedding(params: dict[str, Any], raw: Any, vector: list[float]) -> None:
    result = decode("embedding", params, {"emb": raw})

    assert isinstance(result, Embedding) and result.vector.dtype == np.float32
    np.testing.assert_allclose(result.vector, vector, rtol=1e-6)


def test_embedding_has_unit_norm() -> None:
    raw = np.random.default_rng(1).normal(size=(1, 128)).astype(np.float32) * 7

    result = decode("embedding", {}, {"emb": raw})

    assert float(np.linalg.norm(result.vector)) == pytest.approx(1.0, abs=1e-6)


def test_raw_returns_item_zero_copied() -> None:
    a = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    b = np.array([[7, 8]], dtype=np.int64)
    decoder = build_decoder("head", DecoderSpec("raw"), ["a", "b"])

    result = decoder({"a": a, "b": b}, SAME)
    a[0, 0, 0] = 99.0

    assert isinstance(result, RawOutput) and list(result.tensors) == ["a", "b"]
    np.testing.assert_array_equal(result.tensors["a"], np.arange(6).reshape(2, 3))
    assert result.tensors["b"].dtype == np.int64 and result.tensors["b"].tolist() == [7, 8]
    assert result.to_dict()["b"] == {"shape": [2], "dtype": "int64", "data": [7, 8]}


# --- errors ---------------------------------------------------------------------------------

BUILD_ERRORS = [
    pytest.param(
        "clasification", {}, ["x"], ["head 'h'", "'clasification'", "did you mean 'classification'"], id="type"
    ),
    pytest.param(
        "detection",
        {"box_format": "xyxz"},
        ["x"],
        ["head 'h'", "'box_format'", "did you mean 'xyxy'", "valid choices: xyxy, xywh, cxcywh"],
        id="box-format-value",
    ),
    pytest.param("classification", {"top_k": "3"}, ["x"], ["head 'h'", "'top_k' must be int"], id="top-k-type"),
    pytest.param("classification", {"top_k": 0}, ["x"], ["'top_k' must be an integer >= 1"], id="top-k-zero"),
    pytest.param("classification", {"softmax": "yes"}, ["x"], ["'softmax' must be bool"], id="flag-type"),
    pytest.param(
        "detection", {"score_threshold": 1.5}, ["x"], ["'score_threshold' must be between 0.0 and 1.0"], id="range"
    ),
    pytest.param("detection", {"iou_threshold": True}, ["x"], ["'iou_threshold' must be number"], id="bool-not-num"),
    pytest.param(
        "detection",
        {"anchors": [[10, 13, 16, 30]], "strides": [8]},
        ["x"],
        ["head 'h'", "'anchors' belongs to the 'ssd' decoder", "(1, N, 4+C)", "--suggest-head-spec"],
        id="anchors-other-family",
    ),
    pytest.param(
        "detection", {"strides": [8, 16]}, ["x"], ["'strides' belongs to the 'grid' decoder"], id="strides-other-family"
    ),
    pytest.param("segmentation", {"classes": "bg"}, ["x"], ["'classes' must be a non-empty list"], id="names-type"),
    pytest.param("landmarks", {"names": ["a", "a"]}, ["x"], ["distinct names"], id="duplicate-names"),
    pytest.param("classification", {}, ["x", "y"], ["reads 1 output(s)", "the head has 2 (x, y)"], id="two-outputs"),
    pytest.param("detection", {}, ["x", "y", "z"], ["reads 1 to 2 output(s)"], id="three-outputs"),
    pytest.param("detection", {"objectness": True}, ["x", "y"], ["'objectness'", "one-output"], id="objectness-two"),
    pytest.param("regression", {"box_format": "xyxy", "names": ["a"]}, ["x"], ["needs 4 values"], id="box-names"),
]


@pytest.mark.parametrize(("kind", "params", "outputs", "fragments"), BUILD_ERRORS)
def test_build_errors(kind: str, params: dict[str, Any], outputs: list[str], fragments: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        build_decoder("h", DecoderSpec(kind, params), outputs)

    for fragment in fragments:
        assert fragment in str(info.value)


CALL_ERRORS = [
    pytest.param(
        "classification", {}, {"logits": np.zeros((1, 3, 4))}, ["head 'h'", "'logits'", "(1, 3, 4)"], id="cls-rank"
    ),
    pytest.param(
        "classification",
        {"labels": ["a", "b"]},
        {"logits": np.zeros((1, 3))},
        ["'logits'", "(1, 3)", "(1, 2): one score per label"],
        id="cls-label-count",
    ),
    pytest.param("classification", {}, {"logits": np.float32(1.0)}, ["'logits'", "batch dimension"], id="no-batch"),
    pytest.param("detection", {}, {"det": np.zeros((1, 6))}, ["head 'h'", "'det'", "(1, 6)"], id="det-rank"),
    pytest.param(
        "detection", {"labels": ["a"]}, {"det": np.zeros((1, 8, 7))}, ["(1, 8, 7)", "C = 1 labels"], id="det-width"
    ),
    pytest.param("detection", {}, {"det": np.zeros((1, 8, 4))}, ["at least one class"], id="det-no-classes"),
    pytest.param(
        "detection",
        {},
        {"boxes": np.zeros((1, 8, 4)), "scores": np.zeros((1, 7, 2))},
        ["'scores'", "(1, 7, 2)"],
        id="det-two-mismatch",
    ),
    pytest.param("segmentation", {}, {"mask": np.zeros((1, 2, 3, 4, 5))}, ["'mask'", "(1, 2, 3, 4, 5)"], id="seg-rank"),
    pytest.param(
        "segmentation", {"classes": ["a", "b", "c"]}, {"mask": np.zeros((1, 2, 4, 4))}, ["3 classes"], id="seg-classes"
    ),
    pytest.param(
        "segmentation",
        {"classes": ["a", "b"]},
        {"mask": np.array([[[0, 2], [1, 0]]], dtype=np.int64)},
        ["'mask'", "class ids in 0..1, got 0..2"],
        id="seg-id-out-of-range",
    ),
    pytest.param("landmarks", {}, {"kp": np.zeros((1, 5, 4))}, ["'kp'", "(1, 5, 4)"], id="landmarks-width"),
    pytest.param("landmarks", {}, {"kp": np.zeros((1, 5))}, ["(1, 5)", "(1, 2K)"], id="landmarks-odd-flat"),
    pytest.param("regression", {"box_format": "xyxy"}, {"r": np.zeros((1, 5))}, ["(1, 5)", "xyxy box"], id="reg-box"),
    pytest.param("regression", {"names": ["a"]}, {"r": np.zeros((1, 2))}, ["1 values, one per name"], id="reg-names"),
]


@pytest.mark.parametrize(("kind", "params", "tensors", "fragments"), CALL_ERRORS)
def test_call_errors_name_head_output_and_shape(
    kind: str, params: dict[str, Any], tensors: dict[str, Any], fragments: list[str]
) -> None:
    decoder = build_decoder("h", DecoderSpec(kind, params), list(tensors))

    with pytest.raises(ModelError) as info:
        decoder(tensors, SAME)

    for fragment in fragments:
        assert fragment in str(info.value)


def test_missing_output_is_named() -> None:
    decoder = build_decoder("h", DecoderSpec("embedding"), ["emb"])

    with pytest.raises(ModelError, match=r"head 'h': output 'emb' is missing; got 'other'"):
        decoder({"other": np.zeros((1, 4))}, SAME)


# --- results --------------------------------------------------------------------------------

RESULT_ERRORS = [
    pytest.param(lambda: Detections(np.zeros(4), [0.5], [0], ("a",)), "xyxy must have shape (n, 4)", id="det-xyxy"),
    pytest.param(lambda: Detections(np.zeros((2, 4)), [0.5], [0, 1], ("a", "b")), "scores", id="det-scores"),
    pytest.param(lambda: Classification([0, 1], [0.1, 0.9], ("a", "b")), "sorted descending", id="cls-order"),
    pytest.param(lambda: Classification([0], [0.9], ("a", "b")), "must be 1 strings", id="cls-labels"),
    pytest.param(
        lambda: Segmentation(np.zeros((2, 2), np.float32), ("a",), {}, 2, 2), "uint8 or int32", id="seg-dtype"
    ),
    pytest.param(lambda: Segmentation(np.full((2, 2), 2, np.uint8), ("a", "b"), {}, 2, 2), "0..1", id="seg-ids"),
    pytest.param(lambda: Landmarks(np.zeros((2, 3)), None, ("a", "b")), "(n, 2)", id="landmarks-points"),
    pytest.param(lambda: Regression([1.0, 2.0], ("a", "b"), box=[1.0, 2.0]), "box must have shape (4,)", id="reg-box"),
    pytest.param(lambda: FrameResult(-1, 0.0, {}), "frame_id", id="frame-id"),
    pytest.param(lambda: FrameResult(0, 0.0, {"e": Embedding([1.0])}, skipped=("e",)), "skipped", id="ran-skipped"),
]


@pytest.mark.parametrize(("build", "message"), RESULT_ERRORS)
def test_results_validate_shapes_and_dtypes(build: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        build()

    assert message in str(info.value)


def test_frame_result_to_dict_is_the_result_line() -> None:
    segmentation = Segmentation(np.array([[0, 1], [1, 1]], np.uint8), ("bg", "fg"), {"bg": 0.25, "fg": 0.75}, 4, 4)
    frame = FrameResult(
        frame_id=12,
        timestamp=1764000000.123456,
        results={
            "cls": Classification([1, 0], [0.87654, 0.12346], ("dog", "cat")),
            "det": Detections([[1.234567, 2.0, 3.0, 4.0]], [0.5], [0], ("dog",)),
            "seg": segmentation,
            "reg": Regression([float("nan"), 1.0], ("a", "b")),
            "raw": RawOutput({"t": np.array([[0.123456, float("inf")]], np.float32)}),
        },
        latency_ms={"preprocess": 1.23456, "trunk": 2.0, "head:cls": 0.1, "total": 3.5},
        skipped=("mask",),
    )

    line = frame.to_dict(device="pi-01", seq=42)
    text = json.dumps(line, allow_nan=False)

    assert list(line) == ["device", "seq", "frame_id", "ts", "results", "latency_ms"]
    assert json.loads(text) == line
    assert (line["device"], line["seq"], line["frame_id"], line["ts"]) == ("pi-01", 42, 12, 1764000000.123456)
    assert line["latency_ms"] == {"preprocess": 1.235, "trunk": 2.0, "head:cls": 0.1, "total": 3.5}
    assert line["results"]["cls"] == {"labels": ["dog", "cat"], "class_ids": [1, 0], "scores": [0.8765, 0.1235]}
    assert line["results"]["det"]["xyxy"] == [[1.23, 2.0, 3.0, 4.0]]
    assert line["results"]["seg"]["rle"] == {"shape": [2, 2], "values": [0, 1], "counts": [1, 3]}
    assert line["results"]["seg"]["class_areas"] == {"bg": 0.25, "fg": 0.75}
    assert line["results"]["reg"]["values"] == [None, 1.0]
    assert line["results"]["raw"]["t"] == {"shape": [1, 2], "dtype": "float32", "data": [[0.1235, None]]}
    assert "mask" not in line["results"]


# --- YOLO keypoints (pose), landmarks relative to a box, presence ---------------------------------


def _pose_rows(boxes_cxcywh: list[list[float]], scores: list[float], keypoints: list[list[list[float]]]) -> np.ndarray:
    """YOLOv8-pose rows ``(1, 4+1+K*3, N)`` from known boxes, person scores and keypoints."""
    rows = [[*b, s, *np.asarray(k).ravel()] for b, s, k in zip(boxes_cxcywh, scores, keypoints, strict=True)]
    return np.asarray(rows, np.float32).T[None]


def test_yolo_pose_keypoints_come_back_in_frame_pixels() -> None:
    kp = [[[30.0, 40.0, 0.9], [50.0, 60.0, 0.2]], [[90.0, 80.0, 0.7], [100.0, 110.0, 0.6]]]
    rows = _pose_rows([[40.0, 50.0, 20.0, 40.0], [95.0, 95.0, 30.0, 30.0]], [0.9, 0.8], kp)
    params = {"labels": ["person"], "box_format": "cxcywh", "keypoints": 2, "keypoint_names": ["nose", "eye"]}

    result = decode("detection", params, {"output0": rows}, LETTERBOX)

    assert result.labels == ("person", "person")
    assert result.keypoint_names == ("nose", "eye")
    expected = LETTERBOX.to_frame(np.array([p[:2] for box in kp for p in box], np.float32)).reshape(2, 2, 2)
    np.testing.assert_allclose(result.keypoints, expected, atol=1e-3)
    np.testing.assert_allclose(result.keypoint_scores, [[0.9, 0.2], [0.7, 0.6]], atol=1e-6)
    back = result.to_dict()
    assert back["keypoint_names"] == ["nose", "eye"] and len(back["keypoints"][0]) == 2


def test_yolo_keypoints_before_classes_with_objectness_and_sigmoid() -> None:
    # YOLOv5-face rows: box (4), objectness, 1 keypoint (x, y) x 1, then 1 class
    rows = np.array([[[64.0, 64.0, 20.0, 20.0, 0.9, 60.0, 58.0, 0.8]]], np.float32)
    params = {
        "box_format": "cxcywh",
        "objectness": True,
        "keypoints": 1,
        "keypoint_dims": 2,
        "keypoint_position": "before_classes",
        "labels": ["face"],
    }

    result = decode("detection", params, {"out": rows})

    np.testing.assert_allclose(result.scores, [0.72], atol=1e-6)
    np.testing.assert_allclose(result.keypoints, [[[60.0, 58.0]]])
    assert result.keypoint_scores is None


def test_yolo_keypoint_count_that_does_not_fit_names_the_output() -> None:
    rows = _pose_rows([[40.0, 50.0, 20.0, 40.0]], [0.9], [[[1.0, 2.0, 0.5]]])  # 1 keypoint in the tensor
    with pytest.raises(ModelError, match=r"head 'head': output 'output0' has shape \(1, 8, 1\).*4\+C\+2\*3"):
        decode("detection", {"labels": ["person"], "keypoints": 2}, {"output0": rows})


def test_landmarks_relative_to_a_box_output_and_presence() -> None:
    params = {"names": ["a", "b"], "box_output": "box", "presence_output": "prob"}
    tensors = {
        "marks": [[[0.0, 0.0], [0.5, 1.0]]],
        "box": [[10.0, 20.0, 50.0, 100.0]],
        "prob": [[0.1, 0.9]],
    }

    result = decode("landmarks", params, tensors)

    np.testing.assert_allclose(result.points, [[10.0, 20.0], [30.0, 100.0]])
    assert result.presence == pytest.approx(0.9)
    assert result.to_dict()["presence"] == 0.9

    tensors["prob"] = [[0.8, 0.2]]
    absent = decode("landmarks", params, tensors)
    assert len(absent) == 0 and absent.presence == pytest.approx(0.2)


def test_landmarks_outputs_must_be_named_and_known() -> None:
    with pytest.raises(ConfigError, match=r"'box_output' names 'bx', which is not an output of the head"):
        build_decoder("h", DecoderSpec("landmarks", {"box_output": "bx"}), ["marks", "box"])
    with pytest.raises(ConfigError, match=r"one points output besides box_output"):
        build_decoder("h", DecoderSpec("landmarks", {}), ["marks", "box"])


def test_landmarks_flat_output_with_all_x_then_all_y() -> None:
    # MTCNN O-Net: 5 x values, then 5 y values, in 0..1 of the input crop
    flat = [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]]
    result = decode("landmarks", {"order": "x_then_y", "normalized": True}, {"marks": flat})
    np.testing.assert_allclose(result.points, [[12.8, 76.8], [25.6, 89.6], [38.4, 102.4], [51.2, 115.2], [64.0, 128.0]])
