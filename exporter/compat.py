"""Make an ONNX model loadable by the oldest runtime a device may have.

Python 3.10 on aarch64 (Jetson, JetPack 6) resolves onnxruntime 1.23.x. Measured here with
``onnxruntime==1.23.2``: it loads IR version <= 11 and default-domain opset <= 23, and
refuses IR 12 or opset 24. Per-channel QDQ quantization needs opset >= 13
(``DequantizeLinear`` has no ``axis`` before), so older graphs are upgraded first.

Example::

    model, notes = make_device_compatible(onnx.load("model.onnx"))
"""

from __future__ import annotations

import logging

import onnx
from onnx import version_converter

from edge_runtime.errors import ModelError

logger = logging.getLogger(__name__)

MIN_OPSET = 13
MAX_OPSET = 23
MAX_IR_VERSION = 11


def default_opset(model: onnx.ModelProto) -> int:
    """The model's ``ai.onnx`` opset version (the default domain)."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ModelError("the model imports no default-domain (ai.onnx) opset")


def make_device_compatible(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Return a copy of the model with opset in [13, 23] and IR version <= 11, and notes on
    what changed. The caller's model is left as it was."""
    notes: list[str] = []
    original = model
    model = onnx.ModelProto()
    model.CopyFrom(original)
    opset = default_opset(model)
    target = min(max(opset, MIN_OPSET), MAX_OPSET)
    if target != opset:
        reason = (
            "per-channel quantization needs opset >= 13"
            if opset < MIN_OPSET
            else f"onnxruntime 1.23 (Python 3.10 devices) loads opset <= {MAX_OPSET}"
        )
        try:
            model = version_converter.convert_version(model, target)
        except Exception as exc:
            raise ModelError(f"cannot convert the model from opset {opset} to {target} ({reason}): {exc}") from exc
        notes.append(f"converted opset {opset} -> {target} ({reason})")
    if model.ir_version > MAX_IR_VERSION:
        notes.append(
            f"IR version {model.ir_version} -> {MAX_IR_VERSION} (onnxruntime 1.23 loads IR <= {MAX_IR_VERSION})"
        )
        model.ir_version = MAX_IR_VERSION
    initializer_names = {t.name for t in model.graph.initializer}
    as_inputs = [i for i in model.graph.input if i.name in initializer_names]
    if as_inputs:
        kept = [i for i in model.graph.input if i.name not in initializer_names]
        del model.graph.input[:]
        model.graph.input.extend(kept)
        notes.append(f"dropped {len(as_inputs)} initializers listed as graph inputs (old-opset export)")
        if model.ir_version < 4:
            model.ir_version = 4
    for note in notes:
        logger.info("compatibility: %s", note)
    return model, notes
