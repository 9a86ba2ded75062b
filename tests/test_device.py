"""Board detection from fake system files, device profiles, provider fallback, `edge-runtime device`,
and the profile's place in the config precedence."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.config import RuntimeConfig
from edge_runtime.errors import ConfigError
from edge_runtime.inference.backends.onnxruntime import prefer_providers
from edge_runtime.ops.device import (
    choose_profile,
    detect_board,
    engine_options_for,
    load_profile,
    profile_names,
    resolve_engine_options,
)

CPUINFO_A72 = "".join(f"processor\t: {i}\nCPU implementer\t: 0x41\nCPU part\t: 0xd08\n\n" for i in range(4))
CPUINFO_A76 = "".join(f"processor\t: {i}\nCPU implementer\t: 0x41\nCPU part\t: 0xd0b\n\n" for i in range(4))
CPUINFO_A53 = "".join(f"processor\t: {i}\nCPU part\t: 0xd03\n\n" for i in range(4))
ORT_CPU = {"onnxruntime": {"version": "1.23.2", "providers": ["CPUExecutionProvider"]}, "tflite": None}
ORT_AND_LITERT = {**ORT_CPU, "tflite": {"package": "ai-edge-litert", "version": "2.3.0"}}


def make_root(tmp_path: Path, model: str | None = None, tegra: str | None = None, cpuinfo: str | None = None) -> Path:
    if model is not None:
        (tmp_path / "proc/device-tree").mkdir(parents=True)
        (tmp_path / "proc/device-tree/model").write_bytes(model.encode() + b"\x00")
    if tegra is not None:
        (tmp_path / "etc").mkdir(parents=True)
        (tmp_path / "etc/nv_tegra_release").write_text(tegra)
    if cpuinfo is not None:
        (tmp_path / "proc").mkdir(parents=True, exist_ok=True)
        (tmp_path / "proc/cpuinfo").write_text(cpuinfo)
    return tmp_path


BOARDS = [
    # (case, model, nv_tegra_release, cpuinfo, machine, profile)
    ("pi4", "Raspberry Pi 4 Model B Rev 1.4", None, CPUINFO_A72, "aarch64", "raspberry-pi-4"),
    ("pi400", "Raspberry Pi 400 Rev 1.0", None, CPUINFO_A72, "aarch64", "raspberry-pi-4"),
    ("pi5", "Raspberry Pi 5 Model B Rev 1.0", None, CPUINFO_A76, "aarch64", "raspberry-pi-5"),
    (
        "pi4-cpuinfo-only",  # no device tree (some containers): cpuinfo's Model + CPU part
        None,
        None,
        CPUINFO_A72 + "Hardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B Rev 1.5\n",
        "aarch64",
        "raspberry-pi-4",
    ),
    (
        "orin",
        "NVIDIA Jetson Orin Nano Developer Kit",
        "# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64\n",
        None,
        "aarch64",
        "jetson-orin",
    ),
    (
        "nano",
        "NVIDIA Jetson Nano Developer Kit",
        "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64\n",
        CPUINFO_A53,
        "aarch64",
        "jetson-nano",
    ),
    ("unknown-arm64", "Radxa ROCK 5B", None, CPUINFO_A76, "aarch64", None),
    ("pc", None, None, "processor\t: 0\nmodel name\t: AMD EPYC\n", "x86_64", None),
]


@pytest.mark.parametrize(
    ("case", "model", "tegra", "cpuinfo", "machine", "profile"), BOARDS, ids=[b[0] for b in BOARDS]
)
def test_detect_board(
    tmp_path: Path,
    case: str,
    model: str | None,
    tegra: str | None,
    cpuinfo: str | None,
    machine: str,
    profile: str | None,
) -> None:
    board = detect_board(make_root(tmp_path, model, tegra, cpuinfo), machine=machine)
    assert board.profile == profile
    assert board.machine == machine
    sources = [where for where, _ in board.evidence]
    if model is not None:
        assert ("/proc/device-tree/model", model) in board.evidence  # NUL stripped
    if tegra is not None:
        assert "/etc/nv_tegra_release" in sources
        assert board.l4t_release is not None and board.l4t_release.startswith("R3")
    if case == "pi5":
        assert board.cpu_parts == ("Cortex-A76",) * 4


def test_pi_profiles_prefer_litert_int8(tmp_path: Path) -> None:
    board = detect_board(make_root(tmp_path, "Raspberry Pi 5 Model B Rev 1.0", cpuinfo=CPUINFO_A76), "aarch64")
    profile, reason = choose_profile(board, None)
    assert (profile.name, profile.backend, profile.precision, profile.threads) == (
        "raspberry-pi-5",
        "tflite",
        "int8",
        4,
    )
    assert "/proc/device-tree/model" in reason and "Raspberry Pi 5" in reason


def test_jetson_orin_profile(tmp_path: Path) -> None:
    profile = load_profile("jetson-orin")
    assert profile.backend == "onnxruntime" and profile.precision == "fp16"
    assert profile.providers is not None and profile.providers[:2] == (
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
    )
    assert profile.camera is not None and profile.camera.startswith("gst:nvarguscamerasrc")


def test_jetson_nano_is_plainly_unsupported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = make_root(tmp_path, "NVIDIA Jetson Nano Developer Kit", "# R32 (release), REVISION: 7.1\n")
    with caplog.at_level(logging.WARNING, logger="edge_runtime.ops.device"):
        profile, _ = choose_profile(detect_board(root, "aarch64"), None)
    assert profile.name == "jetson-nano" and not profile.supported
    assert "Python 3.6" in profile.notes and "Unsupported" in profile.notes and "What to do" in profile.notes
    assert "Python 3.6" in caplog.text


@pytest.mark.parametrize(("machine", "expected"), [("aarch64", "generic-arm64"), ("armv7l", "generic-arm64")])
def test_unknown_board_falls_back_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, machine: str, expected: str
) -> None:
    root = make_root(tmp_path, "Radxa ROCK 5B", cpuinfo=CPUINFO_A76)
    with caplog.at_level(logging.WARNING, logger="edge_runtime.ops.device"):
        profile, reason = choose_profile(detect_board(root, machine), None)
    assert profile.name == expected
    assert "not recognised" in reason and "Radxa ROCK 5B" in reason
    assert "not recognised" in caplog.text and "profile = NAME" in caplog.text


def test_x86_64_gets_the_generic_profile_quietly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="edge_runtime.ops.device"):
        profile, reason = choose_profile(detect_board(make_root(tmp_path), "x86_64"), None)
    assert profile.name == "generic-x86_64" and "x86_64" in reason
    assert caplog.text == ""


def test_override_by_name_and_typo(tmp_path: Path) -> None:
    board = detect_board(make_root(tmp_path, "Raspberry Pi 4 Model B Rev 1.4"), "aarch64")
    profile, reason = choose_profile(board, "jetson-orin")
    assert profile.name == "jetson-orin" and "configuration" in reason
    assert choose_profile(board, "auto")[0].name == "raspberry-pi-4"
    with pytest.raises(ConfigError, match=r"no device profile 'raspbery-pi-5' \(did you mean 'raspberry-pi-5'"):
        choose_profile(board, "raspbery-pi-5")


def test_every_shipped_profile_loads() -> None:
    names = profile_names()
    assert {"raspberry-pi-4", "raspberry-pi-5", "jetson-orin", "jetson-nano", "generic-arm64", "generic-x86_64"} <= set(
        names
    )
    for name in names:
        profile = load_profile(name)
        assert profile.name == name and profile.description and profile.notes


def test_provider_fallback_message() -> None:
    chosen, message = prefer_providers(
        ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
        ["CPUExecutionProvider"],
        "profile jetson-orin",
    )
    assert chosen == ["CPUExecutionProvider"]
    assert message is not None
    assert (
        "profile jetson-orin asks for execution provider(s) TensorrtExecutionProvider, CUDAExecutionProvider" in message
    )
    assert "using CPUExecutionProvider instead" in message and "onnxruntime-gpu" in message
    kept, none = prefer_providers(["CUDAExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"], "x")
    assert kept == ["CUDAExecutionProvider"] and none is None


def test_profile_providers_fall_back_in_engine_options() -> None:
    options, notes = engine_options_for(
        load_profile("jetson-orin"), backend=None, precision=None, threads=None, runtimes=ORT_CPU
    )
    assert options.providers == ("CPUExecutionProvider",) and options.precision == "fp16"
    assert len(notes) == 1 and "TensorrtExecutionProvider" in notes[0]


@pytest.mark.parametrize(
    ("runtimes", "formats", "backend", "why"),
    [
        (ORT_AND_LITERT, {"onnx", "tflite"}, "tflite", None),
        (ORT_CPU, {"onnx", "tflite"}, "onnxruntime", "not installed"),
        (ORT_AND_LITERT, {"onnx"}, "onnxruntime", "no tflite artifacts"),
    ],
)
def test_profile_backend_falls_back(runtimes: dict, formats: set[str], backend: str, why: str | None) -> None:
    options, notes = engine_options_for(
        load_profile("raspberry-pi-4"),
        backend=None,
        precision=None,
        threads=None,
        bundle_formats=formats,
        runtimes=runtimes,
    )
    assert options.backend == backend and options.precision == "int8" and options.threads == 4
    assert (why is None and not notes) or (why is not None and why in notes[0])


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, ("tflite", "int8", 4)),  # profile defaults
        ({"backend": "onnxruntime"}, ("onnxruntime", "int8", 4)),
        ({"precision": "fp32", "threads": 2}, ("tflite", "fp32", 2)),
        ({"profile": "generic-arm64"}, ("onnxruntime", "fp32", None)),
    ],
)
def test_config_precedence(tmp_path: Path, settings: dict, expected: tuple) -> None:
    config = RuntimeConfig.load(flags={"bundle": "b", "source": "synthetic", **settings}, environ={})
    root = make_root(tmp_path, "Raspberry Pi 4 Model B Rev 1.4", cpuinfo=CPUINFO_A72)
    options, _ = resolve_engine_options(
        config.profile,
        backend=config.backend,
        precision=config.precision,
        threads=config.threads,
        root=root,
        machine="aarch64",
        runtimes=ORT_AND_LITERT,
    )
    assert (options.backend, options.precision, options.threads) == expected


def test_config_profile_key(tmp_path: Path) -> None:
    config = RuntimeConfig.load(flags={"bundle": "b", "source": "s"}, environ={"EDGE_RUNTIME_PROFILE": "jetson-orin"})
    assert config.profile == "jetson-orin"
    assert (config.backend, config.precision) == ("auto", "auto")
    assert RuntimeConfig.load(flags={"bundle": "b", "source": "s"}, environ={}).profile == "auto"
    with pytest.raises(ConfigError, match="did you mean 'jetson-orin'"):
        RuntimeConfig.load(flags={"bundle": "b", "source": "s", "profile": "jetson-orim"}, environ={})


def _device(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", "device", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_device_json(tmp_path: Path) -> None:
    root = make_root(tmp_path, "Raspberry Pi 5 Model B Rev 1.0", cpuinfo=CPUINFO_A76)
    done = _device("--json", "--root", str(root), "--machine", "aarch64")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["board"]["model"] == "Raspberry Pi 5 Model B Rev 1.0"
    assert report["board"]["cpu"] == ["Cortex-A76"] * 4
    assert {"source": "/proc/device-tree/model", "says": "Raspberry Pi 5 Model B Rev 1.0"} in report["board"][
        "evidence"
    ]
    assert report["profile"]["name"] == "raspberry-pi-5" and "Raspberry Pi 5" in report["reason"]
    assert report["runtimes"]["onnxruntime"]["version"]
    assert "CPUExecutionProvider" in report["runtimes"]["onnxruntime"]["providers"]
    assert "tflite" in report["runtimes"]


def test_cli_device_text_and_errors(tmp_path: Path) -> None:
    root = make_root(tmp_path, "NVIDIA Jetson Orin Nano Developer Kit", "# R36 (release), REVISION: 3.0\n")
    done = _device("--root", str(root), "--machine", "aarch64")
    assert done.returncode == 0, done.stderr
    assert "jetson-orin" in done.stdout and "/etc/nv_tegra_release" in done.stdout and "runtimes:" in done.stdout
    assert "onnxruntime" in done.stdout and "LiteRT" in done.stdout
    bad = _device("--profile", "raspbery-pi-5")
    assert bad.returncode == 2 and "did you mean 'raspberry-pi-5'" in bad.stderr
