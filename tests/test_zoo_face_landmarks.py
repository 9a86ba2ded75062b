"""The zoo's face mesh and iris entries (``zoo/face_landmarks.py``): the comparison of the published
landmarks (the heads' landmarks decoder) with the package's raw outputs, the specs, and the
catalog. No network: the end-to-end run is ``python -m zoo --models face-landmark,iris-landmark``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomllib

from edge_runtime.bundle.specs import InputSpec
from exporter.specs import load_head_spec
from zoo.catalog import MODELS, runner
from zoo.face_landmarks import CASES, LANDMARK_LIMIT, compare, points_of, run_face, run_iris


def _line(case: Any, values: list[np.ndarray], logit: float | None = None) -> dict[str, Any]:
    """The result line the daemon publishes for raw outputs ``values``, through the head's own decoder."""
    from edge_runtime.frames.geometry import FrameGeometry
    from edge_runtime.inference.decoders import build_decoder

    head = load_head_spec(case.specs / "heads.toml")[case.head]
    assert head.decoder is not None and head.outputs is not None
    tensors = dict(zip(head.outputs, [v.reshape(1, -1) for v in values], strict=False))
    if logit is not None:
        tensors[head.outputs[1]] = np.full((1, 1, 1, 1), logit)
    geometry = FrameGeometry.stretch(case.size, case.size, case.size, case.size)
    return {"results": {case.head: build_decoder(case.head, head.decoder, head.outputs)(tensors, geometry).to_dict()}}


def test_points_are_x_y_of_x_y_z_triples() -> None:
    flat = np.arange(15, dtype=np.float64)
    np.testing.assert_array_equal(points_of(flat, 5), [[0, 1], [3, 4], [6, 7], [9, 10], [12, 13]])
    np.testing.assert_array_equal(points_of(flat, 5, slice(2, 3)).reshape(-1), [2, 5, 8, 11, 14])
    with pytest.raises(Exception, match="15 values for 4 points"):
        points_of(flat, 4)


def test_face_mesh_error_is_over_the_crop_diagonal_and_presence_is_sigmoid() -> None:
    case = CASES["face-landmark"]
    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 192, 1404)
    record = {"crops": [{"raw": [raw.tolist(), [logit]]} for logit in (3.0, -2.0, 2.0)]}
    moved = raw.copy()
    moved[0::3] += 1.0  # every x one pixel off
    moved[2::3] += 0.5  # every z half a pixel
    lines = [_line(case, [moved], 0.5), _line(case, [raw], 0.1), _line(case, [raw], -0.1)]
    figures = compare(case, record, lines)
    # crops 1 and 3 are faces for the package (sigmoid(3), sigmoid(2) > 0.5); the daemon publishes
    # points for the first two (sigmoid(0.5), sigmoid(0.1) >= 0.5): the second is extra, the third missed
    a = figures["agreement"]
    assert (a.oracle, a.matched, a.extra) == (2, 1, 1)
    assert figures["landmark_error"] == pytest.approx(1 / (192 * math.sqrt(2)), rel=1e-3)
    assert figures["within_limit"] == 1
    assert figures["z_max_abs_error"] == pytest.approx(0.5, abs=0.01)
    assert figures["presence_max_abs_error"] == pytest.approx(
        1 / (1 + math.exp(-2.0)) - 1 / (1 + math.exp(0.1)), abs=1e-4
    )


def test_raw_results_are_refused() -> None:
    case = CASES["face-landmark"]
    raw = {"results": {"mesh": {"tensors": {"conv2d_20": {"data": [0.0]}}}}}
    with pytest.raises(Exception, match="no decoded 'mesh' landmarks"):
        compare(case, {"crops": [{"raw": [[0.0] * 1404, [1.0]]}]}, [raw])


def test_iris_counts_crops_within_the_limit() -> None:
    case = CASES["iris-landmark"]
    eye, iris = np.zeros(213), np.zeros(15)
    record = {"crops": [{"raw": [eye.tolist(), iris.tolist()]}] * 2}
    far = eye.copy()
    far[0::3] = 64 * math.sqrt(2) * 2 * LANDMARK_LIMIT  # twice the limit on 71 of 76 points
    figures = compare(case, record, [_line(case, [eye, iris]), _line(case, [far, iris])])
    assert figures["within_limit"] == 1 and figures["agreement"].matched == 1
    assert figures["iris_error"] == 0.0 and figures["z_max_abs_error"] == 0.0
    with pytest.raises(Exception, match="2 results for 1 crops"):
        compare(case, {"crops": record["crops"][:1]}, [_line(case, [eye, iris])] * 2)


@pytest.mark.parametrize("name", sorted(CASES))
def test_specs_describe_the_crop_and_name_the_outputs(name: str) -> None:
    case = CASES[name]
    spec = InputSpec.from_mapping(tomllib.loads((case.specs / "input.toml").read_text()), "input.toml")
    assert spec.shape == (1, 3, case.size, case.size) and spec.resize == "stretch"
    assert list(spec.mean) == [0.0] * 3 and list(spec.std) == [255.0] * 3
    head = load_head_spec(case.specs / "heads.toml")[case.head]
    assert head.outputs is not None and tuple(head.outputs) == case.outputs


def test_catalog_runs_both() -> None:
    assert MODELS["face-landmark"] == "zoo.face_landmarks:run_face"
    assert runner("face-landmark") is run_face and runner("iris-landmark") is run_iris
    assert Path(CASES["face-landmark"].model.path).name == "face_landmark.tflite"
