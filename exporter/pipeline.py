"""``edge-export split`` as a Python function: model → verified trunk + heads bundle.

Steps: load the model, make it device-compatible (opset 13..23, IR <= 11), find the
boundary, extract the graphs, verify that trunk → heads reproduces every original output
(max abs error <= 1e-5 by default), and only then write the bundle.

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
from edge_runtime.bundle.specs import Artifact, GraphEntry, InputSpec, TensorInfo
from edge_runtime.errors import ConfigError, ModelError
from edge_runtime.specfiles import load_mapping_file
from exporter.bundle import check_output_dir, write_bundle
from exporter.compat import make_device_compatible
from exporter.frontends.onnx import load_onnx_model
from exporter.progress import Steps, format_bytes
from exporter.specs import HeadDefinition, load_head_spec, model_input_spec
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
    steps = Steps(total=6)
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
        spec = model_input_spec(model, input_overrides, input_where)
        step.detail = "; ".join(notes) if notes else "opset and IR version already compatible"
    with steps.step("finding the trunk/head boundary") as step:
        tasks = _resolve_heads(options.tasks, definitions)
        plan = plan_split(model, tasks=tasks, boundary=options.boundary)
        _check_definitions_used(plan, definitions, spec_where)
        step.detail = f"boundary {', '.join(plan.boundary)}; heads {', '.join(h.name for h in plan.heads)}"
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
    with steps.step("writing bundle") as step:
        manifest = _build_manifest(
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
        )
        bundle_dir = write_bundle(out_dir, blobs, manifest, force=options.force)
        step.detail = f"{bundle_dir} ({format_bytes(sum(len(b) for b in blobs.values()))})"
        if options.selftest:
            from exporter.selftest import write_selftest

            write_selftest(bundle_dir, count=options.selftest_frames)
            manifest = read_manifest(bundle_dir)
            step.detail += f"; self-test data: {options.selftest_frames} frames"
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
) -> Manifest:
    tensors: dict[str, TensorInfo] = {}
    for name, found in graphs.types.items():
        dims = None if found.shape is None else tuple(d if d is not None else "?" for d in found.shape)
        tensors[name] = TensorInfo(dtype=found.dtype, shape=dims)
    heads: dict[str, GraphEntry] = {}
    for head in plan.heads:
        definition = definitions.get(head.name) or HeadDefinition(name=head.name)
        heads[head.name] = GraphEntry(
            inputs=tuple(graphs.public(name) for name in head.inputs),
            outputs=head.outputs,
            artifacts=(Artifact(format="onnx", precision="fp32", path=f"heads/{head.name}.fp32.onnx"),),
            decoder=definition.decoder,
            schedule=definition.schedule,
            qos=definition.qos,
            expiry_s=definition.expiry_s,
        )
    return Manifest(
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
