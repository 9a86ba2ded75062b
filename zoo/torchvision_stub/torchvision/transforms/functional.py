"""``torchvision.transforms.functional.to_tensor``, as torchvision defines it (PIL or ndarray)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


def to_tensor(pic: Any) -> Tensor:
    """An HWC image (PIL or ndarray) → a CHW tensor; uint8 data is scaled to 0..1, other dtypes
    are kept (as torchvision does)."""
    if isinstance(pic, np.ndarray):
        if pic.ndim == 2:
            pic = pic[:, :, None]
        img = torch.from_numpy(pic.transpose((2, 0, 1))).contiguous()
        if img.dtype == torch.uint8:
            return img.float().div(255)
        return img
    array = np.array(pic, copy=True)
    if array.ndim == 2:
        array = array[:, :, None]
    img = torch.from_numpy(array.transpose((2, 0, 1))).contiguous()
    if img.dtype == torch.uint8:
        return img.float().div(255)
    return img
