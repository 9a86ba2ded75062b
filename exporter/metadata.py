"""What a model file says about itself: class labels, input size, strides, preprocessing hints.

Published models carry their class names and input size in the ONNX ``metadata_props``
(Ultralytics: ``names`` = ``"{0: 'person', ...}"``, ``imgsz`` = ``"[640, 640]"``, ``stride``,
``kpt_shape``; PaddleOCR/RapidAI-style models: ``character`` or ``labels`` as a list or one name
per line). :func:`read_metadata` reads them, tolerantly (a value it cannot parse is ignored with
a debug line); :func:`with_metadata_defaults` makes them head-spec defaults: a detection or
classification head without ``labels`` gets the metadata's, a head spec that gives different
labels wins with a warning.

Example::

    meta = read_metadata(onnx.load("yolov8n.onnx"))
    meta.labels, meta.input_size, meta.strides   # ('person', ...), (640, 640), (8, 16, 32)
"""

from __future__ import annotations

import ast
import json
import logging
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


def read_metadata(model: onnx.ModelProto) -> ModelMetadata:
    """The labels, input size, strides and keypoint shape in ``model``'s metadata."""
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
    return ModelMetadata(
        labels=labels,
        labels_key=key,
        input_size=input_size,
        strides=strides,
        keypoint_shape=keypoints,
        task=props.get("task"),
        props=props,
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
