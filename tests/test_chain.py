"""exporter.export: the chain of ``edge-export split`` (frontend, split, quantize, convert) as
one Python call, on the demo model; the bundles it writes load with ``load_bundle``."""

from __future__ import annotations

from pathlib import Path

import pytest

import exporter
from edge_runtime.bundle.reader import load_bundle
from edge_runtime.errors import ConfigError, EdgeRuntimeError, ModelError
from exporter import ExportOptions, ExportResult, SplitOptions

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEMO = SplitOptions(input_spec=EXAMPLES / "demo_input.toml", head_spec=EXAMPLES / "demo_heads.toml")


def test_export_writes_a_bundle_that_loads(tmp_path: Path) -> None:
    stages: list[str] = []

    def progress(stage: str, result: ExportResult) -> None:
        stages.append(stage)
        assert result.split is not None and result.bundle_dir == tmp_path / "bundle"

    result = exporter.export(
        EXAMPLES / "demo_multitask.onnx", tmp_path / "bundle", ExportOptions(split=DEMO), progress=progress
    )
    assert stages == ["split"]
    assert result.formats == ("onnx",)
    assert result.quantization is None and result.tflite is None and result.keras is None
    assert result.split is not None and result.split.report.max_abs_error <= 1e-5
    bundle = load_bundle(result.bundle_dir)
    assert sorted(bundle.manifest.heads) == ["box", "mask", "shape"]
    assert [a.precision for a in bundle.manifest.trunk.artifacts] == ["fp32"]


def test_export_quantizes_when_asked(tmp_path: Path) -> None:
    stages: list[str] = []
    result = exporter.export(
        str(EXAMPLES / "demo_multitask.onnx"),
        tmp_path / "bundle",
        ExportOptions(split=DEMO, precision="fp16", min_agreement=0.9),
        progress=lambda stage, _: stages.append(stage),
    )
    assert stages == ["split", "quantize"]
    assert result.quantization is not None and result.quantization.decisions
    manifest = load_bundle(result.bundle_dir).manifest
    precisions = {a.precision for entry in (manifest.trunk, *manifest.heads.values()) for a in entry.artifacts}
    accepted = {d.precision for d in result.quantization.decisions if d.accepted}
    assert precisions == {"fp32", *accepted}


@pytest.mark.parametrize(
    ("model", "options", "error", "message"),
    [
        ("missing.onnx", ExportOptions(), ModelError, "missing.onnx: no such file"),
        ("model.onnx", ExportOptions(formats="tflite"), ConfigError, "give onnx, or onnx,tflite"),
        ("model.onnx", ExportOptions(formats=("onnx", "coreml")), ConfigError, "give onnx, or onnx,tflite"),
        ("model.keras", ExportOptions(formats="onnx"), ConfigError, "Keras bundles are TFLite-only"),
        ("model.keras", ExportOptions(precision="fp16"), ConfigError, "a Keras model exports fp32, or int8"),
        ("model.onnx", ExportOptions(precision="int4"), ConfigError, "int4"),
    ],
)
def test_export_refuses_before_writing(
    model: str, options: ExportOptions, error: type[EdgeRuntimeError], message: str, tmp_path: Path
) -> None:
    for name in ("model.onnx", "model.keras"):
        (tmp_path / name).write_bytes(b"")  # never read: the options are checked first
    with pytest.raises(error, match=message):
        exporter.export(tmp_path / model, tmp_path / "bundle", options)
    assert not (tmp_path / "bundle").exists()
