"""FrameSource: the interface every frame source implements (an iterator of frames that must be closed).

:class:`FrameSource` numbers the frames (``frame_id`` from 0), stamps their capture
``timestamp`` (``time.time()``), paces them to ``fps``, stops after ``max_frames`` and makes
:meth:`~FrameSource.close` safe from any thread. A source subclasses it and implements
``_capture`` (the next image and its colour, ``None`` at the end) and ``_release``.
An image that is not a usable frame (wrong shape or dtype, empty) is skipped, never fatal:
:meth:`~FrameSource.skip` logs it and counts it in ``frames_skipped`` (sources call it too for
files and frames they cannot decode), so every loss is visible.
:func:`edge_runtime.frames.sources.open_source` opens the sources of the ``SOURCE`` strings.

Example (a source of ten black frames)::

    class BlackSource(FrameSource):
        def _capture(self) -> tuple[np.ndarray, str] | None:
            return np.zeros((480, 640, 3), np.uint8), "RGB"

    with BlackSource("black", fps=5, max_frames=10) as source:
        for frame in source:
            print(frame.frame_id, frame.timestamp)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from types import TracebackType

import numpy as np

from edge_runtime.frames.frame import Frame, InvalidFrameError

logger = logging.getLogger(__name__)


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
        #: Files or frames skipped because they could not be read or were not usable images.
        self.frames_skipped = 0
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

    def skip(self, what: str, reason: object, count: int = 1) -> None:
        """Count ``count`` skipped files or frames and log a warning naming them and why."""
        self.frames_skipped += count
        logger.warning("%s: skipping %s: %s (%d skipped so far)", self.description, what, reason, self.frames_skipped)

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
            while True:
                captured = None if self._closed.is_set() else self._capture()
                timestamp = time.time()
                if captured is None or self._closed.is_set():
                    self._closed.set()
                    self._release()
                    raise StopIteration
                image, color = captured
                try:
                    frame = Frame(image, color, self._next_id, timestamp, self.description)
                except InvalidFrameError as exc:  # a corrupt frame is one lost frame, not the end of the source
                    self.skip(f"the frame after frame {self._next_id - 1}", exc)
                    continue
                break
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


def color_of(image: np.ndarray, three: str) -> str:
    """The colour of a captured ``image`` by its channels: ``GRAY``, ``three`` (``"BGR"`` or ``"RGB"``),
    ``three + "A"``, or ``"?"`` for another channel count (which :class:`Frame` refuses)."""
    ndim = getattr(image, "ndim", 0)
    if ndim not in (2, 3):
        return "?"
    channels = 1 if ndim == 2 else image.shape[2]
    return {1: "GRAY", 3: three, 4: three + "A"}.get(channels, "?")
