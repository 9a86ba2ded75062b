"""The spool's SQLite file: ownership, options, the batched write transaction and its durability.

:class:`~edge_runtime.delivery.spool.Spool` is built on :class:`SpoolFile`; open a spool with
``Spool.open`` (:meth:`SpoolFile.open`); the names here are the options and the errors.

Example::

    options = SpoolOptions(max_rows=10_000, synchronous="full", commit_interval_ms=20)
    with Spool.open("/var/lib/edge-runtime/spool.sqlite", options) as spool:
        spool.on_commit = lambda next_seq: ...   # after every COMMIT (e.g. a seq high-water mark)
        ...

**The file.** One process owns a spool file at a time (an ``flock`` on the file); a second open
fails with :class:`ConfigError`. Its format: :mod:`edge_runtime.delivery.spool_schema`.

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
in ``benchmarks/spool_durability.py``). :attr:`SpoolFile.on_commit` is called after every
commit with ``committed_next_seq`` (its errors are logged once per distinct message).

Appends not yet committed when the process dies are lost: at most the appends of the last
``commit_interval_ms`` while appends keep coming, or since the last commit when they stop (call
``flush_if_due()`` on idle ticks). This is safe for the wire: readers only ever see committed
messages, so nothing uncommitted is ever published, and a lost ``seq`` is simply issued again
after the restart (seqs stay gapless: ``next_seq`` and the messages commit in one transaction).
Acks and attempt counts are batched too; a lost ack means one re-publish (at-least-once), which
the subscriber de-duplicates on (device, epoch, seq).

**A full disk** (headroom, ``<spool>.reserve``, ``disk_full``): :mod:`edge_runtime.delivery.spool_space`.
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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from edge_runtime.delivery.spool_schema import APPLICATION_ID as APPLICATION_ID  # re-exported (tests)
from edge_runtime.delivery.spool_schema import prepare
from edge_runtime.delivery.spool_space import (
    DEFAULT_RESERVE_BYTES,
    DiskSpace,
    Journal,
    SpaceGuard,
    is_full,
    release_reserve_of,
    short_of_space,
)
from edge_runtime.delivery.spool_space import reserve_path as reserve_path  # re-exported (tests, benchmarks)
from edge_runtime.errors import ConfigError, EdgeRuntimeError, close_matches

logger = logging.getLogger(__name__)

SYNCHRONOUS_MODES = ("normal", "full")
_HOOK_ERRORS_LOGGED = 32
_Opened = TypeVar("_Opened", bound="SpoolFile")


class SpoolError(EdgeRuntimeError):
    """The spool could not be written or read while running (disk full, I/O error, closed)."""


class DiskFullError(SpoolError):
    """A write failed with SQLITE_FULL even after the reserve was released: the open batch was
    given up (its appends counted in ``lost``). ``ack`` and ``mark_attempt`` raise it (keep the
    ids and try again later); ``append`` never does (it hands the message back unstored)."""


@dataclass(frozen=True)
class SpoolOptions:
    """How a spool stores messages.

    ``max_rows`` / ``max_bytes``: bounds (``None``: unbounded); when an append would exceed
    one, the oldest messages are dropped (counted). ``max_bytes`` counts the bytes of topics and
    payloads, not SQLite's overhead nor the file size (freed pages are reused, the file does not
    shrink). ``synchronous``: ``"normal"`` survives a process kill, ``"full"`` also a power loss.
    ``commit_interval_ms``: how long a batch of writes may stay uncommitted (0: commit on every
    append). ``reserve_bytes``: the size of ``<spool>.reserve``, the space released so that acks
    and commits succeed on a full disk (at most 1/8 of the file system is used; ``None``: no
    reserve). ``free_space_bound``: when the file system runs short, stop growing and drop the
    oldest before it is full (False: grow until ``disk_full``). See "A full disk" in
    :mod:`edge_runtime.delivery.spool_space`.
    """

    max_rows: int | None = 100_000
    max_bytes: int | None = 256 * 1024 * 1024
    synchronous: Literal["normal", "full"] = "normal"
    commit_interval_ms: float = 5.0
    reserve_bytes: int | None = DEFAULT_RESERVE_BYTES
    free_space_bound: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.free_space_bound, bool):
            raise ConfigError(f"spool option free_space_bound: must be true or false, got {self.free_space_bound!r}")
        for name in ("max_rows", "max_bytes", "reserve_bytes"):
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
    expect it held. Writes of a batch go through :meth:`_write`, which keeps them (``_journal``)
    for a replay after SQLITE_FULL; ``_guard`` holds the ``disk_full`` state (both: :mod:`.spool_space`).
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
        #: Called with ``committed_next_seq`` after every successful COMMIT (with the spool's lock
        #: held: keep it short). An exception in it is logged once per distinct message and
        #: never fails the spool.
        self.on_commit: Callable[[int], None] | None = None
        self._hook_errors: set[str] = set()
        self._journal = Journal()
        self._unspooled = self._lost = 0
        self._batch_bytes = 0  # appended in the open batch: the WAL needs about as much to commit it
        self._load_state()
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        self._guard = SpaceGuard(path, DiskSpace(path, options.reserve_bytes, page_size))
        self._guard.bound_enabled = options.free_space_bound
        self._guard.setup(conn)

    @classmethod
    def open(cls: type[_Opened], path: str | Path, options: SpoolOptions | None = None) -> _Opened:
        """Open (or create) the spool at ``path``, locked for this process.

        Raises :class:`ConfigError` naming the path when it is not an SQLite database, not a
        spool, written by a newer schema, or in use by another process. On a full disk it opens
        in the ``disk_full`` state (see :mod:`edge_runtime.delivery.spool_space`).
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
        for attempt in (1, 2):
            conn: sqlite3.Connection | None = None
            try:
                conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=5.0)
                prepare(conn, path, options.synchronous)
                return cls(path, options, conn, lock_fd)
            except sqlite3.DatabaseError as exc:
                full = short_of_space(exc, path)
                if full and attempt == 1 and release_reserve_of(path):
                    # SQLite needs a few pages to open a WAL database (its -shm index) or set it up
                    logger.warning("spool %s: the disk is full (%s): released the reserve to open the spool", path, exc)
                    if conn is not None:
                        with contextlib.suppress(sqlite3.Error):
                            conn.close()
                    continue
                close_spool_file(conn, lock_fd)
                if full:
                    raise ConfigError(
                        f"spool {path}: the disk is full ({exc}): SQLite cannot open the spool; free some space"
                    ) from exc
                raise ConfigError(
                    f"spool {path}: not a readable SQLite database ({exc}); move it aside to start an empty spool"
                ) from exc
            except BaseException:
                close_spool_file(conn, lock_fd)
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    @property
    def identity(self) -> str:
        """A random token made when the spool file was created (or migrated from schema 1), stored
        in it: a file replaced, truncated or restored from elsewhere has another one."""
        return self._identity

    @property
    def disk_full(self) -> bool:
        """True while appends are not stored for lack of disk space (see :mod:`.spool_space`)."""
        with self._lock:
            return self._guard.full

    def _load_state(self) -> None:
        conn = self._connection()
        row = conn.execute(
            "SELECT next_seq, depth, bytes, dropped_overflow, expired, identity, unspooled, lost FROM meta WHERE id = 0"
        ).fetchone()
        if row is None:
            raise ConfigError(f"spool {self.path}: the meta row is missing; move the file aside")
        next_seq, self._depth, self._bytes, self._dropped, self._expired = (int(v) for v in row[:5])
        self._identity = str(row[5] or "")
        # monotonic totals: counts made since the last commit are not taken back by a reload
        self._unspooled = max(self._unspooled, int(row[6]))
        self._lost = max(self._lost, int(row[7]))
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
        """Commit the open batch if it is older than ``commit_interval_ms``; True if it did.
        While ``disk_full`` it also looks for free space (at most once a second)."""
        with self._lock:
            self._connection()
            self._maybe_resume()
            return self._commit_if_due()

    def seconds_until_commit(self) -> float | None:
        """When the open batch becomes due (0.0: now), or ``None`` when nothing is uncommitted."""
        with self._lock:
            if not self._in_txn:
                return None
            return max(0.0, self._txn_started + self._interval_s - time.monotonic())

    def check_space(self) -> bool:
        """Look at the free space now (appends do every ``headroom/4`` bytes or every second):
        enter ``disk_full`` when it is short, or leave it when it is back. Returns ``disk_full``."""
        with self._lock:
            conn = self._connection()
            if self._guard.full:
                self._maybe_resume(force=True)
            else:
                self._guard.check(conn, 0, time.monotonic(), self._batch_bytes, self._bytes)
            return self._guard.full

    # -- internals (call with the lock held) -------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise SpoolError(f"spool {self.path}: used after close()")
        return self._conn

    def _begin(self, now: float | None = None) -> None:
        if not self._in_txn:
            self._connection().execute("BEGIN IMMEDIATE")
            self._in_txn = True
            self._txn_started = time.monotonic() if now is None else now
            self._journal.reset()
            self._batch_bytes = 0

    def _write(self, sql: str, params: Sequence[Any] = (), weight: int = 0) -> sqlite3.Cursor:
        """Execute one write statement of the open batch. It is kept until the batch commits
        (``weight``: the bytes its parameters hold beyond a few numbers, e.g. a payload): after
        SQLITE_FULL the reserve is released and the batch replayed (:meth:`_recover_full`);
        raises :class:`DiskFullError` when even that fails (the batch is then given up)."""
        conn = self._connection()
        try:
            cursor = conn.execute(sql, params)
        except sqlite3.Error as exc:
            if not is_full(exc):
                raise
            self._recover_full(exc)
            try:
                cursor = conn.execute(sql, params)
            except sqlite3.Error as again:
                if not is_full(again):
                    raise
                self._give_up(again)
                raise DiskFullError(f"spool {self.path}: the disk is full: {again}") from again
        self._journal.record(sql, params, weight)
        return cursor

    def _commit(self) -> bool:
        """Commit the open batch; False when it had to be given up. On a full disk it never
        raises: the batch is committed after releasing the reserve, or given up (its appends
        counted in ``lost``)."""
        if not self._in_txn:
            return True
        try:
            self._commit_once()
        except sqlite3.Error as exc:
            if not is_full(exc):
                self._fail("commit", exc)
            try:
                self._recover_full(exc)
                self._commit_once()
            except DiskFullError:
                return False
            except sqlite3.Error as again:
                if not is_full(again):
                    self._fail("commit", again)
                self._give_up(again)
                return False
        self._in_txn = False
        self._uncommitted = 0
        self._journal.reset()
        self._guard.batch_lost_logged = False
        self._committed_next_seq = self._next_seq
        self._committed_max_id = self._last_id
        self._call_on_commit()
        return True

    def _commit_once(self) -> None:
        conn = self._connection()
        conn.execute(
            "UPDATE meta SET next_seq = ?, depth = ?, bytes = ?, dropped_overflow = ?, expired = ?, unspooled = ?,"
            " lost = ? WHERE id = 0",
            (self._next_seq, self._depth, self._bytes, self._dropped, self._expired, self._unspooled, self._lost),
        )
        conn.execute("COMMIT")

    def _commit_if_due(self) -> bool:
        if self._in_txn and time.monotonic() - self._txn_started >= self._interval_s:
            self._commit()
            return True
        return False

    def _call_on_commit(self) -> None:
        hook = self.on_commit
        if hook is None:
            return
        try:
            hook(self._committed_next_seq)
        except Exception as exc:  # never into the spool's caller
            message = f"{type(exc).__name__}: {exc}"
            if message in self._hook_errors or len(self._hook_errors) >= _HOOK_ERRORS_LOGGED:
                return
            self._hook_errors.add(message)
            logger.error("spool %s: on_commit failed (logged once per distinct error): %s", self.path, message)

    def _rollback(self) -> None:
        """Roll the open batch back (if SQLite still has one open); no batch is open after it."""
        conn = self._connection()
        with contextlib.suppress(sqlite3.Error):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        self._in_txn = False

    def _fail(self, what: str, exc: sqlite3.Error) -> None:
        """An SQLite failure other than a full disk: roll the batch back, reload the in-memory
        state from the last commit (those appends are lost, and logged) and raise SpoolError."""
        lost = self._uncommitted
        self._rollback()
        self._uncommitted = 0
        self._load_state()
        logger.error("spool %s: %s failed (%s); rolled back %d uncommitted appends", self.path, what, exc, lost)
        raise SpoolError(f"spool {self.path}: {what} failed: {exc} ({lost} uncommitted appends lost)") from exc

    @contextlib.contextmanager
    def _storage_errors(self, what: str) -> Iterator[None]:
        """Turn an SQLite failure (not a full disk: :meth:`_write` handles that) into SpoolError."""
        try:
            yield
        except sqlite3.Error as exc:
            self._fail(what, exc)

    # -- a full disk (call with the lock held; the policy is in spool_space) -------------------
    def _maybe_resume(self, force: bool = False) -> None:
        """While ``disk_full``, look for free space (at most once a second unless ``force``)."""
        if self._guard.full:
            self._guard.maybe_resume(
                self._connection(), self._depth == 0, self._shrink, lambda: (self._unspooled, self._lost), force
            )

    def _shrink(self) -> None:
        """Give an emptied spool's pages back to the file system: commit, VACUUM, truncate the WAL."""
        self._commit()
        if not self._in_txn:
            self._guard.vacuum(self._connection())

    def _recover_full(self, exc: sqlite3.Error) -> None:
        """After SQLITE_FULL: roll back, release the reserve, checkpoint the WAL (so that the
        replay reuses its pages) and replay the batch's writes in a new transaction. Gives the
        batch up and raises :class:`DiskFullError` when the replay fails too."""
        conn = self._connection()
        self._rollback()
        self._guard.make_room(conn, exc)
        if not self._journal.replayable:
            self._give_up(exc)
            raise DiskFullError(f"spool {self.path}: the disk is full: {exc} (the batch was too large to replay)")
        try:
            self._journal.replay(conn)
        except sqlite3.Error as again:
            if not is_full(again):
                self._fail("replay after a full disk", again)
            self._give_up(again)
            raise DiskFullError(f"spool {self.path}: the disk is full: {again}") from again
        self._in_txn = True

    def _give_up(self, exc: sqlite3.Error) -> None:
        """The batch cannot be written: roll it back, count its appends in ``lost`` and keep
        their seqs used (a gap the subscriber sees, never a seq issued twice)."""
        self._rollback()
        lost, next_seq = self._uncommitted, self._next_seq
        self._uncommitted = 0
        self._journal.reset()
        self._load_state()
        self._next_seq = max(self._next_seq, next_seq)
        self._lost += lost
        self._guard.batch_lost(exc, lost)


def close_spool_file(conn: sqlite3.Connection | None, lock_fd: int) -> None:
    """Close ``conn`` (when there is one), then release the lock; errors are ignored."""
    # The connection first: closing our own descriptor of the file must not drop SQLite's locks.
    if conn is not None:
        with contextlib.suppress(sqlite3.Error):
            conn.close()
    with contextlib.suppress(OSError):
        os.close(lock_fd)
