"""Frame sources: synthetic frames, image folders, video files, cameras and network streams.

:func:`open_source` reads the ``SOURCE`` strings of the command line and returns
a :class:`FrameSource`: an iterator of :class:`~edge_runtime.frames.frame.Frame` and a context
manager. Every frame carries a ``frame_id`` counting from 0 and its capture ``timestamp``
(``time.time()``). ``synthetic`` needs only numpy; the others need OpenCV
(``pip install 'edge-runtime[camera]'``), except folders of ``.npy``, ``.png`` and uncompressed ``.bmp``
images, which numpy decodes.

Sources (``SOURCE`` → frames, channel order):

- ``synthetic[:WxH]``: moving coloured shapes on a noisy background, 640x480 by default (RGB).
- ``path/to/folder``: its images in sorted file-name order: jpg, png, bmp, tif, webp, ppm, npy (BGR;
  an ``.npy`` array is taken as RGB, or GRAY when it is (H, W)). ``path/to/image.png``: that one image.
- ``path/to/video.mp4`` (any file OpenCV opens): the video's frames (BGR).
- ``camera:0``: a local camera by index (V4L2 on Linux) (BGR).
- ``rtsp://…``, ``rtsps://…``, ``rtmp://…``, ``http(s)://…``: a network stream; its password never
  appears in logs or in ``Frame.source`` (BGR).
- ``gst:PIPELINE``: a GStreamer pipeline ending in ``appsink``, e.g. a CSI camera on Jetson; needs an
  OpenCV built with GStreamer (BGR).

A file or frame that cannot be read or is not a usable image (empty, truncated, corrupt, the
wrong shape, over ``max_image_pixels``) is skipped with a warning naming it and counted
(``FrameSource.frames_skipped``); it never stops the source.

Folders, images and videos end when exhausted (``loop=True`` starts again); cameras and
streams never end on their own: a failed open or read is retried with exponential backoff
(:class:`ReconnectOptions`, 0.5 s doubling to 10 s), each retry logged, and :meth:`close`
stops the retrying at once, from any thread. ``max_frames`` stops any source after N frames.

Modules: :mod:`~edge_runtime.frames.source` (the :class:`FrameSource` interface),
:mod:`~edge_runtime.frames.synthetic`, :mod:`~edge_runtime.frames.folders` (images),
:mod:`~edge_runtime.frames.capture` (videos, cameras, streams: OpenCV) and this one
(:func:`open_source`: ``SOURCE`` strings → sources).

Example::

    from edge_runtime.frames.sources import open_source
    with open_source("camera:0", fps=10, width=640, height=480) as source:
        for frame in source:
            tensor, geometry = preprocess(frame)

CLI: ``edge-runtime run --bundle build/demo_bundle --source synthetic:320x240 --max-frames 100``.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

from edge_runtime.errors import ConfigError, close_matches
from edge_runtime.frames.capture import ReconnectOptions, StreamSource, VideoFileSource, capture_opener, check_gstreamer
from edge_runtime.frames.folders import IMAGE_SUFFIXES, ImageFolderSource
from edge_runtime.frames.frame import require_cv2
from edge_runtime.frames.images import DEFAULT_MAX_IMAGE_PIXELS
from edge_runtime.frames.source import FrameSource
from edge_runtime.frames.synthetic import DEFAULT_SYNTHETIC_SIZE, SyntheticSource
from edge_runtime.names import redact_url

logger = logging.getLogger(__name__)

SOURCE_FORMS = "synthetic[:WxH], a folder of images, an image or video file, camera:N, rtsp://…, http://…, gst:PIPELINE"
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://")
_MAX_SIDE = 16384


def _size_from_spec(text: str, spec: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if match is None:
        raise ConfigError(f"source {spec!r}: expected synthetic:WIDTHxHEIGHT, e.g. synthetic:640x480")
    width, height = int(match.group(1)), int(match.group(2))
    if not (1 <= width <= _MAX_SIDE and 1 <= height <= _MAX_SIDE):
        raise ConfigError(f"source {spec!r}: width and height must be in 1..{_MAX_SIDE}")
    return width, height


def _check_options(fps: float | None, width: int | None, height: int | None, max_frames: int | None) -> None:
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps < math.inf):
        raise ConfigError(f"fps must be a positive number, got {fps!r}")
    for name, value, low in (("width", width, 1), ("height", height, 1), ("max_frames", max_frames, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")


def open_source(
    spec: str,
    *,
    fps: float | None = None,
    width: int | None = None,
    height: int | None = None,
    loop: bool = False,
    max_frames: int | None = None,
    reconnect: ReconnectOptions | None = None,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> FrameSource:
    """Open the frame source named by a ``SOURCE`` string (see the module docstring).

    ``fps`` paces the source (synthetic and files sleep; cameras and streams drop early
    frames and ask the device for that rate); ``width``/``height`` set the synthetic size and
    the capture size asked of cameras (files ignore them); ``loop`` restarts folders and
    videos; ``max_frames`` stops after N frames; ``reconnect`` sets the backoff of cameras
    and streams; ``max_image_pixels`` is the largest image a folder source decodes (larger ones are
    skipped and counted, like unreadable files and corrupt frames: ``frames_skipped``).
    Raises :class:`ConfigError` for a bad spec or a path that is missing, empty
    or unreadable, :class:`BackendUnavailableError` when OpenCV (or its GStreamer support)
    is needed and missing. Cameras and streams are opened on the first read, so this call
    returns at once even when the device is down.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"source must be a non-empty string: {SOURCE_FORMS}")
    _check_options(fps, width, height, max_frames)
    if isinstance(max_image_pixels, bool) or not isinstance(max_image_pixels, int) or max_image_pixels < 1:
        raise ConfigError(f"max_image_pixels must be an integer >= 1, got {max_image_pixels!r}")
    text = spec.strip()
    lower = text.lower()
    common: dict[str, Any] = {"fps": fps, "max_frames": max_frames}

    if lower == "synthetic" or lower.startswith("synthetic:"):
        size = _size_from_spec(text.partition(":")[2], spec) if ":" in text else None
        if size is not None and (width or height) and (width or size[0], height or size[1]) != size:
            raise ConfigError(f"source {spec!r} disagrees with width={width} height={height}; give the size once")
        w, h = size or (width or DEFAULT_SYNTHETIC_SIZE[0], height or DEFAULT_SYNTHETIC_SIZE[1])
        return SyntheticSource(w, h, **common)

    if lower.startswith("camera:"):
        index_text = text.partition(":")[2].strip()
        if not index_text.isdigit():
            raise ConfigError(f"source {spec!r}: expected camera:N with N a camera index, e.g. camera:0")
        cv2 = require_cv2(f"source {spec!r}")
        description = f"camera:{int(index_text)}"
        opener = capture_opener(cv2, (int(index_text),), description, fps, width, height)
        return StreamSource(description, opener, reconnect=reconnect, **common)

    if lower.startswith(STREAM_SCHEMES):
        description = redact_url(text)  # descriptions end up in logs and results
        cv2 = require_cv2(f"source {description!r}")
        opener = capture_opener(cv2, (text,), description, fps, width, height)
        return StreamSource(description, opener, reconnect=reconnect, **common)

    if lower.startswith("gst:"):
        pipeline = text[4:].strip()
        if not pipeline:
            raise ConfigError("source 'gst:' needs a pipeline, e.g. gst:nvarguscamerasrc ! nvvidconv ! … ! appsink")
        cv2 = require_cv2("gst: sources")
        check_gstreamer(cv2)
        description = "gst:" + pipeline[:40] + ("…" if len(pipeline) > 40 else "")
        opener = capture_opener(cv2, (pipeline, cv2.CAP_GSTREAMER), description, fps, None, None)
        return StreamSource(description, opener, reconnect=reconnect, **common)

    path = Path(text).expanduser()
    if path.is_dir() or (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES):
        if width or height:
            logger.warning("source %s: width/height apply to synthetic and camera sources; ignored", path)
        if path.is_dir():
            paths = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not paths:
                raise ConfigError(f"image folder {path} has no images ({', '.join(IMAGE_SUFFIXES)})")
            return ImageFolderSource(paths, f"folder:{path}", loop=loop, max_pixels=max_image_pixels, **common)
        return ImageFolderSource([path], f"image:{path}", loop=loop, max_pixels=max_image_pixels, **common)
    if path.is_file():
        if width or height:
            logger.warning("source %s: width/height apply to synthetic and camera sources; ignored", path)
        return VideoFileSource(path, loop=loop, **common)
    if path.exists():
        raise ConfigError(f"source {spec!r} is neither a regular file nor a folder")
    hint = close_matches(lower.split(":")[0], ("synthetic", "camera", "gst", "rtsp", "http"))
    raise ConfigError(f"source {spec!r}: no such file or folder{hint}; SOURCE is {SOURCE_FORMS}")
