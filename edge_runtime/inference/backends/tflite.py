"""TFLite backend: LiteRT's interpreter (``ai-edge-litert``), else ``tflite-runtime``.

A TFLite artifact's manifest entry maps the bundle's logical tensor names (the ONNX names, in
the ONNX layout) to the converted model's tensors, because converters rename tensors, reorder
outputs and turn NCHW into NHWC::

    {"format": "tflite", "precision": "int8", "path": "tflite/trunk.int8.tflite",
     "signature": "serving_default",
     "tensors": {"image":    {"name": "image", "perm": [0, 2, 3, 1], "dtype": "int8",
                              "quantization": [0.0078, -1]}, ...}}

``name`` is a signature key when ``signature`` is given (the session then runs through that
signature runner), else the interpreter's tensor name; tensors are never matched by position.
``perm`` says ``tflite_array = logical_array.transpose(perm)``. Sessions take and give logical
arrays: inputs are transposed and, for int8/uint8 tensors, quantised (``round(x / scale) + zp``,
clipped); outputs come back as :class:`TfliteValue` (the TFLite array with its quantisation and
perm) and :meth:`TfliteSession.to_numpy` makes the logical float array. A value passed from one
TFLite session to another whose input has the same dtype and quantisation goes in raw: an INT8
trunk feeds INT8 heads with no dequantise/requantise (and no transposes when the perms agree too).
Plain numpy arrays (from ONNX Runtime, from preprocessing) are logical values.

XNNPACK is LiteRT's default CPU delegate: it is applied to every interpreter (float and int8)
without being asked for; ``num_threads`` sizes its thread pool. Inputs whose batch dimension is
dynamic (``-1`` in the model's shape signature) are resized when the batch changes.

Example::

    backend = TfliteBackend()
    trunk = backend.load(Path("bundle/tflite/trunk.int8.tflite"), BackendOptions(threads=4), "trunk",
                         artifact=artifact)
    out = trunk.run({"image": x})              # {"features": TfliteValue}
    features = trunk.to_numpy(out["features"])  # logical (NCHW) float32

CLI: ``edge-runtime run --bundle bundle --backend tflite --source synthetic``
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.bundle.specs import Artifact
from edge_runtime.errors import BundleError, ModelError, close_matches
from edge_runtime.inference.backends.base import BackendOptions

logger = logging.getLogger(__name__)


def _import_interpreter() -> tuple[Any, str, str]:
    """The interpreter class, the runtime's name and its version: LiteRT, else tflite-runtime."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "LiteRT", _version("ai-edge-litert")
    except ImportError as litert_error:
        try:
            # tflite-runtime's last release (2.14) is built against numpy 1.x: with numpy >= 2 its
            # import fails, so on such devices install ai-edge-litert (or pin numpy < 2).
            from tflite_runtime.interpreter import Interpreter

            return Interpreter, "tflite_runtime", _version("tflite-runtime")
        except ImportError as fallback_error:
            raise ImportError(
                f"neither ai-edge-litert ({litert_error}) nor tflite-runtime ({fallback_error}) can be imported; "
                "tflite-runtime 2.14 also needs numpy < 2"
            ) from fallback_error


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "(version unknown)"


Interpreter, RUNTIME, RUNTIME_VERSION = _import_interpreter()

#: A scale this close to another requantises every 8-bit value to the same integer (any relative
#: difference below 1/510 would); it absorbs float32 round-off between two converter runs.
SCALE_RTOL = 1e-5

_UNRESOLVED_OP = (
    re.compile(r"unresolved custom op: ([\w./-]+?)\.?(?:\s|$)"),
    re.compile(r"Didn't find op for builtin opcode '(\w+)' version '(\d+)'"),
    re.compile(r"Node number \d+ \(([^)]+)\) failed to prepare"),
)


@dataclass(frozen=True, eq=False)
class TfliteValue:
    """A tensor as a TFLite session returns it.

    ``array`` is in the TFLite layout and dtype (e.g. (N, H, W, C) int8); ``quantization`` is
    ``(scale, zero_point)`` for a quantised tensor, else None; ``perm`` maps the logical layout
    to the TFLite one (``array = logical.transpose(perm)``), None for identity.
    """

    array: np.ndarray
    quantization: tuple[float, int] | None = None
    perm: tuple[int, ...] | None = None

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.array.dtype

    def numpy(self) -> np.ndarray:
        """The logical value: dequantised to float32, in the logical layout (C-contiguous)."""
        value = self.array if self.quantization is None else dequantize(self.array, self.quantization)
        if self.perm is not None:
            value = value.transpose(np.argsort(self.perm))
        return np.ascontiguousarray(value)


def quantize(value: np.ndarray, quantization: tuple[float, int], dtype: np.dtype[Any]) -> np.ndarray:
    """``round(value / scale) + zero_point``, clipped to ``dtype``'s range."""
    scale, zero_point = quantization
    limits = np.iinfo(dtype)
    scaled = np.round(np.asarray(value, dtype=np.float32) / np.float32(scale))
    return np.clip(scaled + zero_point, limits.min, limits.max).astype(dtype)


def dequantize(value: np.ndarray, quantization: tuple[float, int]) -> np.ndarray:
    """``(value - zero_point) * scale`` as float32."""
    scale, zero_point = quantization
    return (value.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


def same_quantization(a: tuple[float, int] | None, b: tuple[float, int] | None) -> bool:
    """True when raw values quantised with ``a`` mean the same numbers under ``b``."""
    if a is None or b is None:
        return a is None and b is None
    return a[1] == b[1] and abs(a[0] - b[0]) <= SCALE_RTOL * max(abs(a[0]), abs(b[0]))


@dataclass(frozen=True)
class TensorBinding:
    """One logical tensor bound to a tensor of the model."""

    logical: str
    name: str  # signature key or interpreter tensor name
    index: int
    dtype: np.dtype[Any]
    quantization: tuple[float, int] | None
    perm: tuple[int, ...] | None
    shape: tuple[int, ...]  # as allocated at load
    shape_signature: tuple[int, ...]  # -1 where the size is dynamic


class TfliteSession:
    """One .tflite graph in an interpreter; inputs and outputs by logical name, values
    :class:`TfliteValue`. Built by :meth:`TfliteBackend.load`."""

    def __init__(
        self,
        interpreter: Any,
        runner: Any | None,
        inputs: Sequence[TensorBinding],
        outputs: Sequence[TensorBinding],
        what: str,
    ) -> None:
        self._interpreter = interpreter
        self._runner = runner
        self._inputs = {b.logical: b for b in inputs}
        self._outputs = {b.logical: b for b in outputs}
        self._shapes = {b.index: b.shape for b in inputs}
        self.what = what
        self.input_names = tuple(self._inputs)
        self.output_names = tuple(self._outputs)

    @property
    def bindings(self) -> dict[str, TensorBinding]:
        """Every bound tensor by logical name (inputs and outputs)."""
        return {**self._inputs, **self._outputs}

    def prepare(self, name: str, value: Any) -> np.ndarray:
        """The array to set for input ``name``: a :class:`TfliteValue` with this input's dtype and
        quantisation goes in raw (transposed only when the perms differ); anything else is a
        logical value, transposed and quantised or cast."""
        binding = self._inputs[name]
        if isinstance(value, TfliteValue):
            if value.dtype == binding.dtype and same_quantization(value.quantization, binding.quantization):
                if value.perm == binding.perm:
                    return value.array
                raw = value.array if value.perm is None else value.array.transpose(np.argsort(value.perm))
                return np.ascontiguousarray(raw if binding.perm is None else raw.transpose(binding.perm))
            value = value.numpy()
        array = np.asarray(value)
        if binding.perm is not None:
            if array.ndim != len(binding.perm):
                raise ModelError(
                    f"{self.what}: input {name!r} has shape {list(array.shape)}, but its perm "
                    f"{list(binding.perm)} is for rank {len(binding.perm)}"
                )
            array = array.transpose(binding.perm)
        if binding.quantization is not None:
            if array.dtype == binding.dtype and binding.quantization == (1.0, 0):
                return np.ascontiguousarray(array)
            return quantize(array, binding.quantization, binding.dtype)
        return np.ascontiguousarray(array, dtype=binding.dtype)

    def run(self, feeds: Mapping[str, Any], outputs: Sequence[str] | None = None) -> dict[str, Any]:
        names = self.output_names if outputs is None else outputs
        try:
            wanted = [self._outputs[n] for n in names]
        except KeyError as exc:
            name = str(exc.args[0])
            raise ModelError(
                f"{self.what}: no output {name!r}{close_matches(name, self._outputs)}; "
                f"outputs: {', '.join(self._outputs)}"
            ) from exc
        if len(feeds) != len(self._inputs) or any(n not in self._inputs for n in feeds):
            raise ModelError(
                f"{self.what}: feeds {', '.join(feeds) or 'nothing'}, expected inputs {', '.join(self._inputs)}"
            )
        arrays: list[tuple[TensorBinding, np.ndarray]] = []
        reshaped = False
        for name, value in feeds.items():
            binding = self._inputs[name]
            array = self.prepare(name, value)
            if array.shape != self._shapes[binding.index]:
                self._check_shape(binding, array)
                reshaped = True
            arrays.append((binding, array))
        try:
            if self._runner is not None:
                # the signature runner resizes its inputs (a no-op for an unchanged shape) on every call
                raw = self._runner(**{b.name: a for b, a in arrays})
                got = [raw[b.name] for b in wanted]
            else:
                if reshaped:
                    self._resize(arrays)
                for binding, array in arrays:
                    self._interpreter.set_tensor(binding.index, array)
                self._interpreter.invoke()
                got = [self._interpreter.get_tensor(b.index) for b in wanted]
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"{self.what}: inference failed: {exc}") from exc
        if reshaped:
            self._shapes.update((b.index, a.shape) for b, a in arrays)
        return {b.logical: TfliteValue(a, b.quantization, b.perm) for b, a in zip(wanted, got, strict=True)}

    def _check_shape(self, binding: TensorBinding, array: np.ndarray) -> None:
        """A new input shape must keep every static dimension of the model's input."""
        expected = binding.shape_signature
        if len(array.shape) != len(expected) or any(
            e not in (-1, a) for e, a in zip(expected, array.shape, strict=True)
        ):
            wanted = ["?" if e == -1 else e for e in expected]
            raise ModelError(
                f"{self.what}: input {binding.logical!r} (TFLite {binding.name!r}) takes shape {wanted}, "
                f"got {list(array.shape)} after layout perm {list(binding.perm or range(array.ndim))}"
            )

    def _resize(self, arrays: Sequence[tuple[TensorBinding, np.ndarray]]) -> None:
        """Resize the inputs whose shape changed (dynamic dimensions only), then reallocate."""
        for binding, array in arrays:
            if self._shapes[binding.index] != array.shape:
                self._interpreter.resize_tensor_input(binding.index, list(array.shape), strict=True)
        self._interpreter.allocate_tensors()

    def to_numpy(self, value: Any) -> np.ndarray:
        return value.numpy() if isinstance(value, TfliteValue) else np.asarray(value)

    def close(self) -> None:
        self._runner = None
        self._interpreter = None


class TfliteBackend:
    """Loads ``.tflite`` artifacts into LiteRT (or tflite-runtime) interpreters."""

    name = "tflite"
    artifact_format = "tflite"

    def __init__(self) -> None:
        self.runtime = RUNTIME
        self.version = RUNTIME_VERSION
        self.threads: dict[str, int] = {}
        self._announced = False

    def load(self, path: Path, options: BackendOptions, what: str, artifact: Artifact | None = None) -> TfliteSession:
        if options.providers:
            logger.warning("%s: execution providers %s do not apply to TFLite; ignored", what, options.providers)
        where = f"{what} ({path})"
        if not Path(path).is_file():
            raise ModelError(f"{where}: no such file")
        threads = options.threads or os.cpu_count() or 1
        try:
            interpreter = Interpreter(model_path=str(path), num_threads=threads)
        except (ValueError, RuntimeError) as exc:
            # LiteRT 2.x resolves ops when allocating; older runtimes already when building the interpreter
            raise ModelError(f"{where}: {self._explain(exc, loading=True)}") from exc
        try:
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{where}: {self._explain(exc, loading=False)}") from exc
        extra = artifact.extra if artifact is not None else {}
        signature = extra.get("signature")
        tensors = extra.get("tensors")
        if signature is not None and not isinstance(signature, str):
            raise BundleError(f"{where}: the artifact's 'signature' must be a string, got {signature!r}")
        if tensors is not None and not isinstance(tensors, Mapping):
            raise BundleError(f"{where}: the artifact's 'tensors' must be an object, got {type(tensors).__name__}")
        runner = None
        if signature is not None:
            signatures = interpreter.get_signature_list()
            if signature not in signatures:
                raise BundleError(
                    f"{where}: the manifest names signature {signature!r}, the model has "
                    f"{', '.join(map(repr, signatures)) or 'none'}"
                )
            runner = interpreter.get_signature_runner(signature)
            model_inputs = dict(runner.get_input_details())
            model_outputs = dict(runner.get_output_details())
        else:
            model_inputs = {d["name"]: d for d in interpreter.get_input_details()}
            model_outputs = {d["name"]: d for d in interpreter.get_output_details()}
        inputs, outputs = _bind(model_inputs, model_outputs, tensors or {}, where, signature is not None)
        self.threads[what] = threads
        if not self._announced:
            logger.info("%s", self.describe())
            self._announced = True
        return TfliteSession(interpreter, runner, inputs, outputs, what)

    def _explain(self, exc: Exception, *, loading: bool) -> str:
        """The runtime's error as "unsupported op NAME" where it names an op; else, while
        ``loading`` the file, as a corrupt file."""
        text = str(exc)
        runtime = f"{self.runtime} {self.version}"
        match = _UNRESOLVED_OP[1].search(text)
        if match:
            return (
                f"unsupported op {match.group(1)} (version {match.group(2)}): {runtime} has only older versions "
                "of it; upgrade the runtime or re-export with an older converter"
            )
        match = _UNRESOLVED_OP[0].search(text) or _UNRESOLVED_OP[2].search(text)
        if match:
            op = match.group(1)
            if op.startswith("Flex"):
                hint = "a TensorFlow select op, which needs the Flex delegate; re-export with TFLite builtin ops only"
            else:
                hint = "a custom op this runtime has no kernel for; re-export with builtin ops only"
            return f"unsupported op {op}: {hint} ({runtime})"
        if loading:
            return (
                f"not a loadable .tflite file ({_first_line(exc)}); the file is corrupt or truncated: "
                "re-export the bundle or copy it again"
            )
        return f"{runtime} cannot prepare the model: {_first_line(exc)}"

    def describe(self) -> str:
        counts = sorted(set(self.threads.values()))
        if not counts:
            threads = f"{os.cpu_count() or 1} threads"
        elif len(counts) == 1:
            threads = f"{counts[0]} threads"
        else:
            threads = "threads " + ", ".join(f"{k} {v}" for k, v in self.threads.items())
        return f"{self.runtime} {self.version}: XNNPACK (default delegate), {threads}"


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _bind(
    model_inputs: Mapping[str, Mapping[str, Any]],
    model_outputs: Mapping[str, Mapping[str, Any]],
    tensors: Mapping[str, Any],
    where: str,
    by_signature: bool,
) -> tuple[list[TensorBinding], list[TensorBinding]]:
    """Bind the manifest's logical tensors to the model's inputs and outputs by name; a model
    tensor the map does not mention keeps its own name, with the identity layout."""
    kind = "signature key" if by_signature else "tensor"
    logical_of: dict[str, str] = {}
    specs: dict[str, Mapping[str, Any]] = {}
    for logical, spec in tensors.items():
        if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
            raise BundleError(f"{where}: tensors.{logical} must be an object with a string 'name', got {spec!r}")
        name = spec["name"]
        if name not in model_inputs and name not in model_outputs:
            known = [*model_inputs, *model_outputs]
            raise BundleError(
                f"{where}: the manifest maps tensor {logical!r} to TFLite {kind} {name!r}, which the model does "
                f"not have{close_matches(name, known)}; the model's inputs: {', '.join(model_inputs) or '-'}; "
                f"outputs: {', '.join(model_outputs) or '-'}"
            )
        if name in logical_of:
            raise BundleError(f"{where}: tensors {logical_of[name]!r} and {logical!r} both map to {name!r}")
        logical_of[name] = logical
        specs[name] = spec
    bound: list[list[TensorBinding]] = []
    for details in (model_inputs, model_outputs):
        bindings = [_binding(logical_of.get(n, n), n, d, specs.get(n, {}), where) for n, d in details.items()]
        names = [b.logical for b in bindings]
        clash = next((n for n in names if names.count(n) > 1), None)
        if clash is not None:
            raise BundleError(f"{where}: two model tensors go by the name {clash!r}: map both in 'tensors'")
        bound.append(bindings)
    return bound[0], bound[1]


def _binding(logical: str, name: str, detail: Mapping[str, Any], spec: Mapping[str, Any], where: str) -> TensorBinding:
    dtype = np.dtype(detail["dtype"])
    params = detail.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", []))
    zero_points = np.asarray(params.get("zero_points", []))
    if scales.size > 1:
        raise ModelError(
            f"{where}: tensor {name!r} ({logical!r}) is quantised per channel; model inputs and outputs "
            "must be quantised per tensor"
        )
    quantization = (float(scales[0]), int(zero_points[0])) if scales.size == 1 and dtype.kind in "iu" else None
    shape = tuple(int(d) for d in detail["shape"])
    shape_signature = tuple(int(d) for d in detail.get("shape_signature", shape))
    tensor = f"{where}: tensors.{logical} ({name!r})"
    if spec.get("dtype") is not None and np.dtype(spec["dtype"]) != dtype:
        raise BundleError(f"{tensor}: the manifest says dtype {spec['dtype']}, the model has {dtype.name}")
    if "quantization" in spec:
        declared = spec["quantization"]
        if declared is not None:
            if not (isinstance(declared, (list, tuple)) and len(declared) == 2):
                raise BundleError(f"{tensor}: 'quantization' must be [scale, zero_point] or null, got {declared!r}")
            declared = (float(declared[0]), int(declared[1]))
        if not same_quantization(declared, quantization):
            raise BundleError(
                f"{tensor}: the manifest says quantization {declared}, the model has {quantization}: "
                "manifest and file do not belong together"
            )
    perm = spec.get("perm")
    if perm is not None:
        rank = len(shape_signature)
        if not isinstance(perm, (list, tuple)) or sorted(perm) != list(range(rank)):
            raise BundleError(f"{tensor}: 'perm' {perm!r} is not a permutation of the model tensor's {rank} axes")
        perm = None if list(perm) == list(range(rank)) else tuple(int(p) for p in perm)
    return TensorBinding(logical, name, int(detail["index"]), dtype, quantization, perm, shape, shape_signature)
