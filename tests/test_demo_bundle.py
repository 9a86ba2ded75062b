"""The committed demo model splits into the bundle `make demo` builds, and that bundle
loads and runs on the oldest device runtime (onnxruntime 1.23, Python 3.10 aarch64)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edge_runtime.bundle.reader import load_bundle
from exporter.pipeline import SplitResult

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture
def demo(demo_split: SplitResult) -> SplitResult:
    return demo_split


def test_demo_model_is_small_and_multi_output() -> None:
    path = EXAMPLES / "demo_multitask.onnx"
    assert path.stat().st_size < 5 * 1024 * 1024
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["shape_logits", "box", "mask_logits"]


def test_demo_bundle_manifest(demo: SplitResult) -> None:
    manifest = load_bundle(demo.bundle_dir).manifest
    assert manifest.format == "edge-bundle/1"
    # The exporter-generated boundary name is replaced by a readable one, mapped back.
    assert manifest.trunk.outputs == ("features",)
    assert manifest.split["boundary_sources"] == {"features": demo.plan.boundary[0]}
    assert set(manifest.heads) == {"shape", "box", "mask"}
    assert manifest.heads["shape"].decoder is not None
    assert manifest.heads["shape"].decoder.type == "classification"
    assert manifest.heads["shape"].decoder.params["labels"] == ["circle", "square", "triangle"]
    assert manifest.heads["mask"].decoder is not None
    assert manifest.heads["mask"].decoder.type == "segmentation"
    assert manifest.heads["mask"].schedule is not None
    assert manifest.heads["mask"].schedule.every_n_frames == 2
    # The mask head resizes to the input size: it reads the image as well as the features,
    # and the Shape side-chain does not leak int64 tensors into the boundary.
    assert "image" in manifest.heads["mask"].inputs
    assert all(manifest.tensors[t].dtype == "float32" for t in manifest.trunk.outputs)
    assert manifest.input.mean == (0.485, 0.456, 0.406)
    assert manifest.input.dynamic_batch is True
    assert demo.report.max_abs_error <= 1e-5


def test_demo_bundle_runs_on_onnxruntime_1_23(demo: SplitResult, tmp_path: Path) -> None:
    """Trunk then heads, loaded by onnxruntime 1.23 in a side virtualenv, reproduce the
    original model as run by the main environment's onnxruntime."""
    side_python = os.environ.get("EDGE_ORT_OLD_PYTHON")
    if not side_python:
        pytest.skip("EDGE_ORT_OLD_PYTHON is not set: run through `make test`, which builds .venv-ort123")
    assert Path(side_python).exists(), f"EDGE_ORT_OLD_PYTHON={side_python} does not exist"
    rng = np.random.default_rng(1)
    image = rng.standard_normal((2, 3, 128, 128)).astype(np.float32)
    original = ort.InferenceSession(str(EXAMPLES / "demo_multitask.onnx"), providers=["CPUExecutionProvider"])
    expected = dict(zip([o.name for o in original.get_outputs()], original.run(None, {"image": image}), strict=True))
    np.savez(tmp_path / "case.npz", image=image, **expected)
    script = textwrap.dedent(
        """
        import json, sys
        import numpy as np, onnxruntime as ort
        bundle, case = sys.argv[1], np.load(sys.argv[2])
        manifest = json.load(open(bundle + "/manifest.json"))
        def session(entry):
            path = bundle + "/" + entry["artifacts"][0]["path"]
            return ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        trunk = manifest["trunk"]
        values = {"image": case["image"]}
        values.update(zip(trunk["outputs"], session(trunk).run(trunk["outputs"], {"image": case["image"]})))
        worst = 0.0
        for name, head in manifest["heads"].items():
            outs = session(head).run(head["outputs"], {i: values[i] for i in head["inputs"]})
            for out_name, value in zip(head["outputs"], outs):
                worst = max(worst, float(np.abs(value - case[out_name]).max()))
        print(json.dumps({"version": ort.__version__, "max_abs_error": worst}))
        """
    )
    done = subprocess.run(
        [side_python, "-c", script, str(demo.bundle_dir), str(tmp_path / "case.npz")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["version"].startswith("1.23."), result
    assert result["max_abs_error"] <= 1e-4, result


def test_make_demo_command_line(tmp_path: Path) -> None:
    """The exact commands `make demo` runs succeed and print the demo heads."""
    out = tmp_path / "demo_bundle"
    split = subprocess.run(
        [
            sys.executable, "-m", "exporter.cli", "split", str(EXAMPLES / "demo_multitask.onnx"),
            "-o", str(out), "--input-spec", str(EXAMPLES / "demo_input.toml"),
            "--head-spec", str(EXAMPLES / "demo_heads.toml"), "--force",
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert split.returncode == 0, split.stderr
    assert "[7/7] writing bundle done" in split.stderr
    shown = subprocess.run(
        [sys.executable, "-m", "exporter.cli", "inspect", str(out)], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    for head in ("head:shape", "head:box", "head:mask", "classification", "segmentation"):
        assert head in shown.stdout


def test_demo_model_is_trained() -> None:
    """Quantization fidelity is meaningless on random weights: the committed model must
    actually solve its tasks on fresh synthetic frames (run here through the bundle)."""
    pytest.importorskip("torch")
    sys.path.insert(0, str(ROOT))
    from examples.train_demo_model import make_frames, normalise

    images, classes, _boxes, masks = make_frames(64, seed=424242)
    session = ort.InferenceSession(str(EXAMPLES / "demo_multitask.onnx"), providers=["CPUExecutionProvider"])
    logits, _box, mask_logits = session.run(None, {"image": normalise(images)})
    accuracy = float((logits.argmax(1) == classes).mean())
    pixel_accuracy = float((mask_logits.argmax(1) == masks).mean())
    assert accuracy >= 0.9, accuracy
    assert pixel_accuracy >= 0.95, pixel_accuracy
