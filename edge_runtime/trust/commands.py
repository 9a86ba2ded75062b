"""The remote commands: one registry, their argument checks, running them and replying.

Every command is one :class:`CommandSpec` row of :data:`COMMANDS`: its name, its arguments
(:class:`ArgSpec`), the handler hook that runs it on a :class:`Controller` (the daemon's
``DaemonController`` in ``edge_runtime/daemon/remote_control.py``), what its reply's ``result``
holds, and whether it runs on the worker thread. The verifier
(:mod:`edge_runtime.trust.command_verify`), :class:`CommandProcessor` and ``edge-runtime command``
(:mod:`edge_runtime.trust.command_cli`) all read that table. Adding a command is one row, the
:class:`Controller` method it calls (and its implementation in ``DaemonController``), and its
entry in ``docs/protocol.md`` §9.2.

Example (device side)::

    verifier = CommandVerifier(load_public_keys(["operator.pub"]), "cam1",
                               nonce_store=state_dir / "command-nonces.sqlite")
    processor = CommandProcessor(verifier, controller, publisher.publish_reply)
    publisher.on_command = processor.handle      # MqttPublisher, network thread

Example (the registry)::

    args = check_args("set_schedule", {"head": "box", "every_n_frames": 5})
    result = COMMANDS["set_schedule"].run(controller, args)   # controller.set_schedule("box", every_n_frames=5)
    print(COMMANDS["set_schedule"].usage())                  # set_schedule head=H every_n_frames=N
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from edge_runtime.errors import EdgeRuntimeError, close_matches
from edge_runtime.settings.heads import every_n_frames_problem

if TYPE_CHECKING:
    from edge_runtime.trust.command_verify import CommandVerifier

logger = logging.getLogger(__name__)

COMMAND_VERSION = 1
#: Why a command was refused (the ``reason`` of a reply and of :class:`CommandRejected`).
REASONS = (
    "too_large",
    "malformed",
    "unsigned",
    "bad_signature",
    "unknown_key",
    "wrong_device",
    "expired",
    "future",
    "replayed",
    "unknown_command",
    "bad_args",
    "rate_limited",
)
#: Outcomes of accepted commands that did not succeed (the ``reason`` of a reply).
FAILURES = ("busy", "failed")
MAX_STRING_ARG = 2048


class CommandRejected(EdgeRuntimeError):
    """A command was refused; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, message: str, *, nonce: str | None = None, cmd: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.nonce = nonce
        self.cmd = cmd


@dataclass(frozen=True)
class Command:
    """A verified command: ``args`` checked against :data:`COMMANDS`; ``key_id``: who signed it."""

    device: str
    cmd: str
    args: Mapping[str, Any]
    ts: float
    nonce: str
    key_id: str


class Controller(Protocol):
    """What a command does on the device (the daemon implements it). Each method returns a
    JSON-able outcome (the reply's ``result``) or raises :class:`EdgeRuntimeError`, whose
    message becomes the reply's ``error``. ``update`` / ``rollback`` run on a worker thread."""

    def enable_head(self, name: str) -> dict[str, Any]: ...

    def disable_head(self, name: str) -> dict[str, Any]: ...

    def set_schedule(self, name: str, *, every_n_frames: int) -> dict[str, Any]: ...

    def status(self) -> dict[str, Any]: ...

    def update(self, source: str) -> dict[str, Any]: ...

    def rollback(self) -> dict[str, Any]: ...

    def tune(self) -> dict[str, Any]: ...


# -- the registry -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArgSpec:
    """One argument of a command: its JSON type(s) and bounds; every argument is required.

    ``rule``: a check beyond the type, returning the problem (``"must be ..."``) or None;
    ``metavar``: how ``edge-runtime command`` shows the value (``head=H``).
    """

    kind: type | tuple[type, ...]
    minimum: float | None = None
    rule: Callable[[Any], str | None] | None = None
    metavar: str = "VALUE"


@dataclass(frozen=True)
class CommandSpec:
    """One remote command: ``name``, ``args`` (name -> :class:`ArgSpec`), the handler hook
    ``run(controller, checked_args)`` whose return value is the reply's ``result``, ``reply``
    (what that ``result`` holds, in words) and ``long`` (runs on the worker thread, one at a
    time, with an immediate ``pending`` reply)."""

    name: str
    args: Mapping[str, ArgSpec]
    run: Callable[[Controller, Mapping[str, Any]], dict[str, Any]]
    reply: str
    long: bool = False

    def usage(self) -> str:
        """``set_schedule head=H every_n_frames=N``: the command as ``edge-runtime command`` takes it."""
        return " ".join([self.name, *(f"{key}={arg.metavar}" for key, arg in self.args.items())])


def _path_or_http_url(source: str) -> str | None:
    if "://" in source and not source.lower().startswith(("http://", "https://")):
        return "must be a path or an http(s) URL"
    return None


_HEAD = ArgSpec(str, metavar="H")
_OUTCOME = "the update outcome: ok, reason, source, name, version, slot, previous_version"

#: The commands, by name (docs/protocol.md §9.2). The schedule knob is the engine's
#: (``HeadScheduler.set_every_n_frames``): the runtime schedules by frame count only.
COMMANDS: dict[str, CommandSpec] = {
    spec.name: spec
    for spec in (
        CommandSpec(
            "enable_head",
            {"head": _HEAD},
            run=lambda controller, args: controller.enable_head(args["head"]),
            reply='{"head": H, "enabled": true}',
        ),
        CommandSpec(
            "disable_head",
            {"head": _HEAD},
            run=lambda controller, args: controller.disable_head(args["head"]),
            reply='{"head": H, "enabled": false}',
        ),
        CommandSpec(
            "set_schedule",
            {"head": _HEAD, "every_n_frames": ArgSpec(int, minimum=1, rule=every_n_frames_problem, metavar="N")},
            run=lambda controller, args: controller.set_schedule(args["head"], every_n_frames=args["every_n_frames"]),
            reply='{"head": H, "every_n_frames": N}',
        ),
        CommandSpec(
            "status",
            {},
            run=lambda controller, args: controller.status(),
            reply="the status message's fields (§6.1), the bundle, each head's schedule and the update slots",
        ),
        CommandSpec(
            "update",
            {"source": ArgSpec(str, rule=_path_or_http_url, metavar="PATH|URL")},
            run=lambda controller, args: controller.update(args["source"]),
            reply=_OUTCOME,
            long=True,
        ),
        CommandSpec(
            "rollback",
            {},
            run=lambda controller, args: controller.rollback(),
            reply=_OUTCOME,
            long=True,
        ),
        CommandSpec(
            "tune",
            {},
            run=lambda controller, args: controller.tune(),
            reply="the tune: tuned, choice (per graph: backend, precision, threads), seconds, paused_s",
            long=True,
        ),
    )
}
#: Commands run on the worker thread, one at a time (they may take minutes).
LONG_COMMANDS = tuple(name for name, spec in COMMANDS.items() if spec.long)


def check_args(cmd: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` of ``cmd`` checked against :data:`COMMANDS` (``bad_args`` otherwise)."""
    spec = COMMANDS[cmd].args
    for key in args:
        if key not in spec:
            known = ", ".join(spec) or "none"
            raise CommandRejected(
                "bad_args", f"{cmd}: unknown argument {key!r:.40}{close_matches(key, spec)}; arguments: {known}"
            )
    out: dict[str, Any] = {}
    for key, arg in spec.items():
        if key not in args:
            raise CommandRejected("bad_args", f"{cmd}: argument {key!r} is required")
        value = args[key]
        kinds = arg.kind if isinstance(arg.kind, tuple) else (arg.kind,)
        if (
            isinstance(value, bool)
            or not isinstance(value, kinds)
            or (isinstance(value, float) and not math.isfinite(value))
        ):
            names = " or ".join("integer" if k is int else "number" if k is float else "string" for k in kinds)
            raise CommandRejected("bad_args", f"{cmd}: {key!r} must be a {names}, got {value!r:.40}")
        if isinstance(value, str) and not 0 < len(value) <= MAX_STRING_ARG:
            raise CommandRejected("bad_args", f"{cmd}: {key!r} must be 1 to {MAX_STRING_ARG} characters")
        if arg.minimum is not None and isinstance(value, (int, float)) and value < arg.minimum:
            raise CommandRejected("bad_args", f"{cmd}: {key!r} must be >= {arg.minimum:g}, got {value!r}")
        problem = None if arg.rule is None else arg.rule(value)
        if problem is not None:
            raise CommandRejected("bad_args", f"{cmd}: {key!r} {problem}, got {value!r:.80}")
        out[key] = value
    return out


def _dispatch(controller: Controller, command: Command) -> dict[str, Any]:
    spec = COMMANDS.get(command.cmd)
    if spec is None:  # the verifier passes only commands of the registry
        raise CommandRejected("unknown_command", f"unknown command {command.cmd!r}")
    return spec.run(controller, command.args)


# -- running and replying -----------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
        return value
    except (TypeError, ValueError):
        return json.loads(json.dumps(value, default=str))


@dataclass
class _Counters:
    received: int = 0
    accepted: int = 0
    failed: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


class CommandProcessor:
    """Verifies a payload, runs the command and publishes the reply (``publish_reply(dict)``).

    :meth:`handle` never raises and never blocks on a long command: ``update`` and ``rollback``
    run on one worker thread (a reply ``{"ok": true, "pending": true}`` at once, the outcome
    when done; another long command meanwhile is refused with reason ``busy``).
    ``on_rejection(reply)`` is called after a refusal, at most once per ``notify_interval_s``
    (the daemon republishes its status there, which carries :meth:`status_fields`).
    """

    def __init__(
        self,
        verifier: CommandVerifier,
        controller: Controller,
        publish_reply: Callable[[dict[str, Any]], object],
        *,
        on_rejection: Callable[[dict[str, Any]], object] | None = None,
        notify_interval_s: float = 1.0,
    ) -> None:
        self.verifier = verifier
        self.controller = controller
        self.publish_reply = publish_reply
        self.on_rejection = on_rejection
        self.notify_interval_s = notify_interval_s
        self.last_rejection: dict[str, Any] | None = None
        self._counters = _Counters()
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._notified_at = -math.inf

    def counters(self) -> dict[str, Any]:
        """``{"received", "accepted", "failed", "rejected": {reason: n}}``."""
        with self._lock:
            c = self._counters
            return {"received": c.received, "accepted": c.accepted, "failed": c.failed, "rejected": dict(c.rejected)}

    def status_fields(self) -> dict[str, Any]:
        """For the status message: ``{"commands": {...counters, "last_rejection": {...} | None}}``."""
        return {"commands": {**self.counters(), "last_rejection": self.last_rejection}}

    @property
    def busy(self) -> bool:
        worker = self._worker
        return worker is not None and worker.is_alive()

    def join(self, timeout: float | None = None) -> None:
        """Wait for a running long command (tests, shutdown)."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)

    def _reply(self, nonce: str | None, cmd: str | None, ok: bool, **rest: Any) -> dict[str, Any]:
        reply: dict[str, Any] = {"v": COMMAND_VERSION, "device": self.verifier.device_id, "nonce": nonce, "cmd": cmd}
        reply.update(ok=ok, **rest, ts=round(time.time(), 3))
        return reply

    def _send(self, reply: dict[str, Any]) -> None:
        try:
            self.publish_reply(reply)
        except Exception:
            logger.exception("could not publish the reply to command %s", reply.get("nonce"))

    def handle(self, payload: bytes) -> dict[str, Any]:
        """Verify and run one payload; publish and return the reply."""
        with self._lock:
            self._counters.received += 1
        try:
            command = self.verifier.parse(payload)
        except CommandRejected as exc:
            return self._refuse(exc.reason, str(exc), exc.nonce, exc.cmd)
        except Exception as exc:  # a bug must not reach paho's network thread
            logger.exception("command verification failed unexpectedly")
            return self._refuse("malformed", f"internal error: {type(exc).__name__}", None, None)
        logger.info("command %s %s (nonce %s, key %s)", command.cmd, dict(command.args), command.nonce, command.key_id)
        if command.cmd in LONG_COMMANDS:
            with self._lock:
                if self._worker is not None and self._worker.is_alive():
                    busy = True
                else:
                    busy = False
                    self._counters.accepted += 1
                    self._worker = threading.Thread(
                        target=self._run_and_reply, args=(command,), name=f"command-{command.cmd}", daemon=True
                    )
                    self._worker.start()
            if busy:
                return self._refuse(
                    "busy", f"another {' or '.join(LONG_COMMANDS)} is running", command.nonce, command.cmd
                )
            reply = self._reply(command.nonce, command.cmd, True, pending=True, result={"state": "running"})
            self._send(reply)
            return reply
        with self._lock:
            self._counters.accepted += 1
        return self._run_and_reply(command)

    def _run_and_reply(self, command: Command) -> dict[str, Any]:
        try:
            result = _dispatch(self.controller, command)
            reply = self._reply(command.nonce, command.cmd, True, result=_jsonable(result))
        except Exception as exc:
            if not isinstance(exc, EdgeRuntimeError):
                logger.exception("command %s failed", command.cmd)
            message = str(exc) if isinstance(exc, EdgeRuntimeError) else f"internal error: {type(exc).__name__}: {exc}"
            with self._lock:
                self._counters.failed += 1
            reply = self._reply(command.nonce, command.cmd, False, error=message, reason="failed")
        self._send(reply)
        return reply

    def _refuse(self, reason: str, message: str, nonce: str | None, cmd: str | None) -> dict[str, Any]:
        logger.warning("command refused (%s): %s", reason, message)
        reply = self._reply(nonce, cmd, False, error=message, reason=reason)
        now = time.monotonic()
        with self._lock:
            self._counters.rejected[reason] = self._counters.rejected.get(reason, 0) + 1
            self.last_rejection = {"reason": reason, "error": message[:200], "nonce": nonce, "ts": reply["ts"]}
            notify = self.on_rejection is not None and now - self._notified_at >= self.notify_interval_s
            if notify:
                self._notified_at = now
        self._send(reply)
        if notify and self.on_rejection is not None:
            try:
                self.on_rejection(reply)
            except Exception:
                logger.exception("on_rejection failed")
        return reply


__all__ = [
    "COMMANDS",
    "REASONS",
    "ArgSpec",
    "Command",
    "CommandProcessor",
    "CommandRejected",
    "CommandSpec",
    "Controller",
    "check_args",
]
