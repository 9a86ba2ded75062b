"""Signed commands to a running daemon through a real mosquitto: the operator CLI switches heads,
changes a schedule, asks for the status and installs a head update; what is refused leaves the
daemon as it was. (Verifier and processor details: tests/test_commands.py.)"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.cli import main
from edge_runtime.config import RuntimeConfig
from edge_runtime.daemon.pipeline import Daemon
from edge_runtime.errors import ConfigError
from edge_runtime.trust.keys import generate_keypair
from tests.broker import BrokerProcess
from tests.conftest import write_npy_frames
from tests.test_update import _head_package, _is_v2, _lines, _wait_lines, bundles  # noqa: F401  (fixture)

DEVICE = "cam-remote"


@pytest.fixture(scope="module")
def operator_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("operator")
    generate_keypair(folder / "operator")
    return folder


def _url(broker: BrokerProcess) -> str:
    return f"mqtt://127.0.0.1:{broker.port}?protocol={'5' if broker.supports('5') else '3.1.1'}"


def _daemon(bundle: Path, broker: BrokerProcess, tmp_path: Path, keys: Path, **extra: Any) -> Daemon:
    frames = write_npy_frames(tmp_path / "frames", 5, 96, 128, seed=3)
    config = RuntimeConfig.load(
        flags={
            "bundle": str(bundle),
            "source": str(frames),
            "loop": True,
            "fps": 50.0,
            "precision": "fp32",
            "threads": 1,
            "state_dir": str(tmp_path / "state"),
            "output": str(tmp_path / "results.jsonl"),
            "broker": _url(broker),
            "device_id": DEVICE,
            "command_keys": [str(keys / "operator.pub")],
            **extra,
        },
        environ={},
    )
    return Daemon(config)


def _command(broker: BrokerProcess, keys: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    base = ["command", "--broker", _url(broker), "--device", DEVICE, "--key", str(keys / "operator.key")]
    code = main([*base, "--timeout", "60", *args])
    captured = capsys.readouterr()
    out = captured.out.strip()
    return code, json.loads(out) if out else captured.err


def _after(path: Path, count: int) -> list[dict[str, Any]]:
    """The result lines written after the first ``count`` (waits for 10 more)."""
    return _wait_lines(path, count + 10)[count:]


def test_operator_commands_change_a_running_daemon(
    bundles: tuple[Path, Path],  # noqa: F811
    broker: BrokerProcess,
    operator_keys: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    v1, v2 = bundles
    out = tmp_path / "results.jsonl"
    daemon = _daemon(v1, broker, tmp_path, operator_keys)
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(daemon.run(install_signals=False)))
    thread.start()
    try:
        _wait_lines(out, 5)
        code, reply = _command(broker, operator_keys, capsys, "status")
        assert code == 0 and reply["ok"], reply
        assert reply["result"]["bundle"] == {"name": "demo_multitask", "version": "1"}
        assert reply["result"]["heads"]["mask"] == {"enabled": True, "every_n_frames": 2}
        assert reply["result"]["frames"] >= 5

        code, reply = _command(broker, operator_keys, capsys, "disable_head", "head=mask")
        assert code == 0 and reply["result"] == {"head": "mask", "enabled": False}
        seen = len(_lines(out)) + 1  # a frame in flight may still carry the mask
        assert all("mask" not in line["results"] for line in _after(out, seen))

        code, reply = _command(broker, operator_keys, capsys, "set_schedule", "head=box", "every_n_frames=3")
        assert code == 0, reply
        seen = len(_lines(out)) + 1
        assert sum("box" in line["results"] for line in _after(out, seen)) <= 4  # 10 frames, every 3rd

        code, reply = _command(broker, operator_keys, capsys, "disable_head", "head=masc")
        assert code == 1 and reply["reason"] == "failed", reply
        assert "did you mean 'mask'" in reply["error"]

        package = _head_package(v1, v2, tmp_path / "head.tar.gz")
        code, reply = _command(broker, operator_keys, capsys, "update", f"source={package}")
        assert code == 0 and reply["ok"], reply
        assert (reply["result"]["version"], reply["result"]["slot"]) == ("2", "A")
        seen = len(_lines(out)) + 1
        after = _after(out, seen)
        assert all(_is_v2(line) for line in after)
        # the commanded head settings outlive the swap to the new bundle
        assert all("mask" not in line["results"] for line in after)

        code, reply = _command(broker, operator_keys, capsys, "update", f"source={tmp_path / 'missing.tar.gz'}")
        assert code == 1 and "update refused" in reply["error"]
        seen = len(_lines(out)) + 1
        assert all(_is_v2(line) for line in _after(out, seen))  # still running v2
    finally:
        daemon.stop.set()
        thread.join(60)
    assert codes == [0]
    lines = _lines(out)
    assert [line["seq"] for line in lines] == list(range(len(lines)))  # (frames may drop: fps pacing)


def test_a_stranger_key_is_refused_and_changes_nothing(
    bundles: tuple[Path, Path],  # noqa: F811
    broker: BrokerProcess,
    operator_keys: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    v1, _ = bundles
    (tmp_path / "stranger").mkdir()
    generate_keypair(tmp_path / "stranger" / "operator")  # an operator key the device does not trust
    daemon = _daemon(v1, broker, tmp_path, operator_keys)
    thread = threading.Thread(target=lambda: daemon.run(install_signals=False))
    thread.start()
    out = tmp_path / "results.jsonl"
    try:
        _wait_lines(out, 3)
        code, reply = _command(broker, tmp_path / "stranger", capsys, "disable_head", "head=shape")
        assert code == 1 and reply["reason"] == "unknown_key", reply
        seen = len(_lines(out))
        assert all("shape" in line["results"] for line in _after(out, seen))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and daemon._commands is not None:
            if daemon._commands.counters()["rejected"].get("unknown_key") == 1:
                break
            time.sleep(0.05)
        assert daemon._commands is not None and daemon._commands.counters()["rejected"] == {"unknown_key": 1}
    finally:
        daemon.stop.set()
        thread.join(60)


def test_command_keys_that_cannot_be_read_are_a_config_error(
    demo_bundle: Path, broker: BrokerProcess, tmp_path: Path
) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "operator.pub").write_text("not a key")
    daemon = _daemon(demo_bundle, broker, tmp_path, tmp_path / "keys")
    with pytest.raises(ConfigError, match=r"command_keys: .*operator.pub: not a PEM public key"):
        daemon.run(install_signals=False)


def test_the_tune_command_tunes_a_running_daemon_and_swaps_its_choice_in(
    demo_int8_bundle: Path,
    broker: BrokerProcess,
    operator_keys: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "results.jsonl"
    daemon = _daemon(
        demo_int8_bundle, broker, tmp_path, operator_keys, precision="auto", threads=None, tune_seconds=1.0
    )
    thread = threading.Thread(target=lambda: daemon.run(install_signals=False))
    thread.start()
    try:
        _wait_lines(out, 3)
        code, reply = _command(broker, operator_keys, capsys, "status")
        assert {g["reason"] for g in reply["result"]["graphs"].values()} == {"device profile, not tuned"}
        code, reply = _command(broker, operator_keys, capsys, "tune")
        assert code == 0 and reply["ok"], reply
        result = reply["result"]
        assert result["tuned"] and set(result["choice"]) == {"trunk", "shape", "box", "mask"}
        assert result["paused_s"] >= result["seconds"] > 0
        assert (tmp_path / "state" / "tuning.json").is_file()
        seen = len(_lines(out))
        _after(out, seen)  # frames flow again, on the tuned engine
        code, reply = _command(broker, operator_keys, capsys, "status")
        graphs = reply["result"]["graphs"]
        assert all(g["reason"].startswith("tuned ") for g in graphs.values()), graphs
        assert {g: f"{v['backend']} {v['precision']} x{v['threads']}" for g, v in graphs.items()} == result["choice"]
    finally:
        daemon.stop.set()
        thread.join(60)
    lines = _lines(out)
    assert [line["seq"] for line in lines] == list(range(len(lines)))


def test_the_tune_command_is_refused_when_precision_is_set(
    demo_int8_bundle: Path,
    broker: BrokerProcess,
    operator_keys: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    daemon = _daemon(demo_int8_bundle, broker, tmp_path, operator_keys)  # precision fp32
    thread = threading.Thread(target=lambda: daemon.run(install_signals=False))
    thread.start()
    try:
        _wait_lines(tmp_path / "results.jsonl", 2)
        code, reply = _command(broker, operator_keys, capsys, "tune")
        assert code == 1 and reply["reason"] == "failed", reply
        assert reply["error"] == "tune refused: precision is set, so a tuning would not be used"
        assert not (tmp_path / "state" / "tuning.json").exists()
    finally:
        daemon.stop.set()
        thread.join(60)
