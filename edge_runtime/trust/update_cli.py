"""``edge-runtime update``: install a bundle (or a head-only package) into the A/B update slots.

Stages the source, verifies it (signature when trusted keys are configured, every sha256, the
engine loads with the daemon's options, the self-test passes) and makes it active; a running
daemon with the same state directory notices within about a second and swaps between frames.

Example::

    edge-runtime update https://updates.example/demo-v2.tar.gz --config /etc/edge-runtime/config.toml
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

UPDATE_EXAMPLES = """examples:
  edge-runtime update /tmp/demo-v2/ --config /etc/edge-runtime/config.toml
  edge-runtime update demo-v2.tar.gz --state-dir /var/lib/edge-runtime --trusted-key release.pub
  edge-runtime update https://updates.example/demo-v2-shape-head.tar.gz   (head-only package)
  edge-runtime update --status
  edge-runtime update --rollback
  edge-runtime update --reset

SOURCE: a bundle directory, a .tar.gz / .tgz of one, or an http(s):// URL of such a tarball
(at most update_max_download_mb, default 512). A head-only package (edge-export head-update)
holds the new manifest.json, manifest.sig and the changed heads: the other files are taken from
the running bundle when their sha256 matches. Exit 0 when the update is active, 1 when it was
refused (the reason is printed and kept in --status), 2 on a usage or configuration error.
A running daemon with the same state directory switches to it between two frames.
"""

NO_FACTORY = "(no factory bundle configured)"


def add_update_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``update`` sub-command's arguments."""
    parser.add_argument("source", nargs="?", metavar="SOURCE", help="bundle directory, .tar.gz or http(s) URL")
    parser.add_argument("--config", metavar="FILE", help="the daemon's config file (state_dir, keys, backend...)")
    parser.add_argument("--bundle", metavar="BUNDLE_DIR", help="the configured (factory) bundle, if not in --config")
    parser.add_argument("--state-dir", metavar="DIR", help="the daemon's state directory (holds the slots)")
    parser.add_argument(
        "--trusted-key",
        action="append",
        dest="trusted_keys",
        metavar="PATH",
        help="public key (.pub) that must have signed the update (repeatable; config key trusted_keys)",
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--status", action="store_true", help="show the slots and the update history")
    action.add_argument("--rollback", action="store_true", help="make the previous bundle active again")
    action.add_argument("--reset", action="store_true", help="go back to the configured (factory) bundle")


def _config(args: argparse.Namespace) -> Any:
    from edge_runtime.config import RuntimeConfig
    from edge_runtime.settings.run import RUN

    flags = {"bundle": args.bundle, "state_dir": args.state_dir, "trusted_keys": args.trusted_keys}
    merged, origins = RUN.merge(args.config, flags, os.environ)
    merged.setdefault("source", "synthetic")  # an update reads no frames
    if not merged.get("bundle"):
        merged["bundle"] = NO_FACTORY
    return RuntimeConfig.from_mapping(merged, str(args.config) if args.config else "configuration", origins)


def run_update(args: argparse.Namespace) -> int:
    """Run ``edge-runtime update``; returns the exit code."""
    from edge_runtime.daemon.pipeline import Daemon
    from edge_runtime.errors import ConfigError
    from edge_runtime.trust.update_install import install_update
    from edge_runtime.trust.updates import Slots

    config = _config(args)
    if args.status:
        print(Slots.open(config.state_dir).describe())
        return 0
    if args.rollback:
        slot = Slots.open(config.state_dir).rollback("edge-runtime update --rollback")
        print(f"rolled back: now running {f'slot {slot}' if slot else 'the configured (factory) bundle'}")
        return 0
    if args.reset:
        Slots.open(config.state_dir).reset("edge-runtime update --reset")
        print(f"reset: now running the configured (factory) bundle {config.bundle}")
        return 0
    if not args.source:
        raise ConfigError("update: give a SOURCE, or one of --status, --rollback, --reset")
    daemon = Daemon(config)
    base = daemon.swaps.bundle_path()
    outcome, _ = install_update(
        daemon.slots,
        args.source,
        build_engine=daemon.build_engine,
        trusted_keys=config.trusted_keys,
        base=None if str(base) == NO_FACTORY else Path(base),
        max_download_mb=config.update_max_download_mb,
    )
    if not outcome.ok:
        print(f"update refused: {outcome.reason}")
        return 1
    print(f"update ok: {outcome.reason} (was {outcome.previous_version or 'the factory bundle'})")
    return 0
