"""Pillow's antialiased ``BILINEAR`` resize in numpy (the input spec's ``resample = "antialias"``).

Pillow's resampling uses a triangle filter whose support grows with the reduction factor, so
shrinking averages instead of sampling (OpenCV's ``INTER_LINEAR`` does not, and ``INTER_AREA`` is a
box). Horizontal pass first, in Pillow's 22-bit fixed point, rounded to uint8 between the passes:
the same bytes as Pillow on uint8 frames; float frames as Pillow's ``F`` mode. Used by
:class:`~edge_runtime.frames.preprocess.Preprocessor` on both backends; where Pillow is installed
(and the preprocessor's backend is not ``"numpy"``) uint8 frames go to Pillow itself.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from edge_runtime.frames.frame import InvalidFrameError

#: Scratch buffers kept per size (as the bilinear resizer's).
MAX_CACHED_SIZES = 16

#: Pillow's fixed-point precision for 8-bit resampling (``PRECISION_BITS`` in ``Resample.c``).
_PIL_PRECISION_BITS = 32 - 8 - 2


@functools.lru_cache(maxsize=64)
def _antialias_table(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pillow's ``BILINEAR`` resampling along one axis (``precompute_coeffs`` in ``Resample.c``).

    Output pixel ``j`` is centred on source position ``c = (j + 0.5) * src / dst``; with the
    filter scale ``f = max(src / dst, 1)`` its taps are the source pixels ``x`` within ``f`` of
    ``c`` (bounds rounded as Pillow rounds them), weighted ``max(0, 1 - |x + 0.5 - c| / f)``
    and normalised to sum 1. Returns the tap indices ``(dst, taps) intp`` (clipped into the
    source; a tap past the edge has weight 0), Pillow's fixed-point weights ``(dst, taps)
    int32`` (for uint8 images) and the float32 weights (for float images).
    """
    scale = src / dst
    filter_scale = max(scale, 1.0)
    support = filter_scale  # the triangle's support (1) times the filter scale
    taps = math.ceil(support) * 2 + 1
    centre = (np.arange(dst, dtype=np.float64) + 0.5) * scale
    first = np.maximum((centre - support + 0.5).astype(np.int64), 0)  # C's (int) truncates, as astype
    count = np.minimum((centre + support + 0.5).astype(np.int64), src) - first
    offsets = np.arange(taps)
    distance = np.abs((offsets[None, :] + first[:, None] - centre[:, None] + 0.5) * (1.0 / filter_scale))
    weights = np.where(distance < 1.0, 1.0 - distance, 0.0)
    weights[offsets[None, :] >= count[:, None]] = 0.0
    total = np.cumsum(weights, axis=1)[:, -1:]  # summed left to right, as Pillow sums
    weights = np.divide(weights, total, out=np.zeros_like(weights), where=total != 0)
    fixed = np.trunc(weights * (1 << _PIL_PRECISION_BITS) + 0.5).astype(np.int32)  # weights are >= 0
    index = np.minimum(first[:, None] + offsets[None, :], src - 1).astype(np.intp)
    tables = (index, fixed, weights.astype(np.float32))
    for array in tables:
        array.flags.writeable = False
    return tables


class ScratchBuffers:
    """Scratch arrays kept per key, for the resizers: fresh full-size temporaries cost more than
    the arithmetic (page faults on every call). ``scratch(key, (shape, dtype), ...)`` returns the
    key's arrays (uninitialised when new), all dropped once ``4 * MAX_CACHED_SIZES`` keys are held.
    Not thread-safe."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[object, ...], tuple[np.ndarray, ...]] = {}

    def __call__(self, key: tuple[object, ...], *shapes_dtypes: tuple[tuple[int, ...], Any]) -> tuple[np.ndarray, ...]:
        buffers = self._buffers.get(key)
        if buffers is None:
            if len(self._buffers) >= 4 * MAX_CACHED_SIZES:
                self._buffers.clear()
            buffers = tuple(np.empty(shape, dtype) for shape, dtype in shapes_dtypes)
            self._buffers[key] = buffers
        return buffers


class AntialiasResizer:
    """Numpy resize as Pillow's ``Image.resize(size, Resampling.BILINEAR)``, scratch kept per size.

    Two separable passes, horizontal first, as Pillow's ``ImagingResample``; each is a sum over
    the taps of :func:`_antialias_table`, gathered along the leading axis (whole rows: the
    horizontal pass runs on the transposed image). uint8 images are computed in Pillow's fixed
    point (22 fraction bits, rounded and clipped to uint8 after each pass: the same bytes as
    Pillow); float32 images in float32 without rounding (Pillow's ``F`` mode, within float32
    rounding). The returned array is a scratch buffer: valid until the next call. Not thread-safe.
    """

    def __init__(self, *, use_pillow: bool = False) -> None:
        self._scratch = ScratchBuffers()
        #: ``PIL.Image`` when asked for and installed: uint8 frames are resized by Pillow itself
        #: (the same bytes by definition, ~4x faster than the numpy passes on a 1080x1080 frame)
        self.pillow: Any = _pillow_image() if use_pillow else None

    def _pass(self, image: np.ndarray, size: int, tag: str) -> np.ndarray:
        """Resample (N, M, C) ``image`` along axis 0 to ``size`` rows: uint8 or float32, as in."""
        index, fixed, weights = _antialias_table(image.shape[0], size)
        shape = (size, *image.shape[1:])
        exact = image.dtype == np.uint8
        accumulator = np.int32 if exact else np.float32
        rows, product, total, out = self._scratch(
            (image.shape, image.dtype.str, size, tag),
            (shape, image.dtype),
            (shape, accumulator),
            (shape, accumulator),
            (shape, image.dtype),
        )
        table = fixed if exact else weights
        total[...] = 1 << (_PIL_PRECISION_BITS - 1) if exact else 0  # Pillow's rounding: add half, then shift
        for tap in range(index.shape[1]):
            np.take(image, index[:, tap], axis=0, out=rows, mode="clip")
            np.multiply(rows, table[:, tap, None, None], out=product, dtype=accumulator)
            np.add(total, product, out=total)
        if exact:
            np.right_shift(total, _PIL_PRECISION_BITS, out=total)
            np.clip(total, 0, 255, out=total)
        out[...] = total
        return out

    def __call__(self, image: np.ndarray, width: int, height: int) -> np.ndarray:
        """Resize (H, W, C) uint8 or float32 ``image`` to (height, width, C), same dtype (a scratch buffer)."""
        channels = image.shape[2]
        if self.pillow is not None and image.dtype == np.uint8 and channels in _PILLOW_MODES:
            plane = image[:, :, 0] if channels == 1 else image
            resized = self.pillow.fromarray(np.ascontiguousarray(plane), _PILLOW_MODES[channels]).resize(
                (width, height), self.pillow.Resampling.BILINEAR
            )
            return np.asarray(resized).reshape(height, width, channels)
        out = image
        if image.shape[1] != width:
            (columns,) = self._scratch(
                (image.shape, image.dtype.str, "T"), ((image.shape[1], *image.shape[::2]), image.dtype)
            )
            columns[...] = image.transpose(1, 0, 2)
            narrow = self._pass(columns, width, "x")
            (out,) = self._scratch(
                (narrow.shape, image.dtype.str, "TT"), ((image.shape[0], width, image.shape[2]), image.dtype)
            )
            out[...] = narrow.transpose(1, 0, 2)
        if image.shape[0] != height:
            out = self._pass(out, height, "y")
        return out


#: Pillow's image mode for a uint8 frame of 1, 3 or 4 channels.
_PILLOW_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def _pillow_image() -> Any | None:
    """``PIL.Image``, or None without Pillow (the ``images`` extra)."""
    try:
        from PIL import Image
    except ImportError:
        return None
    return Image


def numpy_resize_antialias(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize ``image`` (H, W) or (H, W, C) to ``height`` x ``width`` as Pillow's
    ``Image.resize((width, height), Resampling.BILINEAR)`` does (antialiased when shrinking).

    uint8 in → uint8 out, the same bytes as Pillow; any other numeric dtype → float32 (as
    Pillow's ``F`` mode, within float32 rounding). Tables are cached per (source size, output size).
    """
    array = checked_image(image, width, height)
    planar = array[:, :, None] if array.ndim == 2 else array
    if planar.dtype != np.uint8:
        planar = planar.astype(np.float32)
    out = AntialiasResizer()(planar, int(width), int(height)).copy()
    return out[:, :, 0] if array.ndim == 2 else out


def checked_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` as an array, checked to be a non-empty numeric (H, W) / (H, W, C), and the sizes."""
    array = np.asarray(image)
    if array.dtype.kind not in "uif" or array.dtype == np.bool_:
        raise InvalidFrameError(f"image has dtype {array.dtype}; expected a numeric dtype")
    if array.ndim not in (2, 3) or 0 in array.shape:
        raise InvalidFrameError(f"image has shape {array.shape}; expected a non-empty (H, W) or (H, W, C)")
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return array
