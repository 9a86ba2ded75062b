"""Detection (YOLO layouts): boxes, scores, classes and optional keypoints after NMS.

Layouts: one output ``(1, N, 4+C)`` or transposed ``(1, 4+C, N)`` (YOLOv8/v11), ``(1, N, 5+C)``
with an objectness column (YOLOv5, ``objectness: true``), each optionally followed by ``K``
keypoints of 2 or 3 values (x, y[, visibility]; YOLOv8-pose), or two outputs, boxes
``(1, N, 4)`` and scores ``(1, N, C)`` → :class:`~edge_runtime.inference.results.Detections`,
boxes in frame pixels. Boxes here are already decoded to coordinates; per-stride grids are the
``grid`` family, prior boxes the ``ssd`` family.

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
from edge_runtime.inference.decoders.common import BOX_FORMATS, sigmoid, to_xyxy
from edge_runtime.inference.decoders.nms import NmsSettings, finish_detections, read_keypoints
from edge_runtime.inference.results import Detections

if TYPE_CHECKING:
    from edge_runtime.frames.geometry import FrameGeometry


class DetectionDecoder(Decoder):
    """Boxes, scores, classes (and keypoints) after per-class (or class-agnostic) NMS.

    Output layouts: ONE output ``(1, N, 4+C)`` or transposed ``(1, 4+C, N)`` (YOLOv8), or
    ``(1, N, 5+C)`` with an objectness column (``objectness: true``, YOLOv5); or TWO outputs,
    boxes ``(1, N, 4)`` and scores ``(1, N, C)`` (told apart by the last dimension 4, else by
    order: boxes first). A box's score is its best class score (times its objectness).
    With ``keypoints: K`` the one-output rows end with ``K x keypoint_dims`` values (YOLOv8-pose;
    ``keypoint_position: "before_classes"`` puts them between the box/objectness and the classes,
    as YOLOv5-face does).

    Parameters: ``labels``, ``box_format`` (xyxy, xywh, cxcywh; default xyxy), ``normalized``
    (coordinates in 0..1 of the model input; default false: model-input pixels),
    ``score_threshold`` (0.25), ``iou_threshold`` (0.45), ``max_detections`` (100),
    ``class_agnostic_nms`` (false), ``nms`` (``hard``, or ``weighted``: see
    :func:`~edge_runtime.inference.decoders.nms.weighted_nms`), ``objectness`` (false), ``keypoints`` (K, default 0),
    ``keypoint_dims`` (2 or 3, default 3), ``keypoint_names``, ``keypoint_position``
    (``after_classes``), ``keypoint_activation`` (``none`` or ``sigmoid`` for the visibility).
    """

    kind = "detection"
    output_counts = (1, 2)

    def configure(self, params: Params) -> None:
        for key, family in (("anchors", "ssd"), ("strides", "grid"), ("priors", "ssd")):
            if key in params.params:
                raise params.fail(
                    key,
                    f"belongs to the {family!r} decoder: the 'detection' decoder reads boxes already decoded to "
                    "coordinates ((1, N, 4+C), (1, 4+C, N), (1, N, 5+C) or boxes + scores); use "
                    f"type = {family!r} for {'per-stride grids' if family == 'grid' else 'prior/anchor offsets'} "
                    "(edge-export inspect MODEL --suggest-head-spec proposes one)",
                )
        self.settings = NmsSettings.read(params)
        self.labels = self.settings.labels
        self.box_format = str(params.choice("box_format", BOX_FORMATS, "xyxy"))
        self.normalized = params.flag("normalized", False)
        self.objectness = params.flag("objectness", False)
        self.keypoint_count, self.keypoint_names, self.keypoint_dims = read_keypoints(params, 3)
        self.keypoint_position = str(
            params.choice("keypoint_position", ("after_classes", "before_classes"), "after_classes")
        )
        self.keypoint_activation = str(params.choice("keypoint_activation", ("none", "sigmoid"), "none"))
        if self.objectness and len(self.outputs) == 2:
            raise params.fail("objectness", "needs the one-output layout (1, N, 5+C); this head has two outputs")
        if self.keypoint_count and len(self.outputs) == 2:
            raise params.fail("keypoints", "needs the one-output layout (1, N, 4+C+K*D); this head has two outputs")

    def split(self, tensors: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Boxes ``(N, 4)``, class scores ``(N, C)`` (objectness applied) and keypoint values
        ``(N, K, D)`` (or ``None``), float32."""
        if len(self.outputs) == 2:
            return (*self.split_two(tensors), None)
        name = self.outputs[0]
        shape = tensors[name].shape if name in tensors else ()
        rows = self.item(tensors, name)
        extra = 5 if self.objectness else 4
        points = self.keypoint_count * self.keypoint_dims
        tail = f"+{self.keypoint_count}*{self.keypoint_dims}" if points else ""
        layout = f"(1, N, {extra}+C{tail}) or (1, {extra}+C{tail}, N)"
        if rows.ndim != 2:
            raise self.bad_shape(name, shape, layout)
        if self.labels is not None:
            width = extra + len(self.labels) + points
            if rows.shape[1] != width:
                if rows.shape[0] != width:
                    raise self.bad_shape(name, shape, f"{layout} with C = {len(self.labels)} labels")
                rows = rows.T
        elif rows.shape[1] > rows.shape[0]:
            rows = rows.T
        if rows.shape[1] <= extra + points:
            raise self.bad_shape(name, shape, f"{layout} with at least one class")
        rows = rows.astype(np.float32, copy=False)
        if points and self.keypoint_position == "before_classes":
            values, scores = rows[:, extra : extra + points], rows[:, extra + points :]
        else:
            scores, values = rows[:, extra : rows.shape[1] - points], rows[:, rows.shape[1] - points :]
        if self.objectness:
            scores = scores * rows[:, 4:5]
        keypoints = values.reshape(len(rows), self.keypoint_count, self.keypoint_dims) if points else None
        return rows[:, :4], scores, keypoints

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
        boxes, class_scores, keypoints = self.split(tensors)
        scale = np.array([geometry.input_width, geometry.input_height], dtype=np.float32)
        if self.normalized:
            # x and w scale by the input width, y and h by its height, in every box format.
            boxes = boxes * np.tile(scale, 2)
        boxes = to_xyxy(boxes, self.box_format)
        points = point_scores = None
        if keypoints is not None:
            points = keypoints[:, :, :2] * scale if self.normalized else keypoints[:, :, :2]
            if self.keypoint_dims == 3:
                point_scores = keypoints[:, :, 2]
                if self.keypoint_activation == "sigmoid":
                    point_scores = sigmoid(point_scores)
        return finish_detections(
            boxes,
            class_scores,
            geometry,
            self.settings,
            keypoints=points,
            keypoint_scores=point_scores,
            keypoint_names=self.keypoint_names,
        )
