"""Hand-offs between the daemon's threads: the one-frame slot between capture and inference,
the stop signals, and sd_notify messages to systemd.

Example::

    slot = LatestFrameSlot(drop_old=True)   # a live source: the newest frame wins
    slot.put(frame, stop_event)              # capture thread
    frame, prepared = slot.get()             # inference thread (None: closed)
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from typing import TYPE_CHECKING, Any

from edge_runtime.frames.frame import Frame

if TYPE_CHECKING:
    from edge_runtime.inference.engine import PreparedInput

logger = logging.getLogger(__name__)


class LatestFrameSlot:
    """A one-frame mailbox. ``put`` replaces an unread frame (counted as dropped) when
    ``drop_old``; otherwise it waits until the frame was taken."""

    def __init__(self, drop_old: bool) -> None:
        self.drop_old = drop_old
        self.dropped = 0
        self._frame: Frame | None = None
        self._prepared: PreparedInput | None = None
        self._closed = False
        self._cond = threading.Condition()

    def put(self, frame: Frame, stop: threading.Event, prepared: PreparedInput | None = None) -> None:
        """Hand over ``frame`` (and its input ``prepared`` ahead, if any)."""
        with self._cond:
            if self._frame is not None and not self.drop_old:
                while self._frame is not None and not stop.is_set():
                    self._cond.wait(0.1)
                if self._frame is not None:  # stopping: the unread frame stays, this one is not taken
                    return
            if self._frame is not None:
                self.dropped += 1
            self._frame, self._prepared = frame, prepared
            self._cond.notify_all()

    def get(self) -> tuple[Frame, PreparedInput | None] | None:
        """The next frame and what was prepared for it, or None once closed and empty."""
        with self._cond:
            while self._frame is None and not self._closed:
                self._cond.wait(0.1)
            frame, prepared, self._frame, self._prepared = self._frame, self._prepared, None, None
            self._cond.notify_all()
            return None if frame is None else (frame, prepared)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def install_stop_handlers(stop: threading.Event) -> dict[int, Any]:
    """SIGINT and SIGTERM set ``stop`` (from the main thread only: elsewhere nothing is
    installed); returns the handlers they replaced, to put back."""
    previous: dict[int, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        return previous

    def on_signal(signum: int, _frame: object) -> None:
        logger.info("%s: stopping after the frames in flight", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.getsignal(signum)
        signal.signal(signum, on_signal)
    return previous


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


__all__ = ["LatestFrameSlot", "install_stop_handlers", "notify_systemd"]
