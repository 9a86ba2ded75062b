"""Tuning a running daemon: ``tune_on_start`` and the remote ``tune`` command.

A request (:meth:`Retuner.request`, any thread) is carried out by the inference thread between
two frames (:meth:`Retuner.run_pending`, called by
:meth:`~edge_runtime.daemon.swaps.HotSwaps.before_frame`): inference pauses while
:func:`edge_runtime.tuning.search.tune` measures the running bundle (``tune_seconds`` of timing,
plus loading the candidates and their self-tests; a live source's frames are dropped meanwhile and
counted in ``dropped_frames``), ``tuning.json`` is written, and the caller builds the engine the
new choice gives, which is swapped in between frames like an update. A tune only makes sense
when ``backend`` and ``precision`` are ``auto``: otherwise the request is refused with why.

Example::

    retuner = Retuner(config, swaps.bundle_path)
    outcome = retuner.request(wait=60)      # from the command worker: blocks until it ran
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_runtime.errors import ConfigError, EdgeRuntimeError
from edge_runtime.tuning.configs import AUTO

if TYPE_CHECKING:
    from edge_runtime.config import RuntimeConfig

logger = logging.getLogger(__name__)


@dataclass
class _Request:
    """One tune asked for: ``reason`` (``"tune_on_start"``, ``"remote command"``), then its outcome."""

    reason: str
    done: threading.Event = field(default_factory=threading.Event)
    outcome: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class Retuner:
    """Tunes requested from any thread, run by the inference thread between frames."""

    def __init__(self, config: RuntimeConfig, bundle_path: Callable[[], Path]) -> None:
        self.config = config
        self._bundle_path = bundle_path
        self._lock = threading.Lock()
        self._pending: _Request | None = None

    def refusal(self) -> str | None:
        """Why a tune would not be used (``backend``/``precision`` set), or None."""
        fixed = [k for k in ("backend", "precision") if getattr(self.config, k) not in (None, AUTO)]
        if fixed:
            return f"{' and '.join(fixed)} {'is' if len(fixed) == 1 else 'are'} set, so a tuning would not be used"
        return None

    def request(self, reason: str, *, wait: float | None) -> dict[str, Any]:
        """Ask for a tune between the next two frames; with ``wait``, block up to that many seconds
        for it and return its outcome (``{"tuned", "choice", "seconds", "paused_s"}``), raising
        :class:`EdgeRuntimeError` when it failed or was refused."""
        refused = self.refusal()
        if refused:
            raise ConfigError(f"tune refused: {refused}")
        request = _Request(reason)
        with self._lock:
            if self._pending is not None:
                raise EdgeRuntimeError("a tune is already waiting for the next frame")
            self._pending = request
        logger.info("tune requested (%s): it runs between the next two frames", reason)
        if wait is None:
            return {"tuned": False, "pending": True}
        if not request.done.wait(wait):
            raise EdgeRuntimeError(f"the tune did not run within {wait:.0f} s (no frames?): it runs on the next one")
        if request.error is not None:
            raise EdgeRuntimeError(f"tune failed: {request.error}")
        return request.outcome

    def cancel(self, why: str) -> None:
        """Fail a request still waiting (the daemon stops)."""
        with self._lock:
            request, self._pending = self._pending, None
        if request is not None:
            request.error = why
            request.done.set()

    def run_pending(self, build: Callable[[], Any]) -> Any | None:
        """In the inference thread, between frames: run a waiting tune (inference pauses), keep
        its choice in ``tuning.json`` and return ``build()`` (the engine of the new choice); None
        when nothing was waiting or the tune failed (logged, the engine running now stays)."""
        with self._lock:
            request, self._pending = self._pending, None
        if request is None:
            return None
        from edge_runtime.bundle.reader import load_bundle
        from edge_runtime.daemon.validation import loaded_heads
        from edge_runtime.tuning.record import TuningRecord, current_key, save_tuning
        from edge_runtime.tuning.search import TuneOptions, describe_assignment, tune

        started = time.monotonic()
        try:
            bundle = load_bundle(self._bundle_path(), verify_hashes=False)
            heads = loaded_heads(self.config, bundle.manifest)
            result = tune(bundle, TuneOptions(seconds=self.config.tune_seconds, heads=heads))
            record = TuningRecord(current_key(bundle), result.choice, result.rows, result.seconds)
            save_tuning(Path(self.config.state_dir), record)
            engine = build()
        except EdgeRuntimeError as exc:
            request.error = str(exc)
            logger.error("tune (%s) failed: %s; the running configuration stays", request.reason, exc)
            request.done.set()
            return None
        paused = time.monotonic() - started
        request.outcome = {
            "tuned": True,
            "choice": {graph: config.describe() for graph, config in result.choice.items()},
            "seconds": round(result.seconds, 3),
            "paused_s": round(paused, 3),
        }
        logger.info(
            "tuned (%s) in %.1f s, inference paused %.1f s: %s",
            request.reason, result.seconds, paused, describe_assignment(result.choice),
        )  # fmt: skip
        request.done.set()
        return engine


__all__ = ["Retuner"]
