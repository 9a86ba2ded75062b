"""Typed results: what a head's decoder returns, and what one frame produces.

Each head's decoder (:mod:`edge_runtime.inference.decoders`) returns one of the small dataclasses below;
their docstrings state the shape and dtype of every array, and ``__post_init__`` converts
array-likes to those dtypes and checks the shapes (``ValueError`` on a mismatch: building a
result wrongly is a programming error, not a user's). Coordinates are in *frame* pixels.
``to_dict()`` gives a compact, JSON-ready form: lists of rounded floats (4 decimals; pixel
coordinates 2), ints and strings, never NaN (written as ``null``).

Example::

    import json
    from edge_runtime.inference.results import Classification, FrameResult

    cls = Classification(class_ids=[1, 0], scores=[0.9, 0.1], labels=("dog", "cat"))
    frame = FrameResult(frame_id=7, timestamp=1764000000.0, results={"classes": cls},
                        latency_ms={"trunk": 2.5, "total": 4.0})
    print(json.dumps(frame.to_dict(device="pi-01", seq=42)))
    # {"device": "pi-01", "seq": 42, "frame_id": 7, "ts": 1764000000.0,
    #  "results": {"classes": {"labels": ["dog", "cat"], "class_ids": [1, 0], "scores": [0.9, 0.1]}},
    #  "latency_ms": {"trunk": 2.5, "total": 4.0}}

On the command line, ``edge-runtime run --bundle BUNDLE --source synthetic`` prints one such
line per frame.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np

logger = logging.getLogger(__name__)

#: Decimals kept by ``to_dict()`` for scores, values and embeddings.
DECIMALS = 4
#: Decimals kept by ``to_dict()`` for pixel coordinates (1/100 px).
PIXEL_DECIMALS = 2


def _set(obj: object, name: str, value: Any) -> None:
    """Assign a field of a frozen dataclass from ``__post_init__``."""
    object.__setattr__(obj, name, value)


def _array(value: Any, dtype: type, shape: tuple[int | None, ...], what: str) -> np.ndarray:
    """``value`` as an array of ``dtype`` whose shape matches ``shape`` (``None`` = any size)."""
    arr: np.ndarray = np.asarray(value, dtype=dtype)
    if arr.ndim != len(shape) or any(
        want is not None and got != want for got, want in zip(arr.shape, shape, strict=True)
    ):
        expected = "(" + ", ".join("n" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
        raise ValueError(f"{what} must have shape {expected}, got {arr.shape}")
    return arr


def _names(value: Sequence[str], count: int, what: str) -> tuple[str, ...]:
    names = tuple(value)
    if len(names) != count or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{what} must be {count} strings, got {names!r}")
    return names


def rounded(values: np.ndarray | float, decimals: int = DECIMALS) -> Any:
    """A float array (any shape) as nested lists of rounded Python floats; NaN/inf become ``None``."""
    with np.errstate(invalid="ignore", over="ignore"):  # inf/NaN become None below
        arr = np.round(np.asarray(values, dtype=np.float64), decimals)
    if np.isfinite(arr).all():
        return arr.tolist()
    out = arr.astype(object)
    out[~np.isfinite(arr)] = None
    return out.tolist()


@dataclass(frozen=True, eq=False)
class Classification:
    """Top-k classes of a classification head.

    - ``class_ids``: ``(k,) int64`` indices into the head's labels, best first;
    - ``scores``: ``(k,) float32`` probabilities, sorted descending;
    - ``labels``: ``k`` class names, in the order of ``class_ids``.

    ``k`` may be 0 (a multi-label head where no class reached its threshold).
    """

    class_ids: np.ndarray
    scores: np.ndarray
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        class_ids = _array(self.class_ids, np.int64, (None,), "Classification.class_ids")
        k = len(class_ids)
        scores = _array(self.scores, np.float32, (k,), "Classification.scores")
        if k > 1 and bool(np.any(np.diff(scores) > 0)):
            raise ValueError(f"Classification.scores must be sorted descending, got {scores.tolist()}")
        _set(self, "class_ids", class_ids)
        _set(self, "scores", scores)
        _set(self, "labels", _names(self.labels, k, "Classification.labels"))

    def __len__(self) -> int:
        return len(self.class_ids)

    @property
    def top(self) -> tuple[str, float] | None:
        """``(label, score)`` of the best class, or ``None`` when ``k`` is 0."""
        return (self.labels[0], float(self.scores[0])) if len(self) else None

    def to_dict(self) -> dict[str, Any]:
        """``{"labels": [...], "class_ids": [...], "scores": [...]}``."""
        return {"labels": list(self.labels), "class_ids": self.class_ids.tolist(), "scores": rounded(self.scores)}


@dataclass(frozen=True, eq=False)
class Detections:
    """Objects found by a detection head, after NMS, best first.

    - ``xyxy``: ``(n, 4) float32`` boxes ``x1, y1, x2, y2`` in frame pixels;
    - ``scores``: ``(n,) float32`` confidence of each box;
    - ``class_ids``: ``(n,) int64`` class index of each box;
    - ``labels``: ``n`` class names, one per box;
    - ``keypoints``: ``(n, k, 2) float32`` ``x, y`` per box and point in frame pixels (not
      clipped), or ``None`` when the head has no keypoints;
    - ``keypoint_scores``: ``(n, k) float32`` visibility of each point, or ``None``;
    - ``keypoint_names``: ``k`` point names (empty without keypoints).
    """

    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    labels: tuple[str, ...]
    keypoints: np.ndarray | None = None
    keypoint_scores: np.ndarray | None = None
    keypoint_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        xyxy = _array(self.xyxy, np.float32, (None, 4), "Detections.xyxy")
        n = len(xyxy)
        _set(self, "xyxy", xyxy)
        _set(self, "scores", _array(self.scores, np.float32, (n,), "Detections.scores"))
        _set(self, "class_ids", _array(self.class_ids, np.int64, (n,), "Detections.class_ids"))
        _set(self, "labels", _names(self.labels, n, "Detections.labels"))
        k = len(self.keypoint_names)
        if self.keypoints is None:
            if k or self.keypoint_scores is not None:
                raise ValueError("Detections.keypoint_names/keypoint_scores need Detections.keypoints")
            return
        _set(self, "keypoints", _array(self.keypoints, np.float32, (n, k, 2), "Detections.keypoints"))
        _set(self, "keypoint_names", _names(self.keypoint_names, k, "Detections.keypoint_names"))
        if self.keypoint_scores is not None:
            _set(
                self, "keypoint_scores", _array(self.keypoint_scores, np.float32, (n, k), "Detections.keypoint_scores")
            )

    def __len__(self) -> int:
        return len(self.xyxy)

    def to_dict(self) -> dict[str, Any]:
        """``{"xyxy": [[x1, y1, x2, y2], ...], "scores": [...], "class_ids": [...], "labels": [...]}``,
        plus ``"keypoint_names"``, ``"keypoints"`` (``[[[x, y], ...], ...]``) and
        ``"keypoint_scores"`` when the head has keypoints."""
        out: dict[str, Any] = {
            "xyxy": rounded(self.xyxy, PIXEL_DECIMALS),
            "scores": rounded(self.scores),
            "class_ids": self.class_ids.tolist(),
            "labels": list(self.labels),
        }
        if self.keypoints is not None:
            out["keypoint_names"] = list(self.keypoint_names)
            out["keypoints"] = rounded(self.keypoints, PIXEL_DECIMALS)
            if self.keypoint_scores is not None:
                out["keypoint_scores"] = rounded(self.keypoint_scores)
        return out


def rle_runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The project's one run-length encoding: ``(values, counts)`` of ``mask`` read row-major —
    the mask is ``values[i]`` repeated ``counts[i]`` times, in order (``counts`` int64). The JSON
    form (:func:`encode_rle`) and the wire format (``edge_runtime.codec``) both use it."""
    flat = np.asarray(mask).ravel()
    if flat.size == 0:
        return flat[:0], np.zeros(0, dtype=np.int64)
    starts = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1))
    counts = np.diff(np.append(starts, flat.size)).astype(np.int64)
    return flat[starts], counts


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """Run-length encode a 2-D integer mask, row-major (:func:`rle_runs`).

    Returns ``{"shape": [h, w], "values": [...], "counts": [...]}``: the mask is ``values[i]``
    repeated ``counts[i]`` times, for each ``i`` in order. :func:`decode_rle` inverts it.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask to encode must be 2-D, got shape {mask.shape}")
    values, counts = rle_runs(mask)
    return {"shape": list(mask.shape), "values": values.tolist(), "counts": counts.tolist()}


def decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_rle`: ``(h, w)`` mask, ``uint8`` when every value fits, else ``int32``."""
    try:
        height, width = (int(d) for d in rle["shape"])
        values = np.asarray(rle["values"], dtype=np.int64)
        counts = np.asarray(rle["counts"], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not a run-length encoded mask ({exc}): {dict(rle)!r:.200}") from exc
    if values.shape != counts.shape or values.ndim != 1 or bool(np.any(counts < 0)):
        raise ValueError("a run-length encoding needs as many non-negative counts as values")
    if int(counts.sum()) != height * width:
        raise ValueError(f"run lengths add up to {int(counts.sum())}, but shape {[height, width]} has {height * width}")
    small = values.size == 0 or (int(values.min()) >= 0 and int(values.max()) <= 255)
    return np.repeat(values, counts).astype(np.uint8 if small else np.int32).reshape(height, width)


@dataclass(frozen=True, eq=False)
class Segmentation:
    """Per-pixel classes of a segmentation head.

    - ``mask``: ``(h, w) uint8`` (or ``int32`` with more than 256 classes) class ids at the
      model's output resolution, covering the frame's content only (letterbox padding removed);
    - ``classes``: class names, indexed by the values of ``mask``;
    - ``class_areas``: fraction of mask pixels of each class (classes with no pixels, or
      below the head's ``min_area``, are left out);
    - ``frame_width``, ``frame_height``: size of the frame the mask belongs to;
    - ``region``: ``(x0, y0, x1, y1)`` of the frame, in frame pixels, that the mask covers;
      ``None`` means the whole frame (letterbox, stretch). Under a centre crop it is the crop.
    """

    mask: np.ndarray
    classes: tuple[str, ...]
    class_areas: dict[str, float]
    frame_width: int
    frame_height: int
    region: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        mask = np.asarray(self.mask)
        if mask.ndim != 2 or mask.dtype not in (np.uint8, np.int32):
            raise ValueError(f"Segmentation.mask must be (h, w) uint8 or int32, got {mask.shape} {mask.dtype}")
        classes = tuple(self.classes)
        if not classes or not all(isinstance(c, str) for c in classes):
            raise ValueError(f"Segmentation.classes must be a non-empty tuple of strings, got {classes!r}")
        if mask.size and (int(mask.min()) < 0 or int(mask.max()) >= len(classes)):
            raise ValueError(f"Segmentation.mask holds ids outside 0..{len(classes) - 1} (classes {classes!r})")
        unknown = set(self.class_areas) - set(classes)
        if unknown:
            raise ValueError(f"Segmentation.class_areas names unknown classes {sorted(unknown)}")
        if self.frame_width < 1 or self.frame_height < 1:
            raise ValueError(f"Segmentation frame size must be positive, got {self.frame_width}x{self.frame_height}")
        _set(self, "mask", mask)
        _set(self, "classes", classes)
        _set(self, "class_areas", {k: float(v) for k, v in self.class_areas.items()})
        if self.region is not None:
            x0, y0, x1, y1 = (float(v) for v in self.region)
            _set(self, "region", (x0, y0, x1, y1))

    @staticmethod
    def areas(mask: np.ndarray, classes: Sequence[str], min_area: float = 0.0) -> dict[str, float]:
        """Fraction of ``mask`` pixels per class, leaving out classes with no pixels or below ``min_area``."""
        if mask.size == 0:
            return {}
        fractions = np.bincount(mask.ravel(), minlength=len(classes)) / mask.size
        return {c: float(f) for c, f in zip(classes, fractions[: len(classes)], strict=True) if f > 0 and f >= min_area}

    def rle(self) -> dict[str, Any]:
        """The mask run-length encoded (:func:`encode_rle`)."""
        return encode_rle(self.mask)

    def to_frame_size(self) -> np.ndarray:
        """The mask resized (nearest neighbour) to ``(frame_height, frame_width)``, same dtype.

        Frame pixels outside ``region`` (only under a centre crop) get class 0.
        """
        h, w = self.mask.shape
        x0, y0, x1, y1 = self.region if self.region is not None else (0.0, 0.0, self.frame_width, self.frame_height)
        out_of_view = h == 0 or w == 0 or x1 <= x0 or y1 <= y0
        if out_of_view:
            return np.zeros((self.frame_height, self.frame_width), dtype=self.mask.dtype)
        rows = np.floor((np.arange(self.frame_height) + 0.5 - y0) * (h / (y1 - y0))).astype(np.int64)
        cols = np.floor((np.arange(self.frame_width) + 0.5 - x0) * (w / (x1 - x0))).astype(np.int64)
        row_ok = (rows >= 0) & (rows < h)
        col_ok = (cols >= 0) & (cols < w)
        out = self.mask[np.clip(rows, 0, h - 1)[:, None], np.clip(cols, 0, w - 1)[None, :]]
        if not (row_ok.all() and col_ok.all()):
            out[~(row_ok[:, None] & col_ok[None, :])] = 0
        return out

    def to_dict(self) -> dict[str, Any]:
        """``{"classes", "class_areas", "frame_size": [w, h], "region"?, "rle"}`` (``region`` only when set)."""
        out: dict[str, Any] = {
            "classes": list(self.classes),
            "class_areas": {k: round(v, DECIMALS) for k, v in self.class_areas.items()},
            "frame_size": [self.frame_width, self.frame_height],
        }
        if self.region is not None:
            out["region"] = rounded(np.asarray(self.region), PIXEL_DECIMALS)
        out["rle"] = self.rle()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Segmentation:
        """Rebuild a segmentation from :meth:`to_dict` output (e.g. on the subscriber)."""
        width, height = data["frame_size"]
        region = data.get("region")
        return cls(
            mask=decode_rle(data["rle"]),
            classes=tuple(data["classes"]),
            class_areas=dict(data.get("class_areas", {})),
            frame_width=int(width),
            frame_height=int(height),
            region=None if region is None else (region[0], region[1], region[2], region[3]),
        )


@dataclass(frozen=True, eq=False)
class Landmarks:
    """Keypoints of a landmark head.

    - ``points``: ``(k, 2) float32`` ``x, y`` in frame pixels (not clipped: a point may lie
      outside the frame);
    - ``scores``: ``(k,) float32`` confidence per point, or ``None`` when the head gives none;
    - ``names``: ``k`` point names;
    - ``presence``: probability that the object the points belong to is there at all (a face
      in a face-landmark model's crop), or ``None`` when the head gives none. Below the
      head's ``presence_threshold`` the decoder reports no points (``k`` = 0);
    - ``z``: ``(k,) float32`` depth per point on the scale of ``x`` (frame pixels; MediaPipe's
      face mesh and iris models give one, relative to the object), or ``None`` when the head
      gives none.
    """

    points: np.ndarray
    scores: np.ndarray | None
    names: tuple[str, ...]
    presence: float | None = None
    z: np.ndarray | None = None

    def __post_init__(self) -> None:
        points = _array(self.points, np.float32, (None, 2), "Landmarks.points")
        k = len(points)
        _set(self, "points", points)
        if self.scores is not None:
            _set(self, "scores", _array(self.scores, np.float32, (k,), "Landmarks.scores"))
        _set(self, "names", _names(self.names, k, "Landmarks.names"))
        if self.presence is not None:
            _set(self, "presence", float(self.presence))
        if self.z is not None:
            _set(self, "z", _array(self.z, np.float32, (k,), "Landmarks.z"))

    def __len__(self) -> int:
        return len(self.points)

    def to_dict(self) -> dict[str, Any]:
        """``{"names": [...], "points": [[x, y], ...], "scores": [...], "presence": p, "z": [...]}``
        (``scores``, ``presence`` and ``z`` only when known)."""
        out: dict[str, Any] = {"names": list(self.names), "points": rounded(self.points, PIXEL_DECIMALS)}
        if self.scores is not None:
            out["scores"] = rounded(self.scores)
        if self.presence is not None:
            out["presence"] = rounded(self.presence)
        if self.z is not None:
            out["z"] = rounded(self.z, PIXEL_DECIMALS)
        return out


@dataclass(frozen=True, eq=False)
class Regression:
    """Values of a regression head.

    - ``values``: ``(n,) float32`` (already multiplied by the head's ``scale``);
    - ``names``: ``n`` value names;
    - ``box``: ``(4,) float32`` ``x1, y1, x2, y2`` in frame pixels when the head predicts a
      box (decoder parameter ``box_format``), else ``None``.
    """

    values: np.ndarray
    names: tuple[str, ...]
    box: np.ndarray | None = None

    def __post_init__(self) -> None:
        values = _array(self.values, np.float32, (None,), "Regression.values")
        _set(self, "values", values)
        _set(self, "names", _names(self.names, len(values), "Regression.names"))
        if self.box is not None:
            _set(self, "box", _array(self.box, np.float32, (4,), "Regression.box"))

    def to_dict(self) -> dict[str, Any]:
        """``{"names": [...], "values": [...], "box": [x1, y1, x2, y2]}`` (``box`` only when known)."""
        out: dict[str, Any] = {"names": list(self.names), "values": rounded(self.values)}
        if self.box is not None:
            out["box"] = rounded(self.box, PIXEL_DECIMALS)
        return out


@dataclass(frozen=True, eq=False)
class Embedding:
    """Feature vector of an embedding head: ``vector`` is ``(d,) float32`` (L2-normalised by default)."""

    vector: np.ndarray

    def __post_init__(self) -> None:
        _set(self, "vector", _array(self.vector, np.float32, (None,), "Embedding.vector"))

    def __len__(self) -> int:
        return len(self.vector)

    def to_dict(self) -> dict[str, Any]:
        """``{"vector": [...]}``, 4 decimals."""
        return {"vector": rounded(self.vector)}


@dataclass(frozen=True, eq=False)
class RawOutput:
    """A head's output tensors as the model gave them (item 0 of the batch), by output name."""

    tensors: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        _set(self, "tensors", {str(k): np.asarray(v) for k, v in self.tensors.items()})

    def to_dict(self) -> dict[str, Any]:
        """``{name: {"shape": [...], "dtype": "float32", "data": nested lists}}``; floats to 4 decimals."""
        out: dict[str, Any] = {}
        for name, tensor in self.tensors.items():
            if np.issubdtype(tensor.dtype, np.floating):
                data = rounded(tensor)
            elif tensor.dtype.kind in "biu":
                data = tensor.tolist()
            else:
                data = str(tensor.tolist())
            out[name] = {"shape": list(tensor.shape), "dtype": str(tensor.dtype), "data": data}
        return out


HeadResult: TypeAlias = Classification | Detections | Segmentation | Landmarks | Regression | Embedding | RawOutput
"""What one head's decoder returns."""


def result_to_dict(result: HeadResult) -> dict[str, Any]:
    """The JSON-ready form of any head result (its ``to_dict()``)."""
    return result.to_dict()


@dataclass(frozen=True)
class FrameResult:
    """Everything one frame produced.

    - ``frame_id``: the frame's number from the source (``>= 0``);
    - ``timestamp``: capture time, Unix seconds;
    - ``results``: head name → result, only for heads that ran on this frame;
    - ``latency_ms``: stage → milliseconds (``"preprocess"``, ``"trunk"``, ``"head:<name>"``,
      ``"decode"``, ``"total"``);
    - ``skipped``: heads that were not due on this frame.
    """

    frame_id: int
    timestamp: float
    results: dict[str, HeadResult]
    latency_ms: dict[str, float] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.frame_id, bool) or not isinstance(self.frame_id, (int, np.integer)) or self.frame_id < 0:
            raise ValueError(f"FrameResult.frame_id must be an int >= 0, got {self.frame_id!r}")
        if not math.isfinite(self.timestamp):
            raise ValueError(f"FrameResult.timestamp must be finite, got {self.timestamp!r}")
        overlap = set(self.results) & set(self.skipped)
        if overlap:
            raise ValueError(f"heads {sorted(overlap)} are both in results and skipped")
        _set(self, "frame_id", int(self.frame_id))
        _set(self, "timestamp", float(self.timestamp))
        _set(self, "skipped", tuple(self.skipped))

    def to_dict(self, device: str, seq: int) -> dict[str, Any]:
        """The result line of docs/protocol.md: ``device, seq, frame_id, ts, results, latency_ms``."""
        return {
            "device": device,
            "seq": int(seq),
            "frame_id": self.frame_id,
            "ts": round(self.timestamp, 6),
            "results": {name: result.to_dict() for name, result in self.results.items()},
            "latency_ms": {stage: round(float(ms), 3) for stage, ms in self.latency_ms.items()},
        }
