"""Regression: named values, optionally one box in frame pixels.

Layouts: any outputs, each flattened (item 0) and concatenated in output order →
:class:`~edge_runtime.inference.results.Regression`; with ``box_format`` the four values
are a box, also reported in frame pixels.

Example::

    decode = RegressionDecoder("age", {"names": ["years"], "scale": 100.0}, ["age"])
    decode({"age": np.array([[0.42]], np.float32)}, geometry).values  # array([42.], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from edge_runtime.inference.decoders.base import Decoder, Params
from edge_runtime.inference.decoders.common import BOX_FORMATS, default_names, to_xyxy
from edge_runtime.inference.results import Regression

if TYPE_CHECKING:
    from edge_runtime.frames.geometry import FrameGeometry


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
