"""The device install stays light: base dependencies, lazy imports, package data."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DEVICE_DEPENDENCIES = {"numpy", "onnxruntime", "paho-mqtt", "msgpack", "tomli"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower()


def test_base_install_is_the_device_set() -> None:
    names = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    assert names == DEVICE_DEPENDENCIES


@pytest.mark.parametrize(
    ("extra", "must_have", "must_not_have"),
    [
        ("export", {"onnx", "onnxscript"}, {"torch", "tensorflow"}),
        ("torch", {"torch", "onnx"}, {"tensorflow"}),
        ("tflite", {"ai-edge-litert"}, {"torch", "tensorflow"}),
        ("yaml", {"pyyaml"}, set()),
    ],
)
def test_extras(extra: str, must_have: set[str], must_not_have: set[str]) -> None:
    names = {_name(r) for r in PYPROJECT["project"]["optional-dependencies"][extra]}
    assert must_have <= names
    assert not (must_not_have & names)


def test_torch_is_pinned_to_the_cpu_wheel_on_disk() -> None:
    assert "torch==2.13.0" in PYPROJECT["project"]["optional-dependencies"]["torch"]


@pytest.mark.parametrize(
    ("statement", "forbidden"),
    [
        (
            "import edge_runtime, edge_runtime.bundle.reader, edge_runtime.cli",
            ("onnx", "torch", "tensorflow", "exporter"),
        ),
        ("import exporter, exporter.cli", ("torch", "tensorflow")),
    ],
)
def test_heavy_frameworks_are_imported_lazily(statement: str, forbidden: tuple[str, ...]) -> None:
    code = f"{statement}\nimport sys\nprint(sorted(m for m in {forbidden!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]", f"{statement} imported {done.stdout.strip()}"


def test_typed_packages() -> None:
    for package in ("edge_runtime", "exporter"):
        assert (ROOT / package / "py.typed").exists()


def test_device_profiles_are_package_data() -> None:
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["edge_runtime"]
    assert "ops/profiles/*.toml" in patterns
    assert len(list((ROOT / "edge_runtime" / "ops" / "profiles").glob("*.toml"))) >= 6
