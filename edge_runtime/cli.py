"""``edge-runtime``: the device-side command.

Examples::

    edge-runtime inspect build/demo_bundle
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from edge_runtime.errors import EdgeRuntimeError


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-runtime",
        description="Run multi-task bundles on a device and stream their results.",
        epilog="examples:\n  edge-runtime inspect build/demo_bundle",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    inspect_cmd = sub.add_parser(
        "inspect",
        help="verify a bundle's checksums and show its trunk, heads and artifacts",
        epilog="examples:\n  edge-runtime inspect build/demo_bundle\n  edge-runtime -v inspect /opt/bundles/current",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inspect_cmd.add_argument("bundle", metavar="BUNDLE_DIR")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``edge-runtime``; returns the process exit code."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    try:
        from edge_runtime.bundle import load_bundle
        from edge_runtime.bundle_summary import format_bundle

        print(format_bundle(load_bundle(args.bundle)))
        return 0
    except EdgeRuntimeError as exc:
        print(f"edge-runtime: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
