"""onnx2tf, the default TFLite converter of :func:`exporter.tflite.convert_bundle` (:data:`ONNX2TF`).

Each ONNX graph goes through onnx2tf in its own virtualenv (:mod:`exporter.toolenv`), which
writes a SavedModel and TFLite files: NHWC, a signature ``serving_default`` keyed by the ONNX
input names. FP32 always; full INT8 (int8 inputs and outputs where onnx2tf quantizes them)
when calibration arrays are given (``-oiqt`` with ``-cind`` per input: the trunk on frames,
each head on the float trunk's outputs). onnx2tf's offline traps are handled:
its calibration sample file is written into the working directory, and its venv's ``bin``
(``onnxsim``) is on PATH.

:func:`load_converted` maps a converted graph back to the ONNX tensor names: inputs by name,
with the permutation from the ONNX layout (``perm``, e.g. ``[0, 2, 3, 1]`` for NCHW -> NHWC).
Quantized models name their outputs ``output_0``, ``output_1``…: they are matched to the float
model's named outputs by their values on a calibration frame (shape and cosine), not by order.

Example::

    out = run_onnx2tf(ensure_env("onnx2tf"), Path("trunk.onnx"), workdir, {"image": frames})
    fp32 = load_converted(out / "trunk_float32.tflite", onnx.load("trunk.onnx"), None, None)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edge_runtime.errors import ModelError
from exporter.tflite_graphs import (
    ConversionInputs,
    TfliteConverter,
    TfliteGraph,
    dequantize_value,
    onnx_io_shapes,
    quantize_value,
    signature_details,
    signature_runner,
    tensor_info,
)
from exporter.toolenv import ToolEnv, ensure_env

logger = logging.getLogger(__name__)

#: onnx2tf downloads this sample for image inputs unless it is in the working directory.
ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"
#: onnx2tf output files by our precision.
ONNX2TF_FILES = {"fp32": "{stem}_float32.tflite", "int8": "{stem}_full_integer_quant.tflite"}


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


def load_converted(
    path: Path, model: onnx.ModelProto, reference: TfliteGraph | None, probe: Mapping[str, np.ndarray] | None
) -> TfliteGraph:
    """Load a converted graph and map its signature to the ONNX tensor names: inputs by name;
    outputs by name, or — when onnx2tf renamed them (``output_0``…) — by their values against
    ``reference`` (the FP32 TFLite graph) on ``probe``."""
    runner = signature_runner(path)
    in_details, out_details = signature_details(runner)
    shapes = onnx_io_shapes(model)
    onnx_inputs = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    onnx_outputs = [o.name for o in model.graph.output]
    tensors: dict[str, dict[str, Any]] = {}
    for name in onnx_inputs:
        if name not in in_details:
            raise ModelError(
                f"{path.name}: the converter has no input {name!r} (signature inputs: {', '.join(in_details)})"
            )
        tensors[name] = tensor_info(in_details[name], name, _perm(shapes[name], in_details[name]["shape"]))
    graph = TfliteGraph(path, tensors, onnx_inputs, [], runner)
    if all(name in out_details for name in onnx_outputs):
        for name in onnx_outputs:
            tensors[name] = tensor_info(out_details[name], name, _perm(shapes[name], out_details[name]["shape"]))
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
    raw = runner(**{t["name"]: quantize_value(_apply_perm(probe[n], t["perm"]), t) for n, t in tensors.items()})
    taken: set[str] = set()
    for name in onnx_outputs:
        best, best_score = None, -2.0
        for key in keys:
            if key in taken:
                continue
            perm = _perm(shapes[name], out_details[key]["shape"]) if _rank_ok(shapes[name], out_details[key]) else "x"
            if perm == "x":
                continue
            info = tensor_info(out_details[key], key, perm if isinstance(perm, list) else None)
            value = dequantize_value(np.asarray(raw[key]), info)
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
        tensors[name] = tensor_info(out_details[best], best, perm_best)
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
    np.save(workdir / ONNX2TF_SAMPLE, sample)  # onnx2tf would download it otherwise
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


def _onnx2tf_graphs(env: ToolEnv, job: ConversionInputs) -> dict[tuple[str, str], TfliteGraph]:
    """Each ONNX graph through onnx2tf: FP32, and full INT8 calibrated on ``job.calib_values``."""
    converted: dict[tuple[str, str], TfliteGraph] = {}
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


__all__ = ["ONNX2TF", "ONNX2TF_FILES", "ONNX2TF_SAMPLE", "load_converted", "run_onnx2tf"]
