"""Find the trunk/head boundary of a multi-task ONNX model and cut it into graphs.

The **trunk** is the input-dependent part of the graph that every task depends on; the
**boundary** is the set of trunk tensors the heads read (one tensor, or several for a
feature pyramid). Outputs whose head-only sub-graphs share nodes form one head unless the
caller groups outputs explicitly (:mod:`exporter.split_groups`). Shape side-chains
(``Shape → Gather → Concat``) that a head computes from a boundary tensor or from the model
input are recomputed inside the head rather than shipped as extra int64 boundary tensors.

A single-task model is split too, so that heads can be added to its trunk later: its trunk
ends where its outputs' computations branch (a detector's boxes and scores branches), or,
with nothing to branch (one output), it is the identity on the model input and the one head
is the whole model.

Example::

    model = onnx.load("examples/demo_multitask.onnx")
    plan = plan_split(model)                      # automatic boundary
    graphs = extract_graphs(model, plan)          # trunk + one ModelProto per head
    print(plan.boundary, [h.name for h in plan.heads])

CLI: ``edge-export split MODEL -o BUNDLE_DIR [--task NAME=OUT,...] [--boundary T,...]``
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import onnx
from onnx import helper

from edge_runtime.errors import ModelError, close_matches
from exporter.graph import GraphIndex, TensorType, tensor_type_of
from exporter.split_groups import (
    DuplicateWork,
    find_duplicated_work,
    group_automatically,
    group_nodes,
    merge_groups,
    name_groups,
    normalise_tasks,
    shared_nodes,
)
from exporter.split_groups import safe_head_name as safe_head_name

logger = logging.getLogger(__name__)

#: Suffix of the bundle name of the model input when the trunk passes it on unchanged.
IDENTITY_SUFFIX = "__trunk"


@dataclass(frozen=True)
class HeadPlan:
    """One head: its name, the original outputs it produces and the tensors it reads."""

    name: str
    outputs: tuple[str, ...]
    inputs: tuple[str, ...]


@dataclass(frozen=True)
class SplitPlan:
    """Where to cut: model inputs, boundary tensors (the trunk's outputs) and the heads."""

    model_inputs: tuple[str, ...]
    boundary: tuple[str, ...]
    heads: tuple[HeadPlan, ...]
    automatic: bool
    #: Work that two or more heads repeat after the boundary (explicit groups that split a
    #: shared part); ``edge-export split`` warns about each.
    duplicated: tuple[DuplicateWork, ...] = ()
    #: Things the user should know about the cut (one line each), e.g. an identity trunk.
    notes: tuple[str, ...] = ()

    @property
    def identity_trunk(self) -> bool:
        """True when the trunk only passes the model input on (one task, nothing to branch)."""
        return self.boundary == self.model_inputs

    def head(self, name: str) -> HeadPlan:
        """The head called ``name``."""
        for head in self.heads:
            if head.name == name:
                return head
        raise KeyError(name)


@dataclass(frozen=True)
class SplitGraphs:
    """The extracted graphs: the trunk and one model per head (by head name), and the
    types of the tensors at the cuts (model input, boundary, head outputs)."""

    trunk: onnx.ModelProto
    heads: dict[str, onnx.ModelProto]
    types: dict[str, TensorType] = field(default_factory=dict)
    #: Boundary tensors renamed in the bundle (original name → bundle name), see
    #: :func:`public_boundary_names`; names not in it are kept.
    renamed: dict[str, str] = field(default_factory=dict)

    def public(self, name: str) -> str:
        """The name a tensor of the original model has in the bundle."""
        return self.renamed.get(name, name)


def _boundary_tensors(index: GraphIndex, trunk: set[int], head_nodes: set[int]) -> list[str]:
    """Trunk tensors read by head nodes, in graph order."""
    reads = {name for i in head_nodes for name in index.node_inputs[i]}
    boundary = []
    for idx in sorted(trunk):
        for out in index.nodes[idx].output:
            if out and out in reads:
                boundary.append(out)
    return boundary


def _push_shape_chains(index: GraphIndex, boundary: list[str]) -> list[str]:
    """Replace shape-derived boundary tensors by what they are computed from, when that is
    already available to the heads (another boundary tensor or a model input)."""
    value_boundary = [b for b in boundary if b not in index.shape_derived]
    available = set(value_boundary) | set(index.model_inputs)
    kept: list[str] = []
    for name in boundary:
        if name not in index.shape_derived:
            continue
        chain = index.ancestors([name], stop=available)
        sources = index.external_reads(chain)
        if all(s in available or index.is_constant(s) for s in sources):
            logger.debug("boundary: %s is a shape side-chain; heads recompute it", name)
            continue
        kept.append(name)
    return value_boundary + kept


def plan_split(
    model: onnx.ModelProto,
    tasks: Mapping[str, Sequence[str]] | None = None,
    boundary: Sequence[str] | None = None,
) -> SplitPlan:
    """Decide the trunk/head cut of ``model``.

    ``tasks`` groups outputs into named heads (others are grouped automatically);
    ``boundary`` overrides the automatic boundary. One task (one output, or every output
    in one group) is split too: see :func:`_one_task_cut`. Raises :class:`ModelError` when
    the model cannot be split (tasks with no shared trunk, unknown names, a bad boundary).
    """
    index = GraphIndex(model)
    if len(index.model_inputs) != 1:
        raise ModelError(
            f"the model has {len(index.model_inputs)} inputs ({', '.join(index.model_inputs) or 'none'}); "
            "edge-runtime feeds one image input"
        )
    if not index.outputs:
        raise ModelError("the model has no outputs")
    explicit = normalise_tasks(index, tasks)
    grouped = {o for outs in explicit.values() for o in outs}
    groups: list[list[str]] = [list(outs) for outs in explicit.values()]
    singles = [[o] for o in index.outputs if o not in grouped]

    if boundary:
        chosen = _plan_with_boundary(index, list(boundary), groups, singles)
        automatic = False
    else:
        chosen = _plan_automatic(index, groups, singles)
        automatic = True
    cut, final_groups = chosen
    trunk_nodes = index.ancestors(cut, stop=index.model_inputs)
    named = name_groups(final_groups, explicit)
    traced = {name: index.ancestors(outputs, stop=set(cut) | set(index.model_inputs)) for name, outputs in named}
    for name, _outputs in named:
        # A head must not recompute the trunk from the model input (only cheap shape chains).
        nodes = traced[name]
        recomputed = {
            i for i in nodes & trunk_nodes if any(o not in index.shape_derived for o in index.nodes[i].output if o)
        }
        if recomputed:
            produced = {o for i in recomputed for o in index.nodes[i].output if o}
            needed = sorted({r for i in nodes - trunk_nodes for r in index.node_inputs[i] if r in produced})
            raise ModelError(
                f"head {name!r} needs {', '.join(needed) or 'trunk tensors'}, which the boundary "
                f"({', '.join(cut)}) does not provide: it would recompute the trunk; add it to --boundary"
            )
    heads = []
    for name, outputs in named:
        nodes = traced[name]
        if not (nodes - trunk_nodes) & index.input_dependent:
            raise ModelError(
                f"head {name!r} would be empty: its outputs ({', '.join(outputs)}) are computed by the trunk "
                f"that ends at {', '.join(cut)}; cut earlier with --boundary"
            )
        reads = index.external_reads(nodes) | {o for o in outputs if o in cut or o in index.model_inputs}
        order = [t for t in dict.fromkeys((*index.model_inputs, *cut)) if t in reads]
        heads.append(HeadPlan(name=name, outputs=tuple(outputs), inputs=tuple(order)))
    duplicated = find_duplicated_work(
        index, {name: traced[name] - trunk_nodes for name, _ in named}, lambda: tensor_types(model)
    )
    plan = SplitPlan(
        model_inputs=index.model_inputs,
        boundary=tuple(cut),
        heads=tuple(heads),
        automatic=automatic,
        duplicated=duplicated,
    )
    if plan.identity_trunk:
        public = public_boundary_names(plan, index.tensor_names())
        plan = replace(plan, notes=(_identity_note(plan, public),))
    logger.info(
        "boundary: %s; heads: %s",
        ", ".join(plan.boundary),
        "; ".join(f"{h.name}={','.join(h.outputs)}" for h in plan.heads),
    )
    return plan


def _identity_note(plan: SplitPlan, public: Mapping[str, str]) -> str:
    (head,) = plan.heads
    passed = ", ".join(f"{name!r} on as {public.get(name, name)!r}" for name in plan.boundary)
    return (
        f"one task with no branches to cut between: the trunk only passes {passed} and head {head.name!r} "
        "is the whole model; --boundary TENSOR gives a real cut (a trunk that heads added later can share)"
    )


def _one_task_cut(index: GraphIndex, outputs: Sequence[str]) -> list[str]:
    """The boundary of a single-task model: where its outputs' computations branch (the
    nodes every output depends on, as if each output were its own task), or the model input
    (an identity trunk) when there is no such cut: one output, or no branching before one
    of them."""
    per_output = [[o] for o in outputs]
    trunk = shared_nodes(index, per_output)
    in_trunk = {o for i in trunk for o in index.nodes[i].output if o}
    if len(outputs) > 1 and trunk and not in_trunk & set(outputs):
        head_nodes = set().union(*(group_nodes(index, g) for g in per_output)) - trunk
        cut = _push_shape_chains(index, _boundary_tensors(index, trunk, head_nodes))
        if cut:
            return cut
    return list(index.model_inputs)


def _plan_automatic(
    index: GraphIndex, explicit_groups: list[list[str]], singles: list[list[str]]
) -> tuple[list[str], list[list[str]]]:
    trunk, groups = merge_groups(index, explicit_groups, singles)
    if len(groups) < 2:
        return _one_task_cut(index, groups[0]), groups
    if not trunk:
        raise ModelError(
            "the outputs share no trunk: "
            + ", ".join("/".join(g) for g in groups)
            + " have no common computation after the input; these are independent models "
            "(to export them as one head anyway, group them with --task NAME=OUT,...)"
        )
    all_needed = set().union(*(index.ancestors(list(g)) for g in groups))
    head_nodes = all_needed - trunk
    boundary = _boundary_tensors(index, trunk, head_nodes)
    for group in groups:
        if set(index.ancestors(group)) & index.input_dependent <= trunk:
            raise ModelError(
                f"output(s) {', '.join(group)} are computed entirely by the shared trunk: "
                "their head would be empty; pick a --boundary before them"
            )
    return _push_shape_chains(index, boundary), groups


def _plan_with_boundary(
    index: GraphIndex, boundary: list[str], explicit_groups: list[list[str]], singles: list[list[str]]
) -> tuple[list[str], list[list[str]]]:
    names = index.tensor_names()
    for name in boundary:
        if not index.is_defined(name):
            raise ModelError(
                f"--boundary names tensor {name!r}, which the model does not have{close_matches(name, names)}"
            )
        if name in index.model_inputs:
            raise ModelError(f"--boundary {name!r} is the model input: the trunk would be empty")
        if name in index.producer and index.producer[name] not in index.input_dependent:
            raise ModelError(f"--boundary {name!r} is a constant: it does not depend on the model input")
    if len(set(boundary)) != len(boundary):
        raise ModelError(f"--boundary lists a tensor twice: {', '.join(boundary)}")
    stop = set(boundary) | set(index.model_inputs)
    head_only = {g[0]: index.ancestors([g[0]], stop=stop) for g in singles}
    merged = group_automatically([g[0] for g in singles], head_only)
    groups = [*explicit_groups, *merged]
    used: set[str] = set()
    for group in groups:
        nodes = index.ancestors(group, stop=stop)
        used |= index.external_reads(nodes) | {o for o in group if o in stop}
    unused = [b for b in boundary if b not in used]
    if unused:
        raise ModelError(f"--boundary tensor(s) {', '.join(unused)} are read by no head")
    return boundary, groups


# -- extraction ---------------------------------------------------------------------------


def tensor_types(model: onnx.ModelProto) -> dict[str, TensorType]:
    """Element type and shape of every tensor that ONNX shape inference can type."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:  # inference is best effort: fall back to what the file says
        logger.debug("shape inference failed: %s", exc)
        inferred = model
    types: dict[str, TensorType] = {}
    graph = inferred.graph
    for info in [*graph.input, *graph.value_info, *graph.output]:
        found = tensor_type_of(info)
        if found is not None:
            types[info.name] = found
    for init in graph.initializer:
        types.setdefault(init.name, TensorType(init.data_type, tuple(init.dims)))
    return types


def extract_graph(
    model: onnx.ModelProto,
    index: GraphIndex,
    inputs: Sequence[str],
    outputs: Sequence[str],
    types: Mapping[str, TensorType],
    graph_name: str,
) -> onnx.ModelProto:
    """A standalone model computing ``outputs`` from ``inputs`` (plus the initializers it uses)."""
    nodes = index.ancestors(outputs, stop=set(inputs))
    ordered = [index.nodes[i] for i in index.order if i in nodes]
    reads = {name for i in nodes for name in index.node_inputs[i]} | set(outputs)
    produced = {o for i in nodes for o in index.nodes[i].output if o}
    missing = [r for r in reads if r not in produced and r not in inputs and r not in index.initializers]
    if missing:
        raise ModelError(f"{graph_name}: cannot compute {', '.join(sorted(missing))} from {', '.join(inputs)}")
    untyped = [n for n in (*inputs, *outputs) if n not in types]
    if untyped:
        raise ModelError(f"{graph_name}: the element type of {', '.join(untyped)} is unknown")
    initializers = [t for t in model.graph.initializer if t.name in reads]
    sparse = [t for t in model.graph.sparse_initializer if t.values.name in reads]
    value_info = [types[n].to_value_info(n) for n in sorted(produced - set(outputs)) if n in types]
    graph = helper.make_graph(
        ordered,
        graph_name,
        [types[n].to_value_info(n) for n in inputs],
        [types[n].to_value_info(n) for n in outputs],
        initializer=initializers,
        value_info=value_info,
        sparse_initializer=sparse,
    )
    sub = helper.make_model(
        graph,
        opset_imports=list(model.opset_import),
        ir_version=max(model.ir_version, 4),  # IR < 4 needs initializers listed as inputs
        producer_name=model.producer_name or "edge-export",
        producer_version=model.producer_version,
    )
    used_functions = {(n.domain, n.op_type) for n in ordered}
    sub.functions.extend(f for f in model.functions if (f.domain, f.name) in used_functions)
    return sub


def probe_tensor_types(model: onnx.ModelProto, names: Sequence[str]) -> dict[str, TensorType]:
    """Element types of ``names`` found by running the model once in onnxruntime with them
    exposed as outputs (for tensors that shape inference cannot type, e.g. after custom ops).
    Shapes are left unknown (only the rank is kept) so that dynamic dimensions stay dynamic."""
    import numpy as np
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(helper.ValueInfoProto(name=n) for n in names)
    index = GraphIndex(model)
    feed = {}
    for info in model.graph.input:
        if info.name not in index.model_inputs:
            continue
        found = tensor_type_of(info)
        if found is None or found.shape is None:
            raise ModelError(f"cannot probe tensor types: the model input {info.name!r} has no shape")
        shape = [d if isinstance(d, int) else 1 for d in found.shape]
        feed[info.name] = np.zeros(shape, dtype=helper.tensor_dtype_to_np_dtype(found.elem_type))
    try:
        session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
        values = session.run(list(names), feed)
    except Exception as exc:
        raise ModelError(f"cannot determine the type of {', '.join(names)}: {exc}") from exc
    result = {}
    for name, value in zip(names, values, strict=True):
        elem = helper.np_dtype_to_tensor_dtype(np.asarray(value).dtype)
        result[name] = TensorType(elem, tuple(None for _ in np.asarray(value).shape))
    logger.debug("typed %s by running the model", ", ".join(names))
    return result


def _is_opaque(name: str) -> bool:
    """Exporter-generated names (``/trunk/conv/Relu_output_0``, ``onnx::Conv_12``, ``123``)."""
    return name.startswith("/") or "::" in name or name.isdigit()


def public_boundary_names(plan: SplitPlan, taken: Sequence[str]) -> dict[str, str]:
    """Readable bundle names for boundary tensors whose names the exporter generated:
    ``features`` for one, ``features_0``, ``features_1``… for several. Readable names stay.
    The model input passed on by an identity trunk becomes ``<input>__trunk``."""
    opaque = [b for b in plan.boundary if _is_opaque(b) or b in plan.model_inputs]
    if not opaque:
        return {}
    used = set(taken)
    renamed = {}
    for name in opaque:
        if name in plan.model_inputs:
            base = f"{name}{IDENTITY_SUFFIX}"
        elif len(plan.boundary) == 1:
            base = "features"
        else:
            base = f"features_{plan.boundary.index(name)}"
        candidate, n = base, 2
        while candidate in used:
            candidate, n = f"{base}_{n}", n + 1
        used.add(candidate)
        renamed[name] = candidate
    return renamed


def _rename_outputs(model: onnx.ModelProto, renamed: Mapping[str, str]) -> None:
    """Expose graph outputs under new names through Identity nodes (free after ORT's optimiser)."""
    inputs = {i.name for i in model.graph.input}
    for out in model.graph.output:
        if out.name in renamed:
            model.graph.node.append(helper.make_node("Identity", [out.name], [renamed[out.name]]))
            if out.name not in inputs:  # an identity trunk: the graph input is typed already
                model.graph.value_info.append(onnx.ValueInfoProto())
                model.graph.value_info[-1].CopyFrom(out)
            out.name = renamed[out.name]


def _rename_inputs(model: onnx.ModelProto, renamed: Mapping[str, str]) -> None:
    """Accept graph inputs under new names, feeding the old names through Identity nodes."""
    aliases = []
    for inp in model.graph.input:
        if inp.name in renamed:
            aliases.append(helper.make_node("Identity", [renamed[inp.name]], [inp.name]))
            inp.name = renamed[inp.name]
    if aliases:
        nodes = [*aliases, *model.graph.node]
        del model.graph.node[:]
        model.graph.node.extend(nodes)


def extract_graphs(model: onnx.ModelProto, plan: SplitPlan) -> SplitGraphs:
    """Cut ``model`` along ``plan`` into a trunk model and one model per head."""
    index = GraphIndex(model)
    types = tensor_types(model)
    cut = [*plan.model_inputs, *plan.boundary, *(o for h in plan.heads for o in h.outputs)]
    untyped = [n for n in dict.fromkeys(cut) if n not in types]
    if untyped:
        types.update(probe_tensor_types(model, untyped))
    trunk = extract_graph(model, index, plan.model_inputs, plan.boundary, types, "trunk")
    heads = {
        head.name: extract_graph(model, index, head.inputs, head.outputs, types, f"head_{head.name}")
        for head in plan.heads
    }
    renamed = public_boundary_names(plan, index.tensor_names())
    if renamed:
        _rename_outputs(trunk, renamed)
        for head_model in heads.values():
            _rename_inputs(head_model, renamed)
        logger.info("boundary renamed in the bundle: %s", ", ".join(f"{k} -> {v}" for k, v in renamed.items()))
    # The model input keeps its name even when an identity trunk passes it on renamed.
    public = {n: n for n in plan.model_inputs}
    public.update({renamed.get(n, n): n for n in cut if n not in plan.model_inputs or n in plan.boundary})
    return SplitGraphs(
        trunk=trunk,
        heads=heads,
        types={name: types[n] for name, n in public.items() if n in types},
        renamed=renamed,
    )
