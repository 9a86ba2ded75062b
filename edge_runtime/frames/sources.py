"""Frame sources: synthetic frames, image folders, video files, cameras and network streams.

:func:`open_source` reads the ``SOURCE`` strings of the command line (DESIGN.md §7) and returns
a :class:`FrameSource`: an iterator of :class:`~edge_runtime.frames.frame.Frame` and a context
manager. Every frame carries a ``frame_id`` counting from 0 and its capture ``timestamp``
(``time.time()``). ``synthetic`` needs only numpy; the others need OpenCV
(``pip install 'edge-runtime[camera]'``), except folders of ``.npy`` and uncompressed ``.bmp``
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

Folders, images and videos end when exhausted (``loop=True`` starts again); cameras and
streams never end on their own: a failed open or read is retried with exponential backoff
(:class:`ReconnectOptions`, 0.5 s doubling to 10 s), each retry logged, and :meth:`close`
stops the retrying at once, from any thread. ``max_frames`` stops any source after N frames.

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
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from edge_runtime.errors import BackendUnavailableError, ConfigError, close_matches
from edge_runtime.frames.frame import (
    CAMERA_EXTRA_HINT,
    Frame,
    InvalidFrameError,
    frame_channels,
    optional_cv2,
    require_cv2,
)

logger = logging.getLogger(__name__)

SOURCE_FORMS = "synthetic[:WxH], a folder of images, an image or video file, camera:N, rtsp://…, http://…, gst:PIPELINE"
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://")
#: Image files a folder source reads (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".npy")
#: Image files numpy decodes without OpenCV.
NUMPY_IMAGE_SUFFIXES = (".npy", ".bmp")
DEFAULT_SYNTHETIC_SIZE = (640, 480)
_MAX_SIDE = 16384


@dataclass(frozen=True)
class ReconnectOptions:
    """Backoff for a lost camera or stream: wait ``initial_delay_s``, doubling to ``max_delay_s``."""

    initial_delay_s: float = 0.5
    max_delay_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("initial_delay_s", "max_delay_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ConfigError(f"reconnect {name} must be a positive number of seconds, got {value!r}")
        if self.max_delay_s < self.initial_delay_s:
            raise ConfigError(
                f"reconnect max_delay_s ({self.max_delay_s}) is less than initial_delay_s ({self.initial_delay_s})"
            )


class FrameSource:
    """An iterator of :class:`Frame` that must be closed (``with`` or :meth:`close`).

    ``description`` names the source in logs and in ``Frame.source``; ``live`` is true for
    cameras and streams (frames keep coming, old ones go stale) and false for synthetic
    frames and files. Subclasses implement :meth:`_capture` and :meth:`_release`.
    """

    live = False

    def __init__(self, description: str, *, fps: float | None = None, max_frames: int | None = None) -> None:
        self.description = description
        self.max_frames = max_frames
        self._period = 1.0 / fps if fps else 0.0
        self._due = 0.0  # time.monotonic() before which the next frame is not delivered
        self._next_id = 0
        self._closed = threading.Event()
        self._io_lock = threading.Lock()

    def _advance_due(self) -> None:
        """Schedule the next frame one period on: on the fixed grid while on time (no drift from
        frame arrival jitter), from now when more than a period late (no catch-up burst)."""
        now = time.monotonic()
        self._due = self._due + self._period if now - self._due < self._period else now + self._period

    # -- subclass hooks
    def _capture(self) -> tuple[np.ndarray, str] | None:
        """Read the next image and its colour; ``None`` when the source is exhausted or closed."""
        raise NotImplementedError

    def _release(self) -> None:
        """Free devices and files; called once, never while :meth:`_capture` runs."""

    # -- the iterator
    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    @property
    def frames_delivered(self) -> int:
        """How many frames this source has returned so far."""
        return self._next_id

    def __iter__(self) -> Iterator[Frame]:
        return self

    def __next__(self) -> Frame:
        if self.max_frames is not None and self._next_id >= self.max_frames:
            self.close()
        if self._closed.is_set():
            raise StopIteration
        if self._period and not self.live:
            delay = self._due - time.monotonic()
            if delay > 0 and self._closed.wait(delay):
                raise StopIteration
            self._advance_due()
        with self._io_lock:
            captured = None if self._closed.is_set() else self._capture()
            timestamp = time.time()
            if captured is None or self._closed.is_set():
                self._closed.set()
                self._release()
                raise StopIteration
        image, color = captured
        frame = Frame(image=image, color=color, frame_id=self._next_id, timestamp=timestamp, source=self.description)
        self._next_id += 1
        return frame

    def close(self) -> None:
        """Stop the source and release it; safe to call twice and from another thread.

        If another thread is inside a blocking read, that thread releases the device as
        soon as the read returns; a reconnect wait ends at once.
        """
        self._closed.set()
        if self._io_lock.acquire(blocking=False):
            try:
                self._release()
            finally:
                self._io_lock.release()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description!r} frames={self._next_id}{' closed' if self.closed else ''}>"


# --------------------------------------------------------------------------- synthetic


def _bounce(position: int, span: int) -> int:
    """``position`` folded back and forth over ``0..span``."""
    if span <= 0:
        return 0
    phase = position % (2 * span)
    return phase if phase <= span else 2 * span - phase


class SyntheticSource(FrameSource):
    """Deterministic RGB frames (numpy only): a red square, a green disc and a blue triangle
    moving over a noisy grey gradient. Frame ``n`` is the same image on every run."""

    _BACKGROUNDS = 4

    def __init__(
        self,
        width: int = DEFAULT_SYNTHETIC_SIZE[0],
        height: int = DEFAULT_SYNTHETIC_SIZE[1],
        *,
        fps: float | None = None,
        max_frames: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(f"synthetic:{width}x{height}", fps=fps, max_frames=max_frames)
        self.width, self.height = width, height
        rng = np.random.default_rng(seed)
        gradient = np.linspace(70.0, 150.0, height, dtype=np.float32)[:, None, None]
        self._backgrounds = [
            np.clip(gradient + rng.normal(0.0, 12.0, (height, width, 3)).astype(np.float32), 0, 255).astype(np.uint8)
            for _ in range(self._BACKGROUNDS)
        ]

    def render(self, frame_id: int) -> np.ndarray:
        """Frame ``frame_id`` as a new (height, width, 3) uint8 RGB array."""
        w, h = self.width, self.height
        image = self._backgrounds[frame_id % self._BACKGROUNDS].copy()
        unit = max(1, min(w, h) // 8)
        # Red square sliding left and right in the upper third.
        side = max(1, unit)
        x = _bounce(frame_id * max(1, w // 64), w - side)
        y = min(h - side, h // 4)
        image[y : y + side, x : x + side] = (220, 40, 40)
        # Green disc going round an ellipse.
        radius = max(1, unit // 2 + 1)
        angle = frame_id * 2.0 * math.pi / 90.0
        cx, cy = int(w / 2 + w / 4 * math.cos(angle)), int(h / 2 + h / 4 * math.sin(angle))
        x0, x1, y0, y1 = max(0, cx - radius), min(w, cx + radius + 1), max(0, cy - radius), min(h, cy + radius + 1)
        if x0 < x1 and y0 < y1:
            yy, xx = np.ogrid[y0:y1, x0:x1]
            image[y0:y1, x0:x1][(xx - cx) ** 2 + (yy - cy) ** 2 <= radius * radius] = (40, 200, 60)
        # Blue triangle (apex up) sliding up and down on the right.
        tri = max(1, unit + unit // 2)
        top = _bounce(frame_id * max(1, h // 48), h - tri)
        cx = max(0, w - 1 - w // 6)
        x0, x1, y1 = max(0, cx - tri // 2), min(w, cx + tri // 2 + 1), min(h, top + tri)
        yy, xx = np.ogrid[top:y1, x0:x1]
        image[top:y1, x0:x1][np.abs(xx - cx) * 2 <= (yy - top)] = (40, 60, 220)
        return image

    def _capture(self) -> tuple[np.ndarray, str] | None:
        return self.render(self._next_id), "RGB"


# --------------------------------------------------------------------------- files


def read_bmp(path: str | Path) -> np.ndarray:
    """Decode an uncompressed BMP (8-bit palette, 24 or 32 bit) with numpy: (H, W, 3) uint8 BGR.

    Like ``cv2.imread(path, cv2.IMREAD_COLOR)``; raises :class:`InvalidFrameError` for
    compressed or unusual BMPs (use OpenCV for those).
    """
    data = Path(path).read_bytes()
    if len(data) < 54 or data[:2] != b"BM":
        raise InvalidFrameError(f"{path}: not a BMP file")
    (offset,) = struct.unpack_from("<I", data, 10)
    header, width, height, _planes, bits, compression = struct.unpack_from("<IiiHHI", data, 14)
    (colors_used,) = struct.unpack_from("<I", data, 46)
    if header < 40 or width <= 0 or height == 0:
        raise InvalidFrameError(f"{path}: unsupported BMP header (size {header}, {width}x{height})")
    if compression not in (0, 3) or bits not in (8, 24, 32) or (compression == 3 and bits != 32):
        raise InvalidFrameError(
            f"{path}: BMP with {bits} bits per pixel and compression {compression} needs OpenCV: {CAMERA_EXTRA_HINT}"
        )
    if compression == 3:  # BI_BITFIELDS: only the standard BGRA byte order
        masks = struct.unpack_from("<III", data, 54)
        if masks != (0x00FF0000, 0x0000FF00, 0x000000FF):
            raise InvalidFrameError(f"{path}: BMP with colour masks {[hex(m) for m in masks]} needs OpenCV")
    rows = abs(height)
    stride = (width * bits + 31) // 32 * 4
    if offset + stride * rows > len(data):
        raise InvalidFrameError(f"{path}: BMP is truncated ({len(data)} bytes for {width}x{rows}x{bits} bits)")
    pixels = np.frombuffer(data, np.uint8, count=stride * rows, offset=offset).reshape(rows, stride)
    if bits == 8:
        count = colors_used or 256
        palette = np.frombuffer(data, np.uint8, count=4 * count, offset=14 + header).reshape(count, 4)[:, :3]
        image = palette[np.minimum(pixels[:, :width], count - 1)]
    else:
        image = pixels[:, : width * bits // 8].reshape(rows, width, bits // 8)[:, :, :3]
    if height > 0:  # bottom-up rows
        image = image[::-1]
    return np.ascontiguousarray(image)


def _color_of(image: np.ndarray, three: str) -> str:
    channels = 1 if image.ndim == 2 else image.shape[2]
    return {1: "GRAY", 3: three, 4: three + "A"}.get(channels, "?")


class ImageFolderSource(FrameSource):
    """The images of a folder (or one image), in sorted name order; skips files it cannot decode."""

    def __init__(
        self,
        paths: list[Path],
        description: str,
        *,
        loop: bool = False,
        fps: float | None = None,
        max_frames: int | None = None,
    ) -> None:
        super().__init__(description, fps=fps, max_frames=max_frames)
        self.paths = paths
        self.loop = loop
        self._cv2 = optional_cv2()
        if self._cv2 is None:
            needs = next((p for p in paths if p.suffix.lower() not in NUMPY_IMAGE_SUFFIXES), None)
            if needs is not None:
                raise BackendUnavailableError(
                    f"{description}: decoding {needs.suffix} images ({needs.name}) needs OpenCV, which is not "
                    f"installed: {CAMERA_EXTRA_HINT} (without it only .npy and uncompressed .bmp are read)"
                )
        self._index = 0
        self._decoded_this_pass = 0

    def _decode(self, path: Path) -> tuple[np.ndarray, str]:
        suffix = path.suffix.lower()
        if suffix == ".npy":
            image = np.load(path, allow_pickle=False)
            if image.dtype != np.uint8:
                raise InvalidFrameError(f"array of dtype {image.dtype}; expected uint8 pixels")
            frame_channels(image.shape)
            return image, _color_of(image, "RGB")
        if self._cv2 is None:
            return read_bmp(path), "BGR"
        image = self._cv2.imdecode(np.fromfile(path, np.uint8), self._cv2.IMREAD_COLOR)
        if image is None:
            raise InvalidFrameError("OpenCV cannot decode it")
        return image, "BGR"

    def _capture(self) -> tuple[np.ndarray, str] | None:
        while not self._closed.is_set():
            if self._index >= len(self.paths):
                if not (self.loop and self._decoded_this_pass):
                    return None
                self._index, self._decoded_this_pass = 0, 0
            path = self.paths[self._index]
            self._index += 1
            try:
                image, color = self._decode(path)
            except (OSError, ValueError, InvalidFrameError) as exc:
                logger.warning("%s: skipping %s: %s", self.description, path.name, exc)
                continue
            self._decoded_this_pass += 1
            return image, color
        return None


class VideoFileSource(FrameSource):
    """The frames of a video file (OpenCV); ends with the file unless ``loop``."""

    def __init__(
        self, path: Path, *, loop: bool = False, fps: float | None = None, max_frames: int | None = None
    ) -> None:
        super().__init__(f"video:{path}", fps=fps, max_frames=max_frames)
        self.path = path
        self.loop = loop
        self._cv2 = require_cv2(f"video file source {path}")
        self._cap: Any = self._open()
        if self._cap is None:
            raise ConfigError(f"video file {path}: OpenCV cannot open it (not a video, or an unsupported codec)")
        self._read_this_pass = 0

    def _open(self) -> Any:
        cap = self._cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    def _capture(self) -> tuple[np.ndarray, str] | None:
        for _ in range(2):  # a second try after rewinding, when looping
            if self._cap is None:
                return None
            ok, image = self._cap.read()
            if ok and image is not None and image.size:
                self._read_this_pass += 1
                return image, _color_of(image, "BGR")
            if not (self.loop and self._read_this_pass):
                return None
            logger.debug("%s: end of file after %d frames; looping", self.description, self._read_this_pass)
            self._cap.release()
            self._cap, self._read_this_pass = self._open(), 0
        return None

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


# --------------------------------------------------------------------------- cameras and streams


class StreamSource(FrameSource):
    """A live camera or stream read through an OpenCV-style capture; never ends on its own.

    ``open_capture`` returns a new capture object (``isOpened()``, ``read()``, ``release()``,
    optionally ``grab()``), e.g. ``lambda: cv2.VideoCapture(0)``. A failed open or read
    releases the capture and retries with exponential backoff, logging each retry. With
    ``fps``, frames that arrive early are dropped (``grab()``, not decoded), never queued.
    """

    live = True

    def __init__(
        self,
        description: str,
        open_capture: Callable[[], Any],
        *,
        reconnect: ReconnectOptions | None = None,
        fps: float | None = None,
        max_frames: int | None = None,
    ) -> None:
        super().__init__(description, fps=fps, max_frames=max_frames)
        self._open_capture = open_capture
        self.reconnect = reconnect or ReconnectOptions()
        self._delay = self.reconnect.initial_delay_s
        self._failures = 0
        self._cap: Any = None

    def _open(self) -> Any:
        try:
            cap = self._open_capture()
        except Exception as exc:  # a backend that throws on open is one more failure to retry
            logger.debug("%s: open raised %s", self.description, exc)
            return None
        if cap is not None and cap.isOpened():
            return cap
        if cap is not None:
            cap.release()
        return None

    def _drop_capture(self) -> None:
        if self._cap is not None:
            try:
                self._cap.release()
            finally:
                self._cap = None

    def _retry(self, reason: str) -> None:
        """Log and wait out one backoff step; returns early when the source is closed."""
        self._failures += 1
        logger.warning("%s: %s; retrying in %.2f s (attempt %d)", self.description, reason, self._delay, self._failures)
        self._closed.wait(self._delay)
        self._delay = min(self._delay * 2.0, self.reconnect.max_delay_s)

    def _capture(self) -> tuple[np.ndarray, str] | None:
        while not self._closed.is_set():
            if self._cap is None:
                self._cap = self._open()
                if self._cap is None:
                    self._retry("cannot open")
                    continue
                if self._failures:
                    logger.info("%s: reconnected after %d failed attempt(s)", self.description, self._failures)
            try:
                if self._period and time.monotonic() < self._due and hasattr(self._cap, "grab"):
                    if self._cap.grab():  # too early: drop this frame without decoding it
                        continue
                    ok, image = False, None
                else:
                    ok, image = self._cap.read()
            except Exception as exc:  # cv2.error from a broken stream is a lost stream, not a crash
                logger.debug("%s: read raised %s", self.description, exc)
                ok, image = False, None
            if ok and image is not None and image.size:
                self._delay, self._failures = self.reconnect.initial_delay_s, 0
                if self._period:
                    self._advance_due()
                return image, _color_of(image, "BGR")
            self._drop_capture()
            self._retry("read failed (stream lost?)")
        return None

    def _release(self) -> None:
        self._drop_capture()


# --------------------------------------------------------------------------- open_source


def _redact(url: str) -> str:
    """``url`` without its password (descriptions end up in logs and in published results)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def _check_gstreamer(cv2: Any) -> None:
    info = cv2.getBuildInformation()
    match = re.search(r"GStreamer:\s*(\S+)", info)
    if match is None or match.group(1).upper() != "YES":
        said = f"'GStreamer: {match.group(1)}'" if match else "no GStreamer line"
        raise BackendUnavailableError(
            f"gst: sources need an OpenCV built with GStreamer, but the installed OpenCV {cv2.__version__} was "
            f"built without it (cv2.getBuildInformation() has {said}). On Jetson use the system OpenCV "
            "(python3-opencv from JetPack, in a venv made with --system-site-packages) instead of "
            "opencv-python-headless; or read the camera as camera:N or the stream as rtsp://…"
        )


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
) -> FrameSource:
    """Open the frame source named by a ``SOURCE`` string (see the module docstring).

    ``fps`` paces the source (synthetic and files sleep; cameras and streams drop early
    frames and ask the device for that rate); ``width``/``height`` set the synthetic size and
    the capture size asked of cameras (files ignore them); ``loop`` restarts folders and
    videos; ``max_frames`` stops after N frames; ``reconnect`` sets the backoff of cameras
    and streams. Raises :class:`ConfigError` for a bad spec or a path that is missing, empty
    or unreadable, :class:`BackendUnavailableError` when OpenCV (or its GStreamer support)
    is needed and missing. Cameras and streams are opened on the first read, so this call
    returns at once even when the device is down.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"source must be a non-empty string: {SOURCE_FORMS}")
    _check_options(fps, width, height, max_frames)
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
        opener = _capture_opener(cv2, (int(index_text),), description, fps, width, height)
        return StreamSource(description, opener, reconnect=reconnect, **common)

    if lower.startswith(STREAM_SCHEMES):
        description = _redact(text)
        cv2 = require_cv2(f"source {description!r}")
        opener = _capture_opener(cv2, (text,), description, fps, width, height)
        return StreamSource(description, opener, reconnect=reconnect, **common)

    if lower.startswith("gst:"):
        pipeline = text[4:].strip()
        if not pipeline:
            raise ConfigError("source 'gst:' needs a pipeline, e.g. gst:nvarguscamerasrc ! nvvidconv ! … ! appsink")
        cv2 = require_cv2("gst: sources")
        _check_gstreamer(cv2)
        description = "gst:" + pipeline[:40] + ("…" if len(pipeline) > 40 else "")
        opener = _capture_opener(cv2, (pipeline, cv2.CAP_GSTREAMER), description, fps, None, None)
        return StreamSource(description, opener, reconnect=reconnect, **common)

    path = Path(text).expanduser()
    if path.is_dir() or (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES):
        if width or height:
            logger.warning("source %s: width/height apply to synthetic and camera sources; ignored", path)
        if path.is_dir():
            paths = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not paths:
                raise ConfigError(f"image folder {path} has no images ({', '.join(IMAGE_SUFFIXES)})")
            return ImageFolderSource(paths, f"folder:{path}", loop=loop, **common)
        return ImageFolderSource([path], f"image:{path}", loop=loop, **common)
    if path.is_file():
        if width or height:
            logger.warning("source %s: width/height apply to synthetic and camera sources; ignored", path)
        return VideoFileSource(path, loop=loop, **common)
    if path.exists():
        raise ConfigError(f"source {spec!r} is neither a regular file nor a folder")
    hint = close_matches(lower.split(":")[0], ("synthetic", "camera", "gst", "rtsp", "http"))
    raise ConfigError(f"source {spec!r}: no such file or folder{hint}; SOURCE is {SOURCE_FORMS}")


def _capture_opener(
    cv2: Any, args: tuple[Any, ...], description: str, fps: float | None, width: int | None, height: int | None
) -> Callable[[], Any]:
    """A function that opens ``cv2.VideoCapture(*args)`` and asks for the capture size and rate."""

    def open_capture() -> Any:
        cap = cv2.VideoCapture(*args)
        if not cap.isOpened():
            return cap
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, width), (cv2.CAP_PROP_FRAME_HEIGHT, height)):
            if value:
                cap.set(prop, value)
        if fps:
            cap.set(cv2.CAP_PROP_FPS, fps)
        if isinstance(args[0], int):
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep latency low: the newest frame, not a queue of old ones
        logger.info(
            "%s: opened, %dx%d at %.1f fps",
            description,
            int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            cap.get(cv2.CAP_PROP_FPS),
        )
        return cap

    return open_capture
