"""The gate needs something to measure: a detector whose float model finds nothing on the
held-back frames is measured on the calibration frames too, and where it finds nothing on any
frame, every candidate it judges is rejected (never accepted on an empty comparison).
Real splits and real ONNX Runtime quantization of a tiny grid detector."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.bundle.reader import load_bundle
from edge_runtime.inference.fidelity import Fidelity
from exporter.calibration import CalibrationSet
from exporter.gate import MIN_DETECTIONS, Gate, GateDecision, Task
from exporter.pipeline import SplitOptions, split_model
from exporter.quantize import QuantizeOptions, format_report, quantize_bundle
from tests.faint_detector import HEADS_TOML, dark_frames, faint_objectness_detector, frames_with_bright_objects

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def detector_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The faint grid detector split into trunk + head ``det`` (stretch resize, 0..1 input)."""
    root = tmp_path_factory.mktemp("faint")
    faint_objectness_detector(root / "faint.onnx")
    (root / "heads.toml").write_text(HEADS_TOML, encoding="utf-8")
    (root / "input.toml").write_text(
        'color = "RGB"\nscale = 0.00392156862745098\nmean = [0, 0, 0]\nstd = [1, 1, 1]\nresize = "stretch"\n',
        encoding="utf-8",
    )
    bundle = root / "bundle"
    split_model(
        root / "faint.onnx", bundle, SplitOptions(head_spec=root / "heads.toml", input_spec=root / "input.toml")
    )
    return bundle


def _quantize(bundle: Path, frames: np.ndarray, tmp_path: Path) -> tuple[Path, dict]:
    np.save(tmp_path / "frames.npy", frames)
    out = tmp_path / "int8"
    result = quantize_bundle(bundle, out, QuantizeOptions(calib=tmp_path / "frames.npy", precision="int8"))
    report = json.loads((out / "quantization.json").read_text())
    assert report["gate_frames"]["basis"] == result.gate_basis
    assert f"on {result.gate_basis}" in format_report(result)
    return out, report


def _dark_where_held_back(count: int) -> np.ndarray:
    """Frames with a bright object, except the ones :meth:`CalibrationSet.split` holds back."""
    frames = frames_with_bright_objects(count, seed=9)
    held = CalibrationSet(np.zeros((count, 1)), "x").held_out_indices()
    frames[held] = dark_frames(len(held), seed=3)
    return frames


def test_objects_on_the_held_back_frames_are_measured_there(
    detector_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        _out, report = _quantize(detector_bundle, frames_with_bright_objects(40, seed=9), tmp_path)
    assert report["gate_frames"] == {"frames": 10, "basis": "10 held-back frames", "blind": []}
    assert "fewer than" not in caplog.text
    head = next(d for d in report["decisions"] if d["graph"] == "det")
    assert head["fidelity"]["det"]["detail"]["reference_detections"] >= MIN_DETECTIONS


def test_nothing_on_the_held_back_frames_widens_the_gate_to_the_calibration_frames(
    detector_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        _out, report = _quantize(detector_bundle, _dark_where_held_back(16), tmp_path)
    assert report["gate_frames"]["frames"] == 16
    assert report["gate_frames"]["basis"] == (
        "4 held-back frames + 12 calibration frames (fewer than 10 detections for 'det' on the held-back ones)"
    )
    assert report["gate_frames"]["blind"] == []
    assert (
        "head 'det' (0): the float model finds fewer than 10 detections on the 4 held-back frames; the gate also"
        in (caplog.text)
    )
    for decision in report["decisions"]:
        assert decision["fidelity"]["det"]["detail"]["reference_detections"] >= 12, decision


def test_nothing_on_any_frame_rejects_every_candidate_and_keeps_the_bundle_float(
    detector_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        out, report = _quantize(detector_bundle, dark_frames(12, seed=2), tmp_path)
    assert report["gate_frames"]["blind"] == ["det"]
    assert "head 'det': the float model finds 0 detections on the 12 frames given, fewer than the 10" in caplog.text
    trunk, head = report["decisions"]
    assert not trunk["accepted"] and not head["accepted"]
    assert "det unmeasured (fewer than 10 float detections)" in trunk["reason"]
    assert len(trunk["attempts"]) == 1  # keeping nodes float cannot make the task measurable
    assert head["reason"].startswith("det unmeasured"), head["reason"]
    manifest = load_bundle(out).manifest
    for entry in (manifest.trunk, *manifest.heads.values()):
        assert {a.precision for a in entry.artifacts} == {"fp32"}


def test_keep_unmeasured_judges_on_what_there_is_and_says_so(
    detector_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    np.save(tmp_path / "frames.npy", dark_frames(12, seed=2))
    options = QuantizeOptions(calib=tmp_path / "frames.npy", precision="int8", keep_unmeasured=True)
    with caplog.at_level(logging.WARNING):
        quantize_bundle(detector_bundle, tmp_path / "int8", options)
    report = json.loads((tmp_path / "int8" / "quantization.json").read_text())
    assert report["gate_frames"]["blind"] == []
    assert report["gate_frames"]["basis"].endswith("; judged on fewer than 10 detections for 'det' on purpose")
    assert "it judges on them anyway (--keep-unmeasured)" in caplog.text
    assert any(d["accepted"] for d in report["decisions"])  # nothing found by either side: "agreement" 1.0


def test_a_blind_task_fails_the_verdict_with_its_reason() -> None:
    tasks = {"det": Task(None, ("scores", "boxes")), "cls": Task(None, ("logits",))}
    reference = [{"scores": np.ones((1, 4)), "boxes": np.ones((1, 4))}]
    gate = Gate(tasks, {"det": reference, "cls": []}, (64, 64), 0.99, blind=frozenset({"det"}))
    perfect = Fidelity("detections_matched_iou0.9", 1.0, 1)
    verdict = gate.decide(GateDecision("trunk", "int8", "trunk.int8.onnx"), {"det": perfect, "cls": perfect})
    assert not verdict.accepted and verdict.blind == ("det",)
    assert verdict.reason("not written") == (
        "cannot measure 'det': the float model finds fewer than 10 detections on the frames given; not written"
    )
    assert gate.judge({"cls": perfect}, "int8").accepted  # a head judged alone: another's blindness is not its
    # a float candidate of a blind task is judged on the agreement it was given (its raw outputs)
    assert gate.decide(GateDecision("trunk", "fp32", "trunk.tflite"), {"det": perfect, "cls": perfect}).accepted
    raw = gate.fidelity("det", reference, "fp16")
    assert (raw.metric, raw.value) == ("relative_error", 1.0)


@pytest.mark.slow
@pytest.mark.parametrize("blind", [False, True], ids=["widened", "blind"])
def test_the_tflite_gate_widens_and_refuses_the_same_way(detector_bundle: Path, tmp_path: Path, blind: bool) -> None:
    pytest.importorskip("ai_edge_litert", reason="LiteRT is not installed (pip install 'edge-runtime[tflite]')")
    from exporter.tflite import TfliteOptions, convert_bundle, format_tflite_report
    from exporter.toolenv import ToolEnvError, ensure_env

    try:
        ensure_env("onnx2tf")
    except ToolEnvError as exc:  # no PyPI: say why, loudly
        pytest.fail(f"the onnx2tf environment could not be built: {exc}")
    frames = dark_frames(16, seed=2) if blind else _dark_where_held_back(16)
    np.save(tmp_path / "frames.npy", frames)
    result = convert_bundle(
        detector_bundle, tmp_path / "tflite", TfliteOptions(calib=tmp_path / "frames.npy", precisions=("fp32",))
    )
    report = json.loads((tmp_path / "tflite" / "tflite.json").read_text())
    assert report["gate_frames"]["basis"] == result.gate_basis
    assert f"gate measured on {result.gate_basis}" in format_tflite_report(result)
    assert report["gate_frames"]["frames"] == 16
    if blind:  # FP32 conversions are judged on the raw outputs instead of the detections
        assert report["gate_frames"]["blind"] == ["det"]
        assert [d["accepted"] for d in report["decisions"]] == [True, True], report["decisions"]
        assert {d["fidelity"]["det"]["metric"] for d in report["decisions"]} == {"relative_error"}
    else:
        assert "calibration frames" in result.gate_basis and report["gate_frames"]["blind"] == []
        assert [d["accepted"] for d in report["decisions"]] == [True, True], report["decisions"]
        assert report["decisions"][1]["fidelity"]["det"]["detail"]["reference_detections"] >= MIN_DETECTIONS


def test_a_kept_graph_that_is_not_faster_than_fp32_gets_a_note() -> None:
    decision = GateDecision("trunk", "int8", "trunk.int8.onnx", accepted=True, latency_ms=1.04, fp32_latency_ms=1.0)
    assert decision.slower_note() == (
        "trunk int8 is not faster than fp32 on this machine (1.040 ms vs 1.000 ms, 1.04x): "
        "`edge-runtime tune` on the device measures which to run"
    )
    assert GateDecision("trunk", "int8", "p", accepted=True, latency_ms=0.6, fp32_latency_ms=1.0).slower_note() is None
    assert GateDecision("trunk", "int8", "p", accepted=False, latency_ms=2.0, fp32_latency_ms=1.0).slower_note() is None
    assert GateDecision("trunk", "int8", "p", accepted=True).slower_note() is None
