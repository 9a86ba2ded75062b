"""Segmentation: a class mask of the frame's content region, with each class's area.

Layouts: one output ``(1, C, H, W)`` logits (argmax), ``(1, 1, H, W)`` or ``(1, H, W)``
probabilities (``>= threshold`` is class 1), or a single channel of integer class ids →
:class:`~edge_runtime.inference.results.Segmentation`. The output may have another
resolution than the model input; letterbox padding is cropped away.

Example::

    decode = SegmentationDecoder("ground", {"classes": ["background", "road"]}, ["mask"])
    probabilities = np.zeros((1, 1, 64, 64), np.float32)
    probabilities[0, 0, 48:] = 0.9  # the bottom quarter of the model input is road
    result = decode({"mask": probabilities}, geometry)  # a square frame: no letterbox padding
    result.classes, result.class_areas  # ('background', 'road'), {'background': 0.75, 'road': 0.25}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from edge_runtime.inference.decoders.base import Decoder, Params
from edge_runtime.inference.decoders.common import default_names
from edge_runtime.inference.results import Segmentation

if TYPE_CHECKING:
    from edge_runtime.frames.geometry import FrameGeometry


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
