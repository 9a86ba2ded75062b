"""Detection: boxes, scores and classes after non-maximum suppression.

Layouts: one output ``(1, N, 4+C)`` or transposed ``(1, 4+C, N)`` (YOLOv8), ``(1, N, 5+C)``
with an objectness column (YOLOv5, ``objectness: true``), or two outputs, boxes
``(1, N, 4)`` and scores ``(1, N, C)`` → :class:`~edge_runtime.inference.results.Detections`,
boxes in frame pixels. :func:`nms` is the greedy (per-class) suppression it uses.

Example::

    decode = DetectionDecoder("objects", {"labels": ["cat", "dog"], "box_format": "cxcywh"}, ["output0"])
    rows = np.array([[[64.0, 64.0, 32.0, 32.0, 0.1, 0.9]]], np.float32)  # (1, N=1, 4+C=6)
    result = decode({"output0": rows}, geometry)
    result.labels, result.scores  # ('dog',), array([0.9], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from edge_runtime.inference.decoders.base import Decoder, Params
from edge_runtime.inference.decoders.common import BOX_FORMATS, default_names, to_xyxy
from edge_runtime.inference.results import Detections

if TYPE_CHECKING:
    from edge_runtime.frames.geometry import FrameGeometry

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


class DetectionDecoder(Decoder):
    """Boxes, scores and classes after per-class (or class-agnostic) NMS.

    Output layouts: ONE output ``(1, N, 4+C)`` or transposed ``(1, 4+C, N)`` (YOLOv8), or
    ``(1, N, 5+C)`` with an objectness column (``objectness: true``, YOLOv5); or TWO outputs,
    boxes ``(1, N, 4)`` and scores ``(1, N, C)`` (told apart by the last dimension 4, else by
    order: boxes first). A box's score is its best class score (times its objectness).

    Parameters: ``labels``, ``box_format`` (xyxy, xywh, cxcywh; default xyxy), ``normalized``
    (coordinates in 0..1 of the model input; default false: model-input pixels),
    ``score_threshold`` (0.25), ``iou_threshold`` (0.45), ``max_detections`` (100),
    ``class_agnostic_nms`` (false), ``objectness`` (false). Raw anchor grids (``anchors``,
    ``strides``) are not supported: export the model with its box decoding included.
    """

    kind = "detection"
    output_counts = (1, 2)

    def configure(self, params: Params) -> None:
        for key in ("anchors", "strides"):
            if key in params.params:
                raise params.fail(
                    key,
                    "is not supported: raw anchor grids are not decoded in this version. Supported layouts: "
                    "one output (1, N, 4+C), (1, 4+C, N) or (1, N, 5+C) with objectness: true, or two outputs "
                    "boxes (1, N, 4) and scores (1, N, C), with boxes already decoded to coordinates",
                )
        self.labels = params.names("labels")
        self.box_format = str(params.choice("box_format", BOX_FORMATS, "xyxy"))
        self.normalized = params.flag("normalized", False)
        self.score_threshold = float(params.number("score_threshold", 0.25, 0.0, 1.0))
        self.iou_threshold = float(params.number("iou_threshold", 0.45, 0.0, 1.0))
        self.max_detections = int(params.count("max_detections", 100) or 100)
        self.class_agnostic = params.flag("class_agnostic_nms", False)
        self.objectness = params.flag("objectness", False)
        if self.objectness and len(self.outputs) == 2:
            raise params.fail("objectness", "needs the one-output layout (1, N, 5+C); this head has two outputs")

    def split(self, tensors: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Boxes ``(N, 4)`` and class scores ``(N, C)`` (objectness applied), float32."""
        if len(self.outputs) == 2:
            return self.split_two(tensors)
        name = self.outputs[0]
        shape = tensors[name].shape if name in tensors else ()
        rows = self.item(tensors, name)
        extra = 5 if self.objectness else 4
        layout = f"(1, N, {extra}+C) or (1, {extra}+C, N)"
        if rows.ndim != 2:
            raise self.bad_shape(name, shape, layout)
        if self.labels is not None:
            width = extra + len(self.labels)
            if rows.shape[1] != width:
                if rows.shape[0] != width:
                    raise self.bad_shape(name, shape, f"{layout} with C = {len(self.labels)} labels")
                rows = rows.T
        elif rows.shape[1] > rows.shape[0]:
            rows = rows.T
        if rows.shape[1] <= extra:
            raise self.bad_shape(name, shape, f"{layout} with at least one class")
        rows = rows.astype(np.float32, copy=False)
        scores = rows[:, extra:]
        if self.objectness:
            scores = scores * rows[:, 4:5]
        return rows[:, :4], scores

    def split_two(self, tensors: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        first, second = (self.item(tensors, name) for name in self.outputs)
        if second.ndim == 2 and second.shape[-1] == 4 and not (first.ndim == 2 and first.shape[-1] == 4):
            first, second = second, first
            box_name, score_name = self.outputs[1], self.outputs[0]
        else:
            box_name, score_name = self.outputs
        boxes, scores = first, second
        if boxes.ndim != 2 or boxes.shape[-1] != 4:
            raise self.bad_shape(box_name, tensors[box_name].shape, "boxes (1, N, 4)")
        if scores.ndim == 1:
            scores = scores[:, None]
        if scores.ndim != 2 or len(scores) != len(boxes):
            raise self.bad_shape(score_name, tensors[score_name].shape, f"scores (1, {len(boxes)}, C)")
        if self.labels is not None and scores.shape[1] != len(self.labels):
            raise self.bad_shape(
                score_name, tensors[score_name].shape, f"scores (1, {len(boxes)}, {len(self.labels)}): one per label"
            )
        return boxes.astype(np.float32, copy=False), scores.astype(np.float32, copy=False)

    def __call__(self, tensors: Mapping[str, np.ndarray], geometry: FrameGeometry) -> Detections:
        boxes, class_scores = self.split(tensors)
        # max is ~10x cheaper than argmax: find the candidates first, then their classes.
        best_scores = class_scores.max(axis=1) if len(boxes) else np.zeros(0, np.float32)
        candidates = np.flatnonzero((best_scores >= self.score_threshold) & np.isfinite(boxes).all(axis=1))
        if len(candidates) > MAX_NMS_CANDIDATES:
            top = np.argpartition(-best_scores[candidates], MAX_NMS_CANDIDATES)[:MAX_NMS_CANDIDATES]
            candidates = candidates[top]
        scores = best_scores[candidates]
        class_ids = np.argmax(class_scores[candidates], axis=1).astype(np.int64)
        boxes = boxes[candidates]
        if self.normalized:
            # x and w scale by the input width, y and h by its height, in every box format.
            boxes = boxes * np.array([geometry.input_width, geometry.input_height] * 2, dtype=np.float32)
        boxes = to_xyxy(boxes, self.box_format)
        keep = nms(boxes, scores, self.iou_threshold, self.max_detections, None if self.class_agnostic else class_ids)
        labels = self.labels or default_names("class", class_scores.shape[1])
        return Detections(
            xyxy=geometry.boxes_to_frame(boxes[keep]),
            scores=scores[keep],
            class_ids=class_ids[keep],
            labels=tuple(labels[i] for i in class_ids[keep]),
        )
