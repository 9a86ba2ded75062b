"""TFLite artifacts for a bundle: each ONNX graph through onnx2tf (in its own virtualenv), FP32
and full INT8, mapped back to the manifest's tensor names and measured against the float model.

For every graph (trunk, each head) onnx2tf writes a SavedModel and TFLite files (NHWC; a
signature ``serving_default`` keyed by the ONNX input names). The converter records, per
artifact and per logical tensor, the TFLite signature key, the permutation from the ONNX layout
(``perm``, e.g. ``[0, 2, 3, 1]`` for NCHW -> NHWC), the dtype and the quantization
``[scale, zero_point]`` — the runtime maps by these names, never by position. Quantized models
from onnx2tf name their signature outputs ``output_0``, ``output_1``…: they are matched to the
float model's named outputs by their values on a calibration frame (shape and cosine), not by
order.

INT8 is full-integer (int8 inputs and outputs where onnx2tf quantizes them), calibrated on the
same frames as :mod:`exporter.quantize` — the trunk on frames, each head on the float trunk's
outputs — and kept only when every task passes the fidelity gate end to end (TFLite trunk +
TFLite head against the float ONNX model, on held-back frames); otherwise the graph keeps its
FP32 TFLite artifact and the runtime falls back per graph. onnx2tf's offline traps are handled
(DESIGN.md §6): its calibration sample file is written into the working directory, and its
venv's ``bin`` (``onnxsim``) is on PATH.

Example::

    result = convert_bundle("build/demo_bundle", options=TfliteOptions(calib="frames/"))

CLI: ``edge-export convert build/demo_bundle --to tflite --calib frames/`` or
``edge-export split model.onnx -o bundle --formats onnx,tflite --calib frames/``
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edge_runtime.bundle.manifest import Artifact, GraphEntry
from edge_runtime.bundle.reader import SIGNATURE_NAME, Bundle, load_bundle
from edge_runtime.errors import BackendUnavailableError, ConfigError, ModelError
from exporter.bundle import rewrite_target, warn_signature_dropped, write_bundle
from exporter.calibration import load_calibration
from exporter.fidelity import Fidelity, head_fidelity
from exporter.progress import Steps, format_bytes
from exporter.quantize import decision_dict
from exporter.toolenv import ToolEnv, ToolEnvError, ensure_env
from exporter.verify import make_session

logger = logging.getLogger(__name__)

TFLITE_PRECISIONS = ("fp32", "int8")
SIGNATURE = "serving_default"
REPORT_NAME = "tflite.json"
#: onnx2tf downloads this sample for image inputs unless it is in the working directory.
ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"
#: onnx2tf output files by our precision.
ONNX2TF_FILES = {"fp32": "{stem}_float32.tflite", "int8": "{stem}_full_integer_quant.tflite"}


@dataclass(frozen=True)
class TfliteOptions:
    """Options of :func:`convert_bundle`."""

    calib: str | Path | None = None
    precisions: tuple[str, ...] = ("fp32", "int8")
    min_agreement: float = 0.99
    held_out: float = 0.25
    limit: int | None = None
    force: bool = False

    def __post_init__(self) -> None:
        bad = [p for p in self.precisions if p not in TFLITE_PRECISIONS]
        if bad or not self.precisions:
            raise ConfigError(f"TFLite precisions {list(self.precisions)}: choose from {', '.join(TFLITE_PRECISIONS)}")
        if not 0.0 < self.min_agreement <= 1.0:
            raise ConfigError(f"--min-agreement must be in (0, 1], got {self.min_agreement}")


# -- running TFLite in this process (for the measurement) -----------------------------------------


def _interpreter(path: Path) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise BackendUnavailableError(
            "measuring TFLite artifacts needs LiteRT: pip install 'edge-runtime[tflite]'"
        ) from None
    try:
        return Interpreter(model_path=str(path), num_threads=2)
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"{path.name}: LiteRT cannot load it: {exc}") from None


def _perm(onnx_shape: Sequence[int | None], tflite_shape: Sequence[int]) -> list[int] | None:
    """The permutation p with tflite = onnx.transpose(p); None for identity."""
    rank = len(tflite_shape)
    if len(onnx_shape) != rank:
        raise ModelError(f"rank changed in conversion: ONNX {list(onnx_shape)} vs TFLite {list(tflite_shape)}")

    def fits(p: Sequence[int]) -> bool:
        return all(onnx_shape[src] in (None, tflite_shape[dst]) for dst, src in enumerate(p))

    channels_last = [0, *range(2, rank), 1] if rank >= 3 else list(range(rank))
    identity = list(range(rank))
    if rank >= 3 and fits(channels_last) and channels_last != identity:
        # onnx2tf makes every >= 3-D tensor channels-last; identity only when the shapes say so
        if not fits(identity) or list(onnx_shape) != list(tflite_shape):
            return channels_last
    if fits(identity):
        return None
    raise ModelError(f"cannot map ONNX shape {list(onnx_shape)} to TFLite shape {list(tflite_shape)}")


def _onnx_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    shapes: dict[str, list[int | None]] = {}
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return shapes


@dataclass
class _TfliteGraph:
    """A converted graph run through its signature, with the logical tensor map."""

    path: Path
    tensors: dict[str, dict[str, Any]]  # logical name -> {"name", "perm", "dtype", "quantization"}
    inputs: list[str]
    outputs: list[str]
    runner: Any = field(repr=False, default=None)

    def run(self, feeds: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        results = []
        for feed in feeds:
            args = {}
            for name in self.inputs:
                info = self.tensors[name]
                value = np.asarray(feed[name], dtype=np.float32)
                if info["perm"] is not None:
                    value = value.transpose(info["perm"])
                args[info["name"]] = _quantize(value, info)
            raw = self.runner(**args)
            out = {}
            for name in self.outputs:
                info = self.tensors[name]
                value = _dequantize(np.asarray(raw[info["name"]]), info)
                if info["perm"] is not None:
                    value = value.transpose(np.argsort(info["perm"]))
                out[name] = value
            results.append(out)
        return results


def _quantize(value: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
    if info["quantization"] is None:
        return value.astype(np.dtype(info["dtype"]))
    scale, zero = info["quantization"]
    dtype = np.dtype(info["dtype"])
    limits = np.iinfo(dtype)
    return np.clip(np.round(value / scale) + zero, limits.min, limits.max).astype(dtype)


def _dequantize(value: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
    if info["quantization"] is None:
        return value.astype(np.float32)
    scale, zero = info["quantization"]
    return ((value.astype(np.float32) - zero) * scale).astype(np.float32)


def _details(runner: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    return runner.get_input_details(), runner.get_output_details()


def _tensor_info(detail: Mapping[str, Any], key: str, perm: list[int] | None) -> dict[str, Any]:
    scale, zero = detail.get("quantization", (0.0, 0))
    quantized = np.dtype(detail["dtype"]).kind in "iu" and scale != 0.0
    return {
        "name": key,
        "perm": perm,
        "dtype": np.dtype(detail["dtype"]).name,
        "quantization": [float(scale), int(zero)] if quantized else None,
    }


def load_converted(
    path: Path, model: onnx.ModelProto, reference: _TfliteGraph | None, probe: Mapping[str, np.ndarray] | None
) -> _TfliteGraph:
    """Load a converted graph and map its signature to the ONNX tensor names: inputs by name;
    outputs by name, or — when onnx2tf renamed them (``output_0``…) — by their values against
    ``reference`` (the FP32 TFLite graph) on ``probe``."""
    interpreter = _interpreter(path)
    signatures = interpreter.get_signature_list()
    if SIGNATURE not in signatures:
        raise ModelError(f"{path.name}: no {SIGNATURE!r} signature (has {', '.join(signatures) or 'none'})")
    runner = interpreter.get_signature_runner(SIGNATURE)
    in_details, out_details = _details(runner)
    shapes = _onnx_shapes(model)
    onnx_inputs = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    onnx_outputs = [o.name for o in model.graph.output]
    tensors: dict[str, dict[str, Any]] = {}
    for name in onnx_inputs:
        if name not in in_details:
            raise ModelError(
                f"{path.name}: the converter has no input {name!r} (signature inputs: {', '.join(in_details)})"
            )
        tensors[name] = _tensor_info(in_details[name], name, _perm(shapes[name], in_details[name]["shape"]))
    graph = _TfliteGraph(path, tensors, onnx_inputs, [], runner)
    if all(name in out_details for name in onnx_outputs):
        for name in onnx_outputs:
            tensors[name] = _tensor_info(out_details[name], name, _perm(shapes[name], out_details[name]["shape"]))
        graph.outputs = onnx_outputs
        return graph
    if reference is None or probe is None:
        raise ModelError(
            f"{path.name}: outputs {', '.join(out_details)} do not carry the ONNX names {', '.join(onnx_outputs)}"
        )
    # renamed outputs: match each to the reference output it reproduces best
    expected = reference.run([probe])[0]
    graph.outputs = []
    keys = list(out_details)
    raw = runner(**{t["name"]: _quantize(_apply_perm(probe[n], t["perm"]), t) for n, t in tensors.items()})
    taken: set[str] = set()
    for name in onnx_outputs:
        best, best_score = None, -2.0
        for key in keys:
            if key in taken:
                continue
            perm = _perm(shapes[name], out_details[key]["shape"]) if _rank_ok(shapes[name], out_details[key]) else "x"
            if perm == "x":
                continue
            info = _tensor_info(out_details[key], key, perm if isinstance(perm, list) else None)
            value = _dequantize(np.asarray(raw[key]), info)
            if info["perm"] is not None:
                value = value.transpose(np.argsort(info["perm"]))
            if value.shape != expected[name].shape:
                continue
            score = _cosine(value, expected[name])
            if score > best_score:
                best, best_score = key, score
        if best is None:
            raise ModelError(f"{path.name}: no output matches {name!r} (outputs: {', '.join(keys)})")
        taken.add(best)
        perm_best = _perm(shapes[name], out_details[best]["shape"])
        tensors[name] = _tensor_info(out_details[best], best, perm_best)
        graph.outputs.append(name)
    return graph


def _apply_perm(value: np.ndarray, perm: list[int] | None) -> np.ndarray:
    return value if perm is None else value.transpose(perm)


def _rank_ok(onnx_shape: Sequence[int | None], detail: Mapping[str, Any]) -> bool:
    try:
        _perm(onnx_shape, detail["shape"])
    except ModelError:
        return False
    return True


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    x, y = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    denominator = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(x @ y / denominator) if denominator else (1.0 if not x.any() and not y.any() else 0.0)


# -- converting ------------------------------------------------------------------------------------


def _to_nhwc(value: np.ndarray) -> np.ndarray:
    return value.transpose(0, *range(2, value.ndim), 1) if value.ndim >= 3 else value


def run_onnx2tf(
    env: ToolEnv,
    model_path: Path,
    workdir: Path,
    calibration: Mapping[str, np.ndarray] | None,
) -> Path:
    """Convert one ONNX graph; return onnx2tf's output folder. ``calibration`` (logical NCHW
    arrays by input name) turns on full-integer quantization."""
    out = workdir / "out"
    sample = np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32)
    np.save(workdir / ONNX2TF_SAMPLE, sample)  # onnx2tf would download it (DESIGN.md §6)
    args = ["-m", "onnx2tf", "-i", str(model_path), "-o", str(out), "-osd", "-b", "1", "-n"]
    if calibration:
        args.append("-oiqt")
        for name, values in calibration.items():
            data = _to_nhwc(values.astype(np.float32))
            path = workdir / f"calib_{len(args)}.npy"
            np.save(path, data)
            channels = data.shape[-1] if data.ndim >= 3 else 1
            shape = "[" * (data.ndim - 1)
            mean = f"{shape}[{','.join(['0.0'] * channels)}]{']' * (data.ndim - 1)}"
            std = f"{shape}[{','.join(['1.0'] * channels)}]{']' * (data.ndim - 1)}"
            args += ["-cind", name, str(path), mean, std]
    env.run(args, cwd=workdir, what=f"onnx2tf on {model_path.name}")
    return out


@dataclass
class TfliteDecision:
    """One graph at one precision."""

    graph: str
    precision: str
    accepted: bool
    reason: str
    path: str
    fidelity: dict[str, Fidelity] = field(default_factory=dict)
    size: int = 0
    tensors: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def agreement(self) -> float | None:
        return min((f.value for f in self.fidelity.values()), default=None)

    def to_dict(self) -> dict[str, Any]:
        return {**decision_dict(self), "tensors": self.tensors}


@dataclass(frozen=True)
class ConversionInputs:
    """What a converter gets: the bundle's graphs (``("trunk", entry)`` first, then the heads),
    their float ONNX files and models, the model input's name, the float values (model input +
    trunk outputs, logical names, NCHW, one frame each) of the calibration and held-back frames,
    the precisions, and a temporary folder."""

    graphs: list[tuple[str, GraphEntry]]
    paths: dict[str, Path]
    models: dict[str, onnx.ModelProto]
    input_name: str
    calib_values: list[dict[str, np.ndarray]]
    held_values: list[dict[str, np.ndarray]]
    precisions: tuple[str, ...]
    workdir: Path


@dataclass(frozen=True)
class TfliteConverter:
    """A way to make TFLite graphs for :func:`convert_bundle`: ``prepare`` returns the converter's
    environment (created on first use); ``convert`` returns the converted graphs by
    ``(graph, precision)``, each mapped to the logical tensor names. ``layout`` is written on the
    artifacts."""

    name: str
    layout: str
    prepare: Callable[[], ToolEnv]
    convert: Callable[[ToolEnv, ConversionInputs], dict[tuple[str, str], _TfliteGraph]]


@dataclass(frozen=True)
class TfliteResult:
    bundle_dir: Path
    decisions: list[TfliteDecision]
    calibration: str


def _fp32(entry: GraphEntry, what: str, bundle: Bundle) -> Path:
    artifact = entry.artifact("onnx", "fp32")
    if artifact is None:
        raise ConfigError(f"{bundle.root}: {what} has no ONNX fp32 artifact to convert")
    return bundle.path_of(artifact)


def convert_bundle(
    bundle_dir: str | Path,
    out_dir: str | Path | None = None,
    options: TfliteOptions | None = None,
    *,
    converter: TfliteConverter | None = None,
) -> TfliteResult:
    """Add TFLite artifacts (FP32, and INT8 where it passes the gate) to a bundle; ``converter``
    defaults to onnx2tf on the bundle's ONNX graphs."""
    options = options or TfliteOptions()
    converter = converter or ONNX2TF
    source, target, in_place = rewrite_target(bundle_dir, out_dir, options.force)
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
            raise ToolEnvError(f"cannot convert to TFLite: {exc}") from None
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

    calib_values, held_values = float_values(calib_frames), float_values(held_frames)
    reference = {
        h: [
            dict(zip(e.outputs, heads32[h].run(list(e.outputs), {i: v[i] for i in e.inputs}), strict=True))
            for v in held_values
        ]
        for h, e in manifest.heads.items()
    }
    blobs: dict[str, bytes] = {}
    decisions: list[TfliteDecision] = []
    with tempfile.TemporaryDirectory(prefix="edge-tflite-") as tmp:
        with steps.step(f"converting with {converter.name}") as step:
            job = ConversionInputs(
                graphs, paths, models, input_name, calib_values, held_values, options.precisions, Path(tmp)
            )
            converted = converter.convert(env, job)
            step.detail = f"{len(converted)} TFLite graphs"
        with steps.step("measuring each task against the float model") as measure:
            for precision in options.precisions:
                trunk = converted.get(("trunk", precision))
                trunk_values = None if trunk is None else _with(held_values, trunk.run(held_values))
                for graph, entry in graphs:
                    candidate = converted.get((graph, precision))
                    rel = f"tflite/{'trunk' if graph == 'trunk' else 'heads/' + graph}.{precision}.tflite"
                    decision = TfliteDecision(graph, precision, False, "", rel)
                    if candidate is None:
                        decision.reason = "not converted"
                        decisions.append(decision)
                        continue
                    decision.tensors, decision.size = candidate.tensors, candidate.path.stat().st_size
                    if graph == "trunk":
                        assert trunk_values is not None
                        for head, hentry in manifest.heads.items():
                            outs = [
                                dict(
                                    zip(
                                        hentry.outputs,
                                        heads32[head].run(list(hentry.outputs), {i: v[i] for i in hentry.inputs}),
                                        strict=True,
                                    )
                                )
                                for v in trunk_values
                            ]
                            decision.fidelity[head] = head_fidelity(
                                head, hentry.decoder, hentry.outputs, reference[head], outs, _size(manifest)
                            )
                    else:
                        feed_values = trunk_values if trunk_values is not None else held_values
                        outs = candidate.run(feed_values)
                        decision.fidelity[graph] = head_fidelity(
                            graph, entry.decoder, entry.outputs, reference[graph], outs, _size(manifest)
                        )
                    worst = decision.agreement if decision.agreement is not None else 1.0
                    decision.accepted = worst >= options.min_agreement
                    decision.reason = (
                        f"lowest agreement {worst:.4f} >= {options.min_agreement}"
                        if decision.accepted
                        else f"lowest agreement {worst:.4f} < {options.min_agreement}; not written (the runtime "
                        "falls back to the next precision, or to ONNX)"
                    )
                    if decision.accepted:
                        blobs[rel] = candidate.path.read_bytes()
                    decisions.append(decision)
            measure.detail = f"{sum(d.accepted for d in decisions)} of {len(decisions)} kept"
    with steps.step("writing the bundle") as step:
        made = {(d.graph, d.precision): d for d in decisions}

        def update(graph: str, entry: GraphEntry) -> GraphEntry:
            kept = [a for a in entry.artifacts if a.format != "tflite"]
            for precision in options.precisions:
                d = made.get((graph, precision))
                if d is not None and d.accepted:
                    kept.append(
                        Artifact(
                            format="tflite",
                            precision=precision,
                            path=d.path,
                            layout=converter.layout,
                            fidelity={
                                "agreement": None if d.agreement is None else round(d.agreement, 6),
                                "min_agreement": options.min_agreement,
                                "tasks": {t: f.to_dict() for t, f in d.fidelity.items()},
                            },
                            extra={"signature": SIGNATURE, "tensors": d.tensors},
                        )
                    )
            return replace(entry, artifacts=tuple(kept))

        new_manifest = replace(
            manifest,
            trunk=update("trunk", manifest.trunk),
            heads={name: update(name, entry) for name, entry in manifest.heads.items()},
        )
        files = {
            rel: (bundle.root / rel).read_bytes()
            for rel in manifest.files
            if not rel.startswith("tflite/") and rel not in (SIGNATURE_NAME, REPORT_NAME)
        }
        files.update(blobs)
        report = {
            "calibration": calib.source,
            "converter": env.spec.requirements,
            "converter_name": converter.name,
            "decisions": [d.to_dict() for d in decisions],
        }
        files[REPORT_NAME] = (json.dumps(report, indent=2) + "\n").encode()
        written = write_bundle(target, files, new_manifest, force=True if in_place else options.force)
        step.detail = f"{written} ({format_bytes(sum(len(b) for b in blobs.values()))} of TFLite graphs)"
    return TfliteResult(written, decisions, calib.source)


def _onnx2tf_graphs(env: ToolEnv, job: ConversionInputs) -> dict[tuple[str, str], _TfliteGraph]:
    """Each ONNX graph through onnx2tf: FP32, and full INT8 calibrated on ``job.calib_values``."""
    converted: dict[tuple[str, str], _TfliteGraph] = {}
    for graph, entry in job.graphs:
        workdir = job.workdir / graph
        workdir.mkdir()
        model_path = workdir / f"{graph}.onnx"
        model_path.write_bytes(job.paths[graph].read_bytes())
        inputs = list(entry.inputs) if graph != "trunk" else [job.input_name]
        calibration = None
        if "int8" in job.precisions:
            calibration = {name: np.concatenate([v[name] for v in job.calib_values]) for name in inputs}
        logger.info("      %s: onnx2tf%s", graph, " (FP32 + INT8)" if calibration else " (FP32)")
        out = run_onnx2tf(env, model_path, workdir, calibration)
        fp32 = load_converted(out / ONNX2TF_FILES["fp32"].format(stem=graph), job.models[graph], None, None)
        converted[(graph, "fp32")] = fp32
        if calibration:
            file = out / ONNX2TF_FILES["int8"].format(stem=graph)
            if not file.exists():
                logger.warning("%s: onnx2tf wrote no full-integer model; INT8 skipped", graph)
            else:
                converted[(graph, "int8")] = load_converted(file, job.models[graph], fp32, job.held_values[0])
    return converted


#: The default converter: onnx2tf in its own virtualenv, NHWC graphs.
ONNX2TF = TfliteConverter(name="onnx2tf", layout="NHWC", prepare=lambda: ensure_env("onnx2tf"), convert=_onnx2tf_graphs)


def _with(
    values: Sequence[Mapping[str, np.ndarray]], outputs: Sequence[Mapping[str, np.ndarray]]
) -> list[dict[str, np.ndarray]]:
    return [{**v, **o} for v, o in zip(values, outputs, strict=True)]


def _size(manifest: Any) -> tuple[int, int]:
    shape = manifest.input.shape
    return (int(shape[2]), int(shape[1])) if manifest.input.layout == "NHWC" else (int(shape[3]), int(shape[2]))


def format_tflite_report(result: TfliteResult) -> str:
    """One line per graph and precision."""
    lines = [f"calibration: {result.calibration}"]
    for d in result.decisions:
        agreement = "-" if d.agreement is None else f"{d.agreement:.4f}"
        verdict = "kept" if d.accepted else "not written"
        size = format_bytes(d.size)
        lines.append(f"  {d.graph:<10} {d.precision:<5} agreement {agreement:<7} {size:>10}  {verdict}: {d.reason}")
    return "\n".join(lines)


__all__ = [
    "ONNX2TF",
    "ConversionInputs",
    "TfliteConverter",
    "TfliteOptions",
    "TfliteResult",
    "convert_bundle",
    "format_tflite_report",
    "load_converted",
    "run_onnx2tf",
]
