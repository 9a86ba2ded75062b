"""The multi-task engine: the trunk once per frame, then every head that is due.

``Engine.from_bundle`` verifies the bundle (schema, sha256 of every file), picks one
artifact per graph for the backend and preferred precision by the rule of
:mod:`edge_runtime.inference.artifact_choice` (falling back per graph in precision, and to the
other backend for a graph without an artifact of the backend's format, saying so once), and
loads the sessions. ``infer`` preprocesses a frame as the manifest's input spec says, runs the
trunk **once**, hands the boundary tensors by name to each head due on this frame
(backend-native values, no copy, when the head runs on the trunk's backend; numpy float arrays
in the manifest's layout when it runs on the other one), decodes each head's output and returns
a :class:`~edge_runtime.inference.results.FrameResult` with per-stage latencies.

Example::

    with Engine.from_bundle("build/demo_bundle", EngineOptions(threads=2)) as engine:
        result = engine.infer(frame)            # Frame or (H, W, 3) uint8 RGB array
        print(result.results["shape"], result.latency_ms)

CLI: ``edge-runtime run --bundle build/demo_bundle --source synthetic --max-frames 10``
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.bundle.reader import Bundle, load_bundle
from edge_runtime.bundle.specs import PRECISIONS, Artifact, DecoderSpec, GraphEntry
from edge_runtime.errors import BundleError, ConfigError, close_matches
from edge_runtime.frames.frame import Frame
from edge_runtime.frames.geometry import FrameGeometry
from edge_runtime.frames.preprocess import Preprocessor
from edge_runtime.inference.artifact_choice import (
    PRECISION_FALLBACK,
    ArtifactPlan,
    choose_artifact,
    plan_artifacts,
    plan_assigned,
)
from edge_runtime.inference.backends import Backend, BackendOptions, GraphSession, check_threads, get_backend
from edge_runtime.inference.decoders import Decoder, build_decoder
from edge_runtime.inference.results import FrameResult, HeadResult
from edge_runtime.inference.schedule import HeadScheduler
from edge_runtime.trust.keys import PublicKey
from edge_runtime.tuning.configs import GraphConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineOptions:
    """How to build an :class:`Engine`.

    ``precision`` is a preference: a graph without an artifact at that
    precision uses the next best one. ``heads`` limits the loaded heads (None: all).
    ``threads`` sizes the trunk's thread pool (None: all cores); heads are small, and
    one thread each was measured faster than two (a MobileNetV2-sized model's three heads:
    0.208 vs 0.243 ms p50), so ``head_threads`` defaults to 1. ``trusted_keys``: the public
    keys (:func:`edge_runtime.trust.keys.load_public_keys`) one of which must have signed the bundle;
    None or empty: the signature is not checked (a warning says so once). ``strict``: refuse
    (:class:`ConfigError`) a bundle where a graph would run on another backend or at another
    precision than asked, instead of falling back. ``graphs``: a config per graph (a tuning,
    :mod:`edge_runtime.tuning`): each graph's backend, precision, threads and execution provider,
    in place of ``backend``/``precision``/``threads``/``head_threads``/``providers``.
    """

    backend: str = "onnxruntime"
    precision: str = "fp32"
    threads: int | None = None
    head_threads: int = 1
    providers: tuple[str, ...] | None = None
    heads: tuple[str, ...] | None = None
    verify_hashes: bool = True
    trusted_keys: tuple[PublicKey, ...] | None = None
    strict: bool = False
    graphs: Mapping[str, GraphConfig] | None = None
    #: Where the choice came from, for the log and the status (``tuned 2026-12-08 10:02``,
    #: ``profile generic-x86_64``, ``set``); empty: not said.
    origin: str = ""

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}"
                f"{close_matches(self.precision, PRECISIONS)}"
            )
        if self.threads is not None:
            check_threads(self.threads)
        check_threads(self.head_threads, "head_threads")


@dataclass(frozen=True)
class GraphRun:
    """What one loaded graph runs as: backend, artifact precision, intra-op threads, and why
    (``tuned ...``, ``profile ...``, ``fallback: no tflite artifact ...``): the start log's line
    and the status's ``graphs`` entry."""

    graph: str
    backend: str
    precision: str
    threads: int
    reason: str

    def describe(self) -> str:
        """``trunk: onnxruntime int8, 2 threads (tuned 2026-12-08 10:02)``."""
        return f"{self.graph}: {self.backend} {self.precision}, {self.threads} threads ({self.reason})"

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "precision": self.precision, "threads": self.threads, "reason": self.reason}


@dataclass
class EngineStats:
    """Counters since the engine was built."""

    frames: int = 0
    trunk_runs: int = 0
    head_runs: dict[str, int] = field(default_factory=dict)
    head_skips: dict[str, int] = field(default_factory=dict)


class _Head:
    def __init__(
        self, name: str, entry: GraphEntry, session: GraphSession, decoder: Decoder, foreign: bool = False
    ) -> None:
        self.name = name
        self.entry = entry
        self.session = session
        self.decoder = decoder
        self.inputs = entry.inputs
        self.outputs = entry.outputs
        #: True when the head runs on another backend than the trunk: it is fed numpy arrays.
        self.foreign = foreign


@dataclass(frozen=True)
class PreparedInput:
    """A frame preprocessed ahead by :meth:`Engine.prepare` (in another thread than ``infer``'s):
    the model input, its geometry, the milliseconds it took and the engine whose input spec made it."""

    engine: Engine
    model_input: np.ndarray
    geometry: FrameGeometry
    ms: float


class Engine:
    """Trunk once per frame, scheduled heads, decoded results. Use :meth:`from_bundle`."""

    def __init__(
        self,
        bundle: Bundle,
        trunk: GraphSession,
        heads: Mapping[str, _Head],
        preprocessor: Preprocessor,
        backend_description: str,
        artifacts: Mapping[str, Artifact],
        plan: ArtifactPlan | None = None,
    ) -> None:
        self.bundle = bundle
        self.manifest = bundle.manifest
        self._trunk = trunk
        self._heads = dict(heads)
        self._preprocess = preprocessor
        self._ahead: Preprocessor | None = None  # prepare()'s own: a Preprocessor is not thread-safe
        self.backend_description = backend_description
        self.artifacts = dict(artifacts)
        #: The artifact choice of every loaded graph: backend, artifact, why (when not as asked).
        self.plan = plan
        self.scheduler = HeadScheduler({name: h.entry.schedule for name, h in self._heads.items()})
        # Heads run in an order where a conditional head comes after the head it watches.
        self._heads = {name: self._heads[name] for name in self.scheduler.order}
        self.stats = EngineStats(head_runs=dict.fromkeys(self._heads, 0), head_skips=dict.fromkeys(self._heads, 0))
        self._input_name = self.manifest.input.name
        #: What the heads on the other backend read, converted once per frame.
        self._foreign_inputs = tuple(dict.fromkeys(i for h in self._heads.values() if h.foreign for i in h.inputs))
        self._closed = False
        #: What each graph runs as and why (filled by :meth:`from_bundle`).
        self.graphs: list[GraphRun] = []

    @classmethod
    def from_bundle(cls, path: str | Path, options: EngineOptions | None = None) -> Engine:
        """Verify the bundle at ``path``, choose artifacts and create every session."""
        options = options or EngineOptions()
        bundle = load_bundle(path, verify_hashes=options.verify_hashes, trusted_keys=options.trusted_keys)
        manifest = bundle.manifest
        first = options.backend if options.graphs is None else options.graphs["trunk"].backend
        backends: dict[str, Backend] = {first: get_backend(first)}
        backend_options = BackendOptions(threads=options.threads, providers=options.providers)
        head_options = BackendOptions(threads=options.head_threads, providers=options.providers)

        def options_of(graph: str) -> BackendOptions:
            config = None if options.graphs is None else options.graphs.get(graph)
            if config is None:
                return backend_options if graph == "trunk" else head_options
            return BackendOptions(threads=config.threads, providers=config.providers)

        names = list(manifest.heads)
        if options.heads is not None:
            for name in options.heads:
                if name not in manifest.heads:
                    raise ConfigError(
                        f"head {name!r} is not in the bundle{close_matches(name, names)}; heads: {', '.join(names)}"
                    )
            names = [n for n in names if n in options.heads]
        available = {manifest.input.name, *manifest.trunk.outputs}
        for name in names:
            missing = [i for i in manifest.heads[name].inputs if i not in available]
            if missing:
                raise BundleError(
                    f"head {name!r} reads {', '.join(missing)}, which neither the trunk nor the input provides"
                )
        if options.graphs is not None:
            assignment = {g: (c.backend, c.precision) for g, c in options.graphs.items()}
            plan = plan_assigned(manifest, assignment, names)
        else:
            plan = plan_artifacts(manifest, options.backend, options.precision, names)
        if options.strict:
            plan.check_strict("strict")
        plan.log(logger)

        def backend_of(name: str) -> Backend:
            if name not in backends:
                backends[name] = get_backend(name)
            return backends[name]

        artifacts = {graph: choice.artifact for graph, choice in plan.choices.items()}
        trunk_choice = plan.choices["trunk"]
        trunk = backend_of(trunk_choice.backend).load(
            bundle.path_of(trunk_choice.artifact), options_of("trunk"), "trunk", artifact=trunk_choice.artifact
        )
        heads: dict[str, _Head] = {}
        try:
            for name in names:
                entry = manifest.heads[name]
                choice = plan.choices[name]
                session = backend_of(choice.backend).load(
                    bundle.path_of(choice.artifact), options_of(name), choice.what, artifact=choice.artifact
                )
                decoder = build_decoder(name, entry.decoder or _raw_decoder(), entry.outputs)
                heads[name] = _Head(name, entry, session, decoder, foreign=choice.backend != trunk_choice.backend)
        except BaseException:
            trunk.close()
            for head in heads.values():
                head.session.close()
            raise
        description = "; ".join(backends[b].describe() for b in plan.backends)
        logger.info(
            "engine: %s v%s, trunk -> %s, heads %s; artifacts %s; %s",
            manifest.name,
            manifest.version,
            ", ".join(manifest.trunk.outputs),
            ", ".join(heads),
            ", ".join(
                f"{graph} {c.artifact.precision}" + (f" on {c.backend}" if plan.mixed else "")
                for graph, c in plan.choices.items()
            ),
            description,
        )
        engine = cls(bundle, trunk, heads, Preprocessor(manifest.input), description, artifacts, plan)
        threads = {"trunk": options_of("trunk").threads, **{name: options_of(name).threads for name in heads}}
        engine.graphs = [
            GraphRun(
                graph,
                choice.backend,
                choice.artifact.precision,
                threads[graph] or os.cpu_count() or 1,
                f"fallback: {choice.reason}" if choice.reason else (options.origin or "as asked"),
            )
            for graph, choice in plan.choices.items()
        ]
        for run in engine.graphs:
            logger.info("graph %s", run.describe())
        return engine

    # -- run-time control ----------------------------------------------------------------
    @property
    def head_names(self) -> tuple[str, ...]:
        """Loaded heads in run order."""
        return tuple(self._heads)

    def set_head_enabled(self, name: str, enabled: bool) -> None:
        """Turn a head on or off from the next frame; a disabled head costs nothing."""
        if name not in self._heads:
            raise ConfigError(f"no head {name!r}{close_matches(name, self._heads)}; heads: {', '.join(self._heads)}")
        self.scheduler.set_enabled(name, enabled)

    # -- inference -------------------------------------------------------------------------
    def prepare(self, frame: Frame | np.ndarray) -> PreparedInput:
        """Preprocess ``frame`` ahead, in another thread than :meth:`infer`'s (one thread at a
        time), for ``infer(frame, prepared=...)``: the daemon's capture thread does it while the
        inference thread runs the previous frame."""
        if self._ahead is None:
            self._ahead = Preprocessor(self.manifest.input)
        start = time.perf_counter_ns()
        model_input, geometry = self._ahead(frame)
        return PreparedInput(self, model_input, geometry, (time.perf_counter_ns() - start) / 1e6)

    def infer(
        self,
        frame: Frame | np.ndarray,
        *,
        frame_id: int | None = None,
        timestamp: float | None = None,
        prepared: PreparedInput | None = None,
    ) -> FrameResult:
        """Run one frame: preprocess (unless ``prepared`` by this engine), trunk once, due heads, decode."""
        if self._closed:
            raise ConfigError("the engine is closed")
        if isinstance(frame, Frame):
            frame_id = frame.frame_id if frame_id is None else frame_id
            timestamp = frame.timestamp if timestamp is None else timestamp
        frame_id = self.stats.frames if frame_id is None else frame_id
        timestamp = time.time() if timestamp is None else timestamp
        latency: dict[str, float] = {}
        start = time.perf_counter_ns()
        ahead_ms = 0.0
        if prepared is not None and prepared.engine is self:  # another engine's input spec may differ
            model_input, geometry, ahead_ms = prepared.model_input, prepared.geometry, prepared.ms
        else:
            model_input, geometry = self._preprocess(frame)
        t_pre = time.perf_counter_ns()
        latency["preprocess"] = (t_pre - start) / 1e6 + ahead_ms

        due = self.scheduler.due(self.stats.frames)
        values: dict[str, Any] = {self._input_name: model_input}
        numpy_values: dict[str, Any] | None = None
        if due:
            values.update(self._trunk.run({self._input_name: model_input}, self.manifest.trunk.outputs))
            self.stats.trunk_runs += 1
        t_trunk = time.perf_counter_ns()
        latency["trunk"] = (t_trunk - t_pre) / 1e6

        results: dict[str, HeadResult] = {}
        skipped: list[str] = []
        decode_ns = 0
        for name, head in self._heads.items():
            if name not in due or not self.scheduler.condition_met(name, results):
                skipped.append(name)
                self.stats.head_skips[name] += 1
                continue
            t0 = time.perf_counter_ns()
            if head.foreign:
                if numpy_values is None:  # once per frame, for every head on the other backend
                    numpy_values = self._as_numpy(values, self._foreign_inputs)
                raw = head.session.run({i: numpy_values[i] for i in head.inputs}, head.outputs)
            else:
                raw = head.session.run({i: values[i] for i in head.inputs}, head.outputs)
            t1 = time.perf_counter_ns()
            tensors = {k: head.session.to_numpy(v) for k, v in raw.items()}
            results[name] = head.decoder(tensors, geometry)
            t2 = time.perf_counter_ns()
            latency[f"head:{name}"] = (t1 - t0) / 1e6
            decode_ns += t2 - t1
            self.stats.head_runs[name] += 1
        latency["decode"] = decode_ns / 1e6
        latency["total"] = (time.perf_counter_ns() - start) / 1e6 + ahead_ms
        self.stats.frames += 1
        return FrameResult(
            frame_id=int(frame_id),
            timestamp=float(timestamp),
            results=results,
            latency_ms=latency,
            skipped=tuple(skipped),
        )

    def run_graphs(self, model_input: np.ndarray, heads: Sequence[str] | None = None) -> dict[str, Any]:
        """Trunk then the given heads (default: all) on an already preprocessed input, with
        no schedule and no decoding: the raw backend cost, for benchmarks and checks. Outputs are
        the trunk backend's values; a head on the other backend gives numpy arrays."""
        values: dict[str, Any] = {self._input_name: model_input}
        values.update(self._trunk.run({self._input_name: model_input}, self.manifest.trunk.outputs))
        numpy_values = self._as_numpy(values, self._foreign_inputs)
        outputs: dict[str, Any] = {}
        for name in heads if heads is not None else self._heads:
            head = self._heads[name]
            if head.foreign:
                raw = head.session.run({i: numpy_values[i] for i in head.inputs}, head.outputs)
                outputs.update({k: head.session.to_numpy(v) for k, v in raw.items()})
            else:
                outputs.update(head.session.run({i: values[i] for i in head.inputs}, head.outputs))
        return outputs

    def _as_numpy(self, values: Mapping[str, Any], names: Sequence[str]) -> dict[str, np.ndarray]:
        """``names`` of the trunk's values (or the model input) as numpy arrays in the manifest's
        layout, dequantised to float: what a session of the other backend takes."""
        return {name: self._trunk.to_numpy(values[name]) for name in names}

    def to_numpy(self, value: Any) -> np.ndarray:
        """A value from :meth:`run_graphs` as a numpy array in the manifest's layout (float for
        quantized TFLite outputs)."""
        return self._trunk.to_numpy(value)

    def preprocess(self, frame: Frame | np.ndarray) -> np.ndarray:
        """The model input for a frame, as :meth:`infer` computes it."""
        return self._preprocess(frame)[0]

    def close(self) -> None:
        """Release every session."""
        if self._closed:
            return
        self._closed = True
        self._trunk.close()
        for head in self._heads.values():
            head.session.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _raw_decoder() -> DecoderSpec:
    return DecoderSpec()


__all__ = [
    "PRECISION_FALLBACK",
    "Engine",
    "EngineOptions",
    "EngineStats",
    "GraphRun",
    "PreparedInput",
    "choose_artifact",
]
