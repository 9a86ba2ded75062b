"""exporter.split: the boundary finder, head grouping and naming, graph extraction, and the
numerical check of every cut in real onnxruntime sessions (exporter.verify)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_models as m
import pytest

from edge_runtime.bundle.reader import load_bundle
from edge_runtime.errors import ModelError
from edge_runtime.inference.engine import Engine
from exporter.pipeline import SplitOptions, split_model
from exporter.split import extract_graphs, plan_split, public_boundary_names, safe_head_name
from exporter.split_groups import DuplicateWork, format_count, name_groups
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
        {"head": ("boxes", "scores"), "mask": ("mask",)},
        {"head": ("feat",), "mask": ("feat",)},
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
    # One task: never refused.
    pytest.param(
        m.single_output,
        {},
        ("image",),
        {"cls": ("cls",)},
        {"cls": ("image",)},
        True,
        id="one-output-identity-trunk",
    ),
    pytest.param(
        m.single_output,
        {"boundary": ["feat"]},
        ("feat",),
        {"cls": ("cls",)},
        {"cls": ("feat",)},
        False,
        id="one-output-boundary-given",
    ),
    pytest.param(
        m.two_branch_detector,
        {"tasks": {"det": ["boxes", "scores"]}},
        ("feat",),
        {"det": ("boxes", "scores")},
        {"det": ("feat",)},
        True,
        id="two-branch-detector-one-task-cut-where-branches-start",
    ),
    pytest.param(
        m.two_branch_detector,
        {},
        ("feat",),
        {"boxes": ("boxes",), "scores": ("scores",)},
        {"boxes": ("feat",), "scores": ("feat",)},
        True,
        id="two-branch-detector-automatic-two-heads",
    ),
    pytest.param(
        m.shared_neck,
        {"tasks": {"det": ["boxes", "scores", "mask"]}},
        ("feat",),
        {"det": ("boxes", "scores", "mask")},
        {"det": ("feat",)},
        True,
        id="one-task-groups-everything",
    ),
    pytest.param(
        m.overlapping_branches,
        {},
        ("feat",),
        {"det": ("det_boxes", "det_scores", "det_classes")},
        {"det": ("feat",)},
        True,
        id="automatic-one-group-named-after-shared-prefix",
    ),
    pytest.param(
        m.independent_outputs,
        {"tasks": {"ab": ["a", "b"]}},
        ("image",),
        {"ab": ("a", "b")},
        {"ab": ("image",)},
        True,
        id="one-task-no-shared-part-identity-trunk",
    ),
    pytest.param(
        m.hard_sharing,
        {"boundary": ["feat_pre"]},
        ("feat_pre",),
        {"head": ("cls", "seg")},
        {"head": ("feat_pre",)},
        False,
        id="boundary-before-shared-relu-one-head",
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
    assert [o.name for o in trunk.get_outputs()] == [graphs.public(b) for b in boundary]
    for head in plan.heads:
        onnx.checker.check_model(graphs.heads[head.name])
        session = make_session(graphs.heads[head.name], head.name)
        assert [i.name for i in session.get_inputs()] == [graphs.public(i) for i in head.inputs]
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
    assert plan.head("head").outputs == ("boxes", "scores")
    with pytest.raises(KeyError):
        plan.head("boxes")


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
    pytest.param(
        m.independent_outputs,
        {},
        "share no trunk: a, b have no common computation after the input; these are independent models "
        "(to export them as one head anyway, group them with --task NAME=OUT,...)",
        id="no-shared-trunk",
    ),
    pytest.param(m.two_inputs, {}, "the model has 2 inputs (image, aux)", id="two-inputs"),
    pytest.param(m.trunk_as_output, {}, "feat are computed entirely by the shared trunk", id="empty-head"),
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


# -- one task ---------------------------------------------------------------------------------


def test_one_output_gets_an_identity_trunk() -> None:
    model = m.single_output()

    plan = plan_split(model)

    assert plan.identity_trunk and plan.boundary == ("image",)
    assert plan.notes == (
        "one task with no branches to cut between: the trunk only passes 'image' on as 'image__trunk' and "
        "head 'cls' is the whole model; --boundary TENSOR gives a real cut (a trunk that heads added later "
        "can share)",
    )
    graphs = extract_graphs(model, plan)
    assert graphs.renamed == {"image": "image__trunk"}
    assert [(n.op_type, list(n.input), list(n.output)) for n in graphs.trunk.graph.node] == [
        ("Identity", ["image"], ["image__trunk"])
    ]
    assert [i.name for i in graphs.heads["cls"].graph.input] == ["image__trunk"]
    head_ops = [n.op_type for n in graphs.heads["cls"].graph.node]
    assert head_ops == ["Identity", *(n.op_type for n in model.graph.node)]
    assert graphs.types["image"].shape == graphs.types["image__trunk"].shape == (1, 3, 16, 16)
    report = verify_split(model, graphs, plan, sample_inputs(model, [1, 3, 16, 16]))
    assert report.max_abs_error == 0.0


def test_identity_bundle_name_avoids_existing_tensors() -> None:
    plan = plan_split(m.single_output())
    assert public_boundary_names(plan, ["image", "image__trunk"]) == {"image": "image__trunk_2"}


def test_a_real_cut_has_no_note() -> None:
    plan = plan_split(m.two_branch_detector(), tasks={"det": ["boxes", "scores"]})
    assert not plan.identity_trunk and plan.notes == () and plan.duplicated == ()


def _run_bundle_with_engine(root: Path, image: np.ndarray) -> dict[str, np.ndarray]:
    with Engine.from_bundle(root) as engine:
        return {name: engine.to_numpy(value) for name, value in engine.run_graphs(image).items()}


@pytest.mark.parametrize(
    ("build", "options", "trunk_outputs", "heads"),
    [
        pytest.param(m.single_output, SplitOptions(), ("image__trunk",), {"cls": ("cls",)}, id="one-output"),
        pytest.param(
            m.two_branch_detector,
            SplitOptions(tasks={"det": ["boxes", "scores"]}),
            ("feat",),
            {"det": ("boxes", "scores")},
            id="two-branch-one-task",
        ),
    ],
)
def test_one_task_bundle_runs_on_the_engine(
    build: Callable[[], onnx.ModelProto],
    options: SplitOptions,
    trunk_outputs: tuple[str, ...],
    heads: dict[str, tuple[str, ...]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = build()
    with caplog.at_level(logging.INFO, logger="exporter"):
        result = split_model(model, tmp_path / "bundle", options)

    manifest = load_bundle(result.bundle_dir).manifest
    assert manifest.trunk.inputs == ("image",)
    assert manifest.trunk.outputs == trunk_outputs
    assert {name: h.outputs for name, h in manifest.heads.items()} == heads
    assert {name: h.inputs for name, h in manifest.heads.items()} == {name: trunk_outputs for name in heads}
    assert set(manifest.tensors) >= {"image", *trunk_outputs}
    assert result.report.max_abs_error <= TOLERANCE
    identity = trunk_outputs == ("image__trunk",)
    assert any("no branches to cut between" in r.getMessage() for r in caplog.records) is identity
    for seed in range(2):
        image = m.random_image(seed=seed)
        expected = m.run_onnx(model, {"image": image})
        got = _run_bundle_with_engine(result.bundle_dir, image)
        assert set(got) == set(expected)
        for name, want in expected.items():
            np.testing.assert_allclose(got[name], want, atol=TOLERANCE, rtol=0)


# -- automatic head names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("groups", "explicit", "names"),
    [
        pytest.param([["cls"], ["seg"]], {}, ["cls", "seg"], id="one-output-groups-keep-their-names"),
        pytest.param([["det_boxes", "det_scores"]], {}, ["det"], id="common-prefix"),
        pytest.param([["boxes_p3", "boxes_p4"]], {}, ["boxes"], id="prefix-cut-at-separator"),
        pytest.param([["seg.out1", "seg.out2"]], {}, ["seg"], id="prefix-cut-at-dot"),
        pytest.param([["output1", "output2"]], {}, ["output"], id="prefix-without-separator"),
        pytest.param([["logits/cls:0", "logits/box:0"]], {}, ["logits"], id="prefix-cleaned"),
        pytest.param([["boxes", "scores"]], {}, ["head"], id="nothing-shared"),
        pytest.param([["p3_cls", "p4_cls"]], {}, ["head"], id="prefix-too-short"),
        pytest.param([["a", "b"], ["c", "d"], ["e"]], {}, ["head", "head_2", "e"], id="several-unnamed"),
        pytest.param([["head"], ["a", "b"]], {}, ["head", "head_2"], id="unique-against-an-output-name"),
        pytest.param([["det"], ["det_a", "det_b"]], {"det": ("det",)}, ["det", "det_2"], id="unique-against-task"),
        pytest.param([["trunk"], ["trunk_a", "trunk_b"]], {}, ["trunk_2", "trunk_3"], id="never-trunk"),
    ],
)
def test_automatic_head_names(groups: list[list[str]], explicit: dict[str, tuple[str, ...]], names: list[str]) -> None:
    named = name_groups(groups, explicit)
    assert [name for name, _ in named] == names
    assert [list(outs) for _, outs in named] == groups
    assert all(safe_head_name(name) == name for name in names)


# -- duplicated work --------------------------------------------------------------------------

SPLIT_NECK_WARNING = (
    "heads 'a' and 'b' both compute 6 nodes after the boundary (1.4 KiB of weights, ~82 k MACs per frame "
    "each extra time): group their outputs in one head, or move the boundary after the shared part with "
    "--boundary (it ends at neck)"
)


@pytest.mark.parametrize(
    ("build", "tasks", "expected"),
    [
        pytest.param(
            m.split_neck_heads,
            {"a": ["a"], "b": ["b"]},
            DuplicateWork(heads=("a", "b"), nodes=6, weight_bytes=1484, macs=81962, ends=("neck",)),
            id="conv-convtranspose-matmul-gemm",
        ),
        pytest.param(
            partial(m.split_neck_heads, batch="N"),
            {"a": ["a"], "b": ["b"]},
            DuplicateWork(heads=("a", "b"), nodes=6, weight_bytes=1484, macs=81962, ends=("neck",)),
            id="symbolic-batch-counts-one-frame",
        ),
        pytest.param(
            partial(m.split_neck_heads, height="H"),
            {"a": ["a"], "b": ["b"]},
            DuplicateWork(heads=("a", "b"), nodes=6, weight_bytes=1484, macs=None, ends=("neck",)),
            id="unknown-shape-unknown-macs",
        ),
        pytest.param(
            m.shared_neck,
            {"box": ["boxes"], "score": ["scores"]},
            # Conv 3x3 8->8 on 16x16 and its Relu: (576 + 8) float32, 8*16*16 * 72 MACs.
            DuplicateWork(heads=("box", "score"), nodes=2, weight_bytes=2336, macs=147456, ends=("n",)),
            id="shared-neck-split-by-tasks",
        ),
    ],
)
def test_explicit_groups_that_duplicate_work_are_reported(
    build: Callable[[], onnx.ModelProto], tasks: dict[str, list[str]], expected: DuplicateWork
) -> None:
    plan = plan_split(build(), tasks=tasks)
    assert plan.duplicated == (expected,)


def test_duplicate_work_texts() -> None:
    assert plan_split(m.split_neck_heads(), tasks={"a": ["a"], "b": ["b"]}).duplicated[0].describe() == (
        SPLIT_NECK_WARNING
    )
    three = DuplicateWork(heads=("p8", "p16", "p32"), nodes=1, weight_bytes=3 * 2**20, macs=None)
    assert three.describe() == (
        "heads 'p8', 'p16' and 'p32' all compute 1 node after the boundary (3.0 MiB of weights, unknown MACs "
        "per frame each extra time): group their outputs in one head, or move the boundary after the shared "
        "part with --boundary"
    )


# The SPLITS whose explicit groups repeat work after the boundary: heads, nodes.
DUPLICATING_SPLITS = {
    "shared-neck-explicit-tasks-stay-separate": (("box", "score"), 2),
    "boundary-before-relu-with-tasks": (("cls", "seg"), 1),  # both apply the Relu to feat_pre
}


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0"), (950, "950"), (12_345, "12.3 k"), (999_999, "1 M"), (310_000_000, "310 M"), (2 * 10**9, "2 G")],
)
def test_format_count(value: int, text: str) -> None:
    assert format_count(value) == text


@pytest.mark.parametrize(("build", "kwargs"), [pytest.param(*p.values[:2], id=p.id) for p in SPLITS])
def test_duplicated_work_only_from_explicit_groups(
    build: Callable[[], onnx.ModelProto], kwargs: Mapping[str, Any], request: pytest.FixtureRequest
) -> None:
    """Automatic groups never overlap; shape side-chains recomputed in each head do not count."""
    plan = plan_split(build(), **kwargs)
    expected = DUPLICATING_SPLITS.get(request.node.callspec.id)
    assert [(d.heads, d.nodes) for d in plan.duplicated] == ([expected] if expected else [])


def test_split_model_warns_about_duplicated_work(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="exporter"):
        result = split_model(m.split_neck_heads(), tmp_path / "bundle", SplitOptions(tasks={"a": ["a"], "b": ["b"]}))

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "after the boundary" in r.getMessage()]
    assert [(r.name, r.getMessage()) for r in warnings] == [("exporter.pipeline", SPLIT_NECK_WARNING)]
    assert result.plan.duplicated[0].macs == 81962
    assert result.report.max_abs_error <= TOLERANCE
