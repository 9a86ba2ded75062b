"""Seq never rewinds within an epoch: `edge-runtime run` as real processes, a real mosquitto and
real SQLite spool files, attacked the way the spool can lose track of seq (truncated, moved aside
after corruption, a corrupt WAL that SQLite rolls back, a SIGKILL without a broker). After each,
the restart starts a new epoch and says why, so no new result is ever taken for a duplicate: no
(device, epoch, seq) carries two different payloads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from edge_runtime.codec import decode_payload
from edge_runtime.delivery.mqtt.status import parse_status
from tests.broker import HOST, MosquittoBroker, find_mosquitto, wait_for
from tests.test_mqtt import Subscriber

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
ROOT = Path(__file__).resolve().parent.parent
DEVICE = "ep-1"
RESULTS = f"edge/{DEVICE}/results"
STATUS = f"edge/{DEVICE}/status"
WAL_HEADER = 32
WAL_FRAME_HEADER = 24


def daemon(bundle: Path, state: Path, *extra: str, port: int | None = None) -> subprocess.Popen[str]:
    command = [
        sys.executable, "-m", "edge_runtime.cli", "run", "--bundle", str(bundle), "--source", "synthetic",
        "--fps", "50", "--device-id", DEVICE, "--state-dir", str(state), *extra,
    ]  # fmt: skip
    if port is not None:
        command += ["--broker", f"mqtt://{HOST}:{port}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)


def keys(sub: Subscriber) -> dict[tuple[str, int], set[bytes]]:
    """(epoch, seq) -> the distinct payload bodies received under it (a re-publish of the same
    spooled message is the same bytes; a *new* result under a used key is a second body)."""
    seen: dict[tuple[str, int], set[bytes]] = defaultdict(set)
    for message in sub.on(RESULTS):
        line = decode_payload(bytes(message.payload))
        seen[(str(line["epoch"]), int(line["seq"]))].add(bytes(message.payload))
    return seen


def epochs(sub: Subscriber) -> list[str]:
    return list(dict.fromkeys(epoch for epoch, _ in keys(sub)))


def kill_after(proc: subprocess.Popen[str], sub: Subscriber, count: int) -> None:
    assert wait_for(lambda: len(keys(sub)) >= count, 60), proc.poll() or (proc.stderr and proc.stderr.read())
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def finish(proc: subprocess.Popen[str]) -> str:
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    return stderr


def corrupt_wal_middle(wal: Path) -> int:
    """Flip bytes in the page of the WAL's middle frame: SQLite then ignores that frame and
    every later one (their checksums no longer chain), i.e. the last commits roll back."""
    data = bytearray(wal.read_bytes())
    page = int.from_bytes(data[8:12], "big")
    frames = (len(data) - WAL_HEADER) // (WAL_FRAME_HEADER + page)
    assert frames >= 4, f"the WAL holds {frames} frames"
    at = WAL_HEADER + (frames // 2) * (WAL_FRAME_HEADER + page) + WAL_FRAME_HEADER + page // 2
    data[at : at + 8] = bytes(b ^ 0xFF for b in data[at : at + 8])
    wal.write_bytes(bytes(data))
    return frames


def truncate(spool: Path) -> None:
    for path in (spool, spool.with_name(spool.name + "-wal"), spool.with_name(spool.name + "-shm")):
        if path.exists():
            path.write_bytes(b"")


@pytest.mark.parametrize("attack", ["truncated", "wal_rolled_back"])
def test_a_lost_or_rolled_back_spool_starts_a_new_epoch(demo_bundle: Path, tmp_path: Path, attack: str) -> None:
    state = tmp_path / "state"
    spool = state / "spool.sqlite"
    with MosquittoBroker(workdir=tmp_path / "mq", persistence=True) as broker:
        sub = Subscriber(broker.port, [RESULTS, STATUS], persistent=True, name=f"ep-sub-{attack}")
        try:
            first = daemon(demo_bundle, state, port=broker.port)
            kill_after(first, sub, 40)
            if attack == "truncated":
                truncate(spool)
            else:
                corrupt_wal_middle(spool.with_name(spool.name + "-wal"))
            second = daemon(demo_bundle, state, "--max-frames", "30", port=broker.port)
            stderr = finish(second)
            record = json.loads((state / "epoch.json").read_text())
            assert wait_for(lambda: (record["epoch"], int((state / "seq").read_text()) - 1) in keys(sub), 30)
        finally:
            sub.close()
    seen = keys(sub)
    reused = {key: len(bodies) for key, bodies in seen.items() if len(bodies) > 1}
    assert not reused, f"new results under used (epoch, seq) keys: {sorted(reused)[:10]}"
    assert len(epochs(sub)) == 2 and epochs(sub)[1] == record["epoch"]
    expected = "spool replaced" if attack == "truncated" else "spool rolled back"
    assert expected in record["reason"] and "unclean stop" in record["reason"], record
    assert f"new epoch {record['epoch']}" in stderr and expected in stderr
    status = [parse_status(bytes(m.payload)) for m in sub.on(STATUS)]
    latest = [s for s in status if s.get("epoch") == record["epoch"] and "streams" in s][-1]
    assert expected in latest["epoch_reason"]
    assert latest["streams"]["results"]["first_seq"] == record["first_seq"]


def test_a_corrupt_spool_moved_aside_as_advised_starts_a_new_epoch(demo_bundle: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    spool = state / "spool.sqlite"
    with MosquittoBroker(workdir=tmp_path / "mq", persistence=True) as broker:
        sub = Subscriber(broker.port, [RESULTS], persistent=True, name="ep-sub-aside")
        try:
            finish(daemon(demo_bundle, state, "--max-frames", "40", port=broker.port))
            old = json.loads((state / "epoch.json").read_text())["epoch"]
            spool.write_bytes(b"this is not a database" * 100)
            refused = daemon(demo_bundle, state, "--max-frames", "5", port=broker.port)
            _, stderr = refused.communicate(timeout=60)
            assert refused.returncode != 0 and "move it aside" in stderr and "Traceback" not in stderr
            spool.rename(spool.with_name("spool.sqlite.corrupt"))  # what the message advises
            for suffix in ("-wal", "-shm"):
                spool.with_name(spool.name + suffix).unlink(missing_ok=True)
            finish(daemon(demo_bundle, state, "--max-frames", "30", port=broker.port))
            record = json.loads((state / "epoch.json").read_text())
            assert wait_for(lambda: len(keys(sub)) >= 70, 30), len(keys(sub))
        finally:
            sub.close()
    assert record["epoch"] != old and "spool replaced" in record["reason"]
    assert "unclean stop" not in record["reason"]  # the refused start numbered nothing
    assert not {key for key, bodies in keys(sub).items() if len(bodies) > 1}


def test_sigkill_without_a_broker_never_issues_a_seq_twice(demo_bundle: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    out = tmp_path / "results.jsonl"
    first = daemon(demo_bundle, state, "--output", str(out))
    assert wait_for(lambda: out.exists() and out.read_text().count("\n") >= 150, 60), first.poll()
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    finish(daemon(demo_bundle, state, "--output", str(out), "--max-frames", "30"))
    lines = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    issued: dict[tuple[str, int], int] = defaultdict(int)
    for line in lines:
        issued[(line["epoch"], line["seq"])] += 1
    assert not {key: n for key, n in issued.items() if n > 1}
    record = json.loads((state / "epoch.json").read_text())
    assert "unclean stop" in record["reason"] and len({e for e, _ in issued}) == 2
