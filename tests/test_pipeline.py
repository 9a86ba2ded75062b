"""exporter.pipeline.split_model end to end: bundles written under ``tmp_path``, read back
with edge_runtime.bundle.reader.load_bundle, and run trunk → heads from the written files."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_models as m
import pytest

from edge_runtime.bundle.reader import load_bundle
from edge_runtime.errors import BundleError, ConfigError, EdgeRuntimeError, ModelError
from exporter.pipeline import SplitOptions, split_model

TOLERANCE = 1e-5


def bundle_files(root: Path) -> set[str]:
    """The bundle's files but the self-test data (tests/test_selftest.py checks those)."""
    return {
        rel
        for rel in (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        if not rel.startswith("selftest/")
    }


def run_bundle(root: Path, image: np.ndarray) -> dict[str, np.ndarray]:
    """Every head output of the bundle at ``root``: trunk, then each head, from the files."""
    bundle = load_bundle(root)
    manifest = bundle.manifest
    trunk = bundle.path_of(manifest.trunk.artifact("onnx", "fp32") or "missing")
    available = {manifest.input.name: image}
    available.update(m.run_onnx(trunk, available))
    assert set(available) == {manifest.input.name, *manifest.trunk.outputs}
    results: dict[str, np.ndarray] = {}
    for entry in manifest.heads.values():
        path = bundle.path_of(entry.artifact("onnx", "fp32") or "missing")
        got = m.run_onnx(path, {name: available[name] for name in entry.inputs})
        assert list(got) == list(entry.outputs)
        results.update(got)
    return results


@pytest.mark.parametrize(
    ("build", "heads", "boundary"),
    [
        pytest.param(m.hard_sharing, {"cls": ("cls",), "seg": ("seg",)}, ("feat",), id="hard-sharing"),
        pytest.param(m.pyramid_both, {"cls": ("cls",), "reg": ("reg",)}, ("p3", "p4"), id="pyramid"),
        pytest.param(m.shape_side_chain, {"cls": ("cls",), "seg": ("seg",)}, ("feat",), id="shape-chain"),
        pytest.param(m.shared_neck, {"head": ("boxes", "scores"), "mask": ("mask",)}, ("feat",), id="shared-neck"),
        pytest.param(m.dynamic_batch, {"cls": ("cls",), "seg": ("seg",)}, ("feat",), id="dynamic-batch"),
        pytest.param(m.opset11, {"cls": ("cls",), "sal": ("sal",)}, ("feat",), id="opset11"),
        pytest.param(m.messy_old_style, {"cls": ("cls",), "seg": ("seg",)}, ("feat",), id="messy-ir3"),
    ],
)
def test_written_bundle_reproduces_the_model(
    build: Callable[[], onnx.ModelProto],
    heads: dict[str, tuple[str, ...]],
    boundary: tuple[str, ...],
    save_model: Callable[..., Path],
    tmp_path: Path,
) -> None:
    model = build()
    source = save_model(model)
    out = tmp_path / "bundle"

    result = split_model(source, out)

    assert result.bundle_dir == out.resolve()
    assert result.plan.boundary == boundary
    manifest = load_bundle(out).manifest
    assert {name: h.outputs for name, h in manifest.heads.items()} == heads
    assert manifest.trunk.outputs == boundary
    assert bundle_files(out) == {"manifest.json", "trunk.fp32.onnx", *(f"heads/{h}.fp32.onnx" for h in heads)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "model.onnx"]  # no staging leftovers
    batch = 3 if manifest.input.dynamic_batch else 1
    image = m.random_image((batch, 3, 16, 16), seed=7)
    want = m.run_onnx(model, {"image": image})
    got = run_bundle(out, image)
    assert set(got) == set(want)
    for name, value in want.items():
        assert got[name].shape == value.shape
        np.testing.assert_allclose(got[name], value, rtol=0, atol=TOLERANCE)


def test_manifest_follows_the_contract(save_model: Callable[..., Path], tmp_path: Path) -> None:
    source = save_model(m.hard_sharing())
    out = tmp_path / "bundle"

    result = split_model(source, out)

    manifest = load_bundle(out).manifest
    assert result.manifest.heads == manifest.heads
    assert manifest.format == "edge-bundle/1"
    assert (manifest.name, manifest.version) == ("model", "1")
    assert manifest.exporter.startswith("edge-runtime ")
    assert manifest.input.to_dict() == {
        "name": "image",
        "shape": [1, 3, 16, 16],
        "dtype": "float32",
        "layout": "NCHW",
        "color": "RGB",
        "resize": "letterbox",
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
        "scale": 1.0 / 255.0,
        "dynamic_batch": False,
        "assumed": ["color", "scale", "mean", "std", "resize"],  # no input spec, no metadata: all defaulted
    }
    assert manifest.trunk.inputs == ("image",)
    assert manifest.trunk.outputs == ("feat",)
    assert [a.to_dict() for a in manifest.trunk.artifacts] == [
        {"format": "onnx", "precision": "fp32", "path": "trunk.fp32.onnx"}
    ]
    assert list(manifest.heads) == ["cls", "seg"]
    for name in ("cls", "seg"):
        head = manifest.heads[name]
        assert (head.inputs, head.outputs) == (("feat",), (name,))
        assert [a.path for a in head.artifacts] == [f"heads/{name}.fp32.onnx"]
        assert head.decoder is not None and head.decoder.type == "raw"
        assert head.schedule is not None and head.schedule.every_n_frames == 1
    assert set(manifest.files) == {
        "trunk.fp32.onnx",
        "heads/cls.fp32.onnx",
        "heads/seg.fp32.onnx",
        *(f"selftest/frame_{i}.png" for i in range(4)),
        "selftest/expected.npz",
        "selftest/expected.json",
    }
    for rel, digest in manifest.files.items():
        assert digest == "sha256:" + hashlib.sha256((out / rel).read_bytes()).hexdigest()
    assert {n: (t.dtype, t.shape) for n, t in manifest.tensors.items()} == {
        "image": ("float32", (1, 3, 16, 16)),
        "feat": ("float32", (1, 8, 16, 16)),
        "cls": ("float32", (1, 5)),
        "seg": ("float32", (1, 2, 16, 16)),
    }
    split = manifest.split
    assert split["source"] == "model.onnx"
    assert split["source_sha256"] == "sha256:" + hashlib.sha256(source.read_bytes()).hexdigest()
    assert split["boundary"] == "automatic"
    assert split["boundary_sources"] == {"feat": "feat"}
    assert (split["opset"], split["compatibility"]) == (13, [])
    assert split["verification"]["samples"] == 4
    assert split["verification"]["tolerance"] == TOLERANCE
    assert split["verification"]["max_abs_error"] <= TOLERANCE
    assert set(split["verification"]["outputs"]) == {"cls", "seg"}
    raw = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert list(raw)[:3] == ["format", "name", "version"]


def test_options_name_version_tasks_and_boundary(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    options = SplitOptions(tasks={"det": ["boxes", "scores"]}, boundary=["feat"], name="neck", version="7")

    split_model(m.shared_neck(), out, options)

    manifest = load_bundle(out).manifest
    assert (manifest.name, manifest.version) == ("neck", "7")
    assert {n: h.outputs for n, h in manifest.heads.items()} == {"det": ("boxes", "scores"), "mask": ("mask",)}
    assert manifest.split["boundary"] == "given"
    assert manifest.split["source"] == "model.onnx"


def test_generated_boundary_names_are_renamed_in_the_manifest(tmp_path: Path) -> None:
    model = m.pyramid_both("/backbone/p3/Relu_output_0", "onnx::Relu_9")

    result = split_model(model, tmp_path / "bundle")

    assert result.plan.boundary == ("/backbone/p3/Relu_output_0", "onnx::Relu_9")
    manifest = load_bundle(result.bundle_dir).manifest
    assert manifest.trunk.outputs == ("features_0", "features_1")
    assert {n: h.inputs for n, h in manifest.heads.items()} == {
        "cls": ("features_0", "features_1"),
        "reg": ("features_0", "features_1"),
    }
    assert set(manifest.tensors) == {"image", "features_0", "features_1", "cls", "reg"}
    assert manifest.tensors["features_1"].shape == (1, 8, 8, 8)
    image = m.random_image(seed=3)
    got = run_bundle(result.bundle_dir, image)
    for name, value in m.run_onnx(model, {"image": image}).items():
        np.testing.assert_allclose(got[name], value, rtol=0, atol=TOLERANCE)
    # docs/ARCHITECTURE.md: "split.boundary_sources in the manifest maps them back"
    assert manifest.split.get("boundary_sources") == {
        "features_0": "/backbone/p3/Relu_output_0",
        "features_1": "onnx::Relu_9",
    }


def test_dynamic_batch_manifest(tmp_path: Path) -> None:
    result = split_model(m.dynamic_batch(), tmp_path / "bundle")

    manifest = load_bundle(result.bundle_dir).manifest
    assert manifest.input.dynamic_batch is True
    assert manifest.input.shape == (1, 3, 16, 16)
    assert manifest.tensors["feat"].shape == ("batch", 8, 16, 16)
    trunk = onnx.load(str(result.bundle_dir / "trunk.fp32.onnx"))
    assert trunk.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


@pytest.mark.parametrize(
    ("build", "opset", "ir_version", "notes"),
    [
        pytest.param(
            m.opset11, 13, 6, ["converted opset 11 -> 13 (per-channel quantization needs opset >= 13)"], id="opset11"
        ),
        pytest.param(
            lambda: m.hard_sharing(opset=24, ir_version=12),
            23,
            11,
            [
                "converted opset 24 -> 23 (onnxruntime 1.23 (Python 3.10 devices) loads opset <= 23)",
                "IR version 12 -> 11 (onnxruntime 1.23 loads IR <= 11)",
            ],
            id="opset24-ir12",
        ),
        pytest.param(
            lambda: m.hard_sharing(opset=17, ir_version=12),
            17,
            11,
            ["IR version 12 -> 11 (onnxruntime 1.23 loads IR <= 11)"],
            id="ir12",
        ),
        pytest.param(lambda: m.hard_sharing(opset=17, ir_version=8), 17, 8, [], id="already-compatible"),
    ],
)
def test_model_is_made_device_compatible(
    build: Callable[[], onnx.ModelProto],
    opset: int,
    ir_version: int,
    notes: list[str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="exporter.compat"):
        result = split_model(build(), tmp_path / "bundle")

    manifest = load_bundle(result.bundle_dir).manifest
    assert (manifest.split["opset"], manifest.split["ir_version"]) == (opset, ir_version)
    assert manifest.split["compatibility"] == notes
    assert [r.getMessage() for r in caplog.records if r.name == "exporter.compat"] == [
        f"compatibility: {note}" for note in notes
    ]
    for rel in [r for r in manifest.files if r.endswith(".onnx")]:
        written = onnx.load(str(result.bundle_dir / rel))
        assert [(o.domain, o.version) for o in written.opset_import] == [("", opset)]
        assert written.ir_version == ir_version


def test_dynamic_image_size_needs_the_input_spec_shape(tmp_path: Path) -> None:
    model = m.dynamic_batch(height="height", width="width")

    with pytest.raises(ConfigError, match=r"dynamic dimension 2 \('height'\); give the size to use"):
        split_model(model, tmp_path / "refused")
    result = split_model(model, tmp_path / "bundle", SplitOptions(input_spec={"shape": [1, 3, 24, 20]}))

    manifest = load_bundle(result.bundle_dir).manifest
    assert manifest.input.shape == (1, 3, 24, 20)
    assert manifest.input.dynamic_batch is True
    assert not (tmp_path / "refused").exists()
    image = m.random_image((2, 3, 24, 20))
    got = run_bundle(result.bundle_dir, image)
    np.testing.assert_allclose(got["seg"], m.run_onnx(model, {"image": image})["seg"], rtol=0, atol=TOLERANCE)


def test_old_style_initializer_inputs_are_dropped(tmp_path: Path) -> None:
    result = split_model(m.messy_old_style(), tmp_path / "bundle")

    manifest = load_bundle(result.bundle_dir).manifest
    assert manifest.trunk.inputs == ("image",)
    assert manifest.split["compatibility"] == [
        "converted opset 9 -> 13 (per-channel quantization needs opset >= 13)",
        "dropped 6 initializers listed as graph inputs (old-opset export)",
    ]
    assert manifest.split["ir_version"] >= 4
    for rel in [r for r in manifest.files if r.endswith(".onnx")]:
        written = onnx.load(str(result.bundle_dir / rel))
        assert written.ir_version >= 4
        assert not {i.name for i in written.graph.input} & {t.name for t in written.graph.initializer}


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(m.hard_sharing, id="hard-sharing"),
        pytest.param(lambda: m.messy_old_style(opset=13, ir_version=7), id="initializer-inputs-opset13"),
    ],
)
def test_split_model_leaves_the_callers_model_alone(build: Callable[[], onnx.ModelProto], tmp_path: Path) -> None:
    model = build()
    before = model.SerializeToString()
    inputs = [i.name for i in model.graph.input]
    split_model(model, tmp_path / "bundle")
    assert [i.name for i in model.graph.input] == inputs
    assert model.SerializeToString() == before


HEAD_SPEC = """
[heads.cls]
decoder = { type = "classification", labels = ["a", "b", "c", "d", "e"], top_k = 3 }
schedule = { every_n_frames = 2 }
qos = 1
expiry_s = 5

[heads.seg]
decoder = { type = "segmentation", classes = ["background", "thing"] }
schedule = { every_n_frames = 1, when = { head = "cls", class_in = ["a"], min_score = 0.5 } }
"""


def test_head_spec_lands_in_the_manifest(tmp_path: Path) -> None:
    spec = tmp_path / "heads.toml"
    spec.write_text(HEAD_SPEC, encoding="utf-8")

    result = split_model(m.hard_sharing(), tmp_path / "bundle", SplitOptions(head_spec=spec))

    heads = load_bundle(result.bundle_dir).manifest.heads
    assert heads["cls"].to_dict() == {
        "inputs": ["feat"],
        "outputs": ["cls"],
        "artifacts": [{"format": "onnx", "precision": "fp32", "path": "heads/cls.fp32.onnx"}],
        "decoder": {"type": "classification", "labels": ["a", "b", "c", "d", "e"], "top_k": 3},
        "schedule": {"every_n_frames": 2},
        "qos": 1,
        "expiry_s": 5.0,
    }
    assert heads["seg"].decoder is not None and heads["seg"].decoder.type == "segmentation"
    assert heads["seg"].decoder.params == {"classes": ["background", "thing"]}
    assert heads["seg"].schedule is not None
    assert heads["seg"].schedule.when == {"head": "cls", "class_in": ["a"], "min_score": 0.5}


def test_head_spec_outputs_group_and_name_heads(tmp_path: Path) -> None:
    spec = tmp_path / "heads.json"
    spec.write_text(
        json.dumps(
            {
                "heads": {
                    "det": {"outputs": ["boxes", "scores"], "decoder": {"type": "raw"}},
                    "mask": {"decoder": {"type": "segmentation"}},
                }
            }
        ),
        encoding="utf-8",
    )

    result = split_model(m.shared_neck(), tmp_path / "bundle", SplitOptions(head_spec=spec))

    heads = load_bundle(result.bundle_dir).manifest.heads
    assert {n: (h.outputs, h.decoder.type if h.decoder else None) for n, h in heads.items()} == {
        "det": (("boxes", "scores"), "raw"),
        "mask": (("mask",), "segmentation"),
    }


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        pytest.param(
            '[heads.cls]\ndecodr = { type = "raw" }\n',
            ConfigError,
            "heads.cls: unknown key 'decodr' (did you mean 'decoder'?)",
            id="unknown-head-key",
        ),
        pytest.param(
            '[head.cls]\ndecoder = { type = "raw" }\n',
            ConfigError,
            "unknown key 'head' (did you mean 'heads'?)",
            id="unknown-top-level-key",
        ),
        pytest.param(
            '[heads.cls]\ndecoder = { type = "classifcation" }\n',
            ConfigError,
            "type='classifcation' is not one of raw, classification",
            id="unknown-decoder-type",
        ),
        pytest.param(
            '[heads.cls]\ndecoder = { type = "classification", topk = 3 }\n',
            ConfigError,
            "unknown key 'topk' (did you mean 'top_k'?)",
            id="unknown-decoder-param",
        ),
        pytest.param(
            '[heads.clss]\ndecoder = { type = "raw" }\n',
            ConfigError,
            "head 'clss' does not match any head of the model (found: cls, seg)",
            id="head-name-matches-no-head",
        ),
        pytest.param(
            "[heads.cls]\nschedule = { every_n_frames = 0 }\n",
            ConfigError,
            "'every_n_frames' must be >= 1, got 0",
            id="schedule-every-0",
        ),
        pytest.param(
            '[heads.seg]\nschedule = { when = { heed = "cls" } }\n',
            ConfigError,
            "unknown key 'heed' (did you mean 'head'?)",
            id="schedule-when-unknown-key",
        ),
        pytest.param("[heads.cls]\nqos = 3\n", ConfigError, "'qos' must be 0, 1 or 2, got 3", id="bad-qos"),
        pytest.param(
            "[heads.cls]\nexpiry_s = -1\n", ConfigError, "'expiry_s' must be a positive number", id="bad-expiry"
        ),
        pytest.param("[heads.cls]\noutputs = []\n", ConfigError, "'outputs' must be a non-empty list", id="no-outputs"),
        pytest.param(
            '[heads.classes]\noutputs = ["clss"]\n',
            ModelError,
            "task 'classes' names output 'clss', which the model does not have (did you mean 'cls'?)",
            id="unknown-output",
        ),
        pytest.param("heads = 1\n", ConfigError, "'heads' must be a table", id="heads-not-a-table"),
    ],
)
def test_head_spec_is_strict(text: str, error: type[EdgeRuntimeError], message: str, tmp_path: Path) -> None:
    spec = tmp_path / "heads.toml"
    spec.write_text(text, encoding="utf-8")
    out = tmp_path / "bundle"

    with pytest.raises(error) as caught:
        split_model(m.hard_sharing(), out, SplitOptions(head_spec=spec))

    assert message in str(caught.value)
    if error is ConfigError:
        assert str(spec) in str(caught.value)
    assert not out.exists()


def test_input_spec_files_land_in_the_manifest(tmp_path: Path) -> None:
    toml_spec = tmp_path / "input.toml"
    toml_spec.write_text(
        'color = "BGR"\nresize = "stretch"\nmean = [0.485, 0.456, 0.406]\nstd = [0.229, 0.224, 0.225]\n',
        encoding="utf-8",
    )
    json_spec = tmp_path / "input.json"
    json_spec.write_text(
        json.dumps({"name": "image", "resize": "center_crop", "scale": 1, "mean": [0.5], "std": [0.5]}),
        encoding="utf-8",
    )

    from_toml = split_model(m.hard_sharing(), tmp_path / "a", SplitOptions(input_spec=toml_spec)).manifest.input
    from_json = split_model(m.hard_sharing(), tmp_path / "b", SplitOptions(input_spec=json_spec)).manifest.input

    assert (from_toml.color, from_toml.resize, from_toml.mean, from_toml.std) == (
        "BGR",
        "stretch",
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
    )
    assert from_toml.shape == (1, 3, 16, 16)
    assert (from_json.resize, from_json.scale, from_json.mean, from_json.std) == ("center_crop", 1.0, (0.5,), (0.5,))
    assert load_bundle(tmp_path / "b").manifest.input == from_json
    assert load_bundle(tmp_path / "a").manifest.input == from_toml


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        pytest.param({"shape": [1, 3, 32, 32]}, "shape[2]=32 but the model input 'image' has 16", id="shape-mismatch"),
        pytest.param({"shape": [1, 3, 16]}, "must have 4 dims like the model input", id="shape-rank"),
        pytest.param({"name": "imag"}, "name 'imag' is not the model's input (did you mean 'image'?)", id="bad-name"),
        pytest.param({"layuot": "NCHW"}, "unknown key 'layuot' (did you mean 'layout'?)", id="unknown-key"),
        pytest.param({"layout": "NCWH"}, "layout='NCWH' is not one of NCHW, NHWC (did you mean", id="bad-layout"),
        pytest.param({"dtype": "uint8"}, "dtype 'uint8' but the model input is float32", id="dtype-mismatch"),
        pytest.param({"std": [1.0, 0.0, 1.0]}, "'std' must not contain 0", id="zero-std"),
        pytest.param({"mean": [0.1, 0.2]}, "'mean' has 2 values but the input has 3 channels", id="mean-length"),
    ],
)
def test_input_spec_is_strict(spec: dict[str, Any], message: str, tmp_path: Path) -> None:
    path = tmp_path / "input.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    out = tmp_path / "bundle"

    with pytest.raises(ConfigError) as caught:
        split_model(m.hard_sharing(), out, SplitOptions(input_spec=path))

    assert message in str(caught.value)
    assert str(path) in str(caught.value)
    assert not out.exists()


def test_calibration_frames_are_verified_too(tmp_path: Path) -> None:
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(1).uniform(-2, 2, (5, 3, 16, 16)).astype(np.float32))

    result = split_model(m.hard_sharing(), tmp_path / "bundle", SplitOptions(calib=calib))

    assert result.report.samples == 4 + 5
    assert load_bundle(result.bundle_dir).manifest.split["verification"]["samples"] == 9


@pytest.mark.parametrize(
    ("name", "frames", "message"),
    [
        pytest.param(
            "calib.npy",
            np.zeros((5, 3, 8, 8), np.float32),
            "shape (5, 3, 8, 8) float32 is neither preprocessed model inputs (N, 3, 16, 16)",
            id="wrong-shape",
        ),
        pytest.param(
            "calib.npy",
            np.zeros((3, 16, 16), np.float32),
            "is neither preprocessed model inputs",
            id="missing-batch-axis",
        ),
        pytest.param("calib.npy", np.full((2, 3, 16, 16), np.nan, np.float32), "NaN", id="nan"),
        pytest.param(
            "calib.npz",
            np.zeros((2, 3, 16, 16), np.float32),
            "neither a folder of images nor a .npy array",
            id="not-npy",
        ),
        pytest.param("missing.npy", None, "no such file", id="missing"),
        pytest.param("calib.npy", b"not numpy at all", "not a readable .npy array", id="garbage"),
    ],
)
def test_calibration_file_is_checked(name: str, frames: Any, message: str, tmp_path: Path) -> None:
    calib = tmp_path / name
    if isinstance(frames, bytes):
        calib.write_bytes(frames)
    elif frames is not None:
        with calib.open("wb") as handle:
            np.save(handle, frames)
    out = tmp_path / "bundle"

    with pytest.raises(ConfigError) as caught:
        split_model(m.hard_sharing(), out, SplitOptions(calib=calib))

    assert message in str(caught.value)
    assert str(calib) in str(caught.value)
    assert not out.exists()


def test_nothing_is_written_when_verification_fails(tmp_path: Path) -> None:
    out = tmp_path / "bundle"

    with pytest.raises(ModelError) as caught:
        split_model(m.hard_sharing(), out, SplitOptions(tolerance=-1.0))

    assert "verification failed" in str(caught.value)
    assert "Nothing was written" in str(caught.value)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_failed_forced_split_keeps_the_old_bundle(tmp_path: Path) -> None:
    out = split_model(m.hard_sharing(), tmp_path / "bundle").bundle_dir
    before = {rel: (out / rel).read_bytes() for rel in bundle_files(out)}

    with pytest.raises(ModelError, match="verification failed"):
        split_model(m.shared_neck(), out, SplitOptions(force=True, tolerance=-1.0))

    assert {rel: (out / rel).read_bytes() for rel in bundle_files(out)} == before
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_existing_output_dir_needs_force(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    (out / "sub").mkdir(parents=True)
    (out / "old.txt").write_text("keep me", encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        split_model(m.hard_sharing(), out)

    assert str(out) in str(caught.value)
    assert "directory exists and is not empty; use --force" in str(caught.value)
    assert (out / "old.txt").read_text(encoding="utf-8") == "keep me"
    assert bundle_files(out) == {"old.txt"}

    split_model(m.hard_sharing(), out, SplitOptions(force=True))

    assert bundle_files(out) == {"manifest.json", "trunk.fp32.onnx", "heads/cls.fp32.onnx", "heads/seg.fp32.onnx"}
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
    load_bundle(out)


def test_empty_output_dir_is_used(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    split_model(m.hard_sharing(), out)
    assert (out / "manifest.json").is_file()


def test_output_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    out.write_text("a file", encoding="utf-8")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        split_model(m.hard_sharing(), out, SplitOptions(force=True))
    assert out.read_text(encoding="utf-8") == "a file"


@pytest.mark.parametrize("rel", ["trunk.fp32.onnx", "heads/cls.fp32.onnx", "heads/seg.fp32.onnx"])
def test_corrupted_graph_fails_the_checksum(rel: str, tmp_path: Path) -> None:
    out = split_model(m.hard_sharing(), tmp_path / "bundle").bundle_dir
    data = bytearray((out / rel).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / rel).write_bytes(bytes(data))

    with pytest.raises(BundleError) as caught:
        load_bundle(out)

    assert str(out / rel) in str(caught.value)
    assert "checksum mismatch" in str(caught.value)
    assert load_bundle(out, verify_hashes=False).manifest.trunk.outputs == ("feat",)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        pytest.param(
            lambda d: d["files"].pop("heads/seg.fp32.onnx"),
            ": seg artifact 'heads/seg.fp32.onnx' is not listed in 'files' (no checksum)",
            id="artifact-not-listed",
        ),
        pytest.param(
            lambda d: d.update(format="edge-bundle/2"), "bundle format 'edge-bundle/2' is not supported", id="format-2"
        ),
        pytest.param(lambda d: d["trunk"].pop("outputs"), "trunk: 'outputs' must be a non-empty list", id="no-outputs"),
    ],
)
def test_edited_manifest_is_rejected(edit: Callable[[dict[str, Any]], object], message: str, tmp_path: Path) -> None:
    out = split_model(m.hard_sharing(), tmp_path / "bundle").bundle_dir
    path = out / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    edit(data)
    path.write_text(json.dumps(data), encoding="utf-8")

    with pytest.raises(BundleError) as caught:
        load_bundle(out)

    assert str(caught.value).startswith(str(path))
    assert message in str(caught.value)


def test_unreadable_manifest_is_rejected(tmp_path: Path) -> None:
    out = split_model(m.hard_sharing(), tmp_path / "bundle").bundle_dir
    (out / "manifest.json").write_text('{"format": ', encoding="utf-8")

    with pytest.raises(BundleError, match=r"manifest\.json: not a readable JSON manifest"):
        load_bundle(out)


def test_missing_parent_dirs_are_created(tmp_path: Path) -> None:
    out = tmp_path / "build" / "nested" / "bundle"
    result = split_model(m.hard_sharing(), out)
    assert result.bundle_dir == out.resolve()
    assert sorted(p.name for p in out.parent.iterdir()) == ["bundle"]


def test_missing_graph_file_is_reported(tmp_path: Path) -> None:
    out = split_model(m.hard_sharing(), tmp_path / "bundle").bundle_dir
    (out / "heads" / "seg.fp32.onnx").unlink()

    with pytest.raises(BundleError, match=r"seg\.fp32\.onnx: listed in manifest\.json but missing"):
        load_bundle(out)


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        pytest.param(m.independent_outputs, ModelError, "share no trunk", id="no-trunk"),
        pytest.param(m.two_inputs, ModelError, "2 inputs", id="two-inputs"),
    ],
)
def test_unsplittable_models_write_nothing(
    build: Callable[[], onnx.ModelProto], error: type[EdgeRuntimeError], message: str, tmp_path: Path
) -> None:
    out = tmp_path / "bundle"
    with pytest.raises(error, match=message):
        split_model(build(), out)
    assert not out.exists()
