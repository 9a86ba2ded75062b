"""Hard NMS as torchvision computes it on the CPU, in pure torch.

:func:`nms` follows ``csrc/ops/cpu/nms_kernel.cpp``: boxes ``x1, y1, x2, y2``, areas
``(x2 - x1) * (y2 - y1)`` (no +1), candidates in stable descending score order, a box is
suppressed when its IoU with a kept one is ``> iou_threshold``; the arithmetic stays in the
boxes' dtype. :func:`batched_nms` picks the same strategy as torchvision (offset boxes per
category up to 4000 coordinates on the CPU, one NMS per category above), so equal inputs give
equal kept indices, sorted by decreasing score.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: torchvision's switch (``boxes.numel()`` on the CPU) between the coordinate trick and one NMS per category
VANILLA_ABOVE = 4000


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Indices (int64) of the boxes kept by hard NMS, in decreasing score order."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    order = torch.sort(scores, stable=True, descending=True)[1]
    suppressed = torch.zeros(len(scores), dtype=torch.bool, device=boxes.device)
    keep: list[int] = []
    for pos in range(len(order)):
        i = int(order[pos])
        if suppressed[i]:
            continue
        keep.append(i)
        rest = order[pos + 1 :]
        rest = rest[~suppressed[rest]]
        if len(rest) == 0:
            continue
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest])).clamp(min=0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest])).clamp(min=0)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[rest[iou > iou_threshold]] = True
    return torch.tensor(keep, dtype=torch.int64, device=boxes.device)


def _batched_nms_coordinate_trick(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    max_coordinate = boxes.max()
    offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def _batched_nms_vanilla(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    keep_mask = torch.zeros_like(scores, dtype=torch.bool)
    for class_id in torch.unique(idxs):
        current = torch.where(idxs == class_id)[0]
        keep_mask[current[nms(boxes[current], scores[current], iou_threshold)]] = True
    kept = torch.where(keep_mask)[0]
    return kept[scores[kept].sort(descending=True)[1]]


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS within each category ``idxs``; kept indices (int64) in decreasing score order."""
    if boxes.numel() > VANILLA_ABOVE:
        return _batched_nms_vanilla(boxes, scores, idxs, iou_threshold)
    return _batched_nms_coordinate_trick(boxes, scores, idxs, iou_threshold)
