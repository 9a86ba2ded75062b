"""The settings of ``edge-runtime run``: :data:`RUN` (one row each) and :data:`HEADS`, the keys of
``[heads.<name>]`` (declared in :mod:`edge_runtime.settings.heads`).
:class:`~edge_runtime.config.RuntimeConfig` takes its fields' defaults, validation,
``EDGE_RUNTIME_*`` variables and ``run`` flags from here; docs/configuration.md is generated
from it (``python -m edge_runtime.settings``).

To add a setting: one :class:`~edge_runtime.settings.table.Setting` row below, a field of
``RuntimeConfig`` (``name: type = RUN.field("name")``) and its use.

Example::

    RUN["threads"].default_text()     # "the device profile's: 4 (jetson-nano, ...); all cores (...)"
    RUN.env_name(RUN["max_frames"])   # "EDGE_RUNTIME_MAX_FRAMES"
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

from edge_runtime.bundle.specs import PRECISIONS
from edge_runtime.codec.envelope import COMPRESSIONS, MODES
from edge_runtime.delivery.spool_file import SYNCHRONOUS_MODES
from edge_runtime.errors import ConfigError, close_matches
from edge_runtime.inference.backends import BACKENDS, THREADS_PER_CPU, check_threads
from edge_runtime.names import device_id_problem
from edge_runtime.settings.heads import HEAD_GROUP, HEADS, check_heads
from edge_runtime.settings.table import NO_FLAG, Setting, Table
from edge_runtime.tuning.configs import AUTO

ENV_PREFIX = "EDGE_RUNTIME_"
#: Environment variables of ``edge-runtime subscribe`` (its own settings, not ``run``'s).
SUBSCRIBE_ENV_PREFIX = ENV_PREFIX + "SUBSCRIBE_"
#: The range of ``fps``: one frame in 1000 s at the slowest (slower overflows the sources'
#: timestamps at 1e-300), and 10000 at the fastest (beyond, the throttle does nothing).
MIN_FPS, MAX_FPS = 1e-3, 10_000.0


def default_state_dir() -> Path:
    """``$STATE_DIRECTORY`` under systemd, else ``$XDG_STATE_HOME/edge-runtime`` or ``~/.local/state/edge-runtime``."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "edge-runtime"


def _profile_default(key: str, auto: str | None = None) -> Callable[[], str]:
    """The default of a profile-dependent setting in words, from the shipped profiles (after
    ``auto``'s tuning when the setting has that choice)."""

    def text() -> str:
        from edge_runtime.ops.device import load_profile, profile_names

        by_value: dict[str, list[str]] = {}
        for name in profile_names():
            value = getattr(load_profile(name), key)
            by_value.setdefault("all cores" if value is None else str(value), []).append(name)
        profile = "the device profile's: " + "; ".join(f"{v} ({', '.join(n)})" for v, n in by_value.items())
        return profile if auto is None else f"{auto}: the tuning if there is one, else {profile}"

    return text


def _check_profile(name: str) -> str:
    from edge_runtime.ops.device import profile_names

    names = profile_names()
    if name != AUTO and name not in names:
        raise ConfigError(f"profile {name!r} is not {AUTO!r} or one of {', '.join(names)}{close_matches(name, names)}")
    return name


def _check_device_id(value: str) -> str:
    problem = device_id_problem(value)
    if problem is not None:
        raise ConfigError(f"device_id {value!r} {problem}")
    return value


def _check_topic_prefix(prefix: str) -> str:
    if not prefix or any(c in prefix for c in "+#") or prefix.startswith("/"):
        raise ConfigError(f"topic_prefix {prefix!r} must be non-empty, free of '+', '#' and a leading '/'")
    return prefix


SOURCE, INFERENCE, OUTPUT, SPOOL, STATUS, TRUST = (
    "Bundle and frames",
    "Inference",
    "Results and MQTT",
    "State and spool",
    "Status and health",
    "Signatures, commands and updates",
)
#: Every setting of ``edge-runtime run``, in the order of docs/configuration.md and ``run --help``.
RUN = Table(
    ENV_PREFIX,
    (
        Setting("bundle", "path", help="bundle directory", group=SOURCE, required=True, metavar="BUNDLE_DIR"),
        Setting(
            "source", "str", help="frame source: synthetic[:WxH], a folder of images, a video file, camera:N, "
            "rtsp://..., gst:PIPELINE (video files, camera, rtsp and gst need the [camera] extra; image folders need "
            "[camera] or [images], unless they hold only .npy, .png and uncompressed .bmp files)",
            group=SOURCE, required=True, metavar="SOURCE",
        ),
        Setting("max_frames", "int", None, "stop after N frames", SOURCE, minimum=1, default_doc="no limit",
                metavar="N"),
        Setting("fps", "float", None, "throttle synthetic and folder sources to this rate (frames per second)",
                SOURCE, minimum=MIN_FPS, maximum=MAX_FPS, default_doc="not set: as fast as the source"),
        Setting("loop", "bool", False, "restart a folder or video source at its end", SOURCE),
        Setting("max_image_pixels", "int", 50_000_000, "skip (and count) images of more than this many pixels "
                "(width x height), checked from the file's header before decoding where the format allows",
                SOURCE, minimum=1, metavar="N"),
        Setting(
            "profile", "str", "auto", "device profile (see edge-runtime device), or auto to detect the board",
            INFERENCE, check=_check_profile, metavar="NAME",
        ),
        Setting("backend", "str", AUTO, "inference backend; auto: the tuning of edge-runtime tune for this bundle "
                "and device (per graph), else the device profile's", INFERENCE, choices=(AUTO, *BACKENDS),
                default_doc=_profile_default("backend", AUTO), profile_default=True),
        Setting("precision", "str", AUTO, "preferred precision (per-graph fallback); auto: as backend", INFERENCE,
                choices=(AUTO, *PRECISIONS), default_doc=_profile_default("precision", AUTO), profile_default=True),
        Setting("strict", "bool", False, "refuse a bundle where a graph would run on another backend or at another "
                "precision than backend/precision ask, instead of falling back per graph (also on updates)", INFERENCE),
        Setting("threads", "int", None, "intra-op threads of the trunk's session (heads get one each); at most "
                f"{THREADS_PER_CPU} per CPU", INFERENCE, minimum=1, check=check_threads,
                default_doc=_profile_default("threads"), profile_default=True, metavar="N"),
        Setting("tune_on_start", "bool", False, "with backend and precision auto and no tuning for this bundle and "
                "device: tune at start (edge-runtime tune; inference pauses about tune_seconds) and swap the choice in "
                "between frames", INFERENCE),
        Setting("tune_seconds", "float", 6.0, "time a tune spends timing candidates (tune_on_start, the remote tune "
                "command); loading them and their self-tests come on top", INFERENCE, minimum=0.5, maximum=600.0,
                metavar="S"),
        Setting("queue_size", "int", 8, "results waiting between inference and output", INFERENCE, minimum=1,
                metavar="N"),
        Setting("device_id", "str", help="device name in topics and results (no '/', '+' or '#')", group=OUTPUT,
                factory=socket.gethostname, default_doc="the host name", check=_check_device_id, metavar="ID"),
        Setting("output", "str", None, "JSON lines to stdout (-) or a file", OUTPUT,
                default_doc="- without a broker, else none", metavar="-|FILE"),
        Setting("broker", "str", None, "publish results over MQTT: mqtt://[user:pass@]host:port or mqtts://...",
                OUTPUT, default_doc="not set: no MQTT", metavar="URL"),
        Setting("topic_prefix", "str", "edge", "MQTT topics <prefix>/<device>/results|status|cmd", OUTPUT,
                check=_check_topic_prefix, metavar="PREFIX"),
        Setting("codec", "str", "msgpack", "payload encoding (json for debugging)", OUTPUT, choices=MODES),
        Setting("compression", "str", "none", "payload compression (zstd needs the [zstd] extra)", OUTPUT,
                choices=COMPRESSIONS),
        Setting("rbe_heartbeat_s", "float", 30.0,
                "report by exception: a heartbeat after this many seconds without a message", OUTPUT, above=0,
                metavar="SECONDS"),
        Setting("state_dir", "path", help="where seq, epoch, the heartbeat, the spool and update slots live",
                group=SPOOL, factory=default_state_dir, metavar="DIR",
                default_doc="$STATE_DIRECTORY (systemd), else $XDG_STATE_HOME/edge-runtime or "
                "~/.local/state/edge-runtime"),
        Setting("spool", "path", None, "store-and-forward file", SPOOL, default_doc="STATE_DIR/spool.sqlite",
                metavar="FILE"),
        Setting("spool_max_rows", "int", 100_000, "results kept for the broker; beyond, the oldest are dropped",
                SPOOL, minimum=1, metavar="N"),
        Setting("spool_max_bytes", "int", 256 * 1024 * 1024,
                "bytes kept for the broker; beyond, the oldest results are dropped", SPOOL, minimum=1,
                metavar="BYTES"),
        Setting("spool_synchronous", "str", "normal",
                "normal survives a process kill, full a power loss too (slower)", SPOOL, choices=SYNCHRONOUS_MODES),
        Setting("status_interval_s", "float", 10.0, "seconds between retained MQTT status messages", STATUS,
                above=0, metavar="SECONDS"),
        Setting("heartbeat_interval_s", "float", 5.0,
                "seconds between heartbeat file writes and systemd WATCHDOG=1 (edge-runtime health)", STATUS,
                above=0, metavar="SECONDS"),
        Setting("metrics_port", "int", 0, "serve Prometheus metrics on this port (0: off; the [metrics] extra)",
                STATUS, minimum=0, maximum=65535, metavar="PORT"),
        Setting("metrics_host", "str", "127.0.0.1", "address of the metrics endpoint", STATUS, metavar="HOST"),
        Setting(
            "trusted_keys", "paths", (), "public key (.pub) that must have signed the bundle; several: any one "
            "of them (repeat the flag; EDGE_RUNTIME_TRUSTED_KEYS=a.pub,b.pub)", TRUST, flag="--trusted-key",
            default_doc="none: signatures not checked (a warning says so)", metavar="PATH",
        ),
        Setting(
            "command_keys", "paths", (), "accept signed remote commands from this operator public key "
            "(repeatable; EDGE_RUNTIME_COMMAND_KEYS=a.pub,b.pub)", TRUST, flag="--command-key",
            default_doc="none: commands off", metavar="PATH",
        ),
        Setting("command_max_age_s", "float", 60.0, "how old (seconds, by its ts) a remote command may be", TRUST,
                above=0, metavar="SECONDS"),
        Setting("update_max_boot_attempts", "int", 3,
                "roll an update back after this many starts in a row that never processed a few frames", TRUST,
                minimum=1, metavar="N"),
        Setting("update_max_download_mb", "int", 512, "refuse update downloads over this many MiB", TRUST,
                minimum=1, metavar="MIB"),
        Setting("heads", "table", help="per-head overrides of the bundle's schedule and publishing (below)",
                group=HEAD_GROUP, factory=dict, default_doc="none: the bundle's", check=check_heads, env=False,
                flag=NO_FLAG),
    ),
    ignore=(SUBSCRIBE_ENV_PREFIX,),
)  # fmt: skip

__all__ = [
    "ENV_PREFIX",
    "HEADS",
    "HEAD_GROUP",
    "MAX_FPS",
    "MIN_FPS",
    "RUN",
    "SUBSCRIBE_ENV_PREFIX",
    "default_state_dir",
]
