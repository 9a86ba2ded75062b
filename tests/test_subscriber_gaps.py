"""Leading and trailing gaps from the devices' status messages (docs/protocol.md §6.1, §7), and
the subscriber's state across restarts: the tracker alone (pure), then ``edge-runtime
subscribe`` as a subprocess against a real mosquitto, fed status messages and numbered results
published here (the device side is not needed to say what it would send)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edge_runtime.cloud.tracker import StreamGaps, StreamTracker
from edge_runtime.codec import encode_heartbeat, encode_line
from edge_runtime.delivery.mqtt.status import ONLINE, status_payload
from tests.broker import HOST, BrokerProcess, MosquittoBroker, find_mosquitto

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = [sys.executable, "-m", "edge_runtime.cli"]
D, E = "cam1", "ep1"


def frame(seq: int, device: str = D, epoch: str = E, pad: int = 0) -> dict[str, Any]:
    return {
        "device": device,
        "epoch": epoch,
        "seq": seq,
        "frame_id": seq,
        "ts": 1000.0 + seq,
        "results": {"cls": {"labels": ["cat" + "x" * pad], "class_ids": [3], "scores": [0.5]}},
        "latency_ms": {"total": 1.5},
    }


def status(first: int, held: int, last: int, device: str = D, epoch: str = E, **extra: Any) -> bytes:
    streams = {"results": {"first_seq": first, "first_held": held, "last_issued": last}}
    return status_payload(ONLINE, {"device": device, "epoch": epoch, "ts": 1.0, "streams": streams, **extra})


# -- the tracker (pure) ---------------------------------------------------------------------------


def positions(tracker: StreamTracker, first: int, held: int, last: int, epoch: str = E) -> None:
    tracker.count_status(D, json.loads(status(first, held, last, epoch=epoch)))


@pytest.mark.parametrize(
    ("seen", "pos", "expected"),
    [
        pytest.param(range(5, 10), None, StreamGaps(), id="no-status-history-is-not-a-gap"),
        pytest.param(
            range(5, 10), (0, 3, 12), StreamGaps(((3, 4),), ((0, 2),), ((10, 12),)), id="leading-split-at-held"
        ),
        pytest.param(range(0, 10), (0, 0, 9), StreamGaps(), id="complete"),
        pytest.param([0, 1, 4, 5], (0, 3, 5), StreamGaps(((3, 3),), ((2, 2),), ()), id="middle-gap-split-at-held"),
        pytest.param([], (0, 4, 6), StreamGaps((), ((0, 3),), ((4, 6),)), id="status-only-nothing-seen"),
        pytest.param([7, 8], (5, 5, 8), StreamGaps(((5, 6),), (), ()), id="epoch-starting-above-zero"),
        pytest.param([5, 9, 2], (0, 0, 9), StreamGaps(((0, 1), (3, 4), (6, 8)), (), ()), id="late-arrival-fills"),
        pytest.param([0, 1], (0, 8, 10), StreamGaps((), ((2, 7),), ((8, 10),)), id="trailing-dropped-then-pending"),
        pytest.param([3], (0, 0, -1), StreamGaps(((0, 2),), (), ()), id="last-issued-behind-seen"),
    ],
)
def test_leading_and_trailing_gaps(seen: Any, pos: tuple[int, int, int] | None, expected: StreamGaps) -> None:
    tracker = StreamTracker()
    for seq in seen:
        assert tracker.observe(D, E, seq)
    if pos is not None:
        positions(tracker, *pos)
    assert tracker.missing(D, E) == expected
    assert tracker.statuses == (pos is not None)


def test_status_positions_only_grow_and_older_devices_are_ignored() -> None:
    tracker = StreamTracker()
    tracker.observe(D, E, 0)
    positions(tracker, 0, 0, 5)
    positions(tracker, 0, 0, 3)  # an older (retained) status after a newer one: L stays 5
    assert tracker.missing(D, E) == StreamGaps((), (), ((1, 5),))
    for old in ({"state": "online", "device": D, "epoch": E}, {"state": "offline", "device": D},
                {"state": "online", "epoch": E, "streams": {"results": {"first_seq": "0"}}},
                {"state": "online", "epoch": E, "streams": {"results": {"first_seq": True, "first_held": 0,
                                                                        "last_issued": 2}}}):  # fmt: skip
        tracker.count_status(D, old)
    assert tracker.statuses == 6 and tracker.missing(D, E) == StreamGaps((), (), ((1, 5),))


def test_summary_names_each_kind_of_gap_and_counts_them() -> None:
    tracker = StreamTracker()
    for seq in (5, 6, 7, 9):
        tracker.observe(D, E, seq)
    positions(tracker, 0, 3, 12)
    tracker.observe("cam2", E, 0)
    summary = tracker.summary()
    assert summary.splitlines()[1:] == [
        "missing: 3 not received, 3 no longer on the device, 3 not received (yet)",
        "cam1 epoch ep1: 9 missing seq: 3-4, 8 not received; 0-2 no longer on the device; 10-12 not received (yet)",
        "cam2 epoch ep1: no gaps",
    ]
    assert tracker.missing_counts() == {"not_received": 3, "dropped": 3, "pending": 3}
    assert tracker.gaps() == {(D, E): [(8, 8)]}  # the middle gaps, as before


def test_shared_subscriptions_report_no_leading_or_trailing_gaps() -> None:
    tracker = StreamTracker(gap_reports=False)
    tracker.observe(D, E, 5)
    positions(tracker, 0, 3, 12)
    assert tracker.missing(D, E) == StreamGaps()
    assert "gap reports off" in tracker.summary()


def test_state_round_trip_goes_on_where_it_stopped() -> None:
    """A restart resumes: seqs at or below the contiguous one are duplicates, a hole between it
    and the next seq seen is a gap (not history), earlier gaps stay reported."""
    first = StreamTracker()
    for seq in (0, 1, 2, 3, 4, 8, 9):
        first.observe(D, E, seq)
    positions(first, 0, 0, 9)
    state = json.loads(json.dumps(first.state()))
    again = StreamTracker()
    again.resume(state)
    assert [again.observe(D, E, s) for s in (3, 9, 12, 6)] == [False, False, True, True]
    assert again.duplicates == 2
    assert again.missing(D, E) == StreamGaps(((5, 5), (7, 7), (10, 11)), (), ())
    assert StreamTracker().observe(D, E, 12)  # without the state 12 would simply start the stream


@pytest.mark.parametrize(
    "state",
    [
        {"version": 99, "streams": []},
        {"version": 1, "streams": [{"device": D, "epoch": E, "stream": "results", "first": 0, "top": "x"}]},
        {
            "version": 1,
            "streams": [{"device": D, "epoch": E, "stream": "results", "first": 0, "top": 1, "above": [[5, 2]]}],
        },
        {"version": 1, "streams": [{"device": 1, "epoch": E, "stream": "results", "first": 0, "top": 1}]},
    ],
)
def test_a_bad_state_is_refused(state: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        StreamTracker().resume(state)


def test_state_is_bounded_like_the_tracker() -> None:
    tracker = StreamTracker(max_pending=10)
    tracker.observe(D, E, 0)
    for seq in range(2, 200, 2):  # every other seq: the oldest gaps are given up
        tracker.observe(D, E, seq)
    stream = tracker.state()["streams"][0]
    assert len(stream["above"]) <= 10 and len(stream["lost"]) <= 10
    again = StreamTracker(max_pending=10)
    again.resume(tracker.state())
    assert again.missing(D, E) == tracker.missing(D, E)


# -- edge-runtime subscribe with status messages ----------------------------------------------------


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    if find_mosquitto() is None:
        reason = "mosquitto is not installed (apt-get install mosquitto): needed for persistent sessions"
        print(reason)
        pytest.skip(reason)
    with MosquittoBroker(workdir=tmp_path / "mosquitto") as broker:
        yield broker


class Publisher:
    """A paho client publishing QoS 1 messages, each waited for."""

    def __init__(self, broker: BrokerProcess, name: str = "gaps-pub") -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=MQTTProtocolVersion.MQTTv5)
        self.client.connect(HOST, broker.port, 10)
        self.client.loop_start()

    def publish(self, payload: bytes, topic: str = "edge/cam1/results", retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


_RUNNING: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_subscriber_left() -> Iterator[None]:
    """Whatever a test left running (it failed before stopping it) is killed after it."""
    yield
    while _RUNNING:
        proc = _RUNNING.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def subscribe_env(state_home: Path) -> dict[str, str]:
    """The environment without EDGE_RUNTIME_* variables, the state directory under ``state_home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_RUNTIME_") and k != "STATE_DIRECTORY"}
    return {**env, "XDG_STATE_HOME": str(state_home)}


class Subscriber:
    """``edge-runtime subscribe ARGS`` as a subprocess, its state under ``state_home``; started
    once it printed its "subscribed to" line."""

    def __init__(self, *args: str, state_home: Path, preexec_fn: Callable[[], None] | None = None) -> None:
        env = subscribe_env(state_home)
        self.proc = subprocess.Popen(
            [*RUNTIME, "subscribe", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, preexec_fn=preexec_fn,
        )  # fmt: skip
        _RUNNING.append(self.proc)
        assert self.proc.stderr is not None
        self.first = ""
        while not self.first.startswith("subscribed to"):
            line = self.proc.stderr.readline()
            if not line:
                raise AssertionError(f"subscribe exited: {self.first}{self.proc.stderr.read()}")
            self.first = line if line.startswith("subscribed to") else self.first + line

    def stop(self, timeout: float = 20) -> tuple[int, str]:
        """SIGINT; the exit code and stderr after the first line."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            err = self.proc.communicate(timeout=timeout)[1]
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode, err


def wait_lines(path: Path, count: int, timeout: float = 15) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    lines: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        if path.exists():
            lines = [json.loads(line) for line in path.read_bytes().split(b"\n")[:-1]]
            if len(lines) >= count:
                break
        time.sleep(0.02)
    return lines


def test_subscribe_reports_leading_and_trailing_gaps_from_the_status(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """The retained status says the epoch began at 0, the device holds from 3 on and has issued
    up to 12; the subscriber gets 5-7 and 9: 0-2 are no longer on the device, 3-4 and 8 not
    received, 10-12 not received yet. Without the status it would say only "8"."""
    out = tmp_path / "r.jsonl"
    pub = Publisher(mosquitto)
    try:
        pub.publish(status(0, 3, 12), topic="edge/cam1/status", retain=True)
        sub = Subscriber("--broker", mosquitto.url, "--output", str(out), state_home=tmp_path / "state")
        assert "device status from 'edge/+/status'" in sub.first
        for seq in (5, 6, 7, 9):
            pub.publish(encode_line(frame(seq)))
        assert [line["seq"] for line in wait_lines(out, 4)] == [5, 6, 7, 9]
        code, err = sub.stop()
    finally:
        pub.close()
    assert code == 0, err
    assert "received 5 messages: 4 results, 0 heartbeats, 0 duplicates, 0 malformed, 1 status" in err
    assert "missing: 3 not received, 3 no longer on the device, 3 not received (yet)" in err
    assert (
        "cam1 epoch ep1: 9 missing seq: 3-4, 8 not received; 0-2 no longer on the device; 10-12 not received (yet)"
        in err
    )
    state = json.loads((tmp_path / "r.jsonl.state.json").read_text())
    (stream,) = state["streams"]
    assert (stream["first"], stream["top"], stream["above"]) == (5, 7, [[9, 9]])
    assert (stream["first_seq"], stream["first_held"], stream["last_issued"]) == (0, 3, 12)


def test_status_updates_close_the_trailing_gap_and_a_forged_status_is_rejected(
    mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    out = tmp_path / "r.jsonl"
    pub = Publisher(mosquitto)
    try:
        sub = Subscriber("--broker", mosquitto.url, "--output", str(out), state_home=tmp_path / "state")
        pub.publish(status(0, 0, 1), topic="edge/cam1/status", retain=True)
        pub.publish(encode_line(frame(0)))
        pub.publish(encode_heartbeat(D, E, 1, 2001.0, {"mask": {"held": 1}}))
        pub.publish(encode_line(frame(2)))
        pub.publish(status(0, 0, 2), topic="edge/cam1/status", retain=True)
        pub.publish(status(0, 0, 99, device="cam2"), topic="edge/cam1/status")  # another device's: forged
        pub.publish(b"{not json", topic="edge/cam1/status")
        pub.publish(status(0, 0, 3), topic="edge/cam1/status", retain=True)
        pub.publish(encode_line(frame(3)))  # the last one: when it is written, the rest was taken
        assert [line["seq"] for line in wait_lines(out, 3)] == [0, 2, 3]
        code, err = sub.stop()
    finally:
        pub.close()
    assert code == 0, err
    assert (
        "received 9 messages: 3 results, 1 heartbeats, 0 duplicates, 1 malformed, "
        "1 rejected (device differs from the topic's), 3 status"
    ) in err
    assert "cam1 epoch ep1: no gaps" in err and "cam2 epoch" not in err


def test_a_restart_goes_on_from_the_state_file(mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    """Run 1 writes 0-4. While it is away the device's 5-7 never reach the broker (dropped on
    the device); run 2 gets 8, 9 and 3 again: 5-7 is a gap (a fresh tracker would take 8 as the
    start of the stream), 3 a duplicate that is not written twice."""
    out = tmp_path / "r.jsonl"
    pub = Publisher(mosquitto)
    try:
        first = Subscriber("--broker", mosquitto.url, "--output", str(out), state_home=tmp_path / "state")
        for seq in range(5):
            pub.publish(encode_line(frame(seq)))
        assert len(wait_lines(out, 5)) == 5
        code, err = first.stop()
        assert code == 0 and "cam1 epoch ep1: no gaps" in err, err
        assert (tmp_path / "r.jsonl.state.json").exists()
        for seq in (8, 3, 9):
            pub.publish(encode_line(frame(seq)))  # queued in the session while away
        again = Subscriber("--broker", mosquitto.url, "--output", str(out), state_home=tmp_path / "state")
        assert "(session resumed)" in again.first
        pub.publish(encode_line(frame(4)))  # live, again: a duplicate
        pub.publish(encode_line(frame(10)))  # the last one: when it is written, the rest was taken
        lines = wait_lines(out, 8)
        code, err = again.stop()
    finally:
        pub.close()
    assert code == 0, err
    assert [line["seq"] for line in lines] == [0, 1, 2, 3, 4, 8, 9, 10]
    assert "received 5 messages: 3 results, 0 heartbeats, 2 duplicates" in err
    assert "cam1 epoch ep1: 3 missing seq: 5-7 not received" in err
