"""Anchor-free per-stride grids (YOLOX, NanoDet, PP-PicoDet, YuNet): one prediction per cell of
each level's grid, decoded around the cell's grid point → :class:`~edge_runtime.inference.results.Detections`.

Level ``l`` of stride ``s`` has ``ceil(H/s)`` rows and ``ceil(W/s)`` columns of the model input
(``W x H``), read row-major; the grid point of cell ``(gx, gy)`` is ``((gx + offset) * s,
(gy + offset) * s)``. Boxes are distances to the four sides (``box: distance``; NanoDet,
PP-PicoDet, optionally as distributions over ``bins`` values: GFL/DFL) or a centre offset and a
log size (``box: center_exp``; YOLOX, YuNet). The tensors may hold every level concatenated,
one level each, or one role (scores, boxes, objectness, keypoints) of one level each.

Example (one level of stride 32 on a 64x64 input: 2x2 cells; 4 distances then 1 class per cell)::

    decode = GridDecoder("faces", {"strides": [32], "labels": ["face"], "bins": 1}, ["out"])
    rows = np.zeros((1, 4, 5), np.float32)  # (1, N, ch); PP-PicoDet: "bins": 8, (1, N_l, C) + (1, N_l, 32)
    rows[0, 3] = [0.5, 0.25, 0.25, 0.5, 0.9]  # cell (1, 1), grid point (48, 48)
    result = decode({"out": rows}, FrameGeometry.stretch(64, 64, 64, 64))
    result.xyxy, result.labels  # [[32., 40., 56., 64.]], ('face',)
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from edge_runtime.errors import ConfigError, ModelError, close_matches
from edge_runtime.inference.decoders.base import Decoder, Params
from edge_runtime.inference.decoders.common import sigmoid, softmax
from edge_runtime.inference.decoders.nms import NmsSettings, finish_detections, read_keypoints
from edge_runtime.inference.results import Detections

if TYPE_CHECKING:
    from edge_runtime.frames.geometry import FrameGeometry

#: The roles a tensor may hold, in their channel order within a tensor that holds several.
ROLES = ("box", "objectness", "score", "keypoint")
#: The per-level tensor layouts (batch first) the decoder reads.
LAYOUTS = "(1, N, ch), (1, ch, N), (1, ch, H, W) or (1, H, W, ch)"
#: At most this many input sizes (grid points) and output shapes (role plans) are cached.
CACHE_SIZE = 8


@dataclass(frozen=True)
class Grid:
    """The cells of every level for one input size: ``sizes`` ``(rows, columns)`` and ``counts``
    per level, ``points`` ``(N, 2)`` grid points and ``strides`` ``(N, 1)``, float32, level
    after level, row-major."""

    width: int
    height: int
    sizes: tuple[tuple[int, int], ...]
    counts: tuple[int, ...]
    points: np.ndarray
    strides: np.ndarray


def as_rows(
    tensor: np.ndarray, count: int, size: tuple[int, int] | None, channels_first: bool = False
) -> np.ndarray | None:
    """``tensor`` (one item, no batch) as ``(count, ch)`` rows (a view), or ``None`` when it
    does not hold ``count`` cells (``size``: the level's ``(rows, columns)`` for map layouts;
    ``channels_first`` decides a square ``(count, count)`` tensor)."""
    if tensor.ndim == 1 and tensor.shape[0] == count:
        return tensor.reshape(count, 1)
    if tensor.ndim == 2:
        if tensor.shape[0] == count and not (channels_first and tensor.shape[1] == count):
            return tensor
        if tensor.shape[1] == count:
            return tensor.T
    if tensor.ndim == 3 and size is not None:
        if tensor.shape[1:] == size:
            return tensor.reshape(tensor.shape[0], count).T
        if tensor.shape[:2] == size:
            return tensor.reshape(count, tensor.shape[2])
    return None


class GridDecoder(Decoder):
    """Boxes, scores, classes (and keypoints) from per-stride grids, after NMS.

    Parameters: ``strides`` (required, one per level, e.g. ``[8, 16, 32]``); ``box``:
    ``distance`` (default; left, top, right, bottom distances from the grid point, times the
    stride) or ``center_exp`` (``cx = (tx + gx + offset) * s``, ``w = exp(tw) * s``; YOLOX);
    ``grid_offset`` (default 0.5 for ``distance``, as PP-PicoDet and NanoDet before Plus;
    NanoDet-Plus needs 0; default 0.0 for ``center_exp``, as YOLOX and YuNet); ``bins`` (box
    distances as distributions over ``bins`` values, softmax then expectation (GFL/DFL): 4*bins
    box channels; 1 = plain values; default: from the box channels, 4*B → B); ``objectness``
    (false); ``score``: ``product`` (class x objectness, default) or ``sqrt`` (its square root,
    YuNet; needs objectness); ``activation``: ``none`` (default, probabilities) or ``sigmoid``
    (applied to class scores, objectness and keypoint visibility); ``keypoints`` (K, default 0),
    ``keypoint_dims`` (2 = x, y or 3 = x, y, visibility; default 2), ``keypoint_names``:
    keypoints are offsets from the cell like the box centre, ``x = (kx + gx + offset) * s``
    (YOLOX-Pose, YuNet); the NMS parameters ``labels``, ``score_threshold``, ``iou_threshold``,
    ``max_detections``, ``class_agnostic_nms``.

    Which output holds what: ``score_outputs``, ``box_outputs`` (and ``objectness_outputs``,
    ``keypoint_outputs`` when used) name one output per level, in stride order. Without them,
    ONE output holds every level concatenated, ``(1, N, ch)`` or ``(1, ch, N)``; as many outputs
    as strides hold one level each, in stride order; 2 to 4 outputs per level (one per role)
    are grouped by their number of cells and told apart by their channels: C classes (= the
    labels), 4 or 4*bins box values, 1 objectness, K*D keypoint values (else an error asks for
    ``score_outputs``/``box_outputs``). A tensor holding several roles has its channels in the
    order box, [objectness], classes, [keypoints, x y [v] per point]; when it holds both box and
    classes, ``labels``, ``bins`` or ``box: center_exp`` tells them apart. Per-level tensors may
    be ``(1, N_l, ch)``, ``(1, ch, N_l)``, ``(1, ch, H_l, W_l)`` or ``(1, H_l, W_l, ch)``.
    """

    kind = "grid"
    output_counts = (1, None)

    def configure(self, params: Params) -> None:
        strides = params.params.get("strides")
        if strides is None:
            raise params.fail("strides", "is required: the stride of each level, e.g. [8, 16, 32]")
        valid = isinstance(strides, (list, tuple)) and len(strides) > 0
        if not valid or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in strides):
            raise params.fail("strides", f"must be a non-empty list of positive integers, got {strides!r}")
        self.strides = tuple(int(s) for s in strides)
        self.box = str(params.choice("box", ("distance", "center_exp"), "distance"))
        self.offset = float(params.number("grid_offset", 0.5 if self.box == "distance" else 0.0))
        self.bins = params.count("bins", None)
        if self.box == "center_exp" and self.bins not in (None, 1):
            raise params.fail("bins", "applies to box = 'distance'; center_exp boxes are 4 values (tx, ty, tw, th)")
        self.objectness = params.flag("objectness", False)
        self.score = str(params.choice("score", ("product", "sqrt"), "product"))
        if self.score == "sqrt" and not self.objectness:
            raise params.fail("score", "'sqrt' (the root of class score x objectness) needs objectness = true")
        self.sigmoid = params.choice("activation", ("none", "sigmoid"), "none") == "sigmoid"
        self.keypoint_count, self.keypoint_names, self.keypoint_dims = read_keypoints(params, 2)
        self.settings = NmsSettings.read(params)
        self.labels = self.settings.labels
        wanted = {"box": True, "objectness": self.objectness, "score": True, "keypoint": self.keypoint_count > 0}
        self.roles = tuple(role for role in ROLES if wanted[role])
        self.named = self.read_role_outputs(params)
        levels, count = len(self.strides), len(self.outputs)
        self.mode = "named" if self.named else "levels" if count == levels else "joint" if count == 1 else "split"
        if self.mode == "split" and count != levels * len(self.roles):
            raise ConfigError(
                f"head {self.head!r}: the grid decoder with {levels} strides {list(self.strides)} reads 1 output "
                f"(every level concatenated), {levels} (one per level) or {levels * len(self.roles)} (one per level "
                f"and role: {', '.join(self.roles)}); the head has {count} ({', '.join(self.outputs)}); "
                "check strides, or name them with score_outputs/box_outputs"
            )
        if self.mode in ("levels", "joint") and self.box == "distance" and self.bins is None and not self.labels:
            raise params.fail(
                "bins",
                "is needed (or labels) when one tensor holds both box and class channels: 4*bins box channels "
                "(bins = 1: plain distances) come first, then the classes",
            )
        self.grids: dict[tuple[int, int], Grid] = {}
        self.plans: dict[tuple[object, ...], dict[str, tuple[str, ...]]] = {}

    def read_role_outputs(self, params: Params) -> dict[str, tuple[str, ...]] | None:
        """``{role: one output name per level}`` from ``score_outputs``… (checked), or ``None``."""
        given = {role: params.names(f"{role}_outputs") for role in ("score", "box", "objectness", "keypoint")}
        if all(names is None for names in given.values()):
            return None
        seen: set[str] = set()
        for role, names in ((role, names) for role, names in given.items() if names is not None):
            key = f"{role}_outputs"
            if role not in self.roles:
                raise params.fail(key, f"needs {'objectness = true' if role == 'objectness' else 'keypoints > 0'}")
            for name in names:
                if name not in self.outputs:
                    matches = close_matches(name, self.outputs)
                    raise params.fail(
                        key, f"names {name!r}, not an output of the head{matches}; outputs: {', '.join(self.outputs)}"
                    )
                if name in seen:
                    raise params.fail(key, f"names {name!r}, already given for another role")
                seen.add(name)
            if len(names) != len(self.strides):
                raise params.fail(key, f"has {len(names)} names for {len(self.strides)} strides: one per level")
        for role in (role for role in self.roles if given[role] is None):
            raise params.fail(f"{role}_outputs", "is required with the other *_outputs (one output per level)")
        return {role: names for role, names in given.items() if names is not None}

    def grid(self, width: int, height: int) -> Grid:
        """The cells and grid points for a ``width x height`` model input (cached)."""
        grid = self.grids.get((width, height))
        if grid is None:
            sizes = tuple((-(-height // s), -(-width // s)) for s in self.strides)
            cells = [np.mgrid[0:rows, 0:cols].reshape(2, -1)[::-1].T for rows, cols in sizes]  # (gx, gy), row-major
            points = [(xy + self.offset) * s for xy, s in zip(cells, self.strides, strict=True)]
            strides = [np.full((len(xy), 1), s) for xy, s in zip(cells, self.strides, strict=True)]
            counts = tuple(len(xy) for xy in cells)
            grid = Grid(
                width, height, sizes, counts, *(np.concatenate(a).astype(np.float32) for a in (points, strides))
            )
            if len(self.grids) >= CACHE_SIZE:
                self.grids.clear()
            self.grids[(width, height)] = grid
        return grid

    def expected(self, grid: Grid, level: int | None) -> str:
        """The layouts a tensor of level ``level`` may have (-1: every level concatenated; ``None``: any level)."""
        at = f"strides {list(self.strides)} at input {grid.width}x{grid.height}"
        if level == -1:
            total, cells = sum(grid.counts), " + ".join(map(str, grid.counts))
            return f"(1, {total}, ch) or (1, ch, {total}): every level's cells, N = {cells} ({at})"
        if level is None:
            return f"one level's cells, N = {' or '.join(map(str, grid.counts))} ({at}): {LAYOUTS}"
        (rows, cols), n = grid.sizes[level], grid.counts[level]
        where = f"level {level} (stride {self.strides[level]}, {rows}x{cols} cells at input {grid.width}x{grid.height})"
        return f"{where}: (1, {n}, ch), (1, ch, {n}), (1, ch, {rows}, {cols}) or (1, {rows}, {cols}, ch)"

    def rows(self, tensors: Mapping[str, np.ndarray], name: str, grid: Grid, level: int, first: bool) -> np.ndarray:
        """Output ``name`` as ``(N, ch)`` rows of level ``level`` (-1: every level concatenated;
        ``first``: a square tensor is ``(ch, N)``)."""
        tensor = self.item(tensors, name)
        count = sum(grid.counts) if level == -1 else grid.counts[level]
        rows = as_rows(tensor, count, None if level == -1 else grid.sizes[level], first)
        if rows is None:
            raise self.bad_shape(name, np.shape(tensors[name]), self.expected(grid, level))
        return rows

    def fits(self, role: str, channels: int, strict: bool = True) -> bool:
        """Whether a tensor of ``channels`` may hold ``role`` (``strict``: bins and labels checked)."""
        if role == "box":
            if self.box == "center_exp":
                return channels == 4
            return channels == 4 * self.bins if strict and self.bins else channels >= 4 and channels % 4 == 0
        if role == "objectness":
            return channels == 1
        if role == "keypoint":
            return channels == self.keypoint_count * self.keypoint_dims
        return channels == len(self.labels) if strict and self.labels else channels >= 1

    def split_plan(self, tensors: Mapping[str, np.ndarray], grid: Grid) -> dict[str, tuple[str, ...]]:
        """``{role: one output per level}`` for one tensor per level and role: levels by their
        number of cells, roles by their channels (cached per input size and output shapes)."""
        key = (grid.width, grid.height, *(np.shape(tensors[n]) if n in tensors else None for n in self.outputs))
        plan = self.plans.get(key)
        if plan is not None:
            return plan
        # (level, channels, read as (ch, N)) of each output; a (1, N, ch) tensor whose ch is another
        # level's N is read in the orientation of the outputs that fit one level only.
        found = {}
        for name in self.outputs:
            tensor = self.item(tensors, name)
            found[name] = [
                (level, rows.shape[1], tensor.ndim == 2 and tensor.shape[0] != count)
                for level, count in enumerate(grid.counts)
                if (rows := as_rows(tensor, count, grid.sizes[level])) is not None
            ]
            if not found[name]:
                raise self.bad_shape(name, np.shape(tensors[name]), self.expected(grid, None))
        first = next((fits[0][2] for fits in found.values() if len(fits) == 1), False)
        groups: list[list[tuple[str, int]]] = [[] for _ in self.strides]
        for name, fits in found.items():
            fits = [fit for fit in fits if fit[2] == first] if len(fits) > 1 else fits
            if len(fits) != 1:
                raise self.ambiguous(f"output {name!r} {np.shape(tensors[name])} fits several levels")
            groups[fits[0][0]].append((name, fits[0][1]))
        chosen: dict[str, list[str]] = {role: [] for role in self.roles}
        for level, group in enumerate(groups):
            outputs = ", ".join(f"{name!r} ({channels} ch)" for name, channels in group)
            where = f"level {level} (stride {self.strides[level]}, {grid.counts[level]} cells)"
            if len(group) != len(self.roles):
                raise self.ambiguous(f"{where} has {len(group)} outputs ({outputs or 'none'}), not {len(self.roles)}")
            for strict in (True, False):  # not strict: labels/bins mismatches are reported by parts()
                orders = [
                    order
                    for order in itertools.permutations(group)
                    if all(self.fits(role, ch, strict) for role, (_, ch) in zip(self.roles, order, strict=True))
                ]
                if orders:
                    break
            if len(orders) != 1:
                how = "no assignment fits" if not orders else f"{len(orders)} assignments fit"
                raise self.ambiguous(f"cannot tell the roles of {where} outputs {outputs}: {how}")
            for role, (name, _) in zip(self.roles, orders[0], strict=True):
                chosen[role].append(name)
        plan = {role: tuple(names) for role, names in chosen.items()}
        if len(self.plans) >= CACHE_SIZE:
            self.plans.clear()
        self.plans[key] = plan
        return plan

    def ambiguous(self, problem: str) -> ModelError:
        """A :class:`ModelError` asking to name the outputs of each role."""
        channels = [f"{role} {self.describe(role)}" for role in self.roles]
        return ModelError(
            f"head {self.head!r}: {problem}; the grid decoder expects per level one output each of "
            f"{', '.join(channels)} channels; name them with score_outputs and box_outputs"
            + (" (and objectness_outputs/keypoint_outputs)" if len(self.roles) > 2 else "")
        )

    def describe(self, role: str) -> str:
        """The channel count of ``role`` in words."""
        if role == "box":
            return "4" if self.box == "center_exp" else f"4*bins = {4 * self.bins}" if self.bins else "4 or 4*bins"
        if role == "objectness":
            return "1"
        if role == "keypoint":
            return f"K*D = {self.keypoint_count}*{self.keypoint_dims}"
        return f"C = {len(self.labels)} labels" if self.labels else "C"

    def parts(self, tensors: Mapping[str, np.ndarray], grid: Grid) -> dict[str, np.ndarray]:
        """Each role's values ``(N, ch)`` float32, every level concatenated."""
        if self.mode == "joint":
            name = self.outputs[0]
            return self.split_channels(name, tensors, self.rows(tensors, name, grid, -1, False))
        plan = {"all": self.outputs} if self.mode == "levels" else self.named or self.split_plan(tensors, grid)
        # A square (1, N_l, N_l) tensor is read like the model's other (1, N_l, ch) or (1, ch, N_l) ones.
        shapes = [
            (np.shape(tensors.get(n, ())), grid.counts[i]) for names in plan.values() for i, n in enumerate(names)
        ]
        first = next((s[2] == n for s, n in shapes if len(s) == 3 and (s[1] == n) != (s[2] == n)), False)
        rows = {
            role: [self.rows(tensors, n, grid, i, first) for i, n in enumerate(names)] for role, names in plan.items()
        }
        if self.mode == "levels":
            split = [self.split_channels(n, tensors, r) for n, r in zip(self.outputs, rows["all"], strict=True)]
            for name, part in zip(self.outputs, split, strict=True):
                if part["score"].shape[1] != split[0]["score"].shape[1]:
                    expected = f"{split[0]['score'].shape[1]} classes, as {self.outputs[0]!r} (level 0)"
                    raise self.bad_shape(name, np.shape(tensors[name]), expected)
            return {role: np.concatenate([part[role] for part in split]) for role in self.roles}
        for role in self.roles:
            for name, values in zip(plan[role], rows[role], strict=True):
                if not self.fits(role, values.shape[1]):
                    expected = f"{role} values with {self.describe(role)} channels: {LAYOUTS}"
                    raise self.bad_shape(name, np.shape(tensors[name]), expected)
                if values.shape[1] != rows[role][0].shape[1]:
                    expected = f"{role} values with {rows[role][0].shape[1]} channels, as {plan[role][0]!r} (level 0)"
                    raise self.bad_shape(name, np.shape(tensors[name]), expected)
        return {role: np.concatenate(rows[role]).astype(np.float32, copy=False) for role in self.roles}

    def split_channels(self, name: str, tensors: Mapping[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
        """The roles of one tensor's rows, channels box, [objectness], classes, [keypoints]."""
        channels = rows.shape[1]
        objectness = int(self.objectness)
        points = self.keypoint_count * self.keypoint_dims
        if self.box == "center_exp" or self.bins:
            box = 4 * (self.bins or 1)
        else:  # labels are known (checked in configure)
            box = channels - objectness - points - len(self.labels or ())
        classes = channels - box - objectness - points
        if classes < 1 or box < 4 or box % 4 or (self.labels and classes != len(self.labels)):
            sizes = " + ".join(f"{role} {self.describe(role)}" for role in self.roles)
            raise self.bad_shape(name, np.shape(tensors[name]), f"{LAYOUTS} with ch = {sizes}")
        rows = rows.astype(np.float32, copy=False)
        first = box + objectness
        parts = (rows[:, :box], rows[:, box:first], rows[:, first : first + classes], rows[:, first + classes :])
        return dict(zip(ROLES, parts, strict=True))

    def __call__(self, tensors: Mapping[str, np.ndarray], geometry: FrameGeometry) -> Detections:
        grid = self.grid(geometry.input_width, geometry.input_height)
        parts = self.parts(tensors, grid)
        scores = sigmoid(parts["score"]) if self.sigmoid else parts["score"]
        if self.objectness:
            objectness = sigmoid(parts["objectness"]) if self.sigmoid else parts["objectness"]
            scores = scores * objectness
            if self.score == "sqrt":
                scores = np.sqrt(np.clip(scores, 0.0, None))
        # Decode only the cells that can pass the score threshold (finish_detections applies it again).
        keep = np.flatnonzero(scores.max(axis=1) >= self.settings.score_threshold)
        points, strides = grid.points[keep], grid.strides[keep]
        values = parts["box"][keep]
        if values.shape[1] > 4:  # distributions over bins: expectation of the softmax
            bins = values.shape[1] // 4
            values = softmax(values.reshape(len(keep), 4, bins)) @ np.arange(bins, dtype=np.float32)
        with np.errstate(over="ignore"):
            if self.box == "distance":
                distances = values * strides
                boxes = np.concatenate([points - distances[:, :2], points + distances[:, 2:]], axis=1)
            else:
                centers = points + values[:, :2] * strides
                half = np.exp(values[:, 2:4]) * strides / 2
                boxes = np.concatenate([centers - half, centers + half], axis=1)
        keypoints = keypoint_scores = None
        if self.keypoint_count:
            raw = parts["keypoint"][keep].reshape(len(keep), self.keypoint_count, self.keypoint_dims)
            keypoints = points[:, None, :] + raw[:, :, :2] * strides[:, :, None]
            if self.keypoint_dims == 3:
                keypoint_scores = sigmoid(raw[:, :, 2]) if self.sigmoid else raw[:, :, 2]
        return finish_detections(
            boxes, scores[keep], geometry, self.settings, keypoints=keypoints,
            keypoint_scores=keypoint_scores, keypoint_names=self.keypoint_names,
        )  # fmt: skip
