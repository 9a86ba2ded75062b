"""``torchvision.transforms`` subset: only :mod:`torchvision.transforms.functional`."""

from torchvision.transforms import functional

__all__ = ["functional"]
