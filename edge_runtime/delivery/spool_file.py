"""The spool's SQLite file: schema, ownership, options and the batched write transaction.

:class:`~edge_runtime.delivery.spool.Spool` is built on :class:`SpoolFile`; open a spool with
``Spool.open`` (:meth:`SpoolFile.open`); the names here are the options and the error.

Example::

    options = SpoolOptions(max_rows=10_000, synchronous="full", commit_interval_ms=20)
    with Spool.open("/var/lib/edge-runtime/spool.sqlite", options) as spool:
        ...

**The file.** An SQLite database marked as a spool (``PRAGMA application_id`` "EDSP",
``user_version`` = :data:`SCHEMA_VERSION`): a ``messages`` table and a one-row ``meta`` table
(``next_seq``, depth, bytes, loss totals). Journal mode is WAL. One process owns a spool file
at a time (an ``flock`` on the file); a second open fails with :class:`ConfigError`.

**Durability (the contract).** Writes go into one open SQLite transaction (a *batch*) that is
committed, without a background thread:

* on ``append`` when ``commit_interval_ms`` has passed since the batch's first write
  (``commit_interval_ms=0``: every ``append`` commits before it returns);
* on ``append(..., durable=True)``, ``flush()``, ``close()``;
* on a read (``pending``, ``interleaved``, ``newest``) or ``flush_if_due()`` when the batch is
  due (``seconds_until_commit()`` tells a waiting publisher when that is).

A message is **committed** once the transaction holding it has committed: after ``flush()`` or
``close()`` returned, after ``append(durable=True)`` or any ``append`` with
``commit_interval_ms=0`` returned, or once ``committed_next_seq`` is greater than its ``seq``.
With ``synchronous="normal"`` every committed message survives a kill of the process (SIGKILL,
OOM killer, a crash): the WAL frames are in the OS page cache. A power loss may roll back the
last commits (the database stays consistent). ``synchronous="full"`` fsyncs the WAL at every
commit, so committed messages also survive a power loss; it costs an fsync per batch (measured
in ``benchmarks/spool_durability.py``).

Appends not yet committed when the process dies are lost: at most the appends of the last
``commit_interval_ms`` while appends keep coming, or since the last commit when they stop (call
``flush_if_due()`` on idle ticks). This is safe for the wire: readers only ever see committed
messages, so nothing uncommitted is ever published, and a lost ``seq`` is simply issued again
after the restart (seqs stay gapless: ``next_seq`` and the messages commit in one transaction).
Acks and attempt counts are batched too; a lost ack means one re-publish (at-least-once), which
the subscriber de-duplicates on (device, epoch, seq).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from edge_runtime.errors import ConfigError, EdgeRuntimeError, close_matches

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
APPLICATION_ID = 0x45445350  # "EDSP": marks the file as an edge-runtime spool
SYNCHRONOUS_MODES = ("normal", "full")
_Opened = TypeVar("_Opened", bound="SpoolFile")

_SCHEMA = """
CREATE TABLE messages (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    topic    TEXT    NOT NULL,
    payload  BLOB    NOT NULL,
    qos      INTEGER NOT NULL,
    expiry_s REAL,
    created  REAL    NOT NULL,
    seq      INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    size     INTEGER NOT NULL
);
CREATE INDEX messages_deadline ON messages (created + expiry_s) WHERE expiry_s IS NOT NULL;
CREATE TABLE meta (
    id               INTEGER PRIMARY KEY CHECK (id = 0),
    next_seq         INTEGER NOT NULL,
    depth            INTEGER NOT NULL,
    bytes            INTEGER NOT NULL,
    dropped_overflow INTEGER NOT NULL,
    expired          INTEGER NOT NULL,
    created          REAL    NOT NULL
);
"""


class SpoolError(EdgeRuntimeError):
    """The spool could not be written or read while running (disk full, I/O error, closed)."""


@dataclass(frozen=True)
class SpoolOptions:
    """How a spool stores messages.

    ``max_rows`` / ``max_bytes``: bounds (``None``: unbounded); when an append would exceed
    one, the oldest messages are dropped (counted). ``max_bytes`` counts the bytes of topics and
    payloads, not SQLite's overhead nor the file size (freed pages are reused, the file does not
    shrink). ``synchronous``: ``"normal"`` survives a process kill, ``"full"`` also a power loss.
    ``commit_interval_ms``: how long a batch of writes may stay uncommitted (0: commit on every
    append).
    """

    max_rows: int | None = 100_000
    max_bytes: int | None = 256 * 1024 * 1024
    synchronous: Literal["normal", "full"] = "normal"
    commit_interval_ms: float = 5.0

    def __post_init__(self) -> None:
        for name in ("max_rows", "max_bytes"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"spool option {name}: must be a positive integer or None, got {value!r}")
        if self.synchronous not in SYNCHRONOUS_MODES:
            raise ConfigError(
                f"spool option synchronous: {self.synchronous!r} is not one of {', '.join(SYNCHRONOUS_MODES)}"
                f"{close_matches(str(self.synchronous), SYNCHRONOUS_MODES)}"
            )
        interval = self.commit_interval_ms
        if (
            isinstance(interval, bool)
            or not isinstance(interval, (int, float))
            or not math.isfinite(interval)
            or interval < 0
        ):
            raise ConfigError(f"spool option commit_interval_ms: must be a number >= 0, got {interval!r}")


class SpoolFile:
    """An owned, open spool file, its write batch and the ``meta`` counters committed with it.

    The base of :class:`~edge_runtime.delivery.spool.Spool`, which holds the queue operations.
    Every method takes ``_lock`` (re-entrant) around the single connection; the ``_`` methods
    expect it held.
    """

    def __init__(self, path: Path, options: SpoolOptions, conn: sqlite3.Connection, lock_fd: int) -> None:
        self.path = path
        self.options = options
        self._conn: sqlite3.Connection | None = conn
        self._lock_fd = lock_fd
        self._lock = threading.RLock()
        self._interval_s = options.commit_interval_ms / 1000.0
        self._in_txn = False
        self._txn_started = 0.0
        self._uncommitted = 0
        self._load_state()

    @classmethod
    def open(cls: type[_Opened], path: str | Path, options: SpoolOptions | None = None) -> _Opened:
        """Open (or create) the spool at ``path``, locked for this process.

        Raises :class:`ConfigError` naming the path when it is not an SQLite database, not a
        spool, written by a newer schema, or in use by another process.
        """
        options = options or SpoolOptions()
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"spool {path}: is a directory; give a file path (--spool)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"spool {path}: cannot open: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(lock_fd)
            raise ConfigError(f"spool {path}: in use by another process (one daemon per spool file)") from exc
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=5.0)
            _prepare(conn, path, options)
            return cls(path, options, conn, lock_fd)
        except sqlite3.DatabaseError as exc:
            close_spool_file(conn, lock_fd)
            raise ConfigError(
                f"spool {path}: not a readable SQLite database ({exc}); move it aside to start an empty spool"
            ) from exc
        except BaseException:
            close_spool_file(conn, lock_fd)
            raise

    def _load_state(self) -> None:
        conn = self._connection()
        row = conn.execute("SELECT next_seq, depth, bytes, dropped_overflow, expired FROM meta WHERE id = 0").fetchone()
        if row is None:
            raise ConfigError(f"spool {self.path}: the meta row is missing; move the file aside")
        next_seq, self._depth, self._bytes, self._dropped, self._expired = (int(v) for v in row)
        last = conn.execute("SELECT id, seq FROM messages ORDER BY id DESC LIMIT 1").fetchone()
        ever = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
        if last is not None and int(last[1]) >= next_seq:  # defensive: never re-issue a stored seq
            next_seq = int(last[1]) + 1
        self._next_seq = next_seq
        self._committed_next_seq = next_seq
        self._committed_max_id = max(int(ever[0]) if ever else 0, int(last[0]) if last else 0)
        self._last_id = self._committed_max_id

    # -- the batch -------------------------------------------------------------------------
    def flush(self) -> None:
        """Commit the open batch (every message appended so far is then durable)."""
        with self._lock:
            self._connection()
            self._commit()

    def flush_if_due(self) -> bool:
        """Commit the open batch if it is older than ``commit_interval_ms``; True if it did."""
        with self._lock:
            self._connection()
            return self._commit_if_due()

    def seconds_until_commit(self) -> float | None:
        """When the open batch becomes due (0.0: now), or ``None`` when nothing is uncommitted."""
        with self._lock:
            if not self._in_txn:
                return None
            return max(0.0, self._txn_started + self._interval_s - time.monotonic())

    # -- internals (call with the lock held) -------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise SpoolError(f"spool {self.path}: used after close()")
        return self._conn

    def _begin(self) -> None:
        if not self._in_txn:
            self._connection().execute("BEGIN IMMEDIATE")
            self._in_txn = True
            self._txn_started = time.monotonic()

    def _commit(self) -> None:
        if not self._in_txn:
            return
        conn = self._connection()
        with self._storage_errors("commit"):
            conn.execute(
                "UPDATE meta SET next_seq = ?, depth = ?, bytes = ?, dropped_overflow = ?, expired = ? WHERE id = 0",
                (self._next_seq, self._depth, self._bytes, self._dropped, self._expired),
            )
            conn.execute("COMMIT")
        self._in_txn = False
        self._uncommitted = 0
        self._committed_next_seq = self._next_seq
        self._committed_max_id = self._last_id

    def _commit_if_due(self) -> bool:
        if self._in_txn and time.monotonic() - self._txn_started >= self._interval_s:
            self._commit()
            return True
        return False

    @contextlib.contextmanager
    def _storage_errors(self, what: str) -> Iterator[None]:
        """Turn an SQLite failure into SpoolError; the open batch is rolled back and the
        in-memory state reloaded from the last commit (those appends are lost, and logged)."""
        try:
            yield
        except sqlite3.Error as exc:
            lost = self._uncommitted
            conn = self._connection()
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            self._in_txn = False
            self._uncommitted = 0
            self._load_state()
            logger.error("spool %s: %s failed (%s); rolled back %d uncommitted appends", self.path, what, exc, lost)
            raise SpoolError(f"spool {self.path}: {what} failed: {exc} ({lost} uncommitted appends lost)") from exc


def _prepare(conn: sqlite3.Connection, path: Path, options: SpoolOptions) -> None:
    """Check that ``conn`` is a spool of a schema we read (or create one), set the pragmas."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if app_id == 0 and version == 0:
        if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise ConfigError(f"spool {path}: an SQLite database but not an edge-runtime spool; give another --spool")
    elif app_id != APPLICATION_ID:
        raise ConfigError(f"spool {path}: an SQLite database but not an edge-runtime spool; give another --spool")
    elif version > SCHEMA_VERSION:
        raise ConfigError(
            f"spool {path}: written by a newer edge-runtime (spool schema {version}, this one reads"
            f" {SCHEMA_VERSION}); upgrade edge-runtime or give another --spool"
        )
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise ConfigError(f"spool {path}: the file system does not support SQLite WAL (journal mode {mode})")
    conn.execute(f"PRAGMA synchronous = {options.synchronous.upper()}")
    conn.execute("PRAGMA journal_size_limit = 16777216")  # truncate the WAL back to 16 MiB after checkpoints
    if app_id == 0:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO meta VALUES (0, 0, 0, 0, 0, 0, ?)", (time.time(),))
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        logger.info("spool %s: created (schema %d)", path, SCHEMA_VERSION)


def close_spool_file(conn: sqlite3.Connection | None, lock_fd: int) -> None:
    """Close ``conn`` (when there is one), then release the lock; errors are ignored."""
    # The connection first: closing our own descriptor of the file must not drop SQLite's locks.
    if conn is not None:
        with contextlib.suppress(sqlite3.Error):
            conn.close()
    with contextlib.suppress(OSError):
        os.close(lock_fd)
