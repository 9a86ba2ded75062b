"""Preprocessing is never assumed in silence: what the input spec and the model's metadata state,
what split had to assume (``assumed`` in the manifest, a WARNING, ``inspect``), calibration on it,
identical calibration frames, and the top-left letterbox with its pad value."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_models as m
import pytest

from edge_runtime.bundle.manifest import Manifest
from edge_runtime.bundle.reader import load_bundle
from edge_runtime.bundle.specs import InputSpec
from edge_runtime.bundle.summary import format_bundle
from edge_runtime.errors import BundleError, ConfigError
from edge_runtime.frames.frame import optional_cv2
from edge_runtime.frames.geometry import FrameGeometry
from edge_runtime.frames.preprocess import Preprocessor
from exporter.calibration import load_calibration
from exporter.metadata import read_metadata
from exporter.pipeline import SplitOptions, split_model

EXPORT = [sys.executable, "-m", "exporter.cli"]
BACKENDS = [pytest.param("cv2", marks=pytest.mark.skipif(optional_cv2() is None, reason="no OpenCV")), "numpy"]
ASSUMED_ALL = ("color", "scale", "mean", "std", "resize")
FULL_SPEC = {
    "color": "RGB",
    "resize": "stretch",
    "mean": [0.5, 0.5, 0.5],
    "std": [0.25, 0.25, 0.25],
    "scale": 1.0 / 255.0,
}
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def with_props(model: onnx.ModelProto, **props: str) -> onnx.ModelProto:
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


def split(model: onnx.ModelProto, out: Path, input_spec: Any = None) -> InputSpec:
    """Split without self-test data; the input spec as read back from the written manifest."""
    split_model(model, out, SplitOptions(input_spec=input_spec, selftest=False))
    return load_bundle(out).manifest.input


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# --------------------------------------------------------------------------- split: assumed or stated


def test_split_without_input_spec_warns_records_and_inspect_shows_what_was_assumed(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(m.hard_sharing().SerializeToString())

    done = subprocess.run(
        [*EXPORT, "split", "model.onnx", "-o", "bundle", "--no-selftest"],
        cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    warning = (
        "input: ASSUMED color RGB, scale 1/255, mean [0, 0, 0], std [1, 1, 1], resize letterbox (no --input-spec "
        "value and nothing in the model's metadata); a model trained on other input (BGR, 0..255, ImageNet "
        "mean/std) is then calibrated and gated on the wrong input and finds nothing on real frames: give --input-spec"
    )
    assert done.stderr.count(warning) == 1
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["input"]["assumed"] == list(ASSUMED_ALL)
    assert "pad_value" not in manifest["input"] and "pad_position" not in manifest["input"]

    shown = subprocess.run(
        [*EXPORT, "inspect", "bundle"], cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False
    )
    assert shown.returncode == 0, shown.stderr
    assert "preprocessing ASSUMED: color, scale, mean, std, resize (no input spec or model metadata" in shown.stdout


def test_a_full_input_spec_assumes_nothing_and_warns_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="exporter"):
        spec = split(m.hard_sharing(), tmp_path / "bundle", FULL_SPEC)

    assert spec.assumed == ()
    assert (spec.color, spec.resize, spec.mean, spec.std) == ("RGB", "stretch", (0.5,) * 3, (0.25,) * 3)
    assert not [w for w in warnings_of(caplog) if "ASSUMED" in w or "metadata" in w]
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text(encoding="utf-8"))
    assert "assumed" not in manifest["input"]
    assert "ASSUMED" not in format_bundle(load_bundle(tmp_path / "bundle"))


def test_a_partial_input_spec_lists_only_the_keys_it_leaves_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="exporter"):
        spec = split(m.hard_sharing(), tmp_path / "bundle", {"color": "BGR", "resize": "stretch"})

    assert spec.assumed == ("scale", "mean", "std")
    [warning] = [w for w in warnings_of(caplog) if "ASSUMED" in w]
    assert warning.startswith("input: ASSUMED scale 1/255, mean [0, 0, 0], std [1, 1, 1] (no --input-spec value")


@pytest.mark.parametrize(
    ("props", "scale", "mean", "std"),
    [
        pytest.param(
            {"mean": "[123.675, 116.28, 103.53]", "std": "[58.395, 57.12, 57.375]"},
            1.0, (123.675, 116.28, 103.53), (58.395, 57.12, 57.375), id="pixel-units",
        ),
        pytest.param(
            {"mean": json.dumps(IMAGENET_MEAN), "std": "0.229, 0.224, 0.225"},
            1.0 / 255.0, tuple(IMAGENET_MEAN), tuple(IMAGENET_STD), id="unit-range",
        ),
    ],
)  # fmt: skip
def test_metadata_mean_std_and_color_are_taken_not_assumed(
    props: dict[str, str], scale: float, mean: tuple[float, ...], std: tuple[float, ...], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    model = with_props(m.hard_sharing(), color="BGR", **props)

    with caplog.at_level(logging.INFO, logger="exporter"):
        spec = split(model, tmp_path / "bundle")

    assert spec.color == "BGR"
    assert spec.scale == pytest.approx(scale)
    assert spec.mean == pytest.approx(mean)
    assert spec.std == pytest.approx(std)
    assert spec.assumed == ("resize",)  # the one key neither the metadata nor a spec stated
    [warning] = [w for w in warnings_of(caplog) if "ASSUMED" in w]
    assert warning.startswith("input: ASSUMED resize letterbox (no --input-spec value")
    taken = [r.getMessage() for r in caplog.records if "from the model's metadata" in r.getMessage()]
    assert len(taken) == 1 and "'mean'" in taken[0] and "'color'" in taken[0]


def test_channel_order_resize_and_a_scale_fraction_are_read() -> None:
    meta = read_metadata(with_props(m.hard_sharing(), channel_order="bgr", resize="center-crop", scale="1/127.5"))

    assert meta.preprocessing == {"color": "BGR", "resize": "center_crop", "scale": pytest.approx(1 / 127.5)}
    assert meta.preprocessing_from["color"] == "'channel_order'"


def test_unparseable_metadata_values_are_ignored_with_a_debug_line(caplog: pytest.LogCaptureFixture) -> None:
    model = with_props(m.hard_sharing(), mean="zero", std="[0, 1, 1]", scale="-1", color="purple", resize="tile")

    with caplog.at_level(logging.DEBUG, logger="exporter.metadata"):
        meta = read_metadata(model)

    assert meta.preprocessing == {}
    for key in ("mean", "std", "scale", "color", "resize"):
        assert f"metadata '{key}' does not state a usable" in caplog.text


@pytest.mark.parametrize(
    "props",
    [
        pytest.param({"author": "Ultralytics", "task": "detect"}, id="author"),
        pytest.param({"names": "{0: 'a', 1: 'b'}", "imgsz": "[16, 16]", "stride": "32", "task": "detect"}, id="keys"),
    ],
)
def test_an_ultralytics_export_states_all_of_its_preprocessing(
    props: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="exporter"):
        spec = split(with_props(m.hard_sharing(), **props), tmp_path / "bundle")

    assert spec.assumed == ()
    assert (spec.color, spec.resize, spec.pad_value, spec.pad_position) == ("RGB", "letterbox", 114.0, "center")
    assert (spec.scale, spec.mean, spec.std) == (pytest.approx(1 / 255), (0.0,) * 3, (1.0,) * 3)
    assert not [w for w in warnings_of(caplog) if "ASSUMED" in w]
    assert read_metadata(with_props(m.hard_sharing(), **props)).preprocessing_from["resize"] == "Ultralytics export"


def test_an_ultralytics_classifier_is_centre_cropped() -> None:
    meta = read_metadata(with_props(m.hard_sharing(), author="Ultralytics", task="classify"))

    assert meta.preprocessing["resize"] == "center_crop"
    assert "pad_value" not in meta.preprocessing


def test_an_input_spec_contradicting_the_metadata_wins_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = with_props(m.hard_sharing(), author="Ultralytics", task="detect")
    given = {"color": "BGR", "pad_value": 0, "pad_position": "top_left"}

    with caplog.at_level(logging.WARNING, logger="exporter"):
        spec = split(model, tmp_path / "bundle", given)

    assert (spec.color, spec.pad_value, spec.pad_position, spec.assumed) == ("BGR", 0.0, "top_left", ())
    assert (
        "--input-spec: color BGR, pad_value 0, pad_position top_left but the model's metadata (Ultralytics export) "
        "says color RGB, pad_value 114, pad_position center; the input spec wins"
    ) in warnings_of(caplog)
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text(encoding="utf-8"))
    assert (manifest["input"]["pad_value"], manifest["input"]["pad_position"]) == (0.0, "top_left")


def test_the_same_normalisation_in_pixel_units_is_no_contradiction(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = with_props(m.hard_sharing(), mean=json.dumps(IMAGENET_MEAN), std=json.dumps(IMAGENET_STD))
    pixels = {"scale": 1.0, "mean": [v * 255 for v in IMAGENET_MEAN], "std": [v * 255 for v in IMAGENET_STD]}

    with caplog.at_level(logging.WARNING, logger="exporter"):
        spec = split(model, tmp_path / "same", {**pixels, "color": "RGB", "resize": "letterbox"})
    assert spec.scale == 1.0 and not [w for w in warnings_of(caplog) if "the input spec wins" in w]

    with caplog.at_level(logging.WARNING, logger="exporter"):
        split(model, tmp_path / "other", {"mean": [0.5, 0.5, 0.5], "color": "RGB", "resize": "letterbox"})
    [warning] = [w for w in warnings_of(caplog) if "the input spec wins" in w]
    assert warning.startswith("--input-spec: mean [0.5, 0.5, 0.5] but the model's metadata ('mean') says mean [0.485")


def test_input_spec_files_take_the_pad_keys_but_not_assumed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'assumed'"):
        split(m.hard_sharing(), tmp_path / "refused", {**FULL_SPEC, "assumed": []})
    with pytest.raises(ConfigError, match=r"pad_position='bottom' is not one of center, top_left"):
        split(m.hard_sharing(), tmp_path / "refused", {**FULL_SPEC, "pad_position": "bottom"})
    with pytest.raises(ConfigError, match=r"'pad_value' must be a number in 0..255, got 300"):
        split(m.hard_sharing(), tmp_path / "refused", {**FULL_SPEC, "pad_value": 300})


# --------------------------------------------------------------------------- calibration


def test_calibrating_on_an_assumed_spec_warns(caplog: pytest.LogCaptureFixture) -> None:
    spec = InputSpec(name="image", shape=(1, 3, 16, 16), assumed=("color", "mean", "std"))

    with caplog.at_level(logging.WARNING, logger="exporter.calibration"):
        load_calibration("generated", spec, generated=4)

    assert (
        "calibrating on preprocessing that was ASSUMED at split: color RGB, mean [0, 0, 0], std [1, 1, 1]; "
        "if the model was trained otherwise, INT8 will be calibrated on the wrong input"
    ) in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="exporter.calibration"):
        load_calibration("generated", InputSpec(name="image", shape=(1, 3, 16, 16)), generated=4)
    assert "ASSUMED" not in caplog.text


def test_a_folder_of_identical_images_is_refused(tmp_path: Path) -> None:
    image_module = pytest.importorskip("PIL.Image")
    folder = tmp_path / "calib"
    folder.mkdir()
    frame = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    for i in range(16):
        image_module.fromarray(frame).save(folder / f"frame{i:02d}.png")
    spec = InputSpec(name="image", shape=(1, 3, 16, 16))

    with pytest.raises(ConfigError) as caught:
        load_calibration(folder, spec)

    assert str(caught.value) == (
        f"calibration data (folder {folder}: 16 images): all 16 frames are identical after preprocessing; "
        "calibrate on varied real frames"
    )
    image_module.fromarray(255 - frame).save(folder / "frame99.png")  # one frame differs: accepted
    assert len(load_calibration(folder, spec)) == 17


@pytest.mark.parametrize("raw", [True, False], ids=["raw-frames", "preprocessed"])
def test_an_npy_of_identical_frames_is_refused(tmp_path: Path, raw: bool) -> None:
    spec = InputSpec(name="image", shape=(1, 3, 16, 16))
    if raw:
        frames = np.repeat(np.random.default_rng(1).integers(0, 256, (1, 20, 30, 3), dtype=np.uint8), 5, axis=0)
    else:
        frames = np.zeros((5, 3, 16, 16), np.float32)
    np.save(tmp_path / "calib.npy", frames)

    with pytest.raises(ConfigError, match=r"^calibration data \(calib\.npy: 5 .*\): all 5 frames are identical"):
        load_calibration(tmp_path / "calib.npy", spec)


def test_generated_and_single_frames_are_not_judged_identical(tmp_path: Path) -> None:
    spec = InputSpec(name="image", shape=(1, 3, 16, 16))
    assert len(load_calibration("generated", spec, generated=8)) == 8
    np.save(tmp_path / "one.npy", np.zeros((1, 20, 30, 3), np.uint8))
    assert len(load_calibration(tmp_path / "one.npy", spec)) == 1  # two or more frames are needed to judge


# --------------------------------------------------------------------------- top-left letterbox


def test_top_left_letterbox_geometry_maps_boxes_back_exactly() -> None:
    geometry = FrameGeometry.letterbox(640, 480, 320, 320, "top_left")

    assert (geometry.scale_x, geometry.scale_y, geometry.offset_x, geometry.offset_y) == (0.5, 0.5, 0.0, 0.0)
    assert geometry.content == (0.0, 0.0, 320.0, 240.0)
    boxes = geometry.boxes_to_frame(np.array([[10.0, 20.0, 110.0, 220.0], [0.0, 0.0, 320.0, 240.0]]))
    np.testing.assert_array_equal(boxes, [[20.0, 40.0, 220.0, 440.0], [0.0, 0.0, 640.0, 480.0]])
    centred = FrameGeometry.letterbox(640, 480, 320, 320)
    assert (centred.offset_x, centred.offset_y) == (0.0, -40.0)
    assert FrameGeometry.for_mode("letterbox", 640, 480, 320, 320, "top_left") == geometry
    with pytest.raises(ValueError, match="pad_position"):
        FrameGeometry.letterbox(640, 480, 320, 320, "bottom")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_top_left_letterbox_puts_the_content_top_left_and_pads_with_the_pad_value(layout: str, backend: str) -> None:
    shape = (1, 3, 320, 320) if layout == "NCHW" else (1, 320, 320, 3)
    spec = InputSpec(name="image", shape=shape, layout=layout, scale=1.0, pad_value=0.0, pad_position="top_left")
    frame = np.full((480, 640, 3), 200, np.uint8)

    tensor, geometry = Preprocessor(spec, backend=backend)(frame)

    image = tensor[0].transpose(1, 2, 0) if layout == "NCHW" else tensor[0]
    assert (geometry.offset_x, geometry.offset_y, geometry.scale_x) == (0.0, 0.0, 0.5)
    assert (image[:240] == 200).all()  # rows 0..239: the frame, scaled by 0.5
    assert (image[240:] == 0).all()  # below it: the pad value
    grey = Preprocessor(spec, backend=backend, pad_value=114)(frame)[0]  # the argument overrides the spec
    assert ((grey[0].transpose(1, 2, 0) if layout == "NCHW" else grey[0])[240:] == 114).all()


def test_a_tall_frame_is_padded_on_the_right_only() -> None:
    spec = InputSpec(name="image", shape=(1, 3, 32, 32), scale=1.0, pad_value=7.0, pad_position="top_left")
    tensor, geometry = Preprocessor(spec, backend="numpy")(np.full((64, 32, 3), 50, np.uint8))

    assert geometry.content == (0.0, 0.0, 16.0, 32.0)
    assert (tensor[0, :, :, :16] == 50).all() and (tensor[0, :, :, 16:] == 7).all()


# --------------------------------------------------------------------------- manifest and inspect


def test_manifest_round_trips_the_new_fields_and_old_manifests_load_unchanged() -> None:
    spec = InputSpec(
        name="images", shape=(1, 3, 320, 320), color="BGR", pad_value=0.0, pad_position="top_left",
        assumed=("scale", "mean"),
    )  # fmt: skip
    data = spec.to_dict()

    assert (data["pad_value"], data["pad_position"], data["assumed"]) == (0.0, "top_left", ["scale", "mean"])
    assert InputSpec.from_mapping(json.loads(json.dumps(data)), "manifest.json: input") == spec
    old = {"name": "image", "shape": [1, 3, 16, 16], "color": "RGB", "resize": "letterbox", "scale": 1 / 255}
    loaded = InputSpec.from_mapping(old, "manifest.json: input")
    assert (loaded.pad_value, loaded.pad_position, loaded.assumed) == (114.0, "center", ())
    assert set(loaded.to_dict()) == {
        "name", "shape", "dtype", "layout", "color", "resize", "mean", "std", "scale", "dynamic_batch",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("assumed", ["colour"], r"'assumed' must list keys of"),
        ("assumed", "color", r"'assumed' must be list"),
        ("pad_position", "middle", r"pad_position='middle' is not one of center, top_left"),
        ("pad_value", -1, r"'pad_value' must be a number in 0..255"),
    ],
)
def test_bad_new_fields_are_refused_naming_them(field: str, value: Any, message: str) -> None:
    with pytest.raises(BundleError, match=message):
        InputSpec.from_mapping({"name": "image", "shape": [1, 3, 16, 16], field: value}, "manifest.json: input")


def test_inspect_shows_pad_settings_when_not_the_default(tmp_path: Path) -> None:
    padded = {**FULL_SPEC, "resize": "letterbox", "pad_value": 0, "pad_position": "top_left"}
    split(m.hard_sharing(), tmp_path / "bundle", padded)
    text = format_bundle(load_bundle(tmp_path / "bundle"))

    assert "RGB resize=letterbox pad=0 top_left" in text
    assert "ASSUMED" not in text
    assert (
        Manifest.from_mapping(
            json.loads((tmp_path / "bundle" / "manifest.json").read_text(encoding="utf-8")), "m"
        ).input.pad_position
        == "top_left"
    )
