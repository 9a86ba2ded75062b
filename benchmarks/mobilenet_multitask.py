"""A MobileNetV2-sized multi-task model for latency benchmarks (random weights).

The daemon issue's ratio targets apply to a realistic trunk (>= 2 ms), where the fixed
per-call cost of extra sessions is small next to the trunk; the tiny demo model is
dominated by those fixed costs. This builds a MobileNetV2 (width 1.0, 224x224) backbone
with three heads (classification, box regression, a small segmentation decoder) and
exports it to ONNX. Weights are random: only latency is measured with it.

Usage::

    python benchmarks/mobilenet_multitask.py -o build/mbv2_multitask.onnx
    python benchmarks/compare.py build/mbv2_multitask.onnx --seconds 60
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

# (expansion t, channels c, repeats n, stride s) of MobileNetV2
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _conv(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, t: int) -> None:
        super().__init__()
        hidden = cin * t
        layers: list[nn.Module] = [] if t == 1 else [_conv(cin, hidden, 1)]
        layers += [_conv(hidden, hidden, 3, stride, groups=hidden), _conv(hidden, cout, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2MultiTask(nn.Module):
    """``trunk``: MobileNetV2 features (N, 1280, 7, 7); ``heads``: cls, box, seg."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv(3, 32, 3, 2)]
        cin = 32
        for t, c, n, s in SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv(cin, 1280, 1))
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleDict(
            {
                "cls": nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, classes)),
                "box": nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1280, 4), nn.Sigmoid()),
                "seg": nn.Sequential(
                    _conv(1280, 64, 1), nn.Upsample(scale_factor=2), _conv(64, 32), nn.Upsample(scale_factor=2),
                    nn.Conv2d(32, 2, 1),
                ),
            }
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.trunk(x)
        return self.heads["cls"](f), self.heads["box"](f), self.heads["seg"](f)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, default=Path("build/mbv2_multitask.onnx"))
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = MobileNetV2MultiTask().eval()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (torch.randn(1, 3, 224, 224),), str(args.output), dynamo=False, opset_version=17,
            input_names=["image"], output_names=["cls", "box", "seg"],
        )  # fmt: skip
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
