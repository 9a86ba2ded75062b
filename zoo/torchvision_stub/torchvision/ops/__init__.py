"""``torchvision.ops`` subset: :func:`nms` and :func:`batched_nms`."""

from torchvision.ops.boxes import batched_nms, nms

__all__ = ["batched_nms", "nms"]
