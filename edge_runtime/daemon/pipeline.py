"""The daemon: source → engine → sinks, in three threads joined by bounded queues.

* **capture** reads frames from the source. For a live source (camera, stream, throttled
  synthetic) it keeps only the newest frame when inference falls behind and counts the
  frames it dropped; for a file or folder every frame is processed (the reader waits) and
  preprocessed here, off the inference thread's path.
* **inference** runs the engine (trunk once, due heads, decode).
* **output** applies the per-head publishing policy (:mod:`edge_runtime.delivery.reporting`:
  report-by-exception, heartbeats, QoS and expiry per message), numbers each message
  (``seq``: the spool's when publishing to MQTT, else persisted in the state directory; a new
  epoch whenever the state cannot prove seq is current, :mod:`edge_runtime.delivery.state`) and
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

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from edge_runtime.config import RuntimeConfig
from edge_runtime.daemon.handoff import LatestFrameSlot, install_stop_handlers, notify_systemd
from edge_runtime.daemon.positions import delivery_fields, epoch_fields, write_heartbeat
from edge_runtime.daemon.remote_control import DaemonController, attach_commands
from edge_runtime.daemon.sinks import JsonLinesSink, ResultSink
from edge_runtime.daemon.status import PipelineCounters
from edge_runtime.daemon.swaps import STATE_POLL_S, HotSwaps
from edge_runtime.daemon.validation import build_engine, delivery_settings
from edge_runtime.delivery.reporting import HeadPolicy, Reporter
from edge_runtime.delivery.state import StateDir
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.frames.frame import Frame
from edge_runtime.frames.source import FrameSource
from edge_runtime.frames.sources import open_source
from edge_runtime.inference.engine import Engine, PreparedInput
from edge_runtime.inference.results import FrameResult
from edge_runtime.ops.metrics import Metrics, MetricsSnapshot
from edge_runtime.trust.commands import CommandProcessor
from edge_runtime.trust.update_install import UpdateOutcome
from edge_runtime.trust.updates import Slots

logger = logging.getLogger(__name__)

SEQ_SAVE_EVERY = 100


class Daemon:
    """Runs one configured pipeline until the source ends, ``max_frames`` or a signal."""

    def __init__(self, config: RuntimeConfig, sinks: list[ResultSink] | None = None) -> None:
        self.config = config
        self.state = StateDir.open(config.state_dir)
        self._extra_sinks = sinks or []
        self.stop = threading.Event()
        self.counters = PipelineCounters()
        self._errors: list[BaseException] = []
        self._seq = 0
        self._publisher: Any = None
        self._heartbeat_failed = False
        self._last_delivery: dict[str, Any] = {}  # the publisher's last counters, for the final heartbeat
        self._metrics: Metrics | None = None
        self._slot: LatestFrameSlot | None = None
        self.controller = DaemonController(self)
        self.swaps = HotSwaps(
            config,
            Slots.open(self.state.path),
            self.build_engine,
            self.build_reporter,
            apply_commands=self.controller.apply,
        )
        self._commands: CommandProcessor | None = None

    @property
    def slots(self) -> Slots:
        """The A/B update slots of the state directory."""
        return self.swaps.slots

    @property
    def state_path(self) -> Path:
        """The state directory (epoch, seq, spool, update slots, command nonces)."""
        return self.state.path

    @property
    def reporter(self) -> Reporter | None:
        """The publishing policy of the running engine's heads."""
        return self.swaps.reporter

    # -- building --------------------------------------------------------------------------
    def build_engine(self, bundle: Path | None = None) -> Engine:
        """The engine of ``bundle`` (default: the one to run) as :func:`build_engine` makes it,
        with the head settings remote commands changed (they outlive a swap)."""
        engine = build_engine(self.config, bundle if bundle is not None else self.swaps.bundle_path())
        self.controller.apply(engine)
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

    # -- updates (any thread) ----------------------------------------------------------------
    def request_update(self, source: str, timeout: float = 60.0) -> UpdateOutcome:
        """Install ``source`` and swap to it between two frames (:meth:`HotSwaps.request_update`)."""
        return self.swaps.request_update(source, timeout)

    def request_tune(self, timeout: float) -> dict[str, Any]:
        """Tune the running bundle between two frames and swap its choice in (the remote ``tune``)."""
        return self.swaps.retuner.request("remote command", wait=timeout)

    def request_rollback(self, reason: str = "rollback requested", timeout: float = 60.0) -> UpdateOutcome:
        """The previous bundle again, swapped in between two frames (:meth:`HotSwaps.request_rollback`)."""
        return self.swaps.request_rollback(reason, timeout)

    # -- running ---------------------------------------------------------------------------
    def run(self, install_signals: bool = True) -> int:
        """Run to the end; return the process exit code (0 after a clean stop)."""
        if self.config.command_keys and self.config.broker is None:
            logger.warning("command_keys is set but there is no broker: remote commands arrive over MQTT, none will")
        swaps = self.swaps
        swaps.boot()
        engine = swaps.checked_engine()
        sinks: list[ResultSink] = list(self._extra_sinks)
        self._publisher = None
        try:
            reporter = self.build_reporter(engine)
            if self.config.metrics_port:
                self._metrics = Metrics.serve(self.config.metrics_host, self.config.metrics_port, self.metrics_snapshot)
            if self.config.broker is not None:
                self._publisher = self._open_publisher()  # decides the epoch from its spool
                if self._metrics is not None:
                    self._publisher.on_ack_latency = self._metrics.observe_ack_latency
            else:
                self.state.begin()
            if self.config.output is not None or (not sinks and self._publisher is None):
                sinks.append(JsonLinesSink(self.config.output or "-"))
            source = open_source(
                self.config.source,
                fps=self.config.fps,
                loop=self.config.loop,
                max_frames=self.config.max_frames,
                max_image_pixels=self.config.max_image_pixels,
            )
        except BaseException:
            engine.close()
            for sink in sinks:
                sink.close()
            self._close_publisher()
            self._close_metrics()
            if self.state.running:  # it stopped before numbering anything: not an unclean stop
                self.state.end(max(self._seq, self.state.load_seq()))
            raise
        slot = LatestFrameSlot(drop_old=source.live or self.config.fps is not None)
        self._slot = slot
        results: queue.Queue[FrameResult | Reporter | None] = queue.Queue(maxsize=self.config.queue_size)
        seq = self._publisher.spool.next_seq if self._publisher is not None else self.state.load_seq()
        previous = install_stop_handlers(self.stop) if install_signals else {}
        threads = [
            threading.Thread(target=self._guard(self._capture, source, slot), name="capture", daemon=True),
            threading.Thread(target=self._guard(self._infer, engine, slot, results), name="inference", daemon=True),
        ]
        output = threading.Thread(
            target=self._guard(self._output, results, sinks, seq, reporter), name="output", daemon=True
        )
        logger.info(
            "running %s on %s (%s), device %s, epoch %s, state %s",
            swaps.bundle_path(), self.config.source, "live: newest frame wins" if slot.drop_old else "every frame",
            self.config.device_id, self.state.epoch, self.state.path,
        )  # fmt: skip
        swaps.start(engine, reporter, lambda new: self._put(results, new))
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
            swaps.close(engine)
            for sink in sinks:
                sink.close()
            if self._publisher is not None:  # the final counters go into the offline status
                self._publisher.publish_status(self.status_counters(slot))
            self._close_publisher()
            self._close_metrics()
            self.state.end(self._seq)
            self._write_heartbeat(slot, final=True)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        counters = self.counters
        logger.info(
            "stopped: %d frames in, %d results written, %d frames dropped",
            counters.frames_in, counters.results_written, slot.dropped,
        )  # fmt: skip
        if not self._errors and counters.frames_processed and not swaps.boot_reported:
            self.slots.boot_ok()  # a clean stop is not a crash on start
        if self._errors:
            error = self._errors[0]
            if isinstance(error, EdgeRuntimeError):
                raise error
            raise EdgeRuntimeError(f"the pipeline failed: {type(error).__name__}: {error}") from error
        return 0

    def _guard(self, target: Callable[..., None], *args: Any) -> Callable[[], None]:
        def run() -> None:
            try:
                target(*args)
            except BaseException as exc:
                self._errors.append(exc)
                self.stop.set()

        return run

    def _capture(self, source: FrameSource, slot: LatestFrameSlot) -> None:
        try:
            for frame in source:
                if self.stop.is_set():
                    break
                self.counters.frames_in += 1
                self.counters.frames_skipped = source.frames_skipped
                slot.put(frame, self.stop, None if slot.drop_old else self._prepare(frame))
        finally:
            self.counters.frames_skipped = source.frames_skipped
            slot.close()

    def _prepare(self, frame: Frame) -> PreparedInput | None:
        """The frame preprocessed here, in the capture thread, while inference runs the previous
        one (every frame is processed: none is preprocessed in vain); None leaves it to inference."""
        engine = self.swaps.engine
        try:
            return None if engine is None else engine.prepare(frame)
        except Exception:
            return None

    def _infer(
        self, engine: Engine, slot: LatestFrameSlot, results: queue.Queue[FrameResult | Reporter | None]
    ) -> None:
        swaps = self.swaps
        try:
            while (item := slot.get()) is not None:
                frame, prepared = item
                engine = swaps.before_frame(engine)  # between two frames: never mid-frame
                result, engine = swaps.run_frame(engine, frame, prepared)
                self.counters.add_latencies(result.latency_ms)
                if self._metrics is not None:
                    self._metrics.observe_latencies(result.latency_ms)
                self._put(results, result)  # waits while the output is slow: results are never dropped
        finally:
            swaps.end_frames()
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
        """The spool and the MQTT publisher draining it; the epoch is decided from the spool
        (:meth:`StateDir.begin`) and the spool's commits record the high-water mark."""
        from edge_runtime.delivery.mqtt.publisher import MqttPublisher
        from edge_runtime.delivery.spool import Spool

        config = self.config
        mqtt_config, options, _keys = delivery_settings(config)  # the checks `run --validate` makes
        assert mqtt_config is not None and options is not None
        spool = Spool.open(config.spool or self.state.path / "spool.sqlite", options)
        try:
            self.state.begin(spool.identity, spool.next_seq)
            spool.on_commit = self.state.high_water().write
            publisher = MqttPublisher(
                mqtt_config,
                config.device_id,
                spool,
                mode=config.codec,
                compression=config.compression,
                epoch=self.state.epoch,
            )
            self._commands = attach_commands(self, self.controller, publisher)
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
            self._last_delivery = delivery_fields(publisher)
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
        slot, publisher = self._slot, self._publisher
        spool_depth: int | None = None
        if publisher is not None:
            try:
                spool_depth = publisher.spool.stats().depth
            except Exception as exc:  # the spool is closing
                logger.debug("spool stats for metrics: %s", exc)
        return self.counters.metrics_snapshot(
            engine=self.swaps.engine,
            dropped=0 if slot is None else slot.dropped,
            spool_depth=spool_depth,
            mqtt_connected=None if publisher is None else publisher.connected,
        )

    def _output(
        self,
        results: queue.Queue[FrameResult | Reporter | None],
        sinks: list[ResultSink],
        seq: int,
        reporter: Reporter,
    ) -> None:
        self._seq = seq
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
                self.counters.frames_processed += 1
                kept = reporter.filter(result)  # typed: no JSON form on the way to the wire
                if kept is not None:
                    heads = kept.results.keys()
                    self._emit(kept, sinks, reporter.qos(heads), reporter.expiry_s(heads), float32_heads)
                    self.counters.results_written += 1
            beat = reporter.heartbeat_due(device=self.config.device_id, epoch=self.state.epoch)
            if beat is not None:
                self._emit(beat, sinks, reporter.default.qos, None, ())

    def _emit(
        self,
        message: FrameResult | dict[str, Any],
        sinks: list[ResultSink],
        qos: int,
        expiry_s: float | None,
        float32_heads: Collection[str],
    ) -> None:
        """Number one message (a frame's typed results, or a heartbeat line) and hand it to the
        spool first (it numbers published messages: the payload is encoded from the typed
        results there) and then, as a JSON line, to every sink."""
        publisher = self._publisher
        if isinstance(message, FrameResult):
            if publisher is not None:
                self._seq = publisher.publish_frame(
                    message, qos=qos, expiry_s=expiry_s, float32_heads=float32_heads
                ).seq
            line = message.to_dict(device=self.config.device_id, seq=self._seq) if sinks else {}
            line["epoch"] = self.state.epoch
        else:
            line = {**message, "seq": self._seq}
            if publisher is not None:
                line["seq"] = self._seq = publisher.publish_line(line, qos=qos, expiry_s=expiry_s).seq
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
        first = True  # one heartbeat and watchdog ping however short the run
        while first or output.is_alive():
            if not first:
                output.join(timeout=0.2)
            first = False
            now = time.monotonic()
            if self.stop.is_set() and stopping_since is None:
                # Unblock a capture thread waiting on a camera or a reconnect backoff.
                stopping_since = now
                source.close()
            if stopping_since is not None and now - stopping_since > 5.0:
                slot.close()  # the source did not return: stop waiting for frames
            if now >= next_poll and stopping_since is None:
                next_poll = now + STATE_POLL_S
                self.swaps.follow_state()
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
        return self.swaps.engine

    def current_status(self) -> dict[str, Any]:
        """:meth:`status_counters` of the running pipeline ({} before it started)."""
        slot = self._slot
        return {} if slot is None else self.status_counters(slot)

    def status_counters(self, slot: LatestFrameSlot) -> dict[str, Any]:
        """The pipeline's counters for the MQTT status message, with the epoch's reason and
        the stream positions (:meth:`stream_positions`)."""
        engine = self.swaps.engine
        graphs = {} if engine is None else {run.graph: run.to_dict() for run in engine.graphs}
        return {
            **self.counters.status_fields(dropped=slot.dropped, reporter=self.swaps.reporter),
            **self.epoch_fields(),
            "graphs": graphs,
        }

    def epoch_fields(self) -> dict[str, Any]:
        """``epoch_reason`` and ``streams`` (:func:`~edge_runtime.daemon.positions.epoch_fields`)."""
        spool = self._publisher.spool if self._publisher is not None else None
        return epoch_fields(self.state, spool, self._seq)

    def status_line(self, slot: LatestFrameSlot) -> str:
        """``12.5 fps, 250 frames, 3 dropped, 250 results; p50 ms: preprocess 0.4, trunk 2.1, …``."""
        return self.counters.status_line(dropped=slot.dropped)

    def _write_heartbeat(self, slot: LatestFrameSlot, final: bool = False) -> None:
        fields = {
            "device": self.config.device_id,
            "epoch": self.state.epoch,
            **self.epoch_fields(),
            **self.counters.heartbeat_fields(dropped=slot.dropped),
            **(delivery_fields(self._publisher) or self._last_delivery),
            "interval_s": self.config.heartbeat_interval_s,
            "stopped": final,
        }
        self._heartbeat_failed = write_heartbeat(self.state, fields, self._heartbeat_failed)
