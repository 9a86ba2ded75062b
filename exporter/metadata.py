"""What a model file says about itself: class labels, input size, strides, preprocessing.

Published models carry their class names and input size in the ONNX ``metadata_props``
(Ultralytics: ``names`` = ``"{0: 'person', ...}"``, ``imgsz`` = ``"[640, 640]"``, ``stride``,
``kpt_shape``; PaddleOCR/RapidAI-style models: ``character`` or ``labels`` as a list or one name
per line). :func:`read_metadata` reads them, tolerantly (a value it cannot parse is ignored with
a debug line); :func:`with_metadata_defaults` makes them head-spec defaults: a detection or
classification head without ``labels`` gets the metadata's, a head spec that gives different
labels wins with a warning.

Preprocessing (:attr:`ModelMetadata.preprocessing`, input-spec keys) is read from the keys
``mean``, ``std`` (a number or a list; any value > 1 means pixel units 0..255, so ``scale`` 1,
else 0..1 units, so ``scale`` 1/255), ``scale`` (a number or ``"1/255"``), ``color`` or
``channel_order`` (``RGB``/``BGR``) and ``resize`` (``letterbox``/``stretch``/``center_crop``);
an Ultralytics export (``author`` naming Ultralytics, or all of ``names``, ``imgsz``, ``stride``
and ``task``) is fed as Ultralytics feeds it: RGB, scale 1/255, mean 0, std 1, a centred
letterbox padded with 114 (``task = "classify"``: a centre crop). Explicit keys win over that
convention. Only ONNX ``metadata_props`` are read (TFLite metadata is not).

Example::

    meta = read_metadata(onnx.load("yolov8n.onnx"))
    meta.labels, meta.input_size, meta.strides   # ('person', ...), (640, 640), (8, 16, 32)
    meta.preprocessing["resize"], meta.preprocessing_from["resize"]  # 'letterbox', 'Ultralytics export'
"""

from __future__ import annotations

import ast
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import onnx

from edge_runtime.bundle.specs import DecoderSpec

logger = logging.getLogger(__name__)

#: Metadata keys that may hold the class labels, in the order they are tried.
LABEL_KEYS = ("names", "labels", "classes", "class_names", "character")
#: Decoder types whose ``labels`` parameter names classes.
LABELLED_DECODERS = ("detection", "grid", "ssd", "classification")
#: Metadata keys that state preprocessing, and the input-spec key each gives.
PREPROCESSING_PROPS = {
    "mean": "mean",
    "std": "std",
    "scale": "scale",
    "color": "color",
    "channel_order": "color",
    "resize": "resize",
}
#: The metadata keys every Ultralytics export has (with ``author``, which names Ultralytics).
ULTRALYTICS_KEYS = frozenset({"names", "imgsz", "stride", "task"})
#: How Ultralytics feeds its models (``LetterBox``: centred, grey 114; RGB; /255; no mean/std).
ULTRALYTICS_PREPROCESSING: Mapping[str, Any] = {
    "color": "RGB",
    "scale": 1.0 / 255.0,
    "mean": [0.0],
    "std": [1.0],
    "resize": "letterbox",
    "pad_value": 114.0,
    "pad_position": "center",
}


@dataclass(frozen=True)
class ModelMetadata:
    """The parts of a model's metadata the exporter uses (``None`` = not stated)."""

    labels: tuple[str, ...] | None = None
    labels_key: str | None = None
    input_size: tuple[int, int] | None = None  # (height, width)
    strides: tuple[int, ...] | None = None
    keypoint_shape: tuple[int, ...] | None = None
    task: str | None = None
    props: Mapping[str, str] = field(default_factory=dict)
    #: Input-spec keys (``color``, ``scale``, ``mean``, ``std``, ``resize``, ``pad_*``) -> value.
    preprocessing: Mapping[str, Any] = field(default_factory=dict)
    #: The same keys -> where the metadata says so (``"'mean'"``, ``"Ultralytics export"``).
    preprocessing_from: Mapping[str, str] = field(default_factory=dict)


def _parse(value: str) -> Any:
    """A metadata string as JSON or a Python literal, else the string itself."""
    text = value.strip()
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return text


def _labels(value: str) -> tuple[str, ...] | None:
    parsed = _parse(value)
    if isinstance(parsed, Mapping) and parsed and all(isinstance(k, int) for k in parsed):
        keys = sorted(parsed)
        if keys == list(range(len(keys))) and all(isinstance(parsed[k], str) for k in keys):
            return tuple(str(parsed[k]) for k in keys)
        return None
    if isinstance(parsed, (list, tuple)) and parsed and all(isinstance(v, str) for v in parsed):
        return tuple(parsed)
    if isinstance(parsed, str):
        sep = "\n" if "\n" in parsed else "," if "," in parsed else None
        names = [n.strip() for n in parsed.split(sep)] if sep else [parsed.strip()]
        names = [n for n in names if n]
        return tuple(names) if len(names) > 1 else None
    return None


def _ints(value: str) -> tuple[int, ...] | None:
    parsed = _parse(value)
    if isinstance(parsed, int) and not isinstance(parsed, bool):
        return (parsed,)
    if isinstance(parsed, (list, tuple)) and parsed and all(isinstance(v, int) for v in parsed):
        return tuple(int(v) for v in parsed)
    return None


def _numbers(value: str) -> list[float] | None:
    """A number or a list of numbers (JSON, a Python literal, or separated by commas/spaces)."""
    parsed = _parse(value)
    if isinstance(parsed, str):
        parts = [p for p in re.split(r"[,;\s]+", parsed.strip().strip("[]()")) if p]
        try:
            parsed = [float(p) for p in parts]
        except ValueError:
            return None
    if isinstance(parsed, (int, float)) and not isinstance(parsed, bool):
        parsed = [parsed]
    if not isinstance(parsed, (list, tuple)) or not parsed:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in parsed):
        return None
    numbers = [float(v) for v in parsed]
    return numbers if all(v == v and abs(v) != float("inf") for v in numbers) else None


def _scale(value: str) -> float | None:
    """A positive number, or a fraction ``"1/255"``."""
    numerator, sep, denominator = value.partition("/")
    top, bottom = _numbers(numerator), _numbers(denominator) if sep else [1.0]
    if top is None or bottom is None or len(top) != 1 or len(bottom) != 1 or bottom[0] == 0:
        return None
    result = top[0] / bottom[0]
    return result if result > 0 else None


def _preprocessing(props: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The preprocessing ``props`` state, as input-spec keys, and where each value came from."""
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    if "ultralytics" in props.get("author", "").lower() or ULTRALYTICS_KEYS <= props.keys():
        values.update(ULTRALYTICS_PREPROCESSING)
        if props.get("task") == "classify":  # classify_transforms: resize the short side, centre crop
            values["resize"] = "center_crop"
            del values["pad_value"], values["pad_position"]
        origin.update(dict.fromkeys(values, "Ultralytics export"))
    for prop, key in PREPROCESSING_PROPS.items():
        if prop not in props or (prop == "channel_order" and "color" in props):
            continue
        raw = props[prop]
        if key in ("mean", "std"):
            value: Any = _numbers(raw)
        elif key == "scale":
            value = _scale(raw)
        else:
            text = raw.strip().strip("'\"")
            value = text.upper() if key == "color" else text.lower().replace("-", "_")
            if value not in (("RGB", "BGR") if key == "color" else ("letterbox", "stretch", "center_crop")):
                value = None
        if value is None or (key == "std" and 0.0 in value):
            logger.debug("metadata %r does not state a usable %s: %.80s", prop, key, raw)
            continue
        values[key] = value
        origin[key] = repr(prop)
    stated = [k for k in ("mean", "std") if origin.get(k) == repr(k)]
    if stated and origin.get("scale") != "'scale'":
        pixels = any(v > 1.0 for k in stated for v in values[k])
        values["scale"] = 1.0 if pixels else 1.0 / 255.0
        origin["scale"] = f"{'/'.join(repr(k) for k in stated)} in {'0..255' if pixels else '0..1'} units"
    return values, origin


def read_metadata(model: onnx.ModelProto) -> ModelMetadata:
    """The labels, input size, strides, keypoint shape and preprocessing in ``model``'s metadata."""
    props = {p.key: p.value for p in model.metadata_props}
    labels = key = None
    for candidate in LABEL_KEYS:
        if candidate in props:
            labels = _labels(props[candidate])
            if labels is not None and len(set(labels)) == len(labels):
                key = candidate
                break
            logger.debug("metadata %r is not a list of distinct labels: %.80s", candidate, props[candidate])
            labels = None
    size = _ints(props["imgsz"]) if "imgsz" in props else None
    input_size = (size[0], size[-1]) if size and len(size) in (1, 2) else None
    stride = _ints(props["stride"]) if "stride" in props else None
    strides = None
    if stride:
        # Ultralytics stores the largest stride; its levels are 8, 16, ... up to it
        strides = stride if len(stride) > 1 else tuple(s for s in (8, 16, 32, 64, 128) if s <= stride[0])
    keypoints = _ints(props["kpt_shape"]) if "kpt_shape" in props else None
    preprocessing, preprocessing_from = _preprocessing(props)
    return ModelMetadata(
        labels=labels,
        labels_key=key,
        input_size=input_size,
        strides=strides,
        keypoint_shape=keypoints,
        task=props.get("task"),
        props=props,
        preprocessing=preprocessing,
        preprocessing_from=preprocessing_from,
    )


def with_metadata_defaults(spec: DecoderSpec, meta: ModelMetadata, head: str, where: str) -> tuple[DecoderSpec, bool]:
    """``spec`` with the metadata's labels as the default ``labels``; ``(spec, labels_added)``.
    A spec whose labels differ from the metadata's keeps its own (a warning says so)."""
    if spec.type not in LABELLED_DECODERS or meta.labels is None:
        return spec, False
    given = spec.params.get("labels")
    if given is None:
        return DecoderSpec(spec.type, {**spec.params, "labels": list(meta.labels)}), True
    if tuple(given) != meta.labels:
        logger.warning(
            "%s: head %r gives %d labels (%s...) but the model's metadata %r lists %d (%s...); the head spec wins",
            where, head, len(given), ", ".join(map(str, given[:3])), meta.labels_key, len(meta.labels),
            ", ".join(meta.labels[:3]),
        )  # fmt: skip
    return spec, False
