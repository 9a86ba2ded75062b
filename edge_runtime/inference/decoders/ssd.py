"""SSD family: box offsets relative to prior (anchor) boxes → boxes, scores, classes and optional
keypoints after NMS (SSD, RetinaFace, FaceBoxes, MediaPipe BlazeFace and other MediaPipe SSDs).

The priors come from the ``priors`` table (SSD / RetinaFace PriorBox) or the ``anchors`` table
(MediaPipe SsdAnchorsCalculator), see :mod:`~edge_runtime.inference.decoders.priors`; they are
computed once per model input size. Offsets decode in centre form with ``variances`` (SSD,
RetinaFace; the default with ``priors``) or linearly with ``scales`` (MediaPipe
TensorsToDetectionsCalculator; the default with ``anchors``).

Example (RetinaFace, 640x640: boxes, 2-class conf, 5 landmarks)::

    decode = SsdDecoder(
        "faces",
        {
            "priors": {"min_sizes": [[16, 32], [64, 128], [256, 512]], "strides": [8, 16, 32]},
            "score_activation": "softmax", "background_class": 0, "labels": ["face"], "keypoints": 5,
        },
        ["loc", "conf", "landms"],
    )
    result = decode({"loc": loc, "conf": conf, "landms": landms}, geometry)  # (1, 16800, 4 / 2 / 10)
    result.xyxy, result.keypoints  # frame pixels
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edge_runtime.errors import ModelError, close_matches
from edge_runtime.inference.decoders.base import Decoder, Params
from edge_runtime.inference.decoders.common import sigmoid, softmax
from edge_runtime.inference.decoders.nms import NmsSettings, finish_detections, read_keypoints
from edge_runtime.inference.decoders.priors import AnchorSpec, PriorSpec, describe, prior_boxes, ssd_anchors
from edge_runtime.inference.results import Detections

if TYPE_CHECKING:
    from edge_runtime.frames.geometry import FrameGeometry

#: SSD's default variances: centre offsets x 0.1, log sizes x 0.2 (as ``[vx, vy, vw, vh]``).
DEFAULT_VARIANCES = (0.1, 0.1, 0.2, 0.2)


@dataclass(frozen=True)
class _Priors:
    """The priors of one model input size, in model-input pixels, ready for decoding:
    ``centre = centres + raw_xy * step``, ``size = sizes * exp(raw_wh * log_scale)`` (centre
    form) or ``size = raw_wh * sizes`` (linear; ``sizes`` already divided by the scales)."""

    count: int
    description: str
    centres: np.ndarray
    step: np.ndarray
    sizes: np.ndarray
    log_scale: np.ndarray | None


class SsdDecoder(Decoder):
    """Boxes (and keypoints) as offsets from prior boxes; scores per class; NMS.

    Prior source, exactly one: ``priors`` (table, :class:`~.priors.PriorSpec`: ``min_sizes``,
    ``strides`` / ``feature_maps``, ``max_sizes``, ``aspect_ratios``, ``flip``, ``offset``,
    ``clip``, ``input_size``) or ``anchors`` (table, :class:`~.priors.AnchorSpec`: MediaPipe's
    ``num_layers``, ``strides``, ``min_scale``, ``max_scale``, ``anchor_offset_x/y``,
    ``aspect_ratios``, ``fixed_anchor_size``, ``interpolated_scale_aspect_ratio``,
    ``reduce_boxes_in_lowest_layer``, ``input_size_width/height``).

    Box encoding, with prior ``pcx, pcy, pw, ph`` (0..1), raw ``l`` (``coordinate_order``
    ``xy``: x, y, w, h, the default; ``yx``: y, x, h, w; keypoints in the same order):

    - ``variances`` ``[v0, v1]`` or ``[vx, vy, vw, vh]`` (default ``[0.1, 0.2]`` with ``priors``;
      with ``anchors`` it selects this encoding, as MediaPipe's ``apply_exponential_on_box_size``
      with ``x_scale = 1/vx``…): ``cx = pcx + lx*vx*pw``, ``w = pw*exp(lw*vw)``, keypoints
      ``kx = pcx + lkx*vx*pw``;
    - ``scales`` ``[x, y, w, h]`` (``anchors`` only; default the anchors' input size ``[W, H, W, H]``):
      ``cx = lx/x_scale*pw + pcx``, ``w = lw/w_scale*pw``, keypoints ``kx = lkx/x_scale*pw + pcx``.

    Then ``x1 = cx - w/2``…, times the model input size.

    Outputs (item 0 of each): boxes ``(1, P, 4)``, or ``(1, P, 4+2K)`` with the keypoints
    after the box (MediaPipe); scores ``(1, P, C)``, ``(1, P)`` or ``(1, P, 1)``; keypoints
    ``(1, P, 2K)`` as a third output (RetinaFace landmarks); or one output ``(1, P, 4+2K+C)``.
    Named by ``box_output``, ``score_output``, ``keypoint_output``, else told apart by the last
    dimension (``4`` / ``4+2K`` boxes, ``2K`` keypoints, the rest scores).

    Scores: ``score_activation`` (``none``, ``sigmoid``, ``softmax`` over the classes), then
    ``background_class`` (an index, e.g. 0 for SSD and RetinaFace) is dropped: the remaining
    classes are the ``labels``. Also ``score_threshold`` (0.25), ``iou_threshold`` (0.45),
    ``max_detections`` (100), ``class_agnostic_nms`` (false), ``keypoints`` (K, 0),
    ``keypoint_names`` and ``nms``: ``hard`` (the default) or ``weighted``, MediaPipe's weighted
    suppression (:func:`~edge_runtime.inference.decoders.nms.weighted_nms`; BlazeFace's graphs use
    it, with ``iou_threshold`` 0.3): each face's box and keypoints are the score-weighted mean of
    the overlapping candidates, which a hard NMS would have dropped.
    """

    kind = "ssd"
    output_counts = (1, 3)

    def configure(self, params: Params) -> None:
        has_priors, has_anchors = (params.params.get(key) is not None for key in ("priors", "anchors"))
        if has_priors == has_anchors:
            raise params.fail(
                "priors",
                ("and 'anchors' are both given: use one prior source" if has_priors else "(or 'anchors') is required")
                + ": 'priors' for an SSD / RetinaFace / FaceBoxes PriorBox, 'anchors' for MediaPipe "
                "SsdAnchorsCalculator options",
            )
        self.source: PriorSpec | AnchorSpec = (
            PriorSpec.read(params.params["priors"], params.fail)
            if has_priors
            else AnchorSpec.read(params.params["anchors"], params.fail)
        )
        self.source_name = "priors" if has_priors else "anchors"
        variances = self._numbers(params, "variances", (2, 4))
        scales = self._numbers(params, "scales", (4,))
        if variances is not None and scales is not None:
            raise params.fail("scales", "and 'variances' are two box encodings (linear, centre form): give one")
        if scales is not None and has_priors:
            raise params.fail(
                "scales", "is the linear encoding of MediaPipe 'anchors'; 'priors' decode with 'variances'"
            )
        if variances is not None and len(variances) == 2:
            variances = (variances[0], variances[0], variances[1], variances[1])
        self.variances = variances if variances is not None or not has_priors else DEFAULT_VARIANCES
        self.scales = scales
        self.coordinate_order = str(params.choice("coordinate_order", ("xy", "yx"), "xy"))
        self.score_activation = str(params.choice("score_activation", ("none", "sigmoid", "softmax"), "none"))
        self.background_class = params.get("background_class", int, None)
        if self.background_class is not None and self.background_class < 0:
            raise params.fail("background_class", f"must be a class index >= 0, got {self.background_class}")
        self.settings = NmsSettings.read(params)
        self.keypoint_count, self.keypoint_names, _ = read_keypoints(params)
        self.named: dict[str, str] = {}
        for role, key in (("boxes", "box_output"), ("scores", "score_output"), ("keypoints", "keypoint_output")):
            name = params.get(key, str, None)
            if name is None:
                continue
            if name not in self.outputs:
                raise params.fail(
                    key,
                    f"is {name!r}, not an output of this head{close_matches(name, self.outputs)}; "
                    f"outputs: {', '.join(self.outputs)}",
                )
            if len(self.outputs) > 1 and name in self.named.values():
                raise params.fail(key, f"names {name!r}, which another *_output parameter names too")
            self.named[role] = name
        if len(self.outputs) == 3 and not self.keypoint_count:
            raise params.fail("keypoints", "must be >= 1 for a head with three outputs (boxes, scores, keypoints)")
        if "keypoints" in self.named and len(self.outputs) != 3:
            raise params.fail(
                "keypoint_output",
                f"needs a head with three outputs (boxes, scores, keypoints); it has {len(self.outputs)}",
            )
        self._cache: dict[tuple[int, int], _Priors] = {}

    @staticmethod
    def _numbers(params: Params, key: str, lengths: tuple[int, ...]) -> tuple[float, ...] | None:
        value = params.get(key, (list, tuple), None)
        if value is None:
            return None
        if len(value) not in lengths or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value
        ):
            sizes = " or ".join(map(str, lengths))
            raise params.fail(key, f"must be a list of {sizes} numbers > 0, got {value!r}")
        return tuple(float(v) for v in value)

    def priors(self, geometry: FrameGeometry) -> _Priors:
        """The priors for this model input size (computed once per size)."""
        key = (geometry.input_width, geometry.input_height)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        width, height = key
        if isinstance(self.source, PriorSpec):
            boxes = prior_boxes(self.source, width, height)
        else:
            boxes = ssd_anchors(self.source, width, height)
        pixels = np.array([width, height], dtype=np.float32)
        sizes = boxes[:, 2:] * pixels
        log_scale = None
        if self.variances is not None:
            step = sizes * np.asarray(self.variances[:2], np.float32)
            log_scale = np.asarray(self.variances[2:], np.float32)
        else:
            scales = np.asarray(self.scales or 2 * self.source.size(width, height), np.float32)
            step, sizes = sizes / scales[:2], sizes / scales[2:]
        source_w, source_h = self.source.size(width, height)
        cached = _Priors(
            count=len(boxes),
            description=describe(self.source.levels(width, height), source_w, source_h),
            centres=np.ascontiguousarray(boxes[:, :2] * pixels),
            step=step,
            sizes=sizes,
            log_scale=log_scale,
        )
        self._cache[key] = cached
        return cached

    def roles(self, arrays: Mapping[str, np.ndarray]) -> tuple[str, str, str | None]:
        """The names of the box, score and keypoint (or ``None``) outputs."""
        if len(self.outputs) == 1:
            return self.outputs[0], self.outputs[0], None
        found = dict(self.named)
        rest = [name for name in self.outputs if name not in found.values()]
        k2 = 2 * self.keypoint_count
        wanted = [("boxes", {4, 4 + k2} if len(self.outputs) == 2 else {4})]
        if len(self.outputs) == 3:
            wanted.append(("keypoints", {k2}))
        for role, widths in wanted:
            if role in found:
                continue
            fits = [name for name in rest if arrays[name].ndim == 2 and arrays[name].shape[-1] in widths]
            if len(fits) != 1:
                shapes = ", ".join(f"{name} {(1, *arrays[name].shape)}" for name in self.outputs)
                dims = " or ".join(str(w) for w in sorted(widths))
                hints = [
                    f"{name} would fit keypoints = {(arrays[name].shape[-1] - 4) // 2}"
                    for name in rest
                    if role == "boxes"
                    and not fits
                    and arrays[name].ndim == 2
                    and arrays[name].shape[-1] > 4
                    and arrays[name].shape[-1] % 2 == 0
                ]
                raise ModelError(
                    f"head {self.head!r}: the ssd decoder cannot tell which output holds the {role} (last dimension "
                    f"{dims}, keypoints = {self.keypoint_count}): {shapes}"
                    + (f" ({'; '.join(hints)})" if hints else "")
                    + "; set box_output and score_output"
                    + (" and keypoint_output" if len(self.outputs) == 3 else "")
                )
            found[role] = fits[0]
            rest.remove(fits[0])
        if "scores" not in found:
            found["scores"] = rest[0]
        return found["boxes"], found["scores"], found.get("keypoints")

    def split(
        self, tensors: Mapping[str, np.ndarray], priors: _Priors
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, str]:
        """Raw boxes ``(P, 4)``, raw scores ``(P, C)``, raw keypoints ``(P, K, 2)`` (or ``None``),
        float32, x before y; and the name of the score output."""
        arrays = {name: self.item(tensors, name) for name in self.outputs}
        box_name, score_name, point_name = self.roles(arrays)
        k2 = 2 * self.keypoint_count
        boxes = arrays[box_name]
        single = len(self.outputs) == 1
        width = 4 if point_name else 4 + k2
        layout = f"(1, P, 4+{k2}+C)" if single else f"(1, P, {width})"
        if boxes.ndim != 2 or (single and boxes.shape[1] <= width) or (not single and boxes.shape[1] != width):
            hint = ""
            extra = boxes.shape[-1] - 4 if boxes.ndim == 2 else 0
            if not single and extra > 0 and extra % 2 == 0 and not point_name:
                hint = f" (keypoints = {self.keypoint_count}; {extra} extra values would be keypoints = {extra // 2})"
            raise self.bad_shape(box_name, tensors[box_name].shape, f"boxes {layout}{hint}")
        if len(boxes) != priors.count:
            raise self.bad_shape(
                box_name,
                tensors[box_name].shape,
                f"{layout} with P = {priors.count} {self.source_name} from the {self.source_name} spec "
                f"({priors.description})",
            )
        scores = boxes[:, width:] if single else arrays[score_name]
        if scores.ndim == 1:
            scores = scores[:, None]
        if scores.ndim != 2 or len(scores) != len(boxes):
            raise self.bad_shape(
                score_name, tensors[score_name].shape, f"scores (1, {len(boxes)}, C) or (1, {len(boxes)})"
            )
        points = None
        if point_name:
            points = arrays[point_name]
            if points.ndim != 2 or points.shape != (len(boxes), k2):
                raise self.bad_shape(
                    point_name,
                    tensors[point_name].shape,
                    f"keypoints (1, {len(boxes)}, {k2}): x, y of keypoints = {self.keypoint_count}",
                )
        elif k2:
            points = boxes[:, 4:width]
        raw = boxes[:, :4].astype(np.float32, copy=False)
        if points is not None:
            points = points.astype(np.float32, copy=False).reshape(len(boxes), self.keypoint_count, 2)
        if self.coordinate_order == "yx":
            raw = raw[:, [1, 0, 3, 2]]
            points = points[:, :, ::-1] if points is not None else None
        return raw, scores.astype(np.float32, copy=False), points, score_name

    def class_scores(self, scores: np.ndarray, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Activation, background dropped, checked against the labels: ``(P, classes)``."""
        classes = scores.shape[1]
        if self.score_activation == "softmax":
            if classes < 2:
                raise self.bad_shape(name, shape, "(1, P, C) with C >= 2 classes for score_activation 'softmax'")
            scores = softmax(scores)
        elif self.score_activation == "sigmoid":
            scores = sigmoid(scores)
        background = self.background_class
        if background is not None:
            if background >= classes or classes < 2:
                raise self.bad_shape(name, shape, f"(1, P, C) with background_class = {background} and another class")
            scores = np.delete(scores, background, axis=1)
        labels = self.settings.labels
        if labels is not None and scores.shape[1] != len(labels):
            extra = 1 if background is not None else 0
            what = " plus the background class" if extra else ""
            raise self.bad_shape(name, shape, f"(1, P, {len(labels) + extra}): one score per label{what}")
        return scores

    def __call__(self, tensors: Mapping[str, np.ndarray], geometry: FrameGeometry) -> Detections:
        priors = self.priors(geometry)
        raw, scores, points, score_name = self.split(tensors, priors)
        class_scores = self.class_scores(scores, score_name, np.shape(tensors[score_name]))
        # Only the priors at or above the score threshold can become detections: decode those.
        keep = np.flatnonzero(class_scores.max(axis=1) >= self.settings.score_threshold)
        origin, step = priors.centres[keep], priors.step[keep]
        centres = origin + raw[keep, :2] * step
        if priors.log_scale is not None:
            with np.errstate(over="ignore"):
                sizes = priors.sizes[keep] * np.exp(raw[keep, 2:] * priors.log_scale)
        else:
            sizes = raw[keep, 2:] * priors.sizes[keep]
        boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
        keypoints = None
        if points is not None:
            keypoints = origin[:, None, :] + points[keep] * step[:, None, :]
        return finish_detections(
            boxes,
            class_scores[keep],
            geometry,
            self.settings,
            keypoints=keypoints,
            keypoint_names=self.keypoint_names,
        )
