"""Per-task fidelity: how well a quantized head reproduces the float model.

The quantization gate (issue 5) never ships an INT8 or FP16 head that was not
measured against the float model. :func:`head_fidelity` compares one head's raw outputs on
held-back samples, float (``reference``) against quantized (``candidate``), with a metric that
fits the head's decoder, and returns a :class:`Fidelity` whose ``value`` is an agreement in
``[0, 1]`` (higher is better): the number the gate compares with ``--min-agreement``.

==========================  ==============================  ==================================================
decoder type                metric                          value
==========================  ==============================  ==================================================
classification              ``top1_agreement``              fraction of samples whose top class (decoded by
                                                            the runtime's own decoder) is the same
segmentation                ``pixel_agreement``             equal pixels / all pixels of the decoded masks
                                                            (model resolution), over all samples
detection, grid, ssd        ``detections_matched_iou0.9``   fraction of reference detections matched by a
                                                            candidate detection of the same class at
                                                            IoU >= 0.9 (greedy by IoU, each candidate once)
regression, landmarks       ``relative_error``              ``1 - r``, clipped to ``[0, 1]``: ``r`` is the mean
                                                            ``|candidate - reference|`` over the range of the
                                                            reference output, of the worst output
embedding, raw, any other   ``cosine_similarity``           mean over samples of the cosine similarity of the
                                                            outputs flattened and concatenated, each clipped
                                                            to ``[0, 1]``
==========================  ==============================  ==================================================

Rules and edge cases:

- Decoded metrics use the runtime's decoder (:func:`edge_runtime.inference.decoders.build_decoder`)
  with an identity geometry (frame = model input), so thresholds, NMS and argmax are those the
  device applies. Regression and landmarks compare the *raw* tensors instead (decoders may
  rescale to frame pixels).
- Detection: samples without reference detections add nothing to the fraction, but candidate
  detections that match nothing are counted in ``detail["extra"]``. When *no* sample has a
  reference detection, ``value`` is 1.0 if the candidate has none either, else 0.0.
- Relative error: the range is ``max - min`` of the reference output over all samples; a zero
  range uses ``max |reference|``, or 1 when that is zero too. Positions where the reference is
  not finite are left out (counted in ``detail``).
- Cosine: two zero vectors agree (1.0); one zero vector against a non-zero one does not (0.0).
- The self-test (:mod:`edge_runtime.trust.selftest`) compares raw heads per output and frame:
  an output of at most :data:`SMALL_OUTPUT` values per frame (a presence logit) by absolute
  error instead (:func:`small_output_error`): the cosine of one value is only its sign.
- Any metric: a candidate holding NaN or ±inf where the reference is finite (e.g. an FP16
  overflow) is broken, whatever the rest says: ``value`` is 0.0, ``detail["non_finite"]``
  counts the values.
- Mismatched inputs (sample counts, a missing output, shapes) raise ``ValueError`` naming the
  head and the output; a decoder spec the runtime rejects raises its ``ConfigError`` /
  ``ModelError``.

Example::

    from edge_runtime.inference.fidelity import head_fidelity
    from edge_runtime.bundle.specs import DecoderSpec

    spec = DecoderSpec("classification", {"labels": ["circle", "square", "triangle"]})
    fidelity = head_fidelity("shape", spec, ["shape_logits"], float_outputs, int8_outputs, (128, 128))
    fidelity.value >= 0.99, fidelity.to_dict()
    # True, {'metric': 'top1_agreement', 'value': 1.0, 'samples': 16, 'detail': {...}}

On the command line, ``edge-export quantize BUNDLE --calib DATA`` prints these per task and
writes them into the manifest (``fidelity``) and ``quantization.json``; on the device,
:mod:`edge_runtime.trust.selftest` uses the same metrics on the bundle's self-test frames. The module is
numpy only (it lives in the runtime package so the device can use it; :mod:`exporter.fidelity`
re-exports it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from edge_runtime.bundle.specs import DecoderSpec
from edge_runtime.frames.geometry import FrameGeometry
from edge_runtime.inference.decoders import build_decoder
from edge_runtime.inference.results import Classification, Detections, Segmentation

logger = logging.getLogger(__name__)

#: Digits kept by :meth:`Fidelity.to_dict` for every float.
DECIMALS = 6
#: A reference detection counts as reproduced by a candidate of the same class at this IoU or more.
DETECTION_IOU = 0.9

Samples = Sequence[Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class Fidelity:
    """How well a candidate (quantized) head reproduces the reference (float) head.

    - ``metric``: one of :data:`METRICS` (which one follows from the decoder type);
    - ``value``: agreement in ``[0, 1]``, higher is better: what the gate compares with
      ``--min-agreement`` (:meth:`meets`);
    - ``samples``: how many samples were compared;
    - ``detail``: metric-specific numbers (JSON-compatible scalars, lists and mappings), e.g.
      ``{"mean_relative_error": 0.004, "max_relative_error": 0.02, "outputs": {...}}``.
    """

    metric: str
    value: float
    samples: int
    detail: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"Fidelity.metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        value = float(self.value)
        if not 0.0 <= value <= 1.0:  # also rejects NaN
            raise ValueError(f"Fidelity.value must be an agreement in [0, 1], got {self.value!r}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, (int, np.integer)) or self.samples < 1:
            raise ValueError(f"Fidelity.samples must be an int >= 1, got {self.samples!r}")
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "samples", int(self.samples))
        object.__setattr__(self, "detail", dict(self.detail))

    def meets(self, min_agreement: float) -> bool:
        """Whether ``value >= min_agreement`` (the gate's test)."""
        return self.value >= min_agreement

    def to_dict(self) -> dict[str, Any]:
        """``{"metric", "value", "samples", "detail"}``, JSON-compatible, floats rounded to 6 digits."""
        return {
            "metric": self.metric,
            "value": _jsonable(self.value),
            "samples": self.samples,
            "detail": _jsonable(self.detail),
        }


def _jsonable(value: Any) -> Any:
    """``value`` with numpy scalars and arrays made plain, floats rounded, non-finite floats ``None``."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return round(number, DECIMALS) if math.isfinite(number) else None
    return value


def head_fidelity(
    head: str,
    decoder: DecoderSpec | None,
    outputs: Sequence[str],
    reference: Sequence[Mapping[str, np.ndarray]],
    candidate: Sequence[Mapping[str, np.ndarray]],
    input_size: tuple[int, int],
) -> Fidelity:
    """How well ``candidate`` (e.g. the INT8 head fed by the INT8 trunk) reproduces ``reference`` (the float model).

    Per sample: each item of the sequences maps the head's output names to that sample's raw
    output tensors (batch 1). ``decoder`` is the head's decoder spec (``None``: raw);
    ``input_size`` is the model input ``(width, height)``, for decoders that need a geometry.
    The metric follows the decoder type (see the module docstring).

    Raises ``ValueError`` naming the head (and the output) for different sample counts, no
    samples, no outputs, a missing output or different shapes; the runtime's ``ConfigError`` or
    ``ModelError`` when the decoder spec or the tensors do not fit the decoder.
    """
    spec = decoder if decoder is not None else DecoderSpec("raw", {})
    names = tuple(outputs)
    _check_inputs(head, names, reference, candidate, input_size)
    metric, measure = MEASURES.get(spec.type, MEASURES["raw"])
    non_finite = _count_non_finite(names, reference, candidate)
    if non_finite:
        logger.warning(
            "head %r: the candidate gives NaN or inf where the float model does not (%s); fidelity 0",
            head,
            ", ".join(f"{name}: {count}" for name, count in non_finite.items()),
        )
        detail = {"non_finite": sum(non_finite.values()), "non_finite_outputs": dict(non_finite)}
        return Fidelity(metric, 0.0, len(reference), detail)
    value, detail = measure(head, spec, names, reference, candidate, input_size)
    fidelity = Fidelity(metric, min(max(value, 0.0), 1.0), len(reference), detail)
    logger.debug("head %r: %s = %.6f over %d samples %s", head, metric, fidelity.value, fidelity.samples, detail)
    return fidelity


def _check_inputs(
    head: str, names: tuple[str, ...], reference: Samples, candidate: Samples, input_size: tuple[int, int]
) -> None:
    if not names:
        raise ValueError(f"head {head!r}: no outputs to compare")
    if len(reference) != len(candidate):
        raise ValueError(
            f"head {head!r}: {len(reference)} reference samples but {len(candidate)} candidate samples; "
            "they must be the same frames"
        )
    if not reference:
        raise ValueError(f"head {head!r}: no samples to measure fidelity on")
    size = tuple(input_size)
    if len(size) != 2 or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in size):
        raise ValueError(f"head {head!r}: input_size must be (width, height), two positive ints, got {input_size!r}")
    for index, (ref, cand) in enumerate(zip(reference, candidate, strict=True)):
        for name in names:
            for side, sample in (("reference", ref), ("candidate", cand)):
                if name not in sample:
                    raise ValueError(
                        f"head {head!r}: output {name!r} is missing from {side} sample {index}; "
                        f"it has {', '.join(map(repr, sample)) or 'none'}"
                    )
            ref_shape, cand_shape = np.shape(ref[name]), np.shape(cand[name])
            if ref_shape != cand_shape:
                raise ValueError(
                    f"head {head!r}: output {name!r} of sample {index} has shape {cand_shape} in the candidate "
                    f"but {ref_shape} in the reference"
                )


def _count_non_finite(names: tuple[str, ...], reference: Samples, candidate: Samples) -> dict[str, int]:
    """Per output, how many candidate values are NaN or ±inf where the reference value is finite."""
    counts: dict[str, int] = {}
    for name in names:
        count = 0
        for ref, cand in zip(reference, candidate, strict=True):
            cand_values = np.asarray(cand[name])
            if cand_values.dtype.kind not in "fc":
                continue
            ref_values = np.asarray(ref[name])
            ref_finite = np.isfinite(ref_values) if ref_values.dtype.kind in "fc" else True
            count += int(np.count_nonzero(~np.isfinite(cand_values) & ref_finite))
        if count:
            counts[name] = count
    return counts


def _identity(input_size: tuple[int, int]) -> FrameGeometry:
    """Frame = model input: decoded coordinates stay in model-input pixels."""
    width, height = (int(d) for d in input_size)
    return FrameGeometry.stretch(width, height, width, height)


Measure = Callable[[str, DecoderSpec, tuple[str, ...], Samples, Samples, tuple[int, int]], tuple[float, dict[str, Any]]]


def _decode_pairs(
    head: str, spec: DecoderSpec, names: tuple[str, ...], reference: Samples, candidate: Samples, size: tuple[int, int]
) -> list[tuple[Any, Any]]:
    """Both sides of every sample through the runtime's own decoder."""
    decode = build_decoder(head, spec, names)
    geometry = _identity(size)
    return [(decode(ref, geometry), decode(cand, geometry)) for ref, cand in zip(reference, candidate, strict=True)]


def _top1(
    head: str, spec: DecoderSpec, names: tuple[str, ...], reference: Samples, candidate: Samples, size: tuple[int, int]
) -> tuple[float, dict[str, Any]]:
    agree = 0
    score_diffs: list[float] = []
    for ref, cand in cast(
        "list[tuple[Classification, Classification]]", _decode_pairs(head, spec, names, reference, candidate, size)
    ):
        # A multi-label head may report no class: that is class -1 with score 0.
        ref_id, ref_score = (int(ref.class_ids[0]), float(ref.scores[0])) if len(ref) else (-1, 0.0)
        cand_id, cand_score = (int(cand.class_ids[0]), float(cand.scores[0])) if len(cand) else (-1, 0.0)
        agree += ref_id == cand_id
        score_diffs.append(abs(ref_score - cand_score))
    samples = len(score_diffs)
    return agree / samples, {"disagreements": samples - agree, "mean_top_score_difference": float(np.mean(score_diffs))}


def _pixels(
    head: str, spec: DecoderSpec, names: tuple[str, ...], reference: Samples, candidate: Samples, size: tuple[int, int]
) -> tuple[float, dict[str, Any]]:
    equal = total = 0
    worst = 1.0
    for ref, cand in cast(
        "list[tuple[Segmentation, Segmentation]]", _decode_pairs(head, spec, names, reference, candidate, size)
    ):
        # Same tensor shapes and geometry, so the same mask shape.
        equal_here, pixels = int(np.count_nonzero(ref.mask == cand.mask)), ref.mask.size
        equal += equal_here
        total += pixels
        worst = min(worst, equal_here / pixels if pixels else 1.0)
    value = equal / total if total else 1.0
    return value, {"pixels": total, "differing_pixels": total - equal, "worst_sample_agreement": worst}


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` ``(n, 4)`` with every box of ``b`` ``(m, 4)`` (xyxy): ``(n, m) float64``."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    width = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    height = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = width * height
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def match_detections(reference: Detections, candidate: Detections, min_iou: float = DETECTION_IOU) -> list[float]:
    """IoUs of the greedy one-to-one matches of same-class pairs at ``IoU >= min_iou``, best pair first."""
    if not len(reference) or not len(candidate):
        return []
    iou = box_iou(reference.xyxy, candidate.xyxy)
    iou[reference.class_ids[:, None] != candidate.class_ids[None, :]] = -1.0
    ref_rows, cand_cols = np.nonzero(iou >= min_iou)
    order = np.argsort(-iou[ref_rows, cand_cols], kind="stable")
    used_ref: set[int] = set()
    used_cand: set[int] = set()
    matched: list[float] = []
    for r, c in zip(ref_rows[order].tolist(), cand_cols[order].tolist(), strict=True):
        if r not in used_ref and c not in used_cand:
            used_ref.add(r)
            used_cand.add(c)
            matched.append(float(iou[r, c]))
    return matched


def _detections(
    head: str, spec: DecoderSpec, names: tuple[str, ...], reference: Samples, candidate: Samples, size: tuple[int, int]
) -> tuple[float, dict[str, Any]]:
    ref_count = cand_count = 0
    ious: list[float] = []
    for ref, cand in cast(
        "list[tuple[Detections, Detections]]", _decode_pairs(head, spec, names, reference, candidate, size)
    ):
        ref_count += len(ref)
        cand_count += len(cand)
        ious.extend(match_detections(ref, cand))
    matched = len(ious)
    detail = {
        "reference_detections": ref_count,
        "candidate_detections": cand_count,
        "matched": matched,
        "extra": cand_count - matched,
        "mean_matched_iou": float(np.mean(ious)) if ious else None,
    }
    if ref_count == 0:
        # Nothing to reproduce: agreement only if the candidate finds nothing either.
        return (1.0 if cand_count == 0 else 0.0), detail
    return matched / ref_count, detail


def _relative_error(
    head: str, spec: DecoderSpec, names: tuple[str, ...], reference: Samples, candidate: Samples, size: tuple[int, int]
) -> tuple[float, dict[str, Any]]:
    per_output: dict[str, dict[str, Any]] = {}
    for name in names:
        ref = np.concatenate([np.asarray(s[name], dtype=np.float64).reshape(-1) for s in reference])
        cand = np.concatenate([np.asarray(s[name], dtype=np.float64).reshape(-1) for s in candidate])
        finite = np.isfinite(ref)
        ref, cand = ref[finite], cand[finite]
        if ref.size:
            spread = float(ref.max() - ref.min())
            scale = spread if spread > 0 else float(np.abs(ref).max()) or 1.0
            error = np.abs(cand - ref) / scale
            mean_error, max_error = float(error.mean()), float(error.max())
        else:
            scale, mean_error, max_error = 1.0, 0.0, 0.0
        per_output[name] = {"mean_relative_error": mean_error, "max_relative_error": max_error, "range": scale}
        if not finite.all():
            per_output[name]["reference_non_finite"] = int(np.count_nonzero(~finite))
    worst = max(per_output.values(), key=lambda o: o["mean_relative_error"])
    detail = {
        "mean_relative_error": worst["mean_relative_error"],
        "max_relative_error": max(o["max_relative_error"] for o in per_output.values()),
        "outputs": per_output,
    }
    return 1.0 - worst["mean_relative_error"], detail


def _flatten(sample: Mapping[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray:
    return np.concatenate([np.asarray(sample[name], dtype=np.float64).reshape(-1) for name in names])


def cosine_similarity(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Cosine similarity of two tensors flattened, clipped to ``[0, 1]``.

    Positions where the reference is not finite are left out; two zero vectors agree (1.0),
    one zero vector against a non-zero one does not (0.0).
    """
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    cand = np.asarray(candidate, dtype=np.float64).reshape(-1)
    finite = np.isfinite(ref)
    ref, cand = ref[finite], cand[finite]
    ref_norm, cand_norm = float(np.linalg.norm(ref)), float(np.linalg.norm(cand))
    if np.array_equal(ref, cand):
        return 1.0
    if ref_norm == 0.0 or cand_norm == 0.0:
        return 0.0
    return min(max(float(np.dot(ref, cand)) / (ref_norm * cand_norm), 0.0), 1.0)


#: An output with at most this many values per sample is compared by absolute error, not by cosine:
#: the cosine of one value is its sign (0 for an INT8 0, or a logit near 0 that changes sign), of
#: two to four values hardly more.
SMALL_OUTPUT = 4
#: A small output's error bound: this many of its INT8 output quantization steps ...
SMALL_OUTPUT_STEPS = 8
#: ... or this fraction of its largest ``|reference|`` over the samples, whichever is larger.
SMALL_OUTPUT_RTOL = 0.05


@dataclass(frozen=True)
class SmallOutputError:
    """:func:`small_output_error`: the worst ``|candidate - reference|`` (``sample``: where; inf
    when the candidate is not finite where the reference is) and its ``bound``; ``passed`` when
    ``error <= bound``."""

    error: float
    bound: float
    sample: int
    why: str

    @property
    def passed(self) -> bool:
        return self.error <= self.bound


def small_output_error(reference: np.ndarray, candidate: np.ndarray, step: float | None = None) -> SmallOutputError:
    """Compare a small output (at most :data:`SMALL_OUTPUT` values per sample) of ``(samples, ...)``
    ``reference`` and ``candidate`` by absolute error: the bound is :data:`SMALL_OUTPUT_STEPS` times
    ``step`` (the INT8 artifact's output quantization step, when known) or
    :data:`SMALL_OUTPUT_RTOL` of the largest ``|reference|``, whichever is larger. Positions where
    the reference is not finite are left out. The exporter's self-test data and the device's
    check both use this rule."""
    ref = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    cand = np.asarray(candidate, dtype=np.float64).reshape(len(candidate), -1)
    finite = np.isfinite(ref)
    with np.errstate(invalid="ignore"):
        diff = np.abs(cand - ref)
    diff[~finite] = 0.0
    diff[finite & ~np.isfinite(cand)] = math.inf
    peak = float(np.abs(ref[finite]).max()) if finite.any() else 0.0
    by_range = SMALL_OUTPUT_RTOL * peak
    by_step = SMALL_OUTPUT_STEPS * step if step is not None and step > 0 else 0.0
    if by_step >= by_range:
        bound, why = by_step, f"{SMALL_OUTPUT_STEPS} INT8 steps of {step:.3g}"
    else:
        bound, why = by_range, f"{SMALL_OUTPUT_RTOL:g} of its largest |value| {peak:.3g}"
    per_sample = diff.max(axis=1) if diff.size else np.zeros(len(ref))
    sample = int(np.argmax(per_sample)) if per_sample.size else 0
    return SmallOutputError(float(per_sample[sample]) if per_sample.size else 0.0, bound, sample, why)


def _cosine(
    head: str, spec: DecoderSpec, names: tuple[str, ...], reference: Samples, candidate: Samples, size: tuple[int, int]
) -> tuple[float, dict[str, Any]]:
    similarities = [
        cosine_similarity(_flatten(ref_sample, names), _flatten(cand_sample, names))
        for ref_sample, cand_sample in zip(reference, candidate, strict=True)
    ]
    return float(np.mean(similarities)), {"min_cosine_similarity": min(similarities)}


#: Decoder type → (metric name, how to measure it). Types not listed use ``"raw"``'s.
MEASURES: dict[str, tuple[str, Measure]] = {
    "classification": ("top1_agreement", _top1),
    "segmentation": ("pixel_agreement", _pixels),
    "detection": ("detections_matched_iou0.9", _detections),
    "grid": ("detections_matched_iou0.9", _detections),
    "ssd": ("detections_matched_iou0.9", _detections),
    "regression": ("relative_error", _relative_error),
    "landmarks": ("relative_error", _relative_error),
    "embedding": ("cosine_similarity", _cosine),
    "raw": ("cosine_similarity", _cosine),
}
#: Every metric a :class:`Fidelity` may name.
METRICS: tuple[str, ...] = tuple(dict.fromkeys(metric for metric, _ in MEASURES.values()))
