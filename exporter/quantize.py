"""``edge-export quantize``: INT8 and FP16 artifacts, each measured against the float model.

For each graph of a bundle (the trunk and every head) and each wanted precision, a candidate
graph is made by :mod:`exporter.quantize_graphs` — INT8 by ONNX Runtime static quantization
(the trunk calibrated on frames, each head on the float trunk's outputs for the same frames),
FP16 with float32 inputs and outputs kept — loaded in a real session, and measured on frames
held back from calibration:

* a **trunk** candidate feeds the float heads; its fidelity per head is what each task's
  metric (:mod:`exporter.fidelity`) says of the heads' outputs against the float model;
* a **head** candidate is fed by the trunk the runtime would pair it with (the trunk at the
  same precision when that was accepted, else the float trunk), end to end.

The gate (:mod:`exporter.gate`): a candidate whose agreement is below ``min_agreement`` for
any task is not written; the runtime then takes the next best precision for that graph,
so a head that INT8 breaks stays float (mixed precision per head). An INT8
trunk that breaks the gate is tried again with its first and last compute layers kept float,
then one more of each, before the trunk falls back to float. Every decision, attempt and number goes into the manifest
(``fidelity`` on each artifact) and ``quantization.json``.

Example::

    result = quantize_bundle("build/demo_bundle", options=QuantizeOptions(calib="frames/", precision="int8"))
    print(format_report(result))

CLI: ``edge-export quantize build/demo_bundle --calib frames/ --precision int8``
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from edge_runtime.bundle.reader import Bundle, load_bundle
from edge_runtime.bundle.specs import Artifact, GraphEntry
from edge_runtime.errors import ConfigError, ModelError
from exporter.bundle import rewrite_artifacts, rewrite_target, staged_output, warn_signature_dropped
from exporter.calibration import CalibrationSet, load_calibration
from exporter.fidelity import Fidelity
from exporter.gate import GateDecision, accepted, build_gate, input_size, report_json, tasks_of
from exporter.progress import Steps, format_bytes
from exporter.quantize_graphs import (
    LoadedGraph,
    compute_nodes,
    fp16_graph,
    int8_graph,
    named_nodes,
    output_steps,
    paired_latency_ms,
    stack_samples,
    with_features,
)
from exporter.quantize_options import DEFAULT_MIN_AGREEMENT, PRECISION_CHOICES, QuantizeOptions
from exporter.selftest import refresh_selftest

logger = logging.getLogger(__name__)

REPORT_NAME = "quantization.json"
#: Trunk retries after a failed gate: how many compute layers to keep float at each end.
TRUNK_RETRIES = (1, 2)


def onnx_path(graph: str, precision: str) -> str:
    """Where a quantized graph goes in the bundle: ``trunk.int8.onnx``, ``heads/<name>.fp16.onnx``."""
    return f"trunk.{precision}.onnx" if graph == "trunk" else f"heads/{graph}.{precision}.onnx"


@dataclass
class Decision(GateDecision):
    """What happened to one graph at one precision: the gate's decision, sizes and latencies
    (the candidate's and the float graph's), what fed a head, and the trunk's attempts."""

    fp32_size: int = 0
    fed_by: str | None = None
    excluded_nodes: tuple[str, ...] = ()
    attempts: list[dict[str, Any]] = field(default_factory=list)

    def artifact_fidelity(self, min_agreement: float) -> dict[str, Any]:
        """The ``fidelity`` written on the artifact in the manifest."""
        out = super().artifact_fidelity(min_agreement)
        if self.fed_by is not None:
            out["fed_by"] = self.fed_by
        if self.excluded_nodes:
            out["float_nodes"] = list(self.excluded_nodes)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.report_row(),
            "fp32_size_bytes": self.fp32_size,
            "latency_ms": _round(self.latency_ms),
            "fp32_latency_ms": _round(self.fp32_latency_ms),
            "fed_by": self.fed_by,
            "float_nodes": list(self.excluded_nodes),
            "attempts": self.attempts,
        }


@dataclass(frozen=True)
class QuantizeResult:
    """What :func:`quantize_bundle` wrote and decided."""

    bundle_dir: Path
    decisions: list[Decision]
    calibration: str
    calibration_frames: int
    held_out_frames: int
    min_agreement: float
    #: What the gate measured on (``"3 held-back frames"``, or with the calibration frames too).
    gate_basis: str = ""


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _steps(data: bytes, graph: str, precision: str) -> dict[str, Any]:
    """``{"output_steps": {output: step}}`` of an INT8 head graph (empty when none is known)."""
    steps = output_steps(data) if precision == "int8" and graph != "trunk" else {}
    return {"output_steps": steps} if steps else {}


def _what(graph: str) -> str:
    return "the trunk" if graph == "trunk" else f"head {graph!r}"


def _fp32_artifact(entry: GraphEntry, what: str, bundle: Bundle) -> Artifact:
    artifact = entry.artifact("onnx", "fp32")
    if artifact is None:
        raise ConfigError(
            f"{bundle.root}: {what} has no ONNX fp32 artifact to quantize from "
            f"(artifacts: {', '.join(f'{a.format}/{a.precision}' for a in entry.artifacts) or 'none'})"
        )
    return artifact


class _Quantizer:
    def __init__(self, bundle: Bundle, calib: CalibrationSet, options: QuantizeOptions) -> None:
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.options = options
        self.input_name = self.manifest.input.name
        calib_frames, held_frames = calib.split(options.held_out)
        self.calib_feeds = [{self.input_name: calib_frames[i : i + 1]} for i in range(len(calib_frames))]
        held_feeds = [{self.input_name: held_frames[i : i + 1]} for i in range(len(held_frames))]
        self.models: dict[str, onnx.ModelProto] = {}
        self.fp32: dict[str, LoadedGraph] = {}
        for graph, entry in self._entries():
            data = bundle.path_of(_fp32_artifact(entry, _what(graph), bundle)).read_bytes()
            self.models[graph] = named_nodes(onnx.load_from_string(data))
            self.fp32[graph] = LoadedGraph(data, f"{graph} fp32")
        # the float path: trunk features for calibration and held-out frames, reference outputs
        self.calib_values = with_features(self.calib_feeds, self.fp32["trunk"])
        self.frames = build_gate(
            tasks_of(self.manifest),
            input_size(self.manifest.input),
            options.min_agreement,
            with_features(held_feeds, self.fp32["trunk"]),
            self.calib_values,
            lambda values: {name: self.fp32[name].run(values) for name in self.manifest.heads},
            keep_unmeasured=options.keep_unmeasured,
        )
        self.gate = self.frames.gate
        # what the gate measures on: the held-back frames (and the calibration frames where needed)
        self.held_values = self.frames.values
        self.held_feeds = [{self.input_name: v[self.input_name]} for v in self.held_values]
        self._candidates: dict[tuple[str, str], LoadedGraph] = {}

    def _entries(self) -> list[tuple[str, GraphEntry]]:
        return [("trunk", self.manifest.trunk), *self.manifest.heads.items()]

    def make(self, graph: str, precision: str, exclude: Sequence[str] = ()) -> LoadedGraph:
        what = _what(graph)
        model = self.models[graph]
        if precision == "fp16":
            data = fp16_graph(model, what)
        else:
            names = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
            data = int8_graph(model, stack_samples(self.calib_values, names), what, exclude=exclude)
        return LoadedGraph(data, f"{what} {precision}")

    def measure_trunk(self, candidate: LoadedGraph, precision: str) -> dict[str, Fidelity]:
        """Every task, its float head fed by the ``candidate`` trunk."""
        values = with_features(self.held_feeds, candidate)
        return {name: self.gate.fidelity(name, self.fp32[name].run(values), precision) for name in self.manifest.heads}

    def decide_trunk(self, precision: str) -> tuple[Decision, LoadedGraph | None]:
        gate = self.options.min_agreement
        decision = Decision("trunk", precision, onnx_path("trunk", precision), fp32_size=len(self.fp32["trunk"].data))
        tries: list[tuple[str, ...]] = [()]
        if precision == "int8":
            layers = compute_nodes(self.models["trunk"])
            for k in TRUNK_RETRIES:
                if 2 * k < len(layers):
                    tries.append((*layers[:k], *layers[-k:]))
        for n, exclude in enumerate(tries, 1):
            try:
                candidate = self.make("trunk", precision, exclude)
            except ModelError as exc:
                decision.reason = f"{exc}; the trunk stays float"
                decision.attempts.append({"float_nodes": list(exclude), "error": str(exc)})
                logger.warning("%s", exc)
                return decision, None
            verdict = self.gate.decide(decision, self.measure_trunk(candidate, precision))
            decision.attempts.append({"float_nodes": list(exclude), "agreement": round(verdict.lowest, 6)})
            decision.excluded_nodes, decision.size = exclude, len(candidate.data)
            if verdict.accepted:
                kept = f"; {', '.join(exclude)} kept float" if exclude else ""
                decision.reason = f"every task >= {gate} (lowest {verdict.lowest:.4f}){kept}"
                return decision, candidate
            retry = "; retrying" if n < len(tries) else ""
            logger.info("trunk %s: below %s (%s)%s", precision, gate, verdict.failing_text, retry)
            decision.reason = f"below {gate}: {verdict.failing_text}"
            if verdict.blind:
                break  # no float node makes an unmeasured task measurable
        tried = (
            f" (also with the first/last {', '.join(map(str, TRUNK_RETRIES))} layers float)" if len(tries) > 1 else ""
        )
        decision.reason += f"{tried}; the trunk stays float"
        return decision, None

    def decide_head(self, head: str, precision: str, trunk: LoadedGraph | None) -> Decision:
        gate = self.options.min_agreement
        decision = Decision(head, precision, onnx_path(head, precision), fp32_size=len(self.fp32[head].data))
        decision.fed_by = f"trunk {precision}" if trunk is not None else "trunk fp32"
        try:
            candidate = self.make(head, precision)
        except ModelError as exc:
            decision.reason = f"{exc}; the head stays float"
            logger.warning("%s", exc)
            return decision
        values = self.held_values if trunk is None else with_features(self.held_feeds, trunk)
        fidelity = self.gate.fidelity(head, candidate.run(values), precision)
        verdict = self.gate.decide(decision, {head: fidelity})
        decision.size = len(candidate.data)
        if verdict.accepted:
            decision.reason = f"{fidelity.metric} {fidelity.value:.4f} >= {gate}"
        elif verdict.blind:
            decision.reason = f"{verdict.failing_text}: the head stays float"
        else:
            decision.reason = f"{fidelity.metric} {fidelity.value:.4f} < {gate}: the head stays float"
        decision.latency_ms, decision.fp32_latency_ms = paired_latency_ms(candidate, self.fp32[head], values[0])
        self._candidates[(head, precision)] = candidate
        return decision

    def run(self, progress: Callable[[str], None]) -> tuple[list[Decision], dict[str, bytes]]:
        decisions: list[Decision] = []
        blobs: dict[str, bytes] = {}
        for precision in self.options.precisions:
            progress(f"{precision}: trunk")
            decision, trunk = self.decide_trunk(precision)
            if trunk is not None:
                decision.latency_ms, decision.fp32_latency_ms = paired_latency_ms(
                    trunk, self.fp32["trunk"], self.held_feeds[0]
                )
                blobs[decision.path] = trunk.data
            decisions.append(decision)
            for head in self.manifest.heads:
                progress(f"{precision}: head {head}")
                decision = self.decide_head(head, precision, trunk)
                if decision.accepted:
                    blobs[decision.path] = self._candidates[(head, precision)].data
                decisions.append(decision)
        return decisions, blobs


def _every_quarter(what: str) -> Callable[[int, int], None]:
    """A progress callback that logs ``what`` done/total at each quarter of a long run."""

    def report(done: int, total: int) -> None:
        if total >= 40 and done in {total // 4, total // 2, 3 * total // 4}:
            logger.info("      %s: %d/%d", what, done, total)

    return report


def quantize_bundle(
    bundle_dir: str | Path,
    out_dir: str | Path | None = None,
    options: QuantizeOptions | None = None,
) -> QuantizeResult:
    """Add INT8 / FP16 artifacts that pass the fidelity gate to the bundle at ``bundle_dir``,
    written to ``out_dir`` (default: the bundle itself, replaced atomically)."""
    options = options or QuantizeOptions()
    source, target, _in_place = rewrite_target(bundle_dir, out_dir, options.force)
    steps = Steps(total=4)
    with steps.step("loading the bundle") as step:
        bundle = load_bundle(source, warn_unchecked=False)
        warn_signature_dropped(source, "quantize")
        graphs = [("trunk", bundle.manifest.trunk), *bundle.manifest.heads.items()]
        for graph, entry in graphs:
            _fp32_artifact(entry, _what(graph), bundle)
        step.detail = f"{bundle.manifest.name}: trunk + {len(bundle.manifest.heads)} heads"
    with steps.step("reading calibration frames") as step:
        calib = load_calibration(
            options.calib,
            bundle.manifest.input,
            limit=options.limit,
            progress=_every_quarter("calibration frames"),
        )
        calib_frames, held_frames = calib.split(options.held_out)
        step.detail = f"{calib.source}; {len(calib_frames)} to calibrate, {len(held_frames)} held back"
    with steps.step(f"quantizing ({', '.join(options.precisions)}) and measuring each task") as step:
        quantizer = _Quantizer(bundle, calib, options)
        decisions, blobs = quantizer.run(lambda what: logger.info("      %s", what))
        step.detail = f"{sum(d.accepted for d in decisions)} of {len(decisions)} graphs passed the gate"
    with steps.step("writing the bundle") as step:
        report = {
            "calibration": {
                "source": calib.source,
                "generated": calib.generated,
                "skipped": list(calib.skipped),
                "calibration_frames": len(calib_frames),
                "held_out_frames": len(held_frames),
            },
            "gate_frames": quantizer.frames.to_dict(),
            "precision": options.precision,
            "min_agreement": options.min_agreement,
            "int8_settings": {
                "format": "QDQ",
                "activations": "uint8",
                "weights": "int8 per-channel",
                "calibration": "MinMax",
                "pre_process": "quant_pre_process",
                "post_processing": "float (the nodes after the last weight-bearing node)",
            },
        }
        kept = accepted(decisions)
        added = {
            graph: [
                Artifact(
                    format="onnx",
                    precision=precision,
                    path=kept[(graph, precision)].path,
                    fidelity=kept[(graph, precision)].artifact_fidelity(options.min_agreement),
                    extra=_steps(blobs[kept[(graph, precision)].path], graph, precision),
                )
                for precision in sorted(options.precisions)
                if (graph, precision) in kept
            ]
            for graph, _ in graphs
        }
        # the new artifacts and the self-test measured with them appear together, or not at all
        with staged_output(target, force=True) as staging:
            rewrite_artifacts(
                bundle,
                staging,
                replaced=lambda a: a.format == "onnx" and a.precision in options.precisions,
                added=added,
                files={**blobs, REPORT_NAME: report_json(report, decisions)},
                force=True,
            )
            refresh_selftest(staging, calib, options.held_out)
        written = Path(target).resolve()
        step.detail = f"{written} ({format_bytes(sum(len(b) for b in blobs.values()))} of new graphs)"
    return QuantizeResult(
        bundle_dir=written,
        decisions=decisions,
        calibration=calib.source,
        calibration_frames=len(calib_frames),
        held_out_frames=len(held_frames),
        min_agreement=options.min_agreement,
        gate_basis=quantizer.frames.basis,
    )


def format_report(result: QuantizeResult) -> str:
    """The table ``edge-export quantize`` prints: one row per graph and precision."""
    rows = [("graph", "precision", "task", "metric", "value", "size", "latency ms (fp32)", "decision")]
    for d in result.decisions:
        latency = "-" if d.latency_ms is None else f"{d.latency_ms:.3f} ({d.fp32_latency_ms:.3f})"
        size = f"{format_bytes(d.size)} ({format_bytes(d.fp32_size)})" if d.size else "-"
        verdict = "kept" if d.accepted else "float"
        tasks: list[tuple[str, Fidelity | None]] = list(d.fidelity.items()) or [("-", None)]
        for i, (task, fid) in enumerate(tasks):
            first = i == 0
            rows.append(
                (
                    d.graph if first else "",
                    d.precision if first else "",
                    task,
                    "-" if fid is None else fid.metric,
                    "-" if fid is None else f"{fid.value:.4f}",
                    size if first else "",
                    latency if first else "",
                    verdict if first else "",
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"{d.graph} {d.precision}: {d.reason}" for d in result.decisions]
    notes += [note for note in (d.slower_note() for d in result.decisions) if note]
    return "\n".join(
        [
            f"calibration: {result.calibration} ({result.calibration_frames} frames, "
            f"{result.held_out_frames} held back); gate: agreement >= {result.min_agreement}"
            + (f" on {result.gate_basis}" if result.gate_basis else ""),
            *lines,
            "decisions:",
            *(f"  {n}" for n in notes),
        ]
    )


__all__ = [
    "DEFAULT_MIN_AGREEMENT",
    "PRECISION_CHOICES",
    "Decision",
    "QuantizeOptions",
    "QuantizeResult",
    "format_report",
    "onnx_path",
    "quantize_bundle",
]
