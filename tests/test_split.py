"""exporter.split: the boundary finder, head grouping and naming, graph extraction, and the
numerical check of every cut in real onnxruntime sessions (exporter.verify)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import numpy as np
import onnx
import onnx_models as m
import pytest

from edge_runtime.errors import ModelError
from exporter.split import extract_graphs, plan_split, safe_head_name
from exporter.verify import make_session, sample_inputs, verify_split

TOLERANCE = 1e-5

# builder, plan_split kwargs, boundary, {head: outputs}, {head: inputs}, automatic
SPLITS = [
    pytest.param(
        m.hard_sharing,
        {},
        ("feat",),
        {"cls": ("cls",), "seg": ("seg",)},
        {"cls": ("feat",), "seg": ("feat",)},
        True,
        id="hard-sharing",
    ),
    pytest.param(
        m.pyramid_both,
        {},
        ("p3", "p4"),
        {"cls": ("cls",), "reg": ("reg",)},
        {"cls": ("p3", "p4"), "reg": ("p3", "p4")},
        True,
        id="pyramid-both-levels",
    ),
    pytest.param(
        m.pyramid_split_levels,
        {},
        ("p3",),
        {"cls": ("cls",), "det": ("det",)},
        {"cls": ("p3",), "det": ("p3",)},
        True,
        id="pyramid-p4-in-head",
    ),
    pytest.param(
        m.shape_side_chain,
        {},
        ("feat",),
        {"cls": ("cls",), "seg": ("seg",)},
        {"cls": ("feat",), "seg": ("image", "feat")},
        True,
        id="shape-chain-from-input",
    ),
    pytest.param(
        m.shared_shape_chain,
        {},
        ("feat",),
        {"seg": ("seg",), "edge": ("edge",)},
        {"seg": ("image", "feat"), "edge": ("image", "feat")},
        True,
        id="shape-chain-in-trunk-recomputed",
    ),
    pytest.param(
        m.dynamic_batch,
        {},
        ("feat",),
        {"cls": ("cls",), "seg": ("seg",)},
        {"cls": ("feat",), "seg": ("feat",)},
        True,
        id="dynamic-batch",
    ),
    pytest.param(
        m.messy_old_style,
        {},
        ("feat",),
        {"cls": ("cls",), "seg": ("seg",)},
        {"cls": ("feat",), "seg": ("feat",)},
        True,
        id="messy-ir3-unnamed-initializer-inputs",
    ),
    pytest.param(
        m.opset11,
        {},
        ("feat",),
        {"cls": ("cls",), "sal": ("sal",)},
        {"cls": ("feat",), "sal": ("feat",)},
        True,
        id="opset11",
    ),
    pytest.param(
        m.shared_neck,
        {},
        ("feat",),
        {"boxes": ("boxes", "scores"), "mask": ("mask",)},
        {"boxes": ("feat",), "mask": ("feat",)},
        True,
        id="shared-neck-grouped",
    ),
    pytest.param(
        m.shared_neck,
        {"tasks": {"box": ["boxes"], "score": ["scores"]}},
        ("feat",),
        {"box": ("boxes",), "score": ("scores",), "mask": ("mask",)},
        {"box": ("feat",), "score": ("feat",), "mask": ("feat",)},
        True,
        id="shared-neck-explicit-tasks-stay-separate",
    ),
    pytest.param(
        m.shared_neck,
        {"tasks": {"det": ["scores", "boxes"]}},
        ("feat",),
        {"det": ("scores", "boxes"), "mask": ("mask",)},
        {"det": ("feat",), "mask": ("feat",)},
        True,
        id="shared-neck-explicit-group",
    ),
    pytest.param(
        m.hard_sharing,
        {"tasks": {"classes": ["cls"]}},
        ("feat",),
        {"classes": ("cls",), "seg": ("seg",)},
        {"classes": ("feat",), "seg": ("feat",)},
        True,
        id="task-renames-head",
    ),
    pytest.param(
        m.hard_sharing,
        {"tasks": {"cls": ["seg"]}},
        ("feat",),
        {"cls": ("seg",), "cls_2": ("cls",)},
        {"cls": ("feat",), "cls_2": ("feat",)},
        True,
        id="automatic-name-avoids-task-name",
    ),
    pytest.param(
        partial(m.hard_sharing, cls_name="logits/cls:0", seg_name="output.1"),
        {},
        ("feat",),
        {"logits_cls_0": ("logits/cls:0",), "output.1": ("output.1",)},
        {"logits_cls_0": ("feat",), "output.1": ("feat",)},
        True,
        id="file-safe-head-names",
    ),
    pytest.param(
        partial(m.hard_sharing, cls_name="a/b", seg_name="a:b"),
        {},
        ("feat",),
        {"a_b": ("a/b",), "a_b_2": ("a:b",)},
        {"a_b": ("feat",), "a_b_2": ("feat",)},
        True,
        id="file-safe-head-names-collide",
    ),
    pytest.param(
        m.hard_sharing,
        {"boundary": ["feat"]},
        ("feat",),
        {"cls": ("cls",), "seg": ("seg",)},
        {"cls": ("feat",), "seg": ("feat",)},
        False,
        id="boundary-given-same-as-automatic",
    ),
    pytest.param(
        m.hard_sharing,
        {"boundary": ["feat_pre"], "tasks": {"cls": ["cls"], "seg": ["seg"]}},
        ("feat_pre",),
        {"cls": ("cls",), "seg": ("seg",)},
        {"cls": ("feat_pre",), "seg": ("feat_pre",)},
        False,
        id="boundary-before-relu-with-tasks",
    ),
    pytest.param(
        m.pyramid_split_levels,
        {"boundary": ["p3", "p4"]},
        ("p3", "p4"),
        {"cls": ("cls",), "det": ("det",)},
        {"cls": ("p3",), "det": ("p4",)},
        False,
        id="boundary-given-pyramid",
    ),
    pytest.param(
        m.shared_neck,
        {"boundary": ["n", "feat"]},
        ("n", "feat"),
        {"boxes": ("boxes",), "scores": ("scores",), "mask": ("mask",)},
        {"boxes": ("n",), "scores": ("n",), "mask": ("feat",)},
        False,
        id="boundary-after-neck",
    ),
    pytest.param(
        m.shape_side_chain,
        {"boundary": ["feat"]},
        ("feat",),
        {"cls": ("cls",), "seg": ("seg",)},
        {"cls": ("feat",), "seg": ("image", "feat")},
        False,
        id="boundary-given-shape-chain",
    ),
]


@pytest.mark.parametrize(("build", "kwargs", "boundary", "outputs", "inputs", "automatic"), SPLITS)
def test_split_finds_boundary_and_reproduces_model(
    build: Callable[[], onnx.ModelProto],
    kwargs: Mapping[str, Any],
    boundary: tuple[str, ...],
    outputs: dict[str, tuple[str, ...]],
    inputs: dict[str, tuple[str, ...]],
    automatic: bool,
) -> None:
    model = build()
    plan = plan_split(model, **kwargs)

    assert plan.model_inputs == ("image",)
    assert plan.boundary == boundary
    assert {h.name: h.outputs for h in plan.heads} == outputs
    assert {h.name: h.inputs for h in plan.heads} == inputs
    assert plan.automatic is automatic
    assert sorted(o for h in plan.heads for o in h.outputs) == sorted(o.name for o in model.graph.output)

    graphs = extract_graphs(model, plan)
    assert set(graphs.heads) == set(outputs)
    trunk = make_session(graphs.trunk, "trunk")
    assert [i.name for i in trunk.get_inputs()] == ["image"]
    assert [o.name for o in trunk.get_outputs()] == list(boundary)
    for head in plan.heads:
        onnx.checker.check_model(graphs.heads[head.name])
        session = make_session(graphs.heads[head.name], head.name)
        assert [i.name for i in session.get_inputs()] == list(head.inputs)
        assert [o.name for o in session.get_outputs()] == list(head.outputs)
    onnx.checker.check_model(graphs.trunk)

    dynamic = not isinstance(tensor_dim(model.graph.input[0], 0), int)
    samples = sample_inputs(model, [1, 3, 16, 16], dynamic_batch=dynamic)
    assert [s["image"].shape[0] for s in samples] == ([1, 1, 1, 2] if dynamic else [1, 1, 1, 1])
    report = verify_split(model, graphs, plan, samples)
    assert report.samples == 4
    assert set(report.checks) == {o for outs in outputs.values() for o in outs}
    assert report.max_abs_error <= TOLERANCE
    assert report.failures(TOLERANCE) == []


def tensor_dim(info: onnx.ValueInfoProto, axis: int) -> int | str:
    dim = info.type.tensor_type.shape.dim[axis]
    return dim.dim_value if dim.HasField("dim_value") else dim.dim_param


@pytest.mark.parametrize(
    ("build", "boundary", "renamed"),
    [
        pytest.param(m.hard_sharing, ("feat",), {}, id="readable-kept"),
        pytest.param(
            partial(m.hard_sharing, feat="/backbone/Relu_output_0"),
            ("/backbone/Relu_output_0",),
            {"/backbone/Relu_output_0": "features"},
            id="torch-path-name",
        ),
        pytest.param(
            partial(m.hard_sharing, feat="onnx::Conv_12"),
            ("onnx::Conv_12",),
            {"onnx::Conv_12": "features"},
            id="onnx-ns",
        ),
        pytest.param(partial(m.hard_sharing, feat="123"), ("123",), {"123": "features"}, id="number"),
        pytest.param(
            partial(m.pyramid_both, "/b/p3/Relu_output_0", "onnx::Relu_9"),
            ("/b/p3/Relu_output_0", "onnx::Relu_9"),
            {"/b/p3/Relu_output_0": "features_0", "onnx::Relu_9": "features_1"},
            id="pyramid-both-opaque",
        ),
        pytest.param(
            partial(m.pyramid_both, "p3", "onnx::Relu_9"),
            ("p3", "onnx::Relu_9"),
            {"onnx::Relu_9": "features_1"},
            id="pyramid-one-opaque",
        ),
    ],
)
def test_generated_boundary_names_get_readable_bundle_names(
    build: Callable[[], onnx.ModelProto], boundary: tuple[str, ...], renamed: dict[str, str]
) -> None:
    model = build()
    plan = plan_split(model)
    assert plan.boundary == boundary

    graphs = extract_graphs(model, plan)

    assert graphs.renamed == renamed
    public = [graphs.public(b) for b in boundary]
    assert [o.name for o in make_session(graphs.trunk, "trunk").get_outputs()] == public
    for head in plan.heads:
        session = make_session(graphs.heads[head.name], head.name)
        assert [i.name for i in session.get_inputs()] == [graphs.public(i) for i in head.inputs]
    assert set(public) <= set(graphs.types)
    assert not set(renamed) & set(graphs.types)
    report = verify_split(model, graphs, plan, sample_inputs(model, [1, 3, 16, 16]))
    assert report.max_abs_error <= TOLERANCE


def test_bundle_name_of_the_boundary_avoids_existing_tensors() -> None:
    model = m.features_taken()
    plan = plan_split(model)

    graphs = extract_graphs(model, plan)

    public = graphs.public("/backbone/act/Relu_output_0")
    assert public.startswith("features_")
    assert public not in {"features", *(n for node in model.graph.node for n in node.output)}
    assert [o.name for o in graphs.trunk.graph.output] == [public]
    report = verify_split(model, graphs, plan, sample_inputs(model, [1, 3, 16, 16]))
    assert report.max_abs_error <= TOLERANCE


def test_boundary_types_are_recorded_for_the_cut() -> None:
    model = m.dynamic_batch()
    graphs = extract_graphs(model, plan_split(model))
    assert graphs.types["feat"].dtype == "float32"
    assert graphs.types["feat"].shape == ("batch", 8, 16, 16)
    assert graphs.types["image"].shape == ("batch", 3, 16, 16)
    assert graphs.types["cls"].shape == ("batch", 5)


def test_verification_catches_a_wrong_head() -> None:
    model = m.hard_sharing()
    plan = plan_split(model)
    graphs = extract_graphs(model, plan)
    other = m.hard_sharing(seed=1)
    graphs.heads["seg"] = extract_graphs(other, plan_split(other)).heads["seg"]

    report = verify_split(model, graphs, plan, sample_inputs(model, [1, 3, 16, 16]))

    assert report.checks["cls"].max_abs_error <= TOLERANCE
    assert report.checks["seg"].max_abs_error > 1e-2
    assert [c.output for c in report.failures(TOLERANCE)] == ["seg"]
    with pytest.raises(ModelError, match=r"verification failed.*seg \(head seg\)"):
        report.raise_if_failed(TOLERANCE)


def test_head_lookup_by_name() -> None:
    plan = plan_split(m.shared_neck())
    assert plan.head("boxes").outputs == ("boxes", "scores")
    with pytest.raises(KeyError):
        plan.head("scores")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cls", "cls"),
        ("output.1", "output.1"),
        ("logits/cls:0", "logits_cls_0"),
        ("seg-mask_v2", "seg-mask_v2"),
        ("onnx::Gemm_12", "onnx_Gemm_12"),
        ("._hidden.", "hidden"),
        ("box score", "box_score"),
        ("///", "head"),
        ("", "head"),
    ],
)
def test_safe_head_name(name: str, expected: str) -> None:
    assert safe_head_name(name) == expected


ERRORS = [
    pytest.param(m.single_output, {}, "nothing to split: one task", id="single-output"),
    pytest.param(m.independent_outputs, {}, "share no trunk", id="no-shared-trunk"),
    pytest.param(m.two_inputs, {}, "the model has 2 inputs (image, aux)", id="two-inputs"),
    pytest.param(m.trunk_as_output, {}, "feat are computed entirely by the shared trunk", id="empty-head"),
    pytest.param(
        m.shared_neck,
        {"tasks": {"det": ["boxes", "scores", "mask"]}},
        "nothing to split: one task",
        id="one-task-groups-everything",
    ),
    pytest.param(
        m.hard_sharing,
        {"tasks": {"classes": ["clss"]}},
        "task 'classes' names output 'clss', which the model does not have (did you mean 'cls'?)",
        id="unknown-task-output",
    ),
    pytest.param(
        m.hard_sharing,
        {"tasks": {"a": ["cls"], "b": ["cls", "seg"]}},
        "output 'cls' is given to two tasks: 'a' and 'b'",
        id="output-in-two-tasks",
    ),
    pytest.param(m.hard_sharing, {"tasks": {"my head": ["cls"]}}, "may only use letters", id="unsafe-task-name"),
    pytest.param(m.hard_sharing, {"tasks": {"a": []}}, "task 'a' lists no outputs", id="empty-task"),
    pytest.param(
        m.hard_sharing,
        {"boundary": ["feet"]},
        "--boundary names tensor 'feet', which the model does not have (did you mean 'feat'",
        id="unknown-boundary-close-match",
    ),
    pytest.param(
        m.hard_sharing,
        {"boundary": ["feat", "feat_pre"]},
        "--boundary tensor(s) feat_pre are read by no head",
        id="boundary-read-by-no-head",
    ),
    pytest.param(m.hard_sharing, {"boundary": ["image"]}, "is the model input", id="boundary-is-input"),
    pytest.param(m.hard_sharing, {"boundary": ["feat", "feat"]}, "lists a tensor twice", id="boundary-twice"),
    pytest.param(
        m.hard_sharing,
        {"boundary": ["feat_pre"]},
        "nothing to split: one task",
        id="boundary-before-shared-relu-merges-heads",
    ),
    pytest.param(
        m.hard_sharing,
        {"boundary": ["cls"]},
        "head 'seg' needs feat, which the boundary (cls) does not provide",
        id="boundary-bypassed-by-a-head",
    ),
    pytest.param(
        m.pyramid_split_levels,
        {"boundary": ["p4"]},
        "head 'cls' needs p3, which the boundary (p4) does not provide",
        id="boundary-bypassed-pyramid",
    ),
    pytest.param(m.hard_sharing, {"boundary": ["cls", "seg"]}, "would be empty", id="boundary-at-outputs"),
]


@pytest.mark.parametrize(("build", "kwargs", "message"), ERRORS)
def test_plan_split_errors(build: Callable[[], onnx.ModelProto], kwargs: Mapping[str, Any], message: str) -> None:
    with pytest.raises(ModelError) as caught:
        plan_split(build(), **kwargs)
    assert message in str(caught.value)


def test_sample_inputs_add_real_frames() -> None:
    model = m.hard_sharing()
    real = np.full((10, 3, 16, 16), 0.5, dtype=np.float32)
    samples = sample_inputs(model, [1, 3, 16, 16], count=2, real=real)
    assert len(samples) == 2 + 8
    assert all(s["image"].shape == (1, 3, 16, 16) and s["image"].dtype == np.float32 for s in samples)
    assert np.all(samples[-1]["image"] == 0.5)
    assert not np.array_equal(samples[0]["image"], samples[1]["image"])
