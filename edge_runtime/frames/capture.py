"""Sources read through an OpenCV ``VideoCapture``: video files, and live cameras and streams with reconnect backoff.

``SOURCE`` ``path/to/video.mp4`` → :class:`VideoFileSource` (ends with the file unless
``loop``); ``camera:N``, ``rtsp://…``, ``http(s)://…`` and ``gst:PIPELINE`` → :class:`StreamSource`,
which never ends on its own: a failed open or read is retried with exponential backoff
(:class:`ReconnectOptions`, 0.5 s doubling to 10 s), each retry logged, and ``close()`` stops
the retrying at once. Frames are BGR. Needs OpenCV (``pip install 'edge-runtime[camera]'``);
``gst:`` needs an OpenCV built with GStreamer (:func:`check_gstreamer`). A corrupt frame in a
video file (a read that fails or raises, followed by good frames) is skipped and counted in
``frames_skipped``; so is a failed read of a camera or stream (which then reconnects). A frame of
the wrong shape or type is skipped and counted by :class:`FrameSource` itself.

Example::

    cv2 = require_cv2("camera:0")
    opener = capture_opener(cv2, (0,), "camera:0", fps=10, width=640, height=480)
    with StreamSource("camera:0", opener, reconnect=ReconnectOptions(max_delay_s=5.0)) as source:
        for frame in source:
            ...
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import BackendUnavailableError, ConfigError
from edge_runtime.frames.frame import require_cv2
from edge_runtime.frames.source import FrameSource, color_of

logger = logging.getLogger(__name__)

#: Failed reads in a row after which a video file is taken to have ended (a corrupt stretch of
#: frames is skipped and counted; a longer one, or the end of the file, ends the video).
MAX_BAD_VIDEO_READS = 250


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

    def _read(self) -> tuple[np.ndarray, str] | None:
        """The next good frame; a run of failed reads followed by a good frame is counted as
        skipped frames, one of :data:`MAX_BAD_VIDEO_READS` (or the end of the file) ends the pass."""
        failed = 0
        while failed < MAX_BAD_VIDEO_READS and not self._closed.is_set():
            try:
                ok, image = self._cap.read()
            except Exception as exc:  # cv2.error on a corrupt packet: one bad frame
                logger.debug("%s: read raised %s", self.description, exc)
                ok, image = False, None
            if ok and image is not None and getattr(image, "size", False):
                if failed:
                    self.skip(f"{failed} frame(s) after frame {self._read_this_pass}", "unreadable video data", failed)
                self._read_this_pass += 1
                return image, color_of(image, "BGR")
            failed += 1
        return None

    def _capture(self) -> tuple[np.ndarray, str] | None:
        for _ in range(2):  # a second try after rewinding, when looping
            if self._cap is None:
                return None
            captured = self._read()
            if captured is not None:
                return captured
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
            if ok and image is not None and getattr(image, "size", False):
                self._delay, self._failures = self.reconnect.initial_delay_s, 0
                if self._period:
                    self._advance_due()
                return image, color_of(image, "BGR")
            self.frames_skipped += 1  # a lost frame: counted; the retry below logs it
            self._drop_capture()
            self._retry("read failed (stream lost?)")
        return None

    def _release(self) -> None:
        self._drop_capture()


def check_gstreamer(cv2: Any) -> None:
    """Raise :class:`BackendUnavailableError` unless ``cv2`` was built with GStreamer (for ``gst:`` sources)."""
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


def capture_opener(
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
