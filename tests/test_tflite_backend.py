"""The TFLite backend on real .tflite files: numerics against TensorFlow, layout perms, INT8 I/O,
the raw INT8 trunk -> head hand-off, the engine on a TFLite bundle, and every bad-input error.

The models are built once per session by ``tests/tflite_models.py`` in the TensorFlow converter
environment (``exporter.toolenv.ensure_env("onnx2tf")``; TensorFlow never enters the main venv)
and cached under pytest's cache directory, keyed by that script's hash. Without the environment
(it cannot be created offline) the model tests skip and say why.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime.bundle.reader import sha256_file
from edge_runtime.bundle.specs import Artifact
from edge_runtime.errors import BackendUnavailableError, BundleError, ModelError
from edge_runtime.inference import backends
from edge_runtime.inference.backends import BackendOptions, get_backend
from edge_runtime.inference.engine import Engine, EngineOptions

tfl = pytest.importorskip(
    "edge_runtime.inference.backends.tflite", reason="no TFLite runtime: install edge-runtime[tflite]"
)

NCHW_TO_NHWC = [0, 2, 3, 1]
SIGNATURE = "serving_default"
#: The models' interpreter tensor names (the SavedModel path's), for artifacts without a signature.
TENSOR_NAMES = {
    "trunk": {
        "image": "serving_default_image:0",
        "features": "StatefulPartitionedCall:0",
        "pooled": "StatefulPartitionedCall:1",
    },
    "head": {"features": "serving_default_features:0", "logits": "StatefulPartitionedCall:0"},
}
PERMS: dict[str, list[int] | None] = {"image": NCHW_TO_NHWC, "features": NCHW_TO_NHWC, "pooled": None, "logits": None}


@pytest.fixture(scope="session")
def reference(tflite_models: Path) -> dict[str, np.ndarray]:
    with np.load(tflite_models / "reference.npz") as data:
        return {k: data[k] for k in data.files}


def nchw(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array.transpose(0, 3, 1, 2))


def artifact(graph: str, *, signature: bool = True, precision: str = "fp32", **overrides: Any) -> Artifact:
    """The manifest entry the converter writes for a test model: logical (ONNX, NCHW) names ->
    signature keys (or interpreter tensor names), perms; ``overrides`` replace tensor entries."""
    tensors: dict[str, Any] = {
        logical: {"name": logical if signature else tflite_name, "perm": PERMS[logical]}
        for logical, tflite_name in TENSOR_NAMES[graph].items()
    }
    tensors.update(overrides)
    extra: dict[str, Any] = {"tensors": tensors}
    if signature:
        extra["signature"] = SIGNATURE
    return Artifact(format="tflite", precision=precision, path=f"{graph}.tflite", extra=extra)


@pytest.fixture
def backend() -> tfl.TfliteBackend:
    return tfl.TfliteBackend()


@pytest.fixture
def conversions(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts the backend's quantize / dequantize calls from here on."""
    counts = {"quantize": 0, "dequantize": 0}
    for name in counts:
        original = getattr(tfl, name)

        def counted(*args: Any, _name: str = name, _original: Any = original) -> np.ndarray:
            counts[_name] += 1
            return _original(*args)

        monkeypatch.setattr(tfl, name, counted)
    return counts


# -- quantisation arithmetic (no model needed) ----------------------------------------------------


@pytest.mark.parametrize(
    ("values", "quantization", "dtype", "expected"),
    [
        ([0.0, 0.1, -0.1, 0.26], (0.1, 0), np.int8, [0, 1, -1, 3]),
        ([0.0, 1.0, -1.0], (0.0235, -128), np.int8, [-128, -85, -128]),  # clipped below
        ([100.0, -100.0], (0.1, 0), np.int8, [127, -128]),  # clipped both ways
        ([0.0, 0.6, 1.0], (1 / 255, 0), np.uint8, [0, 153, 255]),
        ([-1.0, 2.0], (0.02, 10), np.uint8, [0, 110]),
    ],
)
def test_quantize(values: list[float], quantization: tuple[float, int], dtype: type, expected: list[int]) -> None:
    got = tfl.quantize(np.array(values, np.float32), quantization, np.dtype(dtype))
    assert got.dtype == dtype and got.tolist() == expected
    back = tfl.dequantize(got, quantization)
    assert back.dtype == np.float32
    inside = (got > np.iinfo(dtype).min) & (got < np.iinfo(dtype).max)
    assert np.all(np.abs(back - np.array(values))[inside] <= quantization[0] / 2 + 1e-6)


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ((0.02008947916328907, -128), (0.02008948102593422, -128), True),  # float32 round-off (measured)
        ((0.02, -128), (0.02, -127), False),
        ((0.02, -128), (0.06, -128), False),
        (None, None, True),
        ((0.02, 0), None, False),
    ],
)
def test_same_quantization(a: tuple[float, int] | None, b: tuple[float, int] | None, same: bool) -> None:
    assert tfl.same_quantization(a, b) is same


# -- float models -----------------------------------------------------------------------------------


@pytest.mark.parametrize("signature", [True, False], ids=["signature", "tensor-names"])
def test_float_trunk_matches_tensorflow(
    tflite_models: Path, reference: dict[str, np.ndarray], backend: tfl.TfliteBackend, signature: bool
) -> None:
    trunk = backend.load(
        tflite_models / "trunk_fp32.tflite", BackendOptions(threads=2), "trunk", artifact("trunk", signature=signature)
    )
    assert trunk.input_names == ("image",) and set(trunk.output_names) == {"features", "pooled"}
    images = nchw(reference["image"])  # (2, 3, 12, 16): the logical NCHW input
    for batch in (images, images[:1], images):  # the batch dimension is dynamic: resized both ways
        out = trunk.run({"image": batch})
        features = trunk.to_numpy(out["features"])
        assert features.shape == (len(batch), 4, 12, 16) and features.flags.c_contiguous
        np.testing.assert_allclose(features, nchw(reference["features"])[: len(batch)], atol=1e-5)
        np.testing.assert_allclose(trunk.to_numpy(out["pooled"]), reference["pooled"][: len(batch)], atol=1e-5)
    assert trunk.run({"image": images}, ["pooled"]).keys() == {"pooled"}


def test_float_trunk_feeds_float_head_without_transposes(
    tflite_models: Path, reference: dict[str, np.ndarray], backend: tfl.TfliteBackend
) -> None:
    trunk = backend.load(tflite_models / "trunk_fp32.tflite", BackendOptions(), "trunk", artifact("trunk"))
    head = backend.load(tflite_models / "head_fp32.tflite", BackendOptions(threads=1), "head 'cls'", artifact("head"))
    features = trunk.run({"image": nchw(reference["image"])})["features"]
    assert features.array.shape == (2, 12, 16, 4)  # kept in the TFLite (NHWC) layout
    assert head.prepare("features", features) is features.array
    logits = head.to_numpy(head.run({"features": features})["logits"])
    np.testing.assert_allclose(logits, reference["logits"], atol=1e-5)
    # a plain numpy array (ONNX Runtime's output) is a logical NCHW value
    from_numpy = head.to_numpy(head.run({"features": nchw(reference["features"])})["logits"])
    np.testing.assert_allclose(from_numpy, reference["logits"], atol=1e-5)


def test_without_a_tensor_map_the_model_names_are_used(tflite_models: Path, backend: tfl.TfliteBackend) -> None:
    trunk = backend.load(tflite_models / "trunk_fp32.tflite", BackendOptions(), "trunk")
    assert trunk.input_names == (TENSOR_NAMES["trunk"]["image"],)
    assert set(trunk.output_names) == {TENSOR_NAMES["trunk"]["features"], TENSOR_NAMES["trunk"]["pooled"]}
    out = trunk.run({trunk.input_names[0]: np.zeros((1, 12, 16, 3), np.float32)})  # NHWC: identity perm
    assert trunk.to_numpy(out[TENSOR_NAMES["trunk"]["features"]]).shape == (1, 12, 16, 4)


# -- INT8 -------------------------------------------------------------------------------------------


def test_int8_io_is_quantized_and_dequantized(
    tflite_models: Path, reference: dict[str, np.ndarray], backend: tfl.TfliteBackend
) -> None:
    trunk = backend.load(
        tflite_models / "trunk_int8.tflite", BackendOptions(threads=2), "trunk", artifact("trunk", precision="int8")
    )
    image = trunk.bindings["image"]
    assert image.dtype == np.int8 and image.quantization is not None and image.perm == tuple(NCHW_TO_NHWC)
    images = nchw(reference["image"])
    fed = trunk.prepare("image", images)
    assert fed.dtype == np.int8 and fed.shape == (2, 12, 16, 3)
    np.testing.assert_array_equal(fed, tfl.quantize(reference["image"], image.quantization, np.dtype(np.int8)))

    out = trunk.run({"image": images})
    features = out["features"]
    assert features.dtype == np.int8 and features.quantization == trunk.bindings["features"].quantization
    step = features.quantization[0]
    logical = trunk.to_numpy(features)
    assert logical.dtype == np.float32 and logical.shape == (2, 4, 12, 16)
    # against TensorFlow's interpreter on the same INT8 model: within one quantisation step
    assert np.abs(logical - nchw(reference["int8_features"])).max() <= step * 1.001
    # and against the float graph: quantisation error, no layout mistake
    assert np.abs(logical - nchw(reference["features"])).max() < 0.1 * np.abs(reference["features"]).max()
    pooled = trunk.to_numpy(out["pooled"])
    assert np.abs(pooled - reference["int8_pooled"]).max() <= out["pooled"].quantization[0] * 1.001


def test_int8_trunk_feeds_int8_head_raw(
    tflite_models: Path, reference: dict[str, np.ndarray], backend: tfl.TfliteBackend, conversions: dict[str, int]
) -> None:
    """The trunk's INT8 features reach a head with the same input quantisation as they are:
    no dequantize / requantize, no transposes, the very array the trunk returned."""
    trunk = backend.load(
        tflite_models / "trunk_int8.tflite", BackendOptions(), "trunk", artifact("trunk", precision="int8")
    )
    head = backend.load(
        tflite_models / "head_int8.tflite", BackendOptions(threads=1), "head 'cls'", artifact("head", precision="int8")
    )
    features = trunk.run({"image": nchw(reference["image"])})["features"]
    # calibrated separately, the two scales differ in the last float32 bit (0.02008947916 vs 0.02008948103)
    assert features.quantization != head.bindings["features"].quantization
    assert tfl.same_quantization(features.quantization, head.bindings["features"].quantization)
    conversions.update(quantize=0, dequantize=0)
    assert head.prepare("features", features) is features.array
    raw = head.run({"features": features})["logits"]
    assert conversions == {"quantize": 0, "dequantize": 0}
    logits = head.to_numpy(raw)
    assert np.abs(logits - reference["int8_logits"]).max() <= raw.quantization[0] * 1.001
    assert np.abs(logits - reference["logits"]).max() < 0.05 * np.abs(reference["logits"]).max() + 0.05


def test_int8_head_with_another_scale_requantizes(
    tflite_models: Path, reference: dict[str, np.ndarray], backend: tfl.TfliteBackend, conversions: dict[str, int]
) -> None:
    trunk = backend.load(
        tflite_models / "trunk_int8.tflite", BackendOptions(), "trunk", artifact("trunk", precision="int8")
    )
    head = backend.load(
        tflite_models / "head_int8_rescaled.tflite", BackendOptions(), "head 'cls'", artifact("head", precision="int8")
    )
    features = trunk.run({"image": nchw(reference["image"])})["features"]
    conversions.update(quantize=0, dequantize=0)
    fed = head.prepare("features", features)
    assert conversions == {"quantize": 1, "dequantize": 1}
    expected = tfl.quantize(
        tfl.dequantize(features.array, features.quantization), head.bindings["features"].quantization, np.dtype(np.int8)
    )
    np.testing.assert_array_equal(fed, expected)
    logits = head.to_numpy(head.run({"features": features})["logits"])
    assert np.abs(logits - reference["logits"]).max() < 0.1 * np.abs(reference["logits"]).max() + 0.1


def test_float_features_feed_an_int8_head(
    tflite_models: Path, reference: dict[str, np.ndarray], backend: tfl.TfliteBackend
) -> None:
    """An FP32 trunk (or ONNX Runtime's numpy output) in front of an INT8 head: quantised on the way in."""
    trunk = backend.load(tflite_models / "trunk_fp32.tflite", BackendOptions(), "trunk", artifact("trunk"))
    head = backend.load(
        tflite_models / "head_int8.tflite", BackendOptions(), "head 'cls'", artifact("head", precision="int8")
    )
    from_tflite = head.to_numpy(
        head.run({"features": trunk.run({"image": nchw(reference["image"])})["features"]})["logits"]
    )
    from_numpy = head.to_numpy(head.run({"features": nchw(reference["features"])})["logits"])
    np.testing.assert_array_equal(from_tflite, from_numpy)
    assert np.abs(from_numpy - reference["logits"]).max() < 0.05 * np.abs(reference["logits"]).max() + 0.05


# -- the engine on a TFLite bundle ------------------------------------------------------------------


def write_bundle(folder: Path, tflite_models: Path, precision: str) -> Path:
    """A bundle whose trunk and head 'cls' are TFLite artifacts of ``precision``."""
    folder.mkdir()
    (folder / "tflite").mkdir()
    files = {}
    entries = {}
    for graph in ("trunk", "head"):
        rel = f"tflite/{graph}.{precision}.tflite"
        shutil.copy(tflite_models / f"{graph}_{precision}.tflite", folder / rel)
        files[rel] = sha256_file(folder / rel)
        entry = artifact(graph, precision=precision).to_dict()
        entries[graph] = {**entry, "path": rel}
    manifest = {
        "format": "edge-bundle/1",
        "name": "tflite-test",
        "version": "1",
        "input": {"name": "image", "shape": [1, 3, 12, 16], "layout": "NCHW", "resize": "stretch"},
        "trunk": {"inputs": ["image"], "outputs": ["features", "pooled"], "artifacts": [entries["trunk"]]},
        "heads": {
            "cls": {
                "inputs": ["features"],
                "outputs": ["logits"],
                "artifacts": [entries["head"]],
                "decoder": {"type": "raw"},
            }
        },
        "files": files,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_engine_runs_a_tflite_bundle(
    tflite_models: Path, tmp_path: Path, precision: str, conversions: dict[str, int]
) -> None:
    bundle = write_bundle(tmp_path / "bundle", tflite_models, precision)
    frame = np.random.default_rng(1).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    with Engine.from_bundle(bundle, EngineOptions(backend="tflite", precision=precision, threads=2)) as engine:
        assert engine.backend_description.startswith("LiteRT ")
        assert {g: a.precision for g, a in engine.artifacts.items()} == {"trunk": precision, "cls": precision}
        conversions.update(quantize=0, dequantize=0)
        result = engine.infer(frame)
        # INT8: the image is quantised and the logits dequantised, the features are passed raw
        expected = {"quantize": 1, "dequantize": 1} if precision == "int8" else {"quantize": 0, "dequantize": 0}
        assert conversions == expected
        model_input = engine.preprocess(frame)
    backend = tfl.TfliteBackend()
    trunk = backend.load(bundle / f"tflite/trunk.{precision}.tflite", BackendOptions(), "trunk", artifact("trunk"))
    head = backend.load(bundle / f"tflite/head.{precision}.tflite", BackendOptions(), "head", artifact("head"))
    features = trunk.run({"image": model_input})["features"]
    by_hand = head.to_numpy(head.run({"features": features})["logits"])[0]
    np.testing.assert_array_equal(result.results["cls"].tensors["logits"], by_hand)


# -- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signature", "override", "message"),
    [
        (
            True,
            {"features": {"name": "feature", "perm": NCHW_TO_NHWC}},
            "maps tensor 'features' to TFLite signature key 'feature', which the model does not have "
            "(did you mean 'features'?); the model's inputs: image; outputs: features, pooled",
        ),
        (
            False,
            {"image": {"name": "image", "perm": NCHW_TO_NHWC}},
            "maps tensor 'image' to TFLite tensor 'image', which the model does not have; the model's inputs: "
            "serving_default_image:0; outputs: StatefulPartitionedCall:0, StatefulPartitionedCall:1",
        ),
        (True, {"image": {"name": "image", "dtype": "int8"}}, "the manifest says dtype int8, the model has float32"),
        (
            True,
            {"image": {"name": "image", "quantization": [0.5, 3]}},
            "the manifest says quantization (0.5, 3), the model has None",
        ),
        (True, {"image": {"name": "image", "perm": [0, 2, 1]}}, "is not a permutation of the model tensor's 4 axes"),
        (True, {"image": {"perm": [0, 2, 3, 1]}}, "tensors.image must be an object with a string 'name'"),
    ],
    ids=["signature-key", "tensor-name", "dtype", "quantization", "perm", "no-name"],
)
def test_manifest_that_does_not_match_the_model(
    tflite_models: Path, backend: tfl.TfliteBackend, signature: bool, override: dict[str, Any], message: str
) -> None:
    path = tflite_models / "trunk_fp32.tflite"
    with pytest.raises(BundleError) as info:
        backend.load(path, BackendOptions(), "trunk", artifact("trunk", signature=signature, **override))
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_unknown_signature(tflite_models: Path, backend: tfl.TfliteBackend) -> None:
    bad = Artifact(format="tflite", precision="fp32", path="t.tflite", extra={"signature": "serve"})
    with pytest.raises(BundleError, match="names signature 'serve', the model has 'serving_default'"):
        backend.load(tflite_models / "trunk_fp32.tflite", BackendOptions(), "trunk", bad)


def _truncated(tflite_models: Path) -> bytes:
    return (tflite_models / "trunk_fp32.tflite").read_bytes()[:600]


@pytest.mark.parametrize(
    "content",
    [lambda _: np.random.default_rng(0).bytes(3000), lambda _: b"", _truncated],
    ids=["random-bytes", "empty", "truncated"],
)
def test_corrupt_file(tflite_models: Path, tmp_path: Path, backend: tfl.TfliteBackend, content: Any) -> None:
    path = tmp_path / "trunk.fp32.tflite"
    path.write_bytes(content(tflite_models))
    with pytest.raises(ModelError) as info:
        backend.load(path, BackendOptions(), "trunk")
    assert f"trunk ({path}): not a loadable .tflite file" in str(info.value)


def test_missing_file(tmp_path: Path, backend: tfl.TfliteBackend) -> None:
    with pytest.raises(ModelError, match="no such file"):
        backend.load(tmp_path / "nothing.tflite", BackendOptions(), "trunk")


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("custom_op", "unsupported op BesselI1e: a custom op this runtime has no kernel for"),
        ("flex_op", "unsupported op FlexMatrixDeterminant: a TensorFlow select op, which needs the Flex delegate"),
    ],
    ids=["custom", "flex"],
)
def test_unsupported_op(tflite_models: Path, backend: tfl.TfliteBackend, model: str, message: str) -> None:
    path = tflite_models / f"{model}.tflite"
    with pytest.raises(ModelError) as info:
        backend.load(path, BackendOptions(), "head 'odd'")
    assert message in str(info.value) and f"head 'odd' ({path})" in str(info.value)


@pytest.mark.parametrize(
    ("text", "loading", "explained"),
    [
        (
            "Didn't find op for builtin opcode 'CONV_2D' version '7'. An older version of this builtin might be "
            "supported. Are you using an old TFLite binary with a newer model?\nRegistration failed.",
            True,  # older runtimes fail while building the interpreter
            "unsupported op CONV_2D (version 7)",
        ),
        ("Encountered unresolved custom op: Foo.Bar.\nSee instructions", False, "unsupported op Foo.Bar:"),
        ("something else entirely\nsecond line", False, "cannot prepare the model: something else entirely"),
        ("The model is not a valid Flatbuffer buffer", True, "not a loadable .tflite file (The model is not a valid"),
    ],
    ids=["builtin-version", "custom", "other", "corrupt"],
)
def test_runtime_errors_are_explained(backend: tfl.TfliteBackend, text: str, loading: bool, explained: str) -> None:
    assert explained in backend._explain(RuntimeError(text), loading=loading)


def test_wrong_input_shape_and_feeds(
    tflite_models: Path, reference: dict[str, np.ndarray], backend: tfl.TfliteBackend
) -> None:
    trunk = backend.load(tflite_models / "trunk_fp32.tflite", BackendOptions(), "trunk", artifact("trunk"))
    with pytest.raises(ModelError, match=r"input 'image' \(TFLite 'image'\) takes shape \['\?', 12, 16, 3\]"):
        trunk.run({"image": np.zeros((1, 3, 16, 12), np.float32)})
    with pytest.raises(ModelError, match=r"perm .* is for rank 4"):
        trunk.run({"image": np.zeros((3, 12, 16), np.float32)})
    with pytest.raises(ModelError, match="feeds img, expected inputs image"):
        trunk.run({"img": nchw(reference["image"])})
    with pytest.raises(ModelError, match="no output 'feature' \\(did you mean 'features'"):
        trunk.run({"image": nchw(reference["image"])}, ["feature"])


# -- runtime selection -------------------------------------------------------------------------------


@pytest.fixture
def without_tflite_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The backend module unloaded, so that the next import runs its runtime detection again
    (sys.modules and the package attribute are restored afterwards)."""
    monkeypatch.setattr(backends, "tflite", tfl, raising=False)
    monkeypatch.delitem(sys.modules, "edge_runtime.inference.backends.tflite")
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    yield


def test_missing_runtime_names_the_extra(monkeypatch: pytest.MonkeyPatch, without_tflite_module: None) -> None:
    monkeypatch.setitem(sys.modules, "tflite_runtime", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    with pytest.raises(BackendUnavailableError) as info:
        get_backend("tflite")
    message = str(info.value)
    assert "pip install 'edge-runtime[tflite]'" in message
    assert "neither ai-edge-litert" in message and "nor tflite-runtime" in message
    assert backends.BACKENDS["tflite"][2] == "edge-runtime[tflite]"


def test_falls_back_to_tflite_runtime(
    tflite_models: Path, reference: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch, without_tflite_module: None
) -> None:
    fake = types.ModuleType("tflite_runtime.interpreter")
    fake.Interpreter = tfl.Interpreter  # type: ignore[attr-defined]  # LiteRT's, under tflite_runtime's name
    monkeypatch.setitem(sys.modules, "tflite_runtime", types.ModuleType("tflite_runtime"))
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", fake)
    backend = get_backend("tflite")
    assert backend.describe().startswith("tflite_runtime ")
    trunk = backend.load(tflite_models / "trunk_fp32.tflite", BackendOptions(), "trunk", artifact("trunk"))
    pooled = trunk.to_numpy(trunk.run({"image": nchw(reference["image"])})["pooled"])
    np.testing.assert_allclose(pooled, reference["pooled"], atol=1e-5)


def test_describe(tflite_models: Path) -> None:
    backend = get_backend("tflite")
    assert backend.name == "tflite" and backend.artifact_format == "tflite"
    backend.load(tflite_models / "trunk_fp32.tflite", BackendOptions(threads=3), "trunk", artifact("trunk"))
    assert backend.describe() == f"LiteRT {tfl.RUNTIME_VERSION}: XNNPACK (default delegate), 3 threads"
    backend.load(tflite_models / "head_fp32.tflite", BackendOptions(threads=1), "head 'cls'", artifact("head"))
    assert backend.describe().endswith("XNNPACK (default delegate), threads trunk 3, head 'cls' 1")


def test_a_litert_daemon_does_not_import_onnxruntime(tflite_models: Path, tmp_path: Path) -> None:
    # importing onnxruntime alone costs a process ~20 MiB; a daemon running LiteRT graphs needs none of it
    bundle = write_bundle(tmp_path / "bundle", tflite_models, "fp32")
    code = (
        "import sys; from edge_runtime.cli import main; "
        f"code = main(['run', '--bundle', {str(bundle)!r}, '--source', 'synthetic:16x12', '--max-frames', '2', "
        f"'--output', '/dev/null', '--backend', 'tflite', '--state-dir', {str(tmp_path / 'state')!r}]); "
        "print('onnxruntime' in sys.modules, code)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["False", "0"], proc.stderr[-2000:]
