"""SQLite store-and-forward queue: results are durable here before they are published.

The output thread appends each encoded result; the MQTT thread reads what is pending,
publishes it and acks it on PUBACK, which deletes it. A broker outage only makes the spool
deeper (bounded by ``max_rows`` / ``max_bytes``, dropping the oldest, counted); a crash of the
process loses nothing that was committed.

Example::

    with Spool.open("/var/lib/edge-runtime/spool.sqlite", SpoolOptions()) as spool:
        msg = spool.append_with("edge/cam1/results", lambda seq: encode(result, seq=seq))
        for m in spool.pending(100):          # committed messages only, oldest first
            publish(m.topic, m.payload, qos=m.qos)
        spool.ack([m.id for m in acked])

CLI: ``edge-runtime run --bundle B --source S --broker mqtt://host --spool /path/spool.sqlite``

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
Journal mode is WAL. With ``synchronous="normal"`` every committed message survives a kill of
the process (SIGKILL, OOM killer, a crash): the WAL frames are in the OS page cache. A power
loss may roll back the last commits (the database stays consistent). ``synchronous="full"``
fsyncs the WAL at every commit, so committed messages also survive a power loss; it costs
an fsync per batch (measured in ``benchmarks/spool_durability.py``).

Appends not yet committed when the process dies are lost: at most the appends of the last
``commit_interval_ms`` while appends keep coming, or since the last commit when they stop (call
``flush_if_due()`` on idle ticks). This is safe for the wire: readers only ever see committed
messages, so nothing uncommitted is ever published, and a lost ``seq`` is simply issued again
after the restart (seqs stay gapless: ``next_seq`` and the messages commit in one transaction).
Acks and attempt counts are batched too; a lost ack means one re-publish (at-least-once), which
the subscriber de-duplicates on (device, epoch, seq).

**Sequence numbers.** ``seq`` is the message number of DESIGN.md §8: gapless per spool file,
assigned by ``append``, persisted in the ``meta`` table in the same transaction as the message.
``append_with(topic, build)`` passes the seq to ``build`` so it can be embedded in the payload.

**Threads.** One ``Spool`` may be shared by the output thread and the MQTT network thread: every
method takes one lock around the single connection (opened with ``check_same_thread=False``).
One process owns a spool file at a time (an ``flock`` on the file); a second ``open`` fails.

**Bounds.** ``max_bytes`` counts the bytes of topics and payloads, not SQLite's overhead nor the
file size (freed pages are reused, the file does not shrink).
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
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from edge_runtime.errors import ConfigError, EdgeRuntimeError, close_matches

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
APPLICATION_ID = 0x45445350  # "EDSP": marks the file as an edge-runtime spool
SYNCHRONOUS_MODES = ("normal", "full")
LOSS_REPORT_INTERVAL_S = 60.0
#: How often the readers delete expired messages (each check scans the table).
EXPIRE_CHECK_INTERVAL_S = 1.0
_CHUNK = 500  # ids per IN (...) statement: below SQLite's oldest variable limit (999)

_COLUMNS = "id, topic, payload, qos, expiry_s, created, seq, attempts"
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
    one, the oldest messages are dropped (counted). ``synchronous``: ``"normal"`` survives a
    process kill, ``"full"`` also a power loss. ``commit_interval_ms``: how long a batch of
    writes may stay uncommitted (0: commit on every append).
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


@dataclass(frozen=True)
class SpooledMessage:
    """One stored message. ``id`` orders messages (never reused); ``seq`` is its message number."""

    id: int
    topic: str
    payload: bytes
    qos: int
    expiry_s: float | None
    created: float
    seq: int
    attempts: int

    def remaining_expiry_s(self, now: float | None = None) -> float | None:
        """Seconds left before the message expires (for MQTT v5 message expiry), or ``None``."""
        if self.expiry_s is None:
            return None
        return self.created + self.expiry_s - (time.time() if now is None else now)


@dataclass(frozen=True)
class SpoolStats:
    """The state of a spool. ``bytes``: topics + payloads; ``dropped_overflow`` / ``expired``:
    totals over the life of the file; ``oldest_age_s``: ``None`` when empty; ``uncommitted``:
    appends in the open batch."""

    depth: int
    bytes: int
    dropped_overflow: int
    expired: int
    next_seq: int
    oldest_age_s: float | None
    committed_next_seq: int
    uncommitted: int


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def _marks(n: int) -> str:
    return ",".join("?" * n)


class Spool:
    """An opened spool file; build with :meth:`open`, release with :meth:`close` or ``with``."""

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
        self._unreported_dropped = 0
        self._unreported_expired = 0
        self._last_report = -math.inf
        self._last_expire = -math.inf
        self._load_state()

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, options: SpoolOptions | None = None) -> Spool:
        """Open (or create) the spool at ``path``.

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
            raise ConfigError(f"spool {path}: cannot open: {exc.strerror or exc}") from None
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock_fd)
            raise ConfigError(f"spool {path}: in use by another process (one daemon per spool file)") from None
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=5.0)
            _prepare(conn, path, options)
            return cls(path, options, conn, lock_fd)
        except sqlite3.DatabaseError as exc:
            _close_quietly(conn, lock_fd)
            raise ConfigError(
                f"spool {path}: not a readable SQLite database ({exc}); move it aside to start an empty spool"
            ) from None
        except BaseException:
            _close_quietly(conn, lock_fd)
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

    # -- writing ---------------------------------------------------------------------------
    @property
    def next_seq(self) -> int:
        """The seq the next append will get."""
        with self._lock:
            return self._next_seq

    @property
    def committed_next_seq(self) -> int:
        """Every message with a smaller seq was committed (is durable per the policy)."""
        with self._lock:
            return self._committed_next_seq

    def append(
        self,
        topic: str,
        payload: bytes | bytearray | memoryview,
        *,
        qos: int = 1,
        expiry_s: float | None = None,
        durable: bool = False,
    ) -> SpooledMessage:
        """Store one message and give it the next seq; see the module docstring for when it is
        committed (``durable=True``: before this returns)."""
        data = bytes(payload)
        return self.append_with(topic, lambda _seq: data, qos=qos, expiry_s=expiry_s, durable=durable)

    def append_with(
        self,
        topic: str,
        build: Callable[[int], bytes | bytearray | memoryview],
        *,
        qos: int = 1,
        expiry_s: float | None = None,
        durable: bool = False,
    ) -> SpooledMessage:
        """Like :meth:`append`, with the payload made by ``build(seq)`` under the spool's lock,
        so the seq can be embedded in it. If ``build`` raises, the seq is not used."""
        _check_message(topic, qos, expiry_s)
        with self._lock:
            conn = self._connection()
            seq = self._next_seq
            payload = bytes(build(seq))
            size = len(payload) + len(topic.encode("utf-8"))
            created = time.time()
            with self._storage_errors("append"):
                self._begin()
                self._make_room(size)
                cursor = conn.execute(
                    "INSERT INTO messages (topic, payload, qos, expiry_s, created, seq, attempts, size)"
                    " VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
                    (topic, payload, qos, expiry_s, created, seq, size),
                )
            msg_id = int(cursor.lastrowid or 0)
            self._last_id = msg_id
            self._next_seq = seq + 1
            self._depth += 1
            self._bytes += size
            self._uncommitted += 1
            if durable or time.monotonic() - self._txn_started >= self._interval_s:
                self._commit()
            self._report_losses()
            return SpooledMessage(msg_id, topic, payload, qos, expiry_s, created, seq, 0)

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

    def raise_next_seq(self, minimum: int) -> int:
        """Make ``next_seq`` at least ``minimum`` (e.g. a seq saved before the spool existed);
        never lowers it. Returns the new ``next_seq``; commits the open batch."""
        with self._lock:
            self._connection()
            if minimum > self._next_seq:
                with self._storage_errors("raise_next_seq"):
                    self._begin()
                self._next_seq = minimum
                self._commit()
            return self._next_seq

    def ack(self, ids: Iterable[int]) -> int:
        """Delete acknowledged messages; returns how many existed (unknown ids are ignored:
        a message may have been dropped or expired while in flight)."""
        unique = sorted(set(ids))
        if not unique:
            return 0
        with self._lock:
            conn = self._connection()
            removed = 0
            with self._storage_errors("ack"):
                self._begin()
                for part in _chunks(unique):
                    n, size = conn.execute(
                        f"SELECT count(*), total(size) FROM messages WHERE id IN ({_marks(len(part))})", part
                    ).fetchone()
                    if n:
                        conn.execute(f"DELETE FROM messages WHERE id IN ({_marks(len(part))})", part)
                        removed += int(n)
                        self._depth -= int(n)
                        self._bytes -= int(size)
            self._commit_if_due()
            return removed

    def mark_attempt(self, ids: Iterable[int]) -> None:
        """Count one more publish attempt for each message."""
        unique = sorted(set(ids))
        if not unique:
            return
        with self._lock:
            conn = self._connection()
            with self._storage_errors("mark_attempt"):
                self._begin()
                for part in _chunks(unique):
                    conn.execute(f"UPDATE messages SET attempts = attempts + 1 WHERE id IN ({_marks(len(part))})", part)
            self._commit_if_due()

    def expire(self, now: float | None = None) -> int:
        """Delete messages past their expiry (``created + expiry_s < now``); returns how many.
        The readers call it; the total is in ``stats().expired``."""
        now = time.time() if now is None else now
        with self._lock:
            conn = self._connection()
            rows = conn.execute(
                "SELECT id, size FROM messages WHERE expiry_s IS NOT NULL AND created + expiry_s < ?", (now,)
            ).fetchall()
            if not rows:
                return 0
            with self._storage_errors("expire"):
                self._begin()
                for part in _chunks([r[0] for r in rows]):
                    conn.execute(f"DELETE FROM messages WHERE id IN ({_marks(len(part))})", part)
            self._depth -= len(rows)
            self._bytes -= sum(int(r[1]) for r in rows)
            self._expired += len(rows)
            self._unreported_expired += len(rows)
            self._report_losses()
            return len(rows)

    # -- reading ---------------------------------------------------------------------------
    def pending(self, limit: int, *, exclude: Collection[int] = ()) -> list[SpooledMessage]:
        """Up to ``limit`` committed messages, oldest first, leaving out ``exclude`` (in flight)."""
        with self._lock:
            bound = self._prepare_read()
            return self._select("id <= ?", (bound,), "id", limit, exclude)

    def newest(self, limit: int, *, exclude: Collection[int] = ()) -> list[SpooledMessage]:
        """Up to ``limit`` committed messages, newest first."""
        with self._lock:
            bound = self._prepare_read()
            return self._select("id <= ?", (bound,), "id DESC", limit, exclude)

    def interleaved(self, limit: int, live_after_id: int, *, exclude: Collection[int] = ()) -> list[SpooledMessage]:
        """Up to ``limit`` committed messages alternating live (``id > live_after_id``) and
        backlog (``id <= live_after_id``), each oldest first, live first; when one side runs
        out the other fills the rest. A publisher sets ``live_after_id`` to the newest id when it
        (re)connects, so a long backlog drains without delaying the present."""
        with self._lock:
            bound = self._prepare_read()
            backlog = self._select("id <= ?", (min(bound, live_after_id),), "id", limit, exclude)
            live = self._select("id > ? AND id <= ?", (live_after_id, bound), "id", limit, exclude)
        out: list[SpooledMessage] = []
        for i in range(max(len(live), len(backlog))):
            if i < len(live):
                out.append(live[i])
            if i < len(backlog):
                out.append(backlog[i])
        return out[:limit]

    @property
    def last_id(self) -> int:
        """The id of the newest committed message (0 when none was ever stored)."""
        with self._lock:
            return self._committed_max_id

    def stats(self) -> SpoolStats:
        """Depth, bytes, loss counters and seqs."""
        with self._lock:
            conn = self._connection()
            oldest = conn.execute("SELECT created FROM messages ORDER BY id LIMIT 1").fetchone()
            return SpoolStats(
                depth=self._depth,
                bytes=self._bytes,
                dropped_overflow=self._dropped,
                expired=self._expired,
                next_seq=self._next_seq,
                oldest_age_s=None if oldest is None else max(0.0, time.time() - float(oldest[0])),
                committed_next_seq=self._committed_next_seq,
                uncommitted=self._uncommitted,
            )

    # -- releasing -------------------------------------------------------------------------
    def close(self) -> None:
        """Commit the open batch and release the file. Safe to call twice."""
        with self._lock:
            if self._conn is None:
                return
            try:
                self._commit()
                self._report_losses(force=True)
            finally:
                conn, self._conn = self._conn, None
                _close_quietly(conn, self._lock_fd)

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

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

    def _prepare_read(self) -> int:
        now = time.monotonic()
        if now - self._last_expire >= EXPIRE_CHECK_INTERVAL_S:  # a scan of the table: not per batch
            self._last_expire = now
            self.expire()
        self._commit_if_due()
        return self._committed_max_id

    def _select(
        self, where: str, params: tuple[Any, ...], order: str, limit: int, exclude: Collection[int]
    ) -> list[SpooledMessage]:
        if limit <= 0:
            return []
        rows = self._connection().execute(
            f"SELECT {_COLUMNS} FROM messages WHERE {where} ORDER BY {order} LIMIT ?",
            (*params, limit + len(exclude)),
        )
        skip = exclude if isinstance(exclude, (set, frozenset)) else set(exclude)
        out: list[SpooledMessage] = []
        for row in rows:
            if row[0] in skip:
                continue
            out.append(SpooledMessage(*row))
            if len(out) >= limit:
                break
        return out

    def _make_room(self, size: int) -> None:
        """Drop the oldest messages so that one more of ``size`` bytes fits the bounds."""
        max_rows, max_bytes = self.options.max_rows, self.options.max_bytes
        rows_over = 0 if max_rows is None else self._depth + 1 - max_rows
        bytes_over = 0 if max_bytes is None else self._bytes + size - max_bytes
        if rows_over <= 0 and bytes_over <= 0:
            return
        conn = self._connection()
        n = freed = 0
        last_id: int | None = None
        cursor = conn.execute("SELECT id, size FROM messages ORDER BY id")
        try:
            for msg_id, msg_size in cursor:
                if n >= rows_over and freed >= bytes_over:
                    break
                n += 1
                freed += int(msg_size)
                last_id = int(msg_id)
        finally:
            cursor.close()
        if last_id is None:
            return  # a single message larger than max_bytes: kept alone, never the new one dropped
        conn.execute("DELETE FROM messages WHERE id <= ?", (last_id,))
        self._depth -= n
        self._bytes -= freed
        self._dropped += n
        self._unreported_dropped += n

    def _report_losses(self, force: bool = False) -> None:
        if not (self._unreported_dropped or self._unreported_expired):
            return
        now = time.monotonic()
        if not force and now - self._last_report < LOSS_REPORT_INTERVAL_S:
            return
        logger.warning(
            "spool %s: dropped %d oldest messages (bounds max_rows=%s, max_bytes=%s) and %d expired messages"
            " since the last report; totals dropped_overflow=%d expired=%d, depth=%d",
            self.path, self._unreported_dropped, self.options.max_rows, self.options.max_bytes,
            self._unreported_expired, self._dropped, self._expired, self._depth,
        )  # fmt: skip
        self._unreported_dropped = self._unreported_expired = 0
        self._last_report = now

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


def _check_message(topic: str, qos: int, expiry_s: float | None) -> None:
    if not isinstance(topic, str) or not topic:
        raise ConfigError(f"spool message topic: must be a non-empty string, got {topic!r}")
    if qos not in (0, 1, 2) or isinstance(qos, bool):
        raise ConfigError(f"spool message qos: must be 0, 1 or 2, got {qos!r}")
    if expiry_s is not None and (
        isinstance(expiry_s, bool)
        or not isinstance(expiry_s, (int, float))
        or not math.isfinite(expiry_s)
        or expiry_s <= 0
    ):
        raise ConfigError(f"spool message expiry_s: must be a number > 0 or None, got {expiry_s!r}")


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


def _close_quietly(conn: sqlite3.Connection | None, lock_fd: int) -> None:
    # The connection first: closing our own descriptor of the file must not drop SQLite's locks.
    if conn is not None:
        with contextlib.suppress(sqlite3.Error):
            conn.close()
    with contextlib.suppress(OSError):
        os.close(lock_fd)
