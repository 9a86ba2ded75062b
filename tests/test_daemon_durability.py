"""`edge-runtime run --broker` as a real process against a real mosquitto: the broker stopped for
seconds mid-stream, the daemon SIGKILLed mid-stream and restarted. Every result that reached
the spool arrives, exactly once after de-duplication on (device, epoch, seq), and seq goes on
without a gap across the restart.

The broker is stopped gracefully (SIGTERM, persistence on): a broker that is SIGKILLed loses
the messages it acknowledged but had not yet delivered — a PUBACK means the broker has it
— which no publisher can see or prevent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_runtime.codec import decode_payload, encode_line
from edge_runtime.delivery.mqtt.status import parse_status
from edge_runtime.delivery.spool import Spool
from tests.broker import HOST, MosquittoBroker, find_mosquitto, wait_for
from tests.test_mqtt import Subscriber

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
ROOT = Path(__file__).resolve().parent.parent
DEVICE = "dur-1"
RESULTS = f"edge/{DEVICE}/results"
STATUS = f"edge/{DEVICE}/status"


def start_daemon(bundle: Path, state: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    command = [
        sys.executable, "-m", "edge_runtime.cli", "run", "--bundle", str(bundle), "--source", "synthetic",
        "--fps", "25", "--device-id", DEVICE, "--state-dir", str(state), "--broker", f"mqtt://{HOST}:{port}",
        *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)


def seqs(sub: Subscriber) -> list[int]:
    return [int(decode_payload(bytes(m.payload))["seq"]) for m in sub.on(RESULTS)]


def test_broker_stopped_for_seconds_mid_stream(demo_bundle: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    with MosquittoBroker(workdir=tmp_path / "mq", persistence=True) as broker:
        sub = Subscriber(broker.port, [RESULTS], persistent=True, name="dur-sub-1")
        daemon = start_daemon(demo_bundle, state, broker.port, "--max-frames", "150")
        try:
            assert wait_for(lambda: len(seqs(sub)) >= 20, 30), daemon.stderr and daemon.poll()
            broker.stop()
            time.sleep(3.0)  # the outage: the daemon keeps producing into its spool
            broker.start()
            _, stderr = daemon.communicate(timeout=60)
            assert daemon.returncode == 0, stderr
            total = int((state / "seq").read_text())
            assert total >= 140  # 150 frames at 25 fps; a live source may drop a few
            assert wait_for(lambda: set(seqs(sub)) >= set(range(total)), 30), sorted(set(range(total)) - set(seqs(sub)))
        finally:
            if daemon.poll() is None:
                daemon.kill()
            sub.close()
    received = seqs(sub)
    assert sorted(set(received)) == list(range(total))  # every seq, nothing else, after de-duplication
    assert "connection to" in stderr and "lost" in stderr  # the outage was seen and survived


def test_daemon_sigkill_and_restart(demo_bundle: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    spool_path = state / "spool.sqlite"
    with MosquittoBroker(workdir=tmp_path / "mq", persistence=True) as broker:
        sub = Subscriber(broker.port, [RESULTS, STATUS], persistent=True, name="dur-sub-2")
        first = start_daemon(demo_bundle, state, broker.port)
        second = None
        try:
            assert wait_for(lambda: len(seqs(sub)) >= 10, 30)
            broker.stop()  # so that results pile up in the spool when the daemon dies
            time.sleep(1.0)  # ~25 results go into the spool with nowhere to go
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            with Spool.open(spool_path) as spool:  # the lock died with the process
                stats = spool.stats()
                spooled = [m.seq for m in spool.pending(100_000)]
            assert stats.depth == len(spooled) > 0
            assert spooled == list(range(spooled[0], spooled[0] + len(spooled)))  # gapless, in order
            broker.start()
            second = start_daemon(demo_bundle, state, broker.port, "--max-frames", "10")
            _, stderr = second.communicate(timeout=60)
            assert second.returncode == 0, stderr
            total = int((state / "seq").read_text())
            assert total == stats.next_seq + 10  # seq goes on where the spool stood: no reuse, no gap
            assert wait_for(lambda: set(seqs(sub)) >= set(range(total)), 30), sorted(set(range(total)) - set(seqs(sub)))
        finally:
            for proc in (first, second):
                if proc is not None and proc.poll() is None:
                    proc.kill()
            sub.close()
    received = seqs(sub)
    assert sorted(set(received)) == list(range(total))
    assert set(spooled) <= set(received)  # every result that reached the spool arrived
    states = [parse_status(bytes(m.payload))["state"] for m in sub.on(STATUS)]
    assert states[-1] == "offline" and "online" in states


def test_last_will_after_daemon_sigkill(broker: MosquittoBroker, demo_bundle: Path, tmp_path: Path) -> None:
    sub = Subscriber(broker.port, [STATUS], name="dur-lwt")
    daemon = start_daemon(demo_bundle, tmp_path / "state", broker.port)
    try:
        assert wait_for(lambda: any(parse_status(bytes(m.payload))["state"] == "online" for m in sub.on(STATUS)), 30)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        assert wait_for(lambda: parse_status(bytes(sub.on(STATUS)[-1].payload))["state"] == "offline", 10)
        will = parse_status(bytes(sub.on(STATUS)[-1].payload))
        assert will["device"] == DEVICE and "epoch" in will
    finally:
        if daemon.poll() is None:
            daemon.kill()
        sub.close()


def test_a_large_backlog_does_not_hold_back_live_results(
    broker: MosquittoBroker, demo_bundle: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    backlog = 5_000
    with Spool.open(state / "spool.sqlite") as spool:  # as left by a long outage
        for i in range(backlog):
            line = {"device": DEVICE, "epoch": "old", "frame_id": i, "ts": 1.0, "results": {}, "latency_ms": {}}
            spool.append_with(RESULTS, lambda seq, line=line: encode_line({**line, "seq": seq}))
    sub = Subscriber(broker.port, [RESULTS], name="dur-backlog")
    daemon = start_daemon(demo_bundle, state, broker.port, "--max-frames", "5")
    try:
        _, stderr = daemon.communicate(timeout=60)
        assert daemon.returncode == 0, stderr
        assert wait_for(lambda: len(set(seqs(sub))) >= backlog + 5, 30)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        sub.close()
    order = seqs(sub)
    assert sorted(set(order)) == list(range(backlog + 5))
    first_live = min(order.index(s) for s in range(backlog, backlog + 5))
    assert first_live < order.index(backlog - 1) and first_live < backlog // 2, first_live  # not behind the backlog
