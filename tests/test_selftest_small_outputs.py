"""The self-test of raw heads with a tiny output (a presence logit of one value): compared by
absolute error against the output's INT8 step, not by a cosine (which is the value's sign), and
still strict enough to catch a wrong INT8 graph. The shared rule is
:func:`edge_runtime.inference.fidelity.small_output_error`; the end-to-end cases use the zoo's
INT8 face-mesh bundle when a zoo run left one here."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edge_runtime.bundle.reader import load_bundle
from edge_runtime.bundle.specs import Artifact
from edge_runtime.inference.engine import Engine, EngineOptions
from edge_runtime.inference.fidelity import SMALL_OUTPUT_RTOL, SMALL_OUTPUT_STEPS, small_output_error
from edge_runtime.trust.selftest import _similar, run_selftest
from exporter.bundle import existing_files, write_bundle

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# The zoo's face mesh on its 4 self-test frames: the face logit (1 value) float and INT8 (step 0.285)
LOGIT = np.array([-8.051086, 28.51818, 17.975706, 1.0941334], np.float32).reshape(4, 1, 1, 1, 1)
LOGIT_INT8 = np.array([-7.4113674, 27.079996, 17.388208, -0.2850526], np.float32).reshape(4, 1, 1, 1, 1)
STEP = 0.2850525975227356
#: The face-landmark INT8 bundle `make zoo` writes (its raw-decoder version had the flipped logit).
ZOO_INT8 = Path(__file__).resolve().parents[1] / "build" / "zoo" / "face-landmark" / "bundle-int8"


def _artifacts(step: float | None = STEP) -> tuple[Artifact, Artifact]:
    extra = {"output_steps": {"mesh": 0.83, "logit": step}} if step is not None else {}
    fidelity = {"agreement": 0.9999, "min_agreement": 0.9}
    head = Artifact("onnx", "int8", "heads/h.int8.onnx", fidelity=fidelity, extra=extra)
    return head, Artifact("onnx", "int8", "trunk.int8.onnx", fidelity=fidelity)


def _mesh(rng: np.random.Generator, noise: float) -> tuple[np.ndarray, np.ndarray]:
    ref = rng.uniform(0, 192, (4, 1, 1, 1, 1404)).astype(np.float32)
    return ref, (ref + rng.normal(0, noise, ref.shape)).astype(np.float32)


def test_a_logit_near_zero_that_int8_flips_passes_by_its_error() -> None:
    # the cosine of one value is its sign: frame 3 (1.09 float, -0.285 INT8) gave cosine 0 and
    # refused a bundle the gate had measured at 0.9999
    mesh = _mesh(np.random.default_rng(0), 1.0)
    head, trunk = _artifacts()
    check = _similar("h", {"mesh": mesh, "logit": (LOGIT, LOGIT_INT8)}, head, trunk, {}, "expected.npz")
    assert check.passed and check.metric == "cosine_similarity" and check.value > 0.99, check.line()
    assert "logit |error| 1.44 <= 2.28 (8 INT8 steps of 0.285)" in check.detail
    error = small_output_error(LOGIT, LOGIT_INT8, STEP)
    assert error.passed and error.sample == 1 and error.bound == pytest.approx(SMALL_OUTPUT_STEPS * STEP)


@pytest.mark.parametrize(
    "wrong",
    [
        -LOGIT,  # the sign flipped
        np.zeros_like(LOGIT),  # INT8 gives 0 everywhere
        LOGIT * 0.5,  # half the scale
        np.where(np.arange(4).reshape(4, 1, 1, 1, 1) == 1, np.nan, LOGIT).astype(np.float32),  # NaN on one frame
    ],
)
def test_a_wrong_logit_fails_naming_the_output(wrong: np.ndarray) -> None:
    mesh = _mesh(np.random.default_rng(1), 1.0)
    head, trunk = _artifacts()
    check = _similar("h", {"mesh": mesh, "logit": (LOGIT, wrong)}, head, trunk, {}, "expected.npz")
    assert not check.passed and check.metric == "max_abs_error" and check.value > check.bound
    assert check.detail.startswith("output logit (1 value(s)) on frame")
    assert "FAIL" in check.line() and "max_abs_error" in check.line()


def test_without_an_int8_step_the_bound_is_relative_to_the_largest_value() -> None:
    error = small_output_error(LOGIT, LOGIT + 1.0, None)
    assert error.bound == pytest.approx(SMALL_OUTPUT_RTOL * 28.51818) and error.passed
    assert not small_output_error(LOGIT, LOGIT + 2.0, None).passed
    # only small outputs: the head passes on them
    head, trunk = _artifacts(None)
    check = _similar("h", {"logit": (LOGIT, LOGIT + 1.0)}, head, trunk, {}, "expected.npz")
    assert check.passed and "small outputs logit" in check.detail


def test_a_wrong_mesh_still_fails_by_cosine() -> None:
    ref, _ = _mesh(np.random.default_rng(2), 1.0)
    head, trunk = _artifacts()
    wrong = np.random.default_rng(3).permutation(ref.reshape(-1)).reshape(ref.shape)
    check = _similar("h", {"mesh": (ref, -wrong), "logit": (LOGIT, LOGIT_INT8)}, head, trunk, {}, "expected.npz")
    assert not check.passed and check.metric == "cosine_similarity" and "worst output mesh" in check.detail


def _zoo_bundle(tmp_path: Path) -> Path:
    if not (ZOO_INT8 / "manifest.json").is_file():
        pytest.skip("no face-landmark INT8 bundle in build/zoo: run make zoo (ZOO_MODELS=face-landmark)")
    root = tmp_path / "bundle"
    shutil.copytree(ZOO_INT8, root)
    return root


def _negate_kernel(root: Path, output: str) -> None:
    """A wrong INT8 head graph: the kernel of the conv that makes ``output`` negated (its scale), re-hashed."""
    path = root / "heads" / "mesh.int8.onnx"
    model = onnx.load(path)
    producers = {o: n for n in model.graph.node for o in n.output}
    conv = producers[output]
    while conv.op_type != "Conv":
        conv = producers[conv.input[0]]
    scale_name = producers[conv.input[1]].input[1]
    for init in model.graph.initializer:
        if init.name == scale_name:
            init.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(init), scale_name))
    bundle = load_bundle(root, verify_hashes=False, warn_unchecked=False)
    files = existing_files(bundle)
    files["heads/mesh.int8.onnx"] = model.SerializeToString()
    write_bundle(root, files, bundle.manifest, force=True)


def test_the_zoo_int8_face_mesh_bundle_passes_and_a_wrong_graph_fails(tmp_path: Path) -> None:
    """The zoo's INT8 face mesh (landmarks decoder) passes its self-test; a presence branch with
    its kernel negated (the mesh untouched) fails it."""
    root = _zoo_bundle(tmp_path)
    with Engine.from_bundle(root, EngineOptions(precision="int8")) as engine:
        report = run_selftest(engine)
    assert report.passed, report.summary()
    _negate_kernel(root, "conv2d_30")
    with Engine.from_bundle(root, EngineOptions(precision="int8")) as engine:
        report = run_selftest(engine)
    assert not report.passed, report.summary()


def test_the_zoo_int8_face_mesh_with_a_wrong_mesh_branch_fails(tmp_path: Path) -> None:
    root = _zoo_bundle(tmp_path)
    _negate_kernel(root, "conv2d_20")
    with Engine.from_bundle(root, EngineOptions(precision="int8")) as engine:
        report = run_selftest(engine)
    assert not report.passed, report.summary()
