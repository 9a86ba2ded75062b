"""The exporter's user files: the input spec and the head spec.

``--input-spec FILE`` (YAML/TOML/JSON) holds the keys of the manifest's ``input`` object;
anything it leaves out is read from the model (name, shape, dtype) or defaulted (layout
from the shape, RGB, letterbox, scale 1/255, mean 0, std 1).

``--head-spec FILE`` names heads, groups outputs and sets decoders and schedules::

    [heads.shape]
    outputs = ["shape_logits"]
    decoder = { type = "classification", labels = ["circle", "square", "triangle"], top_k = 3 }
    schedule = { every_n_frames = 1 }

Both are strict: an unknown key is an error naming the file, the key and close matches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from edge_runtime.bundle.fields import check_keys
from edge_runtime.bundle.specs import DecoderSpec, InputSpec, Schedule
from edge_runtime.errors import ConfigError, close_matches
from edge_runtime.specfiles import load_mapping_file
from exporter.graph import tensor_type_of

HEAD_KEYS = ("outputs", "decoder", "schedule", "qos", "expiry_s")


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


def model_input_spec(
    model: onnx.ModelProto,
    overrides: Mapping[str, Any] | None,
    where: str,
    default_size: tuple[int, int] | None = None,
) -> InputSpec:
    """The input spec: keys from ``overrides`` (a parsed ``--input-spec``), the rest from the model;
    ``default_size`` (height, width; from the model's metadata) fills a dynamic height and width."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    model_input = inputs[0]
    found = tensor_type_of(model_input)
    if found is None or found.shape is None:
        raise ConfigError(f"{where}: the model input {model_input.name!r} has no tensor shape; give 'shape'")
    data: dict[str, Any] = dict(overrides or {})
    check_keys(data, InputSpec.KEYS, where, strict=True, exc=ConfigError)
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
    if "color" not in data and len(data["shape"]) == 4:
        channels = data["shape"][1] if data["layout"] == "NCHW" else data["shape"][3]
        if channels == 1:
            data["color"] = "GRAY"
    channels = None
    if len(data["shape"]) == 4:
        channels = data["shape"][1] if data.get("layout", "NCHW") == "NCHW" else data["shape"][3]
    if channels is not None:
        data.setdefault("mean", [0.0] * channels)
        data.setdefault("std", [1.0] * channels)
    data.setdefault("dtype", found.dtype)
    if data["dtype"] != found.dtype:
        raise ConfigError(f"{where}: dtype {data['dtype']!r} but the model input is {found.dtype}")
    data.setdefault("dynamic_batch", dynamic_batch)
    return InputSpec.from_mapping(data, where, strict=True, exc=ConfigError)
