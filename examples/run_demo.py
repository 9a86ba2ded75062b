"""The demo, end to end: quantize the demo bundle, start a local MQTT broker, run the device
daemon on synthetic frames for a few seconds, receive and decode its results as the cloud
subscriber does, and print a summary.

Steps:

1. INT8: if the bundle has no INT8 graph, :func:`exporter.quantize.quantize_bundle` adds them
   (calibrated on frames of the synthetic source; graphs that fail the fidelity gate stay float).
2. A broker on a free loopback port with its own config in a temp dir: ``mosquitto`` when
   installed, running the shipped ``devices/mosquitto/mosquitto.conf`` with only the port,
   the persistence folder, the log and the login (anonymous) replaced, else the pure-Python
   ``amqtt`` (MQTT 3.1.1 only, hence ``?protocol=3.1.1`` in the broker URL).
3. A subscriber (:class:`edge_runtime.cloud.stream.ResultStream`, in this process) on
   ``edge/demo/results``.
4. ``edge-runtime run --source synthetic --broker ...`` as a subprocess for ``--seconds``, then
   SIGTERM: the daemon finishes the frames in flight and flushes its spool. It also writes every
   message it numbered to ``STATE_DIR/sent.jsonl`` (the daemon's ``--output``): that is the
   list of what was sent.
5. Wait until every sent message has arrived, then print three decoded results and the summary:
   fps, p50 latency per stage, payload bytes on the wire (``codec.encode_line``) against the same
   line as JSON, results sent against received, duplicates and gaps.

Exits 1 if any sent message did not arrive. Nothing here imports torch.

Usage::

    python examples/run_demo.py                       # 5 s at 20 fps on build/demo_bundle
    python examples/run_demo.py --seconds 2 --fps 30 --bundle /tmp/bundle --state-dir /tmp/state
    python examples/run_demo.py --keep                # leave the broker running at the end
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

HOST = "127.0.0.1"
DEVICE_ID = "demo"
REPO = Path(__file__).resolve().parent.parent


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


# -- 1. INT8 ------------------------------------------------------------------------------------


def has_int8(bundle: Path) -> bool:
    manifest = json.loads((bundle / "manifest.json").read_text())
    graphs = [manifest["trunk"], *manifest["heads"].values()]
    return any(a.get("precision") == "int8" for g in graphs for a in g.get("artifacts", []))


def ensure_int8(bundle: Path) -> None:
    if has_int8(bundle):
        step(f"{bundle}: INT8 graphs already there")
        return
    step(f"{bundle}: no INT8 graphs yet; quantizing (calibrated on synthetic frames)")
    from exporter.quantize import format_report, quantize_bundle
    from exporter.quantize_options import QuantizeOptions

    started = time.perf_counter()
    result = quantize_bundle(bundle, options=QuantizeOptions(calib="synthetic", precision="int8"))
    report = format_report(result).splitlines()
    # the table only (the per-graph reasons follow "decisions:")
    table = report[: report.index("decisions:")] if "decisions:" in report else report
    print("\n".join(f"    {row}" for row in table))
    kept = sum(d.accepted for d in result.decisions)
    print(f"    {kept} of {len(result.decisions)} graphs kept in INT8 ({time.perf_counter() - started:.1f} s)")


# -- 2. broker (the minimal part of tests/broker.py, which is not shipped) --------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


#: The broker configuration the product ships: the demo's mosquitto runs it.
SHIPPED_MOSQUITTO_CONF = REPO / "devices" / "mosquitto" / "mosquitto.conf"
#: What the demo's broker sets itself: where it listens, saves and logs, who may connect.
_DEMO_OWNED = (
    "listener", "persistence_location", "log_dest", "log_type", "pid_file", "user", "include_dir",
    "allow_anonymous", "password_file", "acl_file", "cafile", "certfile", "keyfile", "tls_version",
)  # fmt: skip


def mosquitto_config(port: int, workdir: Path, log_path: Path) -> list[str]:
    """The shipped config's lines, with the demo's listener, folder, log and anonymous login."""
    lines = []
    for raw in SHIPPED_MOSQUITTO_CONF.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.split(" ", 1)[0] == "listener":
            lines.append(f"listener {port} {HOST}")
        elif line.split(" ", 1)[0] not in _DEMO_OWNED:
            lines.append(line)
    lines += [f"persistence_location {workdir}/", f"log_dest file {log_path}", "allow_anonymous true"]
    if os.geteuid() == 0:  # else it drops to user mosquitto, who cannot write the log here
        lines.append("user root")
    return lines


def find_mosquitto() -> str | None:
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("mosquitto")


class Broker:
    """mosquitto (if installed) or amqtt, on a free loopback port, config and log in a temp dir."""

    def __init__(self, prefer: str = "auto") -> None:
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="edge-demo-broker-"))
        self.log_path = self.workdir / "broker.log"
        mosquitto = find_mosquitto() if prefer in ("auto", "mosquitto") else None
        if prefer == "mosquitto" and mosquitto is None:
            raise SystemExit("--broker-kind mosquitto: mosquitto is not installed (apt-get install mosquitto)")
        self._log: IO[bytes] | None = None
        if mosquitto is not None:
            self.name, self.url = "mosquitto", f"mqtt://{HOST}:{self.port}"
            self.stop_signal = signal.SIGTERM
            conf = self.workdir / "mosquitto.conf"
            conf.write_text("\n".join(mosquitto_config(self.port, self.workdir, self.log_path)) + "\n")
            self.command = [mosquitto, "-c", str(conf)]
        else:
            try:
                import amqtt  # noqa: F401
            except ImportError:
                raise SystemExit(
                    "no MQTT broker: install mosquitto (apt-get install mosquitto) or amqtt (pip install amqtt)"
                ) from None
            self.name, self.url = "amqtt", f"mqtt://{HOST}:{self.port}?protocol=3.1.1"
            self.stop_signal = signal.SIGINT
            conf = self.workdir / "amqtt.yaml"
            config = {
                "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{self.port}"}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
            }
            conf.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
            self.command = [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(conf)]
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> Broker:
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._proc.poll() is None:
            if port_open(self.port):
                return self
            time.sleep(0.05)
        tail = self.log_path.read_text(errors="replace")[-1000:]
        self.stop()
        raise SystemExit(f"{self.name} did not listen on {HOST}:{self.port} in {timeout} s: {tail}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(self.stop_signal)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None
        shutil.rmtree(self.workdir, ignore_errors=True)


# -- 3. subscriber --------------------------------------------------------------------------


class Collector:
    """A ResultStream on ``edge/demo/results`` whose lines a thread appends to ``lines``."""

    def __init__(self, broker_url: str) -> None:
        from edge_runtime.cloud.options import SubscribeOptions
        from edge_runtime.cloud.stream import ResultStream

        options = SubscribeOptions(broker=broker_url, topic=f"edge/{DEVICE_ID}/results", heartbeats=True)
        self.stream = ResultStream(options).start()
        self.tracker = self.stream.tracker
        self.lines: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="subscriber", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for line in self.stream.lines(stop=self._stop):
            self.lines.append(line)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.stream.close()
        self.lines.extend(self.stream.drain())


# -- 4. daemon ------------------------------------------------------------------------------


def run_daemon(args: argparse.Namespace, broker_url: str, state_dir: Path, collector: Collector) -> Path:
    sent_path = state_dir / "sent.jsonl"
    log_path = state_dir / "daemon.log"
    command = [
        sys.executable, "-m", "edge_runtime.cli", "run",
        "--bundle", str(args.bundle), "--source", "synthetic", "--fps", str(args.fps),
        "--broker", broker_url, "--device-id", DEVICE_ID, "--state-dir", str(state_dir),
        "--precision", args.precision, "--output", str(sent_path),
    ]  # fmt: skip
    step(f"daemon: {' '.join(command[2:])} (log: {log_path})")
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + args.seconds
            next_progress = time.monotonic() + 1.0
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
                if time.monotonic() >= next_progress:
                    print(f"    {len(collector.lines)} results received so far", flush=True)
                    next_progress += 1.0
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # finish the frames in flight, flush the spool
            rc = proc.wait(30)
        except BaseException:
            proc.kill()
            proc.wait(5)
            raise
    if rc != 0:
        print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
        raise SystemExit(f"the daemon exited with {rc} (log: {log_path})")
    for text in log_path.read_text(errors="replace").splitlines():
        if " engine: " in text or " stopped: " in text:
            print("    " + text.split(" INFO ", 1)[-1], flush=True)
    return sent_path


# -- 5/6. summary ---------------------------------------------------------------------------


def wait_for(collector: Collector, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while collector.tracker.results + collector.tracker.heartbeats < expected and time.monotonic() < deadline:
        time.sleep(0.05)


def compact_result(line: dict[str, Any]) -> str:
    """One line per frame: the class, the box and the mask's area, not the whole RLE."""
    parts = [f"seq {line['seq']:>3} frame {line['frame_id']:>3}"]
    for head, res in line["results"].items():
        if "class_ids" in res:
            parts.append(f"{head}={res['labels'][0]} {res['scores'][0]:.2f}")
        elif "box" in res:
            parts.append(f"{head}=[{', '.join(f'{v:.0f}' for v in res['box'])}]")
        elif "class_areas" in res:
            areas = ", ".join(f"{k} {v:.2f}" for k, v in res["class_areas"].items())
            parts.append(f"{head}=areas({areas})")
        else:
            parts.append(f"{head}={json.dumps(res)[:60]}")
    parts.append(f"{line['latency_ms']['total']:.1f} ms")
    return "  ".join(parts)


def summarize(sent: list[dict[str, Any]], collector: Collector, seconds: float) -> bool:
    from edge_runtime.codec import encode_line

    frames_sent = [s for s in sent if s.get("kind") != "heartbeat"]
    received = [r for r in collector.lines if r.get("kind") != "heartbeat"]
    step("three decoded results, as the subscriber received them")
    for line in received[:3]:
        print("    " + compact_result(line))

    tracker = collector.tracker
    sent_ids = {(s["epoch"], s["seq"]) for s in sent}
    got_ids = {(r["epoch"], r["seq"]) for r in collector.lines}
    missing = sorted(seq for epoch, seq in sent_ids - got_ids)
    stages: dict[str, list[float]] = {}
    for line in frames_sent:
        for stage, ms in line["latency_ms"].items():
            stages.setdefault(stage, []).append(ms)
    wire = [len(encode_line(s)) for s in frames_sent]
    as_json = [len(json.dumps(s, separators=(",", ":")).encode()) for s in frames_sent]

    step("summary")
    heartbeats = len(sent) - len(frames_sent)
    ts = [s["ts"] for s in frames_sent]
    span = max(ts) - min(ts) if ts else 0.0
    fps = (len(ts) - 1) / span if span > 0 else 0.0
    print(
        f"    frames:        {len(frames_sent)} results, {fps:.1f} fps (first to last frame; "
        f"daemon ran {seconds:.1f} s incl. start-up)"
    )
    p50 = ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in stages.items())
    print(f"    p50 ms:        {p50}")
    if wire:
        mean_wire, mean_json = statistics.mean(wire), statistics.mean(as_json)
        print(
            f"    payload:       {mean_wire:.0f} bytes on the wire (msgpack) vs {mean_json:.0f} bytes as JSON "
            f"({mean_json / mean_wire:.1f}x smaller), mean per result"
        )
    print(
        f"    messages:      {len(sent)} sent ({len(frames_sent)} results, {heartbeats} heartbeats), "
        f"{tracker.results + tracker.heartbeats} received ({tracker.results} results, {tracker.heartbeats} heartbeats)"
    )
    gaps = tracker.gaps()
    gap_text = "none" if not gaps else "; ".join(f"{e}: {r}" for (_, e), r in gaps.items())
    print(f"    duplicates:    {tracker.duplicates}; malformed: {tracker.malformed}; gaps: {gap_text}")
    ok = not missing and len(frames_sent) > 0
    if ok:
        print(f"    results sent = results received: {len(frames_sent)} = {tracker.results}  OK")
    else:
        print(f"    LOST: {len(missing)} sent messages never arrived (seq {missing[:20]})")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="how long the daemon runs (default: 5)")
    parser.add_argument("--fps", type=float, default=20.0, help="synthetic frames per second (default: 20)")
    parser.add_argument("--bundle", type=Path, default=Path("build/demo_bundle"), help="default: build/demo_bundle")
    parser.add_argument(
        "--state-dir", type=Path, default=Path("build/demo_state"),
        help="the daemon's state dir, emptied at start (default: build/demo_state)",
    )  # fmt: skip
    parser.add_argument("--precision", default="int8", help="the daemon's --precision (default: int8)")
    parser.add_argument("--no-quantize", action="store_true", help="run the bundle as it is (no INT8 step)")
    parser.add_argument(
        "--broker-kind", choices=("auto", "mosquitto", "amqtt"), default="auto",
        help="auto (default): mosquitto when installed, else amqtt",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="leave the broker running at the end (prints its URL)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="    %(levelname)s %(message)s", stream=sys.stdout)
    if not (args.bundle / "manifest.json").is_file():
        parser.error(f"--bundle {args.bundle}: no manifest.json (run: make demo, or edge-export split ...)")
    if args.seconds <= 0 or args.fps <= 0:
        parser.error("--seconds and --fps must be > 0")

    started = time.perf_counter()
    if not args.no_quantize:
        ensure_int8(args.bundle)
    state_dir = args.state_dir
    if state_dir.exists():  # a fresh epoch and an empty spool: sent.jsonl lists exactly this run
        if any(state_dir.iterdir()) and not (state_dir / "epoch").exists():
            parser.error(f"--state-dir {state_dir}: not empty and not a state dir; give another")
        shutil.rmtree(state_dir)
    state_dir.mkdir(parents=True)

    broker = Broker(args.broker_kind).start()
    why = "" if broker.name == "mosquitto" else " (mosquitto not installed: the pure-Python fallback, MQTT 3.1.1)"
    step(f"broker: {broker.name} on {broker.url}{why}")
    try:
        collector = Collector(broker.url)
        step("subscriber: connected, subscribed to edge/demo/results")
        try:
            run_started = time.perf_counter()
            sent_path = run_daemon(args, broker.url, state_dir, collector)
            run_seconds = time.perf_counter() - run_started
            sent = [json.loads(t) for t in sent_path.read_text().splitlines() if t.strip()]
            step(f"daemon stopped; {len(sent)} messages sent, waiting for the subscriber")
            wait_for(collector, len(sent), timeout=15.0)
        finally:
            collector.close()
        ok = summarize(sent, collector, run_seconds)
    finally:
        if args.keep:
            step(f"broker left running: {broker.url} (pid {broker._proc.pid if broker._proc else '?'})")
        else:
            broker.stop()
    print(f"demo done in {time.perf_counter() - started:.1f} s", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
