"""The fault matrix: a device, a broker and a subscriber as real processes, one fault per cell,
and an account of every result: **produced = stored + losses the subscriber reports**, nothing
silent.

Each cell runs ``edge-runtime run`` (synthetic frames, the demo bundle, ``--broker`` and a JSON
lines copy of every numbered result: the device's own record of what it produced), a real
mosquitto with the shipped configuration (persistence on) and ``edge-runtime subscribe`` (its
default persistent session, output and state file beside it). Mid-stream the cell injects its
fault, recovers, and lets the device stop cleanly; the subscriber is stopped once nothing more
arrives. Then, per (epoch, seq):

* *produced*: in the device's record;
* *stored*: in the subscriber's output (de-duplicated);
* *reported*: in the gaps the subscriber reports (its state file, read back with
  :class:`~edge_runtime.cloud.tracker.StreamTracker`: not received, no longer on the device,
  not received yet);
* *covered by a new epoch*: produced, neither stored nor reported, in an epoch that ended in an
  unclean stop (the next epoch's reason says so: the daemon was killed with results numbered
  but not yet committed to its spool);
* *silent*: anything else: must be 0. *Extra* (stored but never produced) must be 0 too.

``python -m pytest tests/test_fault_matrix.py`` runs the small scale (part of ``make test``);
``make faults`` the long one (``EDGE_FAULTS_SCALE=long``), which writes the table to
``build/faults/faults.md`` and ``.json``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_runtime.cloud.tracker import StreamTracker
from edge_runtime.codec import decode_payload
from edge_runtime.delivery.spool import Spool
from tests.broker import HOST, MosquittoBroker, wait_for

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = [sys.executable, "-m", "edge_runtime.cli"]
DEVICE = "fm-1"
WAL_HEADER = 32
WAL_FRAME_HEADER = 24
#: Reasons of a new epoch that tell a subscriber the previous one may have lost its last results.
COVERING_REASONS = ("unclean stop", "spool replaced", "spool rolled back", "state older than the spool")
_NEW_EPOCH = re.compile(r"new epoch (\w+) \(was (\w+)\): (.*?); numbering goes on")


@dataclass(frozen=True)
class Scale:
    """How long a cell runs: frames per second, results before the fault, seconds of outage,
    results after recovery, rounds of the fault."""

    fps: int
    before: int
    outage_s: float
    after: int
    rounds: int


SCALES = {
    "small": Scale(fps=40, before=30, outage_s=1.0, after=30, rounds=1),
    "long": Scale(fps=40, before=300, outage_s=5.0, after=300, rounds=2),
}


def scale() -> Scale:
    """``EDGE_FAULTS_SCALE``: ``small`` (default) or ``long``."""
    name = os.environ.get("EDGE_FAULTS_SCALE", "small")
    if name not in SCALES:
        raise SystemExit(f"EDGE_FAULTS_SCALE={name!r}: one of {', '.join(SCALES)}")
    return SCALES[name]


def mount_tmpfs(folder: Path, size: str) -> bool:
    """A tmpfs of ``size`` on ``folder`` (root only); False when it cannot be mounted."""
    folder.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    return done.returncode == 0


def remount(folder: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(folder)], check=True, capture_output=True)


def unmount(folder: Path) -> None:
    if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def lines_of(path: Path) -> list[dict[str, Any]]:
    """The whole JSON lines of ``path`` (a line cut by a kill is left out)."""
    out: list[dict[str, Any]] = []
    if not path.exists():
        return out
    for raw in path.read_bytes().split(b"\n"):
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if isinstance(line, dict) and "seq" in line and "epoch" in line:
            out.append(line)
    return out


def keys_of(path: Path) -> set[tuple[str, int]]:
    return {(str(line["epoch"]), int(line["seq"])) for line in lines_of(path) if line.get("kind") != "heartbeat"}


@dataclass
class Rig:
    """The processes of one cell and their files under ``work``."""

    work: Path
    bundle: Path
    scale: Scale
    broker: MosquittoBroker
    state: Path = field(init=False)
    record: Path = field(init=False)
    sub_dir: Path = field(init=False)
    daemon: subprocess.Popen[str] | None = None
    subscriber: subprocess.Popen[str] | None = None
    daemon_logs: list[str] = field(default_factory=list)
    subscriber_logs: list[str] = field(default_factory=list)
    subscriber_exits: list[int] = field(default_factory=list)
    kills: int = 0
    daemon_args: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.state = self.work / "state"
        self.record = self.work / "device.jsonl"
        self.sub_dir = self.work / "sub"
        self.sub_dir.mkdir(parents=True, exist_ok=True)

    @property
    def output(self) -> Path:
        return self.sub_dir / "results.jsonl"

    # -- the device -------------------------------------------------------------------------------
    def start_daemon(self, *extra: str) -> None:
        command = [
            *RUNTIME, "run", "--bundle", str(self.bundle), "--source", "synthetic", "--fps", str(self.scale.fps),
            "--device-id", DEVICE, "--state-dir", str(self.state), "--broker", f"mqtt://{HOST}:{self.broker.port}",
            "--output", str(self.record), *self.daemon_args, *extra,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.daemon = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )

    def produced(self) -> int:
        return len(keys_of(self.record))

    def wait_produced(self, count: int, timeout: float = 90) -> None:
        target = self.produced() + count
        ok = wait_for(
            lambda: self.produced() >= target or self.daemon is None or self.daemon.poll() is not None, timeout
        )
        assert ok and self.daemon is not None and self.daemon.poll() is None, self._daemon_failure()

    def _daemon_failure(self) -> str:
        if self.daemon is None or self.daemon.poll() is None:
            return "the daemon is slow"
        return f"the daemon exited {self.daemon.returncode}: {self.daemon.communicate()[1][-2000:]}"

    def kill_daemon(self) -> None:
        assert self.daemon is not None
        self.daemon.send_signal(signal.SIGKILL)
        self.daemon_logs.append(self.daemon.communicate(timeout=30)[1])
        self.daemon = None
        self.kills += 1

    def stop_daemon(self) -> None:
        assert self.daemon is not None
        self.daemon.send_signal(signal.SIGTERM)
        _, stderr = self.daemon.communicate(timeout=120)
        self.daemon_logs.append(stderr)
        code, self.daemon = self.daemon.returncode, None
        assert code == 0, stderr[-3000:]

    def run_daemon_refused(self) -> str:
        """A start that must be refused (one line, non-zero, no traceback); its stderr."""
        self.start_daemon("--max-frames", "5")
        assert self.daemon is not None
        _, stderr = self.daemon.communicate(timeout=60)
        code, self.daemon = self.daemon.returncode, None
        assert code != 0 and "Traceback" not in stderr, stderr
        return stderr

    # -- the subscriber ---------------------------------------------------------------------------
    def start_subscriber(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_RUNTIME_") and k != "STATE_DIRECTORY"}
        env["XDG_STATE_HOME"] = str(self.work / "xdg")
        self.subscriber = subprocess.Popen(
            [*RUNTIME, "subscribe", "--broker", f"mqtt://{HOST}:{self.broker.port}", "--output", str(self.output)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.subscriber.stderr is not None
        first = ""
        while not first.startswith("subscribed to"):
            line = self.subscriber.stderr.readline()
            if not line:
                raise AssertionError(f"subscribe exited: {first}{self.subscriber.stderr.read()}")
            first = line if line.startswith("subscribed to") else first + line

    def stored(self) -> int:
        return len(keys_of(self.output))

    def stop_subscriber(self, sig: int = signal.SIGINT) -> int:
        proc, self.subscriber = self.subscriber, None
        assert proc is not None
        if proc.poll() is None:
            proc.send_signal(sig)
        try:
            stderr = proc.communicate(timeout=30)[1]
        except subprocess.TimeoutExpired:
            proc.kill()
            stderr = proc.communicate()[1]
        self.subscriber_logs.append(stderr)
        self.subscriber_exits.append(proc.returncode)
        return proc.returncode

    def wait_subscriber_exit(self, timeout: float = 60) -> int:
        proc = self.subscriber
        assert proc is not None
        assert wait_for(lambda: proc.poll() is not None, timeout), "the subscriber did not stop"
        return self.stop_subscriber()

    def settle(self, timeout: float = 90, quiet_s: float = 2.0) -> None:
        """Wait until delivery caught up with the device: the newest result it had produced when
        this was called is stored (the publisher's reconnect back-off reaches 30 s after a long
        outage), then, once the daemon has stopped, until nothing new arrives for ``quiet_s``."""
        records = lines_of(self.record)
        newest = (str(records[-1]["epoch"]), int(records[-1]["seq"])) if records else None
        deadline = time.monotonic() + timeout
        while newest is not None and newest not in keys_of(self.output) and time.monotonic() < deadline:
            time.sleep(0.2)
        if self.daemon is not None:  # live: results keep coming, caught up is enough
            return
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - since < quiet_s:
            now = self.stored()
            if now != last:
                last, since = now, time.monotonic()
            time.sleep(0.1)

    def close(self) -> None:
        for proc in (self.daemon, self.subscriber):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()


# -- the faults -----------------------------------------------------------------------------------------


def _broker_stop(rig: Rig) -> None:
    rig.broker.stop()
    time.sleep(rig.scale.outage_s)
    rig.broker.start()


def _broker_sigkill(rig: Rig) -> None:
    rig.broker.kill()
    time.sleep(rig.scale.outage_s)
    rig.broker.start()


def _daemon_sigkill(rig: Rig) -> None:
    rig.kill_daemon()
    rig.start_daemon()


def _both_sigkill(rig: Rig) -> None:
    rig.broker.kill()
    rig.kill_daemon()
    rig.broker.start()
    rig.start_daemon()


def _spool_truncated(rig: Rig) -> None:
    rig.kill_daemon()
    spool = rig.state / "spool.sqlite"
    for path in (spool, spool.with_name("spool.sqlite-wal"), spool.with_name("spool.sqlite-shm")):
        if path.exists():
            path.write_bytes(b"")
    rig.start_daemon()


def _spool_wal_corrupted(rig: Rig) -> None:
    rig.broker.stop()  # results pile up in the WAL with nowhere to go
    rig.wait_produced(max(10, rig.scale.before // 4))
    rig.kill_daemon()
    wal = rig.state / "spool.sqlite-wal"
    data = bytearray(wal.read_bytes())
    page = int.from_bytes(data[8:12], "big")
    frames = (len(data) - WAL_HEADER) // (WAL_FRAME_HEADER + page)
    if frames >= 2:
        at = WAL_HEADER + (frames // 2) * (WAL_FRAME_HEADER + page) + WAL_FRAME_HEADER + page // 2
        data[at : at + 8] = bytes(b ^ 0xFF for b in data[at : at + 8])
        wal.write_bytes(bytes(data))
    rig.notes.append(f"WAL of {frames} frames corrupted in frame {frames // 2}")
    rig.broker.start()
    rig.start_daemon()


def _spool_moved_aside(rig: Rig) -> None:
    rig.broker.stop()  # so that the spool holds results when it is destroyed
    rig.wait_produced(max(10, rig.scale.before // 4))
    rig.kill_daemon()
    spool = rig.state / "spool.sqlite"
    spool.write_bytes(b"garbage" * 1000)
    for suffix in ("-wal", "-shm"):
        spool.with_name(spool.name + suffix).unlink(missing_ok=True)
    stderr = rig.run_daemon_refused()
    assert "move it aside" in stderr, stderr
    spool.rename(spool.with_name("spool.sqlite.corrupt"))
    rig.broker.start()
    rig.start_daemon()


def _subscriber_sigkill(rig: Rig) -> None:
    rig.stop_subscriber(signal.SIGKILL)
    time.sleep(rig.scale.outage_s)
    rig.start_subscriber()


def _state_volume_full(rig: Rig) -> None:
    rig.broker.stop()  # the spool grows until the 2 MiB state volume is full
    assert wait_for(lambda: _short_of_space(rig), 120), "the spool never reported it was short of space"
    time.sleep(rig.scale.outage_s)
    rig.broker.start()


def _short_of_space(rig: Rig) -> bool:
    """The heartbeat says the spool drops its oldest for lack of space (the free-space bound) or
    is ``disk_full`` (or the daemon died: the caller's next wait says so)."""
    try:
        spool = json.loads((rig.state / "heartbeat.json").read_text()).get("spool", {})
    except (OSError, ValueError):
        return False
    short = bool(spool.get("disk_full")) or int(spool.get("dropped_overflow", 0)) > 0
    return short or rig.daemon is None or rig.daemon.poll() is not None


def _subscriber_disk_full(rig: Rig) -> None:
    used = shutil.disk_usage(rig.sub_dir).used
    remount(rig.sub_dir, f"{used // 1024 + 64}k")  # 64 KiB of room left (again, in later rounds)
    code = rig.wait_subscriber_exit(120)  # its output volume fills up
    assert code == 2, rig.subscriber_logs[-1]
    rig.notes.append(f"subscriber stopped: {rig.subscriber_logs[-1].strip().splitlines()[-1][:120]}")
    remount(rig.sub_dir, "64m")
    rig.start_subscriber()


@dataclass(frozen=True)
class Cell:
    """One fault: ``inject`` runs after ``scale.before`` results; ``mounts``: the folders under
    the cell's work folder that need a small tmpfs (name -> size) before anything starts."""

    name: str
    inject: Callable[[Rig], None]
    mounts: tuple[tuple[str, str], ...] = ()
    daemon_args: tuple[str, ...] = ()


CELLS = (
    Cell("broker graceful stop", _broker_stop),
    Cell("broker SIGKILL", _broker_sigkill),
    Cell("daemon SIGKILL", _daemon_sigkill),
    Cell("broker and daemon SIGKILL", _both_sigkill),
    Cell("spool truncated", _spool_truncated),
    Cell("spool WAL corrupted", _spool_wal_corrupted),
    Cell("spool corrupted, moved aside", _spool_moved_aside),
    Cell("state volume full (2 MiB)", _state_volume_full, (("state", "2m"),), ("--fps", "150")),
    Cell("subscriber SIGKILL", _subscriber_sigkill),
    Cell("subscriber disk full (64 KiB)", _subscriber_disk_full, (("sub", "64k"),)),
)


# -- the account ------------------------------------------------------------------------------------------


@dataclass
class Account:
    """One cell's numbers (see the module docstring)."""

    cell: str
    produced: int = 0
    stored: int = 0
    not_received: int = 0
    no_longer_on_device: int = 0
    pending: int = 0
    held: int = 0
    covered_by_new_epoch: int = 0
    silent: int = 0
    extra: int = 0
    epochs: list[str] = field(default_factory=list)
    device_counted: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    silent_examples: list[tuple[str, int]] = field(default_factory=list)

    @property
    def reported(self) -> int:
        return self.not_received + self.no_longer_on_device + self.pending

    @property
    def holds(self) -> bool:
        """produced = stored + reported + held + covered by a new epoch, nothing silent or extra."""
        accounted = self.stored + self.reported + self.held + self.covered_by_new_epoch
        return self.silent == 0 and self.extra == 0 and self.produced == accounted

    def row(self) -> dict[str, Any]:
        return {
            "cell": self.cell, "produced": self.produced, "stored": self.stored, "reported": self.reported,
            "not_received": self.not_received, "no_longer_on_device": self.no_longer_on_device,
            "pending": self.pending, "held": self.held, "covered_by_new_epoch": self.covered_by_new_epoch,
            "silent": self.silent,
            "extra": self.extra, "epochs": self.epochs, "device_counted": self.device_counted, "notes": self.notes,
            "holds": self.holds,
        }  # fmt: skip


def _reported(state_file: Path) -> dict[str, set[tuple[str, int]]]:
    """The subscriber's gaps, by kind, as (epoch, seq) keys (from its state file)."""
    tracker = StreamTracker()
    tracker.resume(json.loads(state_file.read_text()))
    out: dict[str, set[tuple[str, int]]] = {"not_received": set(), "dropped": set(), "pending": set()}
    for device, epoch, stream in tracker.all_streams():
        if device != DEVICE:
            continue
        found = tracker.missing(device, epoch, stream)
        for kind, ranges in (
            ("not_received", found.not_received),
            ("dropped", found.dropped),
            ("pending", found.pending),
        ):
            for low, high in ranges:
                out[kind].update((epoch, seq) for seq in range(low, high + 1))
    return out


def account(cell: str, rig: Rig) -> Account:
    """Compare the device's record with what the subscriber stored and reported."""
    produced, stored = keys_of(rig.record), keys_of(rig.output)
    reported = _reported(rig.output.with_name(rig.output.name + ".state.json"))
    result = Account(cell, produced=len(produced), stored=len(stored & produced), extra=len(stored - produced))
    missing = produced - stored
    result.not_received = len(missing & reported["not_received"])
    result.no_longer_on_device = len(missing & reported["dropped"])
    result.pending = len(missing & reported["pending"])
    unexplained = missing - reported["not_received"] - reported["dropped"] - reported["pending"]
    held = unexplained & _spooled(rig.state / "spool.sqlite")  # still on the device: sent next start
    result.held = len(held)
    unexplained -= held
    unclean = set()
    for log in rig.daemon_logs:
        for new, was, reason in _NEW_EPOCH.findall(log):
            result.epochs.append(f"{new[:6]}: {reason}")
            if any(why in reason for why in COVERING_REASONS):
                unclean.add(was)
    covered = {key for key in unexplained if key[0] in unclean}
    result.covered_by_new_epoch = len(covered)
    silent = sorted(unexplained - covered)
    result.silent, result.silent_examples = len(silent), silent[:10]
    result.notes = list(rig.notes)
    result.device_counted = _device_counted(rig)
    # an extra key can come from a kill between the spool's commit and the device's own record
    if result.extra and result.extra <= rig.kills:
        result.notes.append(f"{result.extra} stored result(s) missing from the device's record (killed mid-write)")
        result.produced += result.extra
        result.stored += result.extra
        result.extra = 0
    return result


def _spooled(path: Path) -> set[tuple[str, int]]:
    """(epoch, seq) of the results still in the device's spool (read after the daemon stopped)."""
    if not path.exists():
        return set()
    with Spool.open(path) as spool:
        return {
            (str(decoded["epoch"]), int(decoded["seq"]))
            for decoded in (decode_payload(m.payload) for m in spool.pending(1_000_000))
        }


def _device_counted(rig: Rig) -> dict[str, int]:
    """The device's own loss counters from its last heartbeat file (spool overflow, disk full)."""
    try:
        beat = json.loads((rig.state / "heartbeat.json").read_text())
    except (OSError, ValueError):
        return {}
    spool = beat.get("spool") or {}
    return {k: int(spool[k]) for k in ("dropped_overflow", "expired", "lost", "unspooled") if k in spool}


# -- running a cell ---------------------------------------------------------------------------------------


def run_cell(cell: Cell, work: Path, bundle: Path, size: Scale) -> Account:
    """Run ``cell`` in ``work`` (mounting its small volumes first) and account for it."""
    mounted: list[Path] = []
    try:
        for name, mount_size in cell.mounts:
            folder = work / name
            if not mount_tmpfs(folder, mount_size):
                raise Unavailable(f"cannot mount a {mount_size} tmpfs on {folder} (needs root)")
            mounted.append(folder)
        with MosquittoBroker(workdir=work / "mq") as broker:
            rig = Rig(work, bundle, size, broker, daemon_args=cell.daemon_args)
            try:
                rig.start_subscriber()
                rig.start_daemon()
                for _ in range(size.rounds):
                    rig.wait_produced(size.before)
                    cell.inject(rig)
                    rig.wait_produced(size.after)
                    rig.settle()  # delivery caught up
                rig.stop_daemon()
                rig.settle()
                if rig.subscriber is not None:
                    rig.stop_subscriber()
            finally:
                rig.close()
            return account(cell.name, rig)
    finally:
        for folder in reversed(mounted):
            unmount(folder)


class Unavailable(Exception):
    """A cell that cannot run on this machine (the reason says why)."""


def table(accounts: list[Account]) -> str:
    """The markdown table of a run."""
    head = (
        "| cell | produced | stored | reported lost (not received / no longer on device / not yet) "
        "| held on the device | covered by a new epoch | silent | holds | epochs started | device counted |\n"
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | --- | --- | --- |\n"
    )
    rows = []
    for a in accounts:
        counted = ", ".join(f"{k} {v}" for k, v in a.device_counted.items() if v) or "-"
        rows.append(
            f"| {a.cell} | {a.produced} | {a.stored} | {a.reported} ({a.not_received} / {a.no_longer_on_device}"
            f" / {a.pending}) | {a.held} | {a.covered_by_new_epoch} | {a.silent} | {'yes' if a.holds else 'NO'} | "
            f"{'; '.join(a.epochs) or '-'} | {counted} |"
        )
    return head + "\n".join(rows) + "\n"


def iter_cells(names: str | None) -> Iterator[Cell]:
    wanted = None if not names else {n.strip() for n in names.split(",")}
    for cell in CELLS:
        if wanted is None or cell.name in wanted:
            yield cell


def main(argv: list[str]) -> int:
    """``python -m tests.faults FOLDER``: gather the cells' JSON accounts of FOLDER into
    ``FOLDER/faults.md`` and ``FOLDER/faults.json``."""
    if len(argv) != 1:
        print("usage: python -m tests.faults FOLDER", file=sys.stderr)
        return 2
    folder = Path(argv[0])
    rows = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json")) if p.name != "faults.json"]
    order = {cell.name: i for i, cell in enumerate(CELLS)}
    rows.sort(key=lambda row: order.get(row["cell"], len(order)))
    accounts = []
    for row in rows:
        account_ = Account(row["cell"])
        for key, value in row.items():
            if key not in ("cell", "reported", "holds") and hasattr(account_, key):
                setattr(account_, key, value)
        accounts.append(account_)
    text = f"# Fault matrix ({os.environ.get('EDGE_FAULTS_SCALE', 'long')} scale)\n\n{table(accounts)}"
    notes = [f"- {a.cell}: {'; '.join(a.notes)}" for a in accounts if a.notes]
    if notes:
        text += "\n" + "\n".join(notes) + "\n"
    (folder / "faults.md").write_text(text)
    (folder / "faults.json").write_text(json.dumps(rows, indent=1))
    print(text)
    return 0 if all(a.holds for a in accounts) and len(accounts) == len(CELLS) else 1


__all__ = ["CELLS", "SCALES", "Account", "Cell", "Rig", "Unavailable", "account", "iter_cells", "run_cell", "table"]


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
