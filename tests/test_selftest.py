"""Self-test data in the bundle (exporter.selftest) and its check on the device (edge_runtime.trust.selftest):
real splits, real ONNX Runtime sessions, bundles changed on disk and re-hashed."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edge_runtime.bundle.reader import load_bundle, sha256_file
from edge_runtime.cli import main as runtime_main
from edge_runtime.frames.png import decode_png
from edge_runtime.inference.engine import Engine, EngineOptions
from edge_runtime.trust.selftest import (
    DECODED_MARGIN,
    NO_DATA,
    SelfTestError,
    SelfTestReport,
    check_selftest,
    path_key,
    run_selftest,
)
from exporter.bundle import existing_files, write_bundle
from exporter.pipeline import SplitOptions, SplitResult, split_model
from exporter.quantize import QuantizeOptions, quantize_bundle
from exporter.selftest import synthetic_frames, write_selftest
from tests.faint_detector import HEADS_TOML, faint_objectness_detector, frames_with_bright_objects

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _copy(bundle: Path, tmp_path: Path) -> Path:
    out = tmp_path / "bundle"
    shutil.copytree(bundle, out)
    return out


def _rewrite(bundle_dir: Path, changes: dict[str, bytes]) -> None:
    """Replace files of a bundle and recompute the manifest's hashes (as an exporter would)."""
    bundle = load_bundle(bundle_dir, verify_hashes=False, warn_unchecked=False)
    files = existing_files(bundle)
    files.update(changes)
    write_bundle(bundle_dir, files, bundle.manifest, force=True)


def _selftest(bundle_dir: Path, precision: str = "fp32") -> SelfTestReport:
    with Engine.from_bundle(bundle_dir, EngineOptions(precision=precision)) as engine:
        return run_selftest(engine)


@pytest.fixture(scope="module")
def int8_bundle(demo_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo bundle quantized to INT8 on frames of its kind (a shape on a dark background)."""
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 60, (16, 120, 160, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        y, x, size = int(rng.integers(10, 60)), int(rng.integers(10, 90)), int(rng.integers(20, 45))
        frame[y : y + size, x : x + size] = (200 + i % 3 * 20, 40 * (i % 4), 255 - 30 * (i % 5))
    calib = tmp_path_factory.mktemp("calib") / "frames.npy"
    np.save(calib, frames)
    out = tmp_path_factory.mktemp("q") / "bundle"
    quantize_bundle(demo_bundle, out, QuantizeOptions(calib=calib, precision="int8"))
    return out


def test_split_writes_selftest_files_listed_with_sha256(demo_split: SplitResult) -> None:
    root = demo_split.bundle_dir
    manifest = json.loads((root / "manifest.json").read_text())
    section = manifest["selftest"]
    pngs = [f"selftest/frame_{i}.png" for i in range(4)]
    assert section == {
        "frames": pngs,
        "expected": "selftest/expected.npz",
        "decoded": "selftest/expected.json",
        "tolerance": {},
        "source": "synthetic",
    }
    for rel in (*pngs, "selftest/expected.npz", "selftest/expected.json"):
        assert manifest["files"][rel] == {"sha256": sha256_file(root / rel), "size": (root / rel).stat().st_size}
    frames = [decode_png((root / rel).read_bytes(), rel) for rel in pngs]
    assert all(f.dtype == np.uint8 and f.shape == (128, 128, 3) for f in frames)
    assert np.array_equal(frames[1], synthetic_frames(load_bundle(root, warn_unchecked=False).manifest.input, 4)[1])
    with np.load(root / "selftest/expected.npz", allow_pickle=False) as expected:
        keys = {f"{h}/{o}" for h, e in manifest["heads"].items() for o in e["outputs"]}
        assert set(expected.files) == keys
        assert all(expected[k].dtype == np.float32 and len(expected[k]) == 4 for k in keys)
    decoded = json.loads((root / "selftest/expected.json").read_text())
    assert len(decoded["frames"]) == 4
    assert set(decoded["frames"][0]["results"]) == set(manifest["heads"])
    assert decoded["frames"][0]["results"]["shape"]["labels"][0] in ("circle", "square", "triangle")


def test_fp32_bundle_passes_nearly_exactly(demo_bundle: Path) -> None:
    with Engine.from_bundle(demo_bundle) as engine:
        report = check_selftest(engine)
    assert report.passed and report.skipped is None and report.frames == 4
    assert set(report.heads) == {"shape", "box", "mask"}
    for check in report.heads.values():
        assert check.metric == "max_abs_error" and check.precision == "fp32"
        assert check.value <= check.bound < 0.1
    assert len(report.summary().splitlines()) == 3


def test_int8_bundle_is_tested_on_held_back_calibration_frames_with_the_gates_metrics(int8_bundle: Path) -> None:
    manifest = load_bundle(int8_bundle, warn_unchecked=False).manifest
    spec = manifest.selftest
    assert spec is not None and spec.source == "calibration" and len(spec.frame_files) == 4
    # the frames are 4 of the calibration frames the gate held back, stored losslessly
    stored = [decode_png((int8_bundle / rel).read_bytes(), rel) for rel in spec.frame_files]
    assert all(f.shape == (120, 160, 3) for f in stored)
    with Engine.from_bundle(int8_bundle, EngineOptions(precision="int8")) as engine:
        report = check_selftest(engine)
        int8_heads = [n for n, a in engine.artifacts.items() if a.precision == "int8" and n != "trunk"]
        key = {n: path_key(engine.artifacts["trunk"], engine.artifacts[n]) for n in engine.head_names}
    assert report.passed and report.source == "calibration", report.summary()
    assert int8_heads, "the quantizer kept every head float: nothing to check"
    metrics = {"shape": "top1_agreement", "box": "relative_error", "mask": "pixel_agreement"}
    for name, check in report.heads.items():
        assert check.metric == metrics[name]
        # what the exporter measured on these frames with these artifacts, reproduced here
        assert check.value == pytest.approx(spec.agreement[name][key[name]], abs=1e-6)
        assert check.bound == pytest.approx(spec.agreement[name][key[name]] - DECODED_MARGIN)
    assert "/4 frames agree" in report.heads["shape"].detail


def test_changed_head_graph_fails_naming_the_head(demo_bundle: Path, tmp_path: Path) -> None:
    root = _copy(demo_bundle, tmp_path)
    model = onnx.load(root / "heads/shape.fp32.onnx")
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.5, init.name))
    _rewrite(root, {"heads/shape.fp32.onnx": model.SerializeToString()})
    report = _selftest(root)
    assert not report.passed
    assert not report.heads["shape"].passed and report.heads["box"].passed
    with (
        Engine.from_bundle(root) as engine,
        pytest.raises(SelfTestError, match=r"head 'shape' \(fp32\): max_abs_error"),
    ):
        check_selftest(engine)
    assert runtime_main(["selftest", str(root)]) == 1


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param(
            lambda e: {"selftest/expected.npz": _npz(**{k: np.array([object()] * 4) for k in e})},
            "selftest/expected.npz: cannot read",
            id="pickled-npz",
        ),
        pytest.param(lambda e: {"selftest/expected.npz": b"not a zip"}, "selftest/expected.npz", id="not-npz"),
        pytest.param(
            lambda e: {"selftest/expected.npz": _npz(**{k: v for k, v in e.items() if not k.startswith("box/")})},
            "no expected output 'box/box' for head 'box'",
            id="missing-key",
        ),
        pytest.param(
            lambda e: {"selftest/expected.npz": _npz(**{k: v[:2] for k, v in e.items()})},
            "must be float with 4 frames first",
            id="frame-count",
        ),
        pytest.param(
            lambda e: {"selftest/frame_2.png": b"\x89PNG\r\n\x1a\n not really"},
            "self-test frame selftest/frame_2.png: ",
            id="frame-not-png",
        ),
    ],
)
def test_corrupt_selftest_data_raises_naming_the_file(
    demo_bundle: Path, tmp_path: Path, changes: Callable[[dict[str, np.ndarray]], dict[str, bytes]], message: str
) -> None:
    root = _copy(demo_bundle, tmp_path)
    with np.load(root / "selftest/expected.npz") as archive:
        expected = {k: archive[k] for k in archive.files}
    _rewrite(root, changes(expected))
    with Engine.from_bundle(root) as engine, pytest.raises(SelfTestError, match=message):
        run_selftest(engine)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_bundle_without_selftest_is_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = split_model(
        EXAMPLES / "demo_multitask.onnx",
        tmp_path / "bundle",
        SplitOptions(input_spec=EXAMPLES / "demo_input.toml", head_spec=EXAMPLES / "demo_heads.toml", selftest=False),
    )
    assert "selftest" not in json.loads((result.bundle_dir / "manifest.json").read_text())
    assert not (result.bundle_dir / "selftest").exists()
    with Engine.from_bundle(result.bundle_dir) as engine:
        report = check_selftest(engine)
    assert report.passed and report.skipped == NO_DATA and not report.heads
    assert runtime_main(["selftest", str(result.bundle_dir)]) == 0
    assert NO_DATA in capsys.readouterr().out


def test_tolerance_override_and_only_loaded_heads(demo_bundle: Path, tmp_path: Path) -> None:
    root = _copy(demo_bundle, tmp_path)
    frames = [np.full((64, 96, 3), 120, np.uint8), np.full((400, 300, 3), 60, np.uint8)]
    write_selftest(root, frames=frames, tolerance={"box": {"atol": 0.5}})
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["selftest"]["tolerance"] == {"box": {"atol": 0.5}}
    with Engine.from_bundle(root, EngineOptions(heads=("box",))) as engine:
        report = check_selftest(engine)
    assert list(report.heads) == ["box"] and report.frames == 2
    assert report.heads["box"].bound >= 0.5
    # a frame larger than twice the model input (128) is stored scaled down: 256 on its longest side
    assert decode_png((root / "selftest/frame_1.png").read_bytes(), "f").shape == (256, 192, 3)


def test_write_selftest_drops_the_signature(demo_bundle: Path, tmp_path: Path) -> None:
    root = _copy(demo_bundle, tmp_path)
    (root / "manifest.sig").write_text("c2lnbmF0dXJl\n")
    write_selftest(root, count=1)
    assert not (root / "manifest.sig").exists()
    assert load_bundle(root, warn_unchecked=False).manifest.selftest.frame_files == ("selftest/frame_0.png",)  # type: ignore[union-attr]
    assert not (root / "selftest/frame_3.png").exists()


def test_cli_prints_one_line_per_head(demo_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert runtime_main(["selftest", str(demo_bundle)]) == 0
    out = capsys.readouterr().out
    assert "shape: ok fp32 max_abs_error" in out and "self-test passed: 3 heads on 4 synthetic frames" in out
    assert runtime_main(["inspect", str(demo_bundle)]) == 0
    assert "self-test: 4 synthetic frames, heads shape, box, mask" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("section", "error"),
    [
        pytest.param(
            {"frames": "selftest/frames.npy", "expected": "e.npz", "tolerance": {"a": {"rtol": 0.1}}}, None, id="ok"
        ),
        pytest.param({"frames": "f.npy"}, "missing required key 'expected'", id="no-expected"),
        pytest.param({"frames": "../f.npy", "expected": "e.npz"}, "must stay inside the bundle", id="escape"),
        pytest.param(
            {"frames": "f.npy", "expected": "e.npz", "tolerance": {"a": 1}}, "must be an object", id="tol-type"
        ),
        pytest.param(
            {"frames": "f.npy", "expected": "e.npz", "tolerance": {"a": {"min_cosine": 2}}}, "out of range", id="cosine"
        ),
        pytest.param([], "'selftest' must be an object", id="not-object"),
    ],
)
def test_manifest_selftest_section(section: object, error: str | None, caplog: pytest.LogCaptureFixture) -> None:
    from edge_runtime.bundle.selftest_spec import SelfTestSpec
    from edge_runtime.errors import BundleError

    if error is None:
        spec = SelfTestSpec.from_mapping({**section, "future": 1}, "m: selftest")  # type: ignore[dict-item]
        assert spec.tolerance == {"a": {"rtol": 0.1}} and spec.decoded is None
        assert "ignoring unknown key 'future'" in caplog.text
        assert SelfTestSpec.from_mapping(spec.to_dict(), "m") == spec
    else:
        with pytest.raises(BundleError, match=error):
            SelfTestSpec.from_mapping(section, "m: selftest")  # type: ignore[arg-type]


def test_int8_detector_with_near_zero_objectness_starts_and_passes_its_selftest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "faint.onnx"
    faint_objectness_detector(model)
    heads = tmp_path / "heads.toml"
    heads.write_text(HEADS_TOML, encoding="utf-8")
    inputs = tmp_path / "input.toml"
    inputs.write_text(
        'color = "RGB"\nscale = 0.00392156862745098\nmean = [0, 0, 0]\nstd = [1, 1, 1]\nresize = "stretch"\n'
    )
    calib = tmp_path / "calib.npy"
    np.save(calib, frames_with_bright_objects(16, seed=9))  # real frames: objects on a dark scene
    bundle = tmp_path / "bundle"
    split_model(model, bundle, SplitOptions(head_spec=heads, input_spec=inputs))
    # the split's synthetic self-test: the float model finds nothing there, and the report says so
    with Engine.from_bundle(bundle) as engine:
        assert check_selftest(engine).source == "synthetic"
    quantize_bundle(bundle, options=QuantizeOptions(calib=calib, precision="int8"))

    dark = np.full((64, 64, 3), 5, np.uint8)
    with Engine.from_bundle(bundle, EngineOptions(precision="int8")) as engine:
        assert {a.precision for a in engine.artifacts.values()} == {"int8"}, "the gate kept a graph float"
        objectness = np.asarray(engine.to_numpy(engine.run_graphs(engine.preprocess(dark))["objectness"]))
        report = check_selftest(engine)
    with Engine.from_bundle(bundle) as engine:
        float_objectness = np.asarray(engine.to_numpy(engine.run_graphs(engine.preprocess(dark))["objectness"]))
    # the case that broke the raw-cosine self-test: INT8 gives exactly 0 where float gives ~1e-3
    assert not objectness.any() and 5e-4 < float(float_objectness.max()) < 2e-3
    check = report.heads["det"]
    assert report.passed and report.source == "calibration", report.summary()
    assert check.metric == "detections_matched_iou0.9" and not check.vacuous
    assert "float detections matched" in check.detail
    assert runtime_main(["selftest", str(bundle), "--precision", "int8"]) == 0
    assert "self-test passed: 1 heads on 4 calibration frames" in capsys.readouterr().out
    # and the daemon starts on it (it runs the self-test first)
    assert runtime_main(["run", "--bundle", str(bundle), "--precision", "int8", "--source", "synthetic",
                         "--max-frames", "2", "--state-dir", str(tmp_path / "state")]) == 0  # fmt: skip


def test_raw_head_leaves_out_an_output_int8_cannot_represent(tmp_path: Path) -> None:
    model = tmp_path / "faint.onnx"
    faint_objectness_detector(model)
    heads = tmp_path / "heads.toml"
    heads.write_text('[heads.raw]\noutputs = ["scores", "boxes", "objectness"]\n', encoding="utf-8")
    calib = tmp_path / "calib.npy"
    np.save(calib, frames_with_bright_objects(16, seed=9))
    bundle = tmp_path / "bundle"
    split_model(model, bundle, SplitOptions(head_spec=heads))
    quantize_bundle(bundle, options=QuantizeOptions(calib=calib, precision="int8", min_agreement=0.9))
    entry = load_bundle(bundle, warn_unchecked=False).manifest.heads["raw"]
    int8 = entry.artifact("onnx", "int8")
    assert int8 is not None and 0 < int8.extra["output_steps"]["objectness"] < 0.01
    # frames on which the float objectness is ~1e-3 everywhere: INT8 gives exactly 0 there
    write_selftest(bundle, frames=[np.full((64, 64, 3), v, np.uint8) for v in (3, 9)])
    with Engine.from_bundle(bundle, EngineOptions(precision="int8")) as engine:
        report = check_selftest(engine)
    check = report.heads["raw"]
    assert report.passed and check.metric == "cosine_similarity"
    assert "left out objectness (float values below half the INT8 step" in check.detail


@pytest.mark.parametrize("device_has_opencv", [True, False])
def test_frames_that_need_resizing_check_the_same_with_or_without_opencv(
    demo_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device_has_opencv: bool
) -> None:
    # OpenCV's and numpy's bilinear resizes differ by a grey level: an FP32 bundle made where
    # OpenCV is installed failed its exact self-test on an arm64 device without it, until both
    # sides preprocessed the self-test frames with numpy
    import edge_runtime.frames.preprocess as preprocess

    root = _copy(demo_bundle, tmp_path)
    frames = [_large_synthetic_frame(300, 400, i) for i in range(3)]
    write_selftest(root, frames=frames)
    if not device_has_opencv:
        monkeypatch.setattr(preprocess, "optional_cv2", lambda: None)
    report = _selftest(root)
    assert report.passed, report.summary()
    assert all(c.value <= c.bound / 10 for c in report.heads.values())


def _large_synthetic_frame(width: int, height: int, index: int) -> np.ndarray:
    """A synthetic RGB frame of ``width`` x ``height`` (larger than the model input: it is resized)."""
    from edge_runtime.frames.synthetic import SyntheticSource

    return SyntheticSource(width, height).render(index * 5)
