"""Find the trunk/head boundary of a multi-task ONNX model and cut it into graphs.

The **trunk** is the input-dependent part of the graph that every task depends on; the
**boundary** is the set of trunk tensors the heads read (one tensor, or several for a
feature pyramid). Outputs whose head-only sub-graphs share nodes form one head unless the
caller groups outputs explicitly. Shape side-chains (``Shape → Gather → Concat``) that a
head computes from a boundary tensor or from the model input are recomputed inside the
head rather than shipped as extra int64 boundary tensors.

Example::

    model = onnx.load("examples/demo_multitask.onnx")
    plan = plan_split(model)                      # automatic boundary
    graphs = extract_graphs(model, plan)          # trunk + one ModelProto per head
    print(plan.boundary, [h.name for h in plan.heads])

CLI: ``edge-export split MODEL -o BUNDLE_DIR [--task NAME=OUT,...] [--boundary T,...]``
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import onnx
from onnx import helper

from edge_runtime.errors import ModelError, close_matches
from exporter.graph import GraphIndex, TensorType, tensor_type_of

logger = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


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


def safe_head_name(name: str) -> str:
    """A file-name-safe head name derived from an output name."""
    cleaned = _SAFE_NAME.sub("_", name).strip("._")
    return cleaned or "head"


def _check_outputs(index: GraphIndex, names: Sequence[str], what: str) -> None:
    for name in names:
        if name not in index.outputs:
            raise ModelError(
                f"{what} names output {name!r}, which the model does not have"
                f"{close_matches(name, index.outputs)}; model outputs: {', '.join(index.outputs)}"
            )


def _normalise_tasks(index: GraphIndex, tasks: Mapping[str, Sequence[str]] | None) -> dict[str, tuple[str, ...]]:
    """Validate user grouping (``--task NAME=OUT,...`` / head spec): names exist, no overlaps."""
    groups: dict[str, tuple[str, ...]] = {}
    owner: dict[str, str] = {}
    for name, outputs in (tasks or {}).items():
        if not outputs:
            raise ModelError(f"task {name!r} lists no outputs")
        if safe_head_name(name) != name:
            raise ModelError(f"task name {name!r} may only use letters, digits, '_', '-' and '.'")
        _check_outputs(index, outputs, f"task {name!r}")
        for out in outputs:
            if out in owner:
                raise ModelError(f"output {out!r} is given to two tasks: {owner[out]!r} and {name!r}")
            owner[out] = name
        groups[name] = tuple(outputs)
    return groups


def _group_automatically(outputs: Sequence[str], head_nodes: Mapping[str, set[int]]) -> list[list[str]]:
    """Union outputs whose head-only node sets intersect (in output order)."""
    parent = {o: o for o in outputs}

    def find(o: str) -> str:
        while parent[o] != o:
            parent[o] = parent[parent[o]]
            o = parent[o]
        return o

    for i, a in enumerate(outputs):
        for b in outputs[i + 1 :]:
            if head_nodes[a] & head_nodes[b]:
                parent[find(b)] = find(a)
    groups: dict[str, list[str]] = {}
    for o in outputs:
        groups.setdefault(find(o), []).append(o)
    return list(groups.values())


def _name_groups(
    groups: Sequence[Sequence[str]], explicit: Mapping[str, tuple[str, ...]]
) -> list[tuple[str, tuple[str, ...]]]:
    """Give explicit groups their names and the others the (safe) name of their first output."""
    by_outputs = {outs: name for name, outs in explicit.items()}
    named: list[tuple[str, tuple[str, ...]]] = []
    used = set(explicit)
    for group in groups:
        key = tuple(group)
        if key in by_outputs:
            named.append((by_outputs[key], key))
            continue
        base = safe_head_name(group[0])
        name, n = base, 2
        while name in used:
            name, n = f"{base}_{n}", n + 1
        used.add(name)
        named.append((name, key))
    return named


def _merge_groups(
    index: GraphIndex, fixed: Sequence[Sequence[str]], auto: Sequence[Sequence[str]]
) -> tuple[set[int], list[list[str]]]:
    """Trunk node set for a grouping; automatic groups whose head-only parts overlap merge
    (repeatedly, since merging can grow the trunk). ``fixed`` (user) groups never merge."""
    fixed_groups = [list(g) for g in fixed]
    auto_groups = [list(g) for g in auto]
    while True:
        groups = [*fixed_groups, *auto_groups]
        needed = [set().union(*(index.ancestors([o]) for o in group)) & index.input_dependent for group in groups]
        trunk = set.intersection(*needed) if needed else set()
        head_only = {g[0]: needed[len(fixed_groups) + i] - trunk for i, g in enumerate(auto_groups)}
        merged = _group_automatically([g[0] for g in auto_groups], head_only)
        if len(merged) == len(auto_groups):
            return trunk, groups
        members = {g[0]: g for g in auto_groups}
        auto_groups = [[o for first in m for o in members[first]] for m in merged]


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
    ``boundary`` overrides the automatic boundary. Raises :class:`ModelError` when the
    model cannot be split (one task, no shared trunk, unknown names).
    """
    index = GraphIndex(model)
    if len(index.model_inputs) != 1:
        raise ModelError(
            f"the model has {len(index.model_inputs)} inputs ({', '.join(index.model_inputs) or 'none'}); "
            "edge-runtime feeds one image input"
        )
    if len(index.outputs) < 2:
        raise ModelError(
            f"nothing to split: one task (the model has a single output {index.outputs[0]!r})"
            if index.outputs
            else "nothing to split: the model has no outputs"
        )
    explicit = _normalise_tasks(index, tasks)
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
    named = _name_groups(final_groups, explicit)
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
        order = [t for t in (*index.model_inputs, *cut) if t in reads]
        heads.append(HeadPlan(name=name, outputs=tuple(outputs), inputs=tuple(order)))
    plan = SplitPlan(model_inputs=index.model_inputs, boundary=tuple(cut), heads=tuple(heads), automatic=automatic)
    logger.info(
        "boundary: %s; heads: %s",
        ", ".join(plan.boundary),
        "; ".join(f"{h.name}={','.join(h.outputs)}" for h in plan.heads),
    )
    return plan


def _plan_automatic(
    index: GraphIndex, explicit_groups: list[list[str]], singles: list[list[str]]
) -> tuple[list[str], list[list[str]]]:
    trunk, groups = _merge_groups(index, explicit_groups, singles)
    if len(groups) < 2:
        raise ModelError(
            "nothing to split: one task (the outputs "
            f"{', '.join(index.outputs)} share their whole computation); "
            "group them with --task NAME=OUT,... or give --boundary"
        )
    if not trunk:
        raise ModelError(
            "the outputs share no trunk: "
            + ", ".join("/".join(g) for g in groups)
            + " have no common computation after the input; these are independent models"
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
    merged = _group_automatically([g[0] for g in singles], head_only)
    groups = [*explicit_groups, *merged]
    if len(groups) < 2:
        raise ModelError("nothing to split: one task; group the outputs with --task NAME=OUT,...")
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
    ``features`` for one, ``features_0``, ``features_1``… for several. Readable names stay."""
    opaque = [b for b in plan.boundary if _is_opaque(b)]
    if not opaque:
        return {}
    used = set(taken)
    renamed = {}
    for name in opaque:
        base = "features" if len(plan.boundary) == 1 else f"features_{plan.boundary.index(name)}"
        candidate, n = base, 2
        while candidate in used:
            candidate, n = f"{base}_{n}", n + 1
        used.add(candidate)
        renamed[name] = candidate
    return renamed


def _rename_outputs(model: onnx.ModelProto, renamed: Mapping[str, str]) -> None:
    """Expose graph outputs under new names through Identity nodes (free after ORT's optimiser)."""
    for out in model.graph.output:
        if out.name in renamed:
            model.graph.node.append(helper.make_node("Identity", [out.name], [renamed[out.name]]))
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
    return SplitGraphs(
        trunk=trunk,
        heads=heads,
        types={renamed.get(n, n): types[n] for n in cut if n in types},
        renamed=renamed,
    )
