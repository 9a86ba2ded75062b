"""Spool append cost per durability setting, interleaved; the cost of a commit hook; open time
with a large backlog; optionally the full-disk behaviour on a real small file system.

In ONE interleaved run (A B C D … A B C D …, one ``append`` of a ~300 B payload per call, each
case with its own spool file in the same directory):

* ``normal_0ms``  ``synchronous=normal``, ``commit_interval_ms=0`` (commit every append)
* ``normal_5ms``  ``synchronous=normal``, ``commit_interval_ms=5`` (the default)
* ``full_0ms``    ``synchronous=full`` (power-loss safe), commit every append
* ``full_5ms``    ``synchronous=full``, batches of 5 ms
then, per case of ``normal_0ms``, ``normal_5ms``, ``full_0ms``, a side-by-side A/B run
(``ab_<case>`` and ``ab_<case>_hook``, the order swapped every round so neither always goes
first) of the same appends with and without ``Spool.on_commit`` writing the high-water mark
after every commit the way the daemon does: one ``os.pwrite`` of a fixed-width 20-byte number
at offset 0 of an already open file, no fsync. The ``*_0ms`` cases commit on every append, so
their difference is the cost per commit.

then ``open_<N>k``: ``Spool.open`` + ``stats()`` + ``pending(1)`` + ``close()`` of a spool
holding N thousand messages. Appends/s is 1000 / mean_ms of a case. Ratios: the cost of
power-loss mode (full / normal) per commit interval, on mean and p99; ``hook_vs_plain_*``: the
commit hook's cost (with / without, mean), and ``hook_cost_us_*`` the difference in µs.

``--small-fs 2m`` (root: it mounts a tmpfs of that size) also measures the full-disk
behaviour of ``spool_space`` ("A full disk") on a real small file system: appends until the
spool goes ``disk_full`` (and the free space left then), the cost of an append while
``disk_full`` (stores nothing, commits the used seq), another writer taking the rest of the
disk, acks draining the spool in batches of 25 (failures counted), and the resume once the
space is back.

fsync cost depends on the storage (SD card, eMMC, NVMe, a VM's virtual disk): run it on the
device, with ``--dir`` on the file system that will hold the spool.

Usage::

    python benchmarks/spool_durability.py [--seconds 10] [--hook-seconds 10] [--backlog 200000]
        [--dir /var/lib/edge-runtime] [--small-fs 2m] [--json benchmarks/results/spool.x86_64.json]
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from edge_runtime.delivery.spool import Spool
from edge_runtime.delivery.spool_file import SpoolError, SpoolOptions, reserve_path
from edge_runtime.ops.bench import Timing, environment, format_timings, run_interleaved, write_report

PAYLOAD_BYTES = 300
TOPIC = "edge/bench/results"
CASES = {
    "normal_0ms": ("normal", 0.0),
    "normal_5ms": ("normal", 5.0),
    "full_0ms": ("full", 0.0),
    "full_5ms": ("full", 5.0),
}
HOOKED = ("normal_0ms", "normal_5ms", "full_0ms")  # each run A/B with and without the high-water hook
HWM_WIDTH = 20  # bytes of the high-water mark: a fixed-width decimal, rewritten in place


def high_water_hook(fd: int) -> Callable[[int], None]:
    """The daemon's commit hook: the committed next seq, 20 bytes at offset 0, no fsync."""

    def write(next_seq: int) -> None:
        os.pwrite(fd, b"%020d" % next_seq, 0)

    return write


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


def spool_options(case: str) -> SpoolOptions:
    sync, commit_ms = CASES[case]
    return SpoolOptions(max_rows=None, max_bytes=None, synchronous=sync, commit_interval_ms=commit_ms)  # type: ignore[arg-type]


def build_backlog(path: Path, rows: int) -> None:
    payload = os.urandom(PAYLOAD_BYTES)
    with Spool.open(path, SpoolOptions(max_rows=None, max_bytes=None, commit_interval_ms=1000)) as spool:
        for _ in range(rows):
            spool.append(TOPIC, payload)


def run_ab(cases: Mapping[str, Callable[[], object]], *, warmup: int, seconds: float) -> dict[str, Timing]:
    """Two cases side by side, one call each per round, the order swapped every round."""
    (name_a, fn_a), (name_b, fn_b) = cases.items()
    for _ in range(warmup):
        fn_a()
        fn_b()
    samples: dict[str, list[int]] = {name_a: [], name_b: []}
    order = [(name_a, fn_a), (name_b, fn_b)]
    deadline = time.monotonic() + seconds
    rounds = 0
    while rounds < 1000 or time.monotonic() < deadline:
        for name, fn in order:
            t0 = time.perf_counter_ns()
            fn()
            samples[name].append(time.perf_counter_ns() - t0)
        order.reverse()
        rounds += 1
    return {name: Timing.from_ns(values) for name, values in samples.items()}


def free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


@contextlib.contextmanager
def small_tmpfs(size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on a fresh temp dir (needs root), unmounted after."""
    with tempfile.TemporaryDirectory(prefix="spool-small-fs-") as tmp:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", tmp], capture_output=True)
        if proc.returncode != 0:
            raise OSError(f"mount -t tmpfs -o size={size}: {proc.stderr.decode(errors='replace').strip()}")
        try:
            yield Path(tmp)
        finally:
            subprocess.run(["umount", tmp], check=False)


def fill(folder: Path) -> Path:
    """Another writer taking every free byte of ``folder``."""
    path = folder / "filler"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for block in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\1" * block)
    finally:
        os.close(fd)
    return path


def full_disk_run(size: str, payload: bytes) -> dict[str, Any]:
    """The full-disk behaviour on a real ``size`` tmpfs: see the module docstring."""
    with small_tmpfs(size) as vol:
        path = vol / "spool.sqlite"
        total = os.statvfs(vol).f_blocks * os.statvfs(vol).f_frsize
        # the last resort (disk_full) is what is measured: no free-space bound that stops the growth first
        with Spool.open(path, SpoolOptions(free_space_bound=False)) as spool:
            space = spool._guard.space  # the sizes the spool derived from this file system
            stored = 0
            t0 = time.perf_counter()
            while spool.append(TOPIC, payload).stored:
                stored += 1
            fill_s = time.perf_counter() - t0
            free_at_full = free_bytes(vol)
            reserve_kept = reserve_path(path).exists()
            n_unstored = 500
            t0 = time.perf_counter()
            for _ in range(n_unstored):
                spool.append(TOPIC, payload)
            unstored_ms = (time.perf_counter() - t0) * 1000 / n_unstored
            filler = fill(vol)
            acked = failures = 0
            t0 = time.perf_counter()
            while spool.stats().depth:
                batch = spool.pending(25)
                try:
                    acked += spool.ack(m.id for m in batch)
                except SpoolError:
                    failures += 1
                spool.flush_if_due()
            drain_s = time.perf_counter() - t0
            reserve_released = not reserve_path(path).exists()
            filler.unlink()
            resumed = not spool.check_space()
            after = spool.append(TOPIC, payload)
            stats = spool.stats()
            return {
                "fs_bytes": total,
                "reserve_bytes": space.reserve_bytes,
                "headroom_bytes": space.headroom,
                "wal_checkpoint_pages": space.wal_pages,
                "stored_until_disk_full": stored,
                "stored_payload_mib": round(stored * (len(payload) + len(TOPIC)) / 2**20, 2),
                "appends_per_s_while_filling": round(stored / fill_s),
                "free_bytes_at_disk_full": free_at_full,
                "reserve_kept_at_disk_full": reserve_kept,
                "disk_full_append_mean_ms": round(unstored_ms, 4),
                "acked_on_full_disk": acked,
                "ack_failures_on_full_disk": failures,
                "ack_drain_s": round(drain_s, 3),
                "reserve_released_by_acks": reserve_released,
                "resumed_after_space_back": resumed and after.stored,
                "unspooled": stats.unspooled,
                "lost": stats.lost,
            }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="time budget of the interleaved append run")
    parser.add_argument("--hook-seconds", type=float, default=10.0, help="time budget of each commit-hook A/B run")
    parser.add_argument("--backlog", type=int, default=200_000, help="messages in the spool for the open timing")
    parser.add_argument("--open-rounds", type=int, default=30)
    parser.add_argument("--dir", type=Path, help="where the spool files go (default: the system temp dir)")
    parser.add_argument("--small-fs", metavar="SIZE", help="also run the full-disk checks on a tmpfs of SIZE (root)")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="spool-bench-") as tmp:
        root = Path(tmp)
        payload = os.urandom(PAYLOAD_BYTES)
        spools = {name: Spool.open(root / f"{name}.db", spool_options(name)) for name in CASES}
        try:
            cases = {name: (lambda s=spool: s.append(TOPIC, payload)) for name, spool in spools.items()}
            print(f"appending {PAYLOAD_BYTES} B payloads, interleaved, {args.seconds:.0f} s ...", file=sys.stderr)
            timings: dict[str, Timing] = run_interleaved(cases, warmup=200, seconds=args.seconds, min_rounds=1000)
        finally:
            for spool in spools.values():
                spool.close()

        for name in HOOKED:
            print(f"{name}: with / without the high-water hook, A/B, {args.hook_seconds:.0f} s ...", file=sys.stderr)
            plain = Spool.open(root / f"ab_{name}.db", spool_options(name))
            hooked = Spool.open(root / f"ab_{name}_hook.db", spool_options(name))
            fd = os.open(root / f"ab_{name}.seq", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                hooked.on_commit = high_water_hook(fd)
                pair = {
                    f"ab_{name}": lambda s=plain: s.append(TOPIC, payload),
                    f"ab_{name}_hook": lambda s=hooked: s.append(TOPIC, payload),
                }
                timings.update(run_ab(pair, warmup=200, seconds=args.hook_seconds))
                hooked.flush()
                assert int(os.pread(fd, HWM_WIDTH, 0)) == hooked.committed_next_seq  # the hook really wrote
            finally:
                plain.close()
                hooked.close()
                os.close(fd)

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
    for name in HOOKED:
        without, with_hook = timings[f"ab_{name}"], timings[f"ab_{name}_hook"]
        ratios[f"hook_vs_plain_mean_{name}"] = with_hook.mean_ms / without.mean_ms
        ratios[f"hook_vs_plain_p50_{name}"] = with_hook.p50_ms / without.p50_ms
        ratios[f"hook_cost_us_{name}"] = (with_hook.mean_ms - without.mean_ms) * 1000.0
    appends_per_s = {name: 1000.0 / timings[name].mean_ms for name in timings if not name.startswith("open_")}

    small_fs: dict[str, Any] | None = None
    if args.small_fs:
        print(f"full-disk checks on a {args.small_fs} tmpfs ...", file=sys.stderr)
        try:
            small_fs = full_disk_run(args.small_fs, os.urandom(PAYLOAD_BYTES))
        except OSError as exc:
            if exc.errno not in (None, errno.EPERM):
                raise
            small_fs = {"skipped": str(exc)}

    print(format_timings(timings))
    for name, rate in appends_per_s.items():
        print(f"{name:<28} {rate:>10.0f} appends/s")
    for name, value in ratios.items():
        print(f"{name:<28} {value:>10.3f}")
    print(f"backlog file: {file_mb:.1f} MiB on {fs}")
    for key, value in (small_fs or {}).items():
        print(f"small fs {key:<30} {value}")
    if args.json:
        meta = {
            "benchmark": "spool_durability",
            "environment": {**environment(), "sqlite": __import__("sqlite3").sqlite_version, "filesystem": fs},
            "payload_bytes": PAYLOAD_BYTES,
            "seconds": args.seconds,
            "backlog_rows": args.backlog,
            "backlog_file_mib": round(file_mb, 1),
            "appends_per_s": {k: round(v) for k, v in appends_per_s.items()},
            "high_water_hook": f"on_commit: os.pwrite of a {HWM_WIDTH}-byte number at offset 0, no fsync",
        }
        if small_fs is not None:
            meta["small_fs"] = {"size": args.small_fs, **small_fs}
        print(f"wrote {write_report(args.json, timings, ratios, meta)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
