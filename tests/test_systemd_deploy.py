"""Deployment assets in devices/: the systemd unit, deploy.sh, the mosquitto bridge, the example config.

deploy.sh is run against a fake host: ``ssh``, ``scp`` and ``rsync`` on PATH are small
scripts that record their arguments (test doubles for the network tools only). The bridge is
tested with two real mosquitto processes: a "device" broker running a copy of
devices/mosquitto/bridge.conf (ports and paths substituted) and a "cloud" broker.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edge_runtime.config import RuntimeConfig
from tests.broker import HOST, BrokerProcess, MosquittoBroker, find_mosquitto, free_port

ROOT = Path(__file__).resolve().parents[1]
DEVICES = ROOT / "devices"
UNIT = DEVICES / "systemd" / "edge-runtime.service"
DEPLOY = DEVICES / "deploy.sh"
BRIDGE = DEVICES / "mosquitto" / "bridge.conf"
EXAMPLE_CONFIG = DEVICES / "config.example.toml"


def _skip(reason: str) -> None:
    print(f"SKIPPED: {reason}")
    pytest.skip(reason)


# --- the systemd unit --------------------------------------------------------------------------


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("Type", "notify"),
        ("Restart", "on-failure"),
        ("StateDirectory", "edge-runtime"),
        ("ConfigurationDirectory", "edge-runtime"),
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("DevicePolicy", "closed"),
        ("DeviceAllow", "/dev/video0 rw"),
        ("SupplementaryGroups", "video"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("ExecStart", "/opt/edge-runtime/venv/bin/edge-runtime run --config /etc/edge-runtime/config.toml"),
    ],
)
def test_unit_sets(key: str, value: str) -> None:
    assert value in _unit_settings().get(key, []), f"{UNIT.name}: expected {key}={value}"


def test_unit_watchdog_outlasts_several_heartbeats() -> None:
    watchdog = _unit_settings()["WatchdogSec"][0]
    seconds = int(watchdog.rstrip("s"))
    heartbeat = RuntimeConfig.__dataclass_fields__["heartbeat_interval_s"].default
    assert seconds >= 3 * heartbeat, f"WatchdogSec={watchdog} vs the daemon's {heartbeat} s heartbeat"


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        _skip("systemd-analyze is not installed (apt-get install systemd)")
    # verify insists that ExecStart's program exists: point it at a stub, change nothing else.
    stub = tmp_path / "edge-runtime"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/edge-runtime/venv/bin/edge-runtime", str(stub)))
    done = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


# --- deploy.sh -----------------------------------------------------------------------------------


def _fake_tools(tmp_path: Path, ssh_rc: int = 0) -> tuple[dict[str, str], Path]:
    """ssh/scp/rsync that append their argv to calls.log (ssh exits ``ssh_rc``)."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for name, rc in (("ssh", ssh_rc), ("scp", 0), ("rsync", 0)):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexit {rc}\n')
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return env, log


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text('{"format": "1.0", "name": "demo multitask", "version": "1"}\n')
    (bundle / "trunk.onnx").write_bytes(b"not a model")
    config = tmp_path / "config.toml"
    config.write_text('bundle = "/var/lib/edge-runtime/bundles/current"\nsource = "camera:0"\n')
    return bundle, config


def _deploy(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(DEPLOY), *map(str, args)], capture_output=True, text=True, env=env, timeout=60)


def _commands(stdout: str) -> list[str]:
    return [line[2:] for line in stdout.splitlines() if line.startswith("+ ")]


# The order deploy.sh must keep: checks, copy, package, slot, validate, swap, unit, restart, report.
EXPECTED_STEPS = [
    r"^ssh .*-o BatchMode=yes -o ConnectTimeout=5 pi@cam true$",
    r"^ssh .* pi@cam 'command -v python3 ",
    r"^ssh .* 'rm -rf /tmp/edge-runtime-deploy-\w+ && mkdir -m 700 ",
    r"^(rsync|scp) .*bundle.* pi@cam:/tmp/edge-runtime-deploy-\w+/bundle/?$",
    r"^(rsync|scp) .*config\.toml pi@cam:/tmp/edge-runtime-deploy-\w+/config\.toml$",
    r"^(rsync|scp) .*edge-runtime\.service pi@cam:/tmp/edge-runtime-deploy-\w+/edge-runtime\.service$",
    r"python3 -m venv /opt/edge-runtime/venv",
    r"/opt/edge-runtime/venv/bin/python -m pip install .*edge-runtime\[tflite,zstd,signing,camera\]",
    r"cp -R /tmp/edge-runtime-deploy-\w+/bundle /var/lib/edge-runtime/bundles/demo_multitask-\w+\.tmp"
    r" .*mv -T /var/lib/edge-runtime/bundles/demo_multitask-\w+\.tmp /var/lib/edge-runtime/bundles/demo_multitask-\w+;",
    r"edge-runtime run --config /tmp/edge-runtime-deploy-\w+/config\.toml --bundle /var/lib/edge-runtime/bundles/"
    r"demo_multitask-\w+ --source synthetic .*--validate",
    r"ln -sfn demo_multitask-\w+ /var/lib/edge-runtime/bundles/current\.new && mv -T "
    r"/var/lib/edge-runtime/bundles/current\.new /var/lib/edge-runtime/bundles/current",
    r"install -m 0644 /tmp/edge-runtime-deploy-\w+/config\.toml /etc/edge-runtime/config\.toml\.new && mv -T",
    r"install -m 0644 /tmp/edge-runtime-deploy-\w+/edge-runtime\.service /etc/systemd/system/edge-runtime\.service",
    r"systemctl daemon-reload && systemctl enable edge-runtime\.service && systemctl restart edge-runtime\.service",
    r"rm -rf /tmp/edge-runtime-deploy-\w+'",
    r"systemctl --no-pager --full status edge-runtime\.service",
    r"/opt/edge-runtime/venv/bin/edge-runtime health --state-dir /var/lib/edge-runtime",
]


def _assert_steps(commands: list[str]) -> None:
    assert len(commands) == len(EXPECTED_STEPS), "\n".join(commands)
    for command, pattern in zip(commands, EXPECTED_STEPS, strict=True):
        assert re.search(pattern, command), f"{command!r} does not match {pattern!r}"


@pytest.mark.parametrize("copy", ["rsync", "scp"])
def test_dry_run_prints_every_command_and_runs_none(tmp_path: Path, inputs: tuple[Path, Path], copy: str) -> None:
    env, log = _fake_tools(tmp_path)
    bundle, config = inputs
    done = _deploy(env, "pi@cam", bundle, config, "--dry-run", "--copy", copy)
    assert done.returncode == 0, done.stderr
    commands = _commands(done.stdout)
    _assert_steps(commands)
    assert all(c.startswith(copy) for c in commands[3:6])
    assert "sudo sh -c" in commands[6]
    assert not log.exists(), f"--dry-run ran: {log.read_text()}"


def test_deploy_runs_the_same_commands_on_a_reachable_host(tmp_path: Path, inputs: tuple[Path, Path]) -> None:
    env, log = _fake_tools(tmp_path)
    bundle, config = inputs
    done = _deploy(env, "pi@cam", bundle, config, "--copy", "rsync", "--ssh-opts", "-i /keys/pi -o Port=2222")
    assert done.returncode == 0, done.stderr
    calls = log.read_text().splitlines()
    assert len(calls) == len(EXPECTED_STEPS)
    assert all("-i /keys/pi -o Port=2222" in call for call in calls), calls
    assert calls[0] == "ssh -i /keys/pi -o Port=2222 -o BatchMode=yes -o ConnectTimeout=5 pi@cam true"
    assert calls[3].startswith("rsync -a --delete -e ssh -i /keys/pi -o Port=2222 -o BatchMode=yes")
    assert "the service is healthy" in done.stdout


def test_deploy_installs_a_given_wheel(tmp_path: Path, inputs: tuple[Path, Path]) -> None:
    env, _ = _fake_tools(tmp_path)
    bundle, config = inputs
    wheel = tmp_path / "edge_runtime-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK")
    done = _deploy(env, "pi@cam", bundle, config, "--dry-run", "--copy", "scp", "--wheel", wheel, "--extras", "tflite")
    assert done.returncode == 0, done.stderr
    commands = _commands(done.stdout)
    copied = rf"^scp .*{re.escape(str(wheel))} pi@cam:/tmp/edge-runtime-deploy-\w+/$"
    installed = r'pip install .*"/tmp/edge-runtime-deploy-\w+/edge_runtime-0\.1\.0-py3-none-any\.whl\[tflite\]"'
    assert any(re.search(copied, c) for c in commands), commands
    assert any(re.search(installed, c) for c in commands), commands


def test_unreachable_host_is_a_clear_error_and_nothing_is_copied(tmp_path: Path, inputs: tuple[Path, Path]) -> None:
    env, log = _fake_tools(tmp_path, ssh_rc=255)
    bundle, config = inputs
    done = _deploy(env, "pi@nowhere", bundle, config, "--copy", "rsync")
    assert done.returncode == 2
    assert "cannot reach pi@nowhere over ssh" in done.stderr and "nothing was copied or changed" in done.stderr
    assert log.read_text().splitlines() == ["ssh -o BatchMode=yes -o ConnectTimeout=5 pi@nowhere true"]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no-bundle", "bundle directory .* does not exist"),
        ("no-manifest", "is not a bundle: no manifest.json"),
        ("no-config", "config file .* does not exist"),
        ("bad-option", "unknown option --frobnicate"),
        ("two-args", "expected HOST BUNDLE_DIR CONFIG, got 2 arguments"),
        ("bad-copy", "--copy ftp: expected auto, rsync or scp"),
    ],
)
def test_bad_inputs_fail_before_any_network_call(
    tmp_path: Path, inputs: tuple[Path, Path], case: str, message: str
) -> None:
    env, log = _fake_tools(tmp_path)
    bundle, config = inputs
    args: list[str | Path] = ["pi@cam", bundle, config]
    if case == "no-bundle":
        args[1] = tmp_path / "missing"
    elif case == "no-manifest":
        (bundle / "manifest.json").unlink()
    elif case == "no-config":
        args[2] = tmp_path / "missing.toml"
    elif case == "bad-option":
        args.append("--frobnicate")
    elif case == "two-args":
        args.pop()
    elif case == "bad-copy":
        args += ["--copy", "ftp"]
    done = _deploy(env, *args)
    assert done.returncode == 2
    assert re.search(message, done.stderr), done.stderr
    assert not log.exists()


def test_deploy_script_is_shellcheck_clean() -> None:
    tool = shutil.which("shellcheck")
    if tool is None:
        _skip("shellcheck is not installed (apt-get install shellcheck)")
    done = subprocess.run([tool, str(DEPLOY)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout


# --- the example config --------------------------------------------------------------------------


def test_example_config_loads() -> None:
    config = RuntimeConfig.load(config_file=EXAMPLE_CONFIG, environ={})
    assert config.bundle == Path("/var/lib/edge-runtime/bundles/current")
    assert config.source == "camera:0"
    assert config.broker == "mqtt://127.0.0.1:1883"
    assert config.device_id == "cam-entrance"
    assert config.heads["mask"].every_n_frames == 4


def test_example_config_uses_the_state_directory_of_the_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/edge-runtime")  # what StateDirectory= sets
    assert RuntimeConfig.load(config_file=EXAMPLE_CONFIG, environ={}).state_dir == Path("/var/lib/edge-runtime")


# --- the mosquitto bridge ------------------------------------------------------------------------


class _ConfigBroker(BrokerProcess):
    """mosquitto running a given config file."""

    name = "mosquitto"

    def __init__(self, config_text: str, port: int, workdir: Path, executable: str) -> None:
        super().__init__(port, workdir=workdir)
        self.config_path = self.workdir / "mosquitto.conf"
        self.config_path.write_text(config_text)
        self.executable = executable

    def command(self) -> list[str]:
        return [self.executable, "-c", str(self.config_path)]


def _device_config(cloud_port: int, device_port: int, workdir: Path) -> str:
    text = BRIDGE.read_text()
    for old, new in (
        ("listener 1883 127.0.0.1", f"listener {device_port} {HOST}"),
        ("address broker.example.com:1883", f"address {HOST}:{cloud_port}"),
    ):
        assert old in text, f"{BRIDGE.name} no longer has {old!r}"
        text = text.replace(old, new)
    text += f"\npersistence_location {workdir}/\nlog_dest file {workdir}/mosquitto.log\n"
    if os.geteuid() == 0:
        text += "user root\n"
    return text


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("listener", "1883 127.0.0.1"),
        ("topic", 'edge/# out 1 "" ""'),
        ("cleansession", "false"),
        ("persistence", "true"),
        ("max_queued_messages", "0"),
        ("set_tcp_nodelay", "true"),
    ],
)
def test_bridge_config_sets(setting: str, value: str) -> None:
    lines = [line.strip() for line in BRIDGE.read_text().splitlines()]
    assert f"{setting} {value}" in lines


def test_bridge_forwards_qos1_to_the_cloud(tmp_path: Path) -> None:
    exe = find_mosquitto()
    if exe is None:
        _skip("mosquitto is not installed (apt-get install mosquitto)")
    with MosquittoBroker(workdir=tmp_path / "cloud") as cloud:
        received: list[mqtt.MQTTMessage] = []
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="cloud-sub")
        sub.on_message = lambda _c, _u, msg: received.append(msg)
        sub.connect(HOST, cloud.port)
        sub.subscribe("edge/#", qos=1)
        sub.loop_start()
        device_dir = tmp_path / "device"
        device_dir.mkdir()
        device_port = free_port()
        device = _ConfigBroker(_device_config(cloud.port, device_port, device_dir), device_port, device_dir, exe)
        try:
            device.start()
            pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="edge-runtime")
            pub.connect(HOST, device_port)
            pub.loop_start()
            deadline = time.monotonic() + 15
            info = None
            while time.monotonic() < deadline:  # the bridge connects in the background
                if info is None or info.is_published():
                    info = pub.publish("edge/cam-entrance/results", b"\x01payload", qos=1)
                if any(m.topic == "edge/cam-entrance/results" for m in received):
                    break
                time.sleep(0.2)
            pub.loop_stop()
            pub.disconnect()
            results = [m for m in received if m.topic == "edge/cam-entrance/results"]
            assert results, f"nothing bridged; device log:\n{(device_dir / 'mosquitto.log').read_text()}"
            assert results[0].payload == b"\x01payload" and results[0].qos == 1
        finally:
            sub.loop_stop()
            sub.disconnect()
            device.cleanup()
