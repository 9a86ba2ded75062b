"""edge_runtime.bundle.manifest (the bundle contract) and edge_runtime.specfiles (spec file reader)."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.bundle.manifest import Manifest
from edge_runtime.bundle.specs import InputSpec
from edge_runtime.errors import BundleError, ConfigError
from edge_runtime.specfiles import load_mapping_file

DIGEST = "sha256:" + "0" * 64


def valid_manifest() -> dict[str, Any]:
    return {
        "format": "edge-bundle/1",
        "name": "demo",
        "version": "1",
        "created": "2026-01-01T00:00:00Z",
        "exporter": "edge-runtime 0.1.0",
        "input": {"name": "image", "shape": [1, 3, 16, 16]},
        "trunk": {
            "inputs": ["image"],
            "outputs": ["feat"],
            "artifacts": [{"format": "onnx", "precision": "fp32", "path": "trunk.fp32.onnx"}],
        },
        "heads": {
            "cls": {
                "inputs": ["feat"],
                "outputs": ["cls"],
                "artifacts": [{"format": "onnx", "precision": "fp32", "path": "heads/cls.fp32.onnx"}],
                "decoder": {"type": "classification", "top_k": 3},
                "schedule": {"every_n_frames": 2},
            }
        },
        "tensors": {"feat": {"dtype": "float32", "shape": [1, 8, 16, 16]}},
        "files": {"trunk.fp32.onnx": DIGEST, "heads/cls.fp32.onnx": DIGEST},
    }


def test_valid_manifest_round_trips() -> None:
    data = valid_manifest()

    manifest = Manifest.from_mapping(data, "m.json")

    assert manifest.input.shape == (1, 3, 16, 16)
    assert manifest.input.layout == "NCHW"
    assert manifest.trunk.outputs == ("feat",)
    assert manifest.heads["cls"].decoder is not None
    assert manifest.heads["cls"].decoder.params == {"top_k": 3}
    assert manifest.heads["cls"].schedule is not None
    assert manifest.heads["cls"].schedule.every_n_frames == 2
    assert manifest.tensors["feat"].shape == (1, 8, 16, 16)
    assert Manifest.from_mapping(json.loads(json.dumps(manifest.to_dict())), "again") == manifest


def with_change(path: str, value: Any) -> dict[str, Any]:
    """The valid manifest with ``path`` (dot-separated keys) set to ``value``, or deleted if ``...``."""
    data = copy.deepcopy(valid_manifest())
    *parents, last = path.split(".")
    target: Any = data
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target[key]
    if value is ...:
        del target[last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return data


MANIFEST_ERRORS = [
    pytest.param("format", ..., "missing required key 'format'", id="missing-format"),
    pytest.param("name", ..., "missing required key 'name'", id="missing-name"),
    pytest.param("trunk", ..., "missing required key 'trunk'", id="missing-trunk"),
    pytest.param("files", ..., "missing required key 'files'", id="missing-files"),
    pytest.param("input.shape", ..., "input: missing required key 'shape'", id="missing-input-shape"),
    pytest.param("format", "edge-bundle/2", "bundle format 'edge-bundle/2' is not supported", id="format-2"),
    pytest.param(
        "format", "onnx-bundle/1", "'format' is 'onnx-bundle/1', expected 'edge-bundle/1'", id="format-family"
    ),
    pytest.param("format", 1, "'format' must be str, got 1", id="format-type"),
    pytest.param("name", ["demo"], "'name' must be str", id="name-type"),
    pytest.param("heads", [], "'heads' must be dict", id="heads-type"),
    pytest.param("heads", {}, "'heads' is empty", id="no-heads"),
    pytest.param("input.layout", "NCWH", "layout='NCWH' is not one of NCHW, NHWC (did you mean", id="bad-layout"),
    pytest.param("input.color", "rgb", "color='rgb' is not one of RGB, BGR, GRAY", id="bad-color"),
    pytest.param("input.shape", [1, 3, 16], "must have 4 dims", id="input-rank"),
    pytest.param("input.dynamic_batch", "yes", "'dynamic_batch' must be bool", id="bool-type"),
    pytest.param("files.trunk.fp32.onnx", "md5:abc", "must be 'sha256:<hex>'", id="bad-digest"),
    pytest.param("trunk.artifacts", [], "'artifacts' is empty", id="no-artifacts"),
    pytest.param(
        "trunk.artifacts.0",
        {"format": "onnx", "precision": "fp32", "path": "../outside.onnx"},
        "must stay inside the bundle",
        id="path-escapes",
    ),
    pytest.param(
        "trunk.artifacts.0",
        {"format": "onnx", "precision": "fp64", "path": "trunk.onnx"},
        "precision='fp64' is not one of fp32, fp16, int8",
        id="bad-precision",
    ),
    pytest.param("heads.cls.decoder", {"type": "clasification"}, "did you mean 'classification'", id="bad-decoder"),
    pytest.param("heads.cls.schedule", {"every_n_frames": 0}, "'every_n_frames' must be >= 1", id="bad-schedule"),
    pytest.param("heads.cls.outputs", [], "'outputs' must be a non-empty list of names", id="no-outputs"),
    pytest.param("tensors.feat", {"dtype": "float32", "shape": "1x8"}, "'shape' must be a list", id="tensor-shape"),
]


@pytest.mark.parametrize(("path", "value", "message"), MANIFEST_ERRORS)
def test_manifest_validation(path: str, value: Any, message: str) -> None:
    data = valid_manifest()
    if path.startswith("files."):
        data["files"][path.removeprefix("files.")] = value
    else:
        data = with_change(path, value)

    with pytest.raises(BundleError) as caught:
        Manifest.from_mapping(data, "bundle/manifest.json")

    assert message in str(caught.value)
    assert str(caught.value).startswith("bundle/manifest.json")


@pytest.mark.parametrize(
    ("path", "where"),
    [
        pytest.param("signature", "ignoring unknown key 'signature'", id="top-level"),
        pytest.param("heads.cls.priority", "heads.cls: ignoring unknown key 'priority'", id="head"),
        pytest.param("input.gamma", "input: ignoring unknown key 'gamma'", id="input"),
    ],
)
def test_unknown_manifest_keys_warn_but_load(path: str, where: str, caplog: pytest.LogCaptureFixture) -> None:
    data = with_change(path, {"added": "later"})

    with caplog.at_level(logging.WARNING, logger="edge_runtime.bundle"):
        manifest = Manifest.from_mapping(data, "m.json")

    assert manifest.trunk.outputs == ("feat",)
    assert where in caplog.text
    assert "newer exporter" in caplog.text
    if path == "signature":
        assert manifest.extra == {"signature": {"added": "later"}}
        assert manifest.to_dict()["signature"] == {"added": "later"}


INPUT_ERRORS = [
    pytest.param({"shape": [1, 3, 16, 16]}, "missing required key 'name'", id="missing-name"),
    pytest.param({"name": "image"}, "missing required key 'shape'", id="missing-shape"),
    pytest.param({"name": "image", "shape": "1,3,16,16"}, "'shape' must be list", id="shape-type"),
    pytest.param({"name": "image", "shape": [1, 3, 0, 16]}, "positive integers", id="shape-zero"),
    pytest.param({"name": "image", "shape": [1, 3, True, 16]}, "positive integers", id="shape-bool"),
    pytest.param({"name": 7, "shape": [1, 3, 16, 16]}, "'name' must be str, got 7", id="name-type"),
    pytest.param(
        {"name": "image", "shape": [1, 3, 16, 16], "layout": "NWHC"},
        "layout='NWHC' is not one of NCHW, NHWC (did you mean 'NHWC'",
        id="layout-close-match",
    ),
    pytest.param(
        {"name": "image", "shape": [1, 3, 16, 16], "layout": "NHWC"},
        "means 16 channels; expected 1, 3 or 4 (wrong layout?)",
        id="layout-vs-shape",
    ),
    pytest.param({"name": "image", "shape": [1, 3, 16, 16], "dtype": "float64"}, "dtype='float64'", id="dtype"),
    pytest.param({"name": "image", "shape": [1, 3, 16, 16], "resize": "crop"}, "resize='crop'", id="resize"),
    pytest.param({"name": "image", "shape": [1, 3, 16, 16], "scale": "1/255"}, "'scale' must be float", id="scale"),
    pytest.param({"name": "image", "shape": [1, 3, 16, 16], "mean": [0.5, 0.5]}, "'mean' has 2 values", id="mean"),
    pytest.param({"name": "image", "shape": [1, 3, 16, 16], "std": 0}, "'std' must not contain 0", id="std-zero"),
    pytest.param({"name": "image", "shape": [1, 3, 16, 16], "std": ["a"]}, "list of numbers", id="std-type"),
]


@pytest.mark.parametrize(("data", "message"), INPUT_ERRORS)
def test_input_spec_validation(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        InputSpec.from_mapping(data, "input.toml", strict=True, exc=ConfigError)
    assert message in str(caught.value)
    assert str(caught.value).startswith("input.toml: ")


def test_input_spec_unknown_key_strict_and_lenient(caplog: pytest.LogCaptureFixture) -> None:
    data = {"name": "image", "shape": [1, 16, 16, 3], "layout": "NHWC", "colour": "BGR"}

    with pytest.raises(ConfigError, match=r"unknown key 'colour' \(did you mean 'color'.*; valid keys: color, dtype"):
        InputSpec.from_mapping(data, "input.toml", strict=True, exc=ConfigError)
    with caplog.at_level(logging.WARNING, logger="edge_runtime.bundle.fields"):
        spec = InputSpec.from_mapping(data, "manifest.json: input")

    assert "manifest.json: input: ignoring unknown key 'colour' (did you mean 'color'" in caplog.text
    assert (spec.channels, spec.height_width, spec.color) == (3, (16, 16), "RGB")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        pytest.param("spec.json", '{"shape": [1, 3, 16, 16], "layout": "NCHW"}', id="json"),
        pytest.param("spec.toml", 'shape = [1, 3, 16, 16]\nlayout = "NCHW"\n', id="toml"),
        pytest.param("spec.yaml", "shape: [1, 3, 16, 16]\nlayout: NCHW\n", id="yaml"),
        pytest.param("spec.YML", "shape:\n  - 1\n  - 3\n  - 16\n  - 16\nlayout: NCHW\n", id="yml-upper"),
    ],
)
def test_load_mapping_file(name: str, text: str, tmp_path: Path) -> None:
    if name.endswith((".yaml", ".YML")):
        pytest.importorskip("yaml", reason="YAML spec files need PyYAML (the [yaml] extra)")
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")

    assert load_mapping_file(path) == {"shape": [1, 3, 16, 16], "layout": "NCHW"}


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        pytest.param("spec.ini", "[x]\n", "unknown spec file type '.ini'; use one of .json, .toml, .yaml", id="suffix"),
        pytest.param("spec", "{}", "unknown spec file type ''", id="no-suffix"),
        pytest.param("spec.toml", "shape = [1, 3\n", "not valid TOML", id="toml-syntax"),
        pytest.param("spec.json", '{"shape": [1, 3,}', "not valid JSON", id="json-syntax"),
        pytest.param("spec.yaml", "shape: [1, 3\n", "not valid YAML", id="yaml-syntax"),
        pytest.param("spec.json", "[1, 2, 3]", "the top level must be a mapping of keys, got list", id="json-list"),
        pytest.param("spec.yaml", "", "the top level must be a mapping of keys, got NoneType", id="yaml-empty"),
        pytest.param("missing.toml", None, "no such file", id="missing"),
    ],
)
def test_load_mapping_file_errors(name: str, text: str | None, message: str, tmp_path: Path) -> None:
    if name.endswith(".yaml"):
        pytest.importorskip("yaml", reason="YAML spec files need PyYAML (the [yaml] extra)")
    path = tmp_path / name
    if text is not None:
        path.write_text(text, encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load_mapping_file(path)

    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)
