"""``resample = "antialias"``: the preprocessing resizes as Pillow's ``Image.resize(size,
BILINEAR)`` (a triangle filter whose support grows with the reduction), on both backends; the
default (``bilinear``, OpenCV's ``INTER_LINEAR``) is unchanged."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge_runtime.bundle.specs import InputSpec
from edge_runtime.errors import BundleError, ConfigError
from edge_runtime.frames.frame import optional_cv2
from edge_runtime.frames.preprocess import Preprocessor, numpy_resize_antialias, numpy_resize_bilinear

Image: Any = pytest.importorskip("PIL.Image", reason="comparing with Pillow needs Pillow (the images extra)")

cv2 = optional_cv2()
BACKENDS = ["numpy", pytest.param("cv2", marks=pytest.mark.skipif(cv2 is None, reason="OpenCV not installed"))]


def photo_like(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth colour image (bilinearly enlarged coarse noise, then blurred) with fine grain."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (height // 40 + 2, width // 40 + 2, 3)).astype(np.float32)
    smooth = numpy_resize_bilinear(coarse, width, height)
    grain = rng.normal(0, 10, smooth.shape)
    return np.clip(smooth + grain, 0, 255).astype(np.uint8)


def checkerboard(height: int, width: int, cell: int = 3) -> np.ndarray:
    """Black and white cells of ``cell`` pixels: the worst case for aliasing."""
    rows, cols = np.mgrid[:height, :width]
    board = (((rows // cell + cols // cell) % 2) * 255).astype(np.uint8)
    return np.repeat(board[:, :, None], 3, axis=2)


IMAGES = {"photo": photo_like(700, 1000), "checkerboard": checkerboard(700, 1000)}
SIZES = [(256, 256), (1500, 1100), (1000, 256), (300, 700)]  # (width, height): shrink, enlarge, mixed


def pil_resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def spec(height: int, width: int, **fields: Any) -> InputSpec:
    """A raw-pixel (uint8, NHWC, stretch) input: the model input is the resized frame itself."""
    data = {"name": "image", "shape": [1, height, width, 3], "dtype": "uint8", "layout": "NHWC", "resize": "stretch"}
    return InputSpec.from_mapping({**data, **fields}, "test")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", IMAGES)
def test_antialias_matches_pillow(name: str, size: tuple[int, int], backend: str) -> None:
    image = IMAGES[name]
    width, height = size
    tensor, _ = Preprocessor(spec(height, width, resample="antialias"), backend=backend)(image)
    expected = pil_resize(image, width, height)
    difference = np.abs(tensor[0].astype(np.int16) - expected.astype(np.int16))
    # Pillow's own fixed point, horizontal pass first, rounded to uint8 between passes:
    # measured 0 everywhere (the brief allows 1 level)
    assert difference.max() <= 1
    assert np.count_nonzero(difference) == 0


def test_antialias_smooths_what_bilinear_aliases() -> None:
    # 3-pixel cells shrunk ~3.9x: Pillow averages them to mid grey, INTER_LINEAR samples them
    board = IMAGES["checkerboard"]
    smooth, _ = Preprocessor(spec(256, 256, resample="antialias"), backend="numpy")(board)
    sharp, _ = Preprocessor(spec(256, 256), backend="numpy")(board)
    assert abs(float(smooth.mean()) - 127.5) < 3 and smooth.std() < 20
    assert sharp.std() > 60


@pytest.mark.parametrize("backend", BACKENDS)
def test_letterboxed_float_input_is_pillow_content_normalised(backend: str) -> None:
    image = IMAGES["photo"]  # 1000x700 into 128x128: content 128x90 (round(700 * 0.128) = 90), 19 rows above
    fields = {"name": "x", "shape": [1, 3, 128, 128], "resample": "antialias", "mean": [0.5], "std": [0.5]}
    tensor, geometry = Preprocessor(InputSpec.from_mapping(fields, "test"), backend=backend)(image)
    content = pil_resize(image, 128, 90).astype(np.float32)
    np.testing.assert_allclose(tensor[0, :, 19:109].transpose(1, 2, 0), (content / 255 - 0.5) / 0.5, atol=1e-6)
    assert geometry.scale_x == pytest.approx(0.128)


def test_float_frames_follow_pillow_float_mode() -> None:
    rng = np.random.default_rng(3)
    grey = rng.uniform(0, 255, (300, 500)).astype(np.float32)
    for width, height in ((97, 211), (640, 480)):
        expected = np.asarray(Image.fromarray(grey, mode="F").resize((width, height), Image.Resampling.BILINEAR))
        np.testing.assert_allclose(numpy_resize_antialias(grey, width, height), expected, atol=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_default_is_todays_bilinear_bit_for_bit(backend: str) -> None:
    image = IMAGES["photo"]
    default, _ = Preprocessor(spec(256, 256), backend=backend)(image)
    explicit, _ = Preprocessor(spec(256, 256, resample="bilinear"), backend=backend)(image)
    np.testing.assert_array_equal(default, explicit)
    if backend == "cv2":
        assert cv2 is not None
        expected = cv2.resize(image, (256, 256), interpolation=cv2.INTER_LINEAR)
    else:
        expected = numpy_resize_bilinear(image, 256, 256)
    np.testing.assert_array_equal(default[0], expected)
    assert "resample" not in spec(256, 256).to_dict()  # manifests without the option: unchanged bytes


def test_resample_in_the_spec_and_its_errors() -> None:
    assert spec(8, 8, resample="antialias").to_dict()["resample"] == "antialias"
    again = InputSpec.from_mapping(spec(8, 8, resample="antialias").to_dict(), "manifest")
    assert again.resample == "antialias"
    with pytest.raises(BundleError) as caught:
        spec(8, 8, resample="antialiased")
    message = str(caught.value)
    assert "\n" not in message and "resample='antialiased' is not one of bilinear, antialias" in message
    bad = InputSpec(name="x", shape=(1, 3, 8, 8), resample="lanczos")
    with pytest.raises(ConfigError, match=r"resample='lanczos' is not one of bilinear, antialias$"):
        Preprocessor(bad)


def test_pillow_resizes_uint8_frames_where_installed_and_numpy_computes_the_same_bytes() -> None:
    image = IMAGES["photo"]
    auto = Preprocessor(spec(256, 256, resample="antialias"))
    numpy_only = Preprocessor(spec(256, 256, resample="antialias"), backend="numpy")
    assert auto._antialias is not None and auto._antialias.pillow is Image
    assert numpy_only._antialias is not None and numpy_only._antialias.pillow is None
    np.testing.assert_array_equal(auto(image)[0], numpy_only(image)[0])
    grey_spec = spec(64, 64, resample="antialias", color="GRAY", shape=[1, 64, 64, 1], mean=[0.0], std=[1.0])
    grey = Preprocessor(grey_spec)
    np.testing.assert_array_equal(grey(image[:, :, :1], "GRAY")[0][0, :, :, 0], pil_resize(image[:, :, 0], 64, 64))
