"""onnx2tf, the default TFLite converter of :func:`exporter.tflite.convert_bundle` (:data:`ONNX2TF`).

Each ONNX graph goes through onnx2tf in its own virtualenv (:mod:`exporter.toolenv`), which
writes a SavedModel and TFLite files: NHWC, usually a signature ``serving_default`` keyed by the
ONNX input names. One converter run per precision: FP32 from a run without any quantization
option; full INT8 (int8 inputs and outputs where onnx2tf quantizes them) from a separate run
with ``-oiqt`` and ``-cind`` per input (the trunk on frames, each head on the float trunk's
outputs), whose FP32 file is ignored — the calibration options changed the FP32 file of a
real detector head (one output at cosine -0.01). onnx2tf's offline traps are handled: its
calibration sample file is written into the working directory, and its venv's ``bin``
(``onnxsim``) is on PATH. A run that fails or writes no file raises
:class:`~exporter.toolenv.ToolEnvError` with its last output lines and the command to rerun it.

:func:`load_converted` maps a converted graph back to the ONNX tensor names, through the
``serving_default`` signature or, for a file without one, the interpreter's own input and
output tensors. Each ONNX tensor is matched by name (exact, or as TensorFlow spells it:
``out/x:0`` -> ``out/x__0``), else by shape; the layout (``perm``, e.g. ``[0, 2, 3, 1]`` for
NCHW -> NHWC) is deduced from the shapes. Where that leaves a choice — renamed outputs
(``output_0``…, ``Identity``…) of equal shapes, or a tensor whose shape fits both the identity
and channels-last (onnx2tf leaves some outputs NCHW) — the candidates are run on a probe and
compared with the float ONNX model's outputs (ONNX Runtime): the best cosine wins, never the
order.

Example::

    out = run_onnx2tf(ensure_env("onnx2tf"), Path("trunk.onnx"), workdir, None)
    fp32 = load_converted(out / "trunk_float32.tflite", onnx.load("trunk.onnx"), {"image": frame})
"""

from __future__ import annotations

import itertools
import logging
import re
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
    open_runner,
    quantize_value,
    signature_details,
    tensor_info,
)
from exporter.toolenv import ToolEnv, ToolEnvError, ensure_env

logger = logging.getLogger(__name__)

#: onnx2tf downloads this sample for image inputs unless it is in the working directory.
ONNX2TF_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"
#: onnx2tf output files by our precision.
ONNX2TF_FILES = {"fp32": "{stem}_float32.tflite", "int8": "{stem}_full_integer_quant.tflite"}
#: At most this many input bindings are tried by values (several inputs of one shape).
MAX_INPUT_CHOICES = 16


def _perm(onnx_shape: Sequence[int | None], tflite_shape: Sequence[int]) -> list[int] | None:
    """The permutation p with tflite = onnx.transpose(p) that the shapes suggest; None for
    identity. Where both channels-last and identity fit, this is only a guess:
    :func:`_layouts` lists both and :func:`load_converted` decides by values."""
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


def _layouts(onnx_shape: Sequence[int | None], tflite_shape: Sequence[int]) -> list[list[int] | None]:
    """Every layout (identity None, or channels-last) that maps ``onnx_shape`` to
    ``tflite_shape``, the shapes' guess (:func:`_perm`) first; empty when none fits."""
    try:
        guess = _perm(onnx_shape, tflite_shape)
    except ModelError:
        return []
    rank = len(tflite_shape)
    others: list[list[int] | None] = [None]
    if rank >= 3:
        others.append([0, *range(2, rank), 1])
    layouts = [guess]
    for perm in others:
        order = list(range(rank)) if perm is None else perm
        if perm != guess and all(onnx_shape[src] in (None, tflite_shape[dst]) for dst, src in enumerate(order)):
            layouts.append(perm)
    return layouts


def _spelled(name: str) -> str:
    """A tensor name as TensorFlow may spell it: the signature/interpreter decorations
    (``serving_default_`` prefix, ``:0`` suffix) dropped, every other character run as ``_``."""
    name = name.removeprefix("serving_default_")
    name = re.sub(r":0$", "", name)
    return re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_").lower()


#: One way to bind a logical tensor: (model key, perm).
_Option = tuple[str, list[int] | None]


def _options(
    path: Path, kind: str, names: Sequence[str], details: Mapping[str, Any], shapes: Mapping[str, Sequence[int | None]]
) -> dict[str, list[_Option]]:
    """The candidate (key, perm) bindings of each ONNX tensor: its own key when the name (or
    TensorFlow's spelling of it) matches one, else every key not named after another tensor
    whose shape fits."""
    named: dict[str, str] = {}
    for name in names:
        if name in details:
            named[name] = name
            continue
        spelled = [key for key in details if _spelled(key) == _spelled(name)]
        if len(spelled) == 1:
            named[name] = spelled[0]
    claimed = set(named.values())
    options: dict[str, list[_Option]] = {}
    for name in names:
        keys = [named[name]] if name in named else [k for k in details if k not in claimed]
        options[name] = [(k, perm) for k in keys for perm in _layouts(shapes[name], details[k]["shape"])]
        if not options[name]:
            have = ", ".join(f"{k} {list(details[k]['shape'])}" for k in details)
            raise ModelError(
                f"{path.name}: no converted {kind} fits ONNX {kind} {name!r} {list(shapes[name])} (has {have})"
            )
    return options


def _float_reference(model: onnx.ModelProto, names: Sequence[str], probe: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The float ONNX model's outputs on ``probe`` (ONNX Runtime)."""
    from exporter.verify import make_session

    session = make_session(model, "the float ONNX graph")
    outputs = [o.name for o in model.graph.output]
    values = session.run(outputs, {n: np.asarray(probe[n], dtype=np.float32) for n in names})
    return dict(zip(outputs, values, strict=True))


def _logical(raw: np.ndarray, info: Mapping[str, Any]) -> np.ndarray:
    value = dequantize_value(np.asarray(raw), info)
    return value if info["perm"] is None else value.transpose(np.argsort(info["perm"]))


def _match_outputs(
    options: Mapping[str, Sequence[_Option]],
    details: Mapping[str, Any],
    raw: Mapping[str, np.ndarray],
    expected: Mapping[str, np.ndarray],
) -> tuple[dict[str, _Option], float]:
    """Each output's binding by values: all (output, key, perm) candidates scored by cosine
    against ``expected``, taken best first (each key once); the lowest chosen score (-inf when
    an output finds nothing)."""
    scored: list[tuple[float, str, str, list[int] | None]] = []
    for name, candidates in options.items():
        for key, perm in candidates:
            value = _logical(raw[key], tensor_info(details[key], key, perm))
            if value.shape == expected[name].shape:
                scored.append((_cosine(value, expected[name]), name, key, perm))
    chosen: dict[str, _Option] = {}
    taken: set[str] = set()
    worst = float("inf")
    for score, name, key, perm in sorted(scored, key=lambda s: -s[0]):
        if name in chosen or key in taken:
            continue
        chosen[name], worst = (key, perm), min(worst, score)
        taken.add(key)
    return chosen, worst if len(chosen) == len(options) else float("-inf")


def load_converted(
    path: Path,
    model: onnx.ModelProto,
    probe: Mapping[str, np.ndarray] | None = None,
    *,
    use_signature: bool = True,
) -> TfliteGraph:
    """Load a converted graph and map it to the ONNX tensor names, through its
    ``serving_default`` signature or, without one (or ``use_signature`` False), the
    interpreter's tensors: by name, then by shape; where that leaves a choice (renamed outputs,
    a shape that fits both identity and channels-last) by values against the float ONNX model
    on ``probe`` (float values by ONNX input name). Without ``probe`` a layout choice takes the
    shapes' guess and a name choice is an error."""
    runner, signature = open_runner(path, use_signature=use_signature)
    in_details, out_details = signature_details(runner)
    shapes = onnx_io_shapes(model)
    initializers = {t.name for t in model.graph.initializer}
    onnx_inputs = [i.name for i in model.graph.input if i.name not in initializers]
    onnx_outputs = [o.name for o in model.graph.output]
    in_options = _options(path, "input", onnx_inputs, in_details, shapes)
    out_options = _options(path, "output", onnx_outputs, out_details, shapes)
    combos = [c for c in itertools.product(*in_options.values()) if len({k for k, _ in c}) == len(c)]
    if not combos:
        raise ModelError(f"{path.name}: the converted inputs {', '.join(in_details)} cannot all be told apart")
    settled = len(combos) == 1 and all(len(o) == 1 for o in out_options.values())
    if settled or probe is None:
        names_known = all(len({k for k, _ in o}) == 1 for o in [*in_options.values(), *out_options.values()])
        if not settled and not names_known:
            raise ModelError(
                f"{path.name}: tensors {', '.join(in_details)} -> {', '.join(out_details)} do not carry the ONNX "
                f"names {', '.join(onnx_inputs)} -> {', '.join(onnx_outputs)}, and no probe to match them by values"
            )
        chosen = {name: options[0] for name, options in {**in_options, **out_options}.items()}
    else:
        expected = _float_reference(model, onnx_inputs, probe)
        best: tuple[float, dict[str, _Option]] | None = None
        for combo in combos[:MAX_INPUT_CHOICES]:
            feeds = {}
            for name, (key, perm) in zip(onnx_inputs, combo, strict=True):
                info = tensor_info(in_details[key], key, perm)
                feeds[key] = quantize_value(_apply_perm(np.asarray(probe[name], dtype=np.float32), perm), info)
            matched, score = _match_outputs(out_options, out_details, runner(**feeds), expected)
            if best is None or score > best[0]:
                best = (score, {**dict(zip(onnx_inputs, combo, strict=True)), **matched})
        assert best is not None
        if best[0] == float("-inf"):
            raise ModelError(f"{path.name}: no output binding reproduces the ONNX outputs {', '.join(onnx_outputs)}")
        chosen = best[1]
        logger.debug("%s: bound by values (lowest cosine %.4f): %s", path.name, best[0], chosen)
    details = {**in_details, **out_details}
    tensors = {name: tensor_info(details[key], key, perm) for name, (key, perm) in chosen.items()}
    return TfliteGraph(path, tensors, onnx_inputs, onnx_outputs, runner, signature)


def _apply_perm(value: np.ndarray, perm: list[int] | None) -> np.ndarray:
    return value if perm is None else value.transpose(perm)


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
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> Path:
    """Convert one ONNX graph at one precision; return onnx2tf's output folder (``workdir/out``).
    Without ``calibration`` an FP32 run with no quantization option; with it (logical NCHW
    arrays by input name) a full-integer run, whose FP32 file is not to be used.
    ``input_shapes`` fixes inputs whose ONNX shape is symbolic (``-ois``: onnx2tf cannot convert
    some graphs with symbolic sizes, e.g. a YOLOv8 head over ``height``/``width``). A run that
    fails or writes no file for its precision raises :class:`ToolEnvError` with its last
    lines and the command to rerun it."""
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "out"
    sample = np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32)
    np.save(workdir / ONNX2TF_SAMPLE, sample)  # onnx2tf would download it otherwise
    args = ["-m", "onnx2tf", "-i", str(model_path), "-o", str(out), "-osd", "-b", "1", "-n"]
    if input_shapes:
        args += ["-ois", *(f"{name}:{','.join(str(int(d)) for d in dims)}" for name, dims in input_shapes.items())]
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
    what = f"onnx2tf on {model_path.name}{' (INT8)' if calibration else ' (FP32)'}"
    output = env.run(args, cwd=workdir, what=what)
    expected = out / ONNX2TF_FILES["int8" if calibration else "fp32"].format(stem=model_path.stem)
    if not expected.is_file():
        raise env.failure(what, f"wrote no {expected.name}", output, args, workdir)
    return out


def symbolic_input_shapes(model: onnx.ModelProto, probe: Mapping[str, np.ndarray] | None) -> dict[str, tuple[int, ...]]:
    """The concrete shape (the ``probe`` value's, batch 1) of every input of ``model`` whose ONNX
    shape has a symbolic or unknown size other than the batch: what ``-ois`` fixes."""
    if probe is None:
        return {}
    initializers = {t.name for t in model.graph.initializer}
    shapes: dict[str, tuple[int, ...]] = {}
    for value in model.graph.input:
        if value.name in initializers or value.name not in probe:
            continue
        dims = value.type.tensor_type.shape.dim
        if any(d.dim_value <= 0 for d in list(dims)[1:]):
            shapes[value.name] = (1, *probe[value.name].shape[1:])
    return shapes


def _onnx2tf_graphs(env: ToolEnv, job: ConversionInputs) -> dict[tuple[str, str], TfliteGraph]:
    """Each ONNX graph through onnx2tf, one run per precision: FP32 without quantization
    options, full INT8 calibrated on ``job.calib_values`` (an INT8 run that fails is logged and
    its graph left unconverted: the runtime falls back)."""
    converted: dict[tuple[str, str], TfliteGraph] = {}
    probe = job.held_values[0] if job.held_values else (job.calib_values[0] if job.calib_values else None)
    for graph, entry in job.graphs:
        workdir = job.workdir / graph
        workdir.mkdir()
        model_path = workdir / f"{graph}.onnx"
        model_path.write_bytes(job.paths[graph].read_bytes())
        model = job.models[graph]
        shapes = symbolic_input_shapes(model, probe)
        if "fp32" in job.precisions:
            logger.info("      %s: onnx2tf (FP32)", graph)
            out = run_onnx2tf(env, model_path, workdir / "fp32", None, shapes)
            file = out / ONNX2TF_FILES["fp32"].format(stem=graph)
            converted[(graph, "fp32")] = load_converted(file, model, probe)
        if "int8" in job.precisions:
            inputs = list(entry.inputs) if graph != "trunk" else [job.input_name]
            calibration = {name: np.concatenate([v[name] for v in job.calib_values]) for name in inputs}
            logger.info("      %s: onnx2tf (INT8)", graph)
            try:
                out = run_onnx2tf(env, model_path, workdir / "int8", calibration, shapes)
            except ToolEnvError as exc:
                logger.warning("%s: no INT8 graph: %s", graph, exc)
                continue
            file = out / ONNX2TF_FILES["int8"].format(stem=graph)
            converted[(graph, "int8")] = load_converted(file, model, probe)
    return converted


#: The default converter: onnx2tf in its own virtualenv, NHWC graphs.
ONNX2TF = TfliteConverter(name="onnx2tf", layout="NHWC", prepare=lambda: ensure_env("onnx2tf"), convert=_onnx2tf_graphs)


__all__ = [
    "MAX_INPUT_CHOICES",
    "ONNX2TF",
    "ONNX2TF_FILES",
    "ONNX2TF_SAMPLE",
    "load_converted",
    "run_onnx2tf",
    "symbolic_input_shapes",
]
