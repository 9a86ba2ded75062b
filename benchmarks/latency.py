"""Per-stage latency of a bundle: the same measurement as ``edge-runtime bench``.

    python benchmarks/latency.py build/demo_bundle --seconds 20 \\
        --out benchmarks/results --name latency.demo.x86_64

See ``edge_runtime/ops/bench_run.py`` for the stages and the files written.
"""

from __future__ import annotations

import argparse
import logging
import sys

from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.ops.bench_run import BENCH_EXAMPLES, add_bench_arguments, run_bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/latency.py",
        description=__doc__.splitlines()[0],
        epilog=BENCH_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_bench_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    try:
        return run_bench(args)
    except EdgeRuntimeError as exc:
        print(f"latency.py: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
