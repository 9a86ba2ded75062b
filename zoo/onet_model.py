"""MTCNN's O-Net (facenet-pytorch 2.6.0) as a ``trunk`` + ``heads`` module for the PyTorch frontend.

The layers are those of ``facenet_pytorch/models/mtcnn.py:100-154`` (``class ONet``), defined here
rather than imported (the package imports torchvision at import time); the weights are the
package's own ``facenet_pytorch/data/onet.pt``, a state dict whose keys (``conv1.weight`` …
``dense6_3.bias``) are mapped onto this module's ``trunk.*`` / ``heads.*`` and loaded strictly.

- ``trunk``: conv1-prelu1-pool1 … conv4-prelu4, the package's ``permute(0, 3, 2, 1)`` flattening
  (W, H, C order), ``dense5`` + ``prelu5`` → the 256 shared features (the split's boundary);
- ``heads``: ``box`` (``dense6_2``, box regression, 4 values), ``landmarks`` (``dense6_3``, 5 x then
  5 y in 0..1 of the input crop) and ``prob`` (``dense6_1`` + softmax, column 1 = face).

``forward`` returns ``(box, landmarks, prob)``: the frontend names the ONNX outputs after the heads.
The package itself returns ``(b, c, a)`` = (box, landmarks, prob): the same order.

Weights: ``$EDGE_ZOO_ONET_WEIGHTS``, else where ``zoo/fetch.py`` extracts the wheel's member:
``<cache>/zoo/files/facenet_pytorch-2.6.0-py3-none-any/facenet_pytorch/data/onet.pt`` (``<cache>`` =
``$EDGE_EXPORT_CACHE`` or ``~/.cache/edge-runtime``).

Example::

    edge-export split zoo/onet_model.py:build -o build/onet --input-spec examples/zoo/mtcnn-onet/input.toml \\
        --head-spec examples/zoo/mtcnn-onet/heads.toml
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

WEIGHTS_ENV = "EDGE_ZOO_ONET_WEIGHTS"
#: where zoo/fetch.py extracts the wheel's members, under the zoo cache
WEIGHTS_IN_CACHE = "files/facenet_pytorch-2.6.0-py3-none-any/facenet_pytorch/data/onet.pt"
#: the package's O-Net head layers → this module's head names
HEAD_LAYERS = {"dense6_2": "box", "dense6_3": "landmarks", "dense6_1": "prob"}


class ONetTrunk(nn.Module):
    """O-Net up to ``prelu5``: a 1x3x48x48 normalised RGB crop → (1, 256) features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        # the package flattens in W, H, C order (its weights come from a TF/Caffe model)
        x = x.permute(0, 3, 2, 1).flatten(1)
        return self.prelu5(self.dense5(x))


class ONet(nn.Module):
    """O-Net with the frontend's structure: ``trunk`` then the ``box``, ``landmarks`` and ``prob`` heads."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = ONetTrunk()
        self.heads = nn.ModuleDict(
            {
                "box": nn.Linear(256, 4),
                "landmarks": nn.Linear(256, 10),
                "prob": nn.Sequential(nn.Linear(256, 2), nn.Softmax(dim=1)),
            }
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.trunk(x)
        return self.heads["box"](features), self.heads["landmarks"](features), self.heads["prob"](features)


def map_package_keys(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The package's O-Net state-dict keys → this module's (``conv1.weight`` → ``trunk.conv1.weight``,
    ``dense6_1.bias`` → ``heads.prob.0.bias``, …)."""
    mapped: dict[str, Any] = {}
    for key, value in state_dict.items():
        layer, _, param = key.partition(".")
        head = HEAD_LAYERS.get(layer)
        if head is None:
            mapped[f"trunk.{key}"] = value
        elif head == "prob":
            mapped[f"heads.prob.0.{param}"] = value
        else:
            mapped[f"heads.{head}.{param}"] = value
    return mapped


def default_weights() -> Path:
    """Where ``onet.pt`` is read from: ``$EDGE_ZOO_ONET_WEIGHTS`` or the zoo cache."""
    if os.environ.get(WEIGHTS_ENV):
        return Path(os.environ[WEIGHTS_ENV])
    if os.environ.get("EDGE_EXPORT_CACHE"):
        cache = Path(os.environ["EDGE_EXPORT_CACHE"])
    else:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edge-runtime"
    return cache / "zoo" / WEIGHTS_IN_CACHE


def load(weights: str | Path | None = None) -> ONet:
    """O-Net in eval mode with the package's weights (strict: every key used, none missing)."""
    path = Path(weights) if weights is not None else default_weights()
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: O-Net weights not found. They ship in the facenet-pytorch 2.6.0 wheel "
            "(facenet_pytorch/data/onet.pt): run zoo/mtcnn.py, or `pip download --no-deps "
            f"facenet-pytorch==2.6.0`, extract onet.pt and set {WEIGHTS_ENV}=/path/to/onet.pt"
        )
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    net = ONet()
    net.load_state_dict(map_package_keys(state), strict=True)
    return net.eval()


def build() -> nn.Module:
    """The ``module:callable`` of ``edge-export split zoo/onet_model.py:build``."""
    return load()
