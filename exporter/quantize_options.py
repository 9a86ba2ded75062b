"""The options of ``edge-export quantize`` (light: the CLI parses flags without loading onnx)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.errors import ConfigError

PRECISION_CHOICES = ("int8", "fp16", "mixed")
DEFAULT_MIN_AGREEMENT = 0.99


def check_min_agreement(value: Any) -> float:
    """The fidelity gate (``--min-agreement``) when it is a number in (0, 1]; a ConfigError
    naming the flag otherwise (nan would pass every graph, 5 none). The one check of split,
    quantize, convert and their options."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise ConfigError(f"--min-agreement must be in (0, 1], got {value!r}")
    return float(value)


def check_tolerance(value: Any) -> float:
    """The largest absolute error split's verification allows (``--tolerance``) when it is a
    finite number; a ConfigError naming the flag otherwise (nan or inf would turn it off)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"--tolerance must be a finite number (the largest absolute error allowed), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class QuantizeOptions:
    """Options of :func:`quantize_bundle` (the flags of ``edge-export quantize``).

    ``calib``: a folder of images, a ``.npy`` array, or None for generated frames (see
    :func:`exporter.calibration.load_calibration`); ``held_out``: the share of the frames kept
    back to measure fidelity; ``limit``: at most this many frames; ``keep_unmeasured``: judge a
    detection task on the detections there are even when they are too few to measure (see
    :mod:`exporter.gate`; an experiment, warned and recorded), instead of keeping it float."""

    calib: str | Path | None = None
    precision: str = "int8"
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    held_out: float = 0.25
    limit: int | None = None
    force: bool = False
    keep_unmeasured: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISION_CHOICES:
            raise ConfigError(
                f"--precision {self.precision!r}: quantize makes one of {', '.join(PRECISION_CHOICES)}"
                " (fp32 is what the bundle already has)"
            )
        check_min_agreement(self.min_agreement)
        if not 0.0 < self.held_out < 1.0:
            raise ConfigError(f"held-out share must be between 0 and 1, got {self.held_out}")

    @property
    def precisions(self) -> tuple[str, ...]:
        """The precisions to make: ``mixed`` makes both (INT8 where it passes, FP16 beside)."""
        return ("int8", "fp16") if self.precision == "mixed" else (self.precision,)


__all__ = [
    "DEFAULT_MIN_AGREEMENT",
    "PRECISION_CHOICES",
    "QuantizeOptions",
    "check_min_agreement",
    "check_tolerance",
]
