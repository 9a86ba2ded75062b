"""Preprocessing ahead (``Engine.prepare``, the daemon's capture thread): the same results as
``infer`` preprocessing itself, an input prepared by another engine not used, and the daemon
preparing every frame of a folder but none of a live source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_runtime.config import RuntimeConfig
from edge_runtime.daemon.pipeline import Daemon
from edge_runtime.frames.synthetic import SyntheticSource
from edge_runtime.inference.engine import Engine, EngineOptions, PreparedInput


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].to_dict() == b[name].to_dict(), name


def test_a_prepared_input_gives_the_same_results(demo_bundle: Path) -> None:
    frame = SyntheticSource(640, 480).render(3)
    with (
        Engine.from_bundle(demo_bundle, EngineOptions()) as engine,
        Engine.from_bundle(demo_bundle, EngineOptions()) as other,
    ):
        for name in engine.head_names:
            engine.scheduler.set_every_n_frames(name, 1)
        plain = engine.infer(frame, frame_id=0)
        prepared = engine.prepare(frame)
        assert prepared.engine is engine and prepared.ms > 0
        ahead = engine.infer(frame, frame_id=1, prepared=prepared)
        _same(plain.results, ahead.results)
        assert ahead.latency_ms["preprocess"] >= prepared.ms  # the work is still counted
        # another engine's input (its spec may differ after a swap) is not used: preprocessed again
        bogus = PreparedInput(other, np.zeros_like(prepared.model_input), prepared.geometry, 1.0)
        _same(plain.results, engine.infer(frame, frame_id=2, prepared=bogus).results)


@pytest.mark.parametrize("live", [False, True])
def test_the_daemon_prepares_in_capture_only_where_every_frame_is_processed(
    demo_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, live: bool
) -> None:
    calls: list[int] = []
    original = Engine.prepare

    def counting(self: Engine, frame: object) -> PreparedInput:
        calls.append(1)
        return original(self, frame)  # type: ignore[arg-type]

    monkeypatch.setattr(Engine, "prepare", counting)
    folder = tmp_path / "frames"
    folder.mkdir()
    source = SyntheticSource(64, 48)
    for i in range(6):
        np.save(folder / f"{i:03d}.npy", source.render(i))
    flags = {
        "bundle": str(demo_bundle),
        "source": str(folder),
        "state_dir": str(tmp_path / "state"),
        "output": str(tmp_path / "out.jsonl"),
        "device_id": "t",
    }
    if live:
        flags["fps"] = 1000.0  # throttled: the newest frame wins, frames may be dropped
    daemon = Daemon(RuntimeConfig.load(flags=flags, environ={}))
    assert daemon.run(install_signals=False) == 0
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == daemon.counters.results_written > 0
    assert len(calls) == (0 if live else 6)


def test_a_stopping_capture_does_not_replace_an_unread_frame() -> None:
    import threading

    from edge_runtime.daemon.handoff import LatestFrameSlot
    from edge_runtime.frames.frame import Frame

    image = np.zeros((2, 2, 3), np.uint8)
    slot = LatestFrameSlot(drop_old=False)
    stop = threading.Event()
    slot.put(Frame(image, "RGB", 0, 0.0, "test"), stop)
    stop.set()
    slot.put(Frame(image, "RGB", 1, 0.0, "test"), stop)  # the stop came while frame 0 was unread
    item = slot.get()
    assert item is not None and item[0].frame_id == 0 and slot.dropped == 0
