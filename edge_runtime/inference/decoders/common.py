"""Numeric helpers shared by the decoder families: default names, box formats, activations.

All numpy, vectorised (they run for every frame on a Raspberry Pi).

Example::

    to_xyxy(np.array([[50.0, 40.0, 20.0, 10.0]], np.float32), "cxcywh")  # [[40., 35., 60., 45.]]
    softmax(np.array([0.1, 3.0, -1.0]))  # [0.0513, 0.9317, 0.0171]
    default_names("class", 3)  # ('class_0', 'class_1', 'class_2')
"""

from __future__ import annotations

import numpy as np

#: Box encodings a detection or regression head may use (``x1 y1 x2 y2``, ``x y w h``, ``cx cy w h``).
BOX_FORMATS = ("xyxy", "xywh", "cxcywh")


def default_names(prefix: str, count: int) -> tuple[str, ...]:
    """``("class_0", "class_1", ...)`` for ``prefix="class"``."""
    return tuple(f"{prefix}_{i}" for i in range(count))


def to_xyxy(boxes: np.ndarray, box_format: str) -> np.ndarray:
    """Boxes ``(n, 4)`` in ``box_format`` (one of :data:`BOX_FORMATS`) → ``x1, y1, x2, y2``, same dtype."""
    if box_format == "xyxy":
        return boxes
    out = np.empty_like(boxes)
    if box_format == "xywh":
        out[:, :2] = boxes[:, :2]
        out[:, 2:] = boxes[:, :2] + boxes[:, 2:]
    else:  # cxcywh
        half = boxes[:, 2:] / 2
        out[:, :2] = boxes[:, :2] - half
        out[:, 2:] = boxes[:, :2] + half
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis, float32."""
    x = np.asarray(logits, dtype=np.float32)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, float32 (no overflow warnings for large ``|x|``)."""
    x = np.asarray(logits, dtype=np.float32)
    return np.exp(-np.logaddexp(np.float32(0), -x)).astype(np.float32)
