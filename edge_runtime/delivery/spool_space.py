"""Disk space under a spool: the full-disk contract, the free-space checks, the reserve file,
the WAL checkpoint policy and the replay of a batch after SQLITE_FULL.

:class:`~edge_runtime.delivery.spool_file.SpoolFile` holds one :class:`SpaceGuard` (the
``disk_full`` state, the checks that enter and leave it, the reserve) and one :class:`Journal`
(the write statements of its open batch, for a replay); the functions are what opening a spool
on a full disk needs. The spool calls them with its lock held.

**A full disk (degrade, never crash).** The spool keeps the file system from filling under it
and keeps a way out when something else fills it (tested on real 2 MiB file systems in
``tests/test_spool_disk_full.py``; measured by ``benchmarks/spool_durability.py --small-fs``):

* *Headroom.* Appends check the free space (``statvfs``, every ``headroom/4`` appended bytes or
  every second): when the room left — the file system's free bytes plus SQLite's free pages
  inside the file, less the open batch — falls below the *headroom* (twice the WAL's
  checkpoint size: 128 KiB on a tiny volume, 7.8 MiB from 125 MiB up), the spool enters the
  **disk_full** state *before* SQLite hits ENOSPC. The WAL is checkpointed every 1/32 of the
  file system (16 to 1000 pages), so it never holds more than a small part of it (an
  unbounded WAL on a 2 MiB volume is what made the database uncheckpointable, and every ack
  fail, when it filled).
* *A bound from free space.* Before that, when the room falls below
  :data:`BOUND_ROOM_FACTOR` headrooms, the spool stops growing: its byte size then is its bound
  and each new result drops the oldest (counted in ``dropped_overflow``, as the ``max_bytes``
  bound does: the freshest results are the ones kept, and the freed pages are reused). The
  bound is lifted once the room is :data:`LIFT_ROOM_FACTOR` headrooms again.
  (``SpoolOptions.free_space_bound=False`` turns it off: the spool then grows until disk_full.)
* *Reserve.* ``<spool>.reserve`` holds ``reserve_bytes`` (1 MiB; at most 1/8 of the file
  system), allocated with ``posix_fallocate`` while there is room. When SQLite does fail with
  SQLITE_FULL (another writer took the headroom), the reserve is deleted, the WAL checkpointed
  and the batch replayed (its write statements are kept until it commits) and committed: the
  batch, its acks and the ``next_seq`` are not lost. Only when even that fails is the batch
  given up: its appends are counted in ``lost`` and their seqs stay used (a gap the
  subscriber reports, never a seq issued twice). Opening a spool on a full disk (SQLite needs
  a few pages for its ``-shm`` index) releases the reserve too, and opens it ``disk_full``.
* *disk_full.* An append stores nothing: it returns the message with ``id`` 0
  (:attr:`~edge_runtime.delivery.spool.SpooledMessage.stored` False), counts it in
  ``unspooled`` and commits the advanced ``next_seq`` at once (one meta page in the WAL, which
  the checkpoints keep reusing), so the seq of a message published live is durable before it
  is published. The caller publishes it live or, when it cannot, reports it with
  ``count_lost`` (``lost``). Reads and expiry work as usual; every ``ack`` is committed before
  it returns (one small transaction: deleting a message writes about its size to the WAL),
  and raises :class:`~edge_runtime.delivery.spool_file.DiskFullError` if it could not be: the
  caller keeps the ids and acks them later, instead of publishing them again. Attempt counts
  are not written.
* *Recovery.* While disk_full, the free space is looked at every second (on appends, reads,
  ``flush_if_due`` and ``check_space``): once the room less a missing reserve is twice the
  headroom, and the file system itself has room for the WAL to grow by a checkpoint, the
  reserve is allocated again and spooling resumes (logged once per episode). An emptied spool
  whose reserve is gone is vacuumed first, so that its pages go back to the file system.

``disk_full``, ``unspooled`` and ``lost`` are in ``stats()``; ``unspooled`` and ``lost`` are
totals over the life of the file (committed with the batches, like ``dropped_overflow``). On
copy-on-write file systems (btrfs, ZFS) deleting the reserve may not free space at once.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RESERVE_SUFFIX = ".reserve"
DEFAULT_RESERVE_BYTES = 1024 * 1024
#: How often a disk_full spool looks for free space again (and a spool checks its free space at the latest).
SPACE_CHECK_INTERVAL_S = 1.0
ROW_OVERHEAD = 64  # bytes of SQLite record and index overhead per message, for the space estimate
JOURNAL_MAX_BYTES = 8 * 1024 * 1024  # a larger batch is not kept for a replay after SQLITE_FULL
_SQLITE_FULL = 13


def reserve_path(path: str | Path) -> Path:
    """The reserve file of the spool at ``path``: ``<spool>.reserve``."""
    path = Path(path)
    return path.with_name(path.name + RESERVE_SUFFIX)


def is_full(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's "database or disk is full" (ENOSPC underneath)."""
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if isinstance(code, int):
        return code & 0xFF == _SQLITE_FULL
    return "database or disk is full" in str(exc)


def short_of_space(exc: sqlite3.Error, path: Path) -> bool:
    """SQLITE_FULL, or an I/O error while the file system is (nearly) full: SQLite reports a
    -shm index it cannot extend as a "disk I/O error"."""
    if is_full(exc):
        return True
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    try:
        st = os.statvfs(path.parent)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 256 * 1024


def release_reserve_of(path: Path) -> bool:
    """Delete the reserve of the spool at ``path`` (to open or set up the file on a full disk)."""
    try:
        reserve_path(path).unlink()
    except OSError:
        return False
    return True


class DiskSpace:
    """The file system under a spool: free bytes, the reserve file, the headroom and WAL size.

    Measured once at open from the file system's size: ``wal_pages`` (the WAL checkpoint
    threshold, 1/32 of the file system, 16 to 1000 pages), ``headroom`` (twice that many bytes:
    the room below which appends stop), ``reserve_bytes`` (``reserve`` capped at 1/8 of the
    file system; 0: none) and ``check_every`` (appended bytes between two free-space checks).
    """

    def __init__(self, spool: Path, reserve: int | None, page_size: int) -> None:
        self.directory = spool.parent
        self.reserve_file = reserve_path(spool)
        self.page_size = page_size
        try:
            st = os.statvfs(self.directory)
            total: int | None = st.f_blocks * st.f_frsize
        except OSError:
            total = None
        self.total = total
        self.wal_pages = 1000 if total is None else max(16, min(1000, total // (32 * page_size)))
        self.headroom = 2 * self.wal_pages * page_size
        self.check_every = self.headroom // 4
        wanted = reserve or 0
        self.reserve_bytes = wanted if total is None else min(wanted, total // 8)

    def available(self) -> int | None:
        """Bytes an unprivileged process may still write there (``None``: unknown)."""
        try:
            st = os.statvfs(self.directory)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

    def reserve_held(self) -> bool:
        """Whether the reserve file is there with its blocks allocated (always True without one)."""
        if not self.reserve_bytes:
            return True
        try:
            st = os.stat(self.reserve_file)
        except OSError:
            return False
        return st.st_size >= self.reserve_bytes and st.st_blocks * 512 >= self.reserve_bytes

    def create_reserve(self) -> bool:
        """Allocate the reserve file (``posix_fallocate``); False (and no file) when it does not fit."""
        if not self.reserve_bytes:
            return True
        try:
            fd = os.open(self.reserve_file, os.O_WRONLY | os.O_CREAT, 0o600)
        except OSError as exc:
            logger.debug("spool reserve %s: %s", self.reserve_file, exc)
            return False
        try:
            os.posix_fallocate(fd, 0, self.reserve_bytes)
            os.ftruncate(fd, self.reserve_bytes)
        except OSError as exc:
            logger.debug("spool reserve %s: %s", self.reserve_file, exc)
            os.close(fd)
            self.release_reserve()
            return False
        os.close(fd)
        return True

    def release_reserve(self) -> bool:
        """Delete the reserve file; True if there was one."""
        try:
            os.unlink(self.reserve_file)
        except FileNotFoundError:
            return False
        except OSError as exc:
            logger.error("spool reserve %s: cannot delete it: %s", self.reserve_file, exc)
            return False
        return True


class Journal:
    """The write statements of the open batch, kept until it commits so that the batch can be
    replayed after SQLITE_FULL. A batch whose statements hold more than :data:`JOURNAL_MAX_BYTES`
    is not kept (``replayable`` False): after SQLITE_FULL it is given up."""

    def __init__(self) -> None:
        self._statements: list[tuple[str, Sequence[Any]]] | None = []
        self._bytes = 0

    def reset(self) -> None:
        """A new batch (or none): nothing kept."""
        self._statements = []
        self._bytes = 0

    def record(self, sql: str, params: Sequence[Any], weight: int) -> None:
        """Keep one executed statement (``weight``: the bytes its parameters hold beyond a few numbers)."""
        if self._statements is None:
            return
        self._statements.append((sql, params))
        self._bytes += weight + 8 * len(params)
        if self._bytes > JOURNAL_MAX_BYTES:
            self._statements = None  # too large to keep: after SQLITE_FULL this batch is given up

    @property
    def replayable(self) -> bool:
        return self._statements is not None

    def replay(self, conn: sqlite3.Connection) -> None:
        """Begin a new transaction and run the kept statements again (the batch was rolled back)."""
        conn.execute("BEGIN IMMEDIATE")
        for sql, params in self._statements or ():
            conn.execute(sql, params)


#: Below this many headrooms of room, the spool stops growing and drops its oldest (counted).
BOUND_ROOM_FACTOR = 3
#: The bound is lifted once the room is this many headrooms again.
LIFT_ROOM_FACTOR = 6


class SpaceGuard:
    """The ``disk_full`` state of one open spool file and what enters and leaves it: the
    checkpoint policy, the free-space checks, the reserve, the vacuum of an emptied spool."""

    def __init__(self, path: Path, space: DiskSpace) -> None:
        self.path = path
        self.space = space
        #: True while appends are not stored for lack of disk space.
        self.full = False
        #: A lost batch was logged; the spool clears it at its next successful commit.
        self.batch_lost_logged = False
        #: Whether free space bounds the spool (``SpoolOptions.free_space_bound``).
        self.bound_enabled = True
        #: The byte size the spool is held to while free space is short (None: not bounded).
        self.bound_bytes: int | None = None
        self._since_check = 0
        self._last_check = -math.inf
        self._last_resume_check = -math.inf

    def setup(self, conn: sqlite3.Connection) -> None:
        """At open: the WAL checkpoint policy, the reserve file and a first look at the free space."""
        space = self.space
        conn.execute(f"PRAGMA wal_autocheckpoint = {space.wal_pages}")
        limit = min(16 * 1024 * 1024, 4 * space.wal_pages * space.page_size)
        conn.execute(f"PRAGMA journal_size_limit = {limit}")  # the WAL file is cut back to this after checkpoints
        conn.execute("PRAGMA temp_store = MEMORY")  # VACUUM of an emptied spool needs no temp file
        if not space.reserve_bytes:
            space.reserve_file.unlink(missing_ok=True)  # a reserve left by an earlier configuration
        elif not space.reserve_held() and not space.create_reserve():
            self.enter(f"no room for the {space.reserve_bytes // 1024} KiB reserve")
            return
        self.check(conn, 0, time.monotonic(), 0)

    def free_page_bytes(self, conn: sqlite3.Connection) -> int:
        return int(conn.execute("PRAGMA freelist_count").fetchone()[0]) * self.space.page_size

    def check_due(self, size: int, now: float) -> bool:
        """Whether an append of ``size`` bytes should look at the free space (every
        ``check_every`` appended bytes or every second; ``now``: monotonic). Cheap: per append."""
        self._since_check += size + ROW_OVERHEAD
        return self._since_check >= self.space.check_every or now - self._last_check >= SPACE_CHECK_INTERVAL_S

    def check(
        self, conn: sqlite3.Connection, size: int, now: float, batch_bytes: int, spool_bytes: int | None = None
    ) -> None:
        """Enter ``disk_full`` when the room left (free bytes + free pages, less ``batch_bytes``
        of the open batch) is below the headroom (plus ``size``, the message about to be stored);
        before that, bound the spool at ``spool_bytes`` (its size now) when the room is below
        :data:`BOUND_ROOM_FACTOR` headrooms, and lift the bound at :data:`LIFT_ROOM_FACTOR`."""
        self._since_check = 0
        self._last_check = now
        avail = self.space.available()
        if avail is None:
            return
        room = avail + self.free_page_bytes(conn) - batch_bytes
        headroom = self.space.headroom
        if room < headroom + size:
            self.enter(f"{max(0, room) // 1024} KiB left, below the {headroom // 1024} KiB headroom")
        elif self.bound_enabled and spool_bytes is not None and room < BOUND_ROOM_FACTOR * headroom:
            if self.bound_bytes is None:
                self.bound_bytes = max(spool_bytes, 1)
                logger.warning(
                    "spool %s: %d KiB left on its file system: the spool stops growing at %d KiB; new results"
                    " drop the oldest (counted in dropped_overflow) until there is room again",
                    self.path, room // 1024, self.bound_bytes // 1024,
                )  # fmt: skip
        elif self.bound_bytes is not None and room >= LIFT_ROOM_FACTOR * headroom:
            self.bound_bytes = None
            logger.info("spool %s: room again (%d KiB): the free-space bound is lifted", self.path, room // 1024)

    def enter(self, reason: str) -> None:
        if self.full:
            return
        self.full = True
        self._last_resume_check = time.monotonic()
        logger.warning(
            "spool %s: disk full (%s): new results are not stored (published live while the broker is"
            " connected, else counted lost) until free space is back; acks go on",
            self.path, reason,
        )  # fmt: skip

    def maybe_resume(
        self,
        conn: sqlite3.Connection,
        empty: bool,
        shrink: Callable[[], None],
        totals: Callable[[], tuple[int, int]],
        force: bool = False,
    ) -> None:
        """While ``disk_full``, at most once per SPACE_CHECK_INTERVAL_S (``force``: now): leave it
        when the room (less a missing reserve) is twice the headroom and the file system itself
        has room for the WAL to grow by a checkpoint's worth, after allocating the reserve again.
        ``empty``: the spool holds no message (``shrink`` then gives its pages back when that
        is what is missing); ``totals``: ``(unspooled, lost)`` for the log line."""
        if not self.full:
            return
        now = time.monotonic()
        if not force and now - self._last_resume_check < SPACE_CHECK_INTERVAL_S:
            return
        self._last_resume_check = now
        space = self.space
        avail = space.available()
        if avail is None:
            return
        missing = 0 if space.reserve_held() else space.reserve_bytes
        wal_bytes = space.wal_pages * space.page_size
        if missing and avail < missing + wal_bytes and empty:
            shrink()
            avail = space.available() or 0
        free_pages = self.free_page_bytes(conn)
        if avail - missing < wal_bytes or avail - missing + free_pages < 2 * space.headroom:
            return
        if missing and not space.create_reserve():
            return
        self.full = False
        self._since_check = 0
        self._last_check = now
        logger.warning(
            "spool %s: free space is back (%d KiB on the file system, %d KiB free inside the spool);"
            " spooling resumed (%d unspooled, %d lost so far)",
            self.path, (avail - missing) // 1024, free_pages // 1024, *totals(),
        )  # fmt: skip

    def vacuum(self, conn: sqlite3.Connection) -> None:
        """Give an emptied spool's pages back to the file system (no batch open): VACUUM, then
        truncate the WAL."""
        try:
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            logger.debug("spool %s: shrinking the emptied file failed: %s", self.path, exc)

    def batch_lost(self, exc: sqlite3.Error, lost: int) -> None:
        """A batch could not be committed even without the reserve (given up, ``lost`` appends
        counted): enter ``disk_full``; logged once until a commit succeeds again."""
        self.enter(f"SQLite: {exc}")
        if not self.batch_lost_logged:
            self.batch_lost_logged = True
            logger.error(
                "spool %s: the disk is full even without the reserve (%s): a batch could not be committed,"
                " %d uncommitted appends lost (counted in lost); logged again after the next commit",
                self.path, exc, lost,
            )  # fmt: skip

    def make_room(self, conn: sqlite3.Connection, exc: sqlite3.Error) -> None:
        """After SQLITE_FULL (the batch rolled back): release the reserve, enter ``disk_full`` and
        checkpoint the WAL, so that a replay of the batch reuses its pages."""
        if self.space.release_reserve():
            logger.warning(
                "spool %s: the disk is full (%s): released the %d KiB reserve so that the batch and the acks"
                " can be committed", self.path, exc, self.space.reserve_bytes // 1024,
            )  # fmt: skip
        self.enter(f"SQLite: {exc}")
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
