"""``run --validate`` checks what ``run`` checks at start (broker URL, TLS files, command keys,
spool options, head expiry, the state directory), with the same functions, and writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.config import RuntimeConfig
from edge_runtime.daemon.validation import delivery_settings
from edge_runtime.errors import ConfigError


def _validate(bundle: Path, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", "run", "--bundle", str(bundle), "--source", "synthetic",
         "--state-dir", str(state), "--validate", *args],
        capture_output=True, text=True, timeout=120, env={**os.environ},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--broker", "http://x"], "broker URL 'http://x': scheme must be mqtt:// or mqtts://"),
        (
            ["--broker", "mqtt://broker:1883", "--command-key", "/nonexistent/op.pub"],
            "command_keys: /nonexistent/op.pub",
        ),
        (["--broker", "mqtts://broker?tls_ca=/nonexistent/ca.pem"], "tls_ca '/nonexistent/ca.pem'"),
        (["--broker", "mqtt://broker:99999"], "broker URL"),
    ],
)
def test_validate_refuses_what_run_would(demo_bundle: Path, tmp_path: Path, args: list[str], message: str) -> None:
    state = tmp_path / "state"
    done = _validate(demo_bundle, state, *args)
    assert done.returncode == 2, done.stdout
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not state.exists()  # nothing written


def test_validate_refuses_a_bad_key_file_and_head_expiry(demo_bundle: Path, tmp_path: Path) -> None:
    key = tmp_path / "op.pub"
    key.write_text("not a key")
    done = _validate(demo_bundle, tmp_path / "state", "--command-key", str(key))
    assert done.returncode == 2 and f"command_keys: {key}" in done.stderr
    for expiry in ("inf", "1e300"):
        config = tmp_path / "c.toml"
        config.write_text(f"[heads.mask]\nexpiry_s = {expiry}\n")
        done = _validate(demo_bundle, tmp_path / "state", "--config", str(config))
        assert done.returncode == 2 and "heads.mask.expiry_s" in done.stderr


def test_validate_ok_names_the_broker_without_its_password(demo_bundle: Path, tmp_path: Path) -> None:
    done = _validate(demo_bundle, tmp_path / "state", "--broker", "mqtt://cam:secret@broker:1883")
    assert done.returncode == 0, done.stderr
    assert "broker mqtt://cam:***@broker:1883" in done.stdout and "secret" not in done.stdout
    assert not (tmp_path / "state").exists()


def test_validate_refuses_a_state_dir_under_a_file(demo_bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    done = _validate(demo_bundle, tmp_path / "file" / "state")
    assert done.returncode == 2 and "is not a directory" in done.stderr


def test_delivery_settings_are_the_ones_run_uses(tmp_path: Path) -> None:
    flags = {"bundle": "b", "source": "s", "state_dir": str(tmp_path), "spool_synchronous": "full"}
    mqtt, options, keys = delivery_settings(RuntimeConfig.load(flags={**flags, "broker": "mqtt://h:1"}, environ={}))
    assert mqtt is not None and mqtt.host == "h" and mqtt.port == 1
    assert options is not None and options.synchronous == "full" and keys == []
    assert delivery_settings(RuntimeConfig.load(flags=flags, environ={}))[:2] == (None, None)
    with pytest.raises(ConfigError, match="scheme"):
        delivery_settings(RuntimeConfig.load(flags={**flags, "broker": "tcp://h"}, environ={}))
