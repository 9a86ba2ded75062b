"""``edge-runtime tune``'s measurement: the fastest config per graph on this device, greedily.

1. **Candidates** (:func:`~edge_runtime.tuning.configs.graph_candidates`): per graph, each
   installed backend and compute provider, each artifact that passed the exporter's gate, the
   trunk at 1..cores threads. An artifact whose self-test fails here (the bundle's self-test run
   by an engine of that backend and precision) is dropped, with the reason.
2. **The trunk**: every trunk candidate, each with the heads the runtime would pair with it
   (same backend and precision where they exist), timed as whole frames (trunk + every head,
   conversions between backends included), interleaved with the FP32 ONNX Runtime baseline.
3. **Each head** in turn, given the trunk's choice and the heads chosen before it: its candidates,
   interleaved with the current choice and the baseline (timed for the ratios, not a candidate).
4. The chosen whole is checked once more by the self-test (unless step 1 already ran those
   artifacts together); were it to fail, the baseline is kept.

The frames are the bundle's self-test frames (synthetic frames when it has none), preprocessed once.

Example::

    result = tune(load_bundle("bundle"), TuneOptions(seconds=6))
    result.choice["trunk"].describe()      # "onnxruntime int8 x2"
    print(format_table(result))
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.bundle.reader import Bundle
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.inference.artifact_choice import choose_graph
from edge_runtime.tuning.configs import DEFAULT_PROVIDER, GraphConfig, graph_candidates, installed_backends
from edge_runtime.tuning.timing import GraphBench, Timing, interleave

logger = logging.getLogger(__name__)

#: The share of ``seconds`` the trunk's round gets; the heads share the rest.
TRUNK_SHARE = 0.6
#: How much faster (p50) than the round's incumbent (the baseline in the trunk's round, the choice
#: so far in a head's) a candidate must be to replace it: differences below are noise, and a
#: re-tune should not flip between equals.
MARGIN = 0.01
#: Self-test frames beyond this many are not timed (a few frames, cycled, are enough).
MAX_FRAMES = 8


@dataclass(frozen=True)
class TuneOptions:
    """``seconds``: the time spent timing (loading sessions and the self-tests come on top);
    ``heads``: the heads the daemon loads (None: all); ``cores``: the most trunk threads tried
    (None: this machine's); ``backends`` / ``providers``: what may be tried (None: what is installed)."""

    seconds: float = 6.0
    heads: tuple[str, ...] | None = None
    cores: int | None = None
    backends: tuple[str, ...] | None = None
    providers: tuple[str, ...] | None = None


@dataclass
class TuneResult:
    """What :func:`tune` found: ``choice`` per graph, ``baseline`` (:func:`baseline_config`), the
    measured ``rows`` (one per candidate per round), what was ``dropped`` and why, the wall
    ``seconds`` and ``nothing_to_tune`` when every graph had one artifact."""

    choice: dict[str, GraphConfig]
    baseline: dict[str, GraphConfig]
    rows: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    nothing_to_tune: bool = False
    fallback: str | None = None


def describe_assignment(assignment: Mapping[str, GraphConfig]) -> str:
    """``trunk onnxruntime int8 x2; mask onnxruntime int8 x1``."""
    return "; ".join(f"{graph} {config.describe()}" for graph, config in assignment.items())


def tune_frames(bundle: Bundle) -> list[np.ndarray]:
    """The preprocessed self-test frames (synthetic ones when the bundle has none)."""
    from edge_runtime.frames.preprocess import Preprocessor
    from edge_runtime.trust.selftest import load_frames

    spec = bundle.manifest.selftest
    preprocess = Preprocessor(bundle.manifest.input)
    if spec is not None:
        frames = load_frames(Path(bundle.root), spec)[:MAX_FRAMES]
    else:
        from edge_runtime.frames.synthetic import SyntheticSource

        height, width = bundle.manifest.input.height_width
        source = SyntheticSource(int(width), int(height))
        frames = [source.render(i * 7) for i in range(4)]
    return [preprocess(frame)[0] for frame in frames]


#: One engine's graphs as the self-test ran them: (graph, backend, precision) each.
TestedPlan = frozenset[tuple[str, str, str]]


def _selftest_failures(
    bundle: Bundle, heads: Sequence[str], backend: str, precision: str, cores: int, passed: set[TestedPlan]
) -> dict[str, str]:
    """Per graph whose ``backend``/``precision`` artifact fails the self-test here, the reason. The
    engine runs on the CPU on every core; when every head passes, its plan is added to ``passed``."""
    from edge_runtime.inference.engine import Engine, EngineOptions
    from edge_runtime.trust.selftest import run_selftest

    providers = (DEFAULT_PROVIDER,) if backend == "onnxruntime" else None
    options = EngineOptions(
        backend=backend, precision=precision, heads=tuple(heads), verify_hashes=False, threads=cores,
        providers=providers,
    )  # fmt: skip
    try:
        with Engine.from_bundle(bundle.root, options) as engine:
            report = run_selftest(engine)
            plan = engine.plan
    except EdgeRuntimeError as exc:
        return {"trunk": f"{backend} {precision} does not load: {exc}"}
    assert plan is not None
    if report.passed:
        passed.add(frozenset((g, c.backend, c.artifact.precision) for g, c in plan.choices.items()))
    failing = {name: check for name, check in report.heads.items() if not check.passed}
    found: dict[str, str] = {}
    if failing and len(failing) == len(report.heads) and plan.choices["trunk"].reason is None:
        found["trunk"] = f"self-test failed with every head ({report.failures()})"
    for name, check in failing.items():
        if plan.choices[name].reason is None:
            found[name] = f"self-test failed: {check.metric} {check.value:.4g}"
    return found


def candidates(
    bundle: Bundle, options: TuneOptions, passed: set[TestedPlan] | None = None
) -> tuple[dict[str, list[GraphConfig]], list[str]]:
    """Each graph's candidates and the ones dropped (with why) after the self-tests (the plans
    that passed whole go into ``passed``)."""
    manifest = bundle.manifest
    heads = list(manifest.heads) if options.heads is None else list(options.heads)
    backends = list(options.backends) if options.backends is not None else installed_backends()
    providers: Sequence[str] = options.providers or _ort_providers()
    cores = options.cores or os.cpu_count() or 1
    found = {
        graph: graph_candidates(
            graph,
            manifest.trunk if graph == "trunk" else manifest.heads[graph],
            cores=cores,
            backends=backends,
            providers=providers,
        )
        for graph in ["trunk", *heads]
    }
    dropped: list[str] = []
    combos = sorted({(c.backend, c.precision) for configs in found.values() for c in configs})
    for backend, precision in combos:
        for graph, why in _selftest_failures(
            bundle, heads, backend, precision, cores, set() if passed is None else passed
        ).items():
            if graph in found:
                before = len(found[graph])
                found[graph] = [c for c in found[graph] if (c.backend, c.precision) != (backend, precision)]
                if len(found[graph]) < before:
                    dropped.append(f"{graph} {backend} {precision}: {why}")
    return found, dropped


def baseline_config(bundle: Bundle, graph: str, cores: int) -> GraphConfig:
    """What every tune is compared with: FP32 ONNX Runtime on the CPU (the trunk on every core, a
    head on one thread), or FP32 LiteRT for a graph without an ONNX FP32 artifact (a Keras bundle)."""
    entry = bundle.manifest.trunk if graph == "trunk" else bundle.manifest.heads[graph]
    threads = cores if graph == "trunk" else 1
    if entry.artifact("onnx", "fp32") is not None:
        return GraphConfig("onnxruntime", "fp32", threads, DEFAULT_PROVIDER)
    fp32 = entry.artifact("tflite", "fp32")
    artifact = fp32 if fp32 is not None else entry.artifacts[0]
    backend = "tflite" if artifact.format == "tflite" else "onnxruntime"
    return GraphConfig(backend, artifact.precision, threads, None if backend == "tflite" else DEFAULT_PROVIDER)


def _ort_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def _paired(bundle: Bundle, head: str, trunk: GraphConfig, allowed: Sequence[GraphConfig]) -> GraphConfig:
    """The head config the runtime's rule pairs with ``trunk`` (same backend and precision where
    the head has them), among ``allowed``; else the head's first allowed config."""
    try:
        choice = choose_graph(head, bundle.manifest.heads[head], trunk.backend, trunk.precision, lambda _b: True)
    except EdgeRuntimeError:
        return allowed[0]
    provider = trunk.provider if choice.backend == "onnxruntime" else None
    if choice.backend != trunk.backend and choice.backend == "onnxruntime":
        provider = DEFAULT_PROVIDER
    wanted = GraphConfig(choice.backend, choice.artifact.precision, 1, provider)
    return wanted if wanted in allowed else allowed[0]


def _round(
    phase: str,
    assignments: Mapping[str, dict[str, GraphConfig]],
    bench: GraphBench,
    frames: Sequence[np.ndarray],
    seconds: float,
    incumbent: str,
    reference_only: Sequence[str] = (),
) -> tuple[str, dict[str, Timing]]:
    """Time each named assignment (``"baseline"`` among them), interleaved; the fastest name, where
    only a candidate faster than ``incumbent`` by :data:`MARGIN` replaces it, and the names in
    ``reference_only`` are timed for the ratios but never chosen."""
    runners = {name: bench.frame_runner(assignment) for name, assignment in assignments.items()}
    timings = interleave(runners, frames, seconds=seconds)
    fastest = min((n for n in timings if n not in reference_only), key=lambda name: timings[name].p50_ms)
    best = fastest if timings[fastest].p50_ms < timings[incumbent].p50_ms * (1 - MARGIN) else incumbent
    logger.info("tune %s: %d candidates in %.1f s, fastest %s", phase, len(runners), seconds, best)
    return best, timings


def tune(
    bundle: Bundle, options: TuneOptions | None = None, *, progress: Callable[[str], None] | None = None
) -> TuneResult:
    """Measure the candidates of ``bundle`` here and choose one config per graph (see the module)."""
    options = options or TuneOptions()
    say = progress or (lambda _text: None)
    started = time.monotonic()
    cores = options.cores or os.cpu_count() or 1
    heads = list(bundle.manifest.heads) if options.heads is None else list(options.heads)
    say("checking each artifact with the bundle's self-test")
    passed: set[TestedPlan] = set()
    found, dropped = candidates(bundle, options, passed)
    baseline = {graph: baseline_config(bundle, graph, cores) for graph in ["trunk", *heads]}
    for graph, configs in found.items():
        if baseline[graph] not in configs:
            configs.insert(0, baseline[graph])  # the reference always runs, even if the self-test dropped it
    nothing = all(len({(c.backend, c.precision, c.provider) for c in configs}) == 1 for configs in found.values())
    frames = tune_frames(bundle)
    rows: list[dict[str, Any]] = []
    varying_heads = [h for h in heads if len(found[h]) > 1]
    with GraphBench(bundle, heads) as bench:
        trunk_options = {
            config.describe(): {"trunk": config, **{h: _paired(bundle, h, config, found[h]) for h in heads}}
            for config in found["trunk"]
        }
        trunk_options = {"baseline": baseline, **{k: v for k, v in trunk_options.items() if v != baseline}}
        head_seconds = options.seconds * (1 - TRUNK_SHARE) / max(1, len(varying_heads))
        trunk_seconds = options.seconds * (TRUNK_SHARE if varying_heads else 1.0)
        say(f"timing {len(trunk_options)} trunk configurations for {trunk_seconds:.1f} s")
        best, timings = _round("trunk", trunk_options, bench, frames, trunk_seconds, "baseline")
        rows += _rows("trunk", trunk_options, timings, best)
        chosen = dict(trunk_options[best])
        for head in varying_heads:
            head_options = {"baseline": baseline, "current": dict(chosen)}
            for config in found[head]:
                if config != chosen[head]:
                    head_options[f"{head} {config.describe()}"] = {**chosen, head: config}
            say(f"timing {len(head_options) - 1} configurations of head {head!r} for {head_seconds:.1f} s")
            best, timings = _round(
                f"head {head!r}", head_options, bench, frames, head_seconds, "current", reference_only=["baseline"]
            )
            rows += _rows(f"head {head}", head_options, timings, best)
            chosen = dict(head_options[best])
    result = TuneResult(chosen, baseline, rows, dropped, nothing_to_tune=nothing)
    if chosen != baseline and not _already_tested(chosen, passed):
        say("checking the chosen configuration with the self-test")
        why = _assignment_fails(bundle, heads, chosen)
        if why:
            result.fallback = f"the chosen configuration failed the self-test ({why}): the baseline is kept"
            logger.warning("%s", result.fallback)
            result.choice = dict(baseline)
    result.seconds = time.monotonic() - started
    return result


def _already_tested(assignment: Mapping[str, GraphConfig], passed: set[TestedPlan]) -> bool:
    """Whether the candidates' self-tests already ran ``assignment``'s artifacts together, on the
    CPU (threads do not change what a graph computes; another provider may)."""
    if any(c.backend == "onnxruntime" and c.provider != DEFAULT_PROVIDER for c in assignment.values()):
        return False
    return frozenset((g, c.backend, c.precision) for g, c in assignment.items()) in passed


def _assignment_fails(bundle: Bundle, heads: Sequence[str], assignment: Mapping[str, GraphConfig]) -> str | None:
    from edge_runtime.inference.engine import Engine, EngineOptions
    from edge_runtime.trust.selftest import run_selftest

    options = EngineOptions(graphs=dict(assignment), heads=tuple(heads), verify_hashes=False)
    with Engine.from_bundle(bundle.root, options) as engine:
        report = run_selftest(engine)
    return None if report.passed else report.failures()


def _rows(
    phase: str, assignments: Mapping[str, dict[str, GraphConfig]], timings: Mapping[str, Timing], best: str
) -> list[dict[str, Any]]:
    base = timings["baseline"].p50_ms
    return [
        {
            "round": phase,
            "candidate": name,
            "configuration": describe_assignment(assignments[name]),
            "p50_ms": round(timing.p50_ms, 4),
            "p95_ms": round(timing.p95_ms, 4),
            "runs": timing.runs,
            "vs_baseline": round(timing.p50_ms / base, 4) if base > 0 else None,
            "chosen": name == best,
        }
        for name, timing in timings.items()
    ]


def format_table(result: TuneResult) -> str:
    """The table ``edge-runtime tune`` prints: per round, each candidate's p50, p95, its ratio
    to the baseline (FP32 ONNX Runtime) in the same round, and which was chosen; then the choice."""
    header = ("round", "candidate", "p50 ms", "p95 ms", "vs baseline", "")
    table = [header] + [
        (
            r["round"],
            r["candidate"],
            f"{r['p50_ms']:.3f}",
            f"{r['p95_ms']:.3f}",
            "-" if r["vs_baseline"] is None else f"{r['vs_baseline']:.2f}x",
            "chosen" if r["chosen"] else "",
        )
        for r in result.rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"baseline: {describe_assignment(result.baseline)}")
    lines += [f"dropped: {d}" for d in result.dropped]
    if result.fallback:
        lines.append(result.fallback)
    lines.append(f"chosen: {describe_assignment(result.choice)} (tuned in {result.seconds:.1f} s)")
    return "\n".join(lines)


__all__ = [
    "TuneOptions",
    "TuneResult",
    "baseline_config",
    "candidates",
    "describe_assignment",
    "format_table",
    "tune",
    "tune_frames",
]
