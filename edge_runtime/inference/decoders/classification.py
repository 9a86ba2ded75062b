"""Classification: top-k classes (or every class above a threshold) from one head's class scores.

Layout: one output ``(1, C)`` logits or probabilities (``(1, C, 1, 1)`` too) →
:class:`~edge_runtime.inference.results.Classification`. Softmax over the classes by
default; ``multi_label`` applies a sigmoid per class instead.

Example::

    decode = ClassificationDecoder("shape", {"labels": ["circle", "square", "triangle"], "top_k": 1}, ["logits"])
    result = decode({"logits": np.array([[0.1, 3.0, -1.0]], np.float32)}, geometry)
    result.labels, result.scores  # ('square',), array([0.9317], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from edge_runtime.inference.decoders.base import Decoder, Params
from edge_runtime.inference.decoders.common import default_names, sigmoid, softmax
from edge_runtime.inference.results import Classification

if TYPE_CHECKING:
    from edge_runtime.frames.geometry import FrameGeometry


class ClassificationDecoder(Decoder):
    """Top-k classes from ``(1, C)`` logits (or ``(1, C, 1, 1)``).

    Parameters: ``labels`` (default ``class_0``…), ``top_k`` (default ``min(5, C)``; with
    ``multi_label`` all classes), ``softmax`` (default true: the values are logits and are
    activated; false: they are probabilities already), ``multi_label`` (independent classes:
    sigmoid per class, keep those ``>= threshold``, default 0.5).
    """

    kind = "classification"

    def configure(self, params: Params) -> None:
        self.labels = params.names("labels")
        self.top_k = params.count("top_k", None)
        self.activate = params.flag("softmax", True)
        self.multi_label = params.flag("multi_label", False)
        self.threshold = float(params.number("threshold", 0.5, 0.0, 1.0))

    def __call__(self, tensors: Mapping[str, np.ndarray], geometry: FrameGeometry) -> Classification:
        name = self.outputs[0]
        raw = self.item(tensors, name)
        if raw.ndim < 1 or raw.shape[0] < 1 or any(d != 1 for d in raw.shape[1:]):
            raise self.bad_shape(name, tensors[name].shape, "(1, C) class scores")
        values = raw.reshape(-1).astype(np.float32)
        labels = self.labels or default_names("class", len(values))
        if len(labels) != len(values):
            raise self.bad_shape(name, tensors[name].shape, f"(1, {len(labels)}): one score per label")
        if self.multi_label:
            probs = sigmoid(values) if self.activate else values
            order = np.argsort(-probs, kind="stable")
            order = order[probs[order] >= self.threshold][: self.top_k or len(values)]
        else:
            probs = softmax(values) if self.activate else values
            order = np.argsort(-probs, kind="stable")[: self.top_k or min(5, len(values))]
        return Classification(class_ids=order, scores=probs[order], labels=tuple(labels[i] for i in order))
