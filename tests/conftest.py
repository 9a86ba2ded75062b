"""Shared fixtures: ONNX model files written under ``tmp_path``, the demo bundle (split once
per test session from the committed demo model and its specs), and ``broker``: a started MQTT
broker (mosquitto, else the amqtt fallback; see ``tests/broker.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest

from exporter.pipeline import SplitOptions, SplitResult, split_model
from tests.broker import BrokerProcess, started_broker

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "mqtt5: needs an MQTT 5 broker; the broker fixture skips it on amqtt (3.1.1 only)"
    )


@pytest.fixture
def broker(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[BrokerProcess]:
    """A started broker on a free 127.0.0.1 port (``.port``, ``.url``, ``.stop()``, ``.start()``,
    ``.kill()``): mosquitto when installed, else amqtt, else skipped. ``EDGE_TEST_BROKER=amqtt``
    forces the fallback; tests marked ``mqtt5`` are skipped on a broker without MQTT 5."""
    yield from started_broker(tmp_path, mqtt5=request.node.get_closest_marker("mqtt5") is not None)


@pytest.fixture
def save_model(tmp_path: Path) -> Callable[..., Path]:
    """``save_model(model, "name.onnx")`` writes the model under ``tmp_path`` and returns its path."""

    def save(model: onnx.ModelProto, name: str = "model.onnx") -> Path:
        path = tmp_path / name
        path.write_bytes(model.SerializeToString())
        return path

    return save


@pytest.fixture(scope="session")
def demo_split(tmp_path_factory: pytest.TempPathFactory) -> SplitResult:
    """``examples/demo_multitask.onnx`` split with the demo input and head specs."""
    return split_model(
        EXAMPLES / "demo_multitask.onnx",
        tmp_path_factory.mktemp("demo") / "bundle",
        SplitOptions(input_spec=EXAMPLES / "demo_input.toml", head_spec=EXAMPLES / "demo_heads.toml"),
    )


@pytest.fixture(scope="session")
def demo_bundle(demo_split: SplitResult) -> Path:
    """The directory of the demo bundle (read-only: copy it before changing anything)."""
    return demo_split.bundle_dir


def write_npy_frames(folder: Path, count: int, height: int, width: int, seed: int) -> Path:
    """``count`` random RGB frames as ``.npy`` files (a folder source readable without OpenCV)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        np.save(folder / f"{i:03d}.npy", rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return folder
