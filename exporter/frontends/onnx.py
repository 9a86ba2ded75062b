"""Load a multi-output ONNX model file, with clear errors for files that are not one.

External weights (``model.onnx.data``, as the dynamo exporter writes) are read and kept
in memory so that the graphs written later are self-contained.

Example::

    from exporter.frontends.onnx import load_onnx_model
    model = load_onnx_model("examples/demo_multitask.onnx")
"""

from __future__ import annotations

import logging
from pathlib import Path

import onnx

from edge_runtime.errors import ModelError

logger = logging.getLogger(__name__)


def load_onnx_model(path: str | Path) -> onnx.ModelProto:
    """Read and check an ONNX file; raise :class:`ModelError` naming the file and the problem."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if not path.is_file():
        raise ModelError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise ModelError(f"{path}: empty file, not an ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{path}: not an ONNX model (or truncated): {exc}") from exc
    if not model.graph.node or not model.opset_import:
        raise ModelError(f"{path}: not an ONNX model (no graph nodes or no opset)")
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        try:
            onnx.load_external_data_for_model(model, str(path.parent))
        except Exception as exc:
            raise ModelError(f"{path}: cannot read its external weights (the .onnx.data file?): {exc}") from exc
        logger.info("%s: inlined external weights", path)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: not a valid ONNX model: {message}") from exc
    return model
