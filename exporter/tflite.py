"""``edge-export convert --to tflite``: TFLite artifacts for a bundle, FP32 and full INT8, each
graph mapped back to the manifest's tensor names and measured against the float model.

A converter (:class:`~exporter.tflite_graphs.TfliteConverter`; by default onnx2tf on the
bundle's ONNX graphs, :mod:`exporter.onnx2tf_converter`; litert-torch for PyTorch models,
:mod:`exporter.litert_torch`) makes each graph (trunk, each head) at each precision. The
manifest records, per artifact and per logical tensor, the TFLite signature key, the
permutation from the ONNX layout (``perm``), the dtype and the quantization
``[scale, zero_point]`` — the runtime maps by these names, never by position.

INT8 is calibrated on the same frames as :mod:`exporter.quantize` — the trunk on frames, each
head on the float trunk's outputs — and every graph is kept only when every task passes the
fidelity gate (:mod:`exporter.gate`) end to end: TFLite trunk + TFLite head against the float
ONNX model, on held-back frames; otherwise the graph is not written and the runtime falls back
per graph. The decisions go on the artifacts (``fidelity``) and into ``tflite.json``.

Re-conversion adds, never drops: the run replaces the TFLite artifacts of the precisions it
converts (``options.precisions``) and keeps every other artifact and its file, so
``--precisions int8`` on a bundle with FP32 TFLite graphs keeps them (as :mod:`exporter.quantize`
does for the ONNX precisions). A graph whose file has no ``serving_default`` signature is
recorded with ``signature`` null and interpreter tensor names, which the runtime binds directly.

Example::

    result = convert_bundle("build/demo_bundle", options=TfliteOptions(calib="frames/"))
    print(format_tflite_report(result))

CLI: ``edge-export convert build/demo_bundle --to tflite --calib frames/`` or
``edge-export split model.onnx -o bundle --formats onnx,tflite --calib frames/``
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from edge_runtime.bundle.reader import Bundle, load_bundle
from edge_runtime.bundle.specs import Artifact, GraphEntry
from edge_runtime.errors import ConfigError
from exporter.bundle import rewrite_artifacts, rewrite_target, staged_output, warn_signature_dropped
from exporter.calibration import load_calibration
from exporter.gate import accepted, build_gate, input_size, report_json, tasks_of
from exporter.onnx2tf_converter import ONNX2TF
from exporter.progress import Steps, format_bytes
from exporter.quantize_options import check_min_agreement
from exporter.selftest import refresh_selftest
from exporter.tflite_graphs import (
    ConversionInputs,
    TfliteConverter,
    TfliteDecision,
    TfliteGraph,
    paired_tflite_latency_ms,
    tflite_artifact,
    tflite_decision,
)
from exporter.toolenv import ToolEnvError
from exporter.verify import make_session

logger = logging.getLogger(__name__)

TFLITE_PRECISIONS = ("fp32", "int8")
REPORT_NAME = "tflite.json"
#: The reason a rejected graph gives after the agreement.
FALLBACK = "not written (the runtime falls back to the next precision, or to ONNX)"


@dataclass(frozen=True)
class TfliteOptions:
    """Options of :func:`convert_bundle`."""

    calib: str | Path | None = None
    precisions: tuple[str, ...] = ("fp32", "int8")
    min_agreement: float = 0.99
    held_out: float = 0.25
    limit: int | None = None
    force: bool = False
    #: Judge a detection task on too few detections instead of rejecting (see :mod:`exporter.gate`).
    keep_unmeasured: bool = False

    def __post_init__(self) -> None:
        bad = [p for p in self.precisions if p not in TFLITE_PRECISIONS]
        if bad or not self.precisions:
            raise ConfigError(f"TFLite precisions {list(self.precisions)}: choose from {', '.join(TFLITE_PRECISIONS)}")
        check_min_agreement(self.min_agreement)


@dataclass(frozen=True)
class TfliteResult:
    bundle_dir: Path
    decisions: list[TfliteDecision]
    calibration: str
    #: What the gate measured on (``"3 held-back frames"``, or with the calibration frames too).
    gate_basis: str = ""


def _fp32(entry: GraphEntry, what: str, bundle: Bundle) -> Path:
    artifact = entry.artifact("onnx", "fp32")
    if artifact is None:
        raise ConfigError(f"{bundle.root}: {what} has no ONNX fp32 artifact to convert")
    return bundle.path_of(artifact)


def _with(
    values: Sequence[Mapping[str, np.ndarray]], outputs: Sequence[Mapping[str, np.ndarray]]
) -> list[dict[str, np.ndarray]]:
    return [{**v, **o} for v, o in zip(values, outputs, strict=True)]


@contextlib.contextmanager
def _workdir() -> Iterator[str]:
    """A temporary folder for the converter, removed afterwards — kept when a converter run
    failed, so that the command in its error reruns as it was."""
    tmp = tempfile.mkdtemp(prefix="edge-tflite-")
    try:
        yield tmp
    except ToolEnvError as exc:
        raise ToolEnvError(f"{exc}\n(its working folder {tmp} is kept for that)") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(tmp, ignore_errors=True)


def convert_bundle(
    bundle_dir: str | Path,
    out_dir: str | Path | None = None,
    options: TfliteOptions | None = None,
    *,
    converter: TfliteConverter | None = None,
) -> TfliteResult:
    """Add TFLite artifacts (FP32, and INT8 where it passes the gate) to a bundle; ``converter``
    defaults to onnx2tf on the bundle's ONNX graphs. Only the TFLite artifacts of
    ``options.precisions`` are replaced; every other artifact stays."""
    options = options or TfliteOptions()
    converter = converter or ONNX2TF
    source, target, _in_place = rewrite_target(bundle_dir, out_dir, options.force)
    steps = Steps(total=5)
    with steps.step("loading the bundle and calibration frames") as step:
        bundle = load_bundle(source, warn_unchecked=False)
        warn_signature_dropped(source, "convert")
        manifest = bundle.manifest
        graphs = [("trunk", manifest.trunk), *manifest.heads.items()]
        paths = {g: _fp32(e, "the trunk" if g == "trunk" else f"head {g!r}", bundle) for g, e in graphs}
        calib = load_calibration(options.calib, manifest.input, limit=options.limit)
        calib_frames, held_frames = calib.split(options.held_out)
        step.detail = f"{calib.source}; {len(calib_frames)} to calibrate, {len(held_frames)} held back"
    with steps.step(f"preparing the {converter.name} environment") as step:
        try:
            env = converter.prepare()
        except ToolEnvError as exc:
            raise ToolEnvError(f"cannot convert to TFLite: {exc}") from exc
        step.detail = str(env.path)
    input_name = manifest.input.name
    models = {g: onnx.load(p) for g, p in paths.items()}
    trunk32 = make_session(paths["trunk"].read_bytes(), "trunk fp32")
    heads32 = {h: make_session(paths[h].read_bytes(), f"head {h} fp32") for h in manifest.heads}

    def float_values(frames: np.ndarray) -> list[dict[str, np.ndarray]]:
        values = []
        for i in range(len(frames)):
            feed = {input_name: frames[i : i + 1]}
            outs = trunk32.run(list(manifest.trunk.outputs), feed)
            values.append({**feed, **dict(zip(manifest.trunk.outputs, outs, strict=True))})
        return values

    def float_head(head: str, values: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        entry = manifest.heads[head]
        return [
            dict(
                zip(entry.outputs, heads32[head].run(list(entry.outputs), {i: v[i] for i in entry.inputs}), strict=True)
            )
            for v in values
        ]

    def outputs_with(
        graph: str, candidate: TfliteGraph | None, values: list[dict[str, np.ndarray]]
    ) -> Callable[[str], list[dict[str, np.ndarray]]]:
        """Each task's outputs with ``candidate`` in place: the float heads on a candidate
        trunk's features (``values``), or the candidate head on ``values``."""
        if graph == "trunk" or candidate is None:
            return lambda task: float_head(task, values)
        run = candidate.run
        return lambda _task: run(values)

    calib_values = float_values(calib_frames)
    frames = build_gate(
        tasks_of(manifest),
        input_size(manifest.input),
        options.min_agreement,
        float_values(held_frames),
        calib_values,
        lambda values: {h: float_head(h, values) for h in manifest.heads},
        keep_unmeasured=options.keep_unmeasured,
    )
    gate, held_values = frames.gate, frames.values  # the held-back frames (and calibration frames where needed)
    blobs: dict[str, bytes] = {}
    decisions: list[TfliteDecision] = []
    with _workdir() as tmp:
        with steps.step(f"converting with {converter.name}") as step:
            job = ConversionInputs(
                graphs, paths, models, input_name, calib_values, held_values, options.precisions, Path(tmp)
            )
            converted = converter.convert(env, job)
            step.detail = f"{len(converted)} TFLite graphs"
        with steps.step("measuring each task against the float model") as measure:
            for precision in options.precisions:
                trunk = converted.get(("trunk", precision))
                trunk_values = held_values if trunk is None else _with(held_values, trunk.run(held_values))
                for graph, _ in graphs:
                    candidate = converted.get((graph, precision))
                    outputs = outputs_with(graph, candidate, trunk_values)
                    decision = tflite_decision(gate, graph, precision, candidate, outputs, FALLBACK)
                    if candidate is not None and decision.accepted:
                        blobs[decision.path] = candidate.path.read_bytes()
                    decisions.append(decision)
            measure.detail = f"{sum(d.accepted for d in decisions)} of {len(decisions)} kept"
            kept_now = accepted(decisions)
            for (graph, precision), decision in kept_now.items():
                fp32 = converted.get((graph, "fp32"))
                if precision == "int8" and (graph, "fp32") in kept_now and fp32 is not None:
                    feed = held_values[0]  # the float values: the model input and the trunk's outputs
                    decision.latency_ms, decision.fp32_latency_ms = paired_tflite_latency_ms(
                        converted[(graph, precision)], fp32, feed
                    )
    with steps.step("writing the bundle") as step:
        kept = accepted(decisions)
        added: dict[str, list[Artifact]] = {
            graph: [
                tflite_artifact(
                    d.path,
                    d.precision,
                    converter.layout,
                    d.tensors,
                    d.artifact_fidelity(options.min_agreement),
                    signature=d.signature,
                )
                for d in (kept.get((graph, precision)) for precision in options.precisions)
                if d is not None
            ]
            for graph, _ in graphs
        }
        report = {
            "calibration": calib.source,
            "converter": env.spec.requirements,
            "converter_name": converter.name,
            "gate_frames": frames.to_dict(),
            "precisions": list(options.precisions),
        }
        # the new artifacts and the self-test measured with them appear together, or not at all
        with staged_output(target, force=True) as staging:
            rewrite_artifacts(
                bundle,
                staging,
                # only the precisions converted now: FP32 graphs survive a later INT8-only run
                replaced=lambda a: a.format == "tflite" and a.precision in options.precisions,
                added=added,
                files={**blobs, REPORT_NAME: report_json(report, decisions)},
                force=True,
            )
            refresh_selftest(staging, calib, options.held_out)
        written = Path(target).resolve()
        step.detail = f"{written} ({format_bytes(sum(len(b) for b in blobs.values()))} of TFLite graphs)"
    return TfliteResult(written, decisions, calib.source, frames.basis)


def format_tflite_report(result: TfliteResult) -> str:
    """One line per graph and precision."""
    basis = f"; gate measured on {result.gate_basis}" if result.gate_basis else ""
    lines = [f"calibration: {result.calibration}{basis}"]
    for d in result.decisions:
        agreement = "-" if d.agreement is None else f"{d.agreement:.4f}"
        verdict = "kept" if d.accepted else "not written"
        size = format_bytes(d.size)
        lines.append(f"  {d.graph:<10} {d.precision:<5} agreement {agreement:<7} {size:>10}  {verdict}: {d.reason}")
    lines += [f"  note: {note}" for note in (d.slower_note() for d in result.decisions) if note]
    return "\n".join(lines)


def backend_runs(result: TfliteResult, precisions: Sequence[str]) -> tuple[list[str], list[str]]:
    """What each backend will run per graph of the converted bundle, by the runtime's own rule
    (:func:`edge_runtime.inference.artifact_choice.plan_artifacts`): the lines ``convert`` prints,
    and the LiteRT plans that would not run every graph as asked (what ``--strict`` refuses)."""
    from edge_runtime.errors import BundleError
    from edge_runtime.inference.artifact_choice import ArtifactChoice, plan_artifacts

    def explain(choice: ArtifactChoice) -> str | None:
        """The gate's side of a fallback: which TFLite precisions of the graph were not written."""
        missing = [d for d in result.decisions if d.graph == choice.graph and not d.accepted]
        if not missing or choice.reason is None or not choice.reason.startswith("no tflite"):
            return None
        rejected = [d.precision for d in missing if d.reason != "not converted"]
        failed = [d.precision for d in missing if d.reason == "not converted"]
        why = [f"the gate rejected {' and '.join(rejected)}"] if rejected else []
        why += [f"{' and '.join(failed)} did not convert"] if failed else []
        head = choice.reason.split(",")[0].split(":")[0]  # "no tflite artifact" / "no tflite int8 artifact"
        return f"{head}: {'; '.join(why)}"

    # What each backend will run per graph, by the runtime's own rule (edge_runtime.inference.artifact_choice).
    manifest = load_bundle(result.bundle_dir, warn_unchecked=False).manifest
    refused: list[str] = []
    lines = ["runs:"]
    for backend in ("tflite", "onnxruntime"):
        for precision in sorted(precisions, key=("int8", "fp16", "fp32").index):
            try:
                plan = plan_artifacts(manifest, backend, precision, available=lambda _name: True)
            except BundleError as exc:
                lines.append(f"  {backend} at {precision}: cannot run: {exc}")
                if backend == "tflite":
                    refused.append(f"{backend} at {precision}: {exc}")
                continue
            lines.append(f"  {plan.headline()}: {plan.summary(explain)}")
            if backend == "tflite" and plan.fallbacks:
                why = "; ".join(
                    f"{c.what} {c.backend} {c.artifact.precision} ({explain(c) or c.reason})" for c in plan.fallbacks
                )
                refused.append(f"{plan.headline()}: {why}")
    return lines, refused


__all__ = [
    "REPORT_NAME",
    "TFLITE_PRECISIONS",
    "TfliteOptions",
    "TfliteResult",
    "backend_runs",
    "convert_bundle",
    "format_tflite_report",
]
