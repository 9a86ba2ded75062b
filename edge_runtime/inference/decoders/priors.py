"""Prior (anchor) boxes for the ``ssd`` decoder family: pure functions, ``(P, 4) float32``
``cx, cy, w, h`` in 0..1 of the model input.

Two sources, read from a head's decoder parameters:

- :class:`PriorSpec` (``priors``): the PriorBox of SSD (amdegroot/ssd.pytorch, Caffe SSD) and
  RetinaFace / FaceBoxes (biubug6/Pytorch_Retinaface). Per level, per cell (row-major), per min
  size: the square prior of that size, then ``sqrt(min * max)`` with ``max_sizes``, then one prior
  per aspect ratio ``ar != 1`` (``w = s*sqrt(ar)``, ``h = s/sqrt(ar)``) and, with ``flip``
  (default, as SSD), one for ``1/ar``.
- :class:`AnchorSpec` (``anchors``): MediaPipe's ``SsdAnchorsCalculator`` (BlazeFace, palm, pose
  and SSD detectors): consecutive layers with the same stride share one grid; scales
  interpolate from ``min_scale`` to ``max_scale`` over the layers.

Example::

    spec = PriorSpec.read({"min_sizes": [[16, 32], [64, 128], [256, 512]], "strides": [8, 16, 32]}, fail)
    prior_boxes(spec, 640, 640).shape  # (16800, 4): 80x80x2 + 40x40x2 + 20x20x2
    spec = AnchorSpec.read({"strides": [8, 16, 16, 16], "min_scale": 0.1484375, "max_scale": 0.75}, fail)
    ssd_anchors(spec, 128, 128)[:2]  # [[0.03125, 0.03125, 1, 1], [0.03125, 0.03125, 1, 1]] (BlazeFace)

``fail(key, message)`` makes the error (the decoder passes :meth:`Params.fail`, so messages
name the head and ``priors.<key>``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_runtime.errors import close_matches

#: Makes the error for parameter ``key`` (``Params.fail``).
Fail = Callable[[str, str], Exception]

#: ``(rows, cols, priors per cell)`` of each level (or MediaPipe layer group).
Levels = list[tuple[int, int, int]]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class _Table:
    """Reads one table parameter (``priors`` or ``anchors``); errors name ``<table>.<key>``."""

    def __init__(self, name: str, table: Any, keys: Sequence[str], fail: Fail) -> None:
        self.name = name
        self._fail = fail
        if not isinstance(table, Mapping):
            raise fail(name, f"must be a table with keys {', '.join(keys)}; got {table!r}")
        for key in table:
            if key not in keys:
                raise fail(
                    f"{name}.{key}",
                    f"is not a key of {name}{close_matches(str(key), keys)}; valid keys: {', '.join(keys)}",
                )
        self.table = table

    def fail(self, key: str, message: str) -> Exception:
        return self._fail(f"{self.name}.{key}", message)

    def number(self, key: str, default: float | None, low: float | None = None, positive: bool = False) -> Any:
        value = self.table.get(key)
        if value is None:
            return default
        if not _is_number(value) or (positive and value <= 0) or (low is not None and value < low):
            bound = " > 0" if positive else f" >= {low}" if low is not None else ""
            raise self.fail(key, f"must be a number{bound}, got {value!r}")
        return float(value)

    def count(self, key: str, default: int | None) -> int | None:
        value = self.table.get(key)
        if value is None:
            return default
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise self.fail(key, f"must be an integer >= 1, got {value!r}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {value!r}")
        return value

    def numbers(self, key: str, integer: bool = False) -> tuple[float, ...] | None:
        """A non-empty list of positive numbers (integers with ``integer``), or ``None``."""
        value = self.table.get(key)
        if value is None:
            return None
        kind = "integers >= 1" if integer else "numbers > 0"
        if (
            not isinstance(value, (list, tuple))
            or not value
            or not all(_is_number(v) and v > 0 and (not integer or isinstance(v, int)) for v in value)
        ):
            raise self.fail(key, f"must be a non-empty list of {kind}, got {value!r}")
        return tuple(float(v) for v in value)

    def per_level(
        self, key: str, levels: int | None, allow_empty: bool = False
    ) -> tuple[tuple[float, ...], ...] | None:
        """A list with one entry per level, each a positive number or a list of them."""
        value = self.table.get(key)
        if value is None:
            return None
        bad = self.fail(
            key, f"must be a list with one entry per level, each a number > 0 or a list of them; got {value!r}"
        )
        if not isinstance(value, (list, tuple)) or not value:
            raise bad
        out = []
        for entry in value:
            items = entry if isinstance(entry, (list, tuple)) else [entry]
            if (not items and not allow_empty) or not all(_is_number(v) and v > 0 for v in items):
                raise bad
            out.append(tuple(float(v) for v in items))
        if levels is not None and len(out) != levels:
            raise self.fail(key, f"has {len(out)} entries for {levels} levels (one per entry of min_sizes)")
        return tuple(out)


def _cells(rows: int, cols: int, step_x: float, step_y: float, offset_x: float, offset_y: float) -> np.ndarray:
    """Centres ``(rows*cols, 2)`` of a grid, row-major: ``((j + offset_x) * step_x, (i + offset_y) * step_y)``."""
    cx, cy = np.meshgrid((np.arange(cols) + offset_x) * step_x, (np.arange(rows) + offset_y) * step_y)
    return np.stack([cx.ravel(), cy.ravel()], axis=1)


def _tile(centres: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """Every shape ``(S, 2)`` (w, h) at every centre ``(N, 2)`` → ``(N*S, 4)``, centre-major."""
    out = np.empty((len(centres), len(shapes), 4), dtype=np.float64)
    out[:, :, :2] = centres[:, None, :]
    out[:, :, 2:] = shapes[None, :, :]
    return out.reshape(-1, 4)


def describe(levels: Levels, input_w: int, input_h: int) -> str:
    """``"3 levels: 80x80x2, 40x40x2, 20x20x2 at input 640x640"`` (rows x cols x per cell)."""
    grids = ", ".join(f"{rows}x{cols}x{per_cell}" for rows, cols, per_cell in levels)
    return f"{len(levels)} level{'s' if len(levels) != 1 else ''}: {grids} at input {input_w}x{input_h}"


@dataclass(frozen=True)
class PriorSpec:
    """The ``priors`` table: SSD / RetinaFace / FaceBoxes PriorBox.

    ``min_sizes`` (required; per level a size or a list of sizes, model-input pixels),
    ``strides`` (per level, pixels between cell centres) and/or ``feature_maps`` (per level
    ``[rows, cols]``; default ``ceil(H/stride), ceil(W/stride)``; without strides the step is
    ``input / cells``, as Caffe SSD), ``max_sizes`` (optional, per level one per min size, or
    ``[]`` for none), ``aspect_ratios`` (optional, per level; ``1`` and repeats are skipped, as
    Caffe SSD), ``flip`` (true: also ``1/ar``), ``offset`` (0.5), ``clip`` (false: clamp
    ``cx, cy, w, h`` to 0..1) and ``input_size`` (``[w, h]``; default the model input size).
    """

    min_sizes: tuple[tuple[float, ...], ...]
    strides: tuple[float, ...] | None = None
    feature_maps: tuple[tuple[int, int], ...] | None = None
    max_sizes: tuple[tuple[float, ...], ...] | None = None
    aspect_ratios: tuple[tuple[float, ...], ...] | None = None
    flip: bool = True
    offset: float = 0.5
    clip: bool = False
    input_size: tuple[int, int] | None = None

    KEYS = tuple("min_sizes strides feature_maps max_sizes aspect_ratios flip offset clip input_size".split())

    @classmethod
    def read(cls, table: Any, fail: Fail) -> PriorSpec:
        """The spec from the ``priors`` table; ``fail(key, message)`` makes the errors."""
        t = _Table("priors", table, cls.KEYS, fail)
        min_sizes = t.per_level("min_sizes", None)
        if min_sizes is None:
            raise t.fail("min_sizes", "is required: per level the prior sizes in model-input pixels")
        levels = len(min_sizes)
        strides = t.numbers("strides")
        if strides is not None and len(strides) != levels:
            raise t.fail("strides", f"has {len(strides)} entries for {levels} levels (one per entry of min_sizes)")
        feature_maps = None
        raw_maps = t.table.get("feature_maps")
        if raw_maps is not None:
            if not isinstance(raw_maps, (list, tuple)) or not all(
                isinstance(m, (list, tuple))
                and len(m) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in m)
                for m in raw_maps
            ):
                raise t.fail("feature_maps", f"must be a list of [rows, cols] per level, got {raw_maps!r}")
            if len(raw_maps) != levels:
                raise t.fail("feature_maps", f"has {len(raw_maps)} entries for {levels} levels")
            feature_maps = tuple((int(m[0]), int(m[1])) for m in raw_maps)
        if strides is None and feature_maps is None:
            raise t.fail("strides", "(or priors.feature_maps) is required: where the priors of each level sit")
        max_sizes = t.per_level("max_sizes", levels, allow_empty=True)
        if max_sizes is not None:
            for level, (mins, maxes) in enumerate(zip(min_sizes, max_sizes, strict=True)):
                if maxes and len(maxes) != len(mins):
                    raise t.fail("max_sizes", f"level {level} has {len(maxes)} max sizes for {len(mins)} min sizes")
        size = t.numbers("input_size", integer=True)
        if size is not None and len(size) != 2:
            raise t.fail("input_size", f"must be [width, height], got {list(size)}")
        return cls(
            min_sizes=min_sizes,
            strides=strides,
            feature_maps=feature_maps,
            max_sizes=max_sizes,
            aspect_ratios=t.per_level("aspect_ratios", levels, allow_empty=True),
            flip=t.flag("flip", True),
            offset=float(t.number("offset", 0.5, low=0.0)),
            clip=t.flag("clip", False),
            input_size=(int(size[0]), int(size[1])) if size is not None else None,
        )

    def size(self, input_w: int, input_h: int) -> tuple[int, int]:
        """``input_size``, or the model input size given."""
        return self.input_size or (input_w, input_h)

    def shapes(self, level: int) -> np.ndarray:
        """``(S, 2)`` prior ``w, h`` of one cell of ``level``, model-input pixels, in prior order."""
        ratios: list[float] = [1.0]
        for ar in self.aspect_ratios[level] if self.aspect_ratios else ():
            if all(abs(ar - seen) >= 1e-6 for seen in ratios):
                ratios.append(ar)
                if self.flip:
                    ratios.append(1.0 / ar)
        shapes: list[tuple[float, float]] = []
        for index, s in enumerate(self.min_sizes[level]):
            shapes.append((s, s))
            maxes = self.max_sizes[level] if self.max_sizes else ()
            if maxes:
                shapes.append((math.sqrt(s * maxes[index]),) * 2)
            shapes.extend((s * math.sqrt(ar), s / math.sqrt(ar)) for ar in ratios[1:])
        return np.asarray(shapes, dtype=np.float64)

    def levels(self, input_w: int, input_h: int) -> Levels:
        """``(rows, cols, priors per cell)`` of each level."""
        w, h = self.size(input_w, input_h)
        out = []
        for level in range(len(self.min_sizes)):
            if self.feature_maps is not None:
                rows, cols = self.feature_maps[level]
            else:
                assert self.strides is not None
                rows, cols = math.ceil(h / self.strides[level]), math.ceil(w / self.strides[level])
            out.append((rows, cols, len(self.shapes(level))))
        return out


def prior_boxes(spec: PriorSpec, input_w: int, input_h: int) -> np.ndarray:
    """The priors ``(P, 4) float32`` ``cx, cy, w, h`` in 0..1 of the input (``spec.input_size``,
    else ``input_w x input_h``): level by level, cell row-major, then per min size its square
    prior, its ``sqrt(min*max)`` prior, its aspect-ratio priors."""
    w, h = spec.size(input_w, input_h)
    parts = []
    for level, (rows, cols, _) in enumerate(spec.levels(input_w, input_h)):
        if spec.strides is not None:
            step_x, step_y = spec.strides[level] / w, spec.strides[level] / h
        else:
            step_x, step_y = 1.0 / cols, 1.0 / rows
        centres = _cells(rows, cols, step_x, step_y, spec.offset, spec.offset)
        parts.append(_tile(centres, spec.shapes(level) / np.array([w, h], dtype=np.float64)))
    priors = np.concatenate(parts) if parts else np.zeros((0, 4))
    if spec.clip:
        priors = np.clip(priors, 0.0, 1.0)
    return priors.astype(np.float32)


@dataclass(frozen=True)
class AnchorSpec:
    """The ``anchors`` table: MediaPipe ``SsdAnchorsCalculatorOptions``.

    ``strides`` (required, one per layer), ``num_layers`` (default: the number of strides;
    must match it), ``min_scale``, ``max_scale`` (required), ``anchor_offset_x`` /
    ``anchor_offset_y`` (0.5), ``aspect_ratios`` ([1.0]), ``fixed_anchor_size`` (true: every
    anchor is 1 x 1, as BlazeFace), ``interpolated_scale_aspect_ratio`` (1.0; 0 adds no
    interpolated anchor), ``reduce_boxes_in_lowest_layer`` (false), ``input_size_width`` /
    ``input_size_height`` (default the model input size).
    """

    strides: tuple[int, ...]
    min_scale: float
    max_scale: float
    anchor_offset_x: float = 0.5
    anchor_offset_y: float = 0.5
    aspect_ratios: tuple[float, ...] = (1.0,)
    fixed_anchor_size: bool = True
    interpolated_scale_aspect_ratio: float = 1.0
    reduce_boxes_in_lowest_layer: bool = False
    input_size_width: int | None = None
    input_size_height: int | None = None

    KEYS = tuple(
        "num_layers strides min_scale max_scale anchor_offset_x anchor_offset_y aspect_ratios fixed_anchor_size "
        "interpolated_scale_aspect_ratio reduce_boxes_in_lowest_layer input_size_width input_size_height".split()
    )

    @classmethod
    def read(cls, table: Any, fail: Fail) -> AnchorSpec:
        """The spec from the ``anchors`` table; ``fail(key, message)`` makes the errors."""
        t = _Table("anchors", table, cls.KEYS, fail)
        strides = t.numbers("strides", integer=True)
        if strides is None:
            raise t.fail("strides", "is required: one stride per layer, e.g. [8, 16, 16, 16] (BlazeFace)")
        layers = t.count("num_layers", len(strides))
        if layers != len(strides):
            raise t.fail("num_layers", f"is {layers} but anchors.strides has {len(strides)} entries")
        min_scale = t.number("min_scale", None, positive=True)
        max_scale = t.number("max_scale", None, positive=True)
        for key, value in (("min_scale", min_scale), ("max_scale", max_scale)):
            if value is None:
                raise t.fail(key, "is required (as in the model's SsdAnchorsCalculator options)")
        ratios = t.numbers("aspect_ratios")
        return cls(
            strides=tuple(int(s) for s in strides),
            min_scale=float(min_scale),
            max_scale=float(max_scale),
            anchor_offset_x=float(t.number("anchor_offset_x", 0.5)),
            anchor_offset_y=float(t.number("anchor_offset_y", 0.5)),
            aspect_ratios=ratios if ratios is not None else (1.0,),
            fixed_anchor_size=t.flag("fixed_anchor_size", True),
            interpolated_scale_aspect_ratio=float(t.number("interpolated_scale_aspect_ratio", 1.0, low=0.0)),
            reduce_boxes_in_lowest_layer=t.flag("reduce_boxes_in_lowest_layer", False),
            input_size_width=t.count("input_size_width", None),
            input_size_height=t.count("input_size_height", None),
        )

    def size(self, input_w: int, input_h: int) -> tuple[int, int]:
        """``input_size_width x input_size_height``, each defaulting to the model input's."""
        return self.input_size_width or input_w, self.input_size_height or input_h

    def scale(self, index: int) -> float:
        """MediaPipe's ``CalculateScale``: linear from ``min_scale`` to ``max_scale`` over the layers."""
        count = len(self.strides)
        if count == 1:
            return (self.min_scale + self.max_scale) * 0.5
        return self.min_scale + (self.max_scale - self.min_scale) * index / (count - 1.0)

    def groups(self) -> list[tuple[int, np.ndarray]]:
        """Per run of layers with the same stride: that stride and the ``(S, 2)`` anchor ``w, h``
        of one cell (normalised; 1 x 1 with ``fixed_anchor_size``)."""
        out = []
        layer = 0
        while layer < len(self.strides):
            ratios: list[float] = []
            scales: list[float] = []
            last = layer
            while last < len(self.strides) and self.strides[last] == self.strides[layer]:
                scale = self.scale(last)
                if last == 0 and self.reduce_boxes_in_lowest_layer:
                    ratios += [1.0, 2.0, 0.5]
                    scales += [0.1, scale, scale]
                else:
                    ratios += list(self.aspect_ratios)
                    scales += [scale] * len(self.aspect_ratios)
                    if self.interpolated_scale_aspect_ratio > 0.0:
                        following = 1.0 if last == len(self.strides) - 1 else self.scale(last + 1)
                        scales.append(math.sqrt(scale * following))
                        ratios.append(self.interpolated_scale_aspect_ratio)
                last += 1
            root = np.sqrt(np.asarray(ratios, dtype=np.float64))
            sizes = np.stack([np.asarray(scales) * root, np.asarray(scales) / root], axis=1)
            if self.fixed_anchor_size:
                sizes = np.ones_like(sizes)
            out.append((self.strides[layer], sizes))
            layer = last
        return out

    def levels(self, input_w: int, input_h: int) -> Levels:
        """``(rows, cols, anchors per cell)`` of each group of same-stride layers."""
        w, h = self.size(input_w, input_h)
        return [(math.ceil(h / stride), math.ceil(w / stride), len(sizes)) for stride, sizes in self.groups()]


def ssd_anchors(spec: AnchorSpec, input_w: int, input_h: int) -> np.ndarray:
    """MediaPipe's SSD anchors ``(P, 4) float32`` ``cx, cy, w, h`` (normalised): per group of
    same-stride layers, per cell row-major, its anchors (``cx = (x + anchor_offset_x) / cols``)."""
    w, h = spec.size(input_w, input_h)
    parts = []
    for stride, sizes in spec.groups():
        rows, cols = math.ceil(h / stride), math.ceil(w / stride)
        centres = _cells(rows, cols, 1.0 / cols, 1.0 / rows, spec.anchor_offset_x, spec.anchor_offset_y)
        parts.append(_tile(centres, sizes))
    return (np.concatenate(parts) if parts else np.zeros((0, 4))).astype(np.float32)
