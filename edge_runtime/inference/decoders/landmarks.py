"""Landmarks: named keypoints (with optional scores) in frame pixels.

Layouts: one output ``(1, K, 2)`` (x, y), ``(1, K, 3)`` (x, y, score) or flat ``(1, 2K)``,
in model-input pixels or (``normalized: true``) in 0..1 of the model input →
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

from edge_runtime.inference.decoders.base import Decoder, Params
from edge_runtime.inference.decoders.common import default_names
from edge_runtime.inference.results import Landmarks

if TYPE_CHECKING:
    from edge_runtime.frames.geometry import FrameGeometry


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
