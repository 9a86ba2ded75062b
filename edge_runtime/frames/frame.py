"""Camera frames as the runtime passes them around, and the optional OpenCV import.

A :class:`Frame` is one captured image plus where and when it came from. Sources
(:mod:`edge_runtime.frames.sources`) make them; the preprocessor (:mod:`edge_runtime.frames.preprocess`)
turns them into model inputs. OpenCV is an optional extra (``pip install 'edge-runtime[camera]'``):
:func:`optional_cv2` returns it when it imports, :func:`require_cv2` raises
:class:`~edge_runtime.errors.BackendUnavailableError` naming the extra when it does not.

Example::

    import time
    import numpy as np
    from edge_runtime.frames.frame import Frame

    frame = Frame(np.zeros((480, 640, 3), np.uint8), color="RGB", frame_id=0, timestamp=time.time(), source="test")
    print(frame.width, frame.height, frame.channels)    # 640 480 3
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_runtime.errors import BackendUnavailableError, EdgeRuntimeError, close_matches

logger = logging.getLogger(__name__)

#: Channel orders a frame may have, and the number of channels each implies.
FRAME_COLORS: dict[str, int] = {"RGB": 3, "BGR": 3, "RGBA": 4, "BGRA": 4, "GRAY": 1}

#: What to install for the OpenCV-backed features (cameras, video, JPEG/PNG, fast resize).
CAMERA_EXTRA_HINT = "pip install 'edge-runtime[camera]'"

_cv2_import_logged = False


class InvalidFrameError(EdgeRuntimeError):
    """A frame the runtime cannot use: wrong dtype/rank/channels, empty, NaN/inf."""


def check_color(color: str, channels: int, shape: tuple[int, ...]) -> None:
    """Raise :class:`InvalidFrameError` unless ``color`` is known and matches ``channels``."""
    if color not in FRAME_COLORS:
        raise InvalidFrameError(
            f"frame color {color!r} is not one of {', '.join(FRAME_COLORS)}{close_matches(str(color), FRAME_COLORS)}"
        )
    if FRAME_COLORS[color] != channels:
        fits = [name for name, n in FRAME_COLORS.items() if n == channels]
        raise InvalidFrameError(
            f"frame of shape {shape} has {channels} channel(s) but color {color!r} means {FRAME_COLORS[color]}; "
            f"use color {' or '.join(repr(c) for c in fits)}"
        )


def frame_channels(shape: tuple[int, ...]) -> int:
    """Channels of an image of ``shape`` ``(H, W)`` or ``(H, W, C)``; raise if the shape is not an image.

    Rejects other ranks, empty images and channel counts other than 1, 3 or 4.
    """
    if len(shape) not in (2, 3):
        raise InvalidFrameError(f"frame has {len(shape)} dims (shape {shape}); expected (H, W) or (H, W, C)")
    if 0 in shape:
        raise InvalidFrameError(f"frame is empty (shape {shape})")
    channels = 1 if len(shape) == 2 else shape[2]
    if channels not in (1, 3, 4):
        raise InvalidFrameError(
            f"frame has {channels} channels (shape {shape}); expected 1 (GRAY), 3 (RGB/BGR) or 4 (RGBA/BGRA)"
        )
    return channels


@dataclass(frozen=True, eq=False)
class Frame:
    """One captured image.

    ``image`` is ``(H, W, C)`` uint8 with C = 1, 3 or 4, or ``(H, W)`` uint8 for grey; ``color``
    its channel order (``RGB``, ``BGR``, ``RGBA``, ``BGRA`` or ``GRAY``); ``frame_id`` counts
    the frames of one source from 0; ``timestamp`` is the capture time (``time.time()``
    seconds); ``source`` a short description (``camera:0``, ``synthetic:640x480``…, never a
    password). Frames compare by identity. Float images are not frames: pass them to the
    preprocessor as arrays.
    """

    image: np.ndarray
    color: str
    frame_id: int
    timestamp: float
    source: str

    def __post_init__(self) -> None:
        if not isinstance(self.image, np.ndarray):
            raise InvalidFrameError(f"Frame.image must be a numpy array, got {type(self.image).__name__}")
        if self.image.dtype != np.uint8:
            raise InvalidFrameError(
                f"frame has dtype {self.image.dtype}; a Frame holds uint8 pixels "
                "(pass float images in 0..255 to the preprocessor as arrays)"
            )
        check_color(self.color, frame_channels(self.image.shape), self.image.shape)
        if isinstance(self.frame_id, bool) or not isinstance(self.frame_id, (int, np.integer)) or self.frame_id < 0:
            raise InvalidFrameError(f"frame_id must be an integer >= 0, got {self.frame_id!r}")

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def channels(self) -> int:
        return 1 if self.image.ndim == 2 else int(self.image.shape[2])


def optional_cv2() -> Any | None:
    """The ``cv2`` module when OpenCV imports, else ``None`` (logged once, never fatal)."""
    global _cv2_import_logged
    try:
        return importlib.import_module("cv2")
    except ImportError as exc:
        if not _cv2_import_logged:
            _cv2_import_logged = True
            # Absent is normal on a numpy-only device; a broken install (missing libGL…) deserves a warning.
            level = logging.DEBUG if isinstance(exc, ModuleNotFoundError) else logging.WARNING
            logger.log(level, "OpenCV (cv2) is not available (%s); using the numpy fallbacks", exc)
        return None


def require_cv2(purpose: str) -> Any:
    """The ``cv2`` module; raise :class:`BackendUnavailableError` saying ``purpose`` needs it."""
    cv2 = optional_cv2()
    if cv2 is None:
        raise BackendUnavailableError(f"{purpose} needs OpenCV, which is not installed: {CAMERA_EXTRA_HINT}")
    return cv2
