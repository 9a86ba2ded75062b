"""Small multi-output ONNX models built with ``onnx.helper``, one builder per graph shape
the exporter has to cut.

Every builder returns a checked ``onnx.ModelProto`` (float32, seeded random weights) that
onnxruntime runs. The tests hold the expected boundary and heads next to each builder::

    model = hard_sharing()
    plan = plan_split(model)        # boundary ("feat",), heads cls <- feat, seg <- feat
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

IMAGE = "image"
IMAGE_SHAPE = (1, 3, 16, 16)


def run_onnx(model: onnx.ModelProto | Path, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every output of ``model`` (a proto or an .onnx file) on ``feed``, by name, in a real CPU session."""
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feed)), strict=True))


def random_image(shape: Sequence[int] = IMAGE_SHAPE, seed: int = 0) -> np.ndarray:
    """A float32 normal-random input of ``shape``."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


class _Graph:
    """Accumulates nodes and seeded float32 initializers; ``model()`` checks the result."""

    def __init__(self, seed: int = 0, *, name_nodes: bool = True) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.name_nodes = name_nodes

    def weight(self, name: str, shape: Sequence[int]) -> str:
        value = (self.rng.standard_normal(shape) * 0.3).astype(np.float32)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def ints(self, name: str, values: Sequence[int]) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
        return name

    def node(self, op: str, inputs: Sequence[str], outputs: Sequence[str], **attrs: object) -> str:
        name = f"{op}_{len(self.nodes)}" if self.name_nodes else ""
        self.nodes.append(helper.make_node(op, list(inputs), list(outputs), name=name, **attrs))
        return outputs[0]

    def conv(self, x: str, out: str, c_in: int, c_out: int, k: int = 3, stride: int = 1) -> str:
        w = self.weight(f"{out}.w", (c_out, c_in, k, k))
        b = self.weight(f"{out}.b", (c_out,))
        pad = k // 2
        return self.node("Conv", [x, w, b], [out], pads=[pad] * 4, strides=[stride, stride])

    def conv_relu(self, x: str, out: str, c_in: int, c_out: int, stride: int = 1) -> str:
        pre = self.conv(x, f"{out}_pre", c_in, c_out, stride=stride)
        return self.node("Relu", [pre], [out])

    def classifier(self, x: str, out: str, channels: int, classes: int) -> str:
        """GlobalAveragePool → Flatten → Gemm."""
        pooled = self.node("GlobalAveragePool", [x], [f"{out}_gap"])
        flat = self.node("Flatten", [pooled], [f"{out}_flat"], axis=1)
        w = self.weight(f"{out}.w", (classes, channels))
        b = self.weight(f"{out}.b", (classes,))
        return self.node("Gemm", [flat, w, b], [out], transB=1)

    def model(
        self,
        inputs: Sequence[onnx.ValueInfoProto],
        outputs: Sequence[str],
        *,
        opset: int = 13,
        ir_version: int = 7,
        initializers_as_inputs: bool = False,
    ) -> onnx.ModelProto:
        graph_inputs = list(inputs)
        if initializers_as_inputs:
            graph_inputs += [
                helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in self.initializers
            ]
        graph = helper.make_graph(
            self.nodes,
            "test_model",
            graph_inputs,
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
            initializer=self.initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)
        model = onnx.shape_inference.infer_shapes(model)
        # Output types as the file would declare them (shape inference filled value_info).
        inferred = {v.name: v for v in [*model.graph.value_info, *model.graph.output]}
        for out in model.graph.output:
            if out.name in inferred and inferred[out.name].type.tensor_type.HasField("shape"):
                out.CopyFrom(inferred[out.name])
        del model.graph.value_info[:]
        onnx.checker.check_model(model, full_check=True)
        return model


def _image(shape: Sequence[int | str] = IMAGE_SHAPE, name: str = IMAGE) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def hard_sharing(
    cls_name: str = "cls",
    seg_name: str = "seg",
    *,
    feat: str = "feat",
    seed: int = 0,
    opset: int = 13,
    ir_version: int = 7,
) -> onnx.ModelProto:
    """Hard parameter sharing: ``image`` (1,3,16,16) → Conv/Relu → ``feat``; head A
    GlobalAveragePool/Flatten/Gemm → ``cls`` (1,5); head B Conv 1x1 → ``seg`` (1,2,16,16).

    Boundary ``("feat",)``; both heads read only ``feat``. The output names are
    parameters so that tests can check how head and bundle names are derived from them, and
    so are the opset and IR version.
    """
    g = _Graph(seed)
    feat = g.conv_relu(IMAGE, feat, 3, 8)
    g.classifier(feat, cls_name, 8, 5)
    g.conv(feat, seg_name, 8, 2, k=1)
    return g.model([_image()], [cls_name, seg_name], opset=opset, ir_version=ir_version)


def pyramid_both(p3_name: str = "p3", p4_name: str = "p4") -> onnx.ModelProto:
    """Two-level feature pyramid read by both heads: Conv/Relu → ``p3`` (8x16x16),
    Conv stride 2 → ``p4`` (8x8x8). Head ``cls``: Concat(GAP(p3), GAP(p4)) → Flatten → Gemm;
    head ``reg``: Conv 1x1 on each level, GAP each, Add, Flatten.

    Boundary ``("p3", "p4")`` in graph order; both heads read both levels. The level names
    are parameters (exporters generate names like ``/backbone/Relu_output_0``).
    """
    g = _Graph(1)
    p3 = g.conv_relu(IMAGE, p3_name, 3, 8)
    p4 = g.conv_relu(p3, p4_name, 8, 8, stride=2)
    a = g.node("GlobalAveragePool", [p3], ["cls_gap3"])
    b = g.node("GlobalAveragePool", [p4], ["cls_gap4"])
    cat = g.node("Concat", [a, b], ["cls_cat"], axis=1)
    g.classifier(cat, "cls", 16, 4)
    r3 = g.node("GlobalAveragePool", [g.conv(p3, "reg_c3", 8, 4, k=1)], ["reg_gap3"])
    r4 = g.node("GlobalAveragePool", [g.conv(p4, "reg_c4", 8, 4, k=1)], ["reg_gap4"])
    added = g.node("Add", [r3, r4], ["reg_sum"])
    g.node("Flatten", [added], ["reg"], axis=1)
    return g.model([_image()], ["cls", "reg"])


def pyramid_split_levels() -> onnx.ModelProto:
    """Pyramid where head ``cls`` reads only ``p3`` and head ``det`` computes ``p4`` from
    ``p3`` (Conv stride 2) and reads only that.

    The trunk is what every task depends on, so the boundary is ``("p3",)`` and the ``p4``
    convolution belongs to head ``det``.
    """
    g = _Graph(2)
    p3 = g.conv_relu(IMAGE, "p3", 3, 8)
    g.classifier(p3, "cls", 8, 3)
    p4 = g.conv_relu(p3, "p4", 8, 8, stride=2)
    g.conv(p4, "det", 8, 6, k=1)
    return g.model([_image()], ["cls", "det"])


def _resize_to_input(g: _Graph, x: str, out: str) -> str:
    """Resize ``x`` to the model input's H,W: Shape(image) → Slice → Concat with Shape(x)[:2]."""
    shape_in = g.node("Shape", [IMAGE], [f"{out}_in_shape"])
    hw = g.node("Slice", [shape_in, g.ints(f"{out}_s2", [2]), g.ints(f"{out}_e4", [4])], [f"{out}_hw"])
    shape_x = g.node("Shape", [x], [f"{out}_x_shape"])
    nc = g.node("Slice", [shape_x, g.ints(f"{out}_s0", [0]), g.ints(f"{out}_e2", [2])], [f"{out}_nc"])
    sizes = g.node("Concat", [nc, hw], [f"{out}_sizes"], axis=0)
    return g.node("Resize", [x, "", "", sizes], [out], mode="nearest")


def shape_side_chain() -> onnx.ModelProto:
    """Segmentation head that reads the model input: Conv/Relu stride 2 → ``feat`` (8x8x8);
    head ``cls`` GAP/Flatten/Gemm; head ``seg`` Conv 1x1 on ``feat`` then Resize to the
    input's H,W, computed by Shape(image) → Slice → Concat.

    Boundary ``("feat",)`` only (no int64 shape tensor); ``seg`` reads ``("image", "feat")``.
    """
    g = _Graph(3)
    feat = g.conv_relu(IMAGE, "feat", 3, 8, stride=2)
    g.classifier(feat, "cls", 8, 4)
    _resize_to_input(g, g.conv(feat, "seg_lowres", 8, 2, k=1), "seg")
    return g.model([_image()], ["cls", "seg"])


def shared_shape_chain() -> onnx.ModelProto:
    """Two segmentation heads (``seg``, ``edge``) both resized to the input's H,W through
    ONE shared Shape(image) → Slice chain: the chain is needed by every task, so it lies in
    the trunk, and its int64 output would cross the boundary.

    The exporter recomputes such shape side-chains in the heads: boundary ``("feat",)``,
    both heads read ``("image", "feat")``.
    """
    g = _Graph(4)
    feat = g.conv_relu(IMAGE, "feat", 3, 8, stride=2)
    shape_in = g.node("Shape", [IMAGE], ["in_shape"])
    hw = g.node("Slice", [shape_in, g.ints("s2", [2]), g.ints("e4", [4])], ["in_hw"])
    for out in ("seg", "edge"):
        low = g.conv(feat, f"{out}_lowres", 8, 2, k=1)
        nc = g.node("Slice", [g.node("Shape", [low], [f"{out}_shape"]), "s0", "e2"], [f"{out}_nc"])
        sizes = g.node("Concat", [nc, hw], [f"{out}_sizes"], axis=0)
        g.node("Resize", [low, "", "", sizes], [out], mode="nearest")
    g.ints("s0", [0])
    g.ints("e2", [2])
    return g.model([_image()], ["seg", "edge"])


def dynamic_batch(height: int | str = 16, width: int | str = 16) -> onnx.ModelProto:
    """:func:`hard_sharing` with a symbolic batch: input ``image`` ``["batch", 3, 16, 16]``
    (height and width may be symbolic too).

    Boundary ``("feat",)``; the manifest input has ``dynamic_batch`` true.
    """
    g = _Graph(5)
    feat = g.conv_relu(IMAGE, "feat", 3, 8)
    g.classifier(feat, "cls", 8, 5)
    g.conv(feat, "seg", 8, 2, k=1)
    return g.model([_image(["batch", 3, height, width])], ["cls", "seg"])


def messy_old_style(opset: int = 9, ir_version: int = 3) -> onnx.ModelProto:
    """An old exporter's graph: unnamed nodes (``name=""``), every initializer also listed
    as a graph input, IR version 3 and opset 9 (by default).

    Same structure as :func:`hard_sharing`: boundary ``("feat",)``, the only model input
    is ``image`` (initializers are not inputs).
    """
    g = _Graph(6, name_nodes=False)
    feat = g.conv_relu(IMAGE, "feat", 3, 8)
    g.classifier(feat, "cls", 8, 5)
    g.conv(feat, "seg", 8, 2, k=1)
    return g.model([_image()], ["cls", "seg"], opset=opset, ir_version=ir_version, initializers_as_inputs=True)


def opset11() -> onnx.ModelProto:
    """Opset 11 / IR 6 model using ops whose signature changed at opset 13: ``cls`` is
    GAP → Squeeze(axes attribute) → Gemm, ``sal`` is ReduceSum(axes attribute) over channels.

    Boundary ``("feat",)``; the exporter converts it to opset 13.
    """
    g = _Graph(7)
    feat = g.conv_relu(IMAGE, "feat", 3, 8)
    pooled = g.node("GlobalAveragePool", [feat], ["cls_gap"])
    squeezed = g.node("Squeeze", [pooled], ["cls_sq"], axes=[2, 3])
    g.node("Gemm", [squeezed, g.weight("cls.w", (4, 8)), g.weight("cls.b", (4,))], ["cls"], transB=1)
    g.node("ReduceSum", [g.conv(feat, "sal_c", 8, 4, k=1)], ["sal"], axes=[1], keepdims=1)
    return g.model([_image()], ["cls", "sal"], opset=11, ir_version=6)


def shared_neck() -> onnx.ModelProto:
    """Detection outputs behind a shared neck: Conv/Relu → ``feat``; neck Conv/Relu on feat
    → ``n``; ``boxes`` (Conv 1x1 on n), ``scores`` (Conv 1x1 on n → Sigmoid); ``mask``
    (Conv 1x1 on feat).

    Automatic grouping: boxes+scores share the neck, so they form ONE head, named ``head``
    (their names share no prefix); ``mask`` is another head. Boundary ``("feat",)``.
    """
    g = _Graph(8)
    feat = g.conv_relu(IMAGE, "feat", 3, 8)
    n = g.conv_relu(feat, "n", 8, 8)
    g.conv(n, "boxes", 8, 4, k=1)
    g.node("Sigmoid", [g.conv(n, "scores_logits", 8, 3, k=1)], ["scores"])
    g.conv(feat, "mask", 8, 2, k=1)
    return g.model([_image()], ["boxes", "scores", "mask"])


def single_output() -> onnx.ModelProto:
    """One task: Conv/Relu → ``feat`` → GAP/Flatten/Gemm → ``cls``. Nothing branches: the
    trunk is the identity on ``image`` and the one head is the whole model."""
    g = _Graph(9)
    feat = g.conv_relu(IMAGE, "feat", 3, 8)
    g.classifier(feat, "cls", 8, 5)
    return g.model([_image()], ["cls"])


def independent_outputs() -> onnx.ModelProto:
    """Two outputs that share nothing after the input: ``a`` and ``b`` are separate Convs
    on ``image``. No shared trunk: these are two models."""
    g = _Graph(10)
    g.conv(IMAGE, "a", 3, 4)
    g.conv(IMAGE, "b", 3, 4)
    return g.model([_image()], ["a", "b"])


def two_inputs() -> onnx.ModelProto:
    """Two model inputs (``image`` and ``aux``, same shape) added, then hard sharing:
    ``feat`` → ``cls`` and ``seg``. edge-runtime feeds one image, so it cannot be split."""
    g = _Graph(11)
    both = g.node("Add", [IMAGE, "aux"], ["both"])
    feat = g.conv_relu(both, "feat", 3, 8)
    g.classifier(feat, "cls", 8, 5)
    g.conv(feat, "seg", 8, 2, k=1)
    return g.model([_image(), _image(name="aux")], ["cls", "seg"])


def features_taken() -> onnx.ModelProto:
    """:func:`hard_sharing` whose trunk tensor has an exporter-generated name
    (``/backbone/act/Relu_output_0``) while a head already has a tensor named ``features``
    (the Flatten output of ``cls``): the bundle name of the boundary must not clash with it."""
    g = _Graph(13)
    feat = g.conv_relu(IMAGE, "/backbone/act/Relu_output_0", 3, 8)
    pooled = g.node("GlobalAveragePool", [feat], ["pooled"])
    flat = g.node("Flatten", [pooled], ["features"], axis=1)
    g.node("Gemm", [flat, g.weight("cls.w", (5, 8)), g.weight("cls.b", (5,))], ["cls"], transB=1)
    g.conv(feat, "seg", 8, 2, k=1)
    return g.model([_image()], ["cls", "seg"])


def trunk_as_output() -> onnx.ModelProto:
    """:func:`hard_sharing` that also outputs the trunk tensor ``feat`` itself: that task's
    head would be empty."""
    g = _Graph(12)
    feat = g.conv_relu(IMAGE, "feat", 3, 8)
    g.classifier(feat, "cls", 8, 5)
    g.conv(feat, "seg", 8, 2, k=1)
    return g.model([_image()], ["feat", "cls", "seg"])


def two_branch_detector(boxes: str = "boxes", scores: str = "scores") -> onnx.ModelProto:
    """One detection task from two branches of one backbone: Conv/Relu → ``c1``, Conv/Relu
    stride 2 → ``feat`` (1,8,8,8); branch ``boxes``: Conv/Relu → Conv 1x1 (4 channels);
    branch ``scores``: Conv/Relu → Conv 1x1 → Sigmoid (3 channels).

    Grouped as one task (``--task det=boxes,scores``), the trunk is the backbone and the
    boundary ``("feat",)``, where the branches start; one head holds both outputs.
    """
    g = _Graph(14)
    c1 = g.conv_relu(IMAGE, "c1", 3, 8)
    feat = g.conv_relu(c1, "feat", 8, 8, stride=2)
    g.conv(g.conv_relu(feat, "box_branch", 8, 8), boxes, 8, 4, k=1)
    g.node("Sigmoid", [g.conv(g.conv_relu(feat, "score_branch", 8, 8), "score_logits", 8, 3, k=1)], [scores])
    return g.model([_image()], [boxes, scores])


def overlapping_branches(names: Sequence[str] = ("det_boxes", "det_scores", "det_classes")) -> onnx.ModelProto:
    """Three outputs whose branches overlap pairwise but not all together: Conv/Relu →
    ``feat``; ``x`` = Conv 1x1 on feat, ``y`` = Conv 1x1 on feat; outputs Relu(x),
    Add(x, y), Relu(y) (named ``names``).

    Automatic grouping merges all three into ONE head (named after their common prefix,
    ``det`` by default); the trunk ends where the branches start: boundary ``("feat",)``.
    """
    g = _Graph(15)
    feat = g.conv_relu(IMAGE, "feat", 3, 8)
    x = g.conv(feat, "x", 8, 4, k=1)
    y = g.conv(feat, "y", 8, 4, k=1)
    g.node("Relu", [x], [names[0]])
    g.node("Add", [x, y], [names[1]])
    g.node("Relu", [y], [names[2]])
    return g.model([_image()], list(names))


def split_neck_heads(batch: int | str = 1, height: int | str = 16) -> onnx.ModelProto:
    """A neck that heads ``a`` and ``b`` both need but head ``mask`` does not, so it lies
    after the boundary ``("feat",)`` when ``a`` and ``b`` are separate tasks.

    ``image`` (batch,3,height,16) → Conv/Relu → ``feat`` (8 channels). Neck, known cost at
    batch 1 and height 16 (6 nodes, 371 float32 weights = 1484 bytes, 81962 MACs):
    Conv 3x3 8→4 → ``neck_c`` (1,4,16,16; 1024·72 = 73728 MACs), ConvTranspose 4→2 k2 s2 →
    ``neck_t`` (1,2,32,32; 1024·8 = 8192), GlobalAveragePool, Flatten → (1,2), MatMul
    (2,6) → ``neck_mm`` (12), Gemm (5,6)ᵀ+bias → ``neck`` (1,5; 30). ``a`` = Relu(neck),
    ``b`` = Sigmoid(neck); ``mask`` = Conv 1x1 on feat.
    """
    g = _Graph(16)
    feat = g.conv_relu(IMAGE, "feat", 3, 8)
    c = g.conv(feat, "neck_c", 8, 4)
    t = g.node("ConvTranspose", [c, g.weight("neck_t.w", (4, 2, 2, 2))], ["neck_t"], strides=[2, 2])
    flat = g.node("Flatten", [g.node("GlobalAveragePool", [t], ["neck_gap"])], ["neck_flat"], axis=1)
    mm = g.node("MatMul", [flat, g.weight("neck_mm.w", (2, 6))], ["neck_mm"])
    neck = g.node("Gemm", [mm, g.weight("neck.w", (5, 6)), g.weight("neck.b", (5,))], ["neck"], transB=1)
    g.node("Relu", [neck], ["a"])
    g.node("Sigmoid", [neck], ["b"])
    g.conv(feat, "mask", 8, 2, k=1)
    return g.model([_image([batch, 3, height, 16])], ["a", "b", "mask"])
