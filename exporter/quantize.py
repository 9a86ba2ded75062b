"""``edge-export quantize``: INT8 and FP16 artifacts, each measured against the float model.

For each graph of a bundle (the trunk and every head) and each wanted precision, a candidate
graph is made — INT8 by ONNX Runtime static quantization (QDQ, per-channel weights, after
``quant_pre_process``; the trunk calibrated on frames, each head on the float trunk's outputs
for the same frames), FP16 by converting weights and activations with float32 inputs and
outputs kept (so graphs still exchange float32) — loaded in a real session, and measured on
frames held back from calibration:

* a **trunk** candidate feeds the float heads; its fidelity per head is what each task's
  metric (:mod:`exporter.fidelity`) says of the heads' outputs against the float model;
* a **head** candidate is fed by the trunk the runtime would pair it with (the trunk at the
  same precision when that was accepted, else the float trunk), end to end.

The gate: a candidate whose agreement is below ``min_agreement`` for any task is not written;
the runtime then takes the next best precision for that graph (DESIGN.md §8), so a head that
INT8 breaks stays float (mixed precision per head). An INT8 trunk that breaks the gate is
tried again with its first and last compute layers kept float, then one more of each, before
the trunk falls back to float. Every decision, attempt and number goes into the manifest
(``fidelity`` on each artifact) and ``quantization.json``.

Example::

    result = quantize_bundle("build/demo_bundle", options=QuantizeOptions(calib="frames/", precision="int8"))
    print(format_report(result))

CLI: ``edge-export quantize build/demo_bundle --calib frames/ --precision int8``
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edge_runtime.bundle.manifest import Artifact, GraphEntry, Manifest
from edge_runtime.bundle.reader import Bundle, load_bundle
from edge_runtime.errors import ConfigError, ModelError
from exporter.bundle import existing_files, rewrite_target, warn_signature_dropped, write_bundle
from exporter.calibration import ArrayDataReader, CalibrationSet, load_calibration
from exporter.fidelity import Fidelity, head_fidelity
from exporter.progress import Steps, format_bytes
from exporter.quantize_options import DEFAULT_MIN_AGREEMENT, PRECISION_CHOICES, QuantizeOptions
from exporter.verify import make_session

logger = logging.getLogger(__name__)

REPORT_NAME = "quantization.json"
#: Ops whose weights INT8 quantizes and whose first/last instances the trunk retry keeps float.
COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
#: Trunk retries after a failed gate: how many compute layers to keep float at each end.
TRUNK_RETRIES = (1, 2)
LATENCY_RUNS = 30


@dataclass
class Decision:
    """What happened to one graph at one precision."""

    graph: str  # "trunk" or the head's name
    precision: str
    accepted: bool
    reason: str
    fidelity: dict[str, Fidelity] = field(default_factory=dict)  # task -> fidelity
    size: int = 0
    fp32_size: int = 0
    latency_ms: float | None = None
    fp32_latency_ms: float | None = None
    fed_by: str | None = None
    excluded_nodes: tuple[str, ...] = ()
    attempts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def path(self) -> str:
        return f"trunk.{self.precision}.onnx" if self.graph == "trunk" else f"heads/{self.graph}.{self.precision}.onnx"

    @property
    def agreement(self) -> float | None:
        return min((f.value for f in self.fidelity.values()), default=None)

    def artifact_fidelity(self, min_agreement: float) -> dict[str, Any]:
        """The ``fidelity`` written on the artifact in the manifest."""
        out: dict[str, Any] = {
            "agreement": None if self.agreement is None else round(self.agreement, 6),
            "min_agreement": min_agreement,
            "tasks": {task: f.to_dict() for task, f in self.fidelity.items()},
        }
        if self.fed_by is not None:
            out["fed_by"] = self.fed_by
        if self.excluded_nodes:
            out["float_nodes"] = list(self.excluded_nodes)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            **decision_dict(self),
            "fp32_size_bytes": self.fp32_size,
            "latency_ms": _round(self.latency_ms),
            "fp32_latency_ms": _round(self.fp32_latency_ms),
            "fed_by": self.fed_by,
            "float_nodes": list(self.excluded_nodes),
            "attempts": self.attempts,
        }


def decision_dict(d: Any) -> dict[str, Any]:
    """The fields every per-graph decision report shares (``quantization.json``, ``tflite.json``)."""
    return {
        "graph": d.graph,
        "precision": d.precision,
        "accepted": d.accepted,
        "reason": d.reason,
        "path": d.path if d.accepted else None,
        "agreement": None if d.agreement is None else round(d.agreement, 6),
        "fidelity": {task: f.to_dict() for task, f in d.fidelity.items()},
        "size_bytes": d.size,
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


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


# -- graph building ----------------------------------------------------------------------------


def _named(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose nodes all have unique names (ORT's quantizer addresses nodes by name)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    seen: set[str] = set()
    for i, node in enumerate(copy.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}"
        seen.add(node.name)
    return copy


def compute_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the weight-bearing nodes (``COMPUTE_OPS``) in graph order."""
    return [n.name for n in model.graph.node if n.op_type in COMPUTE_OPS]


def _ensure_opset13(model: onnx.ModelProto, what: str) -> onnx.ModelProto:
    """Per-channel QDQ needs opset >= 13 (``DequantizeLinear`` has no axis before: DESIGN.md §6)."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    if opset >= 13:
        return model
    try:
        converted = onnx.version_converter.convert_version(model, 13)
    except Exception as exc:
        raise ModelError(f"{what}: cannot upgrade opset {opset} to 13 for per-channel INT8: {exc}") from None
    logger.info("%s: opset %d upgraded to 13 for per-channel INT8", what, opset)
    return converted


def int8_graph(
    model: onnx.ModelProto,
    calibration: Mapping[str, np.ndarray],
    what: str,
    *,
    exclude: Sequence[str] = (),
) -> bytes:
    """``model`` statically quantized to INT8 (QDQ, per-channel weights, MinMax calibration
    on ``calibration``: input name -> (N, ...) arrays). ModelError naming the op on failure."""
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    model = _ensure_opset13(model, what)
    with tempfile.TemporaryDirectory(prefix="edge-quant-") as tmp:
        src, pre, out = Path(tmp, "float.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        onnx.save(model, src)
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception as exc:  # pre-processing is an optimisation: quantize the graph as it is
            logger.warning("%s: quant_pre_process failed (%s); quantizing without it", what, exc)
            pre = src
        try:
            quantize_static(
                str(pre),
                str(out),
                ArrayDataReader(calibration),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                nodes_to_exclude=list(exclude),
            )
        except Exception as exc:
            raise ModelError(f"{what}: INT8 quantization failed: {type(exc).__name__}: {exc}") from None
        return out.read_bytes()


def fp16_graph(model: onnx.ModelProto, what: str) -> bytes:
    """``model`` with float16 weights and activations, float32 inputs and outputs kept."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    except Exception as exc:
        raise ModelError(f"{what}: FP16 conversion failed: {type(exc).__name__}: {exc}") from None
    return converted.SerializeToString()


# -- running -----------------------------------------------------------------------------------


class _Graph:
    """A loaded graph that runs one sample at a time."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.what = what
        self.session = make_session(data, what)  # the load test of every graph we write
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        results = []
        for feed in feeds:
            values = self.session.run(self.outputs, {name: feed[name] for name in self.inputs})
            results.append(dict(zip(self.outputs, values, strict=True)))
        return results

    def latency_ms(self, feed: Mapping[str, np.ndarray], runs: int = LATENCY_RUNS) -> float:
        inputs = {name: feed[name] for name in self.inputs}
        for _ in range(3):
            self.session.run(self.outputs, inputs)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self.session.run(self.outputs, inputs)
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)


def _stack(samples: Sequence[Mapping[str, np.ndarray]], names: Sequence[str]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([s[name] for s in samples], axis=0) for name in names}


# -- the work ----------------------------------------------------------------------------------


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
        self.held_feeds = [{self.input_name: held_frames[i : i + 1]} for i in range(len(held_frames))]
        self.models: dict[str, onnx.ModelProto] = {}
        self.fp32: dict[str, _Graph] = {}
        for graph, entry in self._entries():
            artifact = _fp32_artifact(entry, "the trunk" if graph == "trunk" else f"head {graph!r}", bundle)
            data = bundle.path_of(artifact).read_bytes()
            self.models[graph] = _named(onnx.load_from_string(data))
            self.fp32[graph] = _Graph(data, f"{graph} fp32")
        # the float path: trunk features for calibration and held-out frames, reference outputs
        self.calib_values = self._with_features(self.calib_feeds, self.fp32["trunk"])
        self.held_values = self._with_features(self.held_feeds, self.fp32["trunk"])
        self.reference = {name: self.fp32[name].run(self.held_values) for name in self.manifest.heads}
        self.input_size = _input_size(self.manifest)
        self._candidates: dict[tuple[str, str], _Graph] = {}

    def _entries(self) -> list[tuple[str, GraphEntry]]:
        return [("trunk", self.manifest.trunk), *self.manifest.heads.items()]

    @staticmethod
    def _with_features(feeds: Sequence[Mapping[str, np.ndarray]], trunk: _Graph) -> list[dict[str, np.ndarray]]:
        return [{**feed, **out} for feed, out in zip(feeds, trunk.run(feeds), strict=True)]

    def fidelity(self, head: str, outputs: Sequence[Mapping[str, np.ndarray]]) -> Fidelity:
        entry = self.manifest.heads[head]
        return head_fidelity(head, entry.decoder, entry.outputs, self.reference[head], outputs, self.input_size)

    def make(self, graph: str, precision: str, exclude: Sequence[str] = ()) -> _Graph:
        what = "the trunk" if graph == "trunk" else f"head {graph!r}"
        model = self.models[graph]
        if precision == "fp16":
            data = fp16_graph(model, what)
        else:
            values = self.calib_values
            names = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
            data = int8_graph(model, _stack(values, names), what, exclude=exclude)
        return _Graph(data, f"{what} {precision}")

    def measure_trunk(self, candidate: _Graph) -> dict[str, Fidelity]:
        values = self._with_features(self.held_feeds, candidate)
        return {name: self.fidelity(name, self.fp32[name].run(values)) for name in self.manifest.heads}

    def decide_trunk(self, precision: str) -> tuple[Decision, _Graph | None]:
        gate = self.options.min_agreement
        decision = Decision("trunk", precision, False, "", fp32_size=len(self.fp32["trunk"].data))
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
            fidelity = self.measure_trunk(candidate)
            worst = min((f.value for f in fidelity.values()), default=1.0)
            decision.attempts.append({"float_nodes": list(exclude), "agreement": round(worst, 6)})
            decision.fidelity, decision.excluded_nodes, decision.size = fidelity, exclude, len(candidate.data)
            if worst >= gate:
                decision.accepted = True
                kept = f"; {', '.join(exclude)} kept float" if exclude else ""
                decision.reason = f"every task >= {gate} (lowest {worst:.4f}){kept}"
                return decision, candidate
            failing = ", ".join(f"{t} {f.value:.4f}" for t, f in fidelity.items() if f.value < gate)
            retry = n < len(tries)
            logger.info("trunk %s: below %s (%s)%s", precision, gate, failing, "; retrying" if retry else "")
            decision.reason = f"below {gate}: {failing}"
        tried = (
            f" (also with the first/last {', '.join(map(str, TRUNK_RETRIES))} layers float)" if len(tries) > 1 else ""
        )
        decision.reason += f"{tried}; the trunk stays float"
        return decision, None

    def decide_head(self, head: str, precision: str, trunk: _Graph | None) -> Decision:
        gate = self.options.min_agreement
        decision = Decision(head, precision, False, "", fp32_size=len(self.fp32[head].data))
        decision.fed_by = f"trunk {precision}" if trunk is not None else "trunk fp32"
        try:
            candidate = self.make(head, precision)
        except ModelError as exc:
            decision.reason = f"{exc}; the head stays float"
            logger.warning("%s", exc)
            return decision
        values = self.held_values if trunk is None else self._with_features(self.held_feeds, trunk)
        fidelity = self.fidelity(head, candidate.run(values))
        decision.fidelity, decision.size = {head: fidelity}, len(candidate.data)
        decision.accepted = fidelity.value >= gate
        decision.reason = (
            f"{fidelity.metric} {fidelity.value:.4f} >= {gate}"
            if decision.accepted
            else f"{fidelity.metric} {fidelity.value:.4f} < {gate}: the head stays float"
        )
        decision.latency_ms = candidate.latency_ms(values[0])
        decision.fp32_latency_ms = self.fp32[head].latency_ms(values[0])
        self._candidates[(head, precision)] = candidate
        return decision

    def run(self, progress: Callable[[str], None]) -> tuple[list[Decision], dict[str, bytes]]:
        decisions: list[Decision] = []
        blobs: dict[str, bytes] = {}
        for precision in self.options.precisions:
            progress(f"{precision}: trunk")
            decision, trunk = self.decide_trunk(precision)
            if trunk is not None:
                decision.latency_ms = trunk.latency_ms(self.held_feeds[0])
                decision.fp32_latency_ms = self.fp32["trunk"].latency_ms(self.held_feeds[0])
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


def _input_size(manifest: Manifest) -> tuple[int, int]:
    """(width, height) of the model input from its shape and layout."""
    shape = manifest.input.shape
    if manifest.input.layout == "NHWC":
        return int(shape[2]), int(shape[1])
    return int(shape[3]), int(shape[2])


def _with_artifacts(manifest: Manifest, decisions: Sequence[Decision], min_agreement: float) -> Manifest:
    """The manifest with the accepted artifacts added (older INT8/FP16 ONNX ones replaced)."""
    made = {(d.graph, d.precision): d for d in decisions}
    redone = {d.precision for d in decisions}

    def update(graph: str, entry: GraphEntry) -> GraphEntry:
        kept = [a for a in entry.artifacts if not (a.format == "onnx" and a.precision in redone)]
        for precision in sorted(redone):
            decision = made.get((graph, precision))
            if decision is not None and decision.accepted:
                kept.append(
                    Artifact(
                        format="onnx",
                        precision=precision,
                        path=decision.path,
                        fidelity=decision.artifact_fidelity(min_agreement),
                    )
                )
        return replace(entry, artifacts=tuple(kept))

    return replace(
        manifest,
        trunk=update("trunk", manifest.trunk),
        heads={name: update(name, entry) for name, entry in manifest.heads.items()},
    )


def quantize_bundle(
    bundle_dir: str | Path,
    out_dir: str | Path | None = None,
    options: QuantizeOptions | None = None,
) -> QuantizeResult:
    """Add INT8 / FP16 artifacts that pass the fidelity gate to the bundle at ``bundle_dir``,
    written to ``out_dir`` (default: the bundle itself, replaced atomically)."""
    options = options or QuantizeOptions()
    source, target, in_place = rewrite_target(bundle_dir, out_dir, options.force)
    steps = Steps(total=4)
    with steps.step("loading the bundle") as step:
        bundle = load_bundle(source, warn_unchecked=False)
        warn_signature_dropped(source, "quantize")
        graphs = [("trunk", bundle.manifest.trunk), *bundle.manifest.heads.items()]
        for graph, entry in graphs:
            _fp32_artifact(entry, "the trunk" if graph == "trunk" else f"head {graph!r}", bundle)
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
        accepted = [d for d in decisions if d.accepted]
        step.detail = f"{len(accepted)} of {len(decisions)} graphs passed the gate"
    with steps.step("writing the bundle") as step:
        manifest = _with_artifacts(bundle.manifest, decisions, options.min_agreement)
        stale = {
            a.path
            for _, entry in graphs
            for a in entry.artifacts
            if a.format == "onnx" and a.precision in options.precisions
        }
        files = existing_files(bundle, stale | {REPORT_NAME})
        files.update(blobs)
        report = {
            "calibration": {
                "source": calib.source,
                "generated": calib.generated,
                "skipped": list(calib.skipped),
                "calibration_frames": len(calib_frames),
                "held_out_frames": len(held_frames),
            },
            "precision": options.precision,
            "min_agreement": options.min_agreement,
            "int8_settings": {
                "format": "QDQ",
                "activations": "uint8",
                "weights": "int8 per-channel",
                "calibration": "MinMax",
                "pre_process": "quant_pre_process",
            },
            "decisions": [d.to_dict() for d in decisions],
        }
        files[REPORT_NAME] = (json.dumps(report, indent=2) + "\n").encode()
        written = write_bundle(target, files, manifest, force=True if in_place else options.force)
        step.detail = f"{written} ({format_bytes(sum(len(b) for b in blobs.values()))} of new graphs)"
    return QuantizeResult(
        bundle_dir=written,
        decisions=decisions,
        calibration=calib.source,
        calibration_frames=len(calib_frames),
        held_out_frames=len(held_frames),
        min_agreement=options.min_agreement,
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
    return "\n".join(
        [
            f"calibration: {result.calibration} ({result.calibration_frames} frames, "
            f"{result.held_out_frames} held back); gate: agreement >= {result.min_agreement}",
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
    "compute_nodes",
    "format_report",
    "fp16_graph",
    "int8_graph",
    "quantize_bundle",
]
