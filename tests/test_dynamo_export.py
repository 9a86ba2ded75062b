"""A model exported by torch's default (dynamo) exporter, with its opaque tensor names,
opset >= 18 and weights in a separate ``.onnx.data`` file, splits and verifies like any
other ONNX file (docs/ARCHITECTURE.md, Traps measured here: "real exported models are messy")."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import pytest

from edge_runtime.bundle.reader import load_bundle
from exporter.pipeline import SplitOptions, split_model

torch = pytest.importorskip("torch")
nn = torch.nn


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU()
        )
        self.cls = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
        self.seg = nn.Conv2d(16, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.backbone(x)
        return self.cls(f), nn.functional.interpolate(self.seg(f), size=x.shape[-2:], mode="bilinear")


def test_dynamo_exported_model_splits(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "dynamo.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Net().eval(), (torch.randn(1, 3, 32, 32),), str(path), dynamo=True, external_data=True,
            input_names=["image"], output_names=["logits", "mask"],
        )  # fmt: skip
    source = onnx.load(str(path), load_external_data=False)
    opset = next(o.version for o in source.opset_import if o.domain in ("", "ai.onnx"))
    assert opset >= 18
    result = split_model(path, tmp_path / "bundle", SplitOptions())
    manifest = load_bundle(result.bundle_dir).manifest
    assert set(manifest.heads) == {"logits", "mask"}
    # The boundary is the backbone's last feature map (16 channels at 1/4 resolution).
    (boundary,) = manifest.trunk.outputs
    assert manifest.tensors[boundary].shape == (1, 16, 8, 8)
    assert manifest.heads["mask"].inputs[-1] == boundary
    assert result.report.max_abs_error <= 1e-5
    assert not list(result.bundle_dir.rglob("*.data"))
