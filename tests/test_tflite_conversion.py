"""onnx2tf conversions that the demo bundle does not exercise, with the real converter: an
opset-9 trunk-like graph with four outputs (names TensorFlow respells, a 4-D output whose shape
fits both NCHW and NHWC), a converted file without a ``serving_default`` signature (mapped
through the interpreter's tensors, by the exporter and by the device runtime), and the error
of a failed converter run."""

from __future__ import annotations

import shlex
import struct
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from exporter.onnx2tf_converter import ONNX2TF_FILES, load_converted, run_onnx2tf
from exporter.toolenv import TAIL_LINES, ToolEnv, ToolEnvError, ensure_env

pytest.importorskip("ai_edge_litert", reason="LiteRT is not installed (pip install 'edge-runtime[tflite]')")

pytestmark = pytest.mark.slow

#: ONNX outputs: two names TensorFlow respells in the signature (``out/features__0``), a 4-D
#: output of shape (1, 4, 4, 4) that fits both layouts, a 2-D one.
OUTPUTS = {"out/features:0": [1, 4, 8, 8], "out/small:0": [1, 4, 4, 4], "pooled": [1, 4], "scores": [1, 6, 4, 4]}


def opset9_trunk() -> onnx.ModelProto:
    """A conv trunk-like graph at opset 9: image (1, 3, 8, 8) -> four outputs of different shapes."""
    rng = np.random.default_rng(0)

    def weight(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name)

    features, small, pooled, scores = OUTPUTS
    initializers = [
        weight("w1", (4, 3, 3, 3)),
        weight("b1", (4,)),
        weight("w2", (4, 4, 3, 3)),
        weight("b2", (4,)),
        weight("w3", (6, 4, 1, 1)),
        numpy_helper.from_array(np.array([1, 4, 4, 4], dtype=np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c1"], [features]),
        helper.make_node("MaxPool", [features], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Reshape", ["r2", "shape"], [small]),
        helper.make_node("GlobalAveragePool", [features], ["g"]),
        helper.make_node("Flatten", ["g"], [pooled], axis=1),
        helper.make_node("Conv", ["p1", "w3"], ["c3"], kernel_shape=[1, 1]),
        helper.make_node("Sigmoid", ["c3"], [scores]),
    ]
    graph = helper.make_graph(
        nodes,
        "trunk",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in OUTPUTS.items()],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=4)
    onnx.checker.check_model(model)
    return model


def without_signatures(data: bytes) -> bytes:
    """The TFLite flatbuffer ``data`` with its ``signature_defs`` (Model field 7) marked absent
    in the root table's vtable: the same graph, no signature."""
    buffer = bytearray(data)
    table = struct.unpack_from("<I", buffer, 0)[0]
    vtable = table - struct.unpack_from("<i", buffer, table)[0]
    vtable_size = struct.unpack_from("<H", buffer, vtable)[0]
    slot = vtable + 4 + 2 * 7
    assert slot + 2 <= vtable + vtable_size, "the model has no signature_defs field"
    struct.pack_into("<H", buffer, slot, 0)
    return bytes(buffer)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    x, y = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


@pytest.fixture(scope="module")
def onnx2tf_env() -> ToolEnv:
    try:
        return ensure_env("onnx2tf")
    except ToolEnvError as exc:
        pytest.fail(f"the onnx2tf environment could not be built: {exc}")


@pytest.fixture(scope="module")
def converted(onnx2tf_env: ToolEnv, tmp_path_factory: pytest.TempPathFactory) -> tuple[onnx.ModelProto, Path]:
    """The opset-9 trunk and its FP32 TFLite file from the real onnx2tf."""
    root = tmp_path_factory.mktemp("opset9")
    model = opset9_trunk()
    onnx.save(model, root / "trunk.onnx")
    (root / "fp32").mkdir()
    out = run_onnx2tf(onnx2tf_env, root / "trunk.onnx", root / "fp32", None)
    return model, out / ONNX2TF_FILES["fp32"].format(stem="trunk")


def reference(model: onnx.ModelProto, image: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(OUTPUTS, session.run(list(OUTPUTS), {"image": image}), strict=True))


def frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (1, 3, 8, 8)).astype(np.float32)


def test_four_output_opset9_model_maps_to_the_onnx_names(converted: tuple[onnx.ModelProto, Path]) -> None:
    """Respelled output names and a layout that the shapes cannot decide: mapped by name, shape
    and values; every output agrees with ONNX Runtime on a frame that was not the probe."""
    model, path = converted
    graph = load_converted(path, model, {"image": frame(1)})
    assert graph.signature == "serving_default"
    assert graph.outputs == list(OUTPUTS)
    assert graph.tensors["image"]["perm"] == [0, 2, 3, 1]
    expected = reference(model, frame(2))
    got = graph.run([{"image": frame(2)}])[0]
    for name in OUTPUTS:
        assert got[name].shape == expected[name].shape, name
        assert cosine(got[name], expected[name]) >= 0.999, name


def test_a_file_without_signature_maps_by_interpreter_tensors(
    converted: tuple[onnx.ModelProto, Path], tmp_path: Path
) -> None:
    """onnx2tf's output stripped of its signature: the exporter maps the interpreter's tensors
    (``serving_default_image:0``, ``PartitionedCall:N``) by name, shape and values."""
    from ai_edge_litert.interpreter import Interpreter

    model, path = converted
    bare = tmp_path / "trunk_float32.tflite"
    bare.write_bytes(without_signatures(path.read_bytes()))
    assert Interpreter(model_path=str(bare)).get_signature_list() == {}
    graph = load_converted(bare, model, {"image": frame(1)})
    assert graph.signature is None
    interpreter_names = {d["name"] for d in Interpreter(model_path=str(bare)).get_output_details()}
    assert {graph.tensors[name]["name"] for name in OUTPUTS} == interpreter_names
    expected = reference(model, frame(3))
    got = graph.run([{"image": frame(3)}])[0]
    for name in OUTPUTS:
        assert cosine(got[name], expected[name]) >= 0.999, name
    # the file with its signature, read through the interpreter's tensors: the same binding
    ignored = load_converted(path, model, {"image": frame(1)}, use_signature=False)
    assert ignored.tensors == graph.tensors


def test_the_runtime_loads_a_signature_less_artifact(converted: tuple[onnx.ModelProto, Path], tmp_path: Path) -> None:
    """The manifest artifact of a signature-less file (``signature`` null, interpreter tensor
    names) loads in the device runtime's TFLite backend and gives the ONNX values."""
    from edge_runtime.inference.backends.base import BackendOptions
    from edge_runtime.inference.backends.tflite import TfliteBackend
    from exporter.tflite_graphs import tflite_artifact

    model, path = converted
    bare = tmp_path / "trunk.fp32.tflite"
    bare.write_bytes(without_signatures(path.read_bytes()))
    graph = load_converted(bare, model, {"image": frame(1)})
    artifact = tflite_artifact("tflite/trunk.fp32.tflite", "fp32", "NHWC", graph.tensors, None, graph.signature)
    assert artifact.extra["signature"] is None
    session = TfliteBackend().load(bare, BackendOptions(threads=1), "trunk", artifact)
    assert set(session.output_names) == set(OUTPUTS)
    expected = reference(model, frame(4))
    got = session.run({"image": frame(4)})
    for name in OUTPUTS:
        assert cosine(session.to_numpy(got[name]), expected[name]) >= 0.999, name


def test_a_failed_run_shows_its_last_lines_and_the_command(onnx2tf_env: ToolEnv, tmp_path: Path) -> None:
    """onnx2tf on a file that is no ONNX model: the error carries its last output lines
    (the protobuf error) and a command that reproduces the failure as it is."""
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"this is not an onnx model")
    workdir = tmp_path / "work"
    workdir.mkdir()
    with pytest.raises(ToolEnvError) as caught:
        run_onnx2tf(onnx2tf_env, broken, workdir, None)
    message = str(caught.value)
    head, _, command = message.partition("to reproduce it:\n")
    tail = head.splitlines()[1:]
    assert "onnx2tf on broken.onnx (FP32) failed (exit 1)" in head
    assert "DecodeError" in tail[-1]  # onnx2tf's own last line
    assert len(tail) == TAIL_LINES
    command = command.strip()
    assert f"cd {shlex.quote(str(workdir))} && " in command
    assert shlex.join([str(onnx2tf_env.python), "-m", "onnx2tf", "-i", str(broken)]) in command
    rerun = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 1 and "DecodeError" in rerun.stderr + rerun.stdout


def test_symbolic_input_sizes_are_fixed_from_the_probe() -> None:
    """onnx2tf cannot convert some graphs with symbolic sizes (nudenet's YOLOv8 head over
    ``height``/``width`` failed with "Dimensions must be equal"): such inputs get ``-ois`` with the
    probe's shape; a static input, or one with only a symbolic batch, is left alone."""
    from exporter.onnx2tf_converter import symbolic_input_shapes

    def model(dims: list[int | str]) -> onnx.ModelProto:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)
        return helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))

    probe = {"x": np.zeros((1, 3, 32, 48), np.float32)}
    assert symbolic_input_shapes(model(["batch", 3, "height", "width"]), probe) == {"x": (1, 3, 32, 48)}
    assert symbolic_input_shapes(model(["batch", 3, 32, 48]), probe) == {}
    assert symbolic_input_shapes(model([1, 3, 32, 48]), probe) == {}
    assert symbolic_input_shapes(model(["batch", 3, "height", "width"]), None) == {}
