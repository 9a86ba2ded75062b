"""exporter.calibration: image folders, .npy arrays and generated frames → preprocessed model inputs,
the held-out split, and ONNX Runtime's CalibrationDataReader contract (with a real quantize_static)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

import edge_runtime.frames.images as images
from edge_runtime.bundle.reader import load_bundle
from edge_runtime.bundle.specs import InputSpec
from edge_runtime.errors import BackendUnavailableError, ConfigError
from edge_runtime.frames.frame import optional_cv2
from edge_runtime.frames.preprocess import Preprocessor
from exporter.calibration import ArrayDataReader, CalibrationSet, load_calibration
from tests import onnx_models

cv2: Any = optional_cv2()
try:
    import PIL.Image as PILImage
except ImportError:  # pragma: no cover - the export extra brings Pillow
    PILImage = None

needs_cv2 = pytest.mark.skipif(cv2 is None, reason="OpenCV (the camera extra) is not installed")
needs_pil = pytest.mark.skipif(PILImage is None, reason="Pillow (the export extra) is not installed")

#: The demo model's input (examples/demo_input.toml), built directly so most tests need no split.
DEMO_SPEC = InputSpec(
    name="image",
    shape=(1, 3, 128, 128),
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
)


def rgb_image(seed: int, height: int = 48, width: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def write_image(path: Path, rgb: np.ndarray) -> Path:
    """Write an (H, W, 3) RGB image with OpenCV, else Pillow (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if cv2 is not None:
        ok, data = cv2.imencode(path.suffix.lower(), np.ascontiguousarray(rgb[:, :, ::-1]))
        assert ok
        path.write_bytes(data.tobytes())
    elif PILImage is not None:
        fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower())
        PILImage.fromarray(rgb).save(path, format=fmt)
    else:
        pytest.skip("writing test images needs OpenCV or Pillow")
    return path


def preprocessed(spec: InputSpec, rgb: np.ndarray) -> np.ndarray:
    """What the runtime feeds the model for this frame, without the batch dimension."""
    return Preprocessor(spec)(rgb, color="RGB")[0][0]


@pytest.fixture(params=[pytest.param("cv2", marks=needs_cv2), pytest.param("pillow", marks=needs_pil)])
def decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with each image decoder: OpenCV, and Pillow (OpenCV hidden through the reader's seam)."""
    if request.param == "pillow":
        monkeypatch.setattr(images, "_cv2", lambda: None)
    return str(request.param)


# --------------------------------------------------------------------------- folders


def test_folder_of_pngs_equals_what_the_runtime_preprocessing_gives(tmp_path: Path, decoder: str) -> None:
    images = [rgb_image(seed) for seed in range(3)]
    for i, image in enumerate(images):
        write_image(tmp_path / "calib" / f"frame{i}.png", image)

    calib = load_calibration(tmp_path / "calib", DEMO_SPEC)

    assert calib.inputs.shape == (3, 3, 128, 128)
    assert calib.inputs.dtype == np.float32
    for got, image in zip(calib.inputs, images, strict=True):
        np.testing.assert_array_equal(got, preprocessed(DEMO_SPEC, image))
    assert calib.source == f"folder {tmp_path / 'calib'}: 3 images"
    assert calib.skipped == ()
    assert not calib.generated


def test_folder_takes_jpg_png_bmp_by_name_in_any_case_and_nothing_else(tmp_path: Path, decoder: str) -> None:
    folder = tmp_path / "calib"
    names = ["b.JPG", "a.png", "d.bmp", "c.jpeg"]
    images = {name: rgb_image(i) for i, name in enumerate(names)}
    for name, image in images.items():
        write_image(folder / name, image)
    (folder / "notes.txt").write_text("not a frame")
    write_image(folder / "nested" / "deeper.png", rgb_image(9))  # not recursive

    calib = load_calibration(folder, DEMO_SPEC)

    assert len(calib.inputs) == 4
    for got, name in zip(calib.inputs, sorted(names), strict=True):
        expected = preprocessed(DEMO_SPEC, images[name])
        if name.lower().endswith((".jpg", ".jpeg")):  # lossy: close to the original, not equal
            assert np.abs(got - expected).mean() < 0.5
        else:
            np.testing.assert_array_equal(got, expected)


def test_unreadable_files_are_skipped_and_named(tmp_path: Path, decoder: str, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "calib"
    good = [write_image(folder / f"ok{i}.png", rgb_image(i)) for i in range(2)]
    (folder / "bad.jpg").write_bytes(b"this is text, not a JPEG")
    (folder / "empty.png").write_bytes(b"")

    with caplog.at_level(logging.WARNING, logger="exporter.calibration"):
        calib = load_calibration(folder, DEMO_SPEC)

    assert len(calib.inputs) == 2
    np.testing.assert_array_equal(calib.inputs[1], preprocessed(DEMO_SPEC, rgb_image(1)))
    assert [entry.split(": ")[0] for entry in calib.skipped] == [str(folder / "bad.jpg"), str(folder / "empty.png")]
    assert calib.skipped[0].endswith(": not an image")
    assert calib.skipped[1].endswith(": empty file")
    assert calib.source == f"folder {folder}: 2 images (2 unreadable, skipped)"
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "bad.jpg" in warning and "empty.png" in warning
    assert good[0].exists()


def test_limit_keeps_the_first_files_by_name_and_progress_counts_them(tmp_path: Path) -> None:
    folder = tmp_path / "calib"
    for i in range(5):
        write_image(folder / f"{i:02d}.png", rgb_image(i))
    calls: list[tuple[int, int]] = []

    calib = load_calibration(folder, DEMO_SPEC, limit=3, progress=lambda done, total: calls.append((done, total)))

    assert len(calib.inputs) == 3
    np.testing.assert_array_equal(calib.inputs[2], preprocessed(DEMO_SPEC, rgb_image(2)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert "the first 3 of 5" in calib.source


def test_without_opencv_or_pillow_the_error_names_the_file_and_extras(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_image(tmp_path / "calib" / "a.bmp", rgb_image(0))
    write_image(tmp_path / "calib" / "b.jpg", rgb_image(1))
    monkeypatch.setattr(images, "_cv2", lambda: None)
    monkeypatch.setattr(images, "_pillow", lambda: None)

    with pytest.raises(BackendUnavailableError) as caught:
        load_calibration(tmp_path / "calib", DEMO_SPEC)

    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"calibration folder {tmp_path / 'calib'}: {tmp_path / 'calib' / 'b.jpg'}: decoding")
    assert "pip install 'edge-runtime[camera]' (OpenCV) or 'edge-runtime[images]' (Pillow)" in message


def test_without_opencv_or_pillow_bmp_folders_still_calibrate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(2):
        write_image(tmp_path / "calib" / f"{i}.bmp", rgb_image(i))
    monkeypatch.setattr(images, "_cv2", lambda: None)
    monkeypatch.setattr(images, "_pillow", lambda: None)

    calib = load_calibration(tmp_path / "calib", DEMO_SPEC)

    for got, i in zip(calib.inputs, range(2), strict=True):
        np.testing.assert_array_equal(got, preprocessed(DEMO_SPEC, rgb_image(i)))


# --------------------------------------------------------------------------- .npy arrays


@pytest.mark.parametrize(
    ("spec", "stored_dtype"),
    [
        (DEMO_SPEC, np.float64),
        (DEMO_SPEC, np.float32),
        (InputSpec(name="x", shape=(1, 16, 16, 3), layout="NHWC", dtype="float16"), np.float32),
    ],
    ids=["float64", "float32", "float16-model-nhwc"],
)
def test_npy_of_preprocessed_inputs_is_used_as_is(tmp_path: Path, spec: InputSpec, stored_dtype: Any) -> None:
    data = np.random.default_rng(0).standard_normal((6, *spec.shape[1:])).astype(stored_dtype)
    np.save(tmp_path / "calib.npy", data)
    calls: list[tuple[int, int]] = []

    calib = load_calibration(tmp_path / "calib.npy", spec, progress=lambda *call: calls.append(call))

    assert calib.inputs.dtype == np.dtype(spec.dtype)
    np.testing.assert_array_equal(calib.inputs, data.astype(spec.dtype))
    assert calib.source == "calib.npy: 6 preprocessed inputs"
    assert calls[-1] == (6, 6)


@pytest.mark.parametrize(
    ("spec", "frames_shape", "color"),
    [
        (DEMO_SPEC, (4, 48, 64, 3), "RGB"),
        (DEMO_SPEC, (4, 48, 64), "GRAY"),
        (
            InputSpec(name="x", shape=(1, 32, 32, 3), layout="NHWC", dtype="uint8", resize="stretch"),
            (4, 40, 30, 3),
            "RGB",
        ),
    ],
    ids=["rgb", "grey", "uint8-model-nhwc"],
)
def test_npy_of_raw_uint8_frames_is_preprocessed_frame_by_frame(
    tmp_path: Path, spec: InputSpec, frames_shape: tuple[int, ...], color: str
) -> None:
    frames = np.random.default_rng(1).integers(0, 256, frames_shape, dtype=np.uint8)
    np.save(tmp_path / "frames.npy", frames)

    calib = load_calibration(tmp_path / "frames.npy", spec, limit=3)

    assert calib.inputs.shape == (3, *spec.shape[1:])
    assert calib.inputs.dtype == np.dtype(spec.dtype)
    pre = Preprocessor(spec)
    for got, frame in zip(calib.inputs, frames[:3], strict=True):
        np.testing.assert_array_equal(got, pre(frame, color=color)[0][0])
    height, width = frames_shape[1:3]
    assert calib.source == f"frames.npy: 3 raw {width}x{height} frames, the first 3 of 4"


# --------------------------------------------------------------------------- bad input


def _empty_folder(tmp: Path) -> Path:
    (tmp / "calib").mkdir()
    return tmp / "calib"


def _folder_without_images(tmp: Path) -> Path:
    (tmp / "calib" / "sub").mkdir(parents=True)
    (tmp / "calib" / "readme.txt").write_text("x")
    (tmp / "calib" / "clip.gif").write_bytes(b"GIF89a")
    return tmp / "calib"


def _folder_all_unreadable(tmp: Path) -> Path:
    (tmp / "calib").mkdir()
    (tmp / "calib" / "a.jpg").write_text("nope")
    (tmp / "calib" / "b.png").write_bytes(b"\x89PNG broken")
    return tmp / "calib"


def _npy(array: np.ndarray, name: str = "calib.npy") -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        np.save(tmp / name, array)
        return tmp / name

    return make


def _file(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / name).write_bytes(data)
        return tmp / name

    return make


def _nan_inputs() -> np.ndarray:
    data = np.zeros((4, 3, 128, 128), np.float32)
    data[2, 1, 5, 5] = np.nan
    data[3, 0, 0, 0] = np.inf
    return data


def _pickled_npy(tmp: Path) -> Path:
    np.save(tmp / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return tmp / "objects.npy"


def _npz_named_npy(tmp: Path) -> Path:
    with (tmp / "calib.npy").open("wb") as f:
        np.savez(f, frames=np.zeros((2, 3, 128, 128), np.float32))
    return tmp / "calib.npy"


BAD_SOURCES = [
    ("empty-folder", _empty_folder, r"calib has no images \(\.jpg, \.jpeg, \.png, \.bmp\): it is empty"),
    ("no-images", _folder_without_images, r"calib has no images .*found 3 other entries: clip\.gif, readme\.txt, sub/"),
    ("all-unreadable", _folder_all_unreadable, r"calib: none of its 2 image files could be read: .*a\.jpg: .*b\.png"),
    ("missing-folder", lambda tmp: tmp / "nowhere", r"nowhere: no such file or folder; give a folder of images"),
    ("missing-npy", lambda tmp: tmp / "gone.npy", r"gone\.npy: no such file"),
    ("single-image", _file("one.png", b"\x89PNG"), r"one\.png: a single image is not enough"),
    ("video", _file("clip.mp4", b"\0\0\0 ftyp"), r"clip\.mp4: neither a folder of images nor a \.npy"),
    ("not-npy-data", _file("calib.npy", b"plain text"), r"calib\.npy: not a readable \.npy array"),
    ("npz-as-npy", _npz_named_npy, r"calib\.npy: not a \.npy array"),
    ("pickled-objects", _pickled_npy, r"objects\.npy: not a readable \.npy array"),
    (
        "wrong-shape",
        _npy(np.zeros((4, 3, 64, 64), np.float32)),
        r"calib\.npy: shape \(4, 3, 64, 64\) float32 is neither preprocessed model inputs \(N, 3, 128, 128\) "
        r"in a float dtype nor raw frames \(N, H, W, 3\) RGB or \(N, H, W\) grey in uint8",
    ),
    ("float-frames", _npy(np.zeros((4, 48, 64, 3), np.float32)), r"calib\.npy: shape \(4, 48, 64, 3\) float32"),
    ("uint8-nchw", _npy(np.zeros((4, 3, 128, 128), np.uint8)), r"calib\.npy: shape \(4, 3, 128, 128\) uint8"),
    (
        "no-frames",
        _npy(np.zeros((0, 3, 128, 128), np.float32)),
        r"calib\.npy: shape \(0, 3, 128, 128\) holds no frames",
    ),
    ("nan-inf", _npy(_nan_inputs()), r"calib\.npy: 1 NaN and 1 inf values"),
]


@pytest.mark.parametrize(("make", "message"), [case[1:] for case in BAD_SOURCES], ids=[c[0] for c in BAD_SOURCES])
def test_bad_calibration_data_is_a_config_error_naming_it(
    tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    path = make(tmp_path)

    with pytest.raises(ConfigError, match=message):
        load_calibration(path, DEMO_SPEC)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 0}, "limit must be a positive integer, got 0"),
        ({"limit": True}, "limit must be a positive integer"),
        ({"generated": 0}, "generated calibration frames must be a positive integer"),
    ],
)
def test_bad_counts_are_config_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_calibration("generated", DEMO_SPEC, **kwargs)


# --------------------------------------------------------------------------- generated frames


@pytest.mark.parametrize("source", [None, "generated", "Synthetic"])
def test_generated_frames_warn_that_real_frames_are_better(
    source: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="exporter.calibration"):
        calib = load_calibration(source, DEMO_SPEC, generated=6)

    assert calib.generated
    assert calib.inputs.shape == (6, 3, 128, 128) and calib.inputs.dtype == np.float32
    assert np.isfinite(calib.inputs).all()
    assert calib.source == "generated: 6 synthetic frames"
    assert len({frame.tobytes() for frame in calib.inputs}) == 6  # frames differ
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "real frames" in warning and "--calib" in warning


def test_generated_frames_are_reproducible_and_follow_the_bundles_spec(demo_bundle: Path) -> None:
    spec = load_bundle(demo_bundle).manifest.input

    first = load_calibration("generated", spec, generated=8, limit=4, seed=3)
    again = load_calibration("generated", spec, generated=8, limit=4, seed=3)
    other = load_calibration("generated", spec, generated=4, seed=4)

    assert first.inputs.shape == (4, *spec.shape[1:])
    np.testing.assert_array_equal(first.inputs, again.inputs)
    assert not np.array_equal(first.inputs, other.inputs)


# --------------------------------------------------------------------------- held-out split


def _numbered(count: int) -> CalibrationSet:
    """A set whose frame i is filled with the value i, so a split can be read back as indices."""
    inputs = np.broadcast_to(np.arange(count, dtype=np.float32)[:, None], (count, 4)).copy()
    return CalibrationSet(inputs, f"test: {count} frames")


@pytest.mark.parametrize(
    ("count", "held_out", "expected_held"),
    [
        (8, 0.25, [3, 7]),  # every 4th frame
        (6, 0.25, [2, 5]),  # the minimum: 4 calibration + 2 held out
        (12, 0.25, [3, 7, 11]),
        (10, 0.5, [1, 3, 5, 7, 9]),
        (7, 0.1, [2, 6]),  # at least min_held_out
        (6, 0.9, [2, 5]),  # at least min_calibration left
        (100, 0.2, list(range(4, 100, 5))),
    ],
)
def test_split_holds_back_every_kth_frame(count: int, held_out: float, expected_held: list[int]) -> None:
    calib = _numbered(count)

    frames, held = calib.split(held_out)

    assert held[:, 0].astype(int).tolist() == expected_held
    assert frames[:, 0].astype(int).tolist() == sorted(set(range(count)) - set(expected_held))
    again_frames, again_held = calib.split(held_out)
    np.testing.assert_array_equal(again_frames, frames)
    np.testing.assert_array_equal(again_held, held)


def test_split_with_too_few_frames_names_the_counts() -> None:
    with pytest.raises(
        ConfigError, match=r"test: 5 frames\): 5 frames are too few .* at least 6 \(4 for calibration \+ 2 held out\)"
    ):
        _numbered(5).split()
    with pytest.raises(ConfigError, match=r"at least 11 \(8 for calibration \+ 3 held out\)"):
        _numbered(10).split(min_calibration=8, min_held_out=3)


@pytest.mark.parametrize("held_out", [0, 1, -0.1, 1.5, True])
def test_split_fraction_must_be_between_0_and_1(held_out: Any) -> None:
    with pytest.raises(ConfigError, match="held-out fraction"):
        _numbered(8).split(held_out)


# --------------------------------------------------------------------------- ONNX Runtime reader


def test_array_data_reader_gives_each_sample_then_none_and_rewinds() -> None:
    images = np.arange(3 * 2 * 4, dtype=np.float32).reshape(3, 2, 4)
    scales = np.array([[1.0], [2.0], [3.0]], np.float32)
    reader = ArrayDataReader({"image": images, "scale": scales})

    assert isinstance(reader, CalibrationDataReader)
    assert len(reader) == 3
    feeds = [reader.get_next() for _ in range(3)]
    assert reader.get_next() is None
    assert reader.get_next() is None
    for i, feed in enumerate(feeds):
        assert feed is not None and set(feed) == {"image", "scale"}
        np.testing.assert_array_equal(feed["image"], images[i : i + 1])
        np.testing.assert_array_equal(feed["scale"], scales[i : i + 1])

    reader.rewind()
    assert [feed["scale"][0, 0] for feed in reader] == [1.0, 2.0, 3.0]  # ORT's __iter__ ends on None

    reader.set_range(1, 3)
    assert len(reader) == 2
    assert [feed["scale"][0, 0] for feed in reader] == [2.0, 3.0]


@pytest.mark.parametrize(
    "inputs",
    [{}, {"a": np.zeros((3, 2)), "b": np.zeros((2, 2))}, {"a": np.zeros((0, 2))}, {"a": np.float32(1.0)}],
    ids=["empty", "different-n", "no-samples", "scalar"],
)
def test_array_data_reader_rejects_inconsistent_inputs(inputs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="ArrayDataReader"):
        ArrayDataReader(inputs)


@pytest.mark.parametrize("model_name", ["single_output", "two_inputs"])
def test_quantize_static_runs_on_the_reader(tmp_path: Path, model_name: str) -> None:
    model: onnx.ModelProto = getattr(onnx_models, model_name)()
    spec = InputSpec(name=onnx_models.IMAGE, shape=onnx_models.IMAGE_SHAPE)
    calib = load_calibration("generated", spec, generated=8)
    feeds = {i.name: calib.inputs for i in model.graph.input}  # two_inputs: the same frames on both inputs
    model_path = tmp_path / "float.onnx"
    model_path.write_bytes(model.SerializeToString())

    quantize_static(
        model_path,
        tmp_path / "int8.onnx",
        ArrayDataReader(feeds),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )

    quantized = onnx.load(tmp_path / "int8.onnx")
    assert any(node.op_type == "QuantizeLinear" for node in quantized.graph.node)
    feed = {name: array[:1] for name, array in feeds.items()}
    expected = onnx_models.run_onnx(model, feed)
    got = onnx_models.run_onnx(tmp_path / "int8.onnx", feed)
    for name, value in expected.items():
        cosine = float(np.dot(value.ravel(), got[name].ravel()) / np.linalg.norm(value) / np.linalg.norm(got[name]))
        assert cosine > 0.99, name
