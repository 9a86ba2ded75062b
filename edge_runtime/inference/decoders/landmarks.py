"""Landmarks: named keypoints (with optional scores or depths) in frame pixels.

Layouts: one or more points outputs ``(1, K, 2)`` (x, y), ``(1, K, 3)`` (x, y, score, or x, y,
z with ``point_values = "xyz"``) or flat ``(1, 2K)`` / ``(1, 3K)`` (leading singleton axes such as
MediaPipe's ``(1, 1, 1, 3K)`` are squeezed), in model-input pixels, in 0..1 of the model input
(``normalized: true``) or in 0..1 of a box another output gives (``box_output``), with an optional
presence output (a probability, or a logit with ``presence_activation = "sigmoid"``) →
:class:`~edge_runtime.inference.results.Landmarks`.

Example::

    decode = LandmarksDecoder("face", {"names": ["left_eye", "right_eye"], "normalized": True}, ["points"])
    result = decode({"points": np.array([[[0.3, 0.4, 0.9], [0.7, 0.4, 0.8]]], np.float32)}, geometry)
    result.names, result.points  # ('left_eye', 'right_eye'), (2, 2) float32 frame pixels

    mesh = LandmarksDecoder("mesh", {"point_values": "xyz", "presence_output": "face",
                                     "presence_activation": "sigmoid"}, ["points", "face"])
    result = mesh({"points": np.zeros((1, 1, 1, 1404), np.float32), "face": np.full((1, 1, 1, 1), 3.0)}, geometry)
    result.points.shape, result.z.shape, result.presence  # (468, 2), (468,), 0.9526
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


#: What each point of a points output holds (``point_values``).
POINT_VALUES = ("xy", "xy_score", "xyz")


class LandmarksDecoder(Decoder):
    """Keypoints from ``(1, K, 2)`` (x, y), ``(1, K, 3)`` (x, y, score; x, y, z with
    ``point_values = "xyz"``) or flat ``(1, 2K)`` / ``(1, 3K)``.

    Coordinates are in model-input pixels, in 0..1 of the model input (``normalized: true``),
    or in 0..1 of a box (``box_output``: an output of the head holding ``(1, 4)`` ``x1, y1, x2,
    y2`` in model-input pixels, or in 0..1 when ``normalized``; MTCNN's O-Net reports its
    landmarks relative to the face box this way). Leading singleton axes after the batch are
    squeezed (``(1, 1, 1, 3K)`` is read as ``(1, 3K)``). Several points outputs, listed in
    ``points_outputs``, are concatenated in that order: MediaPipe's iris model gives 71 eye-contour
    points and 5 iris points in two outputs.

    Parameters: ``names`` (default ``point_0``…; as many as the points of all points outputs),
    ``points_outputs`` (default: the one output that is neither ``box_output`` nor
    ``presence_output``),
    ``point_values`` (``xy``, ``xy_score`` or ``xyz``; default from the shape: ``(1, K, 3)`` is
    ``xy_score``, anything else ``xy``; ``xyz``: the third value is a depth on the x scale,
    published as :attr:`Landmarks.z` in frame pixels, not a score), ``normalized`` (default
    false), ``score_threshold`` (checked and kept as ``decoder.score_threshold`` for consumers:
    every point is reported, its score tells), ``score_activation`` (``none`` or ``sigmoid`` for
    the per-point scores), ``box_output``, ``presence_output`` (an output ``(1,)``/``(1, 1)`` (any
    singleton axes) holding the probability that the object is there at all, or ``(1, 2)``
    softmax-ed background/object pair: its last value), ``presence_activation`` (``none``, or
    ``sigmoid`` when the presence is a logit, as in MediaPipe's face mesh),
    ``presence_threshold`` (default 0.5: below it no points are reported), ``order`` (``xy``, or
    ``x_then_y`` for a flat output holding all x, then all y, then all z).
    """

    kind = "landmarks"
    output_counts = (1, None)

    def configure(self, params: Params) -> None:
        self.names = params.names("names")
        self.point_values = params.choice("point_values", POINT_VALUES, None)
        self.normalized = params.flag("normalized", False)
        self.score_threshold = params.number("score_threshold", None, 0.0, 1.0)
        self.score_activation = params.choice("score_activation", ("none", "sigmoid"), "none")
        self.presence_activation = params.choice("presence_activation", ("none", "sigmoid"), "none")
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
            if name in roles.values():
                raise params.fail(key, f"names {name!r}, which is already the head's box_output")
            roles[key] = name
        self.box_output = roles.get("box_output")
        self.presence_output = roles.get("presence_output")
        listed = params.names("points_outputs")
        for name in listed or ():
            if name not in self.outputs or name in roles.values():
                where = "box_output / presence_output" if name in roles.values() else "not an output of the head"
                raise params.fail("points_outputs", f"names {name!r}, which is {where}")
        rest = [o for o in self.outputs if o not in roles.values()]
        if listed is None and len(rest) != 1:
            raise ConfigError(
                f"head {self.head!r}: the landmarks decoder reads one points output besides box_output and "
                f"presence_output; the head has {', '.join(self.outputs)}: name the others with box_output / "
                "presence_output, or list several points outputs in points_outputs"
            )
        self.points_outputs = listed or tuple(rest)
        self.points_output = self.points_outputs[0]

    def presence(self, tensors: Mapping[str, np.ndarray]) -> float | None:
        """The presence probability (after ``presence_activation``), or ``None`` without ``presence_output``."""
        if self.presence_output is None:
            return None
        name = self.presence_output
        value = self.item(tensors, name).reshape(-1)
        if value.size not in (1, 2):
            raise self.bad_shape(name, tensors[name].shape, "(1,), (1, 1) or (1, 2) presence")
        presence = float(value[-1])
        if self.presence_activation == "sigmoid":
            presence = float(sigmoid(np.float32(presence)))
        return presence

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

    def rows(self, tensors: Mapping[str, np.ndarray], name: str) -> np.ndarray:
        """Output ``name`` as ``(K, 2)`` or ``(K, 3)`` rows of point values."""
        shape = tensors[name].shape if name in tensors else ()
        raw = self.item(tensors, name)
        while raw.ndim > 2 and raw.shape[0] == 1:  # (1, 1, 3K) of a (1, 1, 1, 3K) output
            raw = raw[0]
        width = 3 if self.point_values in ("xy_score", "xyz") else 2
        if raw.ndim == 2 and raw.shape[0] == 1 and raw.shape[1] not in (2, 3):
            raw = raw[0]  # (1, 2K) / (1, 3K) item of a (1, 1, 2K) output
        if raw.ndim == 1 and raw.shape[0] % width == 0 and raw.shape[0] > 0:
            # flat x, y(, z) triples, or (order: x_then_y) all x then all y, as MTCNN's O-Net gives them
            raw = raw.reshape(width, -1).T if self.order == "x_then_y" else raw.reshape(-1, width)
        wanted = {"xy": (2,), "xy_score": (3,), "xyz": (3,), None: (2, 3)}[self.point_values]
        if raw.ndim != 2 or raw.shape[1] not in wanted or raw.shape[0] == 0:
            raise self.bad_shape(name, shape, self.layouts())
        return raw

    def layouts(self) -> str:
        """The shapes a points output may have, for errors."""
        if self.point_values is None:
            return "(1, K, 2), (1, K, 3) or (1, 2K)"
        meaning = {"xy": "x, y", "xy_score": "x, y, score", "xyz": "x, y, z"}[self.point_values]
        width = len(meaning.split(","))
        return f"(1, K, {width}) or flat (1, {width}K) of {meaning} (point_values = {self.point_values!r})"

    def __call__(self, tensors: Mapping[str, np.ndarray], geometry: FrameGeometry) -> Landmarks:
        parts = [self.rows(tensors, name) for name in self.points_outputs]
        if len({p.shape[1] for p in parts}) > 1:
            shapes = ", ".join(f"{n} {tuple(tensors[n].shape)}" for n in self.points_outputs)
            raise self.bad_shape(self.points_output, tensors[self.points_output].shape, f"{self.layouts()} in every "
                                 f"points output, with as many values per point (got {shapes})")  # fmt: skip
        raw = np.concatenate(parts) if len(parts) > 1 else parts[0]
        names = self.names or default_names("point", len(raw))
        if len(names) != len(raw):
            counts = " + ".join(str(len(p)) for p in parts)
            raise self.bad_shape(
                self.points_output, tensors[self.points_output].shape,
                f"{self.layouts()} with K = {len(names)} names (the points outputs hold {counts})",
            )  # fmt: skip
        presence = self.presence(tensors)
        if presence is not None and presence < self.presence_threshold:
            empty = np.zeros(0, np.float32) if self.point_values == "xyz" else None
            return Landmarks(points=np.zeros((0, 2), np.float32), scores=None, names=(), presence=presence, z=empty)
        raw = raw.astype(np.float32, copy=False)
        points = raw[:, :2]
        third = "xyz" if self.point_values == "xyz" else "score" if raw.shape[1] == 3 else None
        depth = raw[:, 2].copy() if third == "xyz" else None
        box = self.box(tensors, geometry)
        if box is not None:
            points = box[:2] + points * (box[2:] - box[:2])
            if depth is not None:  # z on the x scale of the box
                depth = depth * (box[2] - box[0])
        elif self.normalized:
            points = points * np.array([geometry.input_width, geometry.input_height], dtype=np.float32)
            if depth is not None:
                depth = depth * np.float32(geometry.input_width)
        scores = raw[:, 2].copy() if third == "score" else None
        if scores is not None and self.score_activation == "sigmoid":
            scores = sigmoid(scores)
        z = None if depth is None else (depth / np.float32(geometry.scale_x)).astype(np.float32)
        return Landmarks(points=geometry.to_frame(points), scores=scores, names=names, presence=presence, z=z)
