"""Daemon configuration: one file (TOML, YAML or JSON) + environment + command-line flags.

Precedence: flags > ``EDGE_RUNTIME_*`` environment variables > the ``--config`` file >
defaults. Every key is validated when the config is built; an unknown key (in the file or
the environment) is an error naming the key, where it came from and close matches.

Example config (``edge-runtime.toml``)::

    bundle = "/opt/bundles/demo"
    source = "camera:0"
    device_id = "cam-entrance"
    broker = "mqtts://cam-entrance:secret@broker.example:8883"
    threads = 4          # wins over the device profile's
    profile = "auto"     # or a name from `edge-runtime device`, e.g. "raspberry-pi-5"
    rbe_heartbeat_s = 30
    [heads.mask]
    every_n_frames = 4
    [heads.shape]
    deadband = 0.05      # report by exception: publish only when a value moved by more than 0.05
    qos = 1
    expiry_s = 300

Example::

    config = RuntimeConfig.load(config_file="edge-runtime.toml", flags={"max_frames": 100})
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from edge_runtime.bundle.specs import PRECISIONS
from edge_runtime.errors import ConfigError, close_matches
from edge_runtime.names import check_device_id
from edge_runtime.specfiles import load_mapping_file

ENV_PREFIX = "EDGE_RUNTIME_"
#: Environment variables of ``edge-runtime subscribe`` (its own settings, not ``run``'s).
SUBSCRIBE_ENV_PREFIX = ENV_PREFIX + "SUBSCRIBE_"
HEAD_OVERRIDE_KEYS = ("enabled", "every_n_frames", "qos", "expiry_s", "deadband", "float32")
CODEC_MODES = ("msgpack", "json")
COMPRESSIONS = ("none", "zstd")
SPOOL_SYNC_MODES = ("normal", "full")
_INT_KEYS = (
    "threads",
    "max_frames",
    "queue_size",
    "spool_max_rows",
    "spool_max_bytes",
    "update_max_boot_attempts",
    "update_max_download_mb",
)
_FLOAT_KEYS = ("fps", "status_interval_s", "heartbeat_interval_s", "rbe_heartbeat_s", "command_max_age_s")


def default_state_dir() -> Path:
    """``$STATE_DIRECTORY`` under systemd, else ``$XDG_STATE_HOME/edge-runtime`` or ``~/.local/state/edge-runtime``."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "edge-runtime"


@dataclass(frozen=True)
class HeadOverride:
    """Per-head settings from the config: they override the bundle's schedule and publishing.

    ``qos`` / ``expiry_s`` override the manifest's; ``deadband`` turns on report-by-exception
    for the head (its result is published only when a value moved by more than this, or a
    label / count changed); ``float32`` sends its float arrays as float32 instead of float16.
    """

    enabled: bool | None = None
    every_n_frames: int | None = None
    qos: int | None = None
    expiry_s: float | None = None
    deadband: float | None = None
    float32: bool | None = None


@dataclass(frozen=True)
class RuntimeConfig:
    """Everything ``edge-runtime run`` needs; see the module docstring for the sources."""

    bundle: Path
    source: str
    #: ``backend`` / ``precision`` / ``threads``: None = not set, the device profile decides
    #: (edge_runtime/ops/device.py; without one: onnxruntime, fp32, all cores).
    backend: str | None = None
    precision: str | None = None
    threads: int | None = None
    #: A device profile name (``edge-runtime device`` lists them) or ``auto``: detect the board.
    profile: str = "auto"
    device_id: str = field(default_factory=socket.gethostname)
    max_frames: int | None = None
    output: str | None = None
    state_dir: Path = field(default_factory=default_state_dir)
    fps: float | None = None
    loop: bool = False
    queue_size: int = 8
    status_interval_s: float = 10.0
    heartbeat_interval_s: float = 5.0
    heads: Mapping[str, HeadOverride] = field(default_factory=dict)
    broker: str | None = None
    topic_prefix: str = "edge"
    spool: Path | None = None
    spool_max_rows: int | None = 100_000
    spool_max_bytes: int | None = 256 * 1024 * 1024
    spool_synchronous: str = "normal"
    codec: str = "msgpack"
    compression: str = "none"
    rbe_heartbeat_s: float = 30.0
    #: Prometheus endpoint (edge_runtime/ops/metrics.py, the ``metrics`` extra): 0 = off.
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"
    #: Public keys (PEM ``.pub``) one of which must have signed the bundle (``manifest.sig``);
    #: several allow key rotation. Empty: the signature is not checked (a warning says so).
    trusted_keys: tuple[Path, ...] = ()
    #: Over-the-air updates (edge_runtime/trust/updates.py): roll back to the previous bundle after this
    #: many starts in a row that never processed a few frames; refuse downloads over this size.
    update_max_boot_attempts: int = 3
    update_max_download_mb: int = 512
    #: Operator public keys (PEM ``.pub``) whose signed remote commands the daemon accepts on
    #: ``<prefix>/<device>/cmd`` (docs/protocol.md §9). Empty: commands off, no subscription.
    command_keys: tuple[Path, ...] = ()
    #: How old (seconds, by the command's ``ts``) a remote command may be.
    command_max_age_s: float = 60.0

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """Every config key."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str) -> RuntimeConfig:
        """Validate merged settings; ``where`` names their origin in errors."""
        keys = cls.keys()
        for key in data:
            if key not in keys:
                raise ConfigError(
                    f"{where}: unknown key {key!r}{close_matches(key, keys)}; valid keys: {', '.join(keys)}"
                )
        for required in ("bundle", "source"):
            if data.get(required) in (None, ""):
                raise ConfigError(f"{where}: {required!r} is required (flag --{required} or config key {required!r})")
        values: dict[str, Any] = {}
        values["bundle"] = Path(_typed(data, "bundle", str, where))
        values["source"] = _typed(data, "source", str, where)
        if data.get("backend") is not None:
            values["backend"] = _typed(data, "backend", str, where)
        if data.get("profile") is not None:
            values["profile"] = _profile_name(_typed(data, "profile", str, where), where)
        if data.get("precision") is not None:
            precision = _typed(data, "precision", str, where)
            if precision not in PRECISIONS:
                raise ConfigError(
                    f"{where}: precision {precision!r} is not one of {', '.join(PRECISIONS)}"
                    f"{close_matches(precision, PRECISIONS)}"
                )
            values["precision"] = precision
        for key in _INT_KEYS:
            if data.get(key) is not None:
                value = _typed(data, key, int, where)
                if value < 1:
                    raise ConfigError(f"{where}: {key!r} must be >= 1, got {value}")
                values[key] = value
        for key in _FLOAT_KEYS:
            if data.get(key) is not None:
                number = float(_typed(data, key, (int, float), where))
                if number <= 0:
                    raise ConfigError(f"{where}: {key!r} must be > 0, got {number}")
                values[key] = number
        if data.get("metrics_port") is not None:
            port = _typed(data, "metrics_port", int, where)
            if not 0 <= port <= 65535:
                raise ConfigError(f"{where}: 'metrics_port' must be 0 (off) to 65535, got {port}")
            values["metrics_port"] = port
        for key in ("device_id", "output", "broker", "topic_prefix", "metrics_host"):
            if data.get(key) is not None:
                values[key] = _typed(data, key, str, where)
        for key, choices in (
            ("spool_synchronous", SPOOL_SYNC_MODES),
            ("codec", CODEC_MODES),
            ("compression", COMPRESSIONS),
        ):
            if data.get(key) is not None:
                choice = _typed(data, key, str, where)
                if choice not in choices:
                    raise ConfigError(
                        f"{where}: {key} {choice!r} is not one of {', '.join(choices)}{close_matches(choice, choices)}"
                    )
                values[key] = choice
        device_id = values.get("device_id")
        if device_id is not None:
            check_device_id(device_id, where)
        if data.get("state_dir") is not None:
            values["state_dir"] = Path(_typed(data, "state_dir", str, where))
        if data.get("spool") is not None:
            values["spool"] = Path(_typed(data, "spool", str, where))
        prefix = values.get("topic_prefix")
        if prefix is not None and (not prefix or any(c in prefix for c in "+#") or prefix.startswith("/")):
            raise ConfigError(f"{where}: topic_prefix {prefix!r} must be non-empty, free of '+', '#' and a leading '/'")
        if "loop" in data:
            values["loop"] = _typed(data, "loop", bool, where)
        if data.get("trusted_keys") is not None:
            values["trusted_keys"] = _trusted_keys(data["trusted_keys"], where)
        if data.get("command_keys") is not None:
            values["command_keys"] = _trusted_keys(data["command_keys"], where, "command_keys")
        if "heads" in data:
            values["heads"] = _head_overrides(data["heads"], where)
        return cls(**values)

    @classmethod
    def load(
        cls,
        config_file: str | Path | None = None,
        flags: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> RuntimeConfig:
        """Merge defaults, the file, ``EDGE_RUNTIME_*`` variables and flags (None = not given)."""
        merged: dict[str, Any] = {}
        origin = "configuration"
        if config_file is not None:
            merged.update(load_mapping_file(config_file))
            origin = str(config_file)
        merged.update(environment_settings(os.environ if environ is None else environ))
        merged.update({k: v for k, v in (flags or {}).items() if v is not None})
        return cls.from_mapping(merged, origin)


def _trusted_keys(value: Any, where: str, key: str = "trusted_keys") -> tuple[Path, ...]:
    """``trusted_keys`` / ``command_keys``: one path, or a list of paths (env: comma-separated)."""
    items = [value] if isinstance(value, (str, Path)) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, (str, Path)) and str(i) for i in items):
        raise ConfigError(f"{where}: {key!r} must be a path or a list of paths to .pub files, got {value!r}")
    return tuple(Path(i) for i in items)


def _profile_name(name: str, where: str) -> str:
    from edge_runtime.ops.device import AUTO, profile_names

    names = profile_names()
    if name != AUTO and name not in names:
        raise ConfigError(
            f"{where}: profile {name!r} is not {AUTO!r} or one of {', '.join(names)}{close_matches(name, names)}"
        )
    return name


def environment_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """``EDGE_RUNTIME_MAX_FRAMES=10`` → ``{"max_frames": 10}``; unknown names are errors."""
    keys = [k for k in RuntimeConfig.keys() if k != "heads"]
    settings: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name.startswith(SUBSCRIBE_ENV_PREFIX):
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in keys:
            env_names = [ENV_PREFIX + k.upper() for k in keys]
            raise ConfigError(f"environment variable {name} is not a setting{close_matches(name, env_names)}")
        if key in ("trusted_keys", "command_keys"):
            settings[key] = [part.strip() for part in raw.split(",") if part.strip()]
            continue
        settings[key] = _parse_env(key, raw, name)
    return settings


def _parse_env(key: str, raw: str, name: str) -> Any:
    int_keys = (*_INT_KEYS, "metrics_port")
    kind = int if key in int_keys else float if key in _FLOAT_KEYS else bool if key == "loop" else str
    return parse_env_value(raw, name, kind)


def parse_env_value(raw: str, name: str, kind: type) -> Any:
    """The text of environment variable ``name`` as ``kind`` (int, float, bool or str); a
    ConfigError naming the variable when it is not one."""
    if kind is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={raw!r}: expected true or false")
    if kind in (int, float):
        try:
            return kind(raw)
        except ValueError as exc:
            raise ConfigError(f"{name}={raw!r}: expected {'an integer' if kind is int else 'a number'}") from exc
    return raw


def _typed(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = data[key]
    if isinstance(value, Path) and kind is str:
        return str(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, (int, float))):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}: {key!r} must be {names}, got {value!r}")
    return value


def _head_overrides(value: Any, where: str) -> dict[str, HeadOverride]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: 'heads' must be a table of head names")
    result = {}
    for name, entry in value.items():
        at = f"{where}: heads.{name}"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{at}: must be a table with {', '.join(HEAD_OVERRIDE_KEYS)}")
        for key in entry:
            if key not in HEAD_OVERRIDE_KEYS:
                raise ConfigError(f"{at}: unknown key {key!r}{close_matches(key, HEAD_OVERRIDE_KEYS)}")
        enabled = entry.get("enabled")
        if enabled is not None and not isinstance(enabled, bool):
            raise ConfigError(f"{at}: 'enabled' must be true or false")
        every = entry.get("every_n_frames")
        if every is not None and (not isinstance(every, int) or isinstance(every, bool) or every < 1):
            raise ConfigError(f"{at}: 'every_n_frames' must be an integer >= 1")
        qos = entry.get("qos")
        if qos is not None and (isinstance(qos, bool) or qos not in (0, 1, 2)):
            raise ConfigError(f"{at}: 'qos' must be 0, 1 or 2, got {qos!r}")
        numbers: dict[str, float | None] = {}
        for key, low in (("expiry_s", 1.0), ("deadband", 0.0)):
            value = entry.get(key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low
            ):
                raise ConfigError(f"{at}: {key!r} must be a number >= {low:g}, got {value!r}")
            numbers[key] = None if value is None else float(value)
        float32 = entry.get("float32")
        if float32 is not None and not isinstance(float32, bool):
            raise ConfigError(f"{at}: 'float32' must be true or false")
        result[str(name)] = HeadOverride(
            enabled=enabled,
            every_n_frames=every,
            qos=qos,
            expiry_s=numbers["expiry_s"],
            deadband=numbers["deadband"],
            float32=float32,
        )
    return result
