"""edge_runtime.frames.preprocess: frame → model input (resize modes, colour, normalisation, layout)."""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import pytest

from edge_runtime.bundle.specs import InputSpec
from edge_runtime.errors import BackendUnavailableError, ConfigError
from edge_runtime.frames.frame import Frame, InvalidFrameError, optional_cv2
from edge_runtime.frames.preprocess import Preprocessor, numpy_resize_bilinear

cv2: Any = optional_cv2()  # the camera extra is optional: None without it

needs_cv2 = pytest.mark.skipif(cv2 is None, reason="OpenCV (the camera extra) is not installed")
BACKENDS = [pytest.param("cv2", marks=needs_cv2), "numpy"]


def make_spec(**overrides: Any) -> InputSpec:
    fields: dict[str, Any] = {"name": "image", "shape": (1, 3, 32, 32)}
    fields.update(overrides)
    spec = InputSpec(**fields)
    if spec.channels != 3:  # the default mean/std have three values
        fields.setdefault("mean", (0.0,))
        fields.setdefault("std", (1.0,))
    return InputSpec(**fields)


def constant_frame(height: int, width: int, pixel: tuple[int, ...]) -> np.ndarray:
    return np.broadcast_to(np.asarray(pixel, np.uint8), (height, width, len(pixel))).copy()


def hwc(tensor: np.ndarray, layout: str) -> np.ndarray:
    """The single image of a batch-1 model input as (H, W, C)."""
    return tensor[0].transpose(1, 2, 0) if layout == "NCHW" else tensor[0]


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("resize", ["letterbox", "stretch", "center_crop"])
@pytest.mark.parametrize(("frame_h", "frame_w"), [(1, 1), (3, 7), (7, 3), (479, 641), (1080, 1920)])
@pytest.mark.parametrize(
    ("shape", "layout", "dtype"),
    [((1, 3, 128, 128), "NCHW", "float32"), ((1, 96, 160, 3), "NHWC", "uint8"), ((1, 1, 48, 64), "NCHW", "float16")],
)
def test_any_frame_size_gives_exactly_the_model_shape(
    backend: str, resize: str, frame_h: int, frame_w: int, shape: tuple[int, ...], layout: str, dtype: str
) -> None:
    pre = Preprocessor(make_spec(shape=shape, layout=layout, dtype=dtype, resize=resize), backend=backend)
    frame = np.random.default_rng(frame_w).integers(0, 256, (frame_h, frame_w, 3), dtype=np.uint8)

    tensor, geometry = pre(frame)

    assert tensor.shape == shape
    assert tensor.dtype == np.dtype(dtype)
    assert tensor.flags.c_contiguous
    assert (geometry.frame_width, geometry.frame_height) == (frame_w, frame_h)
    assert np.isfinite(tensor.astype(np.float32)).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("frame_hw", "model_hw", "content_rows", "content_cols"),
    [
        ((100, 200), (64, 64), (16, 48), (0, 64)),  # wide frame: bands above and below
        ((200, 100), (64, 64), (0, 64), (16, 48)),  # tall frame: bands left and right
        ((48, 64), (96, 128), (0, 96), (0, 128)),  # same aspect, upscaled: no padding
        ((30, 10), (16, 16), (0, 16), (5, 10)),  # odd split: content 5 wide at column (16 - 5) // 2
    ],
)
@pytest.mark.parametrize("pad_value", [114, 0, 255])
def test_letterbox_pads_with_the_pad_value_around_centred_content(
    backend: str,
    frame_hw: tuple[int, int],
    model_hw: tuple[int, int],
    content_rows: tuple[int, int],
    content_cols: tuple[int, int],
    pad_value: int,
) -> None:
    spec = make_spec(shape=(1, *model_hw, 3), layout="NHWC", dtype="uint8", resize="letterbox")
    pre = Preprocessor(spec, pad_value=pad_value, backend=backend)

    image = hwc(pre(constant_frame(*frame_hw, (200, 200, 200)))[0], "NHWC")

    inside = np.zeros(model_hw, bool)
    inside[slice(*content_rows), slice(*content_cols)] = True
    assert (image[inside] == 200).all()
    assert (image[~inside] == pad_value).all()


def test_letterbox_pad_is_normalised_like_a_pixel() -> None:
    spec = make_spec(shape=(1, 3, 8, 8), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    pre = Preprocessor(spec, pad_value=114)

    tensor, _ = pre(constant_frame(2, 8, (255, 255, 255)))

    np.testing.assert_allclose(tensor[0, :, 0, 0], (114 / 255 - 0.5) / 0.25, rtol=1e-6)
    np.testing.assert_allclose(tensor[0, :, 4, 4], (1.0 - 0.5) / 0.25, rtol=1e-6)


def test_center_crop_keeps_the_middle() -> None:
    frame = np.concatenate(
        [
            constant_frame(100, 100, (255, 0, 0)),
            constant_frame(100, 100, (0, 255, 0)),
            constant_frame(100, 100, (0, 0, 255)),
        ],
        axis=1,
    )
    pre = Preprocessor(make_spec(shape=(1, 16, 16, 3), layout="NHWC", dtype="uint8", resize="center_crop"))

    image, geometry = pre(frame)

    assert (image[0] == (0, 255, 0)).all()
    assert geometry.content == (0.0, 0.0, 16.0, 16.0)


# --------------------------------------------------------------------------- normalisation, colour, layout


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize(
    ("mean", "std", "scale"),
    [
        ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1 / 255),
        ((127.5,), (127.5,), 1.0),
        ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 1.0),
    ],
)
def test_normalisation_is_exact_on_a_constant_frame(
    layout: str, mean: tuple[float, ...], std: tuple[float, ...], scale: float
) -> None:
    shape = (1, 3, 9, 11) if layout == "NCHW" else (1, 9, 11, 3)
    pre = Preprocessor(make_spec(shape=shape, layout=layout, mean=mean, std=std, scale=scale, resize="stretch"))
    pixel = np.array([10, 100, 200], np.float64)

    tensor, _ = pre(constant_frame(20, 30, (10, 100, 200)))

    expected = (pixel * scale - np.broadcast_to(mean, 3)) / np.broadcast_to(std, 3)
    np.testing.assert_allclose(hwc(tensor, layout), np.broadcast_to(expected, (9, 11, 3)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("frame", "color", "model_color", "channels", "expected"),
    [
        (constant_frame(6, 6, (0, 0, 255)), "BGR", "RGB", 3, (255, 0, 0)),  # pure red in OpenCV order
        (constant_frame(6, 6, (255, 0, 0)), "RGB", "BGR", 3, (0, 0, 255)),
        (constant_frame(6, 6, (0, 0, 255)), "BGR", "BGR", 3, (0, 0, 255)),
        (np.full((6, 6), 77, np.uint8), "GRAY", "RGB", 3, (77, 77, 77)),
        (np.full((6, 6, 1), 77, np.uint8), "GRAY", "RGB", 3, (77, 77, 77)),
        (constant_frame(6, 6, (10, 20, 30, 0)), "RGBA", "RGB", 3, (10, 20, 30)),
        (constant_frame(6, 6, (30, 20, 10, 255)), "BGRA", "RGB", 3, (10, 20, 30)),
        (constant_frame(6, 6, (100, 150, 200)), "RGB", "GRAY", 1, (141,)),  # 0.299*100 + 0.587*150 + 0.114*200
        (constant_frame(6, 6, (200, 150, 100)), "BGR", "GRAY", 1, (141,)),
        (constant_frame(6, 6, (100, 150, 200)), "RGB", "GRAY", 3, (141, 141, 141)),
        (np.full((6, 6), 77, np.uint8), "GRAY", "GRAY", 1, (77,)),
        (constant_frame(6, 6, (10, 20, 30)), "RGB", "RGB", 4, (10, 20, 30, 255)),  # opaque alpha added
        (constant_frame(6, 6, (10, 20, 30, 40)), "RGBA", "BGR", 4, (30, 20, 10, 40)),
    ],
)
def test_colour_conversion(
    backend: str, frame: np.ndarray, color: str, model_color: str, channels: int, expected: tuple[int, ...]
) -> None:
    spec = make_spec(shape=(1, 4, 4, channels), layout="NHWC", dtype="uint8", color=model_color)

    image, _ = Preprocessor(spec, backend=backend)(frame, color=color)

    assert (image[0] == np.asarray(expected, np.uint8)).all(), image[0, 0, 0]


def test_colour_conversion_for_float_models_matches_the_luma_weights() -> None:
    spec = make_spec(shape=(1, 1, 4, 4), color="GRAY", mean=(0.5,), std=(0.5,))

    tensor, _ = Preprocessor(spec)(constant_frame(4, 4, (100, 150, 200)), color="RGB")

    np.testing.assert_allclose(tensor, ((0.299 * 100 + 0.587 * 150 + 0.114 * 200) / 255 - 0.5) / 0.5, rtol=1e-5)


def test_a_frame_object_brings_its_own_colour() -> None:
    frame = Frame(constant_frame(4, 4, (0, 0, 255)), color="BGR", frame_id=0, timestamp=time.time(), source="test")
    spec = make_spec(shape=(1, 4, 4, 3), layout="NHWC", dtype="uint8")

    image, _ = Preprocessor(spec)(frame, color="RGB")  # ignored for Frame objects

    assert tuple(image[0, 0, 0]) == (255, 0, 0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("resize", ["letterbox", "stretch", "center_crop"])
def test_nchw_and_nhwc_hold_the_same_values(backend: str, resize: str) -> None:
    frame = np.random.default_rng(3).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    common = {"resize": resize, "mean": (0.4, 0.5, 0.6), "std": (0.2, 0.3, 0.4)}
    nchw = Preprocessor(make_spec(shape=(1, 3, 24, 20), layout="NCHW", **common), backend=backend)
    nhwc = Preprocessor(make_spec(shape=(1, 24, 20, 3), layout="NHWC", **common), backend=backend)

    np.testing.assert_array_equal(nchw(frame)[0].transpose(0, 2, 3, 1), nhwc(frame)[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_quantised_inputs_take_raw_pixels(backend: str) -> None:
    frame = np.random.default_rng(4).integers(0, 256, (16, 12, 3), dtype=np.uint8)
    spec = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "resize": "stretch", "layout": "NHWC"}

    raw, _ = Preprocessor(make_spec(shape=(1, 16, 12, 3), dtype="uint8", **spec), backend=backend)(frame)
    signed, _ = Preprocessor(make_spec(shape=(1, 16, 12, 3), dtype="int8", **spec), backend=backend)(frame)

    np.testing.assert_array_equal(raw[0], frame)  # mean/std/scale not applied
    np.testing.assert_array_equal(signed[0].astype(np.int16), frame.astype(np.int16) - 128)


def test_int8_letterbox_pad_is_shifted_too() -> None:
    spec = make_spec(shape=(1, 8, 8, 3), layout="NHWC", dtype="int8")

    tensor, _ = Preprocessor(spec, pad_value=114)(constant_frame(2, 8, (255, 255, 255)))

    assert tensor[0, 0, 0, 0] == 114 - 128
    assert tensor[0, 4, 4, 0] == 127


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_float_frames_in_0_255_match_uint8_frames(dtype: type) -> None:
    frame = np.random.default_rng(5).integers(0, 256, (21, 35, 3), dtype=np.uint8)
    pre = Preprocessor(make_spec(shape=(1, 3, 16, 16)))

    expected, _ = pre(frame)
    got, _ = pre(frame.astype(dtype))

    np.testing.assert_allclose(got, expected, atol=2.5 / 255)  # cv2 rounds uint8 results to whole grey levels


def test_strided_and_flipped_views_are_accepted() -> None:
    frame = np.random.default_rng(6).integers(0, 256, (40, 60, 4), dtype=np.uint8)
    pre = Preprocessor(make_spec(shape=(1, 3, 20, 30), resize="stretch"))

    np.testing.assert_allclose(
        pre(frame[:, ::-1, :3], color="RGB")[0], pre(np.ascontiguousarray(frame[:, ::-1, :3]))[0], atol=1e-6
    )
    np.testing.assert_allclose(pre(frame[::2, ::2, :3])[0], pre(np.ascontiguousarray(frame[::2, ::2, :3]))[0])


def test_every_call_returns_a_new_array() -> None:
    pre = Preprocessor(make_spec())
    first, _ = pre(constant_frame(10, 10, (0, 0, 0)))
    kept = first.copy()

    second, _ = pre(constant_frame(10, 10, (255, 255, 255)))

    assert second is not first
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, kept)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("frame", "color", "match"),
    [
        (np.full((4, 4, 3), np.nan, np.float32), "RGB", "48 NaN and 0 inf"),
        (np.where(np.eye(4, dtype=bool)[:, :, None], np.inf, 1.0).repeat(3, axis=2), "RGB", "0 NaN and 12 inf"),
        (np.zeros(16, np.uint8), "RGB", r"1 dims \(shape \(16,\)\)"),
        (np.zeros((1, 4, 4, 3), np.uint8), "RGB", r"4 dims .*expected \(H, W\) or \(H, W, C\)"),
        (np.zeros((4, 4, 2), np.uint8), "RGB", "2 channels"),
        (np.zeros((4, 4, 5), np.uint8), "RGB", "5 channels"),
        (np.zeros((4, 4, 3), np.complex64), "RGB", r"dtype complex64; expected uint8 \(or float in 0..255\)"),
        (np.zeros((4, 4, 3), np.int32), "RGB", "dtype int32"),
        (np.zeros((4, 4, 3), bool), "RGB", "dtype bool"),
        (np.array([["a"]]), "GRAY", "dtype <U1"),
        (np.zeros((0, 4, 3), np.uint8), "RGB", "empty"),
        (np.zeros((4, 0), np.float32), "GRAY", "empty"),
        (np.zeros((4, 4, 4), np.uint8), "RGB", "4 channel.*use color 'RGBA' or 'BGRA'"),
        (np.zeros((4, 4), np.uint8), "RGB", "use color 'GRAY'"),
        (np.zeros((4, 4, 3), np.uint8), "RBG", "did you mean 'RGB'"),
    ],
)
def test_unusable_frames_are_rejected_with_the_reason(frame: np.ndarray, color: str, match: str) -> None:
    pre = Preprocessor(make_spec())

    with pytest.raises(InvalidFrameError, match=match):
        pre(frame, color=color)


@pytest.mark.parametrize(
    ("image", "color", "match"),
    [
        (np.zeros((4, 4, 3), np.float32), "RGB", "dtype float32"),
        (np.zeros((4, 4, 3), np.uint8), "GRAY", "3 channel"),
        (np.zeros((4, 4, 3), np.uint8), "YUV", "not one of"),
        ([[0, 1]], "GRAY", "numpy array"),
    ],
)
def test_frame_validates_its_image(image: Any, color: str, match: str) -> None:
    with pytest.raises(InvalidFrameError, match=match):
        Frame(image, color=color, frame_id=0, timestamp=0.0, source="test")


@pytest.mark.parametrize(
    ("spec", "options", "exc", "match"),
    [
        ({"shape": (4, 3, 8, 8)}, {}, ConfigError, "batch size 4"),
        ({"shape": (1, 8, 8)}, {}, ConfigError, "4 dims"),
        ({"shape": (1, 2, 8, 8)}, {}, ConfigError, "2 channels"),
        ({"resize": "crop"}, {}, ConfigError, "resize='crop'"),
        ({}, {"pad_value": 300}, ConfigError, "pad_value"),
        ({}, {"backend": "opencv"}, ConfigError, "backend='opencv'"),
    ],
)
def test_bad_specs_and_options_are_config_errors(
    spec: dict[str, Any], options: dict[str, Any], exc: type[Exception], match: str
) -> None:
    with pytest.raises(exc, match=match):
        Preprocessor(make_spec(**spec), **options)


def test_without_opencv_auto_falls_back_to_numpy_and_cv2_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` fail

    assert Preprocessor(make_spec()).backend == "numpy"
    with pytest.raises(BackendUnavailableError, match=r"edge-runtime\[camera\]"):
        Preprocessor(make_spec(), backend="cv2")


# --------------------------------------------------------------------------- numpy resize


@needs_cv2
@pytest.mark.parametrize(
    ("src_hw", "dst_wh", "channels"),
    [
        ((480, 640), (128, 96), 3),
        ((479, 641), (160, 97), 3),
        ((3, 7), (128, 128), 3),
        ((1080, 1920), (33, 17), 1),
        ((1, 1), (5, 3), 4),
        ((64, 64), (32, 32), 3),
        ((100, 60), (100, 333), 3),
        ((50, 50), (50, 50), 3),
    ],
)
def test_numpy_bilinear_agrees_with_cv2_within_one_grey_level(
    src_hw: tuple[int, int], dst_wh: tuple[int, int], channels: int
) -> None:
    assert cv2 is not None
    image = np.random.default_rng(7).integers(0, 256, (*src_hw, channels), dtype=np.uint8)
    if channels == 1:
        image = image[:, :, 0]

    ours = numpy_resize_bilinear(image, *dst_wh)
    theirs = cv2.resize(image, dst_wh, interpolation=cv2.INTER_LINEAR)

    assert ours.shape == theirs.shape
    assert ours.dtype == np.uint8
    assert np.abs(ours.astype(np.int16) - theirs).max() <= 1


@needs_cv2
def test_numpy_and_cv2_preprocessors_agree() -> None:
    frame = np.random.default_rng(8).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    spec = make_spec(shape=(1, 3, 128, 128), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

    with_cv2, geometry_cv2 = Preprocessor(spec, backend="cv2")(frame, color="BGR")
    with_numpy, geometry_numpy = Preprocessor(spec, backend="numpy")(frame, color="BGR")

    assert geometry_cv2 == geometry_numpy
    np.testing.assert_allclose(with_cv2, with_numpy, atol=1.01 / 255 / 0.224)


def test_numpy_bilinear_keeps_float_precision_and_rank() -> None:
    image = np.linspace(0.0, 1.0, 11, dtype=np.float64)[None, :].repeat(3, axis=0)

    out = numpy_resize_bilinear(image, 21, 3)

    assert out.shape == (3, 21)
    assert out.dtype == np.float32
    # A linear ramp stays linear: value = source position (half-pixel centres, clamped at the edges) * 0.1.
    position = np.clip((np.arange(21) + 0.5) * 11 / 21 - 0.5, 0, 10)
    np.testing.assert_allclose(out[0], position * 0.1, atol=1e-6)


@pytest.mark.parametrize(
    ("image", "size", "exc"),
    [
        (np.zeros((0, 3), np.uint8), (4, 4), InvalidFrameError),
        (np.zeros((2, 2, 2, 2), np.uint8), (4, 4), InvalidFrameError),
        (np.zeros((2, 2), np.complex64), (4, 4), InvalidFrameError),
        (np.zeros((2, 2), np.uint8), (0, 4), ValueError),
        (np.zeros((2, 2), np.uint8), (4, 2.5), ValueError),
    ],
)
def test_numpy_bilinear_rejects_bad_arguments(image: np.ndarray, size: tuple[Any, Any], exc: type[Exception]) -> None:
    with pytest.raises(exc):
        numpy_resize_bilinear(image, *size)


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "mode", ["letterbox", "letterbox/top_left", "letterbox/center_pad_first", "stretch", "center_crop"]
)
@pytest.mark.parametrize(
    ("frame_hw", "model_hw"), [((479, 641), (128, 128)), ((1080, 1920), (96, 160)), ((7, 3), (32, 32))]
)
def test_geometry_round_trip(backend: str, mode: str, frame_hw: tuple[int, int], model_hw: tuple[int, int]) -> None:
    """A bright spot in the frame lands where the geometry says, and maps back to where it was."""
    frame_h, frame_w = frame_hw
    resize, _, pad_position = mode.partition("/")
    pre = Preprocessor(make_spec(shape=(1, *model_hw, 1), layout="NHWC", dtype="float32", color="GRAY",
                                 resize=resize, pad_position=pad_position or "center", scale=1.0),
                       backend=backend, pad_value=0)  # fmt: skip
    spot = max(1, min(frame_hw) // 20)
    x0, y0 = frame_w // 2 + frame_w // 7, frame_h // 2 - frame_h // 9
    frame = np.zeros(frame_hw, np.uint8)
    frame[y0 : y0 + spot, x0 : x0 + spot] = 255
    centre = np.array([x0 + spot / 2, y0 + spot / 2])  # continuous pixel coordinates (pixel i spans [i, i+1))

    tensor, geometry = pre(frame, color="GRAY")

    # Pure geometry: frame → model → frame is the identity.
    model_point = centre * [geometry.scale_x, geometry.scale_y] - [geometry.offset_x, geometry.offset_y]
    np.testing.assert_allclose(geometry.to_frame(model_point[None])[0], centre, rtol=1e-5)
    # Pixels: the spot's centroid in the model input maps back to the spot in the frame.
    weights = tensor[0, :, :, 0].astype(np.float64)
    ys, xs = np.indices(weights.shape)
    found = np.array([(xs * weights).sum(), (ys * weights).sum()]) / weights.sum() + 0.5
    np.testing.assert_allclose(found, model_point, atol=0.75)
    back = geometry.to_frame(found[None])[0]
    tolerance = 0.75 / np.array([geometry.scale_x, geometry.scale_y])
    assert (np.abs(back - centre) <= tolerance + 1e-6).all(), (back, centre, tolerance)


def test_top_left_letterbox_pads_first_then_resizes_the_whole() -> None:
    # as packages that pad at the corner do: the edge row blends content and padding
    from edge_runtime.bundle.specs import InputSpec
    from edge_runtime.frames.preprocess import Preprocessor, numpy_resize_bilinear

    spec = InputSpec(name="x", shape=(1, 32, 32, 3), layout="NHWC", scale=1.0, pad_value=0.0, pad_position="top_left")
    frame = np.random.default_rng(4).integers(0, 255, (45, 100, 3), dtype=np.uint8)
    padded = np.zeros((100, 100, 3), np.uint8)
    padded[:45] = frame
    expected = numpy_resize_bilinear(padded, 32, 32).astype(np.float32)

    got, geometry = Preprocessor(spec, backend="numpy")(frame)

    np.testing.assert_allclose(got[0], expected, atol=0.51)  # the same resize, kept unrounded here
    assert got[0, 14].max() > 0 and not got[0, 15:].any()  # row 14 (of 14.4 content rows) blends in the padding
    assert (geometry.scale_x, geometry.scale_y, geometry.offset_x, geometry.offset_y) == (0.32, 0.32, 0.0, 0.0)
