"""The state directory: what must survive a restart, and the heartbeat.

Holds ``epoch`` (a random id made once per state directory: a device's message numbers
restart from 0 only under a new epoch), ``seq`` (the next message number, saved
periodically and on a clean stop) and ``heartbeat.json`` (written by the running daemon,
read by ``edge-runtime health``). Files are replaced atomically (write + rename).

Example::

    state = StateDir.open("/var/lib/edge-runtime")
    state.write_heartbeat({"frames": 10})
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.bounded_json import loads_bounded
from edge_runtime.errors import ConfigError

HEARTBEAT_NAME = "heartbeat.json"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class StateDir:
    """An opened state directory."""

    path: Path
    epoch: str

    @classmethod
    def open(cls, path: str | Path) -> StateDir:
        """Create the directory if needed and read (or make) its epoch."""
        root = Path(path)
        try:
            root.mkdir(parents=True, exist_ok=True)
            epoch_file = root / "epoch"
            if not epoch_file.exists():
                _atomic_write(epoch_file, secrets.token_hex(8) + "\n")
            epoch = epoch_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"state directory {root}: {exc.strerror or exc} (set --state-dir)") from exc
        if not epoch:
            raise ConfigError(f"state directory {root}: the epoch file is empty; delete it to start a new epoch")
        return cls(root, epoch)

    def load_seq(self) -> int:
        """The next message number saved by the last run (0 for a new state directory)."""
        try:
            return int((self.path / "seq").read_text(encoding="utf-8").strip() or 0)
        except FileNotFoundError:
            return 0
        except ValueError as exc:
            raise ConfigError(f"{self.path / 'seq'}: not a number; delete it to continue") from exc

    def save_seq(self, seq: int) -> None:
        """Persist the next message number."""
        _atomic_write(self.path / "seq", f"{seq}\n")

    def write_heartbeat(self, fields: dict[str, Any]) -> None:
        """Write ``heartbeat.json`` with the time, the pid and ``fields``."""
        _atomic_write(self.path / HEARTBEAT_NAME, json.dumps({"ts": time.time(), "pid": os.getpid(), **fields}) + "\n")


def read_heartbeat(state_dir: str | Path) -> dict[str, Any]:
    """The last heartbeat of the daemon using ``state_dir``."""
    path = Path(state_dir) / HEARTBEAT_NAME
    try:
        data = loads_bounded(path.read_bytes())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no heartbeat (is the daemon running with this --state-dir?)") from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable heartbeat: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("ts"), (int, float)):
        raise ConfigError(f"{path}: malformed heartbeat")
    return data
