"""TFLite graphs in the exporter: loaded with LiteRT, run by logical tensor names, gated, written.

Every TFLite converter (onnx2tf: :mod:`exporter.onnx2tf_converter`; litert-torch:
:mod:`exporter.litert_torch`; Keras: :mod:`exporter.frontends.keras`) hands back
:class:`TfliteGraph` objects: a graph's ``serving_default`` signature runner — or, for a file
without that signature, an :class:`InterpreterRunner` over the interpreter's own input and
output tensors (``signature`` None) — with, per logical tensor (the manifest's names), the
signature key (or interpreter tensor name), the permutation from the ONNX layout
(``perm``, None for none), the dtype and the ``[scale, zero_point]`` of quantized tensors
(:func:`tensor_info`). :meth:`TfliteGraph.run` takes and gives float values in the logical
layout, quantizing and transposing on the way.

:func:`tflite_decision` puts one converted graph through the fidelity gate
(:mod:`exporter.gate`), and :func:`tflite_artifact` is its manifest artifact. The converter
interface of :func:`exporter.tflite.convert_bundle` is :class:`TfliteConverter`, fed a
:class:`ConversionInputs`.

Example::

    runner = signature_runner(Path("trunk.int8.tflite"))
    inputs, outputs = signature_details(runner)
    tensors = {"image": tensor_info(inputs["image"], "image", [0, 2, 3, 1]), ...}
    values = TfliteGraph(path, tensors, ["image"], ["features"], runner).run([{"image": frame}])
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edge_runtime.bundle.specs import Artifact, GraphEntry
from edge_runtime.errors import BackendUnavailableError, ModelError
from exporter.fidelity import Samples
from exporter.gate import Gate, GateDecision
from exporter.toolenv import ToolEnv

#: The signature every converted graph is run through.
SIGNATURE = "serving_default"


def open_interpreter(path: Path) -> Any:
    """A LiteRT interpreter for the model at ``path`` (2 threads)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise BackendUnavailableError(
            "measuring TFLite artifacts needs LiteRT: pip install 'edge-runtime[tflite]'"
        ) from exc
    try:
        return Interpreter(model_path=str(path), num_threads=2)
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"{path.name}: LiteRT cannot load it: {exc}") from exc


def signature_runner(path: Path) -> Any:
    """The ``serving_default`` signature runner of the model at ``path``; ModelError without one."""
    interpreter = open_interpreter(path)
    signatures = interpreter.get_signature_list()
    if SIGNATURE not in signatures:
        raise ModelError(f"{path.name}: no {SIGNATURE!r} signature (has {', '.join(signatures) or 'none'})")
    return interpreter.get_signature_runner(SIGNATURE)


class InterpreterRunner:
    """A signature runner's interface over an interpreter's own inputs and outputs, keyed by
    tensor name: for a converted file without a ``serving_default`` signature. The device
    runtime binds such an artifact the same way (``signature`` null in the manifest)."""

    def __init__(self, interpreter: Any, path: Path) -> None:
        self._interpreter = interpreter
        interpreter.allocate_tensors()
        self._inputs = self._by_name(interpreter.get_input_details(), path, "inputs")
        self._outputs = self._by_name(interpreter.get_output_details(), path, "outputs")
        self._shapes = {d["index"]: tuple(int(n) for n in d["shape"]) for d in self._inputs.values()}

    @staticmethod
    def _by_name(details: Sequence[Mapping[str, Any]], path: Path, kind: str) -> dict[str, Any]:
        named = {d["name"]: d for d in details}
        if len(named) != len(details):
            names = [d["name"] for d in details]
            raise ModelError(f"{path.name}: without a signature, two {kind} share a tensor name ({names})")
        return named

    def get_input_details(self) -> dict[str, Any]:
        """The input details by interpreter tensor name."""
        return dict(self._inputs)

    def get_output_details(self) -> dict[str, Any]:
        """The output details by interpreter tensor name."""
        return dict(self._outputs)

    def __call__(self, **feeds: np.ndarray) -> dict[str, np.ndarray]:
        """Set the inputs (by tensor name), invoke, return every output by tensor name."""
        interpreter = self._interpreter
        resized = False
        for name, value in feeds.items():
            detail = self._inputs[name]
            if tuple(value.shape) != self._shapes[detail["index"]]:
                interpreter.resize_tensor_input(detail["index"], list(value.shape), strict=True)
                self._shapes[detail["index"]] = tuple(value.shape)
                resized = True
        if resized:
            interpreter.allocate_tensors()
        for name, value in feeds.items():
            interpreter.set_tensor(self._inputs[name]["index"], np.ascontiguousarray(value))
        interpreter.invoke()
        return {name: interpreter.get_tensor(d["index"]).copy() for name, d in self._outputs.items()}


def open_runner(path: Path, *, use_signature: bool = True) -> tuple[Any, str | None]:
    """The runner of the model at ``path`` and the signature it runs through: the
    ``serving_default`` signature runner when the file has one (and ``use_signature``), else an
    :class:`InterpreterRunner` keyed by interpreter tensor names (signature None)."""
    interpreter = open_interpreter(path)
    if use_signature and SIGNATURE in interpreter.get_signature_list():
        return interpreter.get_signature_runner(SIGNATURE), SIGNATURE
    return InterpreterRunner(interpreter, path), None


def signature_details(runner: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The runner's input and output details by signature key (by tensor name for an
    :class:`InterpreterRunner`)."""
    return runner.get_input_details(), runner.get_output_details()


def onnx_io_shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """The shape of every graph input and output of ``model`` (None for a symbolic dimension)."""
    shapes: dict[str, list[int | None]] = {}
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return shapes


def tensor_info(detail: Mapping[str, Any], key: str, perm: list[int] | None) -> dict[str, Any]:
    """The manifest's record of one signature tensor: ``{"name", "perm", "dtype", "quantization"}``."""
    scale, zero = detail.get("quantization", (0.0, 0))
    quantized = np.dtype(detail["dtype"]).kind in "iu" and scale != 0.0
    return {
        "name": key,
        "perm": perm,
        "dtype": np.dtype(detail["dtype"]).name,
        "quantization": [float(scale), int(zero)] if quantized else None,
    }


def quantize_value(value: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
    """A float value as the tensor ``info`` takes it (its dtype; scale and zero point when quantized)."""
    if info["quantization"] is None:
        return value.astype(np.dtype(info["dtype"]))
    scale, zero = info["quantization"]
    dtype = np.dtype(info["dtype"])
    limits = np.iinfo(dtype)
    return np.clip(np.round(value / scale) + zero, limits.min, limits.max).astype(dtype)


def dequantize_value(value: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
    """The float32 value of tensor ``info``'s raw ``value``."""
    if info["quantization"] is None:
        return value.astype(np.float32)
    scale, zero = info["quantization"]
    return ((value.astype(np.float32) - zero) * scale).astype(np.float32)


@dataclass
class TfliteGraph:
    """A converted graph run through its signature (or, ``signature`` None, through the
    interpreter's tensors by name), with the logical tensor map."""

    path: Path
    tensors: dict[str, dict[str, Any]]  # logical name -> {"name", "perm", "dtype", "quantization"}
    inputs: list[str]
    outputs: list[str]
    runner: Any = field(repr=False, default=None)
    signature: str | None = SIGNATURE

    def run(self, feeds: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """The float outputs by logical name for each feed (float values by logical name)."""
        results = []
        for feed in feeds:
            args = {}
            for name in self.inputs:
                info = self.tensors[name]
                value = np.asarray(feed[name], dtype=np.float32)
                if info["perm"] is not None:
                    value = value.transpose(info["perm"])
                args[info["name"]] = quantize_value(value, info)
            raw = self.runner(**args)
            out = {}
            for name in self.outputs:
                info = self.tensors[name]
                value = dequantize_value(np.asarray(raw[info["name"]]), info)
                if info["perm"] is not None:
                    value = value.transpose(np.argsort(info["perm"]))
                out[name] = value
            results.append(out)
        return results


def tflite_path(graph: str, precision: str) -> str:
    """Where a TFLite graph goes in the bundle: ``tflite/trunk.int8.tflite``, ``tflite/heads/<name>.fp32.tflite``."""
    return f"tflite/{'trunk' if graph == 'trunk' else 'heads/' + graph}.{precision}.tflite"


def tflite_artifact(
    path: str,
    precision: str,
    layout: str,
    tensors: Mapping[str, Any],
    fidelity: Mapping[str, Any] | None,
    signature: str | None = SIGNATURE,
) -> Artifact:
    """The manifest artifact of a TFLite graph: its signature and logical tensor map in ``extra``.
    ``signature`` None (a file without ``serving_default``): the map's names are interpreter
    tensor names, which the runtime binds directly."""
    return Artifact(
        format="tflite",
        precision=precision,
        path=path,
        layout=layout,
        fidelity=None if fidelity is None else dict(fidelity),
        extra={"signature": signature, "tensors": dict(tensors)},
    )


@dataclass
class TfliteDecision(GateDecision):
    """The gate's decision on one TFLite graph at one precision, with its tensor map and the
    signature the map's names belong to (None: interpreter tensor names)."""

    tensors: dict[str, dict[str, Any]] = field(default_factory=dict)
    signature: str | None = SIGNATURE

    def to_dict(self) -> dict[str, Any]:
        return {**self.report_row(), "signature": self.signature, "tensors": self.tensors}


def paired_tflite_latency_ms(
    candidate: TfliteGraph, reference: TfliteGraph, feed: Mapping[str, np.ndarray], runs: int = 20
) -> tuple[float, float]:
    """The median latencies (ms) of two converted graphs on one ``feed``, timed in turn (one run of
    each per round, after 3 warm-up rounds)."""
    graphs = (candidate, reference)
    times: tuple[list[float], list[float]] = ([], [])
    for round_ in range(runs + 3):
        for i in (0, 1) if round_ % 2 == 0 else (1, 0):
            start = time.perf_counter()
            graphs[i].run([feed])
            if round_ >= 3:
                times[i].append((time.perf_counter() - start) * 1000)
    return statistics.median(times[0]), statistics.median(times[1])


def tflite_decision(
    gate: Gate,
    graph: str,
    precision: str,
    candidate: TfliteGraph | None,
    outputs: Callable[[str], Samples],
    fallback: str,
) -> TfliteDecision:
    """Put the converted ``graph`` through ``gate``: the trunk is judged by every task, a head by
    its own; ``outputs(task)`` gives that task's outputs on the held-back frames with
    ``candidate`` in place; ``fallback`` ends the reason of a rejected graph."""
    decision = TfliteDecision(graph, precision, tflite_path(graph, precision))
    if candidate is None:
        decision.reason = "not converted"
        return decision
    decision.tensors, decision.size = candidate.tensors, candidate.path.stat().st_size
    decision.signature = candidate.signature
    tasks = list(gate.tasks) if graph == "trunk" else [graph]
    verdict = gate.decide(decision, {task: gate.fidelity(task, outputs(task), precision) for task in tasks})
    decision.reason = verdict.reason(fallback)
    return decision


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
    """A way to make TFLite graphs for :func:`exporter.tflite.convert_bundle`: ``prepare``
    returns the converter's environment (created on first use); ``convert`` returns the
    converted graphs by ``(graph, precision)``, each mapped to the logical tensor names.
    ``layout`` is written on the artifacts."""

    name: str
    layout: str
    prepare: Callable[[], ToolEnv]
    convert: Callable[[ToolEnv, ConversionInputs], dict[tuple[str, str], TfliteGraph]]


__all__ = [
    "SIGNATURE",
    "ConversionInputs",
    "InterpreterRunner",
    "TfliteConverter",
    "TfliteDecision",
    "TfliteGraph",
    "dequantize_value",
    "onnx_io_shapes",
    "open_interpreter",
    "open_runner",
    "paired_tflite_latency_ms",
    "quantize_value",
    "signature_details",
    "signature_runner",
    "tensor_info",
    "tflite_artifact",
    "tflite_decision",
    "tflite_path",
]
