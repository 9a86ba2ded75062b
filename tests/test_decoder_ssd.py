"""The ``ssd`` decoder family: priors (SSD / RetinaFace PriorBox), MediaPipe SSD anchors and the
decoding of offsets relative to them.

Each model here is built in the test from its own definition: an ENCODER (the inverse of the
decoding: known boxes and keypoints in model-input pixels, matched to known priors, become the
raw loc/conf tensors) produces the outputs; the decoder must give back the boxes in frame pixels.
Priors are computed here independently of ``priors.py`` (closed forms, or a loop transcription of
the reference PriorBox).
"""

from __future__ import annotations

import math
from itertools import product
from typing import Any

import numpy as np
import pytest

from edge_runtime.errors import ConfigError, ModelError
from edge_runtime.frames.geometry import FrameGeometry
from edge_runtime.inference.decoders.priors import AnchorSpec, PriorSpec, prior_boxes, ssd_anchors
from edge_runtime.inference.decoders.ssd import SsdDecoder

RETINA: dict[str, Any] = {"min_sizes": [[16, 32], [64, 128], [256, 512]], "strides": [8, 16, 32]}
SSD300: dict[str, Any] = {
    "min_sizes": [30, 60, 111, 162, 213, 264],
    "max_sizes": [60, 111, 162, 213, 264, 315],
    "strides": [8, 16, 32, 64, 100, 300],
    "aspect_ratios": [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
}
BLAZEFACE = {
    "num_layers": 4,
    "strides": [8, 16, 16, 16],
    "min_scale": 0.1484375,
    "max_scale": 0.75,
    "anchor_offset_x": 0.5,
    "anchor_offset_y": 0.5,
    "aspect_ratios": [1.0],
    "fixed_anchor_size": True,
    "interpolated_scale_aspect_ratio": 1.0,
}
#: MediaPipe's SSDLite object detection (object_detection_mobile_cpu.pbtxt): num_boxes 2034.
MEDIAPIPE_SSD = {
    "num_layers": 6,
    "min_scale": 0.2,
    "max_scale": 0.95,
    "input_size_height": 320,
    "input_size_width": 320,
    "strides": [16, 32, 64, 128, 256, 512],
    "aspect_ratios": [1.0, 2.0, 0.5, 3.0, 0.3333],
    "reduce_boxes_in_lowest_layer": True,
    "fixed_anchor_size": False,
}


def fail(key: str, message: str) -> ConfigError:
    return ConfigError(f"{key} {message}")


def letterbox_to_frame(points: np.ndarray, input_w: int, input_h: int) -> np.ndarray:
    """Model-input pixels → frame pixels of a 640x480 frame letterboxed into ``input_w x input_h``."""
    scale = min(input_w / 640, input_h / 480)
    pad = np.array([(input_w - 640 * scale) / 2, (input_h - 480 * scale) / 2])
    return (np.asarray(points, np.float64).reshape(-1, 2) - pad) / scale


def boxes_letterbox(boxes: Any, input_w: int, input_h: int) -> np.ndarray:
    return letterbox_to_frame(np.asarray(boxes, np.float64).reshape(-1, 2), input_w, input_h).reshape(-1, 4)


def logit(p: float) -> float:
    return math.log(p / (1 - p))


# --- encoders: the inverse of the decoding ---------------------------------------------------


def encode_centre(box: Any, prior: Any, size: tuple[int, int], variances: Any = (0.1, 0.2)) -> list[float]:
    """Box ``x1, y1, x2, y2`` (model-input pixels) → SSD loc against ``prior`` (cx, cy, w, h in 0..1)."""
    (w_in, h_in), (v0, v1) = size, variances
    x1, y1, x2, y2 = box
    cx, cy, w, h = (x1 + x2) / 2 / w_in, (y1 + y2) / 2 / h_in, (x2 - x1) / w_in, (y2 - y1) / h_in
    pcx, pcy, pw, ph = prior
    return [(cx - pcx) / (v0 * pw), (cy - pcy) / (v0 * ph), math.log(w / pw) / v1, math.log(h / ph) / v1]


def encode_points_centre(points: Any, prior: Any, size: tuple[int, int], v0: float = 0.1) -> list[float]:
    pcx, pcy, pw, ph = prior
    return [v for x, y in points for v in ((x / size[0] - pcx) / (v0 * pw), (y / size[1] - pcy) / (v0 * ph))]


def encode_linear(box: Any, anchor: Any, size: tuple[int, int], scales: Any) -> list[float]:
    """Box → MediaPipe raw ``x, y, w, h``: ``x = (cx - acx) * x_scale / aw``, ``w = w * w_scale / aw``."""
    (w_in, h_in), (xs, ys, ws, hs) = size, scales
    x1, y1, x2, y2 = box
    cx, cy, w, h = (x1 + x2) / 2 / w_in, (y1 + y2) / 2 / h_in, (x2 - x1) / w_in, (y2 - y1) / h_in
    acx, acy, aw, ah = anchor
    return [(cx - acx) * xs / aw, (cy - acy) * ys / ah, w * ws / aw, h * hs / ah]


def encode_points_linear(points: Any, anchor: Any, size: tuple[int, int], scales: Any) -> list[float]:
    acx, acy, aw, ah = anchor
    return [v for x, y in points for v in ((x / size[0] - acx) * scales[0] / aw, (y / size[1] - acy) * scales[1] / ah)]


# --- reference priors, written from the definitions ------------------------------------------


def retina_prior(level: int, i: int, j: int, size: int, stride: int, input_size: int = 640) -> list[float]:
    """RetinaFace PriorBox: ``cx = (j + 0.5) * step / W``, ``w = min_size / W``."""
    return [(j + 0.5) * stride / input_size, (i + 0.5) * stride / input_size, size / input_size, size / input_size]


def ssd_pytorch_priors(cfg: dict[str, Any], image_size: int = 300) -> np.ndarray:
    """A transcription of amdegroot/ssd.pytorch ``PriorBox.forward`` (its v2 config)."""
    mean: list[float] = []
    feature_maps = [math.ceil(image_size / s) for s in cfg["strides"]]
    for k, f in enumerate(feature_maps):
        for i, j in product(range(f), repeat=2):
            f_k = image_size / cfg["strides"][k]
            cx, cy = (j + 0.5) / f_k, (i + 0.5) / f_k
            s_k = cfg["min_sizes"][k] / image_size
            mean += [cx, cy, s_k, s_k]
            s_k_prime = math.sqrt(s_k * (cfg["max_sizes"][k] / image_size))
            mean += [cx, cy, s_k_prime, s_k_prime]
            for ar in cfg["aspect_ratios"][k]:
                mean += [cx, cy, s_k * math.sqrt(ar), s_k / math.sqrt(ar)]
                mean += [cx, cy, s_k / math.sqrt(ar), s_k * math.sqrt(ar)]
    return np.array(mean).reshape(-1, 4)


def mediapipe_scale(index: int, count: int = 4, low: float = 0.1484375, high: float = 0.75) -> float:
    return low + (high - low) * index / (count - 1)


# --- priors and anchors ----------------------------------------------------------------------


def test_retinaface_priors_count_and_order() -> None:
    priors = prior_boxes(PriorSpec.read(RETINA, fail), 640, 640)
    assert priors.shape == (16800, 4) and priors.dtype == np.float32
    for level, (i, j, s) in [(0, (0, 0, 0)), (0, (0, 1, 1)), (0, (79, 3, 1)), (1, (5, 7, 0)), (2, (19, 19, 1))]:
        stride, sizes = RETINA["strides"][level], RETINA["min_sizes"][level]
        start = sum((640 // RETINA["strides"][k]) ** 2 * 2 for k in range(level))
        cols = 640 // stride
        index = start + (i * cols + j) * 2 + s
        np.testing.assert_allclose(priors[index], retina_prior(level, i, j, sizes[s], stride), atol=1e-7)


def test_ssd300_priors_match_the_reference_8732() -> None:
    priors = prior_boxes(PriorSpec.read(SSD300, fail), 300, 300)
    assert priors.shape == (8732, 4)
    np.testing.assert_allclose(priors, ssd_pytorch_priors(SSD300), atol=1e-6)


def test_prior_options_feature_maps_flip_clip_input_size() -> None:
    # Without strides the step is input / cells (Caffe SSD): centres (j + 0.5) / cols.
    spec = PriorSpec.read({"min_sizes": [[10]], "feature_maps": [[2, 3]], "aspect_ratios": [[2, 1]]}, fail)
    priors = prior_boxes(spec, 60, 40)
    assert priors.shape == (2 * 3 * 3, 4)  # min size, ar 2, ar 1/2 (ar 1 skipped)
    np.testing.assert_allclose(priors[3 * 4], [1.5 / 3, 1.5 / 2, 10 / 60, 10 / 40], atol=1e-7)  # row 1, col 1
    np.testing.assert_allclose(priors[1, 2:], [10 * math.sqrt(2) / 60, 10 / math.sqrt(2) / 40], atol=1e-7)
    np.testing.assert_allclose(priors[2, 2:], [10 / math.sqrt(2) / 60, 10 * math.sqrt(2) / 40], atol=1e-7)
    no_flip = PriorSpec.read({"min_sizes": [[10]], "strides": [20], "aspect_ratios": [[2]], "flip": False}, fail)
    assert prior_boxes(no_flip, 60, 40).shape == (2 * 3 * 2, 4)
    clipped = prior_boxes(PriorSpec.read({"min_sizes": [[100]], "strides": [20], "clip": True}, fail), 60, 40)
    assert clipped.max() == 1.0 and clipped.min() >= 0.0
    fixed = PriorSpec.read({**RETINA, "input_size": [320, 320]}, fail)
    assert prior_boxes(fixed, 640, 640).shape == (4200, 4)


def test_blazeface_anchors_896_and_known_centres() -> None:
    anchors = ssd_anchors(AnchorSpec.read(BLAZEFACE, fail), 128, 128)
    assert anchors.shape == (896, 4)
    np.testing.assert_allclose(anchors[:, 2:], 1.0)  # fixed_anchor_size
    known = {
        0: (0.03125, 0.03125),  # 16x16 grid, 2 anchors per cell
        1: (0.03125, 0.03125),
        2: (0.09375, 0.03125),
        32: (0.03125, 0.09375),  # row 1
        511: (0.96875, 0.96875),
        512: (0.0625, 0.0625),  # strides 16, 16, 16 merged: 8x8 grid, 6 anchors per cell
        517: (0.0625, 0.0625),
        518: (0.1875, 0.0625),
        895: (0.9375, 0.9375),
    }
    for index, centre in known.items():
        np.testing.assert_allclose(anchors[index, :2], centre, atol=1e-7)


def test_mediapipe_anchor_sizes_and_ssdlite_count() -> None:
    anchors = ssd_anchors(AnchorSpec.read({**BLAZEFACE, "fixed_anchor_size": False}, fail), 128, 128)
    s = [mediapipe_scale(i) for i in range(4)] + [1.0]
    np.testing.assert_allclose(anchors[0, 2:], [s[0], s[0]], rtol=1e-6)
    np.testing.assert_allclose(anchors[1, 2:], [math.sqrt(s[0] * s[1])] * 2, rtol=1e-6)
    cell = [s[1], math.sqrt(s[1] * s[2]), s[2], math.sqrt(s[2] * s[3]), s[3], math.sqrt(s[3] * s[4])]
    np.testing.assert_allclose(anchors[512:518, 2], cell, rtol=1e-6)
    ssd = ssd_anchors(AnchorSpec.read(MEDIAPIPE_SSD, fail), 1, 1)  # input size from the table
    assert ssd.shape == (2034, 4)
    # reduce_boxes_in_lowest_layer: (scale 0.1, ar 1), (0.2, ar 2), (0.2, ar 0.5) in the lowest layer.
    np.testing.assert_allclose(ssd[:3, 2:], [[0.1, 0.1], [0.2 * 2**0.5, 0.2 / 2**0.5], [0.2 / 2**0.5, 0.2 * 2**0.5]])
    np.testing.assert_allclose(ssd[3, :2], [1.5 / 20, 0.5 / 20], rtol=1e-6)


# --- decoding models built from their definition ---------------------------------------------


def test_retinaface_softmax_background_and_landmarks() -> None:
    faces = [  # prior (level, i, j, size index), box, landmarks, face probability
        (
            (0, 30, 40, 1),
            [300.0, 220.0, 340.0, 262.0],
            [[310, 235], [330, 235], [320, 245], [312, 255], [328, 255]],
            0.9,
        ),
        ((2, 10, 5, 0), [60.0, 150.0, 330.0, 420.0], [[150, 250], [240, 250], [195, 300], [160, 360], [230, 360]], 0.8),
    ]
    loc = np.zeros((1, 16800, 4), np.float32)
    conf = np.tile(np.array([4.0, -4.0], np.float32), (1, 16800, 1))
    landms = np.zeros((1, 16800, 10), np.float32)
    for (level, i, j, s), box, points, p in faces:
        stride, cols = RETINA["strides"][level], 640 // RETINA["strides"][level]
        index = sum((640 // RETINA["strides"][k]) ** 2 * 2 for k in range(level)) + (i * cols + j) * 2 + s
        prior = retina_prior(level, i, j, RETINA["min_sizes"][level][s], stride)
        loc[0, index] = encode_centre(box, prior, (640, 640))
        landms[0, index] = encode_points_centre(points, prior, (640, 640))
        conf[0, index] = [0.0, logit(p)]
    names = ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"]
    params = {"priors": RETINA, "score_activation": "softmax", "background_class": 0, "labels": ["face"]}
    decoder = SsdDecoder("head", {**params, "keypoints": 5, "keypoint_names": names}, ["loc", "conf", "landms"])
    result = decoder({"loc": loc, "conf": conf, "landms": landms}, FrameGeometry.letterbox(640, 480, 640, 640))
    np.testing.assert_allclose(result.xyxy, boxes_letterbox([f[1] for f in faces], 640, 640), atol=1e-3)
    np.testing.assert_allclose(result.scores, [0.9, 0.8], atol=1e-5)
    assert result.class_ids.tolist() == [0, 0] and result.labels == ("face", "face")
    assert result.keypoint_names == tuple(names) and result.keypoints is not None
    expected = letterbox_to_frame(np.array([f[2] for f in faces], np.float64), 640, 640).reshape(2, 5, 2)
    np.testing.assert_allclose(result.keypoints, expected, atol=1e-3)


def test_ssd300_max_sizes_aspect_ratios_named_outputs() -> None:
    # conf has 4 columns like loc: the outputs must be named.
    matches = [  # level, row, col, shape index in the cell, box, logits (background, cat, dog, bird)
        (1, 9, 4, 4, [40.0, 140.0, 140.0, 180.0], [0.0, -2.0, 3.0, -1.0]),  # ar 3 prior of min size 60
        (3, 2, 3, 1, [160.0, 80.0, 290.0, 240.0], [-1.0, 2.5, 0.0, 0.5]),  # sqrt(162 * 213) prior
    ]
    reference = ssd_pytorch_priors(SSD300)
    loc = np.zeros((1, 8732, 4), np.float32)
    conf = np.tile(np.array([6.0, 0.0, 0.0, 0.0], np.float32), (1, 8732, 1))
    cols = [38, 19, 10, 5, 3, 1]
    per_cell = [4, 6, 6, 6, 4, 4]
    for level, i, j, shape, box, logits in matches:
        index = sum(cols[k] ** 2 * per_cell[k] for k in range(level)) + (i * cols[level] + j) * per_cell[level] + shape
        loc[0, index] = encode_centre(box, reference[index], (300, 300))
        conf[0, index] = logits
    params = {"priors": SSD300, "score_activation": "softmax", "background_class": 0, "labels": ["cat", "dog", "bird"]}
    decoder = SsdDecoder("head", {**params, "box_output": "loc", "score_output": "conf"}, ["conf", "loc"])
    result = decoder({"loc": loc, "conf": conf}, FrameGeometry.stretch(640, 480, 300, 300))
    expected = np.array([m[4] for m in matches]) * [640 / 300, 480 / 300, 640 / 300, 480 / 300]
    probabilities = [np.exp(m[5]) / np.exp(m[5]).sum() for m in matches]
    np.testing.assert_allclose(result.xyxy, expected, atol=1e-3)
    np.testing.assert_allclose(result.scores, [probabilities[0][2], probabilities[1][1]], atol=1e-5)
    assert result.class_ids.tolist() == [1, 0] and result.labels == ("dog", "cat")
    assert result.keypoints is None and result.keypoint_names == ()


def blazeface_model(faces: list[Any]) -> dict[str, np.ndarray]:
    """(1, 896, 16) boxes + 6 keypoints (raw x, y, w, h, then x, y per keypoint), (1, 896, 1) logits."""
    anchors = {
        index: [(c % 16 + 0.5) / 16, (c // 16 + 0.5) / 16, 1.0, 1.0] for index in range(512) for c in [index // 2]
    }
    anchors.update(
        {512 + c * 6 + a: [(c % 8 + 0.5) / 8, (c // 8 + 0.5) / 8, 1.0, 1.0] for c in range(64) for a in range(6)}
    )
    regressors = np.zeros((1, 896, 16), np.float32)
    scores = np.full((1, 896, 1), -10.0, np.float32)
    for index, box, points, p in faces:
        regressors[0, index, :4] = encode_linear(box, anchors[index], (128, 128), (128, 128, 128, 128))
        regressors[0, index, 4:] = encode_points_linear(points, anchors[index], (128, 128), (128, 128))
        scores[0, index, 0] = logit(p)
    return {"regressors": regressors, "classificators": scores}


def test_blazeface_anchors_sigmoid_boxes_and_keypoints() -> None:
    faces = [
        (
            512 + (3 * 8 + 5) * 6 + 2,
            [60.0, 40.0, 90.0, 75.0],
            [[68, 52], [82, 52], [75, 60], [75, 67], [62, 55], [88, 55]],
            0.95,
        ),
        (2 * 16 + 3, [10.0, 30.0, 24.0, 46.0], [[14, 36], [20, 36], [17, 40], [17, 43], [11, 38], [23, 38]], 0.7),
    ]
    decoder = SsdDecoder(
        "head",
        {"anchors": BLAZEFACE, "score_activation": "sigmoid", "keypoints": 6, "labels": ["face"]},
        ["classificators", "regressors"],
    )
    result = decoder(blazeface_model(faces), FrameGeometry.letterbox(640, 480, 128, 128))
    np.testing.assert_allclose(result.xyxy, boxes_letterbox([f[1] for f in faces], 128, 128), atol=1e-3)
    np.testing.assert_allclose(result.scores, [0.95, 0.7], atol=1e-5)
    assert result.labels == ("face", "face") and result.keypoint_names == tuple(f"point_{k}" for k in range(6))
    expected = letterbox_to_frame(np.array([f[2] for f in faces], np.float64), 128, 128).reshape(2, 6, 2)
    np.testing.assert_allclose(np.asarray(result.keypoints), expected, atol=1e-3)
    assert decoder.priors(FrameGeometry.letterbox(640, 480, 128, 128)) is decoder.priors(
        FrameGeometry.stretch(320, 240, 128, 128)
    )  # one computation per input size


def test_coordinate_order_yx_with_scales_and_sized_anchors() -> None:
    s = [mediapipe_scale(i) for i in range(4)] + [1.0]
    index = 512 + (2 * 8 + 6) * 6 + 5  # the interpolated anchor of the last layer: sqrt(s3 * 1)
    anchor = [6.5 / 8, 2.5 / 8, math.sqrt(s[3]), math.sqrt(s[3])]
    scales = [10.0, 10.0, 5.0, 5.0]
    box, point = [70.0, 20.0, 120.0, 60.0], [[95.0, 35.0]]
    x, y, w, h = encode_linear(box, anchor, (128, 128), scales)
    kx, ky = encode_points_linear(point, anchor, (128, 128), scales)
    raw = np.zeros((1, 896, 6), np.float32)
    raw[0, index] = [y, x, h, w, ky, kx]
    scores = np.full((1, 896), -8.0, np.float32)
    scores[0, index] = logit(0.6)
    params = {"anchors": {**BLAZEFACE, "fixed_anchor_size": False}, "scales": scales, "coordinate_order": "yx"}
    decoder = SsdDecoder("head", {**params, "score_activation": "sigmoid", "keypoints": 1}, ["boxes", "scores"])
    result = decoder({"boxes": raw, "scores": scores}, FrameGeometry.stretch(640, 480, 128, 128))
    frame = np.array([640 / 128, 480 / 128])
    np.testing.assert_allclose(result.xyxy, [np.array(box) * np.tile(frame, 2)], atol=1e-3)
    np.testing.assert_allclose(np.asarray(result.keypoints), [np.array(point) * frame], atol=1e-3)
    np.testing.assert_allclose(result.scores, [0.6], atol=1e-5)


def test_anchors_with_variances_decode_exponential_sizes_yx() -> None:
    # MediaPipe SSDLite: apply_exponential_on_box_size with x/y scale 10, w/h scale 5 = variances [0.1, 0.2].
    anchor = [0.5 / 20, 0.5 / 20, 0.2 * 2**0.5, 0.2 / 2**0.5]  # index 1: ar 2 of the lowest layer
    box = [2.0, 50.0, 40.0, 70.0]  # inside the letterboxed frame (rows 40..280)
    dx, dy, dw, dh = encode_centre(box, anchor, (320, 320))
    raw = np.zeros((1, 2034, 4), np.float32)
    raw[0, 1] = [dy, dx, dh, dw]
    scores = np.full((1, 2034, 3), -9.0, np.float32)
    scores[0, 1] = [5.0, -1.0, 2.0]
    params = {"anchors": MEDIAPIPE_SSD, "variances": [0.1, 0.2], "coordinate_order": "yx", "background_class": 0}
    decoder = SsdDecoder("head", {**params, "score_activation": "sigmoid"}, ["boxes", "scores"])
    result = decoder({"boxes": raw, "scores": scores}, FrameGeometry.letterbox(640, 480, 320, 320))
    np.testing.assert_allclose(result.xyxy, boxes_letterbox([box], 320, 320), atol=1e-3)
    assert result.labels == ("class_1",)  # background (column 0) dropped before choosing the class
    np.testing.assert_allclose(result.scores, [1 / (1 + math.exp(-2.0))], atol=1e-5)


def small_model(boxes: list[list[float]], logits: list[list[float]]) -> dict[str, np.ndarray]:
    """16 priors of 32 px on a 4x4 grid of a 128x128 input; box k against prior k."""
    priors = [[(j + 0.5) / 4, (i + 0.5) / 4, 0.25, 0.25] for i in range(4) for j in range(4)]
    loc = np.zeros((1, 16, 4), np.float32)
    conf = np.full((1, 16, len(logits[0])), -10.0, np.float32)
    for k, (box, row) in enumerate(zip(boxes, logits, strict=True)):
        loc[0, k] = encode_centre(box, priors[k], (128, 128))
        conf[0, k] = row
    return {"loc": loc, "conf": conf}


def test_nms_per_class_agnostic_and_max_detections() -> None:
    same = FrameGeometry.stretch(128, 128, 128, 128)
    boxes = [[10.0, 10.0, 50.0, 50.0], [12.0, 11.0, 51.0, 52.0], [70.0, 70.0, 110.0, 120.0], [11.0, 10.0, 50.0, 49.0]]
    logits = [[3.0, -9.0], [1.0, -9.0], [2.0, -9.0], [-9.0, 0.0]]  # box 3: class 1, over boxes 0/1
    base = {"priors": {"min_sizes": [[32]], "strides": [32]}, "score_activation": "sigmoid", "labels": ["a", "b"]}
    model = small_model(boxes, logits)
    per_class = SsdDecoder("head", base, ["loc", "conf"])(model, same)
    np.testing.assert_allclose(per_class.xyxy, [boxes[0], boxes[2], boxes[3]], atol=1e-3)
    assert per_class.labels == ("a", "a", "b")
    agnostic = SsdDecoder("head", {**base, "class_agnostic_nms": True}, ["loc", "conf"])(model, same)
    np.testing.assert_allclose(agnostic.xyxy, [boxes[0], boxes[2]], atol=1e-3)
    top = SsdDecoder("head", {**base, "max_detections": 1, "score_threshold": 0.5}, ["loc", "conf"])(model, same)
    assert top.labels == ("a",) and len(top.xyxy) == 1


def test_one_output_boxes_then_scores() -> None:
    model = small_model([[20.0, 30.0, 60.0, 50.0]], [[-3.0, 0.9]])
    rows = np.concatenate([model["loc"], model["conf"]], axis=2)  # (1, 16, 4 + 2)
    result = SsdDecoder("head", {"priors": {"min_sizes": [[32]], "strides": [32]}}, ["out"])(
        {"out": rows}, FrameGeometry.stretch(128, 128, 128, 128)
    )
    np.testing.assert_allclose(result.xyxy, [[20.0, 30.0, 60.0, 50.0]], atol=1e-3)
    assert result.labels == ("class_1",) and result.scores.tolist() == pytest.approx([0.9])


# --- errors ------------------------------------------------------------------------------------


def test_prior_count_mismatch_names_head_output_and_expected_count() -> None:
    decoder = SsdDecoder("faces", {"priors": RETINA}, ["loc", "conf"])
    tensors = {"loc": np.zeros((1, 16000, 4), np.float32), "conf": np.zeros((1, 16000, 2), np.float32)}
    with pytest.raises(ModelError) as error:
        decoder(tensors, FrameGeometry.letterbox(640, 480, 640, 640))
    message = str(error.value)
    assert "'faces'" in message and "'loc'" in message and "(1, 16000, 4)" in message
    assert "P = 16800 priors from the priors spec (3 levels: 80x80x2, 40x40x2, 20x20x2 at input 640x640)" in message
    blaze = SsdDecoder("faces", {"anchors": BLAZEFACE}, ["boxes", "scores"])
    with pytest.raises(ModelError, match=r"P = 896 anchors from the anchors spec \(2 levels: 16x16x2, 8x8x6"):
        blaze(
            {"boxes": np.zeros((1, 900, 4)), "scores": np.zeros((1, 900, 1))}, FrameGeometry.stretch(128, 128, 128, 128)
        )


def test_label_and_class_count_mismatch() -> None:
    model = small_model([[20.0, 30.0, 60.0, 50.0]], [[0.0, 1.0]])
    params = {"priors": {"min_sizes": [[32]], "strides": [32]}, "background_class": 0, "labels": ["a", "b"]}
    with pytest.raises(ModelError, match=r"'conf' has shape \(1, 16, 2\).*\(1, P, 3\): one score per label plus the"):
        SsdDecoder("head", params, ["loc", "conf"])(model, FrameGeometry.stretch(128, 128, 128, 128))
    with pytest.raises(ModelError, match=r"'conf'.*\(1, P, 3\): one score per label$"):
        SsdDecoder("head", {**params, "labels": ["a", "b", "c"], "background_class": None}, ["loc", "conf"])(
            model, FrameGeometry.stretch(128, 128, 128, 128)
        )


def test_keypoint_count_mismatch() -> None:
    geometry = FrameGeometry.letterbox(640, 480, 640, 640)
    tensors = {
        "loc": np.zeros((1, 16800, 4), np.float32),
        "conf": np.zeros((1, 16800, 2), np.float32),
        "landms": np.zeros((1, 16800, 10), np.float32),
    }
    named = {"box_output": "loc", "score_output": "conf", "keypoint_output": "landms"}
    with pytest.raises(ModelError, match=r"'landms' has shape \(1, 16800, 10\).*\(1, 16800, 8\).*keypoints = 4"):
        SsdDecoder("head", {"priors": RETINA, "keypoints": 4, **named}, list(tensors))(tensors, geometry)
    with pytest.raises(ModelError, match="cannot tell which output holds the keypoints"):
        SsdDecoder("head", {"priors": RETINA, "keypoints": 4}, list(tensors))(tensors, geometry)
    blaze = blazeface_model([])
    same = FrameGeometry.stretch(128, 128, 128, 128)
    with pytest.raises(ModelError, match=r"regressors would fit keypoints = 6"):
        SsdDecoder("head", {"anchors": BLAZEFACE}, list(blaze))(blaze, same)
    params = {"anchors": BLAZEFACE, "box_output": "regressors", "keypoints": 5}
    with pytest.raises(ModelError, match=r"'regressors' has shape \(1, 896, 16\).*boxes \(1, P, 14\)"):
        SsdDecoder("head", params, list(blaze))(blaze, same)
    with pytest.raises(ModelError, match=r"12 extra values would be keypoints = 6"):
        SsdDecoder("head", {**params, "keypoints": 0}, list(blaze))(blaze, same)


def test_ambiguous_outputs_ask_for_names() -> None:
    tensors = {"a": np.zeros((1, 16, 4), np.float32), "b": np.zeros((1, 16, 4), np.float32)}
    with pytest.raises(ModelError, match="set box_output and score_output"):
        SsdDecoder("head", {"priors": {"min_sizes": [[32]], "strides": [32]}}, ["a", "b"])(
            tensors, FrameGeometry.stretch(128, 128, 128, 128)
        )


@pytest.mark.parametrize(
    ("params", "outputs", "pattern"),
    [
        (
            {"priors": {**RETINA, "min_size": [16]}},
            ["l", "c"],
            r"'priors.min_size' is not a key of priors \(did you mean 'min_sizes'",
        ),
        (
            {"anchors": {**BLAZEFACE, "stride": [8]}},
            ["l", "c"],
            r"'anchors.stride' is not a key of anchors \(did you mean 'strides'",
        ),
        ({"priors": RETINA, "anchors": BLAZEFACE}, ["l", "c"], r"'priors' and 'anchors' are both given"),
        ({"labels": ["face"]}, ["l", "c"], r"'priors' \(or 'anchors'\) is required"),
        ({"priors": {"strides": [8]}}, ["l", "c"], r"'priors.min_sizes' is required"),
        (
            {"priors": {"min_sizes": [[16], [32]], "strides": [8]}},
            ["l", "c"],
            r"'priors.strides' has 1 entries for 2 levels",
        ),
        ({"priors": {"min_sizes": [16]}}, ["l", "c"], r"'priors.strides' \(or priors.feature_maps\) is required"),
        ({"anchors": {**BLAZEFACE, "num_layers": 3}}, ["l", "c"], r"'anchors.num_layers' is 3"),
        ({"anchors": {"strides": [8]}}, ["l", "c"], r"'anchors.min_scale' is required"),
        (
            {"priors": RETINA, "box_output": "lco"},
            ["loc", "c"],
            r"'box_output' is 'lco', not an output.*did you mean 'loc'",
        ),
        ({"priors": RETINA, "scales": [1, 1, 1, 1]}, ["l", "c"], r"'scales' is the linear encoding"),
        ({"priors": RETINA, "variances": [0.1]}, ["l", "c"], r"'variances' must be a list of 2 or 4 numbers"),
        ({"priors": RETINA}, ["l", "c", "k"], r"'keypoints' must be >= 1 for a head with three outputs"),
        (
            {"priors": RETINA, "keypoints": 5, "keypoint_output": "c"},
            ["l", "c"],
            r"'keypoint_output' needs a head with three",
        ),
        ({"priors": RETINA, "score_activation": "softmx"}, ["l", "c"], r"did you mean 'softmax'"),
    ],
)
def test_config_errors(params: dict[str, Any], outputs: list[str], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern) as error:
        SsdDecoder("faces", params, outputs)
    assert "head 'faces'" in str(error.value)
