"""``edge-export inspect MODEL.onnx``: a model's input, outputs (with their shapes on a blank
input), metadata, and with ``--suggest-head-spec`` a head spec for the layouts recognised
(:mod:`exporter.suggest`).

Example::

    print(inspect_model("layout_cdla.onnx", suggest=True))   # a TOML head spec
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_runtime.specfiles import load_mapping_file
from exporter.compat import make_device_compatible
from exporter.frontends.onnx import load_onnx_model
from exporter.metadata import read_metadata
from exporter.specs import model_input_spec
from exporter.suggest import format_head_spec, output_shapes, suggest_heads


def inspect_model(path: str | Path, *, input_spec: str | Path | None = None, suggest: bool = False) -> str:
    """The text ``edge-export inspect MODEL`` prints: a summary, or (``suggest``) a head spec."""
    model = load_onnx_model(path)
    model, _notes = make_device_compatible(model)
    meta = read_metadata(model)
    overrides: dict[str, Any] | None = None
    where = "--input-spec"
    if input_spec is not None:
        where = str(input_spec)
        overrides = dict(load_mapping_file(input_spec))
    spec = model_input_spec(model, overrides, where, default_size=meta.input_size)
    shapes = output_shapes(model, spec.shape, spec.dtype)
    if suggest:
        return format_head_spec(suggest_heads(model, shapes, spec.height_width, meta), Path(path).name)
    lines = [f"model: {Path(path).name}", f"input: {spec.name} {list(spec.shape)} {spec.dtype} ({spec.layout})"]
    lines.append("outputs (on a blank input):")
    lines.extend(f"  {name}: {list(shape)}" for name, shape in shapes.items())
    if meta.props:
        lines.append("metadata:")
        lines.extend(f"  {key}: {value[:100]}{'...' if len(value) > 100 else ''}" for key, value in meta.props.items())
    if meta.labels:
        lines.append(
            f"class labels ({meta.labels_key}): {len(meta.labels)}: {', '.join(meta.labels[:8])}"
            + (", ..." if len(meta.labels) > 8 else "")
        )
    lines.append("a head spec to start from: edge-export inspect MODEL --suggest-head-spec > heads.toml")
    return "\n".join(lines) + "\n"
