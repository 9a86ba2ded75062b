"""Hand-offs between the daemon's threads: the one-frame slot between capture and inference,
and sd_notify messages to systemd.

Example::

    slot = LatestFrameSlot(drop_old=True)   # a live source: the newest frame wins
    slot.put(frame, stop_event)              # capture thread
    frame = slot.get()                       # inference thread (None: closed)
"""

from __future__ import annotations

import logging
import os
import socket
import threading

from edge_runtime.frames.frame import Frame

logger = logging.getLogger(__name__)


class LatestFrameSlot:
    """A one-frame mailbox. ``put`` replaces an unread frame (counted as dropped) when
    ``drop_old``; otherwise it waits until the frame was taken."""

    def __init__(self, drop_old: bool) -> None:
        self.drop_old = drop_old
        self.dropped = 0
        self._frame: Frame | None = None
        self._closed = False
        self._cond = threading.Condition()

    def put(self, frame: Frame, stop: threading.Event) -> None:
        with self._cond:
            if self._frame is not None and not self.drop_old:
                while self._frame is not None and not stop.is_set():
                    self._cond.wait(0.1)
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self._cond.notify_all()

    def get(self) -> Frame | None:
        """The next frame, or None once closed and empty."""
        with self._cond:
            while self._frame is None and not self._closed:
                self._cond.wait(0.1)
            frame, self._frame = self._frame, None
            self._cond.notify_all()
            return frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def notify_systemd(message: str) -> bool:
    """Send an sd_notify message (``READY=1``, ``WATCHDOG=1``…) when run under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        logger.debug("sd_notify failed: %s", exc)
        return False
    return True


__all__ = ["LatestFrameSlot", "notify_systemd"]
