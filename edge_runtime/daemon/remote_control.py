"""The daemon's side of the signed command topic (docs/protocol.md §9).

:class:`DaemonController` implements :class:`~edge_runtime.trust.commands.Controller` on a running
:class:`~edge_runtime.daemon.pipeline.Daemon`: head switches and schedules act on the running engine and
are remembered, so that an engine swapped in by an update gets them too; ``update`` and
``rollback`` go through the daemon's A/B slots (:meth:`Daemon.request_update`). Runtime changes
are not persisted: a restart starts from the configuration again.

:func:`attach_commands` wires it to the MQTT publisher when ``command_keys`` is configured.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edge_runtime.errors import ConfigError, EdgeRuntimeError, close_matches
from edge_runtime.trust.command_verify import CommandVerifier
from edge_runtime.trust.commands import CommandProcessor

if TYPE_CHECKING:
    from edge_runtime.config import RuntimeConfig
    from edge_runtime.delivery.mqtt.publisher import MqttPublisher
    from edge_runtime.inference.engine import Engine
    from edge_runtime.trust.update_install import UpdateOutcome
    from edge_runtime.trust.updates import Slots

logger = logging.getLogger(__name__)


class RunningDaemon(Protocol):
    """What remote control needs of a running daemon (:class:`~edge_runtime.daemon.pipeline.Daemon`
    is one): its engine and counters, its update slots, updates and rollbacks."""

    config: RuntimeConfig

    @property
    def current_engine(self) -> Engine | None: ...

    @property
    def slots(self) -> Slots: ...

    @property
    def state_path(self) -> Path: ...

    def current_status(self) -> dict[str, Any]: ...

    def request_update(self, source: str, timeout: float = 60.0) -> UpdateOutcome: ...

    def request_rollback(self, reason: str = "rollback requested", timeout: float = 60.0) -> UpdateOutcome: ...

    def request_tune(self, timeout: float) -> dict[str, Any]: ...


class DaemonController:
    """What each command does to the daemon. Thread-safe: commands arrive on paho's network
    thread (head changes) or the command worker (update, rollback)."""

    def __init__(self, daemon: RunningDaemon) -> None:
        self.daemon = daemon
        self._lock = threading.Lock()
        #: head -> {"enabled": bool, "every_n_frames": int}: what commands changed, reapplied on a swap
        self.overrides: dict[str, dict[str, Any]] = {}

    def _engine(self, name: str) -> Engine:
        engine = self.daemon.current_engine
        if engine is None:
            raise EdgeRuntimeError("the daemon is not running an engine yet")
        if name not in engine.head_names:
            heads = engine.head_names
            raise ConfigError(
                f"no head {name!r} in the running bundle{close_matches(name, heads)}; heads: {', '.join(heads)}"
            )
        return engine

    def apply(self, engine: Engine) -> None:
        """Reapply the commanded head changes to ``engine`` (a newly swapped-in bundle); heads it
        does not have are skipped with a log line."""
        with self._lock:
            overrides = {k: dict(v) for k, v in self.overrides.items()}
        for name, change in overrides.items():
            if name not in engine.head_names:
                logger.info("remote head setting for %r dropped: the new bundle has no such head", name)
                continue
            if "enabled" in change:
                engine.set_head_enabled(name, change["enabled"])
            if "every_n_frames" in change:
                engine.scheduler.set_every_n_frames(name, change["every_n_frames"])

    def _set(self, name: str, **change: Any) -> dict[str, Any]:
        with self._lock:
            engine = self._engine(name)
            if "enabled" in change:
                engine.set_head_enabled(name, change["enabled"])
            if "every_n_frames" in change:
                engine.scheduler.set_every_n_frames(name, change["every_n_frames"])
            self.overrides.setdefault(name, {}).update(change)
        logger.info("remote command: head %s %s", name, change)
        return {"head": name, **change}

    def enable_head(self, name: str) -> dict[str, Any]:
        return self._set(name, enabled=True)

    def disable_head(self, name: str) -> dict[str, Any]:
        return self._set(name, enabled=False)

    def set_schedule(self, name: str, *, every_n_frames: int) -> dict[str, Any]:
        return self._set(name, every_n_frames=every_n_frames)

    def status(self) -> dict[str, Any]:
        daemon = self.daemon
        engine = daemon.current_engine
        fields: dict[str, Any] = dict(daemon.current_status())
        if engine is not None:
            fields["bundle"] = {"name": engine.manifest.name, "version": engine.manifest.version}
            scheduler = engine.scheduler
            fields["heads"] = {
                name: {"enabled": scheduler.is_enabled(name), "every_n_frames": scheduler.every_n_frames(name)}
                for name in engine.head_names
            }
        fields["update_slots"] = daemon.slots.describe()
        return fields

    def update(self, source: str) -> dict[str, Any]:
        outcome = self.daemon.request_update(source)
        if not outcome.ok:
            raise EdgeRuntimeError(f"update refused: {outcome.reason}")
        return asdict(outcome)

    def tune(self) -> dict[str, Any]:
        # the tune's timing, plus loading and self-testing its candidates and waiting for a frame
        return self.daemon.request_tune(timeout=self.daemon.config.tune_seconds * 3 + 60)

    def rollback(self) -> dict[str, Any]:
        outcome = self.daemon.request_rollback("rollback requested by a remote command")
        if not outcome.ok:
            raise EdgeRuntimeError(f"rollback failed: {outcome.reason}")
        return asdict(outcome)


def attach_commands(
    daemon: RunningDaemon, controller: DaemonController, publisher: MqttPublisher
) -> CommandProcessor | None:
    """With ``command_keys`` configured: verify, run and answer commands arriving on the
    publisher's command topic (call before ``publisher.start()``); otherwise None."""
    from edge_runtime.daemon.validation import command_keys

    config = daemon.config
    if not config.command_keys:
        return None
    keys = command_keys(config)  # the check `run --validate` makes
    verifier = CommandVerifier(
        keys,
        config.device_id,
        max_age_s=config.command_max_age_s,
        nonce_store=daemon.state_path / "command-nonces.sqlite",
    )
    processor = CommandProcessor(
        verifier,
        controller,
        publisher.publish_reply,
        on_rejection=lambda _reply: publisher.publish_status(daemon.current_status()),
    )
    publisher.on_command = processor.handle
    publisher.status_extra = processor.status_fields
    logger.info(
        "remote commands on %s from %d operator key(s): %s",
        publisher.command_topic, len(keys), ", ".join(k.key_id for k in keys),
    )  # fmt: skip
    return processor
