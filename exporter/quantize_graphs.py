"""The candidate graphs of ``edge-export quantize``: INT8 and FP16 ONNX graphs, and running them.

* :func:`int8_graph`: ONNX Runtime static quantization (QDQ, per-channel int8 weights, uint8
  activations, MinMax calibration) after ``quant_pre_process``; opsets below 13 are upgraded
  first (per-channel ``DequantizeLinear`` needs ``axis``). ``exclude`` keeps
  nodes float (the trunk retry keeps its first/last :func:`compute_nodes` float); the
  post-processing tail (:func:`float_tail`) is always kept float.
* :func:`fp16_graph`: float16 weights and activations, float32 inputs and outputs kept (so
  graphs still exchange float32).
* :class:`LoadedGraph`: a graph in an ONNX Runtime session (the load test of every graph
  written), run one sample at a time, with a median latency.

Example::

    model = named_nodes(onnx.load("bundle/trunk.fp32.onnx"))
    data = int8_graph(model, {"image": frames}, "the trunk", exclude=compute_nodes(model)[:1])
    outputs = LoadedGraph(data, "trunk int8").run([{"image": frames[:1]}])
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx

from edge_runtime.errors import ModelError
from exporter.calibration import ArrayDataReader
from exporter.verify import make_session

logger = logging.getLogger(__name__)

#: Ops whose weights INT8 quantizes and whose first/last instances the trunk retry keeps float.
COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
LATENCY_RUNS = 30


def named_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
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


def float_tail(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes after the last weight-bearing node on every path to an output: the
    post-processing a detector exports inside its graph (anchor arithmetic, sigmoid, the concat of
    box coordinates and class scores). INT8 gains nothing there and loses much: one uint8 step
    over a tensor that holds coordinates up to 320 and scores in [0, 1] is 1.25, so every score
    becomes 0 or 1.25. These nodes are kept float (``nodes_to_exclude``)."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    feeds_compute: dict[str, bool] = {}
    for node in reversed(model.graph.node):  # graph order is topological: consumers come later
        feeds_compute[node.name] = any(
            c.op_type in COMPUTE_OPS or feeds_compute.get(c.name, False)
            for out in node.output
            for c in consumers.get(out, [])
        )
    after_compute: set[str] = set()  # tensors computed from a weight-bearing node's output
    for node in model.graph.node:
        if node.op_type in COMPUTE_OPS or any(name in after_compute for name in node.input):
            after_compute.update(node.output)
    return [
        n.name
        for n in model.graph.node
        if n.op_type not in COMPUTE_OPS and not feeds_compute[n.name] and any(name in after_compute for name in n.input)
    ]


def _ensure_opset13(model: onnx.ModelProto, what: str) -> onnx.ModelProto:
    """Per-channel QDQ needs opset >= 13 (``DequantizeLinear`` has no axis before)."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    if opset >= 13:
        return model
    try:
        converted = onnx.version_converter.convert_version(model, 13)
    except Exception as exc:
        raise ModelError(f"{what}: cannot upgrade opset {opset} to 13 for per-channel INT8: {exc}") from exc
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
    on ``calibration``: input name -> (N, ...) arrays), ``exclude`` and the post-processing
    tail (:func:`float_tail`) kept float. ModelError naming the op on failure."""
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
        prepared = named_nodes(onnx.load(pre))
        onnx.save(prepared, pre)
        exclude = [*exclude, *(n for n in float_tail(prepared) if n not in exclude)]
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
            raise ModelError(f"{what}: INT8 quantization failed: {type(exc).__name__}: {exc}") from exc
        return out.read_bytes()


def output_steps(data: bytes) -> dict[str, float]:
    """The quantization step of each graph output of an INT8 QDQ graph whose value leaves through
    a ``DequantizeLinear`` (possibly behind reshapes): the smallest non-zero value it can give.
    The device's self-test leaves out an output whose float values all lie below half of it."""
    model = onnx.load_from_string(data)
    producers = {out: node for node in model.graph.node for out in node.output}
    constants = {t.name: t for t in model.graph.initializer}
    constants.update(
        {n.output[0]: n.attribute[0].t for n in model.graph.node if n.op_type == "Constant" and n.attribute}
    )
    steps: dict[str, float] = {}
    for output in model.graph.output:
        node = producers.get(output.name)
        while node is not None and node.op_type in (
            "Reshape",
            "Transpose",
            "Flatten",
            "Squeeze",
            "Unsqueeze",
            "Identity",
        ):
            node = producers.get(node.input[0])
        if node is None or node.op_type != "DequantizeLinear" or node.input[1] not in constants:
            continue
        scale = onnx.numpy_helper.to_array(constants[node.input[1]])
        if scale.size == 1 and float(scale.reshape(-1)[0]) > 0:
            steps[output.name] = float(scale.reshape(-1)[0])
    return steps


def fp16_graph(model: onnx.ModelProto, what: str) -> bytes:
    """``model`` with float16 weights and activations, float32 inputs and outputs kept."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    except Exception as exc:
        raise ModelError(f"{what}: FP16 conversion failed: {type(exc).__name__}: {exc}") from exc
    return converted.SerializeToString()


class LoadedGraph:
    """A graph loaded in an ONNX Runtime session that runs one sample at a time."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.what = what
        self.session = make_session(data, what)  # the load test of every graph we write
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """The outputs by name for each feed (extra names in a feed are ignored)."""
        results = []
        for feed in feeds:
            values = self.session.run(self.outputs, {name: feed[name] for name in self.inputs})
            results.append(dict(zip(self.outputs, values, strict=True)))
        return results


def paired_latency_ms(
    candidate: LoadedGraph, reference: LoadedGraph, feed: Mapping[str, np.ndarray], runs: int = LATENCY_RUNS
) -> tuple[float, float]:
    """The median latencies of ``candidate`` and ``reference`` on ``feed``, timed in turn (one run
    of each per round, after 3 warm-up rounds) so that a noisy machine slows both alike."""
    graphs = (candidate, reference)
    inputs = [{name: feed[name] for name in g.inputs} for g in graphs]
    times: tuple[list[float], list[float]] = ([], [])
    for round_ in range(runs + 3):
        for i in (0, 1) if round_ % 2 == 0 else (1, 0):
            start = time.perf_counter()
            graphs[i].session.run(graphs[i].outputs, inputs[i])
            if round_ >= 3:
                times[i].append((time.perf_counter() - start) * 1000)
    return statistics.median(times[0]), statistics.median(times[1])


def with_features(feeds: Sequence[Mapping[str, np.ndarray]], trunk: LoadedGraph) -> list[dict[str, np.ndarray]]:
    """Each feed with the trunk's outputs for it added: what the heads read."""
    return [{**feed, **out} for feed, out in zip(feeds, trunk.run(feeds), strict=True)]


def stack_samples(samples: Sequence[Mapping[str, np.ndarray]], names: Sequence[str]) -> dict[str, np.ndarray]:
    """``names`` of the per-sample values concatenated along the batch axis (calibration arrays)."""
    return {name: np.concatenate([s[name] for s in samples], axis=0) for name in names}


__all__ = [
    "COMPUTE_OPS",
    "LATENCY_RUNS",
    "LoadedGraph",
    "compute_nodes",
    "float_tail",
    "fp16_graph",
    "int8_graph",
    "named_nodes",
    "paired_latency_ms",
    "stack_samples",
    "with_features",
]
