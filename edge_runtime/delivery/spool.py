"""SQLite store-and-forward queue: results are durable here before they are published.

The output thread appends each encoded result; the MQTT thread reads what is pending,
publishes it and acks it on PUBACK, which deletes it. A broker outage only makes the spool
deeper (bounded by ``max_rows`` / ``max_bytes``, dropping the oldest, counted); a crash of the
process loses nothing that was committed. A full disk never makes ``append`` raise: the spool
goes ``disk_full`` and hands messages back unstored (below).

Example::

    with Spool.open("/var/lib/edge-runtime/spool.sqlite", SpoolOptions()) as spool:
        msg = spool.append_with("edge/cam1/results", lambda seq: encode(result, seq=seq))
        if not msg.stored:                    # a full disk: publish it live, or count it lost
            publish_now(msg) or spool.count_lost(1)
        for m in spool.pending(100):          # committed messages only, oldest first
            publish(m.topic, m.payload, qos=m.qos)
        spool.ack([m.id for m in acked])

CLI: ``edge-runtime run --bundle B --source S --broker mqtt://host --spool /path/spool.sqlite``

**Durability.** Writes are batched in one SQLite transaction, committed by
``commit_interval_ms``, ``append(durable=True)``, ``flush()`` and ``close()``; readers only see
committed messages. The contract (what survives a kill, a power loss) is in
:mod:`edge_runtime.delivery.spool_file`, with :class:`SpoolOptions`; the file format is in
:mod:`edge_runtime.delivery.spool_schema`.

**Sequence numbers.** ``seq`` is the message number of docs/protocol.md §7: gapless per spool file,
assigned by ``append``, persisted in the ``meta`` table in the same transaction as the message.
``append_with(topic, build)`` passes the seq to ``build`` so it can be embedded in the payload.
``oldest_seq()`` is the smallest seq still held; ``SpoolFile.identity`` names the file and
``SpoolFile.on_commit`` is called with ``committed_next_seq`` after every commit.

**A full disk.** The contract (headroom, reserve, ``disk_full``, ``unspooled`` / ``lost``,
recovery) is in :mod:`edge_runtime.delivery.spool_space`.

**Threads.** One ``Spool`` may be shared by the output thread and the MQTT network thread: every
method takes one lock around the single connection (opened with ``check_same_thread=False``).
One process owns a spool file at a time (an ``flock`` on the file); a second ``open`` fails.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from edge_runtime.delivery.spool_file import DiskFullError, SpoolFile, SpoolOptions, close_spool_file
from edge_runtime.delivery.spool_records import SpooledMessage, SpoolStats, check_message
from edge_runtime.delivery.spool_space import ROW_OVERHEAD

logger = logging.getLogger(__name__)

LOSS_REPORT_INTERVAL_S = 60.0
#: How often the readers delete expired messages (each check scans the table).
EXPIRE_CHECK_INTERVAL_S = 1.0
_CHUNK = 500  # ids per IN (...) statement: below SQLite's oldest variable limit (999)

_COLUMNS = "id, topic, payload, qos, expiry_s, created, seq, attempts"


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def _marks(n: int) -> str:
    return ",".join("?" * n)


class Spool(SpoolFile):
    """An opened spool file; build with :meth:`open`, release with :meth:`close` or ``with``."""

    def __init__(self, path: Path, options: SpoolOptions, conn: sqlite3.Connection, lock_fd: int) -> None:
        self._unreported_dropped = 0
        self._unreported_expired = 0
        self._unreported_unspooled = 0
        self._unreported_lost = 0
        self._last_report = -math.inf
        self._last_expire = -math.inf
        super().__init__(path, options, conn, lock_fd)

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
        committed (``durable=True``: before this returns). While ``disk_full`` the message is
        not stored (``stored`` False); its seq is used all the same."""
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
        check_message(topic, qos, expiry_s)
        with self._lock:
            self._connection()
            seq = self._next_seq
            payload = bytes(build(seq))
            size = len(payload) + len(topic.encode("utf-8"))
            created = time.time()
            now = time.monotonic()
            guard = self._guard
            if guard.full:
                self._maybe_resume()
            elif guard.check_due(size, now):
                guard.check(self._connection(), size, now, self._batch_bytes, self._bytes)
            if guard.full:
                return self._unstored(topic, payload, qos, expiry_s, created, seq)
            try:
                with self._storage_errors("append"):
                    self._begin(now)
                    self._make_room(size)
                    cursor = self._write(
                        "INSERT INTO messages (topic, payload, qos, expiry_s, created, seq, attempts, size)"
                        " VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
                        (topic, payload, qos, expiry_s, created, seq, size),
                        size,
                    )
            except DiskFullError:  # the batch was given up (counted); this one goes back unstored
                return self._unstored(topic, payload, qos, expiry_s, created, seq)
            msg_id = int(cursor.lastrowid or 0)
            self._last_id = msg_id
            self._next_seq = seq + 1
            self._depth += 1
            self._bytes += size
            self._uncommitted += 1
            self._batch_bytes += size + ROW_OVERHEAD
            if durable or now - self._txn_started >= self._interval_s:
                self._commit()
                if self._committed_max_id < msg_id:  # the commit was given up: lost with its batch...
                    self._lost -= 1  # ...except this one, which the caller can still publish live
                    self._next_seq = seq
                    return self._unstored(topic, payload, qos, expiry_s, created, seq)
            self._report_losses()
            return SpooledMessage(msg_id, topic, payload, qos, expiry_s, created, seq, 0)

    def count_lost(self, n: int = 1) -> None:
        """Count ``n`` unstored messages (``stored`` False) that could not be published either:
        the ``lost`` total, committed with the next batch."""
        if n <= 0:
            return
        with self._lock:
            self._connection()
            self._lost += n
            self._unreported_lost += n
            with self._storage_errors("count_lost"):
                self._begin()  # so that a due commit (flush_if_due, a read) writes the total
            self._report_losses()

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
        a message may have been dropped or expired while in flight). While ``disk_full`` the
        ack is committed before this returns, and :class:`DiskFullError` (a SpoolError) means
        it was not: keep the ids and ack them again later."""
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
                        self._write(f"DELETE FROM messages WHERE id IN ({_marks(len(part))})", part)
                        removed += int(n)
                        self._depth -= int(n)
                        self._bytes -= int(size)
            if self._guard.full:  # one ack per transaction: its WAL pages stay few, and a failure is seen here
                if not self._commit():
                    raise DiskFullError(f"spool {self.path}: the disk is full: the ack could not be committed")
            else:
                self._commit_if_due()
            return removed

    def mark_attempt(self, ids: Iterable[int]) -> None:
        """Count one more publish attempt for each message (not while ``disk_full``: only a
        counter, it is not worth the WAL pages)."""
        unique = sorted(set(ids))
        if not unique or self._guard.full:
            return
        with self._lock:
            self._connection()
            with self._storage_errors("mark_attempt"):
                self._begin()
                for part in _chunks(unique):
                    self._write(f"UPDATE messages SET attempts = attempts + 1 WHERE id IN ({_marks(len(part))})", part)
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
            try:
                with self._storage_errors("expire"):
                    self._begin()
                    for part in _chunks([r[0] for r in rows]):
                        self._write(f"DELETE FROM messages WHERE id IN ({_marks(len(part))})", part)
            except DiskFullError:
                return 0  # nothing deleted: tried again on the next check
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

    def oldest_seq(self) -> int | None:
        """The smallest seq still held (committed or in the open batch), ``None`` when empty."""
        with self._lock:
            row = self._connection().execute("SELECT seq FROM messages ORDER BY id LIMIT 1").fetchone()
            return None if row is None else int(row[0])

    @property
    def last_id(self) -> int:
        """The id of the newest committed message (0 when none was ever stored)."""
        with self._lock:
            return self._committed_max_id

    def stats(self) -> SpoolStats:
        """Depth, bytes, loss counters, seqs and the full-disk state."""
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
                disk_full=self._guard.full,
                unspooled=self._unspooled,
                lost=self._lost,
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
                close_spool_file(conn, self._lock_fd)

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- internals (call with the lock held) -------------------------------------------------
    def _prepare_read(self) -> int:
        self._maybe_resume()
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
        bound = self._guard.bound_bytes  # free space is short: the spool stops growing
        if bound is not None:
            max_bytes = bound if max_bytes is None else min(max_bytes, bound)
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
        self._write("DELETE FROM messages WHERE id <= ?", (last_id,))
        self._depth -= n
        self._bytes -= freed
        self._dropped += n
        self._unreported_dropped += n

    def _unstored(
        self, topic: str, payload: bytes, qos: int, expiry_s: float | None, created: float, seq: int
    ) -> SpooledMessage:
        """``disk_full``: use ``seq`` (committed at once: a meta page, no new row) and hand the
        message back unstored, counted in ``unspooled``."""
        with self._storage_errors("append"):
            self._begin()
        self._next_seq = max(self._next_seq, seq + 1)
        self._unspooled += 1
        self._unreported_unspooled += 1
        self._commit()
        self._report_losses()
        return SpooledMessage(0, topic, payload, qos, expiry_s, created, seq, 0)

    def _report_losses(self, force: bool = False) -> None:
        if not (
            self._unreported_dropped or self._unreported_expired or self._unreported_unspooled or self._unreported_lost
        ):
            return
        now = time.monotonic()
        if not force and now - self._last_report < LOSS_REPORT_INTERVAL_S:
            return
        if self._unreported_dropped or self._unreported_expired:
            logger.warning(
                "spool %s: dropped %d oldest messages (bounds max_rows=%s, max_bytes=%s) and %d expired messages"
                " since the last report; totals dropped_overflow=%d expired=%d, depth=%d",
                self.path, self._unreported_dropped, self.options.max_rows, self.options.max_bytes,
                self._unreported_expired, self._dropped, self._expired, self._depth,
            )  # fmt: skip
        if self._unreported_unspooled or self._unreported_lost:
            logger.warning(
                "spool %s: disk full: %d messages not stored and %d lost since the last report; totals"
                " unspooled=%d lost=%d, depth=%d",
                self.path, self._unreported_unspooled, self._unreported_lost, self._unspooled, self._lost, self._depth,
            )  # fmt: skip
        self._unreported_dropped = self._unreported_expired = 0
        self._unreported_unspooled = self._unreported_lost = 0
        self._last_report = now
