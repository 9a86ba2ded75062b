"""Models whose weights live in a separate ``.onnx.data`` file (the dynamo exporter's
default) are read whole and written into self-contained bundle graphs."""

from __future__ import annotations

from pathlib import Path

import onnx
import onnx_models as m
import pytest

from edge_runtime.bundle.reader import load_bundle
from edge_runtime.errors import ModelError
from exporter.frontends.onnx import load_onnx_model
from exporter.pipeline import split_model


def _save_external(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save_model(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
        location=path.name + ".data", size_threshold=0,
    )  # fmt: skip
    return path


def test_external_weights_are_inlined_in_the_bundle(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    path = _save_external(m.hard_sharing(), tmp_path / "src" / "model.onnx")
    assert (path.parent / "model.onnx.data").stat().st_size > 0
    result = split_model(path, tmp_path / "bundle")
    bundle = load_bundle(result.bundle_dir)
    assert sorted(
        p.name for p in result.bundle_dir.rglob("*") if p.is_file() and p.parent.name != "selftest"
    ) == sorted(
        ["manifest.json", "trunk.fp32.onnx", "cls.fp32.onnx", "seg.fp32.onnx"]
    )  # no .data file next to the graphs
    for rel in (r for r in bundle.manifest.files if r.endswith(".onnx")):
        graph = onnx.load(str(result.bundle_dir / rel), load_external_data=False)
        assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in graph.graph.initializer), rel
    assert result.report.max_abs_error <= 1e-5


def test_missing_external_weights_name_the_model(tmp_path: Path) -> None:
    path = _save_external(m.hard_sharing(), tmp_path / "model.onnx")
    (tmp_path / "model.onnx.data").unlink()
    with pytest.raises(ModelError, match=r"model\.onnx: cannot read its external weights"):
        load_onnx_model(path)
