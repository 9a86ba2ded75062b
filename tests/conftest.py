"""Shared fixtures: ONNX model files written under ``tmp_path``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx
import pytest


@pytest.fixture
def save_model(tmp_path: Path) -> Callable[..., Path]:
    """``save_model(model, "name.onnx")`` writes the model under ``tmp_path`` and returns its path."""

    def save(model: onnx.ModelProto, name: str = "model.onnx") -> Path:
        path = tmp_path / name
        path.write_bytes(model.SerializeToString())
        return path

    return save
