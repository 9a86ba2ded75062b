"""``edge_runtime.tuning.timing.interleave``: turns of consecutive frames, the first frame of a
turn of short frames not recorded, the warm-up round not recorded, and the time budget kept.
The runners count calls; a fake clock makes the budget deterministic (no timing is asserted)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest

from edge_runtime.tuning import timing
from edge_runtime.tuning.timing import interleave

INPUTS = [np.zeros(1)]


class Recorder:
    """Runners that log which of them ran, in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def runner(self, name: str, work: float = 0.0) -> Callable[[np.ndarray], None]:
        def run(_x: np.ndarray) -> None:
            self.calls.append(name)
            end = time.perf_counter() + work  # busy, as a graph is
            while time.perf_counter() < end:
                pass

        return run


def test_a_turn_runs_consecutive_frames_and_does_not_record_its_first() -> None:
    rec = Recorder()
    runners = {"a": rec.runner("a"), "b": rec.runner("b")}
    timings = interleave(runners, INPUTS, seconds=0.0, visit_ms=2.0, min_rounds=3)
    # 4 rounds (a warm-up and 3), the order reversed every round: a b | b a | a b | b a
    runs = [rec.calls[0]]
    lengths = [0]
    for name in rec.calls:
        if name != runs[-1]:
            runs.append(name)
            lengths.append(0)
        lengths[-1] += 1
    assert runs == ["a", "b", "a", "b", "a"]
    assert min(lengths) > 4  # many frames per turn, not one each
    # a: its warm-up turn (the first run) is not recorded, nor the first frame of its 3 later turns
    assert timings["a"].runs == rec.calls.count("a") - lengths[0] - 3
    assert timings["b"].runs > 0


def test_a_cold_first_frame_does_not_reach_the_percentiles() -> None:
    rec = Recorder()
    state = {"last": ""}

    def cold_then_warm(name: str) -> Callable[[np.ndarray], None]:
        def run(_x: np.ndarray) -> None:
            work = 0.004 if state["last"] != name else 0.0005  # 4 ms when another ran before
            state["last"] = name
            rec.runner(name, work)(_x)

        return run

    timings = interleave({"a": cold_then_warm("a"), "b": cold_then_warm("b")}, INPUTS, seconds=0.0, visit_ms=3.0)
    for name in ("a", "b"):
        assert timings[name].p95_ms < 3.0, timings[name]  # no 4 ms frame among the recorded ones


def test_long_frames_are_all_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timing, "WARM_FRAME_BELOW_MS", 2.0)  # 3 ms frames count as long
    rec = Recorder()
    timings = interleave({"slow": rec.runner("slow", 0.003)}, INPUTS, seconds=0.0, visit_ms=1.0, min_rounds=4)
    assert rec.calls.count("slow") == 5  # one turn each of 1 warm-up + 4 rounds: a frame each
    assert timings["slow"].runs == 4


def test_one_rule_for_every_candidate() -> None:
    # one runner's frames just under a turn, the other's just over: both turns start unrecorded
    rec = Recorder()
    timings = interleave(
        {"a": rec.runner("a", 0.0009), "b": rec.runner("b", 0.0011)}, INPUTS, seconds=0.0, visit_ms=1.0, min_rounds=3
    )
    assert timings["a"].runs == timings["b"].runs == 3  # per turn: an unrecorded frame, then one
    assert rec.calls.count("b") == 1 + 3 * 2  # b's longer frames too (its warm-up turn: one frame)


def test_a_round_that_would_not_fit_is_not_started() -> None:
    rec = Recorder()

    def clock() -> float:  # 10 ms per frame run so far
        return len(rec.calls) * 0.01

    runners = {"a": rec.runner("a"), "b": rec.runner("b")}
    interleave(runners, INPUTS, seconds=1.0, visit_ms=0.0, min_rounds=1, clock=clock)
    # each round runs 2 frames (visit 0: one recorded frame, no warm frame for frames >= visit)
    assert len(rec.calls) * 0.01 <= 1.0
    assert len(rec.calls) >= 1.0 / 0.01 - 2 * 2  # it used the time it was given
