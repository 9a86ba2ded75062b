"""The settings tables (edge_runtime/settings/): one row per setting, and what is derived from them
(docs/configuration.md, file / environment / flag parsing, errors naming key and origin), the
precedence bundle manifest < file < environment < flags < remote command, and the old configs."""

from __future__ import annotations

import re
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.cli import _build_parser
from edge_runtime.cloud.options import SubscribeOptions
from edge_runtime.config import HeadOverride, RuntimeConfig
from edge_runtime.errors import ConfigError
from edge_runtime.settings.page import COMMAND, render_markdown
from edge_runtime.settings.run import HEADS, RUN
from edge_runtime.settings.subscribe import SUBSCRIBE
from edge_runtime.settings.table import Table

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
BASE = {"bundle": "b", "source": "synthetic"}


def test_generated_page_is_current() -> None:
    page = ROOT / "docs" / "configuration.md"
    assert page.read_text(encoding="utf-8") == render_markdown(), f"docs/configuration.md is stale: run {COMMAND}"
    assert "docs/configuration.md" in (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("cls", "table"),
    [(RuntimeConfig, RUN), (SubscribeOptions, SUBSCRIBE), (HeadOverride, HEADS)],
    ids=["run", "subscribe", "heads"],
)
def test_each_field_is_one_row_with_its_default(cls: Any, table: Table) -> None:
    assert sorted(f.name for f in fields(cls)) == sorted(table.keys())
    for f in fields(cls):
        row = table[f.name]
        assert row.help and row.group, f"{f.name}: a row needs help and a group"
        if cls is HeadOverride:
            assert f.default is None  # None: the bundle's (row.default_doc says what that is)
        elif row.required:
            assert f.default is MISSING and f.default_factory is MISSING
        elif row.factory is not None:
            assert f.default_factory is row.factory
        else:
            assert f.default == row.default, f.name
    envs = [table.env_name(row) for row in table.rows if table.env_name(row)]
    flags = [table.flag(row) for row in table.rows if table.flag(row)]
    assert len(set(envs)) == len(envs) and len(set(flags)) == len(flags)


def test_command_rows_name_the_remote_commands() -> None:
    from edge_runtime.trust.commands import COMMANDS

    named = {command for table in (RUN, HEADS) for row in table.rows for command in row.commands}
    assert named <= set(COMMANDS)
    assert {"enable_head", "disable_head", "set_schedule"} <= named  # the commands that change a setting


@pytest.mark.parametrize(
    ("text", "environ", "flags", "message"),
    [
        ("status_interval_s = nan\n", {}, {}, "config.toml: status_interval_s must be a finite number > 0, got nan"),
        ("heartbeat_interval_s = inf\n", {}, {}, "config.toml: heartbeat_interval_s must be a finite number > 0"),
        ("[heads.box]\nexpiry_s = inf\n", {}, {}, "config.toml: heads.box.expiry_s must be a finite number >= 1"),
        ("[heads.box]\ndeadband = -0.5\n", {}, {}, "config.toml: heads.box.deadband must be a number >= 0, got -0.5"),
        (
            "[heads.box]\nexpiry = 3\n",
            {},
            {},
            "config.toml: heads.box: unknown key 'expiry' (did you mean 'expiry_s'?)",
        ),
        ("[heads.box]\nqos = true\n", {}, {}, "config.toml: heads.box.qos must be 0, 1 or 2, got True"),
        (
            "",
            {"EDGE_RUNTIME_FPS": "nan"},
            {},
            "EDGE_RUNTIME_FPS: fps must be a finite number from 0.001 to 10000, got nan",
        ),
        ("", {"EDGE_RUNTIME_RBE_HEARTBEAT_S": "1e999"}, {}, "EDGE_RUNTIME_RBE_HEARTBEAT_S: rbe_heartbeat_s must be"),
        ("", {"EDGE_RUNTIME_QUEUE_SIZE": "0"}, {}, "EDGE_RUNTIME_QUEUE_SIZE: queue_size must be an integer >= 1"),
        ("", {}, {"metrics_port": 70000}, "--metrics-port: metrics_port must be an integer from 0 to 65535"),
        ("", {}, {"command_max_age_s": float("inf")}, "--command-max-age-s: command_max_age_s must be a finite"),
        ("", {}, {"backend": "onnxruntme"}, "--backend: backend 'onnxruntme' is not one of auto, onnxruntime, tflite"),
        ("codec = 'jsn'\n", {}, {}, "config.toml: codec 'jsn' is not one of msgpack, json (did you mean 'json'?)"),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 40 else None,
)
def test_bad_values_are_refused_naming_key_and_origin(
    tmp_path: Path, text: str, environ: dict[str, str], flags: dict[str, Any], message: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text("bundle = 'b'\nsource = 'synthetic'\n" + text)
    with pytest.raises(ConfigError) as caught:
        RuntimeConfig.load(config_file=path, flags=flags, environ=environ)
    assert message in str(caught.value).replace(str(tmp_path) + "/", "")


def test_json_nan_and_subscriber_range(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"bundle": "b", "source": "synthetic", "heads": {"box": {"deadband": NaN}}}')
    with pytest.raises(ConfigError, match=r"config\.json: heads\.box\.deadband must be a finite number >= 0, got nan"):
        RuntimeConfig.load(config_file=path, environ={})
    with pytest.raises(ConfigError, match=r"--session-expiry: session_expiry_s must be whole seconds from 0 to"):
        SubscribeOptions.load(flags={"broker": "mqtt://h", "client_id": "c", "session_expiry_s": 2**32}, environ={})


def test_precedence_file_environment_flags(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("bundle = 'b'\nsource = 'synthetic'\nqueue_size = 2\ncodec = 'json'\nloop = true\n")
    environ = {"EDGE_RUNTIME_QUEUE_SIZE": "3", "EDGE_RUNTIME_CODEC": "msgpack"}
    config = RuntimeConfig.load(config_file=path, flags={"queue_size": 4}, environ=environ)
    assert (config.queue_size, config.codec, config.loop) == (4, "msgpack", True)
    assert RuntimeConfig.load(config_file=path, environ=environ).queue_size == 3
    assert RuntimeConfig.load(config_file=path, environ={}).queue_size == 2
    assert RuntimeConfig.load(flags=BASE, environ={}).queue_size == 8  # the row's default


def test_run_flags_come_from_the_table_and_help_groups_as_the_page(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # no wrapping inside profile names
    argv = ["run", "--bundle", "b", "--source", "synthetic", "--queue-size", "3", "--no-loop", "--codec", "json"]
    args = _build_parser().parse_args([*argv, "--trusted-key", "a.pub", "--trusted-key", "b.pub"])
    config = RuntimeConfig.load(flags=RUN.flag_values(args), environ={})
    assert (config.queue_size, config.loop, config.codec) == (3, False, "json")
    assert config.trusted_keys == (Path("a.pub"), Path("b.pub"))
    with pytest.raises(SystemExit):
        _build_parser().parse_args(["run", "--help"])
    help_text = capsys.readouterr().out
    groups = [g for g in dict.fromkeys(row.group for row in RUN.rows if RUN.flag(row))]
    assert [g for g in re.findall(r"^(\S[^\n]*):$", help_text, re.M) if g in groups] == groups
    page_groups = re.findall(r"^### (.+)$", render_markdown().split("## `edge-runtime subscribe`")[0], re.M)
    assert page_groups[: len(groups)] == groups
    backend = " ".join(help_text.split("\n  --backend auto|onnxruntime|tflite")[1].split("--precision")[0].split())
    assert "the device profile's" in backend and "tflite (raspberry-pi-4, raspberry-pi-5)" in backend


def test_remote_command_wins_at_run_time_and_is_not_persisted(demo_bundle: Path, tmp_path: Path) -> None:
    from edge_runtime.daemon.remote_control import DaemonController
    from edge_runtime.daemon.validation import build_engine

    flags = {"bundle": str(demo_bundle), "source": "synthetic", "state_dir": str(tmp_path / "state"), "threads": 1}
    with build_engine(RuntimeConfig.load(flags=flags, environ={}), demo_bundle) as engine:
        from_manifest = engine.scheduler.every_n_frames("mask")
    path = tmp_path / "config.toml"
    path.write_text(f"[heads.mask]\nevery_n_frames = {from_manifest + 1}\n")
    before = path.read_bytes()
    config = RuntimeConfig.load(config_file=path, flags=flags, environ={})
    with build_engine(config, demo_bundle) as engine:
        assert engine.scheduler.every_n_frames("mask") == from_manifest + 1  # the file over the manifest

        class Running:
            current_engine = engine

        controller = DaemonController(Running())  # type: ignore[arg-type]
        assert controller.set_schedule("mask", every_n_frames=7) == {"head": "mask", "every_n_frames": 7}
        assert engine.scheduler.every_n_frames("mask") == 7  # the command over the file
    assert path.read_bytes() == before  # not persisted: a restart starts from the configuration
    with build_engine(RuntimeConfig.load(config_file=path, flags=flags, environ={}), demo_bundle) as engine:
        assert engine.scheduler.every_n_frames("mask") == from_manifest + 1


def _commented_keys(text: str) -> list[str]:
    """Keys of ``key = value`` lines, commented-out ones included (``# trusted_keys = [...]``)."""
    return re.findall(r"^#?\s*([a-z_0-9]+)\s*=", text, re.M)


def test_example_config_is_checked_against_the_table() -> None:
    text = (ROOT / "devices" / "config.example.toml").read_text(encoding="utf-8")
    config = RuntimeConfig.load(config_file=ROOT / "devices" / "config.example.toml", environ={})
    data = tomllib.loads(text)
    for key, value in data.items():
        if key != "heads":
            assert getattr(config, key) == RUN.check_value(key, value), key
    assert set(_commented_keys(text)) <= set(RUN.keys()) | set(HEADS.keys()), "a key the table does not know"
    for name, entry in data["heads"].items():
        assert config.heads[name] == HeadOverride(**{k: HEADS.check_value(k, v) for k, v in entry.items()})


def _plain(value: Any) -> Any:
    """Paths as text, path lists as lists of text: what a TOML file holds."""
    if isinstance(value, (list, tuple)):
        return [str(item) for item in value]
    return str(value) if isinstance(value, Path) else value


def _toml_blocks(path: Path) -> list[str]:
    return re.findall(r"^\s*```toml\n(.*?)^\s*```", path.read_text(encoding="utf-8"), re.M | re.S)


def test_old_example_configs_load_unchanged() -> None:
    """The configs shipped before the settings table (the example file, the README's, the
    config module's docstring) load with the same values."""
    import edge_runtime.config as config_module

    docstring = (config_module.__doc__ or "").split("Example config (``edge-runtime.toml``)::\n")[1]
    docstring = "\n".join(line[4:] for line in docstring.split("\n\nExample::")[0].splitlines())
    configs = [docstring, *(b for b in _toml_blocks(ROOT / "README.md") if "decoder" not in b)]
    assert len(configs) == 4
    for text in configs:
        data = tomllib.loads(text)
        if text.startswith("# subscribe.toml"):
            options = SubscribeOptions.from_mapping(data, "README")
            assert (options.client_id, options.session_expiry_s) == ("cloud-1", 86400)
            continue
        config = RuntimeConfig.from_mapping({**BASE, **data}, "README")
        for key, value in data.items():
            if key == "heads":
                assert set(config.heads) == set(value)
                for name, entry in value.items():
                    assert {k: getattr(config.heads[name], k) for k in entry} == entry
            else:
                assert _plain(getattr(config, key)) == _plain(value), key
    config = RuntimeConfig.load(config_file=ROOT / "devices" / "config.example.toml", environ={})
    assert (config.backend, config.precision, config.threads, config.compression) == ("auto", "auto", None, "zstd")
    assert (config.tune_on_start, config.tune_seconds) == (True, 6.0)
    assert (config.heads["mask"].every_n_frames, config.heads["shape"].deadband) == (4, 0.05)
    assert (config.heartbeat_interval_s, config.queue_size, config.topic_prefix) == (5.0, 8, "edge")
