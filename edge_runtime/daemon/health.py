"""``edge-runtime health``: is the daemon alive, and is it delivering? Read from its heartbeat file.

Exit codes (a container ``HEALTHCHECK`` and systemd scripts rely on them):

* **0**: alive: the heartbeat is fresh (younger than ``--max-age``, default three of its
  ``interval_s``) and its ``pid`` runs (``os.kill(pid, 0)``; ``EPERM`` counts as running).
  Delivery trouble is printed as ``degraded: ...`` and still exits 0, unless ``--require-delivery``.
* **1**: not alive: stale, stopped, the pid is gone, or the heartbeat file holds a value that is
  not what the daemon writes (one line naming the file and the field), or degraded with
  ``--require-delivery``.
* **2**: no heartbeat file, or a bad flag (as every ``edge-runtime`` user error).

Delivery is checked only when the daemon has a broker (its heartbeat then carries ``spool`` and
``mqtt``, :func:`edge_runtime.daemon.positions.delivery_fields`): degraded when it is not connected,
the spool holds more than ``max_spool_depth`` results or its oldest is older than
``max_spool_age_s``, nothing was acknowledged for ``max_ack_age_s`` while results wait, or the
disk is full.

Example::

    code, line = check_health("/var/lib/edge-runtime", HealthLimits(require_delivery=True))
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.delivery.state import HEARTBEAT_NAME, MalformedHeartbeatError, read_heartbeat

#: Exit codes of ``edge-runtime health``.
HEALTHY, UNHEALTHY = 0, 1


@dataclass(frozen=True)
class HealthLimits:
    """When the daemon counts as stale (``max_age_s``; None: three heartbeat intervals) and when
    its delivery counts as degraded."""

    max_age_s: float | None = None
    max_spool_depth: int = 10_000
    max_spool_age_s: float = 300.0
    max_ack_age_s: float = 120.0
    require_delivery: bool = False


class _FieldError(Exception):
    pass


def _number(
    data: dict[str, Any], key: str, *, minimum: float = 0.0, required: bool = True, within: str = ""
) -> float | None:
    """The finite number ``data[key]`` (>= ``minimum``); :class:`_FieldError` naming the field
    (``within`` + ``key``) otherwise."""
    value = data.get(key)
    key = within + key
    if value is None:
        if required:
            raise _FieldError(f"field {key} is missing")
        return None
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError
        number = float(value)
    except (TypeError, OverflowError):
        raise _FieldError(f"field {key} is {_shown(value)}, not a finite number") from None
    if not math.isfinite(number) or number < minimum:
        raise _FieldError(f"field {key} is {_shown(value)}, not a finite number >= {minimum:g}")
    return number


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it runs, as another user
        return False
    except (OverflowError, OSError):
        return True
    return False


def _delivery_problems(beat: dict[str, Any], limits: HealthLimits) -> list[str]:
    spool, mqtt = beat.get("spool"), beat.get("mqtt")
    if not isinstance(spool, dict) or not isinstance(mqtt, dict):
        raise _FieldError("fields spool and mqtt must be objects")
    problems = []
    connected = mqtt.get("connected")
    if connected is not None and not isinstance(connected, bool):
        raise _FieldError(f"field mqtt.connected is {_shown(connected)}, not true or false")
    if connected is False:
        problems.append("disconnected from the broker")
    depth = _number(spool, "depth", within="spool.")
    if depth is not None and depth > limits.max_spool_depth:
        problems.append(f"spool holds {depth:.0f} results (limit {limits.max_spool_depth})")
    oldest = _number(spool, "oldest_age_s", required=False, within="spool.")
    if oldest is not None and oldest > limits.max_spool_age_s:
        problems.append(f"oldest spooled result {oldest:.0f} s old (limit {limits.max_spool_age_s:g} s)")
    ack_age = _number(mqtt, "ack_age_s", required=False, within="mqtt.")
    if ack_age is not None and depth and ack_age > limits.max_ack_age_s:
        problems.append(f"no acknowledgement for {ack_age:.0f} s (limit {limits.max_ack_age_s:g} s)")
    if spool.get("disk_full"):
        problems.append("disk full")
    return problems


def check_health(state_dir: str | Path, limits: HealthLimits, now: float | None = None) -> tuple[int, str]:
    """``(exit code, one line)`` for the daemon of ``state_dir`` (module docstring). Raises
    :class:`~edge_runtime.errors.ConfigError` when there is no readable heartbeat file."""
    path = Path(state_dir) / HEARTBEAT_NAME
    now = time.time() if now is None else now
    try:
        beat = read_heartbeat(state_dir)
        ts = _number(beat, "ts")
        interval = _number(beat, "interval_s", required=False)
        if interval is None:
            interval = 5.0
        elif interval <= 0:
            raise _FieldError(f"field interval_s is {beat['interval_s']!r}, not a finite number > 0")
        counts = [_number(beat, key, required=False) or 0 for key in ("results", "dropped")]
        pid_value = beat.get("pid")
        if isinstance(pid_value, bool) or not isinstance(pid_value, int) or not 0 < pid_value < 2**31:
            raise _FieldError(f"field pid is {_shown(pid_value)}, not a process id")
        problems = _delivery_problems(beat, limits) if "spool" in beat or "mqtt" in beat else None
    except MalformedHeartbeatError as exc:
        return UNHEALTHY, f"unhealthy: {exc}"
    except _FieldError as exc:
        return UNHEALTHY, f"unhealthy: {path}: {exc}"
    assert ts is not None
    age = now - ts
    limit = limits.max_age_s if limits.max_age_s is not None else 3 * interval
    if beat.get("stopped"):
        return UNHEALTHY, f"stopped: the daemon exited cleanly {age:.0f} s ago"
    if age > limit or age < -limit:
        when = f"{age:.1f} s ago" if age > 0 else f"{-age:.1f} s in the future (clock?)"
        return UNHEALTHY, f"stale: last heartbeat {when} (limit {limit:g} s), pid {pid_value}"
    if _process_gone(pid_value):
        return UNHEALTHY, f"not alive: the heartbeat is {age:.1f} s old but pid {pid_value} is not running"
    line = f"heartbeat {age:.1f} s ago, pid {pid_value}, {counts[0]:.0f} results, {counts[1]:.0f} dropped"
    if problems:
        code = UNHEALTHY if limits.require_delivery else HEALTHY
        return code, f"degraded: {line}; delivery: {'; '.join(problems)}"
    return HEALTHY, f"ok: {line}" + ("" if problems is None else "; delivery ok")


def _seconds(text: str) -> float:
    """An argparse type: a finite number of seconds > 0 (``nan``, ``inf`` and negatives refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text!r}")
    return value


def _count(text: str) -> int:
    """An argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def add_health_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``edge-runtime health``."""
    defaults = HealthLimits()
    parser.add_argument("--state-dir", metavar="DIR", help="the daemon's state directory")
    parser.add_argument("--max-age", type=_seconds, metavar="SECONDS", help="seconds (default: 3 heartbeat intervals)")
    parser.add_argument(
        "--require-delivery",
        action="store_true",
        help="exit 1 when delivery is degraded too (default: print 'degraded' and exit 0)",
    )
    parser.add_argument(
        "--max-spool-depth", type=_count, default=defaults.max_spool_depth, metavar="N",
        help=f"degraded above this many spooled results (default {defaults.max_spool_depth})",
    )  # fmt: skip
    parser.add_argument(
        "--max-spool-age", type=_seconds, default=defaults.max_spool_age_s, metavar="SECONDS",
        help=f"degraded when the oldest spooled result is older (default {defaults.max_spool_age_s:g})",
    )  # fmt: skip
    parser.add_argument(
        "--max-ack-age", type=_seconds, default=defaults.max_ack_age_s, metavar="SECONDS",
        help=f"degraded when results wait and none was acknowledged for this long (default {defaults.max_ack_age_s:g})",
    )  # fmt: skip


def limits_from_args(args: argparse.Namespace) -> HealthLimits:
    """The :class:`HealthLimits` of parsed ``health`` flags."""
    return HealthLimits(
        max_age_s=args.max_age,
        max_spool_depth=args.max_spool_depth,
        max_spool_age_s=args.max_spool_age,
        max_ack_age_s=args.max_ack_age,
        require_delivery=args.require_delivery,
    )


__all__ = ["HEALTHY", "UNHEALTHY", "HealthLimits", "add_health_arguments", "check_health", "limits_from_args"]
