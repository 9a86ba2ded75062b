"""Per-task fidelity of a quantized head against the float model: see :mod:`edge_runtime.inference.fidelity`.

The metrics live in the runtime package (numpy only), so that the device's self-test
(:mod:`edge_runtime.trust.selftest`) measures exactly what the exporter's quantization gate measured;
this module re-exports them for the exporter.

Example::

    from exporter.fidelity import head_fidelity
    fidelity = head_fidelity("shape", spec, ["shape_logits"], float_outputs, int8_outputs, (128, 128))
"""

from __future__ import annotations

from edge_runtime.inference.fidelity import (
    DECIMALS,
    DETECTION_IOU,
    MEASURES,
    METRICS,
    Fidelity,
    Samples,
    box_iou,
    cosine_similarity,
    head_fidelity,
    match_detections,
)

__all__ = [
    "DECIMALS",
    "DETECTION_IOU",
    "MEASURES",
    "METRICS",
    "Fidelity",
    "Samples",
    "box_iou",
    "cosine_similarity",
    "head_fidelity",
    "match_detections",
]
