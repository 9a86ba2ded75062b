"""``edge-runtime tune BUNDLE``: measure this device's fastest config per graph and keep it.

Prints the table of :func:`~edge_runtime.tuning.search.format_table` (or one JSON object with
``--json``) and writes ``tuning.json`` into the state directory (``--state-dir``, the config's
``state_dir`` with ``--config``, else the default), where ``backend = "auto"`` /
``precision = "auto"`` (the defaults) find it. Exit 0 on success, 2 on a user mistake
(bundle, config, seconds), 1 when a tune could not finish.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import sys
from pathlib import Path
from types import FrameType

from edge_runtime.errors import ConfigError

logger = logging.getLogger(__name__)

TUNE_EXAMPLES = (
    "examples:\n"
    "  edge-runtime tune build/demo_bundle\n"
    "  edge-runtime tune /opt/bundles/current --config /etc/edge-runtime/config.toml --seconds 10\n"
    "  edge-runtime tune build/demo_bundle --state-dir /tmp/state --json\n\n"
    "backend and precision 'auto' (the defaults) use the tuning the state directory holds for this bundle,\n"
    "board, runtime versions and core count; without one they take the device profile's choice."
)
#: The longest ``--seconds`` accepted (a tune pauses a running daemon's inference that long).
MAX_SECONDS = 600.0


def add_tune_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``edge-runtime tune``."""
    parser.add_argument("bundle", metavar="BUNDLE_DIR")
    parser.add_argument(
        "--seconds", type=float, default=6.0, metavar="S", help="time spent timing candidates (default 6)"
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--config", metavar="FILE", help="the daemon's config: its state_dir and disabled heads")
    where.add_argument("--state-dir", metavar="DIR", help="where tuning.json goes (default: the daemon's)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")


def check_seconds(value: object, name: str = "--seconds") -> float:
    """``value`` as seconds from 0.5 to :data:`MAX_SECONDS`; else a :class:`ConfigError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a number of seconds, got {value!r}")
    if not 0.5 <= float(value) <= MAX_SECONDS:
        raise ConfigError(f"{name} must be from 0.5 to {MAX_SECONDS:g} seconds, got {value!r}")
    return float(value)


def _stop_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_tune(args: argparse.Namespace) -> int:
    """The ``tune`` command."""
    from edge_runtime.bundle.reader import load_bundle
    from edge_runtime.config import RuntimeConfig, default_state_dir
    from edge_runtime.tuning.record import TuningRecord, current_key, save_tuning
    from edge_runtime.tuning.search import TuneOptions, describe_assignment, format_table, tune

    seconds = check_seconds(args.seconds)
    heads: tuple[str, ...] | None = None
    bundle = load_bundle(args.bundle)
    if args.config:
        from edge_runtime.daemon.validation import loaded_heads

        config = RuntimeConfig.load(config_file=args.config, flags={})
        state_dir = Path(config.state_dir)
        heads = loaded_heads(config, bundle.manifest)
    else:
        state_dir = Path(args.state_dir) if args.state_dir else default_state_dir()
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        progress = None if args.json else (lambda text: print(f"tune: {text}", file=sys.stderr, flush=True))
        result = tune(bundle, TuneOptions(seconds=seconds, heads=heads), progress=progress)
        record = TuningRecord(current_key(bundle), result.choice, result.rows, result.seconds)
        path = save_tuning(state_dir, record)
    except KeyboardInterrupt as exc:
        print(f"edge-runtime: tune stopped ({exc or 'interrupted'}): no tuning written", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    if args.json:
        print(json.dumps({**record.to_dict(), "path": str(path), "dropped": result.dropped}, indent=2))
        return 0
    if result.nothing_to_tune:
        print("nothing to tune but threads: every graph has one artifact this device can run", file=sys.stderr)
    print(format_table(result))
    print(f"wrote {path}: {describe_assignment(result.choice)}")
    return 0


__all__ = ["MAX_SECONDS", "TUNE_EXAMPLES", "add_tune_arguments", "check_seconds", "run_tune"]
