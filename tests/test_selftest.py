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
from edge_runtime.inference.engine import Engine, EngineOptions
from edge_runtime.trust.selftest import NO_DATA, SelfTestError, SelfTestReport, check_selftest, run_selftest
from exporter.bundle import existing_files, write_bundle
from exporter.pipeline import SplitOptions, SplitResult, split_model
from exporter.quantize import QuantizeOptions, quantize_bundle
from exporter.selftest import write_selftest

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
    assert section == {
        "frames": "selftest/frames.npy",
        "expected": "selftest/expected.npz",
        "decoded": "selftest/expected.json",
        "tolerance": {},
    }
    for rel in ("selftest/frames.npy", "selftest/expected.npz", "selftest/expected.json"):
        assert manifest["files"][rel] == {"sha256": sha256_file(root / rel), "size": (root / rel).stat().st_size}
    frames = np.load(root / "selftest/frames.npy", allow_pickle=False)
    assert frames.dtype == np.uint8 and frames.shape == (4, 128, 128, 3)
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


def test_int8_bundle_passes_with_the_looser_bound(int8_bundle: Path) -> None:
    manifest = load_bundle(int8_bundle, warn_unchecked=False).manifest
    assert manifest.selftest is not None and "selftest/expected.npz" in manifest.files  # carried over
    with Engine.from_bundle(int8_bundle, EngineOptions(precision="int8")) as engine:
        report = check_selftest(engine)
        int8_heads = [n for n, a in engine.artifacts.items() if a.precision == "int8" and n != "trunk"]
    assert report.passed, report.summary()
    assert int8_heads, "the quantizer kept every head float: nothing to check"
    for name in int8_heads:
        check = report.heads[name]
        assert check.metric == "cosine_similarity" and check.precision == "int8"
        assert 0.9 <= check.bound <= 0.98 and check.value >= check.bound
    assert "top-1 agreement" in report.heads["shape"].detail


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
            lambda e: {"selftest/frames.npy": _npy(np.zeros((4, 8, 8), np.uint8))},
            "selftest/frames.npy: self-test frames must be an",
            id="frames-shape",
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
    write_selftest(root, frames=np.full((2, 64, 96, 3), 120, np.uint8), tolerance={"box": {"atol": 0.5}})
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["selftest"]["tolerance"] == {"box": {"atol": 0.5}}
    with Engine.from_bundle(root, EngineOptions(heads=("box",))) as engine:
        report = check_selftest(engine)
    assert list(report.heads) == ["box"] and report.frames == 2
    assert report.heads["box"].bound >= 0.5


def test_write_selftest_drops_the_signature(demo_bundle: Path, tmp_path: Path) -> None:
    root = _copy(demo_bundle, tmp_path)
    (root / "manifest.sig").write_text("c2lnbmF0dXJl\n")
    write_selftest(root, count=1)
    assert not (root / "manifest.sig").exists()
    assert len(np.load(root / "selftest/frames.npy")) == 1


def test_cli_prints_one_line_per_head(demo_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert runtime_main(["selftest", str(demo_bundle)]) == 0
    out = capsys.readouterr().out
    assert "shape: ok fp32 max_abs_error" in out and "self-test passed: 3 heads on 4 frames" in out
    assert runtime_main(["inspect", str(demo_bundle)]) == 0
    assert "self-test: 4 frames, heads shape, box, mask" in capsys.readouterr().out


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
    from edge_runtime.bundle.specs import SelfTestSpec
    from edge_runtime.errors import BundleError

    if error is None:
        spec = SelfTestSpec.from_mapping({**section, "future": 1}, "m: selftest")  # type: ignore[dict-item]
        assert spec.tolerance == {"a": {"rtol": 0.1}} and spec.decoded is None
        assert "ignoring unknown key 'future'" in caplog.text
        assert SelfTestSpec.from_mapping(spec.to_dict(), "m") == spec
    else:
        with pytest.raises(BundleError, match=error):
            SelfTestSpec.from_mapping(section, "m: selftest")  # type: ignore[arg-type]
