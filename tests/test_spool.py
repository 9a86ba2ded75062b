"""The SQLite spool: order, seqs, bounds, expiry, and durability across a real SIGKILL."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.delivery.spool import Spool
from edge_runtime.delivery.spool_file import APPLICATION_ID, SpoolError, SpoolOptions
from edge_runtime.errors import ConfigError

TOPIC = "edge/dev1/results"

# A writer process: appends with the seq embedded in the payload, flushes every K appends and
# prints the last flushed seq (printed => committed). With K=0 it appends `n` unflushed
# messages after a flushed prefix and prints "ready".
WRITER = r"""
import sys
from edge_runtime.delivery.spool import Spool
from edge_runtime.delivery.spool_file import SpoolOptions

path, sync, interval, n, k, prefix = sys.argv[1], sys.argv[2], float(sys.argv[3]), *map(int, sys.argv[4:7])
spool = Spool.open(path, SpoolOptions(synchronous=sync, commit_interval_ms=interval))
for _ in range(prefix):
    spool.append_with("t", lambda seq: seq.to_bytes(8, "big") + bytes(300))
spool.flush()
print("flushed", spool.next_seq - 1, flush=True)
for i in range(n):
    msg = spool.append_with("t", lambda seq: seq.to_bytes(8, "big") + bytes(300))
    if k and (i + 1) % k == 0:
        spool.flush()
        print("flushed", msg.seq, flush=True)
print("ready", flush=True)
sys.stdin.read()  # wait to be killed
"""


def open_spool(path: Path, **options: Any) -> Spool:
    return Spool.open(path, SpoolOptions(**options))


def seqs(messages: list[Any]) -> list[int]:
    return [m.seq for m in messages]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_rows": 0}, "max_rows"),
        ({"max_rows": 1.5}, "max_rows"),
        ({"max_rows": True}, "max_rows"),
        ({"max_bytes": -1}, "max_bytes"),
        ({"synchronous": "ful"}, "synchronous"),
        ({"commit_interval_ms": -1}, "commit_interval_ms"),
        ({"commit_interval_ms": float("nan")}, "commit_interval_ms"),
        ({"reserve_bytes": 0}, "reserve_bytes"),
        ({"reserve_bytes": 1.5}, "reserve_bytes"),
        ({"reserve_bytes": True}, "reserve_bytes"),
    ],
)
def test_options_are_validated(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        SpoolOptions(**options)


def test_unbounded_options_are_allowed() -> None:
    assert SpoolOptions(max_rows=None, max_bytes=None, commit_interval_ms=0).max_rows is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"qos": 3}, "qos"), ({"expiry_s": 0}, "expiry_s"), ({"expiry_s": "5"}, "expiry_s")],
)
def test_message_fields_are_validated(tmp_path: Path, kwargs: dict[str, Any], field: str) -> None:
    with open_spool(tmp_path / "s.db") as spool, pytest.raises(ConfigError, match=field):
        spool.append(TOPIC, b"x", **kwargs)


def test_append_pending_ack_in_order(tmp_path: Path) -> None:
    with open_spool(tmp_path / "s.db", commit_interval_ms=0) as spool:
        sent = [spool.append(TOPIC, f"m{i}".encode(), qos=i % 2) for i in range(10)]
        assert [m.id for m in sent] == sorted(m.id for m in sent)
        pending = spool.pending(4)
        assert seqs(pending) == [0, 1, 2, 3]
        assert [m.payload for m in pending] == [b"m0", b"m1", b"m2", b"m3"]
        assert [m.qos for m in pending] == [0, 1, 0, 1]
        assert seqs(spool.pending(3, exclude={pending[0].id, pending[1].id})) == [2, 3, 4]
        assert spool.ack([m.id for m in pending] + [9999]) == 4  # unknown ids are ignored
        assert seqs(spool.pending(100)) == [4, 5, 6, 7, 8, 9]
        assert seqs(spool.newest(3)) == [9, 8, 7]
        stats = spool.stats()
        assert (stats.depth, stats.bytes, stats.next_seq) == (6, 6 * (2 + len(TOPIC)), 10)


def test_readers_see_only_committed_messages(tmp_path: Path) -> None:
    with open_spool(tmp_path / "s.db", commit_interval_ms=60_000) as spool:
        assert spool.seconds_until_commit() is None
        spool.append(TOPIC, b"a")
        spool.append(TOPIC, b"b")
        assert spool.pending(10) == []  # not durable yet: never handed to the publisher
        assert spool.stats().uncommitted == 2
        assert spool.committed_next_seq == 0
        assert 0 < (spool.seconds_until_commit() or 0) <= 60
        assert spool.flush_if_due() is False
        spool.flush()
        assert seqs(spool.pending(10)) == [0, 1]
        assert spool.committed_next_seq == 2
        spool.append(TOPIC, b"c", durable=True)
        assert seqs(spool.pending(10)) == [0, 1, 2]


def test_commit_when_the_interval_has_passed(tmp_path: Path) -> None:
    with open_spool(tmp_path / "s.db", commit_interval_ms=20) as spool:
        spool.append(TOPIC, b"a")
        assert spool.committed_next_seq == 0
        time.sleep(0.03)
        spool.append(TOPIC, b"b")  # the batch is due: this append commits both
        assert spool.committed_next_seq == 2
        spool.append(TOPIC, b"c")
        time.sleep(0.03)
        assert seqs(spool.pending(10)) == [0, 1, 2]  # a read commits a due batch


def test_seq_is_gapless_and_persisted(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with open_spool(path) as spool:
        for _ in range(5):
            spool.append_with(TOPIC, lambda seq: f"seq={seq}".encode())
        with pytest.raises(ZeroDivisionError):
            spool.append_with(TOPIC, lambda seq: bytes(1 // 0))  # a failing build uses no seq
        assert spool.next_seq == 5
        spool.flush()
        spool.ack([m.id for m in spool.pending(10)])  # empty spool: the seq lives in meta
    with open_spool(path) as spool:
        assert spool.stats().depth == 0
        msg = spool.append_with(TOPIC, lambda seq: f"seq={seq}".encode())
        assert (msg.seq, msg.payload) == (5, b"seq=5")
        assert msg.id == 6  # ids are never reused either
        assert spool.raise_next_seq(100) == 100
        assert spool.raise_next_seq(50) == 100
    with open_spool(path) as spool:
        assert spool.next_seq == 100


def test_interleaved_alternates_live_and_backlog(tmp_path: Path) -> None:
    with open_spool(tmp_path / "s.db", commit_interval_ms=0) as spool:
        for i in range(6):
            spool.append(TOPIC, f"old{i}".encode())
        boundary = spool.last_id
        for i in range(3):
            spool.append(TOPIC, f"new{i}".encode())
        got = [m.payload.decode() for m in spool.interleaved(20, boundary)]
        assert got == ["new0", "old0", "new1", "old1", "new2", "old2", "old3", "old4", "old5"]
        assert len(spool.interleaved(4, boundary)) == 4
        in_flight = {m.id for m in spool.interleaved(2, boundary)}
        got = [m.payload.decode() for m in spool.interleaved(4, boundary, exclude=in_flight)]
        assert got == ["new1", "old1", "new2", "old2"]


def test_expired_messages_are_deleted_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with open_spool(path, commit_interval_ms=0) as spool:
        short = spool.append(TOPIC, b"short", expiry_s=0.05)
        spool.append(TOPIC, b"forever")
        spool.append(TOPIC, b"long", expiry_s=3600)
        assert short.remaining_expiry_s(short.created) == pytest.approx(0.05)
        time.sleep(0.1)
        assert [m.payload for m in spool.pending(10)] == [b"forever", b"long"]
        assert spool.stats().expired == 1
        assert spool.expire(now=time.time() + 7200) == 1
        stats = spool.stats()
        assert (stats.depth, stats.expired) == (1, 2)
    with open_spool(path) as spool:
        assert spool.stats().expired == 2


def test_overflow_drops_the_oldest_by_rows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "s.db"
    with caplog.at_level(logging.WARNING, logger="edge_runtime.delivery.spool"):
        with open_spool(path, max_rows=5) as spool:
            for i in range(8):
                spool.append(TOPIC, bytes([i]))
            spool.flush()
            assert seqs(spool.pending(10)) == [3, 4, 5, 6, 7]
            assert spool.stats().dropped_overflow == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "dropped 1 oldest" in warnings[0]  # the first drop is reported at once
    assert "dropped_overflow=3" in warnings[-1]  # the rest when closing (rate-limited)
    with open_spool(path, max_rows=5) as spool:
        stats = spool.stats()
        assert (stats.depth, stats.dropped_overflow, stats.next_seq) == (5, 3, 8)


def test_overflow_drops_the_oldest_by_bytes(tmp_path: Path) -> None:
    size = 100 + len(TOPIC)
    with open_spool(tmp_path / "s.db", max_bytes=5 * size, commit_interval_ms=0) as spool:
        for _ in range(8):
            spool.append(TOPIC, bytes(100))
        stats = spool.stats()
        assert (stats.depth, stats.bytes, stats.dropped_overflow) == (5, 5 * size, 3)
        big = spool.append(TOPIC, bytes(10 * size))  # larger than the bound: kept alone, never dropped
        assert seqs(spool.pending(10)) == [big.seq]
        assert spool.stats().dropped_overflow == 8


def test_mark_attempt(tmp_path: Path) -> None:
    with open_spool(tmp_path / "s.db", commit_interval_ms=0) as spool:
        a = spool.append(TOPIC, b"a")
        spool.append(TOPIC, b"b")
        spool.mark_attempt([a.id])
        spool.mark_attempt([a.id, a.id])  # duplicates count once per call
        assert [m.attempts for m in spool.pending(10)] == [2, 0]


@pytest.mark.parametrize(("synchronous", "interval"), [("normal", 5.0), ("normal", 0.0), ("full", 5.0)])
def test_sigkill_keeps_everything_committed(tmp_path: Path, synchronous: str, interval: float) -> None:
    path = tmp_path / "s.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), synchronous, str(interval), "10000000", "37", "0"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    flushed = -1
    try:
        for line in proc.stdout:
            flushed = int(line.split()[1])
            if flushed >= 37 * 40:
                break
        time.sleep(0.05)  # let it run on: commits by interval and more flushes, then kill mid-stream
        os.kill(proc.pid, signal.SIGKILL)
        rest, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, stderr
    for line in rest.split("\n")[:-1]:  # whole lines printed after we stopped reading (a kill can cut the last)
        parts = line.split()
        if len(parts) == 2 and parts[0] == "flushed" and parts[1].isdigit():
            flushed = int(parts[1])
    with open_spool(path) as spool:
        stored = spool.pending(10_000_000)
        stored_seqs = seqs(stored)
        assert stored_seqs == list(range(len(stored)))  # contiguous from 0, no gaps
        assert len(stored) >= flushed + 1  # every flushed message is there
        assert all(int.from_bytes(m.payload[:8], "big") == m.seq for m in stored)
        assert spool.next_seq == len(stored)
        assert spool.append(TOPIC, b"after").seq == len(stored)
    print(f"{synchronous}/{interval} ms: last flushed seq {flushed}, stored {len(stored)} after SIGKILL")


def test_sigkill_loses_exactly_the_uncommitted_batch(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), "normal", "600000", "25", "0", "10"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().split() == ["flushed", "9"]
        assert proc.stdout.readline().strip() == "ready"  # 25 appends returned, not committed
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    with open_spool(path) as spool:
        assert seqs(spool.pending(100)) == list(range(10))
        assert spool.next_seq == 10  # the lost seqs were never published: issued again


def test_power_loss_mode_sets_synchronous_full(tmp_path: Path) -> None:
    for mode, level in (("normal", 1), ("full", 2)):
        with open_spool(tmp_path / f"{mode}.db", synchronous=mode) as spool:
            conn = spool._conn
            assert conn is not None
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == level
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            spool.append(TOPIC, b"x", durable=True)
            assert len(spool.pending(10)) == 1


def test_corrupt_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    path.write_bytes(b"this is not a database, just some bytes " * 200)
    with pytest.raises(ConfigError, match=r"spool .*spool\.db: not a readable SQLite database"):
        Spool.open(path)


def test_other_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE things (x)")
    conn.close()
    with pytest.raises(ConfigError, match="not an edge-runtime spool"):
        Spool.open(path)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    open_spool(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(ConfigError, match=r"newer edge-runtime .*schema 99"):
        Spool.open(path)


def test_one_owner_per_file(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with open_spool(path), pytest.raises(ConfigError, match="in use by another process"):
        Spool.open(path)
    open_spool(path).close()  # released on close
    with pytest.raises(ConfigError, match="is a directory"):
        Spool.open(tmp_path)


def test_use_after_close(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.db")
    spool.close()
    spool.close()
    with pytest.raises(SpoolError, match="after close"):
        spool.append(TOPIC, b"x")


def test_output_and_network_threads_share_a_spool(tmp_path: Path) -> None:
    total = 3000
    acked: list[int] = []
    with open_spool(tmp_path / "s.db", commit_interval_ms=1) as spool:
        done = threading.Event()

        def publisher() -> None:
            while not (done.is_set() and spool.stats().depth == 0):
                batch = spool.pending(50)
                spool.mark_attempt(m.id for m in batch)
                acked.extend(m.seq for m in batch)
                spool.ack(m.id for m in batch)
                if not batch:
                    time.sleep(spool.seconds_until_commit() or 0.001)

        thread = threading.Thread(target=publisher)
        thread.start()
        for _ in range(total):
            spool.append(TOPIC, bytes(64))
        spool.flush()
        done.set()
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert acked == list(range(total))


def test_open_with_a_large_backlog(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    rows = 50_000
    with open_spool(path, commit_interval_ms=60_000, max_rows=None) as spool:
        for _ in range(rows):
            spool.append(TOPIC, bytes(300))
    t0 = time.perf_counter()
    with open_spool(path, max_rows=None) as spool:
        opened = time.perf_counter() - t0
        stats = spool.stats()
        assert (stats.depth, stats.next_seq) == (rows, rows)
        assert seqs(spool.pending(2)) == [0, 1]
    print(f"open with {rows} rows: {opened * 1000:.1f} ms")


# -- identity, the commit hook, oldest_seq, schema 1 files --------------------------------------

# A spool as schema 1 wrote it (before the identity and the full-disk totals).
SCHEMA_1 = """
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL,
    expiry_s REAL, created REAL NOT NULL, seq INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL
);
CREATE INDEX messages_deadline ON messages (created + expiry_s) WHERE expiry_s IS NOT NULL;
CREATE TABLE meta (
    id INTEGER PRIMARY KEY CHECK (id = 0), next_seq INTEGER NOT NULL, depth INTEGER NOT NULL,
    bytes INTEGER NOT NULL, dropped_overflow INTEGER NOT NULL, expired INTEGER NOT NULL, created REAL NOT NULL
);
"""


def write_schema_1(path: Path, seqs: list[int], dropped: int) -> None:
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA_1)
    for seq in seqs:
        conn.execute(
            "INSERT INTO messages (topic, payload, qos, created, seq, size) VALUES (?, ?, 1, ?, ?, ?)",
            (TOPIC, f"v1-{seq}".encode(), time.time(), seq, len(TOPIC) + len(f"v1-{seq}")),
        )
    size = sum(len(TOPIC) + len(f"v1-{seq}") for seq in seqs)
    conn.execute("INSERT INTO meta VALUES (0, ?, ?, ?, ?, 0, ?)", (seqs[-1] + 1, len(seqs), size, dropped, time.time()))
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def test_identity_is_made_once_and_kept_in_the_file(tmp_path: Path) -> None:
    with open_spool(tmp_path / "a.db") as a, open_spool(tmp_path / "b.db") as b:
        identity = a.identity
        assert len(identity) == 16 and int(identity, 16) >= 0
        assert b.identity != identity  # random per file
    with open_spool(tmp_path / "a.db") as a:
        assert a.identity == identity
    conn = sqlite3.connect(tmp_path / "a.db")
    assert conn.execute("SELECT identity FROM meta").fetchone()[0] == identity
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()
    (tmp_path / "a.db").unlink()  # a spool deleted and made again is another spool
    with open_spool(tmp_path / "a.db") as a:
        assert a.identity != identity


def test_schema_1_file_is_migrated_with_a_new_identity(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "v1.db"
    write_schema_1(path, [7, 8, 9], dropped=4)
    with caplog.at_level(logging.INFO, logger="edge_runtime.delivery.spool_schema"), open_spool(path) as spool:
        identity = spool.identity
        assert len(identity) == 16
        assert [m.payload for m in spool.pending(10)] == [b"v1-7", b"v1-8", b"v1-9"]
        stats = spool.stats()
        assert (stats.depth, stats.next_seq, stats.dropped_overflow, stats.unspooled, stats.lost) == (3, 10, 4, 0, 0)
        assert spool.oldest_seq() == 7
        assert spool.append(TOPIC, b"new").seq == 10
    assert any("migrated from schema 1" in r.getMessage() for r in caplog.records)
    with open_spool(path) as spool:
        assert spool.identity == identity  # migrated once
        assert seqs(spool.pending(10)) == [7, 8, 9, 10]


def test_on_commit_gets_the_committed_next_seq_after_each_commit(tmp_path: Path) -> None:
    calls: list[int] = []
    with open_spool(tmp_path / "s.db", commit_interval_ms=60_000) as spool:
        assert calls == []
        spool.on_commit = calls.append
        spool.append(TOPIC, b"a")
        spool.append(TOPIC, b"b")
        assert calls == []  # not committed yet
        spool.flush()
        assert calls == [2] and spool.committed_next_seq == 2
        spool.flush()
        assert calls == [2]  # nothing to commit: no call
        spool.append(TOPIC, b"c", durable=True)
        spool.ack([m.id for m in spool.pending(1)])
        spool.raise_next_seq(100)
        assert calls == [2, 3, 100]  # the ack was committed with the raise
    assert calls == [2, 3, 100]  # close had nothing left to commit
    calls.clear()
    with open_spool(tmp_path / "s.db", commit_interval_ms=0) as spool:
        spool.on_commit = calls.append
        spool.append(TOPIC, b"d")
        assert calls == [101]


def test_on_commit_errors_are_logged_once_and_never_fail_the_spool(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    failures = iter([OSError("disk gone"), OSError("disk gone"), ValueError("other"), OSError("disk gone")])

    def hook(next_seq: int) -> None:
        raise next(failures)

    with caplog.at_level(logging.ERROR), open_spool(tmp_path / "s.db", commit_interval_ms=0) as spool:
        spool.on_commit = hook
        for _ in range(4):
            spool.append(TOPIC, b"x")
        assert seqs(spool.pending(10)) == [0, 1, 2, 3]  # every commit went through
        assert spool.committed_next_seq == 4
    errors = [r.getMessage() for r in caplog.records if "on_commit" in r.getMessage()]
    assert len(errors) == 2, errors  # once per distinct message
    assert "OSError: disk gone" in errors[0] and "ValueError: other" in errors[1]


def test_oldest_seq(tmp_path: Path) -> None:
    with open_spool(tmp_path / "s.db", max_rows=3, commit_interval_ms=60_000) as spool:
        assert spool.oldest_seq() is None
        spool.append(TOPIC, b"a")
        assert spool.oldest_seq() == 0  # held, even before the commit
        for _ in range(3):
            spool.append(TOPIC, b"b")
        assert spool.oldest_seq() == 1  # seq 0 dropped by max_rows
        spool.flush()
        spool.ack([m.id for m in spool.pending(2)])
        assert spool.oldest_seq() == 3
        spool.ack([m.id for m in spool.pending(10)])
        assert spool.oldest_seq() is None
        assert spool.next_seq == 4
