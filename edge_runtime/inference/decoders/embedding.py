"""Embedding: a feature vector, L2-normalised by default.

Layout: one output of any shape, flattened (item 0) to ``(d,)`` →
:class:`~edge_runtime.inference.results.Embedding`.

Example::

    decode = EmbeddingDecoder("reid", {}, ["features"])
    decode({"features": np.array([[3.0, 4.0]], np.float32)}, geometry).vector  # array([0.6, 0.8], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from edge_runtime.inference.decoders.base import Decoder, Params
from edge_runtime.inference.results import Embedding

if TYPE_CHECKING:
    from edge_runtime.frames.geometry import FrameGeometry


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
