"""TFLite frontend: a ``.tflite`` model → ONNX (tflite2onnx) → the ONNX split, so the bundle is ONNX.

Steps:

1. read the flatbuffer here, in pure Python (:mod:`exporter.tflite_flatbuffer`), and refuse up
   front what cannot be imported: custom ops and Flex (TensorFlow) ops, named, and sparse weights
   (``DENSIFY``, tensors with ``sparsity``), which tflite2onnx cannot read;
2. convert with ``tflite2onnx`` in its own virtualenv (:mod:`exporter.toolenv`, no TensorFlow;
   opset 11, inputs turned NCHW). tflite2onnx also turns rank-4 *outputs* NCHW; a Transpose is
   appended to each such output so the ONNX outputs keep the TFLite shapes (head specs and
   decoders written for the TFLite model stay right);
3. state the TFLite metadata's input normalisation and colour space (``TFLITE_METADATA``:
   NormalizationOptions, ImageProperties) as ONNX metadata (``mean``/``std``/``scale``/``color``),
   which :mod:`exporter.metadata` reads as it does for any ONNX model. Without metadata
   (MediaPipe models have none) only what the input tensor makes certain is taken (size, layout,
   dtype); normalisation is then assumed and announced, as for an ONNX model without metadata:
   give ``--input-spec``;
4. verify the import: ONNX Runtime on the ONNX model against LiteRT on the ``.tflite`` on probe
   inputs, per output, within ``1e-4 x max(1, output range)``; else refuse with the numbers;
5. :func:`exporter.pipeline.split_model` on the ONNX model (automatic boundary and heads unless
   given), whose own verification checks trunk + heads against it.

Example::

    split_tflite_model("face_detection_front.tflite", "bundle", SplitOptions())

CLI: ``edge-export split face_detection_front.tflite -o bundle [--formats onnx,tflite]``
"""

from __future__ import annotations

import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper

from edge_runtime.errors import ModelError
from exporter.bundle import check_output_dir
from exporter.pipeline import SplitOptions, SplitResult, split_model
from exporter.tflite_flatbuffer import (
    DENSIFY,
    METADATA_NAME,
    TfliteModel,
    read_input_metadata,
    read_tflite,
)
from exporter.toolenv import ToolEnvError, ensure_env

logger = logging.getLogger(__name__)

#: The converter environment (:data:`exporter.toolenv.TOOLS`).
TOOL = "tflite2onnx"
#: The import must reproduce each TFLite output within this x max(1, the output's range).
IMPORT_TOLERANCE = 1e-4
#: Probe inputs for the import check: (low, high) of uniform random values, one input each: the
#: ranges image models are fed in (-1..1, 0..1). Not 0..255: off-range inputs drive outputs to
#: ranges of 1e5 that would loosen the bound 1e-4 x range for every probe.
PROBE_RANGES = ((-1.0, 1.0), (-1.0, 1.0), (0.0, 1.0), (0.0, 1.0))
_UNSUPPORTED = "EDGE-EXPORT-UNSUPPORTED:"
_DRIVER = f"""
import sys
import tflite2onnx
try:
    tflite2onnx.convert(sys.argv[1], sys.argv[2])
except NotImplementedError as exc:
    print({_UNSUPPORTED!r}, exc)
    sys.exit(3)
"""
_OP = re.compile(r"Unsupported TFLite OP: *(\d+) *([A-Za-z0-9_]+)")


@dataclass(frozen=True)
class ImportCheck:
    """The import check of one output: max abs error against LiteRT over the probes, and the
    output's range (max - min) over them."""

    output: str
    max_abs_error: float
    value_range: float

    @property
    def bound(self) -> float:
        return IMPORT_TOLERANCE * max(1.0, self.value_range)

    @property
    def passed(self) -> bool:
        return self.max_abs_error <= self.bound


def check_tflite(path: str | Path) -> TfliteModel:
    """Read ``path`` and refuse what cannot be imported (custom / Flex ops, sparse weights)
    with one :class:`ModelError` line naming the ops."""
    path = Path(path)
    model = read_tflite(path.read_bytes(), str(path))
    if not model.subgraphs:
        raise ModelError(f"{path}: a TFLite model without a subgraph")
    used = {index for graph in model.subgraphs for index in graph.operators}
    codes = [model.operator_codes[i] for i in sorted(used) if i < len(model.operator_codes)]
    flex = sorted({c.name for c in codes if c.is_flex})
    custom = sorted({c.name for c in codes if c.is_custom and not c.is_flex})
    if flex or custom:
        parts = []
        if custom:
            parts.append(f"custom op{'s' if len(custom) > 1 else ''} {', '.join(custom)}")
        if flex:
            parts.append(f"Flex (TensorFlow) op{'s' if len(flex) > 1 else ''} {', '.join(flex)}")
        raise ModelError(
            f"{path}: {' and '.join(parts)}: not supported (no ONNX equivalent; only TFLite builtin ops are imported)"
        )
    sparse = [t.name for graph in model.subgraphs for t in graph.tensors if t.sparse]
    if any(c.builtin == DENSIFY for c in codes) or sparse:
        where = f" (sparse tensors: {', '.join(sparse[:3])}{', ...' if len(sparse) > 3 else ''})" if sparse else ""
        raise ModelError(
            f"{path}: op DENSIFY{where}: sparse weights are not supported (tflite2onnx cannot import them); "
            "use the dense version of the model"
        )
    return model


def _convert(path: Path, workdir: Path) -> onnx.ModelProto:
    """``path`` converted by tflite2onnx in its virtualenv."""
    env = ensure_env(TOOL)
    target = workdir / "imported.onnx"
    try:
        env.run(["-c", _DRIVER, str(path.resolve()), str(target)], cwd=workdir, what=f"tflite2onnx {path.name}")
    except ToolEnvError as exc:
        found = _OP.search(str(exc))
        if found is not None:
            raise ModelError(
                f"{path}: op {found.group(2)} (builtin code {found.group(1)}) is not supported by tflite2onnx, "
                "the TFLite -> ONNX importer"
            ) from exc
        raise
    try:
        return onnx.load(str(target))
    except Exception as exc:
        raise ModelError(f"{path}: tflite2onnx wrote no readable ONNX model: {exc}") from exc


def _shape(value: onnx.ValueInfoProto) -> tuple[int, ...] | None:
    dims = value.type.tensor_type.shape.dim
    if not all(d.HasField("dim_value") for d in dims):
        return None
    return tuple(int(d.dim_value) for d in dims)


def _nchw(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[0], shape[3], shape[1], shape[2])


def _keep_tflite_output_layout(model: onnx.ModelProto, tflite: TfliteModel) -> list[str]:
    """Append a Transpose to each rank-4 output tflite2onnx turned NCHW; the outputs changed."""
    graph = tflite.subgraphs[0]
    shapes = {graph.tensors[i].name: graph.tensors[i].shape for i in graph.outputs}
    changed = []
    for output in model.graph.output:
        want, got = shapes.get(output.name), _shape(output)
        if want is None or got is None or len(want) != 4 or got == want or got != _nchw(want):
            continue
        inner = f"{output.name}__nchw"
        for node in model.graph.node:
            node.output[:] = [inner if o == output.name else o for o in node.output]
        for info in model.graph.value_info:
            if info.name == output.name:
                info.name = inner
        model.graph.node.append(helper.make_node("Transpose", [inner], [output.name], perm=[0, 2, 3, 1]))
        dims = output.type.tensor_type.shape.dim
        for dim, size in zip(dims, want, strict=True):
            dim.dim_value = size
        changed.append(output.name)
    return changed


def _state_metadata(model: onnx.ModelProto, tflite: TfliteModel, where: str) -> list[str]:
    """The TFLite metadata's input normalisation and colour space as ONNX metadata_props."""
    blob = tflite.metadata.get(METADATA_NAME)
    if not blob:
        return []
    meta = read_input_metadata(blob, where)
    props: dict[str, str] = {}
    if meta.mean is not None and meta.std is not None:
        # TFLite normalises the values as the tensor is fed: pixels 0..255 for an image model.
        props.update(mean=repr(list(meta.mean)), std=repr(list(meta.std)), scale="1")
    if meta.color is not None and meta.color != "GRAY":
        props["color"] = meta.color
    existing = {p.key for p in model.metadata_props}
    for key, value in props.items():
        if key not in existing:
            model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    return sorted(props)


def _probes(details: list[dict[str, Any]], rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
    """Random inputs for every TFLite input, one set per :data:`PROBE_RANGES` entry."""
    sets = []
    for low, high in PROBE_RANGES:
        feed = {}
        for d in details:
            dtype = np.dtype(d["dtype"])
            shape = [int(s) for s in d["shape"]]
            if np.issubdtype(dtype, np.floating):
                feed[d["name"]] = rng.uniform(low, high, shape).astype(dtype)
            elif np.issubdtype(dtype, np.integer):
                info = np.iinfo(dtype)
                top = min(int(info.max), 255) + 1
                feed[d["name"]] = rng.integers(max(int(info.min), 0 if low >= 0 else -128), top, shape).astype(dtype)
            elif dtype == np.bool_:
                feed[d["name"]] = rng.integers(0, 2, shape).astype(bool)
            else:
                raise ModelError(f"input {d['name']!r} has dtype {dtype}: no probe inputs for it")
        sets.append(feed)
    return sets


def verify_import(path: Path, model: onnx.ModelProto) -> list[ImportCheck]:
    """ONNX Runtime on ``model`` against LiteRT on ``path``, per output, over probe inputs;
    raises :class:`ModelError` with the numbers when an output is off by more than
    ``1e-4 x max(1, its range)``."""
    from exporter.tflite_graphs import open_interpreter
    from exporter.verify import make_session

    interpreter = open_interpreter(path)
    interpreter.allocate_tensors()
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    session = make_session(model, f"{path.name} imported by tflite2onnx")
    onnx_inputs = {i.name: i for i in session.get_inputs()}
    onnx_outputs = [o.name for o in session.get_outputs()]
    missing = [d["name"] for d in inputs if d["name"] not in onnx_inputs] + [
        d["name"] for d in outputs if d["name"] not in onnx_outputs
    ]
    if missing:
        raise ModelError(f"{path}: tflite2onnx did not keep the tensor names {', '.join(missing)}")
    errors: dict[str, float] = {d["name"]: 0.0 for d in outputs}
    low: dict[str, float] = {}
    high: dict[str, float] = {}
    for feed in _probes(inputs, np.random.default_rng(0)):
        for d in inputs:
            interpreter.set_tensor(d["index"], feed[d["name"]])
        interpreter.invoke()
        reference = {d["name"]: np.array(interpreter.get_tensor(d["index"])) for d in outputs}
        onnx_feed = {}
        for name, value in feed.items():
            want = tuple(d if isinstance(d, int) else -1 for d in onnx_inputs[name].shape)
            if value.ndim == 4 and want != value.shape and len(want) == 4 and want[1:] == _nchw(value.shape)[1:]:
                value = value.transpose(0, 3, 1, 2)
            onnx_feed[name] = value
        got = dict(zip(onnx_outputs, session.run(onnx_outputs, onnx_feed), strict=True))
        for name, ref in reference.items():
            out = np.asarray(got[name])
            if out.shape != ref.shape:
                raise ModelError(
                    f"{path}: output {name!r} has shape {list(out.shape)} in ONNX but {list(ref.shape)} in TFLite"
                )
            ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
            errors[name] = max(errors[name], float(np.max(np.abs(out64 - ref64), initial=0.0)))
            low[name] = min(low.get(name, np.inf), float(np.min(ref64, initial=np.inf)))
            high[name] = max(high.get(name, -np.inf), float(np.max(ref64, initial=-np.inf)))
    checks = [ImportCheck(n, errors[n], max(0.0, high[n] - low[n]) if n in high else 0.0) for n in errors]
    failed = [c for c in checks if not c.passed]
    if failed:
        raise ModelError(
            f"{path}: the ONNX model tflite2onnx wrote does not reproduce the TFLite outputs on "
            f"{len(PROBE_RANGES)} probe inputs: "
            + "; ".join(f"{c.output} max abs error {c.max_abs_error:.3g} > {c.bound:.3g}" for c in failed)
        )
    return checks


@dataclass(frozen=True)
class TfliteImport:
    """A TFLite model imported to ONNX: the model, its import check, what was adjusted."""

    model: onnx.ModelProto
    checks: list[ImportCheck]
    transposed_outputs: list[str]
    metadata_keys: list[str]


def import_tflite(path: str | Path) -> TfliteImport:
    """Check, convert (tflite2onnx), adjust and verify the TFLite model at ``path``."""
    path = Path(path)
    tflite = check_tflite(path)
    with tempfile.TemporaryDirectory(prefix="edge-export-tflite-") as tmp:
        model = _convert(path, Path(tmp))
    transposed = _keep_tflite_output_layout(model, tflite)
    keys = _state_metadata(model, tflite, path.name)
    checks = verify_import(path, model)
    for check in checks:
        logger.info(
            "tflite2onnx: %s max abs error %.3g against LiteRT (range %.3g, allowed %.3g)",
            check.output, check.max_abs_error, check.value_range, check.bound,
        )  # fmt: skip
    if transposed:
        logger.info("tflite2onnx: outputs %s kept in the TFLite layout (NHWC)", ", ".join(transposed))
    if keys:
        logger.info("%s: input %s from the TFLite metadata", path.name, ", ".join(keys))
    return TfliteImport(model=model, checks=checks, transposed_outputs=transposed, metadata_keys=keys)


def split_tflite_model(path: str | Path, out_dir: str | Path, options: SplitOptions | None = None) -> SplitResult:
    """Import the TFLite model at ``path`` (:func:`import_tflite`) and split the ONNX model like
    :func:`exporter.pipeline.split_model`; the bundle is ONNX."""
    path = Path(path)
    options = options or SplitOptions()
    check_output_dir(out_dir, options.force)  # before the conversion, as the ONNX split would
    imported = import_tflite(path)
    return split_model(imported.model, out_dir, options, source_name=path.name)


__all__ = [
    "IMPORT_TOLERANCE",
    "ImportCheck",
    "TfliteImport",
    "check_tflite",
    "import_tflite",
    "split_tflite_model",
    "verify_import",
]
