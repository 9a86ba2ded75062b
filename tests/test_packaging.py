"""The device install stays light: base dependencies, lazy imports, package data."""

from __future__ import annotations

import json
import os
import re
import shutil
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
        # edge-export keygen|sign|inspect|head-update work with only the [signing] extra
        ("import exporter, exporter.cli", ("onnx", "onnxruntime", "torch", "tensorflow")),
    ],
)
def test_heavy_frameworks_are_imported_lazily(statement: str, forbidden: tuple[str, ...]) -> None:
    code = f"{statement}\nimport sys\nprint(sorted(m for m in {forbidden!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]", f"{statement} imported {done.stdout.strip()}"


@pytest.fixture(scope="session")
def signing_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv (no system site-packages) with this project and only its base and
    ``signing`` dependencies: what ``pip install -e '.[signing]'`` gives. The sources are copied
    first, so that installing writes nothing into the working tree. Skipped when pip cannot reach
    a package index."""
    root = tmp_path_factory.mktemp("signing-venv")
    source = root / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for package in ("edge_runtime", "exporter"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    requirements = [*PYPROJECT["project"]["dependencies"], *PYPROJECT["project"]["optional-dependencies"]["signing"]]
    for args in (["--no-deps", "-e", str(source)], requirements):
        done = subprocess.run(
            [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            pytest.skip(f"pip install {' '.join(args)} failed (no package index?): {done.stderr.strip()[-500:]}")
    return venv


@pytest.mark.slow
def test_signing_commands_work_without_onnx(signing_venv: Path, demo_bundle: Path, tmp_path: Path) -> None:
    """keygen, sign, inspect and head-update in a virtualenv with only the [signing] extra."""
    import onnx

    from edge_runtime.bundle.reader import sha256_file

    python = signing_venv / "bin" / "python"
    probe = "import importlib.util; print(importlib.util.find_spec('onnx'))"
    assert subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True).stdout.strip() == "None"
    old, new = tmp_path / "v1", tmp_path / "v2"
    shutil.copytree(demo_bundle, old)
    shutil.copytree(demo_bundle, new)
    head = new / "heads" / "shape.fp32.onnx"  # a new version of one head
    model = onnx.load(str(head))
    model.doc_string = "v2"
    onnx.save(model, str(head))
    manifest = json.loads((new / "manifest.json").read_text())
    manifest["version"] = "2"
    manifest["files"]["heads/shape.fp32.onnx"] = {"sha256": sha256_file(head), "size": head.stat().st_size}
    (new / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (tmp_path / "keys").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    edge_export = str(signing_venv / "bin" / "edge-export")
    outputs = {}
    for command in (
        ["keygen", "keys/release"],
        ["sign", "v2", "--key", "keys/release.key"],
        ["inspect", "v2"],
        ["head-update", "v2", "--base", "v1", "-o", "heads.tar.gz"],
    ):
        done = subprocess.run(
            [edge_export, *command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"edge-export {' '.join(command)}: {done.stderr}"
        outputs[command[0]] = done.stdout
    assert (tmp_path / "v2" / "manifest.sig").is_file() and (tmp_path / "heads.tar.gz").is_file()
    assert "demo_multitask v2" in outputs["inspect"]
    assert "heads/shape.fp32.onnx" in outputs["head-update"]


def test_typed_packages() -> None:
    for package in ("edge_runtime", "exporter"):
        assert (ROOT / package / "py.typed").exists()


def test_device_profiles_are_package_data() -> None:
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["edge_runtime"]
    assert "ops/profiles/*.toml" in patterns
    assert len(list((ROOT / "edge_runtime" / "ops" / "profiles").glob("*.toml"))) >= 6
