"""A pure-torch stand-in for the few torchvision functions facenet-pytorch 2.6.0 calls.

Only for the MTCNN oracle (``zoo/oracles/mtcnn_oracle.py``): ``ops.nms``,
``ops.boxes.batched_nms`` and ``transforms.functional.to_tensor``, written after torchvision's
own code so the package's detections do not change.
"""

from __future__ import annotations

__version__ = "0.0.0+edge-runtime-stub"

STUB = True


def _is_tracing() -> bool:
    """torchvision's helper: true while torch.jit traces (never in the oracle)."""
    import torch

    return bool(torch._C._get_tracing_state())
