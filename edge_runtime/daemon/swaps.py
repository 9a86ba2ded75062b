"""The daemon's side of over-the-air updates: which bundle it runs (an A/B update slot or the
configured factory bundle), updates and rollbacks requested while it runs, and engines handed to
the inference thread to be swapped in between two frames.

:class:`UpdateSlotsMixin` holds these methods of :class:`~edge_runtime.daemon.pipeline.Daemon` (kept apart
so the daemon's module stays about frames and results); the slots themselves, staging and
verification are :mod:`edge_runtime.trust.updates`.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from edge_runtime.bundle.reader import read_manifest
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.trust.updates import Slots, UpdateOutcome, install_update

if TYPE_CHECKING:
    from edge_runtime.config import RuntimeConfig
    from edge_runtime.delivery.reporting import Reporter
    from edge_runtime.inference.engine import Engine

logger = logging.getLogger(__name__)

#: Frames a freshly started bundle processes before its start counts as good (crash-on-start rollback).
BOOT_OK_FRAMES = 5
#: Frames a hot-swapped engine runs while the previous one is kept open to swap back to.
PROBATION_FRAMES = 3
#: Seconds between checks of the update slots' state.json (an update installed by the CLI).
STATE_POLL_S = 1.0


class _Swap:
    """An engine handed from an update request to the inference thread (swapped between frames)."""

    def __init__(
        self, engine: Engine, reporter: Reporter, key: tuple[str | None, str], rollback_on_failure: bool
    ) -> None:
        self.engine = engine
        self.reporter = reporter
        self.key = key
        self.rollback_on_failure = rollback_on_failure
        self.installed = False
        self.error: str | None = None
        self.done = threading.Event()


class UpdateSlotsMixin:
    """Update slots, hot swaps and rollbacks of a :class:`~edge_runtime.daemon.pipeline.Daemon`."""

    config: RuntimeConfig
    slots: Slots
    _running_slot: str | None
    _running_key: tuple[str | None, str]
    _bundle_override: Path | None
    _build_lock: threading.Lock
    _update_lock: threading.Lock
    _swap_lock: threading.Lock
    _pending_swap: _Swap | None
    _probation_engine: Engine | None
    _running: bool
    _state_mtime: float

    def build_engine(self) -> Engine:  # the daemon's
        raise NotImplementedError

    def build_reporter(self, engine: Engine) -> Reporter:  # the daemon's
        raise NotImplementedError

    def _bundle_path(self) -> Path:
        """The bundle to build: one being verified, else the active update slot, else the
        configured (factory) bundle."""
        if self._bundle_override is not None:
            return self._bundle_override
        if self._running_slot is not None:
            return self.slots.slot_path(self._running_slot)
        return self.config.bundle

    def _existing_slot(self, slot: str | None) -> str | None:
        if slot is not None and not (self.slots.slot_path(slot) / "manifest.json").is_file():
            logger.warning("update slot %s is active but empty: running the configured bundle", slot)
            return None
        return slot

    def _slot_key(self, slot: str | None) -> tuple[str | None, str]:
        """What identifies the bundle a slot holds (a slot is reused by later updates)."""
        return slot, json.dumps(self.slots.installed_info(slot), sort_keys=True)

    def build_engine_at(self, path: Path) -> Engine:
        """:meth:`build_engine` for the bundle at ``path`` (an update being verified)."""
        with self._build_lock:
            self._bundle_override = path
            try:
                return self.build_engine()
            finally:
                self._bundle_override = None

    def _boot(self) -> None:
        """Count this start against the active slot (rolling back after too many failed
        starts) and say which bundle runs."""
        config = self.config
        slot = self._existing_slot(self.slots.begin_boot(config.update_max_boot_attempts, factory=config.bundle))
        self._running_slot, self._running_key = slot, self._slot_key(slot)
        self._state_mtime = self.slots.mtime()
        if slot is not None:
            info = self.slots.installed_info(slot)
            logger.info(
                "running bundle %s v%s from update slot %s (installed %s); the configured bundle %s is the "
                "factory fallback; `edge-runtime update --reset` returns to it",
                info.get("name"), info.get("version"), slot, info.get("installed"), self.config.bundle,
            )  # fmt: skip

    def request_update(self, source: str, timeout: float = 60.0) -> UpdateOutcome:
        """Install ``source`` (a bundle directory, a .tar.gz of one or an http(s) URL; a head-only
        package is completed from the running bundle) and swap to it between two frames.

        Thread-safe, for any thread (an MQTT command handler): stages, verifies (signature when
        ``trusted_keys`` is configured, hashes, self-test) and builds the engine in the calling
        thread; the inference thread swaps engines between frames and keeps the old one until
        the new one ran :data:`PROBATION_FRAMES` frames; if it fails on one, the frame is run
        again on the old engine and the slots roll back. Waits up to ``timeout`` seconds for
        that; never raises for a refused update (``ok`` is False and ``reason`` says why).
        """
        with self._update_lock:
            outcome, engine = install_update(
                self.slots,
                source,
                build_engine=self.build_engine_at,
                trusted_keys=self.config.trusted_keys,
                base=self._bundle_path(),
                max_download_mb=self.config.update_max_download_mb,
                keep_engine=True,
            )
            if engine is None:
                return outcome
            return self._hand_over(engine, outcome, self._slot_key(outcome.slot), True, timeout)

    def request_rollback(self, reason: str = "rollback requested", timeout: float = 60.0) -> UpdateOutcome:
        """Make the previous bundle active again (the factory one when none) and swap to it."""
        with self._update_lock:
            try:
                slot = self.slots.rollback(reason)
                outcome = self._outcome_for(slot, "rollback", f"rolled back: {reason}")
                engine = self.build_engine_at(self.slots.slot_path(slot) if slot else self.config.bundle)
            except EdgeRuntimeError as exc:
                return UpdateOutcome(ok=False, reason=str(exc), source="rollback")
            return self._hand_over(engine, outcome, self._slot_key(slot), False, timeout)

    def _outcome_for(self, slot: str | None, source: str, reason: str) -> UpdateOutcome:
        manifest = read_manifest(self.slots.slot_path(slot) if slot else self.config.bundle)
        return UpdateOutcome(
            ok=True, reason=reason, source=source, name=manifest.name, version=manifest.version, slot=slot
        )

    def _hand_over(
        self, engine: Engine, outcome: UpdateOutcome, key: tuple[str | None, str], rollback: bool, timeout: float
    ) -> UpdateOutcome:
        """Give a built engine to the inference thread and wait until it proved itself."""
        try:
            swap = _Swap(engine, self.build_reporter(engine), key, rollback)
        except BaseException:
            engine.close()
            raise
        with self._swap_lock:
            if not self._running:
                engine.close()
                self._running_slot, self._running_key = key[0], key
                return replace(outcome, reason=outcome.reason + "; it runs from the next start")
            if self._pending_swap is not None:  # superseded before the inference thread took it
                self._pending_swap.engine.close()
                self._pending_swap.error = "superseded by a newer update"
                self._pending_swap.done.set()
            self._pending_swap = swap
            self._running_slot, self._running_key = key[0], key
        if not swap.done.wait(timeout):
            return replace(outcome, reason=outcome.reason + "; the swap waits for the next frames")
        if swap.error is not None:
            return replace(outcome, ok=False, reason=swap.error)
        return replace(outcome, reason=outcome.reason + "; now processing frames")

    def _follow_state(self) -> None:
        """Swap to the slot ``state.json`` names when another process (``edge-runtime update``)
        changed it."""
        if not self._update_lock.acquire(blocking=False):
            return  # this process is changing it: check again on the next poll
        handed_over = False
        try:
            mtime = self.slots.mtime()
            if mtime == self._state_mtime:
                return
            self._state_mtime = mtime
            slot = self._existing_slot(self.slots.active_slot())
            key = self._slot_key(slot)
            if key == self._running_key:
                return
            logger.info(
                "update slots changed by another process: switching to %s",
                f"slot {slot}" if slot else "the factory bundle",
            )
            outcome = self._outcome_for(slot, "state.json", "switched")
            engine = self.build_engine_at(self.slots.slot_path(slot) if slot else self.config.bundle)

            def hand_over() -> None:
                try:
                    result = self._hand_over(engine, outcome, key, slot is not None, 120.0)
                    logger.info("switch: %s", result.reason)
                except EdgeRuntimeError as exc:
                    logger.error("switch failed: %s", exc)
                finally:
                    self._update_lock.release()

            threading.Thread(target=hand_over, name="update-switch", daemon=True).start()
            handed_over = True  # the thread releases the lock
        except EdgeRuntimeError as exc:
            logger.error("cannot switch to the newly installed bundle: %s", exc)
        finally:
            if not handed_over:
                self._update_lock.release()

    def _take_swap(self) -> _Swap | None:
        with self._swap_lock:
            swap, self._pending_swap = self._pending_swap, None
            return swap

    def _checked_engine(self) -> Engine:
        """The engine of the bundle to run, after its golden self-test: an update slot that fails
        it is rolled back (to the previous slot, then the factory bundle); a factory bundle that
        fails it is an error (a :class:`~edge_runtime.trust.selftest.SelfTestError` naming the head)."""
        from edge_runtime.trust.selftest import SelfTestError, check_selftest

        while True:
            engine = self.build_engine()
            try:
                report = check_selftest(engine)
            except SelfTestError as exc:
                engine.close()
                if self._running_slot is None:
                    raise
                reason = f"slot {self._running_slot} failed its self-test at start: {exc}"
                logger.error("%s; rolling back", reason)
                slot = self._existing_slot(self.slots.rollback(reason))
                self._running_slot, self._running_key = slot, self._slot_key(slot)
                self._state_mtime = self.slots.mtime()
                continue
            if report.skipped:
                logger.info("self-test skipped: %s", report.skipped)
            else:
                logger.info("self-test passed: %s", "; ".join(report.summary().splitlines()))
            return engine

    def _current_key(self, swap: _Swap | None, old_key: tuple[str | None, str]) -> tuple[str | None, str]:
        return swap.key if swap is not None else old_key

    def _end_probation(self, swap: _Swap, old_engine: Engine | None) -> None:
        """The swapped-in engine passed: close the one it replaced."""
        if old_engine is not None and old_engine is not swap.engine:
            old_engine.close()
            self._probation_engine = None
        swap.done.set()
