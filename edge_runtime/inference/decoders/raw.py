"""Raw: the head's outputs as they are, for consumers that decode them themselves.

Layout: one or more outputs of any shape → :class:`~edge_runtime.inference.results.RawOutput`
holding item 0 of each (copied), by output name.

Example::

    decode = RawDecoder("trunk_features", {}, ["features"])
    decode({"features": np.zeros((1, 8, 8), np.float32)}, geometry).tensors["features"].shape  # (8, 8)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from edge_runtime.inference.decoders.base import Decoder
from edge_runtime.inference.results import RawOutput

if TYPE_CHECKING:
    from edge_runtime.frames.geometry import FrameGeometry


class RawDecoder(Decoder):
    """The outputs as they are (item 0 of the batch, copied): :class:`RawOutput`."""

    kind = "raw"
    output_counts = (1, None)

    def __call__(self, tensors: Mapping[str, np.ndarray], geometry: FrameGeometry) -> RawOutput:
        return RawOutput(tensors={name: np.array(self.item(tensors, name)) for name in self.outputs})
