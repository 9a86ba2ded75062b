"""The exporter's user files: the input spec and the head spec.

``--input-spec FILE`` (YAML/TOML/JSON) holds the keys of the manifest's ``input`` object;
anything it leaves out is read from the model (name, shape, dtype, layout from the shape), from
the preprocessing its metadata states (:mod:`exporter.metadata`; an input spec that says
otherwise wins, with a warning), or defaulted: RGB, letterbox, scale 1/255, mean 0, std 1.
Defaulted preprocessing is never silent: the spec lists those keys in ``assumed`` (the
manifest keeps them) and :func:`assumed_warning` is the line ``split`` logs about them.

``--head-spec FILE`` names heads, groups outputs and sets decoders and schedules::

    [heads.shape]
    outputs = ["shape_logits"]
    decoder = { type = "classification", labels = ["circle", "square", "triangle"], top_k = 3 }
    schedule = { every_n_frames = 1 }

Both are strict: an unknown key is an error naming the file, the key and close matches.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edge_runtime.bundle.fields import check_keys
from edge_runtime.bundle.specs import DecoderSpec, InputSpec, Schedule
from edge_runtime.errors import ConfigError, close_matches
from edge_runtime.specfiles import load_mapping_file
from exporter.graph import tensor_type_of
from exporter.metadata import ModelMetadata, read_metadata

logger = logging.getLogger(__name__)

HEAD_KEYS = ("outputs", "decoder", "schedule", "qos", "expiry_s")
#: The preprocessing an input spec should state: defaulted ones are listed in ``assumed``.
ASSUMABLE_KEYS = ("color", "scale", "mean", "std", "resize")
_NORMALISATION = ("scale", "mean", "std")


@dataclass(frozen=True)
class HeadDefinition:
    """What the user says about one head (from ``--head-spec`` or ``--task``)."""

    name: str
    outputs: tuple[str, ...] | None = None
    decoder: DecoderSpec = field(default_factory=DecoderSpec)
    schedule: Schedule = field(default_factory=Schedule)
    qos: int | None = None
    expiry_s: float | None = None


def load_head_spec(path: str | Path) -> dict[str, HeadDefinition]:
    """Parse a head spec file into head definitions keyed by head name."""
    where = str(path)
    data = load_mapping_file(path)
    check_keys(data, ("heads",), where, strict=True, exc=ConfigError)
    heads = data.get("heads")
    if not isinstance(heads, Mapping) or not heads:
        raise ConfigError(f"{where}: 'heads' must be a table with one entry per head")
    result: dict[str, HeadDefinition] = {}
    for name, entry in heads.items():
        at = f"{where}: heads.{name}"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{at}: must be a table, got {entry!r}")
        check_keys(entry, HEAD_KEYS, at, strict=True, exc=ConfigError)
        outputs = entry.get("outputs")
        if outputs is not None:
            if isinstance(outputs, str):
                outputs = [outputs]
            if not isinstance(outputs, list) or not outputs or not all(isinstance(o, str) for o in outputs):
                raise ConfigError(f"{at}: 'outputs' must be a non-empty list of output names")
        qos = entry.get("qos")
        if qos is not None and qos not in (0, 1, 2):
            raise ConfigError(f"{at}: 'qos' must be 0, 1 or 2, got {qos!r}")
        expiry = entry.get("expiry_s")
        if expiry is not None and (not isinstance(expiry, (int, float)) or isinstance(expiry, bool) or expiry <= 0):
            raise ConfigError(f"{at}: 'expiry_s' must be a positive number of seconds, got {expiry!r}")
        result[str(name)] = HeadDefinition(
            name=str(name),
            outputs=None if outputs is None else tuple(outputs),
            decoder=DecoderSpec.from_mapping(entry.get("decoder", {}), f"{at}.decoder", strict=True, exc=ConfigError),
            schedule=Schedule.from_mapping(entry.get("schedule", {}), f"{at}.schedule", strict=True, exc=ConfigError),
            qos=qos,
            expiry_s=None if expiry is None else float(expiry),
        )
    return result


def parse_task_flags(values: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """``["det=boxes,scores", "seg=mask"]`` → ``{"det": ("boxes", "scores"), "seg": ("mask",)}``."""
    tasks: dict[str, tuple[str, ...]] = {}
    for value in values:
        name, sep, outs = value.partition("=")
        outputs = tuple(o.strip() for o in outs.split(",") if o.strip())
        if not sep or not name.strip() or not outputs:
            raise ConfigError(f"--task {value!r}: expected NAME=OUTPUT[,OUTPUT...]")
        if name.strip() in tasks:
            raise ConfigError(f"--task {name.strip()!r} is given twice")
        tasks[name.strip()] = outputs
    return tasks


def _spatial_axes(shape: Sequence[int | str | None]) -> tuple[int, int]:
    """The (height, width) axes of a 4-d image input: NHWC when the last dim is 1/3/4 channels."""
    if len(shape) == 4 and shape[3] in (1, 3, 4) and shape[1] not in (1, 3, 4):
        return (1, 2)
    return (2, 3)


def format_input_value(key: str, value: Any) -> str:
    """An input-spec value for people: ``1/255``, ``[0.485, 0.456, 0.406]``, ``114``, ``RGB``."""
    if key == "scale" and math.isclose(float(value), 1.0 / 255.0, rel_tol=1e-6):
        return "1/255"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(f"{float(v):g}" for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe_input(spec: InputSpec, keys: Sequence[str]) -> str:
    """``"color RGB, scale 1/255, ..."``: ``keys`` of ``spec`` with their values."""
    return ", ".join(f"{key} {format_input_value(key, getattr(spec, key))}" for key in keys)


def assumed_warning(spec: InputSpec) -> str | None:
    """The line ``split`` logs when ``spec`` has preprocessing that nothing stated (None when none)."""
    if not spec.assumed:
        return None
    return (
        f"input: ASSUMED {describe_input(spec, spec.assumed)} (no --input-spec value and nothing in the model's "
        "metadata); a model trained on other input (BGR, 0..255, ImageNet mean/std) is then calibrated and gated "
        "on the wrong input and finds nothing on real frames: give --input-spec"
    )


def _affine(values: Mapping[str, Any], channels: int) -> tuple[Any, Any]:
    """Per-channel ``(scale / std, mean / std)``: what the normalisation does to a pixel."""
    mean = np.broadcast_to(np.asarray(values["mean"], dtype=np.float64), (channels,))
    std = np.broadcast_to(np.asarray(values["std"], dtype=np.float64), (channels,))
    return float(values["scale"]) / std, mean / std


def _from_metadata(data: dict[str, Any], meta: ModelMetadata, channels: int | None, where: str) -> list[str]:
    """Fill the keys ``data`` leaves out from the metadata's preprocessing; the keys taken."""
    taken: list[str] = []
    for key, value in meta.preprocessing.items():
        if key in data or (key == "color" and channels == 1):
            continue
        if key in ("mean", "std") and channels is not None:
            if len(value) not in (1, channels):
                logger.warning(
                    "%s: the model's metadata (%s) gives %d %s values for %d channels; ignored",
                    where, meta.preprocessing_from[key], len(value), key, channels,
                )  # fmt: skip
                continue
            value = list(value) * (channels if len(value) == 1 else 1)
        data[key] = value
        taken.append(key)
    return taken


def _report_contradictions(spec: InputSpec, given: set[str], meta: ModelMetadata, where: str) -> None:
    """Warn when the input spec says other than the model's metadata (the input spec wins)."""
    stated = meta.preprocessing
    differ = []
    for key in sorted(given & set(stated), key=list(stated).index):
        ours, theirs = getattr(spec, key), stated[key]
        if key in ("mean", "std"):
            theirs = list(theirs) * len(ours) if len(theirs) == 1 else list(theirs)
            same = len(theirs) == len(ours) and _close(ours, theirs)
        elif key in ("scale", "pad_value"):
            same = math.isclose(ours, theirs, rel_tol=1e-5, abs_tol=1e-9)
        else:
            same = ours == theirs
        if not same:
            differ.append(key)
    fits = all(len(stated[k]) in (1, spec.channels) for k in ("mean", "std") if k in stated)
    if fits and any(k in _NORMALISATION for k in differ):  # the same normalisation in 0..255 units is no contradiction
        ours_values = {k: getattr(spec, k) for k in _NORMALISATION}
        a, b = _affine(ours_values, spec.channels)
        c, d = _affine({**ours_values, **{k: stated[k] for k in _NORMALISATION if k in stated}}, spec.channels)
        if _close(a, c) and _close(b, d):
            differ = [k for k in differ if k not in _NORMALISATION]
    if differ:
        origins = ", ".join(dict.fromkeys(meta.preprocessing_from[k] for k in differ))
        logger.warning(
            "%s: %s but the model's metadata (%s) says %s; the input spec wins",
            where, describe_input(spec, differ), origins,
            ", ".join(f"{k} {format_input_value(k, stated[k])}" for k in differ),
        )  # fmt: skip


def _close(a: Any, b: Any) -> bool:
    return bool(np.allclose(a, b, rtol=1e-4, atol=1e-6))


def model_input_spec(
    model: onnx.ModelProto,
    overrides: Mapping[str, Any] | None,
    where: str,
    default_size: tuple[int, int] | None = None,
    metadata: ModelMetadata | None = None,
) -> InputSpec:
    """The input spec: keys from ``overrides`` (a parsed ``--input-spec``), the rest from the model;
    ``default_size`` (height, width; from the model's metadata) fills a dynamic height and width.
    Preprocessing ``overrides`` leaves out comes from ``metadata`` (read from ``model`` when not
    given); what neither states is defaulted and listed in the spec's ``assumed``."""
    meta = metadata if metadata is not None else read_metadata(model)
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    model_input = inputs[0]
    found = tensor_type_of(model_input)
    if found is None or found.shape is None:
        raise ConfigError(f"{where}: the model input {model_input.name!r} has no tensor shape; give 'shape'")
    data: dict[str, Any] = dict(overrides or {})
    check_keys(data, InputSpec.KEYS, where, strict=True, exc=ConfigError)
    from_spec = set(data)
    if data.get("name", model_input.name) != model_input.name:
        hint = close_matches(str(data["name"]), [model_input.name])
        raise ConfigError(
            f"{where}: name {data['name']!r} is not the model's input{hint}; the model input is {model_input.name!r}"
        )
    data["name"] = model_input.name
    dynamic_batch = not isinstance(found.shape[0], int) if found.shape else False
    if "shape" in data:
        shape = data["shape"]
        if not isinstance(shape, list) or len(shape) != len(found.shape):
            raise ConfigError(f"{where}: 'shape' {shape!r} must have {len(found.shape)} dims like the model input")
        for axis, (given, dim) in enumerate(zip(shape, found.shape, strict=True)):
            if isinstance(dim, int) and given != dim:
                raise ConfigError(
                    f"{where}: shape[{axis}]={given!r} but the model input {model_input.name!r} has {dim} there "
                    f"(model shape {list(found.shape)})"
                )
    else:
        shape = []
        spatial = _spatial_axes(found.shape)
        for axis, dim in enumerate(found.shape):
            if isinstance(dim, int):
                shape.append(dim)
            elif axis == 0:
                shape.append(1)
            elif default_size is not None and axis in spatial:
                shape.append(default_size[spatial.index(axis)])
            else:
                raise ConfigError(
                    f"the model input {model_input.name!r} has a dynamic dimension {axis} ({dim!r}); "
                    "give the size to use in --input-spec 'shape'"
                )
        data["shape"] = shape
    if "layout" not in data and len(data["shape"]) == 4:
        s = data["shape"]
        data["layout"] = "NCHW" if s[1] in (1, 3, 4) else "NHWC" if s[3] in (1, 3, 4) else "NCHW"
    channels = None
    if len(data["shape"]) == 4:
        channels = data["shape"][1] if data.get("layout", "NCHW") == "NCHW" else data["shape"][3]
        if channels == 1:
            data.setdefault("color", "GRAY")  # the model says so: nothing to assume
    taken = _from_metadata(data, meta, channels, where)
    assumed = tuple(key for key in ASSUMABLE_KEYS if key not in data)
    if channels is not None:
        data.setdefault("mean", [0.0] * channels)
        data.setdefault("std", [1.0] * channels)
    data.setdefault("dtype", found.dtype)
    if data["dtype"] != found.dtype:
        raise ConfigError(f"{where}: dtype {data['dtype']!r} but the model input is {found.dtype}")
    data.setdefault("dynamic_batch", dynamic_batch)
    spec = replace(InputSpec.from_mapping(data, where, strict=True, exc=ConfigError), assumed=assumed)
    if taken:
        origins = ", ".join(dict.fromkeys(meta.preprocessing_from[k] for k in taken))
        logger.info("input: %s from the model's metadata (%s)", describe_input(spec, taken), origins)
    _report_contradictions(spec, from_spec, meta, where)
    return spec
