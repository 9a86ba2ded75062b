"""The daemon end to end: JSON lines, seq/epoch in the state directory, overload drops
frames but never results, SIGTERM drains and exits 0, config errors, health, sd_notify."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.config import HeadOverride, RuntimeConfig
from edge_runtime.daemon.pipeline import Daemon
from edge_runtime.errors import ConfigError
from tests.conftest import write_npy_frames

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
REQUIRED = {"device", "seq", "frame_id", "ts", "results", "latency_ms"}


@pytest.fixture
def bundle(demo_bundle: Path) -> Path:
    return demo_bundle


@pytest.fixture
def frames_dir(tmp_path: Path) -> Path:
    """Seven RGB frames as .npy files (readable without OpenCV)."""
    return write_npy_frames(tmp_path / "frames", 7, 120, 160, seed=3)


def _config(bundle: Path, tmp_path: Path, **kw: Any) -> RuntimeConfig:
    flags = {"bundle": str(bundle), "state_dir": str(tmp_path / "state"), "device_id": "cam-1", **kw}
    return RuntimeConfig.load(flags=flags, environ={})


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_folder_source_gives_one_line_per_frame_and_seq_survives_restart(
    bundle: Path, frames_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results.jsonl"
    config = _config(bundle, tmp_path, source=str(frames_dir), output=str(out))
    assert Daemon(config).run(install_signals=False) == 0
    first = _lines(out)
    assert len(first) == 7
    assert all(REQUIRED <= set(line) for line in first)
    assert [line["seq"] for line in first] == list(range(7))
    assert [line["frame_id"] for line in first] == list(range(7))
    assert {line["device"] for line in first} == {"cam-1"}
    assert [("mask" in line["results"]) for line in first] == [i % 2 == 0 for i in range(7)]
    epoch = first[0]["epoch"]
    assert Daemon(config).run(install_signals=False) == 0
    second = _lines(out)[7:]
    assert [line["seq"] for line in second] == list(range(7, 14))
    assert {line["epoch"] for line in second} == {epoch}


class SlowSink:
    """A real sink that takes 30 ms per result: the pipeline's slowest stage."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def write(self, line: dict[str, Any]) -> None:
        time.sleep(0.03)
        self.lines.append(line)

    def close(self) -> None:
        pass


def test_overload_drops_frames_never_results(bundle: Path, tmp_path: Path) -> None:
    sink = SlowSink()
    config = _config(bundle, tmp_path, source="synthetic:160x120", fps=500.0, max_frames=120, queue_size=2)
    daemon = Daemon(config, sinks=[sink])
    assert daemon.run(install_signals=False) == 0
    beat = json.loads((tmp_path / "state" / "heartbeat.json").read_text())
    assert beat["dropped"] > 0, "the source outran the sink: frames must have been dropped"
    assert beat["frames"] == 120
    assert beat["results"] == len(sink.lines) == 120 - beat["dropped"]
    assert [line["seq"] for line in sink.lines] == list(range(len(sink.lines)))


def test_sigterm_drains_and_exits_zero(bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "edge_runtime.cli", "run", "--bundle", str(bundle), "--source", "synthetic:160x120",
            "--fps", "20", "--output", str(out), "--state-dir", str(state),
        ],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 5):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "SIGTERM" in stderr and "Traceback" not in stderr
    lines = _lines(out)
    beat = json.loads((state / "heartbeat.json").read_text())
    assert beat["stopped"] is True and beat["results"] == len(lines) >= 5
    assert int((state / "seq").read_text()) == len(lines)


@pytest.mark.parametrize(
    ("config_text", "environ", "message"),
    [
        ('bundel = "x"\nsource = "synthetic"\n', {}, "unknown key 'bundel' (did you mean 'bundle'?)"),
        ('source = "synthetic"\n', {}, "'bundle' is required"),
        ('bundle = "b"\nsource = "synthetic"\nthreads = 0\n', {}, "threads must be an integer >= 1, got 0"),
        ('bundle = "b"\nsource = "synthetic"\nprecision = "int4"\n', {}, "precision 'int4'"),
        ('bundle = "b"\nsource = "synthetic"\n[heads.mask]\nevery = 2\n', {}, "unknown key 'every'"),
        ('bundle = "b"\nsource = "synthetic"\n', {"EDGE_RUNTIME_MAX_FRAMS": "3"}, "EDGE_RUNTIME_MAX_FRAMES"),
        ('bundle = "b"\nsource = "synthetic"\n', {"EDGE_RUNTIME_THREADS": "two"}, "expected an integer"),
        ('bundle = "b"\nsource = "synthetic"\ndevice_id = "a/b"\n', {}, "device_id 'a/b'"),
        (
            'bundle = "b"\nsource = "synthetic"\n[heads.mask]\nqos = 3\n',
            {},
            "config.toml: heads.mask.qos must be 0, 1 or 2, got 3",
        ),
        (
            'bundle = "b"\nsource = "synthetic"\n[heads.box]\ndeadband = -1\n',
            {},
            "config.toml: heads.box.deadband must be a number >= 0, got -1",
        ),
        (
            'bundle = "b"\nsource = "synthetic"\n[heads.box]\nexpiry_s = 0\n',
            {},
            "config.toml: heads.box.expiry_s must be a number >= 1, got 0",
        ),
        ('bundle = "b"\nsource = "synthetic"\ncodec = "protobuf"\n', {}, "codec 'protobuf' is not one of"),
        ('bundle = "b"\nsource = "synthetic"\n', {"EDGE_RUNTIME_SPOOL_SYNCHRONOUS": "ful"}, "(did you mean 'full'?)"),
        ('bundle = "b"\nsource = "synthetic"\n', {"EDGE_RUNTIME_SPOOL_MAX_ROWS": "lots"}, "expected an integer"),
    ],
    ids=[
        "unknown-key",
        "missing-bundle",
        "bad-threads",
        "bad-precision",
        "head-key",
        "env-name",
        "env-value",
        "id",
        "head-qos",
        "deadband",
        "expiry",
        "codec",
        "env-choice",
        "env-int",
    ],
)
def test_config_errors(tmp_path: Path, config_text: str, environ: dict[str, str], message: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(config_text)
    with pytest.raises(ConfigError) as caught:
        RuntimeConfig.load(config_file=path, environ=environ)
    assert message in str(caught.value)


def test_publishing_settings(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        'bundle = "b"\nsource = "synthetic"\nrbe_heartbeat_s = 12\ncompression = "zstd"\n'
        "[heads.box]\ndeadband = 0.02\nqos = 2\nexpiry_s = 60\nfloat32 = true\n"
    )
    environ = {"EDGE_RUNTIME_SPOOL_SYNCHRONOUS": "full", "EDGE_RUNTIME_SUBSCRIBE_BROKER": "mqtt://x:1"}
    config = RuntimeConfig.load(config_file=path, environ=environ)  # subscribe's variables are not run's
    assert config.heads["box"] == HeadOverride(deadband=0.02, qos=2, expiry_s=60.0, float32=True)
    assert (config.rbe_heartbeat_s, config.compression, config.spool_synchronous) == (12.0, "zstd", "full")


def test_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('bundle = "from-file"\nsource = "synthetic"\nthreads = 1\nmax_frames = 5\n')
    config = RuntimeConfig.load(
        config_file=path, flags={"threads": 3}, environ={"EDGE_RUNTIME_THREADS": "2", "EDGE_RUNTIME_MAX_FRAMES": "9"}
    )
    assert (str(config.bundle), config.threads, config.max_frames) == ("from-file", 3, 9)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_validate_and_tampered_bundle(bundle: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    done = _cli("run", "--bundle", str(bundle), "--source", "synthetic", "--state-dir", str(state), "--validate")
    assert done.returncode == 0, done.stderr
    assert "config ok" in done.stdout and "heads shape, box, mask" in done.stdout
    assert not state.exists(), "run --validate wrote into the state directory"
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in bundle.rglob("*"):
        target = broken / item.relative_to(bundle)
        if item.is_dir():
            target.mkdir(exist_ok=True)
        else:
            target.write_bytes(item.read_bytes())
    (broken / "trunk.fp32.onnx").write_bytes(b"not the trunk")
    done = _cli("run", "--bundle", str(broken), "--source", "synthetic", "--state-dir", str(tmp_path), "--validate")
    assert done.returncode == 2
    assert "trunk.fp32.onnx: checksum mismatch" in done.stderr and "Traceback" not in done.stderr


def test_health(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    missing = _cli("health", "--state-dir", str(state))
    assert missing.returncode == 2 and "no heartbeat" in missing.stderr
    beat = {"ts": time.time(), "pid": 1, "interval_s": 5.0, "stopped": False, "results": 3, "dropped": 0}
    (state / "heartbeat.json").write_text(json.dumps(beat))
    assert _cli("health", "--state-dir", str(state)).returncode == 0
    (state / "heartbeat.json").write_text(json.dumps({**beat, "ts": time.time() - 60}))
    stale = _cli("health", "--state-dir", str(state))
    assert stale.returncode == 1 and "stale" in stale.stderr


def test_sd_notify_ready_and_watchdog(bundle: Path, tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(address)
        server.settimeout(30)
        done = _cli(
            "run", "--bundle", str(bundle), "--source", "synthetic:64x48", "--max-frames", "3",
            "--state-dir", str(tmp_path / "state"), "--output", str(tmp_path / "o.jsonl"),
            env={"NOTIFY_SOCKET": address},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        messages = set()
        server.settimeout(0.5)
        try:
            while True:
                messages.add(server.recv(4096).decode())
        except TimeoutError:
            pass
    assert "READY=1" in messages and "WATCHDOG=1" in messages


def test_sigterm_while_a_camera_reconnects(bundle: Path, tmp_path: Path) -> None:
    """A source stuck retrying a missing camera must not keep the daemon from stopping."""
    pytest.importorskip("cv2", reason="camera sources need the [camera] extra (OpenCV)")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "edge_runtime.cli", "run", "--bundle", str(bundle), "--source", "camera:97",
            "--state-dir", str(tmp_path / "state"), "--output", str(tmp_path / "o.jsonl"),
        ],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(3)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert time.monotonic() - started < 10
    assert "retrying" in stderr and "Traceback" not in stderr
