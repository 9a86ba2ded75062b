"""exporter.fidelity: per-task agreement of a quantized head with the float model (pure numpy)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest

from edge_runtime.bundle.specs import DecoderSpec
from edge_runtime.inference.fidelity import MEASURES
from exporter.fidelity import METRICS, Fidelity, box_iou, head_fidelity

SIZE = (128, 128)

# Decoder specs as in examples/demo_heads.toml, plus a detection head (one (1, N, 4+C) output, xyxy pixels).
SHAPE = DecoderSpec("classification", {"labels": ["circle", "square", "triangle"], "top_k": 3})
MASK = DecoderSpec("segmentation", {"classes": ["background", "shape"]})
BOX = DecoderSpec("regression", {"names": ["x1", "y1", "x2", "y2"], "box_format": "xyxy", "normalized": True})
OBJECTS = DecoderSpec("detection", {"labels": ["cat", "dog"], "score_threshold": 0.5})
POINTS = DecoderSpec("landmarks", {"names": ["left", "right", "nose"]})
EMBEDDING = DecoderSpec("embedding", {})

Sample = dict[str, np.ndarray]


def samples(name: str, tensors: Iterable[Any]) -> list[Sample]:
    """One sample per tensor, each under output ``name``, float32."""
    return [{name: np.asarray(t, dtype=np.float32)} for t in tensors]


def copy(reference: list[Sample]) -> list[Sample]:
    return [{k: v.copy() for k, v in s.items()} for s in reference]


def logits(top: int) -> np.ndarray:
    """``(1, 3)`` logits whose best class is ``top``."""
    out = np.array([[0.1, 0.2, 0.3]], np.float32)
    out[0, top] = 4.0
    return out


def masks(count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` segmentation outputs ``(1, 2, 5, 10)`` with clear argmax (no ties)."""
    classes = rng.integers(0, 2, size=(count, 5, 10))
    out = np.zeros((count, 1, 2, 5, 10), np.float32)
    out[:, 0, 1] = np.where(classes == 1, 2.0, -2.0)
    return out


def detections(*rows: tuple[float, float, float, float, int, float]) -> np.ndarray:
    """``(1, N, 4+2)`` detection output: ``(x1, y1, x2, y2, class, score)`` per row (at least one row)."""
    out = np.zeros((1, max(len(rows), 1), 6), np.float32)
    for i, (x1, y1, x2, y2, cls, score) in enumerate(rows):
        out[0, i, :4] = (x1, y1, x2, y2)
        out[0, i, 4 + cls] = score
    return out


CAT = (10.0, 10.0, 50.0, 50.0, 0, 0.9)
DOG = (60.0, 60.0, 100.0, 120.0, 1, 0.8)


def moved(
    row: tuple[float, float, float, float, int, float], dx: float
) -> tuple[float, float, float, float, int, float]:
    x1, y1, x2, y2, cls, score = row
    return (x1 + dx, y1, x2 + dx, y2, cls, score)


# --- each metric: a perfect candidate agrees fully --------------------------------------------------------

RNG = np.random.default_rng(0)

PERFECT_CASES = [
    pytest.param(SHAPE, samples("logits", [logits(i % 3) for i in range(4)]), "top1_agreement", id="classification"),
    pytest.param(MASK, samples("mask", masks(3, RNG)), "pixel_agreement", id="segmentation"),
    pytest.param(
        OBJECTS,
        samples("dets", [detections(CAT, DOG), detections(DOG)]),
        "detections_matched_iou0.9",
        id="detection",
    ),
    pytest.param(BOX, samples("box", RNG.random((4, 1, 4))), "relative_error", id="regression"),
    pytest.param(POINTS, samples("points", RNG.random((4, 1, 3, 2)) * 128), "relative_error", id="landmarks"),
    pytest.param(EMBEDDING, samples("vector", RNG.normal(size=(4, 1, 16))), "cosine_similarity", id="embedding"),
    pytest.param(None, samples("raw", RNG.normal(size=(4, 1, 2, 3))), "cosine_similarity", id="raw"),
    pytest.param(
        DecoderSpec("custom", {}), samples("raw", RNG.normal(size=(2, 1, 5))), "cosine_similarity", id="unknown-type"
    ),
]


@pytest.mark.parametrize(("spec", "reference", "metric"), PERFECT_CASES)
def test_perfect_candidate_agrees_fully(spec: DecoderSpec | None, reference: list[Sample], metric: str) -> None:
    outputs = list(reference[0])
    fidelity = head_fidelity("head", spec, outputs, reference, copy(reference), SIZE)
    assert (fidelity.metric, fidelity.value, fidelity.samples) == (metric, 1.0, len(reference))
    assert fidelity.meets(1.0)
    json.dumps(fidelity.to_dict(), allow_nan=False)


def test_metrics_lists_every_metric_once() -> None:
    assert METRICS == (
        "top1_agreement",
        "pixel_agreement",
        "detections_matched_iou0.9",
        "relative_error",
        "cosine_similarity",
    )


# --- classification ----------------------------------------------------------------------------------------


def test_classification_one_flipped_top_class_in_four() -> None:
    reference = samples("logits", [logits(0), logits(1), logits(2), logits(0)])
    candidate = copy(reference)
    candidate[2]["logits"] = logits(1)
    fidelity = head_fidelity("shape", SHAPE, ["logits"], reference, candidate, SIZE)
    assert fidelity.value == 0.75
    assert fidelity.detail["disagreements"] == 1


def test_classification_reports_top_score_difference() -> None:
    reference = samples("logits", [np.log([[0.7, 0.2, 0.1]]), np.log([[0.1, 0.8, 0.1]])])
    candidate = samples("logits", [np.log([[0.6, 0.3, 0.1]]), np.log([[0.1, 0.8, 0.1]])])
    fidelity = head_fidelity("shape", SHAPE, ["logits"], reference, candidate, SIZE)
    assert fidelity.value == 1.0
    assert fidelity.detail["mean_top_score_difference"] == pytest.approx(0.05, abs=1e-6)


# --- segmentation ------------------------------------------------------------------------------------------


def test_segmentation_ten_of_a_hundred_pixels_changed() -> None:
    reference = samples("mask", masks(2, np.random.default_rng(1)))  # 2 x 5 x 10 = 100 pixels
    candidate = copy(reference)
    candidate[1]["mask"][0, 1, 2, :] *= -1  # flip one row of 10 pixels of the second sample
    fidelity = head_fidelity("mask", MASK, ["mask"], reference, candidate, SIZE)
    assert fidelity.value == pytest.approx(0.9)
    assert fidelity.detail == {"pixels": 100, "differing_pixels": 10, "worst_sample_agreement": 0.8}


# --- detection ---------------------------------------------------------------------------------------------

DETECTION_CASES = [
    pytest.param([[CAT, DOG]], [[moved(CAT, 1.0), DOG]], 1.0, 0, id="small-shift-still-matched"),
    pytest.param([[CAT, DOG]], [[moved(CAT, 4.0), DOG]], 0.5, 1, id="shift-below-iou-0.9"),
    pytest.param([[CAT, DOG]], [[(*CAT[:4], 1, 0.9), DOG]], 0.5, 1, id="other-class-not-matched"),
    pytest.param([[CAT, DOG]], [[DOG]], 0.5, 0, id="missed-detection"),
    pytest.param([[CAT]], [[CAT, DOG]], 1.0, 1, id="extra-candidate-detection"),
    pytest.param([[CAT, DOG], []], [[CAT, DOG], []], 1.0, 0, id="sample-without-detections-adds-nothing"),
    pytest.param([[CAT], []], [[CAT], [DOG]], 1.0, 1, id="extra-in-sample-without-reference"),
    pytest.param([[], []], [[], []], 1.0, 0, id="no-reference-detections-none-in-candidate"),
    pytest.param([[], []], [[], [DOG]], 0.0, 1, id="no-reference-detections-but-candidate-has"),
    pytest.param([[CAT]], [[(*CAT[:5], 0.3)]], 0.0, 0, id="candidate-below-score-threshold"),
]


@pytest.mark.parametrize(("reference_rows", "candidate_rows", "value", "extra"), DETECTION_CASES)
def test_detection_matched_fraction(
    reference_rows: list[list[Any]], candidate_rows: list[list[Any]], value: float, extra: int
) -> None:
    reference = samples("dets", [detections(*rows) for rows in reference_rows])
    candidate = samples("dets", [detections(*rows) for rows in candidate_rows])
    # Same shapes on both sides: pad the shorter side with empty (zero-score) rows.
    for ref, cand in zip(reference, candidate, strict=True):
        n = max(ref["dets"].shape[1], cand["dets"].shape[1])
        for sample in (ref, cand):
            sample["dets"] = np.pad(sample["dets"], ((0, 0), (0, n - sample["dets"].shape[1]), (0, 0)))
    fidelity = head_fidelity("objects", OBJECTS, ["dets"], reference, candidate, SIZE)
    assert fidelity.metric == "detections_matched_iou0.9"
    assert fidelity.value == value
    assert fidelity.detail["extra"] == extra
    assert fidelity.detail["reference_detections"] == sum(len(rows) for rows in reference_rows)


def test_detection_each_candidate_matches_once() -> None:
    # Two overlapping cats (NMS off) and one candidate cat that overlaps both at IoU >= 0.9.
    spec = DecoderSpec("detection", {"labels": ["cat", "dog"], "iou_threshold": 1.0})
    other_cat = (10.0, 10.0, 50.0, 52.0, 0, 0.8)
    assert box_iou(np.array([CAT[:4]]), np.array([other_cat[:4]]))[0, 0] >= 0.9
    reference = samples("dets", [detections(CAT, other_cat)])
    candidate = samples("dets", [detections(CAT, (0, 0, 0, 0, 0, 0.0))])
    fidelity = head_fidelity("objects", spec, ["dets"], reference, candidate, SIZE)
    assert fidelity.value == 0.5
    assert fidelity.detail["matched"] == 1
    assert fidelity.detail["mean_matched_iou"] == 1.0


def test_box_iou() -> None:
    iou = box_iou(
        np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]])
    )
    np.testing.assert_allclose(iou, [[1.0, 50 / 150, 0.0, 0.0]])


# --- regression and landmarks ------------------------------------------------------------------------------

RELATIVE_CASES = [
    # reference samples, candidate samples, value, mean and max relative error (range 1 unless noted)
    pytest.param([[0, 0.2, 0.4, 1], [0.5] * 4], [[0.01, 0.21, 0.41, 1.01], [0.51] * 4], 0.99, 0.01, 0.01, id="shift"),
    pytest.param([[0, 0.5, 0.5, 1]], [[0, 0.5, 0.5, 1.2]], 0.95, 0.05, 0.2, id="one-value-off"),
    pytest.param([[5] * 4, [5] * 4], [[5.5] * 4, [5] * 4], 0.95, 0.05, 0.1, id="zero-range-uses-max-abs"),
    pytest.param([[0] * 4], [[0.25] * 4], 0.75, 0.25, 0.25, id="all-zero-uses-one"),
    pytest.param([[0, 0, 0, 1]], [[3, 3, 3, 4]], 0.0, 3.0, 3.0, id="clipped-to-zero"),
]


@pytest.mark.parametrize(("ref", "cand", "value", "mean_error", "max_error"), RELATIVE_CASES)
def test_regression_relative_error(
    ref: list[list[float]], cand: list[list[float]], value: float, mean_error: float, max_error: float
) -> None:
    reference = samples("box", [[row] for row in ref])
    candidate = samples("box", [[row] for row in cand])
    fidelity = head_fidelity("box", BOX, ["box"], reference, candidate, SIZE)
    assert fidelity.metric == "relative_error"
    assert fidelity.value == pytest.approx(value, abs=1e-6)
    assert fidelity.detail["max_relative_error"] == pytest.approx(max_error, abs=1e-6)
    assert fidelity.detail["mean_relative_error"] == pytest.approx(mean_error, abs=1e-6)


def test_landmarks_compare_raw_tensors_relative_to_range() -> None:
    points = np.array([[[[0.0, 10.0], [50.0, 60.0], [100.0, 20.0]]]] * 2, np.float32)  # range 100
    reference = samples("points", points)
    candidate = samples("points", points + 1.0)
    fidelity = head_fidelity("face", POINTS, ["points"], reference, candidate, SIZE)
    assert (fidelity.metric, fidelity.value) == ("relative_error", pytest.approx(0.99))
    assert fidelity.detail["outputs"]["points"]["range"] == 100.0


def test_regression_several_outputs_takes_the_worst() -> None:
    spec = DecoderSpec("regression", {})
    reference = [{"a": np.array([[0.0, 1.0]], np.float32), "b": np.array([[0.0, 10.0]], np.float32)}]
    candidate = [{"a": np.array([[0.0, 1.0]], np.float32), "b": np.array([[1.0, 9.0]], np.float32)}]
    fidelity = head_fidelity("pair", spec, ["a", "b"], reference, candidate, SIZE)
    assert fidelity.value == pytest.approx(0.9)
    assert fidelity.detail["outputs"]["a"]["mean_relative_error"] == 0.0
    assert fidelity.detail["outputs"]["b"]["mean_relative_error"] == pytest.approx(0.1)


# --- cosine similarity -------------------------------------------------------------------------------------

COSINE_CASES = [
    pytest.param([[1.0, 0.0]], [[0.0, 1.0]], 0.0, id="orthogonal"),
    pytest.param([[1.0, 2.0]], [[-1.0, -2.0]], 0.0, id="opposite-clipped"),
    pytest.param([[1.0, 2.0]], [[2.0, 4.0]], 1.0, id="scaled"),
    pytest.param([[1.0, 1.0]], [[1.0, 0.0]], math.sqrt(0.5), id="45-degrees"),
    pytest.param([[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]], 0.5, id="mean-over-samples"),
    pytest.param([[0.0, 0.0]], [[0.0, 0.0]], 1.0, id="zero-vectors-equal"),
    pytest.param([[0.0, 0.0]], [[0.0, 1e-3]], 0.0, id="zero-vector-against-non-zero"),
]


@pytest.mark.parametrize(("ref", "cand", "value"), COSINE_CASES)
def test_cosine_similarity(ref: list[list[float]], cand: list[list[float]], value: float) -> None:
    fidelity = head_fidelity(
        "features", None, ["v"], samples("v", [[r] for r in ref]), samples("v", [[c] for c in cand]), SIZE
    )
    assert fidelity.metric == "cosine_similarity"
    assert fidelity.value == pytest.approx(value, abs=1e-9)


def test_cosine_concatenates_outputs_in_order() -> None:
    # Each output alone is orthogonal to its candidate, yet the concatenation is the same direction.
    reference = [{"a": np.array([[1.0, 0.0]]), "b": np.array([[0.0, 1.0]])}]
    candidate = [{"a": np.array([[1.0, 0.0]]), "b": np.array([[0.0, 1.0]])}]
    assert head_fidelity("pair", EMBEDDING, ["a", "b"], reference, candidate, SIZE).value == 1.0
    candidate = [{"a": np.array([[0.0, 1.0]]), "b": np.array([[1.0, 0.0]])}]
    assert head_fidelity("pair", EMBEDDING, ["a", "b"], reference, candidate, SIZE).value == 0.0


# --- NaN / inf in the candidate ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "name", "tensor"),
    [
        pytest.param(SHAPE, "logits", logits(1), id="classification"),
        pytest.param(BOX, "box", [[0.0, 0.2, 0.4, 1.0]], id="regression"),
        pytest.param(None, "raw", [[1.0, 2.0, 3.0]], id="raw"),
    ],
)
def test_non_finite_candidate_fails(spec: DecoderSpec | None, name: str, tensor: Any) -> None:
    reference = samples(name, [tensor, tensor])
    candidate = copy(reference)
    candidate[1][name][0, -1] = np.inf
    candidate[1][name][0, 0] = np.nan
    fidelity = head_fidelity("head", spec, [name], reference, candidate, SIZE)
    assert fidelity.value == 0.0
    assert fidelity.detail == {"non_finite": 2, "non_finite_outputs": {name: 2}}


# --- Fidelity and to_dict ----------------------------------------------------------------------------------


def test_to_dict_is_json_and_rounded() -> None:
    fidelity = Fidelity(
        "relative_error",
        np.float32(0.987654321),
        np.int64(8),
        {"mean_relative_error": np.float64(0.0123456789), "outputs": {"box": (np.float32(1.5), np.int64(3))}},
    )
    data = fidelity.to_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data
    assert data == {
        "metric": "relative_error",
        "value": 0.987654,
        "samples": 8,
        "detail": {"mean_relative_error": 0.012346, "outputs": {"box": [1.5, 3]}},
    }


def test_to_dict_of_a_measured_head() -> None:
    reference = samples("dets", [detections(CAT)])
    fidelity = head_fidelity("objects", OBJECTS, ["dets"], reference, samples("dets", [detections()]), SIZE)
    data = json.loads(json.dumps(fidelity.to_dict(), allow_nan=False))
    assert data["detail"] == {
        "reference_detections": 1,
        "candidate_detections": 0,
        "matched": 0,
        "extra": 0,
        "mean_matched_iou": None,
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"metric": "top5"}, "metric must be one of", id="unknown-metric"),
        pytest.param({"value": 1.5}, "value must be an agreement", id="value-above-one"),
        pytest.param({"value": float("nan")}, "value must be an agreement", id="value-nan"),
        pytest.param({"samples": 0}, "samples must be an int >= 1", id="no-samples"),
    ],
)
def test_fidelity_validates(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"metric": "top1_agreement", "value": 1.0, "samples": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        Fidelity(**args)


def test_fidelity_detail_is_a_copy() -> None:
    detail = {"a": 1}
    fidelity = Fidelity("pixel_agreement", 0.5, 1, detail)
    detail["a"] = 2
    assert fidelity.detail == {"a": 1}


# --- mismatched inputs -------------------------------------------------------------------------------------

GOOD = samples("logits", [logits(0), logits(1)])

ERROR_CASES = [
    pytest.param(["logits"], GOOD, GOOD[:1], SIZE, r"head 'shape': 2 reference samples but 1 candidate", id="counts"),
    pytest.param(["logits"], [], [], SIZE, r"head 'shape': no samples", id="no-samples"),
    pytest.param([], GOOD, GOOD, SIZE, r"head 'shape': no outputs", id="no-outputs"),
    pytest.param(
        ["logits"],
        GOOD,
        [GOOD[0], {"scores": logits(1)}],
        SIZE,
        r"head 'shape': output 'logits' is missing from candidate sample 1; it has 'scores'",
        id="missing-in-candidate",
    ),
    pytest.param(
        ["other"], GOOD, GOOD, SIZE, r"head 'shape': output 'other' is missing from reference sample 0", id="missing"
    ),
    pytest.param(
        ["logits"],
        GOOD,
        [GOOD[0], {"logits": np.zeros((1, 4), np.float32)}],
        SIZE,
        r"head 'shape': output 'logits' of sample 1 has shape \(1, 4\) in the candidate but \(1, 3\)",
        id="shape",
    ),
    pytest.param(["logits"], GOOD, GOOD, (128, 0), r"head 'shape': input_size must be", id="input-size"),
]


@pytest.mark.parametrize(("outputs", "reference", "candidate", "size", "message"), ERROR_CASES)
def test_mismatched_inputs_raise(
    outputs: list[str], reference: list[Sample], candidate: list[Sample], size: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        head_fidelity("shape", SHAPE, outputs, reference, candidate, size)


def test_every_detection_family_is_gated_on_matched_detections() -> None:
    # a grid head: one level of stride 32 on 64x64 (2x2 cells), distances + 1 class per cell
    spec = DecoderSpec("grid", {"strides": [32], "labels": ["face"], "bins": 1})
    cell = np.zeros((1, 4, 5), np.float32)
    cell[0, 3] = [0.5, 0.25, 0.25, 0.5, 0.9]
    moved = cell.copy()
    moved[0, 3, :4] += 0.4  # the box grows: IoU < 0.9
    same = head_fidelity("faces", spec, ["out"], [{"out": cell}], [{"out": cell}], (64, 64))
    worse = head_fidelity("faces", spec, ["out"], [{"out": cell}], [{"out": moved}], (64, 64))
    assert (same.metric, same.value) == ("detections_matched_iou0.9", 1.0)
    assert (worse.metric, worse.value) == ("detections_matched_iou0.9", 0.0)
    assert MEASURES["ssd"] == MEASURES["detection"] == MEASURES["grid"]
