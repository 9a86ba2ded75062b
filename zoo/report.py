"""What one zoo model's run produces, and what every model's procedure is given.

:class:`ZooContext` is handed to each model's procedure (``run(ctx) -> ModelReport``);
:class:`ModelReport` is its row in ``build/zoo/index.json`` and in the table
``benchmarks/results/zoo.<arch>.md/.json``. Agreement figures compare the bundle's published,
decoded results with the package's own inference code (the *oracle*) on the same images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ZooContext:
    """Where a model's run works and what it may use.

    ``work``: ``build/zoo/<model>/`` (bundles, images, oracle outputs, published results);
    ``cache``: the download and virtualenv cache (``~/.cache/edge-runtime/zoo``); ``python``: the
    project's interpreter (runs ``edge-export`` / ``edge-runtime`` as ``-m exporter.cli`` /
    ``-m edge_runtime.cli``); ``quick``: the smoke test's reduced run (fewer images, no INT8 when
    that is slow); ``tflite``: also convert to TFLite and run the daemon on LiteRT (``--no-tflite``
    and quick runs leave it out)."""

    work: Path
    cache: Path
    python: str
    quick: bool = False
    tflite: bool = True


@dataclass(frozen=True)
class Agreement:
    """Published detections against the oracle's: ``matched`` of ``oracle`` detections above the
    oracle's threshold matched by one of the same class at IoU >= 0.9, ``extra`` published ones
    above that threshold that match none."""

    oracle: int
    matched: int
    extra: int

    @property
    def fraction(self) -> float:
        """``matched / oracle`` (1.0 with nothing to match and nothing extra)."""
        if self.oracle == 0:
            return 1.0 if self.extra == 0 else 0.0
        return self.matched / self.oracle


@dataclass(frozen=True)
class ModelReport:
    """One model's row: what was checked and measured (``None``: not measured in this run)."""

    model: str
    package: str
    layout: str
    images: int
    split_max_error: float
    fp32: Agreement
    int8: Agreement | None = None
    int8_graphs: tuple[str, ...] = ()
    #: The daemon with ``--backend tflite`` at FP32 / INT8 on the TFLite bundle (None: not run).
    tflite_fp32: Agreement | None = None
    tflite_int8: Agreement | None = None
    #: :func:`zoo.steps.tflite_summary` with ``convert_seconds`` and ``decoded``, or ``{"error": ...}``
    #: when the conversion failed; empty when TFLite was not part of the run.
    tflite: dict[str, Any] = field(default_factory=dict)
    landmark_error: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    bundle_bytes: dict[str, int] = field(default_factory=dict)
    decoded: bool = False
    checks: dict[str, bool] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    #: Per class: ``{"oracle": n, "fp32": matched, "fp32_extra": n, "int8": matched, "int8_extra": n}`` (detectors;
    #: with ``tflite_fp32``, ``tflite_int8`` and their ``_extra`` when TFLite ran).
    classes: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Prefixes of the class names the committed table may show (empty: every class); the
    #: build folder keeps them all.
    shown_classes: tuple[str, ...] = ()
    #: What the run wrote (``bundle_fp32``, ``oracle``, ``results_fp32``, ...), relative to the repository.
    paths: dict[str, str] = field(default_factory=dict)
    #: Why the run stopped before it measured everything (the checks then include ``completed: False``).
    error: str | None = None

    @property
    def passed(self) -> bool:
        """Every check of this run passed."""
        return all(self.checks.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``index.json``, ``zoo.<arch>.json``)."""
        out = asdict(self)
        out["fp32"]["fraction"] = round(self.fp32.fraction, 4)
        for key in ("int8", "tflite_fp32", "tflite_int8"):
            agreement = getattr(self, key)
            if agreement is not None:
                out[key]["fraction"] = round(agreement.fraction, 4)
        out["passed"] = self.passed
        return out
