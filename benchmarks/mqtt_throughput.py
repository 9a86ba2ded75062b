"""End-to-end MQTT throughput: ``publish_line`` → spool → QoS 1 PUBLISH → PUBACK → a subscriber.

Target from the issue: >= 5,000 results/s sustained to a local mosquitto, QoS 1, spool on.

Payloads: the real demo results (``codec_size.py``'s frames through the demo bundle, every head
on every frame, a 640x480 frame), 16 frames cycled, each line with a fresh ``frame_id`` and
``ts = time.time()`` when appended; ``publish_line`` encodes it (msgpack, ~630 B) under the
spool's lock, as the daemon does. A mosquitto of our own runs on a free loopback port
(``max_queued_messages 0``: the default 1000 silently drops QoS 1 messages queued for a slow
subscriber). A paho v5 subscriber (QoS 1, clean start, paho's and mosquitto's
defaults) runs in its own process, as it would on another machine, and checks that it got every
seq ``0 .. N-1`` exactly once.

Burst runs: ``N`` results appended as fast as ``publish_line`` returns, each run with a fresh
spool (bounds lifted) and ``MqttPublisher``; the cases are interleaved (each once per round,
``--rounds`` rounds, medians reported). Rates, results/s from the first append:

* ``append``  N / time until the last ``publish_line`` returned (the sender runs meanwhile)
* ``acked``   N / time until every message was PUBACKed and deleted (``acked == N``, depth 0)
* ``e2e``     N / time until the subscriber had every seq (its ``CLOCK_MONOTONIC``: one clock
  for all processes)

Cases: ``synchronous`` normal (the default) and full × ``max_inflight`` 20, 100 (the default),
500; ``commit_interval_ms`` at its default (5 ms). References, in the same rounds:

* ``ref_append_only``    ``publish_line`` on a publisher that is not started: encode + spool alone
* ``ref_no_subscriber``  the default case publishing to a topic nobody subscribes to (the
  device's side without a subscriber process on the same 2 cores)
* ``ref_paho_only``      no spool, no encoding in the loop: a plain paho v5 client publishes the
  same payloads (encoded beforehand, ContentType property built once), QoS 1, 100 in flight

CPU time per result (``/proc``: user + system) is reported for the publisher process and each of
its threads (``main`` appends, ``mqtt-sender``, ``paho-mqtt-client`` the network loop), the
broker and the subscriber: on a shared machine it is steadier than the rates.

Paced runs (``--rate``, default 5,000/s, for ``--seconds``): appends on a fixed schedule, with
the default case and with full; reported: the offered rate reached, the largest spool depth
seen, how long after the last append the subscriber had everything, and the latency append →
subscriber (``ts`` in the payload vs the subscriber's ``time.time()``). The target counts as met
when the default case's burst e2e median is >= 5,000/s and its paced run kept up: the offered
rate reached (>= 99 %), every seq once, the subscriber done <= ``--max-lag`` s after the last
append.

``--profile DIR`` adds one burst run of the default case under ``cProfile`` in every thread and
writes ``DIR/<thread>.pstats``; the top functions are printed.

Usage::

    python benchmarks/mqtt_throughput.py [--results 20000] [--rounds 3] [--rate 5000] [--seconds 10]
        [--dir /var/lib/edge-runtime] [--profile build/mqtt_profile]
        [--json benchmarks/results/mqtt_throughput.x86_64.json]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import logging
import multiprocessing
import os
import pstats
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

import msgpack
import numpy as np
import paho.mqtt.client as paho
from bench_support import package_version, split_for_bench
from codec_size import DEVICE, EPOCH, demo_images, stretch
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_runtime.codec import CONTENT_TYPE, HEADER_SIZE, encode_line, read_header
from edge_runtime.delivery.mqtt.publisher import MqttPublisher
from edge_runtime.delivery.mqtt.settings import MqttConfig
from edge_runtime.delivery.spool import Spool
from edge_runtime.delivery.spool_file import SpoolOptions
from edge_runtime.inference.engine import Engine, EngineOptions
from edge_runtime.ops.bench import Timing, environment, write_report

Sync = Literal["normal", "full"]

HOST = "127.0.0.1"
PREFIX = "bench"  # the subscriber takes bench/+/results
UNSUBSCRIBED_PREFIX = "nobody"
TARGET_PER_S = 5000.0
STALL_S = 30.0  # no progress for this long: the run is given up (and reported as failed)
INFLIGHTS = (20, 100, 500)
SYNCS: tuple[Sync, ...] = ("normal", "full")
DEFAULT_CASE = "normal_if100"
THREADS = ("main", "mqtt-sender", "paho-mqtt-client")

logger = logging.getLogger("mqtt_throughput")


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- the broker ------------------------------------------------------------------------------


def find_mosquitto() -> str:
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("mosquitto")
    if found is None:
        raise SystemExit("mosquitto is not installed (apt-get install mosquitto)")
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def mosquitto(workdir: Path) -> Iterator[tuple[int, int, list[str], str]]:
    """A mosquitto on a free loopback port (as tests/broker.py starts one); yields (port, pid, config, version)."""
    exe = find_mosquitto()
    port = free_port()
    config = [
        f"listener {port} {HOST}",
        "allow_anonymous true",
        "persistence false",
        "max_queued_messages 0",  # the default 1000 drops QoS 1 to a slow subscriber
        f"log_dest file {workdir / 'mosquitto.log'}",
        "log_type error",
        "log_type warning",
    ]
    if os.geteuid() == 0:
        config.append("user root")
    (workdir / "mosquitto.conf").write_text("\n".join(config) + "\n")
    version = subprocess.run([exe, "-h"], capture_output=True, text=True, check=False).stdout.splitlines()[:1]
    proc = subprocess.Popen(
        [exe, "-c", str(workdir / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"mosquitto did not start on {HOST}:{port}; see {workdir / 'mosquitto.log'}")
            time.sleep(0.02)
        yield port, proc.pid, config, version[0] if version else "?"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# -- the subscriber (its own process) ------------------------------------------------------------


class _Stream:
    """What the subscriber got from one device: each seq's arrivals, times, latencies."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.seen = bytearray(expected)
        self.unique = self.duplicates = self.unexpected = 0
        self.first_mono: float | None = None
        self.complete_mono: float | None = None
        self.last_mono: float | None = None
        self.latency_ns = array("q")

    def add(self, seq: int, ts: float, mono: float, wall: float) -> None:
        if self.first_mono is None:
            self.first_mono = mono
        self.last_mono = mono
        if not 0 <= seq < self.expected:
            self.unexpected += 1
            return
        if self.seen[seq]:
            self.duplicates += 1
            return
        self.seen[seq] = 1
        self.unique += 1
        self.latency_ns.append(int((wall - ts) * 1e9))
        if self.unique == self.expected:
            self.complete_mono = mono

    def report(self) -> dict[str, Any]:
        missing = self.expected - self.unique
        return {
            "expected": self.expected,
            "unique": self.unique,
            "duplicates": self.duplicates,
            "unexpected": self.unexpected,
            "missing": missing,
            "first_missing": None if not missing else self.seen.index(0),
            "first_mono": self.first_mono,
            "last_mono": self.last_mono,
            "complete_mono": self.complete_mono,
        }


def subscriber_main(port: int, conn: Connection) -> None:
    """Subscribe to ``bench/+/results`` (QoS 1, MQTT v5) and answer the control pipe:
    ``("expect", device, n)``, ``("report", device)``, ``("latencies", device)``, ``("stop",)``."""
    streams: dict[str, _Stream] = {}
    lock = threading.Lock()
    subscribed = threading.Event()
    malformed = [0]

    def on_connect(client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        client.subscribe(f"{PREFIX}/+/results", qos=1)

    def on_subscribe(client: paho.Client, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        subscribed.set()

    def on_message(client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        mono, wall = time.monotonic(), time.time()
        payload = bytes(msg.payload)
        try:
            header = read_header(payload)
            if header.kind != "frame" or header.compression != "none":
                raise ValueError(f"unexpected payload {header}")
            if header.mode == "json":
                line = json.loads(payload[HEADER_SIZE:])
                seq, ts = line["seq"], line["ts"]
            else:  # the seq and ts only: a full decode_payload would make this the slowest peer
                body = msgpack.unpackb(payload[HEADER_SIZE:], raw=False)
                seq, ts = body["s"], body["t"]
        except Exception:
            malformed[0] += 1
            return
        device = msg.topic.split("/")[1]
        with lock:
            stream = streams.get(device)
            if stream is not None:
                stream.add(int(seq), float(ts), mono, wall)

    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{os.getpid()}", protocol=MQTTProtocolVersion.MQTTv5
    )
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(HOST, port, 30, clean_start=True)
    client.loop_start()
    conn.send(subscribed.wait(10))
    try:
        while True:
            request = conn.recv()
            with lock:
                if request[0] == "expect":
                    streams[request[1]] = _Stream(request[2])
                    conn.send(True)
                elif request[0] == "report":
                    conn.send({**streams[request[1]].report(), "malformed": malformed[0]})
                elif request[0] == "latencies":
                    conn.send_bytes(streams.pop(request[1]).latency_ns.tobytes())
                else:
                    break
    finally:
        client.disconnect()
        client.loop_stop()


class Subscriber:
    """The subscriber process and its control pipe."""

    def __init__(self, port: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=subscriber_main, args=(port, child), name="bench-subscriber", daemon=True)
        self._proc.start()
        if not self._conn.poll(30) or not self._conn.recv():
            raise SystemExit("the subscriber did not get its subscription")

    def expect(self, device: str, n: int) -> None:
        self._conn.send(("expect", device, n))
        self._conn.recv()

    def report(self, device: str) -> dict[str, Any]:
        self._conn.send(("report", device))
        result: dict[str, Any] = self._conn.recv()
        return result

    def latencies_ns(self, device: str) -> list[int]:
        self._conn.send(("latencies", device))
        return array("q", self._conn.recv_bytes()).tolist()

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send(("stop",))
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()


# -- one run ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """``kind``: ``publisher`` (MqttPublisher), ``append_only`` or ``paho_only`` (references)."""

    name: str
    kind: str = "publisher"
    synchronous: Sync = "normal"
    max_inflight: int = 100
    subscribed: bool = True


def demo_lines(frames: int) -> list[dict[str, Any]]:
    """Result lines of ``frames`` demo frames (``to_dict`` + ``epoch``), as the daemon publishes them."""
    with tempfile.TemporaryDirectory() as tmp:
        bundle = split_for_bench(Path(tmp) / "bundle")
        engine = Engine.from_bundle(bundle, EngineOptions(threads=1))
        with engine:
            for name in engine.head_names:
                engine.scheduler.set_every_n_frames(name, 1)
            results = [
                engine.infer(stretch(image), frame_id=i, timestamp=1764000000.0 + i / 30)
                for i, image in enumerate(demo_images(frames))
            ]
    return [{**r.to_dict(device=DEVICE, seq=0), "epoch": EPOCH} for r in results]


class PlainPaho:
    """``ref_paho_only``: a paho v5 client publishing QoS 1, at most ``window`` in flight, no spool."""

    def __init__(self, port: int, client_id: str, window: int) -> None:
        self.acked = 0
        self._room = threading.Semaphore(window)
        self._connected = threading.Event()
        self._props = Properties(PacketTypes.PUBLISH)
        self._props.ContentType = CONTENT_TYPE
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
        self.client.max_inflight_messages_set(window)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = lambda *args: self._connected.set()
        self.client.on_publish = self._on_publish
        self.client.connect(HOST, port)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise SystemExit(f"paho did not connect to {HOST}:{port}")

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        self.acked += 1
        self._room.release()

    def publish(self, topic: str, payload: bytes) -> None:
        self._room.acquire()
        self.client.publish(topic, payload, qos=1, properties=self._props)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def run_once(
    case: Case,
    device: str,
    lines: list[dict[str, Any]],
    n: int,
    *,
    port: int,
    broker_pid: int,
    subscriber: Subscriber,
    spool_dir: Path,
    rate: float | None = None,
) -> dict[str, Any]:
    """Send ``n`` results (as fast as possible, or at ``rate``/s), wait for the acks and the subscriber."""
    prefix = PREFIX if case.subscribed else UNSUBSCRIBED_PREFIX
    topic = f"{prefix}/{device}/results"
    subscribed = case.subscribed and case.kind != "append_only"
    if subscribed:
        subscriber.expect(device, n)
    spool: Spool | None = None
    publisher: MqttPublisher | None = None
    plain: PlainPaho | None = None
    if case.kind == "paho_only":
        payloads = [
            encode_line({**lines[i % len(lines)], "frame_id": i, "ts": time.time(), "seq": i}) for i in range(n)
        ]
        client = plain = PlainPaho(port, f"bench-{device}", case.max_inflight)

        def send(i: int) -> None:
            client.publish(topic, payloads[i])

        def acked() -> int:
            return client.acked

    else:
        options = SpoolOptions(max_rows=None, max_bytes=None, synchronous=case.synchronous)
        spool = Spool.open(spool_dir / f"{device}.sqlite", options)
        config = MqttConfig(HOST, port, client_id=f"bench-{device}", topic_prefix=prefix)
        pub = publisher = MqttPublisher(config, device, spool, max_inflight=case.max_inflight)
        if case.kind == "publisher":
            pub.start()
            if not pub.wait_connected(10):
                raise SystemExit(f"the publisher did not connect to {HOST}:{port}")

        def send(i: int) -> None:
            pub.publish_line({**lines[i % len(lines)], "frame_id": i, "ts": time.time()})

        def acked() -> int:
            return pub.acked

    def depth() -> int:
        return 0 if spool is None else spool.stats().depth

    out: dict[str, Any] = {"case": case.name, "device": device, "results": n, "rate": rate}
    t_acked = t_complete = None
    report: dict[str, Any] = {}
    try:
        max_depth = 0
        cpu0 = cpu_seconds(broker_pid, subscriber.pid)
        t0 = time.monotonic()
        next_note = t0 + 1.0
        i = 0
        while i < n:
            if rate is not None:
                due = min(n, int((time.monotonic() - t0) * rate) + 1)
                if i >= due:
                    time.sleep(0.0005)
                    continue
            else:
                due = min(n, i + 500)
            while i < due:
                send(i)
                i += 1
            now = time.monotonic()
            if rate is not None or now >= next_note:
                max_depth = max(max_depth, depth())
            if now >= next_note:
                progress(f"    sent {i}/{n}, acked {acked()}")
                next_note = now + 1.0
        t_append = time.monotonic()

        if case.kind != "append_only":
            last_change, last_seen = time.monotonic(), (-1, -1)
            next_query = 0.0
            unique = 0
            while True:  # the acks polled every 2 ms; the subscriber (its own clock) every 20 ms
                now = time.monotonic()
                done = acked()
                if t_acked is None and done >= n and depth() == 0:
                    t_acked = now
                if subscribed and t_complete is None and now >= next_query:
                    report = subscriber.report(device)
                    unique, t_complete = report["unique"], report["complete_mono"]
                    next_query = now + 0.02
                if t_acked is not None and (t_complete is not None or not subscribed):
                    break
                if (done, unique) != last_seen:
                    last_change, last_seen = now, (done, unique)
                elif now - last_change > STALL_S:
                    progress(f"    stalled for {STALL_S:.0f} s: acked {done}/{n}, received {unique}/{n}")
                    break
                if now >= next_note:
                    progress(f"    acked {done}/{n}, received {unique}/{n}")
                    next_note = now + 1.0
                time.sleep(0.002)
        t_end = time.monotonic()
        cpu1 = cpu_seconds(broker_pid, subscriber.pid)
        if subscribed:
            time.sleep(0.2)  # late duplicates, if any
            report = subscriber.report(device)
        if spool is not None:
            stats = spool.stats()
            out.update(spool_depth_after=stats.depth, spool_dropped=stats.dropped_overflow)
    finally:
        if publisher is not None:
            publisher.close(timeout=2.0)
        if spool is not None:
            spool.close()
        if plain is not None:
            plain.close()

    def per_s(t: float | None) -> float | None:
        return None if t is None else n / (t - t0)

    out.update(
        append_per_s=n / (t_append - t0),
        acked_per_s=per_s(t_acked),
        e2e_per_s=per_s(t_complete),
        append_s=t_append - t0,
        acked_s=None if t_acked is None else t_acked - t0,
        e2e_s=None if t_complete is None else t_complete - t0,
        lag_after_last_append_s=None if t_complete is None else t_complete - t_append,
        max_depth=max_depth,
    )
    if publisher is not None:
        out.update(
            published=publisher.published,
            acked=publisher.acked,
            rejected=publisher.rejected,
            reconnects=publisher.reconnects,
        )
    spent: dict[str, float | None] = {}
    for key, after in cpu1.items():
        before = cpu0.get(key)
        spent[key] = None if after is None or before is None else after - before
    out["cpu_us_per_result"] = {k: None if v is None else round(v / n * 1e6, 1) for k, v in spent.items()}
    out["cpu_busy_fraction"] = {k: None if v is None else round(v / (t_end - t0), 3) for k, v in spent.items()}
    if subscribed:
        out["subscriber"] = {k: report[k] for k in ("unique", "duplicates", "missing", "first_missing", "unexpected")}
        out["subscriber"]["malformed"] = report["malformed"]
        out["every_seq_once"] = report["unique"] == n and not (report["duplicates"] or report["unexpected"])
        out["latency_ns"] = subscriber.latencies_ns(device) if case.kind == "publisher" else []
    return out


def cpu_seconds(broker_pid: int, subscriber_pid: int | None) -> dict[str, float | None]:
    """CPU time (user + system) so far of this process (all its threads, and each of its three), the
    broker and the subscriber."""

    def of(pid: int | str | None) -> float | None:
        try:  # fields 14 and 15 after the "(comm)" field: utime, stime in clock ticks
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None

    out = {"publisher": time.process_time(), "broker": of(broker_pid), "subscriber": of(subscriber_pid)}
    for thread in threading.enumerate():  # the publisher's threads: main (appends), sender, paho's network loop
        name = "main" if thread is threading.main_thread() else thread.name.split("-bench-")[0]
        if name in THREADS:
            out[f"publisher:{name}"] = of(f"{os.getpid()}/task/{thread.native_id}")
    return out


def describe(run: dict[str, Any]) -> str:
    def rate(key: str) -> str:
        return "-" if run[key] is None else f"{run[key]:,.0f}/s"

    cpu = ", ".join(f"{k} {v:.0f}" for k, v in run["cpu_us_per_result"].items() if v is not None)
    if "every_seq_once" not in run:
        ok = "no subscriber"
    elif run["every_seq_once"]:
        ok = "every seq once"
    else:
        sub = run["subscriber"]
        ok = f"MISSING {sub['missing']} (first {sub['first_missing']}), duplicates {sub['duplicates']}"
    return (
        f"append {rate('append_per_s')}, acked {rate('acked_per_s')}, e2e {rate('e2e_per_s')},"
        f" max depth {run['max_depth']}, {ok}; CPU us/result: {cpu}"
    )


# -- profiling -------------------------------------------------------------------------------------


@contextlib.contextmanager
def profiled_threads() -> Iterator[dict[str, cProfile.Profile]]:
    """cProfile in the calling thread and in every thread started inside the block."""
    profiles: dict[str, cProfile.Profile] = {}
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        prof = cProfile.Profile()
        prof.enable()
        try:
            original(self)
        finally:
            prof.disable()
            profiles[self.name] = prof

    threading.Thread.run = run  # type: ignore[method-assign]
    main = cProfile.Profile()
    main.enable()
    try:
        yield profiles
    finally:
        main.disable()
        threading.Thread.run = original  # type: ignore[method-assign]
        profiles["main"] = main


def top_functions(prof: cProfile.Profile, n: int) -> str:
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(n)
    text = buf.getvalue()
    return text[text.find("   ncalls") :] if "   ncalls" in text else text


# -- main ------------------------------------------------------------------------------------------


def median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if len(known) == len(values) and known else None


def kept_up(run: dict[str, Any], rate: float, max_lag: float) -> bool:
    lag = run["lag_after_last_append_s"]
    return bool(run["every_seq_once"] and run["append_per_s"] >= 0.99 * rate and lag is not None and lag <= max_lag)


def summarize(cases: list[Case], runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for case in cases:
        mine = [run for run in runs if run["case"] == case.name]
        if not mine:
            continue
        row: dict[str, Any] = {"kind": case.kind, "synchronous": case.synchronous, "max_inflight": case.max_inflight}
        for key in ("append_per_s", "acked_per_s", "e2e_per_s"):
            row[f"{key}_median"] = median([run[key] for run in mine])
        row["e2e_per_s_runs"] = [run["e2e_per_s"] for run in mine]
        row["acked_per_s_runs"] = [run["acked_per_s"] for run in mine]
        row["cpu_us_per_result_median"] = {
            key: median([run["cpu_us_per_result"].get(key) for run in mine]) for key in mine[0]["cpu_us_per_result"]
        }
        if "every_seq_once" in mine[0]:
            row["every_seq_once"] = all(run["every_seq_once"] for run in mine)
        summary[case.name] = row
    return summary


def print_table(summary: dict[str, dict[str, Any]], results: int, rounds: int) -> None:
    print(f"\nburst: {results} results per run, {rounds} rounds; medians, results/s and CPU us per result")
    print(
        f"{'case':<18} {'append':>8} {'acked':>8} {'e2e':>8}  {'e2e (each round)':<22}"
        f" {'pub':>5} {'main':>5} {'send':>5} {'net':>5} {'sub':>5} {'mosq':>5}  seqs"
    )
    for name, row in summary.items():
        rates = [row[f"{k}_median"] for k in ("append_per_s", "acked_per_s", "e2e_per_s")]
        each = ", ".join("-" if v is None else f"{v:,.0f}" for v in row["e2e_per_s_runs"])
        cpu = row["cpu_us_per_result_median"]
        keys = ("publisher", "publisher:main", "publisher:mqtt-sender", "publisher:paho-mqtt-client", "subscriber")
        cpus = [cpu.get(k) for k in (*keys, "broker")]
        seqs = {True: "ok", False: "LOST/DUP", None: "-"}[row.get("every_seq_once")]
        print(
            f"{name:<18} " + " ".join("       -" if v is None else f"{v:>8,.0f}" for v in rates)
            + f"  {each:<22} " + " ".join("    -" if v is None else f"{v:>5.0f}" for v in cpus) + f"  {seqs}"
        )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=int, default=20_000, help="results per burst run")
    parser.add_argument("--rounds", type=int, default=3, help="burst rounds (every case once per round)")
    parser.add_argument("--inflight", default=",".join(map(str, INFLIGHTS)), help="max_inflight values")
    parser.add_argument("--no-references", action="store_true", help="leave out the ref_* cases")
    parser.add_argument("--rate", type=float, default=TARGET_PER_S, help="offered rate of the paced runs (0: none)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each paced run")
    parser.add_argument("--max-lag", type=float, default=1.0, help="paced: seconds the subscriber may lag at the end")
    parser.add_argument("--frames", type=int, default=16, help="distinct demo frames cycled")
    parser.add_argument("--dir", type=Path, help="where the spool files go (default: the system temp dir)")
    parser.add_argument("--profile", type=Path, help="add one profiled burst run; write pstats here")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    progress(f"building {args.frames} demo result lines ...")
    lines = demo_lines(args.frames)
    sizes = [len(encode_line({**line, "seq": 1000 + i})) for i, line in enumerate(lines)]
    progress(f"  msgpack payload: mean {np.mean(sizes):.0f} B (min {min(sizes)}, max {max(sizes)})")

    inflights = [int(v) for v in args.inflight.split(",") if v]
    cases = [Case(f"{sync}_if{k}", synchronous=sync, max_inflight=k) for sync in SYNCS for k in inflights]
    if not args.no_references:
        cases += [
            Case("ref_append_only", kind="append_only"),
            Case("ref_no_subscriber", subscribed=False),
            Case("ref_paho_only", kind="paho_only"),
        ]
    runs: list[dict[str, Any]] = []
    paced: list[dict[str, Any]] = []
    profile_text: dict[str, str] = {}
    load_before = os.getloadavg()
    with (
        tempfile.TemporaryDirectory(prefix="mqtt-bench-") as tmp,
        tempfile.TemporaryDirectory(dir=args.dir, prefix="mqtt-bench-spool-") as spool_tmp,
    ):
        spool_dir = Path(spool_tmp)
        with mosquitto(Path(tmp)) as (port, broker_pid, broker_config, broker_version):
            progress(f"{broker_version} on {HOST}:{port}; starting the subscriber ...")
            subscriber = Subscriber(port)

            def run_case(case: Case, device: str, n: int, rate: float | None = None) -> dict[str, Any]:
                return run_once(
                    case, device, lines, n,
                    port=port, broker_pid=broker_pid, subscriber=subscriber, spool_dir=spool_dir, rate=rate,
                )  # fmt: skip

            try:
                total = args.rounds * len(cases)
                for r in range(args.rounds):
                    for c, case in enumerate(cases):
                        progress(f"[{r * len(cases) + c + 1}/{total}] {case.name}, round {r + 1}: {args.results}")
                        run = run_case(case, f"{case.name}-r{r}", args.results)
                        progress("    " + describe(run))
                        runs.append(run)
                if args.rate > 0:
                    n = int(args.rate * args.seconds)
                    for sync in SYNCS:
                        case = Case(f"{sync}_if100", synchronous=sync)
                        progress(f"paced {case.name}: {args.rate:,.0f}/s for {args.seconds:g} s ({n} results)")
                        run = run_case(case, f"paced-{case.name}", n, args.rate)
                        progress("    " + describe(run))
                        paced.append(run)
                if args.profile:
                    case = Case(DEFAULT_CASE)
                    progress(f"profiled burst {case.name} (cProfile in every thread: slower) ...")
                    args.profile.mkdir(parents=True, exist_ok=True)
                    with profiled_threads() as profiles:
                        run = run_case(case, "profiled", args.results)
                    progress("    " + describe(run))
                    for name, prof in profiles.items():
                        prof.dump_stats(args.profile / f"{name.split('-bench-')[0]}.pstats")
                        profile_text[name] = top_functions(prof, 25)
            finally:
                subscriber.close()
            fs = _filesystem_of(spool_dir.resolve())
    load_after = os.getloadavg()

    summary = summarize(cases, runs)
    timings: dict[str, Timing] = {}
    for case in cases:
        samples = [ns for run in runs if run["case"] == case.name for ns in run.get("latency_ns", [])]
        if samples:
            timings[f"burst_{case.name}_latency"] = Timing.from_ns(samples)
    for run in paced:
        if run["latency_ns"]:
            timings[f"paced_{run['case']}_latency"] = Timing.from_ns(run["latency_ns"])

    def e2e(name: str) -> float | None:
        return summary.get(name, {}).get("e2e_per_s_median")

    ratios: dict[str, float] = {}
    for k in inflights:
        normal, full = e2e(f"normal_if{k}"), e2e(f"full_if{k}")
        if normal and full:
            ratios[f"full_vs_normal_e2e_if{k}"] = full / normal
    default_rate, paho_rate = e2e(DEFAULT_CASE), e2e("ref_paho_only")
    if default_rate and paho_rate:
        ratios["default_vs_paho_only_e2e"] = default_rate / paho_rate
    paced_default = next((run for run in paced if run["case"] == DEFAULT_CASE), None)
    sustained = None if paced_default is None else kept_up(paced_default, args.rate, args.max_lag)
    targets = {
        "qos1_spool_5000_per_s": {
            "target_per_s": TARGET_PER_S,
            "judged_on": (
                f"the default case ({DEFAULT_CASE}: synchronous=normal, max_inflight=100, commit_interval_ms=5):"
                " the burst e2e rate (median over rounds) >= target, and the paced run at the target rate kept up"
                f" (offered rate >= 99 % reached, every seq once, subscriber done <= {args.max_lag:g} s after the"
                " last append)"
            ),
            "burst_e2e_per_s_median": default_rate,
            "paced_rate": args.rate if paced_default else None,
            "paced_offered_per_s": paced_default["append_per_s"] if paced_default else None,
            "paced_kept_up": sustained,
            "met": None if default_rate is None else default_rate >= TARGET_PER_S and sustained is not False,
        },
        "every_seq_exactly_once": all(run.get("every_seq_once", True) for run in runs + paced),
    }

    print_table(summary, args.results, args.rounds)
    for run in paced:
        lat = timings.get(f"paced_{run['case']}_latency")
        print(
            f"paced {run['case']} at {args.rate:,.0f}/s: offered {run['append_per_s']:,.0f}/s,"
            f" e2e {run['e2e_per_s'] or 0:,.0f}/s, lag at end {run['lag_after_last_append_s'] or float('nan'):.3f} s,"
            f" max depth {run['max_depth']}, latency p50 {lat.p50_ms if lat else float('nan'):.1f} ms"
            f" p99 {lat.p99_ms if lat else float('nan'):.1f} ms, kept up: {kept_up(run, args.rate, args.max_lag)}"
        )
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({os.cpu_count()} cores)")
    print("target:", json.dumps(targets["qos1_spool_5000_per_s"], indent=2))
    for name, text in profile_text.items():
        print(f"\n--- cProfile, thread {name} (top 25 by own time) ---\n{text}")

    if args.json:
        for run in runs + paced:
            run.pop("latency_ns", None)
        meta = {
            "benchmark": "mqtt_throughput",
            "command": "python benchmarks/mqtt_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "payload": {
                "source": f"demo bundle, {args.frames} frames cycled (codec_size.py's frames), msgpack, no zstd",
                "bytes_mean": float(np.mean(sizes)),
                "bytes_min": min(sizes),
                "bytes_max": max(sizes),
            },
            "results_per_burst": args.results,
            "rounds": args.rounds,
            "paced": {"rate": args.rate, "seconds": args.seconds, "max_lag_s": args.max_lag},
            "broker": {"version": broker_version, "config": [c for c in broker_config if not c.startswith("log")]},
            "subscriber": "paho v5, QoS 1, clean start, its own process; reads seq and ts of each payload",
            "spool": {"commit_interval_ms": SpoolOptions().commit_interval_ms, "filesystem": fs},
            "load_average_1min": {"before": load_before[0], "after": load_after[0]},
            "summary": summary,
            "targets": targets,
            "runs": runs,
            "paced_runs": paced,
            "environment": {
                **environment(),
                "paho-mqtt": package_version("paho-mqtt"),
                "msgpack": package_version("msgpack"),
                "sqlite": sqlite3.sqlite_version,
            },
        }
        print(f"wrote {write_report(args.json, timings, ratios, meta)}")
    return 0


def _filesystem_of(path: Path) -> str:
    best, kind = "", "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 2 and str(path).startswith(fields[1]) and len(fields[1]) > len(best):
                best, kind = fields[1], fields[2]
    return f"{kind} on {best or '?'}"


if __name__ == "__main__":
    sys.exit(main())
