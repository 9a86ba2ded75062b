"""Timing whole frames of a bundle under different per-graph configs, interleaved.

:class:`GraphBench` loads each (graph, :class:`~edge_runtime.tuning.configs.GraphConfig`)
session once and runs a frame the way :class:`~edge_runtime.inference.engine.Engine` does: the
trunk once, then every head, each head reading the trunk's values raw when it runs on the
trunk's backend and as numpy arrays in the manifest's layout otherwise (the conversion is part of
the time). :func:`interleave` runs the candidates in turn, a few milliseconds of frames each per
turn, so that a noisy machine slows them all alike while each is timed warm; it reports p50 and
p95 per candidate.

Example::

    bench = GraphBench(bundle)
    runners = {name: bench.frame_runner(assignment) for name, assignment in assignments.items()}
    timings = interleave(runners, inputs, seconds=3.0)   # name -> Timing (p50_ms, p95_ms, runs)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_runtime.bundle.reader import Bundle
from edge_runtime.errors import BundleError
from edge_runtime.inference.artifact_choice import BACKEND_FORMATS
from edge_runtime.inference.backends import Backend, BackendOptions, GraphSession, get_backend
from edge_runtime.tuning.configs import GraphConfig

#: One frame's graphs: the trunk and each head, given a preprocessed model input.
FrameRunner = Callable[[np.ndarray], None]
#: How long one candidate runs per turn in :func:`interleave` (ms; at least one frame).
VISIT_MS = 10.0
#: Where every candidate's frame is shorter than this (ms), each turn starts with a frame that is
#: not recorded; longer frames hardly depend on what the caches held before them, and one frame
#: in two would go unrecorded.
WARM_FRAME_BELOW_MS = 50.0


@dataclass(frozen=True)
class Timing:
    """One candidate's whole-frame time: median and 95th percentile (ms) over ``runs`` frames."""

    p50_ms: float
    p95_ms: float
    runs: int

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> Timing:
        values = np.asarray(samples_ms, dtype=np.float64)
        return cls(float(np.percentile(values, 50)), float(np.percentile(values, 95)), int(values.size))


class GraphBench:
    """Sessions of one bundle's graphs by config, loaded on first use and kept until :meth:`close`."""

    def __init__(self, bundle: Bundle, heads: Sequence[str] | None = None) -> None:
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.heads = tuple(self.manifest.heads) if heads is None else tuple(heads)
        self._backends: dict[str, Backend] = {}
        self._sessions: dict[tuple[str, GraphConfig], GraphSession] = {}

    def session(self, graph: str, config: GraphConfig) -> GraphSession:
        """The session of ``graph`` as ``config`` (loaded once)."""
        key = (graph, config)
        if key not in self._sessions:
            entry = self.manifest.trunk if graph == "trunk" else self.manifest.heads[graph]
            artifact = next(
                (
                    a
                    for a in entry.artifacts
                    if a.format == BACKEND_FORMATS[config.backend] and a.precision == config.precision
                ),
                None,
            )
            if artifact is None:
                raise BundleError(f"{graph}: no {BACKEND_FORMATS[config.backend]} {config.precision} artifact")
            if config.backend not in self._backends:
                self._backends[config.backend] = get_backend(config.backend)
            options = BackendOptions(threads=config.threads, providers=config.providers)
            what = "trunk" if graph == "trunk" else f"head {graph!r}"
            self._sessions[key] = self._backends[config.backend].load(
                self.bundle.path_of(artifact), options, what, artifact=artifact
            )
        return self._sessions[key]

    def frame_runner(self, assignment: Mapping[str, GraphConfig]) -> FrameRunner:
        """A callable running one frame with ``assignment`` (``"trunk"`` and every head)."""
        manifest = self.manifest
        input_name = manifest.input.name
        trunk = self.session("trunk", assignment["trunk"])
        trunk_backend = assignment["trunk"].backend
        trunk_outputs = tuple(manifest.trunk.outputs)
        heads = [
            (
                self.session(name, assignment[name]),
                tuple(manifest.heads[name].inputs),
                tuple(manifest.heads[name].outputs),
                assignment[name].backend != trunk_backend,
            )
            for name in self.heads
        ]
        foreign_inputs = tuple(dict.fromkeys(i for _s, inputs, _o, foreign in heads if foreign for i in inputs))

        def run(model_input: np.ndarray) -> None:
            values: dict[str, Any] = {input_name: model_input}
            values.update(trunk.run({input_name: model_input}, trunk_outputs))
            numpy_values = {n: trunk.to_numpy(values[n]) for n in foreign_inputs} if foreign_inputs else {}
            for session, inputs, outputs, foreign in heads:
                source = numpy_values if foreign else values
                session.run({i: source[i] for i in inputs}, outputs)

        return run

    def close(self) -> None:
        """Release every session."""
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()

    def __enter__(self) -> GraphBench:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def interleave(
    runners: Mapping[str, FrameRunner],
    inputs: Sequence[np.ndarray],
    *,
    seconds: float,
    visit_ms: float = VISIT_MS,
    min_rounds: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, Timing]:
    """Run every runner in turn for at most about ``seconds`` in all (a round that would not fit is
    not started), at least ``min_rounds`` recorded rounds; p50/p95 per runner.

    Each turn runs one runner on consecutive inputs (cycling through ``inputs``) for ``visit_ms``
    (at least one recorded frame), so that a candidate is timed with its own weights in the caches,
    as the daemon runs it, and not right after another candidate's frame: with one frame per turn,
    small graphs measured their neighbours in the round as much as themselves. For the same reason,
    where every candidate's frame is shorter than :data:`WARM_FRAME_BELOW_MS` (one rule for all,
    decided in the warm-up round), each turn starts with a frame that is not recorded. The first
    round is a warm-up and is not recorded; the order reverses every round, so neither end of a
    round is always first.
    """
    names = list(runners)
    samples: dict[str, list[float]] = {name: [] for name in names}
    frame_ns = dict.fromkeys(names, 0.0)  # each runner's last frame (the warm-up round's decides)
    short = True
    visit_ns = visit_ms * 1e6
    start = clock()
    rounds = 0
    frame = 0
    round_s = 0.0
    # another round only while it fits in ``seconds`` (by the last round's length)
    while rounds < min_rounds + 1 or clock() - start + round_s <= seconds:
        round_start = clock()
        order = names if rounds % 2 == 0 else names[::-1]
        for name in order:
            run = runners[name]
            # a frame right after another candidate's is timed with the other's weights in the
            # caches: where every frame is short, each turn starts with one that is not recorded
            warm = rounds == 0 or short
            began = time.perf_counter_ns()
            recorded = rounds == 0  # the warm-up round records nothing
            while True:
                t0 = time.perf_counter_ns()
                run(inputs[frame % len(inputs)])
                t1 = time.perf_counter_ns()
                frame += 1
                frame_ns[name] = t1 - t0
                if rounds and not warm:
                    samples[name].append((t1 - t0) / 1e6)
                    recorded = True
                warm = False
                if t1 - began >= visit_ns and recorded:
                    break
        round_s = clock() - round_start
        if rounds == 0:  # one rule for every candidate, from the warm-up round
            short = max(frame_ns.values()) < WARM_FRAME_BELOW_MS * 1e6
        rounds += 1
    return {name: Timing.of(values) for name, values in samples.items()}


__all__ = ["VISIT_MS", "WARM_FRAME_BELOW_MS", "FrameRunner", "GraphBench", "Timing", "interleave"]
