"""A tiny grid detector whose float model finds something only on bright objects, and frames
with and without them: what the gate and self-test tests need to see a detector that finds nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

#: The head spec of :func:`faint_objectness_detector` (one grid head ``det``, classes ``a``, ``b``).
HEADS_TOML = (
    '[heads.det]\noutputs = ["scores", "boxes", "objectness"]\n'
    '[heads.det.decoder]\ntype = "grid"\nstrides = [8]\nobjectness = true\nbins = 1\nlabels = ["a", "b"]\n'
    'score_outputs = ["scores"]\nbox_outputs = ["boxes"]\nobjectness_outputs = ["objectness"]\n'
)


def faint_objectness_detector(path: Path) -> None:
    """A one-level grid detector (stride 8 on 64x64: 64 cells) whose objectness is
    sigmoid(14 * brightness - 7): about 1e-3 on a dark cell, which INT8 (calibrated on frames
    with bright objects: a 0..1 range) rounds to exactly 0. Outputs: scores (1, 64, 2), boxes
    (1, 64, 4) of at least 2 strides a side, objectness (1, 64, 1)."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(5)
    inits = []
    nodes = []

    def const(name: str, value: object) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, inputs: list[str], out: str, **attrs: object) -> str:
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv(x: str, out: str, c_in: int, c_out: int, stride: int) -> str:
        w = const(f"{out}.w", (rng.standard_normal((c_out, c_in, 3, 3)) * 0.2).astype(np.float32))
        return node("Conv", [x, w], out, pads=[1, 1, 1, 1], strides=[stride, stride])

    def rows(x: str, out: str, channels: int) -> str:
        flat = node("Reshape", [x, const(f"{out}.shape", np.array([1, channels, -1], np.int64))], f"{out}.flat")
        return node("Transpose", [flat], out, perm=[0, 2, 1])

    x = node("Relu", [conv("image", "c1", 3, 8, 2)], "r1")
    x = node("Relu", [conv(x, "c2", 8, 8, 2)], "r2")
    x = conv(x, "c3", 8, 8, 2)
    bright = node("AveragePool", ["image"], "bright", kernel_shape=[8, 8], strides=[8, 8])
    feat = node("Concat", [x, bright], "feat", axis=1)  # the trunk's output: (1, 11, 8, 8)
    node("Sigmoid", [rows(conv(feat, "cls", 11, 2, 1), "cls_rows", 2)], "scores")
    reg = node("Add", [node("Relu", [conv(feat, "reg", 11, 4, 1)], "reg_relu"), const("two", np.float32(2))], "reg2")
    rows(reg, "boxes", 4)
    starts, ends, axes = (const(n, np.array(v, np.int64)) for n, v in (("s", [8]), ("e", [11]), ("a", [1])))
    level = node("ReduceMean", [node("Slice", [feat, starts, ends, axes], "rgb")], "level", axes=[1], keepdims=1)
    logit = node("Sub", [node("Mul", [level, const("k", np.float32(14))], "scaled"), const("c", np.float32(7))], "lg")
    node("Sigmoid", [rows(logit, "obj_rows", 1)], "objectness")
    graph = helper.make_graph(
        nodes,
        "faint",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in ("scores", "boxes", "objectness")],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7)
    model = onnx.shape_inference.infer_shapes(model)
    inferred = {v.name: v for v in [*model.graph.value_info, *model.graph.output]}
    for out in model.graph.output:
        out.CopyFrom(inferred[out.name])
    del model.graph.value_info[:]
    onnx.save(model, path)


def frames_with_bright_objects(count: int, seed: int) -> np.ndarray:
    """Dark frames (0..20) with one bright square (a cell-aligned 16x16 block) each, 64x64."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 20, (count, 64, 64, 3), dtype=np.uint8)
    for frame in frames:
        y, x = (int(v) * 8 for v in rng.integers(0, 6, 2))
        frame[y : y + 16, x : x + 16] = rng.integers(230, 255, 3, dtype=np.uint8)
    return frames


def dark_frames(count: int, seed: int) -> np.ndarray:
    """Dark 64x64 frames (0..20): the detector finds nothing on them."""
    return np.random.default_rng(seed).integers(0, 20, (count, 64, 64, 3), dtype=np.uint8)
