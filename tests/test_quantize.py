"""``edge-export quantize`` on the trained demo bundle: real ORT quantization, real sessions,
the fidelity gate and its fallbacks, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

from edge_runtime.bundle.reader import load_bundle
from edge_runtime.errors import ConfigError, ModelError
from edge_runtime.inference.engine import Engine, EngineOptions
from exporter.quantize import QuantizeOptions, quantize_bundle
from exporter.quantize_graphs import compute_nodes, float_tail, int8_graph
from exporter.verify import make_session
from tests import onnx_models as m

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def calib_frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 raw RGB frames of the demo's kind (a shape on a noisy background), as a .npy."""
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 60, (16, 120, 160, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        y, x = rng.integers(10, 60), rng.integers(10, 90)
        size = int(rng.integers(20, 45))
        frame[y : y + size, x : x + size] = (200 + i % 3 * 20, 40 * (i % 4), 255 - 30 * (i % 5))
    path = tmp_path_factory.mktemp("calib") / "frames.npy"
    np.save(path, frames)
    return path


@pytest.fixture(scope="module")
def int8_bundle(demo_bundle: Path, calib_frames: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("q") / "bundle"
    quantize_bundle(demo_bundle, out, QuantizeOptions(calib=calib_frames, precision="mixed"))
    return out


def test_quantized_bundle_has_measured_artifacts_that_load(int8_bundle: Path) -> None:
    bundle = load_bundle(int8_bundle)  # every file's sha256 checked
    report = json.loads((int8_bundle / "quantization.json").read_text())
    assert report["calibration"]["calibration_frames"] == 12 and report["calibration"]["held_out_frames"] == 4
    decisions = {(d["graph"], d["precision"]): d for d in report["decisions"]}
    assert set(decisions) == {(g, p) for g in ("trunk", "shape", "box", "mask") for p in ("int8", "fp16")}
    for graph, entry in [("trunk", bundle.manifest.trunk), *bundle.manifest.heads.items()]:
        for precision in ("int8", "fp16"):
            decision = decisions[(graph, precision)]
            artifact = entry.artifact("onnx", precision)
            assert (artifact is not None) == decision["accepted"], decision["reason"]
            if artifact is None:
                continue
            make_session(bundle.path_of(artifact).read_bytes(), artifact.path)  # loads
            fidelity = artifact.fidelity
            assert fidelity is not None and fidelity["agreement"] >= 0.99
            tasks = fidelity["tasks"]
            assert set(tasks) == ({"shape", "box", "mask"} if graph == "trunk" else {graph})
            metrics = {t: v["metric"] for t, v in tasks.items()}
            expected = {"shape": "top1_agreement", "box": "relative_error", "mask": "pixel_agreement"}
            assert metrics == {t: expected[t] for t in tasks}
        assert entry.artifact("onnx", "fp32") is not None  # the float graph stays
    # INT8 graphs really are quantized, and smaller
    trunk8 = onnx.load(int8_bundle / "trunk.int8.onnx")
    assert any(n.op_type == "DequantizeLinear" for n in trunk8.graph.node)
    assert (int8_bundle / "trunk.int8.onnx").stat().st_size < 0.5 * (int8_bundle / "trunk.fp32.onnx").stat().st_size


def test_the_runtime_picks_the_quantized_artifacts(int8_bundle: Path) -> None:
    frame = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    with Engine.from_bundle(int8_bundle, EngineOptions(precision="int8")) as engine:
        chosen = {name: a.precision for name, a in engine.artifacts.items()}
        result = engine.infer(frame)
    assert chosen["trunk"] == "int8"
    assert set(result.results) >= {"shape", "box"}


def test_a_failing_gate_keeps_graphs_float_and_says_why(demo_bundle: Path, calib_frames: Path, tmp_path: Path) -> None:
    out = tmp_path / "strict"
    result = quantize_bundle(demo_bundle, out, QuantizeOptions(calib=calib_frames, min_agreement=1.0))
    trunk = next(d for d in result.decisions if d.graph == "trunk")
    # a perfect agreement on every task is out of reach for INT8 here: the trunk retries with
    # its first and last layers float, then stays float
    assert not trunk.accepted and "the trunk stays float" in trunk.reason
    assert [len(a["float_nodes"]) for a in trunk.attempts] == [0, 2, 4]
    layers = compute_nodes(onnx.load(demo_bundle / "trunk.fp32.onnx"))
    assert trunk.attempts[1]["float_nodes"] == [layers[0], layers[-1]]
    bundle = load_bundle(out)
    assert bundle.manifest.trunk.artifact("onnx", "int8") is None
    rejected = [d for d in result.decisions if d.graph != "trunk" and not d.accepted]
    assert rejected, "some head must fail a gate of 1.0"
    for decision in rejected:
        assert "stays float" in decision.reason and decision.fed_by == "trunk fp32"
        assert bundle.manifest.heads[decision.graph].artifact("onnx", "int8") is None
    report = json.loads((out / "quantization.json").read_text())
    assert {d["graph"]: d["accepted"] for d in report["decisions"]} == {d.graph: d.accepted for d in result.decisions}
    # the runtime falls back per graph to float, and says nothing is wrong
    with Engine.from_bundle(out, EngineOptions(precision="int8")) as engine:
        assert engine.artifacts["trunk"].precision == "fp32"
        for decision in rejected:
            assert engine.artifacts[decision.graph].precision == "fp32"


def test_in_place_replaces_the_bundle_atomically_and_drops_a_signature(
    demo_bundle: Path, calib_frames: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(demo_bundle, bundle)
    (bundle / "manifest.sig").write_text("c2lnbmF0dXJl\n")
    quantize_bundle(bundle, options=QuantizeOptions(calib=calib_frames, precision="fp16"))
    loaded = load_bundle(bundle)
    assert not (bundle / "manifest.sig").exists()  # the manifest changed: a signature must be made again
    assert loaded.manifest.trunk.artifact("onnx", "fp16") is not None
    assert loaded.manifest.trunk.artifact("onnx", "int8") is None
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_int8_of_an_opset_11_graph_loads(tmp_path: Path) -> None:
    model = m.opset11()
    rng = np.random.default_rng(0)
    data = int8_graph(model, {"image": rng.uniform(0, 1, (8, 3, 16, 16)).astype(np.float32)}, "opset-11 model")
    quantized = onnx.load_from_string(data)
    opset = next(o.version for o in quantized.opset_import if o.domain in ("", "ai.onnx"))
    assert opset >= 13
    assert any(
        n.op_type == "DequantizeLinear" and any(a.name == "axis" for a in n.attribute) for n in quantized.graph.node
    )
    make_session(data, "opset-11 INT8")  # per-channel QDQ below opset 13 would fail here


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "int4"}, "--precision 'int4'"),
        ({"precision": "fp32"}, "fp32 is what the bundle already has"),
        ({"min_agreement": 1.5}, "--min-agreement"),
        ({"min_agreement": 0.0}, "--min-agreement"),
        ({"held_out": 1.0}, "held-out"),
    ],
)
def test_bad_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        QuantizeOptions(**kwargs)


def test_too_few_frames_for_a_held_out_split(demo_bundle: Path, tmp_path: Path) -> None:
    frames = tmp_path / "few.npy"
    np.save(frames, np.zeros((3, 60, 80, 3), np.uint8))
    with pytest.raises(ConfigError) as caught:
        quantize_bundle(demo_bundle, tmp_path / "out", QuantizeOptions(calib=frames))
    assert "3" in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_a_bundle_without_fp32_graphs_is_refused(int8_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(int8_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["heads"]["box"]["artifacts"] = [
        a for a in manifest["heads"]["box"]["artifacts"] if a["precision"] != "fp32"
    ]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match="head 'box' has no ONNX fp32 artifact"):
        quantize_bundle(bundle, tmp_path / "out", QuantizeOptions())


def test_split_then_quantize_in_one_command(calib_frames: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    done = subprocess.run(
        [
            sys.executable, "-m", "exporter.cli", "split", str(ROOT / "examples" / "demo_multitask.onnx"),
            "-o", str(out), "--input-spec", str(ROOT / "examples" / "demo_input.toml"),
            "--head-spec", str(ROOT / "examples" / "demo_heads.toml"),
            "--calib", str(calib_frames), "--precision", "int8",
        ],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "top1_agreement" in done.stdout and "decisions:" in done.stdout
    assert "[3/4] quantizing (int8)" in done.stderr  # progress
    bundle = load_bundle(out)
    assert (out / "quantization.json").exists()
    for entry in [bundle.manifest.trunk, *bundle.manifest.heads.values()]:
        for artifact in entry.artifacts:
            make_session(bundle.path_of(artifact).read_bytes(), artifact.path)


def test_quantize_cli_errors_are_one_line(demo_bundle: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run(
        [
            sys.executable, "-m", "exporter.cli", "quantize", str(demo_bundle), "--calib", str(empty),
            "-o", str(tmp_path / "o"),
        ],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2
    assert str(empty) in done.stderr and "Traceback" not in done.stderr


def test_quantized_graphs_load_on_onnxruntime_1_23(int8_bundle: Path) -> None:
    """The oldest device runtime (Python 3.10 aarch64 resolves onnxruntime 1.23) loads and runs
    every INT8 and FP16 graph written."""
    side_python = os.environ.get("EDGE_ORT_OLD_PYTHON")
    if not side_python:
        pytest.skip("EDGE_ORT_OLD_PYTHON is not set: run through `make test`, which builds .venv-ort123")
    script = textwrap.dedent(
        """
        import json, sys
        import numpy as np, onnxruntime as ort
        bundle = sys.argv[1]
        manifest = json.load(open(bundle + "/manifest.json"))
        loaded = []
        for entry in [manifest["trunk"], *manifest["heads"].values()]:
            for artifact in entry["artifacts"]:
                session = ort.InferenceSession(bundle + "/" + artifact["path"], providers=["CPUExecutionProvider"])
                feeds = {}
                for i in session.get_inputs():
                    shape = [d if isinstance(d, int) else 1 for d in i.shape]
                    feeds[i.name] = np.random.default_rng(0).random(shape, dtype=np.float32)
                session.run(None, feeds)
                loaded.append(artifact["precision"])
        print(json.dumps({"version": ort.__version__, "loaded": loaded}))
        """
    )
    done = subprocess.run([side_python, "-c", script, str(int8_bundle)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["version"].startswith("1.23."), result
    assert result["loaded"].count("int8") >= 1 and result["loaded"].count("fp16") >= 1


def test_a_graph_that_cannot_be_quantized_names_the_op() -> None:
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Mystery", ["x"], ["y"], domain="com.example", name="odd")],
        "custom",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
    )
    model = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", 17), onnx.helper.make_opsetid("com.example", 1)]
    )
    with pytest.raises(ModelError) as caught:
        int8_graph(model, {"x": np.ones((4, 4), np.float32)}, "head 'odd'")
    assert "head 'odd': INT8 quantization failed" in str(caught.value) and "Mystery" in str(caught.value)


def _detector_like_head() -> onnx.ModelProto:
    """features -> conv -> (4 box channels x 320, 2 class channels through a sigmoid) -> one
    concatenated output: the shape of YOLOv8's exported post-processing."""
    h = onnx.helper
    rng = np.random.default_rng(3)
    weight = onnx.numpy_helper.from_array(rng.normal(0, 0.5, (6, 8, 1, 1)).astype(np.float32), "w")
    nodes = [
        h.make_node("Conv", ["x", "w"], ["c"], name="pred"),
        h.make_node("Reshape", ["c", "shape"], ["flat"], name="flatten"),
        h.make_node("Split", ["flat", "sizes"], ["box", "cls"], axis=1, name="split"),
        h.make_node("Sigmoid", ["box"], ["box01"], name="box_sigmoid"),
        h.make_node("Mul", ["box01", "size"], ["box_px"], name="to_pixels"),
        h.make_node("Sigmoid", ["cls"], ["scores"], name="scores"),
        h.make_node("Concat", ["box_px", "scores"], ["y"], axis=1, name="rows"),
    ]
    constants = [
        weight,
        onnx.numpy_helper.from_array(np.array([1, 6, 16], np.int64), "shape"),
        onnx.numpy_helper.from_array(np.array([4, 2], np.int64), "sizes"),
        onnx.numpy_helper.from_array(np.array(320.0, np.float32), "size"),
    ]
    graph = h.make_graph(
        nodes,
        "head",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8, 4, 4])],
        [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 6, 16])],
        constants,
    )
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


def test_the_post_processing_tail_is_found() -> None:
    assert float_tail(_detector_like_head()) == ["flatten", "split", "box_sigmoid", "to_pixels", "scores", "rows"]
    conv_only = _detector_like_head()
    del conv_only.graph.node[1:]
    conv_only.graph.output[0].CopyFrom(onnx.helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, None))
    assert float_tail(conv_only) == []


def test_int8_keeps_scores_beside_pixel_coordinates() -> None:
    """One uint8 step over [0, 320] is 1.25: quantizing the concat would turn every score into
    0 or 1.25. The tail stays float, so scores keep their values (only the conv is INT8)."""
    model = _detector_like_head()
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, (16, 8, 4, 4)).astype(np.float32)
    data = int8_graph(model, {"x": x}, "head 'det'")
    quantized = onnx.load_from_string(data)
    quantized_inputs = {n.input[0] for n in quantized.graph.node if n.op_type == "QuantizeLinear"}
    assert "box_px" not in quantized_inputs and "scores" not in quantized_inputs
    float_session, int8_session = make_session(model.SerializeToString(), "float"), make_session(data, "int8")
    want = np.concatenate([float_session.run(None, {"x": x[i : i + 1]})[0] for i in range(4)])
    got = np.concatenate([int8_session.run(None, {"x": x[i : i + 1]})[0] for i in range(4)])
    assert np.abs(got[:, 4:] - want[:, 4:]).max() < 0.05  # scores
    assert got[:, 4:].max() <= 1.0
    assert np.abs(got[:, :4] - want[:, :4]).max() < 320 * 0.05  # pixel coordinates
