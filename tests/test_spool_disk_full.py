"""A full disk under the spool, on real small file systems (a 2 MiB tmpfs mounted per test):
the spool stops storing before the disk is full and never raises into its caller, its reserve
lets acks and the open batch commit when something else fills the disk, every message it could
not keep is counted, and spooling resumes when space is back. With a real mosquitto: results
are published live while the disk is full, and the backlog drains without a duplicate storm.

Mounting needs root (``mount -t tmpfs``); elsewhere these tests are skipped, saying so."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.codec import decode_payload
from edge_runtime.delivery.mqtt.publisher import MqttPublisher
from edge_runtime.delivery.mqtt.status import parse_status
from edge_runtime.delivery.spool import Spool, SpooledMessage
from edge_runtime.delivery.spool_file import SpoolOptions, reserve_path
from edge_runtime.errors import ConfigError
from tests.broker import MosquittoBroker, find_mosquitto, wait_for
from tests.test_daemon_durability import DEVICE as DAEMON
from tests.test_daemon_durability import start_daemon
from tests.test_mqtt import DEVICE, Subscriber, config, line

TOPIC = "edge/dev1/results"
RESULTS = f"edge/{DEVICE}/results"
STATUS = f"edge/{DEVICE}/status"
PAYLOAD = 300  # bytes, about a detection result
needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``small_fs("2m")``: a fresh tmpfs of that size mounted under ``tmp_path``, unmounted after
    the test. Skips when this process may not mount (not root, or no permission: a container)."""
    mounted: list[Path] = []

    def mount(size: str = "2m") -> Path:
        if os.geteuid() != 0:
            pytest.skip("a small real file system needs `mount -t tmpfs`, which needs root")
        target = tmp_path / f"vol{len(mounted)}"
        target.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(target)], capture_output=True)  # something still open


def free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def fill(folder: Path, name: str = "filler", leave: int = 0) -> Path:
    """Another writer: a file that takes all the free space of ``folder`` but ``leave`` bytes."""
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        block = b"\1" * 4096
        while free_bytes(folder) - len(block) >= leave:
            os.write(fd, block)
        with contextlib.suppress(OSError):
            while free_bytes(folder) > leave:
                os.write(fd, b"\1")
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return path


def append_until_full(spool: Spool, limit: int = 100_000) -> list[SpooledMessage]:
    """Append ~300 B messages (the seq in the payload) until one comes back unstored."""
    stored: list[SpooledMessage] = []
    for _ in range(limit):
        msg = spool.append_with(TOPIC, lambda seq: seq.to_bytes(8, "big") + bytes(PAYLOAD))
        if not msg.stored:
            return stored
        stored.append(msg)
    raise AssertionError(f"{limit} appends and the disk is not full")


def held_seqs(spool: Spool) -> list[int]:
    return [m.seq for m in spool.pending(1_000_000)]


def open_spool(path: Path, **options: Any) -> Spool:
    """A spool without the free-space bound unless asked: most tests here exercise the last
    resort (``disk_full``), which the bound keeps the spool's own growth from reaching."""
    options.setdefault("free_space_bound", False)
    return Spool.open(path, SpoolOptions(**options))


# -- the spool alone -----------------------------------------------------------------------------


def test_short_of_space_the_spool_stops_growing_and_drops_its_oldest(
    small_fs: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    """The default: before the disk is full the spool is bounded by the free space; new results
    drop the oldest (counted, the overflow policy), every new one is stored, the disk never
    fills and nothing is ``unspooled`` or ``lost``."""
    vol = small_fs("2m")
    with caplog.at_level(logging.WARNING), open_spool(vol / "spool.sqlite", free_space_bound=True) as spool:
        messages = [spool.append_with(TOPIC, lambda seq: seq.to_bytes(8, "big") + bytes(PAYLOAD)) for _ in range(9000)]
        spool.flush()
        stats = spool.stats()
        assert all(m.stored for m in messages) and not spool.disk_full
        assert stats.dropped_overflow > 0 and stats.unspooled == stats.lost == 0
        assert stats.depth + stats.dropped_overflow == 9000
        held = held_seqs(spool)
        assert held == list(range(9000 - len(held), 9000))  # the newest, gapless: the oldest went
        assert free_bytes(vol) > 0
    assert any("stops growing" in r.getMessage() for r in caplog.records)


def test_filling_a_small_disk_degrades_instead_of_raising(
    small_fs: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    vol = small_fs("2m")
    path = vol / "spool.sqlite"
    with caplog.at_level(logging.WARNING), open_spool(path) as spool:
        reserve = reserve_path(path)
        assert reserve.stat().st_size == 256 * 1024  # 1 MiB asked, at most 1/8 of the 2 MiB
        stored = append_until_full(spool)  # the old spool raised SpoolError (SQLITE_FULL) here
        assert len(stored) > 2000  # ~1.3 MiB of the 2 MiB hold messages
        assert spool.disk_full and spool.stats().disk_full
        assert free_bytes(vol) > 0 and reserve.exists()  # stopped before the disk was full
        first_unstored = stored[-1].seq + 1
        extra = [spool.append(TOPIC, bytes(PAYLOAD)) for _ in range(200)]
        assert not any(m.stored for m in extra) and all(m.id == 0 for m in extra)
        assert [m.seq for m in extra] == list(range(first_unstored + 1, first_unstored + 201))  # seqs go on
        stats = spool.stats()
        assert (stats.unspooled, stats.lost, stats.depth) == (201, 0, len(stored))
        assert stats.committed_next_seq == stats.next_seq == first_unstored + 201  # the used seqs are durable
        assert held_seqs(spool) == list(range(len(stored)))  # gapless, nothing lost
    assert any("disk full" in r.getMessage() for r in caplog.records)
    with open_spool(path) as spool:  # the totals and the seq are in the file
        stats = spool.stats()
        assert (stats.next_seq, stats.unspooled, stats.depth) == (first_unstored + 201, 201, len(stored))


def test_acks_drain_a_full_disk_and_spooling_resumes_once(
    small_fs: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    vol = small_fs("2m")
    path = vol / "spool.sqlite"
    with caplog.at_level(logging.WARNING), open_spool(path) as spool:
        stored = append_until_full(spool)
        for _ in range(50):
            spool.append(TOPIC, bytes(PAYLOAD))
        spool.flush()
        fill(vol)  # and nothing else is left either: acks must still work
        acked = 0
        while True:  # as the publisher does: 25 per ack, committed every few ms
            batch = spool.pending(25)
            if not batch:
                break
            assert spool.ack(m.id for m in batch) == len(batch)  # the old spool: SQLITE_FULL, rolled back
            acked += len(batch)
            spool.flush_if_due()
        spool.flush()
        assert acked == len(stored) and spool.stats().depth == 0
        assert spool.check_space()  # the filler still holds the disk
        (vol / "filler").unlink()
        assert not spool.check_space()  # space is back: reserve allocated again, spooling resumed
        assert reserve_path(path).stat().st_size == 256 * 1024
        msg = spool.append(TOPIC, b"after")
        assert msg.stored and msg.seq == len(stored) + 51
        assert not spool.check_space()
    resumed = [r for r in caplog.records if "spooling resumed" in r.getMessage()]
    assert len(resumed) == 1


def test_the_reserve_commits_a_batch_when_another_writer_fills_the_disk(
    small_fs: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    vol = small_fs("2m")
    path = vol / "spool.sqlite"
    with caplog.at_level(logging.WARNING), open_spool(path, commit_interval_ms=60_000) as spool:
        for _ in range(100):
            spool.append(TOPIC, bytes(PAYLOAD))
        spool.flush()
        for _ in range(300):  # ~100 KB in the open batch: more than the WAL holds, less than the reserve
            spool.append(TOPIC, bytes(PAYLOAD))
        assert not spool.disk_full
        fill(vol)  # a log file, another process: the disk is full under the open batch
        spool.flush()  # SQLITE_FULL (the old spool: rolled back, SpoolError); the reserve goes, the batch is replayed
        assert not reserve_path(path).exists()
        assert spool.disk_full
        stats = spool.stats()
        assert (stats.depth, stats.lost, stats.committed_next_seq) == (400, 0, 400)
        assert held_seqs(spool) == list(range(400))
        for _ in range(10):  # acks on the full disk
            assert spool.ack(m.id for m in spool.pending(25)) == 25
        unstored = spool.append(TOPIC, b"x")
        assert not unstored.stored and unstored.seq == 400
        (vol / "filler").unlink()
        assert not spool.check_space()
        assert reserve_path(path).exists()
        assert spool.append(TOPIC, b"y").stored
    assert any("released the 256 KiB reserve" in r.getMessage() for r in caplog.records)


def test_a_batch_that_cannot_be_committed_is_counted_lost_and_its_seqs_stay_used(
    small_fs: Callable[..., Path],
) -> None:
    vol = small_fs("2m")
    path = vol / "spool.sqlite"
    with open_spool(path, commit_interval_ms=60_000, reserve_bytes=None) as spool:  # no reserve
        assert not reserve_path(path).exists()
        for _ in range(10):
            spool.append(TOPIC, bytes(PAYLOAD))
        spool.flush()
        for _ in range(1000):
            spool.append(TOPIC, bytes(PAYLOAD))
        fill(vol)
        spool.flush()  # never raises: the batch is given up
        stats = spool.stats()
        assert stats.disk_full
        assert (stats.depth, stats.lost, stats.next_seq) == (10, 1000, 1010)
        msg = spool.append(TOPIC, b"x")
        assert not msg.stored and msg.seq == 1010  # never a seq issued twice: a counted gap
        assert spool.stats().unspooled == 1
        (vol / "filler").unlink()
        assert not spool.check_space()
        assert spool.append(TOPIC, b"y").seq == 1011
    with open_spool(path, reserve_bytes=None) as spool:
        assert (spool.stats().lost, spool.next_seq, held_seqs(spool)) == (1000, 1012, [*range(10), 1011])


def test_open_on_a_full_disk(small_fs: Callable[..., Path]) -> None:
    vol = small_fs("2m")
    path = vol / "spool.sqlite"
    with open_spool(path) as spool:
        for _ in range(100):
            spool.append(TOPIC, bytes(PAYLOAD))
    fill(vol)  # e.g. a restart after something else filled the disk
    with open_spool(path) as spool:  # SQLite's -shm needs room: the reserve makes it
        assert spool.disk_full and not reserve_path(path).exists()
        msg = spool.append(TOPIC, b"x")
        assert (msg.stored, msg.seq) == (False, 100)
        for _ in range(4):
            assert spool.ack(m.id for m in spool.pending(25)) == 25
        (vol / "filler").unlink()
        assert not spool.check_space()
        assert spool.append(TOPIC, b"y").stored
    with open_spool(path) as spool:
        assert spool.next_seq == 102
    reserve_path(path).unlink()
    fill(vol)
    with pytest.raises(ConfigError, match=r"the disk is full .*free some space"):
        open_spool(path)  # no reserve left to release: said in words, not a traceback


def test_an_emptied_spool_gives_its_pages_back_to_resume(small_fs: Callable[..., Path]) -> None:
    """The reserve is gone and the other writer stays: once the spool is drained, its pages go
    back to the file system (VACUUM) and that is room enough to allocate the reserve again."""
    vol = small_fs("2m")
    path = vol / "spool.sqlite"
    with open_spool(path, commit_interval_ms=60_000) as spool:
        for i in range(2500):  # ~850 KB, in small commits
            spool.append(TOPIC, bytes(PAYLOAD))
            if i % 100 == 99:
                spool.flush()
        fill(vol)
        for _ in range(300):
            spool.append(TOPIC, bytes(PAYLOAD))
        spool.flush()  # SQLITE_FULL: the reserve is released
        assert spool.check_space() and not reserve_path(path).exists()
        size_full = path.stat().st_size
        while spool.stats().depth:
            spool.ack(m.id for m in spool.pending(50))
        assert not spool.check_space()
        assert reserve_path(path).exists() and path.stat().st_size < size_full // 10
        assert spool.append(TOPIC, b"x").stored


# -- with the publisher and a real broker ---------------------------------------------------------


def status_spool(sub: Subscriber) -> list[dict[str, Any]]:
    return [parse_status(bytes(m.payload)).get("spool", {}) for m in sub.on(STATUS)]


@needs_mosquitto
def test_broker_up_on_a_full_disk_results_go_out_live(small_fs: Callable[..., Path], tmp_path: Path) -> None:
    vol = small_fs("2m")
    with MosquittoBroker(workdir=tmp_path / "mq") as mq, open_spool(vol / "spool.sqlite") as spool:
        sub = Subscriber(mq.port, [RESULTS, STATUS], name="sub-live")
        try:
            with MqttPublisher(config(mq.port), DEVICE, spool) as pub:
                assert pub.wait_connected(10)
                fill(vol, leave=16 * 1024)
                assert spool.check_space()
                sent = [pub.publish_line(line(i)) for i in range(50)]  # the old spool raised here
                assert not any(m.stored for m in sent)
                assert sub.wait_for(lambda: len(sub.seqs()) >= 50, 10), sub.seqs()
                assert sorted(sub.seqs()) == [m.seq for m in sent]
                stats = spool.stats()
                assert (stats.unspooled, stats.lost, stats.depth) == (50, 0, 0)
                assert pub.published_unspooled == 50
                pub.publish_status({"fps": 1.0})
                assert sub.wait_for(lambda: any(s.get("disk_full") for s in status_spool(sub)), 5)
                fields = pub.status_fields()
                assert fields["spool"]["disk_full"] is True and fields["spool"]["unspooled"] == 50
                assert fields["mqtt"]["published_unspooled"] == 50
        finally:
            sub.close()


@needs_mosquitto
def test_full_disk_broker_away_then_back_drains_without_a_duplicate_storm(
    small_fs: Callable[..., Path], tmp_path: Path
) -> None:
    """The field report: a 2 MiB volume filled while the broker was away; once it was back,
    acks could not be committed and the same messages went out again and again (1,703
    duplicates in 10 s). Now: every stored result arrives, re-publishes stay within one
    in-flight window, the results made while nothing could hold them are counted lost, and
    spooling resumes once the backlog is gone."""
    vol = small_fs("2m")
    with MosquittoBroker(workdir=tmp_path / "mq", persistence=True) as mq, open_spool(vol / "spool.sqlite") as spool:
        sub = Subscriber(mq.port, [RESULTS, STATUS], persistent=True, name="sub-storm")
        try:
            cfg = config(mq.port, reconnect_min_s=0.2, reconnect_max_s=0.5)
            with MqttPublisher(cfg, DEVICE, spool, max_inflight=100) as pub:
                assert pub.wait_connected(10)
                mq.stop()
                assert wait_for(lambda: not pub.connected, 10)
                stored: list[int] = []
                i = 0
                while True:  # the broker is away: the spool fills the disk
                    msg = pub.publish_line(line(i))
                    i += 1
                    if not msg.stored:
                        break
                    stored.append(msg.seq)
                lost = [pub.publish_line(line(i + k)) for k in range(40)]
                assert spool.stats().lost == 41  # neither stored nor publishable: counted
                fill(vol)  # nothing at all left: acks depend on the reserve now
                mq.start()
                assert pub.wait_connected(15)
                assert sub.wait_for(lambda: spool.stats().depth == 0, 60), spool.stats()
                drained_at = pub.published
                assert sub.wait_for(lambda: set(sub.seqs()) >= set(stored), 15)
                time.sleep(1.0)  # a storm would go on re-publishing here
                assert pub.published == drained_at
                (vol / "filler").unlink()
                assert sub.wait_for(lambda: not spool.disk_full, 5)  # the sender's reads look for space
                after = pub.publish_line(line(10_000))
                assert after.stored and after.seq == lost[-1].seq + 1
                assert sub.wait_for(lambda: after.seq in sub.seqs(), 10)
            total_lost = spool.stats().lost
        finally:
            sub.close()
    received = sub.seqs()
    duplicates = len(received) - len(set(received))
    republished = pub.published - len(stored) - 1
    assert republished <= 100 and duplicates <= 100, (republished, duplicates)  # at most one in-flight window
    assert set(received) == {*stored, after.seq}  # every stored result, nothing else (the lost are counted)
    assert total_lost == 41
    print(f"{len(stored)} stored, {len(lost) + 1} lost, re-published {republished}, duplicates {duplicates}")


# -- the daemon ---------------------------------------------------------------------------------


@needs_mosquitto
def test_daemon_on_a_full_spool_volume_keeps_running_and_counts_every_loss(
    small_fs: Callable[..., Path], demo_bundle: Path, tmp_path: Path
) -> None:
    """``edge-runtime run`` with its spool on a 2 MiB volume that fills during a broker outage:
    the daemon neither crashes nor storms; once the broker is back every result arrives or is
    counted (``spool.lost`` in the final status), duplicates stay within one in-flight window."""
    vol = small_fs("2m")
    spool_path = vol / "spool.sqlite"
    results, status = f"edge/{DAEMON}/results", f"edge/{DAEMON}/status"
    with MosquittoBroker(workdir=tmp_path / "mq", persistence=True) as mq:
        sub = Subscriber(mq.port, [results, status], persistent=True, name="sub-daemon-full")
        fill(vol, "other", leave=640 * 1024)  # someone else's files: ~250 KiB left for results
        daemon = start_daemon(
            demo_bundle, tmp_path / "state", mq.port, "--spool", str(spool_path), "--fps", "200",
            "--max-frames", "3000", "--status-interval-s", "0.5",
        )  # fmt: skip
        try:
            assert sub.wait_for(lambda: len(sub.on(results)) >= 20, 30), daemon.poll()
            mq.stop()
            time.sleep(6.0)  # the spool fills its share of the volume; then results are lost, counted
            fill(vol, "more")  # and the rest of the disk goes too
            mq.start()
            _, stderr = daemon.communicate(timeout=90)
            assert daemon.returncode == 0, stderr[-3000:]
            total = int((tmp_path / "state" / "seq").read_text().split()[0])

            def final() -> dict[str, Any]:
                return parse_status(bytes(sub.on(status)[-1].payload))

            assert sub.wait_for(lambda: final()["state"] == "offline", 15)
            lost_full = int(final()["spool"]["lost"])
            # the free-space bound drops the oldest (counted) before the disk is full
            lost = lost_full + int(final()["spool"]["dropped_overflow"])
            assert sub.wait_for(lambda: len(set(decoded_seqs(sub, results))) + lost >= total, 15)
        finally:
            if daemon.poll() is None:
                daemon.kill()
            sub.close()
    received = decoded_seqs(sub, results)
    spool_states = [parse_status(bytes(m.payload)).get("spool", {}) for m in sub.on(status)]
    assert any(s.get("disk_full") for s in spool_states)  # the status said so while it lasted
    assert lost_full > 0 and final()["spool"]["unspooled"] >= lost_full
    # every loss counted; a message dropped while in flight may be both delivered and counted
    assert total <= len(set(received)) + lost <= total + 100 and set(received) <= set(range(total))
    assert len(received) - len(set(received)) <= 100  # no storm: at most one in-flight window again
    assert "disk full" in stderr and "Traceback" not in stderr
    print(f"daemon: {total} results, {len(set(received))} delivered, {lost} lost (counted), "
          f"{len(received) - len(set(received))} duplicates")  # fmt: skip


def decoded_seqs(sub: Subscriber, topic: str) -> list[int]:
    return [int(decode_payload(bytes(m.payload))["seq"]) for m in sub.on(topic)]
