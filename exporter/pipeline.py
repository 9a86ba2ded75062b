"""``edge-export split`` as a Python function: model → verified trunk + heads bundle.

Steps: load the model, make it device-compatible (opset 13..23, IR <= 11), find the
boundary, extract the graphs, verify that trunk → heads reproduces every original output
(max abs error <= 1e-5 by default), check every head as the device will (decoders against
the verified outputs, labels against classes, schedules; :mod:`exporter.head_checks`), and
only then write the bundle and its self-test data — into a staging directory that replaces
the output directory when everything succeeded, so a failed split leaves nothing behind.
Class labels in the model's metadata (:mod:`exporter.metadata`) are the heads' default labels,
and the preprocessing it states fills what the input spec leaves out; preprocessing that neither
states is defaulted, recorded as ``assumed`` in the manifest's ``input`` and announced with a
WARNING (:func:`exporter.specs.assumed_warning`).

Example::

    from exporter.pipeline import SplitOptions, split_model
    result = split_model("examples/demo_multitask.onnx", "build/demo_bundle",
                         SplitOptions(input_spec="examples/demo_input.toml",
                                      head_spec="examples/demo_heads.toml", force=True))
    print(result.bundle_dir, result.report.max_abs_error)

CLI: ``edge-export split examples/demo_multitask.onnx -o build/demo_bundle --force``
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edge_runtime import __version__
from edge_runtime.bundle.manifest import FORMAT, Manifest
from edge_runtime.bundle.reader import read_manifest, sha256_file
from edge_runtime.bundle.specs import Artifact, DecoderSpec, GraphEntry, InputSpec, TensorInfo
from edge_runtime.errors import ConfigError, ModelError
from edge_runtime.specfiles import load_mapping_file
from exporter.bundle import check_output_dir, staged_output, write_bundle
from exporter.compat import make_device_compatible
from exporter.frontends.onnx import load_onnx_model
from exporter.head_checks import check_heads
from exporter.metadata import ModelMetadata, read_metadata, with_metadata_defaults
from exporter.progress import Steps, format_bytes
from exporter.quantize_options import check_tolerance
from exporter.specs import HeadDefinition, assumed_warning, load_head_spec, model_input_spec
from exporter.split import SplitGraphs, SplitPlan, extract_graphs, plan_split
from exporter.verify import DEFAULT_TOLERANCE, VerificationReport, make_session, sample_inputs, verify_split

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitOptions:
    """Options of :func:`split_model` (the flags of ``edge-export split``)."""

    tasks: Mapping[str, Sequence[str]] = field(default_factory=dict)
    boundary: Sequence[str] | None = None
    input_spec: str | Path | Mapping[str, Any] | None = None
    head_spec: str | Path | None = None
    calib: str | Path | None = None
    force: bool = False
    tolerance: float = DEFAULT_TOLERANCE
    samples: int = 4
    name: str | None = None
    version: str = "1"
    selftest: bool = True
    selftest_frames: int = 4

    def __post_init__(self) -> None:
        check_tolerance(self.tolerance)


@dataclass(frozen=True)
class SplitResult:
    """What :func:`split_model` wrote and measured."""

    bundle_dir: Path
    plan: SplitPlan
    report: VerificationReport
    manifest: Manifest
    sizes: dict[str, int]


def _resolve_heads(
    flag_tasks: Mapping[str, Sequence[str]], definitions: Mapping[str, HeadDefinition]
) -> dict[str, tuple[str, ...]]:
    """Explicit output groups from the head spec, then ``--task`` flags (which win)."""
    tasks = {name: tuple(d.outputs) for name, d in definitions.items() if d.outputs is not None}
    tasks.update({name: tuple(outs) for name, outs in flag_tasks.items()})
    return tasks


def _check_definitions_used(plan: SplitPlan, definitions: Mapping[str, HeadDefinition], where: str) -> None:
    found = [h.name for h in plan.heads]
    for name in definitions:
        if name not in found:
            raise ConfigError(
                f"{where}: head {name!r} does not match any head of the model "
                f"(found: {', '.join(found)}); give it 'outputs' to group outputs under that name"
            )


def _load_calibration(path: str | Path, spec: InputSpec) -> np.ndarray:
    """Real frames for verification: what ``--calib`` holds, through the input spec."""
    from exporter.calibration import load_calibration

    return load_calibration(path, spec).inputs


def _serialise(model: onnx.ModelProto, what: str) -> bytes:
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelError(f"{what}: the extracted graph is not valid ONNX: {exc}") from exc
    return model.SerializeToString()


def split_model(
    model: str | Path | onnx.ModelProto,
    out_dir: str | Path,
    options: SplitOptions | None = None,
    *,
    source_name: str | None = None,
) -> SplitResult:
    """Split ``model`` into a verified trunk + heads bundle written to ``out_dir``."""
    options = options or SplitOptions()
    check_output_dir(out_dir, options.force)
    steps = Steps(total=7)
    definitions: dict[str, HeadDefinition] = {}
    spec_where = str(options.head_spec) if options.head_spec else "--head-spec"
    if options.head_spec is not None:
        definitions = load_head_spec(options.head_spec)
    input_overrides: Mapping[str, Any] | None = None
    input_where = "--input-spec"
    if isinstance(options.input_spec, Mapping):
        input_overrides = options.input_spec
    elif options.input_spec is not None:
        input_where = str(options.input_spec)
        input_overrides = load_mapping_file(options.input_spec)

    with steps.step("loading model") as step:
        if isinstance(model, onnx.ModelProto):
            source = source_name or "model.onnx"
            source_digest = "sha256:" + hashlib.sha256(model.SerializeToString()).hexdigest()
        else:
            source = Path(model).name
            source_digest = sha256_file(Path(model))  # the file as the user has it
            model = load_onnx_model(model)
        original = model
        step.detail = f"{len(model.graph.node)} nodes, {len(model.graph.output)} outputs"
    with steps.step("checking device compatibility") as step:
        model, notes = make_device_compatible(model)
        meta = read_metadata(model)
        spec = model_input_spec(model, input_overrides, input_where, default_size=meta.input_size, metadata=meta)
        if spec.assumed:
            logger.warning("%s", assumed_warning(spec))
        if meta.input_size is not None and spec.height_width != meta.input_size:
            logger.warning(
                "%s: input %dx%d (HxW) but the model's metadata 'imgsz' says %dx%d; the input spec wins",
                input_where, *spec.height_width, *meta.input_size,
            )  # fmt: skip
        step.detail = "; ".join(notes) if notes else "opset and IR version already compatible"
    with steps.step("finding the trunk/head boundary") as step:
        tasks = _resolve_heads(options.tasks, definitions)
        plan = plan_split(model, tasks=tasks, boundary=options.boundary)
        _check_definitions_used(plan, definitions, spec_where)
        for note in plan.notes:
            logger.info("%s", note)
        for work in plan.duplicated:
            logger.warning("%s", work.describe())
        heads = ", ".join(f"{h.name} ({', '.join(h.outputs)})" for h in plan.heads)
        cut = "none (identity trunk)" if plan.identity_trunk else ", ".join(plan.boundary)
        step.detail = f"boundary {cut}; heads {heads}"
    with steps.step("extracting trunk and head graphs") as step:
        graphs = extract_graphs(model, plan)
        blobs = {"trunk.fp32.onnx": _serialise(graphs.trunk, "trunk")}
        for name, head_model in graphs.heads.items():
            blobs[f"heads/{name}.fp32.onnx"] = _serialise(head_model, f"head {name!r}")
        step.detail = ", ".join(f"{k} {format_bytes(len(v))}" for k, v in blobs.items())
        if graphs.renamed:
            step.detail += "; boundary named " + ", ".join(f"{v} (was {k})" for k, v in graphs.renamed.items())
    with steps.step("verifying trunk + heads against the original model") as step:
        real = _load_calibration(options.calib, spec) if options.calib is not None else None
        samples = sample_inputs(model, spec.shape, count=options.samples, dynamic_batch=spec.dynamic_batch, real=real)
        verified = SplitGraphs(
            trunk=onnx.load_from_string(blobs["trunk.fp32.onnx"]),
            heads={n: onnx.load_from_string(blobs[f"heads/{n}.fp32.onnx"]) for n in graphs.heads},
            renamed=graphs.renamed,
        )
        # Compare with the model as given, so that an opset conversion is verified too.
        try:
            reference = make_session(original, "the model as given")
        except ModelError as exc:
            logger.warning("%s; verifying against the converted model instead", exc)
            reference = make_session(model, "the converted model")
        report = verify_split(
            reference,
            verified,
            plan,
            samples,
            progress=lambda n, total: logger.debug("verified sample %d/%d", n, total),
        )
        report.raise_if_failed(options.tolerance)
        step.detail = f"{report.samples} inputs, max abs error {report.max_abs_error:.3g}"
    with steps.step("checking heads: decoders, labels, schedules") as step:
        manifest, from_metadata = _build_manifest(
            model,
            graphs,
            plan,
            spec,
            definitions,
            report,
            notes,
            options,
            source=source,
            source_digest=source_digest,
            metadata=meta,
            where=spec_where,
        )
        names = [o.name for o in reference.get_outputs()]
        outputs = dict(zip(names, reference.run(names, samples[0]), strict=True))
        manifest = check_heads(manifest, outputs, from_metadata=from_metadata)
        step.detail = ", ".join(f"{name} ({(e.decoder or DecoderSpec()).type})" for name, e in manifest.heads.items())
        _warn_raw_heads(manifest, outputs)
    with steps.step("writing bundle") as step, staged_output(out_dir, options.force) as staging:
        write_bundle(staging, blobs, manifest, force=True)
        step.detail = f"{format_bytes(sum(len(b) for b in blobs.values()))} of graphs"
        if options.selftest:
            from exporter.selftest import write_selftest

            write_selftest(staging, count=options.selftest_frames)
            manifest = read_manifest(staging)
            step.detail += f"; self-test data: {options.selftest_frames} frames"
    bundle_dir = Path(out_dir).resolve()
    return SplitResult(
        bundle_dir=bundle_dir,
        plan=plan,
        report=report,
        manifest=manifest,
        sizes={k: len(v) for k, v in blobs.items()},
    )


def _build_manifest(
    model: onnx.ModelProto,
    graphs: SplitGraphs,
    plan: SplitPlan,
    spec: InputSpec,
    definitions: Mapping[str, HeadDefinition],
    report: VerificationReport,
    notes: Sequence[str],
    options: SplitOptions,
    *,
    source: str,
    source_digest: str,
    metadata: ModelMetadata,
    where: str,
) -> tuple[Manifest, set[str]]:
    """The manifest to write, and the heads whose labels came from the model's metadata."""
    tensors: dict[str, TensorInfo] = {}
    for name, found in graphs.types.items():
        dims = None if found.shape is None else tuple(d if d is not None else "?" for d in found.shape)
        tensors[name] = TensorInfo(dtype=found.dtype, shape=dims)
    heads: dict[str, GraphEntry] = {}
    from_metadata: set[str] = set()
    for head in plan.heads:
        definition = definitions.get(head.name) or HeadDefinition(name=head.name)
        decoder, added = with_metadata_defaults(definition.decoder, metadata, head.name, where)
        if added:
            from_metadata.add(head.name)
        heads[head.name] = GraphEntry(
            inputs=tuple(graphs.public(name) for name in head.inputs),
            outputs=head.outputs,
            artifacts=(Artifact(format="onnx", precision="fp32", path=f"heads/{head.name}.fp32.onnx"),),
            decoder=decoder,
            schedule=definition.schedule,
            qos=definition.qos,
            expiry_s=definition.expiry_s,
        )
    manifest = Manifest(
        format=FORMAT,
        name=options.name or Path(source).stem,
        version=options.version,
        created=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        exporter=f"edge-runtime {__version__}",
        input=spec,
        trunk=GraphEntry(
            inputs=plan.model_inputs,
            outputs=tuple(graphs.public(name) for name in plan.boundary),
            artifacts=(Artifact(format="onnx", precision="fp32", path="trunk.fp32.onnx"),),
        ),
        heads=heads,
        files={},
        tensors=tensors,
        split={
            "source": source,
            "source_sha256": source_digest,
            "boundary": "automatic" if plan.automatic else "given",
            "boundary_sources": {graphs.public(name): name for name in plan.boundary},
            "opset": next(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")),
            "ir_version": int(model.ir_version),
            "compatibility": list(notes),
            "verification": {
                "samples": report.samples,
                "tolerance": options.tolerance,
                "max_abs_error": report.max_abs_error,
                "outputs": {name: c.max_abs_error for name, c in report.checks.items()},
            },
        },
    )
    return manifest, from_metadata


def _warn_raw_heads(manifest: Manifest, outputs: Mapping[str, np.ndarray]) -> None:
    """Say what a head without a decoder costs on the wire, and where to get a decoder."""
    for name, entry in manifest.heads.items():
        if entry.decoder is not None and entry.decoder.type != "raw":
            continue
        size = sum(int(np.asarray(outputs[o]).size) for o in entry.outputs if o in outputs)
        if size > 64:
            logger.warning(
                "head %r has no decoder: each frame publishes its %d raw output values (%s) instead of results; "
                "`edge-export inspect MODEL --suggest-head-spec` proposes a decoder for known layouts",
                name, size, ", ".join(entry.outputs),
            )  # fmt: skip
