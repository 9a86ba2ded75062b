"""Signed remote commands over MQTT: verify, dispatch, reply (``docs/protocol.md`` §9).

An operator publishes a signed JSON command to ``<prefix>/<device>/cmd``; the device checks the
size, the JSON, the ed25519 signature (:mod:`edge_runtime.trust.keys`), that the command is for this
device, that it is fresh and not a replay, and the command's arguments, in that order; it runs
the command through a :class:`Controller` (the daemon) and publishes the outcome on
``<prefix>/<device>/reply``. Nothing incoming is unpickled or evaluated: the payload is read with
``json.loads`` only, after the size check.

Example (device side)::

    verifier = CommandVerifier(load_public_keys(["operator.pub"]), "cam1",
                               nonce_store=state_dir / "command-nonces.sqlite")
    processor = CommandProcessor(verifier, controller, publisher.publish_reply)
    publisher.on_command = processor.handle      # MqttPublisher, network thread

Example (operator side; ``edge-runtime command`` does this)::

    message = sign_command(load_private_key("operator.key"), "cam1", "disable_head", {"head": "box"})
    payload = encode_command(message)            # publish to edge/cam1/cmd, QoS 1

CLI::

    edge-runtime command --broker mqtt://broker:1883 --device cam1 --key operator.key disable_head head=box
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edge_runtime.bounded_json import loads_bounded
from edge_runtime.errors import ConfigError, EdgeRuntimeError, close_matches
from edge_runtime.trust.keys import (
    KeyFileError,
    PublicKey,
    decode_signature,
    encode_signature,
    public_key_of,
    sign,
    verify,
)

logger = logging.getLogger(__name__)

COMMAND_VERSION = 1
#: Every field of a command; all are required. ``sig`` is the only one the signature does not cover.
FIELDS = ("v", "device", "cmd", "args", "ts", "nonce", "key_id", "sig")
NONCE_PATTERN = re.compile(r"[0-9a-f]{16,32}")
#: Deepest JSON nesting a command may have (its arguments are flat values).
COMMAND_MAX_DEPTH = 8
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


@dataclass(frozen=True)
class ArgSpec:
    """One argument of a command: its JSON type(s) and bounds."""

    kind: type | tuple[type, ...]
    minimum: float | None = None


_HEAD = ArgSpec(str)
#: command -> {argument: spec}; every argument is required. The schedule knob is the engine's
#: (``HeadScheduler.set_every_n_frames``): the runtime schedules by frame count only.
COMMANDS: dict[str, dict[str, ArgSpec]] = {
    "enable_head": {"head": _HEAD},
    "disable_head": {"head": _HEAD},
    "set_schedule": {"head": _HEAD, "every_n_frames": ArgSpec(int, minimum=1)},
    "status": {},
    "update": {"source": ArgSpec(str)},
    "rollback": {},
}
#: Commands run on the worker thread, one at a time (they may take minutes).
LONG_COMMANDS = frozenset({"update", "rollback"})
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


def canonical_body(message: Mapping[str, Any]) -> bytes:
    """The signed bytes: every field but ``sig`` as JSON with sorted keys, no whitespace, UTF-8."""
    body = {k: v for k, v in message.items() if k != "sig"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def sign_command(
    private_key: Any,
    device: str,
    cmd: str,
    args: Mapping[str, Any] | None = None,
    *,
    ts: float | None = None,
    nonce: str | None = None,
) -> dict[str, Any]:
    """A complete signed command (a dict; :func:`encode_command` makes the payload)."""
    message: dict[str, Any] = {
        "v": COMMAND_VERSION,
        "device": device,
        "cmd": cmd,
        "args": dict(args or {}),
        "ts": round(time.time(), 3) if ts is None else ts,
        "nonce": secrets.token_hex(16) if nonce is None else nonce,
        "key_id": public_key_of(private_key).key_id,
    }
    message["sig"] = encode_signature(sign(private_key, canonical_body(message)))
    return message


def encode_command(message: Mapping[str, Any]) -> bytes:
    """The MQTT payload of a command (compact UTF-8 JSON)."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class NonceStore:
    """Nonces seen recently, each until its expiry (wall clock), in SQLite: a file in the state
    dir survives restarts, so a restart does not reopen the replay window; ``None``: in memory.
    At most ``max_entries`` live nonces (then :meth:`add` refuses: ``rate_limited``)."""

    def __init__(self, path: str | Path | None = None, *, max_entries: int = 10_000) -> None:
        self.path = None if path is None else Path(path)
        self.max_entries = max_entries
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(":memory:" if self.path is None else str(self.path), check_same_thread=False)
            with self._db:
                self._db.execute("CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY, expires REAL NOT NULL)")
        except sqlite3.Error as exc:
            raise ConfigError(
                f"{self.path}: the command nonce store cannot be used ({exc}); delete the file: it only "
                "remembers recent command nonces"
            ) from None

    def add(self, nonce: str, expires: float, now: float) -> bool:
        """Record ``nonce`` until ``expires``; False when it is already there (a replay).
        Raises :class:`CommandRejected` (``rate_limited``) when the store is full."""
        with self._lock, self._db:
            self._db.execute("DELETE FROM nonces WHERE expires < ?", (now,))
            if self._db.execute("SELECT 1 FROM nonces WHERE nonce = ?", (nonce,)).fetchone():
                return False
            (count,) = self._db.execute("SELECT COUNT(*) FROM nonces").fetchone()
            if count >= self.max_entries:
                raise CommandRejected(
                    "rate_limited", f"more than {self.max_entries} commands within the replay window", nonce=nonce
                )
            self._db.execute("INSERT INTO nonces (nonce, expires) VALUES (?, ?)", (nonce, expires))
            return True

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM nonces").fetchone()[0])

    def close(self) -> None:
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.close()


class CommandVerifier:
    """Checks a command payload and returns a :class:`Command`, or raises :class:`CommandRejected`.

    ``keys``: the trusted operator keys (``load_public_keys``); ``max_age_s``: how old a command
    may be; ``max_skew_s``: how far in the future its ``ts`` may lie (clock skew);
    ``max_bytes``: the largest payload read at all; ``nonce_store``: the SQLite file of seen
    nonces (None: in memory, forgotten on restart); ``clock``: wall-clock seconds (tests).
    """

    def __init__(
        self,
        keys: list[PublicKey],
        device_id: str,
        *,
        max_age_s: float = 60.0,
        max_skew_s: float = 30.0,
        max_bytes: int = 8192,
        nonce_store: str | Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not keys:
            raise KeyFileError("commands need at least one trusted operator public key")
        if not max_age_s > 0 or not max_skew_s >= 0 or max_bytes < 64:
            raise EdgeRuntimeError(
                f"command limits: need max_age_s > 0, max_skew_s >= 0, max_bytes >= 64; "
                f"got {max_age_s}, {max_skew_s}, {max_bytes}"
            )
        self.keys = list(keys)
        self.device_id = device_id
        self.max_age_s = float(max_age_s)
        self.max_skew_s = float(max_skew_s)
        self.max_bytes = int(max_bytes)
        self.clock = clock
        self.nonces = NonceStore(nonce_store)

    def close(self) -> None:
        self.nonces.close()

    def parse(self, payload: bytes) -> Command:
        """Verify ``payload``; the order of the checks is that of :data:`REASONS`."""
        if len(payload) > self.max_bytes:
            raise CommandRejected("too_large", f"command of {len(payload)} bytes; the limit is {self.max_bytes}")
        try:
            message = loads_bounded(
                bytes(payload), max_depth=COMMAND_MAX_DEPTH, object_pairs_hook=_unique_object,
                parse_constant=_reject_constant,
            )  # fmt: skip
        except ValueError as exc:  # bad UTF-8 or JSON, duplicate keys, NaN, nested too deeply
            raise CommandRejected("malformed", f"not a UTF-8 JSON object: {exc}") from None
        if not isinstance(message, dict):
            raise CommandRejected("malformed", f"not a JSON object but a {type(message).__name__}")
        nonce = message.get("nonce") if isinstance(message.get("nonce"), str) else None
        nonce = nonce if nonce is not None and NONCE_PATTERN.fullmatch(nonce) else None
        cmd = message.get("cmd") if isinstance(message.get("cmd"), str) else None
        cmd = cmd if cmd in COMMANDS else None
        try:
            return self._check(message)
        except CommandRejected as exc:
            exc.nonce, exc.cmd = exc.nonce or nonce, exc.cmd or cmd
            raise

    def _check(self, message: dict[str, Any]) -> Command:
        if message.get("sig") in (None, ""):
            raise CommandRejected("unsigned", "the command has no signature ('sig')")
        for key in message:
            if key not in FIELDS:
                raise CommandRejected("malformed", f"unknown field {key!r}{close_matches(key, FIELDS)}")
        missing = [key for key in FIELDS if key not in message]
        if missing:
            raise CommandRejected("malformed", f"missing field(s): {', '.join(missing)}")
        if message["v"] != COMMAND_VERSION or isinstance(message["v"], bool):
            raise CommandRejected("malformed", f"command version {message['v']!r}; this device reads version 1")
        for key in ("device", "cmd", "key_id", "sig", "nonce"):
            if not isinstance(message[key], str):
                raise CommandRejected("malformed", f"{key!r} must be a string, got {message[key]!r:.40}")
        if not isinstance(message["args"], dict):
            raise CommandRejected("malformed", "'args' must be a JSON object")
        if not _is_number(message["ts"]):
            raise CommandRejected("malformed", f"'ts' must be a number (unix seconds), got {message['ts']!r:.40}")
        if not NONCE_PATTERN.fullmatch(message["nonce"]):
            raise CommandRejected("malformed", "'nonce' must be 16 to 32 lowercase hex digits")
        try:
            signature = decode_signature(message["sig"], "command")
        except KeyFileError as exc:
            raise CommandRejected("bad_signature", str(exc)) from None
        candidates = [k for k in self.keys if k.key_id == message["key_id"]]
        if not candidates:
            raise CommandRejected("unknown_key", f"key {message['key_id']!r:.40} is not a trusted operator key")
        signer = verify(candidates, canonical_body(message), signature)
        if signer is None:
            raise CommandRejected("bad_signature", f"the signature does not match key {message['key_id']!r}")
        if message["device"] != self.device_id:
            raise CommandRejected(
                "wrong_device", f"command for device {message['device']!r:.80}, this is {self.device_id!r}"
            )
        now, ts = self.clock(), float(message["ts"])
        if now - ts > self.max_age_s:
            raise CommandRejected("expired", f"command is {now - ts:.1f} s old; the limit is {self.max_age_s:g} s")
        if ts - now > self.max_skew_s:
            raise CommandRejected(
                "future", f"command is {ts - now:.1f} s in the future; the limit is {self.max_skew_s:g} s (clock skew?)"
            )
        if not self.nonces.add(message["nonce"], max(ts, now) + self.max_age_s + 1.0, now):
            raise CommandRejected("replayed", f"nonce {message['nonce']} was seen already")
        cmd, args = message["cmd"], message["args"]
        if cmd not in COMMANDS:
            raise CommandRejected(
                "unknown_command",
                f"unknown command {cmd!r:.40}{close_matches(cmd, COMMANDS)}; commands: {', '.join(COMMANDS)}",
            )
        return Command(
            device=message["device"],
            cmd=cmd,
            args=check_args(cmd, args),
            ts=ts,
            nonce=message["nonce"],
            key_id=signer.key_id,
        )


def check_args(cmd: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` of ``cmd`` checked against :data:`COMMANDS` (``bad_args`` otherwise)."""
    spec = COMMANDS[cmd]
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
        out[key] = value
    if cmd == "update":
        source = out["source"]
        if "://" in source and not source.lower().startswith(("http://", "https://")):
            raise CommandRejected("bad_args", f"update: 'source' must be a path or an http(s) URL, got {source!r:.80}")
    return out


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


def _dispatch(controller: Controller, command: Command) -> dict[str, Any]:
    args = command.args
    if command.cmd == "enable_head":
        return controller.enable_head(args["head"])
    if command.cmd == "disable_head":
        return controller.disable_head(args["head"])
    if command.cmd == "set_schedule":
        return controller.set_schedule(args["head"], every_n_frames=args["every_n_frames"])
    if command.cmd == "status":
        return controller.status()
    if command.cmd == "update":
        return controller.update(args["source"])
    if command.cmd == "rollback":
        return controller.rollback()
    raise CommandRejected("unknown_command", f"unknown command {command.cmd!r}")  # COMMANDS and this disagree


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
                return self._refuse("busy", "another update or rollback is running", command.nonce, command.cmd)
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
    "Command",
    "CommandProcessor",
    "CommandRejected",
    "CommandVerifier",
    "Controller",
    "NonceStore",
    "canonical_body",
    "check_args",
    "encode_command",
    "sign_command",
]
