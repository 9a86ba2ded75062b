"""How the outputs of a model become heads, and what a grouping costs.

* :func:`normalise_tasks` checks the user's groups (``--task NAME=OUT,...`` / head spec);
* :func:`merge_groups` finds the trunk of a grouping, merging automatic groups whose
  head-only parts overlap (user groups never merge);
* :func:`name_groups` names the heads: user groups keep their names, a one-output group is
  named after its output, a several-output group after what its outputs' names share;
* :func:`find_duplicated_work` reports nodes after the boundary that two or more heads
  compute each (user groups that split a shared neck), with their weights and an estimate
  of their multiply-accumulates.

Example::

    index = GraphIndex(model)
    trunk, groups = merge_groups(index, [], [[o] for o in index.outputs])
    named = name_groups(groups, {})           # [("det", ("det_boxes", "det_scores")), ...]
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from math import prod

import onnx
from onnx import helper

from edge_runtime.errors import ModelError, close_matches
from exporter.graph import GraphIndex, TensorType
from exporter.progress import format_bytes

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
#: A several-output head is named after its outputs' common prefix only when it is this long.
MIN_SHARED_NAME = 3
#: Automatic head names never used: the trunk's key among a bundle's graphs.
RESERVED_NAMES = frozenset({"trunk"})


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


def normalise_tasks(index: GraphIndex, tasks: Mapping[str, Sequence[str]] | None) -> dict[str, tuple[str, ...]]:
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


def group_automatically(outputs: Sequence[str], head_nodes: Mapping[str, set[int]]) -> list[list[str]]:
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


def merge_groups(
    index: GraphIndex, fixed: Sequence[Sequence[str]], auto: Sequence[Sequence[str]]
) -> tuple[set[int], list[list[str]]]:
    """Trunk node set for a grouping; automatic groups whose head-only parts overlap merge
    (repeatedly, since merging can grow the trunk). ``fixed`` (user) groups never merge."""
    fixed_groups = [list(g) for g in fixed]
    auto_groups = [list(g) for g in auto]
    while True:
        groups = [*fixed_groups, *auto_groups]
        trunk = shared_nodes(index, groups)
        needed = [group_nodes(index, g) for g in auto_groups]
        head_only = {g[0]: needed[i] - trunk for i, g in enumerate(auto_groups)}
        merged = group_automatically([g[0] for g in auto_groups], head_only)
        if len(merged) == len(auto_groups):
            return trunk, groups
        members = {g[0]: g for g in auto_groups}
        auto_groups = [[o for first in m for o in members[first]] for m in merged]


def group_nodes(index: GraphIndex, group: Sequence[str]) -> set[int]:
    """The input-dependent nodes that computing ``group``'s outputs needs."""
    return index.ancestors(group) & index.input_dependent


def shared_nodes(index: GraphIndex, groups: Sequence[Sequence[str]]) -> set[int]:
    """The input-dependent nodes every group needs (empty for no groups)."""
    needed = [group_nodes(index, g) for g in groups]
    return set.intersection(*needed) if needed else set()


def _common_prefix(names: Sequence[str]) -> str:
    """The longest prefix of every name, character by character."""
    first, last = min(names), max(names)  # the lexicographic extremes bound every other name
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


def _shared_name(outputs: Sequence[str]) -> str:
    """What the names of ``outputs`` share (their common prefix, ending at a separator where
    that still leaves :data:`MIN_SHARED_NAME` characters), cleaned; ``""`` when too short."""
    prefix = _common_prefix(outputs)
    mid_word = prefix[-1:].isalnum() and any(len(o) > len(prefix) and o[len(prefix)].isalnum() for o in outputs)
    if mid_word:
        at_separator = re.sub(r"[A-Za-z0-9]+$", "", prefix)
        if len(_SAFE_NAME.sub("_", at_separator).strip("._-")) >= MIN_SHARED_NAME:
            prefix = at_separator
    cleaned = _SAFE_NAME.sub("_", prefix).strip("._-")
    return cleaned if len(cleaned) >= MIN_SHARED_NAME else ""


def name_groups(
    groups: Sequence[Sequence[str]], explicit: Mapping[str, tuple[str, ...]]
) -> list[tuple[str, tuple[str, ...]]]:
    """Give explicit groups their names; an automatic group of one output is named after it,
    one of several after what their names share (``det_boxes``, ``det_scores`` → ``det``),
    else ``head``. Names are made unique with ``_2``, ``_3``… and never ``trunk``."""
    by_outputs = {outs: name for name, outs in explicit.items()}
    named: list[tuple[str, tuple[str, ...]]] = []
    used = set(explicit) | RESERVED_NAMES
    for group in groups:
        key = tuple(group)
        if key in by_outputs:
            named.append((by_outputs[key], key))
            continue
        base = safe_head_name(group[0]) if len(group) == 1 else _shared_name(group) or "head"
        name, n = base, 2
        while name in used:
            name, n = f"{base}_{n}", n + 1
        used.add(name)
        named.append((name, key))
    return named


# -- duplicated work ------------------------------------------------------------------------


@dataclass(frozen=True)
class DuplicateWork:
    """Nodes after the boundary that each of ``heads`` computes (explicit groups that split
    a shared part): how many, the bytes of the weights they read, and an estimate of their
    multiply-accumulates per frame (Conv, ConvTranspose, MatMul, Gemm; ``None`` when a shape
    is unknown). ``ends`` are the tensors where the shared part ends."""

    heads: tuple[str, ...]
    nodes: int
    weight_bytes: int
    macs: int | None
    ends: tuple[str, ...] = ()

    def describe(self) -> str:
        """The warning ``edge-export split`` prints for it."""
        names = [repr(h) for h in self.heads]
        who = f"heads {', '.join(names[:-1])} and {names[-1]} {'both' if len(names) == 2 else 'all'}"
        macs = "unknown" if self.macs is None else f"~{format_count(self.macs)}"
        plural = "node" if self.nodes == 1 else "nodes"
        ends = f" (it ends at {', '.join(self.ends)})" if self.ends else ""
        return (
            f"{who} compute {self.nodes} {plural} after the boundary ({format_bytes(self.weight_bytes)} of weights, "
            f"{macs} MACs per frame each extra time): group their outputs in one head, "
            f"or move the boundary after the shared part with --boundary{ends}"
        )


def format_count(value: int) -> str:
    """``310_000_000`` → ``"310 M"``; ``999_999`` → ``"1 M"``; ``950`` → ``"950"``."""
    units = ("", "k", "M", "G", "T")
    scaled, k = float(value), 0
    while k < len(units) - 1 and float(f"{scaled:.3g}") >= 1000:
        scaled, k = scaled / 1000, k + 1
    return f"{scaled:.3g} {units[k]}".rstrip()


def find_duplicated_work(
    index: GraphIndex,
    head_nodes: Mapping[str, set[int]],
    types: Callable[[], Mapping[str, TensorType]],
) -> tuple[DuplicateWork, ...]:
    """One :class:`DuplicateWork` per set of heads that compute the same per-frame nodes
    (``head_nodes``: each head's nodes after the boundary). Shape side-chains that heads
    recompute on purpose do not count. ``types`` is called only when something is shared."""
    owners: dict[int, tuple[str, ...]] = {}
    for name, nodes in head_nodes.items():
        for i in nodes:
            outputs = [o for o in index.nodes[i].output if o]
            if i in index.input_dependent and not all(o in index.shape_derived for o in outputs):
                owners[i] = (*owners.get(i, ()), name)
    shared: dict[tuple[str, ...], set[int]] = {}
    for i, names in owners.items():
        if len(names) > 1:
            shared.setdefault(names, set()).add(i)
    if not shared:
        return ()
    found = types()
    position = {idx: k for k, idx in enumerate(index.order)}
    sizes = _initializer_bytes(index.model)
    found_work = []
    for names, nodes in sorted(shared.items(), key=lambda item: min(position[i] for i in item[1])):
        rest = set().union(*(head_nodes[n] for n in names)) - nodes
        read_later = {r for i in rest for r in index.node_inputs[i]} | set(index.outputs)
        ends = [o for i in sorted(nodes, key=position.__getitem__) for o in index.nodes[i].output if o in read_later]
        macs = [_macs(index.nodes[i], found) for i in nodes]
        found_work.append(
            DuplicateWork(
                heads=names,
                nodes=len(nodes),
                weight_bytes=_weight_bytes(index, nodes, sizes),
                macs=None if any(m is None for m in macs) else sum(m or 0 for m in macs),
                ends=tuple(ends),
            )
        )
    return tuple(found_work)


def _tensor_bytes(tensor: onnx.TensorProto) -> int:
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, ValueError, TypeError):
        return 0
    return prod(tensor.dims) * itemsize


def _initializer_bytes(model: onnx.ModelProto) -> dict[str, int]:
    sizes = {t.name: _tensor_bytes(t) for t in model.graph.initializer}
    sizes.update({t.values.name: _tensor_bytes(t.values) for t in model.graph.sparse_initializer})
    return sizes


def _weight_bytes(index: GraphIndex, nodes: set[int], sizes: Mapping[str, int]) -> int:
    """Bytes of the initializers (and Constant values) that ``nodes`` read, directly or
    through constant side-computations (e.g. DequantizeLinear of int8 weights)."""
    reads = {r for i in nodes for r in index.node_inputs[i]}
    constant = index.ancestors(r for r in reads if index.is_constant(r))
    reads |= {r for i in constant for r in index.node_inputs[i]}
    total = sum(sizes[r] for r in reads if r in sizes)
    for i in constant:
        total += sum(_tensor_bytes(a.t) for a in index.nodes[i].attribute if a.type == onnx.AttributeProto.TENSOR)
    return total


def _dims(types: Mapping[str, TensorType], name: str) -> list[int] | None:
    """Known dims of ``name`` (a symbolic first dimension counts as batch 1), else ``None``."""
    found = types.get(name)
    if found is None or found.shape is None:
        return None
    dims = []
    for axis, dim in enumerate(found.shape):
        if isinstance(dim, int):
            dims.append(dim)
        elif axis == 0:
            dims.append(1)
        else:
            return None
    return dims


def _macs(node: onnx.NodeProto, types: Mapping[str, TensorType]) -> int | None:
    """Multiply-accumulates of one node per frame: 0 for ops not counted, ``None`` when unknown."""
    op = node.op_type
    if op not in ("Conv", "ConvTranspose", "MatMul", "Gemm") or node.domain not in ("", "ai.onnx"):
        return 0
    if len(node.input) < 2 or not node.output:
        return None
    if op in ("Conv", "ConvTranspose"):
        # Conv: each output element sums C_in/group·k_h·k_w products (the weight's dims after
        # the first); ConvTranspose: each input element is spread over C_out/group·k_h·k_w.
        weight = _dims(types, node.input[1])
        per = _dims(types, node.output[0] if op == "Conv" else node.input[0])
        return None if per is None or weight is None else prod(per) * prod(weight[1:])
    # MatMul / Gemm: each output element sums K products.
    a = _dims(types, node.input[0])
    out = _dims(types, node.output[0])
    if a is None or out is None or not a:
        return None
    if op == "Gemm":
        trans_a = next((h.i for h in node.attribute if h.name == "transA"), 0)
        return prod(out) * a[0 if trans_a and len(a) == 2 else -1]
    return prod(out) * a[-1]
