"""exporter.frontends.torch: small nn.Modules exported, split and verified end to end."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the PyTorch frontend needs the [torch] extra (torch==2.13.0)")

from edge_runtime.bundle.reader import load_bundle  # noqa: E402
from edge_runtime.errors import ConfigError, ModelError  # noqa: E402
from exporter.frontends.torch import load_torch_module, split_torch_model  # noqa: E402
from exporter.pipeline import SplitOptions  # noqa: E402

nn = torch.nn
INPUT = {"shape": [1, 3, 16, 16]}


class StructuredNet(nn.Module):
    """``trunk`` + ``heads`` ModuleDict: the frontend follows this structure exactly."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.heads = nn.ModuleDict(
            {
                "label": nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)),
                "mask": nn.Conv2d(8, 2, 1),
            }
        )

    def forward(self, x: Any) -> tuple[Any, Any]:
        features = self.trunk(x)
        return self.heads["label"](features), self.heads["mask"](features)


class PlainNet(nn.Module):
    """No ``trunk``/``heads`` attributes; outputs as a dict: split automatically."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.classify = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
        self.segment = nn.Conv2d(8, 2, 1)

    def forward(self, x: Any) -> dict[str, Any]:
        f = self.body(x)
        return {"logits": self.classify(f), "seg": self.segment(f)}


class Pyramid(nn.Module):
    """Two feature levels, as a tuple or as a dict."""

    def __init__(self, as_dict: bool) -> None:
        super().__init__()
        self.as_dict = as_dict
        self.c3 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.c4 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.ReLU())

    def forward(self, x: Any) -> Any:
        p3 = self.c3(x)
        p4 = self.c4(p3)
        return {"p3": p3, "p4": p4} if self.as_dict else (p3, p4)


class DetHead(nn.Module):
    """Two outputs from the coarse level."""

    def __init__(self) -> None:
        super().__init__()
        self.box = nn.Conv2d(8, 4, 1)
        self.score = nn.Conv2d(8, 3, 1)

    def forward(self, levels: Any) -> tuple[Any, Any]:
        p4 = levels["p4"] if isinstance(levels, dict) else levels[1]
        return self.box(p4), self.score(p4).sigmoid()


class LevelsHead(nn.Module):
    """A classifier reading both levels."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 5)

    def forward(self, levels: Any) -> Any:
        p3, p4 = (levels["p3"], levels["p4"]) if isinstance(levels, dict) else levels
        return self.fc(torch.cat([p3.mean((2, 3)), p4.mean((2, 3))], 1))


class PyramidNet(nn.Module):
    def __init__(self, as_dict: bool) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.trunk = Pyramid(as_dict)
        self.heads = nn.ModuleDict({"det": DetHead(), "cls": LevelsHead()})

    def forward(self, x: Any) -> tuple[Any, Any, Any]:
        levels = self.trunk(x)
        boxes, scores = self.heads["det"](levels)
        return boxes, scores, self.heads["cls"](levels)


def run_bundle(root: Path, image: np.ndarray) -> dict[str, np.ndarray]:
    import onnx_models as m

    bundle = load_bundle(root)
    manifest = bundle.manifest
    available = {manifest.input.name: image}
    available.update(m.run_onnx(bundle.root / "trunk.fp32.onnx", available))
    results: dict[str, np.ndarray] = {}
    for name, entry in manifest.heads.items():
        results.update(m.run_onnx(bundle.root / f"heads/{name}.fp32.onnx", {n: available[n] for n in entry.inputs}))
    return results


def test_structured_module_uses_its_own_boundary_and_heads(tmp_path: Path) -> None:
    net = StructuredNet().eval()

    result = split_torch_model(net, tmp_path / "bundle", SplitOptions(input_spec=INPUT))

    assert result.plan.automatic is False
    assert result.plan.boundary == ("features",)
    assert {h.name: h.outputs for h in result.plan.heads} == {"label": ("label",), "mask": ("mask",)}
    assert result.report.max_abs_error <= 1e-5
    manifest = load_bundle(result.bundle_dir).manifest
    assert manifest.split["boundary"] == "given"
    assert manifest.split["source"] == "StructuredNet.onnx"
    assert manifest.input.name == "image"
    assert manifest.input.dynamic_batch is True
    assert manifest.tensors["features"].shape == ("batch", 8, 16, 16)

    image = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        label, mask = net(torch.from_numpy(image))
    got = run_bundle(result.bundle_dir, image)
    np.testing.assert_allclose(got["label"], label.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(got["mask"], mask.numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    ("as_dict", "boundary"),
    [pytest.param(False, ("features_0", "features_1"), id="tuple"), pytest.param(True, ("p3", "p4"), id="dict")],
)
def test_structured_pyramid_groups_head_outputs(as_dict: bool, boundary: tuple[str, ...], tmp_path: Path) -> None:
    net = PyramidNet(as_dict).eval()

    result = split_torch_model(net, tmp_path / "bundle", SplitOptions(input_spec=INPUT))

    assert result.plan.automatic is False
    assert result.plan.boundary == boundary
    heads = {h.name: h for h in result.plan.heads}
    assert set(heads) == {"det", "cls"}
    assert len(heads["det"].outputs) == 2
    assert len(heads["cls"].outputs) == 1
    assert heads["det"].inputs == boundary[1:]
    assert heads["cls"].inputs == boundary
    assert result.report.max_abs_error <= 1e-5


def test_plain_module_is_split_automatically(tmp_path: Path) -> None:
    result = split_torch_model(PlainNet(), tmp_path / "bundle", SplitOptions(input_spec=INPUT))

    assert result.plan.automatic is True
    assert len(result.plan.boundary) == 1
    assert {h.name: h.outputs for h in result.plan.heads} == {"logits": ("logits",), "seg": ("seg",)}
    assert result.report.max_abs_error <= 1e-5
    manifest = load_bundle(result.bundle_dir).manifest
    assert manifest.split["boundary"] == "automatic"
    assert manifest.trunk.outputs == ("features",)  # the generated name, renamed in the bundle
    assert {n: h.inputs for n, h in manifest.heads.items()} == {"logits": ("features",), "seg": ("features",)}
    image = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    got = run_bundle(result.bundle_dir, image)
    net = PlainNet().eval()
    with torch.no_grad():
        want = net(torch.from_numpy(image))
    np.testing.assert_allclose(got["logits"], want["logits"].numpy(), atol=1e-4, rtol=0)


FACTORY = """
import torch


class FileNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.trunk = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
        self.heads = torch.nn.ModuleDict({"a": torch.nn.Conv2d(4, 1, 1), "b": torch.nn.Conv2d(4, 2, 1)})

    def forward(self, x):
        f = self.trunk(x)
        return self.heads["a"](f), self.heads["b"](f)


def build():
    return FileNet()


NOT_A_MODULE = 42
"""


def test_module_from_python_file(tmp_path: Path) -> None:
    source = tmp_path / "edge_test_factory_net.py"
    source.write_text(textwrap.dedent(FACTORY), encoding="utf-8")

    module = load_torch_module(f"{source}:build")

    assert type(module).__name__ == "FileNet"
    result = split_torch_model(f"{source}:build", tmp_path / "bundle", SplitOptions(input_spec=INPUT))
    assert result.plan.boundary == ("features",)
    assert [h.name for h in result.plan.heads] == ["a", "b"]
    assert load_bundle(result.bundle_dir).manifest.split["source"] == "edge_test_factory_net.onnx"


def test_saved_module_file(tmp_path: Path) -> None:
    path = tmp_path / "net.pt"
    torch.save(PlainNet(), path)

    module = load_torch_module(str(path))

    assert isinstance(module, PlainNet)


@pytest.mark.parametrize(
    ("make", "spec", "error", "message"),
    [
        pytest.param("state_dict", "weights.pt", ModelError, "holds a state_dict (weights only)", id="state-dict"),
        pytest.param("tensor", "tensor.pt", ModelError, "holds a Tensor, not a torch.nn.Module", id="tensor-file"),
        pytest.param("garbage", "garbage.pt", ModelError, "not a PyTorch model file", id="garbage-file"),
        pytest.param(None, "missing.pt", ModelError, "missing.pt: no such file", id="missing-pt"),
        pytest.param(None, "missing.py:build", ModelError, "missing.py: no such file", id="missing-py"),
        pytest.param("factory", "edge_test_factory_err.py:nothing", ModelError, "has no attribute", id="no-attr"),
        pytest.param(
            "factory", "edge_test_factory_err.py:NOT_A_MODULE", ModelError, "returned a int", id="not-a-module"
        ),
        pytest.param(None, "no_such_pkg_xyz.models:build", ModelError, "cannot import", id="bad-import"),
        pytest.param(None, "model.bin", ConfigError, "expected an .onnx file, a .pt/.pth file", id="bad-spec"),
    ],
)
def test_load_torch_module_errors(
    make: str | None, spec: str, error: type[Exception], message: str, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.chdir(tmp_path)
    target = tmp_path / spec.split(":")[0]
    if make == "state_dict":
        torch.save(PlainNet().state_dict(), target)
    elif make == "tensor":
        torch.save(torch.zeros(3), target)
    elif make == "garbage":
        target.write_bytes(b"\x00not a pickle or zip")
    elif make == "factory":
        target.write_text(textwrap.dedent(FACTORY), encoding="utf-8")

    with pytest.raises(error) as caught:
        load_torch_module(spec)

    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("input_spec", "message"),
    [
        pytest.param(None, "a PyTorch model needs --input-spec with the input 'shape'", id="no-spec"),
        pytest.param({"layout": "NCHW"}, "'shape' must list the input size", id="no-shape"),
        pytest.param({"shape": [1, 3, 0, 16]}, "'shape' must list the input size", id="zero-dim"),
        pytest.param({"shape": "1,3,16,16"}, "'shape' must list the input size", id="shape-string"),
    ],
)
def test_input_shape_is_required(input_spec: dict[str, Any] | None, message: str, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    with pytest.raises(ConfigError) as caught:
        split_torch_model(StructuredNet(), out, SplitOptions(input_spec=input_spec))
    assert message in str(caught.value)
    assert not out.exists()


def test_input_spec_file_gives_the_shape(tmp_path: Path) -> None:
    spec = tmp_path / "input.toml"
    spec.write_text('shape = [1, 3, 16, 16]\ncolor = "BGR"\n', encoding="utf-8")

    result = split_torch_model(PlainNet(), tmp_path / "bundle", SplitOptions(input_spec=spec))

    assert result.manifest.input.color == "BGR"
    assert result.manifest.input.shape == (1, 3, 16, 16)
