"""Which bundle the daemon runs, and engines swapped in between two frames.

:class:`HotSwaps` owns the daemon's side of over-the-air updates: the running A/B slot (or the
configured factory bundle), crash-on-start counting, the self-test at start, updates and
rollbacks requested while the daemon runs (an MQTT command, ``edge-runtime update`` in another
process), the engine waiting to be swapped in, and its probation. The inference loop asks it
for the engine of every frame::

    engine = swaps.before_frame(engine)          # a pending swap happens here, between frames
    result, engine = swaps.run_frame(engine, frame)   # a failing new engine swaps back

The slots themselves, staging and verification are :mod:`edge_runtime.trust.updates`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from edge_runtime.bundle.reader import read_manifest
from edge_runtime.daemon.retune import Retuner
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.trust.update_install import UpdateOutcome, install_update
from edge_runtime.trust.updates import Slots

if TYPE_CHECKING:
    from edge_runtime.config import RuntimeConfig
    from edge_runtime.delivery.reporting import Reporter
    from edge_runtime.frames.frame import Frame
    from edge_runtime.inference.engine import Engine, PreparedInput
    from edge_runtime.inference.results import FrameResult

logger = logging.getLogger(__name__)

#: Frames a freshly started bundle processes before its start counts as good (crash-on-start rollback).
BOOT_OK_FRAMES = 5
#: Frames a hot-swapped engine runs while the previous one is kept open to swap back to.
PROBATION_FRAMES = 3
#: Seconds between checks of the update slots' state.json (an update installed by the CLI).
STATE_POLL_S = 1.0

SlotKey = tuple[str | None, str]


class _Swap:
    """An engine handed from an update request to the inference thread (swapped between frames)."""

    def __init__(self, engine: Engine, reporter: Reporter, key: SlotKey, rollback_on_failure: bool) -> None:
        self.engine = engine
        self.reporter = reporter
        self.key = key
        self.rollback_on_failure = rollback_on_failure
        self.installed = False
        self.error: str | None = None
        self.done = threading.Event()


class HotSwaps:
    """The bundle a daemon runs and the engines it swaps to. Thread-safe: requests come from any
    thread; :meth:`before_frame` / :meth:`run_frame` / :meth:`end_frames` from the inference thread.

    ``build(path)`` builds an engine for a bundle directory (the daemon's backend, precision,
    trusted keys, head overrides and commanded head settings); ``build_reporter(engine)`` the
    publishing policy of its heads; ``apply_commands(engine)`` reapplies head settings commanded
    while a swapped-in engine was being built; ``emit(reporter)`` (set by :meth:`start`) puts a new policy
    into the result stream in order with the results.
    """

    def __init__(
        self,
        config: RuntimeConfig,
        slots: Slots,
        build: Callable[[Path], Engine],
        build_reporter: Callable[[Engine], Reporter],
        apply_commands: Callable[[Engine], None] = lambda _engine: None,
    ) -> None:
        self.config = config
        self.slots = slots
        self._build = build
        self._build_reporter = build_reporter
        self._apply_commands = apply_commands
        self.running_slot: str | None = self._existing_slot(slots.active_slot())
        self.running_key: SlotKey = self._slot_key(self.running_slot)
        self._update_lock = threading.Lock()
        self._swap_lock = threading.Lock()
        self._pending: _Swap | None = None
        self._running = False
        self._state_mtime = 0.0
        self._emit: Callable[[Reporter], None] = lambda _reporter: None
        #: The engine processing frames now, and the publishing policy of its heads.
        self.engine: Engine | None = None
        self.reporter: Reporter | None = None
        # the inference thread's: the swap on probation and what it replaced
        self._swap: _Swap | None = None
        self._probation = 0
        self._old_engine: Engine | None = None
        self._old_reporter: Reporter | None = None
        self._old_key: SlotKey = self.running_key
        self._current_key: SlotKey = self.running_key  # the engine processing frames
        self._frames = 0
        self.boot_reported = False
        #: Tunes asked for while running (``tune_on_start``, the remote ``tune``): run between frames.
        self.retuner = Retuner(config, self.bundle_path)

    # -- which bundle ------------------------------------------------------------------------
    def bundle_path(self) -> Path:
        """The bundle running now: the running update slot's, else the configured one."""
        return self.bundle_of(self.running_slot)

    def bundle_of(self, slot: str | None) -> Path:
        """The bundle of an update slot (None: the configured, factory bundle)."""
        return self.config.bundle if slot is None else self.slots.slot_path(slot)

    def _existing_slot(self, slot: str | None) -> str | None:
        if slot is not None and not (self.slots.slot_path(slot) / "manifest.json").is_file():
            logger.warning("update slot %s is active but empty: running the configured bundle", slot)
            return None
        return slot

    def _slot_key(self, slot: str | None) -> SlotKey:
        """What identifies the bundle a slot holds (a slot is reused by later updates)."""
        return slot, json.dumps(self.slots.installed_info(slot), sort_keys=True)

    def _set_running(self, slot: str | None, key: SlotKey | None = None) -> None:
        self.running_slot, self.running_key = slot, key if key is not None else self._slot_key(slot)

    # -- start -------------------------------------------------------------------------------
    def boot(self) -> None:
        """Count this start against the active slot (rolling back after too many failed
        starts) and say which bundle runs."""
        config = self.config
        slot = self._existing_slot(self.slots.begin_boot(config.update_max_boot_attempts, factory=config.bundle))
        self._set_running(slot)
        self._state_mtime = self.slots.mtime()
        if slot is not None:
            info = self.slots.installed_info(slot)
            logger.info(
                "running bundle %s v%s from update slot %s (installed %s); the configured bundle %s is the "
                "factory fallback; `edge-runtime update --reset` returns to it",
                info.get("name"), info.get("version"), slot, info.get("installed"), self.config.bundle,
            )  # fmt: skip

    def checked_engine(self) -> Engine:
        """The engine of the bundle to run, after its golden self-test: an update slot that fails
        it is rolled back (to the previous slot, then the factory bundle); a factory bundle that
        fails it is an error (a :class:`~edge_runtime.trust.selftest.SelfTestError` naming the head)."""
        from edge_runtime.trust.selftest import SelfTestError, check_selftest

        while True:
            engine = self._build(self.bundle_path())
            try:
                report = check_selftest(engine)
            except SelfTestError as exc:
                engine.close()
                if self.running_slot is None:
                    raise
                reason = f"slot {self.running_slot} failed its self-test at start: {exc}"
                logger.error("%s; rolling back", reason)
                self._set_running(self._existing_slot(self.slots.rollback(reason)))
                self._state_mtime = self.slots.mtime()
                continue
            if report.skipped:
                logger.info("self-test skipped: %s", report.skipped)
            else:
                logger.info("self-test passed: %s", "; ".join(report.summary().splitlines()))
            return engine

    def start(self, engine: Engine, reporter: Reporter, emit: Callable[[Reporter], None]) -> None:
        """Frames are about to flow through ``engine``: from now on requests swap engines."""
        with self._swap_lock:
            self.engine, self.reporter, self._emit = engine, reporter, emit
            self._old_engine, self._old_reporter = engine, reporter
            self._old_key = self._current_key = self.running_key
            self._running = True
        self._tune_if_untuned(engine, "tune_on_start")

    def _tune_if_untuned(self, engine: Engine, reason: str) -> None:
        """With ``tune_on_start``: ask for a tune when ``engine`` runs untuned (at start, and after
        an update brought a bundle this device has not tuned)."""
        if not self.config.tune_on_start or any(run.reason.startswith("tuned ") for run in engine.graphs):
            return
        refused = self.retuner.refusal()
        if refused:
            logger.warning("tune_on_start: not tuning: %s", refused)
            return
        try:
            self.retuner.request(reason, wait=None)
        except EdgeRuntimeError as exc:  # one is already waiting: it tunes the bundle running then
            logger.info("tune_on_start: %s", exc)

    def close(self, first: Engine) -> None:
        """Close the engines of this run: the first, the current, one on probation, one never
        swapped in (its requester is told it runs from the next start)."""
        self.retuner.cancel("the daemon stopped before the tune ran")
        with self._swap_lock:
            self._running = False
            pending, self._pending = self._pending, None
        if pending is not None:
            pending.engine.close()
            pending.error = "the daemon stopped before the swap; the update runs from the next start"
            pending.done.set()
        for engine in {id(e): e for e in (first, self.engine, self._old_engine) if e is not None}.values():
            engine.close()

    # -- requests (any thread) ---------------------------------------------------------------
    def request_update(self, source: str, timeout: float = 60.0) -> UpdateOutcome:
        """Install ``source`` (a bundle directory, a .tar.gz of one or an http(s) URL; a head-only
        package is completed from the running bundle) and swap to it between two frames.

        Stages, verifies (signature when ``trusted_keys`` is configured, hashes, self-test) and
        builds the engine in the calling thread; the inference thread swaps engines between
        frames and keeps the old one until the new one ran :data:`PROBATION_FRAMES` frames; if it
        fails on one, the frame is run again on the old engine and the slots roll back. Waits up
        to ``timeout`` seconds for that; never raises for a refused update (``ok`` is False and
        ``reason`` says why).
        """
        with self._update_lock:
            outcome, engine = install_update(
                self.slots,
                source,
                build_engine=self._build,
                trusted_keys=self.config.trusted_keys,
                base=self.bundle_path(),
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
                engine = self._build(self.bundle_of(slot))
            except EdgeRuntimeError as exc:
                return UpdateOutcome(ok=False, reason=str(exc), source="rollback")
            return self._hand_over(engine, outcome, self._slot_key(slot), False, timeout)

    def follow_state(self) -> None:
        """Swap to the slot ``state.json`` names when another process (``edge-runtime update``)
        changed it (the daemon's supervisor calls this every :data:`STATE_POLL_S`)."""
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
            if key == self.running_key:
                return
            logger.info(
                "update slots changed by another process: switching to %s",
                f"slot {slot}" if slot else "the factory bundle",
            )
            outcome = self._outcome_for(slot, "state.json", "switched")
            engine = self._build(self.bundle_of(slot))

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

    def _outcome_for(self, slot: str | None, source: str, reason: str) -> UpdateOutcome:
        manifest = read_manifest(self.bundle_of(slot))
        return UpdateOutcome(
            ok=True, reason=reason, source=source, name=manifest.name, version=manifest.version, slot=slot
        )

    def _hand_over(
        self, engine: Engine, outcome: UpdateOutcome, key: SlotKey, rollback: bool, timeout: float
    ) -> UpdateOutcome:
        """Give a built engine to the inference thread and wait until it proved itself."""
        try:
            swap = _Swap(engine, self._build_reporter(engine), key, rollback)
        except BaseException:
            engine.close()
            raise
        with self._swap_lock:
            if not self._running:
                engine.close()
                self._set_running(key[0], key)
                return replace(outcome, reason=outcome.reason + "; it runs from the next start")
            if self._pending is not None:  # superseded before the inference thread took it
                self._pending.engine.close()
                self._pending.error = "superseded by a newer update"
                self._pending.done.set()
            self._pending = swap
            self._set_running(key[0], key)
        if not swap.done.wait(timeout):
            return replace(outcome, reason=outcome.reason + "; the swap waits for the next frames")
        if swap.error is not None:
            return replace(outcome, ok=False, reason=swap.error)
        return replace(outcome, reason=outcome.reason + "; now processing frames")

    # -- the inference thread ----------------------------------------------------------------
    def before_frame(self, engine: Engine) -> Engine:
        """The engine for the next frame: a pending swap happens here, never mid-frame (the new
        heads' publishing policy is emitted first, so it applies from its first result). A tune
        asked for runs here first (inference pauses), and the engine of its choice is swapped in."""
        tuned = self.retuner.run_pending(lambda: self._build(self.bundle_path()))
        if tuned is not None:
            try:
                swap = _Swap(tuned, self._build_reporter(tuned), self._current_key, False)
            except BaseException:
                tuned.close()
                raise
            with self._swap_lock:
                if self._pending is None:
                    self._pending = swap
                else:  # an update is waiting: it wins, and is built with the new tuning too
                    tuned.close()
        with self._swap_lock:
            incoming, self._pending = self._pending, None
        if incoming is None:
            return engine
        if self._swap is not None:  # the previous swap is still on probation: it passed so far
            self._end_probation(self._swap)
        self._old_engine, self._old_reporter, self._old_key = engine, self.reporter, self._current_key
        self._swap, self._probation, self._current_key = incoming, PROBATION_FRAMES, incoming.key
        self._apply_commands(incoming.engine)  # a command that came while it was being built
        self.engine, self.reporter = incoming.engine, incoming.reporter
        self._emit(incoming.reporter)
        incoming.installed = True
        logger.info("swapped to %s v%s between frames", incoming.engine.manifest.name, incoming.engine.manifest.version)
        if tuned is None or incoming.engine is not tuned:
            self._tune_if_untuned(incoming.engine, "tune_on_start, new bundle")
        return incoming.engine

    def run_frame(
        self, engine: Engine, frame: Frame, prepared: PreparedInput | None = None
    ) -> tuple[FrameResult, Engine]:
        """``engine.infer(frame, prepared=...)``; when an engine on probation raises, swap back, roll
        the slots back (for an update) and run the same frame on the engine that worked."""
        try:
            result = engine.infer(frame, prepared=prepared)
        except Exception as exc:
            swap = self._swap
            if swap is None or self._probation <= 0 or self._old_engine is None:
                raise
            reason = f"the new bundle failed on frame {frame.frame_id}: {type(exc).__name__}: {exc}"
            logger.error("%s; swapping back", reason)
            engine.close()
            engine = self._old_engine
            self.engine, self.reporter, self._current_key = engine, self._old_reporter, self._old_key
            if self._old_reporter is not None:
                self._emit(self._old_reporter)
            with self._swap_lock:
                if self.running_key == swap.key:
                    self._set_running(self._old_key[0], self._old_key)
            if swap.rollback_on_failure:
                try:
                    self.slots.rollback(reason)
                except EdgeRuntimeError as rollback_error:
                    logger.error("rollback failed: %s", rollback_error)
            swap.error = reason
            swap.done.set()
            self._swap, self._probation = None, 0
            result = engine.infer(frame)
        if self._swap is not None and self._probation > 0:
            self._probation -= 1
            if self._probation == 0:
                self._end_probation(self._swap)
                self._swap = None
                self._old_engine = engine
        self._frames += 1
        if self._frames == BOOT_OK_FRAMES and not self.boot_reported:
            self.boot_reported = True
            self.slots.boot_ok()
        return result, engine

    def end_frames(self) -> None:
        """No more frames: a swap still on probation counts as passed."""
        if self._swap is not None and self._probation > 0:
            self._swap.done.set()
        self._swap = None

    def _end_probation(self, swap: _Swap) -> None:
        """The swapped-in engine passed: close the one it replaced."""
        old = self._old_engine
        if old is not None and old is not swap.engine:
            old.close()
        self._old_engine = None
        swap.done.set()


__all__ = ["BOOT_OK_FRAMES", "PROBATION_FRAMES", "STATE_POLL_S", "HotSwaps"]
