"""Match published detections with the oracle's: same class, IoU >= 0.9, one to one.

Per image, the oracle's detections are taken by decreasing score; each takes the not yet used
published detection of its class with the highest IoU, when that IoU reaches ``min_iou``. What
the oracle found and nothing matched is *missed*; a published detection at or above the oracle's
score threshold that matched nothing is *extra* (below the threshold it is not counted: the oracle
would not have reported it). :func:`compare` sums images into an :class:`~zoo.report.Agreement`
and counts per class.

The daemon's JSON lines (``edge-runtime run --output FILE``) come one per frame in the folder
source's sorted file-name order; :func:`read_results` pairs them with the image names.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.inference.fidelity import box_iou
from zoo.report import Agreement

MIN_IOU = 0.9


@dataclass(frozen=True)
class Detection:
    """One box ``(x1, y1, x2, y2)`` in original-image pixels, its class name and score."""

    box: tuple[float, float, float, float]
    label: str
    score: float

    @classmethod
    def of(cls, box: Sequence[float], label: str, score: float) -> Detection:
        """From any 4-sequence of numbers."""
        x1, y1, x2, y2 = (float(v) for v in box)
        return cls((x1, y1, x2, y2), str(label), float(score))


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``x1, y1, x2, y2`` boxes (0 when the union is empty): the
    runtime's one IoU (:func:`edge_runtime.inference.fidelity.box_iou`), as the fidelity gate uses it."""
    return float(box_iou(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))[0, 0])


@dataclass(frozen=True)
class ImageMatch:
    """One image's outcome: matched pairs (oracle, published, IoU), missed oracle detections, extras."""

    pairs: tuple[tuple[Detection, Detection, float], ...]
    missed: tuple[Detection, ...]
    extra: tuple[Detection, ...]


def match(
    oracle: Sequence[Detection], published: Sequence[Detection], *, threshold: float = 0.0, min_iou: float = MIN_IOU
) -> ImageMatch:
    """Match one image's detections (see the module docstring)."""
    used: set[int] = set()
    pairs: list[tuple[Detection, Detection, float]] = []
    missed: list[Detection] = []
    for want in sorted(oracle, key=lambda d: -d.score):
        best, best_index = min_iou, None
        for index, got in enumerate(published):
            if index in used or got.label != want.label:
                continue
            value = iou(want.box, got.box)
            if value >= best:
                best, best_index = value, index
        if best_index is None:
            missed.append(want)
        else:
            used.add(best_index)
            pairs.append((want, published[best_index], best))
    extra = [d for i, d in enumerate(published) if i not in used and d.score >= threshold]
    return ImageMatch(tuple(pairs), tuple(missed), tuple(extra))


@dataclass
class ClassCount:
    """Per class: the oracle's detections, how many were matched, and extras."""

    oracle: int = 0
    matched: int = 0
    extra: int = 0


@dataclass(frozen=True)
class Comparison:
    """A whole image set: the :class:`Agreement`, counts per class, and one line per mismatch."""

    agreement: Agreement
    classes: dict[str, ClassCount] = field(default_factory=dict)
    mismatches: tuple[str, ...] = ()
    min_matched_iou: float = 1.0


def _fmt(d: Detection) -> str:
    return f"{d.label} {d.score:.3f} [{', '.join(f'{v:.0f}' for v in d.box)}]"


def compare(
    oracle: Mapping[str, Sequence[Detection]],
    published: Mapping[str, Sequence[Detection]],
    *,
    threshold: float = 0.0,
    min_iou: float = MIN_IOU,
) -> Comparison:
    """Match every image of ``oracle`` (names missing from ``published`` count as published nothing)."""
    classes: dict[str, ClassCount] = {}
    lines: list[str] = []
    total = matched = extra = 0
    lowest = 1.0
    for name in sorted(oracle):
        got = list(published.get(name, ()))
        outcome = match(oracle[name], got, threshold=threshold, min_iou=min_iou)
        total += len(oracle[name])
        matched += len(outcome.pairs)
        extra += len(outcome.extra)
        for want, _, value in outcome.pairs:
            classes.setdefault(want.label, ClassCount()).matched += 1
            lowest = min(lowest, value)
        for want in oracle[name]:
            classes.setdefault(want.label, ClassCount()).oracle += 1
        for d in outcome.extra:
            classes.setdefault(d.label, ClassCount()).extra += 1
        for d in outcome.missed:
            near = max((iou(d.box, g.box) for g in got if g.label == d.label), default=0.0)
            lines.append(f"{name}: missed {_fmt(d)} (best IoU of its class {near:.3f})")
        lines += [f"{name}: extra {_fmt(d)}" for d in outcome.extra]
    return Comparison(Agreement(total, matched, extra), dict(sorted(classes.items())), tuple(lines), lowest)


def read_results(path: Path, head: str, names: Sequence[str]) -> tuple[dict[str, list[Detection]], bool]:
    """The daemon's JSON lines at ``path`` paired with ``names`` (sorted image names, one line each)
    as detections of ``head``; and whether every line carried decoded results (``xyxy``, ``labels``
    and ``scores`` lists of the same length) rather than raw tensors. Raises ValueError when the
    count of lines is not the count of images."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if len(lines) != len(names):
        raise ValueError(f"{path}: {len(lines)} result lines for {len(names)} images")
    out: dict[str, list[Detection]] = {}
    decoded = True
    for name, line in zip(sorted(names), lines, strict=True):
        result: Any = line.get("results", {}).get(head)
        keys = ("xyxy", "labels", "scores")
        if not isinstance(result, dict) or not all(isinstance(result.get(k), list) for k in keys):
            decoded = False
            out[name] = []
            continue
        if not len(result["xyxy"]) == len(result["labels"]) == len(result["scores"]):
            decoded = False
        out[name] = [
            Detection.of(b, lab, s)
            for b, lab, s in zip(result["xyxy"], result["labels"], result["scores"], strict=False)
        ]
    return out, decoded


def oracle_detections(document: Mapping[str, Any]) -> dict[str, list[Detection]]:
    """An oracle JSON document (``{"images": {name: {"detections": [{box, label, score}]}}}``) as detections."""
    images: Mapping[str, Any] = document["images"]
    return {
        name: [Detection.of(d["box"], d["label"], d["score"]) for d in record["detections"]]
        for name, record in images.items()
    }


def count(detections: Mapping[str, Iterable[Detection]]) -> int:
    """How many detections in all."""
    return sum(len(list(v)) for v in detections.values())


__all__ = [
    "MIN_IOU",
    "ClassCount",
    "Comparison",
    "Detection",
    "ImageMatch",
    "compare",
    "count",
    "iou",
    "match",
    "oracle_detections",
    "read_results",
]
