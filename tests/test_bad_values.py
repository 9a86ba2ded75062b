"""Out-of-range values (issue 23) refused with one line naming the key, flag or file, never a
traceback, a hang or a silently wrong result: threads, fps, remote schedules, JSON seq, broker
URL parameters, manifest head values and the TLS hint (the runtime side; the exporter's are in
test_bad_values_export.py)."""

from __future__ import annotations

import json
import math
import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.bundle.manifest import Manifest
from edge_runtime.codec import decode_payload
from edge_runtime.codec.envelope import CodecError
from edge_runtime.config import HeadOverride, RuntimeConfig
from edge_runtime.delivery.mqtt.settings import MqttConfig, describe_connect_error
from edge_runtime.errors import BundleError, ConfigError
from edge_runtime.inference.backends.base import MAX_THREADS, check_threads
from edge_runtime.inference.engine import EngineOptions
from edge_runtime.settings.heads import MAX_EVERY_N_FRAMES
from edge_runtime.trust.commands import CommandRejected, check_args
from tests.cli_errors import one_error_line

RUNTIME = [sys.executable, "-m", "edge_runtime.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RUNTIME, *args], capture_output=True, text=True, timeout=120, check=False)


# -- 1. threads -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["99999999999999999999", "100000", str(MAX_THREADS + 1)])
def test_run_threads_beyond_the_maximum_are_refused(demo_bundle: Path, value: str) -> None:
    line = one_error_line(
        run("run", "--bundle", str(demo_bundle), "--source", "synthetic", "--max-frames", "1", "--threads", value)
    )
    assert f"--threads: threads must be an integer from 1 to {MAX_THREADS}" in line
    assert "CPU" in line


def test_run_threads_from_the_environment_name_the_variable(demo_bundle: Path) -> None:
    env = {**os.environ, "EDGE_RUNTIME_THREADS": "100000"}
    proc = subprocess.run(
        [*RUNTIME, "run", "--bundle", str(demo_bundle), "--source", "synthetic", "--max-frames", "1"],
        capture_output=True, text=True, timeout=120, check=False, env=env,
    )  # fmt: skip
    assert "EDGE_RUNTIME_THREADS: threads must be an integer from 1 to" in one_error_line(proc)


@pytest.mark.parametrize("value", ["99999999999999999999", "100000"])
def test_bench_threads_beyond_the_maximum_are_refused(demo_bundle: Path, value: str) -> None:
    line = one_error_line(run("bench", str(demo_bundle), "--threads", value, "--frames", "1"))
    assert f"threads must be an integer from 1 to {MAX_THREADS}" in line


def test_engine_options_bound_trunk_and_head_threads() -> None:
    assert check_threads(MAX_THREADS) == MAX_THREADS
    with pytest.raises(ConfigError, match=r"^threads must be an integer from 1 to \d+"):
        EngineOptions(threads=MAX_THREADS + 1)
    with pytest.raises(ConfigError, match=r"^head_threads must be an integer from 1 to \d+"):
        EngineOptions(head_threads=10**20)


# -- 3. fps ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1e-300", "0.0001", "1e6"])
def test_run_fps_out_of_range_is_refused(demo_bundle: Path, value: str) -> None:
    line = one_error_line(
        run("run", "--bundle", str(demo_bundle), "--source", "synthetic", "--max-frames", "1", "--fps", value)
    )
    assert "--fps: fps must be a number from 0.001 to 10000" in line


# -- 6. set_schedule ------------------------------------------------------------------------------


def test_set_schedule_every_n_frames_is_bounded_like_the_head_spec() -> None:
    assert check_args("set_schedule", {"head": "box", "every_n_frames": MAX_EVERY_N_FRAMES})["every_n_frames"]
    with pytest.raises(CommandRejected, match=rf"set_schedule: 'every_n_frames' must be at most {MAX_EVERY_N_FRAMES} "):
        check_args("set_schedule", {"head": "box", "every_n_frames": 10**30})


def test_head_spec_schedule_uses_the_same_bound(demo_bundle: Path) -> None:
    data = json.loads((demo_bundle / "manifest.json").read_text(encoding="utf-8"))
    head = next(iter(data["heads"]))
    data["heads"][head]["schedule"] = {"every_n_frames": 10**30}
    with pytest.raises(BundleError, match=rf"every_n_frames' must be at most {MAX_EVERY_N_FRAMES} .*, got 10+$"):
        Manifest.from_mapping(data, "manifest.json")


# -- 7. JSON seq ----------------------------------------------------------------------------------


def _json_payload(**changes: object) -> bytes:
    from edge_runtime.codec import encode_frame
    from edge_runtime.inference.results import FrameResult

    result = FrameResult(frame_id=1, timestamp=1.0, results={}, latency_ms={})
    payload = encode_frame(result, device="pi-01", epoch="9f2c4e1ab07d3356", seq=3, mode="json")
    prefix, body = payload[: payload.index(b"{")], payload[payload.index(b"{") :]
    form = json.loads(body)
    form.update(changes)
    return prefix + json.dumps(form).encode()


@pytest.mark.parametrize(("key", "value"), [("seq", -1), ("seq", 2**64), ("frame_id", -5)])
def test_json_payload_with_a_negative_or_huge_seq_is_malformed(key: str, value: int) -> None:
    assert decode_payload(_json_payload())["seq"] == 3
    with pytest.raises(CodecError, match=rf"malformed body: JSON frame field '{key}' must be"):
        decode_payload(_json_payload(**{key: value}))


# -- 8. broker URL parameters ----------------------------------------------------------------------


def test_topic_prefix_in_the_broker_url_is_refused_not_ignored() -> None:
    with pytest.raises(ConfigError, match=r"topic_prefix is not a broker URL parameter: use --topic-prefix"):
        MqttConfig.from_url("mqtt://host:1883?topic_prefix=factory")
    with pytest.raises(ConfigError, match=r"unknown parameter 'colour' \(known: client_id, protocol"):
        MqttConfig.from_url("mqtt://host:1883?colour=red")


def test_run_refuses_topic_prefix_in_the_broker_url(demo_bundle: Path) -> None:
    line = one_error_line(
        run("run", "--bundle", str(demo_bundle), "--source", "synthetic", "--max-frames", "1",
            "--broker", "mqtt://127.0.0.1:1?topic_prefix=factory")
    )  # fmt: skip
    assert "topic_prefix is not a broker URL parameter" in line


# -- 10. expiry, tls_ca, qos, the TLS hint --------------------------------------------------------------


def _manifest_with(demo_bundle: Path, tmp_path: Path, **values: object) -> Path:
    bundle = tmp_path / "bundle"
    shutil.copytree(demo_bundle, bundle)
    data = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    data["heads"]["box"].update(values)
    (bundle / "manifest.json").write_text(json.dumps(data), encoding="utf-8")
    return bundle


@pytest.mark.parametrize(
    ("values", "words"),
    [({"qos": 5}, "qos must be 0, 1 or 2, got 5"), ({"expiry_s": 1e400}, "expiry_s must be a finite number")],
)
def test_manifest_head_values_name_the_bundle_and_head(
    demo_bundle: Path, tmp_path: Path, values: dict[str, object], words: str
) -> None:
    bundle = _manifest_with(demo_bundle, tmp_path, **values)
    line = one_error_line(run("inspect", str(bundle)))
    assert "manifest.json" in line and "heads.box" in line and words in line, line


def test_config_expiry_inf_names_the_file_and_head(demo_bundle: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[heads.box]\nexpiry_s = inf\n", encoding="utf-8")
    line = one_error_line(
        run("run", "--config", str(config), "--bundle", str(demo_bundle), "--source", "synthetic", "--max-frames", "1")
    )
    assert f"{config}: heads.box.expiry_s must be a finite number" in line


def test_missing_tls_ca_names_the_parameter_and_file(demo_bundle: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing-ca.pem"
    line = one_error_line(
        run("run", "--bundle", str(demo_bundle), "--source", "synthetic", "--max-frames", "1", "--state-dir",
            str(tmp_path / "state"), "--broker", f"mqtts://127.0.0.1:1?tls_ca={missing}")
    )  # fmt: skip
    assert f"tls_ca '{missing}'" in line and "No such file or directory" in line


def test_the_tls_hint_is_one_function() -> None:
    hint = "a port without TLS? mqtts:// needs a TLS listener"
    assert hint in describe_connect_error(ConnectionResetError(104, "Connection reset by peer"), tls=True)
    assert hint in describe_connect_error(ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), tls=True)
    assert hint not in describe_connect_error(ConnectionResetError(104, "Connection reset by peer"), tls=False)


# -- 10. config heads built in Python ------------------------------------------------------------------


def test_runtime_config_checks_head_values_built_in_python() -> None:
    with pytest.raises(ConfigError, match=r"^heads\.box\.expiry_s must be a finite number >= 1, got inf"):
        RuntimeConfig(bundle=Path("b"), source="synthetic", heads={"box": HeadOverride(expiry_s=math.inf)})
    with pytest.raises(ConfigError, match=r"^heads\.box\.qos must be 0, 1 or 2, got 5"):
        RuntimeConfig(bundle=Path("b"), source="synthetic", heads={"box": HeadOverride(qos=5)})
