"""``tuning.json``: what ``edge-runtime tune`` chose, kept in the state directory.

A tuning holds for one bundle on one board with one set of runtimes and one core count: its
:class:`TuningKey`. :func:`load_tuning` returns the stored choice only when the key matches the
running device (a new bundle, an upgraded runtime or a different core count make it stale: the
reason is returned and logged); a corrupt file is ignored the same way. The file is written by
write + rename, so a tune stopped by SIGTERM leaves the previous file (or none), never a partial one.

Example::

    key = current_key(bundle)
    choice, why = load_tuning(state_dir, key)     # ({"trunk": GraphConfig, ...}, None) or (None, "...")
    save_tuning(state_dir, TuningRecord(key, choice, rows, seconds=6.1))
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from edge_runtime.bundle.reader import Bundle, read_manifest_bytes
from edge_runtime.errors import ConfigError
from edge_runtime.tuning.configs import GraphConfig

logger = logging.getLogger(__name__)

TUNING_NAME = "tuning.json"
TUNING_VERSION = 1
#: The distributions whose versions a tuning depends on.
RUNTIME_DISTRIBUTIONS = ("edge-runtime", "onnxruntime", "ai-edge-litert", "tflite-runtime")


@dataclass(frozen=True)
class TuningKey:
    """What a tuning was measured for: the bundle (sha256 of its manifest, which hashes every
    file), the board, the runtimes' versions and the number of cores."""

    bundle: str
    board: str
    runtimes: Mapping[str, str | None]
    cores: int

    def to_dict(self) -> dict[str, Any]:
        return {"bundle": self.bundle, "board": self.board, "runtimes": dict(self.runtimes), "cores": self.cores}

    def differences(self, other: Mapping[str, Any]) -> list[str]:
        """What differs between this key and a stored one: ``["a new bundle", "onnxruntime 1.20 -> 1.22"]``."""
        found = []
        if other.get("bundle") != self.bundle:
            found.append("a new bundle")
        if other.get("board") != self.board:
            found.append(f"board {other.get('board')!r} -> {self.board!r}")
        found_runtimes = other.get("runtimes")
        stored: Mapping[str, Any] = found_runtimes if isinstance(found_runtimes, Mapping) else {}
        for name in sorted(set(self.runtimes) | set(stored)):
            if stored.get(name) != self.runtimes.get(name):
                found.append(f"{name} {stored.get(name)} -> {self.runtimes.get(name)}")
        if other.get("cores") != self.cores:
            found.append(f"{other.get('cores')} -> {self.cores} cores")
        return found


def runtime_versions() -> dict[str, str | None]:
    """The installed version of each of :data:`RUNTIME_DISTRIBUTIONS` (None: not installed)."""
    found: dict[str, str | None] = {}
    for dist in RUNTIME_DISTRIBUTIONS:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = None
    return found


def board_name() -> str:
    """The board's model (from the system files), else the machine architecture."""
    from edge_runtime.ops.device import detect_board

    board = detect_board()
    return board.model or board.profile or platform.machine() or "unknown"


def current_key(bundle: Bundle | Path, *, cores: int | None = None) -> TuningKey:
    """The key of a tuning of ``bundle`` (loaded, or its directory) on this device now."""
    import hashlib

    root = Path(bundle.root) if isinstance(bundle, Bundle) else Path(bundle)
    digest = "sha256:" + hashlib.sha256(read_manifest_bytes(root)).hexdigest()
    return TuningKey(digest, board_name(), runtime_versions(), cores or os.cpu_count() or 1)


def tuning_for(bundle: Path, state_dir: Path) -> tuple[dict[str, GraphConfig] | None, str]:
    """:func:`load_tuning` of ``state_dir`` for ``bundle`` on this device now."""
    return load_tuning(state_dir, current_key(bundle))


@dataclass(frozen=True)
class TuningRecord:
    """One tune: its key, the chosen config per graph, the measured rows and how long it took."""

    key: TuningKey
    choice: Mapping[str, GraphConfig]
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    tuned_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": TUNING_VERSION,
            "key": self.key.to_dict(),
            "choice": {graph: config.to_dict() for graph, config in self.choice.items()},
            "tuned_at": round(self.tuned_at, 3),
            "seconds": round(self.seconds, 3),
            "measurements": self.rows,
        }


def save_tuning(state_dir: Path, record: TuningRecord) -> Path:
    """Write ``tuning.json`` in ``state_dir`` atomically; its path."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / TUNING_NAME
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(record.to_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def read_choice(data: Any, path: Path) -> dict[str, GraphConfig]:
    """The ``choice`` of a parsed tuning file; :class:`ConfigError` naming the file and field."""
    if not isinstance(data, Mapping) or data.get("version") != TUNING_VERSION:
        raise ConfigError(f"{path}: not a version-{TUNING_VERSION} tuning file")
    choice = data.get("choice")
    if not isinstance(choice, Mapping) or "trunk" not in choice:
        raise ConfigError(f"{path}: choice: expected an object with a 'trunk' entry")
    return {str(graph): GraphConfig.from_mapping(value, f"{path}: choice.{graph}") for graph, value in choice.items()}


def load_tuning(state_dir: Path, key: TuningKey) -> tuple[dict[str, GraphConfig] | None, str]:
    """The stored choice when ``tuning.json`` in ``state_dir`` was measured for ``key``, and why
    not otherwise (``(None, "no tuning.json in ...")``, ``"stale: a new bundle"``, ``"corrupt: ..."``)."""
    path = state_dir / TUNING_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, f"no {TUNING_NAME} in {state_dir}"
    except OSError as exc:
        return None, f"{path} cannot be read ({exc.strerror or exc})"
    try:
        data = json.loads(text)
        choice = read_choice(data, path)
    except (ValueError, ConfigError) as exc:
        return None, f"{path} is corrupt and ignored ({str(exc).removeprefix(f'{path}: ')})"
    differences = key.differences(data.get("key") if isinstance(data.get("key"), Mapping) else {})
    if differences:
        return None, f"{path} was measured for another setup ({'; '.join(differences)}): ignored"
    return choice, f"tuned {time.strftime('%Y-%m-%d %H:%M', time.localtime(float(data.get('tuned_at') or 0)))}"


__all__ = [
    "TUNING_NAME",
    "TUNING_VERSION",
    "TuningKey",
    "TuningRecord",
    "board_name",
    "current_key",
    "load_tuning",
    "read_choice",
    "runtime_versions",
    "save_tuning",
    "tuning_for",
]
