"""Read-only index over an ONNX graph: producers, consumers, ancestry, tensor types.

Real exported graphs are messy, so everything here is keyed by node *index* (nodes may be
unnamed), initializers that old exporters also list as graph inputs are not treated as
inputs, and tensors that sub-graphs (If/Loop/Scan bodies) read from the outer scope count
as inputs of the node that owns the sub-graph.

Example::

    index = GraphIndex(onnx.load("model.onnx"))
    needed = index.ancestors(["logits"])            # node indices that compute 'logits'
    trunk_side = index.ancestors(["features"], stop={"image"})
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import onnx
from onnx import helper

#: Ops whose output describes a tensor's shape rather than its values.
SHAPE_SOURCE_OPS = frozenset({"Shape", "Size"})


def _subgraph_outer_refs(graph: onnx.GraphProto) -> set[str]:
    """Names a sub-graph reads from the enclosing scope."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    defined |= {t.name for t in graph.sparse_initializer}
    refs: set[str] = set()
    for node in graph.node:
        for name in _node_inputs(node):
            if name and name not in defined:
                refs.add(name)
        defined.update(o for o in node.output if o)
    return refs


def _node_inputs(node: onnx.NodeProto) -> list[str]:
    """Explicit inputs plus outer-scope names read by the node's sub-graphs."""
    names = [n for n in node.input if n]
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            names.extend(sorted(_subgraph_outer_refs(attr.g)))
        elif attr.type == onnx.AttributeProto.GRAPHS:
            for graph in attr.graphs:
                names.extend(sorted(_subgraph_outer_refs(graph)))
    return names


@dataclass(frozen=True)
class TensorType:
    """Element type (ONNX enum) and shape (ints, symbolic names, or ``None`` if unknown)."""

    elem_type: int
    shape: tuple[int | str | None, ...] | None

    @property
    def dtype(self) -> str:
        """numpy-style dtype name, e.g. ``float32``."""
        return str(helper.tensor_dtype_to_np_dtype(self.elem_type))

    def to_value_info(self, name: str) -> onnx.ValueInfoProto:
        """A ``ValueInfoProto`` for a graph input or output of this type."""
        return helper.make_tensor_value_info(name, self.elem_type, None if self.shape is None else list(self.shape))


def tensor_type_of(value_info: onnx.ValueInfoProto) -> TensorType | None:
    """The :class:`TensorType` in a ``ValueInfoProto``, or ``None`` if it is not a tensor."""
    if not value_info.type.HasField("tensor_type"):
        return None
    tensor = value_info.type.tensor_type
    if tensor.elem_type == 0:
        return None
    shape: tuple[int | str | None, ...] | None = None
    if tensor.HasField("shape"):
        dims: list[int | str | None] = []
        for dim in tensor.shape.dim:
            if dim.HasField("dim_value"):
                dims.append(int(dim.dim_value))
            elif dim.HasField("dim_param") and dim.dim_param:
                dims.append(dim.dim_param)
            else:
                dims.append(None)
        shape = tuple(dims)
    return TensorType(tensor.elem_type, shape)


class GraphIndex:
    """Producers, consumers and ancestry of the tensors of one ONNX model's main graph."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        graph = model.graph
        self.nodes: list[onnx.NodeProto] = list(graph.node)
        self.initializers: set[str] = {t.name for t in graph.initializer} | {
            t.values.name for t in graph.sparse_initializer
        }
        self.model_inputs: tuple[str, ...] = tuple(i.name for i in graph.input if i.name not in self.initializers)
        self.outputs: tuple[str, ...] = tuple(o.name for o in graph.output)
        self.node_inputs: list[list[str]] = [_node_inputs(n) for n in self.nodes]
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        for idx, node in enumerate(self.nodes):
            for name in node.output:
                if name:
                    self.producer[name] = idx
            for name in self.node_inputs[idx]:
                self.consumers.setdefault(name, []).append(idx)
        self.order: list[int] = self._topological_order()
        self.input_dependent: set[int] = self._input_dependent()
        self.shape_derived: set[str] = self._shape_derived()

    # -- tensors -------------------------------------------------------------------------
    def tensor_names(self) -> list[str]:
        """Every tensor name the graph defines (inputs, node outputs), in graph order."""
        names = list(self.model_inputs)
        for node in self.nodes:
            names.extend(o for o in node.output if o)
        return names

    def is_defined(self, name: str) -> bool:
        """True when ``name`` is a model input or a node output."""
        return name in self.producer or name in self.model_inputs

    def is_constant(self, name: str) -> bool:
        """True when ``name`` does not depend on any model input."""
        if name in self.initializers or name not in self.producer:
            return name not in self.model_inputs
        return self.producer[name] not in self.input_dependent

    # -- ancestry ------------------------------------------------------------------------
    def ancestors(self, tensors: Iterable[str], stop: Iterable[str] = ()) -> set[int]:
        """Indices of the nodes needed to compute ``tensors``, not looking past ``stop``."""
        stop_set = set(stop)
        seen: set[int] = set()
        stack = [t for t in tensors if t not in stop_set]
        visited_tensors: set[str] = set(stack)
        while stack:
            name = stack.pop()
            idx = self.producer.get(name)
            if idx is None or idx in seen:
                continue
            seen.add(idx)
            for inp in self.node_inputs[idx]:
                if inp not in stop_set and inp not in visited_tensors:
                    visited_tensors.add(inp)
                    stack.append(inp)
        return seen

    def external_reads(self, nodes: set[int]) -> set[str]:
        """Tensors that ``nodes`` read but do not produce (initializers excluded)."""
        produced = {o for i in nodes for o in self.nodes[i].output if o}
        reads = {name for i in nodes for name in self.node_inputs[i]}
        return {r for r in reads - produced if r not in self.initializers}

    def _input_dependent(self) -> set[int]:
        tainted = set(self.model_inputs)
        dependent: set[int] = set()
        for idx in self.order:
            if any(name in tainted for name in self.node_inputs[idx]):
                dependent.add(idx)
                tainted.update(o for o in self.nodes[idx].output if o)
        return dependent

    def _shape_derived(self) -> set[str]:
        """Tensors computed only from shapes of tensors and constants (Shape → Gather → …)."""
        derived: set[str] = set()
        for idx in self.order:
            node = self.nodes[idx]
            if idx not in self.input_dependent:
                continue
            if node.op_type in SHAPE_SOURCE_OPS:
                derived.update(o for o in node.output if o)
                continue
            reads = self.node_inputs[idx]
            if all(r in derived or self.is_constant(r) for r in reads):
                derived.update(o for o in node.output if o)
        return derived

    def _topological_order(self) -> list[int]:
        """Node indices in dependency order (the file's order when it is already sorted)."""
        available = set(self.model_inputs) | self.initializers
        order: list[int] = []
        pending = list(range(len(self.nodes)))
        while pending:
            remaining = []
            for idx in pending:
                if all(name in available or name not in self.producer for name in self.node_inputs[idx]):
                    order.append(idx)
                    available.update(o for o in self.nodes[idx].output if o)
                else:
                    remaining.append(idx)
            if len(remaining) == len(pending):  # a cycle: keep file order for the rest
                order.extend(remaining)
                break
            pending = remaining
        return order
