"""The bundle contract: typed, validated views of ``manifest.json``.

The exporter writes a manifest with :meth:`Manifest.to_dict`; the runtime reads one with
:meth:`Manifest.from_mapping`. Field names follow DESIGN.md §3 and are never renamed.
Reading is tolerant of *unknown* keys (a newer exporter may add fields: they are logged
once) but strict about the ones it knows: a wrong type or value raises
:class:`~edge_runtime.errors.BundleError` naming the field.

Example::

    from edge_runtime.bundle.manifest import Manifest
    manifest = Manifest.from_mapping(json.load(open("bundle/manifest.json")), "bundle/manifest.json")
    print(manifest.trunk.outputs, list(manifest.heads))
"""

from __future__ import annotations

import builtins
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edge_runtime.errors import BundleError, EdgeRuntimeError, close_matches

logger = logging.getLogger(__name__)

FORMAT = "edge-bundle/1"
FORMAT_MAJOR = 1

LAYOUTS = ("NCHW", "NHWC")
COLORS = ("RGB", "BGR", "GRAY")
RESIZE_MODES = ("letterbox", "stretch", "center_crop")
INPUT_DTYPES = ("float32", "float16", "uint8", "int8")
PRECISIONS = ("fp32", "fp16", "int8")
ARTIFACT_FORMATS = ("onnx", "tflite")

#: Decoder types and the parameters each accepts (values are checked by the decoders).
DECODER_PARAMS: dict[str, frozenset[str]] = {
    "raw": frozenset(),
    "classification": frozenset({"labels", "top_k", "softmax", "multi_label", "threshold"}),
    "detection": frozenset(
        {
            "labels",
            "box_format",
            "normalized",
            "score_threshold",
            "iou_threshold",
            "max_detections",
            "anchors",
            "strides",
            "class_agnostic_nms",
            "objectness",
        }
    ),
    "segmentation": frozenset({"classes", "threshold", "min_area"}),
    "landmarks": frozenset({"names", "normalized", "score_threshold"}),
    "regression": frozenset({"names", "box_format", "normalized", "scale"}),
    "embedding": frozenset({"normalize"}),
}

SCHEDULE_KEYS = frozenset({"every_n_frames", "when", "enabled"})
FILE_ENTRY_KEYS = frozenset({"sha256", "size"})
SHA256_PATTERN = re.compile(r"sha256:[0-9a-f]{64}")
WHEN_KEYS = frozenset({"head", "class_in", "min_score"})


def _fail(exc: type[EdgeRuntimeError], where: str, message: str) -> EdgeRuntimeError:
    return exc(f"{where}: {message}")


def check_keys(
    data: Mapping[str, Any],
    allowed: Sequence[str] | frozenset[str],
    where: str,
    *,
    strict: bool,
    exc: type[EdgeRuntimeError] = BundleError,
) -> None:
    """Reject (``strict``) or log unknown keys of ``data``, naming close matches."""
    for key in data:
        if key in allowed:
            continue
        hint = close_matches(str(key), allowed)
        if strict:
            raise _fail(exc, where, f"unknown key {key!r}{hint}; valid keys: {', '.join(sorted(allowed))}")
        logger.warning("%s: ignoring unknown key %r%s (written by a newer exporter?)", where, key, hint)


def _get(
    data: Mapping[str, Any],
    key: str,
    kind: type | tuple[type, ...],
    where: str,
    exc: type[EdgeRuntimeError],
    default: Any = ...,
) -> Any:
    if key not in data:
        if default is ...:
            raise _fail(exc, where, f"missing required key {key!r}")
        return default
    value = data[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise _fail(exc, where, f"{key!r} must be {names}, got {value!r}")
    return value


def _choice(value: str, choices: Sequence[str], key: str, where: str, exc: type[EdgeRuntimeError]) -> str:
    if value not in choices:
        raise _fail(exc, where, f"{key}={value!r} is not one of {', '.join(choices)}{close_matches(value, choices)}")
    return value


def _floats(value: Any, key: str, where: str, exc: type[EdgeRuntimeError]) -> tuple[float, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),)
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        raise _fail(exc, where, f"{key!r} must be a number or a list of numbers, got {value!r}")
    return tuple(float(v) for v in value)


#: Names a bundle may not list in ``files``: the manifest and its signature are not hashed files.
RESERVED_NAMES = frozenset({"manifest.json", "manifest.sig"})
#: Longest relative path accepted in a bundle (bytes of UTF-8).
MAX_PATH_BYTES = 1024


def bundle_path_problem(rel: Any) -> str | None:
    """Why ``rel`` is not a safe path inside a bundle, or None when it is one.

    The one rule for every path a manifest names (``files`` keys, artifact and self-test
    paths): a non-empty, normalised, relative POSIX path (``heads/box.fp32.onnx``): no leading
    ``/``, no ``..``, ``.`` or empty component, no backslash, NUL or other control character,
    not ``manifest.json`` / ``manifest.sig``. Resolved against any root it stays below it,
    and it names the same file under every root (updates resolve one path against the staged
    package and the running bundle).
    """
    if not isinstance(rel, str) or not rel:
        return f"must be a non-empty relative path, got {rel!r}"
    if len(rel.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        return f"is longer than {MAX_PATH_BYTES} bytes"
    if any(ord(c) < 0x20 or c in "\\\x7f" for c in rel):
        return f"{rel!r} holds a backslash or a control character"
    if rel.startswith("/"):
        return f"{rel!r} must stay inside the bundle (an absolute path)"
    parts = rel.split("/")
    if ".." in parts:
        return f"{rel!r} must stay inside the bundle (no '..')"
    if any(part in ("", ".") for part in parts):
        return f"{rel!r} is not normalised (empty or '.' component)"
    if rel in RESERVED_NAMES:
        return f"{rel!r} is the manifest or its signature, not a listed file"
    return None


def check_bundle_path(rel: Any, what: str, where: str, exc: type[EdgeRuntimeError] = BundleError) -> str:
    """``rel`` when :func:`bundle_path_problem` finds nothing; else ``exc`` naming ``what``."""
    problem = bundle_path_problem(rel)
    if problem is not None:
        raise _fail(exc, where, f"{what} {problem}")
    return str(rel)


def _file_entry(rel: str, entry: Any, where: str) -> tuple[str, int | None]:
    """One ``files`` entry: ``"sha256:<hex>"`` (the first form) or ``{"sha256": ..., "size": N}``."""
    if isinstance(entry, Mapping):
        check_keys(entry, FILE_ENTRY_KEYS, f"{where}: files[{rel!r}]", strict=False)
        digest, size = entry.get("sha256"), entry.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise _fail(BundleError, where, f"files[{rel!r}].size must be a whole number of bytes >= 0, got {size!r}")
    else:
        digest, size = entry, None
    if not isinstance(digest, str) or not SHA256_PATTERN.fullmatch(digest):
        raise _fail(
            BundleError, where, f"files[{rel!r}] must be 'sha256:<hex>' (64 lowercase hex digits), got {digest!r}"
        )
    return digest, size


def _names(value: Any, key: str, where: str, exc: type[EdgeRuntimeError]) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v for v in value):
        raise _fail(exc, where, f"{key!r} must be a non-empty list of names, got {value!r}")
    return tuple(value)


@dataclass(frozen=True)
class InputSpec:
    """How a camera frame becomes the model input.

    ``shape`` is the model input shape with the batch dimension first (batch 1 when the
    model's batch is dynamic, then ``dynamic_batch`` is true). ``layout`` is ``NCHW`` or
    ``NHWC``; ``color`` the channel order the model expects; the preprocessing computes
    ``(pixel * scale - mean) / std`` per channel.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    layout: str = "NCHW"
    color: str = "RGB"
    resize: str = "letterbox"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    scale: float = 1.0 / 255.0
    dynamic_batch: bool = False

    KEYS = (
        "name",
        "shape",
        "dtype",
        "layout",
        "color",
        "resize",
        "mean",
        "std",
        "scale",
        "dynamic_batch",
    )

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any],
        where: str,
        *,
        strict: bool = False,
        exc: type[EdgeRuntimeError] = BundleError,
    ) -> InputSpec:
        """Build from a manifest's ``input`` object or an ``--input-spec`` file."""
        if not isinstance(data, Mapping):
            raise _fail(exc, where, f"the input spec must be a mapping, got {type(data).__name__}")
        check_keys(data, cls.KEYS, where, strict=strict, exc=exc)
        shape = _get(data, "shape", list, where, exc)
        if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
            raise _fail(exc, where, f"'shape' must be a list of positive integers, got {shape!r}")
        spec = cls(
            name=_get(data, "name", str, where, exc),
            shape=tuple(shape),
            dtype=_choice(_get(data, "dtype", str, where, exc, "float32"), INPUT_DTYPES, "dtype", where, exc),
            layout=_choice(_get(data, "layout", str, where, exc, "NCHW"), LAYOUTS, "layout", where, exc),
            color=_choice(_get(data, "color", str, where, exc, "RGB"), COLORS, "color", where, exc),
            resize=_choice(_get(data, "resize", str, where, exc, "letterbox"), RESIZE_MODES, "resize", where, exc),
            mean=_floats(data.get("mean", (0.0, 0.0, 0.0)), "mean", where, exc),
            std=_floats(data.get("std", (1.0, 1.0, 1.0)), "std", where, exc),
            scale=_get(data, "scale", float, where, exc, 1.0 / 255.0),
            dynamic_batch=_get(data, "dynamic_batch", bool, where, exc, False),
        )
        spec.validate(where, exc)
        return spec

    def validate(self, where: str, exc: type[EdgeRuntimeError] = BundleError) -> None:
        """Check that the fields agree with each other (rank, channels, std)."""
        if len(self.shape) != 4:
            raise _fail(exc, where, f"image input shape must have 4 dims (N,C,H,W or N,H,W,C), got {list(self.shape)}")
        channels = self.channels
        if channels not in (1, 3, 4):
            raise _fail(
                exc,
                where,
                f"layout {self.layout} with shape {list(self.shape)} means {channels} channels; "
                "expected 1, 3 or 4 (wrong layout?)",
            )
        for key, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                raise _fail(exc, where, f"{key!r} has {len(values)} values but the input has {channels} channels")
        if any(s == 0 for s in self.std):
            raise _fail(exc, where, "'std' must not contain 0")

    @property
    def channels(self) -> int:
        """Number of colour channels, read from ``shape`` by ``layout``."""
        return self.shape[1] if self.layout == "NCHW" else self.shape[3]

    @property
    def height_width(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        if self.layout == "NCHW":
            return self.shape[2], self.shape[3]
        return self.shape[1], self.shape[2]

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``input`` object."""
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "layout": self.layout,
            "color": self.color,
            "resize": self.resize,
            "mean": list(self.mean),
            "std": list(self.std),
            "scale": self.scale,
            "dynamic_batch": self.dynamic_batch,
        }


@dataclass(frozen=True)
class TensorInfo:
    """Element type and shape of a named tensor; a dimension is an int or a symbolic name."""

    dtype: str
    shape: tuple[int | str, ...] | None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str) -> TensorInfo:
        if not isinstance(data, Mapping):
            raise _fail(BundleError, where, f"must be an object with 'dtype' and 'shape', got {data!r}")
        check_keys(data, ("dtype", "shape"), where, strict=False)
        shape = data.get("shape")
        if shape is not None and (not isinstance(shape, list) or not all(isinstance(d, (int, str)) for d in shape)):
            raise _fail(BundleError, where, f"'shape' must be a list of ints or names, got {shape!r}")
        return cls(dtype=_get(data, "dtype", str, where, BundleError), shape=None if shape is None else tuple(shape))

    def to_dict(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "shape": None if self.shape is None else list(self.shape)}


@dataclass(frozen=True)
class Artifact:
    """One file that implements a graph (trunk or head) in one format and precision."""

    format: str
    precision: str
    path: str
    layout: str | None = None
    fidelity: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    KEYS = ("format", "precision", "path", "layout", "fidelity")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str) -> Artifact:
        if not isinstance(data, Mapping):
            raise _fail(BundleError, where, f"an artifact must be an object, got {data!r}")
        extra = {k: v for k, v in data.items() if k not in cls.KEYS}
        path = check_bundle_path(_get(data, "path", str, where, BundleError), "artifact path", where)
        return cls(
            format=_choice(
                _get(data, "format", str, where, BundleError), ARTIFACT_FORMATS, "format", where, BundleError
            ),
            precision=_choice(
                _get(data, "precision", str, where, BundleError), PRECISIONS, "precision", where, BundleError
            ),
            path=path,
            layout=_get(data, "layout", str, where, BundleError, None),
            fidelity=_get(data, "fidelity", dict, where, BundleError, None),
            extra=extra,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": self.format, "precision": self.precision, "path": self.path}
        if self.layout is not None:
            out["layout"] = self.layout
        if self.fidelity is not None:
            out["fidelity"] = dict(self.fidelity)
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class DecoderSpec:
    """Which decoder turns a head's raw outputs into a result, and its parameters."""

    type: str = "raw"
    params: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any],
        where: str,
        *,
        strict: bool = False,
        exc: builtins.type[EdgeRuntimeError] = BundleError,
    ) -> DecoderSpec:
        if not isinstance(data, Mapping):
            raise _fail(exc, where, f"'decoder' must be a mapping with a 'type', got {data!r}")
        kind = _choice(_get(data, "type", str, where, exc, "raw"), tuple(DECODER_PARAMS), "type", where, exc)
        params = {k: v for k, v in data.items() if k != "type"}
        check_keys(params, DECODER_PARAMS[kind], f"{where} ({kind} decoder)", strict=strict, exc=exc)
        return cls(type=kind, params=params)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **self.params}


@dataclass(frozen=True)
class Schedule:
    """When a head runs: every N frames, optionally only when another head's result matches."""

    every_n_frames: int = 1
    when: Mapping[str, Any] | None = None
    enabled: bool = True

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any],
        where: str,
        *,
        strict: bool = False,
        exc: type[EdgeRuntimeError] = BundleError,
    ) -> Schedule:
        if not isinstance(data, Mapping):
            raise _fail(exc, where, f"'schedule' must be a mapping, got {data!r}")
        check_keys(data, SCHEDULE_KEYS, where, strict=strict, exc=exc)
        every = _get(data, "every_n_frames", int, where, exc, 1)
        if every < 1:
            raise _fail(exc, where, f"'every_n_frames' must be >= 1, got {every}")
        when = _get(data, "when", dict, where, exc, None)
        if when is not None:
            check_keys(when, WHEN_KEYS, f"{where}.when", strict=strict, exc=exc)
            _get(when, "head", str, f"{where}.when", exc)
        return cls(every_n_frames=every, when=when, enabled=_get(data, "enabled", bool, where, exc, True))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"every_n_frames": self.every_n_frames}
        if self.when is not None:
            out["when"] = dict(self.when)
        if not self.enabled:
            out["enabled"] = False
        return out


@dataclass(frozen=True)
class GraphEntry:
    """The trunk or one head: its boundary tensor names and its artifacts."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    artifacts: tuple[Artifact, ...]
    decoder: DecoderSpec | None = None
    schedule: Schedule | None = None
    qos: int | None = None
    expiry_s: float | None = None
    fidelity: Mapping[str, Any] | None = None

    HEAD_KEYS = ("inputs", "outputs", "artifacts", "decoder", "schedule", "qos", "expiry_s", "fidelity")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str, *, head: bool) -> GraphEntry:
        if not isinstance(data, Mapping):
            raise _fail(BundleError, where, f"must be an object, got {data!r}")
        allowed = cls.HEAD_KEYS if head else cls.HEAD_KEYS[:3]
        check_keys(data, allowed, where, strict=False)
        artifacts = _get(data, "artifacts", list, where, BundleError)
        if not artifacts:
            raise _fail(BundleError, where, "'artifacts' is empty: nothing to run")
        return cls(
            inputs=_names(data.get("inputs"), "inputs", where, BundleError),
            outputs=_names(data.get("outputs"), "outputs", where, BundleError),
            artifacts=tuple(Artifact.from_mapping(a, f"{where}.artifacts[{i}]") for i, a in enumerate(artifacts)),
            decoder=DecoderSpec.from_mapping(data.get("decoder", {}), f"{where}.decoder") if head else None,
            schedule=Schedule.from_mapping(data.get("schedule", {}), f"{where}.schedule") if head else None,
            qos=_get(data, "qos", int, where, BundleError, None) if head else None,
            expiry_s=_get(data, "expiry_s", float, where, BundleError, None) if head else None,
            fidelity=_get(data, "fidelity", dict, where, BundleError, None) if head else None,
        )

    def artifact(self, fmt: str, precision: str) -> Artifact | None:
        """The artifact of that format and precision, if the bundle has one."""
        return next((a for a in self.artifacts if a.format == fmt and a.precision == precision), None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "artifacts": [a.to_dict() for a in self.artifacts],
        }
        if self.decoder is not None:
            out["decoder"] = self.decoder.to_dict()
        if self.schedule is not None:
            out["schedule"] = self.schedule.to_dict()
        for key in ("qos", "expiry_s", "fidelity"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


#: Per-head self-test tolerance keys: fp32 ``|candidate - expected| <= rtol * range + atol``,
#: fp16/int8 cosine similarity per output ``>= min_cosine``.
SELFTEST_TOLERANCE_KEYS = ("rtol", "atol", "min_cosine")


@dataclass(frozen=True)
class SelfTestSpec:
    """The manifest's ``selftest`` section: golden frames and the float model's outputs for them.

    ``frames``: ``.npy`` of ``(N, H, W, 3) uint8`` RGB frames; ``expected``: ``.npz`` of the raw
    float32 outputs (keys ``<head>/<output>``, each ``(N, *shape)``); ``decoded``: the decoded
    results as JSON, for people; ``tolerance``: head -> overrides of the bounds
    (:data:`SELFTEST_TOLERANCE_KEYS`). Paths are relative to the bundle.
    """

    frames: str
    expected: str
    decoded: str | None = None
    tolerance: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    KEYS = ("frames", "expected", "decoded", "tolerance")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str) -> SelfTestSpec:
        if not isinstance(data, Mapping):
            raise _fail(BundleError, where, f"'selftest' must be an object, got {data!r}")
        check_keys(data, cls.KEYS, where, strict=False)
        paths: dict[str, str | None] = {}
        for key in ("frames", "expected", "decoded"):
            path = _get(data, key, str, where, BundleError, None if key == "decoded" else ...)
            paths[key] = None if path is None else check_bundle_path(path, f"{key} path", where)
        tolerance: dict[str, dict[str, float]] = {}
        for head, bounds in _get(data, "tolerance", dict, where, BundleError, {}).items():
            here = f"{where}.tolerance.{head}"
            if not isinstance(bounds, Mapping):
                raise _fail(BundleError, here, f"must be an object with {', '.join(SELFTEST_TOLERANCE_KEYS)}")
            check_keys(bounds, SELFTEST_TOLERANCE_KEYS, here, strict=False)
            tolerance[str(head)] = {}
            for key in SELFTEST_TOLERANCE_KEYS:
                value = _get(bounds, key, float, here, BundleError, None)
                if value is not None:
                    if not 0.0 <= value or (key == "min_cosine" and value > 1.0):
                        raise _fail(BundleError, here, f"{key!r} out of range: {value!r}")
                    tolerance[str(head)][key] = value
        return cls(
            frames=str(paths["frames"]),
            expected=str(paths["expected"]),
            decoded=paths["decoded"],
            tolerance=tolerance,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"frames": self.frames, "expected": self.expected}
        if self.decoded is not None:
            out["decoded"] = self.decoded
        out["tolerance"] = {head: dict(bounds) for head, bounds in self.tolerance.items()}
        return out


@dataclass(frozen=True)
class Manifest:
    """The whole ``manifest.json`` of a bundle."""

    name: str
    version: str
    created: str
    exporter: str
    input: InputSpec
    trunk: GraphEntry
    heads: Mapping[str, GraphEntry]
    files: Mapping[str, str]
    tensors: Mapping[str, TensorInfo] = field(default_factory=dict)
    #: Size in bytes of each listed file, where the manifest records it (exporters since the
    #: size was added); files of older manifests have a hash only.
    file_sizes: Mapping[str, int] = field(default_factory=dict)
    format: str = FORMAT
    split: Mapping[str, Any] = field(default_factory=dict)
    selftest: SelfTestSpec | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    KEYS = (
        "format",
        "name",
        "version",
        "created",
        "exporter",
        "input",
        "trunk",
        "heads",
        "files",
        "tensors",
        "split",
        "selftest",
    )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "manifest.json") -> Manifest:
        """Validate a parsed manifest; raise :class:`BundleError` naming the bad field."""
        if not isinstance(data, Mapping):
            raise BundleError(f"{where}: the manifest must be a JSON object")
        fmt = _get(data, "format", str, where, BundleError)
        family, _, major = fmt.partition("/")
        if family != "edge-bundle" or not major.isdigit():
            raise BundleError(f"{where}: 'format' is {fmt!r}, expected {FORMAT!r}")
        if int(major) != FORMAT_MAJOR:
            raise BundleError(
                f"{where}: bundle format {fmt!r} is not supported by this runtime (reads {FORMAT!r}); "
                "re-export the bundle or upgrade edge-runtime"
            )
        extra = {k: v for k, v in data.items() if k not in cls.KEYS}
        for key in extra:
            logger.warning("%s: ignoring unknown key %r (written by a newer exporter?)", where, key)
        heads = _get(data, "heads", dict, where, BundleError)
        if not heads:
            raise BundleError(f"{where}: 'heads' is empty: a bundle needs at least one head")
        files: dict[str, str] = {}
        file_sizes: dict[str, int] = {}
        for path, entry in _get(data, "files", dict, where, BundleError).items():
            check_bundle_path(path, "files key", where)
            files[path], size = _file_entry(path, entry, where)
            if size is not None:
                file_sizes[path] = size
        tensors = _get(data, "tensors", dict, where, BundleError, {})
        return cls(
            format=fmt,
            name=_get(data, "name", str, where, BundleError),
            version=str(_get(data, "version", (str, int), where, BundleError)),
            created=_get(data, "created", str, where, BundleError, ""),
            exporter=_get(data, "exporter", str, where, BundleError, ""),
            input=InputSpec.from_mapping(_get(data, "input", dict, where, BundleError), f"{where}: input"),
            trunk=GraphEntry.from_mapping(_get(data, "trunk", dict, where, BundleError), f"{where}: trunk", head=False),
            heads={
                name: GraphEntry.from_mapping(entry, f"{where}: heads.{name}", head=True)
                for name, entry in heads.items()
            },
            files=files,
            file_sizes=file_sizes,
            tensors={name: TensorInfo.from_mapping(info, f"{where}: tensors.{name}") for name, info in tensors.items()},
            split=_get(data, "split", dict, where, BundleError, {}),
            selftest=(
                SelfTestSpec.from_mapping(data["selftest"], f"{where}: selftest") if "selftest" in data else None
            ),
            extra=extra,
        )

    def graphs(self) -> dict[str, GraphEntry]:
        """The trunk (key ``"trunk"``) and every head, by name."""
        return {"trunk": self.trunk, **self.heads}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict in the contract's key order."""
        return {
            "format": self.format,
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "exporter": self.exporter,
            "input": self.input.to_dict(),
            "trunk": self.trunk.to_dict(),
            "heads": {name: head.to_dict() for name, head in self.heads.items()},
            "tensors": {name: info.to_dict() for name, info in self.tensors.items()},
            **({"split": dict(self.split)} if self.split else {}),
            **({"selftest": self.selftest.to_dict()} if self.selftest is not None else {}),
            **self.extra,
            "files": {
                rel: {"sha256": digest, "size": self.file_sizes[rel]} if rel in self.file_sizes else digest
                for rel, digest in self.files.items()
            },
        }
