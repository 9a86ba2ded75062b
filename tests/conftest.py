"""Shared fixtures: ONNX model files written under ``tmp_path``, the demo bundle (built once by
``make test-fixtures`` into ``build/test-fixtures``, else split once per test session from the
committed demo model and its specs), and ``broker``: a started MQTT broker (mosquitto, else the
amqtt fallback; see ``tests/broker.py``).

Nothing here imports onnx or the exporter at module level, so the runtime tests run where only the
device install is (``make test-device``). Tests that need the exporter are marked ``exporter`` at
collection: their module imports onnx, the exporter, torch, TensorFlow or a test helper that does,
or they use a fixture that needs onnx (``EXPORTER_FIXTURES``). Where onnx is not installed those
modules are not even imported (``pytest_ignore_collect``).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from tests.broker import BrokerProcess, started_broker
from tests.fixtures import DEMO_INT8_BUNDLE, fresh_demo_bundle, quantize_demo, split_demo

if TYPE_CHECKING:
    import onnx

    from exporter.pipeline import SplitResult

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
EXAMPLES = ROOT / "examples"
# Where `make test-fixtures` writes the prebuilt bundles (`python -m tests.fixtures DIR`).
FIXTURES = Path(os.environ.get("EDGE_TEST_FIXTURES") or ROOT / "build" / "test-fixtures")
# Top-level packages that only the exporter side installs.
EXPORTER_PACKAGES = frozenset({"onnx", "onnxscript", "exporter", "torch", "tensorflow"})
# Fixtures that need onnx or the exporter (``prepared_checkout``, ``compare_run``: scripts that import it;
# ``tflite_models``: built in the exporter's converter environment).
EXPORTER_FIXTURES = frozenset({"save_model", "demo_split", "prepared_checkout", "compare_run", "tflite_models"})
# Tests (``file::function``) that run ``edge-export`` or a script importing onnx in a subprocess.
EXPORTER_TESTS = frozenset(
    {
        "test_bench_scripts.py::test_compare_rejects_an_unknown_skip_group",
        "test_demo_end_to_end.py::test_demo_delivers_every_result",
    }
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "mqtt5: needs an MQTT 5 broker; the broker fixture skips it on amqtt (3.1.1 only)"
    )


@cache
def imports_exporter(path: Path) -> bool:
    """Whether the module at ``path`` imports (at module level) a package of ``EXPORTER_PACKAGES``,
    directly or through a helper module of tests/ that does."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return False
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
            if node.module == "tests":
                names += [f"tests.{alias.name}" for alias in node.names]
    for name in names:
        if name.split(".")[0] in EXPORTER_PACKAGES:
            return True
        # A helper is imported as ``tests.onnx_models`` or, with tests/ on sys.path, ``onnx_models``.
        helper = TESTS / f"{name.removeprefix('tests.')}.py"
        if "." not in name.removeprefix("tests.") and helper.is_file() and helper != path and imports_exporter(helper):
            return True
    return False


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Without onnx (the device install), test modules that import the exporter side are not imported."""
    if collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        if importlib.util.find_spec("onnx") is None and imports_exporter(collection_path):
            return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``exporter`` the tests that need onnx or the exporter (module imports, fixtures, subprocesses)."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        name = f"{Path(item.path).name}::{getattr(item, 'originalname', item.name)}"
        if imports_exporter(Path(item.path)) or fixtures & EXPORTER_FIXTURES or name in EXPORTER_TESTS:
            item.add_marker(pytest.mark.exporter)


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
    from exporter.pipeline import SplitOptions, split_model

    return split_model(
        EXAMPLES / "demo_multitask.onnx",
        tmp_path_factory.mktemp("demo") / "bundle",
        SplitOptions(input_spec=EXAMPLES / "demo_input.toml", head_spec=EXAMPLES / "demo_heads.toml"),
    )


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory of the demo bundle (read-only: copy it before changing anything): a session
    copy of ``$EDGE_TEST_FIXTURES/demo_bundle`` when that is fresh, else split here by the exporter."""
    target = tmp_path_factory.mktemp("demo") / "bundle"
    built = fresh_demo_bundle(FIXTURES)
    if built is not None:
        return Path(shutil.copytree(built, target))
    if importlib.util.find_spec("onnx") is None:
        pytest.fail(f"no fresh demo bundle in {FIXTURES} and no onnx to build one: run `make test-fixtures`")
    return split_demo(target)


@pytest.fixture(scope="session")
def demo_int8_bundle(demo_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo bundle with INT8 ONNX graphs beside the FP32 ones (read-only): a session copy of
    ``$EDGE_TEST_FIXTURES/demo_bundle_int8`` when that is fresh, else quantized here."""
    target = tmp_path_factory.mktemp("demo-int8") / "bundle"
    built = fresh_demo_bundle(FIXTURES, DEMO_INT8_BUNDLE)
    if built is not None:
        return Path(shutil.copytree(built, target))
    if importlib.util.find_spec("onnx") is None:
        pytest.fail(f"no fresh INT8 demo bundle in {FIXTURES} and no onnx to build one: run `make test-fixtures`")
    return quantize_demo(demo_bundle, target)


@pytest.fixture(scope="session")
def tflite_models(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of ``tests/tflite_models.py``'s small TFLite models and ``reference.npz``, built
    once in the onnx2tf converter environment (TensorFlow) and kept in pytest's cache by the
    script's hash; skips when that environment cannot be made."""
    import hashlib
    import tempfile

    from exporter.toolenv import ToolEnvError, ensure_env

    script = Path(__file__).with_name("tflite_models.py")
    digest = hashlib.sha256(script.read_bytes()).hexdigest()[:12]
    cache_ = getattr(request.config, "cache", None)
    root = cache_.mkdir("tflite-models") if cache_ is not None else tmp_path_factory.mktemp("tflite-models")
    folder = root / digest
    if (folder / "reference.npz").is_file():
        return folder
    try:
        env = ensure_env("onnx2tf")
    except (ToolEnvError, OSError) as exc:
        pytest.skip(f"no TensorFlow converter environment to build the test .tflite models: {exc}")
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        env.run([str(script), str(Path(tmp) / "out")], cwd=Path(tmp), what="tests/tflite_models.py")
        shutil.rmtree(folder, ignore_errors=True)
        (Path(tmp) / "out").rename(folder)
    return folder


def write_npy_frames(folder: Path, count: int, height: int, width: int, seed: int) -> Path:
    """``count`` random RGB frames as ``.npy`` files (a folder source readable without OpenCV)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        np.save(folder / f"{i:03d}.npy", rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return folder
