"""Keras models (``.keras`` / ``.h5``) to a TFLite-only bundle (there is no Keras -> ONNX path).

TensorFlow never enters the exporter's environment: the work that needs it runs in the
TensorFlow virtualenv of :mod:`exporter.toolenv` (the onnx2tf one: TensorFlow 2.19, Keras 3),
through a driver script (``_keras_driver.py``, copied to a temporary folder) that exchanges
``.json`` and ``.npy`` files only. The driver

- finds the boundary: the layers named by ``--boundary``, or automatically the *last shared
  layers*: of the layers every output depends on, those whose output is read by a layer that
  not every output depends on (for a plain trunk that is one layer, the deepest shared one);
- builds the trunk as ``keras.Model(model.inputs, {boundary: layer.output})`` and each head as
  the functional sub-graph from its boundary tensors to its outputs
  (``keras.Model(boundary tensors, outputs)``), re-applied to fresh ``keras.Input`` layers named
  after the boundary, with dict outputs: so the TFLite signature keys are the logical names;
- converts each with ``tf.lite.TFLiteConverter.from_keras_model``: FP32, and full INT8 (int8
  inputs and outputs) with a representative dataset: the trunk on the calibration frames, each
  head on the float trunk's outputs for the same frames.

Here, with LiteRT: the FP32 trunk + heads are verified against the Keras model's own
predictions, and each INT8 graph is measured per task against the FP32 TFLite graphs on
held-back frames (the gate of :mod:`exporter.gate`); it is written only at or above
``--min-agreement``. Heads: one per model output, named after the output layer, unless the head
spec (``--head-spec``) groups outputs; its decoders and schedules go into the manifest.

Example::

    result = split_keras_model("model.keras", "bundle", KerasSplitOptions(calib="frames/", int8=True))

CLI: ``edge-export split model.keras -o bundle --calib frames/ --precision int8 [--boundary feat]``
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import __version__
from edge_runtime.bundle.fields import check_keys
from edge_runtime.bundle.manifest import FORMAT, Manifest
from edge_runtime.bundle.reader import sha256_file
from edge_runtime.bundle.specs import Artifact, GraphEntry, InputSpec, TensorInfo
from edge_runtime.errors import ConfigError, ModelError
from edge_runtime.specfiles import load_mapping_file
from exporter.bundle import check_output_dir, write_bundle
from exporter.calibration import load_calibration
from exporter.fidelity import Samples
from exporter.gate import Task, accepted, build_gate, input_size, report_json
from exporter.progress import Steps, format_bytes
from exporter.specs import HeadDefinition, load_head_spec
from exporter.tflite import REPORT_NAME
from exporter.tflite_graphs import (
    TfliteDecision,
    TfliteGraph,
    signature_details,
    signature_runner,
    tensor_info,
    tflite_artifact,
    tflite_decision,
    tflite_path,
)
from exporter.toolenv import ToolEnv, ToolEnvError, ensure_env

logger = logging.getLogger(__name__)

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
#: The virtualenv with TensorFlow + Keras (shared with onnx2tf: TensorFlow 2.19, Keras 3).
TF_ENV = "onnx2tf"
DRIVER = Path(__file__).with_name("_keras_driver.py")
#: TFLite kernels (XNNPACK) sum in another order than TensorFlow: FP32 graphs are checked
#: against the Keras model with at least this absolute tolerance.
MIN_TOLERANCE = 1e-4


@dataclass(frozen=True)
class KerasSplitOptions:
    """Options of :func:`split_keras_model` (the flags of ``edge-export split`` for Keras)."""

    boundary: Sequence[str] | None = None
    tasks: Mapping[str, Sequence[str]] = field(default_factory=dict)
    input_spec: str | Path | Mapping[str, Any] | None = None
    head_spec: str | Path | None = None
    calib: str | Path | None = None
    int8: bool = False
    min_agreement: float = 0.99
    held_out: float = 0.25
    tolerance: float = 1e-5
    force: bool = False
    name: str | None = None
    version: str = "1"

    def __post_init__(self) -> None:
        if not 0.0 < self.min_agreement <= 1.0:
            raise ConfigError(f"--min-agreement must be in (0, 1], got {self.min_agreement}")


@dataclass(frozen=True)
class KerasSplitResult:
    """What :func:`split_keras_model` wrote: the bundle, the boundary (and whether it was found
    automatically), the heads (name -> outputs), the FP32 check against Keras, the INT8 decisions."""

    bundle_dir: Path
    manifest: Manifest
    boundary: tuple[str, ...]
    automatic: bool
    heads: dict[str, tuple[str, ...]]
    max_abs_error: float
    samples: int
    decisions: list[TfliteDecision]


def is_keras_model(path: str | Path) -> bool:
    return Path(path).suffix.lower() in KERAS_SUFFIXES


def _input_spec(found: Mapping[str, Any], overrides: Mapping[str, Any] | None, where: str) -> InputSpec:
    """The manifest input: NHWC (Keras is channels-last), shape from the model, rest from the spec."""
    data: dict[str, Any] = dict(overrides or {})
    check_keys(data, InputSpec.KEYS, where, strict=True, exc=ConfigError)
    name, shape = found["name"], list(found["shape"])
    if data.setdefault("name", name) != name:
        raise ConfigError(f"{where}: name {data['name']!r} is not the model's input; the model input is {name!r}")
    if data.setdefault("layout", "NHWC") != "NHWC":
        raise ConfigError(f"{where}: layout {data['layout']!r}: Keras models are channels-last, give NHWC")
    if len(shape) != 4 or any(d is None for d in shape[1:]):
        raise ConfigError(f"the Keras input {name!r} has shape {shape}: a static (batch, H, W, C) image is needed")
    model_shape = [1, *shape[1:]]
    if "shape" in data and list(data["shape"])[1:] != model_shape[1:]:
        raise ConfigError(f"{where}: shape {data['shape']} but the Keras model input is {shape}")
    data["shape"] = model_shape
    channels = model_shape[3]
    if channels == 1:
        data.setdefault("color", "GRAY")
    data.setdefault("mean", [0.0] * channels)
    data.setdefault("std", [1.0] * channels)
    data.setdefault("dynamic_batch", shape[0] is None)
    return InputSpec.from_mapping(data, where, strict=True, exc=ConfigError)


def _probe_input(path: Path, env: ToolEnv) -> dict[str, Any]:
    """Name and shape of the model input (a short run in the TensorFlow environment)."""
    code = (
        "import json,os,sys;os.environ['TF_CPP_MIN_LOG_LEVEL']='3';import keras\n"
        "try:\n m=keras.models.load_model(sys.argv[1],compile=False)\n"
        " t=m.inputs[0];print('@@'+json.dumps({'name':t._keras_history[0].name,"
        "'shape':[None if d is None else int(d) for d in t.shape],'inputs':len(m.inputs)}))\n"
        "except Exception as e:\n print('@@'+json.dumps({'error':f'{type(e).__name__}: {e}'}))\n"
    )
    out = env.run(["-c", code, str(path)], cwd=path.parent, what=f"Keras: reading {path.name}")
    line = next((ln for ln in out.splitlines() if ln.startswith("@@")), None)
    found = json.loads(line[2:]) if line else {"error": out[-500:]}
    if "error" in found:
        raise ModelError(f"{path.name}: not a Keras model the TensorFlow environment can load: {found['error']}")
    return found


def _load_graph(path: Path, inputs: Sequence[str], outputs: Sequence[str]) -> TfliteGraph:
    """A converted graph, its signature keys mapped to the logical names (they are the same:
    the sub-models have named inputs and dict outputs)."""
    runner = signature_runner(path)
    ins, outs = signature_details(runner)
    tensors: dict[str, dict[str, Any]] = {}
    for names, details, kind in ((inputs, ins, "input"), (outputs, outs, "output")):
        for name in names:
            if name not in details:
                hint = difflib.get_close_matches(name, list(details), n=1)
                raise ModelError(
                    f"{path.name}: no signature {kind} {name!r}{f' (close: {hint[0]!r})' if hint else ''}; "
                    f"has {', '.join(details)}"
                )
            tensors[name] = tensor_info(details[name], name, None)
    return TfliteGraph(path, tensors, list(inputs), list(outputs), runner)


def _run_driver(env: ToolEnv, job: dict[str, Any], workdir: Path) -> dict[str, Any]:
    shutil.copy(DRIVER, workdir / DRIVER.name)
    (workdir / "job.json").write_text(json.dumps(job))
    try:
        env.run([DRIVER.name, "job.json"], cwd=workdir, what="Keras -> TFLite conversion")
    except ToolEnvError:
        result_file = workdir / "result.json"
        if not result_file.exists():
            raise
    result: dict[str, Any] = json.loads((workdir / "result.json").read_text())
    if "error" in result:
        kind, message = result["error"]["kind"], result["error"]["message"]
        raise (ConfigError if kind == "config" else ModelError)(message)
    return result


def split_keras_model(
    model: str | Path, out_dir: str | Path, options: KerasSplitOptions | None = None
) -> KerasSplitResult:
    """Split a Keras model into a TFLite-only trunk + heads bundle written to ``out_dir``."""
    options = options or KerasSplitOptions()
    path = Path(model).resolve()
    check_output_dir(out_dir, options.force)
    definitions: dict[str, HeadDefinition] = load_head_spec(options.head_spec) if options.head_spec else {}
    groups = {n: list(d.outputs) for n, d in definitions.items() if d.outputs is not None}
    groups.update({n: list(o) for n, o in options.tasks.items()})
    overrides: Mapping[str, Any] | None = None
    where = "--input-spec"
    if isinstance(options.input_spec, Mapping):
        overrides = options.input_spec
    elif options.input_spec is not None:
        where, overrides = str(options.input_spec), load_mapping_file(options.input_spec)
    steps = Steps(total=5)
    with steps.step(f"preparing the TensorFlow environment ({TF_ENV})") as step:
        try:
            env = ensure_env(TF_ENV)
        except ToolEnvError as exc:
            raise ToolEnvError(f"cannot convert a Keras model: {exc}") from exc
        step.detail = str(env.path)
    with steps.step("reading the model input and calibration frames") as step:
        spec = _input_spec(_probe_input(path, env), overrides, where)
        calib = load_calibration(options.calib, spec)
        if options.int8:
            calib_frames, held_frames = calib.split(options.held_out)
        else:
            calib_frames, held_frames = calib.inputs[:0], calib.inputs[:4]
        step.detail = f"input {spec.name} {list(spec.shape)} NHWC; {calib.source}"
    precisions = ("fp32", "int8") if options.int8 else ("fp32",)
    with tempfile.TemporaryDirectory(prefix="edge-keras-") as tmp:
        work = Path(tmp)
        with steps.step("building sub-models and converting them with TFLiteConverter") as step:
            np.save(work / "verify.npy", held_frames.astype(np.float32))
            if options.int8:
                np.save(work / "calib.npy", calib_frames.astype(np.float32))
            job = {
                "model": str(path),
                "boundary": list(options.boundary) if options.boundary else None,
                "groups": groups,
                "precisions": list(precisions),
                "calib": "calib.npy" if options.int8 else None,
                "verify": "verify.npy",
                "out": str(work),
            }
            found = _run_driver(env, job, work)
            heads = {h: tuple(v["outputs"]) for h, v in found["heads"].items()}
            for name in definitions:
                if name not in heads:
                    raise ConfigError(
                        f"{options.head_spec}: head {name!r} does not match any head of the model "
                        f"(found: {', '.join(heads)}); give it 'outputs' to group outputs under that name"
                    )
            step.detail = (
                f"boundary {', '.join(found['boundary'])} ({'automatic' if found['automatic'] else 'given'}); "
                f"heads {', '.join(heads)}"
            )
        boundary = tuple(found["boundary"])
        graphs = {
            (g, p): _load_graph(
                work / file,
                [spec.name] if g == "trunk" else found["heads"][g]["inputs"],
                list(boundary) if g == "trunk" else found["heads"][g]["outputs"],
            )
            for g, files in found["files"].items()
            for p, file in files.items()
        }
        with steps.step("verifying FP32 trunk + heads against the Keras model") as step:
            feeds = [{spec.name: held_frames[i : i + 1]} for i in range(len(held_frames))]
            float_values = _end_to_end(graphs, "fp32", "fp32", heads, feeds)
            tolerance = max(options.tolerance, MIN_TOLERANCE)
            errors = {}
            for out_name, file in found["references"].items():
                reference = np.load(work / file)
                got = np.concatenate([v[out_name] for v in float_values])
                errors[out_name] = float(np.max(np.abs(got - reference)))
            worst = max(errors.values())
            if worst > tolerance:
                raise ModelError(
                    f"the FP32 TFLite trunk + heads differ from the Keras model by up to {worst:.3g} (> {tolerance}): "
                    + ", ".join(f"{k} {v:.3g}" for k, v in errors.items())
                )
            step.detail = f"{len(feeds)} frames, max abs error {worst:.3g}"
        calib_feeds = [{spec.name: calib_frames[i : i + 1]} for i in range(len(calib_frames))]
        decisions = _measure(graphs, heads, definitions, (feeds, calib_feeds), spec, options) if options.int8 else []
        with steps.step("writing the bundle") as step:
            files: dict[str, bytes] = {}
            kept = accepted(decisions)

            def artifacts(graph: str) -> tuple[Artifact, ...]:
                made = []
                for precision in precisions:
                    converted = graphs.get((graph, precision))
                    decision = kept.get((graph, precision))
                    if converted is None or (precision != "fp32" and decision is None):
                        continue
                    path = tflite_path(graph, precision)
                    files[path] = converted.path.read_bytes()
                    fidelity = None if decision is None else decision.artifact_fidelity(options.min_agreement)
                    made.append(tflite_artifact(path, precision, "NHWC", converted.tensors, fidelity))
                return tuple(made)

            head_entries = {}
            for head, outs in heads.items():
                definition = definitions.get(head) or HeadDefinition(name=head)
                head_entries[head] = GraphEntry(
                    inputs=tuple(found["heads"][head]["inputs"]),
                    outputs=outs,
                    artifacts=artifacts(head),
                    decoder=definition.decoder,
                    schedule=definition.schedule,
                    qos=definition.qos,
                    expiry_s=definition.expiry_s,
                )
            tensors = {
                name: TensorInfo("float32", tuple("?" if d is None else d for d in shape))
                for name, shape in found["shapes"].items()
            }
            manifest = Manifest(
                format=FORMAT,
                name=options.name or path.stem,
                version=options.version,
                created=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                exporter=f"edge-runtime {__version__}",
                input=spec,
                trunk=GraphEntry(inputs=(spec.name,), outputs=boundary, artifacts=artifacts("trunk")),
                heads=head_entries,
                files={},
                tensors=tensors,
                split={
                    "source": path.name,
                    "source_sha256": sha256_file(path),
                    "frontend": f"keras {found['keras']} (tensorflow {found['tensorflow']})",
                    "boundary": "automatic" if found["automatic"] else "given",
                    "boundary_sources": {b: b for b in boundary},
                    "verification": {
                        "samples": len(feeds),
                        "tolerance": tolerance,
                        "max_abs_error": worst,
                        "outputs": errors,
                        "against": "the Keras model (FP32 TFLite trunk + heads)",
                    },
                },
            )
            report = {
                "calibration": calib.source,
                "converter": [[f"tensorflow=={found['tensorflow']}", f"keras=={found['keras']}"]],
                "converter_name": "tf.lite.TFLiteConverter (Keras)",
            }
            files[REPORT_NAME] = report_json(report, decisions)
            written = write_bundle(out_dir, files, manifest, force=options.force)
            step.detail = f"{written} ({format_bytes(sum(len(b) for b in files.values()))})"
    return KerasSplitResult(written, manifest, boundary, bool(found["automatic"]), heads, worst, len(feeds), decisions)


def _end_to_end(
    graphs: Mapping[tuple[str, str], TfliteGraph],
    trunk_precision: str,
    head_precision: str,
    heads: Mapping[str, Sequence[str]],
    feeds: Sequence[Mapping[str, np.ndarray]],
    only: str | None = None,
) -> list[dict[str, np.ndarray]]:
    """Trunk then heads per frame: every head's outputs (``only``: that head's) by logical name."""
    values = [{**f, **o} for f, o in zip(feeds, graphs[("trunk", trunk_precision)].run(feeds), strict=True)]
    results: list[dict[str, np.ndarray]] = [{} for _ in feeds]
    for head in heads if only is None else [only]:
        graph = graphs[(head, head_precision)]
        for result, out in zip(results, graph.run(values), strict=True):
            result.update(out)
    return results


def _measure(
    graphs: Mapping[tuple[str, str], TfliteGraph],
    heads: Mapping[str, Sequence[str]],
    definitions: Mapping[str, HeadDefinition],
    frames: tuple[Sequence[Mapping[str, np.ndarray]], Sequence[Mapping[str, np.ndarray]]],
    spec: InputSpec,
    options: KerasSplitOptions,
) -> list[TfliteDecision]:
    """INT8 trunk (with FP32 heads) and each INT8 head (fed by the INT8 trunk) against FP32 TFLite,
    on the held-back ``frames[0]`` (and the calibration ``frames[1]`` where the gate needs them)."""
    tasks = {
        head: Task(None if head not in definitions else definitions[head].decoder, tuple(outputs))
        for head, outputs in heads.items()
    }

    def reference_of(feeds: Sequence[Mapping[str, np.ndarray]]) -> dict[str, Samples]:
        reference = _end_to_end(graphs, "fp32", "fp32", heads, feeds)
        return {head: [{o: r[o] for o in outputs} for r in reference] for head, outputs in heads.items()}

    chosen = build_gate(tasks, input_size(spec), options.min_agreement, frames[0], frames[1], reference_of)
    gate, feeds = chosen.gate, chosen.values

    def outputs_with(head_precision: str) -> Callable[[str], Samples]:
        return lambda task: _end_to_end(graphs, "int8", head_precision, heads, feeds, only=task)

    return [
        tflite_decision(
            gate,
            graph,
            "int8",
            graphs.get((graph, "int8")),
            outputs_with("fp32" if graph == "trunk" else "int8"),
            "not written (the FP32 graph stays)",
        )
        for graph in ("trunk", *heads)
    ]


__all__ = ["KERAS_SUFFIXES", "KerasSplitOptions", "KerasSplitResult", "is_keras_model", "split_keras_model"]
