"""Signed remote commands: signing, the canonical body, and verifying a payload (``docs/protocol.md`` §9).

An operator publishes a signed JSON command to ``<prefix>/<device>/cmd``; the device checks the
size, the JSON, the ed25519 signature (:mod:`edge_runtime.trust.keys`), that the command is for this
device, that it is fresh and not a replay (:class:`NonceStore`), and the command's arguments
(:func:`~edge_runtime.trust.commands.check_args`, the registry), in that order. Nothing incoming
is unpickled or evaluated: the payload is read with ``json.loads`` only, after the size check.
Running a verified command and replying is :class:`~edge_runtime.trust.commands.CommandProcessor`.

Example (device side)::

    verifier = CommandVerifier(load_public_keys(["operator.pub"]), "cam1",
                               nonce_store=state_dir / "command-nonces.sqlite")
    command = verifier.parse(payload)            # or CommandRejected(reason, message)

Example (operator side; ``edge-runtime command`` does this)::

    message = sign_command(load_private_key("operator.key"), "cam1", "disable_head", {"head": "box"})
    payload = encode_command(message)            # publish to edge/cam1/cmd, QoS 1

CLI::

    edge-runtime command --broker mqtt://broker:1883 --device cam1 --key operator.key disable_head head=box
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from edge_runtime.bounded_json import loads_bounded
from edge_runtime.errors import ConfigError, EdgeRuntimeError, close_matches
from edge_runtime.trust.commands import COMMAND_VERSION, COMMANDS, Command, CommandRejected, check_args
from edge_runtime.trust.keys import (
    KeyFileError,
    PublicKey,
    decode_signature,
    encode_signature,
    public_key_of,
    sign,
    verify,
)

#: Every field of a command; all are required. ``sig`` is the only one the signature does not cover.
FIELDS = ("v", "device", "cmd", "args", "ts", "nonce", "key_id", "sig")
NONCE_PATTERN = re.compile(r"[0-9a-f]{16,32}")
#: Deepest JSON nesting a command may have (its arguments are flat values).
COMMAND_MAX_DEPTH = 8


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
            ) from exc

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
            raise CommandRejected("malformed", f"not a UTF-8 JSON object: {exc}") from exc
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
            raise CommandRejected("bad_signature", str(exc)) from exc
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


__all__ = [
    "CommandVerifier",
    "NonceStore",
    "canonical_body",
    "encode_command",
    "sign_command",
]
