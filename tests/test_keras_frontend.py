"""Keras -> TFLite-only bundle (exporter.frontends.keras): a tiny multi-output Keras model built in
the TensorFlow virtualenv, split by ``edge-export split MODEL.keras``, run through the runtime's
TFLite backend and compared with the Keras model's own predictions; bad boundaries and files."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.bundle.reader import load_bundle
from edge_runtime.errors import ConfigError, ModelError
from edge_runtime.inference.engine import Engine, EngineOptions
from exporter.cli import main
from exporter.frontends.keras import KerasSplitOptions, split_keras_model
from exporter.toolenv import ToolEnv, ToolEnvError, ensure_env

pytest.importorskip("ai_edge_litert", reason="LiteRT is not installed (pip install 'edge-runtime[tflite]')")
pytestmark = pytest.mark.slow

BUILD_MODEL = textwrap.dedent(
    """
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, keras
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
    feat = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="feat")(x)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(feat)
    cls = keras.layers.Dense(3, activation="softmax", name="cls")(pooled)
    box = keras.layers.Dense(4, name="box")(pooled)
    seg = keras.layers.Conv2D(2, 1, name="seg")(feat)
    model = keras.Model(inp, [cls, box, seg])
    model.save(sys.argv[1])
    frames = np.random.default_rng(1).random((12, 16, 16, 3), dtype=np.float32)
    np.save(sys.argv[2], frames)
    for name, value in zip(model.output_names, model(frames, training=False)):
        np.save(f"{sys.argv[3]}_{name}.npy", np.asarray(value))
    """
)


@pytest.fixture(scope="session")
def tf_env() -> ToolEnv:
    try:
        return ensure_env("onnx2tf")
    except ToolEnvError as exc:
        print(f"skipping: the TensorFlow environment could not be built: {exc}")
        pytest.skip(f"the TensorFlow environment could not be built: {exc}")


@pytest.fixture(scope="session")
def keras_model(tf_env: ToolEnv, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("keras")
    (root / "build.py").write_text(BUILD_MODEL)
    tf_env.run(["build.py", "model.keras", "frames.npy", "pred"], cwd=root, what="building the test Keras model")
    return root / "model.keras"


@pytest.fixture(scope="session")
def keras_bundle(keras_model: Path) -> Path:
    root = keras_model.parent
    spec = root / "heads.json"
    spec.write_text(json.dumps({"heads": {"cls": {"decoder": {"type": "classification", "labels": ["a", "b", "c"]}}}}))
    code = main(
        ["split", str(keras_model), "-o", str(root / "bundle"), "--calib", str(root / "frames.npy"),
         "--precision", "int8", "--head-spec", str(spec), "--min-agreement", "0.5"]
    )  # fmt: skip
    assert code == 0
    return root / "bundle"


def test_bundle_is_tflite_only_nhwc_with_automatic_boundary(keras_bundle: Path) -> None:
    manifest = load_bundle(keras_bundle).manifest
    assert manifest.input.layout == "NHWC" and manifest.input.name == "image"
    assert manifest.trunk.outputs == ("feat",)  # the last layer every output depends on
    assert manifest.split["boundary"] == "automatic"
    assert set(manifest.heads) == {"cls", "box", "seg"}
    assert manifest.heads["cls"].decoder is not None and manifest.heads["cls"].decoder.type == "classification"
    for graph in manifest.graphs().values():
        assert {a.format for a in graph.artifacts} == {"tflite"}
        for artifact in graph.artifacts:
            assert artifact.path.startswith("tflite/") and artifact.layout == "NHWC"
            assert artifact.extra["signature"] == "serving_default"
            assert all(t["perm"] is None for t in artifact.extra["tensors"].values())
    int8 = manifest.trunk.artifact("tflite", "int8")
    assert int8 is not None and int8.extra["tensors"]["image"]["dtype"] == "int8"
    assert int8.extra["tensors"]["image"]["quantization"] is not None
    report = json.loads((keras_bundle / "tflite.json").read_text())
    assert {d["graph"] for d in report["decisions"]} == {"trunk", "cls", "box", "seg"}
    assert all(d["agreement"] is not None for d in report["decisions"])  # INT8 fidelity recorded


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_engine_reproduces_keras_predictions(keras_bundle: Path, precision: str) -> None:
    root = keras_bundle.parent
    frames = np.load(root / "frames.npy")
    with Engine.from_bundle(keras_bundle, EngineOptions(backend="tflite", precision=precision)) as engine:
        for name in ("cls", "box", "seg"):
            expected = np.load(root / f"pred_{name}.npy")
            got = np.concatenate([engine.to_numpy(engine.run_graphs(frames[i : i + 1])[name]) for i in range(12)])
            if precision == "fp32":
                np.testing.assert_allclose(got, expected, atol=1e-4, err_msg=name)
            else:
                cosine = float(got.ravel() @ expected.ravel()) / (np.linalg.norm(got) * np.linalg.norm(expected))
                assert cosine > 0.98, (name, cosine)
        result = engine.infer((frames[0] * 255).astype(np.uint8))
        assert set(result.results) == {"cls", "box", "seg"}


@pytest.mark.parametrize(
    ("boundary", "message"),
    [
        (["feet"], r"no layer 'feet' in the model \(did you mean 'feat'"),
        (["pool"], r"output 'seg' depends on the model input without passing through the boundary pool"),
    ],
)
def test_bad_boundary(keras_model: Path, tmp_path: Path, boundary: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        split_keras_model(keras_model, tmp_path / "b", KerasSplitOptions(boundary=boundary))
    assert not (tmp_path / "b").exists()


def test_keras_file_that_is_not_a_model(tf_env: ToolEnv, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.keras"
    bogus.write_bytes(b"not a zip archive")
    with pytest.raises(ModelError, match=r"bogus\.keras: not a Keras model"):
        split_keras_model(bogus, tmp_path / "b")


def test_keras_with_onnx_format_says_tflite_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "m.keras"
    model.write_bytes(b"x")
    assert main(["split", str(model), "-o", str(tmp_path / "b"), "--formats", "onnx"]) == 2
    assert "Keras bundles are TFLite-only" in capsys.readouterr().err
