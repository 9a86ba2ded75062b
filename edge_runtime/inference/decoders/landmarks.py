"""Landmarks: named keypoints (with optional scores) in frame pixels.

Layouts: one output ``(1, K, 2)`` (x, y), ``(1, K, 3)`` (x, y, score) or flat ``(1, 2K)``,
in model-input pixels, in 0..1 of the model input (``normalized: true``) or in 0..1 of a box
another output gives (``box_output``), with an optional presence output →
:class:`~edge_runtime.inference.results.Landmarks`.

Example::

    decode = LandmarksDecoder("face", {"names": ["left_eye", "right_eye"], "normalized": True}, ["points"])
    result = decode({"points": np.array([[[0.3, 0.4, 0.9], [0.7, 0.4, 0.8]]], np.float32)}, geometry)
    result.names, result.points  # ('left_eye', 'right_eye'), (2, 2) float32 frame pixels
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from edge_runtime.errors import ConfigError, close_matches
from edge_runtime.inference.decoders.base import Decoder, Params
from edge_runtime.inference.decoders.common import default_names, sigmoid
from edge_runtime.inference.results import Landmarks

if TYPE_CHECKING:
    from edge_runtime.frames.geometry import FrameGeometry


class LandmarksDecoder(Decoder):
    """Keypoints from ``(1, K, 2)`` (x, y), ``(1, K, 3)`` (x, y, score) or flat ``(1, 2K)``.

    Coordinates are in model-input pixels, in 0..1 of the model input (``normalized: true``),
    or in 0..1 of a box (``box_output``: an output of the head holding ``(1, 4)`` ``x1, y1, x2,
    y2`` in model-input pixels, or in 0..1 when ``normalized``; MTCNN's O-Net reports its
    landmarks relative to the face box this way).

    Parameters: ``names`` (default ``point_0``…), ``normalized`` (default false),
    ``score_threshold`` (checked and kept as ``decoder.score_threshold`` for consumers: every
    point is reported, its score tells), ``score_activation`` (``none`` or ``sigmoid`` for the
    per-point scores), ``box_output``, ``presence_output`` (an output ``(1,)``/``(1, 1)`` holding
    the probability that the object is there at all, or ``(1, 2)`` softmax-ed background/object
    pair: its last value), ``presence_threshold`` (default 0.5: below it no points are reported).
    """

    kind = "landmarks"
    output_counts = (1, 3)

    def configure(self, params: Params) -> None:
        self.names = params.names("names")
        self.normalized = params.flag("normalized", False)
        self.score_threshold = params.number("score_threshold", None, 0.0, 1.0)
        self.score_activation = params.choice("score_activation", ("none", "sigmoid"), "none")
        self.presence_threshold = float(params.number("presence_threshold", 0.5, 0.0, 1.0))
        self.order = params.choice("order", ("xy", "x_then_y"), "xy")
        roles: dict[str, str] = {}
        for key in ("box_output", "presence_output"):
            name = params.get(key, str, None)
            if name is None:
                continue
            if name not in self.outputs:
                raise params.fail(
                    key, f"names {name!r}, which is not an output of the head{close_matches(name, self.outputs)}"
                )
            roles[key] = name
        self.box_output = roles.get("box_output")
        self.presence_output = roles.get("presence_output")
        rest = [o for o in self.outputs if o not in roles.values()]
        if len(rest) != 1:
            raise ConfigError(
                f"head {self.head!r}: the landmarks decoder reads one points output besides box_output and "
                f"presence_output; the head has {', '.join(self.outputs)}: name the others with box_output / "
                "presence_output"
            )
        self.points_output = rest[0]

    def presence(self, tensors: Mapping[str, np.ndarray]) -> float | None:
        """The presence probability, or ``None`` without ``presence_output``."""
        if self.presence_output is None:
            return None
        name = self.presence_output
        value = self.item(tensors, name).reshape(-1)
        if value.size not in (1, 2):
            raise self.bad_shape(name, tensors[name].shape, "(1,), (1, 1) or (1, 2) presence")
        return float(value[-1])

    def box(self, tensors: Mapping[str, np.ndarray], geometry: FrameGeometry) -> np.ndarray | None:
        """The reference box ``x1, y1, x2, y2`` in model-input pixels, or ``None``."""
        if self.box_output is None:
            return None
        name = self.box_output
        box = self.item(tensors, name).reshape(-1).astype(np.float32)
        if box.size != 4:
            raise self.bad_shape(name, tensors[name].shape, "(1, 4) box x1, y1, x2, y2")
        if self.normalized:
            box = box * np.array([geometry.input_width, geometry.input_height] * 2, dtype=np.float32)
        return box

    def __call__(self, tensors: Mapping[str, np.ndarray], geometry: FrameGeometry) -> Landmarks:
        name = self.points_output
        shape = tensors[name].shape if name in tensors else ()
        raw = self.item(tensors, name)
        layouts = "(1, K, 2), (1, K, 3) or (1, 2K)"
        if raw.ndim == 1 and raw.shape[0] % 2 == 0 and raw.shape[0] > 0:
            # (1, 2K): x, y pairs, or (order: x_then_y) all x then all y, as MTCNN's O-Net gives them
            raw = raw.reshape(2, -1).T if self.order == "x_then_y" else raw.reshape(-1, 2)
        if raw.ndim != 2 or raw.shape[1] not in (2, 3) or raw.shape[0] == 0:
            raise self.bad_shape(name, shape, layouts)
        names = self.names or default_names("point", len(raw))
        if len(names) != len(raw):
            raise self.bad_shape(name, shape, f"{layouts} with K = {len(names)} names")
        presence = self.presence(tensors)
        if presence is not None and presence < self.presence_threshold:
            return Landmarks(points=np.zeros((0, 2), np.float32), scores=None, names=(), presence=presence)
        raw = raw.astype(np.float32, copy=False)
        points = raw[:, :2]
        box = self.box(tensors, geometry)
        if box is not None:
            points = box[:2] + points * (box[2:] - box[:2])
        elif self.normalized:
            points = points * np.array([geometry.input_width, geometry.input_height], dtype=np.float32)
        scores = raw[:, 2].copy() if raw.shape[1] == 3 else None
        if scores is not None and self.score_activation == "sigmoid":
            scores = sigmoid(scores)
        return Landmarks(points=geometry.to_frame(points), scores=scores, names=names, presence=presence)
