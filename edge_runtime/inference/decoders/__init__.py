"""Decoders: from a head's raw output tensors to a typed result, one module per family.

A bundle's manifest names each head's decoder and its parameters (``"decoder": {"type":
"detection", "labels": [...], ...}``, see :data:`edge_runtime.bundle.specs.DECODER_PARAMS`).
:func:`build_decoder` checks the parameters once, when the bundle is loaded (``ConfigError``
naming the head and the parameter); the decoder is then called once per frame with the
head's output tensors (batch dimension first, item 0 decoded) and the frame's
:class:`~edge_runtime.frames.geometry.FrameGeometry`, and checks the tensors' shapes (``ModelError``
naming the head, the output and the shape). Only numpy, vectorised: this runs on a
Raspberry Pi for every frame.

Families (``type``: outputs with the batch dimension → result):

- ``classification``: ``(1, C)`` logits or probabilities → :class:`Classification` (top-k);
- ``detection`` (YOLO rows, boxes already coordinates): ``(1, N, 4+C)``, ``(1, 4+C, N)``,
  ``(1, N, 5+C)`` with objectness, each optionally with keypoints; or boxes ``(1, N, 4)`` +
  scores ``(1, N, C)`` → :class:`Detections` (after NMS);
- ``grid`` (anchor-free per-stride grids: YOLOX, PP-PicoDet, NanoDet, YuNet): per level class
  scores + boxes (distances, DFL bins, or YOLOX centre/exp) [+ objectness, keypoints], or all
  levels concatenated → :class:`Detections`;
- ``ssd`` (offsets from priors or anchors: SSD, RetinaFace, MediaPipe BlazeFace): boxes
  ``(1, P, 4[+2K])`` + scores ``(1, P, C)`` [+ keypoints ``(1, P, 2K)``] → :class:`Detections`;
- ``segmentation``: ``(1, C, H, W)`` logits, ``(1, 1, H, W)`` or ``(1, H, W)`` probabilities (or
  class ids) → :class:`Segmentation`;
- ``landmarks``: ``(1, K, 2)``, ``(1, K, 3)``, ``(1, 2K)`` [+ a box, a presence] → :class:`Landmarks`;
- ``regression`` / ``embedding``: any, flattened → :class:`Regression` / :class:`Embedding`;
- ``raw``: any → :class:`RawOutput`.

Example::

    import numpy as np

    from edge_runtime.inference.decoders import build_decoder
    from edge_runtime.frames.geometry import FrameGeometry
    from edge_runtime.bundle.specs import DecoderSpec

    spec = DecoderSpec("classification", {"labels": ["circle", "square", "triangle"], "top_k": 1})
    decode = build_decoder("shape", spec, outputs=["shape_logits"])
    geometry = FrameGeometry.letterbox(frame_w=640, frame_h=480, input_w=128, input_h=128)
    result = decode({"shape_logits": np.array([[0.1, 3.0, -1.0]], np.float32)}, geometry)
    result.labels, result.scores  # ('square',), array([0.9317], dtype=float32)

On the command line, ``edge-runtime inspect BUNDLE`` lists each head's decoder and parameters.

Modules: :mod:`~edge_runtime.inference.decoders.base` (:class:`Decoder`, :class:`Params`),
:mod:`~edge_runtime.inference.decoders.common` (names, box formats, activations),
:mod:`~edge_runtime.inference.decoders.nms` (what every detection family ends with),
:mod:`~edge_runtime.inference.decoders.priors` (SSD priors, MediaPipe anchors) and one module
per family (``classification``, ``detection``, ``grid``, ``ssd``, ``segmentation``, ``landmarks``,
``regression``, ``embedding``, ``raw``). :data:`DECODERS` below is the registry. A new family is one module
with a :class:`Decoder` subclass, one entry in :data:`DECODERS` and its parameters in
:data:`edge_runtime.bundle.specs.DECODER_PARAMS` (the manifest accepts only those types).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from edge_runtime.errors import ConfigError, close_matches
from edge_runtime.inference.decoders.base import Decoder, Params
from edge_runtime.inference.decoders.classification import ClassificationDecoder
from edge_runtime.inference.decoders.common import BOX_FORMATS, default_names, sigmoid, softmax, to_xyxy
from edge_runtime.inference.decoders.detection import DetectionDecoder
from edge_runtime.inference.decoders.embedding import EmbeddingDecoder
from edge_runtime.inference.decoders.grid import GridDecoder
from edge_runtime.inference.decoders.landmarks import LandmarksDecoder
from edge_runtime.inference.decoders.nms import (
    MAX_NMS_CANDIDATES,
    NMS_METHODS,
    NmsSettings,
    finish_detections,
    nms,
    weighted_nms,
)
from edge_runtime.inference.decoders.raw import RawDecoder
from edge_runtime.inference.decoders.regression import RegressionDecoder
from edge_runtime.inference.decoders.segmentation import SegmentationDecoder
from edge_runtime.inference.decoders.ssd import SsdDecoder

if TYPE_CHECKING:
    from edge_runtime.bundle.specs import DecoderSpec

#: Decoder type (the manifest's ``decoder.type``) → class.
DECODERS: dict[str, type[Decoder]] = {
    "classification": ClassificationDecoder,
    "detection": DetectionDecoder,
    "grid": GridDecoder,
    "ssd": SsdDecoder,
    "segmentation": SegmentationDecoder,
    "landmarks": LandmarksDecoder,
    "regression": RegressionDecoder,
    "embedding": EmbeddingDecoder,
    "raw": RawDecoder,
}


def build_decoder(head_name: str, spec: DecoderSpec, outputs: Sequence[str]) -> Decoder:
    """The decoder of head ``head_name`` for its ``spec`` and output names, parameters checked.

    Raises :class:`ConfigError` for an unknown type (with close matches), a parameter of the
    wrong type or value, or a number of outputs the decoder cannot read. Parameters the
    decoder does not know are ignored here: reading the manifest already reported them.
    """
    cls = DECODERS.get(spec.type)
    if cls is None:
        raise ConfigError(
            f"head {head_name!r}: unknown decoder type {spec.type!r}{close_matches(spec.type, DECODERS)}; "
            f"valid types: {', '.join(DECODERS)}"
        )
    return cls(head_name, spec.params, outputs)


__all__ = [
    "BOX_FORMATS",
    "DECODERS",
    "MAX_NMS_CANDIDATES",
    "NMS_METHODS",
    "ClassificationDecoder",
    "Decoder",
    "DetectionDecoder",
    "EmbeddingDecoder",
    "GridDecoder",
    "LandmarksDecoder",
    "NmsSettings",
    "Params",
    "RawDecoder",
    "RegressionDecoder",
    "SegmentationDecoder",
    "SsdDecoder",
    "build_decoder",
    "default_names",
    "finish_detections",
    "nms",
    "sigmoid",
    "softmax",
    "to_xyxy",
    "weighted_nms",
]
