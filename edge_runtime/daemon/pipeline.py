"""The daemon: source → engine → sinks, in three threads joined by bounded queues.

* **capture** reads frames from the source. For a live source (camera, stream, throttled
  synthetic) it keeps only the newest frame when inference falls behind and counts the
  frames it dropped; for a file or folder every frame is processed (the reader waits).
* **inference** runs the engine (trunk once, due heads, decode).
* **output** applies the per-head publishing policy (:mod:`edge_runtime.delivery.reporting`:
  report-by-exception, heartbeats, QoS and expiry per message), numbers each message
  (``seq``: the spool's when publishing to MQTT, else persisted in the state directory) and
  hands it to every sink (JSON lines, the MQTT publisher's spool). The result queue is
  bounded and blocking: results are never dropped.

SIGINT/SIGTERM stop the capture, let inference finish the frame it holds, drain the result
queue, save ``seq`` and exit 0. A heartbeat file and systemd notifications (READY,
WATCHDOG, STATUS; pure Python, only under systemd) tell supervisors it is alive; a status
line (fps, dropped frames, per-stage p50) goes to the log every ``status_interval_s``, and with
a broker the retained status message (``<prefix>/<device>/status``) carries the same counters
plus the spool's (depth, dropped by overflow, expired).

Example::

    config = RuntimeConfig.load(flags={"bundle": "build/demo_bundle", "source": "synthetic",
                                       "max_frames": 100})
    exit_code = Daemon(config).run()

CLI: ``edge-runtime run --bundle build/demo_bundle --source synthetic --max-frames 100``
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from edge_runtime.bundle.reader import read_manifest
from edge_runtime.config import RuntimeConfig
from edge_runtime.daemon.remote_control import DaemonController, attach_commands
from edge_runtime.daemon.swaps import BOOT_OK_FRAMES, PROBATION_FRAMES, STATE_POLL_S, UpdateSlotsMixin, _Swap
from edge_runtime.delivery.reporting import HeadPolicy, Reporter
from edge_runtime.delivery.state import StateDir
from edge_runtime.errors import ConfigError, EdgeRuntimeError, close_matches
from edge_runtime.frames.frame import Frame
from edge_runtime.frames.sources import FrameSource, open_source
from edge_runtime.inference.engine import Engine
from edge_runtime.inference.results import FrameResult
from edge_runtime.ops.device import bundle_formats, resolve_engine_options
from edge_runtime.ops.metrics import Metrics, MetricsSnapshot
from edge_runtime.trust.commands import CommandProcessor
from edge_runtime.trust.updates import Slots

logger = logging.getLogger(__name__)

SEQ_SAVE_EVERY = 100


class ResultSink(Protocol):
    """Where numbered results go: ``write`` one, ``close`` at the end."""

    def write(self, line: dict[str, Any]) -> None:
        """Deliver one result line (DESIGN.md §7 fields)."""
        ...

    def close(self) -> None:
        """Flush and release."""
        ...


class JsonLinesSink:
    """One JSON object per line to a stream (``-``: stdout) or a file (appended)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._owned: IO[str] | None = None
        if target == "-":
            self._stream: IO[str] = sys.stdout
        else:
            try:
                self._owned = open(target, "a", encoding="utf-8")  # closed in close()
            except OSError as exc:
                raise ConfigError(f"--output {target}: cannot open: {exc.strerror or exc}") from None
            self._stream = self._owned

    def write(self, line: dict[str, Any]) -> None:
        self._stream.write(json.dumps(line, separators=(",", ":")) + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._owned is not None:
            self._owned.close()
        else:
            self._stream.flush()


class LatestFrameSlot:
    """A one-frame mailbox. ``put`` replaces an unread frame (counted as dropped) when
    ``drop_old``; otherwise it waits until the frame was taken."""

    def __init__(self, drop_old: bool) -> None:
        self.drop_old = drop_old
        self.dropped = 0
        self._frame: Frame | None = None
        self._closed = False
        self._cond = threading.Condition()

    def put(self, frame: Frame, stop: threading.Event) -> None:
        with self._cond:
            if self._frame is not None and not self.drop_old:
                while self._frame is not None and not stop.is_set():
                    self._cond.wait(0.1)
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self._cond.notify_all()

    def get(self) -> Frame | None:
        """The next frame, or None once closed and empty."""
        with self._cond:
            while self._frame is None and not self._closed:
                self._cond.wait(0.1)
            frame, self._frame = self._frame, None
            self._cond.notify_all()
            return frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def notify_systemd(message: str) -> bool:
    """Send an sd_notify message (``READY=1``, ``WATCHDOG=1``…) when run under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as exc:
        logger.debug("sd_notify failed: %s", exc)
        return False
    return True


class StageStats:
    """Rolling per-stage latencies (last 256 frames) for the status line."""

    def __init__(self) -> None:
        self.window: dict[str, deque[float]] = {}

    def add(self, latency_ms: dict[str, float]) -> None:
        for stage, value in latency_ms.items():
            self.window.setdefault(stage, deque(maxlen=256)).append(value)

    def p50(self) -> dict[str, float]:
        return {stage: float(np.median(values)) for stage, values in self.window.items() if values}

    def percentiles(self) -> dict[str, dict[str, float]]:
        """``{stage: {"p50": ms, "p95": ms}}`` over the window (for the status message)."""
        out: dict[str, dict[str, float]] = {}
        for stage, values in list(self.window.items()):
            if values:
                p50, p95 = np.percentile(np.fromiter(values, dtype=np.float64), [50, 95])
                out[stage] = {"p50": round(float(p50), 3), "p95": round(float(p95), 3)}
        return out


class Daemon(UpdateSlotsMixin):
    """Runs one configured pipeline until the source ends, ``max_frames`` or a signal."""

    def __init__(self, config: RuntimeConfig, sinks: list[ResultSink] | None = None) -> None:
        self.config = config
        self.state = StateDir.open(config.state_dir)
        self._extra_sinks = sinks or []
        self.stop = threading.Event()
        self.results_written = 0
        self.frames_in = 0
        self.frames_processed = 0
        self._errors: list[BaseException] = []
        self._stages = StageStats()
        self._started = time.monotonic()
        self._seq = 0
        self._publisher: Any = None
        self._metrics: Metrics | None = None
        self._engine: Engine | None = None
        self._slot: LatestFrameSlot | None = None
        self.reporter: Reporter | None = None
        self.slots = Slots.open(self.state.path)
        self._running_slot: str | None = self._existing_slot(self.slots.active_slot())
        self._running_key = self._slot_key(self._running_slot)
        self._bundle_override = None
        self._build_lock = threading.Lock()
        self._update_lock = threading.Lock()
        self._swap_lock = threading.Lock()
        self._pending_swap = None
        self._probation_engine = None
        self._running = False
        self._boot_reported = False
        self.controller = DaemonController(self)
        self._commands: CommandProcessor | None = None

    # -- building --------------------------------------------------------------------------
    def build_engine(self) -> Engine:
        """The engine with the config's backend, precision, threads (over the device profile's),
        trusted keys (the bundle's signature is checked first) and head overrides."""
        from edge_runtime.trust.keys import KeyFileError, load_public_keys

        config = self.config
        try:
            keys = tuple(load_public_keys(config.trusted_keys))
        except KeyFileError as exc:
            raise ConfigError(f"trusted_keys: {exc}") from None
        options, _ = resolve_engine_options(
            config.profile,
            backend=config.backend,
            precision=config.precision,
            threads=config.threads,
            bundle_formats=bundle_formats(read_manifest(self._bundle_path())),
        )
        options = replace(options, trusted_keys=keys or None)
        engine = Engine.from_bundle(self._bundle_path(), options)
        for name, override in config.heads.items():
            if name not in engine.head_names:
                engine.close()
                raise ConfigError(
                    f"config heads.{name}: the bundle has no head {name!r}"
                    f"{close_matches(name, engine.head_names)}; heads: {', '.join(engine.head_names)}"
                )
            if override.enabled is not None:
                engine.set_head_enabled(name, override.enabled)
            if override.every_n_frames is not None:
                engine.scheduler.set_every_n_frames(name, override.every_n_frames)
        self.controller.apply(engine)  # what remote commands changed outlives a swap
        return engine

    def build_reporter(self, engine: Engine) -> Reporter:
        """Each head's publishing policy: the manifest's QoS / expiry, overridden by the config."""
        policies: dict[str, HeadPolicy] = {}
        for name in engine.head_names:
            entry = engine.manifest.heads[name]
            override = self.config.heads.get(name)
            qos = override.qos if override is not None and override.qos is not None else entry.qos
            expiry = override.expiry_s if override is not None and override.expiry_s is not None else entry.expiry_s
            policies[name] = HeadPolicy(
                qos=1 if qos is None else qos,
                expiry_s=expiry,
                deadband=override.deadband if override is not None else None,
                float32=bool(override is not None and override.float32),
            )
        return Reporter(policies, heartbeat_s=self.config.rbe_heartbeat_s)

    # -- running ---------------------------------------------------------------------------
    def run(self, install_signals: bool = True) -> int:
        """Run to the end; return the process exit code (0 after a clean stop)."""
        if self.config.command_keys and self.config.broker is None:
            logger.warning("command_keys is set but there is no broker: remote commands arrive over MQTT, none will")
        self._boot()
        with self._build_lock:
            engine = self._checked_engine()
        sinks: list[ResultSink] = list(self._extra_sinks)
        self._publisher = None
        self._engine = engine
        try:
            self.reporter = self.build_reporter(engine)
            if self.config.metrics_port:
                self._metrics = Metrics.serve(self.config.metrics_host, self.config.metrics_port, self.metrics_snapshot)
            if self.config.broker is not None:
                self._publisher = self._open_publisher()
                if self._metrics is not None:
                    self._publisher.on_ack_latency = self._metrics.observe_ack_latency
            if self.config.output is not None or (not sinks and self._publisher is None):
                sinks.append(JsonLinesSink(self.config.output or "-"))
            source = open_source(
                self.config.source, fps=self.config.fps, loop=self.config.loop, max_frames=self.config.max_frames
            )
        except BaseException:
            engine.close()
            for sink in sinks:
                sink.close()
            self._close_publisher()
            self._close_metrics()
            raise
        slot = LatestFrameSlot(drop_old=source.live or self.config.fps is not None)
        self._slot = slot
        results: queue.Queue[FrameResult | Reporter | None] = queue.Queue(maxsize=self.config.queue_size)
        seq = self.state.load_seq()
        previous = self._install_signal_handlers() if install_signals else {}
        threads = [
            threading.Thread(target=self._guard(self._capture, source, slot), name="capture", daemon=True),
            threading.Thread(target=self._guard(self._infer, engine, slot, results), name="inference", daemon=True),
        ]
        output = threading.Thread(target=self._guard(self._output, results, sinks, seq), name="output", daemon=True)
        logger.info(
            "running %s on %s (%s), device %s, epoch %s, state %s",
            self._bundle_path(), self.config.source, "live: newest frame wins" if slot.drop_old else "every frame",
            self.config.device_id, self.state.epoch, self.state.path,
        )  # fmt: skip
        with self._swap_lock:
            self._running = True
        for thread in [*threads, output]:
            thread.start()
        notify_systemd("READY=1")
        try:
            self._supervise(output, slot, source)
        finally:
            self.stop.set()
            for thread in [*threads, output]:
                thread.join(timeout=30)
                if thread.is_alive():
                    logger.warning("thread %s did not stop within 30 s", thread.name)
            source.close()
            self._close_engines(engine)
            for sink in sinks:
                sink.close()
            if self._publisher is not None:  # the final counters go into the offline status
                self._publisher.publish_status(self.status_counters(slot))
            self._close_publisher()
            self._close_metrics()
            self.state.save_seq(self._seq)
            self._write_heartbeat(slot, final=True)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        logger.info(
            "stopped: %d frames in, %d results written, %d frames dropped",
            self.frames_in, self.results_written, slot.dropped,
        )  # fmt: skip
        if not self._errors and self.frames_processed and not self._boot_reported:
            self.slots.boot_ok()  # a clean stop is not a crash on start
        if self._errors:
            error = self._errors[0]
            if isinstance(error, EdgeRuntimeError):
                raise error
            raise EdgeRuntimeError(f"the pipeline failed: {type(error).__name__}: {error}") from error
        return 0

    def _close_engines(self, first: Engine) -> None:
        """Close the engines of this run: the first, the current, one on probation, one never swapped in."""
        with self._swap_lock:
            self._running = False
            pending, self._pending_swap = self._pending_swap, None
        if pending is not None:
            pending.engine.close()
            pending.error = "the daemon stopped before the swap; the update runs from the next start"
            pending.done.set()
        for engine in (first, self._engine, self._probation_engine):
            if engine is not None:
                engine.close()

    def _install_signal_handlers(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return previous
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._on_signal)
        return previous

    def _on_signal(self, signum: int, _frame: object) -> None:
        logger.info("%s: stopping after the frames in flight", signal.Signals(signum).name)
        self.stop.set()

    def _guard(self, target: Callable[..., None], *args: Any) -> Callable[[], None]:
        def run() -> None:
            try:
                target(*args)
            except BaseException as exc:
                self._errors.append(exc)
                self.stop.set()

        return run

    def _capture(self, source: Iterator[Frame], slot: LatestFrameSlot) -> None:
        try:
            for frame in source:
                if self.stop.is_set():
                    break
                self.frames_in += 1
                slot.put(frame, self.stop)
        finally:
            slot.close()

    def _infer(
        self, engine: Engine, slot: LatestFrameSlot, results: queue.Queue[FrameResult | Reporter | None]
    ) -> None:
        swap: _Swap | None = None  # the engine swapped in last, while on probation
        old_engine, old_reporter, old_key = engine, self.reporter, self._running_key
        probation = 0
        frames = 0
        try:
            while True:
                frame = slot.get()
                if frame is None:
                    break
                incoming = self._take_swap()  # between two frames: never mid-frame
                if incoming is not None:
                    if swap is not None:  # the previous swap is still on probation: it passed so far
                        self._end_probation(swap, old_engine)
                    old_engine, old_reporter, old_key = engine, self.reporter, self._current_key(swap, old_key)
                    swap, engine, probation = incoming, incoming.engine, PROBATION_FRAMES
                    self.controller.apply(engine)  # a command that came while it was being built
                    self._engine, self._probation_engine = engine, old_engine
                    self.reporter = swap.reporter
                    self._put(results, swap.reporter)
                    swap.installed = True
                    logger.info("swapped to %s v%s between frames", engine.manifest.name, engine.manifest.version)
                try:
                    result = engine.infer(frame)
                except Exception as exc:
                    if swap is None or probation <= 0:
                        raise
                    reason = f"the new bundle failed on frame {frame.frame_id}: {type(exc).__name__}: {exc}"
                    logger.error("%s; swapping back", reason)
                    engine.close()
                    engine, self._engine, self._probation_engine = old_engine, old_engine, None
                    self.reporter = old_reporter
                    if old_reporter is not None:
                        self._put(results, old_reporter)
                    with self._swap_lock:
                        if self._running_key == swap.key:
                            self._running_slot, self._running_key = old_key[0], old_key
                    if swap.rollback_on_failure:
                        try:
                            self.slots.rollback(reason)
                        except EdgeRuntimeError as rollback_error:
                            logger.error("rollback failed: %s", rollback_error)
                    swap.error = reason
                    swap.done.set()
                    swap, probation = None, 0
                    result = engine.infer(frame)  # the same frame, on the engine that worked
                if swap is not None and probation > 0:
                    probation -= 1
                    if probation == 0:
                        self._end_probation(swap, old_engine)
                        old_engine = engine
                frames += 1
                if frames == BOOT_OK_FRAMES and not self._boot_reported:
                    self._boot_reported = True
                    self.slots.boot_ok()
                self._stages.add(result.latency_ms)
                if self._metrics is not None:
                    self._metrics.observe_latencies(result.latency_ms)
                self._put(results, result)  # waits while the output is slow: results are never dropped
        finally:
            if swap is not None and probation > 0:
                self._end_probation(swap, None)
            self._put(results, None)

    def _put(self, results: queue.Queue[FrameResult | Reporter | None], item: FrameResult | Reporter | None) -> None:
        while True:
            try:
                results.put(item, timeout=0.1)
                return
            except queue.Full:
                if self._errors:  # the output failed: run() reports it and exits non-zero
                    return

    def _open_publisher(self) -> Any:
        """The spool and the MQTT publisher draining it; the spool's seq continues the state's."""
        from edge_runtime.delivery.mqtt.publisher import MqttConfig, MqttPublisher
        from edge_runtime.delivery.spool import Spool, SpoolOptions

        config = self.config
        assert config.broker is not None
        mqtt_config = MqttConfig.from_url(config.broker, topic_prefix=config.topic_prefix)
        options = SpoolOptions(
            max_rows=config.spool_max_rows,
            max_bytes=config.spool_max_bytes,
            synchronous="full" if config.spool_synchronous == "full" else "normal",
        )
        spool = Spool.open(config.spool or self.state.path / "spool.sqlite", options)
        try:
            spool.raise_next_seq(self.state.load_seq())
            publisher = MqttPublisher(
                mqtt_config,
                config.device_id,
                spool,
                mode=config.codec,
                compression=config.compression,
                epoch=self.state.epoch,
            )
            self._commands = attach_commands(self, publisher)
            return publisher.start()
        except BaseException:
            spool.close()
            raise

    def _close_publisher(self, timeout: float = 10.0) -> None:
        publisher = self._publisher
        if publisher is None:
            return
        self._publisher = None
        commands, self._commands = self._commands, None
        if commands is not None:
            publisher.on_command = None  # no new commands; one running (an update) may finish
            commands.join(timeout=timeout)
            commands.verifier.close()
        try:
            publisher.close(timeout=timeout)
        finally:
            self._seq = max(self._seq, publisher.spool.next_seq)
            depth = publisher.spool.stats().depth
            publisher.spool.close()
            if depth:
                logger.info("%d results stay in the spool and are sent on the next start", depth)

    def _close_metrics(self) -> None:
        metrics, self._metrics = self._metrics, None
        if metrics is not None:
            metrics.close()

    def metrics_snapshot(self) -> MetricsSnapshot:
        """The counters and gauges for a metrics scrape (called from the HTTP thread)."""
        engine, slot, publisher = self._engine, self._slot, self._publisher
        elapsed = max(time.monotonic() - self._started, 1e-9)
        spool_depth: int | None = None
        if publisher is not None:
            try:
                spool_depth = publisher.spool.stats().depth
            except Exception as exc:  # the spool is closing
                logger.debug("spool stats for metrics: %s", exc)
        return MetricsSnapshot(
            frames_in=self.frames_in,
            frames_processed=self.frames_processed,
            frames_dropped=0 if slot is None else slot.dropped,
            results_published=self.results_written,
            head_runs={} if engine is None else dict(engine.stats.head_runs),
            head_skips={} if engine is None else dict(engine.stats.head_skips),
            spool_depth=spool_depth,
            mqtt_connected=None if publisher is None else publisher.connected,
            fps=round(self.frames_processed / elapsed, 3),
        )

    def _output(self, results: queue.Queue[FrameResult | Reporter | None], sinks: list[ResultSink], seq: int) -> None:
        self._seq = seq
        reporter = self.reporter or Reporter({})
        float32_heads = reporter.float32_heads()
        while True:
            try:
                result = results.get(timeout=0.5)
            except queue.Empty:
                result = None
            else:
                if result is None:
                    break
                if isinstance(result, Reporter):  # an engine swap: the new heads' policies from here on
                    reporter, float32_heads = result, result.float32_heads()
                    continue
            if result is not None:
                self.frames_processed += 1
                line = result.to_dict(device=self.config.device_id, seq=self._seq)
                line["epoch"] = self.state.epoch
                filtered = reporter.filter(line)
                if filtered is not None:
                    heads = filtered["results"].keys()
                    self._emit(filtered, sinks, reporter.qos(heads), reporter.expiry_s(heads), float32_heads)
                    self.results_written += 1
            beat = reporter.heartbeat_due(device=self.config.device_id, epoch=self.state.epoch)
            if beat is not None:
                self._emit(beat, sinks, reporter.default.qos, None, ())

    def _emit(
        self,
        line: dict[str, Any],
        sinks: list[ResultSink],
        qos: int,
        expiry_s: float | None,
        float32_heads: Any,
    ) -> None:
        """Number one message and hand it to the spool (first: it numbers published messages)
        and every sink."""
        line["seq"] = self._seq
        if self._publisher is not None:
            msg = self._publisher.publish_line(line, qos=qos, expiry_s=expiry_s, float32_heads=float32_heads)
            line["seq"] = self._seq = msg.seq
        for sink in sinks:
            sink.write(line)
        self._seq += 1
        if self._seq % SEQ_SAVE_EVERY == 0:
            self.state.save_seq(self._seq)

    def _supervise(self, output: threading.Thread, slot: LatestFrameSlot, source: FrameSource) -> None:
        next_status = time.monotonic() + self.config.status_interval_s
        next_beat = 0.0
        stopping_since: float | None = None
        next_poll = time.monotonic() + STATE_POLL_S
        while output.is_alive():
            output.join(timeout=0.2)
            now = time.monotonic()
            if self.stop.is_set() and stopping_since is None:
                # Unblock a capture thread waiting on a camera or a reconnect backoff.
                stopping_since = now
                source.close()
            if stopping_since is not None and now - stopping_since > 5.0:
                slot.close()  # the source did not return: stop waiting for frames
            if now >= next_poll and stopping_since is None:
                next_poll = now + STATE_POLL_S
                self._follow_state()
            if now >= next_beat:
                self._write_heartbeat(slot)
                notify_systemd("WATCHDOG=1")
                next_beat = now + self.config.heartbeat_interval_s
            if now >= next_status:
                line = self.status_line(slot)
                logger.info("%s", line)
                notify_systemd("STATUS=" + line)
                if self._publisher is not None:
                    self._publisher.publish_status(self.status_counters(slot))
                next_status = now + self.config.status_interval_s

    @property
    def current_engine(self) -> Engine | None:
        """The engine processing frames now (None before :meth:`run` built it)."""
        return self._engine

    def current_status(self) -> dict[str, Any]:
        """:meth:`status_counters` of the running pipeline ({} before it started)."""
        slot = self._slot
        return {} if slot is None else self.status_counters(slot)

    def status_counters(self, slot: LatestFrameSlot) -> dict[str, Any]:
        """The pipeline's counters for the MQTT status message."""
        elapsed = max(time.monotonic() - self._started, 1e-9)
        reporter = self.reporter
        return {
            "fps": round(self.results_written / elapsed, 2)
            if reporter is None or not reporter.by_exception
            else round(self.frames_in / elapsed, 2),
            "frames": self.frames_in,
            "dropped_frames": slot.dropped,
            "results": self.results_written,
            "suppressed_frames": 0 if reporter is None else reporter.suppressed_frames,
            "heartbeats": 0 if reporter is None else reporter.heartbeats,
            "uptime_s": round(elapsed, 1),
            "latency_ms": self._stages.percentiles(),
        }

    def status_line(self, slot: LatestFrameSlot) -> str:
        """``12.5 fps, 250 frames, 3 dropped, 250 results; p50 ms: preprocess 0.4, trunk 2.1, …``."""
        elapsed = max(time.monotonic() - self._started, 1e-9)
        p50 = ", ".join(f"{k} {v:.2f}" for k, v in self._stages.p50().items() if k != "total")
        return (
            f"{self.frames_processed / elapsed:.1f} fps, {self.frames_in} frames, {slot.dropped} dropped, "
            f"{self.results_written} results; p50 ms: {p50}"
        )

    def _write_heartbeat(self, slot: LatestFrameSlot, final: bool = False) -> None:
        try:
            self.state.write_heartbeat(
                {
                    "device": self.config.device_id,
                    "epoch": self.state.epoch,
                    "frames": self.frames_in,
                    "results": self.results_written,
                    "dropped": slot.dropped,
                    "interval_s": self.config.heartbeat_interval_s,
                    "stopped": final,
                }
            )
        except OSError as exc:
            logger.warning("cannot write the heartbeat in %s: %s", self.state.path, exc)


def validate(config: RuntimeConfig) -> str:
    """Check the config, the bundle (signature when trusted keys are set, hashes, sessions load)
    and the source spec; return a summary."""
    from edge_runtime.trust.signatures import signature_state

    daemon = Daemon(replace(config, max_frames=1))
    with daemon.build_engine() as engine:
        source = open_source(config.source, max_frames=1)
        source.close()
        return (
            f"config ok: bundle {config.bundle} ({engine.manifest.name} v{engine.manifest.version}, heads "
            f"{', '.join(engine.head_names)}), source {config.source}, state {Path(config.state_dir)}; "
            f"{engine.backend_description}; signature: {signature_state(config.bundle, engine.bundle.signed_by)}"
        )
