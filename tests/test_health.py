"""``edge-runtime health`` on real heartbeat files and a real daemon: exit 1 when not alive or stale
(bad fields named, never a traceback), ``degraded`` delivery (exit 0 unless ``--require-delivery``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.config import RuntimeConfig
from edge_runtime.daemon.health import HealthLimits, check_health
from edge_runtime.daemon.pipeline import Daemon
from edge_runtime.delivery.state import StateDir
from edge_runtime.errors import ConfigError
from tests.broker import free_port, wait_for


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", "health", *args], capture_output=True, text=True, timeout=60
    )


def _beat(state: Path, text: str) -> Path:
    state.mkdir(exist_ok=True)
    (state / "heartbeat.json").write_text(text)
    return state


def _fresh(**fields: Any) -> dict[str, Any]:
    return {"ts": time.time(), "pid": os.getpid(), "interval_s": 5.0, "stopped": False, "results": 3, **fields}


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"ts": TS, "pid": PID, "interval_s": "5"}', "field interval_s is '5', not a finite number"),
        ('{"ts": TS, "pid": PID, "interval_s": [5]}', "field interval_s is [5], not a finite number"),
        ('{"ts": TS, "pid": PID, "interval_s": Infinity}', "field interval_s is inf"),
        ('{"ts": TS, "pid": PID, "interval_s": -5}', "field interval_s is -5"),
        ('{"ts": 1' + "0" * 400 + ', "pid": PID}', "field ts is 1000000"),
        ('{"ts": Infinity, "pid": PID}', "field ts is inf"),
        ('{"ts": TS, "pid": 9' + "9" * 30 + "}", "field pid is 9999"),
        ('{"ts": TS, "pid": PID, "spool": {"depth": "x"}, "mqtt": {}}', "field spool.depth is 'x'"),
        ("[1, 2]", "not a JSON object"),
        ("{not json", "not JSON"),
    ],
)
def test_bad_fields_are_one_line_and_exit_1(tmp_path: Path, text: str, field: str) -> None:
    state = _beat(tmp_path / "state", text.replace("TS", str(time.time())).replace("PID", str(os.getpid())))
    done = _cli("--state-dir", str(state))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "heartbeat.json" in done.stderr and field in done.stderr


def test_non_finite_or_negative_max_age_is_refused(tmp_path: Path) -> None:
    state = _beat(tmp_path / "state", json.dumps(_fresh(ts=time.time() - 3600)))
    for bad in ("nan", "inf", "-1", "0"):
        done = _cli("--state-dir", str(state), "--max-age", bad)
        assert done.returncode == 2 and "--max-age" in done.stderr and "Traceback" not in done.stderr
    assert _cli("--state-dir", str(state), "--max-age", "30").returncode == 1  # stale


def test_heartbeat_interval_setting_refuses_infinity() -> None:
    for value in (float("inf"), float("nan"), -1.0):
        with pytest.raises(ConfigError, match="heartbeat_interval_s"):
            RuntimeConfig.load(flags={"bundle": "b", "source": "s", "heartbeat_interval_s": value}, environ={})


def test_a_dead_pid_is_not_alive(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    state = _beat(tmp_path / "state", json.dumps(_fresh(pid=child.pid)))
    done = _cli("--state-dir", str(state))
    assert done.returncode == 1 and f"pid {child.pid} is not running" in done.stderr
    assert check_health(_beat(tmp_path / "s2", json.dumps(_fresh(pid=1))), HealthLimits())[0] == 0  # EPERM: alive


def test_delivery_trouble_is_degraded_and_only_fails_when_required(tmp_path: Path) -> None:
    delivery = {
        "spool": {"depth": 50_000, "oldest_age_s": 900.0, "disk_full": True},
        "mqtt": {"connected": False, "acked": 0, "ack_age_s": 600.0},
    }
    state = _beat(tmp_path / "state", json.dumps(_fresh(**delivery)))
    done = _cli("--state-dir", str(state))
    assert done.returncode == 0 and done.stdout.startswith("degraded:")
    for words in ("disconnected from the broker", "spool holds 50000", "900 s old", "no acknowledgement", "disk full"):
        assert words in done.stdout
    assert _cli("--state-dir", str(state), "--require-delivery").returncode == 1
    good = {"spool": {"depth": 0, "oldest_age_s": None, "disk_full": False}, "mqtt": {"connected": True, "acked": 5}}
    ok = _cli("--state-dir", str(_beat(tmp_path / "s2", json.dumps(_fresh(**good)))), "--require-delivery")
    assert ok.returncode == 0 and "delivery ok" in ok.stdout
    no_broker = _cli("--state-dir", str(_beat(tmp_path / "s3", json.dumps(_fresh()))), "--require-delivery")
    assert no_broker.returncode == 0 and no_broker.stdout.startswith("ok:")


def test_epoch_file_with_a_seq_above_int64_is_one_line(tmp_path: Path) -> None:
    for first_seq in ("1e400", str(2**70)):
        (tmp_path / "epoch.json").write_text(f'{{"epoch": "ab", "first_seq": {first_seq}, "started": 0}}')
        with pytest.raises(ConfigError, match=r"epoch\.json"):
            StateDir.open(tmp_path)


def test_a_running_daemon_with_its_broker_down_is_degraded(demo_bundle: Path, tmp_path: Path) -> None:
    config = RuntimeConfig.load(
        flags={
            "bundle": str(demo_bundle), "source": "synthetic:64x48", "fps": 20.0, "device_id": "cam-h",
            "state_dir": str(tmp_path / "state"), "broker": f"mqtt://127.0.0.1:{free_port()}",
            "heartbeat_interval_s": 0.2,
        },
        environ={},
    )  # fmt: skip
    daemon = Daemon(config)
    thread = threading.Thread(target=daemon.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    try:
        beat = tmp_path / "state" / "heartbeat.json"

        def degraded() -> bool:
            return beat.is_file() and "disconnected" in check_health(tmp_path / "state", HealthLimits())[1]

        assert wait_for(degraded, timeout=30)
        code, line = check_health(tmp_path / "state", HealthLimits(require_delivery=True))
        assert code == 1 and line.startswith("degraded:") and "disconnected from the broker" in line
        assert check_health(tmp_path / "state", HealthLimits())[0] == 0
    finally:
        daemon.stop.set()
        thread.join(timeout=30)
    assert check_health(tmp_path / "state", HealthLimits())[1].startswith("stopped:")
