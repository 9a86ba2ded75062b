"""A head spec to start from: recognise the output layouts of published models from their shapes.

``edge-export inspect MODEL --suggest-head-spec`` runs the model once on a blank input (the
input spec's size, else the model's, else its metadata's ``imgsz``), reads its outputs' shapes,
its metadata and the last operators before each output, and prints a head spec (TOML):

- per-stride grids: per level a class-score tensor ``(1, N_l, C)`` and a box tensor with 4 or
  4 x B channels (PP-PicoDet, NanoDet, GFL: ``grid`` with ``box = "distance"`` and ``bins``);
  one ``(1, N, 5+C)`` output over 1-anchor levels without box decoding in the graph (YOLOX:
  ``grid`` with ``box = "center_exp"``);
- YOLO rows already decoded: ``(1, 4+C, N)`` (YOLOv8/v11, keypoints from ``kpt_shape``) and
  ``(1, 3N, 5+C)`` (YOLOv5, objectness) → ``detection``;
- prior boxes: boxes ``(1, P, 4[+2K])`` + scores ``(1, P, C)`` (+ landmarks ``(1, P, 2K)``) with
  P = the RetinaFace priors at the input size, or BlazeFace's 896 anchors → ``ssd``; other
  boxes + scores pairs → ``detection`` (comment: use ``ssd`` if they are offsets from priors);
- ``(1, C)`` → ``classification``; ``(1, C, h, w)`` at a fraction of the input → ``segmentation``;
  anything else ``raw``, with a comment.

Activations are read from the graph: a score output computed by a Sigmoid/Softmax is taken as
probabilities (``activation = "none"``), else ``"sigmoid"`` is proposed. Class labels come from
the metadata. Read the proposal before using it: it is a start, checked by ``split``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from exporter.metadata import ModelMetadata
from exporter.split_groups import safe_head_name

#: Stride sets tried for per-stride layouts, most levels first.
STRIDE_SETS = ((8, 16, 32, 64), (8, 16, 32), (8, 16, 32, 64, 128))
#: Operators that only move or reshape values: looked through when finding an output's activation.
_PASS_THROUGH = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Concat", "Slice", "Split"}


@dataclass
class Suggestion:
    """One proposed head: its outputs, decoder parameters and comments for the user."""

    name: str
    outputs: list[str]
    decoder: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def level_sizes(strides: Sequence[int], height: int, width: int) -> list[int]:
    """Grid cells per level: ceil(H/s) x ceil(W/s)."""
    return [math.ceil(height / s) * math.ceil(width / s) for s in strides]


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output}


def activated(model: onnx.ModelProto, output: str, ops: tuple[str, ...] = ("Sigmoid", "Softmax")) -> bool:
    """Whether ``output`` is computed by one of ``ops`` (looking through reshapes/concats)."""
    producers = _producers(model)
    seen: set[str] = set()
    todo = [output]
    while todo:
        name = todo.pop()
        node = producers.get(name)
        if node is None or name in seen:
            continue
        seen.add(name)
        if node.op_type in ops:
            return True
        if node.op_type in ("Mul", "Div") and len(node.input) == 2:  # sqrt(cls * obj) style products
            todo.extend(node.input)
        elif node.op_type in _PASS_THROUGH:
            todo.extend(node.input[:1] if node.op_type != "Concat" else node.input)
        elif node.op_type == "Sqrt":
            todo.extend(node.input)
    return False


def _uses_exp(model: onnx.ModelProto, output: str, depth: int = 30) -> bool:
    """Whether an Exp is among the last ``depth`` operators before ``output`` (boxes decoded)."""
    producers = _producers(model)
    frontier, seen = [output], set()
    for _ in range(depth):
        nxt = []
        for name in frontier:
            node = producers.get(name)
            if node is None or name in seen:
                continue
            seen.add(name)
            if node.op_type == "Exp":
                return True
            nxt.extend(node.input)
        frontier = nxt
    return False


def _rows(shape: Sequence[int], n: int) -> int | None:
    """The channel count of a ``(1, n, ch)``, ``(1, ch, n)`` or ``(1, ch, h, w)`` tensor with n cells."""
    dims = list(shape[1:])
    if len(dims) == 2 and n in dims:
        return dims[1] if dims[0] == n else dims[0]
    if len(dims) == 3 and dims[1] * dims[2] == n:
        return dims[0]
    return None


def _grid_levels(
    shapes: Mapping[str, tuple[int, ...]], height: int, width: int, classes: int | None
) -> Suggestion | None:
    """Per-level score + box tensors (PicoDet/NanoDet/GFL)."""
    for strides in STRIDE_SETS:
        sizes = level_sizes(strides, height, width)
        scores, boxes = [], []
        for n in sizes:
            at_level = [(name, _rows(shape, n)) for name, shape in shapes.items() if _rows(shape, n)]
            box = [name for name, ch in at_level if ch is not None and ch % 4 == 0 and ch != classes]
            score = [name for name, ch in at_level if name not in box[:1]]
            if len(at_level) != 2 or not box or len(score) != 1:
                break
            boxes.append(box[0])
            scores.append(score[0])
        else:
            channels = _rows(shapes[boxes[0]], sizes[0]) or 4
            decoder: dict[str, Any] = {"type": "grid", "strides": list(strides), "box": "distance", "grid_offset": 0.5}
            if channels > 4:
                decoder["bins"] = channels // 4
            decoder.update({"score_outputs": scores, "box_outputs": boxes})
            return Suggestion("detections", [o for pair in zip(scores, boxes, strict=True) for o in pair], decoder)
    return None


def suggest_heads(
    model: onnx.ModelProto,
    shapes: Mapping[str, tuple[int, ...]],
    input_hw: tuple[int, int],
    meta: ModelMetadata,
) -> list[Suggestion]:
    """Proposed heads for outputs of ``shapes`` (name -> shape with batch) at input ``(H, W)``."""
    height, width = input_hw
    labels = list(meta.labels) if meta.labels else None
    classes = len(labels) if labels else None
    left = dict(shapes)
    found: list[Suggestion] = []

    grid = _grid_levels(left, height, width, classes)
    if grid is not None:
        grid.decoder["activation"] = "none" if activated(model, grid.decoder["score_outputs"][0]) else "sigmoid"
        found.append(grid)
        for name in grid.outputs:
            left.pop(name)

    one_anchor = {sum(level_sizes(s, height, width)): s for s in STRIDE_SETS}
    for name, shape in list(left.items()):
        if len(shape) != 3:
            continue
        a, b = shape[1], shape[2]
        if a in one_anchor and b < a and b > 5 and not _uses_exp(model, name):  # YOLOX, boxes not decoded
            decoder = {"type": "grid", "strides": list(one_anchor[a]), "box": "center_exp", "objectness": True}
            decoder["activation"] = "none" if activated(model, name) else "sigmoid"
            found.append(Suggestion("detections", [name], decoder))
        elif b in one_anchor and a < b and a > 4:  # YOLOv8/v11: (1, 4+C[+K*D], N)
            decoder = {"type": "detection", "box_format": "cxcywh"}
            if meta.keypoint_shape and len(meta.keypoint_shape) == 2:
                decoder["keypoints"], decoder["keypoint_dims"] = meta.keypoint_shape
            found.append(Suggestion("detections", [name], decoder))
        elif a % 3 == 0 and a // 3 in one_anchor and b > 5:  # YOLOv5: (1, 3N, 5+C)
            found.append(
                Suggestion("detections", [name], {"type": "detection", "box_format": "cxcywh", "objectness": True})
            )
        else:
            continue
        left.pop(name)

    pairs = _prior_heads(left, height, width)
    for suggestion in pairs:
        found.append(suggestion)
        for name in suggestion.outputs:
            left.pop(name)

    for name, shape in left.items():
        if len(shape) == 2 and shape[1] == 4:
            decoder = {"type": "regression", "box_format": "xyxy", "normalized": activated(model, name, ("Sigmoid",))}
            found.append(
                Suggestion(safe_head_name(name), [name], decoder, ["4 values: taken as one box; check box_format"])
            )
        elif len(shape) == 2 and shape[1] > 1:
            decoder = {"type": "classification", "softmax": not activated(model, name)}
            found.append(Suggestion(safe_head_name(name), [name], decoder))
        elif len(shape) == 4 and shape[2] > 1 and height % shape[2] == 0 and width % shape[3] == 0:
            found.append(Suggestion(safe_head_name(name), [name], {"type": "segmentation"}))
        else:
            found.append(
                Suggestion(safe_head_name(name), [name], {"type": "raw"}, [f"no known layout for shape {list(shape)}"])
            )
    for suggestion in found:
        if labels and suggestion.decoder["type"] in ("detection", "grid", "classification"):
            suggestion.decoder["labels"] = labels
    return found


def _prior_heads(shapes: Mapping[str, tuple[int, ...]], height: int, width: int) -> list[Suggestion]:
    """Boxes + scores (+ landmarks) over P priors."""
    by_count: dict[int, list[str]] = {}
    for name, shape in shapes.items():
        if len(shape) == 3:
            by_count.setdefault(shape[1], []).append(name)
        elif len(shape) == 2 and shape[1] > 4:
            continue
    out: list[Suggestion] = []
    retina = sum(level_sizes((8, 16, 32), height, width)) * 2
    for count, names in by_count.items():
        boxes = [n for n in names if shapes[n][2] in (4, 16)]
        if not boxes or len(names) < 2:
            continue
        box = boxes[0]
        rest = sorted((n for n in names if n != box), key=lambda n: shapes[n][2])
        scores = rest[:1]
        marks = [n for n in rest[1:] if shapes[n][2] % 2 == 0]
        if not scores:
            continue
        decoder: dict[str, Any] = {"type": "detection"}
        notes: list[str] = []
        outputs = [box, scores[0]]
        if count == retina:
            decoder = {
                "type": "ssd",
                "priors": {"min_sizes": [[16, 32], [64, 128], [256, 512]], "strides": [8, 16, 32]},
                "variances": [0.1, 0.2],
                "score_activation": "none" if shapes[scores[0]][2] == 1 else "softmax",
                "background_class": 0,
                "box_output": box,
                "score_output": scores[0],
            }
            if marks:
                decoder.update({"keypoints": shapes[marks[0]][2] // 2, "keypoint_output": marks[0]})
                outputs.append(marks[0])
            notes.append("RetinaFace-style priors: check min_sizes and strides against the model's own config")
        elif count == 896 and (height, width) == (128, 128) and shapes[box][2] == 16:
            decoder = {
                "type": "ssd",
                "anchors": {
                    "num_layers": 4,
                    "strides": [8, 16, 16, 16],
                    "min_scale": 0.1484375,
                    "max_scale": 0.75,
                    "fixed_anchor_size": True,
                },
                "score_activation": "sigmoid",
                "keypoints": 6,
                "box_output": box,
                "score_output": scores[0],
            }
            notes.append("MediaPipe BlazeFace (short range) anchors")
        else:
            notes.append("if the boxes are offsets from prior boxes, use type = 'ssd' with the model's priors")
        out.append(Suggestion("detections" if not out else f"detections_{len(out) + 1}", outputs, decoder, notes))
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    items = [_toml_value(v) for v in value]
    text = "[" + ", ".join(items) + "]"
    if len(text) <= 100:
        return text
    return "[\n" + "".join(f"    {item},\n" for item in items) + "]"


def format_head_spec(suggestions: Sequence[Suggestion], source: str) -> str:
    """The suggestions as a head spec file (TOML) with comments."""
    lines = [
        f"# Head spec proposed for {source} from its output shapes and metadata.",
        "# Check it, then: edge-export split MODEL --head-spec THIS_FILE",
    ]
    for s in suggestions:
        lines.append("")
        lines.extend(f"# {note}" for note in s.notes)
        lines.append(f"[heads.{s.name}]")
        lines.append(f"outputs = {_toml_value(s.outputs)}")
        lines.append("")
        lines.append(f"[heads.{s.name}.decoder]")
        for key, value in s.decoder.items():
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def output_shapes(model: onnx.ModelProto, input_shape: Sequence[int], dtype: str) -> dict[str, tuple[int, ...]]:
    """Run ``model`` once on zeros of ``input_shape``; each output's shape."""
    from exporter.verify import make_session

    session = make_session(model, "the model")
    feed = {session.get_inputs()[0].name: np.zeros(tuple(input_shape), dtype=np.dtype(dtype))}
    names = [o.name for o in session.get_outputs()]
    return {
        name: tuple(int(d) for d in value.shape) for name, value in zip(names, session.run(names, feed), strict=True)
    }
