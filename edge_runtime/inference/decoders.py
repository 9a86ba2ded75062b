"""Decoders: from a head's raw output tensors to a typed result.

A bundle's manifest names each head's decoder and its parameters (``"decoder": {"type":
"detection", "labels": [...], ...}``, see :data:`edge_runtime.bundle.manifest.DECODER_PARAMS`).
:func:`build_decoder` checks the parameters once, when the bundle is loaded (``ConfigError``
naming the head and the parameter); the decoder is then called once per frame with the
head's output tensors (batch dimension first, item 0 decoded) and the frame's
:class:`~edge_runtime.frames.geometry.FrameGeometry`, and checks the tensors' shapes (``ModelError``
naming the head, the output and the shape). Only numpy, vectorised: this runs on a
Raspberry Pi for every frame.

=================  ==========================================  ===============================
type               outputs (with the batch dimension)          result
=================  ==========================================  ===============================
classification     ``(1, C)`` logits or probabilities          :class:`Classification` (top-k)
detection          ``(1, N, 4+C)``, ``(1, 4+C, N)``,           :class:`Detections` (after NMS)
                   ``(1, N, 5+C)`` (objectness), or boxes
                   ``(1, N, 4)`` + scores ``(1, N, C)``
segmentation       ``(1, C, H, W)`` logits, ``(1, 1, H, W)``   :class:`Segmentation`
                   or ``(1, H, W)`` probabilities (or
                   integer class ids)
landmarks          ``(1, K, 2)``, ``(1, K, 3)``, ``(1, 2K)``   :class:`Landmarks`
regression         any, flattened to ``(n,)``                  :class:`Regression`
embedding          any, flattened to ``(d,)``                  :class:`Embedding`
raw                any                                         :class:`RawOutput`
=================  ==========================================  ===============================

Example::

    from edge_runtime.inference.decoders import build_decoder
    from edge_runtime.frames.geometry import FrameGeometry
    from edge_runtime.bundle.manifest import DecoderSpec

    spec = DecoderSpec("classification", {"labels": ["circle", "square", "triangle"], "top_k": 1})
    decode = build_decoder("shape", spec, outputs=["shape_logits"])
    geometry = FrameGeometry.letterbox(frame_w=640, frame_h=480, input_w=128, input_h=128)
    result = decode({"shape_logits": np.array([[0.1, 3.0, -1.0]], np.float32)}, geometry)
    result.labels, result.scores  # ('square',), array([0.9317], dtype=float32)

On the command line, ``edge-runtime inspect BUNDLE`` lists each head's decoder and parameters.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from edge_runtime.bundle.manifest import DecoderSpec
from edge_runtime.errors import ConfigError, ModelError, close_matches
from edge_runtime.frames.geometry import FrameGeometry
from edge_runtime.inference.results import (
    Classification,
    Detections,
    Embedding,
    HeadResult,
    Landmarks,
    RawOutput,
    Regression,
    Segmentation,
)

logger = logging.getLogger(__name__)

#: Box encodings a detection or regression head may use (``x1 y1 x2 y2``, ``x y w h``, ``cx cy w h``).
BOX_FORMATS = ("xyxy", "xywh", "cxcywh")
#: At most this many boxes (highest scores) enter NMS, as in Ultralytics' ``max_nms``.
MAX_NMS_CANDIDATES = 30_000


class Params:
    """Reads and checks one head's decoder parameters; errors name the head and the parameter."""

    def __init__(self, head: str, kind: str, params: Mapping[str, Any]) -> None:
        self.head = head
        self.kind = kind
        self.params = params

    def fail(self, key: str, message: str) -> ConfigError:
        """A :class:`ConfigError` about parameter ``key``."""
        return ConfigError(f"head {self.head!r}: {self.kind} decoder parameter {key!r} {message}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        """The value of ``key`` (``default`` when absent), checked to be of ``kind``."""
        value = self.params.get(key)
        if value is None:
            return default
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join("number" if k is float else k.__name__ for k in kinds)
            raise self.fail(key, f"must be {names}, got {value!r}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        """A boolean parameter."""
        return bool(self.get(key, bool, default))

    def number(self, key: str, default: float | None, low: float | None = None, high: float | None = None) -> Any:
        """A number within ``[low, high]`` (``None`` = unbounded); ``None`` when absent without default."""
        value = self.get(key, float, default)
        if value is not None and ((low is not None and value < low) or (high is not None and value > high)):
            bounds = f"between {low} and {high}" if low is not None and high is not None else f">= {low}"
            raise self.fail(key, f"must be {bounds}, got {value!r}")
        return value

    def count(self, key: str, default: int | None) -> int | None:
        """A positive integer, or ``default`` when absent."""
        value = self.get(key, int, default)
        if value is not None and value < 1:
            raise self.fail(key, f"must be an integer >= 1, got {value!r}")
        return value

    def choice(self, key: str, choices: Sequence[str], default: str | None) -> str | None:
        """One of ``choices`` (error lists them, with close matches)."""
        value = self.get(key, str, default)
        if value is not None and value not in choices:
            raise self.fail(key, f"is {value!r}{close_matches(value, choices)}; valid choices: {', '.join(choices)}")
        return value

    def names(self, key: str) -> tuple[str, ...] | None:
        """A non-empty list of distinct non-empty names, or ``None`` when absent."""
        value = self.params.get(key)
        if value is None:
            return None
        if (
            not isinstance(value, (list, tuple))
            or not value
            or not all(isinstance(v, str) and v for v in value)
            or len(set(value)) != len(value)
        ):
            raise self.fail(key, f"must be a non-empty list of distinct names, got {value!r}")
        return tuple(value)


def default_names(prefix: str, count: int) -> tuple[str, ...]:
    """``("class_0", "class_1", ...)`` for ``prefix="class"``."""
    return tuple(f"{prefix}_{i}" for i in range(count))


def to_xyxy(boxes: np.ndarray, box_format: str) -> np.ndarray:
    """Boxes ``(n, 4)`` in ``box_format`` (one of :data:`BOX_FORMATS`) → ``x1, y1, x2, y2``, same dtype."""
    if box_format == "xyxy":
        return boxes
    out = np.empty_like(boxes)
    if box_format == "xywh":
        out[:, :2] = boxes[:, :2]
        out[:, 2:] = boxes[:, :2] + boxes[:, 2:]
    else:  # cxcywh
        half = boxes[:, 2:] / 2
        out[:, :2] = boxes[:, :2] - half
        out[:, 2:] = boxes[:, :2] + half
    return out


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


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis, float32."""
    x = np.asarray(logits, dtype=np.float32)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, float32 (no overflow warnings for large ``|x|``)."""
    x = np.asarray(logits, dtype=np.float32)
    return np.exp(-np.logaddexp(np.float32(0), -x)).astype(np.float32)


class Decoder:
    """Turns one head's raw outputs into a result; subclasses are registered in :data:`DECODERS`.

    Build with :func:`build_decoder` (or ``Subclass(head, params, outputs)``), which checks
    the parameters; call with ``decoder(tensors, geometry)``, where ``tensors`` maps the
    head's output names to arrays with the batch dimension first (item 0 is decoded).
    """

    #: Decoder type, as in the manifest.
    kind: ClassVar[str] = ""
    #: How many outputs the head may have: ``(min, max)``, ``None`` = unbounded.
    output_counts: ClassVar[tuple[int, int | None]] = (1, 1)

    def __init__(self, head: str, params: Mapping[str, Any], outputs: Sequence[str]) -> None:
        self.head = head
        self.outputs = tuple(outputs)
        low, high = self.output_counts
        if len(self.outputs) < low or (high is not None and len(self.outputs) > high):
            wanted = str(low) if low == high else f"{low} to {high}" if high is not None else f"at least {low}"
            raise ConfigError(
                f"head {head!r}: the {self.kind} decoder reads {wanted} output(s), "
                f"the head has {len(self.outputs)} ({', '.join(self.outputs) or 'none'})"
            )
        self.configure(Params(head, self.kind, params))

    def configure(self, params: Params) -> None:
        """Read and check the parameters (subclasses)."""

    def __call__(self, tensors: Mapping[str, np.ndarray], geometry: FrameGeometry) -> HeadResult:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(head={self.head!r}, outputs={list(self.outputs)})"

    def item(self, tensors: Mapping[str, np.ndarray], name: str) -> np.ndarray:
        """Item 0 of output ``name`` (which must have a batch dimension)."""
        if name not in tensors:
            raise ModelError(
                f"head {self.head!r}: output {name!r} is missing; got {', '.join(map(repr, tensors)) or 'none'}"
            )
        tensor = np.asarray(tensors[name])
        if tensor.ndim == 0 or tensor.shape[0] < 1:
            raise self.bad_shape(name, tensor.shape, "a batch dimension first, batch >= 1")
        return tensor[0]

    def bad_shape(self, name: str, shape: tuple[int, ...], expected: str) -> ModelError:
        """A :class:`ModelError` about output ``name`` of the wrong shape."""
        return ModelError(
            f"head {self.head!r}: output {name!r} has shape {tuple(shape)}; the {self.kind} decoder expects {expected}"
        )


class ClassificationDecoder(Decoder):
    """Top-k classes from ``(1, C)`` logits (or ``(1, C, 1, 1)``).

    Parameters: ``labels`` (default ``class_0``…), ``top_k`` (default ``min(5, C)``; with
    ``multi_label`` all classes), ``softmax`` (default true: the values are logits and are
    activated; false: they are probabilities already), ``multi_label`` (independent classes:
    sigmoid per class, keep those ``>= threshold``, default 0.5).
    """

    kind = "classification"

    def configure(self, params: Params) -> None:
        self.labels = params.names("labels")
        self.top_k = params.count("top_k", None)
        self.activate = params.flag("softmax", True)
        self.multi_label = params.flag("multi_label", False)
        self.threshold = float(params.number("threshold", 0.5, 0.0, 1.0))

    def __call__(self, tensors: Mapping[str, np.ndarray], geometry: FrameGeometry) -> Classification:
        name = self.outputs[0]
        raw = self.item(tensors, name)
        if raw.ndim < 1 or raw.shape[0] < 1 or any(d != 1 for d in raw.shape[1:]):
            raise self.bad_shape(name, tensors[name].shape, "(1, C) class scores")
        values = raw.reshape(-1).astype(np.float32)
        labels = self.labels or default_names("class", len(values))
        if len(labels) != len(values):
            raise self.bad_shape(name, tensors[name].shape, f"(1, {len(labels)}): one score per label")
        if self.multi_label:
            probs = sigmoid(values) if self.activate else values
            order = np.argsort(-probs, kind="stable")
            order = order[probs[order] >= self.threshold][: self.top_k or len(values)]
        else:
            probs = softmax(values) if self.activate else values
            order = np.argsort(-probs, kind="stable")[: self.top_k or min(5, len(values))]
        return Classification(class_ids=order, scores=probs[order], labels=tuple(labels[i] for i in order))


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


class SegmentationDecoder(Decoder):
    """Class mask from ``(1, C, H, W)`` logits (argmax) or ``(1, 1, H, W)`` / ``(1, H, W)`` probabilities.

    A single-channel output of an integer type holds class ids already (a model that ends
    in ArgMax) and is taken as it is.

    The output may have another resolution than the model input: the frame's content region
    (``geometry.content``, without letterbox padding) is mapped to it proportionally and
    cropped before the argmax. Parameters: ``classes`` (default ``class_0``…; two for a
    single-channel output), ``threshold`` (single channel: ``>= threshold`` is class 1;
    default 0.5), ``min_area`` (fraction; smaller classes are left out of ``class_areas``).
    """

    kind = "segmentation"

    def configure(self, params: Params) -> None:
        self.classes = params.names("classes")
        self.threshold = float(params.number("threshold", 0.5, 0.0, 1.0))
        self.min_area = float(params.number("min_area", 0.0, 0.0, 1.0))

    def __call__(self, tensors: Mapping[str, np.ndarray], geometry: FrameGeometry) -> Segmentation:
        name = self.outputs[0]
        shape = tensors[name].shape if name in tensors else ()
        maps = self.item(tensors, name)
        if maps.ndim == 2:
            maps = maps[None]
        if maps.ndim != 3 or 0 in maps.shape:
            raise self.bad_shape(name, shape, "(1, C, H, W) logits, (1, 1, H, W) or (1, H, W) probabilities")
        channels, height, width = maps.shape
        ids = channels == 1 and maps.dtype.kind in "iu"
        if ids:
            count = len(self.classes) if self.classes else max(int(maps.max()) + 1, 2)
            if int(maps.min()) < 0 or int(maps.max()) >= count:
                raise self.bad_shape(
                    name, shape, f"class ids in 0..{count - 1}, got {int(maps.min())}..{int(maps.max())}"
                )
            classes = self.classes or default_names("class", count)
        else:
            classes = self.classes or default_names("class", max(channels, 2))
        if not ids and len(classes) != max(channels, 2):
            expected = "2 (single channel: below/above threshold)" if channels == 1 else str(channels)
            raise self.bad_shape(name, shape, f"as many channels as classes: {len(classes)} classes, need {expected}")
        x0, y0, x1, y1 = geometry.content
        sx, sy = width / geometry.input_width, height / geometry.input_height
        c0, c1 = _span(x0 * sx, x1 * sx, width)
        r0, r1 = _span(y0 * sy, y1 * sy, height)
        crop = maps[:, r0:r1, c0:c1]
        dtype = np.uint8 if len(classes) <= 256 else np.int32
        if ids:
            mask = crop[0].astype(dtype)
        elif channels == 1:
            mask = (crop[0] >= self.threshold).astype(dtype)
        else:
            mask = np.argmax(crop, axis=0).astype(dtype)
        corners = np.array([[c0 / sx, r0 / sy, c1 / sx, r1 / sy]], dtype=np.float32)
        region = tuple(float(v) for v in geometry.boxes_to_frame(corners)[0])
        return Segmentation(
            mask=mask,
            classes=classes,
            class_areas=Segmentation.areas(mask, classes, self.min_area),
            frame_width=geometry.frame_width,
            frame_height=geometry.frame_height,
            region=None if _whole_frame(region, geometry) else (region[0], region[1], region[2], region[3]),
        )


def _span(start: float, stop: float, size: int) -> tuple[int, int]:
    """Whole-pixel ``[a, b)`` nearest to ``[start, stop)``, within ``0..size``, at least one pixel."""
    a = min(max(math.floor(start + 0.5), 0), size - 1)
    b = min(max(math.floor(stop + 0.5), a + 1), size)
    return a, b


def _whole_frame(region: tuple[float, ...], geometry: FrameGeometry) -> bool:
    """Whether ``region`` covers the frame to within half a pixel."""
    full = (0.0, 0.0, float(geometry.frame_width), float(geometry.frame_height))
    return all(abs(a - b) <= 0.5 for a, b in zip(region, full, strict=True))


class LandmarksDecoder(Decoder):
    """Keypoints from ``(1, K, 2)`` (x, y), ``(1, K, 3)`` (x, y, score) or flat ``(1, 2K)``.

    Parameters: ``names`` (default ``point_0``…), ``normalized`` (coordinates in 0..1 of the
    model input; default false), ``score_threshold`` (checked and kept as
    ``decoder.score_threshold`` for consumers: every point is reported, its score tells).
    """

    kind = "landmarks"

    def configure(self, params: Params) -> None:
        self.names = params.names("names")
        self.normalized = params.flag("normalized", False)
        self.score_threshold = params.number("score_threshold", None, 0.0, 1.0)

    def __call__(self, tensors: Mapping[str, np.ndarray], geometry: FrameGeometry) -> Landmarks:
        name = self.outputs[0]
        shape = tensors[name].shape if name in tensors else ()
        raw = self.item(tensors, name)
        layouts = "(1, K, 2), (1, K, 3) or (1, 2K)"
        if raw.ndim == 1 and raw.shape[0] % 2 == 0 and raw.shape[0] > 0:
            raw = raw.reshape(-1, 2)
        if raw.ndim != 2 or raw.shape[1] not in (2, 3) or raw.shape[0] == 0:
            raise self.bad_shape(name, shape, layouts)
        names = self.names or default_names("point", len(raw))
        if len(names) != len(raw):
            raise self.bad_shape(name, shape, f"{layouts} with K = {len(names)} names")
        raw = raw.astype(np.float32, copy=False)
        points = raw[:, :2]
        if self.normalized:
            points = points * np.array([geometry.input_width, geometry.input_height], dtype=np.float32)
        scores = raw[:, 2].copy() if raw.shape[1] == 3 else None
        return Landmarks(points=geometry.to_frame(points), scores=scores, names=names)


class RegressionDecoder(Decoder):
    """Values from any outputs, each flattened (item 0) and concatenated in output order.

    Parameters: ``names`` (default ``value_0``…), ``scale`` (multiplies the values; 1.0),
    ``box_format`` (xyxy, xywh, cxcywh: the 4 values are a box, also reported in frame
    pixels), ``normalized`` (the box is in 0..1 of the model input; default false).
    """

    kind = "regression"
    output_counts = (1, None)

    def configure(self, params: Params) -> None:
        self.names = params.names("names")
        self.scale = float(params.number("scale", 1.0))
        self.box_format = params.choice("box_format", BOX_FORMATS, None)
        self.normalized = params.flag("normalized", False)
        if self.box_format is not None and self.names is not None and len(self.names) != 4:
            raise params.fail("box_format", f"needs 4 values, but 'names' lists {len(self.names)}")

    def __call__(self, tensors: Mapping[str, np.ndarray], geometry: FrameGeometry) -> Regression:
        parts = [self.item(tensors, name).reshape(-1) for name in self.outputs]
        values = np.concatenate(parts).astype(np.float32) * np.float32(self.scale)
        names = self.names or default_names("value", len(values))
        where = self.outputs[0] if len(self.outputs) == 1 else "+".join(self.outputs)
        shape = tensors[self.outputs[0]].shape if len(self.outputs) == 1 else (1, len(values))
        if len(names) != len(values):
            raise self.bad_shape(where, shape, f"{len(names)} values, one per name")
        box = None
        if self.box_format is not None:
            if len(values) != 4:
                raise self.bad_shape(where, shape, f"(1, 4): a {self.box_format} box")
            coords = values[None, :]
            if self.normalized:
                coords = coords * np.array([geometry.input_width, geometry.input_height] * 2, dtype=np.float32)
            box = geometry.boxes_to_frame(to_xyxy(coords, self.box_format))[0]
        return Regression(values=values, names=names, box=box)


class EmbeddingDecoder(Decoder):
    """A feature vector: the output flattened (item 0); ``normalize`` (default true) scales it to L2 norm 1."""

    kind = "embedding"

    def configure(self, params: Params) -> None:
        self.normalize = params.flag("normalize", True)

    def __call__(self, tensors: Mapping[str, np.ndarray], geometry: FrameGeometry) -> Embedding:
        vector = self.item(tensors, self.outputs[0]).reshape(-1).astype(np.float32)
        if self.normalize:
            norm = float(np.linalg.norm(vector))
            if norm > 0:
                vector /= norm
        return Embedding(vector=vector)


class RawDecoder(Decoder):
    """The outputs as they are (item 0 of the batch, copied): :class:`RawOutput`."""

    kind = "raw"
    output_counts = (1, None)

    def __call__(self, tensors: Mapping[str, np.ndarray], geometry: FrameGeometry) -> RawOutput:
        return RawOutput(tensors={name: np.array(self.item(tensors, name)) for name in self.outputs})


#: Decoder type (the manifest's ``decoder.type``) → class.
DECODERS: dict[str, type[Decoder]] = {
    "classification": ClassificationDecoder,
    "detection": DetectionDecoder,
    "segmentation": SegmentationDecoder,
    "landmarks": LandmarksDecoder,
    "regression": RegressionDecoder,
    "embedding": EmbeddingDecoder,
    "raw": RawDecoder,
}


def build_decoder(head_name: str, spec: DecoderSpec, outputs: Sequence[str]) -> Decoder:
    """The decoder of head ``head_name`` for its ``spec`` and output names, parameters checked.

    Raises :class:`ConfigError` for an unknown type (with close matches), a parameter of the
    wrong type or value, or a number of outputs the decoder cannot read. Parameters the
    decoder does not know are ignored here: reading the manifest already reported them.
    """
    cls = DECODERS.get(spec.type)
    if cls is None:
        raise ConfigError(
            f"head {head_name!r}: unknown decoder type {spec.type!r}{close_matches(spec.type, DECODERS)}; "
            f"valid types: {', '.join(DECODERS)}"
        )
    return cls(head_name, spec.params, outputs)
