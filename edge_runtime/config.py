"""Daemon configuration: one file (TOML, YAML or JSON) + environment + command-line flags.

Every setting is declared once in :mod:`edge_runtime.settings.run` (name, type, default, check,
help, ``EDGE_RUNTIME_*`` variable, flag); docs/configuration.md lists them all. Precedence, lowest
first: the bundle manifest (per-head schedule and publishing) < the ``--config`` file <
``EDGE_RUNTIME_*`` environment variables < flags < signed remote commands (at run time only,
not persisted). Every value is checked when the config is built; an error names the key and
where its value came from (the file, the variable, the flag), with close matches for unknown keys.

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
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from edge_runtime.settings.heads import check_head_value
from edge_runtime.settings.run import ENV_PREFIX, HEADS, RUN, SUBSCRIBE_ENV_PREFIX, default_state_dir
from edge_runtime.settings.table import parse_env_value

#: The keys of ``[heads.<name>]`` (:data:`edge_runtime.settings.run.HEADS`).
HEAD_OVERRIDE_KEYS = HEADS.keys()


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
    """Everything ``edge-runtime run`` needs; see the module docstring for the sources. Each
    field's default, check, variable and flag are its row of :data:`~edge_runtime.settings.run.RUN`."""

    bundle: Path
    source: str
    #: ``backend`` / ``precision``: ``auto`` = the tuning (edge_runtime/tuning/), else the device
    #: profile's (edge_runtime/ops/device.py); ``threads`` None = not set, the same.
    backend: str | None = RUN.field("backend")
    precision: str | None = RUN.field("precision")
    threads: int | None = RUN.field("threads")
    #: Tune at start when not tuned (``auto`` only), and how long a tune times candidates.
    tune_on_start: bool = RUN.field("tune_on_start")
    tune_seconds: float = RUN.field("tune_seconds")
    #: Refuse a bundle that would fall back per graph (edge_runtime/inference/artifact_choice.py).
    strict: bool = RUN.field("strict")
    #: A device profile name (``edge-runtime device`` lists them) or ``auto``: detect the board.
    profile: str = RUN.field("profile")
    device_id: str = RUN.field("device_id")
    max_frames: int | None = RUN.field("max_frames")
    output: str | None = RUN.field("output")
    state_dir: Path = RUN.field("state_dir")  # noqa: RUF009 (a dataclasses.field, from the row)
    fps: float | None = RUN.field("fps")
    loop: bool = RUN.field("loop")
    #: Folder sources skip (and count) larger images (edge_runtime/frames/images.py).
    max_image_pixels: int = RUN.field("max_image_pixels")
    queue_size: int = RUN.field("queue_size")
    status_interval_s: float = RUN.field("status_interval_s")
    heartbeat_interval_s: float = RUN.field("heartbeat_interval_s")
    heads: Mapping[str, HeadOverride] = RUN.field("heads")
    broker: str | None = RUN.field("broker")
    topic_prefix: str = RUN.field("topic_prefix")
    spool: Path | None = RUN.field("spool")  # noqa: RUF009 (a dataclasses.field, from the row)
    spool_max_rows: int | None = RUN.field("spool_max_rows")
    spool_max_bytes: int | None = RUN.field("spool_max_bytes")
    spool_synchronous: str = RUN.field("spool_synchronous")
    codec: str = RUN.field("codec")
    compression: str = RUN.field("compression")
    rbe_heartbeat_s: float = RUN.field("rbe_heartbeat_s")
    #: Prometheus endpoint (edge_runtime/ops/metrics.py, the ``metrics`` extra): 0 = off.
    metrics_port: int = RUN.field("metrics_port")
    metrics_host: str = RUN.field("metrics_host")
    #: Public keys (PEM ``.pub``) one of which must have signed the bundle (``manifest.sig``);
    #: several allow key rotation. Empty: the signature is not checked (a warning says so).
    trusted_keys: tuple[Path, ...] = RUN.field("trusted_keys")
    #: Over-the-air updates (edge_runtime/trust/updates.py): roll back to the previous bundle after this
    #: many starts in a row that never processed a few frames; refuse downloads over this size.
    update_max_boot_attempts: int = RUN.field("update_max_boot_attempts")
    update_max_download_mb: int = RUN.field("update_max_download_mb")
    #: Operator public keys (PEM ``.pub``) whose signed remote commands the daemon accepts on
    #: ``<prefix>/<device>/cmd`` (docs/protocol.md §9). Empty: commands off, no subscription.
    command_keys: tuple[Path, ...] = RUN.field("command_keys")
    #: How old (seconds, by the command's ``ts``) a remote command may be.
    command_max_age_s: float = RUN.field("command_max_age_s")

    def __post_init__(self) -> None:
        # a config built in Python (not from_mapping) gets its head values checked too, by the
        # same rows: an error names heads.<name>.<key>, not the spool that would refuse it later
        for name, override in self.heads.items():
            for item in fields(override):
                value = getattr(override, item.name)
                if value is not None:
                    check_head_value(item.name, value, str(name))

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """Every config key."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], where: str = "configuration", origins: Mapping[str, str] | None = None
    ) -> RuntimeConfig:
        """Validate merged settings; errors name the key's origin (``origins[key]``, else ``where``)."""
        values = RUN.validate(data, where, origins)
        if "heads" in values:
            values["heads"] = {name: HeadOverride(**entry) for name, entry in values["heads"].items()}
        return cls(**values)

    @classmethod
    def load(
        cls,
        config_file: str | Path | None = None,
        flags: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> RuntimeConfig:
        """Merge defaults, the file, ``EDGE_RUNTIME_*`` variables and flags (None = not given)."""
        merged, origins = RUN.merge(config_file, flags, os.environ if environ is None else environ)
        return cls.from_mapping(merged, "configuration" if config_file is None else str(config_file), origins)


def environment_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """``EDGE_RUNTIME_MAX_FRAMES=10`` → ``{"max_frames": 10}``; unknown names are errors."""
    return RUN.environment(environ)


__all__ = [
    "ENV_PREFIX",
    "HEAD_OVERRIDE_KEYS",
    "SUBSCRIBE_ENV_PREFIX",
    "HeadOverride",
    "RuntimeConfig",
    "default_state_dir",
    "environment_settings",
    "parse_env_value",
]
