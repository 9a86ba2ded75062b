"""Spool append cost per durability setting, interleaved; open time with a large backlog.

In ONE interleaved run (A B C D A B C D …, one ``append`` of a ~300 B payload per call, each
case with its own spool file in the same directory):

* ``normal_0ms``  ``synchronous=normal``, ``commit_interval_ms=0`` (commit every append)
* ``normal_5ms``  ``synchronous=normal``, ``commit_interval_ms=5`` (the default)
* ``full_0ms``    ``synchronous=full`` (power-loss safe), commit every append
* ``full_5ms``    ``synchronous=full``, batches of 5 ms

then ``open_<N>k``: ``Spool.open`` + ``stats()`` + ``pending(1)`` + ``close()`` of a spool
holding N thousand messages. Appends/s is 1000 / mean_ms of a case. Ratios: the cost of
power-loss mode (full / normal) per commit interval, on mean and p99.

fsync cost depends on the storage (SD card, eMMC, NVMe, a VM's virtual disk): run it on the
device, with ``--dir`` on the file system that will hold the spool.

Usage::

    python benchmarks/spool_durability.py [--seconds 10] [--backlog 200000] [--dir /var/lib/edge-runtime]
        [--json benchmarks/results/spool.x86_64.json]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

from edge_runtime.delivery.spool import Spool
from edge_runtime.delivery.spool_file import SpoolOptions
from edge_runtime.ops.bench import Timing, environment, format_timings, run_interleaved, write_report

PAYLOAD_BYTES = 300
TOPIC = "edge/bench/results"
CASES = {
    "normal_0ms": ("normal", 0.0),
    "normal_5ms": ("normal", 5.0),
    "full_0ms": ("full", 0.0),
    "full_5ms": ("full", 5.0),
}


def filesystem_of(path: Path) -> str:
    """The mount point and type holding ``path`` (fsync cost depends on it)."""
    best, kind = "", "?"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 2 and str(path).startswith(fields[1]) and len(fields[1]) > len(best):
                best, kind = fields[1], fields[2]
    except OSError:
        pass
    return f"{kind} on {best or '?'}"


def build_backlog(path: Path, rows: int) -> None:
    payload = os.urandom(PAYLOAD_BYTES)
    with Spool.open(path, SpoolOptions(max_rows=None, max_bytes=None, commit_interval_ms=1000)) as spool:
        for _ in range(rows):
            spool.append(TOPIC, payload)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="time budget of the interleaved append run")
    parser.add_argument("--backlog", type=int, default=200_000, help="messages in the spool for the open timing")
    parser.add_argument("--open-rounds", type=int, default=30)
    parser.add_argument("--dir", type=Path, help="where the spool files go (default: the system temp dir)")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="spool-bench-") as tmp:
        root = Path(tmp)
        payload = os.urandom(PAYLOAD_BYTES)
        spools = {
            name: Spool.open(
                root / f"{name}.db",
                SpoolOptions(max_rows=None, max_bytes=None, synchronous=sync, commit_interval_ms=interval),  # type: ignore[arg-type]
            )
            for name, (sync, interval) in CASES.items()
        }
        try:
            cases = {name: (lambda s=spool: s.append(TOPIC, payload)) for name, spool in spools.items()}
            print(f"appending {PAYLOAD_BYTES} B payloads, interleaved, {args.seconds:.0f} s ...", file=sys.stderr)
            timings: dict[str, Timing] = run_interleaved(cases, warmup=200, seconds=args.seconds, min_rounds=1000)
        finally:
            for spool in spools.values():
                spool.close()

        backlog_path = root / "backlog.db"
        print(f"building a backlog of {args.backlog} messages ...", file=sys.stderr)
        build_backlog(backlog_path, args.backlog)

        def open_spool() -> None:
            with Spool.open(backlog_path, SpoolOptions(max_rows=None, max_bytes=None)) as spool:
                assert spool.stats().depth == args.backlog  # a benchmark self-check, not input validation
                spool.pending(1)

        open_name = f"open_{args.backlog // 1000}k"
        timings.update(run_interleaved({open_name: open_spool}, warmup=2, seconds=0, min_rounds=args.open_rounds))
        file_mb = backlog_path.stat().st_size / 2**20
        fs = filesystem_of(root.resolve())

    ratios: dict[str, float] = {}
    for interval in ("0ms", "5ms"):
        normal, full = timings[f"normal_{interval}"], timings[f"full_{interval}"]
        ratios[f"full_vs_normal_mean_{interval}"] = full.mean_ms / normal.mean_ms
        ratios[f"full_vs_normal_p99_{interval}"] = full.p99_ms / normal.p99_ms
    ratios["normal_0ms_vs_5ms_mean"] = timings["normal_0ms"].mean_ms / timings["normal_5ms"].mean_ms
    ratios["full_0ms_vs_5ms_mean"] = timings["full_0ms"].mean_ms / timings["full_5ms"].mean_ms
    appends_per_s = {name: 1000.0 / timings[name].mean_ms for name in CASES}

    print(format_timings(timings))
    for name, rate in appends_per_s.items():
        print(f"{name:<28} {rate:>10.0f} appends/s")
    for name, value in ratios.items():
        print(f"{name:<28} {value:>10.3f}")
    print(f"backlog file: {file_mb:.1f} MiB on {fs}")
    if args.json:
        meta = {
            "benchmark": "spool_durability",
            "environment": {**environment(), "sqlite": __import__("sqlite3").sqlite_version, "filesystem": fs},
            "payload_bytes": PAYLOAD_BYTES,
            "seconds": args.seconds,
            "backlog_rows": args.backlog,
            "backlog_file_mib": round(file_mb, 1),
            "appends_per_s": {k: round(v) for k, v in appends_per_s.items()},
        }
        print(f"wrote {write_report(args.json, timings, ratios, meta)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
