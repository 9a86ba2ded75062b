"""Per-head publishing policy: report-by-exception with a deadband, heartbeats, QoS and expiry
per message."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from edge_runtime.codec import decode_payload, encode_line
from edge_runtime.delivery.reporting import HeadPolicy, Reporter, changed
from edge_runtime.errors import ConfigError
from edge_runtime.inference.results import Classification, FrameResult, Regression


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def frame(frame_id: int, score: float, label: str = "circle", box: list[float] | None = None) -> FrameResult:
    """A frame's typed results, as the engine hands them to the reporter."""
    return FrameResult(
        frame_id=frame_id,
        timestamp=1000.0 + frame_id,
        results={
            "shape": Classification(class_ids=np.array([1]), scores=np.array([score]), labels=(label,)),
            "box": Regression(values=np.array(box or [0.1, 0.2, 0.5, 0.6]), names=("x0", "y0", "x1", "y1")),
        },
        latency_ms={"total": 1.0},
    )


@pytest.mark.parametrize(
    ("old", "new", "deadband", "expected"),
    [
        (1.0, 1.04, 0.05, False),
        (1.0, 1.06, 0.05, True),
        (1, 2, 0.5, True),  # ints (class ids, counts) move by whole steps
        (1, 2, 1.0, False),
        ("circle", "square", 10.0, True),  # labels change whatever the deadband
        ([1.0, 2.0], [1.0, 2.0, 3.0], 10.0, True),  # a detection more
        ({"a": 1.0}, {"b": 1.0}, 10.0, True),
        (True, False, 10.0, True),
        (True, 1, 10.0, True),  # bool is not a number here
        (math.nan, math.nan, 0.0, False),
        (1.0, math.nan, 10.0, True),
        (math.inf, math.inf, 0.0, False),
        (None, None, 0.0, False),
        (None, 0.0, 10.0, True),
        ({"m": [[0, 1], [1, 1]]}, {"m": [[0, 1], [1, 1]]}, 0.0, False),
        # typed results: float arrays by the deadband, integer arrays (masks, ids) exactly
        (np.array([0.5, 0.25], np.float32), np.array([0.52, 0.25], np.float32), 0.05, False),
        (np.array([0.5, 0.25], np.float32), np.array([0.6, 0.25], np.float32), 0.05, True),
        (np.array([0.5], np.float32), np.array([0.5, 0.1], np.float32), 10.0, True),  # a shape change
        (np.array([np.nan], np.float32), np.array([np.nan], np.float32), 0.0, False),
        (np.array([1.0], np.float32), np.array([np.inf], np.float32), 10.0, True),
        (np.array([[0, 1]], np.uint8), np.array([[0, 2]], np.uint8), 10.0, True),
        (np.array([[0, 1]], np.uint8), np.array([[0, 1]], np.uint8), 0.0, False),
        (np.array([1], np.int64), [1], 10.0, True),  # an array is not a list
        (
            Classification(class_ids=np.array([1]), scores=np.array([0.9]), labels=("cat",)),
            Classification(class_ids=np.array([1]), scores=np.array([0.92]), labels=("cat",)),
            0.05,
            False,
        ),
        (
            Classification(class_ids=np.array([1]), scores=np.array([0.9]), labels=("cat",)),
            Classification(class_ids=np.array([2]), scores=np.array([0.9]), labels=("dog",)),
            0.5,
            True,
        ),
        (
            Regression(values=np.array([1.0]), names=("v",)),
            Classification(class_ids=np.array([0]), scores=np.array([1.0]), labels=("v",)),
            10.0,
            True,
        ),  # another result type
    ],
)
def test_changed(old: Any, new: Any, deadband: float, expected: bool) -> None:
    assert changed(old, new, deadband) is expected


def test_lines_pass_unchanged_without_a_deadband() -> None:
    reporter = Reporter({"shape": HeadPolicy(), "box": HeadPolicy()})
    line = frame(0, 0.9)
    assert reporter.filter(line) is line
    assert reporter.filter(frame(1, 0.9)) is not None
    assert not reporter.by_exception and reporter.heartbeat_due(device="cam1", epoch="ep") is None


def test_report_by_exception_keeps_changes_only() -> None:
    clock = Clock()
    reporter = Reporter({"shape": HeadPolicy(deadband=0.05), "box": HeadPolicy(deadband=0.02)}, clock=clock)
    first = reporter.filter(frame(0, 0.90))
    assert first is not None and set(first.results) == {"shape", "box"}  # first result always goes out
    assert reporter.filter(frame(1, 0.93)) is None  # within both deadbands: nothing to publish
    moved = reporter.filter(frame(2, 0.93, box=[0.1, 0.2, 0.55, 0.6]))
    assert moved is not None and set(moved.results) == {"box"}  # the box moved, the score did not
    assert moved.frame_id == 2
    relabelled = reporter.filter(frame(3, 0.93, label="square", box=[0.1, 0.2, 0.55, 0.6]))
    assert relabelled is not None and set(relabelled.results) == {"shape"}
    # compared with the last *published* value, not the previous frame: slow drift is reported
    assert reporter.filter(frame(4, 0.96, label="square", box=[0.1, 0.2, 0.55, 0.6])) is None
    drifted = reporter.filter(frame(5, 0.99, label="square", box=[0.1, 0.2, 0.55, 0.6]))
    assert drifted is not None
    shape = drifted.results["shape"]
    assert isinstance(shape, Classification) and shape.scores.tolist() == [np.float32(0.99)]
    assert reporter.suppressed_frames == 2 and reporter.suppressed_results == 7


def test_a_head_without_deadband_is_always_published() -> None:
    reporter = Reporter({"shape": HeadPolicy(deadband=0.5), "box": HeadPolicy()})
    reporter.filter(frame(0, 0.9))
    line = reporter.filter(frame(1, 0.9))
    assert line is not None and set(line.results) == {"box"}


def test_heartbeat_only_after_silence() -> None:
    clock = Clock()
    reporter = Reporter(
        {"shape": HeadPolicy(deadband=0.5), "box": HeadPolicy(deadband=0.5)}, heartbeat_s=10, clock=clock
    )
    assert reporter.filter(frame(0, 0.9)) is not None
    clock.now += 9
    assert reporter.filter(frame(1, 0.9)) is None
    assert reporter.heartbeat_due(device="cam1", epoch="ep") is None  # 9 s of silence < 10 s
    clock.now += 2
    assert reporter.filter(frame(2, 0.9)) is None
    beat = reporter.heartbeat_due(device="cam1", epoch="ep")
    assert beat is not None and beat["kind"] == "heartbeat"
    assert beat["heads"]["shape"]["held"] == 2 and beat["heads"]["box"]["held"] == 2
    assert reporter.heartbeat_due(device="cam1", epoch="ep") is None  # the clock restarted
    # the heartbeat is a valid message: it encodes and decodes with its seq
    decoded = decode_payload(encode_line({**beat, "seq": 7}))
    assert decoded["kind"] == "heartbeat" and decoded["seq"] == 7 and decoded["heads"]["shape"]["held"] == 2
    clock.now += 5
    assert reporter.filter(frame(3, 0.1)) is not None  # a change: published, the clock restarts
    clock.now += 8
    assert reporter.heartbeat_due(device="cam1", epoch="ep") is None
    assert reporter.heartbeats == 1


def test_message_qos_and_expiry_combine_the_heads() -> None:
    reporter = Reporter(
        {
            "shape": HeadPolicy(qos=0, expiry_s=10),
            "box": HeadPolicy(qos=1, expiry_s=60),
            "mask": HeadPolicy(qos=2),
            "embedding": HeadPolicy(float32=True),
        }
    )
    assert reporter.qos(["shape"]) == 0
    assert reporter.qos(["shape", "box"]) == 1
    assert reporter.qos(["shape", "mask"]) == 2
    assert reporter.qos([]) == 1  # the default
    assert reporter.expiry_s(["shape", "box"]) == 60  # the longest: no head's result expires early
    assert reporter.expiry_s(["shape", "mask"]) is None  # mask never expires, so neither does the message
    assert reporter.expiry_s(["unknown"]) is None
    assert reporter.float32_heads() == {"embedding"}


@pytest.mark.parametrize(
    "kwargs", [{"qos": 3}, {"qos": True}, {"expiry_s": 0}, {"deadband": -1.0}, {"deadband": math.nan}]
)
def test_bad_policy(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        HeadPolicy(**kwargs)


def test_bad_heartbeat_interval() -> None:
    with pytest.raises(ConfigError, match="heartbeat"):
        Reporter({}, heartbeat_s=0)
