"""Bundles that always run: a graph without an artifact of the backend's format runs on the other
backend (edge_runtime.inference.artifact_choice), a mixed LiteRT + ONNX Runtime engine agrees with
the all-ONNX one, ``--strict`` refuses such a bundle, and heads the config disables are not loaded.

The bundle holds the small TFLite models of ``tests/tflite_models.py`` (built once in the TensorFlow
converter environment and cached, as in tests/test_tflite_backend.py) and ONNX graphs computing the
same functions with the very weights read out of the FP32 .tflite files: trunk ``image`` ->
``features`` (conv 3x3 + ReLU) and ``pooled``; heads ``cls`` and ``aux``: ``features`` -> ``logits``.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_runtime.bundle.reader import sha256_file
from edge_runtime.errors import BundleError, ConfigError
from edge_runtime.inference.artifact_choice import plan_artifacts
from edge_runtime.inference.engine import Engine, EngineOptions
from edge_runtime.inference.results import FrameResult, RawOutput

pytest.importorskip("ai_edge_litert", reason="LiteRT is not installed (pip install 'edge-runtime[tflite]')")

NCHW_TO_NHWC = [0, 2, 3, 1]
PERMS: dict[str, list[int] | None] = {"image": NCHW_TO_NHWC, "features": NCHW_TO_NHWC, "pooled": None, "logits": None}
GRAPH_TENSORS = {"trunk": ("image", "features", "pooled"), "head": ("features", "logits")}
HEADS = ("cls", "aux")


def _weights(path: Path) -> dict[str, np.ndarray]:
    """The constant tensors of a .tflite model by name (LiteRT reads them back)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    found: dict[str, np.ndarray] = {}
    for detail in interpreter.get_tensor_details():
        try:
            found[detail["name"]] = np.array(interpreter.get_tensor(detail["index"]))
        except ValueError:  # an activation: no data before a run
            continue
    return found


def _onnx_trunk(tflite_models: Path) -> onnx.ModelProto:
    weights = _weights(tflite_models / "trunk_fp32.tflite")
    kernel = weights["Conv2D"].transpose(0, 3, 1, 2)  # TFLite OHWI -> ONNX OIHW
    bias = weights["Relu;add;Conv2D;add/ReadVariableOp"]
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv"], ["features"]),
            helper.make_node("ReduceMean", ["features"], ["pooled"], axes=[2, 3], keepdims=0),
        ],
        "trunk",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 12, 16])],
        [
            helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 4, 12, 16]),
            helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [1, 4]),
        ],
        [numpy_helper.from_array(kernel, "w"), numpy_helper.from_array(bias, "b")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _onnx_head(tflite_models: Path, output: str) -> onnx.ModelProto:
    weights = _weights(tflite_models / "head_fp32.tflite")
    kernel = weights["Conv2D1"].transpose(0, 3, 1, 2)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["features", "w", "b"], ["conv"]),
            helper.make_node("Relu", ["conv"], ["hidden"]),
            helper.make_node("ReduceMean", ["hidden"], ["mean"], axes=[2, 3], keepdims=0),
            helper.make_node("Gemm", ["mean", "dense", "bias"], [output], transB=1),
        ],
        "head",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 4, 12, 16])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [1, 5])],
        [
            numpy_helper.from_array(kernel, "w"),
            numpy_helper.from_array(weights["Conv2D"], "b"),
            numpy_helper.from_array(weights["arith.constant"], "dense"),
            numpy_helper.from_array(weights["add/ReadVariableOp"], "bias"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _tflite_artifact(graph: str, precision: str, path: str, head: str | None = None) -> dict[str, Any]:
    """A TFLite artifact entry; a head's ``logits`` is the logical tensor ``<head>_logits``."""
    tensors = {
        (f"{head}_{name}" if head and name == "logits" else name): {"name": name, "perm": PERMS[name]}
        for name in GRAPH_TENSORS[graph]
    }
    return {
        "format": "tflite",
        "precision": precision,
        "path": path,
        "signature": "serving_default",
        "tensors": tensors,
    }


@pytest.fixture(scope="module")
def full_bundle(tflite_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trunk and heads ``cls`` and ``aux``, each as ONNX fp32, TFLite fp32 and TFLite int8."""
    folder = tmp_path_factory.mktemp("fallback") / "bundle"
    (folder / "tflite").mkdir(parents=True)
    (folder / "heads").mkdir()
    onnx.save(_onnx_trunk(tflite_models), str(folder / "trunk.fp32.onnx"))
    artifacts: dict[str, list[dict[str, Any]]] = {
        "trunk": [{"format": "onnx", "precision": "fp32", "path": "trunk.fp32.onnx"}]
    }
    for precision in ("fp32", "int8"):
        path = f"tflite/trunk.{precision}.tflite"
        shutil.copy(tflite_models / f"trunk_{precision}.tflite", folder / path)
        artifacts["trunk"].append(_tflite_artifact("trunk", precision, path))
    for head in HEADS:
        onnx.save(_onnx_head(tflite_models, f"{head}_logits"), str(folder / "heads" / f"{head}.fp32.onnx"))
        artifacts[head] = [{"format": "onnx", "precision": "fp32", "path": f"heads/{head}.fp32.onnx"}]
        for precision in ("fp32", "int8"):
            path = f"tflite/{head}.{precision}.tflite"
            shutil.copy(tflite_models / f"head_{precision}.tflite", folder / path)
            artifacts[head].append(_tflite_artifact("head", precision, path, head))
    manifest = {
        "format": "edge-bundle/1",
        "name": "fallback-test",
        "version": "1",
        "input": {  # pixels to [-1, 1]: the distribution the INT8 models were calibrated on
            "name": "image",
            "shape": [1, 3, 12, 16],
            "layout": "NCHW",
            "resize": "stretch",
            "scale": 2.0 / 255.0,
            "mean": [1.0, 1.0, 1.0],
        },
        "trunk": {"inputs": ["image"], "outputs": ["features", "pooled"], "artifacts": artifacts["trunk"]},
        "heads": {
            name: {
                "inputs": ["features"],
                "outputs": [f"{name}_logits"],
                "artifacts": artifacts[name],
                "decoder": {"type": "raw"},
            }
            for name in HEADS
        },
        "files": {},
    }
    return _write_manifest(folder, manifest)


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest`` with ``files`` re-hashed: every artifact path it lists, nothing else."""
    paths = sorted(
        {a["path"] for entry in [manifest["trunk"], *manifest["heads"].values()] for a in entry["artifacts"]}
    )
    manifest["files"] = {path: sha256_file(folder / path) for path in paths}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


def without(bundle: Path, target: Path, head: str, artifact_format: str) -> Path:
    """A copy of ``bundle`` where ``head`` has no ``artifact_format`` artifact (as when the TFLite
    gate rejected it): removed from the manifest, its files re-hashed; unused files deleted."""
    shutil.copytree(bundle, target)
    manifest = json.loads((target / "manifest.json").read_text())
    entry = manifest["heads"][head]
    for artifact in entry["artifacts"]:
        if artifact["format"] == artifact_format:
            (target / artifact["path"]).unlink()
    entry["artifacts"] = [a for a in entry["artifacts"] if a["format"] != artifact_format]
    return _write_manifest(target, manifest)


@pytest.fixture(scope="module")
def aux_without_tflite(full_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return without(full_bundle, tmp_path_factory.mktemp("no-tflite") / "bundle", "aux", "tflite")


def _frames(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (12, 16, 3), dtype=np.uint8) for _ in range(count)]


def _logits(engine: Engine, frames: list[np.ndarray]) -> dict[str, np.ndarray]:
    results = [engine.infer(frame) for frame in frames]
    return {h: np.stack([_raw(r, h) for r in results]) for h in engine.head_names}


def _raw(result: FrameResult, head: str) -> np.ndarray:
    """Head ``head``'s logits in ``result`` (a raw decoder's output)."""
    output = result.results[head]
    assert isinstance(output, RawOutput)
    return np.asarray(output.tensors[f"{head}_logits"])


def test_plan_falls_back_to_onnxruntime_for_a_head_without_tflite(aux_without_tflite: Path) -> None:
    from edge_runtime.bundle.reader import read_manifest

    plan = plan_artifacts(read_manifest(aux_without_tflite), "tflite", "int8")
    assert {g: (c.backend, c.artifact.precision) for g, c in plan.choices.items()} == {
        "trunk": ("tflite", "int8"),
        "cls": ("tflite", "int8"),
        "aux": ("onnxruntime", "fp32"),
    }
    assert plan.mixed and plan.backends == ("tflite", "onnxruntime")
    assert plan.choices["aux"].reason == "no tflite artifact: runs on onnxruntime fp32"
    assert plan.summary() == (
        "trunk tflite int8; head 'cls' tflite int8; head 'aux' onnxruntime fp32 "
        "(no tflite artifact: runs on onnxruntime fp32)"
    )


@pytest.mark.parametrize(
    ("precision", "mixed_tolerance", "tflite_tolerance"),
    [
        # FP32: the same float math in both runtimes, only summation order differs.
        ("fp32", 1e-5, 1e-5),
        # INT8 trunk: the image and the features are rounded to one step of their int8 scales
        # (1/256 of their range); the ONNX head 'aux' reads the features dequantised, so its logits
        # move by about that fraction of their spread (measured 0.4 %); 'cls' is INT8 as well
        # (measured 1.2 %). Tolerances: 2 % and 5 % of the reference logits' spread.
        ("int8", 0.02, 0.05),
    ],
)
def test_mixed_engine_agrees_with_the_all_onnx_engine(
    aux_without_tflite: Path,
    precision: str,
    mixed_tolerance: float,
    tflite_tolerance: float,
    caplog: pytest.LogCaptureFixture,
) -> None:
    frames = _frames(8)
    with Engine.from_bundle(aux_without_tflite, EngineOptions(backend="onnxruntime", threads=1)) as engine:
        assert engine.plan is not None and {c.backend for c in engine.plan.choices.values()} == {"onnxruntime"}
        reference = _logits(engine, frames)
    options = EngineOptions(backend="tflite", precision=precision, threads=1)
    with caplog.at_level(logging.INFO), Engine.from_bundle(aux_without_tflite, options) as mixed:
        assert {g: a.format for g, a in mixed.artifacts.items()} == {"trunk": "tflite", "cls": "tflite", "aux": "onnx"}
        assert mixed.backend_description.startswith("LiteRT ") and "onnxruntime" in mixed.backend_description
        got = _logits(mixed, frames)
        raw = mixed.run_graphs(mixed.preprocess(frames[0]))
        np.testing.assert_allclose(mixed.to_numpy(raw["aux_logits"])[0], got["aux"][0], rtol=1e-6)
        np.testing.assert_allclose(mixed.to_numpy(raw["cls_logits"])[0], got["cls"][0], rtol=1e-6)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "head 'aux'" in r.getMessage()]
    assert len(warnings) == 1 and "no tflite artifact: runs on onnxruntime fp32" in warnings[0].getMessage()
    scale = 1.0 if precision == "fp32" else float(np.ptp(reference["aux"]))
    np.testing.assert_allclose(got["aux"], reference["aux"], rtol=0, atol=mixed_tolerance * scale)
    np.testing.assert_allclose(got["cls"], reference["cls"], rtol=0, atol=tflite_tolerance * scale)


def test_mixed_head_reads_the_dequantized_features_in_onnx_layout(full_bundle: Path, tmp_path: Path) -> None:
    """The ONNX head of a mixed INT8 engine gives what the ONNX head gives on the TFLite trunk's
    features as to_numpy makes them (dequantised, NCHW): no other conversion on the way."""
    import onnxruntime as ort

    bundle = without(full_bundle, tmp_path / "bundle", "aux", "tflite")
    frame = _frames(1)[0]
    with Engine.from_bundle(bundle, EngineOptions(backend="tflite", precision="int8", threads=1)) as engine:
        got = _raw(engine.infer(frame), "aux")
        features = engine._trunk.to_numpy(engine._trunk.run({"image": engine.preprocess(frame)})["features"])
    assert features.shape == (1, 4, 12, 16) and features.dtype == np.float32
    session = ort.InferenceSession(str(bundle / "heads" / "aux.fp32.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(got, session.run(None, {"features": features})[0][0], rtol=1e-5, atol=1e-6)


def test_onnxruntime_backend_falls_back_to_tflite(full_bundle: Path, tmp_path: Path) -> None:
    bundle = without(full_bundle, tmp_path / "bundle", "cls", "onnx")
    frames = _frames(4)
    with Engine.from_bundle(bundle, EngineOptions(backend="onnxruntime", threads=1)) as mixed:
        assert mixed.plan is not None and mixed.plan.choices["cls"].backend == "tflite"
        assert mixed.artifacts["cls"].path == "tflite/cls.fp32.tflite"
        got = _logits(mixed, frames)
    with Engine.from_bundle(full_bundle, EngineOptions(backend="onnxruntime", threads=1)) as engine:
        reference = _logits(engine, frames)
    np.testing.assert_allclose(got["cls"], reference["cls"], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(got["aux"], reference["aux"])


def test_strict_refuses_a_mixed_bundle_naming_each_graph(aux_without_tflite: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        Engine.from_bundle(aux_without_tflite, EngineOptions(backend="tflite", precision="int8", strict=True))
    message = str(caught.value)
    assert "\n" not in message
    assert "head 'aux': no tflite artifact: runs on onnxruntime fp32" in message
    assert "trunk" not in message and "head 'cls'" not in message
    with pytest.raises(ConfigError, match=r"head 'aux': no onnx int8 artifact, using fp32"):
        Engine.from_bundle(aux_without_tflite, EngineOptions(backend="onnxruntime", precision="int8", strict=True))
    with Engine.from_bundle(aux_without_tflite, EngineOptions(backend="onnxruntime", strict=True)) as engine:
        assert engine.head_names == ("cls", "aux")


def test_onnx_fallback_to_tflite_needs_its_runtime(full_bundle: Path, tmp_path: Path) -> None:
    from edge_runtime.bundle.reader import read_manifest

    manifest = read_manifest(without(full_bundle, tmp_path / "bundle", "cls", "onnx"))
    with pytest.raises(BundleError, match=r"head 'cls' has no onnx artifact .*pip install 'edge-runtime\[tflite\]'"):
        plan_artifacts(manifest, "onnxruntime", "fp32", available=lambda _name: False)
    assert plan_artifacts(manifest, "onnxruntime", "fp32", ["aux"], available=lambda _name: False).backends == (
        "onnxruntime",
    )


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_run_falls_back_and_strict_refuses_through_the_cli(aux_without_tflite: Path, tmp_path: Path) -> None:
    common = ["run", "--bundle", str(aux_without_tflite), "--source", "synthetic:16x12", "--max-frames", "2"]
    common += ["--backend", "tflite", "--precision", "int8", "--state-dir", str(tmp_path / "state")]
    done = _cli(*common, "--output", str(tmp_path / "out.jsonl"))
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all({"cls", "aux"} <= set(line["results"]) for line in lines)
    assert "head 'aux': no tflite artifact: runs on onnxruntime fp32" in done.stderr
    refused = _cli(*common, "--strict")
    assert refused.returncode == 2, refused.stderr
    errors = [line for line in refused.stderr.splitlines() if "error:" in line]
    assert errors == [
        "edge-runtime: error: strict: the tflite backend at int8 cannot run every graph as asked: "
        "head 'aux': no tflite artifact: runs on onnxruntime fp32"
    ]


def test_a_disabled_head_is_not_loaded(full_bundle: Path, tmp_path: Path) -> None:
    """``[heads.aux] enabled = false``: the engine is built without it, so a head the backend
    could not run at all (no artifact of either format it can use) does not stop the run."""
    bundle = without(full_bundle, tmp_path / "bundle", "aux", "onnx")
    # --strict on onnxruntime: 'aux' would run on LiteRT; disabled, it is not loaded and not judged
    common = ["run", "--bundle", str(bundle), "--source", "synthetic:16x12", "--max-frames", "2", "--strict"]
    common += ["--backend", "onnxruntime", "--state-dir", str(tmp_path / "state")]
    refused = _cli(*common)
    assert refused.returncode == 2 and "head 'aux': no onnx artifact: runs on tflite fp32" in refused.stderr
    config = tmp_path / "config.toml"
    config.write_text("[heads.aux]\nenabled = false\n")
    done = _cli(*common, "--config", str(config), "--output", str(tmp_path / "out.jsonl"))
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(set(line["results"]) == {"cls"} for line in lines)
    validated = _cli(*common, "--config", str(config), "--validate")
    assert validated.returncode == 0 and "heads cls)" in validated.stdout, validated.stderr


def _without_int8(bundle: Path, target: Path, graph: str) -> Path:
    """A copy of ``bundle`` where ``graph`` has no TFLite INT8 artifact (its FP32 one stays)."""
    shutil.copytree(bundle, target)
    manifest = json.loads((target / "manifest.json").read_text())
    entry = manifest["trunk"] if graph == "trunk" else manifest["heads"][graph]
    entry["artifacts"] = [a for a in entry["artifacts"] if (a["format"], a["precision"]) != ("tflite", "int8")]
    return _write_manifest(target, manifest)


def test_compare_litert_int8_ratios_cover_int8_graphs_only(full_bundle: Path, tmp_path: Path) -> None:
    """benchmarks/compare.py: an INT8 ratio runs only the graphs that are INT8 on both sides; a
    trunk that is not INT8 makes the ratio missing, with the reason."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        from compare import int8_subset_cases
    finally:
        sys.path.pop(0)
    x = np.zeros((1, 3, 12, 16), np.float32)
    sides = (("litert_int8", "tflite"), ("litert_fp32", None))
    head_fp32 = _without_int8(full_bundle, tmp_path / "aux", "aux")
    engines = {
        "litert_int8": Engine.from_bundle(head_fp32, EngineOptions(backend="tflite", precision="int8")),
        "litert_fp32": Engine.from_bundle(head_fp32, EngineOptions(backend="tflite", precision="fp32")),
    }
    cases, why = int8_subset_cases(engines, sides, x)
    assert why is None and list(cases) == ["litert_int8@int8", "litert_fp32@int8"]
    assert all(set(run()) == {"cls_logits"} for run in cases.values())  # aux (FP32 only) left out
    whole = {
        "litert_int8": Engine.from_bundle(full_bundle, EngineOptions(backend="tflite", precision="int8")),
        "litert_fp32": Engine.from_bundle(full_bundle, EngineOptions(backend="tflite", precision="fp32")),
    }
    every, why = int8_subset_cases(whole, sides, x)
    assert why is None and list(every) == ["litert_int8", "litert_fp32"]
    trunk_fp32 = _without_int8(full_bundle, tmp_path / "trunk", "trunk")
    engines["litert_int8"] = Engine.from_bundle(trunk_fp32, EngineOptions(backend="tflite", precision="int8"))
    cases, why = int8_subset_cases(engines, sides, x)
    assert cases == {} and why is not None and "trunk is not INT8" in why and "trunk tflite fp32" in why


def test_convert_reports_what_each_backend_runs(aux_without_tflite: Path) -> None:
    """``edge-export convert``'s report (exporter.tflite.backend_runs): per backend and precision,
    the runtime's own plan, with the gate's reason for a head that has no TFLite artifact; the
    LiteRT plans that mix are what ``convert --strict`` refuses."""
    from exporter.tflite import TfliteResult, backend_runs
    from exporter.tflite_graphs import TfliteDecision

    decisions = [
        TfliteDecision("aux", precision, f"tflite/aux.{precision}.tflite", accepted=False, reason="below 0.99")
        for precision in ("fp32", "int8")
    ]
    lines, refused = backend_runs(TfliteResult(aux_without_tflite, decisions, "frames"), ("fp32", "int8"))
    litert_int8 = next(line for line in lines if "--backend tflite --precision int8" in line)
    assert "trunk tflite int8" in litert_int8 and "head 'cls' tflite int8" in litert_int8
    assert "head 'aux' onnxruntime fp32" in litert_int8 and "the gate rejected fp32 and int8" in litert_int8
    assert any("--backend onnxruntime --precision fp32" in line for line in lines)
    assert len(refused) == 2 and all("head 'aux'" in r and "trunk" not in r for r in refused)
