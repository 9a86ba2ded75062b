"""PyTorch -> TFLite through litert-torch in its own virtualenv (built on first use: minutes on a
fresh machine, cached after): a tiny trunk + heads model split by the torch frontend, its trunk
and heads converted FP32 and INT8, loaded in this venv's LiteRT and compared with the bundle's
ONNX graphs; the INT8 calibration does not saturate the trunk."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch frontend needs the [torch] extra (torch==2.13.0)")
pytest.importorskip("ai_edge_litert", reason="LiteRT is not installed (pip install 'edge-runtime[tflite]')")

from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from edge_runtime.bundle.reader import load_bundle  # noqa: E402
from edge_runtime.errors import ConfigError  # noqa: E402
from exporter.cli import main  # noqa: E402
from exporter.frontends.torch import split_torch_model  # noqa: E402
from exporter.litert_torch import convert_torch_bundle  # noqa: E402
from exporter.pipeline import SplitOptions  # noqa: E402
from exporter.tflite import TfliteOptions  # noqa: E402
from exporter.toolenv import ToolEnv, ToolEnvError, ensure_env  # noqa: E402
from exporter.verify import make_session  # noqa: E402
from tests.test_torch_frontend import StructuredNet as TinyNet  # noqa: E402

# Tens of seconds with the converter virtualenv built (minutes to build it): make test-quick leaves it out.
pytestmark = pytest.mark.slow

nn = torch.nn
INPUT = {"shape": [1, 3, 16, 16]}


@pytest.fixture(scope="module")
def litert_env() -> ToolEnv:
    try:
        return ensure_env("litert-torch")
    except ToolEnvError as exc:  # no PyPI: say why, loudly
        pytest.fail(f"the litert-torch environment could not be built: {exc}")


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("frames") / "inputs.npy"
    np.save(path, np.random.default_rng(3).uniform(-1.0, 1.0, (24, 3, 16, 16)).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def converted(litert_env: ToolEnv, frames: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("litert")
    net = TinyNet()  # trunk + heads ModuleDict; the same model the torch frontend's tests split
    split_torch_model(net, root / "onnx", SplitOptions(input_spec=INPUT))
    convert_torch_bundle(net, root / "onnx", root / "bundle", TfliteOptions(calib=frames))
    return root / "bundle"


def test_fp32_graphs_load_in_litert_and_match_onnx(converted: Path, frames: Path) -> None:
    bundle = load_bundle(converted)
    manifest = bundle.manifest
    x = np.load(frames)[:1]
    onnx_trunk = make_session(bundle.path_of(manifest.trunk.artifact("onnx", "fp32")).read_bytes(), "trunk")
    values = {"image": x, **dict(zip(manifest.trunk.outputs, onnx_trunk.run(None, {"image": x}), strict=True))}
    for graph, entry in [("trunk", manifest.trunk), *manifest.heads.items()]:
        artifact = entry.artifact("tflite", "fp32")
        assert artifact is not None, graph
        assert artifact.layout == "NCHW" and artifact.extra["signature"] == "serving_default"
        assert artifact.fidelity is not None and artifact.fidelity["agreement"] >= 0.999
        tensors = artifact.extra["tensors"]
        inputs = ["image"] if graph == "trunk" else list(entry.inputs)
        assert set(tensors) == {*inputs, *entry.outputs}
        assert all(t["perm"] is None and t["dtype"] == "float32" for t in tensors.values())
        runner = Interpreter(model_path=str(bundle.path_of(artifact))).get_signature_runner("serving_default")
        got = runner(**{tensors[n]["name"]: values[n] for n in inputs})
        session = make_session(bundle.path_of(entry.artifact("onnx", "fp32")).read_bytes(), graph)
        expected = dict(zip(entry.outputs, session.run(None, {n: values[n] for n in inputs}), strict=True))
        for name in entry.outputs:
            np.testing.assert_allclose(got[tensors[name]["name"]], expected[name], atol=1e-4, rtol=1e-4)


def test_int8_graphs_are_measured_and_the_trunk_does_not_saturate(converted: Path) -> None:
    manifest = load_bundle(converted).manifest
    report = json.loads((converted / "tflite.json").read_text())
    assert report["converter_name"] == "litert-torch"
    int8 = {d["graph"]: d for d in report["decisions"] if d["precision"] == "int8"}
    assert set(int8) == {"trunk", "label", "mask"}
    for decision in int8.values():
        assert decision["agreement"] is not None and decision["fidelity"]
    assert set(int8["trunk"]["fidelity"]) == {"label", "mask"}  # the trunk is judged by every task
    # min/max calibration over every frame: the INT8 trunk keeps the tasks (a clipped range would not)
    assert int8["trunk"]["accepted"], int8["trunk"]["reason"]
    trunk8 = manifest.trunk.artifact("tflite", "int8")
    assert trunk8 is not None and trunk8.fidelity["agreement"] >= 0.99
    # heads are calibrated on the float trunk's outputs with the same observer: the INT8 trunk
    # output feeds them without re-quantisation
    features = trunk8.extra["tensors"]["features"]
    assert features["dtype"] == "int8" and features["quantization"] is not None
    for entry in manifest.heads.values():
        head8 = entry.artifact("tflite", "int8")
        assert head8 is not None and head8.extra["tensors"]["features"]["quantization"] == features["quantization"]
    size8 = (converted / trunk8.path).stat().st_size
    assert size8 < (converted / manifest.trunk.artifact("tflite", "fp32").path).stat().st_size


def test_a_model_without_trunk_and_heads_is_refused(litert_env: ToolEnv, frames: Path, tmp_path: Path) -> None:
    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.classify = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
            self.segment = nn.Conv2d(8, 2, 1)

        def forward(self, x: Any) -> tuple[Any, Any]:
            f = self.body(x)
            return self.classify(f), self.segment(f)

    split_torch_model(Plain(), tmp_path / "onnx", SplitOptions(input_spec=INPUT))
    with pytest.raises(ConfigError, match="'trunk' module and a 'heads'"):
        convert_torch_bundle(Plain(), tmp_path / "onnx", tmp_path / "out", TfliteOptions(calib=frames))


def test_cli_convert_with_source_model(litert_env: ToolEnv, frames: Path, tmp_path: Path) -> None:
    source = tmp_path / "tinynet.py"
    source.write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    torch.manual_seed(0)
                    self.trunk = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
                    self.heads = nn.ModuleDict(
                        {"score": nn.Sequential(nn.Flatten(), nn.Linear(4 * 16 * 16, 2)), "edges": nn.Conv2d(4, 1, 1)}
                    )

                def forward(self, x):
                    f = self.trunk(x)
                    return self.heads["score"](f), self.heads["edges"](f)

            def build():
                return Net()
            """
        )
    )
    spec = tmp_path / "input.json"
    spec.write_text(json.dumps(INPUT))
    model = f"{source}:build"
    assert main(["-q", "split", model, "-o", str(tmp_path / "onnx"), "--input-spec", str(spec)]) == 0
    out = tmp_path / "tflite"
    argv = ["-q", "convert", str(tmp_path / "onnx"), "--to", "tflite", "--source-model", model]
    assert main([*argv, "--calib", str(frames), "--precision", "fp32", "-o", str(out)]) == 0
    manifest = load_bundle(out).manifest
    assert manifest.trunk.artifact("tflite", "fp32") is not None
    assert manifest.heads["score"].artifact("tflite", "fp32") is not None


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_runtime_runs_the_converted_bundle_like_onnxruntime(converted: Path, frames: Path, precision: str) -> None:
    """litert-torch bundles keep NCHW and name their tensors args_0 / output_0: the LiteRT backend
    must still feed and read them by the manifest's map, and agree with ONNX Runtime."""
    from edge_runtime.inference.engine import Engine, EngineOptions

    inputs = np.load(frames)[:6]

    def outputs(backend: str, prec: str) -> list[dict[str, np.ndarray]]:
        with Engine.from_bundle(converted, EngineOptions(backend=backend, precision=prec, threads=1)) as engine:
            assert backend != "tflite" or engine.artifacts["trunk"].precision == prec
            return [
                {k: engine.to_numpy(v) for k, v in engine.run_graphs(inputs[i : i + 1]).items()}
                for i in range(len(inputs))
            ]

    reference, candidate = outputs("onnxruntime", "fp32"), outputs("tflite", precision)
    for ref, cand in zip(reference, candidate, strict=True):
        assert set(ref) == set(cand)
        for name in ref:
            assert cand[name].shape == ref[name].shape
            if precision == "fp32":
                np.testing.assert_allclose(cand[name], ref[name], atol=1e-4, rtol=1e-4)
            else:
                x, y = cand[name].ravel(), ref[name].ravel()
                assert float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y))) > 0.99, name
