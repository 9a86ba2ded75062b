"""The state directory: what must survive a restart, the epoch rule, and the heartbeat.

Files (replaced atomically by write + rename, except ``seq``):

* ``epoch.json``: the current epoch ``{"epoch", "first_seq", "reason", "started", "spool"}``:
  a random id, the first message number issued under it, why it started, when, and the
  identity of the spool file its numbers come from. (A state directory of an older version
  has a plain ``epoch`` file: it is read once and replaced by ``epoch.json``.)
* ``seq``: the high-water mark, the next message number. With a spool it is rewritten in
  place after every spool commit (:meth:`StateDir.high_water`: one ``pwrite`` of a fixed-width
  number, no new blocks, so it works on a full disk); without one, periodically and on a clean
  stop.
* ``running``: present while a daemon runs (its pid); a clean stop removes it.
* ``heartbeat.json``: written by the running daemon, read by ``edge-runtime health``.

**The epoch rule.** A message number (``seq``) is never issued twice within an epoch. The
daemon calls :meth:`StateDir.begin` before it numbers anything; it keeps the epoch only when
it can prove its next ``seq`` is current, and otherwise starts a new one, saying why
(:data:`EpochInfo.reason`):

* ``new state directory``;
* ``unclean stop`` (``running`` was left behind: the daemon was killed or lost power, so
  results numbered in its last moments may be lost and their numbers issued again);
* ``spool replaced`` (the spool file's identity is not the one the epoch was numbered from:
  deleted, truncated, moved aside, restored from elsewhere);
* ``spool rolled back`` (the spool's next seq is below the high-water mark: lost commits,
  e.g. a corrupt WAL that SQLite discarded);
* ``state older than the spool`` (after a clean stop, the spool is ahead of the high-water
  mark: the state directory was restored from an older copy; after a kill the mark may lag the
  last commit, and the unclean stop is the reason).

Under a new epoch numbering goes on from the spool's next seq (``first_seq``); subscribers
de-duplicate and find gaps per (device, epoch), so a rewound counter can no longer make new
results look like duplicates.

Example::

    state = StateDir.open("/var/lib/edge-runtime")
    info = state.begin(spool_identity="3f2a…", spool_next_seq=120)   # the epoch of this run
    ...
    state.end(next_seq=180)                                             # a clean stop
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_runtime.bounded_json import loads_bounded
from edge_runtime.errors import ConfigError

logger = logging.getLogger(__name__)

HEARTBEAT_NAME = "heartbeat.json"
EPOCH_NAME = "epoch.json"
LEGACY_EPOCH_NAME = "epoch"
SEQ_NAME = "seq"
RUNNING_NAME = "running"
#: The largest seq a state file may hold (SQLite's INTEGER and msgpack's uint64 both hold it).
MAX_SEQ = 2**63 - 1
_SEQ_WIDTH = 20  # digits of MAX_SEQ: the high-water mark is rewritten in place at this width

NEW_STATE = "new state directory"
UNCLEAN_STOP = "unclean stop"
SPOOL_REPLACED = "spool replaced"
SPOOL_ROLLED_BACK = "spool rolled back"
STATE_OLDER = "state older than the spool"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@dataclass(frozen=True)
class EpochInfo:
    """The epoch a run numbers its messages under: ``epoch`` (16 hex digits), ``first_seq``
    (the first seq issued under it), ``reason`` (why it started; the detail after a colon),
    ``started`` (Unix time) and ``spool`` (the identity of the spool file, None without one)."""

    epoch: str
    first_seq: int
    reason: str
    started: float
    spool: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``epoch.json`` form."""
        return asdict(self)


class HighWater:
    """The ``seq`` file held open and rewritten in place (``os.pwrite``, fixed width, no fsync):
    cheap enough for every spool commit, and it needs no new disk blocks. An error is logged
    once and the last good value stays (the next start then sees a stale mark: a new epoch)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._failed = False
        self.value: int | None = None

    def write(self, next_seq: int) -> None:
        """Record ``next_seq`` as the high-water mark."""
        if next_seq == self.value:
            return
        data = f"{next_seq:0{_SEQ_WIDTH}d}\n".encode()
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                if os.fstat(self._fd).st_size > len(data):  # an older, longer value: cut its tail
                    os.ftruncate(self._fd, len(data))
            os.pwrite(self._fd, data, 0)
        except OSError as exc:
            if not self._failed:
                logger.error("state %s: cannot record the high-water mark %d: %s", self.path, next_seq, exc)
                self._failed = True
            return
        if self._failed:
            logger.info("state %s: the high-water mark is written again", self.path)
            self._failed = False
        self.value = next_seq

    def close(self) -> None:
        """Close the file (the value stays on disk)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


@dataclass
class StateDir:
    """An opened state directory; ``epoch`` is the current epoch's id (``begin`` may change it)."""

    path: Path
    epoch: str
    info: EpochInfo | None = None
    running: bool = False  # between begin() and end()
    _high_water: HighWater | None = None

    @classmethod
    def open(cls, path: str | Path) -> StateDir:
        """Create the directory if needed and read its epoch (none yet: ``begin`` makes one)."""
        root = Path(path)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"state directory {root}: {exc.strerror or exc} (set --state-dir)") from exc
        info = _read_epoch(root)
        return cls(root, info.epoch if info is not None else "", info)

    # -- the epoch rule ----------------------------------------------------------------------
    def begin(self, spool_identity: str | None = None, spool_next_seq: int | None = None) -> EpochInfo:
        """Decide this run's epoch (module docstring) from the spool's identity and next seq
        (both None without a spool), record it, and mark the state directory as running."""
        saved = self.load_seq()
        previous = self.info
        reasons: list[str] = []
        if previous is None:
            reasons.append(NEW_STATE)
        running = self.path / RUNNING_NAME
        if previous is not None and running.exists():
            pid = _read_text(running).strip()
            reasons.append(f"{UNCLEAN_STOP} (process {pid or '?'} did not stop cleanly)")
        if previous is not None and spool_identity is not None and spool_next_seq is not None:
            if previous.spool is not None and previous.spool != spool_identity:
                reasons.append(
                    f"{SPOOL_REPLACED} (identity {spool_identity}, the epoch was numbered from {previous.spool})"
                )
            elif previous.spool is None and spool_next_seq != saved:
                reasons.append(
                    f"{SPOOL_REPLACED} (the epoch was numbered without this spool: its next seq"
                    f" {spool_next_seq}, high-water mark {saved})"
                )
            elif spool_next_seq < saved:
                reasons.append(f"{SPOOL_ROLLED_BACK} (next seq {spool_next_seq}, high-water mark {saved})")
            elif spool_next_seq > saved and not reasons:  # after a kill the mark may lag its last commit
                reasons.append(f"{STATE_OLDER} (spool next seq {spool_next_seq}, high-water mark {saved})")
        next_seq = spool_next_seq if spool_next_seq is not None else saved
        if reasons or previous is None:
            info = EpochInfo(secrets.token_hex(8), next_seq, "; ".join(reasons), time.time(), spool_identity)
            if previous is not None:
                logger.warning(
                    "new epoch %s (was %s): %s; numbering goes on from seq %d",
                    info.epoch, previous.epoch, info.reason, next_seq,
                )  # fmt: skip
            self._write(EPOCH_NAME, json.dumps(info.to_dict()) + "\n")
            self.save_seq(next_seq)
        else:
            info = previous
            rebound = spool_identity is not None and previous.spool != spool_identity
            if rebound or not (self.path / EPOCH_NAME).exists():
                # the same epoch, now bound to this spool (or migrated from the older layout)
                info = EpochInfo(previous.epoch, previous.first_seq, previous.reason, previous.started, spool_identity)
                self._write(EPOCH_NAME, json.dumps(info.to_dict()) + "\n")
        with contextlib.suppress(OSError):
            (self.path / LEGACY_EPOCH_NAME).unlink(missing_ok=True)  # epoch.json holds it now
        try:
            _atomic_write(running, f"{os.getpid()}\n")
        except OSError as exc:
            raise ConfigError(f"state directory {self.path}: cannot mark it as running: {exc.strerror or exc}") from exc
        self.info, self.epoch, self.running = info, info.epoch, True
        return info

    def end(self, next_seq: int) -> None:
        """A clean stop: save ``next_seq`` and remove the running mark (errors are logged: the
        next start then begins a new epoch, which is safe)."""
        self.running = False
        if self._high_water is not None:
            self._high_water.close()
            self._high_water = None
        try:
            self.save_seq(next_seq)
            (self.path / RUNNING_NAME).unlink(missing_ok=True)
        except OSError as exc:
            logger.error(
                "state %s: cannot record the clean stop (%s): the next start begins a new epoch", self.path, exc
            )

    def high_water(self) -> HighWater:
        """The writer of the high-water mark, for the spool's ``on_commit`` (closed by ``end``)."""
        if self._high_water is None:
            self._high_water = HighWater(self.path / SEQ_NAME)
        return self._high_water

    # -- seq -----------------------------------------------------------------------------------
    def load_seq(self) -> int:
        """The high-water mark: the next message number saved by the last run (0 if none)."""
        path = self.path / SEQ_NAME
        try:
            text = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise ConfigError(f"{path}: unreadable: {exc.strerror or exc}") from exc
        try:
            value = int(text or 0)
        except ValueError as exc:
            raise ConfigError(f"{path}: not a number; delete it to continue (a new epoch starts)") from exc
        if not 0 <= value <= MAX_SEQ:
            raise ConfigError(f"{path}: {text[:30]} is not a seq (0 to {MAX_SEQ}); delete it to continue")
        return value

    def save_seq(self, seq: int) -> None:
        """Persist the next message number (errors are logged: a stale mark only makes the next
        start begin a new epoch)."""
        try:
            _atomic_write(self.path / SEQ_NAME, f"{seq:0{_SEQ_WIDTH}d}\n")
        except OSError as exc:
            logger.error("state %s: cannot save seq %d: %s", self.path, seq, exc)

    # -- heartbeat -----------------------------------------------------------------------------
    def write_heartbeat(self, fields: dict[str, Any]) -> None:
        """Write ``heartbeat.json`` with the time, the pid and ``fields``."""
        _atomic_write(self.path / HEARTBEAT_NAME, json.dumps({"ts": time.time(), "pid": os.getpid(), **fields}) + "\n")

    def _write(self, name: str, text: str) -> None:
        try:
            _atomic_write(self.path / name, text)
        except OSError as exc:
            raise ConfigError(f"state directory {self.path}: cannot write {name}: {exc.strerror or exc}") from exc


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[:64]
    except OSError:
        return ""


def _read_epoch(root: Path) -> EpochInfo | None:
    """``epoch.json`` (or an older plain ``epoch`` file, migrated), None in a new directory."""
    path = root / EPOCH_NAME
    try:
        data = loads_bounded(path.read_bytes())
    except FileNotFoundError:
        return _migrate_legacy_epoch(root)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable ({exc}); delete it to start a new epoch") from exc
    try:
        info = EpochInfo(
            epoch=str(data["epoch"]),
            first_seq=int(data["first_seq"]),
            reason=str(data.get("reason", "")),
            started=float(data.get("started", 0.0)),
            spool=None if data.get("spool") is None else str(data["spool"]),
        )
    except (TypeError, KeyError, ValueError, OverflowError) as exc:
        raise ConfigError(f"{path}: malformed ({exc!r}); delete it to start a new epoch") from exc
    if not 0 <= info.first_seq <= MAX_SEQ or not math.isfinite(info.started):
        raise ConfigError(
            f"{path}: first_seq {info.first_seq} is not a seq (0 to {MAX_SEQ}) or started is not finite; "
            "delete it to start a new epoch"
        )
    if not info.epoch:
        raise ConfigError(f"{path}: the epoch is empty; delete it to start a new epoch")
    return info


def _migrate_legacy_epoch(root: Path) -> EpochInfo | None:
    legacy = root / LEGACY_EPOCH_NAME
    try:
        epoch = legacy.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{legacy}: unreadable: {exc.strerror or exc}") from exc
    if not epoch:
        raise ConfigError(f"state directory {root}: the epoch file is empty; delete it to start a new epoch")
    # The old layout kept no spool identity: begin() cannot prove the spool's seq is current
    # unless it matches the saved seq exactly, so an upgraded device usually starts a new epoch.
    return EpochInfo(epoch=epoch, first_seq=0, reason="(from an older state directory)", started=0.0, spool=None)


class MalformedHeartbeatError(ConfigError):
    """A heartbeat file that exists but does not hold what the daemon writes (the message names it)."""


def read_heartbeat(state_dir: str | Path) -> dict[str, Any]:
    """The last heartbeat of the daemon using ``state_dir``: a JSON object with a finite ``ts``.
    Raises :class:`ConfigError` when the file is missing or unreadable, :class:`MalformedHeartbeatError`
    when it holds something else."""
    path = Path(state_dir) / HEARTBEAT_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no heartbeat (is the daemon running with this --state-dir?)") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: unreadable heartbeat: {exc.strerror or exc}") from exc
    try:
        data = loads_bounded(raw)
    except (ValueError, RecursionError) as exc:
        raise MalformedHeartbeatError(f"{path}: malformed heartbeat (not JSON: {exc})") from exc
    if not isinstance(data, dict):
        raise MalformedHeartbeatError(f"{path}: malformed heartbeat (not a JSON object)")
    ts = data.get("ts")
    try:
        finite = not isinstance(ts, bool) and isinstance(ts, (int, float)) and math.isfinite(float(ts))
    except OverflowError:
        finite = False
    if not finite:
        shown = repr(ts) if len(repr(ts)) <= 40 else repr(ts)[:37] + "..."
        raise MalformedHeartbeatError(f"{path}: malformed heartbeat: field ts is {shown}, not a finite number")
    return data
