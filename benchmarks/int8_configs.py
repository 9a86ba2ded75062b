"""Which ONNX Runtime CPU INT8 configuration of the trunk is fastest *and* still correct here?

For each model (the demo trunk, and a MobileNetV2-sized trunk, where the ratio
targets apply), in ONE interleaved run per model:

1. split the model as the other benchmarks do (``bench_support.split_for_bench``) and take
   ``trunk.fp32.onnx``; run ``quant_pre_process`` on it once;
2. calibrate and quantize it with ``onnxruntime.quantization.quantize_static`` for every
   variant of :data:`VARIANTS` (QDQ vs QOperator, U8/S8 activations, S8/U8 weights,
   per-channel, which ops, reduce_range), MinMax calibration;
3. load each variant at ``ORT_ENABLE_EXTENDED`` and ``ORT_ENABLE_ALL`` (the runtime's level),
   count the nodes of the written and of the optimised graph (QLinearConv, DequantizeLinear,
   convolutions left in float, layout Transposes), and compare every trunk output with the
   FP32 trunk on held-out inputs (cosine similarity, max abs error);
4. time FP32 and every variant, interleaved, with the runtime's session settings
   (``intra_op_num_threads`` = ``--threads``, ``session.intra_op.allow_spinning = 0``), plus
   a 1-thread column, and report p50 ratios INT8 / FP32 (FP32 at ``ORT_ENABLE_ALL``, the
   level the runtime loads with);
5. time FP32 again against the picks alone (``--confirm-seconds``): the grid turns some 60
   sessions round-robin, so every call starts with cold caches; here only FP32, the
   recommended graph and the fastest ones take turns.

The MobileNetV2 trunk runs first and decides the recommendation: among the correct graphs
whose p50 is within ``--tie`` (3 %) of the fastest, or that ORT optimises to the same graph
as one of those (QDQ and QOperator often end up identical: any gap between them is noise),
the first in the grid's order of preference (see :func:`_grid`), printed and stored under ``recommended`` as
``quantize_static`` keyword arguments plus session options. The demo trunk reports its
ratio for the same configuration and its own fastest.

A variant is *correct* when, for every trunk output, the cosine similarity with FP32 is at
least ``--min-cosine`` (0.99) on every held-out input (the minimum over inputs is judged).

Calibration data: the demo trunk gets frames like ``examples/train_demo_model.py``'s
``make_frames`` (a shape on a noisy gradient), put through the bundle's input spec by
``edge_runtime.frames.preprocess.Preprocessor``; the MobileNetV2 trunk (random weights) gets
random-normal tensors (its weights are random too: only the speed and a rough fidelity
signal are meaningful there).

Usage::

    python benchmarks/int8_configs.py --seconds 60 --confirm-seconds 15 \\
        --json benchmarks/results/int8_configs.x86_64.json
    python benchmarks/int8_configs.py --models demo --seconds 5     # a quick look

The MobileNetV2-sized model is built by ``benchmarks/mobilenet_multitask.py`` when
``build/mbv2_multitask.onnx`` is missing (needs torch).
"""

from __future__ import annotations

import argparse
import collections
import functools
import hashlib
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from bench_support import ROOT, package_version, progress, split_for_bench
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from edge_runtime.bundle.reader import read_manifest
from edge_runtime.frames.preprocess import Preprocessor
from edge_runtime.ops.bench import Timing, environment, format_timings, run_interleaved, write_report

logger = logging.getLogger("int8_configs")

MBV2_MODEL = ROOT / "build" / "mbv2_multitask.onnx"
MODELS = ("demo", "mbv2")
CONV_OPS = ("Conv", "MatMul", "Gemm")

#: Load-time graph optimisation levels compared (the runtime uses ORT_ENABLE_ALL).
LEVELS = {
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
#: The FP32 case every ratio divides by: the trunk as the runtime loads it today.
BASELINE = "fp32/all"
#: Ops counted in the node summaries (anything else is still in the full counts in the JSON).
FLOAT_CONVS = {"Conv", "FusedConv"}
QUANT_CONVS = {"QLinearConv", "ConvInteger", "NhwcQLinearConv"}


@dataclass(frozen=True)
class Variant:
    """One set of ``quantize_static`` arguments.

    ``activation`` / ``weight`` are ``QuantType`` member names (``QUInt8``, ``QInt8``);
    ``ops`` is ``"all"`` (every op ORT can quantize) or ``"conv"`` (:data:`CONV_OPS` only).
    """

    name: str
    quant_format: str
    activation: str
    weight: str
    per_channel: bool
    ops: str = "all"
    reduce_range: bool = False

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``quantize_static`` (besides the model paths and the reader)."""
        return {
            "quant_format": QuantFormat[self.quant_format],
            "activation_type": QuantType[self.activation],
            "weight_type": QuantType[self.weight],
            "per_channel": self.per_channel,
            "reduce_range": self.reduce_range,
            "op_types_to_quantize": list(CONV_OPS) if self.ops == "conv" else None,
        }

    def describe(self) -> dict[str, Any]:
        """The same arguments as JSON-able values."""
        return {k: (v.name if isinstance(v, (QuantFormat, QuantType)) else v) for k, v in self.kwargs().items()}


def _grid() -> list[Variant]:
    """The grid: a QDQ and a QOperator family around U8 activations + S8 per-channel weights.

    Each family varies one thing at a time from its centre (``*-u8s8-pc``): per-tensor
    weights, S8 activations, reduce_range, Conv/MatMul/Gemm only; QOperator also tries U8
    weights (per-tensor and per-channel; onnxruntime 1.32 writes per-channel Conv weights as
    INT8 whatever ``weight_type`` says, so ``qop-u8u8-pc`` is ``qop-u8s8-pc`` again: the pair
    shows the timing noise between identical graphs). Not crossed further: about 14 variants
    x 2 optimisation levels x 2 thread counts, timed in one interleaved run.

    The order is also the preference among variants whose speed ties (``--tie``): QDQ first
    (what issue 5 asks for, and the format other execution providers read), per-channel before
    per-tensor (finer weight scales for trained weights), U8 activations (x86's u8s8 kernels),
    full range, every op quantized.
    """
    variants = []
    for fmt, short in (("QDQ", "qdq"), ("QOperator", "qop")):
        variants += [
            Variant(f"{short}-u8s8-pc", fmt, "QUInt8", "QInt8", True),
            Variant(f"{short}-u8s8-pt", fmt, "QUInt8", "QInt8", False),
            Variant(f"{short}-s8s8-pc", fmt, "QInt8", "QInt8", True),
            Variant(f"{short}-s8s8-pt", fmt, "QInt8", "QInt8", False),
            Variant(f"{short}-u8s8-pc-rr", fmt, "QUInt8", "QInt8", True, reduce_range=True),
            Variant(f"{short}-u8s8-pc-conv", fmt, "QUInt8", "QInt8", True, ops="conv"),
        ]
    variants += [
        Variant("qop-u8u8-pc", "QOperator", "QUInt8", "QUInt8", True),
        Variant("qop-u8u8-pt", "QOperator", "QUInt8", "QUInt8", False),
    ]
    return variants


VARIANTS: tuple[Variant, ...] = tuple(_grid())


class ArrayReader(CalibrationDataReader):
    """ONNX Runtime's calibration contract over a list of ready input tensors."""

    def __init__(self, input_name: str, tensors: Sequence[np.ndarray]) -> None:
        self.input_name = input_name
        self.tensors = list(tensors)
        self._it: Iterator[np.ndarray] = iter(self.tensors)

    def get_next(self) -> dict[str, np.ndarray] | None:
        tensor = next(self._it, None)
        return None if tensor is None else {self.input_name: tensor}

    def rewind(self) -> None:
        self._it = iter(self.tensors)


def session(
    model: Path, threads: int, level: ort.GraphOptimizationLevel, optimized: Path | None = None
) -> ort.InferenceSession:
    """A CPU session with the runtime's settings (spinning off, ``threads`` intra-op threads)."""
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = level
    options.log_severity_level = 3
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Node counts by op type (domain-qualified when not the default one)."""
    counts = collections.Counter(
        n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}" for n in model.graph.node
    )
    return dict(sorted(counts.items()))


def summarise_ops(counts: dict[str, int]) -> dict[str, int]:
    """Quantised convs, float convs, Q/DQ and Transposes, whatever their domain."""

    def total(names: set[str]) -> int:
        return sum(n for op, n in counts.items() if op.rsplit(".", 1)[-1] in names)

    return {
        "qconv": total(QUANT_CONVS),
        "float_conv": total(FLOAT_CONVS),
        "quantize": total({"QuantizeLinear", "DynamicQuantizeLinear"}),
        "dequantize": total({"DequantizeLinear"}),
        "transpose": total({"Transpose"}),
        "reorder": total({"ReorderInput", "ReorderOutput"}),
    }


def qdq_float_convs(model: onnx.ModelProto) -> int:
    """Convs of a QDQ file whose weight is not fed by a DequantizeLinear (left in float)."""
    producers = {out: n.op_type for n in model.graph.node for out in n.output}
    return sum(1 for n in model.graph.node if n.op_type == "Conv" and producers.get(n.input[1]) != "DequantizeLinear")


def fingerprint(model: onnx.ModelProto) -> str:
    """A hash of what a graph computes, names aside: ops in order, attributes, initializer values
    and which tensor feeds which node. Two variants that ORT optimises to the same graph share it."""
    initializers = {t.name: t for t in model.graph.initializer}
    tensor_ids: dict[str, int] = {i.name: k for k, i in enumerate(model.graph.input)}
    digest = hashlib.sha256()
    for node in model.graph.node:
        digest.update(f"{node.domain}.{node.op_type}|".encode())
        for attribute in sorted(str(a) for a in node.attribute):
            digest.update(attribute.encode())
        for name in node.input:
            if name in initializers:
                value = numpy_helper.to_array(initializers[name])
                digest.update(f"{value.dtype}{value.shape}".encode() + value.tobytes())
            else:
                digest.update(f"<{tensor_ids.get(name, -1)}>".encode())
        for name in node.output:
            tensor_ids.setdefault(name, len(tensor_ids))
    return digest.hexdigest()[:16]


def weight_dtypes(model: onnx.ModelProto) -> list[str]:
    """Element types of the quantized weights (8-bit initializers of rank >= 2) as written."""
    eight_bit = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    found = {t.data_type for t in model.graph.initializer if len(t.dims) >= 2 and t.data_type in eight_bit}
    return sorted(onnx.TensorProto.DataType.Name(t) for t in found)


def compare(
    reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]], names: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Per output: min/mean cosine over inputs, max abs error, and the reference's max magnitude."""
    report = {}
    for k, name in enumerate(names):
        cosines, errors, magnitude = [], [], 0.0
        for ref_outputs, out in zip(reference, candidate, strict=True):
            a = ref_outputs[k].astype(np.float64).ravel()
            b = out[k].astype(np.float64).ravel()
            denom = np.linalg.norm(a) * np.linalg.norm(b)
            cosines.append(float(a @ b / denom) if denom > 0 else float(np.array_equal(a, b)))
            errors.append(float(np.max(np.abs(a - b))))
            magnitude = max(magnitude, float(np.max(np.abs(a))))
        report[name] = {
            "cosine_min": min(cosines),
            "cosine_mean": float(np.mean(cosines)),
            "max_abs_err": max(errors),
            "ref_max_abs": magnitude,
        }
    return report


def demo_inputs(bundle: Path, n: int, seed: int) -> list[np.ndarray]:
    """``n`` demo-like frames (``make_frames``) through the bundle's own input spec."""
    sys.path.insert(0, str(ROOT))
    try:
        from examples.train_demo_model import make_frames
    except ImportError as exc:
        raise SystemExit(f"the demo calibration frames need examples/train_demo_model.py and torch: {exc}") from None
    pre = Preprocessor(read_manifest(bundle).input)
    return [pre(image)[0] for image in make_frames(n, seed)[0]]


def normal_inputs(bundle: Path, n: int, seed: int) -> list[np.ndarray]:
    """``n`` random-normal tensors of the bundle's input shape (batch 1)."""
    spec = read_manifest(bundle).input
    shape = (1, *spec.shape[1:])
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(n)]


@dataclass
class Loaded:
    """A graph under test: its file and, per (level, threads), a session or the load error."""

    name: str
    path: Path
    sessions: dict[tuple[str, int], ort.InferenceSession]
    errors: dict[str, str]


def quantize_variants(
    trunk: Path, work: Path, variants: Sequence[Variant], reader: ArrayReader, model: str
) -> tuple[dict[str, Path], dict[str, dict[str, Any]]]:
    """``quant_pre_process`` once, then ``quantize_static`` per variant; returns paths and notes."""
    pre = work / "trunk.pre.onnx"
    t0 = time.perf_counter()
    quant_pre_process(str(trunk), str(pre))
    logger.info("%s: quant_pre_process %.1f s", model, time.perf_counter() - t0)
    paths: dict[str, Path] = {}
    notes: dict[str, dict[str, Any]] = {}
    for i, variant in enumerate(variants, 1):
        out = work / f"trunk.{variant.name}.onnx"
        t0 = time.perf_counter()
        reader.rewind()
        try:
            quantize_static(str(pre), str(out), reader, **variant.kwargs())
        except Exception as exc:
            notes[variant.name] = {"quantize_error": f"{type(exc).__name__}: {exc}"}
            logger.warning("%s: [%d/%d] %s: quantize_static failed: %s", model, i, len(variants), variant.name, exc)
            continue
        written = onnx.load(str(out))
        counts = op_counts(written)
        summary = summarise_ops(counts)
        if variant.quant_format == "QDQ":
            summary["float_conv"] = qdq_float_convs(written)
        paths[variant.name] = out
        weights = weight_dtypes(written)
        notes[variant.name] = {
            "file_ops": counts,
            "file_summary": summary,
            "weight_dtypes": weights,
            "bytes": out.stat().st_size,
        }
        logger.info(
            "%s: [%d/%d] %-18s quantized in %.1f s (%d kB, %s weights; file: %s)",
            model, i, len(variants), variant.name, time.perf_counter() - t0, out.stat().st_size // 1024,
            "+".join(weights), ", ".join(f"{k} {v}" for k, v in summary.items() if v),
        )  # fmt: skip
    return paths, notes


def load_all(
    graphs: dict[str, Path], thread_counts: Sequence[int], work: Path, notes: dict[str, dict[str, Any]], model: str
) -> dict[str, Loaded]:
    """Load every graph at every level and thread count; note optimised-graph node counts."""
    loaded = {}
    for name, path in graphs.items():
        entry = Loaded(name, path, {}, {})
        note = notes.setdefault(name, {})
        for level_name, level in LEVELS.items():
            optimized = work / f"{name}.{level_name}.optimized.onnx"
            try:
                for threads in thread_counts:
                    first = threads == thread_counts[0]
                    entry.sessions[level_name, threads] = session(path, threads, level, optimized if first else None)
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}".splitlines()[0]
                entry.errors[level_name] = message
                for threads in thread_counts:
                    entry.sessions.pop((level_name, threads), None)
                logger.warning("%s: %s at %s does not load: %s", model, name, level_name, message)
                continue
            optimized_model = onnx.load(str(optimized))
            counts = op_counts(optimized_model)
            note.setdefault("optimized_fingerprint", {})[level_name] = fingerprint(optimized_model)
            note.setdefault("optimized_ops", {})[level_name] = counts
            note.setdefault("optimized_summary", {})[level_name] = summarise_ops(counts)
        note["load_errors"] = dict(entry.errors)
        loaded[name] = entry
    return loaded


def model_source(model: str, args: argparse.Namespace) -> Path:
    """The original ONNX model of ``model``; the MobileNetV2-sized one is built when missing."""
    if model == "demo":
        return ROOT / "examples" / "demo_multitask.onnx"
    source: Path = args.mbv2_model
    if not source.exists():
        logger.info("%s missing: building it with benchmarks/mobilenet_multitask.py (torch)", source)
        from mobilenet_multitask import main as build_mbv2

        build_mbv2(["-o", str(source)])
    return source


@dataclass
class ModelRun:
    """One model's grid: graph files, notes per graph (JSON-able), timings and the timing input."""

    model: str
    source: Path
    input_name: str
    feed: dict[str, np.ndarray]
    graphs: dict[str, Path]
    notes: dict[str, dict[str, Any]]
    timings: dict[str, Timing]
    calibration: dict[str, Any]


def run_model(model: str, args: argparse.Namespace, thread_counts: Sequence[int], tmp: Path) -> ModelRun:
    """Split, quantize every variant, load, check fidelity, then time every case interleaved."""
    source = model_source(model, args)
    work = tmp / model
    bundle = split_for_bench(work / "bundle", source)
    trunk = bundle / "trunk.fp32.onnx"
    input_name = read_manifest(bundle).input.name
    make_inputs = demo_inputs if model == "demo" else normal_inputs
    inputs = make_inputs(bundle, args.calib + args.held_out, args.seed)
    calib, held_out = inputs[: args.calib], inputs[args.calib :]

    paths, notes = quantize_variants(trunk, work, VARIANTS, ArrayReader(input_name, calib), model)
    notes["fp32"] = {"bytes": trunk.stat().st_size}
    graphs = {"fp32": trunk, **paths}
    loaded = load_all(graphs, thread_counts, work, notes, model)

    reference_session = session(trunk, 1, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC)
    output_names = [o.name for o in reference_session.get_outputs()]
    reference = [reference_session.run(None, {input_name: x}) for x in held_out]
    for name, entry in loaded.items():
        for level in LEVELS:
            sess = entry.sessions.get((level, thread_counts[0]))
            if sess is not None:
                fidelity = compare(reference, [sess.run(None, {input_name: x}) for x in held_out], output_names)
                correct = all(v["cosine_min"] >= args.min_cosine for v in fidelity.values())
                notes[name].setdefault("fidelity", {})[level] = {"correct": correct, "outputs": fidelity}

    feed = {input_name: held_out[0]}
    cases: dict[str, Callable[[], Any]] = {}
    for threads in thread_counts:
        for name, entry in loaded.items():
            for level in LEVELS:
                sess = entry.sessions.get((level, threads))
                if sess is not None:
                    cases[f"{model}/{name}/{level}/t{threads}"] = functools.partial(sess.run, None, feed)
    logger.info("%s: timing %d cases interleaved for %.0f s", model, len(cases), args.seconds)
    timings = run_interleaved(
        cases, warmup=args.warmup, seconds=args.seconds, progress=progress(model, logger, every=10.0)
    )
    data = "make_frames + Preprocessor(bundle input spec)" if model == "demo" else "random normal N(0, 1)"
    calibration = {"inputs": args.calib, "held_out": args.held_out, "data": data, "shape": list(held_out[0].shape)}
    return ModelRun(model, source, input_name, feed, graphs, notes, timings, calibration)


def confirm(run: ModelRun, picks: Sequence[str], args: argparse.Namespace) -> dict[str, Timing]:
    """FP32 against the picked ``variant/level`` graphs alone, interleaved (few sessions: warmer caches)."""
    cases: dict[str, Callable[[], Any]] = {}
    for pick in ["fp32/all", *dict.fromkeys(picks)]:
        name, level = pick.split("/")
        sess = session(run.graphs[name], args.threads, LEVELS[level])
        cases[f"{run.model}/confirm/{pick}/t{args.threads}"] = functools.partial(sess.run, None, run.feed)
    logger.info("%s: %s against fp32/all alone for %.0f s", run.model, ", ".join(picks), args.confirm_seconds)
    return run_interleaved(cases, warmup=args.warmup, seconds=args.confirm_seconds)


def ratios_of(timings: dict[str, Timing]) -> dict[str, float]:
    """p50 of every case over the FP32 baseline (:data:`BASELINE`) of the same run and thread count."""
    ratios = {}
    for key, timing in timings.items():
        *prefix, _name, _level, threads = key.split("/")
        base = timings.get("/".join([*prefix, BASELINE, threads]))
        if base is not None:
            ratios[key] = timing.p50_ms / base.p50_ms
    return ratios


def worst(fidelity: dict[str, Any]) -> tuple[float, float]:
    """The lowest cosine and the largest max-abs error relative to the output's range, over outputs."""
    outputs = fidelity["outputs"].values()
    cosine = min(v["cosine_min"] for v in outputs)
    relative = max(v["max_abs_err"] / v["ref_max_abs"] if v["ref_max_abs"] else 0.0 for v in outputs)
    return cosine, relative


def table(run: ModelRun, ratios: dict[str, float], thread_counts: Sequence[int]) -> str:
    """One row per (graph, level): p50 and ratio per thread count, fidelity, optimised-graph ops."""
    cols = [f"p50 t{t}" for t in thread_counts] + [f"ratio t{t}" for t in thread_counts]
    header = f"{'graph':<18} {'level':<9} " + " ".join(f"{c:>9}" for c in cols)
    header += f" {'cos min':>8} {'rel err':>8} {'ok':>3}  optimised graph"
    rows = [f"{run.model}: p50 (ms) and INT8 / FP32 ({BASELINE}) p50 ratio", header]
    for name, note in run.notes.items():
        if "quantize_error" in note:
            rows.append(f"{name:<18} {'-':<9} quantize_static failed: {note['quantize_error'][:100]}")
            continue
        for level in LEVELS:
            if level in note["load_errors"]:
                rows.append(f"{name:<18} {level:<9} does not load: {note['load_errors'][level][:100]}")
                continue
            keys = [f"{run.model}/{name}/{level}/t{t}" for t in thread_counts]
            cells = [f"{run.timings[k].p50_ms:>9.3f}" for k in keys] + [f"{ratios[k]:>9.3f}" for k in keys]
            fidelity = note["fidelity"][level]
            cosine, relative = worst(fidelity)
            ops = ", ".join(f"{k} {v}" for k, v in note["optimized_summary"][level].items() if v)
            ok = "yes" if fidelity["correct"] else "NO"
            rows.append(f"{name:<18} {level:<9} {' '.join(cells)} {cosine:>8.5f} {relative:>8.4f} {ok:>3}  {ops}")
    return "\n".join(rows)


def ranked_correct(run: ModelRun, ratios: dict[str, float], threads: int) -> list[tuple[float, str]]:
    """``(p50 ratio, "variant/level")`` of the correct INT8 graphs, fastest first."""
    return sorted(
        (ratios[key], f"{name}/{level}")
        for name, note in run.notes.items()
        if name != "fp32"
        for level, fidelity in note.get("fidelity", {}).items()
        if fidelity["correct"] and (key := f"{run.model}/{name}/{level}/t{threads}") in ratios
    )


def identical_groups(run: ModelRun) -> list[list[str]]:
    """``variant/level`` keys whose optimised graphs are the same (:func:`fingerprint`), 2 or more."""
    groups: dict[str, list[str]] = collections.defaultdict(list)
    for name, note in run.notes.items():
        for level, digest in note.get("optimized_fingerprint", {}).items():
            groups[digest].append(f"{name}/{level}")
    return [keys for keys in groups.values() if len(keys) > 1]


def preferred(ranked: list[tuple[float, str]], tie: float, groups: Sequence[Sequence[str]]) -> tuple[str, list[str]]:
    """Among the graphs within ``tie`` (relative) of the fastest, and those that ORT optimises to
    the same graph as one of them, the first in :data:`VARIANTS` order, ``all`` before
    ``extended``; also returns that tied set, fastest first."""
    tied = [key for ratio, key in ranked if ratio <= ranked[0][0] * (1.0 + tie)]
    same = {key for group in groups if set(group) & set(tied) for key in group}
    tied += [key for _, key in ranked if key in same and key not in tied]
    order = {v.name: i for i, v in enumerate(VARIANTS)}
    levels = list(LEVELS)[::-1]  # "all" (the runtime's level) first
    name_level = [key.split("/") for key in tied]
    name, level = min(name_level, key=lambda nl: (order[nl[0]], levels.index(nl[1])))
    return f"{name}/{level}", tied


def spread(
    groups: Sequence[Sequence[str]], model: str, ratios: dict[str, float], thread_counts: Sequence[int]
) -> list[tuple[float, float]]:
    """The lowest and highest p50 ratio within each group of identical graphs (first thread count)."""
    values = [[ratios[f"{model}/{key}/t{thread_counts[0]}"] for key in group] for group in groups]
    return [(min(v), max(v)) for v in values]


def recommendation(variant: Variant, level: str, threads: int) -> dict[str, Any]:
    """The configuration for the quantizer: ``quantize_static`` kwargs + session options."""
    return {
        "quant_pre_process": True,
        "quantize_static": {**variant.describe(), "calibrate_method": "MinMax"},
        "session": {
            "graph_optimization_level": LEVELS[level].name,
            "intra_op_num_threads": threads,
            "session.intra_op.allow_spinning": "0",
        },
    }


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def cpu_flags() -> dict[str, bool]:
    """The CPU's SIMD integer dot-product extensions, from /proc/cpuinfo (x86 flag names)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return {f: f in flags for f in ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--mbv2-model", type=Path, default=MBV2_MODEL, help="the MobileNetV2-sized model")
    parser.add_argument("--calib", type=int, default=24, help="calibration inputs (16-32 is typical)")
    parser.add_argument("--held-out", type=int, default=8, help="held-out inputs for the fidelity check")
    parser.add_argument("--min-cosine", type=float, default=0.99, help="a variant is correct at or above this")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--single-thread", action=argparse.BooleanOptionalAction, default=True, help="add a 1-thread column"
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="timing budget of the grid, per model")
    parser.add_argument("--confirm-seconds", type=float, default=15.0, help="FP32 vs the picks alone (0: skip)")
    parser.add_argument("--tie", type=float, default=0.03, help="relative p50 band counted as a tie")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static warns on the root logger per call
    logger.setLevel(logging.INFO)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or set(models) - set(MODELS) or args.calib < 1 or args.held_out < 1:
        parser.error(f"--models takes {', '.join(MODELS)}; --calib and --held-out must be >= 1")
    models.sort(key=MODELS[::-1].index)  # the MobileNetV2 trunk first: it decides the recommendation
    thread_counts = [args.threads] + ([1] if args.single_thread and args.threads != 1 else [])
    by_name = {v.name: v for v in VARIANTS}

    timings: dict[str, Timing] = {}
    results: dict[str, Any] = {}
    recommended: dict[str, Any] = {}
    lead: dict[str, str] = {}  # the first model's "pick" and "fastest"
    with tempfile.TemporaryDirectory(prefix="int8_configs_") as tmp:
        for model in models:
            run = run_model(model, args, thread_counts, Path(tmp))
            ratios = ratios_of(run.timings)
            ranked = {t: ranked_correct(run, ratios, t) for t in thread_counts}
            main_ranked = ranked[args.threads]
            groups = identical_groups(run)
            if main_ranked and not lead:
                pick, tied = preferred(main_ranked, args.tie, groups)
                lead = {"model": model, "pick": pick, "fastest": main_ranked[0][1]}
                recommended = {"chosen_on": model, "variant": pick, "tied_with_fastest": tied}
            picks = [lead["pick"], lead["fastest"]] if lead else []
            picks = list(dict.fromkeys(picks + [key for _, key in main_ranked[:1]]))  # + this model's fastest
            if args.confirm_seconds > 0 and picks:
                run.timings.update(confirm(run, picks, args))
            timings.update(run.timings)
            results[model] = {
                "source": str(run.source.relative_to(ROOT) if run.source.is_relative_to(ROOT) else run.source),
                "calibration": run.calibration,
                "graphs": run.notes,
                "correct_by_speed": {f"t{t}": [[round(r, 4), k] for r, k in ranked[t]] for t in thread_counts},
                "identical_after_optimisation": groups,
                "identical_spread": spread(groups, run.model, ratios, thread_counts),
            }
            print(table(run, ratios, thread_counts))
            print(f"{model}: identical graphs after ORT's optimiser (their timing spread is noise):")
            for group, (low, high) in zip(groups, results[model]["identical_spread"], strict=True):
                print(f"  {', '.join(group)}: p50 ratios {low:.3f} to {high:.3f} at t{args.threads}")
            print()
    ratios = ratios_of(timings)
    print(format_timings(timings))
    print()
    if recommended:
        pick, t = recommended["variant"], args.threads
        name, level = pick.split("/")
        recommended["config"] = recommendation(by_name[name], level, t)
        print(
            f"{lead['model']}, {t} threads: fastest correct INT8 {lead['fastest']}; within {args.tie:.0%} of it,"
            " or optimised to the same graph as one of those:"
        )
        print(f"  {', '.join(recommended['tied_with_fastest'])}")
        print(f"recommended (the first of those in the grid's order of preference): {pick}")
        for m in models:
            graph_ok = results[m]["graphs"][name].get("fidelity", {}).get(level, {}).get("correct")
            fastest = results[m]["correct_by_speed"][f"t{t}"][:1]
            recommended.setdefault("per_model", {})[m] = entry = {
                "correct": graph_ok,
                "ratio_grid": ratios.get(f"{m}/{pick}/t{t}"),
                "ratio_confirm": ratios.get(f"{m}/confirm/{pick}/t{t}"),
                "fastest_correct": fastest[0][1] if fastest else None,
                "fastest_ratio_grid": fastest[0][0] if fastest else None,
            }
            print(
                f"  {m}: correct {graph_ok}; INT8/FP32 p50 {_num(entry['ratio_grid'])} in the grid,"
                f" {_num(entry['ratio_confirm'])} alone with FP32; fastest correct there"
                f" {entry['fastest_correct']} ({_num(entry['fastest_ratio_grid'])})"
            )
        print(f"config: {recommended['config']}")
    else:
        print(f"no INT8 variant reaches cosine >= {args.min_cosine} on {models[0]}")

    if args.json:
        meta = {
            "benchmark": "int8_configs",
            "models": models,
            "seconds": args.seconds,
            "confirm_seconds": args.confirm_seconds,
            "warmup": args.warmup,
            "min_cosine": args.min_cosine,
            "tie": args.tie,
            "baseline": BASELINE,
            "thread_counts": thread_counts,
            "onnx": package_version("onnx"),
            "cpu_flags": cpu_flags(),
            "environment": environment(args.threads),
            "variants": {v.name: v.describe() for v in VARIANTS},
            "results": results,
            "recommended": recommended,
        }
        print(f"wrote {write_report(args.json, timings, ratios, meta)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
